//! CloudWatch (`monitoring`), served in RPC v2 CBOR, JSON 1.0 and query alike.
//! Today: PutMetricData, ListMetrics, GetMetricStatistics, GetMetricData and
//! GetMetricWidgetImage (`spec/cloudwatch.md` §2–6, §10.3).

use trailwatch_core::metrics::{chart, widget};
use trailwatch_core::metrics::{
    plan_data, validate_put, validate_statistics, DataQueryInput, DataRequest, DatumInput,
    ListMetricsQuery, MetricId, MetricStatInput, MetricsError, PutRequest, StatisticsRequest,
};
use trailwatch_protocol::cbor::Reader;
use trailwatch_protocol::{ApiError, Protocol, Value};

use super::{CallContext, Outcome, RawBody};
use crate::app::App;

/// CloudWatch's codes for metric errors (`spec/protocols.md` §10.1).
fn map_error(err: MetricsError) -> ApiError {
    match err {
        MetricsError::InvalidParameterValue(m) => {
            ApiError::new("InvalidParameterValueException", 400, m)
                .with_query_code("InvalidParameterValue")
        }
        MetricsError::MissingParameter(m) => {
            ApiError::new("MissingRequiredParameterException", 400, m)
                .with_query_code("MissingParameter")
        }
        MetricsError::InvalidParameterCombination(m) => {
            ApiError::new("InvalidParameterCombinationException", 400, m)
                .with_query_code("InvalidParameterCombination")
        }
        MetricsError::Validation(m) => {
            ApiError::new("ValidationException", 400, m).with_query_code("ValidationError")
        }
        MetricsError::InvalidNextToken(m) => ApiError::new("InvalidNextToken", 400, m),
        MetricsError::Storage(m) => {
            tracing::error!(error = %m, "metric storage failed");
            ApiError::new("InternalServiceFault", 500, "Internal service error.")
                .with_query_code("InternalServiceError")
        }
    }
}

/// A member that is present but not a number.
/// `path` is built only for the error: PutMetricData reads 150,000 numbers.
fn number(v: Option<&Value>, path: impl FnOnce() -> String) -> Result<Option<f64>, ApiError> {
    match v {
        None => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| {
            map_error(MetricsError::InvalidParameterValue(format!(
                "The value {v:?} for parameter {} is invalid.",
                path()
            )))
        }),
    }
}

/// Member `name` of `input` as a timestamp, when present.
fn timestamp(input: &Value, name: &str) -> Result<Option<trailwatch_types::Timestamp>, ApiError> {
    match input.get(name) {
        None => Ok(None),
        Some(t) => t.as_timestamp().map(Some).ok_or_else(|| {
            map_error(MetricsError::InvalidParameterValue(format!(
                "The parameter {name} is not a valid timestamp."
            )))
        }),
    }
}

/// A parameter path rendered only when a message needs it.
struct Lazy<'a>(&'a dyn Fn() -> String);

impl std::fmt::Display for Lazy<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&(self.0)())
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::to_owned)
}

/// `Dimensions` of `v` as `(Name, Value)`, either possibly missing.
fn dimensions(v: &Value) -> Vec<(Option<String>, Option<String>)> {
    v.get("Dimensions")
        .and_then(Value::as_list)
        .unwrap_or_default()
        .iter()
        .map(|d| (text(d.get("Name")), text(d.get("Value"))))
        .collect()
}

fn datum_input(d: &Value, path: &dyn Fn() -> String) -> Result<DatumInput, ApiError> {
    let path = &Lazy(path);
    let numbers = |name: &str| -> Result<Option<Vec<f64>>, ApiError> {
        match d.get(name) {
            None => Ok(None),
            Some(list) => {
                let items = list.as_list().ok_or_else(|| {
                    map_error(MetricsError::InvalidParameterValue(format!(
                        "The parameter {path}.{name} must be a list."
                    )))
                })?;
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        number(Some(v), || format!("{path}.{name}.member.{}", i + 1))
                            .map(|n| n.unwrap_or_default())
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some)
            }
        }
    };
    let statistic_values = match d.get("StatisticValues") {
        None => None,
        Some(set) => {
            let mut members = [None; 4];
            for (k, name) in ["SampleCount", "Sum", "Minimum", "Maximum"]
                .iter()
                .enumerate()
            {
                members[k] = number(set.get(name), || format!("{path}.StatisticValues.{name}"))?;
            }
            Some(members)
        }
    };
    let timestamp = match d.get("Timestamp") {
        None => None,
        Some(t) => Some(t.as_timestamp().ok_or_else(|| {
            map_error(MetricsError::InvalidParameterValue(format!(
                "The parameter {path}.Timestamp is not a valid timestamp."
            )))
        })?),
    };
    let storage_resolution = match d.get("StorageResolution") {
        None => None,
        Some(r) => Some(r.as_i64().ok_or_else(|| {
            map_error(MetricsError::InvalidParameterValue(format!(
                "The value {r:?} for parameter {path}.StorageResolution is invalid."
            )))
        })?),
    };
    Ok(DatumInput {
        metric_name: text(d.get("MetricName")),
        dimensions: dimensions(d),
        value: number(d.get("Value"), || format!("{path}.Value"))?,
        statistic_values,
        values: numbers("Values")?,
        counts: numbers("Counts")?,
        timestamp,
        unit: text(d.get("Unit")),
        storage_resolution,
    })
}

/// PutMetricData bodies are limited to 1 MB, compressed or not (`spec/cloudwatch.md` §2.6).
const PUT_METRIC_DATA_MAX_BYTES: usize = 1024 * 1024;

/// The typed PutMetricData request of a decoded input (any protocol).
pub(crate) fn generic_put_request(input: &Value) -> Result<PutRequest, ApiError> {
    let data = |v: Option<&Value>, prefix: &str| -> Result<Vec<DatumInput>, ApiError> {
        v.and_then(Value::as_list)
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, d)| datum_input(d, &|| format!("{prefix}.member.{}", i + 1)))
            .collect()
    };
    let request = PutRequest {
        namespace: text(input.get("Namespace")),
        metric_data: data(input.get("MetricData"), "MetricData")?,
        entity_metric_data: input
            .get("EntityMetricData")
            .and_then(Value::as_list)
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, e)| {
                data(
                    e.get("MetricData"),
                    &format!("EntityMetricData.member.{}.MetricData", i + 1),
                )
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(request)
}

fn check_put_size(cx: &CallContext<'_>) -> Result<(), ApiError> {
    let (raw, decoded) = cx.body_bytes;
    if raw > PUT_METRIC_DATA_MAX_BYTES || decoded > PUT_METRIC_DATA_MAX_BYTES {
        return Err(ApiError::new(
            "RequestEntityTooLargeException",
            413,
            format!("Request size {} exceeded 1048576 bytes", raw.max(decoded)),
        )
        .with_query_code("RequestEntityTooLarge"));
    }
    Ok(())
}

pub(super) async fn put_metric_data(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    check_put_size(cx)?;
    let request = generic_put_request(input)?;
    put_request(app, cx, request).await
}

async fn put_request(
    app: &App,
    cx: &CallContext<'_>,
    request: PutRequest,
) -> Result<Outcome, ApiError> {
    let datums = validate_put(request, cx.now).map_err(map_error)?;
    app.metrics
        .put(&cx.principal.account_id, cx.region, datums)
        .await
        .map_err(map_error)?;
    Ok(Outcome::default())
}

/// PutMetricData over RPC v2 CBOR with an already typed request (see
/// [`fast_put_request`]).
pub(crate) async fn put_metric_data_typed(
    app: &App,
    cx: &CallContext<'_>,
    request: PutRequest,
) -> Result<Outcome, ApiError> {
    check_put_size(cx)?;
    put_request(app, cx, request).await
}

/// A PutMetricData CBOR body decoded straight into the typed request: the
/// ingest hot path, which skips the generic value tree (a third of its CPU).
/// Only the plain shape is taken (the members of the model, definite text,
/// numbers and tag-1 timestamps); `None` for anything else, which then goes
/// the generic way and gets exactly its answer or error.
pub(crate) fn fast_put_request(body: &[u8]) -> Option<PutRequest> {
    let mut r = Reader::new(body);
    let mut request = PutRequest::default();
    let len = r.map()?;
    let mut read = 0;
    while !r.end_of(len, read) {
        read += 1;
        match r.text()? {
            "Namespace" => request.namespace = Some(r.text()?.to_owned()),
            "MetricData" => request.metric_data = fast_datums(&mut r)?,
            _ => return None,
        }
    }
    r.is_done().then_some(request)
}

fn fast_datums(r: &mut Reader<'_>) -> Option<Vec<DatumInput>> {
    let len = r.array()?;
    let mut out = Vec::with_capacity(len.unwrap_or(0).min(1000) as usize);
    let mut read = 0;
    while !r.end_of(len, read) {
        read += 1;
        let members = r.map()?;
        let mut d = DatumInput::default();
        let mut seen = 0;
        while !r.end_of(members, seen) {
            seen += 1;
            match r.text()? {
                "MetricName" => d.metric_name = Some(r.text()?.to_owned()),
                "Dimensions" => d.dimensions = fast_dimensions(r)?,
                "Timestamp" => d.timestamp = Some(r.timestamp()?),
                "Value" => d.value = Some(r.number()?),
                "Values" => d.values = Some(fast_numbers(r)?),
                "Counts" => d.counts = Some(fast_numbers(r)?),
                "StatisticValues" => {
                    let members = r.map()?;
                    let mut set = [None; 4];
                    let mut seen = 0;
                    while !r.end_of(members, seen) {
                        seen += 1;
                        let k = match r.text()? {
                            "SampleCount" => 0,
                            "Sum" => 1,
                            "Minimum" => 2,
                            "Maximum" => 3,
                            _ => return None,
                        };
                        set[k] = Some(r.number()?);
                    }
                    d.statistic_values = Some(set);
                }
                "Unit" => d.unit = Some(r.text()?.to_owned()),
                "StorageResolution" => d.storage_resolution = Some(r.int()?),
                _ => return None,
            }
        }
        out.push(d);
    }
    Some(out)
}

fn fast_numbers(r: &mut Reader<'_>) -> Option<Vec<f64>> {
    let len = r.array()?;
    let mut out = Vec::with_capacity(len.unwrap_or(0).min(150) as usize);
    let mut read = 0;
    while !r.end_of(len, read) {
        read += 1;
        out.push(r.number()?);
    }
    Some(out)
}

fn fast_dimensions(r: &mut Reader<'_>) -> Option<Vec<(Option<String>, Option<String>)>> {
    let len = r.array()?;
    let mut out = Vec::new();
    let mut read = 0;
    while !r.end_of(len, read) {
        read += 1;
        let members = r.map()?;
        let (mut name, mut value) = (None, None);
        let mut seen = 0;
        while !r.end_of(members, seen) {
            seen += 1;
            match r.text()? {
                "Name" => name = Some(r.text()?.to_owned()),
                "Value" => value = Some(r.text()?.to_owned()),
                _ => return None,
            }
        }
        out.push((name, value));
    }
    Some(out)
}

/// requestParameters of a typed PutMetricData: what the generic path records
/// (lower-cased members, values hidden), members in model order.
pub(crate) fn put_parameters(
    request: &PutRequest,
    hidden: &str,
    limit: usize,
) -> serde_json::Value {
    fn text(out: &mut Vec<u8>, s: &str) {
        let _ = serde_json::to_writer(&mut *out, s);
    }
    let mut out = Vec::with_capacity(128 + request.metric_data.len() * 160);
    out.push(b'{');
    let mut first = true;
    let mut key = |out: &mut Vec<u8>, k: &str| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
        text(out, k);
        out.push(b':');
    };
    if let Some(ns) = &request.namespace {
        key(&mut out, "namespace");
        text(&mut out, ns);
    }
    key(&mut out, "metricData");
    out.push(b'[');
    for (i, d) in request.metric_data.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'{');
        let mut first = true;
        let mut member = |out: &mut Vec<u8>, k: &str| {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            text(out, k);
            out.push(b':');
        };
        if let Some(name) = &d.metric_name {
            member(&mut out, "metricName");
            text(&mut out, name);
        }
        if !d.dimensions.is_empty() {
            member(&mut out, "dimensions");
            out.push(b'[');
            for (j, (n, v)) in d.dimensions.iter().enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                out.push(b'{');
                let mut sep = false;
                for (k, x) in [("name", n), ("value", v)] {
                    if let Some(x) = x {
                        if std::mem::replace(&mut sep, true) {
                            out.push(b',');
                        }
                        text(&mut out, k);
                        out.push(b':');
                        text(&mut out, x);
                    }
                }
                out.push(b'}');
            }
            out.push(b']');
        }
        if let Some(t) = d.timestamp {
            member(&mut out, "timestamp");
            text(&mut out, &t.to_iso8601());
        }
        for (k, present) in [
            ("value", d.value.is_some()),
            ("statisticValues", d.statistic_values.is_some()),
            ("values", d.values.is_some()),
            ("counts", d.counts.is_some()),
        ] {
            if present {
                member(&mut out, k);
                text(&mut out, hidden);
            }
        }
        if let Some(u) = &d.unit {
            member(&mut out, "unit");
            text(&mut out, u);
        }
        if let Some(r) = d.storage_resolution {
            member(&mut out, "storageResolution");
            out.extend_from_slice(r.to_string().as_bytes());
        }
        out.push(b'}');
    }
    out.push(b']');
    out.push(b'}');
    if out.len() > limit {
        return serde_json::json!({"truncated": true, "originalSizeBytes": out.len()});
    }
    serde_json::from_slice(&out).unwrap_or(serde_json::Value::Null)
}

fn metric_value(m: &MetricId) -> Value {
    let dimensions = m
        .dimensions
        .iter()
        .map(|d| {
            Value::structure([
                ("Name", Value::string(&d.name)),
                ("Value", Value::string(&d.value)),
            ])
        })
        .collect();
    Value::structure([
        ("Namespace", Value::string(&m.namespace)),
        ("MetricName", Value::string(&m.name)),
        ("Dimensions", Value::List(dimensions)),
    ])
}

pub(super) fn list_metrics(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let recently_active = match input.get("RecentlyActive").and_then(Value::as_str) {
        None => false,
        Some("PT3H") => true,
        Some(other) => {
            return Err(map_error(MetricsError::Validation(format!(
                "1 validation error detected: Value '{other}' at 'recentlyActive' failed to satisfy constraint: Member must satisfy enum value set: [PT3H]"
            ))))
        }
    };
    let query = ListMetricsQuery {
        account_id: cx.principal.account_id.clone(),
        region: cx.region.to_owned(),
        namespace: text(input.get("Namespace")),
        metric_name: text(input.get("MetricName")),
        dimensions: dimensions(input)
            .into_iter()
            .map(|(name, value)| (name.unwrap_or_default(), value))
            .collect(),
        recently_active,
        next_token: text(input.get("NextToken")),
    };
    let page = app.metrics.list(&query).map_err(map_error)?;
    let include_accounts = input
        .get("IncludeLinkedAccounts")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let owning = include_accounts.then(|| {
        Value::List(
            page.metrics
                .iter()
                .map(|_| Value::string(&cx.principal.account_id))
                .collect(),
        )
    });
    Ok(Outcome::read(Value::structure([
        (
            "Metrics",
            Value::List(page.metrics.iter().map(metric_value).collect()),
        ),
        (
            "NextToken",
            page.next_token.map_or(Value::Null, Value::String),
        ),
        ("OwningAccounts", owning.unwrap_or(Value::Null)),
    ])))
}

pub(super) fn get_metric_statistics(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let time = |name: &str| timestamp(input, name);
    let period = match input.get("Period") {
        None => None,
        Some(p) => Some(p.as_i64().ok_or_else(|| {
            map_error(MetricsError::InvalidParameterValue(
                "The parameter Period must be an integer.".to_owned(),
            ))
        })?),
    };
    let request = StatisticsRequest {
        namespace: text(input.get("Namespace")),
        metric_name: text(input.get("MetricName")),
        dimensions: dimensions(input),
        start: time("StartTime")?,
        end: time("EndTime")?,
        period,
        statistics: input.strings("Statistics"),
        extended: input.strings("ExtendedStatistics"),
        unit: text(input.get("Unit")),
    };
    let query = validate_statistics(&request, cx.now).map_err(map_error)?;
    let datapoints = app
        .metrics
        .statistics(&cx.principal.account_id, cx.region, &query)
        .map_err(map_error)?
        .into_iter()
        .map(|p| {
            let mut members: Vec<(String, Value)> =
                vec![("Timestamp".to_owned(), Value::Timestamp(p.timestamp))];
            members.extend(p.statistics.into_iter().map(|(k, v)| (k, Value::Float(v))));
            members.push(("Unit".to_owned(), Value::string(p.unit.as_str())));
            if !query.extended.is_empty() {
                let map = p
                    .extended
                    .into_iter()
                    .map(|(k, v)| (k, Value::Float(v)))
                    .collect();
                members.push(("ExtendedStatistics".to_owned(), Value::Map(map)));
            }
            Value::Struct(members)
        })
        .collect();
    Ok(Outcome::read(Value::structure([
        ("Label", Value::string(&query.metric.name)),
        ("Datapoints", Value::List(datapoints)),
    ])))
}

pub(super) fn get_metric_data(
    app: &App,
    cx: &CallContext<'_>,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let time = |name: &str| timestamp(input, name);
    let queries = input
        .get("MetricDataQueries")
        .and_then(Value::as_list)
        .unwrap_or_default()
        .iter()
        .map(|q| DataQueryInput {
            id: text(q.get("Id")),
            metric_stat: q.get("MetricStat").map(|s| MetricStatInput {
                namespace: s.get("Metric").and_then(|m| text(m.get("Namespace"))),
                metric_name: s.get("Metric").and_then(|m| text(m.get("MetricName"))),
                dimensions: s.get("Metric").map(dimensions).unwrap_or_default(),
                period: s.get("Period").and_then(Value::as_i64),
                stat: text(s.get("Stat")),
                unit: text(s.get("Unit")),
            }),
            expression: text(q.get("Expression")),
            label: text(q.get("Label")),
            return_data: q.get("ReturnData").and_then(Value::as_bool),
            period: q.get("Period").and_then(Value::as_i64),
        })
        .collect();
    let request = DataRequest {
        queries,
        start: time("StartTime")?,
        end: time("EndTime")?,
        scan_by: text(input.get("ScanBy")),
        max_datapoints: input.get("MaxDatapoints").and_then(Value::as_i64),
        label_timezone: input
            .get("LabelOptions")
            .and_then(|o| text(o.get("Timezone"))),
    };
    let mut plan = plan_data(&request, cx.now).map_err(map_error)?;
    // Bands train with their detectors' settings (§9.2).
    if request.queries.iter().any(|q| {
        q.expression
            .as_deref()
            .is_some_and(|e| e.to_ascii_uppercase().contains("ANOMALY_DETECTION_BAND"))
    }) {
        let detectors = app
            .detectors
            .list(&cx.principal.account_id, cx.region)
            .map_err(|e| {
                map_error(trailwatch_core::metrics::MetricsError::Storage(
                    e.to_string(),
                ))
            })?;
        plan = plan.with_band_training(trailwatch_core::detectors::band_training(&detectors));
    }
    let token = text(input.get("NextToken"));
    let (results, next_token) = app
        .metrics
        .get_data(&cx.principal.account_id, cx.region, &plan, token.as_deref())
        .map_err(map_error)?;
    let results = results
        .into_iter()
        .map(|r| {
            let messages = r
                .messages
                .into_iter()
                .map(|(code, value)| {
                    Value::structure([
                        ("Code", Value::String(code)),
                        ("Value", Value::String(value)),
                    ])
                })
                .collect();
            Value::structure([
                ("Id", Value::String(r.id)),
                ("Label", Value::String(r.label)),
                (
                    "Timestamps",
                    Value::List(r.timestamps.into_iter().map(Value::Timestamp).collect()),
                ),
                (
                    "Values",
                    Value::List(r.values.into_iter().map(Value::Float).collect()),
                ),
                (
                    "StatusCode",
                    Value::string(if r.complete {
                        "Complete"
                    } else {
                        "PartialData"
                    }),
                ),
                ("Messages", Value::List(messages)),
            ])
        })
        .collect();
    Ok(Outcome::read(Value::structure([
        ("MetricDataResults", Value::List(results)),
        ("NextToken", next_token.map_or(Value::Null, Value::String)),
        ("Messages", Value::List(vec![])),
    ])))
}

/// GetMetricWidgetImage (§10.3): the widget's metrics through the
/// GetMetricData plan, drawn off the async threads, answered as the
/// `MetricWidgetImage` blob — or, for awsQuery with `OutputFormat=image/png`,
/// as the PNG itself. AWS documents `image/png` for raw HTTP requests only, so
/// JSON and CBOR treat it like `png`.
pub(super) async fn get_metric_widget_image(
    app: &App,
    cx: &CallContext<'_>,
    protocol: Protocol,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let json = text(input.get("MetricWidget")).ok_or_else(|| {
        map_error(MetricsError::MissingParameter(
            "The parameter MetricWidget is required.".to_owned(),
        ))
    })?;
    let raw_png = match text(input.get("OutputFormat")).as_deref() {
        None | Some("png") => false,
        Some("image/png") => protocol == Protocol::AwsQuery,
        Some(other) => {
            return Err(map_error(MetricsError::InvalidParameterValue(format!(
                "The value {other} for parameter OutputFormat is invalid. Valid values: png, image/png."
            ))))
        }
    };
    let widget = widget::parse(&json, cx.now).map_err(map_error)?;
    let region = widget.region.as_deref().unwrap_or(cx.region);
    let results = widget::fetch(&app.metrics, &cx.principal.account_id, region, &widget.plan)
        .map_err(map_error)?;
    let series = widget.chart_series(results);
    // Drawing and PNG compression take milliseconds of CPU per image.
    let png = tokio::task::spawn_blocking(move || chart::render_png(&widget, &series))
        .await
        .map_err(|e| chart_failure(&e))?
        .map_err(|e| chart_failure(&e))?;
    if raw_png {
        return Ok(Outcome {
            raw_body: Some(RawBody {
                content_type: "image/png",
                bytes: png,
            }),
            ..Outcome::default()
        });
    }
    Ok(Outcome::read(Value::structure([(
        "MetricWidgetImage",
        Value::Blob(png),
    )])))
}

fn chart_failure(err: &dyn std::fmt::Display) -> ApiError {
    tracing::error!(error = %err, "failed to draw a metric widget image");
    ApiError::new("InternalServiceFault", 500, "Internal service error.")
        .with_query_code("InternalServiceError")
}
