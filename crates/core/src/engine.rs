//! The alarm evaluation engine (`spec/cloudwatch.md` §7.2–7.5): when each
//! alarm is evaluated, what it reads from the metric store, and the state it
//! decides.
//!
//! - Cadences: alarms with a period under a minute are evaluated every 10
//!   seconds, alarms looking back more than a day every hour, the others
//!   every minute ([`cadence_ms`]). An evaluation instant `T` is a multiple of
//!   its cadence; bucket k (k = 1 newest) is `[T − kP, T − (k−1)P)`.
//! - Progress: the last instant of each cadence whose evaluations are
//!   committed is the cadence's watermark (table `alarm_engine`, key
//!   `watermark/{cadence_ms:08}`, JSON `{"v":1,"t":ms}`). It commits in the
//!   same catalog batch as the states that evaluation wrote, so after a
//!   crash the instant is evaluated again from the start, or not at all:
//!   never skipped, never twice. Instants missed while the server was down are
//!   caught up in order, up to [`CATCH_UP_INSTANTS`] per cadence.
//! - An alarm created or updated after `T` is not evaluated at `T`: its Put
//!   already evaluated it.
//!
//! Everything here is a function of the alarms, the metric store and an
//! instant; the server owns the loop, the lock and the commit, so tests drive
//! the engine with a paused clock.

use serde::{Deserialize, Serialize};
use trailwatch_storage::{Catalog, CatalogOp};
use trailwatch_types::Timestamp;

use crate::alarms::{AlarmConfig, EvaluationWindow, MetricAlarm, StateWrite};
use crate::detectors::{band_training, Detectors};
use crate::evaluation::{
    band_reason, decide, reason, reason_data, too_few_samples, Bucket, Comparison, Decision, Point,
    ReasonContext, Rule, State, TreatMissing,
};
use crate::metrics::data::{
    self, timezone_offset_ms, DataQueryInput, DataRequest, MetricStatInput,
};
use crate::metrics::get::{majority_unit, StatisticsQuery};
use crate::metrics::model::{MetricId, Unit};
use crate::metrics::stats::{parse_extended, Extended};
use crate::metrics::MetricStore;

/// Cadence of high-resolution alarms (period 10, 20 or 30 s).
pub const HIGH_RES_MS: i64 = 10_000;
/// Cadence of alarms with a period of a minute or more.
pub const MINUTE_MS: i64 = 60_000;
/// Cadence of alarms whose `Period × EvaluationPeriods` exceeds a day.
pub const HOUR_MS: i64 = 3_600_000;
/// Every cadence, finest first.
pub const CADENCES: [i64; 3] = [HIGH_RES_MS, MINUTE_MS, HOUR_MS];
/// Instants a cadence catches up after a stop; older ones are skipped (and
/// logged): one hour of minute evaluations, ten minutes of 10-second ones.
pub const CATCH_UP_INSTANTS: usize = 60;

const TABLE: &str = "alarm_engine";

/// `EvaluationState` of an alarm whose data could not be computed.
pub const EVALUATION_ERROR: &str = "EVALUATION_ERROR";
const IN_WARM_UP: &str = "IN_WARM_UP";

/// How often `config` is evaluated (§7.2).
pub fn cadence_ms(config: &AlarmConfig) -> i64 {
    let period = config.effective_period().unwrap_or(60);
    if period < 60 {
        HIGH_RES_MS
    } else if period * config.evaluation_periods > 86_400 {
        HOUR_MS
    } else {
        MINUTE_MS
    }
}

/// `t` floored to a multiple of `cadence`.
pub fn floor(t: i64, cadence: i64) -> i64 {
    t.div_euclid(cadence) * cadence
}

#[derive(Serialize, Deserialize)]
struct Watermark {
    v: u8,
    t: i64,
}

fn watermark_key(cadence: i64) -> String {
    format!("watermark/{cadence:08}")
}

/// The last committed instant of `cadence`, if any.
pub fn watermark(catalog: &dyn Catalog, cadence: i64) -> Result<Option<i64>, String> {
    match catalog
        .get(TABLE, &watermark_key(cadence))
        .map_err(|e| e.to_string())?
    {
        None => Ok(None),
        Some(bytes) => {
            let w: Watermark = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
            if w.v != 1 {
                return Err(format!("alarm engine watermark version {}", w.v));
            }
            Ok(Some(w.t))
        }
    }
}

/// The change that records `t` as the last committed instant of `cadence`.
pub fn watermark_change(cadence: i64, t: i64) -> CatalogOp {
    CatalogOp::put(
        TABLE,
        watermark_key(cadence),
        serde_json::to_vec(&Watermark { v: 1, t }).unwrap_or_default(),
    )
}

/// The instants of `cadence` to evaluate at `now`, oldest first, after the
/// watermark (none yet: only the current instant), and how many older ones
/// were skipped beyond [`CATCH_UP_INSTANTS`].
pub fn due_instants(watermark: Option<i64>, now: i64, cadence: i64) -> (Vec<i64>, u64) {
    let current = floor(now, cadence);
    let first = match watermark {
        None => current,
        Some(w) => floor(w, cadence) + cadence,
    };
    if first > current {
        return (Vec::new(), 0);
    }
    let count = ((current - first) / cadence + 1) as u64;
    let kept = count.min(CATCH_UP_INSTANTS as u64);
    let start = current - (kept as i64 - 1) * cadence;
    (
        (0..kept as i64).map(|i| start + i * cadence).collect(),
        count - kept,
    )
}

/// One bucket's reading: the alarm's value and its sample count, and the
/// band at that time for band alarms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// The statistic's (or ReturnData expression's) value.
    pub value: f64,
    /// Samples in the bucket (1 for expressions, which carry none).
    pub sample_count: f64,
    /// `(lower, upper)` of the anomaly band, for band alarms.
    pub band: Option<(f64, f64)>,
}

/// The buckets an evaluation reads, newest first (index 0 is bucket 1).
pub type Readings = Vec<Option<Reading>>;

fn rule_of(config: &AlarmConfig) -> Rule {
    let missing = if config.namespace.as_deref() == Some("AWS/DynamoDB") {
        // DynamoDB metrics always behave as `ignore` (§7.2).
        TreatMissing::Ignore
    } else {
        config
            .treat_missing_data
            .as_deref()
            .and_then(TreatMissing::parse)
            .unwrap_or(TreatMissing::Missing)
    };
    let periods = config.evaluation_periods.max(1) as usize;
    Rule {
        periods,
        to_alarm: (config.datapoints().max(1) as usize).min(periods),
        missing,
    }
}

/// Reads the buckets of `alarm` at instant `t` from `store`; band alarms
/// train with the settings of `detectors`.
pub fn read(
    store: &MetricStore,
    detectors: &Detectors,
    account: &str,
    region: &str,
    alarm: &MetricAlarm,
    t: i64,
    now: Timestamp,
) -> Result<Readings, String> {
    let c = &alarm.config;
    let rule = rule_of(c);
    let range = rule.range();
    let period = c.effective_period().unwrap_or(60).max(1);
    let period_ms = period * 1000;
    let t = window_end(c, t);
    let start = t - range as i64 * period_ms;
    let mut out: Readings = vec![None; range];
    let slot = |ts: i64| -> Option<usize> {
        let k = (t - ts) / period_ms;
        (ts >= start && ts < t && (t - ts) % period_ms == 0 && k >= 1)
            .then(|| (k - 1) as usize)
            .filter(|i| *i < range)
    };
    if c.metrics.is_empty() {
        let stat = c
            .extended_statistic
            .clone()
            .or_else(|| c.statistic.clone())
            .unwrap_or_default();
        let extended: Vec<(String, Extended)> = c
            .extended_statistic
            .iter()
            .filter_map(|s| parse_extended(s).map(|e| (s.clone(), e)))
            .collect();
        let mut statistics = vec!["SampleCount".to_owned()];
        if let Some(s) = &c.statistic {
            if s != "SampleCount" {
                statistics.push(s.clone());
            }
        }
        let query = StatisticsQuery {
            metric: MetricId::from_pairs(
                c.namespace.as_deref().unwrap_or_default(),
                c.metric_name.as_deref().unwrap_or_default(),
                &c.dimensions,
            ),
            // The sliding window is not rounded like a GetMetricStatistics
            // StartTime: bucket k ends at T − (k−1)P exactly.
            start: Timestamp::from_millis(start),
            end: Timestamp::from_millis(t),
            period,
            statistics,
            extended,
            unit: c.unit.as_deref().and_then(Unit::parse),
            empty: false,
        };
        let points = store
            .statistics(account, region, &query)
            .map_err(|e| e.to_string())?;
        // Several units without a Unit: as GetMetricData (§3.4).
        let (chosen, _) = majority_unit(&points);
        for p in points.iter().filter(|p| Some(p.unit) == chosen) {
            let (Some(value), Some(i)) = (p.value(&stat), slot(p.timestamp.millis())) else {
                continue;
            };
            out[i] = Some(Reading {
                value,
                sample_count: p.value("SampleCount").unwrap_or(0.0),
                band: None,
            });
        }
        return Ok(out);
    }
    let request = DataRequest {
        queries: c
            .metrics
            .iter()
            .map(|q| DataQueryInput {
                id: Some(q.id.clone()),
                metric_stat: q.metric_stat.as_ref().map(|s| MetricStatInput {
                    namespace: Some(s.namespace.clone()),
                    metric_name: Some(s.metric_name.clone()),
                    dimensions: s
                        .dimensions
                        .iter()
                        .map(|(n, v)| (Some(n.clone()), Some(v.clone())))
                        .collect(),
                    period: Some(s.period),
                    stat: Some(s.stat.clone()),
                    unit: s.unit.clone(),
                }),
                expression: q.expression.clone(),
                label: q.label.clone(),
                return_data: q.return_data,
                period: q.period,
            })
            .collect(),
        start: Some(Timestamp::from_millis(start)),
        end: Some(Timestamp::from_millis(t)),
        scan_by: Some("TimestampDescending".to_owned()),
        max_datapoints: None,
        label_timezone: None,
    };
    let mut plan = data::plan(&request, now).map_err(|e| e.to_string())?;
    if c.threshold_metric_id.is_some() {
        let listed = detectors.list(account, region).map_err(|e| e.to_string())?;
        plan = plan.with_band_training(band_training(&listed));
    }
    let scope = data::Scope {
        account_id: account,
        region,
    };
    let (results, _) = data::execute(
        &plan,
        scope,
        now,
        None,
        |q| store.statistics(account, region, q),
        || store.recent_metrics(account, region),
    )
    .map_err(|e| e.to_string())?;
    let band_id = c.threshold_metric_id.as_deref();
    let watched: Vec<_> = results
        .iter()
        .filter(|r| Some(r.id.as_str()) != band_id)
        .collect();
    // The band query answers two series (upper, lower): at each time the
    // smaller is the lower threshold.
    let mut band: std::collections::HashMap<i64, (f64, f64)> = Default::default();
    if band_id.is_some() {
        let edges: Vec<_> = results
            .iter()
            .filter(|r| Some(r.id.as_str()) == band_id)
            .collect();
        if let [a, b] = edges.as_slice() {
            let other: std::collections::HashMap<i64, f64> = b
                .timestamps
                .iter()
                .map(|t| t.millis())
                .zip(b.values.iter().copied())
                .collect();
            for (t, v) in a.timestamps.iter().zip(&a.values) {
                if let Some(w) = other.get(&t.millis()) {
                    band.insert(t.millis(), (v.min(*w), v.max(*w)));
                }
            }
        }
    }
    let [series] = watched.as_slice() else {
        return Err(format!(
            "the alarm's metrics returned {} time series where one is needed",
            watched.len()
        ));
    };
    for (ts, value) in series.timestamps.iter().zip(&series.values) {
        if let Some(i) = slot(ts.millis()) {
            out[i] = Some(Reading {
                value: *value,
                sample_count: 1.0,
                band: band.get(&ts.millis()).copied(),
            });
        }
    }
    Ok(out)
}

/// Where the newest bucket of an evaluation at `t` ends (§7.2): `t` for
/// the sliding window; with `EvaluationWindow.WallClockWindow`, the last
/// multiple of the period at or before `t` on the clock of its time zone.
pub fn window_end(config: &AlarmConfig, t: i64) -> i64 {
    match &config.evaluation_window {
        Some(EvaluationWindow::WallClock { timezone }) => {
            let period_ms = config.effective_period().unwrap_or(60).max(1) * 1000;
            let offset = timezone_offset_ms(timezone.as_deref(), t);
            floor(t + offset, period_ms) - offset
        }
        _ => t,
    }
}

/// The percentile of a `pNN` statistic, when it is one.
fn percentile(stat: &str) -> Option<f64> {
    stat.strip_prefix('p').and_then(|p| p.parse::<f64>().ok())
}

/// Classifies `readings` (newest first) against the alarm's threshold (§7.3),
/// bucket k starting at `t − k·P`.
pub fn classify(config: &AlarmConfig, readings: &[Option<Reading>], t: i64) -> Vec<Bucket> {
    let period_ms = config.effective_period().unwrap_or(60) * 1000;
    let comparison = Comparison::parse(&config.comparison_operator);
    readings
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let Some(r) = r else {
                return Bucket::Missing;
            };
            let point = Point {
                timestamp: t - (i as i64 + 1) * period_ms,
                value: r.value,
                sample_count: r.sample_count,
            };
            let breaching = match (comparison, config.threshold, r.band) {
                (Some(c), Some(threshold), _) => c.breaches(r.value, threshold),
                (None, _, Some((lo, hi))) => match config.comparison_operator.as_str() {
                    "GreaterThanUpperThreshold" => r.value > hi,
                    "LessThanLowerThreshold" => r.value < lo,
                    _ => r.value < lo || r.value > hi,
                },
                // A band operator without a band value: missing (§7.3).
                _ => return Bucket::Missing,
            };
            if breaching {
                Bucket::Breaching(point)
            } else {
                Bucket::Good(point)
            }
        })
        .collect()
}

/// What evaluating `alarm` at instant `t` over `readings` writes, at
/// `query_ms` (the time the evaluation ran); `None` when nothing changes.
pub fn evaluate(
    alarm: &MetricAlarm,
    readings: Result<Readings, String>,
    t: i64,
    query_ms: i64,
) -> Option<StateWrite> {
    let c = &alarm.config;
    if alarm.evaluation_state.as_deref() == Some(IN_WARM_UP) {
        let minutes = c.warm_up.as_ref().map_or(0, |w| w.minutes);
        if t < alarm.state_updated_ms + minutes * 60_000 {
            return None;
        }
    }
    let readings = match readings {
        Ok(r) => r,
        Err(message) => {
            tracing::debug!(alarm = %c.name, error = %message, "alarm evaluation failed");
            // The state stays; the evaluation state says why (§7.10).
            if alarm.evaluation_state.as_deref() == Some(EVALUATION_ERROR) {
                return None;
            }
            return Some(StateWrite {
                state: alarm.state_value.clone(),
                reason: alarm.state_reason.clone(),
                reason_data: alarm.state_reason_data.clone(),
                evaluation_state: Some(EVALUATION_ERROR.to_owned()),
            });
        }
    };
    let rule = rule_of(c);
    let buckets = classify(c, &readings, window_end(c, t));
    let current = State::parse(&alarm.state_value).unwrap_or(State::InsufficientData);
    let low_samples = c.evaluate_low_sample_count_percentile.as_deref() == Some("ignore")
        && c.extended_statistic
            .as_deref()
            .and_then(percentile)
            .is_some_and(|p| too_few_samples(&buckets, &rule, p));
    let decided = if low_samples {
        Decision::Keep
    } else {
        decide(&buckets, &rule)
    };
    let state = match decided {
        Decision::Set(s) => s,
        Decision::Keep => current,
    };
    if state == current {
        // The state persists: only a cleared evaluation state is written.
        alarm.evaluation_state.as_ref()?;
        return Some(StateWrite {
            state: alarm.state_value.clone(),
            reason: alarm.state_reason.clone(),
            reason_data: alarm.state_reason_data.clone(),
            evaluation_state: None,
        });
    }
    let threshold = c.threshold.unwrap_or(0.0);
    let text = match Comparison::parse(&c.comparison_operator) {
        Some(comparison) => reason(&buckets, &rule, comparison, threshold, current, state),
        None => band_reason(
            &buckets,
            &rule,
            &c.comparison_operator,
            &|i| readings.get(i).copied().flatten().and_then(|r| r.band),
            current,
            state,
        ),
    };
    let statistic = c.extended_statistic.as_deref().or(c.statistic.as_deref());
    let single = c.metrics.is_empty();
    let cx = ReasonContext {
        query_ms,
        statistic: if single { statistic } else { None },
        period: if single { c.period } else { None },
        unit: c.unit.as_deref(),
        threshold,
    };
    let data =
        (state != State::InsufficientData || single).then(|| reason_data(&buckets, &rule, &cx));
    Some(StateWrite {
        state: state.as_str().to_owned(),
        reason: text.chars().take(1023).collect(),
        reason_data: data.map(|d| d.chars().take(4000).collect()),
        evaluation_state: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_704_110_760_000; // 2024-01-01T12:06:00Z

    fn config(window: Option<EvaluationWindow>) -> AlarmConfig {
        AlarmConfig {
            period: Some(300),
            evaluation_periods: 3,
            evaluation_window: window,
            ..AlarmConfig::default()
        }
    }

    #[test]
    fn sliding_and_wall_clock_windows() {
        // §7.2: P = 300 evaluated at 12:06, the newest bucket is 12:01–12:06…
        assert_eq!(window_end(&config(None), T), T);
        // …aligned to the clock, it is 12:00–12:05.
        let wall = config(Some(EvaluationWindow::WallClock { timezone: None }));
        assert_eq!(window_end(&wall, T), T - 60_000);
        // India (+05:30): 17:36 local, the last 5-minute mark 17:35.
        let india = config(Some(EvaluationWindow::WallClock {
            timezone: Some("Asia/Kolkata".into()),
        }));
        assert_eq!(window_end(&india, T), T - 60_000);
        let nepal = config(Some(EvaluationWindow::WallClock {
            timezone: Some("Asia/Kathmandu".into()),
        }));
        // 12:06 UTC is 17:51 in Nepal; the last 5-minute mark is 17:50.
        assert_eq!(window_end(&nepal, T), T - 60_000);
    }

    #[test]
    fn instants_due_after_a_stop_are_capped() {
        let (due, skipped) = due_instants(Some(0), 100 * MINUTE_MS + 5, MINUTE_MS);
        assert_eq!(due.len(), CATCH_UP_INSTANTS);
        assert_eq!(skipped, 100 - CATCH_UP_INSTANTS as u64);
        assert_eq!(due.last(), Some(&(100 * MINUTE_MS)));
        assert_eq!(due_instants(None, 95_000, MINUTE_MS), (vec![60_000], 0));
        assert_eq!(due_instants(Some(60_000), 95_000, MINUTE_MS), (vec![], 0));
    }

    #[test]
    fn cadences() {
        let mut c = config(None);
        assert_eq!(cadence_ms(&c), MINUTE_MS);
        c.period = Some(10);
        assert_eq!(cadence_ms(&c), HIGH_RES_MS);
        c.period = Some(3600);
        c.evaluation_periods = 25;
        assert_eq!(cadence_ms(&c), HOUR_MS);
    }
}
