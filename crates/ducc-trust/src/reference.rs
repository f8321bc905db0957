//! Docker references as signatures and policies spell them: `registry/repository[:tag][@digest]`,
//! normalised the way docker does (`ubuntu` is `docker.io/library/ubuntu`), so that the name a
//! wish list uses and the name cosign wrote into a signature compare equal when they mean the
//! same repository.

use std::fmt;

use ducc_oci::ImageRef;

/// Registry names that all mean Docker Hub. Wish lists (as upstream DUCC's) say
/// `registry.hub.docker.com`, cosign writes `index.docker.io`, policies say `docker.io`.
const DOCKER_HUB_ALIASES: [&str; 4] = [
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
];

/// The canonical name of Docker Hub in references.
const DOCKER_HUB: &str = "docker.io";

/// `registry` with Docker Hub's aliases folded into `docker.io`.
pub(crate) fn normalise_registry(registry: &str) -> String {
    let lower = registry.to_ascii_lowercase();
    if DOCKER_HUB_ALIASES.contains(&lower.as_str()) {
        DOCKER_HUB.to_owned()
    } else {
        registry.to_owned()
    }
}

/// A docker reference: a repository, optionally with a tag and/or a digest.
///
/// This is the identity a signature claims (`critical.identity.docker-reference`) and what a
/// policy's `signedIdentity` names; unlike an [`ImageRef`] it may be a bare repository, and it
/// follows docker's grammar (no scheme, Docker Hub as the default registry).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DockerReference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

/// Why a docker reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid docker reference {input:?}: {problem}")]
pub struct ReferenceError {
    input: String,
    problem: &'static str,
}

impl DockerReference {
    /// Parses `[registry/]repository[:tag][@digest]`, as docker does.
    ///
    /// # Errors
    /// An empty name or component, a scheme, upper case in the repository, a bad tag or digest.
    pub fn parse(input: &str) -> Result<DockerReference, ReferenceError> {
        let fail = |problem| ReferenceError {
            input: input.to_owned(),
            problem,
        };
        if input.contains("://") {
            return Err(fail("a docker reference has no scheme"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                let (algorithm, hex) = digest
                    .split_once(':')
                    .ok_or_else(|| fail("the digest is not ALGORITHM:HEX"))?;
                if algorithm.is_empty()
                    || hex.len() < 32
                    || !hex
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                {
                    return Err(fail("the digest is not ALGORITHM:HEX"));
                }
                (rest, Some(digest.to_owned()))
            }
            None => (input, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag
            && (tag.is_empty()
                || tag.len() > 128
                || !tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                || tag.starts_with(['.', '-']))
        {
            return Err(fail("the tag is not [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"));
        }
        if name.is_empty() {
            return Err(fail("the name is empty"));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first != first.to_lowercase() =>
            {
                (first.to_owned(), rest.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        let registry = normalise_registry(&registry);
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.split('/').any(|c| {
            c.is_empty()
                || !c
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        }) {
            return Err(fail("a repository component is empty or not [a-z0-9._-]"));
        }
        Ok(DockerReference {
            registry,
            repository,
            tag: tag.map(ToOwned::to_owned),
            digest,
        })
    }

    /// The registry (`docker.io` for Docker Hub under any of its names).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest (`sha256:<hex>`), if any.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// Policy scopes that may apply to this reference, most specific first (containers-policy.json(5)):
    /// the reference itself, the repository, each enclosing namespace, the registry, then the
    /// `*.domain` wildcards of the registry's host name.
    pub(crate) fn scopes(&self) -> Vec<String> {
        let mut scopes = Vec::new();
        let whole = self.to_string();
        let name = self.name();
        if whole != name {
            scopes.push(whole);
        }
        if let (Some(tag), Some(_)) = (&self.tag, &self.digest) {
            scopes.push(format!("{name}:{tag}"));
        }
        let mut namespace = name.as_str();
        scopes.push(namespace.to_owned());
        while let Some(i) = namespace.rfind('/') {
            namespace = &namespace[..i];
            scopes.push(namespace.to_owned());
        }
        let host = self.registry.split(':').next().unwrap_or_default();
        let mut domain = host;
        while let Some(i) = domain.find('.') {
            domain = &domain[i + 1..];
            scopes.push(format!("*.{domain}"));
        }
        scopes
    }
}

impl From<&ImageRef> for DockerReference {
    /// The identity of a wish-list image: its registry (Docker Hub folded into `docker.io`),
    /// repository, tag and digest; the scheme is not part of an identity.
    fn from(image: &ImageRef) -> DockerReference {
        DockerReference {
            registry: normalise_registry(image.registry()),
            repository: image.repository().to_owned(),
            tag: image.tag().map(ToOwned::to_owned),
            digest: image.digest().map(ToOwned::to_owned),
        }
    }
}

impl fmt::Display for DockerReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> String {
        DockerReference::parse(text).expect("valid").to_string()
    }

    #[test]
    fn docker_hub_names_fold_into_docker_io() {
        assert_eq!(parsed("ubuntu"), "docker.io/library/ubuntu");
        assert_eq!(parsed("alice/tool:1"), "docker.io/alice/tool:1");
        assert_eq!(
            parsed("index.docker.io/library/ubuntu"),
            "docker.io/library/ubuntu"
        );
        assert_eq!(
            parsed("registry.hub.docker.com/library/ubuntu:24.04"),
            "docker.io/library/ubuntu:24.04"
        );
        assert_eq!(parsed("localhost:5000/a/b"), "localhost:5000/a/b");
    }

    #[test]
    fn tags_and_digests_are_kept_apart_from_ports() {
        let r = DockerReference::parse("reg.example:5000/ns/app:v1").expect("valid");
        assert_eq!(r.registry(), "reg.example:5000");
        assert_eq!(r.name(), "reg.example:5000/ns/app");
        assert_eq!(r.tag(), Some("v1"));
        let d = format!("sha256:{}", "a".repeat(64));
        let r = DockerReference::parse(&format!("reg.example:5000/app@{d}")).expect("valid");
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(d.as_str()));
    }

    #[test]
    fn malformed_references_are_refused() {
        for bad in [
            "",
            "https://reg.example/app",
            "reg.example/App",
            "reg.example//app",
            "app:",
            "app@sha256:xyz",
        ] {
            assert!(DockerReference::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scopes_go_from_the_reference_to_wildcard_domains() {
        let r = DockerReference::parse("reg.example.org:5000/ns/sub/app:v1").expect("valid");
        assert_eq!(
            r.scopes(),
            [
                "reg.example.org:5000/ns/sub/app:v1",
                "reg.example.org:5000/ns/sub/app",
                "reg.example.org:5000/ns/sub",
                "reg.example.org:5000/ns",
                "reg.example.org:5000",
                "*.example.org",
                "*.org",
            ]
        );
    }
}
