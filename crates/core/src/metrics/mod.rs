//! CloudWatch metrics (`spec/cloudwatch.md` §2–3): the metric data model,
//! PutMetricData validation, and the durable metric store with ListMetrics.
//!
//! - [`codec`]: the compact block encoding of raw points.
//! - [`model`]: metric identities, units, samples and the validation of a
//!   PutMetricData request into datums (all-or-nothing, in the spec's order).
//! - [`chart`]: draws GetMetricWidgetImage charts as PNG (plotters, embedded font).
//! - [`data`]: GetMetricData for MetricStat queries, paginated by datapoints.
//! - [`insights`]: Metrics Insights SQL: parsing and aggregation.
//! - [`labels`]: dynamic labels of GetMetricData.
//! - [`math`]: the metric math language: parser and evaluator.
//! - [`get`]: GetMetricStatistics: validation, period rules, bucketing.
//! - [`search`]: SEARCH expressions: parsing and metric matching.
//! - [`segments`]: metric segment objects (raw blocks and tier summaries).
//! - [`stats`]: basic and extended statistics of one bucket, exact.
//! - [`store`]: datums become durable through their own WAL before the 2xx,
//!   then move into segments, compacted per day and folded down the tiers.
//! - [`summary`]: rolled-up buckets with exact or sketched distributions.
//! - [`tiers`]: one series across the retention tiers, and answering a query.
//! - [`widget`]: GetMetricWidgetImage's `MetricWidget`: parsing, shorthands,
//!   the GetMetricData plan behind a chart, and fetching its series.

pub mod chart;
pub mod codec;
pub mod data;
pub mod get;
pub mod insights;
pub mod labels;
pub mod math;
pub mod model;
pub mod search;
pub mod segments;
pub mod stats;
pub mod store;
pub mod summary;
pub mod tiers;
pub mod widget;

pub use data::{plan as plan_data, DataQueryInput, DataRequest, DataResult, MetricStatInput};
pub use get::{
    compute, render, validate_statistics, Datapoint, StatisticsQuery, StatisticsRequest,
};
pub use model::{
    validate_put, DatumInput, Dimension, MetricId, MetricsError, PutRequest, Sample, Unit,
    ValidatedDatum,
};
pub use store::{ListMetricsPage, ListMetricsQuery, MaintenanceReport, MetricStore};
