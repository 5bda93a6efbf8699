//! CloudTrail Lake (`spec/cloudtrail.md` §6): event data stores and channels
//! over CloudTrail's JSON 1.1 API, and `PutAuditEvents` over CloudTrail Data's
//! restJson1. Changes commit with the call's audit record; accepted external
//! events are written to the audit store as `ActivityAuditLog` records before
//! the answer.

use trailwatch_core::lake::{
    self, activity_record, default_selectors, validate_event, validate_store_selectors, Channel,
    EventDataStore, Lake,
};
use trailwatch_core::trails::AdvancedSelector;
use trailwatch_protocol::{ApiError, Value};
use trailwatch_types::Timestamp;

use super::trails::{
    advanced_value, err, map_error, opt_bool, parse_advanced, required, tag_pairs, tags_of,
};
use super::{CallContext, Outcome};
use crate::app::App;

fn store_value(s: &EventDataStore, with_times: bool) -> Value {
    let mut members = vec![
        ("EventDataStoreArn", Value::string(s.arn())),
        ("Name", Value::string(&s.name)),
        ("Status", Value::string(&s.status)),
        ("AdvancedEventSelectors", advanced_value(&s.selectors)),
        ("MultiRegionEnabled", Value::Bool(s.multi_region)),
        ("OrganizationEnabled", Value::Bool(false)),
        ("RetentionPeriod", Value::Int(s.retention_days)),
        (
            "TerminationProtectionEnabled",
            Value::Bool(s.termination_protection),
        ),
    ];
    if with_times {
        members.push((
            "CreatedTimestamp",
            Value::Timestamp(Timestamp::from_millis(s.created_ms)),
        ));
        members.push((
            "UpdatedTimestamp",
            Value::Timestamp(Timestamp::from_millis(s.updated_ms)),
        ));
    }
    members.push(("BillingMode", Value::string(&s.billing_mode)));
    Value::structure(members)
}

/// Applies the members common to Create and Update (§6.1).
fn apply_store_members(input: &Value, s: &mut EventDataStore) -> Result<(), ApiError> {
    if let Some(name) = input.get("Name").and_then(Value::as_str) {
        lake::validate_name(name, "Event data store").map_err(map_error)?;
        s.name = name.to_owned();
    }
    if let Some(list) = input.get("AdvancedEventSelectors").and_then(Value::as_list) {
        let selectors: Vec<AdvancedSelector> = parse_advanced(list);
        validate_store_selectors(&selectors).map_err(map_error)?;
        s.selectors = selectors;
    }
    if let Some(v) = opt_bool(input, "MultiRegionEnabled")? {
        s.multi_region = v;
    }
    if opt_bool(input, "OrganizationEnabled")? == Some(true) {
        return Err(err(
            "UnsupportedOperationException",
            "Organization event data stores are not supported by trailwatch.",
        ));
    }
    if let Some(v) = opt_bool(input, "TerminationProtectionEnabled")? {
        s.termination_protection = v;
    }
    if let Some(mode) = input.get("BillingMode").and_then(Value::as_str) {
        if !matches!(
            mode,
            "EXTENDABLE_RETENTION_PRICING" | "FIXED_RETENTION_PRICING"
        ) {
            return Err(err(
                "InvalidParameterException",
                format!("BillingMode {mode} is not valid."),
            ));
        }
        s.billing_mode = mode.to_owned();
    }
    if let Some(days) = input.get("RetentionPeriod") {
        s.retention_days = days.as_i64().ok_or_else(|| {
            err(
                "InvalidParameterException",
                "RetentionPeriod must be a number.",
            )
        })?;
    }
    let max = if s.billing_mode == "FIXED_RETENTION_PRICING" {
        2557
    } else {
        3653
    };
    if !(7..=max).contains(&s.retention_days) {
        return Err(err(
            "InvalidParameterException",
            format!("RetentionPeriod must be between 7 and {max} days."),
        ));
    }
    if input.get("KmsKeyId").and_then(Value::as_str).is_some() {
        return Err(err(
            "InvalidKmsKeyIdException",
            "KMS encryption of event data stores is not supported by trailwatch.",
        ));
    }
    Ok(())
}

pub(super) fn create_event_data_store(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let name = required(input, "Name")?;
    lake::validate_name(name, "Event data store").map_err(map_error)?;
    let account = &cx.principal.account_id;
    let stores = Lake::new(app.audit.catalog())
        .stores(account, cx.region)
        .map_err(map_error)?;
    if stores.iter().any(|s| s.name == name) {
        return Err(err(
            "EventDataStoreAlreadyExistsException",
            format!("An event data store named {name} already exists."),
        ));
    }
    if stores.len() >= lake::MAX_STORES {
        return Err(err(
            "EventDataStoreMaxLimitExceededException",
            "Your account has used the maximum number of event data stores.",
        ));
    }
    let mut store = EventDataStore {
        v: 1,
        id: uuid::Uuid::new_v4().to_string(),
        name: name.to_owned(),
        account: account.clone(),
        region: cx.region.to_owned(),
        selectors: default_selectors(),
        multi_region: true,
        retention_days: 2557,
        termination_protection: true,
        billing_mode: "EXTENDABLE_RETENTION_PRICING".into(),
        status: "ENABLED".into(),
        created_ms: cx.now.millis(),
        updated_ms: cx.now.millis(),
    };
    apply_store_members(input, &mut store)?;
    if opt_bool(input, "StartIngestion")? == Some(false) {
        store.status = "STOPPED_INGESTION".into();
    }
    let tags = tags_of(input)?;
    let mut changes = vec![Lake::put_store(&store)];
    changes.extend(trailwatch_core::tags::Tags::create_changes(
        &store.arn(),
        &tag_pairs(&tags),
    ));
    let mut output = store_value(&store, true);
    if let Value::Struct(members) = &mut output {
        members.push((
            "TagsList".into(),
            Value::List(
                tags.iter()
                    .map(|(k, v)| {
                        Value::structure([
                            ("Key", Value::string(k)),
                            ("Value", v.as_ref().map_or(Value::Null, Value::string)),
                        ])
                    })
                    .collect(),
            ),
        ));
    }
    Ok(Outcome::write(output, changes))
}

fn named_store(app: &App, cx: &CallContext<'_>, input: &Value) -> Result<EventDataStore, ApiError> {
    let value = required(input, "EventDataStore")?;
    Lake::new(app.audit.catalog())
        .store(&cx.principal.account_id, cx.region, value)
        .map_err(map_error)
}

pub(super) fn get_event_data_store(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    Ok(Outcome::read(store_value(
        &named_store(app, cx, input)?,
        true,
    )))
}

pub(super) fn list_event_data_stores(
    app: &App,
    cx: &CallContext<'_>,
    _input: &Value,
) -> Result<Outcome, ApiError> {
    let stores = Lake::new(app.audit.catalog())
        .stores(&cx.principal.account_id, cx.region)
        .map_err(map_error)?;
    Ok(Outcome::read(Value::structure([(
        "EventDataStores",
        Value::List(stores.iter().map(|s| store_value(s, true)).collect()),
    )])))
}

pub(super) fn update_event_data_store(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let mut store = named_store(app, cx, input)?;
    let was_activity = store.takes_activity();
    apply_store_members(input, &mut store)?;
    if store.takes_activity() != was_activity {
        return Err(err(
            "InvalidEventSelectorsException",
            "An event data store cannot change between CloudTrail events and external events.",
        ));
    }
    store.updated_ms = cx.now.millis();
    Ok(Outcome::write(
        store_value(&store, true),
        vec![Lake::put_store(&store)],
    ))
}

pub(super) fn delete_event_data_store(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let store = named_store(app, cx, input)?;
    if store.termination_protection {
        return Err(err(
            "EventDataStoreTerminationProtectedException",
            "The event data store cannot be deleted because termination protection is enabled.",
        ));
    }
    let channels = Lake::new(app.audit.catalog())
        .channels(&cx.principal.account_id, cx.region)
        .map_err(map_error)?;
    if channels
        .iter()
        .any(|c| c.destinations.contains(&store.arn()))
    {
        return Err(err(
            "EventDataStoreHasOngoingImportException",
            "The event data store is the destination of a channel; delete or update the channel first.",
        ));
    }
    let mut changes = vec![Lake::delete_store(&store)];
    changes.extend(trailwatch_core::tags::Tags::delete_changes(&store.arn()));
    Ok(Outcome::write(Value::empty_struct(), changes))
}

pub(super) fn set_ingestion(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
    on: bool,
) -> Result<Outcome, ApiError> {
    let mut store = named_store(app, cx, input)?;
    store.status = if on { "ENABLED" } else { "STOPPED_INGESTION" }.into();
    store.updated_ms = cx.now.millis();
    Ok(Outcome::write(
        Value::empty_struct(),
        vec![Lake::put_store(&store)],
    ))
}

fn destinations(app: &App, cx: &CallContext<'_>, input: &Value) -> Result<Vec<String>, ApiError> {
    let list = input
        .get("Destinations")
        .and_then(Value::as_list)
        .unwrap_or_default();
    if list.is_empty() || list.len() > 200 {
        return Err(err(
            "InvalidParameterException",
            "Destinations must hold 1 to 200 entries.",
        ));
    }
    let lake = Lake::new(app.audit.catalog());
    let mut out = Vec::new();
    for d in list {
        let kind = d.get("Type").and_then(Value::as_str).unwrap_or_default();
        let location = d
            .get("Location")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if kind != "EVENT_DATA_STORE" {
            return Err(err(
                "InvalidParameterException",
                format!("Destination type {kind} is not supported; use EVENT_DATA_STORE."),
            ));
        }
        let store = lake
            .store(&cx.principal.account_id, cx.region, location)
            .map_err(map_error)?;
        if !store.takes_activity() {
            return Err(err(
                "InvalidEventDataStoreCategoryException",
                format!("Event data store {location} does not take external events (eventCategory ActivityAuditLog)."),
            ));
        }
        out.push(store.arn());
    }
    Ok(out)
}

fn channel_value(c: &Channel) -> Value {
    Value::structure([
        ("ChannelArn", Value::string(c.arn())),
        ("Name", Value::string(&c.name)),
        ("Source", Value::string(&c.source)),
        (
            "Destinations",
            Value::List(
                c.destinations
                    .iter()
                    .map(|d| {
                        Value::structure([
                            ("Type", Value::string("EVENT_DATA_STORE")),
                            ("Location", Value::string(d)),
                        ])
                    })
                    .collect(),
            ),
        ),
    ])
}

pub(super) fn create_channel(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let name = required(input, "Name")?;
    lake::validate_name(name, "Channel").map_err(map_error)?;
    let source = required(input, "Source")?;
    let account = &cx.principal.account_id;
    let channels = Lake::new(app.audit.catalog())
        .channels(account, cx.region)
        .map_err(map_error)?;
    if channels.iter().any(|c| c.name == name) {
        return Err(err(
            "ChannelAlreadyExistsException",
            format!("A channel named {name} already exists."),
        ));
    }
    if source != "Custom" && channels.iter().any(|c| c.source == source) {
        return Err(err(
            "ChannelExistsForEDSException",
            format!("A channel for source {source} already exists."),
        ));
    }
    if channels.len() >= lake::MAX_CHANNELS {
        return Err(err(
            "ChannelMaxLimitExceededException",
            "Your account has used the maximum number of channels.",
        ));
    }
    let channel = Channel {
        v: 1,
        id: uuid::Uuid::new_v4().to_string(),
        name: name.to_owned(),
        account: account.clone(),
        region: cx.region.to_owned(),
        source: source.to_owned(),
        destinations: destinations(app, cx, input)?,
        created_ms: cx.now.millis(),
    };
    let tags = tags_of(&Value::structure([(
        "TagsList",
        input.get("Tags").cloned().unwrap_or(Value::Null),
    )]))?;
    let mut changes = vec![Lake::put_channel(&channel)];
    changes.extend(trailwatch_core::tags::Tags::create_changes(
        &channel.arn(),
        &tag_pairs(&tags),
    ));
    Ok(Outcome::write(channel_value(&channel), changes))
}

fn named_channel(app: &App, cx: &CallContext<'_>, input: &Value) -> Result<Channel, ApiError> {
    let value = required(input, "Channel")?;
    Lake::new(app.audit.catalog())
        .channel(&cx.principal.account_id, cx.region, value)
        .map_err(map_error)
}

pub(super) fn get_channel(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let channel = named_channel(app, cx, input)?;
    let mut out = channel_value(&channel);
    if let Value::Struct(members) = &mut out {
        members.push((
            "IngestionStatus".into(),
            Value::structure(Vec::<(&str, Value)>::new()),
        ));
    }
    Ok(Outcome::read(out))
}

pub(super) fn list_channels(
    app: &App,
    cx: &CallContext<'_>,
    _input: &Value,
) -> Result<Outcome, ApiError> {
    let channels = Lake::new(app.audit.catalog())
        .channels(&cx.principal.account_id, cx.region)
        .map_err(map_error)?;
    Ok(Outcome::read(Value::structure([(
        "Channels",
        Value::List(
            channels
                .iter()
                .map(|c| {
                    Value::structure([
                        ("ChannelArn", Value::string(c.arn())),
                        ("Name", Value::string(&c.name)),
                    ])
                })
                .collect(),
        ),
    )])))
}

pub(super) fn update_channel(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let mut channel = named_channel(app, cx, input)?;
    if let Some(name) = input.get("Name").and_then(Value::as_str) {
        lake::validate_name(name, "Channel").map_err(map_error)?;
        channel.name = name.to_owned();
    }
    if input.get("Destinations").is_some() {
        channel.destinations = destinations(app, cx, input)?;
    }
    Ok(Outcome::write(
        channel_value(&channel),
        vec![Lake::put_channel(&channel)],
    ))
}

pub(super) fn delete_channel(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let channel = named_channel(app, cx, input)?;
    let mut changes = vec![Lake::delete_channel(&channel)];
    changes.extend(trailwatch_core::tags::Tags::delete_changes(&channel.arn()));
    Ok(Outcome::write(Value::empty_struct(), changes))
}

/// Largest PutAuditEvents body (§6.4).
const MAX_PUT_BYTES: usize = 1024 * 1024;

pub(super) async fn put_audit_events(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let channel_value = input
        .get("channelArn")
        .and_then(Value::as_str)
        .ok_or_else(|| err("ValidationException", "channelArn is required."))?;
    if cx.body_bytes.1 > MAX_PUT_BYTES {
        return Err(err(
            "ValidationException",
            "A PutAuditEvents request is at most 1 MB.",
        ));
    }
    if let Some(external) = input.get("externalId").and_then(Value::as_str) {
        if !(2..=1224).contains(&external.len()) {
            return Err(err(
                "ValidationException",
                "externalId must be 2 to 1224 characters.",
            ));
        }
    }
    let lake = Lake::new(app.audit.catalog());
    let channel = match channel_value.split(':').nth(4) {
        Some(owner) if channel_value.starts_with("arn:") && owner != cx.principal.account_id => {
            return Err(err(
                "ChannelInsufficientPermission",
                "The caller's account does not own the channel.",
            ))
        }
        _ => lake
            .channel(&cx.principal.account_id, cx.region, channel_value)
            .map_err(|e| match e.code {
                "ChannelARNInvalidException" => err("InvalidChannelARN", e.message),
                "ChannelNotFoundException" => err("ChannelNotFound", e.message),
                _ => map_error(e),
            })?,
    };
    let events = input
        .get("auditEvents")
        .and_then(Value::as_list)
        .unwrap_or_default();
    if events.is_empty() || events.len() > 100 {
        return Err(err(
            "ValidationException",
            "auditEvents must hold 1 to 100 events.",
        ));
    }
    let mut ids = std::collections::HashSet::new();
    for e in events {
        let id = e.get("id").and_then(Value::as_str).unwrap_or_default();
        let valid_id = (1..=128).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_id {
            return Err(err(
                "ValidationException",
                format!("Audit event id {id} is not valid."),
            ));
        }
        if !ids.insert(id) {
            return Err(err(
                "DuplicatedAuditEventId",
                format!("Audit event id {id} appears more than once."),
            ));
        }
    }
    let mut successful = Vec::new();
    let mut failed = Vec::new();
    let ingested = cx.now.to_iso8601_seconds();
    for e in events {
        let id = e.get("id").and_then(Value::as_str).unwrap_or_default();
        let data = e
            .get("eventData")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let checksum = e.get("eventDataChecksum").and_then(Value::as_str);
        match validate_event(data, checksum, &channel.account) {
            Ok(parsed) => {
                let event_id = uuid::Uuid::new_v4().to_string();
                let record = activity_record(
                    parsed,
                    &event_id,
                    &channel.account,
                    cx.region,
                    &channel.arn(),
                    &ingested,
                );
                app.audit.append_json(record).await.map_err(|e| {
                    tracing::error!(error = %e, "cannot store an audit event");
                    ApiError::new("InternalFailure", 500, "The event could not be stored.")
                })?;
                successful.push(Value::structure([
                    ("id", Value::string(id)),
                    ("eventID", Value::string(event_id)),
                ]));
            }
            Err(refusal) => failed.push(Value::structure([
                ("id", Value::string(id)),
                ("errorCode", Value::string(refusal.code)),
                ("errorMessage", Value::string(refusal.message)),
            ])),
        }
    }
    Ok(Outcome::read(Value::structure([
        ("successful", Value::List(successful)),
        ("failed", Value::List(failed)),
    ])))
}

/// A Lake query, kept in memory (results do not survive a restart).
#[derive(Debug)]
pub struct LakeQuery {
    id: String,
    account: String,
    region: String,
    sql: String,
    store_arns: Vec<String>,
    status: &'static str,
    created: Timestamp,
    elapsed_ms: i64,
    events_scanned: u64,
    bytes_scanned: u64,
    result: Option<trailwatch_core::lake_sql::SqlResult>,
    error: Option<String>,
    task: Option<tokio::task::AbortHandle>,
}

/// Lake queries by id.
pub type LakeQueries =
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, LakeQuery>>>;

/// Running queries per account (§6.2).
const MAX_RUNNING: usize = 10;

fn is_terminal(status: &str) -> bool {
    !matches!(status, "QUEUED" | "RUNNING")
}

/// The records a store holds now: channel events for a store of external
/// events, else the account's CloudTrail records its selectors select, since
/// its creation; both within its retention.
use trailwatch_core::lake_sql::parse_records;

async fn store_records(
    app: &App,
    store: &EventDataStore,
    now: Timestamp,
) -> Result<Vec<trailwatch_core::lake_sql::StoredRecord>, ApiError> {
    use trailwatch_core::audit::EventCategory;
    let storage = |e: trailwatch_core::audit::AuditError| {
        tracing::error!(error = %e, "cannot read stored records for a query");
        ApiError::new(
            "InternalFailure",
            500,
            "The event data store could not be read.",
        )
    };
    let oldest_ms = now.millis() - store.retention_days * 86_400_000;
    let regions = (!store.multi_region).then(|| vec![store.region.clone()]);
    let time_of = |r: &serde_json::Value| {
        r.get("eventTime")
            .and_then(serde_json::Value::as_str)
            .and_then(|t| Timestamp::parse_iso8601(t).ok())
            .map_or(0, Timestamp::millis)
    };
    if store.takes_activity() {
        let channels: Vec<String> = Lake::new(app.audit.catalog())
            .channels(&store.account, &store.region)
            .map_err(map_error)?
            .into_iter()
            .filter(|c| c.destinations.contains(&store.arn()))
            .map(|c| c.arn())
            .collect();
        let all = app
            .audit
            .stored_records(
                &[EventCategory::Activity],
                &store.account,
                regions.as_deref(),
            )
            .await
            .map_err(storage)?;
        return Ok(parse_records(all)
            .into_iter()
            .filter(|(_, r)| {
                let channel = r
                    .get("metadata")
                    .and_then(|m| m.get("channelARN"))
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default();
                channels.iter().any(|c| c == channel) && time_of(r) >= oldest_ms
            })
            .collect());
    }
    let all = app
        .audit
        .stored_records(
            &[
                EventCategory::Management,
                EventCategory::Data,
                EventCategory::Insight,
            ],
            &store.account,
            regions.as_deref(),
        )
        .await
        .map_err(storage)?;
    Ok(parse_records(all)
        .into_iter()
        .filter(|(_, r)| {
            let at = time_of(r);
            at >= oldest_ms
                && at >= store.created_ms - 1000
                && trailwatch_core::trails::advanced_selects(
                    &store.selectors,
                    &trailwatch_core::trails::RecordView::of(r),
                )
        })
        .collect())
}

pub(super) async fn start_query(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    use trailwatch_core::lake_sql::{prepare, table_ids, SqlError};
    if input.get("QueryAlias").is_some() {
        return Err(err(
            "InvalidParameterException",
            "Query aliases are not supported by trailwatch; send QueryStatement.",
        ));
    }
    if input.get("DeliveryS3Uri").is_some() {
        return Err(err(
            "InvalidParameterException",
            "Delivering query results to S3 is not supported by trailwatch.",
        ));
    }
    let sql = required(input, "QueryStatement")?;
    let ids = table_ids(sql);
    if ids.is_empty() {
        return Err(err(
            "InvalidQueryStatementException",
            "The query must name an event data store by its ID in its FROM clause.",
        ));
    }
    let account = &cx.principal.account_id;
    let lake = Lake::new(app.audit.catalog());
    let stores = lake.stores(account, cx.region).map_err(map_error)?;
    let mut named = Vec::new();
    for id in &ids {
        let store = stores.iter().find(|s| &s.id == id).ok_or_else(|| {
            err(
                "EventDataStoreNotFoundException",
                format!("The event data store {id} was not found."),
            )
        })?;
        named.push(store.clone());
    }
    {
        let queries = app.lake_queries.lock().unwrap_or_else(|p| p.into_inner());
        let running = queries
            .values()
            .filter(|q| &q.account == account && !is_terminal(q.status))
            .count();
        if running >= MAX_RUNNING {
            return Err(err(
                "MaxConcurrentQueriesException",
                "You are already running the maximum number of concurrent queries.",
            ));
        }
    }
    let mut tables = std::collections::BTreeMap::new();
    for store in &named {
        tables.insert(store.id.clone(), store_records(app, store, cx.now).await?);
    }
    let prepared = prepare(sql, tables).await.map_err(|e| match e {
        SqlError::Invalid(m) => err("InvalidQueryStatementException", m),
        SqlError::Failed(m) => ApiError::new("InternalFailure", 500, m),
    })?;
    let id = uuid::Uuid::new_v4().to_string();
    let query = LakeQuery {
        id: id.clone(),
        account: account.clone(),
        region: cx.region.to_owned(),
        sql: sql.to_owned(),
        store_arns: named.iter().map(EventDataStore::arn).collect(),
        status: "RUNNING",
        created: cx.now,
        elapsed_ms: 0,
        events_scanned: prepared.events_scanned,
        bytes_scanned: prepared.bytes_scanned,
        result: None,
        error: None,
        task: None,
    };
    let queries = app.lake_queries.clone();
    let started = std::time::Instant::now();
    let task_id = id.clone();
    let handle = {
        let mut map = queries.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(id.clone(), query);
        let queries = queries.clone();
        // Tests stretch a query's run to cancel it while it runs.
        let delay = app.config.insights_delay;
        tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let outcome = prepared.execute().await;
            let mut map = queries.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(q) = map.get_mut(&task_id) {
                if q.status == "RUNNING" {
                    q.elapsed_ms = started.elapsed().as_millis() as i64;
                    match outcome {
                        Ok(result) => {
                            q.status = "FINISHED";
                            q.result = Some(result);
                        }
                        Err(e) => {
                            q.status = "FAILED";
                            q.error = Some(e.to_string());
                        }
                    }
                }
                q.task = None;
            }
        })
    };
    if let Some(q) = queries
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_mut(&id)
    {
        if !is_terminal(q.status) {
            q.task = Some(handle.abort_handle());
        }
    }
    Ok(Outcome::write(
        Value::structure([("QueryId", Value::string(&id))]),
        Vec::new(),
    ))
}

fn query_of<'a>(
    map: &'a std::collections::HashMap<String, LakeQuery>,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<&'a LakeQuery, ApiError> {
    let id = required(input, "QueryId")?;
    map.get(id)
        .filter(|q| q.account == cx.principal.account_id && q.region == cx.region)
        .ok_or_else(|| {
            err(
                "QueryIdNotFoundException",
                format!("The query ID {id} does not exist or is not valid."),
            )
        })
}

fn statistics(q: &LakeQuery) -> Value {
    let matched = q.result.as_ref().map_or(0, |r| r.rows.len() as i64);
    Value::structure([
        ("EventsMatched", Value::Int(matched)),
        ("EventsScanned", Value::Int(q.events_scanned as i64)),
        ("BytesScanned", Value::Int(q.bytes_scanned as i64)),
        ("ExecutionTimeInMillis", Value::Int(q.elapsed_ms)),
        ("CreationTime", Value::Timestamp(q.created)),
    ])
}

pub(super) fn describe_query(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let map = app.lake_queries.lock().unwrap_or_else(|p| p.into_inner());
    let q = query_of(&map, cx, input)?;
    Ok(Outcome::read(Value::structure([
        ("QueryId", Value::string(&q.id)),
        ("QueryString", Value::string(&q.sql)),
        ("QueryStatus", Value::string(q.status)),
        ("QueryStatistics", statistics(q)),
        (
            "ErrorMessage",
            q.error.as_ref().map_or(Value::Null, Value::string),
        ),
        ("EventDataStoreOwnerAccountId", Value::string(&q.account)),
    ])))
}

pub(super) fn get_query_results(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let map = app.lake_queries.lock().unwrap_or_else(|p| p.into_inner());
    let q = query_of(&map, cx, input)?;
    let max = match input.get("MaxQueryResults") {
        None | Some(Value::Null) => 1000,
        Some(v) => {
            let n = v.as_i64().unwrap_or(0);
            if !(1..=1000).contains(&n) {
                return Err(err(
                    "InvalidMaxResultsException",
                    "MaxQueryResults must be between 1 and 1000.",
                ));
            }
            n as usize
        }
    };
    let filters = trailwatch_core::token::filters_hash(&[&q.id, "GetQueryResults"]);
    let start: usize = match input.get("NextToken").and_then(Value::as_str) {
        Some(token) => app
            .tokens
            .open(token, &filters, cx.now, 7 * 24 * 3600)
            .and_then(|s: String| s.parse::<usize>().ok())
            .ok_or_else(|| err("InvalidNextTokenException", "The NextToken is not valid."))?,
        None => 0,
    };
    let rows = q.result.as_ref().map_or(&[][..], |r| &r.rows[..]);
    let page = rows.iter().skip(start).take(max);
    let columns = q
        .result
        .as_ref()
        .map(|r| r.columns.clone())
        .unwrap_or_default();
    let list = page
        .map(|row| {
            Value::List(
                columns
                    .iter()
                    .zip(row)
                    .map(|(c, v)| Value::Map(vec![(c.clone(), Value::string(v))]))
                    .collect(),
            )
        })
        .collect();
    let end = (start + max).min(rows.len());
    let next = if end < rows.len() {
        Value::String(app.tokens.issue(&filters, &end.to_string(), cx.now))
    } else {
        Value::Null
    };
    Ok(Outcome::read(Value::structure([
        ("QueryStatus", Value::string(q.status)),
        (
            "QueryStatistics",
            Value::structure([
                ("ResultsCount", Value::Int((end - start.min(end)) as i64)),
                ("TotalResultsCount", Value::Int(rows.len() as i64)),
                ("BytesScanned", Value::Int(q.bytes_scanned as i64)),
            ]),
        ),
        ("QueryResultRows", Value::List(list)),
        ("NextToken", next),
        (
            "ErrorMessage",
            q.error.as_ref().map_or(Value::Null, Value::string),
        ),
    ])))
}

pub(super) fn cancel_query(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let mut map = app.lake_queries.lock().unwrap_or_else(|p| p.into_inner());
    let id = query_of(&map, cx, input)?.id.clone();
    let Some(q) = map.get_mut(&id) else {
        return Err(err(
            "QueryIdNotFoundException",
            "The query ID does not exist.",
        ));
    };
    if is_terminal(q.status) {
        return Err(err(
            "InactiveQueryException",
            format!("The query {id} is {} and cannot be cancelled.", q.status),
        ));
    }
    if let Some(task) = q.task.take() {
        task.abort();
    }
    q.status = "CANCELLED";
    Ok(Outcome::write(
        Value::structure([
            ("QueryId", Value::string(&id)),
            ("QueryStatus", Value::string("CANCELLED")),
        ]),
        Vec::new(),
    ))
}

pub(super) fn list_queries(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let store = named_store(app, cx, input)?;
    let status = input.get("QueryStatus").and_then(Value::as_str);
    let start = input.get("StartTime").and_then(Value::as_timestamp);
    let end = input.get("EndTime").and_then(Value::as_timestamp);
    let oldest = cx.now.millis() - 7 * 86_400_000;
    let map = app.lake_queries.lock().unwrap_or_else(|p| p.into_inner());
    let mut list: Vec<&LakeQuery> = map
        .values()
        .filter(|q| {
            q.store_arns.contains(&store.arn())
                && q.created.millis() >= oldest
                && status.is_none_or(|s| s == q.status)
                && start.is_none_or(|s| q.created >= s)
                && end.is_none_or(|e| q.created <= e)
        })
        .collect();
    list.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
    Ok(Outcome::read(Value::structure([(
        "Queries",
        Value::List(
            list.iter()
                .map(|q| {
                    Value::structure([
                        ("QueryId", Value::string(&q.id)),
                        ("QueryStatus", Value::string(q.status)),
                        ("CreationTime", Value::Timestamp(q.created)),
                    ])
                })
                .collect(),
        ),
    )])))
}
