//! aws-sdk-rust against the real binary: CloudWatch over RPC v2 CBOR (the only
//! protocol that SDK speaks), CloudWatch Logs and CloudTrail LookupEvents over
//! JSON 1.1, and STS over query.

mod common;

use aws_sdk_cloudwatch::error::ProvideErrorMetadata;
use aws_types::request_id::RequestId;

const KEY: &str = "AKIASDKTEST000000001";
const SECRET: &str = "sdk-test-secret-key-00000000000000000000";
const ACCOUNT: &str = "210987654321";

async fn config(endpoint: &str, secret: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_cloudwatch::config::Credentials::new(
            KEY, secret, None, None, "test",
        ))
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await
}

#[tokio::test]
async fn rust_sdk_calls_are_answered_and_recorded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = common::Server::start(&dir.path().join("data"), KEY, SECRET, ACCOUNT, &[]);
    let good = config(&server.endpoint(), SECRET).await;

    let sts = aws_sdk_sts::Client::new(&good);
    let identity = sts
        .get_caller_identity()
        .send()
        .await
        .expect("GetCallerIdentity");
    assert_eq!(identity.account(), Some(ACCOUNT));
    assert_eq!(
        identity.arn(),
        Some(format!("arn:aws:iam::{ACCOUNT}:root").as_str())
    );

    // Alarms over CBOR: created, described, deleted, and the delete recorded.
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&good);
    cloudwatch
        .put_metric_alarm()
        .alarm_name("sdk-alarm")
        .namespace("App")
        .metric_name("Latency")
        .statistic(aws_sdk_cloudwatch::types::Statistic::Average)
        .period(60)
        .evaluation_periods(1)
        .threshold(1.5)
        .comparison_operator(aws_sdk_cloudwatch::types::ComparisonOperator::GreaterThanThreshold)
        .send()
        .await
        .expect("PutMetricAlarm");
    let described = cloudwatch
        .describe_alarms()
        .alarm_names("sdk-alarm")
        .send()
        .await
        .expect("DescribeAlarms");
    let alarm = &described.metric_alarms()[0];
    assert_eq!(
        (alarm.threshold(), alarm.state_value().map(|s| s.as_str())),
        (Some(1.5), Some("INSUFFICIENT_DATA"))
    );
    let (request_id, code) = match cloudwatch
        .delete_alarms()
        .alarm_names("sdk-alarm")
        .send()
        .await
    {
        Ok(out) => (out.request_id().map(str::to_owned), None),
        Err(err) => (
            err.request_id().map(str::to_owned),
            err.code().map(str::to_owned),
        ),
    };
    let request_id = request_id.expect("the SDK read x-amzn-RequestId");
    assert!(code.is_none(), "unexpected error {code:?}");

    // Metrics over CBOR: the SDK's strict decoder reads typed doubles and tag-1 timestamps.
    #[allow(clippy::disallowed_methods)] // a client: real time is what it publishes at
    let now_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let t0 = aws_sdk_cloudwatch::primitives::DateTime::from_secs((now_secs / 60 - 10) * 60);
    let datum = |value: f64, offset: i64| {
        aws_sdk_cloudwatch::types::MetricDatum::builder()
            .metric_name("Requests")
            .dimensions(
                aws_sdk_cloudwatch::types::Dimension::builder()
                    .name("Svc")
                    .value("api")
                    .build(),
            )
            .value(value)
            .timestamp(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                t0.secs() + offset,
            ))
            .storage_resolution(1)
            .build()
    };
    cloudwatch
        .put_metric_data()
        .namespace("SdkTest")
        .metric_data(datum(100.0, 0))
        .metric_data(datum(200.0, 5))
        .send()
        .await
        .expect("PutMetricData");
    // Sum and Maximum of the two values, over five minutes at one-minute periods.
    let statistics_request = || {
        cloudwatch
            .get_metric_statistics()
            .namespace("SdkTest")
            .metric_name("Requests")
            .dimensions(
                aws_sdk_cloudwatch::types::Dimension::builder()
                    .name("Svc")
                    .value("api")
                    .build(),
            )
            .start_time(t0)
            .end_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                t0.secs() + 300,
            ))
            .period(60)
            .statistics(aws_sdk_cloudwatch::types::Statistic::Sum)
            .statistics(aws_sdk_cloudwatch::types::Statistic::Maximum)
    };
    let stats = statistics_request().extended_statistics("p50").send().await;
    // Statistics and ExtendedStatistics together are refused with the modelled exception.
    let err = stats.expect_err("Statistics with ExtendedStatistics must fail");
    assert_eq!(err.code(), Some("InvalidParameterCombination"));
    let stats = statistics_request()
        .send()
        .await
        .expect("GetMetricStatistics");
    let points = stats.datapoints();
    assert_eq!(points.len(), 1);
    assert_eq!(points[0].sum(), Some(300.0));
    assert_eq!(points[0].maximum(), Some(200.0));
    assert_eq!(points[0].timestamp().map(|t| t.secs()), Some(t0.secs()));
    // GetMetricData: lists of tag-1 timestamps and float64 values, read by the strict decoder.
    let metric_stat = aws_sdk_cloudwatch::types::MetricStat::builder()
        .metric(
            aws_sdk_cloudwatch::types::Metric::builder()
                .namespace("SdkTest")
                .metric_name("Requests")
                .dimensions(
                    aws_sdk_cloudwatch::types::Dimension::builder()
                        .name("Svc")
                        .value("api")
                        .build(),
                )
                .build(),
        )
        .period(1)
        .stat("Sum")
        .build();
    let data = cloudwatch
        .get_metric_data()
        .start_time(t0)
        .end_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
            t0.secs() + 60,
        ))
        .scan_by(aws_sdk_cloudwatch::types::ScanBy::TimestampAscending)
        .metric_data_queries(
            aws_sdk_cloudwatch::types::MetricDataQuery::builder()
                .id("m1")
                .metric_stat(metric_stat)
                .build(),
        )
        .metric_data_queries(
            aws_sdk_cloudwatch::types::MetricDataQuery::builder()
                .id("doubled")
                .expression("m1 * 2")
                .build(),
        )
        .send()
        .await
        .expect("GetMetricData");
    let results = data.metric_data_results();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].values(), &[100.0, 200.0]);
    assert_eq!(
        results[0]
            .timestamps()
            .iter()
            .map(|t| t.secs() - t0.secs())
            .collect::<Vec<_>>(),
        vec![0, 5]
    );
    assert_eq!(results[1].values(), &[200.0, 400.0]);
    assert_eq!(
        results[1].status_code(),
        Some(&aws_sdk_cloudwatch::types::StatusCode::Complete)
    );
    // GetMetricWidgetImage: the PNG as a CBOR byte string, read as a Blob.
    let image = cloudwatch
        .get_metric_widget_image()
        .metric_widget(
            r#"{"metrics":[["SdkTest","Requests","Svc","api"]],"width":320,"height":200}"#,
        )
        .send()
        .await
        .expect("GetMetricWidgetImage");
    let png = image.metric_widget_image().expect("an image").as_ref();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(
        &png[12..24],
        b"IHDR\0\0\x01\x40\0\0\0\xc8",
        "IHDR 320 x 200"
    );
    let listed = cloudwatch
        .list_metrics()
        .namespace("SdkTest")
        .send()
        .await
        .expect("ListMetrics");
    assert_eq!(listed.metrics().len(), 1);

    // A wrong secret: the modelled query code reaches the SDK through x-amzn-query-error.
    let bad = config(&server.endpoint(), "wrong-secret").await;
    let err = aws_sdk_cloudwatch::Client::new(&bad)
        .list_dashboards()
        .send()
        .await
        .expect_err("a wrong secret must fail");
    assert_eq!(err.code(), Some("SignatureDoesNotMatch"));

    let cloudtrail = aws_sdk_cloudtrail::Client::new(&good);
    let by_event_name = |name: &'static str| {
        cloudtrail.lookup_events().lookup_attributes(
            aws_sdk_cloudtrail::types::LookupAttribute::builder()
                .attribute_key(aws_sdk_cloudtrail::types::LookupAttributeKey::EventName)
                .attribute_value(name)
                .build()
                .expect("attribute"),
        )
    };
    let found = by_event_name("DeleteAlarms")
        .send()
        .await
        .expect("LookupEvents");
    let events = found.events();
    assert_eq!(events.len(), 1);
    let record: serde_json::Value =
        serde_json::from_str(events[0].cloud_trail_event().expect("record"))
            .expect("record is JSON");
    assert_eq!(record["requestID"], request_id.as_str());
    assert_eq!(record["eventSource"], "monitoring.amazonaws.com");
    assert_eq!(
        record["requestParameters"],
        serde_json::json!({"alarmNames": ["sdk-alarm"]})
    );
    assert!(record["userAgent"]
        .as_str()
        .unwrap_or_default()
        .contains("aws-sdk-rust"));
    assert_eq!(events[0].username(), Some("root"));
    assert_eq!(events[0].access_key_id(), Some(KEY));
    let denied = by_event_name("ListDashboards")
        .send()
        .await
        .expect("LookupEvents");
    let record: serde_json::Value =
        serde_json::from_str(denied.events()[0].cloud_trail_event().expect("record"))
            .expect("record is JSON");
    assert_eq!(record["errorCode"], "SignatureDoesNotMatch");
    assert_eq!(
        record["userIdentity"],
        serde_json::json!({"type": "Unknown", "accessKeyId": KEY})
    );
}

#[tokio::test]
async fn rust_sdk_logs_ingest_and_read() {
    use aws_sdk_cloudwatchlogs::types::InputLogEvent;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = common::Server::start(&dir.path().join("data"), KEY, SECRET, ACCOUNT, &[]);
    let logs = aws_sdk_cloudwatchlogs::Client::new(&config(&server.endpoint(), SECRET).await);
    logs.create_log_group()
        .log_group_name("sdk")
        .send()
        .await
        .expect("CreateLogGroup");
    logs.create_log_stream()
        .log_group_name("sdk")
        .log_stream_name("s")
        .send()
        .await
        .expect("CreateLogStream");
    #[allow(clippy::disallowed_methods)] // a client: real wall time is what it sends
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64;
    let events: Vec<InputLogEvent> = ["ERROR one", "INFO two", "ERROR three"]
        .iter()
        .enumerate()
        .map(|(i, m)| {
            InputLogEvent::builder()
                .timestamp(now + i as i64)
                .message(*m)
                .build()
                .expect("event")
        })
        .collect();
    let put = logs
        .put_log_events()
        .log_group_name("sdk")
        .log_stream_name("s")
        .set_log_events(Some(events))
        .send()
        .await
        .expect("PutLogEvents");
    assert!(put.rejected_log_events_info().is_none());
    let got = logs
        .get_log_events()
        .log_group_name("sdk")
        .log_stream_name("s")
        .start_from_head(true)
        .send()
        .await
        .expect("GetLogEvents");
    let messages: Vec<&str> = got.events().iter().filter_map(|e| e.message()).collect();
    assert_eq!(messages, ["ERROR one", "INFO two", "ERROR three"]);
    let filtered = logs
        .filter_log_events()
        .log_group_name("sdk")
        .filter_pattern("ERROR")
        .send()
        .await
        .expect("FilterLogEvents");
    let found: Vec<&str> = filtered
        .events()
        .iter()
        .filter_map(|e| e.message())
        .collect();
    assert_eq!(found, ["ERROR one", "ERROR three"]);
    let err = logs
        .create_log_group()
        .log_group_name("sdk")
        .send()
        .await
        .expect_err("a second CreateLogGroup fails");
    assert_eq!(
        aws_sdk_cloudwatchlogs::error::ProvideErrorMetadata::code(&err),
        Some("ResourceAlreadyExistsException")
    );
}
