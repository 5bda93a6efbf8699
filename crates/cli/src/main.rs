//! `trailwatch`: the server binary and its admin commands.
//!
//! `trailwatch serve` opens the data directory (embedded storage by default),
//! loads or creates the root credentials, and serves every AWS protocol on one
//! port until SIGINT or SIGTERM, then flushes and fsyncs before exiting.
//! `trailwatch trail verify` checks a trail's digest chain ([`verify`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use trailwatch_core::identity::{CredentialSource, KeyRing, RootCredentials};
use trailwatch_server::{App, AppConfig};
use trailwatch_types::{Clock, OffsetClock, SystemClock};

mod agent;
mod verify;

#[derive(Parser, Debug)]
#[command(
    name = "trailwatch",
    version,
    about = "Self-hosted AWS-compatible audit trail and monitoring"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Trail tools.
    #[command(subcommand)]
    Trail(TrailCommand),
    /// Run the host agent: metrics and log files of this host, sent to any
    /// CloudWatch-compatible endpoint.
    Agent(agent::AgentArgs),
}

#[derive(Subcommand, Debug)]
enum TrailCommand {
    /// Verify a trail's digest chain and log files, more strictly than
    /// `aws cloudtrail validate-logs` (exit 0: valid, 1: invalid).
    Verify(verify::VerifyArgs),
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4600", env = "TRAILWATCH_LISTEN")]
    listen: SocketAddr,
    /// Data directory of the embedded storage.
    #[arg(long, default_value = "./trailwatch-data", env = "TRAILWATCH_DATA_DIR")]
    data_dir: PathBuf,
    /// Region of requests that carry none.
    #[arg(long, default_value = "us-east-1", env = "TRAILWATCH_REGION")]
    region: String,
    /// Move audit records from the write-ahead log into segments once this many wait.
    #[arg(long, default_value_t = 100_000, env = "TRAILWATCH_AUDIT_FLUSH_ROWS")]
    audit_flush_rows: u64,
    /// Seconds between background flushes of the write-ahead log into segments.
    #[arg(long, default_value_t = 300, env = "TRAILWATCH_FLUSH_INTERVAL_SECS")]
    flush_interval_secs: u64,
    /// Run with the clock shifted by this many seconds: for tests of
    /// time-dependent behaviour (retention, rollup tiers) against the real
    /// binary. Never set in production.
    #[arg(
        long,
        default_value_t = 0,
        env = "TRAILWATCH_CLOCK_OFFSET_SECS",
        hide = true
    )]
    clock_offset_secs: i64,
    /// Pause this many milliseconds before each Logs Insights evaluation, so
    /// end-to-end tests can stop a query while it is Running or stop the
    /// server under it. Never set in production.
    #[arg(
        long,
        default_value_t = 0,
        env = "TRAILWATCH_INSIGHTS_DELAY_MS",
        hide = true
    )]
    insights_delay_ms: u64,
    /// Seconds a Live Tail session lasts before SessionTimeoutException.
    #[arg(
        long,
        default_value_t = 10_800,
        env = "TRAILWATCH_LIVE_TAIL_TIMEOUT_SECS"
    )]
    live_tail_timeout_secs: u64,
    /// Milliseconds to wait before each retry of a failed SNS delivery,
    /// comma-separated (one retry per entry).
    #[arg(
        long,
        default_value = "1000,2000,4000",
        env = "TRAILWATCH_SNS_RETRY_DELAYS_MS",
        value_delimiter = ','
    )]
    sns_retry_delays_ms: Vec<u64>,
    /// Seconds a trail's oldest buffered record waits before its log file is
    /// written (AWS: about 5 minutes).
    #[arg(long, default_value_t = 300, env = "TRAILWATCH_TRAIL_DELIVERY_SECS")]
    trail_delivery_secs: u64,
    /// Seconds covered by one digest file (AWS: one hour).
    #[arg(long, default_value_t = 3600, env = "TRAILWATCH_DIGEST_INTERVAL_SECS")]
    digest_interval_secs: u64,
    /// Seconds a digest signing key is used before it is rotated (30 days; at
    /// least 1).
    #[arg(
        long,
        default_value_t = 2_592_000,
        env = "TRAILWATCH_DIGEST_KEY_ROTATION_SECS"
    )]
    digest_key_rotation_secs: u64,
    /// Keep trail files on this S3-compatible endpoint (path-style) instead of
    /// the embedded buckets; its credential comes from
    /// TRAILWATCH_TRAIL_S3_ACCESS_KEY_ID / TRAILWATCH_TRAIL_S3_SECRET_ACCESS_KEY.
    #[arg(long, env = "TRAILWATCH_TRAIL_S3_ENDPOINT")]
    trail_s3_endpoint: Option<String>,
    /// Signing region of `--trail-s3-endpoint`.
    #[arg(long, default_value = "us-east-1", env = "TRAILWATCH_TRAIL_S3_REGION")]
    trail_s3_region: String,
    /// Do not run the agent for this host (CPU, memory, swap and root disk
    /// metrics in the `CWAgent` namespace of the root account).
    #[arg(long, env = "TRAILWATCH_NO_HOST_AGENT")]
    no_host_agent: bool,
    /// The host agent's configuration (the CloudWatch agent's JSON format)
    /// instead of the built-in one.
    #[arg(long, env = "TRAILWATCH_HOST_AGENT_CONFIG")]
    host_agent_config: Option<PathBuf>,
    /// Seconds between the built-in host agent's collections.
    #[arg(
        long,
        default_value_t = 60,
        env = "TRAILWATCH_HOST_AGENT_INTERVAL_SECS"
    )]
    host_agent_interval_secs: u64,
    /// Write the bound address to this file once listening (for tests and
    /// supervisors; useful with `--listen 127.0.0.1:0`).
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

/// glibc malloc serialises on its arena locks under the ingest path's many
/// small allocations (measured: a third of server CPU in malloc/free).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    // First, before the heap grows: the agent stays small on its host.
    if std::env::args_os().nth(1).is_some_and(|c| c == "agent") {
        trailwatch_agent::disable_huge_pages();
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRAILWATCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start runtime")?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)).map_err(|e| {
            tracing::error!(error = format!("{e:#}"), "trailwatch stopped with an error");
            e
        }),
        Command::Agent(args) => runtime.block_on(agent::run(args)).map_err(|e| {
            tracing::error!(error = format!("{e:#}"), "the agent stopped with an error");
            e
        }),
        Command::Trail(TrailCommand::Verify(args)) => {
            let code = runtime.block_on(verify::run(args))?;
            std::process::exit(code);
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("create data directory {}", args.data_dir.display()))?;
    let env: HashMap<String, String> = std::env::vars().collect();
    let (root, source) =
        RootCredentials::load_or_create(&args.data_dir, &env).context("load root credentials")?;
    let clock: Arc<dyn Clock> = match args.clock_offset_secs {
        0 => Arc::new(SystemClock),
        secs => Arc::new(OffsetClock {
            offset_ms: secs.saturating_mul(1000),
        }),
    };
    let mut config = AppConfig::new(&args.data_dir, root.account_id.clone());
    config.default_region = args.region.clone();
    config.audit.flush_rows = args.audit_flush_rows.max(1);
    config.flush_interval = std::time::Duration::from_secs(args.flush_interval_secs.max(1));
    config.live_tail_timeout = std::time::Duration::from_secs(args.live_tail_timeout_secs.max(1));
    config.insights_delay = std::time::Duration::from_millis(args.insights_delay_ms);
    config.sns_retry_delays = args
        .sns_retry_delays_ms
        .iter()
        .map(|ms| std::time::Duration::from_millis(*ms))
        .collect();
    config.trail_delivery_interval =
        std::time::Duration::from_secs(args.trail_delivery_secs.max(1));
    config.digest_interval = std::time::Duration::from_secs(args.digest_interval_secs.max(1));
    config.digest_key_rotation =
        std::time::Duration::from_secs(args.digest_key_rotation_secs.max(1));
    if let Some(endpoint) = &args.trail_s3_endpoint {
        let var = |name: &str| {
            env.get(name)
                .cloned()
                .with_context(|| format!("{name} is needed with --trail-s3-endpoint"))
        };
        config.trail_s3 = Some(trailwatch_server::archive::RemoteS3 {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            access_key_id: var("TRAILWATCH_TRAIL_S3_ACCESS_KEY_ID")?,
            secret_access_key: var("TRAILWATCH_TRAIL_S3_SECRET_ACCESS_KEY")?,
            region: args.trail_s3_region.clone(),
        });
    }
    // A bad agent configuration stops the start, before anything listens.
    let host_agent = match (&args.host_agent_config, args.no_host_agent) {
        (_, true) => None,
        (Some(path), false) => Some(agent::load_config(path)?),
        (None, false) => Some(agent::default_host_config(
            args.host_agent_interval_secs.max(1),
        )?),
    };
    let app = App::open(config, clock, KeyRing::with_root(&root))
        .await
        .context("open data directory")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    let local = listener.local_addr().context("read bound address")?;
    let endpoint = format!("http://{local}");
    // SNS messages name URLs on this listener (certificate, confirm, unsubscribe).
    app.sns.set_endpoint(&endpoint);
    // Maintenance and alarm evaluation start once SNS URLs are known.
    let (stop_maintenance, stop_rx) = tokio::sync::watch::channel(false);
    let maintenance = tokio::spawn(app.clone().run_maintenance(stop_rx));
    if source == CredentialSource::Generated {
        // Printed once, on first start; the file in the data directory keeps them.
        println!(
            "# trailwatch root credentials (stored in {}):",
            args.data_dir.join("root-credentials.json").display()
        );
        println!("export AWS_ACCESS_KEY_ID={}", root.access_key_id);
        println!("export AWS_SECRET_ACCESS_KEY={}", root.secret_access_key);
        println!("export AWS_ENDPOINT_URL={endpoint}");
        println!("export AWS_DEFAULT_REGION={}", args.region);
    }
    tracing::info!(endpoint = %endpoint, account = %root.account_id, data_dir = %args.data_dir.display(), "trailwatch listening");
    if let Some(path) = &args.ready_file {
        std::fs::write(path, local.to_string())
            .with_context(|| format!("write {}", path.display()))?;
    }

    let (stop_agent, agent_stop) = tokio::sync::watch::channel(false);
    let host_agent = match host_agent {
        Some(config) => Some(
            agent::spawn_host_agent(
                config,
                &endpoint,
                &args.region,
                &root.access_key_id,
                &root.secret_access_key,
                args.data_dir.join("agent"),
                agent_stop,
            )
            .await,
        ),
        None => None,
    };

    let router = trailwatch_server::router(app.clone());
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown_signal().await;
        // The agent stops first, while the server still answers it.
        let _ = stop_agent.send(true);
        if let Some(agent) = host_agent {
            let _ = agent.await;
        }
    })
    .await
    .context("serve")?;
    tracing::info!("shutting down: flushing storage");
    let _ = stop_maintenance.send(true);
    let _ = maintenance.await;
    app.shutdown().await;
    tracing::info!("trailwatch stopped");
    Ok(())
}

/// Waits for SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
