//! Log shipping: files → events → spool → PutLogEvents, losing and
//! duplicating nothing.
//!
//! A reader thread follows the files ([`crate::tail`]), gathers events per
//! destination (log group and stream), and appends them to the spool in
//! batches that keep PutLogEvents' limits, with the file offsets they reach.
//! A sender task sends the spool's batches in order, one at a time (the next
//! one's request is built and signed while the current one is in flight,
//! and held back by [`crate::gate`]), creating groups and streams when they
//! are missing and backing off while the endpoint is unreachable or
//! throttling. `state.json` keeps the agent's id,
//! the last batch sent and the file offsets; the spool holds the offsets of
//! batches written since, so a restart resumes exactly where reading
//! stopped.
//!
//! Each request carries `x-trailwatch-batch: <agent id>:<seq>`. trailwatch
//! answers a batch it already stored (the answer was lost, the agent
//! restarted before saving its progress) without storing it again; other
//! endpoints ignore the header (COMPATIBILITY.md).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aws_sdk_cloudwatchlogs::error::ProvideErrorMetadata as _;
use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use serde::{Deserialize, Serialize};

use crate::config::LogsConfig;
use crate::gate::GatedClient;
use crate::spool::{Batch, FileMark, Spool};
use crate::tail::{Entry, Event, Tailer};

/// PutLogEvents' limits (spec/logs.md §4.2).
const MAX_BATCH_EVENTS: usize = 10_000;
const MAX_BATCH_BYTES: usize = 1_048_576;
const EVENT_OVERHEAD: usize = 26;
const MAX_SPAN_MS: i64 = 24 * 3600 * 1000;
/// A destination's events are written to the spool once this many bytes wait
/// (or a quarter of the spool's bound, when smaller): several batches at a
/// time, so that all but the last of a unit are full and a busy file goes
/// out in as few requests as the 1 MiB limit allows.
const FLUSH_BYTES: usize = 4 * MAX_BATCH_BYTES;
const MIN_FLUSH_BYTES: usize = 64 * 1024;
/// The header that names a batch towards trailwatch.
pub const BATCH_HEADER: &str = "x-trailwatch-batch";

/// The agent's durable progress.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    agent_id: String,
    /// Last batch the endpoint acknowledged.
    sent_seq: u64,
    /// Last batch whose file offsets `marks` includes.
    read_seq: u64,
    marks: Vec<FileMark>,
}

/// What the reader and the sender share.
struct Shared {
    dir: PathBuf,
    spool: Spool,
    agent_id: String,
    sent_seq: u64,
    read_seq: u64,
    marks: HashMap<(u64, u64), FileMark>,
    saved: Instant,
    /// What `state.json` holds now: an idle agent does not rewrite it.
    saved_bytes: Vec<u8>,
}

impl Shared {
    fn save(&mut self) -> anyhow::Result<()> {
        let mut marks: Vec<FileMark> = self.marks.values().cloned().collect();
        marks.sort_by_key(|m| (m.dev, m.ino));
        let state = State {
            agent_id: self.agent_id.clone(),
            sent_seq: self.sent_seq,
            read_seq: self.read_seq,
            marks,
        };
        let bytes = serde_json::to_vec(&state)?;
        self.saved = Instant::now();
        if bytes == self.saved_bytes {
            return Ok(());
        }
        let path = self.dir.join("state.json");
        let tmp = self.dir.join("state.json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, &bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        self.saved_bytes = bytes;
        Ok(())
    }
}

/// Options of the log pipeline.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Where the spool and `state.json` live.
    pub state_dir: PathBuf,
    /// The spool's bound in bytes.
    pub buffer_max_bytes: u64,
}

/// The log pipeline: runs until `stop` turns true, then writes what it read
/// to the spool, saves its state, and returns (unsent batches stay in the
/// spool for the next start).
pub async fn run(
    config: LogsConfig,
    sdk: aws_types::SdkConfig,
    options: LogOptions,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let dir = options.state_dir.clone();
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let state: State = match std::fs::read(dir.join("state.json")) {
        Ok(bytes) => serde_json::from_slice(&bytes).context("read state.json")?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => State {
            agent_id: uuid::Uuid::new_v4().simple().to_string(),
            ..State::default()
        },
        Err(e) => return Err(e).context("read state.json"),
    };
    let (spool, units) = Spool::open(&dir.join("spool"), state.sent_seq, options.buffer_max_bytes)?;
    let mut marks: HashMap<(u64, u64), FileMark> = state
        .marks
        .into_iter()
        .map(|m| ((m.dev, m.ino), m))
        .collect();
    let mut read_seq = state.read_seq;
    for (seq, unit) in units {
        if seq > state.read_seq {
            for m in unit {
                marks.insert((m.dev, m.ino), m);
            }
            read_seq = seq;
        }
    }
    let entries = config
        .files
        .iter()
        .cloned()
        .map(Entry::new)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let retention: HashMap<String, i32> = config
        .files
        .iter()
        .filter_map(|f| Some((f.log_group_name.clone(), f.retention_in_days?)))
        .collect();
    let tailer = Tailer::new(entries, marks.values().cloned().collect());
    let agent_id = state.agent_id.clone();
    let shared = Arc::new(Mutex::new(Shared {
        dir: dir.clone(),
        spool,
        agent_id: state.agent_id,
        sent_seq: state.sent_seq,
        read_seq,
        marks,
        saved: Instant::now(),
        saved_bytes: Vec::new(),
    }));
    let wake = Arc::new(tokio::sync::Notify::new());
    let flush = Flush {
        bytes: usize::try_from(options.buffer_max_bytes / 4)
            .unwrap_or(usize::MAX)
            .clamp(MIN_FLUSH_BYTES, FLUSH_BYTES),
        after: Duration::from_secs(config.force_flush_interval_secs),
    };
    let reader = {
        let (shared, wake, stop) = (shared.clone(), wake.clone(), stop.clone());
        std::thread::Builder::new()
            .name("agent-logs-reader".into())
            .spawn(move || read_loop(tailer, &shared, &wake, flush, &stop))?
    };
    let (gate, gate_rx) = tokio::sync::watch::channel(0);
    let client = aws_sdk_cloudwatchlogs::Client::from_conf(
        aws_sdk_cloudwatchlogs::config::Builder::from(&sdk)
            .http_client(GatedClient::new(gate_rx))
            // A request waiting at the gate sends no body; the SDK's upload
            // stall check would count that as a stalled upload and fail it.
            .stalled_stream_protection(
                aws_sdk_cloudwatchlogs::config::StalledStreamProtectionConfig::enabled()
                    .upload_enabled(false)
                    .build(),
            )
            .build(),
    );
    let sender = Sender {
        client,
        shared: shared.clone(),
        retention,
        agent_id,
        gate,
    };
    sender.run(wake, stop).await;
    let read = tokio::task::spawn_blocking(move || reader.join())
        .await
        .context("join the log reader")?;
    match read {
        Ok(result) => result?,
        Err(_) => anyhow::bail!("the log reader panicked"),
    }
    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
    s.save()
}

/// Events waiting for one destination.
#[derive(Default)]
struct Pending {
    events: Vec<Event>,
    bytes: usize,
    since: Option<Instant>,
}

/// When a destination's waiting events go to the spool.
#[derive(Clone, Copy)]
struct Flush {
    bytes: usize,
    after: Duration,
}

fn read_loop(
    mut tailer: Tailer,
    shared: &Mutex<Shared>,
    wake: &tokio::sync::Notify,
    flush: Flush,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // Destinations (group, stream) by number, and each entry's destination:
    // the per-event work below indexes, it does not hash or copy names.
    let mut dests: Vec<(String, String)> = Vec::new();
    let mut dest_of: Vec<usize> = Vec::new();
    for e in tailer.entries() {
        let d = (
            e.config.log_group_name.clone(),
            e.config.log_stream_name.clone(),
        );
        let i = dests.iter().position(|x| *x == d).unwrap_or_else(|| {
            dests.push(d);
            dests.len() - 1
        });
        dest_of.push(i);
    }
    let feeds: Vec<Vec<usize>> = (0..dests.len())
        .map(|d| (0..dest_of.len()).filter(|&e| dest_of[e] == d).collect())
        .collect();
    let mut pending: Vec<Pending> = dests.iter().map(|_| Pending::default()).collect();
    // Each destination's marks as last kept, so an idle pass takes no lock.
    let mut kept: Vec<Option<Vec<FileMark>>> = vec![None; dests.len()];
    let mut discovered: Option<Instant> = None;
    let mut first = true;
    loop {
        let stopping = *stop.borrow();
        if discovered.is_none_or(|d| d.elapsed() >= Duration::from_secs(1)) {
            let released = tailer.discover();
            discovered = Some(Instant::now());
            let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
            if std::mem::take(&mut first) {
                // Marks of files that are gone are dropped here.
                s.marks = (0..dest_of.len())
                    .flat_map(|i| tailer.marks(i))
                    .map(|m| ((m.dev, m.ino), m))
                    .collect();
            }
            for key in released {
                s.marks.remove(&key);
            }
        }
        let full = shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .spool
            .full();
        let mut more = false;
        if !full {
            let out = tailer.poll(now_ms());
            more = out.more;
            for (entry, event) in out.events {
                let p = &mut pending[dest_of[entry]];
                p.bytes += event.message.len() + EVENT_OVERHEAD;
                p.since.get_or_insert_with(Instant::now);
                p.events.push(event);
            }
        }
        for (d, entries) in feeds.iter().enumerate() {
            let p = &mut pending[d];
            let due = p.bytes >= flush.bytes
                || p.events.len() >= MAX_BATCH_EVENTS
                || p.since.is_some_and(|t| t.elapsed() >= flush.after)
                || stopping;
            let marks: Vec<FileMark> = entries.iter().flat_map(|&i| tailer.marks(i)).collect();
            if p.events.is_empty() {
                // Nothing of these files waits: their offsets (past filtered
                // or blank lines) can be kept as they are, when they moved.
                if kept[d].as_ref() != Some(&marks) {
                    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
                    for m in &marks {
                        s.marks.insert((m.dev, m.ino), m.clone());
                    }
                    kept[d] = Some(marks);
                }
                continue;
            }
            if !due {
                continue;
            }
            kept[d] = None;
            let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
            let events = std::mem::take(&mut p.events);
            *p = Pending::default();
            let mut unit = cut(&dests[d], events);
            if let Some(last) = unit.last_mut() {
                last.marks = marks.clone();
            }
            s.spool.append(&mut unit)?;
            if let Some(last) = unit.last() {
                s.read_seq = last.seq;
            }
            for m in marks {
                s.marks.insert((m.dev, m.ino), m);
            }
            drop(s);
            wake.notify_one();
        }
        {
            let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
            if s.saved.elapsed() >= Duration::from_secs(1) || stopping {
                s.save()?;
            }
        }
        if stopping {
            return Ok(());
        }
        if !more || full {
            std::thread::sleep(Duration::from_millis(if full { 200 } else { 100 }));
        }
    }
}

/// Sorts a destination's events by time (stable: lines of one time keep
/// their order) and cuts them into batches within PutLogEvents' limits.
fn cut(dest: &(String, String), mut events: Vec<Event>) -> Vec<Batch> {
    events.sort_by_key(|e| e.timestamp);
    let mut out: Vec<Batch> = Vec::new();
    let mut bytes = 0usize;
    for e in events {
        let size = e.message.len() + EVENT_OVERHEAD;
        let start_new = match out.last() {
            None => true,
            Some(b) => {
                b.events.len() >= MAX_BATCH_EVENTS
                    || bytes + size > MAX_BATCH_BYTES
                    || b.events
                        .first()
                        .is_some_and(|f| e.timestamp - f.0 > MAX_SPAN_MS)
            }
        };
        if start_new {
            out.push(Batch {
                seq: 0,
                group: dest.0.clone(),
                stream: dest.1.clone(),
                events: Vec::new(),
                marks: Vec::new(),
                end: false,
            });
            bytes = 0;
        }
        bytes += size;
        if let Some(b) = out.last_mut() {
            b.events.push((e.timestamp, e.message));
        }
    }
    out
}

/// The wall clock in epoch milliseconds.
// The agent is a client on its host: events and points carry the host's wall
// clock, as the CloudWatch agent's do (no injected server clock here).
#[allow(clippy::disallowed_methods)]
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

struct Sender {
    client: aws_sdk_cloudwatchlogs::Client,
    shared: Arc<Mutex<Shared>>,
    retention: HashMap<String, i32>,
    agent_id: String,
    /// The one batch the HTTP client lets through (crate::gate).
    gate: tokio::sync::watch::Sender<u64>,
}

/// How a send ended.
enum Sent {
    Done,
    /// The group or the stream is missing.
    Missing,
    /// Never accepted as it is (logged): skipped.
    Refused,
    /// Worth trying again later.
    Retry(String),
}

/// A batch whose call has started.
struct InFlight {
    seq: u64,
    group: String,
    stream: String,
    call: tokio::task::JoinHandle<Sent>,
}

impl Sender {
    async fn run(
        self,
        wake: Arc<tokio::sync::Notify>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut backoff = Duration::from_millis(200);
        // The batch being sent and, behind it, the next one: its request is
        // built and signed meanwhile, and waits at the gate (crate::gate).
        let mut flight: VecDeque<InFlight> = VecDeque::new();
        loop {
            if *stop.borrow() {
                break;
            }
            if flight.is_empty() {
                let front = {
                    let s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
                    s.spool.peek()
                };
                match front {
                    Ok(Some(b)) => {
                        self.gate.send_replace(b.seq);
                        flight.push_back(self.start(b));
                    }
                    Ok(None) => {
                        tokio::select! {
                            _ = wake.notified() => {}
                            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                            _ = stop.changed() => {}
                        }
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(error = format!("{e:#}"), "the spool cannot be read");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                            _ = stop.changed() => {}
                        }
                        continue;
                    }
                }
            }
            if let Some(head) = flight.front().filter(|_| flight.len() == 1) {
                let (shared, seq) = (self.shared.clone(), head.seq);
                let next = tokio::task::spawn_blocking(move || {
                    let s = shared.lock().unwrap_or_else(|p| p.into_inner());
                    s.spool.peek_after(seq)
                })
                .await;
                if let Ok(Ok(Some(b))) = next {
                    flight.push_back(self.start(b));
                }
            }
            let Some(head) = flight.pop_front() else {
                continue;
            };
            let outcome = head
                .call
                .await
                .unwrap_or_else(|e| Sent::Retry(format!("the send task failed: {e}")));
            match outcome {
                Sent::Done | Sent::Refused => {
                    backoff = Duration::from_millis(200);
                    // The next batch goes only once this one is recorded as
                    // sent: its offsets saved, the spool moved on.
                    while let Err(e) = self.ack(head.seq) {
                        tracing::error!(
                            error = format!("{e:#}"),
                            "agent state cannot be saved; retrying"
                        );
                        if *stop.borrow() {
                            break;
                        }
                        self.pause(&mut backoff, &mut stop).await;
                    }
                    // Stopping: what waits at the gate is dropped unsent.
                    if *stop.borrow() {
                        break;
                    }
                    if let Some(next) = flight.front() {
                        self.gate.send_replace(next.seq);
                    }
                }
                Sent::Missing => {
                    abort(&mut flight);
                    if let Err(reason) = self.create(&head.group, &head.stream).await {
                        tracing::warn!(group = %head.group, stream = %head.stream, reason, "log group or stream cannot be created; retrying");
                        self.pause(&mut backoff, &mut stop).await;
                    }
                }
                Sent::Retry(reason) => {
                    abort(&mut flight);
                    tracing::warn!(
                        reason,
                        retry_in_ms = backoff.as_millis() as u64,
                        "log batch not delivered; retrying"
                    );
                    self.pause(&mut backoff, &mut stop).await;
                }
            }
        }
        abort(&mut flight);
    }

    /// Starts the call of `batch` on its own task.
    fn start(&self, batch: Batch) -> InFlight {
        let (seq, group, stream) = (batch.seq, batch.group.clone(), batch.stream.clone());
        let client = self.client.clone();
        let id = format!("{}:{}", self.agent_id, seq);
        let call = tokio::spawn(async move {
            if batch.events.is_empty() {
                // A unit's offsets past skipped lines: nothing to send.
                return Sent::Done;
            }
            send(&client, id, batch).await
        });
        InFlight {
            seq,
            group,
            stream,
            call,
        }
    }

    async fn pause(&self, backoff: &mut Duration, stop: &mut tokio::sync::watch::Receiver<bool>) {
        tokio::select! {
            _ = tokio::time::sleep(*backoff) => {}
            _ = stop.changed() => {}
        }
        *backoff = (*backoff * 2).min(Duration::from_secs(30));
    }

    fn ack(&self, seq: u64) -> anyhow::Result<()> {
        let mut s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        s.sent_seq = seq;
        // Offsets in the segments about to go must be in state.json first.
        if s.spool.would_drop(seq) {
            s.save()?;
        }
        s.spool.ack(seq);
        if s.saved.elapsed() >= Duration::from_secs(1) {
            s.save()?;
        }
        Ok(())
    }
}

/// Calls the batches behind the head off (they have not passed the gate).
fn abort(flight: &mut VecDeque<InFlight>) {
    for f in flight.drain(..) {
        f.call.abort();
    }
}

/// Sends `batch` as PutLogEvents named `id` (the events move into the
/// request: no copy of a megabyte per call).
async fn send(client: &aws_sdk_cloudwatchlogs::Client, id: String, batch: Batch) -> Sent {
    let events: Vec<InputLogEvent> = batch
        .events
        .into_iter()
        .filter_map(|(t, m)| {
            InputLogEvent::builder()
                .timestamp(t)
                .message(m)
                .build()
                .ok()
        })
        .collect();
    let result = client
        .put_log_events()
        .log_group_name(&batch.group)
        .log_stream_name(&batch.stream)
        .set_log_events(Some(events))
        .customize()
        .mutate_request(move |req| {
            req.headers_mut().insert(BATCH_HEADER, id.clone());
        })
        .send()
        .await;
    match result {
        Ok(out) => {
            if let Some(r) = out.rejected_log_events_info() {
                tracing::warn!(
                    group = %batch.group,
                    stream = %batch.stream,
                    too_old_end = r.too_old_log_event_end_index(),
                    expired_end = r.expired_log_event_end_index(),
                    too_new_start = r.too_new_log_event_start_index(),
                    "some log events were refused for their timestamps"
                );
            }
            Sent::Done
        }
        Err(e) => {
            let code = e.code().unwrap_or_default().to_owned();
            let message = e.message().unwrap_or_default().to_owned();
            match code.as_str() {
                "ResourceNotFoundException" => Sent::Missing,
                "InvalidParameterException" => {
                    tracing::error!(group = %batch.group, stream = %batch.stream, message, "log batch refused; its events are dropped");
                    Sent::Refused
                }
                "" => Sent::Retry(format!(
                    "{}",
                    aws_sdk_cloudwatchlogs::error::DisplayErrorContext(&e)
                )),
                _ => Sent::Retry(format!("{code}: {message}")),
            }
        }
    }
}

impl Sender {
    /// Creates the group (with its retention) and the stream; existing ones
    /// are fine.
    async fn create(&self, group: &str, stream: &str) -> Result<(), String> {
        let exists = |code: Option<&str>| code == Some("ResourceAlreadyExistsException");
        match self
            .client
            .create_log_group()
            .log_group_name(group)
            .send()
            .await
        {
            Ok(_) => {
                if let Some(days) = self.retention.get(group) {
                    self.client
                        .put_retention_policy()
                        .log_group_name(group)
                        .retention_in_days(*days)
                        .send()
                        .await
                        .map_err(|e| e.code().unwrap_or("PutRetentionPolicy failed").to_owned())?;
                }
            }
            Err(e) if exists(e.code()) => {}
            Err(e) => {
                return Err(format!(
                    "{}",
                    aws_sdk_cloudwatchlogs::error::DisplayErrorContext(&e)
                ))
            }
        }
        match self
            .client
            .create_log_stream()
            .log_group_name(group)
            .log_stream_name(stream)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if exists(e.code()) => Ok(()),
            Err(e) => Err(format!(
                "{}",
                aws_sdk_cloudwatchlogs::error::DisplayErrorContext(&e)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: i64, n: usize) -> Event {
        Event {
            timestamp: t,
            message: "x".repeat(n),
        }
    }

    #[test]
    fn cut_keeps_every_limit_and_the_order_of_equal_times() {
        let dest = ("g".to_owned(), "s".to_owned());
        let mut events: Vec<Event> = (0..25_000).map(|i| ev(1000, 10 + i % 7)).collect();
        events[3].message = "first".into();
        events.push(ev(5, 3));
        let batches = cut(&dest, events.clone());
        assert_eq!(batches[0].events[0], (5, "xxx".to_owned()));
        assert_eq!(batches[0].events[4].1, "first");
        let flat: Vec<&(i64, String)> = batches.iter().flat_map(|b| &b.events).collect();
        assert_eq!(flat.len(), events.len());
        for b in &batches {
            assert!(b.events.len() <= MAX_BATCH_EVENTS);
        }
        // Byte limit with large events, and the 24-hour span.
        let big: Vec<Event> = (0..10).map(|i| ev(i, 200_000)).collect();
        let batches = cut(&dest, big);
        for b in &batches {
            let bytes: usize = b.events.iter().map(|(_, m)| m.len() + EVENT_OVERHEAD).sum();
            assert!(bytes <= MAX_BATCH_BYTES, "{bytes}");
        }
        assert_eq!(batches.iter().map(|b| b.events.len()).sum::<usize>(), 10);
        let spread = vec![ev(0, 1), ev(MAX_SPAN_MS, 1), ev(MAX_SPAN_MS + 1, 1)];
        let batches = cut(&dest, spread);
        assert_eq!(
            batches.iter().map(|b| b.events.len()).collect::<Vec<_>>(),
            vec![2, 1]
        );
    }
}
