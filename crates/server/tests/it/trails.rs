//! Trail delivery on a paused clock: files only after the delivery interval,
//! hourly digests (empty ones too) that chain without gaps across hours the
//! server was not running, a final digest at StopLogging, and the stricter
//! verifier accepting the whole chain and rejecting a changed file.

use std::sync::Arc;

use trailwatch_core::digest::{self, ObjectSource, StoredObject, VerifyRequest};
use trailwatch_protocol::sigv4::Signer;
use trailwatch_server::delivery::Worker;
use trailwatch_server::{handle, App, IncomingRequest};
use trailwatch_types::{Clock as _, Timestamp};

use crate::support::{test_app, TestApp, ACCOUNT, FIXTURE_KEY, FIXTURE_SECRET};

const REGION: &str = "us-east-1";
/// 2024-10-10T12:00:00Z.
const T0: i64 = 1_728_561_600_000;

/// A signed CloudTrail JSON call at the server's (paused) time that must succeed.
async fn cloudtrail(t: &TestApp, op: &str, body: serde_json::Value) -> serde_json::Value {
    let (status, json) = cloudtrail_call(t, op, body).await;
    assert_eq!(status, 200, "{op}: {json}");
    json
}

/// A signed CloudTrail JSON call at the server's (paused) time: status and answer.
async fn cloudtrail_call(
    t: &TestApp,
    op: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let body = body.to_string().into_bytes();
    let target = format!("com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.{op}");
    let mut headers = vec![
        ("host".to_owned(), "localhost".to_owned()),
        (
            "content-type".to_owned(),
            "application/x-amz-json-1.1".to_owned(),
        ),
        ("x-amz-target".to_owned(), target),
    ];
    Signer {
        access_key_id: FIXTURE_KEY,
        secret: FIXTURE_SECRET,
        region: REGION,
        service: "cloudtrail",
    }
    .sign("POST", "/", "", &mut headers, &body, t.clock.now());
    let response = handle(
        &t.app,
        IncomingRequest {
            method: "POST".into(),
            path: "/".into(),
            query: String::new(),
            headers,
            body: bytes::Bytes::from(body),
            peer: std::net::IpAddr::from([127, 0, 0, 1]),
        },
    )
    .await;
    let json: serde_json::Value = serde_json::from_slice(&response.body).unwrap_or_default();
    (response.status, json)
}

struct Store(Arc<App>);

impl ObjectSource for Store {
    fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, String> {
        let rt = tokio::runtime::Handle::current();
        let (objects, _) = tokio::task::block_in_place(|| {
            rt.block_on(self.0.buckets.list_objects(bucket, prefix, None, 100_000))
        })
        .map_err(|e| e.to_string())?;
        Ok(objects.into_iter().map(|o| o.key).collect())
    }

    fn get(&self, bucket: &str, key: &str) -> Result<Option<StoredObject>, String> {
        let rt = tokio::runtime::Handle::current();
        let object =
            tokio::task::block_in_place(|| rt.block_on(self.0.buckets.get_object(bucket, key)))
                .map_err(|e| e.to_string())?;
        Ok(object.map(|o| (o.bytes.to_vec(), o.metadata)))
    }
}

async fn keys(app: &App, prefix: &str) -> Vec<String> {
    let (objects, _) = app
        .buckets
        .list_objects("archive", prefix, None, 100_000)
        .await
        .unwrap();
    objects.into_iter().map(|o| o.key).collect()
}

fn digest_json(app: &App, key: &str) -> serde_json::Value {
    let rt = tokio::runtime::Handle::current();
    let object =
        tokio::task::block_in_place(|| rt.block_on(app.buckets.get_object("archive", key)))
            .unwrap()
            .unwrap();
    let mut text = String::new();
    use std::io::Read as _;
    flate2::read::GzDecoder::new(&object.bytes[..])
        .read_to_string(&mut text)
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hourly_digests_chain_across_idle_hours_and_a_stop() {
    let t = test_app(Timestamp::from_millis(T0)).await;
    let app = t.app.clone();
    app.buckets
        .create(ACCOUNT, REGION, "archive", t.clock.now())
        .unwrap();
    cloudtrail(
        &t,
        "CreateTrail",
        serde_json::json!({"Name": "main", "S3BucketName": "archive", "EnableLogFileValidation": true}),
    )
    .await;
    cloudtrail(&t, "StartLogging", serde_json::json!({"Name": "main"})).await;
    cloudtrail(&t, "DescribeTrails", serde_json::json!({})).await;
    let mut worker = Worker::default();
    worker.pass(&app, false).await.unwrap();
    let logs = format!("AWSLogs/{ACCOUNT}/CloudTrail/{REGION}/");
    let digests = format!("AWSLogs/{ACCOUNT}/CloudTrail-Digest/{REGION}/");
    assert!(
        keys(&app, &logs).await.is_empty(),
        "written before the interval"
    );

    // Five minutes later the three records are one file.
    t.clock.advance_millis(300_000);
    worker.pass(&app, false).await.unwrap();
    let files = keys(&app, &logs).await;
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(
        files[0].ends_with(".json.gz")
            && files[0].contains("_CloudTrail_us-east-1_20241010T1205Z_"),
        "{}",
        files[0]
    );

    // Three hours on (no passes in between, as if the server was down): one
    // digest per hour, the later two empty, each linked to the one before.
    t.clock.advance_millis(3 * 3_600_000);
    worker.pass(&app, false).await.unwrap();
    let written = keys(&app, &digests).await;
    assert_eq!(written.len(), 3, "{written:?}");
    let chain: Vec<serde_json::Value> = written.iter().map(|k| digest_json(&app, k)).collect();
    assert_eq!(chain[0]["digestStartTime"], "2024-10-10T12:00:00Z");
    assert_eq!(chain[0]["digestEndTime"], "2024-10-10T13:00:00Z");
    assert!(chain[0]["previousDigestS3Object"].is_null());
    assert_eq!(chain[0]["logFiles"].as_array().unwrap().len(), 1);
    for pair in chain.windows(2) {
        assert_eq!(pair[1]["digestStartTime"], pair[0]["digestEndTime"]);
        assert_eq!(pair[1]["previousDigestS3Object"], pair[0]["digestS3Object"]);
        assert_eq!(pair[1]["logFiles"], serde_json::json!([]));
        assert!(pair[1]["oldestEventTime"].is_null());
    }

    // StopLogging: its own record is delivered, then a final, shorter digest.
    t.clock.advance_millis(600_000);
    cloudtrail(&t, "StopLogging", serde_json::json!({"Name": "main"})).await;
    worker.pass(&app, false).await.unwrap();
    let files = keys(&app, &logs).await;
    assert_eq!(files.len(), 2);
    let written = keys(&app, &digests).await;
    assert_eq!(written.len(), 4);
    let last = digest_json(&app, &written[3]);
    assert_eq!(last["digestStartTime"], "2024-10-10T15:00:00Z");
    assert_eq!(last["digestEndTime"], "2024-10-10T15:15:00Z");
    assert_eq!(last["logFiles"].as_array().unwrap().len(), 1);

    // Nothing more while the trail is stopped, however long.
    t.clock.advance_millis(5 * 3_600_000);
    worker.pass(&app, false).await.unwrap();
    assert_eq!(keys(&app, &digests).await.len(), 4);

    let request = VerifyRequest {
        bucket: "archive".into(),
        prefix: None,
        account: ACCOUNT.into(),
        region: REGION.into(),
        trail: "main".into(),
        home_region: REGION.into(),
        start: Timestamp::from_millis(T0),
        end: t.clock.now(),
    };
    let public = app
        .digest_keys
        .public_keys(REGION, Timestamp::from_millis(T0), t.clock.now())
        .unwrap();
    let source = Store(app.clone());
    let report = digest::verify(&source, &public, &request);
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!((report.digests_valid, report.logs_valid), (4, 2));

    // A changed log file is caught.
    app.buckets
        .put_object(
            "archive",
            &files[0],
            bytes::Bytes::from(digest::gzip(b"{\"Records\":[]}")),
            None,
            &[],
            t.clock.now(),
        )
        .await
        .unwrap();
    let report = digest::verify(&source, &public, &request);
    assert!(!report.ok());
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("hash value doesn't match")),
        "{:?}",
        report.problems
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insights_open_and_close_on_a_burst_and_reach_trail_and_lookup() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(trailwatch_types::ManualClock::new(Timestamp::from_millis(
        T0,
    )));
    let root = trailwatch_core::identity::RootCredentials {
        account_id: ACCOUNT.to_owned(),
        access_key_id: FIXTURE_KEY.to_owned(),
        secret_access_key: FIXTURE_SECRET.to_owned(),
    };
    let mut config = trailwatch_server::AppConfig::new(dir.path(), ACCOUNT);
    // The shortest warm-up the algorithm allows: 36 hours.
    config.insights_baseline_minutes = 36 * 60;
    let app = App::open(
        config,
        clock.clone(),
        trailwatch_core::identity::KeyRing::with_root(&root),
    )
    .await
    .unwrap();
    let t = TestApp {
        app: app.clone(),
        clock: clock.clone(),
        _dir: dir,
    };
    app.buckets
        .create(ACCOUNT, REGION, "archive", clock.now())
        .unwrap();
    cloudtrail(
        &t,
        "CreateTrail",
        serde_json::json!({"Name": "main", "S3BucketName": "archive"}),
    )
    .await;
    cloudtrail(
        &t,
        "PutInsightSelectors",
        serde_json::json!({"TrailName": "main", "InsightSelectors": [
            {"InsightType": "ApiCallRateInsight"}, {"InsightType": "ApiErrorRateInsight"}]}),
    )
    .await;
    cloudtrail(&t, "StartLogging", serde_json::json!({"Name": "main"})).await;
    let mut worker = Worker::default();
    // A refused AddTags: `aws:` keys are reserved.
    let refused = || async {
        let (status, answer) = cloudtrail_call(
            &t,
            "AddTags",
            serde_json::json!({"ResourceId": format!("arn:aws:cloudtrail:{REGION}:{ACCOUNT}:trail/main"),
                               "TagsList": [{"Key": "aws:k", "Value": "v"}]}),
        )
        .await;
        assert_eq!(answer["__type"], "InvalidTagParameterException", "{status}");
    };
    // Baseline: one AddTags and one refused AddTags an hour for 37 hours.
    for _ in 0..37 {
        cloudtrail(
            &t,
            "AddTags",
            serde_json::json!({"ResourceId": format!("arn:aws:cloudtrail:{REGION}:{ACCOUNT}:trail/main"),
                               "TagsList": [{"Key": "k", "Value": "v"}]}),
        )
        .await;
        refused().await;
        clock.advance_millis(3_600_000);
        worker.pass(&app, false).await.unwrap();
    }
    let insight_keys = |app: Arc<App>| async move {
        keys(
            &app,
            &format!("AWSLogs/{ACCOUNT}/CloudTrail-Insight/{REGION}/"),
        )
        .await
    };
    assert!(insight_keys(app.clone()).await.is_empty());
    // A burst: 25 calls and 15 refused calls in one minute.
    for _ in 0..25 {
        cloudtrail(
            &t,
            "AddTags",
            serde_json::json!({"ResourceId": format!("arn:aws:cloudtrail:{REGION}:{ACCOUNT}:trail/main"),
                               "TagsList": [{"Key": "k", "Value": "v"}]}),
        )
        .await;
    }
    for _ in 0..15 {
        refused().await;
    }
    clock.advance_millis(65_000);
    worker.pass(&app, false).await.unwrap();
    clock.advance_millis(6 * 60_000);
    worker.pass(&app, false).await.unwrap();
    // The Start record went out with the burst's file; the End record, written
    // a pass later, goes out one delivery interval after that.
    clock.advance_millis(300_000);
    worker.pass(&app, false).await.unwrap();
    clock.advance_millis(300_000);
    worker.pass(&app, false).await.unwrap();
    let files = insight_keys(app.clone()).await;
    assert_eq!(files.len(), 2, "{files:?}");
    let mut records = Vec::new();
    for key in &files {
        let object = app
            .buckets
            .get_object("archive", key)
            .await
            .unwrap()
            .unwrap();
        let mut text = String::new();
        use std::io::Read as _;
        flate2::read::GzDecoder::new(&object.bytes[..])
            .read_to_string(&mut text)
            .unwrap();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        records.extend(doc["Records"].as_array().unwrap().iter().cloned());
    }
    assert_eq!(records.len(), 4, "{records:?}");
    let of_type = |t: &str, state: &str| {
        records
            .iter()
            .find(|r| {
                r["insightDetails"]["insightType"] == t && r["insightDetails"]["state"] == state
            })
            .cloned()
            .unwrap_or_else(|| panic!("no {t} {state} in {records:?}"))
    };
    let (start, end) = (
        &of_type("ApiCallRateInsight", "Start"),
        &of_type("ApiCallRateInsight", "End"),
    );
    // The error rate counts the refused calls, per error code, without the
    // errorCode attribution block.
    let errors = of_type("ApiErrorRateInsight", "Start");
    assert_eq!(
        errors["insightDetails"]["errorCode"],
        "InvalidTagParameterException"
    );
    assert_eq!(
        errors["insightDetails"]["insightContext"]["statistics"]["insight"]["average"],
        15.0
    );
    let blocks = errors["insightDetails"]["insightContext"]["attributions"]
        .as_array()
        .unwrap();
    assert_eq!(blocks.len(), 2);
    assert_eq!(
        of_type("ApiErrorRateInsight", "End")["sharedEventID"],
        errors["sharedEventID"]
    );
    assert_eq!(start["eventType"], "AwsCloudTrailInsight");
    assert_eq!(start["eventCategory"], "Insight");
    assert_eq!(start["insightDetails"]["state"], "Start");
    assert_eq!(start["insightDetails"]["eventName"], "AddTags");
    assert_eq!(start["insightDetails"]["insightType"], "ApiCallRateInsight");
    assert_eq!(
        start["insightDetails"]["insightContext"]["statistics"]["insight"]["average"],
        40.0
    );
    assert_eq!(end["insightDetails"]["state"], "End");
    assert_eq!(start["sharedEventID"], end["sharedEventID"]);
    assert!(start.get("userIdentity").is_none() && start.get("eventName").is_none());
    // LookupEvents finds them with EventCategory=insight only.
    let found = cloudtrail(
        &t,
        "LookupEvents",
        serde_json::json!({"EventCategory": "insight", "LookupAttributes": [
            {"AttributeKey": "EventName", "AttributeValue": "AddTags"}]}),
    )
    .await;
    assert_eq!(found["Events"].as_array().unwrap().len(), 4, "{found}");
}
