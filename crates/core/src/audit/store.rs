//! The audit store: records become durable through the WAL before the caller
//! gets an answer, and LookupEvents reads them back (`spec/cloudtrail.md` §4).
//!
//! # WAL payload (version 1)
//! `u8 version=1 | JSON {"r": <record>}`. Later versions will add the state
//! changes that commit together with their record.
//!
//! # Invariants
//! - A record is in the index only after its WAL append returned (so LookupEvents
//!   never shows a record that a crash could lose).
//! - The index orders events by `(eventTime seconds, eventID)`; LookupEvents walks
//!   it newest first from a cursor, so new events never cause skips or duplicates.
//! - Events older than 90 days are never returned and are pruned.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use trailwatch_storage::{Wal, WalError, WalOptions};
use trailwatch_types::{Clock, Timestamp};

use super::classify::EventCategory;
use super::record::CallRecord;
use crate::token::{filters_hash, TokenCodec};

const PAYLOAD_VERSION: u8 = 1;
/// CloudTrail event history window.
pub const HISTORY_SECS: i64 = 90 * 24 * 3600;
/// Lifetime of a LookupEvents token.
const TOKEN_MAX_AGE_SECS: i64 = 24 * 3600;

/// Storage failures of the audit store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The WAL failed.
    #[error("audit log storage: {0}")]
    Wal(#[from] WalError),
    /// A WAL payload that does not decode.
    #[error("audit log record {seq} does not decode: {message}")]
    Decode {
        /// Sequence number.
        seq: u64,
        /// Why.
        message: String,
    },
}

/// One stored record with the fields LookupEvents matches on.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// `eventTime`, whole seconds.
    pub time_secs: i64,
    /// `eventID`.
    pub event_id: String,
    /// `eventName`.
    pub event_name: String,
    /// `eventSource`.
    pub event_source: String,
    /// `readOnly`.
    pub read_only: bool,
    /// `eventCategory`.
    pub category: EventCategory,
    /// `userIdentity.accessKeyId`.
    pub access_key_id: Option<String>,
    /// Lookup user name (§4).
    pub username: Option<String>,
    /// `(type, friendly name)` per resource.
    pub resources: Vec<(Option<String>, String)>,
    /// The complete record as JSON text.
    pub json: String,
}

impl StoredEvent {
    fn from_record(record: &serde_json::Value) -> Option<(String, String, StoredEvent)> {
        let text = |k: &str| record.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let time = Timestamp::parse_iso8601(&text("eventTime")?).ok()?;
        let identity = record.get("userIdentity");
        let id_text = |k: &str| {
            identity
                .and_then(|i| i.get(k))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let username = match id_text("type").as_deref() {
            Some("Root") => Some("root".to_owned()),
            Some("IAMUser") | Some("FederatedUser") => id_text("userName"),
            Some("AssumedRole") => {
                id_text("arn").and_then(|a| a.rsplit('/').next().map(str::to_owned))
            }
            _ => id_text("principalId"),
        };
        let resources = record
            .get("resources")
            .and_then(|r| r.as_array())
            .map(|items| {
                items
                    .iter()
                    .filter_map(|r| {
                        let arn = r.get("ARN")?.as_str()?;
                        let kind = r.get("type").and_then(|t| t.as_str()).map(str::to_owned);
                        Some((kind, friendly_name(arn)))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let event = StoredEvent {
            time_secs: time.secs(),
            event_id: text("eventID")?,
            event_name: text("eventName")?,
            event_source: text("eventSource")?,
            read_only: record
                .get("readOnly")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            category: EventCategory::parse(&text("eventCategory")?)?,
            access_key_id: id_text("accessKeyId").filter(|k| !k.is_empty()),
            username,
            resources,
            json: serde_json::to_string(record).ok()?,
        };
        Some((text("recipientAccountId")?, text("awsRegion")?, event))
    }
}

/// The friendly name in an ARN: what follows the resource-type prefix
/// (`trail/`, `alarm:`, `log-group:` …), which may itself contain `/`.
fn friendly_name(arn: &str) -> String {
    let resource = arn.splitn(6, ':').nth(5).unwrap_or(arn);
    if let Some((_, stream)) = resource.split_once(":log-stream:") {
        return stream.to_owned();
    }
    for prefix in [
        "log-group:",
        "alarm:",
        "trail/",
        "dashboard/",
        "channel/",
        "eventdatastore/",
    ] {
        if let Some(rest) = resource.strip_prefix(prefix) {
            return rest.strip_suffix(":*").unwrap_or(rest).to_owned();
        }
    }
    resource
        .rsplit(['/', ':'])
        .next()
        .unwrap_or(resource)
        .to_owned()
}

type EventKey = (i64, String);

#[derive(Default)]
struct Index {
    /// Per (account, region): management and insight events by key.
    lookup: HashMap<(String, String), BTreeMap<EventKey, Arc<StoredEvent>>>,
    /// Count of data events recorded (they never reach LookupEvents).
    data_events: u64,
}

impl Index {
    fn insert(&mut self, account: String, region: String, event: StoredEvent) {
        if event.category == EventCategory::Data {
            self.data_events += 1;
            return;
        }
        let key = (event.time_secs, event.event_id.clone());
        self.lookup
            .entry((account, region))
            .or_default()
            .insert(key, Arc::new(event));
    }
}

/// The one attribute LookupEvents may filter on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LookupAttribute {
    /// `eventID`.
    EventId(String),
    /// `eventName`.
    EventName(String),
    /// `readOnly`.
    ReadOnly(bool),
    /// Lookup user name.
    Username(String),
    /// Any resource type.
    ResourceType(String),
    /// Any resource name.
    ResourceName(String),
    /// `eventSource`.
    EventSource(String),
    /// `userIdentity.accessKeyId`.
    AccessKeyId(String),
}

impl LookupAttribute {
    /// Builds an attribute from its wire key and value, validating both.
    pub fn parse(key: &str, value: &str) -> Result<Self, LookupError> {
        if value.is_empty() || value.chars().count() > 2000 {
            return Err(LookupError::InvalidLookupAttributes(format!(
                "The value of the lookup attribute {key} must be between 1 and 2000 characters."
            )));
        }
        let v = value.to_owned();
        Ok(match key {
            "EventId" => Self::EventId(v),
            "EventName" => Self::EventName(v),
            "ReadOnly" => match value {
                "true" => Self::ReadOnly(true),
                "false" => Self::ReadOnly(false),
                _ => {
                    return Err(LookupError::InvalidLookupAttributes(
                        "The value of the ReadOnly lookup attribute must be true or false.".to_owned(),
                    ))
                }
            },
            "Username" => Self::Username(v),
            "ResourceType" => Self::ResourceType(v),
            "ResourceName" => Self::ResourceName(v),
            "EventSource" => Self::EventSource(v),
            "AccessKeyId" => Self::AccessKeyId(v),
            other => {
                return Err(LookupError::InvalidLookupAttributes(format!(
                    "{other} is not a valid lookup attribute key. Valid keys are EventId, EventName, ReadOnly, Username, ResourceType, ResourceName, EventSource, AccessKeyId."
                )))
            }
        })
    }

    fn matches(&self, e: &StoredEvent) -> bool {
        match self {
            Self::EventId(v) => &e.event_id == v,
            Self::EventName(v) => &e.event_name == v,
            Self::ReadOnly(v) => e.read_only == *v,
            Self::Username(v) => e.username.as_ref() == Some(v),
            Self::ResourceType(v) => e.resources.iter().any(|(t, _)| t.as_ref() == Some(v)),
            Self::ResourceName(v) => e.resources.iter().any(|(_, n)| n == v),
            Self::EventSource(v) => &e.event_source == v,
            Self::AccessKeyId(v) => e.access_key_id.as_ref() == Some(v),
        }
    }

    fn allowed_for_insights(&self) -> bool {
        matches!(
            self,
            Self::EventId(_) | Self::EventName(_) | Self::EventSource(_)
        )
    }
}

/// A validated LookupEvents request.
#[derive(Debug, Clone, Default)]
pub struct LookupQuery {
    /// Caller's account.
    pub account_id: String,
    /// Region the request was signed for.
    pub region: String,
    /// At most one attribute.
    pub attribute: Option<LookupAttribute>,
    /// Inclusive lower bound; default 90 days ago.
    pub start: Option<Timestamp>,
    /// Inclusive upper bound; default now.
    pub end: Option<Timestamp>,
    /// `EventCategory=insight`.
    pub insight: bool,
    /// 1–50, default 50.
    pub max_results: Option<i64>,
    /// Token from the previous page.
    pub next_token: Option<String>,
}

/// LookupEvents failures (each is a modelled CloudTrail error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// Bad lookup attributes.
    #[error("{0}")]
    InvalidLookupAttributes(String),
    /// Start after end.
    #[error("Start time must be before end time.")]
    InvalidTimeRange,
    /// MaxResults outside 1–50.
    #[error("MaxResults must be between 1 and 50.")]
    InvalidMaxResults,
    /// Forged, expired or mismatched token.
    #[error("Invalid NextToken.")]
    InvalidNextToken,
    /// EventCategory other than `insight`.
    #[error("The event category {0} is not valid. The only valid value is insight.")]
    InvalidEventCategory(String),
}

/// One page of LookupEvents.
#[derive(Debug, Clone)]
pub struct LookupPage {
    /// Newest first.
    pub events: Vec<Arc<StoredEvent>>,
    /// Present iff more events exist.
    pub next_token: Option<String>,
}

/// Durable store of audit records.
pub struct AuditStore {
    wal: Wal,
    index: RwLock<Index>,
    clock: Arc<dyn Clock>,
    tokens: TokenCodec,
}

impl std::fmt::Debug for AuditStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditStore").finish_non_exhaustive()
    }
}

impl AuditStore {
    /// Opens the store in `dir`, replaying its WAL.
    pub fn open(
        dir: &Path,
        clock: Arc<dyn Clock>,
        tokens: TokenCodec,
        wal_options: WalOptions,
    ) -> Result<Self, AuditError> {
        let (wal, recovery) = Wal::open(&dir.join("wal"), wal_options)?;
        if let Some(torn) = &recovery.torn_tail {
            tracing::warn!(file = %torn.file.display(), offset = torn.offset, bytes_dropped = torn.bytes_dropped, "recovered audit log with a torn tail cut");
        }
        let mut index = Index::default();
        for (seq, payload) in &recovery.records {
            let record = decode_payload(*seq, payload)?;
            if let Some((account, region, event)) = StoredEvent::from_record(&record) {
                index.insert(account, region, event);
            }
        }
        tracing::info!(records = recovery.records.len(), "audit log recovered");
        let store = Self {
            wal,
            index: RwLock::new(index),
            clock,
            tokens,
        };
        store.prune();
        Ok(store)
    }

    /// Makes `record` durable, then visible. Returns only after the fsync.
    pub async fn append(&self, record: &CallRecord) -> Result<(), AuditError> {
        let json = record.to_json();
        let mut payload = vec![PAYLOAD_VERSION];
        serde_json::to_writer(&mut payload, &serde_json::json!({ "r": json })).map_err(|e| {
            AuditError::Decode {
                seq: 0,
                message: e.to_string(),
            }
        })?;
        self.wal.append(payload).await?;
        if let Some((account, region, event)) = StoredEvent::from_record(&json) {
            self.index
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(account, region, event);
        }
        Ok(())
    }

    /// Flushes and closes the WAL.
    pub async fn shutdown(&self) -> Result<(), AuditError> {
        Ok(self.wal.shutdown().await?)
    }

    /// Number of data events recorded since start (they are not looked up).
    pub fn data_event_count(&self) -> u64 {
        self.index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .data_events
    }

    /// Drops events older than the 90-day history window.
    pub fn prune(&self) {
        let oldest = self.clock.now().secs() - HISTORY_SECS;
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        for events in index.lookup.values_mut() {
            *events = events.split_off(&(oldest, String::new()));
        }
    }

    /// LookupEvents.
    pub fn lookup(&self, q: &LookupQuery) -> Result<LookupPage, LookupError> {
        let now = self.clock.now();
        let max_results = match q.max_results {
            None => 50,
            Some(n) if (1..=50).contains(&n) => n as usize,
            Some(_) => return Err(LookupError::InvalidMaxResults),
        };
        if let (Some(s), Some(e)) = (q.start, q.end) {
            if s > e {
                return Err(LookupError::InvalidTimeRange);
            }
        }
        if q.insight
            && q.attribute
                .as_ref()
                .is_some_and(|a| !a.allowed_for_insights())
        {
            return Err(LookupError::InvalidLookupAttributes(
                "With EventCategory insight, only the EventId, EventName and EventSource lookup attributes are allowed.".to_owned(),
            ));
        }
        let window_start = now.secs() - HISTORY_SECS;
        let start = q.start.map_or(window_start, |s| s.secs().max(window_start));
        let end = q.end.map_or(now.secs(), |e| e.secs());
        let filters = filters_hash(&[
            &q.account_id,
            &q.region,
            &serde_json::to_string(&q.attribute).unwrap_or_default(),
            &q.start.map(|t| t.millis().to_string()).unwrap_or_default(),
            &q.end.map(|t| t.millis().to_string()).unwrap_or_default(),
            if q.insight { "insight" } else { "" },
        ]);
        let cursor: Option<EventKey> = match &q.next_token {
            Some(token) => Some(
                self.tokens
                    .open(token, &filters, now, TOKEN_MAX_AGE_SECS)
                    .ok_or(LookupError::InvalidNextToken)?,
            ),
            None => None,
        };
        let wanted = if q.insight {
            EventCategory::Insight
        } else {
            EventCategory::Management
        };
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        let mut events = Vec::with_capacity(max_results);
        let mut more = false;
        if start <= end {
            if let Some(all) = index.lookup.get(&(q.account_id.clone(), q.region.clone())) {
                let lower = Bound::Included((start, String::new()));
                let upper = match cursor {
                    Some(c) => Bound::Excluded(c),
                    // eventIDs are lowercase UUIDs, so "~" sorts after every one of them.
                    None => Bound::Included((end, "~".to_owned())),
                };
                let matching = all.range((lower, upper)).rev().map(|(_, e)| e).filter(|e| {
                    e.time_secs <= end
                        && e.category == wanted
                        && q.attribute.as_ref().is_none_or(|a| a.matches(e))
                });
                for e in matching {
                    if events.len() == max_results {
                        more = true;
                        break;
                    }
                    events.push(e.clone());
                }
            }
        }
        let next_token = match (more, events.last()) {
            (true, Some(last)) => Some(self.tokens.issue(
                &filters,
                &(last.time_secs, last.event_id.clone()),
                now,
            )),
            _ => None,
        };
        Ok(LookupPage { events, next_token })
    }
}

fn decode_payload(seq: u64, payload: &[u8]) -> Result<serde_json::Value, AuditError> {
    let Some((&version, body)) = payload.split_first() else {
        return Err(AuditError::Decode {
            seq,
            message: "empty payload".to_owned(),
        });
    };
    if version != PAYLOAD_VERSION {
        return Err(AuditError::Decode {
            seq,
            message: format!("unknown payload version {version}"),
        });
    }
    let mut v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| AuditError::Decode {
            seq,
            message: e.to_string(),
        })?;
    v.get_mut("r")
        .map(serde_json::Value::take)
        .ok_or_else(|| AuditError::Decode {
            seq,
            message: "missing record".to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::Resource;
    use trailwatch_types::ManualClock;

    fn record(clock: &ManualClock, i: usize, name: &str, category: EventCategory) -> CallRecord {
        CallRecord {
            event_time: clock.now(),
            event_source: "monitoring.amazonaws.com".into(),
            event_name: name.into(),
            aws_region: "us-east-1".into(),
            source_ip_address: "127.0.0.1".into(),
            user_agent: None,
            user_identity: serde_json::json!({"type": "Root", "accessKeyId": format!("AK{}", i % 2)}),
            error: None,
            request_parameters: None,
            response_elements: None,
            additional_event_data: None,
            request_id: format!("req-{i}"),
            event_id: format!("{i:08x}-0000-4000-8000-000000000000"),
            read_only: i.is_multiple_of(3),
            resources: vec![Resource {
                arn: format!("arn:aws:cloudwatch:us-east-1:123456789012:alarm:a{i}"),
                account_id: "123456789012".into(),
                resource_type: "AWS::CloudWatch::Alarm".into(),
                name: format!("a{i}"),
            }],
            category,
            api_version: None,
            recipient_account_id: "123456789012".into(),
        }
    }

    fn open(dir: &Path, clock: Arc<ManualClock>) -> AuditStore {
        AuditStore::open(
            dir,
            clock,
            TokenCodec::new(b"k".to_vec()),
            WalOptions::default(),
        )
        .unwrap()
    }

    fn query() -> LookupQuery {
        LookupQuery {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            ..Default::default()
        }
    }

    fn collect_all(store: &AuditStore, mut q: LookupQuery) -> Vec<String> {
        let mut ids = Vec::new();
        loop {
            let page = store.lookup(&q).unwrap();
            ids.extend(page.events.iter().map(|e| e.event_id.clone()));
            match page.next_token {
                Some(t) => q.next_token = Some(t),
                None => return ids,
            }
        }
    }

    #[tokio::test]
    async fn pages_newest_first_across_restart() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(Timestamp::from_secs(1_767_225_600)));
        let store = open(dir.path(), clock.clone());
        for i in 0..30 {
            let category = if i % 5 == 4 {
                EventCategory::Data
            } else {
                EventCategory::Management
            };
            store
                .append(&record(&clock, i, &format!("Op{}", i % 4), category))
                .await
                .unwrap();
            clock.advance_millis(400);
        }
        store.shutdown().await.unwrap();
        drop(store);
        let store = open(dir.path(), clock.clone());
        let management: Vec<usize> = (0..30).filter(|i| i % 5 != 4).collect();
        let mut expected: Vec<(i64, String)> = management
            .iter()
            .map(|&i| {
                (
                    1_767_225_600 + (i as i64 * 400) / 1000,
                    format!("{i:08x}-0000-4000-8000-000000000000"),
                )
            })
            .collect();
        expected.sort();
        expected.reverse();
        let expected_ids: Vec<String> = expected.into_iter().map(|(_, id)| id).collect();
        let q = LookupQuery {
            max_results: Some(7),
            ..query()
        };
        assert_eq!(collect_all(&store, q.clone()), expected_ids);
        // Events that arrive between pages do not shift the cursor.
        let first = store.lookup(&q).unwrap();
        store
            .append(&record(&clock, 99, "Late", EventCategory::Management))
            .await
            .unwrap();
        let second = store
            .lookup(&LookupQuery {
                next_token: first.next_token.clone(),
                ..q.clone()
            })
            .unwrap();
        assert_eq!(second.events[0].event_id, expected_ids[7]);
        // A token is bound to its filters.
        let other = LookupQuery {
            next_token: first.next_token,
            attribute: Some(LookupAttribute::EventName("Op1".into())),
            ..q
        };
        assert_eq!(
            store.lookup(&other).unwrap_err(),
            LookupError::InvalidNextToken
        );
    }

    #[tokio::test]
    async fn attributes_time_ranges_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(Timestamp::from_secs(1_767_225_600)));
        let store = open(dir.path(), clock.clone());
        for i in 0..12 {
            store
                .append(&record(
                    &clock,
                    i,
                    &format!("Op{}", i % 4),
                    EventCategory::Management,
                ))
                .await
                .unwrap();
            clock.advance_millis(1000);
        }
        let by = |a: LookupAttribute| {
            collect_all(
                &store,
                LookupQuery {
                    attribute: Some(a),
                    ..query()
                },
            )
            .len()
        };
        assert_eq!(by(LookupAttribute::EventName("Op1".into())), 3);
        assert_eq!(by(LookupAttribute::ReadOnly(true)), 4);
        assert_eq!(by(LookupAttribute::AccessKeyId("AK1".into())), 6);
        assert_eq!(by(LookupAttribute::ResourceName("a7".into())), 1);
        assert_eq!(
            by(LookupAttribute::ResourceType(
                "AWS::CloudWatch::Alarm".into()
            )),
            12
        );
        assert_eq!(by(LookupAttribute::Username("root".into())), 12);
        assert_eq!(
            by(LookupAttribute::EventSource(
                "monitoring.amazonaws.com".into()
            )),
            12
        );
        assert_eq!(
            by(LookupAttribute::EventId(
                "00000003-0000-4000-8000-000000000000".into()
            )),
            1
        );
        let ranged = LookupQuery {
            start: Some(Timestamp::from_secs(1_767_225_602)),
            end: Some(Timestamp::from_secs(1_767_225_604)),
            ..query()
        };
        assert_eq!(collect_all(&store, ranged).len(), 3);
        let other_region = LookupQuery {
            region: "eu-west-1".into(),
            ..query()
        };
        assert!(collect_all(&store, other_region).is_empty());
        assert!(collect_all(
            &store,
            LookupQuery {
                insight: true,
                ..query()
            }
        )
        .is_empty());
        assert_eq!(
            store
                .lookup(&LookupQuery {
                    max_results: Some(51),
                    ..query()
                })
                .unwrap_err(),
            LookupError::InvalidMaxResults
        );
        assert_eq!(
            store
                .lookup(&LookupQuery {
                    max_results: Some(0),
                    ..query()
                })
                .unwrap_err(),
            LookupError::InvalidMaxResults
        );
        let backwards = LookupQuery {
            start: Some(Timestamp::from_secs(10)),
            end: Some(Timestamp::from_secs(5)),
            ..query()
        };
        assert_eq!(
            store.lookup(&backwards).unwrap_err(),
            LookupError::InvalidTimeRange
        );
        assert!(LookupAttribute::parse("ReadOnly", "yes").is_err());
        assert!(LookupAttribute::parse("Bogus", "x").is_err());
        assert!(LookupAttribute::parse("EventName", "").is_err());
        // 90 days later everything has aged out.
        clock.advance_millis(HISTORY_SECS * 1000 + 60_000);
        assert!(collect_all(&store, query()).is_empty());
        store.prune();
    }

    #[test]
    fn friendly_names() {
        assert_eq!(
            friendly_name("arn:aws:cloudtrail:us-east-1:123456789012:trail/audit-main"),
            "audit-main"
        );
        assert_eq!(
            friendly_name("arn:aws:cloudwatch:us-east-1:123456789012:alarm:cpu-high"),
            "cpu-high"
        );
        assert_eq!(
            friendly_name("arn:aws:logs:us-east-1:123456789012:log-group:/app/web:*"),
            "/app/web"
        );
        assert_eq!(
            friendly_name("arn:aws:sns:us-east-1:123456789012:ops"),
            "ops"
        );
    }
}
