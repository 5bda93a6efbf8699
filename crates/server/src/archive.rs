//! Where trails keep their files (`spec/cloudtrail.md` §2.5): the embedded
//! buckets of this server, or any S3-compatible endpoint named at start
//! (path-style requests, SigV4 with the `s3` signing name). Digest signatures
//! travel as `x-amz-meta-*` user metadata either way.

use bytes::Bytes;
use trailwatch_protocol::sigv4::{sha256_hex, Signer};
use trailwatch_types::Timestamp;

use crate::app::App;

/// An external S3-compatible store for trail files.
#[derive(Debug, Clone)]
pub struct RemoteS3 {
    /// Base URL, without a trailing slash.
    pub endpoint: String,
    /// Access key id of trailwatch's storage credential.
    pub access_key_id: String,
    /// Its secret.
    pub secret_access_key: String,
    /// Signing region.
    pub region: String,
}

/// Why a bucket cannot take a trail's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BucketProblem {
    /// It does not exist (`S3BucketDoesNotExistException`).
    Missing,
    /// It exists but refuses us (`InsufficientS3BucketPolicyException`).
    Refused,
    /// The store could not be asked.
    Unavailable(String),
}

impl RemoteS3 {
    fn host(&self) -> &str {
        self.endpoint
            .split_once("://")
            .map_or(self.endpoint.as_str(), |(_, rest)| rest)
            .split('/')
            .next()
            .unwrap_or_default()
    }

    async fn send(
        &self,
        http: &reqwest::Client,
        method: &str,
        path: &str,
        extra: &[(String, String)],
        body: Bytes,
    ) -> Result<(u16, String), String> {
        let mut headers = vec![
            ("host".to_owned(), self.host().to_owned()),
            ("x-amz-content-sha256".to_owned(), sha256_hex(&body)),
        ];
        headers.extend(extra.iter().cloned());
        Signer {
            access_key_id: &self.access_key_id,
            secret: &self.secret_access_key,
            region: &self.region,
            service: "s3",
        }
        .sign(method, path, "", &mut headers, &body, wall_clock());
        let mut request = http
            .request(
                method.parse().map_err(|_| format!("bad method {method}"))?,
                format!("{}{path}", self.endpoint),
            )
            .body(body);
        for (k, v) in &headers {
            if k != "host" {
                request = request.header(k.as_str(), v.as_str());
            }
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        Ok((status, text))
    }

    /// HeadBucket.
    pub async fn check_bucket(
        &self,
        http: &reqwest::Client,
        bucket: &str,
    ) -> Result<(), BucketProblem> {
        match self
            .send(http, "HEAD", &format!("/{bucket}"), &[], Bytes::new())
            .await
        {
            Ok((200, _)) => Ok(()),
            Ok((404, _)) => Err(BucketProblem::Missing),
            Ok((403, _)) => Err(BucketProblem::Refused),
            Ok((status, body)) => Err(BucketProblem::Unavailable(format!(
                "HeadBucket answered {status}: {body}"
            ))),
            Err(e) => Err(BucketProblem::Unavailable(e)),
        }
    }

    /// PutObject with user metadata; the error is the S3 error code.
    pub async fn put(
        &self,
        http: &reqwest::Client,
        bucket: &str,
        key: &str,
        bytes: Bytes,
        metadata: &[(String, String)],
    ) -> Result<(), String> {
        let mut extra = vec![("content-type".to_owned(), "application/json".to_owned())];
        extra.extend(
            metadata
                .iter()
                .map(|(k, v)| (format!("x-amz-meta-{k}"), v.clone())),
        );
        match self
            .send(http, "PUT", &format!("/{bucket}/{key}"), &extra, bytes)
            .await
        {
            Ok((200, _)) => Ok(()),
            Ok((_, body)) => Err(xml_code(&body).unwrap_or_else(|| "InternalError".to_owned())),
            Err(e) => {
                tracing::warn!(error = %e, "trail archive unreachable");
                Err("ServiceUnavailable".to_owned())
            }
        }
    }
}

fn xml_code(body: &str) -> Option<String> {
    let start = body.find("<Code>")? + "<Code>".len();
    let end = body[start..].find("</Code>")? + start;
    Some(body[start..end].to_owned())
}

fn wall_clock() -> Timestamp {
    use trailwatch_types::Clock as _;
    // Signatures need real time, whatever clock the server runs on.
    trailwatch_types::SystemClock.now()
}

/// Runs `f`, which may block, without stalling other tasks of a
/// multi-threaded runtime (a current-thread runtime just runs it).
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Checks that `bucket` can take the files of a trail of `account`: it is
/// registered to `account` on the embedded store, or answers HeadBucket on
/// the external one. Synchronous, for the trail handlers; the external check
/// blocks only its own worker thread.
pub fn check_bucket(app: &App, bucket: &str, account: &str) -> Result<(), BucketProblem> {
    if let Some(remote) = &app.config.trail_s3 {
        return blocking(|| {
            tokio::runtime::Handle::current().block_on(remote.check_bucket(&app.http, bucket))
        });
    }
    match app.buckets.get(bucket) {
        Ok(Some(info)) if info.account == account => Ok(()),
        Ok(Some(_)) => Err(BucketProblem::Refused),
        Ok(None) => Err(BucketProblem::Missing),
        Err(e) => Err(BucketProblem::Unavailable(e.to_string())),
    }
}

/// Writes one trail file; the error is the S3 error code GetTrailStatus reports.
pub async fn put(
    app: &App,
    bucket: &str,
    key: &str,
    bytes: Bytes,
    metadata: &[(String, String)],
    now: Timestamp,
) -> Result<(), String> {
    if let Some(remote) = &app.config.trail_s3 {
        return remote.put(&app.http, bucket, key, bytes, metadata).await;
    }
    app.buckets
        .put_object(bucket, key, bytes, Some("application/json"), metadata, now)
        .await
        .map(|_| ())
        .map_err(|e| match e {
            trailwatch_core::buckets::BucketError::NoSuchBucket(_) => "NoSuchBucket".to_owned(),
            other => {
                tracing::warn!(error = %other, "trail archive write failed");
                "InternalError".to_owned()
            }
        })
}
