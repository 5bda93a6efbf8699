//! Statistics over one bucket (`spec/cloudwatch.md` §4): the five basic ones
//! and the percentile family (pNN, TM, WM, TC, TS, PR, IQM) computed exactly,
//! nearest rank, with percentage arithmetic in exact decimals.

use super::model::Sample;

/// A percentage with up to 10 decimals, as an integer count of 1e-10 %.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percent(u64);

const PERCENT_SCALE: u64 = 10_000_000_000;

impl Percent {
    fn parse(s: &str) -> Option<Percent> {
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        if whole.is_empty()
            || whole.len() > 3
            || frac.len() > 10
            || !whole.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        if s.contains('.') && frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let whole: u64 = whole.parse().ok()?;
        let frac_scaled: u64 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<10}").parse().ok()?
        };
        let value = whole.checked_mul(PERCENT_SCALE)?.checked_add(frac_scaled)?;
        (value <= 100 * PERCENT_SCALE).then_some(Percent(value))
    }

    /// `floor(p/100 × n)` for integral `n`, exactly; `n` may be fractional (weighted counts).
    fn of_floor(self, n: f64) -> f64 {
        match integral(n) {
            Some(n) => ((u128::from(self.0) * n) / (100 * u128::from(PERCENT_SCALE))) as f64,
            None => (self.0 as f64 / (100.0 * PERCENT_SCALE as f64) * n).floor(),
        }
    }

    /// `ceil(p/100 × n)`, exactly for integral `n`.
    fn of_ceil(self, n: f64) -> f64 {
        match integral(n) {
            Some(n) => (u128::from(self.0) * n).div_ceil(100 * u128::from(PERCENT_SCALE)) as f64,
            None => (self.0 as f64 / (100.0 * PERCENT_SCALE as f64) * n).ceil(),
        }
    }
}

fn integral(n: f64) -> Option<u128> {
    (n >= 0.0 && n.fract() == 0.0 && n < 1e30).then_some(n as u128)
}

/// Bounds of a trimmed statistic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bounds {
    /// Ranks between two percentages (omitted = 0 % / 100 %).
    Percent(Option<Percent>, Option<Percent>),
    /// Values `a < x <= b` (omitted = −∞ / +∞).
    Absolute(Option<f64>, Option<f64>),
}

/// Which trimmed statistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trim {
    /// Trimmed mean.
    Mean,
    /// Winsorized mean.
    Winsorized,
    /// Trimmed count.
    Count,
    /// Trimmed sum.
    Sum,
}

/// A parsed extended statistic.
#[derive(Debug, Clone, PartialEq)]
pub enum Extended {
    /// `pNN`.
    Percentile(Percent),
    /// `TM/WM/TC/TS(…)`, `tm99`, `IQM`.
    Trimmed(Trim, Bounds),
    /// `PR(a:b)`.
    PercentileRank(Option<f64>, Option<f64>),
}

fn parse_absolute(s: &str) -> Option<Option<f64>> {
    if s.is_empty() {
        return Some(None);
    }
    let valid = s
        .trim_start_matches('-')
        .split(['e', 'E'])
        .enumerate()
        .all(|(i, part)| {
            if i == 0 {
                !part.is_empty()
                    && part
                        .split('.')
                        .all(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            } else {
                !part.trim_start_matches(['+', '-']).is_empty()
                    && part
                        .trim_start_matches(['+', '-'])
                        .bytes()
                        .all(|b| b.is_ascii_digit())
            }
        });
    if !valid {
        return None;
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite()).map(Some)
}

/// Parses an extended statistic name (§4.2); `None` when it is not supported.
pub fn parse_extended(s: &str) -> Option<Extended> {
    if s == "IQM" {
        return Some(Extended::Trimmed(
            Trim::Mean,
            Bounds::Percent(Percent::parse("25"), Percent::parse("75")),
        ));
    }
    if let Some(p) = s.strip_prefix('p') {
        return Percent::parse(p).map(Extended::Percentile);
    }
    for (short, trim) in [
        ("tm", Trim::Mean),
        ("wm", Trim::Winsorized),
        ("tc", Trim::Count),
        ("ts", Trim::Sum),
    ] {
        if let Some(p) = s.strip_prefix(short) {
            return Percent::parse(p)
                .map(|hi| Extended::Trimmed(trim, Bounds::Percent(None, Some(hi))));
        }
    }
    let open = s.find('(')?;
    let (name, rest) = s.split_at(open);
    let inner = rest.strip_prefix('(')?.strip_suffix(')')?;
    let (lo, hi) = inner.split_once(':')?;
    if lo.is_empty() && hi.is_empty() {
        return None;
    }
    let percent = |b: &str| -> Option<Option<Percent>> {
        if b.is_empty() {
            Some(None)
        } else {
            b.strip_suffix('%').and_then(Percent::parse).map(Some)
        }
    };
    let is_percent = lo.ends_with('%') || hi.ends_with('%');
    let bounds = if is_percent {
        Bounds::Percent(percent(lo)?, percent(hi)?)
    } else {
        Bounds::Absolute(parse_absolute(lo)?, parse_absolute(hi)?)
    };
    match (name, bounds) {
        ("PR", Bounds::Absolute(a, b)) => Some(Extended::PercentileRank(a, b)),
        ("TM", b) => Some(Extended::Trimmed(Trim::Mean, b)),
        ("WM", b) => Some(Extended::Trimmed(Trim::Winsorized, b)),
        ("TC", b) => Some(Extended::Trimmed(Trim::Count, b)),
        ("TS", b) => Some(Extended::Trimmed(Trim::Sum, b)),
        _ => None,
    }
}

/// The contents of one bucket.
#[derive(Debug, Clone, Default)]
pub struct Bucket {
    /// Σ counts.
    pub count: f64,
    /// Σ values.
    pub sum: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
    /// Raw samples `(value, weight)`, while percentiles are available.
    samples: Vec<(f64, f64)>,
    /// A non-raw-equivalent statistic set or a negative value contributed.
    no_percentiles: bool,
    /// Keeps no samples: for queries without extended statistics.
    lean: bool,
}

impl Bucket {
    /// A bucket for the basic statistics only: it keeps no samples, so the
    /// percentile family has no value in it.
    pub fn lean() -> Bucket {
        Bucket {
            lean: true,
            ..Bucket::default()
        }
    }

    /// Adds another bucket of the same kind into this one (§3.3).
    pub fn absorb(&mut self, other: Bucket) {
        if other.count == 0.0 && other.samples.is_empty() && !other.no_percentiles {
            return;
        }
        self.add_totals(
            other.count,
            other.sum,
            other.min,
            other.max,
            other.no_percentiles,
        );
        if !self.no_percentiles && !self.lean {
            self.samples.extend(other.samples);
        }
    }

    fn add_raw(&mut self, value: f64, weight: f64) {
        if self.count == 0.0 {
            self.min = value;
            self.max = value;
        } else {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
        self.count += weight;
        self.sum += value * weight;
        if value < 0.0 {
            self.no_percentiles = true;
        }
        if !self.no_percentiles && !self.lean {
            self.samples.push((value, weight));
        }
    }

    /// Adds one stored sample.
    pub fn add(&mut self, sample: &Sample) {
        match sample {
            Sample::Value(v) => self.add_raw(*v, 1.0),
            Sample::Values { values, counts } if counts.is_empty() => {
                for v in values {
                    self.add_raw(*v, 1.0);
                }
            }
            Sample::Values { values, counts } => {
                for (v, c) in values.iter().zip(counts) {
                    self.add_raw(*v, *c);
                }
            }
            Sample::Set {
                count,
                sum,
                min,
                max,
            } => {
                let raw_equivalent = (*count == 1.0 && min == max && max == sum)
                    || (min == max && *sum == min * count);
                if raw_equivalent {
                    self.add_raw(*min, *count);
                } else {
                    if self.count == 0.0 {
                        self.min = *min;
                        self.max = *max;
                    } else {
                        self.min = self.min.min(*min);
                        self.max = self.max.max(*max);
                    }
                    self.count += count;
                    self.sum += sum;
                    self.no_percentiles = true;
                }
            }
        }
    }

    /// The raw samples `(value, weight)` (unsorted), for rollups.
    pub(crate) fn samples(&self) -> &[(f64, f64)] {
        &self.samples
    }

    /// Whether the percentile family has no value here (§4.4).
    pub(crate) fn no_percentiles(&self) -> bool {
        self.no_percentiles
    }

    /// Merges the totals of a rolled-up bucket; its values come separately
    /// through [`Bucket::push_sample`].
    pub(crate) fn add_totals(
        &mut self,
        count: f64,
        sum: f64,
        min: f64,
        max: f64,
        no_percentiles: bool,
    ) {
        if self.count == 0.0 {
            self.min = min;
            self.max = max;
        } else {
            self.min = self.min.min(min);
            self.max = self.max.max(max);
        }
        self.count += count;
        self.sum += sum;
        if no_percentiles {
            self.no_percentiles = true;
            self.samples = Vec::new();
        }
    }

    /// Adds a value with its weight to the distribution only.
    pub(crate) fn push_sample(&mut self, value: f64, weight: f64) {
        if !self.no_percentiles && !self.lean {
            self.samples.push((value, weight));
        }
    }

    /// Average.
    pub fn average(&self) -> f64 {
        self.sum / self.count
    }

    /// An extended statistic, `None` when it has no value for this bucket.
    pub fn extended(&mut self, stat: &Extended) -> Option<f64> {
        if self.no_percentiles || self.samples.is_empty() {
            return None;
        }
        self.samples.sort_by(|a, b| a.0.total_cmp(&b.0));
        let n = self.count;
        match stat {
            Extended::Percentile(p) => {
                let rank = p.of_ceil(n).max(1.0);
                self.value_at_rank(rank)
            }
            Extended::PercentileRank(a, b) => {
                let kept: f64 = self
                    .samples
                    .iter()
                    .filter(|(x, _)| in_abs(*x, *a, *b))
                    .map(|(_, w)| w)
                    .sum();
                Some(100.0 * kept / n)
            }
            Extended::Trimmed(trim, bounds) => {
                // (value, kept weight) per sample, plus winsorizing values.
                let mut kept: Vec<(f64, f64)> = Vec::new();
                match bounds {
                    Bounds::Percent(lo, hi) => {
                        let low = lo.map_or(0.0, |p| p.of_floor(n));
                        let high = hi.map_or(n, |p| p.of_ceil(n));
                        let mut before = 0.0;
                        for (x, w) in &self.samples {
                            let start = before;
                            let end = before + w;
                            let overlap = (end.min(high) - start.max(low)).max(0.0);
                            if overlap > 0.0 {
                                kept.push((*x, overlap));
                            }
                            before = end;
                        }
                    }
                    Bounds::Absolute(a, b) => {
                        kept = self
                            .samples
                            .iter()
                            .filter(|(x, _)| in_abs(*x, *a, *b))
                            .copied()
                            .collect();
                    }
                }
                let kept_count: f64 = kept.iter().map(|(_, w)| w).sum();
                let kept_sum: f64 = kept.iter().map(|(x, w)| x * w).sum();
                match trim {
                    Trim::Count => Some(kept_count),
                    Trim::Sum => Some(kept_sum),
                    Trim::Mean => (kept_count > 0.0).then(|| kept_sum / kept_count),
                    Trim::Winsorized => {
                        let (low, high) = (kept.first()?.0, kept.last()?.0);
                        let total: f64 = self
                            .samples
                            .iter()
                            .map(|(x, w)| x.clamp(low, high) * w)
                            .sum();
                        Some(total / n)
                    }
                }
            }
        }
    }

    fn value_at_rank(&self, rank: f64) -> Option<f64> {
        let mut cumulative = 0.0;
        for (x, w) in &self.samples {
            cumulative += w;
            if cumulative >= rank {
                return Some(*x);
            }
        }
        self.samples.last().map(|(x, _)| *x)
    }
}

fn in_abs(x: f64, a: Option<f64>, b: Option<f64>) -> bool {
    a.is_none_or(|a| a < x) && b.is_none_or(|b| x <= b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(values: &[f64]) -> Bucket {
        let mut b = Bucket::default();
        for v in values {
            b.add(&Sample::Value(*v));
        }
        b
    }

    fn stat(b: &mut Bucket, s: &str) -> Option<f64> {
        b.extended(&parse_extended(s).unwrap_or_else(|| panic!("{s} parses")))
    }

    #[test]
    fn worked_example_one() {
        let mut b = bucket(&[1.0, 2.0, 3.0, 4.0, 100.0]);
        assert_eq!((b.count, b.sum, b.average()), (5.0, 110.0, 22.0));
        for (s, v) in [
            ("p50", 3.0),
            ("p80", 4.0),
            ("p99", 100.0),
            ("tm80", 2.5),
            ("TM(20%:80%)", 3.0),
            ("wm80", 2.8),
            ("TC(20%:80%)", 3.0),
            ("TS(20%:80%)", 9.0),
            ("TM(1:4)", 3.0),
            ("PR(:3)", 60.0),
            ("PR(2:100)", 60.0),
            ("IQM", 3.0),
            ("p0", 1.0),
            ("p100", 100.0),
        ] {
            assert_eq!(stat(&mut b, s), Some(v), "{s}");
        }
    }

    #[test]
    fn worked_example_two_and_exact_decimals() {
        let mut b = bucket(&(1..=10).map(f64::from).collect::<Vec<_>>());
        for (s, v) in [
            ("p50", 5.0),
            ("p90", 9.0),
            ("p99", 10.0),
            ("TM(10%:90%)", 5.5),
            ("tm90", 5.0),
            ("tm99", 5.5),
        ] {
            assert_eq!(stat(&mut b, s), Some(v), "{s}");
        }
        // 0.7 × 10 is 7 exactly: p70 of 1..10 is 7, not 8.
        assert_eq!(stat(&mut b, "p70"), Some(7.0));
        assert_eq!(stat(&mut b, "p70.0000000001"), Some(8.0));
    }

    #[test]
    fn weights_sets_and_availability() {
        let mut b = Bucket::default();
        b.add(&Sample::Values {
            values: vec![10.0, 20.0],
            counts: vec![3.0, 1.0],
        });
        assert_eq!((b.count, b.sum), (4.0, 50.0));
        assert_eq!(stat(&mut b, "p50"), Some(10.0));
        let mut b = Bucket::default();
        b.add(&Sample::Set {
            count: 4.0,
            sum: 40.0,
            min: 10.0,
            max: 10.0,
        });
        assert_eq!(stat(&mut b, "p50"), Some(10.0));
        let mut b = Bucket::default();
        b.add(&Sample::Set {
            count: 2.0,
            sum: 30.0,
            min: 10.0,
            max: 20.0,
        });
        assert_eq!(b.average(), 15.0);
        assert_eq!(stat(&mut b, "p50"), None);
        let mut b = bucket(&[1.0, -1.0]);
        assert_eq!(
            stat(&mut b, "p50"),
            None,
            "a negative value disables percentiles"
        );
        let mut b = bucket(&[1.0, 2.0]);
        assert_eq!(stat(&mut b, "TM(5:6)"), None);
        assert_eq!(stat(&mut b, "TC(5:6)"), Some(0.0));
        assert_eq!(stat(&mut b, "TS(5:6)"), Some(0.0));
    }

    /// The naive reference: expand weights into a sorted list and index it.
    fn naive(values: &[(u32, u32)], stat: &str) -> Option<f64> {
        let mut xs: Vec<f64> = values
            .iter()
            .flat_map(|(v, c)| std::iter::repeat_n(f64::from(*v), *c as usize))
            .collect();
        xs.sort_by(f64::total_cmp);
        let n = xs.len() as u128;
        // Percentages as tenths of a percent, exact.
        let rank_ceil = |tenths: u128| (tenths * n).div_ceil(1000) as usize;
        let rank_floor = |tenths: u128| (tenths * n / 1000) as usize;
        if let Some(p) = stat.strip_prefix('p') {
            let tenths = (p.parse::<f64>().ok()? * 10.0).round() as u128;
            return Some(xs[rank_ceil(tenths).max(1) - 1]);
        }
        if let Some(inner) = stat.strip_prefix("TM(").and_then(|r| r.strip_suffix("%)")) {
            let (lo, hi) = inner.split_once("%:")?;
            let (lo, hi) = (
                (lo.parse::<f64>().ok()? * 10.0).round() as u128,
                (hi.parse::<f64>().ok()? * 10.0).round() as u128,
            );
            let kept = &xs[rank_floor(lo)..rank_ceil(hi).min(xs.len()).max(rank_floor(lo))];
            return (!kept.is_empty()).then(|| kept.iter().sum::<f64>() / kept.len() as f64);
        }
        if let Some(inner) = stat.strip_prefix("PR(").and_then(|r| r.strip_suffix(')')) {
            let (a, b) = inner.split_once(':')?;
            let (a, b): (f64, f64) = (a.parse().ok()?, b.parse().ok()?);
            return Some(
                100.0 * xs.iter().filter(|x| a < **x && **x <= b).count() as f64 / xs.len() as f64,
            );
        }
        None
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_the_naive_reference(
            values in proptest::collection::vec((0u32..50, 1u32..4), 1..40),
            p in 0u32..=1000,
            lo in 0u32..=500,
            width in 0u32..=500,
            a in 0u32..50,
            b in 0u32..50,
        ) {
            let mut bucket = Bucket::default();
            for (v, c) in &values {
                bucket.add(&Sample::Values { values: vec![f64::from(*v)], counts: vec![f64::from(*c)] });
            }
            let pct = |tenths: u32| format!("{}.{}", tenths / 10, tenths % 10);
            for s in [
                format!("p{}", pct(p)),
                format!("TM({}%:{}%)", pct(lo), pct(lo + width)),
                format!("PR({a}:{b})"),
            ] {
                let ours = stat(&mut bucket, &s);
                let reference = naive(&values, &s);
                match (ours, reference) {
                    (Some(x), Some(y)) => proptest::prop_assert!((x - y).abs() <= 1e-9 * y.abs().max(1.0), "{s}: {x} vs {y}"),
                    (x, y) => proptest::prop_assert_eq!(x, y, "{}", s),
                }
            }
        }
    }

    #[test]
    fn grammar() {
        for ok in [
            "p99.9",
            "p95.0123456789",
            "tm99",
            "TM(5%:95%)",
            "TM(:95%)",
            "TM(5%:)",
            "PR(:300)",
            "PR(1.5e3:)",
            "WM(1:2)",
            "IQM",
            "p0",
            "p100",
        ] {
            assert!(parse_extended(ok).is_some(), "{ok}");
        }
        for bad in [
            "p101",
            "p99.12345678901",
            "P99",
            "TM99",
            "tm(5%:95%)",
            "PR(5%:95%)",
            "TM(5%:95)",
            "TM(:)",
            "p",
            "iqm",
            "TM(a:b)",
            "p99.",
            "TM5%:95%)",
        ] {
            assert!(parse_extended(bad).is_none(), "{bad}");
        }
    }
}
