//! CloudTrail trail management (`spec/cloudtrail.md` §5): Create/Update/Delete,
//! Get/Describe/List, GetTrailStatus, Start/StopLogging, event and Insights
//! selectors, trail tags, and ListPublicKeys (§3.6). Changes commit with the
//! call's audit record, under the trail write lock; the delivery worker
//! (`crate::delivery`) follows them.

use trailwatch_core::trails::{
    self, parse_ref, trail_arn, validate_advanced, validate_basic, validate_bucket,
    validate_insights, validate_name, validate_prefix, validate_role_arn, validate_topic,
    AdvancedSelector, BasicSelector, FieldSelector, InsightSelector, Selectors, Trail, TrailError,
    TrailRef, Trails,
};
use trailwatch_protocol::{ApiError, Value};
use trailwatch_types::Timestamp;

use super::{CallContext, Hold, Outcome};
use crate::app::App;

/// Tags per trail (§5.5).
const MAX_TAGS: usize = 50;

pub(super) fn map_error(e: TrailError) -> ApiError {
    if e.code == "InternalFailure" {
        tracing::error!(error = %e.message, "trail storage failed");
        return ApiError::new(
            "InternalFailure",
            500,
            "We encountered an internal error. Please try again.",
        );
    }
    ApiError::new(e.code, 400, e.message)
}

pub(super) fn err(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(code, 400, message)
}

pub(super) fn required<'a>(input: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    input.get(name).and_then(Value::as_str).ok_or_else(|| {
        err(
            "InvalidParameterException",
            format!("{name} is a required parameter."),
        )
    })
}

pub(super) fn opt_bool(input: &Value, name: &str) -> Result<Option<bool>, ApiError> {
    match input.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_bool().map(Some).ok_or_else(|| {
            err(
                "InvalidParameterException",
                format!("{name} must be a boolean."),
            )
        }),
    }
}

fn opt_str<'a>(input: &'a Value, name: &str) -> Option<&'a str> {
    input.get(name).and_then(Value::as_str)
}

/// Runs a trail-writing handler under the trail write lock, held until its
/// changes are committed: two calls never interleave a read-modify-write.
pub(super) async fn trail_write(
    app: &App,
    handler: impl FnOnce() -> Result<Outcome, ApiError>,
) -> Result<Outcome, ApiError> {
    let hold = app.trail_writes.clone().lock_owned().await;
    let mut outcome = handler()?;
    outcome.hold = Some(Hold::Trails(hold));
    Ok(outcome)
}

fn trail_value(t: &Trail, full: bool) -> Value {
    let opt = |v: &Option<String>| v.as_ref().map_or(Value::Null, Value::string);
    let mut members = vec![
        ("Name", Value::string(&t.name)),
        ("S3BucketName", Value::string(&t.bucket)),
        ("S3KeyPrefix", opt(&t.prefix)),
        ("SnsTopicName", opt(&t.sns_topic_name())),
        ("SnsTopicARN", opt(&t.sns_topic_arn())),
        ("IncludeGlobalServiceEvents", Value::Bool(t.include_global)),
        ("IsMultiRegionTrail", Value::Bool(t.multi_region)),
    ];
    if full {
        members.push(("HomeRegion", Value::string(&t.home_region)));
    }
    members.extend([
        ("TrailARN", Value::string(t.arn())),
        ("LogFileValidationEnabled", Value::Bool(t.validation)),
        ("CloudWatchLogsLogGroupArn", opt(&t.cwl_group_arn)),
        ("CloudWatchLogsRoleArn", opt(&t.cwl_role_arn)),
        ("KmsKeyId", opt(&t.kms_key_id)),
    ]);
    if full {
        members.push((
            "HasCustomEventSelectors",
            Value::Bool(t.selectors != Selectors::Default),
        ));
        members.push(("HasInsightSelectors", Value::Bool(!t.insights.is_empty())));
    }
    members.push(("IsOrganizationTrail", Value::Bool(false)));
    Value::structure(members)
}

/// Applies the CreateTrail/UpdateTrail members present in `input` to `t`,
/// validating each in the order of §5.2.
fn apply_members(app: &App, input: &Value, t: &mut Trail) -> Result<(), ApiError> {
    if let Some(bucket) = opt_str(input, "S3BucketName") {
        validate_bucket(bucket).map_err(map_error)?;
        t.bucket = bucket.to_owned();
    }
    if let Some(prefix) = opt_str(input, "S3KeyPrefix") {
        t.prefix = validate_prefix(prefix).map_err(map_error)?;
    }
    if let Some(topic) = opt_str(input, "SnsTopicName") {
        if topic.is_empty() {
            t.sns_topic = None;
        } else {
            validate_topic(topic).map_err(map_error)?;
            t.sns_topic = Some(topic.to_owned());
        }
    }
    if let Some(v) = opt_bool(input, "IncludeGlobalServiceEvents")? {
        t.include_global = v;
    }
    if let Some(v) = opt_bool(input, "IsMultiRegionTrail")? {
        t.multi_region = v;
    }
    if let Some(v) = opt_bool(input, "EnableLogFileValidation")? {
        t.validation = v;
    }
    if opt_bool(input, "IsOrganizationTrail")? == Some(true) {
        return Err(err(
            "UnsupportedOperationException",
            "Organization trails are not supported by trailwatch.",
        ));
    }
    let group = opt_str(input, "CloudWatchLogsLogGroupArn");
    let role = opt_str(input, "CloudWatchLogsRoleArn");
    match (group, role) {
        (None, None) => {}
        (Some(""), _) | (_, Some("")) => {
            // An empty value turns CloudWatch Logs delivery off.
            t.cwl_group_arn = None;
            t.cwl_role_arn = None;
        }
        (Some(g), Some(r)) => {
            let (region, account, name) = trails::parse_log_group_arn(g).map_err(map_error)?;
            validate_role_arn(r).map_err(map_error)?;
            let exists = account == t.account
                && matches!(app.logs.group(&account, &region, &name), Ok(Some(_)));
            if !exists {
                return Err(err(
                    "InvalidCloudWatchLogsLogGroupArnException",
                    format!("Log group {g} does not exist."),
                ));
            }
            let arn = if g.ends_with(":*") {
                g.to_owned()
            } else {
                format!("{g}:*")
            };
            t.cwl_group_arn = Some(arn);
            t.cwl_role_arn = Some(r.to_owned());
        }
        _ => {
            return Err(err(
                "InvalidParameterCombinationException",
                "CloudWatchLogsLogGroupArn and CloudWatchLogsRoleArn must be specified together.",
            ))
        }
    }
    if opt_str(input, "S3BucketName").is_some() {
        check_bucket(app, &t.bucket, &t.account)?;
    }
    if let Some(topic) = opt_str(input, "SnsTopicName").filter(|s| !s.is_empty()) {
        let arn = t.sns_topic_arn().unwrap_or_default();
        let found = trailwatch_core::sns::TopicArn::parse(&arn, "SnsTopicName")
            .ok()
            .and_then(|a| app.topics.find(&a).ok().flatten());
        if found.is_none() {
            return Err(err(
                "InsufficientSnsTopicPolicyException",
                format!("Problem with the SNS topic {topic}: it does not exist."),
            ));
        }
    }
    if let Some(kms) = opt_str(input, "KmsKeyId") {
        if kms.is_empty() {
            t.kms_key_id = None;
        } else {
            return Err(err(
                "InvalidKmsKeyIdException",
                "KMS encryption of log files is not supported by this object store.",
            ));
        }
    }
    Ok(())
}

/// §2.5: the bucket must exist and take our writes (HeadBucket on an
/// external store; ownership on the embedded one).
fn check_bucket(app: &App, bucket: &str, account: &str) -> Result<(), ApiError> {
    use crate::archive::BucketProblem;
    match crate::archive::check_bucket(app, bucket, account) {
        Ok(()) => Ok(()),
        Err(BucketProblem::Refused) => Err(err(
            "InsufficientS3BucketPolicyException",
            format!("Incorrect S3 bucket policy is detected for bucket: {bucket}"),
        )),
        Err(BucketProblem::Missing) => Err(err(
            "S3BucketDoesNotExistException",
            format!("S3 bucket {bucket} does not exist."),
        )),
        Err(BucketProblem::Unavailable(e)) => {
            tracing::error!(error = %e, "bucket check failed");
            Err(ApiError::new(
                "InternalFailure",
                500,
                "We encountered an internal error. Please try again.",
            ))
        }
    }
}

pub(super) fn tags_of(input: &Value) -> Result<Vec<(String, Option<String>)>, ApiError> {
    let list = match input.get("TagsList") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(v) => v.as_list().ok_or_else(|| {
            err(
                "InvalidTagParameterException",
                "TagsList must be a list of tags.",
            )
        })?,
    };
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for tag in list {
        let key = tag.get("Key").and_then(Value::as_str).unwrap_or_default();
        let value = tag.get("Value").and_then(Value::as_str);
        if key.is_empty() || key.chars().count() > 128 || key.starts_with("aws:") {
            return Err(err(
                "InvalidTagParameterException",
                format!("Tag key {key} is not valid."),
            ));
        }
        if value.is_some_and(|v| v.chars().count() > 256) {
            return Err(err(
                "InvalidTagParameterException",
                format!("The value of tag {key} is longer than 256 characters."),
            ));
        }
        if out.iter().any(|(k, _)| k == key) {
            return Err(err(
                "InvalidTagParameterException",
                format!("Tag key {key} appears more than once."),
            ));
        }
        out.push((key.to_owned(), value.map(str::to_owned)));
    }
    Ok(out)
}

/// Tag values absent from the request are stored as empty strings (they list as such).
pub(super) fn tag_pairs(tags: &[(String, Option<String>)]) -> Vec<(String, String)> {
    tags.iter()
        .map(|(k, v)| (k.clone(), v.clone().unwrap_or_default()))
        .collect()
}

pub(super) fn create_trail(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let name = required(input, "Name")?;
    validate_name(name).map_err(map_error)?;
    let bucket = required(input, "S3BucketName")?;
    let account = &cx.principal.account_id;
    let store = Trails::new(app.audit.catalog());
    if store
        .get(account, cx.region, name)
        .map_err(map_error)?
        .is_some()
    {
        return Err(err(
            "TrailAlreadyExistsException",
            format!(
                "Trail {} already exists for customer: {account}",
                trail_arn(cx.region, account, name)
            ),
        ));
    }
    let in_region = store
        .of_account(account)
        .map_err(map_error)?
        .into_iter()
        .filter(|t| t.home_region == cx.region)
        .count();
    if in_region >= trails::MAX_TRAILS_PER_REGION {
        return Err(err(
            "MaximumNumberOfTrailsExceededException",
            format!("User: {account} already has 5 trails in {}.", cx.region),
        ));
    }
    let mut trail = Trail {
        v: 1,
        id: uuid::Uuid::new_v4().to_string(),
        account: account.clone(),
        home_region: cx.region.to_owned(),
        name: name.to_owned(),
        bucket: bucket.to_owned(),
        prefix: None,
        sns_topic: None,
        include_global: true,
        multi_region: false,
        validation: false,
        cwl_group_arn: None,
        cwl_role_arn: None,
        kms_key_id: None,
        logging: false,
        start_logging_ms: None,
        stop_logging_ms: None,
        selectors: Selectors::Default,
        insights: Vec::new(),
    };
    apply_members(app, input, &mut trail)?;
    let tags = tags_of(input)?;
    if tags.len() > MAX_TAGS {
        return Err(err(
            "TagsLimitExceededException",
            "A trail can have at most 50 tags.",
        ));
    }
    let mut changes = vec![Trails::put_change(&trail)];
    changes.extend(trailwatch_core::tags::Tags::create_changes(
        &trail.arn(),
        &tag_pairs(&tags),
    ));
    Ok(Outcome::write(trail_value(&trail, false), changes))
}

/// The trail member `member` of a read call names (shadow trails included).
fn named_trail(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
    member: &str,
) -> Result<Trail, ApiError> {
    let name = required(input, member)?;
    Trails::new(app.audit.catalog())
        .resolve(&cx.principal.account_id, cx.region, name)
        .map_err(map_error)
}

/// The trail a mutating call names; it must be called in the trail's home region.
fn home_trail(app: &App, cx: &CallContext<'_>, value: &str) -> Result<Trail, ApiError> {
    let trail = Trails::new(app.audit.catalog())
        .resolve(&cx.principal.account_id, cx.region, value)
        .map_err(map_error)?;
    if trail.home_region != cx.region {
        return Err(err(
            "InvalidHomeRegionException",
            format!(
                "This operation must be called from the trail's home region, {}.",
                trail.home_region
            ),
        ));
    }
    Ok(trail)
}

pub(super) fn update_trail(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let name = required(input, "Name")?;
    let mut trail = home_trail(app, cx, name)?;
    apply_members(app, input, &mut trail)?;
    if trail.insights.iter().any(|_| true) {
        validate_insights(&trail.insights, &trail).map_err(map_error)?;
    }
    let changes = vec![Trails::put_change(&trail)];
    Ok(Outcome::write(trail_value(&trail, false), changes))
}

pub(super) fn delete_trail(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let name = required(input, "Name")?;
    let trail = home_trail(app, cx, name)?;
    let mut changes = Trails::delete_changes(&trail);
    changes.extend(trailwatch_core::tags::Tags::delete_changes(&trail.arn()));
    Ok(Outcome::write(Value::empty_struct(), changes))
}

pub(super) fn set_logging(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
    on: bool,
) -> Result<Outcome, ApiError> {
    let name = required(input, "Name")?;
    let mut trail = home_trail(app, cx, name)?;
    if on {
        // The bucket must still be there when logging starts (§2.5).
        check_bucket(app, &trail.bucket, &trail.account)?;
        trail.start_logging_ms = Some(cx.now.millis());
    } else {
        trail.stop_logging_ms = Some(cx.now.millis());
    }
    trail.logging = on;
    Ok(Outcome::write(
        Value::empty_struct(),
        vec![Trails::put_change(&trail)],
    ))
}

pub(super) fn get_trail(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let trail = named_trail(app, cx, input, "Name")?;
    Ok(Outcome::read(Value::structure([(
        "Trail",
        trail_value(&trail, true),
    )])))
}

pub(super) fn describe_trails(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let account = &cx.principal.account_id;
    let all = Trails::new(app.audit.catalog())
        .of_account(account)
        .map_err(map_error)?;
    let shadows = input
        .get("includeShadowTrails")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let names = input.strings("trailNameList");
    let mut out = Vec::new();
    if names.is_empty() {
        for t in &all {
            if t.home_region == cx.region || (shadows && t.multi_region) {
                out.push(trail_value(t, true));
            }
        }
    } else {
        for t in &all {
            let named = names.iter().any(|n| match parse_ref(n) {
                Ok(TrailRef::Arn(..)) => *n == t.arn(),
                _ => *n == t.name && (t.home_region == cx.region || t.multi_region),
            });
            if named {
                out.push(trail_value(t, true));
            }
        }
    }
    Ok(Outcome::read(Value::structure([(
        "trailList",
        Value::List(out),
    )])))
}

pub(super) fn list_trails(
    app: &App,
    cx: &CallContext<'_>,
    _input: &Value,
) -> Result<Outcome, ApiError> {
    let all = Trails::new(app.audit.catalog())
        .of_account(&cx.principal.account_id)
        .map_err(map_error)?;
    let list = all
        .iter()
        .map(|t| {
            Value::structure([
                ("TrailARN", Value::string(t.arn())),
                ("Name", Value::string(&t.name)),
                ("HomeRegion", Value::string(&t.home_region)),
            ])
        })
        .collect();
    Ok(Outcome::read(Value::structure([(
        "Trails",
        Value::List(list),
    )])))
}

pub(super) fn get_trail_status(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let trail = named_trail(app, cx, input, "Name")?;
    let state = Trails::new(app.audit.catalog())
        .state(&trail.id)
        .map_err(map_error)?;
    let time = |ms: Option<i64>| {
        ms.map_or(Value::Null, |ms| {
            Value::Timestamp(Timestamp::from_millis(ms))
        })
    };
    let text = |s: &Option<String>| s.as_ref().map_or(Value::Null, Value::string);
    let iso = |ms: Option<i64>| {
        ms.map_or(Value::Null, |ms| {
            Value::string(Timestamp::from_millis(ms).to_iso8601())
        })
    };
    Ok(Outcome::read(Value::structure([
        ("IsLogging", Value::Bool(trail.logging)),
        ("LatestDeliveryError", text(&state.latest_delivery_error)),
        (
            "LatestNotificationError",
            text(&state.latest_notification_error),
        ),
        ("LatestDeliveryTime", time(state.latest_delivery_ms)),
        ("LatestNotificationTime", time(state.latest_notification_ms)),
        ("StartLoggingTime", time(trail.start_logging_ms)),
        ("StopLoggingTime", time(trail.stop_logging_ms)),
        (
            "LatestCloudWatchLogsDeliveryError",
            text(&state.latest_cwl_error),
        ),
        (
            "LatestCloudWatchLogsDeliveryTime",
            time(state.latest_cwl_ms),
        ),
        ("LatestDigestDeliveryTime", time(state.latest_digest_ms)),
        (
            "LatestDigestDeliveryError",
            text(&state.latest_digest_error),
        ),
        (
            "LatestDeliveryAttemptTime",
            iso(state.latest_delivery_attempt_ms),
        ),
        (
            "LatestNotificationAttemptTime",
            iso(state.latest_notification_attempt_ms),
        ),
        (
            "LatestNotificationAttemptSucceeded",
            iso(state
                .latest_notification_attempt_ms
                .filter(|_| state.latest_notification_error.is_none())),
        ),
        (
            "LatestDeliveryAttemptSucceeded",
            iso(state
                .latest_delivery_attempt_ms
                .filter(|_| state.latest_delivery_error.is_none())),
        ),
        ("TimeLoggingStarted", iso(trail.start_logging_ms)),
        ("TimeLoggingStopped", iso(trail.stop_logging_ms)),
    ])))
}

fn strings_of(v: Option<&Value>) -> Option<Vec<String>> {
    v.and_then(Value::as_list).map(|l| {
        l.iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    })
}

fn parse_basic(list: &[Value]) -> Result<Vec<BasicSelector>, ApiError> {
    list.iter()
        .map(|s| {
            let data_resources = s
                .get("DataResources")
                .and_then(Value::as_list)
                .unwrap_or_default()
                .iter()
                .map(|r| {
                    (
                        r.get("Type")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        strings_of(r.get("Values")).unwrap_or_default(),
                    )
                })
                .collect();
            Ok(BasicSelector {
                read_write_type: s
                    .get("ReadWriteType")
                    .and_then(Value::as_str)
                    .unwrap_or("All")
                    .to_owned(),
                include_management_events: opt_bool(s, "IncludeManagementEvents")?.unwrap_or(true),
                data_resources,
                exclude_management_event_sources: strings_of(
                    s.get("ExcludeManagementEventSources"),
                )
                .unwrap_or_default(),
            })
        })
        .collect()
}

pub(super) fn parse_advanced(list: &[Value]) -> Vec<AdvancedSelector> {
    list.iter()
        .map(|s| AdvancedSelector {
            name: s.get("Name").and_then(Value::as_str).map(str::to_owned),
            field_selectors: s
                .get("FieldSelectors")
                .and_then(Value::as_list)
                .unwrap_or_default()
                .iter()
                .map(|f| FieldSelector {
                    field: f
                        .get("Field")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    equals: strings_of(f.get("Equals")),
                    starts_with: strings_of(f.get("StartsWith")),
                    ends_with: strings_of(f.get("EndsWith")),
                    not_equals: strings_of(f.get("NotEquals")),
                    not_starts_with: strings_of(f.get("NotStartsWith")),
                    not_ends_with: strings_of(f.get("NotEndsWith")),
                })
                .collect(),
        })
        .collect()
}

fn default_basic() -> Vec<BasicSelector> {
    vec![BasicSelector {
        read_write_type: "All".into(),
        include_management_events: true,
        data_resources: Vec::new(),
        exclude_management_event_sources: Vec::new(),
    }]
}

fn basic_value(list: &[BasicSelector]) -> Value {
    Value::List(
        list.iter()
            .map(|s| {
                Value::structure([
                    ("ReadWriteType", Value::string(&s.read_write_type)),
                    (
                        "IncludeManagementEvents",
                        Value::Bool(s.include_management_events),
                    ),
                    (
                        "DataResources",
                        Value::List(
                            s.data_resources
                                .iter()
                                .map(|(ty, values)| {
                                    Value::structure([
                                        ("Type", Value::string(ty)),
                                        (
                                            "Values",
                                            Value::List(values.iter().map(Value::string).collect()),
                                        ),
                                    ])
                                })
                                .collect(),
                        ),
                    ),
                    (
                        "ExcludeManagementEventSources",
                        Value::List(
                            s.exclude_management_event_sources
                                .iter()
                                .map(Value::string)
                                .collect(),
                        ),
                    ),
                ])
            })
            .collect(),
    )
}

pub(super) fn advanced_value(list: &[AdvancedSelector]) -> Value {
    let op = |v: &Option<Vec<String>>| {
        v.as_ref().map_or(Value::Null, |l| {
            Value::List(l.iter().map(Value::string).collect())
        })
    };
    Value::List(
        list.iter()
            .map(|s| {
                Value::structure([
                    ("Name", s.name.as_ref().map_or(Value::Null, Value::string)),
                    (
                        "FieldSelectors",
                        Value::List(
                            s.field_selectors
                                .iter()
                                .map(|f| {
                                    Value::structure([
                                        ("Field", Value::string(&f.field)),
                                        ("Equals", op(&f.equals)),
                                        ("StartsWith", op(&f.starts_with)),
                                        ("EndsWith", op(&f.ends_with)),
                                        ("NotEquals", op(&f.not_equals)),
                                        ("NotStartsWith", op(&f.not_starts_with)),
                                        ("NotEndsWith", op(&f.not_ends_with)),
                                    ])
                                })
                                .collect(),
                        ),
                    ),
                ])
            })
            .collect(),
    )
}

fn selectors_output(trail: &Trail) -> Value {
    let (basic, advanced) = match &trail.selectors {
        Selectors::Default => (basic_value(&default_basic()), Value::Null),
        Selectors::Basic(l) => (basic_value(l), Value::Null),
        Selectors::Advanced(l) => (Value::Null, advanced_value(l)),
    };
    Value::structure([
        ("TrailARN", Value::string(trail.arn())),
        ("EventSelectors", basic),
        ("AdvancedEventSelectors", advanced),
    ])
}

pub(super) fn put_event_selectors(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let name = required(input, "TrailName")?;
    let mut trail = home_trail(app, cx, name)?;
    let basic = input.get("EventSelectors").and_then(Value::as_list);
    let advanced = input.get("AdvancedEventSelectors").and_then(Value::as_list);
    trail.selectors = match (basic, advanced) {
        (Some(b), None) => {
            let list = parse_basic(b)?;
            validate_basic(&list).map_err(map_error)?;
            Selectors::Basic(list)
        }
        (None, Some(a)) => {
            let list = parse_advanced(a);
            validate_advanced(&list).map_err(map_error)?;
            Selectors::Advanced(list)
        }
        _ => {
            return Err(err(
                "InvalidEventSelectorsException",
                "Specify either EventSelectors or AdvancedEventSelectors, but not both.",
            ))
        }
    };
    if !trail.insights.is_empty() {
        validate_insights(&trail.insights, &trail).map_err(map_error)?;
    }
    Ok(Outcome::write(
        selectors_output(&trail),
        vec![Trails::put_change(&trail)],
    ))
}

pub(super) fn get_event_selectors(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let trail = named_trail(app, cx, input, "TrailName")?;
    Ok(Outcome::read(selectors_output(&trail)))
}

fn insights_value(trail: &Trail) -> Value {
    Value::structure([
        ("TrailARN", Value::string(trail.arn())),
        (
            "InsightSelectors",
            Value::List(
                trail
                    .insights
                    .iter()
                    .map(|s| {
                        Value::structure([
                            ("InsightType", Value::string(&s.insight_type)),
                            (
                                "EventCategories",
                                Value::List(s.event_categories.iter().map(Value::string).collect()),
                            ),
                        ])
                    })
                    .collect(),
            ),
        ),
    ])
}

pub(super) fn put_insight_selectors(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let name = required(input, "TrailName")?;
    let mut trail = home_trail(app, cx, name)?;
    let list = input
        .get("InsightSelectors")
        .and_then(Value::as_list)
        .ok_or_else(|| {
            err(
                "InvalidInsightSelectorsException",
                "InsightSelectors is required.",
            )
        })?;
    let selectors: Vec<InsightSelector> = list
        .iter()
        .map(|s| InsightSelector {
            insight_type: s
                .get("InsightType")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            event_categories: strings_of(s.get("EventCategories"))
                .filter(|l| !l.is_empty())
                .unwrap_or_else(|| vec!["Management".to_owned()]),
        })
        .collect();
    validate_insights(&selectors, &trail).map_err(map_error)?;
    trail.insights = selectors;
    Ok(Outcome::write(
        insights_value(&trail),
        vec![Trails::put_change(&trail)],
    ))
}

pub(super) fn get_insight_selectors(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let trail = named_trail(app, cx, input, "TrailName")?;
    if trail.insights.is_empty() {
        return Err(err(
            "InsightNotEnabledException",
            format!("Trail {} does not have Insights enabled.", trail.arn()),
        ));
    }
    Ok(Outcome::read(insights_value(&trail)))
}

/// The resource a tagging call's `ResourceId` names (§5.5): a trail, an
/// event data store or a channel of the caller. Returns its ARN and home
/// region.
fn tagged_resource(
    app: &App,
    cx: &CallContext<'_>,
    arn: &str,
) -> Result<(String, String), ApiError> {
    let not_found = || {
        ApiError::new(
            "ResourceNotFoundException",
            400,
            format!("Resource {arn} was not found."),
        )
    };
    if !arn.starts_with("arn:") {
        return Err(err(
            "CloudTrailARNInvalidException",
            format!("{arn} is not a valid ARN."),
        ));
    }
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let (service, region, account, resource) = match parts.as_slice() {
        [_, _, service, region, account, resource] => (*service, *region, *account, *resource),
        _ => {
            return Err(err(
                "CloudTrailARNInvalidException",
                format!("{arn} is not a valid ARN."),
            ))
        }
    };
    if service != "cloudtrail" {
        return Err(err(
            "ResourceTypeNotSupportedException",
            format!("Resource type of {arn} is not supported."),
        ));
    }
    if account != cx.principal.account_id {
        return Err(not_found());
    }
    let lake = trailwatch_core::lake::Lake::new(app.audit.catalog());
    if resource.starts_with("eventdatastore/") {
        let store = lake.store(account, region, arn).map_err(|e| match e.code {
            "EventDataStoreNotFoundException" => not_found(),
            _ => map_error(e),
        })?;
        return Ok((store.arn(), store.region));
    }
    if resource.starts_with("channel/") {
        let channel = lake
            .channel(account, region, arn)
            .map_err(|e| match e.code {
                "ChannelNotFoundException" => not_found(),
                _ => map_error(e),
            })?;
        return Ok((channel.arn(), channel.region));
    }
    if !resource.starts_with("trail/") {
        return Err(err(
            "ResourceTypeNotSupportedException",
            format!("Resource type of {arn} is not supported."),
        ));
    }
    match parse_ref(arn).map_err(map_error)? {
        TrailRef::Arn(region, account, name) => {
            let trail = Trails::new(app.audit.catalog())
                .get(&account, &region, &name)
                .map_err(map_error)?
                .ok_or_else(not_found)?;
            Ok((trail.arn(), trail.home_region))
        }
        TrailRef::Name(_) => Err(err(
            "CloudTrailARNInvalidException",
            format!("{arn} is not a valid ARN."),
        )),
    }
}

pub(super) fn add_tags(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let arn = required(input, "ResourceId")?;
    let (resource, home) = tagged_resource(app, cx, arn)?;
    if home != cx.region {
        return Err(err(
            "InvalidHomeRegionException",
            "Tags of a resource are changed from its home region.",
        ));
    }
    let tags = tags_of(input)?;
    let existing = app.tags.get(&resource).map_err(super::tagging::map_error)?;
    let total = existing.len()
        + tags
            .iter()
            .filter(|(k, _)| !existing.contains_key(k))
            .count();
    if total > MAX_TAGS {
        return Err(err(
            "TagsLimitExceededException",
            "A resource can have at most 50 tags.",
        ));
    }
    let changes = app
        .tags
        .tag_changes(&resource, &tag_pairs(&tags))
        .map_err(super::tagging::map_error)?;
    Ok(Outcome::write(Value::empty_struct(), changes))
}

pub(super) fn remove_tags(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let arn = required(input, "ResourceId")?;
    let (resource, _) = tagged_resource(app, cx, arn)?;
    let keys: Vec<String> = tags_of(input)?.into_iter().map(|(k, _)| k).collect();
    let changes = app
        .tags
        .untag_changes(&resource, &keys)
        .map_err(super::tagging::map_error)?;
    Ok(Outcome::write(Value::empty_struct(), changes))
}

pub(super) fn list_tags(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let arns = input.strings("ResourceIdList");
    if arns.is_empty() || arns.len() > 20 {
        return Err(err(
            "InvalidParameterException",
            "ResourceIdList must name 1 to 20 resources.",
        ));
    }
    let mut out = Vec::new();
    for arn in &arns {
        let (resource, _) = tagged_resource(app, cx, arn)?;
        let tags = app.tags.get(&resource).map_err(super::tagging::map_error)?;
        out.push(Value::structure([
            ("ResourceId", Value::string(arn)),
            (
                "TagsList",
                Value::List(
                    tags.iter()
                        .map(|(k, v)| {
                            Value::structure([
                                ("Key", Value::string(k)),
                                ("Value", Value::string(v)),
                            ])
                        })
                        .collect(),
                ),
            ),
        ]));
    }
    Ok(Outcome::read(Value::structure([(
        "ResourceTagList",
        Value::List(out),
    )])))
}

pub(super) fn list_public_keys(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let time = |name: &str| match input.get(name) {
        None | Some(Value::Null) => Ok(cx.now),
        Some(v) => v.as_timestamp().ok_or_else(|| {
            err(
                "InvalidParameterException",
                format!("{name} is not a valid timestamp."),
            )
        }),
    };
    let (start, end) = (time("StartTime")?, time("EndTime")?);
    if start > end {
        return Err(err(
            "InvalidTimeRangeException",
            "Start time must be earlier than end time.",
        ));
    }
    // The current key exists from the first call on, so the CLI always finds one.
    app.digest_keys.signer(cx.region, cx.now).map_err(|e| {
        tracing::error!(error = %e, "digest key unavailable");
        ApiError::new(
            "InternalFailure",
            500,
            "We encountered an internal error. Please try again.",
        )
    })?;
    let keys = app
        .digest_keys
        .public_keys(cx.region, start, end)
        .map_err(|e| {
            tracing::error!(error = %e, "digest keys unavailable");
            ApiError::new(
                "InternalFailure",
                500,
                "We encountered an internal error. Please try again.",
            )
        })?;
    let list = keys
        .into_iter()
        .map(|k| {
            Value::structure([
                ("Value", Value::Blob(k.der)),
                ("ValidityStartTime", Value::Timestamp(k.valid_from)),
                ("ValidityEndTime", Value::Timestamp(k.valid_to)),
                ("Fingerprint", Value::string(k.fingerprint)),
            ])
        })
        .collect();
    Ok(Outcome::read(Value::structure([(
        "PublicKeyList",
        Value::List(list),
    )])))
}
