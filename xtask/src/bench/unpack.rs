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
//! brand-new loop-mounted ext4 filesystem (`--no-fresh-fs`: a directory on the scratch one).

use std::path::Path;

use anyhow::{Context, bail};
use ducc_tests::fixtures;

use super::{
    Area, Contender, FreshFs, measure, parse_options, prepare, registry_with, require_tools,
    skopeo_umoci_command, target_dir, uncompressed_size,
};

/// Where the registry holds the bench image.
const REFERENCE: &str = "bench/image:latest";

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
        let descriptor =
            ducc_unpack::LayerDescriptor::new(layer.digest.clone(), layer.media_type.clone())
                .with_blob_digest(layer.digest.parse()?)
                .with_diff_id(layer.diff_id.parse()?);
        let blob = std::fs::File::open(image.blob_path(&layer.digest))?;
        flat.apply_blob(
            std::io::BufReader::with_capacity(1 << 20, blob),
            &descriptor,
        )?;
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
    let options = parse_options(args, &["--no-registry", "--no-fresh-fs"])?;
    let rounds = options.rounds;
    let registry = !options.flags.iter().any(|f| f == "--no-registry");
    let fresh = !options.flags.iter().any(|f| f == "--no-fresh-fs") && FreshFs::available();
    require_tools(&[
        ("/usr/bin/time", "time"),
        ("umoci", "umoci"),
        ("gzip", "gzip"),
        ("sha256sum", "coreutils"),
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

    // One unmeasured round warms the page cache for everyone.
    let mut area = Area::new("unpack", fresh)?;
    for round in 0..=rounds {
        for c in &mut contenders {
            let dest = area.next_run()?;
            let m = measure(&c.command_for(&dest)).with_context(|| format!("{} failed", c.name))?;
            area.clear()?;
            if round > 0 {
                eprintln!("round {round}: {:<32} {m}", c.name);
                c.samples.push(m);
            }
        }
    }

    println!(
        "\nbench unpack: {} layers, {:.0} MB compressed, {:.0} MB uncompressed, {rounds} rounds (median)",
        image.layers.len(),
        compressed as f64 / 1e6,
        uncompressed as f64 / 1e6
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
    for c in &contenders {
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
    if registry {
        let d = contenders[3].wall();
        let s = contenders[4].wall();
        let g = contenders[2].wall();
        println!(
            "\nfrom the registry: ducc unpack-image / (skopeo copy + umoci) = {:.2} (target <= 0.5); \
             / (gzip -dc | sha256sum) = {:.2} (target <= 1.3)",
            d / s,
            d / g
        );
    }
    println!(
        "layout: ducc-unpack flat / umoci = {:.2} wall, {:.2} cpu (target <= 0.5); peak RSS of ducc-unpack flat {:.1} MiB (target < 64)",
        ducc_time / contenders[1].wall(),
        ducc_cpu / contenders[1].cpu(),
        contenders[0].peak_rss_mib()
    );
    Ok(())
}
