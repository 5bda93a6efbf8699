//! Metric filters (`spec/logs.md` §7): their validation, their records in the
//! catalog, and the samples they emit for ingested events.
//!
//! # Catalog layout (version 1)
//! Table `log_metric_filters`, key `{account}:{region}:{group}:{filter}` (no
//! name contains `:`), JSON [`MetricFilterRecord`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::model::{constraint, LogsError};
use super::pattern::Pattern;
use crate::metrics::model::{DatumInput, UNITS};

/// Catalog table of metric filters.
pub const TABLE: &str = "log_metric_filters";
/// Metric filters per log group (§7.1).
pub const MAX_PER_GROUP: usize = 100;

/// A metric transformation (§7.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transformation {
    /// `metricName`.
    pub metric_name: String,
    /// `metricNamespace`.
    pub namespace: String,
    /// `metricValue`: a number, `$.path` or `$field`.
    pub value: String,
    /// `defaultValue`.
    pub default_value: Option<f64>,
    /// `dimensions`: name → `$.path` / `$field`.
    pub dimensions: BTreeMap<String, String>,
    /// `unit`.
    pub unit: Option<String>,
}

/// A stored metric filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricFilterRecord {
    /// Format version.
    pub v: u8,
    /// `filterPattern` as given.
    pub pattern: String,
    /// Creation time, epoch ms.
    pub created_ms: i64,
    /// Exactly one transformation.
    pub transformations: Vec<Transformation>,
    /// `applyOnTransformedLogs` (stored).
    pub apply_on_transformed: bool,
}

fn metric_text(value: &str, member: &str) -> Result<(), LogsError> {
    if value.is_empty() || value.chars().count() > 255 || value.contains([':', '*', '$']) {
        return Err(constraint(
            value,
            member,
            "Member must satisfy regular expression pattern: [^:*$]*",
        ));
    }
    Ok(())
}

/// Validates a filter and its transformation against its pattern (§7.1).
pub fn validate(pattern: &str, t: &Transformation) -> Result<Pattern, LogsError> {
    let parsed = Pattern::parse(pattern)?;
    metric_text(&t.metric_name, "metricTransformations.1.member.metricName")?;
    metric_text(
        &t.namespace,
        "metricTransformations.1.member.metricNamespace",
    )?;
    let bad_value =
        || LogsError::InvalidParameter("Invalid metric value for filter pattern.".into());
    if t.value.is_empty() || t.value.len() > 100 {
        return Err(bad_value());
    }
    if t.value.starts_with('$') {
        if !parsed.can_extract(&t.value) {
            return Err(bad_value());
        }
    } else if !t.value.parse::<f64>().is_ok_and(f64::is_finite) {
        return Err(bad_value());
    }
    if t.dimensions.len() > 3 {
        return Err(constraint(
            "{…}",
            "metricTransformations.1.member.dimensions",
            "Member must have length less than or equal to 3",
        ));
    }
    if !t.dimensions.is_empty() && t.default_value.is_some() {
        return Err(LogsError::InvalidParameter(
            "Default value is not allowed for a metric filter with dimensions.".into(),
        ));
    }
    for reference in t.dimensions.values() {
        if !parsed.can_extract(reference) {
            return Err(LogsError::InvalidParameter(
                "Invalid dimension value for filter pattern.".into(),
            ));
        }
    }
    if let Some(unit) = &t.unit {
        if !UNITS.contains(&unit.as_str()) {
            return Err(constraint(
                unit,
                "metricTransformations.1.member.unit",
                &format!("Member must satisfy enum value set: [{}]", UNITS.join(", ")),
            ));
        }
    }
    Ok(parsed)
}

/// The samples a filter emits for `events` (timestamp, message), in event
/// order, as (namespace, datum) pairs (§7.2): the value (or extracted field)
/// of each matching event, the default value of each other event; nothing
/// for a match whose value or dimensions cannot be extracted.
pub fn samples(
    pattern: &Pattern,
    t: &Transformation,
    events: &[(i64, String)],
) -> Vec<(String, DatumInput)> {
    let mut out = Vec::new();
    for (timestamp, message) in events {
        let (value, dimensions) = match pattern.match_extract(message) {
            Some(bindings) => {
                let value = if t.value.starts_with('$') {
                    bindings
                        .value(&t.value)
                        .and_then(|v| v.trim().parse::<f64>().ok())
                } else {
                    t.value.parse::<f64>().ok()
                };
                let dimensions: Option<Vec<(Option<String>, Option<String>)>> = t
                    .dimensions
                    .iter()
                    .map(|(name, reference)| {
                        let v = bindings.value(reference)?;
                        (!v.is_empty() && v.len() <= 1024).then(|| (Some(name.clone()), Some(v)))
                    })
                    .collect();
                match (value.filter(|v| v.is_finite()), dimensions) {
                    (Some(v), Some(d)) => (v, d),
                    _ => continue,
                }
            }
            None => match t.default_value {
                Some(d) => (d, Vec::new()),
                None => continue,
            },
        };
        out.push((
            t.namespace.clone(),
            DatumInput {
                metric_name: Some(t.metric_name.clone()),
                dimensions,
                value: Some(value),
                timestamp: Some(trailwatch_types::Timestamp::from_millis(*timestamp)),
                unit: t.unit.clone(),
                ..DatumInput::default()
            },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transformation(value: &str, default: Option<f64>) -> Transformation {
        Transformation {
            metric_name: "Latency".into(),
            namespace: "App".into(),
            value: value.into(),
            default_value: default,
            dimensions: BTreeMap::new(),
            unit: None,
        }
    }

    /// The example of §7.2: samples 50 and 0; the non-numeric match emits nothing.
    #[test]
    fn spec_emission_example() {
        let t = transformation("$.latency", Some(0.0));
        let p = validate("{ $.latency = * }", &t).unwrap();
        let events = [
            (1, r#"{"latency":50}"#.to_owned()),
            (2, r#"{"x":1}"#.to_owned()),
            (3, r#"{"latency":"fast"}"#.to_owned()),
        ];
        let got: Vec<(i64, f64)> = samples(&p, &t, &events)
            .iter()
            .map(|(_, d)| (d.timestamp.unwrap().millis(), d.value.unwrap()))
            .collect();
        assert_eq!(got, [(1, 50.0), (2, 0.0)]);
    }

    #[test]
    fn values_dimensions_and_their_rules() {
        let mut t = transformation("$bytes", None);
        t.dimensions.insert("Status".into(), "$status".into());
        let p = validate("[ip, user, status, bytes]", &t).unwrap();
        let got = samples(
            &p,
            &t,
            &[(5, "1.2.3.4 bob 404 1534".into()), (6, "short".into())],
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.value, Some(1534.0));
        assert_eq!(
            got[0].1.dimensions,
            [(Some("Status".into()), Some("404".into()))]
        );
        // Defaults and dimensions do not mix; values must be extractable.
        t.default_value = Some(0.0);
        assert!(validate("[ip, user, status, bytes]", &t).is_err());
        assert!(validate("ERROR", &transformation("$.x", None)).is_err());
        assert!(validate("{ $.a = 1 }", &transformation("$a", None)).is_err());
        assert!(validate("ERROR", &transformation("1", None)).is_ok());
        assert!(validate("ERROR", &transformation("one", None)).is_err());
        let mut bad = transformation("1", None);
        bad.namespace = "a:b".into();
        assert!(validate("ERROR", &bad).is_err());
    }
}
