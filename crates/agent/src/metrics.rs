//! Host metrics: each plugin of `metrics_collected` is collected on its own
//! interval ([`crate::host`]), named and dimensioned as the CloudWatch agent
//! does, and published with PutMetricData in the configured namespace.
//!
//! Names are `<plugin>_<field>` (or the measurement's `rename`); dimensions
//! are `host` (left out with `omit_hostname`, or when `append_dimensions`
//! is set, as the CloudWatch agent's EC2 tagger does), the plugin's tags
//! (`cpu`, `path`/`device`/`fstype`, `name`, `interface`) and the appended
//! ones; each `aggregation_dimensions` set adds a copy with just those
//! dimensions. Intervals under a minute publish high-resolution metrics.
//! While the endpoint is unreachable, data waits in memory (bounded) and is
//! sent in order once it answers again.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use aws_sdk_cloudwatch::error::ProvideErrorMetadata as _;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};

use crate::config::{MetricsConfig, PluginConfig};
use crate::host::{Collector, Field, Roots};

/// Data points kept while the endpoint is unreachable (the oldest go first).
const MAX_QUEUED: usize = 100_000;
/// PutMetricData's limit of data points per request.
const PER_REQUEST: usize = 1000;

/// One data point, before it becomes the SDK's type.
#[derive(Debug, Clone, PartialEq)]
pub struct Datum {
    /// Metric name.
    pub name: String,
    /// CloudWatch unit.
    pub unit: String,
    /// The value.
    pub value: f64,
    /// Dimensions by name.
    pub dimensions: BTreeMap<String, String>,
    /// Epoch milliseconds of the collection.
    pub timestamp_ms: i64,
    /// 1 for high resolution, 60 otherwise.
    pub storage_resolution: i32,
}

/// What every data point of the host shares.
#[derive(Debug, Clone)]
pub struct Shape {
    /// The `host` dimension's value, unless it is left out.
    pub host: Option<String>,
    /// `metrics.append_dimensions` (resolved).
    pub append: BTreeMap<String, String>,
    /// `metrics.aggregation_dimensions`.
    pub aggregation: Vec<Vec<String>>,
}

/// The data points of one plugin's collection.
pub fn datums(plugin: &PluginConfig, fields: &[Field], shape: &Shape, now_ms: i64) -> Vec<Datum> {
    let resolution = if plugin.interval_secs < 60 { 1 } else { 60 };
    let mut out: Vec<Datum> = Vec::new();
    // Appended dimensions win over the plugin's tags; the plugin's own
    // append_dimensions win over the section's.
    let appended: Vec<(&String, &String)> = shape
        .append
        .iter()
        .chain(&plugin.append_dimensions)
        .collect();
    for m in &plugin.measurements {
        for f in fields.iter().filter(|f| f.name == m.field) {
            let mut dimensions = BTreeMap::new();
            if let Some(h) = &shape.host {
                dimensions.insert("host".to_owned(), h.clone());
            }
            for (k, v) in &f.tags {
                dimensions.insert(k.clone(), v.clone());
            }
            dimensions.extend(appended.iter().map(|&(k, v)| (k.clone(), v.clone())));
            let base = Datum {
                name: m.metric_name.clone(),
                unit: m.unit.clone().unwrap_or_else(|| f.unit.to_owned()),
                value: f.value,
                dimensions,
                timestamp_ms: now_ms,
                storage_resolution: resolution,
            };
            for set in &shape.aggregation {
                if set.len() < base.dimensions.len()
                    && set.iter().all(|d| base.dimensions.contains_key(d))
                {
                    let mut rolled = base.clone();
                    rolled.dimensions.retain(|k, _| set.contains(k));
                    if !out.contains(&rolled) {
                        out.push(rolled);
                    }
                }
            }
            out.push(base);
        }
    }
    out
}

fn sdk_datum(d: &Datum) -> MetricDatum {
    let dims: Vec<Dimension> = d
        .dimensions
        .iter()
        .map(|(k, v)| Dimension::builder().name(k).value(v).build())
        .collect();
    MetricDatum::builder()
        .metric_name(&d.name)
        .unit(StandardUnit::from(d.unit.as_str()))
        .value(d.value)
        .set_dimensions(Some(dims))
        .timestamp(DateTime::from_millis(d.timestamp_ms))
        .storage_resolution(d.storage_resolution)
        .build()
}

/// Collects and publishes until `stop` turns true.
pub async fn run(
    config: MetricsConfig,
    shape: Shape,
    client: aws_sdk_cloudwatch::Client,
    roots: Roots,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut collector = Collector::new(roots);
    // Rates and deltas need a first sample: taken now, so the first interval
    // already has complete values.
    let plugins = &config.plugins;
    for p in plugins {
        let _ = collector.collect(p.plugin, &p.options);
    }
    let start = tokio::time::Instant::now();
    let mut due: Vec<tokio::time::Instant> = plugins
        .iter()
        .map(|p| start + Duration::from_secs(p.interval_secs))
        .collect();
    let mut queue: VecDeque<Datum> = VecDeque::new();
    let mut backoff = Duration::from_secs(1);
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        let next = due
            .iter()
            .min()
            .copied()
            .unwrap_or(start + Duration::from_secs(60));
        let wake = match retry_at {
            Some(r) if !queue.is_empty() => r.min(next),
            _ => next,
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        let now = tokio::time::Instant::now();
        let now_ms = crate::logs::now_ms();
        for (i, cfg) in plugins.iter().enumerate() {
            if due[i] > now {
                continue;
            }
            while due[i] <= now {
                due[i] += Duration::from_secs(cfg.interval_secs);
            }
            match collector.collect(cfg.plugin, &cfg.options) {
                Ok(fields) => queue.extend(datums(cfg, &fields, &shape, now_ms)),
                Err(e) => {
                    tracing::warn!(plugin = cfg.plugin.name(), error = %e, "metrics not collected")
                }
            }
        }
        if queue.len() > MAX_QUEUED {
            let dropped = queue.len() - MAX_QUEUED;
            queue.drain(..dropped);
            tracing::warn!(
                dropped,
                "metric data dropped: the endpoint has been unreachable too long"
            );
        }
        if retry_at.is_some_and(|r| r > now) {
            continue;
        }
        retry_at = None;
        while !queue.is_empty() {
            let n = queue.len().min(PER_REQUEST);
            let chunk: Vec<MetricDatum> = queue.iter().take(n).map(sdk_datum).collect();
            let sent = client
                .put_metric_data()
                .namespace(&config.namespace)
                .set_metric_data(Some(chunk))
                .send()
                .await;
            match sent {
                Ok(_) => {
                    queue.drain(..n);
                    backoff = Duration::from_secs(1);
                }
                Err(e)
                    if e.code() == Some("InvalidParameterValue")
                        || e.code() == Some("InvalidParameterCombination") =>
                {
                    tracing::error!(error = %aws_sdk_cloudwatch::error::DisplayErrorContext(&e), "metric data refused; dropped");
                    queue.drain(..n);
                }
                Err(e) => {
                    tracing::warn!(error = %aws_sdk_cloudwatch::error::DisplayErrorContext(&e), retry_in_s = backoff.as_secs(), "metric data not delivered; retrying");
                    retry_at = Some(tokio::time::Instant::now() + backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Measurement;
    use crate::host::{Options, Plugin};

    fn plugin(measurements: &[(&str, Option<&str>)]) -> PluginConfig {
        PluginConfig {
            plugin: Plugin::Cpu,
            measurements: measurements
                .iter()
                .map(|(f, rename)| Measurement {
                    field: (*f).to_owned(),
                    metric_name: rename.map_or(format!("cpu_{f}"), str::to_owned),
                    unit: None,
                })
                .collect(),
            interval_secs: 10,
            options: Options::default(),
            append_dimensions: [("Tier".to_owned(), "web".to_owned())].into(),
        }
    }

    #[test]
    fn names_dimensions_and_rollups() {
        let fields = vec![
            Field {
                name: "usage_idle",
                value: 90.0,
                unit: "Percent",
                tags: vec![("cpu".into(), "cpu-total".into())],
            },
            Field {
                name: "usage_user",
                value: 7.0,
                unit: "Percent",
                tags: vec![("cpu".into(), "cpu-total".into())],
            },
        ];
        let shape = Shape {
            host: Some("web-1".into()),
            append: BTreeMap::new(),
            aggregation: vec![vec!["Tier".into()], vec![]],
        };
        let out = datums(&plugin(&[("usage_idle", Some("IDLE"))]), &fields, &shape, 5);
        let summary: Vec<(String, Vec<String>)> = out
            .iter()
            .map(|d| (d.name.clone(), d.dimensions.keys().cloned().collect()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("IDLE".to_owned(), vec!["Tier".to_owned()]),
                ("IDLE".to_owned(), vec![]),
                (
                    "IDLE".to_owned(),
                    vec!["Tier".to_owned(), "cpu".to_owned(), "host".to_owned()]
                ),
            ]
        );
        assert!(out
            .iter()
            .all(|d| d.value == 90.0 && d.storage_resolution == 1 && d.unit == "Percent"));
        let sdk = sdk_datum(&out[2]);
        assert_eq!(sdk.metric_name(), Some("IDLE"));
        assert_eq!(sdk.unit(), Some(&StandardUnit::Percent));
    }
}
