//! The stricter verifier (`spec/cloudtrail.md` §3.12): everything
//! `aws cloudtrail validate-logs` checks (§3.8), plus what it leaves out.
//!
//! From the CLI: single-member gunzip, required fields, the digest's recorded location,
//! its key fingerprint among the public keys, the PKCS#1 key, the RSA signature over the
//! §3.5 string, and the SHA-256 of every log file a valid digest lists.
//!
//! Added here:
//! - `previousDigestHashValue` and `previousDigestSignature` equal the actual previous
//!   object's hash and `signature` metadata; the five `previous*` fields are all null or
//!   all set; no two digests follow the same previous one (a fork).
//! - `digestSignatureAlgorithm`, the `signature-algorithm` metadata, `hashAlgorithm`
//!   and `previousDigestHashAlgorithm` values; `awsAccountId`; every field of §3.3 is
//!   present with its type and time format; the key names `digestEndTime`.
//! - The signing key's validity window covers `digestEndTime`.
//! - Windows inside a chain are contiguous: a digest starts where its previous ended.
//! - Every object under `[prefix/]AWSLogs/{account}/CloudTrail/{region}/` follows the
//!   §2.1 naming scheme, and each whose stamp lies in `[start, end]` is listed by some
//!   valid digest, which detects injected files. A file delivered while validation was
//!   off is reported too: the request carries no record of such periods.
//!
//! Scope: the digests of the trail in its folder whose stamp (`digestEndTime`) lies in
//! `[start, end + 2 hours]`: a log file stamped at `end` is listed by the digest whose
//! window holds its delivery, which ends up to an hour later, more if the digest writer
//! ran late. Previous digests named by those, when they end at or after `start`, are
//! read and counted even if the listing missed them (a bucket change, or deletion:
//! `not found`). Older previous digests are only read to check the link.
//!
//! Nothing here does IO except through [`ObjectSource`]; no error aborts the run: each
//! becomes one line in [`VerifyReport::problems`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::signature::Verifier as _;
use rsa::RsaPublicKey;
use serde_json::{Map, Value};
use sha2::Sha256;
use trailwatch_types::Timestamp;

use super::{
    data_to_sign, digest_key, gunzip_single, log_file_key, md5_hex, sha256_hex, GunzipError,
    PublicKey, HASH_ALGORITHM, SIGNATURE_ALGORITHM,
};

/// How far past `end` digests are read: a log file delivered just before `end` is
/// listed by a digest ending up to an hour later (more when the writer ran late).
const DIGEST_SCOPE_AFTER_END_SECS: i64 = 2 * 3600;

/// An object's bytes and its user metadata `(name, value)` pairs.
pub type StoredObject = (Vec<u8>, Vec<(String, String)>);

/// Where the verifier reads objects: a trailwatch S3 endpoint, a directory copy, or
/// memory in tests.
pub trait ObjectSource {
    /// Every key of `bucket` that starts with `prefix`, in any order.
    fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, String>;
    /// The object's bytes and user metadata (names without the `x-amz-meta-` prefix),
    /// or `None` when it does not exist.
    fn get(&self, bucket: &str, key: &str) -> Result<Option<StoredObject>, String>;
}

/// What to verify: one trail's digests and log files of one region.
#[derive(Debug, Clone)]
pub struct VerifyRequest {
    /// The trail's bucket.
    pub bucket: String,
    /// The trail's S3 key prefix, if any.
    pub prefix: Option<String>,
    /// Account whose logs are verified.
    pub account: String,
    /// Region whose logs are verified (the digest folder's region).
    pub region: String,
    /// Trail name, as in digest file names.
    pub trail: String,
    /// Region the trail was created in, as in digest file names.
    pub home_region: String,
    /// Start of the range.
    pub start: Timestamp,
    /// End of the range.
    pub end: Timestamp,
}

/// The outcome: counts as the CLI prints them, and every problem found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Digests that passed every per-digest check.
    pub digests_valid: usize,
    /// Digests in scope, including those not found.
    pub digests_total: usize,
    /// Log files of valid digests whose hash matched.
    pub logs_valid: usize,
    /// Log files listed by valid digests.
    pub logs_total: usize,
    /// One human-readable line per problem, e.g.
    /// `INVALID: hash value doesn't match: s3://b/k`.
    pub problems: Vec<String>,
    /// Chains seen: digests in scope whose previous is null, missing, unreadable or
    /// outside the scope.
    pub chains: usize,
}

impl VerifyReport {
    /// Whether nothing was wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// An object location, `(bucket, key)`.
type Location = (String, String);

fn url(location: &Location) -> String {
    format!("s3://{}/{}", location.0, location.1)
}

/// A digest's link to its previous one, as its JSON states it.
#[derive(Debug)]
struct Link {
    previous: Location,
    hash_hex: Option<String>,
    signature_hex: Option<String>,
}

/// What the checks keep of a digest that could be read and parsed.
#[derive(Debug)]
struct Parsed {
    hash_hex: String,
    signature_hex: Option<String>,
    start_time: Option<String>,
    end_time: Option<String>,
    link: Option<Link>,
    /// `(bucket, key, hashValue)` of each listed log file.
    log_files: Vec<(String, String, String)>,
    valid: bool,
}

/// A digest object read and parsed, before any check.
struct Fetched {
    hash_hex: String,
    document: Map<String, Value>,
    signature_hex: Option<String>,
    signature_algorithm: Option<String>,
}

enum FetchError {
    NotFound,
    Source(String),
    InvalidFormat,
}

fn fetch(source: &dyn ObjectSource, location: &Location) -> Result<Fetched, FetchError> {
    let (bytes, metadata) = source
        .get(&location.0, &location.1)
        .map_err(FetchError::Source)?
        .ok_or(FetchError::NotFound)?;
    let json = gunzip_single(&bytes).map_err(|_| FetchError::InvalidFormat)?;
    let Ok(Value::Object(document)) = serde_json::from_slice::<Value>(&json) else {
        return Err(FetchError::InvalidFormat);
    };
    let meta = |name: &str| {
        metadata
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    Ok(Fetched {
        hash_hex: sha256_hex(&json),
        document,
        signature_hex: meta("signature"),
        signature_algorithm: meta("signature-algorithm"),
    })
}

fn string_field<'a>(document: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    document.get(name).and_then(Value::as_str)
}

/// A `YYYY-MM-DDTHH:MM:SSZ` time, in exactly that form.
fn parse_time(text: &str) -> Option<Timestamp> {
    let at = Timestamp::parse_iso8601(text).ok()?;
    (at.to_iso8601_seconds() == text).then_some(at)
}

/// The `digestEndTime` stamp of a digest key, whatever its location.
fn digest_key_stamp(key: &str) -> Option<Timestamp> {
    let name = key.rsplit('/').next()?.strip_suffix(".json.gz")?;
    let name = name.strip_suffix("_backfill").unwrap_or(name);
    Timestamp::parse_amz_date(name.rsplit('_').next()?).ok()
}

struct Run<'a> {
    source: &'a dyn ObjectSource,
    keys: &'a [PublicKey],
    req: &'a VerifyRequest,
    report: VerifyReport,
}

impl Run<'_> {
    fn problem(&mut self, what: &str, location: &Location) {
        self.report
            .problems
            .push(format!("{what}: {}", url(location)));
    }

    fn prefix(&self) -> String {
        match self.req.prefix.as_deref() {
            Some(p) if !p.is_empty() => format!("{p}/"),
            _ => String::new(),
        }
    }

    /// The digests of the trail in the listing, with their stamps, in key order.
    fn listed_digests(&mut self) -> Option<Vec<(String, Timestamp)>> {
        let req = self.req;
        let folder = format!(
            "{}AWSLogs/{}/CloudTrail-Digest/{}/",
            self.prefix(),
            req.account,
            req.region
        );
        let file_prefix = format!(
            "{}_CloudTrail-Digest_{}_{}_{}_",
            req.account, req.region, req.trail, req.home_region
        );
        let mut keys = match self.source.list(&req.bucket, &folder) {
            Ok(keys) => keys,
            Err(e) => {
                self.problem(
                    &format!("ERROR: cannot list digests ({e})"),
                    &(req.bucket.clone(), folder),
                );
                return None;
            }
        };
        keys.sort();
        let mut out = Vec::new();
        for key in keys {
            let Some(rest) = key.strip_prefix(&folder) else {
                continue;
            };
            let parts: Vec<&str> = rest.split('/').collect();
            let [year, month, day, name] = parts.as_slice() else {
                continue;
            };
            let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            if !(numeric(year) && numeric(month) && numeric(day) && name.starts_with(&file_prefix))
            {
                // Another trail's digest, or not a digest: the CLI ignores these too.
                continue;
            }
            let Some(stamp) = digest_key_stamp(&key) else {
                self.problem(
                    "INVALID: digest key does not follow the naming scheme",
                    &(req.bucket.clone(), key.clone()),
                );
                continue;
            };
            let in_scope = stamp >= req.start
                && stamp.secs() <= req.end.secs().saturating_add(DIGEST_SCOPE_AFTER_END_SECS);
            if !in_scope {
                continue;
            }
            if name.ends_with("_backfill.json.gz") {
                self.problem(
                    "INVALID: backfill digest (trailwatch never writes them)",
                    &(req.bucket.clone(), key.clone()),
                );
                continue;
            }
            out.push((key, stamp));
        }
        Some(out)
    }

    /// Every per-digest check; counts the digest. `None` when it could not be parsed.
    fn check_digest(&mut self, location: &Location) -> Option<Parsed> {
        self.report.digests_total += 1;
        let fetched = match fetch(self.source, location) {
            Ok(fetched) => fetched,
            Err(FetchError::NotFound) => {
                self.problem("INVALID: not found", location);
                return None;
            }
            Err(FetchError::Source(e)) => {
                self.problem(&format!("ERROR: cannot read digest ({e})"), location);
                return None;
            }
            Err(FetchError::InvalidFormat) => {
                self.problem("INVALID: invalid format", location);
                return None;
            }
        };
        let before = self.report.problems.len();
        let parsed = self.check_fetched(location, &fetched);
        match parsed {
            Some(mut parsed) => {
                parsed.valid = self.report.problems.len() == before;
                if parsed.valid {
                    self.report.digests_valid += 1;
                }
                Some(parsed)
            }
            None => None,
        }
    }

    fn check_fetched(&mut self, location: &Location, fetched: &Fetched) -> Option<Parsed> {
        let document = &fetched.document;
        // The CLI's required keys: without them nothing else can be checked.
        let required = [
            "digestPublicKeyFingerprint",
            "digestS3Bucket",
            "digestS3Object",
            "digestEndTime",
            "digestStartTime",
        ];
        if required
            .iter()
            .any(|name| string_field(document, name).is_none())
            || !matches!(
                document.get("previousDigestSignature"),
                Some(Value::Null | Value::String(_))
            )
        {
            self.problem("INVALID: invalid format", location);
            return None;
        }
        let field = |name: &str| string_field(document, name).unwrap_or_default().to_owned();
        let fingerprint = field("digestPublicKeyFingerprint");
        let end_time = field("digestEndTime");
        let start_time = field("digestStartTime");
        let previous_signature = string_field(document, "previousDigestSignature");

        let (Some(signature_hex), Some(signature_algorithm)) =
            (&fetched.signature_hex, &fetched.signature_algorithm)
        else {
            self.problem("INVALID: signature verification failed", location);
            return None;
        };
        if signature_algorithm != SIGNATURE_ALGORITHM {
            self.problem(
                &format!("INVALID: signature-algorithm metadata is {signature_algorithm:?}"),
                location,
            );
        }
        if field("digestS3Bucket") != location.0 || field("digestS3Object") != location.1 {
            self.problem(
                "INVALID: has been moved from its original location",
                location,
            );
        }
        self.check_signature(
            location,
            &fingerprint,
            &end_time,
            &fetched.hash_hex,
            previous_signature,
            signature_hex,
        );
        let link = self.check_fields(location, document, &end_time, &start_time);
        let log_files = self.check_log_entries(location, document);
        Some(Parsed {
            hash_hex: fetched.hash_hex.clone(),
            signature_hex: Some(signature_hex.clone()),
            start_time: Some(start_time),
            end_time: Some(end_time),
            link,
            log_files,
            valid: false,
        })
    }

    /// Key lookup, PKCS#1 parse, key window and the RSA verification of §3.5.
    fn check_signature(
        &mut self,
        location: &Location,
        fingerprint: &str,
        end_time: &str,
        hash_hex: &str,
        previous_signature: Option<&str>,
        signature_hex: &str,
    ) {
        let keys = self.keys;
        let matching: Vec<&PublicKey> = keys
            .iter()
            .filter(|k| k.fingerprint == fingerprint)
            .collect();
        let Some(key) = matching.first() else {
            self.problem(
                &format!(
                    "INVALID: public key not found in region {} for fingerprint {fingerprint}",
                    self.req.region
                ),
                location,
            );
            return;
        };
        if md5_hex(&key.der) != fingerprint {
            self.problem(
                &format!("INVALID: public key {fingerprint} does not hash to its fingerprint"),
                location,
            );
        }
        let end = parse_time(end_time);
        let covered = end.is_some_and(|end| matching.iter().any(|k| k.covers(end)));
        if !covered {
            self.problem(
                &format!("INVALID: key {fingerprint} is not valid at digestEndTime {end_time}"),
                location,
            );
        }
        let Ok(public) = RsaPublicKey::from_pkcs1_der(&key.der) else {
            self.problem(
                &format!("INVALID: Unable to load PKCS #1 key with fingerprint {fingerprint}"),
                location,
            );
            return;
        };
        let message = data_to_sign(
            end_time,
            &location.0,
            &location.1,
            hash_hex,
            previous_signature,
        );
        let verified = hex::decode(signature_hex)
            .ok()
            .and_then(|bytes| Signature::try_from(bytes.as_slice()).ok())
            .is_some_and(|signature| {
                VerifyingKey::<Sha256>::new(public)
                    .verify(message.as_bytes(), &signature)
                    .is_ok()
            });
        if !verified {
            self.problem("INVALID: signature verification failed", location);
        }
    }

    /// The §3.3 fields the CLI does not read; returns the previous-digest link.
    fn check_fields(
        &mut self,
        location: &Location,
        document: &Map<String, Value>,
        end_time: &str,
        start_time: &str,
    ) -> Option<Link> {
        let strings = [
            "awsAccountId",
            "digestSignatureAlgorithm",
            "digestStartTime",
            "digestEndTime",
        ];
        let nullable = [
            "newestEventTime",
            "oldestEventTime",
            "previousDigestS3Bucket",
            "previousDigestS3Object",
            "previousDigestHashValue",
            "previousDigestHashAlgorithm",
            "previousDigestSignature",
        ];
        for name in strings {
            if string_field(document, name).is_none() {
                self.problem(
                    &format!("INVALID: {name} missing or not a string"),
                    location,
                );
            }
        }
        for name in nullable {
            if !matches!(document.get(name), Some(Value::Null | Value::String(_))) {
                self.problem(
                    &format!("INVALID: {name} missing or neither a string nor null"),
                    location,
                );
            }
        }
        if !matches!(document.get("logFiles"), Some(Value::Array(_))) {
            self.problem("INVALID: logFiles missing or not an array", location);
        }
        if let Some(account) = string_field(document, "awsAccountId") {
            if account != self.req.account {
                self.problem(&format!("INVALID: awsAccountId is {account:?}"), location);
            }
        }
        if let Some(algorithm) = string_field(document, "digestSignatureAlgorithm") {
            if algorithm != SIGNATURE_ALGORITHM {
                self.problem(
                    &format!("INVALID: digestSignatureAlgorithm is {algorithm:?}"),
                    location,
                );
            }
        }
        let start = parse_time(start_time);
        let end = parse_time(end_time);
        match (start, end) {
            (Some(start), Some(end)) => {
                if start > end {
                    self.problem("INVALID: digestStartTime is after digestEndTime", location);
                }
                // The key is where the CLI finds the digest: it must name the end time.
                let expected = digest_key(
                    None,
                    &self.req.account,
                    &self.req.region,
                    &self.req.trail,
                    &self.req.home_region,
                    end,
                );
                let key = &location.1;
                if !(key == &expected || key.ends_with(&format!("/{expected}"))) {
                    self.problem("INVALID: key does not match digestEndTime", location);
                }
            }
            _ => self.problem(
                "INVALID: digestStartTime or digestEndTime not in YYYY-MM-DDTHH:MM:SSZ form",
                location,
            ),
        }
        for name in ["newestEventTime", "oldestEventTime"] {
            if let Some(text) = string_field(document, name) {
                if parse_time(text).is_none() {
                    self.problem(
                        &format!("INVALID: {name} not in YYYY-MM-DDTHH:MM:SSZ form"),
                        location,
                    );
                }
            }
        }

        let previous_fields = [
            "previousDigestS3Bucket",
            "previousDigestS3Object",
            "previousDigestHashValue",
            "previousDigestHashAlgorithm",
            "previousDigestSignature",
        ];
        let set = previous_fields
            .iter()
            .filter(|name| string_field(document, name).is_some())
            .count();
        if set != 0 && set != previous_fields.len() {
            self.problem(
                "INVALID: previousDigest* fields are neither all null nor all set",
                location,
            );
        }
        if let Some(algorithm) = string_field(document, "previousDigestHashAlgorithm") {
            if algorithm != HASH_ALGORITHM {
                self.problem(
                    &format!("INVALID: previousDigestHashAlgorithm is {algorithm:?}"),
                    location,
                );
            }
        }
        // The CLI follows the link when bucket and object are set; so does this.
        match (
            string_field(document, "previousDigestS3Bucket"),
            string_field(document, "previousDigestS3Object"),
        ) {
            (Some(bucket), Some(key)) => Some(Link {
                previous: (bucket.to_owned(), key.to_owned()),
                hash_hex: string_field(document, "previousDigestHashValue").map(str::to_owned),
                signature_hex: string_field(document, "previousDigestSignature").map(str::to_owned),
            }),
            _ => None,
        }
    }

    /// Each `logFiles` entry's fields, and the digest's event-time range against them.
    fn check_log_entries(
        &mut self,
        location: &Location,
        document: &Map<String, Value>,
    ) -> Vec<(String, String, String)> {
        let entries = document
            .get("logFiles")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut out = Vec::new();
        let mut oldest: Option<Timestamp> = None;
        let mut newest: Option<Timestamp> = None;
        for (i, entry) in entries.iter().enumerate() {
            let Some(entry) = entry.as_object() else {
                self.problem(
                    &format!("INVALID: logFiles[{i}] is not an object"),
                    location,
                );
                continue;
            };
            let get = |name: &str| string_field(entry, name);
            let (Some(bucket), Some(key), Some(hash)) =
                (get("s3Bucket"), get("s3Object"), get("hashValue"))
            else {
                self.problem(
                    &format!("INVALID: logFiles[{i}] lacks s3Bucket, s3Object or hashValue"),
                    location,
                );
                continue;
            };
            if get("hashAlgorithm") != Some(HASH_ALGORITHM) {
                self.problem(
                    &format!("INVALID: logFiles[{i}] hashAlgorithm is not SHA-256"),
                    location,
                );
            }
            let entry_oldest = get("oldestEventTime").and_then(parse_time);
            let entry_newest = get("newestEventTime").and_then(parse_time);
            match (entry_oldest, entry_newest) {
                (Some(o), Some(n)) if o <= n => {
                    oldest = Some(oldest.map_or(o, |x| x.min(o)));
                    newest = Some(newest.map_or(n, |x| x.max(n)));
                }
                _ => self.problem(
                    &format!("INVALID: logFiles[{i}] event times missing or out of order"),
                    location,
                ),
            }
            out.push((bucket.to_owned(), key.to_owned(), hash.to_owned()));
        }
        let stated = |name: &str| string_field(document, name).and_then(parse_time);
        if stated("oldestEventTime") != oldest || stated("newestEventTime") != newest {
            self.problem(
                "INVALID: oldestEventTime/newestEventTime do not match the listed log files",
                location,
            );
        }
        out
    }

    /// Reads a previous digest outside the scope, only to check the link to it.
    fn read_outside(&mut self, location: &Location) -> Option<Parsed> {
        match fetch(self.source, location) {
            Ok(fetched) => Some(Parsed {
                hash_hex: fetched.hash_hex,
                signature_hex: fetched.signature_hex,
                start_time: string_field(&fetched.document, "digestStartTime").map(str::to_owned),
                end_time: string_field(&fetched.document, "digestEndTime").map(str::to_owned),
                link: None,
                log_files: Vec::new(),
                valid: false,
            }),
            // Older digests may be gone (retention); the range does not cover them.
            Err(FetchError::NotFound) => None,
            Err(FetchError::Source(e)) => {
                self.problem(&format!("ERROR: cannot read digest ({e})"), location);
                None
            }
            Err(FetchError::InvalidFormat) => {
                self.problem("INVALID: invalid format", location);
                None
            }
        }
    }

    /// Compares what `current` says about its previous digest with the object itself.
    fn check_link(&mut self, current: &Location, parsed: &Parsed, link: &Link, previous: &Parsed) {
        if link.hash_hex.as_deref() != Some(previous.hash_hex.as_str()) {
            self.problem(
                &format!(
                    "INVALID: previousDigestHashValue doesn't match {}",
                    url(&link.previous)
                ),
                current,
            );
        }
        if link.signature_hex.is_none() || link.signature_hex != previous.signature_hex {
            self.problem(
                &format!(
                    "INVALID: previousDigestSignature doesn't match the signature of {}",
                    url(&link.previous)
                ),
                current,
            );
        }
        if parsed.start_time.is_none() || parsed.start_time != previous.end_time {
            self.problem(
                &format!(
                    "INVALID: window not contiguous: starts {} but {} ended {}",
                    parsed.start_time.as_deref().unwrap_or("?"),
                    url(&link.previous),
                    previous.end_time.as_deref().unwrap_or("?")
                ),
                current,
            );
        }
    }

    /// Hash of each log file listed by a valid digest; returns every listed location.
    fn check_log_files(
        &mut self,
        digests: &BTreeMap<Location, Option<Parsed>>,
    ) -> BTreeSet<Location> {
        let mut listed = BTreeSet::new();
        for parsed in digests.values().flatten().filter(|p| p.valid) {
            for (bucket, key, hash) in &parsed.log_files {
                let location = (bucket.clone(), key.clone());
                if !listed.insert(location.clone()) {
                    self.problem("INVALID: log file listed by two digests", &location);
                    continue;
                }
                self.report.logs_total += 1;
                let object = match self.source.get(bucket, key) {
                    Ok(Some((bytes, _))) => bytes,
                    Ok(None) => {
                        self.problem("INVALID: not found", &location);
                        continue;
                    }
                    Err(e) => {
                        self.problem(&format!("ERROR: cannot read log file ({e})"), &location);
                        continue;
                    }
                };
                match gunzip_single(&object) {
                    Ok(bytes) if &sha256_hex(&bytes) == hash => self.report.logs_valid += 1,
                    Ok(_) => self.problem("INVALID: hash value doesn't match", &location),
                    Err(GunzipError::TrailingData) => self.problem(
                        "INVALID: unexpected data after end of compressed stream",
                        &location,
                    ),
                    Err(GunzipError::Invalid) => self.problem("INVALID: invalid format", &location),
                }
            }
        }
        listed
    }

    /// Every log object in the range is named per §2.1 and, when delivered
    /// before `covered_until` (the newest digest's end), listed by a valid digest.
    fn check_coverage(&mut self, listed: &BTreeSet<Location>, covered_until: Option<Timestamp>) {
        let req = self.req;
        let prefix = self.prefix();
        let folder = format!("{prefix}AWSLogs/{}/CloudTrail/{}/", req.account, req.region);
        let mut keys = match self.source.list(&req.bucket, &folder) {
            Ok(keys) => keys,
            Err(e) => {
                self.problem(
                    &format!("ERROR: cannot list log files ({e})"),
                    &(req.bucket.clone(), folder),
                );
                return;
            }
        };
        keys.sort();
        let file_prefix = format!("{}_CloudTrail_{}_", req.account, req.region);
        for key in keys {
            let location = (req.bucket.clone(), key);
            let parsed = location
                .1
                .rsplit('/')
                .next()
                .and_then(|name| name.strip_prefix(&file_prefix))
                .and_then(|rest| rest.strip_suffix(".json.gz"))
                .and_then(|rest| rest.split_once('_'))
                .and_then(|(stamp, unique)| {
                    let minute = stamp.strip_suffix('Z')?;
                    let at = Timestamp::parse_amz_date(&format!("{minute}00Z")).ok()?;
                    let expected = log_file_key(
                        req.prefix.as_deref(),
                        &req.account,
                        "CloudTrail",
                        &req.region,
                        at,
                        unique,
                    );
                    let well_formed = unique.len() == 16
                        && unique.bytes().all(|b| b.is_ascii_alphanumeric())
                        && expected == location.1;
                    well_formed.then_some(at)
                });
            match parsed {
                None => self.problem(
                    "INVALID: object does not follow the log file naming scheme",
                    &location,
                ),
                Some(at)
                    if at >= req.start
                        && at <= req.end
                        && covered_until
                            .is_some_and(|until| at.millis() + 60_000 <= until.millis())
                        && !listed.contains(&location) =>
                {
                    self.problem("INVALID: not listed by any digest", &location);
                }
                Some(_) => {}
            }
        }
    }
}

/// Verifies the digests and log files of `req` against `keys` (the region's public
/// keys, as ListPublicKeys or a saved copy gives them).
pub fn verify(source: &dyn ObjectSource, keys: &[PublicKey], req: &VerifyRequest) -> VerifyReport {
    let mut run = Run {
        source,
        keys,
        req,
        report: VerifyReport::default(),
    };
    let Some(listed) = run.listed_digests() else {
        return run.report;
    };
    // Every digest in scope, checked once; `None` when missing or unreadable.
    let mut digests: BTreeMap<Location, Option<Parsed>> = BTreeMap::new();
    let mut queue: VecDeque<Location> = listed
        .into_iter()
        .map(|(key, _)| (req.bucket.clone(), key))
        .collect();
    while let Some(location) = queue.pop_front() {
        if digests.contains_key(&location) {
            continue;
        }
        let parsed = run.check_digest(&location);
        // A previous digest the listing missed (another bucket, or deleted) is still
        // in scope when it ends inside the range.
        if let Some(link) = parsed.as_ref().and_then(|p| p.link.as_ref()) {
            let in_scope = digest_key_stamp(&link.previous.1).is_none_or(|end| end >= req.start);
            if in_scope && !digests.contains_key(&link.previous) {
                queue.push_back(link.previous.clone());
            }
        }
        digests.insert(location, parsed);
    }

    // Links: hash, signature and contiguity against the actual previous object.
    let mut followed: BTreeSet<Location> = BTreeSet::new();
    let mut outside: BTreeMap<Location, Option<Parsed>> = BTreeMap::new();
    for (location, parsed) in &digests {
        let Some(parsed) = parsed else { continue };
        let Some(link) = &parsed.link else {
            run.report.chains += 1;
            continue;
        };
        if !followed.insert(link.previous.clone()) {
            run.problem(
                &format!(
                    "INVALID: chain forks: a second digest follows {}",
                    url(&link.previous)
                ),
                location,
            );
        }
        let previous = match digests.get(&link.previous) {
            Some(Some(previous)) => Some(previous),
            // Missing or unreadable: the chain is broken here.
            Some(None) => {
                run.report.chains += 1;
                None
            }
            None => {
                run.report.chains += 1;
                if !outside.contains_key(&link.previous) {
                    let read = run.read_outside(&link.previous);
                    outside.insert(link.previous.clone(), read);
                }
                outside.get(&link.previous).and_then(Option::as_ref)
            }
        };
        if let Some(previous) = previous {
            run.check_link(location, parsed, link, previous);
        }
    }

    let listed_logs = run.check_log_files(&digests);
    // Files delivered after the newest digest wait for the next one: only
    // files whose stamp minute ended by then must be listed.
    let covered_until = digests
        .values()
        .flatten()
        .filter_map(|p| p.end_time.as_deref())
        .filter_map(|t| Timestamp::parse_iso8601(t).ok())
        .max();
    run.check_coverage(&listed_logs, covered_until);
    run.report
}

#[cfg(test)]
mod tests {
    use super::super::{
        digest_key, gzip, log_file_key, sha256_hex, sign_digest, test_signer, DigestInput,
        LogFileEntry, PreviousDigest, SignedDigest,
    };
    use super::*;
    use std::sync::Mutex;

    type Objects = BTreeMap<Location, StoredObject>;

    /// Objects in memory, listed in key order like S3.
    #[derive(Default)]
    struct Memory(Mutex<Objects>);

    impl Memory {
        fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>, metadata: Vec<(String, String)>) {
            self.0
                .lock()
                .unwrap()
                .insert((bucket.to_owned(), key.to_owned()), (bytes, metadata));
        }

        fn remove(&self, bucket: &str, key: &str) {
            self.0
                .lock()
                .unwrap()
                .remove(&(bucket.to_owned(), key.to_owned()));
        }

        fn put_digest(&self, bucket: &str, key: &str, signed: &SignedDigest) {
            self.put(
                bucket,
                key,
                signed.gzip.clone(),
                vec![
                    ("signature".to_owned(), signed.signature_hex.clone()),
                    ("signature-algorithm".to_owned(), "SHA256withRSA".to_owned()),
                ],
            );
        }
    }

    impl ObjectSource for Memory {
        fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, String> {
            Ok(self
                .0
                .lock()
                .unwrap()
                .keys()
                .filter(|(b, k)| b == bucket && k.starts_with(prefix))
                .map(|(_, k)| k.clone())
                .collect())
        }

        fn get(&self, bucket: &str, key: &str) -> Result<Option<StoredObject>, String> {
            Ok(self
                .0
                .lock()
                .unwrap()
                .get(&(bucket.to_owned(), key.to_owned()))
                .cloned())
        }
    }

    const ACCOUNT: &str = "123456789012";
    const BUCKET: &str = "trail-bucket";
    const PREFIX: &str = "tw/prefix";
    const REGION: &str = "us-east-1";

    fn ts(iso: &str) -> Timestamp {
        Timestamp::parse_iso8601(iso).unwrap()
    }

    fn log_file(memory: &Memory, delivered: &str, event_time: &str) -> LogFileEntry {
        let key = log_file_key(
            Some(PREFIX),
            ACCOUNT,
            "CloudTrail",
            REGION,
            ts(delivered),
            &super::super::unique16(),
        );
        let json = format!(r#"{{"Records":[{{"eventTime":"{event_time}","eventID":"{key}"}}]}}"#);
        memory.put(BUCKET, &key, gzip(json.as_bytes()), vec![]);
        LogFileEntry {
            bucket: BUCKET.to_owned(),
            key,
            hash_hex: sha256_hex(json.as_bytes()),
            oldest: ts(event_time),
            newest: ts(event_time),
        }
    }

    struct Chain {
        memory: Memory,
        keys: Vec<String>,
        signed: Vec<SignedDigest>,
        inputs: Vec<DigestInput>,
    }

    /// Three hourly digests D1 <- D2 <- D3 crossing a UTC day, each listing log files.
    fn chain() -> Chain {
        let signer = test_signer();
        let memory = Memory::default();
        let windows = [
            ("2026-01-14T22:00:00Z", "2026-01-14T23:00:00Z"),
            ("2026-01-14T23:00:00Z", "2026-01-15T00:00:00Z"),
            ("2026-01-15T00:00:00Z", "2026-01-15T01:00:00Z"),
        ];
        let logs = [
            vec![
                log_file(&memory, "2026-01-14T22:10:00Z", "2026-01-14T22:04:00Z"),
                log_file(&memory, "2026-01-14T22:40:00Z", "2026-01-14T22:33:00Z"),
            ],
            vec![log_file(
                &memory,
                "2026-01-14T23:55:00Z",
                "2026-01-14T23:50:00Z",
            )],
            vec![log_file(
                &memory,
                "2026-01-15T00:05:00Z",
                "2026-01-15T00:01:00Z",
            )],
        ];
        let mut previous: Option<PreviousDigest> = None;
        let mut chain = Chain {
            memory,
            keys: vec![],
            signed: vec![],
            inputs: vec![],
        };
        for ((start, end), log_files) in windows.into_iter().zip(logs) {
            let key = digest_key(Some(PREFIX), ACCOUNT, REGION, "tw-trail", REGION, ts(end));
            let input = DigestInput {
                account: ACCOUNT.to_owned(),
                bucket: BUCKET.to_owned(),
                key: key.clone(),
                start: ts(start),
                end: ts(end),
                previous: previous.take(),
                log_files,
            };
            let signed = sign_digest(&input, &signer);
            chain.memory.put_digest(BUCKET, &key, &signed);
            previous = Some(PreviousDigest::of(BUCKET, &key, &signed));
            chain.keys.push(key);
            chain.signed.push(signed);
            chain.inputs.push(input);
        }
        // Another trail's digest in the same folder is ignored.
        let other = digest_key(
            Some(PREFIX),
            ACCOUNT,
            REGION,
            "other",
            REGION,
            ts("2026-01-15T00:00:00Z"),
        );
        chain.memory.put(BUCKET, &other, gzip(b"{}"), vec![]);
        chain
    }

    fn request() -> VerifyRequest {
        VerifyRequest {
            bucket: BUCKET.to_owned(),
            prefix: Some(PREFIX.to_owned()),
            account: ACCOUNT.to_owned(),
            region: REGION.to_owned(),
            trail: "tw-trail".to_owned(),
            home_region: REGION.to_owned(),
            start: ts("2026-01-14T22:00:00Z"),
            end: ts("2026-01-15T01:00:00Z"),
        }
    }

    fn keys() -> Vec<PublicKey> {
        vec![test_signer().public_key().clone()]
    }

    fn has(report: &VerifyReport, needle: &str) -> bool {
        report.problems.iter().any(|p| p.contains(needle))
    }

    #[test]
    fn intact_chain_is_valid() {
        let chain = chain();
        let report = verify(&chain.memory, &keys(), &request());
        assert!(report.ok(), "{:#?}", report.problems);
        assert_eq!(report.digests_valid, 3);
        assert_eq!(report.digests_total, 3);
        assert_eq!(report.logs_valid, 4);
        assert_eq!(report.logs_total, 4);
        assert_eq!(report.chains, 1);
    }

    #[test]
    fn unknown_key_and_window_outside_the_key() {
        let chain = chain();
        let report = verify(&chain.memory, &[], &request());
        assert!(has(
            &report,
            "INVALID: public key not found in region us-east-1"
        ));
        assert_eq!(report.digests_valid, 0);
        let mut short = keys();
        short[0].valid_to = ts("2026-01-15T00:30:00Z");
        let report = verify(&chain.memory, &short, &request());
        assert!(has(
            &report,
            "is not valid at digestEndTime 2026-01-15T01:00:00Z"
        ));
        assert_eq!(report.digests_valid, 2);
    }

    #[test]
    fn tampered_log_file_fails_its_hash() {
        let chain = chain();
        let entry = &chain.inputs[1].log_files[0];
        chain
            .memory
            .put(BUCKET, &entry.key, gzip(b"{\"Records\":[]}"), vec![]);
        let report = verify(&chain.memory, &keys(), &request());
        let expected = format!(
            "INVALID: hash value doesn't match: s3://{BUCKET}/{}",
            entry.key
        );
        assert_eq!(report.problems, vec![expected]);
        assert_eq!(report.logs_valid, 3);
        assert_eq!(report.digests_valid, 3);

        let mut two_members = gzip(b"{\"Records\":[]}");
        two_members.extend(gzip(b"x"));
        chain.memory.put(BUCKET, &entry.key, two_members, vec![]);
        let report = verify(&chain.memory, &keys(), &request());
        assert!(has(
            &report,
            "unexpected data after end of compressed stream"
        ));
    }

    #[test]
    fn deleted_middle_digest_is_not_found() {
        let chain = chain();
        chain.memory.remove(BUCKET, &chain.keys[1]);
        let report = verify(&chain.memory, &keys(), &request());
        let expected = format!("INVALID: not found: s3://{BUCKET}/{}", chain.keys[1]);
        assert!(
            report.problems.contains(&expected),
            "{:#?}",
            report.problems
        );
        assert_eq!(report.digests_total, 3);
        assert_eq!(report.digests_valid, 2);
        // Its log file is now covered by no digest.
        assert!(has(&report, "INVALID: not listed by any digest"));
        assert_eq!(report.chains, 2);
    }

    #[test]
    fn rewritten_previous_digest_breaks_the_chain() {
        // Someone holding the key re-signs D2 without its log file: D2 alone verifies,
        // but D3's recorded hash and signature of D2 no longer match.
        let chain = chain();
        let mut input = chain.inputs[1].clone();
        let dropped = input.log_files.pop().unwrap();
        let forged = sign_digest(&input, &test_signer());
        chain.memory.put_digest(BUCKET, &chain.keys[1], &forged);
        let report = verify(&chain.memory, &keys(), &request());
        let d3 = format!("s3://{BUCKET}/{}", chain.keys[2]);
        assert!(report.problems.iter().any(|p| p
            .starts_with("INVALID: previousDigestHashValue doesn't match")
            && p.ends_with(&d3)));
        assert!(has(
            &report,
            "INVALID: previousDigestSignature doesn't match"
        ));
        assert!(report.problems.contains(&format!(
            "INVALID: not listed by any digest: s3://{BUCKET}/{}",
            dropped.key
        )));
        assert_eq!(report.digests_valid, 3);
    }

    #[test]
    fn gap_in_windows_is_reported() {
        let chain = chain();
        let mut input = chain.inputs[2].clone();
        input.start = ts("2026-01-15T00:00:01Z");
        let signed = sign_digest(&input, &test_signer());
        chain.memory.put_digest(BUCKET, &chain.keys[2], &signed);
        let report = verify(&chain.memory, &keys(), &request());
        assert!(
            has(&report, "INVALID: window not contiguous"),
            "{:#?}",
            report.problems
        );
    }

    #[test]
    fn injected_log_file_is_unlisted() {
        let chain = chain();
        let injected = log_file(
            &chain.memory,
            "2026-01-14T23:20:00Z",
            "2026-01-14T23:19:00Z",
        );
        let report = verify(&chain.memory, &keys(), &request());
        assert_eq!(
            report.problems,
            vec![format!(
                "INVALID: not listed by any digest: s3://{BUCKET}/{}",
                injected.key
            )]
        );
        // A file delivered after the newest digest's end waits for the next
        // digest: not reported.
        let fresh = log_file(
            &chain.memory,
            "2026-01-15T01:00:30Z",
            "2026-01-15T01:00:10Z",
        );
        let mut open_window = request();
        open_window.end = ts("2026-01-15T01:30:00Z");
        let report = verify(&chain.memory, &keys(), &open_window);
        assert!(
            !report.problems.iter().any(|p| p.ends_with(&fresh.key)),
            "{:?}",
            report.problems
        );
        // Outside [start, end] a stray file is not the range's concern.
        let mut later = request();
        later.end = ts("2026-01-14T23:00:00Z");
        assert!(verify(&chain.memory, &keys(), &later).ok());
        // A badly named object under the log folder is always reported.
        let odd =
            format!("{PREFIX}/AWSLogs/{ACCOUNT}/CloudTrail/{REGION}/2026/01/14/stray.json.gz");
        chain.memory.put(BUCKET, &odd, gzip(b"{}"), vec![]);
        assert!(has(
            &verify(&chain.memory, &keys(), &later),
            "naming scheme"
        ));
    }

    #[test]
    fn metadata_body_and_location_tampering() {
        let chain = chain();
        let key = &chain.keys[0];
        let signed = &chain.signed[0];
        // Missing algorithm metadata: the CLI's "signature verification failed".
        chain.memory.put(
            BUCKET,
            key,
            signed.gzip.clone(),
            vec![("signature".to_owned(), signed.signature_hex.clone())],
        );
        let report = verify(&chain.memory, &keys(), &request());
        assert!(has(&report, "INVALID: signature verification failed"));
        // Body changed, old signature kept.
        let body = String::from_utf8(signed.json.clone())
            .unwrap()
            .replace("2026-01-14T22:04:00Z", "2026-01-14T22:05:00Z");
        chain.memory.put(
            BUCKET,
            key,
            gzip(body.as_bytes()),
            vec![
                ("signature".to_owned(), signed.signature_hex.clone()),
                ("signature-algorithm".to_owned(), "SHA256withRSA".to_owned()),
            ],
        );
        let report = verify(&chain.memory, &keys(), &request());
        assert!(has(&report, "INVALID: signature verification failed"));
        assert!(has(&report, "previousDigestHashValue doesn't match"));
        // A digest copied to another key has moved.
        chain.memory.put_digest(BUCKET, key, signed);
        let copy = key.replace("20260114T230000Z", "20260114T230001Z");
        chain.memory.put_digest(BUCKET, &copy, signed);
        let report = verify(&chain.memory, &keys(), &request());
        assert!(report.problems.contains(&format!(
            "INVALID: has been moved from its original location: s3://{BUCKET}/{copy}"
        )));
        // Not gzip at all.
        chain.memory.remove(BUCKET, &copy);
        chain.memory.put(BUCKET, key, b"plain".to_vec(), vec![]);
        let report = verify(&chain.memory, &keys(), &request());
        assert!(report
            .problems
            .contains(&format!("INVALID: invalid format: s3://{BUCKET}/{key}")));
    }
}
