//! `cargo xtask bench WHAT`: benchmarks on the 1 GB-class `bench` fixture image, side by side with
//! peer tools, several rounds, medians, ratios and peak RSS (SPEC section 6).
//!
//! - `bench unpack [--rounds N] [--no-registry] [--no-fresh-fs]`: ducc-unpack's flat extraction
//!   against `umoci raw unpack` and `gzip -dc | sha256sum`; with the registry, `ducc
//!   unpack-image` against `skopeo copy` + `umoci raw unpack` (see [`unpack`]).
//! - `bench convert [--rounds N] [--no-fresh-fs]`: the whole `ducc convert` of a one-image wish
//!   list (layers and flat tree, local publisher, no thin image) from a registry on loopback
//!   against `skopeo copy` followed by `umoci raw unpack`, plus the no-op rerun and a layers-only
//!   / flat-only breakdown (see [`convert`]).
//! - `bench gc [--rounds N] [--images N]`: `ducc prune` of half of a repository of 200 small
//!   synthetic images (shared base layers), then `ducc gc`: wall time, pieces and bytes removed,
//!   and `cvmfs_server` calls and revisions, with the local publisher and through the tests'
//!   stand-in (see [`gc`]).
//! - `bench nodes [--nodes 1,2,4] [--images N]`: N publisher nodes sharing one wish list with
//!   `--shard K/N` behind the stand-in gateway (see [`nodes`]).
//!
//! The image is the `bench` fixture (Debian bookworm minbase plus build-essential, python3 and
//! friends: about 1 GB uncompressed in four gzip layers, built once by debootstrap). Every
//! contender runs as its own process under `/usr/bin/time` (wall time, user and system CPU of the
//! command and its children, max RSS of its largest process), with a warm page cache, and (as
//! root, unless `--no-fresh-fs`) writes to a brand-new loop-mounted ext4 filesystem, see
//! [`FreshFs`]. On a shared machine the numbers move; the ratios are what to read.

mod convert;
mod convert_cvmfs;
mod gc;
mod nodes;
mod unpack;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use ducc_tests::fixtures::{self, Image};

const USAGE: &str = "\
usage: cargo xtask bench unpack [--rounds N] [--no-registry] [--no-fresh-fs] [--tmpfs]
       cargo xtask bench convert [--rounds N] [--no-fresh-fs] [--tmpfs]
       cargo xtask bench convert --publisher cvmfs [--rounds N]
       cargo xtask bench gc [--rounds N] [--images N]
       cargo xtask bench nodes [--nodes 1,2,4] [--images N]

  --tmpfs  every run writes to /dev/shm (tmpfs) instead of a fresh ext4; both benches also
           measure the floor: decoding with both digests, and tar -x of the uncompressed layers

  unpack   flat extraction of the 1 GB bench image: ducc-unpack vs umoci raw unpack vs
           gzip -dc | sha256sum (from the OCI layout), and ducc unpack-image vs skopeo copy +
           umoci raw unpack (from a registry on loopback, unless --no-registry)
  convert  the whole `ducc convert` (layers + flat tree, local publisher, -i) of the bench image
           from a registry on loopback vs skopeo copy + umoci raw unpack, medians of N rounds
           (default 3): wall, CPU, peak RSS, ratio (target <= 0.5), RSS (target < 64 MiB), the
           no-op rerun (target < 1 s per image), and a layers-only (-s) / flat-only (-d) breakdown;
           as root every run writes to a brand-new loop-mounted ext4 (--no-fresh-fs: the scratch dir)
  convert --publisher cvmfs
           the same conversion through cvmfs_server: with a real one on PATH into throwaway
           repositories (time, ingests and publishes per image), else through the tests'
           stand-in (counts only); fails when the no-op rerun publishes anything
  gc       a repository of N (default 200) synthetic images sharing base layers, half of them
           pruned, then gc --grace-period 0, with the local publisher and through the tests'
           cvmfs_server stand-in: wall time of convert (context), prune and gc, pieces and bytes
           removed, cvmfs_server calls and revisions; fails unless the kept images keep every
           layer, nothing only pruned images used remains and a second gc publishes nothing;
           medians of --rounds N (default 1)
  nodes    N publisher nodes (each count of --nodes, default 1,2,4) converting one wish list of
           --images N (default 12) small images sharing a base layer with --shard K/N, through
           the tests' cvmfs_server stand-in in gateway mode: wall time (stand-in timing, not a
           gateway's), ingests and publishes per image, lease waits (from the end_ducc
           events), remounts per node, images per minute; fails unless every image is
           converted once and the base's origin.json names them all";

/// Runs `cargo xtask bench WHAT`.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some("unpack") => unpack::run(&args[1..]),
        Some("convert") => {
            let rest = &args[1..];
            match rest.iter().position(|a| a == "--publisher") {
                Some(i) => {
                    let publisher = rest.get(i + 1).map(String::as_str);
                    let others: Vec<String> = rest[..i]
                        .iter()
                        .chain(rest.iter().skip(i + 2))
                        .cloned()
                        .collect();
                    match publisher {
                        Some("cvmfs") => convert_cvmfs::run(parse_options(&others, &[])?.rounds),
                        Some("local") => convert::run(&others),
                        _ => bail!("--publisher takes local or cvmfs\n{USAGE}"),
                    }
                }
                None => convert::run(rest),
            }
        }
        Some("gc") => gc::run(&args[1..]),
        Some("nodes") => nodes::run(&args[1..]),
        Some("flat-worker") => unpack::flat_worker(&args[1..]),
        Some("decode-worker") => decode_worker(),
        _ => bail!("{USAGE}"),
    }
}

/// The `cvmfs_server` calls of one step, from the log of the wrapper the benches give `ducc` as
/// `--cvmfs-server` (one line per call, its arguments).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Calls {
    all: usize,
    ingests: usize,
    deletes: usize,
    deleted_paths: usize,
    publishes: usize,
    aborts: usize,
}

impl Calls {
    /// Counts the calls of `lines` by kind; an `ingest` with `--delete`/`-d` is a delete.
    fn from_log(lines: &[String]) -> Calls {
        let mut calls = Calls::default();
        for line in lines {
            calls.all += 1;
            let words: Vec<&str> = line.split_whitespace().collect();
            let paths = words
                .iter()
                .filter(|w| **w == "--delete" || **w == "-d")
                .count();
            match words.first() {
                Some(&"ingest") if paths > 0 => {
                    calls.deletes += 1;
                    calls.deleted_paths += paths;
                }
                Some(&"ingest") => calls.ingests += 1,
                Some(&"publish") => calls.publishes += 1,
                Some(&"abort") => calls.aborts += 1,
                _ => {}
            }
        }
        calls
    }

    /// Revisions published: every ingest (a delete too) and every publish makes one.
    fn revisions(&self) -> u64 {
        (self.ingests + self.deletes + self.publishes) as u64
    }
}

/// Options every bench takes: `--rounds N` and any flags of its own.
struct Options {
    rounds: usize,
    flags: Vec<String>,
}

/// Parses `--rounds N` (default 3) and the switches in `allowed`.
fn parse_options(args: &[String], allowed: &[&str]) -> anyhow::Result<Options> {
    let mut options = Options {
        rounds: 3,
        flags: vec![],
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--rounds" => {
                options.rounds = it
                    .next()
                    .context("--rounds needs a number")?
                    .parse()
                    .context("--rounds N")?;
                if options.rounds == 0 {
                    bail!("--rounds must be at least 1");
                }
            }
            flag if allowed.contains(&flag) => options.flags.push(flag.to_owned()),
            other => bail!("unknown bench option {other}\n{USAGE}"),
        }
    }
    Ok(options)
}

/// One contender: a shell command measured once per round.
struct Contender {
    name: &'static str,
    /// Shell command; `{dest}` is replaced by a fresh directory path.
    command: String,
    samples: Vec<Measurement>,
}

impl Contender {
    fn new(name: &'static str, command: String) -> Contender {
        Contender {
            name,
            command,
            samples: vec![],
        }
    }

    /// The command with `{dest}` replaced.
    fn command_for(&self, dest: &Path) -> String {
        self.command.replace("{dest}", &dest.display().to_string())
    }

    fn wall(&self) -> f64 {
        median(&self.samples.iter().map(|m| m.wall).collect::<Vec<_>>())
    }

    /// Median user + system CPU seconds.
    fn cpu(&self) -> f64 {
        median(
            &self
                .samples
                .iter()
                .map(|m| m.user + m.sys)
                .collect::<Vec<_>>(),
        )
    }

    fn user(&self) -> f64 {
        median(&self.samples.iter().map(|m| m.user).collect::<Vec<_>>())
    }

    fn sys(&self) -> f64 {
        median(&self.samples.iter().map(|m| m.sys).collect::<Vec<_>>())
    }

    /// The highest peak RSS over all rounds, in MiB.
    fn peak_rss_mib(&self) -> f64 {
        self.samples.iter().map(|m| m.rss_kib).max().unwrap_or(0) as f64 / 1024.0
    }
}

/// What `/usr/bin/time` says about one run.
#[derive(Debug, Clone, Copy)]
struct Measurement {
    /// Wall seconds.
    wall: f64,
    /// User CPU seconds of the command and its children.
    user: f64,
    /// System CPU seconds of the command and its children.
    sys: f64,
    /// Max RSS of the largest process, in KiB.
    rss_kib: u64,
}

impl std::fmt::Display for Measurement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>7.2} s wall {:>7.2} s user {:>6.2} s sys {:>7} KiB",
            self.wall, self.user, self.sys, self.rss_kib
        )
    }
}

/// Runs a shell command under `/usr/bin/time`; fails when the command does.
fn measure(command: &str) -> anyhow::Result<Measurement> {
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
    let number = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    let (Some(rss_kib), Some(user), Some(sys)) = (number(1), number(2), number(3)) else {
        bail!("cannot read /usr/bin/time's output {last:?}");
    };
    Ok(Measurement {
        wall,
        user,
        sys,
        rss_kib: rss_kib as u64,
    })
}

/// Runs `step`, then says on stderr how long `what` took (the unmeasured setup and cleanup
/// between runs, which can dominate on a busy disk).
fn timed<T>(what: &str, step: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let started = Instant::now();
    let value = step()?;
    eprintln!(
        "xtask: {what} took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(value)
}

fn tempfile_path(label: &str) -> PathBuf {
    std::env::temp_dir().join(format!("xtask-bench-{label}-{}", std::process::id()))
}

/// The median: the middle value, or the mean of the two middle ones for an even count (NaN
/// for none).
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let middle = v.len() / 2;
    match (v.len() % 2, v.get(middle)) {
        (_, None) => f64::NAN,
        (1, Some(m)) => *m,
        (_, Some(upper)) => (v[middle - 1] + upper) / 2.0,
    }
}

/// Fails with an install hint when one of `(program, Debian package)` is not on PATH.
fn require_tools(tools: &[(&str, &str)]) -> anyhow::Result<()> {
    for (tool, package) in tools {
        if !on_path(tool) {
            bail!("{tool} is missing: install it with `apt-get install {package}`");
        }
    }
    Ok(())
}

/// A release build of ducc and the `cvmfs_server` stand-in: their paths.
fn release_ducc_and_standin() -> anyhow::Result<(PathBuf, PathBuf)> {
    eprintln!("xtask: building ducc and the cvmfs_server stand-in (release)");
    release_build(&["ducc-cli", "ducc-tests"])?;
    Ok((
        target_dir().join("release/ducc"),
        target_dir().join("release/cvmfs_server_standin"),
    ))
}

/// `cargo build --release` of `packages` (their libraries and binaries).
fn release_build(packages: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut build = Command::new(&cargo);
    build.args(["build", "--release"]);
    for package in packages {
        build.args(["-p", package]);
    }
    ensure!(
        build.status()?.success(),
        "release build of {} failed",
        packages.join(", ")
    );
    Ok(())
}

/// The bench image (built by debootstrap on first use) and a release build of `packages`.
fn prepare(packages: &[&str]) -> anyhow::Result<Image> {
    eprintln!(
        "xtask: building the bench image (debootstrap on first use) and the release binaries"
    );
    let image = fixtures::bench_image()?;
    release_build(packages)?;
    Ok(image)
}

/// A private registry on loopback holding the bench image as `reference` (`repo:tag`); it stops
/// when dropped.
fn registry_with(image: &Image, reference: &str) -> anyhow::Result<ducc_tests::Registry> {
    require_tools(&[("skopeo", "skopeo"), ("docker-registry", "docker-registry")])?;
    let registry = ducc_tests::Registry::start(ducc_tests::Flavour::Anonymous);
    let status = Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}", image.layout_ref()))
        .arg(format!("docker://{}/{reference}", registry.host()))
        .status()?;
    if !status.success() {
        bail!("skopeo copy of the bench image into the registry failed");
    }
    Ok(registry)
}

/// The peer from a registry: `skopeo copy` to a layout in `{dest}`, then `umoci raw unpack` of it
/// (`--rootless` when not root), as one command.
fn skopeo_umoci_command(host: &str, reference: &str) -> String {
    let rootless = if ducc_oci::is_root() {
        ""
    } else {
        " --rootless"
    };
    format!(
        "skopeo copy --quiet --src-tls-verify=false docker://{host}/{reference} oci:{{dest}}/layout:latest \
         && umoci raw unpack{rootless} --image {{dest}}/layout:latest {{dest}}/rootfs"
    )
}

/// A fresh, empty directory under the fixtures' scratch area for `label`.
fn fresh_dir(label: &str) -> anyhow::Result<PathBuf> {
    let dir = fixtures::fixtures_dir()
        .join("bench-scratch")
        .join(format!("{label}-{}", std::process::id()));
    remove_dir(&dir)?;
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A sparse file holding a brand-new ext4 filesystem, loop-mounted: each measured run writes into
/// one, so no run pays for the inodes earlier runs created and deleted. (On ext4 that churn is
/// not free: allocating inodes next to recently deleted ones can cost more system time than the
/// whole unpack.) Unmounted and deleted when dropped, or by [`FreshFs::recycle`].
struct FreshFs {
    image: PathBuf,
    mount: PathBuf,
    mounted: bool,
}

/// Size of each fresh filesystem (a sparse file: only what is written takes disk space).
const FRESH_FS_SIZE: u64 = 8 << 30;

impl FreshFs {
    /// Whether fresh filesystems can be made here: root, with mkfs.ext4 and mount.
    fn available() -> bool {
        ducc_oci::is_root() && on_path("mkfs.ext4") && on_path("mount") && on_path("umount")
    }

    /// Makes and mounts a fresh filesystem named `label` under the fixtures' scratch area.
    fn new(label: &str) -> anyhow::Result<FreshFs> {
        let base = fixtures::fixtures_dir()
            .join("bench-scratch")
            .join(format!("{label}-{}", std::process::id()));
        let mut fs = FreshFs {
            image: base.with_extension("ext4"),
            mount: base,
            mounted: false,
        };
        fs.make()?;
        Ok(fs)
    }

    /// The mounted filesystem's root.
    fn path(&self) -> &Path {
        &self.mount
    }

    /// Throws the filesystem away and mounts a brand-new one in its place.
    fn recycle(&mut self) -> anyhow::Result<()> {
        self.unmount()?;
        self.make()
    }

    fn make(&mut self) -> anyhow::Result<()> {
        if self.image.exists() {
            std::fs::remove_file(&self.image)?;
        }
        std::fs::File::create(&self.image)?.set_len(FRESH_FS_SIZE)?;
        run_quiet(
            Command::new("mkfs.ext4")
                .args([
                    "-q",
                    "-F",
                    "-E",
                    "lazy_itable_init=0,lazy_journal_init=0,nodiscard",
                ])
                .arg(&self.image),
        )?;
        std::fs::create_dir_all(&self.mount)?;
        run_quiet(
            Command::new("mount")
                .args(["-o", "loop"])
                .arg(&self.image)
                .arg(&self.mount),
        )?;
        self.mounted = true;
        Ok(())
    }

    fn unmount(&mut self) -> anyhow::Result<()> {
        if self.mounted {
            run_quiet(Command::new("umount").arg(&self.mount))?;
            self.mounted = false;
        }
        Ok(())
    }
}

impl Drop for FreshFs {
    fn drop(&mut self) {
        if let Err(err) = self.unmount() {
            eprintln!("xtask: {err:#}");
            return;
        }
        let _ = std::fs::remove_file(&self.image);
        let _ = std::fs::remove_dir(&self.mount);
    }
}

/// Where one contender writes: a [`FreshFs`] made anew for every run, or (without root, or with
/// `--no-fresh-fs`) a directory in the fixtures' scratch area, emptied for every run.
enum Area {
    Fresh(FreshFs),
    Dir(PathBuf),
}

impl Area {
    /// A directory on tmpfs, emptied for every run (`--tmpfs`).
    fn tmpfs(label: &str) -> anyhow::Result<Area> {
        Ok(Area::Dir(tmpfs_dir(label)?))
    }

    fn new(label: &str, fresh: bool) -> anyhow::Result<Area> {
        Ok(if fresh {
            Area::Fresh(FreshFs::new(label)?)
        } else {
            Area::Dir(fresh_dir(label)?)
        })
    }

    /// A new, empty directory for the next run (on a brand-new filesystem where fresh).
    fn next_run(&mut self) -> anyhow::Result<PathBuf> {
        let dir = match self {
            Area::Fresh(fs) => {
                fs.recycle()?;
                fs.path().join("run")
            }
            Area::Dir(dir) => {
                remove_dir(dir)?;
                dir.join("run")
            }
        };
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Frees the space the last run took.
    fn clear(&mut self) -> anyhow::Result<()> {
        match self {
            Area::Fresh(fs) => {
                fs.unmount()?;
                std::fs::remove_file(&fs.image)
                    .with_context(|| format!("cannot remove {}", fs.image.display()))
            }
            Area::Dir(dir) => remove_dir(dir),
        }
    }
}

/// Runs `command`, failing with its stderr when it fails.
fn run_quiet(command: &mut Command) -> anyhow::Result<()> {
    let out = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Removes `dir` and everything in it, if it exists.
fn remove_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    Ok(())
}

/// Total uncompressed size of the image's layers.
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

/// The floor of a conversion (issue 14, SPEC section 6): decoding the layer blobs with both
/// digests on one core, overlapped with writing the files on the other. Measured in its two
/// halves, each a contender: `decode` (this xtask's `decode-worker`: every blob through
/// `LayerReader`, the decompressor ducc uses, blob digest and diff_id checked, output dropped)
/// and `write` (`tar -x` of the uncompressed layer tars, prepared once in `setup`, into one
/// tree, or into one tree plus one directory per layer when `trees` is 2). The floor is the
/// slower of the two.
struct Floor {
    decode: Contender,
    write: Contender,
}

impl Floor {
    fn new(image: &Image, setup: &Path, trees: usize) -> anyhow::Result<Floor> {
        let worker = target_dir().join("release/xtask");
        let mut extract = vec!["mkdir -p {dest}/flat".to_owned()];
        for (n, layer) in image.layers.iter().enumerate() {
            let tar = setup.join(format!("layer-{n}.tar"));
            if !tar.is_file() {
                let blob = std::fs::File::open(image.blob_path(&layer.digest))?;
                let mut reader = ducc_unpack::LayerReader::open(
                    std::io::BufReader::new(blob),
                    &ducc_unpack::LayerDescriptor::new(
                        layer.digest.clone(),
                        layer.media_type.clone(),
                    ),
                )?;
                let mut out = std::io::BufWriter::new(std::fs::File::create(&tar)?);
                std::io::copy(&mut reader, &mut out)?;
                reader.finish()?;
            }
            extract.push(format!("tar -xf {} -C {{dest}}/flat", tar.display()));
            if trees > 1 {
                extract.push(format!(
                    "mkdir -p {{dest}}/layer-{n} && tar -xf {} -C {{dest}}/layer-{n}",
                    tar.display()
                ));
            }
        }
        let write_name = if trees > 1 {
            "floor: tar -x (flat + layers)"
        } else {
            "floor: tar -x (flat)"
        };
        Ok(Floor {
            decode: Contender::new(
                "floor: decode + both digests",
                format!("{} bench decode-worker", worker.display()),
            ),
            write: Contender::new(write_name, extract.join(" && ")),
        })
    }

    /// The floor's wall time: the slower half (they overlap on two cores).
    fn wall(&self) -> f64 {
        self.decode.wall().max(self.write.wall())
    }
}

/// The measured decode-only process: every bench layer blob decompressed and both digests
/// checked, the tar dropped.
pub(super) fn decode_worker() -> anyhow::Result<()> {
    let image = fixtures::bench_image()?;
    for layer in &image.layers {
        let (blob, descriptor) = open_layer(&image, layer)?;
        let mut reader = ducc_unpack::LayerReader::open(blob, &descriptor)?;
        std::io::copy(&mut reader, &mut std::io::sink())?;
        reader.finish()?;
    }
    Ok(())
}

/// The cached blob of a bench layer, opened for reading, and its descriptor with both digests
/// to check.
pub(super) fn open_layer(
    image: &Image,
    layer: &fixtures::LayerInfo,
) -> anyhow::Result<(
    std::io::BufReader<std::fs::File>,
    ducc_unpack::LayerDescriptor,
)> {
    let descriptor =
        ducc_unpack::LayerDescriptor::new(layer.digest.clone(), layer.media_type.clone())
            .with_blob_digest(layer.digest.parse()?)
            .with_diff_id(layer.diff_id.parse()?);
    let blob = std::fs::File::open(image.blob_path(&layer.digest))?;
    Ok((std::io::BufReader::with_capacity(1 << 20, blob), descriptor))
}

/// The 1, 5 and 15 minute load averages (the machine is shared: read the figures with them).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Bytes that [`prewarm`] writes to tmpfs and frees: more than any contender's output.
const PREWARM_BYTES: usize = 3 << 30;

/// Writes [`PREWARM_BYTES`] to a file on tmpfs and deletes it, just before a measured `--tmpfs`
/// run. A VM whose kernel reports free pages to its host (Linux free page reporting, as on the
/// machines these benches run on) hands freed memory back within seconds, and the next first
/// touch of each page then costs a fault in the host: whoever ran first after a round's
/// output was deleted wrote into warm pages and the next contender into cold ones, worth up to
/// 2x in system time for the same work. Freshly freed pages for every run make the runs
/// comparable (and match a machine without page reporting).
fn prewarm() -> anyhow::Result<()> {
    use std::io::Write as _;
    let path = Path::new("/dev/shm").join(format!("ducc-bench-prewarm-{}", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut file = std::fs::File::create(&path)?;
        let chunk = vec![0x5a_u8; 1 << 20];
        for _ in 0..PREWARM_BYTES / chunk.len() {
            file.write_all(&chunk)?;
        }
        Ok(())
    })();
    let removed = std::fs::remove_file(&path);
    written.with_context(|| format!("cannot write {}", path.display()))?;
    removed.with_context(|| format!("cannot remove {}", path.display()))
}

/// A directory on tmpfs (`/dev/shm`) for `label`, emptied, for `--tmpfs` runs.
fn tmpfs_dir(label: &str) -> anyhow::Result<PathBuf> {
    let dir = Path::new("/dev/shm").join(format!("ducc-bench-{label}-{}", std::process::id()));
    remove_dir(&dir)?;
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        let close = |got: f64, want: f64| (got - want).abs() < 1e-9;
        assert!(close(median(&[4.6, 3.9, 4.5, 4.1]), 4.3));
        assert!(close(median(&[3.0, 1.0, 2.0]), 2.0));
        assert!(close(median(&[5.0]), 5.0));
        assert!(median(&[]).is_nan());
    }
}
