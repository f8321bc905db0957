//! `ducc check-image-syntax`, `ducc check` and `ducc version`, run as a user would.

// Test code: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

fn ducc(args: &[&str]) -> Output {
    Command::new(ducc_tests::ducc_bin())
        .args(args)
        .output()
        .expect("ducc runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn check_image_syntax_prints_one_field_per_line() {
    let out = ducc(&["check-image-syntax", "http://localhost:5000/a/b:1.0"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for line in [
        "name: http://localhost:5000/a/b:1.0",
        "user: ",
        "scheme: http",
        "registry: localhost:5000",
        "repository: a/b",
        "tag: 1.0",
        "digest: ",
        "is_thin: false",
        "simple_name: localhost:5000/a/b:1.0",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing {line:?} in\n{stdout}"
        );
    }
}

#[test]
fn check_image_syntax_machine_friendly_prints_two_csv_lines() {
    let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let image = format!("quay.io/a/b:1@{digest}");
    let out = ducc(&["check-image-syntax", "-z", &image]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "name,user,scheme,registry,repository,tag,digest,is_thin\n\
             https://quay.io/a/b:1@{digest},,https,quay.io,a/b,1,{digest},false\n"
        )
    );
    let long = ducc(&["check-image-syntax", "--machine-friendly", &image]);
    assert_eq!(long.stdout, out.stdout);
}

#[test]
fn check_image_syntax_refuses_bare_names_with_a_suggestion() {
    let out = ducc(&["check-image-syntax", "ubuntu:22.04"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("invalid image name `ubuntu:22.04`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("registry.hub.docker.com/library/ubuntu:22.04"),
        "{stderr}"
    );
}

#[test]
fn check_image_syntax_refuses_each_kind_of_bad_name() {
    let sha = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let cases = [
        ("quay.io/a/b", "no tag or digest"),
        ("quay.io/A/b:1", "must be lowercase"),
        ("quay.io/a:.bad", "tag `.bad` is invalid"),
        ("quay.io/a@sha256:abc", "has 64 hex digits"),
        ("quay.io/a@md5:abc", "unsupported digest algorithm `md5`"),
        ("ftp://quay.io/a:1", "unsupported scheme `ftp`"),
        ("localhost:99999/a:1", "`99999` is not a valid port"),
        (
            &*format!("quay.io/a:1*@sha256:{sha}"),
            "tag glob cannot be combined with a digest",
        ),
    ];
    for (image, needle) in cases {
        let out = ducc(&["check-image-syntax", image]);
        assert_eq!(out.status.code(), Some(2), "{image}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(needle), "{image}: {stderr}");
    }
}

#[test]
fn check_prints_each_input_with_its_thin_image() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "w.yaml",
        "version: 1\nuser: alice\ncvmfs_repo: unpacked.cern.ch/sub\n\
         output_format: '$(scheme)://registry.example.org/thin/$(image)'\n\
         input:\n  - 'https://registry.hub.docker.com/library/fedora:latest'\n\
         \x20 - 'http://localhost:5000/atlas/analysisbase:21.2.1*'\n\
         ignore_errors: ['https://registry.hub.docker.com/flaky/*']\n",
    );
    let out = ducc(&["check", &path]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("unpacked.cern.ch/sub (2 inputs"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "https://registry.hub.docker.com/library/fedora:latest -> https://registry.example.org/thin/library/fedora:latest\n"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("http://localhost:5000/atlas/analysisbase:21.2.1* -> http://registry.example.org/thin/atlas/analysisbase:21.2.1*  (tag glob"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ignore errors of: https://registry.hub.docker.com/flaky/*"),
        "{stdout}"
    );
}

#[test]
fn check_reports_errors_as_file_line_column() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "version.yaml",
            "version: 3\ncvmfs_repo: r\ninput: [quay.io/a:1]\n",
            ":1:10: unsupported wish list version 3",
        ),
        (
            "unknown.yaml",
            "version: 1\ncvmfs_repo: r\ninput: [quay.io/a:1]\nusr: bob\n",
            ":4:1: unknown field `usr`",
        ),
        (
            "type.yaml",
            "version: 1\ncvmfs_repo: r\ninput: {a: b}\n",
            ":3:8: input: invalid type: map",
        ),
        (
            "norepo.yaml",
            "version: 1\ninput: [quay.io/a:1]\n",
            ":1:1: missing field `cvmfs_repo`",
        ),
        (
            "noinput.yaml",
            "version: 1\ncvmfs_repo: r\n",
            ":1:1: missing field `input`",
        ),
        (
            "empty.yaml",
            "version: 1\ncvmfs_repo: r\ninput: []\n",
            ":3:8: the input list is empty",
        ),
        (
            "var.yaml",
            "version: 1\ncvmfs_repo: r\noutput_format: 'x.io/$(name):1'\ninput: [quay.io/a:1]\n",
            ":3:16: invalid output_format: unknown variable `$(name)`",
        ),
        (
            "image.yaml",
            "version: 1\ncvmfs_repo: r\ninput:\n  - quay.io/a:1\n  - ubuntu\n",
            ":5:5: invalid image name `ubuntu`",
        ),
    ];
    for (name, content, expected) in cases {
        let path = write(dir.path(), name, content);
        let out = ducc(&["check", &path]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.starts_with(&format!("{path}{expected}")),
            "{name}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{name}");
    }
}

#[test]
fn check_of_a_missing_file_names_it() {
    let out = ducc(&["check", "/nonexistent/wish.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("/nonexistent/wish.yaml: cannot read the wish list: "),
        "{stderr}"
    );
}

#[test]
fn version_prints_the_version() {
    let out = ducc(&["version"]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout),
        format!("ducc {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let out = ducc(&["check-image-syntax", "--bogus", "quay.io/a:1"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn help_documents_exit_codes() {
    let out = ducc(&["--help"]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("Exit status:") && stdout.contains("2  usage, wish-list or setup error"),
        "{stdout}"
    );
}
