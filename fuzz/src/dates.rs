//! The date parsing of ducc-rs: ducc-registry's `Retry-After` parser (through
//! [`ducc_registry::fuzzing`]) and the `created` time of an image config, which
//! [`ducc_thin::ThinImage::build`] reads for the thin layer's file times.

use std::time::{Duration, SystemTime};

use ducc_registry::fuzzing;
use ducc_registry::oci_spec::image::ImageConfiguration;
use ducc_oci::ImageFormat;
use ducc_thin::{ThinDescriptor, ThinImage};

/// One input as a `Retry-After` value and as a config's `created` time.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_retry_after(text);
    check_created(text);
}

fn check_retry_after(text: &str) {
    let now = SystemTime::now();
    let wait = fuzzing::parse_retry_after(text, now);
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        // Delta-seconds never depend on the clock and are never refused.
        let expected = trimmed
            .parse::<u64>()
            .map_or(Duration::MAX, Duration::from_secs);
        assert_eq!(wait, Some(expected), "delta-seconds {text:?}");
    }
    // The same value against the epoch: a date is never a shorter wait from an earlier clock.
    if let (Some(from_now), Some(from_epoch)) = (
        wait,
        fuzzing::parse_retry_after(text, SystemTime::UNIX_EPOCH),
    ) {
        assert!(
            from_epoch >= from_now,
            "{text:?}: {from_epoch:?} < {from_now:?}"
        );
    }
    // The bounds of the clock range must not panic either.
    for far in [
        SystemTime::UNIX_EPOCH.checked_sub(Duration::from_secs(1 << 40)),
        SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(1 << 40)),
    ]
    .into_iter()
    .flatten()
    {
        let _ = fuzzing::parse_retry_after(text, far);
    }
}

fn check_created(text: &str) {
    let Ok(created) = serde_json::to_string(text) else {
        return;
    };
    let json = format!(
        r#"{{"architecture":"amd64","os":"linux","created":{created},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#
    );
    let Ok(source) = serde_json::from_str::<ImageConfiguration>(&json) else {
        return;
    };
    let descriptor = ThinDescriptor::new("https://fuzz.example/a:1", vec![]);
    // Any `created` (or none that parses) must still build: the time is only the files' mtime.
    if let Err(e) = ThinImage::build(&descriptor, &source, ImageFormat::DockerV2) {
        panic!("created {text:?}: {e}");
    }
}
