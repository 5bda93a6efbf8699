//! Shared vocabulary of trailwatch: the injected [`Clock`], epoch-millisecond
//! [`Timestamp`]s with the AWS text forms, and account ids.
//!
//! This crate does no IO and depends on nothing of ours. Every other crate reads
//! time only through [`Clock`], so alarms, retention and signature skew checks can
//! be tested with a [`ManualClock`].

mod clock;
mod time;

pub use clock::{Clock, ManualClock, OffsetClock, SystemClock};
pub use time::{Timestamp, TimestampParseError};

/// Checks that `s` is a 12-digit AWS account id.
pub fn is_valid_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids() {
        assert!(is_valid_account_id("123456789012"));
        assert!(!is_valid_account_id("12345678901"));
        assert!(!is_valid_account_id("12345678901a"));
    }
}
