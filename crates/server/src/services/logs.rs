//! CloudWatch Logs operations (`spec/logs.md` §2–5, §10): log groups,
//! streams, retention, PutLogEvents, GetLogEvents and FilterLogEvents, and
//! Logs Insights queries and query definitions. Group, stream and definition
//! changes commit with the call's audit record; events are durable in the log
//! store's WAL before PutLogEvents answers; a query is durable before
//! StartQuery answers its id, and its results once it finishes.

use std::sync::Arc;
use trailwatch_core::logs::definitions::{
    self, PutQueryDefinition, QueryDefinition, QueryParameter,
};
use trailwatch_core::logs::export::ExportTask;
use trailwatch_core::logs::filters::{self, MetricFilterRecord, Transformation};
use trailwatch_core::logs::insights::{self, Row};
use trailwatch_core::logs::model::{
    constraint, group_arn, group_from_identifier, stream_arn, validate_group_name,
    validate_retention, validate_stream_name, validate_tags, GROUP_CLASSES,
};
use trailwatch_core::logs::pattern::Pattern;
use trailwatch_core::logs::queries::{QueryHistory, QueryRecord, QueryStatus};
use trailwatch_core::logs::store::{key_digits, FilterQuery, GetQuery, GroupRecord, TailEvent};
use trailwatch_core::logs::subscriptions::{self, DestinationRecord, SubscriptionRecord};
use trailwatch_core::logs::LogsError;
use trailwatch_core::metrics::{validate_put, PutRequest};
use trailwatch_core::tags::Tags;
use trailwatch_core::token::{filters_hash, TokenCodec};

use trailwatch_protocol::{ApiError, Value};
use trailwatch_types::Timestamp;

use super::{CallContext, Outcome};
use crate::app::App;

const OPERATIONS: [&str; 41] = [
    "PutQueryDefinition",
    "DescribeQueryDefinitions",
    "DeleteQueryDefinition",
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
        "DescribeLogGroups" => describe_log_groups(app, cx, input).await,
        "PutRetentionPolicy" => retention(app, cx, input, true).await,
        "DeleteRetentionPolicy" => retention(app, cx, input, false).await,
        "CreateLogStream" => create_log_stream(app, cx, input).await,
        "DeleteLogStream" => delete_log_stream(app, cx, input).await,
        "DescribeLogStreams" => describe_log_streams(app, cx, input).await,
        "PutLogEvents" => put_log_events(app, cx, input).await,
        "GetLogEvents" => get_log_events(app, cx, input).await,
        "PutMetricFilter" => put_metric_filter(app, cx, input).await,
        "DescribeMetricFilters" => describe_metric_filters(app, cx, input),
        "DeleteMetricFilter" => delete_metric_filter(app, cx, input).await,
        "TestMetricFilter" => test_metric_filter(input),
        "StartLiveTail" => start_live_tail(app, cx, input),
        "StartQuery" => start_query(app, cx, input).await,
        "GetQueryResults" => get_query_results(app, cx, input).await,
        "StopQuery" => stop_query(app, cx, input),
        "DescribeQueries" => describe_queries(app, cx, input),
        "GetLogRecord" => get_log_record(app, cx, input).await,
        "GetLogGroupFields" => get_log_group_fields(app, cx, input).await,
        "PutQueryDefinition" => put_query_definition(app, cx, input).await,
        "DescribeQueryDefinitions" => describe_query_definitions(app, cx, input),
        "DeleteQueryDefinition" => delete_query_definition(app, cx, input).await,
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
        _ => filter_log_events(app, cx, input).await,
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
    bounded(input, "limit", max)
}

/// The integer `member` (a page size), which must lie in 1..=`max`.
fn bounded(input: &Value, member: &str, max: i64) -> Result<Option<usize>, LogsError> {
    match int(input, member)? {
        None => Ok(None),
        Some(n) if (1..=max).contains(&n) => Ok(Some(n as usize)),
        Some(n) => Err(constraint(
            &n.to_string(),
            member,
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
    aged_page_token(app, cx, input, filters, 24 * 3600)
}

/// The offset in a `nextToken` bound to `filters` and at most `max_age_secs`
/// old (0 without one); a forged, foreign or expired one is refused (§1.3).
fn aged_page_token(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
    filters: &str,
    max_age_secs: i64,
) -> Result<usize, LogsError> {
    match text(input, "nextToken") {
        None => Ok(0),
        Some(t) => app
            .tokens
            .open::<usize>(&t, filters, cx.now, max_age_secs)
            .ok_or_else(invalid_token),
    }
}

fn invalid_token() -> LogsError {
    LogsError::InvalidParameter("The specified nextToken is invalid.".into())
}

/// A state-changing answer that keeps the name lock until its changes commit.
fn held(mut outcome: Outcome, hold: tokio::sync::OwnedMutexGuard<()>) -> Outcome {
    outcome.hold = Some(super::Hold::Names(hold));
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

async fn describe_log_groups(
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
    // Stored bytes of the page's groups (describing with a pattern omits it).
    let mut stored_bytes: std::collections::HashMap<&str, u64> = Default::default();
    if pattern.is_none() {
        for (name, g) in groups.iter().skip(offset).take(limit) {
            let cutoff = g.cutoff(cx.now);
            let mut total = 0;
            for (_, s) in app.logs.streams_of(account, region, name)? {
                total += app.logs.stream_stats(&s.id, cutoff).await?.stored_bytes;
            }
            stored_bytes.insert(name.as_str(), total);
        }
    }
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
            let stored = stored_bytes.get(name.as_str()).copied().unwrap_or(0);
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

async fn describe_log_streams(
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
    let mut streams = Vec::new();
    for (name, s) in app.logs.streams_of(account, region, &group)? {
        if prefix.as_ref().is_none_or(|p| name.starts_with(p.as_str())) {
            let stats = app.logs.stream_stats(&s.id, cutoff).await?;
            streams.push((name, s, stats));
        }
    }
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
    // The trailwatch agent names its batches `<agent id>:<sequence>`.
    let batch = cx
        .batch_id
        .and_then(|b| b.rsplit_once(':'))
        .and_then(|(agent, seq)| Some((agent, seq.parse::<u64>().ok()?)))
        .filter(|(agent, _)| !agent.is_empty() && agent.len() <= 64);
    let (rejected, stored) = app
        .logs
        .put_batch(&record, &stream_record, &events, batch)
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

async fn get_log_events(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, LogsError> {
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
        .get_events(&stream_record.id, record.cutoff(cx.now), &query)
        .await?;
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

async fn filter_log_events(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, LogsError> {
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
    let page = app
        .logs
        .filter_events(record.cutoff(cx.now), &query)
        .await?;
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

/// A Logs Insights query (§10.2): its durable record, and its rows while
/// they are only in memory.
#[derive(Debug, Clone)]
pub struct StoredQuery {
    record: QueryRecord,
    /// Rows of a query that finished in this process and whose rows object is
    /// not written yet (or could not be). `None`: read them from the store.
    rows: Option<Arc<Vec<Row>>>,
}

/// What a `@ptr` holds, signed: (log group, log stream, event sequence).
type Pointer = (String, String, u64);

/// StartQuery (§10.1): runs the query beside the request over the selected
/// groups; the query is durable before its id is answered.
async fn start_query(app: &App, cx: &CallContext<'_>, input: &Value) -> Result<Outcome, LogsError> {
    use trailwatch_core::logs::insights::Query;
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
    let query_string = required(input, "queryString")?;
    let query = Query::parse(&query_string).map_err(|m| LogsError::Malformed {
        message: m.message,
        start: m.start,
        end: m.end,
    })?;
    match query.source() {
        // SOURCE selects the groups when the request names none (§10.6).
        Some(source) if groups.is_empty() => {
            groups = app
                .logs
                .groups(account, region)?
                .into_iter()
                .filter(|(name, g)| {
                    (source.prefixes.is_empty()
                        || source.prefixes.iter().any(|p| name.starts_with(p.as_str())))
                        && source.class.as_ref().is_none_or(|c| *c == g.class)
                })
                .map(|(name, _)| name)
                .take(50)
                .collect();
        }
        Some(_) => {
            return Err(LogsError::InvalidParameter(
                "A query that starts with SOURCE must not also name log groups.".to_owned(),
            ))
        }
        None if groups.is_empty() || groups.len() > 50 => {
            return Err(LogsError::InvalidParameter(
                "Exactly one of logGroupName, logGroupNames or logGroupIdentifiers must be given, with at most 50 log groups.".to_owned(),
            ));
        }
        None => {}
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
    let cap = row_cap(limit, &query);
    let src = sources(app, account, region, &groups, (start, end), cx.now)?;
    let record = QueryRecord {
        v: 1,
        id: uuid::Uuid::new_v4().to_string(),
        account: account.clone(),
        region: region.to_owned(),
        query_string,
        groups,
        start_s: start,
        end_s: end,
        limit,
        status: QueryStatus::Running,
        create_ms: cx.now.millis(),
        finish_ms: None,
        scanned: 0,
        bytes: 0,
        matched: 0,
        rows: None,
    };
    let id = record.id.clone();
    {
        let mut queries = app.queries.lock().unwrap_or_else(|p| p.into_inner());
        let active = queries
            .values()
            .filter(|q| q.record.account == *account && q.record.status.is_active())
            .count();
        if active >= MAX_ACTIVE_QUERIES {
            return Err(LogsError::LimitExceeded(format!(
                "Account maximum query concurrency limit of [{MAX_ACTIVE_QUERIES}] reached."
            )));
        }
        queries.insert(
            id.clone(),
            StoredQuery {
                record: record.clone(),
                rows: None,
            },
        );
    }
    // Durable before the id is answered, so a restart runs the query again
    // instead of losing it. Committed here rather than with the audit record:
    // the evaluation rewrites this record when it ends, and a later commit of
    // this one must not overwrite that.
    if let Err(err) = app.query_history.save(&record) {
        app.queries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        return Err(err);
    }
    evaluate_in_background(app, id.clone(), query, src, cap, cx.now);
    Ok(Outcome::read(Value::structure([(
        "queryId",
        Value::String(id),
    )])))
}

/// The effective row cap (§10.1): the smaller of the request's `limit` and
/// the query's `limit` command, 10,000 when neither is given.
fn row_cap(limit: Option<usize>, query: &trailwatch_core::logs::insights::Query) -> usize {
    match (limit, query.limit()) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => 10_000,
    }
}

/// Where an Insights query reads: the streams of its groups, each with its
/// group's retention cutoff, and the time range (epoch ms, inclusive).
struct Sources {
    account: String,
    /// (group, stream name, stream id, cutoff).
    streams: Vec<(String, String, String, i64)>,
    range: (i64, i64),
}

/// The sources of `groups` between `start` and `end` (epoch seconds, both
/// inclusive) as of `now`; every group must exist (§10.1).
fn sources(
    app: &App,
    account: &str,
    region: &str,
    groups: &[String],
    (start, end): (i64, i64),
    now: Timestamp,
) -> Result<Sources, LogsError> {
    let mut streams = Vec::new();
    for group in groups {
        let record = app.logs.group(account, region, group)?.ok_or_else(|| {
            LogsError::NotFound(format!(
                "Log group '{group}' does not exist for account ID '{account}'"
            ))
        })?;
        for (name, s) in app.logs.streams_of(account, region, group)? {
            streams.push((group.clone(), name, s.id, record.cutoff(now)));
        }
    }
    Ok(Sources {
        account: account.to_owned(),
        streams,
        range: (
            start.saturating_mul(1000),
            end.saturating_mul(1000).saturating_add(999),
        ),
    })
}

/// What a feed of events into a runner has gathered.
struct Fed {
    part: insights::Part,
    scanned: u64,
    bytes: u64,
}

/// Blocks fetched per batch: enough to keep both cores busy between
/// progress reports.
const QUERY_BATCH_BLOCKS: usize = 32;

/// Feeds every visible event of `src` in `range` to `runner`: blocks are
/// fetched a batch at a time and decoded and fed on blocking threads, each
/// with its own part, merged in reading order. Events carry `@ptr` =
/// `{stream index}:{sequence}` when `ptrs`. After each batch `progress` sees
/// what is gathered and says whether to go on (false: the query was
/// stopped); `pause` waits after each batch (zero but in tests). Queries
/// that only count by time read block directories and
/// timestamps, never text.
async fn feed(
    logs: &trailwatch_core::logs::LogStore,
    runner: &Arc<insights::Runner>,
    src: &Arc<Sources>,
    range: (i64, i64),
    ptrs: bool,
    pause: std::time::Duration,
    mut progress: impl FnMut(&Fed) -> bool,
) -> Result<Fed, LogsError> {
    let mut fed = Fed {
        part: runner.part(),
        scanned: 0,
        bytes: 0,
    };
    let mut planned = Vec::new();
    let mut memory = Vec::new();
    for (k, (_, _, id, cutoff)) in src.streams.iter().enumerate() {
        let (blocks, events) = logs.plan(&[id.as_str()], range.0, range.1, *cutoff);
        let lo = range.0.max(*cutoff);
        planned.extend(blocks.into_iter().map(|b| (k, lo, b)));
        memory.extend(events.into_iter().map(|(_, e)| (k, lo, e)));
    }
    let by_time = runner.counts_by_time();
    if by_time {
        // A block within the range and one key counts from its directory
        // entry; the others need their times, not their text.
        planned.retain(|(_, lo, b)| {
            let m = b.meta();
            let key = runner.time_key(m.min.0);
            let whole = m.min.0 >= *lo && m.max.0 <= range.1 && runner.time_key(m.max.0) == key;
            if whole {
                runner.add_count(&mut fed.part, key, u64::from(m.count));
                fed.scanned += u64::from(m.count);
                fed.bytes += m.bytes;
            }
            !whole
        });
    }
    let mut batches = planned.chunks(QUERY_BATCH_BLOCKS);
    let mut next = match batches.next() {
        Some(batch) => Some((batch, fetch_batch(logs, batch, by_time).await?)),
        None => None,
    };
    while let Some((batch, fetched)) = next.take() {
        let work: Vec<_> = batch.iter().cloned().zip(fetched).collect();
        let (r, sr) = (runner.clone(), src.clone());
        let compute =
            tokio::task::spawn_blocking(move || feed_blocks(&r, &sr, range.1, ptrs, &work));
        // The next batch is read while this one is fed.
        let prefetch = async {
            match batches.next() {
                Some(batch) => {
                    Ok::<_, LogsError>(Some((batch, fetch_batch(logs, batch, by_time).await?)))
                }
                None => Ok(None),
            }
        };
        let (got, fetched) = futures::join!(compute, prefetch);
        let got = got.map_err(|e| LogsError::Storage(e.to_string()))??;
        next = fetched?;
        fed.scanned += got.scanned;
        fed.bytes += got.bytes;
        runner.merge(&mut fed.part, got.part);
        if !progress(&fed) {
            return Ok(fed);
        }
        // Test-only (hidden flag): lets a test see a query between batches.
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    for (k, lo, e) in memory {
        if (lo..=range.1).contains(&e.timestamp) {
            let seen = (e.timestamp, e.ingestion, e.seq, &*e.message);
            feed_event(runner, src, &mut fed, k, seen, ptrs);
        }
    }
    Ok(fed)
}

/// An event as a query reads it: (timestamp, ingestion, sequence, message).
type Seen<'a> = (i64, i64, u64, &'a str);

/// The blocks of a batch, or only their columns.
async fn fetch_batch(
    logs: &trailwatch_core::logs::LogStore,
    batch: &[(usize, i64, trailwatch_core::logs::store::PlannedBlock)],
    columns: bool,
) -> Result<Vec<bytes::Bytes>, LogsError> {
    let blocks: Vec<_> = batch.iter().map(|(_, _, b)| b).collect();
    logs.fetch_blocks(&blocks, columns).await
}

fn feed_event(
    runner: &insights::Runner,
    src: &Sources,
    fed: &mut Fed,
    k: usize,
    (timestamp, ingestion, seq, message): Seen<'_>,
    ptrs: bool,
) {
    fed.scanned += 1;
    fed.bytes += message.len() as u64;
    if runner.counts_by_time() {
        runner.add_count(&mut fed.part, runner.time_key(timestamp), 1);
        return;
    }
    let (group, stream, _, _) = &src.streams[k];
    let build = |p: &insights::Projection| {
        insights::record_for(
            p,
            &src.account,
            group,
            stream,
            timestamp,
            ingestion,
            message,
        )
    };
    // Most events fail a leading filter: decided from the raw message when
    // that is enough, else on a record of the filter's fields only.
    let raw = if group.starts_with("/aws/lambda/") {
        None
    } else {
        runner.passes_raw(message)
    };
    let prefiltered = match (raw, runner.prefilter()) {
        (Some(false), _) => return,
        (Some(true), _) => true,
        (None, Some(p)) if !runner.passes(build(p)) => return,
        (None, Some(_)) => true,
        (None, None) => false,
    };
    let mut r = build(runner.projection());
    if ptrs {
        r.insert("@ptr".into(), format!("{k}:{seq}"));
    }
    if prefiltered {
        runner.feed_passed(&mut fed.part, r);
    } else {
        runner.feed(&mut fed.part, r);
    }
}

type Work = (
    (usize, i64, trailwatch_core::logs::store::PlannedBlock),
    bytes::Bytes,
);

/// One batch of blocks over the machine's cores: contiguous runs per thread,
/// merged in order.
fn feed_blocks(
    runner: &insights::Runner,
    src: &Sources,
    hi: i64,
    ptrs: bool,
    work: &[Work],
) -> Result<Fed, LogsError> {
    let one = |((k, lo, block), bytes): &Work, scratch: &mut Vec<u8>| -> Result<Fed, LogsError> {
        let mut fed = Fed {
            part: runner.part(),
            scanned: 0,
            bytes: 0,
        };
        if runner.counts_by_time() {
            // Only the columns were fetched (see `feed`).
            let (times, _, _, ends) = block.decode_columns(bytes)?;
            count_by_time(runner, &mut fed, &times, &ends, (*lo, hi));
            return Ok(fed);
        }
        let b = block.decode_into(bytes, scratch)?;
        for i in 0..b.len() {
            if (*lo..=hi).contains(&b.timestamps[i]) {
                let seen = (b.timestamps[i], b.ingestions[i], b.seqs[i], b.message(i));
                feed_event(runner, src, &mut fed, *k, seen, ptrs);
            }
        }
        Ok(fed)
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, work.len().max(1));
    // Threads take blocks in turn from a shared counter (blocks differ in
    // cost), and the parts are merged in block order.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let run = || -> Result<Vec<(usize, Fed)>, LogsError> {
        let mut out = Vec::new();
        let mut scratch = Vec::new();
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(w) = work.get(i) else {
                return Ok(out);
            };
            out.push((i, one(w, &mut scratch)?));
        }
    };
    let mut parts = if threads == 1 {
        run()?
    } else {
        std::thread::scope(|sc| {
            let handles: Vec<_> = (0..threads).map(|_| sc.spawn(run)).collect();
            let mut all = Vec::new();
            for h in handles {
                all.extend(
                    h.join()
                        .map_err(|_| LogsError::Storage("an insights reader panicked".into()))??,
                );
            }
            Ok::<_, LogsError>(all)
        })?
    };
    parts.sort_by_key(|(i, _)| *i);
    let mut all = Fed {
        part: runner.part(),
        scanned: 0,
        bytes: 0,
    };
    for (_, got) in parts {
        all.scanned += got.scanned;
        all.bytes += got.bytes;
        runner.merge(&mut all.part, got.part);
    }
    Ok(all)
}

/// Counts a block's events by time key from its (sorted) timestamps. Keys
/// never decrease with time, so each key's run is found by galloping and
/// bisection: a few key evaluations per bin, not one per event.
fn count_by_time(
    runner: &insights::Runner,
    fed: &mut Fed,
    times: &[i64],
    ends: &[usize],
    (lo, hi): (i64, i64),
) {
    let from = times.partition_point(|t| *t < lo);
    let to = times.partition_point(|t| *t <= hi);
    let mut i = from;
    while i < to {
        let key = runner.time_key(times[i]);
        // Invariant: times[last] has `key`; times[end] (if < to) has not.
        let (mut last, mut step) = (i, 1);
        let mut end = loop {
            let probe = last + step;
            if probe >= to {
                break to;
            }
            if runner.time_key(times[probe]) != key {
                break probe;
            }
            last = probe;
            step *= 2;
        };
        while end - last > 1 {
            let mid = last + (end - last) / 2;
            if runner.time_key(times[mid]) == key {
                last = mid;
            } else {
                end = mid;
            }
        }
        runner.add_count(&mut fed.part, key, (end - i) as u64);
        fed.scanned += (end - i) as u64;
        let start = if i == 0 { 0 } else { ends[i - 1] };
        fed.bytes += (ends[end - 1] - start) as u64;
        i = end;
    }
}

/// Signs the provisional `@ptr`s (`{stream index}:{sequence}`) of rows.
fn sign_pointers(rows: &mut [insights::Row], src: &Sources, tokens: &TokenCodec, now: Timestamp) {
    for row in rows {
        for (_, value) in row.iter_mut().filter(|(f, _)| f == "@ptr") {
            let Some((k, seq)) = value.split_once(':') else {
                continue;
            };
            let (Ok(k), Ok(seq)) = (k.parse::<usize>(), seq.parse::<u64>()) else {
                continue;
            };
            if let Some((group, stream, _, _)) = src.streams.get(k) {
                let ptr: Pointer = (group.clone(), stream.clone(), seq);
                *value = tokens.issue("log-record", &ptr, now);
            }
        }
    }
}

/// Partial results are published at most this often while a query runs.
const PARTIAL_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Evaluates query `id` beside the caller, then finishes it: Complete with
/// its rows in memory at once, then durably (rows object, then record). A
/// StopQuery (or timeout) that came first wins and nothing is stored. While
/// it runs, GetQueryResults sees partial rows and statistics (§10.2).
fn evaluate_in_background(
    app: &App,
    id: String,
    query: insights::Query,
    src: Sources,
    cap: usize,
    now: Timestamp,
) {
    let queries = app.queries.clone();
    let history = app.query_history.clone();
    let (tokens, clock, logs) = (app.tokens.clone(), app.clock.clone(), app.logs.clone());
    let delay = app.config.insights_delay;
    tokio::spawn(async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let runner = Arc::new(insights::Runner::new(&query, src.range, now.millis()));
        let src = Arc::new(src);
        let ptrs = !runner.aggregates();
        let running = |queries: &Queries| {
            queries
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&id)
                .is_some_and(|q| q.record.status == QueryStatus::Running)
        };
        // The first batch is published at once, later ones at most every
        // PARTIAL_EVERY.
        let mut published: Option<std::time::Instant> = None;
        let evaluation = async {
            let fed = feed(&logs, &runner, &src, src.range, ptrs, delay, |fed| {
                if !running(&queries) {
                    return false;
                }
                let due = published.is_none_or(|p| p.elapsed() >= PARTIAL_EVERY);
                if due && fed.part.len() <= 100_000 {
                    published = Some(std::time::Instant::now());
                    let mut partial = runner.finish(fed.part.clone(), cap, &[]);
                    sign_pointers(&mut partial.rows, &src, &tokens, now);
                    let mut queries = queries.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(q) = queries
                        .get_mut(&id)
                        .filter(|q| q.record.status == QueryStatus::Running)
                    {
                        q.record.scanned = fed.scanned;
                        q.record.bytes = fed.bytes;
                        q.record.matched = partial.matched;
                        q.rows = Some(Arc::new(partial.rows));
                    }
                }
                true
            })
            .await?;
            // `diff` compares with the equal-length period just before (§10.6).
            let previous = if query.uses_previous_period() {
                let (lo, hi) = src.range;
                let earlier = (lo.saturating_sub(hi - lo + 1), lo - 1);
                previous_records(&logs, &runner, &src, earlier).await?
            } else {
                Vec::new()
            };
            let (runner, src, tokens) = (runner.clone(), src.clone(), tokens.clone());
            let scanned = (fed.scanned, fed.bytes);
            tokio::task::spawn_blocking(move || {
                let mut outcome = runner.finish(fed.part, cap, &previous);
                sign_pointers(&mut outcome.rows, &src, &tokens, now);
                (outcome, scanned)
            })
            .await
            .map_err(|e| LogsError::Storage(e.to_string()))
        }
        .await;
        let finished_ms = clock.now().millis();
        let (mut record, rows) = {
            let mut queries = queries.lock().unwrap_or_else(|p| p.into_inner());
            let Some(q) = queries
                .get_mut(&id)
                .filter(|q| q.record.status == QueryStatus::Running)
            else {
                return;
            };
            q.record.finish_ms = Some(finished_ms);
            match evaluation {
                Ok((outcome, (scanned, bytes))) => {
                    q.record.status = QueryStatus::Complete;
                    q.record.matched = outcome.matched;
                    q.record.scanned = scanned;
                    q.record.bytes = bytes;
                    q.rows = Some(Arc::new(outcome.rows));
                }
                Err(err) => {
                    tracing::error!(query_id = %id, error = %err, "insights query evaluation failed");
                    q.record.status = QueryStatus::Failed;
                    q.rows = None;
                }
            }
            (q.record.clone(), q.rows.clone())
        };
        let stored = match &rows {
            Some(rows) => history.finish(&mut record, rows).await,
            None => history.save(&record),
        };
        match stored {
            Ok(()) => {
                // Durable now: memory keeps the record only.
                let mut queries = queries.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(q) = queries.get_mut(&id) {
                    q.record.rows = record.rows;
                    q.rows = None;
                }
            }
            // The rows stay in memory and the stored record says Running, so
            // a restart runs the query again.
            Err(err) => {
                tracing::error!(query_id = %id, error = %err, "failed to store insights query results")
            }
        }
    });
}

/// The records of the period `range` (for `diff`), with the fields the
/// query reads.
async fn previous_records(
    logs: &trailwatch_core::logs::LogStore,
    runner: &insights::Runner,
    src: &Sources,
    range: (i64, i64),
) -> Result<Vec<insights::Record>, LogsError> {
    let mut out = Vec::new();
    for (group, stream, id, cutoff) in &src.streams {
        let (blocks, memory) = logs.plan(&[id.as_str()], range.0, range.1, *cutoff);
        let lo = range.0.max(*cutoff);
        let mut push = |t: i64, ingestion: i64, message: &str| {
            if (lo..=range.1).contains(&t) {
                out.push(insights::record_for(
                    runner.projection(),
                    &src.account,
                    group,
                    stream,
                    t,
                    ingestion,
                    message,
                ));
            }
        };
        let all: Vec<_> = blocks.iter().collect();
        for (b, bytes) in blocks.iter().zip(logs.fetch_blocks(&all, false).await?) {
            let block = b.decode(&bytes)?;
            for i in 0..block.len() {
                push(block.timestamps[i], block.ingestions[i], block.message(i));
            }
        }
        for (_, e) in memory {
            push(e.timestamp, e.ingestion, &e.message);
        }
    }
    Ok(out)
}

/// Loads the stored queries of the last 7 days (`App::open` calls this).
/// Those that were Scheduled or Running when the server stopped had their id
/// answered, so they run again from scratch, or time out when they started
/// more than 60 minutes ago; one whose log group is gone fails.
/// Writes `events` (ascending `(timestamp ms, message)`) to `stream` of
/// `group` as the server itself, the way PutLogEvents would: the stream is
/// created when missing, and metric filters, subscriptions and Live Tail see
/// the events. Used by trail delivery to CloudWatch Logs (`spec/cloudtrail.md`
/// §2.7). Batches stay inside the PutLogEvents limits.
pub(crate) async fn put_system_events(
    app: &App,
    account: &str,
    region: &str,
    group: &str,
    stream: &str,
    events: &[(i64, String)],
) -> Result<(), String> {
    let record = app
        .logs
        .group(account, region, group)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "ResourceNotFoundException".to_owned())?;
    let stream_record = app
        .logs
        .ensure_stream(account, region, group, stream)
        .map_err(|e| e.to_string())?;
    let principal = trailwatch_core::identity::Principal::root(account, "");
    let now = app.clock.now();
    let cx = CallContext {
        principal: &principal,
        region,
        request_id: "",
        now,
        body_bytes: (0, 0),
        batch_id: None,
    };
    let mut start = 0;
    while start < events.len() {
        // 1 MB and 10,000 events per batch, as PutLogEvents allows (26 bytes
        // of overhead per event).
        let mut end = start;
        let mut bytes = 0;
        while end < events.len() && end - start < 10_000 {
            let size = events[end].1.len() + 26;
            if end > start && bytes + size > 1_048_576 {
                break;
            }
            bytes += size;
            end += 1;
        }
        let batch = &events[start..end];
        let (_, stored) = app
            .logs
            .put_events(&record, &stream_record, batch)
            .await
            .map_err(|e| e.to_string())?;
        let stored_events = &batch[stored];
        emit_metrics(app, &cx, group, stored_events).await;
        deliver_subscriptions(app, &cx, group, stream, stored_events).await;
        app.logs.publish_tail(|| {
            stored_events
                .iter()
                .map(|(t, m)| TailEvent {
                    account: account.to_owned(),
                    region: region.to_owned(),
                    group: group.to_owned(),
                    stream: stream.to_owned(),
                    timestamp: *t,
                    ingestion: now.millis(),
                    message: m.clone(),
                })
                .collect()
        });
        start = end;
    }
    Ok(())
}

pub(crate) async fn resume_queries(app: &App) -> Result<(), LogsError> {
    let now = app.clock.now();
    let mut interrupted = Vec::new();
    {
        let mut queries = app.queries.lock().unwrap_or_else(|p| p.into_inner());
        for mut record in app.query_history.all()? {
            if record.expired(now.millis()) {
                continue; // maintenance deletes it
            }
            if record.status.is_active() {
                if record.timed_out(now.millis()) {
                    record.time_out(now.millis());
                    app.query_history.save(&record)?;
                } else {
                    interrupted.push(record.clone());
                }
            }
            queries.insert(record.id.clone(), StoredQuery { record, rows: None });
        }
    }
    if !interrupted.is_empty() {
        tracing::info!(
            queries = interrupted.len(),
            "running again the insights queries a stop interrupted"
        );
    }
    for record in interrupted {
        if let Err(err) = rerun_query(app, &record, now).await {
            tracing::info!(query_id = %record.id, error = %err, "interrupted insights query failed");
            let mut failed = record;
            failed.status = QueryStatus::Failed;
            failed.finish_ms = Some(now.millis());
            app.query_history.save(&failed)?;
            let mut queries = app.queries.lock().unwrap_or_else(|p| p.into_inner());
            queries.insert(
                failed.id.clone(),
                StoredQuery {
                    record: failed,
                    rows: None,
                },
            );
        }
    }
    Ok(())
}

/// Runs a stored query again from scratch, as of `now`.
async fn rerun_query(app: &App, record: &QueryRecord, now: Timestamp) -> Result<(), LogsError> {
    use trailwatch_core::logs::insights::Query;
    // It parsed when it was accepted; a parser that changed since may refuse it.
    let query =
        Query::parse(&record.query_string).map_err(|m| LogsError::InvalidParameter(m.message))?;
    query.check().map_err(LogsError::InvalidParameter)?;
    let cap = row_cap(record.limit, &query);
    let src = sources(
        app,
        &record.account,
        &record.region,
        &record.groups,
        (record.start_s, record.end_s),
        now,
    )?;
    evaluate_in_background(app, record.id.clone(), query, src, cap, now);
    Ok(())
}

/// Forgets queries older than 7 days, in memory and in storage, and the rows
/// objects a crash left without a record; times out the queries still running
/// 60 minutes after they started (the maintenance worker calls this). Returns
/// how many queries were forgotten.
pub(crate) async fn prune_queries(app: &App) -> Result<usize, LogsError> {
    let now_ms = app.clock.now().millis();
    time_out_queries(app, now_ms, |_| true)?;
    app.queries
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|_, q| !q.record.expired(now_ms));
    let forgotten = app.query_history.prune(now_ms).await?;
    let swept = app.query_history.sweep_orphans().await?;
    if swept > 0 {
        tracing::info!(
            objects = swept,
            "deleted insights rows left without a query"
        );
    }
    Ok(forgotten)
}

/// Makes Timeout, in memory and durably, the queries picked by `which` that
/// are still Scheduled or Running 60 minutes after they started (§10.1).
/// Their evaluation, when it ends, sees they no longer run and stores nothing,
/// the way it does for StopQuery. Runs on every read of a query as well as on
/// the maintenance tick, so no reader sees a query overstay its time.
fn time_out_queries(
    app: &App,
    now_ms: i64,
    which: impl Fn(&QueryRecord) -> bool,
) -> Result<(), LogsError> {
    let timed_out: Vec<QueryRecord> = {
        let mut queries = app.queries.lock().unwrap_or_else(|p| p.into_inner());
        queries
            .values_mut()
            .filter(|q| q.record.timed_out(now_ms) && which(&q.record))
            .map(|q| {
                q.record.time_out(now_ms);
                q.rows = None;
                q.record.clone()
            })
            .collect()
    };
    // Saved outside the lock, like StartQuery's record. Should this fail, a
    // restart still finds the record Running past its time and times it out.
    for record in &timed_out {
        tracing::info!(query_id = %record.id, "insights query timed out");
        app.query_history.save(record)?;
    }
    Ok(())
}

/// Logs Insights queries by id, shared with the tasks that run them.
pub type Queries = Arc<std::sync::Mutex<std::collections::HashMap<String, StoredQuery>>>;

/// Scheduled or running queries per account (§10.1).
const MAX_ACTIVE_QUERIES: usize = 100;

/// Rows per GetQueryResults page, and the largest `maxItems` (§10.2).
const MAX_RESULTS_PAGE: usize = 10_000;
/// GetQueryResults tokens expire after an hour (§1.3).
const RESULTS_TOKEN_SECS: i64 = 3600;

/// The caller's query `id`, timed out first if its time is up.
fn find_query(app: &App, cx: &CallContext<'_>, id: &str) -> Result<StoredQuery, LogsError> {
    let (account, region) = (&cx.principal.account_id, cx.region);
    time_out_queries(app, cx.now.millis(), |r| {
        r.id == id && r.account == *account && r.region == region
    })?;
    app.queries
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(id)
        .filter(|q| q.record.account == cx.principal.account_id && q.record.region == cx.region)
        .filter(|q| !q.record.expired(cx.now.millis()))
        .cloned()
        .ok_or_else(|| LogsError::NotFound(format!("Query {id} does not exist.")))
}

async fn get_query_results(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, LogsError> {
    let id = required(input, "queryId")?;
    let max = bounded(input, "maxItems", MAX_RESULTS_PAGE as i64)?.unwrap_or(MAX_RESULTS_PAGE);
    let q = find_query(app, cx, &id)?;
    // The token holds the offset of the next row and is bound to this query
    // only, so the caller may change maxItems from page to page. Tokens are
    // issued only for a finished query's rows, which never change, so an
    // offset stays valid for as long as the token does.
    let filters = filters_hash(&[&cx.principal.account_id, cx.region, "GetQueryResults", &id]);
    let offset = aged_page_token(app, cx, input, &filters, RESULTS_TOKEN_SECS)?;
    let rows = match q.rows {
        Some(rows) => rows,
        None => Arc::new(app.query_history.rows(&q.record).await?),
    };
    let total = rows.len();
    // Only a token issued for other rows (none this server hands out) can
    // point past the end.
    let page = rows.get(offset..).ok_or_else(invalid_token)?;
    // Partial rows of a running query change until it ends: they are shown a
    // page at most, without a token into them.
    let next = (page.len() > max && !q.record.status.is_active()).then(|| offset + max);
    let results = page
        .iter()
        .take(max)
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
    let q = q.record;
    let mut out = vec![
        ("queryLanguage", Value::string("CWLI")),
        ("results", Value::List(results)),
        (
            "statistics",
            Value::structure([
                ("recordsMatched", Value::Float(q.matched as f64)),
                ("recordsScanned", Value::Float(q.scanned as f64)),
                ("bytesScanned", Value::Float(q.bytes as f64)),
                ("logGroupsScanned", Value::Float(q.groups.len() as f64)),
                ("estimatedRecordsSkipped", Value::Float(0.0)),
                ("estimatedBytesSkipped", Value::Float(0.0)),
                // Rows of the whole result, not of this page.
                ("resultCount", Value::Float(total as f64)),
            ]),
        ),
        ("status", Value::string(q.status.as_str())),
    ];
    if let Some(next) = next {
        out.push((
            "nextToken",
            Value::String(app.tokens.issue(&filters, &next, cx.now)),
        ));
    }
    Ok(Outcome::read(Value::structure(out)))
}

fn stop_query(app: &App, cx: &CallContext<'_>, input: &Value) -> Result<Outcome, LogsError> {
    let id = required(input, "queryId")?;
    find_query(app, cx, &id)?;
    let mut queries = app.queries.lock().unwrap_or_else(|p| p.into_inner());
    match queries.get_mut(&id) {
        Some(q) if q.record.status.is_active() => {
            q.record.status = QueryStatus::Cancelled;
            q.record.finish_ms = Some(cx.now.millis());
            q.rows = None;
            // The evaluation, seeing Cancelled, stores nothing; the stored
            // record changes with this call's audit record.
            let change = QueryHistory::save_change(&q.record)?;
            Ok(Outcome::write(
                Value::structure([("success", Value::Bool(true))]),
                vec![change],
            ))
        }
        _ => Err(LogsError::InvalidParameter(format!(
            "Query {id} is not running"
        ))),
    }
}

fn describe_queries(app: &App, cx: &CallContext<'_>, input: &Value) -> Result<Outcome, LogsError> {
    let group = text(input, "logGroupName");
    let status = text(input, "status");
    // Every query here is CWLI (StartQuery refuses the others).
    let language = text(input, "queryLanguage");
    let max = bounded(input, "maxResults", 1000)?.unwrap_or(1000);
    let now_ms = cx.now.millis();
    time_out_queries(app, now_ms, |r| {
        r.account == cx.principal.account_id && r.region == cx.region
    })?;
    let mut all: Vec<QueryRecord> = app
        .queries
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .map(|q| &q.record)
        .filter(|q| q.account == cx.principal.account_id && q.region == cx.region)
        .filter(|q| !q.expired(now_ms))
        .filter(|q| group.as_ref().is_none_or(|g| q.groups.contains(g)))
        .filter(|q| status.as_ref().is_none_or(|s| s == q.status.as_str()))
        .filter(|_| language.as_deref().is_none_or(|l| l == "CWLI"))
        .cloned()
        .collect();
    all.sort_by(|a, b| (b.create_ms, &b.id).cmp(&(a.create_ms, &a.id)));
    let filters = filters_hash(&[
        &cx.principal.account_id,
        cx.region,
        "DescribeQueries",
        &format!("{group:?}|{status:?}|{language:?}"),
    ]);
    let offset = page_token(app, cx, input, &filters)?;
    let page = all
        .iter()
        .skip(offset)
        .take(max)
        .map(|q| {
            Value::structure([
                ("queryLanguage", Value::string("CWLI")),
                ("queryId", Value::string(&q.id)),
                ("queryString", Value::string(&q.query_string)),
                ("status", Value::string(q.status.as_str())),
                ("createTime", Value::Int(q.create_ms)),
                (
                    "logGroupName",
                    Value::string(q.groups.first().map_or("", String::as_str)),
                ),
            ])
        })
        .collect();
    let more = offset + max < all.len();
    Ok(page_out(
        app,
        cx,
        &filters,
        "queries",
        page,
        more.then_some(offset + max),
    ))
}

/// The `parameters` of a PutQueryDefinition.
fn query_parameters(input: &Value) -> Result<Vec<QueryParameter>, LogsError> {
    let list = input
        .get("parameters")
        .and_then(Value::as_list)
        .unwrap_or_default();
    list.iter()
        .enumerate()
        .map(|(i, p)| {
            let name = text(p, "name").ok_or_else(|| {
                LogsError::InvalidParameter(format!(
                    "1 validation error detected: Value null at 'parameters.{}.member.name' failed to satisfy constraint: Member must not be null",
                    i + 1
                ))
            })?;
            Ok(QueryParameter {
                name,
                default_value: text(p, "defaultValue"),
                description: text(p, "description"),
            })
        })
        .collect()
}

/// PutQueryDefinition (§10.2): creates a definition, or replaces every field
/// of the one named by `queryDefinitionId`.
async fn put_query_definition(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, LogsError> {
    let put = PutQueryDefinition {
        id: text(input, "queryDefinitionId"),
        name: required(input, "name")?,
        query_string: required(input, "queryString")?,
        language: text(input, "queryLanguage"),
        log_group_names: input.strings("logGroupNames"),
        parameters: query_parameters(input)?,
        client_token: text(input, "clientToken"),
    };
    definitions::validate(&put)?;
    let (account, region) = (&cx.principal.account_id, cx.region);
    // Held until the changes commit: the limit and the clientToken check hold.
    let hold = app.logs.lock_names().await;
    let put = app
        .query_definitions
        .put(account, region, put, cx.now.millis())?;
    Ok(held(
        Outcome::write(
            Value::structure([("queryDefinitionId", Value::String(put.id))]),
            put.changes,
        ),
        hold,
    ))
}

fn definition_value(d: &QueryDefinition) -> Value {
    let mut members = vec![
        ("queryLanguage".to_owned(), Value::string(&d.language)),
        ("queryDefinitionId".to_owned(), Value::string(&d.id)),
        ("name".to_owned(), Value::string(&d.name)),
        ("queryString".to_owned(), Value::string(&d.query_string)),
        ("lastModified".to_owned(), Value::Int(d.last_modified_ms)),
        (
            "logGroupNames".to_owned(),
            Value::List(d.log_group_names.iter().map(Value::string).collect()),
        ),
    ];
    if !d.parameters.is_empty() {
        let parameters = d
            .parameters
            .iter()
            .map(|p| {
                let mut m = vec![("name".to_owned(), Value::string(&p.name))];
                if let Some(v) = &p.default_value {
                    m.push(("defaultValue".to_owned(), Value::string(v)));
                }
                if let Some(v) = &p.description {
                    m.push(("description".to_owned(), Value::string(v)));
                }
                Value::Struct(m)
            })
            .collect();
        members.push(("parameters".to_owned(), Value::List(parameters)));
    }
    Value::Struct(members)
}

/// DescribeQueryDefinitions (§10.2): by name (then id), optionally those
/// whose name starts with a prefix or of one query language.
fn describe_query_definitions(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, LogsError> {
    let language = text(input, "queryLanguage");
    if let Some(l) = &language {
        definitions::validate_language(l)?;
    }
    let prefix = text(input, "queryDefinitionNamePrefix");
    if let Some(p) = &prefix {
        definitions::validate_name_prefix(p)?;
    }
    let max = bounded(input, "maxResults", 1000)?.unwrap_or(1000);
    let (account, region) = (&cx.principal.account_id, cx.region);
    let mut all = app.query_definitions.list(account, region)?;
    all.retain(|d| {
        prefix
            .as_ref()
            .is_none_or(|p| d.name.starts_with(p.as_str()))
            && language.as_ref().is_none_or(|l| *l == d.language)
    });
    all.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    let filters = filters_hash(&[
        account,
        region,
        "DescribeQueryDefinitions",
        &format!("{prefix:?}|{language:?}"),
    ]);
    let offset = page_token(app, cx, input, &filters)?;
    let page = all
        .iter()
        .skip(offset)
        .take(max)
        .map(definition_value)
        .collect();
    let more = offset + max < all.len();
    Ok(page_out(
        app,
        cx,
        &filters,
        "queryDefinitions",
        page,
        more.then_some(offset + max),
    ))
}

/// DeleteQueryDefinition (§10.2).
async fn delete_query_definition(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, LogsError> {
    let id = required(input, "queryDefinitionId")?;
    definitions::validate_id(&id)?;
    let hold = app.logs.lock_names().await;
    let changes = app
        .query_definitions
        .delete_changes(&cx.principal.account_id, cx.region, &id)?;
    Ok(held(
        Outcome::write(Value::structure([("success", Value::Bool(true))]), changes),
        hold,
    ))
}

async fn get_log_record(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, LogsError> {
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
        .await?
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
async fn get_log_group_fields(
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
        for (t, ingestion, _, message) in app
            .logs
            .events_between(&s.id, lo, hi, record.cutoff(cx.now))
            .await?
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;
    use trailwatch_core::identity::{KeyRing, Principal, RootCredentials};
    use trailwatch_protocol::json::{from_json, to_json};
    use trailwatch_types::ManualClock;

    const ACCOUNT: &str = "111122223333";
    const NOW_MS: i64 = 1_767_225_600_000;

    async fn open(dir: &Path, delay_ms: u64) -> Arc<App> {
        open_with_clock(dir, delay_ms).await.0
    }

    /// An app whose clock (returned beside it) stands at `NOW_MS` until moved.
    async fn open_with_clock(dir: &Path, delay_ms: u64) -> (Arc<App>, Arc<ManualClock>) {
        let root = RootCredentials {
            account_id: ACCOUNT.to_owned(),
            access_key_id: "AKIDTEST".to_owned(),
            secret_access_key: "secret".to_owned(),
        };
        let mut config = crate::app::AppConfig::new(dir, ACCOUNT);
        config.insights_delay = std::time::Duration::from_millis(delay_ms);
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(NOW_MS)));
        let app = App::open(config, clock.clone(), KeyRing::with_root(&root))
            .await
            .unwrap();
        (app, clock)
    }

    /// Dispatches `op` as the root principal and commits its changes the way
    /// the edge does (without the audit record), returning the output as JSON.
    async fn call(
        app: &App,
        op: &str,
        input: serde_json::Value,
    ) -> Result<serde_json::Value, ApiError> {
        let principal = Principal::root(ACCOUNT, "AKIDTEST");
        let cx = CallContext {
            principal: &principal,
            region: "us-east-1",
            request_id: "r",
            now: app.clock.now(),
            body_bytes: (0, 0),
            batch_id: None,
        };
        let mut outcome = dispatch(app, &cx, op, &from_json(input)).await?;
        let changes = std::mem::take(&mut outcome.changes);
        app.audit.catalog().commit(&changes).unwrap();
        Ok(outcome
            .output
            .map_or(serde_json::Value::Null, |v| to_json(&v)))
    }

    async fn code(app: &App, op: &str, input: serde_json::Value) -> String {
        call(app, op, input).await.unwrap_err().code
    }

    #[tokio::test]
    async fn query_definitions_put_describe_update_delete() {
        let dir = tempfile::tempdir().unwrap();
        let app = open(dir.path(), 0).await;
        let created = call(
            &app,
            "PutQueryDefinition",
            json!({"name": "errors", "queryString": "filter @message like /ERROR/",
                "logGroupNames": ["app"],
                "parameters": [{"name": "level", "defaultValue": "ERROR"}]}),
        )
        .await
        .unwrap();
        let id = created["queryDefinitionId"].as_str().unwrap().to_owned();
        for name in ["b", "a"] {
            call(
                &app,
                "PutQueryDefinition",
                json!({"name": name, "queryString": "limit 1", "queryLanguage": "PPL"}),
            )
            .await
            .unwrap();
        }
        let all = call(&app, "DescribeQueryDefinitions", json!({}))
            .await
            .unwrap();
        let names: Vec<&str> = all["queryDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b", "errors"]);
        let errors = &all["queryDefinitions"][2];
        assert_eq!(errors["lastModified"], NOW_MS);
        assert_eq!(errors["queryLanguage"], "CWLI");
        assert_eq!(
            errors["parameters"],
            json!([{"name": "level", "defaultValue": "ERROR"}])
        );
        let first = call(&app, "DescribeQueryDefinitions", json!({"maxResults": 2}))
            .await
            .unwrap();
        assert_eq!(first["queryDefinitions"].as_array().unwrap().len(), 2);
        let rest = call(
            &app,
            "DescribeQueryDefinitions",
            json!({"maxResults": 2, "nextToken": first["nextToken"]}),
        )
        .await
        .unwrap();
        assert_eq!(rest["queryDefinitions"][0]["name"], "errors");
        assert!(rest.get("nextToken").is_none());
        let ppl = call(
            &app,
            "DescribeQueryDefinitions",
            json!({"queryLanguage": "PPL"}),
        )
        .await
        .unwrap();
        assert_eq!(ppl["queryDefinitions"].as_array().unwrap().len(), 2);
        // An update replaces everything: no groups, no parameters left.
        call(
            &app,
            "PutQueryDefinition",
            json!({"queryDefinitionId": id, "name": "errs", "queryString": "limit 2"}),
        )
        .await
        .unwrap();
        let errs = call(
            &app,
            "DescribeQueryDefinitions",
            json!({"queryDefinitionNamePrefix": "err"}),
        )
        .await
        .unwrap();
        assert_eq!(
            errs["queryDefinitions"],
            json!([{"queryLanguage": "CWLI", "queryDefinitionId": id, "name": "errs",
                 "queryString": "limit 2", "lastModified": NOW_MS, "logGroupNames": []}])
        );
        for (input, expected) in [
            (json!({"name": "x"}), "InvalidParameterException"),
            (
                json!({"name": "", "queryString": "q"}),
                "InvalidParameterException",
            ),
            (
                json!({"name": "x", "queryString": "q", "parameters": [{"defaultValue": "v"}]}),
                "InvalidParameterException",
            ),
            (
                json!({"name": "x", "queryString": "q", "queryDefinitionId": "nope"}),
                "ResourceNotFoundException",
            ),
        ] {
            assert_eq!(code(&app, "PutQueryDefinition", input).await, expected);
        }
        assert_eq!(
            code(
                &app,
                "DescribeQueryDefinitions",
                json!({"maxResults": 1001})
            )
            .await,
            "InvalidParameterException"
        );
        assert_eq!(
            call(
                &app,
                "DeleteQueryDefinition",
                json!({"queryDefinitionId": id})
            )
            .await
            .unwrap(),
            json!({"success": true})
        );
        assert_eq!(
            code(
                &app,
                "DeleteQueryDefinition",
                json!({"queryDefinitionId": id})
            )
            .await,
            "ResourceNotFoundException"
        );
        // Durable: a restart sees the two left.
        drop(app);
        let app = open(dir.path(), 0).await;
        let all = call(&app, "DescribeQueryDefinitions", json!({}))
            .await
            .unwrap();
        assert_eq!(all["queryDefinitions"].as_array().unwrap().len(), 2);
    }

    async fn seed(app: &App) {
        call(app, "CreateLogGroup", json!({"logGroupName": "app"}))
            .await
            .unwrap();
        call(
            app,
            "CreateLogStream",
            json!({"logGroupName": "app", "logStreamName": "s"}),
        )
        .await
        .unwrap();
        call(
            app,
            "PutLogEvents",
            json!({"logGroupName": "app", "logStreamName": "s", "logEvents": [
                {"timestamp": NOW_MS - 2000, "message": "one"},
                {"timestamp": NOW_MS - 1000, "message": "two"}]}),
        )
        .await
        .unwrap();
    }

    async fn start(app: &App) -> String {
        let out = call(
            app,
            "StartQuery",
            json!({"logGroupName": "app", "startTime": NOW_MS / 1000 - 60,
                "endTime": NOW_MS / 1000, "queryString": "fields @message"}),
        )
        .await
        .unwrap();
        out["queryId"].as_str().unwrap().to_owned()
    }

    async fn wait_done(app: &App, id: &str) -> serde_json::Value {
        for _ in 0..500 {
            let out = call(app, "GetQueryResults", json!({"queryId": id}))
                .await
                .unwrap();
            if out["status"] != "Running" {
                return out;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("query {id} still running");
    }

    /// Waits until query `id`'s rows are durable: a query answers Complete
    /// from memory while its rows object and record are still being written.
    async fn wait_durable(app: &App, id: &str) {
        for _ in 0..500 {
            let stored = app.query_history.all().unwrap();
            if stored.iter().any(|r| r.id == id && r.rows.is_some()) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("query {id} never stored its rows");
    }

    fn messages(out: &serde_json::Value) -> Vec<String> {
        out["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .find(|c| c["field"] == "@message")
                    .map(|c| c["value"].as_str().unwrap().to_owned())
                    .unwrap()
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queries_answer_after_a_restart_and_interrupted_ones_run_again() {
        let dir = tempfile::tempdir().unwrap();
        let app = open(dir.path(), 0).await;
        seed(&app).await;
        let done = start(&app).await;
        let before = wait_done(&app, &done).await;
        assert_eq!(before["status"], "Complete");
        assert_eq!(messages(&before), ["two", "one"]);
        app.shutdown().await;
        drop(app);
        // A long pause keeps this one Running until the "stop".
        let app = open(dir.path(), 60_000).await;
        let interrupted = start(&app).await;
        let cancelled = start(&app).await;
        call(&app, "StopQuery", json!({"queryId": cancelled}))
            .await
            .unwrap();
        assert_eq!(
            code(&app, "StopQuery", json!({"queryId": cancelled})).await,
            "InvalidParameterException"
        );
        app.shutdown().await;
        drop(app);
        let app = open(dir.path(), 0).await;
        let after = call(&app, "GetQueryResults", json!({"queryId": done}))
            .await
            .unwrap();
        assert_eq!(after, before);
        let rerun = wait_done(&app, &interrupted).await;
        assert_eq!(rerun["status"], "Complete");
        assert_eq!(messages(&rerun), ["two", "one"]);
        let listed = call(&app, "DescribeQueries", json!({})).await.unwrap();
        let statuses: std::collections::BTreeMap<String, String> = listed["queries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| {
                (
                    q["queryId"].as_str().unwrap().to_owned(),
                    q["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(statuses[&done], "Complete");
        assert_eq!(statuses[&cancelled], "Cancelled");
        assert_eq!(statuses[&interrupted], "Complete");
        let page = call(&app, "DescribeQueries", json!({"maxResults": 2}))
            .await
            .unwrap();
        assert_eq!(page["queries"].as_array().unwrap().len(), 2);
        assert!(page.get("nextToken").is_some());
    }

    #[tokio::test]
    async fn queries_expire_after_seven_days() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(NOW_MS)));
        let root = RootCredentials {
            account_id: ACCOUNT.to_owned(),
            access_key_id: "AKIDTEST".to_owned(),
            secret_access_key: "secret".to_owned(),
        };
        let app = App::open(
            crate::app::AppConfig::new(dir.path(), ACCOUNT),
            clock.clone(),
            KeyRing::with_root(&root),
        )
        .await
        .unwrap();
        seed(&app).await;
        let id = start(&app).await;
        wait_done(&app, &id).await;
        // Otherwise the results being stored could come back after the prune.
        wait_durable(&app, &id).await;
        clock.advance_millis(trailwatch_core::logs::queries::RETENTION_MS + 1);
        assert_eq!(
            code(&app, "GetQueryResults", json!({"queryId": id})).await,
            "ResourceNotFoundException"
        );
        assert_eq!(prune_queries(&app).await.unwrap(), 1);
        assert!(app.query_history.all().unwrap().is_empty());
    }

    async fn message(app: &App, op: &str, input: serde_json::Value) -> (String, String) {
        let err = call(app, op, input).await.unwrap_err();
        (err.code, err.message)
    }

    /// A finished query over `n` events `e0`…, oldest first.
    async fn finished_query_of(app: &App, n: i64) -> (String, serde_json::Value) {
        call(app, "CreateLogGroup", json!({"logGroupName": "many"}))
            .await
            .unwrap();
        call(
            app,
            "CreateLogStream",
            json!({"logGroupName": "many", "logStreamName": "s"}),
        )
        .await
        .unwrap();
        let events: Vec<_> = (0..n)
            .map(|i| json!({"timestamp": NOW_MS - 60_000 + i, "message": format!("e{i}")}))
            .collect();
        call(
            app,
            "PutLogEvents",
            json!({"logGroupName": "many", "logStreamName": "s", "logEvents": events}),
        )
        .await
        .unwrap();
        let id = call(
            app,
            "StartQuery",
            json!({"logGroupName": "many", "startTime": NOW_MS / 1000 - 120,
                "endTime": NOW_MS / 1000, "queryString": "fields @message | sort @timestamp asc"}),
        )
        .await
        .unwrap()["queryId"]
            .as_str()
            .unwrap()
            .to_owned();
        let all = wait_done(app, &id).await;
        assert_eq!(all["status"], "Complete");
        wait_durable(app, &id).await;
        (id, all)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn query_results_come_in_pages_of_max_items() {
        let dir = tempfile::tempdir().unwrap();
        let (app, clock) = open_with_clock(dir.path(), 0).await;
        let (id, all) = finished_query_of(&app, 25).await;
        let expected: Vec<String> = (0..25).map(|i| format!("e{i}")).collect();
        assert_eq!(messages(&all), expected);
        assert!(all.get("nextToken").is_none());
        assert_eq!(all["statistics"]["resultCount"], 25.0);
        assert_eq!(all["statistics"]["logGroupsScanned"], 1.0);
        assert_eq!(all["statistics"]["estimatedRecordsSkipped"], 0.0);
        assert_eq!(all["statistics"]["estimatedBytesSkipped"], 0.0);
        let mut pages = Vec::new();
        let mut token = None;
        loop {
            let mut input = json!({"queryId": id, "maxItems": 10});
            if let Some(t) = &token {
                input["nextToken"] = json!(t);
            }
            let page = call(&app, "GetQueryResults", input).await.unwrap();
            // The count is of the whole result on every page.
            assert_eq!(page["statistics"]["resultCount"], 25.0);
            assert_eq!(page["status"], "Complete");
            pages.push(page["results"].as_array().unwrap().clone());
            match page.get("nextToken") {
                Some(t) => {
                    assert_ne!(Some(t), token.as_ref(), "a token is never repeated");
                    token = Some(t.clone());
                }
                None => break,
            }
        }
        assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 5]);
        assert_eq!(
            json!(pages.concat()),
            all["results"],
            "the pages are exactly the rows of the unpaged call"
        );
        // maxItems may change between pages: the token holds a row offset.
        let first = call(
            &app,
            "GetQueryResults",
            json!({"queryId": id, "maxItems": 20}),
        )
        .await
        .unwrap();
        let rest = call(
            &app,
            "GetQueryResults",
            json!({"queryId": id, "maxItems": 3, "nextToken": first["nextToken"]}),
        )
        .await
        .unwrap();
        assert_eq!(messages(&rest), ["e20", "e21", "e22"]);
        let exact = call(
            &app,
            "GetQueryResults",
            json!({"queryId": id, "maxItems": 25}),
        )
        .await
        .unwrap();
        assert!(exact.get("nextToken").is_none());

        for (max, word, bound) in [
            (0, "greater", 1),
            (10_001, "less", 10_000),
            (-5, "greater", 1),
        ] {
            assert_eq!(
                message(&app, "GetQueryResults", json!({"queryId": id, "maxItems": max})).await,
                (
                    "InvalidParameterException".to_owned(),
                    format!("1 validation error detected: Value '{max}' at 'maxItems' failed to satisfy constraint: Member must have value {word} than or equal to {bound}")
                )
            );
        }
        assert_eq!(
            code(
                &app,
                "GetQueryResults",
                json!({"queryId": id, "maxItems": "ten"})
            )
            .await,
            "InvalidParameterException"
        );
        let invalid = (
            "InvalidParameterException".to_owned(),
            "The specified nextToken is invalid.".to_owned(),
        );
        let token = first["nextToken"].as_str().unwrap().to_owned();
        let mut forged = token.clone().into_bytes();
        forged[5] = if forged[5] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        // A token of another query does not page this one.
        let other = call(
            &app,
            "StartQuery",
            json!({"logGroupName": "many", "startTime": NOW_MS / 1000 - 120,
                "endTime": NOW_MS / 1000, "queryString": "fields @message"}),
        )
        .await
        .unwrap()["queryId"]
            .as_str()
            .unwrap()
            .to_owned();
        wait_done(&app, &other).await;
        let other_page = call(
            &app,
            "GetQueryResults",
            json!({"queryId": other, "maxItems": 1}),
        )
        .await
        .unwrap();
        for bad in [
            json!("garbage"),
            json!(""),
            json!(forged),
            other_page["nextToken"].clone(),
        ] {
            assert_eq!(
                message(
                    &app,
                    "GetQueryResults",
                    json!({"queryId": id, "nextToken": bad})
                )
                .await,
                invalid
            );
        }
        // Tokens last an hour.
        clock.advance_millis(3_600_000);
        assert!(call(
            &app,
            "GetQueryResults",
            json!({"queryId": id, "nextToken": token})
        )
        .await
        .is_ok());
        clock.advance_millis(1_000);
        assert_eq!(
            message(
                &app,
                "GetQueryResults",
                json!({"queryId": id, "nextToken": token})
            )
            .await,
            invalid
        );
        // An unknown query is reported before its token is looked at.
        assert_eq!(
            code(
                &app,
                "GetQueryResults",
                json!({"queryId": "nope", "nextToken": "x"})
            )
            .await,
            "ResourceNotFoundException"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn running_queries_time_out_after_sixty_minutes() {
        use trailwatch_core::logs::queries::TIMEOUT_MS;
        let dir = tempfile::tempdir().unwrap();
        // Evaluations wait a second: long enough to look at them Running.
        let (app, clock) = open_with_clock(dir.path(), 1_000).await;
        seed(&app).await;
        let read = start(&app).await;
        let swept = start(&app).await;
        clock.advance_millis(TIMEOUT_MS - 1);
        let out = call(&app, "GetQueryResults", json!({"queryId": read}))
            .await
            .unwrap();
        assert_eq!(out["status"], "Running");
        clock.advance_millis(1);
        // A read sees the time is up.
        let out = call(&app, "GetQueryResults", json!({"queryId": read}))
            .await
            .unwrap();
        assert_eq!(
            (&out["status"], &out["results"]),
            (&json!("Timeout"), &json!([]))
        );
        assert_eq!(
            message(&app, "StopQuery", json!({"queryId": read})).await,
            (
                "InvalidParameterException".to_owned(),
                format!("Query {read} is not running")
            )
        );
        // The maintenance tick times out those nobody reads.
        prune_queries(&app).await.unwrap();
        let stored = |id: &str| {
            app.query_history
                .all()
                .unwrap()
                .into_iter()
                .find(|r| r.id == id)
                .unwrap()
        };
        for id in [&read, &swept] {
            let record = stored(id);
            assert_eq!(record.status, QueryStatus::Timeout);
            assert_eq!(record.finish_ms, Some(NOW_MS + TIMEOUT_MS));
        }
        // The evaluations end later, see their query no longer runs, and
        // store nothing.
        tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
        for id in [&read, &swept] {
            assert_eq!(stored(id).rows, None);
            let out = call(&app, "GetQueryResults", json!({"queryId": id}))
                .await
                .unwrap();
            assert_eq!(out["status"], "Timeout");
        }
        let listed = call(&app, "DescribeQueries", json!({"status": "Timeout"}))
            .await
            .unwrap();
        assert_eq!(listed["queries"].as_array().unwrap().len(), 2);
        // A restart keeps them Timeout (its clock is back at the start: the
        // stored status decides, not the time).
        app.shutdown().await;
        drop(app);
        let app = open(dir.path(), 0).await;
        let out = call(&app, "GetQueryResults", json!({"queryId": swept}))
            .await
            .unwrap();
        assert_eq!(out["status"], "Timeout");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn describe_queries_times_out_queries_past_their_time() {
        use trailwatch_core::logs::queries::TIMEOUT_MS;
        let dir = tempfile::tempdir().unwrap();
        let (app, clock) = open_with_clock(dir.path(), 60_000).await;
        seed(&app).await;
        let id = start(&app).await;
        clock.advance_millis(TIMEOUT_MS);
        let listed = call(&app, "DescribeQueries", json!({})).await.unwrap();
        assert_eq!(listed["queries"][0]["queryId"], json!(id));
        assert_eq!(listed["queries"][0]["status"], "Timeout");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pruning_deletes_rows_left_without_a_query() {
        let dir = tempfile::tempdir().unwrap();
        let app = open(dir.path(), 0).await;
        let (id, all) = finished_query_of(&app, 3).await;
        // What a crash between deleting a record and its rows leaves behind.
        let orphan = format!("insights/{ACCOUNT}/us-east-1/0000-gone.rows");
        let objects = app.audit.objects();
        objects
            .put_durable(&orphan, bytes::Bytes::from_static(b"TWQR"))
            .await
            .unwrap();
        assert_eq!(prune_queries(&app).await.unwrap(), 0);
        assert!(objects.get(&orphan).await.is_err());
        let again = call(&app, "GetQueryResults", json!({"queryId": id}))
            .await
            .unwrap();
        assert_eq!(again, all, "a query's own rows are kept");
    }

    /// Galloping over a block's times counts exactly what one key per event
    /// counts, bytes included, and keeps to the query's range.
    #[test]
    fn counting_by_time_gallops_to_the_per_event_answer() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        for q in [
            "stats count(*) by bin(1m)",
            "stats count(*) as n by datefloor(@timestamp, 1h), bin(5m)",
        ] {
            let query = insights::Query::parse(q).unwrap();
            let range = (1_704_067_260_000, 1_704_078_000_000);
            let runner = insights::Runner::new(&query, range, 0);
            assert!(runner.counts_by_time());
            let mut times: Vec<i64> = (0..5000)
                .map(|_| 1_704_067_200_000 + rng.gen_range(0..12_000_000))
                .collect();
            times.sort();
            let mut end = 0;
            let ends: Vec<usize> = times
                .iter()
                .map(|t| {
                    end += (*t % 7) as usize + 1;
                    end
                })
                .collect();
            let mut fed = Fed {
                part: runner.part(),
                scanned: 0,
                bytes: 0,
            };
            count_by_time(&runner, &mut fed, &times, &ends, range);
            let mut one = runner.part();
            let (mut scanned, mut bytes) = (0, 0);
            for t in &times {
                if (range.0..=range.1).contains(t) {
                    runner.add_count(&mut one, runner.time_key(*t), 1);
                    scanned += 1;
                    bytes += (t % 7) as u64 + 1;
                }
            }
            assert_eq!((fed.scanned, fed.bytes), (scanned, bytes));
            assert_eq!(
                runner.finish(fed.part, 10_000, &[]).rows,
                runner.finish(one, 10_000, &[]).rows
            );
        }
    }
}
