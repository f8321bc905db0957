//! Client behaviour against scripted local servers: auth flows, platform choice, verification,
//! redirects, resume, retries, pagination and push.

mod server;
mod signatures;

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;

use self::server::{Answer, Recorded, TestServer};
use crate::digest::sha256_digest;
use crate::*;
use ducc_oci::{BlobDigest, ConfigDigest, ImageRef, Scheme};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn fast_retries() -> RetryPolicy {
    RetryPolicy::new()
        .initial_backoff(Duration::from_millis(5))
        .max_backoff(Duration::from_millis(20))
}

fn client_with(credentials: Credentials) -> Client {
    Client::new(
        ClientOptions::new()
            .retry(fast_retries())
            .read_timeout(Duration::from_secs(5))
            .credentials(credentials),
    )
}

fn client() -> Client {
    client_with(Credentials::anonymous())
}

fn repo(server: &TestServer, path: &str) -> Repository {
    Repository::new(Scheme::Http, &server.host(), path).unwrap()
}

/// The image `reference` of `path` on `server`.
fn image(server: &TestServer, path: &str, reference: &str) -> ImageRef {
    let sep = if reference.contains(':') { "@" } else { ":" };
    ImageRef::parse(&format!("http://{}/{path}{sep}{reference}", server.host())).unwrap()
}

fn image_manifest(config: &[u8], layers: &[&[u8]]) -> String {
    let layers: Vec<String> = layers
        .iter()
        .map(|l| {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":{}}}"#,
                sha256_digest(l),
                l.len()
            )
        })
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{}]}}"#,
        sha256_digest(config),
        config.len(),
        layers.join(",")
    )
}

fn index_entry(manifest: &str, os: &str, arch: &str, variant: Option<&str>) -> String {
    let variant = variant.map_or(String::new(), |v| format!(r#","variant":"{v}""#));
    format!(
        r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{},"platform":{{"os":"{os}","architecture":"{arch}"{variant}}}}}"#,
        sha256_digest(manifest.as_bytes()),
        manifest.len()
    )
}

/// The error of fetching the manifest `path:reference` from `server` (default selection),
/// which must fail.
fn fetch_error(server: &TestServer, path: &str, reference: &str) -> Error {
    client()
        .fetch_manifest(
            &image(server, path, reference),
            &ManifestSelection::default(),
        )
        .unwrap_err()
}

fn manifest_answer(body: &str, media_type: &str) -> Answer {
    Answer::new(200)
        .header("Content-Type", media_type)
        .header(
            "Docker-Content-Digest",
            sha256_digest(body.as_bytes()).to_string(),
        )
        .body(body.as_bytes().to_vec())
}

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

// ---------------------------------------------------------------------------------------------
// Manifests and platform choice

/// An index with amd64, arm64/v8 and an attestation entry, served by tag and by digest.
fn multi_platform_server() -> (TestServer, String, String, String) {
    let amd = image_manifest(b"{}", &[b"amd layer"]);
    let arm = image_manifest(b"{ }", &[b"arm layer"]);
    let attestation = image_manifest(b"{  }", &[]);
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{},{},{}]}}"#,
        index_entry(&amd, "linux", "amd64", None),
        index_entry(&arm, "linux", "arm64", Some("v8")),
        index_entry(&attestation, "unknown", "unknown", None),
    );
    let docs = [amd.clone(), arm.clone(), attestation, index.clone()];
    let server = TestServer::start(move |req, _| {
        let wanted = req.path().rsplit('/').next().unwrap_or("");
        if wanted == "multi" {
            return manifest_answer(&docs[3], OCI_INDEX);
        }
        docs.iter()
            .find(|d| sha256_digest(d.as_bytes()).to_string() == wanted)
            .map_or(Answer::new(404), |d| manifest_answer(d, OCI_MANIFEST))
    });
    (server, index, amd, arm)
}

#[test]
fn index_resolves_to_the_wanted_platform_by_digest() {
    let (server, index, _amd, arm) = multi_platform_server();
    let selection = ManifestSelection::Platform("linux/arm64".parse().unwrap());
    let fetched = client()
        .fetch_manifest(&image(&server, "a/b", "multi"), &selection)
        .unwrap();
    assert_eq!(fetched.bytes(), arm.as_bytes());
    assert_eq!(fetched.digest(), &sha256_digest(arm.as_bytes()));
    assert_eq!(fetched.media_type(), ManifestMediaType::OciManifest);
    assert_eq!(
        fetched.index_digest(),
        Some(&sha256_digest(index.as_bytes()))
    );
    assert_eq!(
        fetched.platform().map(ToString::to_string).as_deref(),
        Some("linux/arm64/v8")
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1].path(),
        format!("/v2/a/b/manifests/{}", sha256_digest(arm.as_bytes()))
    );
    let accept = requests[0].header("accept").unwrap();
    for media_type in ManifestMediaType::ALL {
        assert!(accept.contains(media_type.as_str()), "{accept}");
    }
}

#[test]
fn index_selection_returns_the_index_bytes() {
    let (server, index, _, _) = multi_platform_server();
    let fetched = client()
        .fetch_manifest(&image(&server, "a/b", "multi"), &ManifestSelection::Index)
        .unwrap();
    assert_eq!(fetched.bytes(), index.as_bytes());
    assert_eq!(fetched.media_type(), ManifestMediaType::OciIndex);
    assert_eq!(fetched.index().unwrap().manifests().len(), 3);
}

#[test]
fn missing_platform_error_lists_available_ones_without_attestations() {
    let (server, ..) = multi_platform_server();
    let selection = ManifestSelection::Platform("linux/s390x".parse().unwrap());
    let err = client()
        .fetch_manifest(&image(&server, "a/b", "multi"), &selection)
        .unwrap_err();
    match err.kind() {
        ErrorKind::PlatformNotFound { wanted, available } => {
            assert_eq!(wanted, "linux/s390x");
            assert_eq!(available, &["linux/amd64", "linux/arm64/v8"]);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(err.registry(), Some(server.host().as_str()));
    assert_eq!(err.repository(), Some("a/b"));
}

#[test]
fn schema1_manifest_is_refused_naming_its_media_type() {
    let media_type = "application/vnd.docker.distribution.manifest.v1+prettyjws";
    let server = TestServer::start(move |_, _| {
        Answer::new(200)
            .header("Content-Type", media_type)
            .body(r#"{"schemaVersion":1,"name":"a","tag":"t","fsLayers":[]}"#)
    });
    let err = fetch_error(&server, "a", "t");
    assert_eq!(
        err.kind(),
        &ErrorKind::UnsupportedMediaType {
            media_type: media_type.to_owned()
        }
    );
    assert!(err.to_string().contains(media_type), "{err}");
}

#[test]
fn manifest_with_layers_and_manifests_is_refused() {
    let body = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"x","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1},"layers":[],"manifests":[]}"#;
    let server = TestServer::start(move |_, _| manifest_answer(body, OCI_MANIFEST));
    let err = fetch_error(&server, "a", "t");
    assert_eq!(err.kind(), &ErrorKind::AmbiguousManifest);
}

#[test]
fn content_type_disagreeing_with_media_type_is_refused() {
    let body = image_manifest(b"{}", &[]);
    let server = TestServer::start(move |_, _| manifest_answer(&body, OCI_INDEX));
    let err = client()
        .fetch_manifest(&image(&server, "a", "t"), &ManifestSelection::Index)
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::InvalidManifest { .. }),
        "{err}"
    );
}

#[test]
fn manifest_not_matching_docker_content_digest_is_refused() {
    let body = image_manifest(b"{}", &[]);
    let server = TestServer::start(move |_, _| {
        Answer::new(200)
            .header("Content-Type", OCI_MANIFEST)
            .header("Docker-Content-Digest", sha256_digest(b"other").to_string())
            .body(body.clone())
    });
    let err = fetch_error(&server, "a", "t");
    assert!(
        matches!(err.kind(), ErrorKind::DigestMismatch { .. }),
        "{err}"
    );
}

#[test]
fn manifest_fetched_by_digest_is_verified_against_it() {
    let body = image_manifest(b"{}", &[]);
    let served = body.replace("schemaVersion\":2", "schemaVersion\": 2");
    let server = TestServer::start(move |_, _| {
        Answer::new(200)
            .header("Content-Type", OCI_MANIFEST)
            .body(served.clone())
    });
    let digest = sha256_digest(body.as_bytes());
    let err = client()
        .fetch_manifest(
            &image(&server, "a", digest.as_ref()),
            &ManifestSelection::default(),
        )
        .unwrap_err();
    match err.kind() {
        ErrorKind::DigestMismatch { expected, .. } => assert_eq!(expected, &digest.to_string()),
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        server.requests()[0].path().ends_with(&digest.to_string()),
        "fetched by digest"
    );
}

#[test]
fn docker_v2_manifest_is_accepted_with_its_media_type() {
    let docker = "application/vnd.docker.distribution.manifest.v2+json";
    let body = image_manifest(b"{}", &[b"l"])
        .replace(OCI_MANIFEST, docker)
        .replace(
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.docker.container.image.v1+json",
        );
    let expected = body.clone();
    let server = TestServer::start(move |_, _| manifest_answer(&body, docker));
    let fetched = client()
        .fetch_manifest(&image(&server, "a", "t"), &ManifestSelection::default())
        .unwrap();
    assert_eq!(fetched.media_type(), ManifestMediaType::DockerManifest);
    assert_eq!(fetched.bytes(), expected.as_bytes());
    assert_eq!(fetched.image_manifest().unwrap().layers().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Authentication

/// A registry that wants a Bearer token, issued by its own `/token` endpoint; the token server
/// demands `alice:pw` when `require_login` and counts its calls.
fn token_server(require_login: bool) -> (TestServer, Arc<AtomicUsize>) {
    let body = image_manifest(b"{}", &[]);
    let token_calls = Arc::new(AtomicUsize::new(0));
    let calls = token_calls.clone();
    let server = TestServer::start(move |req, base| {
        if req.path() == "/token" {
            calls.fetch_add(1, Ordering::SeqCst);
            if require_login && req.header("authorization") != Some(basic("alice", "pw").as_str()) {
                return Answer::new(401);
            }
            let scope_ok = req.target.contains("scope=repository%3Aa%2Fb%3Apull")
                && req.target.contains("service=test%20registry");
            if !scope_ok {
                return Answer::new(400);
            }
            return Answer::new(200).body(r#"{"access_token":"tok-1","expires_in":300}"#);
        }
        if req.header("authorization") == Some("Bearer tok-1") {
            return manifest_answer(&body, OCI_MANIFEST);
        }
        Answer::new(401).header(
            "WWW-Authenticate",
            format!(
                r#"Bearer realm="{base}/token",service="test registry",scope="repository:a/b:pull""#
            ),
        )
    });
    (server, token_calls)
}

#[test]
fn anonymous_token_flow_gets_and_caches_a_token() {
    let (server, token_calls) = token_server(false);
    let client = client();
    for _ in 0..3 {
        client
            .fetch_manifest(&image(&server, "a/b", "t"), &ManifestSelection::default())
            .unwrap();
    }
    assert_eq!(token_calls.load(Ordering::SeqCst), 1, "token cached");
    let token_request = server
        .requests()
        .into_iter()
        .find(|r| r.path() == "/token")
        .unwrap();
    assert_eq!(token_request.header("authorization"), None, "anonymous");
}

#[test]
fn token_flow_sends_the_login_to_the_realm() {
    let (server, _) = token_server(true);
    let creds = Credentials::anonymous().with_login(server.host(), Login::new("alice", "pw"));
    let fetched = client_with(creds)
        .fetch_manifest(&image(&server, "a/b", "t"), &ManifestSelection::default())
        .unwrap();
    assert_eq!(fetched.media_type(), ManifestMediaType::OciManifest);
}

#[test]
fn token_server_refusing_the_login_is_unauthorized_without_the_password() {
    let (server, _) = token_server(true);
    let creds = Credentials::anonymous().with_login(server.host(), Login::new("alice", "wrong-pw"));
    let err = client_with(creds)
        .fetch_manifest(&image(&server, "a/b", "t"), &ManifestSelection::default())
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Unauthorized);
    assert_eq!(err.status(), Some(401));
    assert!(err.request().unwrap().url.contains("/token"), "{err}");
    assert!(!format!("{err} {err:?}").contains("wrong-pw"));
}

fn basic_server() -> TestServer {
    let body = image_manifest(b"{}", &[]);
    TestServer::start(move |req, _| {
        if req.header("authorization") == Some(basic("bob", "secret").as_str()) {
            manifest_answer(&body, OCI_MANIFEST)
        } else {
            Answer::new(401)
                .header("WWW-Authenticate", r#"Basic realm="Registry Realm""#)
                .body(r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#)
        }
    })
}

#[test]
fn basic_auth_is_used_when_the_registry_asks_for_it() {
    let server = basic_server();
    let creds = Credentials::anonymous().with_login(server.host(), Login::new("bob", "secret"));
    let client = client_with(creds);
    for _ in 0..2 {
        client
            .fetch_manifest(&image(&server, "x", "t"), &ManifestSelection::default())
            .unwrap();
    }
    // One anonymous probe, then credentials sent up front.
    assert_eq!(server.requests().len(), 3);
}

#[test]
fn basic_auth_without_login_is_unauthorized_with_registry_codes() {
    let server = basic_server();
    let err = fetch_error(&server, "x", "t");
    assert_eq!(err.kind(), &ErrorKind::Unauthorized);
    assert_eq!(err.status(), Some(401));
    assert_eq!(err.registry_codes()[0].code, "UNAUTHORIZED");
    assert_eq!(err.request().unwrap().method, "GET");
    assert_eq!(server.requests().len(), 1, "401 is not retried blindly");
}

#[test]
fn wrong_basic_password_fails_after_one_reauthentication() {
    let server = basic_server();
    let creds = Credentials::anonymous().with_login(server.host(), Login::new("bob", "nope"));
    let err = client_with(creds)
        .fetch_manifest(&image(&server, "x", "t"), &ManifestSelection::default())
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Unauthorized);
    assert_eq!(err.registry_codes()[0].code, "UNAUTHORIZED");
    assert_eq!(server.requests().len(), 2);
    assert!(!format!("{err} {err:?}").contains("nope"));
}

#[test]
fn bearer_challenge_in_a_second_header_line_is_found() {
    let body = image_manifest(b"{}", &[]);
    let server = TestServer::start(move |req, base| {
        if req.path() == "/token" {
            return Answer::new(200).body(r#"{"token":"t2"}"#);
        }
        if req.header("authorization") == Some("Bearer t2") {
            return manifest_answer(&body, OCI_MANIFEST);
        }
        Answer::new(401)
            .header("WWW-Authenticate", r#"Negotiate"#)
            .header(
                "WWW-Authenticate",
                format!(r#"Bearer realm="{base}/token""#),
            )
    });
    client()
        .fetch_manifest(&image(&server, "x", "t"), &ManifestSelection::default())
        .unwrap();
}

#[test]
fn unparsable_challenge_is_an_auth_challenge_error() {
    let server = TestServer::start(|_, _| {
        Answer::new(401).header("WWW-Authenticate", r#"Bearer realm="unterminated"#)
    });
    let err = fetch_error(&server, "x", "t");
    assert!(
        matches!(err.kind(), ErrorKind::AuthChallenge { .. }),
        "{err}"
    );
}

#[test]
fn pull_through_proxy_rewrites_host_and_path() {
    let body = image_manifest(b"{}", &[]);
    let proxy = TestServer::start(move |req, _| {
        if req.path() == "/v2/cache/hub/library/ubuntu/manifests/24.04" {
            manifest_answer(&body, OCI_MANIFEST)
        } else {
            Answer::new(404)
        }
    });
    let env = Environment::from_vars([
        ("DUCC_AUTH_REGISTRIES", "HUB".to_owned()),
        ("DUCC_HUB_IDENT", "docker.io".to_owned()),
        ("DUCC_HUB_PROXY", format!("{}/cache/hub", proxy.host())),
    ]);
    let client = client_with(Credentials::from_environment(&env).unwrap());
    let name = ImageRef::parse("http://registry-1.docker.io/library/ubuntu:24.04").unwrap();
    client
        .fetch_manifest(&name, &ManifestSelection::default())
        .unwrap();
    assert_eq!(proxy.requests().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Retries

#[test]
fn server_errors_are_retried_with_retry_after_then_succeed() {
    let body = image_manifest(b"{}", &[]);
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let server = TestServer::start(move |_, _| match seen.fetch_add(1, Ordering::SeqCst) {
        0 => Answer::new(503),
        1 => Answer::new(429).header("Retry-After", "0"),
        _ => manifest_answer(&body, OCI_MANIFEST),
    });
    client()
        .fetch_manifest(&image(&server, "a", "t"), &ManifestSelection::default())
        .unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 3);
}

#[test]
fn retries_are_bounded_and_the_error_says_retry_may_help() {
    let server = TestServer::start(|_, _| Answer::new(502));
    let client = Client::new(ClientOptions::new().retry(fast_retries().max_retries(2)));
    let err = client
        .fetch_manifest(&image(&server, "a", "t"), &ManifestSelection::default())
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Server);
    assert_eq!(err.status(), Some(502));
    assert!(err.is_retryable());
    assert_eq!(server.requests().len(), 3);
}

#[test]
fn manifest_body_cut_short_is_fetched_again() {
    let body = image_manifest(b"{}", &[b"layer"]);
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let server = TestServer::start(move |_, _| {
        let answer = manifest_answer(&body, OCI_MANIFEST);
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            answer.truncate_at(20)
        } else {
            answer
        }
    });
    let fetched = client()
        .fetch_manifest(&image(&server, "a", "t"), &ManifestSelection::default())
        .unwrap();
    assert_eq!(fetched.image_manifest().unwrap().layers().len(), 1);
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[test]
fn retry_after_beyond_the_limit_fails_at_once() {
    let server = TestServer::start(|_, _| Answer::new(429).header("Retry-After", "3600"));
    let err = fetch_error(&server, "a", "t");
    assert_eq!(
        err.kind(),
        &ErrorKind::RetryAfterTooLong {
            asked_secs: 3600,
            limit_secs: 300
        }
    );
    assert_eq!(err.status(), Some(429));
    assert!(
        err.to_string()
            .contains("retry after 3600 s, longer than the 300 s"),
        "{err}"
    );
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn unreadable_retry_after_falls_back_to_backoff_without_a_panic() {
    // issue 12: the first of these made `SystemTime + Duration` overflow.
    for value in ["Sun, 06 Nov 300000000000 08:49:37 GMT", "-5", "garbage", ""] {
        let server = TestServer::start(move |_, _| Answer::new(429).header("Retry-After", value));
        let err = fetch_error(&server, "a", "t");
        assert_eq!(err.kind(), &ErrorKind::RateLimited, "{value:?}");
        assert_eq!(
            server.requests().len(),
            5,
            "{value:?}: retried with backoff"
        );
    }
}

#[test]
fn not_found_is_not_retried_and_carries_codes_and_request() {
    let server = TestServer::start(|_, _| {
        Answer::new(404)
            .body(r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#)
    });
    let err = client()
        .fetch_manifest(
            &image(&server, "a/b", "nope"),
            &ManifestSelection::default(),
        )
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::NotFound);
    assert!(!err.is_retryable());
    assert_eq!(err.registry_codes()[0].code, "MANIFEST_UNKNOWN");
    let request = err.request().unwrap();
    assert_eq!(request.method, "GET");
    assert_eq!(
        request.url,
        format!("http://{}/v2/a/b/manifests/nope", server.host())
    );
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn connection_refused_is_a_retryable_connect_error() {
    let host = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let name = ImageRef::parse(&format!("http://{host}/a:t")).unwrap();
    let client = Client::new(ClientOptions::new().retry(fast_retries().max_retries(1)));
    let err = client
        .fetch_manifest(&name, &ManifestSelection::default())
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Connect, "{err:?}");
    assert!(err.is_retryable());
}

// ---------------------------------------------------------------------------------------------
// Blobs

fn blob_content() -> Vec<u8> {
    (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect()
}

/// A 206 answer with `content` from the start of `range` (`bytes=N-`) on.
fn range_answer(content: &[u8], range: &str) -> Answer {
    let start: usize = range
        .trim_start_matches("bytes=")
        .trim_end_matches('-')
        .parse()
        .unwrap();
    Answer::new(206)
        .header(
            "Content-Range",
            format!("bytes {start}-{}/{}", content.len() - 1, content.len()),
        )
        .body(content[start..].to_vec())
}

/// Serves the blob; the first full GET is cut after `cut` bytes; ranges are honoured when
/// `ranges` is true.
fn flaky_blob_server(content: Vec<u8>, cut: usize, ranges: bool) -> TestServer {
    let first = Arc::new(AtomicUsize::new(0));
    TestServer::start(move |req, _| {
        if let Some(range) = req.header("range").filter(|_| ranges) {
            return range_answer(&content, range);
        }
        let answer = Answer::new(200).body(content.clone());
        if first.fetch_add(1, Ordering::SeqCst) == 0 {
            answer.truncate_at(cut)
        } else {
            answer
        }
    })
}

#[test]
fn interrupted_blob_resumes_with_range() {
    let content = blob_content();
    let server = flaky_blob_server(content.clone(), 300_000, true);
    let digest = BlobDigest::of(&content);
    let mut reader = client()
        .open_blob(&repo(&server, "a"), &digest, Some(content.len() as u64))
        .unwrap();
    let mut out = Vec::new();
    reader.read_to_end(&mut out).unwrap();
    assert!(out == content, "content differs");
    assert_eq!(reader.resumes(), 1);
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].header("range"), Some("bytes=300000-"));
}

#[test]
fn interrupted_blob_resumes_when_the_server_ignores_range() {
    let content = blob_content();
    let server = flaky_blob_server(content.clone(), 123_457, false);
    let mut reader = client()
        .open_blob(&repo(&server, "a"), &BlobDigest::of(&content), None)
        .unwrap();
    let mut out = Vec::new();
    reader.read_to_end(&mut out).unwrap();
    assert!(out == content, "content differs");
}

#[test]
fn stalled_blob_download_times_out_and_resumes() {
    let content = blob_content();
    let first = Arc::new(AtomicUsize::new(0));
    let served = content.clone();
    let server = TestServer::start(move |req, _| {
        if let Some(range) = req.header("range") {
            return range_answer(&served, range);
        }
        let answer = Answer::new(200).body(served.clone());
        if first.fetch_add(1, Ordering::SeqCst) == 0 {
            answer.truncate_at(5000).stall(Duration::from_secs(3))
        } else {
            answer
        }
    });
    let client = Client::new(
        ClientOptions::new()
            .retry(fast_retries())
            .read_timeout(Duration::from_millis(300)),
    );
    let started = std::time::Instant::now();
    let mut reader = client
        .open_blob(
            &repo(&server, "a"),
            &BlobDigest::of(&content),
            Some(content.len() as u64),
        )
        .unwrap();
    let mut out = Vec::new();
    reader.read_to_end(&mut out).unwrap();
    assert!(out == content, "content differs");
    assert_eq!(reader.resumes(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "did not wait for the stalled server"
    );
}

#[test]
fn stalled_response_is_a_retryable_timeout() {
    let server = TestServer::start(|_, _| {
        Answer::new(200)
            .body(vec![b'{'; 100])
            .truncate_at(10)
            .stall(Duration::from_secs(2))
    });
    let client = Client::new(
        ClientOptions::new()
            .retry(RetryPolicy::none())
            .read_timeout(Duration::from_millis(200)),
    );
    let err = client
        .fetch_manifest(&image(&server, "a", "t"), &ManifestSelection::default())
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Timeout, "{err:?}");
    assert!(err.is_retryable());
}

#[test]
fn interrupted_blob_without_resumes_fails_retryable() {
    let content = blob_content();
    let server = flaky_blob_server(content.clone(), 1000, true);
    let client = Client::new(ClientOptions::new().retry(RetryPolicy::none()));
    let mut reader = client
        .open_blob(
            &repo(&server, "a"),
            &BlobDigest::of(&content),
            Some(content.len() as u64),
        )
        .unwrap();
    let err = reader.read_to_end(&mut Vec::new()).unwrap_err();
    let registry_err = Error::from_io(&err).expect("registry error inside");
    assert!(registry_err.is_retryable(), "{registry_err:?}");
    assert_eq!(registry_err.repository(), Some("a"));
}

#[test]
fn blob_with_wrong_content_fails_at_eof_and_keeps_failing() {
    let server = TestServer::start(|_, _| Answer::new(200).body(b"evil bytes".to_vec()));
    let digest = BlobDigest::of(b"good bytes");
    let mut reader = client()
        .open_blob(&repo(&server, "a"), &digest, Some(10))
        .unwrap();
    let err = reader.read_to_end(&mut Vec::new()).unwrap_err();
    assert!(matches!(
        Error::from_io(&err).unwrap().kind(),
        ErrorKind::DigestMismatch { .. }
    ));
    let again = reader.read(&mut [0u8; 16]).unwrap_err();
    assert!(matches!(
        Error::from_io(&again).unwrap().kind(),
        ErrorKind::DigestMismatch { .. }
    ));
}

#[test]
fn blob_longer_than_its_size_fails() {
    let server = TestServer::start(|_, _| Answer::new(200).body(vec![1u8; 100]));
    let mut reader = client()
        .open_blob(&repo(&server, "a"), &BlobDigest::of(&[1u8; 100]), Some(50))
        .unwrap();
    let err = reader.read_to_end(&mut Vec::new()).unwrap_err();
    assert!(matches!(
        Error::from_io(&err).unwrap().kind(),
        ErrorKind::SizeMismatch { expected: 50, .. }
    ));
}

#[test]
fn blob_redirect_to_another_host_carries_no_credentials() {
    let content = b"layer bytes".to_vec();
    let storage = {
        let content = content.clone();
        TestServer::start(move |_, _| Answer::new(200).body(content.clone()))
    };
    let storage_url = format!(
        "http://{}/bucket/object?X-Amz-Signature=s3cr3t",
        storage.host()
    );
    let registry = TestServer::start(move |req, _| {
        if req.header("authorization") != Some(basic("bob", "secret").as_str()) {
            return Answer::new(401).header("WWW-Authenticate", r#"Basic realm="r""#);
        }
        Answer::new(307).header("Location", storage_url.clone())
    });
    let creds = Credentials::anonymous().with_login(registry.host(), Login::new("bob", "secret"));
    let mut reader = client_with(creds)
        .open_blob(
            &repo(&registry, "a"),
            &BlobDigest::of(&content),
            Some(content.len() as u64),
        )
        .unwrap();
    let mut out = Vec::new();
    reader.read_to_end(&mut out).unwrap();
    assert_eq!(out, content);
    let at_storage: Vec<Recorded> = storage.requests();
    assert_eq!(at_storage.len(), 1);
    assert_eq!(at_storage[0].header("authorization"), None);
}

#[test]
fn redirect_target_errors_hide_signatures() {
    let storage = TestServer::start(|_, _| Answer::new(403));
    let storage_url = format!("http://{}/o?X-Amz-Signature=s3cr3t", storage.host());
    let registry =
        TestServer::start(move |_, _| Answer::new(307).header("Location", storage_url.clone()));
    let err = client()
        .open_blob(&repo(&registry, "a"), &BlobDigest::of(b"x"), None)
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Denied);
    assert!(
        err.to_string().contains("X-Amz-Signature=REDACTED"),
        "{err}"
    );
    assert!(!err.to_string().contains("s3cr3t"), "{err}");
}

#[test]
fn config_is_fetched_verified_and_typed() {
    let config = br#"{"architecture":"amd64","os":"linux","config":{"Env":["A=1"]},"rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
    let served = config.clone();
    let server = TestServer::start(move |_, _| Answer::new(200).body(served.clone()));
    let manifest: oci_spec::image::ImageManifest =
        serde_json::from_str(&image_manifest(&config, &[])).unwrap();
    let descriptor = manifest.config();
    let digest = ConfigDigest::try_from(descriptor.digest()).unwrap();
    let fetched = client()
        .fetch_config(&repo(&server, "a"), &digest, descriptor.size())
        .unwrap();
    assert_eq!(fetched.bytes(), &config[..]);
    assert_eq!(fetched.digest(), &ConfigDigest::of(&config));
    assert_eq!(
        fetched
            .config()
            .config()
            .as_ref()
            .unwrap()
            .env()
            .as_ref()
            .unwrap(),
        &vec!["A=1".to_owned()]
    );
}

// ---------------------------------------------------------------------------------------------
// Tags

#[test]
fn tag_list_follows_link_pagination() {
    let server = TestServer::start(|req, _| {
        let (tags, next) = if req.target.contains("last=b") {
            (r#"["c"]"#, None)
        } else if req.target.contains("n=2") {
            (
                r#"["a","b"]"#,
                Some(r#"</v2/r/tags/list?n=2&last=b>; rel="next""#),
            )
        } else {
            return Answer::new(400);
        };
        let answer = Answer::new(200).body(format!(r#"{{"name":"r","tags":{tags}}}"#));
        match next {
            Some(link) => answer.header("Link", link),
            None => answer,
        }
    });
    let tags = client().list_tags_paged(&repo(&server, "r"), 2).unwrap();
    assert_eq!(tags, ["a", "b", "c"]);
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn tag_list_pagination_loop_is_an_error() {
    let server = TestServer::start(|_, _| {
        Answer::new(200)
            .header("Link", r#"</v2/r/tags/list?n=1>; rel="next""#)
            .body(r#"{"tags":["a"]}"#)
    });
    let err = client()
        .list_tags_paged(&repo(&server, "r"), 1)
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::InvalidResponse { .. }),
        "{err}"
    );
}

#[test]
fn empty_repository_has_null_tags() {
    let server = TestServer::start(|_, _| Answer::new(200).body(r#"{"name":"r","tags":null}"#));
    assert!(client().list_tags(&repo(&server, "r")).unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Push

/// A registry stand-in that accepts uploads (monolithic and chunked) and checks them.
fn upload_server() -> TestServer {
    let stored: Arc<std::sync::Mutex<Vec<u8>>> = Arc::default();
    TestServer::start(move |req, _| {
        let path = req.path().to_owned();
        match req.method.as_str() {
            "HEAD" => Answer::new(404),
            "POST" if path == "/v2/p/blobs/uploads/" => {
                stored.lock().unwrap().clear();
                Answer::new(202).header("Location", "/v2/p/blobs/uploads/u1?_state=0")
            }
            "PATCH" => {
                let mut data = stored.lock().unwrap();
                let range = req.header("content-range").unwrap_or("");
                if range != format!("{}-{}", data.len(), data.len() + req.body.len() - 1) {
                    return Answer::new(416);
                }
                data.extend_from_slice(&req.body);
                Answer::new(202).header(
                    "Location",
                    format!("/v2/p/blobs/uploads/u1?_state={}", data.len()),
                )
            }
            "PUT" if path.starts_with("/v2/p/blobs/uploads/") => {
                let mut data = stored.lock().unwrap();
                data.extend_from_slice(&req.body);
                let digest = req
                    .target
                    .split("digest=")
                    .nth(1)
                    .unwrap_or("")
                    .replace("%3A", ":");
                if sha256_digest(&data).to_string() == digest {
                    Answer::new(201)
                } else {
                    Answer::new(400)
                        .body(r#"{"errors":[{"code":"DIGEST_INVALID","message":"digest"}]}"#)
                }
            }
            "PUT" if path.starts_with("/v2/p/manifests/") => Answer::new(201).header(
                "Docker-Content-Digest",
                sha256_digest(&req.body).to_string(),
            ),
            _ => Answer::new(405),
        }
    })
}

#[test]
fn monolithic_push_sends_one_put_with_the_digest() {
    let server = upload_server();
    let data = blob_content();
    let outcome = client()
        .push_blob(
            &repo(&server, "p"),
            &BlobDigest::of(&data),
            data.len() as u64,
            &mut &data[..],
        )
        .unwrap();
    assert_eq!(outcome, BlobPush::Uploaded);
    let methods: Vec<String> = server.requests().iter().map(|r| r.method.clone()).collect();
    assert_eq!(methods, ["HEAD", "POST", "PUT"]);
    assert_eq!(server.requests()[2].body.len(), data.len());
}

#[test]
fn large_push_goes_in_chunks() {
    let server = upload_server();
    let data = blob_content();
    let client = Client::new(
        ClientOptions::new()
            .retry(fast_retries())
            .monolithic_upload_limit(1000)
            .upload_chunk_size(300_000),
    );
    client
        .push_blob(
            &repo(&server, "p"),
            &BlobDigest::of(&data),
            data.len() as u64,
            &mut &data[..],
        )
        .unwrap();
    let methods: Vec<String> = server.requests().iter().map(|r| r.method.clone()).collect();
    assert_eq!(methods, ["HEAD", "POST", "PATCH", "PATCH", "PATCH", "PUT"]);
}

#[test]
fn push_of_data_that_is_not_the_named_blob_is_refused() {
    let server = upload_server();
    let data = blob_content();
    let client = Client::new(
        ClientOptions::new()
            .monolithic_upload_limit(1000)
            .upload_chunk_size(500_000),
    );
    let err = client
        .push_blob(
            &repo(&server, "p"),
            &BlobDigest::of(b"something else"),
            data.len() as u64,
            &mut &data[..],
        )
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::DigestMismatch { .. }),
        "{err}"
    );
    assert!(
        !server.requests().iter().any(|r| r.method == "PUT"),
        "no commit of wrong data"
    );
}

#[test]
fn push_of_short_data_is_a_size_mismatch() {
    let server = upload_server();
    let data = b"short".to_vec();
    let err = client()
        .push_blob(
            &repo(&server, "p"),
            &BlobDigest::of(&data),
            10,
            &mut &data[..],
        )
        .unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::SizeMismatch {
                expected: 10,
                actual: 5
            }
        ),
        "{err:?}"
    );
}

#[test]
fn existing_blob_is_not_uploaded_again() {
    let server = TestServer::start(|req, _| {
        if req.method == "HEAD" {
            Answer::new(200)
        } else {
            Answer::new(500)
        }
    });
    let outcome = client()
        .push_blob(
            &repo(&server, "p"),
            &BlobDigest::of(b"x"),
            1,
            &mut &b"x"[..],
        )
        .unwrap();
    assert_eq!(outcome, BlobPush::AlreadyPresent);
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn manifest_push_returns_its_digest_and_sends_its_media_type() {
    let server = upload_server();
    let body = image_manifest(b"{}", &[]);
    let digest = client()
        .push_manifest(
            &repo(&server, "p"),
            &Reference::tag("v1").unwrap(),
            OCI_MANIFEST,
            body.as_bytes(),
        )
        .unwrap();
    assert_eq!(digest, sha256_digest(body.as_bytes()));
    let put = server.requests().pop().unwrap();
    assert_eq!(put.path(), "/v2/p/manifests/v1");
    assert_eq!(put.header("content-type"), Some(OCI_MANIFEST));
}

#[test]
fn client_and_blob_reader_can_move_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Client>();
    send::<BlobReader>();
    send_sync::<Error>();
}

// ---------------------------------------------------------------------------------------------
// Credentials stay on the registry's origin (issue 12). Two servers on 127.0.0.1 with different
// ports are different origins; the real-registry versions with 127.0.0.2 are in ducc-tests.

/// A server that wants Basic `bob:secret` and answers with `answer` once authenticated.
fn basic_registry(answer: impl Fn(&Recorded) -> Answer + Send + Sync + 'static) -> TestServer {
    TestServer::start(move |req, _| {
        if req.header("authorization") != Some(basic("bob", "secret").as_str()) {
            return Answer::new(401).header("WWW-Authenticate", r#"Basic realm="r""#);
        }
        answer(req)
    })
}

fn bob_at(server: &TestServer) -> Client {
    client_with(Credentials::anonymous().with_login(server.host(), Login::new("bob", "secret")))
}

#[test]
fn tag_list_link_to_another_origin_carries_no_credentials() {
    let other = TestServer::start(|_, _| Answer::new(200).body(r#"{"tags":["c"]}"#));
    let next = format!("http://{}/v2/r/tags/list?last=b", other.host());
    let registry = basic_registry(move |_| {
        Answer::new(200)
            .header("Link", format!(r#"<{next}>; rel="next""#))
            .body(r#"{"tags":["a","b"]}"#)
    });
    let tags = bob_at(&registry).list_tags(&repo(&registry, "r")).unwrap();
    assert_eq!(tags, ["a", "b", "c"]);
    let at_other = other.requests();
    assert_eq!(at_other.len(), 1);
    assert_eq!(at_other[0].header("authorization"), None);
}

#[test]
fn a_challenge_from_another_origin_gets_no_login_and_no_token_request() {
    let realm = TestServer::start(|_, _| Answer::new(200).body(r#"{"token":"t"}"#));
    let realm_url = format!("http://{}/token", realm.host());
    let other = TestServer::start(move |_, _| {
        Answer::new(401).header("WWW-Authenticate", format!(r#"Bearer realm="{realm_url}""#))
    });
    let next = format!("http://{}/v2/r/tags/list?last=b", other.host());
    let registry = basic_registry(move |_| {
        Answer::new(200)
            .header("Link", format!(r#"<{next}>; rel="next""#))
            .body(r#"{"tags":["a"]}"#)
    });
    let err = bob_at(&registry)
        .list_tags(&repo(&registry, "r"))
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Unauthorized);
    assert_eq!(
        other.requests().len(),
        1,
        "asked once, not re-authenticated"
    );
    assert_eq!(other.requests()[0].header("authorization"), None);
    assert!(realm.requests().is_empty(), "no token was fetched for it");
}

#[test]
fn upload_location_on_another_origin_is_refused_before_sending_anything() {
    let other = TestServer::start(|_, _| Answer::new(201));
    let location = format!("http://{}/v2/p/blobs/uploads/u1", other.host());
    let registry = basic_registry(move |req| match req.method.as_str() {
        "HEAD" => Answer::new(404),
        "POST" => Answer::new(202).header("Location", location.clone()),
        _ => Answer::new(405),
    });
    let data = b"blob".to_vec();
    let err = bob_at(&registry)
        .push_blob(
            &repo(&registry, "p"),
            &BlobDigest::of(&data),
            data.len() as u64,
            &mut &data[..],
        )
        .unwrap_err();
    match err.kind() {
        ErrorKind::ForeignUploadLocation {
            location,
            registry_origin,
        } => {
            assert!(location.starts_with(&format!("http://{}", other.host())));
            assert_eq!(registry_origin, &format!("http://{}", registry.host()));
        }
        other => panic!("{other:?}"),
    }
    assert!(other.requests().is_empty());
}

#[test]
fn upload_location_with_another_port_or_scheme_spelling_is_judged_by_origin() {
    // Same origin written differently: default-less explicit port, upper case. Accepted.
    let registry = basic_registry(|req| match req.method.as_str() {
        "HEAD" => Answer::new(404),
        "POST" => {
            let host = req.header("host").unwrap_or("").to_ascii_uppercase();
            Answer::new(202).header("Location", format!("HTTP://{host}/v2/p/blobs/uploads/u1"))
        }
        "PUT" => Answer::new(201),
        _ => Answer::new(405),
    });
    let data = b"blob".to_vec();
    let outcome = bob_at(&registry)
        .push_blob(
            &repo(&registry, "p"),
            &BlobDigest::of(&data),
            data.len() as u64,
            &mut &data[..],
        )
        .unwrap();
    assert_eq!(outcome, BlobPush::Uploaded);
    let put = registry
        .requests()
        .into_iter()
        .find(|r| r.method == "PUT")
        .unwrap();
    assert_eq!(
        put.header("authorization"),
        Some(basic("bob", "secret").as_str())
    );
}

#[test]
fn token_realm_redirect_to_another_origin_drops_the_login() {
    let elsewhere = TestServer::start(|_, _| Answer::new(200).body(r#"{"token":"tok-2"}"#));
    let elsewhere_url = format!("http://{}/token", elsewhere.host());
    let realm =
        TestServer::start(move |_, _| Answer::new(307).header("Location", elsewhere_url.clone()));
    let realm_url = format!("http://{}/token", realm.host());
    let body = image_manifest(b"{}", &[]);
    let registry = TestServer::start(move |req, _| {
        if req.header("authorization") == Some("Bearer tok-2") {
            return manifest_answer(&body, OCI_MANIFEST);
        }
        Answer::new(401).header(
            "WWW-Authenticate",
            format!(r#"Bearer realm="{realm_url}",service="s""#),
        )
    });
    let creds = Credentials::anonymous()
        .with_login(registry.host(), Login::new("alice", "pw"))
        .with_login(realm.host(), Login::new("realm-user", "realm-pw"));
    client_with(creds)
        .fetch_manifest(&image(&registry, "a/b", "t"), &ManifestSelection::default())
        .unwrap();
    let at_realm = realm.requests();
    assert_eq!(at_realm.len(), 1);
    assert_eq!(
        at_realm[0].header("authorization"),
        Some(basic("alice", "pw").as_str()),
        "the registry's login, not the realm host's"
    );
    let at_elsewhere = elsewhere.requests();
    assert_eq!(at_elsewhere.len(), 1);
    assert_eq!(at_elsewhere[0].header("authorization"), None);
}

#[test]
fn oversized_manifest_is_refused_naming_what_is_too_big() {
    let body = " ".repeat(2000);
    let server = TestServer::start(move |_, _| manifest_answer(&body, OCI_MANIFEST));
    let client = Client::new(
        ClientOptions::new()
            .retry(fast_retries())
            .max_manifest_bytes(1000),
    );
    let err = client
        .fetch_manifest(&image(&server, "a", "t"), &ManifestSelection::default())
        .unwrap_err();
    assert_eq!(
        err.kind(),
        &ErrorKind::TooLarge {
            what: "manifest or index",
            limit: 1000
        }
    );
    let message = err.to_string();
    assert!(message.contains("/a: GET "), "names the image: {message}");
    assert!(message.contains("manifests/t"), "{message}");
}

#[test]
fn a_config_from_elsewhere_is_checked_against_its_digest() {
    let config =
        br#"{"architecture":"arm64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    let checked = FetchedConfig::checked(config.clone(), ConfigDigest::of(&config)).unwrap();
    assert_eq!(checked.config().architecture().to_string(), "arm64");
    assert_eq!(checked.digest(), &ConfigDigest::of(&config));
    let err = FetchedConfig::checked(config, ConfigDigest::of(b"other")).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::DigestMismatch { .. }),
        "{err}"
    );
    let err = FetchedConfig::checked(b"[]".to_vec(), ConfigDigest::of(b"[]")).unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::InvalidConfig, "{err}");
}

#[test]
fn a_manifest_from_elsewhere_is_parsed_with_its_sha256_and_may_be_chosen_from_an_index() {
    let body = image_manifest(b"{}", &[]);
    let checked = FetchedManifest::checked(body.clone().into_bytes()).unwrap();
    assert_eq!(checked.digest(), &sha256_digest(body.as_bytes()));
    assert!(checked.image_manifest().is_some());
    assert_eq!((checked.index_digest(), checked.platform()), (None, None));
    let index = sha256_digest(b"index");
    let arm64: ducc_oci::Platform = "linux/arm64".parse().unwrap();
    let chosen = checked.chosen_from(index.clone(), arm64.clone());
    assert_eq!(chosen.index_digest(), Some(&index));
    assert_eq!(chosen.platform(), Some(&arm64));
    let err =
        FetchedManifest::checked(br#"{"schemaVersion":1,"fsLayers":[]}"#.to_vec()).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::UnsupportedMediaType { .. }),
        "{err}"
    );
}

#[test]
fn oversized_config_is_refused_before_download() {
    let server = TestServer::start(|_, _| Answer::new(500));
    let client = Client::new(
        ClientOptions::new()
            .retry(fast_retries())
            .max_config_bytes(10),
    );
    let err = client
        .fetch_config(&repo(&server, "a"), &ConfigDigest::of(b"{}"), 11)
        .unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::TooLarge {
                what: "image config",
                limit: 10
            }
        ),
        "{err:?}"
    );
    assert!(server.requests().is_empty());
}

#[test]
fn token_with_a_huge_lifetime_is_used_without_a_panic() {
    let body = image_manifest(b"{}", &[]);
    let server = TestServer::start(move |req, base| {
        if req.path() == "/token" {
            return Answer::new(200).body(format!(r#"{{"token":"t","expires_in":{}}}"#, u64::MAX));
        }
        if req.header("authorization") == Some("Bearer t") {
            return manifest_answer(&body, OCI_MANIFEST);
        }
        Answer::new(401).header(
            "WWW-Authenticate",
            format!(r#"Bearer realm="{base}/token""#),
        )
    });
    client()
        .fetch_manifest(&image(&server, "a", "t"), &ManifestSelection::default())
        .unwrap();
}
