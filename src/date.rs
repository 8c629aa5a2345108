//! Dates as the proxy writes and reads them: the IMF-fixdate of HTTP (the `date:` header it
//! writes, a `retry-after` date it reads), the UTC timestamp of log lines and `/status`, and
//! the civil-calendar arithmetic both stand on (Howard Hinnant's algorithms, proleptic
//! Gregorian).
//!
//! Pure functions of a `SystemTime` or a string: no clock is read here (callers pass the time),
//! no time zone but UTC, no other date format (the obsolete RFC 850 and asctime forms, which
//! RFC 9110 lets a recipient accept, are not parsed: no upstream sends them).

use std::time::{SystemTime, UNIX_EPOCH};

const MONTHS: [&str; 12] =
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// Weekdays from 1970-01-01, a Thursday.
const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

/// `Wed, 25 Nov 2026 14:20:32 GMT` (RFC 9110 IMF-fixdate); a time before 1970 is 1970.
pub fn http_date(t: SystemTime) -> String {
    let (days, rem, _) = split(t);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Unix seconds of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form RFC 9110
/// requires senders to use. The weekday and the zone are not checked; each number has at most
/// the RFC's digits (four for the year, two for the others), so none can overflow.
pub fn parse_http_date(s: &str) -> Option<i64> {
    let mut parts = s.split_whitespace();
    let _weekday = parts.next()?;
    let day = digits(parts.next()?, 2)?;
    let month = parts.next()?;
    let year = digits(parts.next()?, 4)?;
    let mut hms = parts.next()?.split(':').map(|p| digits(p, 2));
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    let month = MONTHS.iter().position(|&name| name == month)? as i64 + 1;
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec)
}

/// A number of one to `most` ASCII digits.
fn digits(text: &str, most: usize) -> Option<i64> {
    let plain = (1..=most).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit());
    plain.then(|| text.parse().ok()).flatten()
}

/// `2026-11-25T14:20:32.123Z` (RFC 3339, UTC, milliseconds); a time before 1970 is 1970.
pub fn timestamp(t: SystemTime) -> String {
    let (days, rem, millis) = split(t);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

/// Days since 1970-01-01, seconds into that day, and milliseconds into that second.
fn split(t: SystemTime) -> (i64, i64, u32) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    (secs.div_euclid(86_400), secs.rem_euclid(86_400), since.subsec_millis())
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Year, month, day of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn civil_days() {
        let cases = [
            ((1970, 1, 1), 0),
            ((1969, 12, 31), -1),
            ((1994, 11, 6), 9_075),
            ((2000, 2, 29), 11_016),
            ((2000, 3, 1), 11_017),
            ((2026, 11, 25), 20_782),
            ((2100, 12, 31), 47_846),
        ];
        for (ymd @ (y, m, d), days) in cases {
            assert_eq!(days_from_civil(y, m, d), days, "{ymd:?}");
            assert_eq!(civil_from_days(days), ymd, "{days}");
        }
    }

    #[test]
    fn formats() {
        let cases: &[(u64, &str, &str)] = &[
            (0, "Thu, 01 Jan 1970 00:00:00 GMT", "1970-01-01T00:00:00.000Z"),
            (784_111_777_000, "Sun, 06 Nov 1994 08:49:37 GMT", "1994-11-06T08:49:37.000Z"),
            (951_782_400_999, "Tue, 29 Feb 2000 00:00:00 GMT", "2000-02-29T00:00:00.999Z"),
            (1_764_080_432_123, "Tue, 25 Nov 2025 14:20:32 GMT", "2025-11-25T14:20:32.123Z"),
        ];
        for &(ms, http, stamp) in cases {
            assert_eq!((http_date(at(ms)), timestamp(at(ms))), (http.to_string(), stamp.to_string()), "{ms}");
        }
        let before = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(http_date(before), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(timestamp(before), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn http_dates_parsed() {
        let cases: &[(&str, Option<i64>)] = &[
            ("Sun, 06 Nov 1994 08:49:37 GMT", Some(784_111_777)),
            ("Thu, 01 Jan 1970 00:00:00 GMT", Some(0)),
            ("Tue, 29 Feb 2000 00:00:00 GMT", Some(951_782_400)),
            ("Sun,  06  Nov 1994 08:49:37 GMT", Some(784_111_777)),
            ("Sun, 06 nov 1994 08:49:37 GMT", None),
            ("Sun, 06 Nov 1994 08:49 GMT", None),
            ("Sunday, 06-Nov-94 08:49:37 GMT", None),
            ("Sun Nov  6 08:49:37 1994", None),
            // beyond the RFC's digits: refused, not an overflow
            ("Sun, 06 Nov 99999999999999 08:49:37 GMT", None),
            ("Sun, 06 Jan 9223372036854775807 08:49:37 GMT", None),
            ("Sun, 99999999999999999 Nov 1994 08:49:37 GMT", None),
            ("Sun, 06 Nov 1994 9999999999999999:00:00 GMT", None),
            ("Sun, 06 Nov -1994 08:49:37 GMT", None),
            ("Sun, +6 Nov 1994 08:49:37 GMT", None),
            ("garbage", None),
            ("", None),
        ];
        for &(text, expected) in cases {
            assert_eq!(parse_http_date(text), expected, "{text:?}");
        }
        for ms in [0, 784_111_777_000, 1_764_080_432_000] {
            assert_eq!(parse_http_date(&http_date(at(ms))), Some(ms as i64 / 1000), "{ms}");
        }
    }
}
