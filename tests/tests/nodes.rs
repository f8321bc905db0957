//! Several ducc processes share one wish list with `--shard K/N` (issue 30): N nodes started at
//! once against one `cvmfs_server` stand-in convert every image exactly once between them, and
//! the repository equals one node's run; `prune --shard` deletes only its shard's images.
//!
//! Each node is a publisher host of its own behind the stand-in gateway (its own state
//! directory, node name and lagging view of the repository: gateway-behaviour section 7): a
//! node's view shows other nodes' publishes, and its own ingests, only after it is brought to
//! the newest revision, which ducc does at the start of a pass or command and before an image
//! when it published since (`cvmfs_server mount REPO`).
#![allow(clippy::unwrap_used)]

mod convert_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use convert_support::{
    Backend, Image, Layer, REPO, Work, flat_dir, marker_config, origin, run_options,
};
use ducc_tests::tree::Tree;
use ducc_tests::{Registry, images, unique_repo};
use sha2::{Digest, Sha256};

/// Twelve images over two registry repositories: every image has the shared base layer, each
/// group of three shares a middle layer, and each has a top layer of its own. The first eight
/// are wished by a tag glob, the last four by name.
struct Set {
    host: String,
    globbed: String,
    base: Layer,
    middles: Vec<Layer>,
    /// `(input as the events name it, public name, image)`.
    images: Vec<(String, String, Image)>,
}

fn push_set() -> Set {
    let registry = Registry::anonymous();
    let host = registry.host().to_owned();
    let client = images::client_for(&host, None);
    let globbed = unique_repo("nodes-glob");
    let named = unique_repo("nodes-named");
    let base = Layer::files(&[("etc/os-release", b"ID=nodes\n"), ("usr/bin/sh", b"base")]);
    let middles: Vec<Layer> = (0..4)
        .map(|g| Layer::files(&[(&format!("opt/group{g}/lib") as &str, b"middle")]))
        .collect();
    let mut images = Vec::new();
    for i in 0..12 {
        let top = Layer::random(&format!("opt/image{i}"), 512 + i * 64);
        let image = Image::new(
            vec![base.clone(), middles[i / 3].clone(), top],
            &format!("image{i}"),
        );
        let (name, tag) = if i < 8 {
            (&globbed, format!("t{i:02}"))
        } else {
            (&named, format!("n{i:02}"))
        };
        image.push(&client, &images::repository(&host, name), &tag);
        images.push((
            format!("http://{host}/{name}:{tag}"),
            format!("{host}/{name}:{tag}"),
            image,
        ));
    }
    Set {
        host,
        globbed,
        base,
        middles,
        images,
    }
}

impl Set {
    /// The wish list's input lines: a glob for the first eight, names for the others.
    fn inputs(&self) -> Vec<String> {
        let mut inputs = vec![format!("http://{}/{}:t*", self.host, self.globbed)];
        inputs.extend(self.images[8..].iter().map(|(input, _, _)| input.clone()));
        inputs
    }
}

/// The node (from 1) of `n` that takes the image `name` (`<registry>/<repository>:<tag>`), as the
/// README documents it: the highest first 8 bytes (big-endian) of SHA-256 of the node's number
/// (4 bytes, big-endian) and the name.
fn owner_of(name: &str, n: u32) -> u32 {
    (1..=n)
        .max_by_key(|k| {
            let digest = Sha256::digest([&k.to_be_bytes()[..], name.as_bytes()].concat());
            u64::from_be_bytes(digest[..8].try_into().unwrap())
        })
        .unwrap()
}

/// Node `k` is a publisher host of its own behind the stand-in gateway: its own cache, scratch
/// and state directory (`TMPDIR`), its own node name for the stand-in and its own lagging view
/// of the repository (`standin/mnt-nodeK`). `ducc SUBCOMMAND ARGS` as that node, not yet run.
fn node_ducc(work: &Work, k: u32, subcommand: &str, args: &[&str]) -> Command {
    let tmp = work.path(&format!("tmp-{k}"));
    std::fs::create_dir_all(&tmp).unwrap();
    // The node's first call to the stand-in mounts the repository there.
    mount_node(work, k);
    let mut command = ducc_tests::ducc_command(&work.path("docker"));
    command
        .arg(subcommand)
        .args(args)
        .arg("-t")
        .arg(&tmp)
        .env("TMPDIR", &tmp)
        .args(["--publisher", "cvmfs", "--cvmfs-server"])
        .arg(work.path("cvmfs_server"))
        .env("CVMFS_STANDIN_NODE", format!("node{k}"))
        .env(
            "CVMFS_MOUNT_DIR",
            work.path(&format!("standin/mnt-node{k}")),
        );
    command
}

/// Node `k`'s first call to the stand-in: from then on its view lags (it moves only when the
/// node is brought to the newest revision).
fn mount_node(work: &Work, k: u32) {
    let listed = Command::new(work.path("cvmfs_server"))
        .arg("list")
        .env("CVMFS_STANDIN_NODE", format!("node{k}"))
        .output()
        .unwrap();
    assert!(listed.status.success());
}

/// Node `k`'s view of the repository (its `/cvmfs/REPO`).
fn node_view(work: &Work, k: u32) -> PathBuf {
    work.path(&format!("standin/mnt-node{k}")).join(REPO)
}

/// How many `cvmfs_server mount` calls (remounts to the newest revision) the stand-in's log
/// holds from line `from` on.
fn remounts_since(work: &Work, from: usize) -> usize {
    work.standin_log()[from..]
        .iter()
        .filter(|l| l.starts_with("mount "))
        .count()
}

/// `ducc convert` of node `k` of `n` on the work's wish list (see [`node_ducc`]), its events in
/// `events-K.jsonl`.
fn node_command(work: &Work, k: u32, n: u32) -> Command {
    node_command_to(work, k, n, &format!("events-{k}.jsonl"))
}

/// As [`node_command`], the events in `events` (under the work directory).
fn node_command_to(work: &Work, k: u32, n: u32, events: &str) -> Command {
    let cache = work.path(&format!("cache-{k}"));
    std::fs::create_dir_all(&cache).unwrap();
    let wish = work.path("wish.yaml");
    let mut command = node_ducc(
        work,
        k,
        "convert",
        &[
            wish.to_str().unwrap(),
            "-i",
            "--no-progress",
            "--shard",
            &format!("{k}/{n}"),
        ],
    );
    command
        .arg("--cache-dir")
        .arg(&cache)
        .arg("-n")
        .arg(work.path(events));
    command
}

fn spawn_node(work: &Work, k: u32, n: u32) -> Child {
    node_command(work, k, n)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs `n` nodes at once to the end; each node's stderr.
fn run_nodes(work: &Work, n: u32) -> Vec<String> {
    let children: Vec<Child> = (1..=n).map(|k| spawn_node(work, k, n)).collect();
    children
        .into_iter()
        .enumerate()
        .map(|(i, child)| {
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            eprintln!("node {}/{n}: {}\n{stderr}", i + 1, out.status);
            assert!(out.status.success(), "node {}/{n} failed:\n{stderr}", i + 1);
            stderr
        })
        .collect()
}

/// A repository's tree with the files whose order follows the order of conversions (a layer's
/// `origin.json`, the podman store's JSON records) replaced by their sorted content, so that two
/// runs that converted the same images in another order compare equal.
fn normalised(repo: &Path) -> Tree {
    let mut tree = Tree::scan(repo).unwrap();
    for (path, node) in &mut tree.nodes {
        let order_dependent = path.ends_with("/.metadata/origin.json")
            || (path.starts_with("podmanStore/") && path.ends_with(".json"));
        if !order_dependent || node.content.is_none() {
            continue;
        }
        let bytes = std::fs::read(repo.join(path.as_str())).unwrap();
        let mut value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        sort_arrays(&mut value);
        node.content = Some(value.to_string());
        node.size = 0;
    }
    tree
}

fn sort_arrays(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Array(items) => {
            items.iter_mut().for_each(sort_arrays);
            items.sort_by_key(ToString::to_string);
        }
        serde_json::Value::Object(map) => map.values_mut().for_each(sort_arrays),
        _ => {}
    }
}

fn events(work: &Work, k: u32) -> Vec<serde_json::Value> {
    work.events(&format!("events-{k}.jsonl"))
}

/// The images node `k` converted (`end_image` ok) and those it left to other shards, with the
/// owner each `image_other_shard` names.
fn node_images(work: &Work, k: u32) -> (BTreeSet<String>, BTreeMap<String, u64>) {
    let mut converted = BTreeSet::new();
    let mut other = BTreeMap::new();
    for event in events(work, k) {
        match event["action"].as_str().unwrap() {
            "end_image" => {
                assert_eq!(event["status"], "ok", "node {k}: {event}");
                converted.insert(event["image"].as_str().unwrap().to_owned());
            }
            "image_other_shard" => {
                other.insert(
                    event["image"].as_str().unwrap().to_owned(),
                    event["owner"].as_u64().unwrap(),
                );
            }
            "image_up_to_date" => panic!("node {k}: nothing was converted before: {event}"),
            _ => {}
        }
    }
    (converted, other)
}

fn podman_names(repo: &Path) -> BTreeSet<String> {
    let path = repo.join("podmanStore/overlay-images/images.json");
    let images: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    images
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["names"].as_array().cloned().unwrap_or_default())
        .map(|n| n.as_str().unwrap().to_owned())
        .collect()
}

fn converted_by(set: &Set, n: u32) -> Work {
    convert_nodes(Work::gateway(), set, n)
}

/// Runs `n` nodes at once over the set in `work` (see [`converted_by`]).
fn convert_nodes(work: Work, set: &Set, n: u32) -> Work {
    work.wishlist(&set.inputs(), "");
    let started = std::time::Instant::now();
    let stderrs = run_nodes(&work, n);
    let wall = started.elapsed().as_secs_f64();
    let log = work.standin_log();
    let ingests = log.iter().filter(|l| l.starts_with("ingest")).count();
    let publishes = log.iter().filter(|l| l.starts_with("publish")).count();
    // Stand-in timing on one host (debug build), not a server's: for orientation only.
    eprintln!(
        "{n} node(s): {wall:.1} s wall, {:.2} ingests and {:.2} publishes per image, {:.1} images per minute",
        ingests as f64 / set.images.len() as f64,
        publishes as f64 / set.images.len() as f64,
        set.images.len() as f64 * 60.0 / wall
    );
    let all: BTreeSet<String> = set.images.iter().map(|(i, _, _)| i.clone()).collect();
    let mut seen = BTreeSet::new();
    for k in 1..=n {
        let (converted, other) = node_images(&work, k);
        for image in &converted {
            assert!(seen.insert(image.clone()), "{image} converted by two nodes");
            let name = image.strip_prefix("http://").unwrap();
            assert_eq!(owner_of(name, n), k, "node {k}/{n} converted {image}");
        }
        // Every image a node did not convert it reports as another shard's, naming the owner.
        let others: BTreeSet<String> = other.keys().cloned().collect();
        let expected: BTreeSet<String> = all.difference(&converted).cloned().collect();
        assert_eq!(others, expected, "node {k}/{n}");
        for (image, owner) in &other {
            let name = image.strip_prefix("http://").unwrap();
            assert_eq!(u64::from(owner_of(name, n)), *owner, "{image}");
        }
        let summary = format!(
            "ducc: {} converted, 0 up to date{}, 0 failed",
            converted.len(),
            if other.is_empty() {
                String::new()
            } else {
                format!(", {} other shard", other.len())
            }
        );
        assert!(
            stderrs[k as usize - 1].contains(&summary),
            "node {k}/{n}: {summary}"
        );
    }
    assert_eq!(seen, all, "every image converted by exactly one node");

    let repo = work.repo();
    let configs: BTreeSet<String> = set
        .images
        .iter()
        .map(|(_, _, image)| image.config.digest.clone())
        .collect();
    let base: BTreeSet<String> = origin(&repo, &set.base).into_iter().collect();
    assert_eq!(base, configs, "the shared base layer's origin.json");
    for (g, middle) in set.middles.iter().enumerate() {
        let users: BTreeSet<String> = set.images[g * 3..g * 3 + 3]
            .iter()
            .map(|(_, _, image)| image.config.digest.clone())
            .collect();
        let recorded: BTreeSet<String> = origin(&repo, middle).into_iter().collect();
        assert_eq!(recorded, users, "group {g}'s middle layer");
    }
    let names: BTreeSet<String> = set.images.iter().map(|(_, n, _)| n.clone()).collect();
    assert_eq!(
        podman_names(&repo),
        names,
        "the podman store lists every image"
    );
    for (_, name, image) in &set.images {
        let (host, rest) = name.split_once('/').unwrap();
        assert_eq!(
            marker_config(&repo, host, rest).as_deref(),
            Some(image.config.digest.as_str()),
            "{name}"
        );
    }
    work
}

#[test]
fn one_two_and_three_nodes_convert_every_image_once_into_the_same_repository() {
    let set = push_set();
    let one = converted_by(&set, 1);
    let expected = normalised(&one.repo());
    for n in [2, 3] {
        let work = converted_by(&set, n);
        expected.assert_same_as(
            &normalised(&work.repo()),
            &run_options(),
            "one node's run",
            &format!("{n} nodes' run"),
        );
    }
}

/// The public names of the images `ducc list --json` shows as node `k`.
fn listed_by(work: &Work, k: u32) -> BTreeSet<String> {
    let out = node_ducc(work, k, "list", &[REPO, "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "list as node {k}: {stderr}");
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    listing["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_node_that_never_converted_anything_lists_and_prunes_each_shard_after_other_nodes_converted() {
    let set = push_set();
    // Node 3 mounted the repository before anything was published and converts nothing: its
    // view stays empty until it is brought to the newest revision.
    let work = Work::gateway();
    mount_node(&work, 3);
    let work = convert_nodes(work, &set, 2);
    assert!(
        !node_view(&work, 3).join(".metadata").exists(),
        "node 3's view lags (the premise)"
    );
    let names: BTreeSet<String> = set.images.iter().map(|(_, n, _)| n.clone()).collect();
    let before = work.standin_log().len();
    assert_eq!(listed_by(&work, 3), names, "node 3 lists every image");
    assert_eq!(
        remounts_since(&work, before),
        1,
        "one remount for the listing"
    );

    // The list keeps only the named images: the eight globbed ones are no longer wished.
    let kept: Vec<String> = set.images[8..].iter().map(|(i, _, _)| i.clone()).collect();
    let wish = work.wishlist(&kept, "");
    let wish = wish.to_str().unwrap();
    let repo = work.repo();
    let recorded = |name: &str| {
        let (host, rest) = name.split_once('/').unwrap();
        marker_config(&repo, host, rest).is_some()
    };
    let dropped: Vec<&String> = set.images[..8].iter().map(|(_, n, _)| n).collect();
    // Usually both shards hold some (all eight in one shard happens once in 128 sets).
    let (first, second): (Vec<&String>, Vec<&String>) =
        dropped.iter().partition(|name| owner_of(name, 2) == 1);
    let shard_2_has_some = set.images.iter().any(|(_, n, _)| owner_of(n, 2) == 2);

    // Node 3 prunes shard 1, then shard 2: each time from the newest revision.
    let prune = |k: u32| {
        let out = node_ducc(&work, 3, "prune", &[wish, "--shard", &format!("{k}/2")])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        eprintln!(
            "prune --shard {k}/2 as node 3: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), stdout)
    };
    let (code, out) = prune(1);
    assert_eq!(code, 0, "{out}");
    for name in &first {
        assert!(!recorded(name), "{name} of shard 1 kept:\n{out}");
        assert!(out.contains(&format!("deleted {name}")), "{out}");
    }
    for name in &second {
        assert!(
            recorded(name),
            "{name} of shard 2 deleted by a prune of shard 1:\n{out}"
        );
    }
    for (_, name, _) in &set.images[8..] {
        assert!(recorded(name), "{name} is still wished");
    }
    if shard_2_has_some {
        assert!(out.contains("of other shards, left alone"), "{out}");
    }

    let (code, out) = prune(2);
    assert_eq!(code, 0, "{out}");
    for name in &second {
        assert!(out.contains(&format!("deleted {name}")), "{out}");
    }
    for name in dropped {
        assert!(!recorded(name), "{name}:\n{out}");
    }
    for (_, name, _) in &set.images[8..] {
        assert!(recorded(name), "{name} is still wished");
    }
    let kept: BTreeSet<String> = set.images[8..].iter().map(|(_, n, _)| n.clone()).collect();
    assert_eq!(listed_by(&work, 3), kept);
}

#[test]
fn a_second_pass_on_a_node_whose_view_its_own_ingests_left_behind_does_no_work() {
    let set = push_set();
    let work = Work::gateway();
    work.wishlist(&set.inputs(), "");
    mount_node(&work, 1);
    // Node 2 converts its shard first, so node 1's view is behind and repaired (pinned) at its
    // first remount; its own ingests after that leave it where it was.
    // Each run's stderr, and the remounts a pass may make: one at its start, one per image
    // converted, one a minute.
    let run = |k: u32, events: &str| {
        let mut command = node_command_to(&work, k, 2, events);
        let started = Instant::now();
        let stderr = finish(
            command
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
            &format!("node {k} ({events})"),
        );
        (stderr, 1 + started.elapsed().as_secs() as usize / 60)
    };
    run(2, "events-2.jsonl");
    let before = work.standin_log().len();
    let (_, minutes) = run(1, "events-1.jsonl");
    let (converted, other) = node_images(&work, 1);
    let first_pass = remounts_since(&work, before);
    eprintln!(
        "node 1's first pass: {} converted, {first_pass} remounts",
        converted.len()
    );
    assert!(
        first_pass <= 1 + converted.len() + minutes,
        "{first_pass} remounts for {} images converted",
        converted.len()
    );
    // The premise: the view lacks a marker node 1's own last ingests published.
    let lagging = set.images.iter().any(|(input, name, _)| {
        let (host, rest) = name.split_once('/').unwrap();
        converted.contains(input)
            && marker_config(&work.repo(), host, rest).is_some()
            && marker_config(&node_view(&work, 1), host, rest).is_none()
    });
    assert!(lagging, "node 1's view shows all its own markers already");

    let before = work.standin_log().len();
    let (stderr, minutes) = run(1, "events-1-again.jsonl");
    let mut up_to_date = 0;
    for event in work.events("events-1-again.jsonl") {
        match event["action"].as_str().unwrap() {
            "start_image" | "layer_unpack" | "layer_found" | "flat_built" => {
                panic!("the second pass did work: {event}")
            }
            "image_up_to_date" => up_to_date += 1,
            _ => {}
        }
    }
    assert_eq!(up_to_date, converted.len());
    let summary = format!(
        "ducc: 0 converted, {up_to_date} up to date, {} other shard, 0 failed",
        other.len()
    );
    assert!(stderr.contains(&summary), "{summary}:\n{stderr}");
    let log = &work.standin_log()[before..];
    assert!(
        !log.iter()
            .any(|l| l.starts_with("ingest") || l.starts_with("publish")),
        "{log:#?}"
    );
    let remounts = remounts_since(&work, before);
    eprintln!("node 1's second pass: {remounts} remounts");
    assert!(
        (1..=minutes).contains(&remounts),
        "one remount for the pass (and one a minute): {remounts}"
    );
}

#[test]
fn a_remount_that_fails_is_a_warning_for_convert_and_an_error_for_list() {
    let registry = Registry::anonymous();
    let host = registry.host().to_owned();
    let client = images::client_for(&host, None);
    let name = unique_repo("nodes-remount");
    let image = Image::new(vec![Layer::random("opt/a", 600)], "remount");
    image.push(&client, &images::repository(&host, &name), "v1");
    let work = Work::gateway();
    work.wishlist(&[format!("http://{host}/{name}:v1")], "");
    let fail = |what: &str| {
        work.fail_next("mount", what);
    };
    fail("mount failed: injected");
    let stderr = run_nodes(&work, 1).remove(0);
    assert!(
        stderr.contains("cannot bring this node's view of the repository to the newest revision")
            && stderr.contains("mount failed: injected"),
        "{stderr}"
    );
    assert!(stderr.contains("ducc: 1 converted"), "{stderr}");
    assert_eq!(
        marker_config(&work.repo(), &host, &format!("{name}:v1")).as_deref(),
        Some(image.config.digest.as_str())
    );

    fail("mount failed: injected again");
    let out = node_ducc(&work, 1, "list", &[REPO]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("mount failed: injected again"), "{stderr}");
}

#[test]
fn a_bad_shard_is_a_usage_error() {
    let work = Work::new(Backend::Local);
    let wish = work.wishlist(&[], "");
    for bad in ["0/2", "3/2", "1/0", "x", "1/2/3"] {
        for command in ["convert", "loop", "serve"] {
            let mut ducc = work.ducc(command, &wish);
            ducc.args(["--shard", bad]);
            if command == "serve" {
                ducc.args(["--listen", "127.0.0.1:0", "--no-auth"]);
            }
            let out = ducc.output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{command} --shard {bad}: {stderr}"
            );
            assert!(stderr.contains("K/N"), "{command} --shard {bad}: {stderr}");
        }
        let (code, _) = work.lifecycle("prune", &[wish.to_str().unwrap(), "--shard", bad]);
        assert_eq!(code, 2, "prune --shard {bad}");
    }
}

/// Waits (polling) until `ready` holds, failing after two minutes with `what`.
fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Makes the stand-in's next call at `point` whose node and arguments match `filter` (see its
/// module docs) wait; returns the pause file (remove it to go on).
fn pause_at(work: &Work, point: &str, filter: &str) -> PathBuf {
    let dir = work.path("standin/pause");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(point), filter).unwrap();
    dir.join(point)
}

/// The pid of the stand-in call that paused (see [`pause_at`]), once it has.
fn paused_call(work: &Work, child: &mut Child) -> i32 {
    let paused = work.path("standin/paused");
    wait_for("the pause", || {
        assert!(child.try_wait().unwrap().is_none(), "ducc ended first");
        paused.exists()
    });
    let text = std::fs::read_to_string(&paused).unwrap();
    std::fs::remove_file(&paused).unwrap();
    text.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn finish(child: Child, what: &str) -> String {
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("{what}: {}\n{stderr}", out.status);
    assert!(out.status.success(), "{what} failed:\n{stderr}");
    stderr
}

#[test]
fn two_nodes_racing_for_one_new_layer_write_it_once_and_both_list_themselves_in_its_origin() {
    let registry = Registry::anonymous();
    let host = registry.host().to_owned();
    let client = images::client_for(&host, None);
    let name = unique_repo("nodes-race");
    let shared = Layer::random("opt/shared", 4096);
    let images: Vec<Image> = (0..2)
        .map(|i| {
            let top = Layer::random(&format!("opt/own{i}"), 700 + i * 10);
            let image = Image::new(vec![shared.clone(), top], &format!("race{i}"));
            image.push(&client, &images::repository(&host, &name), &format!("r{i}"));
            image
        })
        .collect();
    let work = Work::gateway();
    // Each node its own one-image wish list (shard 1/1): both need the shared layer.
    let convert = |k: u32| {
        let wish = work.path(&format!("wish-{k}.yaml"));
        std::fs::write(
            &wish,
            format!(
                "version: 1\nuser: ''\ncvmfs_repo: {REPO}\ninput:\n  - 'http://{host}/{name}:r{}'\n",
                k - 1
            ),
        )
        .unwrap();
        let cache = work.path(&format!("cache-{k}"));
        let events = work.path(&format!("events-{k}.jsonl"));
        let mut command = node_ducc(
            &work,
            k,
            "convert",
            &[wish.to_str().unwrap(), "-i", "--no-progress"],
        );
        command
            .arg("--cache-dir")
            .arg(cache)
            .arg("-n")
            .arg(events)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    };
    let hex = shared.hex().to_owned();
    let lease = format!("{REPO}/.layers/{}/{hex}", &hex[..2]);
    // Node 1 holds the layer's lease (its transaction open, nothing published yet) ...
    let pause = pause_at(&work, "transaction", &format!("node=node1 {lease}"));
    let mut first = convert(1).spawn().unwrap();
    paused_call(&work, &mut first);
    // ... while node 2, which found no such layer, asks for it.
    let second = convert(2).spawn().unwrap();
    let asked = |work: &Work| {
        work.standin_log()
            .iter()
            .filter(|l| l.starts_with("transaction ") && l.ends_with(&lease))
            .count()
    };
    wait_for("node 2 asking for the busy lease", || asked(&work) >= 2);
    std::fs::remove_file(&pause).unwrap();
    finish(first, "node 1");
    let stderr = finish(second, "node 2");
    assert!(
        stderr.contains("busy") && stderr.contains("lease wait"),
        "the wait for the lease is visible:\n{stderr}"
    );
    // The wait is an event, and counted.
    let events2 = work.events("events-2.jsonl");
    let waits: Vec<&serde_json::Value> = events2
        .iter()
        .filter(|e| e["action"] == "lease_wait" && e["lease"] == lease.as_str())
        .collect();
    assert_eq!(waits.len(), 1, "{events2:#?}");
    assert_eq!(waits[0]["limit_s"], 120);
    let ended = events2
        .iter()
        .find(|e| e["action"] == "lease_wait_end" && e["lease"] == lease.as_str())
        .unwrap();
    assert_eq!(ended["granted"], true, "{ended}");
    let end = events2.iter().find(|e| e["action"] == "end_ducc").unwrap();
    assert!(end["lease_waits"].as_u64().unwrap() >= 1, "{end}");

    let unpacked = |k: u32| {
        work.events(&format!("events-{k}.jsonl"))
            .iter()
            .filter(|e| e["action"] == "layer_unpack" && e["layer"] == shared.blob.digest.as_str())
            .count()
    };
    assert_eq!(unpacked(1), 1, "node 1 wrote the layer");
    assert_eq!(unpacked(2), 0, "node 2 found it there inside its lease");
    // Node 2 counts the layer as found, not as unpacked, and says so.
    let found: Vec<serde_json::Value> = events2
        .iter()
        .filter(|e| e["action"] == "layer_found")
        .cloned()
        .collect();
    assert_eq!(found.len(), 1, "{events2:#?}");
    assert_eq!(found[0]["layer"], shared.blob.digest.as_str());
    let image2 = events2.iter().find(|e| e["action"] == "end_image").unwrap();
    assert_eq!(image2["status"], "ok", "{image2}");
    assert_eq!(image2["layers_unpacked"], 1, "its own layer only: {image2}");
    assert_eq!(image2["layers_found"], 1, "{image2}");
    let recorded: BTreeSet<String> = origin(&work.repo(), &shared).into_iter().collect();
    let configs: BTreeSet<String> = images.iter().map(|i| i.config.digest.clone()).collect();
    assert_eq!(recorded, configs, "both images in the layer's origin.json");
    // Node 2 gave its transaction on the layer back without publishing it.
    let log = work.standin_log();
    let first_ask = log.iter().position(|l| l.ends_with(&lease)).unwrap();
    assert!(
        log[first_ask..].contains(&format!("abort -f {REPO}")),
        "{log:#?}"
    );
    for image in &images {
        assert!(flat_dir(&work.repo(), image).is_dir());
    }
}

#[test]
fn a_node_killed_in_the_middle_of_an_image_finishes_its_shard_when_started_again() {
    let set = push_set();
    let expected = normalised(&converted_by(&set, 1).repo());
    let work = Work::gateway();
    work.wishlist(&set.inputs(), "");
    // Node 1 is killed (ducc and the stand-in call) as it publishes its first transaction.
    let pause = pause_at(&work, "publish", "node=node1");
    let mut first = node_command(&work, 1, 2)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let second = spawn_node(&work, 2, 2);
    let standin = paused_call(&work, &mut first);
    first.kill().unwrap();
    first.wait().unwrap();
    let pid = rustix::process::Pid::from_raw(standin).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    std::fs::remove_file(&pause).unwrap();
    // Started again at once: the killed run's transaction holds its lease (as a real gateway
    // holds it until it expires), which node 2 may be waiting for.
    let rerun = node_command(&work, 1, 2)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = finish(rerun, "node 1 again");
    finish(second, "node 2");
    assert!(
        stderr.contains("killed during a cvmfs_server call"),
        "the rerun recovers what the kill left:\n{stderr}"
    );
    expected.assert_same_as(
        &normalised(&work.repo()),
        &run_options(),
        "one node's uninterrupted run",
        "two nodes, one killed and started again",
    );
    let names: BTreeSet<String> = set.images.iter().map(|(_, n, _)| n.clone()).collect();
    assert_eq!(podman_names(&work.repo()), names);
}

/// `ducc SUBCOMMAND ARGS...` on node `k`, which must succeed.
fn node_ok(work: &Work, k: u32, subcommand: &str, args: &[&str]) {
    let out = node_ducc(work, k, subcommand, args).output().unwrap();
    assert!(
        out.status.success(),
        "{subcommand} on node {k}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two nodes' conversion of `set`, the first image deleted, and node 1's gc started and held at
/// its first removal (holding the repository's gc lock): the work, the pause file, the gc and
/// the paused stand-in's pid.
fn gc_held_at_its_first_removal(set: &Set) -> (Work, PathBuf, Child, i32) {
    let work = converted_by(set, 2);
    node_ok(&work, 1, "delete-image", &[REPO, &set.images[0].1]);
    let pause = pause_at(&work, "ingest", "node=node1 --delete");
    let mut gc = node_ducc(&work, 1, "gc", &[REPO, "--grace-period", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let standin = paused_call(&work, &mut gc);
    (work, pause, gc, standin)
}

#[test]
fn a_second_gc_on_another_node_refuses_to_start_while_one_runs() {
    let set = push_set();
    // Node 1's gc is held at its first removal, holding the repository's gc lock.
    let (work, pause, first, _standin) = gc_held_at_its_first_removal(&set);
    let lock = work.repo().join(".metadata/.gc/lock.json");
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(&lock).unwrap()).unwrap();
    assert_eq!(record["pid"].as_u64(), Some(u64::from(first.id())));
    let refused = node_ducc(&work, 2, "gc", &[REPO, "--grace-period", "0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("another garbage collection is running")
            && stderr.contains(&format!("pid {}", first.id())),
        "{stderr}"
    );
    std::fs::remove_file(&pause).unwrap();
    finish(first, "node 1's gc");
    assert!(!lock.exists(), "released at its end");
    assert!(
        flat_dir(&work.repo(), &set.images[0].2)
            .symlink_metadata()
            .is_err()
    );
    // Once it ended, node 2's gc runs.
    node_ok(&work, 2, "gc", &[REPO, "--grace-period", "0"]);
}

#[test]
fn the_gc_lock_of_a_killed_gc_is_taken_over_by_the_next_one() {
    let set = push_set();
    let (work, pause, mut first, standin) = gc_held_at_its_first_removal(&set);
    first.kill().unwrap();
    first.wait().unwrap();
    let pid = rustix::process::Pid::from_raw(standin).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    std::fs::remove_file(&pause).unwrap();
    assert!(work.repo().join(".metadata/.gc/lock.json").is_file());
    // The killed call's lease stays held at the gateway (until it expires) until node 1 aborts
    // what it left open, as its next ducc run does first.
    let wrapper = work.path("cvmfs_server");
    let aborted = Command::new(&wrapper)
        .args(["abort", "-f", REPO])
        .env("CVMFS_STANDIN_NODE", "node1")
        .output()
        .unwrap();
    assert!(aborted.status.success());
    // The record names a process of this host that is gone: node 2's gc takes it over.
    let out = node_ducc(&work, 2, "gc", &[REPO, "--grace-period", "0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("taken over"), "{stderr}");
    assert!(!work.repo().join(".metadata/.gc/lock.json").exists());
    assert!(
        flat_dir(&work.repo(), &set.images[0].2)
            .symlink_metadata()
            .is_err()
    );
}
