//! Test harness for ducc-rs end-to-end tests: starts real servers (the CNCF distribution registry)
//! on 127.0.0.1 and finds the binaries under test.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

/// Path of the `ducc` binary built by cargo for this workspace.
///
/// Integration tests in this crate run with the workspace's target directory; the binary is
/// built by `cargo build -p ducc-cli` (which `cargo nextest run --workspace` does).
pub fn ducc_bin() -> PathBuf {
    let mut dir = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test-binary>
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("ducc")
}
