//! `seed-trail`: a trail's worth of delivered log files and signed digests,
//! written into a stopped server's bucket with the same key layout, file
//! format and signing code the delivery worker uses, so `validate-logs` and
//! `trailwatch trail verify` can be timed over a day of files without waiting
//! a day.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use trailwatch_core::buckets::Buckets;
use trailwatch_core::digest::{self, DigestInput, DigestKeys, LogFileEntry, PreviousDigest};
use trailwatch_storage::{Objects, SqliteCatalog};
use trailwatch_types::Timestamp;

#[derive(clap::Args, Debug)]
pub(crate) struct SeedTrailArgs {
    /// Data directory of a stopped trailwatch server.
    #[arg(long)]
    data_dir: PathBuf,
    /// Account id (the server's account).
    #[arg(long)]
    account: String,
    /// Region of the trail.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Bucket (created when missing).
    #[arg(long, default_value = "bench-trail")]
    bucket: String,
    /// Key prefix.
    #[arg(long, default_value = "bench")]
    prefix: String,
    /// Trail name, as digest keys name it.
    #[arg(long, default_value = "bench-trail")]
    trail: String,
    /// Hours of files, ending at the last whole hour.
    #[arg(long, default_value_t = 24)]
    hours: i64,
    /// Log files per hour (AWS delivers about every 5 minutes: 12).
    #[arg(long, default_value_t = 12)]
    files_per_hour: i64,
    /// Records per log file.
    #[arg(long, default_value_t = 200)]
    records_per_file: usize,
}

fn record(account: &str, region: &str, at: Timestamp, n: usize) -> String {
    serde_json::json!({
        "eventVersion": "1.11",
        "userIdentity": {"type": "Root", "principalId": account, "arn": format!("arn:aws:iam::{account}:root"),
                         "accountId": account, "accessKeyId": "AKIAEXAMPLEBENCH0001"},
        "eventTime": at.to_iso8601_seconds(),
        "eventSource": "monitoring.amazonaws.com",
        "eventName": if n.is_multiple_of(3) { "PutMetricAlarm" } else { "DescribeAlarms" },
        "awsRegion": region,
        "sourceIPAddress": "127.0.0.1",
        "userAgent": "aws-cli/1.46.3 md/Botocore#1.43.62 ua/2.1 os/linux#6.1 md/arch#x86_64 lang/python#3.11.7",
        "requestParameters": {"alarmName": format!("alarm-{n}"), "namespace": "App", "metricName": "Latency",
                              "threshold": 50.0, "evaluationPeriods": 3, "comparisonOperator": "GreaterThanThreshold"},
        "responseElements": null,
        "requestID": uuid::Uuid::new_v4().to_string(),
        "eventID": uuid::Uuid::new_v4().to_string(),
        "readOnly": !n.is_multiple_of(3),
        "resources": [{"accountId": account, "type": "AWS::CloudWatch::Alarm",
                       "ARN": format!("arn:aws:cloudwatch:{region}:{account}:alarm:alarm-{n}")}],
        "eventType": "AwsApiCall",
        "managementEvent": true,
        "recipientAccountId": account,
        "eventCategory": "Management",
    })
    .to_string()
}

pub(crate) async fn run(args: SeedTrailArgs) -> anyhow::Result<()> {
    let catalog: Arc<dyn trailwatch_storage::Catalog> =
        Arc::new(SqliteCatalog::open(&args.data_dir.join("catalog.db")).context("open catalog")?);
    let objects = Objects::local(&args.data_dir.join("objects"))?;
    let buckets = Buckets::new(catalog.clone(), objects);
    let now = crate::now();
    if buckets.get(&args.bucket)?.is_none() {
        buckets.create(&args.account, &args.region, &args.bucket, now)?;
    }
    let keys = DigestKeys::new(
        catalog,
        &args.data_dir.join("digest-keys"),
        digest::DEFAULT_ROTATION_SECS,
    );
    let end_hour = now.secs() / 3600 * 3600;
    let first = end_hour - args.hours * 3600;
    let step = 3600 / args.files_per_hour.max(1);
    let prefix = (!args.prefix.is_empty()).then_some(args.prefix.as_str());
    let mut previous: Option<PreviousDigest> = None;
    let (mut files, mut records) = (0usize, 0usize);
    for hour in 0..args.hours {
        let start = first + hour * 3600;
        let mut listed = Vec::new();
        for f in 0..args.files_per_hour {
            let delivered = Timestamp::from_secs(start + (f + 1) * step - 1);
            let times: Vec<Timestamp> = (0..args.records_per_file)
                .map(|i| {
                    Timestamp::from_secs(
                        delivered.secs() - step + (i as i64 * step) / args.records_per_file as i64,
                    )
                })
                .collect();
            let body = format!(
                "{{\"Records\":[{}]}}",
                times
                    .iter()
                    .enumerate()
                    .map(|(i, t)| record(&args.account, &args.region, *t, i))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let key = digest::log_file_key(
                prefix,
                &args.account,
                "CloudTrail",
                &args.region,
                delivered,
                &digest::unique16(),
            );
            buckets
                .put_object(
                    &args.bucket,
                    &key,
                    bytes::Bytes::from(digest::gzip(body.as_bytes())),
                    Some("application/json"),
                    &[],
                    delivered,
                )
                .await?;
            listed.push(LogFileEntry {
                bucket: args.bucket.clone(),
                key,
                hash_hex: digest::sha256_hex(body.as_bytes()),
                oldest: times[0],
                newest: times[times.len() - 1],
            });
            files += 1;
            records += times.len();
        }
        let end = Timestamp::from_secs(start + 3600);
        let key = digest::digest_key(
            prefix,
            &args.account,
            &args.region,
            &args.trail,
            &args.region,
            end,
        );
        let signer = keys.signer(&args.region, Timestamp::from_secs(first))?;
        let signed = digest::sign_digest(
            &DigestInput {
                account: args.account.clone(),
                bucket: args.bucket.clone(),
                key: key.clone(),
                start: Timestamp::from_secs(start),
                end,
                previous: previous.clone(),
                log_files: listed,
            },
            &signer,
        );
        buckets
            .put_object(
                &args.bucket,
                &key,
                bytes::Bytes::from(signed.gzip.clone()),
                Some("application/json"),
                &[
                    ("signature".to_owned(), signed.signature_hex.clone()),
                    (
                        "signature-algorithm".to_owned(),
                        digest::SIGNATURE_ALGORITHM.to_owned(),
                    ),
                ],
                end,
            )
            .await?;
        previous = Some(PreviousDigest::of(&args.bucket, &key, &signed));
    }
    println!(
        "seeded {files} log files ({records} records) and {} digests from {} to {}",
        args.hours,
        Timestamp::from_secs(first).to_iso8601_seconds(),
        Timestamp::from_secs(end_hour).to_iso8601_seconds()
    );
    Ok(())
}
