//! Rolled-up buckets of the 5-minute and 1-hour tiers (`spec/cloudwatch.md`
//! §3.1, §4.6): exact SampleCount, Sum, Minimum and Maximum, plus a mergeable
//! value distribution for the percentile family.
//!
//! The distribution is exact (value → weight) while a bucket holds at most
//! [`EXACT_LIMIT`] distinct values; beyond that it becomes a log-bucketed
//! sketch (DDSketch-style) whose representative values are within
//! [`RELATIVE_ERROR`] of every value they stand for. Percentiles exist only for
//! non-negative raw-equivalent data (§4.4), so the sketch needs no negative
//! side: a negative value or a non-raw-equivalent statistic set marks the
//! bucket `no_percentiles` and drops its distribution.

use std::collections::BTreeMap;

use super::codec::{get_f64, get_ivarint, get_varint, put_f64, put_ivarint, put_varint};
use super::stats::Bucket;

/// Distinct values kept exactly per bucket (§4.6).
pub const EXACT_LIMIT: usize = 10_000;
/// Relative error bound of sketch representatives.
pub const RELATIVE_ERROR: f64 = 0.01;

fn gamma() -> f64 {
    (1.0 + RELATIVE_ERROR) / (1.0 - RELATIVE_ERROR)
}

/// A value distribution of non-negative values.
#[derive(Debug, Clone, PartialEq)]
pub enum Dist {
    /// Value bits (non-negative, so bit order is numeric order) → weight.
    Exact(BTreeMap<u64, f64>),
    /// Weight of zeros, and log-bucket index → weight.
    Sketch {
        /// Weight of exact zeros.
        zeros: f64,
        /// Bucket `i` holds values in `(γ^(i-1), γ^i]`.
        bins: BTreeMap<i32, f64>,
    },
}

impl Default for Dist {
    fn default() -> Self {
        Dist::Exact(BTreeMap::new())
    }
}

fn bin_of(v: f64) -> i32 {
    (v.ln() / gamma().ln()).ceil() as i32
}

/// The representative of bin `i`: within [`RELATIVE_ERROR`] of every value in it.
fn representative(i: i32) -> f64 {
    let g = gamma();
    2.0 * g.powi(i) / (g + 1.0)
}

impl Dist {
    fn add(&mut self, value: f64, weight: f64) {
        let value = if value == 0.0 { 0.0 } else { value };
        match self {
            Dist::Exact(map) => {
                *map.entry(value.to_bits()).or_insert(0.0) += weight;
                if map.len() > EXACT_LIMIT {
                    self.make_sketch();
                }
            }
            Dist::Sketch { zeros, bins } => {
                if value == 0.0 {
                    *zeros += weight;
                } else {
                    *bins.entry(bin_of(value)).or_insert(0.0) += weight;
                }
            }
        }
    }

    fn make_sketch(&mut self) {
        if let Dist::Exact(map) = self {
            let mut zeros = 0.0;
            let mut bins = BTreeMap::new();
            for (bits, w) in std::mem::take(map) {
                let v = f64::from_bits(bits);
                if v == 0.0 {
                    zeros += w;
                } else {
                    *bins.entry(bin_of(v)).or_insert(0.0) += w;
                }
            }
            *self = Dist::Sketch { zeros, bins };
        }
    }

    fn merge(&mut self, other: &Dist) {
        match other {
            Dist::Exact(map) => {
                for (bits, w) in map {
                    self.add(f64::from_bits(*bits), *w);
                }
            }
            Dist::Sketch { zeros, bins } => {
                self.make_sketch();
                if let Dist::Sketch { zeros: z, bins: b } = self {
                    *z += zeros;
                    for (i, w) in bins {
                        *b.entry(*i).or_insert(0.0) += w;
                    }
                }
            }
        }
    }

    /// `(value, weight)` in ascending value order.
    fn samples(&self) -> Vec<(f64, f64)> {
        match self {
            Dist::Exact(map) => map.iter().map(|(b, w)| (f64::from_bits(*b), *w)).collect(),
            Dist::Sketch { zeros, bins } => {
                let mut out = Vec::with_capacity(bins.len() + 1);
                if *zeros > 0.0 {
                    out.push((0.0, *zeros));
                }
                out.extend(bins.iter().map(|(i, w)| (representative(*i), *w)));
                out
            }
        }
    }
}

/// One rolled-up bucket of one unit.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Summary {
    /// SampleCount.
    pub count: f64,
    /// Sum.
    pub sum: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
    /// The percentile family has no value for this bucket (§4.4).
    pub no_percentiles: bool,
    /// Values, when percentiles are available.
    pub dist: Dist,
}

impl Summary {
    /// The summary of a bucket of raw samples.
    pub fn of_bucket(bucket: &Bucket) -> Summary {
        let mut dist = Dist::default();
        if !bucket.no_percentiles() {
            for (v, w) in bucket.samples() {
                dist.add(*v, *w);
            }
        }
        Summary {
            count: bucket.count,
            sum: bucket.sum,
            min: bucket.min,
            max: bucket.max,
            no_percentiles: bucket.no_percentiles(),
            dist,
        }
    }

    /// Adds `other` into this summary (§3.3).
    pub fn merge(&mut self, other: &Summary) {
        if self.count == 0.0 && self.dist == Dist::default() && !self.no_percentiles {
            *self = other.clone();
            return;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.no_percentiles |= other.no_percentiles;
        if self.no_percentiles {
            self.dist = Dist::default();
        } else {
            self.dist.merge(&other.dist);
        }
    }

    /// Adds this summary into a query bucket.
    pub fn add_to(&self, bucket: &mut Bucket) {
        bucket.add_totals(
            self.count,
            self.sum,
            self.min,
            self.max,
            self.no_percentiles,
        );
        if !self.no_percentiles {
            for (v, w) in self.dist.samples() {
                bucket.push_sample(v, w);
            }
        }
    }

    /// Appends the stored form.
    pub fn encode(&self, out: &mut Vec<u8>) {
        for v in [self.count, self.sum, self.min, self.max] {
            put_f64(out, v);
        }
        match &self.dist {
            _ if self.no_percentiles => out.push(0),
            Dist::Exact(map) => {
                out.push(1);
                put_varint(out, map.len() as u64);
                for (bits, w) in map {
                    put_f64(out, f64::from_bits(*bits));
                    put_f64(out, *w);
                }
            }
            Dist::Sketch { zeros, bins } => {
                out.push(2);
                put_f64(out, *zeros);
                put_varint(out, bins.len() as u64);
                let mut previous = 0i64;
                for (i, w) in bins {
                    put_ivarint(out, i64::from(*i) - previous);
                    previous = i64::from(*i);
                    put_f64(out, *w);
                }
            }
        }
    }

    /// Reads the stored form.
    pub fn decode(buf: &[u8], pos: &mut usize) -> Result<Summary, String> {
        let count = get_f64(buf, pos)?;
        let sum = get_f64(buf, pos)?;
        let min = get_f64(buf, pos)?;
        let max = get_f64(buf, pos)?;
        let tag = *buf.get(*pos).ok_or("truncated summary")?;
        *pos += 1;
        let limit = buf.len();
        let (no_percentiles, dist) = match tag {
            0 => (true, Dist::default()),
            1 => {
                let n = get_varint(buf, pos)? as usize;
                if n > limit {
                    return Err("implausible distribution size".into());
                }
                let mut map = BTreeMap::new();
                for _ in 0..n {
                    let v = get_f64(buf, pos)?;
                    map.insert(v.to_bits(), get_f64(buf, pos)?);
                }
                (false, Dist::Exact(map))
            }
            2 => {
                let zeros = get_f64(buf, pos)?;
                let n = get_varint(buf, pos)? as usize;
                if n > limit {
                    return Err("implausible sketch size".into());
                }
                let mut bins = BTreeMap::new();
                let mut i = 0i64;
                for _ in 0..n {
                    i += get_ivarint(buf, pos)?;
                    let index = i32::try_from(i).map_err(|_| "sketch index out of range")?;
                    bins.insert(index, get_f64(buf, pos)?);
                }
                (false, Dist::Sketch { zeros, bins })
            }
            other => return Err(format!("unknown distribution tag {other}")),
        };
        Ok(Summary {
            count,
            sum,
            min,
            max,
            no_percentiles,
            dist,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::model::Sample;
    use crate::metrics::stats::parse_extended;
    use proptest::prelude::*;

    fn bucket_of(values: &[f64]) -> Bucket {
        let mut b = Bucket::default();
        for v in values {
            b.add(&Sample::Value(*v));
        }
        b
    }

    fn stat(b: &mut Bucket, s: &str) -> Option<f64> {
        b.extended(&parse_extended(s).expect("statistic parses"))
    }

    #[test]
    fn exact_summaries_answer_like_raw_values() {
        let values: Vec<f64> = (0..500).map(|i| f64::from(i % 97) * 1.5).collect();
        let mut raw = bucket_of(&values);
        // Split in three, summarise, merge: still exact.
        let mut merged = Summary::default();
        for chunk in values.chunks(170) {
            merged.merge(&Summary::of_bucket(&bucket_of(chunk)));
        }
        assert!(matches!(merged.dist, Dist::Exact(_)));
        let mut from_summary = Bucket::default();
        merged.add_to(&mut from_summary);
        assert_eq!(
            (
                from_summary.count,
                from_summary.sum,
                from_summary.min,
                from_summary.max
            ),
            (raw.count, raw.sum, raw.min, raw.max)
        );
        for s in [
            "p50",
            "p99.9",
            "TM(10%:90%)",
            "WM(5%:95%)",
            "PR(10:50)",
            "IQM",
            "TC(:20)",
        ] {
            assert_eq!(stat(&mut from_summary, s), stat(&mut raw, s), "{s}");
        }
    }

    #[test]
    fn negatives_and_sets_disable_percentiles_after_merge() {
        let mut a = Summary::of_bucket(&bucket_of(&[1.0, 2.0]));
        a.merge(&Summary::of_bucket(&bucket_of(&[-1.0])));
        assert!(a.no_percentiles);
        assert_eq!((a.count, a.sum, a.min, a.max), (3.0, 2.0, -1.0, 2.0));
        let mut b = Bucket::default();
        a.add_to(&mut b);
        assert_eq!(stat(&mut b, "p50"), None);
        assert_eq!(b.average(), 2.0 / 3.0);
    }

    proptest! {
        /// Past the exact limit, every percentile is within 1 % of the exact one.
        #[test]
        fn sketch_percentiles_are_within_one_percent(
            seed in 0u64..1000,
            p in 1u32..=100,
        ) {
            let n = EXACT_LIMIT + 5_000;
            let values: Vec<f64> = (0..n as u64)
                .map(|i| {
                    let x = (i.wrapping_mul(6364136223846793005).wrapping_add(seed.wrapping_mul(1442695040888963407)) >> 11) as f64;
                    1e-3 + (x / (1u64 << 53) as f64) * 1e6
                })
                .collect();
            let mut exact = bucket_of(&values);
            let summary = Summary::of_bucket(&exact);
            prop_assert!(matches!(summary.dist, Dist::Sketch { .. }), "a sketch");
            let mut approx = Bucket::default();
            summary.add_to(&mut approx);
            let s = format!("p{p}");
            let (e, a) = (stat(&mut exact, &s).unwrap(), stat(&mut approx, &s).unwrap());
            prop_assert!((a - e).abs() <= RELATIVE_ERROR * e, "{s}: exact {e} sketch {a}");
            // Basic statistics stay exact.
            prop_assert_eq!((approx.count, approx.sum), (exact.count, exact.sum));
        }
    }

    #[test]
    fn encoding_round_trips_and_rejects_garbage() {
        let exact = Summary::of_bucket(&bucket_of(&[0.0, 1.0, 1.0, 2.5]));
        let sketch = {
            let mut s = exact.clone();
            s.dist.make_sketch();
            s
        };
        let off = Summary::of_bucket(&bucket_of(&[-3.0]));
        for s in [exact, sketch, off] {
            let mut buf = Vec::new();
            s.encode(&mut buf);
            assert_eq!(Summary::decode(&buf, &mut 0).unwrap(), s);
            for cut in 0..buf.len() {
                assert!(Summary::decode(&buf[..cut], &mut 0).is_err());
            }
        }
    }
}
