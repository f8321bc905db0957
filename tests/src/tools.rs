//! Finding the external programs the tests drive, with a clear message when one is missing.

use std::path::{Path, PathBuf};

/// Full path of `program` on `PATH` (or the path itself when it contains a `/`).
///
/// # Panics
/// When the program is not installed: the message names the Debian package that provides it,
/// so a missing tool fails the test loudly instead of letting it pass without running.
pub fn require_tool(program: &str, debian_package: &str) -> PathBuf {
    find_tool(program).unwrap_or_else(|| {
        panic!(
            "`{program}` is not installed but this test needs it: install it with \
             `apt-get install {debian_package}` (CI does)"
        )
    })
}

/// Full path of `program` on `PATH`, if installed.
pub fn find_tool(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Path::new(program).is_file().then(|| PathBuf::from(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
