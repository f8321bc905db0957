//! `cargo xtask bench unpack [--rounds N] [--no-registry] [--no-fresh-fs]`: ducc-unpack's flat extraction of the
//! bench image side by side with its peers. Contenders:
//!
//! - `ducc-unpack flat`: a release build of this xtask in its hidden `flat-worker` mode, which
//!   streams each layer blob of the OCI layout through `FlatExtractor::apply_blob` (digest and
//!   diff_id checked);
//! - `umoci raw unpack` of the same layout;
//! - `gzip -dc | sha256sum` of the same blobs (decompress and hash only: the floor);
//! - unless `--no-registry`: `ducc unpack-image` (release) from a distribution registry on
//!   loopback, against `skopeo copy` to a layout plus `umoci raw unpack` (SPEC section 6).
//!
//! One unmeasured round first warms the page cache for all of them. As root every run writes to a
//! brand-new loop-mounted ext4 filesystem (`--no-fresh-fs`: a directory on the scratch one);
//! `--tmpfs`: into tmpfs, each run right after 3 GiB were written there and freed (`prewarm`).

use std::path::Path;

use anyhow::{Context, bail};
use ducc_tests::fixtures;

use super::{
    Area, Contender, Floor, FreshFs, fresh_dir, load_average, measure, parse_options, prepare,
    prewarm, registry_with, remove_dir, require_tools, skopeo_umoci_command, target_dir,
    uncompressed_size,
};

/// Where the registry holds the bench image.
const REFERENCE: &str = "bench/image:latest";
/// The flat tree from the registry, at most this share of the peer's time (SPEC section 6).
const RATIO_TARGET: f64 = 0.25;

/// The measured ducc-unpack process: flat-extracts the bench image's layout into DEST.
pub(super) fn flat_worker(args: &[String]) -> anyhow::Result<()> {
    let [dest] = args else {
        bail!("usage: xtask bench flat-worker DEST")
    };
    let image = fixtures::bench_image()?;
    let dest = Path::new(dest);
    std::fs::create_dir_all(dest)?;
    let mut flat = ducc_unpack::FlatExtractor::new(dest, &ducc_unpack::ExtractOptions::new())?;
    for layer in &image.layers {
        let (blob, descriptor) = super::open_layer(&image, layer)?;
        flat.apply_blob(blob, &descriptor)?;
    }
    let report = flat.finish();
    eprintln!(
        "flat-worker: {} entries, {} bytes",
        report.entries, report.file_bytes
    );
    Ok(())
}

/// `cargo xtask bench unpack`.
pub(super) fn run(args: &[String]) -> anyhow::Result<()> {
    let options = parse_options(args, &["--no-registry", "--no-fresh-fs", "--tmpfs"])?;
    let tmpfs = options.flags.iter().any(|f| f == "--tmpfs");
    let rounds = options.rounds;
    let registry = !options.flags.iter().any(|f| f == "--no-registry");
    let fresh = !options.flags.iter().any(|f| f == "--no-fresh-fs") && FreshFs::available();
    require_tools(&[
        ("/usr/bin/time", "time"),
        ("umoci", "umoci"),
        ("gzip", "gzip"),
        ("sha256sum", "coreutils"),
        ("tar", "tar"),
    ])?;
    let packages: &[&str] = if registry {
        &["xtask", "ducc-cli"]
    } else {
        &["xtask"]
    };
    let image = prepare(packages)?;
    let target = target_dir();
    let worker = target.join("release/xtask");
    let ducc = target.join("release/ducc");
    let uncompressed = uncompressed_size(&image)?;
    let compressed: u64 = image.layers.iter().map(|l| l.size).sum();

    let blobs: Vec<String> = image
        .layers
        .iter()
        .map(|l| image.blob_path(&l.digest).display().to_string())
        .collect();
    let mut contenders = vec![
        Contender::new(
            "ducc-unpack flat (layout)",
            format!("{} bench flat-worker {{dest}}", worker.display()),
        ),
        Contender::new(
            "umoci raw unpack (layout)",
            format!(
                "umoci raw unpack --image {} {{dest}}/rootfs",
                image.layout_ref()
            ),
        ),
        Contender::new(
            "gzip -dc | sha256sum",
            blobs
                .iter()
                .map(|b| format!("gzip -dc {b} | sha256sum >/dev/null"))
                .collect::<Vec<_>>()
                .join(" && "),
        ),
    ];
    // The registry stops when this guard is dropped, after the runs.
    let _registry_guard = if registry {
        let reg = registry_with(&image, REFERENCE)
            .context("(pass --no-registry to bench without a registry)")?;
        contenders.push(Contender::new(
            "ducc unpack-image (registry)",
            format!(
                "{} unpack-image {} {{dest}}/rootfs",
                ducc.display(),
                reg.image(REFERENCE)
            ),
        ));
        contenders.push(Contender::new(
            "skopeo copy + umoci raw unpack",
            skopeo_umoci_command(reg.host(), REFERENCE),
        ));
        Some(reg)
    } else {
        None
    };

    let setup = fresh_dir("unpack-setup")?;
    let mut floor = Floor::new(&image, &setup, 1)?;
    let load_before = load_average();
    // One unmeasured round warms the page cache for everyone.
    let mut area = if tmpfs {
        Area::tmpfs("unpack")?
    } else {
        Area::new("unpack", fresh)?
    };
    for round in 0..=rounds {
        for c in contenders
            .iter_mut()
            .chain([&mut floor.decode, &mut floor.write])
        {
            let dest = area.next_run()?;
            if tmpfs {
                prewarm()?;
            }
            let m = measure(&c.command_for(&dest)).with_context(|| format!("{} failed", c.name))?;
            area.clear()?;
            if round > 0 {
                eprintln!("round {round}: {:<32} {m}", c.name);
                c.samples.push(m);
            }
        }
    }

    remove_dir(&setup)?;
    println!(
        "\nbench unpack: {} layers, {:.0} MB compressed, {:.0} MB uncompressed, {rounds} rounds (median), into {}; load average {load_before} before, {} after",
        image.layers.len(),
        compressed as f64 / 1e6,
        uncompressed as f64 / 1e6,
        if tmpfs {
            "tmpfs"
        } else if fresh {
            "fresh ext4"
        } else {
            "the scratch dir"
        },
        load_average()
    );
    let ducc_time = contenders[0].wall();
    let ducc_cpu = contenders[0].cpu();
    println!(
        "{:<32} {:>9} {:>9} {:>11} {:>11} {:>12}",
        "contender", "wall (s)", "cpu (s)", "ducc/this", "ducc/this", "peak RSS"
    );
    println!(
        "{:<32} {:>9} {:>9} {:>11} {:>11} {:>12}",
        "", "", "", "(wall)", "(cpu)", ""
    );
    for c in contenders.iter().chain([&floor.decode, &floor.write]) {
        println!(
            "{:<32} {:>9.2} {:>9.2} {:>11.2} {:>11.2} {:>8.1} MiB",
            c.name,
            c.wall(),
            c.cpu(),
            ducc_time / c.wall(),
            ducc_cpu / c.cpu(),
            c.peak_rss_mib()
        );
    }
    let floor_wall = floor.wall();
    println!("floor (slower of decode and tar -x, which overlap on two cores): {floor_wall:.2} s");
    if registry {
        let d = contenders[3].wall();
        let s = contenders[4].wall();
        println!(
            "\nfrom the registry: ducc unpack-image / (skopeo copy + umoci) = {:.2} (target <= {RATIO_TARGET}); \
             / floor = {:.2} (target <= 1.3); floor / peer = {:.2}; peak RSS {:.1} MiB (target < 64)",
            d / s,
            d / floor_wall,
            floor_wall / s,
            contenders[3].peak_rss_mib()
        );
    }
    println!(
        "layout: ducc-unpack flat / umoci = {:.2} wall, {:.2} cpu; / floor = {:.2}; peak RSS of ducc-unpack flat {:.1} MiB (target < 64)",
        ducc_time / contenders[1].wall(),
        ducc_cpu / contenders[1].cpu(),
        ducc_time / floor_wall,
        contenders[0].peak_rss_mib()
    );
    Ok(())
}
