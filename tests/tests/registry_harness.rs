//! Tests of the test harness itself: the registry flavours, the token issuer and the fault
//! proxy behave as the registry client tests assume.
// Helpers here are test code too; clippy.toml only exempts #[test] functions.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ducc_tests::http;
use ducc_tests::token_issuer::{ISSUER, SERVICE};
use ducc_tests::{Action, FaultProxy, Flavour, Registry, Rule};

const TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn each_flavour_answers_v2_with_its_challenge() {
    let cases: [(&Registry, u16, Option<&str>); 3] = [
        (Registry::anonymous(), 200, None),
        (
            Registry::basic_auth(),
            401,
            Some("Basic realm=\"ducc-test-registry\""),
        ),
        (
            Registry::token_auth(),
            401,
            Some("Bearer realm=\"http://127.0.0.1:"),
        ),
    ];
    for (registry, status, challenge) in cases {
        let (head, _) = http::get(registry.host(), "/v2/", &[], TIMEOUT).unwrap();
        assert_eq!(head.status(), status, "{:?}", registry.flavour());
        match challenge {
            None => assert_eq!(head.header("WWW-Authenticate"), None),
            Some(prefix) => {
                let value = head.header("WWW-Authenticate").unwrap();
                assert!(
                    value.starts_with(prefix),
                    "{:?}: {value}",
                    registry.flavour()
                );
            }
        }
    }
    let token_challenge = http::get(Registry::token_auth().host(), "/v2/", &[], TIMEOUT)
        .unwrap()
        .0;
    assert!(
        token_challenge
            .header("WWW-Authenticate")
            .unwrap()
            .contains(&format!("service=\"{SERVICE}\""))
    );
}

#[test]
fn private_registry_is_gone_after_drop() {
    let registry = Registry::start(Flavour::Anonymous);
    let host = registry.host().to_owned();
    let pid = registry.process_id().unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    let blob_dir = registry
        .stored_blob_path("sha256:00")
        .parent()
        .unwrap()
        .to_owned();
    drop(registry);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "registry process {pid} survived"
    );
    assert!(
        http::get_status(&host, "/v2/", TIMEOUT).is_err(),
        "registry still answers on {host}"
    );
    let root = blob_dir
        .ancestors()
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("ducc-test-registry-"))
        })
        .unwrap();
    assert!(
        !root.exists(),
        "registry directory {} survived",
        root.display()
    );
}

/// The claims of a JWT, decoded without checking the signature (the registry checks that).
fn claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn token_request(
    registry: &Registry,
    scope: &str,
    login: Option<(&str, &str)>,
) -> (u16, serde_json::Value) {
    let realm = registry.token_issuer().unwrap().realm();
    let issuer_host = realm
        .trim_start_matches("http://")
        .trim_end_matches("/token");
    let target = format!(
        "/token?service={SERVICE}&scope={}",
        scope.replace(':', "%3A").replace('/', "%2F")
    );
    let authorization = login
        .map(|(user, password)| format!("Basic {}", STANDARD.encode(format!("{user}:{password}"))));
    let headers: Vec<(&str, &str)> = authorization
        .iter()
        .map(|a| ("Authorization", a.as_str()))
        .collect();
    let (head, body) = http::get(issuer_host, &target, &headers, TIMEOUT).unwrap();
    (
        head.status(),
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

#[test]
fn token_issuer_grants_by_user_and_public_prefix() {
    let registry = Registry::token_auth();
    let user = registry.credentials().unwrap();
    let right = Some((user.username.as_str(), user.password.as_str()));
    let wrong = Some((user.username.as_str(), "not-the-password"));
    type Login<'a> = Option<(&'a str, &'a str)>;
    // (scope, login, expected status, expected granted actions)
    let cases: [(&str, Login, u16, Option<&[&str]>); 6] = [
        (
            "repository:team/app:pull,push",
            right,
            200,
            Some(&["pull", "push"]),
        ),
        ("repository:team/app:pull", None, 200, None),
        ("repository:public/app:pull", None, 200, Some(&["pull"])),
        (
            "repository:public/app:pull,push",
            None,
            200,
            Some(&["pull"]),
        ),
        ("repository:public/app:pull", wrong, 401, None),
        ("registry:catalog:*", right, 200, None),
    ];
    for (scope, login, status, granted) in cases {
        let (got_status, body) = token_request(registry, scope, login);
        assert_eq!(got_status, status, "{scope} with {login:?}");
        if status != 200 {
            continue;
        }
        assert_eq!(body["token"], body["access_token"]);
        assert_eq!(body["expires_in"], 300);
        let claims = claims(body["token"].as_str().unwrap());
        assert_eq!(claims["iss"], ISSUER);
        assert_eq!(claims["aud"], SERVICE);
        assert!(claims["exp"].as_u64().unwrap() > claims["nbf"].as_u64().unwrap());
        let access = claims["access"].as_array().unwrap();
        match granted {
            None => assert!(access.is_empty(), "{scope}: {access:?}"),
            Some(actions) => {
                assert_eq!(access.len(), 1, "{scope}: {access:?}");
                assert_eq!(access[0]["actions"], serde_json::json!(actions), "{scope}");
            }
        }
    }
}

#[test]
fn registry_accepts_issued_tokens_and_refuses_forged_ones() {
    let registry = Registry::token_auth();
    let user = registry.credentials().unwrap();
    let (_, body) = token_request(
        registry,
        "repository:team/accepts:pull",
        Some((&user.username, &user.password)),
    );
    let token = body["token"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {token}");
    let (head, _) = http::get(
        registry.host(),
        "/v2/",
        &[("Authorization", &bearer)],
        TIMEOUT,
    )
    .unwrap();
    assert_eq!(head.status(), 200, "registry log:\n{}", registry.log());

    // Same header and claims, but the signature of other content: the registry must refuse.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut forged_claims = claims(&token);
    forged_claims["sub"] = serde_json::json!("mallory");
    parts[1] = URL_SAFE_NO_PAD.encode(forged_claims.to_string());
    let forged = format!("Bearer {}", parts.join("."));
    let (head, _) = http::get(
        registry.host(),
        "/v2/",
        &[("Authorization", &forged)],
        TIMEOUT,
    )
    .unwrap();
    assert_eq!(head.status(), 401);
}

#[test]
fn fault_proxy_applies_a_rule_to_the_first_n_matches_only() {
    let registry = Registry::anonymous();
    let proxy = FaultProxy::start(
        registry.host(),
        vec![
            Rule::new(Action::status(503))
                .path_contains("/v2/")
                .times(2),
        ],
    );
    let statuses: Vec<u16> = (0..3)
        .map(|_| http::get_status(proxy.host(), "/v2/", TIMEOUT).unwrap())
        .collect();
    assert_eq!(statuses, [503, 503, 200]);
    let requests = proxy.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[2].action, Action::Forward);
    assert_eq!(proxy.count("GET", "/v2/"), 3);
}

#[test]
fn fault_proxy_cuts_corrupts_and_resets_bodies() {
    let registry = Registry::anonymous();
    let (_, clean) = http::get(registry.host(), "/v2/", &[], TIMEOUT).unwrap();
    assert_eq!(clean, b"{}");
    let proxy = FaultProxy::start(registry.host(), vec![]);

    proxy.set_rules(vec![Rule::new(Action::TruncateBody(1))]);
    let (head, body) = http::get(proxy.host(), "/v2/", &[], TIMEOUT).unwrap();
    assert_eq!(
        (head.header("Content-Length"), body.as_slice()),
        (Some("2"), &b"{"[..])
    );

    proxy.set_rules(vec![Rule::new(Action::CorruptByte(1))]);
    let (_, body) = http::get(proxy.host(), "/v2/", &[], TIMEOUT).unwrap();
    assert_eq!(body, [b'{', !b'}']);

    proxy.set_rules(vec![Rule::new(Action::Reset)]);
    let err = http::get(proxy.host(), "/v2/", &[], TIMEOUT).unwrap_err();
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
        ),
        "{err:?}"
    );
}

#[test]
fn fault_proxy_answers_429_and_redirects_on_its_own() {
    let proxy = FaultProxy::start(
        Registry::anonymous().host(),
        vec![
            Rule::new(Action::too_many_requests("7"))
                .method("GET")
                .path_contains("/limited"),
            Rule::new(Action::Redirect("http://localhost:1/elsewhere".into()))
                .path_contains("/moved"),
        ],
    );
    let (head, _) = http::get(proxy.host(), "/limited", &[], TIMEOUT).unwrap();
    assert_eq!(
        (head.status(), head.header("Retry-After")),
        (429, Some("7"))
    );
    let (head, _) = http::get(proxy.host(), "/moved?x=1", &[], TIMEOUT).unwrap();
    assert_eq!(
        (head.status(), head.header("Location")),
        (307, Some("http://localhost:1/elsewhere/moved?x=1"))
    );
}

#[test]
fn fault_proxy_drop_ends_a_stalled_connection() {
    let proxy = FaultProxy::start(
        Registry::anonymous().host(),
        vec![Rule::new(Action::Stall(Duration::from_secs(600)))],
    );
    let host = proxy.host().to_owned();
    let client =
        std::thread::spawn(move || http::get(&host, "/v2/", &[], Duration::from_secs(600)));
    while proxy.requests().is_empty() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let started = Instant::now();
    drop(proxy);
    // Bounded: the stalled handler is woken and joined, far sooner than the stall.
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(
        client.join().unwrap().is_err(),
        "a stalled request must not get an answer"
    );
}

#[test]
#[should_panic(expected = "install it with `apt-get install no-such-package`")]
fn missing_tool_fails_naming_the_package_to_install() {
    ducc_tests::require_tool("ducc-no-such-tool", "no-such-package");
}

#[test]
#[should_panic(
    expected = "docker-registry did not start; its log:\nfake registry refuses to serve"
)]
fn registry_that_cannot_start_fails_with_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("fake-registry");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho fake registry refuses to serve\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    Registry::start_with_binary(Flavour::Anonymous, &fake);
}

#[test]
fn a_test_that_cannot_run_fails_unless_skipping_is_allowed() {
    let outcome = std::panic::catch_unwind(|| ducc_tests::skip_or_fail("no such capability"));
    // CI never sets DUCC_ALLOW_SKIP, so there this is a failure, as it must be.
    assert_eq!(outcome.is_err(), !ducc_tests::skip::skip_allowed());
}

#[test]
fn the_other_host_is_another_loopback_address() {
    let registry = Registry::anonymous();
    let other = ducc_tests::hostile::other_host(registry.host(), Vec::new());
    assert!(other.host().starts_with("127.0.0.2:"), "{}", other.host());
    let status = ducc_tests::http::get_status(other.host(), "/v2/", Duration::from_secs(5))
        .expect("the other host forwards to the registry");
    assert_eq!(status, 200);
    assert_eq!(other.count("GET", "/v2/"), 1);
}
