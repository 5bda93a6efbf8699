//! Millisecond timestamps and the text forms AWS uses for them: ISO 8601 extended
//! (`2026-01-01T00:00:00.123Z`), the SigV4 basic form (`20260101T000000Z`), the
//! CloudTrail record form (seconds, `Z`) and the HTTP `Date` form.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, TimeZone, Utc};

/// Milliseconds since the Unix epoch, UTC. AWS keeps millisecond precision for
/// every timestamp in scope, so finer digits are truncated on input.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)] // stored as epoch milliseconds
pub struct Timestamp(i64);

/// A timestamp text that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimestampParseError(pub String);

impl std::fmt::Display for TimestampParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid timestamp {:?}", self.0)
    }
}

impl std::error::Error for TimestampParseError {}

impl Timestamp {
    /// From epoch milliseconds.
    pub const fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    /// From whole epoch seconds.
    pub const fn from_secs(s: i64) -> Self {
        Self(s.saturating_mul(1000))
    }

    /// From fractional epoch seconds, truncated to milliseconds. The value is first
    /// rounded to microseconds so that binary noise (`.123` read as `.12299999`)
    /// does not lose a millisecond. `None` when not finite or out of range.
    pub fn from_secs_f64(s: f64) -> Option<Self> {
        if !s.is_finite() || s.abs() > 1.0e14 {
            return None;
        }
        let micros = (s * 1_000_000.0).round() as i64;
        Some(Self(micros.div_euclid(1000)))
    }

    /// Epoch milliseconds.
    pub const fn millis(self) -> i64 {
        self.0
    }

    /// Whole epoch seconds (floor).
    pub const fn secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// Whether the value has no fractional second.
    pub const fn is_whole_second(self) -> bool {
        self.0.rem_euclid(1000) == 0
    }

    /// Epoch seconds as a float, for wire formats that send fractions.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    fn datetime(self) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(self.0)
            .single()
            .unwrap_or_default()
    }

    /// ISO 8601 with milliseconds when there is a fraction: `2026-01-01T00:00:00.123Z`.
    pub fn to_iso8601(self) -> String {
        let format = if self.is_whole_second() {
            SecondsFormat::Secs
        } else {
            SecondsFormat::Millis
        };
        self.datetime().to_rfc3339_opts(format, true)
    }

    /// CloudTrail record form, whole seconds: `2026-01-01T00:00:00Z`.
    pub fn to_iso8601_seconds(self) -> String {
        self.datetime().to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    /// SigV4 basic form: `20260101T000000Z`.
    pub fn to_amz_date(self) -> String {
        self.datetime().format("%Y%m%dT%H%M%SZ").to_string()
    }

    /// HTTP date (RFC 7231): `Tue, 24 Nov 2026 03:43:40 GMT`.
    pub fn to_http_date(self) -> String {
        self.datetime()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string()
    }

    /// Parses the SigV4 basic form `YYYYMMDDTHHMMSSZ`.
    pub fn parse_amz_date(s: &str) -> Result<Self, TimestampParseError> {
        if s.len() != 16 {
            return Err(TimestampParseError(s.to_owned()));
        }
        NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%SZ")
            .map(|dt| Self(dt.and_utc().timestamp_millis()))
            .map_err(|_| TimestampParseError(s.to_owned()))
    }

    /// Parses an HTTP `Date` header (RFC 7231 / RFC 2822 form).
    pub fn parse_http_date(s: &str) -> Result<Self, TimestampParseError> {
        DateTime::parse_from_rfc2822(s)
            .map(|dt| Self(dt.timestamp_millis()))
            .map_err(|_| TimestampParseError(s.to_owned()))
    }

    /// Parses ISO 8601 with `Z` or an offset and any number of fractional
    /// digits; also accepts epoch seconds written as a number, which some
    /// hand-written query clients send.
    pub fn parse_iso8601(s: &str) -> Result<Self, TimestampParseError> {
        let trimmed = s.trim();
        if let Ok(dt) = DateTime::parse_from_rfc3339(trimmed) {
            return Ok(Self(dt.timestamp_millis()));
        }
        // A date-time without offset is taken as UTC.
        for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S"] {
            if let Ok(dt) = NaiveDateTime::parse_from_str(trimmed, format) {
                return Ok(Self(dt.and_utc().timestamp_millis()));
            }
        }
        if let Ok(secs) = trimmed.parse::<f64>() {
            if let Some(ts) = Self::from_secs_f64(secs) {
                return Ok(ts);
            }
        }
        Err(TimestampParseError(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_forms_round_trip() {
        let t = Timestamp::from_millis(1_767_225_600_500);
        assert_eq!(t.to_iso8601(), "2026-01-01T00:00:00.500Z");
        assert_eq!(t.to_iso8601_seconds(), "2026-01-01T00:00:00Z");
        assert_eq!(
            Timestamp::parse_iso8601("2026-01-01T00:00:00.500000Z"),
            Ok(t)
        );
        assert_eq!(
            Timestamp::parse_iso8601("2026-01-01T01:00:00.5+01:00"),
            Ok(t)
        );
        assert_eq!(Timestamp::parse_iso8601("1767225600.5"), Ok(t));
        assert_eq!(
            Timestamp::from_secs(1_767_225_600).to_iso8601(),
            "2026-01-01T00:00:00Z"
        );
    }

    #[test]
    fn amz_and_http_dates() {
        let t = Timestamp::parse_amz_date("20261124T034340Z").unwrap();
        assert_eq!(t.to_amz_date(), "20261124T034340Z");
        assert_eq!(t.to_http_date(), "Tue, 24 Nov 2026 03:43:40 GMT");
        assert_eq!(
            Timestamp::parse_http_date("Tue, 24 Nov 2026 03:43:40 GMT"),
            Ok(t)
        );
        assert!(Timestamp::parse_amz_date("2026-11-24T03:43:40Z").is_err());
    }

    #[test]
    fn fractional_seconds_truncate_to_millis() {
        assert_eq!(Timestamp::from_secs_f64(1.0019).unwrap().millis(), 1001);
        assert_eq!(Timestamp::from_secs_f64(-0.5).unwrap().millis(), -500);
        assert_eq!(
            Timestamp::from_secs_f64(1767225600.123).unwrap().millis(),
            1_767_225_600_123
        );
        assert!(Timestamp::from_secs_f64(f64::NAN).is_none());
    }
}
