//! `timestamp_format`: the CloudWatch agent's strftime-like directives,
//! turned into a regex that finds the timestamp in a line and the parts that
//! make it an epoch time.
//!
//! Directives: `%y %Y %b %B %m %-m %d %-d %A %a %H %-H %I %-I %p %M %-M %S
//! %-S %f %Z %z` and `%%`. A space in the format matches one or more spaces,
//! so syslog's padded days (`Dec  6`) match `%b %-d`. Without a year the
//! current one is taken (the previous one if that lands over a day ahead).

use anyhow::bail;
use chrono::{Datelike, FixedOffset, LocalResult, NaiveDate, TimeZone, Utc};
use regex::Regex;

/// A compiled `timestamp_format`.
#[derive(Debug, Clone)]
pub struct TimestampFormat {
    regex: Regex,
    /// The pattern without captures, for `{timestamp_format}` start patterns.
    plain: String,
    parts: Vec<Part>,
    utc: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Year2,
    Year4,
    MonthName,
    Month,
    Day,
    Weekday,
    Hour24,
    Hour12,
    AmPm,
    Minute,
    Second,
    Fraction,
    ZoneName,
    ZoneOffset,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

impl TimestampFormat {
    /// Compiles `format`; times without a zone are read in UTC when `utc`,
    /// else in the host's local zone.
    pub fn new(format: &str, utc: bool) -> anyhow::Result<Self> {
        let mut pattern = String::new();
        let mut parts = Vec::new();
        let mut chars = format.chars().peekable();
        while let Some(c) = chars.next() {
            if c == ' ' {
                while chars.peek() == Some(&' ') {
                    chars.next();
                }
                pattern.push_str(" +");
                continue;
            }
            if c != '%' {
                pattern.push_str(&regex::escape(&c.to_string()));
                continue;
            }
            let dash = chars.peek() == Some(&'-');
            if dash {
                chars.next();
            }
            let Some(d) = chars.next() else {
                bail!("the format ends in a lone %");
            };
            let (re, part) = match (d, dash) {
                ('%', false) => {
                    pattern.push('%');
                    continue;
                }
                ('y', false) => (r"\d{2}", Part::Year2),
                ('Y', false) => (r"\d{4}", Part::Year4),
                ('b', false) => (
                    r"(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)",
                    Part::MonthName,
                ),
                ('B', false) => (
                    r"(?i:january|february|march|april|may|june|july|august|september|october|november|december)",
                    Part::MonthName,
                ),
                ('m', false) => (r"\d{2}", Part::Month),
                ('m', true) => (r"\d{1,2}", Part::Month),
                ('d', false) => (r"\d{2}", Part::Day),
                ('d', true) => (r"\d{1,2}", Part::Day),
                ('a', false) => (r"(?i:mon|tue|wed|thu|fri|sat|sun)", Part::Weekday),
                ('A', false) => (
                    r"(?i:monday|tuesday|wednesday|thursday|friday|saturday|sunday)",
                    Part::Weekday,
                ),
                ('H', false) => (r"\d{2}", Part::Hour24),
                ('H', true) => (r"\d{1,2}", Part::Hour24),
                ('I', false) => (r"\d{2}", Part::Hour12),
                ('I', true) => (r"\d{1,2}", Part::Hour12),
                ('p', false) => (r"(?i:am|pm)", Part::AmPm),
                ('M', false) => (r"\d{2}", Part::Minute),
                ('M', true) => (r"\d{1,2}", Part::Minute),
                ('S', false) => (r"\d{2}", Part::Second),
                ('S', true) => (r"\d{1,2}", Part::Second),
                ('f', false) => (r"\d{1,9}", Part::Fraction),
                ('Z', false) => (r"[A-Za-z]{1,5}", Part::ZoneName),
                ('z', false) => (r"(?:Z|[+-]\d{2}:?\d{2})", Part::ZoneOffset),
                (other, _) => bail!(
                    "%{}{other} is not a directive of timestamp_format",
                    if dash { "-" } else { "" }
                ),
            };
            pattern.push('(');
            pattern.push_str(re);
            pattern.push(')');
            parts.push(part);
        }
        let has = |p: Part| parts.contains(&p);
        if !(has(Part::Day) && (has(Part::Month) || has(Part::MonthName))) {
            bail!("a timestamp_format needs a day (%d) and a month (%m or %b)");
        }
        if !(has(Part::Hour24) || has(Part::Hour12)) {
            bail!("a timestamp_format needs an hour (%H or %I)");
        }
        let regex = Regex::new(&pattern)?;
        let plain = pattern.replace('(', "(?:");
        Ok(Self {
            regex,
            plain,
            parts,
            utc,
        })
    }

    /// The regex text that matches a timestamp (no captures).
    pub fn pattern(&self) -> &str {
        &self.plain
    }

    /// The first timestamp in `line`: epoch milliseconds and where it is.
    pub fn find(&self, line: &str, now_ms: i64) -> Option<(i64, std::ops::Range<usize>)> {
        let caps = self.regex.captures(line)?;
        let whole = caps.get(0)?.range();
        let (mut year, mut month, mut day) = (None, 1u32, 1u32);
        let (mut hour, mut pm, mut minute, mut second, mut nanos) = (0u32, None, 0, 0, 0u32);
        let mut offset: Option<i32> = None;
        for (i, part) in self.parts.iter().enumerate() {
            let text = caps.get(i + 1)?.as_str();
            let num = || text.parse::<u32>().ok();
            match part {
                Part::Year2 => year = Some(2000 + num()? as i32),
                Part::Year4 => year = Some(num()? as i32),
                Part::MonthName => {
                    let lower = text.to_ascii_lowercase();
                    month = MONTHS.iter().position(|m| lower.starts_with(m))? as u32 + 1;
                }
                Part::Month => month = num()?,
                Part::Day => day = num()?,
                Part::Weekday => {}
                Part::Hour24 | Part::Hour12 => hour = num()?,
                Part::AmPm => pm = Some(text.eq_ignore_ascii_case("pm")),
                Part::Minute => minute = num()?,
                Part::Second => second = num()?,
                Part::Fraction => {
                    let digits = &text[..text.len().min(9)];
                    nanos = digits.parse::<u32>().ok()? * 10u32.pow(9 - digits.len() as u32);
                }
                Part::ZoneName => {
                    if ["utc", "gmt", "z"].contains(&text.to_ascii_lowercase().as_str()) {
                        offset = Some(0);
                    }
                }
                Part::ZoneOffset => offset = Some(parse_offset(text)?),
            }
        }
        if let Some(pm) = pm {
            hour = match (hour, pm) {
                (12, false) => 0,
                (12, true) => 12,
                (h, true) => h + 12,
                (h, false) => h,
            };
        }
        let at = |year: i32| -> Option<i64> {
            let naive = NaiveDate::from_ymd_opt(year, month, day)?
                .and_hms_nano_opt(hour, minute, second, nanos)?;
            let ms = match offset {
                Some(secs) => FixedOffset::east_opt(secs)?
                    .from_local_datetime(&naive)
                    .single()?
                    .timestamp_millis(),
                None if self.utc => Utc.from_utc_datetime(&naive).timestamp_millis(),
                None => match chrono::Local.from_local_datetime(&naive) {
                    LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.timestamp_millis(),
                    LocalResult::None => Utc.from_utc_datetime(&naive).timestamp_millis(),
                },
            };
            Some(ms)
        };
        let ms = match year {
            Some(y) => at(y)?,
            None => {
                let this = Utc.timestamp_millis_opt(now_ms).single()?.year();
                match at(this)? {
                    t if t > now_ms + 86_400_000 => at(this - 1)?,
                    t => t,
                }
            }
        };
        Some((ms, whole))
    }
}

/// `Z`, `+0800`, `-07:00` → seconds east of UTC.
fn parse_offset(text: &str) -> Option<i32> {
    if text == "Z" {
        return Some(0);
    }
    let sign = if text.starts_with('-') { -1 } else { 1 };
    let digits: String = text[1..].chars().filter(char::is_ascii_digit).collect();
    let h: i32 = digits.get(..2)?.parse().ok()?;
    let m: i32 = digits.get(2..4)?.parse().ok()?;
    Some(sign * (h * 3600 + m * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc_ms(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32, ms: u32) -> i64 {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .unwrap()
            .timestamp_millis()
            + ms as i64
    }

    #[test]
    fn finds_and_reads_common_formats() {
        let now = utc_ms(2026, 12, 6, 12, 0, 0, 0);
        let cases = [
            (
                "%Y-%m-%d %H:%M:%S",
                "INFO 2026-03-04 05:06:07 started",
                utc_ms(2026, 3, 4, 5, 6, 7, 0),
                "2026-03-04 05:06:07",
            ),
            (
                "%Y-%m-%dT%H:%M:%S.%f%z",
                "2026-03-04T05:06:07.250+01:00 x",
                utc_ms(2026, 3, 4, 4, 6, 7, 250),
                "2026-03-04T05:06:07.250+01:00",
            ),
            (
                "%b %-d %H:%M:%S",
                "Dec  6 11:59:58 host sshd[1]: ok",
                utc_ms(2026, 12, 6, 11, 59, 58, 0),
                "Dec  6 11:59:58",
            ),
            (
                "%d/%b/%Y:%H:%M:%S %z",
                r#"1.2.3.4 - - [10/Oct/2025:13:55:36 -0700] "GET / HTTP/1.0""#,
                utc_ms(2025, 10, 10, 20, 55, 36, 0),
                "10/Oct/2025:13:55:36 -0700",
            ),
            (
                "%y/%m/%d %I:%M:%S %p",
                "26/01/02 12:30:00 AM",
                utc_ms(2026, 1, 2, 0, 30, 0, 0),
                "26/01/02 12:30:00 AM",
            ),
            (
                "%A, %B %d %Y %-H:%M:%S %Z",
                "Friday, January 02 2026 7:08:09 GMT",
                utc_ms(2026, 1, 2, 7, 8, 9, 0),
                "Friday, January 02 2026 7:08:09 GMT",
            ),
        ];
        for (format, line, want, text) in cases {
            let f = TimestampFormat::new(format, true).unwrap();
            let (ms, range) = f
                .find(line, now)
                .unwrap_or_else(|| panic!("{format}: {line}"));
            assert_eq!(ms, want, "{format}");
            assert_eq!(&line[range], text, "{format}");
        }
    }

    #[test]
    fn a_yearless_date_ahead_of_now_is_last_year() {
        let now = utc_ms(2026, 1, 1, 0, 10, 0, 0);
        let f = TimestampFormat::new("%b %d %H:%M:%S", true).unwrap();
        let (ms, _) = f.find("Dec 31 23:59:00 x", now).unwrap();
        assert_eq!(ms, utc_ms(2025, 12, 31, 23, 59, 0, 0));
    }

    #[test]
    fn refuses_unknown_and_incomplete_formats() {
        assert!(TimestampFormat::new("%Q", true).is_err());
        assert!(TimestampFormat::new("%H:%M", true).is_err());
        assert!(TimestampFormat::new("%Y-%m-%d %", true).is_err());
        let f = TimestampFormat::new("%Y-%m-%d %H", true).unwrap();
        assert!(f.find("no time here", 0).is_none());
        assert!(f.find("2026-13-40 10", 0).is_none());
        assert!(Regex::new(f.pattern()).unwrap().is_match("x 2026-01-02 10"));
    }
}
