//! CloudTrail Insights (`spec/cloudtrail.md` §7): unusual call volume
//! (`ApiCallRateInsight`) and unusual error counts (`ApiErrorRateInsight`)
//! per API and minute, against a baseline of the minutes before.
//!
//! # Algorithm (trailwatch's own, stated in COMPATIBILITY.md)
//! - A series counts, per minute of `eventTime`, the calls of one
//!   (account, region, eventSource, eventName): write management calls (and
//!   data calls when a trail asks for Data) for the call rate; calls with an
//!   `errorCode`, read or write, per error code, for the error rate.
//! - The baseline of minute `m` is the mean μ and population deviation σ of
//!   the series over the `baseline / 60` whole hours before `m`'s hour and
//!   the minutes of that hour before `m`, missing minutes counting as zero.
//!   Closed hours keep only their sum and sum of squares, so μ and σ are
//!   exact without keeping every minute.
//! - An insight opens at minute `m` when count(m) > max(μ + 6σ, 3μ, 10) and
//!   the series is older than the warm-up (the baseline, at least 36 hours).
//!   It closes after 5 consecutive minutes below μ + 3σ (the baseline frozen
//!   at the start). Start and End records share `sharedEventID`.
//! - Attributions: the top 5 values of `userIdentityArn`, `userAgent` and
//!   (call rate) `errorCode` in the insight's minutes and in the baseline
//!   hours, by average per minute.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::json;

/// Minutes in the default baseline (7 days).
pub const BASELINE_MINUTES: i64 = 7 * 24 * 60;
/// Least warm-up, whatever the baseline (36 hours).
const MIN_WARMUP_MINUTES: i64 = 36 * 60;
/// Values kept per attribute and hour for attributions.
const MAX_VALUES: usize = 20;
/// Attribution values reported.
const TOP_VALUES: usize = 5;

/// Thresholds of the detector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Baseline length in minutes.
    pub baseline_minutes: i64,
    /// σ multiplier that opens an insight.
    pub open_sigma: f64,
    /// μ multiplier that opens an insight.
    pub open_factor: f64,
    /// Least count that opens an insight.
    pub open_min: f64,
    /// σ multiplier under which a minute counts towards closing.
    pub close_sigma: f64,
    /// Consecutive quiet minutes that close an insight.
    pub close_after: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            baseline_minutes: BASELINE_MINUTES,
            open_sigma: 6.0,
            open_factor: 3.0,
            open_min: 10.0,
            close_sigma: 3.0,
            close_after: 5,
        }
    }
}

impl Thresholds {
    fn warmup(&self) -> i64 {
        self.baseline_minutes.max(MIN_WARMUP_MINUTES)
    }
}

/// What one series counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeriesKey {
    /// Account.
    pub account: String,
    /// Region.
    pub region: String,
    /// `ApiCallRateInsight` or `ApiErrorRateInsight`.
    pub insight_type: String,
    /// `eventSource`.
    pub event_source: String,
    /// `eventName`.
    pub event_name: String,
    /// The error counted (error rate only).
    pub error_code: Option<String>,
}

/// Attribute → value → count; an absent value is [`ABSENT`].
type Values = BTreeMap<String, BTreeMap<String, u64>>;

/// Stands for an absent attribute value (no error code): JSON object keys
/// cannot be null, and no real value starts with a control character.
const ABSENT: &str = "\u{1}";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Hour {
    hour: i64,
    sum: f64,
    sumsq: f64,
    values: Values,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Minute {
    count: u64,
    values: Values,
}

/// An insight in progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Open {
    shared_event_id: String,
    start_minute: i64,
    baseline_mean: f64,
    baseline_sigma: f64,
    baseline_values: Values,
    baseline_minutes: i64,
    /// Minutes the baseline spanned (its hours and the minutes before the start).
    baseline_span: i64,
    first_count: u64,
    total: u64,
    minutes: i64,
    quiet: u32,
    values: Values,
}

/// The counts of one series.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Series {
    first_minute: Option<i64>,
    /// Closed hours, oldest first.
    hours: VecDeque<Hour>,
    /// Minutes not yet folded into hours.
    minutes: BTreeMap<i64, Minute>,
    /// Minutes before this one are evaluated.
    evaluated_to: Option<i64>,
    open: Option<Open>,
}

/// One call as Insights sees it.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// `eventTime`, epoch seconds.
    pub time_secs: i64,
    /// `userIdentity.arn`.
    pub user_arn: Option<&'a str>,
    /// `userAgent`.
    pub user_agent: Option<&'a str>,
    /// `errorCode`.
    pub error_code: Option<&'a str>,
}

fn bump(values: &mut Values, attribute: &str, value: Option<&str>, by: u64) {
    let entry = values.entry(attribute.to_owned()).or_default();
    let key = value.unwrap_or(ABSENT).to_owned();
    if entry.contains_key(&key) || entry.len() < MAX_VALUES {
        *entry.entry(key).or_default() += by;
    }
}

fn merge(into: &mut Values, from: &Values) {
    for (attribute, values) in from {
        for (value, count) in values {
            bump(into, attribute, Some(value.as_str()), *count);
        }
    }
}

impl Series {
    /// Counts one call.
    pub fn observe(&mut self, call: &Call<'_>) {
        let minute = call.time_secs.div_euclid(60);
        if self.evaluated_to.is_some_and(|e| minute < e) {
            // Too late for its minute (already evaluated): counted in the next one.
            return self.observe(&Call {
                time_secs: self.evaluated_to.unwrap_or(minute) * 60,
                ..call.clone()
            });
        }
        self.first_minute = Some(self.first_minute.map_or(minute, |f| f.min(minute)));
        let m = self.minutes.entry(minute).or_default();
        m.count += 1;
        bump(&mut m.values, "userIdentityArn", call.user_arn, 1);
        bump(&mut m.values, "userAgent", call.user_agent, 1);
        bump(&mut m.values, "errorCode", call.error_code, 1);
    }

    /// Mean and deviation of the baseline of `minute`: the `len / 60` whole
    /// hours before its hour, and the minutes of its hour before it; with the
    /// attribute counts of that span.
    fn baseline(&self, minute: i64, len: i64) -> (f64, f64, Values) {
        let hour = minute.div_euclid(60);
        let from_hour = hour - len / 60;
        let (mut sum, mut sumsq) = (0.0, 0.0);
        let mut values = Values::new();
        for h in &self.hours {
            if h.hour >= from_hour && h.hour < hour {
                sum += h.sum;
                sumsq += h.sumsq;
                merge(&mut values, &h.values);
            }
        }
        for (m, data) in self.minutes.range(from_hour * 60..minute) {
            // Minutes of hours not yet folded.
            if !self.hours.iter().any(|h| h.hour == m.div_euclid(60)) {
                let c = data.count as f64;
                sum += c;
                sumsq += c * c;
                merge(&mut values, &data.values);
            }
        }
        let n = (minute - from_hour * 60) as f64;
        let mean = sum / n;
        let variance = (sumsq / n - mean * mean).max(0.0);
        (mean, variance.sqrt(), values)
    }

    /// Folds minutes of hours that ended before `minute` into hour totals and
    /// drops what is older than the baseline.
    fn compact(&mut self, minute: i64, baseline: i64) {
        let current_hour = minute.div_euclid(60);
        let old: Vec<i64> = self
            .minutes
            .keys()
            .copied()
            .filter(|m| m.div_euclid(60) < current_hour)
            .collect();
        for m in old {
            if let Some(data) = self.minutes.remove(&m) {
                let hour = m.div_euclid(60);
                let pos = self.hours.iter().position(|h| h.hour == hour);
                let h = match pos {
                    Some(i) => &mut self.hours[i],
                    None => {
                        self.hours.push_back(Hour {
                            hour,
                            ..Hour::default()
                        });
                        self.hours.make_contiguous().sort_by_key(|h| h.hour);
                        let i = self.hours.iter().position(|h| h.hour == hour).unwrap_or(0);
                        &mut self.hours[i]
                    }
                };
                let c = data.count as f64;
                h.sum += c;
                h.sumsq += c * c;
                merge(&mut h.values, &data.values);
            }
        }
        while self
            .hours
            .front()
            .is_some_and(|h| h.hour * 60 + 60 <= minute - baseline - 60)
        {
            self.hours.pop_front();
        }
    }

    /// Whether nothing is left to remember.
    pub fn is_idle(&self) -> bool {
        self.open.is_none() && self.minutes.is_empty() && self.hours.is_empty()
    }

    /// Evaluates every minute before `until` (exclusive) not yet evaluated;
    /// returns the Start and End records to write.
    pub fn evaluate(&mut self, key: &SeriesKey, until: i64, t: &Thresholds) -> Vec<InsightEvent> {
        let mut out = Vec::new();
        let Some(first) = self.first_minute else {
            return out;
        };
        let mut minute = self.evaluated_to.unwrap_or(first).max(first);
        while minute < until {
            // Quiet stretches without an open insight cannot open one.
            if self.open.is_none() {
                match self.minutes.range(minute..until).next() {
                    Some((m, _)) => minute = *m,
                    None => {
                        minute = until;
                        break;
                    }
                }
            }
            let count = self.minutes.get(&minute).map_or(0, |m| m.count);
            if let Some(open) = self.open.as_mut() {
                open.minutes += 1;
                open.total += count;
                if let Some(m) = self.minutes.get(&minute) {
                    merge(&mut open.values, &m.values);
                }
                if (count as f64) < open.baseline_mean + t.close_sigma * open.baseline_sigma {
                    open.quiet += 1;
                } else {
                    open.quiet = 0;
                }
                if open.quiet >= t.close_after {
                    out.push(InsightEvent::end(key, open, minute + 1));
                    self.open = None;
                }
            } else if minute - first >= t.warmup() {
                let (mean, sigma, values) = self.baseline(minute, t.baseline_minutes);
                let c = count as f64;
                if c > (mean + t.open_sigma * sigma)
                    .max(mean * t.open_factor)
                    .max(t.open_min)
                {
                    let open = Open {
                        shared_event_id: uuid::Uuid::new_v4().to_string(),
                        start_minute: minute,
                        baseline_mean: mean,
                        baseline_sigma: sigma,
                        baseline_values: values,
                        baseline_minutes: t.baseline_minutes,
                        baseline_span: minute
                            - (minute.div_euclid(60) - t.baseline_minutes / 60) * 60,
                        first_count: count,
                        total: count,
                        minutes: 1,
                        quiet: 0,
                        values: self
                            .minutes
                            .get(&minute)
                            .map(|m| m.values.clone())
                            .unwrap_or_default(),
                    };
                    out.push(InsightEvent::start(key, &open));
                    self.open = Some(open);
                }
            }
            minute += 1;
            self.compact(minute, t.baseline_minutes);
        }
        self.evaluated_to = Some(until.max(minute));
        self.compact(until, t.baseline_minutes);
        out
    }
}

/// A Start or End record, ready for the audit store.
#[derive(Debug, Clone, PartialEq)]
pub struct InsightEvent {
    /// The §7.3 record, without `eventID` (given when written).
    pub record: serde_json::Value,
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

fn attributions(
    insight: &Values,
    insight_minutes: f64,
    baseline: &Values,
    baseline_minutes: f64,
    with_error_code: bool,
) -> serde_json::Value {
    let mut out = Vec::new();
    for attribute in ["userIdentityArn", "userAgent", "errorCode"] {
        if attribute == "errorCode" && !with_error_code {
            continue;
        }
        let top = |values: Option<&BTreeMap<String, u64>>, minutes: f64| {
            let mut list: Vec<(Option<String>, f64)> = values
                .map(|v| {
                    v.iter()
                        .map(|(k, c)| {
                            let value = (k != ABSENT).then(|| k.clone());
                            (value, *c as f64 / minutes.max(1.0))
                        })
                        .collect()
                })
                .unwrap_or_default();
            list.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            list.truncate(TOP_VALUES);
            serde_json::Value::Array(
                list.into_iter()
                    .map(|(v, avg)| json!({"value": v, "average": round4(avg)}))
                    .collect(),
            )
        };
        out.push(json!({
            "attribute": attribute,
            "insight": top(insight.get(attribute), insight_minutes),
            "baseline": top(baseline.get(attribute), baseline_minutes),
        }));
    }
    serde_json::Value::Array(out)
}

fn iso_minute(minute: i64) -> String {
    trailwatch_types::Timestamp::from_secs(minute * 60).to_iso8601_seconds()
}

impl InsightEvent {
    fn details(key: &SeriesKey, open: &Open, state: &str, insight_avg: f64) -> serde_json::Value {
        let call_rate = key.insight_type == "ApiCallRateInsight";
        let mut details = serde_json::Map::new();
        details.insert("state".into(), state.into());
        details.insert("eventSource".into(), key.event_source.clone().into());
        details.insert("eventName".into(), key.event_name.clone().into());
        details.insert("insightType".into(), key.insight_type.clone().into());
        if let Some(code) = &key.error_code {
            details.insert("errorCode".into(), code.clone().into());
        }
        details.insert(
            "insightContext".into(),
            json!({
                "statistics": {
                    "baseline": {"average": round4(open.baseline_mean)},
                    "insight": {"average": round4(insight_avg)},
                    "insightDuration": open.minutes,
                    "baselineDuration": open.baseline_minutes,
                },
                "attributions": attributions(
                    &open.values,
                    open.minutes as f64,
                    &open.baseline_values,
                    open.baseline_span as f64,
                    call_rate,
                ),
            }),
        );
        serde_json::Value::Object(details)
    }

    fn record(key: &SeriesKey, open: &Open, minute: i64, details: serde_json::Value) -> Self {
        Self {
            record: json!({
                "eventVersion": "1.11",
                "eventTime": iso_minute(minute),
                "awsRegion": key.region,
                "eventType": "AwsCloudTrailInsight",
                "recipientAccountId": key.account,
                "sharedEventID": open.shared_event_id,
                "insightDetails": details,
                "eventCategory": "Insight",
            }),
        }
    }

    fn start(key: &SeriesKey, open: &Open) -> Self {
        let details = Self::details(key, open, "Start", open.first_count as f64);
        Self::record(key, open, open.start_minute, details)
    }

    fn end(key: &SeriesKey, open: &Open, minute: i64) -> Self {
        let avg = open.total as f64 / open.minutes.max(1) as f64;
        let details = Self::details(key, open, "End", avg);
        Self::record(key, open, minute, details)
    }
}

/// Every series of the server, keyed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Detector {
    /// In key order, so events come out in a stable order.
    series: BTreeMap<String, (SeriesKey, Series)>,
}

fn key_string(k: &SeriesKey) -> String {
    format!(
        "{}/{}/{}/{}/{}/{}",
        k.account,
        k.region,
        k.insight_type,
        k.event_source,
        k.event_name,
        k.error_code.as_deref().unwrap_or("")
    )
}

impl Detector {
    /// Counts `call` in the series of `key`.
    pub fn observe(&mut self, key: SeriesKey, call: &Call<'_>) {
        let id = key_string(&key);
        self.series
            .entry(id)
            .or_insert_with(|| (key, Series::default()))
            .1
            .observe(call);
    }

    /// Evaluates every series through the minute before `until`.
    pub fn evaluate(&mut self, until_minute: i64, t: &Thresholds) -> Vec<InsightEvent> {
        let mut out = Vec::new();
        for (key, series) in self.series.values_mut() {
            out.extend(series.evaluate(key, until_minute, t));
        }
        self.series.retain(|_, (_, series)| !series.is_idle());
        out
    }

    /// Series kept.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Whether no series is kept.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SeriesKey {
        SeriesKey {
            account: "111122223333".into(),
            region: "eu-west-1".into(),
            insight_type: "ApiCallRateInsight".into(),
            event_source: "monitoring.amazonaws.com".into(),
            event_name: "PutMetricAlarm".into(),
            error_code: None,
        }
    }

    fn call(minute: i64, user: &'static str) -> Call<'static> {
        Call {
            time_secs: minute * 60 + 7,
            user_arn: Some(user),
            user_agent: Some("terraform/1.7"),
            error_code: None,
        }
    }

    /// Independent reference: mean and population deviation over a dense
    /// zero-filled minute array.
    fn reference(counts: &BTreeMap<i64, u64>, from: i64, to: i64) -> (f64, f64) {
        let n = (to - from) as f64;
        let xs: Vec<f64> = (from..to)
            .map(|m| *counts.get(&m).unwrap_or(&0) as f64)
            .collect();
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
        (mean, var.sqrt())
    }

    #[test]
    fn baseline_statistics_match_a_dense_reference() {
        let t = Thresholds {
            baseline_minutes: 48 * 60,
            ..Thresholds::default()
        };
        let mut s = Series::default();
        let mut counts = BTreeMap::new();
        // A call every 7 minutes, 3 at once every 97 minutes, over 3 days.
        for m in 0..(72 * 60) {
            let n = if m % 97 == 0 {
                3
            } else {
                u64::from(m % 7 == 0)
            };
            for _ in 0..n {
                s.observe(&call(m, "a"));
            }
            if n > 0 {
                counts.insert(m, n);
            }
        }
        let events = s.evaluate(&key(), 72 * 60, &t);
        assert!(events.is_empty(), "nothing unusual: {events:?}");
        let (mean, sigma, _) = s.baseline(72 * 60, t.baseline_minutes);
        let (rm, rs) = reference(&counts, 72 * 60 - t.baseline_minutes, 72 * 60);
        assert!((mean - rm).abs() < 1e-9, "{mean} vs {rm}");
        assert!((sigma - rs).abs() < 1e-9, "{sigma} vs {rs}");
    }

    #[test]
    fn a_burst_opens_and_quiet_minutes_close() {
        let t = Thresholds::default();
        let mut s = Series::default();
        // One call an hour for 7 days (baseline μ = 1/60), then 40 calls in
        // one minute, 20 the next, then nothing.
        let start = 1_000_000;
        for h in 0..(7 * 24) {
            s.observe(&call(start + h * 60, "arn:aws:iam::111122223333:user/ci"));
        }
        assert!(s.evaluate(&key(), start + BASELINE_MINUTES, &t).is_empty());
        let burst = start + BASELINE_MINUTES + 3;
        for _ in 0..40 {
            s.observe(&call(burst, "arn:aws:iam::111122223333:user/deployer"));
        }
        for _ in 0..20 {
            s.observe(&call(burst + 1, "arn:aws:iam::111122223333:user/deployer"));
        }
        let events = s.evaluate(&key(), burst + 20, &t);
        assert_eq!(events.len(), 2, "{events:?}");
        let (start_ev, end_ev) = (&events[0].record, &events[1].record);
        assert_eq!(start_ev["insightDetails"]["state"], "Start");
        assert_eq!(end_ev["insightDetails"]["state"], "End");
        assert_eq!(start_ev["sharedEventID"], end_ev["sharedEventID"]);
        assert_eq!(start_ev["eventTime"], iso_minute(burst));
        let stats = &start_ev["insightDetails"]["insightContext"]["statistics"];
        assert_eq!(stats["insight"]["average"], 40.0);
        assert_eq!(stats["baselineDuration"], BASELINE_MINUTES);
        let mut counts = BTreeMap::new();
        for h in 0..(7 * 24) {
            counts.insert(start + h * 60, 1u64);
        }
        let (expected_mean, _) = reference(&counts, (burst / 60) * 60 - BASELINE_MINUTES, burst);
        assert_eq!(stats["baseline"]["average"], round4(expected_mean));
        // Closed after 5 quiet minutes: two burst minutes, five quiet ones.
        let end_stats = &end_ev["insightDetails"]["insightContext"]["statistics"];
        assert_eq!(end_stats["insightDuration"], 7);
        assert_eq!(end_stats["insight"]["average"], round4(60.0 / 7.0));
        assert_eq!(end_ev["eventTime"], iso_minute(burst + 7));
        let attributions = &start_ev["insightDetails"]["insightContext"]["attributions"];
        assert_eq!(attributions[0]["attribute"], "userIdentityArn");
        assert_eq!(
            attributions[0]["insight"][0]["value"],
            "arn:aws:iam::111122223333:user/deployer"
        );
        assert_eq!(
            attributions[0]["baseline"][0]["value"],
            "arn:aws:iam::111122223333:user/ci"
        );
        assert_eq!(
            attributions[2]["insight"][0]["value"],
            serde_json::Value::Null
        );
    }

    #[test]
    fn no_insight_during_warm_up_or_below_ten() {
        let t = Thresholds::default();
        let mut s = Series::default();
        for _ in 0..50 {
            s.observe(&call(100, "a"));
        }
        assert!(
            s.evaluate(&key(), 200, &t).is_empty(),
            "first minute of the series"
        );
        let mut s = Series::default();
        s.observe(&call(0, "a"));
        for _ in 0..9 {
            s.observe(&call(BASELINE_MINUTES + 1, "a"));
        }
        assert!(s.evaluate(&key(), BASELINE_MINUTES + 10, &t).is_empty());
    }

    #[test]
    fn detector_serializes_and_resumes() {
        let t = Thresholds::default();
        let mut d = Detector::default();
        d.observe(key(), &call(0, "a"));
        d.evaluate(10, &t);
        let text = serde_json::to_string(&d).unwrap_or_default();
        let mut back: Detector = serde_json::from_str(&text).expect("decodes");
        for _ in 0..30 {
            back.observe(key(), &call(BASELINE_MINUTES + 5, "b"));
        }
        let events = back.evaluate(BASELINE_MINUTES + 6, &t);
        assert_eq!(events.len(), 1);
        assert_eq!(back.len(), 1);
    }
}
