//! CloudWatch tagging: TagResource, UntagResource, ListTagsForResource
//! (`spec/cloudwatch.md` §11) for dashboards and alarms.

use trailwatch_core::tags::{validate, TagError};
use trailwatch_protocol::{ApiError, Value};

use super::{CallContext, Outcome};
use crate::app::App;

pub(super) fn map_error(err: TagError) -> ApiError {
    match err {
        TagError::InvalidParameterValue(m) => {
            ApiError::new("InvalidParameterValueException", 400, m)
                .with_query_code("InvalidParameterValue")
        }
        TagError::Storage(m) => {
            tracing::error!(error = %m, "tag storage failed");
            ApiError::new("InternalServiceFault", 500, "Internal service error.")
                .with_query_code("InternalServiceError")
        }
    }
}

fn not_found() -> ApiError {
    ApiError::new(
        "ResourceNotFoundException",
        404,
        "The specified resource does not exist.",
    )
}

/// `(Key, Value)` pairs of a `Tags` member.
pub(super) fn tag_list(v: Option<&Value>) -> Vec<(Option<String>, Option<String>)> {
    v.and_then(Value::as_list)
        .unwrap_or_default()
        .iter()
        .map(|t| {
            (
                t.get("Key").and_then(Value::as_str).map(str::to_owned),
                t.get("Value").and_then(Value::as_str).map(str::to_owned),
            )
        })
        .collect()
}

/// The ARN of an existing taggable resource of the caller, or ResourceNotFoundException.
fn existing_resource(app: &App, cx: &CallContext<'_>, input: &Value) -> Result<String, ApiError> {
    let arn = input
        .get("ResourceARN")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ApiError::new(
                "MissingRequiredParameterException",
                400,
                "The parameter ResourceARN is required.",
            )
            .with_query_code("MissingParameter")
        })?;
    let account = &cx.principal.account_id;
    if let Some(name) = arn.strip_prefix(&format!("arn:aws:cloudwatch::{account}:dashboard/")) {
        return match app.dashboards.get(account, name) {
            Ok(_) => Ok(arn.to_owned()),
            Err(trailwatch_core::dashboards::DashboardError::NotFound(_)) => Err(not_found()),
            Err(e) => Err(map_error(TagError::Storage(e.to_string()))),
        };
    }
    let alarm_prefix = format!("arn:aws:cloudwatch:{}:{account}:alarm:", cx.region);
    if let Some(name) = arn.strip_prefix(&alarm_prefix) {
        let exists = app
            .alarms
            .get(account, cx.region, name)
            .map(|a| a.is_some())
            .and_then(|found| Ok(found || app.composites.get(account, cx.region, name)?.is_some()));
        return match exists {
            Ok(true) => Ok(arn.to_owned()),
            Ok(false) => Err(not_found()),
            Err(e) => Err(map_error(TagError::Storage(e.to_string()))),
        };
    }
    if !arn.starts_with("arn:") {
        return Err(map_error(TagError::InvalidParameterValue(format!(
            "The value {arn} for parameter ResourceARN is invalid."
        ))));
    }
    // Other CloudWatch resources (insight rules, metric streams) do not exist yet.
    Err(not_found())
}

pub(super) fn tag_resource(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let arn = existing_resource(app, cx, input)?;
    let tags = validate(&tag_list(input.get("Tags")), "Tags").map_err(map_error)?;
    let changes = app.tags.tag_changes(&arn, &tags).map_err(map_error)?;
    Ok(Outcome::write(Value::empty_struct(), changes))
}

pub(super) fn untag_resource(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let arn = existing_resource(app, cx, input)?;
    let keys = input.strings("TagKeys");
    let changes = app.tags.untag_changes(&arn, &keys).map_err(map_error)?;
    Ok(Outcome::write(Value::empty_struct(), changes))
}

pub(super) fn list_tags_for_resource(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let arn = existing_resource(app, cx, input)?;
    let tags = app.tags.get(&arn).map_err(map_error)?;
    let list = tags
        .into_iter()
        .map(|(k, v)| Value::structure([("Key", Value::String(k)), ("Value", Value::String(v))]))
        .collect();
    Ok(Outcome::read(Value::structure([(
        "Tags",
        Value::List(list),
    )])))
}
