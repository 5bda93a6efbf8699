//! S3, path-style, over trailwatch's buckets: the read API `aws cloudtrail
//! validate-logs` needs (`spec/cloudtrail.md` §3.10) and enough of the write
//! side for the aws CLI's `s3 mb/cp/ls/rb` (ListBuckets, CreateBucket,
//! HeadBucket, DeleteBucket, GetBucketLocation, ListObjects, ListObjectsV2,
//! PutObject, GetObject, HeadObject, DeleteObject).
//!
//! Handlers answer REST responses of their own ([`super::RestAnswer`]); the
//! edge adds the request id and renders errors in S3's XML envelope. Bucket
//! registration commits with the call's audit record, the name reserved until
//! then; object bytes go to the object store through
//! [`trailwatch_core::buckets::Buckets`] before the answer.
//!
//! Buckets belong to the caller's account: another account's bucket answers
//! `AccessDenied`, a missing one `NoSuchBucket`. AWS error codes for S3 are
//! spelled only here and in `trailwatch_protocol::s3` (routing errors).

use trailwatch_core::audit::Resource;
use trailwatch_core::buckets::{
    BucketError, BucketInfo, Buckets, ListPage, ListQuery, MAX_LIST_KEYS,
};
use trailwatch_protocol::classify::header;
use trailwatch_protocol::s3::{self, url_encode, xml_timestamp};
use trailwatch_protocol::sigv4::{self, AuthFailure};
use trailwatch_protocol::xml::escape_into;
use trailwatch_protocol::{ApiError, Route, Service, Value};

use super::{CallContext, Hold, Outcome, RestAnswer};
use crate::app::App;
use crate::edge::IncomingRequest;

/// S3's limit on the user metadata of one object (names and values, bytes).
const MAX_METADATA_BYTES: usize = 2 * 1024;
/// Content type of objects put without one, as S3 answers.
const DEFAULT_CONTENT_TYPE: &str = "binary/octet-stream";
/// The operations served; the rest of the S3 model answers `NotImplemented`.
pub(crate) const SERVED: &[&str] = &[
    "ListBuckets",
    "CreateBucket",
    "HeadBucket",
    "DeleteBucket",
    "GetBucketLocation",
    "ListObjects",
    "ListObjectsV2",
    "PutObject",
    "GetObject",
    "HeadObject",
    "DeleteObject",
];

fn s3_error(code: &str, status: u16, message: &str) -> ApiError {
    ApiError::new(code, status, message)
}

fn with_bucket(mut err: ApiError, bucket: &str) -> ApiError {
    err.extra
        .push(("BucketName".to_owned(), Value::string(bucket)));
    err
}

fn with_key(mut err: ApiError, key: &str) -> ApiError {
    err.extra.push(("Key".to_owned(), Value::string(key)));
    err
}

fn internal_error(cx: &CallContext<'_>, err: &dyn std::fmt::Display) -> ApiError {
    tracing::error!(request_id = %cx.request_id, error = %err, "s3 storage failure");
    s3_error(
        "InternalError",
        500,
        "We encountered an internal error. Please try again.",
    )
}

/// Maps a domain error to S3's code, status and modelled members.
fn bucket_error(cx: &CallContext<'_>, err: BucketError) -> ApiError {
    match err {
        BucketError::InvalidName { name, .. } => with_bucket(
            s3_error("InvalidBucketName", 400, "The specified bucket is not valid."),
            &name,
        ),
        BucketError::AlreadyOwnedByYou(name) => with_bucket(
            s3_error(
                "BucketAlreadyOwnedByYou",
                409,
                "Your previous request to create the named bucket succeeded and you already own it.",
            ),
            &name,
        ),
        BucketError::AlreadyExists(name) => with_bucket(
            s3_error(
                "BucketAlreadyExists",
                409,
                "The requested bucket name is not available. The bucket namespace is shared by all users of the system. Please select a different name and try again.",
            ),
            &name,
        ),
        BucketError::NoSuchBucket(name) => no_such_bucket(&name),
        BucketError::NotEmpty(name) => with_bucket(
            s3_error(
                "BucketNotEmpty",
                409,
                "The bucket you tried to delete is not empty",
            ),
            &name,
        ),
        BucketError::Conflict(name) => with_bucket(
            s3_error(
                "OperationAborted",
                409,
                "A conflicting conditional operation is currently in progress against this resource. Please try again.",
            ),
            &name,
        ),
        BucketError::KeyTooLong { .. } => s3_error("KeyTooLongError", 400, "Your key is too long"),
        BucketError::InvalidKey { key, reason } => with_key(
            s3_error(
                "InvalidArgument",
                400,
                &format!("trailwatch cannot store this key: {reason}."),
            ),
            &key,
        ),
        other => internal_error(cx, &other),
    }
}

fn no_such_bucket(bucket: &str) -> ApiError {
    with_bucket(
        s3_error("NoSuchBucket", 404, "The specified bucket does not exist"),
        bucket,
    )
}

/// Maps an authentication failure to S3's codes (403s where S3 answers them).
pub(crate) fn auth_error(failure: AuthFailure) -> ApiError {
    match failure {
        // Also a Signature Version 2 presigned URL, which carries no SigV4 parts.
        AuthFailure::Missing => s3_error(
            "AccessDenied",
            403,
            "Access Denied: trailwatch accepts Signature Version 4 requests only.",
        ),
        AuthFailure::Incomplete(message) => s3_error("AuthorizationHeaderMalformed", 400, &message),
        AuthFailure::UnknownKey => s3_error(
            "InvalidAccessKeyId",
            403,
            "The AWS Access Key Id you provided does not exist in our records.",
        ),
        AuthFailure::Mismatch(message) => s3_error("SignatureDoesNotMatch", 403, &message),
        AuthFailure::Skew(_) => s3_error(
            "RequestTimeTooSkewed",
            403,
            "The difference between the request time and the current time is too large.",
        ),
        AuthFailure::Expired => s3_error("AccessDenied", 403, "Request has expired"),
        AuthFailure::ContentSha256Mismatch => s3_error(
            "XAmzContentSHA256Mismatch",
            400,
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        ),
    }
}

/// S3's answer to a body over the server's limit.
pub(crate) fn too_large() -> ApiError {
    s3_error(
        "EntityTooLarge",
        400,
        "Your proposed upload exceeds the maximum allowed size",
    )
}

/// What one request names, read once.
struct Call<'a> {
    req: &'a IncomingRequest,
    params: &'a [(String, String)],
    bucket: Option<String>,
    key: Option<String>,
}

impl Call<'_> {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn bucket(&self) -> Result<&str, ApiError> {
        self.bucket
            .as_deref()
            .ok_or_else(|| s3_error("InvalidRequest", 400, "A bucket name is required."))
    }

    fn key(&self) -> Result<&str, ApiError> {
        self.key
            .as_deref()
            .ok_or_else(|| s3_error("InvalidRequest", 400, "An object key is required."))
    }
}

fn call<'a>(route: &'a Route, req: &'a IncomingRequest) -> Result<Call<'a>, ApiError> {
    let target = s3::target(&req.path)?;
    Ok(Call {
        req,
        params: &route.params,
        bucket: target.bucket,
        key: target.key,
    })
}

/// Handles one S3 request whose caller is verified.
pub(crate) async fn dispatch(
    app: &App,
    cx: &CallContext<'_>,
    route: &Route,
    req: &IncomingRequest,
) -> Result<Outcome, ApiError> {
    let op = route.operation.as_str();
    if !super::model_operations(Service::S3).contains(&op) {
        return Err(super::unknown_operation(route.protocol, op));
    }
    if !SERVED.contains(&op) {
        return Err(not_implemented(op));
    }
    let call = call(route, req)?;
    let buckets = &app.buckets;
    match op {
        "ListBuckets" => list_buckets(cx, buckets),
        "CreateBucket" => create_bucket(cx, buckets, &call),
        "HeadBucket" => head_bucket(cx, buckets, &call),
        "DeleteBucket" => delete_bucket(cx, buckets, &call).await,
        "GetBucketLocation" => get_bucket_location(cx, buckets, &call),
        "ListObjects" => list_objects(cx, buckets, &call, false).await,
        "ListObjectsV2" => list_objects(cx, buckets, &call, true).await,
        "PutObject" => put_object(cx, buckets, &call).await,
        "GetObject" => get_object(cx, buckets, &call).await,
        "HeadObject" => head_object(cx, buckets, &call).await,
        "DeleteObject" => delete_object(cx, buckets, &call).await,
        _ => Err(not_implemented(op)),
    }
}

fn not_implemented(op: &str) -> ApiError {
    s3_error(
        "NotImplemented",
        501,
        &format!("A header or operation you provided ({op}) implies functionality that is not implemented by trailwatch."),
    )
}

/// The caller's bucket `name`: `NoSuchBucket` when unregistered,
/// `AccessDenied` when another account owns it.
fn owned(cx: &CallContext<'_>, buckets: &Buckets, name: &str) -> Result<BucketInfo, ApiError> {
    match buckets.get(name).map_err(|e| bucket_error(cx, e))? {
        None => Err(no_such_bucket(name)),
        Some(info) if info.account != cx.principal.account_id => {
            Err(s3_error("AccessDenied", 403, "Access Denied"))
        }
        Some(info) => Ok(info),
    }
}

fn answer(status: u16, headers: Vec<(String, String)>, body: Vec<u8>) -> Outcome {
    Outcome {
        rest: Some(RestAnswer {
            status,
            headers,
            body,
        }),
        ..Outcome::default()
    }
}

fn xml_answer(body: String) -> Outcome {
    answer(
        200,
        vec![("Content-Type".to_owned(), "application/xml".to_owned())],
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{body}").into_bytes(),
    )
}

fn element(out: &mut String, name: &str, text: &str) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    escape_into(out, text);
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// S3's canonical user id for an account: 64 hex digits, stable per account.
fn canonical_user_id(account: &str) -> String {
    sigv4::sha256_hex(format!("trailwatch-s3-owner:{account}").as_bytes())
}

fn owner_xml(out: &mut String, account: &str) {
    out.push_str("<Owner>");
    element(out, "ID", &canonical_user_id(account));
    element(out, "DisplayName", account);
    out.push_str("</Owner>");
}

fn list_buckets(cx: &CallContext<'_>, buckets: &Buckets) -> Result<Outcome, ApiError> {
    let account = &cx.principal.account_id;
    let mine = buckets.list(account).map_err(|e| bucket_error(cx, e))?;
    let mut out = format!(
        "<ListAllMyBucketsResult xmlns=\"{}\">",
        Service::S3.xml_namespace()
    );
    owner_xml(&mut out, account);
    out.push_str("<Buckets>");
    for bucket in &mine {
        out.push_str("<Bucket>");
        element(&mut out, "Name", &bucket.name);
        element(&mut out, "CreationDate", &xml_timestamp(bucket.created));
        element(&mut out, "BucketRegion", &bucket.region);
        out.push_str("</Bucket>");
    }
    out.push_str("</Buckets></ListAllMyBucketsResult>");
    Ok(xml_answer(out))
}

fn create_bucket(
    cx: &CallContext<'_>,
    buckets: &Buckets,
    call: &Call<'_>,
) -> Result<Outcome, ApiError> {
    let name = call.bucket()?;
    let (reservation, changes) = buckets
        .reserve_create(&cx.principal.account_id, cx.region, name, cx.now)
        .map_err(|e| bucket_error(cx, e))?;
    let mut outcome = answer(
        200,
        vec![("Location".to_owned(), format!("/{name}"))],
        Vec::new(),
    );
    outcome.changes = changes;
    outcome.hold = Some(Hold::Bucket(reservation));
    Ok(outcome)
}

fn head_bucket(
    cx: &CallContext<'_>,
    buckets: &Buckets,
    call: &Call<'_>,
) -> Result<Outcome, ApiError> {
    let info = owned(cx, buckets, call.bucket()?)?;
    Ok(answer(
        200,
        vec![("x-amz-bucket-region".to_owned(), info.region)],
        Vec::new(),
    ))
}

async fn delete_bucket(
    cx: &CallContext<'_>,
    buckets: &Buckets,
    call: &Call<'_>,
) -> Result<Outcome, ApiError> {
    let name = call.bucket()?;
    owned(cx, buckets, name)?;
    let (reservation, changes) = buckets
        .reserve_delete(name)
        .await
        .map_err(|e| bucket_error(cx, e))?;
    let mut outcome = answer(204, Vec::new(), Vec::new());
    outcome.changes = changes;
    outcome.hold = Some(Hold::Bucket(reservation));
    Ok(outcome)
}

fn get_bucket_location(
    cx: &CallContext<'_>,
    buckets: &Buckets,
    call: &Call<'_>,
) -> Result<Outcome, ApiError> {
    let info = owned(cx, buckets, call.bucket()?)?;
    let namespace = Service::S3.xml_namespace();
    // us-east-1 is spelled as the empty constraint, as S3 answers it.
    let body = if info.region == "us-east-1" {
        format!("<LocationConstraint xmlns=\"{namespace}\"/>")
    } else {
        let mut out = format!("<LocationConstraint xmlns=\"{namespace}\">");
        escape_into(&mut out, &info.region);
        out.push_str("</LocationConstraint>");
        out
    };
    Ok(xml_answer(body))
}

fn max_keys(call: &Call<'_>) -> Result<usize, ApiError> {
    match call.param("max-keys") {
        None => Ok(MAX_LIST_KEYS),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(|n| (n as u64).min(MAX_LIST_KEYS as u64) as usize)
            .ok_or_else(|| {
                s3_error(
                    "InvalidArgument",
                    400,
                    "Provided max-keys not an integer or within integer range",
                )
            }),
    }
}

/// The key a V2 continuation token stands for (the token is that key in
/// URL-safe base64: opaque to clients, stateless here).
fn decode_continuation(token: &str) -> Result<String, ApiError> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| {
            s3_error(
                "InvalidArgument",
                400,
                "The continuation token provided is incorrect",
            )
        })
}

fn encode_continuation(last: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last)
}

async fn list_objects(
    cx: &CallContext<'_>,
    buckets: &Buckets,
    call: &Call<'_>,
    v2: bool,
) -> Result<Outcome, ApiError> {
    let name = call.bucket()?;
    owned(cx, buckets, name)?;
    let encode = match call.param("encoding-type") {
        None => false,
        Some("url") => true,
        Some(_) => {
            return Err(s3_error(
                "InvalidArgument",
                400,
                "Invalid Encoding Method specified in Request",
            ))
        }
    };
    let prefix = call.param("prefix").unwrap_or_default();
    let delimiter = call.param("delimiter").filter(|d| !d.is_empty());
    let max_keys = max_keys(call)?;
    let continuation = match (v2, call.param("continuation-token")) {
        (true, Some(token)) => Some(decode_continuation(token)?),
        _ => None,
    };
    let start_after = if v2 { call.param("start-after") } else { None };
    let marker = if v2 { None } else { call.param("marker") };
    // V2 resumes at the token when there is one; StartAfter only begins a listing.
    let after = continuation
        .as_deref()
        .or(start_after)
        .or(marker)
        .filter(|a| !a.is_empty());
    let page = buckets
        .list_page(
            name,
            &ListQuery {
                prefix,
                delimiter,
                after,
                max_keys,
            },
        )
        .await
        .map_err(|e| bucket_error(cx, e))?;
    let text = |s: &str| if encode { url_encode(s) } else { s.to_owned() };
    let mut out = format!(
        "<ListBucketResult xmlns=\"{}\">",
        Service::S3.xml_namespace()
    );
    element(&mut out, "Name", name);
    element(&mut out, "Prefix", &text(prefix));
    if v2 {
        if let Some(token) = call.param("continuation-token") {
            element(&mut out, "ContinuationToken", token);
        }
        if let Some(start) = start_after {
            element(&mut out, "StartAfter", &text(start));
        }
        let count = page.objects.len() + page.common_prefixes.len();
        element(&mut out, "KeyCount", &count.to_string());
    } else {
        element(&mut out, "Marker", &text(marker.unwrap_or_default()));
    }
    element(&mut out, "MaxKeys", &max_keys.to_string());
    if let Some(d) = delimiter {
        element(&mut out, "Delimiter", &text(d));
    }
    element(
        &mut out,
        "IsTruncated",
        if page.truncated { "true" } else { "false" },
    );
    next_page_elements(&mut out, &page, v2, &text);
    for object in &page.objects {
        out.push_str("<Contents>");
        element(&mut out, "Key", &text(&object.key));
        element(
            &mut out,
            "LastModified",
            &xml_timestamp(object.last_modified),
        );
        element(&mut out, "ETag", &object.etag);
        element(&mut out, "Size", &object.size.to_string());
        element(&mut out, "StorageClass", "STANDARD");
        out.push_str("</Contents>");
    }
    for common in &page.common_prefixes {
        out.push_str("<CommonPrefixes>");
        element(&mut out, "Prefix", &text(common));
        out.push_str("</CommonPrefixes>");
    }
    if encode {
        element(&mut out, "EncodingType", "url");
    }
    out.push_str("</ListBucketResult>");
    Ok(xml_answer(out))
}

/// `NextMarker` (v1) or `NextContinuationToken` (v2) of a truncated page.
fn next_page_elements(out: &mut String, page: &ListPage, v2: bool, text: &dyn Fn(&str) -> String) {
    let Some(last) = page.last.as_deref().filter(|_| page.truncated) else {
        return;
    };
    if v2 {
        element(out, "NextContinuationToken", &encode_continuation(last));
    } else {
        // Sent whenever truncated (AWS only with a delimiter): clients page by
        // it or by the last key, which is the same.
        element(out, "NextMarker", &text(last));
    }
}

/// `x-amz-meta-*` headers as (name without the prefix, lowercase; value).
fn user_metadata(headers: &[(String, String)]) -> Result<Vec<(String, String)>, ApiError> {
    let metadata: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| {
            let lower = k.to_ascii_lowercase();
            lower
                .strip_prefix("x-amz-meta-")
                .map(|name| (name.to_owned(), v.clone()))
        })
        .collect();
    let size: usize = metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_METADATA_BYTES {
        return Err(s3_error(
            "MetadataTooLarge",
            400,
            "Your metadata headers exceed the maximum allowed metadata size.",
        ));
    }
    Ok(metadata)
}

async fn put_object(
    cx: &CallContext<'_>,
    buckets: &Buckets,
    call: &Call<'_>,
) -> Result<Outcome, ApiError> {
    let name = call.bucket()?;
    let key = call.key()?;
    owned(cx, buckets, name)?;
    let metadata = user_metadata(&call.req.headers)?;
    let content_type = header(&call.req.headers, "content-type");
    let etag = buckets
        .put_object(
            name,
            key,
            call.req.body.clone(),
            content_type,
            &metadata,
            cx.now,
        )
        .await
        .map_err(|e| bucket_error(cx, e))?;
    Ok(answer(200, vec![("ETag".to_owned(), etag)], Vec::new()))
}

/// Headers describing an object, as GetObject and HeadObject answer them.
fn object_headers(
    content_type: Option<&str>,
    etag: &str,
    last_modified: trailwatch_types::Timestamp,
    metadata: &[(String, String)],
) -> Vec<(String, String)> {
    let mut headers = vec![
        (
            "Content-Type".to_owned(),
            content_type.unwrap_or(DEFAULT_CONTENT_TYPE).to_owned(),
        ),
        ("ETag".to_owned(), etag.to_owned()),
        ("Last-Modified".to_owned(), last_modified.to_http_date()),
        ("Accept-Ranges".to_owned(), "bytes".to_owned()),
    ];
    for (name, value) in metadata {
        headers.push((format!("x-amz-meta-{name}"), value.clone()));
    }
    headers
}

fn no_such_key(key: &str) -> ApiError {
    with_key(
        s3_error("NoSuchKey", 404, "The specified key does not exist."),
        key,
    )
}

/// The byte range a `Range: bytes=…` header asks of an object of `size`
/// bytes; `None` for the whole object (no header, or one S3 would ignore).
fn requested_range(
    range: Option<&str>,
    size: u64,
) -> Result<Option<std::ops::Range<u64>>, ApiError> {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    // Several ranges are answered whole, as S3 does.
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Ok(None);
    };
    let unsatisfiable = || {
        s3_error(
            "InvalidRange",
            416,
            "The requested range is not satisfiable",
        )
    };
    let range = match (first.trim(), last.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| unsatisfiable())?;
            if n == 0 {
                return Err(unsatisfiable());
            }
            size.saturating_sub(n)..size
        }
        (first, last) => {
            let start: u64 = first.parse().map_err(|_| unsatisfiable())?;
            let end = match last {
                "" => size,
                last => last
                    .parse::<u64>()
                    .map_err(|_| unsatisfiable())?
                    .saturating_add(1)
                    .min(size),
            };
            if start >= size || end <= start {
                return Err(unsatisfiable());
            }
            start..end
        }
    };
    Ok(Some(range))
}

async fn get_object(
    cx: &CallContext<'_>,
    buckets: &Buckets,
    call: &Call<'_>,
) -> Result<Outcome, ApiError> {
    let name = call.bucket()?;
    let key = call.key()?;
    owned(cx, buckets, name)?;
    let object = buckets
        .get_object(name, key)
        .await
        .map_err(|e| bucket_error(cx, e))?
        .ok_or_else(|| no_such_key(key))?;
    let mut headers = object_headers(
        object.content_type.as_deref(),
        &object.etag,
        object.last_modified,
        &object.metadata,
    );
    let size = object.bytes.len() as u64;
    match requested_range(header(&call.req.headers, "range"), size)? {
        None => Ok(answer(200, headers, object.bytes.to_vec())),
        Some(range) => {
            headers.push((
                "Content-Range".to_owned(),
                format!("bytes {}-{}/{size}", range.start, range.end - 1),
            ));
            // The range lies within the object: requested_range clamps it.
            let part = object.bytes.slice(range.start as usize..range.end as usize);
            Ok(answer(206, headers, part.to_vec()))
        }
    }
}

async fn head_object(
    cx: &CallContext<'_>,
    buckets: &Buckets,
    call: &Call<'_>,
) -> Result<Outcome, ApiError> {
    let name = call.bucket()?;
    let key = call.key()?;
    owned(cx, buckets, name)?;
    let head = buckets
        .head_object(name, key)
        .await
        .map_err(|e| bucket_error(cx, e))?
        .ok_or_else(|| no_such_key(key))?;
    let mut headers = object_headers(
        head.content_type.as_deref(),
        &head.etag,
        head.last_modified,
        &head.metadata,
    );
    // No body follows a HEAD answer; its length is the object's.
    headers.push(("Content-Length".to_owned(), head.size.to_string()));
    Ok(answer(200, headers, Vec::new()))
}

async fn delete_object(
    cx: &CallContext<'_>,
    buckets: &Buckets,
    call: &Call<'_>,
) -> Result<Outcome, ApiError> {
    let name = call.bucket()?;
    let key = call.key()?;
    owned(cx, buckets, name)?;
    buckets
        .delete_object(name, key)
        .await
        .map_err(|e| bucket_error(cx, e))?;
    Ok(answer(204, Vec::new(), Vec::new()))
}

/// The audit record's view of an S3 call: `requestParameters` as AWS writes
/// them (`bucketName`, `key`, `Host`, the query parameters, a
/// CreateBucketConfiguration), never the object bytes; and the resources:
/// the object (no account, as at AWS) and its bucket, owned by
/// `bucket_owner` (the registered owner; the caller's account when the
/// bucket is not registered).
pub(crate) fn record_input(
    route: &Route,
    req: &IncomingRequest,
    bucket_owner: Option<&str>,
    caller_account: &str,
) -> (serde_json::Value, Vec<Resource>) {
    let target = s3::target(&req.path).unwrap_or_default();
    let mut parameters = serde_json::Map::new();
    for (k, v) in &route.params {
        if !k.starts_with("X-Amz-") {
            parameters.insert(k.clone(), v.clone().into());
        }
    }
    if let Some(bucket) = &target.bucket {
        parameters.insert("bucketName".to_owned(), bucket.clone().into());
    }
    if let Some(host) = header(&req.headers, "host") {
        parameters.insert("Host".to_owned(), host.into());
    }
    if let Some(key) = &target.key {
        parameters.insert("key".to_owned(), key.clone().into());
    }
    if route.operation == "CreateBucket" {
        if let Some(constraint) = s3::location_constraint(&req.body) {
            parameters.insert(
                "CreateBucketConfiguration".to_owned(),
                serde_json::json!({
                    "LocationConstraint": constraint,
                    "xmlns": Service::S3.xml_namespace(),
                }),
            );
        }
    }
    let mut resources = Vec::new();
    if let Some(bucket) = &target.bucket {
        let owner = bucket_owner.unwrap_or(caller_account).to_owned();
        if let Some(key) = &target.key {
            resources.push(Resource {
                arn: format!("arn:aws:s3:::{bucket}/{key}"),
                account_id: String::new(),
                resource_type: "AWS::S3::Object".to_owned(),
                name: format!("{bucket}/{key}"),
            });
        }
        resources.push(Resource {
            arn: format!("arn:aws:s3:::{bucket}"),
            account_id: owner,
            resource_type: "AWS::S3::Bucket".to_owned(),
            name: bucket.clone(),
        });
    }
    (serde_json::Value::Object(parameters), resources)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, path: &str, query: &str, body: &[u8]) -> (Route, IncomingRequest) {
        let req = IncomingRequest {
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            headers: vec![("host".to_owned(), "127.0.0.1:4600".to_owned())],
            body: bytes::Bytes::copy_from_slice(body),
            peer: std::net::IpAddr::from([127, 0, 0, 1]),
        };
        let params = s3::query_params(query).unwrap();
        let operation = s3::operation(method, &s3::target(path).unwrap(), &params, false).unwrap();
        let route = Route {
            service: Service::S3,
            protocol: trailwatch_protocol::Protocol::RestXml,
            operation: operation.to_owned(),
            params,
        };
        (route, req)
    }

    #[test]
    fn record_parameters_and_resources_as_aws_writes_them() {
        let (route, req) = request("PUT", "/theirs/AWSLogs/a%20b.json.gz", "", b"secret bytes");
        let (parameters, resources) =
            record_input(&route, &req, Some("444455556666"), "111122223333");
        assert_eq!(
            parameters,
            serde_json::json!({"bucketName": "theirs", "Host": "127.0.0.1:4600", "key": "AWSLogs/a b.json.gz"})
        );
        assert!(!parameters.to_string().contains("secret"));
        let described: Vec<(&str, &str, &str)> = resources
            .iter()
            .map(|r| {
                (
                    r.resource_type.as_str(),
                    r.arn.as_str(),
                    r.account_id.as_str(),
                )
            })
            .collect();
        assert_eq!(
            described,
            [
                (
                    "AWS::S3::Object",
                    "arn:aws:s3:::theirs/AWSLogs/a b.json.gz",
                    ""
                ),
                ("AWS::S3::Bucket", "arn:aws:s3:::theirs", "444455556666"),
            ]
        );
        let (route, req) = request(
            "GET",
            "/mine",
            "prefix=AWSLogs%2F&marker=&encoding-type=url&X-Amz-Date=20260101T000000Z",
            b"",
        );
        let (parameters, resources) = record_input(&route, &req, None, "111122223333");
        assert_eq!(
            parameters,
            serde_json::json!({"prefix": "AWSLogs/", "marker": "", "encoding-type": "url",
                "bucketName": "mine", "Host": "127.0.0.1:4600"})
        );
        assert_eq!(resources.len(), 1);
        assert_eq!(resources[0].account_id, "111122223333");
        let body = br#"<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>"#;
        let (route, req) = request("PUT", "/new", "", body);
        let (parameters, _) = record_input(&route, &req, None, "111122223333");
        assert_eq!(
            parameters["CreateBucketConfiguration"]["LocationConstraint"],
            "eu-west-1"
        );
        let (route, req) = request("GET", "/", "", b"");
        let (parameters, resources) = record_input(&route, &req, None, "111122223333");
        assert_eq!(parameters, serde_json::json!({"Host": "127.0.0.1:4600"}));
        assert!(resources.is_empty());
    }

    #[test]
    fn ranges() {
        let r = |h: &str| requested_range(Some(h), 10);
        assert_eq!(r("bytes=0-3").unwrap(), Some(0..4));
        assert_eq!(r("bytes=5-").unwrap(), Some(5..10));
        assert_eq!(r("bytes=-3").unwrap(), Some(7..10));
        assert_eq!(r("bytes=-30").unwrap(), Some(0..10));
        assert_eq!(r("bytes=8-100").unwrap(), Some(8..10));
        assert_eq!(r("bytes=0-1,4-5").unwrap(), None);
        assert_eq!(r("items=0-1").unwrap(), None);
        assert_eq!(requested_range(None, 10).unwrap(), None);
        for bad in ["bytes=10-", "bytes=4-2", "bytes=-0", "bytes=x-1"] {
            assert_eq!(r(bad).unwrap_err().status, 416, "{bad}");
        }
    }

    #[test]
    fn metadata_headers() {
        let headers = vec![
            ("X-Amz-Meta-Signature".to_owned(), "abc".to_owned()),
            (
                "x-amz-meta-signature-algorithm".to_owned(),
                "SHA256withRSA".to_owned(),
            ),
            ("x-amz-date".to_owned(), "20260101T000000Z".to_owned()),
        ];
        assert_eq!(
            user_metadata(&headers).unwrap(),
            [
                ("signature".to_owned(), "abc".to_owned()),
                ("signature-algorithm".to_owned(), "SHA256withRSA".to_owned())
            ]
        );
        let big = vec![("x-amz-meta-a".to_owned(), "v".repeat(3000))];
        assert_eq!(user_metadata(&big).unwrap_err().code, "MetadataTooLarge");
    }

    #[test]
    fn continuation_tokens_round_trip() {
        let token = encode_continuation("AWSLogs/é/x+y");
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(decode_continuation(&token).unwrap(), "AWSLogs/é/x+y");
        assert_eq!(
            decode_continuation("%%%").unwrap_err().code,
            "InvalidArgument"
        );
    }
}
