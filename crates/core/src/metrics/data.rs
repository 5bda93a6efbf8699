//! GetMetricData (`spec/cloudwatch.md` §6.1–6.2): `MetricStat` queries as
//! series on the bucket grid of §3.2, metric math expressions over them
//! ([`super::math`]), labels, `ScanBy`, and pagination by datapoints with
//! `PartialData`. SEARCH and Metrics Insights are not evaluated yet.

use trailwatch_types::Timestamp;

use std::collections::HashMap;

use super::get::{validate_metric_stat, Datapoint, StatisticsQuery, StatisticsRequest};
use super::labels::{self, LabelContext};
use super::math::{self, Expr, MValue, Series};
use super::model::{MetricId, MetricsError};

/// Default and largest `MaxDatapoints`.
pub const MAX_DATAPOINTS: i64 = 100_800;

/// `MetricStat` as decoded.
#[derive(Debug, Clone, Default)]
pub struct MetricStatInput {
    /// `Metric.Namespace`.
    pub namespace: Option<String>,
    /// `Metric.MetricName`.
    pub metric_name: Option<String>,
    /// `Metric.Dimensions`.
    pub dimensions: Vec<(Option<String>, Option<String>)>,
    /// `Period`.
    pub period: Option<i64>,
    /// `Stat`.
    pub stat: Option<String>,
    /// `Unit`.
    pub unit: Option<String>,
}

/// One `MetricDataQuery` as decoded.
#[derive(Debug, Clone, Default)]
pub struct DataQueryInput {
    /// `Id`.
    pub id: Option<String>,
    /// `MetricStat`.
    pub metric_stat: Option<MetricStatInput>,
    /// `Expression`.
    pub expression: Option<String>,
    /// `Label`.
    pub label: Option<String>,
    /// `ReturnData` (default true).
    pub return_data: Option<bool>,
    /// `Period` (expression queries: the period of a SEARCH without one).
    pub period: Option<i64>,
}

/// A GetMetricData request as decoded.
#[derive(Debug, Clone, Default)]
pub struct DataRequest {
    /// `MetricDataQueries`.
    pub queries: Vec<DataQueryInput>,
    /// `StartTime`.
    pub start: Option<Timestamp>,
    /// `EndTime`.
    pub end: Option<Timestamp>,
    /// `ScanBy`.
    pub scan_by: Option<String>,
    /// `MaxDatapoints`.
    pub max_datapoints: Option<i64>,
    /// `LabelOptions.Timezone` (`[+-]HHMM`).
    pub label_timezone: Option<String>,
}

/// One result series.
#[derive(Debug, Clone, PartialEq)]
pub struct DataResult {
    /// Query id.
    pub id: String,
    /// Label (default: the metric name).
    pub label: String,
    /// Timestamps in `ScanBy` order.
    pub timestamps: Vec<Timestamp>,
    /// Values, parallel to `timestamps`.
    pub values: Vec<f64>,
    /// `Complete`, or `PartialData` when a later page continues it.
    pub complete: bool,
    /// `(Code, Value)` messages.
    pub messages: Vec<(String, String)>,
}

/// One validated query.
#[derive(Debug, Clone)]
struct Planned {
    id: String,
    /// The query's `Label`, if given.
    label: Option<String>,
    return_data: bool,
    kind: PlannedKind,
}

#[derive(Debug, Clone)]
enum PlannedKind {
    /// Validated once, at plan time.
    Stat {
        query: StatisticsQuery,
        stat: String,
    },
    Math {
        expr: Expr,
        period: Option<i64>,
    },
    Insights {
        query: super::insights::Query,
        period: i64,
    },
}

/// How an anomaly detector trains the band of one metric and statistic
/// (§9.2): its `ExcludedTimeRanges` and `MetricTimezone`.
#[derive(Debug, Clone, PartialEq)]
pub struct BandTraining {
    /// The metric.
    pub metric: MetricId,
    /// The statistic.
    pub stat: String,
    /// Time ranges left out of training, (start, end) epoch ms.
    pub excluded: Vec<(i64, i64)>,
    /// The tz database name training hours are counted in (UTC when absent
    /// or unknown).
    pub timezone: Option<String>,
}

/// The offset of `timezone` from UTC at `t_ms`, in ms (0 for UTC or an
/// unknown name).
pub fn timezone_offset_ms(timezone: Option<&str>, t_ms: i64) -> i64 {
    use chrono::{Offset, TimeZone};
    let Some(tz) = timezone.and_then(|name| name.parse::<chrono_tz::Tz>().ok()) else {
        return 0;
    };
    match chrono::DateTime::from_timestamp_millis(t_ms) {
        Some(utc) => {
            i64::from(
                tz.offset_from_utc_datetime(&utc.naive_utc())
                    .fix()
                    .local_minus_utc(),
            ) * 1000
        }
        None => 0,
    }
}

/// A validated query plan.
#[derive(Debug, Clone)]
pub struct DataPlan {
    queries: Vec<Planned>,
    /// Detector settings of the metrics whose bands the plan may draw.
    band_training: Vec<BandTraining>,
    start: Timestamp,
    end: Timestamp,
    /// Newest first (the default).
    pub descending: bool,
    /// Page size in datapoints.
    pub max_datapoints: usize,
    /// Offset of the label timezone, minutes.
    offset_minutes: i64,
    /// Hash input that binds a token to this request.
    pub fingerprint: String,
}

fn is_valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    !id.is_empty()
        && id.len() <= 255
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn validation(message: String) -> MetricsError {
    MetricsError::Validation(message)
}

/// Validates a request received at `now`.
pub fn plan(request: &DataRequest, now: Timestamp) -> Result<DataPlan, MetricsError> {
    let start = request.start.ok_or_else(|| {
        MetricsError::MissingParameter("The parameter StartTime is required.".to_owned())
    })?;
    let end = request.end.ok_or_else(|| {
        MetricsError::MissingParameter("The parameter EndTime is required.".to_owned())
    })?;
    if request.queries.is_empty() {
        return Err(MetricsError::MissingParameter(
            "The parameter MetricDataQueries is required.".to_owned(),
        ));
    }
    if request.queries.len() > 500 {
        return Err(MetricsError::InvalidParameterValue(
            "The collection MetricDataQueries must not have a size greater than 500.".to_owned(),
        ));
    }
    let descending = match request.scan_by.as_deref() {
        None | Some("TimestampDescending") => true,
        Some("TimestampAscending") => false,
        Some(other) => {
            return Err(validation(format!(
                "1 validation error detected: Value '{other}' at 'scanBy' failed to satisfy constraint: Member must satisfy enum value set: [TimestampDescending, TimestampAscending]"
            )))
        }
    };
    let max_datapoints = match request.max_datapoints {
        None => MAX_DATAPOINTS,
        Some(n) if n >= 1 => n.min(MAX_DATAPOINTS),
        Some(n) => {
            return Err(MetricsError::InvalidParameterValue(format!(
                "The value {n} for parameter MaxDatapoints is invalid."
            )))
        }
    } as usize;
    let mut ids = std::collections::HashSet::new();
    let mut queries = Vec::new();
    for (i, q) in request.queries.iter().enumerate() {
        let n = i + 1;
        let id = q.id.clone().ok_or_else(|| {
            MetricsError::MissingParameter(format!(
                "The parameter MetricDataQueries.member.{n}.Id is required."
            ))
        })?;
        if !is_valid_id(&id) {
            return Err(validation(format!(
                "1 validation error detected: Value '{id}' at 'metricDataQueries.{n}.member.id' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[a-z][a-zA-Z0-9_]*$"
            )));
        }
        if !ids.insert(id.clone()) {
            return Err(validation(format!(
                "The value {id} for parameter MetricDataQueries.member.{n}.Id is not unique."
            )));
        }
        let stat = match (&q.metric_stat, &q.expression) {
            (Some(_), Some(_)) => {
                return Err(MetricsError::InvalidParameterCombination(format!(
                    "The parameters MetricDataQueries.member.{n}.MetricStat and MetricDataQueries.member.{n}.Expression are mutually exclusive and you have specified both."
                )))
            }
            (None, None) => {
                return Err(validation(format!("The parameter MetricDataQueries.member.{n}.MetricStat is required.")))
            }
            (None, Some(expression)) => {
                if expression.is_empty() || expression.len() > 2048 {
                    return Err(validation(format!("Error in expression {id}: the expression must have 1 to 2048 characters")));
                }
                if super::insights::is_sql(expression) {
                    let query = super::insights::parse(expression)
                        .map_err(|reason| validation(format!("Error in expression {id}: {reason}")))?;
                    let period = q.period.filter(|p| *p > 0).ok_or_else(|| {
                        validation(format!("The parameter MetricDataQueries.member.{n}.Period is required for a Metrics Insights query."))
                    })?;
                    queries.push(Planned {
                        id,
                        label: q.label.clone(),
                        return_data: q.return_data.unwrap_or(true),
                        kind: PlannedKind::Insights { query, period },
                    });
                    continue;
                }
                let expr = math::parse(expression).map_err(|reason| validation(format!("Error in expression {id}: {reason}")))?;
                queries.push(Planned { id, label: q.label.clone(), return_data: q.return_data.unwrap_or(true), kind: PlannedKind::Math { expr, period: q.period } });
                continue;
            }
            (Some(stat), None) => stat,
        };
        let stat_name = stat.stat.clone().ok_or_else(|| {
            MetricsError::MissingParameter(format!(
                "The parameter MetricDataQueries.member.{n}.MetricStat.Stat is required."
            ))
        })?;
        let statistics_request = StatisticsRequest {
            namespace: stat.namespace.clone(),
            metric_name: stat.metric_name.clone(),
            dimensions: stat.dimensions.clone(),
            period: stat.period,
            unit: stat.unit.clone(),
            // Times and the statistic split (basic or extended) as for any metric.
            ..StatisticsRequest::for_metric(
                &MetricId::default(),
                start,
                end,
                0,
                &[stat_name.as_str()],
            )
        };
        // Validate now, so a bad query fails the whole call.
        let query = validate_metric_stat(&statistics_request, now).map_err(|e| match e {
            MetricsError::InvalidParameterValue(m) => {
                MetricsError::InvalidParameterValue(format!("MetricDataQueries.member.{n}: {m}"))
            }
            other => other,
        })?;
        queries.push(Planned {
            id,
            label: q.label.clone(),
            return_data: q.return_data.unwrap_or(true),
            kind: PlannedKind::Stat {
                query,
                stat: stat_name,
            },
        });
    }
    // Every reference must name another query, without cycles.
    let known: HashMap<&str, &Planned> = queries.iter().map(|q| (q.id.as_str(), q)).collect();
    for q in &queries {
        let mut stack = vec![(q.id.clone(), vec![q.id.clone()])];
        while let Some((at, path)) = stack.pop() {
            let Some(PlannedKind::Math { expr, .. }) = known.get(at.as_str()).map(|p| &p.kind)
            else {
                continue;
            };
            let mut refs = Vec::new();
            math::references(expr, &mut refs);
            for r in refs {
                if !known.contains_key(r.as_str()) {
                    return Err(validation(format!(
                        "Error in expression {at}: Unrecognized metric id {r}"
                    )));
                }
                if path.contains(&r) {
                    return Err(validation(format!(
                        "Error in expression {}: circular reference to {r}",
                        q.id
                    )));
                }
                let mut next = path.clone();
                next.push(r.clone());
                stack.push((r, next));
            }
        }
    }
    if !queries.iter().any(|q| q.return_data) {
        return Err(validation(
            "At least one query must have ReturnData set to true.".to_owned(),
        ));
    }
    let fingerprint = format!(
        "{:?}|{descending}|{max_datapoints}",
        request_fingerprint(request)
    );
    let offset_minutes = match request.label_timezone.as_deref() {
        None => 0,
        Some(tz) => labels::parse_timezone(tz).ok_or_else(|| {
            MetricsError::InvalidParameterValue(format!(
                "The value {tz} for parameter LabelOptions.Timezone is invalid."
            ))
        })?,
    };
    for q in &queries {
        if let Some(label) = &q.label {
            if labels::placeholders(label).len() > 5 {
                return Err(validation(format!(
                    "The label of query {} has more than 5 dynamic values.",
                    q.id
                )));
            }
        }
    }
    Ok(DataPlan {
        queries,
        band_training: Vec::new(),
        start,
        end,
        offset_minutes,
        descending,
        max_datapoints,
        fingerprint,
    })
}

impl DataPlan {
    /// The plan with the detectors' training settings for its bands.
    pub fn with_band_training(mut self, training: Vec<BandTraining>) -> Self {
        self.band_training = training;
        self
    }
}

fn request_fingerprint(r: &DataRequest) -> String {
    let queries: Vec<String> = r
        .queries
        .iter()
        .map(|q| {
            format!(
                "{:?}{:?}{:?}{:?}{:?}{:?}",
                q.id,
                q.label,
                q.return_data,
                q.expression,
                q.period,
                q.metric_stat.as_ref().map(|s| (
                    &s.namespace,
                    &s.metric_name,
                    &s.dimensions,
                    s.period,
                    &s.stat,
                    &s.unit
                ))
            )
        })
        .collect();
    format!("{:?}{:?}{}", r.start, r.end, queries.join(";"))
}

/// Where a page starts: result index and point offset within it.
pub type Cursor = (usize, usize);

/// One returned series: (Id, Label, points in ScanBy order, messages).
type Labelled = (String, String, Vec<(Timestamp, f64)>, Vec<(String, String)>);

/// Evaluation state: fetched MetricStat series and evaluated expressions.
struct Evaluation<'a> {
    plan: &'a DataPlan,
    stats: HashMap<String, (Series, i64)>,
    evaluated: HashMap<String, MValue>,
    grid: Vec<i64>,
    /// The expression being evaluated (SEARCH takes its Period).
    current: Option<String>,
    start: Timestamp,
    end: Timestamp,
    now: Timestamp,
    datums: &'a mut dyn FnMut(&StatisticsQuery) -> Result<Vec<Datapoint>, MetricsError>,
    listed: &'a dyn Fn() -> Vec<MetricId>,
}

impl Evaluation<'_> {
    /// Evaluates a Metrics Insights query: one series, or one per group.
    fn insights(
        &mut self,
        id: &str,
        sql: &super::insights::Query,
        period: i64,
    ) -> Result<MValue, String> {
        let mut matched: Vec<MetricId> = (self.listed)()
            .into_iter()
            .filter(|m| sql.selects(m))
            .collect();
        // At most 10,000 metrics are matched (§6.7).
        matched.truncate(10_000);
        let mut series = Vec::with_capacity(matched.len());
        for metric in matched {
            let request = StatisticsRequest::for_metric(
                &metric,
                self.start,
                self.end,
                period,
                &["Sum", "SampleCount", "Minimum", "Maximum"],
            );
            let q = validate_metric_stat(&request, self.now).map_err(|e| e.to_string())?;
            let buckets = (self.datums)(&q)
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|p| {
                    let get = |k: &str| p.value(k).unwrap_or(0.0);
                    let stats = (
                        get("Sum"),
                        get("SampleCount"),
                        get("Minimum"),
                        get("Maximum"),
                    );
                    (p.timestamp.millis(), stats)
                })
                .collect();
            series.push((metric, buckets));
        }
        let groups = super::insights::aggregate(sql, series);
        if sql.group_by.is_empty() {
            let points = groups
                .into_iter()
                .next()
                .map(|(_, p)| p)
                .unwrap_or_default();
            return Ok(MValue::Series(Series {
                label: id.to_owned(),
                points,
            }));
        }
        Ok(MValue::Array(
            groups
                .into_iter()
                .map(|(label, points)| Series { label, points })
                .collect(),
        ))
    }
}

impl math::Context for Evaluation<'_> {
    fn resolve(&mut self, id: &str) -> Result<MValue, String> {
        if let Some((s, _)) = self.stats.get(id) {
            return Ok(MValue::Series(s.clone()));
        }
        if let Some(v) = self.evaluated.get(id) {
            return Ok(v.clone());
        }
        let query = self
            .plan
            .queries
            .iter()
            .find(|q| q.id == id)
            .ok_or_else(|| format!("Unrecognized metric id {id}"))?;
        let expr = match &query.kind {
            PlannedKind::Math { expr, .. } => expr,
            PlannedKind::Insights { query: sql, period } => {
                let value = self.insights(id, sql, *period)?;
                self.evaluated.insert(id.to_owned(), value.clone());
                return Ok(value);
            }
            PlannedKind::Stat { .. } => return Err(format!("Unrecognized metric id {id}")),
        };
        // SEARCH inside this expression takes this query's Period.
        let outer = self.current.replace(id.to_owned());
        let value = math::eval(expr, self);
        self.current = outer;
        let mut value = value?;
        label_expression(&mut value, query);
        self.evaluated.insert(id.to_owned(), value.clone());
        Ok(value)
    }

    fn metrics(&mut self) -> Vec<(String, Series)> {
        self.plan
            .queries
            .iter()
            .filter_map(|q| {
                self.stats
                    .get(&q.id)
                    .map(|(s, _)| (q.id.clone(), s.clone()))
            })
            .collect()
    }

    fn period(&self, id: &str) -> Option<i64> {
        self.stats.get(id).map(|(_, p)| *p)
    }

    fn grid(&self) -> &[i64] {
        &self.grid
    }

    fn band(&mut self, id: &str, k: f64) -> Result<MValue, String> {
        use crate::anomaly::{BandOptions, Model, TRAINING_DAYS};
        let planned = self
            .plan
            .queries
            .iter()
            .find(|q| q.id == id)
            .ok_or_else(|| format!("Unrecognized metric id {id}"))?;
        let PlannedKind::Stat { query, stat } = &planned.kind else {
            return Err(format!(
                "ANOMALY_DETECTION_BAND needs a metric: {id} is an expression"
            ));
        };
        // Training: the same statistic at the same period over the 14 days
        // before the query start, without the detector's excluded ranges,
        // hours counted in its time zone (§9.2).
        let settings = self
            .plan
            .band_training
            .iter()
            .find(|b| b.metric == query.metric && &b.stat == stat);
        let excluded = settings.map_or(&[][..], |b| b.excluded.as_slice());
        let timezone = settings.and_then(|b| b.timezone.as_deref());
        let start = query.start.millis();
        let training_query = StatisticsQuery {
            start: Timestamp::from_millis(start - TRAINING_DAYS * 86_400_000),
            end: query.start,
            empty: false,
            ..query.clone()
        };
        let training: Vec<(i64, f64)> = (self.datums)(&training_query)
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter_map(|p| Some((p.timestamp.millis(), p.value(stat)?)))
            .filter(|(t, _)| !excluded.iter().any(|(a, b)| *t >= *a && *t < *b))
            .collect();
        let offset = |t: i64| timezone_offset_ms(timezone, t);
        let label = self
            .stats
            .get(id)
            .map_or_else(|| id.to_owned(), |(s, _)| s.label.clone());
        let mut upper = Series {
            label: format!("{label} (upper band)"),
            points: Default::default(),
        };
        let mut lower = Series {
            label: format!("{label} (lower band)"),
            points: Default::default(),
        };
        if let Some(model) = Model::train(&training, &offset) {
            let options = BandOptions {
                k,
                percent: query.unit.is_some_and(|u| u.as_str() == "Percent"),
            };
            let step = query.period.max(1) * 1000;
            let mut t = start;
            while t < query.end.millis() {
                let (lo, hi) = model.band(t, offset(t), &options);
                upper.points.insert(t, hi);
                lower.points.insert(t, lo);
                t += step;
            }
        }
        Ok(MValue::Array(vec![upper, lower]))
    }

    fn search(
        &mut self,
        query: &str,
        stat: &str,
        period: Option<i64>,
    ) -> Result<Vec<Series>, String> {
        let search = super::search::parse_search(query)?;
        let query_period = self.current.as_ref().and_then(|id| {
            self.plan
                .queries
                .iter()
                .find(|q| &q.id == id)
                .and_then(|q| match &q.kind {
                    PlannedKind::Math { period, .. } => *period,
                    PlannedKind::Insights { period, .. } => Some(*period),
                    PlannedKind::Stat { .. } => None,
                })
        });
        let period = period
            .or(query_period)
            .ok_or("SEARCH needs a period: give a third argument or the query's Period")?;
        let mut matched: Vec<MetricId> = (self.listed)()
            .into_iter()
            .filter(|m| search.matches(m))
            .collect();
        matched.truncate(500);
        let labels = super::search::default_labels(&matched);
        let mut out = Vec::with_capacity(matched.len());
        for (metric, label) in matched.into_iter().zip(labels) {
            let request =
                StatisticsRequest::for_metric(&metric, self.start, self.end, period, &[stat]);
            let q = validate_metric_stat(&request, self.now).map_err(|e| e.to_string())?;
            let points = (self.datums)(&q)
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter_map(|p| Some((p.timestamp.millis(), p.value(stat)?)))
                .collect();
            out.push(Series { label, points });
        }
        Ok(out)
    }
}

/// `PROP('…')` values of a query (MetricStat queries only).
fn props_of(kind: &PlannedKind, scope: Scope<'_>) -> Vec<(String, String)> {
    let PlannedKind::Stat { query, stat } = kind else {
        return Vec::new();
    };
    let metric = &query.metric;
    let mut props = vec![
        ("MetricName".to_owned(), metric.name.clone()),
        ("Namespace".to_owned(), metric.namespace.clone()),
        ("Period".to_owned(), query.period.to_string()),
        ("Stat".to_owned(), stat.clone()),
        ("Region".to_owned(), scope.region.to_owned()),
        ("AccountId".to_owned(), scope.account_id.to_owned()),
    ];
    props.extend(
        metric
            .dimensions
            .iter()
            .map(|d| (format!("Dim.{}", d.name), d.value.clone())),
    );
    props
}

/// An expression's single series has its Id as default label.
fn label_expression(value: &mut MValue, query: &Planned) {
    if let MValue::Series(s) = value {
        s.label = query.id.clone();
    }
}

/// Whose metrics a plan reads: the caller's account and the request's region
/// (`${PROP('AccountId')}`, `${PROP('Region')}`).
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// Account id.
    pub account_id: &'a str,
    /// Region.
    pub region: &'a str,
}

/// Runs the plan; `datums` answers a statistics query from storage and `listed` the
/// metrics SEARCH may match. Returns the page's results and, when truncated,
/// the cursor of the next page.
pub fn execute(
    plan: &DataPlan,
    scope: Scope<'_>,
    now: Timestamp,
    cursor: Option<Cursor>,
    mut datums: impl FnMut(&StatisticsQuery) -> Result<Vec<Datapoint>, MetricsError>,
    listed: impl Fn() -> Vec<MetricId>,
) -> Result<(Vec<DataResult>, Option<Cursor>), MetricsError> {
    let mut stats = HashMap::new();
    let mut unit_messages: HashMap<String, Vec<(String, String)>> = HashMap::new();
    let mut grid_start = None;
    let mut grid_period = i64::MAX;
    let mut grid_end = 0;
    // With MetricStats only, result i is query i (of those returned), so a page
    // needs only the queries from its cursor to its last datapoint: the others
    // are neither read nor computed.
    let lazy = plan
        .queries
        .iter()
        .all(|q| matches!(q.kind, PlannedKind::Stat { .. }));
    let (first_result, first_offset) = cursor.unwrap_or((0, 0));
    let mut result_index = 0usize;
    let mut produced = 0usize;
    for q in &plan.queries {
        let PlannedKind::Stat { query, stat } = &q.kind else {
            continue;
        };
        grid_start =
            Some(grid_start.map_or(query.start.millis(), |s: i64| s.min(query.start.millis())));
        grid_period = grid_period.min(query.period);
        grid_end = query.end.millis();
        let index = result_index;
        if lazy {
            if q.return_data {
                result_index += 1;
            }
            if !q.return_data || index < first_result || produced >= plan.max_datapoints {
                continue;
            }
        }
        let points = datums(query)?;
        let (chosen, several) = super::get::majority_unit(&points);
        if several {
            unit_messages.entry(q.id.clone()).or_default().push((
                "MultipleUnits".to_owned(),
                "Metric has data in more than one unit; specify Unit.".to_owned(),
            ));
        }
        let series = Series {
            // The default label; a query Label is applied (and rendered) on output.
            label: query.metric.name.clone(),
            points: points
                .into_iter()
                .filter(|p| Some(p.unit) == chosen)
                .filter_map(|p| Some((p.timestamp.millis(), p.value(stat)?)))
                .collect(),
        };
        if lazy {
            let finite = series.points.iter().filter(|(_, v)| v.is_finite()).count();
            produced += if index == first_result {
                finite.saturating_sub(first_offset)
            } else {
                finite
            };
        }
        stats.insert(q.id.clone(), (series, query.period));
    }
    let grid = match grid_start {
        Some(start) => (0..)
            .map(|k| start + k * grid_period * 1000)
            .take_while(|t| *t < grid_end)
            .take(100_800)
            .collect(),
        None => Vec::new(),
    };
    let mut evaluation = Evaluation {
        plan,
        stats,
        evaluated: HashMap::new(),
        grid,
        current: None,
        start: plan.start,
        end: plan.end,
        now,
        datums: &mut datums,
        listed: &listed,
    };
    // Every returned query as one or more labelled series, in request order.
    let mut series: Vec<Labelled> = Vec::new();
    for q in plan.queries.iter().filter(|q| q.return_data) {
        let members: Vec<Series> = match &q.kind {
            PlannedKind::Stat { .. } => vec![evaluation
                .stats
                .get(&q.id)
                .map(|(s, _)| s.clone())
                .unwrap_or_default()],
            PlannedKind::Math { .. } | PlannedKind::Insights { .. } => {
                match math::Context::resolve(&mut evaluation, &q.id)
                    .map_err(|reason| MetricsError::Validation(format!("Error in expression {}: {reason}", q.id)))?
                {
                    MValue::Series(s) => vec![s],
                    MValue::Array(items) => items,
                    _ => {
                        return Err(MetricsError::Validation(format!(
                            "Error in expression {}: the expression must return a time series or an array of time series",
                            q.id
                        )))
                    }
                }
            }
        };
        for member in members {
            let mut messages = unit_messages.get(&q.id).cloned().unwrap_or_default();
            let label = match &q.label {
                None => member.label.clone(),
                Some(label) => {
                    let points: Vec<(i64, f64)> = member
                        .points
                        .iter()
                        .filter(|(_, v)| v.is_finite())
                        .map(|(t, v)| (*t, *v))
                        .collect();
                    let cx = LabelContext {
                        default_label: member.label.clone(),
                        props: props_of(&q.kind, scope),
                        offset_minutes: plan.offset_minutes,
                        now,
                    };
                    labels::render(label, &points, &cx)
                }
            };
            let total = member.points.len();
            let mut values: Vec<(Timestamp, f64)> = member
                .points
                .into_iter()
                .filter(|(_, v)| v.is_finite())
                .map(|(t, v)| (Timestamp::from_millis(t), v))
                .collect();
            if values.len() < total {
                messages.push((
                    "ArithmeticError".to_owned(),
                    "One or more data points have been dropped due to non-numeric values (NaN, -Infinite, +Infinite)".to_owned(),
                ));
            }
            if plan.descending {
                values.reverse();
            }
            series.push((q.id.clone(), label, values, messages));
        }
    }
    let total_results = series.len();
    let (start_result, start_offset) = cursor.unwrap_or((0, 0));
    let mut budget = plan.max_datapoints;
    let mut out = Vec::new();
    let mut next = None;
    for (index, (id, label, values, messages)) in series.into_iter().enumerate().skip(start_result)
    {
        let offset = if index == start_result {
            start_offset.min(values.len())
        } else {
            0
        };
        let remaining = &values[offset..];
        let take = remaining.len().min(budget);
        budget -= take;
        let complete = take == remaining.len();
        out.push(DataResult {
            id,
            label,
            timestamps: remaining[..take].iter().map(|(t, _)| *t).collect(),
            values: remaining[..take].iter().map(|(_, v)| *v).collect(),
            complete,
            messages,
        });
        if !complete {
            next = Some((index, offset + take));
            break;
        }
        if budget == 0 {
            next = Some((index + 1, 0));
            break;
        }
    }
    // A cursor past the last result is no page at all.
    if next.is_some_and(|(index, _)| index >= total_results) {
        next = None;
    }
    Ok((out, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::model::{Sample, Unit, ValidatedDatum};

    const NOW: Timestamp = Timestamp::from_secs(1_719_748_800); // 2024-06-30T12:00:00Z
    const SCOPE: Scope<'static> = Scope {
        account_id: "123456789012",
        region: "eu-west-1",
    };

    fn datum(name: &str, minute: i64, v: f64) -> ValidatedDatum {
        ValidatedDatum {
            metric: MetricId {
                namespace: "App".into(),
                name: name.into(),
                dimensions: vec![],
            },
            timestamp: Timestamp::from_secs(NOW.secs() - 3600 + minute * 60),
            unit: Unit::NONE,
            storage_resolution: 60,
            sample: Sample::Value(v),
        }
    }

    fn query(id: &str, name: &str, stat: &str) -> DataQueryInput {
        DataQueryInput {
            id: Some(id.into()),
            metric_stat: Some(MetricStatInput {
                namespace: Some("App".into()),
                metric_name: Some(name.into()),
                period: Some(60),
                stat: Some(stat.into()),
                ..MetricStatInput::default()
            }),
            ..DataQueryInput::default()
        }
    }

    fn no_search() -> Vec<MetricId> {
        Vec::new()
    }

    fn request(queries: Vec<DataQueryInput>) -> DataRequest {
        DataRequest {
            queries,
            start: Some(Timestamp::from_secs(NOW.secs() - 3600)),
            end: Some(NOW),
            ..DataRequest::default()
        }
    }

    #[test]
    fn timezone_offsets_follow_daylight_saving() {
        // 2024-01-15 and 2024-07-15, 12:00 UTC.
        assert_eq!(
            timezone_offset_ms(Some("America/New_York"), 1_705_320_000_000),
            -5 * 3_600_000
        );
        assert_eq!(
            timezone_offset_ms(Some("America/New_York"), 1_721_044_800_000),
            -4 * 3_600_000
        );
        assert_eq!(timezone_offset_ms(Some("Asia/Tokyo"), 0), 9 * 3_600_000);
        assert_eq!(timezone_offset_ms(Some("Not/AZone"), 0), 0);
        assert_eq!(timezone_offset_ms(None, 0), 0);
    }

    /// The band trains on the 14 days before the query, without the
    /// detector's excluded ranges: a day of 5,000s inside one leaves no trace.
    #[test]
    fn band_training_leaves_out_excluded_ranges() {
        const HOUR: i64 = 3_600_000;
        let start = NOW.millis() - 3600 * 1000;
        let mut points = Vec::new();
        let mut t = start - 14 * 24 * HOUR;
        while t < start {
            // A daily shape, and one excluded day of outliers.
            let excluded = t >= start - 3 * 24 * HOUR && t < start - 2 * 24 * HOUR;
            let v = if excluded {
                5_000.0
            } else {
                10.0 + f64::from(((t / HOUR) % 24) as i32)
            };
            points.push(
                ValidatedDatum {
                    timestamp: Timestamp::from_millis(t),
                    ..datum("Latency", 0, v)
                }
                .point(),
            );
            t += 600_000;
        }
        let fetch = |q: &StatisticsQuery| Ok(crate::metrics::get::compute(q, &points));
        let mut m1 = query("m1", "Latency", "Average");
        if let Some(s) = m1.metric_stat.as_mut() {
            s.period = Some(600);
        }
        let band = DataQueryInput {
            id: Some("ad1".into()),
            expression: Some("ANOMALY_DETECTION_BAND(m1, 2)".into()),
            ..DataQueryInput::default()
        };
        let run = |training: Vec<BandTraining>| {
            let plan = plan(&request(vec![m1.clone(), band.clone()]), NOW)
                .unwrap()
                .with_band_training(training);
            let (results, _) = execute(&plan, SCOPE, NOW, None, fetch, no_search).unwrap();
            results
                .into_iter()
                .filter(|r| r.id == "ad1")
                .map(|r| r.values)
                .collect::<Vec<_>>()
        };
        let excluded = BandTraining {
            metric: MetricId {
                namespace: "App".into(),
                name: "Latency".into(),
                dimensions: vec![],
            },
            stat: "Average".into(),
            excluded: vec![(start - 3 * 24 * HOUR, start - 2 * 24 * HOUR)],
            timezone: None,
        };
        let clean = run(vec![excluded]);
        let polluted = run(Vec::new());
        // Six 10-minute buckets in the hour, all in one hour-of-week slot
        // whose 12 training samples (two weeks) are all 10 + hour.
        let hour = (start / HOUR) % 24;
        let expected = 10.0 + hour as f64;
        assert_eq!(clean[0].len(), 6);
        for (upper, lower) in clean[0].iter().zip(&clean[1]) {
            // No deviation anywhere: the floor of 1 % of the mean.
            assert!(
                (upper - (expected + 2.0 * 0.01 * expected)).abs() < 1e-9,
                "{upper}"
            );
            assert!(
                (lower - (expected - 2.0 * 0.01 * expected)).abs() < 1e-9,
                "{lower}"
            );
        }
        assert!(polluted[0][0] > 1_000.0, "{:?}", polluted[0]);
    }

    #[test]
    fn labels_know_account_and_region() {
        let points = [datum("Requests", 0, 3.0).point()];
        let fetch = |q: &StatisticsQuery| Ok(crate::metrics::get::compute(q, &points));
        let mut q = query("m1", "Requests", "Sum");
        q.label = Some("${PROP('Region')} ${PROP('AccountId')} ${PROP('Stat')} ${MAX}".into());
        let plan = plan(&request(vec![q]), NOW).unwrap();
        let (results, _) = execute(&plan, SCOPE, NOW, None, fetch, no_search).unwrap();
        assert_eq!(results[0].label, "eu-west-1 123456789012 Sum 3");
    }

    /// GetMetricData pages by datapoints; only GetMetricStatistics has the
    /// 1,440-per-call limit.
    #[test]
    fn metric_stats_are_not_held_to_1440_datapoints() {
        let mut r = request(vec![query("m1", "Requests", "Sum")]);
        r.start = Some(Timestamp::from_secs(NOW.secs() - 2 * 86_400));
        let plan = plan(&r, NOW).expect("2,880 one-minute buckets plan");
        let points: Vec<_> = (0..2880)
            .map(|m| {
                let mut d = datum("Requests", m, 1.0);
                d.timestamp = Timestamp::from_secs(NOW.secs() - 2 * 86_400 + m * 60);
                d.point()
            })
            .collect();
        let fetch = |q: &StatisticsQuery| Ok(crate::metrics::get::compute(q, &points));
        let (results, next) = execute(&plan, SCOPE, NOW, None, fetch, no_search).unwrap();
        assert_eq!(results[0].timestamps.len(), 2880);
        assert!(next.is_none());
    }

    #[test]
    fn series_labels_order_and_pages() {
        let store = [
            datum("Requests", 0, 10.0),
            datum("Requests", 1, 0.0),
            datum("Requests", 2, 5.0),
            datum("Errors", 0, 1.0),
        ];
        let fetch = |q: &StatisticsQuery| {
            let points: Vec<_> = store
                .iter()
                .filter(|d| d.metric == q.metric)
                .map(ValidatedDatum::point)
                .collect();
            Ok(crate::metrics::get::compute(q, &points))
        };
        let mut hidden = query("m1", "Errors", "Sum");
        hidden.return_data = Some(false);
        let mut labelled = query("m2", "Requests", "Sum");
        labelled.label = Some("All requests".into());
        let plan = plan(
            &request(vec![hidden, labelled, query("m3", "Requests", "p50")]),
            NOW,
        )
        .unwrap();
        let (results, next) = execute(&plan, SCOPE, NOW, None, fetch, no_search).unwrap();
        assert!(next.is_none());
        assert_eq!(results.len(), 2);
        assert_eq!(results[0].label, "All requests");
        assert_eq!(
            results[0].values,
            vec![5.0, 0.0, 10.0],
            "newest first by default"
        );
        assert_eq!(results[1].label, "Requests");
        assert!(results.iter().all(|r| r.complete));

        let mut paged = request(vec![
            query("a", "Requests", "Sum"),
            query("b", "Requests", "Maximum"),
        ]);
        paged.max_datapoints = Some(2);
        paged.scan_by = Some("TimestampAscending".into());
        let plan = super::plan(&paged, NOW).unwrap();
        let mut cursor = None;
        let mut pages = Vec::new();
        loop {
            let (results, next) = execute(&plan, SCOPE, NOW, cursor, fetch, no_search).unwrap();
            pages.push(results);
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let flat: Vec<(String, Vec<f64>, bool)> = pages
            .iter()
            .flatten()
            .map(|r| (r.id.clone(), r.values.clone(), r.complete))
            .collect();
        assert_eq!(
            flat,
            vec![
                ("a".into(), vec![10.0, 0.0], false),
                ("a".into(), vec![5.0], true),
                ("b".into(), vec![10.0], false),
                ("b".into(), vec![0.0, 5.0], true),
            ]
        );
    }

    #[test]
    fn spec_error_rate_example() {
        // Errors 12:00=1, 12:01=0; Requests 12:00=10, 12:01=0, 12:02=5 (minutes 0..2 here).
        let store = [
            datum("Errors", 0, 1.0),
            datum("Errors", 1, 0.0),
            datum("Requests", 0, 10.0),
            datum("Requests", 1, 0.0),
            datum("Requests", 2, 5.0),
        ];
        let fetch = |q: &StatisticsQuery| {
            let points: Vec<_> = store
                .iter()
                .filter(|d| d.metric == q.metric)
                .map(ValidatedDatum::point)
                .collect();
            Ok(crate::metrics::get::compute(q, &points))
        };
        let mut m1 = query("m1", "Errors", "Sum");
        m1.return_data = Some(false);
        let mut m2 = query("m2", "Requests", "Sum");
        m2.return_data = Some(false);
        let rate = DataQueryInput {
            id: Some("rate".into()),
            expression: Some("100*m1/m2".into()),
            label: Some("Error %".into()),
            ..DataQueryInput::default()
        };
        let total = DataQueryInput {
            id: Some("all".into()),
            expression: Some("METRICS()".into()),
            ..DataQueryInput::default()
        };
        let searched = DataQueryInput {
            id: Some("found".into()),
            expression: Some("SEARCH('{App} MetricName=\"Requests\"', 'Maximum')".into()),
            period: Some(60),
            ..DataQueryInput::default()
        };
        let plan = plan(&request(vec![m1, m2, rate, total, searched]), NOW).unwrap();
        let listed = || {
            let mut metrics: Vec<MetricId> = store.iter().map(|d| d.metric.clone()).collect();
            metrics.dedup();
            metrics
        };
        let (results, _) = execute(&plan, SCOPE, NOW, None, fetch, listed).unwrap();
        let found: Vec<&DataResult> = results.iter().filter(|r| r.id == "found").collect();
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].label.as_str(), found[0].values.as_slice()),
            ("Requests", &[5.0, 0.0, 10.0][..])
        );
        assert_eq!(results[0].label, "Error %");
        let start = NOW.secs() - 3600;
        assert_eq!(
            results[0]
                .timestamps
                .iter()
                .map(|t| t.secs() - start)
                .collect::<Vec<_>>(),
            vec![120, 0],
            "12:01 dropped (division by zero); 12:02 kept with Errors missing as 0"
        );
        assert_eq!(results[0].values, vec![0.0, 10.0]);
        // METRICS() returns one result per metric, all with the same Id.
        assert_eq!(
            results
                .iter()
                .filter(|r| r.id == "all")
                .map(|r| r.label.as_str())
                .collect::<Vec<_>>(),
            ["Errors", "Requests"]
        );
    }

    #[test]
    fn validation() {
        let err = |r: DataRequest| plan(&r, NOW).unwrap_err();
        assert!(matches!(
            err(request(vec![query("Bad", "X", "Sum")])),
            MetricsError::Validation(_)
        ));
        assert!(matches!(
            err(request(vec![
                query("a", "X", "Sum"),
                query("a", "Y", "Sum")
            ])),
            MetricsError::Validation(_)
        ));
        let expr = |e: &str| DataQueryInput {
            id: Some("e1".into()),
            expression: Some(e.into()),
            ..DataQueryInput::default()
        };
        let with_metric = |e: &str| request(vec![query("m1", "X", "Sum"), expr(e)]);
        assert!(
            matches!(err(with_metric("m1 +")), MetricsError::Validation(m) if m.starts_with("Error in expression e1:"))
        );
        assert!(
            matches!(err(with_metric("m2 * 2")), MetricsError::Validation(m) if m == "Error in expression e1: Unrecognized metric id m2")
        );
        let cycle = vec![
            DataQueryInput {
                id: Some("a".into()),
                expression: Some("b + 1".into()),
                ..DataQueryInput::default()
            },
            DataQueryInput {
                id: Some("b".into()),
                expression: Some("a + 1".into()),
                ..DataQueryInput::default()
            },
        ];
        assert!(
            matches!(err(request(cycle)), MetricsError::Validation(m) if m.contains("circular"))
        );
        assert!(matches!(
            err(request(vec![])),
            MetricsError::MissingParameter(_)
        ));
        let mut bad_stat = query("a", "X", "Median");
        bad_stat.metric_stat.as_mut().unwrap().stat = Some("p101".into());
        assert!(matches!(
            err(request(vec![bad_stat])),
            MetricsError::InvalidParameterValue(_)
        ));
        let mut scan = request(vec![query("a", "X", "Sum")]);
        scan.scan_by = Some("Sideways".into());
        assert!(matches!(err(scan), MetricsError::Validation(_)));
    }
}
