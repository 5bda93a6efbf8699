//! CloudWatch metrics (`spec/cloudwatch.md` §2–3): the metric data model,
//! PutMetricData validation, and the durable metric store with ListMetrics.
//!
//! - [`model`]: metric identities, units, samples and the validation of a
//!   PutMetricData request into datums (all-or-nothing, in the spec's order).
//! - [`store`]: datums become durable through their own WAL before the 2xx and
//!   are kept per (account, region) series; ListMetrics reads the identities.

pub mod model;
pub mod store;

pub use model::{
    validate_put, DatumInput, Dimension, MetricId, MetricsError, PutRequest, Sample, Unit,
    ValidatedDatum,
};
pub use store::{ListMetricsPage, ListMetricsQuery, MetricStore};
