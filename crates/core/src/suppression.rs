//! Composite alarm action suppression (`spec/cloudwatch.md` §8.4): what an
//! `ActionsSuppressor` alarm does to a composite's actions, as a state
//! machine driven by the composite's transitions, the suppressor's state
//! changes and the clock.
//!
//! [TW] An expiring wait or extension period runs the actions of the
//! composite's current state only when a transition was held back: actions
//! fire on transitions, never on their own.

/// Why a composite's actions are held (`ActionsSuppressedBy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Suppression {
    /// Not held.
    None,
    /// The suppressor is in ALARM.
    Alarm,
    /// A transition waits `WaitPeriod` for the suppressor (until, epoch ms).
    WaitPeriod(i64),
    /// The suppressor left ALARM; held for `ExtensionPeriod` (until, epoch ms).
    ExtensionPeriod(i64),
}

impl Suppression {
    /// The wire value of `ActionsSuppressedBy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Suppression::None => "None",
            Suppression::Alarm => "Alarm",
            Suppression::WaitPeriod(_) => "WaitPeriod",
            Suppression::ExtensionPeriod(_) => "ExtensionPeriod",
        }
    }

    /// `ActionsSuppressedReason` [TW wording].
    pub fn reason(self) -> Option<&'static str> {
        match self {
            Suppression::None => None,
            Suppression::Alarm => Some("Alarm is in ALARM state"),
            Suppression::WaitPeriod(_) => Some("Alarm is in WaitPeriod"),
            Suppression::ExtensionPeriod(_) => Some("Alarm is in ExtensionPeriod"),
        }
    }
}

/// A composite's suppression, with whether a transition's actions are owed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Suppressor {
    /// The current hold.
    pub state: Suppression,
    /// A transition happened while held: its state's actions are owed.
    pub owed: bool,
    /// `ActionsSuppressorWaitPeriod`, ms.
    pub wait_ms: i64,
    /// `ActionsSuppressorExtensionPeriod`, ms.
    pub extension_ms: i64,
}

impl Suppressor {
    /// A suppressor with these periods, nothing held (the suppressor's
    /// current state is applied with [`Suppressor::suppressor_changed`]).
    pub fn new(wait_ms: i64, extension_ms: i64) -> Self {
        Self {
            state: Suppression::None,
            owed: false,
            wait_ms,
            extension_ms,
        }
    }

    /// The composite changed state at `now`: whether its actions run now.
    pub fn composite_transitioned(&mut self, suppressor_in_alarm: bool, now: i64) -> bool {
        if suppressor_in_alarm {
            self.state = Suppression::Alarm;
            self.owed = false;
            return false;
        }
        // A transition inside an extension discards it for a new wait.
        self.state = Suppression::WaitPeriod(now.saturating_add(self.wait_ms));
        self.owed = true;
        false
    }

    /// The suppressor alarm changed state at `now`.
    pub fn suppressor_changed(&mut self, in_alarm: bool, now: i64) {
        match (in_alarm, self.state) {
            // Held transitions are suppressed for good.
            (true, _) => {
                self.state = Suppression::Alarm;
                self.owed = false;
            }
            (false, Suppression::Alarm) => {
                self.state = Suppression::ExtensionPeriod(now.saturating_add(self.extension_ms));
            }
            (false, _) => {}
        }
    }

    /// Time passed: whether actions of the composite's current state run
    /// now (a held transition's period expired).
    pub fn tick(&mut self, now: i64) -> bool {
        match self.state {
            Suppression::WaitPeriod(until) | Suppression::ExtensionPeriod(until)
                if now >= until =>
            {
                self.state = Suppression::None;
                std::mem::take(&mut self.owed)
            }
            _ => false,
        }
    }

    /// The suppressor was changed or replaced: running periods are discarded.
    pub fn replaced(&mut self) {
        if matches!(
            self.state,
            Suppression::WaitPeriod(_) | Suppression::ExtensionPeriod(_)
        ) {
            self.state = Suppression::None;
            self.owed = false;
        }
    }

    /// Whether the composite's actions are held right now.
    pub fn holds(&self) -> bool {
        self.state != Suppression::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: i64 = 60_000;
    const EXT: i64 = 120_000;

    #[test]
    fn a_transition_waits_then_runs_when_the_suppressor_stays_quiet() {
        let mut s = Suppressor::new(WAIT, EXT);
        assert!(!s.composite_transitioned(false, 0));
        assert_eq!(s.state, Suppression::WaitPeriod(WAIT));
        assert!(!s.tick(WAIT - 1));
        assert!(s.tick(WAIT));
        assert_eq!(s.state, Suppression::None);
        assert!(!s.tick(WAIT + 1), "runs once");
    }

    #[test]
    fn the_suppressor_entering_alarm_in_the_wait_suppresses_for_good() {
        let mut s = Suppressor::new(WAIT, EXT);
        s.composite_transitioned(false, 0);
        s.suppressor_changed(true, 30_000);
        assert_eq!(s.state, Suppression::Alarm);
        assert!(!s.tick(WAIT));
        // Leaving ALARM starts an extension, which owes nothing.
        s.suppressor_changed(false, 90_000);
        assert_eq!(s.state, Suppression::ExtensionPeriod(90_000 + EXT));
        assert!(!s.tick(90_000 + EXT));
        assert_eq!(s.state, Suppression::None);
    }

    #[test]
    fn transitions_while_suppressed_and_in_extensions() {
        let mut s = Suppressor::new(WAIT, EXT);
        s.suppressor_changed(true, 0);
        assert!(!s.composite_transitioned(true, 10_000));
        assert_eq!((s.state, s.owed), (Suppression::Alarm, false));
        s.suppressor_changed(false, 20_000);
        // A transition inside the extension discards it for a new wait.
        s.composite_transitioned(false, 50_000);
        assert_eq!(s.state, Suppression::WaitPeriod(50_000 + WAIT));
        assert!(s.holds());
        assert!(!s.tick(50_000 + WAIT - 1));
        assert!(s.tick(50_000 + WAIT));
        assert!(!s.holds());
    }

    #[test]
    fn replacing_the_suppressor_discards_periods() {
        let mut s = Suppressor::new(WAIT, EXT);
        s.composite_transitioned(false, 0);
        s.replaced();
        assert_eq!((s.state, s.owed), (Suppression::None, false));
        assert!(!s.tick(WAIT));
        assert_eq!(Suppression::WaitPeriod(1).as_str(), "WaitPeriod");
        assert_eq!(Suppression::Alarm.reason(), Some("Alarm is in ALARM state"));
    }
}
