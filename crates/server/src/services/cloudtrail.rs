//! CloudTrail control plane. Today: `LookupEvents` (`spec/cloudtrail.md` §4).

use trailwatch_core::audit::{LookupAttribute, LookupError, LookupQuery};
use trailwatch_protocol::{ApiError, Value};

use super::{CallContext, Outcome};
use crate::app::App;

fn invalid_parameter(message: impl Into<String>) -> ApiError {
    ApiError::new("InvalidParameterException", 400, message)
}

fn map_lookup_error(err: LookupError) -> ApiError {
    let code = match &err {
        LookupError::InvalidLookupAttributes(_) => "InvalidLookupAttributesException",
        LookupError::InvalidTimeRange => "InvalidTimeRangeException",
        LookupError::InvalidMaxResults => "InvalidMaxResultsException",
        LookupError::InvalidNextToken => "InvalidNextTokenException",
        LookupError::InvalidEventCategory(_) => "InvalidEventCategoryException",
        LookupError::Storage(_) => {
            return ApiError::new(
                "InternalFailure",
                500,
                "We encountered an internal error. Please try again.",
            )
        }
    };
    ApiError::new(code, 400, err.to_string())
}

fn parse_query(cx: &CallContext<'_>, input: &Value) -> Result<LookupQuery, ApiError> {
    let mut q = LookupQuery {
        account_id: cx.principal.account_id.clone(),
        region: cx.region.to_owned(),
        ..LookupQuery::default()
    };
    if let Some(attrs) = input.get("LookupAttributes") {
        let attrs = attrs
            .as_list()
            .ok_or_else(|| invalid_parameter("LookupAttributes must be a list."))?;
        if attrs.len() > 1 {
            return Err(map_lookup_error(LookupError::InvalidLookupAttributes(
                "You cannot specify more than one lookup attribute.".to_owned(),
            )));
        }
        if let Some(attr) = attrs.first() {
            let key = attr
                .get("AttributeKey")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let value = attr
                .get("AttributeValue")
                .and_then(Value::as_str)
                .unwrap_or_default();
            q.attribute = Some(LookupAttribute::parse(key, value).map_err(map_lookup_error)?);
        }
    }
    let time = |name: &str| match input.get(name) {
        None => Ok(None),
        Some(v) => v.as_timestamp().map(Some).ok_or_else(|| {
            ApiError::new(
                "InvalidTimeRangeException",
                400,
                format!("{name} is not a valid timestamp."),
            )
        }),
    };
    q.start = time("StartTime")?;
    q.end = time("EndTime")?;
    if let Some(category) = input.get("EventCategory") {
        match category.as_str() {
            Some("insight") => q.insight = true,
            other => {
                return Err(map_lookup_error(LookupError::InvalidEventCategory(
                    other.unwrap_or_default().to_owned(),
                )))
            }
        }
    }
    if let Some(max) = input.get("MaxResults") {
        q.max_results = Some(
            max.as_i64()
                .ok_or_else(|| map_lookup_error(LookupError::InvalidMaxResults))?,
        );
    }
    if let Some(token) = input.get("NextToken") {
        q.next_token = Some(
            token
                .as_str()
                .ok_or_else(|| map_lookup_error(LookupError::InvalidNextToken))?
                .to_owned(),
        );
    }
    Ok(q)
}

pub(super) async fn lookup_events(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let query = parse_query(cx, input)?;
    let page = app.audit.lookup(&query).await.map_err(map_lookup_error)?;
    let events = page
        .events
        .iter()
        .map(|e| {
            let resources: Vec<Value> = e
                .resources
                .iter()
                .map(|(kind, name)| {
                    Value::structure([
                        (
                            "ResourceType",
                            kind.as_deref().map_or(Value::Null, Value::string),
                        ),
                        ("ResourceName", Value::string(&**name)),
                    ])
                })
                .collect();
            Value::structure([
                ("EventId", Value::string(e.event_id.clone())),
                ("EventName", Value::string(&*e.event_name)),
                (
                    "ReadOnly",
                    Value::string(if e.read_only { "true" } else { "false" }),
                ),
                (
                    "AccessKeyId",
                    e.access_key_id
                        .as_deref()
                        .map_or(Value::Null, Value::string),
                ),
                (
                    "EventTime",
                    Value::Timestamp(trailwatch_types::Timestamp::from_secs(e.time_secs)),
                ),
                ("EventSource", Value::string(&*e.event_source)),
                (
                    "Username",
                    e.username.as_deref().map_or(Value::Null, Value::string),
                ),
                ("Resources", Value::List(resources)),
                ("CloudTrailEvent", Value::string(e.json.to_string())),
            ])
        })
        .collect();
    Ok(Outcome::read(Value::structure([
        ("Events", Value::List(events)),
        (
            "NextToken",
            page.next_token.map_or(Value::Null, Value::String),
        ),
    ])))
}
