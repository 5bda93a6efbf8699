//! CloudWatch metrics (`spec/cloudwatch.md` §2–3): the metric data model,
//! PutMetricData validation, and the durable metric store with ListMetrics.
//!
//! - [`model`]: metric identities, units, samples and the validation of a
//!   PutMetricData request into datums (all-or-nothing, in the spec's order).
//! - [`chart`]: draws GetMetricWidgetImage charts as PNG (plotters, embedded font).
//! - [`data`]: GetMetricData for MetricStat queries, paginated by datapoints.
//! - [`insights`]: Metrics Insights SQL: parsing and aggregation.
//! - [`labels`]: dynamic labels of GetMetricData.
//! - [`math`]: the metric math language: parser and evaluator.
//! - [`get`]: GetMetricStatistics: validation, period rules, bucketing.
//! - [`search`]: SEARCH expressions: parsing and metric matching.
//! - [`stats`]: basic and extended statistics of one bucket, exact.
//! - [`widget`]: GetMetricWidgetImage's `MetricWidget`: parsing, shorthands,
//!   the GetMetricData plan behind a chart, and fetching its series.
//! - [`store`]: datums become durable through their own WAL before the 2xx and
//!   are kept per (account, region) series; ListMetrics reads the identities.

pub mod chart;
pub mod data;
pub mod get;
pub mod insights;
pub mod labels;
pub mod math;
pub mod model;
pub mod search;
pub mod stats;
pub mod store;
pub mod widget;

pub use data::{plan as plan_data, DataQueryInput, DataRequest, DataResult, MetricStatInput};
pub use get::{compute, validate_statistics, Datapoint, StatisticsQuery, StatisticsRequest};
pub use model::{
    validate_put, DatumInput, Dimension, MetricId, MetricsError, PutRequest, Sample, Unit,
    ValidatedDatum,
};
pub use store::{ListMetricsPage, ListMetricsQuery, MetricStore};
