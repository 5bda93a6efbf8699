//! CloudWatch composite alarms (`spec/cloudwatch.md` §8): PutCompositeAlarm
//! validation, the stored record, evaluation of the rule over its children's
//! states, the cascade that re-evaluates composites when alarms they name
//! change state, and action suppression by an `ActionsSuppressor` alarm.
//!
//! Like [`crate::alarms`], nothing is applied here: functions return catalog
//! changes (and the [`Transition`]s whose actions should run), which the
//! caller commits in one batch with whatever caused them.
//!
//! # Catalog layout (version 1)
//! - Table `composite_alarms`, key `{account}/{region}/{AlarmName}`, value JSON
//!   of [`CompositeAlarm`] (`"v":1`). History items go to the metric alarms'
//!   history table with `AlarmType` `CompositeAlarm`.
//!
//! # Choices [TW]
//! - A name is unique across metric and composite alarms: putting one kind
//!   with the name of the other is a `ValidationError`.
//! - Composites that lie on a reference cycle are not re-evaluated by a
//!   cascade: they keep their states (§8.3).
//! - A wait or extension period that expires runs the actions of the
//!   composite's current state only when a transition was held back.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;
use trailwatch_storage::{Catalog, CatalogOp};
use trailwatch_types::Timestamp;

use crate::actions::{actions_for, region_name, subject, AlarmKind, Transition};
use crate::alarms::{
    alarm_arn, alarm_json_date, check_actions, check_length, history_data, AlarmError, Alarms,
    HistoryItem, Scope, INITIAL_REASON,
};
use crate::composite::{child_name, Rule};
use crate::evaluation::State;
use crate::suppression::{Suppression, Suppressor};

const TABLE: &str = "composite_alarms";
/// A child may be named by at most this many composites (§8.1).
pub const MAX_PARENTS: usize = 150;

fn storage(e: impl std::fmt::Display) -> AlarmError {
    AlarmError::Storage(e.to_string())
}

fn key(account: &str, region: &str, name: &str) -> String {
    format!("{account}/{region}/{name}")
}

/// PutCompositeAlarm as decoded.
#[derive(Debug, Clone, Default)]
pub struct CompositeInput {
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
    /// `AlarmRule`.
    pub alarm_rule: Option<String>,
    /// `ActionsSuppressor`.
    pub actions_suppressor: Option<String>,
    /// `ActionsSuppressorWaitPeriod`, seconds.
    pub wait_period: Option<i64>,
    /// `ActionsSuppressorExtensionPeriod`, seconds.
    pub extension_period: Option<i64>,
}

/// A validated composite configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompositeConfig {
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
    /// `AlarmRule`, as given.
    pub rule: String,
    /// `ActionsSuppressor` (a name or an alarm ARN).
    pub suppressor: Option<String>,
    /// `ActionsSuppressorWaitPeriod`, seconds.
    pub wait_period: Option<i64>,
    /// `ActionsSuppressorExtensionPeriod`, seconds.
    pub extension_period: Option<i64>,
}

impl CompositeConfig {
    /// The parsed rule (stored rules were validated).
    pub fn parsed_rule(&self) -> Option<Rule> {
        Rule::parse(&self.rule).ok()
    }

    /// The names of the children, ARNs reduced to names.
    pub fn children(&self) -> Vec<String> {
        self.parsed_rule()
            .map(|r| {
                r.children()
                    .into_iter()
                    .map(|c| child_name(c).to_owned())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The suppressor's name, when one is set.
    pub fn suppressor_name(&self) -> Option<&str> {
        self.suppressor.as_deref().map(child_name)
    }
}

/// A stored composite alarm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompositeAlarm {
    /// Format version (1).
    pub v: u8,
    /// The configuration.
    #[serde(flatten)]
    pub config: CompositeConfig,
    /// `AlarmArn`.
    pub arn: String,
    /// `AlarmConfigurationUpdatedTimestamp`, epoch ms.
    pub configuration_updated_ms: i64,
    /// `StateValue`.
    pub state_value: String,
    /// StateValue before the last transition (what held actions report).
    pub previous_state: String,
    /// `StateReason`.
    pub state_reason: String,
    /// `StateReasonData`.
    pub state_reason_data: Option<String>,
    /// `StateUpdatedTimestamp`, epoch ms.
    pub state_updated_ms: i64,
    /// `StateTransitionedTimestamp`, epoch ms.
    pub state_transitioned_ms: i64,
    /// Action suppression, when a suppressor is set.
    pub suppression: Option<Suppressor>,
    /// When the suppression last changed (`ActionsSuppressedBy` timestamp).
    pub suppression_updated_ms: i64,
}

impl CompositeAlarm {
    /// `ActionsSuppressedBy`.
    pub fn suppressed_by(&self) -> &'static str {
        self.suppression.map_or("None", |s| s.state.as_str())
    }

    /// `ActionsSuppressedReason`.
    pub fn suppressed_reason(&self) -> Option<&'static str> {
        self.suppression.and_then(|s| s.state.reason())
    }
}

/// PutCompositeAlarm validation that needs no other alarm (§8.1).
pub fn validate_put(input: &CompositeInput) -> Result<CompositeConfig, AlarmError> {
    let missing = |n: &str| AlarmError::MissingParameter(format!("The parameter {n} is required."));
    let name = input
        .alarm_name
        .clone()
        .ok_or_else(|| missing("AlarmName"))?;
    check_length(&name, "alarmName", 1, 255)?;
    if name.chars().any(|c| c.is_ascii_control()) {
        return Err(AlarmError::InvalidParameterValue(
            "The parameter AlarmName must not contain control characters.".to_owned(),
        ));
    }
    if let Some(d) = &input.alarm_description {
        check_length(d, "alarmDescription", 0, 1024)?;
    }
    let rule = input
        .alarm_rule
        .clone()
        .ok_or_else(|| missing("AlarmRule"))?;
    check_length(&rule, "alarmRule", 1, crate::composite::MAX_RULE_CHARS)?;
    Rule::parse(&rule).map_err(|e| AlarmError::Validation(e.0))?;
    for (actions, member) in [
        (&input.ok_actions, "OKActions"),
        (&input.alarm_actions, "AlarmActions"),
        (&input.insufficient_data_actions, "InsufficientDataActions"),
    ] {
        if actions.len() > 5 {
            return Err(crate::alarms::constraint(
                &format!("[{}]", actions.join(", ")),
                &crate::alarms::lower_first(member),
                "Member must have length less than or equal to 5",
            ));
        }
        check_actions(actions, member)?;
    }
    if let Some(s) = &input.actions_suppressor {
        check_length(s, "actionsSuppressor", 1, 1600)?;
    }
    match (
        &input.actions_suppressor,
        input.wait_period,
        input.extension_period,
    ) {
        (None, None, None) | (Some(_), Some(_), Some(_)) => {}
        (Some(_), _, _) => {
            return Err(AlarmError::Validation(
                "ActionsSuppressorWaitPeriod and ActionsSuppressorExtensionPeriod are required when ActionsSuppressor is specified.".to_owned(),
            ))
        }
        (None, _, _) => {
            return Err(AlarmError::Validation(
                "ActionsSuppressorWaitPeriod and ActionsSuppressorExtensionPeriod can be specified only with ActionsSuppressor.".to_owned(),
            ))
        }
    }
    for (v, member) in [
        (input.wait_period, "ActionsSuppressorWaitPeriod"),
        (input.extension_period, "ActionsSuppressorExtensionPeriod"),
    ] {
        if v.is_some_and(|v| v < 0) {
            return Err(AlarmError::InvalidParameterValue(format!(
                "The parameter {member} must not be negative."
            )));
        }
    }
    Ok(CompositeConfig {
        name,
        description: input.alarm_description.clone(),
        actions_enabled: input.actions_enabled.unwrap_or(true),
        ok_actions: input.ok_actions.clone(),
        alarm_actions: input.alarm_actions.clone(),
        insufficient_data_actions: input.insufficient_data_actions.clone(),
        rule,
        suppressor: input.actions_suppressor.clone(),
        wait_period: input.wait_period,
        extension_period: input.extension_period,
    })
}

/// `Friday 21 October, 2022 14:12:54 UTC`, the time in a composite's reason.
pub fn reason_time(ms: i64) -> String {
    const DAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let iso = Timestamp::from_millis(ms).to_iso8601_seconds();
    let field = |a: usize, b: usize| iso.get(a..b).unwrap_or("0");
    let month: usize = field(5, 7).parse().unwrap_or(1);
    let day: u32 = field(8, 10).parse().unwrap_or(1);
    let weekday = DAYS[ms.div_euclid(86_400_000).rem_euclid(7) as usize];
    format!(
        "{weekday} {day} {}, {} {} UTC",
        MONTHS[month.clamp(1, 12) - 1],
        field(0, 4),
        field(11, 19)
    )
}

/// A child's state as a rule sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildState {
    /// `AlarmArn`.
    pub arn: String,
    /// StateValue.
    pub state: String,
    /// When it last changed (or was last set), epoch ms.
    pub at_ms: i64,
}

/// The catalog's alarms of one account and region as a rule sees them, with
/// the changes of the batch being built laid over them.
struct View<'a> {
    account: &'a str,
    region: &'a str,
    alarms: &'a Alarms,
    composites: &'a BTreeMap<String, CompositeAlarm>,
    overrides: HashMap<String, ChildState>,
}

impl View<'_> {
    fn child(&self, name: &str) -> Option<ChildState> {
        if let Some(s) = self.overrides.get(name) {
            return Some(s.clone());
        }
        if let Some(c) = self.composites.get(name) {
            return Some(ChildState {
                arn: c.arn.clone(),
                state: c.state_value.clone(),
                at_ms: c.state_transitioned_ms,
            });
        }
        self.alarms
            .get(self.account, self.region, name)
            .ok()
            .flatten()
            .map(|a| ChildState {
                arn: a.arn.clone(),
                state: a.state_value.clone(),
                at_ms: a.state_transitioned_ms,
            })
    }
}

/// Composite alarms of every account and region, in the catalog.
#[derive(Debug, Clone)]
pub struct Composites {
    catalog: Arc<dyn Catalog>,
}

fn decode(bytes: &[u8]) -> Result<CompositeAlarm, AlarmError> {
    let c: CompositeAlarm = serde_json::from_slice(bytes).map_err(storage)?;
    if c.v != 1 {
        return Err(AlarmError::Storage(format!(
            "composite alarm record version {}",
            c.v
        )));
    }
    Ok(c)
}

/// The lower-camel alarm object of composite history items (§7.8).
pub fn history_json(c: &CompositeAlarm) -> serde_json::Value {
    let mut o = serde_json::Map::new();
    o.insert("alarmName".into(), json!(c.config.name));
    o.insert("alarmArn".into(), json!(c.arn));
    if let Some(d) = &c.config.description {
        o.insert("alarmDescription".into(), json!(d));
    }
    o.insert(
        "alarmConfigurationUpdatedTimestamp".into(),
        json!(alarm_json_date(c.configuration_updated_ms)),
    );
    o.insert("alarmRule".into(), json!(c.config.rule));
    o.insert("stateValue".into(), json!(c.state_value));
    o.insert(
        "stateUpdatedTimestamp".into(),
        json!(alarm_json_date(c.state_updated_ms)),
    );
    o.insert("actionsEnabled".into(), json!(c.config.actions_enabled));
    o.insert("okActions".into(), json!(c.config.ok_actions));
    o.insert("alarmActions".into(), json!(c.config.alarm_actions));
    o.insert(
        "insufficientDataActions".into(),
        json!(c.config.insufficient_data_actions),
    );
    if let Some(s) = &c.config.suppressor {
        o.insert("actionsSuppressor".into(), json!(s));
    }
    serde_json::Value::Object(o)
}

/// The notification message of a composite's transition (what SNS
/// subscribers get: the metric alarm fields, `AlarmRule` and
/// `TriggeringChildren` in place of `Trigger`).
pub fn notification(
    c: &CompositeAlarm,
    account: &str,
    region: &str,
    old_state: &str,
    triggering: &[ChildState],
) -> String {
    json!({
        "AlarmName": c.config.name,
        "AlarmDescription": c.config.description,
        "AWSAccountId": account,
        "AlarmConfigurationUpdatedTimestamp": alarm_json_date(c.configuration_updated_ms),
        "NewStateValue": c.state_value,
        "NewStateReason": c.state_reason,
        "StateChangeTime": alarm_json_date(c.state_updated_ms),
        "Region": region_name(region),
        "AlarmArn": c.arn,
        "OldStateValue": old_state,
        "OKActions": c.config.ok_actions,
        "AlarmActions": c.config.alarm_actions,
        "InsufficientDataActions": c.config.insufficient_data_actions,
        "AlarmRule": c.config.rule,
        "TriggeringChildren": triggering
            .iter()
            .map(|t| json!({"Arn": t.arn, "State": {"Value": t.state, "Timestamp": alarm_json_date(t.at_ms)}}))
            .collect::<Vec<_>>(),
    })
    .to_string()
}

fn transition(
    c: &CompositeAlarm,
    account: &str,
    region: &str,
    old_state: &str,
    actions: Vec<String>,
    triggering: &[ChildState],
) -> Transition {
    Transition {
        account: account.to_owned(),
        region: region.to_owned(),
        alarm_name: c.config.name.clone(),
        alarm_arn: c.arn.clone(),
        kind: AlarmKind::Composite,
        old_state: old_state.to_owned(),
        new_state: c.state_value.clone(),
        at_ms: c.state_updated_ms,
        actions,
        subject: subject(&c.state_value, &c.config.name, region),
        message: notification(c, account, region, old_state, triggering),
    }
}

/// The catalog changes and transitions of one step.
#[derive(Debug, Default)]
pub struct Changes {
    /// Catalog changes.
    pub ops: Vec<CatalogOp>,
    /// Transitions whose actions run (empty `actions` when none run).
    pub transitions: Vec<Transition>,
    /// Alarms whose StateValue changed, for further cascades.
    pub changed: Vec<(String, ChildState)>,
}

impl Composites {
    /// Composite alarms stored in `catalog`.
    pub fn new(catalog: Arc<dyn Catalog>) -> Self {
        Self { catalog }
    }

    /// The composite `name`, if it exists.
    pub fn get(
        &self,
        account: &str,
        region: &str,
        name: &str,
    ) -> Result<Option<CompositeAlarm>, AlarmError> {
        self.catalog
            .get(TABLE, &key(account, region, name))
            .map_err(storage)?
            .map(|b| decode(&b))
            .transpose()
    }

    /// Every composite of the account and region whose name starts with
    /// `prefix`, by name.
    pub fn list(
        &self,
        account: &str,
        region: &str,
        prefix: &str,
    ) -> Result<Vec<CompositeAlarm>, AlarmError> {
        self.catalog
            .list(TABLE, &key(account, region, prefix))
            .map_err(storage)?
            .iter()
            .map(|(_, v)| decode(v))
            .collect()
    }

    fn all(
        &self,
        account: &str,
        region: &str,
    ) -> Result<BTreeMap<String, CompositeAlarm>, AlarmError> {
        Ok(self
            .list(account, region, "")?
            .into_iter()
            .map(|c| (c.config.name.clone(), c))
            .collect())
    }

    /// Every (account, region) that has composites.
    pub fn scopes(&self) -> Result<Vec<(String, String)>, AlarmError> {
        let mut out = BTreeSet::new();
        for (k, _) in self.catalog.list(TABLE, "").map_err(storage)? {
            let mut parts = k.splitn(3, '/');
            if let (Some(a), Some(r)) = (parts.next(), parts.next()) {
                out.insert((a.to_owned(), r.to_owned()));
            }
        }
        Ok(out.into_iter().collect())
    }

    fn put_op(account: &str, region: &str, c: &CompositeAlarm) -> CatalogOp {
        CatalogOp::put(
            TABLE,
            key(account, region, &c.config.name),
            serde_json::to_vec(c).unwrap_or_default(),
        )
    }

    fn history_item(
        c: &CompositeAlarm,
        at_ms: i64,
        kind: &str,
        summary: String,
        data: String,
    ) -> HistoryItem {
        HistoryItem {
            v: 1,
            alarm_name: c.config.name.clone(),
            alarm_type: AlarmKind::Composite.as_str().to_owned(),
            timestamp_ms: at_ms,
            item_type: kind.to_owned(),
            summary,
            data,
        }
    }

    /// The composites whose rule names `name`, by name.
    pub fn parents_of(
        &self,
        account: &str,
        region: &str,
        name: &str,
    ) -> Result<Vec<CompositeAlarm>, AlarmError> {
        Ok(self
            .list(account, region, "")?
            .into_iter()
            .filter(|c| c.config.children().iter().any(|k| k == name))
            .collect())
    }

    /// PutCompositeAlarm: the changes that create or replace the composite,
    /// its history items, its immediate evaluation (§8.3), the cascade to
    /// its parents, and whether it was created.
    pub fn put_changes(
        &self,
        scope: &Scope<'_>,
        alarms: &Alarms,
        config: CompositeConfig,
    ) -> Result<(Changes, bool), AlarmError> {
        let (account, region) = (scope.account, scope.region);
        let now = scope.now.millis();
        if alarms.get(account, region, &config.name)?.is_some() {
            return Err(AlarmError::Validation(format!(
                "An alarm named {} already exists as a metric alarm.",
                config.name
            )));
        }
        let composites = self.all(account, region)?;
        let view = View {
            account,
            region,
            alarms,
            composites: &composites,
            overrides: HashMap::new(),
        };
        let children = config.children();
        let missing: Vec<&str> = children
            .iter()
            .filter(|c| **c != config.name && view.child(c).is_none())
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(AlarmError::Validation(format!(
                "Could not save the composite alarm as alarms [{}] in the alarm rule do not exist",
                missing.join(", ")
            )));
        }
        for child in &children {
            let parents = composites
                .values()
                .filter(|c| c.config.name != config.name && c.config.children().contains(child))
                .count();
            if parents >= MAX_PARENTS {
                return Err(AlarmError::Validation(format!(
                    "The alarm {child} is already a child of {MAX_PARENTS} composite alarms."
                )));
            }
        }
        let existing = composites.get(&config.name).cloned();
        let created = existing.is_none();
        let mut changes = Changes::default();
        let mut composite = match &existing {
            None => CompositeAlarm {
                v: 1,
                arn: alarm_arn(account, region, &config.name),
                config: config.clone(),
                configuration_updated_ms: now,
                state_value: "INSUFFICIENT_DATA".to_owned(),
                previous_state: "INSUFFICIENT_DATA".to_owned(),
                state_reason: INITIAL_REASON.to_owned(),
                state_reason_data: None,
                state_updated_ms: now,
                state_transitioned_ms: now,
                suppression: None,
                suppression_updated_ms: now,
            },
            Some(old) => CompositeAlarm {
                config: config.clone(),
                configuration_updated_ms: now,
                ..old.clone()
            },
        };
        // A new or changed suppressor discards running periods (§8.4).
        let same_suppressor = existing.as_ref().is_some_and(|old| {
            old.config.suppressor == config.suppressor
                && old.config.wait_period == config.wait_period
                && old.config.extension_period == config.extension_period
        });
        if !same_suppressor {
            composite.suppression = config.suppressor.as_ref().map(|_| {
                let mut s = Suppressor::new(
                    config.wait_period.unwrap_or(0) * 1000,
                    config.extension_period.unwrap_or(0) * 1000,
                );
                if let Some(sup) = config.suppressor_name().and_then(|n| view.child(n)) {
                    if sup.state == "ALARM" {
                        s.suppressor_changed(true, now);
                    }
                }
                s
            });
            composite.suppression_updated_ms = now;
        }
        let (summary, data) = match &existing {
            None => (
                format!("Alarm \"{}\" created", config.name),
                history_data(
                    json!({"version": "1.0", "type": "Create", "createdAlarm": history_json(&composite)}),
                    "createdAlarm",
                ),
            ),
            Some(old) => (
                format!("Alarm \"{}\" updated", config.name),
                history_data(
                    json!({"version": "1.0", "type": "Update", "updatedAlarm": history_json(&composite), "originalUpdatedFields": history_json(old)}),
                    "updatedAlarm",
                ),
            ),
        };
        changes.ops.push(Alarms::history_change(
            scope,
            0,
            &Self::history_item(&composite, now, "ConfigurationUpdate", summary, data),
        ));
        // Evaluated at once: the rule's value decides (§8.3).
        let mut composites = composites;
        composites.insert(config.name.clone(), composite.clone());
        let view = View {
            account,
            region,
            alarms,
            composites: &composites,
            overrides: HashMap::new(),
        };
        let (next, step) = self.evaluate(&view, &composite, now, None)?;
        composite = next;
        changes.ops.push(Self::put_op(account, region, &composite));
        let mut n = 1;
        if let Some((item, tr, child)) = step {
            changes.ops.push(Alarms::history_change(scope, n, &item));
            n += 1;
            changes.transitions.push(tr);
            changes.changed.push((config.name.clone(), child));
        }
        if !changes.changed.is_empty() {
            let more = self.cascade_from(scope, alarms, &composites, changes.changed.clone(), n)?;
            changes.ops.extend(more.ops);
            changes.transitions.extend(more.transitions);
            changes.changed.extend(more.changed);
        }
        Ok((changes, created))
    }

    /// Evaluates `c` against `view` at `now`: the record after, and when its
    /// StateValue changes, the history item, the transition and its new child
    /// state. `trigger` is the child whose change caused the evaluation.
    #[allow(clippy::type_complexity)]
    fn evaluate(
        &self,
        view: &View<'_>,
        c: &CompositeAlarm,
        now: i64,
        trigger: Option<&str>,
    ) -> Result<
        (
            CompositeAlarm,
            Option<(HistoryItem, Transition, ChildState)>,
        ),
        AlarmError,
    > {
        let Some(rule) = c.config.parsed_rule() else {
            return Ok((c.clone(), None));
        };
        let holds = rule.holds(&|reference: &str| {
            view.child(child_name(reference))
                .and_then(|s| State::parse(&s.state))
        });
        let state = if holds { "ALARM" } else { "OK" };
        if state == c.state_value {
            return Ok((c.clone(), None));
        }
        // The child named as the reason: the one that changed, else the
        // child whose state changed last.
        let children = c.config.children();
        let triggering: Vec<ChildState> = match trigger {
            Some(t) => view.child(t).into_iter().collect(),
            None => children
                .iter()
                .filter_map(|n| view.child(n))
                .max_by_key(|s| s.at_ms)
                .into_iter()
                .collect(),
        };
        let reason = match triggering.first() {
            Some(t) => format!(
                "{} transitioned to {} at {}",
                t.arn,
                t.state,
                reason_time(t.at_ms)
            ),
            None => format!(
                "The alarm rule {} evaluated to {}",
                c.config.rule,
                holds.to_string().to_uppercase()
            ),
        };
        let reason_data = json!({
            "triggeringAlarms": triggering
                .iter()
                .map(|t| json!({"arn": t.arn, "state": {"value": t.state, "timestamp": alarm_json_date(t.at_ms)}}))
                .collect::<Vec<_>>()
        })
        .to_string();
        let old_state = c.state_value.clone();
        let mut next = CompositeAlarm {
            previous_state: old_state.clone(),
            state_value: state.to_owned(),
            state_reason: reason.chars().take(1023).collect(),
            state_reason_data: Some(reason_data.clone()),
            state_updated_ms: now,
            state_transitioned_ms: now,
            ..c.clone()
        };
        let actions = self.actions_on_transition(view, &mut next, now);
        let item = Self::history_item(
            &next,
            now,
            "StateUpdate",
            format!("Alarm updated from {old_state} to {state}"),
            history_data(
                json!({
                    "version": "1.0",
                    "oldState": {"stateValue": old_state, "stateReason": c.state_reason},
                    "newState": {
                        "stateValue": state,
                        "stateReason": next.state_reason,
                        "stateReasonData": serde_json::from_str::<serde_json::Value>(&reason_data).unwrap_or_default(),
                    },
                }),
                "newState",
            ),
        );
        let tr = transition(
            &next,
            view.account,
            view.region,
            &old_state,
            actions,
            &triggering,
        );
        let child = ChildState {
            arn: next.arn.clone(),
            state: state.to_owned(),
            at_ms: now,
        };
        Ok((next, Some((item, tr, child))))
    }

    /// The actions a transition of `c` (already in its new state) runs now,
    /// updating its suppression (§8.4).
    fn actions_on_transition(
        &self,
        view: &View<'_>,
        c: &mut CompositeAlarm,
        now: i64,
    ) -> Vec<String> {
        let run = match c.suppression.as_mut() {
            None => true,
            Some(s) => {
                let in_alarm = c
                    .config
                    .suppressor_name()
                    .and_then(|n| view.child(n))
                    .is_some_and(|s| s.state == "ALARM");
                let run = s.composite_transitioned(in_alarm, now);
                c.suppression_updated_ms = now;
                run
            }
        };
        if !run {
            return Vec::new();
        }
        actions_for(
            &c.state_value,
            c.config.actions_enabled,
            &c.config.ok_actions,
            &c.config.alarm_actions,
            &c.config.insufficient_data_actions,
        )
    }

    /// Re-evaluates every composite that names one of `changed` (alarms whose
    /// StateValue is changing in the caller's batch, with their new states),
    /// transitively, and updates the suppression of composites whose
    /// suppressor is among them. History keys start at `n`.
    pub fn cascade(
        &self,
        scope: &Scope<'_>,
        alarms: &Alarms,
        changed: Vec<(String, ChildState)>,
        n: usize,
    ) -> Result<Changes, AlarmError> {
        let composites = self.all(scope.account, scope.region)?;
        if composites.is_empty() {
            return Ok(Changes::default());
        }
        self.cascade_from(scope, alarms, &composites, changed, n)
    }

    fn cascade_from(
        &self,
        scope: &Scope<'_>,
        alarms: &Alarms,
        composites: &BTreeMap<String, CompositeAlarm>,
        changed: Vec<(String, ChildState)>,
        mut n: usize,
    ) -> Result<Changes, AlarmError> {
        let now = scope.now.millis();
        let mut out = Changes::default();
        let mut current: BTreeMap<String, CompositeAlarm> = composites.clone();
        let mut view = View {
            account: scope.account,
            region: scope.region,
            alarms,
            composites,
            overrides: changed.iter().cloned().collect(),
        };
        let cyclic = cyclic(composites);
        let mut dirty: BTreeSet<String> = BTreeSet::new();
        let mut pending: Vec<(String, ChildState)> = changed;
        // Suppressors first: a composite's suppression follows its suppressor.
        let mut guard = 0;
        while let Some((name, new_state)) = pending.pop() {
            guard += 1;
            if guard > 10 * (composites.len() + 1) {
                break;
            }
            for c in current.values_mut() {
                if c.config.suppressor_name() == Some(name.as_str()) {
                    if let Some(s) = c.suppression.as_mut() {
                        s.suppressor_changed(new_state.state == "ALARM", now);
                        c.suppression_updated_ms = now;
                        dirty.insert(c.config.name.clone());
                    }
                }
            }
            let parents: Vec<String> = current
                .values()
                .filter(|c| !cyclic.contains(&c.config.name))
                .filter(|c| c.config.children().contains(&name))
                .map(|c| c.config.name.clone())
                .collect();
            for parent in parents {
                let c = current[&parent].clone();
                view.composites = composites;
                let (next, step) = self.evaluate(&view, &c, now, Some(&name))?;
                if next != c {
                    dirty.insert(parent.clone());
                }
                current.insert(parent.clone(), next);
                if let Some((item, tr, child)) = step {
                    out.ops.push(Alarms::history_change(scope, n, &item));
                    n += 1;
                    out.transitions.push(tr);
                    view.overrides.insert(parent.clone(), child.clone());
                    out.changed.push((parent.clone(), child.clone()));
                    pending.push((parent, child));
                }
            }
        }
        for name in dirty {
            out.ops
                .push(Self::put_op(scope.account, scope.region, &current[&name]));
        }
        Ok(out)
    }

    /// Wait and extension periods that expired by `now`, in every account and
    /// region: the records to write and the transitions whose held actions
    /// run (§8.4).
    pub fn tick(&self, now: i64) -> Result<Vec<(String, String, Changes)>, AlarmError> {
        let mut out = Vec::new();
        for (account, region) in self.scopes()? {
            let mut changes = Changes::default();
            for mut c in self.list(&account, &region, "")? {
                let Some(s) = c.suppression.as_mut() else {
                    continue;
                };
                let expiring = matches!(
                    s.state,
                    Suppression::WaitPeriod(until) | Suppression::ExtensionPeriod(until) if now >= until
                );
                if !expiring {
                    continue;
                }
                let run = s.tick(now);
                c.suppression_updated_ms = now;
                changes.ops.push(Self::put_op(&account, &region, &c));
                if run {
                    let actions = actions_for(
                        &c.state_value,
                        c.config.actions_enabled,
                        &c.config.ok_actions,
                        &c.config.alarm_actions,
                        &c.config.insufficient_data_actions,
                    );
                    let previous = c.previous_state.clone();
                    changes.transitions.push(transition(
                        &c,
                        &account,
                        &region,
                        &previous,
                        actions,
                        &[],
                    ));
                }
            }
            if !changes.ops.is_empty() {
                out.push((account, region, changes));
            }
        }
        Ok(out)
    }

    /// SetAlarmState on a composite (§7.9): the record, a StateUpdate item on
    /// a change, and the cascade; `None` when no composite has that name.
    pub fn set_state_changes(
        &self,
        scope: &Scope<'_>,
        alarms: &Alarms,
        name: &str,
        state: &str,
        reason: &str,
        reason_data: Option<&str>,
    ) -> Result<Option<Changes>, AlarmError> {
        let composites = self.all(scope.account, scope.region)?;
        let Some(old) = composites.get(name).cloned() else {
            return Ok(None);
        };
        let now = scope.now.millis();
        let transition_happens = old.state_value != state;
        let mut next = CompositeAlarm {
            state_value: state.to_owned(),
            state_reason: reason.to_owned(),
            state_reason_data: reason_data.map(str::to_owned),
            state_updated_ms: now,
            ..old.clone()
        };
        let mut changes = Changes::default();
        if transition_happens {
            next.previous_state = old.state_value.clone();
            next.state_transitioned_ms = now;
            let view = View {
                account: scope.account,
                region: scope.region,
                alarms,
                composites: &composites,
                overrides: HashMap::new(),
            };
            let actions = self.actions_on_transition(&view, &mut next, now);
            let mut new_state = json!({"stateValue": state, "stateReason": reason});
            if let Some(d) =
                reason_data.and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
            {
                new_state["stateReasonData"] = d;
            }
            changes.ops.push(Alarms::history_change(
                scope,
                0,
                &Self::history_item(
                    &next,
                    now,
                    "StateUpdate",
                    format!("Alarm updated from {} to {state}", old.state_value),
                    history_data(
                        json!({"version": "1.0", "oldState": {"stateValue": old.state_value, "stateReason": old.state_reason}, "newState": new_state}),
                        "newState",
                    ),
                ),
            ));
            changes.transitions.push(transition(
                &next,
                scope.account,
                scope.region,
                &old.state_value,
                actions,
                &[],
            ));
            let child = ChildState {
                arn: next.arn.clone(),
                state: state.to_owned(),
                at_ms: now,
            };
            changes.changed.push((name.to_owned(), child.clone()));
            let more = self.cascade_from(
                scope,
                alarms,
                &composites,
                vec![(name.to_owned(), child)],
                1,
            )?;
            changes.ops.extend(more.ops);
            changes.transitions.extend(more.transitions);
            changes.changed.extend(more.changed);
        }
        changes
            .ops
            .push(Self::put_op(scope.account, scope.region, &next));
        Ok(Some(changes))
    }

    /// Enable/DisableAlarmActions on composites: the changed records with
    /// their ConfigurationUpdate items (history keys from `n`).
    pub fn set_actions_changes(
        &self,
        scope: &Scope<'_>,
        names: &[String],
        enabled: bool,
        mut n: usize,
    ) -> Result<Vec<CatalogOp>, AlarmError> {
        let mut ops = Vec::new();
        for name in names {
            let Some(old) = self.get(scope.account, scope.region, name)? else {
                continue;
            };
            if old.config.actions_enabled == enabled {
                continue;
            }
            let mut c = old.clone();
            c.config.actions_enabled = enabled;
            c.configuration_updated_ms = scope.now.millis();
            ops.push(Self::put_op(scope.account, scope.region, &c));
            ops.push(Alarms::history_change(
                scope,
                n,
                &Self::history_item(
                    &c,
                    scope.now.millis(),
                    "ConfigurationUpdate",
                    format!("Alarm \"{name}\" updated"),
                    history_data(
                        json!({"version": "1.0", "type": "Update", "updatedAlarm": history_json(&c), "originalUpdatedFields": {"actionsEnabled": old.config.actions_enabled}}),
                        "updatedAlarm",
                    ),
                ),
            ));
            n += 1;
        }
        Ok(ops)
    }

    /// DeleteAlarms for composites: the deletions with their history items
    /// (keys from `n`) and the names deleted.
    pub fn delete_changes(
        &self,
        scope: &Scope<'_>,
        names: &[String],
        n: usize,
    ) -> Result<(Vec<CatalogOp>, Vec<String>), AlarmError> {
        let mut ops = Vec::new();
        let mut deleted: Vec<String> = Vec::new();
        for name in names {
            if deleted.contains(name) {
                continue;
            }
            let Some(c) = self.get(scope.account, scope.region, name)? else {
                continue;
            };
            ops.push(CatalogOp::delete(
                TABLE,
                key(scope.account, scope.region, name),
            ));
            ops.push(Alarms::history_change(
                scope,
                n + deleted.len(),
                &Self::history_item(
                    &c,
                    scope.now.millis(),
                    "ConfigurationUpdate",
                    format!("Alarm \"{name}\" deleted"),
                    history_data(
                        json!({"version": "1.0", "type": "Delete", "deletedAlarm": history_json(&c)}),
                        "deletedAlarm",
                    ),
                ),
            ));
            deleted.push(name.clone());
        }
        Ok((ops, deleted))
    }
}

/// The composites on a reference cycle (through composites only).
fn cyclic(composites: &BTreeMap<String, CompositeAlarm>) -> BTreeSet<String> {
    let edges: HashMap<&str, Vec<String>> = composites
        .iter()
        .map(|(name, c)| {
            (
                name.as_str(),
                c.config
                    .children()
                    .into_iter()
                    .filter(|k| composites.contains_key(k))
                    .collect(),
            )
        })
        .collect();
    let mut out = BTreeSet::new();
    for start in composites.keys() {
        // Depth-first search for a path back to `start`.
        let mut stack: Vec<&str> = edges[start.as_str()].iter().map(String::as_str).collect();
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        while let Some(node) = stack.pop() {
            if node == start {
                out.insert(start.clone());
                break;
            }
            if seen.insert(node) {
                stack.extend(edges.get(node).into_iter().flatten().map(String::as_str));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alarms::{validate_put as validate_metric, PutMetricAlarmInput, StateWrite};
    use trailwatch_storage::MemoryCatalog;

    const A: &str = "111122223333";
    const R: &str = "us-east-1";

    fn scope(now_ms: i64, id: &'static str) -> Scope<'static> {
        Scope {
            account: A,
            region: R,
            request_id: id,
            now: Timestamp::from_millis(now_ms),
        }
    }

    struct Fixture {
        catalog: Arc<dyn Catalog>,
        alarms: Alarms,
        composites: Composites,
    }

    impl Fixture {
        fn new() -> Self {
            let catalog: Arc<dyn Catalog> = Arc::new(MemoryCatalog::default());
            Fixture {
                alarms: Alarms::new(catalog.clone()),
                composites: Composites::new(catalog.clone()),
                catalog,
            }
        }

        /// A metric alarm in `state`.
        fn metric(&self, name: &str, state: &str, at: i64) {
            let config = validate_metric(&PutMetricAlarmInput {
                alarm_name: Some(name.into()),
                metric_name: Some("M".into()),
                namespace: Some("N".into()),
                statistic: Some("Sum".into()),
                period: Some(60),
                evaluation_periods: Some(1),
                threshold: Some(1.0),
                comparison_operator: Some("GreaterThanThreshold".into()),
                ..Default::default()
            })
            .unwrap();
            let (ops, _, alarm) = self.alarms.put_changes(&scope(at, "m"), config).unwrap();
            self.catalog.commit(&ops).unwrap();
            self.set_metric(&alarm.config.name, state, at);
        }

        /// Moves a metric alarm to `state` and cascades, as the engine does.
        fn set_metric(&self, name: &str, state: &str, at: i64) -> Changes {
            let old = self.alarms.get(A, R, name).unwrap().unwrap();
            let write = StateWrite {
                state: state.into(),
                reason: "test".into(),
                reason_data: None,
                evaluation_state: None,
            };
            let (written, mut ops) = self
                .alarms
                .state_changes(&scope(at, "s"), &old, &write, at, 0)
                .unwrap();
            let changed = vec![(
                name.to_owned(),
                ChildState {
                    arn: written.arn.clone(),
                    state: state.into(),
                    at_ms: at,
                },
            )];
            let cascade = self
                .composites
                .cascade(&scope(at, "c"), &self.alarms, changed, 1)
                .unwrap();
            ops.extend(cascade.ops.clone());
            self.catalog.commit(&ops).unwrap();
            cascade
        }

        fn put(&self, name: &str, rule: &str, at: i64) -> Result<Changes, AlarmError> {
            self.put_with(
                CompositeInput {
                    alarm_name: Some(name.into()),
                    alarm_rule: Some(rule.into()),
                    alarm_actions: vec!["arn:aws:sns:us-east-1:111122223333:t".into()],
                    ok_actions: vec!["arn:aws:sns:us-east-1:111122223333:ok".into()],
                    ..Default::default()
                },
                at,
            )
        }

        fn put_with(&self, input: CompositeInput, at: i64) -> Result<Changes, AlarmError> {
            let config = validate_put(&input)?;
            let (changes, _) =
                self.composites
                    .put_changes(&scope(at, "p"), &self.alarms, config)?;
            self.catalog.commit(&changes.ops).unwrap();
            Ok(changes)
        }

        fn state(&self, name: &str) -> String {
            self.composites
                .get(A, R, name)
                .unwrap()
                .unwrap()
                .state_value
        }
    }

    #[test]
    fn validation_of_put() {
        let base = || CompositeInput {
            alarm_name: Some("c".into()),
            alarm_rule: Some("ALARM(a)".into()),
            ..Default::default()
        };
        assert!(validate_put(&base()).is_ok());
        let err = |input: CompositeInput| validate_put(&input).unwrap_err();
        assert!(matches!(
            err(CompositeInput {
                alarm_rule: None,
                ..base()
            }),
            AlarmError::MissingParameter(_)
        ));
        assert!(matches!(
            err(CompositeInput {
                alarm_rule: Some("ALARM(a) AND".into()),
                ..base()
            }),
            AlarmError::Validation(_)
        ));
        assert!(matches!(
            err(CompositeInput {
                alarm_actions: vec!["sns-topic".into()],
                ..base()
            }),
            AlarmError::InvalidParameterValue(_)
        ));
        assert!(matches!(
            err(CompositeInput {
                actions_suppressor: Some("s".into()),
                wait_period: Some(60),
                ..base()
            }),
            AlarmError::Validation(m) if m.contains("are required when ActionsSuppressor")
        ));
        assert!(matches!(
            err(CompositeInput {
                wait_period: Some(60),
                extension_period: Some(60),
                ..base()
            }),
            AlarmError::Validation(_)
        ));
        let f = Fixture::new();
        f.metric("a", "OK", 1_000);
        assert_eq!(
            f.put("c", "ALARM(a) OR ALARM(b) OR OK(\"zz\")", 2_000)
                .unwrap_err(),
            AlarmError::Validation(
                "Could not save the composite alarm as alarms [b, zz] in the alarm rule do not exist"
                    .into()
            )
        );
        // Names are unique across both kinds.
        assert!(matches!(
            f.put("a", "TRUE", 2_000).unwrap_err(),
            AlarmError::Validation(m) if m.contains("already exists as a metric alarm")
        ));
    }

    #[test]
    fn evaluated_at_once_then_following_children_through_nested_composites() {
        let f = Fixture::new();
        f.metric("cpu", "OK", 1_000);
        f.metric("disk", "OK", 1_000);
        f.metric("deploy", "ALARM", 1_000);
        // Created INSUFFICIENT_DATA, evaluated at once: false -> OK, with
        // OK actions.
        let created = f.put("host", "ALARM(cpu) OR ALARM(disk)", 2_000).unwrap();
        assert_eq!(f.state("host"), "OK");
        assert_eq!(created.transitions.len(), 1);
        assert_eq!(created.transitions[0].old_state, "INSUFFICIENT_DATA");
        assert_eq!(
            created.transitions[0].actions,
            vec!["arn:aws:sns:us-east-1:111122223333:ok".to_owned()]
        );
        f.put("page", "ALARM(host) AND NOT ALARM(\"deploy\")", 3_000)
            .unwrap();
        assert_eq!(f.state("page"), "OK");

        // cpu -> ALARM: host -> ALARM; page stays OK (deploy in ALARM).
        let c = f.set_metric("cpu", "ALARM", 10_000);
        assert_eq!(f.state("host"), "ALARM");
        assert_eq!(f.state("page"), "OK");
        let host = f.composites.get(A, R, "host").unwrap().unwrap();
        assert_eq!(
            host.state_reason,
            "arn:aws:cloudwatch:us-east-1:111122223333:alarm:cpu transitioned to ALARM at Thursday 1 January, 1970 00:00:10 UTC"
        );
        let data: serde_json::Value =
            serde_json::from_str(host.state_reason_data.as_deref().unwrap()).unwrap();
        assert_eq!(data["triggeringAlarms"][0]["state"]["value"], "ALARM");
        assert_eq!(c.transitions.len(), 1);
        let message: serde_json::Value = serde_json::from_str(&c.transitions[0].message).unwrap();
        assert_eq!(message["AlarmRule"], "ALARM(cpu) OR ALARM(disk)");
        assert_eq!(message["OldStateValue"], "OK");
        assert_eq!(message["TriggeringChildren"][0]["State"]["Value"], "ALARM");

        // deploy ends: page (a composite of a composite) follows.
        let c = f.set_metric("deploy", "OK", 20_000);
        assert_eq!(f.state("page"), "ALARM");
        assert_eq!(c.transitions.len(), 1);
        assert_eq!(c.transitions[0].alarm_name, "page");

        // cpu recovers: host and then page go back to OK in one cascade.
        let c = f.set_metric("cpu", "OK", 30_000);
        let names: Vec<&str> = c
            .transitions
            .iter()
            .map(|t| t.alarm_name.as_str())
            .collect();
        assert_eq!(names, vec!["host", "page"]);
        assert_eq!(
            (f.state("host"), f.state("page")),
            ("OK".into(), "OK".into())
        );
    }

    #[test]
    fn cycles_keep_their_states() {
        let f = Fixture::new();
        f.metric("m", "OK", 1_000);
        f.put("x", "ALARM(m)", 2_000).unwrap();
        f.put("y", "ALARM(x)", 2_000).unwrap();
        // x now also names y: x and y form a cycle.
        f.put("x", "ALARM(m) OR ALARM(y)", 3_000).unwrap();
        assert_eq!(cyclic(&f.composites.all(A, R).unwrap()).len(), 2);
        let c = f.set_metric("m", "ALARM", 4_000);
        assert!(c.transitions.is_empty());
        assert_eq!((f.state("x"), f.state("y")), ("OK".into(), "OK".into()));
    }

    #[test]
    fn suppression_wait_extension_and_held_actions() {
        let f = Fixture::new();
        f.metric("cpu", "OK", 0);
        f.metric("maint", "OK", 0);
        f.put_with(
            CompositeInput {
                alarm_name: Some("c".into()),
                alarm_rule: Some("ALARM(cpu)".into()),
                alarm_actions: vec!["arn:aws:sns:us-east-1:111122223333:t".into()],
                actions_suppressor: Some("maint".into()),
                wait_period: Some(60),
                extension_period: Some(120),
                ..Default::default()
            },
            1_000,
        )
        .unwrap();
        // A transition while the suppressor is quiet waits 60 s.
        let c = f.set_metric("cpu", "ALARM", 10_000);
        assert!(c.transitions[0].actions.is_empty());
        let rec = f.composites.get(A, R, "c").unwrap().unwrap();
        assert_eq!(rec.suppressed_by(), "WaitPeriod");
        assert!(f.composites.tick(69_999).unwrap().is_empty());
        let expired = f.composites.tick(70_000).unwrap();
        let (_, _, changes) = &expired[0];
        assert_eq!(
            changes.transitions[0].actions,
            vec!["arn:aws:sns:us-east-1:111122223333:t".to_owned()]
        );
        f.catalog.commit(&changes.ops).unwrap();
        assert_eq!(
            f.composites
                .get(A, R, "c")
                .unwrap()
                .unwrap()
                .suppressed_by(),
            "None"
        );

        // The suppressor enters ALARM: the next transition is suppressed for good.
        f.set_metric("maint", "ALARM", 100_000);
        assert_eq!(
            f.composites
                .get(A, R, "c")
                .unwrap()
                .unwrap()
                .suppressed_by(),
            "Alarm"
        );
        let c = f.set_metric("cpu", "OK", 110_000);
        assert!(c.transitions[0].actions.is_empty());
        // It leaves ALARM: an extension of 120 s, then nothing is owed.
        f.set_metric("maint", "OK", 200_000);
        let rec = f.composites.get(A, R, "c").unwrap().unwrap();
        assert_eq!(rec.suppressed_by(), "ExtensionPeriod");
        let expired = f.composites.tick(320_000).unwrap();
        assert!(expired[0].2.transitions.is_empty());
    }

    #[test]
    fn reason_time_reads_like_aws() {
        // 2022-10-21T14:12:54Z was a Friday.
        assert_eq!(
            reason_time(1_666_361_574_123),
            "Friday 21 October, 2022 14:12:54 UTC"
        );
    }
}
