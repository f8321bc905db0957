//! `cargo xtask ci` and `cargo xtask deps`.

use std::process::Command;

use anyhow::{Context, bail};

/// Debian packages the tests use, with a program that shows each is installed.
const APT_PACKAGES: &[(&str, &str)] = &[
    ("docker-registry", "docker-registry"),
    ("apache2-utils", "htpasswd"),
    ("skopeo", "skopeo"),
    ("umoci", "umoci"),
    ("debootstrap", "debootstrap"),
    ("openssl", "openssl"),
    ("attr", "getfattr"),
    // The podman store tests (issue 16); runc because crun refuses hybrid cgroup hierarchies.
    ("podman", "podman"),
    ("runc", "runc"),
    // `ducc man` rendered by `man -l` (issue 27); `script` for the log-colour test on a pty.
    ("man-db", "man"),
    ("bsdutils", "script"),
];

/// Installs what is missing, then runs fmt check, clippy and the whole test suite.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    install_deps()?;
    cargo(&["fmt", "--all", "--", "--check"])
        .context("formatting differs: run `cargo fmt --all`")?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // The end-to-end tests run the `ducc` binary; building it first keeps their own freshness
    // check a no-op.
    cargo(&["build", "--workspace", "--bins"])?;
    let mut test = vec!["nextest", "run", "--workspace", "--no-fail-fast"];
    test.extend(args.iter().map(String::as_str));
    cargo(&test)?;
    cargo(&["test", "--workspace", "--doc"])?;
    Ok(())
}

/// Installs the Debian packages and cargo tools the tests need, where they are missing.
pub fn install_deps() -> anyhow::Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .filter(|(_, program)| !on_path(program))
        .map(|(package, _)| *package)
        .collect();
    if !missing.is_empty() {
        eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
        let sudo = if ducc_oci::is_root() {
            vec![]
        } else {
            vec!["sudo"]
        };
        run_cmd(&sudo, "apt-get", &["update", "-qq"])?;
        let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
        install.extend(&missing);
        run_cmd(&sudo, "apt-get", &install)?;
    }
    if Command::new("cargo")
        .args(["nextest", "--version"])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        eprintln!("xtask: installing cargo-nextest");
        cargo(&["install", "--locked", "cargo-nextest"])?;
    }
    Ok(())
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths)
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .any(|dir| dir.join(program).is_file())
    })
}

fn run_cmd(prefix: &[&str], program: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut cmd = match prefix.first() {
        Some(first) => {
            let mut c = Command::new(first);
            c.args(&prefix[1..]).arg(program);
            c
        }
        None => Command::new(program),
    };
    cmd.args(args);
    if program == "apt-get" {
        cmd.env("DEBIAN_FRONTEND", "noninteractive");
    }
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed with {status}", args.join(" "));
    }
    Ok(())
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    run_cmd(&[], &cargo, args)
}
