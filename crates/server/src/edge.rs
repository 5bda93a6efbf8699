//! The request pipeline (`spec/protocols.md` §15): hash the raw body → decode
//! content → classify → verify SigV4 → decode input → dispatch → render → append
//! the audit record → answer.
//!
//! S3 requests (credential scope `s3`) skip content decoding and input
//! decoding: their body is object bytes, stored as sent, and their handler
//! reads path, query and headers itself ([`services::s3`]). They are verified
//! with S3's SigV4 rules, answered in S3's XML error envelope, and recorded
//! like every other call.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use bytes::Bytes;
use trailwatch_core::audit::{classify_operation, CallRecord, PAYLOAD_FIELD_LIMIT};
use trailwatch_core::identity::Principal;
use trailwatch_protocol::classify::{header, scope_service};
use trailwatch_protocol::render::{self, Rendered};
use trailwatch_protocol::sigv4::{self, AuthFailure, SignedParts};
use trailwatch_protocol::value::write_record_key;
use trailwatch_protocol::{body, classify, ApiError, Protocol, RequestHead, Route, Service, Value};
use trailwatch_types::Timestamp;

use crate::app::App;
use crate::services::{self, CallContext, Outcome};

/// A request as received, independent of the HTTP library.
#[derive(Debug, Clone)]
pub struct IncomingRequest {
    /// Method, uppercase.
    pub method: String,
    /// Raw path.
    pub path: String,
    /// Raw query string without `?`.
    pub query: String,
    /// Headers in arrival order.
    pub headers: Vec<(String, String)>,
    /// Raw body bytes (after de-chunking, before content decoding).
    pub body: Bytes,
    /// TCP peer address.
    pub peer: IpAddr,
}

/// The answer, independent of the HTTP library.
#[derive(Debug)]
pub struct OutgoingResponse {
    /// HTTP status.
    pub status: u16,
    /// Headers, including `Date` and the request id (`x-amzn-RequestId`; S3:
    /// `x-amz-request-id`).
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
    /// The request id sent to the client.
    pub request_id: String,
    /// A body that follows `body` as it is produced (Live Tail's event stream).
    pub stream: Option<tokio::sync::mpsc::Receiver<Bytes>>,
}

/// Builds the axum router serving every service at `/`.
pub fn router(app: Arc<App>) -> axum::Router {
    axum::Router::new()
        // Receivers fetch the SNS signing certificate without credentials.
        .route(
            services::SNS_CERTIFICATE_PATH,
            axum::routing::get(services::sns_certificate),
        )
        .fallback(axum_entry)
        .with_state(app)
}

async fn axum_entry(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let (parts, incoming_body) = request.into_parts();
    let limit = app.config.max_body_bytes;
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let head = IncomingRequest {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers,
        body: Bytes::new(),
        peer: peer.ip(),
    };
    let response = match axum::body::to_bytes(incoming_body, limit).await {
        Ok(body) => handle(&app, IncomingRequest { body, ..head }).await,
        Err(_) => too_large(&app, head).await,
    };
    let mut builder = http::Response::builder().status(response.status);
    for (k, v) in &response.headers {
        builder = builder.header(k, v);
    }
    let body = match response.stream {
        Some(rx) => axum::body::Body::from_stream(futures::stream::unfold(rx, |mut rx| async {
            rx.recv()
                .await
                .map(|chunk| (Ok::<_, std::io::Error>(chunk), rx))
        })),
        None => axum::body::Body::from(response.body),
    };
    builder
        .body(body)
        .unwrap_or_else(|_| http::Response::new(axum::body::Body::empty()))
}

/// A body over the limit: answered as 413 in the request's protocol, and recorded.
async fn too_large(app: &App, head: IncomingRequest) -> OutgoingResponse {
    let request_id = uuid::Uuid::new_v4().to_string();
    let rh = RequestHead {
        method: &head.method,
        path: &head.path,
        query: &head.query,
        headers: &head.headers,
    };
    let (protocol, service, operation) = match classify(&rh, b"") {
        Ok(route) => (route.protocol, Some(route.service), Some(route.operation)),
        Err(e) => (e.protocol, e.service, e.operation),
    };
    let err = match service {
        Some(Service::S3) => services::s3::too_large(),
        _ => body::too_large(),
    };
    let claim = sigv4::parse(&SignedParts {
        method: &head.method,
        path: &head.path,
        query: &head.query,
        headers: &head.headers,
        body_sha256: sigv4::EMPTY_SHA256,
    });
    let who = Caller::from_claim(claim.as_ref().ok(), None);
    finish(
        app,
        &head,
        request_id,
        protocol,
        service,
        operation,
        who,
        None,
        Err(err),
    )
    .await
}

/// Who made the call, as far as we know.
struct Caller {
    principal: Option<Principal>,
    claimed_key: Option<String>,
    region: Option<String>,
}

impl Caller {
    fn from_claim(claim: Option<&sigv4::ClaimedAuth>, principal: Option<Principal>) -> Self {
        Caller {
            principal,
            claimed_key: claim.map(|c| c.access_key_id.clone()),
            region: claim
                .map(|c| c.region.clone())
                .filter(|r| sigv4::is_plausible_region(r)),
        }
    }

    fn user_identity(&self) -> serde_json::Value {
        match (&self.principal, &self.claimed_key) {
            (Some(p), _) => p.user_identity(),
            (None, Some(key)) => serde_json::json!({"type": "Unknown", "accessKeyId": key}),
            (None, None) => serde_json::json!({"type": "Unknown"}),
        }
    }
}

/// Runs one request through the whole pipeline.
pub async fn handle(app: &App, req: IncomingRequest) -> OutgoingResponse {
    let request_id = uuid::Uuid::new_v4().to_string();
    let body_sha256 = sigv4::sha256_hex(&req.body);
    let head = RequestHead {
        method: &req.method,
        path: &req.path,
        query: &req.query,
        headers: &req.headers,
    };
    let signed = SignedParts {
        method: &req.method,
        path: &req.path,
        query: &req.query,
        headers: &req.headers,
        body_sha256: &body_sha256,
    };
    let claim = sigv4::parse(&signed);

    // Content decoding comes first because awsQuery is recognised by its body.
    // An S3 body is object bytes: its Content-Encoding describes the object.
    let decoded = if classify::is_s3(&head) {
        Ok(Vec::new())
    } else {
        body::decode_content(header(&req.headers, "content-encoding"), &req.body)
    };
    let classified = classify(&head, decoded.as_deref().unwrap_or(b""));
    let route = match (classified, decoded) {
        (Err(e), _) => {
            let service = e
                .service
                .or_else(|| scope_service(&head).and_then(|s| Service::from_signing_name(&s)));
            let who = Caller::from_claim(claim.as_ref().ok(), None);
            return finish(
                app,
                &req,
                request_id,
                e.protocol,
                service,
                e.operation,
                who,
                None,
                Err(*e.error),
            )
            .await;
        }
        (Ok(route), Err(err)) => {
            let who = Caller::from_claim(claim.as_ref().ok(), None);
            let Route {
                protocol,
                service,
                operation,
                ..
            } = route;
            return finish(
                app,
                &req,
                request_id,
                protocol,
                Some(service),
                Some(operation),
                who,
                None,
                Err(err),
            )
            .await;
        }
        (Ok(route), Ok(decoded)) => (route, decoded),
    };
    let (route, decoded_body) = route;
    if route.service == Service::S3 {
        return handle_s3(app, &req, request_id, route, &signed, &claim).await;
    }

    // Authentication, in the order of spec §11.11.
    let authenticated = authenticate(app, &signed, &claim, route.service);
    // The SubscribeURL of an SNS confirmation is opened without credentials, as
    // at AWS: the token it carries is the proof.
    let anonymous = match (&authenticated, &claim) {
        (Err(_), Err(AuthFailure::Missing)) => anonymous_confirmation(&route),
        _ => None,
    };
    let principal = match (authenticated, anonymous.clone()) {
        (Ok(p), _) => p,
        (Err(_), Some(p)) => p,
        (Err(err), None) => {
            let who = Caller::from_claim(claim.as_ref().ok(), None);
            let Route {
                protocol,
                service,
                operation,
                ..
            } = route;
            return finish(
                app,
                &req,
                request_id,
                protocol,
                Some(service),
                Some(operation),
                who,
                None,
                Err(err),
            )
            .await;
        }
    };
    let who = match anonymous {
        // Recorded with an unknown identity, never as the topic's owner.
        Some(_) => Caller::from_claim(None, None),
        None => Caller::from_claim(claim.as_ref().ok(), Some(principal.clone())),
    };
    let region = who
        .region
        .clone()
        .unwrap_or_else(|| app.config.default_region.clone());
    // The ingest hot path: PutMetricData over CBOR decoded straight into its
    // typed request; anything unusual takes the generic path below.
    let fast_put = (route.protocol == Protocol::RpcV2Cbor
        && route.service == Service::CloudWatch
        && route.operation == "PutMetricData")
        .then(|| services::fast_put_request(&decoded_body))
        .flatten();
    if let Some(request) = fast_put {
        let parameters = services::put_parameters(&request, HIDDEN, PAYLOAD_FIELD_LIMIT);
        let cx = CallContext {
            principal: &principal,
            region: &region,
            request_id: &request_id,
            now: app.clock.now(),
            body_bytes: (req.body.len(), decoded_body.len()),
            batch_id: None,
        };
        let result = services::put_metric_data_typed(app, &cx, request).await;
        let Route {
            protocol,
            service,
            operation,
            ..
        } = route;
        return finish_with(
            app,
            &req,
            request_id,
            protocol,
            Some(service),
            Some(operation),
            who,
            Some(RecordInput::Parameters(parameters, Vec::new())),
            result,
        )
        .await;
    }
    let input = body::decode_input(&route, &decoded_body);
    let result = match &input {
        Ok(input) => {
            let cx = CallContext {
                principal: &principal,
                region: &region,
                request_id: &request_id,
                now: app.clock.now(),
                body_bytes: (req.body.len(), decoded_body.len()),
                batch_id: trailwatch_protocol::classify::header(&req.headers, "x-trailwatch-batch"),
            };
            services::dispatch(app, &cx, &route, input).await
        }
        Err(err) => Err(err.clone()),
    };
    let Route {
        protocol,
        service,
        operation,
        ..
    } = route;
    finish(
        app,
        &req,
        request_id,
        protocol,
        Some(service),
        Some(operation),
        who,
        input.ok(),
        result,
    )
    .await
}

/// The rest of the pipeline for an S3 request: verify, dispatch, record.
async fn handle_s3(
    app: &App,
    req: &IncomingRequest,
    request_id: String,
    route: Route,
    signed: &SignedParts<'_>,
    claim: &Result<sigv4::ClaimedAuth, AuthFailure>,
) -> OutgoingResponse {
    let (mut who, result) = match authenticate(app, signed, claim, Service::S3) {
        Err(err) => (Caller::from_claim(claim.as_ref().ok(), None), Err(err)),
        Ok(principal) => {
            let who = Caller::from_claim(claim.as_ref().ok(), Some(principal.clone()));
            let region = who
                .region
                .clone()
                .unwrap_or_else(|| app.config.default_region.clone());
            let cx = CallContext {
                principal: &principal,
                region: &region,
                request_id: &request_id,
                now: app.clock.now(),
                body_bytes: (req.body.len(), req.body.len()),
                batch_id: None,
            };
            let result = services::s3::dispatch(app, &cx, &route, req).await;
            (who, result)
        }
    };
    let caller_account = who
        .principal
        .as_ref()
        .map_or(app.config.account_id.as_str(), |p| p.account_id.as_str());
    // Read before the commit: a deleted bucket is still registered here.
    let bucket = trailwatch_protocol::s3::target(&req.path)
        .ok()
        .and_then(|t| t.bucket)
        .and_then(|name| app.buckets.get(&name).ok().flatten());
    let (parameters, resources) = services::s3::record_input(
        &route,
        req,
        bucket.as_ref().map(|b| b.account.as_str()),
        caller_account,
    );
    // As at AWS, a call on a bucket is recorded in the bucket's region.
    if let Some(bucket) = bucket {
        who.region = Some(bucket.region);
    }
    let mut response = finish_with(
        app,
        req,
        request_id,
        route.protocol,
        Some(Service::S3),
        Some(route.operation),
        who,
        Some(RecordInput::Parameters(parameters, resources)),
        result,
    )
    .await;
    // A HEAD answer has no body, errors included (S3 sends the status alone).
    if req.method == "HEAD" {
        response.body.clear();
    }
    response
}

/// An unsigned SNS ConfirmSubscription naming a topic: handled for the topic's
/// account, since the token is checked against that topic's subscriptions.
fn anonymous_confirmation(route: &Route) -> Option<Principal> {
    if route.service != Service::Sns || route.operation != "ConfirmSubscription" {
        return None;
    }
    let topic_arn = trailwatch_protocol::query::param(&route.params, "TopicArn")?;
    let topic = trailwatch_core::sns::TopicArn::parse(topic_arn, "TopicArn").ok()?;
    let mut principal = Principal::root(&topic.account, "");
    principal.arn = "anonymous".to_owned();
    Some(principal)
}

fn authenticate(
    app: &App,
    signed: &SignedParts<'_>,
    claim: &Result<sigv4::ClaimedAuth, AuthFailure>,
    service: Service,
) -> Result<Principal, ApiError> {
    let to_error = |failure| match service {
        Service::S3 => services::s3::auth_error(failure),
        _ => auth_error(failure),
    };
    let claim = claim.clone().map_err(to_error)?;
    let key = app
        .keys
        .get(&claim.access_key_id)
        .ok_or_else(|| to_error(AuthFailure::UnknownKey))?;
    sigv4::verify(
        signed,
        claim,
        &key.secret_access_key,
        service.signing_name(),
        app.clock.now(),
        app.config.max_skew_secs,
    )
    .map_err(to_error)?;
    Ok(key.principal.clone())
}

/// Maps an authentication failure to the per-protocol error of spec §11.11.
pub fn auth_error(failure: AuthFailure) -> ApiError {
    match failure {
        AuthFailure::Missing => ApiError::new(
            "MissingAuthenticationTokenException",
            400,
            "Request is missing Authentication Token",
        )
        .with_query_code("MissingAuthenticationToken")
        .with_query_status(403),
        AuthFailure::Incomplete(message) => {
            ApiError::new("IncompleteSignatureException", 400, message)
                .with_query_code("IncompleteSignature")
        }
        AuthFailure::UnknownKey => ApiError::new(
            "UnrecognizedClientException",
            400,
            "The security token included in the request is invalid.",
        )
        .with_query_code("InvalidClientTokenId")
        .with_query_status(403),
        AuthFailure::Mismatch(message) | AuthFailure::Skew(message) => {
            ApiError::new("InvalidSignatureException", 400, message)
                .with_query_code("SignatureDoesNotMatch")
                .with_query_status(403)
        }
        AuthFailure::Expired => ApiError::new("RequestExpired", 400, "Request has expired."),
        AuthFailure::ContentSha256Mismatch => ApiError::new(
            "InvalidSignatureException",
            400,
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        )
        .with_query_code("SignatureDoesNotMatch")
        .with_query_status(403),
    }
}

/// Data-plane payloads never enter records (`spec/cloudtrail.md` §1.6, §8).
const HIDDEN: &str = "HIDDEN_DUE_TO_SECURITY_REASONS";

fn request_parameters(operation: &str, input: &Value) -> Option<serde_json::Value> {
    if input.members().is_empty() {
        return None;
    }
    if operation == "PutMetricData" {
        // Up to 1,000 datums of up to 150 values each: the values are hidden
        // anyway, so they are never converted (this is the ingest hot path).
        return Some(metric_data_parameters(input));
    }
    let mut json = input.to_record_json();
    let hide = |json: &mut serde_json::Value, path: &[&str]| {
        hide_path(json, path);
    };
    match operation {
        "PutLogEvents" => hide(&mut json, &["logEvents"]),
        "PutAuditEvents" => hide(&mut json, &["auditEvents"]),
        "Publish" => hide(&mut json, &["message"]),
        _ => {}
    }
    Some(json)
}

/// PutMetricData's requestParameters: the envelope, every datum's values
/// hidden. Written straight to JSON text, because a full batch is over the
/// recorded-field limit and is recorded as a truncation marker with its size:
/// building a JSON tree only to measure it was most of the ingest CPU.
fn metric_data_parameters(input: &Value) -> serde_json::Value {
    const VALUE_FIELDS: [&str; 4] = ["Value", "Values", "Counts", "StatisticValues"];
    fn datum(out: &mut Vec<u8>, k: &str, v: &Value) {
        if VALUE_FIELDS.contains(&k) {
            let _ = serde_json::to_writer(&mut *out, HIDDEN);
        } else {
            v.write_record_json(out);
        }
    }
    fn datums(out: &mut Vec<u8>, list: &Value) {
        match list {
            Value::List(items) => write_list(out, items, |out, d| match d {
                Value::Struct(members) => write_object(out, members, datum),
                other => other.write_record_json(out),
            }),
            other => other.write_record_json(out),
        }
    }
    let mut out = Vec::with_capacity(256);
    write_object(&mut out, input.members(), |out, k, v| match (k, v) {
        ("MetricData", list) => datums(out, list),
        ("EntityMetricData", Value::List(entities)) => write_list(out, entities, |out, e| {
            write_object(out, e.members(), |out, k, v| match k {
                "MetricData" => datums(out, v),
                _ => v.write_record_json(out),
            })
        }),
        _ => v.write_record_json(out),
    });
    if out.len() > PAYLOAD_FIELD_LIMIT {
        return serde_json::json!({"truncated": true, "originalSizeBytes": out.len()});
    }
    serde_json::from_slice(&out).unwrap_or(serde_json::Value::Null)
}

/// Writes `members` as a JSON object with record keys, skipping nulls as
/// [`Value::write_record_json`] does; `value` writes each member's value.
fn write_object(
    out: &mut Vec<u8>,
    members: &[(String, Value)],
    mut value: impl FnMut(&mut Vec<u8>, &str, &Value),
) {
    out.push(b'{');
    let mut first = true;
    for (k, v) in members.iter().filter(|(_, v)| !matches!(v, Value::Null)) {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
        write_record_key(out, k);
        out.push(b':');
        value(out, k, v);
    }
    out.push(b'}');
}

/// Writes `items` as a JSON array, each with `item`.
fn write_list(out: &mut Vec<u8>, items: &[Value], mut item: impl FnMut(&mut Vec<u8>, &Value)) {
    out.push(b'[');
    for (i, v) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        item(out, v);
    }
    out.push(b']');
}

fn hide_path(json: &mut serde_json::Value, path: &[&str]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    match (json, *first) {
        (serde_json::Value::Array(items), "*") => {
            for item in items {
                hide_path(item, rest);
            }
        }
        (serde_json::Value::Object(members), name) => {
            if rest.is_empty() {
                if let Some(slot) = members.get_mut(name) {
                    *slot = serde_json::Value::String(HIDDEN.to_owned());
                }
            } else if let Some(child) = members.get_mut(name) {
                hide_path(child, rest);
            }
        }
        _ => {}
    }
}

/// Renders the answer, appends the audit record, and returns what to send.
#[allow(clippy::too_many_arguments)] // one call site per pipeline exit; a struct would only rename them
async fn finish(
    app: &App,
    req: &IncomingRequest,
    request_id: String,
    protocol: Protocol,
    service: Option<Service>,
    operation: Option<String>,
    who: Caller,
    input: Option<Value>,
    result: Result<Outcome, ApiError>,
) -> OutgoingResponse {
    let input = input.map(RecordInput::Value);
    finish_with(
        app, req, request_id, protocol, service, operation, who, input, result,
    )
    .await
}

/// What the record knows of the request: its decoded input, or (typed fast
/// paths, S3) its requestParameters already written, with the resources.
enum RecordInput {
    Value(Value),
    Parameters(serde_json::Value, Vec<trailwatch_core::audit::Resource>),
}

#[allow(clippy::too_many_arguments)] // as finish
async fn finish_with(
    app: &App,
    req: &IncomingRequest,
    request_id: String,
    protocol: Protocol,
    service: Option<Service>,
    operation: Option<String>,
    who: Caller,
    mut input: Option<RecordInput>,
    result: Result<Outcome, ApiError>,
) -> OutgoingResponse {
    let operation_name = operation.clone().unwrap_or_default();
    // A partly failed call (DeleteDashboards naming one unknown dashboard) answers
    // its error but still commits the changes it made, with its record.
    let (mut result, changes) = match result {
        Ok(mut outcome) => {
            let changes = std::mem::take(&mut outcome.changes);
            match outcome.error.take() {
                Some(err) => (Err(err), changes),
                None => (Ok(outcome), changes),
            }
        }
        Err(err) => (Err(err), Vec::new()),
    };
    let raw_body = match &mut result {
        Ok(outcome) => outcome.raw_body.take(),
        Err(_) => None,
    };
    let stream = match &mut result {
        Ok(outcome) => outcome.stream.take(),
        Err(_) => None,
    };
    let after_commit = match &mut result {
        Ok(outcome) => outcome.after_commit.take(),
        Err(_) => None,
    };
    let rest = match &mut result {
        Ok(outcome) => outcome.rest.take(),
        Err(_) => None,
    };
    let raw_body = match (&stream, raw_body) {
        (Some(_), _) => Some(services::RawBody {
            content_type: "application/vnd.amazon.eventstream",
            bytes: Vec::new(),
        }),
        (None, raw) => raw,
    };
    let rendered = match (&result, raw_body, rest) {
        (Ok(_), _, Some(rest)) => {
            render::rest(protocol, rest.status, rest.headers, rest.body, &request_id)
        }
        (Ok(_), Some(raw), None) => render::raw(protocol, raw.content_type, raw.bytes, &request_id),
        (Ok(outcome), None, None) => render::success(
            protocol,
            service.unwrap_or(Service::CloudWatch),
            &operation_name,
            outcome.output.as_ref(),
            &request_id,
        ),
        (Err(err), _, _) => {
            if err.status >= 500 {
                tracing::warn!(request_id = %request_id, code = %err.code, "request failed on the server side");
            } else {
                tracing::debug!(request_id = %request_id, code = %err.code, "client error");
            }
            render::error(protocol, service, err, &request_id)
        }
    };
    let now = app.clock.now();
    let rendered = match (service, operation) {
        (Some(service), Some(operation)) => {
            let class = classify_operation(service.signing_name(), &operation);
            let account = who
                .principal
                .as_ref()
                .map_or(app.config.account_id.clone(), |p| p.account_id.clone());
            let region = who
                .region
                .clone()
                .unwrap_or_else(|| app.config.default_region.clone());
            let mut resources = match &mut input {
                Some(RecordInput::Value(input)) => {
                    services::resources_for(service, &operation, input, &account, &region)
                }
                Some(RecordInput::Parameters(_, resources)) => std::mem::take(resources),
                None => Vec::new(),
            };
            let (error, response_elements) = match &result {
                Ok(o) => {
                    for r in &o.resources {
                        if !resources.contains(r) {
                            resources.push(r.clone());
                        }
                    }
                    (None, o.response_elements.clone())
                }
                Err(e) => {
                    let code = e.wire_code(protocol, Some(service)).to_owned();
                    (Some((code, e.message.clone())), None)
                }
            };
            let record = CallRecord {
                event_time: now,
                event_source: service.event_source().to_owned(),
                event_name: operation.clone(),
                aws_region: region,
                source_ip_address: req.peer.to_string(),
                user_agent: header(&req.headers, "user-agent").map(str::to_owned),
                user_identity: who.user_identity(),
                error,
                request_parameters: match input {
                    Some(RecordInput::Value(i)) => request_parameters(&operation, &i),
                    Some(RecordInput::Parameters(p, _)) => Some(p),
                    None => None,
                },
                response_elements,
                additional_event_data: None,
                request_id: request_id.clone(),
                event_id: uuid::Uuid::new_v4().to_string(),
                read_only: class.read_only,
                resources,
                category: class.category,
                api_version: Some(service.api_version().to_owned()),
                recipient_account_id: account,
            };
            match app.audit.commit(&record, &changes).await {
                Ok(()) => {
                    app.recorded();
                    if let Some(after) = after_commit {
                        after.run();
                    }
                    rendered
                }
                Err(err) => {
                    tracing::error!(request_id = %request_id, error = %err, "failed to record the call; answering 500");
                    render::error(
                        protocol,
                        Some(service),
                        &ApiError::internal(&request_id),
                        &request_id,
                    )
                }
            }
        }
        _ => {
            tracing::debug!(request_id = %request_id, "request names no service; not recorded");
            rendered
        }
    };
    let mut response = into_response(rendered, request_id, now);
    // The stream follows only a successful, recorded answer.
    if response.status == 200 {
        response.stream = stream;
    }
    response
}

fn into_response(rendered: Rendered, request_id: String, now: Timestamp) -> OutgoingResponse {
    let mut headers = rendered.headers;
    headers.push(("Date".to_owned(), now.to_http_date()));
    OutgoingResponse {
        status: rendered.status,
        headers,
        body: rendered.body,
        request_id,
        stream: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trailwatch_protocol::cbor;

    fn datum(members: Vec<(&str, Value)>) -> Value {
        Value::structure(members)
    }

    /// Bodies the CBOR fast path takes must give exactly the generic path's
    /// typed request and requestParameters (up to member order).
    #[test]
    fn fast_put_path_agrees_with_the_generic_one() {
        let dims = Value::List(vec![Value::structure([
            ("Name", Value::string("Host")),
            ("Value", Value::string("a \"b\"")),
        ])]);
        let t = Value::Timestamp(Timestamp::from_millis(1_767_225_600_500));
        let bodies = [
            Value::structure([
                ("Namespace", Value::string("App")),
                (
                    "MetricData",
                    Value::List(vec![
                        datum(vec![
                            ("MetricName", Value::string("Latency")),
                            ("Dimensions", dims.clone()),
                            ("Timestamp", t.clone()),
                            ("Value", Value::Float(12.5)),
                            ("Unit", Value::string("Milliseconds")),
                            ("StorageResolution", Value::Int(1)),
                        ]),
                        datum(vec![
                            ("MetricName", Value::string("Sizes")),
                            (
                                "Values",
                                Value::List(vec![Value::Float(1.0), Value::Int(3)]),
                            ),
                            (
                                "Counts",
                                Value::List(vec![Value::Float(2.0), Value::Float(1.0)]),
                            ),
                        ]),
                        datum(vec![
                            ("MetricName", Value::string("Set")),
                            (
                                "StatisticValues",
                                Value::structure([
                                    ("SampleCount", Value::Float(2.0)),
                                    ("Sum", Value::Float(3.0)),
                                    ("Minimum", Value::Int(1)),
                                    ("Maximum", Value::Float(2.0)),
                                ]),
                            ),
                            ("StorageResolution", Value::Int(60)),
                        ]),
                        // Invalid, but decodable: validation must see it the same way.
                        datum(vec![("Value", Value::Float(-1.0))]),
                    ]),
                ),
            ]),
            Value::structure([("MetricData", Value::List(vec![]))]),
        ];
        for body in &bodies {
            let bytes = cbor::encode(body);
            let fast = services::fast_put_request(&bytes).expect("plain shape takes the fast path");
            let decoded = cbor::decode(&bytes).unwrap();
            let generic = services::generic_put_request(&decoded).unwrap();
            assert_eq!(format!("{fast:?}"), format!("{generic:?}"));
            assert_eq!(
                Some(services::put_parameters(&fast, HIDDEN, PAYLOAD_FIELD_LIMIT)),
                request_parameters("PutMetricData", &decoded)
            );
        }
        // A batch over the field limit is recorded as the same truncation marker.
        let big = Value::structure([
            ("Namespace", Value::string("App")),
            (
                "MetricData",
                Value::List(
                    (0..1000)
                        .map(|i| {
                            datum(vec![
                                ("MetricName", Value::String(format!("m{i}"))),
                                ("Dimensions", dims.clone()),
                                ("Timestamp", t.clone()),
                                ("Values", Value::List(vec![Value::Float(1.5); 10])),
                            ])
                        })
                        .collect(),
                ),
            ),
        ]);
        let bytes = cbor::encode(&big);
        let fast = services::fast_put_request(&bytes).unwrap();
        let marker = services::put_parameters(&fast, HIDDEN, PAYLOAD_FIELD_LIMIT);
        assert_eq!(marker["truncated"], serde_json::json!(true));
        assert_eq!(
            Some(marker),
            request_parameters("PutMetricData", &cbor::decode(&bytes).unwrap())
        );
    }

    /// What aws-sdk-rust really sends (indefinite maps, tag-1 float
    /// timestamps) takes the fast path; boto3's capture carries
    /// EntityMetricData, which the generic path handles.
    #[test]
    fn real_client_bodies_take_the_fast_path() {
        use base64::Engine as _;
        // As the golden suite: TRAILWATCH_FIXTURES, else the shared folder beside the clone.
        let dir = std::env::var("TRAILWATCH_FIXTURES")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../../shared/fixtures/wire")
            });
        let body = |client: &str| {
            let path = dir
                .join(client)
                .join("cloudwatch-rpcv2cbor-PutMetricData.json");
            let fixture: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            base64::engine::general_purpose::STANDARD
                .decode(fixture["request"]["body"].as_str().unwrap())
                .unwrap()
        };
        let sdk = body("aws-sdk-rust");
        let fast = services::fast_put_request(&sdk).expect("aws-sdk-rust body");
        let generic = services::generic_put_request(&cbor::decode(&sdk).unwrap()).unwrap();
        assert_eq!(format!("{fast:?}"), format!("{generic:?}"));
        assert!(!fast.metric_data.is_empty());
        assert!(services::fast_put_request(&body("boto3")).is_none());
    }

    /// Anything outside the plain shape goes the generic way.
    #[test]
    fn unusual_put_bodies_take_the_generic_path() {
        let unusual = [
            // An unknown member (kept in the generic record).
            Value::structure([("Namespace", Value::string("A")), ("Extra", Value::Int(1))]),
            // Numbers as text, which the generic path coerces.
            Value::structure([(
                "MetricData",
                Value::List(vec![datum(vec![("Value", Value::string("1.5"))])]),
            )]),
            // EntityMetricData.
            Value::structure([("EntityMetricData", Value::List(vec![]))]),
            // A whole float where an integer belongs (recorded as a float).
            Value::structure([(
                "MetricData",
                Value::List(vec![datum(vec![("StorageResolution", Value::Float(60.0))])]),
            )]),
        ];
        for body in &unusual {
            assert!(
                services::fast_put_request(&cbor::encode(body)).is_none(),
                "{body:?}"
            );
        }
        assert!(services::fast_put_request(b"\xbf").is_none());
        // A null member (absent to the generic path).
        assert!(services::fast_put_request(b"\xa1\x69Namespace\xf6").is_none());
        let mut trailing = cbor::encode(&Value::structure([("Namespace", Value::string("A"))]));
        trailing.push(0);
        assert!(services::fast_put_request(&trailing).is_none());
    }

    #[test]
    fn data_payloads_are_hidden() {
        let input = Value::structure([
            ("Namespace", Value::string("App")),
            (
                "MetricData",
                Value::List(vec![Value::structure([
                    ("MetricName", Value::string("Latency")),
                    ("Value", Value::Float(12.5)),
                    ("Values", Value::List(vec![Value::Float(1.0)])),
                ])]),
            ),
        ]);
        let json = request_parameters("PutMetricData", &input).unwrap();
        assert_eq!(json["namespace"], "App");
        assert_eq!(json["metricData"][0]["metricName"], "Latency");
        assert_eq!(json["metricData"][0]["value"], HIDDEN);
        assert_eq!(json["metricData"][0]["values"], HIDDEN);
        let logs = Value::structure([
            ("logGroupName", Value::string("g")),
            (
                "logEvents",
                Value::List(vec![Value::structure([(
                    "message",
                    Value::string("secret"),
                )])]),
            ),
        ]);
        let json = request_parameters("PutLogEvents", &logs).unwrap();
        assert_eq!(json["logEvents"], HIDDEN);
        assert!(request_parameters("GetCallerIdentity", &Value::empty_struct()).is_none());
    }
}
