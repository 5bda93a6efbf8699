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

    fn key(&self) -> String {
        format!("{}:{}:{}", self.account, self.region, self.id)
    }

    fn rows_path(&self) -> String {
        format!("insights/{}/{}/{}.rows", self.account, self.region, self.id)
    }
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
}
