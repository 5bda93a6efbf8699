//! `seed-audit`: realistic CloudTrail history written straight through the audit
//! store (WAL, then segments) of a stopped server's data directory, so lookup
//! benchmarks can run against millions of records without millions of calls.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use trailwatch_core::audit::{classify_operation, AuditOptions, AuditStore, CallRecord, Resource};
use trailwatch_core::token::TokenCodec;
use trailwatch_storage::{Objects, SqliteCatalog, WalOptions};
use trailwatch_types::{Clock, ManualClock, Timestamp};

#[derive(clap::Args, Debug)]
pub(crate) struct SeedArgs {
    /// Data directory of a stopped trailwatch server.
    #[arg(long)]
    data_dir: PathBuf,
    /// Records to write.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Spread the records over this many days, ending now.
    #[arg(long, default_value_t = 30)]
    days: i64,
    /// Account id of the records (the server's account).
    #[arg(long)]
    account: String,
    /// Region of the records.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Random seed, for repeatable data.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

const SEED_BATCH: usize = 1000;

const OPERATIONS: &[(&str, &str, u32)] = &[
    // (service signing name, operation, weight)
    ("monitoring", "DescribeAlarms", 30),
    ("monitoring", "PutMetricAlarm", 6),
    ("monitoring", "DeleteAlarms", 2),
    ("monitoring", "SetAlarmState", 2),
    ("monitoring", "GetDashboard", 5),
    ("monitoring", "PutMetricData", 20),
    ("logs", "DescribeLogGroups", 15),
    ("logs", "CreateLogGroup", 2),
    ("logs", "PutRetentionPolicy", 1),
    ("logs", "PutLogEvents", 20),
    ("cloudtrail", "LookupEvents", 8),
    ("cloudtrail", "DescribeTrails", 4),
    ("cloudtrail", "CreateTrail", 1),
    ("sts", "GetCallerIdentity", 10),
];

const USER_AGENTS: &[&str] = &[
    "Boto3/1.44.5 md/Botocore#1.44.5 ua/2.1 os/linux#6.1 md/arch#x86_64 lang/python#3.11.7 md/pyimpl#CPython cfg/retry-mode#standard botocore/1.44.5",
    "aws-cli/1.46.3 md/Botocore#1.43.62 ua/2.1 os/linux#6.1 md/arch#x86_64 lang/python#3.11.7 md/pyimpl#CPython command/cloudwatch.describe-alarms",
    "aws-sdk-rust/1.7.0 ua/2.1 api/cloudwatch/1.140.0 os/linux lang/rust/1.95.0 m/E,N md/http#hyper-1.x",
    "APN/1.0 HashiCorp/1.0 Terraform/1.9.8 (+https://www.terraform.io) terraform-provider-aws/5.80.0",
];

pub(crate) async fn run(args: SeedArgs) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(args.seed);
    #[allow(clippy::disallowed_methods)] // the history ends at the real now
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let start_ms = now_ms - args.days * 86_400_000;
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(start_ms)));
    let catalog =
        Arc::new(SqliteCatalog::open(&args.data_dir.join("catalog.db")).context("open catalog")?);
    let objects = Objects::local(&args.data_dir.join("objects"))?;
    let token_key = std::fs::read(args.data_dir.join("token-key")).unwrap_or_else(|_| vec![0; 32]);
    let options = AuditOptions {
        // Seeding is a bulk load: durability comes from the flushes below.
        wal: WalOptions {
            sync: false,
            ..WalOptions::default()
        },
        flush_rows: u64::MAX,
        ..AuditOptions::default()
    };
    let store = AuditStore::open(
        &args.data_dir.join("audit"),
        catalog,
        objects,
        clock.clone() as Arc<dyn Clock>,
        TokenCodec::new(token_key),
        options,
    )
    .await?;
    let total_weight: u32 = OPERATIONS.iter().map(|o| o.2).sum();
    let users: Vec<(String, String, String)> = (0..40)
        .map(|i| {
            let name = format!("user-{i:02}");
            let key = format!("AKIA{:016}", 1_000_000 + i);
            let id = format!("AIDA{:017}", 5_000_000 + i);
            (name, key, id)
        })
        .collect();
    let step = ((now_ms - start_ms) as f64 / args.records.max(1) as f64).max(0.0);
    let began = std::time::Instant::now();
    // Appends go out in concurrent batches so the WAL's group commit batches them.
    let mut batch: Vec<CallRecord> = Vec::with_capacity(SEED_BATCH);
    for i in 0..args.records {
        clock.set(Timestamp::from_millis(start_ms + (i as f64 * step) as i64));
        let mut pick = rng.gen_range(0..total_weight);
        let &(service, operation, _) = OPERATIONS
            .iter()
            .find(|o| {
                if pick < o.2 {
                    true
                } else {
                    pick -= o.2;
                    false
                }
            })
            .unwrap_or(&OPERATIONS[0]);
        let (user, key, principal) = &users[rng.gen_range(0..users.len())];
        let class = classify_operation(service, operation);
        let (params, resources) =
            payload(&mut rng, service, operation, &args.account, &args.region);
        let failed = rng.gen_ratio(1, 40);
        let record = CallRecord {
            event_time: clock.now(),
            event_source: format!("{service}.amazonaws.com"),
            event_name: operation.to_owned(),
            aws_region: args.region.clone(),
            source_ip_address: format!("10.{}.{}.{}", rng.gen_range(0..4), rng.gen_range(0..255), rng.gen_range(1..255)),
            user_agent: Some(USER_AGENTS[rng.gen_range(0..USER_AGENTS.len())].to_owned()),
            user_identity: serde_json::json!({
                "type": "IAMUser", "principalId": principal,
                "arn": format!("arn:aws:iam::{}:user/{user}", args.account),
                "accountId": args.account, "accessKeyId": key, "userName": user,
            }),
            error: failed.then(|| ("AccessDenied".to_owned(), format!("User: arn:aws:iam::{}:user/{user} is not authorized to perform: {operation}", args.account))),
            request_parameters: params,
            response_elements: None,
            additional_event_data: None,
            request_id: uuid::Uuid::from_u128(rng.gen()).to_string(),
            event_id: uuid::Uuid::from_u128(rng.gen::<u128>() & !(0xf << 76) | (4 << 76)).to_string(),
            read_only: class.read_only,
            resources,
            category: class.category,
            api_version: None,
            recipient_account_id: args.account.clone(),
        };
        batch.push(record);
        if batch.len() == SEED_BATCH || i + 1 == args.records {
            for result in futures::future::join_all(batch.iter().map(|r| store.append(r))).await {
                result?;
            }
            batch.clear();
        }
        if (i + 1) % 250_000 == 0 {
            store.flush().await?;
            eprintln!(
                "{} records, {:.0}/s",
                i + 1,
                (i + 1) as f64 / began.elapsed().as_secs_f64()
            );
        }
    }
    store.shutdown().await?;
    eprintln!(
        "seeded {} records in {:.1}s",
        args.records,
        began.elapsed().as_secs_f64()
    );
    Ok(())
}

fn payload(
    rng: &mut StdRng,
    service: &str,
    operation: &str,
    account: &str,
    region: &str,
) -> (Option<serde_json::Value>, Vec<Resource>) {
    let resource = |arn: String, kind: &str, name: &str| Resource {
        arn,
        account_id: account.to_owned(),
        resource_type: kind.to_owned(),
        name: name.to_owned(),
    };
    match (service, operation) {
        ("monitoring", "DescribeAlarms") => (
            Some(serde_json::json!({"maxRecords": 100, "stateValue": "ALARM"})),
            vec![],
        ),
        ("monitoring", "PutMetricAlarm" | "DeleteAlarms" | "SetAlarmState") => {
            let name = format!("alarm-{:04}", rng.gen_range(0..2000));
            let params = serde_json::json!({"alarmName": name, "metricName": "CPUUtilization", "namespace": "AWS/EC2", "threshold": 80.0, "period": 60, "evaluationPeriods": 3, "comparisonOperator": "GreaterThanThreshold"});
            let arn = format!("arn:aws:cloudwatch:{region}:{account}:alarm:{name}");
            (
                Some(params),
                vec![resource(arn, "AWS::CloudWatch::Alarm", &name)],
            )
        }
        ("monitoring", "GetDashboard") => {
            let name = format!("dash-{}", rng.gen_range(0..50));
            let arn = format!("arn:aws:cloudwatch::{account}:dashboard/{name}");
            (
                Some(serde_json::json!({"dashboardName": name})),
                vec![resource(arn, "AWS::CloudWatch::Dashboard", &name)],
            )
        }
        ("monitoring", "PutMetricData") => (
            Some(
                serde_json::json!({"namespace": "App/Web", "metricData": [{"metricName": "Latency", "dimensions": [{"name": "Host", "value": format!("web-{}", rng.gen_range(0..100))}], "value": "HIDDEN_DUE_TO_SECURITY_REASONS"}]}),
            ),
            vec![],
        ),
        ("logs", _) if operation != "DescribeLogGroups" => {
            let group = format!("/app/service-{}", rng.gen_range(0..300));
            let arn = format!("arn:aws:logs:{region}:{account}:log-group:{group}");
            (
                Some(serde_json::json!({"logGroupName": group})),
                vec![resource(arn, "AWS::Logs::LogGroup", &group)],
            )
        }
        ("cloudtrail", "CreateTrail") => {
            let name = format!("trail-{}", rng.gen_range(0..10));
            let arn = format!("arn:aws:cloudtrail:{region}:{account}:trail/{name}");
            (
                Some(serde_json::json!({"name": name, "s3BucketName": "audit-archive"})),
                vec![resource(arn, "AWS::CloudTrail::Trail", &name)],
            )
        }
        ("cloudtrail", "LookupEvents") => (
            Some(
                serde_json::json!({"lookupAttributes": [{"attributeKey": "EventName", "attributeValue": "CreateTrail"}], "maxResults": 50}),
            ),
            vec![],
        ),
        _ => (None, vec![]),
    }
}
