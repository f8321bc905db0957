//! `cargo xtask bench nodes [--nodes 1,2,4] [--images N]`: N publisher nodes behind one gateway
//! splitting one wish list with `--shard K/N` (issue 30).
//!
//! Everything runs through the tests' `cvmfs_server` stand-in in gateway mode (built in release
//! mode from the tests crate), which models several nodes: each node its own spool, one open
//! transaction and its own lagging view of the repository, all sharing the published tree, the
//! lease table and the revision counter, with every call of every node serialised on the shared
//! state. Its timing is not a server's (no gateway round trips, no catalogs, no compression
//! worth the name): read the wall times as the stand-in's, for comparing N with N, not as what a
//! real gateway does.
//!
//! The images (default 12): every one has a shared base layer and a small layer of its own, so
//! nodes race for the base's `origin.json` and the podman store. For each N, a fresh repository;
//! N `ducc convert --shard K/N` processes start at once, each with its own state directory, node
//! name (`CVMFS_STANDIN_NODE`) and mount. Reported per N: wall time until the last node ends,
//! ingests and publishes per image, lease waits (as the nodes' `end_ducc` events count them: a
//! lease the gateway said was busy, rc 16, that a node then waited for), remounts (`cvmfs_server
//! mount`, bringing a node's view to the newest revision before reads that decide work) per
//! node, and images per minute. The run fails unless every image was converted by exactly one
//! node and the base layer's `origin.json` names every image.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use ducc_tests::images::{self, Blob};
use serde_json::{Value, json};

use super::{fresh_dir, remove_dir, require_tools};

const REPO: &str = "nodes-bench.test";
const REPOSITORY: &str = "bench/nodes";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const TAR_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

struct Options {
    nodes: Vec<u32>,
    images: usize,
}

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut options = Options {
        nodes: vec![1, 2, 4],
        images: 12,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--nodes" => {
                let list = it.next().context("--nodes needs a list such as 1,2,4")?;
                options.nodes = list
                    .split(',')
                    .map(|n| n.trim().parse::<u32>().context("--nodes N,N,..."))
                    .collect::<anyhow::Result<_>>()?;
                ensure!(
                    options.nodes.iter().all(|n| *n >= 1),
                    "--nodes: every count is at least 1"
                );
            }
            "--images" => {
                options.images = it
                    .next()
                    .context("--images needs a number")?
                    .parse()
                    .context("--images N")?;
                ensure!(options.images >= 1, "--images must be at least 1");
            }
            other => bail!("unknown option {other} of bench nodes"),
        }
    }
    Ok(options)
}

/// What was pushed: each image's tag and config digest, and the base layer's hex.
struct Corpus {
    tags: Vec<String>,
    configs: Vec<String>,
    base_hex: String,
}

fn push(host: &str, count: usize) -> anyhow::Result<Corpus> {
    let client = images::client_for(host, None);
    let repo = images::repository(host, REPOSITORY);
    let base_tar = images::random_tar("usr/lib/base.so", 64 * 1024);
    let base_diff = images::sha256(&base_tar);
    let base = Blob::new(base_tar);
    images::push_blob(&client, &repo, &base);
    let mut corpus = Corpus {
        tags: Vec::new(),
        configs: Vec::new(),
        base_hex: base.digest.trim_start_matches("sha256:").to_owned(),
    };
    for index in 0..count {
        let tag = format!("n{index:03}");
        let own_tar = images::random_tar(&format!("opt/img-{index:03}/data"), 2048);
        let own_diff = images::sha256(&own_tar);
        let own = Blob::new(own_tar);
        images::push_blob(&client, &repo, &own);
        let config = Blob::new(serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "created": "2026-01-01T00:00:00Z",
            "config": {"Cmd": ["/bin/sh"], "Labels": {"bench.image": tag}},
            "rootfs": {"type": "layers", "diff_ids": [base_diff, own_diff]},
        }))?);
        images::push_blob(&client, &repo, &config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(OCI_CONFIG),
            "layers": [base.descriptor(TAR_LAYER), own.descriptor(TAR_LAYER)],
        }))?;
        images::push_manifest(&client, &repo, &tag, OCI_MANIFEST, &manifest);
        corpus.tags.push(tag);
        corpus.configs.push(config.digest.clone());
    }
    Ok(corpus)
}

/// One N's result.
struct Row {
    nodes: u32,
    wall_s: f64,
    ingests: usize,
    publishes: usize,
    lease_waits: usize,
    remounts: usize,
    images: usize,
}

/// Runs the bench.
pub(super) fn run(args: &[String]) -> anyhow::Result<()> {
    let options = parse(args)?;
    require_tools(&[("docker-registry", "docker-registry")])?;
    let (ducc, standin) = super::release_ducc_and_standin()?;
    let registry = ducc_tests::Registry::start(ducc_tests::Flavour::Anonymous);
    let host = registry.host().to_owned();
    let corpus = push(&host, options.images)?;
    let mut rows = Vec::new();
    for &n in &options.nodes {
        let work = fresh_dir(&format!("nodes-{n}"))?;
        // A failed run leaves its work directory behind, to be looked at.
        let row = run_nodes(&work, &ducc, &standin, &host, &corpus, n)
            .with_context(|| format!("{n} node(s) in {}", work.display()))?;
        remove_dir(&work)?;
        rows.push(row);
    }
    drop(registry);
    println!(
        "\nbench nodes: {} images (a shared base layer and one of their own each), one wish list \
         split with --shard K/N, through the tests' cvmfs_server stand-in in gateway mode \
         (STAND-IN TIMING: not a real gateway's; compare the rows with each other only)",
        options.images
    );
    println!(
        "| nodes | wall (s, stand-in) | ingests per image | publishes per image | lease waits | remounts per node | images per minute |"
    );
    println!("|---|---|---|---|---|---|---|");
    for row in &rows {
        let per = |count: usize| count as f64 / row.images as f64;
        println!(
            "| {} | {:.1} | {:.2} | {:.2} | {} | {:.1} | {:.1} |",
            row.nodes,
            row.wall_s,
            per(row.ingests),
            per(row.publishes),
            row.lease_waits,
            row.remounts as f64 / f64::from(row.nodes),
            row.images as f64 * 60.0 / row.wall_s
        );
    }
    Ok(())
}

fn run_nodes(
    work: &Path,
    ducc: &Path,
    standin: &Path,
    host: &str,
    corpus: &Corpus,
    n: u32,
) -> anyhow::Result<Row> {
    use std::os::unix::fs::PermissionsExt as _;
    let log = work.join("calls.log");
    let wrapper = work.join("cvmfs_server");
    // Logs each call with the node and the exit status (16: the gateway said busy).
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nCVMFS_STANDIN_STATE='{state}' '{standin}' \"$@\"\nrc=$?\n\
             echo \"$CVMFS_STANDIN_NODE rc=$rc $*\" >> '{log}'\nexit $rc\n",
            state = work.join("standin").display(),
            standin = standin.display(),
            log = log.display()
        ),
    )?;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))?;
    let out = Command::new(&wrapper)
        .args([
            "mkfs",
            "-u",
            "gw,/srv/cvmfs/txn,http://127.0.0.1:4929/api/v1",
            REPO,
        ])
        .env("CVMFS_STANDIN_NODE", "node1")
        .output()?;
    ensure!(
        out.status.success(),
        "stand-in mkfs failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let wish = work.join("wish.yaml");
    std::fs::write(
        &wish,
        format!(
            "version: 1\nuser: ''\ncvmfs_repo: {REPO}\ninput:\n  - 'http://{host}/{REPOSITORY}:n*'\n"
        ),
    )?;
    for k in 1..=n {
        // A node's first call mounts the repository on it.
        let out = Command::new(&wrapper)
            .arg("list")
            .env("CVMFS_STANDIN_NODE", format!("node{k}"))
            .output()?;
        ensure!(out.status.success(), "stand-in list as node{k} failed");
    }
    let started = Instant::now();
    let children: Vec<Child> = (1..=n)
        .map(|k| node(work, ducc, &wrapper, &wish, k, n).spawn())
        .collect::<Result<_, _>>()?;
    for (k, child) in (1..=n).zip(children) {
        let out = child.wait_with_output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(out.status.success(), "node {k} of {n} failed:\n{stderr}");
    }
    let wall_s = started.elapsed().as_secs_f64();

    let (mut converted, mut lease_waits) = (0, 0);
    for k in 1..=n {
        let events = std::fs::read_to_string(work.join(format!("events-{k}.jsonl")))?;
        for line in events.lines() {
            let event: Value = serde_json::from_str(line)?;
            if event["action"] == "end_image" && event["status"] == "ok" {
                converted += 1;
            }
            if event["action"] == "end_ducc" {
                lease_waits += event["lease_waits"]
                    .as_u64()
                    .context("end_ducc without lease_waits")?;
            }
        }
    }
    let lease_waits = usize::try_from(lease_waits)?;
    ensure!(
        converted == corpus.tags.len(),
        "{converted} conversions for {} images",
        corpus.tags.len()
    );
    let origin_path = work
        .join("standin/repos")
        .join(REPO)
        .join("published/.layers")
        .join(&corpus.base_hex[..2])
        .join(&corpus.base_hex)
        .join(".metadata/origin.json");
    let origin: Value = serde_json::from_slice(&std::fs::read(&origin_path)?)?;
    let listed = origin["origin"].as_array().map_or(0, Vec::len);
    ensure!(
        corpus.configs.iter().all(|c| origin["origin"]
            .as_array()
            .is_some_and(|o| o.iter().any(|v| v == c.as_str()))),
        "the base layer's origin.json names {listed} of {} images",
        corpus.configs.len()
    );

    let calls = std::fs::read_to_string(&log)?;
    let (mut ingests, mut publishes, mut busy, mut remounts) = (0, 0, 0, 0);
    for line in calls.lines() {
        let mut words = line.split_whitespace().skip(1);
        let rc = words.next().unwrap_or_default();
        let command = words.next().unwrap_or_default();
        match (rc, command) {
            ("rc=0", "ingest") => ingests += 1,
            ("rc=0", "publish") => publishes += 1,
            ("rc=0", "mount") => remounts += 1,
            ("rc=16", _) => busy += 1,
            _ => {}
        }
    }
    eprintln!(
        "xtask: {n} node(s): {wall_s:.1} s, {ingests} ingests, {publishes} publishes, {remounts} remounts, {lease_waits} lease waits ({busy} busy answers)"
    );
    Ok(Row {
        nodes: n,
        wall_s,
        ingests,
        publishes,
        lease_waits,
        remounts,
        images: corpus.tags.len(),
    })
}

/// `ducc convert --shard K/N` as node `k`: its own state directory, cache, node name and mount.
fn node(work: &Path, ducc: &Path, wrapper: &Path, wish: &Path, k: u32, n: u32) -> Command {
    let tmp: PathBuf = work.join(format!("tmp-{k}"));
    let _ = std::fs::create_dir_all(&tmp);
    let _ = std::fs::create_dir_all(work.join("docker"));
    let mut command = Command::new(ducc);
    command
        .arg("convert")
        .arg(wish)
        .args(["-i", "--no-progress", "--shard", &format!("{k}/{n}")])
        .arg("--cache-dir")
        .arg(work.join(format!("cache-{k}")))
        .arg("-t")
        .arg(&tmp)
        .arg("-n")
        .arg(work.join(format!("events-{k}.jsonl")))
        .args(["--publisher", "cvmfs", "--cvmfs-server"])
        .arg(wrapper)
        .env("TMPDIR", &tmp)
        .env("DOCKER_CONFIG", work.join("docker"))
        .env("CVMFS_STANDIN_NODE", format!("node{k}"))
        .env("CVMFS_MOUNT_DIR", work.join(format!("standin/mnt-node{k}")))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}
