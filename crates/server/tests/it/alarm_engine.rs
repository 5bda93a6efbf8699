//! The alarm evaluation engine on a paused clock: instants, M out of N over
//! real metric data, state and history, actions, and exactly-once
//! evaluation across a restart.

use std::sync::Arc;

use trailwatch_core::alarms::{validate_put, MetricAlarm, PutMetricAlarmInput, Scope};
use trailwatch_core::engine::{watermark, MINUTE_MS};
use trailwatch_core::identity::{KeyRing, RootCredentials};
use trailwatch_core::metrics::model::{MetricId, Sample, Unit, ValidatedDatum};
use trailwatch_server::evaluator::run_due;
use trailwatch_server::{App, AppConfig};
use trailwatch_types::{ManualClock, Timestamp};

use crate::support::{ACCOUNT, FIXTURE_KEY, FIXTURE_SECRET};

const REGION: &str = "us-east-1";
/// 2024-10-10T12:00:00Z, a whole minute.
const T0: i64 = 1_728_561_600_000;

async fn open(dir: &std::path::Path, clock: Arc<ManualClock>) -> Arc<App> {
    let root = RootCredentials {
        account_id: ACCOUNT.to_owned(),
        access_key_id: FIXTURE_KEY.to_owned(),
        secret_access_key: FIXTURE_SECRET.to_owned(),
    };
    App::open(
        AppConfig::new(dir, ACCOUNT),
        clock,
        KeyRing::with_root(&root),
    )
    .await
    .unwrap()
}

fn metric() -> MetricId {
    MetricId {
        namespace: "App".into(),
        name: "Errors".into(),
        dimensions: Vec::new(),
    }
}

async fn put_value(app: &App, at_ms: i64, value: f64) {
    app.metrics
        .put(
            ACCOUNT,
            REGION,
            vec![ValidatedDatum {
                metric: metric(),
                timestamp: Timestamp::from_millis(at_ms),
                unit: Unit::parse("None").unwrap(),
                storage_resolution: 60,
                sample: Sample::Value(value),
            }],
        )
        .await
        .unwrap();
}

/// Creates the alarm as PutMetricAlarm's core does (without its immediate
/// evaluation: the engine's instants are what is under test).
fn create_alarm(app: &App, now: i64, actions: Vec<String>) {
    let config = validate_put(&PutMetricAlarmInput {
        alarm_name: Some("errors".into()),
        metric_name: Some("Errors".into()),
        namespace: Some("App".into()),
        statistic: Some("Maximum".into()),
        period: Some(60),
        evaluation_periods: Some(3),
        datapoints_to_alarm: Some(2),
        threshold: Some(5.0),
        comparison_operator: Some("GreaterThanOrEqualToThreshold".into()),
        alarm_actions: actions.clone(),
        ok_actions: actions,
        ..Default::default()
    })
    .unwrap();
    let scope = Scope {
        account: ACCOUNT,
        region: REGION,
        request_id: "create",
        now: Timestamp::from_millis(now),
    };
    let (ops, created, _) = app.alarms.put_changes(&scope, config).unwrap();
    assert!(created);
    app.audit.catalog().commit(&ops).unwrap();
}

fn alarm(app: &App) -> MetricAlarm {
    app.alarms.get(ACCOUNT, REGION, "errors").unwrap().unwrap()
}

fn history(app: &App, kind: &str) -> Vec<(i64, String)> {
    let catalog = app.audit.catalog();
    let mut out: Vec<(i64, String)> = catalog
        .list("alarm_history", &format!("{ACCOUNT}/{REGION}/"))
        .unwrap()
        .into_iter()
        .map(|(_, v)| serde_json::from_slice::<serde_json::Value>(&v).unwrap())
        .filter(|item| item["item_type"] == kind)
        .map(|item| {
            (
                item["timestamp_ms"].as_i64().unwrap(),
                item["summary"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn m_out_of_n_over_minutes_with_history_and_exactly_once_instants() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(T0 + 5_000)));
    let app = open(dir.path(), clock.clone()).await;
    create_alarm(&app, T0 + 5_000, Vec::new());

    // 12:00:05: the first instant is 12:00 itself, before the alarm existed.
    assert_eq!(run_due(&app, MINUTE_MS).await.unwrap(), 0);
    assert_eq!(
        watermark(app.audit.catalog().as_ref(), MINUTE_MS).unwrap(),
        Some(T0)
    );
    assert_eq!(alarm(&app).state_value, "INSUFFICIENT_DATA");

    // Values land in the minutes 12:00, 12:01 (breaching) and 12:02 (good).
    put_value(&app, T0 + 10_000, 7.0).await;
    put_value(&app, T0 + 70_000, 9.0).await;
    // 12:02:00 evaluates buckets [12:01, 12:02) and [12:00, 12:01): 2 of 3
    // needed points are real and both breach → ALARM.
    clock.set(Timestamp::from_millis(T0 + 2 * MINUTE_MS + 10));
    assert_eq!(run_due(&app, MINUTE_MS).await.unwrap(), 1);
    let a = alarm(&app);
    assert_eq!(a.state_value, "ALARM");
    assert!(
        a.state_reason.starts_with(
            "Threshold Crossed: 2 out of the last 2 datapoints [9.0 (10/10/24 12:01:00), 7.0 (10/10/24 12:00:00)]"
        ),
        "{}",
        a.state_reason
    );
    let data: serde_json::Value =
        serde_json::from_str(a.state_reason_data.as_deref().unwrap()).unwrap();
    assert_eq!(data["recentDatapoints"], serde_json::json!([7.0, 9.0]));
    assert_eq!(data["statistic"], "Maximum");
    assert_eq!(data["period"], 60);
    assert_eq!(data["startDate"], "2024-10-10T12:00:00.000+0000");
    assert_eq!(a.state_transitioned_ms, T0 + 2 * MINUTE_MS + 10);

    // Two good minutes follow; at 12:04 the three newest are 9, 1, 1 → OK.
    put_value(&app, T0 + 2 * MINUTE_MS + 5_000, 1.0).await;
    clock.set(Timestamp::from_millis(T0 + 3 * MINUTE_MS));
    // 12:03: 7, 9, 1 → still ALARM, nothing written.
    assert_eq!(run_due(&app, MINUTE_MS).await.unwrap(), 0);
    put_value(&app, T0 + 3 * MINUTE_MS + 5_000, 1.0).await;

    // A restart between instants: the watermark says 12:03 is done.
    drop(app);
    let app = open(dir.path(), clock.clone()).await;
    assert_eq!(run_due(&app, MINUTE_MS).await.unwrap(), 0);
    // Three minutes pass while stopped: 12:04, 12:05 and 12:06 are caught
    // up in order, each exactly once.
    clock.set(Timestamp::from_millis(T0 + 6 * MINUTE_MS + 30_000));
    drop(app);
    let app = open(dir.path(), clock.clone()).await;
    assert_eq!(run_due(&app, MINUTE_MS).await.unwrap(), 1);
    assert_eq!(
        watermark(app.audit.catalog().as_ref(), MINUTE_MS).unwrap(),
        Some(T0 + 6 * MINUTE_MS)
    );
    let a = alarm(&app);
    assert_eq!(a.state_value, "OK");
    // The transition happened at the caught-up instant 12:04.
    assert_eq!(a.state_transitioned_ms, T0 + 4 * MINUTE_MS);
    assert_eq!(
        history(&app, "StateUpdate"),
        vec![
            (
                T0 + 2 * MINUTE_MS + 10,
                "Alarm updated from INSUFFICIENT_DATA to ALARM".to_owned()
            ),
            (
                T0 + 4 * MINUTE_MS,
                "Alarm updated from ALARM to OK".to_owned()
            ),
        ]
    );
    // Running again at the same time evaluates nothing twice.
    assert_eq!(run_due(&app, MINUTE_MS).await.unwrap(), 0);
    assert_eq!(history(&app, "StateUpdate").len(), 2);
}

#[tokio::test]
async fn transitions_run_actions_into_history_and_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(T0 + 1_000)));
    let app = open(dir.path(), clock.clone()).await;
    // A topic with one confirmed http subscription.
    let topic = trailwatch_core::sns::TopicArn::parse(
        &format!("arn:aws:sns:{REGION}:{ACCOUNT}:alerts"),
        "TopicArn",
    )
    .unwrap();
    let catalog = app.audit.catalog();
    catalog
        .commit(&app.topics.put_changes(
            &topic,
            &trailwatch_core::sns::Topic {
                v: 1,
                display_name: String::new(),
                policy: None,
                delivery_policy: None,
                subscriptions_deleted: 0,
            },
        ))
        .unwrap();
    let (entry, ops) = app
        .topics
        .subscribe(&topic, ACCOUNT, "http", "http://127.0.0.1:9/hook")
        .unwrap();
    catalog.commit(&ops).unwrap();
    catalog
        .commit(
            &app.topics
                .confirm(&topic, &entry.subscription.token)
                .unwrap()
                .1,
        )
        .unwrap();
    let missing = format!("arn:aws:sns:{REGION}:{ACCOUNT}:nope");
    create_alarm(&app, T0 + 1_000, vec![topic.arn(), missing.clone()]);
    put_value(&app, T0 + 2_000, 6.0).await;
    put_value(&app, T0 + 62_000, 6.0).await;
    clock.set(Timestamp::from_millis(T0 + 2 * MINUTE_MS));
    assert_eq!(run_due(&app, MINUTE_MS).await.unwrap(), 1);
    let actions = history(&app, "Action");
    let summaries: Vec<&str> = actions.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(
        summaries,
        vec![
            format!("Failed to execute action {missing}. Reason: Topic {missing} does not exist."),
            format!("Successfully executed action {}", topic.arn()),
        ]
    );
    // The notification waits in the outbox (the endpoint does not answer)
    // with the alarm's notification JSON inside the signed envelope.
    let pending = app.topics.pending_deliveries().unwrap();
    assert_eq!(pending.len(), 1);
    let envelope: serde_json::Value = serde_json::from_str(&pending[0].body).unwrap();
    assert_eq!(
        envelope["Subject"],
        "ALARM: \"errors\" in US East (N. Virginia)"
    );
    let message: serde_json::Value =
        serde_json::from_str(envelope["Message"].as_str().unwrap()).unwrap();
    assert_eq!(message["NewStateValue"], "ALARM");
    assert_eq!(message["OldStateValue"], "INSUFFICIENT_DATA");
    assert_eq!(message["Trigger"]["Statistic"], "MAXIMUM");
    assert_eq!(message["Trigger"]["Threshold"], 5.0);
    assert_eq!(message["AWSAccountId"], ACCOUNT);
}

/// One alarm per (table row, TreatMissingData mode), each on its own metric
/// holding the row's five minutes, all evaluated by the engine at one
/// instant: the §7.4 tables (N = 3, R = 5) and the extra vectors.
#[tokio::test]
async fn every_row_of_the_missing_data_tables_through_the_engine() {
    const MODES: [&str; 4] = ["missing", "ignore", "breaching", "notBreaching"];
    // (M, datapoints oldest -> newest, start state, expected per mode).
    let rows: Vec<(i64, &str, &str, [&str; 4])> = vec![
        (
            3,
            "0 - X - X",
            "INSUFFICIENT_DATA",
            ["OK", "OK", "OK", "OK"],
        ),
        (
            3,
            "0 - - - -",
            "INSUFFICIENT_DATA",
            ["OK", "OK", "OK", "OK"],
        ),
        (
            3,
            "- - - - -",
            "OK",
            ["INSUFFICIENT_DATA", "OK", "ALARM", "OK"],
        ),
        (
            3,
            "- - - - -",
            "ALARM",
            ["INSUFFICIENT_DATA", "ALARM", "ALARM", "OK"],
        ),
        (
            3,
            "0 X X - X",
            "INSUFFICIENT_DATA",
            ["ALARM", "ALARM", "ALARM", "ALARM"],
        ),
        (3, "- - X - -", "OK", ["ALARM", "OK", "ALARM", "OK"]),
        (
            2,
            "0 - X - X",
            "INSUFFICIENT_DATA",
            ["ALARM", "ALARM", "ALARM", "ALARM"],
        ),
        (
            2,
            "0 0 X 0 X",
            "INSUFFICIENT_DATA",
            ["ALARM", "ALARM", "ALARM", "ALARM"],
        ),
        (
            2,
            "0 - X - -",
            "INSUFFICIENT_DATA",
            ["OK", "OK", "ALARM", "OK"],
        ),
        (
            2,
            "- - - - 0",
            "INSUFFICIENT_DATA",
            ["OK", "OK", "ALARM", "OK"],
        ),
        (2, "- - - X -", "OK", ["ALARM", "OK", "ALARM", "OK"]),
        // The extra vectors (N = M = 3, missing, from OK).
        (3, "- - - - X", "OK", ["OK", "OK", "ALARM", "OK"]),
        (3, "- - - X -", "OK", ["OK", "OK", "ALARM", "OK"]),
        (3, "- - X X X", "OK", ["ALARM", "ALARM", "ALARM", "ALARM"]),
        (3, "X X X 0 -", "OK", ["OK", "OK", "OK", "OK"]),
    ];
    let dir = tempfile::tempdir().unwrap();
    // The instant under test is 12:10; the rows fill 12:05–12:09.
    let t = T0 + 10 * MINUTE_MS;
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(T0)));
    let app = open(dir.path(), clock.clone()).await;
    let catalog = app.audit.catalog();
    // Instants before 12:10 are done already.
    catalog
        .commit(&[trailwatch_core::engine::watermark_change(
            MINUTE_MS,
            t - MINUTE_MS,
        )])
        .unwrap();
    for (r, (m, pattern, start, _)) in rows.iter().enumerate() {
        let name = format!("row{r:02}");
        let cells: Vec<&str> = pattern.split_whitespace().collect();
        for (j, cell) in cells.iter().enumerate() {
            let minute = t - (5 - j as i64) * MINUTE_MS;
            let value = match *cell {
                "X" => 10.0,
                "0" => 1.0,
                _ => continue,
            };
            app.metrics
                .put(
                    ACCOUNT,
                    REGION,
                    vec![ValidatedDatum {
                        metric: MetricId {
                            namespace: "Rows".into(),
                            name: name.clone(),
                            dimensions: Vec::new(),
                        },
                        timestamp: Timestamp::from_millis(minute + 1_000),
                        unit: Unit::parse("None").unwrap(),
                        storage_resolution: 60,
                        sample: Sample::Value(value),
                    }],
                )
                .await
                .unwrap();
        }
        for mode in MODES {
            let config = validate_put(&PutMetricAlarmInput {
                alarm_name: Some(format!("{name}-{mode}")),
                metric_name: Some(name.clone()),
                namespace: Some("Rows".into()),
                statistic: Some("Average".into()),
                period: Some(60),
                evaluation_periods: Some(3),
                datapoints_to_alarm: Some(*m),
                threshold: Some(5.0),
                comparison_operator: Some("GreaterThanThreshold".into()),
                treat_missing_data: Some(mode.into()),
                ..Default::default()
            })
            .unwrap();
            let scope = Scope {
                account: ACCOUNT,
                region: REGION,
                request_id: "create",
                now: Timestamp::from_millis(T0),
            };
            let (ops, _, alarm) = app.alarms.put_changes(&scope, config).unwrap();
            catalog.commit(&ops).unwrap();
            if *start != "INSUFFICIENT_DATA" {
                let write = trailwatch_core::alarms::StateWrite {
                    state: (*start).to_owned(),
                    reason: "start".into(),
                    reason_data: None,
                    evaluation_state: None,
                };
                let (_, ops) = app
                    .alarms
                    .state_changes(&scope, &alarm, &write, T0, 1)
                    .unwrap();
                catalog.commit(&ops).unwrap();
            }
        }
    }
    clock.set(Timestamp::from_millis(t + 2_000));
    run_due(&app, MINUTE_MS).await.unwrap();
    let mut wrong = Vec::new();
    for (r, (m, pattern, start, expected)) in rows.iter().enumerate() {
        for (mode, want) in MODES.iter().zip(expected) {
            let got = app
                .alarms
                .get(ACCOUNT, REGION, &format!("row{r:02}-{mode}"))
                .unwrap()
                .unwrap()
                .state_value;
            if got != *want {
                wrong.push(format!(
                    "M={m} `{pattern}` from {start}, {mode}: got {got}, want {want}"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// EvaluateLowSampleCountPercentile (§7.2): a p99 alarm that ignores low
/// sample counts keeps its state on 50 samples (it needs 1,000), while the
/// same alarm that evaluates them alarms.
#[tokio::test]
async fn low_sample_percentile_alarms_keep_their_state() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(T0)));
    let app = open(dir.path(), clock.clone()).await;
    let catalog = app.audit.catalog();
    catalog
        .commit(&[trailwatch_core::engine::watermark_change(MINUTE_MS, T0)])
        .unwrap();
    for mode in ["ignore", "evaluate"] {
        let config = validate_put(&PutMetricAlarmInput {
            alarm_name: Some(format!("p99-{mode}")),
            metric_name: Some("Errors".into()),
            namespace: Some("App".into()),
            extended_statistic: Some("p99".into()),
            period: Some(60),
            evaluation_periods: Some(1),
            threshold: Some(5.0),
            comparison_operator: Some("GreaterThanThreshold".into()),
            evaluate_low_sample_count_percentile: Some(mode.into()),
            ..Default::default()
        })
        .unwrap();
        let scope = Scope {
            account: ACCOUNT,
            region: REGION,
            request_id: "create",
            now: Timestamp::from_millis(T0),
        };
        let (ops, _, _) = app.alarms.put_changes(&scope, config).unwrap();
        catalog.commit(&ops).unwrap();
    }
    for i in 0..50 {
        put_value(&app, T0 + 1_000 + i, 9.0).await;
    }
    clock.set(Timestamp::from_millis(T0 + MINUTE_MS + 5));
    assert_eq!(run_due(&app, MINUTE_MS).await.unwrap(), 1);
    let state = |name: &str| {
        app.alarms
            .get(ACCOUNT, REGION, name)
            .unwrap()
            .unwrap()
            .state_value
    };
    assert_eq!(state("p99-ignore"), "INSUFFICIENT_DATA");
    assert_eq!(state("p99-evaluate"), "ALARM");
}
