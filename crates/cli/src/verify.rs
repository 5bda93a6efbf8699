//! `trailwatch trail verify`: the stricter digest verifier of
//! `spec/cloudtrail.md` §3.12, run against any CloudTrail + S3 endpoint (a
//! trailwatch server, or AWS): it reads the trail's digests, log files and
//! public keys over the same API `aws cloudtrail validate-logs` uses, then
//! checks everything that command checks and also the previous-digest hash
//! and signature links, window contiguity, key validity and unlisted files.

use anyhow::{anyhow, bail, Context as _};
use base64::Engine as _;
use trailwatch_core::digest::{self, ObjectSource, PublicKey, StoredObject, VerifyRequest};
use trailwatch_server::archive::SignedCall;
use trailwatch_types::Timestamp;

/// Arguments of `trailwatch trail verify`.
#[derive(clap::Args, Debug)]
pub(crate) struct VerifyArgs {
    /// ARN of the trail: arn:aws:cloudtrail:<home region>:<account>:trail/<name>.
    #[arg(long)]
    trail_arn: String,
    /// Start of the range (ISO 8601, UTC).
    #[arg(long)]
    start_time: String,
    /// End of the range (ISO 8601, UTC); now when omitted.
    #[arg(long)]
    end_time: Option<String>,
    /// Endpoint serving CloudTrail and S3.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint_url: String,
    /// Region whose logs are verified; the trail's home region when omitted.
    #[arg(long)]
    region: Option<String>,
    /// Bucket of the trail (skips DescribeTrails).
    #[arg(long)]
    s3_bucket: Option<String>,
    /// Key prefix of the trail, with `--s3-bucket`.
    #[arg(long)]
    s3_prefix: Option<String>,
    /// Access key id.
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    access_key_id: String,
    /// Secret access key.
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    secret_access_key: String,
}

/// A signed HTTP client for one endpoint.
struct Api {
    http: reqwest::Client,
    endpoint: String,
    access_key_id: String,
    secret: String,
    region: String,
    runtime: tokio::runtime::Handle,
}

impl Api {
    async fn send(
        &self,
        service: &str,
        method: &str,
        path: &str,
        query: &str,
        extra: &[(&str, &str)],
        body: Vec<u8>,
    ) -> anyhow::Result<(u16, Vec<(String, String)>, Vec<u8>)> {
        let call = SignedCall {
            endpoint: &self.endpoint,
            access_key_id: &self.access_key_id,
            secret: &self.secret,
            region: &self.region,
            service,
        };
        let extra: Vec<(String, String)> = extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let answer = call
            .send(&self.http, method, path, query, &extra, body.into())
            .await
            .map_err(anyhow::Error::msg)?;
        Ok((answer.status, answer.headers, answer.body.to_vec()))
    }

    async fn cloudtrail(
        &self,
        operation: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let target = format!("com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.{operation}");
        let (status, _, bytes) = self
            .send(
                "cloudtrail",
                "POST",
                "/",
                "",
                &[
                    ("content-type", "application/x-amz-json-1.1"),
                    ("x-amz-target", &target),
                ],
                body.to_string().into_bytes(),
            )
            .await?;
        if status != 200 {
            bail!(
                "{operation} failed ({status}): {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        serde_json::from_slice(&bytes).context("CloudTrail answer is not JSON")
    }
}

fn now() -> Timestamp {
    use trailwatch_types::Clock as _;
    trailwatch_types::SystemClock.now()
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, &UNRESERVED).to_string()
}

/// RFC 3986 unreserved characters stay; everything else is encoded.
const UNRESERVED: percent_encoding::AsciiSet = percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn tag_values<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(&after[..j]);
        rest = &after[j + close.len()..];
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

impl ObjectSource for Api {
    fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, String> {
        let mut keys = Vec::new();
        let mut marker = String::new();
        loop {
            let query = format!("marker={}&prefix={}", encode(&marker), encode(prefix));
            let path = format!("/{bucket}");
            let (status, _, body) = self
                .runtime
                .block_on(self.send("s3", "GET", &path, &query, &[], Vec::new()))
                .map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(&body).into_owned();
            if status != 200 {
                return Err(format!("ListObjects {bucket} failed ({status}): {text}"));
            }
            let page: Vec<String> = tag_values(&text, "Key").into_iter().map(unescape).collect();
            let truncated = tag_values(&text, "IsTruncated").first() == Some(&"true");
            let next = tag_values(&text, "NextMarker")
                .first()
                .map(|s| unescape(s))
                .or_else(|| page.last().cloned());
            keys.extend(page);
            match (truncated, next) {
                (true, Some(n)) if n != marker => marker = n,
                _ => return Ok(keys),
            }
        }
    }

    fn get(&self, bucket: &str, key: &str) -> Result<Option<StoredObject>, String> {
        let path = format!(
            "/{bucket}/{}",
            key.split('/').map(encode).collect::<Vec<_>>().join("/")
        );
        let (status, headers, body) = self
            .runtime
            .block_on(self.send("s3", "GET", &path, "", &[], Vec::new()))
            .map_err(|e| e.to_string())?;
        match status {
            200 => Ok(Some((
                body,
                headers
                    .into_iter()
                    .filter_map(|(k, v)| k.strip_prefix("x-amz-meta-").map(|n| (n.to_owned(), v)))
                    .collect(),
            ))),
            404 => Ok(None),
            _ => Err(format!(
                "GetObject s3://{bucket}/{key} failed ({status}): {}",
                String::from_utf8_lossy(&body)
            )),
        }
    }
}

fn parse_time(s: &str) -> anyhow::Result<Timestamp> {
    Timestamp::parse_iso8601(s).map_err(|e| anyhow!("{s} is not an ISO 8601 time: {e}"))
}

/// Runs the verifier; the exit code is 0 when everything is valid, 1 when not.
pub(crate) async fn run(args: VerifyArgs) -> anyhow::Result<i32> {
    let parts: Vec<&str> = args.trail_arn.splitn(6, ':').collect();
    let (home, account, name) = match parts.as_slice() {
        ["arn", _, "cloudtrail", home, account, resource] => (
            (*home).to_owned(),
            (*account).to_owned(),
            resource
                .strip_prefix("trail/")
                .ok_or_else(|| anyhow!("{} is not a trail ARN", args.trail_arn))?
                .to_owned(),
        ),
        _ => bail!("{} is not a trail ARN", args.trail_arn),
    };
    let region = args.region.clone().unwrap_or_else(|| home.clone());
    let start = parse_time(&args.start_time)?;
    let end = match &args.end_time {
        Some(t) => parse_time(t)?,
        None => now(),
    };
    let endpoint = args.endpoint_url.trim_end_matches('/').to_owned();
    let api = Api {
        http: reqwest::Client::new(),
        endpoint,
        access_key_id: args.access_key_id.clone(),
        secret: args.secret_access_key.clone(),
        region: region.clone(),
        runtime: tokio::runtime::Handle::current(),
    };
    let (bucket, prefix) = match &args.s3_bucket {
        Some(b) => (b.clone(), args.s3_prefix.clone().filter(|p| !p.is_empty())),
        None => {
            let trails = api
                .cloudtrail("DescribeTrails", serde_json::json!({}))
                .await?;
            let trail = trails["trailList"]
                .as_array()
                .and_then(|l| {
                    l.iter()
                        .find(|t| t["TrailARN"].as_str() == Some(&args.trail_arn))
                })
                .ok_or_else(|| anyhow!("trail {} not found", args.trail_arn))?;
            (
                trail["S3BucketName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                trail["S3KeyPrefix"].as_str().map(str::to_owned),
            )
        }
    };
    let listed = api
        .cloudtrail(
            "ListPublicKeys",
            serde_json::json!({"StartTime": start.secs(), "EndTime": end.secs() + 2 * 3600}),
        )
        .await?;
    let mut keys = Vec::new();
    for k in listed["PublicKeyList"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let der = base64::engine::general_purpose::STANDARD
            .decode(k["Value"].as_str().unwrap_or_default())
            .context("public key Value is not base64")?;
        let time = |v: &serde_json::Value| {
            Timestamp::from_millis((v.as_f64().unwrap_or(0.0) * 1000.0) as i64)
        };
        keys.push(PublicKey {
            der,
            valid_from: time(&k["ValidityStartTime"]),
            valid_to: time(&k["ValidityEndTime"]),
            fingerprint: k["Fingerprint"].as_str().unwrap_or_default().to_owned(),
        });
    }
    if keys.is_empty() {
        bail!(
            "No public keys found between {} and {}",
            start.to_iso8601_seconds(),
            end.to_iso8601_seconds()
        );
    }
    let request = VerifyRequest {
        bucket,
        prefix,
        account,
        region,
        trail: name,
        home_region: home,
        start,
        end,
    };
    let report = tokio::task::spawn_blocking(move || digest::verify(&api, &keys, &request))
        .await
        .context("verifier task")?;
    println!(
        "Results requested for {} to {}",
        start.to_iso8601_seconds(),
        end.to_iso8601_seconds()
    );
    println!(
        "{}/{} digest files valid",
        report.digests_valid, report.digests_total
    );
    println!(
        "{}/{} log files valid",
        report.logs_valid, report.logs_total
    );
    println!("{} digest chain(s)", report.chains);
    for problem in &report.problems {
        println!("{problem}");
    }
    Ok(if report.ok() { 0 } else { 1 })
}
