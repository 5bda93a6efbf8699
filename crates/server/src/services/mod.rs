//! One module per AWS service: wire values in, domain calls, wire values out,
//! and each service's mapping of domain errors to AWS codes. The exhaustive
//! [`dispatch`] match is the single routing point.

use trailwatch_core::audit::{Change, Resource};
use trailwatch_core::identity::Principal;
use trailwatch_protocol::{ApiError, Protocol, Route, Service, Value};
use trailwatch_types::Timestamp;

use crate::app::App;
use crate::generated::operations;

pub(crate) mod actions;
mod alarms;
mod cloudtrail;
mod cloudwatch;
mod dashboards;
mod detectors;
mod lake;
mod logs;
mod resources;
pub(crate) mod s3;
pub(crate) mod sns;
mod sts;
mod tagging;
mod trails;

#[cfg(test)]
pub(crate) use cloudwatch::generic_put_request;
pub(crate) use cloudwatch::{fast_put_request, put_metric_data_typed, put_parameters};
pub use lake::{LakeQueries, LakeQuery};
pub(crate) use logs::{prune_queries, put_system_events, resume_queries};
pub use logs::{Queries, StoredQuery};
pub(crate) use resources::resources_for;
pub use sns::{
    certificate as sns_certificate, resume_deliveries, SnsRuntime,
    CERTIFICATE_PATH as SNS_CERTIFICATE_PATH,
};

/// Per-request facts a handler may use.
#[derive(Debug)]
pub struct CallContext<'a> {
    /// The verified caller.
    pub principal: &'a Principal,
    /// Region of the credential scope.
    pub region: &'a str,
    /// Request id returned to the caller.
    pub request_id: &'a str,
    /// Time the request is handled.
    pub now: Timestamp,
    /// Size of the request body as received and after content decoding.
    pub body_bytes: (usize, usize),
    /// `x-trailwatch-batch` (`<agent id>:<sequence>`): the trailwatch
    /// agent's name for a PutLogEvents batch, so a resent batch is stored once.
    pub batch_id: Option<&'a str>,
}

/// What a successful call produced.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Output structure; `None` for operations without output.
    pub output: Option<Value>,
    /// `responseElements` of the audit record (state-changing calls only).
    pub response_elements: Option<serde_json::Value>,
    /// Resources the call targeted.
    pub resources: Vec<Resource>,
    /// State changes, committed in the same WAL entry as the call's record and
    /// applied only once that entry is durable. Handlers never apply them.
    pub changes: Vec<Change>,
    /// An error to answer even though `changes` are committed (partial success).
    pub error: Option<ApiError>,
    /// A body sent as is instead of the protocol's envelope around `output`
    /// (GetMetricWidgetImage's `OutputFormat=image/png` over awsQuery).
    pub raw_body: Option<RawBody>,
    /// An event stream sent after the (empty) answer head (StartLiveTail).
    pub stream: Option<tokio::sync::mpsc::Receiver<bytes::Bytes>>,
    /// A REST answer whose status, headers and body the handler chose (S3),
    /// sent instead of an envelope around `output`.
    pub rest: Option<RestAnswer>,
    /// Held until the record and `changes` are committed: a name check and
    /// the creation it allowed are one step (CreateLogGroup).
    pub hold: Option<Hold>,
    /// Run once the record and `changes` are durable, never on failure: effects
    /// outside the server (SNS deliveries) must not announce a lost change.
    pub after_commit: Option<AfterCommit>,
}

/// A lock a call holds until its commit (see [`Outcome::hold`]).
#[derive(Debug)]
pub enum Hold {
    /// The log group name lock.
    Names(tokio::sync::OwnedMutexGuard<()>),
    /// The alarm write lock.
    Alarms(crate::app::AlarmWrite),
    /// A bucket name being created or deleted.
    Bucket(trailwatch_core::buckets::NameReservation),
    /// The trail write lock.
    Trails(tokio::sync::OwnedMutexGuard<()>),
}

/// Work that runs after a call's commit (see [`Outcome::after_commit`]).
pub struct AfterCommit(Box<dyn FnOnce() + Send>);

impl AfterCommit {
    /// Wraps `f`.
    pub fn new(f: impl FnOnce() + Send + 'static) -> Self {
        Self(Box::new(f))
    }

    /// Runs it.
    pub fn run(self) {
        (self.0)()
    }
}

impl std::fmt::Debug for AfterCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AfterCommit")
    }
}

/// A REST answer (see [`Outcome::rest`]).
#[derive(Debug)]
pub struct RestAnswer {
    /// HTTP status.
    pub status: u16,
    /// Headers other than the request id, `Date` and `Content-Length` (which
    /// a HEAD answer sets itself, for the body it does not send).
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// A response body that is not a protocol envelope.
#[derive(Debug)]
pub struct RawBody {
    /// `Content-Type` of the answer.
    pub content_type: &'static str,
    /// The bytes sent.
    pub bytes: Vec<u8>,
}

impl Outcome {
    /// A read-only answer.
    pub fn read(output: Value) -> Self {
        Self {
            output: Some(output),
            ..Self::default()
        }
    }

    /// A state-changing answer: `changes` commit with the record, whose
    /// `responseElements` is the output (null when the output is empty).
    pub fn write(output: Value, changes: Vec<Change>) -> Self {
        let response_elements = (!output.members().is_empty()).then(|| output.to_record_json());
        Self {
            output: Some(output),
            response_elements,
            changes,
            ..Self::default()
        }
    }
}

pub(crate) fn model_operations(service: Service) -> &'static [&'static str] {
    match service {
        Service::CloudWatch => operations::CLOUDWATCH,
        Service::Logs => operations::LOGS,
        Service::CloudTrail => operations::CLOUDTRAIL,
        Service::CloudTrailData => operations::CLOUDTRAIL_DATA,
        Service::Sns => operations::SNS,
        Service::Sts => operations::STS,
        Service::Iam => operations::IAM,
        Service::Events => operations::EVENTS,
        Service::S3 => operations::S3,
    }
}

/// The answer for an operation the service model does not have (§3.4).
pub fn unknown_operation(protocol: Protocol, operation: &str) -> ApiError {
    match protocol {
        Protocol::AwsQuery => ApiError::new(
            "InvalidAction",
            400,
            format!("The action {operation} is not valid for this web service."),
        ),
        _ => ApiError::new(
            "UnknownOperationException",
            400,
            format!("Operation {operation} is not supported."),
        )
        .with_query_code("InvalidAction"),
    }
}

/// Runs an alarm-writing handler under the alarm write lock, held until its
/// changes are committed: the engine and other calls never interleave a
/// read-modify-write of the same alarm records.
async fn alarm_write(
    app: &App,
    handler: impl FnOnce() -> Result<Outcome, ApiError>,
) -> Result<Outcome, ApiError> {
    let hold = app.lock_alarms().await;
    let mut outcome = handler()?;
    outcome.hold = Some(Hold::Alarms(hold));
    Ok(outcome)
}

/// Routes a decoded request to its handler.
pub async fn dispatch(
    app: &App,
    cx: &CallContext<'_>,
    route: &Route,
    input: &Value,
) -> Result<Outcome, ApiError> {
    let op = route.operation.as_str();
    if !model_operations(route.service).contains(&op) {
        return Err(unknown_operation(route.protocol, op));
    }
    match (route.service, op) {
        (Service::CloudTrail, "LookupEvents") => cloudtrail::lookup_events(app, cx, input).await,
        (Service::CloudTrail, "CreateTrail") => {
            trails::trail_write(app, || trails::create_trail(app, cx, input)).await
        }
        (Service::CloudTrail, "UpdateTrail") => {
            trails::trail_write(app, || trails::update_trail(app, cx, input)).await
        }
        (Service::CloudTrail, "DeleteTrail") => {
            trails::trail_write(app, || trails::delete_trail(app, cx, input)).await
        }
        (Service::CloudTrail, "StartLogging") => {
            trails::trail_write(app, || trails::set_logging(app, cx, input, true)).await
        }
        (Service::CloudTrail, "StopLogging") => {
            trails::trail_write(app, || trails::set_logging(app, cx, input, false)).await
        }
        (Service::CloudTrail, "PutEventSelectors") => {
            trails::trail_write(app, || trails::put_event_selectors(app, cx, input)).await
        }
        (Service::CloudTrail, "PutInsightSelectors") => {
            trails::trail_write(app, || trails::put_insight_selectors(app, cx, input)).await
        }
        (Service::CloudTrail, "AddTags") => {
            trails::trail_write(app, || trails::add_tags(app, cx, input)).await
        }
        (Service::CloudTrail, "RemoveTags") => {
            trails::trail_write(app, || trails::remove_tags(app, cx, input)).await
        }
        (Service::CloudTrail, "GetTrail") => trails::get_trail(app, cx, input),
        (Service::CloudTrail, "DescribeTrails") => trails::describe_trails(app, cx, input),
        (Service::CloudTrail, "ListTrails") => trails::list_trails(app, cx, input),
        (Service::CloudTrail, "GetTrailStatus") => trails::get_trail_status(app, cx, input),
        (Service::CloudTrail, "GetEventSelectors") => trails::get_event_selectors(app, cx, input),
        (Service::CloudTrail, "GetInsightSelectors") => {
            trails::get_insight_selectors(app, cx, input)
        }
        (Service::CloudTrail, "ListTags") => trails::list_tags(app, cx, input),
        (Service::CloudTrail, "ListPublicKeys") => trails::list_public_keys(app, cx, input),
        (Service::CloudTrail, "CreateEventDataStore") => {
            trails::trail_write(app, || lake::create_event_data_store(app, cx, input)).await
        }
        (Service::CloudTrail, "UpdateEventDataStore") => {
            trails::trail_write(app, || lake::update_event_data_store(app, cx, input)).await
        }
        (Service::CloudTrail, "DeleteEventDataStore") => {
            trails::trail_write(app, || lake::delete_event_data_store(app, cx, input)).await
        }
        (Service::CloudTrail, "StartEventDataStoreIngestion") => {
            trails::trail_write(app, || lake::set_ingestion(app, cx, input, true)).await
        }
        (Service::CloudTrail, "StopEventDataStoreIngestion") => {
            trails::trail_write(app, || lake::set_ingestion(app, cx, input, false)).await
        }
        (Service::CloudTrail, "GetEventDataStore") => lake::get_event_data_store(app, cx, input),
        (Service::CloudTrail, "ListEventDataStores") => {
            lake::list_event_data_stores(app, cx, input)
        }
        (Service::CloudTrail, "CreateChannel") => {
            trails::trail_write(app, || lake::create_channel(app, cx, input)).await
        }
        (Service::CloudTrail, "UpdateChannel") => {
            trails::trail_write(app, || lake::update_channel(app, cx, input)).await
        }
        (Service::CloudTrail, "DeleteChannel") => {
            trails::trail_write(app, || lake::delete_channel(app, cx, input)).await
        }
        (Service::CloudTrail, "GetChannel") => lake::get_channel(app, cx, input),
        (Service::CloudTrail, "ListChannels") => lake::list_channels(app, cx, input),
        (Service::CloudTrail, "StartQuery") => lake::start_query(app, cx, input).await,
        (Service::CloudTrail, "DescribeQuery") => lake::describe_query(app, cx, input),
        (Service::CloudTrail, "GetQueryResults") => lake::get_query_results(app, cx, input),
        (Service::CloudTrail, "CancelQuery") => lake::cancel_query(app, cx, input),
        (Service::CloudTrail, "ListQueries") => lake::list_queries(app, cx, input),
        (Service::CloudTrailData, "PutAuditEvents") => lake::put_audit_events(app, cx, input).await,
        (Service::Sts, "GetCallerIdentity") => Ok(sts::get_caller_identity(cx)),
        (Service::CloudWatch, "PutMetricData") => cloudwatch::put_metric_data(app, cx, input).await,
        (Service::CloudWatch, "ListMetrics") => cloudwatch::list_metrics(app, cx, input),
        (Service::CloudWatch, "GetMetricStatistics") => {
            cloudwatch::get_metric_statistics(app, cx, input)
        }
        (Service::CloudWatch, "GetMetricData") => cloudwatch::get_metric_data(app, cx, input),
        (Service::CloudWatch, "GetMetricWidgetImage") => {
            cloudwatch::get_metric_widget_image(app, cx, route.protocol, input).await
        }
        (Service::CloudWatch, "PutDashboard") => dashboards::put_dashboard(app, cx, input),
        (Service::CloudWatch, "GetDashboard") => dashboards::get_dashboard(app, cx, input),
        (Service::CloudWatch, "ListDashboards") => dashboards::list_dashboards(app, cx, input),
        (Service::CloudWatch, "DeleteDashboards") => dashboards::delete_dashboards(app, cx, input),
        (Service::CloudWatch, "PutAnomalyDetector") => {
            detectors::put_anomaly_detector(app, cx, input)
        }
        (Service::CloudWatch, "DescribeAnomalyDetectors") => {
            detectors::describe_anomaly_detectors(app, cx, input)
        }
        (Service::CloudWatch, "DeleteAnomalyDetector") => {
            detectors::delete_anomaly_detector(app, cx, input)
        }
        (Service::CloudWatch, "PutMetricAlarm") => {
            alarm_write(app, || alarms::put_metric_alarm(app, cx, input)).await
        }
        (Service::CloudWatch, "DescribeAlarms") => alarms::describe_alarms(app, cx, input),
        (Service::CloudWatch, "DescribeAlarmsForMetric") => {
            alarms::describe_alarms_for_metric(app, cx, input)
        }
        (Service::CloudWatch, "DeleteAlarms") => {
            alarm_write(app, || alarms::delete_alarms(app, cx, input)).await
        }
        (Service::CloudWatch, "PutCompositeAlarm") => {
            alarm_write(app, || alarms::put_composite_alarm(app, cx, input)).await
        }
        (Service::CloudWatch, "SetAlarmState") => {
            alarm_write(app, || alarms::set_alarm_state(app, cx, input)).await
        }
        (Service::CloudWatch, "EnableAlarmActions") => {
            alarm_write(app, || alarms::set_alarm_actions(app, cx, input, true)).await
        }
        (Service::CloudWatch, "DisableAlarmActions") => {
            alarm_write(app, || alarms::set_alarm_actions(app, cx, input, false)).await
        }
        (Service::CloudWatch, "DescribeAlarmHistory") => {
            alarms::describe_alarm_history(app, cx, input)
        }
        (Service::CloudWatch, "TagResource") => tagging::tag_resource(app, cx, input),
        (Service::CloudWatch, "UntagResource") => tagging::untag_resource(app, cx, input),
        (Service::CloudWatch, "ListTagsForResource") => {
            tagging::list_tags_for_resource(app, cx, input)
        }
        (Service::Sns, "CreateTopic") => sns::create_topic(app, cx, input),
        (Service::Sns, "DeleteTopic") => sns::delete_topic(app, cx, input),
        (Service::Sns, "ListTopics") => sns::list_topics(app, cx, input),
        (Service::Sns, "GetTopicAttributes") => sns::get_topic_attributes(app, cx, input),
        (Service::Sns, "SetTopicAttributes") => sns::set_topic_attributes(app, cx, input),
        (Service::Sns, "Subscribe") => sns::subscribe(app, cx, input),
        (Service::Sns, "ConfirmSubscription") => sns::confirm_subscription(app, cx, input),
        (Service::Sns, "Unsubscribe") => sns::unsubscribe(app, cx, input),
        (Service::Sns, "ListSubscriptions") => sns::list_subscriptions(app, cx, input),
        (Service::Sns, "ListSubscriptionsByTopic") => {
            sns::list_subscriptions_by_topic(app, cx, input)
        }
        (Service::Sns, "Publish") => sns::publish(app, cx, input),
        (Service::Logs, _) if logs::implemented(op) => logs::dispatch(app, cx, op, input).await,
        // S3 reads the request itself, through `s3::dispatch` from the edge.
        (Service::S3, _) => Err(ApiError::not_implemented(op)),
        _ => Err(ApiError::not_implemented(op)),
    }
}
