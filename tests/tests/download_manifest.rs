//! `ducc download-manifest` end to end against the real registry: stdout must be byte-identical
//! to `skopeo inspect --raw`, for every manifest kind and every auth path.
// Helpers here are test code too; clippy.toml only exempts #[test] functions.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Output;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use ducc_tests::images::{self, Format, ImageSpec, PushedImage};
use ducc_tests::{Credentials, Registry, ducc_command, skopeo, unique_repo};

/// How the child process gets its login.
#[derive(Clone, Copy, Debug)]
enum Login {
    None,
    /// `DUCC_AUTH_REGISTRIES` with `DUCC_<R>_IDENT/_USER/_PASS`.
    DuccEnv,
}

fn run_ducc(
    registry: &Registry,
    login: Login,
    args: &[&str],
    extra_env: &[(&str, &str)],
) -> Output {
    let docker_config = tempfile::tempdir().unwrap();
    run_ducc_with_config(docker_config.path(), registry, login, args, extra_env)
}

fn run_ducc_with_config(
    docker_config: &Path,
    registry: &Registry,
    login: Login,
    args: &[&str],
    extra_env: &[(&str, &str)],
) -> Output {
    let mut command = ducc_command(docker_config);
    command.arg("download-manifest").args(args);
    if let (Login::DuccEnv, Some(credentials)) = (login, registry.credentials()) {
        command
            .env("DUCC_AUTH_REGISTRIES", "TESTREG")
            .env("DUCC_TESTREG_IDENT", registry.host())
            .env("DUCC_TESTREG_USER", &credentials.username)
            .env("DUCC_TESTREG_PASS", &credentials.password);
    }
    for (key, value) in extra_env {
        command.env(key, value);
    }
    command.output().expect("run ducc")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn push(registry: &Registry, repo_path: &str, tag: &str, format: Format) -> PushedImage {
    let client = images::client_for(registry.host(), registry.credentials());
    let repo = images::repository(registry.host(), repo_path);
    images::push_image(
        &client,
        &repo,
        tag,
        &ImageSpec::new(format).layers(1).build(),
    )
}

fn assert_prints(output: &Output, expected: &[u8], digest: &str, media_type: &str, case: &str) {
    assert!(
        output.status.success(),
        "{case}: ducc failed ({}): {}",
        output.status,
        stderr(output)
    );
    assert!(
        output.stdout == expected,
        "{case}: stdout is not the registry's bytes"
    );
    let err = stderr(output);
    assert!(
        err.contains(digest),
        "{case}: digest {digest} missing from stderr: {err}"
    );
    assert!(
        err.contains(media_type),
        "{case}: media type missing from stderr: {err}"
    );
}

#[test]
fn single_manifests_match_skopeo_for_every_format_and_auth_path() {
    // (case, registry, repository prefix, format, how ducc logs in)
    let cases: [(&str, &Registry, &str, Format, Login); 6] = [
        (
            "oci, anonymous",
            Registry::anonymous(),
            "dm/oci",
            Format::Oci,
            Login::None,
        ),
        (
            "docker v2s2, anonymous",
            Registry::anonymous(),
            "dm/docker",
            Format::Docker,
            Login::None,
        ),
        (
            "oci, basic auth",
            Registry::basic_auth(),
            "dm/basic",
            Format::Oci,
            Login::DuccEnv,
        ),
        (
            "docker v2s2, basic auth",
            Registry::basic_auth(),
            "dm/basic",
            Format::Docker,
            Login::DuccEnv,
        ),
        (
            "oci, token auth",
            Registry::token_auth(),
            "team/dm",
            Format::Oci,
            Login::DuccEnv,
        ),
        (
            "docker v2s2, anonymous token pull",
            Registry::token_auth(),
            "public/dm",
            Format::Docker,
            Login::None,
        ),
    ];
    for (case, registry, prefix, format, login) in cases {
        let repo_path = unique_repo(prefix);
        let pushed = push(registry, &repo_path, "v1", format);
        let oracle = skopeo::inspect_raw(
            registry.host(),
            &format!("{repo_path}:v1"),
            registry.credentials(),
        );
        let output = run_ducc(
            registry,
            login,
            &[&registry.image(&format!("{repo_path}:v1"))],
            &[],
        );
        assert_prints(
            &output,
            &oracle,
            &pushed.manifest_digest,
            format.manifest_type(),
            case,
        );
        // By digest too.
        let by_digest = registry.image(&format!("{repo_path}@{}", pushed.manifest_digest));
        let output = run_ducc(registry, login, &[&by_digest], &[]);
        assert_prints(
            &output,
            &oracle,
            &pushed.manifest_digest,
            format.manifest_type(),
            case,
        );
    }
}

#[test]
fn index_prints_the_chosen_platform_or_the_index_itself() {
    for (registry, prefix, login) in [
        (Registry::anonymous(), "dm/multi", Login::None),
        (Registry::token_auth(), "team/dm-multi", Login::DuccEnv),
    ] {
        let client = images::client_for(registry.host(), registry.credentials());
        let repo_path = unique_repo(prefix);
        let repo = images::repository(registry.host(), &repo_path);
        let spec = ImageSpec::new(Format::Oci).layers(1);
        let amd64 = images::push_image(&client, &repo, "amd64", &spec.build());
        let arm64 = images::push_image(
            &client,
            &repo,
            "arm64",
            &spec.clone().platform("linux", "arm64", Some("v8")).build(),
        );
        let index = images::build_index(
            Format::Oci,
            &[amd64.clone(), arm64.clone()],
            Some(&amd64),
            &client,
            &repo,
        );
        images::push_manifest(
            &client,
            &repo,
            "multi",
            Format::Oci.index_type(),
            &index.bytes,
        );
        let image = registry.image(&format!("{repo_path}:multi"));
        let login_for_oracle = registry.credentials();

        let arm64_oracle = skopeo::inspect_raw(
            registry.host(),
            &format!("{repo_path}@{}", arm64.manifest_digest),
            login_for_oracle,
        );
        let output = run_ducc(registry, login, &[&image, "--platform", "linux/arm64"], &[]);
        assert_prints(
            &output,
            &arm64_oracle,
            &arm64.manifest_digest,
            Format::Oci.manifest_type(),
            "--platform linux/arm64",
        );

        let amd64_oracle = skopeo::inspect_raw(
            registry.host(),
            &format!("{repo_path}@{}", amd64.manifest_digest),
            login_for_oracle,
        );
        let output = run_ducc(registry, login, &[&image], &[]);
        assert_prints(
            &output,
            &amd64_oracle,
            &amd64.manifest_digest,
            Format::Oci.manifest_type(),
            "default platform",
        );

        let index_oracle = skopeo::inspect_raw(
            registry.host(),
            &format!("{repo_path}:multi"),
            login_for_oracle,
        );
        let output = run_ducc(registry, login, &[&image, "--index"], &[]);
        assert_prints(
            &output,
            &index_oracle,
            &index.digest,
            Format::Oci.index_type(),
            "--index",
        );

        let output = run_ducc(registry, login, &[&image, "--platform", "linux/s390x"], &[]);
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        assert!(output.stdout.is_empty());
        let err = stderr(&output);
        assert!(
            err.contains("linux/s390x")
                && err.contains("linux/amd64")
                && err.contains("linux/arm64/v8"),
            "{err}"
        );
    }
}

#[test]
fn refused_login_fails_naming_the_image_and_never_prints_the_password() {
    let registry = Registry::basic_auth();
    let repo_path = unique_repo("dm/closed");
    push(registry, &repo_path, "v1", Format::Oci);
    let image = registry.image(&format!("{repo_path}:v1"));
    let wrong = Credentials {
        username: "ducc-tester".into(),
        password: "wrong-secret-9f3a".into(),
    };
    let wrong_env = [
        ("DUCC_AUTH_REGISTRIES", "TESTREG"),
        ("DUCC_TESTREG_IDENT", registry.host()),
        ("DUCC_TESTREG_USER", wrong.username.as_str()),
        ("DUCC_TESTREG_PASS", wrong.password.as_str()),
        ("RUST_LOG", "trace"),
    ];
    for (case, login, env) in [
        ("no login", Login::None, &[][..]),
        ("wrong password", Login::None, &wrong_env[..]),
    ] {
        let output = run_ducc(registry, login, &["-v", &image], env);
        assert_eq!(output.status.code(), Some(1), "{case}: {}", stderr(&output));
        assert!(output.stdout.is_empty(), "{case}");
        let err = stderr(&output);
        assert!(
            err.contains(&repo_path) && err.contains(registry.host()),
            "{case}: {err}"
        );
        assert!(
            !err.contains(&wrong.password),
            "{case}: password printed: {err}"
        );
    }
    // A successful run with full logging does not print the password either.
    let right = registry.credentials().unwrap();
    let output = run_ducc(
        registry,
        Login::DuccEnv,
        &["-v", &image],
        &[("RUST_LOG", "trace")],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        !stderr(&output).contains(&right.password),
        "password printed in the log"
    );
}

#[test]
fn bad_image_names_exit_2_with_a_message() {
    let registry = Registry::anonymous();
    for bad in [
        "ubuntu".to_owned(),
        "ubuntu:22.04".to_owned(),
        registry.image("UPPER/case:v1"),
        registry.image("dm/glob:v*"),
        registry.image("dm/app@sha256:nothex"),
    ] {
        let output = run_ducc(registry, Login::None, &[&bad], &[]);
        assert_eq!(output.status.code(), Some(2), "{bad}: {}", stderr(&output));
        assert!(output.stdout.is_empty(), "{bad}");
        assert!(!stderr(&output).trim().is_empty(), "{bad}: no message");
    }
}

/// Writes `docker-credential-{name}` into `dir`: it answers `get` for `host` only.
fn credential_helper(dir: &Path, name: &str, host: &str, credentials: &Credentials) {
    let script = format!(
        "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread -r server\n\
         [ \"$server\" = \"{host}\" ] || {{ echo \"credentials not found in native keychain\"; exit 1; }}\n\
         printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{secret}\"}}' \"$server\"\n",
        user = credentials.username,
        secret = credentials.password,
    );
    let path = dir.join(format!("docker-credential-{name}"));
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

#[test]
fn docker_config_logins_are_used() {
    let registry = Registry::basic_auth();
    let login = registry.credentials().unwrap();
    let host = registry.host();
    let basic = STANDARD.encode(format!("{}:{}", login.username, login.password));
    // (case, config.json)
    let cases = [
        (
            "auths with auth",
            serde_json::json!({"auths": {host: {"auth": basic}}}),
        ),
        (
            "auths with username and password",
            serde_json::json!({"auths": {host: {"username": login.username, "password": login.password}}}),
        ),
        (
            "credHelpers",
            serde_json::json!({"credHelpers": {host: "ducctest"}}),
        ),
        ("credsStore", serde_json::json!({"credsStore": "ducctest"})),
    ];
    let repo_path = unique_repo("dm/dockercfg");
    let pushed = push(registry, &repo_path, "v1", Format::Oci);
    let image = registry.image(&format!("{repo_path}:v1"));
    for (case, config) in cases {
        let docker_config = tempfile::tempdir().unwrap();
        std::fs::write(docker_config.path().join("config.json"), config.to_string()).unwrap();
        credential_helper(docker_config.path(), "ducctest", host, login);
        let path = format!(
            "{}:{}",
            docker_config.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let output = run_ducc_with_config(
            docker_config.path(),
            registry,
            Login::None,
            &[&image],
            &[("PATH", &path)],
        );
        assert_prints(
            &output,
            &pushed.image.manifest.bytes,
            &pushed.manifest_digest,
            Format::Oci.manifest_type(),
            case,
        );
        assert!(
            !stderr(&output).contains(&login.password),
            "{case}: password printed"
        );
    }
}
