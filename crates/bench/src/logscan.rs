//! The log search workloads: `logs-load` writes the same seeded events to a
//! server (PutLogEvents) and to a raw text file (for ripgrep and DuckDB);
//! `logs-query` times FilterLogEvents (every page) and Logs Insights queries
//! (StartQuery, then GetQueryResults until Complete) against that server.
//!
//! Events are JSON application logs of about `--event-bytes`: level ERROR for
//! exactly 1 % of them (the common term), the literal `OutOfMemoryError` in 1
//! of 2,000,000 (the rare term), and fields `status`, `latency_ms` and
//! `service` for Insights.

use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use trailwatch_protocol::sigv4::Signer;

use crate::{connect, now, Sender};

const SERVICES: [&str; 12] = [
    "checkout",
    "cart",
    "search",
    "payments",
    "auth",
    "catalog",
    "shipping",
    "reviews",
    "images",
    "inventory",
    "pricing",
    "gateway",
];
const WORDS: [&str; 24] = [
    "request",
    "user",
    "session",
    "cache",
    "miss",
    "hit",
    "db",
    "query",
    "latency",
    "retry",
    "upstream",
    "checkout",
    "cart",
    "item",
    "token",
    "region",
    "handled",
    "completed",
    "served",
    "backend",
    "pool",
    "connection",
    "worker",
    "queue",
];
/// One event in this many carries the rare term.
const RARE_EVERY: u64 = 2_000_000;
const GROUP: &str = "scan";

#[derive(clap::Args, Debug, Clone)]
pub(crate) struct LoadArgs {
    /// Server base URL.
    #[arg(long)]
    endpoint: String,
    #[arg(long, env = "AWS_ACCESS_KEY_ID")]
    access_key: String,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY")]
    secret: String,
    /// Events in all.
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Approximate message size.
    #[arg(long, default_value_t = 500)]
    event_bytes: usize,
    /// Log streams the events are spread over.
    #[arg(long, default_value_t = 8)]
    streams: u64,
    /// Concurrent connections.
    #[arg(long, default_value_t = 4)]
    connections: u64,
    /// Event time of the last event, epoch ms (default: now); events are
    /// spread evenly over the 10 hours before it.
    #[arg(long)]
    end_ms: Option<i64>,
    /// Also write `timestamp<TAB>message` lines here.
    #[arg(long)]
    raw_out: Option<std::path::PathBuf>,
}

/// Event `i` of the seeded workload (same bytes on every run).
fn message(i: u64, size: usize) -> String {
    // splitmix64: a cheap, well-mixed stream per event.
    let mut state = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let level = match i % 100 {
        37 => "ERROR",
        0..=4 => "WARN",
        _ => "INFO",
    };
    let status = if level == "ERROR" {
        [500, 502, 503][(next() % 3) as usize]
    } else {
        [200, 200, 200, 201, 204, 301, 404][(next() % 7) as usize]
    };
    let mut m = format!(
        r#"{{"level":"{level}","service":"{}","status":{status},"latency_ms":{},"request_id":"{:016x}","user":"u{}","path":"/api/v1/{}/{}","msg":""#,
        SERVICES[(next() % SERVICES.len() as u64) as usize],
        next() % 2_000,
        next(),
        next() % 100_000,
        WORDS[(next() % WORDS.len() as u64) as usize],
        next() % 1_000_000,
    );
    if i % RARE_EVERY == RARE_EVERY / 2 {
        m.push_str("java.lang.OutOfMemoryError: Java heap space ");
    }
    while m.len() + 2 < size {
        m.push_str(WORDS[(next() % WORDS.len() as u64) as usize]);
        m.push(' ');
    }
    m.push_str("\"}");
    m
}

fn json_escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
}

struct Client {
    endpoint: String,
    authority: String,
    access_key: String,
    secret: String,
    sender: Sender,
}

impl Client {
    async fn new(endpoint: &str, access_key: &str, secret: &str) -> anyhow::Result<Self> {
        let authority = endpoint
            .strip_prefix("http://")
            .context("endpoint must be http://host:port")?
            .trim_end_matches('/')
            .to_owned();
        Ok(Self {
            endpoint: endpoint.to_owned(),
            sender: connect(&authority).await?,
            authority,
            access_key: access_key.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// One signed Logs JSON call; the answer body, or an error for non-2xx.
    async fn call(&mut self, target: &str, body: Bytes) -> anyhow::Result<Bytes> {
        let mut headers = vec![
            ("host".to_owned(), self.authority.clone()),
            (
                "content-type".to_owned(),
                "application/x-amz-json-1.1".to_owned(),
            ),
            ("x-amz-target".to_owned(), format!("Logs_20140328.{target}")),
        ];
        Signer {
            access_key_id: &self.access_key,
            secret: &self.secret,
            region: "us-east-1",
            service: "logs",
        }
        .sign("POST", "/", "", &mut headers, &body, now());
        let mut request = http::Request::builder().method("POST").uri("/");
        for (k, v) in &headers {
            request = request.header(k, v);
        }
        if self.sender.ready().await.is_err() {
            self.sender = connect(&self.authority).await?;
        }
        let response = self
            .sender
            .send_request(request.body(Full::new(body))?)
            .await?;
        let status = response.status();
        let answer = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!(
                "{} {target}: {status}: {}",
                self.endpoint,
                String::from_utf8_lossy(&answer)
            );
        }
        Ok(answer)
    }
}

/// `logs-load`.
pub(crate) async fn load(args: LoadArgs) -> anyhow::Result<()> {
    let end = args.end_ms.unwrap_or_else(|| now().millis());
    let span = 10 * 3_600_000i64;
    let step = span as f64 / args.events.max(1) as f64;
    let ts = move |i: u64| end - span + (i as f64 * step) as i64;
    let mut setup = Client::new(&args.endpoint, &args.access_key, &args.secret).await?;
    let _ = setup
        .call(
            "CreateLogGroup",
            Bytes::from(format!(r#"{{"logGroupName":"{GROUP}"}}"#)),
        )
        .await;
    for s in 0..args.streams {
        let _ = setup
            .call(
                "CreateLogStream",
                Bytes::from(format!(
                    r#"{{"logGroupName":"{GROUP}","logStreamName":"s{s}"}}"#
                )),
            )
            .await;
    }
    // Batches of consecutive events, as many as the 1 MB limit allows.
    let per_batch = (1_000_000 / (args.event_bytes + 26 + 64)).clamp(1, 10_000) as u64;
    let batches = args.events.div_ceil(per_batch);
    let began = Instant::now();
    let mut raw = match &args.raw_out {
        Some(path) => Some(std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?,
        )),
        None => None,
    };
    if let Some(raw) = &mut raw {
        for i in 0..args.events {
            writeln!(raw, "{}\t{}", ts(i), message(i, args.event_bytes))?;
        }
        raw.flush()?;
    }
    let mut tasks = Vec::new();
    let sent = Instant::now();
    for c in 0..args.connections {
        let args = args.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::new(&args.endpoint, &args.access_key, &args.secret).await?;
            let mut bytes = 0u64;
            let mut b = c;
            while b < batches {
                let first = b * per_batch;
                let last = (first + per_batch).min(args.events);
                let mut body = format!(
                    r#"{{"logGroupName":"{GROUP}","logStreamName":"s{}","logEvents":["#,
                    b % args.streams
                );
                for i in first..last {
                    let m = message(i, args.event_bytes);
                    bytes += m.len() as u64;
                    if i > first {
                        body.push(',');
                    }
                    body.push_str(&format!(r#"{{"timestamp":{},"message":""#, ts(i)));
                    json_escape(&m, &mut body);
                    body.push_str("\"}");
                }
                body.push_str("]}");
                let answer = client.call("PutLogEvents", Bytes::from(body)).await?;
                if answer.windows(8).any(|w| w == b"rejected") {
                    bail!("events rejected: {}", String::from_utf8_lossy(&answer));
                }
                b += args.connections;
            }
            anyhow::Ok(bytes)
        }));
    }
    let mut bytes = 0;
    for t in tasks {
        bytes += t.await??;
    }
    let secs = sent.elapsed().as_secs_f64();
    println!(
        "loaded {} events, {:.2} GB of messages in {secs:.1} s ({:.0} MB/s; raw file written in {:.1} s)",
        args.events,
        bytes as f64 / 1e9,
        bytes as f64 / 1e6 / secs,
        (sent - began).as_secs_f64(),
    );
    Ok(())
}

#[derive(clap::Args, Debug, Clone)]
pub(crate) struct QueryArgs {
    /// Server base URL.
    #[arg(long)]
    endpoint: String,
    #[arg(long, env = "AWS_ACCESS_KEY_ID")]
    access_key: String,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY")]
    secret: String,
    /// A FilterLogEvents filter pattern (every page is fetched)...
    #[arg(long)]
    pattern: Option<String>,
    /// ...or a Logs Insights query (run to completion).
    #[arg(long)]
    insights: Option<String>,
    /// Timed repetitions (after one untimed).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Raw bytes the data set holds, to report GB/s scanned.
    #[arg(long)]
    raw_bytes: Option<u64>,
    /// Label printed with the results.
    #[arg(long, default_value = "trailwatch")]
    label: String,
}

fn field<'a>(v: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    v.get(name).and_then(serde_json::Value::as_str)
}

/// `logs-query`.
pub(crate) async fn query(args: QueryArgs) -> anyhow::Result<()> {
    let mut client = Client::new(&args.endpoint, &args.access_key, &args.secret).await?;
    let mut times = Vec::new();
    let mut summary = String::new();
    for round in 0..=args.repeat {
        let began = Instant::now();
        if let Some(pattern) = &args.pattern {
            let (mut events, mut pages, mut token): (u64, u64, Option<String>) = (0, 0, None);
            loop {
                let mut body = serde_json::json!({
                    "logGroupName": GROUP, "filterPattern": pattern, "startTime": 0,
                });
                if let Some(t) = &token {
                    body["nextToken"] = serde_json::Value::String(t.clone());
                }
                let answer = client
                    .call("FilterLogEvents", Bytes::from(body.to_string()))
                    .await?;
                let v: serde_json::Value = serde_json::from_slice(&answer)?;
                events += v["events"].as_array().map_or(0, |e| e.len() as u64);
                pages += 1;
                match field(&v, "nextToken") {
                    Some(t) => token = Some(t.to_owned()),
                    None => break,
                }
            }
            summary = format!("{events} events in {pages} pages");
        } else if let Some(q) = &args.insights {
            let body = serde_json::json!({
                "logGroupName": GROUP, "queryString": q, "startTime": 0,
                "endTime": now().millis() / 1000 + 3600,
            });
            let answer = client
                .call("StartQuery", Bytes::from(body.to_string()))
                .await?;
            let v: serde_json::Value = serde_json::from_slice(&answer)?;
            let id = field(&v, "queryId").context("no queryId")?.to_owned();
            // Polls back off from 2 ms to 50 ms, as a client would: every
            // poll is a signed, audited call the server answers meanwhile.
            let mut wait = Duration::from_millis(2);
            loop {
                let answer = client
                    .call(
                        "GetQueryResults",
                        Bytes::from(serde_json::json!({ "queryId": id }).to_string()),
                    )
                    .await?;
                let v: serde_json::Value = serde_json::from_slice(&answer)?;
                match field(&v, "status") {
                    Some("Complete") => {
                        summary = format!(
                            "{} rows, {} records scanned",
                            v["results"].as_array().map_or(0, Vec::len),
                            v["statistics"]["recordsScanned"]
                        );
                        break;
                    }
                    Some("Running" | "Scheduled") => {
                        tokio::time::sleep(wait).await;
                        wait = (wait * 3 / 2).min(Duration::from_millis(50));
                    }
                    other => bail!("query ended {other:?}"),
                }
            }
        } else {
            bail!("give --pattern or --insights");
        }
        if round > 0 {
            times.push(began.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let rate = args
        .raw_bytes
        .map(|b| format!(", {:.2} GB/s of raw log", b as f64 / 1e9 / median))
        .unwrap_or_default();
    println!(
        "{}: {summary}; median {:.3} s of {} runs (min {:.3}, max {:.3}){rate}",
        args.label,
        median,
        times.len(),
        times[0],
        times[times.len() - 1]
    );
    Ok(())
}
