//! Maps a request to `(service, protocol, operation)` before its body is decoded
//! (`spec/protocols.md` §3.1–3.4). The first matching rule wins: rpcv2Cbor by the
//! `smithy-protocol` header and path, awsJson by `X-Amz-Target`, S3's restXml by
//! a credential scope naming `s3`, restJson1 by route, awsQuery by `Action` in
//! the form body or query string.

use crate::error::ApiError;
use crate::query;
use crate::s3;
use crate::service::{Protocol, Service};

/// The parts of a request classification looks at. Header names are matched
/// case-insensitively; `body` is the decoded (gunzipped) body.
#[derive(Debug, Clone)]
pub struct RequestHead<'a> {
    /// HTTP method, uppercase.
    pub method: &'a str,
    /// Path as received, still percent-encoded.
    pub path: &'a str,
    /// Raw query string without `?`.
    pub query: &'a str,
    /// Headers in arrival order.
    pub headers: &'a [(String, String)],
}

impl RequestHead<'_> {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(self.headers, name)
    }
}

/// First value of header `name` in `headers` (case-insensitive).
pub fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Target service.
    pub service: Service,
    /// Wire protocol of request and response.
    pub protocol: Protocol,
    /// Operation name (`PutMetricData`).
    pub operation: String,
    /// awsQuery and restJson1: decoded parameters, query string then body
    /// (later pairs win when read through the tree); restXml (S3): the query
    /// string's parameters.
    pub params: Vec<(String, String)>,
}

/// A request that could not be routed, with the protocol its error must use.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifyError {
    /// Protocol for the error envelope (detected from the framing).
    pub protocol: Protocol,
    /// The service, when the framing named one.
    pub service: Option<Service>,
    /// Operation name, when one was named.
    pub operation: Option<String>,
    /// The error to send (boxed: routing failures are rare, results stay small).
    pub error: Box<ApiError>,
}

fn media_type(content_type: Option<&str>) -> String {
    content_type
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The credential-scope service of a SigV4 request, if it carries one; used for
/// awsQuery where operation names are shared between services.
pub fn scope_service(head: &RequestHead<'_>) -> Option<String> {
    let credential = match head.header("authorization") {
        Some(auth) => auth
            .split([',', ' '])
            .find_map(|part| part.trim().strip_prefix("Credential="))
            .map(str::to_owned),
        None => query::parse_form(head.query.as_bytes())
            .ok()
            .and_then(|pairs| query::param(&pairs, "X-Amz-Credential").map(str::to_owned)),
    }?;
    credential.split('/').nth(3).map(str::to_owned)
}

/// Classifies a request.
pub fn classify(head: &RequestHead<'_>, body: &[u8]) -> Result<Route, ClassifyError> {
    let target = head
        .header("x-amz-target")
        .or_else(|| head.header("x-amzn-target"));

    // 1. rpcv2Cbor.
    if let Some(smithy) = head.header("smithy-protocol") {
        let fail = |error: ApiError, service, operation| ClassifyError {
            protocol: Protocol::RpcV2Cbor,
            service,
            operation,
            error: Box::new(error),
        };
        if !smithy.trim().eq_ignore_ascii_case("rpc-v2-cbor") {
            return Err(ClassifyError {
                protocol: Protocol::AwsJson1_0,
                service: None,
                operation: None,
                error: Box::new(ApiError::new(
                    "UnsupportedProtocolException",
                    400,
                    format!("Unsupported smithy-protocol {smithy:?}"),
                )),
            });
        }
        let segments: Vec<&str> = head.path.split('/').collect();
        let n = segments.len();
        if n < 4 || segments[n - 4] != "service" || segments[n - 2] != "operation" {
            return Err(fail(
                ApiError::new("UnknownOperationException", 404, "Unknown operation path"),
                None,
                None,
            ));
        }
        let service_name = segments[n - 3];
        let operation = segments[n - 1].to_owned();
        let service = match service_name {
            "GraniteServiceVersion20100801"
            | "com.amazonaws.cloudwatch.GraniteServiceVersion20100801" => Service::CloudWatch,
            _ => {
                return Err(fail(
                    ApiError::new(
                        "UnknownOperationException",
                        404,
                        format!("Unknown service {service_name}"),
                    ),
                    None,
                    Some(operation),
                ))
            }
        };
        if target.is_some() {
            return Err(fail(
                ApiError::malformed("rpc-v2-cbor requests must not carry X-Amz-Target"),
                Some(service),
                Some(operation),
            ));
        }
        if head.method != "POST" {
            return Err(fail(
                ApiError::new(
                    "UnknownOperationException",
                    405,
                    "rpc-v2-cbor requires POST",
                ),
                Some(service),
                Some(operation),
            ));
        }
        if operation.is_empty() || operation.contains('#') {
            return Err(fail(
                ApiError::new("UnknownOperationException", 404, "Invalid operation name"),
                Some(service),
                None,
            ));
        }
        return Ok(Route {
            service,
            protocol: Protocol::RpcV2Cbor,
            operation,
            params: vec![],
        });
    }

    // 2. awsJson.
    if let Some(target) = target {
        let (prefix, operation) = target.rsplit_once('.').unwrap_or(("", target));
        let declared = match media_type(head.header("content-type")).as_str() {
            "application/x-amz-json-1.0" => Some(Protocol::AwsJson1_0),
            "application/x-amz-json-1.1" => Some(Protocol::AwsJson1_1),
            _ => None,
        };
        let Some(service) = Service::from_json_target_prefix(prefix) else {
            return Err(ClassifyError {
                protocol: declared.unwrap_or(Protocol::AwsJson1_0),
                service: None,
                operation: Some(operation.to_owned()),
                error: Box::new(ApiError::new(
                    "UnknownOperationException",
                    400,
                    format!("Operation {target} is not supported"),
                )),
            });
        };
        // Be lenient with the content type: the service defines its JSON version.
        let protocol = service
            .json_protocol()
            .or(declared)
            .unwrap_or(Protocol::AwsJson1_1);
        if head.method != "POST" || operation.is_empty() {
            return Err(ClassifyError {
                protocol,
                service: Some(service),
                operation: Some(operation.to_owned()),
                error: Box::new(ApiError::new(
                    "UnknownOperationException",
                    400,
                    "Invalid request",
                )),
            });
        }
        return Ok(Route {
            service,
            protocol,
            operation: operation.to_owned(),
            params: vec![],
        });
    }

    // 3. restXml (S3): the credential scope is the only reliable sign, since
    // S3 requests are plain REST calls on any path. Signature Version 2 is
    // S3-only too: routed here so it is refused in S3's terms.
    if is_s3(head) {
        return classify_s3(head);
    }

    // 4. restJson1 (CloudTrail Data).
    let path_only = head.path;
    if head.method == "POST"
        && (path_only == "/PutAuditEvents" || path_only.ends_with("/PutAuditEvents"))
    {
        let params = query::parse_form(head.query.as_bytes()).unwrap_or_default();
        return Ok(Route {
            service: Service::CloudTrailData,
            protocol: Protocol::RestJson1,
            operation: "PutAuditEvents".to_owned(),
            params,
        });
    }

    // 5. awsQuery.
    let query_error = |error: ApiError, service, operation| ClassifyError {
        protocol: Protocol::AwsQuery,
        service,
        operation,
        error: Box::new(error),
    };
    let mut params = query::parse_form(head.query.as_bytes())
        .map_err(|e| query_error(ApiError::malformed(e.to_string()), None, None))?;
    if media_type(head.header("content-type")) == "application/x-www-form-urlencoded" {
        let body_params = query::parse_form(body)
            .map_err(|e| query_error(ApiError::malformed(e.to_string()), None, None))?;
        params.extend(body_params);
    }
    let last = |name: &str| {
        params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let action = last("Action");
    let version = last("Version");
    let scoped = scope_service(head).and_then(|s| Service::from_signing_name(&s));
    let service = scoped
        .filter(|s| s.speaks_query())
        .or_else(|| version.as_deref().and_then(Service::from_query_version));
    let Some(action) = action else {
        if params.is_empty() && head.header("authorization").is_none() && head.method == "GET" {
            return Err(query_error(
                ApiError::new("UnknownOperationException", 404, "Unknown request"),
                service,
                None,
            ));
        }
        return Err(query_error(
            ApiError::new("MissingAction", 400, "Missing Action"),
            service,
            None,
        ));
    };
    let Some(service) = service else {
        return Err(query_error(
            ApiError::new(
                "MissingAuthenticationToken",
                403,
                "Request is missing Authentication Token",
            ),
            None,
            Some(action),
        ));
    };
    if let Some(version) = version.as_deref() {
        if version != service.api_version() {
            return Err(query_error(
                ApiError::new(
                    "InvalidParameterValue",
                    400,
                    format!("Could not find operation {action} for version {version}"),
                ),
                Some(service),
                Some(action),
            ));
        }
    }
    Ok(Route {
        service,
        protocol: Protocol::AwsQuery,
        operation: action,
        params,
    })
}

/// Whether the request is for S3: its SigV4 credential scope names `s3`, or it
/// is signed with Signature Version 2 (which only S3 ever took). Known from the
/// head alone, so the edge can keep an S3 body (object bytes) undecoded.
pub fn is_s3(head: &RequestHead<'_>) -> bool {
    scope_service(head).as_deref() == Some("s3") || signed_with_sigv2(head) || anonymous_s3(head)
}

/// An unsigned REST call on a bucket path (`curl http://host/bucket/key`): no
/// other service takes unsigned requests without an `Action`, so it is S3's,
/// which answers AccessDenied (and records the attempt).
fn anonymous_s3(head: &RequestHead<'_>) -> bool {
    if head.header("authorization").is_some()
        || head.header("x-amz-target").is_some()
        || head.header("smithy-protocol").is_some()
        || !matches!(head.method, "GET" | "HEAD" | "PUT" | "DELETE")
        || head.path.trim_start_matches('/').is_empty()
    {
        return false;
    }
    let pairs = query::parse_form(head.query.as_bytes()).unwrap_or_default();
    ["Action", "X-Amz-Credential", "X-Amz-Signature"]
        .iter()
        .all(|p| query::param(&pairs, p).is_none())
}

/// Whether the request carries an S3 Signature Version 2 (`Authorization: AWS
/// key:signature`, or a presigned `AWSAccessKeyId` + `Signature` query).
fn signed_with_sigv2(head: &RequestHead<'_>) -> bool {
    if let Some(auth) = head.header("authorization") {
        return auth.trim_start().starts_with("AWS ");
    }
    let pairs = query::parse_form(head.query.as_bytes()).unwrap_or_default();
    query::param(&pairs, "AWSAccessKeyId").is_some() && query::param(&pairs, "Signature").is_some()
}

/// Classifies a path-style S3 request (the scope already named `s3`).
fn classify_s3(head: &RequestHead<'_>) -> Result<Route, ClassifyError> {
    let fail = |error: ApiError, operation: Option<&str>| ClassifyError {
        protocol: Protocol::RestXml,
        service: Some(Service::S3),
        operation: operation.map(str::to_owned),
        error: Box::new(error),
    };
    let target = s3::target(head.path).map_err(|e| fail(e, None))?;
    let params = s3::query_params(head.query).map_err(|e| fail(e, None))?;
    let copy_source = head.header("x-amz-copy-source").is_some();
    let operation =
        s3::operation(head.method, &target, &params, copy_source).map_err(|e| fail(e, None))?;
    Ok(Route {
        service: Service::S3,
        protocol: Protocol::RestXml,
        operation: operation.to_owned(),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head<'a>(
        method: &'a str,
        path: &'a str,
        query: &'a str,
        headers: &'a [(String, String)],
    ) -> RequestHead<'a> {
        RequestHead {
            method,
            path,
            query,
            headers,
        }
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn cloudtrail_both_prefixes() {
        for target in [
            "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents",
            "CloudTrail_20131101.LookupEvents",
        ] {
            let headers = h(&[
                ("X-Amz-Target", target),
                ("Content-Type", "application/x-amz-json-1.1"),
            ]);
            let route = classify(&head("POST", "/", "", &headers), b"{}").unwrap();
            assert_eq!(route.service, Service::CloudTrail);
            assert_eq!(route.protocol, Protocol::AwsJson1_1);
            assert_eq!(route.operation, "LookupEvents");
        }
    }

    #[test]
    fn cbor_path_with_prefix_and_target_rejected() {
        let headers = h(&[("smithy-protocol", "rpc-v2-cbor")]);
        let route = classify(
            &head(
                "POST",
                "/base/service/GraniteServiceVersion20100801/operation/PutMetricData",
                "",
                &headers,
            ),
            b"",
        )
        .unwrap();
        assert_eq!(
            (route.service, route.protocol),
            (Service::CloudWatch, Protocol::RpcV2Cbor)
        );
        let headers = h(&[("smithy-protocol", "rpc-v2-cbor"), ("X-Amz-Target", "x.y")]);
        let err = classify(
            &head(
                "POST",
                "/service/GraniteServiceVersion20100801/operation/PutMetricData",
                "",
                &headers,
            ),
            b"",
        )
        .unwrap_err();
        assert_eq!(err.protocol, Protocol::RpcV2Cbor);
        assert_eq!(err.error.status, 400);
    }

    #[test]
    fn query_by_version_and_missing_action() {
        let headers = h(&[(
            "Content-Type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )]);
        let route = classify(
            &head("POST", "/", "", &headers),
            b"Action=ListTopics&Version=2010-03-31",
        )
        .unwrap();
        assert_eq!(
            (route.service, route.operation.as_str()),
            (Service::Sns, "ListTopics")
        );
        let err = classify(&head("POST", "/", "", &headers), b"Version=2010-03-31").unwrap_err();
        assert_eq!(err.error.code, "MissingAction");
        let err = classify(
            &head("POST", "/", "", &headers),
            b"Action=X&Version=1999-01-01",
        )
        .unwrap_err();
        assert_eq!(err.error.code, "MissingAuthenticationToken");
        let signed = h(&[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Authorization", "AWS4-HMAC-SHA256 Credential=AKID/20261124/us-east-1/sns/aws4_request, SignedHeaders=host, Signature=00"),
        ]);
        let err = classify(
            &head("POST", "/", "", &signed),
            b"Action=X&Version=1999-01-01",
        )
        .unwrap_err();
        assert_eq!(
            (err.error.code.as_str(), err.service),
            ("InvalidParameterValue", Some(Service::Sns))
        );
    }

    #[test]
    fn s3_by_credential_scope_header_or_presigned() {
        let signed = h(&[(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=AKID/20261124/eu-west-1/s3/aws4_request, SignedHeaders=host, Signature=00",
        )]);
        let route = classify(&head("GET", "/trail-bucket", "location", &signed), b"").unwrap();
        assert_eq!(
            (route.service, route.protocol, route.operation.as_str()),
            (Service::S3, Protocol::RestXml, "GetBucketLocation")
        );
        // A key named like the CloudTrail Data route is still an S3 object.
        let route = classify(&head("POST", "/b/PutAuditEvents", "uploads", &signed), b"").unwrap();
        assert_eq!(route.operation, "CreateMultipartUpload");
        let presigned = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20261124%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20261124T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature=00";
        let route = classify(&head("GET", "/b/k", presigned, &[]), b"").unwrap();
        assert_eq!(
            (route.service, route.operation.as_str()),
            (Service::S3, "GetObject")
        );
        let err = classify(&head("PATCH", "/b/k", "", &signed), b"").unwrap_err();
        assert_eq!(
            (err.protocol, err.service, err.error.status),
            (Protocol::RestXml, Some(Service::S3), 405)
        );
        // Signature Version 2 is S3's alone.
        let route = classify(
            &head(
                "GET",
                "/b/k",
                "AWSAccessKeyId=AKID&Signature=x%3D&Expires=1",
                &[],
            ),
            b"",
        )
        .unwrap();
        assert_eq!(route.service, Service::S3);
        // Unsigned on a bucket path: S3's, which refuses it (AccessDenied).
        let route = classify(&head("GET", "/b/k", "", &[]), b"").unwrap();
        assert_eq!(
            (route.service, route.operation.as_str()),
            (Service::S3, "GetObject")
        );
        // Unsigned at the root, or with an Action: not S3.
        assert!(classify(&head("GET", "/", "", &[]), b"").is_err_and(|e| e.service.is_none()));
        let confirm = classify(
            &head(
                "GET",
                "/",
                "Action=ConfirmSubscription&Version=2010-03-31&TopicArn=x&Token=y",
                &[],
            ),
            b"",
        )
        .unwrap();
        assert_eq!(confirm.service, Service::Sns);
    }
}
