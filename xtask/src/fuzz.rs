//! `cargo xtask fuzz`.

/// Runs `cargo xtask fuzz`.
pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("cargo xtask fuzz is not written yet")
}
