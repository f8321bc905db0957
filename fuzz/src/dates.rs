//! Date parsing as ducc-rs does it with jiff (issue 12: one maintained date crate, checked
//! arithmetic). ducc-registry's `parse_retry_after` is `pub(crate)` (and being moved to jiff), so
//! this runs the same call pattern: delta-seconds, else an HTTP date (IMF-fixdate through jiff's
//! RFC 2822 parser, RFC 850, asctime), then the wait from now with checked arithmetic; and the
//! RFC 3339 `created` timestamps of image configs.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp, fmt::strtime, tz::TimeZone};

/// An HTTP date (RFC 9110 section 5.6.7) in any of its three forms.
pub fn parse_http_date(value: &str) -> Option<Timestamp> {
    if let Ok(t) = jiff::fmt::rfc2822::DateTimeParser::new().parse_timestamp(value) {
        return Some(t);
    }
    for format in ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"] {
        if let Ok(broken) = strtime::parse(format, value)
            && let Ok(datetime) = broken.to_datetime()
            && let Ok(timestamp) = TimeZone::UTC.to_timestamp(datetime)
        {
            return Some(timestamp);
        }
    }
    None
}

/// A `Retry-After` value as a wait from `now`; a date in the past is no wait.
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse::<u64>().ok().map(Duration::from_secs);
    }
    let when = parse_http_date(value)?;
    let wait: SignedDuration = when.duration_since(now);
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

/// One input as a `Retry-After` value and as a `created` timestamp.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let now = Timestamp::now();
    if let Some(wait) = parse_retry_after(text, now) {
        // The caller caps the wait, then adds it to the clock: checked, never a panic.
        let _ = std::time::SystemTime::now().checked_add(wait);
        let _ = now.checked_add(SignedDuration::try_from(wait).unwrap_or(SignedDuration::MAX));
    }
    if let Ok(created) = text.trim().parse::<Timestamp>() {
        let printed = created.to_string();
        let back: Timestamp = printed.parse().expect("a printed timestamp parses");
        assert_eq!(back, created, "{printed:?} does not round-trip");
    }
}
