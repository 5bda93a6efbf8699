//! `trailwatch-bench`: drives a running server (trailwatch, or a peer such as
//! moto_server) with SigV4-signed requests over N keep-alive connections and
//! reports requests/s and latency percentiles; `seed-audit` writes realistic
//! audit history straight into a data directory for lookup benchmarks.
//!
//! A Rust client, because botocore alone spends tens of milliseconds per call
//! (DESIGN.md §8). Client and server share the machine, so the report includes
//! the server's CPU seconds when its pid is given.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use trailwatch_protocol::sigv4::Signer;
use trailwatch_types::Timestamp;

mod seed;

#[derive(Parser, Debug)]
#[command(
    name = "trailwatch-bench",
    about = "Load generator for trailwatch and peers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Send one kind of signed call repeatedly and report throughput and latency.
    Call(CallArgs),
    /// Write realistic audit records directly into a (stopped) server's data directory.
    SeedAudit(seed::SeedArgs),
}

#[derive(clap::Args, Debug, Clone)]
struct CallArgs {
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:4600")]
    endpoint: String,
    /// Access key id.
    #[arg(long, env = "AWS_ACCESS_KEY_ID")]
    access_key: String,
    /// Secret access key.
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY")]
    secret: String,
    /// Region of the credential scope.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// `get-caller-identity` (STS, query) or `lookup-events` (CloudTrail, JSON 1.1).
    #[arg(long, default_value = "get-caller-identity")]
    operation: String,
    /// LookupEvents attribute as `Key=Value` (for example `EventName=DeleteAlarms`).
    #[arg(long)]
    attribute: Option<String>,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Measured requests in total.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Unmeasured requests first, per connection.
    #[arg(long, default_value_t = 50)]
    warmup: usize,
    /// Pid of the server, to report its CPU seconds during the run.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Label printed with the results.
    #[arg(long, default_value = "server")]
    label: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Call(args) => runtime.block_on(run_calls(args)),
        Command::SeedAudit(args) => runtime.block_on(seed::run(args)),
    }
}

fn now() -> Timestamp {
    #[allow(clippy::disallowed_methods)] // a client: real wall time is what it signs with
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::from_millis(since.as_millis() as i64)
}

/// A prepared request: everything but the signature, which is redone per call.
#[derive(Clone)]
struct Template {
    path: String,
    headers: Vec<(String, String)>,
    body: Bytes,
    service: &'static str,
}

fn template(args: &CallArgs, authority: &str) -> anyhow::Result<Template> {
    let host = ("host".to_owned(), authority.to_owned());
    Ok(match args.operation.as_str() {
        "get-caller-identity" => Template {
            path: "/".to_owned(),
            headers: vec![
                host,
                (
                    "content-type".to_owned(),
                    "application/x-www-form-urlencoded; charset=utf-8".to_owned(),
                ),
            ],
            body: Bytes::from_static(b"Action=GetCallerIdentity&Version=2011-06-15"),
            service: "sts",
        },
        "lookup-events" => {
            let mut input = serde_json::json!({"MaxResults": 50});
            if let Some(attr) = &args.attribute {
                let (k, v) = attr
                    .split_once('=')
                    .context("--attribute takes Key=Value")?;
                input["LookupAttributes"] =
                    serde_json::json!([{"AttributeKey": k, "AttributeValue": v}]);
            }
            Template {
                path: "/".to_owned(),
                headers: vec![
                    host,
                    (
                        "content-type".to_owned(),
                        "application/x-amz-json-1.1".to_owned(),
                    ),
                    (
                        "x-amz-target".to_owned(),
                        "CloudTrail_20131101.LookupEvents".to_owned(),
                    ),
                ],
                body: Bytes::from(input.to_string()),
                service: "cloudtrail",
            }
        }
        other => bail!("unknown operation {other}"),
    })
}

fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

async fn run_calls(args: CallArgs) -> anyhow::Result<()> {
    let uri: http::Uri = args.endpoint.parse().context("parse --endpoint")?;
    let authority = uri
        .authority()
        .context("endpoint needs host:port")?
        .to_string();
    let template = Arc::new(template(&args, &authority)?);
    let per_connection = args.requests.div_ceil(args.connections.max(1));
    let cpu_before = args.server_pid.and_then(cpu_seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.connections.max(1) {
        let (template, args, authority) = (template.clone(), args.clone(), authority.clone());
        tasks.push(tokio::spawn(async move {
            connection_loop(&args, &authority, &template, per_connection).await
        }));
    }
    let mut latencies = Vec::with_capacity(args.requests);
    let mut errors = 0usize;
    for task in tasks {
        let (lat, err) = task.await.context("connection task")??;
        latencies.extend(lat);
        errors += err;
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = match (cpu_before, args.server_pid.and_then(cpu_seconds)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * latencies.len() as f64).ceil().max(1.0) as usize;
        latencies[rank.min(latencies.len()) - 1].as_secs_f64() * 1000.0
    };
    let report = serde_json::json!({
        "label": args.label,
        "operation": args.operation,
        "attribute": args.attribute,
        "connections": args.connections,
        "requests": latencies.len(),
        "errors": errors,
        "wall_seconds": wall,
        "requests_per_second": latencies.len() as f64 / wall,
        "p50_ms": pct(50.0),
        "p90_ms": pct(90.0),
        "p99_ms": pct(99.0),
        "max_ms": latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        "server_cpu_seconds": cpu,
    });
    println!("{report}");
    if errors > 0 {
        bail!("{errors} requests failed");
    }
    Ok(())
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(authority: &str) -> anyhow::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .with_context(|| format!("connect {authority}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn connection_loop(
    args: &CallArgs,
    authority: &str,
    template: &Template,
    count: usize,
) -> anyhow::Result<(Vec<Duration>, usize)> {
    let mut sender = connect(authority).await?;
    let signer = Signer {
        access_key_id: &args.access_key,
        secret: &args.secret,
        region: &args.region,
        service: template.service,
    };
    let mut latencies = Vec::with_capacity(count);
    let mut errors = 0;
    for i in 0..(args.warmup + count) {
        let mut headers = template.headers.clone();
        signer.sign(
            "POST",
            &template.path,
            "",
            &mut headers,
            &template.body,
            now(),
        );
        let mut request = http::Request::builder().method("POST").uri(&template.path);
        for (k, v) in &headers {
            request = request.header(k, v);
        }
        let request = request.body(Full::new(template.body.clone()))?;
        let began = Instant::now();
        // Peers that close connections (Connection: close) get a fresh one, inside the timing.
        if sender.ready().await.is_err() {
            sender = connect(authority).await?;
        }
        let response = sender.send_request(request).await?;
        let status = response.status();
        let closes = response
            .headers()
            .get(http::header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let body = response.into_body().collect().await?.to_bytes();
        let took = began.elapsed();
        if closes {
            sender = connect(authority).await?;
        }
        if !status.is_success() {
            errors += 1;
            if errors == 1 {
                eprintln!("error {status}: {}", String::from_utf8_lossy(&body));
            }
        }
        if i >= args.warmup {
            latencies.push(took);
        }
    }
    Ok((latencies, errors))
}
