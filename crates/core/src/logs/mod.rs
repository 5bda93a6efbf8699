//! CloudWatch Logs (`spec/logs.md`): log groups and streams, retention, event
//! ingestion and reads.
//!
//! - [`blocks`]: the segment format: blocks with a directory and trigram
//!   filters, so reads fetch and decode only the blocks they need.
//! - [`definitions`]: Logs Insights query definitions in the catalog.
//! - [`export`]: export tasks and the object layout they write.
//! - [`insights`]: Logs Insights: the query language, records and evaluation.
//! - [`filters`]: metric filters: validation and the samples they emit.
//! - [`model`]: names, ARNs, retention values and the service's errors.
//! - [`pattern`]: the filter pattern language (term patterns so far).
//! - [`queries`]: Logs Insights queries and their results, kept 7 days.
//! - [`store`]: groups and streams in the catalog (committed with the call's
//!   audit record), events durable in their own WAL before PutLogEvents
//!   answers, and GetLogEvents / FilterLogEvents over them.
//! - [`subscriptions`]: subscription filters, destinations, and the payload.

pub mod blocks;
pub mod definitions;
pub mod export;
pub mod filters;
pub mod insights;
pub mod model;
pub mod pattern;
pub mod queries;
pub mod store;
pub mod subscriptions;

pub use model::LogsError;
pub use store::LogStore;
