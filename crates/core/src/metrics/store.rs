//! The metric store: validated datums become durable through the metrics WAL
//! before PutMetricData answers, and are kept per (account, region) series.
//!
//! # WAL payload (version 1)
//! `u8 version=1 | JSON {"a": account, "r": region, "t": received ms, "d": [datum, …]}`.
//!
//! # Invariants
//! - A put is visible (ListMetrics) only after its WAL append returned.
//! - Recovery replays the whole metrics WAL; datums are never partially applied
//!   (one WAL record per request).
//! - Today every datum stays in memory and in the WAL; rollup tiers and segments
//!   come with GetMetricStatistics (issue #3).

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use trailwatch_storage::{Wal, WalOptions};
use trailwatch_types::{Clock, Timestamp};

use super::model::{Dimension, MetricId, MetricsError, Point, ValidatedDatum};
use crate::token::{filters_hash, TokenCodec};

const PAYLOAD_VERSION: u8 = 1;
/// Metrics without data for this long leave ListMetrics (§3.5).
const LISTED_FOR_MS: i64 = 14 * 86_400_000;
/// ListMetrics page size.
const PAGE_SIZE: usize = 500;

#[derive(Serialize, Deserialize)]
struct Entry {
    a: String,
    r: String,
    t: i64,
    d: Vec<ValidatedDatum>,
}

/// Sort key of a metric in ListMetrics: namespace, name, canonical dimensions.
type ListKey = (String, String, String);

fn canonical_dimensions(dimensions: &[Dimension]) -> String {
    dimensions
        .iter()
        .map(|d| format!("{}={}", d.name, d.value))
        .collect::<Vec<_>>()
        .join(",")
}

struct Series {
    metric: MetricId,
    /// Server receive time of the latest datum.
    last_received: Timestamp,
    /// Every point, in arrival order.
    points: Vec<Point>,
}

#[derive(Default)]
struct Metrics {
    by_region: HashMap<(String, String), BTreeMap<ListKey, Series>>,
}

impl Metrics {
    fn apply(&mut self, entry: Entry) {
        let received = Timestamp::from_millis(entry.t);
        let series = self.by_region.entry((entry.a, entry.r)).or_default();
        for datum in entry.d {
            let key = (
                datum.metric.namespace.clone(),
                datum.metric.name.clone(),
                canonical_dimensions(&datum.metric.dimensions),
            );
            let s = series.entry(key).or_insert_with(|| Series {
                metric: datum.metric.clone(),
                last_received: received,
                points: Vec::new(),
            });
            s.last_received = s.last_received.max(received);
            let ValidatedDatum {
                timestamp,
                unit,
                sample,
                ..
            } = datum;
            s.points.push(Point {
                timestamp,
                unit,
                sample,
            });
        }
    }
}

/// A ListMetrics request.
#[derive(Debug, Clone, Default)]
pub struct ListMetricsQuery {
    /// Caller's account.
    pub account_id: String,
    /// Region of the request.
    pub region: String,
    /// Exact namespace.
    pub namespace: Option<String>,
    /// Exact metric name.
    pub metric_name: Option<String>,
    /// Subset filters: the name must exist; the value, when given, must match.
    pub dimensions: Vec<(String, Option<String>)>,
    /// `RecentlyActive=PT3H`.
    pub recently_active: bool,
    /// Token of the previous page.
    pub next_token: Option<String>,
}

/// One page of ListMetrics.
#[derive(Debug, Clone)]
pub struct ListMetricsPage {
    /// Metrics, dimensions sorted by name.
    pub metrics: Vec<MetricId>,
    /// Present iff more metrics exist.
    pub next_token: Option<String>,
}

/// Durable metric data.
pub struct MetricStore {
    wal: Wal,
    metrics: RwLock<Metrics>,
    clock: Arc<dyn Clock>,
    tokens: TokenCodec,
}

impl std::fmt::Debug for MetricStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricStore").finish_non_exhaustive()
    }
}

impl MetricStore {
    /// Opens the store in `dir`, replaying its WAL.
    pub fn open(
        dir: &Path,
        clock: Arc<dyn Clock>,
        tokens: TokenCodec,
        wal: WalOptions,
    ) -> Result<Self, MetricsError> {
        let storage = |e: trailwatch_storage::WalError| MetricsError::Storage(e.to_string());
        let (wal, recovery) = Wal::open(&dir.join("wal"), wal).map_err(storage)?;
        if let Some(torn) = &recovery.torn_tail {
            tracing::warn!(file = %torn.file.display(), offset = torn.offset, bytes_dropped = torn.bytes_dropped, "recovered metrics log with a torn tail cut");
        }
        let mut metrics = Metrics::default();
        for (seq, payload) in &recovery.records {
            let entry = decode(payload)
                .map_err(|m| MetricsError::Storage(format!("metrics log record {seq}: {m}")))?;
            metrics.apply(entry);
        }
        tracing::info!(records = recovery.records.len(), "metrics log recovered");
        Ok(Self {
            wal,
            metrics: RwLock::new(metrics),
            clock,
            tokens,
        })
    }

    /// Makes `datums` durable (one WAL record), then visible.
    pub async fn put(
        &self,
        account: &str,
        region: &str,
        datums: Vec<ValidatedDatum>,
    ) -> Result<(), MetricsError> {
        let entry = Entry {
            a: account.to_owned(),
            r: region.to_owned(),
            t: self.clock.now().millis(),
            d: datums,
        };
        let mut payload = vec![PAYLOAD_VERSION];
        serde_json::to_writer(&mut payload, &entry)
            .map_err(|e| MetricsError::Storage(e.to_string()))?;
        self.wal
            .append(payload)
            .await
            .map_err(|e| MetricsError::Storage(e.to_string()))?;
        self.metrics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .apply(entry);
        Ok(())
    }

    /// Flushes and closes the WAL.
    pub async fn shutdown(&self) -> Result<(), MetricsError> {
        self.wal
            .shutdown()
            .await
            .map_err(|e| MetricsError::Storage(e.to_string()))
    }

    /// Every stored point of `metric`.
    pub fn points(&self, account: &str, region: &str, metric: &MetricId) -> Vec<Point> {
        let metrics = self.metrics.read().unwrap_or_else(|p| p.into_inner());
        let key = (
            metric.namespace.clone(),
            metric.name.clone(),
            canonical_dimensions(&metric.dimensions),
        );
        metrics
            .by_region
            .get(&(account.to_owned(), region.to_owned()))
            .and_then(|m| m.get(&key))
            .map(|s| s.points.clone())
            .unwrap_or_default()
    }

    /// GetMetricData for a validated plan, one page at a time.
    pub fn get_data(
        &self,
        account: &str,
        region: &str,
        plan: &super::data::DataPlan,
        next_token: Option<&str>,
    ) -> Result<(Vec<super::data::DataResult>, Option<String>), MetricsError> {
        let now = self.clock.now();
        let filters = filters_hash(&[account, region, "GetMetricData", &plan.fingerprint]);
        let cursor = match next_token {
            Some(token) => Some(
                self.tokens
                    .open::<super::data::Cursor>(token, &filters, now, 24 * 3600)
                    .ok_or_else(|| {
                        MetricsError::InvalidNextToken(
                            "The service cannot parse the NextToken.".to_owned(),
                        )
                    })?,
            ),
            None => None,
        };
        let listed = || self.recent_metrics(account, region);
        let (results, next) = super::data::execute(
            plan,
            now,
            cursor,
            |metric| self.points(account, region, metric),
            listed,
        )?;
        Ok((results, next.map(|c| self.tokens.issue(&filters, &c, now))))
    }

    /// Every metric of (account, region) with data in the last two weeks, in
    /// ListMetrics order (what SEARCH searches, §6.6).
    pub fn recent_metrics(&self, account: &str, region: &str) -> Vec<MetricId> {
        let oldest = self.clock.now().millis() - LISTED_FOR_MS;
        let metrics = self.metrics.read().unwrap_or_else(|p| p.into_inner());
        metrics
            .by_region
            .get(&(account.to_owned(), region.to_owned()))
            .map(|all| {
                all.values()
                    .filter(|s| s.last_received.millis() >= oldest)
                    .map(|s| s.metric.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// ListMetrics (§3.5).
    pub fn list(&self, q: &ListMetricsQuery) -> Result<ListMetricsPage, MetricsError> {
        if q.dimensions.len() > 10 {
            return Err(MetricsError::InvalidParameterValue(
                "The collection Dimensions must not have a size greater than 10.".to_owned(),
            ));
        }
        let now = self.clock.now();
        let filters = filters_hash(&[
            &q.account_id,
            &q.region,
            q.namespace.as_deref().unwrap_or("\u{0}"),
            q.metric_name.as_deref().unwrap_or("\u{0}"),
            &format!("{:?}", q.dimensions),
            if q.recently_active { "PT3H" } else { "" },
        ]);
        let cursor: Option<ListKey> = match &q.next_token {
            Some(token) => Some(
                self.tokens
                    .open(token, &filters, now, 24 * 3600)
                    .ok_or_else(|| {
                        MetricsError::InvalidParameterValue(
                            "Request parameter NextToken is invalid".to_owned(),
                        )
                    })?,
            ),
            None => None,
        };
        let oldest = if q.recently_active {
            now.millis() - 3 * 3_600_000
        } else {
            now.millis() - LISTED_FOR_MS
        };
        let metrics = self.metrics.read().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        let mut last_key = None;
        let mut more = false;
        if let Some(all) = metrics
            .by_region
            .get(&(q.account_id.clone(), q.region.clone()))
        {
            let lower = match &cursor {
                Some(c) => Bound::Excluded(c.clone()),
                None => Bound::Unbounded,
            };
            for (key, series) in all.range((lower, Bound::Unbounded)) {
                let m = &series.metric;
                let visible = series.last_received.millis() >= oldest
                    && q.namespace.as_ref().is_none_or(|n| *n == m.namespace)
                    && q.metric_name.as_ref().is_none_or(|n| *n == m.name)
                    && q.dimensions.iter().all(|(name, value)| {
                        m.dimensions.iter().any(|d| {
                            d.name == *name && value.as_ref().is_none_or(|v| *v == d.value)
                        })
                    });
                if !visible {
                    continue;
                }
                if out.len() == PAGE_SIZE {
                    more = true;
                    break;
                }
                out.push(m.clone());
                last_key = Some(key.clone());
            }
        }
        let next_token = match (more, last_key) {
            (true, Some(key)) => Some(self.tokens.issue(&filters, &key, now)),
            _ => None,
        };
        Ok(ListMetricsPage {
            metrics: out,
            next_token,
        })
    }
}

fn decode(payload: &[u8]) -> Result<Entry, String> {
    match payload.split_first() {
        Some((&PAYLOAD_VERSION, body)) => serde_json::from_slice(body).map_err(|e| e.to_string()),
        Some((v, _)) => Err(format!("unknown payload version {v}")),
        None => Err("empty payload".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::model::{validate_put, DatumInput, PutRequest};
    use trailwatch_types::ManualClock;

    fn put_request(name: &str, dims: &[(&str, &str)], value: f64) -> PutRequest {
        PutRequest {
            namespace: Some("App".into()),
            metric_data: vec![DatumInput {
                metric_name: Some(name.into()),
                dimensions: dims
                    .iter()
                    .map(|(k, v)| (Some(k.to_string()), Some(v.to_string())))
                    .collect(),
                value: Some(value),
                ..DatumInput::default()
            }],
            entity_metric_data: vec![],
        }
    }

    fn query() -> ListMetricsQuery {
        ListMetricsQuery {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn list_filters_order_pages_and_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(Timestamp::from_secs(1_767_225_600)));
        let open = || {
            MetricStore::open(
                dir.path(),
                clock.clone(),
                TokenCodec::new(b"k".to_vec()),
                WalOptions::default(),
            )
            .unwrap()
        };
        let store = open();
        let now = clock.now();
        for (name, dims) in [
            ("Latency", vec![("Svc", "a")]),
            ("Latency", vec![("Svc", "b"), ("Region", "x")]),
            ("Errors", vec![]),
        ] {
            let datums = validate_put(&put_request(name, &dims, 1.0), now).unwrap();
            store
                .put("123456789012", "us-east-1", datums)
                .await
                .unwrap();
        }
        // The same identity again, dimensions in another order: still one metric.
        let datums = validate_put(
            &put_request("Latency", &[("Region", "x"), ("Svc", "b")], 2.0),
            now,
        )
        .unwrap();
        store
            .put("123456789012", "us-east-1", datums)
            .await
            .unwrap();
        store.shutdown().await.unwrap();
        drop(store);
        let store = open();
        let names = |page: ListMetricsPage| -> Vec<String> {
            page.metrics
                .iter()
                .map(|m| format!("{}:{}", m.name, canonical_dimensions(&m.dimensions)))
                .collect()
        };
        assert_eq!(
            names(store.list(&query()).unwrap()),
            ["Errors:", "Latency:Region=x,Svc=b", "Latency:Svc=a"]
        );
        let svc = ListMetricsQuery {
            dimensions: vec![("Svc".into(), None)],
            ..query()
        };
        assert_eq!(names(store.list(&svc).unwrap()).len(), 2);
        let svc_b = ListMetricsQuery {
            dimensions: vec![("Svc".into(), Some("b".into()))],
            ..query()
        };
        assert_eq!(
            names(store.list(&svc_b).unwrap()),
            ["Latency:Region=x,Svc=b"]
        );
        let lower = ListMetricsQuery {
            metric_name: Some("latency".into()),
            ..query()
        };
        assert!(store.list(&lower).unwrap().metrics.is_empty());
        let other = ListMetricsQuery {
            region: "eu-west-1".into(),
            ..query()
        };
        assert!(store.list(&other).unwrap().metrics.is_empty());
        let metric = store.list(&svc_b).unwrap().metrics.remove(0);
        assert_eq!(store.points("123456789012", "us-east-1", &metric).len(), 2);
        // RecentlyActive and the two-week window.
        clock.advance_millis(4 * 3_600_000);
        assert!(store
            .list(&ListMetricsQuery {
                recently_active: true,
                ..query()
            })
            .unwrap()
            .metrics
            .is_empty());
        assert_eq!(store.list(&query()).unwrap().metrics.len(), 3);
        clock.advance_millis(LISTED_FOR_MS);
        assert!(store.list(&query()).unwrap().metrics.is_empty());
        assert!(matches!(
            store.list(&ListMetricsQuery {
                next_token: Some("bogus".into()),
                ..query()
            }),
            Err(MetricsError::InvalidParameterValue(_))
        ));
    }

    #[tokio::test]
    async fn pages_of_500() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(Timestamp::from_secs(1_767_225_600)));
        let store = MetricStore::open(
            dir.path(),
            clock.clone(),
            TokenCodec::new(b"k".to_vec()),
            WalOptions::default(),
        )
        .unwrap();
        for chunk in 0..2 {
            let request = PutRequest {
                namespace: Some("App".into()),
                metric_data: (0..600)
                    .map(|i| DatumInput {
                        metric_name: Some(format!("m{:04}", chunk * 600 + i)),
                        value: Some(1.0),
                        ..DatumInput::default()
                    })
                    .take(if chunk == 0 { 600 } else { 100 })
                    .collect(),
                entity_metric_data: vec![],
            };
            store
                .put(
                    "123456789012",
                    "us-east-1",
                    validate_put(&request, clock.now()).unwrap(),
                )
                .await
                .unwrap();
        }
        let first = store.list(&query()).unwrap();
        assert_eq!(first.metrics.len(), 500);
        let second = store
            .list(&ListMetricsQuery {
                next_token: first.next_token.clone(),
                ..query()
            })
            .unwrap();
        assert_eq!(second.metrics.len(), 200);
        assert!(second.next_token.is_none());
        assert_eq!(second.metrics[0].name, "m0500");
    }
}
