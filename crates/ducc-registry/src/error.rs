//! The one error type of the crate: what went wrong ([`ErrorKind`]) plus where (registry,
//! repository, request), the HTTP status and registry error codes, and whether retrying may help.

use std::fmt;

/// What went wrong. Match on this through [`Error::kind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A repository path, registry host, tag, digest or platform given to the client is malformed.
    #[error("invalid {what}: {value:?}")]
    InvalidInput {
        /// Which kind of input (e.g. "repository path").
        what: &'static str,
        /// The value as given.
        value: String,
    },
    /// No TCP (or TLS) connection could be made.
    #[error("cannot connect")]
    Connect,
    /// A connect, read or write timed out.
    #[error("timed out")]
    Timeout,
    /// The connection broke or the peer spoke broken HTTP.
    #[error("connection failed")]
    Transport,
    /// The registry refused our credentials, or asked for credentials we do not have.
    #[error("authentication required or refused")]
    Unauthorized,
    /// Authenticated, but not allowed (HTTP 403).
    #[error("access denied")]
    Denied,
    /// The manifest, blob or repository does not exist (HTTP 404).
    #[error("not found")]
    NotFound,
    /// HTTP 429 and retries exhausted.
    #[error("rate limited by the registry")]
    RateLimited,
    /// HTTP 5xx and retries exhausted.
    #[error("registry server error")]
    Server,
    /// Any other HTTP status the request does not expect.
    #[error("unexpected response")]
    UnexpectedStatus,
    /// A `WWW-Authenticate` challenge that cannot be parsed or uses an unsupported scheme.
    #[error("unusable authentication challenge: {challenge:?}")]
    AuthChallenge {
        /// The header value.
        challenge: String,
    },
    /// The token server answered without a usable token.
    #[error("token server response has no usable token")]
    TokenResponse,
    /// A credential source is broken: `DUCC_*` variables, docker `config.json`, a credential helper.
    #[error("credentials: {detail}")]
    Credentials {
        /// What is wrong with the source (never contains a secret).
        detail: String,
    },
    /// The registry served a media type this client does not handle (e.g. Docker schema1).
    #[error("unsupported media type {media_type:?}")]
    UnsupportedMediaType {
        /// The media type as served.
        media_type: String,
    },
    /// The manifest or index document cannot be parsed, or disagrees with its declared type.
    #[error("invalid manifest: {detail}")]
    InvalidManifest {
        /// What is wrong.
        detail: String,
    },
    /// A document with both `layers` and `manifests` (CVE-2021-41190): refused as ambiguous.
    #[error("ambiguous manifest: it has both `layers` and `manifests` (CVE-2021-41190)")]
    AmbiguousManifest,
    /// No entry of the index matches the wanted platform.
    #[error("no manifest for platform {wanted} (available: {})", available_list(.available))]
    PlatformNotFound {
        /// The platform asked for, `os/arch[/variant]`.
        wanted: String,
        /// The platforms the index offers, `os/arch[/variant]`, attestation entries left out.
        available: Vec<String>,
    },
    /// The content does not hash to the digest it was fetched by or announced with.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest we asked for (or the registry announced).
        expected: String,
        /// The digest of the bytes received.
        actual: String,
    },
    /// The content is longer or shorter than its descriptor says.
    #[error("size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// Size from the descriptor.
        expected: u64,
        /// Bytes received (at least this many, when too long).
        actual: u64,
    },
    /// A digest algorithm this client cannot verify.
    #[error("unsupported digest algorithm {algorithm:?}")]
    UnsupportedDigest {
        /// The algorithm part of the digest.
        algorithm: String,
    },
    /// A manifest, index, config, tag list page or token reply larger than the client accepts
    /// into memory.
    #[error("{what} is larger than the {limit} bytes accepted")]
    TooLarge {
        /// What was too large: `manifest or index`, `image config`, `tag list page`, ...
        what: &'static str,
        /// The limit in bytes.
        limit: u64,
    },
    /// HTTP 429 or 5xx whose `Retry-After` asks for a longer wait than the retry policy allows
    /// ([`crate::RetryPolicy::max_retry_after`], 5 minutes by default).
    #[error(
        "registry asks to retry after {} s, longer than the {limit_secs} s this client waits",
        if *asked_secs == u64::MAX { "more than 2^64".to_owned() } else { asked_secs.to_string() }
    )]
    RetryAfterTooLong {
        /// The wait asked for, in seconds (`u64::MAX` when beyond that).
        asked_secs: u64,
        /// The longest wait honoured, in seconds.
        limit_secs: u64,
    },
    /// A redirect, `Link` or `Location` from an https registry to plain http: refused, since
    /// what follows (content, or a token request with credentials) would travel unprotected.
    #[error("refusing to go from https to plain http ({target})")]
    InsecureRedirect {
        /// The plain-http URL, redacted.
        target: String,
    },
    /// The registry named an upload session on another origin: refused, since the blob and the
    /// credentials of this registry must not go there.
    #[error(
        "upload session is on another origin ({location}) than the registry ({registry_origin}): refusing to upload there"
    )]
    ForeignUploadLocation {
        /// The `Location` as resolved, redacted.
        location: String,
        /// The registry's own origin.
        registry_origin: String,
    },
    /// The image config blob cannot be parsed.
    #[error("invalid image config")]
    InvalidConfig,
    /// A response is missing a header or carries a malformed one (`Location`, `Link`, ...).
    #[error("invalid response: {detail}")]
    InvalidResponse {
        /// What is wrong.
        detail: String,
    },
    /// Too many redirects in a row.
    #[error("too many redirects")]
    TooManyRedirects,
    /// Reading the local data to upload failed.
    #[error("cannot read the data to upload")]
    UploadSource,
}

fn available_list(available: &[String]) -> String {
    if available.is_empty() {
        "none".to_owned()
    } else {
        available.join(", ")
    }
}

/// An HTTP request as it appears in errors: method and URL, with no credentials in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// `GET`, `HEAD`, `PUT`, ...
    pub method: String,
    /// The URL with user info removed and signature-like query values replaced by `REDACTED`.
    pub url: String,
}

impl fmt::Display for RequestInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.url)
    }
}

/// One entry of a registry's `{"errors": [...]}` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryErrorCode {
    /// e.g. `MANIFEST_UNKNOWN`, `DENIED`, `BLOB_UNKNOWN`.
    pub code: String,
    /// The registry's message, as sent.
    pub message: String,
}

/// A registry client error, with the context needed to act on it.
///
/// The display form is `registry/repository: METHOD url: what (HTTP status: CODES)`; an underlying
/// cause (I/O, JSON, TLS) is in [`std::error::Error::source`], never repeated in the message.
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    registry: Option<String>,
    repository: Option<String>,
    request: Option<RequestInfo>,
    status: Option<u16>,
    codes: Vec<RegistryErrorCode>,
    retryable: bool,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// An error of this kind with no context yet.
    pub(crate) fn new(kind: ErrorKind) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                registry: None,
                repository: None,
                request: None,
                status: None,
                codes: Vec::new(),
                retryable: false,
                source: None,
            }),
        }
    }

    pub(crate) fn invalid_input(what: &'static str, value: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidInput {
            what,
            value: value.into(),
        })
    }

    pub(crate) fn credentials(detail: impl Into<String>) -> Self {
        Error::new(ErrorKind::Credentials {
            detail: detail.into(),
        })
    }

    pub(crate) fn with_registry(mut self, registry: &str) -> Self {
        self.inner.registry = Some(registry.to_owned());
        self
    }

    /// Sets registry and repository unless already set (the innermost context wins).
    pub(crate) fn in_repository(mut self, registry: &str, repository: &str) -> Self {
        if self.inner.registry.is_none() {
            self.inner.registry = Some(registry.to_owned());
        }
        if self.inner.repository.is_none() {
            self.inner.repository = Some(repository.to_owned());
        }
        self
    }

    pub(crate) fn with_request(mut self, method: &str, url: &str) -> Self {
        self.inner.request = Some(RequestInfo {
            method: method.to_owned(),
            url: crate::redact::redact_url(url),
        });
        self
    }

    pub(crate) fn with_request_if_missing(self, method: &str, url: &str) -> Self {
        if self.inner.request.is_none() {
            self.with_request(method, url)
        } else {
            self
        }
    }

    pub(crate) fn with_status(mut self, status: u16) -> Self {
        self.inner.status = Some(status);
        self
    }

    pub(crate) fn with_codes(mut self, codes: Vec<RegistryErrorCode>) -> Self {
        self.inner.codes = codes;
        self
    }

    pub(crate) fn retryable(mut self, retryable: bool) -> Self {
        self.inner.retryable = retryable;
        self
    }

    pub(crate) fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        self.inner.source = Some(source.into());
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.inner.kind
    }

    /// The registry (`host[:port]`) the request went to, when there was one.
    pub fn registry(&self) -> Option<&str> {
        self.inner.registry.as_deref()
    }

    /// The repository path, when the request concerned one.
    pub fn repository(&self) -> Option<&str> {
        self.inner.repository.as_deref()
    }

    /// The failed request (method and credential-free URL), when there was one.
    pub fn request(&self) -> Option<&RequestInfo> {
        self.inner.request.as_ref()
    }

    /// The HTTP status of the failed response, when there was a response.
    pub fn status(&self) -> Option<u16> {
        self.inner.status
    }

    /// The registry's error codes from the response body (may be empty).
    pub fn registry_codes(&self) -> &[RegistryErrorCode] {
        &self.inner.codes
    }

    /// Whether the same request may succeed later (network fault, 5xx, 429, truncated body).
    /// Retries inside the client have already been spent when this error is returned.
    pub fn is_retryable(&self) -> bool {
        self.inner.retryable
    }

    /// Finds a registry [`Error`] inside an I/O error returned by a [`crate::BlobReader`].
    pub fn from_io(err: &std::io::Error) -> Option<&Error> {
        err.get_ref()
            .and_then(|inner| inner.downcast_ref::<Error>())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        match (&inner.registry, &inner.repository) {
            (Some(registry), Some(repository)) => write!(f, "{registry}/{repository}: ")?,
            (Some(registry), None) => write!(f, "{registry}: ")?,
            (None, Some(repository)) => write!(f, "{repository}: ")?,
            (None, None) => {}
        }
        if let Some(request) = &inner.request {
            write!(f, "{request}: ")?;
        }
        write!(f, "{}", inner.kind)?;
        if let Some(status) = inner.status {
            write!(f, " (HTTP {status}")?;
            for (i, code) in inner.codes.iter().enumerate() {
                let sep = if i == 0 { ": " } else { ", " };
                if code.message.is_empty() {
                    write!(f, "{sep}{}", code.code)?;
                } else {
                    write!(f, "{sep}{} {:?}", code.code, code.message)?;
                }
            }
            write!(f, ")")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("Error")
            .field("kind", &inner.kind)
            .field("registry", &inner.registry)
            .field("repository", &inner.repository)
            .field("request", &inner.request)
            .field("status", &inner.status)
            .field("codes", &inner.codes)
            .field("retryable", &inner.retryable)
            .field("source", &inner.source)
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

impl From<Error> for std::io::Error {
    fn from(err: Error) -> Self {
        let kind = match err.kind() {
            ErrorKind::Timeout => std::io::ErrorKind::TimedOut,
            ErrorKind::DigestMismatch { .. } | ErrorKind::SizeMismatch { .. } => {
                std::io::ErrorKind::InvalidData
            }
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, err)
    }
}

/// Parses a registry error body `{"errors":[{"code":..,"message":..}]}`; anything else gives none.
pub(crate) fn parse_error_codes(body: &[u8]) -> Vec<RegistryErrorCode> {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default)]
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    serde_json::from_slice::<Body>(body)
        .map(|b| {
            b.errors
                .into_iter()
                .map(|e| RegistryErrorCode {
                    code: e.code,
                    message: e.message,
                })
                .collect()
        })
        .unwrap_or_default()
}

impl From<ducc_oci::PlatformError> for Error {
    fn from(err: ducc_oci::PlatformError) -> Self {
        Error::invalid_input("platform (want os/arch[/variant])", err.value())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_registry_repository_request_status_and_codes() {
        let err = Error::new(ErrorKind::NotFound)
            .in_repository("reg.example:5000", "a/b")
            .with_request("GET", "https://user:pw@reg.example:5000/v2/a/b/manifests/x")
            .with_status(404)
            .with_codes(parse_error_codes(
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
            ));
        assert_eq!(
            err.to_string(),
            "reg.example:5000/a/b: GET https://reg.example:5000/v2/a/b/manifests/x: not found \
             (HTTP 404: MANIFEST_UNKNOWN \"manifest unknown\")"
        );
        assert_eq!(err.registry_codes()[0].code, "MANIFEST_UNKNOWN");
    }

    #[test]
    fn platform_error_lists_available_platforms() {
        let err = Error::new(ErrorKind::PlatformNotFound {
            wanted: "linux/s390x".into(),
            available: vec!["linux/amd64".into(), "linux/arm64/v8".into()],
        });
        assert_eq!(
            err.to_string(),
            "no manifest for platform linux/s390x (available: linux/amd64, linux/arm64/v8)"
        );
    }

    #[test]
    fn error_body_that_is_not_json_gives_no_codes() {
        assert!(parse_error_codes(b"<html>bad gateway</html>").is_empty());
    }

    #[test]
    fn io_conversion_keeps_the_registry_error() {
        let io: std::io::Error = Error::new(ErrorKind::DigestMismatch {
            expected: "sha256:aa".into(),
            actual: "sha256:bb".into(),
        })
        .into();
        assert_eq!(io.kind(), std::io::ErrorKind::InvalidData);
        let back = Error::from_io(&io).expect("registry error inside");
        assert!(matches!(back.kind(), ErrorKind::DigestMismatch { .. }));
    }

    #[test]
    fn a_bad_platform_becomes_invalid_input_naming_it() {
        let err = Error::from("linux".parse::<ducc_oci::Platform>().unwrap_err());
        assert!(
            matches!(err.kind(), ErrorKind::InvalidInput { what, value } if what.starts_with("platform") && value == "linux"),
            "{err}"
        );
    }
}
