//! Crash safety of the audit recorder (DESIGN.md §2): the real binary is killed
//! with SIGKILL while several clients write and the WAL is flushed into
//! segments every 150 records, many times over. After each restart every
//! acknowledged call's record is present, nothing that was never sent appears,
//! and nothing appears twice; the same holds for the metrics that half of the
//! writers publish with PutMetricData.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;

mod common;
use trailwatch_protocol::sigv4::Signer;
use trailwatch_types::Timestamp;

const KEY: &str = "AKIACRASHTEST0000001";
const SECRET: &str = "crash-test-secret-key-0000000000000000000";

fn now() -> Timestamp {
    #[allow(clippy::disallowed_methods)] // a client, not the server: real time is the point
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::from_millis(since.as_millis() as i64)
}

fn start(data_dir: &Path) -> common::Server {
    // Flush to segments constantly, so kills also land in the middle of flushes.
    common::Server::start(
        data_dir,
        KEY,
        SECRET,
        "123456789012",
        &[("TRAILWATCH_AUDIT_FLUSH_ROWS", "150")],
    )
}

/// Sends one signed JSON call on `stream` and reads the whole answer.
fn call(
    stream: &mut TcpStream,
    addr: &str,
    service: &str,
    target: &str,
    body: &str,
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut headers = vec![
        ("host".to_owned(), addr.to_owned()),
        ("x-amz-target".to_owned(), target.to_owned()),
        (
            "content-type".to_owned(),
            "application/x-amz-json-1.1".to_owned(),
        ),
    ];
    let signer = Signer {
        access_key_id: KEY,
        secret: SECRET,
        region: "us-east-1",
        service,
    };
    signer.sign("POST", "/", "", &mut headers, body.as_bytes(), now());
    let mut request = format!("POST / HTTP/1.1\r\ncontent-length: {}\r\n", body.len());
    for (k, v) in &headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status line"))?;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::other("connection closed in headers"));
        }
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    Ok((status, body))
}

/// Every alarm name in the DeleteAlarms records, with multiplicity.
fn recorded_names(addr: &str) -> HashMap<String, usize> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    let mut names = HashMap::new();
    let mut token: Option<String> = None;
    loop {
        let mut body = serde_json::json!({
            "LookupAttributes": [{"AttributeKey": "EventName", "AttributeValue": "DeleteAlarms"}],
            "MaxResults": 50,
        });
        if let Some(t) = &token {
            body["NextToken"] = serde_json::Value::String(t.clone());
        }
        let (status, answer) = call(
            &mut stream,
            addr,
            "cloudtrail",
            "CloudTrail_20131101.LookupEvents",
            &body.to_string(),
        )
        .expect("lookup");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
        let page: serde_json::Value = serde_json::from_slice(&answer).expect("json");
        for event in page["Events"].as_array().expect("events") {
            let record: serde_json::Value =
                serde_json::from_str(event["CloudTrailEvent"].as_str().expect("record"))
                    .expect("record json");
            for name in record["requestParameters"]["alarmNames"]
                .as_array()
                .expect("names")
            {
                *names
                    .entry(name.as_str().expect("name").to_owned())
                    .or_insert(0) += 1;
            }
        }
        match page["NextToken"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => return names,
        }
    }
}

/// Whether a write name came from a metric writer (odd writer index).
fn odd_writer(name: &str) -> bool {
    name.split('-')
        .nth(1)
        .and_then(|w| w.strip_prefix('w'))
        .and_then(|w| w.parse::<u32>().ok())
        .is_some_and(|w| w % 2 == 1)
}

/// Every metric name ListMetrics shows in namespace `Crash`.
fn listed_metrics(addr: &str) -> BTreeSet<String> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    let mut names = BTreeSet::new();
    let mut token: Option<String> = None;
    loop {
        let mut body = serde_json::json!({"Namespace": "Crash"});
        if let Some(t) = &token {
            body["NextToken"] = serde_json::Value::String(t.clone());
        }
        let (status, answer) = call(
            &mut stream,
            addr,
            "monitoring",
            "GraniteServiceVersion20100801.ListMetrics",
            &body.to_string(),
        )
        .expect("list metrics");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
        let page: serde_json::Value = serde_json::from_slice(&answer).expect("json");
        for m in page["Metrics"].as_array().expect("metrics") {
            assert!(
                names.insert(m["MetricName"].as_str().expect("name").to_owned()),
                "a metric is listed twice"
            );
        }
        match page["NextToken"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => return names,
        }
    }
}

/// (SampleCount, Sum) stored for metric `name` over the last hours.
fn stored_points(addr: &str, name: &str) -> (f64, f64) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    let end = now().secs() + 600;
    let body = serde_json::json!({
        "Namespace": "Crash",
        "MetricName": name,
        "StartTime": end - 7200,
        "EndTime": end,
        "Period": 60,
        "Statistics": ["SampleCount", "Sum"],
    });
    let (status, answer) = call(
        &mut stream,
        addr,
        "monitoring",
        "GraniteServiceVersion20100801.GetMetricStatistics",
        &body.to_string(),
    )
    .expect("get metric statistics");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let page: serde_json::Value = serde_json::from_slice(&answer).expect("json");
    page["Datapoints"]
        .as_array()
        .expect("datapoints")
        .iter()
        .fold((0.0, 0.0), |(n, s), p| {
            (
                n + p["SampleCount"].as_f64().expect("count"),
                s + p["Sum"].as_f64().expect("sum"),
            )
        })
}

fn count_files(dir: &Path, extension: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| e.path())
        .map(|p| {
            if p.is_dir() {
                count_files(&p, extension)
            } else {
                usize::from(p.extension().is_some_and(|x| x == extension))
            }
        })
        .sum()
}

#[test]
fn sigkill_during_concurrent_writes_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let sent: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let acknowledged: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let mut rng = rand::thread_rng();
    let cycles = 12;
    for cycle in 0..cycles {
        let mut server = start(&data_dir);
        let addr = server.addr.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let (addr, stop, sent, acknowledged) = (
                    addr.clone(),
                    stop.clone(),
                    sent.clone(),
                    acknowledged.clone(),
                );
                std::thread::spawn(move || {
                    let Ok(mut stream) = TcpStream::connect(&addr) else {
                        return;
                    };
                    for i in 0.. {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let name = format!("c{cycle}-w{w}-{i}");
                        sent.lock().unwrap().insert(name.clone());
                        // Even writers make audit records only; odd writers also store
                        // metric data (PutMetricData must answer 200, and is recorded too).
                        let (target, body, must_succeed) = if w % 2 == 0 {
                            ("GraniteServiceVersion20100801.DeleteAlarms", format!(r#"{{"AlarmNames":["{name}"]}}"#), false)
                        } else {
                            (
                                "GraniteServiceVersion20100801.PutMetricData",
                                format!(r#"{{"Namespace":"Crash","MetricData":[{{"MetricName":"{name}","Value":{i}}}]}}"#),
                                true,
                            )
                        };
                        match call(&mut stream, &addr, "monitoring", target, &body) {
                            Ok((200, _)) => {
                                acknowledged.lock().unwrap().insert(name);
                            }
                            Ok((status, _)) if status != 500 && !must_succeed => {
                                acknowledged.lock().unwrap().insert(name);
                            }
                            Ok((status, answer)) => panic!(
                                "unexpected answer {status}: {}",
                                String::from_utf8_lossy(&answer)
                            ),
                            Err(_) => return, // killed mid-call: neither acknowledged nor refused
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.gen_range(80..400)));
        server.kill();
        stop.store(true, Ordering::SeqCst);
        for w in writers {
            w.join().expect("writer thread");
        }

        let mut server = start(&data_dir);
        let present = recorded_names(&server.addr);
        let metrics = listed_metrics(&server.addr);
        // Points, not only identities: each acknowledged datum is stored once,
        // whether it came back from the WAL or from a segment.
        let sample: Vec<String> = {
            let acknowledged = acknowledged.lock().unwrap();
            let odd: Vec<&String> = acknowledged.iter().filter(|n| odd_writer(n)).collect();
            (0..odd.len().min(25))
                .map(|_| odd[rng.gen_range(0..odd.len())].clone())
                .collect()
        };
        for name in &sample {
            let i: f64 = name
                .rsplit('-')
                .next()
                .and_then(|i| i.parse().ok())
                .expect("index");
            assert_eq!(
                stored_points(&server.addr, name),
                (1.0, i),
                "cycle {cycle}: metric {name} lost or duplicated its datum"
            );
        }
        server.kill();
        let acknowledged = acknowledged.lock().unwrap();
        let sent = sent.lock().unwrap();
        for name in acknowledged.iter().filter(|n| !odd_writer(n)) {
            assert!(
                present.contains_key(name),
                "cycle {cycle}: acknowledged write {name} was lost"
            );
        }
        for name in acknowledged.iter().filter(|n| odd_writer(n)) {
            assert!(
                metrics.contains(name),
                "cycle {cycle}: acknowledged metric {name} was lost"
            );
        }
        for name in &metrics {
            assert!(
                sent.contains(name) && odd_writer(name),
                "cycle {cycle}: metric {name} was never sent"
            );
        }
        for (name, count) in &present {
            assert!(
                sent.contains(name),
                "cycle {cycle}: record {name} was never sent"
            );
            assert_eq!(
                *count, 1,
                "cycle {cycle}: record {name} appears {count} times"
            );
        }
        assert!(
            acknowledged.len() > cycle,
            "cycle {cycle}: writers made no progress"
        );
        assert!(
            count_files(&data_dir.join("objects"), "parquet") > 0 || cycle < 2,
            "cycle {cycle}: no segment was ever flushed"
        );
        assert!(
            count_files(&data_dir.join("objects"), "twm") > 0 || cycle < 2,
            "cycle {cycle}: no metric segment was ever flushed"
        );
        eprintln!(
            "cycle {cycle}: {} sent, {} acknowledged, {} recorded",
            sent.len(),
            acknowledged.len(),
            present.len()
        );
    }
}

/// Every message of stream `s` in group `crash`, read forward from the head.
fn stored_messages(addr: &str) -> Vec<String> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut body = serde_json::json!({
            "logGroupName": "crash", "logStreamName": "s", "startFromHead": true, "limit": 500,
        });
        if let Some(t) = &token {
            body["nextToken"] = serde_json::Value::String(t.clone());
        }
        let (status, answer) = call(
            &mut stream,
            addr,
            "logs",
            "Logs_20140328.GetLogEvents",
            &body.to_string(),
        )
        .expect("get log events");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
        let page: serde_json::Value = serde_json::from_slice(&answer).expect("json");
        for e in page["events"].as_array().expect("events") {
            out.push(e["message"].as_str().expect("message").to_owned());
        }
        let next = page["nextForwardToken"].as_str().expect("token").to_owned();
        if token.as_deref() == Some(next.as_str()) {
            return out;
        }
        token = Some(next);
    }
}

#[test]
fn sigkill_during_log_ingest_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let acknowledged: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let sent: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let mut rng = rand::thread_rng();
    {
        let mut server = start(&data_dir);
        let mut stream = TcpStream::connect(&server.addr).expect("connect");
        for (target, body) in [
            (
                "Logs_20140328.CreateLogGroup",
                r#"{"logGroupName":"crash"}"#,
            ),
            (
                "Logs_20140328.CreateLogStream",
                r#"{"logGroupName":"crash","logStreamName":"s"}"#,
            ),
        ] {
            let (status, answer) =
                call(&mut stream, &server.addr, "logs", target, body).expect("setup");
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
        }
        server.kill();
    }
    for cycle in 0..8 {
        let mut server = start(&data_dir);
        let addr = server.addr.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..3)
            .map(|w| {
                let (addr, stop, sent, acknowledged) = (
                    addr.clone(),
                    stop.clone(),
                    sent.clone(),
                    acknowledged.clone(),
                );
                std::thread::spawn(move || {
                    let Ok(mut stream) = TcpStream::connect(&addr) else {
                        return;
                    };
                    for i in 0.. {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        // Three events per call, each message unique.
                        let names: Vec<String> =
                            (0..3).map(|k| format!("c{cycle}-w{w}-{i}-{k}")).collect();
                        let ts = now().millis();
                        let events: Vec<serde_json::Value> = names
                            .iter()
                            .map(|n| serde_json::json!({"timestamp": ts, "message": n}))
                            .collect();
                        let body = serde_json::json!({
                            "logGroupName": "crash", "logStreamName": "s", "logEvents": events,
                        });
                        sent.lock().unwrap().extend(names.iter().cloned());
                        match call(
                            &mut stream,
                            &addr,
                            "logs",
                            "Logs_20140328.PutLogEvents",
                            &body.to_string(),
                        ) {
                            Ok((200, _)) => acknowledged.lock().unwrap().extend(names),
                            Ok((status, answer)) => panic!(
                                "unexpected answer {status}: {}",
                                String::from_utf8_lossy(&answer)
                            ),
                            Err(_) => return,
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.gen_range(80..400)));
        server.kill();
        stop.store(true, Ordering::SeqCst);
        for w in writers {
            w.join().expect("writer thread");
        }
        let mut server = start(&data_dir);
        let stored = stored_messages(&server.addr);
        server.kill();
        let mut seen = BTreeSet::new();
        for m in &stored {
            assert!(
                seen.insert(m.clone()),
                "cycle {cycle}: event {m} stored twice"
            );
            assert!(
                sent.lock().unwrap().contains(m),
                "cycle {cycle}: event {m} never sent"
            );
        }
        for m in acknowledged.lock().unwrap().iter() {
            assert!(
                seen.contains(m),
                "cycle {cycle}: acknowledged event {m} was lost"
            );
        }
        assert!(
            count_files(&data_dir.join("objects"), "twl") > 0 || cycle < 2,
            "cycle {cycle}: no log segment was ever flushed"
        );
    }
}
