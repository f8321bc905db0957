//! Client settings: timeouts, retry policy, user agent, credentials.

use std::time::Duration;

use crate::credentials::Credentials;

/// The longest `Retry-After` honoured by default: 5 minutes.
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(5 * 60);

/// How often and how patiently requests are retried.
///
/// Retried: connection failures, resets, timeouts, truncated bodies, HTTP 5xx and 429. Never
/// retried: other 4xx (401 triggers one re-authentication instead). Waits grow exponentially from
/// `initial_backoff` up to `max_backoff`, each with random jitter (between half and all of it);
/// a `Retry-After` from the server replaces the computed wait, unless it exceeds
/// `max_retry_after` (5 minutes by default), in which case the request fails at once with
/// [`crate::ErrorKind::RetryAfterTooLong`]: one image does not hold a run for hours because a
/// registry says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub(crate) max_retries: u32,
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) max_retry_after: Duration,
    pub(crate) max_resumes: u32,
}

impl RetryPolicy {
    /// 4 retries, 200 ms growing to 10 s, `Retry-After` honoured up to 5 minutes, 5 blob resumes.
    pub fn new() -> Self {
        RetryPolicy {
            max_retries: 4,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
            max_resumes: 5,
        }
    }

    /// No retries and no resumes: the first failure is returned.
    pub fn none() -> Self {
        RetryPolicy {
            max_retries: 0,
            max_resumes: 0,
            ..RetryPolicy::new()
        }
    }

    /// Retries after the first attempt.
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// The first wait.
    pub fn initial_backoff(mut self, wait: Duration) -> Self {
        self.initial_backoff = wait;
        self
    }

    /// The longest computed wait.
    pub fn max_backoff(mut self, wait: Duration) -> Self {
        self.max_backoff = wait;
        self
    }

    /// The longest `Retry-After` honoured; a longer one fails the request at once.
    pub fn max_retry_after(mut self, wait: Duration) -> Self {
        self.max_retry_after = wait;
        self
    }

    /// How many times one blob download may resume (with `Range`) after an interruption.
    pub fn max_resumes(mut self, resumes: u32) -> Self {
        self.max_resumes = resumes;
        self
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::new()
    }
}

/// Settings for a [`crate::Client`]; start from [`ClientOptions::new`] and change what differs.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub(crate) connect_timeout: Duration,
    pub(crate) read_timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) user_agent: String,
    pub(crate) credentials: Credentials,
    pub(crate) max_manifest_bytes: u64,
    pub(crate) max_config_bytes: u64,
    pub(crate) upload_chunk_size: u64,
    pub(crate) monolithic_upload_limit: u64,
    /// Trusted CA certificates (DER) instead of the built-in Mozilla roots, when set.
    pub(crate) root_certificates: Option<Vec<Vec<u8>>>,
}

impl ClientOptions {
    /// Connect timeout 30 s, read timeout 60 s (per read, so slow large downloads still work),
    /// default [`RetryPolicy`], user agent `ducc-rs/<version>`, anonymous, manifests, indexes
    /// and tag list pages up to 4 MiB (containerd's limit; real ones are a few KiB), configs up
    /// to 32 MiB (real ones stay below 1 MiB), blobs above 64 MiB uploaded in 8 MiB chunks.
    pub fn new() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            retry: RetryPolicy::new(),
            user_agent: format!("ducc-rs/{}", env!("CARGO_PKG_VERSION")),
            credentials: Credentials::anonymous(),
            max_manifest_bytes: 4 << 20,
            max_config_bytes: 32 << 20,
            upload_chunk_size: 8 << 20,
            monolithic_upload_limit: 64 << 20,
            root_certificates: None,
        }
    }

    /// Timeout for establishing a connection (TCP and TLS).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Timeout for each read from (and write to) the connection.
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// Retry behaviour.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The `User-Agent` header.
    pub fn user_agent(mut self, agent: impl Into<String>) -> Self {
        self.user_agent = agent.into();
        self
    }

    /// Where logins come from.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// The largest manifest, index or tag list page accepted.
    pub fn max_manifest_bytes(mut self, limit: u64) -> Self {
        self.max_manifest_bytes = limit;
        self
    }

    /// The largest image config accepted.
    pub fn max_config_bytes(mut self, limit: u64) -> Self {
        self.max_config_bytes = limit;
        self
    }

    /// Blobs up to this size are uploaded in one `PUT`; larger ones in `PATCH` chunks.
    pub fn monolithic_upload_limit(mut self, limit: u64) -> Self {
        self.monolithic_upload_limit = limit;
        self
    }

    /// Trusts only the CA certificates in `pem` (one or more `CERTIFICATE` blocks) instead of
    /// the built-in Mozilla roots: for a registry behind a private CA.
    ///
    /// # Errors
    /// [`crate::ErrorKind::InvalidInput`] when `pem` holds no certificate or a malformed one.
    pub fn root_certificates_pem(mut self, pem: &[u8]) -> Result<Self, crate::Error> {
        let mut certificates = Vec::new();
        for item in ureq::tls::parse_pem(pem) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(certificate)) => {
                    certificates.push(certificate.der().to_vec());
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(crate::Error::invalid_input(
                        "root certificate PEM",
                        "malformed PEM",
                    )
                    .with_source(e));
                }
            }
        }
        if certificates.is_empty() {
            return Err(crate::Error::invalid_input(
                "root certificate PEM",
                "no CERTIFICATE block",
            ));
        }
        self.root_certificates = Some(certificates);
        Ok(self)
    }

    /// The chunk size of chunked uploads (each chunk is held in memory while sent).
    pub fn upload_chunk_size(mut self, size: u64) -> Self {
        self.upload_chunk_size = size.max(1);
        self
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions::new()
    }
}
