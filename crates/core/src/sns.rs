//! The SNS subset alarms notify through (`spec/protocols.md` §1, §10.2): topics,
//! `http`/`https` subscriptions, the messages delivered to them and their
//! SignatureVersion 2 signatures.
//!
//! - [`Topics`]: topics and subscriptions in the catalog. Writes are not applied
//!   here: the `*_changes` methods return catalog changes, which the caller
//!   commits with the call's audit record (`AuditStore::commit`).
//! - [`Envelope`]: the JSON body AWS POSTs to an HTTP endpoint, and
//!   [`Envelope::canonical_string`], the text its signature covers.
//! - [`MessageSigner`]: the RSA key and self-signed certificate, created at first
//!   use and kept in the data directory, so receivers can verify what we send.
//!
//! Delivery itself (HTTP, retries) is the server's job; nothing here does IO
//! except [`MessageSigner::load_or_create`].
//!
//! # Catalog layout (version 1)
//! - Table `sns-topics`, key `{account}/{region}/{name}`, value JSON [`Topic`].
//! - Table `sns-subscriptions`, key `{account}/{region}/{topic}/{id}`, value JSON
//!   [`Subscription`]. Topic names hold no `/`, so a topic's subscriptions are
//!   one key prefix, and an account's in a region another.
//! - Table `sns-outbox`, key `{epoch_ms:015}/{message_id}/{n}`, value JSON
//!   [`Delivery`]: every POST from the commit that produced it until it is
//!   delivered or has failed every attempt, so a restart resumes it.

use std::path::Path;
use std::sync::Arc;

use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer};
use rsa::RsaPrivateKey;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use trailwatch_storage::{Catalog, CatalogOp};
use trailwatch_types::Timestamp;

const TOPICS: &str = "sns-topics";
const SUBSCRIPTIONS: &str = "sns-subscriptions";
const OUTBOX: &str = "sns-outbox";

/// Largest Publish message, in bytes (256 KB, `spec/protocols.md` §13).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// SNS failures; each is a modelled SNS error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnsError {
    /// `InvalidParameter` (400); the message says which parameter.
    #[error("{0}")]
    InvalidParameter(String),
    /// `NotFound` (404).
    #[error("{0}")]
    NotFound(String),
    /// The catalog or the signing key failed.
    #[error("sns storage failed: {0}")]
    Storage(String),
}

fn storage(e: impl std::fmt::Display) -> SnsError {
    SnsError::Storage(e.to_string())
}

/// Validates a topic name: `[A-Za-z0-9_-]{1,256}`.
pub fn validate_topic_name(name: &str) -> Result<(), SnsError> {
    let valid = !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(SnsError::InvalidParameter(
            "Invalid parameter: Topic Name".to_owned(),
        ))
    }
}

/// The parts of a topic ARN `arn:aws:sns:{region}:{account}:{name}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicArn {
    /// Region.
    pub region: String,
    /// Owning account.
    pub account: String,
    /// Topic name.
    pub name: String,
}

impl TopicArn {
    /// Parses a topic ARN; `parameter` names it in the error.
    pub fn parse(arn: &str, parameter: &str) -> Result<Self, SnsError> {
        let invalid = || SnsError::InvalidParameter(format!("Invalid parameter: {parameter}"));
        let parts: Vec<&str> = arn.split(':').collect();
        let [prefix, partition, service, region, account, name] = parts[..] else {
            return Err(invalid());
        };
        if prefix != "arn" || partition.is_empty() || service != "sns" || region.is_empty() {
            return Err(invalid());
        }
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        validate_topic_name(name).map_err(|_| invalid())?;
        Ok(Self {
            region: region.to_owned(),
            account: account.to_owned(),
            name: name.to_owned(),
        })
    }

    /// The ARN text.
    pub fn arn(&self) -> String {
        format!("arn:aws:sns:{}:{}:{}", self.region, self.account, self.name)
    }

    fn key(&self) -> String {
        format!("{}/{}/{}", self.account, self.region, self.name)
    }
}

/// A stored topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    /// Format version.
    pub v: u8,
    /// `DisplayName` attribute (empty when unset, as AWS shows it).
    #[serde(default)]
    pub display_name: String,
    /// `Policy` attribute; `None` means AWS's default policy.
    #[serde(default)]
    pub policy: Option<String>,
    /// `DeliveryPolicy` attribute, as set.
    #[serde(default)]
    pub delivery_policy: Option<String>,
    /// Subscriptions removed so far (`SubscriptionsDeleted`).
    #[serde(default)]
    pub subscriptions_deleted: u64,
}

impl Topic {
    /// The `Policy` attribute: the one set, else AWS's default for a new topic.
    pub fn effective_policy(&self, arn: &TopicArn) -> String {
        if let Some(policy) = &self.policy {
            return policy.clone();
        }
        serde_json::json!({
            "Version": "2008-10-17",
            "Id": "__default_policy_ID",
            "Statement": [{
                "Sid": "__default_statement_ID",
                "Effect": "Allow",
                "Principal": {"AWS": "*"},
                "Action": [
                    "SNS:GetTopicAttributes", "SNS:SetTopicAttributes", "SNS:AddPermission",
                    "SNS:RemovePermission", "SNS:DeleteTopic", "SNS:Subscribe",
                    "SNS:ListSubscriptionsByTopic", "SNS:Publish"
                ],
                "Resource": arn.arn(),
                "Condition": {"StringEquals": {"AWS:SourceOwner": arn.account}}
            }]
        })
        .to_string()
    }

    /// The `EffectiveDeliveryPolicy` attribute: the topic's own policy when set,
    /// else AWS's default HTTP policy.
    pub fn effective_delivery_policy(&self) -> String {
        if let Some(policy) = &self.delivery_policy {
            return policy.clone();
        }
        serde_json::json!({"http": {
            "defaultHealthyRetryPolicy": {
                "minDelayTarget": 20, "maxDelayTarget": 20, "numRetries": 3,
                "numMaxDelayRetries": 0, "numNoDelayRetries": 0,
                "numMinDelayRetries": 0, "backoffFunction": "linear"
            },
            "disableSubscriptionOverrides": false,
            "defaultRequestPolicy": {"headerContentType": "text/plain; charset=UTF-8"}
        }})
        .to_string()
    }
}

/// A topic attribute SetTopicAttributes may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicAttribute {
    /// `DisplayName`.
    DisplayName,
    /// `Policy` (JSON).
    Policy,
    /// `DeliveryPolicy` (JSON).
    DeliveryPolicy,
}

impl TopicAttribute {
    /// Parses an `AttributeName`.
    pub fn parse(name: &str) -> Result<Self, SnsError> {
        match name {
            "DisplayName" => Ok(Self::DisplayName),
            "Policy" => Ok(Self::Policy),
            "DeliveryPolicy" => Ok(Self::DeliveryPolicy),
            _ => Err(SnsError::InvalidParameter(
                "Invalid parameter: AttributeName".to_owned(),
            )),
        }
    }

    /// Applies `value` to `topic`, checking JSON policies parse.
    pub fn apply(self, topic: &mut Topic, value: &str) -> Result<(), SnsError> {
        let json_or_empty = |name: &str| -> Result<Option<String>, SnsError> {
            if value.is_empty() {
                return Ok(None);
            }
            match serde_json::from_str::<serde_json::Value>(value) {
                Ok(serde_json::Value::Object(_)) => Ok(Some(value.to_owned())),
                _ => Err(SnsError::InvalidParameter(format!(
                    "Invalid parameter: {name}"
                ))),
            }
        };
        match self {
            Self::DisplayName => {
                if value.len() > 100 {
                    return Err(SnsError::InvalidParameter(
                        "Invalid parameter: DisplayName".to_owned(),
                    ));
                }
                topic.display_name = value.to_owned();
            }
            Self::Policy => topic.policy = json_or_empty("Policy")?,
            Self::DeliveryPolicy => topic.delivery_policy = json_or_empty("DeliveryPolicy")?,
        }
        Ok(())
    }
}

/// A stored subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Format version.
    pub v: u8,
    /// The id ending the subscription ARN.
    pub id: String,
    /// `http` or `https`.
    pub protocol: String,
    /// The URL messages are POSTed to.
    pub endpoint: String,
    /// The subscribing account.
    pub owner: String,
    /// The token ConfirmSubscription must present.
    pub token: String,
    /// Whether ConfirmSubscription succeeded; only confirmed ones get messages.
    pub confirmed: bool,
}

/// A subscription with the topic it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionEntry {
    /// The topic.
    pub topic: TopicArn,
    /// The subscription.
    pub subscription: Subscription,
}

impl SubscriptionEntry {
    /// The subscription ARN, `{topic arn}:{id}`.
    pub fn arn(&self) -> String {
        format!("{}:{}", self.topic.arn(), self.subscription.id)
    }

    /// The ARN as listings show it: pending ones are `PendingConfirmation`.
    pub fn listed_arn(&self) -> String {
        if self.subscription.confirmed {
            self.arn()
        } else {
            "PendingConfirmation".to_owned()
        }
    }

    fn key(&self) -> String {
        format!("{}/{}", self.topic.key(), self.subscription.id)
    }

    /// The catalog key, which is also the paging cursor of listings.
    pub fn cursor(&self) -> String {
        self.key()
    }
}

/// Splits a subscription ARN into its topic and id.
pub fn parse_subscription_arn(arn: &str) -> Result<(TopicArn, String), SnsError> {
    let invalid = || SnsError::InvalidParameter("Invalid parameter: SubscriptionArn".to_owned());
    let (topic, id) = arn.rsplit_once(':').ok_or_else(invalid)?;
    let topic = TopicArn::parse(topic, "SubscriptionArn").map_err(|_| invalid())?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return Err(invalid());
    }
    Ok((topic, id.to_owned()))
}

/// Validates a Subscribe `Protocol` and `Endpoint` for the supported kinds.
pub fn validate_endpoint(protocol: &str, endpoint: &str) -> Result<(), SnsError> {
    let prefix = match protocol {
        "http" => "http://",
        "https" => "https://",
        _ => {
            return Err(SnsError::InvalidParameter(format!(
                "Invalid parameter: Protocol {protocol} is not supported by trailwatch (http and https are)"
            )))
        }
    };
    let host = endpoint.get(prefix.len()..).unwrap_or_default();
    let valid = endpoint
        .get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
        && !host.is_empty()
        && !host.starts_with('/')
        && !endpoint.chars().any(char::is_whitespace);
    if valid {
        Ok(())
    } else {
        Err(SnsError::InvalidParameter(
            "Invalid parameter: Endpoint must match the specified protocol".to_owned(),
        ))
    }
}

/// Validates a Publish message: present, not empty, at most 256 KB.
pub fn validate_message(message: &str) -> Result<(), SnsError> {
    if message.is_empty() {
        return Err(SnsError::InvalidParameter(
            "Invalid parameter: Empty message".to_owned(),
        ));
    }
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(SnsError::InvalidParameter(
            "Invalid parameter: Message too long".to_owned(),
        ));
    }
    Ok(())
}

/// Validates a Publish subject: 1–100 printable ASCII characters, no line breaks.
pub fn validate_subject(subject: &str) -> Result<(), SnsError> {
    let valid = !subject.is_empty()
        && subject.len() <= 100
        && subject.bytes().all(|b| (0x20..0x7f).contains(&b));
    if valid {
        Ok(())
    } else {
        Err(SnsError::InvalidParameter(
            "Invalid parameter: Subject".to_owned(),
        ))
    }
}

/// A random hex string of `bytes` random bytes: subscription ids, tokens.
fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// Topics and subscriptions of every account and region, in the catalog.
#[derive(Debug, Clone)]
pub struct Topics {
    catalog: Arc<dyn Catalog>,
}

impl Topics {
    /// Topics stored in `catalog`.
    pub fn new(catalog: Arc<dyn Catalog>) -> Self {
        Self { catalog }
    }

    fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, SnsError> {
        serde_json::from_slice(bytes).map_err(storage)
    }

    /// Every delivery still in the outbox, oldest first: what a restart resumes.
    pub fn pending_deliveries(&self) -> Result<Vec<Delivery>, SnsError> {
        let rows = self.catalog.list(OUTBOX, "").map_err(storage)?;
        let mut out = Vec::with_capacity(rows.len());
        for (_, bytes) in rows {
            let delivery: Delivery = Self::decode(&bytes)?;
            if delivery.v != 1 {
                return Err(SnsError::Storage(format!(
                    "outbox record version {}",
                    delivery.v
                )));
            }
            out.push(delivery);
        }
        Ok(out)
    }

    /// Applies `ops` to the catalog directly (outbox removals, which belong
    /// to no API call).
    pub fn commit(&self, ops: &[CatalogOp]) -> Result<(), SnsError> {
        self.catalog.commit(ops).map_err(storage)
    }

    /// The topic `arn`, if it exists.
    pub fn find(&self, arn: &TopicArn) -> Result<Option<Topic>, SnsError> {
        match self.catalog.get(TOPICS, &arn.key()).map_err(storage)? {
            Some(bytes) => Ok(Some(Self::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// The topic `arn`, or `NotFound`.
    pub fn get(&self, arn: &TopicArn) -> Result<Topic, SnsError> {
        self.find(arn)?
            .ok_or_else(|| SnsError::NotFound("Topic does not exist".to_owned()))
    }

    /// The change that stores `topic` under `arn`.
    pub fn put_changes(&self, arn: &TopicArn, topic: &Topic) -> Vec<CatalogOp> {
        vec![CatalogOp::put(
            TOPICS,
            arn.key(),
            serde_json::to_vec(topic).unwrap_or_default(),
        )]
    }

    /// The changes that delete the topic and all its subscriptions (none when
    /// it does not exist: DeleteTopic is idempotent).
    pub fn delete_changes(&self, arn: &TopicArn) -> Result<Vec<CatalogOp>, SnsError> {
        if self.find(arn)?.is_none() {
            return Ok(Vec::new());
        }
        let mut ops = vec![CatalogOp::delete(TOPICS, arn.key())];
        let prefix = format!("{}/", arn.key());
        for (key, _) in self.catalog.list(SUBSCRIPTIONS, &prefix).map_err(storage)? {
            ops.push(CatalogOp::delete(SUBSCRIPTIONS, key));
        }
        Ok(ops)
    }

    /// Topics of `account` in `region`, sorted by name, after the name `after`.
    pub fn list(
        &self,
        account: &str,
        region: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<TopicArn>, bool), SnsError> {
        let rows = self
            .catalog
            .list(TOPICS, &format!("{account}/{region}/"))
            .map_err(storage)?;
        let mut out = Vec::new();
        for (key, _) in rows {
            let name = key.rsplit('/').next().unwrap_or_default();
            if after.is_some_and(|a| name <= a) {
                continue;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(TopicArn {
                region: region.to_owned(),
                account: account.to_owned(),
                name: name.to_owned(),
            });
        }
        Ok((out, false))
    }

    /// Subscriptions of one topic, or of every topic of `account` in `region`
    /// (`topic` `None`), in key order, after the cursor `after`.
    pub fn subscriptions(
        &self,
        account: &str,
        region: &str,
        topic: Option<&TopicArn>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<SubscriptionEntry>, bool), SnsError> {
        let prefix = match topic {
            Some(t) => format!("{}/", t.key()),
            None => format!("{account}/{region}/"),
        };
        let rows = self.catalog.list(SUBSCRIPTIONS, &prefix).map_err(storage)?;
        let mut out = Vec::new();
        for (key, value) in rows {
            if after.is_some_and(|a| key.as_str() <= a) {
                continue;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            let mut parts = key.splitn(4, '/');
            let (Some(acc), Some(reg), Some(name)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(storage(format!("bad subscription key {key}")));
            };
            out.push(SubscriptionEntry {
                topic: TopicArn {
                    region: reg.to_owned(),
                    account: acc.to_owned(),
                    name: name.to_owned(),
                },
                subscription: Self::decode(&value)?,
            });
        }
        Ok((out, false))
    }

    /// Every subscription of `topic` (delivery and counts).
    pub fn all_subscriptions(&self, topic: &TopicArn) -> Result<Vec<SubscriptionEntry>, SnsError> {
        Ok(self
            .subscriptions(&topic.account, &topic.region, Some(topic), None, usize::MAX)?
            .0)
    }

    /// The subscription `id` of `topic`, or `NotFound`.
    pub fn subscription(&self, topic: &TopicArn, id: &str) -> Result<SubscriptionEntry, SnsError> {
        let key = format!("{}/{id}", topic.key());
        let bytes = self
            .catalog
            .get(SUBSCRIPTIONS, &key)
            .map_err(storage)?
            .ok_or_else(|| SnsError::NotFound("Subscription does not exist".to_owned()))?;
        Ok(SubscriptionEntry {
            topic: topic.clone(),
            subscription: Self::decode(&bytes)?,
        })
    }

    /// Subscribe: the existing subscription of the same endpoint, or a new
    /// pending one, with the change that stores it (empty when it existed).
    pub fn subscribe(
        &self,
        topic: &TopicArn,
        owner: &str,
        protocol: &str,
        endpoint: &str,
    ) -> Result<(SubscriptionEntry, Vec<CatalogOp>), SnsError> {
        self.get(topic)?;
        validate_endpoint(protocol, endpoint)?;
        let existing = self
            .all_subscriptions(topic)?
            .into_iter()
            .find(|e| e.subscription.protocol == protocol && e.subscription.endpoint == endpoint);
        if let Some(entry) = existing {
            return Ok((entry, Vec::new()));
        }
        let entry = SubscriptionEntry {
            topic: topic.clone(),
            subscription: Subscription {
                v: 1,
                id: uuid::Uuid::new_v4().to_string(),
                protocol: protocol.to_owned(),
                endpoint: endpoint.to_owned(),
                owner: owner.to_owned(),
                // AWS tokens are long opaque strings; 128 random bytes in hex.
                token: random_hex(128),
                confirmed: false,
            },
        };
        let ops = self.store_changes(&entry);
        Ok((entry, ops))
    }

    /// The change that stores `entry` as it is.
    pub fn store_changes(&self, entry: &SubscriptionEntry) -> Vec<CatalogOp> {
        vec![CatalogOp::put(
            SUBSCRIPTIONS,
            entry.key(),
            serde_json::to_vec(&entry.subscription).unwrap_or_default(),
        )]
    }

    /// ConfirmSubscription: the subscription holding `token`, confirmed, and the
    /// change that stores it.
    pub fn confirm(
        &self,
        topic: &TopicArn,
        token: &str,
    ) -> Result<(SubscriptionEntry, Vec<CatalogOp>), SnsError> {
        self.get(topic)?;
        let mut entry = self
            .all_subscriptions(topic)?
            .into_iter()
            .find(|e| !token.is_empty() && e.subscription.token == token)
            .ok_or_else(|| SnsError::InvalidParameter("Invalid token".to_owned()))?;
        entry.subscription.confirmed = true;
        let ops = self.store_changes(&entry);
        Ok((entry, ops))
    }

    /// Unsubscribe: the changes that remove the subscription and count it as
    /// deleted on its topic.
    pub fn unsubscribe_changes(&self, arn: &str) -> Result<Vec<CatalogOp>, SnsError> {
        let (topic_arn, id) = parse_subscription_arn(arn)?;
        let entry = self.subscription(&topic_arn, &id)?;
        let mut ops = vec![CatalogOp::delete(SUBSCRIPTIONS, entry.key())];
        if let Some(mut topic) = self.find(&topic_arn)? {
            topic.subscriptions_deleted += 1;
            ops.extend(self.put_changes(&topic_arn, &topic));
        }
        Ok(ops)
    }
}

/// The message types trailwatch sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// Sent on Subscribe.
    SubscriptionConfirmation,
    /// Sent on Publish.
    Notification,
}

impl MessageType {
    /// From [`MessageType::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "SubscriptionConfirmation" => Some(Self::SubscriptionConfirmation),
            "Notification" => Some(Self::Notification),
            _ => None,
        }
    }

    /// The `Type` field and `x-amz-sns-message-type` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SubscriptionConfirmation => "SubscriptionConfirmation",
            Self::Notification => "Notification",
        }
    }
}

/// One POST to one endpoint, signed and ready, waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Format version (1).
    pub v: u8,
    /// Its outbox key.
    pub key: String,
    /// The endpoint.
    pub url: String,
    /// `x-amz-sns-message-type` ([`MessageType::as_str`]).
    pub kind: String,
    /// `x-amz-sns-message-id`.
    pub message_id: String,
    /// `x-amz-sns-topic-arn`.
    pub topic_arn: String,
    /// `x-amz-sns-subscription-arn` (notifications only, as AWS).
    pub subscription_arn: Option<String>,
    /// The signed JSON envelope.
    pub body: String,
}

impl Delivery {
    /// A delivery of `envelope`, signed with `signature`, to `url`; `n`
    /// tells apart the deliveries of one message.
    pub fn new(
        envelope: &Envelope,
        signature: &str,
        url: &str,
        subscription_arn: Option<String>,
        now: Timestamp,
        n: usize,
    ) -> Self {
        Self {
            v: 1,
            key: format!("{:015}/{}/{n}", now.millis().max(0), envelope.message_id),
            url: url.to_owned(),
            kind: envelope.kind.as_str().to_owned(),
            message_id: envelope.message_id.clone(),
            topic_arn: envelope.topic_arn.clone(),
            subscription_arn,
            body: envelope.to_json(signature),
        }
    }

    /// The change that puts it in the outbox (committed with its cause).
    pub fn enqueue(&self) -> CatalogOp {
        CatalogOp::put(
            OUTBOX,
            self.key.clone(),
            serde_json::to_vec(self).unwrap_or_default(),
        )
    }

    /// The change that takes it out once delivered or given up.
    pub fn done(&self) -> CatalogOp {
        CatalogOp::delete(OUTBOX, self.key.clone())
    }
}

/// SNS timestamps always carry milliseconds: `2026-01-01T00:00:00.000Z`.
pub fn sns_timestamp(t: Timestamp) -> String {
    let seconds = t.to_iso8601_seconds();
    let stem = seconds.strip_suffix('Z').unwrap_or(&seconds);
    format!("{stem}.{:03}Z", t.millis().rem_euclid(1000))
}

/// A message as POSTed to an HTTP endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// `Type`.
    pub kind: MessageType,
    /// `MessageId`.
    pub message_id: String,
    /// `TopicArn`.
    pub topic_arn: String,
    /// `Subject` (notifications published with one).
    pub subject: Option<String>,
    /// `Message`.
    pub message: String,
    /// `Timestamp`, already in SNS form.
    pub timestamp: String,
    /// `Token` (confirmations).
    pub token: Option<String>,
    /// `SubscribeURL` (confirmations).
    pub subscribe_url: Option<String>,
    /// `UnsubscribeURL` (notifications).
    pub unsubscribe_url: Option<String>,
    /// `SigningCertURL`.
    pub signing_cert_url: String,
    /// `MessageAttributes` (notifications), as AWS renders them:
    /// `{"name": {"Type": "String", "Value": "…"}}`.
    pub message_attributes: Vec<(String, String, String)>,
}

impl Envelope {
    /// The text SignatureVersion 2 signs: the fields of the type in AWS's
    /// documented order, each as `Name\nValue\n`, absent optional ones skipped.
    pub fn canonical_string(&self) -> String {
        let fields: Vec<(&str, Option<&str>)> = match self.kind {
            MessageType::Notification => vec![
                ("Message", Some(&self.message)),
                ("MessageId", Some(&self.message_id)),
                ("Subject", self.subject.as_deref()),
                ("Timestamp", Some(&self.timestamp)),
                ("TopicArn", Some(&self.topic_arn)),
                ("Type", Some(self.kind.as_str())),
            ],
            MessageType::SubscriptionConfirmation => vec![
                ("Message", Some(&self.message)),
                ("MessageId", Some(&self.message_id)),
                ("SubscribeURL", self.subscribe_url.as_deref()),
                ("Timestamp", Some(&self.timestamp)),
                ("Token", self.token.as_deref()),
                ("TopicArn", Some(&self.topic_arn)),
                ("Type", Some(self.kind.as_str())),
            ],
        };
        let mut out = String::new();
        for (name, value) in fields {
            if let Some(value) = value {
                out.push_str(name);
                out.push('\n');
                out.push_str(value);
                out.push('\n');
            }
        }
        out
    }

    /// The JSON body with `signature`, members in the order AWS sends them.
    pub fn to_json(&self, signature: &str) -> String {
        let mut body = serde_json::Map::new();
        let mut put = |k: &str, v: &str| {
            body.insert(k.to_owned(), serde_json::Value::String(v.to_owned()));
        };
        put("Type", self.kind.as_str());
        put("MessageId", &self.message_id);
        if let Some(token) = &self.token {
            put("Token", token);
        }
        put("TopicArn", &self.topic_arn);
        if let Some(subject) = &self.subject {
            put("Subject", subject);
        }
        put("Message", &self.message);
        if let Some(url) = &self.subscribe_url {
            put("SubscribeURL", url);
        }
        put("Timestamp", &self.timestamp);
        put("SignatureVersion", "2");
        put("Signature", signature);
        put("SigningCertURL", &self.signing_cert_url);
        if let Some(url) = &self.unsubscribe_url {
            put("UnsubscribeURL", url);
        }
        if !self.message_attributes.is_empty() {
            let attributes: serde_json::Map<String, serde_json::Value> = self
                .message_attributes
                .iter()
                .map(|(name, kind, value)| {
                    (
                        name.clone(),
                        serde_json::json!({"Type": kind, "Value": value}),
                    )
                })
                .collect();
            body.insert(
                "MessageAttributes".to_owned(),
                serde_json::Value::Object(attributes),
            );
        }
        serde_json::Value::Object(body).to_string()
    }
}

/// The key messages are signed with and its self-signed certificate.
pub struct MessageSigner {
    key: SigningKey<Sha256>,
    certificate_pem: String,
}

impl std::fmt::Debug for MessageSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("MessageSigner").finish_non_exhaustive()
    }
}

const KEY_FILE: &str = "sns-signing-key.pem";
const CERT_FILE: &str = "sns-signing-cert.pem";

impl MessageSigner {
    /// Loads the key and certificate from `dir`, or creates both (key mode 0600).
    /// Creation takes a while (RSA 2048), so callers do it once, off hot paths.
    pub fn load_or_create(dir: &Path) -> Result<Self, SnsError> {
        let key_path = dir.join(KEY_FILE);
        let cert_path = dir.join(CERT_FILE);
        if let (Ok(key_pem), Ok(certificate_pem)) = (
            std::fs::read_to_string(&key_path),
            std::fs::read_to_string(&cert_path),
        ) {
            let key = RsaPrivateKey::from_pkcs8_pem(&key_pem).map_err(storage)?;
            return Ok(Self {
                key: SigningKey::new(key),
                certificate_pem,
            });
        }
        let key = RsaPrivateKey::new(&mut rand::thread_rng(), 2048).map_err(storage)?;
        let key_pem = key.to_pkcs8_pem(LineEnding::LF).map_err(storage)?;
        let certificate_pem = self_signed_certificate(&key_pem)?;
        write_private(&key_path, key_pem.as_bytes())?;
        // The certificate is written last: its presence means both are complete.
        std::fs::write(&cert_path, &certificate_pem).map_err(storage)?;
        Ok(Self {
            key: SigningKey::new(key),
            certificate_pem,
        })
    }

    /// The certificate receivers verify with, PEM.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// SHA256withRSA (PKCS#1 v1.5) over the canonical string, base64.
    pub fn sign(&self, envelope: &Envelope) -> String {
        use base64::Engine as _;
        let signature = self.key.sign(envelope.canonical_string().as_bytes());
        base64::engine::general_purpose::STANDARD.encode(signature.to_bytes())
    }
}

fn self_signed_certificate(key_pem: &str) -> Result<String, SnsError> {
    let key_pair = rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(key_pem, &rcgen::PKCS_RSA_SHA256)
        .map_err(storage)?;
    let mut params =
        rcgen::CertificateParams::new(vec!["sns.trailwatch.local".to_owned()]).map_err(storage)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "trailwatch SNS message signing");
    let certificate = params.self_signed(&key_pair).map_err(storage)?;
    Ok(certificate.pem())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), SnsError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(storage)?;
    file.write_all(bytes).map_err(storage)?;
    file.sync_all().map_err(storage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use trailwatch_storage::MemoryCatalog;

    #[test]
    fn names_and_arns() {
        assert!(validate_topic_name("alarms_prod-1").is_ok());
        assert!(validate_topic_name(&"a".repeat(256)).is_ok());
        for bad in ["", "has space", "dot.ted", "x/y"] {
            assert!(validate_topic_name(bad).is_err(), "{bad}");
        }
        assert!(validate_topic_name(&"a".repeat(257)).is_err());
        let arn = TopicArn::parse("arn:aws:sns:us-east-1:111122223333:ops", "TopicArn").unwrap();
        assert_eq!(arn.name, "ops");
        assert_eq!(arn.arn(), "arn:aws:sns:us-east-1:111122223333:ops");
        for bad in [
            "",
            "arn:aws:sns:us-east-1:111122223333",
            "arn:aws:sqs:us-east-1:111122223333:ops",
            "arn:aws:sns:us-east-1:12:ops",
            "arn:aws:sns:us-east-1:111122223333:bad name",
        ] {
            assert_eq!(
                TopicArn::parse(bad, "TopicArn"),
                Err(SnsError::InvalidParameter(
                    "Invalid parameter: TopicArn".into()
                ))
            );
        }
        let (topic, id) =
            parse_subscription_arn("arn:aws:sns:us-east-1:111122223333:ops:0a1b-2c").unwrap();
        assert_eq!((topic.name.as_str(), id.as_str()), ("ops", "0a1b-2c"));
        assert!(parse_subscription_arn("PendingConfirmation").is_err());
    }

    #[test]
    fn endpoints_messages_subjects() {
        assert!(validate_endpoint("http", "http://127.0.0.1:9/x").is_ok());
        assert!(validate_endpoint("https", "https://example.test/").is_ok());
        assert!(validate_endpoint("https", "http://example.test/").is_err());
        assert!(validate_endpoint("http", "http://").is_err());
        assert!(validate_endpoint("email", "a@b.c").is_err());
        assert!(validate_message("x").is_ok());
        assert!(validate_message(&"x".repeat(MAX_MESSAGE_BYTES)).is_ok());
        assert_eq!(
            validate_message(&"x".repeat(MAX_MESSAGE_BYTES + 1)),
            Err(SnsError::InvalidParameter(
                "Invalid parameter: Message too long".into()
            ))
        );
        assert!(validate_message("").is_err());
        assert!(validate_subject("ALARM: cpu").is_ok());
        assert!(validate_subject("two\nlines").is_err());
        assert!(validate_subject(&"s".repeat(101)).is_err());
    }

    #[test]
    fn timestamps_carry_milliseconds() {
        assert_eq!(
            sns_timestamp(Timestamp::from_secs(1_767_225_600)),
            "2026-01-01T00:00:00.000Z"
        );
        assert_eq!(
            sns_timestamp(Timestamp::from_millis(1_767_225_600_042)),
            "2026-01-01T00:00:00.042Z"
        );
    }

    fn notification(subject: Option<&str>) -> Envelope {
        Envelope {
            kind: MessageType::Notification,
            message_id: "m-1".into(),
            topic_arn: "arn:aws:sns:us-east-1:111122223333:ops".into(),
            subject: subject.map(str::to_owned),
            message: "hello\nworld".into(),
            timestamp: "2026-01-01T00:00:00.000Z".into(),
            token: None,
            subscribe_url: None,
            unsubscribe_url: Some("http://h/?Action=Unsubscribe".into()),
            signing_cert_url: "http://h/sns/SimpleNotificationService.pem".into(),
            message_attributes: vec![],
        }
    }

    #[test]
    fn canonical_strings_follow_aws_order() {
        assert_eq!(
            notification(Some("subj")).canonical_string(),
            "Message\nhello\nworld\nMessageId\nm-1\nSubject\nsubj\nTimestamp\n2026-01-01T00:00:00.000Z\nTopicArn\narn:aws:sns:us-east-1:111122223333:ops\nType\nNotification\n"
        );
        // Without a subject, the Subject pair is left out entirely.
        assert!(!notification(None).canonical_string().contains("Subject"));
        let confirmation = Envelope {
            kind: MessageType::SubscriptionConfirmation,
            token: Some("tok".into()),
            subscribe_url: Some("http://h/?Action=ConfirmSubscription".into()),
            unsubscribe_url: None,
            ..notification(None)
        };
        assert_eq!(
            confirmation.canonical_string(),
            "Message\nhello\nworld\nMessageId\nm-1\nSubscribeURL\nhttp://h/?Action=ConfirmSubscription\nTimestamp\n2026-01-01T00:00:00.000Z\nToken\ntok\nTopicArn\narn:aws:sns:us-east-1:111122223333:ops\nType\nSubscriptionConfirmation\n"
        );
        let json: serde_json::Value = serde_json::from_str(&confirmation.to_json("c2ln")).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "Type",
                "MessageId",
                "Token",
                "TopicArn",
                "Message",
                "SubscribeURL",
                "Timestamp",
                "SignatureVersion",
                "Signature",
                "SigningCertURL"
            ]
        );
    }

    #[test]
    fn signatures_verify_and_the_key_persists() {
        use base64::Engine as _;
        use rsa::pkcs1v15::{Signature, VerifyingKey};
        use rsa::signature::{Keypair, Verifier};
        let dir = tempfile::tempdir().unwrap();
        let signer = MessageSigner::load_or_create(dir.path()).unwrap();
        assert!(signer
            .certificate_pem()
            .starts_with("-----BEGIN CERTIFICATE-----"));
        let envelope = notification(Some("s"));
        let signature = base64::engine::general_purpose::STANDARD
            .decode(signer.sign(&envelope))
            .unwrap();
        let verifying: VerifyingKey<Sha256> = signer.key.verifying_key();
        let signature = Signature::try_from(signature.as_slice()).unwrap();
        verifying
            .verify(envelope.canonical_string().as_bytes(), &signature)
            .unwrap();
        let mut tampered = envelope.clone();
        tampered.message.push('!');
        assert!(verifying
            .verify(tampered.canonical_string().as_bytes(), &signature)
            .is_err());
        let again = MessageSigner::load_or_create(dir.path()).unwrap();
        assert_eq!(again.certificate_pem(), signer.certificate_pem());
        assert_eq!(again.sign(&envelope), signer.sign(&envelope));
    }

    #[test]
    fn topics_and_subscriptions() {
        let catalog: Arc<dyn Catalog> = Arc::new(MemoryCatalog::default());
        let topics = Topics::new(catalog.clone());
        let arn = |n: &str| TopicArn {
            region: "us-east-1".into(),
            account: "111122223333".into(),
            name: n.into(),
        };
        let topic = Topic {
            v: 1,
            display_name: String::new(),
            policy: None,
            delivery_policy: None,
            subscriptions_deleted: 0,
        };
        for n in ["b", "a", "c"] {
            catalog
                .commit(&topics.put_changes(&arn(n), &topic))
                .unwrap();
        }
        let (page, more) = topics.list("111122223333", "us-east-1", None, 2).unwrap();
        assert_eq!((page.len(), more), (2, true));
        let (rest, more) = topics
            .list("111122223333", "us-east-1", Some("b"), 2)
            .unwrap();
        assert_eq!((rest[0].name.as_str(), more), ("c", false));
        assert!(topics
            .list("111122223333", "eu-west-1", None, 9)
            .unwrap()
            .0
            .is_empty());

        let (sub, ops) = topics
            .subscribe(&arn("a"), "111122223333", "http", "http://127.0.0.1:1/")
            .unwrap();
        catalog.commit(&ops).unwrap();
        let (same, ops) = topics
            .subscribe(&arn("a"), "111122223333", "http", "http://127.0.0.1:1/")
            .unwrap();
        assert!(ops.is_empty());
        assert_eq!(same.arn(), sub.arn());
        assert_eq!(sub.listed_arn(), "PendingConfirmation");
        assert!(matches!(
            topics.subscribe(&arn("zz"), "111122223333", "http", "http://x/"),
            Err(SnsError::NotFound(_))
        ));
        assert!(topics.confirm(&arn("a"), "nope").is_err());
        let (confirmed, ops) = topics.confirm(&arn("a"), &sub.subscription.token).unwrap();
        catalog.commit(&ops).unwrap();
        assert_eq!(confirmed.listed_arn(), sub.arn());
        let (all, _) = topics
            .subscriptions("111122223333", "us-east-1", None, None, 10)
            .unwrap();
        assert_eq!(all.len(), 1);
        assert!(all[0].subscription.confirmed);

        catalog
            .commit(&topics.unsubscribe_changes(&sub.arn()).unwrap())
            .unwrap();
        assert_eq!(topics.get(&arn("a")).unwrap().subscriptions_deleted, 1);
        assert!(matches!(
            topics.unsubscribe_changes(&sub.arn()),
            Err(SnsError::NotFound(_))
        ));
        catalog
            .commit(&topics.delete_changes(&arn("a")).unwrap())
            .unwrap();
        assert!(topics.delete_changes(&arn("a")).unwrap().is_empty());
        assert!(matches!(topics.get(&arn("a")), Err(SnsError::NotFound(_))));
    }

    #[test]
    fn attributes() {
        let mut topic = Topic {
            v: 1,
            display_name: String::new(),
            policy: None,
            delivery_policy: None,
            subscriptions_deleted: 0,
        };
        TopicAttribute::parse("DisplayName")
            .unwrap()
            .apply(&mut topic, "Ops")
            .unwrap();
        assert_eq!(topic.display_name, "Ops");
        assert!(TopicAttribute::parse("Policy")
            .unwrap()
            .apply(&mut topic, "not json")
            .is_err());
        assert!(TopicAttribute::parse("Owner").is_err());
        let arn = TopicArn::parse("arn:aws:sns:us-east-1:111122223333:ops", "TopicArn").unwrap();
        let policy: serde_json::Value =
            serde_json::from_str(&topic.effective_policy(&arn)).unwrap();
        assert_eq!(policy["Statement"][0]["Resource"], arn.arn());
    }
}
