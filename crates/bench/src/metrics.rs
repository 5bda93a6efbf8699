//! Metric workloads of issue #3, built identically for trailwatch (CloudWatch
//! RPC v2 CBOR, what aws-sdk-rust sends) and for VictoriaMetrics (its JSON-line
//! import and `query_range`), so both servers get the same points.
//!
//! The data is host-like: hosts × five metrics, each a random walk or noisy
//! level of its own kind (a CPU percentage with two decimals, memory in whole
//! pages, network bytes, disk operations, load average), seeded, so every run
//! and every server sees the same values.

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use trailwatch_protocol::value::Value;
use trailwatch_types::Timestamp;

/// The five metric kinds of a host.
pub(crate) const METRICS: [&str; 5] = [
    "CPUUtilization",
    "MemoryUsed",
    "NetworkIn",
    "DiskReadOps",
    "LoadAverage",
];

/// Series `i` is metric `i % 5` of host `i / 5`.
pub(crate) fn series_name(i: usize) -> (&'static str, String) {
    (
        METRICS[i % METRICS.len()],
        format!("host-{:04}", i / METRICS.len()),
    )
}

/// Deterministic host-like values for `series` series.
pub(crate) struct Generator {
    rng: rand::rngs::StdRng,
    state: Vec<f64>,
}

impl Generator {
    /// A generator for `series` series.
    pub(crate) fn new(series: usize) -> Self {
        let mut rng = rand::rngs::StdRng::seed_from_u64(20_261_124);
        let state = (0..series)
            .map(|i| match i % 5 {
                0 => rng.gen_range(5.0..60.0),
                1 => f64::from(rng.gen_range(200_000..2_000_000)) * 4096.0,
                2 => rng.gen_range(1e5..5e7),
                3 => rng.gen_range(0.0..400.0),
                _ => rng.gen_range(0.1..4.0),
            })
            .collect();
        Generator { rng, state }
    }

    /// The next value of series `i`.
    pub(crate) fn next(&mut self, i: usize) -> f64 {
        let s = &mut self.state[i];
        let r = &mut self.rng;
        match i % 5 {
            0 => {
                *s = (*s + r.gen_range(-3.0..3.0)).clamp(0.0, 100.0);
                (*s * 100.0).round() / 100.0
            }
            1 => {
                *s = (*s + f64::from(r.gen_range(-2_000..2_000)) * 4096.0).max(4096.0);
                *s
            }
            2 => (*s * r.gen_range(0.7..1.3)).round(),
            3 => (*s * r.gen_range(0.5..1.5)).round(),
            _ => {
                *s = (*s + r.gen_range(-0.2..0.2)).clamp(0.0, 16.0);
                (*s * 100.0).round() / 100.0
            }
        }
    }
}

fn datum(i: usize, timestamp: Timestamp, values: Vec<f64>, resolution: i64) -> Value {
    let (metric, host) = series_name(i);
    let mut members = vec![
        ("MetricName".to_owned(), Value::string(metric)),
        (
            "Dimensions".to_owned(),
            Value::List(vec![Value::structure([
                ("Name", Value::string("Host")),
                ("Value", Value::String(host)),
            ])]),
        ),
        ("Timestamp".to_owned(), Value::Timestamp(timestamp)),
        ("StorageResolution".to_owned(), Value::Int(resolution)),
    ];
    if values.len() == 1 {
        members.push(("Value".to_owned(), Value::Float(values[0])));
    } else {
        members.push((
            "Values".to_owned(),
            Value::List(values.into_iter().map(Value::Float).collect()),
        ));
    }
    Value::Struct(members)
}

/// PutMetricData inputs and the same points as VictoriaMetrics JSON lines: `requests` requests of `series` series × `per_request` values.
/// With one value per request, request `k` is minute `k` before `end`; with
/// more, they are `per_request` samples of one second each.
pub(crate) fn put_bodies(
    series: usize,
    per_request: usize,
    requests: usize,
    end: Timestamp,
) -> (Vec<Value>, Vec<Bytes>) {
    let mut generator = Generator::new(series);
    let mut inputs = Vec::with_capacity(requests);
    let mut vm = Vec::with_capacity(requests);
    for k in 0..requests {
        let (timestamp, step_ms, resolution) = if per_request == 1 {
            (end.millis() - (requests - k) as i64 * 60_000, 60_000, 60)
        } else {
            (
                end.millis() - (requests - k) as i64 * per_request as i64 * 1000,
                1000,
                1,
            )
        };
        let mut datums = Vec::with_capacity(series);
        let mut lines = String::with_capacity(series * (80 + per_request * 30));
        for i in 0..series {
            let values: Vec<f64> = (0..per_request).map(|_| generator.next(i)).collect();
            let (metric, host) = series_name(i);
            let times: Vec<i64> = (0..per_request as i64)
                .map(|j| timestamp + j * step_ms)
                .collect();
            lines.push_str(
                &serde_json::json!({
                    "metric": {"__name__": metric, "Host": host},
                    "values": values,
                    "timestamps": times,
                })
                .to_string(),
            );
            lines.push('\n');
            datums.push(datum(
                i,
                Timestamp::from_millis(timestamp),
                values,
                resolution,
            ));
        }
        let body = Value::structure([
            ("Namespace", Value::string("Bench")),
            ("MetricData", Value::List(datums)),
        ]);
        inputs.push(body);
        vm.push(Bytes::from(lines));
    }
    (inputs, vm)
}

/// PutMetricAlarm input of alarm `i`: the Average of series `i % series`
/// over 3 one-minute periods, 2 to alarm, at a threshold that differs from
/// alarm to alarm (so states differ too).
pub(crate) fn alarm_input(i: usize, series: usize) -> Value {
    let s = i % series.max(1);
    let (metric, host) = series_name(s);
    let threshold = match s % 5 {
        0 => 20.0 + (i % 60) as f64,
        1 => 4e9,
        2 => 1e7,
        3 => 200.0,
        _ => 2.0,
    };
    Value::structure([
        ("AlarmName", Value::String(format!("alarm-{i:06}"))),
        ("Namespace", Value::string("Bench")),
        ("MetricName", Value::string(metric)),
        (
            "Dimensions",
            Value::List(vec![Value::structure([
                ("Name", Value::string("Host")),
                ("Value", Value::String(host)),
            ])]),
        ),
        ("Statistic", Value::string("Average")),
        ("Period", Value::Int(60)),
        ("EvaluationPeriods", Value::Int(3)),
        ("DatapointsToAlarm", Value::Int(2)),
        ("Threshold", Value::Float(threshold)),
        ("ComparisonOperator", Value::string("GreaterThanThreshold")),
    ])
}

/// GetMetricData (CBOR) for the first `series` series, `Average` at `period`
/// over `[start, end)`, with an optional NextToken.
pub(crate) fn get_data_body(
    series: usize,
    start: Timestamp,
    end: Timestamp,
    period: i64,
    next_token: Option<&str>,
) -> Bytes {
    let queries = (0..series)
        .map(|i| {
            let (metric, host) = series_name(i);
            Value::structure([
                ("Id", Value::String(format!("m{i}"))),
                (
                    "MetricStat",
                    Value::structure([
                        (
                            "Metric",
                            Value::structure([
                                ("Namespace", Value::string("Bench")),
                                ("MetricName", Value::string(metric)),
                                (
                                    "Dimensions",
                                    Value::List(vec![Value::structure([
                                        ("Name", Value::string("Host")),
                                        ("Value", Value::String(host)),
                                    ])]),
                                ),
                            ]),
                        ),
                        ("Period", Value::Int(period)),
                        ("Stat", Value::string("Average")),
                    ]),
                ),
            ])
        })
        .collect();
    let mut members = vec![
        ("MetricDataQueries".to_owned(), Value::List(queries)),
        ("StartTime".to_owned(), Value::Timestamp(start)),
        ("EndTime".to_owned(), Value::Timestamp(end)),
        ("MaxDatapoints".to_owned(), Value::Int(100_800)),
    ];
    if let Some(token) = next_token {
        members.push(("NextToken".to_owned(), Value::string(token)));
    }
    Bytes::from(trailwatch_protocol::cbor::encode(&Value::Struct(members)))
}

/// The NextToken of a CBOR GetMetricData answer, and its number of values.
pub(crate) fn next_token(answer: &[u8]) -> (Option<String>, usize) {
    let Ok(v) = trailwatch_protocol::cbor::decode(answer) else {
        return (None, 0);
    };
    let values = v
        .get("MetricDataResults")
        .and_then(Value::as_list)
        .map_or(0, |results| {
            results
                .iter()
                .map(|r| {
                    r.get("Values")
                        .and_then(Value::as_list)
                        .map_or(0, <[Value]>::len)
                })
                .sum()
        });
    (
        v.get("NextToken")
            .and_then(Value::as_str)
            .map(str::to_owned),
        values,
    )
}

/// A VictoriaMetrics selector for the same first `series` series.
pub(crate) fn vm_selector(series: usize) -> String {
    let hosts = series.div_ceil(METRICS.len());
    let names: Vec<String> = (0..hosts).map(|h| format!("host-{h:04}")).collect();
    format!("{{Host=~\"{}\"}}", names.join("|"))
}

/// An input in the query protocol: `Action`, `Version`, then every member as
/// `Name`, `Name.member.N`, `Name.Member` (for peers that speak only query).
pub(crate) fn query_body(action: &str, input: &Value) -> Bytes {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
        match v {
            Value::Struct(members) | Value::Map(members) => {
                for (k, v) in members {
                    let name = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&name, v, out);
                }
            }
            Value::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(&format!("{prefix}.member.{}", i + 1), item, out);
                }
            }
            Value::Float(f) => out.push((prefix.to_owned(), format!("{f}"))),
            Value::Int(i) => out.push((prefix.to_owned(), i.to_string())),
            Value::String(s) => out.push((prefix.to_owned(), s.clone())),
            Value::Timestamp(t) => out.push((prefix.to_owned(), t.to_iso8601())),
            Value::Bool(b) => out.push((prefix.to_owned(), b.to_string())),
            Value::Null | Value::Blob(_) => {}
        }
    }
    let mut fields = vec![
        ("Action".to_owned(), action.to_owned()),
        ("Version".to_owned(), "2010-08-01".to_owned()),
    ];
    walk("", input, &mut fields);
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}={}", crate::percent_encode(k), crate::percent_encode(v)))
        .collect();
    Bytes::from(body.join("&"))
}
