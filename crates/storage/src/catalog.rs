//! The catalog: small, transactional metadata (names, segment lists, WAL
//! checkpoints, later alarms, trails, keys). One trait, several backends: SQLite
//! for the embedded default ([`SqliteCatalog`]), an in-memory one for tests
//! ([`MemoryCatalog`]), PostgreSQL for cluster mode (to come). The same
//! conformance suite runs on each.
//!
//! The model is deliberately plain: named tables of `key → bytes`, read by key
//! or key prefix, written in atomic batches. Callers own the value encoding.
//!
//! # SQLite schema (version 1)
//! `meta(key TEXT PRIMARY KEY, value TEXT)` holding `schema_version = 1`, and
//! `entries(tbl TEXT, key TEXT, value BLOB, PRIMARY KEY (tbl, key))`.
//! Opening a database of another schema version is refused.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

const SCHEMA_VERSION: i64 = 1;

/// Catalog failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// The backend failed.
    #[error("catalog backend: {0}")]
    Backend(String),
    /// A database written by another schema version.
    #[error("catalog schema version {found} is not supported (expected {SCHEMA_VERSION})")]
    UnsupportedSchema {
        /// The version found.
        found: i64,
    },
}

impl From<rusqlite::Error> for CatalogError {
    fn from(e: rusqlite::Error) -> Self {
        CatalogError::Backend(e.to_string())
    }
}

/// One write in an atomic batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogOp {
    /// Insert or replace.
    Put {
        /// Table name.
        table: String,
        /// Key.
        key: String,
        /// Value bytes.
        value: Vec<u8>,
    },
    /// Remove (no error when absent).
    Delete {
        /// Table name.
        table: String,
        /// Key.
        key: String,
    },
}

impl CatalogOp {
    /// A `Put`.
    pub fn put(table: &str, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        CatalogOp::Put {
            table: table.to_owned(),
            key: key.into(),
            value: value.into(),
        }
    }

    /// A `Delete`.
    pub fn delete(table: &str, key: impl Into<String>) -> Self {
        CatalogOp::Delete {
            table: table.to_owned(),
            key: key.into(),
        }
    }
}

/// Transactional metadata store.
pub trait Catalog: Send + Sync + std::fmt::Debug {
    /// The value at `(table, key)`.
    fn get(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>, CatalogError>;
    /// Every entry of `table` whose key starts with `prefix`, in key order.
    fn list(&self, table: &str, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, CatalogError>;
    /// Applies `ops` atomically and durably: all or none.
    fn commit(&self, ops: &[CatalogOp]) -> Result<(), CatalogError>;
}

/// In-memory catalog, for tests.
#[derive(Debug, Default)]
pub struct MemoryCatalog {
    tables: Mutex<BTreeMap<(String, String), Vec<u8>>>,
}

impl Catalog for MemoryCatalog {
    fn get(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>, CatalogError> {
        let tables = self
            .tables
            .lock()
            .map_err(|_| CatalogError::Backend("poisoned".into()))?;
        Ok(tables.get(&(table.to_owned(), key.to_owned())).cloned())
    }

    fn list(&self, table: &str, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, CatalogError> {
        let tables = self
            .tables
            .lock()
            .map_err(|_| CatalogError::Backend("poisoned".into()))?;
        Ok(tables
            .range((table.to_owned(), prefix.to_owned())..)
            .take_while(|((t, k), _)| t == table && k.starts_with(prefix))
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    fn commit(&self, ops: &[CatalogOp]) -> Result<(), CatalogError> {
        let mut tables = self
            .tables
            .lock()
            .map_err(|_| CatalogError::Backend("poisoned".into()))?;
        for op in ops {
            match op {
                CatalogOp::Put { table, key, value } => {
                    tables.insert((table.clone(), key.clone()), value.clone());
                }
                CatalogOp::Delete { table, key } => {
                    tables.remove(&(table.clone(), key.clone()));
                }
            }
        }
        Ok(())
    }
}

/// SQLite-backed catalog of the embedded default.
#[derive(Debug)]
pub struct SqliteCatalog {
    connection: Mutex<rusqlite::Connection>,
}

impl SqliteCatalog {
    /// Opens (creating if needed) the catalog database at `path`.
    pub fn open(path: &Path) -> Result<Self, CatalogError> {
        let connection = rusqlite::Connection::open(path)?;
        // WAL journaling with FULL sync: a committed batch survives power loss.
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS entries (
                 tbl TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
                 PRIMARY KEY (tbl, key)) WITHOUT ROWID;",
        )?;
        let version: Option<String> = connection
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .ok();
        match version {
            None => {
                connection.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)",
                    [SCHEMA_VERSION.to_string()],
                )?;
            }
            Some(v) => {
                let found: i64 = v.parse().unwrap_or(-1);
                if found != SCHEMA_VERSION {
                    return Err(CatalogError::UnsupportedSchema { found });
                }
            }
        }
        Ok(Self {
            connection: Mutex::new(connection),
        })
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, rusqlite::Connection>, CatalogError> {
        self.connection
            .lock()
            .map_err(|_| CatalogError::Backend("catalog lock poisoned".into()))
    }
}

/// The smallest string greater than every string starting with `prefix`, if any.
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = char::from_u32(last as u32 + 1) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

impl Catalog for SqliteCatalog {
    fn get(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>, CatalogError> {
        let conn = self.lock()?;
        let mut stmt =
            conn.prepare_cached("SELECT value FROM entries WHERE tbl = ?1 AND key = ?2")?;
        let mut rows = stmt.query(rusqlite::params![table, key])?;
        Ok(match rows.next()? {
            Some(row) => Some(row.get(0)?),
            None => None,
        })
    }

    fn list(&self, table: &str, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, CatalogError> {
        let conn = self.lock()?;
        let mut out = Vec::new();
        // A range scan on the primary key rather than LIKE, which would treat `%` and `_` specially.
        match prefix_end(prefix) {
            Some(end) => {
                let mut stmt = conn.prepare_cached(
                    "SELECT key, value FROM entries WHERE tbl = ?1 AND key >= ?2 AND key < ?3 ORDER BY key",
                )?;
                let rows = stmt.query_map(rusqlite::params![table, prefix, end], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
                for row in rows {
                    out.push(row?);
                }
            }
            None => {
                let mut stmt = conn.prepare_cached(
                    "SELECT key, value FROM entries WHERE tbl = ?1 AND key >= ?2 ORDER BY key",
                )?;
                let rows = stmt.query_map(rusqlite::params![table, prefix], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
                for row in rows {
                    out.push(row?);
                }
            }
        }
        Ok(out)
    }

    fn commit(&self, ops: &[CatalogOp]) -> Result<(), CatalogError> {
        let mut conn = self.lock()?;
        let tx = conn.transaction()?;
        for op in ops {
            match op {
                CatalogOp::Put { table, key, value } => {
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO entries (tbl, key, value) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(rusqlite::params![table, key, value])?;
                }
                CatalogOp::Delete { table, key } => {
                    tx.prepare_cached("DELETE FROM entries WHERE tbl = ?1 AND key = ?2")?
                        .execute(rusqlite::params![table, key])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// The conformance suite every backend must pass.
#[cfg(test)]
pub(crate) mod conformance {
    use super::*;

    pub(crate) fn run(catalog: &dyn Catalog) {
        assert_eq!(catalog.get("t", "a").unwrap(), None);
        catalog
            .commit(&[
                CatalogOp::put("t", "a/1", b"one".to_vec()),
                CatalogOp::put("t", "a/2", b"two".to_vec()),
                CatalogOp::put("t", "b/1", b"three".to_vec()),
                CatalogOp::put("u", "a/1", b"other table".to_vec()),
                CatalogOp::put("t", "a%_", b"special".to_vec()),
            ])
            .unwrap();
        assert_eq!(
            catalog.get("t", "a/1").unwrap().as_deref(),
            Some(&b"one"[..])
        );
        let listed: Vec<String> = catalog
            .list("t", "a/")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(listed, ["a/1", "a/2"]);
        let all: Vec<String> = catalog
            .list("t", "")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(all, ["a%_", "a/1", "a/2", "b/1"]);
        assert_eq!(catalog.list("t", "a%").unwrap().len(), 1);
        catalog
            .commit(&[
                CatalogOp::delete("t", "a/1"),
                CatalogOp::put("t", "a/2", b"2".to_vec()),
                CatalogOp::delete("t", "zz"),
            ])
            .unwrap();
        assert_eq!(catalog.get("t", "a/1").unwrap(), None);
        assert_eq!(catalog.get("t", "a/2").unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(
            catalog.get("u", "a/1").unwrap().as_deref(),
            Some(&b"other table"[..])
        );
        let unicode = "k\u{10FFFF}";
        catalog
            .commit(&[CatalogOp::put("t", unicode, b"x".to_vec())])
            .unwrap();
        assert_eq!(catalog.list("t", unicode).unwrap().len(), 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_backend_conforms() {
        conformance::run(&MemoryCatalog::default());
    }

    #[test]
    fn sqlite_backend_conforms_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        conformance::run(&SqliteCatalog::open(&path).unwrap());
        let reopened = SqliteCatalog::open(&path).unwrap();
        assert_eq!(
            reopened.get("t", "a/2").unwrap().as_deref(),
            Some(&b"2"[..])
        );
    }

    #[test]
    fn sqlite_refuses_other_schema_versions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        drop(SqliteCatalog::open(&path).unwrap());
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
            [],
        )
        .unwrap();
        drop(conn);
        assert!(matches!(
            SqliteCatalog::open(&path),
            Err(CatalogError::UnsupportedSchema { found: 99 })
        ));
    }
}
