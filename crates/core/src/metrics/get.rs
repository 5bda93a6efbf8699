//! GetMetricStatistics (`spec/cloudwatch.md` §3.2, §5): validation, StartTime
//! rounding by age, period/age compatibility, unit separation and bucketing.
//! Statistics of each bucket come from [`super::stats`].

use std::collections::BTreeMap;

use trailwatch_types::Timestamp;

use super::model::{MetricId, MetricsError, Point, Unit, UNITS};
use super::stats::{parse_extended, Bucket, Extended};

/// The five basic statistics, in the order AWS lists them in messages.
pub const BASIC: [&str; 5] = ["Average", "Sum", "SampleCount", "Maximum", "Minimum"];

/// A GetMetricStatistics request as decoded from the wire.
#[derive(Debug, Clone, Default)]
pub struct StatisticsRequest {
    /// `Namespace`.
    pub namespace: Option<String>,
    /// `MetricName`.
    pub metric_name: Option<String>,
    /// `Dimensions` as `(Name, Value)`.
    pub dimensions: Vec<(Option<String>, Option<String>)>,
    /// `StartTime`.
    pub start: Option<Timestamp>,
    /// `EndTime`.
    pub end: Option<Timestamp>,
    /// `Period`.
    pub period: Option<i64>,
    /// `Statistics`.
    pub statistics: Vec<String>,
    /// `ExtendedStatistics`.
    pub extended: Vec<String>,
    /// `Unit`.
    pub unit: Option<String>,
}

/// A validated request.
#[derive(Debug, Clone)]
pub struct StatisticsQuery {
    /// The exact metric.
    pub metric: MetricId,
    /// StartTime rounded per §3.2.
    pub start: Timestamp,
    /// EndTime (exclusive).
    pub end: Timestamp,
    /// Period in seconds.
    pub period: i64,
    /// Basic statistics requested.
    pub statistics: Vec<String>,
    /// Extended statistics requested, with their parsed forms.
    pub extended: Vec<(String, Extended)>,
    /// Only this unit, when given.
    pub unit: Option<Unit>,
    /// The period does not fit the age of StartTime: the answer is empty (§3.2).
    pub empty: bool,
}

/// One datapoint of the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Datapoint {
    /// Bucket start.
    pub timestamp: Timestamp,
    /// Unit of the data.
    pub unit: Unit,
    /// Basic statistics requested, by name.
    pub statistics: Vec<(String, f64)>,
    /// Extended statistics that have a value, by the requested string.
    pub extended: Vec<(String, f64)>,
}

/// The unit a query without `Unit` answers in: the unit with the most
/// datapoints (§3.4); and whether the data had more than one.
pub fn majority_unit(points: &[Datapoint]) -> (Option<Unit>, bool) {
    let mut units: Vec<Unit> = points.iter().map(|p| p.unit).collect();
    units.sort();
    units.dedup();
    let chosen = units
        .iter()
        .max_by_key(|u| points.iter().filter(|p| p.unit == **u).count())
        .copied();
    (chosen, units.len() > 1)
}

impl Datapoint {
    /// The value of statistic `stat` (basic or extended), when it has one.
    pub fn value(&self, stat: &str) -> Option<f64> {
        self.statistics
            .iter()
            .chain(&self.extended)
            .find(|(k, _)| k == stat)
            .map(|(_, v)| *v)
    }
}

impl StatisticsRequest {
    /// A request for `stats` (basic or extended names) of `metric`.
    pub fn for_metric(
        metric: &MetricId,
        start: Timestamp,
        end: Timestamp,
        period: i64,
        stats: &[&str],
    ) -> Self {
        let (basic, extended): (Vec<&str>, Vec<&str>) =
            stats.iter().partition(|s| BASIC.contains(s));
        StatisticsRequest {
            namespace: Some(metric.namespace.clone()),
            metric_name: Some(metric.name.clone()),
            dimensions: metric
                .dimensions
                .iter()
                .map(|d| (Some(d.name.clone()), Some(d.value.clone())))
                .collect(),
            start: Some(start),
            end: Some(end),
            period: Some(period),
            statistics: basic.into_iter().map(str::to_owned).collect(),
            extended: extended.into_iter().map(str::to_owned).collect(),
            unit: None,
        }
    }
}

fn thousands(n: i64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

/// Validates a GetMetricStatistics request received at `now`.
pub fn validate_statistics(
    r: &StatisticsRequest,
    now: Timestamp,
) -> Result<StatisticsQuery, MetricsError> {
    validate(r, now, true)
}

/// Validates one MetricStat of GetMetricData: the rules of GetMetricStatistics
/// but the 1,440-datapoint limit, since GetMetricData pages by datapoints
/// (up to 100,800 per call) instead.
pub fn validate_metric_stat(
    r: &StatisticsRequest,
    now: Timestamp,
) -> Result<StatisticsQuery, MetricsError> {
    validate(r, now, false)
}

fn validate(
    r: &StatisticsRequest,
    now: Timestamp,
    bucket_limit: bool,
) -> Result<StatisticsQuery, MetricsError> {
    let missing =
        |name: &str| MetricsError::MissingParameter(format!("The parameter {name} is required."));
    let namespace = r.namespace.clone().ok_or_else(|| missing("Namespace"))?;
    let name = r.metric_name.clone().ok_or_else(|| missing("MetricName"))?;
    let start = r.start.ok_or_else(|| missing("StartTime"))?;
    let end = r.end.ok_or_else(|| missing("EndTime"))?;
    let period = r.period.ok_or_else(|| missing("Period"))?;
    if r.statistics.is_empty() == r.extended.is_empty() {
        return Err(MetricsError::InvalidParameterCombination(
            "Must specify either Statistics or ExtendedStatistics, but not both.".to_owned(),
        ));
    }
    if r.statistics.len() > 5 {
        return Err(MetricsError::InvalidParameterValue(
            "The collection Statistics must not have a size greater than 5.".to_owned(),
        ));
    }
    for (i, s) in r.statistics.iter().enumerate() {
        if !BASIC.contains(&s.as_str()) {
            return Err(MetricsError::InvalidParameterValue(format!(
                "The parameter Statistics.member.{} must be a value in the set [ {} ].",
                i + 1,
                BASIC.join(", ")
            )));
        }
    }
    if r.extended.len() > 10 {
        return Err(MetricsError::InvalidParameterValue(
            "The collection ExtendedStatistics must not have a size greater than 10.".to_owned(),
        ));
    }
    let mut extended = Vec::new();
    for (i, s) in r.extended.iter().enumerate() {
        let parsed = parse_extended(s).ok_or_else(|| {
            MetricsError::InvalidParameterValue(format!(
                "The value {s} for parameter ExtendedStatistics.member.{} is not supported.",
                i + 1
            ))
        })?;
        extended.push((s.clone(), parsed));
    }
    if period < 1 {
        return Err(MetricsError::InvalidParameterValue(
            "The parameter Period must be greater than 0.".to_owned(),
        ));
    }
    if !(matches!(period, 1 | 5 | 10 | 20 | 30) || period % 60 == 0) {
        return Err(MetricsError::InvalidParameterValue(
            "The parameter Period must be a multiple of 60.".to_owned(),
        ));
    }
    if start == end {
        return Err(MetricsError::InvalidParameterValue(
            "The parameter StartTime must not equal parameter EndTime.".to_owned(),
        ));
    }
    if end < start {
        return Err(MetricsError::InvalidParameterValue(
            "The parameter EndTime must be greater than StartTime.".to_owned(),
        ));
    }
    if r.dimensions.len() > 30 {
        return Err(MetricsError::InvalidParameterValue(
            "The collection Dimensions must not have a size greater than 30.".to_owned(),
        ));
    }
    let unit = match r.unit.as_deref() {
        None => None,
        Some(u) => Some(Unit::parse(u).ok_or_else(|| {
            MetricsError::InvalidParameterValue(format!(
                "The parameter Unit must be a value in the set [ {} ].",
                UNITS.join(", ")
            ))
        })?),
    };
    let mut dimensions = Vec::new();
    for (i, (n, v)) in r.dimensions.iter().enumerate() {
        let n = n
            .clone()
            .ok_or_else(|| missing(&format!("Dimensions.member.{}.Name", i + 1)))?;
        let v = v
            .clone()
            .ok_or_else(|| missing(&format!("Dimensions.member.{}.Value", i + 1)))?;
        dimensions.push(super::model::Dimension { name: n, value: v });
    }
    dimensions.sort();
    // StartTime rounding by age (§3.2).
    let age = now.millis() - start.millis();
    let step = if period < 60 {
        period * 1000
    } else if age < 15 * DAY {
        60_000
    } else if age < 63 * DAY {
        300_000
    } else {
        HOUR
    };
    let rounded = Timestamp::from_millis(start.millis().div_euclid(step) * step);
    let span = end.millis() - rounded.millis();
    let buckets = (span + period * 1000 - 1) / (period * 1000);
    if bucket_limit && buckets > 1440 {
        return Err(MetricsError::InvalidParameterCombination(format!(
            "You have requested up to {} datapoints, which exceeds the limit of 1,440. You may reduce the datapoints requested by increasing Period, or decreasing the time range.",
            thousands(buckets)
        )));
    }
    let fits = if age <= 3 * HOUR {
        true
    } else if age <= 15 * DAY {
        period % 60 == 0
    } else if age <= 63 * DAY {
        period % 300 == 0
    } else {
        period % 3600 == 0
    };
    Ok(StatisticsQuery {
        metric: MetricId {
            namespace,
            name,
            dimensions,
        },
        start: rounded,
        end,
        period,
        statistics: r.statistics.clone(),
        extended,
        unit,
        empty: !fits,
    })
}

/// Answers `q` from raw points alone (no tiers): the reference the stored
/// tiers must agree with, and the answer for data that is all raw.
pub fn compute(q: &StatisticsQuery, points: &[Point]) -> Vec<Datapoint> {
    if q.empty {
        return Vec::new();
    }
    let period_ms = q.period * 1000;
    let mut buckets: BTreeMap<(i64, Unit), Bucket> = BTreeMap::new();
    for d in points {
        let t = d.timestamp.millis();
        if t < q.start.millis() || t >= q.end.millis() || q.unit.is_some_and(|u| u != d.unit) {
            continue;
        }
        let index = (t - q.start.millis()) / period_ms;
        buckets.entry((index, d.unit)).or_default().add(&d.sample);
    }
    render(q, buckets)
}

/// One datapoint per non-empty bucket and unit, ascending by time.
pub fn render(
    q: &StatisticsQuery,
    buckets: impl IntoIterator<Item = ((i64, Unit), Bucket)>,
) -> Vec<Datapoint> {
    let period_ms = q.period * 1000;
    buckets
        .into_iter()
        .map(|((index, unit), mut bucket)| {
            let statistics = q
                .statistics
                .iter()
                .map(|s| {
                    let v = match s.as_str() {
                        "Average" => bucket.average(),
                        "Sum" => bucket.sum,
                        "SampleCount" => bucket.count,
                        "Maximum" => bucket.max,
                        _ => bucket.min,
                    };
                    (s.clone(), v)
                })
                .collect();
            let extended = q
                .extended
                .iter()
                .filter_map(|(name, stat)| bucket.extended(stat).map(|v| (name.clone(), v)))
                .collect();
            Datapoint {
                timestamp: Timestamp::from_millis(q.start.millis() + index * period_ms),
                unit,
                statistics,
                extended,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::model::Sample;

    const NOW: Timestamp = Timestamp::from_secs(1_719_748_800); // 2024-06-30T12:00:00Z

    fn request(start: &str, period: i64) -> StatisticsRequest {
        StatisticsRequest {
            namespace: Some("App".into()),
            metric_name: Some("PageViewCount".into()),
            start: Some(Timestamp::parse_iso8601(start).unwrap()),
            end: Some(NOW),
            period: Some(period),
            statistics: vec!["Sum".into()],
            ..StatisticsRequest::default()
        }
    }

    #[test]
    fn spec_period_examples() {
        let q = validate_statistics(&request("2024-06-30T11:00:07Z", 60), NOW).unwrap();
        assert_eq!(q.start.to_iso8601(), "2024-06-30T11:00:00Z");
        assert!(!q.empty);
        let q = validate_statistics(&request("2024-06-30T11:59:23Z", 10), NOW).unwrap();
        assert_eq!(q.start.to_iso8601(), "2024-06-30T11:59:20Z");
        let mut r = request("2024-06-20T10:00:00Z", 30);
        r.end = Some(Timestamp::parse_iso8601("2024-06-20T11:00:00Z").unwrap());
        assert!(
            validate_statistics(&r, NOW).unwrap().empty,
            "30 s period on 10-day-old data is empty, not an error"
        );
        let mut r = request("2024-05-20T10:02:00Z", 300);
        r.end = Some(Timestamp::parse_iso8601("2024-05-20T12:00:00Z").unwrap());
        let q = validate_statistics(&r, NOW).unwrap();
        assert_eq!(
            (q.start.to_iso8601().as_str(), q.empty),
            ("2024-05-20T10:00:00Z", false)
        );
        let mut r = request("2024-05-20T10:00:00Z", 60);
        r.end = Some(Timestamp::parse_iso8601("2024-05-20T12:00:00Z").unwrap());
        assert!(validate_statistics(&r, NOW).unwrap().empty);
    }

    #[test]
    fn errors() {
        let err = |r: StatisticsRequest| validate_statistics(&r, NOW).unwrap_err().to_string();
        let mut r = request("2024-06-29T12:00:00Z", 60);
        r.period = Some(1);
        assert_eq!(err(r), "You have requested up to 86,400 datapoints, which exceeds the limit of 1,440. You may reduce the datapoints requested by increasing Period, or decreasing the time range.");
        let mut r = request("2024-06-30T11:00:00Z", 60);
        r.extended = vec!["p99".into()];
        assert_eq!(
            err(r),
            "Must specify either Statistics or ExtendedStatistics, but not both."
        );
        assert_eq!(
            err(request("2024-06-30T11:00:00Z", 45)),
            "The parameter Period must be a multiple of 60."
        );
        assert_eq!(
            err(request("2024-06-30T11:00:00Z", 0)),
            "The parameter Period must be greater than 0."
        );
        assert_eq!(
            err(request("2024-06-30T12:00:00Z", 60)),
            "The parameter StartTime must not equal parameter EndTime."
        );
        assert_eq!(
            err(request("2024-06-30T12:05:00Z", 60)),
            "The parameter EndTime must be greater than StartTime."
        );
        let mut r = request("2024-06-30T11:00:00Z", 60);
        r.statistics = vec!["Median".into()];
        assert!(err(r).starts_with("The parameter Statistics.member.1 must be a value in the set"));
        let mut r = request("2024-06-30T11:00:00Z", 60);
        r.statistics = vec![];
        r.extended = vec!["p101".into()];
        assert_eq!(
            err(r),
            "The value p101 for parameter ExtendedStatistics.member.1 is not supported."
        );
    }

    #[test]
    fn spec_example_and_unit_separation() {
        let at = |s: &str, v: f64, unit: Unit| Point {
            timestamp: Timestamp::parse_iso8601(s).unwrap(),
            unit,
            sample: Sample::Value(v),
        };
        let datums = vec![
            at("2024-06-30T11:40:00Z", 2.0, Unit::NONE),
            at("2024-06-30T11:40:01Z", 4.0, Unit::NONE),
            at("2024-06-30T11:40:02Z", 5.0, Unit::NONE),
            at("2024-06-30T11:40:03Z", 7.0, Unit::parse("Count").unwrap()),
            at("2024-06-30T11:46:00Z", 1.0, Unit::NONE),
        ];
        let mut r = request("2024-06-30T11:40:00Z", 60);
        r.end = Some(Timestamp::parse_iso8601("2024-06-30T11:45:00Z").unwrap());
        r.statistics = BASIC.iter().map(|s| s.to_string()).collect();
        let q = validate_statistics(&r, NOW).unwrap();
        let points = compute(&q, &datums);
        assert_eq!(
            points.len(),
            2,
            "one datapoint per unit; the 11:46 sample is past EndTime"
        );
        let none = points.iter().find(|p| p.unit == Unit::NONE).unwrap();
        assert_eq!(
            none.statistics,
            vec![
                ("Average".to_owned(), 3.6666666666666665),
                ("Sum".to_owned(), 11.0),
                ("SampleCount".to_owned(), 3.0),
                ("Maximum".to_owned(), 5.0),
                ("Minimum".to_owned(), 2.0),
            ]
        );
        assert_eq!(none.timestamp.to_iso8601(), "2024-06-30T11:40:00Z");
        r.unit = Some("Count".into());
        r.statistics = vec![];
        r.extended = vec!["p50".into(), "TM(1:4)".into()];
        let points = compute(&validate_statistics(&r, NOW).unwrap(), &datums);
        assert_eq!(points.len(), 1);
        assert_eq!(
            points[0].extended,
            vec![("p50".to_owned(), 7.0)],
            "TM(1:4) keeps nothing: no value"
        );
    }
}
