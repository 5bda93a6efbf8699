//! CloudTrail trails (`spec/cloudtrail.md` §5): names and ARNs, the stored
//! trail, validation of every CreateTrail/UpdateTrail member, basic and
//! advanced event selectors with their matching rules, Insights selectors, and
//! the delivery state the trail worker keeps.
//!
//! Writes are not applied here: the `*_change(s)` functions return catalog
//! changes that the caller commits with the call's audit record.
//!
//! # Catalog layout (version 1)
//! - `trails`, key `{account}/{homeRegion}/{name}`: JSON [`Trail`].
//! - `trails_retired`, key `{id}`: a deleted trail whose last files and final
//!   digest are still to be written; the worker removes it.
//! - `trail_delivery`, key `{id}`: JSON [`DeliveryState`], written only by
//!   the delivery worker.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use trailwatch_storage::{Catalog, CatalogOp};

use crate::digest::{LogFileEntry, PreviousDigest};

/// Live trails.
pub const TABLE: &str = "trails";
/// Deleted trails with delivery still to finish.
pub const RETIRED: &str = "trails_retired";
/// Delivery state per trail id.
pub const STATE: &str = "trail_delivery";
/// Trails per region (§5.1).
pub const MAX_TRAILS_PER_REGION: usize = 5;
/// Event selectors per trail (§5.4).
const MAX_SELECTORS: usize = 5;
/// Data resource values per trail (§5.4).
const MAX_DATA_VALUES: usize = 250;
/// Operator values over all advanced selectors (§5.4).
const MAX_ADVANCED_VALUES: usize = 500;

/// A modelled CloudTrail error: its code (`__type`) and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct TrailError {
    /// The exception name.
    pub code: &'static str,
    /// The message.
    pub message: String,
}

impl TrailError {
    /// An error with `code`.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn storage(e: impl std::fmt::Display) -> Self {
        Self::new("InternalFailure", format!("trail storage failed: {e}"))
    }
}

/// Basic event selector (§5.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BasicSelector {
    /// `ReadOnly`, `WriteOnly` or `All`.
    pub read_write_type: String,
    /// `IncludeManagementEvents`.
    pub include_management_events: bool,
    /// `DataResources`: `(Type, Values)`.
    pub data_resources: Vec<(String, Vec<String>)>,
    /// `ExcludeManagementEventSources`.
    pub exclude_management_event_sources: Vec<String>,
}

/// One field selector of an advanced selector.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FieldSelector {
    /// `Field`.
    pub field: String,
    /// `Equals`.
    pub equals: Option<Vec<String>>,
    /// `StartsWith`.
    pub starts_with: Option<Vec<String>>,
    /// `EndsWith`.
    pub ends_with: Option<Vec<String>>,
    /// `NotEquals`.
    pub not_equals: Option<Vec<String>>,
    /// `NotStartsWith`.
    pub not_starts_with: Option<Vec<String>>,
    /// `NotEndsWith`.
    pub not_ends_with: Option<Vec<String>>,
}

/// Advanced event selector (§5.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvancedSelector {
    /// `Name`.
    pub name: Option<String>,
    /// `FieldSelectors`, AND-ed.
    pub field_selectors: Vec<FieldSelector>,
}

/// The selectors in force on a trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Selectors {
    /// No custom selectors: all management events, read and write.
    #[default]
    Default,
    /// `EventSelectors`.
    Basic(Vec<BasicSelector>),
    /// `AdvancedEventSelectors`.
    Advanced(Vec<AdvancedSelector>),
}

/// `InsightSelectors` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InsightSelector {
    /// `ApiCallRateInsight` or `ApiErrorRateInsight`.
    pub insight_type: String,
    /// `EventCategories` (`Management`, `Data`).
    pub event_categories: Vec<String>,
}

/// A stored trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trail {
    /// Format version.
    pub v: u8,
    /// Unique id of this trail (a re-created trail of the same name is another trail).
    pub id: String,
    /// Owning account.
    pub account: String,
    /// Region the trail was created in.
    pub home_region: String,
    /// Name.
    pub name: String,
    /// `S3BucketName`.
    pub bucket: String,
    /// `S3KeyPrefix` (never empty).
    pub prefix: Option<String>,
    /// `SnsTopicName` as given (a name or an ARN).
    pub sns_topic: Option<String>,
    /// `IncludeGlobalServiceEvents`.
    pub include_global: bool,
    /// `IsMultiRegionTrail`.
    pub multi_region: bool,
    /// `LogFileValidationEnabled`.
    pub validation: bool,
    /// `CloudWatchLogsLogGroupArn`.
    pub cwl_group_arn: Option<String>,
    /// `CloudWatchLogsRoleArn`.
    pub cwl_role_arn: Option<String>,
    /// `KmsKeyId`.
    pub kms_key_id: Option<String>,
    /// Whether StartLogging is in force.
    pub logging: bool,
    /// Last StartLogging, epoch ms.
    pub start_logging_ms: Option<i64>,
    /// Last StopLogging, epoch ms.
    pub stop_logging_ms: Option<i64>,
    /// Event selectors.
    pub selectors: Selectors,
    /// Insights selectors (empty: Insights off).
    pub insights: Vec<InsightSelector>,
}

impl Trail {
    /// `arn:aws:cloudtrail:<home>:<account>:trail/<name>`.
    pub fn arn(&self) -> String {
        trail_arn(&self.home_region, &self.account, &self.name)
    }

    /// The catalog key of a live trail.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.account, self.home_region, self.name)
    }

    /// `SnsTopicARN` of the trail's topic.
    pub fn sns_topic_arn(&self) -> Option<String> {
        self.sns_topic.as_ref().map(|t| {
            if t.starts_with("arn:") {
                t.clone()
            } else {
                format!("arn:aws:sns:{}:{}:{t}", self.home_region, self.account)
            }
        })
    }

    /// The bare topic name (the legacy `SnsTopicName` member).
    pub fn sns_topic_name(&self) -> Option<String> {
        self.sns_topic
            .as_ref()
            .map(|t| t.rsplit(':').next().unwrap_or(t).to_owned())
    }

    /// Whether a record of `region` belongs to this trail.
    pub fn covers_region(&self, region: &str) -> bool {
        self.multi_region || region == self.home_region
    }

    /// Whether the trail selects `record` (selectors OR-ed, §5.4).
    pub fn selects(&self, record: &RecordView<'_>) -> bool {
        if record.category == "Insight" {
            return !self.insights.is_empty();
        }
        match &self.selectors {
            Selectors::Default => record.category == "Management",
            Selectors::Basic(list) => list.iter().any(|s| basic_matches(s, record)),
            Selectors::Advanced(list) => list.iter().any(|s| advanced_matches(s, record)),
        }
    }
}

/// A trail's ARN.
pub fn trail_arn(region: &str, account: &str, name: &str) -> String {
    format!("arn:aws:cloudtrail:{region}:{account}:trail/{name}")
}

/// The fields of a record that selectors look at.
#[derive(Debug, Clone, Default)]
pub struct RecordView<'a> {
    /// `eventCategory`.
    pub category: &'a str,
    /// `eventSource`.
    pub event_source: &'a str,
    /// `eventName`.
    pub event_name: &'a str,
    /// `eventType`.
    pub event_type: &'a str,
    /// `readOnly`.
    pub read_only: bool,
    /// `resources[].type` and `.ARN`.
    pub resources: Vec<(&'a str, &'a str)>,
    /// `userIdentity.arn`.
    pub user_arn: Option<&'a str>,
    /// `errorCode`.
    pub error_code: Option<&'a str>,
    /// `sessionCredentialFromConsole`.
    pub session_console: Option<&'a str>,
    /// `vpcEndpointId`.
    pub vpc_endpoint_id: Option<&'a str>,
}

impl<'a> RecordView<'a> {
    /// The view of a parsed record.
    pub fn of(record: &'a serde_json::Value) -> Self {
        let s = |k: &str| record.get(k).and_then(serde_json::Value::as_str);
        let resources = record
            .get("resources")
            .and_then(serde_json::Value::as_array)
            .map(|list| {
                list.iter()
                    .map(|r| {
                        (
                            r.get("type")
                                .and_then(serde_json::Value::as_str)
                                .unwrap_or(""),
                            r.get("ARN")
                                .and_then(serde_json::Value::as_str)
                                .unwrap_or(""),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            category: s("eventCategory").unwrap_or("Management"),
            event_source: s("eventSource").unwrap_or(""),
            event_name: s("eventName").unwrap_or(""),
            event_type: s("eventType").unwrap_or(""),
            read_only: record
                .get("readOnly")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false),
            resources,
            user_arn: record
                .get("userIdentity")
                .and_then(|u| u.get("arn"))
                .and_then(serde_json::Value::as_str),
            error_code: s("errorCode"),
            session_console: s("sessionCredentialFromConsole"),
            vpc_endpoint_id: s("vpcEndpointId"),
        }
    }
}

fn read_write_matches(kind: &str, read_only: bool) -> bool {
    match kind {
        "ReadOnly" => read_only,
        "WriteOnly" => !read_only,
        _ => true,
    }
}

fn basic_matches(s: &BasicSelector, r: &RecordView<'_>) -> bool {
    if !read_write_matches(&s.read_write_type, r.read_only) {
        return false;
    }
    match r.category {
        "Management" => {
            s.include_management_events
                && !s
                    .exclude_management_event_sources
                    .iter()
                    .any(|e| e == r.event_source)
        }
        "Data" => s.data_resources.iter().any(|(ty, values)| {
            r.resources.iter().any(|(rt, arn)| {
                rt == ty
                    && values
                        .iter()
                        .any(|v| arn.starts_with(v.as_str()) || is_type_wildcard(v, ty))
            })
        }),
        _ => false,
    }
}

/// A data resource value that names every resource of its type (`arn:aws:s3`,
/// `arn:aws:logs`, …), as AWS's "all" values do.
fn is_type_wildcard(value: &str, ty: &str) -> bool {
    let service = ty.split("::").nth(1).unwrap_or("").to_ascii_lowercase();
    value == format!("arn:aws:{service}") || value == format!("arn:aws:{service}:")
}

fn field_values<'a>(field: &str, r: &'a RecordView<'a>) -> Vec<Option<&'a str>> {
    match field {
        "eventCategory" => vec![Some(r.category)],
        "eventSource" => vec![Some(r.event_source)],
        "eventName" => vec![Some(r.event_name)],
        "eventType" => vec![Some(r.event_type)],
        "readOnly" => vec![Some(if r.read_only { "true" } else { "false" })],
        "resources.type" => r.resources.iter().map(|(t, _)| Some(*t)).collect(),
        "resources.ARN" => r.resources.iter().map(|(_, a)| Some(*a)).collect(),
        "userIdentity.arn" => vec![r.user_arn],
        "errorCode" => vec![r.error_code],
        "sessionCredentialFromConsole" => vec![r.session_console],
        "vpcEndpointId" => vec![r.vpc_endpoint_id],
        _ => vec![None],
    }
}

fn field_matches(f: &FieldSelector, r: &RecordView<'_>) -> bool {
    let values = field_values(&f.field, r);
    let values: Vec<Option<&str>> = if values.is_empty() {
        vec![None]
    } else {
        values
    };
    // A record with several resources matches if one of them satisfies the
    // whole field selector.
    values.iter().any(|v| {
        let v = v.unwrap_or("");
        let pos = |list: &Option<Vec<String>>, f: &dyn Fn(&str) -> bool| {
            list.as_ref().is_none_or(|l| l.iter().any(|x| f(x)))
        };
        let neg = |list: &Option<Vec<String>>, f: &dyn Fn(&str) -> bool| {
            list.as_ref().is_none_or(|l| !l.iter().any(|x| f(x)))
        };
        pos(&f.equals, &|x| v == x)
            && pos(&f.starts_with, &|x| v.starts_with(x))
            && pos(&f.ends_with, &|x| v.ends_with(x))
            && neg(&f.not_equals, &|x| v == x)
            && neg(&f.not_starts_with, &|x| v.starts_with(x))
            && neg(&f.not_ends_with, &|x| v.ends_with(x))
    })
}

/// Whether any of `selectors` selects `record` (§5.4's OR/AND rules).
pub fn advanced_selects(selectors: &[AdvancedSelector], record: &RecordView<'_>) -> bool {
    selectors.iter().any(|s| advanced_matches(s, record))
}

fn advanced_matches(s: &AdvancedSelector, r: &RecordView<'_>) -> bool {
    s.field_selectors.iter().all(|f| field_matches(f, r))
}

const ADVANCED_FIELDS: [&str; 11] = [
    "eventCategory",
    "eventSource",
    "eventName",
    "eventType",
    "readOnly",
    "resources.type",
    "resources.ARN",
    "sessionCredentialFromConsole",
    "userIdentity.arn",
    "errorCode",
    "vpcEndpointId",
];

/// Resource types a data selector may name: AWS's basic types and trailwatch's own (§5.4, §8).
pub const DATA_RESOURCE_TYPES: [&str; 7] = [
    "AWS::S3::Object",
    "AWS::Lambda::Function",
    "AWS::DynamoDB::Table",
    "AWS::CloudWatch::Metric",
    "AWS::Logs::LogGroup",
    "AWS::CloudTrail::Channel",
    "AWS::S3::AccessPoint",
];

fn selectors_error(message: impl Into<String>) -> TrailError {
    TrailError::new("InvalidEventSelectorsException", message)
}

/// Validates basic selectors (§5.4).
pub fn validate_basic(list: &[BasicSelector]) -> Result<(), TrailError> {
    if list.is_empty() || list.len() > MAX_SELECTORS {
        return Err(selectors_error(
            "A trail can have between 1 and 5 event selectors.",
        ));
    }
    let mut values = 0;
    for s in list {
        if !matches!(s.read_write_type.as_str(), "ReadOnly" | "WriteOnly" | "All") {
            return Err(selectors_error(format!(
                "Value {} for ReadWriteType is invalid.",
                s.read_write_type
            )));
        }
        for (ty, vals) in &s.data_resources {
            if !DATA_RESOURCE_TYPES.contains(&ty.as_str()) {
                return Err(selectors_error(format!(
                    "Invalid data resource type: {ty}."
                )));
            }
            if vals.iter().any(|v| v.is_empty() || !v.starts_with("arn:")) {
                return Err(selectors_error(format!(
                    "Invalid data resource value for type {ty}."
                )));
            }
            values += vals.len();
        }
    }
    if values > MAX_DATA_VALUES {
        return Err(selectors_error(
            "A trail can have at most 250 data resource values.",
        ));
    }
    Ok(())
}

/// Validates advanced selectors (§5.4).
pub fn validate_advanced(list: &[AdvancedSelector]) -> Result<(), TrailError> {
    if list.is_empty() || list.len() > MAX_SELECTORS {
        return Err(selectors_error(
            "A trail can have between 1 and 5 advanced event selectors.",
        ));
    }
    let mut total = 0;
    for s in list {
        if s.name.as_ref().is_some_and(|n| n.chars().count() > 1000) {
            return Err(selectors_error(
                "Advanced event selector names are at most 1000 characters.",
            ));
        }
        if s.field_selectors.is_empty() {
            return Err(selectors_error(
                "Each advanced event selector needs at least one field selector.",
            ));
        }
        let category = s
            .field_selectors
            .iter()
            .find(|f| f.field == "eventCategory")
            .ok_or_else(|| {
                selectors_error("Each advanced event selector must specify eventCategory.")
            })?;
        let categories = category.equals.clone().unwrap_or_default();
        for f in &s.field_selectors {
            if f.field.is_empty()
                || f.field.len() > 1000
                || !f
                    .field
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '.' || c == '|')
            {
                return Err(selectors_error(format!("Invalid field {}.", f.field)));
            }
            if !ADVANCED_FIELDS.contains(&f.field.as_str()) {
                return Err(selectors_error(format!(
                    "Field {} is not a valid field for an advanced event selector.",
                    f.field
                )));
            }
            let ops = [
                &f.equals,
                &f.starts_with,
                &f.ends_with,
                &f.not_equals,
                &f.not_starts_with,
                &f.not_ends_with,
            ];
            if ops.iter().all(|o| o.is_none()) {
                return Err(selectors_error(format!(
                    "Field selector {} has no operator.",
                    f.field
                )));
            }
            for op in ops.iter().copied().flatten() {
                if op.is_empty() {
                    return Err(selectors_error(format!(
                        "An operator of field {} has no values.",
                        f.field
                    )));
                }
                if op.iter().any(|v| v.is_empty() || v.chars().count() > 2048) {
                    return Err(selectors_error(format!(
                        "Values of field {} must be 1 to 2048 characters.",
                        f.field
                    )));
                }
                total += op.len();
            }
            let equals_only = matches!(
                f.field.as_str(),
                "eventCategory" | "readOnly" | "resources.type"
            );
            let only_equals = f.starts_with.is_none()
                && f.ends_with.is_none()
                && f.not_equals.is_none()
                && f.not_starts_with.is_none()
                && f.not_ends_with.is_none();
            if equals_only && !only_equals {
                return Err(selectors_error(format!(
                    "Field {} supports only the Equals operator.",
                    f.field
                )));
            }
            let equals = f.equals.clone().unwrap_or_default();
            match f.field.as_str() {
                "eventCategory" => {
                    if let Some(bad) = equals
                        .iter()
                        .find(|v| !matches!(v.as_str(), "Management" | "Data" | "NetworkActivity"))
                    {
                        return Err(selectors_error(format!(
                            "Value {bad} for eventCategory is invalid."
                        )));
                    }
                }
                "readOnly" => {
                    if let Some(bad) = equals
                        .iter()
                        .find(|v| !matches!(v.as_str(), "true" | "false"))
                    {
                        return Err(selectors_error(format!(
                            "Value {bad} for readOnly is invalid."
                        )));
                    }
                }
                "resources.type" => {
                    if let Some(bad) = equals
                        .iter()
                        .find(|v| !DATA_RESOURCE_TYPES.contains(&v.as_str()))
                    {
                        return Err(selectors_error(format!(
                            "Value {bad} for resources.type is invalid."
                        )));
                    }
                }
                _ => {}
            }
        }
        let data = categories.iter().any(|c| c == "Data");
        if data
            && !s
                .field_selectors
                .iter()
                .any(|f| f.field == "resources.type")
        {
            return Err(selectors_error(
                "resources.type is required for data event selectors.",
            ));
        }
    }
    if total > MAX_ADVANCED_VALUES {
        return Err(selectors_error(
            "Advanced event selectors can have at most 500 values in total.",
        ));
    }
    Ok(())
}

/// Validates Insights selectors against the trail's selectors (§5.4).
pub fn validate_insights(list: &[InsightSelector], trail: &Trail) -> Result<(), TrailError> {
    let bad = |m: String| TrailError::new("InvalidInsightSelectorsException", m);
    let mut seen = Vec::new();
    for s in list {
        if !matches!(
            s.insight_type.as_str(),
            "ApiCallRateInsight" | "ApiErrorRateInsight"
        ) {
            return Err(bad(format!(
                "Value {} for InsightType is invalid.",
                s.insight_type
            )));
        }
        if seen.contains(&s.insight_type) {
            return Err(bad(format!("Duplicate InsightType {}.", s.insight_type)));
        }
        seen.push(s.insight_type.clone());
        if let Some(c) = s
            .event_categories
            .iter()
            .find(|c| !matches!(c.as_str(), "Management" | "Data"))
        {
            return Err(bad(format!("Value {c} for EventCategories is invalid.")));
        }
    }
    // Call-rate Insights need write management events; error-rate read or write.
    let probe = |read_only: bool| RecordView {
        category: "Management",
        read_only,
        ..RecordView::default()
    };
    let logs_writes = trail.selects(&probe(false));
    let logs_reads = trail.selects(&probe(true));
    for s in list {
        let ok = match s.insight_type.as_str() {
            "ApiCallRateInsight" => logs_writes,
            _ => logs_writes || logs_reads,
        };
        if !ok {
            return Err(TrailError::new(
                "InvalidParameterCombinationException",
                format!(
                    "{} requires the trail to log {} management events.",
                    s.insight_type,
                    if s.insight_type == "ApiCallRateInsight" {
                        "write"
                    } else {
                        "read or write"
                    }
                ),
            ));
        }
    }
    Ok(())
}

/// Trail name rules (§5.1).
pub fn validate_name(name: &str) -> Result<(), TrailError> {
    let bad = || {
        TrailError::new(
            "InvalidTrailNameException",
            format!("Trail name {name} is invalid. Trail names must start with a letter or number, end with a letter or number, be 3 to 128 characters long, contain only ASCII letters, numbers, periods, underscores and dashes, not have adjacent periods, underscores or dashes, and not look like an IP address."),
        )
    };
    let bytes = name.as_bytes();
    if !(3..=128).contains(&bytes.len()) {
        return Err(bad());
    }
    let special = |b: u8| matches!(b, b'.' | b'_' | b'-');
    if !bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || special(*b))
    {
        return Err(bad());
    }
    if !bytes[0].is_ascii_alphanumeric() || !bytes[bytes.len() - 1].is_ascii_alphanumeric() {
        return Err(bad());
    }
    if bytes.windows(2).any(|w| special(w[0]) && special(w[1])) {
        return Err(bad());
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(bad());
    }
    Ok(())
}

/// S3 key prefix rules (§2.4); `None` for an empty prefix.
pub fn validate_prefix(prefix: &str) -> Result<Option<String>, TrailError> {
    if prefix.is_empty() {
        return Ok(None);
    }
    if prefix.chars().count() > 200
        || prefix.starts_with('/')
        || prefix.ends_with('/')
        || prefix.contains("//")
        || prefix.chars().any(char::is_control)
    {
        return Err(TrailError::new(
            "InvalidS3PrefixException",
            format!("Prefix {prefix} is invalid."),
        ));
    }
    Ok(Some(prefix.to_owned()))
}

/// S3 bucket name rules (§2.5).
pub fn validate_bucket(name: &str) -> Result<(), TrailError> {
    let bytes = name.as_bytes();
    let ok = (3..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.' || *b == b'-')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..")
        && name.parse::<std::net::Ipv4Addr>().is_err();
    if ok {
        Ok(())
    } else {
        Err(TrailError::new(
            "InvalidS3BucketNameException",
            format!("Bucket name {name} is not valid."),
        ))
    }
}

/// SNS topic (name or ARN) rules (§2.6).
pub fn validate_topic(topic: &str) -> Result<(), TrailError> {
    let name = if topic.starts_with("arn:") {
        let parts: Vec<&str> = topic.splitn(6, ':').collect();
        if parts.len() != 6 || parts[2] != "sns" {
            return Err(TrailError::new(
                "InvalidSnsTopicNameException",
                format!("Topic {topic} is not valid."),
            ));
        }
        parts[5]
    } else {
        topic
    };
    let ok = (1..=256).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(TrailError::new(
            "InvalidSnsTopicNameException",
            format!("Topic {topic} is not valid."),
        ))
    }
}

/// The log group name of a `CloudWatchLogsLogGroupArn` (§2.7), with or
/// without its trailing `:*`; `(region, account, name)`.
pub fn parse_log_group_arn(arn: &str) -> Result<(String, String, String), TrailError> {
    let bad = || {
        TrailError::new(
            "InvalidCloudWatchLogsLogGroupArnException",
            format!("CloudWatch Logs log group ARN {arn} is not valid."),
        )
    };
    let trimmed = arn.strip_suffix(":*").unwrap_or(arn);
    let parts: Vec<&str> = trimmed.splitn(7, ':').collect();
    if parts.len() != 7
        || parts[0] != "arn"
        || parts[2] != "logs"
        || parts[5] != "log-group"
        || parts[3].is_empty()
        || parts[4].len() != 12
    {
        return Err(bad());
    }
    let name = parts[6];
    if name.is_empty()
        || name.len() > 512
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-/.#".contains(&b))
    {
        return Err(bad());
    }
    Ok((parts[3].to_owned(), parts[4].to_owned(), name.to_owned()))
}

/// `arn:aws:iam::<account>:role/<name>` (§2.7).
pub fn validate_role_arn(arn: &str) -> Result<(), TrailError> {
    let ok = arn
        .strip_prefix("arn:aws:iam::")
        .and_then(|rest| rest.split_once(":role/"))
        .is_some_and(|(account, name)| {
            account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty()
        });
    if ok {
        Ok(())
    } else {
        Err(TrailError::new(
            "InvalidCloudWatchLogsRoleArnException",
            format!("CloudWatch Logs role ARN {arn} is not valid."),
        ))
    }
}

/// What a `Name`/`TrailName` member names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrailRef {
    /// A bare name, looked up in the caller's region (and as a shadow trail).
    Name(String),
    /// An ARN: `(region, account, name)`.
    Arn(String, String, String),
}

/// Parses a name-or-ARN member (§5.1).
pub fn parse_ref(value: &str) -> Result<TrailRef, TrailError> {
    if !value.starts_with("arn:") {
        validate_name(value)?;
        return Ok(TrailRef::Name(value.to_owned()));
    }
    let bad = || {
        TrailError::new(
            "CloudTrailARNInvalidException",
            format!("{value} is not a valid trail ARN. Trail ARNs must be of the form arn:aws:cloudtrail:region:account-id:trail/trail-name."),
        )
    };
    let parts: Vec<&str> = value.splitn(6, ':').collect();
    if parts.len() != 6 || parts[2] != "cloudtrail" || parts[4].len() != 12 {
        return Err(bad());
    }
    let name = parts[5].strip_prefix("trail/").ok_or_else(bad)?;
    validate_name(name).map_err(|_| bad())?;
    Ok(TrailRef::Arn(
        parts[3].to_owned(),
        parts[4].to_owned(),
        name.to_owned(),
    ))
}

/// Delivery facts GetTrailStatus reports, and the worker's durable progress.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeliveryState {
    /// Format version.
    pub v: u8,
    /// Every feed record through this sequence number is delivered (or not selected).
    pub cursor: u64,
    /// Whether logging was on at `cursor` (the worker follows Start/StopLogging in record order).
    pub logging: bool,
    /// Files written but not yet committed: rewritten under the same keys after a crash.
    pub intent: Option<Intent>,
    /// The digest chain in progress, when validation is on.
    pub chain: Option<Chain>,
    /// `LatestDeliveryTime`, epoch ms.
    pub latest_delivery_ms: Option<i64>,
    /// `LatestDeliveryError`.
    pub latest_delivery_error: Option<String>,
    /// `LatestDeliveryAttemptTime`, epoch ms.
    pub latest_delivery_attempt_ms: Option<i64>,
    /// `LatestDigestDeliveryTime`, epoch ms.
    pub latest_digest_ms: Option<i64>,
    /// `LatestDigestDeliveryError`.
    pub latest_digest_error: Option<String>,
    /// `LatestNotificationTime`, epoch ms.
    pub latest_notification_ms: Option<i64>,
    /// `LatestNotificationError`.
    pub latest_notification_error: Option<String>,
    /// `LatestNotificationAttemptTime`, epoch ms.
    pub latest_notification_attempt_ms: Option<i64>,
    /// `LatestCloudWatchLogsDeliveryTime`, epoch ms.
    pub latest_cwl_ms: Option<i64>,
    /// `LatestCloudWatchLogsDeliveryError`.
    pub latest_cwl_error: Option<String>,
}

/// Files of one delivery, fixed before they are written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// The cursor once these files are committed.
    pub through: u64,
    /// Logging state at `through`.
    pub logging: bool,
    /// Delivery time (names the keys).
    pub delivered_ms: i64,
    /// One entry per file.
    pub files: Vec<IntentFile>,
}

/// One planned log file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentFile {
    /// Region folder.
    pub region: String,
    /// Bucket.
    pub bucket: String,
    /// Full key.
    pub key: String,
    /// Feed sequence numbers of its records.
    pub seqs: Vec<u64>,
}

/// A digest chain in progress (§3.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    /// Start of the current window, epoch seconds.
    pub window_start: i64,
    /// Per region: the previous digest and the files delivered in this window.
    pub regions: BTreeMap<String, RegionChain>,
}

/// One region's link of a chain.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RegionChain {
    /// The last digest written (none at chain start).
    pub previous: Option<PreviousDigest>,
    /// Log files delivered in the current window.
    pub files: Vec<LogFileEntry>,
}

/// Trails in the catalog.
#[derive(Debug, Clone)]
pub struct Trails {
    catalog: Arc<dyn Catalog>,
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, TrailError> {
    serde_json::from_slice(bytes).map_err(TrailError::storage)
}

impl Trails {
    /// Trails stored in `catalog`.
    pub fn new(catalog: Arc<dyn Catalog>) -> Self {
        Self { catalog }
    }

    /// The live trail `name` of `account` created in `region`.
    pub fn get(
        &self,
        account: &str,
        region: &str,
        name: &str,
    ) -> Result<Option<Trail>, TrailError> {
        self.catalog
            .get(TABLE, &format!("{account}/{region}/{name}"))
            .map_err(TrailError::storage)?
            .map(|b| decode(&b))
            .transpose()
    }

    /// Every live trail of `account` (all regions), by home region and name.
    pub fn of_account(&self, account: &str) -> Result<Vec<Trail>, TrailError> {
        self.catalog
            .list(TABLE, &format!("{account}/"))
            .map_err(TrailError::storage)?
            .iter()
            .map(|(_, v)| decode(v))
            .collect()
    }

    /// Every live trail.
    pub fn all(&self) -> Result<Vec<Trail>, TrailError> {
        self.catalog
            .list(TABLE, "")
            .map_err(TrailError::storage)?
            .iter()
            .map(|(_, v)| decode(v))
            .collect()
    }

    /// Deleted trails whose delivery is not finished.
    pub fn retired(&self) -> Result<Vec<Trail>, TrailError> {
        self.catalog
            .list(RETIRED, "")
            .map_err(TrailError::storage)?
            .iter()
            .map(|(_, v)| decode(v))
            .collect()
    }

    /// Finds the trail a `Name` member names, for `account` calling in `region`:
    /// a name matches a trail of the region, or a multi-region trail of another
    /// home region (a shadow trail).
    pub fn resolve(&self, account: &str, region: &str, value: &str) -> Result<Trail, TrailError> {
        let not_found = || {
            TrailError::new(
                "TrailNotFoundException",
                format!(
                    "Unknown trail: {} for the user: {account}",
                    match parse_ref(value) {
                        Ok(TrailRef::Arn(..)) => value.to_owned(),
                        _ => trail_arn(region, account, value),
                    }
                ),
            )
        };
        match parse_ref(value)? {
            TrailRef::Arn(home, owner, name) => {
                if owner != account {
                    return Err(not_found());
                }
                let trail = self.get(account, &home, &name)?.ok_or_else(not_found)?;
                if home != region && !trail.multi_region {
                    return Err(not_found());
                }
                Ok(trail)
            }
            TrailRef::Name(name) => {
                if let Some(t) = self.get(account, region, &name)? {
                    return Ok(t);
                }
                self.of_account(account)?
                    .into_iter()
                    .find(|t| t.name == name && t.multi_region)
                    .ok_or_else(not_found)
            }
        }
    }

    /// The change that stores `trail`.
    pub fn put_change(trail: &Trail) -> CatalogOp {
        CatalogOp::put(
            TABLE,
            trail.key(),
            serde_json::to_vec(trail).unwrap_or_default(),
        )
    }

    /// The changes that delete `trail`: it leaves the live table and waits in
    /// the retired table until its last files are written.
    pub fn delete_changes(trail: &Trail) -> Vec<CatalogOp> {
        let mut retired = trail.clone();
        retired.logging = false;
        vec![
            CatalogOp::delete(TABLE, trail.key()),
            CatalogOp::put(
                RETIRED,
                trail.id.clone(),
                serde_json::to_vec(&retired).unwrap_or_default(),
            ),
        ]
    }

    /// The delivery state of trail `id`.
    pub fn state(&self, id: &str) -> Result<DeliveryState, TrailError> {
        Ok(self.stored_state(id)?.unwrap_or_default())
    }

    /// The delivery state of trail `id`, if the worker has committed one.
    pub fn stored_state(&self, id: &str) -> Result<Option<DeliveryState>, TrailError> {
        self.catalog
            .get(STATE, id)
            .map_err(TrailError::storage)?
            .map(|b| decode(&b))
            .transpose()
    }

    /// The change that stores the delivery state of trail `id`.
    pub fn state_change(id: &str, state: &DeliveryState) -> CatalogOp {
        CatalogOp::put(STATE, id, serde_json::to_vec(state).unwrap_or_default())
    }

    /// Applies worker changes (delivery state, retired trails) to the catalog.
    pub fn commit(&self, ops: &[CatalogOp]) -> Result<(), TrailError> {
        self.catalog.commit(ops).map_err(TrailError::storage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["abc", "my-trail", "a.b_c-d", "Trail1", &"a".repeat(128)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "-abc",
            "abc-",
            "my--trail",
            "my-_trail",
            "a..b",
            "192.168.5.4",
            "a b",
            "tráil",
            &"a".repeat(129),
        ] {
            assert_eq!(
                validate_name(bad).map_err(|e| e.code),
                Err("InvalidTrailNameException"),
                "{bad}"
            );
        }
    }

    #[test]
    fn refs() {
        assert_eq!(
            parse_ref("arn:aws:cloudtrail:eu-west-1:111122223333:trail/t-1"),
            Ok(TrailRef::Arn(
                "eu-west-1".into(),
                "111122223333".into(),
                "t-1".into()
            ))
        );
        for bad in [
            "arn:aws:cloudtrail:eu-west-1:111122223333:t-1",
            "arn:aws:logs:eu-west-1:111122223333:trail/t-1",
            "arn:aws:cloudtrail:eu-west-1:1111:trail/t-1",
        ] {
            assert_eq!(
                parse_ref(bad).map_err(|e| e.code),
                Err("CloudTrailARNInvalidException")
            );
        }
    }

    #[test]
    fn prefixes_buckets_topics_arns() {
        assert_eq!(validate_prefix(""), Ok(None));
        assert_eq!(validate_prefix("a/b"), Ok(Some("a/b".into())));
        for bad in ["/a", "a/", "a//b", "a\nb", &"p".repeat(201)] {
            assert!(validate_prefix(bad).is_err(), "{bad:?}");
        }
        assert!(validate_bucket("my.bucket-1").is_ok());
        for bad in ["ab", "My-bucket", "-ab", "a..b", "10.0.0.1", "ab_c"] {
            assert!(validate_bucket(bad).is_err(), "{bad}");
        }
        assert!(validate_topic("alerts_1-x").is_ok());
        assert!(validate_topic("arn:aws:sns:us-east-1:111122223333:alerts").is_ok());
        assert!(validate_topic("bad topic").is_err());
        assert_eq!(
            parse_log_group_arn("arn:aws:logs:us-east-1:111122223333:log-group:ct/group:*"),
            Ok(("us-east-1".into(), "111122223333".into(), "ct/group".into()))
        );
        assert!(parse_log_group_arn("arn:aws:logs:us-east-1:111122223333:ct").is_err());
        assert!(validate_role_arn("arn:aws:iam::111122223333:role/ct").is_ok());
        assert!(validate_role_arn("arn:aws:iam::1111:role/ct").is_err());
    }

    fn record(
        category: &'static str,
        source: &'static str,
        read_only: bool,
    ) -> RecordView<'static> {
        RecordView {
            category,
            event_source: source,
            event_name: "PutMetricAlarm",
            read_only,
            ..RecordView::default()
        }
    }

    fn trail(selectors: Selectors) -> Trail {
        Trail {
            v: 1,
            id: "id".into(),
            account: "111122223333".into(),
            home_region: "us-east-1".into(),
            name: "t1".into(),
            bucket: "b".into(),
            prefix: None,
            sns_topic: None,
            include_global: true,
            multi_region: false,
            validation: false,
            cwl_group_arn: None,
            cwl_role_arn: None,
            kms_key_id: None,
            logging: true,
            start_logging_ms: None,
            stop_logging_ms: None,
            selectors,
            insights: vec![],
        }
    }

    #[test]
    fn default_and_basic_selectors() {
        let t = trail(Selectors::Default);
        assert!(t.selects(&record("Management", "monitoring.amazonaws.com", true)));
        assert!(!t.selects(&record("Data", "monitoring.amazonaws.com", false)));
        let t = trail(Selectors::Basic(vec![BasicSelector {
            read_write_type: "WriteOnly".into(),
            include_management_events: true,
            data_resources: vec![(
                "AWS::Logs::LogGroup".into(),
                vec!["arn:aws:logs:us-east-1:111122223333:log-group:app".into()],
            )],
            exclude_management_event_sources: vec!["logs.amazonaws.com".into()],
        }]));
        assert!(t.selects(&record("Management", "monitoring.amazonaws.com", false)));
        assert!(!t.selects(&record("Management", "monitoring.amazonaws.com", true)));
        assert!(!t.selects(&record("Management", "logs.amazonaws.com", false)));
        let mut data = record("Data", "logs.amazonaws.com", false);
        data.resources = vec![(
            "AWS::Logs::LogGroup",
            "arn:aws:logs:us-east-1:111122223333:log-group:app-1",
        )];
        assert!(t.selects(&data));
        data.resources = vec![(
            "AWS::Logs::LogGroup",
            "arn:aws:logs:us-east-1:111122223333:log-group:other",
        )];
        assert!(!t.selects(&data));
    }

    fn fs(field: &str, f: impl FnOnce(&mut FieldSelector)) -> FieldSelector {
        let mut s = FieldSelector {
            field: field.into(),
            ..FieldSelector::default()
        };
        f(&mut s);
        s
    }

    #[test]
    fn advanced_selectors_follow_the_and_or_rules() {
        let selectors = vec![
            AdvancedSelector {
                name: Some("mgmt-writes".into()),
                field_selectors: vec![
                    fs("eventCategory", |s| {
                        s.equals = Some(vec!["Management".into()])
                    }),
                    fs("readOnly", |s| s.equals = Some(vec!["false".into()])),
                    fs("eventName", |s| {
                        s.not_starts_with = Some(vec!["Delete".into(), "Tag".into()])
                    }),
                ],
            },
            AdvancedSelector {
                name: Some("log-data".into()),
                field_selectors: vec![
                    fs("eventCategory", |s| s.equals = Some(vec!["Data".into()])),
                    fs("resources.type", |s| {
                        s.equals = Some(vec!["AWS::Logs::LogGroup".into()])
                    }),
                ],
            },
        ];
        validate_advanced(&selectors).expect("valid");
        let t = trail(Selectors::Advanced(selectors));
        let mut r = record("Management", "monitoring.amazonaws.com", false);
        assert!(t.selects(&r));
        r.event_name = "DeleteAlarms";
        assert!(!t.selects(&r));
        r.event_name = "TagResource";
        assert!(!t.selects(&r));
        r.event_name = "PutMetricAlarm";
        r.read_only = true;
        assert!(!t.selects(&r));
        let mut d = record("Data", "logs.amazonaws.com", false);
        d.resources = vec![("AWS::Logs::LogGroup", "arn:aws:logs:x")];
        assert!(t.selects(&d));
        d.resources = vec![("AWS::CloudWatch::Metric", "arn:aws:cloudwatch:x")];
        assert!(!t.selects(&d));
    }

    #[test]
    fn advanced_selector_validation() {
        let one = |f: Vec<FieldSelector>| {
            validate_advanced(&[AdvancedSelector {
                name: None,
                field_selectors: f,
            }])
            .map_err(|e| e.code)
        };
        let cat = |v: &str| fs("eventCategory", |s| s.equals = Some(vec![v.into()]));
        assert_eq!(one(vec![cat("Management")]), Ok(()));
        assert!(one(vec![cat("Bogus")]).is_err());
        assert!(one(vec![fs("eventName", |s| s.equals = Some(vec!["X".into()]))]).is_err());
        assert!(one(vec![cat("Data")]).is_err(), "data needs resources.type");
        assert!(one(vec![
            cat("Management"),
            fs("readOnly", |s| s.starts_with = Some(vec!["t".into()]))
        ])
        .is_err());
        assert!(one(vec![
            cat("Management"),
            fs("nope", |s| s.equals = Some(vec!["x".into()]))
        ])
        .is_err());
        assert!(one(vec![
            cat("Management"),
            fs("eventName", |s| s.equals = Some(vec![]))
        ])
        .is_err());
    }
}
