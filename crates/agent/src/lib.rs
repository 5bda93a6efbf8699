//! The trailwatch host agent: publishes a Linux host's CPU, memory, disk and
//! network metrics and ships its log files to trailwatch or any
//! CloudWatch-compatible endpoint, configured by the CloudWatch agent's JSON
//! file. It is a client of the official AWS SDK for Rust, so the endpoint,
//! region and credentials come from the usual AWS sources.

pub mod config;
pub mod host;
pub mod logs;
pub mod metrics;
pub mod spool;
pub mod tail;
pub mod timestamp;

use std::path::PathBuf;

use anyhow::Context as _;

/// Where the agent keeps its state, and its bounds.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The log spool and `state.json`.
    pub state_dir: PathBuf,
    /// The log spool's bound in bytes.
    pub buffer_max_bytes: u64,
    /// Where `/proc` and `/sys` are read from.
    pub roots: host::Roots,
}

/// Runs the metrics and log pipelines of `config` against the endpoint of
/// `sdk` (each section's `endpoint_override` wins) until `stop` turns true.
pub async fn run(
    config: config::Config,
    sdk: &aws_types::SdkConfig,
    options: AgentOptions,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    for what in &config.ignored {
        tracing::warn!(setting = %what, "agent configuration setting not supported; ignored");
    }
    let region = config.region.clone().map(aws_types::region::Region::new);
    let metrics = config.metrics.clone().map(|m| {
        let mut b = aws_sdk_cloudwatch::config::Builder::from(sdk);
        if let Some(r) = &region {
            b = b.region(r.clone());
        }
        if let Some(e) = &m.endpoint_override {
            b = b.endpoint_url(e);
        }
        let client = aws_sdk_cloudwatch::Client::from_conf(b.build());
        let shape = metrics::Shape {
            host: (!config.omit_hostname && !m.append_set).then(host::hostname),
            append: m.append_dimensions.clone(),
            aggregation: m.aggregation_dimensions.clone(),
        };
        tokio::spawn(metrics::run(
            m,
            shape,
            client,
            options.roots.clone(),
            stop.clone(),
        ))
    });
    let logs = config.logs.clone().map(|l| {
        let mut b = aws_sdk_cloudwatchlogs::config::Builder::from(sdk);
        if let Some(r) = &region {
            b = b.region(r.clone());
        }
        if let Some(e) = &l.endpoint_override {
            b = b.endpoint_url(e);
        }
        let client = aws_sdk_cloudwatchlogs::Client::from_conf(b.build());
        let opts = logs::LogOptions {
            state_dir: options.state_dir.clone(),
            buffer_max_bytes: options.buffer_max_bytes,
        };
        tokio::spawn(logs::run(l, client, opts, stop.clone()))
    });
    if let Some(m) = metrics {
        m.await.context("the metrics task failed")?;
    }
    if let Some(l) = logs {
        l.await.context("the log task failed")??;
    }
    Ok(())
}
