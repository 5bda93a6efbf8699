//! Domain services of trailwatch, free of HTTP and wire formats.
//!
//! - [`identity`]: accounts, access keys and the principals they stand for.
//! - [`alarms`]: CloudWatch metric alarms: PutMetricAlarm validation, the
//!   stored alarm record and its history, the Describe filters.
//! - [`audit`]: the CloudTrail record of every call, its classification, its
//!   durable store and LookupEvents over it.
//! - [`dashboards`]: CloudWatch dashboards, validated and kept in the catalog.
//! - [`metrics`]: CloudWatch metric data: PutMetricData validation, the durable
//!   metric store, ListMetrics, GetMetricData and metric widget images.
//! - [`tags`]: resource tags in the catalog.
//!
//! Invariants: services read time only through `trailwatch_types::Clock`; every
//! durable write goes through the storage WAL; nothing here names an HTTP type.

pub mod alarms;
pub mod audit;
pub mod dashboards;
pub mod identity;
pub mod logs;
pub mod metrics;
pub mod tags;
pub mod token;
