//! `cargo xtask bench convert [--rounds N]`: the main job, `ducc convert`, on the bench image
//! served by a distribution registry on loopback, side by side with its peer (issue 7, SPEC
//! section 6).
//!
//! - A: `ducc convert WISHLIST --publisher local --root DIR -i` (release build): every layer
//!   directory plus the flat tree and the marker, thin image skipped, with its own fresh `-t` and
//!   `--cache-dir` each round so nothing is cached between rounds. The wish list names the one
//!   image, `http://127.0.0.1:PORT/bench/debian:latest`, into the repository `bench.test`.
//! - B: `skopeo copy docker://... oci:DIR:latest && umoci raw unpack` as one command.
//! - The no-op rerun: right after each A, the same command on the same root and cache: the marker
//!   is there, so nothing may be downloaded (checked in the `-n` events). Target under 1 s.
//! - Afterwards one round each of A with `-s` (layers only) and with `-d` (flat tree only), and
//!   a timeline of A's events, to show where the time goes.
//!
//! With `--tmpfs` every run that writes starts right after 3 GiB were written to tmpfs and
//! freed (see `prewarm`): on a VM that hands freed memory back to its host, whoever runs first
//! after a deletion otherwise gets warm pages and the next one cold ones.
//!
//! One unmeasured round first warms the page cache (the registry's storage, the binaries). In
//! each round A and B run one after the other (the order alternates between rounds), each on a
//! brand-new loop-mounted ext4 filesystem (when root; `--no-fresh-fs` or no root: a fresh
//! directory on the scratch filesystem, which then pays for earlier runs' deleted inodes). A's output is checked every round (layer
//! directories, flat tree with `usr/bin/python3` and `.singularity.d`, public symlink, marker,
//! and the same regular-file bytes as B's rootfs), so a broken run cannot post a good time.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use ducc_tests::fixtures::Image;

use super::{
    Area, Contender, Floor, FreshFs, Measurement, fresh_dir, load_average, measure, median,
    parse_options, prepare, prewarm, registry_with, remove_dir, require_tools,
    skopeo_umoci_command, target_dir, timed, uncompressed_size,
};

/// The repository and tag the registry serves the bench image as.
const REPOSITORY: &str = "bench/debian";
const TAG: &str = "latest";
/// The CernVM-FS repository name in the wish list (the local publisher's `ROOT/bench.test`).
const CVMFS_REPO: &str = "bench.test";

/// Targets from SPEC section 6 and issue 14 (layers and flat tree together).
const RATIO_TARGET: f64 = 0.4;
const RSS_TARGET_MIB: f64 = 64.0;
const NOOP_TARGET_S: f64 = 1.0;

/// `cargo xtask bench convert [--rounds N] [--no-fresh-fs]`.
pub(super) fn run(args: &[String]) -> anyhow::Result<()> {
    let options = parse_options(args, &["--no-fresh-fs", "--tmpfs"])?;
    let tmpfs = options.flags.iter().any(|f| f == "--tmpfs");
    let fresh = !options.flags.iter().any(|f| f == "--no-fresh-fs") && FreshFs::available();
    if !fresh {
        eprintln!(
            "xtask: runs share the scratch filesystem (fresh filesystems need root, mkfs.ext4 and mount)"
        );
    }
    let rounds = options.rounds;
    require_tools(&[("/usr/bin/time", "time"), ("umoci", "umoci")])?;
    // The floor's decode half runs this xtask's release build.
    let image = prepare(&["xtask", "ducc-cli"])?;
    let ducc = target_dir().join("release/ducc");
    let uncompressed = timed("decompressing the layers once", || {
        uncompressed_size(&image)
    })?;
    let compressed: u64 = image.layers.iter().map(|l| l.size).sum();

    let reference = format!("{REPOSITORY}:{TAG}");
    // The registry stops when this is dropped, after the runs.
    let registry = timed("pushing the image into the registry", || {
        registry_with(&image, &reference)
    })?;
    let host = registry.host().to_owned();
    let setup = fresh_dir("convert-setup")?;
    let wishlist = setup.join("wishlist.yaml");
    std::fs::write(
        &wishlist,
        format!(
            "version: 1\nuser: ''\ncvmfs_repo: {CVMFS_REPO}\ninput:\n  - 'http://{host}/{reference}'\n"
        ),
    )?;
    let expected = Expected {
        host: host.clone(),
        image: image.clone(),
    };

    let mut ducc_full = Contender::new(
        "ducc convert (layers + flat)",
        convert_command(&ducc, &wishlist, "", "events"),
    );
    let mut rerun = Contender::new(
        "ducc convert no-op rerun",
        convert_command(&ducc, &wishlist, "", "rerun-events"),
    );
    let mut peer = Contender::new(
        "skopeo copy + umoci raw unpack",
        skopeo_umoci_command(&host, &reference),
    );
    let mut floor = Floor::new(&image, &setup, 2)?;
    let load_before = load_average();
    let mut timeline = String::new();
    let (mut area_a, mut area_b) = if tmpfs {
        (Area::tmpfs("convert-a")?, Area::tmpfs("convert-b")?)
    } else {
        (
            Area::new("convert-a", fresh)?,
            Area::new("convert-b", fresh)?,
        )
    };

    for round in 0..=rounds {
        let measured = round > 0;
        let label = if measured {
            format!("round {round}")
        } else {
            "warm-up".to_owned()
        };
        let (dest_a, dest_b) = timed("preparing the round's filesystems", || {
            Ok((area_a.next_run()?, area_b.next_run()?))
        })?;
        // Alternate who goes first, so a drift in the machine's load hits both alike.
        let peer_first = round % 2 == 0;
        if peer_first {
            run_one(&mut peer, &dest_b, &label, measured, tmpfs)?;
        }
        run_one(&mut ducc_full, &dest_a, &label, measured, tmpfs)?;
        timed("checking ducc's tree", || {
            expected
                .check(&dest_a, Parts::Both)
                .with_context(|| format!("{label}: ducc convert did not produce the expected tree"))
        })?;
        timeline = read_timeline(&dest_a.join("events.jsonl"))?;
        run_one(&mut rerun, &dest_a, &label, measured, false)?;
        check_noop(&dest_a.join("rerun-events.jsonl"))
            .with_context(|| format!("{label}: the no-op rerun did work"))?;
        if !peer_first {
            run_one(&mut peer, &dest_b, &label, measured, tmpfs)?;
        }
        // The floor's halves, beside the peer's output.
        let floor_dest = dest_b.join("floor");
        run_one(&mut floor.decode, &floor_dest, &label, measured, false)?;
        run_one(&mut floor.write, &floor_dest, &label, measured, tmpfs)?;
        timed("comparing with umoci's rootfs", || {
            compare_with_peer(&expected.flat_dir(&dest_a), &dest_b.join("rootfs"))
                .with_context(|| format!("{label}: ducc's flat tree differs from umoci's rootfs"))
        })?;
        timed("removing the round's output", || {
            area_a.clear()?;
            area_b.clear()
        })?;
    }

    // Where the time goes: one round each of the two halves.
    let mut breakdown = Vec::new();
    for (name, flag, parts) in [
        ("ducc convert -s (layers only)", " -s", Parts::Layers),
        ("ducc convert -d (flat only)", " -d", Parts::Flat),
    ] {
        let mut contender = Contender::new(name, convert_command(&ducc, &wishlist, flag, "events"));
        let dest = area_a.next_run()?;
        run_one(&mut contender, &dest, "breakdown", true, tmpfs)?;
        expected
            .check(&dest, parts)
            .with_context(|| format!("{name} did not produce the expected tree"))?;
        area_a.clear()?;
        breakdown.push(contender);
    }
    remove_dir(&setup)?;
    drop((area_a, area_b, registry));

    report(
        &image,
        compressed,
        uncompressed,
        rounds,
        [&ducc_full, &peer, &rerun],
        &breakdown,
        &timeline,
    );
    report_floor(&ducc_full, &peer, &floor, &load_before, tmpfs);
    Ok(())
}

/// `ducc convert` of `wishlist` into `{dest}/root` with scratch and cache under `{dest}`, events
/// to `{dest}/EVENTS.jsonl`, thin image skipped, plus `extra` flags.
fn convert_command(ducc: &Path, wishlist: &Path, extra: &str, events: &str) -> String {
    format!(
        "{} convert {} --publisher local --root {{dest}}/root -t {{dest}}/tmp \
         --cache-dir {{dest}}/cache -n {{dest}}/{events}.jsonl -i{extra}",
        ducc.display(),
        wishlist.display()
    )
}

/// Measures `contender` into `dest`, keeping the sample when `measured`; on tmpfs right after
/// [`prewarm`], so every contender starts with the same memory.
fn run_one(
    contender: &mut Contender,
    dest: &Path,
    label: &str,
    measured: bool,
    tmpfs: bool,
) -> anyhow::Result<Measurement> {
    if tmpfs {
        prewarm()?;
    }
    let m = measure(&contender.command_for(dest))
        .with_context(|| format!("{label}: {} failed", contender.name))?;
    eprintln!("{label}: {:<32} {m}", contender.name);
    if measured {
        contender.samples.push(m);
    }
    Ok(m)
}

/// Which parts of the repository a run should have written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parts {
    Both,
    Layers,
    Flat,
}

/// What a conversion of the bench image must leave in the repository.
struct Expected {
    host: String,
    image: Image,
}

impl Expected {
    fn repo(&self, dest: &Path) -> PathBuf {
        dest.join("root").join(CVMFS_REPO)
    }

    fn flat_dir(&self, dest: &Path) -> PathBuf {
        let cfg = hex(&self.image.config_digest);
        self.repo(dest).join(".flat").join(&cfg[..2]).join(cfg)
    }

    /// Checks the layer directories and/or the flat tree with its public symlink, and the marker.
    fn check(&self, dest: &Path, parts: Parts) -> anyhow::Result<()> {
        let repo = self.repo(dest);
        let name = format!("{}/{REPOSITORY}:{TAG}", self.host);
        let marker = repo.join(".metadata").join(&name).join("manifest.json");
        ensure!(marker.is_file(), "no marker {}", marker.display());
        if parts != Parts::Flat {
            for layer in &self.image.layers {
                let hex = hex(&layer.digest);
                let layer_dir = repo.join(".layers").join(&hex[..2]).join(hex);
                for path in [
                    layer_dir.join("layerfs"),
                    layer_dir.join(".metadata/layers.json"),
                    layer_dir.join(".metadata/origin.json"),
                ] {
                    ensure!(path.exists(), "missing {}", path.display());
                }
            }
            // The usr/lib layer holds the bulk of the image.
            let lib = repo.join(".layers");
            ensure!(
                count_entries(&lib)? > 1000,
                "{} holds almost nothing",
                lib.display()
            );
        }
        if parts != Parts::Layers {
            let flat = self.flat_dir(dest);
            for path in ["usr/bin/python3", "usr/bin/gcc", ".singularity.d/runscript"] {
                let path = flat.join(path);
                ensure!(
                    std::fs::symlink_metadata(&path).is_ok(),
                    "missing {}",
                    path.display()
                );
            }
            let link = repo.join(&name);
            let target = std::fs::read_link(&link)
                .with_context(|| format!("no public symlink {}", link.display()))?;
            ensure!(
                link.parent()
                    .unwrap_or(&repo)
                    .join(&target)
                    .canonicalize()?
                    == flat.canonicalize()?,
                "{} points at {}, not at the flat tree",
                link.display(),
                target.display()
            );
        }
        Ok(())
    }
}

fn hex(digest: &str) -> String {
    digest.strip_prefix("sha256:").unwrap_or(digest).to_owned()
}

/// The rerun's events must say the image was up to date and show no download, unpack or flat.
fn check_noop(events: &Path) -> anyhow::Result<()> {
    let events = read_events(events)?;
    let actions: Vec<&str> = events
        .iter()
        .filter_map(|e| e.get("action").and_then(serde_json::Value::as_str))
        .collect();
    ensure!(
        actions.contains(&"image_up_to_date"),
        "no image_up_to_date event (actions: {actions:?})"
    );
    for busy in ["layer_download", "layer_unpack", "flat_built"] {
        ensure!(
            !actions.contains(&busy),
            "a {busy} event (actions: {actions:?})"
        );
    }
    Ok(())
}

fn read_events(path: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the events {}", path.display()))?;
    text.lines()
        .map(|line| serde_json::from_str(line).with_context(|| format!("bad event line {line:?}")))
        .collect()
}

/// A's events as `+SECONDS action detail` lines, relative to the first event.
fn read_timeline(path: &Path) -> anyhow::Result<String> {
    let events = read_events(path)?;
    let start = events
        .first()
        .and_then(|e| e.get("time"))
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(0.0);
    let mut out = String::new();
    for e in &events {
        let time = e
            .get("time")
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0)
            - start;
        let action = e
            .get("action")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("?");
        let layer = e
            .get("layer")
            .and_then(serde_json::Value::as_str)
            .map(|l| format!(" {}", &hex(l)[..12.min(hex(l).len())]))
            .unwrap_or_default();
        let size = ["size", "diff_size"]
            .iter()
            .find_map(|k| e.get(*k).and_then(serde_json::Value::as_u64))
            .map(|s| format!(" {:.0} MB", s as f64 / 1e6))
            .unwrap_or_default();
        let took = e
            .get("time_elapsed_s")
            .and_then(serde_json::Value::as_f64)
            .map(|s| format!(" (took {s:.2} s)"))
            .unwrap_or_default();
        out.push_str(&format!(
            "  +{time:>6.2} s {action:<16}{layer}{size}{took}\n"
        ));
    }
    Ok(out)
}

/// Regular files and their bytes under `dir`, skipping `.singularity.d` (ducc's addition).
fn file_totals(dir: &Path) -> anyhow::Result<(u64, u64)> {
    let mut files = 0;
    let mut bytes = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
        {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                if entry.file_name() != ".singularity.d" {
                    stack.push(entry.path());
                }
            } else if kind.is_file() {
                files += 1;
                bytes += entry.metadata()?.len();
            }
        }
    }
    Ok((files, bytes))
}

fn count_entries(dir: &Path) -> anyhow::Result<u64> {
    let mut count = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            count += 1;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(count)
}

/// ducc's flat tree and umoci's rootfs hold the same file bytes (the file count may differ by the
/// empty `etc/hosts` and `etc/resolv.conf` ducc adds where the image has none).
fn compare_with_peer(flat: &Path, rootfs: &Path) -> anyhow::Result<()> {
    let (ducc_files, ducc_bytes) = file_totals(flat)?;
    let (umoci_files, umoci_bytes) = file_totals(rootfs)?;
    if ducc_bytes != umoci_bytes || ducc_files.abs_diff(umoci_files) > 2 {
        bail!(
            "ducc: {ducc_files} files, {ducc_bytes} bytes; umoci: {umoci_files} files, {umoci_bytes} bytes"
        );
    }
    Ok(())
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

fn report(
    image: &Image,
    compressed: u64,
    uncompressed: u64,
    rounds: usize,
    [ducc, peer, rerun]: [&Contender; 3],
    breakdown: &[Contender],
    timeline: &str,
) {
    println!(
        "\nbench convert: {} layers, {:.0} MB compressed, {:.0} MB uncompressed, {rounds} rounds (median), \
         registry on loopback",
        image.layers.len(),
        compressed as f64 / 1e6,
        uncompressed as f64 / 1e6
    );
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>9} {:>12}",
        "contender", "wall (s)", "cpu (s)", "user (s)", "sys (s)", "peak RSS"
    );
    for c in [ducc, peer, rerun].into_iter().chain(breakdown) {
        let rounds_note = if c.samples.len() == 1 {
            "  (1 run)"
        } else {
            ""
        };
        println!(
            "{:<34} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>8.1} MiB{rounds_note}",
            c.name,
            c.wall(),
            c.cpu(),
            c.user(),
            c.sys(),
            c.peak_rss_mib()
        );
    }
    let ratio = ducc.wall() / peer.wall();
    let rss = ducc.peak_rss_mib().max(rerun.peak_rss_mib());
    let noop = rerun.wall();
    println!(
        "\nratio ducc / peer: {ratio:.2} wall, {:.2} cpu (target <= {RATIO_TARGET}): {}",
        ducc.cpu() / peer.cpu(),
        verdict(ratio <= RATIO_TARGET)
    );
    println!(
        "peak RSS of ducc convert: {rss:.1} MiB (target < {RSS_TARGET_MIB}): {}",
        verdict(rss < RSS_TARGET_MIB)
    );
    println!(
        "no-op rerun: {noop:.3} s per image (target < {NOOP_TARGET_S} s): {}",
        verdict(noop < NOOP_TARGET_S)
    );
    let per_round: Vec<String> = ducc
        .samples
        .iter()
        .zip(&peer.samples)
        .map(|(d, p)| format!("{:.2}", d.wall / p.wall))
        .collect();
    println!(
        "per-round ratios: {} (median {:.2})",
        per_round.join(" "),
        median(
            &ducc
                .samples
                .iter()
                .zip(&peer.samples)
                .map(|(d, p)| d.wall / p.wall)
                .collect::<Vec<_>>()
        )
    );
    println!(
        "\nevents of the last full ducc convert (time since start, as ducc reports them):\n{timeline}"
    );
}

/// The floor lines: its halves, the floor, ratios of ours and the peer's to it, the load.
fn report_floor(ducc: &Contender, peer: &Contender, floor: &Floor, load_before: &str, tmpfs: bool) {
    println!(
        "\nfloor ({}): the slower of decoding and writing both trees, which overlap on two cores",
        if tmpfs { "tmpfs" } else { "as above" }
    );
    for c in [&floor.decode, &floor.write] {
        println!(
            "{:<34} {:>9.2} s wall {:>9.2} s cpu {:>8.1} MiB",
            c.name,
            c.wall(),
            c.cpu(),
            c.peak_rss_mib()
        );
    }
    let f = floor.wall();
    println!(
        "peer {:.2} s, floor {f:.2} s, ours {:.2} s: ours/peer {:.2} (target <= {RATIO_TARGET}), ours/floor {:.2} (target <= 1.3), floor/peer {:.2}; peak RSS {:.1} MiB",
        peer.wall(),
        ducc.wall(),
        ducc.wall() / peer.wall(),
        ducc.wall() / f,
        f / peer.wall(),
        ducc.peak_rss_mib()
    );
    println!(
        "load average: {load_before} before, {} after",
        load_average()
    );
}
