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
