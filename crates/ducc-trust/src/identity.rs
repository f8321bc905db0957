//! `signedIdentity`: which identity a signature must claim for the image being checked
//! (containers-policy.json(5)).

use crate::reference::DockerReference;

/// How the identity a signature claims is matched against the image (the `signedIdentity` of a
/// `sigstoreSigned` requirement).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignedIdentity {
    /// The default. An image named by tag needs a signature for exactly that reference; an
    /// image named by digest only needs one for the same repository.
    MatchRepoDigestOrExact,
    /// The signature names the same repository, whatever its tag.
    MatchRepository,
    /// The signature names exactly this reference, whatever the image is called.
    ExactReference(DockerReference),
    /// The signature names this repository, whatever the image is called.
    ExactRepository(DockerReference),
    /// The image's name with `prefix` replaced by `signed_prefix`, then as
    /// [`SignedIdentity::MatchRepoDigestOrExact`] (a mirror checked against the original's
    /// signatures). Names that do not start with `prefix` are matched unchanged.
    RemapIdentity {
        /// What the image's name starts with (a registry, a namespace or a repository).
        prefix: String,
        /// What it stands for in signatures.
        signed_prefix: String,
    },
}

impl SignedIdentity {
    /// The policy's spelling of this kind (`matchRepository`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            SignedIdentity::MatchRepoDigestOrExact => "matchRepoDigestOrExact",
            SignedIdentity::MatchRepository => "matchRepository",
            SignedIdentity::ExactReference(_) => "exactReference",
            SignedIdentity::ExactRepository(_) => "exactRepository",
            SignedIdentity::RemapIdentity { .. } => "remapIdentity",
        }
    }

    /// Whether a signature claiming `signed` is acceptable for `image`.
    pub fn matches(&self, image: &DockerReference, signed: &DockerReference) -> bool {
        match self {
            SignedIdentity::MatchRepoDigestOrExact => repo_digest_or_exact(image, signed),
            SignedIdentity::MatchRepository => image.name() == signed.name(),
            SignedIdentity::ExactReference(reference) => reference == signed,
            SignedIdentity::ExactRepository(repository) => repository.name() == signed.name(),
            SignedIdentity::RemapIdentity {
                prefix,
                signed_prefix,
            } => {
                let name = image.to_string();
                let remapped = match name.strip_prefix(prefix.as_str()) {
                    // The prefix must end at a component boundary: `reg/ns` is no prefix of
                    // `reg/nsx/app`.
                    Some(rest) if rest.is_empty() || rest.starts_with(['/', ':', '@']) => {
                        DockerReference::parse(&format!("{signed_prefix}{rest}")).ok()
                    }
                    _ => Some(image.clone()),
                };
                remapped.is_some_and(|remapped| repo_digest_or_exact(&remapped, signed))
            }
        }
    }
}

/// containers/image's rule: a tagged image needs exactly its reference, an image named only by
/// digest needs its repository.
fn repo_digest_or_exact(image: &DockerReference, signed: &DockerReference) -> bool {
    if image.tag().is_some() {
        image == signed
    } else if image.digest().is_some() {
        image.name() == signed.name()
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(text: &str) -> DockerReference {
        DockerReference::parse(text).expect("valid")
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn each_signed_identity_kind_accepts_and_refuses_as_the_man_page_says() {
        let by_digest = r(&format!("reg.example/ns/app@{D}"));
        let remap = SignedIdentity::RemapIdentity {
            prefix: "mirror.example/ns".to_owned(),
            signed_prefix: "reg.example/ns".to_owned(),
        };
        let cases: &[(&SignedIdentity, &str, &str, bool)] = &[
            (
                &SignedIdentity::MatchRepoDigestOrExact,
                "reg.example/ns/app:v1",
                "reg.example/ns/app:v1",
                true,
            ),
            (
                &SignedIdentity::MatchRepoDigestOrExact,
                "reg.example/ns/app:v1",
                "reg.example/ns/app:v2",
                false,
            ),
            (
                &SignedIdentity::MatchRepoDigestOrExact,
                "reg.example/ns/app:v1",
                "reg.example/ns/app",
                false,
            ),
            (
                &SignedIdentity::MatchRepository,
                "reg.example/ns/app:v1",
                "reg.example/ns/app",
                true,
            ),
            (
                &SignedIdentity::MatchRepository,
                "reg.example/ns/app:v1",
                "reg.example/ns/other:v1",
                false,
            ),
            (
                &SignedIdentity::ExactReference(r("reg.example/ns/app:stable")),
                "reg.example/x/y:v1",
                "reg.example/ns/app:stable",
                true,
            ),
            (
                &SignedIdentity::ExactReference(r("reg.example/ns/app:stable")),
                "reg.example/ns/app:stable",
                "reg.example/ns/app:v1",
                false,
            ),
            (
                &SignedIdentity::ExactRepository(r("reg.example/ns/app")),
                "other.example/x:v1",
                "reg.example/ns/app:v9",
                true,
            ),
            (
                &SignedIdentity::ExactRepository(r("reg.example/ns/app")),
                "reg.example/ns/app:v1",
                "reg.example/ns/app2",
                false,
            ),
            (
                &remap,
                "mirror.example/ns/app:v1",
                "reg.example/ns/app:v1",
                true,
            ),
            (
                &remap,
                "mirror.example/ns/app:v1",
                "mirror.example/ns/app:v1",
                false,
            ),
            (
                &remap,
                "mirror.example/nsx/app:v1",
                "mirror.example/nsx/app:v1",
                true,
            ),
            (
                &remap,
                "mirror.example/nsx/app:v1",
                "reg.example/nsx/app:v1",
                false,
            ),
        ];
        for (identity, image, signed, expected) in cases {
            assert_eq!(
                identity.matches(&r(image), &r(signed)),
                *expected,
                "{} {image} signed as {signed}",
                identity.kind()
            );
        }
        assert!(
            SignedIdentity::MatchRepoDigestOrExact.matches(&by_digest, &r("reg.example/ns/app"))
        );
        assert!(
            !SignedIdentity::MatchRepoDigestOrExact.matches(&by_digest, &r("reg.example/ns/other"))
        );
    }
}
