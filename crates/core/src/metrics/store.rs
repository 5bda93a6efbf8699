//! The metric store: validated datums become durable through the metrics WAL
//! before PutMetricData answers; a flush moves them into segment objects, a
//! compaction merges those per day, and the tier job folds aging days into the
//! 5-minute and 1-hour tiers (`spec/cloudwatch.md` §3). Queries read every
//! tier from memory, where blocks stay encoded ([`super::codec`]).
//!
//! # WAL payload
//! - version 2 (written): `u8 2 | str account | str region | ivarint received
//!   ms | varint n | n × datum`, a datum being `str namespace | str name |
//!   varint d | d × (str, str) | ivarint timestamp ms | u8 unit | u8
//!   resolution | u8 kind | sample` with sample (by kind) 0: `f64` (value),
//!   1: `4 × f64` (set: count, sum, min, max), 2: `varint m | m × f64 values |
//!   m × f64 counts`, 3: `varint m | m × f64 values` (every count 1).
//! - version 1 (read only): `u8 1 | JSON {"a", "r", "t", "d": [datum…]}`.
//!
//! # Segments (see [`super::segments`] for the bytes)
//! - `metrics/l0/{gen:020}.twm`: one per flush, raw blocks of any series/day;
//! - `metrics/account={a}/region={r}/{raw|t2|t3}/date={YYYY-MM-DD}/{gen:020}.twm`:
//!   one per partition and day after compaction or folding.
//!
//! The catalog table `metric_segments` lists live segments; `metric_state`
//! holds the WAL checkpoint, the tier watermarks and the generation counter.
//! Every change of segments commits in one catalog batch with the state.
//!
//! # Invariants
//! - A put is visible only after its WAL append returned; a put holds the
//!   gate (shared) from its append to its apply, and a flush rotates the WAL
//!   under the gate (exclusive), so every record below the rotation boundary
//!   is in memory when the flush freezes the heads.
//! - Every point is in exactly one of: the WAL above the checkpoint (the
//!   head), an L0 segment, a day segment, or a tier summary. Flush, compaction
//!   and folding commit the new objects, the removal of the old ones and the
//!   state in one catalog batch, then swap memory, then delete old objects.
//! - Maintenance (flush, compaction, folding) runs one at a time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use trailwatch_storage::{Catalog, CatalogOp, Objects, Wal, WalOptions};
use trailwatch_types::{Clock, Timestamp};

use super::codec::{
    encode_block, get_f64, get_ivarint, get_str, get_varint, put_f64, put_ivarint, put_str,
    put_varint,
};
use super::get::{render, Datapoint, StatisticsQuery};
use super::model::{Dimension, MetricId, MetricsError, Point, Sample, Unit, ValidatedDatum};
use super::segments::{self, Kind, RawEntry, Segment, SeriesKey, TierEntry};
use super::summary::Summary;
use super::tiers::{
    self, day_of, fold_points, fold_summaries, Block, SeriesData, Watermarks, DAY_MS, RAW_MS,
    T2_MS, T2_RES_MS, T3_MS, T3_RES_MS,
};
use crate::token::{filters_hash, TokenCodec};

const PAYLOAD_V1: u8 = 1;
const PAYLOAD_V2: u8 = 2;
/// Metrics without data for this long leave ListMetrics (§3.5).
const LISTED_FOR_MS: i64 = 14 * 86_400_000;
/// ListMetrics page size.
const PAGE_SIZE: usize = 500;
const SEGMENTS_TABLE: &str = "metric_segments";
const STATE_TABLE: &str = "metric_state";
const STATE_KEY: &str = "state";
/// Compaction waits for this many L0 segments (each rewrite of a day costs the
/// whole day, so it is not done after every flush)…
const COMPACT_L0_SEGMENTS: usize = 8;
/// …or for the oldest of them to be this old.
const COMPACT_AFTER_MS: i64 = 15 * 60_000;

#[derive(Serialize, Deserialize)]
struct Entry {
    a: String,
    r: String,
    t: i64,
    d: Vec<ValidatedDatum>,
}

/// Durable maintenance state.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct State {
    /// Highest WAL sequence whose points are in segments.
    checkpoint: u64,
    /// Tier watermarks.
    marks: Watermarks,
    /// Bumped by every segment commit; names new objects.
    generation: u64,
}

/// What the catalog knows of one segment.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SegmentInfo {
    /// `l0`, `raw`, `t2` or `t3`.
    kind: String,
    /// Account, region and day of a partition segment; empty for L0.
    account: String,
    region: String,
    day: i64,
    /// (account, region, day) of every block in an L0 segment.
    #[serde(default)]
    partitions: Vec<(String, String, i64)>,
    bytes: u64,
    points: u64,
    /// When it was written (ms, store clock).
    #[serde(default)]
    created: i64,
}

/// Sort key of a metric in ListMetrics: namespace, name, canonical dimensions.
type ListKey = (String, String, String);

fn canonical_dimensions(dimensions: &[Dimension]) -> String {
    let mut out = String::new();
    for (i, d) in dimensions.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&d.name);
        out.push('=');
        out.push_str(&d.value);
    }
    out
}

fn list_key(metric: &MetricId) -> ListKey {
    (
        metric.namespace.clone(),
        metric.name.clone(),
        canonical_dimensions(&metric.dimensions),
    )
}

fn date_of(day: i64) -> String {
    Timestamp::from_millis(day).to_iso8601()[..10].to_owned()
}

struct Series {
    metric: MetricId,
    /// Server receive time of the latest datum.
    last_received: Timestamp,
    data: SeriesData,
}

/// The series of one (account, region): in ListMetrics order, plus an index
/// by identity so a put or a query finds its series without building the
/// order key. The index may name series that are gone (retain on the map);
/// such entries are ignored and replaced.
#[derive(Default)]
struct RegionSeries {
    map: BTreeMap<ListKey, Series>,
    ids: HashMap<MetricId, ListKey>,
}

impl std::ops::Deref for RegionSeries {
    type Target = BTreeMap<ListKey, Series>;
    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl std::ops::DerefMut for RegionSeries {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.map
    }
}

impl RegionSeries {
    fn by_id(&self, metric: &MetricId) -> Option<&Series> {
        self.ids.get(metric).and_then(|k| self.map.get(k))
    }

    /// The series of `metric`, created (last received at `received`) if new.
    fn series_mut(&mut self, metric: &MetricId, received: Timestamp) -> &mut Series {
        let known = self
            .ids
            .get(metric)
            .is_some_and(|k| self.map.contains_key(k));
        if !known {
            let key = list_key(metric);
            self.ids.insert(metric.clone(), key.clone());
            self.map.entry(key).or_insert_with(|| Series {
                metric: metric.clone(),
                last_received: received,
                data: SeriesData::default(),
            });
        }
        match self.ids.get(metric).and_then(|k| self.map.get_mut(k)) {
            Some(series) => series,
            None => unreachable!("inserted above"),
        }
    }
}

#[derive(Default)]
struct Metrics {
    by_region: HashMap<(String, String), RegionSeries>,
    marks: Watermarks,
}

impl Metrics {
    fn series(&mut self, account: &str, region: &str, metric: &MetricId) -> &mut Series {
        self.by_region
            .entry((account.to_owned(), region.to_owned()))
            .or_default()
            .series_mut(metric, Timestamp::from_millis(i64::MIN))
    }

    fn apply(&mut self, seq: u64, entry: Entry) {
        let received = Timestamp::from_millis(entry.t);
        let all = self.by_region.entry((entry.a, entry.r)).or_default();
        for datum in entry.d {
            let s = all.series_mut(&datum.metric, received);
            s.last_received = s.last_received.max(received);
            let ValidatedDatum {
                timestamp,
                unit,
                sample,
                ..
            } = datum;
            s.data.head.push((
                seq,
                Point {
                    timestamp,
                    unit,
                    sample,
                },
            ));
        }
    }

    fn load(&mut self, segment: Segment) {
        match segment {
            Segment::Raw(entries) => {
                for RawEntry { series, day, block } in entries {
                    let s = self.series(&series.account, &series.region, &series.metric);
                    s.last_received = s
                        .last_received
                        .max(Timestamp::from_millis(series.last_received));
                    s.data.days.entry(day).or_default().push(block);
                }
            }
            Segment::Tier(kind, entries) => {
                for TierEntry { series, summaries } in entries {
                    let s = self.series(&series.account, &series.region, &series.metric);
                    s.last_received = s
                        .last_received
                        .max(Timestamp::from_millis(series.last_received));
                    let tier = if kind == Kind::T2 {
                        &mut s.data.t2
                    } else {
                        &mut s.data.t3
                    };
                    for (k, summary) in summaries {
                        tier.entry(k).or_default().merge(&summary);
                    }
                }
            }
        }
    }
}

/// A ListMetrics request.
#[derive(Debug, Clone, Default)]
pub struct ListMetricsQuery {
    /// Caller's account.
    pub account_id: String,
    /// Region of the request.
    pub region: String,
    /// Exact namespace.
    pub namespace: Option<String>,
    /// Exact metric name.
    pub metric_name: Option<String>,
    /// Subset filters: the name must exist; the value, when given, must match.
    pub dimensions: Vec<(String, Option<String>)>,
    /// `RecentlyActive=PT3H`.
    pub recently_active: bool,
    /// Token of the previous page.
    pub next_token: Option<String>,
}

/// One page of ListMetrics.
#[derive(Debug, Clone)]
pub struct ListMetricsPage {
    /// Metrics, dimensions sorted by name.
    pub metrics: Vec<MetricId>,
    /// Present iff more metrics exist.
    pub next_token: Option<String>,
}

/// What one maintenance pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Points moved from the WAL into an L0 segment.
    pub flushed_points: u64,
    /// Day partitions rewritten by compaction.
    pub compacted_days: u64,
    /// Day partitions folded into a coarser tier or expired.
    pub folded_days: u64,
}

/// Durable metric data.
pub struct MetricStore {
    wal: Wal,
    catalog: Arc<dyn Catalog>,
    objects: Objects,
    metrics: RwLock<Metrics>,
    clock: Arc<dyn Clock>,
    tokens: TokenCodec,
    /// Shared by a put from WAL append to apply; exclusive while a flush rotates.
    gate: tokio::sync::RwLock<()>,
    /// One maintenance pass at a time.
    maintenance: tokio::sync::Mutex<()>,
    /// Points put since the last flush.
    unflushed: AtomicU64,
}

impl std::fmt::Debug for MetricStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricStore").finish_non_exhaustive()
    }
}

fn storage(e: impl std::fmt::Display) -> MetricsError {
    MetricsError::Storage(e.to_string())
}

impl MetricStore {
    /// Opens the store: WAL in `dir`, segments in `objects`, their list in
    /// `catalog`. Loads every segment, then replays the WAL above the checkpoint.
    pub async fn open(
        dir: &Path,
        catalog: Arc<dyn Catalog>,
        objects: Objects,
        clock: Arc<dyn Clock>,
        tokens: TokenCodec,
        wal: WalOptions,
    ) -> Result<Self, MetricsError> {
        let (wal, recovery) = Wal::open(&dir.join("wal"), wal).map_err(storage)?;
        let state = read_state(catalog.as_ref())?;
        let mut metrics = Metrics {
            marks: state.marks,
            ..Metrics::default()
        };
        let listed = catalog.list(SEGMENTS_TABLE, "").map_err(storage)?;
        for (path, _) in &listed {
            let bytes = objects.get(path).await.map_err(storage)?;
            let segment = segments::decode(&bytes)
                .map_err(|m| MetricsError::Storage(format!("metric segment {path}: {m}")))?;
            metrics.load(segment);
        }
        let mut replayed = 0;
        for (seq, payload) in &recovery.records {
            if *seq <= state.checkpoint {
                continue;
            }
            let entry = decode(payload)
                .map_err(|m| MetricsError::Storage(format!("metrics log record {seq}: {m}")))?;
            metrics.apply(*seq, entry);
            replayed += 1;
        }
        tracing::info!(
            segments = listed.len(),
            records = replayed,
            "metrics recovered"
        );
        Ok(Self {
            wal,
            catalog,
            objects,
            metrics: RwLock::new(metrics),
            clock,
            tokens,
            gate: tokio::sync::RwLock::new(()),
            maintenance: tokio::sync::Mutex::new(()),
            unflushed: AtomicU64::new(0),
        })
    }

    /// Makes `datums` durable (one WAL record), then visible.
    pub async fn put(
        &self,
        account: &str,
        region: &str,
        datums: Vec<ValidatedDatum>,
    ) -> Result<(), MetricsError> {
        let entry = Entry {
            a: account.to_owned(),
            r: region.to_owned(),
            t: self.clock.now().millis(),
            d: datums,
        };
        let payload = encode(&entry);
        let points = entry.d.len() as u64;
        let _gate = self.gate.read().await;
        let seq = self.wal.append(payload).await.map_err(storage)?;
        self.metrics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .apply(seq, entry);
        self.unflushed.fetch_add(points, Ordering::Relaxed);
        Ok(())
    }

    /// Points put since the last flush.
    pub fn unflushed(&self) -> u64 {
        self.unflushed.load(Ordering::Relaxed)
    }

    /// Flushes and closes the WAL.
    pub async fn shutdown(&self) -> Result<(), MetricsError> {
        self.wal.shutdown().await.map_err(storage)
    }

    /// GetMetricStatistics (and each MetricStat of GetMetricData): the
    /// datapoints of `q`, answered from the tiers.
    pub fn statistics(
        &self,
        account: &str,
        region: &str,
        q: &StatisticsQuery,
    ) -> Result<Vec<Datapoint>, MetricsError> {
        let now = self.clock.now();
        let metrics = self.metrics.read().unwrap_or_else(|p| p.into_inner());
        let Some(series) = metrics
            .by_region
            .get(&(account.to_owned(), region.to_owned()))
            .and_then(|m| m.by_id(&q.metric))
        else {
            return Ok(Vec::new());
        };
        let buckets = series
            .data
            .answer(q, now, metrics.marks)
            .map_err(|m| MetricsError::Storage(format!("metric block: {m}")))?;
        drop(metrics);
        Ok(render(q, buckets))
    }

    /// GetMetricData for a validated plan, one page at a time.
    pub fn get_data(
        &self,
        account: &str,
        region: &str,
        plan: &super::data::DataPlan,
        next_token: Option<&str>,
    ) -> Result<(Vec<super::data::DataResult>, Option<String>), MetricsError> {
        let now = self.clock.now();
        let filters = filters_hash(&[account, region, "GetMetricData", &plan.fingerprint]);
        let cursor = match next_token {
            Some(token) => Some(
                self.tokens
                    .open::<super::data::Cursor>(token, &filters, now, 24 * 3600)
                    .ok_or_else(|| {
                        MetricsError::InvalidNextToken(
                            "The service cannot parse the NextToken.".to_owned(),
                        )
                    })?,
            ),
            None => None,
        };
        let listed = || self.recent_metrics(account, region);
        let scope = super::data::Scope {
            account_id: account,
            region,
        };
        let (results, next) = super::data::execute(
            plan,
            scope,
            now,
            cursor,
            |q| self.statistics(account, region, q),
            listed,
        )?;
        Ok((results, next.map(|c| self.tokens.issue(&filters, &c, now))))
    }

    /// Every metric of (account, region) with data in the last two weeks, in
    /// ListMetrics order (what SEARCH searches, §6.6).
    pub fn recent_metrics(&self, account: &str, region: &str) -> Vec<MetricId> {
        let oldest = self.clock.now().millis() - LISTED_FOR_MS;
        let metrics = self.metrics.read().unwrap_or_else(|p| p.into_inner());
        metrics
            .by_region
            .get(&(account.to_owned(), region.to_owned()))
            .map(|all| {
                all.values()
                    .filter(|s| s.last_received.millis() >= oldest)
                    .map(|s| s.metric.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One maintenance pass: flush the WAL into an L0 segment, compact the days
    /// L0 segments touch once enough of them wait, then move aged days down
    /// the tiers.
    pub async fn maintain(&self) -> Result<MaintenanceReport, MetricsError> {
        self.maintain_with(false).await
    }

    /// A maintenance pass that compacts whatever L0 segments exist (shutdown).
    pub async fn maintain_fully(&self) -> Result<MaintenanceReport, MetricsError> {
        self.maintain_with(true).await
    }

    async fn maintain_with(&self, compact_now: bool) -> Result<MaintenanceReport, MetricsError> {
        let _one_at_a_time = self.maintenance.lock().await;
        let flushed_points = self.flush_locked().await?;
        let compacted_days = self.compact_locked(compact_now).await?;
        let folded_days = self.fold_locked().await?;
        Ok(MaintenanceReport {
            flushed_points,
            compacted_days,
            folded_days,
        })
    }

    /// Moves every point put so far into an L0 segment.
    pub async fn flush(&self) -> Result<u64, MetricsError> {
        let _one_at_a_time = self.maintenance.lock().await;
        self.flush_locked().await
    }

    async fn flush_locked(&self) -> Result<u64, MetricsError> {
        let mut state = read_state(self.catalog.as_ref())?;
        let began = std::time::Instant::now();
        let boundary = {
            let _no_put_in_flight = self.gate.write().await;
            self.wal.rotate().await.map_err(storage)?
        };
        let rotated = began.elapsed();
        self.unflushed.store(0, Ordering::Relaxed);
        // Freeze: head points below the boundary join the frozen points (which
        // a failed earlier flush may have left), and are copied for encoding.
        let mut work: FlushWork = Vec::new();
        {
            let mut metrics = self.metrics.write().unwrap_or_else(|p| p.into_inner());
            for ((account, region), all) in &mut metrics.by_region {
                for (key, series) in all.iter_mut() {
                    let data = &mut series.data;
                    if data.head.is_empty() && data.frozen.is_empty() {
                        continue;
                    }
                    let (old, new): (Vec<_>, Vec<_>) =
                        data.head.drain(..).partition(|(seq, _)| *seq < boundary);
                    data.head = new;
                    if !old.is_empty() {
                        // Points move, they are not copied: the lock is held briefly.
                        let mut frozen = std::mem::take(Arc::make_mut(&mut data.frozen));
                        frozen.extend(old.into_iter().map(|(_, p)| p));
                        data.frozen = Arc::new(frozen);
                    }
                    if data.frozen.is_empty() {
                        continue;
                    }
                    work.push((
                        SeriesKey {
                            account: account.clone(),
                            region: region.clone(),
                            metric: series.metric.clone(),
                            last_received: series.last_received.millis(),
                        },
                        key.clone(),
                        data.frozen.clone(),
                    ));
                }
            }
        }
        let frozen = began.elapsed();
        let checkpoint = boundary.saturating_sub(1);
        if work.is_empty() {
            if checkpoint > state.checkpoint {
                state.checkpoint = checkpoint;
                self.commit(Vec::new(), &state)?;
            }
            self.wal.remove_through(state.checkpoint).map_err(storage)?;
            return Ok(0);
        }
        // Encoding is seconds of CPU for a big flush: off the async workers, so
        // requests queued on this worker do not wait for it.
        let (entries, partitions, moved) = tokio::task::spawn_blocking(move || encode_l0(&work))
            .await
            .map_err(storage)??;
        state.generation += 1;
        state.checkpoint = checkpoint;
        let path = format!("metrics/l0/{:020}.twm", state.generation);
        let bytes = segments::encode_raw(&entries);
        let info = SegmentInfo {
            kind: "l0".into(),
            account: String::new(),
            region: String::new(),
            day: 0,
            partitions: partitions.into_iter().collect(),
            bytes: bytes.len() as u64,
            points: moved,
            created: self.clock.now().millis(),
        };
        self.objects
            .put_durable(&path, bytes.into())
            .await
            .map_err(storage)?;
        self.commit(vec![put_segment(&path, &info)], &state)?;
        self.wal.remove_through(state.checkpoint).map_err(storage)?;
        tracing::debug!(?rotated, ?frozen, written = ?began.elapsed(), points = moved, "metrics flush");
        // Swap: frozen points become the blocks just written.
        let mut metrics = self.metrics.write().unwrap_or_else(|p| p.into_inner());
        for entry in &entries {
            let key = list_key(&entry.series.metric);
            if let Some(series) = metrics
                .by_region
                .get_mut(&(entry.series.account.clone(), entry.series.region.clone()))
                .and_then(|all| all.get_mut(&key))
            {
                series.data.frozen = Arc::default();
                series
                    .data
                    .days
                    .entry(entry.day)
                    .or_default()
                    .push(entry.block.clone());
            }
        }
        Ok(moved)
    }

    /// Rewrites every day an L0 segment touches as one block per series,
    /// once enough L0 segments wait, or `now`.
    async fn compact_locked(&self, now: bool) -> Result<u64, MetricsError> {
        let infos = self.segment_infos()?;
        let l0: Vec<&(String, SegmentInfo)> =
            infos.iter().filter(|(_, i)| i.kind == "l0").collect();
        let oldest = l0.iter().map(|(_, i)| i.created).min().unwrap_or(i64::MAX);
        let fold_line = day_of(self.clock.now().millis() - RAW_MS);
        // Folding reads day segments only, so a day about to fold must be compacted.
        let due = l0.len() >= COMPACT_L0_SEGMENTS
            || oldest <= self.clock.now().millis() - COMPACT_AFTER_MS
            || l0
                .iter()
                .any(|(_, i)| i.partitions.iter().any(|(_, _, day)| *day < fold_line));
        if l0.is_empty() || !(now || due) {
            return Ok(0);
        }
        let partitions: BTreeSet<(String, String, i64)> = l0
            .iter()
            .flat_map(|(_, i)| i.partitions.iter().cloned())
            .collect();
        let mut state = read_state(self.catalog.as_ref())?;
        state.generation += 1;
        let mut ops = Vec::new();
        let mut rewritten = Vec::new();
        for (account, region, day) in &partitions {
            // Blocks are shared, so the lock is held only to collect them;
            // puts go on while they are decoded and merged.
            let collected: Vec<(SeriesKey, Vec<Block>)> = {
                let metrics = self.metrics.read().unwrap_or_else(|p| p.into_inner());
                metrics
                    .by_region
                    .get(&(account.clone(), region.clone()))
                    .map(|all| {
                        all.values()
                            .filter_map(|series| {
                                let blocks = series.data.days.get(day)?;
                                Some((series_key(account, region, series), blocks.clone()))
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let day = *day;
            let entries = tokio::task::spawn_blocking(move || {
                let mut entries = Vec::new();
                for (series, blocks) in collected {
                    let points = tiers::merge_blocks(&blocks).map_err(storage)?;
                    if points.is_empty() {
                        continue;
                    }
                    entries.push(RawEntry {
                        series,
                        day,
                        block: seal_block(&points)?,
                    });
                }
                Ok::<_, MetricsError>(entries)
            })
            .await
            .map_err(storage)??;
            if entries.is_empty() {
                continue;
            }
            let path = format!(
                "metrics/account={account}/region={region}/raw/date={}/{:020}.twm",
                date_of(day),
                state.generation
            );
            let bytes = segments::encode_raw(&entries);
            let info = SegmentInfo {
                kind: "raw".into(),
                account: account.clone(),
                region: region.clone(),
                day,
                partitions: Vec::new(),
                bytes: bytes.len() as u64,
                points: entries.iter().map(|e| e.block.points as u64).sum(),
                created: self.clock.now().millis(),
            };
            self.objects
                .put_durable(&path, bytes.into())
                .await
                .map_err(storage)?;
            ops.push(put_segment(&path, &info));
            rewritten.push(entries);
        }
        let mut old = Vec::new();
        for (path, info) in &infos {
            let replaced = info.kind == "raw"
                && partitions.contains(&(info.account.clone(), info.region.clone(), info.day));
            if info.kind == "l0" || replaced {
                ops.push(CatalogOp::delete(SEGMENTS_TABLE, path.clone()));
                old.push(path.clone());
            }
        }
        self.commit(ops, &state)?;
        {
            let mut metrics = self.metrics.write().unwrap_or_else(|p| p.into_inner());
            for entry in rewritten.iter().flatten() {
                let s = metrics.series(
                    &entry.series.account,
                    &entry.series.region,
                    &entry.series.metric,
                );
                s.data.days.insert(entry.day, vec![entry.block.clone()]);
            }
        }
        self.delete_objects(&old).await;
        Ok(partitions.len() as u64)
    }

    /// Moves aged days down the tiers: raw days older than 15 days into T2,
    /// T2 days older than 63 days into T3; drops T3 days older than 455 days.
    async fn fold_locked(&self) -> Result<u64, MetricsError> {
        let now = self.clock.now().millis();
        let mut folded = 0;
        // Raw → T2.
        let target = day_of(now - RAW_MS);
        let state = read_state(self.catalog.as_ref())?;
        if state.marks.w2 < target {
            folded += self
                .fold_step(Kind::Raw, target, |series, day| {
                    let points = series.data.day_points(day)?;
                    Ok(fold_points(&points, T2_RES_MS))
                })
                .await?;
        }
        // T2 → T3.
        let target = day_of(now - T2_MS);
        let state = read_state(self.catalog.as_ref())?;
        if state.marks.w3 < target {
            folded += self
                .fold_step(Kind::T2, target, |series, day| {
                    Ok(fold_summaries(
                        series
                            .data
                            .t2
                            .range((day, Unit::MIN)..(day + DAY_MS, Unit::MIN)),
                        T3_RES_MS,
                    ))
                })
                .await?;
        }
        // T3 expiry, and series that have nothing left.
        let expire = day_of(now - T3_MS);
        let infos = self.segment_infos()?;
        let expired: Vec<String> = infos
            .iter()
            .filter(|(_, i)| i.kind == "t3" && i.day < expire)
            .map(|(p, _)| p.clone())
            .collect();
        if !expired.is_empty() {
            let mut state = read_state(self.catalog.as_ref())?;
            state.generation += 1;
            let ops = expired
                .iter()
                .map(|p| CatalogOp::delete(SEGMENTS_TABLE, p.clone()))
                .collect();
            self.commit(ops, &state)?;
            folded += expired.len() as u64;
        }
        {
            let mut metrics = self.metrics.write().unwrap_or_else(|p| p.into_inner());
            for all in metrics.by_region.values_mut() {
                for series in all.values_mut() {
                    series.data.t3.retain(|(t, _), _| *t >= expire);
                }
                all.retain(|_, s| {
                    let d = &s.data;
                    s.last_received.millis() >= now - RAW_MS
                        || !(d.days.is_empty()
                            && d.head.is_empty()
                            && d.frozen.is_empty()
                            && d.t2.is_empty()
                            && d.t3.is_empty())
                });
                let RegionSeries { map, ids } = all;
                ids.retain(|_, key| map.contains_key(key));
            }
        }
        self.delete_objects(&expired).await;
        Ok(folded)
    }

    /// Folds every `from`-tier day below `target` into the next tier with
    /// `fold`, writes one segment per (account, region, day), commits them
    /// with the new watermark, then swaps memory.
    async fn fold_step(
        &self,
        from: Kind,
        target: i64,
        fold: impl Fn(&Series, i64) -> Result<BTreeMap<(i64, Unit), Summary>, String>,
    ) -> Result<u64, MetricsError> {
        let (from_kind, to_kind, to) = match from {
            Kind::Raw => ("raw", "t2", Kind::T2),
            _ => ("t2", "t3", Kind::T3),
        };
        let infos = self.segment_infos()?;
        let days: Vec<(String, String, i64, String)> = infos
            .iter()
            .filter(|(_, i)| i.kind == from_kind && i.day < target)
            .map(|(p, i)| (i.account.clone(), i.region.clone(), i.day, p.clone()))
            .collect();
        let mut state = read_state(self.catalog.as_ref())?;
        state.generation += 1;
        let mut ops = Vec::new();
        let mut written = Vec::new();
        for (account, region, day, old_path) in &days {
            let entries = {
                let metrics = self.metrics.read().unwrap_or_else(|p| p.into_inner());
                let mut entries = Vec::new();
                if let Some(all) = metrics.by_region.get(&(account.clone(), region.clone())) {
                    for series in all.values() {
                        let summaries = fold(series, *day).map_err(storage)?;
                        if !summaries.is_empty() {
                            entries.push(TierEntry {
                                series: series_key(account, region, series),
                                summaries,
                            });
                        }
                    }
                }
                entries
            };
            ops.push(CatalogOp::delete(SEGMENTS_TABLE, old_path.clone()));
            if !entries.is_empty() {
                let path = format!(
                    "metrics/account={account}/region={region}/{to_kind}/date={}/{:020}.twm",
                    date_of(*day),
                    state.generation
                );
                let bytes = segments::encode_tier(to, &entries).map_err(storage)?;
                let info = SegmentInfo {
                    kind: to_kind.into(),
                    account: account.clone(),
                    region: region.clone(),
                    day: *day,
                    partitions: Vec::new(),
                    bytes: bytes.len() as u64,
                    points: 0,
                    created: self.clock.now().millis(),
                };
                self.objects
                    .put_durable(&path, bytes.into())
                    .await
                    .map_err(storage)?;
                ops.push(put_segment(&path, &info));
            }
            written.push((account.clone(), region.clone(), *day, entries));
        }
        match from {
            Kind::Raw => state.marks.w2 = target,
            _ => state.marks.w3 = target,
        }
        self.commit(ops, &state)?;
        {
            let mut metrics = self.metrics.write().unwrap_or_else(|p| p.into_inner());
            metrics.marks = state.marks;
            for (account, region, day, entries) in &written {
                if let Some(all) = metrics
                    .by_region
                    .get_mut(&(account.clone(), region.clone()))
                {
                    for series in all.values_mut() {
                        match from {
                            Kind::Raw => {
                                series.data.days.remove(day);
                            }
                            _ => series.data.t2.retain(|(t, _), _| day_of(*t) != *day),
                        }
                    }
                }
                for entry in entries {
                    let s = metrics.series(account, region, &entry.series.metric);
                    let tier = match to {
                        Kind::T2 => &mut s.data.t2,
                        _ => &mut s.data.t3,
                    };
                    for (k, summary) in &entry.summaries {
                        tier.entry(*k).or_default().merge(summary);
                    }
                }
            }
        }
        let old: Vec<String> = days.into_iter().map(|(_, _, _, p)| p).collect();
        self.delete_objects(&old).await;
        Ok(old.len() as u64)
    }

    fn segment_infos(&self) -> Result<Vec<(String, SegmentInfo)>, MetricsError> {
        self.catalog
            .list(SEGMENTS_TABLE, "")
            .map_err(storage)?
            .into_iter()
            .map(|(path, bytes)| {
                serde_json::from_slice(&bytes)
                    .map(|info| (path, info))
                    .map_err(storage)
            })
            .collect()
    }

    fn commit(&self, mut ops: Vec<CatalogOp>, state: &State) -> Result<(), MetricsError> {
        ops.push(CatalogOp::put(
            STATE_TABLE,
            STATE_KEY,
            serde_json::to_vec(state).map_err(storage)?,
        ));
        self.catalog.commit(&ops).map_err(storage)
    }

    /// Deletes replaced objects; one left behind is only wasted space (the
    /// catalog no longer lists it), so failures are logged, not returned.
    async fn delete_objects(&self, paths: &[String]) {
        for path in paths {
            if let Err(err) = self.objects.delete(path).await {
                tracing::warn!(path, error = %err, "failed to delete a replaced metric segment");
            }
        }
    }

    /// Total bytes of live metric segments, and the points they hold raw.
    pub fn stored_bytes(&self) -> Result<(u64, u64), MetricsError> {
        let infos = self.segment_infos()?;
        Ok((
            infos.iter().map(|(_, i)| i.bytes).sum(),
            infos.iter().map(|(_, i)| i.points).sum(),
        ))
    }

    /// ListMetrics (§3.5).
    pub fn list(&self, q: &ListMetricsQuery) -> Result<ListMetricsPage, MetricsError> {
        if q.dimensions.len() > 10 {
            return Err(MetricsError::InvalidParameterValue(
                "The collection Dimensions must not have a size greater than 10.".to_owned(),
            ));
        }
        let now = self.clock.now();
        let filters = filters_hash(&[
            &q.account_id,
            &q.region,
            q.namespace.as_deref().unwrap_or("\u{0}"),
            q.metric_name.as_deref().unwrap_or("\u{0}"),
            &format!("{:?}", q.dimensions),
            if q.recently_active { "PT3H" } else { "" },
        ]);
        let cursor: Option<ListKey> = match &q.next_token {
            Some(token) => Some(
                self.tokens
                    .open(token, &filters, now, 24 * 3600)
                    .ok_or_else(|| {
                        MetricsError::InvalidParameterValue(
                            "Request parameter NextToken is invalid".to_owned(),
                        )
                    })?,
            ),
            None => None,
        };
        let oldest = if q.recently_active {
            now.millis() - 3 * 3_600_000
        } else {
            now.millis() - LISTED_FOR_MS
        };
        let metrics = self.metrics.read().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        let mut last_key = None;
        let mut more = false;
        if let Some(all) = metrics
            .by_region
            .get(&(q.account_id.clone(), q.region.clone()))
        {
            let lower = match &cursor {
                Some(c) => Bound::Excluded(c.clone()),
                None => Bound::Unbounded,
            };
            for (key, series) in all.range((lower, Bound::Unbounded)) {
                let m = &series.metric;
                let visible = series.last_received.millis() >= oldest
                    && q.namespace.as_ref().is_none_or(|n| *n == m.namespace)
                    && q.metric_name.as_ref().is_none_or(|n| *n == m.name)
                    && q.dimensions.iter().all(|(name, value)| {
                        m.dimensions.iter().any(|d| {
                            d.name == *name && value.as_ref().is_none_or(|v| *v == d.value)
                        })
                    });
                if !visible {
                    continue;
                }
                if out.len() == PAGE_SIZE {
                    more = true;
                    break;
                }
                out.push(m.clone());
                last_key = Some(key.clone());
            }
        }
        let next_token = match (more, last_key) {
            (true, Some(key)) => Some(self.tokens.issue(&filters, &key, now)),
            _ => None,
        };
        Ok(ListMetricsPage {
            metrics: out,
            next_token,
        })
    }
}

/// What a flush found to write.
type FlushWork = Vec<(SeriesKey, ListKey, Arc<Vec<Point>>)>;
/// L0 entries, the (account, region, day) partitions they touch, and points.
type Encoded = (Vec<RawEntry>, BTreeSet<(String, String, i64)>, u64);

/// Encodes frozen points into one block per series and day.
fn encode_l0(work: &FlushWork) -> Result<Encoded, MetricsError> {
    let mut entries = Vec::new();
    let mut partitions = BTreeSet::new();
    let mut moved = 0u64;
    for (series, _, frozen) in work {
        moved += frozen.len() as u64;
        let mut points: Vec<&Point> = frozen.iter().collect();
        points.sort_by_key(|p| p.timestamp);
        for day_points in
            points.chunk_by(|a, b| day_of(a.timestamp.millis()) == day_of(b.timestamp.millis()))
        {
            let day = day_of(day_points[0].timestamp.millis());
            partitions.insert((series.account.clone(), series.region.clone(), day));
            entries.push(RawEntry {
                series: series.clone(),
                day,
                block: seal_block(day_points)?,
            });
        }
    }
    Ok((entries, partitions, moved))
}

fn series_key(account: &str, region: &str, series: &Series) -> SeriesKey {
    SeriesKey {
        account: account.to_owned(),
        region: region.to_owned(),
        metric: series.metric.clone(),
        last_received: series.last_received.millis(),
    }
}

fn seal_block<P: std::borrow::Borrow<Point>>(points: &[P]) -> Result<Block, MetricsError> {
    Ok(Block {
        min_t: points.first().map_or(0, |p| p.borrow().timestamp.millis()),
        max_t: points.last().map_or(0, |p| p.borrow().timestamp.millis()),
        points: points.len(),
        bytes: encode_block(points).map_err(storage)?.into(),
    })
}

fn put_segment(path: &str, info: &SegmentInfo) -> CatalogOp {
    CatalogOp::put(
        SEGMENTS_TABLE,
        path.to_owned(),
        serde_json::to_vec(info).unwrap_or_default(),
    )
}

fn read_state(catalog: &dyn Catalog) -> Result<State, MetricsError> {
    match catalog.get(STATE_TABLE, STATE_KEY).map_err(storage)? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(storage),
        None => Ok(State::default()),
    }
}

fn encode(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + entry.d.len() * 64);
    out.push(PAYLOAD_V2);
    put_str(&mut out, &entry.a);
    put_str(&mut out, &entry.r);
    put_ivarint(&mut out, entry.t);
    put_varint(&mut out, entry.d.len() as u64);
    for d in &entry.d {
        put_str(&mut out, &d.metric.namespace);
        put_str(&mut out, &d.metric.name);
        put_varint(&mut out, d.metric.dimensions.len() as u64);
        for dim in &d.metric.dimensions {
            put_str(&mut out, &dim.name);
            put_str(&mut out, &dim.value);
        }
        put_ivarint(&mut out, d.timestamp.millis());
        out.push(d.unit.index());
        out.push(d.storage_resolution);
        match &d.sample {
            Sample::Value(v) => {
                out.push(0);
                put_f64(&mut out, *v);
            }
            Sample::Set {
                count,
                sum,
                min,
                max,
            } => {
                out.push(1);
                for v in [count, sum, min, max] {
                    put_f64(&mut out, *v);
                }
            }
            Sample::Values { values, counts } => {
                // Kind 3: values whose counts are all 1, stored without them.
                out.push(if counts.is_empty() { 3 } else { 2 });
                put_varint(&mut out, values.len() as u64);
                for v in values.iter().chain(counts) {
                    put_f64(&mut out, *v);
                }
            }
        }
    }
    out
}

fn decode(payload: &[u8]) -> Result<Entry, String> {
    match payload.split_first() {
        Some((&PAYLOAD_V2, body)) => decode_v2(body),
        Some((&PAYLOAD_V1, body)) => serde_json::from_slice(body).map_err(|e| e.to_string()),
        Some((v, _)) => Err(format!("unknown payload version {v}")),
        None => Err("empty payload".to_owned()),
    }
}

fn decode_v2(buf: &[u8]) -> Result<Entry, String> {
    let pos = &mut 0;
    let a = get_str(buf, pos)?;
    let r = get_str(buf, pos)?;
    let t = get_ivarint(buf, pos)?;
    let n = get_varint(buf, pos)? as usize;
    let mut d = Vec::with_capacity(n.min(buf.len()));
    let byte = |pos: &mut usize| -> Result<u8, String> {
        let b = *buf.get(*pos).ok_or("truncated datum")?;
        *pos += 1;
        Ok(b)
    };
    for _ in 0..n {
        let namespace = get_str(buf, pos)?;
        let name = get_str(buf, pos)?;
        let dims = get_varint(buf, pos)? as usize;
        if dims > 30 {
            return Err("too many dimensions".into());
        }
        let mut dimensions = Vec::with_capacity(dims);
        for _ in 0..dims {
            dimensions.push(Dimension {
                name: get_str(buf, pos)?,
                value: get_str(buf, pos)?,
            });
        }
        let timestamp = Timestamp::from_millis(get_ivarint(buf, pos)?);
        let unit = Unit::from_index(byte(pos)?).ok_or("unknown unit")?;
        let storage_resolution = byte(pos)?;
        let sample = match byte(pos)? {
            0 => Sample::Value(get_f64(buf, pos)?),
            1 => Sample::Set {
                count: get_f64(buf, pos)?,
                sum: get_f64(buf, pos)?,
                min: get_f64(buf, pos)?,
                max: get_f64(buf, pos)?,
            },
            kind @ (2 | 3) => {
                let m = get_varint(buf, pos)? as usize;
                if m > buf.len() {
                    return Err("implausible value count".into());
                }
                let mut values = Vec::with_capacity(m);
                for _ in 0..m {
                    values.push(get_f64(buf, pos)?);
                }
                let mut counts = Vec::new();
                if kind == 2 {
                    counts.reserve(m);
                    for _ in 0..m {
                        counts.push(get_f64(buf, pos)?);
                    }
                }
                Sample::Values { values, counts }
            }
            other => return Err(format!("unknown sample kind {other}")),
        };
        d.push(ValidatedDatum {
            metric: MetricId {
                namespace,
                name,
                dimensions,
            },
            timestamp,
            unit,
            storage_resolution,
            sample,
        });
    }
    Ok(Entry { a, r, t, d })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::model::{validate_put, DatumInput, PutRequest};
    use trailwatch_storage::SqliteCatalog;
    use trailwatch_types::ManualClock;

    async fn open(dir: &Path, clock: Arc<ManualClock>) -> MetricStore {
        let catalog = Arc::new(SqliteCatalog::open(&dir.join("catalog.db")).unwrap());
        let objects = Objects::local(&dir.join("objects")).unwrap();
        MetricStore::open(
            &dir.join("metrics"),
            catalog,
            objects,
            clock,
            TokenCodec::new(b"k".to_vec()),
            WalOptions::default(),
        )
        .await
        .unwrap()
    }

    fn put_request(name: &str, dims: &[(&str, &str)], value: f64) -> PutRequest {
        PutRequest {
            namespace: Some("App".into()),
            metric_data: vec![DatumInput {
                metric_name: Some(name.into()),
                dimensions: dims
                    .iter()
                    .map(|(k, v)| (Some(k.to_string()), Some(v.to_string())))
                    .collect(),
                value: Some(value),
                ..DatumInput::default()
            }],
            entity_metric_data: vec![],
        }
    }

    fn query() -> ListMetricsQuery {
        ListMetricsQuery {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn list_filters_order_pages_and_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(Timestamp::from_secs(1_767_225_600)));
        let store = open(dir.path(), clock.clone()).await;
        let now = clock.now();
        for (name, dims) in [
            ("Latency", vec![("Svc", "a")]),
            ("Latency", vec![("Svc", "b"), ("Region", "x")]),
            ("Errors", vec![]),
        ] {
            let datums = validate_put(put_request(name, &dims, 1.0), now).unwrap();
            store
                .put("123456789012", "us-east-1", datums)
                .await
                .unwrap();
        }
        // The same identity again, dimensions in another order: still one metric.
        let datums = validate_put(
            put_request("Latency", &[("Region", "x"), ("Svc", "b")], 2.0),
            now,
        )
        .unwrap();
        store
            .put("123456789012", "us-east-1", datums)
            .await
            .unwrap();
        store.shutdown().await.unwrap();
        drop(store);
        let store = open(dir.path(), clock.clone()).await;
        let names = |page: ListMetricsPage| -> Vec<String> {
            page.metrics
                .iter()
                .map(|m| format!("{}:{}", m.name, canonical_dimensions(&m.dimensions)))
                .collect()
        };
        assert_eq!(
            names(store.list(&query()).unwrap()),
            ["Errors:", "Latency:Region=x,Svc=b", "Latency:Svc=a"]
        );
        let svc = ListMetricsQuery {
            dimensions: vec![("Svc".into(), None)],
            ..query()
        };
        assert_eq!(names(store.list(&svc).unwrap()).len(), 2);
        let svc_b = ListMetricsQuery {
            dimensions: vec![("Svc".into(), Some("b".into()))],
            ..query()
        };
        assert_eq!(
            names(store.list(&svc_b).unwrap()),
            ["Latency:Region=x,Svc=b"]
        );
        let lower = ListMetricsQuery {
            metric_name: Some("latency".into()),
            ..query()
        };
        assert!(store.list(&lower).unwrap().metrics.is_empty());
        let other = ListMetricsQuery {
            region: "eu-west-1".into(),
            ..query()
        };
        assert!(store.list(&other).unwrap().metrics.is_empty());
        // RecentlyActive and the two-week window.
        clock.advance_millis(4 * 3_600_000);
        assert!(store
            .list(&ListMetricsQuery {
                recently_active: true,
                ..query()
            })
            .unwrap()
            .metrics
            .is_empty());
        assert_eq!(store.list(&query()).unwrap().metrics.len(), 3);
        clock.advance_millis(LISTED_FOR_MS);
        assert!(store.list(&query()).unwrap().metrics.is_empty());
        assert!(matches!(
            store.list(&ListMetricsQuery {
                next_token: Some("bogus".into()),
                ..query()
            }),
            Err(MetricsError::InvalidParameterValue(_))
        ));
    }

    #[tokio::test]
    async fn pages_of_500() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(Timestamp::from_secs(1_767_225_600)));
        let store = open(dir.path(), clock.clone()).await;
        for chunk in 0..2 {
            let request = PutRequest {
                namespace: Some("App".into()),
                metric_data: (0..600)
                    .map(|i| DatumInput {
                        metric_name: Some(format!("m{:04}", chunk * 600 + i)),
                        value: Some(1.0),
                        ..DatumInput::default()
                    })
                    .take(if chunk == 0 { 600 } else { 100 })
                    .collect(),
                entity_metric_data: vec![],
            };
            store
                .put(
                    "123456789012",
                    "us-east-1",
                    validate_put(request, clock.now()).unwrap(),
                )
                .await
                .unwrap();
        }
        let first = store.list(&query()).unwrap();
        assert_eq!(first.metrics.len(), 500);
        let second = store
            .list(&ListMetricsQuery {
                next_token: first.next_token.clone(),
                ..query()
            })
            .unwrap();
        assert_eq!(second.metrics.len(), 200);
        assert!(second.next_token.is_none());
        assert_eq!(second.metrics[0].name, "m0500");
    }

    fn stats_request(
        start: Timestamp,
        end: Timestamp,
        period: i64,
        stats: &[&str],
    ) -> StatisticsQuery {
        let metric = MetricId {
            namespace: "App".into(),
            name: "Latency".into(),
            dimensions: vec![Dimension {
                name: "Host".into(),
                value: "a".into(),
            }],
        };
        let request =
            super::super::get::StatisticsRequest::for_metric(&metric, start, end, period, stats);
        // Validated against the data's own time so the query itself is never
        // emptied by the period rules; the store applies the tier rules at `now`.
        let mut q = super::super::get::validate_statistics(&request, end).unwrap();
        q.empty = false;
        q
    }

    /// Three days of one value a minute (and a sub-minute burst), put as time
    /// passes, then flushed, compacted, restarted and folded down the tiers:
    /// every answer matches the naive reference over the raw points, within
    /// each tier's rules.
    #[tokio::test]
    async fn tiers_survive_flush_compaction_folding_and_restart() {
        let dir = tempfile::tempdir().unwrap();
        let start = Timestamp::parse_iso8601("2024-01-01T00:00:00Z").unwrap();
        let clock = Arc::new(ManualClock::new(start));
        let mut store = open(dir.path(), clock.clone()).await;
        let mut points: Vec<Point> = Vec::new();
        for hour in 0..72i64 {
            let datums: Vec<DatumInput> = (0..60i64)
                .map(|m| {
                    let i = hour * 60 + m;
                    DatumInput {
                        metric_name: Some("Latency".into()),
                        dimensions: vec![(Some("Host".into()), Some("a".into()))],
                        value: Some(((i * 7919) % 1000) as f64 / 10.0),
                        timestamp: Some(Timestamp::from_millis(start.millis() + i * 60_000)),
                        ..DatumInput::default()
                    }
                })
                .collect();
            clock.set(Timestamp::from_millis(
                start.millis() + (hour + 1) * 3_600_000,
            ));
            let request = PutRequest {
                namespace: Some("App".into()),
                metric_data: datums,
                entity_metric_data: vec![],
            };
            let valid = validate_put(request, clock.now()).unwrap();
            points.extend(valid.iter().map(ValidatedDatum::point));
            store.put("123456789012", "us-east-1", valid).await.unwrap();
            if hour % 24 == 23 {
                let report = store.maintain().await.unwrap();
                assert_eq!(report.flushed_points, 24 * 60);
            }
        }
        let end = clock.now();
        let check = |store: &MetricStore, period: i64, stats: &[&str]| {
            let q = stats_request(start, end, period, stats);
            let got = store.statistics("123456789012", "us-east-1", &q).unwrap();
            let want = super::super::get::compute(&q, &points);
            assert_eq!(got.len(), want.len(), "{period} {stats:?}");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!((g.timestamp, &g.extended), (w.timestamp, &w.extended));
                for ((gk, gv), (wk, wv)) in g.statistics.iter().zip(&w.statistics) {
                    assert_eq!(gk, wk);
                    assert!((gv - wv).abs() <= 1e-9 * wv.abs(), "{gk}: {gv} vs {wv}");
                }
            }
            got.len()
        };
        assert_eq!(check(&store, 3600, &["Sum", "SampleCount", "Maximum"]), 72);
        assert_eq!(check(&store, 3600, &["p90", "TM(10%:90%)"]), 72);
        // Every point is in a day segment now: the WAL above the checkpoint is empty.
        let (bytes, stored_points) = store.stored_bytes().unwrap();
        assert_eq!(stored_points, 72 * 60);
        assert!(bytes > 0 && bytes < 72 * 60 * 4, "{bytes} bytes");
        store.shutdown().await.unwrap();
        drop(store);
        store = open(dir.path(), clock.clone()).await;
        assert_eq!(check(&store, 3600, &["Sum", "SampleCount", "Minimum"]), 72);
        // 20 days on, the days are in the 5-minute tier: hours still answer,
        // exactly (one value a minute stays below the exact-distribution limit).
        clock.advance_millis(20 * DAY_MS);
        let report = store.maintain().await.unwrap();
        assert_eq!(report.folded_days, 3);
        assert_eq!(check(&store, 3600, &["Sum", "SampleCount", "Maximum"]), 72);
        assert_eq!(check(&store, 300, &["p99"]), 72 * 12);
        // One-minute periods are gone with the raw data: an empty answer.
        let q = stats_request(
            start,
            Timestamp::from_millis(start.millis() + DAY_MS),
            60,
            &["Sum"],
        );
        assert!(store
            .statistics("123456789012", "us-east-1", &q)
            .unwrap()
            .is_empty());
        store.shutdown().await.unwrap();
        drop(store);
        store = open(dir.path(), clock.clone()).await;
        assert_eq!(check(&store, 300, &["Sum", "SampleCount"]), 72 * 12);
        // 70 days on: hours only.
        clock.advance_millis(50 * DAY_MS);
        store.maintain().await.unwrap();
        assert_eq!(check(&store, 3600, &["p50", "IQM"]), 72);
        let q = stats_request(start, end, 300, &["Sum"]);
        assert!(store
            .statistics("123456789012", "us-east-1", &q)
            .unwrap()
            .is_empty());
        store.shutdown().await.unwrap();
        drop(store);
        store = open(dir.path(), clock.clone()).await;
        assert_eq!(check(&store, 86_400, &["Sum", "SampleCount"]), 3);
        // After 455 days nothing is left, on disk either.
        clock.advance_millis(400 * DAY_MS);
        store.maintain().await.unwrap();
        let q = stats_request(start, end, 3600, &["Sum"]);
        assert!(store
            .statistics("123456789012", "us-east-1", &q)
            .unwrap()
            .is_empty());
        assert_eq!(store.stored_bytes().unwrap(), (0, 0));
    }
}
