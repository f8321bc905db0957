//! `cargo xtask bench unpack [--rounds N] [--no-registry]`: ducc-unpack's flat extraction of a
//! 1 GB-class image side by side with its peers, several rounds, median wall time and peak RSS.
//!
//! The image is the `bench` fixture (Debian bookworm minbase plus build-essential, python3 and
//! friends: about 1 GB uncompressed in four gzip layers, built once by debootstrap). Contenders,
//! each run as its own process under `/usr/bin/time` (wall time, max RSS):
//!
//! - `ducc-unpack flat`: a release build of this xtask in its hidden `flat-worker` mode, which
//!   streams each layer blob of the OCI layout through `FlatExtractor::apply_blob` (digest and
//!   diff_id checked);
//! - `umoci raw unpack` of the same layout;
//! - `gzip -dc | sha256sum` of the same blobs (decompress and hash only: the floor);
//! - unless `--no-registry`: `ducc unpack-image` (release) from a distribution registry on
//!   loopback, against `skopeo copy` to a layout plus `umoci raw unpack` (SPEC section 6).
//!
//! The page cache is warm for all of them (one unmeasured run of each first). On a shared
//! machine the numbers move; the ratios are what to read.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use ducc_tests::fixtures::{self, Image};

/// Runs `cargo xtask bench WHAT`.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some("unpack") => unpack(&args[1..]),
        Some("flat-worker") => flat_worker(&args[1..]),
        _ => bail!("usage: cargo xtask bench unpack [--rounds N] [--no-registry]"),
    }
}

/// The measured ducc-unpack process: flat-extracts the bench image's layout into DEST.
fn flat_worker(args: &[String]) -> anyhow::Result<()> {
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

struct Contender {
    name: &'static str,
    /// Shell command; `{dest}` is replaced by a fresh directory path.
    command: String,
    times: Vec<f64>,
    cpu: Vec<f64>,
    rss_kib: Vec<u64>,
}

fn unpack(args: &[String]) -> anyhow::Result<()> {
    let mut rounds = 3usize;
    let mut registry = true;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--rounds" => {
                rounds = it
                    .next()
                    .context("--rounds needs a number")?
                    .parse()
                    .context("--rounds N")?;
            }
            "--no-registry" => registry = false,
            other => bail!("unknown bench option {other}"),
        }
    }
    for (tool, package) in [
        ("/usr/bin/time", "time"),
        ("umoci", "umoci"),
        ("gzip", "gzip"),
        ("sha256sum", "coreutils"),
    ] {
        if !on_path(tool) {
            bail!("{tool} is missing: install it with `apt-get install {package}`");
        }
    }
    eprintln!(
        "xtask: building the bench image (debootstrap on first use) and the release binaries"
    );
    let image = fixtures::bench_image()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut build = vec!["build", "--release", "-p", "xtask"];
    if registry {
        build.extend(["-p", "ducc-cli"]);
    }
    let status = Command::new(&cargo).args(&build).status()?;
    if !status.success() {
        bail!("release build failed");
    }
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
        Contender {
            name: "ducc-unpack flat (layout)",
            command: format!("{} bench flat-worker {{dest}}", worker.display()),
            times: vec![],
            cpu: vec![],
            rss_kib: vec![],
        },
        Contender {
            name: "umoci raw unpack (layout)",
            command: format!(
                "umoci raw unpack --image {} {{dest}}/rootfs",
                image.layout_ref()
            ),
            times: vec![],
            cpu: vec![],
            rss_kib: vec![],
        },
        Contender {
            name: "gzip -dc | sha256sum",
            command: blobs
                .iter()
                .map(|b| format!("gzip -dc {b} | sha256sum >/dev/null"))
                .collect::<Vec<_>>()
                .join(" && "),
            times: vec![],
            cpu: vec![],
            rss_kib: vec![],
        },
    ];
    // The registry stops when this guard is dropped, after the runs.
    let _registry_guard = if registry {
        for (tool, package) in [("skopeo", "skopeo"), ("docker-registry", "docker-registry")] {
            if !on_path(tool) {
                bail!(
                    "{tool} is missing: install it with `apt-get install {package}` (or pass --no-registry)"
                );
            }
        }
        let reg = ducc_tests::Registry::start(ducc_tests::Flavour::Anonymous);
        let status = Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{}", image.layout_ref()))
            .arg(format!("docker://{}/bench/image:latest", reg.host()))
            .status()?;
        if !status.success() {
            bail!("skopeo copy of the bench image into the registry failed");
        }
        contenders.push(Contender {
            name: "ducc unpack-image (registry)",
            command: format!(
                "{} unpack-image {} {{dest}}/rootfs",
                ducc.display(),
                reg.image("bench/image:latest")
            ),
            times: vec![],
            cpu: vec![],
            rss_kib: vec![],
        });
        contenders.push(Contender {
            name: "skopeo copy + umoci raw unpack",
            command: format!(
                "skopeo copy --quiet --src-tls-verify=false docker://{}/bench/image:latest oci:{{dest}}/layout:latest \
                 && umoci raw unpack --image {{dest}}/layout:latest {{dest}}/rootfs",
                reg.host()
            ),
            times: vec![],
            cpu: vec![],
            rss_kib: vec![],
        });
        Some(reg)
    } else {
        None
    };

    let scratch = fixtures::fixtures_dir().join("bench-scratch");
    std::fs::create_dir_all(&scratch)?;
    // One unmeasured round warms the page cache for everyone.
    for round in 0..=rounds {
        for c in &mut contenders {
            let dest = scratch.join(format!("run-{}", std::process::id()));
            if dest.exists() {
                std::fs::remove_dir_all(&dest)?;
            }
            std::fs::create_dir_all(&dest)?;
            let (secs, rss, cpu) =
                measure(&c.command.replace("{dest}", &dest.display().to_string()))
                    .with_context(|| format!("{} failed", c.name))?;
            std::fs::remove_dir_all(&dest)?;
            if round > 0 {
                eprintln!(
                    "round {round}: {:<32} {secs:>7.2} s wall {cpu:>7.2} s cpu {rss:>7} KiB",
                    c.name
                );
                c.times.push(secs);
                c.cpu.push(cpu);
                c.rss_kib.push(rss);
            }
        }
    }

    println!(
        "\nbench unpack: {} layers, {:.0} MB compressed, {:.0} MB uncompressed, {rounds} rounds (median)",
        image.layers.len(),
        compressed as f64 / 1e6,
        uncompressed as f64 / 1e6
    );
    let ducc_time = median(&contenders[0].times);
    let ducc_cpu = median(&contenders[0].cpu);
    println!(
        "{:<32} {:>9} {:>9} {:>11} {:>11} {:>12}",
        "contender", "wall (s)", "cpu (s)", "ducc/this", "ducc/this", "peak RSS"
    );
    println!(
        "{:<32} {:>9} {:>9} {:>11} {:>11} {:>12}",
        "", "", "", "(wall)", "(cpu)", ""
    );
    for c in &contenders {
        let rss = c.rss_kib.iter().copied().max().unwrap_or(0);
        println!(
            "{:<32} {:>9.2} {:>9.2} {:>11.2} {:>11.2} {:>8.1} MiB",
            c.name,
            median(&c.times),
            median(&c.cpu),
            ducc_time / median(&c.times),
            ducc_cpu / median(&c.cpu),
            rss as f64 / 1024.0
        );
    }
    if registry {
        let d = median(&contenders[3].times);
        let s = median(&contenders[4].times);
        let g = median(&contenders[2].times);
        println!(
            "\nfrom the registry: ducc unpack-image / (skopeo copy + umoci) = {:.2} (target <= 0.5); \
             / (gzip -dc | sha256sum) = {:.2} (target <= 1.3)",
            d / s,
            d / g
        );
    }
    println!(
        "layout: ducc-unpack flat / umoci = {:.2} wall, {:.2} cpu (target <= 0.5); peak RSS of ducc-unpack flat {:.1} MiB (target < 64)",
        ducc_time / median(&contenders[1].times),
        ducc_cpu / median(&contenders[1].cpu),
        contenders[0].rss_kib.iter().copied().max().unwrap_or(0) as f64 / 1024.0
    );
    Ok(())
}

/// Runs a shell command under `/usr/bin/time`; returns wall seconds, max RSS in KiB and CPU
/// seconds (user + system, of the command and its children).
fn measure(command: &str) -> anyhow::Result<(f64, u64, f64)> {
    let stats = tempfile_path("time");
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%e %M %U %S")
        .arg("-o")
        .arg(&stats)
        .args(["sh", "-c", command])
        .output()?;
    let wall = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "`{command}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = std::fs::read_to_string(&stats)?;
    let _ = std::fs::remove_file(&stats);
    let last = text.lines().last().unwrap_or_default();
    let fields: Vec<&str> = last.split_whitespace().collect();
    let rss = fields.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    let cpu: f64 = fields
        .iter()
        .skip(2)
        .filter_map(|v| v.parse::<f64>().ok())
        .sum();
    Ok((wall, rss, cpu))
}

fn tempfile_path(label: &str) -> PathBuf {
    std::env::temp_dir().join(format!("xtask-bench-{label}-{}", std::process::id()))
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn uncompressed_size(image: &Image) -> anyhow::Result<u64> {
    let mut total = 0;
    for layer in &image.layers {
        let blob = std::fs::File::open(image.blob_path(&layer.digest))?;
        let mut reader = ducc_unpack::LayerReader::open(
            std::io::BufReader::new(blob),
            &ducc_unpack::LayerDescriptor::new(layer.digest.clone(), layer.media_type.clone()),
        )?;
        std::io::copy(&mut reader, &mut std::io::sink())?;
        total += reader.finish()?.uncompressed_size;
    }
    Ok(total)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    )
}

fn on_path(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}
