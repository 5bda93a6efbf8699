//! CloudWatch dashboards: PutDashboard, GetDashboard, ListDashboards,
//! DeleteDashboards (`spec/cloudwatch.md` §10.1). Changes commit with the
//! call's audit record.

use trailwatch_core::dashboards::{validate_body, validate_name, DashboardError};
use trailwatch_core::tags::{validate, Tags};
use trailwatch_core::token::filters_hash;
use trailwatch_protocol::{ApiError, Value};

use super::tagging::tag_list;
use super::{CallContext, Outcome};
use crate::app::App;

const PAGE_SIZE: usize = 1000;

fn messages_value(messages: &[(String, String)]) -> Value {
    Value::List(
        messages
            .iter()
            .map(|(path, message)| {
                Value::structure([
                    ("DataPath", Value::string(path)),
                    ("Message", Value::string(message)),
                ])
            })
            .collect(),
    )
}

fn map_error(err: DashboardError) -> ApiError {
    match err {
        DashboardError::InvalidParameterValue(m) => {
            ApiError::new("InvalidParameterValueException", 400, m)
                .with_query_code("InvalidParameterValue")
        }
        DashboardError::InvalidInput { message, messages } => {
            let mut e = ApiError::new("DashboardInvalidInputError", 400, message)
                .with_query_code("InvalidParameterInput");
            e.extra.push((
                "dashboardValidationMessages".to_owned(),
                messages_value(&messages),
            ));
            e
        }
        DashboardError::MissingParameter(m) => {
            ApiError::new("MissingRequiredParameterException", 400, m)
                .with_query_code("MissingParameter")
        }
        DashboardError::NotFound(m) => {
            ApiError::new("DashboardNotFoundError", 404, m).with_query_code("ResourceNotFound")
        }
        DashboardError::Storage(m) => {
            tracing::error!(error = %m, "dashboard storage failed");
            ApiError::new("InternalServiceFault", 500, "Internal service error.")
                .with_query_code("InternalServiceError")
        }
    }
}

fn required(input: &Value, name: &str) -> Result<String, ApiError> {
    input
        .get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| {
            map_error(DashboardError::MissingParameter(format!(
                "The parameter {name} is required."
            )))
        })
}

fn arn(account: &str, name: &str) -> String {
    format!("arn:aws:cloudwatch::{account}:dashboard/{name}")
}

pub(super) fn put_dashboard(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let name = required(input, "DashboardName")?;
    let body = required(input, "DashboardBody")?;
    validate_name(&name).map_err(map_error)?;
    let warnings = validate_body(&body).map_err(map_error)?;
    let tags = validate(&tag_list(input.get("Tags")), "Tags").map_err(super::tagging::map_error)?;
    let account = &cx.principal.account_id;
    let mut changes = app.dashboards.put_changes(account, &name, &body, cx.now);
    // Tags count only when the dashboard is created (§10.1).
    let exists = match app.dashboards.get(account, &name) {
        Ok(_) => true,
        Err(DashboardError::NotFound(_)) => false,
        Err(e) => return Err(map_error(e)),
    };
    if !exists {
        changes.extend(Tags::create_changes(&arn(account, &name), &tags));
    }
    let output = Value::structure([("DashboardValidationMessages", messages_value(&warnings))]);
    Ok(Outcome::write(output, changes))
}

pub(super) fn get_dashboard(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let name = required(input, "DashboardName")?;
    let dashboard = app
        .dashboards
        .get(&cx.principal.account_id, &name)
        .map_err(map_error)?;
    Ok(Outcome::read(Value::structure([
        (
            "DashboardArn",
            Value::string(arn(&cx.principal.account_id, &name)),
        ),
        ("DashboardBody", Value::string(dashboard.body)),
        ("DashboardName", Value::string(name)),
    ])))
}

pub(super) fn list_dashboards(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let account = &cx.principal.account_id;
    let prefix = input
        .get("DashboardNamePrefix")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let filters = filters_hash(&[account, "ListDashboards", &prefix]);
    let after: Option<String> = match input.get("NextToken").and_then(Value::as_str) {
        Some(token) => Some(
            app.tokens
                .open(token, &filters, cx.now, 24 * 3600)
                .ok_or_else(|| {
                    map_error(DashboardError::InvalidParameterValue(
                        "Request parameter NextToken is invalid".to_owned(),
                    ))
                })?,
        ),
        None => None,
    };
    let (entries, more) = app
        .dashboards
        .list(account, &prefix, after.as_deref(), PAGE_SIZE)
        .map_err(map_error)?;
    let next = match (more, entries.last()) {
        (true, Some(last)) => Value::String(app.tokens.issue(&filters, &last.name, cx.now)),
        _ => Value::Null,
    };
    let entries = entries
        .into_iter()
        .map(|e| {
            Value::structure([
                ("DashboardName", Value::string(&e.name)),
                ("DashboardArn", Value::string(arn(account, &e.name))),
                ("LastModified", Value::Timestamp(e.last_modified)),
                ("Size", Value::Int(e.size as i64)),
            ])
        })
        .collect();
    Ok(Outcome::read(Value::structure([
        ("DashboardEntries", Value::List(entries)),
        ("NextToken", next),
    ])))
}

pub(super) fn delete_dashboards(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let names = input.strings("DashboardNames");
    if names.is_empty() {
        return Err(map_error(DashboardError::MissingParameter(
            "The parameter DashboardNames is required.".to_owned(),
        )));
    }
    let account = &cx.principal.account_id;
    let (mut changes, missing) = app
        .dashboards
        .delete_changes(account, &names)
        .map_err(map_error)?;
    // A deleted dashboard takes its tags with it (§11).
    for name in &names {
        changes.extend(Tags::delete_changes(&arn(account, name)));
    }
    let error = missing.then(|| {
        map_error(DashboardError::NotFound(
            "The specified dashboard does not exist.".to_owned(),
        ))
    });
    Ok(Outcome {
        error,
        ..Outcome::write(Value::empty_struct(), changes)
    })
}
