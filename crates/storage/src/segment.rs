//! Immutable segments: Apache Parquet files (zstd) holding one Arrow record
//! batch's rows, sorted by the caller, plus the metadata the catalog keeps about
//! each. Open formats let users read their own data with DuckDB or pandas.
//!
//! # Format (version 1)
//! A Parquet file whose key-value metadata holds
//! `trailwatch.segment.version = "1"`; readers refuse other versions. Pages hold
//! at most [`PAGE_ROWS`] rows and the page index is written, so a reader that
//! wants a few rows ([`SegmentReader::read_rows`]) fetches and decodes only the
//! pages that hold them.

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
/// Rows per data page: small pages make single-row reads cheap.
pub const PAGE_ROWS: usize = 128;
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

/// Encodes a batch as a version-1 segment. Columns named in `unique_columns`
/// hold (nearly) distinct values: they get no dictionary, which would only grow
/// until it spills and make every row read decode it.
pub fn encode(
    batch: &RecordBatch,
    row_group_rows: usize,
    unique_columns: &[&str],
) -> Result<Vec<u8>, SegmentError> {
    let err = |e: parquet::errors::ParquetError| SegmentError::Format {
        path: "<new>".to_owned(),
        message: e.to_string(),
    };
    let mut properties = WriterProperties::builder();
    for column in unique_columns {
        properties = properties.set_column_dictionary_enabled(
            parquet::schema::types::ColumnPath::from(*column),
            false,
        );
    }
    let properties = properties
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).map_err(err)?))
        .set_max_row_group_size(row_group_rows.max(1))
        .set_data_page_row_count_limit(PAGE_ROWS)
        // Chunk-level statistics: the offset index (page locations) is all row reads
        // need, and per-page min/max would multiply the footer's size.
        .set_statistics_enabled(parquet::file::properties::EnabledStatistics::Chunk)
        .set_write_batch_size(PAGE_ROWS)
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

/// Refuses segments written by another format version.
fn check_version(
    path: &str,
    metadata: &parquet::file::metadata::ParquetMetaData,
) -> Result<(), SegmentError> {
    let version = metadata
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == VERSION_KEY))
        .and_then(|k| k.value.clone());
    if version.as_deref() == Some(VERSION) {
        Ok(())
    } else {
        Err(SegmentError::Version {
            path: path.to_owned(),
            found: version,
        })
    }
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
    check_version(path, builder.metadata())?;
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

/// A segment opened for row reads: its footer and page index, fetched once.
#[derive(Debug, Clone)]
pub struct SegmentReader {
    path: String,
    metadata: parquet::arrow::arrow_reader::ArrowReaderMetadata,
}

impl SegmentReader {
    /// Fetches the footer and page index of the segment at `path`.
    pub async fn open(objects: &crate::Objects, path: &str) -> Result<Self, SegmentError> {
        let err = |message: String| SegmentError::Format {
            path: path.to_owned(),
            message,
        };
        let mut reader = parquet::arrow::async_reader::ParquetObjectReader::new(
            objects.store(),
            object_store::path::Path::from(path),
        );
        let options = parquet::arrow::arrow_reader::ArrowReaderOptions::new().with_page_index(true);
        let metadata =
            parquet::arrow::arrow_reader::ArrowReaderMetadata::load_async(&mut reader, options)
                .await
                .map_err(|e| err(e.to_string()))?;
        check_version(path, metadata.metadata())?;
        Ok(Self {
            path: path.to_owned(),
            metadata,
        })
    }

    /// Values of the UTF-8 column `column` at `rows` (ascending, distinct), in that order.
    pub async fn read_rows(
        &self,
        objects: &crate::Objects,
        column: &str,
        rows: &[u32],
    ) -> Result<Vec<String>, SegmentError> {
        use futures::TryStreamExt;
        use parquet::arrow::arrow_reader::{RowSelection, RowSelector};
        let err = |message: String| SegmentError::Format {
            path: self.path.clone(),
            message,
        };
        if rows.windows(2).any(|w| w[0] >= w[1]) {
            return Err(err("rows must be ascending and distinct".to_owned()));
        }
        let total = self.metadata.metadata().file_metadata().num_rows() as u64;
        if rows.last().is_some_and(|r| u64::from(*r) >= total) {
            return Err(err(format!("row out of range (segment has {total})")));
        }
        let mut selectors = Vec::new();
        let mut next = 0u32;
        for &row in rows {
            if row > next {
                selectors.push(RowSelector::skip((row - next) as usize));
            }
            selectors.push(RowSelector::select(1));
            next = row + 1;
        }
        let schema = self.metadata.metadata().file_metadata().schema_descr();
        let index = schema
            .columns()
            .iter()
            .position(|c| c.name() == column)
            .ok_or_else(|| err(format!("no column {column}")))?;
        let reader = parquet::arrow::async_reader::ParquetObjectReader::new(
            objects.store(),
            object_store::path::Path::from(self.path.as_str()),
        );
        let mask = ProjectionMask::leaves(schema, [index]);
        let stream = parquet::arrow::ParquetRecordBatchStreamBuilder::new_with_metadata(
            reader,
            self.metadata.clone(),
        )
        .with_projection(mask)
        .with_row_selection(RowSelection::from(selectors))
        .build()
        .map_err(|e| err(e.to_string()))?;
        let batches: Vec<RecordBatch> =
            stream.try_collect().await.map_err(|e| err(e.to_string()))?;
        let mut out = Vec::with_capacity(rows.len());
        for batch in &batches {
            let values = batch
                .column(0)
                .as_any()
                .downcast_ref::<arrow_array::StringArray>()
                .ok_or_else(|| err(format!("column {column} is not UTF-8")))?;
            out.extend((0..arrow_array::Array::len(values)).map(|i| values.value(i).to_owned()));
        }
        if out.len() != rows.len() {
            return Err(err(format!(
                "read {} rows, wanted {}",
                out.len(),
                rows.len()
            )));
        }
        Ok(out)
    }
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
        let bytes = encode(&batch, 2, &[]).unwrap();
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

    #[tokio::test]
    async fn reads_single_rows_through_the_page_index() {
        let dir = tempfile::tempdir().unwrap();
        // The same ranged reads against a directory and an in-memory store.
        for objects in [
            crate::Objects::local(dir.path()).unwrap(),
            crate::Objects::memory(),
        ] {
            read_rows_from(objects).await;
        }
    }

    async fn read_rows_from(objects: crate::Objects) {
        let n = 5000i64;
        let schema = schema_ref(vec![
            Field::new("t", DataType::Int64, false),
            Field::new("s", DataType::Utf8, false),
        ]);
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(0..n)),
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("row-{i}")),
                )),
            ],
        )
        .unwrap();
        objects
            .put_durable(
                "seg/a.parquet",
                Bytes::from(encode(&batch, 1024, &["s"]).unwrap()),
            )
            .await
            .unwrap();
        let reader = SegmentReader::open(&objects, "seg/a.parquet")
            .await
            .unwrap();
        let rows = [0u32, 1, 127, 128, 1023, 1024, 4097, 4999];
        let values = reader.read_rows(&objects, "s", &rows).await.unwrap();
        assert_eq!(
            values,
            rows.iter().map(|r| format!("row-{r}")).collect::<Vec<_>>()
        );
        assert!(reader.read_rows(&objects, "s", &[5000]).await.is_err());
        assert!(reader.read_rows(&objects, "s", &[3, 2]).await.is_err());
        assert!(reader.read_rows(&objects, "nope", &[1]).await.is_err());
        assert!(reader
            .read_rows(&objects, "s", &[])
            .await
            .unwrap()
            .is_empty());
    }
}
