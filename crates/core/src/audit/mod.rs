//! CloudTrail's first promise: every call to trailwatch leaves a record
//! (`spec/cloudtrail.md` §1, §4, §8).
//!
//! - [`classify`]: the static per-operation table (readOnly, category).
//! - [`record`]: builds the eventVersion 1.11 JSON record of one call.
//! - [`store`]: makes records durable through the WAL and serves LookupEvents.

pub mod classify;
pub mod record;
pub mod store;

pub use classify::{classify_operation, EventCategory, OperationClass};
pub use record::{CallRecord, Resource, PAYLOAD_FIELD_LIMIT};
pub use store::{
    AuditError, AuditOptions, AuditStore, Body, FeedEntry, FoundEvent, LookupAttribute,
    LookupError, LookupPage, LookupQuery, StoredEvent,
};
/// A catalog change committed together with the record of the call that made it.
pub use trailwatch_storage::CatalogOp as Change;
