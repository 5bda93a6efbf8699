//! Golden replay of every captured client request in `shared/fixtures/wire/`:
//! each must classify to its recorded service, protocol and operation, verify
//! with the recorded credentials at its recorded time (byte-identical canonical
//! request), decode, and leave one audit record naming it.

use std::path::PathBuf;

use base64::Engine as _;
use serde_json::Value as J;
use trailwatch_core::audit::LookupQuery;
use trailwatch_protocol::sigv4::{self, SignedParts};
use trailwatch_protocol::{body, classify, Protocol, RequestHead, Service, Value};
use trailwatch_server::{handle, IncomingRequest};
use trailwatch_types::Timestamp;

use crate::support::{fixtures_dir, test_app, ACCOUNT, FIXTURE_SECRET};

struct Fixture {
    name: String,
    json: J,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    path: String,
    query: String,
}

fn load_all() -> Vec<Fixture> {
    let dir = fixtures_dir();
    let mut files: Vec<PathBuf> = Vec::new();
    for client in
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("fixtures at {}: {e}", dir.display()))
    {
        let client = client.unwrap().path();
        if client.is_dir() {
            for f in std::fs::read_dir(&client).unwrap() {
                let f = f.unwrap().path();
                if f.extension().is_some_and(|e| e == "json") {
                    files.push(f);
                }
            }
        }
    }
    files.sort();
    assert!(
        files.len() >= 50,
        "expected the whole fixture set, found {}",
        files.len()
    );
    files
        .into_iter()
        .map(|path| {
            let json: J = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            let req = &json["request"];
            let headers = req["headers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| {
                    (
                        h[0].as_str().unwrap().to_owned(),
                        h[1].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            let body = match req["body_encoding"].as_str() {
                Some("base64") => base64::engine::general_purpose::STANDARD
                    .decode(req["body"].as_str().unwrap())
                    .unwrap(),
                _ => req["body"].as_str().unwrap_or_default().as_bytes().to_vec(),
            };
            let target = req["target"].as_str().unwrap().to_owned();
            let (path_part, query) = target.split_once('?').unwrap_or((&target, ""));
            let (path_part, query) = (path_part.to_owned(), query.to_owned());
            let name = format!(
                "{}/{}",
                path.parent()
                    .unwrap()
                    .file_name()
                    .unwrap()
                    .to_string_lossy(),
                path.file_name().unwrap().to_string_lossy()
            );
            Fixture {
                name,
                json,
                headers,
                body,
                path: path_part,
                query,
            }
        })
        .collect()
}

fn protocol_name(p: Protocol) -> &'static str {
    p.name()
}

/// The SigV4 signing name; the unsigned fixture records only the service name.
fn signing_name(f: &Fixture) -> &str {
    f.json["signing_name"]
        .as_str()
        .or(f.json["service"].as_str())
        .unwrap()
}

fn signing_time(f: &Fixture) -> Timestamp {
    match f.json["sigv4"]["x_amz_date"].as_str() {
        Some(d) => Timestamp::parse_amz_date(d).unwrap(),
        None => Timestamp::parse_amz_date("20261124T034338Z").unwrap(),
    }
}

#[test]
fn every_fixture_classifies_verifies_and_decodes() {
    for f in load_all() {
        let method = f.json["request"]["method"].as_str().unwrap();
        let head = RequestHead {
            method,
            path: &f.path,
            query: &f.query,
            headers: &f.headers,
        };
        let decoded = body::decode_content(
            trailwatch_protocol::classify::header(&f.headers, "content-encoding"),
            &f.body,
        )
        .unwrap_or_else(|e| panic!("{}: content decoding: {e}", f.name));
        let route =
            classify(&head, &decoded).unwrap_or_else(|e| panic!("{}: classify: {e:?}", f.name));
        assert_eq!(route.service.signing_name(), signing_name(&f), "{}", f.name);
        assert_eq!(
            protocol_name(route.protocol),
            f.json["protocol"].as_str().unwrap(),
            "{}",
            f.name
        );
        assert_eq!(
            route.operation,
            f.json["operation"].as_str().unwrap(),
            "{}",
            f.name
        );
        let input = body::decode_input(&route, &decoded)
            .unwrap_or_else(|e| panic!("{}: decode: {e}", f.name));
        assert!(matches!(input, Value::Struct(_)), "{}", f.name);

        let hash = sigv4::sha256_hex(&f.body);
        if let Some(recorded) = f.json["request"]["body_sha256"].as_str() {
            assert_eq!(hash, recorded, "{}", f.name);
        }
        let parts = SignedParts {
            method,
            path: &f.path,
            query: &f.query,
            headers: &f.headers,
            body_sha256: &hash,
        };
        if f.json["sigv4"]["valid"] == J::Bool(true) {
            let claim = sigv4::parse(&parts).unwrap_or_else(|e| panic!("{}: {e:?}", f.name));
            let verified = sigv4::verify(
                &parts,
                claim,
                FIXTURE_SECRET,
                route.service.signing_name(),
                signing_time(&f),
                900,
            )
            .unwrap_or_else(|e| panic!("{}: signature: {e:?}", f.name));
            assert_eq!(
                verified.canonical_request,
                f.json["sigv4"]["canonical_request"].as_str().unwrap(),
                "{}",
                f.name
            );
            assert_eq!(
                verified.string_to_sign,
                f.json["sigv4"]["string_to_sign"].as_str().unwrap(),
                "{}",
                f.name
            );
        } else {
            assert_eq!(
                sigv4::parse(&parts),
                Err(sigv4::AuthFailure::Missing),
                "{}",
                f.name
            );
        }
    }
}

#[test]
fn tampering_is_detected_for_every_signed_fixture() {
    for f in load_all()
        .into_iter()
        .filter(|f| f.json["sigv4"]["valid"] == J::Bool(true))
    {
        let method = f.json["request"]["method"].as_str().unwrap();
        let service = signing_name(&f);
        let now = signing_time(&f);
        let mut body = f.body.clone();
        body.push(b' ');
        let hash = sigv4::sha256_hex(&body);
        let parts = SignedParts {
            method,
            path: &f.path,
            query: &f.query,
            headers: &f.headers,
            body_sha256: &hash,
        };
        let claim = sigv4::parse(&parts).unwrap();
        let presigned = claim.expires.is_some();
        let result = sigv4::verify(&parts, claim, FIXTURE_SECRET, service, now, 900);
        assert!(
            matches!(result, Err(sigv4::AuthFailure::Mismatch(_))),
            "{}: body flip",
            f.name
        );
        let hash = sigv4::sha256_hex(&f.body);
        let parts = SignedParts {
            method,
            path: &f.path,
            query: &f.query,
            headers: &f.headers,
            body_sha256: &hash,
        };
        let claim = sigv4::parse(&parts).unwrap();
        assert!(
            matches!(
                sigv4::verify(&parts, claim.clone(), "wrong", service, now, 900),
                Err(sigv4::AuthFailure::Mismatch(_))
            ),
            "{}",
            f.name
        );
        let late = Timestamp::from_secs(now.secs() + 3600);
        let expected_late = if presigned {
            sigv4::AuthFailure::Expired
        } else {
            sigv4::AuthFailure::Skew(String::new())
        };
        match (
            sigv4::verify(&parts, claim.clone(), FIXTURE_SECRET, service, late, 900),
            expected_late,
        ) {
            (Err(sigv4::AuthFailure::Expired), sigv4::AuthFailure::Expired) => {}
            (Err(sigv4::AuthFailure::Skew(m)), sigv4::AuthFailure::Skew(_)) => {
                assert!(m.starts_with("Signature expired"), "{m}")
            }
            (other, _) => panic!("{}: late request gave {other:?}", f.name),
        }
        let mut wrong_region = claim;
        wrong_region.region = "eu-west-1".to_owned();
        assert!(
            sigv4::verify(&parts, wrong_region, FIXTURE_SECRET, service, now, 900).is_err(),
            "{}",
            f.name
        );
    }
}

/// Canonical view for comparing decoded trees across protocols: numbers (and
/// numeric text) as f64, timestamps (by member name) as epoch millis.
fn canonical(v: &Value, key: &str) -> J {
    if key.ends_with("Timestamp") || key == "StartTime" || key == "EndTime" {
        if let Some(t) = v.as_timestamp() {
            return J::from(t.millis());
        }
    }
    match v {
        Value::Int(_) | Value::Float(_) => J::from(v.as_f64().unwrap()),
        // awsQuery sends every scalar as text and the empty list as `Key=`.
        Value::String(s) if s.is_empty() => J::Array(vec![]),
        Value::String(s) if s == "true" || s == "false" => J::Bool(s == "true"),
        Value::String(s) => s
            .parse::<f64>()
            .map(J::from)
            .unwrap_or_else(|_| J::String(s.clone())),
        Value::Bool(b) => J::Bool(*b),
        Value::List(items) => J::Array(items.iter().map(|i| canonical(i, "")).collect()),
        Value::Struct(m) | Value::Map(m) => {
            let mut sorted: Vec<_> = m.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            J::Object(
                sorted
                    .into_iter()
                    .map(|(k, v)| (k.clone(), canonical(v, k)))
                    .collect(),
            )
        }
        Value::Blob(b) => J::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Value::Timestamp(t) => J::from(t.millis()),
        Value::Null => J::Null,
    }
}

fn decode_fixture(name: &str) -> Value {
    let f = load_all()
        .into_iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no fixture {name}"));
    let method = f.json["request"]["method"].as_str().unwrap();
    let head = RequestHead {
        method,
        path: &f.path,
        query: &f.query,
        headers: &f.headers,
    };
    let decoded = body::decode_content(
        trailwatch_protocol::classify::header(&f.headers, "content-encoding"),
        &f.body,
    )
    .unwrap();
    let route = classify(&head, &decoded).unwrap();
    body::decode_input(&route, &decoded).unwrap()
}

#[test]
fn the_three_cloudwatch_protocols_decode_to_the_same_input() {
    for op in [
        "PutMetricData",
        "PutMetricAlarm",
        "DescribeAlarms",
        "GetMetricData",
        "PutMetricData-gzip",
    ] {
        let json = canonical(
            &decode_fixture(&format!("boto3/cloudwatch-awsjson1_0-{op}.json")),
            "",
        );
        let cbor = canonical(
            &decode_fixture(&format!("boto3/cloudwatch-rpcv2cbor-{op}.json")),
            "",
        );
        let query = canonical(
            &decode_fixture(&format!("boto3/cloudwatch-awsquery-{op}.json")),
            "",
        );
        assert_eq!(json, cbor, "{op}: json vs cbor");
        assert_eq!(json, query, "{op}: json vs query");
    }
    // aws-sdk-rust's indefinite-length maps decode like boto3's definite ones.
    let boto = canonical(
        &decode_fixture("boto3/cloudwatch-rpcv2cbor-DescribeAlarms.json"),
        "",
    );
    let rust = canonical(
        &decode_fixture("aws-sdk-rust/cloudwatch-rpcv2cbor-DescribeAlarms.json"),
        "",
    );
    assert_eq!(boto, rust);
    let put = decode_fixture("boto3/cloudwatch-rpcv2cbor-PutMetricData.json");
    let first = &put.get("MetricData").and_then(Value::as_list).unwrap()[0];
    assert_eq!(
        first.get("Timestamp").and_then(Value::as_timestamp),
        Some(Timestamp::from_millis(1_767_225_600_500))
    );
    assert_eq!(first.get("Value").and_then(Value::as_f64), Some(12.5));
}

#[tokio::test]
async fn replaying_every_fixture_leaves_one_record_each() {
    for f in load_all() {
        let t = test_app(signing_time(&f)).await;
        let req = IncomingRequest {
            method: f.json["request"]["method"].as_str().unwrap().to_owned(),
            path: f.path.clone(),
            query: f.query.clone(),
            headers: f.headers.clone(),
            body: f.body.clone().into(),
            peer: "127.0.0.1".parse().unwrap(),
        };
        let response = handle(&t.app, req).await;
        let signed = f.json["sigv4"]["valid"] == J::Bool(true);
        let request_id_header = response
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("x-amzn-requestid"))
            .map(|(_, v)| v.clone());
        assert_eq!(
            request_id_header.as_deref(),
            Some(response.request_id.as_str()),
            "{}",
            f.name
        );
        assert!(
            response.headers.iter().any(|(k, _)| k == "Date"),
            "{}",
            f.name
        );

        let service = Service::from_signing_name(signing_name(&f)).unwrap();
        let region = "us-east-1".to_owned();
        let q = LookupQuery {
            account_id: ACCOUNT.to_owned(),
            region,
            ..LookupQuery::default()
        };
        let page = t.app.audit.lookup(&q).await.unwrap();
        let is_data = matches!(
            f.json["operation"].as_str().unwrap(),
            "PutMetricData"
                | "GetMetricData"
                | "PutLogEvents"
                | "FilterLogEvents"
                | "PutAuditEvents"
        );
        if is_data {
            assert!(
                page.events.is_empty(),
                "{}: data events stay out of LookupEvents",
                f.name
            );
            assert_eq!(t.app.audit.data_event_count(), 1, "{}", f.name);
            continue;
        }
        assert_eq!(page.events.len(), 1, "{}", f.name);
        let record: J = serde_json::from_str(&page.events[0].json).unwrap();
        assert_eq!(record["eventSource"], service.event_source(), "{}", f.name);
        assert_eq!(record["eventName"], f.json["operation"], "{}", f.name);
        assert_eq!(
            record["requestID"],
            response.request_id.as_str(),
            "{}",
            f.name
        );
        if signed {
            assert_eq!(record["userIdentity"]["type"], "Root", "{}", f.name);
            assert_eq!(
                record["userIdentity"]["accessKeyId"], "AKIDEXAMPLE",
                "{}",
                f.name
            );
            let code = record["errorCode"].as_str().unwrap_or("");
            // The replay runs against an empty store: a call that names a
            // resource no fixture created (a trail's bucket) fails that way, and that is fine;
            // an error fixture fails with the error it captured.
            assert!(
                code.is_empty()
                    || code == "NotImplemented"
                    || code == "ResourceNotFoundException"
                    || code == "NotFound"
                    || code == "S3BucketDoesNotExistException"
                    || f.name.contains(&format!("-error-{code}")),
                "{}: unexpected error {code} {}",
                f.name,
                record["errorMessage"]
            );
        } else {
            assert_eq!(
                record["errorCode"], "MissingAuthenticationTokenException",
                "{}",
                f.name
            );
            assert_eq!(response.status, 400, "{}", f.name);
        }
    }
}

/// The CBOR answers in the fixtures are known-good: real clients parsed them
/// (`client_result`). Our encoder, given the same values, writes the same bytes.
#[test]
fn cbor_encoder_reproduces_known_good_answers() {
    let mut checked = 0;
    for f in load_all() {
        let response = &f.json["response"];
        let is_cbor = response["headers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|h| {
                h[0].as_str() == Some("Content-Type") && h[1].as_str() == Some("application/cbor")
            });
        if !is_cbor || response["body_encoding"].as_str() != Some("base64") {
            continue;
        }
        let body = base64::engine::general_purpose::STANDARD
            .decode(response["body"].as_str().unwrap())
            .unwrap();
        let value =
            trailwatch_protocol::cbor::decode(&body).unwrap_or_else(|e| panic!("{}: {e}", f.name));
        assert_eq!(
            trailwatch_protocol::cbor::encode(&value),
            body,
            "{}",
            f.name
        );
        checked += 1;
    }
    assert!(
        checked >= 4,
        "expected the CBOR answers of the fixture set, found {checked}"
    );
}
