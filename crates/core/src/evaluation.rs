//! Alarm state decisions (`spec/cloudwatch.md` §7.3–7.5): buckets classified
//! as breaching, good or missing, the normative M-out-of-N decision with the
//! four TreatMissingData modes and the premature-ALARM rule, and the state
//! reason text and StateReasonData an evaluation writes.
//!
//! Pure functions of their inputs: the scheduler reads the buckets (what
//! GetMetricData answers for the alarm) and the current state, and stores
//! what this module decides.

use trailwatch_types::Timestamp;

/// An alarm state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// `OK`.
    Ok,
    /// `ALARM`.
    Alarm,
    /// `INSUFFICIENT_DATA`.
    InsufficientData,
}

impl State {
    /// From the wire name.
    pub fn parse(s: &str) -> Option<State> {
        match s {
            "OK" => Some(State::Ok),
            "ALARM" => Some(State::Alarm),
            "INSUFFICIENT_DATA" => Some(State::InsufficientData),
            _ => None,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "OK",
            State::Alarm => "ALARM",
            State::InsufficientData => "INSUFFICIENT_DATA",
        }
    }
}

/// `TreatMissingData`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreatMissing {
    /// `missing` (the default).
    Missing,
    /// `ignore`.
    Ignore,
    /// `breaching`.
    Breaching,
    /// `notBreaching`.
    NotBreaching,
}

impl TreatMissing {
    /// From the wire value.
    pub fn parse(s: &str) -> Option<TreatMissing> {
        Some(match s {
            "missing" => TreatMissing::Missing,
            "ignore" => TreatMissing::Ignore,
            "breaching" => TreatMissing::Breaching,
            "notBreaching" => TreatMissing::NotBreaching,
            _ => return None,
        })
    }
}

/// A static threshold comparison (§7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `GreaterThanOrEqualToThreshold`.
    GreaterOrEqual,
    /// `GreaterThanThreshold`.
    Greater,
    /// `LessThanThreshold`.
    Less,
    /// `LessThanOrEqualToThreshold`.
    LessOrEqual,
}

impl Comparison {
    /// From the wire value (band operators are not static comparisons).
    pub fn parse(s: &str) -> Option<Comparison> {
        Some(match s {
            "GreaterThanOrEqualToThreshold" => Comparison::GreaterOrEqual,
            "GreaterThanThreshold" => Comparison::Greater,
            "LessThanThreshold" => Comparison::Less,
            "LessThanOrEqualToThreshold" => Comparison::LessOrEqual,
            _ => return None,
        })
    }

    /// Whether `value` breaches `threshold`.
    pub fn breaches(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::GreaterOrEqual => value >= threshold,
            Comparison::Greater => value > threshold,
            Comparison::Less => value < threshold,
            Comparison::LessOrEqual => value <= threshold,
        }
    }

    /// The verb phrase of the reason text.
    fn phrase(self) -> &'static str {
        match self {
            Comparison::GreaterOrEqual => "greater than or equal to",
            Comparison::Greater => "greater than",
            Comparison::Less => "less than",
            Comparison::LessOrEqual => "less than or equal to",
        }
    }
}

/// One datapoint: the bucket's start, value and sample count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Start of the bucket, epoch ms.
    pub timestamp: i64,
    /// The alarm statistic's value.
    pub value: f64,
    /// Samples in the bucket.
    pub sample_count: f64,
}

/// A bucket of the evaluation range (§7.3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bucket {
    /// Breaching.
    Breaching(Point),
    /// Good: a value that does not breach.
    Good(Point),
    /// No value.
    Missing,
}

impl Bucket {
    fn point(&self) -> Option<&Point> {
        match self {
            Bucket::Breaching(p) | Bucket::Good(p) => Some(p),
            Bucket::Missing => None,
        }
    }
}

/// What an evaluation decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The alarm is (or stays) in this state.
    Set(State),
    /// Not enough to decide: the current state stays.
    Keep,
}

/// The M-out-of-N rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// `EvaluationPeriods` (N).
    pub periods: usize,
    /// `DatapointsToAlarm` (M).
    pub to_alarm: usize,
    /// `TreatMissingData`.
    pub missing: TreatMissing,
}

impl Rule {
    /// Buckets an evaluation reads: N + 2 [TW] (§7.2).
    pub fn range(&self) -> usize {
        self.periods + 2
    }
}

/// The §7.4 decision over `buckets`, newest first (at most [`Rule::range`]).
pub fn decide(buckets: &[Bucket], rule: &Rule) -> Decision {
    let (n, m) = (rule.periods, rule.to_alarm);
    let real: Vec<&Bucket> = buckets
        .iter()
        .filter(|b| !matches!(b, Bucket::Missing))
        .collect();
    let breaching = |set: &[&Bucket]| {
        set.iter()
            .filter(|b| matches!(b, Bucket::Breaching(_)))
            .count()
    };
    if real.len() >= n {
        let window = &real[..n];
        return Decision::Set(if breaching(window) >= m {
            State::Alarm
        } else {
            State::Ok
        });
    }
    let filled = n - real.len();
    let b = breaching(&real);
    match rule.missing {
        TreatMissing::Breaching => Decision::Set(if b + filled >= m {
            State::Alarm
        } else {
            State::Ok
        }),
        TreatMissing::NotBreaching => Decision::Set(if b >= m { State::Alarm } else { State::Ok }),
        TreatMissing::Missing | TreatMissing::Ignore => {
            let good = real.len() - b;
            if real.is_empty() {
                if rule.missing == TreatMissing::Missing {
                    Decision::Set(State::InsufficientData)
                } else {
                    Decision::Keep
                }
            } else if b >= m {
                Decision::Set(State::Alarm)
            } else if good > 0 {
                Decision::Set(State::Ok)
            } else if rule.missing == TreatMissing::Missing && premature(buckets, n, m) {
                Decision::Set(State::Alarm)
            } else {
                Decision::Keep
            }
        }
    }
}

/// Among buckets 1..N (newest first), the oldest breaching one is at
/// position j ≥ M with no good bucket newer than it.
fn premature(buckets: &[Bucket], n: usize, m: usize) -> bool {
    let first = &buckets[..n.min(buckets.len())];
    let Some(j) = first
        .iter()
        .rposition(|b| matches!(b, Bucket::Breaching(_)))
    else {
        return false;
    };
    j + 1 >= m && !first[..j].iter().any(|b| matches!(b, Bucket::Good(_)))
}

/// The sample count a `pP` datapoint needs when
/// `EvaluateLowSampleCountPercentile = ignore` (§7.2): 10/(1 − q) for
/// q = P/100 ≥ 0.5, else 10/q (p99 needs 1,000 samples).
pub fn low_sample_minimum(percentile: f64) -> f64 {
    let q = percentile / 100.0;
    if q >= 0.5 {
        10.0 / (1.0 - q)
    } else {
        10.0 / q
    }
}

/// Whether a percentile alarm that ignores low sample counts keeps its
/// state: a datapoint of the decision set (the N newest real ones) has fewer
/// samples than [`low_sample_minimum`].
pub fn too_few_samples(buckets: &[Bucket], rule: &Rule, percentile: f64) -> bool {
    let minimum = low_sample_minimum(percentile);
    buckets
        .iter()
        .filter_map(Bucket::point)
        .take(rule.periods)
        .any(|p| p.sample_count < minimum)
}

/// A number as Java's `Double.toString` prints it (§7.5): `2.0`,
/// `99.7027322404378`, `1.0E-4`, `1.0E7`.
pub fn java_double(v: f64) -> String {
    if !v.is_finite() {
        return if v.is_nan() {
            "NaN".into()
        } else if v > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    let a = v.abs();
    if a == 0.0 || (1e-3..1e7).contains(&a) {
        let s = format!("{v}");
        if s.contains('.') {
            s
        } else {
            format!("{s}.0")
        }
    } else {
        // Shortest digits, then Java's "d.dddE±x" shape.
        let s = format!("{v:e}");
        let (mantissa, exponent) = s.split_once('e').unwrap_or((&s, "0"));
        let mantissa = if mantissa.contains('.') {
            mantissa.to_owned()
        } else {
            format!("{mantissa}.0")
        };
        format!("{mantissa}E{exponent}")
    }
}

/// `dd/MM/yy HH:mm:ss` in UTC (§7.5).
fn reason_time(ms: i64) -> String {
    let iso = Timestamp::from_millis(ms).to_iso8601_seconds();
    // yyyy-MM-ddTHH:mm:ss…
    match (
        iso.get(2..4),
        iso.get(5..7),
        iso.get(8..10),
        iso.get(11..19),
    ) {
        (Some(y), Some(mo), Some(d), Some(t)) => format!("{d}/{mo}/{y} {t}"),
        _ => iso,
    }
}

/// `yyyy-MM-dd'T'HH:mm:ss.SSS+0000` (StateReasonData dates).
pub fn reason_data_time(ms: i64) -> String {
    let iso = Timestamp::from_millis(ms).to_iso8601_seconds();
    format!(
        "{}.{:03}+0000",
        iso.get(..19).unwrap_or(&iso),
        ms.rem_euclid(1000)
    )
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The state reason of a decision to `to` from `from` over `buckets`
/// (newest first), for a static threshold alarm (§7.5).
pub fn reason(
    buckets: &[Bucket],
    rule: &Rule,
    comparison: Comparison,
    threshold: f64,
    from: State,
    to: State,
) -> String {
    let against = |_: &[usize]| format!("the threshold ({})", java_double(threshold));
    reason_text(
        buckets,
        rule,
        "Threshold Crossed",
        comparison.phrase(),
        &against,
        from,
        to,
    )
}

/// The state reason of a band alarm [TW] (§7.5): `Thresholds Crossed: 1 out
/// of the last 1 datapoints [120.0 (01/01/24 12:00:00)] was greater than the
/// upper thresholds [98.5] (minimum 1 datapoint for OK -> ALARM
/// transition).` `band(i)` is the band of bucket `i` (newest first).
pub fn band_reason(
    buckets: &[Bucket],
    rule: &Rule,
    operator: &str,
    band: &dyn Fn(usize) -> Option<(f64, f64)>,
    from: State,
    to: State,
) -> String {
    let (phrase, edge) = match operator {
        "GreaterThanUpperThreshold" => ("greater than", "upper thresholds"),
        "LessThanLowerThreshold" => ("less than", "lower thresholds"),
        _ => ("outside", "thresholds"),
    };
    let against = |listed: &[usize]| {
        let values: Vec<String> = listed
            .iter()
            .map(|i| match band(*i) {
                None => "-".to_owned(),
                Some((lo, hi)) => match operator {
                    "GreaterThanUpperThreshold" => java_double(hi),
                    "LessThanLowerThreshold" => java_double(lo),
                    _ => format!("{} to {}", java_double(lo), java_double(hi)),
                },
            })
            .collect();
        format!("the {edge} [{}]", values.join(", "))
    };
    reason_text(
        buckets,
        rule,
        "Thresholds Crossed",
        phrase,
        &against,
        from,
        to,
    )
}

/// The shared shape of §7.5 reasons; `against(listed)` names what the listed
/// buckets (indices, newest first) were compared with.
fn reason_text(
    buckets: &[Bucket],
    rule: &Rule,
    title: &str,
    phrase: &str,
    against: &dyn Fn(&[usize]) -> String,
    from: State,
    to: State,
) -> String {
    let n = rule.periods;
    // Real buckets with their positions (newest first).
    let real: Vec<(usize, &Bucket)> = buckets
        .iter()
        .enumerate()
        .filter(|(_, b)| !matches!(b, Bucket::Missing))
        .collect();
    if to == State::InsufficientData {
        return format!(
            "Insufficient Data: {} unknown.",
            plural(n, "datapoint was", "datapoints were")
        );
    }
    let filled_as = match rule.missing {
        TreatMissing::Breaching => Some(("Breaching", true)),
        TreatMissing::NotBreaching => Some(("NonBreaching", false)),
        _ => None,
    };
    if real.is_empty() {
        if let Some((label, _)) = filled_as {
            return format!(
                "{title}: no datapoints were received for {} and {} treated as [{label}].",
                plural(n, "period", "periods"),
                plural(n, "missing datapoint was", "missing datapoints were"),
            );
        }
    }
    // The decision set: the N newest real points, then filled ones.
    let mut set: Vec<Option<(usize, &Bucket)>> = real.iter().take(n).map(|b| Some(*b)).collect();
    let filled = n.saturating_sub(set.len());
    if filled_as.is_some() {
        set.extend(std::iter::repeat_n(None, filled));
    }
    let alarm = to == State::Alarm;
    let chosen: Vec<Option<(usize, &Bucket)>> = set
        .iter()
        .filter(|b| match b {
            Some((_, Bucket::Breaching(_))) => alarm,
            Some(_) => !alarm,
            None => filled_as.is_some_and(|(_, breach)| breach == alarm),
        })
        .copied()
        .collect();
    let listed: Vec<String> = chosen
        .iter()
        .map(|b| match b.and_then(|(_, b)| b.point()) {
            Some(p) => format!("{} ({})", java_double(p.value), reason_time(p.timestamp)),
            None => filled_as.map_or("", |(label, _)| label).to_owned(),
        })
        .collect();
    let positions: Vec<usize> = chosen.iter().flatten().map(|(i, _)| *i).collect();
    let k = listed.len();
    let minimum = if alarm {
        rule.to_alarm
    } else {
        n + 1 - rule.to_alarm.min(n)
    };
    format!(
        // "out of the last 1 datapoints" is AWS's wording too.
        "{title}: {k} out of the last {} datapoints [{}] {} {}{} {} (minimum {} for {} -> {} transition).",
        set.len(),
        listed.join(", "),
        if k == 1 { "was" } else { "were" },
        if alarm { "" } else { "not " },
        phrase,
        against(&positions),
        plural(minimum, "datapoint", "datapoints"),
        from.as_str(),
        to.as_str(),
    )
}

/// What StateReasonData describes of the alarm besides its datapoints.
#[derive(Debug, Clone)]
pub struct ReasonContext<'a> {
    /// When the evaluation ran, epoch ms.
    pub query_ms: i64,
    /// `Statistic` or the extended statistic (`p99`); `None` for math alarms.
    pub statistic: Option<&'a str>,
    /// Period in seconds; `None` for math alarms.
    pub period: Option<i64>,
    /// The alarm's unit, if any.
    pub unit: Option<&'a str>,
    /// The threshold.
    pub threshold: f64,
}

/// StateReasonData (a JSON string, §7.5) of an evaluation over `buckets`
/// (newest first): the decision set's values oldest first, the evaluated
/// points newest first.
pub fn reason_data(buckets: &[Bucket], rule: &Rule, cx: &ReasonContext<'_>) -> String {
    let real: Vec<&Point> = buckets.iter().filter_map(Bucket::point).collect();
    let set: Vec<&Point> = real.iter().take(rule.periods).copied().collect();
    let mut data = serde_json::Map::new();
    data.insert("version".into(), "1.0".into());
    data.insert("queryDate".into(), reason_data_time(cx.query_ms).into());
    if let Some(oldest) = set.last() {
        data.insert(
            "startDate".into(),
            reason_data_time(oldest.timestamp).into(),
        );
    }
    if let Some(s) = cx.statistic {
        data.insert("statistic".into(), s.into());
    }
    if let Some(p) = cx.period {
        data.insert("period".into(), p.into());
    }
    if let Some(u) = cx.unit {
        data.insert("unit".into(), u.into());
    }
    data.insert(
        "recentDatapoints".into(),
        set.iter()
            .rev()
            .map(|p| serde_json::json!(p.value))
            .collect(),
    );
    data.insert("threshold".into(), serde_json::json!(cx.threshold));
    data.insert(
        "evaluatedDatapoints".into(),
        set.iter()
            .map(|p| {
                serde_json::json!({
                    "timestamp": reason_data_time(p.timestamp),
                    "sampleCount": p.sample_count,
                    "value": p.value,
                })
            })
            .collect(),
    );
    serde_json::Value::Object(data).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_728_561_600_000; // 2024-10-10T12:00:00Z

    /// A range from text, oldest → newest as the spec writes it: `0` good,
    /// `X` breaching, `-` missing; returned newest first, a minute apart.
    fn range(text: &str) -> Vec<Bucket> {
        let cells: Vec<&str> = text.split_whitespace().collect();
        let len = cells.len() as i64;
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let p = Point {
                    timestamp: T0 + (i as i64 - len + 1) * 60_000,
                    value: if *c == "X" { 5.0 } else { 1.0 },
                    sample_count: 1.0,
                };
                match *c {
                    "X" => Bucket::Breaching(p),
                    "0" => Bucket::Good(p),
                    _ => Bucket::Missing,
                }
            })
            .rev()
            .collect()
    }

    fn rule(n: usize, m: usize, missing: TreatMissing) -> Rule {
        Rule {
            periods: n,
            to_alarm: m,
            missing,
        }
    }

    const MODES: [TreatMissing; 4] = [
        TreatMissing::Missing,
        TreatMissing::Ignore,
        TreatMissing::Breaching,
        TreatMissing::NotBreaching,
    ];

    fn expect(s: &str) -> Decision {
        match s {
            "OK" => Decision::Set(State::Ok),
            "ALARM" => Decision::Set(State::Alarm),
            "INSUFFICIENT_DATA" => Decision::Set(State::InsufficientData),
            _ => Decision::Keep,
        }
    }

    /// A table row: the range, and the outcome in each of [`MODES`].
    type Row = (&'static str, [&'static str; 4]);

    /// Every row of §7.4's two tables, in all four modes.
    #[test]
    fn spec_tables() {
        let tables: [(usize, usize, &[Row]); 2] = [
            (
                3,
                3,
                &[
                    ("0 - X - X", ["OK", "OK", "OK", "OK"]),
                    ("0 - - - -", ["OK", "OK", "OK", "OK"]),
                    ("- - - - -", ["INSUFFICIENT_DATA", "keep", "ALARM", "OK"]),
                    ("0 X X - X", ["ALARM", "ALARM", "ALARM", "ALARM"]),
                    ("- - X - -", ["ALARM", "keep", "ALARM", "OK"]),
                ],
            ),
            (
                3,
                2,
                &[
                    ("0 - X - X", ["ALARM", "ALARM", "ALARM", "ALARM"]),
                    ("0 0 X 0 X", ["ALARM", "ALARM", "ALARM", "ALARM"]),
                    ("0 - X - -", ["OK", "OK", "ALARM", "OK"]),
                    ("- - - - 0", ["OK", "OK", "ALARM", "OK"]),
                    ("- - - X -", ["ALARM", "keep", "ALARM", "OK"]),
                ],
            ),
        ];
        for (n, m, rows) in tables {
            for (text, want) in rows {
                for (mode, want) in MODES.iter().zip(want) {
                    assert_eq!(
                        decide(&range(text), &rule(n, m, *mode)),
                        expect(want),
                        "N={n} M={m} {text} {mode:?}"
                    );
                }
            }
        }
    }

    /// The spec's additional vectors (N = M = 3, missing, from OK).
    #[test]
    fn spec_additional_vectors() {
        let r = rule(3, 3, TreatMissing::Missing);
        assert_eq!(decide(&range("- - - - X"), &r), Decision::Keep);
        assert_eq!(decide(&range("- - - X -"), &r), Decision::Keep);
        assert_eq!(decide(&range("- - X X X"), &r), Decision::Set(State::Alarm));
        assert_eq!(decide(&range("X X X 0 -"), &r), Decision::Set(State::Ok));
    }

    #[test]
    fn numbers_print_like_java() {
        for (v, s) in [
            (2.0, "2.0"),
            (99.7027322404378, "99.7027322404378"),
            (1e-4, "1.0E-4"),
            (1e7, "1.0E7"),
            (0.0, "0.0"),
            (-3.5, "-3.5"),
            (1.5e-7, "1.5E-7"),
            (123456789.0, "1.23456789E8"),
            (0.001, "0.001"),
        ] {
            assert_eq!(java_double(v), s);
        }
    }

    #[test]
    fn reasons_follow_the_templates() {
        // 2 of the last 3, threshold 3: the spec's first example.
        let mut b = range("0 X X");
        if let Bucket::Breaching(p) = &mut b[0] {
            p.value = 5.0;
            p.timestamp = T0 + 3 * 60_000;
        }
        if let Bucket::Breaching(p) = &mut b[1] {
            p.value = 4.0;
            p.timestamp = T0 + 60_000;
        }
        let r = rule(3, 2, TreatMissing::Missing);
        assert_eq!(
            reason(&b, &r, Comparison::Greater, 3.0, State::Ok, State::Alarm),
            "Threshold Crossed: 2 out of the last 3 datapoints [5.0 (10/10/24 12:03:00), 4.0 (10/10/24 12:01:00)] were greater than the threshold (3.0) (minimum 2 datapoints for OK -> ALARM transition)."
        );
        let one = vec![Bucket::Good(Point {
            timestamp: 1_574_060_160_000, // 2019-11-18T06:56:00Z
            value: 0.0,
            sample_count: 1.0,
        })];
        assert_eq!(
            reason(&one, &rule(1, 1, TreatMissing::Missing), Comparison::Greater, 0.0, State::Alarm, State::Ok),
            "Threshold Crossed: 1 out of the last 1 datapoints [0.0 (18/11/19 06:56:00)] was not greater than the threshold (0.0) (minimum 1 datapoint for ALARM -> OK transition)."
        );
        let none = range("- - - - -");
        assert_eq!(
            reason(&none, &rule(3, 3, TreatMissing::Breaching), Comparison::Greater, 0.0, State::Ok, State::Alarm),
            "Threshold Crossed: no datapoints were received for 3 periods and 3 missing datapoints were treated as [Breaching]."
        );
        assert_eq!(
            reason(&none, &rule(3, 3, TreatMissing::NotBreaching), Comparison::Greater, 0.0, State::Alarm, State::Ok),
            "Threshold Crossed: no datapoints were received for 3 periods and 3 missing datapoints were treated as [NonBreaching]."
        );
        assert_eq!(
            reason(
                &none,
                &rule(3, 3, TreatMissing::Missing),
                Comparison::Greater,
                0.0,
                State::Ok,
                State::InsufficientData
            ),
            "Insufficient Data: 3 datapoints were unknown."
        );
        // Real data and filled breaching points: filled ones print without a time.
        let partial = range("- - - - X");
        let text = reason(
            &partial,
            &rule(3, 3, TreatMissing::Breaching),
            Comparison::GreaterOrEqual,
            3.0,
            State::Ok,
            State::Alarm,
        );
        assert_eq!(
            text,
            "Threshold Crossed: 3 out of the last 3 datapoints [5.0 (10/10/24 12:00:00), Breaching, Breaching] were greater than or equal to the threshold (3.0) (minimum 3 datapoints for OK -> ALARM transition)."
        );
    }

    #[test]
    fn reason_data_lists_the_decision_set() {
        let b = vec![Bucket::Breaching(Point {
            timestamp: 1_704_110_520_000, // 2024-01-01T12:02:00Z
            value: 2.0,
            sample_count: 1.0,
        })];
        let data = reason_data(
            &b,
            &rule(1, 1, TreatMissing::Missing),
            &ReasonContext {
                query_ms: 1_704_110_631_700,
                statistic: Some("Sum"),
                period: Some(60),
                unit: None,
                threshold: 0.0,
            },
        );
        let v: serde_json::Value = serde_json::from_str(&data).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"version":"1.0","queryDate":"2024-01-01T12:03:51.700+0000",
                "startDate":"2024-01-01T12:02:00.000+0000","statistic":"Sum","period":60,
                "recentDatapoints":[2.0],"threshold":0.0,
                "evaluatedDatapoints":[{"timestamp":"2024-01-01T12:02:00.000+0000","sampleCount":1.0,"value":2.0}]})
        );
    }

    #[test]
    fn low_sample_counts_keep_percentile_alarms() {
        assert_eq!(low_sample_minimum(99.0).round(), 1000.0);
        assert_eq!(low_sample_minimum(50.0), 20.0);
        assert_eq!(low_sample_minimum(10.0), 100.0);
        let mut b = range("0 X X X");
        let r = rule(3, 3, TreatMissing::Missing);
        for bucket in &mut b {
            if let Bucket::Breaching(p) | Bucket::Good(p) = bucket {
                p.sample_count = 1000.0;
            }
        }
        assert!(!too_few_samples(&b, &r, 99.0));
        // The oldest point is outside the decision set: its count does not matter.
        if let Bucket::Good(p) = &mut b[3] {
            p.sample_count = 5.0;
        }
        assert!(!too_few_samples(&b, &r, 99.0));
        if let Bucket::Breaching(p) = &mut b[1] {
            p.sample_count = 999.0;
        }
        assert!(too_few_samples(&b, &r, 99.0));
    }
}
