//! Shared server state and its construction from a data directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::time::Duration;

use trailwatch_core::alarms::Alarms;
use trailwatch_core::audit::{AuditOptions, AuditStore};
use trailwatch_core::buckets::Buckets;
use trailwatch_core::composites::Composites;
use trailwatch_core::dashboards::Dashboards;
use trailwatch_core::detectors::Detectors;
use trailwatch_core::identity::KeyRing;
use trailwatch_core::logs::definitions::QueryDefinitions;
use trailwatch_core::logs::queries::QueryHistory;
use trailwatch_core::logs::LogStore;
use trailwatch_core::metrics::MetricStore;
use trailwatch_core::sns::Topics;
use trailwatch_core::tags::Tags;
use trailwatch_core::token::TokenCodec;
use trailwatch_types::Clock;

/// Every alarm with its account and region (see [`App::alarm_snapshot`]).
pub type AlarmSnapshot = Arc<Vec<(String, String, trailwatch_core::alarms::MetricAlarm)>>;

/// The held alarm write lock. Its release counts as a change of the alarms
/// unless `changed` is cleared (an evaluation that wrote no alarm).
#[derive(Debug)]
pub struct AlarmWrite {
    _guard: tokio::sync::OwnedMutexGuard<()>,
    generation: Arc<std::sync::atomic::AtomicU64>,
    /// Whether releasing it invalidates the alarm snapshot.
    pub changed: bool,
}

impl Drop for AlarmWrite {
    fn drop(&mut self) {
        if self.changed {
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// Settings the edge needs.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// Data directory (audit log, secrets).
    pub data_dir: PathBuf,
    /// Region of requests that carry none.
    pub default_region: String,
    /// The account every key belongs to.
    pub account_id: String,
    /// Allowed SigV4 clock skew.
    pub max_skew_secs: i64,
    /// Largest request body accepted, before decoding.
    pub max_body_bytes: usize,
    /// Audit store tuning.
    pub audit: AuditOptions,
    /// How often the background worker flushes the WAL into segments even when
    /// fewer than `audit.flush_rows` records wait.
    pub flush_interval: Duration,
    /// How long a Live Tail session lasts (3 hours at AWS).
    pub live_tail_timeout: Duration,
    /// How often expired history is pruned.
    pub prune_interval: Duration,
    /// A pause before each Logs Insights evaluation and after each batch of
    /// blocks it reads (and before a CloudTrail Lake query runs), so
    /// end-to-end tests can catch a query while it is Running, with partial
    /// results. Zero (no pause) outside tests.
    pub insights_delay: Duration,
    /// Pauses between SNS delivery attempts: one retry after each, then the
    /// message counts as failed. Tests shorten them.
    pub sns_retry_delays: Vec<Duration>,
    /// Trail log files are written once their oldest record is this old
    /// (`spec/cloudtrail.md` §2.3: 5 minutes; tests shorten it).
    pub trail_delivery_interval: Duration,
    /// Length of a digest window (one hour at AWS; tests shorten it).
    pub digest_interval: Duration,
    /// Lifetime of a digest signing key before rotation (30 days).
    pub digest_key_rotation: Duration,
    /// An S3-compatible store for trail files instead of the embedded buckets.
    pub trail_s3: Option<crate::archive::RemoteS3>,
    /// Minutes of CloudTrail Insights baseline (7 days; warm-up at least 36 hours).
    pub insights_baseline_minutes: i64,
}

impl AppConfig {
    /// Defaults for `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>, account_id: impl Into<String>) -> Self {
        Self {
            data_dir: data_dir.into(),
            default_region: "us-east-1".to_owned(),
            account_id: account_id.into(),
            max_skew_secs: 15 * 60,
            max_body_bytes: 10 * 1024 * 1024,
            audit: AuditOptions::default(),
            flush_interval: Duration::from_secs(300),
            prune_interval: Duration::from_secs(3600),
            live_tail_timeout: Duration::from_secs(3 * 3600),
            insights_delay: Duration::ZERO,
            sns_retry_delays: [1, 2, 4].map(Duration::from_secs).to_vec(),
            trail_delivery_interval: Duration::from_secs(300),
            digest_interval: Duration::from_secs(3600),
            digest_key_rotation: Duration::from_secs(30 * 24 * 3600),
            trail_s3: None,
            insights_baseline_minutes: trailwatch_core::insights::BASELINE_MINUTES,
        }
    }
}

/// Failure to start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Filesystem error.
    #[error("{action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The metric store could not be opened.
    #[error("open metric store: {0}")]
    Metrics(String),
    /// The log store could not be opened.
    #[error("open log store: {0}")]
    Logs(String),
    /// The SNS outbox could not be read.
    #[error("read sns outbox: {0}")]
    Sns(String),
    /// The audit log could not be opened.
    #[error("open audit log: {0}")]
    Audit(#[from] trailwatch_core::audit::AuditError),
}

/// Everything a request handler can reach.
pub struct App {
    /// Settings.
    pub config: AppConfig,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// Accepted access keys.
    pub keys: KeyRing,
    /// Audit records and LookupEvents.
    pub audit: AuditStore,
    /// CloudWatch metric data.
    pub metrics: MetricStore,
    /// CloudWatch Logs groups, streams and events.
    pub logs: Arc<LogStore>,
    /// Outbound HTTP(S) for subscription deliveries.
    pub http: reqwest::Client,
    /// Logs Insights queries of the last 7 days by id: what GetQueryResults,
    /// StopQuery and DescribeQueries read. `query_history` makes them durable.
    pub queries: crate::services::Queries,
    /// Logs Insights queries and their rows, durable (catalog and objects).
    pub query_history: QueryHistory,
    /// Logs Insights query definitions (in the catalog).
    pub query_definitions: QueryDefinitions,
    /// CloudWatch dashboards (in the catalog).
    pub dashboards: Dashboards,
    /// CloudWatch metric anomaly detectors (in the catalog).
    pub detectors: Detectors,
    /// CloudWatch metric alarms and their history (in the catalog).
    pub alarms: Alarms,
    /// CloudWatch composite alarms (in the catalog).
    pub composites: Composites,
    /// Held across every read-modify-write of alarm records (API calls and
    /// the evaluation engine), so no write is lost to a concurrent one.
    alarm_writes: Arc<tokio::sync::Mutex<()>>,
    /// CloudTrail Lake queries, in memory.
    pub lake_queries: crate::services::LakeQueries,
    /// Held by every trail-writing call until its changes are committed.
    pub trail_writes: Arc<tokio::sync::Mutex<()>>,
    /// Digest signing keys, per region.
    pub digest_keys: trailwatch_core::digest::DigestKeys,
    /// Alarm writes released so far (see [`App::alarm_snapshot`]).
    alarm_generation: Arc<std::sync::atomic::AtomicU64>,
    alarm_cache: std::sync::Mutex<Option<(u64, AlarmSnapshot)>>,
    /// Resource tags (in the catalog).
    pub tags: Tags,
    /// SNS topics and subscriptions (in the catalog).
    pub topics: Topics,
    /// SNS signing key, endpoint and background deliveries.
    pub sns: crate::services::SnsRuntime,
    /// Pagination tokens of operations served from the catalog.
    pub tokens: TokenCodec,
    /// S3 buckets (registered in the catalog, objects in the object store):
    /// the S3 facade and trail delivery share them.
    pub buckets: Buckets,
    /// Wakes the background worker when enough records wait to be flushed.
    flush_wanted: tokio::sync::Notify,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The server's own secret for pagination tokens, kept (mode 0600) so tokens
/// survive restarts.
fn load_token_key(data_dir: &Path) -> Result<Vec<u8>, StartError> {
    use std::io::Write;
    let path = data_dir.join("token-key");
    match std::fs::read(&path) {
        Ok(key) if key.len() >= 32 => return Ok(key),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(StartError::Io {
                action: format!("read {}", path.display()),
                source,
            })
        }
    }
    let key: Vec<u8> = (0..32).map(|_| rand::random::<u8>()).collect();
    let io = |action: &str| {
        let action = format!("{action} {}", path.display());
        move |source| StartError::Io { action, source }
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&path).map_err(io("create"))?;
    file.write_all(&key).map_err(io("write"))?;
    file.sync_all().map_err(io("fsync"))?;
    Ok(key)
}

/// Datums waiting in the metrics WAL that wake the flusher early: they are
/// held in memory unencoded until flushed.
const METRIC_FLUSH_POINTS: u64 = 1_000_000;

impl App {
    /// Opens the stores under `config.data_dir` and recovers them.
    pub async fn open(
        config: AppConfig,
        clock: Arc<dyn Clock>,
        keys: KeyRing,
    ) -> Result<Arc<App>, StartError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::Io {
            action: format!("create {}", config.data_dir.display()),
            source,
        })?;
        let tokens = TokenCodec::new(load_token_key(&config.data_dir)?);
        let audit = AuditStore::open_embedded(
            &config.data_dir,
            clock.clone(),
            tokens.clone(),
            config.audit.clone(),
        )
        .await?;
        let metrics = MetricStore::open(
            &config.data_dir.join("metrics"),
            audit.catalog(),
            audit.objects(),
            clock.clone(),
            tokens.clone(),
            config.audit.wal.clone(),
        )
        .await
        .map_err(|e| StartError::Metrics(e.to_string()))?;
        let logs = LogStore::open(
            &config.data_dir.join("logs"),
            audit.catalog(),
            audit.objects(),
            clock.clone(),
            tokens.clone(),
            config.audit.wal.clone(),
        )
        .await
        .map_err(|e| StartError::Logs(e.to_string()))?;
        let dashboards = Dashboards::new(audit.catalog());
        let detectors = Detectors::new(audit.catalog());
        let alarms = Alarms::new(audit.catalog());
        let composites = Composites::new(audit.catalog());
        let tags = Tags::new(audit.catalog());
        let query_history = QueryHistory::new(audit.catalog(), audit.objects());
        let query_definitions = QueryDefinitions::new(audit.catalog());
        let http = reqwest::Client::new();
        let topics = Topics::new(audit.catalog());
        let buckets = Buckets::new(audit.catalog(), audit.objects());
        let sns = crate::services::SnsRuntime::new(
            config.data_dir.clone(),
            config.sns_retry_delays.clone(),
            http.clone(),
            topics.clone(),
        );
        let digest_keys = trailwatch_core::digest::DigestKeys::new(
            audit.catalog(),
            &config.data_dir.join("digest-keys"),
            config.digest_key_rotation.as_secs() as i64,
        );
        let app = Arc::new(App {
            digest_keys,
            config,
            clock,
            keys,
            audit,
            metrics,
            logs: Arc::new(logs),
            http,
            queries: Default::default(),
            query_history,
            query_definitions,
            dashboards,
            detectors,
            alarms,
            composites,
            alarm_writes: Arc::new(tokio::sync::Mutex::new(())),
            trail_writes: Arc::new(tokio::sync::Mutex::new(())),
            lake_queries: Default::default(),
            alarm_generation: Default::default(),
            alarm_cache: std::sync::Mutex::new(None),
            tags,
            topics,
            sns,
            tokens,
            buckets,
            flush_wanted: tokio::sync::Notify::new(),
        });
        // Queries acknowledged before the stop answer again; those that were
        // still running start over.
        crate::services::resume_queries(&app)
            .await
            .map_err(|e| StartError::Logs(e.to_string()))?;
        // Messages committed before the stop and not yet delivered go out now.
        crate::services::resume_deliveries(&app.sns).map_err(|e| StartError::Sns(e.to_string()))?;
        Ok(app)
    }

    /// The alarm write lock (see `alarm_writes`), held until the caller's
    /// changes are committed. Releasing it counts a change of the alarms
    /// (unless [`AlarmWrite::changed`] was cleared).
    pub async fn lock_alarms(&self) -> AlarmWrite {
        AlarmWrite {
            _guard: self.alarm_writes.clone().lock_owned().await,
            generation: self.alarm_generation.clone(),
            changed: true,
        }
    }

    /// Every alarm of every account and region, as of the last change: read
    /// again only after an alarm write was released, so the evaluation loop
    /// does not decode every alarm record at every instant.
    pub fn alarm_snapshot(&self) -> Result<AlarmSnapshot, String> {
        use std::sync::atomic::Ordering;
        // Read before listing: a write committed after this read bumps the
        // generation past it, so a stale listing is never kept as current.
        let generation = self.alarm_generation.load(Ordering::SeqCst);
        let mut cache = self.alarm_cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, snapshot)) = cache.as_ref() {
            if *seen == generation {
                return Ok(snapshot.clone());
            }
        }
        let snapshot: AlarmSnapshot =
            Arc::new(self.alarms.every_alarm().map_err(|e| e.to_string())?);
        *cache = Some((generation, snapshot.clone()));
        Ok(snapshot)
    }

    /// Called after each recorded call: wakes the flusher when enough records
    /// or metric points wait.
    pub fn recorded(&self) {
        if self.audit.wants_flush()
            || self.metrics.unflushed() >= METRIC_FLUSH_POINTS
            || self.logs.unflushed_bytes() >= trailwatch_core::logs::store::FLUSH_WANTED_BYTES
        {
            self.flush_wanted.notify_one();
        }
    }

    /// Runs background maintenance (flush to segments, retention) until `stop` fires.
    pub async fn run_maintenance(self: Arc<Self>, stop: tokio::sync::watch::Receiver<bool>) {
        // Alarm evaluation keeps its own schedule, beside the maintenance.
        let evaluations = tokio::spawn(crate::evaluator::run(self.clone(), stop.clone()));
        // Trail delivery too: its cadence is the trails' delivery interval.
        let deliveries = tokio::spawn(crate::delivery::run(self.clone(), stop.clone()));
        self.maintain(stop).await;
        let _ = evaluations.await;
        let _ = deliveries.await;
    }

    async fn maintain(self: &Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut flush_tick = tokio::time::interval(self.config.flush_interval);
        let mut prune_tick = tokio::time::interval(self.config.prune_interval);
        // Export tasks start within a second of their creation being committed.
        let mut export_tick = tokio::time::interval(Duration::from_secs(1));
        flush_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        prune_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        export_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = self.flush_wanted.notified() => self.flush_logged().await,
                _ = flush_tick.tick() => self.flush_logged().await,
                _ = export_tick.tick() => {
                    if let Err(err) = self.logs.run_pending_exports().await {
                        tracing::error!(error = %err, "failed to run log export tasks");
                    }
                }
                _ = prune_tick.tick() => {
                    if let Err(err) = self.audit.prune().await {
                        tracing::error!(error = %err, "failed to prune expired audit history");
                    }
                    if let Err(err) = crate::services::prune_queries(self).await {
                        tracing::error!(error = %err, "failed to prune expired insights queries");
                    }
                }
            }
        }
    }

    async fn flush_logged(&self) {
        if let Err(err) = self.audit.flush().await {
            // The records stay in the WAL; the next flush retries them.
            tracing::error!(error = %err, "failed to flush audit records to segments");
        }
        match self.logs.maintain().await {
            Ok(report) => tracing::debug!(?report, "logs maintenance"),
            // Events stay in the WAL or in their segments; the next pass retries.
            Err(err) => tracing::error!(error = %err, "failed to maintain log segments"),
        }
        match self.metrics.maintain().await {
            Ok(report) => tracing::debug!(?report, "metrics maintenance"),
            // Points stay in the WAL or in their old segments; the next pass retries.
            Err(err) => tracing::error!(error = %err, "failed to maintain metric segments"),
        }
    }

    /// Flushes and fsyncs everything; called on graceful shutdown.
    pub async fn shutdown(&self) {
        // Segments, compacted, make the next start fast: no WAL to replay.
        if let Err(err) = self.metrics.maintain_fully().await {
            tracing::error!(error = %err, "failed to flush metrics to segments at shutdown");
        }
        if let Err(err) = self.metrics.shutdown().await {
            tracing::error!(error = %err, "failed to close the metrics log cleanly");
        }
        if let Err(err) = self.logs.shutdown().await {
            tracing::error!(error = %err, "failed to close the logs WAL cleanly");
        }
        if let Err(err) = self.audit.shutdown().await {
            tracing::error!(error = %err, "failed to close the audit log cleanly");
        }
    }
}
