//! Notification bodies: the CNCF distribution registry's envelope and Harbor's webhook payload,
//! reduced to the tagged manifests they say were pushed.

use ducc_oci::{ImageRef, Scheme};
use serde::Deserialize;

/// Which endpoint a notification came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `POST /notify/distribution`: the CNCF distribution registry.
    Distribution,
    /// `POST /notify/harbor`: Harbor's webhook.
    Harbor,
}

impl Source {
    /// The endpoint's name in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Distribution => "distribution",
            Source::Harbor => "harbor",
        }
    }
}

/// One event of a notification, as far as serve cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A manifest was pushed under a tag: this image may need converting. Its scheme is the
    /// registry's when the notification tells it, else https; matching ignores it.
    TagPushed(ImageRef),
    /// Anything else (a pull, a blob, a push by digest, a deletion, another Harbor event type):
    /// counted, never converted.
    Skipped(SkipReason),
}

/// Why an event is not a tag push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// Not a push (`pull`, `delete`, `mount`, Harbor's `PULL_ARTIFACT`, ...).
    NotAPush,
    /// A push of a blob, or a manifest pushed by digest only.
    NotATaggedManifest,
}

/// A notification body that is not what its endpoint expects.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Not JSON of the expected shape.
    #[error("malformed {} notification: {source}", .endpoint.as_str())]
    Json {
        /// The endpoint.
        endpoint: Source,
        /// What serde_json said.
        source: serde_json::Error,
    },
    /// A push event names an image that is not a valid reference.
    #[error("{} notification names an invalid image `{image}`: {reason}", .endpoint.as_str())]
    Image {
        /// The endpoint.
        endpoint: Source,
        /// The image as the notification spelled it.
        image: String,
        /// Why it is invalid.
        reason: String,
    },
}

/// Media types of manifests and indexes: a push with one of these (or none) and a tag is an image.
const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
];

#[derive(Deserialize)]
struct Envelope {
    events: Vec<DistributionEvent>,
}

#[derive(Deserialize)]
struct DistributionEvent {
    action: String,
    #[serde(default)]
    target: DistributionTarget,
    #[serde(default)]
    request: DistributionRequest,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DistributionTarget {
    #[serde(default)]
    media_type: String,
    #[serde(default)]
    repository: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    url: String,
}

#[derive(Deserialize, Default)]
struct DistributionRequest {
    #[serde(default)]
    host: String,
}

/// Parses a distribution registry envelope
/// (`application/vnd.docker.distribution.events.v1+json`): one [`Event`] per event in it. A push
/// whose target is a tagged manifest becomes [`Event::TagPushed`] with the registry taken from
/// `request.host` (the name clients used to reach it).
///
/// # Errors
/// [`EnvelopeError`] when the body is not such an envelope, or a tagged push names no valid image.
pub fn parse_distribution(body: &[u8]) -> Result<Vec<Event>, EnvelopeError> {
    let endpoint = Source::Distribution;
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|source| EnvelopeError::Json { endpoint, source })?;
    envelope
        .events
        .into_iter()
        .map(|event| {
            if event.action != "push" {
                return Ok(Event::Skipped(SkipReason::NotAPush));
            }
            let target = event.target;
            let is_manifest =
                target.media_type.is_empty() || MANIFEST_TYPES.contains(&&*target.media_type);
            if target.tag.is_empty() || !is_manifest {
                return Ok(Event::Skipped(SkipReason::NotATaggedManifest));
            }
            let scheme = if target.url.starts_with("http://") {
                Scheme::Http
            } else {
                Scheme::Https
            };
            let host = event.request.host;
            ImageRef::from_parts(scheme, &host, &target.repository, Some(&target.tag), None)
                .map(Event::TagPushed)
                .map_err(|e| EnvelopeError::Image {
                    endpoint,
                    image: format!("{host}/{}:{}", target.repository, target.tag),
                    reason: e.problem().to_string(),
                })
        })
        .collect()
}

#[derive(Deserialize)]
struct HarborPayload {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    event_data: HarborEventData,
}

#[derive(Deserialize, Default)]
struct HarborEventData {
    #[serde(default)]
    resources: Vec<HarborResource>,
}

#[derive(Deserialize)]
struct HarborResource {
    #[serde(default)]
    tag: String,
    resource_url: String,
}

/// Parses Harbor's webhook payload (the "Default" format): for `PUSH_ARTIFACT`, one
/// [`Event::TagPushed`] per resource pushed under a tag (`resource_url` is
/// `HOST/PROJECT/REPOSITORY:TAG`); any other type is one [`Event::Skipped`].
///
/// # Errors
/// [`EnvelopeError`] when the body is not such a payload or a `resource_url` is not an image.
pub fn parse_harbor(body: &[u8]) -> Result<Vec<Event>, EnvelopeError> {
    let endpoint = Source::Harbor;
    let payload: HarborPayload =
        serde_json::from_slice(body).map_err(|source| EnvelopeError::Json { endpoint, source })?;
    if payload.kind != "PUSH_ARTIFACT" {
        return Ok(vec![Event::Skipped(SkipReason::NotAPush)]);
    }
    payload
        .event_data
        .resources
        .into_iter()
        .map(|resource| {
            let image =
                ImageRef::parse(&resource.resource_url).map_err(|e| EnvelopeError::Image {
                    endpoint,
                    image: resource.resource_url.clone(),
                    reason: e.problem().to_string(),
                })?;
            // Harbor names a push by digest `HOST/REPO@sha256:...`, with an empty tag.
            match image.tag() {
                Some(_) if !image.is_tag_glob() => Ok(Event::TagPushed(image)),
                _ if !resource.tag.is_empty() && image.digest().is_some() => image
                    .with_tag(&resource.tag)
                    .map(Event::TagPushed)
                    .map_err(|e| EnvelopeError::Image {
                        endpoint,
                        image: resource.resource_url,
                        reason: e.problem().to_string(),
                    }),
                _ => Ok(Event::Skipped(SkipReason::NotATaggedManifest)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn pushed(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::TagPushed(image) => Some(image.whole_name()),
                Event::Skipped(_) => None,
            })
            .collect()
    }

    fn distribution_event(action: &str, media_type: &str, tag: &str) -> serde_json::Value {
        serde_json::json!({
            "id": "4a1c1d4e",
            "timestamp": "2026-12-01T10:00:00Z",
            "action": action,
            "target": {
                "mediaType": media_type,
                "size": 528,
                "digest": "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "repository": "team/app",
                "url": "http://registry.local:5000/v2/team/app/manifests/sha256:0123",
                "tag": tag,
            },
            "request": {"id": "r1", "addr": "127.0.0.1:4711", "host": "registry.local:5000", "method": "PUT", "useragent": "skopeo"},
            "actor": {},
            "source": {"addr": "reg:5000", "instanceID": "i"},
        })
    }

    #[test]
    fn distribution_tagged_manifest_push_names_the_image_at_request_host() {
        let body = serde_json::json!({"events": [distribution_event(
            "push",
            "application/vnd.oci.image.manifest.v1+json",
            "1.0",
        )]});
        let events = parse_distribution(body.to_string().as_bytes()).unwrap();
        assert_eq!(pushed(&events), ["http://registry.local:5000/team/app:1.0"]);
    }

    #[test]
    fn distribution_blob_pull_and_untagged_pushes_are_skipped() {
        let cases = [
            (
                "pull",
                "application/vnd.oci.image.manifest.v1+json",
                "1.0",
                SkipReason::NotAPush,
            ),
            (
                "push",
                "application/vnd.oci.image.layer.v1.tar+gzip",
                "",
                SkipReason::NotATaggedManifest,
            ),
            (
                "push",
                "application/octet-stream",
                "",
                SkipReason::NotATaggedManifest,
            ),
            (
                "push",
                "application/vnd.oci.image.manifest.v1+json",
                "",
                SkipReason::NotATaggedManifest,
            ),
            ("delete", "", "", SkipReason::NotAPush),
        ];
        for (action, media_type, tag, reason) in cases {
            let body = serde_json::json!({"events": [distribution_event(action, media_type, tag)]});
            let events = parse_distribution(body.to_string().as_bytes()).unwrap();
            assert_eq!(
                events,
                [Event::Skipped(reason)],
                "{action} {media_type} {tag:?}"
            );
        }
    }

    #[test]
    fn distribution_envelope_with_many_events_gives_one_event_each() {
        let body = serde_json::json!({"events": [
            distribution_event("push", "application/vnd.oci.image.layer.v1.tar+gzip", ""),
            distribution_event("push", "application/vnd.docker.distribution.manifest.v2+json", "a"),
            distribution_event("push", "application/vnd.oci.image.index.v1+json", "b"),
        ]});
        let events = parse_distribution(body.to_string().as_bytes()).unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(
            pushed(&events),
            [
                "http://registry.local:5000/team/app:a",
                "http://registry.local:5000/team/app:b"
            ]
        );
    }

    #[test]
    fn malformed_bodies_are_envelope_errors_naming_the_endpoint() {
        let cases: [(&[u8], Source); 5] = [
            (b"", Source::Distribution),
            (b"{\"events\": 3}", Source::Distribution),
            (b"not json", Source::Harbor),
            (b"{\"event_data\": {}}", Source::Harbor),
            (b"[1,2]", Source::Distribution),
        ];
        for (body, source) in cases {
            let parse = match source {
                Source::Distribution => parse_distribution,
                Source::Harbor => parse_harbor,
            };
            let error = parse(body).unwrap_err();
            assert!(
                error
                    .to_string()
                    .starts_with(&format!("malformed {}", source.as_str())),
                "{error}"
            );
        }
    }

    #[test]
    fn distribution_push_of_an_invalid_repository_is_an_envelope_error() {
        let mut event =
            distribution_event("push", "application/vnd.oci.image.manifest.v1+json", "1");
        event["target"]["repository"] = "UPPER/Case".into();
        let body = serde_json::json!({"events": [event]});
        let error = parse_distribution(body.to_string().as_bytes()).unwrap_err();
        assert!(error.to_string().contains("UPPER/Case"), "{error}");
    }

    fn harbor(kind: &str, resources: serde_json::Value) -> Vec<u8> {
        serde_json::json!({
            "type": kind,
            "occur_at": 1_700_000_000,
            "operator": "admin",
            "event_data": {
                "resources": resources,
                "repository": {"date_created": 1_690_000_000, "name": "app", "namespace": "team", "repo_full_name": "team/app", "repo_type": "private"},
            },
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn harbor_push_artifact_names_each_resource_url() {
        let body = harbor(
            "PUSH_ARTIFACT",
            serde_json::json!([
                {"digest": "sha256:aa", "tag": "1.0", "resource_url": "harbor.example.org/team/app:1.0"},
                {"digest": "sha256:bb", "tag": "2.0", "resource_url": "harbor.example.org/team/app:2.0"},
            ]),
        );
        let events = parse_harbor(&body).unwrap();
        assert_eq!(
            pushed(&events),
            [
                "https://harbor.example.org/team/app:1.0",
                "https://harbor.example.org/team/app:2.0"
            ]
        );
    }

    #[test]
    fn harbor_other_types_and_digest_only_pushes_are_skipped() {
        let pull = harbor(
            "PULL_ARTIFACT",
            serde_json::json!([{"tag": "1.0", "resource_url": "harbor.example.org/team/app:1.0"}]),
        );
        assert_eq!(
            parse_harbor(&pull).unwrap(),
            [Event::Skipped(SkipReason::NotAPush)]
        );
        let digest = format!("sha256:{}", "ab".repeat(32));
        let by_digest = harbor(
            "PUSH_ARTIFACT",
            serde_json::json!([{"tag": "", "resource_url": format!("harbor.example.org/team/app@{digest}")}]),
        );
        assert_eq!(
            parse_harbor(&by_digest).unwrap(),
            [Event::Skipped(SkipReason::NotATaggedManifest)]
        );
    }

    #[test]
    fn harbor_resource_url_that_is_no_image_is_an_envelope_error() {
        let body = harbor(
            "PUSH_ARTIFACT",
            serde_json::json!([{"tag": "1", "resource_url": "no-repository"}]),
        );
        let error = parse_harbor(&body).unwrap_err();
        assert!(error.to_string().contains("no-repository"), "{error}");
    }
}
