//! What an operator sees in ducc's log lines (issue 27): no escape codes in a pipe, a file or the
//! journal; colour on a terminal unless `NO_COLOR` is set; `--log-format json` writes one JSON
//! object per line that carries the image, its step and the error chain.
//!
//! Every run converts an image whose tag the real registry does not have: its manifest step
//! fails at once (no retry), which logs one error line for that image.

// Test code: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};

use ducc_tests::tools::run_on_terminal;
use ducc_tests::{Registry, unique_repo};

/// A `convert-single-image` of a missing tag into a fresh local repository; gives the command
/// and the image name it logs.
fn failing_conversion(dir: &std::path::Path, extra: &[&str]) -> (Command, String) {
    let registry = Registry::anonymous();
    let image = registry.image(&format!("{}:missing", unique_repo("logs")));
    let mut command = ducc_tests::ducc_command(dir);
    command.args(extra).args([
        "convert-single-image",
        &image,
        "unpacked.example.org",
        "--skip-thin-image",
        "--no-progress",
        "--root",
    ]);
    command.arg(dir.join("cvmfs"));
    command.env_remove("NO_COLOR").env_remove("RUST_LOG");
    (command, image)
}

/// Runs `command` with stderr piped; gives its exit code and stderr.
fn piped(mut command: Command) -> (Option<i32>, String) {
    let out = command.stdin(Stdio::null()).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `command` on a pseudo-terminal (`TERM=xterm`) and gives everything it wrote there.
fn on_terminal(command: &Command) -> String {
    run_on_terminal(command, "xterm", None).1
}

/// The log line that reports the failed image.
fn error_line<'a>(text: &'a str, image: &str) -> &'a str {
    text.lines()
        .find(|l| l.contains("ERROR") && l.contains(image))
        .unwrap_or_else(|| panic!("no ERROR line for {image} in:\n{text}"))
}

#[test]
fn log_lines_into_a_pipe_carry_no_escape_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (command, image) = failing_conversion(dir.path(), &[]);
    let (code, stderr) = piped(command);
    assert_eq!(code, Some(1), "{stderr}");
    let line = error_line(&stderr, &image);
    assert!(
        line.contains(&format!("ERROR {image}: manifest failed: ")),
        "{line}"
    );
    assert!(
        !stderr.contains('\x1b'),
        "escape codes in a pipe: {stderr:?}"
    );
}

#[test]
fn log_lines_on_a_terminal_are_coloured_unless_no_color_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let (command, image) = failing_conversion(dir.path(), &[]);
    let shown = on_terminal(&command);
    let line = error_line(&shown, &image);
    assert!(line.contains("\x1b[31mERROR\x1b[0m"), "{line:?}");

    let (mut command, image) = failing_conversion(dir.path(), &[]);
    command.env("NO_COLOR", "1");
    let shown = on_terminal(&command);
    error_line(&shown, &image);
    assert!(
        !shown.contains('\x1b'),
        "escape codes on a terminal with NO_COLOR: {shown:?}"
    );
}

#[test]
fn json_log_lines_parse_and_carry_the_image_step_and_error_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (command, image) = failing_conversion(dir.path(), &["--log-format", "json"]);
    let (code, stderr) = piped(command);
    assert_eq!(code, Some(1), "{stderr}");
    let logged: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let failure = logged
        .iter()
        .find(|l| l["level"] == "ERROR")
        .unwrap_or_else(|| panic!("no ERROR object in:\n{stderr}"));
    assert_eq!(failure["image"], image.as_str(), "{failure}");
    assert_eq!(failure["step"], "manifest", "{failure}");
    assert_eq!(failure["message"], "manifest failed", "{failure}");
    let chain = failure["error"].as_array().unwrap();
    assert!(chain.len() >= 2, "{failure}");
    assert!(
        chain[0]
            .as_str()
            .unwrap()
            .starts_with("cannot fetch the manifest of"),
        "{failure}"
    );
    let time = failure["time"].as_str().unwrap();
    assert!(
        time.len() == 20 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "{time}"
    );
    // Every line of stderr is JSON, the run's summary too.
    let summary = logged.last().unwrap();
    assert_eq!(logged.len(), stderr.lines().count(), "{stderr}");
    assert_eq!(
        summary["message"], "0 converted, 0 up to date, 1 failed",
        "{summary}"
    );
    assert_eq!(summary["failed"][0]["image"], image.as_str(), "{summary}");
    assert_eq!(summary["failed"][0]["step"], "manifest", "{summary}");
}

#[test]
fn a_setup_error_with_json_logs_is_one_json_line_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = ducc_tests::ducc_command(dir.path());
    command.args([
        "--log-format",
        "json",
        "convert-single-image",
        "ubuntu:22.04",
        "unpacked.example.org",
        "--root",
    ]);
    command.arg(dir.path().join("cvmfs"));
    let (code, stderr) = piped(command);
    assert_eq!(code, Some(2), "{stderr}");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert_eq!(lines[0]["level"], "ERROR");
    assert!(
        lines[0]["message"]
            .as_str()
            .unwrap()
            .contains("registry.hub.docker.com/library/ubuntu:22.04"),
        "{stderr}"
    );
}
