//! Waiting between retries: exponential backoff with jitter, and `Retry-After`.

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime};

use jiff::Timestamp;

use crate::options::RetryPolicy;

/// The wait before retry number `attempt` (0 for the first retry): `initial * 2^attempt`,
/// capped at `max_backoff`, then a random point between half of it and all of it.
pub(crate) fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX);
    let full = policy
        .initial_backoff
        .saturating_mul(factor)
        .min(policy.max_backoff);
    let half = full / 2;
    let spread = u64::try_from(full.saturating_sub(half).as_nanos()).unwrap_or(u64::MAX);
    let jitter = match spread.checked_add(1) {
        Some(modulus) => random_u64() % modulus,
        None => random_u64(),
    };
    half.saturating_add(Duration::from_nanos(jitter))
}

/// A random number from std's per-instance hash keys (no extra dependency for jitter).
fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    hasher.finish()
}

/// `Retry-After` as a wait from `now`: delta-seconds or an HTTP date (IMF-fixdate, and the
/// obsolete RFC 850 and asctime forms RFC 9110 still asks recipients to read). A date in the past
/// is no wait; a number of seconds too large for a `u64` is [`Duration::MAX`], so the caller's
/// cap refuses it; anything unparsable (negative, garbage, a year beyond 9999) is `None`, and the
/// usual backoff applies.
pub(crate) fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(
            value
                .parse::<u64>()
                .map_or(Duration::MAX, Duration::from_secs),
        );
    }
    let when = parse_http_date(value)?;
    // Both ends are within jiff's range (years -9999..=9999), far from overflowing an i64.
    let seconds = when.as_second().saturating_sub(now.as_second());
    Some(Duration::from_secs(u64::try_from(seconds).unwrap_or(0)))
}

/// An HTTP date (RFC 9110 section 5.6.7), always in GMT.
fn parse_http_date(value: &str) -> Option<Timestamp> {
    static IMF_FIXDATE: jiff::fmt::rfc2822::DateTimeParser =
        jiff::fmt::rfc2822::DateTimeParser::new();
    if let Ok(when) = IMF_FIXDATE.parse_timestamp(value) {
        return Some(when);
    }
    // RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime (`Sun Nov  6 08:49:37 1994`).
    for format in ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"] {
        if let Ok(parsed) = jiff::fmt::strtime::parse(format, value)
            && let Ok(civil) = parsed.to_datetime()
            && let Ok(when) = jiff::tz::Offset::UTC.to_timestamp(civil)
        {
            return Some(when);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    // 784111777 is Sun, 06 Nov 1994 08:49:37 GMT.
    macro_rules! retry_after_cases {
        ($($name:ident: $value:expr => $expected:expr;)*) => {$(
            #[test]
            fn $name() {
                assert_eq!(parse_retry_after($value, at(784_111_777 - 30)), $expected);
            }
        )*};
    }

    retry_after_cases! {
        retry_after_seconds: "120" => Some(Duration::from_secs(120));
        retry_after_zero_seconds: "0" => Some(Duration::ZERO);
        retry_after_imf_fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" => Some(Duration::from_secs(30));
        retry_after_rfc850: "Sunday, 06-Nov-94 08:49:37 GMT" => Some(Duration::from_secs(30));
        retry_after_asctime: "Sun Nov  6 08:49:37 1994" => Some(Duration::from_secs(30));
        retry_after_past_date_is_no_wait: "Sat, 05 Nov 1994 08:49:37 GMT" => Some(Duration::ZERO);
        retry_after_negative_is_refused: "-5" => None;
        retry_after_garbage_is_refused: "soon" => None;
        retry_after_bad_month_is_refused: "Sun, 06 Foo 1994 08:49:37 GMT" => None;
        retry_after_bad_time_is_refused: "Sun, 06 Nov 1994 28:49:37 GMT" => None;
        retry_after_bad_day_is_refused: "Sun, 31 Feb 1994 08:49:37 GMT" => None;
        // issue 12: this date made `SystemTime + Duration` overflow and panic.
        retry_after_year_beyond_jiff_is_refused: "Sun, 06 Nov 300000000000 08:49:37 GMT" => None;
        retry_after_year_9999_is_a_long_wait: "Thu, 30 Dec 9999 21:00:00 GMT" => Some(Duration::from_secs(253_402_203_600 - 784_111_777 + 30));
        retry_after_seconds_beyond_u64_are_the_longest_wait: "99999999999999999999999" => Some(Duration::MAX);
        retry_after_empty_is_refused: "" => None;
        retry_after_fraction_is_refused: "1.5" => None;
        retry_after_huge_negative_is_refused: "-99999999999999999999999" => None;
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered_within_bounds() {
        let policy = RetryPolicy::new()
            .initial_backoff(Duration::from_millis(100))
            .max_backoff(Duration::from_millis(1000));
        for attempt in 0..10 {
            let full = Duration::from_millis((100u64 << attempt.min(10)).min(1000));
            for _ in 0..20 {
                let wait = backoff(&policy, attempt);
                assert!(
                    wait >= full / 2 && wait <= full,
                    "attempt {attempt}: {wait:?}"
                );
            }
        }
    }

    #[test]
    fn backoff_jitter_varies() {
        let policy = RetryPolicy::new().initial_backoff(Duration::from_secs(1));
        let waits: std::collections::HashSet<Duration> =
            (0..20).map(|_| backoff(&policy, 0)).collect();
        assert!(waits.len() > 1, "no jitter: {waits:?}");
    }
}
