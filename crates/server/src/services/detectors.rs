//! CloudWatch metric anomaly detectors: PutAnomalyDetector,
//! DescribeAnomalyDetectors, DeleteAnomalyDetector (`spec/cloudwatch.md`
//! §9.1). Wire values in, `trailwatch_core::detectors` calls, wire values out;
//! changes commit with the call's audit record.

use trailwatch_core::anomaly::{Training, TRAINING_DAYS};
use trailwatch_core::detectors::{
    dimensions, target, validate_put, ConfigurationInput, DescribeFilter, Detector, DetectorError,
    MetricStatInput, PutInput, QueryInput, SingleInput, Target,
};
use trailwatch_core::metrics::get::StatisticsQuery;
use trailwatch_core::metrics::model::{Dimension, MetricId};
use trailwatch_core::token::filters_hash;
use trailwatch_protocol::{ApiError, Value};
use trailwatch_types::Timestamp;

use super::alarms::{dimensions_value, opt, queries_value};
use super::{CallContext, Outcome};
use crate::app::App;

/// Tokens older than this are refused, as other catalog listings do.
const TOKEN_MAX_AGE_SECS: i64 = 24 * 3600;

fn map_error(err: DetectorError) -> ApiError {
    match err {
        DetectorError::InvalidParameterValue(m) => {
            ApiError::new("InvalidParameterValueException", 400, m)
                .with_query_code("InvalidParameterValue")
        }
        DetectorError::InvalidParameterCombination(m) => {
            ApiError::new("InvalidParameterCombinationException", 400, m)
                .with_query_code("InvalidParameterCombination")
        }
        DetectorError::MissingParameter(m) => {
            ApiError::new("MissingRequiredParameterException", 400, m)
                .with_query_code("MissingParameter")
        }
        DetectorError::LimitExceeded(m) => {
            ApiError::new("LimitExceededException", 400, m).with_query_code("LimitExceeded")
        }
        DetectorError::NotFound(m) => ApiError::new("ResourceNotFoundException", 404, m)
            .with_query_code("ResourceNotFoundException"),
        DetectorError::Storage(m) => {
            tracing::error!(error = %m, "anomaly detector storage failed");
            ApiError::new("InternalServiceFault", 500, "Internal service error.")
                .with_query_code("InternalServiceError")
        }
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::to_owned)
}

fn raw_dimensions(v: Option<&Value>) -> Vec<(Option<String>, Option<String>)> {
    v.and_then(Value::as_list)
        .unwrap_or_default()
        .iter()
        .map(|d| (text(d.get("Name")), text(d.get("Value"))))
        .collect()
}

fn millis(v: Option<&Value>) -> Option<i64> {
    let v = v?;
    v.as_timestamp()
        .map(|t| t.millis())
        .or_else(|| v.as_f64().map(|s| (s * 1000.0) as i64))
}

fn single_input(v: &Value) -> SingleInput {
    SingleInput {
        account_id: text(v.get("AccountId")),
        namespace: text(v.get("Namespace")),
        metric_name: text(v.get("MetricName")),
        dimensions: raw_dimensions(v.get("Dimensions")),
        stat: text(v.get("Stat")),
    }
}

fn math_input(v: &Value) -> Vec<QueryInput> {
    v.get("MetricDataQueries")
        .and_then(Value::as_list)
        .unwrap_or_default()
        .iter()
        .map(|q| QueryInput {
            id: text(q.get("Id")),
            metric_stat: q.get("MetricStat").map(|s| {
                let metric = s.get("Metric");
                MetricStatInput {
                    namespace: metric.and_then(|m| text(m.get("Namespace"))),
                    metric_name: metric.and_then(|m| text(m.get("MetricName"))),
                    dimensions: raw_dimensions(metric.and_then(|m| m.get("Dimensions"))),
                    period: s.get("Period").and_then(Value::as_i64),
                    stat: text(s.get("Stat")),
                    unit: text(s.get("Unit")),
                }
            }),
            expression: text(q.get("Expression")),
            label: text(q.get("Label")),
            return_data: q.get("ReturnData").and_then(Value::as_bool),
            period: q.get("Period").and_then(Value::as_i64),
            account_id: text(q.get("AccountId")),
        })
        .collect()
}

/// The identity members of a Put or Delete call.
fn target_of(input: &Value) -> Result<Target, ApiError> {
    let legacy = SingleInput {
        account_id: None,
        ..single_input(input)
    };
    let single = input.get("SingleMetricAnomalyDetector").map(single_input);
    let math = input.get("MetricMathAnomalyDetector").map(math_input);
    target(&legacy, single.as_ref(), math.as_deref()).map_err(map_error)
}

pub(super) fn put_anomaly_detector(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let configuration = input.get("Configuration").map(|c| ConfigurationInput {
        excluded_time_ranges: c
            .get("ExcludedTimeRanges")
            .and_then(Value::as_list)
            .unwrap_or_default()
            .iter()
            .map(|r| (millis(r.get("StartTime")), millis(r.get("EndTime"))))
            .collect(),
        metric_timezone: text(c.get("MetricTimezone")),
        adaptation_speed: text(c.get("AdaptationSpeed")),
        outlier_filtering_strength: text(c.get("OutlierFilteringStrength")),
    });
    let periodic_spikes = input
        .get("MetricCharacteristics")
        .map(|m| m.get("PeriodicSpikes").and_then(Value::as_bool));
    let detector = validate_put(&PutInput {
        legacy: SingleInput {
            account_id: None,
            ..single_input(input)
        },
        single: input.get("SingleMetricAnomalyDetector").map(single_input),
        math: input.get("MetricMathAnomalyDetector").map(math_input),
        configuration,
        periodic_spikes,
    })
    .map_err(map_error)?;
    let changes = app
        .detectors
        .put_changes(&cx.principal.account_id, cx.region, &detector)
        .map_err(map_error)?;
    Ok(Outcome::write(
        Value::structure([("AnomalyDetectorId", Value::string(&detector.id))]),
        changes,
    ))
}

/// The detector's training state. Reading the single metric's hourly sample
/// counts over the last 14 days from the metric store is cheap (at most 336
/// buckets from the tiers), so single-metric detectors get
/// `anomaly::Training::of` over them; metric math detectors would need the
/// whole expression evaluated and answer `PENDING_TRAINING`.
fn state_value(app: &App, cx: &CallContext<'_>, detector: &Detector) -> &'static str {
    let Target::Single(s) = &detector.target else {
        return Training::Pending.as_str();
    };
    let account = s.account_id.as_deref().unwrap_or(&cx.principal.account_id);
    let end_ms = cx.now.millis().div_euclid(3_600_000) * 3_600_000 + 3_600_000;
    let q = StatisticsQuery {
        metric: MetricId {
            namespace: s.namespace.clone(),
            name: s.metric_name.clone(),
            dimensions: s
                .dimensions
                .iter()
                .map(|(name, value)| Dimension {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
        },
        start: Timestamp::from_millis(end_ms - TRAINING_DAYS * 24 * 3_600_000),
        end: Timestamp::from_millis(end_ms),
        period: 3600,
        statistics: vec!["SampleCount".to_owned()],
        extended: Vec::new(),
        unit: None,
        empty: false,
    };
    let points: Vec<(i64, f64)> = match app.metrics.statistics(account, cx.region, &q) {
        Ok(points) => points
            .iter()
            .filter_map(|p| Some((p.timestamp.millis(), p.value("SampleCount")?)))
            .filter(|(_, n)| *n > 0.0)
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "anomaly detector training read failed");
            Vec::new()
        }
    };
    Training::of(&points).as_str()
}

fn single_value(s: &trailwatch_core::detectors::SingleMetric, with_account: bool) -> Value {
    let mut members = Vec::new();
    if with_account {
        members.push(("AccountId", opt(&s.account_id)));
    }
    members.extend([
        ("Namespace", Value::string(&s.namespace)),
        ("MetricName", Value::string(&s.metric_name)),
        ("Dimensions", dimensions_value(&s.dimensions)),
        ("Stat", Value::string(&s.stat)),
    ]);
    Value::structure(members)
}

/// One `AnomalyDetector` output structure, members in model order.
fn detector_value(detector: &Detector, state: &str) -> Value {
    let (legacy, single, math) = match &detector.target {
        Target::Single(s) => (Some(s), single_value(s, true), Value::Null),
        Target::Math { queries } => (
            None,
            Value::Null,
            Value::structure([("MetricDataQueries", queries_value(queries))]),
        ),
    };
    let configuration = detector.configuration.as_ref().map_or(Value::Null, |c| {
        Value::structure([
            (
                "ExcludedTimeRanges",
                Value::List(
                    c.excluded_time_ranges
                        .iter()
                        .map(|(s, e)| {
                            Value::structure([
                                ("StartTime", Value::Timestamp(Timestamp::from_millis(*s))),
                                ("EndTime", Value::Timestamp(Timestamp::from_millis(*e))),
                            ])
                        })
                        .collect(),
                ),
            ),
            ("MetricTimezone", opt(&c.metric_timezone)),
            ("AdaptationSpeed", opt(&c.adaptation_speed)),
            (
                "OutlierFilteringStrength",
                opt(&c.outlier_filtering_strength),
            ),
        ])
    });
    Value::structure([
        ("AnomalyDetectorId", Value::string(&detector.id)),
        (
            "Namespace",
            legacy.map_or(Value::Null, |s| Value::string(&s.namespace)),
        ),
        (
            "MetricName",
            legacy.map_or(Value::Null, |s| Value::string(&s.metric_name)),
        ),
        (
            "Dimensions",
            legacy.map_or(Value::Null, |s| dimensions_value(&s.dimensions)),
        ),
        (
            "Stat",
            legacy.map_or(Value::Null, |s| Value::string(&s.stat)),
        ),
        ("Configuration", configuration),
        ("StateValue", Value::string(state)),
        (
            "MetricCharacteristics",
            detector.periodic_spikes.map_or(Value::Null, |p| {
                Value::structure([("PeriodicSpikes", p.map_or(Value::Null, Value::Bool))])
            }),
        ),
        ("SingleMetricAnomalyDetector", single),
        ("MetricMathAnomalyDetector", math),
    ])
}

fn max_results(input: &Value) -> Result<usize, ApiError> {
    match input.get("MaxResults") {
        None => Ok(100),
        Some(v) => match v.as_i64() {
            Some(n) if (1..=100).contains(&n) => Ok(n as usize),
            _ => Err(map_error(DetectorError::InvalidParameterValue(
                "The parameter MaxResults must be between 1 and 100.".to_owned(),
            ))),
        },
    }
}

pub(super) fn describe_anomaly_detectors(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let filter = DescribeFilter {
        ids: input.strings("AnomalyDetectorIds"),
        namespace: text(input.get("Namespace")),
        metric_name: text(input.get("MetricName")),
        dimensions: dimensions(&raw_dimensions(input.get("Dimensions")), "Dimensions")
            .map_err(map_error)?,
        types: input.strings("AnomalyDetectorTypes"),
    };
    filter.validate().map_err(map_error)?;
    let limit = max_results(input)?;
    let account = &cx.principal.account_id;
    let mut ids = filter.ids.clone();
    ids.sort();
    let mut types = filter.types.clone();
    types.sort();
    let dims: Vec<String> = filter
        .dimensions
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    let filters = filters_hash(&[
        account,
        cx.region,
        "DescribeAnomalyDetectors",
        &ids.join("\u{0}"),
        filter.namespace.as_deref().unwrap_or_default(),
        filter.metric_name.as_deref().unwrap_or_default(),
        &dims.join("\u{0}"),
        &types.join("\u{0}"),
        &limit.to_string(),
    ]);
    let after: Option<String> = match text(input.get("NextToken")) {
        Some(token) => Some(
            app.tokens
                .open(&token, &filters, cx.now, TOKEN_MAX_AGE_SECS)
                .ok_or_else(|| {
                    ApiError::new(
                        "InvalidNextToken",
                        400,
                        "The service couldn't process your request because the next token is invalid.",
                    )
                })?,
        ),
        None => None,
    };
    let all = app.detectors.list(account, cx.region).map_err(map_error)?;
    let mut page = Vec::new();
    let mut more = false;
    for d in all
        .iter()
        .filter(|d| filter.matches(d))
        .filter(|d| after.as_deref().is_none_or(|a| d.id.as_str() > a))
    {
        if page.len() == limit {
            more = true;
            break;
        }
        page.push(d);
    }
    let next = match (more, page.last()) {
        (true, Some(last)) => Value::String(app.tokens.issue(&filters, &last.id, cx.now)),
        _ => Value::Null,
    };
    let detectors = page
        .iter()
        .map(|d| detector_value(d, state_value(app, cx, d)))
        .collect();
    Ok(Outcome::read(Value::structure([
        ("AnomalyDetectors", Value::List(detectors)),
        ("NextToken", next),
    ])))
}

pub(super) fn delete_anomaly_detector(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let target = target_of(input)?;
    let changes = app
        .detectors
        .delete_changes(&cx.principal.account_id, cx.region, &target)
        .map_err(map_error)?;
    Ok(Outcome::write(Value::empty_struct(), changes))
}
