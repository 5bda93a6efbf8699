//! Durable storage for trailwatch: the write-ahead log ([`wal`]) through which
//! every acknowledged write passes before its 2xx, the transactional
//! [`catalog`] of metadata, the [`objects`] store, and immutable Parquet
//! [`segment`]s written from the WAL and dropped by partition.
//!
//! This crate never names an AWS concept: it stores opaque payloads with
//! sequence numbers. It must not depend on `trailwatch-protocol`.

pub mod catalog;
pub mod objects;
pub mod segment;
pub mod wal;

pub use catalog::{Catalog, CatalogError, CatalogOp, MemoryCatalog, SqliteCatalog};
pub use objects::{ObjectEntry, ObjectError, Objects};
pub use segment::{SegmentError, SegmentMeta};
pub use wal::{Recovery, TornTail, Wal, WalError, WalOptions};
