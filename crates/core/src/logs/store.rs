//! The log store (`spec/logs.md` §2–5): groups and streams live in the
//! catalog, events in their own WAL and in memory.
//!
//! # Catalog layout (version 1)
//! - `log_groups`, key `{account}:{region}:{group}`, JSON [`GroupRecord`];
//! - `log_streams`, key `{account}:{region}:{group}:{stream}`, JSON
//!   [`StreamRecord`]. Neither names nor account ids contain `:`, so a group's
//!   streams are exactly the keys under `{account}:{region}:{group}:`, and the
//!   catalog's byte order is the ASCII order DescribeLogGroups needs.
//!
//! Handlers get catalog changes, which the edge commits with the call's audit
//! record; a name check and the commit of what it allowed run under
//! [`LogStore::lock_names`], so two CreateLogGroup calls cannot both succeed.
//!
//! # WAL payload (version 1)
//! `u8 1 | str stream id | ivarint ingestion ms | varint n | n × (ivarint
//! timestamp ms, str message)`: one record per PutLogEvents, appended (and
//! fsynced) before the answer. A stream id is fixed at CreateLogStream, so
//! events of a deleted stream never reappear in a new one of the same name.
//!
//! # Segments
//! `logs/stream={id}/day={first ms of the UTC day}/{generation:020}.twl`, one
//! per stream and day of event time per flush (format: [`super::blocks`]),
//! listed in the catalog table `log_segments`; `log_state` holds the WAL
//! checkpoint. A flush reads closed WAL files (never memory), writes segments
//! durably, commits them with the checkpoint, then deletes the WAL files: every
//! event is in exactly one of the two. Recovery reads the block directories of
//! the segments of live streams and replays the WAL above the checkpoint.
//! Version 1 segments (one zstd body) are rewritten as version 2 at open.
//!
//! # Invariants
//! - Events of a stream are kept sorted by (timestamp, ingestion time, sequence);
//!   the sequence is `wal seq × 16384 + index in the request`, so it and every
//!   token and eventId built from it are stable across restarts.
//! - Reads hide events older than the group's retention at read time (§2.4);
//!   maintenance deletes segments whose whole day is expired, and those of
//!   deleted streams, and drops expired events from memory.
//! - Memory holds the events not yet flushed (the WAL's) and the block
//!   directories of segments; a flush moves events from the first to the
//!   second under one write lock, so a reader's snapshot sees each event once.
//! - Reads visit blocks in key order and stop once a page is settled: a block
//!   can only hold keys inside its directory range, so matches before the next
//!   unread block's first key are final. FilterLogEvents skips blocks whose
//!   trigram filter rules out a required literal.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use trailwatch_storage::{Catalog, CatalogOp, Objects, Wal, WalOptions};
use trailwatch_types::{Clock, Timestamp};

use super::blocks::{self, BlockMeta};
use super::export::{self, ExportTask};
use super::filters::MetricFilterRecord;
use super::model::LogsError;
use super::pattern::Pattern;
use super::subscriptions::{self, DestinationRecord, SubscriptionRecord};
use crate::metrics::codec::{get_ivarint, get_str, get_varint, put_ivarint, put_str, put_varint};
use crate::token::{filters_hash, TokenCodec};

const GROUPS: &str = "log_groups";
const FILTERS: &str = super::filters::TABLE;
const SEGMENTS: &str = "log_segments";
const EXPORTS: &str = super::export::TABLE;
const STATE_TABLE: &str = "log_state";
const STATE_KEY: &str = "state";
const STREAMS: &str = "log_streams";
const PAYLOAD_VERSION: u8 = 1;
/// Version 1 followed by the agent batch id (agent, sequence).
const PAYLOAD_VERSION_BATCH: u8 = 2;
/// Bytes counted per event on top of its message (§4.2).
pub const EVENT_OVERHEAD: usize = 26;
/// Largest PutLogEvents batch, and the read page budget (§4.2, §5).
pub const MAX_BATCH_BYTES: usize = 1_048_576;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// Largest timestamp a cursor holds (16 digits).
const MAX_TS: i64 = 9_999_999_999_999_999;
/// 2024-01-01T00:00:00Z: FilterLogEvents reads newest first only from here (§5.2).
const NEWEST_FIRST_FROM_MS: i64 = 1_704_067_200_000;

/// A stored log group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// Format version.
    pub v: u8,
    /// Creation time, epoch ms.
    pub created_ms: i64,
    /// `retentionInDays`; `None` = never expire.
    pub retention_days: Option<u32>,
    /// `logGroupClass`.
    pub class: String,
    /// `kmsKeyId`, stored only.
    pub kms_key_id: Option<String>,
    /// `deletionProtectionEnabled`.
    pub deletion_protection: bool,
}

impl GroupRecord {
    /// Events older than this (ms) are expired at `now`.
    pub fn cutoff(&self, now: Timestamp) -> i64 {
        self.retention_days
            .map_or(i64::MIN, |d| now.millis() - i64::from(d) * DAY_MS)
    }
}

/// A stored log stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRecord {
    /// Format version.
    pub v: u8,
    /// Creation time, epoch ms.
    pub created_ms: i64,
    /// Identity of this incarnation of the stream (its events carry it).
    pub id: String,
}

/// One stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Event time, ms.
    pub timestamp: i64,
    /// Ingestion time, ms.
    pub ingestion: i64,
    /// Stable sequence (see the module invariants).
    pub seq: u64,
    /// The message.
    pub message: Arc<str>,
}

/// The sort key of an event.
pub type Key = (i64, i64, u64);

impl Event {
    fn key(&self) -> Key {
        (self.timestamp, self.ingestion, self.seq)
    }
}

/// 56 digits: timestamp (16), ingestion time (16), sequence (24).
pub fn key_digits(key: Key) -> String {
    format!(
        "{:016}{:016}{:024}",
        key.0.clamp(0, MAX_TS),
        key.1.clamp(0, MAX_TS),
        key.2
    )
}

fn parse_digits(digits: &str) -> Option<Key> {
    if digits.len() != 56 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((
        digits[..16].parse().ok()?,
        digits[16..32].parse().ok()?,
        digits[32..].parse().ok()?,
    ))
}

#[derive(Debug, Default)]
struct StreamEvents {
    /// Events not yet in segments, sorted by key.
    events: Vec<Event>,
    /// Blocks of the stream's segments.
    blocks: Vec<BlockRef>,
    last_ingestion: Option<i64>,
    /// The newest batch stored per agent id (see [`BatchId`]).
    batches: BTreeMap<String, u64>,
}

/// A trailwatch agent's name for a PutLogEvents batch: its id and the
/// batch's sequence. An agent sends a stream's batches in rising sequence,
/// so one it resends (its answer was lost) is at or below the newest kept.
pub type BatchId<'a> = (&'a str, u64);

/// Agents remembered per stream; past this the least recent is forgotten.
const MAX_AGENTS_PER_STREAM: usize = 64;

fn note_batch(batches: &mut BTreeMap<String, u64>, agent: &str, seq: u64) {
    let newest = batches.entry(agent.to_owned()).or_insert(seq);
    *newest = (*newest).max(seq);
    while batches.len() > MAX_AGENTS_PER_STREAM {
        let Some(oldest) = batches
            .iter()
            .min_by_key(|(_, s)| **s)
            .map(|(a, _)| a.clone())
        else {
            break;
        };
        batches.remove(&oldest);
    }
}

/// A block of a segment, as the directory describes it.
#[derive(Debug, Clone)]
struct BlockRef {
    path: Arc<str>,
    meta: Arc<BlockMeta>,
}

/// A block a reader means to read (see [`LogStore::plan`]).
#[derive(Debug, Clone)]
pub struct PlannedBlock {
    stream: usize,
    block: BlockRef,
}

impl PlannedBlock {
    /// Index of the block's stream in the plan.
    pub fn stream(&self) -> usize {
        self.stream
    }

    /// What the directory says of the block.
    pub fn meta(&self) -> &BlockMeta {
        &self.block.meta
    }

    /// Decodes the fetched block.
    pub fn decode(&self, bytes: &[u8]) -> Result<blocks::Block, LogsError> {
        blocks::decode_block(bytes, &self.block.meta).map_err(|m| corrupt(&self.block, m))
    }

    /// Decodes the fetched block, its text into `scratch` (reused).
    pub fn decode_into<'a>(
        &self,
        bytes: &[u8],
        scratch: &'a mut Vec<u8>,
    ) -> Result<blocks::BlockView<'a>, LogsError> {
        blocks::decode_block_into(bytes, &self.block.meta, scratch)
            .map_err(|m| corrupt(&self.block, m))
    }

    /// Decodes the columns (times, lengths: no text) of the fetched block or
    /// of its fetched columns alone.
    pub fn decode_columns(&self, bytes: &[u8]) -> Result<blocks::Columns, LogsError> {
        blocks::decode_block_columns(bytes, &self.block.meta).map_err(|m| corrupt(&self.block, m))
    }
}

/// What a read needs of its streams: blocks and unflushed events, each
/// tagged with the index of its stream in the read.
type Snapshot = (Vec<(usize, BlockRef)>, Vec<(usize, Event)>);

/// A bounded, ordered read over blocks and memory (see [`LogStore::scan`]).
#[derive(Clone)]
struct Scan {
    /// Inclusive event-time bounds.
    lo: i64,
    hi: i64,
    forward: bool,
    /// Exclusive cursor: only keys after it (in the scan's direction).
    after: Option<Key>,
    limit: usize,
    /// The 1 MB page budget applies.
    budget: bool,
    pattern: Option<Arc<Pattern>>,
}

impl Scan {
    /// Every event with `lo <= timestamp <= hi`, in key order, unpaged.
    fn everything(lo: i64, hi: i64) -> Scan {
        Scan {
            lo,
            hi,
            forward: true,
            after: None,
            limit: usize::MAX,
            budget: false,
            pattern: None,
        }
    }

    fn admits(&self, k: Key) -> bool {
        k.0 >= self.lo
            && k.0 <= self.hi
            && self
                .after
                .is_none_or(|a| if self.forward { k > a } else { k < a })
    }

    /// Whether `a` comes before `b` in the scan's direction.
    fn before(&self, a: Key, b: Key) -> bool {
        if self.forward {
            a < b
        } else {
            a > b
        }
    }
}

/// Unflushed message bytes above which the maintenance worker is asked to
/// flush early, bounding the memory that unflushed events take.
pub const FLUSH_WANTED_BYTES: u64 = 256 << 20;

/// Statistics of a stream for DescribeLogStreams / DescribeLogGroups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Earliest visible event time.
    pub first_event: Option<i64>,
    /// Latest visible event time.
    pub last_event: Option<i64>,
    /// Latest ingestion.
    pub last_ingestion: Option<i64>,
    /// UTF-8 bytes of visible messages.
    pub stored_bytes: u64,
}

/// What PutLogEvents rejected (§4.2), as exclusive/inclusive indexes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rejected {
    /// `tooOldLogEventEndIndex`.
    pub too_old_end: Option<usize>,
    /// `expiredLogEventEndIndex`.
    pub expired_end: Option<usize>,
    /// `tooNewLogEventStartIndex`.
    pub too_new_start: Option<usize>,
}

/// A GetLogEvents request (§5.1).
#[derive(Debug, Clone, Default)]
pub struct GetQuery {
    /// Inclusive start.
    pub start: Option<i64>,
    /// Exclusive end.
    pub end: Option<i64>,
    /// `nextToken`.
    pub token: Option<String>,
    /// `limit`.
    pub limit: Option<usize>,
    /// `startFromHead`.
    pub start_from_head: bool,
}

/// One GetLogEvents page.
#[derive(Debug, Clone)]
pub struct GetPage {
    /// Events, ascending.
    pub events: Vec<Event>,
    /// `nextForwardToken`.
    pub forward: String,
    /// `nextBackwardToken`.
    pub backward: String,
}

/// A FilterLogEvents request (§5.2).
#[derive(Debug, Clone, Default)]
pub struct FilterQuery {
    /// Streams searched, by name (already resolved to ids by the caller).
    pub streams: Vec<(String, String)>,
    /// Inclusive start.
    pub start: Option<i64>,
    /// Inclusive end.
    pub end: Option<i64>,
    /// Raw `filterPattern`.
    pub pattern: String,
    /// `limit`.
    pub limit: Option<usize>,
    /// `startFromHead`.
    pub start_from_head: bool,
    /// `nextToken`.
    pub token: Option<String>,
    /// What the token is bound to (group, stream selection, range, pattern).
    pub fingerprint: String,
}

/// One FilterLogEvents page: (stream name, event) pairs and the next token.
#[derive(Debug, Clone)]
pub struct FilterPage {
    /// Matching events in order.
    pub events: Vec<(String, Event)>,
    /// Present while more events may exist.
    pub next_token: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FilterCursor {
    k: (i64, i64, u64),
    forward: bool,
}

/// Log groups, streams and events.
pub struct LogStore {
    catalog: Arc<dyn Catalog>,
    objects: Objects,
    wal: Wal,
    streams: RwLock<HashMap<String, StreamEvents>>,
    clock: Arc<dyn Clock>,
    tokens: TokenCodec,
    names: Arc<tokio::sync::Mutex<()>>,
    /// One flush or purge at a time.
    maintenance: tokio::sync::Mutex<()>,
    /// Ingested events for Live Tail sessions.
    tail: tokio::sync::broadcast::Sender<Arc<TailEvent>>,
    /// Message bytes held in memory, not yet in segments.
    unflushed: AtomicU64,
    /// The WAL checkpoint memory reflects: records at or below it are in
    /// blocks. Changed under the `streams` write lock.
    moved_through: AtomicU64,
}

/// An ingested event as Live Tail sessions see it.
#[derive(Debug, Clone)]
pub struct TailEvent {
    /// Account.
    pub account: String,
    /// Region.
    pub region: String,
    /// Log group name.
    pub group: String,
    /// Log stream name.
    pub stream: String,
    /// Event time, ms.
    pub timestamp: i64,
    /// Ingestion time, ms.
    pub ingestion: i64,
    /// The message.
    pub message: String,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

fn storage(e: impl std::fmt::Display) -> LogsError {
    LogsError::Storage(e.to_string())
}

fn group_key(account: &str, region: &str, group: &str) -> String {
    format!("{account}:{region}:{group}")
}

fn stream_key(account: &str, region: &str, group: &str, stream: &str) -> String {
    format!("{account}:{region}:{group}:{stream}")
}

impl LogStore {
    /// Opens the store: WAL in `dir`, metadata in `catalog`, segments in
    /// `objects`; loads the segments of live streams, then replays the WAL
    /// above the checkpoint.
    pub async fn open(
        dir: &Path,
        catalog: Arc<dyn Catalog>,
        objects: Objects,
        clock: Arc<dyn Clock>,
        tokens: TokenCodec,
        options: WalOptions,
    ) -> Result<Self, LogsError> {
        let (wal, recovery) = Wal::open(&dir.join("wal"), options).map_err(storage)?;
        let live = live_streams(catalog.as_ref())?;
        let state = read_state(catalog.as_ref())?;
        let mut streams: HashMap<String, StreamEvents> = HashMap::new();
        let segments = segment_infos(catalog.as_ref())?;
        for (path, info) in &segments {
            if !live.contains(&info.stream) {
                continue;
            }
            let (path, metas) = open_segment(catalog.as_ref(), &objects, path, info).await?;
            let stream = streams.entry(info.stream.clone()).or_default();
            for (agent, seq) in &info.batches {
                note_batch(&mut stream.batches, agent, *seq);
            }
            for meta in metas {
                stream.last_ingestion = Some(
                    stream
                        .last_ingestion
                        .map_or(meta.max_ingestion, |l| l.max(meta.max_ingestion)),
                );
                stream.blocks.push(BlockRef {
                    path: path.clone(),
                    meta: Arc::new(meta),
                });
            }
        }
        let mut replayed = 0;
        for (seq, payload) in &recovery.records {
            if *seq <= state.checkpoint {
                continue;
            }
            let (id, ingestion, events, batch) = decode(payload)
                .map_err(|m| LogsError::Storage(format!("logs WAL record {seq}: {m}")))?;
            if live.contains(&id) {
                let stream = streams.entry(id).or_default();
                if let Some((agent, n)) = batch {
                    note_batch(&mut stream.batches, &agent, n);
                }
                apply(stream, *seq, ingestion, events);
            }
            replayed += 1;
        }
        tracing::info!(
            segments = segments.len(),
            records = replayed,
            "logs recovered"
        );
        let unflushed = streams
            .values()
            .flat_map(|s| &s.events)
            .map(|e| e.message.len() as u64)
            .sum();
        Ok(Self {
            catalog,
            objects,
            wal,
            streams: RwLock::new(streams),
            clock,
            tokens,
            names: Arc::new(tokio::sync::Mutex::new(())),
            maintenance: tokio::sync::Mutex::new(()),
            tail: tokio::sync::broadcast::channel(16_384).0,
            unflushed: AtomicU64::new(unflushed),
            moved_through: AtomicU64::new(state.checkpoint),
        })
    }

    /// Message bytes not yet in segments.
    pub fn unflushed_bytes(&self) -> u64 {
        self.unflushed.load(Ordering::Relaxed)
    }

    /// Moves every WAL record into segment objects (one per stream and UTC
    /// day of the events), then drops what retention expired and what deleted
    /// streams left behind. Returns (events flushed, segments deleted).
    pub async fn maintain(&self) -> Result<(u64, u64), LogsError> {
        let _one_at_a_time = self.maintenance.lock().await;
        let flushed = self.flush_locked().await?;
        let purged = self.purge_locked().await?;
        Ok((flushed, purged))
    }

    async fn flush_locked(&self) -> Result<u64, LogsError> {
        let mut state = read_state(self.catalog.as_ref())?;
        let boundary = self.wal.rotate().await.map_err(storage)?;
        let records = self
            .wal
            .read_closed(state.checkpoint, boundary)
            .map_err(storage)?;
        let checkpoint = boundary.saturating_sub(1).max(state.checkpoint);
        if records.is_empty() {
            if checkpoint > state.checkpoint {
                state.checkpoint = checkpoint;
                self.commit(Vec::new(), &state)?;
            }
            self.wal.remove_through(state.checkpoint).map_err(storage)?;
            return Ok(0);
        }
        // (stream id, day) → events, in WAL order.
        let mut partitions: std::collections::BTreeMap<(String, i64), Vec<Event>> =
            std::collections::BTreeMap::new();
        let mut moved = 0u64;
        // Batch ids of the flushed records, kept with the segments so a
        // resent batch is still known once its WAL record is gone.
        let mut batches: HashMap<String, BTreeMap<String, u64>> = HashMap::new();
        for (seq, payload) in &records {
            let (id, ingestion, events, batch) = decode(payload)
                .map_err(|m| LogsError::Storage(format!("logs WAL record {seq}: {m}")))?;
            if let Some((agent, n)) = batch {
                note_batch(batches.entry(id.clone()).or_default(), &agent, n);
            }
            for (i, (timestamp, message)) in events.into_iter().enumerate() {
                moved += 1;
                partitions
                    .entry((id.clone(), timestamp.div_euclid(DAY_MS) * DAY_MS))
                    .or_default()
                    .push(Event {
                        timestamp,
                        ingestion,
                        seq: seq * 16_384 + i as u64,
                        message: Arc::from(message),
                    });
            }
        }
        state.generation += 1;
        state.checkpoint = checkpoint;
        let mut ops = Vec::new();
        let mut written: Vec<(String, Arc<str>, Vec<BlockMeta>)> = Vec::new();
        for ((stream, day), mut events) in partitions {
            events.sort_by_key(Event::key);
            let path = format!(
                "logs/stream={stream}/day={day}/{:020}.twl",
                state.generation
            );
            let count = events.len() as u64;
            let (bytes, metas) =
                tokio::task::spawn_blocking(move || blocks::encode_segment(&events))
                    .await
                    .map_err(storage)?;
            let info = SegmentInfo {
                batches: batches.get(&stream).cloned().unwrap_or_default(),
                stream,
                day,
                events: count,
                bytes: bytes.len() as u64,
            };
            self.objects
                .put_durable(&path, bytes.into())
                .await
                .map_err(storage)?;
            ops.push(CatalogOp::put(
                SEGMENTS,
                path.clone(),
                serde_json::to_vec(&info).map_err(storage)?,
            ));
            written.push((info.stream, Arc::from(path), metas));
        }
        self.commit(ops, &state)?;
        self.move_to_blocks(written, state.checkpoint);
        self.wal.remove_through(state.checkpoint).map_err(storage)?;
        Ok(moved)
    }

    /// After a flush committed: the written blocks join their streams and the
    /// events of WAL records up to `checkpoint` leave memory, in one step.
    fn move_to_blocks(&self, written: Vec<(String, Arc<str>, Vec<BlockMeta>)>, checkpoint: u64) {
        let mut streams = self.streams.write().unwrap_or_else(|p| p.into_inner());
        for (stream, path, metas) in written {
            // The entry may not exist yet when the events' own apply lost the
            // race with this flush (see put_events); a deleted stream's entry
            // is dropped by the next purge, which also deletes its segments.
            streams
                .entry(stream)
                .or_default()
                .blocks
                .extend(metas.into_iter().map(|meta| BlockRef {
                    path: path.clone(),
                    meta: Arc::new(meta),
                }));
        }
        self.moved_through.store(checkpoint, Ordering::Relaxed);
        let mut left = 0u64;
        for s in streams.values_mut() {
            s.events.retain(|e| e.seq / 16_384 > checkpoint);
            left += s.events.iter().map(|e| e.message.len() as u64).sum::<u64>();
        }
        self.unflushed.store(left, Ordering::Relaxed);
    }

    /// Deletes segments wholly older than their group's retention, and those
    /// of deleted streams; drops expired events from memory.
    async fn purge_locked(&self) -> Result<u64, LogsError> {
        let now = self.clock.now();
        // Stream id → retention cutoff of its group (i64::MIN: never expires).
        let mut cutoffs: HashMap<String, i64> = HashMap::new();
        for (key, value) in self.catalog.list(STREAMS, "").map_err(storage)? {
            let Ok(stream) = serde_json::from_slice::<StreamRecord>(&value) else {
                continue;
            };
            let group_key = key.rsplit_once(':').map_or("", |(g, _)| g);
            let cutoff = self
                .catalog
                .get(GROUPS, group_key)
                .map_err(storage)?
                .and_then(|g| serde_json::from_slice::<GroupRecord>(&g).ok())
                .map_or(i64::MIN, |g| g.cutoff(now));
            cutoffs.insert(stream.id, cutoff);
        }
        let doomed: Vec<String> = segment_infos(self.catalog.as_ref())?
            .into_iter()
            .filter(|(_, info)| match cutoffs.get(&info.stream) {
                None => true,
                Some(cutoff) => info.day + DAY_MS <= *cutoff,
            })
            .map(|(path, _)| path)
            .collect();
        if !doomed.is_empty() {
            let mut state = read_state(self.catalog.as_ref())?;
            state.generation += 1;
            let ops = doomed
                .iter()
                .map(|p| CatalogOp::delete(SEGMENTS, p.clone()))
                .collect();
            self.commit(ops, &state)?;
            for path in &doomed {
                if let Err(err) = self.objects.delete(path).await {
                    tracing::warn!(path, error = %err, "failed to delete an expired log segment");
                }
            }
        }
        let doomed: std::collections::HashSet<&str> = doomed.iter().map(String::as_str).collect();
        let mut streams = self.streams.write().unwrap_or_else(|p| p.into_inner());
        streams.retain(|id, _| cutoffs.contains_key(id));
        for (id, stream) in streams.iter_mut() {
            let cutoff = cutoffs.get(id).copied().unwrap_or(i64::MIN);
            let expired = stream.events.partition_point(|e| e.timestamp < cutoff);
            stream.events.drain(..expired);
            stream.blocks.retain(|b| !doomed.contains(&*b.path));
        }
        Ok(doomed.len() as u64)
    }

    fn commit(&self, mut ops: Vec<CatalogOp>, state: &State) -> Result<(), LogsError> {
        ops.push(CatalogOp::put(
            STATE_TABLE,
            STATE_KEY,
            serde_json::to_vec(state).map_err(storage)?,
        ));
        self.catalog.commit(&ops).map_err(storage)
    }

    /// Visible events of stream `id` with `lo <= timestamp <= hi` (ms):
    /// (timestamp, ingestion, sequence, message), in time order.
    pub async fn events_between(
        &self,
        id: &str,
        lo: i64,
        hi: i64,
        cutoff: i64,
    ) -> Result<Vec<(i64, i64, u64, Arc<str>)>, LogsError> {
        let scan = Scan::everything(lo.max(cutoff), hi);
        let (blocks, memory) = self.snapshot(&[id], &scan);
        let (events, _) = self.scan(blocks, memory, scan).await?;
        Ok(events
            .into_iter()
            .map(|(_, e)| (e.timestamp, e.ingestion, e.seq, e.message))
            .collect())
    }

    /// The visible event of stream `id` with sequence `seq`:
    /// (timestamp, ingestion, message).
    pub async fn event(
        &self,
        id: &str,
        seq: u64,
        cutoff: i64,
    ) -> Result<Option<(i64, i64, Arc<str>)>, LogsError> {
        let candidates: Vec<BlockRef> = {
            let streams = self.streams.read().unwrap_or_else(|p| p.into_inner());
            let Some(s) = streams.get(id) else {
                return Ok(None);
            };
            if let Some(e) = s.events.iter().find(|e| e.seq == seq) {
                return Ok(
                    (e.timestamp >= cutoff).then(|| (e.timestamp, e.ingestion, e.message.clone()))
                );
            }
            s.blocks
                .iter()
                .filter(|b| {
                    (b.meta.seqs.0..=b.meta.seqs.1).contains(&seq) && b.meta.max.0 >= cutoff
                })
                .cloned()
                .collect()
        };
        for b in candidates {
            let bytes = self.fetch(&b).await?;
            let block = blocks::decode_block(&bytes, &b.meta).map_err(|m| corrupt(&b, m))?;
            if let Some(i) = block.seqs.iter().position(|&s| s == seq) {
                let e = block.event(i);
                return Ok((e.timestamp >= cutoff).then_some((
                    e.timestamp,
                    e.ingestion,
                    e.message,
                )));
            }
        }
        Ok(None)
    }

    /// What a reader of every event of `ids` with `lo <= timestamp <= hi`
    /// (and not under `cutoff`) must read: blocks, which may also hold
    /// events outside the range, and unflushed events, which do not; each
    /// tagged with the index of its stream in `ids`.
    pub fn plan(
        &self,
        ids: &[&str],
        lo: i64,
        hi: i64,
        cutoff: i64,
    ) -> (Vec<PlannedBlock>, Vec<(usize, Event)>) {
        let scan = Scan::everything(lo.max(cutoff), hi);
        let (mut blocks, memory) = self.snapshot(ids, &scan);
        blocks.sort_by_key(|(i, b)| (*i, b.meta.min));
        let blocks = blocks
            .into_iter()
            .map(|(stream, block)| PlannedBlock { stream, block })
            .collect();
        (blocks, memory)
    }

    /// The bytes of planned blocks (or of their columns only: times and
    /// lengths), in order.
    pub async fn fetch_blocks(
        &self,
        blocks: &[&PlannedBlock],
        columns: bool,
    ) -> Result<Vec<bytes::Bytes>, LogsError> {
        let refs: Vec<&BlockRef> = blocks.iter().map(|b| &b.block).collect();
        self.fetch_many(&refs, columns).await
    }

    /// Fetches blocks, one request per segment: runs of blocks of one
    /// segment are read together (a local file is opened once).
    async fn fetch_many(
        &self,
        blocks: &[&BlockRef],
        columns: bool,
    ) -> Result<Vec<bytes::Bytes>, LogsError> {
        let mut runs: Vec<(&str, Vec<std::ops::Range<u64>>)> = Vec::new();
        for b in blocks {
            let range = if columns {
                b.meta.columns_range()
            } else {
                b.meta.range()
            };
            match runs.last_mut() {
                Some((path, ranges)) if *path == &*b.path => ranges.push(range),
                _ => runs.push((&b.path, vec![range])),
            }
        }
        let fetched = futures::future::try_join_all(
            runs.iter()
                .map(|(path, ranges)| self.objects.get_ranges(path, ranges)),
        )
        .await
        .map_err(storage)?;
        Ok(fetched.into_iter().flatten().collect())
    }

    /// The blocks and unflushed events of `ids` that `scan` may need; a
    /// block or event is tagged with the index of its stream in `ids`.
    fn snapshot(&self, ids: &[&str], scan: &Scan) -> Snapshot {
        let literals = scan.pattern.as_ref().and_then(|p| p.required_literals());
        let streams = self.streams.read().unwrap_or_else(|p| p.into_inner());
        let (mut blocks, mut memory) = (Vec::new(), Vec::new());
        for (i, id) in ids.iter().enumerate() {
            let Some(s) = streams.get(*id) else {
                continue;
            };
            let lo = s.events.partition_point(|e| e.timestamp < scan.lo);
            let hi = s.events.partition_point(|e| e.timestamp <= scan.hi).max(lo);
            memory.extend(
                s.events[lo..hi]
                    .iter()
                    .filter(|e| scan.admits(e.key()))
                    .map(|e| (i, e.clone())),
            );
            blocks.extend(
                s.blocks
                    .iter()
                    .filter(|b| {
                        let m = &b.meta;
                        m.max.0 >= scan.lo
                            && m.min.0 <= scan.hi
                            && scan.after.is_none_or(|a| {
                                if scan.forward {
                                    m.max > a
                                } else {
                                    m.min < a
                                }
                            })
                            && literals.as_ref().is_none_or(|l| m.may_match(l))
                    })
                    .map(|b| (i, b.clone())),
            );
        }
        (blocks, memory)
    }

    async fn fetch(&self, b: &BlockRef) -> Result<bytes::Bytes, LogsError> {
        self.objects
            .get_range(&b.path, b.meta.range())
            .await
            .map_err(storage)
    }

    /// Reads, in the scan's order, the events of `blocks` and `memory` that
    /// the scan admits and its pattern matches, until the page (limit, and
    /// the 1 MB budget when asked) is settled. Blocks are fetched and
    /// matched in growing batches, in parallel. Returns the page and whether
    /// more may follow.
    async fn scan(
        &self,
        mut blocks: Vec<(usize, BlockRef)>,
        memory: Vec<(usize, Event)>,
        scan: Scan,
    ) -> Result<(Vec<(usize, Event)>, bool), LogsError> {
        let mut found: Vec<(usize, Event)> = memory
            .into_iter()
            .filter(|(_, e)| scan.pattern.as_ref().is_none_or(|p| p.matches(&e.message)))
            .collect();
        if scan.forward {
            blocks.sort_by_key(|(_, b)| b.meta.min);
        } else {
            blocks.sort_by_key(|(_, b)| std::cmp::Reverse(b.meta.max));
        }
        let (mut next, mut batch) = (0, 2);
        let scan = Arc::new(scan);
        while let Some(frontier) =
            blocks
                .get(next)
                .map(|(_, b)| if scan.forward { b.meta.min } else { b.meta.max })
        {
            if scan.limit != usize::MAX {
                let settled = found.iter().filter(|(_, e)| scan.before(e.key(), frontier));
                let (mut count, mut bytes) = (0usize, 0usize);
                for (_, e) in settled {
                    count += 1;
                    bytes += e.message.len() + EVENT_OVERHEAD;
                }
                if count >= scan.limit || (scan.budget && bytes >= MAX_BATCH_BYTES) {
                    break;
                }
            }
            let chunk: Vec<(usize, BlockRef)> =
                blocks[next..(next + batch).min(blocks.len())].to_vec();
            next += chunk.len();
            batch = (batch * 2).min(64);
            let fetched = self
                .fetch_many(&chunk.iter().map(|(_, b)| b).collect::<Vec<_>>(), false)
                .await?;
            let work: Vec<(usize, BlockRef, bytes::Bytes)> = chunk
                .into_iter()
                .zip(fetched)
                .map(|((i, b), bytes)| (i, b, bytes))
                .collect();
            let scan = scan.clone();
            let matched = tokio::task::spawn_blocking(move || match_blocks(&work, &scan))
                .await
                .map_err(storage)??;
            found.extend(matched);
        }
        if scan.forward {
            found.sort_by_key(|(_, e)| e.key());
        } else {
            found.sort_by_key(|(_, e)| std::cmp::Reverse(e.key()));
        }
        let mut budget = MAX_BATCH_BYTES;
        let mut taken = 0;
        for (_, e) in found.iter().take(scan.limit) {
            let size = e.message.len() + EVENT_OVERHEAD;
            if scan.budget && size > budget && taken > 0 {
                break;
            }
            budget = budget.saturating_sub(size);
            taken += 1;
        }
        let more = taken < found.len() || next < blocks.len();
        found.truncate(taken);
        Ok((found, more))
    }

    /// Events ingested from now on, for a Live Tail session.
    pub fn subscribe_tail(&self) -> tokio::sync::broadcast::Receiver<Arc<TailEvent>> {
        self.tail.subscribe()
    }

    /// Offers stored events to Live Tail sessions (none listening: no cost).
    pub fn publish_tail(&self, events: impl FnOnce() -> Vec<TailEvent>) {
        if self.tail.receiver_count() > 0 {
            for e in events() {
                // Sessions that fell behind skip events (§11.3 bounds buffering).
                let _ = self.tail.send(Arc::new(e));
            }
        }
    }

    /// Held from a name check until the changes it allowed are committed.
    pub async fn lock_names(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.names.clone().lock_owned().await
    }

    /// Flushes the WAL into segments, then closes it.
    pub async fn shutdown(&self) -> Result<(), LogsError> {
        if let Err(err) = self.maintain().await {
            tracing::error!(error = %err, "failed to flush log events to segments at shutdown");
        }
        self.wal.shutdown().await.map_err(storage)
    }

    /// The group `name`, if it exists.
    pub fn group(
        &self,
        account: &str,
        region: &str,
        name: &str,
    ) -> Result<Option<GroupRecord>, LogsError> {
        self.catalog
            .get(GROUPS, &group_key(account, region, name))
            .map_err(storage)?
            .map(|v| serde_json::from_slice(&v).map_err(storage))
            .transpose()
    }

    /// Every group of (account, region) in name order.
    pub fn groups(
        &self,
        account: &str,
        region: &str,
    ) -> Result<Vec<(String, GroupRecord)>, LogsError> {
        list_under(
            self.catalog.as_ref(),
            GROUPS,
            &format!("{account}:{region}:"),
        )
    }

    /// Changes that create group `name`.
    pub fn create_group_changes(
        &self,
        account: &str,
        region: &str,
        name: &str,
        record: &GroupRecord,
    ) -> Result<Vec<CatalogOp>, LogsError> {
        Ok(vec![CatalogOp::put(
            GROUPS,
            group_key(account, region, name),
            serde_json::to_vec(record).map_err(storage)?,
        )])
    }

    /// Changes that replace group `name`'s record (retention, protection).
    pub fn update_group_changes(
        &self,
        account: &str,
        region: &str,
        name: &str,
        record: &GroupRecord,
    ) -> Result<Vec<CatalogOp>, LogsError> {
        self.create_group_changes(account, region, name, record)
    }

    /// Changes that delete group `name` and its streams.
    pub fn delete_group_changes(
        &self,
        account: &str,
        region: &str,
        name: &str,
    ) -> Result<Vec<CatalogOp>, LogsError> {
        let mut ops = vec![CatalogOp::delete(GROUPS, group_key(account, region, name))];
        for (filter, _) in self.metric_filters(account, region, name)? {
            ops.extend(self.delete_filter_changes(account, region, name, &filter));
        }
        for (filter, _) in self.subscription_filters(account, region, name)? {
            ops.push(CatalogOp::delete(
                subscriptions::FILTERS,
                subscriptions::filter_key(account, region, name, &filter),
            ));
        }
        for (stream, _) in self.streams_of(account, region, name)? {
            ops.push(CatalogOp::delete(
                STREAMS,
                stream_key(account, region, name, &stream),
            ));
        }
        Ok(ops)
    }

    /// The stream `name` of `group`, if it exists.
    pub fn stream(
        &self,
        account: &str,
        region: &str,
        group: &str,
        name: &str,
    ) -> Result<Option<StreamRecord>, LogsError> {
        self.catalog
            .get(STREAMS, &stream_key(account, region, group, name))
            .map_err(storage)?
            .map(|v| serde_json::from_slice(&v).map_err(storage))
            .transpose()
    }

    /// Every stream of `group` in name order.
    pub fn streams_of(
        &self,
        account: &str,
        region: &str,
        group: &str,
    ) -> Result<Vec<(String, StreamRecord)>, LogsError> {
        list_under(
            self.catalog.as_ref(),
            STREAMS,
            &format!("{account}:{region}:{group}:"),
        )
    }

    /// Changes that create stream `name` in `group`.
    pub fn create_stream_changes(
        &self,
        account: &str,
        region: &str,
        group: &str,
        name: &str,
    ) -> Result<Vec<CatalogOp>, LogsError> {
        let record = StreamRecord {
            v: 1,
            created_ms: self.clock.now().millis(),
            id: uuid::Uuid::new_v4().to_string(),
        };
        Ok(vec![CatalogOp::put(
            STREAMS,
            stream_key(account, region, group, name),
            serde_json::to_vec(&record).map_err(storage)?,
        )])
    }

    /// Changes that delete stream `name` of `group`.
    pub fn delete_stream_changes(
        &self,
        account: &str,
        region: &str,
        group: &str,
        name: &str,
    ) -> Vec<CatalogOp> {
        vec![CatalogOp::delete(
            STREAMS,
            stream_key(account, region, group, name),
        )]
    }

    /// The subscription filters of `group` in name order.
    pub fn subscription_filters(
        &self,
        account: &str,
        region: &str,
        group: &str,
    ) -> Result<Vec<(String, SubscriptionRecord)>, LogsError> {
        list_under(
            self.catalog.as_ref(),
            subscriptions::FILTERS,
            &format!("{account}:{region}:{group}:"),
        )
    }

    /// The destinations of (account, region) in name order.
    pub fn destinations(
        &self,
        account: &str,
        region: &str,
    ) -> Result<Vec<(String, DestinationRecord)>, LogsError> {
        list_under(
            self.catalog.as_ref(),
            subscriptions::DESTINATIONS,
            &format!("{account}:{region}:"),
        )
    }

    /// The stream `name` of `group`, created (a system write, committed at
    /// once) when missing: where subscription deliveries land.
    pub fn ensure_stream(
        &self,
        account: &str,
        region: &str,
        group: &str,
        name: &str,
    ) -> Result<StreamRecord, LogsError> {
        if let Some(s) = self.stream(account, region, group, name)? {
            return Ok(s);
        }
        let ops = self.create_stream_changes(account, region, group, name)?;
        self.catalog.commit(&ops).map_err(storage)?;
        self.stream(account, region, group, name)?
            .ok_or_else(LogsError::stream_not_found)
    }

    /// Every export task of `account`.
    pub fn export_tasks(&self, account: &str) -> Result<Vec<ExportTask>, LogsError> {
        self.catalog
            .list(EXPORTS, &format!("{account}:"))
            .map_err(storage)?
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v).map_err(storage))
            .collect()
    }

    fn save_task(&self, task: &ExportTask) -> Result<(), LogsError> {
        self.catalog.commit(&[task.put()]).map_err(storage)
    }

    /// Runs every PENDING export task (the maintenance worker calls this).
    pub async fn run_pending_exports(&self) -> Result<usize, LogsError> {
        let pending: Vec<ExportTask> = self
            .catalog
            .list(EXPORTS, "")
            .map_err(storage)?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice::<ExportTask>(&v).ok())
            .filter(|t| t.status == "PENDING")
            .collect();
        for mut task in pending.clone() {
            task.status = "RUNNING".into();
            self.save_task(&task)?;
            let outcome = self.export(&task).await;
            // A cancel that arrived meanwhile wins.
            let current = self
                .export_tasks(&task.account)?
                .into_iter()
                .find(|t| t.id == task.id);
            let mut done = current.unwrap_or(task);
            match (done.status.as_str(), outcome) {
                ("PENDING_CANCEL" | "CANCELLED", _) => {
                    done.status = "CANCELLED".into();
                    done.message = Some("Cancelled by user".into());
                }
                (_, Ok(())) => {
                    done.status = "COMPLETED".into();
                    done.message = Some("Completed successfully".into());
                }
                (_, Err(err)) => {
                    done.status = "FAILED".into();
                    done.message = Some(err.to_string());
                }
            }
            done.completed_ms = Some(self.clock.now().millis());
            self.save_task(&done)?;
        }
        Ok(pending.len())
    }

    async fn export(&self, task: &ExportTask) -> Result<(), LogsError> {
        let group = self
            .group(&task.account, &task.region, &task.group)?
            .ok_or_else(LogsError::group_not_found)?;
        let cutoff = group.cutoff(self.clock.now());
        self.objects
            .put_durable(
                &export::object_path(task, "aws-logs-write-test"),
                bytes::Bytes::from_static(b"Permission Check Successful"),
            )
            .await
            .map_err(storage)?;
        for (name, stream) in self.streams_of(&task.account, &task.region, &task.group)? {
            if task
                .stream_prefix
                .as_ref()
                .is_some_and(|p| !name.starts_with(p.as_str()))
            {
                continue;
            }
            let cancelled = self
                .export_tasks(&task.account)?
                .iter()
                .any(|t| t.id == task.id && t.status != "RUNNING");
            if cancelled {
                return Ok(());
            }
            let events: Vec<(i64, Arc<str>)> = self
                .events_between(&stream.id, task.from, task.to, cutoff)
                .await?
                .into_iter()
                .map(|(t, _, _, m)| (t, m))
                .collect();
            if events.is_empty() {
                continue;
            }
            let chunks = export::chunks(events.iter().map(|(t, m)| (*t, &**m))).map_err(storage)?;
            for (i, chunk) in chunks.into_iter().enumerate() {
                let key = format!("{}/{}/{i:06}.gz", task.id, name);
                self.objects
                    .put_durable(&export::object_path(task, &key), chunk.into())
                    .await
                    .map_err(storage)?;
            }
        }
        Ok(())
    }

    /// The metric filters of `group` in name order.
    pub fn metric_filters(
        &self,
        account: &str,
        region: &str,
        group: &str,
    ) -> Result<Vec<(String, MetricFilterRecord)>, LogsError> {
        self.metric_filters_under(&format!("{account}:{region}:{group}:"))
            .map(|all| all.into_iter().map(|(_, name, f)| (name, f)).collect())
    }

    /// Every metric filter of (account, region): (group, name, record), by group then name.
    pub fn all_metric_filters(
        &self,
        account: &str,
        region: &str,
    ) -> Result<Vec<(String, String, MetricFilterRecord)>, LogsError> {
        self.metric_filters_under(&format!("{account}:{region}:"))
    }

    fn metric_filters_under(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, String, MetricFilterRecord)>, LogsError> {
        let scope = prefix.splitn(3, ':').take(2).map(str::len).sum::<usize>() + 2;
        self.catalog
            .list(FILTERS, prefix)
            .map_err(storage)?
            .into_iter()
            .map(|(k, v)| {
                let rest = &k[scope.min(k.len())..];
                let (group, name) = rest.rsplit_once(':').unwrap_or(("", rest));
                serde_json::from_slice(&v)
                    .map(|f| (group.to_owned(), name.to_owned(), f))
                    .map_err(storage)
            })
            .collect()
    }

    /// Changes that create or replace a metric filter.
    pub fn put_filter_changes(
        &self,
        account: &str,
        region: &str,
        group: &str,
        name: &str,
        record: &MetricFilterRecord,
    ) -> Result<Vec<CatalogOp>, LogsError> {
        Ok(vec![CatalogOp::put(
            FILTERS,
            format!("{account}:{region}:{group}:{name}"),
            serde_json::to_vec(record).map_err(storage)?,
        )])
    }

    /// Changes that delete a metric filter.
    pub fn delete_filter_changes(
        &self,
        account: &str,
        region: &str,
        group: &str,
        name: &str,
    ) -> Vec<CatalogOp> {
        vec![CatalogOp::delete(
            FILTERS,
            format!("{account}:{region}:{group}:{name}"),
        )]
    }

    /// Visible statistics of stream `id` under `cutoff`. Only blocks that
    /// straddle the cutoff are read; the others are counted from the
    /// directory.
    pub async fn stream_stats(&self, id: &str, cutoff: i64) -> Result<StreamStats, LogsError> {
        let (straddling, mut stats) = {
            let streams = self.streams.read().unwrap_or_else(|p| p.into_inner());
            let Some(s) = streams.get(id) else {
                return Ok(StreamStats::default());
            };
            let from = s.events.partition_point(|e| e.timestamp < cutoff);
            let visible = &s.events[from..];
            let mut stats = StreamStats {
                first_event: visible.first().map(|e| e.timestamp),
                last_event: visible.last().map(|e| e.timestamp),
                last_ingestion: s.last_ingestion,
                stored_bytes: visible.iter().map(|e| e.message.len() as u64).sum(),
            };
            let mut straddling = Vec::new();
            for b in s.blocks.iter().filter(|b| b.meta.max.0 >= cutoff) {
                stats.last_event = stats.last_event.max(Some(b.meta.max.0));
                if b.meta.min.0 >= cutoff {
                    let first = stats.first_event.unwrap_or(b.meta.min.0).min(b.meta.min.0);
                    stats.first_event = Some(first);
                    stats.stored_bytes += b.meta.bytes;
                } else {
                    straddling.push(b.clone());
                }
            }
            (straddling, stats)
        };
        for b in straddling {
            let bytes = self.fetch(&b).await?;
            let block = blocks::decode_block(&bytes, &b.meta).map_err(|m| corrupt(&b, m))?;
            for k in (0..block.len()).filter(|&k| block.timestamps[k] >= cutoff) {
                let t = block.timestamps[k];
                stats.first_event = Some(stats.first_event.unwrap_or(t).min(t));
                stats.stored_bytes += block.message(k).len() as u64;
            }
        }
        Ok(stats)
    }

    /// PutLogEvents (§4.2) after the shape checks: `events` are (timestamp,
    /// message) in request order, for a stream that exists.
    pub async fn put_events(
        &self,
        group: &GroupRecord,
        stream: &StreamRecord,
        events: &[(i64, String)],
    ) -> Result<(Rejected, std::ops::Range<usize>), LogsError> {
        self.put_batch(group, stream, events, None).await
    }

    /// [`Self::put_events`] for a named agent batch: one stored already
    /// answers as stored, with an empty range, and is not stored again.
    pub async fn put_batch(
        &self,
        group: &GroupRecord,
        stream: &StreamRecord,
        events: &[(i64, String)],
        batch: Option<BatchId<'_>>,
    ) -> Result<(Rejected, std::ops::Range<usize>), LogsError> {
        let now = self.clock.now();
        let size: usize = events.iter().map(|(_, m)| m.len() + EVENT_OVERHEAD).sum();
        if size > MAX_BATCH_BYTES {
            return Err(LogsError::InvalidParameter(format!(
                "Upload too large: {size} bytes exceeds limit of {MAX_BATCH_BYTES}"
            )));
        }
        if events.windows(2).any(|w| w[1].0 < w[0].0) {
            return Err(LogsError::InvalidParameter(
                "Log events in a single PutLogEvents request must be in chronological order."
                    .to_owned(),
            ));
        }
        let now_ms = now.millis();
        let too_old = |t: i64| t < now_ms - 14 * DAY_MS;
        let expired = |t: i64| t < group.cutoff(now);
        let too_new = |t: i64| t > now_ms + 2 * HOUR_MS;
        let count = |f: &dyn Fn(i64) -> bool| events.iter().take_while(|(t, _)| f(*t)).count();
        let old_end = count(&too_old);
        let expired_end = count(&expired);
        let new_start = events.iter().position(|(t, _)| too_new(*t));
        let valid_end = new_start.unwrap_or(events.len());
        let first_valid = old_end.max(expired_end);
        let valid = if first_valid < valid_end {
            &events[first_valid..valid_end]
        } else {
            &[][..]
        };
        if let (Some(first), Some(last)) = (valid.first(), valid.last()) {
            if last.0 - first.0 > DAY_MS {
                return Err(LogsError::InvalidParameter(
                    "The batch of log events in a single PutLogEvents request cannot span more than 24 hours."
                        .to_owned(),
                ));
            }
        }
        let rejected = Rejected {
            too_old_end: (old_end > 0).then_some(old_end),
            expired_end: (expired_end > 0).then_some(expired_end),
            too_new_start: new_start,
        };
        let stored = first_valid..valid_end.max(first_valid);
        if valid.is_empty() {
            return Ok((rejected, stored));
        }
        if let Some((agent, n)) = batch {
            if self.seen_batch(&stream.id, agent, n) {
                // Stored before; the caller learns it as a success, and
                // nothing downstream (filters, subscriptions) sees it again.
                return Ok((rejected, first_valid..first_valid));
            }
        }
        let valid: Vec<(i64, String)> = valid.to_vec();
        let payload = encode(&stream.id, now_ms, &valid, batch);
        let bytes: u64 = valid.iter().map(|(_, m)| m.len() as u64).sum();
        let seq = self.wal.append(payload).await.map_err(storage)?;
        let mut streams = self.streams.write().unwrap_or_else(|p| p.into_inner());
        if seq <= self.moved_through.load(Ordering::Relaxed) {
            // A flush that rotated the WAL after our append has already put
            // these events in blocks: adding them here would show them twice.
            return Ok((rejected, stored));
        }
        let entry = streams.entry(stream.id.clone()).or_default();
        if let Some((agent, n)) = batch {
            note_batch(&mut entry.batches, agent, n);
        }
        apply(entry, seq, now_ms, valid);
        self.unflushed.fetch_add(bytes, Ordering::Relaxed);
        Ok((rejected, stored))
    }

    /// Whether `agent` already stored batch `seq` (or a later one) in stream `id`.
    fn seen_batch(&self, id: &str, agent: &str, seq: u64) -> bool {
        let streams = self.streams.read().unwrap_or_else(|p| p.into_inner());
        streams
            .get(id)
            .and_then(|s| s.batches.get(agent))
            .is_some_and(|newest| seq <= *newest)
    }

    /// GetLogEvents (§5.1) on stream `id`.
    pub async fn get_events(
        &self,
        id: &str,
        cutoff: i64,
        q: &GetQuery,
    ) -> Result<GetPage, LogsError> {
        let invalid = || LogsError::InvalidParameter("The specified nextToken is invalid.".into());
        let token = match &q.token {
            Some(t) => {
                let (dir, rest) = t.split_once('/').ok_or_else(invalid)?;
                let digits = rest.strip_suffix("/s").ok_or_else(invalid)?;
                let key = parse_digits(digits).ok_or_else(invalid)?;
                match dir {
                    "f" => Some((true, key)),
                    "b" => Some((false, key)),
                    _ => return Err(invalid()),
                }
            }
            None => None,
        };
        let limit = q.limit.unwrap_or(10_000).clamp(1, 10_000);
        let start = q.start.unwrap_or(0).max(cutoff);
        let end = q.end.unwrap_or(MAX_TS);
        let forward = token.map_or(q.start_from_head, |(f, _)| f);
        let scan = Scan {
            lo: start,
            // endTime is exclusive here (§5.1).
            hi: end.saturating_sub(1),
            forward,
            after: token.map(|(_, k)| k),
            limit,
            budget: true,
            pattern: None,
        };
        let (blocks, memory) = self.snapshot(&[id], &scan);
        let (page, _) = self.scan(blocks, memory, scan).await?;
        let mut page: Vec<Event> = page.into_iter().map(|(_, e)| e).collect();
        if !forward {
            page.reverse();
        }
        let (next_forward, next_backward) = match (page.first(), page.last()) {
            (Some(first), Some(last)) => (
                format!("f/{}/s", key_digits(last.key())),
                format!("b/{}/s", key_digits(first.key())),
            ),
            _ => match (token, &q.token) {
                // The end-of-stream quirk: the caller's own token comes back.
                (Some((true, k)), Some(sent)) => (
                    sent.clone(),
                    format!("b/{}/s", key_digits((k.0, k.1, k.2.saturating_add(1)))),
                ),
                (Some((false, k)), Some(sent)) => (format!("f/{}/s", key_digits(k)), sent.clone()),
                _ => (
                    format!("f/{}/s", key_digits((start, 0, 0))),
                    format!("b/{}/s", key_digits((end, 0, 0))),
                ),
            },
        };
        Ok(GetPage {
            events: page,
            forward: next_forward,
            backward: next_backward,
        })
    }

    /// FilterLogEvents (§5.2) over `q.streams`.
    pub async fn filter_events(
        &self,
        cutoff: i64,
        q: &FilterQuery,
    ) -> Result<FilterPage, LogsError> {
        let now = self.clock.now();
        let pattern = Pattern::parse(&q.pattern)?;
        let filters = filters_hash(&["FilterLogEvents", &q.fingerprint]);
        let cursor: Option<FilterCursor> =
            match &q.token {
                Some(t) => Some(self.tokens.open(t, &filters, now, 24 * 3600).ok_or_else(
                    || LogsError::InvalidParameter("The specified nextToken is invalid.".into()),
                )?),
                None => None,
            };
        let forward = cursor.as_ref().map_or(q.start_from_head, |c| c.forward);
        if !forward && cursor.is_none() && q.start.unwrap_or(0) < NEWEST_FIRST_FROM_MS {
            return Err(LogsError::InvalidParameter(
                "startFromHead=false requires a startTime on or after 2024-01-01T00:00:00Z."
                    .to_owned(),
            ));
        }
        let limit = q.limit.unwrap_or(10_000).clamp(1, 10_000);
        let start = q.start.unwrap_or(0).max(cutoff);
        let end = q.end.unwrap_or(MAX_TS);
        let scan = Scan {
            lo: start,
            hi: end,
            forward,
            after: cursor.as_ref().map(|c| c.k),
            limit,
            budget: true,
            pattern: (!matches!(pattern, Pattern::All)).then(|| Arc::new(pattern)),
        };
        let ids: Vec<&str> = q.streams.iter().map(|(_, id)| id.as_str()).collect();
        let (blocks, memory) = self.snapshot(&ids, &scan);
        let (page, more) = self.scan(blocks, memory, scan).await?;
        let page: Vec<(String, Event)> = page
            .into_iter()
            .map(|(i, e)| (q.streams[i].0.clone(), e))
            .collect();
        let next_token = more.then(|| {
            let last = page.last().map_or((0, 0, 0), |(_, e)| e.key());
            self.tokens
                .issue(&filters, &FilterCursor { k: last, forward }, now)
        });
        Ok(FilterPage {
            events: page,
            next_token,
        })
    }
}

/// Durable maintenance state.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct State {
    /// Highest WAL sequence whose events are in segments.
    checkpoint: u64,
    /// Bumped by every segment commit; names new objects.
    generation: u64,
}

/// What the catalog knows of a log segment.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SegmentInfo {
    stream: String,
    /// UTC day (first ms) of every event in it.
    day: i64,
    events: u64,
    bytes: u64,
    /// The newest agent batch per agent among the segment's records.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    batches: BTreeMap<String, u64>,
}

fn read_state(catalog: &dyn Catalog) -> Result<State, LogsError> {
    match catalog.get(STATE_TABLE, STATE_KEY).map_err(storage)? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(storage),
        None => Ok(State::default()),
    }
}

/// Every record of `table` under `prefix`, keyed by the rest of its key.
fn list_under<T: serde::de::DeserializeOwned>(
    catalog: &dyn Catalog,
    table: &str,
    prefix: &str,
) -> Result<Vec<(String, T)>, LogsError> {
    catalog
        .list(table, prefix)
        .map_err(storage)?
        .into_iter()
        .map(|(k, v)| {
            serde_json::from_slice(&v)
                .map(|r| (k[prefix.len()..].to_owned(), r))
                .map_err(storage)
        })
        .collect()
}

fn segment_infos(catalog: &dyn Catalog) -> Result<Vec<(String, SegmentInfo)>, LogsError> {
    catalog
        .list(SEGMENTS, "")
        .map_err(storage)?
        .into_iter()
        .map(|(p, v)| serde_json::from_slice(&v).map(|i| (p, i)).map_err(storage))
        .collect()
}

fn live_streams(catalog: &dyn Catalog) -> Result<std::collections::HashSet<String>, LogsError> {
    Ok(catalog
        .list(STREAMS, "")
        .map_err(storage)?
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice::<StreamRecord>(&v).ok())
        .map(|s| s.id)
        .collect())
}

/// A segment's block directory, rewriting a version 1 segment as version 2
/// first (one zstd body could only be read whole). Returns the path the
/// blocks live at.
async fn open_segment(
    catalog: &dyn Catalog,
    objects: &Objects,
    path: &str,
    info: &SegmentInfo,
) -> Result<(Arc<str>, Vec<BlockMeta>), LogsError> {
    let bad = |m: String| LogsError::Storage(format!("log segment {path}: {m}"));
    let size = objects.size(path).await.map_err(storage)?;
    let head = objects
        .get_range(path, 0..size.min(5))
        .await
        .map_err(storage)?;
    if blocks::is_v1(&head) {
        let bytes = objects.get(path).await.map_err(storage)?;
        let events = blocks::decode_v1(&bytes).map_err(bad)?;
        let (encoded, metas) = blocks::encode_segment(&events);
        let new_path = format!("{}.v2.twl", path.trim_end_matches(".twl"));
        let info = SegmentInfo {
            bytes: encoded.len() as u64,
            ..info.clone()
        };
        objects
            .put_durable(&new_path, encoded.into())
            .await
            .map_err(storage)?;
        catalog
            .commit(&[
                CatalogOp::delete(SEGMENTS, path.to_owned()),
                CatalogOp::put(
                    SEGMENTS,
                    new_path.clone(),
                    serde_json::to_vec(&info).map_err(storage)?,
                ),
            ])
            .map_err(storage)?;
        if let Err(err) = objects.delete(path).await {
            tracing::warn!(path, error = %err, "failed to delete a rewritten version 1 log segment");
        }
        return Ok((Arc::from(new_path), metas));
    }
    let tail_len = blocks::TAIL_BYTES as u64;
    if size < tail_len {
        return Err(bad("truncated".into()));
    }
    let tail = objects
        .get_range(path, size - tail_len..size)
        .await
        .map_err(storage)?;
    let len = blocks::footer_len(&tail, size).map_err(bad)?;
    let footer = objects
        .get_range(path, size - tail_len - len..size - tail_len)
        .await
        .map_err(storage)?;
    let metas = blocks::decode_footer(&footer, &tail).map_err(bad)?;
    Ok((Arc::from(path), metas))
}

fn corrupt(b: &BlockRef, message: String) -> LogsError {
    LogsError::Storage(format!(
        "log segment {} block at {}: {message}",
        b.path, b.meta.offset
    ))
}

/// Matches the blocks of one scan batch, spread over the machine's cores.
fn match_blocks(
    work: &[(usize, BlockRef, bytes::Bytes)],
    scan: &Scan,
) -> Result<Vec<(usize, Event)>, LogsError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(work.len())
        .max(1);
    let run = |t: usize| -> Result<Vec<(usize, Event)>, LogsError> {
        let mut out = Vec::new();
        for w in work.iter().skip(t).step_by(threads) {
            out.extend(match_block(w, scan)?);
        }
        Ok(out)
    };
    if threads == 1 {
        return run(0);
    }
    std::thread::scope(|sc| {
        let run = &run;
        let handles: Vec<_> = (0..threads).map(|t| sc.spawn(move || run(t))).collect();
        let mut out = Vec::new();
        for h in handles {
            out.extend(
                h.join()
                    .map_err(|_| LogsError::Storage("a log block reader panicked".into()))??,
            );
        }
        Ok(out)
    })
}

/// The events of one block that `scan` admits and matches. With a literal
/// every match contains, the whole text is searched at once and only the
/// events it lands in are matched.
fn match_block(
    (i, b, bytes): &(usize, BlockRef, bytes::Bytes),
    scan: &Scan,
) -> Result<Vec<(usize, Event)>, LogsError> {
    let block = blocks::decode_block(bytes, &b.meta).map_err(|m| corrupt(b, m))?;
    let pattern = scan.pattern.as_deref();
    let mut out = Vec::new();
    let mut take = |k: usize| {
        if scan.admits(block.key(k)) && pattern.is_none_or(|p| p.matches(block.message(k))) {
            out.push((*i, block.event(k)));
        }
    };
    match pattern.and_then(Pattern::anchor) {
        Some(anchor) => {
            let finder = memchr::memmem::Finder::new(anchor.as_bytes());
            let text = block.text.as_bytes();
            let mut pos = 0;
            while let Some(off) = text.get(pos..).and_then(|rest| finder.find(rest)) {
                let k = block.event_at(pos + off);
                if k >= block.len() {
                    break;
                }
                take(k);
                pos = block.ends[k];
            }
        }
        None => (0..block.len()).for_each(&mut take),
    }
    Ok(out)
}

fn apply(stream: &mut StreamEvents, seq: u64, ingestion: i64, events: Vec<(i64, String)>) {
    stream.last_ingestion = Some(
        stream
            .last_ingestion
            .map_or(ingestion, |l| l.max(ingestion)),
    );
    // A batch is chronological (PutLogEvents checks it) with rising sequences,
    // so it is one sorted run: appended when it comes last (the usual case),
    // merged with the tail it overlaps otherwise — never one insert per event.
    let mut batch: Vec<Event> = events
        .into_iter()
        .enumerate()
        .map(|(i, (timestamp, message))| Event {
            timestamp,
            ingestion,
            seq: seq * 16_384 + i as u64,
            message: Arc::from(message),
        })
        .collect();
    batch.sort_by_key(Event::key);
    let Some(first) = batch.first().map(Event::key) else {
        return;
    };
    if stream.events.last().is_none_or(|l| l.key() <= first) {
        stream.events.extend(batch);
        return;
    }
    let from = stream.events.partition_point(|e| e.key() < first);
    let tail = stream.events.split_off(from);
    stream.events.reserve(tail.len() + batch.len());
    let (mut a, mut b) = (tail.into_iter().peekable(), batch.into_iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.key() <= y.key() => a.next(),
            (Some(_), Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, Some(_)) => b.next(),
            (None, None) => break,
        };
        stream.events.extend(next);
    }
}

fn encode(
    stream_id: &str,
    ingestion: i64,
    events: &[(i64, String)],
    batch: Option<BatchId<'_>>,
) -> Vec<u8> {
    let size: usize = events.iter().map(|(_, m)| m.len() + 12).sum();
    let mut out = Vec::with_capacity(size + 64);
    out.push(if batch.is_some() {
        PAYLOAD_VERSION_BATCH
    } else {
        PAYLOAD_VERSION
    });
    put_str(&mut out, stream_id);
    put_ivarint(&mut out, ingestion);
    put_varint(&mut out, events.len() as u64);
    for (t, m) in events {
        put_ivarint(&mut out, *t);
        put_str(&mut out, m);
    }
    if let Some((agent, n)) = batch {
        put_str(&mut out, agent);
        put_varint(&mut out, n);
    }
    out
}

type Decoded = (String, i64, Vec<(i64, String)>, Option<(String, u64)>);

fn decode(payload: &[u8]) -> Result<Decoded, String> {
    let (version, body) = match payload.split_first() {
        Some((&v, body)) if v == PAYLOAD_VERSION || v == PAYLOAD_VERSION_BATCH => (v, body),
        _ => return Err("unknown logs payload version".into()),
    };
    let pos = &mut 0;
    let id = get_str(body, pos)?;
    let ingestion = get_ivarint(body, pos)?;
    let n = get_varint(body, pos)? as usize;
    let mut events = Vec::with_capacity(n.min(10_000));
    for _ in 0..n {
        events.push((get_ivarint(body, pos)?, get_str(body, pos)?));
    }
    let batch = if version == PAYLOAD_VERSION_BATCH {
        Some((get_str(body, pos)?, get_varint(body, pos)?))
    } else {
        None
    };
    Ok((id, ingestion, events, batch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use trailwatch_storage::SqliteCatalog;
    use trailwatch_types::ManualClock;

    const NOW: i64 = 1_718_452_800_000; // 2024-06-15T12:00:00Z

    async fn open(dir: &Path, clock: Arc<ManualClock>) -> LogStore {
        let catalog = Arc::new(SqliteCatalog::open(&dir.join("catalog.db")).unwrap());
        let objects = Objects::local(&dir.join("objects")).unwrap();
        LogStore::open(
            &dir.join("logs"),
            catalog,
            objects,
            clock,
            TokenCodec::new(b"k".to_vec()),
            WalOptions::default(),
        )
        .await
        .unwrap()
    }

    fn group(retention: Option<u32>) -> GroupRecord {
        GroupRecord {
            v: 1,
            created_ms: NOW,
            retention_days: retention,
            class: "STANDARD".into(),
            kms_key_id: None,
            deletion_protection: false,
        }
    }

    fn stream(store: &LogStore, name: &str) -> StreamRecord {
        let ops = store
            .create_stream_changes("123456789012", "us-east-1", "g", name)
            .unwrap();
        store.catalog.commit(&ops).unwrap();
        store
            .stream("123456789012", "us-east-1", "g", name)
            .unwrap()
            .unwrap()
    }

    /// An agent batch resent after its answer was lost is stored once,
    /// whether its first copy is in the WAL or already in segments.
    #[tokio::test]
    async fn a_resent_agent_batch_is_stored_once_across_restarts_and_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(NOW)));
        let g = group(None);
        async fn count(store: &LogStore, id: String) -> usize {
            let q = GetQuery {
                start_from_head: true,
                ..GetQuery::default()
            };
            store.get_events(&id, 0, &q).await.unwrap().events.len()
        }
        let two = [(NOW, "a".to_owned()), (NOW, "b".to_owned())];
        let store = open(dir.path(), clock.clone()).await;
        let s = stream(&store, "s");
        let (_, stored) = store
            .put_batch(&g, &s, &two, Some(("agent1", 1)))
            .await
            .unwrap();
        assert_eq!(stored, 0..2);
        let (_, stored) = store
            .put_batch(&g, &s, &two, Some(("agent1", 1)))
            .await
            .unwrap();
        assert!(stored.is_empty());
        // Another agent's batch 1 is its own.
        store
            .put_batch(&g, &s, &two, Some(("agent2", 1)))
            .await
            .unwrap();
        assert_eq!(count(&store, s.id.clone()).await, 4);
        // Reopened with the batches only in the WAL.
        drop(store);
        let store = open(dir.path(), clock.clone()).await;
        let (_, stored) = store
            .put_batch(&g, &s, &two, Some(("agent1", 1)))
            .await
            .unwrap();
        assert!(stored.is_empty());
        store
            .put_batch(&g, &s, &two, Some(("agent1", 2)))
            .await
            .unwrap();
        store.maintain().await.unwrap();
        drop(store);
        let store = open(dir.path(), clock).await;
        let (_, stored) = store
            .put_batch(&g, &s, &two, Some(("agent1", 2)))
            .await
            .unwrap();
        assert!(stored.is_empty());
        let (_, stored) = store.put_batch(&g, &s, &two, None).await.unwrap();
        assert_eq!(stored, 0..2);
        assert_eq!(count(&store, s.id.clone()).await, 8);
    }

    /// The rejection example of §4.2 and its two 400 variants.
    #[tokio::test]
    async fn put_classifies_like_the_spec_example() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(NOW)));
        let store = open(dir.path(), clock).await;
        let s = stream(&store, "s");
        let g = group(Some(7));
        let batch = vec![
            (NOW - 20 * DAY_MS, "a".to_owned()),
            (NOW - 10 * DAY_MS, "b".to_owned()),
            (NOW - HOUR_MS, "c".to_owned()),
            (NOW, "d".to_owned()),
            (NOW + 3 * HOUR_MS, "e".to_owned()),
        ];
        let rejected = store.put_events(&g, &s, &batch).await.unwrap().0;
        assert_eq!(
            rejected,
            Rejected {
                too_old_end: Some(1),
                expired_end: Some(2),
                too_new_start: Some(4)
            }
        );
        let page = store
            .get_events(
                &s.id,
                g.cutoff(Timestamp::from_millis(NOW)),
                &GetQuery {
                    start_from_head: true,
                    ..GetQuery::default()
                },
            )
            .await
            .unwrap();
        let stored: Vec<&str> = page.events.iter().map(|e| &*e.message).collect();
        assert_eq!(stored, ["c", "d"]);
        let mut unordered = batch.clone();
        unordered[3].0 = NOW - 30 * HOUR_MS;
        assert!(store
            .put_events(&g, &s, &unordered)
            .await
            .unwrap_err()
            .to_string()
            .contains("chronological"));
        let span = vec![(NOW - 25 * HOUR_MS, "x".to_owned()), (NOW, "y".to_owned())];
        assert!(store
            .put_events(&g, &s, &span)
            .await
            .unwrap_err()
            .to_string()
            .contains("24 hours"));
        // 1,048,576 bytes with the 26-byte overhead fits; one more does not.
        let exact = vec![(NOW, "x".repeat(MAX_BATCH_BYTES - EVENT_OVERHEAD))];
        store.put_events(&group(None), &s, &exact).await.unwrap();
        let over = vec![(NOW, "x".repeat(MAX_BATCH_BYTES - EVENT_OVERHEAD + 1))];
        assert_eq!(
            store
                .put_events(&group(None), &s, &over)
                .await
                .unwrap_err()
                .to_string(),
            "Upload too large: 1048577 bytes exceeds limit of 1048576"
        );
    }

    /// The token walk of §5.1, the echoed tokens, and a restart in between.
    #[tokio::test]
    async fn get_events_token_walk() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(NOW)));
        let store = open(dir.path(), clock.clone()).await;
        let s = stream(&store, "s");
        let g = group(None);
        let t = |k: i64| NOW - 3_600_000 + k * 1000;
        store
            .put_events(
                &g,
                &s,
                &[
                    (t(1), "e1".into()),
                    (t(2), "e2".into()),
                    (t(3), "e3".into()),
                ],
            )
            .await
            .unwrap();
        store.shutdown().await.unwrap();
        drop(store);
        let store = open(dir.path(), clock).await;
        let get = |q: GetQuery| {
            let (store, id) = (&store, s.id.clone());
            async move { store.get_events(&id, i64::MIN, &q).await.unwrap() }
        };
        let names = |p: &GetPage| {
            p.events
                .iter()
                .map(|e| e.message.to_string())
                .collect::<Vec<_>>()
        };
        let p1 = get(GetQuery {
            start_from_head: true,
            limit: Some(2),
            ..GetQuery::default()
        })
        .await;
        assert_eq!(names(&p1), ["e1", "e2"]);
        let p2 = get(GetQuery {
            token: Some(p1.forward.clone()),
            limit: Some(2),
            ..GetQuery::default()
        })
        .await;
        assert_eq!(names(&p2), ["e3"]);
        let p3 = get(GetQuery {
            token: Some(p2.forward.clone()),
            ..GetQuery::default()
        })
        .await;
        assert!(p3.events.is_empty());
        assert_eq!(p3.forward, p2.forward);
        let tail = get(GetQuery {
            limit: Some(2),
            ..GetQuery::default()
        })
        .await;
        assert_eq!(names(&tail), ["e2", "e3"]);
        let back = get(GetQuery {
            token: Some(tail.backward.clone()),
            limit: Some(2),
            ..GetQuery::default()
        })
        .await;
        assert_eq!(names(&back), ["e1"]);
        assert_eq!(back.backward, p1.backward);
        let start = get(GetQuery {
            token: Some(back.backward.clone()),
            ..GetQuery::default()
        })
        .await;
        assert!(start.events.is_empty());
        assert_eq!(start.backward, back.backward);
        let ranged = get(GetQuery {
            start: Some(t(2)),
            end: Some(t(3)),
            start_from_head: true,
            ..GetQuery::default()
        })
        .await;
        assert_eq!(names(&ranged), ["e2"]);
        assert!(store
            .get_events(
                &s.id,
                i64::MIN,
                &GetQuery {
                    token: Some("f/12/s".into()),
                    ..GetQuery::default()
                }
            )
            .await
            .is_err());
    }

    /// Retention really deletes: whole expired days leave the object store,
    /// expired events leave memory, and a deleted stream's segments go too.
    #[tokio::test]
    async fn retention_and_deleted_streams_are_purged() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(NOW)));
        let store = open(dir.path(), clock.clone()).await;
        let g = group(Some(1));
        store
            .catalog
            .commit(
                &store
                    .create_group_changes("123456789012", "us-east-1", "g", &g)
                    .unwrap(),
            )
            .unwrap();
        let (s, gone) = (stream(&store, "s"), stream(&store, "gone"));
        store
            .put_events(
                &g,
                &s,
                &[(NOW - 20 * HOUR_MS, "old".into()), (NOW, "new".into())],
            )
            .await
            .unwrap();
        store
            .put_events(&g, &gone, &[(NOW, "x".into())])
            .await
            .unwrap();
        assert_eq!(store.maintain().await.unwrap(), (3, 0));
        let count = || segment_infos(store.catalog.as_ref()).unwrap().len();
        assert_eq!(count(), 3); // two days of `s`, one of `gone`
        store
            .catalog
            .commit(&store.delete_stream_changes("123456789012", "us-east-1", "g", "gone"))
            .unwrap();
        // 18 hours on, the day of `old` is wholly past the one-day retention.
        clock.advance_millis(18 * HOUR_MS);
        assert_eq!(store.maintain().await.unwrap(), (0, 2));
        assert_eq!(count(), 1);
        store.shutdown().await.unwrap();
        drop(store);
        let store = open(dir.path(), clock.clone()).await;
        let page = store
            .get_events(
                &s.id,
                i64::MIN,
                &GetQuery {
                    start_from_head: true,
                    ..GetQuery::default()
                },
            )
            .await
            .unwrap();
        let left: Vec<&str> = page.events.iter().map(|e| &*e.message).collect();
        assert_eq!(left, ["new"]);
        assert_eq!(
            store.stream_stats(&gone.id, i64::MIN).await.unwrap(),
            StreamStats::default()
        );
        let files = walk(&dir.path().join("objects"));
        assert_eq!(files, 1, "expired and orphaned segment objects are deleted");
    }

    fn walk(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| {
                        if e.path().is_dir() {
                            walk(&e.path())
                        } else {
                            1
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }

    proptest::proptest! {
        /// Batches whose times overlap earlier ones end up exactly where a full
        /// sort by (timestamp, ingestion, sequence) puts them.
        #[test]
        fn overlapping_batches_stay_sorted(
            batches in proptest::collection::vec(proptest::collection::vec(0i64..50, 0..8), 0..12)
        ) {
            let mut stream = StreamEvents::default();
            let mut all = Vec::new();
            for (seq, mut times) in batches.into_iter().enumerate() {
                times.sort_unstable();
                let events: Vec<(i64, String)> = times.iter().map(|t| (*t, format!("{seq}/{t}"))).collect();
                for (i, (t, _)) in events.iter().enumerate() {
                    all.push((*t, 1000 + seq as i64, seq as u64 * 16_384 + i as u64));
                }
                apply(&mut stream, seq as u64, 1000 + seq as i64, events);
            }
            all.sort_unstable();
            let got: Vec<Key> = stream.events.iter().map(Event::key).collect();
            proptest::prop_assert_eq!(got, all);
        }
    }

    #[tokio::test]
    async fn filter_across_streams_in_order_with_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(NOW)));
        let store = open(dir.path(), clock).await;
        let (a, b) = (stream(&store, "a"), stream(&store, "b"));
        let g = group(None);
        store
            .put_events(
                &g,
                &a,
                &[
                    (NOW - 3000, "ERROR disk full".into()),
                    (NOW - 2000, "INFO ok".into()),
                ],
            )
            .await
            .unwrap();
        store
            .put_events(&g, &b, &[(NOW - 1000, "ERROR net".into())])
            .await
            .unwrap();
        let q = FilterQuery {
            streams: vec![("a".into(), a.id.clone()), ("b".into(), b.id.clone())],
            pattern: "ERROR".into(),
            limit: Some(1),
            start_from_head: true,
            fingerprint: "g".into(),
            ..FilterQuery::default()
        };
        let first = store.filter_events(i64::MIN, &q).await.unwrap();
        assert_eq!(first.events[0].1.message.as_ref(), "ERROR disk full");
        let second = store
            .filter_events(
                i64::MIN,
                &FilterQuery {
                    token: first.next_token.clone(),
                    ..q.clone()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            (
                second.events[0].0.as_str(),
                second.events[0].1.message.as_ref()
            ),
            ("b", "ERROR net")
        );
        assert!(second.next_token.is_none());
        // Inclusive end.
        let upto = store
            .filter_events(
                i64::MIN,
                &FilterQuery {
                    end: Some(NOW - 2000),
                    pattern: String::new(),
                    limit: None,
                    ..q.clone()
                },
            )
            .await
            .unwrap();
        assert_eq!(upto.events.len(), 2);
        // Newest first only from 2024-01-01.
        assert!(store
            .filter_events(
                i64::MIN,
                &FilterQuery {
                    start_from_head: false,
                    ..q.clone()
                }
            )
            .await
            .is_err());
        let newest = store
            .filter_events(
                i64::MIN,
                &FilterQuery {
                    start_from_head: false,
                    start: Some(NEWEST_FIRST_FROM_MS),
                    limit: None,
                    ..q
                },
            )
            .await
            .unwrap();
        assert_eq!(newest.events[0].1.message.as_ref(), "ERROR net");
    }

    /// Reads across many segments (overlapping in time, from several
    /// flushes), several streams and unflushed events give exactly what a
    /// naive sort and filter of every event gives, page by page, both ways.
    #[tokio::test]
    async fn reads_over_blocks_and_memory_match_a_naive_model() {
        use rand::{Rng, SeedableRng};
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(NOW)));
        let store = open(dir.path(), clock.clone()).await;
        let names = ["a", "b", "c"];
        let streams: Vec<StreamRecord> = names.iter().map(|n| stream(&store, n)).collect();
        let g = group(None);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        // (stream index, timestamp, message) of every event put.
        let mut all: Vec<(usize, i64, String)> = Vec::new();
        for batch in 0..60 {
            let k = rng.gen_range(0..3);
            let mut ts: Vec<i64> = (0..rng.gen_range(1..12))
                .map(|_| NOW - rng.gen_range(0..3_600_000 / 50) * 50)
                .collect();
            ts.sort();
            let events: Vec<(i64, String)> = ts
                .iter()
                .enumerate()
                .map(|(i, &t)| {
                    let word =
                        ["ERROR disk", "INFO ok", "WARN slow", "ERROR net"][rng.gen_range(0..4)];
                    (t, format!("{word} batch={batch} i={i}"))
                })
                .collect();
            store.put_events(&g, &streams[k], &events).await.unwrap();
            all.extend(events.into_iter().map(|(t, m)| (k, t, m)));
            if rng.gen_bool(0.2) {
                store.maintain().await.unwrap();
            }
        }
        assert!(store
            .streams
            .read()
            .unwrap()
            .values()
            .any(|s| s.blocks.len() > 3));
        assert!(store
            .streams
            .read()
            .unwrap()
            .values()
            .any(|s| !s.events.is_empty()));
        // Events put in one call share an ingestion time and rise in
        // sequence, so (timestamp, put order) is the key order.
        let key_of = |i: usize| (all[i].1, i);
        for (pattern, word) in [
            ("ERROR", Some("ERROR")),
            ("", None),
            ("net -disk", Some("net")),
        ] {
            let mut want: Vec<usize> = (0..all.len())
                .filter(|&i| word.is_none_or(|w| all[i].2.contains(w)))
                .collect();
            want.sort_by_key(|&i| key_of(i));
            let want: Vec<(String, String)> = want
                .iter()
                .map(|&i| (names[all[i].0].to_owned(), all[i].2.clone()))
                .collect();
            for forward in [true, false] {
                let limit = rng.gen_range(1..9);
                let mut got = Vec::new();
                let mut token = None;
                loop {
                    let q = FilterQuery {
                        streams: names
                            .iter()
                            .zip(&streams)
                            .map(|(n, s)| ((*n).to_owned(), s.id.clone()))
                            .collect(),
                        pattern: pattern.into(),
                        limit: Some(limit),
                        start: Some(NOW - 4_000_000),
                        start_from_head: forward,
                        token: token.clone(),
                        fingerprint: "g".into(),
                        ..FilterQuery::default()
                    };
                    let page = store.filter_events(i64::MIN, &q).await.unwrap();
                    assert!(page.events.len() <= limit);
                    got.extend(
                        page.events
                            .into_iter()
                            .map(|(n, e)| (n, e.message.to_string())),
                    );
                    match page.next_token {
                        Some(t) => token = Some(t),
                        None => break,
                    }
                }
                let mut want = want.clone();
                if !forward {
                    want.reverse();
                }
                assert_eq!(
                    got, want,
                    "pattern {pattern:?}, forward {forward}, limit {limit}"
                );
            }
        }
        for (k, s) in streams.iter().enumerate() {
            let mut want: Vec<usize> = (0..all.len()).filter(|&i| all[i].0 == k).collect();
            want.sort_by_key(|&i| key_of(i));
            let want: Vec<String> = want.iter().map(|&i| all[i].2.clone()).collect();
            let mut got = Vec::new();
            let mut q = GetQuery {
                start_from_head: true,
                limit: Some(3),
                ..GetQuery::default()
            };
            loop {
                let page = store.get_events(&s.id, i64::MIN, &q).await.unwrap();
                if page.events.is_empty() {
                    break;
                }
                got.extend(page.events.iter().map(|e| e.message.to_string()));
                q.token = Some(page.forward);
            }
            assert_eq!(got, want);
            let between = store
                .events_between(&s.id, i64::MIN, i64::MAX, i64::MIN)
                .await
                .unwrap();
            assert_eq!(
                between.iter().map(|e| e.3.to_string()).collect::<Vec<_>>(),
                want
            );
            let stats = store.stream_stats(&s.id, NOW - 1_800_000).await.unwrap();
            let visible: Vec<&(usize, i64, String)> = all
                .iter()
                .filter(|e| e.0 == k && e.1 >= NOW - 1_800_000)
                .collect();
            assert_eq!(
                stats.stored_bytes,
                visible.iter().map(|e| e.2.len() as u64).sum::<u64>()
            );
            assert_eq!(stats.first_event, visible.iter().map(|e| e.1).min());
            assert_eq!(stats.last_event, visible.iter().map(|e| e.1).max());
            // Every event is found again by its sequence.
            for (t, _, seq, m) in &between {
                let (t2, _, m2) = store.event(&s.id, *seq, i64::MIN).await.unwrap().unwrap();
                assert_eq!((t2, &*m2), (*t, &**m));
            }
        }
    }

    /// A segment of the first format (one zstd body) is rewritten in the
    /// block format at open: its events stay readable, exactly once, and the
    /// old object goes.
    #[tokio::test]
    async fn version_1_segments_are_rewritten_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(NOW)));
        let store = open(dir.path(), clock.clone()).await;
        let s = stream(&store, "s");
        store
            .put_events(
                &group(None),
                &s,
                &[(NOW - 2000, "one".into()), (NOW - 1000, "two é".into())],
            )
            .await
            .unwrap();
        store.maintain().await.unwrap();
        let before = store
            .events_between(&s.id, i64::MIN, i64::MAX, i64::MIN)
            .await
            .unwrap();
        store.shutdown().await.unwrap();
        let (path, _) = segment_infos(store.catalog.as_ref())
            .unwrap()
            .into_iter()
            .next()
            .unwrap();
        drop(store);
        // The same events, as the first format wrote them.
        let mut body = Vec::new();
        put_varint(&mut body, before.len() as u64);
        for (t, ingestion, seq, message) in &before {
            put_ivarint(&mut body, *t);
            put_ivarint(&mut body, *ingestion);
            put_varint(&mut body, *seq);
            put_str(&mut body, message);
        }
        let mut v1 = b"TWLS\x01".to_vec();
        v1.extend(zstd::bulk::compress(&body, 3).unwrap());
        let crc = crc32c::crc32c(&v1);
        v1.extend(crc.to_le_bytes());
        let file = dir.path().join("objects").join(&path);
        std::fs::write(&file, v1).unwrap();
        let store = open(dir.path(), clock).await;
        let after = store
            .events_between(&s.id, i64::MIN, i64::MAX, i64::MIN)
            .await
            .unwrap();
        assert_eq!(after, before);
        let paths: Vec<String> = segment_infos(store.catalog.as_ref())
            .unwrap()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(paths, [format!("{}.v2.twl", path.trim_end_matches(".twl"))]);
        assert!(!file.exists());
        // A second open finds nothing left to rewrite.
        store.shutdown().await.unwrap();
        drop(store);
        let dir_path = dir.path().to_owned();
        let store = open(
            &dir_path,
            Arc::new(ManualClock::new(Timestamp::from_millis(NOW))),
        )
        .await;
        assert_eq!(
            store
                .events_between(&s.id, i64::MIN, i64::MAX, i64::MIN)
                .await
                .unwrap(),
            before
        );
    }
}
