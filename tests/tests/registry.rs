//! ducc-registry against the real CNCF distribution registry: every auth path, platform choice,
//! tag pagination, digest checks, refused documents, retries through the fault proxy, and push.
//!
//! Images are built by the tests and pushed with ducc-registry's own push code; `skopeo inspect
//! --raw` is the independent oracle for what the registry holds.
// Helpers here are test code too; clippy.toml only exempts #[test] functions.
#![allow(clippy::unwrap_used)]

use std::io::Read as _;
use std::time::{Duration, Instant};

use ducc_oci::{BlobDigest, Platform};
use ducc_registry::{
    BlobPush, Client, ClientOptions, Error, ErrorKind, ManifestSelection, Reference, Repository,
};
use ducc_tests::images::{self, Blob, Format, ImageSpec, PushedImage};
use ducc_tests::{Action, Credentials, FaultProxy, Registry, Rule, skopeo, unique_repo};

// ---------------------------------------------------------------------------------------------
// helpers

fn reference(text: &str) -> Reference {
    Reference::parse(text).unwrap()
}

fn platform(text: &str) -> ManifestSelection {
    ManifestSelection::Platform(text.parse::<Platform>().unwrap())
}

fn read_blob(client: &Client, repo: &Repository, blob: &Blob) -> std::io::Result<Vec<u8>> {
    let digest = BlobDigest::parse(&blob.digest).unwrap();
    let mut reader = client
        .open_blob(repo, &digest, Some(blob.bytes.len() as u64))
        .map_err(std::io::Error::other)?;
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The registry error inside an I/O error from a blob reader.
fn registry_error(err: &std::io::Error) -> &Error {
    Error::from_io(err)
        .unwrap_or_else(|| panic!("blob read failed without a registry error: {err:?}"))
}

/// Pushes a fresh image to `registry` (logged in as its user) under `repo_path:tag`.
fn push_new(registry: &Registry, repo_path: &str, tag: &str, spec: &ImageSpec) -> PushedImage {
    let client = images::client_for(registry.host(), registry.credentials());
    let repo = images::repository(registry.host(), repo_path);
    images::push_image(&client, &repo, tag, &spec.build())
}

/// Fetches `repo_path:tag` with `client` and checks it against skopeo and the pushed image:
/// manifest bytes, digest, media type, config and every layer.
fn assert_pulls_exactly(
    client: &Client,
    registry: &Registry,
    repo_path: &str,
    tag: &str,
    pushed: &PushedImage,
    oracle_login: Option<&Credentials>,
) {
    let repo = images::repository(registry.host(), repo_path);
    let fetched = client
        .fetch_manifest_at(&repo, &reference(tag), &ManifestSelection::default())
        .unwrap_or_else(|err| {
            panic!(
                "fetch {repo_path}:{tag}: {err}\nregistry log:\n{}",
                registry.log()
            )
        });
    let oracle = skopeo::inspect_raw(registry.host(), &format!("{repo_path}:{tag}"), oracle_login);
    assert_eq!(
        fetched.bytes(),
        oracle.as_slice(),
        "manifest bytes differ from skopeo's"
    );
    assert_eq!(fetched.bytes(), pushed.image.manifest.bytes.as_slice());
    assert_eq!(fetched.digest().to_string(), pushed.manifest_digest);
    assert_eq!(
        fetched.media_type().as_str(),
        pushed.image.format.manifest_type()
    );
    let manifest = fetched.image_manifest().expect("an image manifest");
    let config = images::fetch_config(client, &repo, manifest.config());
    assert_eq!(config.bytes(), pushed.image.config.bytes.as_slice());
    assert_eq!(
        config.config().architecture().to_string(),
        pushed.image.platform.1
    );
    for layer in &pushed.image.layers {
        assert_eq!(
            read_blob(client, &repo, layer).unwrap(),
            layer.bytes,
            "layer {}",
            layer.digest
        );
    }
}

// ---------------------------------------------------------------------------------------------
// auth

#[test]
fn anonymous_registry_serves_oci_and_docker_images_exactly() {
    let registry = Registry::anonymous();
    let client = images::client_for(registry.host(), None);
    for format in [Format::Oci, Format::Docker] {
        let repo = unique_repo("anon/app");
        let pushed = push_new(registry, &repo, "v1", &ImageSpec::new(format));
        assert_pulls_exactly(&client, registry, &repo, "v1", &pushed, None);
    }
}

/// Pushes a `format` image under `prefix` to `registry` and pulls it logged in as its user.
fn assert_serves_a_logged_in_client(registry: &Registry, prefix: &str, format: Format) {
    let login = registry.credentials();
    let repo = unique_repo(prefix);
    let pushed = push_new(registry, &repo, "v1", &ImageSpec::new(format));
    let client = images::client_for(registry.host(), login);
    assert_pulls_exactly(&client, registry, &repo, "v1", &pushed, login);
}

#[test]
fn basic_auth_registry_serves_a_logged_in_client() {
    assert_serves_a_logged_in_client(Registry::basic_auth(), "basic/app", Format::Docker);
}

#[test]
fn token_auth_registry_serves_a_logged_in_client() {
    assert_serves_a_logged_in_client(Registry::token_auth(), "team/app", Format::Oci);
}

#[test]
fn token_auth_lets_anonymous_clients_pull_public_repositories() {
    let registry = Registry::token_auth();
    let repo = unique_repo("public/tool");
    let pushed = push_new(registry, &repo, "v1", &ImageSpec::new(Format::Oci));
    let client = images::client_for(registry.host(), None);
    assert_pulls_exactly(&client, registry, &repo, "v1", &pushed, None);
    let anonymous_requests: Vec<_> = registry
        .token_issuer()
        .unwrap()
        .requests()
        .into_iter()
        .filter(|r| r.user.is_none() && r.scopes.iter().any(|s| s.contains(&repo)))
        .collect();
    assert!(
        !anonymous_requests.is_empty(),
        "the pull went through the token flow"
    );
    assert!(
        anonymous_requests
            .iter()
            .all(|r| r.scopes == [format!("repository:{repo}:pull")])
    );
}

#[test]
fn token_is_fetched_once_per_repository_and_reused() {
    let registry = Registry::token_auth();
    let repo_path = unique_repo("team/cached");
    let pushed = push_new(
        registry,
        &repo_path,
        "v1",
        &ImageSpec::new(Format::Oci).layers(3),
    );
    let client = images::client_for(registry.host(), registry.credentials());
    let repo = images::repository(registry.host(), &repo_path);
    client
        .fetch_manifest_at(&repo, &reference("v1"), &ManifestSelection::default())
        .unwrap();
    for layer in &pushed.image.layers {
        read_blob(&client, &repo, layer).unwrap();
    }
    let pull_tokens = registry
        .token_issuer()
        .unwrap()
        .requests()
        .into_iter()
        .filter(|r| r.scopes == [format!("repository:{repo_path}:pull")])
        .count();
    assert_eq!(
        pull_tokens, 1,
        "one pull token serves the manifest and all three layers"
    );
}

/// Every way of being refused: (registry, repository prefix, login to use, expected kind).
#[test]
fn refused_pulls_fail_with_unauthorized_naming_registry_and_repository() {
    let wrong = Credentials {
        username: "ducc-tester".into(),
        password: "wrong-password".into(),
    };
    let stranger = Credentials {
        username: "stranger".into(),
        password: "whatever".into(),
    };
    let cases: [(&str, &Registry, &str, Option<&Credentials>); 5] = [
        (
            "basic, no login",
            Registry::basic_auth(),
            "basic/closed",
            None,
        ),
        (
            "basic, wrong password",
            Registry::basic_auth(),
            "basic/closed",
            Some(&wrong),
        ),
        (
            "token, anonymous outside public/",
            Registry::token_auth(),
            "team/closed",
            None,
        ),
        (
            "token, wrong password",
            Registry::token_auth(),
            "team/closed",
            Some(&wrong),
        ),
        (
            "token, unknown user on public/",
            Registry::token_auth(),
            "public/closed",
            Some(&stranger),
        ),
    ];
    for (case, registry, prefix, login) in cases {
        let repo_path = unique_repo(prefix);
        push_new(
            registry,
            &repo_path,
            "v1",
            &ImageSpec::new(Format::Oci).layers(1),
        );
        let client = images::client_for(registry.host(), login);
        let repo = images::repository(registry.host(), &repo_path);
        let err = client
            .fetch_manifest_at(&repo, &reference("v1"), &ManifestSelection::default())
            .unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::Unauthorized),
            "{case}: {err}"
        );
        assert_eq!(err.registry(), Some(registry.host()), "{case}");
        assert_eq!(err.repository(), Some(repo_path.as_str()), "{case}");
        let message = err.to_string();
        assert!(
            message.contains(registry.host()) && message.contains(&repo_path),
            "{case}: {message}"
        );
        assert!(
            !message.contains("wrong-password") && !message.contains("whatever"),
            "{case}: {message}"
        );
    }
}

#[test]
fn anonymous_push_to_token_registry_is_refused() {
    let registry = Registry::token_auth();
    let client = images::client_for(registry.host(), None);
    let repo = images::repository(registry.host(), &unique_repo("public/nopush"));
    let blob = Blob::new(images::random_bytes(100));
    let err = client
        .push_blob(
            &repo,
            &BlobDigest::parse(&blob.digest).unwrap(),
            100,
            &mut blob.bytes.as_slice(),
        )
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Unauthorized | ErrorKind::Denied),
        "{err}"
    );
}

/// A blob GET redirected to another host (here `localhost` on another port, in front of a
/// registry holding the same blob) must not carry the first registry's credentials.
#[test]
fn credentials_are_not_forwarded_across_a_redirect_to_another_host() {
    let basic = Registry::basic_auth();
    let other = Registry::anonymous();
    let repo_path = unique_repo("redirect/app");
    let layer = Blob::new(images::random_bytes(5000));
    for registry in [basic, other] {
        let client = images::client_for(registry.host(), registry.credentials());
        images::push_blob(
            &client,
            &images::repository(registry.host(), &repo_path),
            &layer,
        );
    }
    let storage = FaultProxy::start(other.host(), vec![]);
    let storage_port = storage.host().rsplit(':').next().unwrap();
    let front = FaultProxy::start(
        basic.host(),
        // Only authenticated requests are redirected, so the client meets the Basic challenge first.
        vec![
            Rule::new(Action::Redirect(format!("http://localhost:{storage_port}")))
                .method("GET")
                .path_contains("/blobs/")
                .with_header("Authorization"),
        ],
    );
    let client = images::client_for(front.host(), basic.credentials());
    let repo = images::repository(front.host(), &repo_path);
    assert_eq!(read_blob(&client, &repo, &layer).unwrap(), layer.bytes);

    let redirected: Vec<_> = front
        .requests()
        .into_iter()
        .filter(|r| r.path().contains("/blobs/"))
        .collect();
    assert!(
        redirected
            .iter()
            .any(|r| r.header("Authorization").is_some()),
        "the registry itself got credentials"
    );
    let followed = storage.requests();
    assert!(
        followed.iter().any(|r| r.path().contains(&layer.digest)),
        "the redirect was followed"
    );
    for request in followed {
        assert_eq!(
            request.header("Authorization"),
            None,
            "credentials leaked to {}",
            request.target
        );
    }
}

// ---------------------------------------------------------------------------------------------
// platform choice

struct MultiArch {
    repo: Repository,
    repo_path: String,
    amd64: PushedImage,
    arm64: PushedImage,
    index: Blob,
}

fn push_multi_arch(format: Format) -> MultiArch {
    let registry = Registry::anonymous();
    let client = images::client_for(registry.host(), None);
    let repo_path = unique_repo("multi/app");
    let repo = images::repository(registry.host(), &repo_path);
    let amd64 = images::push_image(
        &client,
        &repo,
        "amd64",
        &ImageSpec::new(format).layers(1).build(),
    );
    let arm64 = images::push_image(
        &client,
        &repo,
        "arm64",
        &ImageSpec::new(format)
            .platform("linux", "arm64", Some("v8"))
            .layers(1)
            .build(),
    );
    let index = images::build_index(
        format,
        &[amd64.clone(), arm64.clone()],
        Some(&amd64),
        &client,
        &repo,
    );
    images::push_manifest(&client, &repo, "multi", format.index_type(), &index.bytes);
    MultiArch {
        repo,
        repo_path,
        amd64,
        arm64,
        index,
    }
}

#[test]
fn index_resolves_to_the_asked_platform_and_skips_attestations() {
    let registry = Registry::anonymous();
    let client = images::client_for(registry.host(), None);
    for format in [Format::Oci, Format::Docker] {
        let multi = push_multi_arch(format);
        // (platform asked for, expected child)
        let cases = [
            ("linux/arm64", &multi.arm64),
            ("linux/arm64/v8", &multi.arm64),
            ("linux/aarch64", &multi.arm64),
            ("linux/amd64", &multi.amd64),
        ];
        for (wanted, child) in cases {
            let fetched = client
                .fetch_manifest_at(&multi.repo, &reference("multi"), &platform(wanted))
                .unwrap();
            let oracle = skopeo::inspect_raw(
                registry.host(),
                &format!("{}@{}", multi.repo_path, child.manifest_digest),
                None,
            );
            assert_eq!(fetched.bytes(), oracle.as_slice(), "{format:?} {wanted}");
            assert_eq!(
                fetched.digest().to_string(),
                child.manifest_digest,
                "{format:?} {wanted}"
            );
            assert_eq!(
                fetched.index_digest().map(ToString::to_string),
                Some(multi.index.digest.clone())
            );
            assert_eq!(
                fetched.platform().unwrap().architecture(),
                child.image.platform.1
            );
        }
        let default = client
            .fetch_manifest_at(
                &multi.repo,
                &reference("multi"),
                &ManifestSelection::default(),
            )
            .unwrap();
        assert_eq!(
            default.digest().to_string(),
            multi.amd64.manifest_digest,
            "default is linux/amd64"
        );

        let whole = client
            .fetch_manifest_at(&multi.repo, &reference("multi"), &ManifestSelection::Index)
            .unwrap();
        let oracle =
            skopeo::inspect_raw(registry.host(), &format!("{}:multi", multi.repo_path), None);
        assert_eq!(whole.bytes(), oracle.as_slice());
        assert_eq!(whole.bytes(), multi.index.bytes.as_slice());
        assert_eq!(whole.media_type().as_str(), format.index_type());
        assert_eq!(
            whole.index().unwrap().manifests().len(),
            3,
            "both platforms and the attestation"
        );
    }
}

#[test]
fn missing_platform_error_lists_the_available_ones() {
    let multi = push_multi_arch(Format::Oci);
    let client = images::client_for(Registry::anonymous().host(), None);
    let err = client
        .fetch_manifest_at(&multi.repo, &reference("multi"), &platform("linux/s390x"))
        .unwrap_err();
    match err.kind() {
        ErrorKind::PlatformNotFound { wanted, available } => {
            assert_eq!(wanted, "linux/s390x");
            let mut available = available.clone();
            available.sort();
            assert_eq!(
                available,
                ["linux/amd64", "linux/arm64/v8"],
                "attestation entries are not platforms"
            );
        }
        other => panic!("expected PlatformNotFound, got {other:?}: {err}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("linux/s390x")
            && message.contains("linux/arm64/v8")
            && message.contains(&multi.repo_path),
        "{message}"
    );
    assert!(!message.contains("unknown/unknown"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// tags

#[test]
fn tag_list_follows_pagination() {
    let registry = Registry::anonymous();
    let client = images::client_for(registry.host(), None);
    let repo_path = unique_repo("tags/app");
    let repo = images::repository(registry.host(), &repo_path);
    let image = images::push_image(
        &client,
        &repo,
        "t000",
        &ImageSpec::new(Format::Oci).layers(1).build(),
    );
    let mut expected: Vec<String> = (0..120).map(|i| format!("t{i:03}")).collect();
    for tag in &expected[1..] {
        images::push_manifest(
            &client,
            &repo,
            tag,
            Format::Oci.manifest_type(),
            &image.image.manifest.bytes,
        );
    }
    expected.sort();

    // Registry 2.8 ignores `n` for tag lists; the proxy pages the real list as distribution 3 does.
    let proxy = FaultProxy::start(
        registry.host(),
        vec![Rule::new(Action::PaginateTags(50)).path_contains("/tags/list")],
    );
    let proxied = images::client_for(proxy.host(), None);
    let proxied_repo = images::repository(proxy.host(), &repo_path);
    let mut tags = proxied.list_tags_paged(&proxied_repo, 50).unwrap();
    tags.sort();
    assert_eq!(tags, expected);
    assert_eq!(
        proxy.count("GET", "/tags/list"),
        3,
        "120 tags in pages of 50"
    );
    let pages: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.path().ends_with("/tags/list"))
        .map(|r| r.target)
        .collect();
    assert!(
        pages[1].contains("last=t049") && pages[2].contains("last=t099"),
        "{pages:?}"
    );

    // Without `n`, pages of the server's choosing (at most 50 here) are followed too.
    proxy.clear_requests();
    let mut all = proxied.list_tags(&proxied_repo).unwrap();
    all.sort();
    assert_eq!(all, expected);
    assert_eq!(proxy.count("GET", "/tags/list"), 3);
    // And the registry's own single page.
    let mut direct = client.list_tags(&repo).unwrap();
    direct.sort();
    assert_eq!(direct, expected);
}

// ---------------------------------------------------------------------------------------------
// digests and refused documents

#[test]
fn corrupted_stored_blob_fails_with_digest_mismatch() {
    let registry = Registry::anonymous();
    let repo_path = unique_repo("corrupt/blob");
    let pushed = push_new(
        registry,
        &repo_path,
        "v1",
        &ImageSpec::new(Format::Oci).layers(1),
    );
    let layer = &pushed.image.layers[0];
    let mut tampered = layer.bytes.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x55;
    std::fs::write(registry.stored_blob_path(&layer.digest), &tampered).unwrap();

    let client = images::client_for(registry.host(), None);
    let repo = images::repository(registry.host(), &repo_path);
    let err = read_blob(&client, &repo, layer).unwrap_err();
    match registry_error(&err).kind() {
        ErrorKind::DigestMismatch { expected, actual } => {
            assert_eq!(expected, &layer.digest);
            assert_eq!(actual, &images::sha256(&tampered));
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
}

#[test]
fn corrupted_stored_manifest_fails_with_digest_mismatch_by_tag_and_by_digest() {
    let registry = Registry::anonymous();
    let repo_path = unique_repo("corrupt/manifest");
    let pushed = push_new(
        registry,
        &repo_path,
        "v1",
        &ImageSpec::new(Format::Oci).layers(1),
    );
    // Same document, other bytes: compact instead of pretty JSON.
    let document: serde_json::Value = serde_json::from_slice(&pushed.image.manifest.bytes).unwrap();
    let tampered = serde_json::to_vec(&document).unwrap();
    std::fs::write(
        registry.stored_blob_path(&pushed.manifest_digest),
        &tampered,
    )
    .unwrap();

    let client = images::client_for(registry.host(), None);
    let repo = images::repository(registry.host(), &repo_path);
    for text in ["v1".to_owned(), pushed.manifest_digest.clone()] {
        let err = client
            .fetch_manifest_at(&repo, &reference(&text), &ManifestSelection::default())
            .unwrap_err();
        match err.kind() {
            ErrorKind::DigestMismatch { expected, actual } => {
                assert_eq!(expected, &pushed.manifest_digest, "{text}");
                assert_eq!(actual, &images::sha256(&tampered), "{text}");
            }
            other => panic!("{text}: expected DigestMismatch, got {other:?}: {err}"),
        }
    }
}

/// Documents served in place of a manifest that must be refused, with the expected error.
#[test]
fn unsupported_and_ambiguous_manifests_are_refused() {
    let schema1 = serde_json::json!({
        "schemaVersion": 1, "name": "old/app", "tag": "v1", "architecture": "amd64",
        "fsLayers": [{"blobSum": images::sha256(b"layer")}],
        "history": [{"v1Compatibility": "{\"id\":\"x\"}"}],
    });
    let ambiguous = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": images::sha256(b"{}"), "size": 2},
        "layers": [],
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": images::sha256(b"x"), "size": 1}],
    });
    type Expect = fn(&ErrorKind) -> bool;
    let unknown =
        serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.example.thing+json"});
    let cases: [(&str, &str, &serde_json::Value, Expect); 4] = [
        (
            "schema1 signed",
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            &schema1,
            |k| matches!(k, ErrorKind::UnsupportedMediaType { media_type } if media_type.contains("manifest.v1+prettyjws")),
        ),
        (
            "schema1 unsigned",
            "application/vnd.docker.distribution.manifest.v1+json",
            &schema1,
            |k| matches!(k, ErrorKind::UnsupportedMediaType { media_type } if media_type.contains("manifest.v1+json")),
        ),
        (
            "unknown type",
            "application/vnd.example.thing+json",
            &unknown,
            |k| matches!(k, ErrorKind::UnsupportedMediaType { media_type } if media_type == "application/vnd.example.thing+json"),
        ),
        (
            "layers and manifests (CVE-2021-41190)",
            "application/vnd.oci.image.manifest.v1+json",
            &ambiguous,
            |k| matches!(k, ErrorKind::AmbiguousManifest),
        ),
    ];
    let registry = Registry::anonymous();
    for (case, media_type, document, expected) in cases {
        let body = serde_json::to_vec(document).unwrap();
        let proxy = FaultProxy::start(
            registry.host(),
            vec![
                Rule::new(Action::Respond {
                    status: 200,
                    headers: vec![
                        ("Content-Type".into(), media_type.into()),
                        ("Docker-Content-Digest".into(), images::sha256(&body)),
                    ],
                    body,
                })
                .path_contains("/manifests/"),
            ],
        );
        let client = images::client_for(proxy.host(), None);
        let repo = images::repository(proxy.host(), "old/app");
        let err = client
            .fetch_manifest_at(&repo, &reference("v1"), &ManifestSelection::default())
            .unwrap_err();
        assert!(expected(err.kind()), "{case}: got {:?}: {err}", err.kind());
        assert_eq!(
            proxy.count("GET", "/manifests/"),
            1,
            "{case}: a refused document is not fetched again"
        );
        if !case.starts_with("layers") {
            assert!(err.to_string().contains(media_type), "{case}: {err}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// faults

/// A registry image behind a fresh fault proxy with `rules`, and a quick-retrying client.
struct Faulty {
    proxy: FaultProxy,
    client: Client,
    repo: Repository,
    pushed: PushedImage,
}

fn faulty(spec: ImageSpec, rules: Vec<Rule>) -> Faulty {
    let registry = Registry::anonymous();
    let repo_path = unique_repo("faults/app");
    let pushed = push_new(registry, &repo_path, "v1", &spec);
    let proxy = FaultProxy::start(registry.host(), rules);
    let client = images::client_for(proxy.host(), None);
    let repo = images::repository(proxy.host(), &repo_path);
    Faulty {
        proxy,
        client,
        repo,
        pushed,
    }
}

/// A one-layer image of 64 KiB behind a fault proxy whose only rule applies `action` to the GETs
/// of that layer (`times` times, or always).
fn faulty_layer(action: Action, times: Option<u64>) -> Faulty {
    let spec = ImageSpec::new(Format::Oci)
        .layers(1)
        .layer_file_size(64 << 10);
    let f = faulty(spec, vec![]);
    let mut rule = Rule::new(action)
        .method("GET")
        .path_contains(&f.pushed.image.layers[0].digest);
    if let Some(times) = times {
        rule = rule.times(times);
    }
    f.proxy.set_rules(vec![rule]);
    f
}

#[test]
fn manifest_fetch_waits_for_retry_after_then_succeeds() {
    let f = faulty(
        ImageSpec::new(Format::Oci).layers(1),
        vec![
            Rule::new(Action::too_many_requests("1"))
                .path_contains("/manifests/")
                .times(1),
        ],
    );
    let started = Instant::now();
    let fetched = f
        .client
        .fetch_manifest_at(&f.repo, &reference("v1"), &ManifestSelection::default())
        .unwrap();
    assert_eq!(fetched.bytes(), f.pushed.image.manifest.bytes.as_slice());
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "Retry-After: 1 was not honoured"
    );
    assert_eq!(f.proxy.count("GET", "/manifests/"), 2);
}

#[test]
fn transient_faults_are_retried_until_success() {
    // (case, rule for the first layer's GETs, expected GETs of that layer)
    let cases: [(&str, Action, u64, usize); 4] = [
        ("503 twice", Action::status(503), 2, 3),
        (
            "429 with Retry-After 0",
            Action::too_many_requests("0"),
            2,
            3,
        ),
        ("reset before answering", Action::Reset, 1, 2),
        ("reset mid-body", Action::ResetAfterBody(20_000), 1, 2),
    ];
    for (case, action, times, gets) in cases {
        let f = faulty_layer(action, Some(times));
        let layer = &f.pushed.image.layers[0];
        let bytes =
            read_blob(&f.client, &f.repo, layer).unwrap_or_else(|err| panic!("{case}: {err}"));
        assert_eq!(bytes, layer.bytes, "{case}");
        assert_eq!(f.proxy.count("GET", &layer.digest), gets, "{case}");
    }
}

#[test]
fn cut_or_corrupted_manifest_responses_are_fetched_again() {
    // (case, action on the first manifest GET)
    let cases = [
        ("body cut short", Action::TruncateBody(50)),
        ("reset mid-body", Action::ResetAfterBody(50)),
        ("reset before answering", Action::Reset),
    ];
    for (case, action) in cases {
        let f = faulty(
            ImageSpec::new(Format::Docker).layers(1),
            vec![Rule::new(action).path_contains("/manifests/").times(1)],
        );
        let fetched = f
            .client
            .fetch_manifest_at(&f.repo, &reference("v1"), &ManifestSelection::default())
            .unwrap_or_else(|err| panic!("{case}: {err}"));
        assert_eq!(
            fetched.bytes(),
            f.pushed.image.manifest.bytes.as_slice(),
            "{case}"
        );
        assert_eq!(f.proxy.count("GET", "/manifests/"), 2, "{case}");
    }
}

#[test]
fn truncated_blob_is_resumed_with_a_range_request() {
    let f = faulty_layer(Action::TruncateBody(10_000), Some(1));
    let layer = &f.pushed.image.layers[0];
    let digest = BlobDigest::parse(&layer.digest).unwrap();
    let mut reader = f
        .client
        .open_blob(&f.repo, &digest, Some(layer.bytes.len() as u64))
        .unwrap();
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes, layer.bytes);
    assert_eq!(reader.resumes(), 1);
    let gets: Vec<_> = f
        .proxy
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path().contains(&layer.digest))
        .collect();
    assert_eq!(gets.len(), 2);
    assert_eq!(
        gets[1].header("Range"),
        Some("bytes=10000-"),
        "the second GET resumes where the first ended"
    );
}

#[test]
fn blob_that_never_arrives_whole_or_intact_is_never_returned() {
    // (case, action on every GET of the layer)
    let cases = [
        ("always truncated", Action::TruncateBody(1000)),
        ("always cut by a reset", Action::ResetAfterBody(1000)),
        ("always corrupted", Action::CorruptByte(5000)),
    ];
    for (case, action) in cases {
        let f = faulty_layer(action, None);
        let layer = &f.pushed.image.layers[0];
        let result = read_blob(&f.client, &f.repo, layer);
        let err = result.expect_err(case);
        let kind = registry_error(&err).kind();
        if case == "always corrupted" {
            assert!(
                matches!(kind, ErrorKind::DigestMismatch { .. }),
                "{case}: {kind:?}"
            );
        } else {
            assert!(
                matches!(
                    kind,
                    ErrorKind::Transport | ErrorKind::SizeMismatch { .. } | ErrorKind::Timeout
                ),
                "{case}: {kind:?}"
            );
        }
        // Bounded: default policy allows 5 resumes and 4 retries; far fewer than 20 attempts.
        assert!(
            f.proxy.count("GET", &layer.digest) < 20,
            "{case}: unbounded retries"
        );
    }
}

#[test]
fn persistent_errors_fail_after_the_retry_bound() {
    type Expect = fn(&ErrorKind) -> bool;
    // (case, action on every manifest GET, expected kind, expected manifest GETs)
    let cases: [(&str, Action, Expect, usize); 4] = [
        (
            "503 forever",
            Action::status(503),
            |k| matches!(k, ErrorKind::Server),
            3,
        ),
        (
            "429 forever",
            Action::too_many_requests("0"),
            |k| matches!(k, ErrorKind::RateLimited),
            3,
        ),
        (
            "429 asking for an hour",
            Action::too_many_requests("3600"),
            |k| {
                matches!(
                    k,
                    ErrorKind::RetryAfterTooLong {
                        asked_secs: 3600,
                        limit_secs: 300
                    }
                )
            },
            1,
        ),
        (
            "404 is not retried",
            Action::status(404),
            |k| matches!(k, ErrorKind::NotFound),
            1,
        ),
    ];
    for (case, action, expected, gets) in cases {
        let f = faulty(
            ImageSpec::new(Format::Oci).layers(1),
            vec![Rule::new(action).path_contains("/manifests/")],
        );
        let policy = images::quick_retries().max_retries(2);
        let client = images::client_with(f.proxy.host(), None, policy);
        let started = Instant::now();
        let err = client
            .fetch_manifest_at(&f.repo, &reference("v1"), &ManifestSelection::default())
            .unwrap_err();
        assert!(expected(err.kind()), "{case}: {:?}: {err}", err.kind());
        assert_eq!(f.proxy.count("GET", "/manifests/"), gets, "{case}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{case}: did not give up in time"
        );
        let request = err
            .request()
            .unwrap_or_else(|| panic!("{case}: error names no request: {err}"));
        assert_eq!(request.method, "GET", "{case}");
        assert!(
            request.url.contains("/manifests/v1"),
            "{case}: {}",
            request.url
        );
        assert!(err.to_string().contains(f.repo.path()), "{case}: {err}");
    }
}

#[test]
fn stalled_response_times_out_and_is_retried() {
    let f = faulty(
        ImageSpec::new(Format::Oci).layers(1),
        vec![
            Rule::new(Action::Stall(Duration::from_secs(120)))
                .path_contains("/manifests/")
                .times(1),
        ],
    );
    let client = Client::new(
        ClientOptions::new()
            .read_timeout(Duration::from_millis(500))
            .retry(images::quick_retries()),
    );
    let fetched = client
        .fetch_manifest_at(&f.repo, &reference("v1"), &ManifestSelection::default())
        .unwrap();
    assert_eq!(fetched.bytes(), f.pushed.image.manifest.bytes.as_slice());
    assert_eq!(f.proxy.count("GET", "/manifests/"), 2);
}

// ---------------------------------------------------------------------------------------------
// push

#[test]
fn pushing_a_present_blob_sends_only_a_head() {
    let registry = Registry::basic_auth();
    let proxy = FaultProxy::start(registry.host(), vec![]);
    let client = images::client_for(proxy.host(), registry.credentials());
    let repo = images::repository(proxy.host(), &unique_repo("push/app"));
    let blob = Blob::new(images::random_bytes(3000));
    let digest = BlobDigest::parse(&blob.digest).unwrap();

    assert_eq!(
        client
            .push_blob(&repo, &digest, 3000, &mut blob.bytes.as_slice())
            .unwrap(),
        BlobPush::Uploaded
    );
    assert!(proxy.count("POST", "/blobs/uploads/") >= 1);
    assert!(client.blob_exists(&repo, &digest).unwrap());

    proxy.clear_requests();
    assert_eq!(
        client
            .push_blob(&repo, &digest, 3000, &mut blob.bytes.as_slice())
            .unwrap(),
        BlobPush::AlreadyPresent
    );
    let sent: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.header("Authorization").is_some() || r.method != "GET")
        .collect();
    assert!(
        sent.iter().all(|r| r.method == "HEAD"),
        "only HEAD after the blob exists: {:?}",
        sent.iter()
            .map(|r| (&r.method, &r.target))
            .collect::<Vec<_>>()
    );
    assert!(
        sent.iter()
            .any(|r| r.method == "HEAD" && r.path().ends_with(&blob.digest))
    );
}

#[test]
fn large_blob_is_pushed_in_chunks_and_reads_back() {
    let registry = Registry::anonymous();
    let proxy = FaultProxy::start(registry.host(), vec![]);
    let client = Client::new(
        ClientOptions::new()
            .monolithic_upload_limit(32 << 10)
            .upload_chunk_size(16 << 10)
            .retry(images::quick_retries()),
    );
    let repo = images::repository(proxy.host(), &unique_repo("push/chunked"));
    let blob = Blob::new(images::random_bytes(100 << 10));
    let digest = BlobDigest::parse(&blob.digest).unwrap();
    assert_eq!(
        client
            .push_blob(&repo, &digest, 100 << 10, &mut blob.bytes.as_slice())
            .unwrap(),
        BlobPush::Uploaded
    );
    assert!(
        proxy.count("PATCH", "/blobs/uploads/") >= 2,
        "a 100 KiB blob in 16 KiB chunks"
    );
    assert_eq!(read_blob(&client, &repo, &blob).unwrap(), blob.bytes);
}

#[test]
fn push_of_data_that_is_not_the_blob_is_refused_and_leaves_nothing() {
    let registry = Registry::anonymous();
    let client = images::client_for(registry.host(), None);
    let repo = images::repository(registry.host(), &unique_repo("push/wrong"));
    let claimed = Blob::new(images::random_bytes(2000));
    let digest = BlobDigest::parse(&claimed.digest).unwrap();
    // (case, size announced, data actually given)
    let other = images::random_bytes(2000);
    let cases: [(&str, u64, &[u8]); 2] = [
        ("same size, other bytes", 2000, &other),
        ("shorter", 2000, &claimed.bytes[..1000]),
    ];
    for (case, size, data) in cases {
        let err = client
            .push_blob(&repo, &digest, size, &mut &data[..])
            .unwrap_err();
        assert!(
            matches!(
                err.kind(),
                ErrorKind::DigestMismatch { .. } | ErrorKind::SizeMismatch { .. }
            ),
            "{case}: {err}"
        );
        assert!(
            !client.blob_exists(&repo, &digest).unwrap(),
            "{case}: the registry holds the blob"
        );
    }
}

#[test]
fn pushed_manifest_is_what_skopeo_reads_and_a_missing_blob_is_refused() {
    let registry = Registry::anonymous();
    let client = images::client_for(registry.host(), None);
    let repo_path = unique_repo("push/manifest");
    let repo = images::repository(registry.host(), &repo_path);
    let image = ImageSpec::new(Format::Docker).build();
    // Config and layers not pushed yet: the registry refuses the manifest.
    let err = client
        .push_manifest(
            &repo,
            &images::tag("v1"),
            Format::Docker.manifest_type(),
            &image.manifest.bytes,
        )
        .unwrap_err();
    assert!(
        err.registry_codes()
            .iter()
            .any(|c| c.code == "MANIFEST_BLOB_UNKNOWN"),
        "{err}"
    );
    let pushed = images::push_image(&client, &repo, "v1", &image);
    assert_eq!(
        skopeo::inspect_raw(registry.host(), &format!("{repo_path}:v1"), None),
        pushed.image.manifest.bytes
    );
}
