//! `trailwatch agent --config FILE`, and the agent `trailwatch serve` runs
//! for its own host.
//!
//! The standalone agent takes its endpoint, region and credentials from the
//! usual AWS sources (environment, shared config and credentials files,
//! instance roles), as any AWS SDK client does. The server's own agent
//! signs with the root key and sends to the server's own listener.

use std::path::PathBuf;

use anyhow::Context as _;
use aws_config::BehaviorVersion;
use trailwatch_agent::config::{Config, HostFacts};
use trailwatch_agent::{host, AgentOptions};

/// `trailwatch agent`.
#[derive(clap::Args, Debug)]
pub(crate) struct AgentArgs {
    /// The CloudWatch agent's JSON configuration file.
    #[arg(long)]
    config: PathBuf,
    /// Where the agent keeps its log spool and file offsets.
    #[arg(
        long,
        default_value = "./trailwatch-agent",
        env = "TRAILWATCH_AGENT_STATE_DIR"
    )]
    state_dir: PathBuf,
    /// The most the log spool holds while the endpoint is unreachable, in MiB;
    /// past it, reading waits (the files keep the lines).
    #[arg(long, default_value_t = 256, env = "TRAILWATCH_AGENT_BUFFER_MAX_MB")]
    buffer_max_mb: u64,
}

/// The facts `{hostname}`-style placeholders resolve to.
fn host_facts() -> HostFacts {
    HostFacts {
        hostname: host::hostname(),
        ip_address: local_ipv4(),
    }
}

/// The host's first local IPv4 address that is not loopback, from the
/// kernel's routing trie (`/32 host LOCAL` entries).
fn local_ipv4() -> Option<String> {
    let trie = std::fs::read_to_string("/proc/net/fib_trie").ok()?;
    let mut last = None;
    for line in trie.lines() {
        let t = line.trim_start_matches([' ', '|', '+', '-']).trim();
        if t.parse::<std::net::Ipv4Addr>().is_ok() {
            last = Some(t.to_owned());
        } else if t.starts_with("/32 host LOCAL") {
            if let Some(ip) = last.take().filter(|ip| !ip.starts_with("127.")) {
                return Some(ip);
            }
        }
    }
    None
}

/// Reads and checks a configuration file.
pub(crate) fn load_config(path: &std::path::Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    Config::parse(&text, &host_facts())
        .with_context(|| format!("{} is not a valid agent configuration", path.display()))
}

/// Runs the standalone agent until SIGINT or SIGTERM.
pub(crate) async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let config = load_config(&args.config)?;
    let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let options = AgentOptions {
        state_dir: args.state_dir,
        buffer_max_bytes: args.buffer_max_mb.max(1) << 20,
        roots: host::Roots::default(),
    };
    tracing::info!(state_dir = %options.state_dir.display(), "trailwatch agent started");
    let agent =
        tokio::spawn(async move { trailwatch_agent::run(config, &sdk, options, stop).await });
    crate::shutdown_signal().await;
    tracing::info!("agent stopping: writing what was read to the spool");
    let _ = stop_tx.send(true);
    agent.await.context("agent task")??;
    tracing::info!("trailwatch agent stopped");
    Ok(())
}

/// The configuration of the server's own agent: CPU, memory, swap and the
/// root file system, every `interval_secs`.
pub(crate) fn default_host_config(interval_secs: u64) -> anyhow::Result<Config> {
    let text = serde_json::json!({
        "agent": {"metrics_collection_interval": interval_secs},
        "metrics": {"metrics_collected": {
            "cpu": {
                "measurement": ["usage_active", "usage_idle", "usage_user", "usage_system", "usage_iowait"],
                "totalcpu": true,
            },
            "mem": {"measurement": ["used_percent", "available_percent", "used", "available", "total"]},
            "swap": {"measurement": ["used_percent", "used"]},
            "disk": {"measurement": ["used_percent", "free", "used", "total"], "resources": ["/"]},
        }},
    });
    Config::parse(&text.to_string(), &host_facts()).context("the built-in agent configuration")
}

/// Starts the server's own agent, signed with the root key, sending to
/// `endpoint`; it stops when `stop` turns true.
pub(crate) async fn spawn_host_agent(
    config: Config,
    endpoint: &str,
    region: &str,
    access_key_id: &str,
    secret_access_key: &str,
    state_dir: PathBuf,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let credentials = aws_credential_types::Credentials::new(
        access_key_id,
        secret_access_key,
        None,
        None,
        "trailwatch-root",
    );
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(aws_types::region::Region::new(region.to_owned()))
        .endpoint_url(endpoint)
        .credentials_provider(credentials)
        .load()
        .await;
    let options = AgentOptions {
        state_dir,
        buffer_max_bytes: 64 << 20,
        roots: host::Roots::default(),
    };
    tokio::spawn(async move {
        if let Err(e) = trailwatch_agent::run(config, &sdk, options, stop).await {
            tracing::error!(error = format!("{e:#}"), "the host agent stopped");
        }
    })
}
