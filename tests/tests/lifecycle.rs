//! `ducc delete-image`, `ducc prune` and `ducc garbage-collection` on repositories converted from
//! the real registry, with the local publisher and the `cvmfs_server` stand-in (issue 15).
#![allow(clippy::unwrap_used)]

mod convert_support;

use std::path::Path;
use std::time::{Duration, Instant};

use convert_support::{
    Backend, Image, Layer, REPO, Work, flat_dir, layer_dir, marker_config, origin, scan,
};
use ducc_tests::fault_proxy::{Action, FaultProxy, Rule};
use ducc_tests::registry::Flavour;
use ducc_tests::tree::Options;
use ducc_tests::{Registry, images, unique_repo, wait};

/// Three images on one registry repository: `one` and `two` share a base layer, `three` has a
/// layer of its own only.
struct Trio {
    base: Layer,
    one: Image,
    two: Image,
    three: Image,
}

fn push_trio(registry: &Registry, name: &str) -> Trio {
    let client = images::client_for(registry.host(), None);
    let repo = images::repository(registry.host(), name);
    let base = Layer::files(&[("etc/os-release", b"ID=test\n"), ("usr/bin/tool", b"base")]);
    let one = Image::new(
        vec![base.clone(), Layer::files(&[("opt/one", b"1")])],
        "one",
    );
    let two = Image::new(vec![base.clone(), Layer::random("opt/two", 4096)], "two");
    let three = Image::new(vec![Layer::random("opt/three", 2048)], "three");
    one.push(&client, &repo, "one");
    two.push(&client, &repo, "two");
    three.push(&client, &repo, "three");
    Trio {
        base,
        one,
        two,
        three,
    }
}

fn inputs(host: &str, name: &str, tags: &[&str]) -> Vec<String> {
    tags.iter()
        .map(|t| format!("http://{host}/{name}:{t}"))
        .collect()
}

fn converted(backend: Backend, host: &str, name: &str, tags: &[&str]) -> Work {
    let work = Work::new(backend);
    work.wishlist(&inputs(host, name, tags), "");
    assert!(work.convert(&["-i"]).status.success());
    work
}

fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

fn podman_names(repo: &Path) -> Vec<String> {
    let path = repo.join("podmanStore/overlay-images/images.json");
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let images: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let mut names: Vec<String> = images
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["names"].as_array().cloned().unwrap_or_default())
        .map(|n| n.as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

fn podman_ids(repo: &Path) -> Vec<String> {
    let path = repo.join("podmanStore/overlay-images/images.json");
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let images: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    images
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Delete one of two images sharing a layer, then gc: the shared layer and everything of the
/// other image stay, what only the deleted one used goes; every removal is a `--delete` of the
/// stand-in, many paths per call.
fn delete_then_gc(backend: Backend) {
    let registry = Registry::anonymous();
    let name = unique_repo("lifecycle-gc");
    let trio = push_trio(registry, &name);
    let host = registry.host();
    let work = converted(backend, host, &name, &["one", "two"]);
    let repo = work.repo();
    assert_eq!(podman_ids(&repo).len(), 2);

    let image = format!("http://{host}/{name}:one");
    let (code, out) = work.lifecycle("delete-image", &[REPO, &image]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("deleted {host}/{name}:one")), "{out}");
    assert!(!exists(&repo.join(host).join(format!("{name}:one"))));
    assert!(marker_config(&repo, host, &format!("{name}:one")).is_none());
    assert!(marker_config(&repo, host, &format!("{name}:two")).is_some());
    // Content stays until gc; the podman name goes with the image.
    assert!(flat_dir(&repo, &trio.one).is_dir());
    assert_eq!(podman_names(&repo), [format!("{host}/{name}:two")]);

    // What a killed process left in the publisher's state: a lease file nobody holds.
    let state = match backend {
        Backend::Local => work.path("cvmfs/.ducc").join(REPO),
        Backend::Cvmfs => work.path("tmp/ducc-cvmfs").join(REPO),
    };
    let dead_lease = state.join("locks/lease-4194304-0-0.lock");
    // (on a path no gc lease overlaps: an overlapping lease would clean it up by itself)
    std::fs::write(&dead_lease, "unrelated/place").unwrap();

    let log_before = work.standin_log().len();
    let (code, out) = work.lifecycle("gc", &[REPO, "--grace-period", "0"]);
    assert_eq!(code, 0, "{out}");
    assert!(!dead_lease.exists(), "{out}");
    assert!(
        out.contains(&format!("removed leftover {}", dead_lease.display())),
        "{out}"
    );
    assert!(!layer_dir(&repo, &trio.one.layers[1]).exists(), "{out}");
    assert!(!flat_dir(&repo, &trio.one).exists(), "{out}");
    assert!(
        layer_dir(&repo, &trio.base)
            .join("layerfs/usr/bin/tool")
            .is_file()
    );
    assert!(
        layer_dir(&repo, &trio.two.layers[1])
            .join("layerfs")
            .is_dir()
    );
    assert!(flat_dir(&repo, &trio.two).join("opt/two").is_file());
    assert!(exists(&repo.join(host).join(format!("{name}:two"))));
    assert_eq!(
        origin(&repo, &trio.base),
        [format!("sha256:{}", trio.two.config_hex())]
    );
    assert_eq!(podman_ids(&repo), [trio.two.config_hex().to_owned()]);
    assert!(out.contains("removed 3 piece(s)"), "{out}");
    let _ = &trio.three;

    let events = work.events("events.jsonl");
    let removed: Vec<&str> = events
        .iter()
        .filter(|e| e["action"] == "gc_remove")
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(removed.len(), 3, "{events:?}");
    let end = events.iter().find(|e| e["action"] == "gc_end").unwrap();
    assert_eq!(end["removed"], 3);
    assert!(end["removed_bytes"].as_u64().unwrap() > 0);

    if backend == Backend::Cvmfs {
        let log = work.standin_log()[log_before..].to_vec();
        let deletes: Vec<&String> = log.iter().filter(|l| l.contains("--delete")).collect();
        let deleted: Vec<&str> = deletes
            .iter()
            .flat_map(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                let paths: Vec<&str> = words
                    .windows(2)
                    .filter(|w| w[0] == "--delete")
                    .map(|w| w[1])
                    .collect();
                paths
            })
            .collect();
        let one_layer = trio.one.layers[1].hex();
        let flat = format!(
            ".flat/{}/{}",
            &trio.one.config_hex()[..2],
            trio.one.config_hex()
        );
        let layer = format!(".layers/{}/{one_layer}", &one_layer[..2]);
        for piece in [flat, layer] {
            assert!(
                deleted.iter().any(|d| piece.starts_with(d)),
                "no delete covers {piece} in {log:#?}"
            );
        }
        // podman (its three paths in one call), the flat tree, the layer: three delete calls,
        // each a revision; the shared layer's origin.json is rewritten in one more ingest.
        assert_eq!(deletes.len(), 3, "{log:#?}");
        assert!(deletes[0].matches("--delete").count() >= 2, "{log:#?}");
    }
    // A second gc finds nothing and publishes nothing.
    let log_before = work.standin_log().len();
    let (code, out) = work.lifecycle("gc", &[REPO, "--grace-period", "0"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("removed 0 piece(s)"), "{out}");
    let publishing: Vec<String> = work.standin_log()[log_before..]
        .iter()
        .filter(|l| l.starts_with("ingest") || l.starts_with("publish"))
        .cloned()
        .collect();
    assert!(publishing.is_empty(), "{publishing:#?}");
}

#[test]
fn delete_then_gc_keeps_shared_layers_local() {
    delete_then_gc(Backend::Local);
}

#[test]
fn delete_then_gc_keeps_shared_layers_cvmfs() {
    delete_then_gc(Backend::Cvmfs);
}

#[test]
fn dry_runs_change_nothing_and_the_grace_period_holds_pieces_back_local() {
    dry_runs_and_grace(Backend::Local);
}

#[test]
fn dry_runs_change_nothing_and_the_grace_period_holds_pieces_back_cvmfs() {
    dry_runs_and_grace(Backend::Cvmfs);
}

fn dry_runs_and_grace(backend: Backend) {
    let registry = Registry::anonymous();
    let name = unique_repo("lifecycle-dry");
    let trio = push_trio(registry, &name);
    let host = registry.host();
    let work = converted(backend, host, &name, &["one", "two"]);
    let repo = work.repo();
    let image = format!("http://{host}/{name}:one");

    let before = scan(&repo);
    let (code, out) = work.lifecycle("delete-image", &[REPO, &image, "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("would delete {host}/{name}:one")),
        "{out}"
    );
    before.assert_same_as(&scan(&repo), &Options::default(), "before", "after");
    assert!(marker_config(&repo, host, &format!("{name}:one")).is_some());

    assert_eq!(work.lifecycle("delete-image", &[REPO, &image]).0, 0);
    let before = scan(&repo);
    let (code, out) = work.lifecycle("gc", &[REPO, "--dry-run", "--grace-period", "0"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("would remove 3 piece(s)"), "{out}");
    assert!(out.contains(trio.one.config_hex()), "{out}");
    before.assert_same_as(&scan(&repo), &Options::default(), "before", "after");
    let events = work.events("events.jsonl");
    assert!(
        events
            .iter()
            .filter(|e| e["action"] == "gc_remove")
            .all(|e| e["dry_run"] == true),
        "{events:?}"
    );

    // The default grace period: the first gc records the pieces and says how to go on.
    let (code, out) = work.lifecycle("gc", &[REPO]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("removed 0 piece(s)"), "{out}");
    assert!(out.contains("3 piece(s)"), "{out}");
    assert!(out.contains("--grace-period 0"), "{out}");
    assert!(flat_dir(&repo, &trio.one).is_dir());
    assert!(repo.join(".metadata/.gc/pending.json").is_file());
    // A second run within the day still waits; `--grace-period 0` removes them.
    assert!(
        work.lifecycle("gc", &[REPO])
            .1
            .contains("removed 0 piece(s)")
    );
    let (code, out) = work.lifecycle("gc", &[REPO, "--grace-period", "0"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("removed 3 piece(s)"), "{out}");
    assert!(!flat_dir(&repo, &trio.one).exists());
    assert!(!repo.join(".metadata/.gc/pending.json").exists());
}

#[test]
fn deleting_a_name_the_repository_does_not_record_fails_after_deleting_the_others() {
    let registry = Registry::anonymous();
    let name = unique_repo("lifecycle-missing");
    let _trio = push_trio(registry, &name);
    let host = registry.host();
    let work = converted(Backend::Local, host, &name, &["one"]);
    let missing = format!("http://{host}/{name}:nope");
    let one = format!("http://{host}/{name}:one");
    let (code, out) = work.lifecycle("delete-image", &[REPO, &missing, &one]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("not in the repository: {host}/{name}:nope")),
        "{out}"
    );
    assert!(marker_config(&work.repo(), host, &format!("{name}:one")).is_none());
    // A bad name is a usage error naming it.
    let (code, _) = work.lifecycle("delete-image", &[REPO, "ubuntu:22.04"]);
    assert_eq!(code, 2);
}

#[test]
fn prune_deletes_what_the_wish_lists_dropped_within_the_limit_local() {
    prune_within_the_limit(Backend::Local);
}

#[test]
fn prune_deletes_what_the_wish_lists_dropped_within_the_limit_cvmfs() {
    prune_within_the_limit(Backend::Cvmfs);
}

fn prune_within_the_limit(backend: Backend) {
    let registry = Registry::anonymous();
    let name = unique_repo("lifecycle-prune");
    let trio = push_trio(registry, &name);
    let host = registry.host();
    let work = converted(backend, host, &name, &["one", "two", "three"]);
    let repo = work.repo();
    // The wish list now keeps `one` only.
    let list = work.wishlist(&inputs(host, &name, &["one"]), "");
    let list = list.to_str().unwrap();
    let (code, out) = work.lifecycle("prune", &[list, "--max-deletions", "1"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("more than --max-deletions 1: nothing was deleted"),
        "{out}"
    );
    assert!(out.contains(&format!("{host}/{name}:two")), "{out}");
    assert!(marker_config(&repo, host, &format!("{name}:two")).is_some());

    let before = scan(&repo);
    let (code, out) = work.lifecycle("prune", &[list, "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    before.assert_same_as(&scan(&repo), &Options::default(), "before", "after");

    let (code, out) = work.lifecycle("prune", &[list]);
    assert_eq!(code, 0, "{out}");
    assert!(marker_config(&repo, host, &format!("{name}:one")).is_some());
    for gone in ["two", "three"] {
        assert!(
            marker_config(&repo, host, &format!("{name}:{gone}")).is_none(),
            "{out}"
        );
        assert!(!exists(&repo.join(host).join(format!("{name}:{gone}"))));
    }
    let events = work.events("events.jsonl");
    assert_eq!(
        events
            .iter()
            .filter(|e| e["action"] == "delete_image" && e["dry_run"] == false)
            .count(),
        2,
        "{events:?}"
    );
    assert_eq!(work.lifecycle("gc", &[REPO, "--grace-period", "0"]).0, 0);
    assert!(!flat_dir(&repo, &trio.three).exists());
    assert!(layer_dir(&repo, &trio.base).is_dir());
    assert!(flat_dir(&repo, &trio.one).is_dir());
}

#[test]
fn a_wish_whose_registry_is_down_protects_its_images() {
    // A registry of its own, stopped after the conversion.
    let registry = Registry::start(Flavour::Anonymous);
    let name = unique_repo("lifecycle-down");
    let _trio = push_trio(&registry, &name);
    let host = registry.host().to_owned();
    let work = Work::new(Backend::Local);
    let other = Registry::anonymous();
    let other_name = unique_repo("lifecycle-up");
    let _other = push_trio(other, &other_name);
    let mut all = vec![format!("http://{host}/{name}:*")];
    all.extend(inputs(other.host(), &other_name, &["one", "two"]));
    work.wishlist(&all, "");
    assert!(work.convert(&["-i"]).status.success());
    drop(registry);

    // The glob wish cannot be expanded: its three images stay; `two` of the other registry,
    // dropped from the list, goes.
    let mut kept = vec![format!("http://{host}/{name}:*")];
    kept.extend(inputs(other.host(), &other_name, &["one"]));
    let list = work.wishlist(&kept, "");
    let (code, out) = work.lifecycle("prune", &[list.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("wish http://{host}/{name}:*")),
        "{out}"
    );
    assert!(out.contains("kept 3 recorded image(s)"), "{out}");
    let repo = work.repo();
    for tag in ["one", "two", "three"] {
        assert!(
            marker_config(&repo, &host, &format!("{name}:{tag}")).is_some(),
            "{tag}"
        );
    }
    assert!(marker_config(&repo, other.host(), &format!("{other_name}:one")).is_some());
    assert!(marker_config(&repo, other.host(), &format!("{other_name}:two")).is_none());
    let events = work.events("events.jsonl");
    let protected = events
        .iter()
        .find(|e| e["action"] == "prune_protected")
        .unwrap();
    assert_eq!(protected["images"].as_array().unwrap().len(), 3);
}

#[test]
fn prune_refuses_wish_lists_of_different_repositories() {
    let work = Work::new(Backend::Local);
    let a = work.path("a.yaml");
    let b = work.path("b.yaml");
    let input = "input:\n  - 'http://127.0.0.1:1/a/b:1'\n";
    std::fs::write(
        &a,
        format!("version: 1\nuser: ''\ncvmfs_repo: {REPO}\n{input}"),
    )
    .unwrap();
    std::fs::write(
        &b,
        format!("version: 1\nuser: ''\ncvmfs_repo: other.test\n{input}"),
    )
    .unwrap();
    std::fs::create_dir_all(work.repo()).unwrap();
    let before = scan(&work.repo());
    let cmd = work.lifecycle_command("prune", &[a.to_str().unwrap(), b.to_str().unwrap()]);
    let out = {
        let mut cmd = cmd;
        cmd.output().unwrap()
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cvmfs_repo other.test is not unpacked.test"),
        "{stderr}"
    );
    before.assert_same_as(&scan(&work.repo()), &Options::default(), "before", "after");
}

/// Converts `one` and `two` of `name` through the stand-in and deletes `one`.
fn gc_of_a_deleted_image(registry: &Registry, name: &str) -> Work {
    let work = converted(Backend::Cvmfs, registry.host(), name, &["one", "two"]);
    let image = format!("http://{}/{name}:one", registry.host());
    assert_eq!(work.lifecycle("delete-image", &[REPO, &image]).0, 0);
    work
}

#[test]
fn a_gc_killed_during_a_delete_then_rerun_ends_as_an_uninterrupted_one() {
    let registry = Registry::anonymous();
    let name = unique_repo("lifecycle-kill");
    let trio = push_trio(registry, &name);
    let clean = gc_of_a_deleted_image(registry, &name);
    assert_eq!(clean.lifecycle("gc", &[REPO, "--grace-period", "0"]).0, 0);

    let killed = gc_of_a_deleted_image(registry, &name);
    let pause = killed.path("standin/pause");
    std::fs::create_dir_all(&pause).unwrap();
    // At the flat tree's delete: the podman store's went through, the flat tree's is cut.
    std::fs::write(pause.join("ingest"), ".flat/").unwrap();
    let mut child = killed
        .lifecycle_command("gc", &[REPO, "--grace-period", "0"])
        .spawn()
        .unwrap();
    let paused = killed.path("standin/paused");
    let started = Instant::now();
    while !paused.exists() {
        assert!(started.elapsed() < Duration::from_secs(120), "never paused");
        assert!(
            child.try_wait().unwrap().is_none(),
            "gc ended before the pause"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&paused).unwrap();
    let standin: i32 = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let pid = rustix::process::Pid::from_raw(standin).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    wait::until("the killed stand-in to end", wait::DEADLINE, || {
        wait::process_ended(standin)
    });
    std::fs::remove_file(pause.join("ingest")).unwrap();
    assert!(
        flat_dir(&killed.repo(), &trio.one).is_dir(),
        "the kill came too late"
    );

    let (code, out) = killed.lifecycle("gc", &[REPO, "--grace-period", "0"]);
    assert_eq!(code, 0, "{out}");
    scan(&clean.repo()).assert_same_as(
        &scan(&killed.repo()),
        &convert_support::run_options(),
        "uninterrupted gc",
        "killed gc, then rerun",
    );
    for work in [&clean, &killed] {
        assert!(!work.repo().join(".metadata/.gc/pending.json").exists());
        assert!(!flat_dir(&work.repo(), &trio.one).exists());
    }
}

#[test]
fn a_gc_waits_for_a_convert_that_reuses_a_layer_waiting_for_deletion() {
    let registry = Registry::anonymous();
    // Blobs of the new image's own layer stall until the rules change.
    let proxy = FaultProxy::start(registry.host(), vec![]);
    let name = unique_repo("lifecycle-reuse");
    let trio = push_trio(registry, &name);
    let host = proxy.host().to_owned();
    let work = converted(Backend::Local, &host, &name, &["one"]);
    let repo = work.repo();
    let one = format!("http://{host}/{name}:one");
    assert_eq!(work.lifecycle("delete-image", &[REPO, &one]).0, 0);
    let (code, out) = work.lifecycle("gc", &[REPO]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("wait for the grace period"), "{out}");

    // `two` reuses the waiting base layer; its own layer's download stalls.
    proxy.set_rules(vec![
        Rule::new(Action::Stall(Duration::from_secs(4)))
            .method("GET")
            .path_contains(trio.two.layers[1].hex())
            .times(1),
    ]);
    work.wishlist(&inputs(&host, &name, &["two"]), "");
    let mut convert = work.command(&["-i"]).spawn().unwrap();
    let started = Instant::now();
    while proxy.count("GET", trio.two.layers[1].hex()) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "convert never reached the blob"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut gc = work
        .lifecycle_command("gc", &[REPO, "--grace-period", "0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // gc blocks on the lock the running convert holds: the kernel lists it as a waiter.
    wait::until("gc to wait for the convert's lock", wait::DEADLINE, || {
        assert!(
            gc.try_wait().unwrap().is_none(),
            "gc ran while a convert was running"
        );
        wait::blocked_on_lock(gc.id())
    });
    assert!(
        gc.try_wait().unwrap().is_none(),
        "gc ran while a convert was running"
    );
    assert!(convert.wait().unwrap().success());
    let out = gc.wait_with_output().unwrap();
    assert!(out.status.success());
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(
        layer_dir(&repo, &trio.base)
            .join("layerfs/usr/bin/tool")
            .is_file(),
        "{out}"
    );
    assert!(marker_config(&repo, &host, &format!("{name}:two")).is_some());
    assert!(!flat_dir(&repo, &trio.one).exists(), "{out}");
    assert!(!layer_dir(&repo, &trio.one.layers[1]).exists(), "{out}");
}

#[test]
fn a_corrupt_marker_stops_gc_with_an_error_naming_it() {
    let registry = Registry::anonymous();
    let name = unique_repo("lifecycle-corrupt");
    let _trio = push_trio(registry, &name);
    let host = registry.host();
    let work = converted(Backend::Local, host, &name, &["one", "two"]);
    let one = format!("http://{host}/{name}:one");
    assert_eq!(work.lifecycle("delete-image", &[REPO, &one]).0, 0);
    let marker = work
        .repo()
        .join(".metadata")
        .join(host)
        .join(format!("{name}:two"))
        .join("manifest.json");
    std::fs::write(&marker, b"{\"Config\": [").unwrap();
    let before = scan(&work.repo());
    let out = work
        .lifecycle_command("gc", &[REPO, "--grace-period", "0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&marker.display().to_string()), "{stderr}");
    assert!(stderr.contains("nothing was removed"), "{stderr}");
    before.assert_same_as(&scan(&work.repo()), &Options::default(), "before", "after");
}
