//! The alarm evaluation loop: wakes at each instant of each cadence
//! (`trailwatch_core::engine`), evaluates the alarms due, and commits their
//! new states, history items, action messages and the cadence's watermark in
//! one catalog batch under the alarm write lock. Messages leave after the
//! commit.
//!
//! The heavy part (reading every alarm's buckets) runs on a blocking thread
//! without the lock; under the lock each changed alarm is read again, and an
//! alarm that an API call changed meanwhile is evaluated afresh, so no
//! concurrent write is lost.

use std::sync::Arc;
use std::time::Duration;

use trailwatch_core::actions::Transition;
use trailwatch_core::alarms::{MetricAlarm, Scope, StateWrite};
use trailwatch_core::composites::ChildState;
use trailwatch_core::engine::{
    cadence_ms, due_instants, evaluate, floor, read, watermark, watermark_change, CADENCES,
};
use trailwatch_types::Timestamp;

use crate::app::App;
use crate::services::actions::action_changes;
use crate::services::sns::spawn_deliveries;

/// Runs evaluations until `stop` fires.
pub async fn run(app: Arc<App>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        for cadence in CADENCES {
            if let Err(err) = run_due(&app, cadence).await {
                // The watermark did not move: the instant is evaluated again.
                tracing::error!(error = %err, cadence_ms = cadence, "alarm evaluation failed");
            }
        }
        if let Err(err) = expire_suppressions(&app).await {
            tracing::error!(error = %err, "composite suppression periods failed");
        }
        let now = app.clock.now().millis();
        let next = CADENCES
            .iter()
            .map(|c| floor(now, *c) + c)
            .min()
            .unwrap_or(now + 1000);
        let wait = Duration::from_millis((next - now).clamp(1, 10_000) as u64);
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Evaluates every instant of `cadence` due now, oldest first.
pub async fn run_due(app: &Arc<App>, cadence: i64) -> Result<usize, String> {
    let catalog = app.audit.catalog();
    let mark = watermark(catalog.as_ref(), cadence)?;
    let (instants, skipped) = due_instants(mark, app.clock.now().millis(), cadence);
    if skipped > 0 {
        tracing::warn!(
            cadence_ms = cadence,
            skipped,
            "alarm evaluation instants skipped after a long stop"
        );
    }
    let mut transitions = 0;
    for t in instants {
        transitions += tick(app, cadence, t).await?;
    }
    Ok(transitions)
}

type Candidate = (String, String, MetricAlarm, StateWrite);

/// When an evaluation of instant `t` counts as run: now, for a live tick;
/// the instant itself when catching up.
fn query_ms(now: i64, t: i64, cadence: i64) -> i64 {
    if now - t < cadence {
        now
    } else {
        t
    }
}

/// Evaluates the alarms of `cadence` at instant `t` and commits the result
/// with the watermark; returns the number of transitions.
pub async fn tick(app: &Arc<App>, cadence: i64, t: i64) -> Result<usize, String> {
    let started = std::time::Instant::now();
    let reader = app.clone();
    let (candidates, evaluated): (Vec<Candidate>, usize) = tokio::task::spawn_blocking(move || {
        let app = reader;
        let now = app.clock.now();
        let at = query_ms(now.millis(), t, cadence);
        let all = app.alarm_snapshot()?;
        let due: Vec<_> = all
            .iter()
            .filter(|(_, _, a)| cadence_ms(&a.config) == cadence && a.configuration_updated_ms <= t)
            .collect();
        let evaluated = due.len();
        let candidates = due
            .into_iter()
            .filter_map(|(account, region, alarm)| {
                let readings = read(&app.metrics, &app.detectors, account, region, alarm, t, now);
                evaluate(alarm, readings, t, at)
                    .map(|w| (account.clone(), region.clone(), alarm.clone(), w))
            })
            .collect();
        Ok::<_, String>((candidates, evaluated))
    })
    .await
    .map_err(|e| e.to_string())??;

    let mut hold = app.lock_alarms().await;
    let now = app.clock.now();
    let at = query_ms(now.millis(), t, cadence);
    let request_id = format!("evaluation-{cadence}-{t}");
    let mut ops = Vec::new();
    let mut transitions = Vec::new();
    let mut wrote = false;
    for (n, (account, region, snapshot, write)) in candidates.into_iter().enumerate() {
        let name = snapshot.config.name.clone();
        let Some(current) = app
            .alarms
            .get(&account, &region, &name)
            .map_err(|e| e.to_string())?
        else {
            continue; // deleted meanwhile
        };
        let write = if current == snapshot {
            write
        } else {
            // Changed by a call meanwhile: what it is now decides.
            if current.configuration_updated_ms > t {
                continue;
            }
            let readings = read(
                &app.metrics,
                &app.detectors,
                &account,
                &region,
                &current,
                t,
                now,
            );
            match evaluate(&current, readings, t, at) {
                Some(w) => w,
                None => continue,
            }
        };
        let scope = Scope {
            account: &account,
            region: &region,
            request_id: &request_id,
            now: Timestamp::from_millis(at),
        };
        let (written, changes) = app
            .alarms
            .state_changes(&scope, &current, &write, at, n)
            .map_err(|e| e.to_string())?;
        ops.extend(changes);
        wrote = true;
        if written.state_value != current.state_value {
            transitions.push(Transition::of_metric_alarm(
                &written,
                &account,
                &region,
                &current.state_value,
            ));
        }
    }
    // Composites naming the alarms that changed follow them (§8.3), in the
    // same batch.
    let mut by_scope: std::collections::BTreeMap<(String, String), Vec<(String, ChildState)>> =
        Default::default();
    for tr in &transitions {
        by_scope
            .entry((tr.account.clone(), tr.region.clone()))
            .or_default()
            .push((
                tr.alarm_name.clone(),
                ChildState {
                    arn: tr.alarm_arn.clone(),
                    state: tr.new_state.clone(),
                    at_ms: tr.at_ms,
                },
            ));
    }
    // Their history items are keyed apart from the metric alarms' ones.
    let cascade_id = format!("{request_id}-composites");
    let mut n = 0;
    for ((account, region), changed) in by_scope {
        let scope = Scope {
            account: &account,
            region: &region,
            request_id: &cascade_id,
            now: Timestamp::from_millis(at),
        };
        let cascade = app
            .composites
            .cascade(&scope, &app.alarms, changed, n)
            .map_err(|e| e.to_string())?;
        n += cascade.ops.len();
        ops.extend(cascade.ops);
        transitions.extend(cascade.transitions);
    }
    let (action_ops, deliveries) = action_changes(
        app,
        &transitions,
        &format!("{request_id}-actions"),
        Timestamp::from_millis(at),
    );
    ops.extend(action_ops);
    ops.push(watermark_change(cadence, t));
    let catalog = app.audit.catalog();
    tokio::task::spawn_blocking(move || catalog.commit(&ops))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    // Only written alarms make the next instant list them again.
    hold.changed = wrote;
    drop(hold);
    tracing::debug!(
        cadence_ms = cadence,
        instant = t,
        evaluated,
        transitions = transitions.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "alarm evaluation tick"
    );
    if !transitions.is_empty() {
        tracing::info!(
            cadence_ms = cadence,
            instant = t,
            transitions = transitions.len(),
            "alarm states changed"
        );
    }
    spawn_deliveries(&app.sns, deliveries);
    Ok(transitions.len())
}

/// Ends the composite wait and extension periods that expired (§8.4),
/// running the held actions; returns how many composites changed.
pub async fn expire_suppressions(app: &Arc<App>) -> Result<usize, String> {
    let hold = app.lock_alarms().await;
    let now = app.clock.now();
    let expired = app
        .composites
        .tick(now.millis())
        .map_err(|e| e.to_string())?;
    let mut ops = Vec::new();
    let mut transitions = Vec::new();
    for (_, _, changes) in expired {
        ops.extend(changes.ops);
        transitions.extend(changes.transitions);
    }
    if ops.is_empty() {
        let mut hold = hold;
        hold.changed = false;
        return Ok(0);
    }
    let written = ops.len();
    let (action_ops, deliveries) = action_changes(
        app,
        &transitions,
        &format!("suppression-{}", now.millis()),
        now,
    );
    ops.extend(action_ops);
    let catalog = app.audit.catalog();
    tokio::task::spawn_blocking(move || catalog.commit(&ops))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    drop(hold);
    spawn_deliveries(&app.sns, deliveries);
    Ok(written)
}
