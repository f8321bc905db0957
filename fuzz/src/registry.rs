//! ducc-registry's parsers of registry answers, through [`ducc_registry::fuzzing`] (the crate's
//! hidden wrappers around its private parsers): the very code the client runs on a manifest,
//! a `WWW-Authenticate` header and a `Link` header.

use ducc_registry::fuzzing;
use ducc_registry::{Manifest, available_platforms, choose_platform};

/// A `WWW-Authenticate` value through the challenge parser; every parsed challenge must have a
/// scheme.
pub fn check_www_authenticate(data: &[u8]) {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(challenges) = fuzzing::parse_challenges(header) {
        assert!(!challenges.is_empty(), "Some(empty) for {header:?}");
        for (scheme, _params) in &challenges {
            assert!(!scheme.is_empty(), "empty scheme in {header:?}");
        }
    }
}

/// A `Link` value through the `rel="next"` parser; the target must come from the header.
pub fn check_link(data: &[u8]) {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(target) = fuzzing::next_link(header) {
        assert!(header.contains(&target), "{target:?} not in {header:?}");
    }
}

/// `Content-Type` values a registry may announce (selected by the input's first byte).
const CONTENT_TYPES: &[Option<&str>] = &[
    None,
    Some("application/vnd.oci.image.manifest.v1+json"),
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/vnd.docker.distribution.manifest.v2+json"),
    Some("application/vnd.docker.distribution.manifest.list.v2+json"),
    Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
    Some("application/json"),
    Some("text/plain; charset=utf-8"),
];

/// A manifest or index document: byte 0 picks the `Content-Type`, the rest is the body. An
/// accepted index must also survive the platform listing and choice the client does next.
pub fn check_manifest(data: &[u8]) {
    let [content_type, body @ ..] = data else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(*content_type) % CONTENT_TYPES.len()];
    let Ok((media_type, manifest)) = fuzzing::parse_manifest(body, content_type) else {
        return;
    };
    match &manifest {
        Manifest::Index(index) => {
            assert!(media_type.is_index(), "{media_type} parsed as an index");
            for platform in available_platforms(index) {
                let _ = choose_platform(index, &platform);
            }
        }
        Manifest::Image(_) => {
            assert!(!media_type.is_index(), "{media_type} parsed as an image");
        }
    }
}
