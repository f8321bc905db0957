//! Not part of the API; for the fuzz targets only.
//!
//! The parsers of registry answers are private to this crate; the fuzz crate in `fuzz/` reaches
//! them through these thin wrappers so that it runs the very code the client runs. Nothing here
//! is covered by semver, and nothing outside `fuzz/` may use it.

use std::time::{Duration, SystemTime};

use crate::{Error, Manifest, ManifestMediaType};

/// A manifest or index document, as [`crate::Client::fetch_manifest`] parses a registry's
/// answer with its `Content-Type`.
pub fn parse_manifest(
    bytes: &[u8],
    content_type: Option<&str>,
) -> Result<(ManifestMediaType, Manifest), Error> {
    crate::manifest::parse_manifest(bytes, content_type)
}

/// One `WWW-Authenticate` challenge: its scheme and its `(name, value)` parameters (a token68 is
/// a parameter with an empty name).
pub type Challenge = (String, Vec<(String, String)>);

/// A `WWW-Authenticate` value as its challenges; `None` when the value is malformed.
pub fn parse_challenges(header: &str) -> Option<Vec<Challenge>> {
    let challenges = crate::auth::parse_challenges(header)?;
    Some(
        challenges
            .into_iter()
            .map(|c| (c.scheme, c.params))
            .collect(),
    )
}

/// The target of a `Link` value's `rel="next"` link, as the tag list pagination reads it.
pub fn next_link(header: &str) -> Option<String> {
    crate::link::next_link(header)
}

/// A `Retry-After` value as a wait from `now`; `None` when it is unparsable. A clock outside the
/// range of dates the parser handles (years -9999..=9999) counts as that range's nearest end.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let now = jiff::Timestamp::try_from(now).unwrap_or(if now > SystemTime::UNIX_EPOCH {
        jiff::Timestamp::MAX
    } else {
        jiff::Timestamp::MIN
    });
    crate::retry::parse_retry_after(value, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzzing_wrappers_answer_as_the_private_parsers_do() {
        let (media_type, manifest) =
            parse_manifest(br#"{"schemaVersion":2,"manifests":[]}"#, None).unwrap();
        assert!(media_type.is_index());
        assert!(matches!(manifest, Manifest::Index(_)));
        assert!(parse_manifest(b"[]", None).is_err());

        let challenges = parse_challenges(r#"Bearer realm="https://a/t", service=reg"#).unwrap();
        assert_eq!(
            challenges,
            vec![(
                "Bearer".to_owned(),
                vec![
                    ("realm".to_owned(), "https://a/t".to_owned()),
                    ("service".to_owned(), "reg".to_owned())
                ]
            )]
        );
        assert_eq!(parse_challenges(""), None);

        assert_eq!(
            next_link(r#"</v2/a/tags/list?last=x>; rel="next""#).as_deref(),
            Some("/v2/a/tags/list?last=x")
        );
        assert_eq!(next_link("garbage"), None);
    }

    #[test]
    fn fuzzing_retry_after_takes_a_clock_beyond_the_date_range_as_its_end() {
        let epoch = SystemTime::UNIX_EPOCH;
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:01:00 GMT", epoch),
            Some(Duration::from_secs(60))
        );
        let far = epoch + Duration::from_secs(1 << 40);
        assert_eq!(parse_retry_after("60", far), Some(Duration::from_secs(60)));
        assert_eq!(
            parse_retry_after("Thu, 30 Dec 9999 21:00:00 GMT", far),
            Some(Duration::ZERO)
        );
    }
}
