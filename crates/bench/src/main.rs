//! `trailwatch-bench`: drives a running server (trailwatch, or a peer such as
//! moto_server) with SigV4-signed requests over N keep-alive connections and
//! reports requests/s and latency percentiles; `seed-audit` writes realistic
//! audit history straight into a data directory for lookup benchmarks;
//! `logs-load` / `logs-query` drive the log search benchmarks; `seed-trail`
//! writes a day of signed trail files for the validation benchmark;
//! `ship-file` is the plain PutLogEvents loop beside the host agent.
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

mod logs;
mod logscan;
mod metrics;
mod seed;
mod ship;
mod trail;

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
    /// Load seeded JSON log events into a server and a raw text file.
    LogsLoad(logscan::LoadArgs),
    /// Time FilterLogEvents (all pages) or a Logs Insights query.
    LogsQuery(logscan::QueryArgs),
    /// Write a day of signed trail files into a (stopped) server's bucket.
    SeedTrail(trail::SeedTrailArgs),
    /// Send a file's lines with a plain PutLogEvents loop (the agent's peer).
    ShipFile(ship::ShipArgs),
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
    /// `get-caller-identity` (STS, query), `lookup-events` (CloudTrail, JSON
    /// 1.1), `put-metric-data` / `get-metric-data` / `put-metric-alarm`
    /// (CloudWatch, CBOR; alarm `i` of `--bodies` watches series
    /// `i % --series`), or the
    /// VictoriaMetrics peers `vm-import` / `vm-query-range`.
    #[arg(long, default_value = "get-caller-identity")]
    operation: String,
    /// Metric workloads: series per request (put) or queried (get).
    #[arg(long, default_value_t = 1000)]
    series: usize,
    /// Metric workloads: values per series per request (1 = one per minute).
    #[arg(long, default_value_t = 10)]
    values: usize,
    /// Metric workloads: distinct request bodies, sent in order and cycled.
    #[arg(long, default_value_t = 64)]
    bodies: usize,
    /// CloudWatch protocol of put-metric-data: `cbor` (what aws-sdk-rust
    /// sends) or `query` (for peers without RPC v2 CBOR).
    #[arg(long, default_value = "cbor")]
    protocol: String,
    /// Queries: hours of data before now that are asked for.
    #[arg(long, default_value_t = 24)]
    hours: i64,
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

/// glibc malloc serialises on its arena locks under the ingest path's many
/// small allocations (measured: a third of server CPU in malloc/free).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Call(args) => runtime.block_on(run_calls(args)),
        Command::SeedAudit(args) => runtime.block_on(seed::run(args)),
        Command::LogsLoad(args) => runtime.block_on(logscan::load(args)),
        Command::LogsQuery(args) => runtime.block_on(logscan::query(args)),
        Command::SeedTrail(args) => runtime.block_on(trail::run(args)),
        Command::ShipFile(args) => runtime.block_on(ship::run(args)),
    }
}

fn now() -> Timestamp {
    #[allow(clippy::disallowed_methods)] // a client: real wall time is what it signs with
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::from_millis(since.as_millis() as i64)
}

/// Builds the request body of the next page from a NextToken.
type FollowPage = Arc<dyn Fn(&str) -> Bytes + Send + Sync>;

/// A prepared request: everything but the signature, which is redone per call.
#[derive(Clone)]
struct Template {
    method: &'static str,
    path: String,
    headers: Vec<(String, String)>,
    /// Bodies sent in turn.
    bodies: Vec<Bytes>,
    /// SigV4 service name; `None` for unsigned peers.
    service: Option<&'static str>,
    /// Builds the request for the next page from a NextToken.
    follow: Option<FollowPage>,
    /// Values each request carries (ingest), for values/s.
    values_per_request: usize,
    /// Payload bytes each request carries (log ingest), for MB/s.
    bytes_per_request: usize,
    /// Calls made once before the run (x-amz-target, body); their errors
    /// (such as "already exists") are ignored.
    setup: Vec<(String, Bytes)>,
}

impl Template {
    fn simple(
        path: &str,
        headers: Vec<(String, String)>,
        body: Bytes,
        service: &'static str,
    ) -> Self {
        Template {
            method: "POST",
            path: path.to_owned(),
            headers,
            bodies: vec![body],
            service: Some(service),
            follow: None,
            values_per_request: 0,
            bytes_per_request: 0,
            setup: Vec::new(),
        }
    }
}

fn cbor_headers(host: (String, String)) -> Vec<(String, String)> {
    vec![
        host,
        ("content-type".to_owned(), "application/cbor".to_owned()),
        ("accept".to_owned(), "application/cbor".to_owned()),
        ("smithy-protocol".to_owned(), "rpc-v2-cbor".to_owned()),
    ]
}

const CLOUDWATCH_PATH: &str = "/service/GraniteServiceVersion20100801/operation/";

fn template(args: &CallArgs, authority: &str) -> anyhow::Result<Template> {
    let host = ("host".to_owned(), authority.to_owned());
    Ok(match args.operation.as_str() {
        "get-caller-identity" => Template::simple(
            "/",
            vec![
                host,
                (
                    "content-type".to_owned(),
                    "application/x-www-form-urlencoded; charset=utf-8".to_owned(),
                ),
            ],
            Bytes::from_static(b"Action=GetCallerIdentity&Version=2011-06-15"),
            "sts",
        ),
        "put-metric-data" | "vm-import" => {
            let (inputs, vm) = metrics::put_bodies(args.series, args.values, args.bodies, now());
            let values_per_request = args.series * args.values;
            if args.operation == "vm-import" {
                Template {
                    method: "POST",
                    path: "/api/v1/import".to_owned(),
                    headers: vec![host],
                    bodies: vm,
                    service: None,
                    follow: None,
                    values_per_request,
                    bytes_per_request: 0,
                    setup: Vec::new(),
                }
            } else if args.protocol == "query" {
                Template {
                    method: "POST",
                    path: "/".to_owned(),
                    headers: vec![
                        host,
                        (
                            "content-type".to_owned(),
                            "application/x-www-form-urlencoded; charset=utf-8".to_owned(),
                        ),
                    ],
                    bodies: inputs
                        .iter()
                        .map(|input| metrics::query_body("PutMetricData", input))
                        .collect(),
                    service: Some("monitoring"),
                    follow: None,
                    values_per_request,
                    bytes_per_request: 0,
                    setup: Vec::new(),
                }
            } else {
                Template {
                    method: "POST",
                    path: format!("{CLOUDWATCH_PATH}PutMetricData"),
                    headers: cbor_headers(host),
                    bodies: inputs
                        .iter()
                        .map(|input| Bytes::from(trailwatch_protocol::cbor::encode(input)))
                        .collect(),
                    service: Some("monitoring"),
                    follow: None,
                    values_per_request,
                    bytes_per_request: 0,
                    setup: Vec::new(),
                }
            }
        }
        "put-metric-alarm" => Template {
            method: "POST",
            path: format!("{CLOUDWATCH_PATH}PutMetricAlarm"),
            headers: cbor_headers(host),
            bodies: (0..args.bodies)
                .map(|i| {
                    Bytes::from(trailwatch_protocol::cbor::encode(&metrics::alarm_input(
                        i,
                        args.series,
                    )))
                })
                .collect(),
            service: Some("monitoring"),
            follow: None,
            values_per_request: 0,
            bytes_per_request: 0,
            setup: Vec::new(),
        },
        "get-metric-data" => {
            let end = Timestamp::from_millis(now().millis() / 60_000 * 60_000);
            let start = Timestamp::from_millis(end.millis() - args.hours * 3_600_000);
            let series = args.series;
            Template {
                method: "POST",
                path: format!("{CLOUDWATCH_PATH}GetMetricData"),
                headers: cbor_headers(host),
                bodies: vec![metrics::get_data_body(series, start, end, 60, None)],
                service: Some("monitoring"),
                follow: Some(Arc::new(move |token: &str| {
                    metrics::get_data_body(series, start, end, 60, Some(token))
                })),
                values_per_request: 0,
                bytes_per_request: 0,
                setup: Vec::new(),
            }
        }
        "put-log-events" => {
            let (bodies, bytes) = logs::put_bodies(args.values, args.bodies, now());
            let json = |target: &str| {
                vec![
                    host.clone(),
                    (
                        "content-type".to_owned(),
                        "application/x-amz-json-1.1".to_owned(),
                    ),
                    ("x-amz-target".to_owned(), format!("Logs_20140328.{target}")),
                ]
            };
            Template {
                method: "POST",
                path: "/".to_owned(),
                headers: json("PutLogEvents"),
                bodies,
                service: Some("logs"),
                follow: None,
                values_per_request: args.values,
                bytes_per_request: bytes,
                setup: vec![
                    (
                        "CreateLogGroup".to_owned(),
                        Bytes::from_static(br#"{"logGroupName":"bench"}"#),
                    ),
                    (
                        "CreateLogStream".to_owned(),
                        Bytes::from_static(br#"{"logGroupName":"bench","logStreamName":"s"}"#),
                    ),
                ],
            }
        }
        "vm-query-range" => {
            let end = now().millis() / 60_000 * 60;
            let start = end - args.hours * 3600;
            let query: String = percent_encode(&metrics::vm_selector(args.series));
            Template {
                method: "GET",
                path: format!(
                    "/api/v1/query_range?query={query}&start={start}&end={}&step=60s",
                    end - 1
                ),
                headers: vec![host],
                bodies: vec![Bytes::new()],
                service: None,
                follow: None,
                values_per_request: 0,
                bytes_per_request: 0,
                setup: Vec::new(),
            }
        }
        "lookup-events" => {
            let mut input = serde_json::json!({"MaxResults": 50});
            if let Some(attr) = &args.attribute {
                let (k, v) = attr
                    .split_once('=')
                    .context("--attribute takes Key=Value")?;
                input["LookupAttributes"] =
                    serde_json::json!([{"AttributeKey": k, "AttributeValue": v}]);
            }
            Template::simple(
                "/",
                vec![
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
                Bytes::from(input.to_string()),
                "cloudtrail",
            )
        }
        other => bail!("unknown operation {other}"),
    })
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
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
    run_setup(&args, &authority, &template).await?;
    let per_connection = args.requests.div_ceil(args.connections.max(1));
    let cpu_before = args.server_pid.and_then(cpu_seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for connection in 0..args.connections.max(1) {
        let (template, args, authority) = (template.clone(), args.clone(), authority.clone());
        tasks.push(tokio::spawn(async move {
            connection_loop(&args, &authority, &template, connection, per_connection).await
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
        "values_per_second": (latencies.len() * template.values_per_request) as f64 / wall,
        "megabytes_per_second": (latencies.len() * template.bytes_per_request) as f64 / wall / 1e6,
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

/// Runs the template's setup calls once, before any measured connection starts.
async fn run_setup(args: &CallArgs, authority: &str, template: &Template) -> anyhow::Result<()> {
    if template.setup.is_empty() {
        return Ok(());
    }
    for (target, body) in &template.setup {
        // A connection per call: some peers close after each answer.
        let mut sender = connect(authority).await?;
        let mut headers: Vec<(String, String)> = template
            .headers
            .iter()
            .filter(|(k, _)| k != "x-amz-target")
            .cloned()
            .collect();
        headers.push(("x-amz-target".to_owned(), format!("Logs_20140328.{target}")));
        if let Some(service) = template.service {
            let signer = Signer {
                access_key_id: &args.access_key,
                secret: &args.secret,
                region: &args.region,
                service,
            };
            signer.sign("POST", "/", "", &mut headers, body, now());
        }
        let mut request = http::Request::builder().method("POST").uri("/");
        for (k, v) in &headers {
            request = request.header(k, v);
        }
        let response = sender
            .send_request(request.body(Full::new(body.clone()))?)
            .await?;
        // Errors such as "already exists" are fine: the resource is there.
        let _ = response.into_body().collect().await?;
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
    connection: usize,
    count: usize,
) -> anyhow::Result<(Vec<Duration>, usize)> {
    let mut sender = connect(authority).await?;
    let mut latencies = Vec::with_capacity(count);
    let mut errors = 0;
    for i in 0..(args.warmup + count) {
        // Connections take bodies in turn, so `--bodies N --requests N` sends each once.
        let turn = i * args.connections.max(1) + connection;
        let mut body = template.bodies[turn % template.bodies.len()].clone();
        let began = Instant::now();
        // One measured call may take several requests: the pages of a paginated answer.
        loop {
            let mut headers = template.headers.clone();
            if let Some(service) = template.service {
                let signer = Signer {
                    access_key_id: &args.access_key,
                    secret: &args.secret,
                    region: &args.region,
                    service,
                };
                let (path, query) = template
                    .path
                    .split_once('?')
                    .unwrap_or((&template.path, ""));
                signer.sign(template.method, path, query, &mut headers, &body, now());
            }
            let mut request = http::Request::builder()
                .method(template.method)
                .uri(&template.path);
            for (k, v) in &headers {
                request = request.header(k, v);
            }
            let request = request.body(Full::new(body.clone()))?;
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
            let answer = response.into_body().collect().await?.to_bytes();
            if closes {
                sender = connect(authority).await?;
            }
            if !status.is_success() {
                errors += 1;
                if errors == 1 {
                    eprintln!("error {status}: {}", String::from_utf8_lossy(&answer));
                }
                break;
            }
            if let Some(follow) = &template.follow {
                if let (Some(token), _) = metrics::next_token(&answer) {
                    body = follow(&token);
                    continue;
                }
            }
            break;
        }
        let took = began.elapsed();
        if i >= args.warmup {
            latencies.push(took);
        }
    }
    Ok((latencies, errors))
}
