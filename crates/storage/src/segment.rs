//! Immutable segments: Apache Parquet files (zstd) holding one Arrow record
//! batch's rows, sorted by the caller, plus the metadata the catalog keeps about
//! each. Open formats let users read their own data with DuckDB or pandas.
//!
//! # Format (version 1)
//! A Parquet file whose key-value metadata holds
//! `trailwatch.segment.version = "1"`; readers refuse other versions.

use std::sync::Arc;

use arrow_array::RecordBatch;
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

const VERSION_KEY: &str = "trailwatch.segment.version";
const VERSION: &str = "1";

/// Segment encoding failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SegmentError {
    /// Parquet or Arrow failed.
    #[error("segment {path}: {message}")]
    Format {
        /// Segment path (or `<new>`).
        path: String,
        /// Cause.
        message: String,
    },
    /// A segment written by an unknown version.
    #[error("segment {path}: unsupported segment version {found:?}")]
    Version {
        /// Segment path.
        path: String,
        /// The version found.
        found: Option<String>,
    },
}

/// What the catalog records about one segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentMeta {
    /// Object path.
    pub path: String,
    /// Partition prefix the segment belongs to (retention drops whole partitions).
    pub partition: String,
    /// Row count.
    pub rows: u64,
    /// Encoded size.
    pub bytes: u64,
    /// Smallest WAL sequence number of the rows.
    pub min_seq: u64,
    /// Largest WAL sequence number of the rows.
    pub max_seq: u64,
    /// Smallest row time, epoch ms.
    pub min_time_ms: i64,
    /// Largest row time, epoch ms.
    pub max_time_ms: i64,
}

/// Encodes a batch as a version-1 segment.
pub fn encode(batch: &RecordBatch, row_group_rows: usize) -> Result<Vec<u8>, SegmentError> {
    let err = |e: parquet::errors::ParquetError| SegmentError::Format {
        path: "<new>".to_owned(),
        message: e.to_string(),
    };
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).map_err(err)?))
        .set_max_row_group_size(row_group_rows.max(1))
        .set_key_value_metadata(Some(vec![KeyValue::new(
            VERSION_KEY.to_owned(),
            VERSION.to_owned(),
        )]))
        .build();
    let mut out = Vec::new();
    let mut writer =
        ArrowWriter::try_new(&mut out, batch.schema(), Some(properties)).map_err(err)?;
    writer.write(batch).map_err(err)?;
    writer.close().map_err(err)?;
    Ok(out)
}

/// Decodes a segment, reading only the named columns (all when `None`).
pub fn decode(
    path: &str,
    bytes: Bytes,
    columns: Option<&[&str]>,
) -> Result<Vec<RecordBatch>, SegmentError> {
    let err = |message: String| SegmentError::Format {
        path: path.to_owned(),
        message,
    };
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| err(e.to_string()))?;
    let version = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == VERSION_KEY))
        .and_then(|k| k.value.clone());
    if version.as_deref() != Some(VERSION) {
        return Err(SegmentError::Version {
            path: path.to_owned(),
            found: version,
        });
    }
    let builder = match columns {
        Some(names) => {
            let schema = builder.parquet_schema();
            let indices: Vec<usize> = names
                .iter()
                .map(|n| {
                    schema
                        .columns()
                        .iter()
                        .position(|c| c.name() == *n)
                        .ok_or_else(|| err(format!("no column {n}")))
                })
                .collect::<Result<_, _>>()?;
            let mask = ProjectionMask::leaves(schema, indices);
            builder.with_projection(mask)
        }
        None => builder,
    };
    let reader = builder.build().map_err(|e| err(e.to_string()))?;
    reader.map(|b| b.map_err(|e| err(e.to_string()))).collect()
}

/// Convenience for tests and callers building schemas.
pub fn schema_ref(fields: Vec<arrow_schema::Field>) -> Arc<arrow_schema::Schema> {
    Arc::new(arrow_schema::Schema::new(fields))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Array, Int64Array, StringArray};
    use arrow_schema::{DataType, Field};

    #[test]
    fn round_trip_with_projection_and_version_check() {
        let schema = schema_ref(vec![
            Field::new("t", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
        ]);
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec![Some("a"), None, Some("c")])),
            ],
        )
        .unwrap();
        let bytes = encode(&batch, 2).unwrap();
        let all = decode("x", Bytes::from(bytes.clone()), None).unwrap();
        assert_eq!(all.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
        let only_s = decode("x", Bytes::from(bytes), Some(&["s"])).unwrap();
        assert_eq!(only_s[0].num_columns(), 1);
        let s = only_s[0]
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert!(s.is_null(1));

        // A plain Parquet file without our version is refused.
        let mut plain = Vec::new();
        let mut w = ArrowWriter::try_new(&mut plain, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        assert!(matches!(
            decode("p", Bytes::from(plain), None),
            Err(SegmentError::Version { .. })
        ));
        assert!(decode("junk", Bytes::from_static(b"not parquet"), None).is_err());
    }
}
