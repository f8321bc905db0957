//! HTTP plumbing shared by every request: the agent, endpoints (with pull-through proxy rewrite),
//! authentication state, retries with backoff, and redirects that never carry credentials to
//! another host.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::auth::{Challenge, encode_query_value, parse_challenges};
use crate::credentials::Login;
use crate::error::{Error, ErrorKind, parse_error_codes};
use crate::name::Repository;
use crate::options::ClientOptions;
use crate::origin::Origin;
use crate::retry::{backoff, parse_retry_after};
use ducc_oci::Scheme;

const MAX_REDIRECTS: usize = 10;
/// How much of an error response body is read for registry error codes.
const ERROR_BODY_LIMIT: u64 = 64 << 10;
/// The longest a token is kept, whatever the token server says.
const MAX_TOKEN_SECS: u64 = 24 * 60 * 60;
/// Token replies are small; refuse to buffer a huge one.
const TOKEN_BODY_LIMIT: u64 = 1 << 20;

/// Where requests for one repository go, after any pull-through proxy rewrite.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) scheme: Scheme,
    /// The host requests are sent to (the proxy's, when there is one).
    pub(crate) host: String,
    /// The repository path as that host knows it.
    pub(crate) path: String,
    /// The registry and repository as the caller named them, for errors.
    pub(crate) registry: String,
    pub(crate) repository: String,
}

impl Endpoint {
    /// The registry's own origin: the only one its credentials go to. `None` only for a host
    /// that does not parse as a URL authority, and then no credentials go anywhere.
    pub(crate) fn registry_origin(&self) -> Option<Origin> {
        Origin::of_registry(self.scheme, &self.host)
    }

    /// Whether `url` is on the registry's own origin.
    pub(crate) fn is_own(&self, url: &str) -> bool {
        match (self.registry_origin(), Origin::of_url(url)) {
            (Some(own), Some(other)) => own == other,
            _ => false,
        }
    }

    /// `scheme://host/v2/<path>/<suffix>`
    pub(crate) fn url(&self, suffix: &str) -> String {
        format!(
            "{}://{}/v2/{}/{suffix}",
            self.scheme.as_str(),
            self.host,
            self.path
        )
    }

    /// Adds registry and repository to an error.
    pub(crate) fn context(&self, err: Error) -> Error {
        err.in_repository(&self.registry, &self.repository)
    }
}

/// The host that serves the distribution API for a registry name: Docker Hub's `docker.io` and
/// `index.docker.io` do not answer `/v2/` requests; `registry-1.docker.io` does.
fn api_host(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        other => other,
    }
}

/// Resolves `target` against `base` (enough of RFC 3986 for `Location` and `Link` headers).
pub(crate) fn resolve_url(base: &str, target: &str) -> String {
    if has_scheme(target) {
        // Absolute, whatever its scheme or case (`HTTP://`): the origin check decides.
        return target.to_owned();
    }
    let (scheme, rest) = base.split_once("://").unwrap_or(("https", base));
    if let Some(scheme_relative) = target.strip_prefix("//") {
        return format!("{scheme}://{scheme_relative}");
    }
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let origin = format!("{scheme}://{}", &rest[..authority_end]);
    if target.starts_with('/') {
        return format!("{origin}{target}");
    }
    let path = rest[authority_end..].split('?').next().unwrap_or("");
    let dir = match path.rfind('/') {
        Some(i) => &path[..=i],
        None => "/",
    };
    format!("{origin}{dir}{target}")
}

/// Whether a URL reference starts with a scheme (RFC 3986: a letter, then letters, digits, `+`,
/// `-`, `.`, then `:`); a relative reference cannot have a `:` in its first segment.
fn has_scheme(target: &str) -> bool {
    let Some((scheme, _)) = target.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Which permission a request needs: decides the token scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Access {
    Pull,
    Push,
}

/// The body of a request.
pub(crate) enum ReqBody<'a> {
    Empty,
    /// Can be sent again, so the request can be retried.
    Bytes(&'a [u8]),
    /// Can be sent once: a request with it is never retried.
    Stream(&'a mut dyn Read, u64),
}

impl ReqBody<'_> {
    fn replayable(&self) -> bool {
        !matches!(self, ReqBody::Stream(..))
    }
}

/// A request to send.
pub(crate) struct Req<'a> {
    pub(crate) method: &'static str,
    pub(crate) url: String,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: ReqBody<'a>,
}

impl<'a> Req<'a> {
    pub(crate) fn new(method: &'static str, url: String) -> Self {
        Req {
            method,
            url,
            headers: Vec::new(),
            body: ReqBody::Empty,
        }
    }

    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub(crate) fn body(mut self, body: ReqBody<'a>) -> Self {
        self.body = body;
        self
    }
}

/// A response, with the request it answers (after redirects) for error messages.
pub(crate) struct Reply {
    pub(crate) method: &'static str,
    pub(crate) url: String,
    pub(crate) response: ureq::http::Response<ureq::Body>,
}

impl Reply {
    pub(crate) fn status(&self) -> u16 {
        self.response.status().as_u16()
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
    }

    /// Every value of a header that may be repeated, joined as one list (`None` when absent).
    pub(crate) fn all_headers(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .response
            .headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }

    /// Reads the whole body up to `limit` bytes; `what` names the body in a
    /// [`ErrorKind::TooLarge`] error.
    pub(crate) fn read_limited(
        &mut self,
        what: &'static str,
        limit: u64,
    ) -> Result<Vec<u8>, Error> {
        let method = self.method;
        let url = self.url.clone();
        self.response
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| map_ureq_error(e, what, limit).with_request(method, &url))
    }

    /// The error for a response whose status the caller did not expect.
    pub(crate) fn into_error(self) -> Error {
        let kind = match self.status() {
            401 => ErrorKind::Unauthorized,
            403 => ErrorKind::Denied,
            404 => ErrorKind::NotFound,
            429 => ErrorKind::RateLimited,
            500..=599 => ErrorKind::Server,
            _ => ErrorKind::UnexpectedStatus,
        };
        self.into_error_as(kind)
    }

    /// As [`Reply::into_error`], with the kind the caller decided on.
    pub(crate) fn into_error_as(mut self, kind: ErrorKind) -> Error {
        let status = self.status();
        let body = self
            .read_limited("error body", ERROR_BODY_LIMIT)
            .unwrap_or_default();
        Error::new(kind)
            .with_request(self.method, &self.url)
            .with_status(status)
            .with_codes(parse_error_codes(&body))
            .retryable(status == 429 || status == 408 || status >= 500)
    }
}

/// A small response read whole (manifest, tag page), with the request it answers.
pub(crate) struct WholeReply {
    pub(crate) method: &'static str,
    pub(crate) url: String,
    pub(crate) headers: ureq::http::HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl WholeReply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Maps a ureq failure to our kinds; `limit` is the body limit that was in force, on the body
/// that `what` names.
pub(crate) fn map_ureq_error(err: ureq::Error, what: &'static str, limit: u64) -> Error {
    let (kind, retryable) = match &err {
        ureq::Error::Timeout(_) => (ErrorKind::Timeout, true),
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => (ErrorKind::Connect, true),
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            (ErrorKind::Timeout, true)
        }
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            (ErrorKind::Connect, true)
        }
        ureq::Error::Io(_) | ureq::Error::Protocol(_) | ureq::Error::BodyStalled => {
            (ErrorKind::Transport, true)
        }
        ureq::Error::BodyExceedsLimit(_) => (ErrorKind::TooLarge { what, limit }, false),
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) | ureq::Error::Pem(_) => {
            (ErrorKind::Connect, false)
        }
        _ => (ErrorKind::Transport, false),
    };
    Error::new(kind).retryable(retryable).with_source(err)
}

/// Maps an I/O error from reading a response body.
pub(crate) fn map_io_error(err: std::io::Error) -> Error {
    let kind = match err.kind() {
        std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
        _ => ErrorKind::Transport,
    };
    Error::new(kind).retryable(true).with_source(err)
}

/// The error for a hop from https to plain http.
fn insecure_redirect(method: &str, from: &str, to: &str) -> Error {
    Error::new(ErrorKind::InsecureRedirect {
        target: crate::redact::redact_url(to),
    })
    .with_request(method, from)
}

#[derive(Default)]
struct AuthState {
    /// `(host, scope)` → (`Authorization` value, valid until).
    tokens: HashMap<(String, String), (String, Instant)>,
    /// Hosts that asked for Basic auth.
    basic_hosts: HashMap<String, String>,
    /// Logins looked up per host (a credential helper runs once per host).
    logins: HashMap<String, Option<Login>>,
}

/// What every request goes through.
pub(crate) struct Transport {
    pub(crate) options: ClientOptions,
    agent: ureq::Agent,
    auth: Mutex<AuthState>,
}

impl Transport {
    pub(crate) fn new(options: ClientOptions) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(options.connect_timeout))
            .timeout_per_read(Some(options.read_timeout))
            .timeout_per_write(Some(options.read_timeout))
            .user_agent(options.user_agent.as_str());
        let config = match &options.root_certificates {
            Some(roots) => {
                let roots = roots
                    .iter()
                    .map(|der| ureq::tls::Certificate::from_der(der).to_owned())
                    .collect::<Vec<_>>();
                config.tls_config(
                    ureq::tls::TlsConfig::builder()
                        .root_certs(ureq::tls::RootCerts::new_with_certs(&roots))
                        .build(),
                )
            }
            None => config,
        }
        .build();
        Transport {
            agent: config.into(),
            options,
            auth: Mutex::new(AuthState::default()),
        }
    }

    /// Where requests for a repository go.
    pub(crate) fn endpoint(&self, repository: &Repository) -> Endpoint {
        let (host, path) = match self.options.credentials.proxy_for(repository.registry()) {
            Some(proxy) => (
                proxy.host().to_owned(),
                proxy.repository_path(repository.path()),
            ),
            None => (
                api_host(repository.registry()).to_owned(),
                repository.path().to_owned(),
            ),
        };
        Endpoint {
            scheme: repository.scheme(),
            host,
            path,
            registry: repository.registry().to_owned(),
            repository: repository.path().to_owned(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AuthState> {
        // A panic while holding the lock leaves only caches behind, which stay usable.
        self.auth
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn login(&self, host: &str) -> Result<Option<Login>, Error> {
        if let Some(cached) = self.lock().logins.get(host) {
            return Ok(cached.clone());
        }
        let login = self.options.credentials.login_for(host)?;
        self.lock().logins.insert(host.to_owned(), login.clone());
        Ok(login)
    }

    fn scope(endpoint: &Endpoint, access: Access) -> String {
        match access {
            Access::Pull => format!("repository:{}:pull", endpoint.path),
            Access::Push => format!("repository:{}:pull,push", endpoint.path),
        }
    }

    /// The `Authorization` value we already have for this host and scope, if any.
    fn cached_auth(&self, endpoint: &Endpoint, access: Access) -> Option<String> {
        let state = self.lock();
        let now = Instant::now();
        let wanted = [
            Self::scope(endpoint, access),
            Self::scope(endpoint, Access::Push),
        ];
        for scope in &wanted {
            if let Some((value, until)) = state.tokens.get(&(endpoint.host.clone(), scope.clone()))
                && *until > now
            {
                return Some(value.clone());
            }
        }
        state.basic_hosts.get(&endpoint.host).cloned()
    }

    /// Sends a request to a repository endpoint: authenticates as asked (one re-authentication
    /// per request), retries what may be retried, follows redirects. Returns any final response,
    /// whatever its status, except 5xx/429 after the retries (those become errors).
    pub(crate) fn send(
        &self,
        endpoint: &Endpoint,
        access: Access,
        mut req: Req<'_>,
    ) -> Result<Reply, Error> {
        let policy = &self.options.retry;
        let registry_origin = endpoint.registry_origin();
        if let (Some(own), Some(target)) = (&registry_origin, Origin::of_url(&req.url))
            && own.is_https()
            && !target.is_https()
        {
            // A `Link` from an https registry to plain http.
            return Err(endpoint.context(insecure_redirect(req.method, &req.url, &req.url)));
        }
        let mut attempt = 0u32;
        let mut reauthenticated = false;
        loop {
            let auth = self.cached_auth(endpoint, access);
            let credential = registry_origin.as_ref().zip(auth.as_deref());
            let result = self.send_following_redirects(&mut req, credential);
            let wait = match result {
                Err(err) => {
                    if err.is_retryable() && attempt < policy.max_retries && req.body.replayable() {
                        backoff(policy, attempt)
                    } else {
                        return Err(endpoint.context(err));
                    }
                }
                // Another origin's challenge must not make us fetch a token or send a login
                // (a `Link` or redirect target asking for the registry's credentials).
                Ok(reply) if reply.status() == 401 && !endpoint.is_own(&reply.url) => {
                    return Err(endpoint.context(reply.into_error()));
                }
                Ok(reply) if reply.status() == 401 && !reauthenticated && req.body.replayable() => {
                    let challenge = reply.all_headers("www-authenticate");
                    match self.authenticate(endpoint, access, challenge.as_deref(), auth.as_deref())
                    {
                        Ok(()) => {
                            drop(reply);
                            reauthenticated = true;
                            continue;
                        }
                        // Nothing (more) to try: the registry's own answer says it best.
                        Err(e) if *e.kind() == ErrorKind::Unauthorized && e.request().is_none() => {
                            return Err(endpoint.context(reply.into_error()));
                        }
                        Err(e) => {
                            return Err(
                                endpoint.context(e.with_request_if_missing(req.method, &reply.url))
                            );
                        }
                    }
                }
                Ok(reply) if reply.status() == 429 || reply.status() >= 500 => {
                    if attempt >= policy.max_retries || !req.body.replayable() {
                        return Err(endpoint.context(reply.into_error()));
                    }
                    let asked = reply
                        .header("retry-after")
                        .and_then(|v| parse_retry_after(v, jiff::Timestamp::now()));
                    match asked {
                        Some(wait) if wait > policy.max_retry_after => {
                            tracing::debug!(?wait, "Retry-After beyond the limit, giving up");
                            let kind = ErrorKind::RetryAfterTooLong {
                                asked_secs: wait.as_secs(),
                                limit_secs: policy.max_retry_after.as_secs(),
                            };
                            return Err(endpoint.context(reply.into_error_as(kind)));
                        }
                        Some(wait) => wait,
                        None => backoff(policy, attempt),
                    }
                }
                Ok(reply) => return Ok(reply),
            };
            attempt += 1;
            tracing::debug!(
                method = req.method,
                url = %crate::redact::redact_url(&req.url),
                attempt,
                ?wait,
                "retrying registry request"
            );
            std::thread::sleep(wait);
        }
    }

    /// GETs a small document with pull access, expecting 200, and reads it whole; a body cut
    /// short (reset, timeout) is fetched again like any other retryable failure.
    pub(crate) fn get_whole(
        &self,
        endpoint: &Endpoint,
        make_request: impl Fn() -> Req<'static>,
        what: &'static str,
        limit: u64,
    ) -> Result<WholeReply, Error> {
        let policy = &self.options.retry;
        let mut attempt = 0;
        loop {
            let mut reply = self.send(endpoint, Access::Pull, make_request())?;
            if reply.status() != 200 {
                return Err(endpoint.context(reply.into_error()));
            }
            if let Some(length) = reply.header("content-length")
                && length
                    .trim()
                    .parse::<u64>()
                    .is_ok_and(|length| length > limit)
            {
                // Announced too large: refuse before reading any of it.
                return Err(endpoint.context(
                    Error::new(ErrorKind::TooLarge { what, limit })
                        .with_request(reply.method, &reply.url)
                        .with_status(200),
                ));
            }
            match reply.read_limited(what, limit) {
                Ok(body) => {
                    return Ok(WholeReply {
                        method: reply.method,
                        url: reply.url,
                        headers: reply.response.headers().clone(),
                        body,
                    });
                }
                Err(e) if e.is_retryable() && attempt < policy.max_retries => {
                    let wait = backoff(policy, attempt);
                    attempt += 1;
                    tracing::debug!(url = %crate::redact::redact_url(&reply.url), ?wait, "response body cut short, fetching again");
                    std::thread::sleep(wait);
                }
                Err(e) => return Err(endpoint.context(e)),
            }
        }
    }

    /// Sends once, following redirects for GET/HEAD. `credential` is an origin and the
    /// `Authorization` value that belongs to it: it goes with every hop whose URL is on that
    /// origin and with no other. A redirect from https to plain http is refused.
    fn send_following_redirects(
        &self,
        req: &mut Req<'_>,
        credential: Option<(&Origin, &str)>,
    ) -> Result<Reply, Error> {
        let mut url = req.url.clone();
        let follow = matches!(req.method, "GET" | "HEAD");
        for _ in 0..=MAX_REDIRECTS {
            let target = Origin::of_url(&url);
            let auth = credential
                .filter(|(origin, _)| target.as_ref() == Some(*origin))
                .map(|(_, value)| value);
            let mut builder = ureq::http::Request::builder()
                .method(req.method)
                .uri(url.as_str());
            for (name, value) in &req.headers {
                builder = builder.header(*name, value.as_str());
            }
            if let Some(auth) = auth {
                builder = builder.header("authorization", auth);
            }
            let sent = match &mut req.body {
                ReqBody::Empty => builder.body(()).map(|r| self.agent.run(r)),
                ReqBody::Bytes(bytes) => builder.body(*bytes).map(|r| self.agent.run(r)),
                ReqBody::Stream(reader, len) => builder
                    .header("content-length", len.to_string())
                    .body(ureq::SendBody::from_reader(*reader))
                    .map(|r| self.agent.run(r)),
            };
            let response = match sent {
                Err(e) => {
                    return Err(
                        Error::invalid_input("request", crate::redact::redact_url(&url))
                            .with_source(e),
                    );
                }
                Ok(Err(e)) => {
                    return Err(map_ureq_error(e, "response", 0).with_request(req.method, &url));
                }
                Ok(Ok(response)) => response,
            };
            let status = response.status().as_u16();
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            match (follow, status, location) {
                (true, 301 | 302 | 303 | 307 | 308, Some(location)) => {
                    let next = resolve_url(&url, &location);
                    let from_https = target.as_ref().is_some_and(Origin::is_https);
                    if from_https && Origin::of_url(&next).is_some_and(|o| !o.is_https()) {
                        return Err(insecure_redirect(req.method, &url, &next).with_status(status));
                    }
                    tracing::debug!(
                        from = %crate::redact::redact_url(&url),
                        to = %crate::redact::redact_url(&next),
                        "following redirect"
                    );
                    url = next;
                }
                _ => {
                    return Ok(Reply {
                        method: req.method,
                        url,
                        response,
                    });
                }
            }
        }
        Err(Error::new(ErrorKind::TooManyRedirects).with_request(req.method, &url))
    }

    /// Answers a 401: gets a token (Bearer) or switches to Basic for this host.
    fn authenticate(
        &self,
        endpoint: &Endpoint,
        access: Access,
        challenge_header: Option<&str>,
        used: Option<&str>,
    ) -> Result<(), Error> {
        let header =
            challenge_header.ok_or_else(|| Error::new(ErrorKind::Unauthorized).with_status(401))?;
        let challenges = parse_challenges(header).ok_or_else(|| {
            Error::new(ErrorKind::AuthChallenge {
                challenge: header.to_owned(),
            })
        })?;
        if let Some(bearer) = challenges.iter().find(|c| c.is("bearer")) {
            return self.fetch_token(endpoint, access, bearer);
        }
        if challenges.iter().any(|c| c.is("basic")) {
            let login = self
                .login(&endpoint.host)?
                .ok_or_else(|| Error::new(ErrorKind::Unauthorized).with_status(401))?;
            let value = login.basic_header();
            if used == Some(value.as_str()) {
                // These very credentials were just refused.
                return Err(Error::new(ErrorKind::Unauthorized).with_status(401));
            }
            self.lock().basic_hosts.insert(endpoint.host.clone(), value);
            return Ok(());
        }
        Err(Error::new(ErrorKind::AuthChallenge {
            challenge: header.to_owned(),
        }))
    }

    /// The Bearer token flow: `GET realm?service=..&scope=..`, with Basic credentials when we
    /// have a login for the registry host.
    fn fetch_token(
        &self,
        endpoint: &Endpoint,
        access: Access,
        challenge: &Challenge,
    ) -> Result<(), Error> {
        #[derive(serde::Deserialize)]
        struct TokenReply {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let realm = challenge.param("realm").ok_or_else(|| {
            Error::new(ErrorKind::AuthChallenge {
                challenge: format!("Bearer challenge without realm: {:?}", challenge.params),
            })
        })?;
        let Some(realm_origin) = Origin::of_url(realm) else {
            return Err(Error::new(ErrorKind::AuthChallenge {
                challenge: format!("realm {realm:?} is not an http(s) URL"),
            }));
        };
        if endpoint
            .registry_origin()
            .is_some_and(|own| own.is_https() && !realm_origin.is_https())
        {
            // The login would travel in clear text.
            return Err(Error::new(ErrorKind::AuthChallenge {
                challenge: format!("realm {realm:?} is plain http for an https registry"),
            }));
        }
        let scope = Self::scope(endpoint, access);
        let mut url = realm.to_owned();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        if let Some(service) = challenge.param("service") {
            url.push(sep);
            url.push_str("service=");
            url.push_str(&encode_query_value(service));
            sep = '&';
        }
        url.push(sep);
        url.push_str("scope=");
        url.push_str(&encode_query_value(&scope));
        if let Some(asked) = challenge.param("scope").filter(|s| *s != scope) {
            url.push_str("&scope=");
            url.push_str(&encode_query_value(asked));
        }
        // The registry's login, never one looked up for the realm's host: the realm belongs to
        // the registry that named it (as docker and go-containerregistry do).
        let login = self.login(&endpoint.host)?;
        let basic = login.as_ref().map(Login::basic_header);
        let mut req = Req::new("GET", url).header("accept", "application/json");
        let policy = &self.options.retry;
        let mut attempt = 0;
        let mut reply = loop {
            let result = self
                .send_following_redirects(&mut req, basic.as_deref().map(|b| (&realm_origin, b)));
            match result {
                Err(e) if e.is_retryable() && attempt < policy.max_retries => {}
                Err(e) => return Err(e),
                Ok(r)
                    if (r.status() == 429 || r.status() >= 500) && attempt < policy.max_retries => {
                }
                Ok(r) => break r,
            }
            std::thread::sleep(backoff(policy, attempt));
            attempt += 1;
        };
        if reply.status() != 200 {
            return Err(reply.into_error());
        }
        let body = reply.read_limited("token reply", TOKEN_BODY_LIMIT)?;
        let token: TokenReply = serde_json::from_slice(&body).map_err(|e| {
            Error::new(ErrorKind::TokenResponse)
                .with_request(reply.method, &reply.url)
                .with_source(e)
        })?;
        let value = token
            .token
            .filter(|t| !t.is_empty())
            .or(token.access_token.filter(|t| !t.is_empty()))
            .ok_or_else(|| {
                Error::new(ErrorKind::TokenResponse).with_request(reply.method, &reply.url)
            })?;
        // Keep the token until shortly before it expires (default lifetime 60 s). The server's
        // `expires_in` is capped at a day: `Instant + Duration` panics when it overflows.
        let lifetime = Duration::from_secs(token.expires_in.unwrap_or(60).clamp(1, MAX_TOKEN_SECS));
        let margin = (lifetime / 10).clamp(Duration::from_secs(1), Duration::from_secs(30));
        let now = Instant::now();
        let until = now
            .checked_add(lifetime.saturating_sub(margin))
            .unwrap_or(now);
        tracing::debug!(host = %endpoint.host, %scope, ?lifetime, "got registry token");
        self.lock().tokens.insert(
            (endpoint.host.clone(), scope),
            (format!("Bearer {value}"), until),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_against_the_request_url() {
        let base = "http://127.0.0.1:5000/v2/a/b/blobs/uploads/?x=1";
        assert_eq!(
            resolve_url(base, "/v2/a/b/blobs/uploads/u1?_state=s"),
            "http://127.0.0.1:5000/v2/a/b/blobs/uploads/u1?_state=s"
        );
        assert_eq!(
            resolve_url(base, "https://s3.example/o?sig=1"),
            "https://s3.example/o?sig=1"
        );
        assert_eq!(resolve_url(base, "//cdn.example/o"), "http://cdn.example/o");
        assert_eq!(
            resolve_url(base, "HTTP://Other.example/o"),
            "HTTP://Other.example/o"
        );
        assert_eq!(resolve_url(base, "ftp://x/o"), "ftp://x/o");
        assert_eq!(resolve_url(base, "/a:b"), "http://127.0.0.1:5000/a:b");
        assert_eq!(
            resolve_url(base, "u2"),
            "http://127.0.0.1:5000/v2/a/b/blobs/uploads/u2"
        );
    }

    #[test]
    fn docker_hub_names_go_to_its_api_host_and_errors_keep_the_given_name() {
        let transport = Transport::new(ClientOptions::new());
        for (given, host) in [
            ("docker.io", "registry-1.docker.io"),
            ("index.docker.io", "registry-1.docker.io"),
            ("registry-1.docker.io", "registry-1.docker.io"),
            ("registry.hub.docker.com", "registry.hub.docker.com"),
            ("[::1]:5000", "[::1]:5000"),
        ] {
            let repo = Repository::new(Scheme::Https, given, "library/ubuntu").unwrap();
            let endpoint = transport.endpoint(&repo);
            assert_eq!(endpoint.host, host);
            assert_eq!(endpoint.registry, given);
            assert_eq!(
                endpoint.url("tags/list"),
                format!("https://{host}/v2/library/ubuntu/tags/list")
            );
        }
    }
}
