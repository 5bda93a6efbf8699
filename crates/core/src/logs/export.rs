//! Export tasks (`spec/logs.md` §9): a task is created PENDING with the call's
//! audit record; the maintenance worker runs it (RUNNING → COMPLETED, or
//! CANCELLED when cancelled in between) and writes the §9 layout into a bucket
//! of the object store.
//!
//! # Layout
//! A bucket is the object-store folder `buckets/{bucket}/`:
//! `{prefix}/aws-logs-write-test` (`Permission Check Successful`), then
//! `{prefix}/{taskId}/{logStreamName}/000000.gz`, `000001.gz`, … — gzip text,
//! one line `yyyy-MM-ddTHH:mm:ss.SSSZ <message>` per event, ascending, rolled
//! over at 100 MB of text.
//!
//! # Catalog layout (version 1)
//! Table `log_export_tasks`, key `{account}:{taskId}`, JSON [`ExportTask`].

use std::io::Write as _;

use serde::{Deserialize, Serialize};
use trailwatch_storage::CatalogOp;
use trailwatch_types::Timestamp;

/// Catalog table of export tasks.
pub const TABLE: &str = "log_export_tasks";
/// Uncompressed bytes per exported object.
const CHUNK_BYTES: usize = 100 * 1024 * 1024;

/// A stored export task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportTask {
    /// Format version.
    pub v: u8,
    /// `taskId`.
    pub id: String,
    /// `taskName`.
    pub name: Option<String>,
    /// Owning account and region.
    pub account: String,
    /// Region of the log group.
    pub region: String,
    /// `logGroupName`.
    pub group: String,
    /// `logStreamNamePrefix`.
    pub stream_prefix: Option<String>,
    /// `from` (inclusive), ms.
    pub from: i64,
    /// `to` (inclusive), ms.
    pub to: i64,
    /// `destination` bucket.
    pub destination: String,
    /// `destinationPrefix`.
    pub prefix: String,
    /// PENDING, RUNNING, COMPLETED, FAILED, PENDING_CANCEL or CANCELLED.
    pub status: String,
    /// `status.message`.
    pub message: Option<String>,
    /// `executionInfo.creationTime`.
    pub created_ms: i64,
    /// `executionInfo.completionTime`.
    pub completed_ms: Option<i64>,
}

impl ExportTask {
    /// Whether the task still holds the one active slot of its account.
    pub fn is_active(&self) -> bool {
        matches!(
            self.status.as_str(),
            "PENDING" | "RUNNING" | "PENDING_CANCEL"
        )
    }

    /// The catalog change that stores this task.
    pub fn put(&self) -> CatalogOp {
        CatalogOp::put(
            TABLE,
            format!("{}:{}", self.account, self.id),
            serde_json::to_vec(self).unwrap_or_default(),
        )
    }
}

/// Object path of `key` under the task's destination.
pub fn object_path(task: &ExportTask, key: &str) -> String {
    format!("buckets/{}/{}/{key}", task.destination, task.prefix)
}

/// The export lines of `events` (timestamp, message), gzipped in chunks.
pub fn chunks<'a>(
    events: impl Iterator<Item = (i64, &'a str)>,
) -> Result<Vec<Vec<u8>>, std::io::Error> {
    let mut out = Vec::new();
    let mut text = String::new();
    let flush = |text: &mut String, out: &mut Vec<Vec<u8>>| -> Result<(), std::io::Error> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(text.as_bytes())?;
        out.push(gz.finish()?);
        text.clear();
        Ok(())
    };
    for (timestamp, message) in events {
        // Always with milliseconds: `2024-01-01T12:00:00.000Z`.
        let seconds = Timestamp::from_millis(timestamp).to_iso8601_seconds();
        text.push_str(seconds.get(..19).unwrap_or(&seconds));
        text.push_str(&format!(".{:03}Z ", timestamp.rem_euclid(1000)));
        text.push_str(message);
        text.push('\n');
        if text.len() >= CHUNK_BYTES {
            flush(&mut text, &mut out)?;
        }
    }
    if !text.is_empty() {
        flush(&mut text, &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    #[test]
    fn lines_are_iso_time_then_message() {
        let chunks = chunks(
            [
                (1_704_110_400_000, "GET /health 200"),
                (1_704_110_400_001, "b"),
            ]
            .into_iter(),
        )
        .unwrap();
        assert_eq!(chunks.len(), 1);
        let mut text = String::new();
        flate2::read::GzDecoder::new(&chunks[0][..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(
            text,
            "2024-01-01T12:00:00.000Z GET /health 200\n2024-01-01T12:00:00.001Z b\n"
        );
    }
}
