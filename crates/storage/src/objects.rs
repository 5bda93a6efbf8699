//! Object storage for immutable segments, through the `object_store` crate: a
//! local directory for the embedded default, any S3-compatible store later.
//!
//! Invariant: [`Objects::put_durable`] returns only once the object survives a
//! crash. For the local directory that means fsyncing the file and its
//! directories, which `object_store`'s local backend does not do by itself;
//! callers commit catalog entries (and drop WAL files) only after it returns.
//!
//! Paths are `/`-separated; each segment is stored percent-encoded where the
//! backend needs it (`object_store` encodes `%`, `#`, `~`, control characters
//! and the like, and `.`/`..` segments). [`Objects::list`] returns paths as
//! stored; [`Objects::list_entries`] and [`Objects::head`] return the logical
//! path, the string that was written. Empty segments (`a//b`, a trailing `/`)
//! are dropped by the store, so a caller that must tell them apart rejects them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, PutPayload};

/// Object store failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectError {
    /// The store failed.
    #[error("object store {action} {path}: {message}")]
    Store {
        /// get, put, delete.
        action: &'static str,
        /// Object path.
        path: String,
        /// Cause.
        message: String,
    },
    /// A local filesystem step (fsync) failed.
    #[error("{action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// One stored object, as a listing or a head request sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEntry {
    /// The logical path (segments percent-decoded): what was passed to
    /// [`Objects::put_durable`].
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification as the backend records it, epoch milliseconds.
    pub last_modified_ms: i64,
    /// The backend's version tag, when it keeps one: it changes whenever the
    /// object is written again.
    pub version: Option<String>,
}

impl ObjectEntry {
    fn from_meta(meta: ObjectMeta) -> Self {
        Self {
            path: logical_path(meta.location.as_ref()),
            size: meta.size,
            last_modified_ms: meta.last_modified.timestamp_millis(),
            version: meta.e_tag,
        }
    }
}

/// The logical path of a stored location: each segment percent-decoded, the
/// inverse of the encoding `object_store` applies on the way in.
fn logical_path(stored: &str) -> String {
    stored
        .split('/')
        .map(|segment| percent_encoding::percent_decode_str(segment).decode_utf8_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// A handle on the object store.
#[derive(Debug, Clone)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    local_root: Option<PathBuf>,
}

impl Objects {
    /// Objects stored as files under `dir`.
    pub fn local(dir: &Path) -> Result<Self, ObjectError> {
        std::fs::create_dir_all(dir).map_err(|source| ObjectError::Io {
            action: format!("create {}", dir.display()),
            source,
        })?;
        let store = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| ObjectError::Store {
                action: "open",
                path: dir.display().to_string(),
                message: e.to_string(),
            })?
            // A directory left empty by a delete would otherwise stand in the
            // way of a later object of the same path (`a/b` deleted, `a` put).
            .with_automatic_cleanup(true);
        Ok(Self {
            store: Arc::new(store),
            local_root: Some(dir.to_owned()),
        })
    }

    /// The underlying store, for readers that fetch byte ranges themselves.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// Objects kept in memory: for tests, and for exercising the remote-store
    /// code paths (ranged async reads) without a server.
    pub fn memory() -> Self {
        Self {
            store: Arc::new(object_store::memory::InMemory::new()),
            local_root: None,
        }
    }

    /// Writes an object and makes it durable before returning.
    pub async fn put_durable(&self, path: &str, bytes: Bytes) -> Result<(), ObjectError> {
        let location = ObjectPath::from(path);
        self.store
            .put(&location, PutPayload::from(bytes))
            .await
            .map_err(|e| ObjectError::Store {
                action: "put",
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        if let Some(root) = &self.local_root {
            // The file carries the stored (encoded) name, not the logical one.
            let file = root.join(location.as_ref());
            let root = root.clone();
            tokio::task::spawn_blocking(move || fsync_with_parents(&file, &root))
                .await
                .map_err(|e| ObjectError::Io {
                    action: "fsync task".to_owned(),
                    source: std::io::Error::other(e),
                })??;
        }
        Ok(())
    }

    /// Reads a whole object.
    pub async fn get(&self, path: &str) -> Result<Bytes, ObjectError> {
        let err = |e: object_store::Error| ObjectError::Store {
            action: "get",
            path: path.to_owned(),
            message: e.to_string(),
        };
        self.store
            .get(&ObjectPath::from(path))
            .await
            .map_err(err)?
            .bytes()
            .await
            .map_err(err)
    }

    /// Reads a whole object; `None` when there is none at `path`.
    pub async fn get_if_exists(&self, path: &str) -> Result<Option<Bytes>, ObjectError> {
        let err = |e: object_store::Error| ObjectError::Store {
            action: "get",
            path: path.to_owned(),
            message: e.to_string(),
        };
        match self.store.get(&ObjectPath::from(path)).await {
            Ok(result) => result.bytes().await.map(Some).map_err(err),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(err(e)),
        }
    }

    /// Size, modification time and version of the object at `path`; `None`
    /// when there is none.
    pub async fn head(&self, path: &str) -> Result<Option<ObjectEntry>, ObjectError> {
        match self.store.head(&ObjectPath::from(path)).await {
            Ok(meta) => Ok(Some(ObjectEntry::from_meta(meta))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(ObjectError::Store {
                action: "head",
                path: path.to_owned(),
                message: e.to_string(),
            }),
        }
    }

    /// The size of an object in bytes.
    pub async fn size(&self, path: &str) -> Result<u64, ObjectError> {
        self.store
            .head(&ObjectPath::from(path))
            .await
            .map(|m| m.size)
            .map_err(|e| ObjectError::Store {
                action: "head",
                path: path.to_owned(),
                message: e.to_string(),
            })
    }

    /// Reads the bytes `range` of an object.
    pub async fn get_range(
        &self,
        path: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes, ObjectError> {
        self.store
            .get_range(&ObjectPath::from(path), range)
            .await
            .map_err(|e| ObjectError::Store {
                action: "get range",
                path: path.to_owned(),
                message: e.to_string(),
            })
    }

    /// The paths of every object under `prefix`, sorted. The prefix is matched
    /// whole segments at a time (`a/b` lists `a/b/c`, never `a/bc`), which is
    /// how `object_store` lists; a prefix nothing is under lists nothing.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, ObjectError> {
        use futures::TryStreamExt as _;
        let location = ObjectPath::from(prefix);
        let mut paths: Vec<String> = self
            .store
            .list(Some(&location))
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .map_err(|e| ObjectError::Store {
                action: "list",
                path: prefix.to_owned(),
                message: e.to_string(),
            })?;
        // Stores list in no particular order; callers get a stable one.
        paths.sort();
        Ok(paths)
    }

    /// Every object under `prefix` (whole segments, as [`Objects::list`]) with
    /// its size and modification time, sorted by logical path in byte order.
    pub async fn list_entries(&self, prefix: &str) -> Result<Vec<ObjectEntry>, ObjectError> {
        use futures::TryStreamExt as _;
        let location = ObjectPath::from(prefix);
        let mut entries: Vec<ObjectEntry> = self
            .store
            .list(Some(&location))
            .map_ok(ObjectEntry::from_meta)
            .try_collect()
            .await
            .map_err(|e| ObjectError::Store {
                action: "list",
                path: prefix.to_owned(),
                message: e.to_string(),
            })?;
        // Sorted after decoding: the stored spelling (`%7E` for `~`) orders
        // differently from the logical one.
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(entries)
    }

    /// Whether any object lies strictly under `prefix` (whole segments; an
    /// object at `prefix` itself does not count); stops at the first found.
    pub async fn any_under(&self, prefix: &str) -> Result<bool, ObjectError> {
        use futures::TryStreamExt as _;
        let location = ObjectPath::from(prefix);
        let mut listing = self.store.list(Some(&location));
        loop {
            match listing.try_next().await {
                Ok(None) => return Ok(false),
                Ok(Some(meta)) if meta.location != location => return Ok(true),
                Ok(Some(_)) => {}
                Err(e) => {
                    return Err(ObjectError::Store {
                        action: "list",
                        path: prefix.to_owned(),
                        message: e.to_string(),
                    })
                }
            }
        }
    }

    /// Reads several byte ranges of one object (a local file is opened once).
    pub async fn get_ranges(
        &self,
        path: &str,
        ranges: &[std::ops::Range<u64>],
    ) -> Result<Vec<Bytes>, ObjectError> {
        self.store
            .get_ranges(&ObjectPath::from(path), ranges)
            .await
            .map_err(|e| ObjectError::Store {
                action: "get ranges",
                path: path.to_owned(),
                message: e.to_string(),
            })
    }

    /// Deletes an object; a missing object is not an error.
    pub async fn delete(&self, path: &str) -> Result<(), ObjectError> {
        match self.store.delete(&ObjectPath::from(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(ObjectError::Store {
                action: "delete",
                path: path.to_owned(),
                message: e.to_string(),
            }),
        }
    }
}

fn fsync_with_parents(file: &Path, root: &Path) -> Result<(), ObjectError> {
    let io = |what: &Path| {
        let action = format!("fsync {}", what.display());
        move |source| ObjectError::Io { action, source }
    };
    std::fs::File::open(file)
        .and_then(|f| f.sync_all())
        .map_err(io(file))?;
    let mut dir = file.parent();
    while let Some(d) = dir {
        std::fs::File::open(d)
            .and_then(|f| f.sync_all())
            .map_err(io(d))?;
        if d == root {
            break;
        }
        dir = d.parent();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lists_by_whole_segments(objects: Objects) {
        assert!(objects.list("a").await.unwrap().is_empty());
        for path in ["a/b/2.x", "a/b/1.x", "a/bc/3.x", "z/4.x"] {
            objects
                .put_durable(path, Bytes::from_static(b"v"))
                .await
                .unwrap();
        }
        assert_eq!(objects.list("a/b").await.unwrap(), ["a/b/1.x", "a/b/2.x"]);
        assert_eq!(
            objects.list("a").await.unwrap(),
            ["a/b/1.x", "a/b/2.x", "a/bc/3.x"]
        );
        assert!(objects.list("a/b/1").await.unwrap().is_empty());
        assert!(objects.list("missing/dir").await.unwrap().is_empty());
        objects.delete("a/b/1.x").await.unwrap();
        assert_eq!(objects.list("a/b").await.unwrap(), ["a/b/2.x"]);
    }

    async fn entries_carry_logical_paths(objects: Objects) {
        assert_eq!(objects.head("k/a~b").await.unwrap(), None);
        assert_eq!(objects.get_if_exists("k/a~b").await.unwrap(), None);
        assert!(!objects.any_under("k").await.unwrap());
        for path in ["k/a~b", "k/100%/x#1", "k/.", "k/z", "k/é"] {
            objects
                .put_durable(path, Bytes::from(path.to_owned()))
                .await
                .unwrap();
        }
        let entries = objects.list_entries("k").await.unwrap();
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["k/.", "k/100%/x#1", "k/a~b", "k/z", "k/é"]);
        assert_eq!(entries[1].size, "k/100%/x#1".len() as u64);
        let head = objects.head("k/100%/x#1").await.unwrap().unwrap();
        assert_eq!(head.path, "k/100%/x#1");
        assert_eq!(
            objects.get_if_exists("k/a~b").await.unwrap().unwrap(),
            Bytes::from_static(b"k/a~b")
        );
        assert!(objects.any_under("k/100%").await.unwrap());
        assert!(!objects.any_under("k/100").await.unwrap());
        assert!(
            !objects.any_under("k/z").await.unwrap(),
            "the object itself"
        );
    }

    #[tokio::test]
    async fn list_in_memory() {
        lists_by_whole_segments(Objects::memory()).await;
        entries_carry_logical_paths(Objects::memory()).await;
    }

    #[tokio::test]
    async fn a_deleted_folder_does_not_block_an_object_of_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let objects = Objects::local(dir.path()).unwrap();
        objects
            .put_durable("b/a/x/y", Bytes::from_static(b"1"))
            .await
            .unwrap();
        objects.delete("b/a/x/y").await.unwrap();
        objects
            .put_durable("b/a", Bytes::from_static(b"2"))
            .await
            .unwrap();
        assert_eq!(objects.get("b/a").await.unwrap().as_ref(), b"2");
        assert!(dir.path().exists(), "the root stays");
    }

    #[tokio::test]
    async fn list_on_local_disk() {
        let dir = tempfile::tempdir().unwrap();
        lists_by_whole_segments(Objects::local(dir.path()).unwrap()).await;
        let dir = tempfile::tempdir().unwrap();
        entries_carry_logical_paths(Objects::local(dir.path()).unwrap()).await;
    }
}
