//! `cargo xtask bench gc [--rounds N] [--images N]`: the repository lifecycle at scale (issue
//! 15): a repository of 200 images built from small synthetic layers, many shared, half of them
//! pruned, then garbage collection; wall time and publishes, with the local publisher and through
//! the tests' `cvmfs_server` stand-in.
//!
//! - The images: [`BASES`] shared base layers (one 8 KiB random file each, gzip, built by the
//!   tests' `ImageSpec`), and per image one own layer (a plain tar of three small random files
//!   under `opt/img-NNN/`) on top of one or two bases. Images `2k` and `2k+1` share their first
//!   base, so every base but the last outlives the prune; a quarter of the images (all of them
//!   pruned) also use the last base, which therefore goes with them. They are pushed once, as
//!   `bench/gc:img-NNN`, to a private registry on loopback.
//! - Each round and publisher: a fresh work directory; `ducc convert` of a wish list naming all
//!   images by tag (`-i`; context only), `ducc prune` with a wish list naming the even-numbered
//!   half (`--max-deletions` the image count), `ducc gc --grace-period 0`, and a second gc.
//! - Through the stand-in (`cvmfs_server_standin`, built in release mode from the tests crate,
//!   run behind a wrapper script that logs every call, given as `--cvmfs-server`): the
//!   `cvmfs_server` calls of prune and of gc by kind (ingests, `ingest --delete` calls, paths
//!   deleted, transaction publishes) and the revisions, read from the stand-in's own revision
//!   counter and checked against the calls. Its times are those of a stand-in, not of a server.
//! - The bench fails unless: convert, prune and both gcs exit 0; prune deletes exactly the odd
//!   half (markers and links gone, every layer still there); after gc every layer and flat tree
//!   of a kept image exists and nothing else does (no layer only pruned images used); the second
//!   gc removes nothing, publishes nothing (0 revisions) and leaves the tree as it was.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};
use ducc_tests::images::{self, Blob, Format, ImageSpec};
use ducc_tests::tree::{Options as TreeOptions, Tree};
use serde_json::{Value, json};

use super::{
    Calls, Measurement, fresh_dir, load_average, measure, median, remove_dir, require_tools,
};

/// The CernVM-FS repository the images are converted into.
const CVMFS_REPO: &str = "gc-bench.test";
/// The registry repository the images are pushed to.
const REPOSITORY: &str = "bench/gc";
/// Shared base layers.
const BASES: usize = 20;
/// Size of the random file in each base layer.
const BASE_FILE_SIZE: usize = 8192;
/// Files in each image's own layer.
const OWN_FILES: usize = 3;
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const TAR_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// `--rounds N` (default 1) and `--images N` (default 200).
struct Options {
    rounds: usize,
    images: usize,
}

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut options = Options {
        rounds: 1,
        images: 200,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut number = |name: &str| -> anyhow::Result<usize> {
            it.next()
                .with_context(|| format!("{name} needs a number"))?
                .parse()
                .with_context(|| format!("{name} N"))
        };
        match arg.as_str() {
            "--rounds" => options.rounds = number("--rounds")?,
            "--images" => options.images = number("--images")?,
            other => bail!("unknown option {other} of bench gc\n{}", super::USAGE),
        }
    }
    ensure!(options.rounds >= 1, "--rounds must be at least 1");
    ensure!(
        options.images >= 4,
        "--images must be at least 4 (pruning half must leave shared layers behind)"
    );
    Ok(options)
}

/// One image of the corpus, as pushed.
struct Synthetic {
    tag: String,
    /// Hex of each layer's blob digest, in order.
    layers: Vec<String>,
    /// Hex of the config digest.
    config: String,
    /// Whether the second wish list keeps it (even-numbered images).
    kept: bool,
}

/// The images of the bench and what pruning half of them must leave.
struct Corpus {
    images: Vec<Synthetic>,
}

impl Corpus {
    fn layers_of(&self, kept: bool) -> BTreeSet<String> {
        self.images
            .iter()
            .filter(|i| i.kept == kept)
            .flat_map(|i| i.layers.iter().cloned())
            .collect()
    }

    /// Layers of the images the prune keeps.
    fn kept_layers(&self) -> BTreeSet<String> {
        self.layers_of(true)
    }

    /// Layers that only pruned images use.
    fn pruned_only_layers(&self) -> BTreeSet<String> {
        let kept = self.kept_layers();
        self.layers_of(false)
            .into_iter()
            .filter(|l| !kept.contains(l))
            .collect()
    }

    fn all_layers(&self) -> BTreeSet<String> {
        self.images
            .iter()
            .flat_map(|i| i.layers.iter().cloned())
            .collect()
    }

    fn configs(&self, kept: bool) -> BTreeSet<String> {
        self.images
            .iter()
            .filter(|i| i.kept == kept)
            .map(|i| i.config.clone())
            .collect()
    }

    fn kept_count(&self) -> usize {
        self.images.iter().filter(|i| i.kept).count()
    }
}

/// The bases image `index` stands on: its first base shared with its even/odd neighbour (from
/// all bases but the last), a second one for every fourth image, and the last base for the
/// images `4k+1` (all pruned).
fn bases_of(index: usize) -> Vec<usize> {
    let first = (index / 2) % (BASES - 1);
    match index % 4 {
        1 => vec![first, BASES - 1],
        2 => vec![first, (first + 5) % (BASES - 1)],
        _ => vec![first],
    }
}

/// Builds the corpus and pushes it to the registry at `host` (bases once, then each image's own
/// layer, config and manifest).
fn build_and_push(host: &str, count: usize) -> anyhow::Result<Corpus> {
    let client = images::client_for(host, None);
    let repo = images::repository(host, REPOSITORY);
    let pool = ImageSpec::new(Format::Oci)
        .layers(BASES)
        .layer_file_size(BASE_FILE_SIZE)
        .build();
    let pool_config: Value = serde_json::from_slice(&pool.config.bytes)?;
    let base_diff_ids: Vec<String> = pool_config["rootfs"]["diff_ids"]
        .as_array()
        .context("the base pool's config lists no diff_ids")?
        .iter()
        .filter_map(|d| d.as_str().map(str::to_owned))
        .collect();
    ensure!(
        base_diff_ids.len() == BASES,
        "the base pool has no diff_id for every layer"
    );
    for base in &pool.layers {
        images::push_blob(&client, &repo, base);
    }
    let mut corpus = Corpus { images: Vec::new() };
    for index in 0..count {
        let tag = format!("img-{index:03}");
        let own_tar = own_layer(index);
        let own_diff_id = images::sha256(&own_tar);
        let own = Blob::new(own_tar);
        images::push_blob(&client, &repo, &own);
        let bases = bases_of(index);
        let mut descriptors: Vec<Value> = bases
            .iter()
            .map(|&b| pool.layers[b].descriptor(GZIP_LAYER))
            .collect();
        descriptors.push(own.descriptor(TAR_LAYER));
        let mut diff_ids: Vec<&str> = bases.iter().map(|&b| base_diff_ids[b].as_str()).collect();
        diff_ids.push(&own_diff_id);
        let config = Blob::new(serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "created": "2026-01-01T00:00:00Z",
            "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"], "Labels": {"bench.image": tag}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))?);
        images::push_blob(&client, &repo, &config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(OCI_CONFIG),
            "layers": descriptors,
        }))?;
        images::push_manifest(&client, &repo, &tag, OCI_MANIFEST, &manifest);
        let mut layers: Vec<String> = bases
            .iter()
            .map(|&b| hex(&pool.layers[b].digest).to_owned())
            .collect();
        layers.push(hex(&own.digest).to_owned());
        corpus.images.push(Synthetic {
            tag,
            layers,
            config: hex(&config.digest).to_owned(),
            kept: index % 2 == 0,
        });
    }
    Ok(corpus)
}

/// The own layer of image `index`: `opt/img-NNN/file-K`, [`OWN_FILES`] random files of 1 to 4
/// KiB, as a plain (uncompressed) tar.
fn own_layer(index: usize) -> Vec<u8> {
    let dir = format!("opt/img-{index:03}");
    let mut entries = vec![("opt".to_owned(), None), (dir.clone(), None)];
    for k in 0..OWN_FILES {
        let size = 1024 * (1 + (index + k) % 4);
        entries.push((format!("{dir}/file-{k}"), Some(images::random_bytes(size))));
    }
    ustar(&entries)
}

/// A ustar archive of directories (`None`) and regular files, owned by 0:0, in this order.
fn ustar(entries: &[(String, Option<Vec<u8>>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, content) in entries {
        let mut header = [0u8; 512];
        let (name, mode, size, kind) = match content {
            None => (format!("{path}/"), 0o755, 0, b'5'),
            Some(bytes) => (path.clone(), 0o644, bytes.len(), b'0'),
        };
        let mut put = |at: usize, field: &[u8]| header[at..at + field.len()].copy_from_slice(field);
        put(0, name.as_bytes());
        put(100, format!("{mode:07o}\0").as_bytes());
        put(108, b"0000000\0");
        put(116, b"0000000\0");
        put(124, format!("{size:011o}\0").as_bytes());
        put(136, format!("{:011o}\0", 1_700_000_000u64).as_bytes());
        put(148, b"        ");
        put(156, &[kind]);
        put(257, b"ustar\0");
        put(263, b"00");
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&header);
        if let Some(bytes) = content {
            out.extend_from_slice(bytes);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
    }
    out.resize(out.len() + 1024, 0);
    out
}

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// Where the repository is published.
#[derive(Clone)]
enum Backend {
    /// `--publisher local --root WORK/cvmfs`.
    Local,
    /// `--publisher cvmfs` through this stand-in binary.
    Standin(PathBuf),
}

impl Backend {
    fn label(&self) -> &'static str {
        match self {
            Backend::Local => "local",
            Backend::Standin(_) => "cvmfs (stand-in)",
        }
    }
}

/// One round's work directory for one publisher.
struct Work {
    dir: PathBuf,
    backend: Backend,
    ducc: PathBuf,
}

impl Work {
    fn new(label: &str, backend: &Backend, ducc: &Path) -> anyhow::Result<Work> {
        let work = Work {
            dir: fresh_dir(label)?,
            backend: backend.clone(),
            ducc: ducc.to_owned(),
        };
        for sub in ["tmp", "cache", "docker"] {
            std::fs::create_dir_all(work.dir.join(sub))?;
        }
        if let Backend::Standin(binary) = backend {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::create_dir_all(work.dir.join("standin/mnt"))?;
            let wrapper = work.wrapper();
            std::fs::write(
                &wrapper,
                format!(
                    "#!/bin/sh\necho \"$*\" >> '{}'\nCVMFS_STANDIN_STATE='{}' exec '{}' \"$@\"\n",
                    work.dir.join("calls.log").display(),
                    work.dir.join("standin").display(),
                    binary.display()
                ),
            )?;
            std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))?;
            let out = Command::new(&wrapper).args(["mkfs", CVMFS_REPO]).output()?;
            ensure!(
                out.status.success(),
                "stand-in mkfs {CVMFS_REPO} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(work)
    }

    fn wrapper(&self) -> PathBuf {
        self.dir.join("cvmfs_server")
    }

    /// The published tree of the repository.
    fn published(&self) -> PathBuf {
        match self.backend {
            Backend::Local => self.dir.join("cvmfs").join(CVMFS_REPO),
            Backend::Standin(_) => self
                .dir
                .join("standin/repos")
                .join(CVMFS_REPO)
                .join("published"),
        }
    }

    /// The shell command `ducc SUBCOMMAND ARGS` with this work's scratch space and publisher.
    fn ducc(&self, subcommand: &str, args: &str) -> String {
        let tmp = self.dir.join("tmp");
        let publisher = match self.backend {
            Backend::Local => format!("--root {}", self.dir.join("cvmfs").display()),
            Backend::Standin(_) => format!(
                "--publisher cvmfs --cvmfs-server {}",
                self.wrapper().display()
            ),
        };
        format!(
            "TMPDIR={tmp} DOCKER_CONFIG={docker} CVMFS_MOUNT_DIR={mount} {ducc} {subcommand} {args} \
             -t {tmp} {publisher}",
            tmp = tmp.display(),
            docker = self.dir.join("docker").display(),
            mount = self.dir.join("standin/mnt").display(),
            ducc = self.ducc.display(),
        )
    }

    /// Writes a wish list naming `images` by tag.
    fn wishlist(&self, name: &str, host: &str, images: &[&Synthetic]) -> anyhow::Result<PathBuf> {
        let mut text = format!("version: 1\nuser: ''\ncvmfs_repo: {CVMFS_REPO}\ninput:\n");
        for image in images {
            text.push_str(&format!("  - 'http://{host}/{REPOSITORY}:{}'\n", image.tag));
        }
        let path = self.dir.join(name);
        std::fs::write(&path, text)?;
        Ok(path)
    }

    fn events(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The wrapper's log so far (empty for the local publisher).
    fn calls(&self) -> anyhow::Result<Vec<String>> {
        let log = self.dir.join("calls.log");
        match std::fs::read_to_string(&log) {
            Ok(text) => Ok(text.lines().map(str::to_owned).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", log.display())),
        }
    }

    /// The stand-in's revision counter (`None` for the local publisher).
    fn revision(&self) -> anyhow::Result<Option<u64>> {
        if matches!(self.backend, Backend::Local) {
            return Ok(None);
        }
        let file = self
            .dir
            .join("standin/repos")
            .join(CVMFS_REPO)
            .join("revision");
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        Ok(Some(text.trim().parse().with_context(|| {
            format!("{}: not a revision number", file.display())
        })?))
    }

    /// Runs `command` measured, with the `cvmfs_server` calls and revisions it made.
    fn step(&self, what: &str, command: &str) -> anyhow::Result<Step> {
        let before = self.calls()?.len();
        let revision_before = self.revision()?;
        let measured = measure(command).with_context(|| what.to_owned())?;
        let log = self.calls()?.split_off(before);
        let calls = Calls::from_log(&log);
        let revisions = match (revision_before, self.revision()?) {
            (Some(a), Some(b)) => {
                let revisions = b.saturating_sub(a);
                ensure!(
                    revisions == calls.revisions(),
                    "{what}: the stand-in counted {revisions} revisions, the calls {} ({calls:?})",
                    calls.revisions()
                );
                Some(revisions)
            }
            _ => None,
        };
        eprintln!("xtask: {} {what}: {measured}", self.backend.label());
        Ok(Step {
            measured,
            calls,
            revisions,
            log: log.iter().map(|l| summarise_call(l)).collect(),
        })
    }
}

/// One measured command.
struct Step {
    measured: Measurement,
    calls: Calls,
    /// Revisions published (stand-in only).
    revisions: Option<u64>,
    /// Each `cvmfs_server` call, summarised by [`summarise_call`].
    log: Vec<String>,
}

/// A `cvmfs_server` call as a reader wants it: an ingest by its base, a delete by its path
/// count and the directory its paths share, anything else as it was.
fn summarise_call(line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    if words.first() != Some(&"ingest") {
        return line.to_owned();
    }
    let deleted: Vec<&str> = words
        .windows(2)
        .filter(|w| w[0] == "--delete" || w[0] == "-d")
        .map(|w| w[1])
        .collect();
    if let Some((first, rest)) = deleted.split_first() {
        let mut shared: Vec<&str> = first.split('/').collect();
        shared.pop();
        for path in rest {
            let parts: Vec<&str> = path.split('/').collect();
            let same = shared
                .iter()
                .zip(&parts)
                .take_while(|(a, b)| a == b)
                .count();
            shared.truncate(same);
        }
        let under = if shared.is_empty() {
            "/".to_owned()
        } else {
            shared.join("/")
        };
        return format!("ingest --delete: {} path(s) under {under}", deleted.len());
    }
    match words.windows(2).find(|w| w[0] == "-b") {
        Some(base) => format!("ingest -b {}", base[1]),
        None => line.to_owned(),
    }
}

/// What the `-n` file of a gc says.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct GcEvents {
    removed: u64,
    removed_bytes: u64,
    waiting: u64,
    by_kind: BTreeMap<String, usize>,
}

impl GcEvents {
    fn read(path: &Path) -> anyhow::Result<GcEvents> {
        let mut events = GcEvents::default();
        let mut ended = false;
        for event in read_events(path)? {
            match event["action"].as_str() {
                Some("gc_remove") => {
                    let kind = event["kind"].as_str().unwrap_or("?").to_owned();
                    *events.by_kind.entry(kind).or_default() += 1;
                }
                Some("gc_end") => {
                    let number = |field: &str| {
                        event[field]
                            .as_u64()
                            .with_context(|| format!("gc_end without {field}: {event}"))
                    };
                    events.removed = number("removed")?;
                    events.removed_bytes = number("removed_bytes")?;
                    events.waiting = number("waiting")?;
                    ended = true;
                }
                _ => {}
            }
        }
        ensure!(ended, "{}: no gc_end event", path.display());
        Ok(events)
    }

    fn kinds(&self) -> String {
        let kinds: Vec<String> = self
            .by_kind
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        if kinds.is_empty() {
            "none".to_owned()
        } else {
            kinds.join(", ")
        }
    }
}

fn read_events(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("{}: {l}", path.display())))
        .collect()
}

/// One round with one publisher.
struct Round {
    convert: Step,
    prune: Step,
    gc: Step,
    gc_events: GcEvents,
    second_gc: Step,
    second_events: GcEvents,
}

/// Runs `cargo xtask bench gc`.
pub(super) fn run(args: &[String]) -> anyhow::Result<()> {
    let options = parse(args)?;
    require_tools(&[
        ("/usr/bin/time", "time"),
        ("docker-registry", "docker-registry"),
    ])?;
    let (ducc, standin) = super::release_ducc_and_standin()?;

    let registry = ducc_tests::Registry::start(ducc_tests::Flavour::Anonymous);
    let host = registry.host().to_owned();
    let corpus = build_and_push(&host, options.images)?;
    let kept = corpus.kept_count();
    eprintln!(
        "xtask: pushed {} images ({} distinct layers, {} shared bases) to {host}/{REPOSITORY}",
        corpus.images.len(),
        corpus.all_layers().len(),
        BASES
    );
    let load_before = load_average();
    let backends = [Backend::Local, Backend::Standin(standin)];
    let mut rounds: Vec<Vec<Round>> = backends.iter().map(|_| Vec::new()).collect();
    for round in 1..=options.rounds {
        for (backend, results) in backends.iter().zip(&mut rounds) {
            let label = format!(
                "gc-{}-{round}",
                if matches!(backend, Backend::Local) {
                    "local"
                } else {
                    "cvmfs"
                }
            );
            let work = Work::new(&label, backend, &ducc)?;
            // A failed round leaves its work directory behind, to be looked at.
            let round = run_round(&work, &host, &corpus).with_context(|| {
                format!(
                    "{} round {round} in {}",
                    backend.label(),
                    work.dir.display()
                )
            })?;
            remove_dir(&work.dir)?;
            results.push(round);
        }
    }
    drop(registry);
    report(&options, &corpus, kept, &backends, &rounds, &load_before)
}

fn run_round(work: &Work, host: &str, corpus: &Corpus) -> anyhow::Result<Round> {
    let all: Vec<&Synthetic> = corpus.images.iter().collect();
    let keep: Vec<&Synthetic> = corpus.images.iter().filter(|i| i.kept).collect();
    let full = work.wishlist("all.yaml", host, &all)?;
    let half = work.wishlist("half.yaml", host, &keep)?;
    let published = work.published();

    let convert = work.step(
        "convert",
        &work.ducc(
            "convert",
            &format!(
                "{} --cache-dir {} -i --no-progress",
                full.display(),
                work.dir.join("cache").display()
            ),
        ),
    )?;
    check_images(&published, host, corpus, &all, "after convert")?;
    check_set(
        &published.join(".layers"),
        &corpus.all_layers(),
        "layer",
        "after convert",
    )?;

    let prune_events = work.events("prune.jsonl");
    let prune = work.step(
        "prune",
        &work.ducc(
            "prune",
            &format!(
                "{} --max-deletions {} -n {}",
                half.display(),
                corpus.images.len(),
                prune_events.display()
            ),
        ),
    )?;
    let deleted = read_events(&prune_events)?
        .iter()
        .filter(|e| e["action"] == "delete_image")
        .count();
    ensure!(
        deleted == corpus.images.len() - keep.len(),
        "prune deleted {deleted} images, not the {} the second wish list leaves out",
        corpus.images.len() - keep.len()
    );
    check_images(&published, host, corpus, &keep, "after prune")?;
    check_set(
        &published.join(".layers"),
        &corpus.all_layers(),
        "layer",
        "after prune (content stays for gc)",
    )?;

    let gc_events = work.events("gc.jsonl");
    let gc = work.step(
        "gc",
        &work.ducc(
            "gc",
            &format!("{CVMFS_REPO} --grace-period 0 -n {}", gc_events.display()),
        ),
    )?;
    let gc_events = GcEvents::read(&gc_events)?;
    check_images(&published, host, corpus, &keep, "after gc")?;
    check_after_gc(&published, corpus)?;
    ensure!(
        gc_events.waiting == 0,
        "gc --grace-period 0 left {} pieces waiting",
        gc_events.waiting
    );

    let before =
        Tree::scan(&published).with_context(|| format!("cannot scan {}", published.display()))?;
    let second_file = work.events("gc2.jsonl");
    let second_gc = work.step(
        "second gc",
        &work.ducc(
            "gc",
            &format!("{CVMFS_REPO} --grace-period 0 -n {}", second_file.display()),
        ),
    )?;
    let second_events = GcEvents::read(&second_file)?;
    ensure!(
        second_events.removed == 0,
        "the second gc removed {} pieces",
        second_events.removed
    );
    ensure!(
        second_gc.revisions.unwrap_or(0) == 0 && second_gc.calls.revisions() == 0,
        "the second gc published {} revisions ({:?})",
        second_gc.calls.revisions(),
        second_gc.calls
    );
    let after =
        Tree::scan(&published).with_context(|| format!("cannot scan {}", published.display()))?;
    let changes = before.diff(&after, &TreeOptions::default());
    ensure!(
        changes.is_empty(),
        "the second gc changed the repository: {changes:?}"
    );
    Ok(Round {
        convert,
        prune,
        gc,
        gc_events,
        second_gc,
        second_events,
    })
}

/// Checks that exactly `present` of the corpus's images have their marker and public link.
fn check_images(
    published: &Path,
    host: &str,
    corpus: &Corpus,
    present: &[&Synthetic],
    when: &str,
) -> anyhow::Result<()> {
    let wanted: BTreeSet<&str> = present.iter().map(|i| i.tag.as_str()).collect();
    for image in &corpus.images {
        let name = format!("{host}/{REPOSITORY}:{}", image.tag);
        let marker = published
            .join(".metadata")
            .join(&name)
            .join("manifest.json");
        let link = published.join(&name);
        let has_marker = marker.is_file();
        let has_link = std::fs::symlink_metadata(&link).is_ok();
        let should = wanted.contains(image.tag.as_str());
        ensure!(
            has_marker == should && has_link == should,
            "{when}: {name} has marker {has_marker}, link {has_link}; expected {should}"
        );
    }
    Ok(())
}

/// After gc: every layer and flat tree of a kept image is there, and nothing else.
fn check_after_gc(published: &Path, corpus: &Corpus) -> anyhow::Result<()> {
    let pruned_only = corpus.pruned_only_layers();
    let found = sharded(&published.join(".layers"))?;
    let stale: Vec<&String> = found.intersection(&pruned_only).collect();
    ensure!(
        stale.is_empty(),
        "after gc: {} layer(s) only pruned images used remain: {stale:?}",
        stale.len()
    );
    check_set(
        &published.join(".layers"),
        &corpus.kept_layers(),
        "layer",
        "after gc",
    )?;
    check_set(
        &published.join(".flat"),
        &corpus.configs(true),
        "flat tree",
        "after gc",
    )
}

/// Checks that the `<hh>/<hex>` directories below `root` are exactly `expected`.
fn check_set(
    root: &Path,
    expected: &BTreeSet<String>,
    what: &str,
    when: &str,
) -> anyhow::Result<()> {
    let found = sharded(root)?;
    let missing: Vec<&String> = expected.difference(&found).collect();
    let extra: Vec<&String> = found.difference(expected).collect();
    ensure!(
        missing.is_empty(),
        "{when}: {} {what}(s) of kept images missing: {missing:?}",
        missing.len()
    );
    ensure!(
        extra.is_empty(),
        "{when}: {} {what}(s) no image uses remain: {extra:?}",
        extra.len()
    );
    Ok(())
}

/// The `<hex>` names of the directories `root/<hh>/<hex>`.
fn sharded(root: &Path) -> anyhow::Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let shards = match std::fs::read_dir(root) {
        Ok(shards) => shards,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", root.display())),
    };
    for shard in shards {
        let shard = shard?;
        if !shard.file_type()?.is_dir() {
            continue;
        }
        let prefix = shard.file_name().to_string_lossy().into_owned();
        for entry in std::fs::read_dir(shard.path())? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type()?.is_dir() && name.len() == 64 && name.starts_with(&prefix) {
                out.insert(name);
            }
        }
    }
    Ok(out)
}

fn report(
    options: &Options,
    corpus: &Corpus,
    kept: usize,
    backends: &[Backend],
    rounds: &[Vec<Round>],
    load_before: &str,
) -> anyhow::Result<()> {
    let wall = |steps: &[&Step]| median(&steps.iter().map(|s| s.measured.wall).collect::<Vec<_>>());
    let rss = |steps: &[&Step]| steps.iter().map(|s| s.measured.rss_kib).max().unwrap_or(0) / 1024;
    println!(
        "\nducc prune + gc: {} images ({} kept, {} pruned), {} distinct layers ({} shared bases; \
         {} layers used only by pruned images), {} round(s){}",
        corpus.images.len(),
        kept,
        corpus.images.len() - kept,
        corpus.all_layers().len(),
        BASES,
        corpus.pruned_only_layers().len(),
        options.rounds,
        if options.rounds > 1 { ", medians" } else { "" }
    );
    println!(
        "| publisher | convert s (context) | prune s | prune revisions | gc s | gc revisions | \
         pieces removed | bytes removed | gc peak RSS MiB | second gc: removed, revisions |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (backend, results) in backends.iter().zip(rounds) {
        let Some(last) = results.last() else {
            bail!("no round ran");
        };
        for round in results {
            ensure!(
                round.gc_events == last.gc_events
                    && round.prune.calls == last.prune.calls
                    && round.gc.calls == last.gc.calls,
                "{}: counts differ between rounds",
                backend.label()
            );
        }
        let pick = |f: fn(&Round) -> &Step| results.iter().map(f).collect::<Vec<_>>();
        let revisions = |s: &Step| s.revisions.map_or("n/a".to_owned(), |r| r.to_string());
        println!(
            "| {} | {:.2} | {:.2} | {} | {:.2} | {} | {} ({}) | {} | {} | {}, {} |",
            backend.label(),
            wall(&pick(|r| &r.convert)),
            wall(&pick(|r| &r.prune)),
            revisions(&last.prune),
            wall(&pick(|r| &r.gc)),
            revisions(&last.gc),
            last.gc_events.removed,
            last.gc_events.kinds(),
            last.gc_events.removed_bytes,
            rss(&pick(|r| &r.gc)),
            last.second_events.removed,
            revisions(&last.second_gc),
        );
    }
    for (backend, results) in backends.iter().zip(rounds) {
        if matches!(backend, Backend::Local) {
            continue;
        }
        let Some(last) = results.last() else {
            continue;
        };
        println!(
            "\ncvmfs_server calls through the stand-in ({})",
            backend.label()
        );
        println!(
            "| step | calls | ingests | ingest --delete calls | paths deleted | publishes | revisions |"
        );
        println!("|---|---|---|---|---|---|---|");
        for (step, s) in [
            ("convert", &last.convert),
            ("prune", &last.prune),
            ("gc", &last.gc),
            ("second gc", &last.second_gc),
        ] {
            println!(
                "| {step} | {} | {} | {} | {} | {} | {} |",
                s.calls.all,
                s.calls.ingests,
                s.calls.deletes,
                s.calls.deleted_paths,
                s.calls.publishes,
                s.revisions.unwrap_or(0)
            );
        }
        for (step, s) in [("prune", &last.prune), ("gc", &last.gc)] {
            println!("{step}'s calls, in order:");
            for call in &s.log {
                println!("  {call}");
            }
        }
        println!(
            "(times through the stand-in are the stand-in's, not a real server's; the counts are \
             what a stratum 0 would see)"
        );
    }
    println!(
        "checks: prune deleted exactly the {} images left out; after gc every layer and flat tree \
         of a kept image exists and nothing else; the second gc removed nothing and published \
         nothing: all passed",
        corpus.images.len() - kept
    );
    println!(
        "load average before: {load_before}; after: {}",
        load_average()
    );
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{BASES, bases_of, summarise_call, ustar};
    use crate::bench::Calls;

    #[test]
    fn delete_calls_count_their_paths_and_every_ingest_is_a_revision() {
        let log: Vec<String> = [
            "list",
            "ingest -k -t /tmp/x -b .layers/ab r.test",
            "ingest --delete .layers/ab/cd --delete .layers/ef r.test",
            "publish r.test",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let calls = Calls::from_log(&log);
        assert_eq!(
            calls,
            Calls {
                all: 4,
                ingests: 1,
                deletes: 1,
                deleted_paths: 2,
                publishes: 1,
                aborts: 0
            }
        );
        assert_eq!(calls.revisions(), 3);
    }

    #[test]
    fn calls_are_summarised_by_base_and_by_the_directory_deleted_paths_share() {
        assert_eq!(
            summarise_call("ingest -k -t /tmp/s/ingest.tar -b .metadata/.gc r.test"),
            "ingest -b .metadata/.gc"
        );
        assert_eq!(
            summarise_call("ingest --delete .flat/ab/abc --delete .flat/cd/cde r.test"),
            "ingest --delete: 2 path(s) under .flat"
        );
        assert_eq!(
            summarise_call("ingest --delete .layers/ab/abc r.test"),
            "ingest --delete: 1 path(s) under .layers/ab"
        );
        assert_eq!(summarise_call("list"), "list");
    }

    #[test]
    fn the_last_base_is_used_by_pruned_images_only_and_the_others_by_both() {
        for base in 0..BASES {
            let users: Vec<usize> = (0..200).filter(|i| bases_of(*i).contains(&base)).collect();
            let kept = users.iter().any(|i| i % 2 == 0);
            let pruned = users.iter().any(|i| i % 2 == 1);
            assert!(pruned, "base {base} has a pruned user");
            assert_eq!(kept, base != BASES - 1, "base {base}: {users:?}");
        }
    }

    #[test]
    fn ustar_headers_carry_a_valid_checksum_and_padded_content() {
        let tar = ustar(&[
            ("d".to_owned(), None),
            ("d/f".to_owned(), Some(vec![7; 700])),
        ]);
        assert_eq!(tar.len(), 512 + 512 + 1024 + 1024);
        for header in [&tar[..512], &tar[512..1024]] {
            let recorded = std::str::from_utf8(&header[148..154]).unwrap();
            let mut blank = header.to_vec();
            blank[148..156].copy_from_slice(b"        ");
            let sum: u32 = blank.iter().map(|&b| u32::from(b)).sum();
            assert_eq!(u32::from_str_radix(recorded, 8).unwrap(), sum);
        }
        assert_eq!(&tar[..2], b"d/");
        assert_eq!(tar[512 + 156], b'0');
        assert!(tar[1024..1724].iter().all(|&b| b == 7));
    }
}
