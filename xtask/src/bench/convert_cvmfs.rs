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
//!
//! Then the **many small images** set (issue 29): [`SMALL_IMAGES`] tiny images sharing a
//! one-file base layer, each with one small layer of its own (a busy site's daily updates),
//! converted into a fresh repository once per batch size (`--batch 1`: every image its own
//! commit; the default; all in one batch). Reported per batch size: ingests, publishes and
//! revisions per image, and with a real server the wall time.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};

use super::{
    Calls, fresh_dir, measure, median, on_path, prepare, registry_with, release_build, target_dir,
};

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
        release_build(&["ducc-tests"])?;
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
    let mut flows = Vec::new();
    for round in 1..=rounds {
        let work = fresh_dir(&format!("convert-cvmfs-{round}"))?;
        let repo = format!("ducc-bench-{}-{round}.test", std::process::id());
        let Throwaway {
            log,
            wrapper,
            mount,
        } = Throwaway::make(&server, &work, &repo)?;
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
        flows.push(round.flow);
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
    let flow = flows.last().copied().unwrap_or_default();
    println!(
        "\nbytes ingested {} for {} uncompressed layer bytes ({:.2} times each byte); flat tree: \
         {} files grafted onto stored layer objects, {} written with their content",
        flow.ingested_bytes,
        flow.layer_bytes,
        flow.ingested_bytes as f64 / flow.layer_bytes.max(1) as f64,
        flow.grafted_files,
        flow.copied_files
    );
    if matches!(server, Server::Real) {
        let steps = |f: fn(&Flow) -> f64| median(&flows.iter().map(f).collect::<Vec<_>>());
        println!(
            "steps (median s): layers {:.2} (decode and build {:.2} beside the server's ingest, \
             then {:.2} waiting for it), flat tree and the rest publish {:.2} ({:.0}% of the \
             layers')",
            steps(|f| f.layers_s),
            steps(|f| f.unpack_s),
            steps(|f| f.layers_publish_s),
            steps(|f| f.image_publish_s),
            100.0 * steps(|f| f.image_publish_s) / steps(|f| f.layers_s).max(1e-9)
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
    small_images(&server, &ducc)?;
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

/// A throwaway repository of a round: made with `mkfs` through the logging wrapper.
struct Throwaway {
    /// The wrapper's call log.
    log: PathBuf,
    /// The wrapper `ducc` runs as its `cvmfs_server`.
    wrapper: PathBuf,
    /// Where the repository is mounted (`CVMFS_MOUNT_DIR`).
    mount: PathBuf,
}

impl Throwaway {
    /// Writes the wrapper into `work` and makes `repo` through it.
    fn make(server: &Server, work: &Path, repo: &str) -> anyhow::Result<Throwaway> {
        let log = work.join("calls.log");
        let wrapper = work.join("cvmfs_server");
        write_wrapper(&wrapper, server, work, &log)?;
        let mkfs: &[&str] = match server {
            Server::Real => &["mkfs", "-o", "root"],
            Server::Standin(_) => &["mkfs"],
        };
        let status = Command::new(&wrapper).args(mkfs).arg(repo).status()?;
        ensure!(status.success(), "cvmfs_server mkfs {repo} failed");
        let mount = match server {
            Server::Real => PathBuf::from("/cvmfs"),
            Server::Standin(_) => work.join("standin/mnt"),
        };
        Ok(Throwaway {
            log,
            wrapper,
            mount,
        })
    }
}

/// How many images the many-small-images set has (issue 29 measured 20 on a real stratum 0).
const SMALL_IMAGES: usize = 20;

/// The many-small-images set, converted once per batch size into a fresh repository.
fn small_images(server: &Server, ducc: &Path) -> anyhow::Result<()> {
    let registry = ducc_tests::Registry::start(ducc_tests::Flavour::Anonymous);
    let host = registry.host().to_owned();
    let client = ducc_tests::images::client_for(&host, None);
    let repository = ducc_tests::images::repository(&host, "bench/small");
    let set = ducc_tests::images::small_image_set(ducc_tests::images::Format::Oci, SMALL_IMAGES);
    for (index, image) in set.iter().enumerate() {
        ducc_tests::images::push_image(&client, &repository, &format!("v{index}"), image);
    }
    println!(
        "\nmany small images: {SMALL_IMAGES} images, each a shared one-file base layer and a \
         small layer of its own"
    );
    println!("| --batch | ingests | publishes | revisions | revisions per image | wall s |");
    println!("|---|---|---|---|---|---|");
    for batch in [1, 10, SMALL_IMAGES] {
        let work = fresh_dir(&format!("convert-cvmfs-small-{batch}"))?;
        let repo = format!("ducc-bench-small-{}-{batch}.test", std::process::id());
        let Throwaway {
            log,
            wrapper,
            mount,
        } = Throwaway::make(server, &work, &repo)?;
        let wishlist = work.join("wishlist.yaml");
        let mut text = format!("version: 1\nuser: ''\ncvmfs_repo: {repo}\ninput:\n");
        for index in 0..SMALL_IMAGES {
            text.push_str(&format!("  - 'http://{host}/bench/small:v{index}'\n"));
        }
        std::fs::write(&wishlist, text)?;
        for sub in ["tmp", "cache"] {
            std::fs::create_dir_all(work.join(sub))?;
        }
        let command = format!(
            "TMPDIR={tmp} CVMFS_MOUNT_DIR={mount} {ducc} convert {wishlist} --publisher cvmfs \
             --cvmfs-server {wrapper} -t {tmp} --cache-dir {cache} -i --no-progress --batch {batch}",
            tmp = work.join("tmp").display(),
            mount = mount.display(),
            ducc = ducc.display(),
            wishlist = wishlist.display(),
            wrapper = wrapper.display(),
            cache = work.join("cache").display(),
        );
        let measured = measure(&command);
        if matches!(server, Server::Real) {
            let _ = Command::new("cvmfs_server")
                .args(["rmfs", "-f", &repo])
                .status();
        }
        let measured = measured.with_context(|| format!("ducc convert --batch {batch}"))?;
        let calls = Calls::from_log(&read_log(&log)?);
        let wall = match server {
            Server::Real => format!("{:.1}", measured.wall),
            Server::Standin(_) => "(stand-in)".to_owned(),
        };
        println!(
            "| {batch} | {} | {} | {} | {:.2} | {wall} |",
            calls.ingests,
            calls.publishes,
            calls.revisions(),
            calls.revisions() as f64 / SMALL_IMAGES as f64
        );
        super::remove_dir(&work)?;
    }
    Ok(())
}

struct Round {
    first: Calls,
    flow: Flow,
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
         --cvmfs-server {wrapper} -t {tmp} --cache-dir {cache} -i --no-progress -n {events}",
        tmp = work.join("tmp").display(),
        mount = mount.display(),
        ducc = ducc.display(),
        wishlist = wishlist.display(),
        wrapper = wrapper.display(),
        cache = work.join("cache").display(),
        events = work.join("events.jsonl").display(),
    );
    let before = read_log(log)?.len();
    let converted = measure(&command).context("ducc convert --publisher cvmfs")?;
    let after = read_log(log)?;
    let first = Calls::from_log(&after[before..]);
    let flow = Flow::read(&after[before..], &work.join("events.jsonl"))?;
    let rerun_measured = measure(&command).context("the no-op rerun")?;
    let again = read_log(log)?;
    let rerun = Calls::from_log(&again[after.len()..]);
    eprintln!("conversion: {converted}\nno-op rerun: {rerun_measured}");
    Ok(Round {
        first,
        flow,
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
    // An ingest's tar is logged with its size: the bytes the server reads, hashes and compresses.
    // A tar streamed on stdin (`-t -`) is counted on its way through `dd`, and logged once the
    // call ended (with the server's exit status kept).
    let log = log.display();
    std::fs::write(
        wrapper,
        format!(
            r#"#!/bin/sh
size=''
prev=''
stream=''
for a in "$@"; do
  if [ "$prev" = -t ] && [ "$a" = - ]; then stream=1; fi
  if [ "$prev" = -t ] && [ -f "$a" ]; then size=" bytes=$(stat -c %s "$a")"; fi
  prev="$a"
done
if [ -n "$stream" ]; then
  counted="$(mktemp)"
  dd bs=65536 2>"$counted" | ( {exec} )
  rc=$?
  echo "$* bytes=$(tail -n 1 "$counted" | cut -d' ' -f1)" >> '{log}'
  rm -f "$counted"
  exit $rc
fi
echo "$*$size" >> '{log}'
{exec}
"#
        ),
    )?;
    std::fs::set_permissions(wrapper, std::fs::Permissions::from_mode(0o755))?;
    // The stand-in keeps its repositories and mount under its state directory.
    if matches!(server, Server::Standin(_)) {
        std::fs::create_dir_all(work.join("standin/mnt"))?;
    }
    Ok(())
}

/// What the first conversion of a round published, from the call log and ducc's events.
#[derive(Debug, Default, Clone, Copy)]
struct Flow {
    /// Bytes of the tars the server ingested.
    ingested_bytes: u64,
    /// Uncompressed bytes of the layers unpacked (each should be ingested once).
    layer_bytes: u64,
    /// Seconds decoding the layers and building the flat tree took in ducc.
    unpack_s: f64,
    /// Seconds of the layers step (decoding beside the server's ingest, then the wait for it),
    /// of the wait alone, and of the rest's publish (flat tree by grafts, links, marker).
    layers_s: f64,
    layers_publish_s: f64,
    image_publish_s: f64,
    grafted_files: u64,
    copied_files: u64,
}

impl Flow {
    fn read(log: &[String], events: &Path) -> anyhow::Result<Flow> {
        let mut flow = Flow::default();
        for line in log {
            if let Some(bytes) = line
                .rsplit_once(" bytes=")
                .and_then(|(_, b)| b.parse::<u64>().ok())
            {
                flow.ingested_bytes += bytes;
            }
        }
        let text = std::fs::read_to_string(events)
            .with_context(|| format!("cannot read {}", events.display()))?;
        for line in text.lines() {
            let event: serde_json::Value = serde_json::from_str(line)?;
            let number = |key: &str| event[key].as_f64().unwrap_or(0.0);
            match event["action"].as_str() {
                Some("layer_unpack") => flow.layer_bytes += number("diff_size") as u64,
                Some("flat_built") => flow.unpack_s += number("time_elapsed_s"),
                Some("published") => {
                    flow.layers_s += number("layers_s");
                    flow.layers_publish_s += number("layers_publish_s");
                    flow.image_publish_s += number("image_publish_s");
                    flow.grafted_files += number("grafted_files") as u64;
                    flow.copied_files += number("copied_files") as u64;
                }
                _ => {}
            }
        }
        Ok(flow)
    }
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
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;

    use crate::bench::Calls;

    #[test]
    fn the_wrapper_logs_a_streamed_tars_bytes_and_keeps_the_servers_exit_status() {
        let dir = std::env::temp_dir().join(format!("wrapper-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A "server" that reads its stdin whole and fails.
        let server = dir.join("server");
        std::fs::write(&server, "#!/bin/sh\ncat >/dev/null\nexit 3\n").unwrap();
        std::fs::set_permissions(&server, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (wrapper, log) = (dir.join("wrapper"), dir.join("log"));
        super::write_wrapper(&wrapper, &super::Server::Standin(server), &dir, &log).unwrap();
        let mut child = std::process::Command::new(&wrapper)
            .args(["ingest", "-k", "-t", "-", "-b", ".layers", "r.test"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&[7u8; 100_000])
            .unwrap();
        assert_eq!(child.wait().unwrap().code(), Some(3));
        let status = std::process::Command::new(&wrapper)
            .args(["list"])
            .stdin(std::process::Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(3));
        let logged = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            logged,
            "ingest -k -t - -b .layers r.test bytes=100000\nlist\n"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

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
