//! Alarm actions (`spec/cloudwatch.md` §7.6): each committed [`Transition`]
//! runs its action ARNs. An SNS topic ARN of this server is a Publish of the
//! alarm notification (subject and JSON message) to the topic's confirmed
//! subscriptions; anything else fails. Each action leaves an `Action` history
//! item, `Successfully executed action <arn>` or `Failed to execute action
//! <arn>. Reason: <text>`.
//!
//! The history items and the outbox entries of the messages are catalog
//! changes committed with the transition itself; the POSTs start after that
//! commit and survive a restart in the outbox (see `services::sns`).

use serde_json::json;
use trailwatch_core::actions::Transition;
use trailwatch_core::alarms::{Alarms, HistoryItem, Scope};
use trailwatch_core::audit::Change as CatalogOp;
use trailwatch_core::sns::{sns_timestamp, Delivery, Envelope, MessageType, TopicArn};
use trailwatch_types::Timestamp;

use super::sns::{notifications, CERTIFICATE_PATH};
use super::{AfterCommit, Outcome};
use crate::app::App;

/// Publishes `message` to topic `arn`: the deliveries to commit, or why it
/// cannot be published.
fn publish(
    app: &App,
    arn: &str,
    subject: Option<String>,
    message: String,
    now: Timestamp,
) -> Result<Vec<Delivery>, String> {
    let topic = TopicArn::parse(arn, "TopicArn")
        .map_err(|_| "Only SNS topic actions are supported.".to_owned())?;
    if app
        .topics
        .find(&topic)
        .map_err(|e| e.to_string())?
        .is_none()
    {
        return Err(format!("Topic {arn} does not exist."));
    }
    let targets: Vec<_> = app
        .topics
        .all_subscriptions(&topic)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|e| e.subscription.confirmed)
        .collect();
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let signer = app.sns.signer().map_err(|e| e.to_string())?;
    let envelope = Envelope {
        kind: MessageType::Notification,
        message_id: uuid::Uuid::new_v4().to_string(),
        topic_arn: topic.arn(),
        subject,
        message,
        timestamp: sns_timestamp(now),
        token: None,
        subscribe_url: None,
        unsubscribe_url: None,
        signing_cert_url: format!("{}{CERTIFICATE_PATH}", app.sns.endpoint()),
        message_attributes: Vec::new(),
    };
    Ok(notifications(&app.sns, &signer, &envelope, &targets, now))
}

/// Publishes a message of the server's own (a trail's delivery notice) to
/// topic `arn`: its deliveries enter the durable outbox, then leave.
pub(crate) fn publish_internal(
    app: &App,
    arn: &str,
    message: &str,
    now: Timestamp,
) -> Result<(), String> {
    let deliveries = publish(app, arn, None, message.to_owned(), now)?;
    if deliveries.is_empty() {
        return Ok(());
    }
    let ops: Vec<CatalogOp> = deliveries.iter().map(Delivery::enqueue).collect();
    app.topics.commit(&ops).map_err(|e| e.to_string())?;
    super::sns::spawn_deliveries(&app.sns, deliveries);
    Ok(())
}

/// Runs the actions of `transitions`: the catalog changes to commit with
/// them (history items, outbox entries) and the deliveries to start after.
/// `request_id` keys the history items; it must not be used by other items
/// of the same batch.
pub(crate) fn action_changes(
    app: &App,
    transitions: &[Transition],
    request_id: &str,
    now: Timestamp,
) -> (Vec<CatalogOp>, Vec<Delivery>) {
    let mut ops = Vec::new();
    let mut deliveries = Vec::new();
    let mut n = 0;
    for transition in transitions {
        let scope = Scope {
            account: &transition.account,
            region: &transition.region,
            request_id,
            now,
        };
        for arn in &transition.actions {
            let (state, summary) = match publish(
                app,
                arn,
                Some(transition.subject.clone()),
                transition.message.clone(),
                now,
            ) {
                Ok(sent) => {
                    ops.extend(sent.iter().map(Delivery::enqueue));
                    deliveries.extend(sent);
                    ("Succeeded", format!("Successfully executed action {arn}"))
                }
                Err(reason) => {
                    tracing::warn!(alarm = %transition.alarm_name, action = %arn, %reason, "alarm action failed");
                    (
                        "Failed",
                        format!("Failed to execute action {arn}. Reason: {reason}"),
                    )
                }
            };
            let item = HistoryItem {
                v: 1,
                alarm_name: transition.alarm_name.clone(),
                alarm_type: transition.kind.as_str().to_owned(),
                timestamp_ms: now.millis(),
                item_type: "Action".to_owned(),
                summary: summary.chars().take(255).collect(),
                data: json!({
                    "actionState": state,
                    "stateUpdateTimestamp": transition.at_ms,
                    "notificationResource": arn,
                })
                .to_string(),
            };
            ops.push(Alarms::history_change(&scope, n, &item));
            n += 1;
        }
    }
    (ops, deliveries)
}

/// Adds the actions of `transitions` to a call's outcome: their changes
/// commit with the call, their messages leave after it.
pub(crate) fn run_actions(
    app: &App,
    outcome: &mut Outcome,
    transitions: &[Transition],
    request_id: &str,
    now: Timestamp,
) {
    if transitions.is_empty() {
        return;
    }
    let (ops, deliveries) = action_changes(app, transitions, request_id, now);
    outcome.changes.extend(ops);
    if deliveries.is_empty() {
        return;
    }
    let runtime = app.sns.clone();
    let before = outcome.after_commit.take();
    outcome.after_commit = Some(AfterCommit::new(move || {
        if let Some(before) = before {
            before.run();
        }
        super::sns::spawn_deliveries(&runtime, deliveries);
    }));
}
