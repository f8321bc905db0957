//! `cargo xtask fuzz [SECONDS]`: bounded fuzzing of the ducc-unpack layer parser and extractors
//! (no panic, no write outside the target). Not part of CI.
//!
//! The target lives in `fuzz/` (its own workspace). With a nightly toolchain and `cargo-fuzz`
//! installed it runs libFuzzer (`cargo +nightly fuzz run unpack_layer`, coverage-guided). Without
//! them, or with `DUCC_FUZZ_DRIVER=stable`, it runs the same check function from a stable-built
//! driver that mutates seed layers at random (tar-aware, no coverage feedback) and says so.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Runs the fuzzer for `SECONDS` (default 60).
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let seconds: u64 = match args.first() {
        Some(s) => s
            .parse()
            .with_context(|| format!("SECONDS must be a number, not {s:?}"))?,
        None => 60,
    };
    let fuzz_dir = workspace_root().join("fuzz");
    let forced_stable = std::env::var("DUCC_FUZZ_DRIVER").is_ok_and(|v| v == "stable");
    if !forced_stable && has_nightly() && has_cargo_fuzz() {
        return libfuzzer(&fuzz_dir, seconds);
    }
    eprintln!(
        "xtask: {}: running the stable driver instead (same check, random tar-aware mutations, \
         no coverage feedback)",
        if forced_stable {
            "DUCC_FUZZ_DRIVER=stable"
        } else {
            "no nightly toolchain with cargo-fuzz (`rustup toolchain install nightly`, \
             `cargo install cargo-fuzz`)"
        }
    );
    stable(&fuzz_dir, seconds)
}

fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or(manifest_dir.clone(), Path::to_path_buf)
}

fn has_nightly() -> bool {
    Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.starts_with("nightly"))
        })
}

fn has_cargo_fuzz() -> bool {
    Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn target_dir(fuzz_dir: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || fuzz_dir.join("target"),
        |d| PathBuf::from(d).join("fuzz"),
    )
}

fn libfuzzer(fuzz_dir: &Path, seconds: u64) -> anyhow::Result<()> {
    let corpus = fuzz_dir.join("corpus/unpack_layer");
    std::fs::create_dir_all(&corpus)?;
    // Seed the corpus with the driver's seed layers, written by the stable build.
    let driver = build_stable(fuzz_dir)?;
    run_step(
        Command::new(&driver).arg("--write-seeds").arg(&corpus),
        "writing the seed corpus",
    )?;
    eprintln!("xtask: libFuzzer on unpack_layer for {seconds} s");
    run_step(
        Command::new("cargo")
            .current_dir(fuzz_dir)
            .env("CARGO_TARGET_DIR", target_dir(fuzz_dir))
            .args(["+nightly", "fuzz", "run", "unpack_layer"])
            .arg(&corpus)
            .arg("--")
            .arg(format!("-max_total_time={seconds}")),
        "cargo fuzz run",
    )
}

fn build_stable(fuzz_dir: &Path) -> anyhow::Result<PathBuf> {
    let target = target_dir(fuzz_dir);
    run_step(
        Command::new("cargo")
            .current_dir(fuzz_dir)
            .env("CARGO_TARGET_DIR", &target)
            .args([
                "build",
                "--release",
                "--no-default-features",
                "--bin",
                "stable_driver",
            ]),
        "building the stable fuzz driver",
    )?;
    Ok(target.join("release/stable_driver"))
}

fn stable(fuzz_dir: &Path, seconds: u64) -> anyhow::Result<()> {
    let driver = build_stable(fuzz_dir)?;
    let mut cmd = Command::new(driver);
    cmd.current_dir(fuzz_dir).arg(seconds.to_string());
    let corpus = fuzz_dir.join("corpus/unpack_layer");
    if corpus.is_dir() {
        // Any rng seed: take the clock. Then the corpus from earlier libFuzzer runs.
        cmd.arg("0").arg(corpus);
    }
    run_step(&mut cmd, "the stable fuzz driver")
}

fn run_step(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {what}"))?;
    if !status.success() {
        bail!(
            "{what} failed ({status}); a crashing input is saved under fuzz/artifacts/unpack_layer/"
        );
    }
    Ok(())
}
