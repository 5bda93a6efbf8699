//! Domain services of trailwatch, free of HTTP and wire formats.
//!
//! - [`identity`]: accounts, access keys and the principals they stand for.
//! - [`actions`]: alarm transitions and the actions they run.
//! - [`alarms`]: CloudWatch metric alarms: PutMetricAlarm validation, the
//!   stored alarm record and its history, the Describe filters.
//! - [`audit`]: the CloudTrail record of every call, its classification, its
//!   durable store and LookupEvents over it.
//! - [`buckets`]: S3-style buckets over the object store: registration, name
//!   rules, objects with metadata, listings (the S3 facade and trail delivery).
//! - [`anomaly`]: the anomaly detection band model (trailwatch's own).
//! - [`composites`]: composite alarms: validation, records, cascades, suppression.
//! - [`composite`]: composite alarm rules: grammar, limits, evaluation.
//! - [`dashboards`]: CloudWatch dashboards, validated and kept in the catalog.
//! - [`digest`]: CloudTrail log and digest file keys and bytes, the per-region
//!   digest signing keys, and the stricter digest chain verifier.
//! - [`detectors`]: CloudWatch metric anomaly detectors: validation and catalog storage.
//! - [`engine`]: the alarm evaluation engine: cadences, watermarks, reads, decisions.
//! - [`evaluation`]: alarm state decisions, reasons and reason data.
//! - [`insights`]: CloudTrail Insights: per-API minute counts, baselines, Start/End events.
//! - [`lake`]: CloudTrail Lake: event data stores, channels, external audit events.
//! - [`lake_sql`]: SQL over event data stores, run by DataFusion.
//! - [`metrics`]: CloudWatch metric data: PutMetricData validation, the durable
//!   metric store, ListMetrics, GetMetricData and metric widget images.
//! - [`sns`]: the SNS subset: topics and http(s) subscriptions in the catalog,
//!   message envelopes and their SignatureVersion 2 signatures.
//! - [`suppression`]: composite alarm action suppression.
//! - [`tags`]: resource tags in the catalog.
//! - [`trails`]: CloudTrail trails: validation, event selectors, delivery state.
//!
//! Invariants: services read time only through `trailwatch_types::Clock`; every
//! durable write goes through the storage WAL; nothing here names an HTTP type.

pub mod actions;
pub mod alarms;
pub mod anomaly;
pub mod audit;
pub mod buckets;
pub mod composite;
pub mod composites;
pub mod dashboards;
pub mod detectors;
pub mod digest;
pub mod engine;
pub mod evaluation;
pub mod identity;
pub mod insights;
pub mod lake;
pub mod lake_sql;
pub mod logs;
pub mod metrics;
pub mod sns;
pub mod suppression;
pub mod tags;
pub mod token;
pub mod trails;
