//! The retry policy: after this failure, retry, try elsewhere, deliver, or give up; how long
//! the computed backoff is; whether a request's budget allows another attempt.
//!
//! Pure functions only: no clock, no sleep, no randomness of its own (the caller passes the
//! elapsed time and a jitter value), so every rule is a unit test. This module also reads the
//! upstream's retry hints (`retry-after-ms`, `x-ms-retry-after-ms`, `retry-after` in seconds or
//! as an HTTP date, "try again in 20s" in messages). It does not know how an attempt is made.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Retry settings, from `RETRY_*` variables.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Total attempts, the first included.
    pub attempts: u32,
    /// Wait after the first failure; doubles after each further one.
    pub base: Duration,
    /// Longest computed wait (an upstream hint may be longer).
    pub max: Duration,
    /// No new attempt starts after this much time since the request arrived.
    pub deadline: Duration,
}

#[cfg(test)]
impl Policy {
    /// The policy the unit tests reason with: 5 attempts, 1 s doubling to 8 s, 60 s deadline.
    pub fn for_tests() -> Policy {
        Policy {
            attempts: 5,
            base: Duration::from_secs(1),
            max: Duration::from_secs(8),
            deadline: Duration::from_secs(60),
        }
    }
}

/// Whether a request that made `attempts` attempts in `elapsed` may wait `wait` and try
/// again: attempts left, and the next one starts before the deadline.
pub fn may_continue(attempts: u32, elapsed: Duration, wait: Duration, policy: &Policy) -> bool {
    attempts < policy.attempts && elapsed + wait <= policy.deadline
}

/// The computed wait after failed attempt `attempt`: `base * 2^(attempt-1)`, times a jitter
/// factor in `[0.8, 1.2)`, capped at `max`.
pub fn backoff(attempt: u32, policy: &Policy, jitter: f64) -> Duration {
    let doublings = attempt.saturating_sub(1).min(30) as i32;
    let nominal = policy.base.as_secs_f64() * 2f64.powi(doublings);
    let jittered = nominal * (0.8 + 0.4 * jitter.clamp(0.0, 1.0));
    Duration::from_secs_f64(jittered.min(policy.max.as_secs_f64()))
}

/// The retry hint in the response headers. `header` looks a name up (lowercase). The
/// millisecond headers are the precise form of the same hint (OpenAI and Azure send both,
/// e.g. `retry-after: 1` with `retry-after-ms: 300`; OpenAI's SDKs read them first), so the
/// first valid one of `retry-after-ms`, `x-ms-retry-after-ms`, `retry-after` wins.
pub fn hint_from_headers<'a>(header: impl Fn(&str) -> Option<&'a str>, now: SystemTime) -> Option<Duration> {
    let ms = |name| header(name).and_then(parse_seconds).map(|v| v / 1000.0);
    let candidates = [
        ms("retry-after-ms"),
        ms("x-ms-retry-after-ms"),
        header("retry-after").and_then(|v| parse_seconds(v).or_else(|| seconds_until(v, now))),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(86_400.0)))
}

fn parse_seconds(v: &str) -> Option<f64> {
    v.trim().parse::<f64>().ok()
}

/// Seconds from `now` until an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`); 0 if past.
fn seconds_until(date: &str, now: SystemTime) -> Option<f64> {
    let at = crate::date::parse_http_date(date)?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs_f64();
    Some((at as f64 - now).max(0.0))
}

/// A wait named in an error message: "Please try again in 20s.", "try again in 1.898s",
/// "try again in 120ms", "try again in 1m30s", "Please retry after 20 seconds."
pub fn hint_from_message(message: &str) -> Option<Duration> {
    let lower = message.to_ascii_lowercase();
    ["try again in ", "retry after ", "retry in "]
        .iter()
        .filter_map(|marker| lower.find(marker).map(|i| &lower[i + marker.len()..]))
        .find_map(parse_wait)
}

/// `20s`, `1.5s`, `120ms`, `1m30s`, `2h`, `20 seconds`, `1 minute`, `500 milliseconds`.
fn parse_wait(text: &str) -> Option<Duration> {
    let mut total = 0.0;
    let mut rest = text.trim_start();
    let mut found = false;
    loop {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let Ok(value) = rest[..digits].parse::<f64>() else {
            break;
        };
        let after = rest[digits..].trim_start();
        let unit_len = after.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(after.len());
        let scale = match &after[..unit_len] {
            "ms" | "millisecond" | "milliseconds" => 0.001,
            "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hour" | "hours" => 3600.0,
            _ => break,
        };
        total += value * scale;
        found = true;
        rest = &after[unit_len..];
    }
    (found && total.is_finite()).then(|| Duration::from_secs_f64(total.min(86_400.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::for_tests()
    }

    #[test]
    fn backoff_grows_with_jitter_and_cap() {
        let p = policy();
        let at = |n, j| backoff(n, &p, j).as_secs_f64();
        assert!((at(1, 0.0) - 0.8).abs() < 1e-9);
        assert!((at(1, 0.999_999) - 1.2).abs() < 1e-5);
        assert!(at(2, 0.0) > at(1, 0.999));
        assert_eq!(at(10, 0.0), 8.0);
        let tiny = Policy { base: Duration::from_millis(50), ..policy() };
        assert!((backoff(1, &tiny, 0.5).as_secs_f64() - 0.05).abs() < 1e-9);
    }

    #[test]
    fn header_hints() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<f64>);
        let cases: &[Case] = &[
            (&[], None),
            (&[("retry-after", "7")], Some(7.0)),
            (&[("retry-after", "1.5")], Some(1.5)),
            (&[("retry-after-ms", "250")], Some(0.25)),
            (&[("x-ms-retry-after-ms", "1200")], Some(1.2)),
            (&[("retry-after", "2"), ("retry-after-ms", "3500")], Some(3.5)),
            // the precise form wins, shorter or longer: 0.3 s, not the coarser 1 s
            (&[("retry-after", "1"), ("retry-after-ms", "300")], Some(0.3)),
            (&[("retry-after-ms", "300"), ("x-ms-retry-after-ms", "900"), ("retry-after", "1")], Some(0.3)),
            (&[("x-ms-retry-after-ms", "450"), ("retry-after", "1")], Some(0.45)),
            // an unusable millisecond header leaves the next one in charge
            (&[("retry-after-ms", "soon"), ("retry-after", "1")], Some(1.0)),
            (&[("retry-after-ms", "-5"), ("retry-after", "1")], Some(1.0)),
            (&[("retry-after", "Sun, 06 Nov 1994 08:49:47 GMT")], Some(10.0)),
            (&[("retry-after", "Sun, 06 Nov 1994 08:49:00 GMT")], Some(0.0)),
            (&[("retry-after", "soon")], None),
            (&[("retry-after", "-3")], None),
        ];
        for (headers, expected) in cases {
            let got =
                hint_from_headers(|name| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v), now);
            assert_eq!(got.map(|d| d.as_secs_f64()), *expected, "{headers:?}");
        }
    }

    #[test]
    fn message_hints() {
        let cases: &[(&str, Option<u128>)] = &[
            ("Rate limit reached. Please try again in 20s.", Some(20_000)),
            ("Please try again in 1.898s. Visit ...", Some(1_898)),
            ("Please try again in 120ms.", Some(120)),
            ("Please try again in 1m30s.", Some(90_000)),
            ("Please try again in 6m0s.", Some(360_000)),
            ("Please retry after 20 seconds.", Some(20_000)),
            ("Please Retry After 1 second", Some(1_000)),
            ("try again later", None),
            ("The answer mentions 20s but no hint", None),
            ("", None),
        ];
        for (message, expected_ms) in cases {
            let got = hint_from_message(message).map(|d| (d.as_secs_f64() * 1000.0).round() as u128);
            assert_eq!(got, *expected_ms, "{message:?}");
        }
    }
}
