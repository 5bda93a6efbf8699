//! Dynamic labels (`spec/cloudwatch.md` §6.8): `${…}` placeholders in a
//! GetMetricData `Label`, rendered per returned series.

use trailwatch_types::Timestamp;

/// What a label may refer to besides the points.
#[derive(Debug, Clone, Default)]
pub struct LabelContext {
    /// The label the series would have without a Label.
    pub default_label: String,
    /// `PROP('…')` values: MetricName, Namespace, Period, Stat, Region, AccountId, Dim.<name>.
    pub props: Vec<(String, String)>,
    /// `LabelOptions.Timezone` offset in minutes.
    pub offset_minutes: i64,
    /// Request time, for the `*_RELATIVE` durations.
    pub now: Timestamp,
}

/// Parses `[+-]HHMM`.
pub fn parse_timezone(s: &str) -> Option<i64> {
    let (sign, digits) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: i64 = digits[..2].parse().ok()?;
    let minutes: i64 = digits[2..].parse().ok()?;
    (hours <= 14 && minutes < 60).then_some(sign * (hours * 60 + minutes))
}

/// The `${…}` placeholders of `label`.
pub fn placeholders(label: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = label;
    while let Some(start) = rest.find("${") {
        let Some(end) = rest[start..].find('}') else {
            break;
        };
        out.push(&rest[start + 2..start + end]);
        rest = &rest[start + end + 1..];
    }
    out
}

fn number(v: f64) -> String {
    let text = format!("{v:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn time(t: i64, offset_minutes: i64) -> String {
    let shifted = Timestamp::from_millis(t + offset_minutes * 60_000).to_iso8601_seconds();
    shifted.trim_end_matches('Z').replace('T', " ")
}

fn duration(ms: i64) -> String {
    let mut secs = ms.abs() / 1000;
    let mut parts = Vec::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            parts.push(format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    if parts.is_empty() {
        "0s".to_owned()
    } else {
        parts.join(" ")
    }
}

/// Renders `label` for a series with `points` (epoch ms, value), ascending.
pub fn render(label: &str, points: &[(i64, f64)], cx: &LabelContext) -> String {
    let mut out = String::new();
    let mut rest = label;
    while let Some(start) = rest.find("${") {
        let Some(end) = rest[start..].find('}') else {
            break;
        };
        out.push_str(&rest[..start]);
        let name = &rest[start + 2..start + end];
        out.push_str(&value_of(name, points, cx));
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out
}

fn value_of(name: &str, points: &[(i64, f64)], cx: &LabelContext) -> String {
    if name == "LABEL" {
        return cx.default_label.clone();
    }
    if let Some(prop) = name
        .strip_prefix("PROP('")
        .and_then(|p| p.strip_suffix("')"))
    {
        return cx
            .props
            .iter()
            .find(|(k, _)| k == prop)
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
    }
    if points.is_empty() {
        return String::new();
    }
    let first = points[0];
    let last = points[points.len() - 1];
    let min = points
        .iter()
        .copied()
        .fold(first, |a, b| if b.1 < a.1 { b } else { a });
    let max = points
        .iter()
        .copied()
        .fold(first, |a, b| if b.1 > a.1 { b } else { a });
    let sum: f64 = points.iter().map(|p| p.1).sum();
    match name {
        "AVG" => number(sum / points.len() as f64),
        "DATAPOINT_COUNT" => points.len().to_string(),
        "FIRST" => number(first.1),
        "LAST" => number(last.1),
        "MIN" => number(min.1),
        "MAX" => number(max.1),
        "SUM" => number(sum),
        "FIRST_LAST_RANGE" => number(last.1 - first.1),
        "MIN_MAX_RANGE" => number(max.1 - min.1),
        "FIRST_TIME" => time(first.0, cx.offset_minutes),
        "LAST_TIME" => time(last.0, cx.offset_minutes),
        "MIN_TIME" => time(min.0, cx.offset_minutes),
        "MAX_TIME" => time(max.0, cx.offset_minutes),
        "FIRST_LAST_TIME_RANGE" => duration(last.0 - first.0),
        "MIN_MAX_TIME_RANGE" => duration(max.0 - min.0),
        "FIRST_TIME_RELATIVE" => duration(cx.now.millis() - first.0),
        "LAST_TIME_RELATIVE" => duration(cx.now.millis() - last.0),
        "MIN_TIME_RELATIVE" => duration(cx.now.millis() - min.0),
        "MAX_TIME_RELATIVE" => duration(cx.now.millis() - max.0),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_values_times_props() {
        let cx = LabelContext {
            default_label: "Errors".into(),
            props: vec![
                ("Dim.FunctionName".into(), "fn-a".into()),
                ("Stat".into(), "Sum".into()),
            ],
            offset_minutes: 60,
            now: Timestamp::from_secs(1_767_229_200),
        };
        let points = [
            (1_767_225_600_000, 3.0),
            (1_767_225_660_000, 17.0),
            (1_767_225_720_000, 2.5),
        ];
        assert_eq!(
            render("max: ${MAX} for ${PROP('Dim.FunctionName')}", &points, &cx),
            "max: 17 for fn-a"
        );
        assert_eq!(
            render("${LABEL} ${AVG} ${SUM} ${DATAPOINT_COUNT}", &points, &cx),
            "Errors 7.5 22.5 3"
        );
        assert_eq!(render("${MAX_TIME}", &points, &cx), "2026-01-01 01:01:00");
        assert_eq!(
            render(
                "${FIRST_LAST_TIME_RANGE} ${LAST_TIME_RELATIVE}",
                &points,
                &cx
            ),
            "2m 58m"
        );
        assert_eq!(render("plain", &points, &cx), "plain");
        assert_eq!(placeholders("${A} x ${B}"), ["A", "B"]);
        assert_eq!(parse_timezone("+0530"), Some(330));
        assert_eq!(parse_timezone("-0800"), Some(-480));
        assert_eq!(parse_timezone("0800"), None);
        assert_eq!(parse_timezone("+2500"), None);
    }
}
