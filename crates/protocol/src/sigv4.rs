//! Server-side AWS Signature Version 4 verification, header and presigned forms
//! (`spec/protocols.md` §11).
//!
//! [`parse`] extracts the claimed credential without any secret, so even a failed
//! request can be attributed in its CloudTrail record; [`verify`] then checks the
//! scope, the clock skew and the signature in the order §11.11 prescribes.
//!
//! S3 (signing name `s3`) differs in two ways, as its SDK signers do: the
//! canonical URI is the path as sent, neither normalized nor encoded again
//! ([`canonical_uri_s3`]), and the payload hash is always the
//! `x-amz-content-sha256` header's value.

use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use trailwatch_types::Timestamp;

use crate::classify::header;

/// SHA-256 of the empty string, the payload hash of body-less requests.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Characters SigV4 leaves unencoded: `A-Z a-z 0-9 - _ . ~`.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// As [`UNRESERVED`], plus `/` for canonical URIs.
const UNRESERVED_AND_SLASH: &AsciiSet = &UNRESERVED.remove(b'/');

/// The request parts that are signed.
#[derive(Debug, Clone)]
pub struct SignedParts<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Path as received (percent-encoded).
    pub path: &'a str,
    /// Raw query string, without `?`.
    pub query: &'a str,
    /// Headers in arrival order.
    pub headers: &'a [(String, String)],
    /// Lowercase hex SHA-256 of the body bytes as received (before gzip decoding).
    pub body_sha256: &'a str,
}

/// Why a request is not authenticated; each maps to a per-protocol error (§11.11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// No signature at all.
    Missing,
    /// Malformed or incomplete signature information.
    Incomplete(String),
    /// The access key id is not known.
    UnknownKey,
    /// Signature, scope or date mismatch; the message says which.
    Mismatch(String),
    /// Request time outside the allowed skew.
    Skew(String),
    /// Presigned URL past its expiry.
    Expired,
    /// `x-amz-content-sha256` is a hash, and not the body's.
    ContentSha256Mismatch,
}

/// The message AWS sends for a signature that does not match.
pub const MISMATCH_MESSAGE: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";

/// A parsed, not yet verified, signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedAuth {
    /// Access key id from the credential.
    pub access_key_id: String,
    /// Credential scope date `YYYYMMDD`.
    pub scope_date: String,
    /// Credential scope region.
    pub region: String,
    /// Credential scope service (signing name).
    pub service: String,
    /// Signed header names, as given.
    pub signed_headers: String,
    /// Hex signature.
    pub signature: String,
    /// Request time text (`YYYYMMDDTHHMMSSZ`).
    pub amz_date: String,
    /// Presigned form: seconds of validity.
    pub expires: Option<i64>,
    /// Session token, when temporary credentials signed the request.
    pub session_token: Option<String>,
}

/// Result of a successful verification, with the intermediate strings for diagnostics.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The verified claim.
    pub claim: ClaimedAuth,
    /// The canonical request that matched.
    pub canonical_request: String,
    /// The string to sign that matched.
    pub string_to_sign: String,
}

/// Extracts the signature claim. `Err(Missing)` when the request is unsigned.
pub fn parse(parts: &SignedParts<'_>) -> Result<ClaimedAuth, AuthFailure> {
    let auth_header = header(parts.headers, "authorization");
    let query_pairs = parse_query(parts.query);
    let presigned = query_pairs
        .iter()
        .any(|(k, _)| k == "X-Amz-Signature" || k == "X-Amz-Credential");
    match (auth_header, presigned) {
        (None, false) => Err(AuthFailure::Missing),
        (Some(_), true) => Err(AuthFailure::Incomplete("Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter or the Authorization header should be specified".to_owned())),
        (Some(h), false) => parse_header(h, parts.headers),
        (None, true) => parse_presigned(&query_pairs),
    }
}

fn parse_header(value: &str, headers: &[(String, String)]) -> Result<ClaimedAuth, AuthFailure> {
    let value = value.trim();
    let (algorithm, rest) = value.split_once(' ').unwrap_or((value, ""));
    if algorithm != "AWS4-HMAC-SHA256" {
        return Err(AuthFailure::Incomplete(format!(
            "Unsupported AWS 'algorithm': '{algorithm}'"
        )));
    }
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for component in rest.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        let Some((k, v)) = component.split_once('=') else {
            return Err(AuthFailure::Incomplete(format!(
                "'{component}' not a valid key=value pair (missing equal-sign) in Authorization header: '{value}'."
            )));
        };
        match k.trim() {
            "Credential" => credential = Some(v.trim().to_owned()),
            "SignedHeaders" => signed_headers = Some(v.trim().to_owned()),
            "Signature" => signature = Some(v.trim().to_owned()),
            _ => {}
        }
    }
    let mut missing = String::new();
    for (name, present) in [
        ("Credential", credential.is_some()),
        ("Signature", signature.is_some()),
        ("SignedHeaders", signed_headers.is_some()),
    ] {
        if !present {
            missing.push_str(&format!(
                "Authorization header requires '{name}' parameter. "
            ));
        }
    }
    let amz_date = match header(headers, "x-amz-date") {
        Some(d) => Some(d.trim().to_owned()),
        None => header(headers, "date")
            .and_then(|d| Timestamp::parse_http_date(d.trim()).ok())
            .map(Timestamp::to_amz_date),
    };
    if amz_date.is_none() {
        missing.push_str(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. ",
        );
    }
    if !missing.is_empty() {
        return Err(AuthFailure::Incomplete(format!(
            "{}Authorization={value}",
            missing
        )));
    }
    let (Some(credential), Some(signed_headers), Some(signature), Some(amz_date)) =
        (credential, signed_headers, signature, amz_date)
    else {
        return Err(AuthFailure::Incomplete(
            "incomplete Authorization header".to_owned(),
        ));
    };
    let session_token = header(headers, "x-amz-security-token").map(str::to_owned);
    claim(
        &credential,
        signed_headers,
        signature,
        amz_date,
        None,
        session_token,
    )
}

fn parse_presigned(pairs: &[(String, String)]) -> Result<ClaimedAuth, AuthFailure> {
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut missing = Vec::new();
    for name in [
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Signature",
        "X-Amz-SignedHeaders",
        "X-Amz-Date",
    ] {
        if get(name).is_none() {
            missing.push(name);
        }
    }
    if !missing.is_empty() {
        return Err(AuthFailure::Incomplete(format!(
            "AWS query-string parameters must include {}. Re-examine the query-string parameters.",
            missing.join(", ")
        )));
    }
    if get("X-Amz-Algorithm").as_deref() != Some("AWS4-HMAC-SHA256") {
        return Err(AuthFailure::Incomplete(
            "Unsupported AWS 'algorithm'".to_owned(),
        ));
    }
    let expires = match get("X-Amz-Expires") {
        Some(e) => match e.parse::<i64>() {
            Ok(v) if (1..=604_800).contains(&v) => Some(v),
            _ => {
                return Err(AuthFailure::Incomplete(
                    "X-Amz-Expires must be between 1 and 604800 seconds".to_owned(),
                ))
            }
        },
        None => Some(900),
    };
    claim(
        &get("X-Amz-Credential").unwrap_or_default(),
        get("X-Amz-SignedHeaders").unwrap_or_default(),
        get("X-Amz-Signature").unwrap_or_default(),
        get("X-Amz-Date").unwrap_or_default(),
        expires,
        get("X-Amz-Security-Token"),
    )
}

fn claim(
    credential: &str,
    signed_headers: String,
    signature: String,
    amz_date: String,
    expires: Option<i64>,
    session_token: Option<String>,
) -> Result<ClaimedAuth, AuthFailure> {
    let parts: Vec<&str> = credential.split('/').collect();
    if parts.len() != 5 || parts[4] != "aws4_request" || parts[0].is_empty() {
        return Err(AuthFailure::Incomplete(format!(
            "Credential should be scoped to a valid region. Malformed credential '{credential}'"
        )));
    }
    Ok(ClaimedAuth {
        access_key_id: parts[0].to_owned(),
        scope_date: parts[1].to_owned(),
        region: parts[2].to_owned(),
        service: parts[3].to_owned(),
        signed_headers,
        signature,
        amz_date,
        expires,
        session_token,
    })
}

/// Whether `region` looks like an AWS region name (`us-east-1`, `eu-central-2`, …).
pub fn is_plausible_region(region: &str) -> bool {
    !region.is_empty()
        && region.len() <= 32
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !region.starts_with('-')
        && !region.ends_with('-')
}

/// Verifies a claim with the key's secret: scope, skew, then signature.
pub fn verify(
    parts: &SignedParts<'_>,
    claim: ClaimedAuth,
    secret: &str,
    expected_service: &str,
    now: Timestamp,
    max_skew_secs: i64,
) -> Result<Verified, AuthFailure> {
    let request_time = Timestamp::parse_amz_date(&claim.amz_date).map_err(|_| {
        AuthFailure::Incomplete(format!(
            "Date must be in ISO-8601 'basic format'. Got '{}'. See http://en.wikipedia.org/wiki/ISO_8601",
            claim.amz_date
        ))
    })?;
    if !claim.amz_date.starts_with(&claim.scope_date) {
        return Err(AuthFailure::Mismatch(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from '{}'.",
            claim.scope_date,
            &claim.amz_date[..8.min(claim.amz_date.len())],
            if claim.expires.is_some() { "X-Amz-Date" } else { "x-amz-date" }
        )));
    }
    if !is_plausible_region(&claim.region) {
        return Err(AuthFailure::Mismatch(
            "Credential should be scoped to a valid region.".to_owned(),
        ));
    }
    if claim.service != expected_service {
        return Err(AuthFailure::Mismatch(format!(
            "Credential should be scoped to correct service: '{expected_service}'."
        )));
    }
    if let Some(expires) = claim.expires {
        if now.secs() > request_time.secs() + expires {
            return Err(AuthFailure::Expired);
        }
        if request_time.secs() > now.secs() + max_skew_secs {
            return Err(skew_not_yet(request_time, now, max_skew_secs));
        }
    } else {
        if request_time.secs() < now.secs() - max_skew_secs {
            let earliest = Timestamp::from_secs(now.secs() - max_skew_secs);
            return Err(AuthFailure::Skew(format!(
                "Signature expired: {} is now earlier than {} ({} - {} min.)",
                request_time.to_amz_date(),
                earliest.to_amz_date(),
                now.to_amz_date(),
                max_skew_secs / 60
            )));
        }
        if request_time.secs() > now.secs() + max_skew_secs {
            return Err(skew_not_yet(request_time, now, max_skew_secs));
        }
    }

    let signed: Vec<&str> = claim.signed_headers.split(';').collect();
    if !signed.contains(&"host") {
        return Err(AuthFailure::Incomplete(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.".to_owned(),
        ));
    }
    let canonical_headers = canonical_headers(parts.headers, &signed)?;
    let canonical_uris = if expected_service == "s3" {
        s3_uri_candidates(parts.path)
    } else {
        vec![canonical_uri(parts.path)]
    };
    let canonical_query = canonical_query(parts.query, claim.expires.is_some());
    let payload_hashes: Vec<String> = match header(parts.headers, "x-amz-content-sha256") {
        Some(v) if v.starts_with("STREAMING-") => {
            return Err(AuthFailure::Incomplete(
                "STREAMING payloads are not supported".to_owned(),
            ))
        }
        Some(v) if v == "UNSIGNED-PAYLOAD" => vec![v.to_owned()],
        Some(v) => {
            if !v.eq_ignore_ascii_case(parts.body_sha256) {
                return Err(AuthFailure::ContentSha256Mismatch);
            }
            vec![v.to_owned()]
        }
        None if claim.expires.is_some() => {
            vec![parts.body_sha256.to_owned(), "UNSIGNED-PAYLOAD".to_owned()]
        }
        None => vec![parts.body_sha256.to_owned()],
    };
    let scope = format!(
        "{}/{}/{}/aws4_request",
        claim.scope_date, claim.region, claim.service
    );
    let key = signing_key(secret, &claim.scope_date, &claim.region, &claim.service);
    let provided = claim.signature.to_ascii_lowercase();
    let attempts = canonical_uris
        .iter()
        .flat_map(|uri| payload_hashes.iter().map(move |hash| (uri, hash)));
    for (canonical_uri, payload_hash) in attempts {
        let canonical_request = format!(
            "{}\n{}\n{}\n{}\n{}\n{}",
            parts.method,
            canonical_uri,
            canonical_query,
            canonical_headers,
            claim.signed_headers,
            payload_hash
        );
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{}\n{}\n{}",
            claim.amz_date,
            scope,
            hex::encode(Sha256::digest(canonical_request.as_bytes()))
        );
        let computed = hex::encode(hmac(&key, string_to_sign.as_bytes()));
        if computed.as_bytes().ct_eq(provided.as_bytes()).into() {
            return Ok(Verified {
                claim,
                canonical_request,
                string_to_sign,
            });
        }
    }
    Err(AuthFailure::Mismatch(MISMATCH_MESSAGE.to_owned()))
}

fn skew_not_yet(request_time: Timestamp, now: Timestamp, max_skew_secs: i64) -> AuthFailure {
    let latest = Timestamp::from_secs(now.secs() + max_skew_secs);
    AuthFailure::Skew(format!(
        "Signature not yet current: {} is still later than {} ({} + {} min.)",
        request_time.to_amz_date(),
        latest.to_amz_date(),
        now.to_amz_date(),
        max_skew_secs / 60
    ))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The SigV4 signing key for (secret, date, region, service).
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                percent_decode_str(k).decode_utf8_lossy().into_owned(),
                percent_decode_str(v).decode_utf8_lossy().into_owned(),
            )
        })
        .collect()
}

/// Canonical URI: normalized path, each byte re-encoded (so `%3A` becomes `%253A`).
pub fn canonical_uri(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut normalized = format!("/{}", segments.join("/"));
    if path.ends_with('/') && normalized != "/" {
        normalized.push('/');
    }
    utf8_percent_encode(&normalized, UNRESERVED_AND_SLASH).to_string()
}

/// S3's canonical URI: the path exactly as sent (`/` when empty), neither
/// normalized nor encoded a second time.
pub fn canonical_uri_s3(path: &str) -> String {
    if path.is_empty() {
        "/".to_owned()
    } else {
        path.to_owned()
    }
}

/// The URIs an S3 signature may cover: the path as sent, then (for a client
/// that sent characters unencoded but signed them encoded) the path decoded
/// and encoded once the SigV4 way.
fn s3_uri_candidates(path: &str) -> Vec<String> {
    let as_sent = canonical_uri_s3(path);
    let decoded = percent_decode_str(&as_sent).decode_utf8_lossy();
    let encoded_once = utf8_percent_encode(&decoded, UNRESERVED_AND_SLASH).to_string();
    if encoded_once == as_sent {
        vec![as_sent]
    } else {
        vec![as_sent, encoded_once]
    }
}

/// Canonical query string: decoded, re-encoded, sorted; `X-Amz-Signature` dropped
/// for presigned requests.
pub fn canonical_query(query: &str, presigned: bool) -> String {
    let mut pairs: Vec<(String, String)> = parse_query(query)
        .into_iter()
        .filter(|(k, _)| !(presigned && k == "X-Amz-Signature"))
        .map(|(k, v)| {
            (
                utf8_percent_encode(&k, UNRESERVED).to_string(),
                utf8_percent_encode(&v, UNRESERVED).to_string(),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn canonical_headers(headers: &[(String, String)], signed: &[&str]) -> Result<String, AuthFailure> {
    let mut out = String::new();
    for name in signed {
        let values: Vec<String> = headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        if values.is_empty() {
            return Err(AuthFailure::Mismatch(MISMATCH_MESSAGE.to_owned()));
        }
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    Ok(out)
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Credentials and scope for signing requests the way SDKs do; used by tests and
/// the bench tool.
#[derive(Debug, Clone)]
pub struct Signer<'a> {
    /// Access key id.
    pub access_key_id: &'a str,
    /// Secret access key.
    pub secret: &'a str,
    /// Scope region.
    pub region: &'a str,
    /// Scope service (signing name).
    pub service: &'a str,
}

impl Signer<'_> {
    /// Signs in header form: adds `x-amz-date` and `authorization` to `headers`,
    /// which must already hold `host`. Every header present is signed. For
    /// `s3` it also adds `x-amz-content-sha256` and signs the path as sent.
    pub fn sign(
        &self,
        method: &str,
        path: &str,
        query: &str,
        headers: &mut Vec<(String, String)>,
        body: &[u8],
        now: Timestamp,
    ) {
        let amz_date = now.to_amz_date();
        headers.push(("x-amz-date".to_owned(), amz_date.clone()));
        let s3 = self.service == "s3";
        if s3 {
            headers.push(("x-amz-content-sha256".to_owned(), sha256_hex(body)));
        }
        let mut names: Vec<String> = headers
            .iter()
            .map(|(k, _)| k.to_ascii_lowercase())
            .collect();
        names.sort();
        names.dedup();
        let signed: Vec<&str> = names.iter().map(String::as_str).collect();
        let canonical_headers = canonical_headers(headers, &signed).unwrap_or_default();
        let signed_headers = signed.join(";");
        let uri = if s3 {
            canonical_uri_s3(path)
        } else {
            canonical_uri(path)
        };
        let canonical_request = format!(
            "{method}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{}",
            uri,
            canonical_query(query, false),
            sha256_hex(body)
        );
        let date = &amz_date[..8];
        let scope = format!("{date}/{}/{}/aws4_request", self.region, self.service);
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            sha256_hex(canonical_request.as_bytes())
        );
        let key = signing_key(self.secret, date, self.region, self.service);
        let signature = hex::encode(hmac(&key, string_to_sign.as_bytes()));
        headers.push((
            "authorization".to_owned(),
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
                self.access_key_id
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_uri_double_encodes() {
        assert_eq!(canonical_uri("/"), "/");
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/a/./b/../c/"), "/a/c/");
        assert_eq!(canonical_uri("/x%3Ay"), "/x%253Ay");
    }

    #[test]
    fn s3_signs_the_path_as_sent() {
        assert_eq!(canonical_uri_s3(""), "/");
        assert_eq!(canonical_uri_s3("/b/a%3Ab/./c"), "/b/a%3Ab/./c");
        assert_eq!(s3_uri_candidates("/b/k%20x"), ["/b/k%20x"]);
        assert_eq!(s3_uri_candidates("/b/k!x"), ["/b/k!x", "/b/k%21x"]);
        let now = Timestamp::parse_amz_date("20261124T034340Z").unwrap();
        let signer = Signer {
            access_key_id: "AKID",
            secret: "secret",
            region: "eu-west-1",
            service: "s3",
        };
        let body = b"object bytes";
        let path = "/bucket/dir/a%3Ab%20c.json.gz";
        let mut headers = vec![("host".to_owned(), "127.0.0.1:4600".to_owned())];
        signer.sign("PUT", path, "", &mut headers, body, now);
        let hash = sha256_hex(body);
        let parts = SignedParts {
            method: "PUT",
            path,
            query: "",
            headers: &headers,
            body_sha256: &hash,
        };
        let claim = parse(&parts).unwrap();
        assert!(verify(&parts, claim.clone(), "secret", "s3", now, 900).is_ok());
        // The normalizing, double-encoding rule of the other services differs.
        assert_ne!(canonical_uri(path), canonical_uri_s3(path));
        let other = sha256_hex(b"other bytes");
        let tampered = SignedParts {
            body_sha256: &other,
            ..parts.clone()
        };
        assert_eq!(
            verify(&tampered, claim, "secret", "s3", now, 900).unwrap_err(),
            AuthFailure::ContentSha256Mismatch
        );
        // UNSIGNED-PAYLOAD covers any body.
        let mut unsigned = vec![
            ("host".to_owned(), "127.0.0.1:4600".to_owned()),
            (
                "x-amz-content-sha256".to_owned(),
                "UNSIGNED-PAYLOAD".to_owned(),
            ),
            ("x-amz-date".to_owned(), now.to_amz_date()),
        ];
        let signed_headers = "host;x-amz-content-sha256;x-amz-date";
        let canonical_headers =
            canonical_headers(&unsigned, &signed_headers.split(';').collect::<Vec<_>>()).unwrap();
        let canonical_request =
            format!("GET\n/bucket/k\n\n{canonical_headers}\n{signed_headers}\nUNSIGNED-PAYLOAD");
        let scope = "20261124/eu-west-1/s3/aws4_request";
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
            now.to_amz_date(),
            sha256_hex(canonical_request.as_bytes())
        );
        let key = signing_key("secret", "20261124", "eu-west-1", "s3");
        let signature = hex::encode(hmac(&key, string_to_sign.as_bytes()));
        unsigned.push((
            "authorization".to_owned(),
            format!("AWS4-HMAC-SHA256 Credential=AKID/{scope}, SignedHeaders={signed_headers}, Signature={signature}"),
        ));
        let parts = SignedParts {
            method: "GET",
            path: "/bucket/k",
            query: "",
            headers: &unsigned,
            body_sha256: &other,
        };
        let claim = parse(&parts).unwrap();
        assert!(verify(&parts, claim, "secret", "s3", now, 900).is_ok());
    }

    #[test]
    fn canonical_query_sorts_and_reencodes() {
        assert_eq!(
            canonical_query("b=2&a=%2F x&a=1", false),
            "a=%2F%20x&a=1&b=2"
        );
        assert_eq!(
            canonical_query("X-Amz-Signature=abc&Action=ListTopics", true),
            "Action=ListTopics"
        );
    }

    #[test]
    fn sign_then_verify_round_trip_and_failures() {
        let now = Timestamp::parse_amz_date("20261124T034340Z").unwrap();
        let mut headers = vec![("host".to_owned(), "127.0.0.1:4600".to_owned())];
        let body = b"{}";
        let signer = Signer {
            access_key_id: "AKID",
            secret: "secret",
            region: "us-east-1",
            service: "logs",
        };
        signer.sign("POST", "/", "", &mut headers, body, now);
        let hash = sha256_hex(body);
        let parts = SignedParts {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body_sha256: &hash,
        };
        let claim = parse(&parts).unwrap();
        assert_eq!(claim.access_key_id, "AKID");
        assert!(verify(&parts, claim.clone(), "secret", "logs", now, 900).is_ok());
        assert_eq!(
            verify(&parts, claim.clone(), "wrong", "logs", now, 900).unwrap_err(),
            AuthFailure::Mismatch(MISMATCH_MESSAGE.to_owned())
        );
        assert!(matches!(
            verify(&parts, claim.clone(), "secret", "monitoring", now, 900),
            Err(AuthFailure::Mismatch(m)) if m.contains("'monitoring'")
        ));
        let later = Timestamp::from_secs(now.secs() + 901);
        assert!(matches!(
            verify(&parts, claim.clone(), "secret", "logs", later, 900),
            Err(AuthFailure::Skew(m)) if m.starts_with("Signature expired: 20261124T034340Z is now earlier than 20261124T034341Z")
        ));
        let earlier = Timestamp::from_secs(now.secs() - 901);
        assert!(
            matches!(verify(&parts, claim, "secret", "logs", earlier, 900), Err(AuthFailure::Skew(m)) if m.starts_with("Signature not yet current"))
        );
        let other_hash = sha256_hex(b"{ }");
        let tampered = SignedParts {
            body_sha256: &other_hash,
            ..parts.clone()
        };
        let claim = parse(&tampered).unwrap();
        assert!(matches!(
            verify(&tampered, claim, "secret", "logs", now, 900),
            Err(AuthFailure::Mismatch(_))
        ));
    }

    #[test]
    fn parse_failures() {
        let hash = sha256_hex(b"");
        let none: Vec<(String, String)> = vec![];
        let parts = SignedParts {
            method: "POST",
            path: "/",
            query: "",
            headers: &none,
            body_sha256: &hash,
        };
        assert_eq!(parse(&parts), Err(AuthFailure::Missing));
        let headers = vec![
            (
                "Authorization".to_owned(),
                "AWS4-HMAC-SHA256 Credential=A/20261124/us-east-1/logs/aws4_request".to_owned(),
            ),
            ("X-Amz-Date".to_owned(), "20261124T034340Z".to_owned()),
        ];
        let parts = SignedParts {
            headers: &headers,
            ..parts
        };
        assert!(
            matches!(parse(&parts), Err(AuthFailure::Incomplete(m)) if m.contains("'Signature'") && m.contains("'SignedHeaders'"))
        );
    }
}
