//! The trailwatch host agent: publishes a Linux host's CPU, memory, disk and
//! network metrics and ships its log files to trailwatch or any
//! CloudWatch-compatible endpoint, configured by the CloudWatch agent's JSON
//! file. It is a client of the official AWS SDK for Rust, so the endpoint,
//! region and credentials come from the usual AWS sources.

pub mod config;
pub mod gate;
pub mod host;
pub mod logs;
pub mod metrics;
pub mod spool;
pub mod tail;
pub mod timestamp;

use std::path::PathBuf;

use anyhow::Context as _;

/// Keeps a standalone agent's resident memory small. On hosts whose
/// transparent huge pages are in `madvise` mode the allocator asks for them,
/// and each 2 MiB region the heap has touched at all then stays resident in
/// full (measured: 18 MiB of heap instead of 6). The setting is inherited
/// across exec, and the allocator has touched its heap before `main`, so the
/// process turns huge pages off and then runs itself again, once. A kernel
/// that refuses the setting, or an exec that fails, leaves things as they
/// were.
pub fn disable_huge_pages() {
    use std::os::unix::process::CommandExt as _;
    if rustix::thread::transparent_huge_pages_are_disabled().unwrap_or(true)
        || rustix::thread::disable_transparent_huge_pages(true).is_err()
        // Only a setting that reads back as set can end the re-exec.
        || !rustix::thread::transparent_huge_pages_are_disabled().unwrap_or(false)
    {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    // Returns only if the exec failed.
    let _ = command.args(args).exec();
}

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
    let metrics = config.metrics.clone().map(|m| {
        let sdk = section_sdk(
            sdk,
            config.region.as_deref(),
            m.endpoint_override.as_deref(),
        );
        let client = aws_sdk_cloudwatch::Client::new(&sdk);
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
        let sdk = section_sdk(
            sdk,
            config.region.as_deref(),
            l.endpoint_override.as_deref(),
        );
        let opts = logs::LogOptions {
            state_dir: options.state_dir.clone(),
            buffer_max_bytes: options.buffer_max_bytes,
        };
        tokio::spawn(logs::run(l, sdk, opts, stop.clone()))
    });
    if let Some(m) = metrics {
        m.await.context("the metrics task failed")?;
    }
    if let Some(l) = logs {
        l.await.context("the log task failed")??;
    }
    Ok(())
}

/// `sdk` with the agent's `region` and a section's `endpoint_override`, when
/// the configuration sets them.
fn section_sdk(
    sdk: &aws_types::SdkConfig,
    region: Option<&str>,
    endpoint: Option<&str>,
) -> aws_types::SdkConfig {
    let mut b = sdk.to_builder();
    if let Some(r) = region {
        b.set_region(Some(aws_types::region::Region::new(r.to_owned())));
    }
    if let Some(e) = endpoint {
        b.set_endpoint_url(Some(e.to_owned()));
    }
    b.build()
}
