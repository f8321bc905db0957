//! The one answer to "does this process run as root?", for the whole workspace.
//!
//! It lives here, beside the error-chain printer, because ducc-oci is the one crate every other
//! ducc crate (and the test harness and xtask) depends on: the unpacker's automatic privileges,
//! the local publisher's whiteout check, the tests that need root and `cargo xtask` all ask the
//! same question the same way.

/// Whether this process runs with an effective uid of 0: what the kernel checks for `chown`,
/// `mknod` and `trusted.*` xattrs, so the question every privileged step asks.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    #[test]
    fn is_root_agrees_with_the_effective_uid_the_kernel_reports() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        // `Uid:` real, effective, saved, filesystem.
        let effective = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .unwrap();
        assert_eq!(super::is_root(), effective == "0");
    }
}
