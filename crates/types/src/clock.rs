//! The one place that reads the system clock. Everything else asks a `Clock`,
//! so tests can pin or advance time.

use std::sync::atomic::{AtomicI64, Ordering};

use crate::Timestamp;

/// Source of "now" for the whole server.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the single sanctioned reader of the system clock
    fn now(&self) -> Timestamp {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp::from_millis(since_epoch.as_millis() as i64)
    }
}

/// The wall clock shifted by a fixed offset: lets an end-to-end test run the
/// real binary days or months ahead (retention, rollup tiers).
#[derive(Debug, Default, Clone, Copy)]
pub struct OffsetClock {
    /// Milliseconds added to the wall clock.
    pub offset_ms: i64,
}

impl Clock for OffsetClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(SystemClock.now().millis() + self.offset_ms)
    }
}

/// A clock that only moves when told to; for tests and replays.
#[derive(Debug)]
pub struct ManualClock {
    millis: AtomicI64,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> Self {
        Self {
            millis: AtomicI64::new(start.millis()),
        }
    }

    /// Moves the clock to `t`.
    pub fn set(&self, t: Timestamp) {
        self.millis.store(t.millis(), Ordering::SeqCst);
    }

    /// Moves the clock forward by `ms` milliseconds.
    pub fn advance_millis(&self, ms: i64) {
        self.millis.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.millis.load(Ordering::SeqCst))
    }
}
