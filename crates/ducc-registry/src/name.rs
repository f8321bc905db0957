//! What the client is asked about: a repository on a registry, and a reference in it.
//!
//! Image names have one grammar, `ducc-oci`'s [`ImageRef`]: these types are built from one
//! ([`Reference::of`], [`Repository::of`]) or checked by it ([`Repository::new`],
//! [`Reference::tag`]).

use std::fmt;

use ducc_oci::{ImageRef, ReferenceProblem, Scheme};
use oci_spec::image::Digest;

use crate::error::Error;

/// A repository on a registry: `scheme://host[:port]/v2/<path>/...`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Repository {
    scheme: Scheme,
    registry: String,
    path: String,
}

impl Repository {
    /// Validates and builds a repository.
    ///
    /// `registry` is `host[:port]`, with IPv6 literals in brackets (`[::1]:5000`); `path` is the
    /// repository name as the distribution spec allows it (`library/ubuntu`, `a/b-c/d_e.f`).
    /// Both are checked by [`ImageRef`]'s grammar.
    ///
    /// # Errors
    /// [`crate::ErrorKind::InvalidInput`] naming the part that is malformed.
    pub fn new(scheme: Scheme, registry: &str, path: &str) -> Result<Self, Error> {
        match ImageRef::from_parts(scheme, registry, path, Some("latest"), None) {
            Ok(image) => Ok(Repository::of(&image)),
            Err(e) => match e.problem() {
                ReferenceProblem::NoRegistry
                | ReferenceProblem::BadRegistry(_)
                | ReferenceProblem::BadPort(_)
                | ReferenceProblem::Credentials
                | ReferenceProblem::UrlExtras
                | ReferenceProblem::Whitespace
                | ReferenceProblem::Empty => Err(Error::invalid_input("registry host", registry)),
                _ => Err(Error::invalid_input("repository path", path).with_registry(registry)),
            },
        }
    }

    /// The repository `image` is in.
    pub fn of(image: &ImageRef) -> Self {
        Repository {
            scheme: image.scheme(),
            registry: image.registry().to_owned(),
            path: image.repository().to_owned(),
        }
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// `host[:port]` as given.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path, e.g. `library/ubuntu`.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.path)
    }
}

/// Which manifest of a repository: a tag, a digest, or both (the digest wins for fetching and
/// the tag is kept for messages).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// A tag such as `latest` or `v1.2.3`.
    ///
    /// # Errors
    /// [`crate::ErrorKind::InvalidInput`] when it is not `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
    pub fn tag(tag: &str) -> Result<Self, Error> {
        check_tag(tag)?;
        Ok(Reference {
            tag: Some(tag.to_owned()),
            digest: None,
        })
    }

    /// The tag and digest `image` names (a tag glob is refused: it names no one manifest).
    ///
    /// # Errors
    /// [`crate::ErrorKind::InvalidInput`] when the tag is a glob.
    pub fn of(image: &ImageRef) -> Result<Self, Error> {
        if let Some(tag) = image.tag() {
            check_tag(tag)?;
        }
        Ok(Reference {
            tag: image.tag().map(str::to_owned),
            digest: image.pinned_digest().cloned(),
        })
    }

    /// A digest such as `sha256:<64 hex>`.
    pub fn digest(digest: Digest) -> Self {
        Reference {
            tag: None,
            digest: Some(digest),
        }
    }

    /// A tag pinned to a digest (`name:tag@sha256:...`).
    ///
    /// # Errors
    /// As [`Reference::tag`].
    pub fn tag_and_digest(tag: &str, digest: Digest) -> Result<Self, Error> {
        check_tag(tag)?;
        Ok(Reference {
            tag: Some(tag.to_owned()),
            digest: Some(digest),
        })
    }

    /// Parses `tag`, `sha256:<hex>` or `tag@sha256:<hex>`.
    ///
    /// # Errors
    /// [`crate::ErrorKind::InvalidInput`] for a malformed tag or digest.
    pub fn parse(text: &str) -> Result<Self, Error> {
        match text.split_once('@') {
            Some((tag, digest)) => Reference::tag_and_digest(tag, parse_digest(digest)?),
            None if text.contains(':') => Ok(Reference::digest(parse_digest(text)?)),
            None => Reference::tag(text),
        }
    }

    /// The tag, if any.
    pub fn tag_name(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any.
    pub fn digest_value(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What goes into `/v2/<name>/manifests/<here>`: the digest when there is one.
    pub fn url_part(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => String::new(),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.tag, &self.digest) {
            (Some(t), Some(d)) => write!(f, "{t}@{d}"),
            (Some(t), None) => f.write_str(t),
            (None, Some(d)) => write!(f, "{d}"),
            (None, None) => Ok(()),
        }
    }
}

impl From<&ImageRef> for Repository {
    fn from(image: &ImageRef) -> Self {
        Repository::of(image)
    }
}

/// Parses `algorithm:hex` into a digest.
///
/// # Errors
/// [`crate::ErrorKind::InvalidInput`] when oci-spec refuses it.
pub fn parse_digest(text: &str) -> Result<Digest, Error> {
    text.parse::<Digest>()
        .map_err(|_| Error::invalid_input("digest", text))
}

/// The typed blob digest of a descriptor's digest: blobs are addressed by sha256 only.
pub(crate) fn blob_digest(digest: &Digest) -> Result<ducc_oci::BlobDigest, Error> {
    ducc_oci::BlobDigest::try_from(digest).map_err(|_| {
        Error::new(crate::error::ErrorKind::UnsupportedDigest {
            algorithm: digest.algorithm().to_string(),
        })
    })
}

fn check_tag(tag: &str) -> Result<(), Error> {
    ImageRef::check_plain_tag(tag).map_err(|_| Error::invalid_input("tag", tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! validity_table {
        ($func:ident, $($name:ident: $input:expr => $ok:expr;)*) => {$(
            #[test]
            fn $name() {
                assert_eq!($func($input), $ok, "{:?}", $input);
            }
        )*};
    }

    fn valid_registry(registry: &str) -> bool {
        Repository::new(Scheme::Https, registry, "a").is_ok()
    }

    fn valid_repository_path(path: &str) -> bool {
        Repository::new(Scheme::Https, "registry.example", path).is_ok()
    }

    validity_table! { valid_registry,
        registry_host_only: "registry.example" => true;
        registry_host_and_port: "127.0.0.1:5000" => true;
        registry_ipv6_in_brackets: "[::1]" => true;
        registry_ipv6_with_port: "[::1]:5000" => true;
        registry_ipv6_without_brackets_is_refused: "::1" => false;
        registry_bad_port_is_refused: "host:70000" => false;
        registry_empty_port_is_refused: "host:" => false;
        registry_with_path_is_refused: "host/x" => false;
        registry_with_user_info_is_refused: "u@host" => false;
    }

    validity_table! { valid_repository_path,
        path_single_component: "ubuntu" => true;
        path_nested_with_separators: "a/b-c/d_e.f/g__h/i--j" => true;
        path_uppercase_is_refused: "Ubuntu" => false;
        path_leading_slash_is_refused: "/a" => false;
        path_double_slash_is_refused: "a//b" => false;
        path_trailing_separator_is_refused: "a-" => false;
        path_dot_dot_is_refused: "a/../b" => false;
        path_triple_underscore_is_refused: "a___b" => false;
    }

    #[test]
    fn reference_parse_accepts_tag_digest_and_both() {
        let hex = "a".repeat(64);
        let tag = Reference::parse("v1.0").unwrap();
        assert_eq!(tag.url_part(), "v1.0");
        let digest = Reference::parse(&format!("sha256:{hex}")).unwrap();
        assert_eq!(digest.url_part(), format!("sha256:{hex}"));
        assert_eq!(digest.tag_name(), None);
        let both = Reference::parse(&format!("v1@sha256:{hex}")).unwrap();
        assert_eq!(both.url_part(), format!("sha256:{hex}"), "digest wins");
        assert_eq!(both.tag_name(), Some("v1"));
    }

    #[test]
    fn reference_parse_refuses_bad_tags_and_digests() {
        for bad in [
            "",
            ".x",
            "a b",
            "sha256:xyz",
            "v1@sha256:00",
            &"t".repeat(129),
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn bad_parts_are_named_in_the_error() {
        let err = Repository::new(Scheme::Https, "host:", "a").unwrap_err();
        assert!(
            matches!(err.kind(), crate::ErrorKind::InvalidInput { what: "registry host", value } if value == "host:"),
            "{err}"
        );
        let err = Repository::new(Scheme::Https, "host.io", "A").unwrap_err();
        assert!(
            matches!(err.kind(), crate::ErrorKind::InvalidInput { what: "repository path", value } if value == "A"),
            "{err}"
        );
    }

    #[test]
    fn an_image_ref_gives_its_repository_and_its_tag_and_digest() {
        let hex = "a".repeat(64);
        let image = ImageRef::parse(&format!("http://[::1]:5000/a/b:v1@sha256:{hex}")).unwrap();
        assert_eq!(
            Repository::of(&image),
            Repository::new(Scheme::Http, "[::1]:5000", "a/b").unwrap()
        );
        let reference = Reference::of(&image).unwrap();
        assert_eq!(reference.tag_name(), Some("v1"));
        assert_eq!(reference.url_part(), format!("sha256:{hex}"));
        assert_eq!(reference.to_string(), format!("v1@sha256:{hex}"));
    }

    #[test]
    fn a_tag_glob_is_no_reference() {
        let image = ImageRef::parse("quay.io/a:1.*").unwrap();
        let err = Reference::of(&image).unwrap_err();
        assert!(
            matches!(err.kind(), crate::ErrorKind::InvalidInput { what: "tag", value } if value == "1.*"),
            "{err}"
        );
        assert_eq!(Repository::of(&image).path(), "a");
    }
}
