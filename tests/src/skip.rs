//! What a test does when this machine cannot run it (not root, no overlay or tmpfs mounts, no
//! xattrs): it fails, so a green run means the test ran. With `DUCC_ALLOW_SKIP=1` (for a
//! developer's unprivileged machine; CI runs as root and never sets it) it prints
//! `skipped: REASON` on its own line instead, and the caller returns.

/// The variable that turns "cannot run here" from a failure into a skip.
pub const ALLOW_SKIP_VAR: &str = "DUCC_ALLOW_SKIP";

/// Fails the calling test with `reason`, unless `DUCC_ALLOW_SKIP=1`: then prints
/// `skipped: REASON` on its own line and returns, and the caller returns too:
///
/// ```no_run
/// if !ducc_oci::is_root() {
///     ducc_tests::skip_or_fail("creating device files needs root");
///     return;
/// }
/// ```
///
/// # Panics
/// Unless `DUCC_ALLOW_SKIP=1` is set: that is the point.
pub fn skip_or_fail(reason: &str) {
    if skip_allowed() {
        // Its own line: libtest has already printed `test NAME ... ` without a newline.
        eprintln!("\nskipped: {reason}");
    } else {
        panic!(
            "this test cannot run here: {reason} (set {ALLOW_SKIP_VAR}=1 to skip it instead of \
             failing; CI runs everything)"
        );
    }
}

/// Whether `DUCC_ALLOW_SKIP=1` is set.
pub fn skip_allowed() -> bool {
    std::env::var(ALLOW_SKIP_VAR).is_ok_and(|v| v == "1")
}

/// Whether the process runs as root; when not, [`skip_or_fail`] with `why` (the caller returns
/// on `false`).
pub fn require_root(why: &str) -> bool {
    if ducc_oci::is_root() {
        return true;
    }
    skip_or_fail(&format!("not running as root, and {why}"));
    false
}
