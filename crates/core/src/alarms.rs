//! CloudWatch metric alarms as configuration (`spec/cloudwatch.md` §7.1,
//! §7.7–7.10): PutMetricAlarm validation, the stored alarm record, the
//! DescribeAlarms / DescribeAlarmsForMetric filters, SetAlarmState,
//! Enable/DisableAlarmActions, DeleteAlarms and the alarm history. The
//! evaluation engine is not here; it reads and updates [`MetricAlarm`] records,
//! whose state fields ([`MetricAlarm::state_value`], reason, reason data,
//! `state_updated_ms`, `state_transitioned_ms`) exist for it.
//!
//! Writes are not applied here: every `*_changes` function returns the catalog
//! changes, which the caller commits with the call's audit record.
//!
//! # Catalog layout (version 1)
//! - Table `alarms`, key `{account}/{region}/{AlarmName}`, value JSON of
//!   [`MetricAlarm`] (`"v":1`).
//! - Table `alarm_history`, key `{account}/{region}/{timestamp_ms:015}/{request_id}/{n}`,
//!   value JSON of [`HistoryItem`] (`"v":1`). Keys sort by time, so retention
//!   ([`HISTORY_RETENTION_MS`], §7.8) drops a leading run of keys. History is
//!   kept after its alarm is deleted.
//!
//! # Invariants
//! - A stored alarm passed [`validate_put`]; readers refuse records of another
//!   version.
//! - `state_transitioned_ms` changes only when `state_value` changes;
//!   `state_updated_ms` changes on every state write.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;
use trailwatch_storage::{Catalog, CatalogOp};
use trailwatch_types::Timestamp;

use crate::metrics::stats::parse_extended;

const TABLE: &str = "alarms";
const HISTORY_TABLE: &str = "alarm_history";
/// Alarms per account and region, kept with every create and delete so the
/// quota check does not list them all.
const COUNT_TABLE: &str = "alarm_counts";
/// How long history items are kept (§7.8: 14 days).
pub const HISTORY_RETENTION_MS: i64 = 14 * 24 * 3600 * 1000;
/// Width of the time buckets a write prunes: 10^7 ms (about 2.8 hours), the
/// span of keys sharing their first 8 of 15 timestamp digits.
const PRUNE_BUCKET_MS: i64 = 10_000_000;
/// Reason of a new alarm (§7.1).
pub const INITIAL_REASON: &str = "Unchecked: Initial alarm creation";

const STATISTICS: [&str; 5] = ["SampleCount", "Average", "Sum", "Minimum", "Maximum"];
const STATIC_OPERATORS: [&str; 4] = [
    "GreaterThanOrEqualToThreshold",
    "GreaterThanThreshold",
    "LessThanThreshold",
    "LessThanOrEqualToThreshold",
];
const BAND_OPERATORS: [&str; 3] = [
    "LessThanLowerOrGreaterThanUpperThreshold",
    "LessThanLowerThreshold",
    "GreaterThanUpperThreshold",
];
const TREAT_MISSING: [&str; 4] = ["breaching", "notBreaching", "ignore", "missing"];
const STATES: [&str; 3] = ["OK", "ALARM", "INSUFFICIENT_DATA"];

/// Alarm failures; each is a modelled CloudWatch error (§1.3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlarmError {
    /// `ValidationError` (framework constraint or a rule AWS reports that way).
    #[error("{0}")]
    Validation(String),
    /// `InvalidParameterValue`.
    #[error("{0}")]
    InvalidParameterValue(String),
    /// `InvalidParameterCombination`.
    #[error("{0}")]
    InvalidParameterCombination(String),
    /// `MissingParameter`.
    #[error("{0}")]
    MissingParameter(String),
    /// `InvalidNextToken`.
    #[error("{0}")]
    InvalidNextToken(String),
    /// `ResourceNotFound` (404).
    #[error("{0}")]
    NotFound(String),
    /// `InvalidFormat` (SetAlarmState reason data).
    #[error("{0}")]
    InvalidFormat(String),
    /// The catalog failed.
    #[error("alarm storage failed: {0}")]
    Storage(String),
}

fn storage(e: impl std::fmt::Display) -> AlarmError {
    AlarmError::Storage(e.to_string())
}

/// The framework message for one violated model constraint (§1.3).
pub fn constraint(value: &str, member: &str, rule: &str) -> AlarmError {
    AlarmError::Validation(format!(
        "1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: {rule}"
    ))
}

fn missing(name: &str) -> AlarmError {
    AlarmError::MissingParameter(format!("The parameter {name} is required."))
}

/// `Metric.Dimensions`: `(Name, Value)`.
pub type Dimensions = Vec<(String, String)>;

/// `MetricStat` of an alarm's (or an anomaly detector's) metric-math query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AlarmMetricStat {
    /// `Metric.Namespace`.
    pub namespace: String,
    /// `Metric.MetricName`.
    pub metric_name: String,
    /// `Metric.Dimensions`.
    pub dimensions: Dimensions,
    /// `Period`, seconds.
    pub period: i64,
    /// `Stat`.
    pub stat: String,
    /// `Unit`.
    pub unit: Option<String>,
}

/// One entry of an alarm's `Metrics` array (or of a detector's queries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AlarmQuery {
    /// `Id`.
    pub id: String,
    /// `MetricStat`.
    pub metric_stat: Option<AlarmMetricStat>,
    /// `Expression`.
    pub expression: Option<String>,
    /// `Label`.
    pub label: Option<String>,
    /// `ReturnData` as given (absent means true).
    pub return_data: Option<bool>,
    /// `Period` of an expression query.
    pub period: Option<i64>,
    /// `AccountId`.
    pub account_id: Option<String>,
}

impl AlarmQuery {
    fn returns_data(&self) -> bool {
        self.return_data.unwrap_or(true)
    }
}

/// PutMetricAlarm as decoded: every member optional, so validation decides.
#[derive(Debug, Clone, Default)]
pub struct PutMetricAlarmInput {
    /// `AlarmName`.
    pub alarm_name: Option<String>,
    /// `AlarmDescription`.
    pub alarm_description: Option<String>,
    /// `ActionsEnabled`.
    pub actions_enabled: Option<bool>,
    /// `OKActions`.
    pub ok_actions: Vec<String>,
    /// `AlarmActions`.
    pub alarm_actions: Vec<String>,
    /// `InsufficientDataActions`.
    pub insufficient_data_actions: Vec<String>,
    /// `MetricName`.
    pub metric_name: Option<String>,
    /// `Namespace`.
    pub namespace: Option<String>,
    /// `Statistic`.
    pub statistic: Option<String>,
    /// `ExtendedStatistic`.
    pub extended_statistic: Option<String>,
    /// `Dimensions`, `None` when absent.
    pub dimensions: Option<Vec<(Option<String>, Option<String>)>>,
    /// `Period`.
    pub period: Option<i64>,
    /// `Unit`.
    pub unit: Option<String>,
    /// `EvaluationPeriods`.
    pub evaluation_periods: Option<i64>,
    /// `DatapointsToAlarm`.
    pub datapoints_to_alarm: Option<i64>,
    /// `Threshold`.
    pub threshold: Option<f64>,
    /// `ComparisonOperator`.
    pub comparison_operator: Option<String>,
    /// `TreatMissingData`.
    pub treat_missing_data: Option<String>,
    /// `EvaluateLowSampleCountPercentile`.
    pub evaluate_low_sample_count_percentile: Option<String>,
    /// `Metrics`, `None` when absent. Queries keep their raw dimensions.
    pub metrics: Option<Vec<QueryInput>>,
    /// `ThresholdMetricId`.
    pub threshold_metric_id: Option<String>,
    /// Whether `EvaluationCriteria` or `EvaluationInterval` (PromQL) was sent.
    pub evaluation_criteria: bool,
    /// `EvaluationWindow` as decoded: `(WallClockWindow present, its Timezone,
    /// SlidingWindow present)`.
    pub evaluation_window: Option<(bool, Option<String>, bool)>,
    /// `WarmUpConfiguration`: `(WarmUpPeriodDurationInMinutes,
    /// OnlyStartEvaluatingAfterWarmUpPeriodEnds)`.
    pub warm_up: Option<(Option<i64>, Option<bool>)>,
    /// `ActionConfiguration`.
    pub action_configuration: Option<ActionConfiguration>,
}

/// `EvaluationWindow`: which range each evaluation reads (stored and echoed [TW]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EvaluationWindow {
    /// `SlidingWindow` (AWS's default).
    Sliding,
    /// `WallClockWindow`, aligned to the period in `timezone`.
    WallClock {
        /// `Timezone`.
        timezone: Option<String>,
    },
}

/// `WarmUpConfiguration` (§7.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmUp {
    /// `WarmUpPeriodDurationInMinutes`, 1–2880.
    pub minutes: i64,
    /// `OnlyStartEvaluatingAfterWarmUpPeriodEnds`.
    pub only_start_after: Option<bool>,
}

/// `ActionConfiguration` (stored and echoed [TW]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ActionConfiguration {
    /// `AlarmTagsPropagation`, when given.
    pub tags_propagation: Option<TagsPropagation>,
}

/// `AlarmTagsPropagation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TagsPropagation {
    /// `Enabled`.
    pub enabled: Option<bool>,
    /// `IncludedTagKeys` (1–50 when given).
    pub included_tag_keys: Option<Vec<String>>,
    /// `ExcludedTagKeys` (1–50 when given).
    pub excluded_tag_keys: Option<Vec<String>>,
}

/// One `Metrics` entry as decoded.
#[derive(Debug, Clone, Default)]
pub struct QueryInput {
    /// `Id`.
    pub id: Option<String>,
    /// `MetricStat`: namespace, name, dimensions, period, stat, unit.
    pub metric_stat: Option<MetricStatInput>,
    /// `Expression`.
    pub expression: Option<String>,
    /// `Label`.
    pub label: Option<String>,
    /// `ReturnData`.
    pub return_data: Option<bool>,
    /// `Period`.
    pub period: Option<i64>,
    /// `AccountId`.
    pub account_id: Option<String>,
}

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

/// A validated alarm configuration (what PutMetricAlarm replaces).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AlarmConfig {
    /// `AlarmName`.
    pub name: String,
    /// `AlarmDescription`.
    pub description: Option<String>,
    /// `ActionsEnabled`.
    pub actions_enabled: bool,
    /// `OKActions`.
    pub ok_actions: Vec<String>,
    /// `AlarmActions`.
    pub alarm_actions: Vec<String>,
    /// `InsufficientDataActions`.
    pub insufficient_data_actions: Vec<String>,
    /// Single-metric form: `Namespace`.
    pub namespace: Option<String>,
    /// Single-metric form: `MetricName`.
    pub metric_name: Option<String>,
    /// Single-metric form: `Dimensions`.
    pub dimensions: Dimensions,
    /// `Statistic`.
    pub statistic: Option<String>,
    /// `ExtendedStatistic`.
    pub extended_statistic: Option<String>,
    /// Single-metric form: `Period`, seconds.
    pub period: Option<i64>,
    /// Single-metric form: `Unit`.
    pub unit: Option<String>,
    /// Metric-math form: `Metrics` (empty for single-metric alarms).
    pub metrics: Vec<AlarmQuery>,
    /// `EvaluationPeriods`.
    pub evaluation_periods: i64,
    /// `DatapointsToAlarm` as given; the engine uses [`AlarmConfig::datapoints`].
    pub datapoints_to_alarm: Option<i64>,
    /// `Threshold` (static operators only).
    pub threshold: Option<f64>,
    /// `ThresholdMetricId` (band operators only).
    pub threshold_metric_id: Option<String>,
    /// `ComparisonOperator`.
    pub comparison_operator: String,
    /// `TreatMissingData` as given (absent means `missing`).
    pub treat_missing_data: Option<String>,
    /// `EvaluateLowSampleCountPercentile` as given (absent means `evaluate`).
    pub evaluate_low_sample_count_percentile: Option<String>,
    /// `EvaluationWindow`.
    #[serde(default)]
    pub evaluation_window: Option<EvaluationWindow>,
    /// `WarmUpConfiguration`.
    #[serde(default)]
    pub warm_up: Option<WarmUp>,
    /// `ActionConfiguration`.
    #[serde(default)]
    pub action_configuration: Option<ActionConfiguration>,
}

impl AlarmConfig {
    /// M of "M out of N": `DatapointsToAlarm`, defaulting to `EvaluationPeriods`.
    pub fn datapoints(&self) -> i64 {
        self.datapoints_to_alarm.unwrap_or(self.evaluation_periods)
    }

    /// The alarm's period: the single metric's, or the common period of its queries.
    pub fn effective_period(&self) -> Option<i64> {
        self.period.or_else(|| {
            self.metrics
                .iter()
                .find_map(|q| q.metric_stat.as_ref().map(|s| s.period).or(q.period))
        })
    }
}

/// A stored metric alarm: configuration plus the state the engine keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricAlarm {
    /// Format version (1).
    pub v: u8,
    /// The configuration.
    #[serde(flatten)]
    pub config: AlarmConfig,
    /// `AlarmArn`.
    pub arn: String,
    /// `AlarmConfigurationUpdatedTimestamp`, epoch ms.
    pub configuration_updated_ms: i64,
    /// `StateValue`: `OK`, `ALARM` or `INSUFFICIENT_DATA`.
    pub state_value: String,
    /// `StateReason` (≤ 1023).
    pub state_reason: String,
    /// `StateReasonData`, a JSON text (≤ 4000).
    pub state_reason_data: Option<String>,
    /// `StateUpdatedTimestamp`: any state or evaluation-state write, epoch ms.
    pub state_updated_ms: i64,
    /// `StateTransitionedTimestamp`: the last change of `state_value`, epoch ms.
    pub state_transitioned_ms: i64,
    /// `EvaluationState` (`PARTIAL_DATA`, `EVALUATION_FAILURE`, …), set by the engine.
    pub evaluation_state: Option<String>,
}

/// The kind of a history item (`HistoryItemType`).
pub const HISTORY_TYPES: [&str; 3] = ["ConfigurationUpdate", "StateUpdate", "Action"];

/// One alarm history item (§7.8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryItem {
    /// Format version (1).
    pub v: u8,
    /// `AlarmName`.
    pub alarm_name: String,
    /// `AlarmType`: `MetricAlarm` or `CompositeAlarm`.
    pub alarm_type: String,
    /// `Timestamp`, epoch ms.
    pub timestamp_ms: i64,
    /// `HistoryItemType`.
    pub item_type: String,
    /// `HistorySummary` (≤ 255).
    pub summary: String,
    /// `HistoryData`, a JSON text (≤ 4095).
    pub data: String,
}

/// `yyyy-MM-dd'T'HH:mm:ss.SSS+0000`, the date form of alarm JSON documents.
pub fn alarm_json_date(ms: i64) -> String {
    let whole = Timestamp::from_millis(ms.div_euclid(1000) * 1000).to_iso8601_seconds();
    format!(
        "{}.{:03}+0000",
        whole.trim_end_matches('Z'),
        ms.rem_euclid(1000)
    )
}

pub(crate) fn check_length(
    value: &str,
    member: &str,
    min: usize,
    max: usize,
) -> Result<(), AlarmError> {
    let n = value.chars().count();
    if n < min {
        return Err(constraint(
            value,
            member,
            &format!("Member must have length greater than or equal to {min}"),
        ));
    }
    if n > max {
        return Err(constraint(
            value,
            member,
            &format!("Member must have length less than or equal to {max}"),
        ));
    }
    Ok(())
}

/// The model constraints of PutMetricAlarm, checked before any service rule
/// and reported together, the way AWS's request framework does (§1.3).
#[derive(Default)]
struct Violations(Vec<String>);

impl Violations {
    fn push(&mut self, value: &str, member: &str, rule: &str) {
        self.0.push(format!(
            "Value '{value}' at '{member}' failed to satisfy constraint: {rule}"
        ));
    }

    fn length(&mut self, value: &str, member: &str, min: usize, max: usize) {
        let n = value.chars().count();
        if n < min {
            self.push(
                value,
                member,
                &format!("Member must have length greater than or equal to {min}"),
            );
        } else if n > max {
            self.push(
                value,
                member,
                &format!("Member must have length less than or equal to {max}"),
            );
        }
    }

    fn count(&mut self, items: &[String], member: &str, min: usize, max: usize) {
        let value = format!("[{}]", items.join(", "));
        if items.len() < min {
            self.push(
                &value,
                member,
                &format!("Member must have length greater than or equal to {min}"),
            );
        } else if items.len() > max {
            self.push(
                &value,
                member,
                &format!("Member must have length less than or equal to {max}"),
            );
        }
    }

    fn range(&mut self, value: i64, member: &str, min: i64, max: Option<i64>) {
        if value < min {
            self.push(
                &value.to_string(),
                member,
                &format!("Member must have value greater than or equal to {min}"),
            );
        } else if let Some(max) = max.filter(|m| value > *m) {
            self.push(
                &value.to_string(),
                member,
                &format!("Member must have value less than or equal to {max}"),
            );
        }
    }

    fn one_of(&mut self, value: &str, member: &str, allowed: &[&str]) {
        if !allowed.contains(&value) {
            self.push(
                value,
                member,
                &format!(
                    "Member must satisfy enum value set: [{}]",
                    allowed.join(", ")
                ),
            );
        }
    }

    fn into_result(self) -> Result<(), AlarmError> {
        match self.0.len() {
            0 => Ok(()),
            1 => Err(AlarmError::Validation(format!(
                "1 validation error detected: {}",
                self.0[0]
            ))),
            n => Err(AlarmError::Validation(format!(
                "{n} validation errors detected: {}",
                self.0.join("; ")
            ))),
        }
    }
}

fn model_constraints(input: &PutMetricAlarmInput) -> Result<(), AlarmError> {
    let mut v = Violations::default();
    if let Some(name) = &input.alarm_name {
        v.length(name, "alarmName", 1, 255);
    }
    if let Some(d) = &input.alarm_description {
        v.length(d, "alarmDescription", 0, 1024);
    }
    for (actions, member) in [
        (&input.ok_actions, "oKActions"),
        (&input.alarm_actions, "alarmActions"),
        (&input.insufficient_data_actions, "insufficientDataActions"),
    ] {
        v.count(actions, member, 0, 5);
    }
    if let Some(m) = &input.metric_name {
        v.length(m, "metricName", 1, 255);
    }
    if let Some(n) = &input.namespace {
        v.length(n, "namespace", 1, 255);
    }
    if let Some(s) = &input.statistic {
        v.one_of(
            s,
            "statistic",
            &["SampleCount", "Average", "Sum", "Minimum", "Maximum"],
        );
    }
    if let Some(n) = input.evaluation_periods {
        v.range(n, "evaluationPeriods", 1, None);
    }
    if let Some(n) = input.datapoints_to_alarm {
        v.range(n, "datapointsToAlarm", 1, None);
    }
    if let Some(o) = &input.comparison_operator {
        let all: Vec<&str> = STATIC_OPERATORS
            .iter()
            .chain(&BAND_OPERATORS)
            .copied()
            .collect();
        v.one_of(o, "comparisonOperator", &all);
    }
    if let Some(id) = &input.threshold_metric_id {
        v.length(id, "thresholdMetricId", 1, 255);
    }
    if let Some((_, Some(tz), _)) = &input.evaluation_window {
        v.length(tz, "evaluationWindow.wallClockWindow.timezone", 1, 50);
    }
    if let Some((Some(minutes), _)) = input.warm_up {
        v.range(
            minutes,
            "warmUpConfiguration.warmUpPeriodDurationInMinutes",
            1,
            Some(2880),
        );
    }
    if let Some(tags) = input
        .action_configuration
        .as_ref()
        .and_then(|a| a.tags_propagation.as_ref())
    {
        for (member, keys) in [
            ("includedTagKeys", &tags.included_tag_keys),
            ("excludedTagKeys", &tags.excluded_tag_keys),
        ] {
            if let Some(keys) = keys {
                v.count(
                    keys,
                    &format!("actionConfiguration.alarmTagsPropagation.{member}"),
                    1,
                    50,
                );
            }
        }
    }
    v.into_result()
}

fn check_period(period: i64, parameter: &str) -> Result<(), AlarmError> {
    if period <= 0 || !(matches!(period, 10 | 20 | 30) || period % 60 == 0) {
        return Err(AlarmError::InvalidParameterValue(format!(
            "The parameter {parameter} must be 10, 20, 30 or a multiple of 60."
        )));
    }
    Ok(())
}

/// Whether `s` is an ExtendedStatistic allowed in an alarm (§7.1): the
/// GetMetricData forms, with the parenthesised trimmed forms limited to two
/// percentages between 10 and 90.
pub fn valid_alarm_extended_statistic(s: &str) -> bool {
    if parse_extended(s).is_none() {
        return false;
    }
    let Some(open) = s.find('(') else {
        return true;
    };
    let (name, rest) = s.split_at(open);
    if name == "PR" {
        return true;
    }
    let inner = rest.trim_start_matches('(').trim_end_matches(')');
    let Some((lo, hi)) = inner.split_once(':') else {
        return false;
    };
    [lo, hi].iter().all(|b| {
        b.strip_suffix('%')
            .and_then(|n| n.parse::<f64>().ok())
            .is_some_and(|x| (10.0..=90.0).contains(&x))
    })
}

fn dimensions(
    raw: &[(Option<String>, Option<String>)],
    parameter: &str,
) -> Result<Dimensions, AlarmError> {
    if raw.len() > 30 {
        return Err(AlarmError::InvalidParameterValue(format!(
            "The collection {parameter} must not have a size greater than 30."
        )));
    }
    let mut out = Vec::with_capacity(raw.len());
    for (i, (name, value)) in raw.iter().enumerate() {
        let n = i + 1;
        let name = name
            .clone()
            .ok_or_else(|| missing(&format!("{parameter}.member.{n}.Name")))?;
        let value = value
            .clone()
            .ok_or_else(|| missing(&format!("{parameter}.member.{n}.Value")))?;
        check_length(&name, "dimensions.member.name", 1, 255)?;
        check_length(&value, "dimensions.member.value", 1, 1024)?;
        out.push((name, value));
    }
    Ok(out)
}

fn check_unit(unit: &Option<String>, parameter: &str) -> Result<(), AlarmError> {
    match unit {
        Some(u) if crate::metrics::model::Unit::parse(u).is_none() => {
            Err(AlarmError::InvalidParameterValue(format!(
                "The value {u} for parameter {parameter} is invalid."
            )))
        }
        _ => Ok(()),
    }
}

pub(crate) fn check_actions(actions: &[String], parameter: &str) -> Result<(), AlarmError> {
    for (i, arn) in actions.iter().enumerate() {
        if arn.is_empty() || arn.chars().count() > 1024 || !arn.starts_with("arn:") {
            return Err(AlarmError::InvalidParameterValue(format!(
                "The value {arn} for parameter {parameter}.member.{} is invalid.",
                i + 1
            )));
        }
    }
    Ok(())
}

/// `OKActions` → `oKActions`: the member-path spelling of validation messages.
pub fn lower_first(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn query_id_valid(id: &str) -> bool {
    let mut bytes = id.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn validate_queries(
    raw: &[QueryInput],
    threshold_metric_id: Option<&str>,
) -> Result<Vec<AlarmQuery>, AlarmError> {
    if raw.is_empty() {
        return Err(missing("Metrics"));
    }
    let mut out: Vec<AlarmQuery> = Vec::with_capacity(raw.len());
    for (i, q) in raw.iter().enumerate() {
        let n = i + 1;
        let id =
            q.id.clone()
                .ok_or_else(|| missing(&format!("Metrics.member.{n}.Id")))?;
        if !query_id_valid(&id) || id.len() > 255 {
            return Err(AlarmError::Validation(format!(
                "The value {id} for parameter Metrics.member.{n}.Id is invalid: it must start with a lowercase letter and contain only letters, numbers and underscores."
            )));
        }
        if out.iter().any(|o| o.id == id) {
            return Err(AlarmError::Validation(format!(
                "The value {id} for parameter Metrics.member.{n}.Id is not unique."
            )));
        }
        let metric_stat = match (&q.metric_stat, &q.expression) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(AlarmError::Validation(format!(
                    "Exactly one element of the Metrics list, Metrics.member.{n}, must have either MetricStat or Expression."
                )))
            }
            (Some(s), None) => {
                let path = format!("Metrics.member.{n}.MetricStat");
                let namespace = s
                    .namespace
                    .clone()
                    .ok_or_else(|| missing(&format!("{path}.Metric.Namespace")))?;
                let metric_name = s
                    .metric_name
                    .clone()
                    .ok_or_else(|| missing(&format!("{path}.Metric.MetricName")))?;
                let period = s.period.ok_or_else(|| missing(&format!("{path}.Period")))?;
                check_period(period, &format!("{path}.Period"))?;
                let stat = s
                    .stat
                    .clone()
                    .ok_or_else(|| missing(&format!("{path}.Stat")))?;
                if !STATISTICS.contains(&stat.as_str()) && !valid_alarm_extended_statistic(&stat)
                {
                    return Err(AlarmError::InvalidParameterValue(format!(
                        "The value {stat} for parameter {path}.Stat is invalid."
                    )));
                }
                check_unit(&s.unit, &format!("{path}.Unit"))?;
                Some(AlarmMetricStat {
                    namespace,
                    metric_name,
                    dimensions: dimensions(&s.dimensions, &format!("{path}.Metric.Dimensions"))?,
                    period,
                    stat,
                    unit: s.unit.clone(),
                })
            }
            (None, Some(expression)) => {
                check_length(expression, &format!("metrics.{n}.member.expression"), 1, 2048)?;
                let upper = expression.to_ascii_uppercase();
                if upper.contains("SEARCH(") {
                    return Err(AlarmError::Validation(
                        "SEARCH is not supported on Metric Alarms.".to_owned(),
                    ));
                }
                if upper.trim_start().starts_with("SELECT") && upper.contains("GROUP BY") {
                    return Err(AlarmError::Validation(
                        "GROUP BY is not supported in Metrics Insights alarms.".to_owned(),
                    ));
                }
                if let Some(p) = q.period {
                    check_period(p, &format!("Metrics.member.{n}.Period"))?;
                }
                None
            }
        };
        out.push(AlarmQuery {
            id,
            metric_stat,
            expression: q.expression.clone(),
            label: q.label.clone(),
            return_data: q.return_data,
            period: q.period,
            account_id: q.account_id.clone(),
        });
    }
    let stats = out.iter().filter(|q| q.metric_stat.is_some()).count();
    if stats > 10 {
        return Err(AlarmError::Validation(
            "The collection Metrics must not contain more than 10 MetricStat elements.".to_owned(),
        ));
    }
    let mut periods = out
        .iter()
        .filter_map(|q| q.metric_stat.as_ref().map(|s| s.period));
    if let Some(first) = periods.next() {
        if periods.any(|p| p != first) {
            return Err(AlarmError::Validation(
                "All metrics in an alarm must have the same period.".to_owned(),
            ));
        }
    }
    let returning: Vec<&AlarmQuery> = out.iter().filter(|q| q.returns_data()).collect();
    match threshold_metric_id {
        None if returning.len() != 1 => Err(AlarmError::Validation(
            "Exactly one element of the metrics list should return data.".to_owned(),
        )),
        Some(band) => {
            let band_query = out.iter().find(|q| q.id == band).ok_or_else(|| {
                AlarmError::Validation(format!(
                    "ThresholdMetricId {band} does not name an element of the Metrics list."
                ))
            })?;
            let is_band = band_query
                .expression
                .as_deref()
                .is_some_and(|e| e.to_ascii_uppercase().contains("ANOMALY_DETECTION_BAND"));
            if !is_band {
                return Err(AlarmError::Validation(format!(
                    "ThresholdMetricId {band} must name an ANOMALY_DETECTION_BAND expression."
                )));
            }
            if returning.len() != 2 || !band_query.returns_data() {
                return Err(AlarmError::Validation(
                    "Anomaly detection alarms need ReturnData set to true on exactly two elements of the Metrics list: the metric and the ThresholdMetricId band.".to_owned(),
                ));
            }
            Ok(out)
        }
        None => Ok(out),
    }
}

/// Validates PutMetricAlarm (§7.1, §7.10), in the order the rules are listed.
pub fn validate_put(input: &PutMetricAlarmInput) -> Result<AlarmConfig, AlarmError> {
    let name = input
        .alarm_name
        .clone()
        .ok_or_else(|| missing("AlarmName"))?;
    model_constraints(input)?;
    if name.chars().any(|c| c.is_ascii_control()) {
        return Err(AlarmError::InvalidParameterValue(format!(
            "The value {} for parameter AlarmName is invalid: it contains control characters.",
            name.escape_debug()
        )));
    }
    check_actions(&input.ok_actions, "OKActions")?;
    check_actions(&input.alarm_actions, "AlarmActions")?;
    check_actions(&input.insufficient_data_actions, "InsufficientDataActions")?;
    if input.evaluation_criteria {
        return Err(AlarmError::InvalidParameterValue(
            "PromQL alarms are not supported.".to_owned(),
        ));
    }
    let forms = [input.metric_name.is_some(), input.metrics.is_some()];
    if forms.iter().filter(|f| **f).count() != 1 {
        return Err(AlarmError::InvalidParameterCombination(
            "Exactly one of MetricName, Metrics or EvaluationCriteria must be specified."
                .to_owned(),
        ));
    }
    let mut config = AlarmConfig {
        name,
        description: input.alarm_description.clone(),
        actions_enabled: input.actions_enabled.unwrap_or(true),
        ok_actions: input.ok_actions.clone(),
        alarm_actions: input.alarm_actions.clone(),
        insufficient_data_actions: input.insufficient_data_actions.clone(),
        ..AlarmConfig::default()
    };
    let period;
    if let Some(metric_name) = &input.metric_name {
        let namespace = input
            .namespace
            .clone()
            .ok_or_else(|| missing("Namespace"))?;
        match (&input.statistic, &input.extended_statistic) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(AlarmError::InvalidParameterCombination(
                    "Exactly one of Statistic or ExtendedStatistic must be specified.".to_owned(),
                ))
            }
            (None, Some(e)) if !valid_alarm_extended_statistic(e) => {
                return Err(AlarmError::InvalidParameterValue(format!(
                    "The value {e} for parameter ExtendedStatistic is invalid."
                )))
            }
            _ => {}
        }
        let p = input.period.ok_or_else(|| missing("Period"))?;
        check_period(p, "Period")?;
        check_unit(&input.unit, "Unit")?;
        config.dimensions = dimensions(
            input.dimensions.as_deref().unwrap_or_default(),
            "Dimensions",
        )?;
        config.namespace = Some(namespace);
        config.metric_name = Some(metric_name.clone());
        config.statistic = input.statistic.clone();
        config.extended_statistic = input.extended_statistic.clone();
        config.period = Some(p);
        config.unit = input.unit.clone();
        period = p;
    } else {
        let stray = [
            ("Namespace", input.namespace.is_some()),
            ("Dimensions", input.dimensions.is_some()),
            ("Period", input.period.is_some()),
            ("Unit", input.unit.is_some()),
            ("Statistic", input.statistic.is_some()),
            ("ExtendedStatistic", input.extended_statistic.is_some()),
        ];
        if let Some((member, _)) = stray.iter().find(|(_, present)| *present) {
            return Err(AlarmError::InvalidParameterCombination(format!(
                "The parameter {member} cannot be specified with Metrics."
            )));
        }
        let band_operator = input
            .comparison_operator
            .as_deref()
            .is_some_and(|o| BAND_OPERATORS.contains(&o));
        // Without its band id an anomaly alarm's two returned series would
        // read as a ReturnData error; the missing id is the real cause.
        if band_operator && input.threshold_metric_id.is_none() {
            return Err(missing("ThresholdMetricId"));
        }
        config.metrics = validate_queries(
            input.metrics.as_deref().unwrap_or_default(),
            input.threshold_metric_id.as_deref(),
        )?;
        // An alarm on expressions alone takes the period from the expression
        // queries; 60 s is what AWS assumes when none is given.
        period = config.effective_period().unwrap_or(60);
    }
    let evaluation_periods = input
        .evaluation_periods
        .ok_or_else(|| missing("EvaluationPeriods"))?;
    if let Some(m) = input.datapoints_to_alarm {
        if m > evaluation_periods {
            return Err(AlarmError::Validation(
                "DatapointsToAlarm must be less than or equal to EvaluationPeriods.".to_owned(),
            ));
        }
    }
    let span = period.saturating_mul(evaluation_periods);
    if period < 3600 && span > 86_400 {
        return Err(AlarmError::InvalidParameterCombination(
            "Metrics cannot be checked across more than a day (EvaluationPeriods * Period must be <= 86400).".to_owned(),
        ));
    }
    if period >= 3600 && span > 604_800 {
        return Err(AlarmError::InvalidParameterCombination(
            "Metrics cannot be checked across more than a week (EvaluationPeriods * Period must be <= 604800).".to_owned(),
        ));
    }
    let operator = input
        .comparison_operator
        .clone()
        .ok_or_else(|| missing("ComparisonOperator"))?;
    // The model constraints above admit only the seven operators.
    let is_band = BAND_OPERATORS.contains(&operator.as_str());
    if is_band {
        if input.threshold.is_some() {
            return Err(AlarmError::InvalidParameterCombination(
                "Threshold must not be specified for anomaly detection alarms; use ThresholdMetricId.".to_owned(),
            ));
        }
        if input.threshold_metric_id.is_none() {
            return Err(missing("ThresholdMetricId"));
        }
        if input.metrics.is_none() {
            return Err(AlarmError::InvalidParameterCombination(
                "ThresholdMetricId requires the Metrics parameter.".to_owned(),
            ));
        }
    } else {
        if input.threshold_metric_id.is_some() {
            return Err(AlarmError::InvalidParameterCombination(format!(
                "ThresholdMetricId cannot be used with ComparisonOperator {operator}."
            )));
        }
        let threshold = input.threshold.ok_or_else(|| missing("Threshold"))?;
        if !threshold.is_finite() {
            return Err(AlarmError::InvalidParameterValue(format!(
                "The value {threshold} for parameter Threshold is invalid."
            )));
        }
        config.threshold = Some(threshold);
    }
    if let Some(t) = &input.treat_missing_data {
        if !TREAT_MISSING.contains(&t.as_str()) {
            return Err(AlarmError::InvalidParameterValue(format!(
                "The parameter TreatMissingData must be a value in the set [{}].",
                TREAT_MISSING.join(", ")
            )));
        }
    }
    if let Some(e) = &input.evaluate_low_sample_count_percentile {
        if !matches!(e.as_str(), "evaluate" | "ignore") {
            return Err(AlarmError::InvalidParameterValue(
                "The parameter EvaluateLowSampleCountPercentile must be a value in the set [evaluate, ignore].".to_owned(),
            ));
        }
    }
    // Lengths and ranges were checked with the other model constraints.
    config.evaluation_window = match &input.evaluation_window {
        None => None,
        Some((true, _, true)) | Some((false, _, false)) => {
            return Err(AlarmError::InvalidParameterCombination(
                "Exactly one of EvaluationWindow.WallClockWindow or EvaluationWindow.SlidingWindow must be specified.".to_owned(),
            ))
        }
        Some((true, timezone, false)) => Some(EvaluationWindow::WallClock {
            timezone: timezone.clone(),
        }),
        Some((false, _, true)) => Some(EvaluationWindow::Sliding),
    };
    config.warm_up = match input.warm_up {
        None => None,
        Some((None, _)) => {
            return Err(missing("WarmUpConfiguration.WarmUpPeriodDurationInMinutes"))
        }
        Some((Some(minutes), only_start_after)) => Some(WarmUp {
            minutes,
            only_start_after,
        }),
    };
    config.action_configuration = input.action_configuration.clone();
    config.evaluation_periods = evaluation_periods;
    config.datapoints_to_alarm = input.datapoints_to_alarm;
    config.threshold_metric_id = input.threshold_metric_id.clone();
    config.comparison_operator = operator;
    config.treat_missing_data = input.treat_missing_data.clone();
    config.evaluate_low_sample_count_percentile =
        input.evaluate_low_sample_count_percentile.clone();
    Ok(config)
}

/// DescribeAlarms filters (§7.7), already checked by [`DescribeFilter::validate`].
#[derive(Debug, Clone, Default)]
pub struct DescribeFilter {
    /// `AlarmNames`.
    pub names: Vec<String>,
    /// `AlarmNamePrefix`.
    pub prefix: Option<String>,
    /// `AlarmTypes` (empty: metric alarms only).
    pub types: Vec<String>,
    /// `StateValue`.
    pub state: Option<String>,
    /// `ActionPrefix`.
    pub action_prefix: Option<String>,
    /// `ChildrenOfAlarmName`.
    pub children_of: Option<String>,
    /// `ParentsOfAlarmName`.
    pub parents_of: Option<String>,
}

/// Checks an alarm-type list against the model's enum.
pub fn check_alarm_types(types: &[String]) -> Result<(), AlarmError> {
    for t in types {
        if !matches!(t.as_str(), "MetricAlarm" | "CompositeAlarm" | "LogAlarm") {
            return Err(constraint(
                t,
                "alarmTypes",
                "Member must satisfy enum value set: [CompositeAlarm, MetricAlarm, LogAlarm]",
            ));
        }
    }
    Ok(())
}

/// Checks a `StateValue` against the model's enum.
pub fn check_state(state: &str) -> Result<(), AlarmError> {
    if STATES.contains(&state) {
        Ok(())
    } else {
        Err(constraint(
            state,
            "stateValue",
            "Member must satisfy enum value set: [INSUFFICIENT_DATA, ALARM, OK]",
        ))
    }
}

impl DescribeFilter {
    /// The input rules of §7.7.
    pub fn validate(&self) -> Result<(), AlarmError> {
        if self.names.len() > 100 {
            return Err(constraint(
                "AlarmNames",
                "alarmNames",
                "Member must have length less than or equal to 100",
            ));
        }
        if !self.names.is_empty() && self.prefix.is_some() {
            return Err(AlarmError::InvalidParameterCombination(
                "AlarmNames and AlarmNamePrefix are mutually exclusive.".to_owned(),
            ));
        }
        if let Some(p) = &self.prefix {
            check_length(p, "alarmNamePrefix", 1, 255)?;
        }
        if let Some(p) = &self.action_prefix {
            check_length(p, "actionPrefix", 1, 1024)?;
        }
        check_alarm_types(&self.types)?;
        if let Some(s) = &self.state {
            check_state(s)?;
        }
        let family = self.children_of.is_some() as u8 + self.parents_of.is_some() as u8;
        let others = !self.names.is_empty()
            || self.prefix.is_some()
            || !self.types.is_empty()
            || self.state.is_some()
            || self.action_prefix.is_some();
        if family > 1 || (family == 1 && others) {
            return Err(AlarmError::Validation(
                "ChildrenOfAlarmName and ParentsOfAlarmName cannot be combined with other parameters except MaxRecords and NextToken.".to_owned(),
            ));
        }
        Ok(())
    }

    /// Whether metric alarms are listed.
    pub fn wants_metric_alarms(&self) -> bool {
        self.children_of.is_none()
            && self.parents_of.is_none()
            && (self.types.is_empty() || self.types.iter().any(|t| t == "MetricAlarm"))
    }

    /// Whether `alarm` passes every filter.
    pub fn matches(&self, alarm: &MetricAlarm) -> bool {
        let c = &alarm.config;
        self.matches_fields(
            &c.name,
            &alarm.state_value,
            [
                &c.ok_actions,
                &c.alarm_actions,
                &c.insufficient_data_actions,
            ],
        )
    }

    /// Whether an alarm of either kind with this name, state and action
    /// lists passes every filter.
    pub fn matches_fields(&self, name: &str, state: &str, actions: [&Vec<String>; 3]) -> bool {
        (self.names.is_empty() || self.names.iter().any(|n| n == name))
            && self
                .prefix
                .as_ref()
                .is_none_or(|p| name.starts_with(p.as_str()))
            && self.state.as_ref().is_none_or(|s| state == s)
            && self.action_prefix.as_ref().is_none_or(|p| {
                actions
                    .iter()
                    .flat_map(|list| list.iter())
                    .any(|a| a.starts_with(p.as_str()))
            })
    }
}

/// DescribeAlarmsForMetric filters (§7.7).
#[derive(Debug, Clone, Default)]
pub struct MetricFilter {
    /// `Namespace`.
    pub namespace: String,
    /// `MetricName`.
    pub metric_name: String,
    /// `Dimensions`, compared as a set.
    pub dimensions: Dimensions,
    /// `Statistic`.
    pub statistic: Option<String>,
    /// `ExtendedStatistic`.
    pub extended_statistic: Option<String>,
    /// `Period`.
    pub period: Option<i64>,
    /// `Unit`.
    pub unit: Option<String>,
}

impl MetricFilter {
    /// Whether `alarm` is a single-metric alarm on this metric.
    pub fn matches(&self, alarm: &MetricAlarm) -> bool {
        let c = &alarm.config;
        let mut mine = c.dimensions.clone();
        let mut wanted = self.dimensions.clone();
        mine.sort();
        wanted.sort();
        c.namespace.as_deref() == Some(self.namespace.as_str())
            && c.metric_name.as_deref() == Some(self.metric_name.as_str())
            && mine == wanted
            && self
                .statistic
                .as_ref()
                .is_none_or(|s| c.statistic.as_ref() == Some(s))
            && self
                .extended_statistic
                .as_ref()
                .is_none_or(|s| c.extended_statistic.as_ref() == Some(s))
            && self.period.is_none_or(|p| c.period == Some(p))
            && self
                .unit
                .as_ref()
                .is_none_or(|u| c.unit.as_ref() == Some(u))
    }
}

/// DescribeAlarmHistory filters (§7.8).
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    /// `AlarmName`.
    pub alarm_name: Option<String>,
    /// `AlarmTypes` (empty: metric alarms only).
    pub types: Vec<String>,
    /// `HistoryItemType`.
    pub item_type: Option<String>,
    /// `StartDate`, epoch ms, inclusive.
    pub start_ms: Option<i64>,
    /// `EndDate`, epoch ms, inclusive.
    pub end_ms: Option<i64>,
    /// `ScanBy` is `TimestampAscending`.
    pub ascending: bool,
}

impl HistoryFilter {
    /// Whether `item` passes every filter.
    pub fn matches(&self, item: &HistoryItem) -> bool {
        let type_ok = if self.types.is_empty() {
            item.alarm_type == "MetricAlarm"
        } else {
            self.types.contains(&item.alarm_type)
        };
        type_ok
            && self
                .alarm_name
                .as_ref()
                .is_none_or(|n| &item.alarm_name == n)
            && self.item_type.as_ref().is_none_or(|t| &item.item_type == t)
            && self.start_ms.is_none_or(|s| item.timestamp_ms >= s)
            && self.end_ms.is_none_or(|e| item.timestamp_ms <= e)
    }
}

/// The alarm object inside history data (§7.8), lower-camel keys.
pub fn alarm_history_json(alarm: &MetricAlarm) -> serde_json::Value {
    let c = &alarm.config;
    let mut o = serde_json::Map::new();
    o.insert("alarmName".into(), json!(c.name));
    o.insert("alarmArn".into(), json!(alarm.arn));
    if let Some(d) = &c.description {
        o.insert("alarmDescription".into(), json!(d));
    }
    o.insert(
        "alarmConfigurationUpdatedTimestamp".into(),
        json!(alarm_json_date(alarm.configuration_updated_ms)),
    );
    if let Some(n) = &c.namespace {
        o.insert("namespace".into(), json!(n));
    }
    if let Some(n) = &c.metric_name {
        o.insert("metricName".into(), json!(n));
    }
    if let Some(s) = &c.statistic {
        o.insert("statistic".into(), json!(s));
    }
    if let Some(s) = &c.extended_statistic {
        o.insert("extendedStatistic".into(), json!(s));
    }
    if let Some(p) = c.period {
        o.insert("period".into(), json!(p));
    }
    if c.metrics.is_empty() {
        o.insert(
            "dimensions".into(),
            c.dimensions
                .iter()
                .map(|(n, v)| json!({"value": v, "name": n}))
                .collect(),
        );
    } else {
        o.insert(
            "metrics".into(),
            c.metrics
                .iter()
                .map(|q| json!({"id": q.id, "expression": q.expression, "returnData": q.returns_data()}))
                .collect(),
        );
    }
    if let Some(t) = c.threshold {
        o.insert("threshold".into(), json!(t));
    }
    if let Some(t) = &c.threshold_metric_id {
        o.insert("thresholdMetricId".into(), json!(t));
    }
    o.insert("comparisonOperator".into(), json!(c.comparison_operator));
    o.insert("evaluationPeriods".into(), json!(c.evaluation_periods));
    if let Some(m) = c.datapoints_to_alarm {
        o.insert("datapointsToAlarm".into(), json!(m));
    }
    o.insert(
        "treatMissingData".into(),
        json!(c.treat_missing_data.as_deref().unwrap_or("missing")),
    );
    o.insert("stateValue".into(), json!(alarm.state_value));
    o.insert(
        "stateUpdatedTimestamp".into(),
        json!(alarm_json_date(alarm.state_updated_ms)),
    );
    o.insert("actionsEnabled".into(), json!(c.actions_enabled));
    o.insert("okActions".into(), json!(c.ok_actions));
    o.insert("alarmActions".into(), json!(c.alarm_actions));
    o.insert(
        "insufficientDataActions".into(),
        json!(c.insufficient_data_actions),
    );
    serde_json::Value::Object(o)
}

/// Fits history data in 4095 characters (§7.8) by dropping the alarm object's
/// largest members when needed.
pub(crate) fn history_data(mut doc: serde_json::Value, alarm_key: &str) -> String {
    let text = doc.to_string();
    if text.chars().count() <= 4095 {
        return text;
    }
    if let Some(obj) = doc.get_mut(alarm_key).and_then(|a| a.as_object_mut()) {
        for member in [
            "metrics",
            "dimensions",
            "alarmDescription",
            "okActions",
            "alarmActions",
            "insufficientDataActions",
        ] {
            obj.remove(member);
        }
    }
    let text = doc.to_string();
    text.chars().take(4095).collect()
}

/// A state an evaluation (or SetAlarmState) gives an alarm.
#[derive(Debug, Clone, PartialEq)]
pub struct StateWrite {
    /// `StateValue`.
    pub state: String,
    /// `StateReason`.
    pub reason: String,
    /// `StateReasonData`.
    pub reason_data: Option<String>,
    /// `EvaluationState`.
    pub evaluation_state: Option<String>,
}

/// Alarms and their history for every account and region, in the catalog.
#[derive(Debug, Clone)]
pub struct Alarms {
    catalog: Arc<dyn Catalog>,
}

fn key(account: &str, region: &str, name: &str) -> String {
    format!("{account}/{region}/{name}")
}

/// `arn:aws:cloudwatch:{region}:{account}:alarm:{name}` (§1.5).
pub fn alarm_arn(account: &str, region: &str, name: &str) -> String {
    format!("arn:aws:cloudwatch:{region}:{account}:alarm:{name}")
}

/// Where the changes of one call go, and when it happens.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// Account id.
    pub account: &'a str,
    /// Region.
    pub region: &'a str,
    /// The call's request id, which keeps history keys unique.
    pub request_id: &'a str,
    /// The call's time.
    pub now: Timestamp,
}

impl Alarms {
    /// Alarms stored in `catalog`.
    pub fn new(catalog: Arc<dyn Catalog>) -> Self {
        Self { catalog }
    }

    /// The alarm `name`, if it exists.
    pub fn get(
        &self,
        account: &str,
        region: &str,
        name: &str,
    ) -> Result<Option<MetricAlarm>, AlarmError> {
        match self
            .catalog
            .get(TABLE, &key(account, region, name))
            .map_err(storage)?
        {
            Some(bytes) => decode_alarm(&bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Every alarm of the account and region whose name starts with `prefix`, by name.
    pub fn list(
        &self,
        account: &str,
        region: &str,
        prefix: &str,
    ) -> Result<Vec<MetricAlarm>, AlarmError> {
        self.catalog
            .list(TABLE, &key(account, region, prefix))
            .map_err(storage)?
            .iter()
            .map(|(_, v)| decode_alarm(v))
            .collect()
    }

    /// How many metric alarms the account has in the region.
    pub fn count(&self, account: &str, region: &str) -> Result<usize, AlarmError> {
        let key = format!("{account}/{region}");
        match self.catalog.get(COUNT_TABLE, &key).map_err(storage)? {
            Some(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| AlarmError::Storage(format!("alarm count {key}"))),
            // Written by an older version: count once; the next write keeps it.
            None => Ok(self
                .catalog
                .list(TABLE, &format!("{account}/{region}/"))
                .map_err(storage)?
                .len()),
        }
    }

    fn count_op(account: &str, region: &str, count: usize) -> CatalogOp {
        CatalogOp::put(
            COUNT_TABLE,
            format!("{account}/{region}"),
            count.to_string().into_bytes(),
        )
    }

    /// Every alarm of every account and region, with its account and region:
    /// what an evaluation engine schedules from.
    pub fn every_alarm(&self) -> Result<Vec<(String, String, MetricAlarm)>, AlarmError> {
        self.catalog
            .list(TABLE, "")
            .map_err(storage)?
            .iter()
            .map(|(k, v)| {
                let mut parts = k.splitn(3, '/');
                let account = parts.next().unwrap_or_default().to_owned();
                let region = parts.next().unwrap_or_default().to_owned();
                Ok((account, region, decode_alarm(v)?))
            })
            .collect()
    }

    fn put_op(scope: &Scope<'_>, alarm: &MetricAlarm) -> CatalogOp {
        CatalogOp::put(
            TABLE,
            key(scope.account, scope.region, &alarm.config.name),
            serde_json::to_vec(alarm).unwrap_or_default(),
        )
    }

    fn history_op(scope: &Scope<'_>, n: usize, item: &HistoryItem) -> CatalogOp {
        CatalogOp::put(
            HISTORY_TABLE,
            format!(
                "{}/{}/{:015}/{}/{n}",
                scope.account,
                scope.region,
                item.timestamp_ms.max(0),
                scope.request_id
            ),
            serde_json::to_vec(item).unwrap_or_default(),
        )
    }

    /// Deletions of the account's history items older than the retention.
    ///
    /// A write looks only at the two time buckets of [`PRUNE_BUCKET_MS`] around
    /// the cutoff, so its cost does not grow with the history; items of older
    /// buckets (left when no write happened for a whole bucket) are hidden by
    /// [`Alarms::history`] and removed by [`Alarms::sweep_history_changes`].
    fn expired_history(&self, scope: &Scope<'_>) -> Result<Vec<CatalogOp>, AlarmError> {
        let cutoff = scope.now.millis() - HISTORY_RETENTION_MS;
        let bucket = cutoff.max(0) / PRUNE_BUCKET_MS;
        let buckets = if bucket == 0 {
            vec![0]
        } else {
            vec![bucket - 1, bucket]
        };
        let mut ops = Vec::new();
        for b in buckets {
            // 15-digit keys whose first 8 digits are the bucket number.
            let prefix = format!("{}/{}/{:08}", scope.account, scope.region, b);
            ops.extend(self.expired_under(&prefix, scope, cutoff)?);
        }
        Ok(ops)
    }

    fn expired_under(
        &self,
        prefix: &str,
        scope: &Scope<'_>,
        cutoff: i64,
    ) -> Result<Vec<CatalogOp>, AlarmError> {
        let base = format!("{}/{}/", scope.account, scope.region).len();
        let rows = self.catalog.list(HISTORY_TABLE, prefix).map_err(storage)?;
        Ok(rows
            .into_iter()
            .take_while(|(k, _)| {
                k.get(base..)
                    .and_then(|rest| rest.split('/').next())
                    .and_then(|t| t.parse::<i64>().ok())
                    .is_some_and(|t| t < cutoff)
            })
            .map(|(k, _)| CatalogOp::delete(HISTORY_TABLE, k))
            .collect())
    }

    /// Deletions of every expired history item of the account and region: the
    /// full sweep a retention worker runs, whatever the age of the items.
    pub fn sweep_history_changes(
        &self,
        account: &str,
        region: &str,
        now: Timestamp,
    ) -> Result<Vec<CatalogOp>, AlarmError> {
        let scope = Scope {
            account,
            region,
            request_id: "",
            now,
        };
        let cutoff = now.millis() - HISTORY_RETENTION_MS;
        self.expired_under(&format!("{account}/{region}/"), &scope, cutoff)
    }

    /// PutMetricAlarm: the changes that create or replace the alarm, with its
    /// ConfigurationUpdate history item, whether it was created, and the alarm
    /// as written (which the caller evaluates at once, §7.1).
    pub fn put_changes(
        &self,
        scope: &Scope<'_>,
        config: AlarmConfig,
    ) -> Result<(Vec<CatalogOp>, bool, MetricAlarm), AlarmError> {
        let now = scope.now.millis();
        let existing = self.get(scope.account, scope.region, &config.name)?;
        let name = config.name.clone();
        let created = existing.is_none();
        let warm_up = config.warm_up.is_some();
        let (alarm, summary, data) = match existing {
            None => {
                let alarm = MetricAlarm {
                    v: 1,
                    arn: alarm_arn(scope.account, scope.region, &name),
                    config,
                    configuration_updated_ms: now,
                    state_value: "INSUFFICIENT_DATA".to_owned(),
                    state_reason: INITIAL_REASON.to_owned(),
                    state_reason_data: None,
                    state_updated_ms: now,
                    state_transitioned_ms: now,
                    // The engine clears this when the warm-up ends (§7.1).
                    evaluation_state: warm_up.then(|| "IN_WARM_UP".to_owned()),
                };
                let data = json!({"version": "1.0", "type": "Create", "createdAlarm": alarm_history_json(&alarm)});
                (
                    alarm,
                    format!("Alarm \"{name}\" created"),
                    history_data(data, "createdAlarm"),
                )
            }
            Some(old) => {
                // An update replaces the configuration and keeps the state (§7.1).
                let alarm = MetricAlarm {
                    config,
                    configuration_updated_ms: now,
                    ..old.clone()
                };
                let before = alarm_history_json(&old);
                let after = alarm_history_json(&alarm);
                let changed: serde_json::Map<String, serde_json::Value> = before
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, v)| {
                        k.as_str() != "alarmConfigurationUpdatedTimestamp"
                            && after.get(k.as_str()) != Some(v)
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let data = json!({"version": "1.0", "type": "Update", "updatedAlarm": after, "originalUpdatedFields": changed});
                (
                    alarm,
                    format!("Alarm \"{name}\" updated"),
                    history_data(data, "updatedAlarm"),
                )
            }
        };
        let item = HistoryItem {
            v: 1,
            alarm_name: name,
            alarm_type: "MetricAlarm".to_owned(),
            timestamp_ms: now,
            item_type: "ConfigurationUpdate".to_owned(),
            summary,
            data,
        };
        let mut ops = self.expired_history(scope)?;
        if created {
            let count = self.count(scope.account, scope.region)?;
            ops.push(Self::count_op(scope.account, scope.region, count + 1));
        }
        ops.push(Self::put_op(scope, &alarm));
        ops.push(Self::history_op(scope, 0, &item));
        Ok((ops, created, alarm))
    }

    /// DeleteAlarms: deletions of the existing alarms among `names`, each with a
    /// ConfigurationUpdate history item, and the names that existed.
    pub fn delete_changes(
        &self,
        scope: &Scope<'_>,
        names: &[String],
    ) -> Result<(Vec<CatalogOp>, Vec<String>), AlarmError> {
        let mut ops = Vec::new();
        let mut deleted = Vec::new();
        for name in names {
            let Some(alarm) = self.get(scope.account, scope.region, name)? else {
                continue;
            };
            if deleted.contains(name) {
                continue;
            }
            ops.push(CatalogOp::delete(
                TABLE,
                key(scope.account, scope.region, name),
            ));
            let data = json!({"version": "1.0", "type": "Delete", "deletedAlarm": alarm_history_json(&alarm)});
            let item = HistoryItem {
                v: 1,
                alarm_name: name.clone(),
                alarm_type: "MetricAlarm".to_owned(),
                timestamp_ms: scope.now.millis(),
                item_type: "ConfigurationUpdate".to_owned(),
                summary: format!("Alarm \"{name}\" deleted"),
                data: history_data(data, "deletedAlarm"),
            };
            ops.push(Self::history_op(scope, deleted.len(), &item));
            deleted.push(name.clone());
        }
        if !deleted.is_empty() {
            let count = self.count(scope.account, scope.region)?;
            ops.push(Self::count_op(
                scope.account,
                scope.region,
                count.saturating_sub(deleted.len()),
            ));
        }
        Ok((ops, deleted))
    }

    /// SetAlarmState (§7.9): the state write and, when the value changes, a
    /// StateUpdate history item; returns the alarm as written and the changes.
    /// `reason_data` must already be valid JSON.
    pub fn set_state_changes(
        &self,
        scope: &Scope<'_>,
        name: &str,
        state: &str,
        reason: &str,
        reason_data: Option<&str>,
    ) -> Result<(MetricAlarm, MetricAlarm, Vec<CatalogOp>), AlarmError> {
        let old = self
            .get(scope.account, scope.region, name)?
            .ok_or_else(|| AlarmError::NotFound(format!("Alarm {name} not found")))?;
        let write = StateWrite {
            state: state.to_owned(),
            reason: reason.to_owned(),
            reason_data: reason_data.map(str::to_owned),
            evaluation_state: old.evaluation_state.clone(),
        };
        let (alarm, ops) = self.state_changes(scope, &old, &write, scope.now.millis(), 0)?;
        Ok((old, alarm, ops))
    }

    /// The changes that give `old` the state of `write` at `at_ms`: the
    /// record and, when StateValue changes, a StateUpdate history item (keyed
    /// with `n`, distinct within one batch). Returns the alarm as written.
    pub fn state_changes(
        &self,
        scope: &Scope<'_>,
        old: &MetricAlarm,
        write: &StateWrite,
        at_ms: i64,
        n: usize,
    ) -> Result<(MetricAlarm, Vec<CatalogOp>), AlarmError> {
        let transition = old.state_value != write.state;
        let alarm = MetricAlarm {
            state_value: write.state.clone(),
            state_reason: write.reason.clone(),
            state_reason_data: write.reason_data.clone(),
            state_updated_ms: at_ms,
            state_transitioned_ms: if transition {
                at_ms
            } else {
                old.state_transitioned_ms
            },
            evaluation_state: write.evaluation_state.clone(),
            ..old.clone()
        };
        let mut ops = vec![Self::put_op(scope, &alarm)];
        if transition {
            let mut new_state = json!({"stateValue": write.state, "stateReason": write.reason});
            if let Some(data) = write
                .reason_data
                .as_deref()
                .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
            {
                new_state["stateReasonData"] = data;
            }
            let data = json!({
                "version": "1.0",
                "oldState": {"stateValue": old.state_value, "stateReason": old.state_reason},
                "newState": new_state,
            });
            let item = HistoryItem {
                v: 1,
                alarm_name: old.config.name.clone(),
                alarm_type: "MetricAlarm".to_owned(),
                timestamp_ms: at_ms,
                item_type: "StateUpdate".to_owned(),
                summary: format!("Alarm updated from {} to {}", old.state_value, write.state),
                data: history_data(data, "newState"),
            };
            ops.extend(self.expired_history(scope)?);
            ops.push(Self::history_op(scope, n, &item));
        }
        Ok((alarm, ops))
    }

    /// A history item's change, keyed with `n` (distinct within one batch).
    pub fn history_change(scope: &Scope<'_>, n: usize, item: &HistoryItem) -> CatalogOp {
        Self::history_op(scope, n, item)
    }

    /// Enable/DisableAlarmActions (§7.9): unknown names are ignored; each alarm
    /// whose flag changes gets a ConfigurationUpdate history item [TW].
    pub fn set_actions_changes(
        &self,
        scope: &Scope<'_>,
        names: &[String],
        enabled: bool,
    ) -> Result<Vec<CatalogOp>, AlarmError> {
        let mut ops = Vec::new();
        let mut n = 0;
        for name in names {
            let Some(old) = self.get(scope.account, scope.region, name)? else {
                continue;
            };
            if old.config.actions_enabled == enabled {
                continue;
            }
            let mut alarm = old.clone();
            alarm.config.actions_enabled = enabled;
            alarm.configuration_updated_ms = scope.now.millis();
            let data = json!({
                "version": "1.0",
                "type": "Update",
                "updatedAlarm": alarm_history_json(&alarm),
                "originalUpdatedFields": {"actionsEnabled": old.config.actions_enabled},
            });
            let item = HistoryItem {
                v: 1,
                alarm_name: name.clone(),
                alarm_type: "MetricAlarm".to_owned(),
                timestamp_ms: scope.now.millis(),
                item_type: "ConfigurationUpdate".to_owned(),
                summary: format!("Alarm \"{name}\" updated"),
                data: history_data(data, "updatedAlarm"),
            };
            ops.push(Self::put_op(scope, &alarm));
            ops.push(Self::history_op(scope, n, &item));
            n += 1;
        }
        Ok(ops)
    }

    /// DescribeAlarms: matching metric alarms by name, after `after`, at most
    /// `limit`, and whether more follow.
    pub fn describe(
        &self,
        account: &str,
        region: &str,
        filter: &DescribeFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<MetricAlarm>, bool), AlarmError> {
        if !filter.wants_metric_alarms() {
            return Ok((Vec::new(), false));
        }
        let prefix = filter.prefix.as_deref().unwrap_or_default();
        // Named alarms are read directly rather than found in a full listing.
        let candidates = if filter.names.is_empty() {
            self.list(account, region, prefix)?
        } else {
            let mut names = filter.names.clone();
            names.sort();
            names.dedup();
            let mut found = Vec::with_capacity(names.len());
            for name in &names {
                found.extend(self.get(account, region, name)?);
            }
            found
        };
        let mut out = Vec::new();
        for alarm in candidates {
            if after.is_some_and(|a| alarm.config.name.as_str() <= a) || !filter.matches(&alarm) {
                continue;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(alarm);
        }
        Ok((out, false))
    }

    /// DescribeAlarmHistory: matching items in `ScanBy` order, after the item key
    /// `after`, at most `limit`, and the key to resume from when more follow.
    pub fn history(
        &self,
        account: &str,
        region: &str,
        filter: &HistoryFilter,
        now: Timestamp,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<HistoryItem>, Option<String>), AlarmError> {
        let mut rows = self
            .catalog
            .list(HISTORY_TABLE, &format!("{account}/{region}/"))
            .map_err(storage)?;
        if !filter.ascending {
            rows.reverse();
        }
        let cutoff = now.millis() - HISTORY_RETENTION_MS;
        let mut out = Vec::new();
        let mut last_key = None;
        for (k, v) in rows {
            let past = match after {
                Some(a) if filter.ascending => k.as_str() <= a,
                Some(a) => k.as_str() >= a,
                None => false,
            };
            if past {
                continue;
            }
            let item: HistoryItem = serde_json::from_slice(&v).map_err(storage)?;
            if item.v != 1 {
                return Err(AlarmError::Storage(format!(
                    "history item version {}",
                    item.v
                )));
            }
            // Expired items may linger until the next write prunes them.
            if item.timestamp_ms < cutoff || !filter.matches(&item) {
                continue;
            }
            if out.len() == limit {
                return Ok((out, last_key));
            }
            out.push(item);
            last_key = Some(k);
        }
        Ok((out, None))
    }
}

fn decode_alarm(bytes: &[u8]) -> Result<MetricAlarm, AlarmError> {
    let alarm: MetricAlarm = serde_json::from_slice(bytes).map_err(storage)?;
    if alarm.v != 1 {
        return Err(AlarmError::Storage(format!(
            "alarm record version {}",
            alarm.v
        )));
    }
    Ok(alarm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use trailwatch_storage::MemoryCatalog;

    fn base() -> PutMetricAlarmInput {
        PutMetricAlarmInput {
            alarm_name: Some("cpu-high".into()),
            metric_name: Some("CPUUtilization".into()),
            namespace: Some("AWS/EC2".into()),
            statistic: Some("Average".into()),
            period: Some(60),
            evaluation_periods: Some(3),
            threshold: Some(80.0),
            comparison_operator: Some("GreaterThanThreshold".into()),
            ..PutMetricAlarmInput::default()
        }
    }

    fn stat_query(id: &str, period: i64, return_data: Option<bool>) -> QueryInput {
        QueryInput {
            id: Some(id.into()),
            metric_stat: Some(MetricStatInput {
                namespace: Some("App".into()),
                metric_name: Some("Errors".into()),
                period: Some(period),
                stat: Some("Sum".into()),
                ..MetricStatInput::default()
            }),
            return_data,
            ..QueryInput::default()
        }
    }

    fn expr_query(id: &str, expression: &str, return_data: Option<bool>) -> QueryInput {
        QueryInput {
            id: Some(id.into()),
            expression: Some(expression.into()),
            return_data,
            ..QueryInput::default()
        }
    }

    fn math() -> PutMetricAlarmInput {
        PutMetricAlarmInput {
            metric_name: None,
            namespace: None,
            statistic: None,
            period: None,
            metrics: Some(vec![
                stat_query("m1", 60, Some(false)),
                expr_query("e1", "m1 * 2", Some(true)),
            ]),
            ..base()
        }
    }

    fn band() -> PutMetricAlarmInput {
        PutMetricAlarmInput {
            metrics: Some(vec![
                stat_query("m1", 60, Some(true)),
                expr_query("ad1", "ANOMALY_DETECTION_BAND(m1, 2)", Some(true)),
            ]),
            threshold: None,
            threshold_metric_id: Some("ad1".into()),
            comparison_operator: Some("LessThanLowerOrGreaterThanUpperThreshold".into()),
            ..math()
        }
    }

    type Case = (
        &'static str,
        Box<dyn Fn(&mut PutMetricAlarmInput)>,
        &'static str,
        &'static str,
    );

    /// Every §7.1 rule: (case, change to a valid request, error kind, message start).
    fn cases() -> Vec<Case> {
        vec![
            ("no name", Box::new(|i| i.alarm_name = None), "MissingParameter", "The parameter AlarmName is required."),
            ("empty name", Box::new(|i| i.alarm_name = Some(String::new())), "Validation", "1 validation error detected: Value '' at 'alarmName'"),
            ("long name", Box::new(|i| i.alarm_name = Some("a".repeat(256))), "Validation", "1 validation error detected"),
            ("control char", Box::new(|i| i.alarm_name = Some("a\nb".into())), "InvalidParameterValue", "The value a\\nb for parameter AlarmName"),
            ("long description", Box::new(|i| i.alarm_description = Some("d".repeat(1025))), "Validation", "1 validation error detected"),
            ("six actions", Box::new(|i| i.alarm_actions = (0..6).map(|n| format!("arn:aws:sns:us-east-1:1:t{n}")).collect()), "Validation", "1 validation error detected"),
            ("non-arn action", Box::new(|i| i.ok_actions = vec!["topic".into()]), "InvalidParameterValue", "The value topic for parameter OKActions.member.1 is invalid."),
            ("long action", Box::new(|i| i.insufficient_data_actions = vec![format!("arn:{}", "x".repeat(1021))]), "InvalidParameterValue", "The value arn:"),
            ("promql", Box::new(|i| i.evaluation_criteria = true), "InvalidParameterValue", "PromQL alarms are not supported."),
            ("metric and metrics", Box::new(|i| i.metrics = Some(vec![expr_query("e1", "1", None)])), "InvalidParameterCombination", "Exactly one of MetricName, Metrics"),
            ("neither form", Box::new(|i| i.metric_name = None), "InvalidParameterCombination", "Exactly one of MetricName, Metrics"),
            ("no namespace", Box::new(|i| i.namespace = None), "MissingParameter", "The parameter Namespace is required."),
            ("no statistic", Box::new(|i| i.statistic = None), "InvalidParameterCombination", "Exactly one of Statistic or ExtendedStatistic must be specified."),
            ("both statistics", Box::new(|i| i.extended_statistic = Some("p99".into())), "InvalidParameterCombination", "Exactly one of Statistic or ExtendedStatistic"),
            ("bad statistic", Box::new(|i| i.statistic = Some("Median".into())), "Validation", "1 validation error detected: Value 'Median' at 'statistic'"),
            ("bad extended", Box::new(|i| { i.statistic = None; i.extended_statistic = Some("p101".into()) }), "InvalidParameterValue", "The value p101 for parameter ExtendedStatistic is invalid."),
            ("trimmed bound 5%", Box::new(|i| { i.statistic = None; i.extended_statistic = Some("TM(5%:90%)".into()) }), "InvalidParameterValue", "The value TM(5%:90%)"),
            ("trimmed absolute", Box::new(|i| { i.statistic = None; i.extended_statistic = Some("TM(1:5)".into()) }), "InvalidParameterValue", "The value TM(1:5)"),
            ("no period", Box::new(|i| i.period = None), "MissingParameter", "The parameter Period is required."),
            ("period 45", Box::new(|i| i.period = Some(45)), "InvalidParameterValue", "The parameter Period must be 10, 20, 30 or a multiple of 60."),
            ("period 0", Box::new(|i| i.period = Some(0)), "InvalidParameterValue", "The parameter Period must be 10, 20, 30"),
            ("31 dimensions", Box::new(|i| i.dimensions = Some((0..31).map(|n| (Some(format!("d{n}")), Some("v".into()))).collect())), "InvalidParameterValue", "The collection Dimensions must not have a size greater than 30."),
            ("dimension without value", Box::new(|i| i.dimensions = Some(vec![(Some("d".into()), None)])), "MissingParameter", "The parameter Dimensions.member.1.Value is required."),
            ("bad unit", Box::new(|i| i.unit = Some("Parsecs".into())), "InvalidParameterValue", "The value Parsecs for parameter Unit is invalid."),
            ("no evaluation periods", Box::new(|i| i.evaluation_periods = None), "MissingParameter", "The parameter EvaluationPeriods is required."),
            ("evaluation periods 0", Box::new(|i| i.evaluation_periods = Some(0)), "Validation", "1 validation error detected: Value '0' at 'evaluationPeriods' failed to satisfy constraint: Member must have value greater than or equal to 1"),
            ("datapoints 0", Box::new(|i| i.datapoints_to_alarm = Some(0)), "Validation", "1 validation error detected: Value '0' at 'datapointsToAlarm'"),
            ("datapoints > periods", Box::new(|i| i.datapoints_to_alarm = Some(4)), "Validation", "DatapointsToAlarm must be less than or equal to EvaluationPeriods."),
            ("more than a day", Box::new(|i| i.evaluation_periods = Some(1441)), "InvalidParameterCombination", "Metrics cannot be checked across more than a day (EvaluationPeriods * Period must be <= 86400)."),
            ("more than a week", Box::new(|i| { i.period = Some(3600); i.evaluation_periods = Some(169) }), "InvalidParameterCombination", "Metrics cannot be checked across more than a week"),
            ("no operator", Box::new(|i| i.comparison_operator = None), "MissingParameter", "The parameter ComparisonOperator is required."),
            ("bad operator", Box::new(|i| i.comparison_operator = Some("Above".into())), "Validation", "1 validation error detected: Value 'Above' at 'comparisonOperator'"),
            ("no threshold", Box::new(|i| i.threshold = None), "MissingParameter", "The parameter Threshold is required."),
            ("infinite threshold", Box::new(|i| i.threshold = Some(f64::INFINITY)), "InvalidParameterValue", "The value inf for parameter Threshold"),
            ("static with band id", Box::new(|i| i.threshold_metric_id = Some("ad1".into())), "InvalidParameterCombination", "ThresholdMetricId cannot be used"),
            ("band operator on a metric", Box::new(|i| { i.threshold = None; i.comparison_operator = Some("LessThanLowerThreshold".into()); i.threshold_metric_id = Some("ad1".into()) }), "InvalidParameterCombination", "ThresholdMetricId requires the Metrics parameter."),
            ("treat missing foo", Box::new(|i| i.treat_missing_data = Some("foo".into())), "InvalidParameterValue", "The parameter TreatMissingData must be a value in the set [breaching, notBreaching, ignore, missing]."),
            ("low sample foo", Box::new(|i| i.evaluate_low_sample_count_percentile = Some("foo".into())), "InvalidParameterValue", "The parameter EvaluateLowSampleCountPercentile"),
            ("two windows", Box::new(|i| i.evaluation_window = Some((true, None, true))), "InvalidParameterCombination", "Exactly one of EvaluationWindow.WallClockWindow"),
            ("no window", Box::new(|i| i.evaluation_window = Some((false, None, false))), "InvalidParameterCombination", "Exactly one of EvaluationWindow"),
            ("long timezone", Box::new(|i| i.evaluation_window = Some((true, Some("z".repeat(51)), false))), "Validation", "1 validation error detected"),
            ("warm-up 0", Box::new(|i| i.warm_up = Some((Some(0), None))), "Validation", "1 validation error detected: Value '0' at 'warmUpConfiguration.warmUpPeriodDurationInMinutes'"),
            ("warm-up 2881", Box::new(|i| i.warm_up = Some((Some(2881), None))), "Validation", "1 validation error detected: Value '2881'"),
            ("warm-up without minutes", Box::new(|i| i.warm_up = Some((None, Some(true)))), "MissingParameter", "The parameter WarmUpConfiguration.WarmUpPeriodDurationInMinutes is required."),
            ("no included keys", Box::new(|i| i.action_configuration = Some(ActionConfiguration { tags_propagation: Some(TagsPropagation { included_tag_keys: Some(vec![]), ..TagsPropagation::default() }) })), "Validation", "1 validation error detected: Value '[]' at 'actionConfiguration.alarmTagsPropagation.includedTagKeys'"),
        ]
    }

    fn math_cases() -> Vec<Case> {
        vec![
            (
                "namespace with metrics",
                Box::new(|i| i.namespace = Some("App".into())),
                "InvalidParameterCombination",
                "The parameter Namespace cannot be specified with Metrics.",
            ),
            (
                "period with metrics",
                Box::new(|i| i.period = Some(60)),
                "InvalidParameterCombination",
                "The parameter Period cannot be specified with Metrics.",
            ),
            (
                "statistic with metrics",
                Box::new(|i| i.statistic = Some("Sum".into())),
                "InvalidParameterCombination",
                "The parameter Statistic",
            ),
            (
                "dimensions with metrics",
                Box::new(|i| i.dimensions = Some(vec![])),
                "InvalidParameterCombination",
                "The parameter Dimensions",
            ),
            (
                "unit with metrics",
                Box::new(|i| i.unit = Some("Count".into())),
                "InvalidParameterCombination",
                "The parameter Unit",
            ),
            (
                "empty metrics",
                Box::new(|i| i.metrics = Some(vec![])),
                "MissingParameter",
                "The parameter Metrics is required.",
            ),
            (
                "two return data",
                Box::new(|i| {
                    i.metrics = Some(vec![
                        stat_query("m1", 60, None),
                        expr_query("e1", "m1*2", None),
                    ])
                }),
                "Validation",
                "Exactly one element of the metrics list should return data.",
            ),
            (
                "no return data",
                Box::new(|i| i.metrics = Some(vec![stat_query("m1", 60, Some(false))])),
                "Validation",
                "Exactly one element",
            ),
            (
                "different periods",
                Box::new(|i| {
                    i.metrics = Some(vec![
                        stat_query("m1", 60, Some(false)),
                        stat_query("m2", 300, Some(false)),
                        expr_query("e1", "m1+m2", None),
                    ])
                }),
                "Validation",
                "All metrics in an alarm must have the same period.",
            ),
            (
                "eleven metric stats",
                Box::new(|i| {
                    let mut q: Vec<QueryInput> = (0..11)
                        .map(|n| stat_query(&format!("m{n}"), 60, Some(false)))
                        .collect();
                    q.push(expr_query("e1", "m1", None));
                    i.metrics = Some(q)
                }),
                "Validation",
                "The collection Metrics must not contain more than 10",
            ),
            (
                "duplicate id",
                Box::new(|i| {
                    i.metrics = Some(vec![
                        stat_query("m1", 60, Some(false)),
                        expr_query("m1", "1", None),
                    ])
                }),
                "Validation",
                "The value m1 for parameter Metrics.member.2.Id is not unique.",
            ),
            (
                "bad id",
                Box::new(|i| i.metrics = Some(vec![expr_query("E1", "1", None)])),
                "Validation",
                "The value E1 for parameter Metrics.member.1.Id is invalid",
            ),
            (
                "no id",
                Box::new(|i| {
                    i.metrics = Some(vec![expr_query("e", "1", None)]).map(|mut v| {
                        v[0].id = None;
                        v
                    })
                }),
                "MissingParameter",
                "The parameter Metrics.member.1.Id is required.",
            ),
            (
                "stat and expression",
                Box::new(|i| {
                    i.metrics = Some(vec![QueryInput {
                        expression: Some("1".into()),
                        ..stat_query("m1", 60, None)
                    }])
                }),
                "Validation",
                "Exactly one element of the Metrics list, Metrics.member.1",
            ),
            (
                "stat period 45",
                Box::new(|i| i.metrics = Some(vec![stat_query("m1", 45, None)])),
                "InvalidParameterValue",
                "The parameter Metrics.member.1.MetricStat.Period must be 10, 20, 30",
            ),
            (
                "stat without stat",
                Box::new(|i| {
                    i.metrics = Some(vec![stat_query("m1", 60, None)]).map(|mut v| {
                        if let Some(s) = v[0].metric_stat.as_mut() {
                            s.stat = None
                        }
                        v
                    })
                }),
                "MissingParameter",
                "The parameter Metrics.member.1.MetricStat.Stat is required.",
            ),
            (
                "search",
                Box::new(|i| {
                    i.metrics = Some(vec![expr_query(
                        "e1",
                        "SEARCH('{App} Errors', 'Sum')",
                        None,
                    )])
                }),
                "Validation",
                "SEARCH is not supported on Metric Alarms.",
            ),
            (
                "group by",
                Box::new(|i| {
                    i.metrics = Some(vec![expr_query(
                        "q1",
                        "SELECT AVG(x) FROM App GROUP BY h",
                        None,
                    )])
                }),
                "Validation",
                "GROUP BY is not supported",
            ),
        ]
    }

    fn band_cases() -> Vec<Case> {
        vec![
            (
                "band with threshold",
                Box::new(|i| i.threshold = Some(1.0)),
                "InvalidParameterCombination",
                "Threshold must not be specified",
            ),
            (
                "band without id",
                Box::new(|i| i.threshold_metric_id = None),
                "MissingParameter",
                "The parameter ThresholdMetricId is required.",
            ),
            (
                "band id unknown",
                Box::new(|i| i.threshold_metric_id = Some("zz".into())),
                "Validation",
                "ThresholdMetricId zz does not name",
            ),
            (
                "band id not a band",
                Box::new(|i| i.threshold_metric_id = Some("m1".into())),
                "Validation",
                "ThresholdMetricId m1 must name an ANOMALY_DETECTION_BAND",
            ),
            (
                "band not returned",
                Box::new(|i| {
                    if let Some(m) = i.metrics.as_mut() {
                        m[1].return_data = Some(false)
                    }
                }),
                "Validation",
                "Anomaly detection alarms need ReturnData",
            ),
        ]
    }

    fn kind(e: &AlarmError) -> &'static str {
        match e {
            AlarmError::Validation(_) => "Validation",
            AlarmError::InvalidParameterValue(_) => "InvalidParameterValue",
            AlarmError::InvalidParameterCombination(_) => "InvalidParameterCombination",
            AlarmError::MissingParameter(_) => "MissingParameter",
            AlarmError::InvalidNextToken(_) => "InvalidNextToken",
            AlarmError::NotFound(_) => "NotFound",
            AlarmError::InvalidFormat(_) => "InvalidFormat",
            AlarmError::Storage(_) => "Storage",
        }
    }

    #[test]
    fn put_validation_table() {
        for (start, table) in [
            (base(), cases()),
            (math(), math_cases()),
            (band(), band_cases()),
        ] {
            assert!(validate_put(&start).is_ok(), "{:?}", validate_put(&start));
            for (case, change, want_kind, want_message) in table {
                let mut input = start.clone();
                change(&mut input);
                let err = validate_put(&input).expect_err(case);
                assert_eq!(kind(&err), want_kind, "{case}: {err}");
                assert!(err.to_string().starts_with(want_message), "{case}: {err}");
            }
        }
    }

    #[test]
    fn model_constraints_are_reported_together() {
        let err = validate_put(&PutMetricAlarmInput {
            evaluation_periods: Some(0),
            comparison_operator: Some("Above".into()),
            statistic: None,
            ..base()
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "2 validation errors detected: Value '0' at 'evaluationPeriods' failed to satisfy constraint: Member must have value greater than or equal to 1; Value 'Above' at 'comparisonOperator' failed to satisfy constraint: Member must satisfy enum value set: [GreaterThanOrEqualToThreshold, GreaterThanThreshold, LessThanThreshold, LessThanOrEqualToThreshold, LessThanLowerOrGreaterThanUpperThreshold, LessThanLowerThreshold, GreaterThanUpperThreshold]"
        );
    }

    #[test]
    fn valid_forms() {
        for stat in [
            "p99",
            "p99.9",
            "tm90",
            "tc90",
            "ts90",
            "wm90",
            "IQM",
            "PR(10:200)",
            "TM(10%:90%)",
            "WM(25%:75%)",
            "TS(10%:90%)",
            "TC(50%:60%)",
        ] {
            assert!(valid_alarm_extended_statistic(stat), "{stat}");
        }
        let config = validate_put(&PutMetricAlarmInput {
            period: Some(10),
            evaluation_periods: Some(8640),
            ..base()
        })
        .unwrap();
        assert_eq!(config.datapoints(), 8640);
        let config = validate_put(&PutMetricAlarmInput {
            period: Some(3600),
            evaluation_periods: Some(168),
            datapoints_to_alarm: Some(2),
            ..base()
        })
        .unwrap();
        assert_eq!(config.datapoints(), 2);
        assert_eq!(validate_put(&math()).unwrap().effective_period(), Some(60));
        assert_eq!(validate_put(&band()).unwrap().threshold, None);
        let config = validate_put(&PutMetricAlarmInput {
            evaluation_window: Some((true, Some("Europe/Paris".into()), false)),
            warm_up: Some((Some(30), Some(true))),
            ..base()
        })
        .unwrap();
        assert_eq!(
            config.evaluation_window,
            Some(EvaluationWindow::WallClock {
                timezone: Some("Europe/Paris".into())
            })
        );
        assert_eq!(
            config.warm_up,
            Some(WarmUp {
                minutes: 30,
                only_start_after: Some(true)
            })
        );
    }

    fn scope(now_ms: i64) -> Scope<'static> {
        Scope {
            account: "111122223333",
            region: "us-east-1",
            request_id: "r",
            now: Timestamp::from_millis(now_ms),
        }
    }

    #[test]
    fn lifecycle_filters_paging_and_history() {
        let catalog: Arc<dyn Catalog> = Arc::new(MemoryCatalog::default());
        let alarms = Alarms::new(catalog.clone());
        for (i, name) in ["b", "a", "c2", "c1"].iter().enumerate() {
            let config = validate_put(&PutMetricAlarmInput {
                alarm_name: Some((*name).into()),
                alarm_actions: if *name == "a" {
                    vec!["arn:aws:sns:us-east-1:1:ops".into()]
                } else {
                    vec![]
                },
                ..base()
            })
            .unwrap();
            let (ops, created, _) = alarms
                .put_changes(&scope(1_000 + i as i64), config)
                .unwrap();
            assert!(created);
            catalog.commit(&ops).unwrap();
        }
        let a = alarms
            .get("111122223333", "us-east-1", "a")
            .unwrap()
            .unwrap();
        assert_eq!(
            (a.state_value.as_str(), a.state_reason.as_str()),
            ("INSUFFICIENT_DATA", INITIAL_REASON)
        );
        assert_eq!(a.arn, "arn:aws:cloudwatch:us-east-1:111122223333:alarm:a");
        let every = alarms.every_alarm().unwrap();
        assert_eq!(every.len(), 4);
        assert_eq!(
            (
                every[0].0.as_str(),
                every[0].1.as_str(),
                every[0].2.config.name.as_str()
            ),
            ("111122223333", "us-east-1", "a")
        );

        let all = DescribeFilter::default();
        let (page, more) = alarms
            .describe("111122223333", "us-east-1", &all, None, 2)
            .unwrap();
        assert_eq!(
            page.iter()
                .map(|a| a.config.name.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(more);
        let (page, more) = alarms
            .describe("111122223333", "us-east-1", &all, Some("b"), 2)
            .unwrap();
        assert_eq!(
            page.iter()
                .map(|a| a.config.name.as_str())
                .collect::<Vec<_>>(),
            ["c1", "c2"]
        );
        assert!(!more);
        let names = |f: DescribeFilter| -> Vec<String> {
            f.validate().unwrap();
            alarms
                .describe("111122223333", "us-east-1", &f, None, 50)
                .unwrap()
                .0
                .into_iter()
                .map(|a| a.config.name)
                .collect()
        };
        assert_eq!(
            names(DescribeFilter {
                prefix: Some("c".into()),
                ..all.clone()
            }),
            ["c1", "c2"]
        );
        assert_eq!(
            names(DescribeFilter {
                names: vec!["c2".into(), "zz".into()],
                ..all.clone()
            }),
            ["c2"]
        );
        assert_eq!(
            names(DescribeFilter {
                action_prefix: Some("arn:aws:sns".into()),
                ..all.clone()
            }),
            ["a"]
        );
        assert_eq!(
            names(DescribeFilter {
                state: Some("OK".into()),
                ..all.clone()
            }),
            Vec::<String>::new()
        );
        assert_eq!(
            names(DescribeFilter {
                types: vec!["CompositeAlarm".into()],
                ..all.clone()
            }),
            Vec::<String>::new()
        );
        assert_eq!(
            names(DescribeFilter {
                children_of: Some("x".into()),
                ..all.clone()
            }),
            Vec::<String>::new()
        );
        assert!(DescribeFilter {
            names: vec!["a".into()],
            prefix: Some("a".into()),
            ..all.clone()
        }
        .validate()
        .is_err());
        assert!(DescribeFilter {
            parents_of: Some("a".into()),
            state: Some("OK".into()),
            ..all.clone()
        }
        .validate()
        .is_err());
        assert!(DescribeFilter {
            state: Some("BAD".into()),
            ..all.clone()
        }
        .validate()
        .is_err());

        // Update keeps the state; SetAlarmState transitions write history.
        catalog
            .commit(
                &alarms
                    .set_state_changes(&scope(5_000), "a", "ALARM", "manual", Some(r#"{"x":1}"#))
                    .unwrap()
                    .2,
            )
            .unwrap();
        let config = validate_put(&PutMetricAlarmInput {
            alarm_name: Some("a".into()),
            threshold: Some(5.0),
            ..base()
        })
        .unwrap();
        let (ops, created, _) = alarms.put_changes(&scope(6_000), config).unwrap();
        assert!(!created);
        catalog.commit(&ops).unwrap();
        let a = alarms
            .get("111122223333", "us-east-1", "a")
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                a.state_value.as_str(),
                a.state_transitioned_ms,
                a.configuration_updated_ms
            ),
            ("ALARM", 5_000, 6_000)
        );
        catalog
            .commit(
                &alarms
                    .set_state_changes(&scope(7_000), "a", "ALARM", "again", None)
                    .unwrap()
                    .2,
            )
            .unwrap();
        let a = alarms
            .get("111122223333", "us-east-1", "a")
            .unwrap()
            .unwrap();
        assert_eq!(
            (a.state_updated_ms, a.state_transitioned_ms),
            (7_000, 5_000)
        );
        assert!(matches!(
            alarms.set_state_changes(&scope(7_000), "zz", "OK", "", None),
            Err(AlarmError::NotFound(_))
        ));

        let history = |f: HistoryFilter, after: Option<&str>, limit| {
            alarms
                .history(
                    "111122223333",
                    "us-east-1",
                    &f,
                    Timestamp::from_millis(8_000),
                    after,
                    limit,
                )
                .unwrap()
        };
        let only_a = HistoryFilter {
            alarm_name: Some("a".into()),
            ..HistoryFilter::default()
        };
        let (items, next) = history(only_a.clone(), None, 10);
        assert_eq!(
            items.iter().map(|i| i.summary.as_str()).collect::<Vec<_>>(),
            [
                "Alarm \"a\" updated",
                "Alarm updated from INSUFFICIENT_DATA to ALARM",
                "Alarm \"a\" created"
            ]
        );
        assert!(next.is_none());
        let state: serde_json::Value = serde_json::from_str(&items[1].data).unwrap();
        assert_eq!(state["newState"]["stateReasonData"]["x"], 1);
        let (first, next) = history(only_a.clone(), None, 1);
        let (rest, _) = history(only_a.clone(), next.as_deref(), 10);
        assert_eq!(first.len() + rest.len(), 3);
        assert_eq!(rest[0].item_type, "StateUpdate");
        let (asc, _) = history(
            HistoryFilter {
                ascending: true,
                item_type: Some("ConfigurationUpdate".into()),
                ..HistoryFilter::default()
            },
            None,
            10,
        );
        assert_eq!(asc.len(), 5);
        assert_eq!(asc[0].alarm_name, "b");
        let (ranged, _) = history(
            HistoryFilter {
                start_ms: Some(1_001),
                end_ms: Some(1_002),
                ..HistoryFilter::default()
            },
            None,
            10,
        );
        assert_eq!(ranged.len(), 2);
        let (composite, _) = history(
            HistoryFilter {
                types: vec!["CompositeAlarm".into()],
                ..HistoryFilter::default()
            },
            None,
            10,
        );
        assert!(composite.is_empty());

        // Actions flag, delete (history kept), retention.
        catalog
            .commit(
                &alarms
                    .set_actions_changes(&scope(8_000), &["b".into(), "zz".into()], false)
                    .unwrap(),
            )
            .unwrap();
        assert!(
            !alarms
                .get("111122223333", "us-east-1", "b")
                .unwrap()
                .unwrap()
                .config
                .actions_enabled
        );
        let (ops, deleted) = alarms
            .delete_changes(&scope(9_000), &["b".into(), "zz".into()])
            .unwrap();
        assert_eq!(deleted, ["b"]);
        catalog.commit(&ops).unwrap();
        assert!(alarms
            .get("111122223333", "us-east-1", "b")
            .unwrap()
            .is_none());
        let later = 9_000 + HISTORY_RETENTION_MS;
        let (items, _) = alarms
            .history(
                "111122223333",
                "us-east-1",
                &HistoryFilter {
                    alarm_name: Some("b".into()),
                    ..HistoryFilter::default()
                },
                Timestamp::from_millis(later),
                None,
                10,
            )
            .unwrap();
        assert_eq!(
            items.len(),
            1,
            "only the delete item is younger than 14 days"
        );
        let config = validate_put(&PutMetricAlarmInput {
            alarm_name: Some("d".into()),
            ..base()
        })
        .unwrap();
        let (ops, _, _) = alarms.put_changes(&scope(later), config).unwrap();
        let history_ops = |ops: &[CatalogOp]| {
            ops.iter()
                .filter(|o| format!("{o:?}").contains("alarm_history"))
                .count()
        };
        // Seven items are older than 14 days; the write adds one of its own.
        assert_eq!(history_ops(&ops), 8, "expired items are pruned");
        assert_eq!(
            history_ops(
                &alarms
                    .sweep_history_changes(
                        "111122223333",
                        "us-east-1",
                        Timestamp::from_millis(later)
                    )
                    .unwrap()
            ),
            7
        );
        // Far later, a write's bounded prune misses old buckets; the sweep does not.
        let much_later = later + 10 * PRUNE_BUCKET_MS;
        let config = validate_put(&PutMetricAlarmInput {
            alarm_name: Some("d".into()),
            ..base()
        })
        .unwrap();
        let (ops, _, _) = alarms.put_changes(&scope(much_later), config).unwrap();
        assert_eq!(history_ops(&ops), 1);
        assert_eq!(
            history_ops(
                &alarms
                    .sweep_history_changes(
                        "111122223333",
                        "us-east-1",
                        Timestamp::from_millis(much_later)
                    )
                    .unwrap()
            ),
            8
        );
    }

    #[test]
    fn metric_filter_and_dates() {
        assert_eq!(
            alarm_json_date(1_704_110_400_123),
            "2024-01-01T12:00:00.123+0000"
        );
        let config = validate_put(&PutMetricAlarmInput {
            dimensions: Some(vec![
                (Some("b".into()), Some("2".into())),
                (Some("a".into()), Some("1".into())),
            ]),
            ..base()
        })
        .unwrap();
        let alarm = MetricAlarm {
            v: 1,
            config,
            arn: String::new(),
            configuration_updated_ms: 0,
            state_value: "OK".into(),
            state_reason: String::new(),
            state_reason_data: None,
            state_updated_ms: 0,
            state_transitioned_ms: 0,
            evaluation_state: None,
        };
        let mut f = MetricFilter {
            namespace: "AWS/EC2".into(),
            metric_name: "CPUUtilization".into(),
            dimensions: vec![("a".into(), "1".into()), ("b".into(), "2".into())],
            ..MetricFilter::default()
        };
        assert!(f.matches(&alarm));
        f.period = Some(300);
        assert!(!f.matches(&alarm));
        f.period = None;
        f.dimensions.pop();
        assert!(!f.matches(&alarm));
    }
}
