//! `ducc convert --publisher cvmfs` against the `cvmfs_server` stand-in: the same repository as
//! the local publisher, the expected command sequence, and a layer whose diff_id is wrong never
//! reaching the repository (cvmfs ingests are published at once, so it must be checked before).
#![allow(clippy::unwrap_used)]

mod convert_support;

use convert_support::{
    Backend, Image, Layer, REPO, Work, assert_same_repository, flat_dir, layer_dir, marker_config,
    run_options, scan,
};
use ducc_tests::{Action, FaultProxy, Registry, Rule, images, unique_repo, wait};
use std::os::unix::fs::MetadataExt;

/// Entries of a published tree owned by 65534: directories `cvmfs_server ingest -k` invented.
fn nobody_owned(root: &std::path::Path) -> Vec<String> {
    scan(root).paths_where(|_, node| node.uid == 65534 || node.gid == 65534)
}

/// Runs `ducc convert -i --layer-whiteouts oci` (raw `.wh.` names, so that trees compare with
/// the local publisher's) with `extra` arguments, and asserts that it succeeds.
fn convert_raw(work: &Work, extra: &[&str]) {
    let args: Vec<&str> = ["-i", "--layer-whiteouts", "oci"]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    assert!(work.convert(&args).status.success(), "{args:?}");
}

/// Asserts that a rerun of `cvmfs` (with `extra` arguments) calls nothing but `list`.
fn assert_rerun_calls_only_list(cvmfs: &Work, extra: &[&str]) {
    let before = cvmfs.standin_log().len();
    convert_raw(cvmfs, extra);
    let again = &cvmfs.standin_log()[before..];
    assert!(again.iter().all(|l| l == "list"), "{again:#?}");
}

/// Asserts that the stand-in was called for ingests and mounted transactions only (issue 24):
/// no abort, no other command.
fn assert_only_ingests_and_mounted_transactions(log: &[String]) {
    assert!(
        log.iter().all(|l| l == "list"
            || l.starts_with("ingest ")
            || l.starts_with("mkfs ")
            || l.starts_with("transaction ")
            || l.starts_with("publish ")),
        "{log:#?}"
    );
}

/// Runs `ducc convert -i -n events.jsonl` on `work`, asserts that it succeeds and returns the
/// events whose `action` is `action`.
fn rerun_events(work: &Work, action: &str) -> Vec<serde_json::Value> {
    let events = work.path("events.jsonl");
    assert!(
        work.convert(&["-i", "-n", events.to_str().unwrap()])
            .status
            .success()
    );
    work.events("events.jsonl")
        .into_iter()
        .filter(|e| e["action"] == action)
        .collect()
}

/// The pair of [`push_pair`] under `label`, and `<label>:one` converted through the stand-in:
/// the image, the work and the scan of its repository.
fn one_of_pair_converted(label: &str) -> (String, Image, Work, ducc_tests::tree::Tree) {
    let registry = Registry::anonymous();
    let name = unique_repo(label);
    let (one, _) = push_pair(&name);
    let work = Work::new(Backend::Cvmfs);
    work.wishlist(&[format!("http://{}/{name}:one", registry.host())], "");
    assert!(work.convert(&["-i"]).status.success());
    let expected = scan(&work.repo());
    (name, one, work, expected)
}

/// Converts `inputs` with the local publisher and with the `cvmfs` one (stand-in), each run
/// succeeding, both with raw `.wh.` names (`--layer-whiteouts oci`) so that their trees compare.
fn convert_with_both(inputs: &[String]) -> (Work, Work) {
    let local = Work::local_reference(inputs);
    let cvmfs = Work::new(Backend::Cvmfs);
    cvmfs.wishlist(inputs, "");
    convert_raw(&cvmfs, &[]);
    (local, cvmfs)
}

/// Two images sharing a layer, one with a whiteout and a nested directory.
fn push_pair(name: &str) -> (Image, Image) {
    let registry = Registry::anonymous();
    let client = images::client_for(registry.host(), None);
    let repo = images::repository(registry.host(), name);
    let base = Layer::files(&[
        ("etc/os-release", b"ID=test\n"),
        ("usr/share/doc/readme", b"base"),
        ("tmp/gone", b"x"),
    ]);
    let one = Image::new(
        vec![
            base.clone(),
            Layer::files(&[("tmp/.wh.gone", b""), ("opt/one/bin", b"1")]),
        ],
        "one",
    );
    let two = Image::new(vec![base, Layer::random("opt/two/data", 4096)], "two");
    one.push(&client, &repo, "one");
    two.push(&client, &repo, "two");
    (one, two)
}

#[test]
fn cvmfs_publisher_builds_the_same_repository_as_the_local_one() {
    let registry = Registry::anonymous();
    let name = unique_repo("cvmfs-same");
    let (one, two) = push_pair(&name);
    let inputs = [
        format!("http://{}/{name}:one", registry.host()),
        format!("http://{}/{name}:two", registry.host()),
    ];

    let (local, cvmfs) = convert_with_both(&inputs);

    let expected = scan(&local.repo());
    let actual = scan(&cvmfs.repo());
    expected.assert_same_as(
        &actual,
        &run_options(),
        "local publisher",
        "cvmfs publisher",
    );
    let published = cvmfs.repo();
    assert!(
        layer_dir(&published, &one.layers[1])
            .join("layerfs/tmp/.wh.gone")
            .is_file()
    );
    assert_eq!(
        std::fs::read(flat_dir(&published, &two).join("etc/os-release")).unwrap(),
        b"ID=test\n"
    );
    assert!(!flat_dir(&published, &one).join("tmp/gone").exists());

    // Layers went in through ingest, the rest through mounted transactions (issue 24): no
    // abort, and no directory that ingest had to invent (owned by 4294967295, shown as 65534) anywhere.
    let log = cvmfs.standin_log();
    assert_only_ingests_and_mounted_transactions(&log);
    assert_eq!(nobody_owned(&published), Vec::<String>::new());
    for image in [&one, &two] {
        let flat = flat_dir(&published, image);
        let meta = std::fs::metadata(&flat).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (0, 0),
            "flat root of {}",
            image.config_hex()
        );
        for layer in &image.layers {
            let root = std::fs::metadata(layer_dir(&published, layer).join("layerfs")).unwrap();
            assert_eq!((root.uid(), root.gid()), (0, 0));
        }
    }
    // Issue 29: on a stratum 0 each image's new layers are one ingest (their metadata and new
    // shard catalogs in the same tar); the rest of both images (flat trees as grafts, issue 24,
    // symlinks, the podman store, origin updates and markers) is one mounted transaction, the
    // two images being one batch (`--batch` defaults to 10).
    let ingests = log.iter().filter(|l| l.starts_with("ingest ")).count();
    let publishes = log.iter().filter(|l| l.starts_with("publish ")).count();
    eprintln!("two images, 3 distinct layers: {ingests} ingests, {publishes} publishes");
    assert_eq!((ingests, publishes), (2, 1), "{log:#?}");
    assert!(
        !log.iter().any(|l| l.starts_with("abort ")),
        "nothing aborted: {log:#?}"
    );
    assert_eq!(
        log.iter().rev().find(|l| *l != "list").map(String::as_str),
        Some("publish unpacked.test"),
        "the marker's commit is last: {log:#?}"
    );

    // A rerun changes nothing and opens no transaction.
    assert_rerun_calls_only_list(&cvmfs, &[]);
    expected.assert_same_as(
        &scan(&cvmfs.repo()),
        &run_options(),
        "local publisher",
        "cvmfs rerun",
    );
}

#[test]
fn layer_with_a_wrong_diff_id_never_reaches_a_cvmfs_repository() {
    let registry = Registry::anonymous();
    let client = images::client_for(registry.host(), None);
    let name = unique_repo("cvmfs-diffid");
    let repo = images::repository(registry.host(), &name);
    let good = Layer::files(&[("good", b"good")]);
    let bad = Layer::random("bad/data", 64 * 1024);
    let lie = images::sha256(b"not the layer");
    let image = Image::with_diff_ids(
        vec![good.clone(), bad.clone()],
        "liar",
        &[&good.diff_id, &lie],
    );
    image.push(&client, &repo, "liar");

    let work = Work::new(Backend::Cvmfs);
    work.wishlist(&[format!("http://{}/{name}:liar", registry.host())], "");
    let out = work.convert(&["-i", "--max-concurrent-downloads", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains(&format!("{name}:liar (layers)")))
        .unwrap_or_else(|| panic!("no summary line in {stderr}"));
    assert!(
        line.contains(&bad.blob.digest) && line.contains(lie.trim_start_matches("sha256:")),
        "{line}"
    );

    let published = work.repo();
    assert!(
        !layer_dir(&published, &bad).exists(),
        "the bad layer was published"
    );
    assert!(!flat_dir(&published, &image).exists());
    assert!(marker_config(&published, registry.host(), &format!("{name}:liar")).is_none());
    let h = bad.hex();
    assert!(
        work.standin_log().iter().all(|l| !l.contains(h)),
        "{:#?}",
        work.standin_log()
    );
    // The scratch space holds no staged tar afterwards.
    let left: Vec<_> = std::fs::read_dir(work.path("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        left.iter()
            .all(|n| !n.to_string_lossy().starts_with("ducc-layer")),
        "{left:?}"
    );
}

#[test]
fn layer_directory_without_its_metadata_is_written_again() {
    // With cvmfs a layer's `layerfs` is published by its ingest, its layers.json by the commit
    // after it: a run killed in between leaves `layerfs` alone, and the next run must redo it.
    let registry = Registry::anonymous();
    let (name, one, work, expected) = one_of_pair_converted("cvmfs-half-layer");

    let h = one.layers[1].hex();
    let info = format!(".layers/{}/{h}/.metadata/layers.json", &h[..2]);
    let marker = format!(".metadata/{}/{name}:one", registry.host());
    standin_delete(&work, &[&info, &marker]);
    assert!(
        layer_dir(&work.repo(), &one.layers[1])
            .join("layerfs")
            .is_dir()
    );

    let unpacked: Vec<String> = rerun_events(&work, "layer_unpack")
        .iter()
        .map(|e| e["layer"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(unpacked, vec![one.layers[1].blob.digest.clone()]);
    expected.assert_same_as(
        &scan(&work.repo()),
        &run_options(),
        "first run",
        "run after the half-written layer",
    );
}

#[test]
fn partly_ingested_flat_tree_is_removed_and_built_again() {
    // With cvmfs a flat tree is published by its ingest; a run killed during that ingest may
    // leave part of the tree published, without the completion record the transaction writes
    // after it. The next run must not take that tree for a finished one.
    let registry = Registry::anonymous();
    let (name, one, work, expected) = one_of_pair_converted("cvmfs-half-flat");

    let cfg = one.config_hex();
    let flat = format!(".flat/{}/{cfg}", &cfg[..2]);
    let record = format!("{flat}/.singularity.d/.ducc-flat.json");
    assert!(work.repo().join(&record).is_file());
    // What an ingest cut short leaves: part of the tree, no record, no marker.
    let file_in_tree = format!("{flat}/opt/one/bin");
    let marker = format!(".metadata/{}/{name}:one", registry.host());
    standin_delete(&work, &[&record, &file_in_tree, &marker]);
    assert!(work.repo().join(&flat).is_dir());

    assert_eq!(rerun_events(&work, "flat_built").len(), 1);
    expected.assert_same_as(
        &scan(&work.repo()),
        &run_options(),
        "first run",
        "run after the half-ingested flat tree",
    );
}

/// A tar with `usr/bin/tool` (a file), or with `usr/local/bin/alias` hardlinked to it while the
/// file itself is in the layer below (as dpkg-divert leaves in Debian images).
fn hardlink_layers() -> (Layer, Layer) {
    let mut lower = tar::Builder::new(Vec::new());
    let mut upper = tar::Builder::new(Vec::new());
    for (builder, dirs) in [
        (&mut lower, &["usr/", "usr/bin/"][..]),
        (&mut upper, &["usr/", "usr/local/", "usr/local/bin/"][..]),
    ] {
        for dir in dirs {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_mtime(1_600_000_000);
            header.set_size(0);
            builder.append_data(&mut header, dir, &[][..]).unwrap();
        }
    }
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o755);
    header.set_mtime(1_600_000_000);
    header.set_size(5);
    lower
        .append_data(&mut header, "usr/bin/tool", &b"tool\n"[..])
        .unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Link);
    header.set_mode(0o755);
    header.set_mtime(1_600_000_000);
    header.set_size(0);
    upper
        .append_link(&mut header, "usr/local/bin/alias", "usr/bin/tool")
        .unwrap();
    (
        Layer::new(
            &lower.into_inner().unwrap(),
            convert_support::Compression::Gzip,
        ),
        Layer::new(
            &upper.into_inner().unwrap(),
            convert_support::Compression::Gzip,
        ),
    )
}

#[test]
fn hardlink_into_a_lower_layer_is_copied_from_it_with_either_publisher() {
    let registry = Registry::anonymous();
    let client = images::client_for(registry.host(), None);
    let name = unique_repo("cvmfs-hardlink");
    let repo = images::repository(registry.host(), &name);
    let (lower, upper) = hardlink_layers();
    let image = Image::new(vec![lower, upper.clone()], "hardlink");
    image.push(&client, &repo, "1");
    let inputs = [format!("http://{}/{name}:1", registry.host())];

    let (local, cvmfs) = convert_with_both(&inputs);
    // cvmfs_server ingest turns hardlinks into independent entries (reference: cvmfs-server-
    // semantics A); a local directory keeps them. Everything else is the same.
    let options = convert_support::run_options();
    scan(&local.repo()).assert_same_as(
        &scan(&cvmfs.repo()),
        &ducc_tests::tree::Options {
            hardlinks: false,
            ..options
        },
        "local publisher",
        "cvmfs publisher",
    );
    for published in [local.repo(), cvmfs.repo()] {
        // The upper layer's directory holds its own copy; the flat tree has both names.
        assert_eq!(
            std::fs::read(layer_dir(&published, &upper).join("layerfs/usr/local/bin/alias"))
                .unwrap(),
            b"tool\n"
        );
        let flat = flat_dir(&published, &image);
        assert_eq!(
            std::fs::read(flat.join("usr/local/bin/alias")).unwrap(),
            b"tool\n"
        );
        assert_eq!(std::fs::read(flat.join("usr/bin/tool")).unwrap(), b"tool\n");
    }
}

/// Deletes `paths` from the stand-in repository with `cvmfs_server ingest --delete`: what a run
/// killed half-way leaves behind.
fn standin_delete(work: &Work, paths: &[&str]) {
    for path in paths {
        let out = std::process::Command::new(work.path("cvmfs_server"))
            .args(["ingest", "--delete", path, REPO])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The pair `<label>:one`, `<label>:two` converted by the local publisher (the reference a
/// rerun must match), and a convert of it through the cvmfs stand-in, started with the stand-in
/// set to pause at `point` on the first call whose arguments contain `filter`. Returns both works,
/// the paused ducc process and the paused stand-in's pid.
fn paused_cvmfs_run(
    label: &str,
    point: &str,
    filter: &str,
) -> (Work, Work, std::process::Child, i32) {
    let registry = Registry::anonymous();
    let name = unique_repo(label);
    let _ = push_pair(&name);
    let inputs = [
        format!("http://{}/{name}:one", registry.host()),
        format!("http://{}/{name}:two", registry.host()),
    ];
    let local = Work::local_reference(&inputs);

    let cvmfs = Work::new(Backend::Cvmfs);
    cvmfs.wishlist(&inputs, "");
    let command = cvmfs.command(&["-i", "--layer-whiteouts", "oci"]);
    let (child, standin) = cvmfs.spawn_paused(command, point, filter);
    (local, cvmfs, child, standin)
}

/// Runs a convert with the cvmfs publisher, pauses the stand-in at `point` on the first call
/// whose arguments contain `filter`, kills ducc and the stand-in with SIGKILL there, and checks
/// that a rerun finishes the work: the same repository as the local publisher's clean run.
fn killed_then_rerun(point: &str, filter: &str, label: &str) {
    let (local, cvmfs, child, standin) = paused_cvmfs_run(label, point, filter);
    cvmfs.kill_paused(child, standin, point);
    let before = cvmfs.standin_log().len();

    convert_raw(&cvmfs, &[]);
    let rerun = cvmfs.standin_log()[before..].to_vec();
    assert!(
        rerun.iter().any(|l| l == &format!("abort -f {REPO}")),
        "the stale transaction was aborted: {rerun:#?}"
    );
    assert_same_repository(&local, &cvmfs, "cvmfs after a kill and a rerun");
    assert_rerun_calls_only_list(&cvmfs, &[]);
}

#[test]
fn a_run_killed_during_a_layer_ingest_is_finished_by_the_next_run() {
    killed_then_rerun("ingest", "-b .layers/", "cvmfs-kill-ingest");
}

#[test]
fn a_run_killed_while_an_ingest_publishes_is_finished_by_the_next_run() {
    killed_then_rerun("ingest-commit", "-b .layers", "cvmfs-kill-publish");
}

/// The stand-in repository's published revision.
fn revision(work: &Work) -> u64 {
    let path = work.path("standin/repos").join(REPO).join("revision");
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Issue 24: behind the stand-in's gateway (every transaction on its own lease, layers through
/// the mount) the pair's repository is the local publisher's too, and its flat trees went in as
/// graft files naming the objects the layers' publishes stored.
#[test]
fn behind_a_gateway_the_cvmfs_publisher_builds_the_same_repository_as_the_local_one() {
    let registry = Registry::anonymous();
    let name = unique_repo("cvmfs-gateway-same");
    let _ = push_pair(&name);
    let inputs = [
        format!("http://{}/{name}:one", registry.host()),
        format!("http://{}/{name}:two", registry.host()),
    ];
    let local = Work::local_reference(&inputs);
    let gateway = Work::gateway();
    gateway.wishlist(&inputs, "");
    let events = gateway.path("events.jsonl");
    convert_raw(&gateway, &["-n", events.to_str().unwrap()]);
    assert_same_repository(&local, &gateway, "cvmfs publisher behind a gateway");
    let grafted: u64 = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["action"] == "published")
        .map(|e| e["grafted_files"].as_u64().unwrap())
        .sum();
    assert!(grafted > 0, "no flat file went in as a graft");
    assert_eq!(nobody_owned(&gateway.repo()), Vec::<String>::new());
    // A rerun publishes nothing; behind a gateway it remounts first (other nodes' work shows).
    let before = gateway.standin_log().len();
    convert_raw(&gateway, &[]);
    let again = &gateway.standin_log()[before..];
    assert!(
        again
            .iter()
            .all(|l| l == "list" || *l == format!("mount {REPO}")),
        "{again:#?}"
    );
}

/// Issue 24: ducc killed (SIGKILL) while its tar streams into a layer ingest: the stream stops
/// inside a block, so the ingest fails (scenario 21) and publishes no part of the layers, never
/// the entries written so far as if they were all (scenario 22); the next run does the rest.
#[test]
fn a_run_killed_while_streaming_a_layer_ingest_publishes_no_part_and_the_next_run_finishes_it() {
    let registry = Registry::anonymous();
    let client = images::client_for(registry.host(), None);
    let name = unique_repo("cvmfs-kill-stream");
    let repo = images::repository(registry.host(), &name);
    // Far more than a pipe holds (64 KiB): ducc blocks writing while the ingest is paused.
    let image = Image::new(
        vec![
            Layer::files(&[("etc/first", b"first\n")]),
            Layer::random("big/data", 1 << 20),
            Layer::files(&[("etc/last", b"last\n")]),
        ],
        &name,
    );
    image.push(&client, &repo, "v1");
    let inputs = [format!("http://{}/{name}:v1", registry.host())];
    let local = Work::local_reference(&inputs);
    let cvmfs = Work::new(Backend::Cvmfs);
    cvmfs.wishlist(&inputs, "");
    let command = cvmfs.command(&["-i"]);
    let (mut child, standin) = cvmfs.spawn_paused(command, "ingest", "-b .layers");
    let ducc = child.id();
    wait::until(
        "ducc blocked writing the ingest stream",
        wait::DEADLINE,
        || wait::blocked_writing_pipe(ducc),
    );
    let rev = revision(&cvmfs);
    child.kill().unwrap();
    child.wait().unwrap();
    // The ingest goes on reading what ducc wrote, then finds its input cut.
    std::fs::remove_file(cvmfs.path("standin/pause/ingest")).unwrap();
    wait::until("the ingest to end", wait::DEADLINE, || {
        wait::process_ended(standin)
    });
    assert_eq!(revision(&cvmfs), rev, "no part of the layers published");
    for layer in &image.layers {
        let dir = layer_dir(&cvmfs.repo(), layer);
        assert!(!dir.exists(), "{} published", dir.display());
    }
    let log = cvmfs.standin_log();
    assert!(
        log.iter()
            .any(|l| l.starts_with("ingest -k -t - -b .layers")),
        "the layers were streamed: {log:#?}"
    );
    convert_raw(&cvmfs, &[]);
    assert_same_repository(&local, &cvmfs, "cvmfs after a kill mid-stream and a rerun");
    assert_rerun_calls_only_list(&cvmfs, &[]);
}

/// Issue 24: the layers of an image go in as one ingest that starts with the first of them and
/// takes the others as they decode. The second layer's download is held back; the ingest is
/// already running (paused in the stand-in) before that layer is decoded, and the layer decodes
/// while the ingest still runs. The repository is the local publisher's.
#[test]
fn the_next_layer_decodes_while_the_server_ingests_the_ones_before() {
    let registry = Registry::anonymous();
    let client = images::client_for(registry.host(), None);
    let name = unique_repo("cvmfs-overlap");
    let repo = images::repository(registry.host(), &name);
    let image = Image::new(
        vec![
            Layer::files(&[("etc/first", b"first\n")]),
            Layer::random("big/data", 1 << 20),
        ],
        &name,
    );
    image.push(&client, &repo, "v1");
    let second = format!("sha256:{}", image.layers[1].hex());
    let proxy = FaultProxy::start(registry.host(), Vec::new());
    let inputs = [format!("http://{}/{name}:v1", proxy.host())];
    let local = Work::local_reference(&inputs);
    proxy.set_rules(vec![
        Rule::new(Action::Stall(std::time::Duration::from_secs(5)))
            .path_contains(&format!("/blobs/{second}"))
            .times(1),
    ]);
    let cvmfs = Work::new(Backend::Cvmfs);
    cvmfs.wishlist(&inputs, "");
    let events = cvmfs.path("events.jsonl");
    let mut command = cvmfs.command(&["-i", "--layer-whiteouts", "oci"]);
    command.arg("-n").arg(&events);
    let (mut child, _standin) = cvmfs.spawn_paused(command, "ingest", "-b .layers");
    let unpacked = || {
        std::fs::read_to_string(&events)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("\"action\":\"layer_unpack\"") && l.contains(&second))
    };
    assert!(
        !unpacked(),
        "the layers' ingest started only after the last layer was decoded"
    );
    wait::until(
        "the second layer to decode while the ingest is paused",
        wait::DEADLINE,
        || {
            assert!(child.try_wait().unwrap().is_none(), "ducc ended");
            unpacked()
        },
    );
    std::fs::remove_file(cvmfs.path("standin/pause/ingest")).unwrap();
    assert!(child.wait().unwrap().success());
    let layer_ingests: Vec<String> = cvmfs
        .standin_log()
        .into_iter()
        .filter(|l| l.starts_with("ingest -k -t - -b .layers"))
        .collect();
    assert_eq!(layer_ingests.len(), 1, "{layer_ingests:#?}");
    assert_same_repository(&local, &cvmfs, "cvmfs with the layers streamed");
}

/// Issue 24: killed while the flat tree's graft files are written through the mount (the
/// mounted transaction is open, nothing published yet).
#[test]
fn a_run_killed_during_the_mounted_writes_is_finished_by_the_next_run() {
    killed_then_rerun("transaction", "", "cvmfs-kill-mounted");
}

/// Issue 24: killed while the mounted transaction with the grafts publishes.
#[test]
fn a_run_killed_while_a_mounted_transaction_publishes_is_finished_by_the_next_run() {
    killed_then_rerun("publish", "", "cvmfs-kill-graft-publish");
}

/// `ducc convert` of one wish list file with the publisher of `work`, not yet run.
fn convert_command(work: &Work, wishlist: &std::path::Path) -> std::process::Command {
    let command = work.command(&[]);
    // The harness passes `<work>/wish.yaml`; a second list needs its own file: rebuild the
    // argument list with it in place.
    let args: Vec<std::ffi::OsString> = command
        .get_args()
        .map(|a| {
            if a == work.path("wish.yaml").as_os_str() {
                wishlist.as_os_str().to_owned()
            } else {
                a.to_owned()
            }
        })
        .collect();
    let mut rebuilt = std::process::Command::new(command.get_program());
    rebuilt.args(args);
    for (k, v) in command.get_envs() {
        match v {
            Some(v) => rebuilt.env(k, v),
            None => rebuilt.env_remove(k),
        };
    }
    rebuilt.arg("-i");
    drop(command.get_args());
    rebuilt
}

#[test]
fn two_processes_adding_origins_to_one_layer_at_once_lose_no_entry() {
    let registry = Registry::anonymous();
    let client = images::client_for(registry.host(), None);
    let name = unique_repo("cvmfs-origin-race");
    let repo = images::repository(registry.host(), &name);
    let base = Layer::files(&[("etc/os-release", b"ID=race\n")]);
    let mut images_pushed = Vec::new();
    for i in 0..5 {
        let label = format!("img{i}");
        let image = Image::new(
            vec![
                base.clone(),
                Layer::files(&[(&format!("opt/{label}"), label.as_bytes())]),
            ],
            &label,
        );
        image.push(&client, &repo, &label);
        images_pushed.push(image);
    }
    for backend in [Backend::Local, Backend::Cvmfs] {
        let work = Work::new(backend);
        // The shared layer exists first, so the racing runs only add origins to it.
        work.wishlist(&[format!("http://{}/{name}:img0", registry.host())], "");
        assert!(work.convert(&["-i"]).status.success());
        let mut children = Vec::new();
        for i in 1..5 {
            let list = work.path(&format!("wish{i}.yaml"));
            std::fs::write(
                &list,
                format!(
                    "version: 1\nuser: ''\ncvmfs_repo: {REPO}\ninput:\n  - 'http://{}/{name}:img{i}'\n",
                    registry.host()
                ),
            )
            .unwrap();
            children.push(convert_command(&work, &list).spawn().unwrap());
        }
        for mut child in children {
            assert!(child.wait().unwrap().success());
        }
        let mut listed = convert_support::origin(&work.repo(), &base);
        listed.sort();
        let mut want: Vec<String> = images_pushed
            .iter()
            .map(|i| format!("sha256:{}", i.config_hex()))
            .collect();
        want.sort();
        assert_eq!(listed, want, "{backend:?}");
    }
}

#[test]
fn a_corrupt_origin_json_fails_the_image_and_is_left_as_it_is() {
    let registry = Registry::anonymous();
    let name = unique_repo("cvmfs-origin-corrupt");
    let (one, _) = push_pair(&name);
    let work = Work::new(Backend::Cvmfs);
    work.wishlist(&[format!("http://{}/{name}:one", registry.host())], "");
    assert!(work.convert(&["-i"]).status.success());
    let origin = layer_dir(&work.repo(), &one.layers[0]).join(".metadata/origin.json");
    for dir in [work.repo(), work.path("standin/mnt").join(REPO)] {
        let file = dir.join(origin.strip_prefix(work.repo()).unwrap());
        std::fs::write(&file, b"{\"origin\": [tru").unwrap();
    }
    work.wishlist(&[format!("http://{}/{name}:two", registry.host())], "");
    let out = work.convert(&["-i"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("origin.json"), "{stderr}");
    assert_eq!(std::fs::read(&origin).unwrap(), b"{\"origin\": [tru");
}

/// The convert scenarios through both publishers, compared (less what ingest cannot keep): zstd
/// and uncompressed layers, images sharing layers, a tag glob, and a tag moved to a new image.
#[test]
fn zstd_plain_shared_glob_and_moved_tag_give_the_same_repository_with_either_publisher() {
    use convert_support::Compression;
    let registry = Registry::anonymous();
    let client = images::client_for(registry.host(), None);
    let name = unique_repo("cvmfs-set");
    let repo = images::repository(registry.host(), &name);
    let shared = Layer::new(
        &convert_support::tar_of(&[("etc/os-release", b"ID=set\n")]),
        Compression::Zstd,
    );
    let plain = Layer::new(
        &convert_support::tar_of(&[("opt/plain", b"plain")]),
        Compression::None,
    );
    for tag in ["1.0", "1.1", "2.0"] {
        let own = Layer::files(&[(&format!("opt/{tag}"), tag.as_bytes())]);
        Image::new(vec![shared.clone(), plain.clone(), own], tag).push(&client, &repo, tag);
    }
    let inputs = [format!("http://{}/{name}:1.*", registry.host())];
    let (local, cvmfs) = convert_with_both(&inputs);
    assert_same_repository(&local, &cvmfs, "cvmfs publisher");
    // Move tag 1.0 to another image; both publishers convert it again and repoint the link.
    let moved = Image::new(
        vec![shared.clone(), Layer::files(&[("opt/moved", b"moved")])],
        "moved",
    );
    moved.push(&client, &repo, "1.0");
    convert_raw(&local, &[]);
    convert_raw(&cvmfs, &[]);
    scan(&local.repo()).assert_same_as(
        &scan(&cvmfs.repo()),
        &run_options(),
        "local publisher after the move",
        "cvmfs publisher after the move",
    );
    assert_eq!(
        marker_config(&cvmfs.repo(), registry.host(), &format!("{name}:1.0")).as_deref(),
        Some(format!("sha256:{}", moved.config_hex()).as_str())
    );
    assert_eq!(nobody_owned(&cvmfs.repo()), Vec::<String>::new());
}

/// An image of `layers` in `format` for linux/`arch`, with a `created` time (so layers.json is
/// the same bytes in both runs) and `label` making its config unique.
fn image_in(
    format: ducc_tests::images::Format,
    layers: Vec<Layer>,
    arch: &str,
    variant: Option<&str>,
    label: &str,
) -> Image {
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    let mut config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "created": "2024-05-06T07:08:09Z",
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"], "Labels": {"test": label}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    if let Some(variant) = variant {
        config["variant"] = serde_json::json!(variant);
    }
    Image::with_config_as(format, layers, &config)
}

/// Pushes the blobs of `image` and its manifest under `reference` (a tag or its digest).
fn push_in(
    format: ducc_tests::images::Format,
    client: &ducc_registry::Client,
    repo: &ducc_registry::Repository,
    reference: &str,
    image: &Image,
) {
    for layer in &image.layers {
        images::push_blob(client, repo, &layer.blob);
    }
    images::push_blob(client, repo, &image.config);
    images::push_manifest(
        client,
        repo,
        reference,
        format.manifest_type(),
        &image.manifest.bytes,
    );
}

/// The manifest kinds through both publishers, compared: an OCI image, a Docker v2s2 image, an
/// OCI index and a Docker manifest list (`--multi-arch`: per-platform trees under `.multiarch/`,
/// the public name a CernVM-FS variant symlink, the `uname -m` aliases), all written by ingest.
#[test]
fn oci_docker_and_multi_arch_manifests_give_the_same_repository_with_either_publisher() {
    use ducc_tests::images::Format;
    let registry = Registry::anonymous();
    let client = images::client_for(registry.host(), None);
    let name = unique_repo("cvmfs-kinds");
    let repo = images::repository(registry.host(), &name);
    let base = Layer::files(&[("etc/os-release", b"ID=kinds\n"), ("usr/lib/x", b"x")]);
    for format in [Format::Oci, Format::Docker] {
        let single = image_in(
            format,
            vec![base.clone(), Layer::files(&[("opt/single", b"single")])],
            "amd64",
            None,
            &format!("{format:?}"),
        );
        push_in(
            format,
            &client,
            &repo,
            &format!("{format:?}-single"),
            &single,
        );
        let mut manifests = Vec::new();
        for (arch, variant) in [("amd64", None), ("arm64", Some("v8"))] {
            let label = format!("{format:?}-{arch}");
            let child = image_in(
                format,
                vec![
                    base.clone(),
                    Layer::files(&[("etc/arch", label.as_bytes())]),
                ],
                arch,
                variant,
                &label,
            );
            push_in(format, &client, &repo, &child.manifest.digest, &child);
            let mut entry = child.manifest.descriptor(format.manifest_type());
            entry["platform"] = serde_json::json!({"architecture": arch, "os": "linux"});
            if let Some(variant) = variant {
                entry["platform"]["variant"] = serde_json::json!(variant);
            }
            manifests.push(entry);
        }
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": format.index_type(),
            "manifests": manifests,
        });
        images::push_manifest(
            &client,
            &repo,
            &format!("{format:?}-index"),
            format.index_type(),
            &serde_json::to_vec(&index).unwrap(),
        );
    }
    let inputs: Vec<String> = ["Oci-single", "Docker-single", "Oci-index", "Docker-index"]
        .iter()
        .map(|tag| format!("http://{}/{name}:{tag}", registry.host()))
        .collect();

    let [local, cvmfs] = [Backend::Local, Backend::Cvmfs].map(|backend| {
        let work = Work::new(backend);
        work.wishlist(&inputs, "");
        convert_raw(&work, &["--multi-arch"]);
        work
    });

    let expected = scan(&local.repo());
    expected.assert_same_as(
        &scan(&cvmfs.repo()),
        &run_options(),
        "local publisher",
        "cvmfs publisher",
    );
    let published = cvmfs.repo();
    for tag in ["Oci-index", "Docker-index"] {
        let public = published
            .join(registry.host())
            .join(format!("{name}:{tag}"));
        let text = std::fs::read_link(&public).unwrap();
        assert!(
            text.to_string_lossy()
                .contains(".multiarch/$(CVMFS_ARCH:-amd64)/"),
            "{}",
            text.display()
        );
        for arch in ["amd64", "arm64:v8"] {
            let link = published
                .join(".multiarch")
                .join(arch)
                .join(registry.host())
                .join(format!("{name}:{tag}"));
            assert!(link.join(".singularity.d").is_dir(), "{}", link.display());
        }
    }
    for (alias, target) in [("x86_64", "amd64"), ("aarch64", "arm64:v8")] {
        let link = std::fs::read_link(published.join(".multiarch").join(alias)).unwrap();
        assert_eq!(link, std::path::Path::new(target), "{alias}");
    }
    let log = cvmfs.standin_log();
    assert_only_ingests_and_mounted_transactions(&log);
    assert!(
        log.iter().any(|l| l.starts_with("publish ")),
        "the platforms' flat trees went in through the mount: {log:#?}"
    );
    assert_eq!(nobody_owned(&published), Vec::<String>::new());

    // A rerun publishes nothing.
    assert_rerun_calls_only_list(&cvmfs, &["--multi-arch"]);
    expected.assert_same_as(
        &scan(&cvmfs.repo()),
        &run_options(),
        "local publisher",
        "cvmfs rerun",
    );
}

/// Kills ducc alone with SIGKILL while the stand-in's first layer ingest is paused (lease taken,
/// tar unread), so that `cvmfs_server` process outlives it, then starts the rerun: it must wait
/// for that process before any call of its own. With `kill_orphan`, the orphan is killed while
/// the rerun waits (leaving the repository in a transaction, which the rerun aborts); otherwise
/// it is let go on and ends by itself before the rerun calls anything but `list`.
fn rerun_waits_for_the_orphaned_ingest(kill_orphan: bool, label: &str) {
    let (local, cvmfs, mut first, orphan) = paused_cvmfs_run(label, "ingest", "-b .layers");
    let pause = cvmfs.path("standin/pause");
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(!wait::process_ended(orphan), "the ingest died with ducc");
    let record = cvmfs.path("tmp/ducc-cvmfs").join(REPO).join("in-flight");
    assert!(
        std::fs::read_to_string(&record)
            .unwrap()
            .starts_with(&format!("{orphan} ")),
        "the in-flight record names the orphan"
    );

    let before = cvmfs.standin_log().len();
    let events = cvmfs.path("events.jsonl");
    let mut rerun = cvmfs
        .command(&[
            "-i",
            "--layer-whiteouts",
            "oci",
            "-n",
            events.to_str().unwrap(),
        ])
        .spawn()
        .unwrap();
    // The rerun waits: its first `cvmfs_server` call waits for the lock the paused orphan holds
    // (one call at a time, as the spool lock serialises a real node); it stays running and has
    // called nothing but `list`.
    wait::until(
        "the rerun's first call to wait for the orphan",
        wait::DEADLINE,
        || {
            wait::children_of(rerun.id())
                .into_iter()
                .any(wait::blocked_on_lock)
        },
    );
    assert!(
        rerun.try_wait().unwrap().is_none(),
        "the rerun did not wait"
    );
    let meanwhile = cvmfs.standin_log()[before..].to_vec();
    assert!(meanwhile.iter().all(|l| l == "list"), "{meanwhile:#?}");
    if kill_orphan {
        let pid = rustix::process::Pid::from_raw(orphan).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    }
    std::fs::remove_file(pause.join("ingest")).unwrap();
    let status = rerun.wait().unwrap();
    assert!(status.success());
    assert!(wait::process_ended(orphan));
    assert!(!record.exists(), "the in-flight record was cleared");

    let log = cvmfs.standin_log()[before..].to_vec();
    let aborts = log
        .iter()
        .filter(|l| *l == &format!("abort -f {REPO}"))
        .count();
    let unpacked = cvmfs
        .events("events.jsonl")
        .iter()
        .filter(|e| e["action"] == "layer_unpack")
        .count();
    if kill_orphan {
        // Killed with its transaction open: aborted once, before anything else was ingested.
        assert_eq!(aborts, 1, "{log:#?}");
        let abort = log.iter().position(|l| l.starts_with("abort ")).unwrap();
        assert!(
            log[..abort].iter().all(|l| l == "list"),
            "the abort came first: {log:#?}"
        );
        assert_eq!(unpacked, 3, "every layer unpacked again");
    } else {
        // The orphan ended on its own; whatever it left, the rerun redoes at most every layer.
        assert!(aborts <= 1, "{log:#?}");
        assert!(unpacked <= 3, "{unpacked} layers unpacked");
    }
    assert_same_repository(&local, &cvmfs, "cvmfs after waiting for the orphan");
    assert_rerun_calls_only_list(&cvmfs, &[]);
}

#[test]
fn a_rerun_waits_for_the_ingest_a_killed_run_left_running_before_calling_the_server() {
    rerun_waits_for_the_orphaned_ingest(false, "cvmfs-orphan-done");
}

#[test]
fn a_rerun_waits_for_the_ingest_a_killed_run_left_running_and_aborts_what_it_left_open() {
    rerun_waits_for_the_orphaned_ingest(true, "cvmfs-orphan-killed");
}

/// Issue 29: the `cvmfs_server` calls of each image on a stratum 0, one run per image: the
/// first image is one ingest (its layers, their metadata and the new shard catalogs) and one
/// mounted transaction (flat tree by grafts, link, podman store, marker); a second image sharing
/// a layer is the same (the shared layer's `origin.json` goes into its mounted transaction); an
/// image that only adds a tag to an existing flat tree is one mounted transaction. Each ends as
/// the local publisher's repository does.
#[test]
fn each_image_is_one_ingest_and_one_mounted_transaction_and_a_new_tag_one_transaction() {
    let registry = Registry::anonymous();
    let name = unique_repo("cvmfs-calls");
    let (one, _two) = push_pair(&name);
    let client = images::client_for(registry.host(), None);
    one.push(
        &client,
        &images::repository(registry.host(), &name),
        "again",
    );
    let input = |tag: &str| format!("http://{}/{name}:{tag}", registry.host());
    let local = Work::new(Backend::Local);
    let cvmfs = Work::new(Backend::Cvmfs);
    let mut inputs = Vec::new();
    for (tag, expected) in [
        ("one", vec!["ingest -k -t", "transaction ", "publish "]),
        ("two", vec!["ingest -k -t", "transaction ", "publish "]),
        ("again", vec!["transaction ", "publish "]),
    ] {
        inputs.push(input(tag));
        for work in [&local, &cvmfs] {
            work.wishlist(&inputs, "");
        }
        convert_raw(&local, &[]);
        let before = cvmfs.standin_log().len();
        let events_file = cvmfs.path("events.jsonl");
        convert_raw(&cvmfs, &["-n", events_file.to_str().unwrap()]);
        let calls: Vec<String> = cvmfs.standin_log()[before..]
            .iter()
            .filter(|l| *l != "list")
            .cloned()
            .collect();
        assert_eq!(calls.len(), expected.len(), "{tag}: {calls:#?}");
        for (call, prefix) in calls.iter().zip(&expected) {
            assert!(call.starts_with(prefix), "{tag}: {calls:#?}");
        }
        let events = cvmfs.events("events.jsonl");
        let last = events
            .iter()
            .rfind(|e| e["action"] == "published")
            .unwrap_or_else(|| panic!("{tag}: no published event in {events:#?}"));
        assert_eq!(
            last["revisions"],
            expected.len() as u64 - 1,
            "{tag}: {last}"
        );
        assert_same_repository(&local, &cvmfs, &format!("cvmfs publisher after {tag}"));
    }
}
