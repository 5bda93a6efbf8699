//! S3-style buckets over trailwatch's object store: bucket registration and
//! name rules (`spec/cloudtrail.md` §2.5), objects with their content type and
//! user metadata, and listings in S3's order. The S3 REST facade of the server
//! and trail delivery both go through [`Buckets`]; nothing here speaks HTTP.
//!
//! # Layout (version 1)
//! - Catalog table `buckets`, key = bucket name (the namespace is global, as at
//!   S3), value JSON `{"v":1,"account":…,"region":…,"created_ms":…}`.
//! - Object bytes at `buckets/{bucket}/{key}` in the object store: the folder
//!   layout CloudWatch Logs export tasks already write (`logs::export`).
//! - A sidecar per object at `bucket-meta/{bucket}/{key}.json`, outside
//!   `buckets/` so listings never show it: JSON
//!   `{"v":1,"size":…,"etag":"\"<md5 hex>\"","content_type":…,"metadata":[[name,value],…],"last_modified_ms":…}`.
//!   An object without a usable sidecar (written by an export task, or left by
//!   a crash between the two writes) is served with the backend's size and
//!   time, no content type or metadata, and an ETag derived from the backend's
//!   version tag (stable while the object is unchanged, not its MD5).
//!
//! # Invariants
//! - Keys map to object paths one to one: keys with empty `/`-segments are
//!   refused, and no key is a "folder" of another (`a` and `a/b` cannot both
//!   exist), because the local-directory backend stores objects as files.
//!   Checked by [`Buckets::put_object`].
//! - A sidecar never describes bytes other than its object's: it is removed
//!   before the object is rewritten and written after; writes to one key are
//!   serialised by a striped lock. Checked again on read (its size must match).
//! - A name is checked and registered (or unregistered) under one lock, so two
//!   creators of one name never both succeed ([`NameReservation`]).
//!
//! Registration through [`Buckets::create`] and [`Buckets::delete`] commits
//! to the catalog at once; the S3 API instead commits the changes of
//! [`Buckets::reserve_create`] / [`Buckets::reserve_delete`] together with the
//! call's audit record, holding the reservation until then.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use md5::{Digest as _, Md5};
use serde::{Deserialize, Serialize};
use trailwatch_storage::{Catalog, CatalogError, CatalogOp, ObjectEntry, ObjectError, Objects};
use trailwatch_types::Timestamp;

/// Catalog table of registered buckets.
pub const TABLE: &str = "buckets";
/// Object-store folder holding each bucket's objects.
const OBJECT_ROOT: &str = "buckets";
/// Object-store folder holding the per-object sidecars.
const META_ROOT: &str = "bucket-meta";
/// S3's limit on a key, in UTF-8 bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Longest `/`-separated part of a key: a file name on the local backend is at
/// most 255 bytes, and the sidecar adds `.json`.
pub const MAX_KEY_SEGMENT_BYTES: usize = 250;
/// Most keys (and common prefixes) one listing page returns.
pub const MAX_LIST_KEYS: usize = 1000;
/// Stripes of the per-key write lock.
const WRITE_STRIPES: usize = 64;
/// Sidecars read at once while building a listing page.
const SIDECAR_READS_IN_FLIGHT: usize = 16;

/// Bucket and object failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BucketError {
    /// The name breaks the S3 naming rules.
    #[error("bucket name {name:?} is invalid: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The caller's account already owns a bucket of this name.
    #[error("bucket {0} is already owned by you")]
    AlreadyOwnedByYou(String),
    /// Another account owns a bucket of this name.
    #[error("bucket {0} already exists")]
    AlreadyExists(String),
    /// No bucket of this name is registered.
    #[error("bucket {0} does not exist")]
    NoSuchBucket(String),
    /// The bucket still holds objects.
    #[error("bucket {0} is not empty")]
    NotEmpty(String),
    /// Another creation or deletion of this name is under way.
    #[error("a conflicting operation on bucket {0} is in progress")]
    Conflict(String),
    /// The key is longer than [`MAX_KEY_BYTES`].
    #[error("object key of {key_bytes} bytes is longer than {MAX_KEY_BYTES}")]
    KeyTooLong {
        /// Its length in bytes.
        key_bytes: usize,
    },
    /// The key cannot be stored faithfully (see the module invariants).
    #[error("object key {key:?} is not supported: {reason}")]
    InvalidKey {
        /// The key given.
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// A stored value does not decode.
    #[error("stored {what} does not decode: {message}")]
    Corrupt {
        /// Which value.
        what: String,
        /// The decoder's complaint.
        message: String,
    },
    /// The catalog failed.
    #[error("bucket catalog: {0}")]
    Catalog(#[from] CatalogError),
    /// The object store failed.
    #[error("bucket objects: {0}")]
    Objects(#[from] ObjectError),
}

/// A registered bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketInfo {
    /// Bucket name.
    pub name: String,
    /// Owning account.
    pub account: String,
    /// Region it was created in (the CreateBucket call's credential scope).
    pub region: String,
    /// Creation time.
    pub created: Timestamp,
}

/// An object with everything GetObject answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// The bytes exactly as put.
    pub bytes: Bytes,
    /// `Content-Type` given at put time.
    pub content_type: Option<String>,
    /// User metadata (`x-amz-meta-*` names without the prefix, lowercase).
    pub metadata: Vec<(String, String)>,
    /// Quoted ETag: `"<md5 hex>"`.
    pub etag: String,
    /// When it was put.
    pub last_modified: Timestamp,
}

/// An object's description without its bytes (HeadObject).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHead {
    /// Size in bytes.
    pub size: u64,
    /// `Content-Type` given at put time.
    pub content_type: Option<String>,
    /// User metadata.
    pub metadata: Vec<(String, String)>,
    /// Quoted ETag.
    pub etag: String,
    /// When it was put.
    pub last_modified: Timestamp,
}

/// One listing entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Object key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Quoted ETag.
    pub etag: String,
    /// When it was put.
    pub last_modified: Timestamp,
}

/// What a listing page asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListQuery<'a> {
    /// Only keys starting with this.
    pub prefix: &'a str,
    /// Roll keys up to the first occurrence of this after the prefix, into
    /// common prefixes; `None` or empty for a flat listing.
    pub delimiter: Option<&'a str>,
    /// Only keys (and common prefixes) strictly greater than this.
    pub after: Option<&'a str>,
    /// Most keys plus common prefixes returned.
    pub max_keys: usize,
}

/// One listing page.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListPage {
    /// Objects, keys ascending in UTF-8 byte order.
    pub objects: Vec<ObjectInfo>,
    /// Common prefixes (each ending with the delimiter), ascending.
    pub common_prefixes: Vec<String>,
    /// Whether more entries follow.
    pub truncated: bool,
    /// The greatest key or common prefix returned: where the next page starts.
    pub last: Option<String>,
}

/// A bucket name being created or deleted; released when dropped, which the
/// API path does only after the catalog change is committed.
#[derive(Debug)]
pub struct NameReservation {
    name: String,
    pending: Arc<Mutex<HashSet<String>>>,
}

impl Drop for NameReservation {
    fn drop(&mut self) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.remove(&self.name);
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct BucketRecord {
    v: u8,
    account: String,
    region: String,
    created_ms: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Sidecar {
    v: u8,
    size: u64,
    etag: String,
    content_type: Option<String>,
    metadata: Vec<(String, String)>,
    last_modified_ms: i64,
}

/// Buckets and their objects.
#[derive(Clone)]
pub struct Buckets {
    catalog: Arc<dyn Catalog>,
    objects: Objects,
    /// Names with a creation or deletion in flight.
    pending: Arc<Mutex<HashSet<String>>>,
    /// Serialises the writes (object, sidecar) of keys hashing to one stripe.
    writes: Arc<Vec<tokio::sync::Mutex<()>>>,
}

impl std::fmt::Debug for Buckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buckets")
            .field("catalog", &self.catalog)
            .field("objects", &self.objects)
            .finish_non_exhaustive()
    }
}

fn object_path(bucket: &str, key: &str) -> String {
    format!("{OBJECT_ROOT}/{bucket}/{key}")
}

fn sidecar_path(bucket: &str, key: &str) -> String {
    format!("{META_ROOT}/{bucket}/{key}.json")
}

/// `"<md5 hex>"` of `bytes`.
fn etag_of(bytes: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Md5::digest(bytes)))
}

fn is_ipv4_formatted(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() == 4
        && parts
            .iter()
            .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Checks that `key` maps to one object path (see the module invariants).
fn validate_key(key: &str) -> Result<(), BucketError> {
    let invalid = |reason| BucketError::InvalidKey {
        key: key.to_owned(),
        reason,
    };
    if key.is_empty() {
        return Err(invalid("the key is empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(BucketError::KeyTooLong {
            key_bytes: key.len(),
        });
    }
    if key.split('/').any(str::is_empty) {
        return Err(invalid(
            "keys with an empty path segment (a leading, trailing or doubled '/') are not stored",
        ));
    }
    if key.split('/').any(|s| s.len() > MAX_KEY_SEGMENT_BYTES) {
        return Err(invalid("a '/'-separated part of the key is over 250 bytes"));
    }
    Ok(())
}

impl Buckets {
    /// Buckets registered in `catalog`, objects kept in `objects`.
    pub fn new(catalog: Arc<dyn Catalog>, objects: Objects) -> Self {
        Self {
            catalog,
            objects,
            pending: Arc::default(),
            writes: Arc::new(
                (0..WRITE_STRIPES)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
            ),
        }
    }

    /// Checks a bucket name against the S3 rules of `spec/cloudtrail.md` §2.5:
    /// 3–63 characters of `a-z 0-9 . -`, starting and ending with a letter or
    /// digit, no `..`, not formatted as an IPv4 address.
    pub fn validate_name(name: &str) -> Result<(), BucketError> {
        let invalid = |reason| {
            Err(BucketError::InvalidName {
                name: name.to_owned(),
                reason,
            })
        };
        if !(3..=63).contains(&name.len()) {
            return invalid("the name must be 3 to 63 characters long");
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        {
            return invalid("only lowercase letters, digits, '.' and '-' are allowed");
        }
        let letter_or_digit = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
        if !letter_or_digit(name.bytes().next()) || !letter_or_digit(name.bytes().last()) {
            return invalid("the name must start and end with a letter or digit");
        }
        if name.contains("..") {
            return invalid("the name must not contain two adjacent periods");
        }
        if is_ipv4_formatted(name) {
            return invalid("the name must not be formatted as an IP address");
        }
        Ok(())
    }

    /// Registers bucket `name` for `account` in `region` at once.
    pub fn create(
        &self,
        account: &str,
        region: &str,
        name: &str,
        now: Timestamp,
    ) -> Result<(), BucketError> {
        let (_reservation, changes) = self.reserve_create(account, region, name, now)?;
        self.catalog.commit(&changes)?;
        Ok(())
    }

    /// Checks that `account` may create bucket `name` and reserves the name:
    /// the returned changes register it once committed; the reservation keeps
    /// any other creation or deletion of the name out until it is dropped.
    pub fn reserve_create(
        &self,
        account: &str,
        region: &str,
        name: &str,
        now: Timestamp,
    ) -> Result<(NameReservation, Vec<CatalogOp>), BucketError> {
        Self::validate_name(name)?;
        let reservation = self.reserve(name)?;
        if let Some(existing) = self.get(name)? {
            return Err(if existing.account == account {
                BucketError::AlreadyOwnedByYou(name.to_owned())
            } else {
                BucketError::AlreadyExists(name.to_owned())
            });
        }
        let record = BucketRecord {
            v: 1,
            account: account.to_owned(),
            region: region.to_owned(),
            created_ms: now.millis(),
        };
        let value = serde_json::to_vec(&record).map_err(|e| BucketError::Corrupt {
            what: format!("bucket {name}"),
            message: e.to_string(),
        })?;
        Ok((reservation, vec![CatalogOp::put(TABLE, name, value)]))
    }

    fn reserve(&self, name: &str) -> Result<NameReservation, BucketError> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if !pending.insert(name.to_owned()) {
            return Err(BucketError::Conflict(name.to_owned()));
        }
        Ok(NameReservation {
            name: name.to_owned(),
            pending: self.pending.clone(),
        })
    }

    /// The registered bucket `name`, if any.
    pub fn get(&self, name: &str) -> Result<Option<BucketInfo>, BucketError> {
        self.catalog
            .get(TABLE, name)?
            .map(|value| decode_bucket(name, &value))
            .transpose()
    }

    /// The buckets of `account`, by name.
    pub fn list(&self, account: &str) -> Result<Vec<BucketInfo>, BucketError> {
        let mut out = Vec::new();
        for (name, value) in self.catalog.list(TABLE, "")? {
            let info = decode_bucket(&name, &value)?;
            if info.account == account {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Unregisters the empty bucket `name` at once.
    pub async fn delete(&self, name: &str) -> Result<(), BucketError> {
        let (_reservation, changes) = self.reserve_delete(name).await?;
        self.catalog.commit(&changes)?;
        Ok(())
    }

    /// Checks that bucket `name` exists and is empty and reserves the name;
    /// the returned changes unregister it once committed.
    pub async fn reserve_delete(
        &self,
        name: &str,
    ) -> Result<(NameReservation, Vec<CatalogOp>), BucketError> {
        let reservation = self.reserve(name)?;
        if self.get(name)?.is_none() {
            return Err(BucketError::NoSuchBucket(name.to_owned()));
        }
        let bucket_folder = format!("{OBJECT_ROOT}/{name}");
        if self.objects.any_under(&bucket_folder).await? {
            return Err(BucketError::NotEmpty(name.to_owned()));
        }
        // Sidecars of objects already gone (a crash between the two deletes)
        // must not describe a later bucket's objects of the same name.
        for orphan in self
            .objects
            .list_entries(&format!("{META_ROOT}/{name}"))
            .await?
        {
            self.objects.delete(&orphan.path).await?;
        }
        Ok((reservation, vec![CatalogOp::delete(TABLE, name)]))
    }

    fn require_bucket(&self, bucket: &str) -> Result<BucketInfo, BucketError> {
        self.get(bucket)?
            .ok_or_else(|| BucketError::NoSuchBucket(bucket.to_owned()))
    }

    fn write_lock(&self, bucket: &str, key: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash as _, Hasher as _};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (bucket, key).hash(&mut hasher);
        let stripe = (hasher.finish() % self.writes.len() as u64) as usize;
        &self.writes[stripe]
    }

    /// Stores `bytes` at `key` of `bucket` durably, with its content type and
    /// user metadata; returns the quoted ETag (`"<md5 hex>"`).
    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        bytes: Bytes,
        content_type: Option<&str>,
        metadata: &[(String, String)],
        now: Timestamp,
    ) -> Result<String, BucketError> {
        self.require_bucket(bucket)?;
        validate_key(key)?;
        let _writing = self.write_lock(bucket, key).lock().await;
        self.check_no_folder_conflict(bucket, key).await?;
        let etag = etag_of(&bytes);
        let sidecar = Sidecar {
            v: 1,
            size: bytes.len() as u64,
            etag: etag.clone(),
            content_type: content_type.map(str::to_owned),
            metadata: metadata.to_vec(),
            last_modified_ms: now.millis(),
        };
        let sidecar = serde_json::to_vec(&sidecar).map_err(|e| BucketError::Corrupt {
            what: format!("metadata of {bucket}/{key}"),
            message: e.to_string(),
        })?;
        // Old sidecar out first: a crash in between leaves the new bytes with
        // no sidecar (served plainly), never with the old object's metadata.
        let sidecar_at = sidecar_path(bucket, key);
        self.objects.delete(&sidecar_at).await?;
        self.objects
            .put_durable(&object_path(bucket, key), bytes)
            .await?;
        self.objects
            .put_durable(&sidecar_at, Bytes::from(sidecar))
            .await?;
        Ok(etag)
    }

    /// Refuses `key` when an object sits at one of its parent paths or under it.
    async fn check_no_folder_conflict(&self, bucket: &str, key: &str) -> Result<(), BucketError> {
        let conflict = |reason| BucketError::InvalidKey {
            key: key.to_owned(),
            reason,
        };
        for (i, _) in key.match_indices('/') {
            if self
                .objects
                .head(&object_path(bucket, &key[..i]))
                .await?
                .is_some()
            {
                return Err(conflict("an object exists at a parent path of this key"));
            }
        }
        if self.objects.any_under(&object_path(bucket, key)).await? {
            return Err(conflict("objects exist under this key as a folder"));
        }
        Ok(())
    }

    /// The sidecar of `key`, when present and describing `entry`.
    async fn sidecar(
        &self,
        bucket: &str,
        key: &str,
        size: u64,
    ) -> Result<Option<Sidecar>, BucketError> {
        let Some(bytes) = self
            .objects
            .get_if_exists(&sidecar_path(bucket, key))
            .await?
        else {
            return Ok(None);
        };
        match serde_json::from_slice::<Sidecar>(&bytes) {
            Ok(sidecar) if sidecar.v == 1 && sidecar.size == size => Ok(Some(sidecar)),
            Ok(_) => Ok(None),
            Err(e) => {
                // Served plainly rather than failing every read of the object.
                tracing::warn!(bucket, key_bytes = key.len(), error = %e, "undecodable object sidecar ignored");
                Ok(None)
            }
        }
    }

    /// ETag and time of an object without a usable sidecar (module docs).
    fn plain_description(entry: &ObjectEntry) -> (String, Timestamp) {
        let version = entry
            .version
            .clone()
            .unwrap_or_else(|| format!("{}:{}", entry.size, entry.last_modified_ms));
        (
            etag_of(version.as_bytes()),
            Timestamp::from_millis(entry.last_modified_ms),
        )
    }

    /// The object at `key` of `bucket` with its metadata; `None` when absent.
    pub async fn get_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<StoredObject>, BucketError> {
        self.require_bucket(bucket)?;
        if validate_key(key).is_err() {
            return Ok(None);
        }
        let Some(bytes) = self
            .objects
            .get_if_exists(&object_path(bucket, key))
            .await?
        else {
            return Ok(None);
        };
        let object = match self.sidecar(bucket, key, bytes.len() as u64).await? {
            Some(sidecar) => StoredObject {
                bytes,
                content_type: sidecar.content_type,
                metadata: sidecar.metadata,
                etag: sidecar.etag,
                last_modified: Timestamp::from_millis(sidecar.last_modified_ms),
            },
            None => {
                let Some(entry) = self.objects.head(&object_path(bucket, key)).await? else {
                    return Ok(None);
                };
                let (etag, last_modified) = Self::plain_description(&entry);
                StoredObject {
                    bytes,
                    content_type: None,
                    metadata: Vec::new(),
                    etag,
                    last_modified,
                }
            }
        };
        Ok(Some(object))
    }

    /// The description of the object at `key` of `bucket`, without reading
    /// its bytes; `None` when absent.
    pub async fn head_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<ObjectHead>, BucketError> {
        self.require_bucket(bucket)?;
        if validate_key(key).is_err() {
            return Ok(None);
        }
        let Some(entry) = self.objects.head(&object_path(bucket, key)).await? else {
            return Ok(None);
        };
        let head = match self.sidecar(bucket, key, entry.size).await? {
            Some(sidecar) => ObjectHead {
                size: entry.size,
                content_type: sidecar.content_type,
                metadata: sidecar.metadata,
                etag: sidecar.etag,
                last_modified: Timestamp::from_millis(sidecar.last_modified_ms),
            },
            None => {
                let (etag, last_modified) = Self::plain_description(&entry);
                ObjectHead {
                    size: entry.size,
                    content_type: None,
                    metadata: Vec::new(),
                    etag,
                    last_modified,
                }
            }
        };
        Ok(Some(head))
    }

    /// Deletes the object at `key` of `bucket`; a missing key is not an error.
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<(), BucketError> {
        self.require_bucket(bucket)?;
        if validate_key(key).is_err() {
            return Ok(());
        }
        let _writing = self.write_lock(bucket, key).lock().await;
        self.objects.delete(&object_path(bucket, key)).await?;
        self.objects.delete(&sidecar_path(bucket, key)).await?;
        Ok(())
    }

    /// Up to `max_keys` objects of `bucket` whose keys start with `prefix`,
    /// strictly after `after`, ascending in UTF-8 byte order; and whether more
    /// follow.
    pub async fn list_objects(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        max_keys: usize,
    ) -> Result<(Vec<ObjectInfo>, bool), BucketError> {
        let page = self
            .list_page(
                bucket,
                &ListQuery {
                    prefix,
                    delimiter: None,
                    after,
                    max_keys,
                },
            )
            .await?;
        Ok((page.objects, page.truncated))
    }

    /// One listing page, with keys rolled up into common prefixes when the
    /// query has a delimiter (S3's ListObjects semantics). A common prefix not
    /// greater than `after` counts as returned already.
    pub async fn list_page(
        &self,
        bucket: &str,
        query: &ListQuery<'_>,
    ) -> Result<ListPage, BucketError> {
        use futures::{StreamExt as _, TryStreamExt as _};
        self.require_bucket(bucket)?;
        let bucket_root = format!("{OBJECT_ROOT}/{bucket}/");
        // The store lists whole segments: list the prefix's folder, then match
        // the prefix as a string.
        let folder = match query.prefix.rfind('/') {
            Some(i) => &query.prefix[..i],
            None => "",
        };
        let entries = self
            .objects
            .list_entries(&format!("{bucket_root}{folder}"))
            .await?;
        let delimiter = query.delimiter.filter(|d| !d.is_empty());
        let mut page = ListPage::default();
        let mut chosen: Vec<ObjectEntry> = Vec::new();
        let mut returned = 0usize;
        for entry in entries {
            let Some(key) = entry.path.strip_prefix(&bucket_root) else {
                continue;
            };
            if !key.starts_with(query.prefix) || query.after.is_some_and(|a| key <= a) {
                continue;
            }
            let rolled_up = delimiter.and_then(|d| {
                key[query.prefix.len()..]
                    .find(d)
                    .map(|i| &key[..query.prefix.len() + i + d.len()])
            });
            if let Some(common) = rolled_up {
                let seen = page.common_prefixes.last().map(String::as_str) == Some(common)
                    || query.after.is_some_and(|a| common <= a);
                if seen {
                    continue;
                }
                if returned == query.max_keys {
                    page.truncated = true;
                    break;
                }
                page.common_prefixes.push(common.to_owned());
                page.last = Some(common.to_owned());
            } else {
                if returned == query.max_keys {
                    page.truncated = true;
                    break;
                }
                page.last = Some(key.to_owned());
                chosen.push(entry.clone());
            }
            returned += 1;
        }
        let bucket_root = &bucket_root;
        page.objects = futures::stream::iter(chosen)
            .map(|entry| async move {
                let key = entry.path[bucket_root.len()..].to_owned();
                let (etag, last_modified) = match self.sidecar(bucket, &key, entry.size).await? {
                    Some(sidecar) => (
                        sidecar.etag,
                        Timestamp::from_millis(sidecar.last_modified_ms),
                    ),
                    None => Self::plain_description(&entry),
                };
                Ok::<_, BucketError>(ObjectInfo {
                    key,
                    size: entry.size,
                    etag,
                    last_modified,
                })
            })
            .buffered(SIDECAR_READS_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(page)
    }
}

fn decode_bucket(name: &str, value: &[u8]) -> Result<BucketInfo, BucketError> {
    let record: BucketRecord = serde_json::from_slice(value).map_err(|e| BucketError::Corrupt {
        what: format!("bucket {name}"),
        message: e.to_string(),
    })?;
    if record.v != 1 {
        return Err(BucketError::Corrupt {
            what: format!("bucket {name}"),
            message: format!("unknown record version {}", record.v),
        });
    }
    Ok(BucketInfo {
        name: name.to_owned(),
        account: record.account,
        region: record.region,
        created: Timestamp::from_millis(record.created_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use trailwatch_storage::MemoryCatalog;

    const ME: &str = "111122223333";
    const OTHER: &str = "444455556666";

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn buckets() -> Buckets {
        Buckets::new(Arc::new(MemoryCatalog::default()), Objects::memory())
    }

    #[test]
    fn name_rules() {
        let (longest, too_long) = ("a".repeat(63), "a".repeat(64));
        let cases = [
            ("abc", true),
            ("my-bucket.logs-1", true),
            (longest.as_str(), true),
            ("0ab", true),
            ("ab", false),
            (too_long.as_str(), false),
            ("My-bucket", false),
            ("my_bucket", false),
            ("-abc", false),
            ("abc-", false),
            (".abc", false),
            ("abc.", false),
            ("a..b", false),
            ("192.168.5.4", false),
            ("1.2.3.4", false),
            ("1.2.3.4a", true),
            ("1.2.3", true),
            ("bücket", false),
            ("a b c", false),
        ];
        for (name, valid) in cases {
            assert_eq!(Buckets::validate_name(name).is_ok(), valid, "{name}");
        }
    }

    #[test]
    fn create_get_list_and_duplicates() {
        let b = buckets();
        b.create(ME, "eu-west-1", "logs", t(1_000)).unwrap();
        b.create(ME, "us-east-1", "alpha", t(2_000)).unwrap();
        b.create(OTHER, "us-east-1", "theirs", t(3_000)).unwrap();
        assert_eq!(
            b.get("logs").unwrap(),
            Some(BucketInfo {
                name: "logs".into(),
                account: ME.into(),
                region: "eu-west-1".into(),
                created: t(1_000),
            })
        );
        assert_eq!(b.get("nothing").unwrap(), None);
        let mine: Vec<String> = b.list(ME).unwrap().into_iter().map(|i| i.name).collect();
        assert_eq!(mine, ["alpha", "logs"]);
        assert!(matches!(
            b.create(ME, "us-east-1", "logs", t(4_000)),
            Err(BucketError::AlreadyOwnedByYou(n)) if n == "logs"
        ));
        assert!(matches!(
            b.create(OTHER, "us-east-1", "logs", t(4_000)),
            Err(BucketError::AlreadyExists(n)) if n == "logs"
        ));
        assert!(matches!(
            b.create(ME, "us-east-1", "Bad_Name", t(4_000)),
            Err(BucketError::InvalidName { .. })
        ));
        // The first registration is untouched by the refused ones.
        assert_eq!(b.get("logs").unwrap().unwrap().region, "eu-west-1");
    }

    #[test]
    fn a_reserved_name_is_not_created_twice() {
        let b = buckets();
        let (held, changes) = b.reserve_create(ME, "us-east-1", "race", t(1)).unwrap();
        assert!(matches!(
            b.reserve_create(OTHER, "us-east-1", "race", t(2)),
            Err(BucketError::Conflict(_))
        ));
        b.catalog.commit(&changes).unwrap();
        drop(held);
        assert!(matches!(
            b.create(OTHER, "us-east-1", "race", t(3)),
            Err(BucketError::AlreadyExists(_))
        ));
    }

    #[tokio::test]
    async fn put_get_head_with_metadata() {
        let b = buckets();
        b.create(ME, "us-east-1", "bkt", t(0)).unwrap();
        let metadata = vec![
            ("signature".to_owned(), "abc123".to_owned()),
            ("signature-algorithm".to_owned(), "SHA256withRSA".to_owned()),
        ];
        let etag = b
            .put_object(
                "bkt",
                "AWSLogs/d.json.gz",
                Bytes::from_static(b"hello"),
                Some("application/json"),
                &metadata,
                t(5_000),
            )
            .await
            .unwrap();
        assert_eq!(etag, "\"5d41402abc4b2a76b9719d911017c592\"");
        let object = b
            .get_object("bkt", "AWSLogs/d.json.gz")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            object,
            StoredObject {
                bytes: Bytes::from_static(b"hello"),
                content_type: Some("application/json".into()),
                metadata: metadata.clone(),
                etag: etag.clone(),
                last_modified: t(5_000),
            }
        );
        let head = b
            .head_object("bkt", "AWSLogs/d.json.gz")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((head.size, head.metadata, head.etag), (5, metadata, etag));
        assert_eq!(b.get_object("bkt", "missing").await.unwrap(), None);
        assert_eq!(b.head_object("bkt", "missing").await.unwrap(), None);
        // Overwriting replaces bytes and metadata together.
        b.put_object(
            "bkt",
            "AWSLogs/d.json.gz",
            Bytes::from_static(b"bye"),
            None,
            &[],
            t(6_000),
        )
        .await
        .unwrap();
        let object = b
            .get_object("bkt", "AWSLogs/d.json.gz")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                object.bytes.as_ref(),
                object.content_type,
                object.metadata.len()
            ),
            (&b"bye"[..], None, 0)
        );
        assert_eq!(object.last_modified, t(6_000));
    }

    #[tokio::test]
    async fn unregistered_buckets_and_unstorable_keys() {
        let b = buckets();
        let put = |bucket: &'static str, key: &'static str| {
            let b = b.clone();
            async move {
                b.put_object(bucket, key, Bytes::from_static(b"x"), None, &[], t(1))
                    .await
            }
        };
        assert!(matches!(
            put("nobucket", "k").await,
            Err(BucketError::NoSuchBucket(_))
        ));
        assert!(matches!(
            b.get_object("nobucket", "k").await,
            Err(BucketError::NoSuchBucket(_))
        ));
        assert!(matches!(
            b.list_objects("nobucket", "", None, 10).await,
            Err(BucketError::NoSuchBucket(_))
        ));
        b.create(ME, "us-east-1", "bkt", t(0)).unwrap();
        for key in ["", "/lead", "trail/", "a//b"] {
            assert!(
                matches!(put("bkt", key).await, Err(BucketError::InvalidKey { .. })),
                "{key:?}"
            );
        }
        let long: &'static str = Box::leak("k".repeat(1025).into_boxed_str());
        assert!(matches!(
            put("bkt", long).await,
            Err(BucketError::KeyTooLong { key_bytes: 1025 })
        ));
        put("bkt", "dir/file").await.unwrap();
        assert!(matches!(
            put("bkt", "dir").await,
            Err(BucketError::InvalidKey { .. })
        ));
        assert!(matches!(
            put("bkt", "dir/file/deeper").await,
            Err(BucketError::InvalidKey { .. })
        ));
        // Rewriting a key is no conflict with itself.
        put("bkt", "dir/file").await.unwrap();
    }

    async fn fill(b: &Buckets, keys: &[&str]) {
        for (i, key) in keys.iter().enumerate() {
            b.put_object(
                "bkt",
                key,
                Bytes::from(vec![b'x'; i + 1]),
                None,
                &[],
                t(i as i64),
            )
            .await
            .unwrap();
        }
    }

    fn keys(objects: &[ObjectInfo]) -> Vec<&str> {
        objects.iter().map(|o| o.key.as_str()).collect()
    }

    #[tokio::test]
    async fn listing_prefix_marker_truncation_and_byte_order() {
        let b = buckets();
        b.create(ME, "us-east-1", "bkt", t(0)).unwrap();
        fill(
            &b,
            &[
                "logs/b.gz",
                "logs/a.gz",
                "logs-other/x",
                "logs/é.gz",
                "logs/Z.gz",
                "logs/~.gz",
                "top",
            ],
        )
        .await;
        let (all, truncated) = b.list_objects("bkt", "", None, 1000).await.unwrap();
        assert!(!truncated);
        assert_eq!(
            keys(&all),
            [
                "logs-other/x",
                "logs/Z.gz",
                "logs/a.gz",
                "logs/b.gz",
                "logs/~.gz",
                "logs/é.gz",
                "top"
            ]
        );
        // String prefixes, not whole segments.
        let (some, _) = b.list_objects("bkt", "logs", None, 1000).await.unwrap();
        assert_eq!(some.len(), 6);
        let (some, _) = b.list_objects("bkt", "logs/", None, 1000).await.unwrap();
        assert_eq!(some.len(), 5);
        let (some, _) = b.list_objects("bkt", "logs/a", None, 1000).await.unwrap();
        assert_eq!(keys(&some), ["logs/a.gz"]);
        assert_eq!(some[0].size, 2);
        assert_eq!(some[0].etag, etag_of(b"xx"));
        assert_eq!(some[0].last_modified, t(1));
        // Pages: strictly after the marker.
        let (page, truncated) = b.list_objects("bkt", "logs/", None, 2).await.unwrap();
        assert!(truncated);
        assert_eq!(keys(&page), ["logs/Z.gz", "logs/a.gz"]);
        let (page, truncated) = b
            .list_objects("bkt", "logs/", Some("logs/a.gz"), 2)
            .await
            .unwrap();
        assert!(truncated);
        assert_eq!(keys(&page), ["logs/b.gz", "logs/~.gz"]);
        let (page, truncated) = b
            .list_objects("bkt", "logs/", Some("logs/~.gz"), 2)
            .await
            .unwrap();
        assert!(!truncated);
        assert_eq!(keys(&page), ["logs/é.gz"]);
        // A marker between keys, and one past everything.
        let (page, _) = b.list_objects("bkt", "", Some("logs/b"), 1).await.unwrap();
        assert_eq!(keys(&page), ["logs/b.gz"]);
        let (page, truncated) = b.list_objects("bkt", "", Some("zz"), 5).await.unwrap();
        assert!(page.is_empty() && !truncated);
        let (page, truncated) = b.list_objects("bkt", "", None, 0).await.unwrap();
        assert!(page.is_empty() && truncated);
    }

    #[tokio::test]
    async fn listing_with_a_delimiter() {
        let b = buckets();
        b.create(ME, "us-east-1", "bkt", t(0)).unwrap();
        fill(&b, &["a/1", "a/2", "b", "c/x/1", "c/y", "d"]).await;
        let query = |after, max_keys| ListQuery {
            prefix: "",
            delimiter: Some("/"),
            after,
            max_keys,
        };
        let page = b.list_page("bkt", &query(None, 1000)).await.unwrap();
        assert_eq!(page.common_prefixes, ["a/", "c/"]);
        assert_eq!(keys(&page.objects), ["b", "d"]);
        assert!(!page.truncated);
        let page = b.list_page("bkt", &query(None, 2)).await.unwrap();
        assert_eq!(
            (page.common_prefixes.as_slice(), keys(&page.objects)),
            (&["a/".to_owned()][..], vec!["b"])
        );
        assert!(page.truncated);
        assert_eq!(page.last.as_deref(), Some("b"));
        let page = b.list_page("bkt", &query(Some("b"), 1)).await.unwrap();
        assert_eq!(page.common_prefixes, ["c/"]);
        assert!(page.truncated);
        // The common prefix given as the marker is not returned again.
        let page = b.list_page("bkt", &query(Some("c/"), 5)).await.unwrap();
        assert_eq!(keys(&page.objects), ["d"]);
        assert!(page.common_prefixes.is_empty());
        let nested = ListQuery {
            prefix: "c/",
            delimiter: Some("/"),
            after: None,
            max_keys: 10,
        };
        let page = b.list_page("bkt", &nested).await.unwrap();
        assert_eq!(page.common_prefixes, ["c/x/"]);
        assert_eq!(keys(&page.objects), ["c/y"]);
    }

    #[tokio::test]
    async fn delete_rules() {
        let b = buckets();
        assert!(matches!(
            b.delete("nothing").await,
            Err(BucketError::NoSuchBucket(_))
        ));
        b.create(ME, "us-east-1", "bkt", t(0)).unwrap();
        b.put_object("bkt", "k", Bytes::from_static(b"v"), None, &[], t(1))
            .await
            .unwrap();
        assert!(matches!(
            b.delete("bkt").await,
            Err(BucketError::NotEmpty(_))
        ));
        b.delete_object("bkt", "k").await.unwrap();
        // A missing key is not an error.
        b.delete_object("bkt", "k").await.unwrap();
        assert!(matches!(
            b.delete_object("nothing", "k").await,
            Err(BucketError::NoSuchBucket(_))
        ));
        assert_eq!(b.get_object("bkt", "k").await.unwrap(), None);
        b.delete("bkt").await.unwrap();
        assert_eq!(b.get("bkt").unwrap(), None);
        // The name is free again, for anyone.
        b.create(OTHER, "us-east-1", "bkt", t(2)).unwrap();
    }

    #[tokio::test]
    async fn objects_written_without_sidecar_are_served_plainly() {
        let objects = Objects::memory();
        let b = Buckets::new(Arc::new(MemoryCatalog::default()), objects.clone());
        b.create(ME, "us-east-1", "bkt", t(0)).unwrap();
        // As a CloudWatch Logs export task writes.
        objects
            .put_durable(
                "buckets/bkt/exports/task/000000.gz",
                Bytes::from_static(b"gz"),
            )
            .await
            .unwrap();
        let object = b
            .get_object("bkt", "exports/task/000000.gz")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(object.bytes.as_ref(), b"gz");
        assert_eq!((object.content_type, object.metadata.len()), (None, 0));
        let (listed, _) = b.list_objects("bkt", "exports/", None, 10).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].etag, object.etag);
        let head = b
            .head_object("bkt", "exports/task/000000.gz")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(head.etag, object.etag);
        // A sidecar that describes other bytes is not believed.
        objects
            .put_durable(
                "bucket-meta/bkt/exports/task/000000.gz.json",
                Bytes::from_static(
                    br#"{"v":1,"size":99,"etag":"\"x\"","content_type":"text/plain","metadata":[],"last_modified_ms":1}"#,
                ),
            )
            .await
            .unwrap();
        let again = b
            .get_object("bkt", "exports/task/000000.gz")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.content_type, None);
    }
}
