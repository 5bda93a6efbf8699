//! S3's REST-XML wire, path-style only (`http://host/bucket/key`): which
//! operation a request is, from its method, path, query and a header; the
//! bucket and key it names; the `CreateBucketConfiguration` body; and the XML
//! text helpers S3 bodies need (`spec/cloudtrail.md` §3.10).
//!
//! A request is S3 when its SigV4 credential scope names service `s3`
//! ([`crate::classify`]); nothing else here is consulted for routing.
//! Operations are named as in the S3 service model; those trailwatch does not
//! serve are still named, so the edge answers them `NotImplemented`.

use percent_encoding::percent_decode_str;
use trailwatch_types::Timestamp;

use crate::error::ApiError;

/// The bucket and key a path-style request names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct S3Target {
    /// First path segment, percent-decoded; `None` for `/`.
    pub bucket: Option<String>,
    /// The rest of the path after `/{bucket}/`, percent-decoded once; `None`
    /// when the path ends at the bucket (with or without a trailing `/`).
    pub key: Option<String>,
}

fn decode_once(text: &str) -> Result<String, ApiError> {
    percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| {
            ApiError::new(
                "InvalidURI",
                400,
                "Couldn't parse the specified URI: it is not UTF-8 once decoded.",
            )
        })
}

/// Splits a raw (still percent-encoded) path into bucket and key.
pub fn target(path: &str) -> Result<S3Target, ApiError> {
    let rest = path.strip_prefix('/').unwrap_or(path);
    if rest.is_empty() {
        return Ok(S3Target::default());
    }
    let (bucket, key) = match rest.split_once('/') {
        Some((bucket, key)) => (bucket, Some(key).filter(|k| !k.is_empty())),
        None => (rest, None),
    };
    Ok(S3Target {
        bucket: Some(decode_once(bucket)?),
        key: key.map(decode_once).transpose()?,
    })
}

/// Query parameters, percent-decoded (`+` stays a plus, as SigV4 reads it); a
/// name without `=` has the empty value (`?location`).
pub fn query_params(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode_once(k)?, decode_once(v)?))
        })
        .collect()
}

/// Sub-resources of a bucket, by method: `(method, query name, operation)`.
const BUCKET_SUBRESOURCES: &[(&str, &str, &str)] = &[
    ("GET", "location", "GetBucketLocation"),
    ("GET", "acl", "GetBucketAcl"),
    ("GET", "policy", "GetBucketPolicy"),
    ("GET", "policyStatus", "GetBucketPolicyStatus"),
    ("GET", "tagging", "GetBucketTagging"),
    ("GET", "versioning", "GetBucketVersioning"),
    ("GET", "cors", "GetBucketCors"),
    ("GET", "lifecycle", "GetBucketLifecycleConfiguration"),
    ("GET", "encryption", "GetBucketEncryption"),
    ("GET", "logging", "GetBucketLogging"),
    ("GET", "notification", "GetBucketNotificationConfiguration"),
    ("GET", "website", "GetBucketWebsite"),
    ("GET", "replication", "GetBucketReplication"),
    ("GET", "requestPayment", "GetBucketRequestPayment"),
    ("GET", "accelerate", "GetBucketAccelerateConfiguration"),
    ("GET", "ownershipControls", "GetBucketOwnershipControls"),
    ("GET", "publicAccessBlock", "GetPublicAccessBlock"),
    ("GET", "object-lock", "GetObjectLockConfiguration"),
    ("GET", "uploads", "ListMultipartUploads"),
    ("GET", "versions", "ListObjectVersions"),
    ("PUT", "acl", "PutBucketAcl"),
    ("PUT", "policy", "PutBucketPolicy"),
    ("PUT", "tagging", "PutBucketTagging"),
    ("PUT", "versioning", "PutBucketVersioning"),
    ("PUT", "cors", "PutBucketCors"),
    ("PUT", "lifecycle", "PutBucketLifecycleConfiguration"),
    ("PUT", "encryption", "PutBucketEncryption"),
    ("PUT", "logging", "PutBucketLogging"),
    ("PUT", "notification", "PutBucketNotificationConfiguration"),
    ("PUT", "website", "PutBucketWebsite"),
    ("PUT", "replication", "PutBucketReplication"),
    ("PUT", "requestPayment", "PutBucketRequestPayment"),
    ("PUT", "accelerate", "PutBucketAccelerateConfiguration"),
    ("PUT", "ownershipControls", "PutBucketOwnershipControls"),
    ("PUT", "publicAccessBlock", "PutPublicAccessBlock"),
    ("PUT", "object-lock", "PutObjectLockConfiguration"),
    ("DELETE", "policy", "DeleteBucketPolicy"),
    ("DELETE", "tagging", "DeleteBucketTagging"),
    ("DELETE", "cors", "DeleteBucketCors"),
    ("DELETE", "lifecycle", "DeleteBucketLifecycle"),
    ("DELETE", "encryption", "DeleteBucketEncryption"),
    ("DELETE", "website", "DeleteBucketWebsite"),
    ("DELETE", "replication", "DeleteBucketReplication"),
    (
        "DELETE",
        "ownershipControls",
        "DeleteBucketOwnershipControls",
    ),
    ("DELETE", "publicAccessBlock", "DeletePublicAccessBlock"),
    ("POST", "delete", "DeleteObjects"),
];

/// Sub-resources of an object, by method.
const OBJECT_SUBRESOURCES: &[(&str, &str, &str)] = &[
    ("GET", "acl", "GetObjectAcl"),
    ("GET", "tagging", "GetObjectTagging"),
    ("GET", "attributes", "GetObjectAttributes"),
    ("GET", "retention", "GetObjectRetention"),
    ("GET", "legal-hold", "GetObjectLegalHold"),
    ("GET", "uploadId", "ListParts"),
    ("PUT", "acl", "PutObjectAcl"),
    ("PUT", "tagging", "PutObjectTagging"),
    ("PUT", "retention", "PutObjectRetention"),
    ("PUT", "legal-hold", "PutObjectLegalHold"),
    ("PUT", "uploadId", "UploadPart"),
    ("DELETE", "tagging", "DeleteObjectTagging"),
    ("DELETE", "uploadId", "AbortMultipartUpload"),
    ("POST", "uploads", "CreateMultipartUpload"),
    ("POST", "uploadId", "CompleteMultipartUpload"),
    ("POST", "restore", "RestoreObject"),
    ("POST", "select", "SelectObjectContent"),
];

fn method_not_allowed(method: &str) -> ApiError {
    ApiError::new(
        "MethodNotAllowed",
        405,
        format!("The specified method {method} is not allowed against this resource."),
    )
}

/// The operation of a request: method, bucket and key, query parameter
/// names, and whether it carries `x-amz-copy-source`.
pub fn operation(
    method: &str,
    target: &S3Target,
    params: &[(String, String)],
    copy_source: bool,
) -> Result<&'static str, ApiError> {
    let has = |name: &str| params.iter().any(|(k, _)| k == name);
    let subresource = |table: &[(&str, &'static str, &'static str)]| {
        table
            .iter()
            .find(|(m, name, _)| *m == method && has(name))
            .map(|(_, _, operation)| *operation)
    };
    let operation = match (&target.bucket, &target.key) {
        (None, _) => match method {
            "GET" => Some("ListBuckets"),
            _ => None,
        },
        (Some(_), None) => subresource(BUCKET_SUBRESOURCES).or(match method {
            "GET" if params.iter().any(|(k, v)| k == "list-type" && v == "2") => {
                Some("ListObjectsV2")
            }
            "GET" => Some("ListObjects"),
            "PUT" => Some("CreateBucket"),
            "HEAD" => Some("HeadBucket"),
            "DELETE" => Some("DeleteBucket"),
            _ => None,
        }),
        (Some(_), Some(_)) => match (method, subresource(OBJECT_SUBRESOURCES)) {
            ("PUT", Some("UploadPart")) if copy_source => Some("UploadPartCopy"),
            (_, Some(operation)) => Some(operation),
            ("GET", None) => Some("GetObject"),
            ("PUT", None) if copy_source => Some("CopyObject"),
            ("PUT", None) => Some("PutObject"),
            ("HEAD", None) => Some("HeadObject"),
            ("DELETE", None) => Some("DeleteObject"),
            _ => None,
        },
    };
    operation.ok_or_else(|| method_not_allowed(method))
}

/// The `LocationConstraint` of a `CreateBucketConfiguration` body, if it
/// names one. Read by element name only: the body is recorded, never acted on.
pub fn location_constraint(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let open = text.find("<LocationConstraint")?;
    let after_open = &text[open..];
    let content_start = after_open.find('>')? + 1;
    if after_open[..content_start].ends_with("/>") {
        return None;
    }
    let content = &after_open[content_start..];
    let end = content.find("</LocationConstraint>")?;
    Some(content[..end].trim().to_owned()).filter(|c| !c.is_empty())
}

/// S3's XML timestamp: ISO 8601 in UTC, always with milliseconds
/// (`2026-01-01T00:00:00.000Z`).
pub fn xml_timestamp(t: Timestamp) -> String {
    let seconds = t.to_iso8601_seconds();
    let whole = seconds.strip_suffix('Z').unwrap_or(&seconds);
    format!("{whole}.{:03}Z", t.millis().rem_euclid(1000))
}

/// `encoding-type=url`: every byte outside `A-Z a-z 0-9 - _ . ~` and `/`
/// percent-encoded, as S3 encodes keys and prefixes for XML-unsafe names.
pub fn url_encode(text: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'/');
    percent_encoding::utf8_percent_encode(text, KEEP).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any path, query and body is routed or refused, never a panic; a
        /// key encoded the way SDKs encode it decodes back to itself.
        #[test]
        fn never_panics_and_keys_round_trip(
            path in "\\PC{0,40}",
            query in "[a-z%=&0-9A-F-]{0,30}",
            body in proptest::collection::vec(any::<u8>(), 0..64),
            key in "[^/]\\PC{0,20}",
        ) {
            if let (Ok(t), Ok(params)) = (target(&path), query_params(&query)) {
                for method in ["GET", "PUT", "HEAD", "DELETE", "POST", "PATCH"] {
                    let _ = operation(method, &t, &params, false);
                }
            }
            let _ = location_constraint(&body);
            let encoded = url_encode(&key);
            let t = target(&format!("/bucket/{encoded}")).unwrap();
            prop_assert_eq!(t.key.as_deref(), Some(key.as_str()));
        }
    }

    fn op(method: &str, path: &str, query: &str) -> Result<&'static str, ApiError> {
        operation(
            method,
            &target(path).unwrap(),
            &query_params(query).unwrap(),
            false,
        )
    }

    #[test]
    fn targets() {
        assert_eq!(target("/").unwrap(), S3Target::default());
        let bucket_only = S3Target {
            bucket: Some("b".into()),
            key: None,
        };
        assert_eq!(target("/b").unwrap(), bucket_only);
        assert_eq!(target("/b/").unwrap(), bucket_only);
        assert_eq!(
            target("/b/AWSLogs/a%20b%2Bc/d%25.json.gz").unwrap().key,
            Some("AWSLogs/a b+c/d%.json.gz".into())
        );
        assert_eq!(target("/b/dir/").unwrap().key, Some("dir/".into()));
        assert_eq!(target("/b/%C3%A9").unwrap().key, Some("é".into()));
        assert_eq!(target("/b/%FF").unwrap_err().code, "InvalidURI");
    }

    #[test]
    fn operations() {
        assert_eq!(op("GET", "/", "").unwrap(), "ListBuckets");
        assert_eq!(op("GET", "/b", "location").unwrap(), "GetBucketLocation");
        assert_eq!(
            op("GET", "/b", "marker=x&prefix=AWSLogs&encoding-type=url").unwrap(),
            "ListObjects"
        );
        assert_eq!(
            op("GET", "/b/", "list-type=2&prefix=").unwrap(),
            "ListObjectsV2"
        );
        assert_eq!(op("PUT", "/b", "").unwrap(), "CreateBucket");
        assert_eq!(op("HEAD", "/b", "").unwrap(), "HeadBucket");
        assert_eq!(op("DELETE", "/b", "").unwrap(), "DeleteBucket");
        assert_eq!(op("PUT", "/b", "tagging").unwrap(), "PutBucketTagging");
        assert_eq!(op("PUT", "/b/k", "").unwrap(), "PutObject");
        assert_eq!(op("GET", "/b/k", "").unwrap(), "GetObject");
        assert_eq!(op("HEAD", "/b/k", "").unwrap(), "HeadObject");
        assert_eq!(op("DELETE", "/b/k", "").unwrap(), "DeleteObject");
        assert_eq!(
            op("POST", "/b/k", "uploads").unwrap(),
            "CreateMultipartUpload"
        );
        assert_eq!(
            op("PUT", "/b/k", "partNumber=1&uploadId=u").unwrap(),
            "UploadPart"
        );
        // Presigned parameters are not sub-resources.
        assert_eq!(
            op(
                "GET",
                "/b/k",
                "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=00"
            )
            .unwrap(),
            "GetObject"
        );
        let copy = operation("PUT", &target("/b/k").unwrap(), &[], true).unwrap();
        assert_eq!(copy, "CopyObject");
        let err = op("POST", "/b/k", "").unwrap_err();
        assert_eq!((err.code.as_str(), err.status), ("MethodNotAllowed", 405));
        assert_eq!(op("PUT", "/", "").unwrap_err().status, 405);
    }

    #[test]
    fn create_bucket_configuration() {
        let body = br#"<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>"#;
        assert_eq!(location_constraint(body).as_deref(), Some("eu-west-1"));
        assert_eq!(
            location_constraint(
                b"<CreateBucketConfiguration><LocationConstraint/></CreateBucketConfiguration>"
            ),
            None
        );
        assert_eq!(location_constraint(b""), None);
        assert_eq!(location_constraint(b"\xff"), None);
    }

    #[test]
    fn timestamps_and_url_encoding() {
        assert_eq!(
            xml_timestamp(Timestamp::from_millis(1_767_225_600_000)),
            "2026-01-01T00:00:00.000Z"
        );
        assert_eq!(
            xml_timestamp(Timestamp::from_millis(1_767_225_600_042)),
            "2026-01-01T00:00:00.042Z"
        );
        assert_eq!(url_encode("a b/é+~"), "a%20b/%C3%A9%2B~");
    }
}
