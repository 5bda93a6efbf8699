//! CloudWatch Logs operations (`spec/logs.md` §2–5): log groups, streams,
//! retention, PutLogEvents, GetLogEvents and FilterLogEvents. Group and
//! stream changes commit with the call's audit record; events are durable in
//! the log store's WAL before PutLogEvents answers.

use std::sync::Arc;
use trailwatch_core::logs::export::ExportTask;
use trailwatch_core::logs::filters::{self, MetricFilterRecord, Transformation};
use trailwatch_core::logs::model::{
    constraint, group_arn, group_from_identifier, stream_arn, validate_group_name,
    validate_retention, validate_stream_name, validate_tags, GROUP_CLASSES,
};
use trailwatch_core::logs::pattern::Pattern;
use trailwatch_core::logs::store::{key_digits, FilterQuery, GetQuery, GroupRecord, TailEvent};
use trailwatch_core::logs::subscriptions::{self, DestinationRecord, SubscriptionRecord};
use trailwatch_core::logs::LogsError;
use trailwatch_core::metrics::{validate_put, PutRequest};
use trailwatch_core::tags::Tags;
use trailwatch_core::token::filters_hash;

use trailwatch_protocol::{ApiError, Value};

use super::{CallContext, Outcome};
use crate::app::App;

const OPERATIONS: [&str; 38] = [
    "GetLogGroupFields",
    "StartQuery",
    "GetQueryResults",
    "StopQuery",
    "DescribeQueries",
    "GetLogRecord",
    "StartLiveTail",
    "PutSubscriptionFilter",
    "DescribeSubscriptionFilters",
    "DeleteSubscriptionFilter",
    "PutDestination",
    "PutDestinationPolicy",
    "DescribeDestinations",
    "DeleteDestination",
    "CreateExportTask",
    "DescribeExportTasks",
    "CancelExportTask",
    "TagResource",
    "UntagResource",
    "ListTagsForResource",
    "TagLogGroup",
    "UntagLogGroup",
    "ListTagsLogGroup",
    "PutMetricFilter",
    "DescribeMetricFilters",
    "DeleteMetricFilter",
    "TestMetricFilter",
    "CreateLogGroup",
    "DeleteLogGroup",
    "DescribeLogGroups",
    "PutRetentionPolicy",
    "DeleteRetentionPolicy",
    "CreateLogStream",
    "DeleteLogStream",
    "DescribeLogStreams",
    "PutLogEvents",
    "GetLogEvents",
    "FilterLogEvents",
];

/// Whether `op` is served here.
pub(super) fn implemented(op: &str) -> bool {
    OPERATIONS.contains(&op)
}

pub(super) async fn dispatch(
    app: &App,
    cx: &CallContext<'_>,
    op: &str,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let result = match op {
        "CreateLogGroup" => create_log_group(app, cx, input).await,
        "DeleteLogGroup" => delete_log_group(app, cx, input).await,
        "DescribeLogGroups" => describe_log_groups(app, cx, input),
        "PutRetentionPolicy" => retention(app, cx, input, true).await,
        "DeleteRetentionPolicy" => retention(app, cx, input, false).await,
        "CreateLogStream" => create_log_stream(app, cx, input).await,
        "DeleteLogStream" => delete_log_stream(app, cx, input).await,
        "DescribeLogStreams" => describe_log_streams(app, cx, input),
        "PutLogEvents" => put_log_events(app, cx, input).await,
        "GetLogEvents" => get_log_events(app, cx, input),
        "PutMetricFilter" => put_metric_filter(app, cx, input).await,
        "DescribeMetricFilters" => describe_metric_filters(app, cx, input),
        "DeleteMetricFilter" => delete_metric_filter(app, cx, input).await,
        "TestMetricFilter" => test_metric_filter(input),
        "StartLiveTail" => start_live_tail(app, cx, input),
        "StartQuery" => start_query(app, cx, input),
        "GetQueryResults" => get_query_results(app, cx, input),
        "StopQuery" => stop_query(app, cx, input),
        "DescribeQueries" => describe_queries(app, cx, input),
        "GetLogRecord" => get_log_record(app, cx, input),
        "GetLogGroupFields" => get_log_group_fields(app, cx, input),
        "PutSubscriptionFilter" => put_subscription_filter(app, cx, input).await,
        "DescribeSubscriptionFilters" => describe_subscription_filters(app, cx, input),
        "DeleteSubscriptionFilter" => delete_subscription_filter(app, cx, input).await,
        "PutDestination" => put_destination(app, cx, input).await,
        "PutDestinationPolicy" => put_destination_policy(app, cx, input).await,
        "DescribeDestinations" => describe_destinations(app, cx, input),
        "DeleteDestination" => delete_destination(app, cx, input).await,
        "CreateExportTask" => create_export_task(app, cx, input).await,
        "DescribeExportTasks" => describe_export_tasks(app, cx, input),
        "CancelExportTask" => cancel_export_task(app, cx, input).await,
        "TagResource" | "TagLogGroup" => tag(app, cx, input, op == "TagResource").await,
        "UntagResource" | "UntagLogGroup" => untag(app, cx, input, op == "UntagResource").await,
        "ListTagsForResource" | "ListTagsLogGroup" => {
            list_tags(app, cx, input, op == "ListTagsForResource")
        }
        _ => filter_log_events(app, cx, input),
    };
    result.map_err(map_error)
}

fn map_error(err: LogsError) -> ApiError {
    match &err {
        LogsError::Malformed {
            message,
            start,
            end,
        } => {
            let mut e = ApiError::new(err.code(), 400, message.clone());
            e.extra.push((
                "queryCompileError".to_owned(),
                Value::structure([
                    (
                        "location",
                        Value::structure([
                            ("startCharOffset", Value::Int(*start as i64)),
                            ("endCharOffset", Value::Int(*end as i64)),
                        ]),
                    ),
                    ("message", Value::string(message)),
                ]),
            ));
            e
        }
        LogsError::TooManyTags { message, resource } => {
            let mut e = ApiError::new(err.code(), 400, message.clone());
            e.extra
                .push(("resourceName".to_owned(), Value::string(resource)));
            e
        }
        LogsError::Storage(m) => {
            tracing::error!(error = %m, "logs storage failed");
            ApiError::new(
                "ServiceUnavailableException",
                500,
                "The service is unavailable.",
            )
        }
        other => ApiError::new(other.code(), 400, other.to_string()),
    }
}

fn text(input: &Value, name: &str) -> Option<String> {
    input.get(name).and_then(Value::as_str).map(str::to_owned)
}

fn required(input: &Value, name: &str) -> Result<String, LogsError> {
    text(input, name).ok_or_else(|| {
        LogsError::InvalidParameter(format!(
            "1 validation error detected: Value null at '{name}' failed to satisfy constraint: Member must not be null"
        ))
    })
}

fn int(input: &Value, name: &str) -> Result<Option<i64>, LogsError> {
    match input.get(name) {
        None => Ok(None),
        Some(v) => v.as_i64().map(Some).ok_or_else(|| {
            LogsError::InvalidParameter(format!("The value for parameter {name} is invalid."))
        }),
    }
}

fn limit(input: &Value, max: i64) -> Result<Option<usize>, LogsError> {
    match int(input, "limit")? {
        None => Ok(None),
        Some(n) if (1..=max).contains(&n) => Ok(Some(n as usize)),
        Some(n) => Err(constraint(
            &n.to_string(),
            "limit",
            &format!(
                "Member must have value {} {}",
                if n < 1 {
                    "greater than or equal to"
                } else {
                    "less than or equal to"
                },
                if n < 1 { 1 } else { max }
            ),
        )),
    }
}

/// The group named by `logGroupName` xor `logGroupIdentifier`.
fn group_name(input: &Value, identifier_allowed: bool) -> Result<String, LogsError> {
    let name = text(input, "logGroupName");
    let identifier = if identifier_allowed {
        text(input, "logGroupIdentifier")
    } else {
        None
    };
    match (name, identifier) {
        (Some(n), None) => Ok(n),
        (None, Some(i)) => group_from_identifier(&i),
        (Some(_), Some(_)) => Err(LogsError::InvalidParameter(
            "LogGroup name and LogGroup ARN are mutually exclusive parameters.".to_owned(),
        )),
        (None, None) if identifier_allowed => Err(LogsError::InvalidParameter(
            "Should provide either name or ARN of a log group.".to_owned(),
        )),
        (None, None) => required(input, "logGroupName"),
    }
}

fn existing_group(app: &App, cx: &CallContext<'_>, name: &str) -> Result<GroupRecord, LogsError> {
    app.logs
        .group(&cx.principal.account_id, cx.region, name)?
        .ok_or_else(LogsError::group_not_found)
}

async fn create_log_group(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, LogsError> {
    let name = required(input, "logGroupName")?;
    validate_group_name(&name, "logGroupName")?;
    if name.starts_with("aws/") {
        return Err(LogsError::InvalidParameter(
            "Log group names starting with aws/ are reserved.".to_owned(),
        ));
    }
    let class = text(input, "logGroupClass").unwrap_or_else(|| "STANDARD".to_owned());
    if !GROUP_CLASSES.contains(&class.as_str()) {
        return Err(constraint(
            &class,
            "logGroupClass",
            &format!(
                "Member must satisfy enum value set: [{}]",
                GROUP_CLASSES.join(", ")
            ),
        ));
    }
    let tags: Vec<(String, String)> = input
        .get("tags")
        .map(|t| {
            t.members()
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    if tags.len() > 50 {
        return Err(LogsError::InvalidParameter(
            "1 validation error detected: Value at 'tags' failed to satisfy constraint: Member must have length less than or equal to 50".to_owned(),
        ));
    }
    validate_tags(&tags)?;
    let (account, region) = (&cx.principal.account_id, cx.region);
    let hold = app.logs.lock_names().await;
    if app.logs.group(account, region, &name)?.is_some() {
        return Err(LogsError::AlreadyExists(
            "The specified log group already exists".to_owned(),
        ));
    }
    let record = GroupRecord {
        v: 1,
        created_ms: cx.now.millis(),
        retention_days: None,
        class,
        kms_key_id: text(input, "kmsKeyId"),
        deletion_protection: input
            .get("deletionProtectionEnabled")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    };
    let mut changes = app
        .logs
        .create_group_changes(account, region, &name, &record)?;
    if !tags.is_empty() {
        changes.extend(Tags::create_changes(
            &group_arn(region, account, &name),
            &tags,
        ));
    }
    Ok(held(Outcome::write(Value::empty_struct(), changes), hold))
}

async fn delete_log_group(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, LogsError> {
    let name = required(input, "logGroupName")?;
    let (account, region) = (&cx.principal.account_id, cx.region);
    let hold = app.logs.lock_names().await;
    let group = existing_group(app, cx, &name)?;
    if group.deletion_protection {
        return Err(LogsError::Validation(format!(
            "Log group {name} has deletion protection enabled."
        )));
    }
    let mut changes = app.logs.delete_group_changes(account, region, &name)?;
    changes.extend(Tags::delete_changes(&group_arn(region, account, &name)));
    Ok(held(Outcome::write(Value::empty_struct(), changes), hold))
}

async fn retention(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
    put: bool,
) -> Result<Outcome, LogsError> {
    let name = required(input, "logGroupName")?;
    let days = if put {
        let days = int(input, "retentionInDays")?.ok_or_else(|| {
            LogsError::InvalidParameter(
                "1 validation error detected: Value null at 'retentionInDays' failed to satisfy constraint: Member must not be null".to_owned(),
            )
        })?;
        Some(validate_retention(days)?)
    } else {
        None
    };
    let hold = app.logs.lock_names().await;
    let mut group = existing_group(app, cx, &name)?;
    group.retention_days = days;
    let changes =
        app.logs
            .update_group_changes(&cx.principal.account_id, cx.region, &name, &group)?;
    Ok(held(Outcome::write(Value::empty_struct(), changes), hold))
}

fn page_token(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
    filters: &str,
) -> Result<usize, LogsError> {
    match text(input, "nextToken") {
        None => Ok(0),
        Some(t) => app
            .tokens
            .open::<usize>(&t, filters, cx.now, 24 * 3600)
            .ok_or_else(|| {
                LogsError::InvalidParameter("The specified nextToken is invalid.".into())
            }),
    }
}

/// A state-changing answer that keeps the name lock until its changes commit.
fn held(mut outcome: Outcome, hold: tokio::sync::OwnedMutexGuard<()>) -> Outcome {
    outcome.hold = Some(hold);
    outcome
}

/// A listing page: `member` holds `page`; `next` (the offset of the next page)
/// becomes a `nextToken` bound to `filters`, omitted on the last page.
fn page_out(
    app: &App,
    cx: &CallContext<'_>,
    filters: &str,
    member: &str,
    page: Vec<Value>,
    next: Option<usize>,
) -> Outcome {
    let mut out = vec![(member.to_owned(), Value::List(page))];
    if let Some(next) = next {
        out.push((
            "nextToken".to_owned(),
            Value::String(app.tokens.issue(filters, &next, cx.now)),
        ));
    }
    Outcome::read(Value::Struct(out))
}

fn describe_log_groups(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, LogsError> {
    let prefix = text(input, "logGroupNamePrefix");
    let pattern = text(input, "logGroupNamePattern");
    if prefix.is_some() && pattern.is_some() {
        return Err(LogsError::InvalidParameter(
            "LogGroup name prefix and LogGroup name pattern are mutually exclusive parameters."
                .to_owned(),
        ));
    }
    let identifiers: Option<Vec<String>> = input
        .get("logGroupIdentifiers")
        .and_then(Value::as_list)
        .map(|l| {
            l.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        });
    let identifiers = identifiers
        .map(|ids| {
            ids.iter()
                .map(|i| group_from_identifier(i))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let class = text(input, "logGroupClass");
    let limit = limit(input, 50)?.unwrap_or(50);
    let (account, region) = (&cx.principal.account_id, cx.region);
    let filters = filters_hash(&[
        account,
        region,
        "DescribeLogGroups",
        prefix.as_deref().unwrap_or("\u{0}"),
        pattern.as_deref().unwrap_or("\u{0}"),
        &format!("{identifiers:?}"),
        class.as_deref().unwrap_or("\u{0}"),
    ]);
    let offset = page_token(app, cx, input, &filters)?;
    let groups: Vec<(String, GroupRecord)> = app
        .logs
        .groups(account, region)?
        .into_iter()
        .filter(|(name, g)| {
            prefix.as_ref().is_none_or(|p| name.starts_with(p.as_str()))
                && pattern.as_ref().is_none_or(|p| name.contains(p.as_str()))
                && identifiers.as_ref().is_none_or(|ids| ids.contains(name))
                && class.as_ref().is_none_or(|c| {
                    c == &g.class
                        || (["INFREQUENT_ACCESS", "ESSENTIALS"].contains(&c.as_str())
                            && ["INFREQUENT_ACCESS", "ESSENTIALS"].contains(&g.class.as_str()))
                })
        })
        .collect();
    let page: Vec<Value> = groups
        .iter()
        .skip(offset)
        .take(limit)
        .map(|(name, g)| {
            let arn = group_arn(region, account, name);
            if pattern.is_some() {
                return Value::structure([
                    ("arn", Value::String(format!("{arn}:*"))),
                    ("creationTime", Value::Int(g.created_ms)),
                    ("logGroupName", Value::string(name)),
                ]);
            }
            let cutoff = g.cutoff(cx.now);
            let stored: u64 = app
                .logs
                .streams_of(account, region, name)
                .unwrap_or_default()
                .iter()
                .map(|(_, s)| app.logs.stream_stats(&s.id, cutoff).stored_bytes)
                .sum();
            let mut members = vec![
                ("logGroupName".to_owned(), Value::string(name)),
                ("creationTime".to_owned(), Value::Int(g.created_ms)),
            ];
            if let Some(d) = g.retention_days {
                members.push(("retentionInDays".to_owned(), Value::Int(i64::from(d))));
            }
            members.extend([
                (
                    "metricFilterCount".to_owned(),
                    Value::Int(
                        app.logs
                            .metric_filters(account, region, name)
                            .map_or(0, |f| f.len() as i64),
                    ),
                ),
                ("arn".to_owned(), Value::String(format!("{arn}:*"))),
                ("storedBytes".to_owned(), Value::Int(stored as i64)),
                ("logGroupClass".to_owned(), Value::string(&g.class)),
                ("logGroupArn".to_owned(), Value::String(arn)),
                (
                    "deletionProtectionEnabled".to_owned(),
                    Value::Bool(g.deletion_protection),
                ),
            ]);
            if let Some(k) = &g.kms_key_id {
                members.push(("kmsKeyId".to_owned(), Value::string(k)));
            }
            Value::Struct(members)
        })
        .collect();
    let more = offset + limit < groups.len();
    Ok(page_out(
        app,
        cx,
        &filters,
        "logGroups",
        page,
        more.then_some(offset + limit),
    ))
}

async fn create_log_stream(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, LogsError> {
    let group = required(input, "logGroupName")?;
    let name = required(input, "logStreamName")?;
    validate_stream_name(&name, "logStreamName")?;
    let (account, region) = (&cx.principal.account_id, cx.region);
    let hold = app.logs.lock_names().await;
    existing_group(app, cx, &group)?;
    if app.logs.stream(account, region, &group, &name)?.is_some() {
        return Err(LogsError::AlreadyExists(
            "The specified log stream already exists".to_owned(),
        ));
    }
    let changes = app
        .logs
        .create_stream_changes(account, region, &group, &name)?;
    Ok(held(Outcome::write(Value::empty_struct(), changes), hold))
}

async fn delete_log_stream(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, LogsError> {
    let group = required(input, "logGroupName")?;
    let name = required(input, "logStreamName")?;
    let (account, region) = (&cx.principal.account_id, cx.region);
    let hold = app.logs.lock_names().await;
    let record = existing_group(app, cx, &group)?;
    if app.logs.stream(account, region, &group, &name)?.is_none() {
        return Err(LogsError::stream_not_found());
    }
    if record.deletion_protection {
        return Err(LogsError::Validation(format!(
            "Log group {group} has deletion protection enabled."
        )));
    }
    let changes = app
        .logs
        .delete_stream_changes(account, region, &group, &name);
    Ok(held(Outcome::write(Value::empty_struct(), changes), hold))
}

fn describe_log_streams(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, LogsError> {
    let group = group_name(input, true)?;
    let prefix = text(input, "logStreamNamePrefix");
    let order = text(input, "orderBy").unwrap_or_else(|| "LogStreamName".to_owned());
    if !["LogStreamName", "LastEventTime"].contains(&order.as_str()) {
        return Err(constraint(
            &order,
            "orderBy",
            "Member must satisfy enum value set: [LogStreamName, LastEventTime]",
        ));
    }
    if prefix.is_some() && order == "LastEventTime" {
        return Err(LogsError::InvalidParameter(
            "Cannot order by LastEventTime with a logStreamNamePrefix.".to_owned(),
        ));
    }
    let descending = input
        .get("descending")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let limit = limit(input, 50)?.unwrap_or(50);
    let (account, region) = (&cx.principal.account_id, cx.region);
    let record = existing_group(app, cx, &group)?;
    let cutoff = record.cutoff(cx.now);
    let filters = filters_hash(&[
        account,
        region,
        "DescribeLogStreams",
        &group,
        prefix.as_deref().unwrap_or("\u{0}"),
        &order,
        if descending { "d" } else { "a" },
    ]);
    let offset = page_token(app, cx, input, &filters)?;
    let mut streams: Vec<_> = app
        .logs
        .streams_of(account, region, &group)?
        .into_iter()
        .filter(|(name, _)| prefix.as_ref().is_none_or(|p| name.starts_with(p.as_str())))
        .map(|(name, s)| {
            let stats = app.logs.stream_stats(&s.id, cutoff);
            (name, s, stats)
        })
        .collect();
    if order == "LastEventTime" {
        streams.sort_by(|a, b| {
            (a.2.last_event.unwrap_or(0), &a.0).cmp(&(b.2.last_event.unwrap_or(0), &b.0))
        });
    }
    if descending {
        streams.reverse();
    }
    let page: Vec<Value> = streams
        .iter()
        .skip(offset)
        .take(limit)
        .map(|(name, s, stats)| {
            let mut members = vec![
                ("logStreamName".to_owned(), Value::string(name)),
                ("creationTime".to_owned(), Value::Int(s.created_ms)),
            ];
            for (k, v) in [
                ("firstEventTimestamp", stats.first_event),
                ("lastEventTimestamp", stats.last_event),
                ("lastIngestionTime", stats.last_ingestion),
            ] {
                if let Some(v) = v {
                    members.push((k.to_owned(), Value::Int(v)));
                }
            }
            members.extend([
                (
                    "uploadSequenceToken".to_owned(),
                    Value::String(key_digits((stats.last_ingestion.unwrap_or(0), 0, 0))),
                ),
                (
                    "arn".to_owned(),
                    Value::String(stream_arn(region, account, &group, name)),
                ),
                ("storedBytes".to_owned(), Value::Int(0)),
            ]);
            Value::Struct(members)
        })
        .collect();
    let more = offset + limit < streams.len();
    Ok(page_out(
        app,
        cx,
        &filters,
        "logStreams",
        page,
        more.then_some(offset + limit),
    ))
}

async fn put_log_events(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, LogsError> {
    let group = required(input, "logGroupName")?;
    let stream = required(input, "logStreamName")?;
    let list = input
        .get("logEvents")
        .and_then(Value::as_list)
        .ok_or_else(|| {
            LogsError::InvalidParameter(
                "1 validation error detected: Value null at 'logEvents' failed to satisfy constraint: Member must not be null".to_owned(),
            )
        })?;
    if list.is_empty() || list.len() > 10_000 {
        return Err(constraint(
            "[…]",
            "logEvents",
            if list.is_empty() {
                "Member must have length greater than or equal to 1"
            } else {
                "Member must have length less than or equal to 10000"
            },
        ));
    }
    let mut events = Vec::with_capacity(list.len());
    for (i, e) in list.iter().enumerate() {
        let message = text(e, "message").unwrap_or_default();
        if message.is_empty() {
            return Err(constraint(
                "",
                &format!("logEvents.{}.member.message", i + 1),
                "Member must have length greater than or equal to 1",
            ));
        }
        let timestamp = e
            .get("timestamp")
            .and_then(Value::as_i64)
            .filter(|t| *t >= 0)
            .ok_or_else(|| {
                constraint(
                    "null",
                    &format!("logEvents.{}.member.timestamp", i + 1),
                    "Member must have value greater than or equal to 0",
                )
            })?;
        events.push((timestamp, message));
    }
    let (account, region) = (&cx.principal.account_id, cx.region);
    let record = existing_group(app, cx, &group)?;
    let stream_record = app
        .logs
        .stream(account, region, &group, &stream)?
        .ok_or_else(LogsError::stream_not_found)?;
    let (rejected, stored) = app
        .logs
        .put_events(&record, &stream_record, &events)
        .await?;
    let stored_events = &events[stored];
    emit_metrics(app, cx, &group, stored_events).await;
    deliver_subscriptions(app, cx, &group, &stream, stored_events).await;
    app.logs.publish_tail(|| {
        stored_events
            .iter()
            .map(|(t, m)| TailEvent {
                account: account.clone(),
                region: region.to_owned(),
                group: group.clone(),
                stream: stream.clone(),
                timestamp: *t,
                ingestion: cx.now.millis(),
                message: m.clone(),
            })
            .collect()
    });
    let mut out = vec![(
        "nextSequenceToken".to_owned(),
        Value::String(key_digits((cx.now.millis(), 0, 0))),
    )];
    let info: Vec<(String, Value)> = [
        ("tooNewLogEventStartIndex", rejected.too_new_start),
        ("tooOldLogEventEndIndex", rejected.too_old_end),
        ("expiredLogEventEndIndex", rejected.expired_end),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k.to_owned(), Value::Int(v? as i64))))
    .collect();
    if !info.is_empty() {
        out.push(("rejectedLogEventsInfo".to_owned(), Value::Struct(info)));
    }
    if let Some(error_type) = input.get("entity").and_then(entity_error) {
        out.push((
            "rejectedEntityInfo".to_owned(),
            Value::structure([("errorType", Value::string(error_type))]),
        ));
    }
    // A data event: the answer is not a state change of a resource.
    Ok(Outcome::read(Value::Struct(out)))
}

/// Why an `entity` is refused (§4.2: the events are stored anyway) [TW rules]:
/// 2–4 `keyAttributes` among Type, ResourceType, Identifier, Name and
/// Environment, `Type` required and one of Service, Resource or
/// AWS::Resource, at most 10 `attributes`, at most 8 KB of JSON.
fn entity_error(entity: &Value) -> Option<&'static str> {
    const KEYS: [&str; 5] = ["Type", "ResourceType", "Identifier", "Name", "Environment"];
    let (Value::Struct(_) | Value::Map(_)) = entity else {
        return Some("InvalidEntity");
    };
    let keys = entity
        .get("keyAttributes")
        .map(Value::members)
        .unwrap_or_default();
    if keys
        .iter()
        .any(|(k, v)| !KEYS.contains(&k.as_str()) || v.as_str().is_none())
        || !(2..=4).contains(&keys.len())
    {
        return Some("InvalidKeyAttributes");
    }
    match entity
        .get("keyAttributes")
        .and_then(|k| k.get("Type"))
        .and_then(Value::as_str)
    {
        None => return Some("MissingRequiredFields"),
        Some(t) if !["Service", "Resource", "AWS::Resource"].contains(&t) => {
            return Some("InvalidTypeValue")
        }
        Some(_) => {}
    }
    if entity
        .get("attributes")
        .is_some_and(|a| a.members().len() > 10)
    {
        return Some("InvalidAttributes");
    }
    if entity.to_record_json().to_string().len() > 8 * 1024 {
        return Some("EntitySizeTooLarge");
    }
    None
}

fn get_log_events(app: &App, cx: &CallContext<'_>, input: &Value) -> Result<Outcome, LogsError> {
    let group = group_name(input, true)?;
    let stream = required(input, "logStreamName")?;
    let (account, region) = (&cx.principal.account_id, cx.region);
    let record = existing_group(app, cx, &group)?;
    let stream_record = app
        .logs
        .stream(account, region, &group, &stream)?
        .ok_or_else(LogsError::stream_not_found)?;
    let query = GetQuery {
        start: int(input, "startTime")?,
        end: int(input, "endTime")?,
        token: text(input, "nextToken"),
        limit: limit(input, 10_000)?,
        start_from_head: input
            .get("startFromHead")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    };
    let page = app
        .logs
        .get_events(&stream_record.id, record.cutoff(cx.now), &query)?;
    let events = page
        .events
        .iter()
        .map(|e| {
            Value::structure([
                ("timestamp", Value::Int(e.timestamp)),
                ("message", Value::string(&*e.message)),
                ("ingestionTime", Value::Int(e.ingestion)),
            ])
        })
        .collect();
    Ok(Outcome::read(Value::structure([
        ("events", Value::List(events)),
        ("nextForwardToken", Value::String(page.forward)),
        ("nextBackwardToken", Value::String(page.backward)),
    ])))
}

fn filter_log_events(app: &App, cx: &CallContext<'_>, input: &Value) -> Result<Outcome, LogsError> {
    let group = group_name(input, true)?;
    let names: Option<Vec<String>> =
        input
            .get("logStreamNames")
            .and_then(Value::as_list)
            .map(|l| {
                l.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            });
    let prefix = text(input, "logStreamNamePrefix");
    if names.is_some() && prefix.is_some() {
        return Err(LogsError::InvalidParameter(
            "logStreamNames and logStreamNamePrefix are mutually exclusive".to_owned(),
        ));
    }
    if names
        .as_ref()
        .is_some_and(|n| n.is_empty() || n.len() > 100)
    {
        return Err(constraint(
            "[…]",
            "logStreamNames",
            "Member must have length less than or equal to 100",
        ));
    }
    let (account, region) = (&cx.principal.account_id, cx.region);
    let record = existing_group(app, cx, &group)?;
    let streams: Vec<(String, String)> = app
        .logs
        .streams_of(account, region, &group)?
        .into_iter()
        .filter(|(name, _)| {
            names.as_ref().is_none_or(|n| n.contains(name))
                && prefix.as_ref().is_none_or(|p| name.starts_with(p.as_str()))
        })
        .map(|(name, s)| (name, s.id))
        .collect();
    let pattern = text(input, "filterPattern").unwrap_or_default();
    let start = int(input, "startTime")?;
    let end = int(input, "endTime")?;
    let fingerprint =
        format!("{account}|{region}|{group}|{names:?}|{prefix:?}|{start:?}|{end:?}|{pattern}");
    let query = FilterQuery {
        streams,
        start,
        end,
        pattern,
        limit: limit(input, 10_000)?,
        start_from_head: input
            .get("startFromHead")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        token: text(input, "nextToken"),
        fingerprint,
    };
    let page = app.logs.filter_events(record.cutoff(cx.now), &query)?;
    let events = page
        .events
        .iter()
        .map(|(stream, e)| {
            Value::structure([
                ("logStreamName", Value::string(stream)),
                ("timestamp", Value::Int(e.timestamp)),
                ("message", Value::string(&*e.message)),
                ("ingestionTime", Value::Int(e.ingestion)),
                (
                    "eventId",
                    Value::String(key_digits((e.timestamp, e.ingestion, e.seq))),
                ),
            ])
        })
        .collect();
    let mut out = vec![
        ("events".to_owned(), Value::List(events)),
        ("searchedLogStreams".to_owned(), Value::List(Vec::new())),
    ];
    if let Some(t) = page.next_token {
        out.push(("nextToken".to_owned(), Value::String(t)));
    }
    Ok(Outcome::read(Value::Struct(out)))
}

/// Feeds stored events through the group's metric filters into the metric
/// store (§7.2). The events are already durable; a sample that fails is
/// logged, never turned into an error of PutLogEvents.
async fn emit_metrics(app: &App, cx: &CallContext<'_>, group: &str, events: &[(i64, String)]) {
    if events.is_empty() {
        return;
    }
    let (account, region) = (&cx.principal.account_id, cx.region);
    let filters = match app.logs.metric_filters(account, region, group) {
        Ok(f) => f,
        Err(err) => {
            tracing::error!(error = %err, "failed to read metric filters");
            return;
        }
    };
    let mut by_namespace: std::collections::BTreeMap<String, Vec<_>> = Default::default();
    for (_, filter) in &filters {
        let Ok(pattern) = Pattern::parse(&filter.pattern) else {
            continue;
        };
        for t in &filter.transformations {
            for (namespace, datum) in filters::samples(&pattern, t, events) {
                by_namespace.entry(namespace).or_default().push(datum);
            }
        }
    }
    for (namespace, datums) in by_namespace {
        for chunk in datums.chunks(1000) {
            let request = |data: Vec<_>| PutRequest {
                namespace: Some(namespace.clone()),
                metric_data: data,
                entity_metric_data: Vec::new(),
            };
            // All-or-nothing validation: a chunk with one bad sample (say a
            // value beyond CloudWatch's range) is retried one by one.
            let valid = match validate_put(request(chunk.to_vec()), cx.now) {
                Ok(v) => v,
                Err(_) => chunk
                    .iter()
                    .filter_map(|d| validate_put(request(vec![d.clone()]), cx.now).ok())
                    .flatten()
                    .collect(),
            };
            if valid.is_empty() {
                continue;
            }
            if let Err(err) = app.metrics.put(account, region, valid).await {
                tracing::error!(error = %err, "failed to store metric filter samples");
            }
        }
    }
}

fn transformation(input: &Value) -> Result<Transformation, LogsError> {
    let list = input
        .get("metricTransformations")
        .and_then(Value::as_list)
        .unwrap_or_default();
    if list.len() != 1 {
        return Err(constraint(
            "[…]",
            "metricTransformations",
            "Member must have length less than or equal to 1",
        ));
    }
    let t = &list[0];
    Ok(Transformation {
        metric_name: required(t, "metricName")?,
        namespace: required(t, "metricNamespace")?,
        value: required(t, "metricValue")?,
        default_value: t.get("defaultValue").and_then(Value::as_f64),
        dimensions: t
            .get("dimensions")
            .map(|d| {
                d.members()
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default(),
        unit: text(t, "unit"),
    })
}

async fn put_metric_filter(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, LogsError> {
    let group = required(input, "logGroupName")?;
    let name = required(input, "filterName")?;
    validate_stream_name(&name, "filterName")?;
    let pattern = input
        .get("filterPattern")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| {
            LogsError::InvalidParameter(
                "1 validation error detected: Value null at 'filterPattern' failed to satisfy constraint: Member must not be null".to_owned(),
            )
        })?;
    let t = transformation(input)?;
    filters::validate(&pattern, &t)?;
    let (account, region) = (&cx.principal.account_id, cx.region);
    let hold = app.logs.lock_names().await;
    existing_group(app, cx, &group)?;
    let existing = app.logs.metric_filters(account, region, &group)?;
    let previous = existing
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| f.created_ms);
    if previous.is_none() && existing.len() >= filters::MAX_PER_GROUP {
        return Err(LogsError::LimitExceeded(
            "Resource limit exceeded.".to_owned(),
        ));
    }
    let record = MetricFilterRecord {
        v: 1,
        pattern,
        created_ms: previous.unwrap_or(cx.now.millis()),
        transformations: vec![t],
        apply_on_transformed: input
            .get("applyOnTransformedLogs")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    };
    let changes = app
        .logs
        .put_filter_changes(account, region, &group, &name, &record)?;
    Ok(held(Outcome::write(Value::empty_struct(), changes), hold))
}

async fn delete_metric_filter(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, LogsError> {
    let group = required(input, "logGroupName")?;
    let name = required(input, "filterName")?;
    let (account, region) = (&cx.principal.account_id, cx.region);
    let hold = app.logs.lock_names().await;
    existing_group(app, cx, &group)?;
    if !app
        .logs
        .metric_filters(account, region, &group)?
        .iter()
        .any(|(n, _)| *n == name)
    {
        return Err(LogsError::NotFound(
            "The specified metric filter does not exist.".to_owned(),
        ));
    }
    let changes = app
        .logs
        .delete_filter_changes(account, region, &group, &name);
    Ok(held(Outcome::write(Value::empty_struct(), changes), hold))
}

fn filter_value(group: &str, name: &str, f: &MetricFilterRecord) -> Value {
    let transformations = f
        .transformations
        .iter()
        .map(|t| {
            let mut members = vec![
                ("metricName".to_owned(), Value::string(&t.metric_name)),
                ("metricNamespace".to_owned(), Value::string(&t.namespace)),
                ("metricValue".to_owned(), Value::string(&t.value)),
            ];
            if let Some(d) = t.default_value {
                members.push(("defaultValue".to_owned(), Value::Float(d)));
            }
            if !t.dimensions.is_empty() {
                members.push((
                    "dimensions".to_owned(),
                    Value::Map(
                        t.dimensions
                            .iter()
                            .map(|(k, v)| (k.clone(), Value::string(v)))
                            .collect(),
                    ),
                ));
            }
            members.push((
                "unit".to_owned(),
                Value::string(t.unit.as_deref().unwrap_or("None")),
            ));
            Value::Struct(members)
        })
        .collect();
    Value::structure([
        ("filterName", Value::string(name)),
        ("filterPattern", Value::string(&f.pattern)),
        ("metricTransformations", Value::List(transformations)),
        ("creationTime", Value::Int(f.created_ms)),
        ("logGroupName", Value::string(group)),
        (
            "applyOnTransformedLogs",
            Value::Bool(f.apply_on_transformed),
        ),
    ])
}

fn describe_metric_filters(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, LogsError> {
    let group = text(input, "logGroupName");
    let prefix = text(input, "filterNamePrefix");
    let metric_name = text(input, "metricName");
    let namespace = text(input, "metricNamespace");
    if metric_name.is_some() != namespace.is_some() {
        return Err(LogsError::InvalidParameter(
            "metricName and metricNamespace must be specified together.".to_owned(),
        ));
    }
    let limit = limit(input, 50)?.unwrap_or(50);
    let (account, region) = (&cx.principal.account_id, cx.region);
    let all = match &group {
        Some(g) => {
            existing_group(app, cx, g)?;
            app.logs
                .metric_filters(account, region, g)?
                .into_iter()
                .map(|(n, f)| (g.clone(), n, f))
                .collect()
        }
        None => app.logs.all_metric_filters(account, region)?,
    };
    let mut matched: Vec<(String, String, MetricFilterRecord)> = all
        .into_iter()
        .filter(|(_, n, f)| {
            (group.is_none() || prefix.as_ref().is_none_or(|p| n.starts_with(p.as_str())))
                && metric_name.as_ref().is_none_or(|m| {
                    f.transformations
                        .iter()
                        .any(|t| &t.metric_name == m && namespace.as_ref() == Some(&t.namespace))
                })
        })
        .collect();
    matched.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
    let filters = filters_hash(&[
        account,
        region,
        "DescribeMetricFilters",
        &format!("{group:?}|{prefix:?}|{metric_name:?}|{namespace:?}"),
    ]);
    let offset = page_token(app, cx, input, &filters)?;
    let page: Vec<Value> = matched
        .iter()
        .skip(offset)
        .take(limit)
        .map(|(g, n, f)| filter_value(g, n, f))
        .collect();
    let more = offset + limit < matched.len();
    Ok(page_out(
        app,
        cx,
        &filters,
        "metricFilters",
        page,
        more.then_some(offset + limit),
    ))
}

fn test_metric_filter(input: &Value) -> Result<Outcome, LogsError> {
    let pattern = Pattern::parse(&text(input, "filterPattern").unwrap_or_default())?;
    let messages: Vec<String> = input
        .get("logEventMessages")
        .and_then(Value::as_list)
        .unwrap_or_default()
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    if messages.is_empty() || messages.len() > 50 {
        return Err(constraint(
            "[…]",
            "logEventMessages",
            "Member must have length less than or equal to 50",
        ));
    }
    let matches = messages
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let values = pattern.extracted_values(m)?;
            Some(Value::structure([
                ("eventNumber", Value::Int(i as i64 + 1)),
                ("eventMessage", Value::string(m)),
                (
                    "extractedValues",
                    Value::Map(
                        values
                            .into_iter()
                            .map(|(k, v)| (k, Value::String(v)))
                            .collect(),
                    ),
                ),
            ]))
        })
        .collect();
    Ok(Outcome::read(Value::structure([(
        "matches",
        Value::List(matches),
    )])))
}

/// The log group a tagging call names: `resourceArn` (a log group ARN without
/// `:*`) or, for the legacy operations, `logGroupName`.
fn tagged_group(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
    by_arn: bool,
) -> Result<(String, String), LogsError> {
    let (account, region) = (&cx.principal.account_id, cx.region);
    let name = if by_arn {
        let arn = required(input, "resourceArn")?;
        let prefix = format!("arn:aws:logs:{region}:{account}:log-group:");
        match arn.strip_prefix(&prefix) {
            Some(name) if !name.is_empty() && !name.contains(':') => name.to_owned(),
            _ => {
                return Err(LogsError::NotFound(format!(
                    "The specified resource {arn} does not exist."
                )))
            }
        }
    } else {
        required(input, "logGroupName")?
    };
    existing_group(app, cx, &name)?;
    let arn = group_arn(region, account, &name);
    Ok((name, arn))
}

fn storage_error(e: impl std::fmt::Display) -> LogsError {
    LogsError::Storage(e.to_string())
}

async fn tag(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
    by_arn: bool,
) -> Result<Outcome, LogsError> {
    let tags: Vec<(String, String)> = input
        .get("tags")
        .map(|t| {
            t.members()
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    if tags.is_empty() {
        return Err(constraint(
            "{}",
            "tags",
            "Member must have length greater than or equal to 1",
        ));
    }
    validate_tags(&tags)?;
    let hold = app.logs.lock_names().await;
    let (_, arn) = tagged_group(app, cx, input, by_arn)?;
    let mut current = app.tags.get(&arn).map_err(storage_error)?;
    current.extend(tags.iter().cloned());
    if current.len() > trailwatch_core::tags::MAX_TAGS {
        return Err(LogsError::TooManyTags {
            message: "A resource can have no more than 50 tags.".to_owned(),
            resource: arn,
        });
    }
    let changes = app.tags.tag_changes(&arn, &tags).map_err(storage_error)?;
    Ok(held(Outcome::write(Value::empty_struct(), changes), hold))
}

async fn untag(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
    by_arn: bool,
) -> Result<Outcome, LogsError> {
    let keys = input.strings(if by_arn { "tagKeys" } else { "tags" });
    let hold = app.logs.lock_names().await;
    let (_, arn) = tagged_group(app, cx, input, by_arn)?;
    let changes = app.tags.untag_changes(&arn, &keys).map_err(storage_error)?;
    Ok(held(Outcome::write(Value::empty_struct(), changes), hold))
}

fn list_tags(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
    by_arn: bool,
) -> Result<Outcome, LogsError> {
    let (_, arn) = tagged_group(app, cx, input, by_arn)?;
    let tags = app.tags.get(&arn).map_err(storage_error)?;
    Ok(Outcome::read(Value::structure([(
        "tags",
        Value::Map(
            tags.into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        ),
    )])))
}

async fn create_export_task(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, LogsError> {
    let group = required(input, "logGroupName")?;
    let destination = required(input, "destination")?;
    let missing = |name: &str| {
        LogsError::InvalidParameter(format!(
            "1 validation error detected: Value null at '{name}' failed to satisfy constraint: Member must not be null"
        ))
    };
    let from = int(input, "from")?.ok_or_else(|| missing("from"))?;
    let to = int(input, "to")?.ok_or_else(|| missing("to"))?;
    let account = &cx.principal.account_id;
    let hold = app.logs.lock_names().await;
    let record = existing_group(app, cx, &group)?;
    if from > to || to < record.created_ms {
        return Err(LogsError::InvalidParameter(
            "Specified time range of '{from}' and '{to}' is not valid. Please make sure that the 'from' time is before the 'to' time and the 'to' time is after the log group creation time."
                .replace("{from}", &from.to_string())
                .replace("{to}", &to.to_string()),
        ));
    }
    if app
        .logs
        .export_tasks(account)?
        .iter()
        .any(ExportTask::is_active)
    {
        return Err(LogsError::LimitExceeded(
            "Resource limit exceeded.".to_owned(),
        ));
    }
    let task = ExportTask {
        v: 1,
        id: uuid::Uuid::new_v4().to_string(),
        name: text(input, "taskName"),
        account: account.clone(),
        region: cx.region.to_owned(),
        group,
        stream_prefix: text(input, "logStreamNamePrefix"),
        from,
        to,
        destination,
        prefix: text(input, "destinationPrefix").unwrap_or_else(|| "exportedlogs".to_owned()),
        status: "PENDING".to_owned(),
        message: None,
        created_ms: cx.now.millis(),
        completed_ms: None,
    };
    let output = Value::structure([("taskId", Value::string(&task.id))]);
    Ok(held(Outcome::write(output, vec![task.put()]), hold))
}

fn task_value(t: &ExportTask) -> Value {
    let mut members = vec![("taskId".to_owned(), Value::string(&t.id))];
    if let Some(n) = &t.name {
        members.push(("taskName".to_owned(), Value::string(n)));
    }
    members.extend([
        ("logGroupName".to_owned(), Value::string(&t.group)),
        ("from".to_owned(), Value::Int(t.from)),
        ("to".to_owned(), Value::Int(t.to)),
        ("destination".to_owned(), Value::string(&t.destination)),
        ("destinationPrefix".to_owned(), Value::string(&t.prefix)),
    ]);
    let mut status = vec![("code".to_owned(), Value::string(&t.status))];
    if let Some(m) = &t.message {
        status.push(("message".to_owned(), Value::string(m)));
    }
    members.push(("status".to_owned(), Value::Struct(status)));
    let mut info = vec![("creationTime".to_owned(), Value::Int(t.created_ms))];
    if let Some(c) = t.completed_ms {
        info.push(("completionTime".to_owned(), Value::Int(c)));
    }
    members.push(("executionInfo".to_owned(), Value::Struct(info)));
    Value::Struct(members)
}

fn describe_export_tasks(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, LogsError> {
    let id = text(input, "taskId");
    let status = text(input, "statusCode");
    let limit = limit(input, 50)?.unwrap_or(50);
    let account = &cx.principal.account_id;
    let mut tasks: Vec<ExportTask> = app
        .logs
        .export_tasks(account)?
        .into_iter()
        .filter(|t| id.as_ref().is_none_or(|i| *i == t.id))
        .filter(|t| status.as_ref().is_none_or(|s| *s == t.status))
        .collect();
    // Newest first.
    tasks.sort_by(|a, b| (b.created_ms, &b.id).cmp(&(a.created_ms, &a.id)));
    let filters = filters_hash(&[
        account,
        "DescribeExportTasks",
        &format!("{id:?}|{status:?}"),
    ]);
    let offset = page_token(app, cx, input, &filters)?;
    let page: Vec<Value> = tasks
        .iter()
        .skip(offset)
        .take(limit)
        .map(task_value)
        .collect();
    let more = offset + limit < tasks.len();
    Ok(page_out(
        app,
        cx,
        &filters,
        "exportTasks",
        page,
        more.then_some(offset + limit),
    ))
}

async fn cancel_export_task(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, LogsError> {
    let id = required(input, "taskId")?;
    let hold = app.logs.lock_names().await;
    let mut task = app
        .logs
        .export_tasks(&cx.principal.account_id)?
        .into_iter()
        .find(|t| t.id == id)
        .ok_or_else(|| {
            LogsError::NotFound("The specified export task does not exist.".to_owned())
        })?;
    match task.status.as_str() {
        "PENDING" => {
            task.status = "CANCELLED".into();
            task.message = Some("Cancelled by user".into());
            task.completed_ms = Some(cx.now.millis());
        }
        // The worker sees this before its next stream and ends the task CANCELLED.
        "RUNNING" => task.status = "PENDING_CANCEL".into(),
        other => {
            return Err(LogsError::InvalidOperation(format!(
                "The specified export task has already finished ({other})."
            )))
        }
    }
    Ok(held(
        Outcome::write(Value::empty_struct(), vec![task.put()]),
        hold,
    ))
}

/// Where a subscription delivers.
enum Target {
    /// A log group of the same account and region (by name).
    Group(String),
    /// An HTTP(S) endpoint.
    Http(String),
}

/// Resolves `destinationArn`: a log group ARN, or a destination whose
/// `targetArn` is a log group ARN or an `http(s)://` URL.
fn resolve_target(app: &App, cx: &CallContext<'_>, arn: &str) -> Result<Option<Target>, LogsError> {
    let (account, region) = (&cx.principal.account_id, cx.region);
    let group_prefix = format!("arn:aws:logs:{region}:{account}:log-group:");
    let destination_prefix = format!("arn:aws:logs:{region}:{account}:destination:");
    if let Some(group) = arn.strip_prefix(&group_prefix) {
        let group = group.strip_suffix(":*").unwrap_or(group);
        return Ok(app
            .logs
            .group(account, region, group)?
            .map(|_| Target::Group(group.to_owned())));
    }
    if let Some(name) = arn.strip_prefix(&destination_prefix) {
        let Some((_, d)) = app
            .logs
            .destinations(account, region)?
            .into_iter()
            .find(|(n, _)| n == name)
        else {
            return Ok(None);
        };
        if d.target_arn.starts_with("http://") || d.target_arn.starts_with("https://") {
            return Ok(Some(Target::Http(d.target_arn)));
        }
        if d.target_arn.starts_with(&group_prefix) {
            return resolve_target(app, cx, &d.target_arn);
        }
    }
    Ok(None)
}

fn undeliverable() -> LogsError {
    LogsError::InvalidParameter(
        "Could not deliver test message to specified destination. Check if the destination is valid."
            .to_owned(),
    )
}

async fn post(client: &reqwest::Client, url: &str, body: Vec<u8>) -> Result<(), String> {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(body)
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {}", response.status()))
    }
}

/// Delivers the matching stored events of one PutLogEvents call, one payload
/// per subscription filter (§8.2). A log group target gets the payload JSON as
/// one event, in a stream named after the source stream (created when
/// missing); an HTTP target gets the gzip JSON in the background, retried with
/// back-off. Delivered events go straight to storage: they do not trigger the
/// target group's own filters.
async fn deliver_subscriptions(
    app: &App,
    cx: &CallContext<'_>,
    group: &str,
    stream: &str,
    events: &[(i64, String)],
) {
    if events.is_empty() {
        return;
    }
    let (account, region) = (&cx.principal.account_id, cx.region);
    let filters = match app.logs.subscription_filters(account, region, group) {
        Ok(f) => f,
        Err(err) => {
            tracing::error!(error = %err, "failed to read subscription filters");
            return;
        }
    };
    for (name, filter) in filters {
        let Ok(pattern) = Pattern::parse(&filter.pattern) else {
            continue;
        };
        let matched: Vec<(String, i64, String)> = events
            .iter()
            .enumerate()
            .filter(|(_, (_, m))| pattern.matches(m))
            .map(|(i, (t, m))| (key_digits((*t, cx.now.millis(), i as u64)), *t, m.clone()))
            .collect();
        if matched.is_empty() {
            continue;
        }
        let payload = subscriptions::payload(
            account,
            group,
            stream,
            std::slice::from_ref(&name),
            &matched,
        );
        match resolve_target(app, cx, &filter.destination_arn) {
            Ok(Some(Target::Group(target))) => {
                let delivered = async {
                    let record = existing_group(app, cx, &target)?;
                    let s = app.logs.ensure_stream(account, region, &target, stream)?;
                    app.logs
                        .put_events(&record, &s, &[(cx.now.millis(), payload.to_string())])
                        .await
                }
                .await;
                if let Err(err) = delivered {
                    tracing::warn!(error = %err, filter = %name, "subscription delivery to a log group failed");
                }
            }
            Ok(Some(Target::Http(url))) => {
                let client = app.http.clone();
                let body = subscriptions::gzip(&payload);
                tokio::spawn(async move {
                    // At least once while the process lives: a few tries with back-off.
                    for delay in [0u64, 1, 5, 25, 125] {
                        tokio::time::sleep(std::time::Duration::from_secs(delay)).await;
                        if post(&client, &url, body.clone()).await.is_ok() {
                            return;
                        }
                    }
                    tracing::warn!(url = %url, "subscription delivery dropped after retries");
                });
            }
            Ok(None) => {
                tracing::warn!(filter = %name, "subscription destination no longer exists");
            }
            Err(err) => {
                tracing::error!(error = %err, "failed to resolve a subscription destination")
            }
        }
    }
}

async fn put_subscription_filter(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, LogsError> {
    let group = required(input, "logGroupName")?;
    let name = required(input, "filterName")?;
    validate_stream_name(&name, "filterName")?;
    let pattern = text(input, "filterPattern").ok_or_else(|| {
        LogsError::InvalidParameter(
            "1 validation error detected: Value null at 'filterPattern' failed to satisfy constraint: Member must not be null".to_owned(),
        )
    })?;
    Pattern::parse(&pattern)?;
    let destination_arn = required(input, "destinationArn")?;
    let distribution = text(input, "distribution").unwrap_or_else(|| "ByLogStream".to_owned());
    if !["ByLogStream", "Random"].contains(&distribution.as_str()) {
        return Err(constraint(
            &distribution,
            "distribution",
            "Member must satisfy enum value set: [Random, ByLogStream]",
        ));
    }
    let (account, region) = (&cx.principal.account_id, cx.region);
    existing_group(app, cx, &group)?;
    // The health check (§8.2): an unreachable destination refuses the filter.
    match resolve_target(app, cx, &destination_arn)? {
        None => return Err(undeliverable()),
        Some(Target::Http(url)) => {
            let body = subscriptions::gzip(&subscriptions::control_payload(
                account,
                &name,
                cx.now.millis(),
            ));
            post(&app.http, &url, body)
                .await
                .map_err(|_| undeliverable())?;
        }
        Some(Target::Group(_)) => {}
    }
    let hold = app.logs.lock_names().await;
    let existing = app.logs.subscription_filters(account, region, &group)?;
    let previous = existing.iter().find(|(n, _)| *n == name);
    if previous.is_none() && existing.len() >= subscriptions::MAX_PER_GROUP {
        return Err(LogsError::LimitExceeded(
            "Resource limit exceeded.".to_owned(),
        ));
    }
    let record = SubscriptionRecord {
        v: 1,
        pattern,
        destination_arn,
        role_arn: text(input, "roleArn"),
        distribution,
        created_ms: previous.map_or(cx.now.millis(), |(_, r)| r.created_ms),
    };
    let change = subscriptions::put_filter(
        subscriptions::filter_key(account, region, &group, &name),
        &record,
    );
    Ok(held(
        Outcome::write(Value::empty_struct(), vec![change]),
        hold,
    ))
}

fn describe_subscription_filters(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, LogsError> {
    let group = required(input, "logGroupName")?;
    let prefix = text(input, "filterNamePrefix");
    let limit = limit(input, 50)?.unwrap_or(50);
    let (account, region) = (&cx.principal.account_id, cx.region);
    existing_group(app, cx, &group)?;
    let all: Vec<(String, SubscriptionRecord)> = app
        .logs
        .subscription_filters(account, region, &group)?
        .into_iter()
        .filter(|(n, _)| prefix.as_ref().is_none_or(|p| n.starts_with(p.as_str())))
        .collect();
    let filters = filters_hash(&[
        account,
        region,
        "DescribeSubscriptionFilters",
        &group,
        &format!("{prefix:?}"),
    ]);
    let offset = page_token(app, cx, input, &filters)?;
    let page = all
        .iter()
        .skip(offset)
        .take(limit)
        .map(|(n, r)| {
            let mut members = vec![
                ("filterName".to_owned(), Value::string(n)),
                ("logGroupName".to_owned(), Value::string(&group)),
                ("filterPattern".to_owned(), Value::string(&r.pattern)),
                (
                    "destinationArn".to_owned(),
                    Value::string(&r.destination_arn),
                ),
                ("distribution".to_owned(), Value::string(&r.distribution)),
                ("creationTime".to_owned(), Value::Int(r.created_ms)),
            ];
            if let Some(role) = &r.role_arn {
                members.push(("roleArn".to_owned(), Value::string(role)));
            }
            Value::Struct(members)
        })
        .collect();
    let more = offset + limit < all.len();
    Ok(page_out(
        app,
        cx,
        &filters,
        "subscriptionFilters",
        page,
        more.then_some(offset + limit),
    ))
}

async fn delete_subscription_filter(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, LogsError> {
    let group = required(input, "logGroupName")?;
    let name = required(input, "filterName")?;
    let (account, region) = (&cx.principal.account_id, cx.region);
    let hold = app.logs.lock_names().await;
    existing_group(app, cx, &group)?;
    if !app
        .logs
        .subscription_filters(account, region, &group)?
        .iter()
        .any(|(n, _)| *n == name)
    {
        return Err(LogsError::NotFound(
            "The specified subscription filter does not exist.".to_owned(),
        ));
    }
    let change = trailwatch_core::audit::Change::delete(
        subscriptions::FILTERS,
        subscriptions::filter_key(account, region, &group, &name),
    );
    Ok(held(
        Outcome::write(Value::empty_struct(), vec![change]),
        hold,
    ))
}

fn destination_value(region: &str, account: &str, name: &str, d: &DestinationRecord) -> Value {
    let mut members = vec![
        ("destinationName".to_owned(), Value::string(name)),
        ("targetArn".to_owned(), Value::string(&d.target_arn)),
        ("roleArn".to_owned(), Value::string(&d.role_arn)),
    ];
    if let Some(p) = &d.access_policy {
        members.push(("accessPolicy".to_owned(), Value::string(p)));
    }
    members.extend([
        (
            "arn".to_owned(),
            Value::String(format!(
                "arn:aws:logs:{region}:{account}:destination:{name}"
            )),
        ),
        ("creationTime".to_owned(), Value::Int(d.created_ms)),
    ]);
    Value::Struct(members)
}

async fn put_destination(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, LogsError> {
    let name = required(input, "destinationName")?;
    validate_stream_name(&name, "destinationName")?;
    let target_arn = required(input, "targetArn")?;
    let role_arn = required(input, "roleArn")?;
    let (account, region) = (&cx.principal.account_id, cx.region);
    let hold = app.logs.lock_names().await;
    let previous = app
        .logs
        .destinations(account, region)?
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, d)| d);
    let record = DestinationRecord {
        v: 1,
        target_arn,
        role_arn,
        access_policy: previous.as_ref().and_then(|d| d.access_policy.clone()),
        created_ms: previous.map_or(cx.now.millis(), |d| d.created_ms),
    };
    let change = subscriptions::put_destination(
        subscriptions::destination_key(account, region, &name),
        &record,
    );
    let output = Value::structure([(
        "destination",
        destination_value(region, account, &name, &record),
    )]);
    Ok(held(Outcome::write(output, vec![change]), hold))
}

async fn put_destination_policy(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, LogsError> {
    let name = required(input, "destinationName")?;
    let policy = required(input, "accessPolicy")?;
    if serde_json::from_str::<serde_json::Value>(&policy).is_err() {
        return Err(LogsError::InvalidParameter(
            "The access policy is not valid JSON.".to_owned(),
        ));
    }
    let (account, region) = (&cx.principal.account_id, cx.region);
    let hold = app.logs.lock_names().await;
    let (_, mut record) = app
        .logs
        .destinations(account, region)?
        .into_iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| {
            LogsError::NotFound("The specified destination does not exist.".to_owned())
        })?;
    record.access_policy = Some(policy);
    let change = subscriptions::put_destination(
        subscriptions::destination_key(account, region, &name),
        &record,
    );
    Ok(held(
        Outcome::write(Value::empty_struct(), vec![change]),
        hold,
    ))
}

fn describe_destinations(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, LogsError> {
    let prefix = text(input, "DestinationNamePrefix");
    let limit = limit(input, 50)?.unwrap_or(50);
    let (account, region) = (&cx.principal.account_id, cx.region);
    let all: Vec<(String, DestinationRecord)> = app
        .logs
        .destinations(account, region)?
        .into_iter()
        .filter(|(n, _)| prefix.as_ref().is_none_or(|p| n.starts_with(p.as_str())))
        .collect();
    let filters = filters_hash(&[
        account,
        region,
        "DescribeDestinations",
        &format!("{prefix:?}"),
    ]);
    let offset = page_token(app, cx, input, &filters)?;
    let page = all
        .iter()
        .skip(offset)
        .take(limit)
        .map(|(n, d)| destination_value(region, account, n, d))
        .collect();
    let more = offset + limit < all.len();
    Ok(page_out(
        app,
        cx,
        &filters,
        "destinations",
        page,
        more.then_some(offset + limit),
    ))
}

async fn delete_destination(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, LogsError> {
    let name = required(input, "destinationName")?;
    let (account, region) = (&cx.principal.account_id, cx.region);
    let hold = app.logs.lock_names().await;
    if !app
        .logs
        .destinations(account, region)?
        .iter()
        .any(|(n, _)| *n == name)
    {
        return Err(LogsError::NotFound(
            "The specified destination does not exist.".to_owned(),
        ));
    }
    let change = trailwatch_core::audit::Change::delete(
        subscriptions::DESTINATIONS,
        subscriptions::destination_key(account, region, &name),
    );
    Ok(held(
        Outcome::write(Value::empty_struct(), vec![change]),
        hold,
    ))
}

/// Live Tail sessions per account at once (§11.1).
const MAX_TAIL_SESSIONS: usize = 15;

static TAIL_SESSIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// StartLiveTail (§11): an `initial-response`, a `sessionStart`, then a
/// `sessionUpdate` every second with the events ingested since (at most 500,
/// uniformly sampled beyond), until the session times out with
/// `SessionTimeoutException` or the client goes away.
fn start_live_tail(app: &App, cx: &CallContext<'_>, input: &Value) -> Result<Outcome, LogsError> {
    let identifiers = input.strings("logGroupIdentifiers");
    if identifiers.is_empty() {
        return Err(LogsError::InvalidParameter(
            "1 validation error detected: Value null at 'logGroupIdentifiers' failed to satisfy constraint: Member must not be null".to_owned(),
        ));
    }
    if identifiers.len() > 10 {
        return Err(LogsError::InvalidParameter(
            "1 validation error detected: Value at 'logGroupIdentifiers' failed to satisfy constraint: Member must have length less than or equal to 10".to_owned(),
        ));
    }
    let names = input
        .get("logStreamNames")
        .map(|_| input.strings("logStreamNames"));
    let prefixes = input
        .get("logStreamNamePrefixes")
        .map(|_| input.strings("logStreamNamePrefixes"));
    if names.is_some() && prefixes.is_some() {
        return Err(LogsError::InvalidParameter(
            "Only one of logStreamNames or logStreamNamePrefixes can be provided.".to_owned(),
        ));
    }
    if (names.is_some() || prefixes.is_some()) && identifiers.len() > 1 {
        return Err(LogsError::InvalidParameter(
            "logStreamNames and logStreamNamePrefixes can only be used with a single log group."
                .to_owned(),
        ));
    }
    let pattern_text = text(input, "logEventFilterPattern");
    let pattern = Pattern::parse(pattern_text.as_deref().unwrap_or(""))?;
    // (group name, identifier as given)
    let mut groups = Vec::new();
    for identifier in &identifiers {
        let name = group_from_identifier(identifier)?;
        existing_group(app, cx, &name)?;
        groups.push((name, identifier.clone()));
    }
    if TAIL_SESSIONS.load(std::sync::atomic::Ordering::Relaxed) >= MAX_TAIL_SESSIONS {
        return Err(LogsError::LimitExceeded(
            "Resource limit exceeded.".to_owned(),
        ));
    }
    let (account, region) = (cx.principal.account_id.clone(), cx.region.to_owned());
    let mut start = vec![
        ("requestId".to_owned(), serde_json::json!(cx.request_id)),
        (
            "sessionId".to_owned(),
            serde_json::json!(uuid::Uuid::new_v4().to_string()),
        ),
        (
            "logGroupIdentifiers".to_owned(),
            serde_json::json!(identifiers),
        ),
    ];
    if let Some(n) = &names {
        start.push(("logStreamNames".to_owned(), serde_json::json!(n)));
    }
    if let Some(p) = &prefixes {
        start.push(("logStreamNamePrefixes".to_owned(), serde_json::json!(p)));
    }
    if let Some(p) = &pattern_text {
        start.push(("logEventFilterPattern".to_owned(), serde_json::json!(p)));
    }
    let start: serde_json::Map<String, serde_json::Value> = start.into_iter().collect();
    let mut events = app.logs.subscribe_tail();
    let timeout = app.config.live_tail_timeout;
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(10);
    TAIL_SESSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tokio::spawn(async move {
        use trailwatch_protocol::eventstream;
        let send = |frame: Vec<u8>| tx.send(bytes::Bytes::from(frame));
        let session = async {
            send(eventstream::event("initial-response", b"{}"))
                .await
                .ok()?;
            let start = serde_json::Value::Object(start).to_string();
            send(eventstream::event("sessionStart", start.as_bytes()))
                .await
                .ok()?;
            let deadline = tokio::time::Instant::now() + timeout;
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            tick.tick().await;
            let mut pending: Vec<serde_json::Value> = Vec::new();
            loop {
                tokio::select! {
                    received = events.recv() => match received {
                        Ok(e) => {
                            let group = groups.iter().find(|(g, _)| *g == e.group);
                            let stream_ok = names.as_ref().is_none_or(|n| n.contains(&e.stream))
                                && prefixes.as_ref().is_none_or(|p| p.iter().any(|p| e.stream.starts_with(p.as_str())));
                            if let (Some((_, identifier)), true) = (group, stream_ok) {
                                if e.account == account && e.region == region && pattern.matches(&e.message) && pending.len() < 5000 {
                                    pending.push(serde_json::json!({
                                        "logStreamName": e.stream,
                                        "logGroupIdentifier": identifier,
                                        "message": e.message,
                                        "timestamp": e.timestamp,
                                        "ingestionTime": e.ingestion,
                                    }));
                                }
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    },
                    _ = tick.tick() => {
                        let sampled = pending.len() > 500;
                        let mut results = std::mem::take(&mut pending);
                        if sampled {
                            use rand::seq::SliceRandom;
                            let mut rng = rand::thread_rng();
                            results.shuffle(&mut rng);
                            results.truncate(500);
                            results.sort_by_key(|r| r["ingestionTime"].as_i64());
                        }
                        let update = serde_json::json!({
                            "sessionMetadata": {"sampled": sampled},
                            "sessionResults": results,
                        });
                        send(eventstream::event("sessionUpdate", update.to_string().as_bytes())).await.ok()?;
                    }
                    _ = tokio::time::sleep_until(deadline) => {
                        let _ = send(eventstream::exception(
                            "SessionTimeoutException",
                            "Session timed out after the maximum duration.",
                        )).await;
                        return Some(());
                    }
                }
            }
        };
        session.await;
        TAIL_SESSIONS.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    });
    let mut outcome = Outcome::read(Value::empty_struct());
    outcome.stream = Some(rx);
    Ok(outcome)
}

/// A Logs Insights query and its results (§10.2), kept in memory.
#[derive(Debug, Clone)]
pub struct StoredQuery {
    account: String,
    region: String,
    query_string: String,
    groups: Vec<String>,
    status: &'static str,
    create_ms: i64,
    rows: Vec<trailwatch_core::logs::insights::Row>,
    scanned: u64,
    bytes: u64,
    matched: u64,
}

/// What a `@ptr` holds, signed: (log group, log stream, event sequence).
type Pointer = (String, String, u64);

/// StartQuery (§10.1): runs the query at once over the selected groups.
fn start_query(app: &App, cx: &CallContext<'_>, input: &Value) -> Result<Outcome, LogsError> {
    use trailwatch_core::logs::insights::{self, Query};
    if let Some(lang) = text(input, "queryLanguage") {
        if lang != "CWLI" {
            return Err(LogsError::InvalidParameter(
                "Query language not supported".to_owned(),
            ));
        }
    }
    let (account, region) = (&cx.principal.account_id, cx.region);
    let mut groups: Vec<String> = text(input, "logGroupName").into_iter().collect();
    groups.extend(input.strings("logGroupNames"));
    for id in input.strings("logGroupIdentifiers") {
        groups.push(group_from_identifier(&id)?);
    }
    if groups.is_empty() || groups.len() > 50 {
        return Err(LogsError::InvalidParameter(
            "Exactly one of logGroupName, logGroupNames or logGroupIdentifiers must be given, with at most 50 log groups.".to_owned(),
        ));
    }
    let start = int(input, "startTime")?
        .ok_or_else(|| LogsError::InvalidParameter("startTime is required".into()))?;
    let end = int(input, "endTime")?
        .ok_or_else(|| LogsError::InvalidParameter("endTime is required".into()))?;
    if end < start {
        return Err(LogsError::InvalidParameter(
            "endTime must not be before startTime.".to_owned(),
        ));
    }
    let query_string = required(input, "queryString")?;
    let query = Query::parse(&query_string).map_err(|m| LogsError::Malformed {
        message: m.message,
        start: m.start,
        end: m.end,
    })?;
    query.check().map_err(|m| LogsError::Malformed {
        message: m,
        start: 0,
        end: query_string.chars().count(),
    })?;
    let limit = match int(input, "limit")? {
        None => None,
        Some(n) if (1..=100_000).contains(&n) => Some(n as usize),
        Some(n) => {
            return Err(constraint(
                &n.to_string(),
                "limit",
                "Member must have value less than or equal to 100000",
            ))
        }
    };
    let cap = match (limit, query.limit()) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => 10_000,
    };
    let mut records = Vec::new();
    let mut pointers: Vec<Pointer> = Vec::new();
    let (mut scanned, mut bytes) = (0u64, 0u64);
    for group in &groups {
        let record = app.logs.group(account, region, group)?.ok_or_else(|| {
            LogsError::NotFound(format!(
                "Log group '{group}' does not exist for account ID '{account}'"
            ))
        })?;
        for (stream, s) in app.logs.streams_of(account, region, group)? {
            for (t, ingestion, seq, message) in app.logs.events_between(
                &s.id,
                start * 1000,
                end * 1000 + 999,
                record.cutoff(cx.now),
            ) {
                scanned += 1;
                bytes += message.len() as u64;
                let mut r = insights::record(account, group, &stream, t, ingestion, &message);
                // The pointer is signed only if its row is returned (below):
                // here it is an index into `pointers`.
                r.insert("@ptr".into(), pointers.len().to_string());
                pointers.push((group.clone(), stream.clone(), seq));
                records.push(r);
            }
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    {
        let mut queries = app.queries.lock().unwrap_or_else(|p| p.into_inner());
        let active = queries
            .values()
            .filter(|q| q.account == *account && matches!(q.status, "Scheduled" | "Running"))
            .count();
        if active >= MAX_ACTIVE_QUERIES {
            return Err(LogsError::LimitExceeded(format!(
                "Account maximum query concurrency limit of [{MAX_ACTIVE_QUERIES}] reached."
            )));
        }
        queries.insert(
            id.clone(),
            StoredQuery {
                account: account.clone(),
                region: region.to_owned(),
                query_string,
                groups,
                status: "Running",
                create_ms: cx.now.millis(),
                rows: Vec::new(),
                scanned,
                bytes,
                matched: 0,
            },
        );
    }
    // The evaluation runs beside the request; GetQueryResults sees Running
    // until it ends, and a StopQuery in between wins.
    let queries = app.queries.clone();
    let query_id = id.clone();
    let (tokens, now) = (app.tokens.clone(), cx.now);
    let options = insights::RunOptions {
        cap,
        range: Some((
            start.saturating_mul(1000),
            end.saturating_mul(1000).saturating_add(999),
        )),
        now_ms: now.millis(),
        previous: Vec::new(),
    };
    tokio::task::spawn_blocking(move || {
        let mut outcome = insights::run(&query, records, options);
        for row in &mut outcome.rows {
            for (_, value) in row.iter_mut().filter(|(f, _)| f == "@ptr") {
                if let Some(ptr) = value.parse::<usize>().ok().and_then(|i| pointers.get(i)) {
                    *value = tokens.issue("log-record", ptr, now);
                }
            }
        }
        let mut queries = queries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(q) = queries.get_mut(&query_id).filter(|q| q.status == "Running") {
            q.status = "Complete";
            q.rows = outcome.rows;
            q.matched = outcome.matched;
        }
    });
    Ok(Outcome::read(Value::structure([(
        "queryId",
        Value::String(id),
    )])))
}

/// Logs Insights queries by id, shared with the tasks that run them.
pub type Queries = Arc<std::sync::Mutex<std::collections::HashMap<String, StoredQuery>>>;

/// Scheduled or running queries per account (§10.1).
const MAX_ACTIVE_QUERIES: usize = 100;

fn find_query(app: &App, cx: &CallContext<'_>, id: &str) -> Result<StoredQuery, LogsError> {
    app.queries
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(id)
        .filter(|q| q.account == cx.principal.account_id && q.region == cx.region)
        .cloned()
        .ok_or_else(|| LogsError::NotFound(format!("Query {id} does not exist.")))
}

fn get_query_results(app: &App, cx: &CallContext<'_>, input: &Value) -> Result<Outcome, LogsError> {
    let q = find_query(app, cx, &required(input, "queryId")?)?;
    let rows = q
        .rows
        .iter()
        .map(|row| {
            Value::List(
                row.iter()
                    .map(|(f, v)| {
                        Value::structure([("field", Value::string(f)), ("value", Value::string(v))])
                    })
                    .collect(),
            )
        })
        .collect();
    Ok(Outcome::read(Value::structure([
        ("queryLanguage", Value::string("CWLI")),
        ("results", Value::List(rows)),
        (
            "statistics",
            Value::structure([
                ("recordsMatched", Value::Float(q.matched as f64)),
                ("recordsScanned", Value::Float(q.scanned as f64)),
                ("bytesScanned", Value::Float(q.bytes as f64)),
                ("logGroupsScanned", Value::Float(q.groups.len() as f64)),
                ("estimatedRecordsSkipped", Value::Float(0.0)),
                ("estimatedBytesSkipped", Value::Float(0.0)),
            ]),
        ),
        ("status", Value::string(q.status)),
    ])))
}

fn stop_query(app: &App, cx: &CallContext<'_>, input: &Value) -> Result<Outcome, LogsError> {
    let id = required(input, "queryId")?;
    find_query(app, cx, &id)?;
    let mut queries = app.queries.lock().unwrap_or_else(|p| p.into_inner());
    match queries.get_mut(&id) {
        Some(q) if matches!(q.status, "Scheduled" | "Running") => {
            q.status = "Cancelled";
            q.rows.clear();
            Ok(Outcome::read(Value::structure([(
                "success",
                Value::Bool(true),
            )])))
        }
        _ => Err(LogsError::InvalidParameter(format!(
            "Query {id} is not running"
        ))),
    }
}

fn describe_queries(app: &App, cx: &CallContext<'_>, input: &Value) -> Result<Outcome, LogsError> {
    let group = text(input, "logGroupName");
    let status = text(input, "status");
    let mut all: Vec<(String, StoredQuery)> = app
        .queries
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(_, q)| q.account == cx.principal.account_id && q.region == cx.region)
        .filter(|(_, q)| group.as_ref().is_none_or(|g| q.groups.contains(g)))
        .filter(|(_, q)| status.as_ref().is_none_or(|s| s == q.status))
        .map(|(id, q)| (id.clone(), q.clone()))
        .collect();
    all.sort_by(|a, b| (b.1.create_ms, &b.0).cmp(&(a.1.create_ms, &a.0)));
    let queries = all
        .iter()
        .map(|(id, q)| {
            Value::structure([
                ("queryLanguage", Value::string("CWLI")),
                ("queryId", Value::string(id)),
                ("queryString", Value::string(&q.query_string)),
                ("status", Value::string(q.status)),
                ("createTime", Value::Int(q.create_ms)),
                (
                    "logGroupName",
                    Value::string(q.groups.first().map_or("", String::as_str)),
                ),
            ])
        })
        .collect();
    Ok(Outcome::read(Value::structure([(
        "queries",
        Value::List(queries),
    )])))
}

fn get_log_record(app: &App, cx: &CallContext<'_>, input: &Value) -> Result<Outcome, LogsError> {
    let pointer = required(input, "logRecordPointer")?;
    let (ptr_group, ptr_stream, ptr_seq): Pointer = app
        .tokens
        .open(&pointer, "log-record", cx.now, 7 * 86_400)
        .ok_or_else(|| {
            LogsError::InvalidParameter("The specified logRecordPointer is invalid.".to_owned())
        })?;
    let (account, region) = (&cx.principal.account_id, cx.region);
    let gone = || LogsError::NotFound("The specified log record does not exist.".to_owned());
    let group = app
        .logs
        .group(account, region, &ptr_group)?
        .ok_or_else(gone)?;
    let stream = app
        .logs
        .stream(account, region, &ptr_group, &ptr_stream)?
        .ok_or_else(gone)?;
    let (t, ingestion, message) = app
        .logs
        .event(&stream.id, ptr_seq, group.cutoff(cx.now))
        .ok_or_else(gone)?;
    let record = trailwatch_core::logs::insights::record(
        account,
        &ptr_group,
        &ptr_stream,
        t,
        ingestion,
        &message,
    );
    Ok(Outcome::read(Value::structure([(
        "logRecord",
        Value::Map(
            record
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        ),
    )])))
}

/// GetLogGroupFields (§10.2): the share of events around `time` (or in the
/// last 15 minutes) that carry each field, system fields included.
fn get_log_group_fields(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, LogsError> {
    let group = group_name(input, true)?;
    let (account, region) = (&cx.principal.account_id, cx.region);
    let record = existing_group(app, cx, &group)?;
    let (lo, hi) = match int(input, "time")? {
        Some(t) => (t * 1000 - 8 * 60_000, t * 1000 + 8 * 60_000),
        None => (cx.now.millis() - 15 * 60_000, cx.now.millis()),
    };
    let mut counts: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    let mut total = 0u64;
    for (stream, s) in app.logs.streams_of(account, region, &group)? {
        for (t, ingestion, _, message) in
            app.logs
                .events_between(&s.id, lo, hi, record.cutoff(cx.now))
        {
            total += 1;
            let r = trailwatch_core::logs::insights::record(
                account, &group, &stream, t, ingestion, &message,
            );
            for field in r.keys() {
                *counts.entry(field.clone()).or_default() += 1;
            }
        }
    }
    let mut fields: Vec<(String, i64)> = counts
        .into_iter()
        .map(|(f, n)| (f, (n * 100 / total.max(1)) as i64))
        .collect();
    fields.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let list = fields
        .into_iter()
        .map(|(name, percent)| {
            Value::structure([
                ("name", Value::String(name)),
                ("percent", Value::Int(percent)),
            ])
        })
        .collect();
    Ok(Outcome::read(Value::structure([(
        "logGroupFields",
        Value::List(list),
    )])))
}
