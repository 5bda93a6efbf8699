//! The peer of the agent's log-shipping benchmark: the same file sent by a
//! plain aws-sdk-rust PutLogEvents loop, with no tailing, spool, fsync or
//! saved offsets. Batches are cut as the agent cuts them (10,000 events or
//! 1,048,576 bytes counting 26 bytes per event) and sent one at a time, as
//! the agent sends one stream's batches, so the difference between the two
//! runs is what the agent's durability costs.

use std::io::BufRead as _;
use std::time::Instant;

use anyhow::Context as _;
use aws_sdk_cloudwatchlogs::types::InputLogEvent;

#[derive(clap::Args, Debug)]
pub(crate) struct ShipArgs {
    /// Server base URL.
    #[arg(long)]
    endpoint: String,
    /// The file whose lines are sent.
    #[arg(long)]
    file: std::path::PathBuf,
    /// Log group (created if missing).
    #[arg(long, default_value = "bench-ship")]
    group: String,
    /// Log stream (created if missing).
    #[arg(long, default_value = "peer")]
    stream: String,
    /// Label printed with the results.
    #[arg(long, default_value = "plain PutLogEvents loop")]
    label: String,
}

pub(crate) async fn run(args: ShipArgs) -> anyhow::Result<()> {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&args.endpoint)
        .load()
        .await;
    let client = aws_sdk_cloudwatchlogs::Client::new(&config);
    let _ = client
        .create_log_group()
        .log_group_name(&args.group)
        .send()
        .await;
    let _ = client
        .create_log_stream()
        .log_group_name(&args.group)
        .log_stream_name(&args.stream)
        .send()
        .await;
    let started = Instant::now();
    let cpu_before = crate::cpu_seconds(std::process::id()).unwrap_or(0.0);
    let file =
        std::fs::File::open(&args.file).with_context(|| format!("open {}", args.file.display()))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let (mut lines, mut bytes, mut requests) = (0u64, 0u64, 0u64);
    let mut batch: Vec<InputLogEvent> = Vec::new();
    let mut batch_bytes = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line)?;
        let text = line.trim_end_matches(['\n', '\r']);
        let size = text.len() + 26;
        if !batch.is_empty() && (n == 0 || batch.len() == 10_000 || batch_bytes + size > 1_048_576)
        {
            client
                .put_log_events()
                .log_group_name(&args.group)
                .log_stream_name(&args.stream)
                .set_log_events(Some(std::mem::take(&mut batch)))
                .send()
                .await
                .context("PutLogEvents")?;
            requests += 1;
            batch_bytes = 0;
        }
        if n == 0 {
            break;
        }
        if text.is_empty() {
            continue;
        }
        lines += 1;
        bytes += text.len() as u64;
        batch_bytes += size;
        batch.push(
            InputLogEvent::builder()
                .timestamp(crate::now().millis())
                .message(text)
                .build()?,
        );
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = crate::cpu_seconds(std::process::id()).unwrap_or(0.0) - cpu_before;
    println!(
        "{}: {lines} lines, {:.1} MB in {requests} requests, {secs:.2} s, {:.1} MB/s, client CPU {cpu:.2} s",
        args.label,
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / secs,
    );
    Ok(())
}
