//! Waiting between retries: exponential backoff with jitter, and `Retry-After`.

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime};

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
    let spread = full.saturating_sub(half).as_nanos() as u64;
    let jitter = if spread == 0 {
        0
    } else {
        random_u64() % (spread + 1)
    };
    half + Duration::from_nanos(jitter)
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

/// `Retry-After` as a wait from `now`: delta-seconds or an HTTP date (IMF-fixdate, RFC 850 or
/// asctime). A date in the past is no wait; anything unparsable is `None`.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse::<u64>().ok().map(Duration::from_secs);
    }
    let when = parse_http_date(value)?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

fn month_number(name: &str) -> Option<u32> {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(name))
        .map(|i| i as u32 + 1)
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn parse_http_date(value: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = value.split_whitespace().collect();
    let (day, month, year, time) = match parts.as_slice() {
        // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
        [_, day, month, year, time, "GMT"] => (*day, *month, year.parse::<i64>().ok()?, *time),
        // RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
        [_, date, time, "GMT"] => {
            let mut it = date.split('-');
            let (d, m, y) = (it.next()?, it.next()?, it.next()?);
            let y: i64 = y.parse().ok()?;
            let y = if y < 70 {
                2000 + y
            } else if y < 100 {
                1900 + y
            } else {
                y
            };
            (d, m, y, *time)
        }
        // asctime: Sun Nov  6 08:49:37 1994
        [_, month, day, time, year] => (*day, *month, year.parse::<i64>().ok()?, *time),
        _ => return None,
    };
    let day: u32 = day.parse().ok()?;
    let month = month_number(month)?;
    let mut hms = time.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if hms.next().is_some() || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + m * 60 + s;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
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
    }

    #[test]
    fn civil_dates_convert_like_the_unix_epoch() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 11, 29), 20_786);
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
