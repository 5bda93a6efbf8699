//! One series' stored data across the retention tiers (`spec/cloudwatch.md`
//! §3.1–3.2), and how a statistics query is answered from them.
//!
//! - Raw points (T0 and T1): full precision, as encoded blocks per UTC day,
//!   plus the head of points still only in the WAL. Sub-minute points are kept
//!   raw as long as minute points are; the period rules stop them from being
//!   read at sub-minute periods after three hours.
//! - T2 (5 minutes) and T3 (1 hour): [`Summary`] per bucket and unit.
//!
//! Days move down the tiers as they age (a background job, see the store):
//! raw days older than 15 days fold into T2 below the watermark `w2`, T2 days
//! older than 63 days fold into T3 below `w3`, T3 days older than 455 days go.
//! A query never depends on when that job last ran: above a watermark the
//! finer data is folded on the fly, so a bucket gets the same answer before
//! and after its day moves.

use std::collections::BTreeMap;
use std::sync::Arc;

use trailwatch_types::Timestamp;

use super::codec::decode_block;
use super::get::StatisticsQuery;
use super::model::{Point, Unit};
use super::stats::Bucket;
use super::summary::Summary;

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;
/// Sub-minute data is readable at sub-minute periods for this long.
pub const HIGH_RES_MS: i64 = 3 * 3_600_000;
/// Raw (1-minute) data.
pub const RAW_MS: i64 = 15 * DAY_MS;
/// The 5-minute tier.
pub const T2_MS: i64 = 63 * DAY_MS;
/// The 1-hour tier.
pub const T3_MS: i64 = 455 * DAY_MS;
/// Resolution of T2 in milliseconds.
pub const T2_RES_MS: i64 = 300_000;
/// Resolution of T3 in milliseconds.
pub const T3_RES_MS: i64 = 3_600_000;

/// The UTC day (its first millisecond) of `t`.
pub fn day_of(t: i64) -> i64 {
    t.div_euclid(DAY_MS) * DAY_MS
}

/// Where the tiers meet: raw data below `w2` is in T2, T2 below `w3` in T3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Watermarks {
    /// Raw days below this have been folded into T2.
    pub w2: i64,
    /// T2 days below this have been folded into T3.
    pub w3: i64,
}

impl Default for Watermarks {
    fn default() -> Self {
        Watermarks {
            w2: i64::MIN,
            w3: i64::MIN,
        }
    }
}

/// A query bucket keyed by (bucket index, unit).
pub type KeyedBucket = ((i64, Unit), Bucket);

/// An encoded block of raw points, sorted by time.
#[derive(Debug, Clone)]
pub struct Block {
    /// Earliest point (ms).
    pub min_t: i64,
    /// Latest point (ms).
    pub max_t: i64,
    /// Number of points.
    pub points: usize,
    /// The [`super::codec`] encoding.
    pub bytes: Arc<[u8]>,
}

/// The stored data of one series (one metric identity, every unit).
#[derive(Debug, Default)]
pub struct SeriesData {
    /// Sealed raw blocks by UTC day.
    pub days: BTreeMap<i64, Vec<Block>>,
    /// Points only in the WAL yet, with the WAL sequence that carried them.
    pub head: Vec<(u64, Point)>,
    /// Points a flush is writing into a segment; still visible here.
    pub frozen: Arc<Vec<Point>>,
    /// The 5-minute tier.
    pub t2: BTreeMap<(i64, Unit), Summary>,
    /// The 1-hour tier.
    pub t3: BTreeMap<(i64, Unit), Summary>,
}

/// The points of `blocks`, in time order (stable: equal times keep block order).
pub fn merge_blocks(blocks: &[Block]) -> Result<Vec<Point>, String> {
    let mut out = Vec::new();
    for block in blocks {
        out.extend(decode_block(&block.bytes)?);
    }
    out.sort_by_key(|p| p.timestamp);
    Ok(out)
}

/// Folds raw points into summaries of `res_ms` buckets.
pub fn fold_points<'a>(
    points: impl IntoIterator<Item = &'a Point>,
    res_ms: i64,
) -> BTreeMap<(i64, Unit), Summary> {
    let mut buckets: BTreeMap<(i64, Unit), Bucket> = BTreeMap::new();
    for p in points {
        let t = p.timestamp.millis();
        buckets
            .entry((t.div_euclid(res_ms) * res_ms, p.unit))
            .or_default()
            .add(&p.sample);
    }
    buckets
        .into_iter()
        .map(|(k, b)| (k, Summary::of_bucket(&b)))
        .collect()
}

/// Folds summaries into coarser `res_ms` buckets.
pub fn fold_summaries<'a>(
    summaries: impl IntoIterator<Item = (&'a (i64, Unit), &'a Summary)>,
    res_ms: i64,
) -> BTreeMap<(i64, Unit), Summary> {
    let mut out: BTreeMap<(i64, Unit), Summary> = BTreeMap::new();
    for ((t, unit), s) in summaries {
        out.entry((t.div_euclid(res_ms) * res_ms, *unit))
            .or_default()
            .merge(s);
    }
    out
}

/// Which stored data answers a bucket starting at `b` (ms) of period `p` (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tier {
    Raw,
    T2,
    T3,
    None,
}

fn tier_for(b: i64, p: i64, now: i64) -> Tier {
    let minute_multiple = p % 60_000 == 0;
    if b >= now - if minute_multiple { RAW_MS } else { HIGH_RES_MS } {
        Tier::Raw
    } else if !minute_multiple {
        Tier::None
    } else if p % T2_RES_MS == 0 && b % T2_RES_MS == 0 && b >= now - T2_MS {
        Tier::T2
    } else if p % T3_RES_MS == 0 && b % T3_RES_MS == 0 && b >= now - T3_MS {
        Tier::T3
    } else {
        Tier::None
    }
}

impl SeriesData {
    /// Every raw point with `lo <= t < hi` (ms), in no particular order.
    pub fn raw_points(&self, lo: i64, hi: i64) -> Result<Vec<Point>, String> {
        let mut out = Vec::new();
        if lo >= hi {
            return Ok(out);
        }
        // A day's blocks hold only that day's points.
        for (_, blocks) in self.days.range(day_of(lo)..=day_of(hi - 1)) {
            for block in blocks {
                if block.min_t >= hi || block.max_t < lo {
                    continue;
                }
                let points = decode_block(&block.bytes)?;
                out.extend(points.into_iter().filter(|p| {
                    let t = p.timestamp.millis();
                    lo <= t && t < hi
                }));
            }
        }
        let inside = |p: &&Point| {
            let t = p.timestamp.millis();
            lo <= t && t < hi
        };
        out.extend(self.head.iter().map(|(_, p)| p).filter(inside).cloned());
        out.extend(self.frozen.iter().filter(inside).cloned());
        Ok(out)
    }

    /// Every raw point of `day`, in time order.
    pub fn day_points(&self, day: i64) -> Result<Vec<Point>, String> {
        merge_blocks(self.days.get(&day).map_or(&[][..], Vec::as_slice))
    }

    /// Answers `q` at `now`: the non-empty buckets by (bucket index, unit),
    /// in that order.
    pub fn answer(
        &self,
        q: &StatisticsQuery,
        now: Timestamp,
        marks: Watermarks,
    ) -> Result<Vec<KeyedBucket>, String> {
        let mut out = Buckets {
            items: Vec::new(),
            sorted: true,
            lean: q.extended.is_empty(),
        };
        if q.empty {
            return Ok(Vec::new());
        }
        let (start, end, p, now) = (
            q.start.millis(),
            q.end.millis(),
            q.period * 1000,
            now.millis(),
        );
        let wanted = |u: Unit| q.unit.is_none_or(|w| w == u);
        let buckets = (end - start + p - 1) / p;
        // Tiers only get finer with time, and a bucket's tier changes only
        // where its start crosses a retention line: one run of buckets per
        // tier, found without visiting every bucket.
        let lines = [now - T3_MS, now - T2_MS, now - RAW_MS, now - HIGH_RES_MS];
        let mut runs: Vec<(Tier, i64, i64)> = Vec::new();
        let mut k = 0;
        while k < buckets {
            let b = start + k * p;
            let tier = tier_for(b, p, now);
            let next = lines
                .iter()
                .filter(|line| **line > b)
                .min()
                .map_or(buckets, |line| (line - start + p - 1).div_euclid(p))
                .clamp(k + 1, buckets);
            match runs.last_mut() {
                Some((t, _, hi)) if *t == tier => *hi = next,
                _ => runs.push((tier, k, next)),
            }
            k = next;
        }
        for (tier, first, last) in runs {
            let lo = start + first * p;
            let hi = (start + last * p).min(end);
            let index = |t: i64| (t - start).div_euclid(p);
            let add_summaries =
                |out: &mut Buckets, map: &BTreeMap<(i64, Unit), Summary>, from: i64, to: i64| {
                    for ((t, unit), s) in map.range((from, Unit::MIN)..) {
                        if *t >= to {
                            break;
                        }
                        if wanted(*unit) {
                            s.add_to(out.at((index(*t), *unit)));
                        }
                    }
                };
            let raw_from = match tier {
                Tier::None => continue,
                Tier::Raw => lo,
                Tier::T2 => {
                    add_summaries(&mut out, &self.t2, lo.max(marks.w3), hi.min(marks.w2));
                    lo.max(marks.w2)
                }
                Tier::T3 => {
                    add_summaries(&mut out, &self.t3, lo, hi.min(marks.w3));
                    add_summaries(&mut out, &self.t2, lo.max(marks.w3), hi.min(marks.w2));
                    lo.max(marks.w2)
                }
            };
            if raw_from < hi {
                let mut points = self.raw_points(raw_from, hi)?;
                // Blocks are sorted; the head may not be.
                points.sort_by_key(|p| p.timestamp);
                for point in points {
                    if wanted(point.unit) {
                        out.at((index(point.timestamp.millis()), point.unit))
                            .add(&point.sample);
                    }
                }
            }
        }
        Ok(out.finish())
    }
}

/// Buckets in the order they are filled, which is almost always key order:
/// appending beats a map lookup per point; anything out of order is merged
/// at the end.
struct Buckets {
    items: Vec<KeyedBucket>,
    sorted: bool,
    lean: bool,
}

impl Buckets {
    fn at(&mut self, key: (i64, Unit)) -> &mut Bucket {
        match self.items.last() {
            Some((last, _)) if *last == key => {}
            last => {
                if last.is_some_and(|(k, _)| *k > key) {
                    self.sorted = false;
                }
                let bucket = if self.lean {
                    Bucket::lean()
                } else {
                    Bucket::default()
                };
                self.items.push((key, bucket));
            }
        }
        let last = self.items.len() - 1;
        &mut self.items[last].1
    }

    fn finish(mut self) -> Vec<KeyedBucket> {
        if self.sorted {
            return self.items;
        }
        self.items.sort_by_key(|(k, _)| *k);
        let mut out: Vec<KeyedBucket> = Vec::with_capacity(self.items.len());
        for (key, bucket) in self.items {
            match out.last_mut() {
                Some((last, into)) if *last == key => into.absorb(bucket),
                _ => out.push((key, bucket)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::codec::encode_block;
    use crate::metrics::get::{validate_statistics, StatisticsRequest};
    use crate::metrics::model::{MetricId, Sample};

    fn tier(b: &str, p: i64, now: &str) -> Tier {
        let ms = |s: &str| Timestamp::parse_iso8601(s).expect("timestamp").millis();
        tier_for(ms(b), p * 1000, ms(now))
    }

    #[test]
    fn tier_boundaries() {
        let now = "2024-06-30T12:00:00Z";
        // Sub-minute periods: three hours, to the millisecond.
        assert_eq!(tier("2024-06-30T09:00:00Z", 10, now), Tier::Raw);
        assert_eq!(tier("2024-06-30T08:59:50Z", 10, now), Tier::None);
        // Minute periods: fifteen days of raw data.
        assert_eq!(tier("2024-06-15T12:00:00Z", 60, now), Tier::Raw);
        assert_eq!(tier("2024-06-15T11:59:00Z", 60, now), Tier::None);
        assert_eq!(tier("2024-06-15T11:55:00Z", 300, now), Tier::T2);
        assert_eq!(tier("2024-06-15T11:56:00Z", 300, now), Tier::None);
        // 63 days of the 5-minute tier, then hours for 455 days.
        assert_eq!(tier("2024-04-28T12:00:00Z", 300, now), Tier::T2);
        assert_eq!(tier("2024-04-28T11:55:00Z", 300, now), Tier::None);
        assert_eq!(tier("2024-04-28T11:00:00Z", 3600, now), Tier::T3);
        assert_eq!(tier("2023-04-02T12:00:00Z", 3600, now), Tier::T3);
        assert_eq!(tier("2023-04-02T11:00:00Z", 3600, now), Tier::None);
    }

    fn point(t: i64, v: f64) -> Point {
        Point {
            timestamp: Timestamp::from_millis(t),
            unit: Unit::NONE,
            sample: Sample::Value(v),
        }
    }

    fn query(start: i64, end: i64, period: i64, now: Timestamp) -> StatisticsQuery {
        let metric = MetricId {
            namespace: "N".into(),
            name: "M".into(),
            dimensions: vec![],
        };
        validate_statistics(
            &StatisticsRequest::for_metric(
                &metric,
                Timestamp::from_millis(start),
                Timestamp::from_millis(end),
                period,
                &["p50", "p99"],
            ),
            now,
        )
        .expect("valid query")
    }

    /// (bucket, sum, count, p50, p99).
    type Row = (i64, f64, f64, Option<f64>, Option<f64>);

    fn summarize(buckets: &[KeyedBucket]) -> Vec<Row> {
        let p50 = super::super::stats::parse_extended("p50").unwrap();
        let p99 = super::super::stats::parse_extended("p99").unwrap();
        buckets
            .iter()
            .map(|((k, _), b)| {
                let mut b = b.clone();
                (*k, b.sum, b.count, b.extended(&p50), b.extended(&p99))
            })
            .collect()
    }

    /// A series with one value a minute for 100 days, answered before and
    /// after the days move down the tiers: the same buckets either way.
    #[test]
    fn folding_never_changes_an_answer() {
        let now = Timestamp::parse_iso8601("2024-06-30T12:00:00Z").unwrap();
        let first = day_of(now.millis() - 100 * DAY_MS);
        let points: Vec<Point> = (0..100 * 1440)
            .map(|i| point(first + i * 60_000, ((i * 7919) % 1000) as f64 / 10.0))
            .collect();
        let mut series = SeriesData::default();
        for chunk in points.chunks(1440) {
            series.days.insert(
                day_of(chunk[0].timestamp.millis()),
                vec![Block {
                    min_t: chunk[0].timestamp.millis(),
                    max_t: chunk[chunk.len() - 1].timestamp.millis(),
                    points: chunk.len(),
                    bytes: encode_block(chunk).unwrap().into(),
                }],
            );
        }
        let queries = [
            // Old enough for hours only.
            query(
                now.millis() - 90 * DAY_MS,
                now.millis() - 80 * DAY_MS,
                86_400,
                now,
            ),
            // The 5-minute tier, across the 15-day line into raw data.
            query(
                now.millis() - 20 * DAY_MS,
                now.millis() - 10 * DAY_MS,
                3600,
                now,
            ),
            query(
                now.millis() - 16 * DAY_MS,
                now.millis() - 15 * DAY_MS + 3_600_000,
                300,
                now,
            ),
        ];
        let before: Vec<_> = queries
            .iter()
            .map(|q| summarize(&series.answer(q, now, Watermarks::default()).unwrap()))
            .collect();
        assert!(before.iter().all(|b| !b.is_empty()));
        // Fold raw days older than 15 days into T2, T2 older than 63 into T3.
        let w2 = day_of(now.millis() - RAW_MS);
        let w3 = day_of(now.millis() - T2_MS);
        let old: Vec<i64> = series.days.range(..w2).map(|(d, _)| *d).collect();
        for day in old {
            let pts = series.day_points(day).unwrap();
            series.t2.extend(fold_points(&pts, T2_RES_MS));
            series.days.remove(&day);
        }
        let t2_old: Vec<(i64, Unit)> = series
            .t2
            .range(..(w3, Unit::NONE))
            .map(|(k, _)| *k)
            .collect();
        let moved: BTreeMap<_, _> = t2_old
            .iter()
            .map(|k| (*k, series.t2.remove(k).unwrap()))
            .collect();
        series.t3.extend(fold_summaries(&moved, T3_RES_MS));
        let marks = Watermarks { w2, w3 };
        for (q, expected) in queries.iter().zip(&before) {
            let after = summarize(&series.answer(q, now, marks).unwrap());
            assert_eq!(after.len(), expected.len());
            for (a, e) in after.iter().zip(expected) {
                // Counts and percentiles are exact; sums only up to the order
                // of floating-point additions.
                assert_eq!((a.0, a.2, a.3, a.4), (e.0, e.2, e.3, e.4));
                assert!((a.1 - e.1).abs() <= 1e-9 * e.1.abs(), "{a:?} vs {e:?}");
            }
        }
        // Daily sums of the hourly tier equal the naive sums of the raw values.
        let day_sum: f64 = points
            .iter()
            .filter(|p| {
                let t = p.timestamp.millis();
                t >= queries[0].start.millis() && t < queries[0].start.millis() + DAY_MS
            })
            .map(|p| match p.sample {
                Sample::Value(v) => v,
                _ => 0.0,
            })
            .sum();
        let got = before[0][0].1;
        assert!((got - day_sum).abs() < 1e-6 * day_sum, "{got} vs {day_sum}");
        assert_eq!(before[0][0].2, 1440.0);
    }
}
