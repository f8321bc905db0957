//! `ducc completions bash|zsh|fish` and `ducc man` (issue 27): generated from the clap
//! definitions, accepted by the shell and by `man`, and naming every command.

// Test code: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Stdio};

/// `ducc ARGS` stdout, after checking that it succeeded with nothing on stderr.
fn ducc_stdout(args: &[&str]) -> String {
    let out = Command::new(ducc_tests::ducc_bin())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ducc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "ducc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The commands every completion script and the man page must name.
const COMMANDS: &[&str] = &[
    "convert",
    "loop",
    "convert-single-image",
    "serve",
    "delete-image",
    "prune",
    "garbage-collection",
    "list",
    "completions",
    "man",
];

#[test]
fn completions_are_generated_for_bash_zsh_and_fish_and_bash_accepts_its_script() {
    for shell in ["bash", "zsh", "fish"] {
        let script = ducc_stdout(&["completions", shell]);
        for command in COMMANDS {
            assert!(script.contains(command), "{shell}: {command} missing");
        }
        assert!(
            script.contains("log-format"),
            "{shell}: --log-format missing"
        );
    }
    let bash = ducc_tests::require_tool("bash", "bash");
    let script = ducc_stdout(&["completions", "bash"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ducc.bash");
    std::fs::write(&path, &script).unwrap();
    let out = Command::new(&bash).arg("-n").arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Sourced, it registers the completion function for `ducc`.
    let out = Command::new(&bash)
        .arg("-c")
        .arg(format!("source '{}' && complete -p ducc", path.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ducc"));
}

#[test]
fn man_page_renders_with_man_and_names_every_command() {
    let man = ducc_tests::require_tool("man", "man-db");
    let page = ducc_stdout(&["man"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ducc.1");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = Command::new(man)
        .arg("-l")
        .arg(&path)
        .env("MANWIDTH", "100")
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "man -l: {stderr}");
    assert!(stderr.trim().is_empty(), "man -l warned: {stderr}");
    let shown = without_overstrike(&String::from_utf8_lossy(&out.stdout));
    assert!(shown.contains("ducc - Unpack container images"), "{shown}");
    for command in COMMANDS {
        assert!(
            shown.contains(&format!("COMMAND: {}", command.to_uppercase())),
            "{command} missing:\n{shown}"
        );
    }
    assert!(shown.contains("--log-format"), "{shown}");
}

/// `text` without nroff's overstrike (`X\x08X` bold, `_\x08X` underline): the visible characters.
fn without_overstrike(text: &str) -> String {
    let mut out: Vec<char> = Vec::with_capacity(text.len());
    for c in text.chars() {
        if c == '\x08' {
            out.pop();
        } else {
            out.push(c);
        }
    }
    out.into_iter().collect()
}
