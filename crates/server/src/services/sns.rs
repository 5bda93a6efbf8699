//! SNS over awsQuery (`spec/protocols.md` §1, §10.2, §13): topics, http(s)
//! subscriptions, Publish, and the background delivery of signed messages.
//!
//! Catalog changes commit with the call's audit record; messages leave only
//! after that commit (`Outcome::after_commit`), so a receiver never sees a
//! subscription or a message the server could still lose.
//!
//! Delivery retries a failed POST after each of the configured delays
//! (`AppConfig::sns_retry_delays`, 1 s, 2 s, 4 s by default). A message that
//! still fails is logged at WARN and counted per topic, shown by
//! GetTopicAttributes as `TrailwatchDeliveriesFailed`; the count lives in
//! memory and restarts at zero.
//!
//! The SubscribeURL is this server's ConfirmSubscription as an awsQuery GET
//! (with `Version`, so it routes unsigned); the edge lets that one operation
//! through without credentials, as AWS does, because the token is the proof.
//! The UnsubscribeURL needs a signed call: without AuthenticateOnUnsubscribe
//! support, an anonymous unsubscribe could not be told from abuse.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use trailwatch_core::sns::{
    sns_timestamp, validate_message, validate_subject, validate_topic_name, Delivery, Envelope,
    MessageSigner, MessageType, SnsError, SubscriptionEntry, Topic, TopicArn, TopicAttribute,
    Topics,
};
use trailwatch_core::token::filters_hash;
use trailwatch_protocol::{ApiError, Value};

use super::{AfterCommit, CallContext, Outcome};
use crate::app::App;

/// Topics, subscriptions per ListSubscriptions page (§14).
const PAGE_SIZE: usize = 100;

/// Where the signing certificate is served, on the API listener, unauthenticated.
pub const CERTIFICATE_PATH: &str = "/sns/SimpleNotificationService.pem";

/// Delivery state shared by the handlers and the background deliveries.
#[derive(Debug, Clone)]
pub struct SnsRuntime {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    data_dir: std::path::PathBuf,
    /// Created on first use: key generation takes a moment, and most servers
    /// never send a message.
    signer: OnceLock<Arc<MessageSigner>>,
    creating: Mutex<()>,
    /// `http://host:port` of the listener, set once it is bound.
    endpoint: OnceLock<String>,
    retry_delays: Vec<Duration>,
    failures: Mutex<HashMap<String, u64>>,
    http: reqwest::Client,
    /// Where finished deliveries leave the outbox.
    topics: Topics,
}

impl SnsRuntime {
    /// Delivery state keeping its key under `data_dir`.
    pub fn new(
        data_dir: std::path::PathBuf,
        retry_delays: Vec<Duration>,
        http: reqwest::Client,
        topics: Topics,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                data_dir,
                signer: OnceLock::new(),
                creating: Mutex::new(()),
                endpoint: OnceLock::new(),
                retry_delays,
                failures: Mutex::new(HashMap::new()),
                http,
                topics,
            }),
        }
    }

    /// Records the listener's base URL, used in SubscribeURL, UnsubscribeURL
    /// and SigningCertURL.
    pub fn set_endpoint(&self, endpoint: &str) {
        let _ = self
            .inner
            .endpoint
            .set(endpoint.trim_end_matches('/').to_owned());
    }

    /// The listener's base URL (a default until it is bound).
    pub fn endpoint(&self) -> &str {
        self.inner
            .endpoint
            .get()
            .map_or("http://127.0.0.1:4600", String::as_str)
    }

    /// The signing key and certificate, created at first use.
    pub fn signer(&self) -> Result<Arc<MessageSigner>, SnsError> {
        if let Some(signer) = self.inner.signer.get() {
            return Ok(signer.clone());
        }
        // One creator; the others wait and then find it set.
        let _guard = self
            .inner
            .creating
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(signer) = self.inner.signer.get() {
            return Ok(signer.clone());
        }
        let signer = Arc::new(MessageSigner::load_or_create(&self.inner.data_dir)?);
        let _ = self.inner.signer.set(signer.clone());
        Ok(signer)
    }

    fn failures(&self, topic: &str) -> u64 {
        self.inner
            .failures
            .lock()
            .map(|f| f.get(topic).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    fn count_failure(&self, topic: &str) {
        if let Ok(mut f) = self.inner.failures.lock() {
            *f.entry(topic.to_owned()).or_insert(0) += 1;
        }
    }
}

fn map_error(err: SnsError) -> ApiError {
    match err {
        SnsError::InvalidParameter(m) => ApiError::new("InvalidParameter", 400, m),
        SnsError::NotFound(m) => ApiError::new("NotFound", 404, m),
        other => {
            tracing::error!(error = %other, "sns storage failed");
            ApiError::new("InternalError", 500, "Internal Error")
        }
    }
}

fn invalid(message: &str) -> ApiError {
    map_error(SnsError::InvalidParameter(message.to_owned()))
}

fn required<'a>(input: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    input
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(&format!("Invalid parameter: {name}")))
}

/// The topic named by `parameter`, owned by the caller.
fn topic_arn(cx: &CallContext<'_>, input: &Value, parameter: &str) -> Result<TopicArn, ApiError> {
    let arn = TopicArn::parse(required(input, parameter)?, parameter).map_err(map_error)?;
    if arn.account != cx.principal.account_id {
        return Err(ApiError::new(
            "AuthorizationError",
            403,
            format!(
                "User: {} is not authorized to access this topic",
                cx.principal.arn
            ),
        ));
    }
    Ok(arn)
}

fn no_output(changes: Vec<trailwatch_core::audit::Change>) -> Outcome {
    Outcome {
        changes,
        ..Outcome::default()
    }
}

/// Opens a NextToken into the cursor it carries.
fn cursor(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
    filters: &str,
) -> Result<Option<String>, ApiError> {
    match input.get("NextToken").and_then(Value::as_str) {
        Some(token) => app
            .tokens
            .open(token, filters, cx.now, 24 * 3600)
            .map(Some)
            .ok_or_else(|| invalid("Invalid parameter: NextToken")),
        None => Ok(None),
    }
}

pub(super) fn create_topic(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let name = required(input, "Name")?;
    validate_topic_name(name).map_err(map_error)?;
    let arn = TopicArn {
        region: cx.region.to_owned(),
        account: cx.principal.account_id.clone(),
        name: name.to_owned(),
    };
    let output = Value::structure([("TopicArn", Value::string(arn.arn()))]);
    // Idempotent: an existing topic is answered as it is.
    if app.topics.find(&arn).map_err(map_error)?.is_some() {
        return Ok(Outcome::write(output, Vec::new()));
    }
    let mut topic = Topic {
        v: 1,
        display_name: String::new(),
        policy: None,
        delivery_policy: None,
        subscriptions_deleted: 0,
    };
    if let Some(Value::Map(attributes)) = input.get("Attributes") {
        for (key, value) in attributes {
            let value = value.as_str().unwrap_or_default();
            match key.as_str() {
                // Standard topics only: FIFO names end in `.fifo`, which the
                // name rule already refuses.
                "FifoTopic" if value.eq_ignore_ascii_case("false") => {}
                "FifoTopic" => return Err(invalid("Invalid parameter: Attributes Reason: FifoTopic is not supported by trailwatch")),
                // AWS attributes with no effect on http(s) delivery here.
                "KmsMasterKeyId" | "SignatureVersion" | "TracingConfig" | "ArchivePolicy"
                | "DataProtectionPolicy" | "ContentBasedDeduplication" => {}
                _ => {
                    let attribute = TopicAttribute::parse(key).map_err(|_| {
                        invalid("Invalid parameter: Attributes Reason: Unknown attribute")
                    })?;
                    attribute.apply(&mut topic, value).map_err(map_error)?;
                }
            }
        }
    }
    let changes = app.topics.put_changes(&arn, &topic);
    Ok(Outcome::write(output, changes))
}

pub(super) fn delete_topic(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let arn = topic_arn(cx, input, "TopicArn")?;
    let changes = app.topics.delete_changes(&arn).map_err(map_error)?;
    Ok(no_output(changes))
}

pub(super) fn list_topics(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let account = &cx.principal.account_id;
    let filters = filters_hash(&[account, cx.region, "ListTopics"]);
    let after = cursor(app, cx, input, &filters)?;
    let (topics, more) = app
        .topics
        .list(account, cx.region, after.as_deref(), PAGE_SIZE)
        .map_err(map_error)?;
    let next = match (more, topics.last()) {
        (true, Some(last)) => Value::String(app.tokens.issue(&filters, &last.name, cx.now)),
        _ => Value::Null,
    };
    let topics = topics
        .iter()
        .map(|t| Value::structure([("TopicArn", Value::string(t.arn()))]))
        .collect();
    Ok(Outcome::read(Value::structure([
        ("Topics", Value::List(topics)),
        ("NextToken", next),
    ])))
}

pub(super) fn get_topic_attributes(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let arn = topic_arn(cx, input, "TopicArn")?;
    let topic = app.topics.get(&arn).map_err(map_error)?;
    let subscriptions = app.topics.all_subscriptions(&arn).map_err(map_error)?;
    let confirmed = subscriptions
        .iter()
        .filter(|s| s.subscription.confirmed)
        .count();
    let pending = subscriptions.len() - confirmed;
    let mut attributes = vec![
        ("Policy", topic.effective_policy(&arn)),
        ("Owner", arn.account.clone()),
        ("SubscriptionsPending", pending.to_string()),
        ("TopicArn", arn.arn()),
        ("EffectiveDeliveryPolicy", topic.effective_delivery_policy()),
        ("SubscriptionsConfirmed", confirmed.to_string()),
        ("DisplayName", topic.display_name.clone()),
        (
            "SubscriptionsDeleted",
            topic.subscriptions_deleted.to_string(),
        ),
        (
            "TrailwatchDeliveriesFailed",
            app.sns.failures(&arn.arn()).to_string(),
        ),
    ];
    if let Some(policy) = &topic.delivery_policy {
        attributes.push(("DeliveryPolicy", policy.clone()));
    }
    let map = attributes
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Value::String(v)))
        .collect();
    Ok(Outcome::read(Value::structure([(
        "Attributes",
        Value::Map(map),
    )])))
}

pub(super) fn set_topic_attributes(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let arn = topic_arn(cx, input, "TopicArn")?;
    let attribute = TopicAttribute::parse(required(input, "AttributeName")?).map_err(map_error)?;
    let value = input
        .get("AttributeValue")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut topic = app.topics.get(&arn).map_err(map_error)?;
    attribute.apply(&mut topic, value).map_err(map_error)?;
    Ok(no_output(app.topics.put_changes(&arn, &topic)))
}

pub(super) fn subscribe(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let arn = topic_arn(cx, input, "TopicArn")?;
    let protocol = required(input, "Protocol")?;
    let endpoint = required(input, "Endpoint")?;
    let return_arn = input
        .get("ReturnSubscriptionArn")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let (entry, changes) = app
        .topics
        .subscribe(&arn, &cx.principal.account_id, protocol, endpoint)
        .map_err(map_error)?;
    // AWS answers a pending Subscribe with the words "pending confirmation",
    // while listings show `PendingConfirmation`.
    let shown = if return_arn || entry.subscription.confirmed {
        entry.arn()
    } else {
        "pending confirmation".to_owned()
    };
    let output = Value::structure([("SubscriptionArn", Value::String(shown))]);
    let mut outcome = Outcome::write(output, changes);
    // A pending subscription gets a (new) confirmation request, as at AWS.
    if !entry.subscription.confirmed {
        let signer = app.sns.signer().map_err(map_error)?;
        let delivery = confirmation(&app.sns, &signer, &entry, cx.now);
        outcome.changes.push(delivery.enqueue());
        let runtime = app.sns.clone();
        outcome.after_commit = Some(AfterCommit::new(move || {
            tokio::spawn(deliver(runtime, delivery));
        }));
    }
    Ok(outcome)
}

pub(super) fn confirm_subscription(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let arn = topic_arn(cx, input, "TopicArn")?;
    let token = required(input, "Token")?;
    let (entry, changes) = app.topics.confirm(&arn, token).map_err(map_error)?;
    let output = Value::structure([("SubscriptionArn", Value::String(entry.arn()))]);
    Ok(Outcome::write(output, changes))
}

pub(super) fn unsubscribe(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let arn = required(input, "SubscriptionArn")?;
    // Only the topic's account may remove its subscriptions.
    if let Ok((topic, _)) = trailwatch_core::sns::parse_subscription_arn(arn) {
        let topic_only = Value::structure([("TopicArn", Value::String(topic.arn()))]);
        topic_arn(cx, &topic_only, "TopicArn")?;
    }
    let changes = app.topics.unsubscribe_changes(arn).map_err(map_error)?;
    Ok(no_output(changes))
}

fn subscriptions_page(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
    topic: Option<&TopicArn>,
) -> Result<Outcome, ApiError> {
    let account = &cx.principal.account_id;
    let scope = topic.map(TopicArn::arn).unwrap_or_default();
    let filters = filters_hash(&[account, cx.region, "ListSubscriptions", &scope]);
    let after = cursor(app, cx, input, &filters)?;
    let region = topic.map_or(cx.region, |t| t.region.as_str());
    let (entries, more) = app
        .topics
        .subscriptions(account, region, topic, after.as_deref(), PAGE_SIZE)
        .map_err(map_error)?;
    let next = match (more, entries.last()) {
        (true, Some(last)) => Value::String(app.tokens.issue(&filters, &last.cursor(), cx.now)),
        _ => Value::Null,
    };
    let members = entries
        .iter()
        .map(|e| {
            Value::structure([
                ("SubscriptionArn", Value::String(e.listed_arn())),
                ("Owner", Value::string(&e.subscription.owner)),
                ("Protocol", Value::string(&e.subscription.protocol)),
                ("Endpoint", Value::string(&e.subscription.endpoint)),
                ("TopicArn", Value::String(e.topic.arn())),
            ])
        })
        .collect();
    Ok(Outcome::read(Value::structure([
        ("Subscriptions", Value::List(members)),
        ("NextToken", next),
    ])))
}

pub(super) fn list_subscriptions(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    subscriptions_page(app, cx, input, None)
}

pub(super) fn list_subscriptions_by_topic(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let arn = topic_arn(cx, input, "TopicArn")?;
    app.topics.get(&arn).map_err(map_error)?;
    subscriptions_page(app, cx, input, Some(&arn))
}

/// `MessageAttributes` as (name, type, value); binary values stay base64.
fn message_attributes(input: &Value) -> Result<Vec<(String, String, String)>, ApiError> {
    let Some(Value::Map(entries)) = input.get("MessageAttributes") else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (name, value) in entries {
        let data_type = value
            .get("DataType")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                invalid(&format!(
                    "Invalid parameter: MessageAttributes: The message attribute '{name}' must contain non-empty message attribute type."
                ))
            })?;
        let text = if data_type.starts_with("Binary") {
            value.get("BinaryValue")
        } else {
            value.get("StringValue")
        }
        .and_then(Value::as_str)
        .ok_or_else(|| {
            invalid(&format!(
                "Invalid parameter: MessageAttributes: The message attribute '{name}' must contain non-empty message attribute value for message attribute type '{data_type}'."
            ))
        })?;
        out.push((name.clone(), data_type.to_owned(), text.to_owned()));
    }
    Ok(out)
}

pub(super) fn publish(app: &App, cx: &CallContext<'_>, input: &Value) -> Result<Outcome, ApiError> {
    let arn = topic_arn(cx, input, "TopicArn")?;
    let message = input
        .get("Message")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("Invalid parameter: Empty message"))?;
    validate_message(message).map_err(map_error)?;
    let subject = input.get("Subject").and_then(Value::as_str);
    if let Some(subject) = subject {
        validate_subject(subject).map_err(map_error)?;
    }
    let attributes = message_attributes(input)?;
    app.topics.get(&arn).map_err(map_error)?;
    let targets: Vec<SubscriptionEntry> = app
        .topics
        .all_subscriptions(&arn)
        .map_err(map_error)?
        .into_iter()
        .filter(|e| e.subscription.confirmed)
        .collect();
    let message_id = uuid::Uuid::new_v4().to_string();
    let mut outcome = Outcome::read(Value::structure([(
        "MessageId",
        Value::string(&message_id),
    )]));
    outcome.response_elements = Some(serde_json::json!({ "messageId": message_id }));
    if !targets.is_empty() {
        let signer = app.sns.signer().map_err(map_error)?;
        let envelope = Envelope {
            kind: MessageType::Notification,
            message_id,
            topic_arn: arn.arn(),
            subject: subject.map(str::to_owned),
            message: message.to_owned(),
            timestamp: sns_timestamp(cx.now),
            token: None,
            subscribe_url: None,
            unsubscribe_url: None,
            signing_cert_url: format!("{}{CERTIFICATE_PATH}", app.sns.endpoint()),
            message_attributes: attributes,
        };
        let deliveries = notifications(&app.sns, &signer, &envelope, &targets, cx.now);
        outcome
            .changes
            .extend(deliveries.iter().map(Delivery::enqueue));
        let runtime = app.sns.clone();
        outcome.after_commit = Some(AfterCommit::new(move || {
            spawn_deliveries(&runtime, deliveries)
        }));
    }
    Ok(outcome)
}

/// Percent-encodes a query parameter value (RFC 3986 unreserved kept).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The signed notifications of `envelope` to each of `targets` (confirmed
/// subscriptions of its topic), ready for the outbox.
pub(crate) fn notifications(
    runtime: &SnsRuntime,
    signer: &MessageSigner,
    envelope: &Envelope,
    targets: &[SubscriptionEntry],
    now: trailwatch_types::Timestamp,
) -> Vec<Delivery> {
    // The signature does not cover UnsubscribeURL: sign once.
    let signature = signer.sign(envelope);
    targets
        .iter()
        .enumerate()
        .map(|(n, target)| {
            let subscription_arn = target.arn();
            let envelope = Envelope {
                unsubscribe_url: Some(format!(
                    "{}/?Action=Unsubscribe&Version=2010-03-31&SubscriptionArn={}",
                    runtime.endpoint(),
                    encode(&subscription_arn)
                )),
                ..envelope.clone()
            };
            Delivery::new(
                &envelope,
                &signature,
                &target.subscription.endpoint,
                Some(subscription_arn),
                now,
                n,
            )
        })
        .collect()
}

/// Starts the POSTs of `deliveries` (already committed to the outbox).
pub(crate) fn spawn_deliveries(runtime: &SnsRuntime, deliveries: Vec<Delivery>) {
    for delivery in deliveries {
        tokio::spawn(deliver(runtime.clone(), delivery));
    }
}

/// Restarts every delivery a stop interrupted (they are still in the outbox).
pub fn resume_deliveries(runtime: &SnsRuntime) -> Result<usize, SnsError> {
    let pending = runtime.inner.topics.pending_deliveries()?;
    let n = pending.len();
    if n > 0 {
        tracing::info!(deliveries = n, "resuming sns deliveries");
    }
    spawn_deliveries(runtime, pending);
    Ok(n)
}

fn confirmation(
    runtime: &SnsRuntime,
    signer: &MessageSigner,
    entry: &SubscriptionEntry,
    now: trailwatch_types::Timestamp,
) -> Delivery {
    let topic_arn = entry.topic.arn();
    let token = entry.subscription.token.clone();
    let subscribe_url = format!(
        "{}/?Action=ConfirmSubscription&Version=2010-03-31&TopicArn={}&Token={}",
        runtime.endpoint(),
        encode(&topic_arn),
        token
    );
    let envelope = Envelope {
        kind: MessageType::SubscriptionConfirmation,
        message_id: uuid::Uuid::new_v4().to_string(),
        topic_arn: topic_arn.clone(),
        subject: None,
        message: format!(
            "You have chosen to subscribe to the topic {topic_arn}.\nTo confirm the subscription, visit the SubscribeURL included in this message."
        ),
        timestamp: sns_timestamp(now),
        token: Some(token),
        subscribe_url: Some(subscribe_url),
        unsubscribe_url: None,
        signing_cert_url: format!("{}{CERTIFICATE_PATH}", runtime.endpoint()),
        message_attributes: Vec::new(),
    };
    let signature = signer.sign(&envelope);
    Delivery::new(
        &envelope,
        &signature,
        &entry.subscription.endpoint,
        None,
        now,
        0,
    )
}

/// How long one POST may take before it counts as failed.
const POST_TIMEOUT: Duration = Duration::from_secs(15);

async fn post_once(runtime: &SnsRuntime, delivery: &Delivery) -> Result<(), String> {
    let mut request = runtime
        .inner
        .http
        .post(&delivery.url)
        .timeout(POST_TIMEOUT)
        .header("content-type", "text/plain; charset=UTF-8")
        .header("user-agent", "Amazon Simple Notification Service Agent")
        .header("x-amz-sns-message-type", &delivery.kind)
        .header("x-amz-sns-message-id", &delivery.message_id)
        .header("x-amz-sns-topic-arn", &delivery.topic_arn);
    if let Some(arn) = &delivery.subscription_arn {
        request = request.header("x-amz-sns-subscription-arn", arn);
    }
    let response = request
        .body(delivery.body.clone())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    // As AWS: only server errors and throttling are retried.
    if status >= 500 || status == 429 {
        return Err(format!("HTTP status {status}"));
    }
    Ok(())
}

async fn deliver(runtime: SnsRuntime, delivery: Delivery) {
    let attempts = runtime.inner.retry_delays.len() + 1;
    let mut last_error = String::new();
    let mut delivered = false;
    for attempt in 0..attempts {
        match post_once(&runtime, &delivery).await {
            Ok(()) => {
                tracing::debug!(topic = %delivery.topic_arn, kind = %delivery.kind, attempt, "sns message delivered");
                delivered = true;
                break;
            }
            Err(e) => last_error = e,
        }
        if let Some(delay) = runtime.inner.retry_delays.get(attempt) {
            tokio::time::sleep(*delay).await;
        }
    }
    if !delivered {
        runtime.count_failure(&delivery.topic_arn);
        tracing::warn!(
            topic = %delivery.topic_arn,
            kind = %delivery.kind,
            attempts,
            error = %last_error,
            "failed to deliver sns message"
        );
    }
    // Delivered or given up: either way it leaves the outbox. Should this
    // fail, a restart sends it again (at least once, as SNS promises).
    let topics = runtime.inner.topics.clone();
    let done = delivery.done();
    match tokio::task::spawn_blocking(move || topics.commit(&[done])).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "failed to remove a finished sns delivery"),
        Err(e) => tracing::error!(error = %e, "outbox task failed"),
    }
}

/// GET of the signing certificate (PEM), unauthenticated like AWS's.
pub async fn certificate(
    axum::extract::State(app): axum::extract::State<Arc<App>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let sns = app.sns.clone();
    let signer = tokio::task::spawn_blocking(move || sns.signer()).await;
    match signer {
        Ok(Ok(signer)) => (
            [(http::header::CONTENT_TYPE, "application/x-pem-file")],
            signer.certificate_pem().to_owned(),
        )
            .into_response(),
        Ok(Err(err)) => {
            tracing::error!(error = %err, "failed to load the sns signing certificate");
            http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        Err(_) => http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            encode("arn:aws:sns:us-east-1:111122223333:a_b-c.d~"),
            "arn%3Aaws%3Asns%3Aus-east-1%3A111122223333%3Aa_b-c.d~"
        );
    }

    #[test]
    fn errors_have_sns_codes() {
        let e = map_error(SnsError::NotFound("Topic does not exist".into()));
        assert_eq!((e.code.as_str(), e.status), ("NotFound", 404));
        let e = invalid("Invalid parameter: Message too long");
        assert_eq!((e.code.as_str(), e.status), ("InvalidParameter", 400));
    }
}
