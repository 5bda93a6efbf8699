//! The anomaly detection band model of trailwatch (`spec/cloudwatch.md`
//! §9.2; AWS's own model is not published, so numbers differ from AWS):
//! the expected value of a time is the mean of the training values in its
//! hour-of-week slot, and the band is that ± k standard deviations of the
//! slot's residuals.
//!
//! Pure functions: the caller reads the training values (the detector's
//! statistic at the query period over the 14 days before the query start,
//! excluded ranges removed) and says how to shift times into the metric's
//! time zone.

/// Days of history a band trains on.
pub const TRAINING_DAYS: i64 = 14;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
const WEEK_HOURS: usize = 7 * 24;
/// Fewest training values for a slot's own mean.
const MIN_SLOT_SAMPLES: usize = 3;

/// A detector's training state (`StateValue`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Training {
    /// Under a day of data: no band yet.
    Pending,
    /// One to three days of data.
    InsufficientData,
    /// Three days or more.
    Trained,
}

impl Training {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Training::Pending => "PENDING_TRAINING",
            Training::InsufficientData => "TRAINED_INSUFFICIENT_DATA",
            Training::Trained => "TRAINED",
        }
    }

    /// The state for training values (epoch ms, value), by the span they
    /// cover.
    pub fn of(training: &[(i64, f64)]) -> Training {
        let first = training.iter().map(|p| p.0).min();
        let last = training.iter().map(|p| p.0).max();
        match first.zip(last).map(|(a, b)| b - a) {
            Some(span) if span >= 3 * DAY_MS => Training::Trained,
            Some(span) if span >= DAY_MS => Training::InsufficientData,
            _ => Training::Pending,
        }
    }
}

/// How a band is drawn besides its training values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BandOptions {
    /// Width in standard deviations (ANOMALY_DETECTION_BAND's second argument, 2 by default).
    pub k: f64,
    /// The metric's unit is Percent: the band stays within [0, 100].
    pub percent: bool,
}

/// The trained model: per hour-of-week slot, mean and residual deviation.
#[derive(Debug, Clone)]
pub struct Model {
    slots: Vec<Option<(f64, f64)>>,
    /// Mean of the last 24 hours of training, for slots with too few values.
    recent_mean: f64,
    /// Deviation of every residual, for slots without their own.
    overall_sigma: f64,
    non_negative: bool,
}

fn slot(t_ms: i64, offset_ms: i64) -> usize {
    // 1970-01-01 was a Thursday: slot 0 is Thursday 00:00 local.
    ((t_ms + offset_ms).div_euclid(HOUR_MS)).rem_euclid(WEEK_HOURS as i64) as usize
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn deviation(v: &[f64], m: f64) -> f64 {
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
}

impl Model {
    /// Trains on (epoch ms, value) points; `offset_ms(t)` shifts a time into
    /// the metric's time zone. `None` while [`Training::Pending`].
    pub fn train(training: &[(i64, f64)], offset_ms: &impl Fn(i64) -> i64) -> Option<Model> {
        if Training::of(training) == Training::Pending {
            return None;
        }
        let mut by_slot: Vec<Vec<f64>> = vec![Vec::new(); WEEK_HOURS];
        for (t, v) in training.iter().filter(|p| p.1.is_finite()) {
            by_slot[slot(*t, offset_ms(*t))].push(*v);
        }
        let last = training.iter().map(|p| p.0).max()?;
        let recent: Vec<f64> = training
            .iter()
            .filter(|p| p.0 > last - DAY_MS && p.1.is_finite())
            .map(|p| p.1)
            .collect();
        let recent_mean = if recent.is_empty() {
            0.0
        } else {
            mean(&recent)
        };
        let slots: Vec<Option<(f64, f64)>> = by_slot
            .iter()
            .map(|v| {
                (v.len() >= MIN_SLOT_SAMPLES).then(|| {
                    let m = mean(v);
                    (m, deviation(v, m))
                })
            })
            .collect();
        // Residuals against what each value's slot expects.
        let residuals: Vec<f64> = by_slot
            .iter()
            .zip(&slots)
            .flat_map(|(values, s)| {
                let expected = s.map_or(recent_mean, |(m, _)| m);
                values.iter().map(move |v| v - expected)
            })
            .collect();
        let overall_sigma = if residuals.is_empty() {
            0.0
        } else {
            deviation(&residuals, 0.0)
        };
        Some(Model {
            slots,
            recent_mean,
            overall_sigma,
            non_negative: training.iter().all(|p| p.1 >= 0.0),
        })
    }

    /// The expected value and deviation at `t_ms` (local offset `offset_ms`).
    pub fn expected(&self, t_ms: i64, offset_ms: i64) -> (f64, f64) {
        let (m, s) = match self.slots[slot(t_ms, offset_ms)] {
            Some((m, s)) if s > 0.0 => (m, s),
            Some((m, _)) => (m, self.overall_sigma),
            None => (self.recent_mean, self.overall_sigma),
        };
        (m, s.max(0.01 * m.abs()).max(1e-9))
    }

    /// The band (lower, upper) at `t_ms`.
    pub fn band(&self, t_ms: i64, offset_ms: i64, options: &BandOptions) -> (f64, f64) {
        let (m, s) = self.expected(t_ms, offset_ms);
        let (mut lo, mut hi) = (m - options.k * s, m + options.k * s);
        if self.non_negative {
            lo = lo.max(0.0);
        }
        if options.percent {
            lo = lo.clamp(0.0, 100.0);
            hi = hi.clamp(0.0, 100.0);
        }
        (lo, hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_704_067_200_000; // 2024-01-01T00:00:00Z, a Monday
    const UTC: fn(i64) -> i64 = |_| 0;

    fn hourly(days: i64, f: impl Fn(i64) -> f64) -> Vec<(i64, f64)> {
        (0..days * 24).map(|h| (T0 + h * HOUR_MS, f(h))).collect()
    }

    #[test]
    fn training_state_follows_the_span() {
        assert_eq!(Training::of(&[]), Training::Pending);
        assert_eq!(Training::of(&hourly(1, |_| 1.0)), Training::Pending); // 23 h
        assert_eq!(
            Training::of(&hourly(2, |_| 1.0)),
            Training::InsufficientData
        );
        assert_eq!(Training::of(&hourly(4, |_| 1.0)), Training::Trained);
        assert!(Model::train(&hourly(1, |_| 1.0), &UTC).is_none());
    }

    #[test]
    fn a_daily_pattern_is_learned_per_slot() {
        // Two weeks at a 5-minute period: busy (100) from 09:00 to 17:00 UTC,
        // quiet (10) otherwise, +1 on even days and −1 on odd ones (a week
        // apart, a slot's two days differ by 2: σ = 1).
        let data: Vec<(i64, f64)> = (0..14 * 288)
            .map(|i: i64| {
                let t = T0 + i * 300_000;
                let hour = (i / 12) % 24;
                let base = if (9..17).contains(&hour) { 100.0 } else { 10.0 };
                (t, base + if (i / 288) % 2 == 0 { 1.0 } else { -1.0 })
            })
            .collect();
        let model = Model::train(&data, &UTC).unwrap();
        let opts = BandOptions {
            k: 2.0,
            percent: false,
        };
        // The next Monday, 10:00 and 03:00.
        let monday = T0 + 14 * DAY_MS;
        let (m, s) = model.expected(monday + 10 * HOUR_MS, 0);
        assert_eq!((m, s), (100.0, 1.0));
        assert_eq!(model.band(monday + 10 * HOUR_MS, 0, &opts), (98.0, 102.0));
        assert_eq!(model.band(monday + 3 * HOUR_MS, 0, &opts), (8.0, 12.0));
        // Trained and read in a zone 8 hours ahead, slots are local hours:
        // 10:00 UTC is 18:00 there, still a busy slot of the data.
        let east = |_t: i64| 8 * HOUR_MS;
        let model = Model::train(&data, &east).unwrap();
        assert_eq!(model.expected(monday + 10 * HOUR_MS, east(0)).0, 100.0);
        assert_eq!(model.expected(monday + 3 * HOUR_MS, east(0)).0, 10.0);
    }

    #[test]
    fn flat_series_get_the_floor_and_clamps() {
        let flat = hourly(7, |_| 50.0);
        let model = Model::train(&flat, &UTC).unwrap();
        let opts = BandOptions {
            k: 2.0,
            percent: false,
        };
        // σ = 0 everywhere: the floor is 1 % of the expected value.
        assert_eq!(model.band(T0 + 8 * DAY_MS, 0, &opts), (49.0, 51.0));
        // Non-negative training keeps the lower edge at 0 or above.
        let small = hourly(7, |h| (h % 2) as f64);
        let model = Model::train(&small, &UTC).unwrap();
        let (lo, _) = model.band(
            T0 + 8 * DAY_MS,
            0,
            &BandOptions {
                k: 5.0,
                percent: false,
            },
        );
        assert_eq!(lo, 0.0);
        // Percent stays in [0, 100].
        let high = hourly(7, |h| if h % 2 == 0 { 99.0 } else { 60.0 });
        let model = Model::train(&high, &UTC).unwrap();
        let (_, hi) = model.band(
            T0 + 8 * DAY_MS,
            0,
            &BandOptions {
                k: 3.0,
                percent: true,
            },
        );
        assert_eq!(hi, 100.0);
    }

    #[test]
    fn sparse_slots_fall_back_to_the_last_day() {
        // Three days, one point a day at 12:00, plus the last day hourly at 5.
        let mut data: Vec<(i64, f64)> = (0..3)
            .map(|d| (T0 + d * DAY_MS + 12 * HOUR_MS, 40.0))
            .collect();
        data.extend((0..24).map(|h| (T0 + 3 * DAY_MS + h * HOUR_MS, 5.0)));
        let model = Model::train(&data, &UTC).unwrap();
        // Thursday 03:00 has one value only: the last day's mean.
        let (m, _) = model.expected(T0 + 10 * DAY_MS + 3 * HOUR_MS, 0);
        assert_eq!(m, 5.0);
    }
}
