//! `cargo xtask bench convert --publisher cvmfs [--rounds N]`: `ducc convert --publisher cvmfs`
//! of the bench image (issue 11, SPEC section 6: "few publishes per image, and a no-op rerun
//! publishes nothing").
//!
//! - With a real `cvmfs_server` on `PATH` (a stratum 0 as root): every round makes a throwaway
//!   repository (`cvmfs_server mkfs -o root ducc-bench-PID-N.test`), converts the image into it,
//!   reruns the conversion (the no-op rerun), and removes it (`rmfs -f`). Reported: wall time of
//!   the conversion and of the rerun, and the `cvmfs_server` calls per image: ingests, publishes
//!   (transaction + publish pairs), and revisions (every ingest and publish is one, even an empty
//!   one: reference/cvmfs-real-behaviour.md scenarios 8 and 9).
//! - Without one: it says so and converts through the tests' labelled stand-in
//!   (`cvmfs_server_standin`, built in release mode from the tests crate), which reproduces the
//!   recorded behaviour of a real 2.12 stratum 0; times through a stand-in say nothing about a
//!   real server, so only the counts are reported.
//!
//! Both modes count the calls the same way: `ducc` gets `--cvmfs-server WRAPPER`, a shell script
//! that appends its arguments to a log and then runs the server.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};

use super::{Calls, fresh_dir, measure, median, on_path, prepare, registry_with, target_dir};

const REPOSITORY: &str = "bench/debian";
const TAG: &str = "latest";

/// Where the calls go: a real `cvmfs_server` or the stand-in.
enum Server {
    Real,
    Standin(PathBuf),
}

/// Runs the bench for `rounds` rounds.
pub(super) fn run(rounds: usize) -> anyhow::Result<()> {
    let server = if on_path("cvmfs_server") {
        eprintln!("xtask: cvmfs_server found: converting into throwaway repositories");
        Server::Real
    } else {
        eprintln!(
            "xtask: no cvmfs_server on PATH: converting through the tests' stand-in \
             (cvmfs_server_standin); reporting call counts only, no times"
        );
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(&cargo)
            .args([
                "build",
                "--release",
                "-p",
                "ducc-tests",
                "--bin",
                "cvmfs_server_standin",
            ])
            .status()?;
        ensure!(status.success(), "release build of the stand-in failed");
        Server::Standin(target_dir().join("release/cvmfs_server_standin"))
    };
    let image = prepare(&["ducc-cli"])?;
    let ducc = target_dir().join("release/ducc");
    let reference = format!("{REPOSITORY}:{TAG}");
    let registry = registry_with(&image, &reference)?;
    let host = registry.host().to_owned();

    let mut convert_times = Vec::new();
    let mut rerun_times = Vec::new();
    let mut first = None;
    let mut noop = None;
    for round in 1..=rounds {
        let work = fresh_dir(&format!("convert-cvmfs-{round}"))?;
        let repo = format!("ducc-bench-{}-{round}.test", std::process::id());
        let log = work.join("calls.log");
        let wrapper = work.join("cvmfs_server");
        write_wrapper(&wrapper, &server, &work, &log)?;
        let mkfs: &[&str] = match server {
            Server::Real => &["mkfs", "-o", "root"],
            Server::Standin(_) => &["mkfs"],
        };
        let status = Command::new(&wrapper).args(mkfs).arg(&repo).status()?;
        ensure!(status.success(), "cvmfs_server mkfs {repo} failed");
        let mount = match server {
            Server::Real => PathBuf::from("/cvmfs"),
            Server::Standin(_) => work.join("standin/mnt"),
        };
        let result = convert_round(
            &ducc, &wrapper, &work, &mount, &repo, &host, &reference, &log,
        );
        if matches!(server, Server::Real) {
            // The throwaway repository goes whatever the round did.
            let _ = Command::new("cvmfs_server")
                .args(["rmfs", "-f", &repo])
                .status();
        }
        let round = result?;
        convert_times.push(round.convert_s);
        rerun_times.push(round.rerun_s);
        ensure!(
            first.is_none_or(|f| f == round.first),
            "the calls differ between rounds: {:?} then {:?}",
            first,
            round.first
        );
        first = Some(round.first);
        noop = Some(round.rerun);
        super::remove_dir(&work)?;
    }
    drop(registry);
    let (Some(first), Some(noop)) = (first, noop) else {
        bail!("no round ran");
    };
    println!(
        "\nducc convert --publisher cvmfs of the bench image (1 image, {} layers), {rounds} round(s)",
        image.layers.len()
    );
    println!("| run | ingests | deletes | transaction publishes | revisions | aborts |");
    println!("|---|---|---|---|---|---|");
    for (label, calls) in [("first conversion", first), ("no-op rerun", noop)] {
        println!(
            "| {label} | {} | {} | {} | {} | {} |",
            calls.ingests,
            calls.deletes,
            calls.publishes,
            calls.revisions(),
            calls.aborts
        );
    }
    match server {
        Server::Real => println!(
            "wall time (median): conversion {:.2} s, no-op rerun {:.2} s",
            median(&convert_times),
            median(&rerun_times)
        ),
        Server::Standin(_) => {
            println!(
                "(through the stand-in: times are not reported, they say nothing of a real server)"
            )
        }
    }
    let noop_ok = noop.revisions() == 0;
    println!(
        "no-op rerun publishes nothing: {}",
        if noop_ok { "yes" } else { "NO" }
    );
    ensure!(
        noop_ok,
        "the no-op rerun published {} revisions",
        noop.revisions()
    );
    Ok(())
}

struct Round {
    first: Calls,
    rerun: Calls,
    convert_s: f64,
    rerun_s: f64,
}

#[allow(clippy::too_many_arguments)]
fn convert_round(
    ducc: &Path,
    wrapper: &Path,
    work: &Path,
    mount: &Path,
    repo: &str,
    host: &str,
    reference: &str,
    log: &Path,
) -> anyhow::Result<Round> {
    let wishlist = work.join("wishlist.yaml");
    std::fs::write(
        &wishlist,
        format!(
            "version: 1\nuser: ''\ncvmfs_repo: {repo}\ninput:\n  - 'http://{host}/{reference}'\n"
        ),
    )?;
    for sub in ["tmp", "cache"] {
        std::fs::create_dir_all(work.join(sub))?;
    }
    let command = format!(
        "TMPDIR={tmp} CVMFS_MOUNT_DIR={mount} {ducc} convert {wishlist} --publisher cvmfs \
         --cvmfs-server {wrapper} -t {tmp} --cache-dir {cache} -i --no-progress",
        tmp = work.join("tmp").display(),
        mount = mount.display(),
        ducc = ducc.display(),
        wishlist = wishlist.display(),
        wrapper = wrapper.display(),
        cache = work.join("cache").display(),
    );
    let before = read_log(log)?.len();
    let converted = measure(&command).context("ducc convert --publisher cvmfs")?;
    let after = read_log(log)?;
    let first = Calls::from_log(&after[before..]);
    let rerun_measured = measure(&command).context("the no-op rerun")?;
    let again = read_log(log)?;
    let rerun = Calls::from_log(&again[after.len()..]);
    eprintln!("conversion: {converted}\nno-op rerun: {rerun_measured}");
    Ok(Round {
        first,
        rerun,
        convert_s: converted.wall,
        rerun_s: rerun_measured.wall,
    })
}

/// The wrapper `ducc` runs as its `cvmfs_server`: logs the arguments, then runs the server.
fn write_wrapper(wrapper: &Path, server: &Server, work: &Path, log: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let exec = match server {
        Server::Real => "exec cvmfs_server \"$@\"".to_owned(),
        Server::Standin(binary) => format!(
            "CVMFS_STANDIN_STATE='{}' exec '{}' \"$@\"",
            work.join("standin").display(),
            binary.display()
        ),
    };
    std::fs::write(
        wrapper,
        format!("#!/bin/sh\necho \"$*\" >> '{}'\n{exec}\n", log.display()),
    )?;
    std::fs::set_permissions(wrapper, std::fs::Permissions::from_mode(0o755))?;
    // The stand-in keeps its repositories and mount under its state directory.
    if matches!(server, Server::Standin(_)) {
        std::fs::create_dir_all(work.join("standin/mnt"))?;
    }
    Ok(())
}

fn read_log(log: &Path) -> anyhow::Result<Vec<String>> {
    match std::fs::read_to_string(log) {
        Ok(text) => Ok(text.lines().map(str::to_owned).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", log.display())),
    }
}

#[cfg(test)]
mod tests {
    use crate::bench::Calls;

    #[test]
    fn calls_are_counted_by_kind_and_every_ingest_and_publish_is_a_revision() {
        let log: Vec<String> = [
            "list",
            "ingest -k -t /tmp/x -b .layers/ab bench.test",
            "ingest --delete .layers/ab/cd bench.test",
            "transaction bench.test",
            "publish bench.test",
            "abort -f bench.test",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let calls = Calls::from_log(&log);
        assert_eq!(
            calls,
            Calls {
                all: 6,
                ingests: 1,
                deletes: 1,
                deleted_paths: 1,
                publishes: 1,
                aborts: 1
            }
        );
        assert_eq!(calls.revisions(), 3);
    }
}
