//! CloudTrail log-file integrity validation (`spec/cloudtrail.md` §2.1–2.2, §3.1–3.8,
//! §3.12): the object keys and bytes of delivered log files and digest files, the
//! per-region signing keys, and a verifier stricter than `aws cloudtrail validate-logs`.
//!
//! - [`log_file_key`], [`digest_key`], [`unique16`]: object keys (§2.1, §3.2).
//! - [`gzip`], [`sha256_hex`]: one gzip member, and the hash a digest lists (§2.2).
//! - [`DigestKeys`]: RSA-2048 key pairs per region, rotated every `rotation_secs`;
//!   [`DigestSigner`] signs with the current one; [`PublicKey`] is what
//!   `ListPublicKeys` returns (§3.6).
//! - [`sign_digest`]: builds the §3.3 JSON, hashes it, signs the §3.5 string, gzips it.
//! - [`verify`]: everything `validate-logs` checks plus the §3.12 checks, over any
//!   [`ObjectSource`].
//!
//! Nothing here reads the clock: callers pass every time. Only [`DigestKeys`] does IO
//! (its key directory and the catalog); delivery to a bucket is the workers' job.
//!
//! # Key store (version 1)
//! - Private keys: `{dir}/digest-{region}-{valid_from_secs:012}.pem`, PKCS#8 PEM, mode
//!   0600. Only the current key of a region keeps its file: rotation deletes the others.
//! - Catalog table `digest_keys`, key `{region}/{valid_from_secs:012}`, value JSON
//!   `{"v":1,"region","valid_from_secs","valid_to_secs","public_key","fingerprint"}`
//!   with `public_key` the base64 PKCS#1 DER. Records are never deleted, so old digests
//!   stay verifiable; the zero-padded start makes key order window order.
//!
//! # Invariants
//! - A digest's JSON is serialized once; the hash, the signature and the gzip all cover
//!   those exact bytes (§3.5). [`sign_digest`] is the only producer.
//! - Every gzip written here is a single member (§2.2); tests check it.
//! - Key windows are whole seconds, so the seconds-precision `digestEndTime` a window
//!   contains is still inside it after formatting.

mod verify;

pub use verify::{verify, ObjectSource, StoredObject, VerifyReport, VerifyRequest};

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rsa::pkcs1::EncodeRsaPublicKey;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::signature::{RandomizedSigner, SignatureEncoding};
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use trailwatch_storage::{Catalog, CatalogOp};
use trailwatch_types::Timestamp;

/// Catalog table of public keys and their windows.
const KEYS_TABLE: &str = "digest_keys";
/// Version of the catalog records this code writes and reads.
const KEY_RECORD_VERSION: u32 = 1;
/// RSA modulus size AWS uses for digest keys (§3.5).
const KEY_BITS: usize = 2048;
/// Default rotation period: AWS's published keys have 30-day windows (§3.6).
pub const DEFAULT_ROTATION_SECS: i64 = 30 * 24 * 3600;
/// The `digestSignatureAlgorithm` and `signature-algorithm` value (§3.3, §3.4).
pub const SIGNATURE_ALGORITHM: &str = "SHA256withRSA";
/// The `hashAlgorithm` and `previousDigestHashAlgorithm` value (§3.3).
pub const HASH_ALGORITHM: &str = "SHA-256";

/// Failures of the key store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DigestError {
    /// The catalog or the key directory failed.
    #[error("digest key storage failed: {0}")]
    Storage(String),
    /// A key could not be generated, encoded or decoded.
    #[error("digest key crypto failed: {0}")]
    Crypto(String),
    /// The region name cannot be part of a file name.
    #[error("invalid region name {0:?}")]
    InvalidRegion(String),
    /// A catalog record of a version this code does not know.
    #[error("digest key record version {0} is not supported")]
    UnsupportedVersion(u32),
}

fn storage(e: impl std::fmt::Display) -> DigestError {
    DigestError::Storage(e.to_string())
}

fn crypto(e: impl std::fmt::Display) -> DigestError {
    DigestError::Crypto(e.to_string())
}

/// One public key as ListPublicKeys returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// PKCS#1 `RSAPublicKey` DER: the CLI refuses SubjectPublicKeyInfo (§3.6).
    pub der: Vec<u8>,
    /// First second the key signs digests for.
    pub valid_from: Timestamp,
    /// Planned rotation time: the key signs digests ending before it.
    pub valid_to: Timestamp,
    /// Lowercase hex MD5 of `der`; digests name their key by it.
    pub fingerprint: String,
}

impl PublicKey {
    fn from_der(der: Vec<u8>, valid_from: Timestamp, valid_to: Timestamp) -> Self {
        let fingerprint = md5_hex(&der);
        Self {
            der,
            valid_from,
            valid_to,
            fingerprint,
        }
    }

    /// `der` in standard base64: the `Value` of ListPublicKeys.
    pub fn der_base64(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(&self.der)
    }

    /// Whether the window `[valid_from, valid_to]` contains `at`.
    pub fn covers(&self, at: Timestamp) -> bool {
        self.valid_from <= at && at <= self.valid_to
    }
}

fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(md5::Md5::digest(bytes))
}

/// The catalog record of one key (version 1).
#[derive(Debug, Serialize, Deserialize)]
struct KeyRecord {
    v: u32,
    region: String,
    valid_from_secs: i64,
    valid_to_secs: i64,
    /// Base64 PKCS#1 DER, as ListPublicKeys serves it.
    public_key: String,
    fingerprint: String,
}

impl KeyRecord {
    fn public_key(&self) -> Result<PublicKey, DigestError> {
        use base64::Engine as _;
        if self.v != KEY_RECORD_VERSION {
            return Err(DigestError::UnsupportedVersion(self.v));
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(&self.public_key)
            .map_err(storage)?;
        let key = PublicKey::from_der(
            der,
            Timestamp::from_secs(self.valid_from_secs),
            Timestamp::from_secs(self.valid_to_secs),
        );
        // A record whose fingerprint disagrees with its key would make every digest
        // it signed unverifiable; refuse it rather than serve it.
        if key.fingerprint != self.fingerprint {
            return Err(DigestError::Storage(format!(
                "digest key record fingerprint {} does not match its key",
                self.fingerprint
            )));
        }
        Ok(key)
    }
}

/// Signs digests with one private key.
pub struct DigestSigner {
    key: SigningKey<Sha256>,
    public: PublicKey,
    /// Where the private key lives, so rotation knows which file to keep.
    path: PathBuf,
}

impl std::fmt::Debug for DigestSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("DigestSigner")
            .field("fingerprint", &self.public.fingerprint)
            .field("valid_from", &self.public.valid_from)
            .field("valid_to", &self.public.valid_to)
            .finish_non_exhaustive()
    }
}

impl DigestSigner {
    fn new(
        private: RsaPrivateKey,
        valid_from: Timestamp,
        valid_to: Timestamp,
        path: PathBuf,
    ) -> Result<Self, DigestError> {
        let der = RsaPublicKey::from(&private)
            .to_pkcs1_der()
            .map_err(crypto)?
            .as_bytes()
            .to_vec();
        Ok(Self {
            key: SigningKey::new(private),
            public: PublicKey::from_der(der, valid_from, valid_to),
            path,
        })
    }

    /// Lowercase hex MD5 of the public key's PKCS#1 DER.
    pub fn fingerprint(&self) -> &str {
        &self.public.fingerprint
    }

    /// The public half and its validity window.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// RSASSA-PKCS1-v1_5 SHA-256 signature of `message`, lowercase hex.
    pub fn sign_hex(&self, message: &[u8]) -> String {
        // Blinded signing: the key signs every hour for a month, so do not leak
        // timing about it.
        let signature = self.key.sign_with_rng(&mut rand::thread_rng(), message);
        hex::encode(signature.to_bytes())
    }
}

/// Per-region RSA-2048 key pairs, rotated every `rotation_secs` (default 30 days).
pub struct DigestKeys {
    catalog: Arc<dyn Catalog>,
    dir: PathBuf,
    rotation_secs: i64,
    /// The current signer of each region, once loaded or created.
    current: Mutex<HashMap<String, Arc<DigestSigner>>>,
}

impl std::fmt::Debug for DigestKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestKeys")
            .field("dir", &self.dir)
            .field("rotation_secs", &self.rotation_secs)
            .finish_non_exhaustive()
    }
}

impl DigestKeys {
    /// `dir` holds the private keys (PKCS#8 PEM, mode 0600, one file per key); the
    /// catalog table `digest_keys`, key `{region}/{valid_from_secs:012}`, holds each
    /// key's public part and window as JSON (with a "v":1 version field).
    /// A `rotation_secs` below one second is taken as one second.
    pub fn new(catalog: Arc<dyn Catalog>, dir: &Path, rotation_secs: i64) -> Self {
        Self {
            catalog,
            dir: dir.to_path_buf(),
            rotation_secs: rotation_secs.max(1),
            current: Mutex::new(HashMap::new()),
        }
    }

    /// The signer whose validity window contains `at`: the current key of `region`,
    /// created on first use (window `[at, at+rotation)`) and rotated when `at` passes
    /// the window end (new window starts at the old end, or at `at` if far later).
    /// After a rotation the old private key file is deleted; public parts stay in the
    /// catalog forever. Thread-safe (internal Mutex) and cached in memory.
    ///
    /// Key generation takes a noticeable time and happens under the lock, so async
    /// callers call this from a blocking context. An `at` before the current window
    /// (a clock stepping back) still gets the current key: older private keys are gone.
    pub fn signer(&self, region: &str, at: Timestamp) -> Result<Arc<DigestSigner>, DigestError> {
        check_region(region)?;
        let mut current = self
            .current
            .lock()
            .map_err(|_| DigestError::Storage("digest key cache lock poisoned".to_owned()))?;
        if let Some(signer) = current.get(region) {
            if at < signer.public.valid_to {
                return Ok(Arc::clone(signer));
            }
        }
        let loaded = match current.get(region) {
            Some(signer) => Some(Arc::clone(signer)),
            None => self.load_newest(region)?.map(Arc::new),
        };
        let signer = match loaded {
            Some(signer) if at < signer.public.valid_to => signer,
            Some(old) => {
                let old_end_secs = old.public.valid_to.secs();
                let start_secs = if at.secs() < old_end_secs.saturating_add(self.rotation_secs) {
                    old_end_secs
                } else {
                    at.secs()
                };
                Arc::new(self.create(region, start_secs)?)
            }
            None => Arc::new(self.create(region, at.secs())?),
        };
        self.remove_stale_private_keys(region, &signer.path);
        current.insert(region.to_owned(), Arc::clone(&signer));
        Ok(signer)
    }

    /// Every key of `region` whose window overlaps `[start, end]`, oldest first.
    pub fn public_keys(
        &self,
        region: &str,
        start: Timestamp,
        end: Timestamp,
    ) -> Result<Vec<PublicKey>, DigestError> {
        let mut keys = Vec::new();
        for record in self.records(region)? {
            let key = record.public_key()?;
            if key.valid_from <= end && key.valid_to >= start {
                keys.push(key);
            }
        }
        Ok(keys)
    }

    /// The catalog records of `region`, oldest window first.
    fn records(&self, region: &str) -> Result<Vec<KeyRecord>, DigestError> {
        let rows = self
            .catalog
            .list(KEYS_TABLE, &format!("{region}/"))
            .map_err(storage)?;
        rows.iter()
            .map(|(_, bytes)| serde_json::from_slice::<KeyRecord>(bytes).map_err(storage))
            .collect()
    }

    fn private_key_path(&self, region: &str, valid_from_secs: i64) -> PathBuf {
        self.dir
            .join(format!("digest-{region}-{valid_from_secs:012}.pem"))
    }

    /// The newest key of `region` with its private key, if its file still exists.
    /// Without the file the key cannot sign any more, and the caller makes a new one.
    fn load_newest(&self, region: &str) -> Result<Option<DigestSigner>, DigestError> {
        let Some(record) = self.records(region)?.pop() else {
            return Ok(None);
        };
        let public = record.public_key()?;
        let path = self.private_key_path(region, record.valid_from_secs);
        let pem = match std::fs::read_to_string(&path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(
                    region,
                    fingerprint = %public.fingerprint,
                    "digest private key file missing, creating a new key"
                );
                return Ok(None);
            }
            Err(e) => return Err(storage(e)),
        };
        let private = RsaPrivateKey::from_pkcs8_pem(&pem).map_err(crypto)?;
        let signer = DigestSigner::new(private, public.valid_from, public.valid_to, path)?;
        if signer.public != public {
            return Err(DigestError::Crypto(format!(
                "private key file of digest key {} holds another key",
                public.fingerprint
            )));
        }
        Ok(Some(signer))
    }

    /// Generates a key whose window starts at `valid_from_secs`, writes its private
    /// file, then records its public part. The file comes first: a record without a
    /// file would only make the next call create yet another key.
    fn create(&self, region: &str, valid_from_secs: i64) -> Result<DigestSigner, DigestError> {
        let valid_to_secs = valid_from_secs.saturating_add(self.rotation_secs);
        let private = RsaPrivateKey::new(&mut rand::thread_rng(), KEY_BITS).map_err(crypto)?;
        let pem = private.to_pkcs8_pem(LineEnding::LF).map_err(crypto)?;
        create_private_dir(&self.dir)?;
        let path = self.private_key_path(region, valid_from_secs);
        write_private(&path, pem.as_bytes())?;
        let signer = DigestSigner::new(
            private,
            Timestamp::from_secs(valid_from_secs),
            Timestamp::from_secs(valid_to_secs),
            path,
        )?;
        let record = KeyRecord {
            v: KEY_RECORD_VERSION,
            region: region.to_owned(),
            valid_from_secs,
            valid_to_secs,
            public_key: signer.public.der_base64(),
            fingerprint: signer.public.fingerprint.clone(),
        };
        let value = serde_json::to_vec(&record).map_err(storage)?;
        self.catalog
            .commit(&[CatalogOp::put(
                KEYS_TABLE,
                format!("{region}/{valid_from_secs:012}"),
                value,
            )])
            .map_err(storage)?;
        tracing::info!(region, fingerprint = %signer.public.fingerprint, valid_from_secs, valid_to_secs, "created digest signing key");
        Ok(signer)
    }

    /// Deletes every private key file of `region` but `keep`: old keys after a
    /// rotation, and files left by a crash between writing a key and recording it.
    /// Failures are logged, not returned: the new key is already in use.
    fn remove_stale_private_keys(&self, region: &str, keep: &Path) {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(region, error = %e, "failed to list digest key directory");
                return;
            }
        };
        let prefix = format!("digest-{region}-");
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let is_region_key = name
                .strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix(".pem"))
                .is_some_and(|secs| secs.len() == 12 && secs.bytes().all(|b| b.is_ascii_digit()));
            let path = entry.path();
            if is_region_key && path != keep {
                match std::fs::remove_file(&path) {
                    Ok(()) => tracing::info!(region, file = name, "deleted old digest private key"),
                    Err(e) => {
                        tracing::warn!(region, file = name, error = %e, "failed to delete old digest private key")
                    }
                }
            }
        }
    }
}

/// Regions become part of file names and catalog keys: keep them to `[a-z0-9-]`.
fn check_region(region: &str) -> Result<(), DigestError> {
    let valid = !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(DigestError::InvalidRegion(region.to_owned()))
    }
}

fn create_private_dir(dir: &Path) -> Result<(), DigestError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(storage)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), DigestError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(storage)?;
    file.write_all(bytes).map_err(storage)?;
    file.sync_all().map_err(storage)
}

/// One delivered log file as a digest lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogFileEntry {
    /// Bucket the file was delivered to.
    pub bucket: String,
    /// Full object key, prefix included.
    pub key: String,
    /// Lowercase hex SHA-256 of the uncompressed bytes.
    pub hash_hex: String,
    /// Earliest `eventTime` in the file.
    pub oldest: Timestamp,
    /// Latest `eventTime` in the file.
    pub newest: Timestamp,
}

/// The previous digest of a chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PreviousDigest {
    /// Bucket it was stored in.
    pub bucket: String,
    /// Its full key.
    pub key: String,
    /// Lowercase hex SHA-256 of its uncompressed bytes.
    pub hash_hex: String,
    /// Its signature metadata, lowercase hex.
    pub signature_hex: String,
}

impl PreviousDigest {
    /// The link to `signed`, stored at `bucket`/`key`.
    pub fn of(bucket: &str, key: &str, signed: &SignedDigest) -> Self {
        Self {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            hash_hex: signed.hash_hex.clone(),
            signature_hex: signed.signature_hex.clone(),
        }
    }
}

/// What one digest covers.
#[derive(Debug, Clone)]
pub struct DigestInput {
    /// Account whose logs are covered.
    pub account: String,
    /// Bucket the digest is stored in.
    pub bucket: String,
    /// Full key of the digest, from [`digest_key`].
    pub key: String,
    /// Window start.
    pub start: Timestamp,
    /// Window end; also selects the key and names the object.
    pub end: Timestamp,
    /// `None` at chain start.
    pub previous: Option<PreviousDigest>,
    /// Every log file delivered in the window.
    pub log_files: Vec<LogFileEntry>,
}

/// A signed digest, ready to put with metadata `signature` = signature_hex and
/// `signature-algorithm` = "SHA256withRSA".
#[derive(Debug, Clone)]
pub struct SignedDigest {
    /// The uncompressed JSON, exactly as hashed.
    pub json: Vec<u8>,
    /// `json` as one gzip member: the object body.
    pub gzip: Vec<u8>,
    /// Lowercase hex SHA-256 of `json`: the next digest's `previousDigestHashValue`.
    pub hash_hex: String,
    /// Lowercase hex signature: the `signature` metadata.
    pub signature_hex: String,
}

/// The §3.3 object. Field order is the spec's table order; serde keeps struct order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DigestJson<'a> {
    aws_account_id: &'a str,
    digest_start_time: String,
    digest_end_time: String,
    digest_s3_bucket: &'a str,
    digest_s3_object: &'a str,
    digest_public_key_fingerprint: &'a str,
    digest_signature_algorithm: &'a str,
    newest_event_time: Option<String>,
    oldest_event_time: Option<String>,
    previous_digest_s3_bucket: Option<&'a str>,
    previous_digest_s3_object: Option<&'a str>,
    previous_digest_hash_value: Option<&'a str>,
    previous_digest_hash_algorithm: Option<&'a str>,
    previous_digest_signature: Option<&'a str>,
    log_files: Vec<LogFileJson<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LogFileJson<'a> {
    s3_bucket: &'a str,
    s3_object: &'a str,
    hash_value: &'a str,
    hash_algorithm: &'a str,
    newest_event_time: String,
    oldest_event_time: String,
}

/// The §3.5 string: end time, location, hash, previous signature or `null`.
fn data_to_sign(
    end_time: &str,
    bucket: &str,
    key: &str,
    hash_hex: &str,
    previous_signature: Option<&str>,
) -> String {
    format!(
        "{end_time}\n{bucket}/{key}\n{hash_hex}\n{}",
        previous_signature.unwrap_or("null")
    )
}

/// Builds the §3.3 JSON (all keys always present, nulls where allowed; times
/// YYYY-MM-DDTHH:MM:SSZ), hashes it, signs the §3.5 four-line string, gzips it as
/// ONE gzip member.
pub fn sign_digest(input: &DigestInput, signer: &DigestSigner) -> SignedDigest {
    let previous = input.previous.as_ref();
    let oldest = input.log_files.iter().map(|f| f.oldest).min();
    let newest = input.log_files.iter().map(|f| f.newest).max();
    let end_time = input.end.to_iso8601_seconds();
    let document = DigestJson {
        aws_account_id: &input.account,
        digest_start_time: input.start.to_iso8601_seconds(),
        digest_end_time: end_time.clone(),
        digest_s3_bucket: &input.bucket,
        digest_s3_object: &input.key,
        digest_public_key_fingerprint: signer.fingerprint(),
        digest_signature_algorithm: SIGNATURE_ALGORITHM,
        newest_event_time: newest.map(Timestamp::to_iso8601_seconds),
        oldest_event_time: oldest.map(Timestamp::to_iso8601_seconds),
        previous_digest_s3_bucket: previous.map(|p| p.bucket.as_str()),
        previous_digest_s3_object: previous.map(|p| p.key.as_str()),
        previous_digest_hash_value: previous.map(|p| p.hash_hex.as_str()),
        previous_digest_hash_algorithm: previous.map(|_| HASH_ALGORITHM),
        previous_digest_signature: previous.map(|p| p.signature_hex.as_str()),
        log_files: input
            .log_files
            .iter()
            .map(|f| LogFileJson {
                s3_bucket: &f.bucket,
                s3_object: &f.key,
                hash_value: &f.hash_hex,
                hash_algorithm: HASH_ALGORITHM,
                newest_event_time: f.newest.to_iso8601_seconds(),
                oldest_event_time: f.oldest.to_iso8601_seconds(),
            })
            .collect(),
    };
    let json = serde_json::to_vec(&document)
        .expect("strings, options and vectors always serialize to JSON");
    let hash_hex = sha256_hex(&json);
    let message = data_to_sign(
        &end_time,
        &input.bucket,
        &input.key,
        &hash_hex,
        previous.map(|p| p.signature_hex.as_str()),
    );
    let signature_hex = signer.sign_hex(message.as_bytes());
    let gzip = gzip(&json);
    SignedDigest {
        json,
        gzip,
        hash_hex,
        signature_hex,
    }
}

fn prefix_part(prefix: Option<&str>) -> String {
    match prefix {
        Some(p) if !p.is_empty() => format!("{p}/"),
        _ => String::new(),
    }
}

/// `YYYY/MM/DD` and the basic-form stamp `YYYYMMDDTHHMMSSZ` of `at`, UTC.
fn date_folders_and_stamp(at: Timestamp) -> (String, String) {
    let stamp = at.to_amz_date();
    let part = |range: std::ops::Range<usize>| stamp.get(range).unwrap_or_default().to_owned();
    let folders = format!("{}/{}/{}", part(0..4), part(4..6), part(6..8));
    (folders, stamp)
}

/// §3.2 digest key: `[prefix/]AWSLogs/{account}/CloudTrail-Digest/{region}/YYYY/MM/DD/
/// {account}_CloudTrail-Digest_{region}_{trail}_{home}_{YYYYMMDDTHHMMSSZ}.json.gz`
/// (date folders and stamp from `end`).
pub fn digest_key(
    prefix: Option<&str>,
    account: &str,
    region: &str,
    trail: &str,
    home_region: &str,
    end: Timestamp,
) -> String {
    let (folders, stamp) = date_folders_and_stamp(end);
    format!(
        "{}AWSLogs/{account}/CloudTrail-Digest/{region}/{folders}/{account}_CloudTrail-Digest_{region}_{trail}_{home_region}_{stamp}.json.gz",
        prefix_part(prefix)
    )
}

/// §2.1 log key; `folder` is "CloudTrail" or "CloudTrail-Insight"; stamp
/// YYYYMMDDTHHmmZ of `delivered`; `unique` is the 16-char suffix.
pub fn log_file_key(
    prefix: Option<&str>,
    account: &str,
    folder: &str,
    region: &str,
    delivered: Timestamp,
    unique: &str,
) -> String {
    let (folders, stamp) = date_folders_and_stamp(delivered);
    // Minute precision: drop the seconds of `YYYYMMDDTHHMMSSZ`.
    let minute_stamp = format!("{}Z", stamp.get(0..13).unwrap_or_default());
    format!(
        "{}AWSLogs/{account}/{folder}/{region}/{folders}/{account}_{folder}_{region}_{minute_stamp}_{unique}.json.gz",
        prefix_part(prefix)
    )
}

/// 16 random `[A-Za-z0-9]` characters.
pub fn unique16() -> String {
    use rand::Rng as _;
    rand::thread_rng()
        .sample_iter(rand::distributions::Alphanumeric)
        .take(16)
        .map(char::from)
        .collect()
}

/// One gzip member of `bytes`.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(bytes)
        .expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail")
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Why bytes are not exactly one gzip member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GunzipError {
    /// Not gzip, or a damaged stream.
    Invalid,
    /// A complete member followed by more bytes (a second member, or garbage).
    TrailingData,
}

/// Inflates exactly one gzip member, as the CLI's reader requires (§2.2).
fn gunzip_single(bytes: &[u8]) -> Result<Vec<u8>, GunzipError> {
    use std::io::Read as _;
    // The bufread decoder consumes only the member from the slice, so what is left
    // afterwards is exactly the trailing data.
    let mut decoder = flate2::bufread::GzDecoder::new(bytes);
    let mut out = Vec::new();
    decoder
        .read_to_end(&mut out)
        .map_err(|_| GunzipError::Invalid)?;
    if decoder.into_inner().is_empty() {
        Ok(out)
    } else {
        Err(GunzipError::TrailingData)
    }
}

/// A signer generated once for the whole test binary: key generation is slow.
#[cfg(test)]
fn test_signer() -> Arc<DigestSigner> {
    use std::sync::OnceLock;
    static SIGNER: OnceLock<Arc<DigestSigner>> = OnceLock::new();
    Arc::clone(SIGNER.get_or_init(|| {
        let private = RsaPrivateKey::new(&mut rand::thread_rng(), KEY_BITS).unwrap();
        Arc::new(
            DigestSigner::new(
                private,
                Timestamp::from_secs(1_700_000_000),
                Timestamp::from_secs(1_900_000_000),
                PathBuf::new(),
            )
            .unwrap(),
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs1::DecodeRsaPublicKey;
    use rsa::pkcs1v15::{Signature, VerifyingKey};
    use rsa::signature::Verifier;
    use trailwatch_storage::MemoryCatalog;

    fn ts(iso: &str) -> Timestamp {
        Timestamp::parse_iso8601(iso).unwrap()
    }

    #[test]
    fn public_key_is_pkcs1_der_with_md5_fingerprint() {
        use base64::Engine as _;
        let signer = test_signer();
        let key = signer.public_key();
        assert_eq!(
            &key.der[..8],
            &[0x30, 0x82, 0x01, 0x0a, 0x02, 0x82, 0x01, 0x01]
        );
        assert!(key.der_base64().starts_with("MIIBCgKCAQEA"));
        let md5 = md5::Md5::digest(&key.der);
        assert_eq!(signer.fingerprint(), hex::encode(md5));
        assert_eq!(signer.fingerprint().len(), 32);
        assert!(signer
            .fingerprint()
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        // The base64 round trip is what ListPublicKeys clients decode.
        let der = base64::engine::general_purpose::STANDARD
            .decode(key.der_base64())
            .unwrap();
        assert_eq!(der, key.der);
        assert!(!format!("{signer:?}").contains("PRIVATE"));
    }

    fn log_entry(key: &str, oldest: &str, newest: &str) -> LogFileEntry {
        LogFileEntry {
            bucket: "logs".to_owned(),
            key: key.to_owned(),
            hash_hex: sha256_hex(key.as_bytes()),
            oldest: ts(oldest),
            newest: ts(newest),
        }
    }

    fn verify_signature(signer: &DigestSigner, message: &str, signature_hex: &str) -> bool {
        let public = RsaPublicKey::from_pkcs1_der(&signer.public_key().der).unwrap();
        let verifying = VerifyingKey::<Sha256>::new(public);
        let signature =
            Signature::try_from(hex::decode(signature_hex).unwrap().as_slice()).unwrap();
        verifying.verify(message.as_bytes(), &signature).is_ok()
    }

    const KEYS_IN_ORDER: [&str; 15] = [
        "awsAccountId",
        "digestStartTime",
        "digestEndTime",
        "digestS3Bucket",
        "digestS3Object",
        "digestPublicKeyFingerprint",
        "digestSignatureAlgorithm",
        "newestEventTime",
        "oldestEventTime",
        "previousDigestS3Bucket",
        "previousDigestS3Object",
        "previousDigestHashValue",
        "previousDigestHashAlgorithm",
        "previousDigestSignature",
        "logFiles",
    ];

    /// Top-level keys in document order, read from the text itself so the check
    /// does not depend on how a JSON map orders keys.
    fn top_level_keys(json: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut depth = 0;
        let mut chars = json.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' | '[' => depth += 1,
                '}' | ']' => depth -= 1,
                '"' => {
                    let start = i + 1;
                    let mut end = start;
                    for (j, d) in chars.by_ref() {
                        if d == '"' {
                            end = j;
                            break;
                        }
                    }
                    let is_key = json[end + 1..].starts_with(':');
                    if depth == 1 && is_key {
                        keys.push(json[start..end].to_owned());
                    }
                }
                _ => {}
            }
        }
        keys
    }

    #[test]
    fn empty_chain_start_digest() {
        let signer = test_signer();
        let end = ts("2026-02-03T10:00:00Z");
        let key = digest_key(
            Some("tw"),
            "111122223333",
            "eu-west-1",
            "t",
            "us-east-1",
            end,
        );
        let input = DigestInput {
            account: "111122223333".to_owned(),
            bucket: "b".to_owned(),
            key: key.clone(),
            start: ts("2026-02-03T09:00:00Z"),
            end,
            previous: None,
            log_files: vec![],
        };
        let signed = sign_digest(&input, &signer);
        let text = String::from_utf8(signed.json.clone()).unwrap();
        assert_eq!(top_level_keys(&text), KEYS_IN_ORDER);
        assert!(text.contains(r#""logFiles":[]"#));
        for null_key in [
            "newestEventTime",
            "oldestEventTime",
            "previousDigestS3Bucket",
            "previousDigestS3Object",
            "previousDigestHashValue",
            "previousDigestHashAlgorithm",
            "previousDigestSignature",
        ] {
            assert!(
                text.contains(&format!(r#""{null_key}":null"#)),
                "{null_key}"
            );
        }
        assert!(text.contains(r#""digestStartTime":"2026-02-03T09:00:00Z""#));
        assert!(text.contains(r#""digestEndTime":"2026-02-03T10:00:00Z""#));
        assert!(text.contains(r#""digestSignatureAlgorithm":"SHA256withRSA""#));
        assert_eq!(signed.hash_hex, sha256_hex(&signed.json));
        assert_eq!(signed.signature_hex.len(), 512);
        let message = format!("2026-02-03T10:00:00Z\nb/{key}\n{}\nnull", signed.hash_hex);
        assert!(verify_signature(&signer, &message, &signed.signature_hex));
        assert!(!verify_signature(
            &signer,
            &message.replace("null", "nul"),
            &signed.signature_hex
        ));
    }

    #[test]
    fn linked_digest_with_log_files() {
        use std::io::Read as _;
        let signer = test_signer();
        let previous = PreviousDigest {
            bucket: "old-bucket".to_owned(),
            key: "old/key.json.gz".to_owned(),
            hash_hex: "ab".repeat(32),
            signature_hex: "cd".repeat(256),
        };
        let input = DigestInput {
            account: "111122223333".to_owned(),
            bucket: "b".to_owned(),
            key: "k.json.gz".to_owned(),
            start: ts("2026-02-03T09:00:00Z"),
            end: ts("2026-02-03T10:00:00Z"),
            previous: Some(previous.clone()),
            log_files: vec![
                log_entry("l1", "2026-02-03T08:59:00Z", "2026-02-03T09:10:00Z"),
                log_entry("l2", "2026-02-03T09:05:00Z", "2026-02-03T09:40:00Z"),
            ],
        };
        let signed = sign_digest(&input, &signer);
        let value: serde_json::Value = serde_json::from_slice(&signed.json).unwrap();
        assert_eq!(value["oldestEventTime"], "2026-02-03T08:59:00Z");
        assert_eq!(value["newestEventTime"], "2026-02-03T09:40:00Z");
        assert_eq!(value["previousDigestS3Bucket"], "old-bucket");
        assert_eq!(value["previousDigestHashAlgorithm"], "SHA-256");
        let first = value["logFiles"][0].as_object().unwrap();
        let names: Vec<&str> = first.keys().map(String::as_str).collect();
        let text = String::from_utf8(signed.json.clone()).unwrap();
        // Entry keys in document order, searched after the top-level fields.
        let text = &text[text.find(r#""logFiles":"#).unwrap()..];
        let entry_order = [
            "s3Bucket",
            "s3Object",
            "hashValue",
            "hashAlgorithm",
            "newestEventTime",
            "oldestEventTime",
        ];
        let positions: Vec<usize> = entry_order
            .iter()
            .map(|k| text.find(&format!(r#""{k}":"#)).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert_eq!(names.len(), 6);
        assert_eq!(first["hashValue"], sha256_hex(b"l1"));
        assert_eq!(first["hashAlgorithm"], "SHA-256");

        // One member: the single-member decoder yields the JSON and leaves nothing.
        let mut decoder = flate2::bufread::GzDecoder::new(signed.gzip.as_slice());
        let mut out = Vec::new();
        decoder.read_to_end(&mut out).unwrap();
        assert_eq!(out, signed.json);
        assert!(decoder.into_inner().is_empty());
        let mut multi = Vec::new();
        flate2::read::MultiGzDecoder::new(signed.gzip.as_slice())
            .read_to_end(&mut multi)
            .unwrap();
        assert_eq!(multi, signed.json);
        let mut single = Vec::new();
        flate2::read::GzDecoder::new(signed.gzip.as_slice())
            .read_to_end(&mut single)
            .unwrap();
        assert_eq!(single, signed.json);

        let message = format!(
            "2026-02-03T10:00:00Z\nb/k.json.gz\n{}\n{}",
            sha256_hex(&signed.json),
            previous.signature_hex
        );
        assert!(verify_signature(&signer, &message, &signed.signature_hex));
    }

    #[test]
    fn gunzip_single_rejects_two_members() {
        let mut two = gzip(b"a");
        two.extend(gzip(b"b"));
        assert_eq!(gunzip_single(&gzip(b"a")), Ok(b"a".to_vec()));
        assert_eq!(gunzip_single(&two), Err(GunzipError::TrailingData));
        assert_eq!(gunzip_single(b"not gzip"), Err(GunzipError::Invalid));
    }

    #[test]
    fn keys_match_the_spec_examples() {
        assert_eq!(
            log_file_key(
                Some("prod"),
                "111122223333",
                "CloudTrail",
                "eu-west-1",
                ts("2026-02-03T09:20:41Z"),
                "q3Rr8XbH0aTz1LmN"
            ),
            "prod/AWSLogs/111122223333/CloudTrail/eu-west-1/2026/02/03/111122223333_CloudTrail_eu-west-1_20260203T0920Z_q3Rr8XbH0aTz1LmN.json.gz"
        );
        assert_eq!(
            log_file_key(
                None,
                "111122223333",
                "CloudTrail-Insight",
                "us-east-1",
                ts("2026-12-31T23:59:59Z"),
                "AAAAAAAAAAAAAAAA"
            ),
            "AWSLogs/111122223333/CloudTrail-Insight/us-east-1/2026/12/31/111122223333_CloudTrail-Insight_us-east-1_20261231T2359Z_AAAAAAAAAAAAAAAA.json.gz"
        );
        assert_eq!(
            digest_key(
                Some("tw/prefix"),
                "123456789012",
                "us-east-1",
                "tw-trail",
                "us-east-1",
                ts("2026-01-15T01:01:31Z")
            ),
            "tw/prefix/AWSLogs/123456789012/CloudTrail-Digest/us-east-1/2026/01/15/123456789012_CloudTrail-Digest_us-east-1_tw-trail_us-east-1_20260115T010131Z.json.gz"
        );
        assert_eq!(
            digest_key(
                Some(""),
                "123456789012",
                "eu-west-1",
                "t",
                "us-east-1",
                ts("2026-01-05T00:00:00Z")
            ),
            "AWSLogs/123456789012/CloudTrail-Digest/eu-west-1/2026/01/05/123456789012_CloudTrail-Digest_eu-west-1_t_us-east-1_20260105T000000Z.json.gz"
        );
        let unique = unique16();
        assert_eq!(unique.len(), 16);
        assert!(unique.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(unique, unique16());
    }

    #[test]
    fn keys_rotate_persist_and_reload() {
        let catalog: Arc<dyn Catalog> = Arc::new(MemoryCatalog::default());
        let dir = tempfile::tempdir().unwrap();
        let keys_dir = dir.path().join("keys");
        let rotation = 3600;
        let keys = DigestKeys::new(Arc::clone(&catalog), &keys_dir, rotation);
        let t = Timestamp::from_millis(1_767_225_600_250);
        let first = keys.signer("us-east-1", t).unwrap();
        assert_eq!(
            first.public_key().valid_from,
            Timestamp::from_secs(t.secs())
        );
        assert_eq!(
            first.public_key().valid_to,
            Timestamp::from_secs(t.secs() + rotation)
        );
        let again = keys
            .signer("us-east-1", Timestamp::from_secs(t.secs() + 10))
            .unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        let first_file = keys_dir.join(format!("digest-us-east-1-{:012}.pem", t.secs()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&first_file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(
            keys.signer("../x", t),
            Err(DigestError::InvalidRegion(_))
        ));

        let later = Timestamp::from_secs(t.secs() + rotation + 1);
        let second = keys.signer("us-east-1", later).unwrap();
        assert_ne!(second.fingerprint(), first.fingerprint());
        // The new window starts where the old one ended.
        assert_eq!(second.public_key().valid_from, first.public_key().valid_to);
        assert!(second.public_key().covers(later));
        assert!(!first_file.exists());
        let listed = keys.public_keys("us-east-1", t, later).unwrap();
        assert_eq!(
            listed,
            vec![first.public_key().clone(), second.public_key().clone()]
        );
        assert_eq!(
            keys.public_keys("us-east-1", later, later).unwrap().len(),
            1
        );
        assert!(keys.public_keys("eu-west-1", t, later).unwrap().is_empty());
        let rows = catalog.list(KEYS_TABLE, "").unwrap();
        assert_eq!(rows[0].0, format!("us-east-1/{:012}", t.secs()));
        let record: serde_json::Value = serde_json::from_slice(&rows[0].1).unwrap();
        assert_eq!(record["v"], 1);

        // A restart reloads the current key instead of making a new one.
        let reloaded = DigestKeys::new(Arc::clone(&catalog), &keys_dir, rotation);
        let same = reloaded.signer("us-east-1", later).unwrap();
        assert_eq!(same.fingerprint(), second.fingerprint());
        assert_eq!(same.public_key(), second.public_key());
        assert!(format!("{reloaded:?}").contains("rotation_secs"));
    }

    #[test]
    fn far_later_rotation_starts_at_the_request_time() {
        let catalog: Arc<dyn Catalog> = Arc::new(MemoryCatalog::default());
        let dir = tempfile::tempdir().unwrap();
        let rotation = 60;
        let keys = DigestKeys::new(Arc::clone(&catalog), dir.path(), rotation);
        // Reuse the shared key as the current one so only the rotation generates.
        let shared = test_signer();
        let private: &RsaPrivateKey = shared.key.as_ref();
        let pem = private.to_pkcs8_pem(LineEnding::LF).unwrap();
        let from = 1_800_000_000;
        write_private(&keys.private_key_path("eu-west-1", from), pem.as_bytes()).unwrap();
        let record = KeyRecord {
            v: 1,
            region: "eu-west-1".to_owned(),
            valid_from_secs: from,
            valid_to_secs: from + rotation,
            public_key: shared.public_key().der_base64(),
            fingerprint: shared.fingerprint().to_owned(),
        };
        catalog
            .commit(&[CatalogOp::put(
                KEYS_TABLE,
                format!("eu-west-1/{from:012}"),
                serde_json::to_vec(&record).unwrap(),
            )])
            .unwrap();
        let loaded = keys
            .signer("eu-west-1", Timestamp::from_secs(from + 5))
            .unwrap();
        assert_eq!(loaded.fingerprint(), shared.fingerprint());
        let far = Timestamp::from_secs(from + 10 * rotation);
        let rotated = keys.signer("eu-west-1", far).unwrap();
        assert_eq!(rotated.public_key().valid_from, far);
        assert_ne!(rotated.fingerprint(), shared.fingerprint());
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1);

        let mut bad = record;
        bad.v = 2;
        catalog
            .commit(&[CatalogOp::put(
                KEYS_TABLE,
                format!("eu-west-1/{from:012}"),
                serde_json::to_vec(&bad).unwrap(),
            )])
            .unwrap();
        assert!(matches!(
            keys.public_keys("eu-west-1", far, far),
            Err(DigestError::UnsupportedVersion(2))
        ));
    }
}
