//! `cargo xtask bench`.

/// Runs `cargo xtask bench`.
pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("cargo xtask bench is not written yet")
}
