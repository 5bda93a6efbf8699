//! Trail delivery (`spec/cloudtrail.md` §2–3): the worker that reads the
//! audit feed in record order, follows each trail's StartLogging, StopLogging,
//! UpdateTrail and DeleteTrail records, buffers the records each trail
//! selects, writes them as gzip JSON log files, and keeps each trail's signed
//! digest chain.
//!
//! # Exactly once
//! - A trail's durable cursor says which feed records it has finished with.
//!   The audit store keeps every record after the smallest cursor, in memory
//!   and (after a restart) from its WAL or segments, so a restart scans again
//!   from each trail's cursor and rebuilds the same buffers.
//! - Before a log file is written, its key and the sequence numbers of its
//!   records are committed as the trail's intent. After a crash the same
//!   records are written again under the same key, so a record is in exactly
//!   one file. Committing the files moves the cursor past them.
//! - Logging state is decided by the records themselves: a StopLogging call's
//!   own record is the last one logged, a StartLogging call's record is the
//!   first.
//! - Digests cover fixed windows from the chain start; a window's digest is a
//!   deterministic function of its files, so rewriting it after a crash puts
//!   the same bytes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use trailwatch_core::audit::Change as CatalogOp;
use trailwatch_core::digest::{self, DigestInput, LogFileEntry, PreviousDigest};
use trailwatch_core::insights::{Call, Detector, SeriesKey, Thresholds};
use trailwatch_core::trails::{
    Chain, DeliveryState, Intent, IntentFile, RecordView, RegionChain, Trail, Trails, RETIRED,
    STATE,
};
use trailwatch_types::Timestamp;

use crate::app::App;

/// Records a trail buffers before it writes a file at once (§2.3).
const MAX_BUFFERED_RECORDS: usize = 10_000;
/// Uncompressed bytes a trail buffers before it writes a file at once (§2.3).
const MAX_BUFFERED_BYTES: usize = 50 * 1024 * 1024;
/// Feed records read per pass.
const SCAN_BATCH: usize = 50_000;
/// A trail's CreateTrail record may be durable a moment before its catalog
/// row: the scan waits this long for it before passing over the record.
const CREATE_WAIT_MS: i64 = 5_000;
/// Digest windows written in one pass after a long stop; older ones are
/// merged into one longer window.
const MAX_CATCH_UP_DIGESTS: i64 = 24 * 7;

/// One buffered record.
#[derive(Debug, Clone)]
struct Buffered {
    seq: u64,
    json: Arc<str>,
    region: String,
    time_ms: i64,
    /// `CloudTrail-Insight` for Insights records, else `CloudTrail` (§2.1).
    folder: &'static str,
}

/// A trail the worker follows.
#[derive(Debug)]
struct Run {
    trail: Trail,
    state: DeliveryState,
    /// Feed position this run has read through.
    scanned: u64,
    /// Logging state at `scanned`.
    logging: bool,
    buffer: Vec<Buffered>,
    buffered_bytes: usize,
    first_seen_ms: Option<i64>,
    /// A StopLogging, validation change or DeleteTrail was read: write now.
    flush_now: bool,
    /// The scan stops at such a record until the files and the final digest
    /// before it are written, so a chain never spans a stop.
    blocked: bool,
    /// The trail was deleted: finish and forget it.
    ending: bool,
    /// The durable state differs from the last commit.
    dirty: bool,
}

impl Run {
    fn new(trail: Trail, state: DeliveryState) -> Self {
        let scanned = state.cursor;
        let logging = state.logging;
        Self {
            trail,
            state,
            scanned,
            logging,
            buffer: Vec::new(),
            buffered_bytes: 0,
            first_seen_ms: None,
            flush_now: false,
            blocked: false,
            ending: false,
            dirty: true,
        }
    }
}

/// The worker's memory between passes.
#[derive(Debug, Default)]
pub struct Worker {
    runs: HashMap<String, Run>,
    /// Feed position every run has read through.
    scanned: u64,
    loaded: bool,
    /// The last scan read everything the feed had.
    caught_up: bool,
    /// CloudTrail Insights counts, and how far they are durable.
    insights: InsightsState,
    /// The feed position of the last committed `insights`.
    insights_durable: u64,
}

/// Catalog table and key of the Insights detector.
const INSIGHTS_TABLE: &str = "trail_insights";
const INSIGHTS_KEY: &str = "detector";

/// The Insights detector with the feed position it has counted through.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct InsightsState {
    /// Records through this sequence number are counted.
    seq: u64,
    /// Minutes before this one are evaluated.
    until_minute: i64,
    detector: Detector,
}

/// Which Insights a trail asks for, for records of its account.
#[derive(Debug, Clone)]
struct InsightScope {
    home_region: String,
    multi_region: bool,
    /// (insight type, event categories).
    selectors: Vec<(String, Vec<String>)>,
}

impl InsightScope {
    fn wants(&self, region: &str, insight_type: &str, category: &str) -> bool {
        (self.multi_region || region == self.home_region)
            && self
                .selectors
                .iter()
                .any(|(t, cats)| t == insight_type && cats.iter().any(|c| c == category))
    }
}

/// Runs delivery passes every second until `stop` fires, then writes what is
/// buffered.
pub async fn run(app: Arc<App>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut worker = Worker::default();
    loop {
        if let Err(err) = worker.pass(&app, false).await {
            tracing::error!(error = %err, "trail delivery pass failed");
        }
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    if let Err(err) = worker.pass(&app, true).await {
        tracing::error!(error = %err, "trail delivery at shutdown failed");
    }
}

/// What a control record does to a trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Create,
    Start,
    Stop,
    Update,
    Delete,
}

fn control_of(record: &serde_json::Value) -> Option<(Control, String)> {
    if record.get("eventSource")?.as_str()? != "cloudtrail.amazonaws.com"
        || record.get("errorCode").is_some_and(|e| !e.is_null())
    {
        return None;
    }
    let control = match record.get("eventName")?.as_str()? {
        "CreateTrail" => Control::Create,
        "StartLogging" => Control::Start,
        "StopLogging" => Control::Stop,
        "UpdateTrail" | "PutEventSelectors" | "PutInsightSelectors" => Control::Update,
        "DeleteTrail" => Control::Delete,
        _ => return None,
    };
    let params = record.get("requestParameters")?;
    let name = params
        .get("name")
        .or_else(|| params.get("trailName"))?
        .as_str()?
        .to_owned();
    Some((control, name))
}

/// Whether a control record naming `name`, made in `region` by `account`, is about `t`.
fn names_trail(t: &Trail, account: &str, region: &str, name: &str) -> bool {
    if t.account != account {
        return false;
    }
    if name.starts_with("arn:") {
        return name == t.arn();
    }
    name == t.name && (region == t.home_region || t.multi_region)
}

fn storage(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Worker {
    async fn load(&mut self, app: &App) -> Result<(), String> {
        let store = Trails::new(app.audit.catalog());
        let cursor = app.audit.feed_cursor().map_err(storage)?;
        self.scanned = cursor;
        if let Some(bytes) = app
            .audit
            .catalog()
            .get(INSIGHTS_TABLE, INSIGHTS_KEY)
            .map_err(storage)?
        {
            self.insights = serde_json::from_slice(&bytes).map_err(storage)?;
        } else {
            self.insights.seq = cursor;
        }
        self.insights_durable = self.insights.seq;
        for (trail, retired) in store
            .all()
            .map_err(storage)?
            .into_iter()
            .map(|t| (t, false))
            .chain(
                store
                    .retired()
                    .map_err(storage)?
                    .into_iter()
                    .map(|t| (t, true)),
            )
        {
            // A trail without a state was created after the feed cursor: its
            // CreateTrail record is read again.
            let Some(state) = store.stored_state(&trail.id).map_err(storage)? else {
                continue;
            };
            let mut run = Run::new(trail, state);
            run.dirty = false;
            // A deleted trail finishes once the scan has caught up (its
            // DeleteTrail record may be before or after its cursor).
            run.ending = retired;
            self.runs.insert(run.trail.id.clone(), run);
        }
        self.loaded = true;
        Ok(())
    }

    /// One pass: read the feed, then write due files and digests.
    pub async fn pass(&mut self, app: &App, shutting_down: bool) -> Result<(), String> {
        if !self.loaded {
            self.load(app).await?;
        }
        let now = app.clock.now();
        self.scan(app, now)?;
        self.evaluate_insights(app, now, shutting_down).await?;
        let interval_ms = app.config.trail_delivery_interval.as_millis() as i64;
        let ids: Vec<String> = self.runs.keys().cloned().collect();
        let mut ops: Vec<CatalogOp> = Vec::new();
        for id in ids {
            let Some(run) = self.runs.get_mut(&id) else {
                continue;
            };
            // An intent from before a restart is redone once the scan has
            // read all of its records again.
            let redo = run.state.intent.as_ref().map(|i| run.scanned >= i.through);
            let due = redo == Some(true)
                || (redo.is_none()
                    && !run.buffer.is_empty()
                    && (run.flush_now
                        || shutting_down
                        || run.buffer.len() >= MAX_BUFFERED_RECORDS
                        || run.buffered_bytes >= MAX_BUFFERED_BYTES
                        || run
                            .first_seen_ms
                            .is_some_and(|f| now.millis() - f >= interval_ms)));
            if due {
                if let Err(e) = deliver(app, run, now).await {
                    tracing::warn!(trail = %run.trail.arn(), error = %e, "trail log delivery failed; retrying");
                    // Kept for GetTrailStatus; the intent is redone next pass.
                    run.state.latest_delivery_error = Some(e);
                    run.state.latest_delivery_attempt_ms = Some(now.millis());
                    run.dirty = true;
                }
            }
            if run.buffer.is_empty() && run.state.intent.is_none() && run.state.cursor < run.scanned
            {
                // Nothing selected is waiting: the cursor follows the scan.
                run.state.cursor = run.scanned;
                run.state.logging = run.logging;
                run.dirty = true;
            }
            if let Err(e) = digests(app, run, now).await {
                tracing::warn!(trail = %run.trail.arn(), error = %e, "digest delivery failed; retrying");
                run.state.latest_digest_error = Some(e);
                run.dirty = true;
            }
            if run.blocked
                && run.buffer.is_empty()
                && run.state.intent.is_none()
                && (run.state.chain.is_none() || (run.logging && run.trail.validation))
            {
                run.blocked = false;
                run.flush_now = false;
            }
            if run.ending
                && self.caught_up
                && run.buffer.is_empty()
                && run.state.intent.is_none()
                && run.state.chain.is_none()
            {
                ops.push(CatalogOp::delete(RETIRED, run.trail.id.clone()));
                ops.push(CatalogOp::delete(STATE, run.trail.id.clone()));
                self.runs.remove(&id);
                continue;
            }
            if run.dirty {
                ops.push(Trails::state_change(&run.trail.id, &run.state));
                run.dirty = false;
            }
        }
        // The feed restarts from the smallest cursor; runs created from
        // records after it are read again from their CreateTrail record.
        let durable = self
            .low_water(|r| Some(r.state.cursor))
            .min(self.insights_durable);
        if durable > app.audit.feed_cursor().map_err(storage)? {
            ops.push(trailwatch_core::audit::AuditStore::feed_cursor_change(
                durable,
            ));
        }
        if !ops.is_empty() {
            Trails::new(app.audit.catalog())
                .commit(&ops)
                .map_err(storage)?;
        }
        app.audit.feed_forget(self.low_water(|r| Some(r.scanned)));
        Ok(())
    }

    /// Reads new feed records into the runs' buffers.
    fn scan(&mut self, app: &App, now: Timestamp) -> Result<(), String> {
        let store = Trails::new(app.audit.catalog());
        let mut scopes: HashMap<String, Vec<InsightScope>> = HashMap::new();
        for run in self.runs.values() {
            if run.logging && !run.ending && !run.trail.insights.is_empty() {
                scopes
                    .entry(run.trail.account.clone())
                    .or_default()
                    .push(InsightScope {
                        home_region: run.trail.home_region.clone(),
                        multi_region: run.trail.multi_region,
                        selectors: run
                            .trail
                            .insights
                            .iter()
                            .map(|s| (s.insight_type.clone(), s.event_categories.clone()))
                            .collect(),
                    });
            }
        }
        loop {
            // Blocked runs wait for their stop to be written; the others read on.
            let from = self.low_water(|r| (!r.blocked).then_some(r.scanned));
            let batch = app.audit.feed_after(from, SCAN_BATCH);
            if batch.is_empty() {
                self.caught_up = true;
                return Ok(());
            }
            let full = batch.len() == SCAN_BATCH;
            self.caught_up = !full;
            for (seq, entry) in batch {
                // Without trails only a CreateTrail record matters: the rest
                // is passed over unparsed.
                if self.runs.is_empty() && !entry.json.contains("\"CreateTrail\"") {
                    self.advance(seq);
                    self.insights.seq = self.insights.seq.max(seq);
                    continue;
                }
                let Ok(record) = serde_json::from_str::<serde_json::Value>(&entry.json) else {
                    tracing::warn!(seq, "audit record in the feed does not parse; skipped");
                    self.advance(seq);
                    continue;
                };
                let account = record
                    .get("recipientAccountId")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let region = record
                    .get("awsRegion")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let control = control_of(&record);
                if let Some((Control::Create, name)) = &control {
                    if seq > self.scanned {
                        match self.create_run(&store, &account, &region, name)? {
                            Some(()) => {}
                            None if now.millis() - entry.seen_ms < CREATE_WAIT_MS => {
                                // The catalog row is not there yet: read on next pass.
                                self.caught_up = false;
                                return Ok(());
                            }
                            None => {}
                        }
                    }
                }
                let view = RecordView::of(&record);
                let time_ms = record
                    .get("eventTime")
                    .and_then(serde_json::Value::as_str)
                    .and_then(|t| Timestamp::parse_iso8601(t).ok())
                    .map_or(entry.seen_ms, Timestamp::millis);
                if seq > self.insights.seq {
                    if let Some(scopes) = scopes.get(&account) {
                        observe_insights(
                            &mut self.insights.detector,
                            scopes,
                            &record,
                            &view,
                            &account,
                            &region,
                            time_ms,
                        );
                    }
                    self.insights.seq = seq;
                }
                let folder = if view.category == "Insight" {
                    "CloudTrail-Insight"
                } else {
                    "CloudTrail"
                };
                for run in self.runs.values_mut() {
                    if seq <= run.scanned || run.blocked {
                        continue;
                    }
                    run.scanned = seq;
                    let about = control
                        .as_ref()
                        .filter(|(_, name)| names_trail(&run.trail, &account, &region, name))
                        .map(|(c, _)| *c);
                    match about {
                        Some(Control::Start) if !run.logging => {
                            run.logging = true;
                            refresh(&store, run);
                            if run.trail.validation && run.state.chain.is_none() {
                                start_chain(run, time_ms / 1000);
                            }
                        }
                        Some(Control::Update) => {
                            let was = run.trail.validation;
                            refresh(&store, run);
                            if was && !run.trail.validation {
                                run.flush_now = true;
                                run.blocked = true;
                            }
                            if !was && run.trail.validation && run.logging {
                                start_chain(run, time_ms / 1000);
                            }
                        }
                        _ => {}
                    }
                    if run.logging
                        && run.trail.account == account
                        && run.trail.covers_region(&region)
                        && run.trail.selects(&view)
                    {
                        if run.buffer.is_empty() {
                            run.first_seen_ms = Some(now.millis());
                        }
                        run.buffered_bytes += entry.json.len();
                        run.buffer.push(Buffered {
                            seq,
                            json: entry.json.clone(),
                            region: region.clone(),
                            time_ms,
                            folder,
                        });
                    }
                    match about {
                        Some(Control::Stop) if run.logging => {
                            run.logging = false;
                            run.flush_now = true;
                            run.blocked = true;
                        }
                        Some(Control::Delete) => {
                            run.logging = false;
                            run.flush_now = true;
                            run.blocked = true;
                            run.ending = true;
                        }
                        _ => {}
                    }
                }
                self.advance(seq);
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Evaluates the Insights minutes that ended (with a 2-second grace for
    /// records still being answered), writes their Start/End records, and
    /// commits the detector with the feed position it has counted.
    /// Records after the committed position are counted again after a crash,
    /// never twice: the restart starts from the committed detector.
    async fn evaluate_insights(
        &mut self,
        app: &App,
        now: Timestamp,
        shutting_down: bool,
    ) -> Result<(), String> {
        let until = (now.millis() - 2_000).div_euclid(60_000);
        // Committed once a minute (and at shutdown): the feed keeps the
        // records counted since, and they are counted again after a crash.
        if until <= self.insights.until_minute
            && !(shutting_down && self.insights.seq != self.insights_durable)
        {
            return Ok(());
        }
        let thresholds = Thresholds {
            baseline_minutes: app.config.insights_baseline_minutes,
            ..Thresholds::default()
        };
        let events = if until > self.insights.until_minute {
            self.insights.until_minute = until;
            self.insights.detector.evaluate(until, &thresholds)
        } else {
            Vec::new()
        };
        // Committed before the events are written: a crash in between loses
        // an insight record rather than writing it twice.
        let state = serde_json::to_vec(&self.insights).map_err(storage)?;
        Trails::new(app.audit.catalog())
            .commit(&[CatalogOp::put(INSIGHTS_TABLE, INSIGHTS_KEY, state)])
            .map_err(storage)?;
        self.insights_durable = self.insights.seq;
        for event in events {
            let mut record = event.record;
            if let Some(map) = record.as_object_mut() {
                map.insert("eventID".into(), uuid::Uuid::new_v4().to_string().into());
            }
            tracing::info!(details = %record["insightDetails"]["insightType"], state = %record["insightDetails"]["state"], api = %record["insightDetails"]["eventName"], "insight event");
            app.audit.append_json(record).await.map_err(storage)?;
        }
        Ok(())
    }

    /// The smallest feed position `position` gives over the runs (`None`
    /// leaves a run out), and never past the worker's own scan.
    fn low_water(&self, position: impl Fn(&Run) -> Option<u64>) -> u64 {
        self.runs
            .values()
            .filter_map(position)
            .min()
            .unwrap_or(self.scanned)
            .min(self.scanned)
    }

    fn advance(&mut self, seq: u64) {
        self.scanned = self.scanned.max(seq);
    }

    /// Starts following the trail a CreateTrail record created. `None` when
    /// its catalog row is not visible (yet).
    fn create_run(
        &mut self,
        store: &Trails,
        account: &str,
        region: &str,
        name: &str,
    ) -> Result<Option<()>, String> {
        let live = store.get(account, region, name).map_err(storage)?;
        let candidates = match live {
            Some(t) => vec![t],
            None => store
                .retired()
                .map_err(storage)?
                .into_iter()
                .filter(|t| t.account == account && t.home_region == region && t.name == name)
                .collect(),
        };
        let Some(trail) = candidates
            .into_iter()
            .find(|t| !self.runs.contains_key(&t.id))
        else {
            return Ok(
                if self.runs.values().any(|r| {
                    r.trail.account == account
                        && r.trail.home_region == region
                        && r.trail.name == name
                }) {
                    Some(())
                } else {
                    None
                },
            );
        };
        let mut run = Run::new(
            trail,
            DeliveryState {
                v: 1,
                cursor: self.scanned,
                ..DeliveryState::default()
            },
        );
        run.scanned = self.scanned;
        self.runs.insert(run.trail.id.clone(), run);
        Ok(Some(()))
    }
}

/// Counts `record` in the Insights series its account's trails ask for
/// (§7.1): write management calls (and data calls when asked) for the call
/// rate, calls with an error code for the error rate.
fn observe_insights(
    detector: &mut Detector,
    scopes: &[InsightScope],
    record: &serde_json::Value,
    view: &RecordView<'_>,
    account: &str,
    region: &str,
    time_ms: i64,
) {
    if !matches!(view.category, "Management" | "Data") {
        return;
    }
    let call = Call {
        time_secs: time_ms.div_euclid(1000),
        user_arn: view.user_arn,
        user_agent: record.get("userAgent").and_then(serde_json::Value::as_str),
        error_code: view.error_code,
    };
    let key = |insight_type: &str, error_code: Option<&str>| SeriesKey {
        account: account.to_owned(),
        region: region.to_owned(),
        insight_type: insight_type.to_owned(),
        event_source: view.event_source.to_owned(),
        event_name: view.event_name.to_owned(),
        error_code: error_code.map(str::to_owned),
    };
    let wants = |t: &str| scopes.iter().any(|s| s.wants(region, t, view.category));
    let counts_for_rate = view.category == "Data" || !view.read_only;
    if counts_for_rate && wants("ApiCallRateInsight") {
        detector.observe(key("ApiCallRateInsight", None), &call);
    }
    if let Some(code) = view.error_code {
        if wants("ApiErrorRateInsight") {
            detector.observe(key("ApiErrorRateInsight", Some(code)), &call);
        }
    }
}

/// Reloads a run's trail configuration (it changed or logging started).
fn refresh(store: &Trails, run: &mut Run) {
    let t = &run.trail;
    if let Ok(Some(fresh)) = store.get(&t.account, &t.home_region, &t.name) {
        if fresh.id == t.id {
            run.trail = fresh;
        }
    }
}

fn start_chain(run: &mut Run, start_secs: i64) {
    let mut regions = BTreeMap::new();
    regions.insert(run.trail.home_region.clone(), RegionChain::default());
    run.state.chain = Some(Chain {
        window_start: start_secs,
        regions,
    });
    run.dirty = true;
}

fn records_file(records: &[&Buffered]) -> Vec<u8> {
    let total: usize = records.iter().map(|r| r.json.len() + 1).sum();
    let mut out = Vec::with_capacity(total + 16);
    out.extend_from_slice(b"{\"Records\":[");
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(r.json.as_bytes());
    }
    out.extend_from_slice(b"]}");
    out
}

/// Writes the run's buffer as one file per region (or redoes a committed intent).
async fn deliver(app: &App, run: &mut Run, now: Timestamp) -> Result<(), String> {
    let intent = match run.state.intent.clone() {
        Some(intent) => intent,
        None => {
            let mut by_region: BTreeMap<(&'static str, String), Vec<&Buffered>> = BTreeMap::new();
            for b in &run.buffer {
                by_region
                    .entry((b.folder, b.region.clone()))
                    .or_default()
                    .push(b);
            }
            let files = by_region
                .into_iter()
                .map(|((folder, region), mut records)| {
                    records.sort_by_key(|r| (r.time_ms, r.seq));
                    IntentFile {
                        key: digest::log_file_key(
                            run.trail.prefix.as_deref(),
                            &run.trail.account,
                            folder,
                            &region,
                            now,
                            &digest::unique16(),
                        ),
                        bucket: run.trail.bucket.clone(),
                        region,
                        seqs: records.iter().map(|r| r.seq).collect(),
                    }
                })
                .collect();
            let intent = Intent {
                through: run.scanned,
                logging: run.logging,
                delivered_ms: now.millis(),
                files,
            };
            run.state.intent = Some(intent.clone());
            // The keys are durable before any file exists under them.
            Trails::new(app.audit.catalog())
                .commit(&[Trails::state_change(&run.trail.id, &run.state)])
                .map_err(storage)?;
            intent
        }
    };
    // Owned (the records are shared text): the run is updated below.
    let by_seq: HashMap<u64, Buffered> = run.buffer.iter().map(|b| (b.seq, b.clone())).collect();
    let mut written = Vec::new();
    for file in &intent.files {
        let records: Vec<&Buffered> = file.seqs.iter().filter_map(|s| by_seq.get(s)).collect();
        if records.is_empty() {
            continue;
        }
        let json = records_file(&records);
        let hash = digest::sha256_hex(&json);
        let gz = digest::gzip(&json);
        crate::archive::put(app, &file.bucket, &file.key, Bytes::from(gz), &[], now).await?;
        let oldest = records.iter().map(|r| r.time_ms).min().unwrap_or(0);
        let newest = records.iter().map(|r| r.time_ms).max().unwrap_or(0);
        written.push((
            file.region.clone(),
            LogFileEntry {
                bucket: file.bucket.clone(),
                key: file.key.clone(),
                hash_hex: hash,
                oldest: Timestamp::from_secs(oldest.div_euclid(1000)),
                newest: Timestamp::from_secs(newest.div_euclid(1000)),
            },
        ));
    }
    if run.trail.cwl_group_arn.is_some() {
        let records: Vec<&Buffered> = intent
            .files
            .iter()
            .flat_map(|f| f.seqs.iter())
            .filter_map(|s| by_seq.get(s))
            .collect();
        cloudwatch_logs(app, run, &records, now).await;
    }
    if let Some(chain) = run.state.chain.as_mut() {
        for (region, entry) in &written {
            chain
                .regions
                .entry(region.clone())
                .or_default()
                .files
                .push(entry.clone());
        }
    }
    let delivered: std::collections::HashSet<u64> = intent
        .files
        .iter()
        .flat_map(|f| f.seqs.iter().copied())
        .collect();
    run.buffer
        .retain(|b| !delivered.contains(&b.seq) && b.seq > intent.through);
    run.buffered_bytes = run.buffer.iter().map(|b| b.json.len()).sum();
    run.first_seen_ms = (!run.buffer.is_empty()).then_some(now.millis());
    run.state.cursor = intent.through;
    run.state.logging = intent.logging;
    run.state.intent = None;
    run.state.latest_delivery_ms = Some(now.millis());
    run.state.latest_delivery_attempt_ms = Some(now.millis());
    run.state.latest_delivery_error = None;
    run.flush_now = false;
    run.dirty = true;
    if !written.is_empty() {
        notify(app, run, &written, now);
    }
    Ok(())
}

/// Records larger than this are not sent to CloudWatch Logs (§2.7).
const MAX_CWL_RECORD_BYTES: usize = 256 * 1024;

/// Sends `records` to the trail's log group, one event per record, one stream
/// per region (§2.7).
async fn cloudwatch_logs(app: &App, run: &mut Run, records: &[&Buffered], now: Timestamp) {
    let Some(arn) = run.trail.cwl_group_arn.clone() else {
        return;
    };
    let result = async {
        let (region, account, group) =
            trailwatch_core::trails::parse_log_group_arn(&arn).map_err(|e| e.code.to_owned())?;
        let mut by_region: BTreeMap<&str, Vec<(i64, String)>> = BTreeMap::new();
        for r in records {
            if r.json.len() > MAX_CWL_RECORD_BYTES {
                continue;
            }
            by_region
                .entry(r.region.as_str())
                .or_default()
                .push((r.time_ms, r.json.to_string()));
        }
        for (record_region, mut events) in by_region {
            events.sort_by_key(|(t, _)| *t);
            let stream = format!("{}_CloudTrail_{record_region}", run.trail.account);
            crate::services::put_system_events(app, &account, &region, &group, &stream, &events)
                .await?;
        }
        Ok::<(), String>(())
    }
    .await;
    match result {
        Ok(()) => {
            run.state.latest_cwl_ms = Some(now.millis());
            run.state.latest_cwl_error = None;
        }
        Err(e) => {
            tracing::warn!(trail = %run.trail.arn(), error = %e, "CloudWatch Logs delivery failed");
            run.state.latest_cwl_error = Some(if e.contains("ResourceNotFound") {
                "ResourceNotFoundException".to_owned()
            } else {
                "InternalFailure".to_owned()
            });
        }
    }
}

/// Publishes the §2.6 notification for delivered files to the trail's topic.
fn notify(app: &App, run: &mut Run, written: &[(String, LogFileEntry)], now: Timestamp) {
    let Some(topic) = run.trail.sns_topic_arn() else {
        return;
    };
    let message = serde_json::json!({
        "s3Bucket": run.trail.bucket,
        "s3ObjectKey": written.iter().map(|(_, f)| f.key.clone()).collect::<Vec<_>>(),
    })
    .to_string();
    run.state.latest_notification_attempt_ms = Some(now.millis());
    match crate::services::actions::publish_internal(app, &topic, &message, now) {
        Ok(()) => {
            run.state.latest_notification_ms = Some(now.millis());
            run.state.latest_notification_error = None;
        }
        Err(code) => run.state.latest_notification_error = Some(code),
    }
}

/// Writes due digests of the run's chain; ends the chain when logging or
/// validation stopped (after the last files are written).
async fn digests(app: &App, run: &mut Run, now: Timestamp) -> Result<(), String> {
    let interval = app.config.digest_interval.as_secs().max(1) as i64;
    let Some(mut chain) = run.state.chain.clone() else {
        return Ok(());
    };
    let ending = (!run.logging || !run.trail.validation || run.ending)
        && run.buffer.is_empty()
        && run.state.intent.is_none();
    let now_secs = now.secs();
    // Windows that ended while the server was down are written one by one,
    // up to a week of them; older time is covered by one long window.
    let behind = (now_secs - chain.window_start) / interval;
    if behind > MAX_CATCH_UP_DIGESTS {
        let end = now_secs - MAX_CATCH_UP_DIGESTS * interval;
        write_window(app, run, &mut chain, end, now).await?;
    }
    while chain.window_start + interval <= now_secs {
        let end = chain.window_start + interval;
        write_window(app, run, &mut chain, end, now).await?;
    }
    if ending {
        if now_secs > chain.window_start {
            write_window(app, run, &mut chain, now_secs, now).await?;
        }
        run.state.chain = None;
        run.dirty = true;
    } else {
        // Unchanged, or committed by `write_window`.
        run.state.chain = Some(chain);
    }
    Ok(())
}

/// Writes the digest of every region of `chain` for `[window_start, end]`.
async fn write_window(
    app: &App,
    run: &mut Run,
    chain: &mut Chain,
    end: i64,
    now: Timestamp,
) -> Result<(), String> {
    let t = &run.trail;
    for (region, link) in chain.regions.iter_mut() {
        let end_ts = Timestamp::from_secs(end);
        let key = digest::digest_key(
            t.prefix.as_deref(),
            &t.account,
            region,
            &t.name,
            &t.home_region,
            end_ts,
        );
        let input = DigestInput {
            account: t.account.clone(),
            bucket: t.bucket.clone(),
            key: key.clone(),
            start: Timestamp::from_secs(chain.window_start),
            end: end_ts,
            previous: link.previous.clone(),
            log_files: link.files.clone(),
        };
        // Key generation (once per region and rotation) blocks for a moment.
        let signer = crate::archive::blocking(|| app.digest_keys.signer(region, end_ts))
            .map_err(|e| e.to_string())?;
        let signed = digest::sign_digest(&input, &signer);
        crate::archive::put(
            app,
            &t.bucket,
            &key,
            Bytes::from(signed.gzip.clone()),
            &[
                ("signature".to_owned(), signed.signature_hex.clone()),
                (
                    "signature-algorithm".to_owned(),
                    digest::SIGNATURE_ALGORITHM.to_owned(),
                ),
            ],
            now,
        )
        .await?;
        link.previous = Some(PreviousDigest {
            bucket: t.bucket.clone(),
            key,
            hash_hex: signed.hash_hex,
            signature_hex: signed.signature_hex,
        });
        link.files.clear();
    }
    chain.window_start = end;
    run.state.latest_digest_ms = Some(now.millis());
    run.state.latest_digest_error = None;
    // Each window is committed as it is written: a crash rewrites at most this one.
    run.state.chain = Some(chain.clone());
    Trails::new(app.audit.catalog())
        .commit(&[Trails::state_change(&run.trail.id, &run.state)])
        .map_err(storage)?;
    Ok(())
}
