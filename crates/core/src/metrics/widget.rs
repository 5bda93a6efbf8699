//! GetMetricWidgetImage input (`spec/cloudwatch.md` §10.2–10.3): the
//! `MetricWidget` JSON becomes a [`Widget`] — what to draw and how — holding
//! a validated GetMetricData [`DataPlan`], so an image shows exactly the
//! numbers GetMetricData returns for the same metrics. [`fetch`] runs that
//! plan through [`MetricStore::get_data`], following every page, and
//! [`Widget::chart_series`] turns the results into what [`super::chart`] draws.
//!
//! Metric entries are `[Namespace, MetricName, DimName, DimValue, …]` with an
//! optional trailing rendering object, the `"."` (same value as the previous
//! metric at this position) and `"..."` (the previous metric minus as many
//! trailing values as follow) shorthands, or `[{"expression": …}]`. Entries
//! without an `id` get `m<index>` (metrics) or `e<index>` (expressions), the
//! index being the entry's position in `metrics`.
//!
//! # Invariants
//! - Every refusal is [`MetricsError::InvalidParameterValue`] naming the JSON
//!   pointer of the offending member; parsing never panics (unit tests feed
//!   malformed widgets).
//! - Statistics are never computed here: the plan is built by
//!   [`super::data::plan`] and executed by the store.

use serde_json::{Map, Value as Json};
use trailwatch_types::Timestamp;

use super::data::{self, DataPlan, DataQueryInput, DataRequest, DataResult, MetricStatInput};
use super::get::BASIC;
use super::labels;
use super::model::MetricsError;
use super::stats::parse_extended;
use super::store::MetricStore;

/// Largest `MetricWidget`, in bytes (§10.3).
pub const MAX_WIDGET_BYTES: usize = 100 * 1024;
/// Most entries in `metrics` (the quota table's 500; AWS documents 100).
pub const MAX_METRICS: usize = 500;
/// Largest `width` and `height`, in pixels.
pub const MAX_SIDE: u32 = 2000;
/// Default `width` in pixels.
pub const DEFAULT_WIDTH: u32 = 600;
/// Default `height` in pixels.
pub const DEFAULT_HEIGHT: u32 = 400;
/// Default `period` in seconds.
pub const DEFAULT_PERIOD: i64 = 300;
/// Default `stat`.
pub const DEFAULT_STAT: &str = "Average";
/// Default time range (`start` of `-PT3H`), in milliseconds.
const DEFAULT_RANGE_MS: i64 = 3 * 3_600_000;
/// Longest relative range accepted: CloudWatch keeps data for 15 months.
const MAX_RELATIVE_MS: i64 = 455 * 86_400_000;

/// How the series are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Lines over time (the default).
    TimeSeries,
    /// One bar per series: its latest value.
    Bar,
    /// One wedge per series: its latest value.
    Pie,
}

/// Where the legend goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegendPosition {
    /// Below the chart (the default).
    Bottom,
    /// In a column right of the chart.
    Right,
    /// Not drawn.
    Hidden,
}

/// An sRGB colour from `#rrggbb` (or `#rgb`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    /// Parses `#rrggbb` or `#rgb`.
    pub fn parse(s: &str) -> Option<Rgb> {
        let hex = s.strip_prefix('#')?;
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let digit = |i: usize| u8::from_str_radix(&hex[i..=i], 16).ok();
        match hex.len() {
            6 => {
                let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
                Some(Rgb(byte(0)?, byte(2)?, byte(4)?))
            }
            3 => Some(Rgb(digit(0)? * 17, digit(1)? * 17, digit(2)? * 17)),
            _ => None,
        }
    }
}

/// CloudWatch's default series colours, in the order it hands them out.
pub const PALETTE: [Rgb; 10] = [
    Rgb(0x1f, 0x77, 0xb4),
    Rgb(0xff, 0x7f, 0x0e),
    Rgb(0x2c, 0xa0, 0x2c),
    Rgb(0xd6, 0x27, 0x28),
    Rgb(0x94, 0x67, 0xbd),
    Rgb(0x8c, 0x56, 0x4b),
    Rgb(0xe3, 0x77, 0xc2),
    Rgb(0x7f, 0x7f, 0x7f),
    Rgb(0xbc, 0xbd, 0x22),
    Rgb(0x17, 0xbe, 0xcf),
];

/// `yAxis.left`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct YAxis {
    /// Fixed lower bound; otherwise from the data.
    pub min: Option<f64>,
    /// Fixed upper bound; otherwise from the data.
    pub max: Option<f64>,
    /// Axis title.
    pub label: Option<String>,
}

/// One line of `annotations.horizontal`.
#[derive(Debug, Clone, PartialEq)]
pub struct HorizontalAnnotation {
    /// Where the line is drawn.
    pub value: f64,
    /// Text drawn above the line.
    pub label: Option<String>,
    /// Line colour (default: CloudWatch's annotation red).
    pub color: Option<Rgb>,
}

/// What a metrics entry graphs.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A stored metric.
    Metric {
        /// Namespace.
        namespace: String,
        /// Metric name.
        name: String,
        /// `(name, value)` pairs, as written.
        dimensions: Vec<(String, String)>,
    },
    /// A metric math, SEARCH or Metrics Insights expression.
    Expression(String),
}

/// One entry of `metrics`, shorthands expanded and defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Query id: the rendering object's `id`, else `m<index>` / `e<index>`.
    pub id: String,
    /// What is graphed.
    pub source: Source,
    /// Legend text (dynamic labels allowed); default from GetMetricData.
    pub label: Option<String>,
    /// Series colour; default from [`PALETTE`].
    pub color: Option<Rgb>,
    /// Statistic (metrics only): entry, widget, then `Average`.
    pub stat: String,
    /// Period in seconds: entry, widget, then 300.
    pub period: i64,
    /// Hidden entries are fetched (expressions may use them) but not drawn.
    pub visible: bool,
}

/// A parsed, validated `MetricWidget`.
#[derive(Debug, Clone)]
pub struct Widget {
    /// Chart kind.
    pub view: View,
    /// Title drawn above the chart.
    pub title: Option<String>,
    /// Image width in pixels (1–2000).
    pub width: u32,
    /// Image height in pixels (1–2000).
    pub height: u32,
    /// Start of the time axis.
    pub start: Timestamp,
    /// End of the time axis.
    pub end: Timestamp,
    /// `timezone` offset for the time axis, minutes east of UTC.
    pub offset_minutes: i64,
    /// `region`: where the metrics are read (default: the caller's).
    pub region: Option<String>,
    /// `yAxis.left`.
    pub y_axis: YAxis,
    /// `legend.position`.
    pub legend: LegendPosition,
    /// `annotations.horizontal`, visible ones only.
    pub annotations: Vec<HorizontalAnnotation>,
    /// `metrics`, in order.
    pub entries: Vec<Entry>,
    /// The GetMetricData plan for `entries`.
    pub plan: DataPlan,
}

/// One series to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartSeries {
    /// Legend text.
    pub label: String,
    /// Colour.
    pub color: Rgb,
    /// `(epoch ms, value)`, ascending by time.
    pub points: Vec<(i64, f64)>,
}

fn invalid(path: &str, problem: impl std::fmt::Display) -> MetricsError {
    MetricsError::InvalidParameterValue(format!(
        "The MetricWidget parameter is invalid: {path}: {problem}"
    ))
}

fn not_json() -> MetricsError {
    MetricsError::InvalidParameterValue(
        "The field MetricWidget must be a valid JSON object.".to_owned(),
    )
}

/// An optional string member.
fn string(
    object: &Map<String, Json>,
    key: &str,
    path: &str,
) -> Result<Option<String>, MetricsError> {
    match object.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(&format!("{path}/{key}"), "should be string")),
    }
}

/// An optional finite number member.
fn number(object: &Map<String, Json>, key: &str, path: &str) -> Result<Option<f64>, MetricsError> {
    match object.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or_else(|| invalid(&format!("{path}/{key}"), "should be number")),
    }
}

/// An optional whole number member (`600` and `600.0` alike).
fn integer(object: &Map<String, Json>, key: &str, path: &str) -> Result<Option<i64>, MetricsError> {
    match number(object, key, path)? {
        None => Ok(None),
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Some(f as i64)),
        Some(_) => Err(invalid(&format!("{path}/{key}"), "should be integer")),
    }
}

fn boolean(
    object: &Map<String, Json>,
    key: &str,
    path: &str,
) -> Result<Option<bool>, MetricsError> {
    match object.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(invalid(&format!("{path}/{key}"), "should be boolean")),
    }
}

fn color(object: &Map<String, Json>, key: &str, path: &str) -> Result<Option<Rgb>, MetricsError> {
    match string(object, key, path)? {
        None => Ok(None),
        Some(s) => Rgb::parse(&s).map(Some).ok_or_else(|| {
            invalid(
                &format!("{path}/{key}"),
                format!("{s} is not a colour of the form #rrggbb"),
            )
        }),
    }
}

fn object<'a>(
    parent: &'a Map<String, Json>,
    key: &str,
    path: &str,
) -> Result<Option<&'a Map<String, Json>>, MetricsError> {
    match parent.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Object(o)) => Ok(Some(o)),
        Some(_) => Err(invalid(&format!("{path}/{key}"), "should be object")),
    }
}

/// A relative ISO 8601 duration before now (`-PT3H`, `-P7D`, `-P1W`,
/// `-P1DT12H`, `-PT15M`, `-PT0H`), in milliseconds. Years and months have no
/// fixed length, so they are not accepted.
pub fn parse_relative(s: &str) -> Option<i64> {
    let rest = s.strip_prefix('-')?.strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    if time == Some("") || (date.is_empty() && time.is_none()) {
        return None;
    }
    let day = 86_400_000;
    let mut total = units(date, &[('W', 7 * day), ('D', day)])?;
    if let Some(time) = time {
        total = total.checked_add(units(
            time,
            &[('H', 3_600_000), ('M', 60_000), ('S', 1000)],
        )?)?;
    }
    Some(total)
}

/// `<digits><unit>…` with each unit of `table` at most once, in table order.
fn units(mut part: &str, table: &[(char, i64)]) -> Option<i64> {
    let mut total: i64 = 0;
    let mut next_unit = 0;
    while !part.is_empty() {
        let digits = part.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        let n: i64 = part[..digits].parse().ok()?;
        let unit = part[digits..].chars().next()?;
        let position = table[next_unit..].iter().position(|(u, _)| *u == unit)?;
        let (_, ms) = table[next_unit + position];
        next_unit += position + 1;
        total = total.checked_add(n.checked_mul(ms)?)?;
        part = &part[digits + unit.len_utf8()..];
    }
    Some(total)
}

/// `start` / `end`: a relative duration before `now` or an absolute timestamp.
fn time_member(
    object: &Map<String, Json>,
    key: &str,
    now: Timestamp,
) -> Result<Option<Timestamp>, MetricsError> {
    let Some(text) = string(object, key, "")? else {
        return Ok(None);
    };
    if text.starts_with('-') {
        return match parse_relative(&text) {
            Some(ms) if ms <= MAX_RELATIVE_MS => Ok(Some(Timestamp::from_millis(now.millis() - ms))),
            _ => Err(invalid(
                &format!("/{key}"),
                format!("{text} is not a relative time such as -PT3H or -P7D (weeks, days, hours, minutes, seconds; at most 455 days)"),
            )),
        };
    }
    Timestamp::parse_iso8601(&text).map(Some).map_err(|_| {
        invalid(
            &format!("/{key}"),
            format!("{text} is neither a relative time such as -PT3H nor an ISO 8601 timestamp"),
        )
    })
}

fn is_statistic(stat: &str) -> bool {
    BASIC.contains(&stat) || parse_extended(stat).is_some()
}

/// Periods GetMetricData accepts (§3.2).
fn is_period(period: i64) -> bool {
    period > 0 && (matches!(period, 1 | 5 | 10 | 20 | 30) || period % 60 == 0)
}

/// The rendering options of one entry (`{label, color, stat, period, …}`).
#[derive(Default)]
struct Rendering {
    id: Option<String>,
    label: Option<String>,
    color: Option<Rgb>,
    stat: Option<String>,
    period: Option<i64>,
    visible: Option<bool>,
}

fn rendering(o: &Map<String, Json>, path: &str) -> Result<Rendering, MetricsError> {
    let stat = string(o, "stat", path)?;
    if let Some(s) = &stat {
        if !is_statistic(s) {
            return Err(invalid(
                &format!("{path}/stat"),
                format!("{s} is not a supported statistic"),
            ));
        }
    }
    let period = integer(o, "period", path)?;
    if let Some(p) = period {
        if !is_period(p) {
            return Err(invalid(
                &format!("{path}/period"),
                format!("{p} is not a valid period (1, 5, 10, 20, 30 or a multiple of 60 seconds)"),
            ));
        }
    }
    if let Some(axis) = string(o, "yAxis", path)? {
        if axis != "left" && axis != "right" {
            return Err(invalid(&format!("{path}/yAxis"), "should be left or right"));
        }
    }
    // `region` and `accountId` are accepted; every entry reads the widget's region.
    string(o, "region", path)?;
    string(o, "accountId", path)?;
    Ok(Rendering {
        id: string(o, "id", path)?,
        label: string(o, "label", path)?,
        color: color(o, "color", path)?,
        stat,
        period,
        visible: boolean(o, "visible", path)?,
    })
}

/// Parses `metrics` into entries (ids not yet assigned: `""` when absent).
fn parse_entries(
    metrics: &[Json],
    widget_stat: &str,
    widget_period: i64,
) -> Result<Vec<Entry>, MetricsError> {
    let mut entries = Vec::with_capacity(metrics.len());
    // The previous metric's strings, for "." and "...".
    let mut previous: Option<Vec<String>> = None;
    for (i, entry) in metrics.iter().enumerate() {
        let path = format!("/metrics/{i}");
        let Json::Array(items) = entry else {
            return Err(invalid(&path, "should be array"));
        };
        let (values, options) = match items.split_last() {
            None => return Err(invalid(&path, "should NOT have fewer than 1 items")),
            Some((Json::Object(o), rest)) => (rest, Some(o)),
            Some(_) => (&items[..], None),
        };
        if values.is_empty() {
            let Some(o) = options else {
                return Err(invalid(&path, "should NOT have fewer than 1 items"));
            };
            let opath = format!("{path}/0");
            let Some(expression) = string(o, "expression", &opath)? else {
                return Err(invalid(
                    &opath,
                    "should have required property 'expression'",
                ));
            };
            let r = rendering(o, &opath)?;
            entries.push(Entry {
                id: r.id.unwrap_or_default(),
                source: Source::Expression(expression),
                label: r.label,
                color: r.color,
                stat: r.stat.unwrap_or_else(|| widget_stat.to_owned()),
                period: r.period.unwrap_or(widget_period),
                visible: r.visible.unwrap_or(true),
            });
            continue;
        }
        let mut strings = Vec::with_capacity(values.len());
        for (j, v) in values.iter().enumerate() {
            match v {
                Json::String(s) => strings.push(s.clone()),
                _ => {
                    return Err(invalid(
                        &format!("{path}/{j}"),
                        "Invalid metric field type, only \"String\" type is allowed",
                    ))
                }
            }
        }
        let expanded = expand_shorthand(&strings, previous.as_deref(), &path)?;
        if expanded.len() < 2 || expanded.len() % 2 != 0 {
            return Err(invalid(
                &path,
                "a metric is [Namespace, MetricName, DimensionName, DimensionValue, …]",
            ));
        }
        let r = match options {
            Some(o) => rendering(o, &format!("{path}/{}", values.len()))?,
            None => Rendering::default(),
        };
        entries.push(Entry {
            id: r.id.unwrap_or_default(),
            source: Source::Metric {
                namespace: expanded[0].clone(),
                name: expanded[1].clone(),
                dimensions: expanded[2..]
                    .chunks_exact(2)
                    .map(|pair| (pair[0].clone(), pair[1].clone()))
                    .collect(),
            },
            label: r.label,
            color: r.color,
            stat: r.stat.unwrap_or_else(|| widget_stat.to_owned()),
            period: r.period.unwrap_or(widget_period),
            visible: r.visible.unwrap_or(true),
        });
        previous = Some(expanded);
    }
    Ok(entries)
}

/// Expands `"..."` (leading: the previous metric without its last k values,
/// then the k values given) and `"."` (the previous metric's value here).
pub fn expand_shorthand(
    strings: &[String],
    previous: Option<&[String]>,
    path: &str,
) -> Result<Vec<String>, MetricsError> {
    let uses_shorthand = strings.iter().any(|s| s == "." || s == "...");
    let previous = match (previous, uses_shorthand) {
        (_, false) => return Ok(strings.to_vec()),
        (Some(p), true) => p,
        (None, true) => {
            return Err(invalid(
                path,
                "\".\" and \"...\" need a previous metric to copy from",
            ))
        }
    };
    let mut out: Vec<String> = if strings[0] == "..." {
        let given = &strings[1..];
        if given.len() > previous.len() {
            return Err(invalid(
                path,
                "\"...\" is followed by more values than the previous metric has",
            ));
        }
        let mut out = previous[..previous.len() - given.len()].to_vec();
        out.extend(given.iter().cloned());
        out
    } else {
        strings.to_vec()
    };
    // After "..." the output is as long as the previous metric, so "." copies
    // the previous value at the same position in both forms.
    for (at, value) in out.iter_mut().enumerate() {
        if value == "..." {
            return Err(invalid(path, "\"...\" may only start an entry"));
        }
        if value == "." {
            *value = previous.get(at).cloned().ok_or_else(|| {
                invalid(path, format!("\".\" at position {at} has nothing to copy"))
            })?;
        }
    }
    Ok(out)
}

/// Gives every entry without an id `m<index>` / `e<index>`, avoiding ids
/// already taken.
fn assign_ids(entries: &mut [Entry]) {
    let taken: std::collections::HashSet<String> = entries
        .iter()
        .filter(|e| !e.id.is_empty())
        .map(|e| e.id.clone())
        .collect();
    for (i, entry) in entries.iter_mut().enumerate() {
        if !entry.id.is_empty() {
            continue;
        }
        let letter = match entry.source {
            Source::Metric { .. } => 'm',
            Source::Expression(_) => 'e',
        };
        let mut id = format!("{letter}{i}");
        let mut k = 0;
        while taken.contains(&id) {
            k += 1;
            id = format!("{letter}{i}_{k}");
        }
        entry.id = id;
    }
}

/// Most datapoints GetMetricData gives one metric (`spec/cloudwatch.md` §5).
const MAX_BUCKETS: i64 = 1440;

/// Raises every period that would give one series more than 1,440 datapoints
/// to the smallest whole minute that fits, as CloudWatch graphs do, so that
/// `-P7D` works with the default period of 300.
fn fit_periods_to_range(entries: &mut [Entry], start: Timestamp, end: Timestamp) {
    let range_secs = (end.millis() - start.millis() + 999) / 1000;
    // StartTime is rounded down by the period below a minute, otherwise by at
    // most an hour (§3.2): count that time too.
    let rounding = |period: i64| if period < 60 { period } else { 3600 };
    let fitting_minutes = (range_secs + 3600 + MAX_BUCKETS * 60 - 1) / (MAX_BUCKETS * 60);
    for entry in entries {
        let buckets = (range_secs + rounding(entry.period) + entry.period - 1) / entry.period;
        if buckets > MAX_BUCKETS {
            entry.period = fitting_minutes.max(1) * 60;
        }
    }
}

fn query_of(entry: &Entry) -> DataQueryInput {
    let (metric_stat, expression) = match &entry.source {
        Source::Metric {
            namespace,
            name,
            dimensions,
        } => (
            Some(MetricStatInput {
                namespace: Some(namespace.clone()),
                metric_name: Some(name.clone()),
                dimensions: dimensions
                    .iter()
                    .map(|(n, v)| (Some(n.clone()), Some(v.clone())))
                    .collect(),
                period: Some(entry.period),
                stat: Some(entry.stat.clone()),
                unit: None,
            }),
            None,
        ),
        Source::Expression(e) => (None, Some(e.clone())),
    };
    DataQueryInput {
        id: Some(entry.id.clone()),
        metric_stat,
        expression,
        label: entry.label.clone(),
        return_data: Some(entry.visible),
        // The period a SEARCH or Metrics Insights expression uses.
        period: matches!(entry.source, Source::Expression(_)).then_some(entry.period),
    }
}

/// Parses and validates `MetricWidget`, received at `now`.
pub fn parse(json: &str, now: Timestamp) -> Result<Widget, MetricsError> {
    if json.len() > MAX_WIDGET_BYTES {
        return Err(MetricsError::InvalidParameterValue(format!(
            "The MetricWidget parameter must not be longer than {MAX_WIDGET_BYTES} bytes."
        )));
    }
    let Ok(Json::Object(root)) = serde_json::from_str::<Json>(json) else {
        return Err(not_json());
    };
    let view = match string(&root, "view", "")?.as_deref() {
        None | Some("timeSeries") => View::TimeSeries,
        Some("bar") => View::Bar,
        Some("pie") => View::Pie,
        Some(other) => {
            return Err(invalid(
                "/view",
                format!("{other} is not one of timeSeries, bar, pie"),
            ))
        }
    };
    let side = |key: &str, default: u32| -> Result<u32, MetricsError> {
        match integer(&root, key, "")? {
            None => Ok(default),
            Some(n) if (1..=i64::from(MAX_SIDE)).contains(&n) => Ok(n as u32),
            Some(n) => Err(invalid(
                &format!("/{key}"),
                format!("{n} is not between 1 and {MAX_SIDE}"),
            )),
        }
    };
    let width = side("width", DEFAULT_WIDTH)?;
    let height = side("height", DEFAULT_HEIGHT)?;
    let stat = string(&root, "stat", "")?.unwrap_or_else(|| DEFAULT_STAT.to_owned());
    if !is_statistic(&stat) {
        return Err(invalid(
            "/stat",
            format!("{stat} is not a supported statistic"),
        ));
    }
    let mut period = integer(&root, "period", "")?.unwrap_or(DEFAULT_PERIOD);
    if !is_period(period) {
        return Err(invalid(
            "/period",
            format!(
                "{period} is not a valid period (1, 5, 10, 20, 30 or a multiple of 60 seconds)"
            ),
        ));
    }
    let end = time_member(&root, "end", now)?.unwrap_or(now);
    let start = time_member(&root, "start", now)?
        .unwrap_or_else(|| Timestamp::from_millis(end.millis() - DEFAULT_RANGE_MS));
    if start >= end {
        return Err(invalid("/start", "start must be before end"));
    }
    // One bucket over the whole range, for bar and pie charts that ask for it.
    if boolean(&root, "setPeriodToTimeRange", "")? == Some(true) && view != View::TimeSeries {
        let range_secs = (end.millis() - start.millis() + 999) / 1000;
        period = (range_secs + 59) / 60 * 60;
    }
    let offset_minutes = match string(&root, "timezone", "")? {
        None => 0,
        Some(tz) => labels::parse_timezone(&tz)
            .ok_or_else(|| invalid("/timezone", format!("{tz} is not an offset such as +0130")))?,
    };
    let y_axis = match object(&root, "yAxis", "")?.and_then(|y| y.get("left")) {
        None | Some(Json::Null) => YAxis::default(),
        Some(Json::Object(left)) => YAxis {
            min: number(left, "min", "/yAxis/left")?,
            max: number(left, "max", "/yAxis/left")?,
            label: string(left, "label", "/yAxis/left")?,
        },
        Some(_) => return Err(invalid("/yAxis/left", "should be object")),
    };
    if let (Some(min), Some(max)) = (y_axis.min, y_axis.max) {
        if min >= max {
            return Err(invalid("/yAxis/left", "min must be less than max"));
        }
    }
    let legend = match object(&root, "legend", "")? {
        None => LegendPosition::Bottom,
        Some(l) => match string(l, "position", "/legend")?.as_deref() {
            None | Some("bottom") => LegendPosition::Bottom,
            Some("right") => LegendPosition::Right,
            Some("hidden") => LegendPosition::Hidden,
            Some(other) => {
                return Err(invalid(
                    "/legend/position",
                    format!("{other} is not one of bottom, right, hidden"),
                ))
            }
        },
    };
    let annotations = match object(&root, "annotations", "")? {
        None => Vec::new(),
        Some(a) => horizontal_annotations(a)?,
    };
    let metrics = match root.get("metrics") {
        Some(Json::Array(m)) => m,
        Some(_) => return Err(invalid("/metrics", "should be array")),
        None => return Err(invalid("", "should have required property 'metrics'")),
    };
    if metrics.is_empty() {
        return Err(invalid("/metrics", "should NOT have fewer than 1 items"));
    }
    if metrics.len() > MAX_METRICS {
        return Err(invalid(
            "/metrics",
            format!("should NOT have more than {MAX_METRICS} items"),
        ));
    }
    let mut entries = parse_entries(metrics, &stat, period)?;
    assign_ids(&mut entries);
    fit_periods_to_range(&mut entries, start, end);
    let request = DataRequest {
        queries: entries.iter().map(query_of).collect(),
        start: Some(start),
        end: Some(end),
        scan_by: Some("TimestampAscending".to_owned()),
        max_datapoints: None,
        label_timezone: string(&root, "timezone", "")?,
    };
    let plan = data::plan(&request, now).map_err(|e| match e {
        MetricsError::Storage(m) => MetricsError::Storage(m),
        other => MetricsError::InvalidParameterValue(format!(
            "The MetricWidget parameter is invalid: {other}"
        )),
    })?;
    Ok(Widget {
        view,
        title: string(&root, "title", "")?,
        width,
        height,
        start,
        end,
        offset_minutes,
        region: string(&root, "region", "")?,
        y_axis,
        legend,
        annotations,
        entries,
        plan,
    })
}

/// `annotations.horizontal`: single lines and the two-value band form (both
/// edges drawn). `vertical` and `alarms` are accepted and not drawn.
fn horizontal_annotations(
    annotations: &Map<String, Json>,
) -> Result<Vec<HorizontalAnnotation>, MetricsError> {
    let list = match annotations.get("horizontal") {
        None | Some(Json::Null) => return Ok(Vec::new()),
        Some(Json::Array(list)) => list,
        Some(_) => return Err(invalid("/annotations/horizontal", "should be array")),
    };
    let mut out = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let path = format!("/annotations/horizontal/{i}");
        let edges: Vec<(&Map<String, Json>, String)> = match item {
            Json::Object(o) => vec![(o, path)],
            Json::Array(band) if band.len() == 2 => band
                .iter()
                .enumerate()
                .map(|(j, e)| match e {
                    Json::Object(o) => Ok((o, format!("{path}/{j}"))),
                    _ => Err(invalid(&format!("{path}/{j}"), "should be object")),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(invalid(&path, "should be object or a pair of objects")),
        };
        for (o, epath) in edges {
            let value = number(o, "value", &epath)?
                .ok_or_else(|| invalid(&epath, "should have required property 'value'"))?;
            let label = string(o, "label", &epath)?;
            let color = color(o, "color", &epath)?;
            if boolean(o, "visible", &epath)? != Some(false) {
                out.push(HorizontalAnnotation {
                    value,
                    label,
                    color,
                });
            }
        }
    }
    Ok(out)
}

/// Runs `plan` through [`MetricStore::get_data`], following every page and
/// joining a result that a page boundary split (`PartialData`).
pub fn fetch(
    store: &MetricStore,
    account: &str,
    region: &str,
    plan: &DataPlan,
) -> Result<Vec<DataResult>, MetricsError> {
    let mut merged: Vec<DataResult> = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let (results, next) = store.get_data(account, region, plan, token.as_deref())?;
        for result in results {
            match merged.last_mut() {
                Some(last) if !last.complete && last.id == result.id => {
                    last.timestamps.extend(result.timestamps);
                    last.values.extend(result.values);
                    last.complete = result.complete;
                }
                _ => merged.push(result),
            }
        }
        match next {
            Some(t) => token = Some(t),
            None => return Ok(merged),
        }
    }
}

impl Widget {
    /// The series to draw: one per returned result, coloured by its entry's
    /// `color` or else the next palette colour.
    pub fn chart_series(&self, results: Vec<DataResult>) -> Vec<ChartSeries> {
        let mut next_color = PALETTE.iter().cycle();
        results
            .into_iter()
            .map(|r| {
                let own = self
                    .entries
                    .iter()
                    .find(|e| e.id == r.id)
                    .and_then(|e| e.color);
                let color = match own {
                    Some(c) => c,
                    None => *next_color.next().unwrap_or(&PALETTE[0]),
                };
                let mut points: Vec<(i64, f64)> = r
                    .timestamps
                    .iter()
                    .map(|t| t.millis())
                    .zip(r.values)
                    .collect();
                points.sort_by_key(|(t, _)| *t);
                ChartSeries {
                    label: r.label,
                    color,
                    points,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp::from_secs(1_719_748_800); // 2024-06-30T12:00:00Z

    fn ok(json: &str) -> Widget {
        parse(json, NOW).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    fn err(json: &str) -> String {
        match parse(json, NOW) {
            Err(MetricsError::InvalidParameterValue(m)) => m,
            other => panic!("{json}: expected InvalidParameterValue, got {other:?}"),
        }
    }

    fn metric(e: &Entry) -> (String, String, Vec<(String, String)>) {
        match &e.source {
            Source::Metric {
                namespace,
                name,
                dimensions,
            } => (namespace.clone(), name.clone(), dimensions.clone()),
            Source::Expression(x) => panic!("expression {x}"),
        }
    }

    fn dims(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults() {
        let w = ok(r#"{"metrics":[["App","Latency"]]}"#);
        assert_eq!(w.view, View::TimeSeries);
        assert_eq!((w.width, w.height), (600, 400));
        assert_eq!(w.end, NOW);
        assert_eq!(NOW.millis() - w.start.millis(), 3 * 3_600_000);
        assert_eq!(w.legend, LegendPosition::Bottom);
        assert_eq!(w.title, None);
        assert_eq!(w.y_axis, YAxis::default());
        let e = &w.entries[0];
        assert_eq!(
            (e.id.as_str(), e.stat.as_str(), e.period),
            ("m0", "Average", 300)
        );
        assert!(e.visible);
        assert_eq!(metric(e), ("App".into(), "Latency".into(), vec![]));
    }

    #[test]
    fn spec_shorthand_example() {
        let w = ok(r#"{"metrics":[
            ["AWS/EC2","CPUUtilization","InstanceId","i-1"],
            ["...","i-2"],
            [".","NetworkIn",".","i-1",{"stat":"Sum"}]
        ]}"#);
        let got: Vec<_> = w.entries.iter().map(metric).collect();
        assert_eq!(
            got,
            vec![
                (
                    "AWS/EC2".into(),
                    "CPUUtilization".into(),
                    dims(&[("InstanceId", "i-1")])
                ),
                (
                    "AWS/EC2".into(),
                    "CPUUtilization".into(),
                    dims(&[("InstanceId", "i-2")])
                ),
                (
                    "AWS/EC2".into(),
                    "NetworkIn".into(),
                    dims(&[("InstanceId", "i-1")])
                ),
            ]
        );
        let stats: Vec<&str> = w.entries.iter().map(|e| e.stat.as_str()).collect();
        assert_eq!(stats, ["Average", "Average", "Sum"]);
        let ids: Vec<&str> = w.entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["m0", "m1", "m2"]);
    }

    #[test]
    fn ellipsis_keeps_everything_but_the_given_tail() {
        let w = ok(r#"{"metrics":[
            ["App","Latency","Svc","a","Stage","prod"],
            ["...","beta"],
            ["...","Host","h1"],
            ["..."]
        ]}"#);
        let got: Vec<_> = w.entries.iter().map(|e| metric(e).2).collect();
        assert_eq!(got[1], dims(&[("Svc", "a"), ("Stage", "beta")]));
        assert_eq!(got[2], dims(&[("Svc", "a"), ("Host", "h1")]));
        assert_eq!(got[3], got[2], "\"...\" alone repeats the previous metric");
    }

    #[test]
    fn shorthand_refusals() {
        assert!(err(r#"{"metrics":[[".","Latency"]]}"#).contains("/metrics/0"));
        assert!(
            err(r#"{"metrics":[["App","Latency"],["...","a","b","c"]]}"#).contains("/metrics/1")
        );
        assert!(
            err(r#"{"metrics":[["App","Latency"],["App",".","."]]}"#).contains("nothing to copy")
        );
        assert!(
            err(r#"{"metrics":[["App","Latency"],["App","...","x"]]}"#).contains("may only start")
        );
    }

    #[test]
    fn rendering_object_and_widget_level_options() {
        let w = ok(r##"{
            "view":"bar","stat":"Maximum","period":60,"width":800,"height":250,
            "title":"Latency","start":"-PT12H","end":"-PT1H","timezone":"+0130",
            "region":"eu-west-1",
            "yAxis":{"left":{"min":0,"max":100,"label":"ms"}},
            "legend":{"position":"right"},
            "annotations":{"horizontal":[{"value":50,"label":"SLO","color":"#ff0000"},
                                         [{"value":10},{"value":20,"visible":false}]],
                           "vertical":[{"value":"2024-06-30T11:00:00Z"}]},
            "metrics":[
                ["App","Latency",{"id":"lat","label":"p99 ${MAX}","color":"#0a0","stat":"p99","period":300,"visible":false}],
                ["App","Errors"],
                [{"expression":"lat * 2","label":"double"}]
            ]}"##);
        assert_eq!(w.view, View::Bar);
        assert_eq!((w.width, w.height), (800, 250));
        assert_eq!(w.title.as_deref(), Some("Latency"));
        assert_eq!(NOW.millis() - w.end.millis(), 3_600_000);
        assert_eq!(NOW.millis() - w.start.millis(), 12 * 3_600_000);
        assert_eq!(w.offset_minutes, 90);
        assert_eq!(w.region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            w.y_axis,
            YAxis {
                min: Some(0.0),
                max: Some(100.0),
                label: Some("ms".into())
            }
        );
        assert_eq!(w.legend, LegendPosition::Right);
        assert_eq!(
            w.annotations,
            vec![
                HorizontalAnnotation {
                    value: 50.0,
                    label: Some("SLO".into()),
                    color: Some(Rgb(255, 0, 0))
                },
                HorizontalAnnotation {
                    value: 10.0,
                    label: None,
                    color: None
                },
            ]
        );
        let lat = &w.entries[0];
        assert_eq!(lat.id, "lat");
        assert_eq!(lat.label.as_deref(), Some("p99 ${MAX}"));
        assert_eq!(lat.color, Some(Rgb(0, 0xaa, 0)));
        assert_eq!(
            (lat.stat.as_str(), lat.period, lat.visible),
            ("p99", 300, false)
        );
        let errors = &w.entries[1];
        assert_eq!(
            (errors.id.as_str(), errors.stat.as_str(), errors.period),
            ("m1", "Maximum", 60)
        );
        assert_eq!(w.entries[2].id, "e2");
        assert_eq!(w.entries[2].source, Source::Expression("lat * 2".into()));
    }

    #[test]
    fn explicit_ids_are_not_reused() {
        let w = ok(r#"{"metrics":[["App","A"],["App","B",{"id":"m0"}]]}"#);
        let ids: Vec<&str> = w.entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["m0_1", "m0"]);
    }

    #[test]
    fn periods_too_fine_for_the_range_are_raised() {
        let w = ok(r#"{"start":"-P7D","metrics":[["App","A"],["App","B",{"period":3600}]]}"#);
        // 7 days and an hour in 1,440 buckets: 421 s, so 480.
        assert_eq!(w.entries[0].period, 480);
        assert_eq!(w.entries[1].period, 3600);
        let w = ok(r#"{"start":"-PT3H","period":1,"metrics":[["App","A"]]}"#);
        assert_eq!(w.entries[0].period, 60);
        let w = ok(r#"{"start":"-PT1H","period":1,"metrics":[["App","A"]]}"#);
        assert_eq!(
            w.entries[0].period, 60,
            "an hour and the rounding hour at 1 s is 7,200 buckets"
        );
        let w = ok(r#"{"start":"-PT10M","period":1,"metrics":[["App","A"]]}"#);
        assert_eq!(w.entries[0].period, 1, "600 buckets fit");
    }

    #[test]
    fn absolute_times_and_set_period_to_time_range() {
        let w = ok(r#"{"view":"pie","setPeriodToTimeRange":true,
            "start":"2024-06-30T08:00:00Z","end":"2024-06-30T10:00:00Z",
            "metrics":[["App","A"]]}"#);
        assert_eq!(
            w.start,
            Timestamp::parse_iso8601("2024-06-30T08:00:00Z").unwrap()
        );
        assert_eq!(w.entries[0].period, 7200);
    }

    #[test]
    fn relative_durations() {
        assert_eq!(parse_relative("-PT3H"), Some(3 * 3_600_000));
        assert_eq!(parse_relative("-P7D"), Some(7 * 86_400_000));
        assert_eq!(parse_relative("-P1W"), Some(7 * 86_400_000));
        assert_eq!(
            parse_relative("-P1DT12H30M"),
            Some(86_400_000 + 12 * 3_600_000 + 1_800_000)
        );
        assert_eq!(parse_relative("-PT0H"), Some(0));
        for bad in [
            "PT3H",
            "-PT",
            "-P",
            "-P3H",
            "-PT3D",
            "-PT3H3H",
            "-PTH",
            "-P1M",
            "-PT3.5H",
            "-PT9999999999S",
        ] {
            assert_eq!(parse_relative(bad), None, "{bad}");
        }
    }

    #[test]
    fn refusals_name_the_member() {
        assert_eq!(
            err("{not json"),
            "The field MetricWidget must be a valid JSON object."
        );
        assert_eq!(
            err("[1,2]"),
            "The field MetricWidget must be a valid JSON object."
        );
        let cases = [
            (r#"{}"#, "required property 'metrics'"),
            (r#"{"metrics":[]}"#, "/metrics"),
            (r#"{"metrics":[["App"]]}"#, "/metrics/0"),
            (r#"{"metrics":[["App","A","Dim"]]}"#, "/metrics/0"),
            (
                r#"{"metrics":[["App",1]]}"#,
                "only \"String\" type is allowed",
            ),
            (
                r#"{"metrics":[["App","A",{"stat":"Median"}]]}"#,
                "/metrics/0/2/stat",
            ),
            (
                r#"{"metrics":[["App","A",{"period":45}]]}"#,
                "/metrics/0/2/period",
            ),
            (
                r#"{"metrics":[["App","A",{"color":"red"}]]}"#,
                "/metrics/0/2/color",
            ),
            (r#"{"metrics":[[{"label":"x"}]]}"#, "'expression'"),
            (
                r#"{"metrics":[[{"expression":"m9 * 2"}]]}"#,
                "Unrecognized metric id m9",
            ),
            (r#"{"metrics":[["App","A"]],"width":0}"#, "/width"),
            (r#"{"metrics":[["App","A"]],"height":2001}"#, "/height"),
            (r#"{"metrics":[["App","A"]],"width":"600"}"#, "/width"),
            (r#"{"metrics":[["App","A"]],"view":"gauge"}"#, "/view"),
            (r#"{"metrics":[["App","A"]],"start":"yesterday"}"#, "/start"),
            (
                r#"{"metrics":[["App","A"]],"start":"-PT1H","end":"-PT2H"}"#,
                "before end",
            ),
            (
                r#"{"metrics":[["App","A"]],"legend":{"position":"top"}}"#,
                "/legend/position",
            ),
            (
                r#"{"metrics":[["App","A"]],"yAxis":{"left":{"min":5,"max":1}}}"#,
                "/yAxis/left",
            ),
            (
                r#"{"metrics":[["App","A"]],"annotations":{"horizontal":[{"label":"x"}]}}"#,
                "/annotations/horizontal/0",
            ),
            (r#"{"metrics":[["App","A"]],"timezone":"CET"}"#, "/timezone"),
        ];
        for (json, needle) in cases {
            let m = err(json);
            assert!(m.contains(needle), "{json}: {m:?} lacks {needle:?}");
        }
        let many = format!(
            r#"{{"metrics":[{}]}}"#,
            vec![r#"["App","A"]"#; 501].join(",")
        );
        assert!(err(&many).contains("500"));
        let big = format!(
            r#"{{"title":"{}","metrics":[["App","A"]]}}"#,
            "x".repeat(MAX_WIDGET_BYTES)
        );
        assert!(err(&big).contains("102400 bytes"));
        // Exactly 500 metrics is fine.
        let five_hundred = format!(
            r#"{{"metrics":[{}]}}"#,
            vec![r#"["App","A"]"#; 500].join(",")
        );
        assert_eq!(ok(&five_hundred).entries.len(), 500);
    }

    #[test]
    fn results_become_coloured_series() {
        let w = ok(r##"{"metrics":[["App","A"],["App","B",{"color":"#000000"}],["App","C"]]}"##);
        let result = |id: &str, label: &str| DataResult {
            id: id.into(),
            label: label.into(),
            timestamps: vec![Timestamp::from_secs(2), Timestamp::from_secs(1)],
            values: vec![2.0, 1.0],
            complete: true,
            messages: vec![],
        };
        let series = w.chart_series(vec![
            result("m0", "A"),
            result("m1", "B"),
            result("m2", "C"),
        ]);
        let colors: Vec<Rgb> = series.iter().map(|s| s.color).collect();
        assert_eq!(colors, [PALETTE[0], Rgb(0, 0, 0), PALETTE[1]]);
        assert_eq!(series[0].points, vec![(1000, 1.0), (2000, 2.0)]);
    }
}
