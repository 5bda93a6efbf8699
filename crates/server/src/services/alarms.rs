//! CloudWatch alarm APIs (`spec/cloudwatch.md` §7.1, §7.7–7.9, §8):
//! PutMetricAlarm, PutCompositeAlarm, DescribeAlarms, DescribeAlarmsForMetric,
//! DeleteAlarms, SetAlarmState, Enable/DisableAlarmActions and
//! DescribeAlarmHistory. Wire values in, `trailwatch_core::alarms` and
//! `composites` calls, wire values out; changes, the immediate evaluation of a
//! Put, composite cascades and action messages commit with the call's audit
//! record. Scheduled evaluation is `server::evaluator`.

use trailwatch_core::actions::Transition;
use trailwatch_core::alarms::{
    alarm_arn, check_alarm_types, check_state, constraint, validate_put, ActionConfiguration,
    AlarmError, DescribeFilter, EvaluationWindow, HistoryFilter, HistoryItem, MetricAlarm,
    MetricFilter, MetricStatInput, PutMetricAlarmInput, QueryInput, Scope, TagsPropagation,
    HISTORY_TYPES,
};
use trailwatch_core::composites::{
    validate_put as validate_composite, ChildState, CompositeAlarm, CompositeInput,
};
use trailwatch_core::engine;
use trailwatch_core::tags::{validate, Tags};
use trailwatch_core::token::filters_hash;
use trailwatch_protocol::{ApiError, Value};
use trailwatch_types::Timestamp;

use super::actions::run_actions;
use super::tagging::tag_list;
use super::{CallContext, Outcome};
use crate::app::App;

/// Tokens older than this are refused, as other catalog listings do.
const TOKEN_MAX_AGE_SECS: i64 = 24 * 3600;

fn map_error(err: AlarmError) -> ApiError {
    match err {
        AlarmError::Validation(m) => {
            ApiError::new("ValidationException", 400, m).with_query_code("ValidationError")
        }
        AlarmError::InvalidParameterValue(m) => {
            ApiError::new("InvalidParameterValueException", 400, m)
                .with_query_code("InvalidParameterValue")
        }
        AlarmError::InvalidParameterCombination(m) => {
            ApiError::new("InvalidParameterCombinationException", 400, m)
                .with_query_code("InvalidParameterCombination")
        }
        AlarmError::MissingParameter(m) => {
            ApiError::new("MissingRequiredParameterException", 400, m)
                .with_query_code("MissingParameter")
        }
        AlarmError::InvalidNextToken(m) => ApiError::new("InvalidNextToken", 400, m),
        AlarmError::NotFound(m) => {
            ApiError::new("ResourceNotFound", 404, m).with_query_code("ResourceNotFound")
        }
        AlarmError::InvalidFormat(m) => {
            ApiError::new("InvalidFormatFault", 400, m).with_query_code("InvalidFormat")
        }
        AlarmError::Storage(m) => {
            tracing::error!(error = %m, "alarm storage failed");
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

/// An integer member: absent is `None`, anything but an integer is an error.
fn integer(input: &Value, name: &str) -> Result<Option<i64>, ApiError> {
    match input.get(name) {
        None => Ok(None),
        Some(v) => v.as_i64().map(Some).ok_or_else(|| {
            map_error(AlarmError::InvalidParameterValue(format!(
                "The value for parameter {name} is not an integer."
            )))
        }),
    }
}

fn required(input: &Value, name: &str) -> Result<String, ApiError> {
    text(input.get(name)).ok_or_else(|| {
        map_error(AlarmError::MissingParameter(format!(
            "The parameter {name} is required."
        )))
    })
}

fn scope<'a>(cx: &'a CallContext<'a>) -> Scope<'a> {
    Scope {
        account: &cx.principal.account_id,
        region: cx.region,
        request_id: cx.request_id,
        now: cx.now,
    }
}

fn max_records(input: &Value) -> Result<usize, ApiError> {
    match integer(input, "MaxRecords")? {
        None => Ok(50),
        Some(n) if (1..=100).contains(&n) => Ok(n as usize),
        Some(n) => Err(map_error(constraint(
            &n.to_string(),
            "maxRecords",
            if n < 1 {
                "Member must have value greater than or equal to 1"
            } else {
                "Member must have value less than or equal to 100"
            },
        ))),
    }
}

fn bad_token() -> ApiError {
    map_error(AlarmError::InvalidNextToken(
        "The service couldn't process your request because the next token is invalid.".to_owned(),
    ))
}

fn put_input(input: &Value) -> Result<PutMetricAlarmInput, ApiError> {
    let threshold = match input.get("Threshold") {
        None => None,
        Some(v) => Some(v.as_f64().ok_or_else(|| {
            map_error(AlarmError::InvalidParameterValue(
                "The value for parameter Threshold is not a number.".to_owned(),
            ))
        })?),
    };
    let metrics = input.get("Metrics").map(|list| {
        list.as_list()
            .unwrap_or_default()
            .iter()
            .map(|q| QueryInput {
                id: text(q.get("Id")),
                metric_stat: q.get("MetricStat").map(|s| MetricStatInput {
                    namespace: s.get("Metric").and_then(|m| text(m.get("Namespace"))),
                    metric_name: s.get("Metric").and_then(|m| text(m.get("MetricName"))),
                    dimensions: raw_dimensions(s.get("Metric").and_then(|m| m.get("Dimensions"))),
                    period: s.get("Period").and_then(Value::as_i64),
                    stat: text(s.get("Stat")),
                    unit: text(s.get("Unit")),
                }),
                expression: text(q.get("Expression")),
                label: text(q.get("Label")),
                return_data: q.get("ReturnData").and_then(Value::as_bool),
                period: q.get("Period").and_then(Value::as_i64),
                account_id: text(q.get("AccountId")),
            })
            .collect()
    });
    Ok(PutMetricAlarmInput {
        alarm_name: text(input.get("AlarmName")),
        alarm_description: text(input.get("AlarmDescription")),
        actions_enabled: input.get("ActionsEnabled").and_then(Value::as_bool),
        ok_actions: input.strings("OKActions"),
        alarm_actions: input.strings("AlarmActions"),
        insufficient_data_actions: input.strings("InsufficientDataActions"),
        metric_name: text(input.get("MetricName")),
        namespace: text(input.get("Namespace")),
        statistic: text(input.get("Statistic")),
        extended_statistic: text(input.get("ExtendedStatistic")),
        dimensions: input.get("Dimensions").map(|d| raw_dimensions(Some(d))),
        period: integer(input, "Period")?,
        unit: text(input.get("Unit")),
        evaluation_periods: integer(input, "EvaluationPeriods")?,
        datapoints_to_alarm: integer(input, "DatapointsToAlarm")?,
        threshold,
        comparison_operator: text(input.get("ComparisonOperator")),
        treat_missing_data: text(input.get("TreatMissingData")),
        evaluate_low_sample_count_percentile: text(input.get("EvaluateLowSampleCountPercentile")),
        metrics,
        threshold_metric_id: text(input.get("ThresholdMetricId")),
        evaluation_criteria: input.get("EvaluationCriteria").is_some()
            || input.get("EvaluationInterval").is_some(),
        evaluation_window: input.get("EvaluationWindow").map(|w| {
            let wall = w.get("WallClockWindow");
            (
                wall.is_some(),
                wall.and_then(|c| text(c.get("Timezone"))),
                w.get("SlidingWindow").is_some(),
            )
        }),
        warm_up: input.get("WarmUpConfiguration").map(|w| {
            (
                w.get("WarmUpPeriodDurationInMinutes")
                    .and_then(Value::as_i64),
                w.get("OnlyStartEvaluatingAfterWarmUpPeriodEnds")
                    .and_then(Value::as_bool),
            )
        }),
        action_configuration: input
            .get("ActionConfiguration")
            .map(|a| ActionConfiguration {
                tags_propagation: a.get("AlarmTagsPropagation").map(|t| TagsPropagation {
                    enabled: t.get("Enabled").and_then(Value::as_bool),
                    included_tag_keys: t
                        .get("IncludedTagKeys")
                        .map(|_| t.strings("IncludedTagKeys")),
                    excluded_tag_keys: t
                        .get("ExcludedTagKeys")
                        .map(|_| t.strings("ExcludedTagKeys")),
                }),
            }),
    })
}

/// Largest PutMetricAlarm request, decoded (`spec/protocols.md` §13).
const PUT_ALARM_MAX_BYTES: usize = 120 * 1024;

pub(super) fn put_metric_alarm(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let (raw, decoded) = cx.body_bytes;
    if raw.max(decoded) > PUT_ALARM_MAX_BYTES {
        return Err(map_error(AlarmError::InvalidParameterValue(format!(
            "The request payload for PutMetricAlarm must not exceed {PUT_ALARM_MAX_BYTES} bytes."
        ))));
    }
    let config = validate_put(&put_input(input)?).map_err(map_error)?;
    let tags = validate(&tag_list(input.get("Tags")), "Tags").map_err(super::tagging::map_error)?;
    let scope = scope(cx);
    if app
        .composites
        .get(scope.account, scope.region, &config.name)
        .map_err(map_error)?
        .is_some()
    {
        return Err(map_error(AlarmError::Validation(format!(
            "An alarm named {} already exists as a composite alarm.",
            config.name
        ))));
    }
    let arn = alarm_arn(scope.account, scope.region, &config.name);
    let (mut changes, created, alarm) =
        app.alarms.put_changes(&scope, config).map_err(map_error)?;
    if created {
        check_quota(app, &scope)?;
        // Tags count only when the alarm is created (§7.1).
        changes.extend(Tags::create_changes(&arn, &tags));
    }
    changes.extend(implicit_detector(app, &scope, &alarm)?);
    // A new or updated alarm is evaluated at once (§7.1), at the current
    // instant of its cadence.
    let now = cx.now.millis();
    let t = engine::floor(now, engine::cadence_ms(&alarm.config));
    let readings = engine::read(
        &app.metrics,
        &app.detectors,
        scope.account,
        scope.region,
        &alarm,
        t,
        cx.now,
    );
    let mut transitions = Vec::new();
    if let Some(write) = engine::evaluate(&alarm, readings, t, now) {
        let (written, ops) = app
            .alarms
            .state_changes(&scope, &alarm, &write, now, 1)
            .map_err(map_error)?;
        changes.extend(ops);
        followed(
            app,
            &scope,
            &alarm,
            &written,
            2,
            &mut changes,
            &mut transitions,
        )?;
    }
    let mut outcome = Outcome::write(Value::empty_struct(), changes);
    run_actions(
        app,
        &mut outcome,
        &transitions,
        &format!("{}-actions", cx.request_id),
        cx.now,
    );
    Ok(outcome)
}

/// An alarm on the band of a metric that has no anomaly detector creates
/// one, as the console does (§9.2 point 5).
fn implicit_detector(
    app: &App,
    scope: &Scope<'_>,
    alarm: &MetricAlarm,
) -> Result<Vec<trailwatch_core::audit::Change>, ApiError> {
    use trailwatch_core::detectors::{Detector, SingleMetric, Target};
    let c = &alarm.config;
    let Some(band) = c
        .threshold_metric_id
        .as_deref()
        .and_then(|id| c.metrics.iter().find(|q| q.id == id))
        .and_then(|q| q.expression.as_deref())
    else {
        return Ok(Vec::new());
    };
    // The band's first argument names the watched metric.
    let argument = band
        .split_once('(')
        .map(|(_, rest)| rest.split([',', ')']).next().unwrap_or("").trim())
        .unwrap_or("");
    let Some(stat) = c
        .metrics
        .iter()
        .find(|q| q.id == argument)
        .and_then(|q| q.metric_stat.as_ref())
    else {
        return Ok(Vec::new());
    };
    let mut dimensions = stat.dimensions.clone();
    dimensions.sort();
    let target = Target::Single(SingleMetric {
        account_id: None,
        namespace: stat.namespace.clone(),
        metric_name: stat.metric_name.clone(),
        dimensions,
        stat: stat.stat.clone(),
    });
    let id = target.id();
    let detector_error = |e: trailwatch_core::detectors::DetectorError| {
        map_error(AlarmError::Storage(e.to_string()))
    };
    let existing = app
        .detectors
        .list(scope.account, scope.region)
        .map_err(detector_error)?;
    if existing.iter().any(|d| d.id == id) {
        return Ok(Vec::new());
    }
    let detector = Detector {
        v: 1,
        id,
        target,
        configuration: None,
        periodic_spikes: None,
    };
    // Past the detector quota the alarm is still saved, without a detector.
    Ok(app
        .detectors
        .put_changes(scope.account, scope.region, &detector)
        .unwrap_or_default())
}

/// Metric alarms one account may have in one region [TW: AWS publishes no
/// fixed number; this bounds the evaluation work of one tenant].
pub(super) const ALARM_QUOTA: usize = 200_000;

fn check_quota(app: &App, scope: &Scope<'_>) -> Result<(), ApiError> {
    let count = app
        .alarms
        .count(scope.account, scope.region)
        .map_err(map_error)?;
    if count >= ALARM_QUOTA {
        return Err(ApiError::new(
            "LimitExceededFault",
            400,
            format!("The maximum number of alarms ({ALARM_QUOTA}) has been reached."),
        )
        .with_query_code("LimitExceeded"));
    }
    Ok(())
}

/// What follows a metric alarm's state write from `old` to `written`: when
/// StateValue changed, its transition and the cascade through composites
/// (history keys from `n`).
fn followed(
    app: &App,
    scope: &Scope<'_>,
    old: &MetricAlarm,
    written: &MetricAlarm,
    n: usize,
    changes: &mut Vec<trailwatch_core::audit::Change>,
    transitions: &mut Vec<Transition>,
) -> Result<(), ApiError> {
    if written.state_value == old.state_value {
        return Ok(());
    }
    transitions.push(Transition::of_metric_alarm(
        written,
        scope.account,
        scope.region,
        &old.state_value,
    ));
    let cascade = app
        .composites
        .cascade(scope, &app.alarms, vec![child_state(written)], n)
        .map_err(map_error)?;
    changes.extend(cascade.ops);
    transitions.extend(cascade.transitions);
    Ok(())
}

/// A metric alarm's new state as composite rules see it.
fn child_state(alarm: &MetricAlarm) -> (String, ChildState) {
    (
        alarm.config.name.clone(),
        ChildState {
            arn: alarm.arn.clone(),
            state: alarm.state_value.clone(),
            at_ms: alarm.state_transitioned_ms,
        },
    )
}

pub(super) fn put_composite_alarm(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let config = validate_composite(&CompositeInput {
        alarm_name: text(input.get("AlarmName")),
        alarm_description: text(input.get("AlarmDescription")),
        actions_enabled: input.get("ActionsEnabled").and_then(Value::as_bool),
        ok_actions: input.strings("OKActions"),
        alarm_actions: input.strings("AlarmActions"),
        insufficient_data_actions: input.strings("InsufficientDataActions"),
        alarm_rule: text(input.get("AlarmRule")),
        actions_suppressor: text(input.get("ActionsSuppressor")),
        wait_period: integer(input, "ActionsSuppressorWaitPeriod")?,
        extension_period: integer(input, "ActionsSuppressorExtensionPeriod")?,
    })
    .map_err(map_error)?;
    let tags = validate(&tag_list(input.get("Tags")), "Tags").map_err(super::tagging::map_error)?;
    let scope = scope(cx);
    let arn = alarm_arn(scope.account, scope.region, &config.name);
    let (changes, created) = app
        .composites
        .put_changes(&scope, &app.alarms, config)
        .map_err(map_error)?;
    let mut ops = changes.ops;
    if created {
        ops.extend(Tags::create_changes(&arn, &tags));
    }
    let mut outcome = Outcome::write(Value::empty_struct(), ops);
    run_actions(
        app,
        &mut outcome,
        &changes.transitions,
        &format!("{}-actions", cx.request_id),
        cx.now,
    );
    Ok(outcome)
}

fn composite_alarm_value(c: &CompositeAlarm) -> Value {
    let k = &c.config;
    Value::structure([
        ("ActionsEnabled", Value::Bool(k.actions_enabled)),
        ("AlarmActions", strings(&k.alarm_actions)),
        ("AlarmArn", Value::string(&c.arn)),
        (
            "AlarmConfigurationUpdatedTimestamp",
            time(c.configuration_updated_ms),
        ),
        ("AlarmDescription", opt(&k.description)),
        ("AlarmName", Value::string(&k.name)),
        ("AlarmRule", Value::string(&k.rule)),
        (
            "InsufficientDataActions",
            strings(&k.insufficient_data_actions),
        ),
        ("OKActions", strings(&k.ok_actions)),
        ("StateReason", Value::string(&c.state_reason)),
        ("StateReasonData", opt(&c.state_reason_data)),
        ("StateUpdatedTimestamp", time(c.state_updated_ms)),
        ("StateValue", Value::string(&c.state_value)),
        ("StateTransitionedTimestamp", time(c.state_transitioned_ms)),
        (
            "ActionsSuppressedBy",
            if k.suppressor.is_some() {
                Value::string(c.suppressed_by())
            } else {
                Value::Null
            },
        ),
        (
            "ActionsSuppressedReason",
            c.suppressed_reason().map_or(Value::Null, Value::string),
        ),
        ("ActionsSuppressor", opt(&k.suppressor)),
        (
            "ActionsSuppressorWaitPeriod",
            k.wait_period.map_or(Value::Null, Value::Int),
        ),
        (
            "ActionsSuppressorExtensionPeriod",
            k.extension_period.map_or(Value::Null, Value::Int),
        ),
    ])
}

fn strings(list: &[String]) -> Value {
    Value::List(list.iter().map(Value::string).collect())
}

pub(super) fn dimensions_value(dimensions: &[(String, String)]) -> Value {
    Value::List(
        dimensions
            .iter()
            .map(|(n, v)| {
                Value::structure([("Name", Value::string(n)), ("Value", Value::string(v))])
            })
            .collect(),
    )
}

fn time(ms: i64) -> Value {
    Value::Timestamp(Timestamp::from_millis(ms))
}

pub(super) fn opt(s: &Option<String>) -> Value {
    s.as_ref().map_or(Value::Null, Value::string)
}

fn evaluation_window_value(w: &EvaluationWindow) -> Value {
    match w {
        EvaluationWindow::Sliding => Value::structure([("SlidingWindow", Value::empty_struct())]),
        EvaluationWindow::WallClock { timezone } => Value::structure([(
            "WallClockWindow",
            Value::structure([("Timezone", opt(timezone))]),
        )]),
    }
}

fn action_configuration_value(a: &ActionConfiguration) -> Value {
    let propagation = a.tags_propagation.as_ref().map_or(Value::Null, |t| {
        Value::structure([
            ("Enabled", t.enabled.map_or(Value::Null, Value::Bool)),
            (
                "IncludedTagKeys",
                t.included_tag_keys.as_deref().map_or(Value::Null, strings),
            ),
            (
                "ExcludedTagKeys",
                t.excluded_tag_keys.as_deref().map_or(Value::Null, strings),
            ),
        ])
    });
    Value::structure([("AlarmTagsPropagation", propagation)])
}

/// A `Metrics` / `MetricDataQueries` list, members in model order.
pub(super) fn queries_value(queries: &[trailwatch_core::alarms::AlarmQuery]) -> Value {
    Value::List(
        queries
            .iter()
            .map(|q| {
                let stat = q.metric_stat.as_ref().map_or(Value::Null, |s| {
                    Value::structure([
                        (
                            "Metric",
                            Value::structure([
                                ("Namespace", Value::string(&s.namespace)),
                                ("MetricName", Value::string(&s.metric_name)),
                                ("Dimensions", dimensions_value(&s.dimensions)),
                            ]),
                        ),
                        ("Period", Value::Int(s.period)),
                        ("Stat", Value::string(&s.stat)),
                        ("Unit", opt(&s.unit)),
                    ])
                });
                Value::structure([
                    ("Id", Value::string(&q.id)),
                    ("MetricStat", stat),
                    ("Expression", opt(&q.expression)),
                    ("Label", opt(&q.label)),
                    ("ReturnData", q.return_data.map_or(Value::Null, Value::Bool)),
                    ("Period", q.period.map_or(Value::Null, Value::Int)),
                    ("AccountId", opt(&q.account_id)),
                ])
            })
            .collect(),
    )
}

/// One `MetricAlarm` output structure, members in model order.
fn metric_alarm_value(alarm: &MetricAlarm) -> Value {
    let c = &alarm.config;
    let metrics = if c.metrics.is_empty() {
        Value::Null
    } else {
        queries_value(&c.metrics)
    };
    Value::structure([
        ("AlarmName", Value::string(&c.name)),
        ("AlarmArn", Value::string(&alarm.arn)),
        ("AlarmDescription", opt(&c.description)),
        (
            "AlarmConfigurationUpdatedTimestamp",
            time(alarm.configuration_updated_ms),
        ),
        ("ActionsEnabled", Value::Bool(c.actions_enabled)),
        ("OKActions", strings(&c.ok_actions)),
        ("AlarmActions", strings(&c.alarm_actions)),
        (
            "InsufficientDataActions",
            strings(&c.insufficient_data_actions),
        ),
        ("StateValue", Value::string(&alarm.state_value)),
        ("StateReason", Value::string(&alarm.state_reason)),
        ("StateReasonData", opt(&alarm.state_reason_data)),
        ("StateUpdatedTimestamp", time(alarm.state_updated_ms)),
        ("MetricName", opt(&c.metric_name)),
        ("Namespace", opt(&c.namespace)),
        ("Statistic", opt(&c.statistic)),
        ("ExtendedStatistic", opt(&c.extended_statistic)),
        ("Dimensions", dimensions_value(&c.dimensions)),
        ("Period", c.period.map_or(Value::Null, Value::Int)),
        ("Unit", opt(&c.unit)),
        ("EvaluationPeriods", Value::Int(c.evaluation_periods)),
        (
            "DatapointsToAlarm",
            c.datapoints_to_alarm.map_or(Value::Null, Value::Int),
        ),
        ("Threshold", c.threshold.map_or(Value::Null, Value::Float)),
        ("ComparisonOperator", Value::string(&c.comparison_operator)),
        ("TreatMissingData", opt(&c.treat_missing_data)),
        (
            "EvaluateLowSampleCountPercentile",
            opt(&c.evaluate_low_sample_count_percentile),
        ),
        ("Metrics", metrics),
        ("ThresholdMetricId", opt(&c.threshold_metric_id)),
        ("EvaluationState", opt(&alarm.evaluation_state)),
        (
            "StateTransitionedTimestamp",
            time(alarm.state_transitioned_ms),
        ),
        (
            "EvaluationWindow",
            c.evaluation_window
                .as_ref()
                .map_or(Value::Null, evaluation_window_value),
        ),
        (
            "WarmUpConfiguration",
            c.warm_up.as_ref().map_or(Value::Null, |w| {
                Value::structure([
                    ("WarmUpPeriodDurationInMinutes", Value::Int(w.minutes)),
                    (
                        "OnlyStartEvaluatingAfterWarmUpPeriodEnds",
                        w.only_start_after.map_or(Value::Null, Value::Bool),
                    ),
                ])
            }),
        ),
        (
            "ActionConfiguration",
            c.action_configuration
                .as_ref()
                .map_or(Value::Null, action_configuration_value),
        ),
    ])
}

pub(super) fn describe_alarms(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let filter = DescribeFilter {
        names: input.strings("AlarmNames"),
        prefix: text(input.get("AlarmNamePrefix")),
        types: input.strings("AlarmTypes"),
        state: text(input.get("StateValue")),
        action_prefix: text(input.get("ActionPrefix")),
        children_of: text(input.get("ChildrenOfAlarmName")),
        parents_of: text(input.get("ParentsOfAlarmName")),
    };
    filter.validate().map_err(map_error)?;
    let limit = max_records(input)?;
    let account = &cx.principal.account_id;
    let mut names = filter.names.clone();
    names.sort();
    let mut types = filter.types.clone();
    types.sort();
    let filters = filters_hash(&[
        account,
        cx.region,
        "DescribeAlarms",
        &names.join("\u{0}"),
        filter.prefix.as_deref().unwrap_or_default(),
        &types.join("\u{0}"),
        filter.state.as_deref().unwrap_or_default(),
        filter.action_prefix.as_deref().unwrap_or_default(),
        filter.children_of.as_deref().unwrap_or_default(),
        filter.parents_of.as_deref().unwrap_or_default(),
        &limit.to_string(),
    ]);
    let after: Option<String> = match text(input.get("NextToken")) {
        Some(token) => Some(
            app.tokens
                .open(&token, &filters, cx.now, TOKEN_MAX_AGE_SECS)
                .ok_or_else(bad_token)?,
        ),
        None => None,
    };
    if let Some(parent) = &filter.children_of {
        return children_of(app, cx, parent);
    }
    if let Some(child) = &filter.parents_of {
        let parents = app
            .composites
            .parents_of(account, cx.region, child)
            .map_err(map_error)?;
        return Ok(Outcome::read(Value::structure([
            ("MetricAlarms", Value::List(Vec::new())),
            (
                "CompositeAlarms",
                Value::List(
                    parents
                        .iter()
                        .map(|c| {
                            Value::structure([
                                ("AlarmName", Value::string(&c.config.name)),
                                ("AlarmArn", Value::string(&c.arn)),
                            ])
                        })
                        .collect(),
                ),
            ),
        ])));
    }
    let (alarms, metric_more) = app
        .alarms
        .describe(account, cx.region, &filter, after.as_deref(), limit)
        .map_err(map_error)?;
    let composites: Vec<CompositeAlarm> = if filter.types.iter().any(|t| t == "CompositeAlarm") {
        let prefix = filter.prefix.as_deref().unwrap_or_default();
        app.composites
            .list(account, cx.region, prefix)
            .map_err(map_error)?
            .into_iter()
            .filter(|c| after.as_deref().is_none_or(|a| c.config.name.as_str() > a))
            .filter(|c| composite_matches(&filter, c))
            .take(limit + 1)
            .collect()
    } else {
        Vec::new()
    };
    // Both kinds page jointly, by name (§7.7): the first `limit` of the merge.
    let mut names: Vec<&str> = alarms
        .iter()
        .map(|a| a.config.name.as_str())
        .chain(composites.iter().map(|c| c.config.name.as_str()))
        .collect();
    names.sort_unstable();
    let more = metric_more || names.len() > limit;
    let last = names
        .get(limit.min(names.len()).saturating_sub(1))
        .map(|n| n.to_string());
    let keep = |name: &str| last.as_deref().is_some_and(|l| name <= l);
    let next = match (more, &last) {
        (true, Some(last)) => Value::String(app.tokens.issue(&filters, last, cx.now)),
        _ => Value::Null,
    };
    Ok(Outcome::read(Value::structure([
        (
            "MetricAlarms",
            Value::List(
                alarms
                    .iter()
                    .filter(|a| keep(&a.config.name))
                    .map(metric_alarm_value)
                    .collect(),
            ),
        ),
        (
            "CompositeAlarms",
            Value::List(
                composites
                    .iter()
                    .filter(|c| keep(&c.config.name))
                    .map(composite_alarm_value)
                    .collect(),
            ),
        ),
        ("NextToken", next),
    ])))
}

/// Whether a composite passes DescribeAlarms' filters.
fn composite_matches(filter: &DescribeFilter, c: &CompositeAlarm) -> bool {
    let k = &c.config;
    filter.matches_fields(
        &k.name,
        &c.state_value,
        [
            &k.ok_actions,
            &k.alarm_actions,
            &k.insufficient_data_actions,
        ],
    )
}

/// ChildrenOfAlarmName (§7.7): each alarm the composite's rule names, with
/// only its name, ARN, state and state time.
fn children_of(app: &App, cx: &CallContext<'_>, parent: &str) -> Result<Outcome, ApiError> {
    let account = &cx.principal.account_id;
    // A name that is not a composite has no children: empty lists, as for
    // unknown names elsewhere (§7.7).
    let children = app
        .composites
        .get(account, cx.region, parent)
        .map_err(map_error)?
        .map(|c| c.config.children())
        .unwrap_or_default();
    let brief = |name: &str, arn: &str, state: &str, at: i64| {
        Value::structure([
            ("AlarmName", Value::string(name)),
            ("AlarmArn", Value::string(arn)),
            ("StateValue", Value::string(state)),
            ("StateUpdatedTimestamp", time(at)),
        ])
    };
    let mut metric = Vec::new();
    let mut composite_children = Vec::new();
    for name in children {
        if let Some(a) = app
            .alarms
            .get(account, cx.region, &name)
            .map_err(map_error)?
        {
            metric.push(brief(&name, &a.arn, &a.state_value, a.state_updated_ms));
        } else if let Some(c) = app
            .composites
            .get(account, cx.region, &name)
            .map_err(map_error)?
        {
            composite_children.push(brief(&name, &c.arn, &c.state_value, c.state_updated_ms));
        }
    }
    Ok(Outcome::read(Value::structure([
        ("MetricAlarms", Value::List(metric)),
        ("CompositeAlarms", Value::List(composite_children)),
    ])))
}

pub(super) fn describe_alarms_for_metric(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let dimensions = raw_dimensions(input.get("Dimensions"))
        .into_iter()
        .map(|(n, v)| (n.unwrap_or_default(), v.unwrap_or_default()))
        .collect();
    let filter = MetricFilter {
        metric_name: required(input, "MetricName")?,
        namespace: required(input, "Namespace")?,
        dimensions,
        statistic: text(input.get("Statistic")),
        extended_statistic: text(input.get("ExtendedStatistic")),
        period: integer(input, "Period")?,
        unit: text(input.get("Unit")),
    };
    let alarms = app
        .alarms
        .list(&cx.principal.account_id, cx.region, "")
        .map_err(map_error)?;
    let matching = alarms
        .iter()
        .filter(|a| filter.matches(a))
        .map(metric_alarm_value)
        .collect();
    Ok(Outcome::read(Value::structure([(
        "MetricAlarms",
        Value::List(matching),
    )])))
}

fn alarm_names(input: &Value) -> Result<Vec<String>, ApiError> {
    if input.get("AlarmNames").is_none() {
        return Err(map_error(AlarmError::MissingParameter(
            "The parameter AlarmNames is required.".to_owned(),
        )));
    }
    let names = input.strings("AlarmNames");
    if names.len() > 100 {
        return Err(map_error(constraint(
            &format!("[{}]", names.join(", ")),
            "alarmNames",
            "Member must have length less than or equal to 100",
        )));
    }
    Ok(names)
}

pub(super) fn delete_alarms(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let names = alarm_names(input)?;
    let scope = scope(cx);
    let mut composite_names = Vec::new();
    for name in &names {
        if !composite_names.contains(name)
            && app
                .composites
                .get(scope.account, scope.region, name)
                .map_err(map_error)?
                .is_some()
        {
            composite_names.push(name.clone());
        }
    }
    if composite_names.len() > 1 {
        return Err(map_error(AlarmError::Validation(
            "You can delete at most one composite alarm in one DeleteAlarms call.".to_owned(),
        )));
    }
    // An alarm a remaining composite still names cannot go (§7.9).
    for name in &names {
        let blocking: Vec<String> = app
            .composites
            .parents_of(scope.account, scope.region, name)
            .map_err(map_error)?
            .into_iter()
            .map(|c| c.config.name)
            .filter(|parent| !names.contains(parent))
            .collect();
        if !blocking.is_empty() {
            return Err(ApiError::new(
                "ResourceConflictException",
                409,
                format!(
                    "Alarm {name} is referenced by the composite alarms [{}]; delete or update them first.",
                    blocking.join(", ")
                ),
            )
            .with_query_code("ResourceConflict"));
        }
    }
    let (mut changes, mut deleted) = app
        .alarms
        .delete_changes(&scope, &names)
        .map_err(map_error)?;
    let (composite_ops, composites_deleted) = app
        .composites
        .delete_changes(&scope, &composite_names, deleted.len())
        .map_err(map_error)?;
    changes.extend(composite_ops);
    deleted.extend(composites_deleted);
    // trailwatch answers 404 only when none of the names exists (§7.9).
    if deleted.is_empty() && !names.is_empty() {
        return Err(map_error(AlarmError::NotFound(format!(
            "{} not found",
            names.join(", ")
        ))));
    }
    // A deleted alarm takes its tags with it (§11).
    for name in &deleted {
        changes.extend(Tags::delete_changes(&alarm_arn(
            scope.account,
            scope.region,
            name,
        )));
    }
    Ok(Outcome::write(Value::empty_struct(), changes))
}

pub(super) fn set_alarm_state(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let name = required(input, "AlarmName")?;
    let state = required(input, "StateValue")?;
    let reason = required(input, "StateReason")?;
    check_state(&state).map_err(map_error)?;
    if reason.chars().count() > 1023 {
        return Err(map_error(constraint(
            &reason,
            "stateReason",
            "Member must have length less than or equal to 1023",
        )));
    }
    let data = text(input.get("StateReasonData"));
    if let Some(d) = &data {
        if d.chars().count() > 4000 {
            return Err(map_error(constraint(
                d,
                "stateReasonData",
                "Member must have length less than or equal to 4000",
            )));
        }
        if serde_json::from_str::<serde_json::Value>(d).is_err() {
            return Err(map_error(AlarmError::InvalidFormat(
                "StateReasonData was not syntactically valid JSON".to_owned(),
            )));
        }
    }
    let scope = scope(cx);
    // Actions run on transitions made by SetAlarmState too (§7.6).
    let (changes, transitions) = match app
        .composites
        .set_state_changes(&scope, &app.alarms, &name, &state, &reason, data.as_deref())
        .map_err(map_error)?
    {
        Some(composite) => (composite.ops, composite.transitions),
        None => {
            let (old, written, mut changes) = app
                .alarms
                .set_state_changes(&scope, &name, &state, &reason, data.as_deref())
                .map_err(map_error)?;
            let mut transitions = Vec::new();
            followed(
                app,
                &scope,
                &old,
                &written,
                1,
                &mut changes,
                &mut transitions,
            )?;
            (changes, transitions)
        }
    };
    let mut outcome = Outcome::write(Value::empty_struct(), changes);
    run_actions(
        app,
        &mut outcome,
        &transitions,
        &format!("{}-actions", cx.request_id),
        cx.now,
    );
    Ok(outcome)
}

pub(super) fn set_alarm_actions(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
    enabled: bool,
) -> Result<Outcome, ApiError> {
    let names = alarm_names(input)?;
    let scope = scope(cx);
    let mut changes = app
        .alarms
        .set_actions_changes(&scope, &names, enabled)
        .map_err(map_error)?;
    let composite_ops = app
        .composites
        .set_actions_changes(&scope, &names, enabled, changes.len())
        .map_err(map_error)?;
    changes.extend(composite_ops);
    Ok(Outcome::write(Value::empty_struct(), changes))
}

fn history_value(item: &HistoryItem) -> Value {
    Value::structure([
        ("AlarmName", Value::string(&item.alarm_name)),
        ("AlarmType", Value::string(&item.alarm_type)),
        ("Timestamp", time(item.timestamp_ms)),
        ("HistoryItemType", Value::string(&item.item_type)),
        ("HistorySummary", Value::string(&item.summary)),
        ("HistoryData", Value::string(&item.data)),
    ])
}

fn date(input: &Value, name: &str) -> Result<Option<i64>, ApiError> {
    match input.get(name) {
        None => Ok(None),
        Some(v) => v.as_timestamp().map(|t| Some(t.millis())).ok_or_else(|| {
            map_error(AlarmError::InvalidParameterValue(format!(
                "The value for parameter {name} is not a valid timestamp."
            )))
        }),
    }
}

pub(super) fn describe_alarm_history(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let types = input.strings("AlarmTypes");
    check_alarm_types(&types).map_err(map_error)?;
    let item_type = text(input.get("HistoryItemType"));
    if let Some(t) = &item_type {
        if !HISTORY_TYPES.contains(&t.as_str()) {
            return Err(map_error(constraint(
                t,
                "historyItemType",
                "Member must satisfy enum value set: [ConfigurationUpdate, StateUpdate, Action, AlarmContributorStateUpdate, AlarmContributorAction]",
            )));
        }
    }
    let scan_by = text(input.get("ScanBy"));
    let ascending = match scan_by.as_deref() {
        None | Some("TimestampDescending") => false,
        Some("TimestampAscending") => true,
        Some(other) => {
            return Err(map_error(constraint(
                other,
                "scanBy",
                "Member must satisfy enum value set: [TimestampDescending, TimestampAscending]",
            )))
        }
    };
    let filter = HistoryFilter {
        alarm_name: text(input.get("AlarmName")),
        types,
        item_type,
        start_ms: date(input, "StartDate")?,
        end_ms: date(input, "EndDate")?,
        ascending,
    };
    let limit = max_records(input)?;
    let account = &cx.principal.account_id;
    let mut sorted_types = filter.types.clone();
    sorted_types.sort();
    let filters = filters_hash(&[
        account,
        cx.region,
        "DescribeAlarmHistory",
        filter.alarm_name.as_deref().unwrap_or_default(),
        &sorted_types.join("\u{0}"),
        filter.item_type.as_deref().unwrap_or_default(),
        &format!(
            "{:?}/{:?}/{ascending}/{limit}",
            filter.start_ms, filter.end_ms
        ),
    ]);
    let after: Option<String> = match text(input.get("NextToken")) {
        Some(token) => Some(
            app.tokens
                .open(&token, &filters, cx.now, TOKEN_MAX_AGE_SECS)
                .ok_or_else(bad_token)?,
        ),
        None => None,
    };
    let (items, resume) = app
        .alarms
        .history(account, cx.region, &filter, cx.now, after.as_deref(), limit)
        .map_err(map_error)?;
    let next = resume.map_or(Value::Null, |k| {
        Value::String(app.tokens.issue(&filters, &k, cx.now))
    });
    Ok(Outcome::read(Value::structure([
        (
            "AlarmHistoryItems",
            Value::List(items.iter().map(history_value).collect()),
        ),
        ("NextToken", next),
    ])))
}
