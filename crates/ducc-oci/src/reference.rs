//! Image references: `[SCHEME://]REGISTRY/REPOSITORY[:TAG][@DIGEST]`.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use oci_spec::image::Digest;

use crate::glob::Glob;

/// The registry a reference falls back to in suggestions: upstream DUCC has no default registry,
/// and neither do we, but we say which one a bare `ubuntu:22.04` most likely meant.
const SUGGESTED_REGISTRY: &str = "registry.hub.docker.com";

/// Longest repository path, as in the distribution reference grammar.
const MAX_REPOSITORY_LEN: usize = 255;
/// Longest tag, as in the distribution spec.
const MAX_TAG_LEN: usize = 128;

/// How to talk to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Scheme {
    /// HTTP over TLS (the default).
    #[default]
    Https,
    /// Plain HTTP, for registries without TLS.
    Http,
}

impl Scheme {
    /// `https` or `http`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Https => "https",
            Scheme::Http => "http",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed image reference.
///
/// It always has a registry and a repository, and a tag, a digest, or both. The tag may be a glob
/// (`21.2.1*`), which a registry's tag list expands into plain tags (see [`ImageRef::with_tag`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    scheme: Scheme,
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// Why an image name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReferenceProblem {
    /// The name is empty.
    Empty,
    /// The name holds whitespace or control characters.
    Whitespace,
    /// A scheme other than http or https.
    UnsupportedScheme(String),
    /// `user:password@` in the name.
    Credentials,
    /// A query (`?`) or fragment (`#`) part.
    UrlExtras,
    /// The first path component is not a registry host (no `.`, no `:`, not `localhost`).
    NoRegistry,
    /// The registry host is malformed.
    BadRegistry(String),
    /// The registry port is not a number from 1 to 65535.
    BadPort(String),
    /// Nothing after the registry.
    NoRepository,
    /// A repository path component breaks the distribution grammar.
    BadRepositoryComponent(String),
    /// A repository path component has uppercase letters.
    UppercaseRepository,
    /// The repository path is longer than 255 characters.
    RepositoryTooLong(usize),
    /// Neither a tag nor a digest.
    NoTagOrDigest,
    /// The tag breaks `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}` (globs may also hold `*`).
    BadTag(String),
    /// The digest is not `algorithm:hex`.
    BadDigest(String),
    /// A digest algorithm other than sha256 or sha512.
    UnsupportedDigestAlgorithm(String),
    /// The hex part of a digest has the wrong length for its algorithm.
    BadDigestLength {
        /// The algorithm.
        algorithm: String,
        /// Hex digits expected.
        expected: usize,
        /// Hex digits found.
        found: usize,
    },
    /// The digest's hex part has uppercase letters.
    UppercaseDigest,
    /// A tag glob together with a digest.
    GlobWithDigest,
}

impl fmt::Display for ReferenceProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ReferenceProblem as P;
        match self {
            P::Empty => write!(f, "the name is empty"),
            P::Whitespace => write!(f, "the name contains whitespace or control characters"),
            P::UnsupportedScheme(s) => write!(f, "unsupported scheme `{s}` (use https or http)"),
            P::Credentials => write!(
                f,
                "credentials in image names are not supported (use DUCC_AUTH_REGISTRIES or a docker config.json)"
            ),
            P::UrlExtras => write!(f, "image names cannot have a query (`?`) or fragment (`#`)"),
            P::NoRegistry => write!(
                f,
                "no registry: ducc has no default registry, so the name must start with one"
            ),
            P::BadRegistry(r) => write!(f, "`{r}` is not a valid registry host"),
            P::BadPort(p) => write!(f, "`{p}` is not a valid port (1 to 65535)"),
            P::NoRepository => write!(f, "no repository after the registry"),
            P::BadRepositoryComponent(c) => write!(
                f,
                "repository component `{c}` is invalid (lowercase letters and digits, separated by `.`, `_`, `__` or dashes)"
            ),
            P::UppercaseRepository => write!(f, "repository names must be lowercase"),
            P::RepositoryTooLong(n) => {
                write!(
                    f,
                    "the repository is {n} characters long (at most {MAX_REPOSITORY_LEN})"
                )
            }
            P::NoTagOrDigest => write!(
                f,
                "no tag or digest: ducc has no default tag, so name one (`:latest`, `@sha256:...`)"
            ),
            P::BadTag(t) => write!(
                f,
                "tag `{t}` is invalid (up to 128 of letters, digits, `_`, `.`, `-`, not starting with `.` or `-`; `*` for globs)"
            ),
            P::BadDigest(d) => write!(f, "digest `{d}` is not of the form `algorithm:hex`"),
            P::UnsupportedDigestAlgorithm(a) => {
                write!(f, "unsupported digest algorithm `{a}` (sha256 or sha512)")
            }
            P::BadDigestLength {
                algorithm,
                expected,
                found,
            } => write!(
                f,
                "a {algorithm} digest has {expected} hex digits, this one has {found}"
            ),
            P::UppercaseDigest => write!(f, "digests are written in lowercase hex"),
            P::GlobWithDigest => {
                write!(
                    f,
                    "a tag glob cannot be combined with a digest, which pins one image"
                )
            }
        }
    }
}

/// An image name that could not be parsed.
///
/// Displays as ``invalid image name `NAME`: PROBLEM``, followed by the corrected form where one can
/// be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image name `{input}`: {problem}{}", suggestion_text(.suggestion))]
pub struct ReferenceError {
    input: String,
    problem: ReferenceProblem,
    suggestion: Option<String>,
}

fn suggestion_text(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!("; did you mean `{s}`?"),
        None => String::new(),
    }
}

impl ReferenceError {
    /// The name as given.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// What is wrong with it.
    pub fn problem(&self) -> &ReferenceProblem {
        &self.problem
    }

    /// The corrected form, where one can be guessed.
    pub fn suggestion(&self) -> Option<&str> {
        self.suggestion.as_deref()
    }
}

impl ImageRef {
    /// Parses `[SCHEME://]REGISTRY/REPOSITORY[:TAG][@DIGEST]`.
    ///
    /// # Errors
    /// A [`ReferenceError`] saying what is wrong and, where it can, the corrected form.
    ///
    /// ```
    /// use ducc_oci::ImageRef;
    /// let image = ImageRef::parse("registry.hub.docker.com/library/ubuntu:22.04")?;
    /// assert_eq!(image.whole_name(), "https://registry.hub.docker.com/library/ubuntu:22.04");
    /// assert!(ImageRef::parse("ubuntu:22.04").is_err());
    /// # Ok::<(), ducc_oci::ReferenceError>(())
    /// ```
    pub fn parse(input: &str) -> Result<ImageRef, ReferenceError> {
        Parser { input }.parse()
    }

    /// Builds a reference from parts, checking each as [`ImageRef::parse`] does.
    ///
    /// # Errors
    /// A [`ReferenceError`] for the first part that is invalid.
    pub fn from_parts(
        scheme: Scheme,
        registry: &str,
        repository: &str,
        tag: Option<&str>,
        digest: Option<&str>,
    ) -> Result<ImageRef, ReferenceError> {
        let mut name = format!("{scheme}://{registry}/{repository}");
        if let Some(tag) = tag {
            name.push(':');
            name.push_str(tag);
        }
        if let Some(digest) = digest {
            name.push('@');
            name.push_str(digest);
        }
        let parsed = ImageRef::parse(&name)?;
        // A part holding a separator (`/`, `:` or `@`) would parse into other fields.
        if parsed.registry != registry
            || parsed.repository != repository
            || parsed.tag.as_deref() != tag
            || parsed.digest() != digest
        {
            return Err(ReferenceError {
                input: name,
                problem: ReferenceProblem::BadRepositoryComponent(repository.to_owned()),
                suggestion: None,
            });
        }
        Ok(parsed)
    }

    /// Checks a plain tag, as a registry's `/manifests/<tag>` takes it:
    /// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`, no glob.
    ///
    /// # Errors
    /// [`ReferenceProblem::BadTag`] naming the tag.
    pub fn check_plain_tag(tag: &str) -> Result<(), ReferenceProblem> {
        if tag.contains('*') {
            return Err(ReferenceProblem::BadTag(tag.to_owned()));
        }
        check_tag(tag)
    }

    /// `https` unless the name said `http://`.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The registry host, with its port if it has one (`localhost:5000`, `[::1]:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path (`library/ubuntu`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag (possibly a glob).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, `algorithm:hex`.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_ref().map(AsRef::as_ref)
    }

    /// The digest the name pins (sha256 or sha512), as oci-spec's type, for the registry client.
    /// A sha256 one converts into a [`crate::ManifestDigest`] with `TryFrom`.
    pub fn pinned_digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// Whether the tag is a glob to expand against the registry's tag list.
    pub fn is_tag_glob(&self) -> bool {
        self.tag.as_deref().is_some_and(|t| t.contains('*'))
    }

    /// The tag glob, when the tag is one.
    pub fn tag_glob(&self) -> Option<Glob> {
        self.tag
            .as_deref()
            .filter(|t| t.contains('*'))
            .map(Glob::new)
    }

    /// The same image with `tag` as its tag (for the tags a glob expands to).
    ///
    /// # Errors
    /// A [`ReferenceError`] when `tag` is not a valid tag.
    pub fn with_tag(&self, tag: &str) -> Result<ImageRef, ReferenceError> {
        ImageRef::from_parts(
            self.scheme,
            &self.registry,
            &self.repository,
            Some(tag),
            self.digest(),
        )
    }

    /// `:tag`, `@digest` or `:tag@digest`.
    pub fn reference(&self) -> String {
        let mut out = String::new();
        if let Some(tag) = &self.tag {
            out.push(':');
            out.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            out.push('@');
            out.push_str(digest.as_ref());
        }
        out
    }

    /// Repository plus reference (`library/ubuntu:latest`), the `$(image)` of output formats.
    pub fn image(&self) -> String {
        format!("{}{}", self.repository, self.reference())
    }

    /// `scheme://registry/repository[:tag][@digest]`; parses back to the same reference.
    pub fn whole_name(&self) -> String {
        format!("{}://{}/{}", self.scheme, self.registry, self.image())
    }

    /// `registry/repository:tag`, or `registry/repository:sha256:<hex>` when there is only a
    /// digest: the name used for paths in the repository.
    pub fn simple_name(&self) -> String {
        match (&self.tag, &self.digest) {
            (Some(tag), _) => format!("{}/{}:{tag}", self.registry, self.repository),
            (None, Some(digest)) => format!("{}/{}:{digest}", self.registry, self.repository),
            (None, None) => format!("{}/{}", self.registry, self.repository),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.whole_name())
    }
}

impl FromStr for ImageRef {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

struct Parser<'a> {
    input: &'a str,
}

impl Parser<'_> {
    fn fail(&self, problem: ReferenceProblem) -> ReferenceError {
        self.fail_with(problem, None)
    }

    fn fail_with(&self, problem: ReferenceProblem, suggestion: Option<String>) -> ReferenceError {
        ReferenceError {
            input: self.input.to_owned(),
            problem,
            suggestion,
        }
    }

    fn parse(&self) -> Result<ImageRef, ReferenceError> {
        let input = self.input;
        if input.is_empty() {
            return Err(self.fail(ReferenceProblem::Empty));
        }
        if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            let trimmed = input.trim();
            let suggestion = (trimmed != input && !trimmed.is_empty())
                .then(|| trimmed.to_owned())
                .filter(|t| ImageRef::parse(t).is_ok());
            return Err(self.fail_with(ReferenceProblem::Whitespace, suggestion));
        }
        if input.contains(['?', '#']) {
            return Err(self.fail(ReferenceProblem::UrlExtras));
        }
        let (scheme, scheme_given, rest) = match input.split_once("://") {
            Some((s, rest)) => match s.to_ascii_lowercase().as_str() {
                "https" => (Scheme::Https, true, rest),
                "http" => (Scheme::Http, true, rest),
                _ => return Err(self.fail(ReferenceProblem::UnsupportedScheme(s.to_owned()))),
            },
            None => (Scheme::Https, false, input),
        };
        let (host, path) = match rest.split_once('/') {
            Some((host, path)) => (host, path),
            None => (rest, ""),
        };
        if host.contains('@') {
            return Err(self.fail(ReferenceProblem::Credentials));
        }
        // `ubuntu:22.04` has no `/` at all: it is a repository and tag, not a registry and port.
        if !rest.contains('/') || !looks_like_registry(host) {
            return Err(self.fail_with(ReferenceProblem::NoRegistry, suggest_registry(rest)));
        }
        check_registry(host).map_err(|p| self.fail(p))?;
        if path.is_empty() {
            return Err(self.fail(ReferenceProblem::NoRepository));
        }

        let (name_and_tag, digest) = match path.split_once('@') {
            Some((left, digest)) => (left, Some(digest)),
            None => (path, None),
        };
        let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match name_and_tag[last_slash..].find(':') {
            Some(i) => {
                let colon = last_slash + i;
                (&name_and_tag[..colon], Some(&name_and_tag[colon + 1..]))
            }
            None => (name_and_tag, None),
        };

        let with_tail = |repository: &str| -> String {
            let prefix = if scheme_given {
                format!("{scheme}://")
            } else {
                String::new()
            };
            let tail = &path[repository.len()..];
            format!("{prefix}{host}/{repository}{tail}")
        };
        check_repository(repository).map_err(|problem| {
            let fixed = repository.to_ascii_lowercase();
            let suggestion = (problem == ReferenceProblem::UppercaseRepository)
                .then(|| with_tail(&fixed))
                .filter(|s| ImageRef::parse(s).is_ok());
            self.fail_with(problem, suggestion)
        })?;

        if let Some(tag) = tag {
            check_tag(tag).map_err(|p| self.fail(p))?;
        }
        let digest = match digest {
            Some(digest) => {
                check_digest(digest).map_err(|problem| {
                    let suggestion = (problem == ReferenceProblem::UppercaseDigest)
                        .then(|| input.replace(digest, &digest.to_ascii_lowercase()));
                    self.fail_with(problem, suggestion)
                })?;
                if tag.is_some_and(|t| t.contains('*')) {
                    return Err(self.fail(ReferenceProblem::GlobWithDigest));
                }
                // check_digest is stricter than oci-spec, so this only fails if they disagree.
                let parsed = Digest::from_str(digest)
                    .map_err(|_| self.fail(ReferenceProblem::BadDigest(digest.to_owned())))?;
                Some(parsed)
            }
            None => None,
        };
        if tag.is_none() && digest.is_none() {
            return Err(self.fail_with(
                ReferenceProblem::NoTagOrDigest,
                Some(format!("{input}:latest")).filter(|s| ImageRef::parse(s).is_ok()),
            ));
        }
        Ok(ImageRef {
            scheme,
            registry: host.to_owned(),
            repository: repository.to_owned(),
            tag: tag.map(str::to_owned),
            digest,
        })
    }
}

/// A first path component names a registry if it could only be a host: it has a dot or a port, or
/// is `localhost` or an IPv6 literal. This is the rule docker uses to tell `library/ubuntu` from
/// `quay.io/x`.
fn looks_like_registry(host: &str) -> bool {
    host.contains('.') || host.contains(':') || host.starts_with('[') || host == "localhost"
}

/// For a name without a registry, the name with the one it most likely meant.
fn suggest_registry(rest: &str) -> Option<String> {
    if rest.is_empty() {
        return None;
    }
    let with_namespace = if rest.contains('/') {
        rest.to_owned()
    } else {
        format!("library/{rest}")
    };
    let (name, reference) = split_reference(&with_namespace);
    let reference = if reference.is_empty() {
        ":latest".to_owned()
    } else {
        reference.to_owned()
    };
    let suggestion = format!(
        "{SUGGESTED_REGISTRY}/{}{reference}",
        name.to_ascii_lowercase()
    );
    ImageRef::parse(&suggestion).is_ok().then_some(suggestion)
}

/// Splits `name[:tag][@digest]` into the name and the rest (`:tag@digest`).
fn split_reference(path: &str) -> (&str, &str) {
    let end = path.find('@').unwrap_or(path.len());
    let last_slash = path[..end].rfind('/').map_or(0, |i| i + 1);
    let cut = path[last_slash..end]
        .find(':')
        .map_or(end, |i| last_slash + i);
    path.split_at(cut)
}

fn check_registry(host: &str) -> Result<(), ReferenceProblem> {
    let bad = || ReferenceProblem::BadRegistry(host.to_owned());
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (addr, after) = rest.split_once(']').ok_or_else(bad)?;
        Ipv6Addr::from_str(addr).map_err(|_| bad())?;
        match after {
            "" => (None, None),
            _ => (None, Some(after.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match host.split_once(':') {
            Some((name, port)) => (Some(name), Some(port)),
            None => (Some(host), None),
        }
    };
    if let Some(name) = name {
        let is_ipv4 = Ipv4Addr::from_str(name).is_ok();
        if !is_ipv4 && !is_hostname(name) {
            return Err(bad());
        }
    }
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p));
        if !valid {
            return Err(ReferenceProblem::BadPort(port.to_owned()));
        }
    }
    Ok(())
}

/// Hostname labels: letters, digits and inner dashes, 1 to 63 characters each, 253 in all.
fn is_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn check_repository(repository: &str) -> Result<(), ReferenceProblem> {
    if repository.is_empty() {
        return Err(ReferenceProblem::NoRepository);
    }
    if repository.len() > MAX_REPOSITORY_LEN {
        return Err(ReferenceProblem::RepositoryTooLong(repository.len()));
    }
    let mut uppercase = false;
    for component in repository.split('/') {
        if component.bytes().any(|b| b.is_ascii_uppercase()) {
            uppercase = true;
            if is_path_component(&component.to_ascii_lowercase()) {
                continue;
            }
        }
        if !is_path_component(component) {
            return Err(ReferenceProblem::BadRepositoryComponent(
                component.to_owned(),
            ));
        }
    }
    if uppercase {
        return Err(ReferenceProblem::UppercaseRepository);
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        // One separator: `.`, `_`, `__` or a run of dashes.
        match bytes[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if bytes.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            b'-' => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

fn check_tag(tag: &str) -> Result<(), ReferenceProblem> {
    let bad = || ReferenceProblem::BadTag(tag.to_owned());
    let glob = tag.contains('*');
    let first_ok = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || (glob && b == b'*');
    let rest_ok =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-') || (glob && b == b'*');
    match tag.as_bytes().split_first() {
        Some((&first, rest))
            if tag.len() <= MAX_TAG_LEN && first_ok(first) && rest.iter().all(|&b| rest_ok(b)) =>
        {
            Ok(())
        }
        _ => Err(bad()),
    }
}

fn check_digest(digest: &str) -> Result<(), ReferenceProblem> {
    let (algorithm, hex) = digest
        .split_once(':')
        .ok_or_else(|| ReferenceProblem::BadDigest(digest.to_owned()))?;
    let expected = match algorithm {
        "sha256" => 64,
        "sha512" => 128,
        _ if algorithm.is_empty() || hex.is_empty() => {
            return Err(ReferenceProblem::BadDigest(digest.to_owned()));
        }
        _ => {
            return Err(ReferenceProblem::UnsupportedDigestAlgorithm(
                algorithm.to_owned(),
            ));
        }
    };
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ReferenceProblem::BadDigest(digest.to_owned()));
    }
    if hex.len() != expected {
        return Err(ReferenceProblem::BadDigestLength {
            algorithm: algorithm.to_owned(),
            expected,
            found: hex.len(),
        });
    }
    if hex.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(ReferenceProblem::UppercaseDigest);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn parts(name: &str) -> (Scheme, String, String, Option<String>, Option<String>) {
        let r = ImageRef::parse(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let digest = r.digest().map(str::to_owned);
        (r.scheme, r.registry, r.repository, r.tag, digest)
    }

    macro_rules! accepts {
        ($($name:ident: $input:expr => ($scheme:ident, $reg:literal, $repo:literal, $tag:expr, $digest:expr);)*) => {$(
            #[test]
            fn $name() {
                let tag: Option<&str> = $tag;
                let digest: Option<&str> = $digest;
                assert_eq!(
                    parts(&$input),
                    (Scheme::$scheme, $reg.to_owned(), $repo.to_owned(), tag.map(str::to_owned), digest.map(str::to_owned))
                );
            }
        )*};
    }

    accepts! {
        scheme_defaults_to_https: "registry.hub.docker.com/library/ubuntu:22.04" => (Https, "registry.hub.docker.com", "library/ubuntu", Some("22.04"), None);
        explicit_https: "https://quay.io/a/b:1" => (Https, "quay.io", "a/b", Some("1"), None);
        http_scheme_is_kept: "http://localhost:5000/a:1" => (Http, "localhost:5000", "a", Some("1"), None);
        scheme_is_case_insensitive: "HTTP://localhost/a:1" => (Http, "localhost", "a", Some("1"), None);
        localhost_without_port: "localhost/x:y" => (Https, "localhost", "x", Some("y"), None);
        ipv4_with_port: "127.0.0.1:5000/a/b:t" => (Https, "127.0.0.1:5000", "a/b", Some("t"), None);
        ipv6_literal: "[::1]/a:t" => (Https, "[::1]", "a", Some("t"), None);
        ipv6_literal_with_port: "http://[::1]:5000/a:t" => (Http, "[::1]:5000", "a", Some("t"), None);
        deep_repository: "gitlab-registry.cern.ch/a/b/c/d:v1" => (Https, "gitlab-registry.cern.ch", "a/b/c/d", Some("v1"), None);
        digest_only: format!("quay.io/a/b@{SHA}") => (Https, "quay.io", "a/b", None, Some(SHA));
        tag_and_digest: format!("quay.io/a/b:1@{SHA}") => (Https, "quay.io", "a/b", Some("1"), Some(SHA));
        sha512_digest: format!("quay.io/a@sha512:{}", "ab".repeat(64)) => (Https, "quay.io", "a", None, Some(&*format!("sha512:{}", "ab".repeat(64))));
        tag_glob: "registry.hub.docker.com/atlas/analysisbase:21.2.1*" => (Https, "registry.hub.docker.com", "atlas/analysisbase", Some("21.2.1*"), None);
        glob_may_start_with_star: "quay.io/a:*-slim" => (Https, "quay.io", "a", Some("*-slim"), None);
        separators_dot_underscore_dashes: "quay.io/a.b_c__d---e:t" => (Https, "quay.io", "a.b_c__d---e", Some("t"), None);
        tag_with_uppercase_is_fine: "quay.io/a:Latest_1.0-rc" => (Https, "quay.io", "a", Some("Latest_1.0-rc"), None);
        port_in_registry_and_tag: "reg.io:443/a:8080" => (Https, "reg.io:443", "a", Some("8080"), None);
        longest_tag: format!("quay.io/a:{}", "t".repeat(128)) => (Https, "quay.io", "a", Some(&*"t".repeat(128)), None);
    }

    fn problem(name: &str) -> ReferenceError {
        ImageRef::parse(name).expect_err(name)
    }

    macro_rules! rejects {
        ($($name:ident: $input:expr => $pattern:pat, $suggestion:expr;)*) => {$(
            #[test]
            fn $name() {
                let input: String = $input.into();
                let err = problem(&input);
                assert!(matches!(err.problem(), $pattern), "{input}: {err}");
                let suggestion: Option<&str> = $suggestion;
                assert_eq!(err.suggestion(), suggestion, "{input}: {err}");
                assert!(err.to_string().contains(&format!("`{input}`")), "message names the input: {err}");
            }
        )*};
    }

    rejects! {
        empty_name: "" => ReferenceProblem::Empty, None;
        bare_name_with_tag_suggests_docker_hub: "ubuntu:22.04" => ReferenceProblem::NoRegistry, Some("registry.hub.docker.com/library/ubuntu:22.04");
        bare_name_suggests_latest: "ubuntu" => ReferenceProblem::NoRegistry, Some("registry.hub.docker.com/library/ubuntu:latest");
        namespace_without_registry: "atlas/athena:22.0" => ReferenceProblem::NoRegistry, Some("registry.hub.docker.com/atlas/athena:22.0");
        uppercase_bare_name_suggests_lowercase: "Ubuntu:1" => ReferenceProblem::NoRegistry, Some("registry.hub.docker.com/library/ubuntu:1");
        unsupported_scheme: "ftp://quay.io/a:1" => ReferenceProblem::UnsupportedScheme(_), None;
        docker_scheme_is_not_a_url: "docker://quay.io/a:1" => ReferenceProblem::UnsupportedScheme(_), None;
        credentials_in_name: "https://bob:secret@quay.io/a:1" => ReferenceProblem::Credentials, None;
        query_string: "quay.io/a:1?x=y" => ReferenceProblem::UrlExtras, None;
        whitespace_inside: "quay.io/a: 1" => ReferenceProblem::Whitespace, None;
        surrounding_whitespace_suggests_trimmed: " quay.io/a:1 " => ReferenceProblem::Whitespace, Some("quay.io/a:1");
        registry_only: "quay.io/" => ReferenceProblem::NoRepository, None;
        bad_host_label: "bad_host.io/a:1" => ReferenceProblem::BadRegistry(_), None;
        host_label_starting_with_dash: "-x.io/a:1" => ReferenceProblem::BadRegistry(_), None;
        bad_ipv6: "[::zz]:5000/a:1" => ReferenceProblem::BadRegistry(_), None;
        port_zero: "localhost:0/a:1" => ReferenceProblem::BadPort(_), None;
        port_too_big: "localhost:65536/a:1" => ReferenceProblem::BadPort(_), None;
        port_not_numeric: "localhost:http/a:1" => ReferenceProblem::BadPort(_), None;
        empty_path_component: "quay.io/a//b:1" => ReferenceProblem::BadRepositoryComponent(_), None;
        trailing_slash: "quay.io/a/:1" => ReferenceProblem::BadRepositoryComponent(_), None;
        triple_underscore: "quay.io/a___b:1" => ReferenceProblem::BadRepositoryComponent(_), None;
        leading_separator: "quay.io/-a:1" => ReferenceProblem::BadRepositoryComponent(_), None;
        trailing_separator: "quay.io/a.:1" => ReferenceProblem::BadRepositoryComponent(_), None;
        uppercase_repository_suggests_lowercase: "quay.io/Atlas/Athena:1" => ReferenceProblem::UppercaseRepository, Some("quay.io/atlas/athena:1");
        repository_too_long: format!("quay.io/{}:1", "a".repeat(256)) => ReferenceProblem::RepositoryTooLong(256), None;
        no_tag_or_digest_suggests_latest: "quay.io/a/b" => ReferenceProblem::NoTagOrDigest, Some("quay.io/a/b:latest");
        empty_tag: "quay.io/a:" => ReferenceProblem::BadTag(_), None;
        tag_starting_with_dot: "quay.io/a:.x" => ReferenceProblem::BadTag(_), None;
        tag_starting_with_dash: "quay.io/a:-x" => ReferenceProblem::BadTag(_), None;
        tag_too_long: format!("quay.io/a:{}", "t".repeat(129)) => ReferenceProblem::BadTag(_), None;
        tag_with_plus: "quay.io/a:1+2" => ReferenceProblem::BadTag(_), None;
        tag_with_colon: "quay.io/a:1:2" => ReferenceProblem::BadTag(_), None;
        digest_without_colon: "quay.io/a@sha256" => ReferenceProblem::BadDigest(_), None;
        digest_not_hex: format!("quay.io/a@sha256:{}", "g".repeat(64)) => ReferenceProblem::BadDigest(_), None;
        digest_too_short: "quay.io/a@sha256:abcd" => ReferenceProblem::BadDigestLength { expected: 64, found: 4, .. }, None;
        sha512_wrong_length: format!("quay.io/a@sha512:{}", "a".repeat(64)) => ReferenceProblem::BadDigestLength { expected: 128, found: 64, .. }, None;
        unknown_digest_algorithm: "quay.io/a@md5:d41d8cd98f00b204e9800998ecf8427e" => ReferenceProblem::UnsupportedDigestAlgorithm(_), None;
        uppercase_digest_suggests_lowercase: format!("quay.io/a@{}", SHA.replace("abcdef", "ABCDEF")) => ReferenceProblem::UppercaseDigest, Some(&*format!("quay.io/a@{SHA}"));
        glob_with_digest: format!("quay.io/a:1.*@{SHA}") => ReferenceProblem::GlobWithDigest, None;
        two_at_signs: format!("quay.io/a@{SHA}@{SHA}") => ReferenceProblem::BadDigest(_), None;
    }

    #[test]
    fn whole_name_adds_default_scheme() {
        let r = ImageRef::parse("registry.hub.docker.com/library/ubuntu:22.04").unwrap();
        assert_eq!(
            r.whole_name(),
            "https://registry.hub.docker.com/library/ubuntu:22.04"
        );
        assert_eq!(r.to_string(), r.whole_name());
    }

    #[test]
    fn whole_name_keeps_tag_and_digest() {
        let name = format!("http://localhost:5000/a/b:1@{SHA}");
        assert_eq!(ImageRef::parse(&name).unwrap().whole_name(), name);
    }

    #[test]
    fn simple_name_drops_scheme_and_digest_when_tagged() {
        let r = ImageRef::parse(&format!("http://localhost:5000/a/b:1@{SHA}")).unwrap();
        assert_eq!(r.simple_name(), "localhost:5000/a/b:1");
    }

    #[test]
    fn simple_name_of_digest_only_image_uses_the_digest_as_tag() {
        let r = ImageRef::parse(&format!("quay.io/a/b@{SHA}")).unwrap();
        assert_eq!(r.simple_name(), format!("quay.io/a/b:{SHA}"));
    }

    #[test]
    fn reference_and_image_forms() {
        let tagged = ImageRef::parse("quay.io/a/b:1").unwrap();
        assert_eq!(tagged.reference(), ":1");
        assert_eq!(tagged.image(), "a/b:1");
        let pinned = ImageRef::parse(&format!("quay.io/a/b@{SHA}")).unwrap();
        assert_eq!(pinned.reference(), format!("@{SHA}"));
        let both = ImageRef::parse(&format!("quay.io/a/b:1@{SHA}")).unwrap();
        assert_eq!(both.reference(), format!(":1@{SHA}"));
    }

    #[test]
    fn with_tag_replaces_a_glob() {
        let glob = ImageRef::parse("quay.io/a:21.2.1*").unwrap();
        assert!(glob.is_tag_glob());
        let expanded = glob.with_tag("21.2.10").unwrap();
        assert_eq!(expanded.tag(), Some("21.2.10"));
        assert!(!expanded.is_tag_glob());
        assert!(glob.with_tag("bad tag").is_err());
        assert!(glob.with_tag("x/y").is_err());
    }

    #[test]
    fn plain_tags_refuse_globs() {
        assert_eq!(ImageRef::check_plain_tag("v1.2_x-y"), Ok(()));
        for bad in ["1.*", "", ".x", "a b", "x/y"] {
            assert_eq!(
                ImageRef::check_plain_tag(bad),
                Err(ReferenceProblem::BadTag(bad.to_owned())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn tag_glob_is_only_given_for_globs() {
        assert!(ImageRef::parse("quay.io/a:1").unwrap().tag_glob().is_none());
        let glob = ImageRef::parse("quay.io/a:1.*")
            .unwrap()
            .tag_glob()
            .unwrap();
        assert!(glob.matches("1.2") && !glob.matches("2.1"));
    }

    #[test]
    fn error_message_reads_as_one_sentence() {
        let err = problem("ubuntu:22.04");
        assert_eq!(
            err.to_string(),
            "invalid image name `ubuntu:22.04`: no registry: ducc has no default registry, so the name must start with one; did you mean `registry.hub.docker.com/library/ubuntu:22.04`?"
        );
    }

    #[test]
    fn every_suggestion_parses() {
        for name in [
            "ubuntu",
            "ubuntu:22.04",
            "a/b:1",
            "quay.io/A:1",
            "quay.io/a",
            " quay.io/a:1",
        ] {
            if let Some(s) = problem(name).suggestion() {
                assert!(ImageRef::parse(s).is_ok(), "suggestion {s} for {name}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in ".{0,300}") {
            let _ = ImageRef::parse(&s);
        }

        #[test]
        fn parser_never_panics_on_reference_like_input(s in "(https?://)?[a-zA-Z0-9.:\\[\\]@_*/-]{0,80}") {
            let _ = ImageRef::parse(&s);
        }

        #[test]
        fn whole_name_round_trips(
            scheme in proptest::prop_oneof![proptest::strategy::Just("http://"), proptest::strategy::Just("https://"), proptest::strategy::Just("")],
            host in "(localhost|[a-z]([a-z0-9-]{0,9}[a-z0-9])?\\.[a-z]{2,5}|127\\.0\\.0\\.1|\\[::1\\])(:[1-9][0-9]{0,3})?",
            repo in "[a-z0-9]{1,8}((\\.|_|__|-+)[a-z0-9]{1,5}){0,2}(/[a-z0-9]{1,8}){0,3}",
            tag in proptest::option::of("[A-Za-z0-9_][A-Za-z0-9_.*-]{0,20}"),
            digest in proptest::option::of("[0-9a-f]{64}"),
        ) {
            let tag = if digest.is_some() { tag.filter(|t| !t.contains('*')) } else { tag };
            let tag = if tag.is_none() && digest.is_none() { Some("latest".to_owned()) } else { tag };
            let mut name = format!("{scheme}{host}/{repo}");
            if let Some(t) = &tag { name.push(':'); name.push_str(t); }
            if let Some(d) = &digest { name.push_str("@sha256:"); name.push_str(d); }
            let parsed = ImageRef::parse(&name).unwrap();
            let again = ImageRef::parse(&parsed.whole_name()).unwrap();
            proptest::prop_assert_eq!(&parsed, &again);
            proptest::prop_assert_eq!(parsed.tag(), tag.as_deref());
            proptest::prop_assert_eq!(parsed.repository(), repo.as_str());
            let from_parts = ImageRef::from_parts(parsed.scheme(), parsed.registry(), parsed.repository(), parsed.tag(), parsed.digest()).unwrap();
            proptest::prop_assert_eq!(&from_parts, &parsed);
        }
    }
}
