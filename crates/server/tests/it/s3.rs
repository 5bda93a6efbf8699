//! The S3 facade in process: requests signed the way botocore signs S3 (the
//! path as sent, `x-amz-content-sha256`), answers checked byte by byte where
//! `aws cloudtrail validate-logs` reads them (`spec/cloudtrail.md` §3.10), and
//! the audit records every call leaves.

use trailwatch_protocol::sigv4::{self, Signer};
use trailwatch_server::{handle, IncomingRequest, OutgoingResponse};
use trailwatch_types::Timestamp;

use crate::support::{test_app, TestApp, ACCOUNT, FIXTURE_KEY, FIXTURE_SECRET};

/// 2026-01-15T06:00:00Z.
const NOW_MS: i64 = 1_768_456_800_000;
const HOST: &str = "127.0.0.1:4600";

fn now() -> Timestamp {
    Timestamp::from_millis(NOW_MS)
}

struct Request<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    body: &'a [u8],
    region: &'a str,
}

impl<'a> Request<'a> {
    fn new(method: &'a str, path: &'a str) -> Self {
        Self {
            method,
            path,
            query: "",
            headers: Vec::new(),
            body: b"",
            region: "us-east-1",
        }
    }

    fn query(mut self, query: &'a str) -> Self {
        self.query = query;
        self
    }

    fn header(mut self, name: &'a str, value: &'a str) -> Self {
        self.headers.push((name, value));
        self
    }

    fn body(mut self, body: &'a [u8]) -> Self {
        self.body = body;
        self
    }

    fn region(mut self, region: &'a str) -> Self {
        self.region = region;
        self
    }

    fn signed(&self, secret: &str) -> IncomingRequest {
        let mut headers = vec![("host".to_owned(), HOST.to_owned())];
        headers.extend(
            self.headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        Signer {
            access_key_id: FIXTURE_KEY,
            secret,
            region: self.region,
            service: "s3",
        }
        .sign(
            self.method,
            self.path,
            self.query,
            &mut headers,
            self.body,
            now(),
        );
        IncomingRequest {
            method: self.method.to_owned(),
            path: self.path.to_owned(),
            query: self.query.to_owned(),
            headers,
            body: bytes::Bytes::copy_from_slice(self.body),
            peer: std::net::IpAddr::from([127, 0, 0, 1]),
        }
    }

    async fn send(&self, t: &TestApp) -> OutgoingResponse {
        handle(&t.app, self.signed(FIXTURE_SECRET)).await
    }
}

fn header<'a>(response: &'a OutgoingResponse, name: &str) -> Option<&'a str> {
    response
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn text(response: &OutgoingResponse) -> String {
    String::from_utf8(response.body.clone()).unwrap()
}

/// The text of the first `<name>` element.
fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(&xml[start..end])
}

fn all_elements<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    xml.match_indices(&open)
        .filter_map(|(i, _)| {
            let start = i + open.len();
            let end = xml[start..].find(&close)? + start;
            Some(&xml[start..end])
        })
        .collect()
}

fn error_code(response: &OutgoingResponse) -> String {
    element(&text(response), "Code")
        .unwrap_or_default()
        .to_owned()
}

async fn lookup_s3_events(t: &TestApp, region: &str) -> Vec<serde_json::Value> {
    let body = br#"{"LookupAttributes":[{"AttributeKey":"EventSource","AttributeValue":"s3.amazonaws.com"}]}"#;
    let mut headers = vec![
        ("host".to_owned(), HOST.to_owned()),
        (
            "x-amz-target".to_owned(),
            "CloudTrail_20131101.LookupEvents".to_owned(),
        ),
        (
            "content-type".to_owned(),
            "application/x-amz-json-1.1".to_owned(),
        ),
    ];
    Signer {
        access_key_id: FIXTURE_KEY,
        secret: FIXTURE_SECRET,
        region,
        service: "cloudtrail",
    }
    .sign("POST", "/", "", &mut headers, body, now());
    let response = handle(
        &t.app,
        IncomingRequest {
            method: "POST".into(),
            path: "/".into(),
            query: String::new(),
            headers,
            body: bytes::Bytes::from_static(body),
            peer: std::net::IpAddr::from([127, 0, 0, 1]),
        },
    )
    .await;
    assert_eq!(response.status, 200, "{}", text(&response));
    let page: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    page["Events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| serde_json::from_str(e["CloudTrailEvent"].as_str().unwrap()).unwrap())
        .collect()
}

#[tokio::test]
async fn bucket_lifecycle_location_and_management_records() {
    let t = test_app(now()).await;
    let config = br#"<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>"#;
    let created = Request::new("PUT", "/trail-logs")
        .body(config)
        .region("eu-west-1")
        .send(&t)
        .await;
    assert_eq!(created.status, 200, "{}", text(&created));
    assert_eq!(header(&created, "location"), Some("/trail-logs"));
    assert!(header(&created, "x-amz-request-id").is_some());
    Request::new("PUT", "/plain").send(&t).await;

    let again = Request::new("PUT", "/trail-logs").send(&t).await;
    assert_eq!(
        (again.status, error_code(&again)),
        (409, "BucketAlreadyOwnedByYou".to_owned())
    );
    assert_eq!(element(&text(&again), "BucketName"), Some("trail-logs"));
    let bad = Request::new("PUT", "/Bad_Name").send(&t).await;
    assert_eq!(
        (bad.status, error_code(&bad)),
        (400, "InvalidBucketName".to_owned())
    );

    let location = Request::new("GET", "/trail-logs")
        .query("location")
        .send(&t)
        .await;
    assert_eq!(location.status, 200);
    assert!(text(&location).contains(
        "<LocationConstraint xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">eu-west-1</LocationConstraint>"
    ));
    let location = Request::new("GET", "/plain")
        .query("location")
        .send(&t)
        .await;
    assert!(text(&location)
        .ends_with("<LocationConstraint xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"/>"));

    let listed = Request::new("GET", "/").send(&t).await;
    let body = text(&listed);
    assert!(body.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"));
    assert_eq!(all_elements(&body, "Name"), ["plain", "trail-logs"]);
    assert_eq!(
        element(&body, "CreationDate"),
        Some("2026-01-15T06:00:00.000Z")
    );

    let head = Request::new("HEAD", "/trail-logs").send(&t).await;
    assert_eq!(head.status, 200);
    assert_eq!(header(&head, "x-amz-bucket-region"), Some("eu-west-1"));
    let missing = Request::new("HEAD", "/nothing-here").send(&t).await;
    assert_eq!(missing.status, 404);
    assert!(missing.body.is_empty(), "HEAD answers carry no body");
    let missing = Request::new("GET", "/nothing-here").send(&t).await;
    assert_eq!(
        (missing.status, error_code(&missing)),
        (404, "NoSuchBucket".to_owned())
    );

    let deleted = Request::new("DELETE", "/plain").send(&t).await;
    assert_eq!(deleted.status, 204, "{}", text(&deleted));
    let gone = Request::new("DELETE", "/plain").send(&t).await;
    assert_eq!(error_code(&gone), "NoSuchBucket");

    // Recorded in the bucket's region, as at AWS.
    let mut records = lookup_s3_events(&t, "eu-west-1").await;
    records.extend(lookup_s3_events(&t, "us-east-1").await);
    let create = records
        .iter()
        .find(|r| {
            r["eventName"] == "CreateBucket"
                && r["requestParameters"]["bucketName"] == "trail-logs"
                && r["errorCode"].is_null()
        })
        .expect("the CreateBucket record");
    assert_eq!(create["eventSource"], "s3.amazonaws.com");
    assert_eq!(create["awsRegion"], "eu-west-1");
    assert_eq!(create["managementEvent"], true);
    assert_eq!(create["readOnly"], false);
    assert_eq!(
        create["requestParameters"]["CreateBucketConfiguration"]["LocationConstraint"],
        "eu-west-1"
    );
    assert_eq!(create["requestParameters"]["Host"], HOST);
    assert_eq!(
        create["resources"],
        serde_json::json!([{"accountId": ACCOUNT, "type": "AWS::S3::Bucket", "ARN": "arn:aws:s3:::trail-logs"}])
    );
    assert!(records
        .iter()
        .any(|r| r["eventName"] == "CreateBucket" && r["errorCode"] == "BucketAlreadyOwnedByYou"));
    for name in [
        "GetBucketLocation",
        "ListBuckets",
        "HeadBucket",
        "DeleteBucket",
    ] {
        assert!(
            records.iter().any(|r| r["eventName"] == name),
            "{name} recorded"
        );
    }
}

#[tokio::test]
async fn objects_as_validate_logs_reads_them() {
    let t = test_app(now()).await;
    Request::new("PUT", "/trail").send(&t).await;
    let digest_prefix = "AWSLogs/123456789012/CloudTrail-Digest/us-east-1/2026/01/15/";
    let digest = b"\x1f\x8b digest bytes";
    let digest_path = format!("/trail/{digest_prefix}123456789012_CloudTrail-Digest_us-east-1_tw_us-east-1_20260115T050000Z.json.gz");
    let put = Request::new("PUT", &digest_path)
        .header("content-type", "application/x-gzip")
        .header("x-amz-meta-signature", "9f1c")
        .header("x-amz-meta-signature-algorithm", "SHA256withRSA")
        .body(digest)
        .send(&t)
        .await;
    assert_eq!(put.status, 200, "{}", text(&put));
    let etag = format!("\"{}\"", hex::encode(md5_of(digest)));
    assert_eq!(header(&put, "etag"), Some(etag.as_str()));
    let records_before = t.app.audit.data_event_count();

    let got = Request::new("GET", &digest_path).send(&t).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, digest);
    assert_eq!(header(&got, "content-type"), Some("application/x-gzip"));
    assert_eq!(header(&got, "x-amz-meta-signature"), Some("9f1c"));
    assert_eq!(
        header(&got, "x-amz-meta-signature-algorithm"),
        Some("SHA256withRSA")
    );
    assert_eq!(header(&got, "etag"), Some(etag.as_str()));
    assert_eq!(
        header(&got, "last-modified"),
        Some("Thu, 15 Jan 2026 06:00:00 GMT")
    );
    let head = Request::new("HEAD", &digest_path).send(&t).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(header(&head, "content-length"), Some("15"));
    assert_eq!(header(&head, "x-amz-meta-signature"), Some("9f1c"));
    let ranged = Request::new("GET", &digest_path)
        .header("range", "bytes=3-8")
        .send(&t)
        .await;
    assert_eq!(ranged.status, 206);
    assert_eq!(ranged.body, b"digest");
    assert_eq!(header(&ranged, "content-range"), Some("bytes 3-8/15"));

    let missing = Request::new("GET", "/trail/AWSLogs/none.json.gz")
        .send(&t)
        .await;
    assert_eq!(missing.status, 404);
    let body = text(&missing);
    assert_eq!(element(&body, "Code"), Some("NoSuchKey"));
    assert_eq!(element(&body, "Key"), Some("AWSLogs/none.json.gz"));
    assert_eq!(
        element(&body, "RequestId"),
        header(&missing, "x-amz-request-id")
    );
    // Every object call is a data event, failed ones included.
    assert_eq!(t.app.audit.data_event_count(), records_before + 4);
    // Object calls never reach LookupEvents.
    assert!(lookup_s3_events(&t, "us-east-1")
        .await
        .iter()
        .all(|r| r["eventName"] != "GetObject" && r["eventName"] != "PutObject"));
}

fn md5_of(bytes: &[u8]) -> Vec<u8> {
    // The server's ETag is checked against an MD5 computed here independently.
    use md5::Digest as _;
    md5::Md5::digest(bytes).to_vec()
}

#[tokio::test]
async fn listing_v1_with_url_encoding_markers_and_pages() {
    let t = test_app(now()).await;
    Request::new("PUT", "/bkt").send(&t).await;
    for key in [
        "AWSLogs/d/2.json.gz",
        "AWSLogs/d/1.json.gz",
        "AWSLogs/d/a%20b+c.json.gz",
        "AWSLogs/e/3.json.gz",
        "other",
    ] {
        let path = format!("/bkt/{key}");
        let put = Request::new("PUT", &path).body(b"x").send(&t).await;
        assert_eq!(put.status, 200, "{key}: {}", text(&put));
    }
    // As validate-logs asks: prefix, marker, encoding-type=url.
    let page = Request::new("GET", "/bkt")
        .query("encoding-type=url&marker=AWSLogs%2Fd%2F1.json.gz&prefix=AWSLogs%2Fd")
        .send(&t)
        .await;
    assert_eq!(page.status, 200, "{}", text(&page));
    let body = text(&page);
    assert!(body.contains("<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"));
    assert_eq!(
        all_elements(&body, "Key"),
        ["AWSLogs/d/2.json.gz", "AWSLogs/d/a%20b%2Bc.json.gz"]
    );
    assert_eq!(element(&body, "Prefix"), Some("AWSLogs/d"));
    assert_eq!(element(&body, "Marker"), Some("AWSLogs/d/1.json.gz"));
    assert_eq!(element(&body, "MaxKeys"), Some("1000"));
    assert_eq!(element(&body, "IsTruncated"), Some("false"));
    assert_eq!(element(&body, "EncodingType"), Some("url"));
    assert_eq!(element(&body, "NextMarker"), None);
    assert_eq!(element(&body, "Size"), Some("1"));
    assert_eq!(element(&body, "StorageClass"), Some("STANDARD"));
    assert_eq!(
        element(&body, "LastModified"),
        Some("2026-01-15T06:00:00.000Z")
    );
    assert_eq!(
        element(&body, "ETag"),
        Some("&quot;9dd4e461268c8034f5c8564e155c67a6&quot;")
    );

    // Without encoding, no EncodingType element; pages by NextMarker.
    let first = Request::new("GET", "/bkt")
        .query("max-keys=2")
        .send(&t)
        .await;
    let body = text(&first);
    assert_eq!(element(&body, "EncodingType"), None);
    assert_eq!(
        all_elements(&body, "Key"),
        ["AWSLogs/d/1.json.gz", "AWSLogs/d/2.json.gz"]
    );
    assert_eq!(element(&body, "IsTruncated"), Some("true"));
    assert_eq!(element(&body, "NextMarker"), Some("AWSLogs/d/2.json.gz"));

    // Delimiter and common prefixes.
    let folders = Request::new("GET", "/bkt")
        .query("delimiter=%2F&prefix=AWSLogs%2F")
        .send(&t)
        .await;
    let body = text(&folders);
    assert_eq!(element(&body, "Delimiter"), Some("/"));
    assert_eq!(
        all_elements(&body, "Prefix"),
        ["AWSLogs/", "AWSLogs/d/", "AWSLogs/e/"]
    );
    assert!(all_elements(&body, "Key").is_empty());

    // V2: KeyCount, continuation.
    let first = Request::new("GET", "/bkt")
        .query("list-type=2&max-keys=3")
        .send(&t)
        .await;
    let body = text(&first);
    assert_eq!(element(&body, "KeyCount"), Some("3"));
    let token = element(&body, "NextContinuationToken").unwrap().to_owned();
    let query = format!("continuation-token={token}&list-type=2&max-keys=3");
    let second = Request::new("GET", "/bkt").query(&query).send(&t).await;
    let body = text(&second);
    assert_eq!(all_elements(&body, "Key"), ["AWSLogs/e/3.json.gz", "other"]);
    assert_eq!(element(&body, "ContinuationToken"), Some(token.as_str()));
    assert_eq!(element(&body, "IsTruncated"), Some("false"));

    let bad = Request::new("GET", "/bkt")
        .query("max-keys=lots")
        .send(&t)
        .await;
    assert_eq!(
        (bad.status, error_code(&bad)),
        (400, "InvalidArgument".to_owned())
    );
    let full = Request::new("DELETE", "/bkt").send(&t).await;
    assert_eq!(
        (full.status, error_code(&full)),
        (409, "BucketNotEmpty".to_owned())
    );
}

#[tokio::test]
async fn signatures_payload_hashes_and_presigned_gets() {
    let t = test_app(now()).await;
    Request::new("PUT", "/bkt").send(&t).await;
    Request::new("PUT", "/bkt/k").body(b"v").send(&t).await;

    let wrong = handle(
        &t.app,
        Request::new("GET", "/bkt/k").signed("not the secret"),
    )
    .await;
    assert_eq!(
        (wrong.status, error_code(&wrong)),
        (403, "SignatureDoesNotMatch".to_owned())
    );

    let mut tampered = Request::new("PUT", "/bkt/k")
        .body(b"v1")
        .signed(FIXTURE_SECRET);
    tampered.body = bytes::Bytes::from_static(b"v2");
    let tampered = handle(&t.app, tampered).await;
    assert_eq!(
        (tampered.status, error_code(&tampered)),
        (400, "XAmzContentSHA256Mismatch".to_owned())
    );

    let mut unknown = Request::new("GET", "/bkt/k").signed(FIXTURE_SECRET);
    for (k, v) in &mut unknown.headers {
        if k == "authorization" {
            *v = v.replace(FIXTURE_KEY, "AKIDUNKNOWN0000000000");
        }
    }
    let unknown = handle(&t.app, unknown).await;
    assert_eq!(
        (unknown.status, error_code(&unknown)),
        (403, "InvalidAccessKeyId".to_owned())
    );

    // A presigned GET, signed as botocore's generate_presigned_url does.
    let amz_date = now().to_amz_date();
    let scope = format!("{}/us-east-1/s3/aws4_request", &amz_date[..8]);
    let unsigned_query = format!(
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={}%2F{}&X-Amz-Date={amz_date}&X-Amz-Expires=3600&X-Amz-SignedHeaders=host",
        FIXTURE_KEY,
        scope.replace('/', "%2F")
    );
    let canonical_request = format!(
        "GET\n/bkt/k\n{}\nhost:{HOST}\n\nhost\nUNSIGNED-PAYLOAD",
        sigv4::canonical_query(&unsigned_query, true)
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sigv4::sha256_hex(canonical_request.as_bytes())
    );
    let key = sigv4::signing_key(FIXTURE_SECRET, &amz_date[..8], "us-east-1", "s3");
    let signature = {
        use hmac::Mac as _;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(string_to_sign.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    };
    let presigned = IncomingRequest {
        method: "GET".into(),
        path: "/bkt/k".into(),
        query: format!("{unsigned_query}&X-Amz-Signature={signature}"),
        headers: vec![("host".to_owned(), HOST.to_owned())],
        body: bytes::Bytes::new(),
        peer: std::net::IpAddr::from([127, 0, 0, 1]),
    };
    let got = handle(&t.app, presigned).await;
    assert_eq!(got.status, 200, "{}", text(&got));
    assert_eq!(got.body, b"v");
}

#[tokio::test]
async fn accounts_bodies_and_unsupported_calls() {
    let t = test_app(now()).await;
    // A bucket of another account, registered directly.
    t.app
        .buckets
        .create("999988887777", "us-east-1", "theirs", now())
        .unwrap();
    let denied = Request::new("GET", "/theirs/k").send(&t).await;
    assert_eq!(
        (denied.status, error_code(&denied)),
        (403, "AccessDenied".to_owned())
    );
    let taken = Request::new("PUT", "/theirs").send(&t).await;
    assert_eq!(
        (taken.status, error_code(&taken)),
        (409, "BucketAlreadyExists".to_owned())
    );
    let listed = Request::new("GET", "/").send(&t).await;
    assert!(!text(&listed).contains("theirs"));

    Request::new("PUT", "/mine").send(&t).await;
    // A gzip Content-Encoding describes the object: stored as sent.
    let put = Request::new("PUT", "/mine/logs.gz")
        .header("content-encoding", "gzip")
        .body(b"not really gzip")
        .send(&t)
        .await;
    assert_eq!(put.status, 200, "{}", text(&put));
    let got = Request::new("GET", "/mine/logs.gz").send(&t).await;
    assert_eq!(got.body, b"not really gzip");
    assert_eq!(header(&got, "content-type"), Some("binary/octet-stream"));

    let copy = Request::new("PUT", "/mine/copy")
        .header("x-amz-copy-source", "/mine/logs.gz")
        .send(&t)
        .await;
    assert_eq!(
        (copy.status, error_code(&copy)),
        (501, "NotImplemented".to_owned())
    );
    let post = Request::new("POST", "/mine/logs.gz").send(&t).await;
    assert_eq!(
        (post.status, error_code(&post)),
        (405, "MethodNotAllowed".to_owned())
    );
    let folder = Request::new("PUT", "/mine/logs.gz/inner")
        .body(b"x")
        .send(&t)
        .await;
    assert_eq!(error_code(&folder), "InvalidArgument");

    let deleted = Request::new("DELETE", "/mine/logs.gz").send(&t).await;
    assert_eq!(deleted.status, 204);
    // With the file gone, its name may be a folder, and then a file again.
    let nested = Request::new("PUT", "/mine/logs.gz/inner")
        .body(b"x")
        .send(&t)
        .await;
    assert_eq!(nested.status, 200, "{}", text(&nested));
    Request::new("DELETE", "/mine/logs.gz/inner").send(&t).await;
    let flat = Request::new("PUT", "/mine/logs.gz")
        .body(b"y")
        .send(&t)
        .await;
    assert_eq!(flat.status, 200, "{}", text(&flat));
    Request::new("DELETE", "/mine/logs.gz").send(&t).await;
    let again = Request::new("DELETE", "/mine/logs.gz").send(&t).await;
    assert_eq!(again.status, 204, "a missing key is not an error");
    let gone = Request::new("DELETE", "/mine").send(&t).await;
    assert_eq!(gone.status, 204, "{}", text(&gone));
}
