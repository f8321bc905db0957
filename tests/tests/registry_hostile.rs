//! A registry that misbehaves on purpose (issue 12): credentials stay on their registry's origin,
//! and no registry answer panics a run.
//!
//! The registry's own origin is `http://127.0.0.1:PORT` (a [`FaultProxy`] in front of the real
//! registry, which rewrites answers); "another host" is a proxy on 127.0.0.2 that forwards to the
//! same registry with the registry's credentials added on its side, so following it works, and
//! its recorded requests show what the client sent there. Every assertion is on what the other
//! host actually received.
// Helpers here are test code too; clippy.toml only exempts #[test] functions.
#![allow(clippy::unwrap_used)]

use std::io::Read as _;
use std::process::Output;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use ducc_oci::Scheme;
use ducc_registry::{
    Client, ClientOptions, ErrorKind, Login, ManifestSelection, Reference, Repository,
};
use ducc_tests::hostile::{TlsAnswer, TlsFront, other_host};
use ducc_tests::images::{self, Format, ImageSpec, PushedImage};
use ducc_tests::{
    Action, Credentials, FaultProxy, RecordedRequest, Registry, Rule, ducc_command, unique_repo,
};

fn basic(credentials: &Credentials) -> String {
    let pair = format!("{}:{}", credentials.username, credentials.password);
    format!("Basic {}", STANDARD.encode(pair))
}

fn reference(text: &str) -> Reference {
    Reference::parse(text).unwrap()
}

/// Pushes a one-layer image to `registry` as `path:tag`.
fn push(registry: &Registry, path: &str, tag: &str) -> PushedImage {
    let client = images::client_for(registry.host(), registry.credentials());
    let repo = images::repository(registry.host(), path);
    images::push_image(
        &client,
        &repo,
        tag,
        &ImageSpec::new(Format::Oci).layers(1).build(),
    )
}

/// Another host in front of `registry` that adds the registry's login on its own side.
fn storage_host(registry: &Registry, rules: Vec<Rule>) -> FaultProxy {
    let other = other_host(registry.host(), rules);
    if let Some(credentials) = registry.credentials() {
        other.set_upstream_header("Authorization", &basic(credentials));
    }
    other
}

fn assert_no_credentials(requests: &[RecordedRequest], secret: &str, case: &str) {
    assert!(
        !requests.is_empty(),
        "{case}: the other host saw no request"
    );
    for request in requests {
        assert_eq!(
            request.header("Authorization"),
            None,
            "{case}: {} {} reached the other host with credentials",
            request.method,
            request.target
        );
        assert!(
            !format!("{:?}", request.headers).contains(secret),
            "{case}: the password reached the other host"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// credentials and origins

#[test]
fn tag_list_link_to_another_host_is_followed_without_credentials() {
    let registry = Registry::basic_auth();
    let credentials = registry.credentials().unwrap();
    let path = unique_repo("hostile/link");
    let pushed = push(registry, &path, "t0");
    let writer = images::client_for(registry.host(), Some(credentials));
    let repo = images::repository(registry.host(), &path);
    for tag in ["t1", "t2", "t3", "t4"] {
        images::push_manifest(
            &writer,
            &repo,
            tag,
            Format::Oci.manifest_type(),
            &pushed.image.manifest.bytes,
        );
    }
    let other = storage_host(
        registry,
        vec![Rule::new(Action::PaginateTags(2)).path_contains("/tags/list")],
    );
    let front = FaultProxy::start(
        registry.host(),
        vec![
            Rule::new(Action::PaginateTagsAt {
                limit: 2,
                link_base: other.url(),
            })
            .path_contains("/tags/list"),
        ],
    );
    let client = images::client_for(front.host(), Some(credentials));
    let tags = client
        .list_tags(&images::repository(front.host(), &path))
        .unwrap();
    assert_eq!(tags, ["t0", "t1", "t2", "t3", "t4"]);
    assert!(
        front
            .requests()
            .iter()
            .any(|r| r.header("Authorization") == Some(basic(credentials).as_str())),
        "the registry itself got the login"
    );
    let at_other = other.requests();
    assert!(at_other.len() >= 2, "later pages came from the other host");
    assert_no_credentials(&at_other, &credentials.password, "tag list Link");
}

#[test]
fn upload_location_on_another_host_is_refused_and_the_other_host_gets_nothing() {
    let registry = Registry::basic_auth();
    let credentials = registry.credentials().unwrap();
    let other = storage_host(registry, Vec::new());
    let front = FaultProxy::start(registry.host(), Vec::new());
    // The registry answers the upload POST with an absolute Location on the host it was asked.
    front.set_rules(vec![
        Rule::new(Action::rewrite_response_header(
            "Location",
            &front.url(),
            &other.url(),
        ))
        .method("POST")
        .path_contains("/blobs/uploads/"),
    ]);
    let client = images::client_for(front.host(), Some(credentials));
    let repo = images::repository(front.host(), &unique_repo("hostile/upload"));
    let blob = images::Blob::new(images::random_bytes(4096));
    let err = client
        .push_blob(
            &repo,
            &ducc_oci::BlobDigest::parse(&blob.digest).unwrap(),
            blob.bytes.len() as u64,
            &mut blob.bytes.as_slice(),
        )
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::ForeignUploadLocation { location, .. } if location.contains("127.0.0.2")),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("another origin"), "{message}");
    assert!(
        message.contains(front.host()),
        "names the registry: {message}"
    );
    assert!(
        front.count("POST", "/blobs/uploads/") >= 1,
        "the rewrite was exercised"
    );
    assert!(other.requests().is_empty(), "{:?}", other.requests());
}

#[test]
fn blob_and_manifest_redirects_to_another_host_are_followed_without_credentials() {
    let registry = Registry::basic_auth();
    let credentials = registry.credentials().unwrap();
    let path = unique_repo("hostile/redirect");
    let pushed = push(registry, &path, "v1");
    let other = storage_host(registry, Vec::new());
    // Only authenticated requests are sent away, so the login was really in play.
    let front = FaultProxy::start(
        registry.host(),
        vec![
            Rule::new(Action::Redirect(other.url()))
                .method("GET")
                .path_contains("/blobs/")
                .with_header("Authorization"),
            Rule::new(Action::Redirect(other.url()))
                .method("GET")
                .path_contains("/manifests/")
                .with_header("Authorization"),
        ],
    );
    let client = images::client_for(front.host(), Some(credentials));
    let repo = images::repository(front.host(), &path);
    let fetched = client
        .fetch_manifest_at(&repo, &reference("v1"), &ManifestSelection::default())
        .unwrap();
    assert_eq!(fetched.bytes(), pushed.image.manifest.bytes.as_slice());
    let layer = &pushed.image.layers[0];
    let mut reader = client
        .open_blob(
            &repo,
            &ducc_oci::BlobDigest::parse(&layer.digest).unwrap(),
            Some(layer.bytes.len() as u64),
        )
        .unwrap();
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes, layer.bytes);

    assert!(front.requests().iter().any(|r| matches!(
        r.action,
        Action::Redirect(_)
    ) && r.header("Authorization").is_some()));
    let at_other = other.requests();
    assert!(at_other.iter().any(|r| r.path().contains("/manifests/")));
    assert!(at_other.iter().any(|r| r.path().contains("/blobs/")));
    assert_no_credentials(&at_other, &credentials.password, "redirect");
}

#[test]
fn token_realm_on_another_host_gets_only_this_registrys_login() {
    let registry = Registry::token_auth();
    let credentials = registry.credentials().unwrap();
    let path = unique_repo("hostile/realm");
    push(registry, &path, "v1");
    let issuer = registry.token_issuer().unwrap();
    let realm = issuer.realm();
    let issuer_base = realm.trim_end_matches("/token");
    let issuer_host = issuer_base.trim_start_matches("http://");
    let realm_host = other_host(issuer_host, Vec::new());
    let front = FaultProxy::start(
        registry.host(),
        vec![Rule::new(Action::rewrite_response_header(
            "WWW-Authenticate",
            issuer_base,
            &realm_host.url(),
        ))],
    );
    let realm_host_login = Login::new("realm-host-user", "realm-host-pw");
    let logins = ducc_registry::Credentials::anonymous()
        .with_login(
            front.host(),
            Login::new(&credentials.username, &credentials.password),
        )
        .with_login(realm_host.host(), realm_host_login);
    let client = Client::new(
        ClientOptions::new()
            .credentials(logins)
            .retry(images::quick_retries()),
    );
    let repo = images::repository(front.host(), &path);
    client
        .fetch_manifest_at(&repo, &reference("v1"), &ManifestSelection::default())
        .unwrap();

    let token_requests = realm_host.requests();
    assert!(
        !token_requests.is_empty(),
        "the realm on 127.0.0.2 was used"
    );
    for request in &token_requests {
        assert!(request.path().ends_with("/token"), "{}", request.target);
        assert_eq!(
            request.header("Authorization"),
            Some(basic(credentials).as_str()),
            "the token request carries the registry's own login, nothing else"
        );
    }
    assert!(
        !format!("{token_requests:?}").contains(&STANDARD.encode("realm-host-user:realm-host-pw")),
        "the realm host's own login was never used"
    );
    assert!(
        front.requests().iter().any(|r| r
            .header("Authorization")
            .is_some_and(|a| a.starts_with("Bearer "))),
        "the token went to the registry"
    );
}

#[test]
fn https_registry_pointing_at_plain_http_is_refused() {
    let plain = Registry::anonymous();
    let other = other_host(plain.host(), Vec::new());
    let other_url = other.url();
    let front = TlsFront::start(move |request| -> TlsAnswer {
        let header = |name: &str, value: String| vec![(name.to_owned(), value)];
        match request.path() {
            "/v2/a/manifests/t" => (
                307,
                header("Location", format!("{other_url}{}", request.target)),
                Vec::new(),
            ),
            "/v2/a/tags/list" => (
                200,
                header(
                    "Link",
                    format!("<{other_url}/v2/a/tags/list?last=x>; rel=\"next\""),
                ),
                br#"{"name":"a","tags":["x"]}"#.to_vec(),
            ),
            "/v2/b/manifests/t" => (
                401,
                header(
                    "WWW-Authenticate",
                    format!(r#"Bearer realm="{other_url}/token",service="front""#),
                ),
                Vec::new(),
            ),
            // The control: plain answers over TLS work, so the refusals are not TLS failures.
            "/v2/c/tags/list" => (200, Vec::new(), br#"{"name":"c","tags":["y"]}"#.to_vec()),
            _ => (404, Vec::new(), Vec::new()),
        }
    });
    let logins = ducc_registry::Credentials::anonymous()
        .with_login(front.host(), Login::new("tls-user", "tls-secret"));
    let client = Client::new(
        ClientOptions::new()
            .root_certificates_pem(front.ca_pem())
            .unwrap()
            .credentials(logins)
            .retry(images::quick_retries()),
    );
    let repo = |path: &str| Repository::new(Scheme::Https, front.host(), path).unwrap();

    assert_eq!(client.list_tags(&repo("c")).unwrap(), ["y"]);
    let redirect = client
        .fetch_manifest_at(&repo("a"), &reference("t"), &ManifestSelection::default())
        .unwrap_err();
    assert!(
        matches!(redirect.kind(), ErrorKind::InsecureRedirect { target } if target.starts_with("http://127.0.0.2")),
        "{redirect:?}"
    );
    assert!(redirect.to_string().contains("plain http"), "{redirect}");
    let link = client.list_tags(&repo("a")).unwrap_err();
    assert!(
        matches!(link.kind(), ErrorKind::InsecureRedirect { .. }),
        "{link:?}"
    );
    let realm = client
        .fetch_manifest_at(&repo("b"), &reference("t"), &ManifestSelection::default())
        .unwrap_err();
    assert!(
        matches!(realm.kind(), ErrorKind::AuthChallenge { challenge } if challenge.contains("plain http")),
        "{realm:?}"
    );
    assert_eq!(front.requests().len(), 4, "{:?}", front.requests());
    assert!(other.requests().is_empty(), "{:?}", other.requests());
}

// ---------------------------------------------------------------------------------------------
// hostile headers and bodies: clear errors, never a panic

fn download_manifest(image: &str) -> Output {
    let docker_config = tempfile::tempdir().unwrap();
    ducc_command(docker_config.path())
        .args(["download-manifest", image])
        .output()
        .expect("run ducc")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `download-manifest` through a proxy answering every manifest request with `answer`: exit 1
/// (the image failed), a message naming the image that contains `expected`, and no panic.
fn assert_manifest_fails_cleanly(answer: Action, expected: &str, case: &str) {
    let registry = Registry::anonymous();
    let path = unique_repo("hostile/answer");
    push(registry, &path, "v1");
    let proxy = FaultProxy::start(
        registry.host(),
        vec![Rule::new(answer).path_contains("/manifests/")],
    );
    let image = format!("http://{}/{path}:v1", proxy.host());
    let output = download_manifest(&image);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{case}: {err}");
    assert!(!err.contains("panicked"), "{case}: {err}");
    assert!(err.contains(&path), "{case}: names the image: {err}");
    assert!(err.contains(expected), "{case}: {expected:?} in {err}");
    assert!(output.stdout.is_empty(), "{case}");
}

#[test]
fn retry_after_beyond_the_cap_or_unreadable_fails_the_image_with_a_clear_error() {
    for (value, expected) in [
        // issue 12: this date overflowed `SystemTime + Duration` and exited 101.
        (
            "Sun, 06 Nov 300000000000 08:49:37 GMT",
            "rate limited by the registry (HTTP 429",
        ),
        (
            "Thu, 30 Dec 9999 21:00:00 GMT",
            "longer than the 300 s this client waits",
        ),
        ("3600", "retry after 3600 s, longer than the 300 s"),
        ("99999999999999999999999999", "retry after more than 2^64 s"),
        ("-5", "rate limited by the registry (HTTP 429"),
        ("soon, maybe", "rate limited by the registry (HTTP 429"),
        ("", "rate limited by the registry (HTTP 429"),
    ] {
        assert_manifest_fails_cleanly(
            Action::too_many_requests(value),
            expected,
            &format!("Retry-After {value:?}"),
        );
    }
}

fn raw(head: &str, body: &[u8]) -> Action {
    let mut bytes = head.replace('\n', "\r\n").into_bytes();
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(body);
    Action::RawResponse(bytes)
}

#[test]
fn garbage_content_length_fails_the_image_without_a_panic() {
    let body = br#"{"schemaVersion":2}"#;
    for (head, case) in [
        ("HTTP/1.1 200 OK\nContent-Length: abc\n", "letters"),
        ("HTTP/1.1 200 OK\nContent-Length: -1\n", "negative"),
        (
            "HTTP/1.1 200 OK\nContent-Length: 99999999999999999999999\n",
            "beyond u64",
        ),
        (
            "HTTP/1.1 200 OK\nContent-Length: 5\nContent-Length: 7\n",
            "two values",
        ),
        (
            "HTTP/1.1 200 OK\nContent-Length: 1000\n",
            "longer than the body",
        ),
    ] {
        assert_manifest_fails_cleanly(
            raw(&format!("{head}Connection: close\n"), body),
            "cannot download the manifest",
            case,
        );
    }
}

#[test]
fn oversized_manifest_fails_the_image_naming_what_is_too_big() {
    let huge = vec![b' '; (4 << 20) + 1];
    // Announced with its length: refused before the body is read.
    assert_manifest_fails_cleanly(
        Action::Respond {
            status: 200,
            headers: vec![(
                "Content-Type".to_owned(),
                "application/vnd.oci.image.manifest.v1+json".to_owned(),
            )],
            body: huge.clone(),
        },
        "manifest or index is larger than the 4194304 bytes accepted",
        "with Content-Length",
    );
    // No length, the body runs to the end of the connection: cut at the limit.
    assert_manifest_fails_cleanly(
        raw(
            "HTTP/1.1 200 OK\nContent-Type: application/vnd.oci.image.manifest.v1+json\nConnection: close\n",
            &huge,
        ),
        "manifest or index is larger than the 4194304 bytes accepted",
        "without Content-Length",
    );
}
