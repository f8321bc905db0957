//! Test harness for ducc-rs end-to-end tests: starts real servers on 127.0.0.1 and finds the
//! binaries under test.
//!
//! - [`Registry`]: the CNCF distribution registry in three flavours (anonymous, htpasswd Basic,
//!   token auth with the in-process [`TokenIssuer`]), shared per test process or private.
//! - [`FaultProxy`]: an HTTP-aware TCP proxy that injects resets, truncation, stalls and error
//!   answers, and records every request it saw.
//! - [`skopeo`]: `skopeo inspect --raw`, the independent oracle for registry content.
//! - [`ducc_bin`]: the `ducc` binary under test.
//! - [`skip_or_fail`], [`require_root`]: a test that cannot run here fails, unless
//!   `DUCC_ALLOW_SKIP=1`; the one skip rule.
//! - [`tree::Tree`]: the one tree snapshot, to query or to compare with another.
//! - [`wait`]: waiting for an event (a status, a process state) with a deadline, never a sleep.
//! - [`signer::TestSigner`]: cosign-format signatures (`.sig` tag, bundle referrers) by a test key.
//! - [`hostile`]: a second loopback host (127.0.0.2) and a TLS front, to check that credentials
//!   stay on their registry.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

pub mod fault_proxy;
pub mod fixtures;
pub mod hostile;
pub mod http;
pub mod images;
pub mod overlay;
pub mod registry;
pub mod screen;
pub mod signer;
pub mod skip;
pub mod skopeo;
pub mod token_issuer;
pub mod tools;
pub mod tree;
pub mod wait;

pub use fault_proxy::{Action, FaultProxy, RecordedRequest, Rule};
pub use registry::{Flavour, Registry, random_hex, unique_repo};
pub use skip::{require_root, skip_or_fail};
pub use token_issuer::TokenIssuer;
pub use tools::require_tool;

/// A user name and password for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    // Keeps passwords out of assertion messages, so tests that check "no secret in the output"
    // cannot be fooled by the test's own printing.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Path of the `ducc` binary under test: `$DUCC_BIN` when set, else the one cargo builds next to
/// this test binary (`target/<profile>/ducc`).
///
/// Under nextest (which `cargo xtask ci` uses) the first call runs `cargo build -p ducc-cli` for
/// the same profile, so the binary is never stale; nextest holds no cargo lock while tests run.
/// Under plain `cargo test`, which does hold it, the binary must have been built beforehand.
///
/// # Panics
/// When the binary is missing or cannot be built.
pub fn ducc_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("DUCC_BIN") {
            return PathBuf::from(bin);
        }
        let mut dir = std::env::current_exe().unwrap();
        // target/<profile>/deps/<test-binary>
        dir.pop();
        if dir.ends_with("deps") {
            dir.pop();
        }
        let bin = dir.join("ducc");
        if std::env::var_os("NEXTEST_RUN_ID").is_some() {
            let profile = dir
                .file_name()
                .and_then(|p| p.to_str())
                .unwrap_or("debug")
                .to_owned();
            let target_dir = dir.parent().unwrap().to_owned();
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut build = std::process::Command::new(cargo);
            build
                .args(["build", "--quiet", "-p", "ducc-cli", "--target-dir"])
                .arg(&target_dir);
            if profile == "release" {
                build.arg("--release");
            } else if profile != "debug" {
                build.args(["--profile", &profile]);
            }
            let status = build.status().expect("cargo runs");
            assert!(status.success(), "cargo build -p ducc-cli failed");
        }
        assert!(
            bin.is_file(),
            "{} is missing: run `cargo build -p ducc-cli` first",
            bin.display()
        );
        bin
    })
    .clone()
}

/// A `Command` for the `ducc` binary with a clean credential environment: no `DUCC_*`
/// variables and an empty docker config directory (`dir`), so a developer's own logins never
/// reach the test.
///
/// # Panics
/// As [`ducc_bin`], when the binary is missing.
pub fn ducc_command(docker_config_dir: &std::path::Path) -> std::process::Command {
    let bin = ducc_bin();
    let mut command = std::process::Command::new(bin);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("DUCC_")
            || key.to_string_lossy().starts_with("DOCKER2CVMFS_")
        {
            command.env_remove(key);
        }
    }
    command.env("DOCKER_CONFIG", docker_config_dir);
    command.env("HOME", docker_config_dir);
    command
}
