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

/// A SigV4-signed HTTP call to an AWS-style endpoint (path-style S3, or a
/// JSON API): the trail archive's writes, and `trailwatch trail verify`'s
/// reads.
#[derive(Debug, Clone, Copy)]
pub struct SignedCall<'a> {
    /// Base URL, without a trailing slash.
    pub endpoint: &'a str,
    /// Access key id.
    pub access_key_id: &'a str,
    /// Its secret.
    pub secret: &'a str,
    /// Signing region.
    pub region: &'a str,
    /// Signing name (`s3` also sends `x-amz-content-sha256`).
    pub service: &'a str,
}

/// What a [`SignedCall`] answered.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Response headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: Bytes,
}

impl SignedCall<'_> {
    fn host(&self) -> &str {
        self.endpoint
            .split_once("://")
            .map_or(self.endpoint, |(_, rest)| rest)
            .split('/')
            .next()
            .unwrap_or_default()
    }

    /// Signs (with the wall clock: signatures need real time, whatever
    /// clock the server runs on) and sends `method path?query` with `extra`
    /// headers; the error says why no answer came.
    pub async fn send(
        &self,
        http: &reqwest::Client,
        method: &str,
        path: &str,
        query: &str,
        extra: &[(String, String)],
        body: Bytes,
    ) -> Result<Answer, String> {
        let mut headers = vec![("host".to_owned(), self.host().to_owned())];
        if self.service == "s3" {
            headers.push(("x-amz-content-sha256".to_owned(), sha256_hex(&body)));
        }
        headers.extend(extra.iter().cloned());
        Signer {
            access_key_id: self.access_key_id,
            secret: self.secret,
            region: self.region,
            service: self.service,
        }
        .sign(method, path, query, &mut headers, &body, wall_clock());
        let url = if query.is_empty() {
            format!("{}{path}", self.endpoint)
        } else {
            format!("{}{path}?{query}", self.endpoint)
        };
        let method: reqwest::Method = method.parse().map_err(|_| format!("bad method {method}"))?;
        let mut request = http.request(method.clone(), &url).body(body);
        for (k, v) in &headers {
            if k != "host" {
                request = request.header(k.as_str(), v.as_str());
            }
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("{method} {url}: {e}"))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("{method} {url}: reading the answer: {e}"))?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

impl RemoteS3 {
    async fn send(
        &self,
        http: &reqwest::Client,
        method: &str,
        path: &str,
        extra: &[(String, String)],
        body: Bytes,
    ) -> Result<(u16, String), String> {
        let call = SignedCall {
            endpoint: &self.endpoint,
            access_key_id: &self.access_key_id,
            secret: &self.secret_access_key,
            region: &self.region,
            service: "s3",
        };
        let answer = call.send(http, method, path, "", extra, body).await?;
        Ok((
            answer.status,
            String::from_utf8_lossy(&answer.body).into_owned(),
        ))
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
