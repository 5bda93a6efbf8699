//! The audit store: records become durable through the WAL before the caller
//! gets an answer, move in the background into immutable Parquet segments in
//! the object store, and LookupEvents reads them back (`spec/cloudtrail.md` §4).
//!
//! # WAL payload (version 1)
//! `u8 version=1 | JSON {"r": <record>, "c": [{"t": table, "k": key, "v": base64 | null}, …]}`.
//! `c` (optional) holds the catalog changes of a state-changing call: they
//! commit in the same WAL entry as the call's record, so a change never exists
//! without its record, and a record that cannot be written changes nothing.
//!
//! # Segments
//! `audit/category={Management|Data|Insight}/account={id}/region={r}/date={YYYY-MM-DD}/{min_seq:020}-{max_seq:020}.parquet`
//! with columns `seq, event_time_ms, event_id, event_name, event_source,
//! read_only, access_key_id, username, resources (JSON [[type, name], …]),
//! record (the full JSON record)`, sorted by (eventTime, eventID). The catalog
//! table `audit_segments` lists them; `wal/audit` holds the highest WAL
//! sequence number they cover (the checkpoint).
//!
//! # Invariants
//! - A record is in the index only after its WAL append returned (so LookupEvents
//!   never shows a record that a crash could lose).
//! - Changes are applied to the catalog only after their entry is durable, and
//!   re-applied (idempotently, in WAL order) by recovery for entries above the
//!   checkpoint. A flush rotates the WAL only while no commit is between its
//!   append and its apply, so the checkpoint never passes an unapplied change.
//! - A flush reads records back from closed WAL files, never from memory, writes
//!   segments durably, commits segments and checkpoint in one catalog batch, and
//!   only then deletes the WAL files the checkpoint covers. Recovery loads the
//!   segments and replays WAL records above the checkpoint: every record is in
//!   exactly one of the two.
//! - The index orders events by `(eventTime seconds, eventID)`; LookupEvents walks
//!   it newest first from a cursor, so new events never cause skips or duplicates.
//! - Events older than 90 days are never returned; their day partitions are
//!   dropped whole.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use arrow_array::{
    Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema};
use serde::{Deserialize, Serialize};
use trailwatch_storage::{
    segment, Catalog, CatalogError, CatalogOp, ObjectError, Objects, SegmentError, SegmentMeta,
    Wal, WalError, WalOptions,
};
use trailwatch_types::{Clock, Timestamp};

use super::classify::EventCategory;
use super::record::CallRecord;
use crate::token::{filters_hash, TokenCodec};

const PAYLOAD_VERSION: u8 = 1;
/// CloudTrail event history window.
pub const HISTORY_SECS: i64 = 90 * 24 * 3600;
/// Lifetime of a LookupEvents token.
const TOKEN_MAX_AGE_SECS: i64 = 24 * 3600;
const SEGMENTS_TABLE: &str = "audit_segments";
const CHECKPOINT_TABLE: &str = "wal";
const CHECKPOINT_KEY: &str = "audit";
/// Key (in the checkpoint table) of the trail feed's durable cursor.
const FEED_KEY: &str = "trail-feed";
/// A hole in the feed (a record whose WAL append finished after a later one's)
/// is waited for this long before the feed moves past it.
const FEED_GAP_WAIT_MS: i64 = 5_000;
/// Opened segment readers kept for LookupEvents.
const READER_CACHE_ENTRIES: usize = 256;
const DAY_SECS: i64 = 24 * 3600;

/// Storage failures of the audit store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The WAL failed.
    #[error("audit log storage: {0}")]
    Wal(#[from] WalError),
    /// The catalog failed.
    #[error("audit catalog: {0}")]
    Catalog(#[from] CatalogError),
    /// The object store failed.
    #[error("audit segments: {0}")]
    Objects(#[from] ObjectError),
    /// A segment could not be encoded or decoded.
    #[error("audit segment format: {0}")]
    Segment(#[from] SegmentError),
    /// A WAL payload or catalog value that does not decode.
    #[error("audit log entry {seq} does not decode: {message}")]
    Decode {
        /// Sequence number (0 for catalog values).
        seq: u64,
        /// Why.
        message: String,
    },
}

/// Tuning of the audit store.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// WAL tuning.
    pub wal: WalOptions,
    /// Flush to segments once this many records wait in the WAL.
    pub flush_rows: u64,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            wal: WalOptions::default(),
            flush_rows: 100_000,
            row_group_rows: 8192,
        }
    }
}

/// Where a record's JSON lives.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// Still only in the WAL; kept in memory.
    Inline(Arc<str>),
    /// Row `row` of a segment.
    Segment {
        /// Object path.
        path: Arc<str>,
        /// Row index in the segment.
        row: u32,
    },
}

/// One stored record with the fields LookupEvents matches on.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// WAL sequence number.
    pub seq: u64,
    /// `eventTime`, whole seconds.
    pub time_secs: i64,
    /// `eventID`.
    pub event_id: String,
    /// `eventName` (interned).
    pub event_name: Arc<str>,
    /// `eventSource` (interned).
    pub event_source: Arc<str>,
    /// `readOnly`.
    pub read_only: bool,
    /// `eventCategory`.
    pub category: EventCategory,
    /// `userIdentity.accessKeyId` (interned).
    pub access_key_id: Option<Arc<str>>,
    /// Lookup user name (§4, interned).
    pub username: Option<Arc<str>>,
    /// `(type, friendly name)` per resource (interned).
    pub resources: Vec<(Option<Arc<str>>, Arc<str>)>,
    /// Where the complete record is.
    pub body: Body,
}

/// Where a stored event belongs: (category, account, region).
type Placement = (EventCategory, String, String);

impl StoredEvent {
    fn from_record(
        seq: u64,
        record: &serde_json::Value,
        json: Arc<str>,
    ) -> Option<(Placement, StoredEvent)> {
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
                        let kind = r.get("type").and_then(|t| t.as_str()).map(Arc::from);
                        Some((kind, Arc::from(friendly_name(arn))))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let category = EventCategory::parse(&text("eventCategory")?)?;
        // Insights records name their API inside `insightDetails` (§7.3),
        // external audit events inside `eventData` (§6.4).
        let detail = |k: &str| {
            ["insightDetails", "eventData"].iter().find_map(|outer| {
                record
                    .get(*outer)
                    .and_then(|d| d.get(k))
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            })
        };
        let event = StoredEvent {
            seq,
            time_secs: time.secs(),
            event_id: text("eventID")?,
            event_name: Arc::from(text("eventName").or_else(|| detail("eventName"))?),
            event_source: Arc::from(text("eventSource").or_else(|| detail("eventSource"))?),
            read_only: record
                .get("readOnly")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            category,
            access_key_id: id_text("accessKeyId")
                .filter(|k| !k.is_empty())
                .map(Arc::from),
            username: username.map(Arc::from),
            resources,
            body: Body::Inline(json),
        };
        Some((
            (category, text("recipientAccountId")?, text("awsRegion")?),
            event,
        ))
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

/// Sort key of an event: (eventTime seconds, eventID as a number). Event ids are
/// lowercase UUIDs, whose numeric order equals their text order.
type EventKey = (i64, u128);

/// The numeric form of an event id; ids that are not UUIDs get a stable hash.
fn id_number(event_id: &str) -> u128 {
    let hex: String = event_id.chars().filter(|c| *c != '-').collect();
    match u128::from_str_radix(&hex, 16) {
        Ok(n) if hex.len() == 32 => n,
        _ => {
            // FNV-1a, widened: deterministic across restarts.
            let mut h: u128 = 0x6c62272e07bb014262b821756295c58d;
            for b in event_id.bytes() {
                h ^= u128::from(b);
                h = h.wrapping_mul(0x0000000001000000000000000000013B);
            }
            h
        }
    }
}

fn key_of(event: &StoredEvent) -> EventKey {
    (event.time_secs, id_number(&event.event_id))
}

/// An attribute value with a posting list. `ReadOnly` has none: half of all
/// events match either value, so scanning finds a page at once.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Posting {
    Name(Arc<str>),
    Source(Arc<str>),
    User(Arc<str>),
    Key(Arc<str>),
    ResourceType(Arc<str>),
    ResourceName(Arc<str>),
}

/// The events of one (account, region).
#[derive(Default)]
struct Partition {
    events: BTreeMap<EventKey, Arc<StoredEvent>>,
    /// Ascending keys of the events carrying each attribute value.
    postings: HashMap<Posting, Vec<EventKey>>,
    /// eventID → eventTime seconds.
    ids: HashMap<u128, i64>,
}

impl Partition {
    fn postings_of(event: &StoredEvent) -> Vec<Posting> {
        let mut out = vec![
            Posting::Name(event.event_name.clone()),
            Posting::Source(event.event_source.clone()),
        ];
        if let Some(u) = &event.username {
            out.push(Posting::User(u.clone()));
        }
        if let Some(k) = &event.access_key_id {
            out.push(Posting::Key(k.clone()));
        }
        for (kind, name) in &event.resources {
            if let Some(kind) = kind {
                out.push(Posting::ResourceType(kind.clone()));
            }
            out.push(Posting::ResourceName(name.clone()));
        }
        out.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        out.dedup();
        out
    }

    fn insert(&mut self, event: StoredEvent) {
        let key = key_of(&event);
        for posting in Self::postings_of(&event) {
            let list = self.postings.entry(posting).or_default();
            // Events arrive nearly in time order: append, else insert in place.
            match list.last() {
                Some(last) if *last > key => {
                    let at = list.partition_point(|k| *k < key);
                    if list.get(at) != Some(&key) {
                        list.insert(at, key);
                    }
                }
                Some(last) if *last == key => {}
                _ => list.push(key),
            }
        }
        self.ids.insert(key.1, key.0);
        self.events.insert(key, Arc::new(event));
    }

    fn prune(&mut self, oldest: i64) {
        self.events = self.events.split_off(&(oldest, 0));
        self.postings.retain(|_, list| {
            let cut = list.partition_point(|k| k.0 < oldest);
            list.drain(..cut);
            !list.is_empty()
        });
        self.ids.retain(|_, time| *time >= oldest);
    }
}

/// Interned strings: the few distinct names, sources, users and keys are shared.
#[derive(Default)]
struct Interner {
    strings: std::collections::HashSet<Arc<str>>,
}

impl Interner {
    fn get(&mut self, s: &Arc<str>) -> Arc<str> {
        if let Some(found) = self.strings.get(s) {
            return found.clone();
        }
        self.strings.insert(s.clone());
        s.clone()
    }
}

#[derive(Default)]
struct Index {
    /// Per (account, region): management and insight events.
    lookup: HashMap<(String, String), Partition>,
    interner: Interner,
    /// Count of data events stored (they never reach LookupEvents).
    data_events: u64,
}

impl Index {
    fn insert(&mut self, partition: Placement, mut event: StoredEvent) {
        let (category, account, region) = partition;
        if !category.indexed() {
            self.data_events += 1;
            return;
        }
        event.event_name = self.interner.get(&event.event_name);
        event.event_source = self.interner.get(&event.event_source);
        event.username = event.username.as_ref().map(|u| self.interner.get(u));
        event.access_key_id = event.access_key_id.as_ref().map(|k| self.interner.get(k));
        for (kind, name) in &mut event.resources {
            *kind = kind.as_ref().map(|k| self.interner.get(k));
            *name = self.interner.get(name);
        }
        self.lookup
            .entry((account, region))
            .or_default()
            .insert(event);
    }

    /// Points an indexed event at its segment row, dropping the inline JSON.
    fn relocate(&mut self, account: &str, region: &str, key: &EventKey, path: &Arc<str>, row: u32) {
        let Some(partition) = self
            .lookup
            .get_mut(&(account.to_owned(), region.to_owned()))
        else {
            return;
        };
        if let Some(slot) = partition.events.get_mut(key) {
            let mut moved = (**slot).clone();
            moved.body = Body::Segment {
                path: path.clone(),
                row,
            };
            *slot = Arc::new(moved);
        }
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
            Self::EventName(v) => *e.event_name == **v,
            Self::ReadOnly(v) => e.read_only == *v,
            Self::Username(v) => e.username.as_deref() == Some(v.as_str()),
            Self::ResourceType(v) => e
                .resources
                .iter()
                .any(|(t, _)| t.as_deref() == Some(v.as_str())),
            Self::ResourceName(v) => e.resources.iter().any(|(_, n)| **n == **v),
            Self::EventSource(v) => *e.event_source == **v,
            Self::AccessKeyId(v) => e.access_key_id.as_deref() == Some(v.as_str()),
        }
    }

    /// The posting list that holds every match, when there is one.
    fn posting(&self) -> Option<Posting> {
        match self {
            Self::EventName(v) => Some(Posting::Name(Arc::from(v.as_str()))),
            Self::EventSource(v) => Some(Posting::Source(Arc::from(v.as_str()))),
            Self::Username(v) => Some(Posting::User(Arc::from(v.as_str()))),
            Self::AccessKeyId(v) => Some(Posting::Key(Arc::from(v.as_str()))),
            Self::ResourceType(v) => Some(Posting::ResourceType(Arc::from(v.as_str()))),
            Self::ResourceName(v) => Some(Posting::ResourceName(Arc::from(v.as_str()))),
            Self::EventId(_) | Self::ReadOnly(_) => None,
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
    /// Stored events could not be read (a server fault).
    #[error("stored events could not be read: {0}")]
    Storage(String),
}

/// An event found by LookupEvents, with its complete record.
#[derive(Debug, Clone)]
pub struct FoundEvent {
    /// The indexed fields.
    pub event: Arc<StoredEvent>,
    /// The complete record as JSON text.
    pub json: Arc<str>,
}

impl std::ops::Deref for FoundEvent {
    type Target = StoredEvent;
    fn deref(&self) -> &StoredEvent {
        &self.event
    }
}

/// One page of LookupEvents.
#[derive(Debug, Clone)]
pub struct LookupPage {
    /// Newest first.
    pub events: Vec<FoundEvent>,
    /// Present iff more events exist.
    pub next_token: Option<String>,
}

/// Durable store of audit records.
pub struct AuditStore {
    wal: Wal,
    catalog: Arc<dyn Catalog>,
    objects: Objects,
    index: RwLock<Index>,
    clock: Arc<dyn Clock>,
    tokens: TokenCodec,
    options: AuditOptions,
    /// Records appended since the last flush.
    unflushed: AtomicU64,
    /// One flush or prune at a time.
    maintenance: tokio::sync::Mutex<()>,
    /// Held (shared) by a commit from its WAL append to its catalog apply, and
    /// (exclusively) by a flush while it rotates the WAL.
    changes_gate: tokio::sync::RwLock<()>,
    /// Opened segments (footer and page index), for row reads.
    readers: Mutex<HashMap<Arc<str>, Arc<segment::SegmentReader>>>,
    /// Records not yet taken by trail delivery, by WAL sequence number.
    feed: Mutex<BTreeMap<u64, FeedEntry>>,
}

/// One record waiting in the trail feed.
#[derive(Debug, Clone)]
pub struct FeedEntry {
    /// The record's JSON text, as stored.
    pub json: Arc<str>,
    /// When the feed received it (the store's clock), epoch ms.
    pub seen_ms: i64,
}

/// One record on its way into a segment.
struct FlushRow {
    seq: u64,
    json: Arc<str>,
    event: StoredEvent,
}

impl std::fmt::Debug for AuditStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditStore").finish_non_exhaustive()
    }
}

fn segment_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("seq", DataType::UInt64, false),
        Field::new("event_time_ms", DataType::Int64, false),
        Field::new("event_id", DataType::Utf8, false),
        Field::new("event_name", DataType::Utf8, false),
        Field::new("event_source", DataType::Utf8, false),
        Field::new("read_only", DataType::Boolean, false),
        Field::new("access_key_id", DataType::Utf8, true),
        Field::new("username", DataType::Utf8, true),
        Field::new("resources", DataType::Utf8, false),
        Field::new("record", DataType::Utf8, false),
    ]))
}

/// Index columns: everything but `record`.
const INDEX_COLUMNS: [&str; 9] = [
    "seq",
    "event_time_ms",
    "event_id",
    "event_name",
    "event_source",
    "read_only",
    "access_key_id",
    "username",
    "resources",
];

fn column<'a, T: 'static>(
    batch: &'a RecordBatch,
    name: &str,
    path: &str,
) -> Result<&'a T, AuditError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| AuditError::Decode {
            seq: 0,
            message: format!("segment {path} lacks column {name}"),
        })
}

fn date_of(secs: i64) -> String {
    Timestamp::from_secs(secs).to_iso8601_seconds()[..10].to_owned()
}

#[derive(Serialize, Deserialize)]
struct Checkpoint {
    seq: u64,
}

/// The value of `key=` (`"category="`, `"account="`, …) in a segment's
/// partition path, empty when absent.
fn partition_value<'a>(partition: &'a str, key: &str) -> &'a str {
    partition
        .split(key)
        .nth(1)
        .and_then(|s| s.split('/').next())
        .unwrap_or("")
}

/// The sequence number stored under `key` of the checkpoint table (0 if none).
fn read_checkpoint(catalog: &dyn Catalog, key: &str) -> Result<u64, AuditError> {
    match catalog.get(CHECKPOINT_TABLE, key)? {
        Some(bytes) => Ok(serde_json::from_slice::<Checkpoint>(&bytes)
            .map_err(|e| AuditError::Decode {
                seq: 0,
                message: e.to_string(),
            })?
            .seq),
        None => Ok(0),
    }
}

impl AuditStore {
    /// Opens the store: segments from the catalog, then WAL records above the checkpoint.
    pub async fn open(
        dir: &Path,
        catalog: Arc<dyn Catalog>,
        objects: Objects,
        clock: Arc<dyn Clock>,
        tokens: TokenCodec,
        options: AuditOptions,
    ) -> Result<Self, AuditError> {
        let (wal, recovery) = Wal::open(&dir.join("wal"), options.wal.clone())?;
        let checkpoint = read_checkpoint(catalog.as_ref(), CHECKPOINT_KEY)?;
        let feed_cursor = read_checkpoint(catalog.as_ref(), FEED_KEY)?;
        let mut feed = BTreeMap::new();
        let opened_ms = clock.now().millis();
        let mut index = Index::default();
        let segments = catalog.list(SEGMENTS_TABLE, "")?;
        for (_, value) in &segments {
            let meta: SegmentMeta =
                serde_json::from_slice(value).map_err(|e| AuditError::Decode {
                    seq: 0,
                    message: e.to_string(),
                })?;
            load_segment_index(&objects, &meta, &mut index).await?;
            if meta.max_seq > feed_cursor {
                load_segment_feed(&objects, &meta, feed_cursor, opened_ms, &mut feed).await?;
            }
        }
        let mut replayed = 0u64;
        let mut changes = Vec::new();
        for (seq, payload) in &recovery.records {
            if *seq <= checkpoint {
                continue;
            }
            let (record, entry_changes) = decode_payload(*seq, payload)?;
            changes.extend(entry_changes);
            let json: Arc<str> = Arc::from(serde_json::to_string(&record).unwrap_or_default());
            if *seq > feed_cursor {
                feed.insert(
                    *seq,
                    FeedEntry {
                        json: json.clone(),
                        seen_ms: opened_ms,
                    },
                );
            }
            if let Some((partition, event)) = StoredEvent::from_record(*seq, &record, json) {
                index.insert(partition, event);
            }
            replayed += 1;
        }
        // Changes committed with their records, re-applied in WAL order: the
        // ones the catalog already has are rewritten with the same values.
        if !changes.is_empty() {
            catalog.commit(&changes)?;
        }
        tracing::info!(
            segments = segments.len(),
            replayed,
            changes = changes.len(),
            checkpoint,
            "audit log recovered"
        );
        Ok(Self {
            wal,
            catalog,
            objects,
            index: RwLock::new(index),
            clock,
            tokens,
            options,
            unflushed: AtomicU64::new(replayed),
            maintenance: tokio::sync::Mutex::new(()),
            changes_gate: tokio::sync::RwLock::new(()),
            readers: Mutex::new(HashMap::new()),
            feed: Mutex::new(feed),
        })
    }

    /// Opens the embedded-default store under `data_dir`: the SQLite catalog
    /// `catalog.db`, objects under `objects/`, the WAL under `audit/wal/`.
    pub async fn open_embedded(
        data_dir: &Path,
        clock: Arc<dyn Clock>,
        tokens: TokenCodec,
        options: AuditOptions,
    ) -> Result<Self, AuditError> {
        let catalog = Arc::new(trailwatch_storage::SqliteCatalog::open(
            &data_dir.join("catalog.db"),
        )?);
        let objects = Objects::local(&data_dir.join("objects"))?;
        Self::open(
            &data_dir.join("audit"),
            catalog,
            objects,
            clock,
            tokens,
            options,
        )
        .await
    }

    /// The object store segments go to.
    pub fn objects(&self) -> Objects {
        self.objects.clone()
    }

    /// The catalog the store commits changes into.
    pub fn catalog(&self) -> Arc<dyn Catalog> {
        self.catalog.clone()
    }

    /// Makes `record` durable, then visible. Returns only after the fsync.
    pub async fn append(&self, record: &CallRecord) -> Result<(), AuditError> {
        self.write_entry(record, &[]).await
    }

    /// Commits a state-changing call: its record and its catalog `changes` in one
    /// durable WAL entry, then applies the changes to the catalog. If the entry
    /// cannot be written, nothing changes and the error is returned. If the
    /// catalog refuses the changes afterwards, they are durable anyway and are
    /// applied by the next recovery; the error is returned (an in-doubt commit).
    pub async fn commit(
        &self,
        record: &CallRecord,
        changes: &[CatalogOp],
    ) -> Result<(), AuditError> {
        if changes.is_empty() {
            return self.write_entry(record, &[]).await;
        }
        let _in_commit = self.changes_gate.read().await;
        self.write_entry(record, changes).await?;
        let catalog = self.catalog.clone();
        let ops = changes.to_vec();
        tokio::task::spawn_blocking(move || catalog.commit(&ops))
            .await
            .map_err(|e| AuditError::Decode { seq: 0, message: format!("catalog task: {e}") })?
            .map_err(|e| {
                tracing::error!(error = %e, "catalog refused a committed change; recovery will apply it");
                AuditError::Catalog(e)
            })
    }

    /// Makes a record the server produced itself (an Insights event) durable,
    /// then visible, like a call's record.
    pub async fn append_json(&self, json: serde_json::Value) -> Result<(), AuditError> {
        self.write_json(json, &[]).await
    }

    async fn write_entry(
        &self,
        record: &CallRecord,
        changes: &[CatalogOp],
    ) -> Result<(), AuditError> {
        self.write_json(record.to_json(), changes).await
    }

    async fn write_json(
        &self,
        json: serde_json::Value,
        changes: &[CatalogOp],
    ) -> Result<(), AuditError> {
        let text = serde_json::to_string(&json).map_err(|e| AuditError::Decode {
            seq: 0,
            message: e.to_string(),
        })?;
        let mut payload = Vec::with_capacity(text.len() + 8);
        payload.push(PAYLOAD_VERSION);
        payload.extend_from_slice(b"{\"r\":");
        payload.extend_from_slice(text.as_bytes());
        if !changes.is_empty() {
            payload.extend_from_slice(b",\"c\":");
            let encoded: Vec<serde_json::Value> = changes.iter().map(encode_change).collect();
            serde_json::to_writer(&mut payload, &encoded).map_err(|e| AuditError::Decode {
                seq: 0,
                message: e.to_string(),
            })?;
        }
        payload.push(b'}');
        let seq = self.wal.append(payload).await?;
        let text: Arc<str> = Arc::from(text);
        self.feed.lock().unwrap_or_else(|p| p.into_inner()).insert(
            seq,
            FeedEntry {
                json: text.clone(),
                seen_ms: self.clock.now().millis(),
            },
        );
        if let Some((partition, event)) = StoredEvent::from_record(seq, &json, text) {
            self.index
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(partition, event);
        }
        self.unflushed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The records of the trail feed after `after`, in sequence order, at most
    /// `max`: only a gap-free run, so a record whose append is still finishing
    /// is never skipped (a hole older than a few seconds is a failed append and
    /// is passed over).
    pub fn feed_after(&self, after: u64, max: usize) -> Vec<(u64, FeedEntry)> {
        let now_ms = self.clock.now().millis();
        let feed = self.feed.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        let mut expected = after + 1;
        for (seq, entry) in feed.range(after + 1..) {
            if out.len() >= max {
                break;
            }
            if *seq != expected && now_ms - entry.seen_ms < FEED_GAP_WAIT_MS {
                break;
            }
            out.push((*seq, entry.clone()));
            expected = seq + 1;
        }
        out
    }

    /// Drops feed records through `seq` from memory (every reader has taken them).
    pub fn feed_forget(&self, seq: u64) {
        let mut feed = self.feed.lock().unwrap_or_else(|p| p.into_inner());
        let rest = feed.split_off(&(seq + 1));
        *feed = rest;
    }

    /// The catalog change that makes the feed start after `seq` at the next
    /// open: committed by trail delivery once everything through `seq` is delivered.
    pub fn feed_cursor_change(seq: u64) -> CatalogOp {
        CatalogOp::put(
            CHECKPOINT_TABLE,
            FEED_KEY,
            serde_json::to_vec(&Checkpoint { seq }).unwrap_or_default(),
        )
    }

    /// The feed's durable cursor (0 before the first delivery).
    pub fn feed_cursor(&self) -> Result<u64, AuditError> {
        read_checkpoint(self.catalog.as_ref(), FEED_KEY)
    }

    /// Whether enough records wait in the WAL to flush them.
    pub fn wants_flush(&self) -> bool {
        self.unflushed.load(Ordering::Relaxed) >= self.options.flush_rows
    }

    /// Moves every record in the WAL into segments; returns how many moved.
    pub async fn flush(&self) -> Result<u64, AuditError> {
        let _guard = self.maintenance.lock().await;
        let checkpoint = read_checkpoint(self.catalog.as_ref(), CHECKPOINT_KEY)?;
        let boundary = {
            // No commit is between its append and its apply while we rotate, so
            // every change below the boundary is already in the catalog.
            let _no_commit_in_flight = self.changes_gate.write().await;
            self.wal.rotate().await?
        };
        let records = self.wal.read_closed(checkpoint, boundary)?;
        if records.is_empty() {
            self.wal.remove_through(checkpoint)?;
            return Ok(0);
        }
        // (category, account, region, date) → rows.
        let mut groups: BTreeMap<(String, String, String, String), Vec<FlushRow>> = BTreeMap::new();
        let mut max_seq = checkpoint;
        for (seq, payload) in &records {
            max_seq = max_seq.max(*seq);
            let (record, _) = decode_payload(*seq, payload)?;
            let json: Arc<str> = Arc::from(serde_json::to_string(&record).unwrap_or_default());
            let Some(((category, account, region), event)) =
                StoredEvent::from_record(*seq, &record, json.clone())
            else {
                tracing::warn!(
                    seq,
                    "audit record without the indexed fields; kept out of segments"
                );
                continue;
            };
            let key = (
                category.as_str().to_owned(),
                account,
                region,
                date_of(event.time_secs),
            );
            groups.entry(key).or_default().push(FlushRow {
                seq: *seq,
                json,
                event,
            });
        }
        let mut ops = Vec::new();
        let mut relocations = Vec::new();
        let moved = records.len() as u64;
        for ((category, account, region, date), mut rows) in groups {
            rows.sort_by(|a, b| {
                (a.event.time_secs, &a.event.event_id).cmp(&(b.event.time_secs, &b.event.event_id))
            });
            let partition =
                format!("audit/category={category}/account={account}/region={region}/date={date}/");
            let min_seq = rows.iter().map(|r| r.seq).min().unwrap_or(0);
            let max_row_seq = rows.iter().map(|r| r.seq).max().unwrap_or(0);
            let path = format!("{partition}{min_seq:020}-{max_row_seq:020}.parquet");
            let batch = build_batch(&rows)?;
            let bytes =
                segment::encode(&batch, self.options.row_group_rows, &["event_id", "record"])?;
            let meta = SegmentMeta {
                path: path.clone(),
                partition,
                rows: rows.len() as u64,
                bytes: bytes.len() as u64,
                min_seq,
                max_seq: max_row_seq,
                min_time_ms: rows.first().map_or(0, |r| r.event.time_secs * 1000),
                max_time_ms: rows.last().map_or(0, |r| r.event.time_secs * 1000),
            };
            self.objects
                .put_durable(&path, bytes::Bytes::from(bytes))
                .await?;
            ops.push(CatalogOp::put(
                SEGMENTS_TABLE,
                path.clone(),
                serde_json::to_vec(&meta).unwrap_or_default(),
            ));
            let shared: Arc<str> = Arc::from(path);
            for (row, FlushRow { event, .. }) in rows.iter().enumerate() {
                if event.category.indexed() {
                    relocations.push((
                        account.clone(),
                        region.clone(),
                        key_of(event),
                        shared.clone(),
                        row as u32,
                    ));
                }
            }
        }
        ops.push(CatalogOp::put(
            CHECKPOINT_TABLE,
            CHECKPOINT_KEY,
            serde_json::to_vec(&Checkpoint { seq: max_seq }).unwrap_or_default(),
        ));
        self.catalog.commit(&ops)?;
        self.wal.remove_through(max_seq)?;
        {
            let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
            for (account, region, key, path, row) in &relocations {
                index.relocate(account, region, key, path, *row);
            }
        }
        self.unflushed.fetch_sub(
            moved.min(self.unflushed.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        tracing::info!(
            records = moved,
            segments = ops.len() - 1,
            checkpoint = max_seq,
            "flushed audit records to segments"
        );
        Ok(moved)
    }

    /// Flushes, then fsyncs and closes the WAL.
    pub async fn shutdown(&self) -> Result<(), AuditError> {
        let flushed = self.flush().await;
        let closed = self.wal.shutdown().await;
        flushed?;
        Ok(closed?)
    }

    /// The records of `categories` for `account` (in `regions`, or all), as
    /// stored: what CloudTrail Lake queries read. Flushes the WAL first, so
    /// every record is in a segment.
    pub async fn stored_records(
        &self,
        categories: &[EventCategory],
        account: &str,
        regions: Option<&[String]>,
    ) -> Result<Vec<Arc<str>>, AuditError> {
        self.flush().await?;
        let mut out = Vec::new();
        for (_, value) in self.catalog.list(SEGMENTS_TABLE, "")? {
            let Ok(meta) = serde_json::from_slice::<SegmentMeta>(&value) else {
                continue;
            };
            let part = |key: &str| partition_value(&meta.partition, key);
            let category = EventCategory::parse(part("category="));
            if !category.is_some_and(|c| categories.contains(&c))
                || part("account=") != account
                || regions.is_some_and(|r| !r.iter().any(|x| x == part("region=")))
            {
                continue;
            }
            let bytes = self.objects.get(&meta.path).await?;
            let batches = segment::decode(&meta.path, bytes, Some(&["record"]))?;
            for batch in &batches {
                let record = column::<StringArray>(batch, "record", &meta.path)?;
                for i in 0..batch.num_rows() {
                    out.push(Arc::from(record.value(i)));
                }
            }
        }
        Ok(out)
    }

    /// Number of data events stored (they are not looked up).
    pub fn data_event_count(&self) -> u64 {
        self.index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .data_events
    }

    /// Drops events older than the 90-day history window, and whole day
    /// partitions of segments once the entire day is older than the window.
    pub async fn prune(&self) -> Result<usize, AuditError> {
        let _guard = self.maintenance.lock().await;
        let oldest = self.clock.now().secs() - HISTORY_SECS;
        {
            let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
            for partition in index.lookup.values_mut() {
                partition.prune(oldest);
            }
        }
        // A day partition expires when its last second is older than the window:
        // day D ends at D + 86399 < oldest, i.e. D <= the date of oldest - 1 day.
        let last_expired_date = date_of(oldest - DAY_SECS);
        let mut ops = Vec::new();
        let mut paths = Vec::new();
        for (path, value) in self.catalog.list(SEGMENTS_TABLE, "")? {
            let Ok(meta) = serde_json::from_slice::<SegmentMeta>(&value) else {
                continue;
            };
            let date = partition_value(&meta.partition, "date=").to_owned();
            if !date.is_empty() && date <= last_expired_date {
                ops.push(CatalogOp::delete(SEGMENTS_TABLE, path.clone()));
                paths.push(path);
            }
        }
        if ops.is_empty() {
            return Ok(0);
        }
        // Catalog first: a crash between the two leaves an orphan object, never a
        // catalog entry pointing at nothing.
        self.catalog.commit(&ops)?;
        for path in &paths {
            self.objects.delete(path).await?;
        }
        tracing::info!(segments = paths.len(), "dropped expired audit partitions");
        Ok(paths.len())
    }

    /// The reader of segment `path`, opening (footer and page index) on first use.
    async fn segment_reader(
        &self,
        path: &Arc<str>,
    ) -> Result<Arc<segment::SegmentReader>, AuditError> {
        if let Some(hit) = self
            .readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
            .cloned()
        {
            return Ok(hit);
        }
        let reader = Arc::new(segment::SegmentReader::open(&self.objects, path).await?);
        let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if readers.len() >= READER_CACHE_ENTRIES {
            // Cheap to rebuild; a full reset keeps the bound without LRU bookkeeping.
            readers.clear();
        }
        readers.insert(path.clone(), reader.clone());
        Ok(reader)
    }

    /// LookupEvents.
    pub async fn lookup(&self, q: &LookupQuery) -> Result<LookupPage, LookupError> {
        let (events, next_token) = self.lookup_index(q)?;
        let storage = |e: AuditError| {
            tracing::error!(error = %e, "cannot read audit segment");
            LookupError::Storage(e.to_string())
        };
        // Segment rows are fetched per segment, each in one ranged read of the pages that hold them.
        let mut wanted: BTreeMap<Arc<str>, Vec<u32>> = BTreeMap::new();
        for event in &events {
            if let Body::Segment { path, row } = &event.body {
                wanted.entry(path.clone()).or_default().push(*row);
            }
        }
        // Segments are read concurrently: each read is a blocking positioned read.
        let reads = wanted.into_iter().map(|(path, mut rows)| async move {
            rows.sort_unstable();
            rows.dedup();
            let reader = self.segment_reader(&path).await?;
            let values = reader.read_rows(&self.objects, "record", &rows).await?;
            Ok::<_, AuditError>((path, rows, values))
        });
        let mut fetched: HashMap<(Arc<str>, u32), Arc<str>> = HashMap::new();
        for (path, rows, values) in futures::future::try_join_all(reads)
            .await
            .map_err(storage)?
        {
            for (row, value) in rows.into_iter().zip(values) {
                fetched.insert((path.clone(), row), Arc::from(value));
            }
        }
        let mut found = Vec::with_capacity(events.len());
        for event in events {
            let json = match &event.body {
                Body::Inline(json) => json.clone(),
                Body::Segment { path, row } => {
                    fetched.get(&(path.clone(), *row)).cloned().ok_or_else(|| {
                        LookupError::Storage(format!("segment {path} has no row {row}"))
                    })?
                }
            };
            found.push(FoundEvent { event, json });
        }
        Ok(LookupPage {
            events: found,
            next_token,
        })
    }

    fn lookup_index(
        &self,
        q: &LookupQuery,
    ) -> Result<(Vec<Arc<StoredEvent>>, Option<String>), LookupError> {
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
            Some(token) => {
                let (time, id): (i64, String) = self
                    .tokens
                    .open(token, &filters, now, TOKEN_MAX_AGE_SECS)
                    .ok_or(LookupError::InvalidNextToken)?;
                Some((time, id_number(&id)))
            }
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
        let partition = index.lookup.get(&(q.account_id.clone(), q.region.clone()));
        if let (true, Some(partition)) = (start <= end, partition) {
            let lower: EventKey = (start, 0);
            let upper: EventKey = match cursor {
                Some(c) => c,
                None => (end, u128::MAX),
            };
            // Keys in [lower, upper), plus `upper` itself when it is not a cursor.
            let in_range =
                |k: &EventKey| *k >= lower && (*k < upper || (cursor.is_none() && *k == upper));
            let accept = |e: &Arc<StoredEvent>| {
                e.category == wanted && q.attribute.as_ref().is_none_or(|a| a.matches(e))
            };
            let mut push = |e: &Arc<StoredEvent>| {
                if events.len() == max_results {
                    more = true;
                    false
                } else {
                    events.push(e.clone());
                    true
                }
            };
            match q.attribute.as_ref() {
                Some(LookupAttribute::EventId(id)) => {
                    let number = id_number(id);
                    if let Some(time) = partition.ids.get(&number) {
                        let key = (*time, number);
                        if let Some(e) = partition
                            .events
                            .get(&key)
                            .filter(|e| in_range(&key) && accept(e))
                        {
                            push(e);
                        }
                    }
                }
                Some(attribute) if attribute.posting().is_some() => {
                    let list = attribute
                        .posting()
                        .and_then(|p| partition.postings.get(&p))
                        .map(Vec::as_slice)
                        .unwrap_or_default();
                    let end_at =
                        list.partition_point(|k| *k < upper || (cursor.is_none() && *k == upper));
                    for key in list[..end_at].iter().rev().take_while(|k| **k >= lower) {
                        if let Some(e) = partition.events.get(key).filter(|e| accept(e)) {
                            if !push(e) {
                                break;
                            }
                        }
                    }
                }
                _ => {
                    let upper_bound = if cursor.is_some() {
                        Bound::Excluded(upper)
                    } else {
                        Bound::Included(upper)
                    };
                    for (_, e) in partition
                        .events
                        .range((Bound::Included(lower), upper_bound))
                        .rev()
                    {
                        if accept(e) && !push(e) {
                            break;
                        }
                    }
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
        Ok((events, next_token))
    }
}

fn build_batch(rows: &[FlushRow]) -> Result<RecordBatch, AuditError> {
    let resources: Vec<String> = rows
        .iter()
        .map(|r| {
            let pairs: Vec<(Option<&str>, &str)> = r
                .event
                .resources
                .iter()
                .map(|(t, n)| (t.as_deref(), &**n))
                .collect();
            serde_json::to_string(&pairs).unwrap_or_else(|_| "[]".to_owned())
        })
        .collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.seq))),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.event.time_secs * 1000),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.event.event_id.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &*r.event.event_name),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &*r.event.event_source),
        )),
        Arc::new(BooleanArray::from(
            rows.iter().map(|r| r.event.read_only).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            rows.iter()
                .map(|r| r.event.access_key_id.as_deref())
                .collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            rows.iter()
                .map(|r| r.event.username.as_deref())
                .collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from_iter_values(resources.iter())),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &*r.json))),
    ];
    RecordBatch::try_new(segment_schema(), columns).map_err(|e| AuditError::Decode {
        seq: 0,
        message: e.to_string(),
    })
}

/// Puts the records of segment `meta` above `after` into the trail feed: they
/// were flushed before trail delivery took them.
async fn load_segment_feed(
    objects: &Objects,
    meta: &SegmentMeta,
    after: u64,
    seen_ms: i64,
    feed: &mut BTreeMap<u64, FeedEntry>,
) -> Result<(), AuditError> {
    let bytes = objects.get(&meta.path).await?;
    let batches = segment::decode(&meta.path, bytes, Some(&["seq", "record"]))?;
    for batch in &batches {
        let seq = column::<UInt64Array>(batch, "seq", &meta.path)?;
        let record = column::<StringArray>(batch, "record", &meta.path)?;
        for i in 0..batch.num_rows() {
            if seq.value(i) > after {
                feed.insert(
                    seq.value(i),
                    FeedEntry {
                        json: Arc::from(record.value(i)),
                        seen_ms,
                    },
                );
            }
        }
    }
    Ok(())
}

async fn load_segment_index(
    objects: &Objects,
    meta: &SegmentMeta,
    index: &mut Index,
) -> Result<(), AuditError> {
    let category =
        EventCategory::parse(partition_value(&meta.partition, "category=")).ok_or_else(|| {
            AuditError::Decode {
                seq: 0,
                message: format!("segment {} has no category", meta.path),
            }
        })?;
    if !category.indexed() {
        index.data_events += meta.rows;
        return Ok(());
    }
    let (account, region) = (
        partition_value(&meta.partition, "account=").to_owned(),
        partition_value(&meta.partition, "region=").to_owned(),
    );
    let bytes = objects.get(&meta.path).await?;
    let batches = segment::decode(&meta.path, bytes, Some(&INDEX_COLUMNS))?;
    let path: Arc<str> = Arc::from(meta.path.as_str());
    let mut row = 0u32;
    for batch in &batches {
        let p = meta.path.as_str();
        let seq = column::<UInt64Array>(batch, "seq", p)?;
        let time = column::<Int64Array>(batch, "event_time_ms", p)?;
        let id = column::<StringArray>(batch, "event_id", p)?;
        let name = column::<StringArray>(batch, "event_name", p)?;
        let source = column::<StringArray>(batch, "event_source", p)?;
        let read_only = column::<BooleanArray>(batch, "read_only", p)?;
        let key = column::<StringArray>(batch, "access_key_id", p)?;
        let user = column::<StringArray>(batch, "username", p)?;
        let resources = column::<StringArray>(batch, "resources", p)?;
        for i in 0..batch.num_rows() {
            let opt = |a: &StringArray| (!a.is_null(i)).then(|| Arc::from(a.value(i)));
            let event = StoredEvent {
                seq: seq.value(i),
                time_secs: time.value(i).div_euclid(1000),
                event_id: id.value(i).to_owned(),
                event_name: Arc::from(name.value(i)),
                event_source: Arc::from(source.value(i)),
                read_only: read_only.value(i),
                category,
                access_key_id: opt(key),
                username: opt(user),
                resources: serde_json::from_str::<Vec<(Option<String>, String)>>(
                    resources.value(i),
                )
                .unwrap_or_default()
                .into_iter()
                .map(|(t, n)| (t.map(Arc::from), Arc::from(n)))
                .collect(),
                body: Body::Segment {
                    path: path.clone(),
                    row,
                },
            };
            index.insert((category, account.clone(), region.clone()), event);
            row += 1;
        }
    }
    Ok(())
}

fn encode_change(op: &CatalogOp) -> serde_json::Value {
    use base64::Engine as _;
    match op {
        CatalogOp::Put { table, key, value } => serde_json::json!({
            "t": table, "k": key, "v": base64::engine::general_purpose::STANDARD.encode(value),
        }),
        CatalogOp::Delete { table, key } => serde_json::json!({"t": table, "k": key, "v": null}),
    }
}

fn decode_change(seq: u64, v: &serde_json::Value) -> Result<CatalogOp, AuditError> {
    use base64::Engine as _;
    let bad = |what: &str| AuditError::Decode {
        seq,
        message: format!("change: {what}"),
    };
    let table = v
        .get("t")
        .and_then(|t| t.as_str())
        .ok_or_else(|| bad("no table"))?;
    let key = v
        .get("k")
        .and_then(|k| k.as_str())
        .ok_or_else(|| bad("no key"))?;
    Ok(match v.get("v") {
        Some(serde_json::Value::String(b64)) => CatalogOp::put(
            table,
            key,
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| bad("value is not base64"))?,
        ),
        Some(serde_json::Value::Null) | None => CatalogOp::delete(table, key),
        Some(_) => return Err(bad("value has the wrong type")),
    })
}

/// A WAL entry: the record and the catalog changes committed with it.
fn decode_payload(
    seq: u64,
    payload: &[u8],
) -> Result<(serde_json::Value, Vec<CatalogOp>), AuditError> {
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
    let changes = match v.get("c").and_then(|c| c.as_array()) {
        Some(items) => items
            .iter()
            .map(|c| decode_change(seq, c))
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    let record = v
        .get_mut("r")
        .map(serde_json::Value::take)
        .ok_or_else(|| AuditError::Decode {
            seq,
            message: "missing record".to_owned(),
        })?;
    Ok((record, changes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::Resource;
    use trailwatch_storage::SqliteCatalog;
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

    async fn open_with(dir: &Path, clock: Arc<ManualClock>, flush_rows: u64) -> AuditStore {
        let catalog = Arc::new(SqliteCatalog::open(&dir.join("catalog.db")).unwrap());
        let objects = Objects::local(&dir.join("objects")).unwrap();
        let options = AuditOptions {
            flush_rows,
            row_group_rows: 4,
            ..AuditOptions::default()
        };
        AuditStore::open(
            dir,
            catalog,
            objects,
            clock,
            TokenCodec::new(b"k".to_vec()),
            options,
        )
        .await
        .unwrap()
    }

    async fn open(dir: &Path, clock: Arc<ManualClock>) -> AuditStore {
        open_with(dir, clock, 100_000).await
    }

    fn query() -> LookupQuery {
        LookupQuery {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            ..Default::default()
        }
    }

    async fn collect_all(store: &AuditStore, mut q: LookupQuery) -> Vec<String> {
        let mut ids = Vec::new();
        loop {
            let page = store.lookup(&q).await.unwrap();
            for e in &page.events {
                let record: serde_json::Value = serde_json::from_str(&e.json).unwrap();
                assert_eq!(
                    record["eventID"],
                    e.event_id.as_str(),
                    "body matches its index entry"
                );
                ids.push(e.event_id.clone());
            }
            match page.next_token {
                Some(t) => q.next_token = Some(t),
                None => return ids,
            }
        }
    }

    fn expected_ids(indices: impl Iterator<Item = usize>, step_ms: i64) -> Vec<String> {
        let mut expected: Vec<(i64, String)> = indices
            .map(|i| {
                (
                    1_767_225_600 + (i as i64 * step_ms) / 1000,
                    format!("{i:08x}-0000-4000-8000-000000000000"),
                )
            })
            .collect();
        expected.sort();
        expected.reverse();
        expected.into_iter().map(|(_, id)| id).collect()
    }

    #[tokio::test]
    async fn pages_newest_first_across_restart() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(Timestamp::from_secs(1_767_225_600)));
        let store = open(dir.path(), clock.clone()).await;
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
        drop(store); // a crash: no flush
        let store = open(dir.path(), clock.clone()).await;
        let expected = expected_ids((0..30).filter(|i| i % 5 != 4), 400);
        let q = LookupQuery {
            max_results: Some(7),
            ..query()
        };
        assert_eq!(collect_all(&store, q.clone()).await, expected);
        assert_eq!(store.data_event_count(), 6);
        // Events that arrive between pages do not shift the cursor.
        let first = store.lookup(&q).await.unwrap();
        store
            .append(&record(&clock, 99, "Late", EventCategory::Management))
            .await
            .unwrap();
        let second = store
            .lookup(&LookupQuery {
                next_token: first.next_token.clone(),
                ..q.clone()
            })
            .await
            .unwrap();
        assert_eq!(second.events[0].event_id, expected[7]);
        // A token is bound to its filters.
        let other = LookupQuery {
            next_token: first.next_token,
            attribute: Some(LookupAttribute::EventName("Op1".into())),
            ..q
        };
        assert_eq!(
            store.lookup(&other).await.unwrap_err(),
            LookupError::InvalidNextToken
        );
    }

    #[tokio::test]
    async fn flushed_segments_serve_lookups_and_survive_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(Timestamp::from_secs(1_767_225_600)));
        let store = open(dir.path(), clock.clone()).await;
        for i in 0..25 {
            let category = if i % 5 == 4 {
                EventCategory::Data
            } else {
                EventCategory::Management
            };
            store
                .append(&record(&clock, i, "Op", category))
                .await
                .unwrap();
            clock.advance_millis(1500);
        }
        assert_eq!(store.flush().await.unwrap(), 25);
        assert_eq!(store.flush().await.unwrap(), 0, "nothing left to flush");
        for i in 25..30 {
            store
                .append(&record(&clock, i, "Op", EventCategory::Management))
                .await
                .unwrap();
            clock.advance_millis(1500);
        }
        let expected = expected_ids((0..30).filter(|i| i >= &25 || i % 5 != 4), 1500);
        assert_eq!(
            collect_all(
                &store,
                LookupQuery {
                    max_results: Some(4),
                    ..query()
                }
            )
            .await,
            expected
        );
        // Segments are Parquet files in the object store, partitioned by category and day.
        let segments = store.catalog.list(SEGMENTS_TABLE, "").unwrap();
        assert_eq!(segments.len(), 2);
        assert!(segments[0].0.starts_with(
            "audit/category=Data/account=123456789012/region=us-east-1/date=2026-01-01/"
        ));
        assert!(dir.path().join("objects").join(&segments[1].0).exists());
        // Only the WAL file that holds the unflushed records remains.
        let wal_files = std::fs::read_dir(dir.path().join("wal")).unwrap().count();
        assert_eq!(wal_files, 1);
        drop(store); // crash with 5 records only in the WAL
        let store = open(dir.path(), clock.clone()).await;
        assert_eq!(collect_all(&store, query()).await, expected);
        assert_eq!(store.data_event_count(), 5);
        store.shutdown().await.unwrap();
        drop(store);
        let store = open(dir.path(), clock.clone()).await;
        assert_eq!(collect_all(&store, query()).await, expected);
        assert_eq!(store.catalog.list(SEGMENTS_TABLE, "").unwrap().len(), 3);
    }

    #[tokio::test]
    async fn retention_drops_whole_day_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let day0 = Timestamp::from_secs(1_767_225_600); // 2026-01-01T00:00:00Z
        let clock = Arc::new(ManualClock::new(day0));
        let store = open(dir.path(), clock.clone()).await;
        store
            .append(&record(&clock, 1, "Op", EventCategory::Management))
            .await
            .unwrap();
        clock.advance_millis(DAY_SECS * 1000 + 3_600_000); // day 1, 01:00
        store
            .append(&record(&clock, 2, "Op", EventCategory::Management))
            .await
            .unwrap();
        store.flush().await.unwrap();
        assert_eq!(store.catalog.list(SEGMENTS_TABLE, "").unwrap().len(), 2);
        // 90 days after day 0 ends, day 0 expires; day 1 still has a live hour.
        clock.set(Timestamp::from_secs(
            day0.secs() + DAY_SECS + HISTORY_SECS + 1,
        ));
        assert_eq!(store.prune().await.unwrap(), 1);
        let left = store.catalog.list(SEGMENTS_TABLE, "").unwrap();
        assert_eq!(left.len(), 1);
        assert!(left[0].0.contains("date=2026-01-02/"));
        assert!(!dir.path().join("objects/audit/category=Management/account=123456789012/region=us-east-1/date=2026-01-01").read_dir().map(|mut d| d.next().is_some()).unwrap_or(false));
        assert_eq!(
            collect_all(&store, query()).await,
            vec!["00000002-0000-4000-8000-000000000000".to_owned()]
        );
        drop(store);
        let store = open(dir.path(), clock.clone()).await;
        assert_eq!(collect_all(&store, query()).await.len(), 1);
    }

    #[tokio::test]
    async fn attributes_time_ranges_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(Timestamp::from_secs(1_767_225_600)));
        let store = open(dir.path(), clock.clone()).await;
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
            if i == 5 {
                store.flush().await.unwrap(); // half from segments, half inline
            }
        }
        let by = |a: LookupAttribute| {
            let q = LookupQuery {
                attribute: Some(a),
                ..query()
            };
            let store = &store;
            async move { collect_all(store, q).await.len() }
        };
        assert_eq!(by(LookupAttribute::EventName("Op1".into())).await, 3);
        assert_eq!(by(LookupAttribute::ReadOnly(true)).await, 4);
        assert_eq!(by(LookupAttribute::AccessKeyId("AK1".into())).await, 6);
        assert_eq!(by(LookupAttribute::ResourceName("a7".into())).await, 1);
        assert_eq!(by(LookupAttribute::ResourceName("a2".into())).await, 1);
        assert_eq!(
            by(LookupAttribute::ResourceType(
                "AWS::CloudWatch::Alarm".into()
            ))
            .await,
            12
        );
        assert_eq!(by(LookupAttribute::Username("root".into())).await, 12);
        assert_eq!(
            by(LookupAttribute::EventSource(
                "monitoring.amazonaws.com".into()
            ))
            .await,
            12
        );
        assert_eq!(
            by(LookupAttribute::EventId(
                "00000003-0000-4000-8000-000000000000".into()
            ))
            .await,
            1
        );
        let ranged = LookupQuery {
            start: Some(Timestamp::from_secs(1_767_225_602)),
            end: Some(Timestamp::from_secs(1_767_225_604)),
            ..query()
        };
        assert_eq!(collect_all(&store, ranged).await.len(), 3);
        let other_region = LookupQuery {
            region: "eu-west-1".into(),
            ..query()
        };
        assert!(collect_all(&store, other_region).await.is_empty());
        assert!(collect_all(
            &store,
            LookupQuery {
                insight: true,
                ..query()
            }
        )
        .await
        .is_empty());
        let err = |q: LookupQuery| {
            let store = &store;
            async move { store.lookup(&q).await.unwrap_err() }
        };
        assert_eq!(
            err(LookupQuery {
                max_results: Some(51),
                ..query()
            })
            .await,
            LookupError::InvalidMaxResults
        );
        assert_eq!(
            err(LookupQuery {
                max_results: Some(0),
                ..query()
            })
            .await,
            LookupError::InvalidMaxResults
        );
        let backwards = LookupQuery {
            start: Some(Timestamp::from_secs(10)),
            end: Some(Timestamp::from_secs(5)),
            ..query()
        };
        assert_eq!(err(backwards).await, LookupError::InvalidTimeRange);
        assert!(LookupAttribute::parse("ReadOnly", "yes").is_err());
        assert!(LookupAttribute::parse("Bogus", "x").is_err());
        assert!(LookupAttribute::parse("EventName", "").is_err());
        // 90 days later everything has aged out.
        clock.advance_millis(HISTORY_SECS * 1000 + 60_000);
        assert!(collect_all(&store, query()).await.is_empty());
    }

    #[tokio::test]
    async fn changes_commit_with_their_record_and_recovery_reapplies_them() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(Timestamp::from_secs(1_767_225_600)));
        let store = open(dir.path(), clock.clone()).await;
        let put = CatalogOp::put(
            "dashboards",
            "123456789012/us-east-1/main",
            b"{\"widgets\":[]}".to_vec(),
        );
        store
            .commit(
                &record(&clock, 1, "PutDashboard", EventCategory::Management),
                std::slice::from_ref(&put),
            )
            .await
            .unwrap();
        assert_eq!(
            store
                .catalog
                .get("dashboards", "123456789012/us-east-1/main")
                .unwrap()
                .as_deref(),
            Some(&b"{\"widgets\":[]}"[..])
        );
        let delete = CatalogOp::delete("dashboards", "123456789012/us-east-1/main");
        store
            .commit(
                &record(&clock, 2, "DeleteDashboards", EventCategory::Management),
                &[delete],
            )
            .await
            .unwrap();
        store
            .commit(
                &record(&clock, 3, "PutDashboard", EventCategory::Management),
                std::slice::from_ref(&put),
            )
            .await
            .unwrap();
        // A crash between append and apply: the catalog lost the last change.
        store
            .catalog
            .commit(&[CatalogOp::delete(
                "dashboards",
                "123456789012/us-east-1/main",
            )])
            .unwrap();
        drop(store);
        let store = open(dir.path(), clock.clone()).await;
        assert!(
            store
                .catalog
                .get("dashboards", "123456789012/us-east-1/main")
                .unwrap()
                .is_some(),
            "recovery re-applies in WAL order"
        );
        assert_eq!(collect_all(&store, query()).await.len(), 3);
        // After a flush the changes are covered by the checkpoint and not replayed again.
        store.flush().await.unwrap();
        store
            .catalog
            .commit(&[CatalogOp::put(
                "dashboards",
                "123456789012/us-east-1/main",
                b"newer".to_vec(),
            )])
            .unwrap();
        drop(store);
        let store = open(dir.path(), clock.clone()).await;
        assert_eq!(
            store
                .catalog
                .get("dashboards", "123456789012/us-east-1/main")
                .unwrap()
                .as_deref(),
            Some(&b"newer"[..])
        );
        // A record that cannot be written changes nothing.
        store.wal.shutdown().await.unwrap();
        let other = CatalogOp::put("dashboards", "123456789012/us-east-1/other", b"x".to_vec());
        assert!(store
            .commit(
                &record(&clock, 4, "PutDashboard", EventCategory::Management),
                &[other]
            )
            .await
            .is_err());
        assert!(store
            .catalog
            .get("dashboards", "123456789012/us-east-1/other")
            .unwrap()
            .is_none());
    }

    /// Index paths (postings, event ids, scans) agree with a naive filter over
    /// random histories, including out-of-order arrivals, flushes and restarts.
    #[tokio::test]
    async fn lookups_agree_with_a_naive_model() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(Timestamp::from_secs(1_767_225_600)));
        let store = open(dir.path(), clock.clone()).await;
        let mut model: Vec<(i64, String, CallRecord)> = Vec::new();
        for i in 0..400usize {
            let mut r = record(
                &clock,
                i,
                &format!("Op{}", rng.gen_range(0..5)),
                EventCategory::Management,
            );
            // Some events arrive late, with an earlier eventTime.
            let skew = if rng.gen_ratio(1, 5) {
                -rng.gen_range(0..30_000)
            } else {
                0
            };
            r.event_time = Timestamp::from_millis(clock.now().millis() + skew);
            r.event_id = format!("{:08x}-{:04x}-4000-8000-000000000000", rng.gen::<u32>(), i);
            r.user_identity = serde_json::json!({"type": "IAMUser", "userName": format!("u{}", rng.gen_range(0..4)), "accessKeyId": format!("AK{}", rng.gen_range(0..3))});
            r.resources[0].arn = format!(
                "arn:aws:cloudwatch:us-east-1:123456789012:alarm:a{}",
                rng.gen_range(0..40)
            );
            store.append(&r).await.unwrap();
            model.push((r.event_time.secs(), r.event_id.clone(), r));
            clock.advance_millis(rng.gen_range(0..900));
            if i % 150 == 149 {
                store.flush().await.unwrap();
            }
        }
        drop(store);
        let store = open(dir.path(), clock.clone()).await;
        let attributes = |rng: &mut rand::rngs::StdRng,
                          model: &[(i64, String, CallRecord)]|
         -> Option<LookupAttribute> {
            match rng.gen_range(0..8) {
                0 => None,
                1 => Some(LookupAttribute::EventName(format!(
                    "Op{}",
                    rng.gen_range(0..6)
                ))),
                2 => Some(LookupAttribute::Username(format!(
                    "u{}",
                    rng.gen_range(0..5)
                ))),
                3 => Some(LookupAttribute::AccessKeyId(format!(
                    "AK{}",
                    rng.gen_range(0..3)
                ))),
                4 => Some(LookupAttribute::ResourceName(format!(
                    "a{}",
                    rng.gen_range(0..45)
                ))),
                5 => Some(LookupAttribute::ReadOnly(rng.gen())),
                6 => Some(LookupAttribute::EventId(
                    model[rng.gen_range(0..model.len())].1.clone(),
                )),
                _ => Some(LookupAttribute::EventSource(
                    "monitoring.amazonaws.com".into(),
                )),
            }
        };
        let mut matched = 0;
        for _ in 0..60 {
            let attribute = attributes(&mut rng, &model);
            let start = 1_767_225_600 + rng.gen_range(-60..200);
            let end = start + rng.gen_range(0..300);
            let q = LookupQuery {
                attribute: attribute.clone(),
                start: Some(Timestamp::from_secs(start)),
                end: Some(Timestamp::from_secs(end)),
                max_results: Some(rng.gen_range(1..=20)),
                ..query()
            };
            let got = collect_all(&store, q).await;
            let mut expected: Vec<(i64, u128, String)> = model
                .iter()
                .filter(|(t, _, _)| *t >= start && *t <= end)
                .filter(|(_, _, r)| {
                    let json = r.to_json();
                    match &attribute {
                        None => true,
                        Some(LookupAttribute::EventName(v)) => json["eventName"] == v.as_str(),
                        Some(LookupAttribute::Username(v)) => {
                            json["userIdentity"]["userName"] == v.as_str()
                        }
                        Some(LookupAttribute::AccessKeyId(v)) => {
                            json["userIdentity"]["accessKeyId"] == v.as_str()
                        }
                        Some(LookupAttribute::ResourceName(v)) => json["resources"][0]["ARN"]
                            .as_str()
                            .unwrap()
                            .ends_with(&format!(":{v}")),
                        Some(LookupAttribute::ReadOnly(v)) => json["readOnly"] == *v,
                        Some(LookupAttribute::EventId(v)) => json["eventID"] == v.as_str(),
                        Some(LookupAttribute::EventSource(v)) => json["eventSource"] == v.as_str(),
                        Some(_) => unreachable!(),
                    }
                })
                .map(|(t, id, _)| (*t, id_number(id), id.clone()))
                .collect();
            expected.sort();
            expected.reverse();
            let expected: Vec<String> = expected.into_iter().map(|(_, _, id)| id).collect();
            assert_eq!(got, expected, "{attribute:?} in [{start}, {end}]");
            matched += got.len();
        }
        assert!(matched > 300, "the queries must match something: {matched}");
    }

    #[test]
    fn uuid_order_is_text_order() {
        let mut ids: Vec<String> = (0..200).map(|_| uuid::Uuid::new_v4().to_string()).collect();
        ids.sort();
        let numbers: Vec<u128> = ids.iter().map(|i| id_number(i)).collect();
        assert!(numbers.windows(2).all(|w| w[0] < w[1]));
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
            friendly_name("arn:aws:logs:r:1:log-group:/app:log-stream:s1"),
            "s1"
        );
        assert_eq!(
            friendly_name("arn:aws:sns:us-east-1:123456789012:ops"),
            "ops"
        );
    }
}
