//! `cargo xtask fuzz [SECONDS] [TARGET...]`: coverage-guided fuzzing (libFuzzer through
//! `cargo fuzz`) of each target in `fuzz/` for SECONDS (default 60), one after the other, then a
//! table of runs, corpus size and crashes per target. Not part of CI.
//!
//! Targets: `unpack_layer` (the ducc-unpack parser and extractors: no panic, no write outside
//! the target), `manifest`, `www_authenticate`, `link`, `http_date`, `wishlist`,
//! `image_reference` (see `fuzz/src/`). With TARGET names only those run.
//!
//! libFuzzer needs `-Z` compiler flags. On a stable toolchain the run sets `RUSTC_BOOTSTRAP=1`,
//! which makes stable rustc accept them (the flags are what `cargo +nightly fuzz` would pass),
//! so only `cargo-fuzz` itself is needed: `cargo install cargo-fuzz`. Without it the command
//! fails saying so. `DUCC_FUZZ_DRIVER=stable` instead runs the old stable driver on
//! `unpack_layer` only (random tar-aware mutations, no coverage feedback).
//!
//! The corpus grows in `fuzz/corpus/TARGET` (not committed), starting from the seeds in
//! `fuzz/seeds/TARGET` (committed); a crashing input is saved in `fuzz/artifacts/TARGET/` and
//! libFuzzer's log in `fuzz/logs/TARGET.log`. The fuzzers are CPU-bound: on a shared machine
//! run it under `nice -n 19`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// Every fuzz target, in the order they run.
const TARGETS: &[&str] = &[
    "unpack_layer",
    "manifest",
    "www_authenticate",
    "link",
    "http_date",
    "wishlist",
    "image_reference",
];

/// Runs the fuzzers for `SECONDS` each (default 60).
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let seconds: u64 = match args.first() {
        Some(s) => s
            .parse()
            .with_context(|| format!("SECONDS must be a number, not {s:?}"))?,
        None => 60,
    };
    let mut targets: Vec<&str> = Vec::new();
    for name in args.iter().skip(1) {
        let Some(target) = TARGETS.iter().find(|t| **t == name.as_str()) else {
            bail!(
                "no fuzz target {name:?}; the targets are {}",
                TARGETS.join(", ")
            );
        };
        targets.push(target);
    }
    if targets.is_empty() {
        targets = TARGETS.to_vec();
    }
    let fuzz_dir = workspace_root().join("fuzz");
    if std::env::var("DUCC_FUZZ_DRIVER").is_ok_and(|v| v == "stable") {
        eprintln!(
            "xtask: DUCC_FUZZ_DRIVER=stable: the stable driver on unpack_layer only (random \
             tar-aware mutations, no coverage feedback)"
        );
        return stable(&fuzz_dir, seconds);
    }
    if !has_cargo_fuzz() {
        bail!(
            "cargo-fuzz is not installed: run `cargo install cargo-fuzz` (a stable toolchain is \
             enough, this command sets RUSTC_BOOTSTRAP=1 for libFuzzer's -Z flags), or set \
             DUCC_FUZZ_DRIVER=stable for the weaker stable driver of the layer target"
        );
    }
    build_targets(&fuzz_dir, &targets)?;
    let mut results = Vec::new();
    for target in &targets {
        results.push(libfuzzer(&fuzz_dir, target, seconds)?);
    }
    println!(
        "\n{:<18} {:>8} {:>14} {:>8} {:>8}",
        "target", "seconds", "executions", "corpus", "crashes"
    );
    for r in &results {
        println!(
            "{:<18} {:>8} {:>14} {:>8} {:>8}",
            r.target,
            r.seconds,
            r.executions.map_or("?".to_owned(), |n| n.to_string()),
            r.corpus,
            r.crashes
        );
    }
    let crashed: Vec<&str> = results
        .iter()
        .filter(|r| r.crashes > 0 || !r.clean_exit)
        .map(|r| r.target)
        .collect();
    if !crashed.is_empty() {
        bail!(
            "fuzzing found crashes in {}: inputs under fuzz/artifacts/TARGET/, logs under \
             fuzz/logs/ (reproduce with `RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET FILE` in fuzz/)",
            crashed.join(", ")
        );
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or(manifest_dir.clone(), Path::to_path_buf)
}

fn has_cargo_fuzz() -> bool {
    Command::new("cargo")
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn target_dir(fuzz_dir: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || fuzz_dir.join("target"),
        |d| PathBuf::from(d).join("fuzz"),
    )
}

/// `cargo fuzz` with libFuzzer's `-Z` flags accepted by a stable compiler.
fn cargo_fuzz(fuzz_dir: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(fuzz_dir)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", target_dir(fuzz_dir))
        .arg("fuzz");
    cmd
}

fn build_targets(fuzz_dir: &Path, targets: &[&str]) -> anyhow::Result<()> {
    for target in targets {
        eprintln!("xtask: building fuzz target {target}");
        run_step(
            cargo_fuzz(fuzz_dir).args(["build", "-O", target]),
            &format!("building fuzz target {target}"),
        )?;
    }
    Ok(())
}

/// What one target's run did.
struct Outcome<'a> {
    target: &'a str,
    seconds: u64,
    executions: Option<u64>,
    corpus: usize,
    crashes: usize,
    clean_exit: bool,
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .count()
    })
}

/// The run count from libFuzzer's closing `Done N runs in S second(s)` line.
fn executions(log: &str) -> Option<u64> {
    log.lines().rev().find_map(|l| {
        l.strip_prefix("Done ")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

fn libfuzzer<'a>(fuzz_dir: &Path, target: &'a str, seconds: u64) -> anyhow::Result<Outcome<'a>> {
    let corpus = fuzz_dir.join("corpus").join(target);
    let seeds = fuzz_dir.join("seeds").join(target);
    let artifacts = fuzz_dir.join("artifacts").join(target);
    let logs = fuzz_dir.join("logs");
    for dir in [&corpus, &artifacts, &logs] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if target == "unpack_layer" {
        // The layer seeds come from the stable driver, which builds them from tar headers.
        let driver = build_stable(fuzz_dir)?;
        run_step(
            Command::new(&driver).arg("--write-seeds").arg(&corpus),
            "writing the unpack_layer seed corpus",
        )?;
    }
    let crashes_before = count_files(&artifacts);
    let log_path = logs.join(format!("{target}.log"));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    eprintln!(
        "xtask: libFuzzer on {target} for {seconds} s (log: {})",
        log_path.display()
    );
    let mut cmd = cargo_fuzz(fuzz_dir);
    cmd.args(["run", "-O", target]).arg(&corpus);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    cmd.arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        // A hang or a slow input is a finding too.
        .arg("-timeout=20")
        .arg("-print_final_stats=1")
        .stderr(log);
    let status = cmd
        .status()
        .with_context(|| format!("cannot start cargo fuzz run {target}"))?;
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    Ok(Outcome {
        target,
        seconds,
        executions: executions(&text),
        corpus: count_files(&corpus),
        crashes: count_files(&artifacts).saturating_sub(crashes_before),
        clean_exit: status.success(),
    })
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
        bail!("{what} failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_count_comes_from_libfuzzers_closing_line() {
        let log = "#1024\tpulse  cov: 10 ft: 12 corp: 3/40b\n\
                   #5000\tDONE   cov: 20 ft: 30 corp: 9/1Kb exec/s: 2500 rss: 40Mb\n\
                   Done 5000 runs in 2 second(s)\n";
        assert_eq!(executions(log), Some(5000));
        assert_eq!(executions("INFO: no runs\n"), None);
    }
}
