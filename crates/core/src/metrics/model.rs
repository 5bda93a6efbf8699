//! Metric identities, units and samples, and PutMetricData validation
//! (`spec/cloudwatch.md` §2). Validation is all-or-nothing and reports the
//! first failure in the spec's order: namespace, then per datum metric name →
//! dimensions → value form → values → timestamp → unit → storage resolution.

use serde::{Deserialize, Serialize};
use trailwatch_types::Timestamp;

/// Units: labels only, never converted (§2.2).
pub const UNITS: [&str; 27] = [
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// A unit, by its index in [`UNITS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Unit(u8);

impl Unit {
    /// `None`, the default.
    pub const NONE: Unit = Unit(26);
    /// The lowest unit in sort order (a range bound).
    pub const MIN: Unit = Unit(0);

    /// Parses a unit name (case-sensitive).
    pub fn parse(s: &str) -> Option<Unit> {
        UNITS.iter().position(|u| *u == s).map(|i| Unit(i as u8))
    }

    /// The unit's index in [`UNITS`] (its stored form).
    pub fn index(self) -> u8 {
        self.0
    }

    /// The unit stored as `index`.
    pub fn from_index(index: u8) -> Option<Unit> {
        (usize::from(index) < UNITS.len()).then_some(Unit(index))
    }

    /// The unit's name.
    pub fn as_str(self) -> &'static str {
        UNITS[usize::from(self.0).min(UNITS.len() - 1)]
    }
}

/// One dimension.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Dimension {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// A metric identity: namespace, name and the *set* of dimensions, kept sorted
/// by name so `[A=1,B=2]` and `[B=2,A=1]` are the same metric (§2.1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MetricId {
    /// Namespace.
    pub namespace: String,
    /// Metric name.
    pub name: String,
    /// Dimensions sorted by name.
    pub dimensions: Vec<Dimension>,
}

impl MetricId {
    /// The identity of `namespace`/`name` with `(Name, Value)` dimensions,
    /// sorted as identities keep them.
    pub fn from_pairs(namespace: &str, name: &str, dimensions: &[(String, String)]) -> Self {
        let mut dimensions: Vec<Dimension> = dimensions
            .iter()
            .map(|(name, value)| Dimension {
                name: name.clone(),
                value: value.clone(),
            })
            .collect();
        dimensions.sort();
        MetricId {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            dimensions,
        }
    }

    /// Whether the metric's dimension names are exactly `names` (in any order):
    /// the schema test of SEARCH `{NS, D…}` and Insights `SCHEMA(NS, D…)`.
    pub fn has_dimension_names(&self, names: &[String]) -> bool {
        let mut have: Vec<&str> = self.dimensions.iter().map(|d| d.name.as_str()).collect();
        let mut want: Vec<&str> = names.iter().map(String::as_str).collect();
        have.sort_unstable();
        want.sort_unstable();
        have == want
    }
}

/// What one datum carries (§2.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Sample {
    /// One value.
    Value(f64),
    /// A pre-aggregated statistic set.
    Set {
        /// SampleCount.
        count: f64,
        /// Sum.
        sum: f64,
        /// Minimum.
        min: f64,
        /// Maximum.
        max: f64,
    },
    /// Values with their counts (counts default to 1).
    Values {
        /// The values.
        values: Vec<f64>,
        /// Their counts; empty when every count is 1 (`Counts` omitted).
        counts: Vec<f64>,
    },
}

/// A validated datum, timestamp truncated to its storage resolution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidatedDatum {
    /// Identity.
    pub metric: MetricId,
    /// Stored timestamp (second or minute).
    pub timestamp: Timestamp,
    /// Unit.
    pub unit: Unit,
    /// 1 or 60.
    pub storage_resolution: u8,
    /// The sample.
    pub sample: Sample,
}

/// One stored sample of a metric: what statistics are computed from. The
/// identity is kept once per series, not per point.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Stored timestamp (second or minute).
    pub timestamp: Timestamp,
    /// Unit.
    pub unit: Unit,
    /// The sample.
    pub sample: Sample,
}

impl ValidatedDatum {
    /// The datum without its identity.
    pub fn point(&self) -> Point {
        Point {
            timestamp: self.timestamp,
            unit: self.unit,
            sample: self.sample.clone(),
        }
    }
}

/// A PutMetricData request as decoded from the wire, before validation.
#[derive(Debug, Clone, Default)]
pub struct PutRequest {
    /// `Namespace`.
    pub namespace: Option<String>,
    /// `MetricData`.
    pub metric_data: Vec<DatumInput>,
    /// Datums under `EntityMetricData[].MetricData` (count toward the 1000 limit).
    pub entity_metric_data: Vec<Vec<DatumInput>>,
}

/// One `MetricDatum` as decoded.
#[derive(Debug, Clone, Default)]
pub struct DatumInput {
    /// `MetricName`.
    pub metric_name: Option<String>,
    /// `Dimensions` as `(Name, Value)`.
    pub dimensions: Vec<(Option<String>, Option<String>)>,
    /// `Value`.
    pub value: Option<f64>,
    /// `StatisticValues` members SampleCount, Sum, Minimum, Maximum.
    pub statistic_values: Option<[Option<f64>; 4]>,
    /// `Values`.
    pub values: Option<Vec<f64>>,
    /// `Counts`.
    pub counts: Option<Vec<f64>>,
    /// `Timestamp`.
    pub timestamp: Option<Timestamp>,
    /// `Unit`.
    pub unit: Option<String>,
    /// `StorageResolution`.
    pub storage_resolution: Option<i64>,
}

/// A request CloudWatch refuses; each variant is a modelled error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricsError {
    /// `InvalidParameterValue`.
    #[error("{0}")]
    InvalidParameterValue(String),
    /// `MissingParameter`.
    #[error("{0}")]
    MissingParameter(String),
    /// `InvalidParameterCombination`.
    #[error("{0}")]
    InvalidParameterCombination(String),
    /// `ValidationError` (model constraint violations, framework wording).
    #[error("{0}")]
    Validation(String),
    /// `InvalidNextToken`.
    #[error("{0}")]
    InvalidNextToken(String),
    /// A storage failure (a server fault).
    #[error("metric storage failed: {0}")]
    Storage(String),
}

fn constraint(value: &str, path: &str, rule: &str) -> MetricsError {
    MetricsError::Validation(format!(
        "1 validation error detected: Value '{value}' at '{path}' failed to satisfy constraint: {rule}"
    ))
}

fn invalid_value(value: impl std::fmt::Display, parameter: &str) -> MetricsError {
    MetricsError::InvalidParameterValue(format!(
        "The value {value} for parameter {parameter} is invalid."
    ))
}

/// ASCII without control characters, with at least one non-whitespace character.
fn is_printable_ascii(s: &str) -> bool {
    s.bytes().all(|b| (0x20..0x7f).contains(&b)) && s.bytes().any(|b| b != b' ')
}

/// Largest and smallest non-zero magnitudes CloudWatch accepts (2^360, 2^-360).
fn value_in_range(v: f64) -> bool {
    let limit = 2f64.powi(360);
    v.is_finite() && v.abs() <= limit && (v == 0.0 || v.abs() >= 1.0 / limit)
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
    } else {
        format!("{v}")
    }
}

/// Validates a PutMetricData request received at `now`. The request is
/// consumed: names, dimensions and values move into the datums.
pub fn validate_put(
    mut request: PutRequest,
    now: Timestamp,
) -> Result<Vec<ValidatedDatum>, MetricsError> {
    let namespace = request.namespace.take().ok_or_else(|| {
        MetricsError::MissingParameter("The parameter Namespace is required.".to_owned())
    })?;
    let namespace = namespace.as_str();
    if namespace.is_empty() || namespace.chars().count() > 255 {
        return Err(constraint(
            namespace,
            "namespace",
            "Member must have length less than or equal to 255",
        ));
    }
    if namespace.starts_with(':') {
        return Err(constraint(
            namespace,
            "namespace",
            "Member must satisfy regular expression pattern: [^:].*",
        ));
    }
    if !is_printable_ascii(namespace) {
        return Err(invalid_value(namespace, "Namespace"));
    }
    if namespace.starts_with("AWS/") {
        return Err(invalid_value("AWS/", "Namespace"));
    }
    let total = request.metric_data.len()
        + request
            .entity_metric_data
            .iter()
            .map(Vec::len)
            .sum::<usize>();
    if total > 1000 {
        return Err(MetricsError::InvalidParameterValue(
            "The collection MetricData must not have a size greater than 1000.".to_owned(),
        ));
    }
    if request.entity_metric_data.len() > 2 {
        return Err(MetricsError::InvalidParameterValue(
            "The collection EntityMetricData must not have a size greater than 2.".to_owned(),
        ));
    }
    if total == 0 {
        return Err(MetricsError::MissingParameter(
            "The parameter MetricData is required.".to_owned(),
        ));
    }
    let mut out = Vec::with_capacity(total);
    let mut index = 0usize;
    let entity_datums = request.entity_metric_data.iter_mut().flatten();
    for datum in request.metric_data.iter_mut().chain(entity_datums) {
        index += 1;
        out.push(validate_datum(namespace, datum, index, now)?);
    }
    Ok(out)
}

/// `MetricData.member.{i}`, rendered only into error messages.
struct DatumPath(usize);

impl std::fmt::Display for DatumPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MetricData.member.{}", self.0)
    }
}

fn validate_datum(
    namespace: &str,
    d: &mut DatumInput,
    i: usize,
    now: Timestamp,
) -> Result<ValidatedDatum, MetricsError> {
    let path = DatumPath(i);
    // Metric name.
    let name = d.metric_name.as_deref().ok_or_else(|| {
        MetricsError::MissingParameter(format!("The parameter {path}.MetricName is required."))
    })?;
    if name.is_empty() || name.chars().count() > 255 {
        return Err(constraint(
            name,
            &format!("metricData.{i}.member.metricName"),
            "Member must have length less than or equal to 255",
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid_value(name, &format!("{path}.MetricName")));
    }
    // Dimensions.
    if d.dimensions.len() > 30 {
        return Err(constraint(
            "[…]",
            &format!("metricData.{i}.member.dimensions"),
            "Member must have length less than or equal to 30",
        ));
    }
    let mut dimensions = Vec::with_capacity(d.dimensions.len());
    for (j, (dim_name, dim_value)) in d.dimensions.iter().enumerate() {
        let dpath = || format!("{path}.Dimensions.member.{}", j + 1);
        let dim_name = dim_name.as_deref().ok_or_else(|| {
            MetricsError::MissingParameter(format!("The parameter {}.Name is required.", dpath()))
        })?;
        let dim_value = dim_value.as_deref().ok_or_else(|| {
            MetricsError::MissingParameter(format!("The parameter {}.Value is required.", dpath()))
        })?;
        if dim_name.is_empty()
            || dim_name.len() > 255
            || dim_name.starts_with(':')
            || !is_printable_ascii(dim_name)
        {
            return Err(invalid_value(dim_name, &format!("{}.Name", dpath())));
        }
        if dim_value.is_empty() || dim_value.len() > 1024 || !is_printable_ascii(dim_value) {
            return Err(invalid_value(dim_value, &format!("{}.Value", dpath())));
        }
    }
    for (dim_name, dim_value) in d.dimensions.drain(..) {
        dimensions.push(Dimension {
            name: dim_name.unwrap_or_default(),
            value: dim_value.unwrap_or_default(),
        });
    }
    dimensions.sort();
    if dimensions.windows(2).any(|w| w[0].name == w[1].name) {
        return Err(MetricsError::InvalidParameterValue(format!(
            "The value for parameter {path}.Dimensions contains duplicate dimension names."
        )));
    }
    // Value form: exactly one of Value, StatisticValues, Values.
    let sample = match (d.value, &d.statistic_values, &mut d.values) {
        (Some(_), Some(_), _) => {
            return Err(MetricsError::InvalidParameterCombination(format!(
                "The parameters {path}.Value and {path}.StatisticValues are mutually exclusive and you have specified both."
            )))
        }
        (Some(_), None, Some(_)) => {
            return Err(MetricsError::InvalidParameterValue(format!(
                "The parameters {path}.Value and {path}.Values are mutually exclusive and you have specified both."
            )))
        }
        (None, Some(_), Some(_)) => {
            return Err(MetricsError::InvalidParameterCombination(format!(
                "The parameters {path}.StatisticValues and {path}.Values are mutually exclusive and you have specified both."
            )))
        }
        (None, None, None) => {
            return Err(MetricsError::MissingParameter(format!(
                "At least one of the parameters {path}.Value or {path}.StatisticValues must be specified."
            )))
        }
        (Some(v), None, None) => {
            if !value_in_range(v) {
                return Err(invalid_value(format_value(v), &format!("{path}.Value")));
            }
            Sample::Value(v)
        }
        (None, Some(set), None) => {
            let names = ["SampleCount", "Sum", "Minimum", "Maximum"];
            let mut members = [0.0; 4];
            for (k, member) in set.iter().enumerate() {
                let v = member.ok_or_else(|| {
                    MetricsError::MissingParameter(format!("The parameter {path}.StatisticValues.{} is required.", names[k]))
                })?;
                if !value_in_range(v) {
                    return Err(invalid_value(format_value(v), &format!("{path}.StatisticValues.{}", names[k])));
                }
                members[k] = v;
            }
            let [count, sum, min, max] = members;
            if count <= 0.0 {
                return Err(invalid_value(format_value(count), &format!("{path}.StatisticValues.SampleCount")));
            }
            if max < min {
                return Err(MetricsError::InvalidParameterValue(format!(
                    "The parameter {path}.StatisticValues.Maximum must be greater than or equal to {path}.StatisticValues.Minimum."
                )));
            }
            Sample::Set { count, sum, min, max }
        }
        (None, None, Some(values)) => {
            if values.len() > 150 {
                return Err(MetricsError::InvalidParameterValue(format!(
                    "The collection {path}.Values must not have a size greater than 150."
                )));
            }
            let counts = match d.counts.take() {
                Some(counts) if counts.len() != values.len() => {
                    return Err(MetricsError::InvalidParameterValue(format!(
                        "The parameters {path}.Values and {path}.Counts must be of the same size."
                    )))
                }
                Some(counts) => counts,
                // Empty stands for "every count is 1": no vector of ones per datum.
                None => Vec::new(),
            };
            for (k, v) in values.iter().enumerate() {
                if !value_in_range(*v) {
                    return Err(invalid_value(format_value(*v), &format!("{path}.Values.member.{}", k + 1)));
                }
            }
            for (k, c) in counts.iter().enumerate() {
                if !c.is_finite() || *c <= 0.0 {
                    return Err(invalid_value(format_value(*c), &format!("{path}.Counts.member.{}", k + 1)));
                }
            }
            Sample::Values { values: std::mem::take(values), counts }
        }
    };
    // Timestamp: within two weeks back, two hours ahead.
    let timestamp = d.timestamp.unwrap_or(now);
    if timestamp.millis() < now.millis() - 14 * 86_400_000 {
        return Err(MetricsError::InvalidParameterValue(format!(
            "The parameter {path}.Timestamp must specify a time within the past two weeks."
        )));
    }
    if timestamp.millis() > now.millis() + 2 * 3_600_000 {
        return Err(MetricsError::InvalidParameterValue(format!(
            "The parameter {path}.Timestamp must specify a time no more than two hours in the future."
        )));
    }
    // Unit.
    let unit = match d.unit.as_deref() {
        None => Unit::NONE,
        Some(u) => Unit::parse(u).ok_or_else(|| {
            MetricsError::InvalidParameterValue(format!(
                "The parameter {path}.Unit must be a value in the set [ {} ].",
                UNITS.join(", ")
            ))
        })?,
    };
    // Storage resolution: 1 keeps the second, 60 the minute.
    let storage_resolution = match d.storage_resolution {
        None | Some(60) => 60u8,
        Some(1) => 1u8,
        Some(other) => return Err(invalid_value(other, &format!("{path}.StorageResolution"))),
    };
    let step = i64::from(storage_resolution) * 1000;
    let truncated = Timestamp::from_millis(timestamp.millis().div_euclid(step) * step);
    let name = d.metric_name.take().unwrap_or_default();
    Ok(ValidatedDatum {
        metric: MetricId {
            namespace: namespace.to_owned(),
            name,
            dimensions,
        },
        timestamp: truncated,
        unit,
        storage_resolution,
        sample,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp::from_secs(1_767_225_600);

    fn request(datums: Vec<DatumInput>) -> PutRequest {
        PutRequest {
            namespace: Some("App".into()),
            metric_data: datums,
            entity_metric_data: vec![],
        }
    }

    fn datum(value: f64) -> DatumInput {
        DatumInput {
            metric_name: Some("Latency".into()),
            value: Some(value),
            ..DatumInput::default()
        }
    }

    fn err(r: PutRequest) -> MetricsError {
        validate_put(r, NOW).unwrap_err()
    }

    #[test]
    fn accepts_the_four_forms_and_truncates_timestamps() {
        let mut d1 = datum(12.5);
        d1.dimensions = vec![
            (Some("Host".into()), Some("web-1".into())),
            (Some("Env".into()), Some("prod".into())),
        ];
        d1.timestamp = Some(Timestamp::from_millis(NOW.millis() - 59_500));
        d1.unit = Some("Milliseconds".into());
        let mut d2 = DatumInput {
            metric_name: Some("Latency".into()),
            statistic_values: Some([Some(4.0), Some(10.0), Some(1.0), Some(4.0)]),
            storage_resolution: Some(1),
            timestamp: Some(Timestamp::from_millis(NOW.millis() + 1_700)),
            ..DatumInput::default()
        };
        d2.unit = None;
        let d3 = DatumInput {
            metric_name: Some("Latency".into()),
            values: Some(vec![1.0, 2.0]),
            counts: Some(vec![3.0, 0.5]),
            ..DatumInput::default()
        };
        let out = validate_put(request(vec![d1, d2, d3]), NOW).unwrap();
        assert_eq!(
            out[0].metric.dimensions[0].name, "Env",
            "dimensions are a sorted set"
        );
        assert_eq!(
            out[0].timestamp,
            Timestamp::from_secs(NOW.secs() - 60),
            "standard resolution keeps the minute"
        );
        assert_eq!(out[0].unit.as_str(), "Milliseconds");
        assert_eq!(
            out[1].timestamp,
            Timestamp::from_secs(NOW.secs() + 1),
            "high resolution keeps the second"
        );
        assert_eq!(out[1].unit, Unit::NONE);
        assert_eq!(
            out[2].sample,
            Sample::Values {
                values: vec![1.0, 2.0],
                counts: vec![3.0, 0.5]
            }
        );
        assert_eq!(out[2].timestamp, NOW);
    }

    #[test]
    fn spec_examples_fail_with_the_right_code_and_message() {
        let r = PutRequest {
            namespace: Some("AWS/EC2".into()),
            ..request(vec![datum(1.0)])
        };
        assert_eq!(
            err(r),
            MetricsError::InvalidParameterValue(
                "The value AWS/ for parameter Namespace is invalid.".into()
            )
        );
        let mut many = datum(1.0);
        many.dimensions = (0..31)
            .map(|i| (Some(format!("d{i}")), Some("v".into())))
            .collect();
        assert!(
            matches!(err(request(vec![many])), MetricsError::Validation(m) if m.contains("'metricData.1.member.dimensions'"))
        );
        let mut both = datum(1.0);
        both.statistic_values = Some([Some(1.0); 4]);
        assert_eq!(err(request(vec![both])), MetricsError::InvalidParameterCombination("The parameters MetricData.member.1.Value and MetricData.member.1.StatisticValues are mutually exclusive and you have specified both.".into()));
        let mismatch = DatumInput {
            metric_name: Some("X".into()),
            values: Some(vec![1.0, 2.0]),
            counts: Some(vec![1.0]),
            ..DatumInput::default()
        };
        assert_eq!(err(request(vec![mismatch])), MetricsError::InvalidParameterValue("The parameters MetricData.member.1.Values and MetricData.member.1.Counts must be of the same size.".into()));
        assert_eq!(
            err(request(vec![datum(f64::NAN)])),
            MetricsError::InvalidParameterValue(
                "The value NaN for parameter MetricData.member.1.Value is invalid.".into()
            )
        );
        let mut old = datum(1.0);
        old.timestamp = Some(Timestamp::from_secs(NOW.secs() - 15 * 86_400));
        assert_eq!(err(request(vec![old])), MetricsError::InvalidParameterValue("The parameter MetricData.member.1.Timestamp must specify a time within the past two weeks.".into()));
        assert_eq!(
            err(request((0..1001).map(|_| datum(1.0)).collect())),
            MetricsError::InvalidParameterValue(
                "The collection MetricData must not have a size greater than 1000.".into()
            )
        );
    }

    #[test]
    fn remaining_rules() {
        assert!(matches!(
            err(PutRequest {
                namespace: None,
                ..request(vec![datum(1.0)])
            }),
            MetricsError::MissingParameter(_)
        ));
        assert!(matches!(
            err(PutRequest {
                namespace: Some(":x".into()),
                ..request(vec![datum(1.0)])
            }),
            MetricsError::Validation(_)
        ));
        assert!(matches!(
            err(request(vec![])),
            MetricsError::MissingParameter(_)
        ));
        assert!(
            matches!(err(request(vec![DatumInput { value: Some(1.0), ..DatumInput::default() }])), MetricsError::MissingParameter(m) if m.contains("MetricName"))
        );
        assert!(
            matches!(err(request(vec![DatumInput { metric_name: Some("X".into()), ..DatumInput::default() }])), MetricsError::MissingParameter(m) if m.starts_with("At least one"))
        );
        assert!(err(request(vec![datum(2f64.powi(361))]))
            .to_string()
            .contains("is invalid"));
        assert!(err(request(vec![datum(2f64.powi(-361))]))
            .to_string()
            .contains("is invalid"));
        assert!(validate_put(request(vec![datum(0.0), datum(-2f64.powi(360))]), NOW).is_ok());
        let mut dup = datum(1.0);
        dup.dimensions = vec![
            (Some("A".into()), Some("1".into())),
            (Some("A".into()), Some("2".into())),
        ];
        assert!(err(request(vec![dup]))
            .to_string()
            .contains("duplicate dimension names"));
        let mut unit = datum(1.0);
        unit.unit = Some("Furlongs".into());
        assert!(err(request(vec![unit]))
            .to_string()
            .starts_with("The parameter MetricData.member.1.Unit must be a value in the set"));
        let mut res = datum(1.0);
        res.storage_resolution = Some(30);
        assert_eq!(
            err(request(vec![res])).to_string(),
            "The value 30 for parameter MetricData.member.1.StorageResolution is invalid."
        );
        let set = DatumInput {
            metric_name: Some("X".into()),
            statistic_values: Some([Some(2.0), Some(3.0), Some(5.0), Some(1.0)]),
            ..DatumInput::default()
        };
        assert!(err(request(vec![set]))
            .to_string()
            .contains("Maximum must be greater than or equal"));
        let zero_count = DatumInput {
            metric_name: Some("X".into()),
            values: Some(vec![1.0]),
            counts: Some(vec![0.0]),
            ..DatumInput::default()
        };
        assert!(err(request(vec![zero_count]))
            .to_string()
            .contains("Counts.member.1"));
        let mut future = datum(1.0);
        future.timestamp = Some(Timestamp::from_secs(NOW.secs() + 2 * 3600 + 1));
        assert!(err(request(vec![future]))
            .to_string()
            .contains("two hours in the future"));
        // Validation order: the first datum's failure wins over the second's.
        let mut second = datum(1.0);
        second.unit = Some("Nope".into());
        assert!(err(request(vec![datum(f64::INFINITY), second]))
            .to_string()
            .contains("member.1.Value"));
    }
}
