//! Alarm transitions and the actions they run (`spec/cloudwatch.md` §7.6,
//! §8.4): every committed change of an alarm's StateValue, whoever made it
//! (the evaluation engine, SetAlarmState, a composite's re-evaluation),
//! becomes a [`Transition`]; the action runner turns it into SNS messages and
//! `Action` history items.
//!
//! A transition carries the action ARNs that should run (already empty when
//! actions are disabled or suppressed) and the notification message AWS
//! sends for it, so the runner does not need to know the kind of alarm.

use serde::{Deserialize, Serialize};

/// A metric alarm or a composite alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlarmKind {
    /// `MetricAlarm`.
    Metric,
    /// `CompositeAlarm`.
    Composite,
}

impl AlarmKind {
    /// The `AlarmType` wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmKind::Metric => "MetricAlarm",
            AlarmKind::Composite => "CompositeAlarm",
        }
    }
}

/// One change of an alarm's StateValue, as committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// Account id.
    pub account: String,
    /// Region.
    pub region: String,
    /// `AlarmName`.
    pub alarm_name: String,
    /// `AlarmArn`.
    pub alarm_arn: String,
    /// Metric or composite.
    pub kind: AlarmKind,
    /// StateValue before.
    pub old_state: String,
    /// StateValue after.
    pub new_state: String,
    /// When the transition happened (StateUpdatedTimestamp), epoch ms.
    pub at_ms: i64,
    /// The action ARNs to run: the new state's actions, or none when actions
    /// are disabled or suppressed.
    pub actions: Vec<String>,
    /// The SNS `Subject` (`ALARM: "name" in US East (N. Virginia)`).
    pub subject: String,
    /// The SNS `Message`: AWS's alarm notification JSON (§7.6).
    pub message: String,
}

/// The name AWS gives `region` in notifications (`US East (N. Virginia)`);
/// regions it does not know keep their code.
pub fn region_name(region: &str) -> &str {
    match region {
        "us-east-1" => "US East (N. Virginia)",
        "us-east-2" => "US East (Ohio)",
        "us-west-1" => "US West (N. California)",
        "us-west-2" => "US West (Oregon)",
        "af-south-1" => "Africa (Cape Town)",
        "ap-east-1" => "Asia Pacific (Hong Kong)",
        "ap-south-1" => "Asia Pacific (Mumbai)",
        "ap-south-2" => "Asia Pacific (Hyderabad)",
        "ap-southeast-1" => "Asia Pacific (Singapore)",
        "ap-southeast-2" => "Asia Pacific (Sydney)",
        "ap-southeast-3" => "Asia Pacific (Jakarta)",
        "ap-southeast-4" => "Asia Pacific (Melbourne)",
        "ap-northeast-1" => "Asia Pacific (Tokyo)",
        "ap-northeast-2" => "Asia Pacific (Seoul)",
        "ap-northeast-3" => "Asia Pacific (Osaka)",
        "ca-central-1" => "Canada (Central)",
        "ca-west-1" => "Canada West (Calgary)",
        "eu-central-1" => "EU (Frankfurt)",
        "eu-central-2" => "EU (Zurich)",
        "eu-west-1" => "EU (Ireland)",
        "eu-west-2" => "EU (London)",
        "eu-west-3" => "EU (Paris)",
        "eu-north-1" => "EU (Stockholm)",
        "eu-south-1" => "EU (Milan)",
        "eu-south-2" => "EU (Spain)",
        "il-central-1" => "Israel (Tel Aviv)",
        "me-south-1" => "Middle East (Bahrain)",
        "me-central-1" => "Middle East (UAE)",
        "sa-east-1" => "South America (Sao Paulo)",
        other => other,
    }
}

/// The SNS subject of a transition to `state`: `ALARM: "name" in US East (N. Virginia)`.
pub fn subject(state: &str, name: &str, region: &str) -> String {
    // SNS subjects are at most 100 characters; long names are cut, as AWS does.
    let full = format!("{state}: \"{name}\" in {}", region_name(region));
    full.chars().take(100).collect()
}

/// The `Trigger.Statistic` spelling of a basic statistic (`SAMPLE_COUNT`).
fn trigger_statistic(s: &str) -> String {
    match s {
        "SampleCount" => "SAMPLE_COUNT".to_owned(),
        other => other.to_ascii_uppercase(),
    }
}

fn dimensions_json(dimensions: &[(String, String)]) -> serde_json::Value {
    dimensions
        .iter()
        .map(|(n, v)| serde_json::json!({"value": v, "name": n}))
        .collect()
}

/// The notification message of a metric alarm's transition from
/// `old_state` (§7.6), for `alarm` as written.
pub fn metric_notification(
    alarm: &crate::alarms::MetricAlarm,
    account: &str,
    region: &str,
    old_state: &str,
) -> String {
    use serde_json::{json, Map, Value};
    let c = &alarm.config;
    let mut trigger = Map::new();
    if c.metrics.is_empty() {
        trigger.insert("MetricName".into(), json!(c.metric_name));
        trigger.insert("Namespace".into(), json!(c.namespace));
        match (&c.statistic, &c.extended_statistic) {
            (_, Some(e)) => {
                trigger.insert("StatisticType".into(), json!("ExtendedStatistic"));
                trigger.insert("ExtendedStatistic".into(), json!(e));
            }
            (s, None) => {
                trigger.insert("StatisticType".into(), json!("Statistic"));
                trigger.insert(
                    "Statistic".into(),
                    json!(s.as_deref().map(trigger_statistic)),
                );
            }
        }
        trigger.insert("Unit".into(), json!(c.unit));
        trigger.insert("Dimensions".into(), dimensions_json(&c.dimensions));
        trigger.insert("Period".into(), json!(c.period));
    } else {
        let metrics: Vec<Value> = c
            .metrics
            .iter()
            .map(|q| {
                let mut m = Map::new();
                m.insert("Id".into(), json!(q.id));
                if let Some(e) = &q.expression {
                    m.insert("Expression".into(), json!(e));
                }
                if let Some(s) = &q.metric_stat {
                    let mut stat = json!({
                        "Metric": {
                            "Dimensions": dimensions_json(&s.dimensions),
                            "MetricName": s.metric_name,
                            "Namespace": s.namespace,
                        },
                        "Period": s.period,
                        "Stat": s.stat,
                    });
                    if let Some(u) = &s.unit {
                        stat["Unit"] = json!(u);
                    }
                    m.insert("MetricStat".into(), stat);
                }
                if let Some(l) = &q.label {
                    m.insert("Label".into(), json!(l));
                }
                m.insert("ReturnData".into(), json!(q.return_data.unwrap_or(true)));
                Value::Object(m)
            })
            .collect();
        trigger.insert("Period".into(), json!(c.effective_period()));
        trigger.insert("Metrics".into(), Value::Array(metrics));
    }
    trigger.insert("EvaluationPeriods".into(), json!(c.evaluation_periods));
    trigger.insert("DatapointsToAlarm".into(), json!(c.datapoints()));
    trigger.insert("ComparisonOperator".into(), json!(c.comparison_operator));
    match (&c.threshold, &c.threshold_metric_id) {
        (_, Some(id)) => {
            trigger.insert("ThresholdMetricId".into(), json!(id));
        }
        (t, None) => {
            trigger.insert("Threshold".into(), json!(t));
        }
    }
    trigger.insert(
        "TreatMissingData".into(),
        json!(c.treat_missing_data.as_deref().unwrap_or("missing")),
    );
    trigger.insert(
        "EvaluateLowSampleCountPercentile".into(),
        json!(c
            .evaluate_low_sample_count_percentile
            .as_deref()
            .unwrap_or("")),
    );
    let message = json!({
        "AlarmName": c.name,
        "AlarmDescription": c.description,
        "AWSAccountId": account,
        "AlarmConfigurationUpdatedTimestamp": crate::alarms::alarm_json_date(alarm.configuration_updated_ms),
        "NewStateValue": alarm.state_value,
        "NewStateReason": alarm.state_reason,
        "StateChangeTime": crate::alarms::alarm_json_date(alarm.state_updated_ms),
        "Region": region_name(region),
        "AlarmArn": alarm.arn,
        "OldStateValue": old_state,
        "OKActions": c.ok_actions,
        "AlarmActions": c.alarm_actions,
        "InsufficientDataActions": c.insufficient_data_actions,
        "Trigger": Value::Object(trigger),
    });
    message.to_string()
}

/// The actions a state runs: its list, or none with actions disabled.
pub fn actions_for(
    state: &str,
    enabled: bool,
    ok: &[String],
    alarm: &[String],
    insufficient: &[String],
) -> Vec<String> {
    if !enabled {
        return Vec::new();
    }
    match state {
        "OK" => ok.to_vec(),
        "ALARM" => alarm.to_vec(),
        _ => insufficient.to_vec(),
    }
}

impl Transition {
    /// The transition of metric alarm `alarm` (as written) from `old_state`.
    pub fn of_metric_alarm(
        alarm: &crate::alarms::MetricAlarm,
        account: &str,
        region: &str,
        old_state: &str,
    ) -> Transition {
        let c = &alarm.config;
        Transition {
            account: account.to_owned(),
            region: region.to_owned(),
            alarm_name: c.name.clone(),
            alarm_arn: alarm.arn.clone(),
            kind: AlarmKind::Metric,
            old_state: old_state.to_owned(),
            new_state: alarm.state_value.clone(),
            at_ms: alarm.state_updated_ms,
            actions: actions_for(
                &alarm.state_value,
                c.actions_enabled,
                &c.ok_actions,
                &c.alarm_actions,
                &c.insufficient_data_actions,
            ),
            subject: subject(&alarm.state_value, &c.name, region),
            message: metric_notification(alarm, account, region, old_state),
        }
    }
}
