//! Logs Insights queries kept across restarts (`spec/logs.md` §10.1–10.2):
//! each query's request, status and statistics in the catalog, and the rows
//! of a finished one as an object. Both are kept 7 days ([`RETENTION_MS`]).
//!
//! Rows go to the object store rather than the catalog: one result holds up
//! to 100,000 rows (tens of MB), while the catalog is for small transactional
//! metadata (a SQLite row here, a PostgreSQL row in cluster mode). Rows are
//! written once and read whole, which is what an object serves best, and any
//! node can read them.
//!
//! # Catalog layout (version 1)
//! Table `log_queries`, key `{account}:{region}:{queryId}`, JSON [`QueryRecord`].
//!
//! # Rows object (version 1)
//! `insights/{account}/{region}/{queryId}.rows`:
//! `b"TWQR" | u8 1 | u32 LE crc32c(body) | body`, where body is zstd of the
//! JSON `[[[field, value], …], …]` (rows in result order).
//!
//! # Invariants
//! - A record says it has rows only after the rows object is durable (it is
//!   written first). A crash in between leaves a Running record, which the
//!   next start runs again, overwriting the object.
//! - Forgetting a query deletes its record before its object: a crash in
//!   between leaves an unreferenced object, never a record without rows.
//!   [`QueryHistory::sweep_orphans`] deletes such objects later.
//! - A record exists before its rows object is written (StartQuery stores it
//!   Running), and query ids are never reused, so an object without a record
//!   is always an orphan.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use trailwatch_storage::{Catalog, CatalogOp, Objects};

use super::insights::Row;
use super::model::LogsError;

/// Catalog table of queries.
pub const TABLE: &str = "log_queries";
/// How long a query and its results are kept (§10.1).
pub const RETENTION_MS: i64 = 7 * 24 * 3_600_000;
/// How long a query may stay Scheduled or Running, from its createTime,
/// before it times out (§10.1).
pub const TIMEOUT_MS: i64 = 60 * 60_000;
/// Where rows objects live: `{ROWS_PREFIX}/{account}/{region}/{id}.rows`.
const ROWS_PREFIX: &str = "insights";
const ROWS_SUFFIX: &str = ".rows";
const MAGIC: &[u8; 4] = b"TWQR";
const ROWS_VERSION: u8 = 1;
const HEADER_BYTES: usize = 9;
const ZSTD_LEVEL: i32 = 3;

/// Query status values (§10.2), spelled as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueryStatus {
    /// Accepted, not yet running.
    Scheduled,
    /// Being evaluated.
    Running,
    /// Finished with results.
    Complete,
    /// Could not be evaluated.
    Failed,
    /// Stopped by StopQuery.
    Cancelled,
    /// Ran out of time.
    Timeout,
    /// Unknown.
    Unknown,
}

impl QueryStatus {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            QueryStatus::Scheduled => "Scheduled",
            QueryStatus::Running => "Running",
            QueryStatus::Complete => "Complete",
            QueryStatus::Failed => "Failed",
            QueryStatus::Cancelled => "Cancelled",
            QueryStatus::Timeout => "Timeout",
            QueryStatus::Unknown => "Unknown",
        }
    }

    /// Scheduled or Running: counts toward the concurrency limit, may be stopped.
    pub fn is_active(self) -> bool {
        matches!(self, QueryStatus::Scheduled | QueryStatus::Running)
    }
}

/// One query as stored: enough to answer GetQueryResults and DescribeQueries,
/// and to run it again from scratch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryRecord {
    /// Format version.
    pub v: u8,
    /// `queryId`.
    pub id: String,
    /// Account.
    pub account: String,
    /// Region.
    pub region: String,
    /// `queryString`.
    pub query_string: String,
    /// The selected log groups, in request order.
    pub groups: Vec<String>,
    /// `startTime`, epoch seconds.
    pub start_s: i64,
    /// `endTime`, epoch seconds.
    pub end_s: i64,
    /// `limit` as requested.
    pub limit: Option<usize>,
    /// Current status.
    pub status: QueryStatus,
    /// `createTime`, epoch ms.
    pub create_ms: i64,
    /// When the query reached a final status, epoch ms.
    pub finish_ms: Option<i64>,
    /// `recordsScanned`.
    pub scanned: u64,
    /// `bytesScanned`.
    pub bytes: u64,
    /// `recordsMatched`.
    pub matched: u64,
    /// Number of rows in the rows object; `None` while there is none.
    pub rows: Option<u64>,
}

impl QueryRecord {
    /// Whether the record is older than [`RETENTION_MS`] at `now_ms`.
    pub fn expired(&self, now_ms: i64) -> bool {
        self.create_ms < now_ms - RETENTION_MS
    }

    /// Whether the query is still Scheduled or Running [`TIMEOUT_MS`] or
    /// more after its createTime, at `now_ms`: it must become Timeout.
    pub fn timed_out(&self, now_ms: i64) -> bool {
        self.status.is_active() && now_ms - self.create_ms >= TIMEOUT_MS
    }

    /// Makes the query Timeout as of `now_ms`.
    pub fn time_out(&mut self, now_ms: i64) {
        self.status = QueryStatus::Timeout;
        self.finish_ms = Some(now_ms);
    }

    fn key(&self) -> String {
        record_key(&self.account, &self.region, &self.id)
    }

    fn rows_path(&self) -> String {
        format!(
            "{ROWS_PREFIX}/{}/{}/{}{ROWS_SUFFIX}",
            self.account, self.region, self.id
        )
    }
}

fn record_key(account: &str, region: &str, id: &str) -> String {
    format!("{account}:{region}:{id}")
}

/// The catalog key of the query whose rows object is at `path`; `None` for
/// a path that is not a rows object (left alone by the sweep).
fn key_of_rows_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix(ROWS_PREFIX)?.strip_prefix('/')?;
    let mut parts = rest.split('/');
    let (account, region, file) = (parts.next()?, parts.next()?, parts.next()?);
    let id = file.strip_suffix(ROWS_SUFFIX)?;
    if parts.next().is_some() || [account, region, id].iter().any(|p| p.is_empty()) {
        return None;
    }
    Some(record_key(account, region, id))
}

fn storage(e: impl std::fmt::Display) -> LogsError {
    LogsError::Storage(e.to_string())
}

/// Encodes rows as a rows object (see the module docs).
pub fn encode_rows(rows: &[Row]) -> Result<Vec<u8>, LogsError> {
    let json = serde_json::to_vec(rows).map_err(storage)?;
    let body = zstd::bulk::compress(&json, ZSTD_LEVEL).map_err(storage)?;
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    out.extend_from_slice(MAGIC);
    out.push(ROWS_VERSION);
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes a rows object, refusing other versions and damaged bodies.
pub fn decode_rows(bytes: &[u8]) -> Result<Vec<Row>, String> {
    if bytes.len() < HEADER_BYTES || &bytes[..4] != MAGIC {
        return Err("not an Insights rows object".to_owned());
    }
    if bytes[4] != ROWS_VERSION {
        return Err(format!("rows object version {} is not supported", bytes[4]));
    }
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&bytes[5..HEADER_BYTES]);
    let body = &bytes[HEADER_BYTES..];
    if crc32c::crc32c(body) != u32::from_le_bytes(crc) {
        return Err(format!(
            "rows object checksum mismatch at offset {HEADER_BYTES}"
        ));
    }
    let mut json = Vec::new();
    zstd::stream::copy_decode(body, &mut json).map_err(|e| format!("rows object zstd: {e}"))?;
    serde_json::from_slice(&json).map_err(|e| format!("rows object json: {e}"))
}

/// Queries in the catalog, their rows in the object store.
#[derive(Debug, Clone)]
pub struct QueryHistory {
    catalog: Arc<dyn Catalog>,
    objects: Objects,
}

impl QueryHistory {
    /// History kept in `catalog` and `objects`.
    pub fn new(catalog: Arc<dyn Catalog>, objects: Objects) -> Self {
        Self { catalog, objects }
    }

    /// The change that stores `record` (for a caller that commits it with its
    /// audit record).
    pub fn save_change(record: &QueryRecord) -> Result<CatalogOp, LogsError> {
        let value = serde_json::to_vec(record).map_err(storage)?;
        Ok(CatalogOp::put(TABLE, record.key(), value))
    }

    /// Stores `record` durably, now.
    pub fn save(&self, record: &QueryRecord) -> Result<(), LogsError> {
        self.catalog
            .commit(&[Self::save_change(record)?])
            .map_err(storage)
    }

    /// Every stored query, of every account.
    pub fn all(&self) -> Result<Vec<QueryRecord>, LogsError> {
        self.catalog
            .list(TABLE, "")
            .map_err(storage)?
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v).map_err(storage))
            .collect()
    }

    /// Makes `rows` durable, then stores `record` (which should say
    /// Complete) with their count.
    pub async fn finish(&self, record: &mut QueryRecord, rows: &[Row]) -> Result<(), LogsError> {
        let bytes = encode_rows(rows)?;
        self.objects
            .put_durable(&record.rows_path(), Bytes::from(bytes))
            .await
            .map_err(storage)?;
        record.rows = Some(rows.len() as u64);
        self.save(record)
    }

    /// The rows of a finished query (none when it has no rows object).
    pub async fn rows(&self, record: &QueryRecord) -> Result<Vec<Row>, LogsError> {
        if record.rows.is_none() {
            return Ok(Vec::new());
        }
        let path = record.rows_path();
        let bytes = self.objects.get(&path).await.map_err(storage)?;
        decode_rows(&bytes).map_err(|m| LogsError::Storage(format!("{path}: {m}")))
    }

    /// Deletes a query: its record first, then its rows.
    pub async fn forget(&self, record: &QueryRecord) -> Result<(), LogsError> {
        self.catalog
            .commit(&[CatalogOp::delete(TABLE, record.key())])
            .map_err(storage)?;
        self.objects
            .delete(&record.rows_path())
            .await
            .map_err(storage)
    }

    /// Forgets every query older than [`RETENTION_MS`] at `now_ms`; returns
    /// how many.
    pub async fn prune(&self, now_ms: i64) -> Result<usize, LogsError> {
        let expired: Vec<QueryRecord> = self
            .all()?
            .into_iter()
            .filter(|r| r.expired(now_ms))
            .collect();
        for record in &expired {
            self.forget(record).await?;
        }
        Ok(expired.len())
    }

    /// Deletes the rows objects no record refers to any more (left by a
    /// crash inside [`Self::forget`]); returns how many.
    pub async fn sweep_orphans(&self) -> Result<usize, LogsError> {
        // Objects are listed before the records are read: a record is stored
        // before its object is written, so every object listed here whose
        // record is missing afterwards lost it to `forget`. Reading the
        // records first would race a query that finishes in between and
        // delete its fresh rows.
        let paths = self.objects.list(ROWS_PREFIX).await.map_err(storage)?;
        if paths.is_empty() {
            return Ok(0);
        }
        let keys: std::collections::HashSet<String> = self
            .catalog
            .list(TABLE, "")
            .map_err(storage)?
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        let mut swept = 0;
        for path in paths {
            if key_of_rows_path(&path).is_some_and(|key| !keys.contains(&key)) {
                self.objects.delete(&path).await.map_err(storage)?;
                swept += 1;
            }
        }
        Ok(swept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trailwatch_storage::MemoryCatalog;

    fn record(id: &str, create_ms: i64) -> QueryRecord {
        QueryRecord {
            v: 1,
            id: id.into(),
            account: "111122223333".into(),
            region: "us-east-1".into(),
            query_string: "fields @message".into(),
            groups: vec!["app".into()],
            start_s: 0,
            end_s: 10,
            limit: Some(5),
            status: QueryStatus::Running,
            create_ms,
            finish_ms: None,
            scanned: 3,
            bytes: 30,
            matched: 0,
            rows: None,
        }
    }

    fn row(i: usize) -> Row {
        vec![
            ("@message".to_owned(), format!("m{i} é")),
            ("@ptr".to_owned(), format!("p{i}")),
        ]
    }

    #[test]
    fn rows_round_trip_and_damage_is_refused() {
        let rows: Vec<Row> = (0..1000).map(row).collect();
        let bytes = encode_rows(&rows).unwrap();
        assert_eq!(decode_rows(&bytes).unwrap(), rows);
        assert_eq!(
            decode_rows(&encode_rows(&[]).unwrap()).unwrap(),
            Vec::<Row>::new()
        );
        let mut damaged = bytes.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(decode_rows(&damaged).unwrap_err().contains("checksum"));
        let mut future = bytes.clone();
        future[4] = 2;
        assert!(decode_rows(&future).unwrap_err().contains("version 2"));
        assert!(decode_rows(b"TWQ").is_err());
    }

    #[tokio::test]
    async fn finished_queries_are_kept_then_pruned() {
        let catalog = Arc::new(MemoryCatalog::default());
        let history = QueryHistory::new(catalog.clone(), Objects::memory());
        let mut done = record("q1", 1_000);
        history.save(&done).unwrap();
        history.save(&record("q2", 2_000)).unwrap();
        let rows: Vec<Row> = (0..3).map(row).collect();
        done.status = QueryStatus::Complete;
        history.finish(&mut done, &rows).await.unwrap();
        // A second handle on the same stores (a restart) sees both.
        let again = QueryHistory::new(catalog, history.objects.clone());
        let all = again.all().unwrap();
        assert_eq!(all.len(), 2);
        let stored = all.iter().find(|r| r.id == "q1").unwrap();
        assert_eq!(
            (stored.status, stored.rows),
            (QueryStatus::Complete, Some(3))
        );
        assert_eq!(again.rows(stored).await.unwrap(), rows);
        let running = all.iter().find(|r| r.id == "q2").unwrap();
        assert!(running.status.is_active());
        assert!(again.rows(running).await.unwrap().is_empty());
        // Seven days after q1 was created, only q1 is gone, rows and all.
        assert_eq!(again.prune(1_000 + RETENTION_MS + 1).await.unwrap(), 1);
        let left = again.all().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].id, "q2");
        assert!(history.objects.get(&stored.rows_path()).await.is_err());
    }

    #[test]
    fn running_queries_time_out_sixty_minutes_after_creation() {
        let mut r = record("q", 1_000);
        assert!(!r.timed_out(1_000 + TIMEOUT_MS - 1));
        assert!(r.timed_out(1_000 + TIMEOUT_MS));
        r.time_out(1_000 + TIMEOUT_MS);
        assert_eq!(
            (r.status, r.finish_ms),
            (QueryStatus::Timeout, Some(1_000 + TIMEOUT_MS))
        );
        // Only Scheduled and Running queries time out.
        assert!(!r.timed_out(i64::MAX));
        r.status = QueryStatus::Complete;
        assert!(!r.timed_out(i64::MAX));
        r.status = QueryStatus::Scheduled;
        assert!(r.timed_out(1_000 + TIMEOUT_MS));
    }

    #[test]
    fn rows_paths_map_back_to_record_keys() {
        let r = record("q1", 0);
        assert_eq!(key_of_rows_path(&r.rows_path()), Some(r.key()));
        for other in [
            "insights/a/b",
            "insights/a/b/c.json",
            "insights/a/b/c/d.rows",
            "insights/a//.rows",
            "insightsx/a/b/c.rows",
            "other/a/b/c.rows",
        ] {
            assert_eq!(key_of_rows_path(other), None, "{other}");
        }
    }

    #[tokio::test]
    async fn orphaned_rows_are_swept_and_referenced_ones_kept() {
        let catalog = Arc::new(MemoryCatalog::default());
        let history = QueryHistory::new(catalog, Objects::memory());
        let rows: Vec<Row> = (0..2).map(row).collect();
        let mut kept = record("kept", 1_000);
        let mut orphan = record("orphan", 1_000);
        for r in [&mut kept, &mut orphan] {
            history.save(r).unwrap();
            r.status = QueryStatus::Complete;
            history.finish(r, &rows).await.unwrap();
        }
        // What a crash between the two steps of `forget` leaves: no record,
        // the rows object still there.
        history
            .catalog
            .commit(&[CatalogOp::delete(TABLE, orphan.key())])
            .unwrap();
        // Something else under the prefix is not a rows object: left alone.
        history
            .objects
            .put_durable("insights/notes.txt", Bytes::from_static(b"x"))
            .await
            .unwrap();
        assert_eq!(history.sweep_orphans().await.unwrap(), 1);
        assert!(history.objects.get(&orphan.rows_path()).await.is_err());
        assert_eq!(history.rows(&kept).await.unwrap(), rows);
        assert!(history.objects.get("insights/notes.txt").await.is_ok());
        assert_eq!(history.sweep_orphans().await.unwrap(), 0);
    }
}
