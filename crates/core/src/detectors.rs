//! CloudWatch metric anomaly detectors (`spec/cloudwatch.md` §9.1):
//! PutAnomalyDetector validation of the three input forms (legacy top-level,
//! `SingleMetricAnomalyDetector`, `MetricMathAnomalyDetector`), the stored
//! detector, the DescribeAnomalyDetectors filters and the catalog changes.
//! The band model itself lives in [`crate::anomaly`].
//!
//! Writes are not applied here: the `*_changes` functions return the catalog
//! changes, which the caller commits with the call's audit record.
//!
//! # Catalog layout (version 1)
//! Table `anomaly_detectors`, key `{account}/{region}/{id}`, value JSON of
//! [`Detector`]. The id is derived from the identity (a SHA-256 of its
//! canonical JSON), so the same identity always names the same row.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use trailwatch_storage::{Catalog, CatalogOp};

use crate::metrics::stats::parse_extended;

const TABLE: &str = "anomaly_detectors";
/// Detectors per account and region.
pub const QUOTA: usize = 500;
const STATISTICS: [&str; 5] = ["SampleCount", "Average", "Sum", "Minimum", "Maximum"];

/// Anomaly detector failures; each is a modelled CloudWatch error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetectorError {
    /// `InvalidParameterValue`.
    #[error("{0}")]
    InvalidParameterValue(String),
    /// `InvalidParameterCombination`.
    #[error("{0}")]
    InvalidParameterCombination(String),
    /// `MissingParameter`.
    #[error("{0}")]
    MissingParameter(String),
    /// `LimitExceeded`.
    #[error("{0}")]
    LimitExceeded(String),
    /// `ResourceNotFoundException`.
    #[error("{0}")]
    NotFound(String),
    /// The catalog failed.
    #[error("anomaly detector storage failed: {0}")]
    Storage(String),
}

fn invalid(m: impl Into<String>) -> DetectorError {
    DetectorError::InvalidParameterValue(m.into())
}

fn missing(p: &str) -> DetectorError {
    DetectorError::MissingParameter(format!("The parameter {p} is required."))
}

/// A dimension as received: name and value may be absent.
pub type RawDimension = (Option<String>, Option<String>);

/// The single-metric members as received (legacy or nested form).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SingleInput {
    /// `AccountId` (nested form only).
    pub account_id: Option<String>,
    /// `Namespace`.
    pub namespace: Option<String>,
    /// `MetricName`.
    pub metric_name: Option<String>,
    /// `Dimensions`.
    pub dimensions: Vec<RawDimension>,
    /// `Stat`.
    pub stat: Option<String>,
}

impl SingleInput {
    fn is_empty(&self) -> bool {
        self.account_id.is_none()
            && self.namespace.is_none()
            && self.metric_name.is_none()
            && self.dimensions.is_empty()
            && self.stat.is_none()
    }
}

/// A `MetricStat` as received.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricStatInput {
    /// `Metric.Namespace`.
    pub namespace: Option<String>,
    /// `Metric.MetricName`.
    pub metric_name: Option<String>,
    /// `Metric.Dimensions`.
    pub dimensions: Vec<RawDimension>,
    /// `Period`.
    pub period: Option<i64>,
    /// `Stat`.
    pub stat: Option<String>,
    /// `Unit`.
    pub unit: Option<String>,
}

/// A `MetricDataQuery` as received.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryInput {
    /// `Id`.
    pub id: Option<String>,
    /// `MetricStat`.
    pub metric_stat: Option<MetricStatInput>,
    /// `Expression`.
    pub expression: Option<String>,
    /// `Label`.
    pub label: Option<String>,
    /// `ReturnData`.
    pub return_data: Option<bool>,
    /// `Period`.
    pub period: Option<i64>,
    /// `AccountId`.
    pub account_id: Option<String>,
}

/// `Configuration` as received.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigurationInput {
    /// `ExcludedTimeRanges` (start, end) epoch ms; a missing bound is `None`.
    pub excluded_time_ranges: Vec<(Option<i64>, Option<i64>)>,
    /// `MetricTimezone`.
    pub metric_timezone: Option<String>,
    /// `AdaptationSpeed`.
    pub adaptation_speed: Option<String>,
    /// `OutlierFilteringStrength`.
    pub outlier_filtering_strength: Option<String>,
}

/// PutAnomalyDetector as received.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PutInput {
    /// The legacy top-level `Namespace/MetricName/Dimensions/Stat`.
    pub legacy: SingleInput,
    /// `SingleMetricAnomalyDetector`.
    pub single: Option<SingleInput>,
    /// `MetricMathAnomalyDetector.MetricDataQueries`.
    pub math: Option<Vec<QueryInput>>,
    /// `Configuration`.
    pub configuration: Option<ConfigurationInput>,
    /// `MetricCharacteristics.PeriodicSpikes`; outer `Some` when the structure is present.
    pub periodic_spikes: Option<Option<bool>>,
}

/// A single metric and statistic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SingleMetric {
    /// `AccountId`, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// `Namespace`.
    pub namespace: String,
    /// `MetricName`.
    pub metric_name: String,
    /// `Dimensions`, sorted by name.
    pub dimensions: Vec<(String, String)>,
    /// `Stat`.
    pub stat: String,
}

/// A validated `MetricStat`: the shape alarms store too.
pub type MetricStat = crate::alarms::AlarmMetricStat;

/// A validated `MetricDataQuery`: the shape alarms store too.
pub type Query = crate::alarms::AlarmQuery;

/// What a detector watches; its identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Target {
    /// `SINGLE_METRIC`.
    Single(SingleMetric),
    /// `METRIC_MATH`.
    Math {
        /// `MetricDataQueries`.
        queries: Vec<Query>,
    },
}

impl Target {
    /// The `AnomalyDetectorType` wire value.
    pub fn type_name(&self) -> &'static str {
        match self {
            Target::Single(_) => "SINGLE_METRIC",
            Target::Math { .. } => "METRIC_MATH",
        }
    }

    /// The deterministic `AnomalyDetectorId` of this identity.
    pub fn id(&self) -> String {
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        let digest = Sha256::digest(&canonical);
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!("ad-{hex}")
    }
}

/// A validated `Configuration`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Configuration {
    /// `ExcludedTimeRanges` (start, end) epoch ms.
    pub excluded_time_ranges: Vec<(i64, i64)>,
    /// `MetricTimezone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_timezone: Option<String>,
    /// `AdaptationSpeed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptation_speed: Option<String>,
    /// `OutlierFilteringStrength`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_filtering_strength: Option<String>,
}

/// A stored detector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detector {
    /// Format version.
    pub v: u8,
    /// `AnomalyDetectorId`.
    pub id: String,
    /// What it watches.
    pub target: Target,
    /// `Configuration`, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<Configuration>,
    /// `MetricCharacteristics`, when given: `PeriodicSpikes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub periodic_spikes: Option<Option<bool>>,
}

fn check_len(value: &str, member: &str, max: usize) -> Result<(), DetectorError> {
    let n = value.chars().count();
    if n == 0 || n > max {
        return Err(invalid(format!(
            "The parameter {member} must be between 1 and {max} characters long."
        )));
    }
    Ok(())
}

/// The training settings of single-metric detectors, for
/// [`crate::metrics::data::DataPlan::with_band_training`].
pub fn band_training(detectors: &[Detector]) -> Vec<crate::metrics::data::BandTraining> {
    use crate::metrics::model::MetricId;
    detectors
        .iter()
        .filter_map(|d| match &d.target {
            Target::Single(m) => Some(crate::metrics::data::BandTraining {
                metric: MetricId::from_pairs(&m.namespace, &m.metric_name, &m.dimensions),
                stat: m.stat.clone(),
                excluded: d
                    .configuration
                    .as_ref()
                    .map(|c| c.excluded_time_ranges.clone())
                    .unwrap_or_default(),
                timezone: d
                    .configuration
                    .as_ref()
                    .and_then(|c| c.metric_timezone.clone()),
            }),
            Target::Math { .. } => None,
        })
        .collect()
}

/// Validates dimensions: at most 30, names 1–255, values 1–1024; sorted by name.
pub fn dimensions(
    raw: &[RawDimension],
    parameter: &str,
) -> Result<Vec<(String, String)>, DetectorError> {
    if raw.len() > 30 {
        return Err(invalid(format!(
            "The collection {parameter} must not have a size greater than 30."
        )));
    }
    let mut out = Vec::with_capacity(raw.len());
    for (i, (name, value)) in raw.iter().enumerate() {
        let n = i + 1;
        let name = name
            .clone()
            .ok_or_else(|| missing(&format!("{parameter}.member.{n}.Name")))?;
        let value = value
            .clone()
            .ok_or_else(|| missing(&format!("{parameter}.member.{n}.Value")))?;
        check_len(&name, &format!("{parameter}.member.{n}.Name"), 255)?;
        check_len(&value, &format!("{parameter}.member.{n}.Value"), 1024)?;
        if out.iter().any(|(o, _): &(String, String)| *o == name) {
            return Err(invalid(format!(
                "The collection {parameter} must not contain duplicate dimension names."
            )));
        }
        out.push((name, value));
    }
    out.sort();
    Ok(out)
}

/// Whether `stat` is a statistic of §4.2: one of the five names or an
/// extended statistic (percentile, trimmed mean, …).
pub fn valid_stat(stat: &str) -> bool {
    STATISTICS.contains(&stat) || parse_extended(stat).is_some()
}

fn check_stat(stat: &Option<String>, parameter: &str) -> Result<String, DetectorError> {
    let stat = stat.clone().ok_or_else(|| missing(parameter))?;
    if stat.chars().count() > 100 || !valid_stat(&stat) {
        return Err(invalid(format!(
            "The value {stat} for parameter {parameter} is invalid."
        )));
    }
    Ok(stat)
}

fn single(input: &SingleInput, prefix: &str) -> Result<SingleMetric, DetectorError> {
    let namespace = input
        .namespace
        .clone()
        .ok_or_else(|| missing(&format!("{prefix}Namespace")))?;
    check_len(&namespace, &format!("{prefix}Namespace"), 255)?;
    let metric_name = input
        .metric_name
        .clone()
        .ok_or_else(|| missing(&format!("{prefix}MetricName")))?;
    check_len(&metric_name, &format!("{prefix}MetricName"), 255)?;
    if let Some(a) = &input.account_id {
        check_len(a, &format!("{prefix}AccountId"), 255)?;
    }
    Ok(SingleMetric {
        account_id: input.account_id.clone(),
        namespace,
        metric_name,
        dimensions: dimensions(&input.dimensions, &format!("{prefix}Dimensions"))?,
        stat: check_stat(&input.stat, &format!("{prefix}Stat"))?,
    })
}

fn query_id_valid(id: &str) -> bool {
    let mut bytes = id.bytes();
    id.len() <= 255
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn math(raw: &[QueryInput]) -> Result<Vec<Query>, DetectorError> {
    const P: &str = "MetricMathAnomalyDetector.MetricDataQueries";
    if raw.is_empty() {
        return Err(missing(P));
    }
    let mut out: Vec<Query> = Vec::with_capacity(raw.len());
    let mut period = None;
    for (i, q) in raw.iter().enumerate() {
        let n = i + 1;
        let id =
            q.id.clone()
                .ok_or_else(|| missing(&format!("{P}.member.{n}.Id")))?;
        if !query_id_valid(&id) {
            return Err(invalid(format!(
                "The value {id} for parameter {P}.member.{n}.Id is invalid: it must start with a lowercase letter and contain only letters, numbers and underscores."
            )));
        }
        if out.iter().any(|o| o.id == id) {
            return Err(invalid(format!("The Id {id} is used more than once.")));
        }
        let metric_stat = match (&q.metric_stat, &q.expression) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(DetectorError::InvalidParameterCombination(format!(
                    "Exactly one of MetricStat or Expression must be specified in {P}.member.{n}."
                )))
            }
            (Some(s), None) => {
                let prefix = format!("{P}.member.{n}.MetricStat.");
                let m = single(
                    &SingleInput {
                        account_id: None,
                        namespace: s.namespace.clone(),
                        metric_name: s.metric_name.clone(),
                        dimensions: s.dimensions.clone(),
                        stat: s.stat.clone(),
                    },
                    &prefix,
                )?;
                let p = s
                    .period
                    .ok_or_else(|| missing(&format!("{prefix}Period")))?;
                if p < 60 || p % 60 != 0 {
                    return Err(invalid(format!(
                        "The parameter {prefix}Period must be a multiple of 60: anomaly detectors do not take high-resolution metrics."
                    )));
                }
                if period.is_some_and(|x| x != p) {
                    return Err(invalid(
                        "All metrics of a metric math anomaly detector must have the same period.",
                    ));
                }
                period = Some(p);
                if let Some(u) = &s.unit {
                    if crate::metrics::model::Unit::parse(u).is_none() {
                        return Err(invalid(format!(
                            "The value {u} for parameter {prefix}Unit is invalid."
                        )));
                    }
                }
                Some(MetricStat {
                    namespace: m.namespace,
                    metric_name: m.metric_name,
                    dimensions: m.dimensions,
                    period: p,
                    stat: m.stat,
                    unit: s.unit.clone(),
                })
            }
            (None, Some(e)) => {
                check_len(e, &format!("{P}.member.{n}.Expression"), 2048)?;
                let upper = e.to_ascii_uppercase();
                if upper.contains("SEARCH(") || upper.contains("METRICS(") {
                    return Err(invalid(
                        "Metric math anomaly detectors do not support SEARCH or METRICS() expressions.",
                    ));
                }
                None
            }
        };
        out.push(Query {
            id,
            metric_stat,
            expression: q.expression.clone(),
            label: q.label.clone(),
            return_data: q.return_data,
            period: q.period,
            account_id: q.account_id.clone(),
        });
    }
    if out.iter().filter(|q| q.metric_stat.is_some()).count() > 10 {
        return Err(invalid(
            "A metric math anomaly detector can use at most 10 metrics.",
        ));
    }
    // ReturnData defaults to true, as in GetMetricData.
    if out.iter().filter(|q| q.return_data != Some(false)).count() != 1 {
        return Err(invalid(
            "Exactly one element of MetricDataQueries must have ReturnData set to true.",
        ));
    }
    Ok(out)
}

fn timezone_valid(tz: &str) -> bool {
    // A tz database name: `UTC` or `Area/Location[/Sub]` of letters, digits, `_+-`.
    tz.len() <= 50
        && !tz.is_empty()
        && tz.split('/').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+'))
        })
        && tz.as_bytes()[0].is_ascii_uppercase()
}

fn configuration(c: &ConfigurationInput) -> Result<Configuration, DetectorError> {
    if c.excluded_time_ranges.len() > 10 {
        return Err(invalid(
            "The collection Configuration.ExcludedTimeRanges must not have a size greater than 10.",
        ));
    }
    let mut ranges = Vec::new();
    for (i, (start, end)) in c.excluded_time_ranges.iter().enumerate() {
        let p = format!("Configuration.ExcludedTimeRanges.member.{}", i + 1);
        let start = start.ok_or_else(|| missing(&format!("{p}.StartTime")))?;
        let end = end.ok_or_else(|| missing(&format!("{p}.EndTime")))?;
        if start >= end {
            return Err(invalid(format!(
                "The StartTime of {p} must be before its EndTime."
            )));
        }
        ranges.push((start, end));
    }
    if let Some(tz) = &c.metric_timezone {
        if !timezone_valid(tz) {
            return Err(invalid(format!(
                "The value {tz} for parameter Configuration.MetricTimezone is invalid."
            )));
        }
    }
    for (value, parameter, allowed) in [
        (
            &c.adaptation_speed,
            "Configuration.AdaptationSpeed",
            &["FAST", "NORMAL", "SLOW"],
        ),
        (
            &c.outlier_filtering_strength,
            "Configuration.OutlierFilteringStrength",
            &["MINIMAL", "MODERATE", "STRICT"],
        ),
    ] {
        if let Some(v) = value {
            if !allowed.contains(&v.as_str()) {
                return Err(invalid(format!(
                    "The value {v} for parameter {parameter} is invalid. Valid values: {}.",
                    allowed.join(", ")
                )));
            }
        }
    }
    Ok(Configuration {
        excluded_time_ranges: ranges,
        metric_timezone: c.metric_timezone.clone(),
        adaptation_speed: c.adaptation_speed.clone(),
        outlier_filtering_strength: c.outlier_filtering_strength.clone(),
    })
}

/// The identity named by the legacy, single or math members; exactly one form.
pub fn target(
    legacy: &SingleInput,
    single_form: Option<&SingleInput>,
    math_form: Option<&[QueryInput]>,
) -> Result<Target, DetectorError> {
    let forms = usize::from(!legacy.is_empty())
        + usize::from(single_form.is_some())
        + usize::from(math_form.is_some());
    if forms > 1 {
        return Err(DetectorError::InvalidParameterCombination(
            "Only one of the top-level Namespace/MetricName/Dimensions/Stat, SingleMetricAnomalyDetector or MetricMathAnomalyDetector may be specified.".to_owned(),
        ));
    }
    if let Some(q) = math_form {
        return Ok(Target::Math { queries: math(q)? });
    }
    if let Some(s) = single_form {
        return Ok(Target::Single(single(s, "SingleMetricAnomalyDetector.")?));
    }
    if legacy.is_empty() {
        return Err(missing("SingleMetricAnomalyDetector"));
    }
    Ok(Target::Single(single(legacy, "")?))
}

/// Validates PutAnomalyDetector.
pub fn validate_put(input: &PutInput) -> Result<Detector, DetectorError> {
    let target = target(&input.legacy, input.single.as_ref(), input.math.as_deref())?;
    let configuration = input
        .configuration
        .as_ref()
        .map(configuration)
        .transpose()?;
    Ok(Detector {
        v: 1,
        id: target.id(),
        target,
        configuration,
        periodic_spikes: input.periodic_spikes,
    })
}

/// A metric's namespace, name and dimensions.
type MetricRef<'a> = (&'a str, &'a str, &'a [(String, String)]);

/// DescribeAnomalyDetectors filters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DescribeFilter {
    /// `AnomalyDetectorIds`.
    pub ids: Vec<String>,
    /// `Namespace`.
    pub namespace: Option<String>,
    /// `MetricName`.
    pub metric_name: Option<String>,
    /// `Dimensions` (every one must match).
    pub dimensions: Vec<(String, String)>,
    /// `AnomalyDetectorTypes`; empty means `SINGLE_METRIC`.
    pub types: Vec<String>,
}

impl DescribeFilter {
    /// Checks the combination and values.
    pub fn validate(&self) -> Result<(), DetectorError> {
        if self.ids.len() > 50 {
            return Err(invalid(
                "The collection AnomalyDetectorIds must not have a size greater than 50.",
            ));
        }
        if !self.ids.is_empty()
            && (self.namespace.is_some()
                || self.metric_name.is_some()
                || !self.dimensions.is_empty()
                || !self.types.is_empty())
        {
            return Err(DetectorError::InvalidParameterCombination(
                "AnomalyDetectorIds cannot be combined with Namespace, MetricName, Dimensions or AnomalyDetectorTypes.".to_owned(),
            ));
        }
        if self.types.len() > 2 {
            return Err(invalid(
                "The collection AnomalyDetectorTypes must not have a size greater than 2.",
            ));
        }
        for t in &self.types {
            if t != "SINGLE_METRIC" && t != "METRIC_MATH" {
                return Err(invalid(format!(
                    "The value {t} for parameter AnomalyDetectorTypes is invalid. Valid values: SINGLE_METRIC, METRIC_MATH."
                )));
            }
        }
        Ok(())
    }

    /// Whether `d` passes.
    pub fn matches(&self, d: &Detector) -> bool {
        if !self.ids.is_empty() {
            return self.ids.contains(&d.id);
        }
        let kind = d.target.type_name();
        let type_ok = if self.types.is_empty() {
            kind == "SINGLE_METRIC"
        } else {
            self.types.iter().any(|t| t == kind)
        };
        if !type_ok {
            return false;
        }
        let metrics: Vec<MetricRef<'_>> = match &d.target {
            Target::Single(s) => vec![(&s.namespace, &s.metric_name, &s.dimensions)],
            Target::Math { queries } => queries
                .iter()
                .filter_map(|q| q.metric_stat.as_ref())
                .map(|s| {
                    (
                        s.namespace.as_str(),
                        s.metric_name.as_str(),
                        &s.dimensions[..],
                    )
                })
                .collect(),
        };
        let no_metric_filter =
            self.namespace.is_none() && self.metric_name.is_none() && self.dimensions.is_empty();
        no_metric_filter
            || metrics.iter().any(|(ns, name, dims)| {
                self.namespace.as_deref().is_none_or(|n| n == *ns)
                    && self.metric_name.as_deref().is_none_or(|n| n == *name)
                    && self.dimensions.iter().all(|d| dims.contains(d))
            })
    }
}

/// Anomaly detectors of every account and region, in the catalog.
#[derive(Debug, Clone)]
pub struct Detectors {
    catalog: Arc<dyn Catalog>,
}

fn key(account: &str, region: &str, id: &str) -> String {
    format!("{account}/{region}/{id}")
}

fn storage(e: impl std::fmt::Display) -> DetectorError {
    DetectorError::Storage(e.to_string())
}

impl Detectors {
    /// Detectors stored in `catalog`.
    pub fn new(catalog: Arc<dyn Catalog>) -> Self {
        Self { catalog }
    }

    /// Every detector of `account` in `region`, by id.
    pub fn list(&self, account: &str, region: &str) -> Result<Vec<Detector>, DetectorError> {
        let rows = self
            .catalog
            .list(TABLE, &format!("{account}/{region}/"))
            .map_err(storage)?;
        let mut out = rows
            .iter()
            .map(|(_, v)| serde_json::from_slice::<Detector>(v).map_err(storage))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// The change that creates or updates `detector` (validated), refused
    /// past the quota for a new one.
    pub fn put_changes(
        &self,
        account: &str,
        region: &str,
        detector: &Detector,
    ) -> Result<Vec<CatalogOp>, DetectorError> {
        let k = key(account, region, &detector.id);
        let exists = self.catalog.get(TABLE, &k).map_err(storage)?.is_some();
        if !exists {
            let count = self
                .catalog
                .list(TABLE, &format!("{account}/{region}/"))
                .map_err(storage)?
                .len();
            if count >= QUOTA {
                return Err(DetectorError::LimitExceeded(format!(
                    "The maximum number of anomaly detectors ({QUOTA}) for this account and region has been reached."
                )));
            }
        }
        Ok(vec![CatalogOp::put(
            TABLE,
            k,
            serde_json::to_vec(detector).map_err(storage)?,
        )])
    }

    /// The change that deletes the detector of `target`.
    pub fn delete_changes(
        &self,
        account: &str,
        region: &str,
        target: &Target,
    ) -> Result<Vec<CatalogOp>, DetectorError> {
        let k = key(account, region, &target.id());
        if self.catalog.get(TABLE, &k).map_err(storage)?.is_none() {
            return Err(DetectorError::NotFound(
                "The anomaly detector does not exist.".to_owned(),
            ));
        }
        Ok(vec![CatalogOp::delete(TABLE, k)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trailwatch_storage::MemoryCatalog;

    fn legacy(stat: &str) -> SingleInput {
        SingleInput {
            account_id: None,
            namespace: Some("App".into()),
            metric_name: Some("Latency".into()),
            dimensions: vec![(Some("Host".into()), Some("a".into()))],
            stat: Some(stat.into()),
        }
    }

    fn stat_query(id: &str, ret: Option<bool>) -> QueryInput {
        QueryInput {
            id: Some(id.into()),
            metric_stat: Some(MetricStatInput {
                namespace: Some("App".into()),
                metric_name: Some("Latency".into()),
                period: Some(300),
                stat: Some("Average".into()),
                ..Default::default()
            }),
            return_data: ret,
            ..Default::default()
        }
    }

    #[test]
    fn forms_and_ids() {
        let a = validate_put(&PutInput {
            legacy: legacy("p90"),
            ..Default::default()
        })
        .unwrap();
        let b = validate_put(&PutInput {
            single: Some(legacy("p90")),
            ..Default::default()
        })
        .unwrap();
        // The legacy and nested forms name the same detector.
        assert_eq!(a.id, b.id);
        assert!(a.id.len() <= 128 && a.id.starts_with("ad-"));
        let c = validate_put(&PutInput {
            legacy: legacy("Average"),
            ..Default::default()
        })
        .unwrap();
        assert_ne!(a.id, c.id);
        let both = validate_put(&PutInput {
            legacy: legacy("p90"),
            single: Some(legacy("p90")),
            ..Default::default()
        });
        assert!(matches!(
            both,
            Err(DetectorError::InvalidParameterCombination(_))
        ));
        assert!(matches!(
            validate_put(&PutInput::default()),
            Err(DetectorError::MissingParameter(_))
        ));
        for bad in ["p101", "Avg", "", "TM(a:b)"] {
            assert!(
                matches!(
                    validate_put(&PutInput {
                        legacy: legacy(bad),
                        ..Default::default()
                    }),
                    Err(DetectorError::InvalidParameterValue(_))
                ),
                "{bad}"
            );
        }
        for good in ["SampleCount", "p99.9", "TM(10%:90%)", "TC(1:5)", "IQM"] {
            assert!(
                validate_put(&PutInput {
                    legacy: legacy(good),
                    ..Default::default()
                })
                .is_ok(),
                "{good}"
            );
        }
    }

    #[test]
    fn math_rules() {
        let expr = |id: &str, e: &str, ret: Option<bool>| QueryInput {
            id: Some(id.into()),
            expression: Some(e.into()),
            return_data: ret,
            ..Default::default()
        };
        let put = |q: Vec<QueryInput>| {
            validate_put(&PutInput {
                math: Some(q),
                ..Default::default()
            })
        };
        let ok = put(vec![
            stat_query("m1", Some(false)),
            expr("e1", "m1 * 2", Some(true)),
        ])
        .unwrap();
        assert_eq!(ok.target.type_name(), "METRIC_MATH");
        // Two returned series.
        assert!(put(vec![stat_query("m1", None), expr("e1", "m1 * 2", None)]).is_err());
        // None returned.
        assert!(put(vec![stat_query("m1", Some(false))]).is_err());
        assert!(put(vec![
            stat_query("m1", Some(false)),
            expr("e1", "SEARCH('{App} x', 'Average', 300)", Some(true)),
        ])
        .is_err());
        let mut many: Vec<QueryInput> = (0..11)
            .map(|i| stat_query(&format!("m{i}"), Some(false)))
            .collect();
        many.push(expr("e1", "SUM(METRICS())", Some(true)));
        assert!(put(many).is_err());
        let mut hi = stat_query("m1", None);
        hi.metric_stat.as_mut().unwrap().period = Some(10);
        assert!(put(vec![hi]).is_err());
        assert!(put(vec![stat_query("M1", None)]).is_err());
        let mixed = validate_put(&PutInput {
            legacy: legacy("Average"),
            math: Some(vec![stat_query("m1", None)]),
            ..Default::default()
        });
        assert!(matches!(
            mixed,
            Err(DetectorError::InvalidParameterCombination(_))
        ));
    }

    #[test]
    fn configurations() {
        let put = |c: ConfigurationInput| {
            validate_put(&PutInput {
                legacy: legacy("Average"),
                configuration: Some(c),
                ..Default::default()
            })
        };
        assert!(put(ConfigurationInput {
            excluded_time_ranges: vec![(Some(1), Some(2))],
            metric_timezone: Some("America/New_York".into()),
            adaptation_speed: Some("FAST".into()),
            outlier_filtering_strength: Some("STRICT".into()),
        })
        .is_ok());
        assert!(put(ConfigurationInput {
            excluded_time_ranges: vec![(Some(1), Some(2)); 11],
            ..Default::default()
        })
        .is_err());
        assert!(put(ConfigurationInput {
            excluded_time_ranges: vec![(Some(2), Some(1))],
            ..Default::default()
        })
        .is_err());
        assert!(put(ConfigurationInput {
            adaptation_speed: Some("QUICK".into()),
            ..Default::default()
        })
        .is_err());
        assert!(put(ConfigurationInput {
            metric_timezone: Some("not a zone".into()),
            ..Default::default()
        })
        .is_err());
    }

    #[test]
    fn filters_store_and_quota() {
        let catalog: Arc<dyn Catalog> = Arc::new(MemoryCatalog::default());
        let store = Detectors::new(catalog.clone());
        let d = validate_put(&PutInput {
            legacy: legacy("Average"),
            ..Default::default()
        })
        .unwrap();
        catalog
            .commit(&store.put_changes("1", "r", &d).unwrap())
            .unwrap();
        assert_eq!(store.list("1", "r").unwrap(), vec![d.clone()]);
        assert!(store.list("1", "other").unwrap().is_empty());
        let f = DescribeFilter {
            namespace: Some("App".into()),
            dimensions: vec![("Host".into(), "a".into())],
            ..Default::default()
        };
        assert!(f.validate().is_ok() && f.matches(&d));
        let math_only = DescribeFilter {
            types: vec!["METRIC_MATH".into()],
            ..Default::default()
        };
        assert!(!math_only.matches(&d));
        let bad = DescribeFilter {
            ids: vec![d.id.clone()],
            namespace: Some("App".into()),
            ..Default::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(DetectorError::InvalidParameterCombination(_))
        ));
        let ops = store.delete_changes("1", "r", &d.target).unwrap();
        catalog.commit(&ops).unwrap();
        assert!(matches!(
            store.delete_changes("1", "r", &d.target),
            Err(DetectorError::NotFound(_))
        ));
        // Quota: 500 per account and region; updates still pass.
        let mut ops = Vec::new();
        for i in 0..QUOTA {
            let mut l = legacy("Average");
            l.metric_name = Some(format!("M{i}"));
            let d = validate_put(&PutInput {
                legacy: l,
                ..Default::default()
            })
            .unwrap();
            ops.extend(store.put_changes("1", "r", &d).unwrap());
        }
        catalog.commit(&ops).unwrap();
        let mut l = legacy("Average");
        l.metric_name = Some("M0".into());
        let same = validate_put(&PutInput {
            legacy: l,
            ..Default::default()
        })
        .unwrap();
        assert!(store.put_changes("1", "r", &same).is_ok());
        assert!(matches!(
            store.put_changes("1", "r", &d),
            Err(DetectorError::LimitExceeded(_))
        ));
    }
}
