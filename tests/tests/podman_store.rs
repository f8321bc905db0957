//! The podman additional image store (issue 16) against Debian's real podman (4.3): `ducc
//! convert` writes `podmanStore/` at the repository's root, and podman, pointed at it with
//! `--storage-opt additionalimagestore=…` through a read-only bind mount (as `/cvmfs` is), lists
//! each image under its name with the config digest as ID, inspects its config and mounts it as
//! the flat tree. Also: `podman run` from the store, a moved tag, reruns that leave the store's
//! bytes alone, `-p`/`--skip-flat`/`--skip-layers`, two converts at once, `--multi-arch`, a
//! corrupt `images.json`, and the same store through the `cvmfs_server` stand-in.
//!
//! podman 4.3 cannot `podman image mount` any image of an additional store, not even of one it
//! wrote itself ("layer not known": its `MountImage` only looks in the primary layer store), so
//! the mount check goes through a container made from the image (`podman create` + `podman
//! mount`), which is how `podman run` uses it; `image mount` is still tried and its result shown.
//!
//! Needs root (bind mounts, podman's overlay mounts), podman and runc (`cargo xtask deps`).
#![allow(clippy::unwrap_used)]

mod convert_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use convert_support::{Backend, Image, Layer, REPO, Work};
use ducc_tests::images;
use ducc_tests::tree::{Options, Tree};
use ducc_tests::{Registry, fixtures, require_root, require_tool, skip_or_fail, unique_repo};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// podman

/// A private podman (its own root and runroot) whose additional image store is a repository's
/// `podmanStore`, seen through a read-only bind mount of the repository.
struct Podman {
    dir: tempfile::TempDir,
    store: PathBuf,
}

impl Podman {
    /// podman over the store of the repository at `repo`; `None` when this machine cannot.
    fn over(repo: &Path) -> Option<Podman> {
        if !require_root("podman's overlay mounts and the read-only bind mount need root") {
            return None;
        }
        require_tool("podman", "podman");
        let dir = tempfile::tempdir().unwrap();
        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        let podman = Podman {
            store: ro.join("podmanStore"),
            dir,
        };
        run_ok(Command::new("mount").arg("--bind").arg(repo).arg(&ro));
        run_ok(
            Command::new("mount")
                .args(["-o", "remount,bind,ro"])
                .arg(&ro),
        );
        Some(podman)
    }

    fn command(&self) -> Command {
        let mut command = Command::new("podman");
        command
            .arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .args(["--storage-driver", "overlay", "--storage-opt"])
            .arg(format!("additionalimagestore={}", self.store.display()))
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .env("TMPDIR", self.dir.path());
        command
    }

    /// Runs podman with `args`; panics with its stderr when it fails.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    /// `podman images --format json`: (ID, names) of every image.
    fn images(&self) -> Vec<(String, Vec<String>)> {
        let listed = self.json(&["images", "--format", "json"]);
        listed
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let names = i["Names"]
                    .as_array()
                    .map(|n| n.iter().map(|n| n.as_str().unwrap().to_owned()).collect())
                    .unwrap_or_default();
                (i["Id"].as_str().unwrap().to_owned(), names)
            })
            .collect()
    }

    /// The tree podman mounts for a container made from `image` (its rootfs before it runs).
    fn container_tree(&self, image: &str) -> Tree {
        // The command is never run; podman wants one for an image without Cmd.
        let id = self.ok(&["create", "--network", "none", image, "true"]);
        let merged = self.ok(&["mount", id.trim()]);
        let tree = Tree::scan(Path::new(merged.trim())).unwrap();
        self.ok(&["umount", id.trim()]);
        self.ok(&["rm", id.trim()]);
        tree
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.command().args(["rm", "-af"]).output();
        // podman leaves its overlay directory bind-mounted on itself; then our read-only mount.
        for mount in mounts_under(self.dir.path()).into_iter().rev() {
            let status = Command::new("umount").arg(&mount).status();
            if !matches!(status, Ok(s) if s.success()) {
                let _ = Command::new("umount").arg("-l").arg(&mount).status();
            }
        }
    }
}

/// Mount points at or below `dir`, outermost first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    mounts.sort_by_key(|p| p.components().count());
    mounts.dedup();
    mounts
}

fn run_ok(command: &mut Command) -> Output {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

// ---------------------------------------------------------------------------------------------
// Images

/// A small image whose config has Env, Entrypoint and Cmd; `label` makes its config unique.
fn small_image(label: &str) -> Image {
    let layers = vec![
        Layer::files(&[
            ("etc/os-release", format!("ID={label}\n").as_bytes()),
            ("usr/bin/tool", b"#!/bin/sh\necho tool\n"),
        ]),
        Layer::files(&[("etc/motd", b"hello\n"), ("srv/data/a", b"a")]),
    ];
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-05-06T07:08:09Z",
        "config": {
            "Env": ["PATH=/usr/bin:/bin", format!("LABEL={label}")],
            "Entrypoint": ["/usr/bin/tool"],
            "Cmd": ["--help"],
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    Image::with_config(layers, &config)
}

/// Pushes the Debian fixture (a real bookworm rootfs) as `repository:tag`; returns its config
/// digest's hex.
fn push_debian(registry: &Registry, repository: &str, tag: &str) -> String {
    let debian = fixtures::image("debian").expect("the debian fixture (debootstrap)");
    let client = images::client_for(registry.host(), None);
    let repo = images::repository(registry.host(), repository);
    let mut blobs: Vec<&str> = debian.layers.iter().map(|l| l.digest.as_str()).collect();
    blobs.push(&debian.config_digest);
    for digest in blobs {
        let path = debian.blob_path(digest);
        let size = std::fs::metadata(&path).unwrap().len();
        let mut file = std::fs::File::open(&path).unwrap();
        client
            .push_blob(
                &repo,
                &ducc_oci::BlobDigest::parse(digest).unwrap(),
                size,
                &mut file,
            )
            .unwrap();
    }
    let manifest = std::fs::read(debian.blob_path(&debian.manifest_digest)).unwrap();
    images::push_manifest(
        &client,
        &repo,
        tag,
        "application/vnd.oci.image.manifest.v1+json",
        &manifest,
    );
    debian
        .config_digest
        .trim_start_matches("sha256:")
        .to_owned()
}

fn push(registry: &Registry, repository: &str, tag: &str, image: &Image) {
    let client = images::client_for(registry.host(), None);
    image.push(
        &client,
        &images::repository(registry.host(), repository),
        tag,
    );
}

/// `.flat/<hh>/<cfg>` below `layout_root` (the repository, or its subdir).
fn flat(layout_root: &Path, config_hex: &str) -> PathBuf {
    layout_root
        .join(".flat")
        .join(&config_hex[..2])
        .join(config_hex)
}

/// Writes a wish list into `cvmfs_repo` (which may carry a subdir).
fn wishlist(work: &Work, cvmfs_repo: &str, inputs: &[String]) {
    let mut text = format!("version: 1\nuser: ''\ncvmfs_repo: {cvmfs_repo}\ninput:\n");
    for input in inputs {
        text.push_str(&format!("  - '{input}'\n"));
    }
    std::fs::write(work.path("wish.yaml"), text).unwrap();
}

fn assert_converted(out: &Output) {
    assert!(
        out.status.success(),
        "ducc convert failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `podman_store` events of a run.
fn store_events(work: &Work, file: &str) -> Vec<Value> {
    work.events(file)
        .into_iter()
        .filter(|e| e["action"] == "podman_store")
        .collect()
}

/// What podman's container mount and the flat tree are compared on: everything the tree scan
/// sees, mtimes included (the overlay shows the lower tree's).
fn mount_options() -> Options {
    Options::default()
}

// ---------------------------------------------------------------------------------------------
// Tests

/// The headline: both images under their names with their config digests as IDs, their
/// configs, and a rootfs equal to the flat tree; with `cvmfs_repo: REPO/SUBDIR` the store stays
/// at the repository's root and links into the subdir.
#[test]
fn podman_lists_inspects_and_mounts_every_converted_image_from_the_store() {
    let registry = Registry::anonymous();
    let base = unique_repo("podman");
    let debian_hex = push_debian(registry, &format!("{base}/debian"), "bookworm");
    let small = small_image("small");
    push(registry, &format!("{base}/small"), "1.0", &small);
    let work = Work::new(Backend::Local);
    let names = [
        format!("{}/{base}/debian:bookworm", registry.host()),
        format!("{}/{base}/small:1.0", registry.host()),
    ];
    let inputs: Vec<String> = names.iter().map(|n| format!("http://{n}")).collect();
    wishlist(&work, &format!("{REPO}/sub"), &inputs);
    let out = work.convert(&["-i", "-n", &work.path("events").display().to_string()]);
    assert_converted(&out);
    let events = store_events(&work, "events");
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events.iter().all(|e| e["outcome"] == "added"), "{events:?}");

    let repo = work.repo();
    assert!(repo.join("podmanStore/.cvmfscatalog").is_file());
    assert!(!repo.join("sub/podmanStore").exists());
    let Some(podman) = Podman::over(&repo) else {
        return;
    };
    let mut listed = podman.images();
    listed.sort();
    let mut want = vec![
        (debian_hex.clone(), vec![names[0].clone()]),
        (small.config_hex().to_owned(), vec![names[1].clone()]),
    ];
    want.sort();
    assert_eq!(listed, want);

    let inspect = podman.json(&["image", "inspect", &names[1]]);
    let config = &inspect[0]["Config"];
    assert_eq!(inspect[0]["Id"], small.config_hex());
    assert_eq!(config["Env"], json!(["PATH=/usr/bin:/bin", "LABEL=small"]));
    assert_eq!(config["Entrypoint"], json!(["/usr/bin/tool"]));
    assert_eq!(config["Cmd"], json!(["--help"]));
    assert_eq!(inspect[0]["Digest"], small.manifest.digest.as_str());
    let inspect = podman.json(&["image", "inspect", &names[0]]);
    assert_eq!(
        inspect[0]["Config"]["Env"],
        json!(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"])
    );

    for (name, hex) in [
        (&names[0], &debian_hex),
        (&names[1], &small.config_hex().to_owned()),
    ] {
        let expected = Tree::scan(&flat(&repo.join("sub"), hex)).unwrap();
        let mounted = podman.container_tree(name);
        expected.assert_same_as(&mounted, &mount_options(), "flat", "podman container mount");
        // podman 4.3 refuses this for any additional store (see the module documentation);
        // a podman that can must show the same tree.
        let out = podman
            .command()
            .args(["image", "mount", name])
            .output()
            .unwrap();
        if out.status.success() {
            let path = String::from_utf8(out.stdout).unwrap();
            let tree = Tree::scan(Path::new(path.trim())).unwrap();
            expected.assert_same_as(&tree, &mount_options(), "flat", "podman image mount");
            podman.ok(&["image", "unmount", name]);
        } else {
            eprintln!(
                "note: podman image mount {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
}

/// `podman run` from the store, with limits this machine can grant (no CAP_SYS_RESOURCE here:
/// podman's default rlimits cannot be set) and runc, because crun refuses hybrid cgroup
/// hierarchies such as this machine's; the default runtime is tried first.
#[test]
fn podman_runs_a_converted_image_from_the_store() {
    let registry = Registry::anonymous();
    let base = unique_repo("podman-run");
    push_debian(registry, &format!("{base}/debian"), "bookworm");
    let work = Work::new(Backend::Local);
    let name = format!("{}/{base}/debian:bookworm", registry.host());
    wishlist(&work, REPO, &[format!("http://{name}")]);
    assert_converted(&work.convert(&["-i"]));
    let Some(podman) = Podman::over(&work.repo()) else {
        return;
    };
    let expected = std::fs::read_to_string(
        fixtures::image("debian")
            .unwrap()
            .layout
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("rootfs-bookworm-minbase-1/etc/os-release"),
    )
    .ok();
    let run = |runtime: Option<&str>| {
        let mut command = podman.command();
        if let Some(runtime) = runtime {
            command.args(["--runtime", runtime]);
        }
        command
            .args(["run", "--rm", "--network", "none"])
            .args([
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
            ])
            .args([&name, "cat", "/etc/os-release"])
            .output()
            .unwrap()
    };
    let mut out = run(None);
    if !out.status.success() {
        eprintln!(
            "note: podman run with the default runtime failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        out = run(Some("runc"));
    }
    if !out.status.success() {
        skip_or_fail(&format!(
            "podman cannot run containers on this machine: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
        return;
    }
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(
        printed.contains("Debian GNU/Linux 12 (bookworm)"),
        "{printed}"
    );
    if let Some(expected) = expected {
        assert_eq!(printed, expected);
    }
}

#[test]
fn a_moved_tag_moves_the_name_and_reruns_leave_the_store_bytes_alone() {
    let registry = Registry::anonymous();
    let base = unique_repo("podman-move");
    let old = small_image("old");
    let new = small_image("new");
    let repository = format!("{base}/app");
    push(registry, &repository, "1.0", &old);
    let work = Work::new(Backend::Local);
    let name = format!("{}/{repository}:1.0", registry.host());
    wishlist(&work, REPO, &[format!("http://{name}")]);
    assert_converted(&work.convert(&["-i"]));
    push(registry, &repository, "1.0", &new);
    assert_converted(&work.convert(&["-i"]));

    let images_json = work.repo().join("podmanStore/overlay-images/images.json");
    let records: Value = serde_json::from_slice(&std::fs::read(&images_json).unwrap()).unwrap();
    let with_name: Vec<&str> = records
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["names"]
                .as_array()
                .is_some_and(|n| n.contains(&json!(name)))
        })
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(with_name, [new.config_hex()]);
    assert_eq!(records.as_array().unwrap().len(), 2);

    let store = work.repo().join("podmanStore");
    let before = Tree::scan(&store).unwrap();
    // A plain rerun (marker up to date) and one that converts again: the store stays as it is.
    let events = work.path("events");
    assert_converted(&work.convert(&["-i"]));
    assert_converted(&work.convert(&["-i", "-g", "-n", &events.display().to_string()]));
    before.assert_same_as(
        &Tree::scan(&store).unwrap(),
        &Options::default(),
        "the store after the first run",
        "after the reruns",
    );
    let outcomes: Vec<Value> = store_events(&work, "events")
        .iter()
        .map(|e| e["outcome"].clone())
        .collect();
    assert_eq!(outcomes, [json!("unchanged")]);

    let Some(podman) = Podman::over(&work.repo()) else {
        return;
    };
    let mut listed = podman.images();
    listed.sort();
    let mut want = vec![
        (new.config_hex().to_owned(), vec![name.clone()]),
        (old.config_hex().to_owned(), Vec::new()),
    ];
    want.sort();
    assert_eq!(listed, want);
}

#[test]
fn an_image_put_into_the_store_on_an_existing_flat_tree_takes_the_size_its_record_kept() {
    let registry = Registry::anonymous();
    let base = unique_repo("podman-size");
    let image = small_image("size");
    push(registry, &format!("{base}/app"), "1", &image);
    let work = Work::new(Backend::Local);
    let input = format!("http://{}/{base}/app:1", registry.host());
    wishlist(&work, REPO, std::slice::from_ref(&input));
    // The flat tree goes in without the store; its completion record keeps the tree's size.
    assert_converted(&work.convert(&["-i", "--skip-podman"]));
    let record_path = flat(&work.repo(), image.config_hex()).join(".singularity.d/.ducc-flat.json");
    let mut record: Value = serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
    let measured = record["tree_bytes"]
        .as_u64()
        .expect("the record keeps the size");
    let walked = ducc_cvmfs::tree_size(&flat(&work.repo(), image.config_hex())).unwrap();
    let record_len = std::fs::metadata(&record_path).unwrap().len();
    assert_eq!(
        measured + record_len,
        walked,
        "the size is the tree's apparent size"
    );
    // Now the store, on the existing tree: its size comes from the record, not from a walk
    // over the published tree (a record saying otherwise shows which was used).
    record["tree_bytes"] = json!(7_000_000);
    let record_bytes = serde_json::to_vec(&record).unwrap();
    std::fs::write(&record_path, &record_bytes).unwrap();
    assert_converted(&work.convert(&["-i", "-g"]));
    let layers: Value = serde_json::from_slice(
        &std::fs::read(work.repo().join("podmanStore/overlay-layers/layers.json")).unwrap(),
    )
    .unwrap();
    let sizes: Vec<u64> = layers
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["diff-size"].as_u64())
        .collect();
    assert_eq!(sizes, [7_000_000 + record_bytes.len() as u64], "{layers:#}");
}

#[test]
fn skip_podman_skip_flat_and_skip_layers_write_no_store() {
    let registry = Registry::anonymous();
    let base = unique_repo("podman-skip");
    let image = small_image("skip");
    push(registry, &format!("{base}/app"), "1", &image);
    for flag in ["-p", "--skip-podman", "--skip-flat", "--skip-layers"] {
        let work = Work::new(Backend::Local);
        wishlist(
            &work,
            REPO,
            &[format!("http://{}/{base}/app:1", registry.host())],
        );
        let events = work.path("events").display().to_string();
        assert_converted(&work.convert(&["-i", flag, "-n", &events]));
        assert!(
            !work.repo().join("podmanStore").exists(),
            "{flag} wrote a podman store"
        );
        assert!(store_events(&work, "events").is_empty(), "{flag}");
    }
}

#[test]
fn two_converts_at_once_lose_no_entry() {
    let registry = Registry::anonymous();
    let base = unique_repo("podman-race");
    let work = Work::new(Backend::Local);
    let mut lists = Vec::new();
    let mut all = Vec::new();
    for side in ["a", "b"] {
        let mut inputs = Vec::new();
        for i in 0..3 {
            let image = small_image(&format!("{side}{i}"));
            let repository = format!("{base}/{side}{i}");
            push(registry, &repository, "1", &image);
            inputs.push(format!("http://{}/{repository}:1", registry.host()));
            all.push((
                image.config_hex().to_owned(),
                format!("{}/{repository}:1", registry.host()),
            ));
        }
        let path = work.path(&format!("wish-{side}.yaml"));
        let mut text = format!("version: 1\nuser: ''\ncvmfs_repo: {REPO}\ninput:\n");
        for input in &inputs {
            text.push_str(&format!("  - '{input}'\n"));
        }
        std::fs::write(&path, text).unwrap();
        lists.push(path);
    }
    // Both processes on the same repository, started together.
    let children: Vec<_> = lists
        .iter()
        .map(|list| {
            let command = work.command(&["-i"]);
            // `work.command` names wish.yaml; point this one at its own list instead.
            let args: Vec<_> = command
                .get_args()
                .map(|a| {
                    if a == work.path("wish.yaml").as_os_str() {
                        list.as_os_str().to_owned()
                    } else {
                        a.to_owned()
                    }
                })
                .collect();
            let mut fresh = Command::new(command.get_program());
            fresh.args(args);
            for (key, value) in command.get_envs() {
                match value {
                    Some(v) => fresh.env(key, v),
                    None => fresh.env_remove(key),
                };
            }
            fresh.spawn().unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
    }
    let records: Value = serde_json::from_slice(
        &std::fs::read(work.repo().join("podmanStore/overlay-images/images.json")).unwrap(),
    )
    .unwrap();
    let mut got: Vec<(String, String)> = records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["names"][0].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    got.sort();
    all.sort();
    assert_eq!(got, all);
    let layers: Value = serde_json::from_slice(
        &std::fs::read(work.repo().join("podmanStore/overlay-layers/layers.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(layers.as_array().unwrap().len(), all.len());
}

/// `--multi-arch` converts every platform; the store gets the one `--platform` names, under the
/// image's plain name.
#[test]
fn multi_arch_puts_the_platform_matching_platform_into_the_store() {
    let registry = Registry::anonymous();
    let base = unique_repo("podman-multi");
    let repository = format!("{base}/multi");
    let client = images::client_for(registry.host(), None);
    let repo = images::repository(registry.host(), &repository);
    let amd = small_image("amd64");
    let arm = small_image("arm64");
    let mut manifests = Vec::new();
    for (image, arch) in [(&amd, "amd64"), (&arm, "arm64")] {
        for layer in &image.layers {
            images::push_blob(&client, &repo, &layer.blob);
        }
        images::push_blob(&client, &repo, &image.config);
        images::push_manifest(
            &client,
            &repo,
            &image.manifest.digest,
            "application/vnd.oci.image.manifest.v1+json",
            &image.manifest.bytes,
        );
        let mut entry = image
            .manifest
            .descriptor("application/vnd.oci.image.manifest.v1+json");
        entry["platform"] = json!({"architecture": arch, "os": "linux"});
        manifests.push(entry);
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))
    .unwrap();
    images::push_manifest(
        &client,
        &repo,
        "1",
        "application/vnd.oci.image.index.v1+json",
        &index,
    );
    for (platform, chosen) in [("linux/amd64", &amd), ("linux/arm64/v8", &arm)] {
        let work = Work::new(Backend::Local);
        let name = format!("{}/{repository}:1", registry.host());
        wishlist(&work, REPO, &[format!("http://{name}")]);
        assert_converted(&work.convert(&["-i", "--multi-arch", "--platform", platform]));
        let records: Value = serde_json::from_slice(
            &std::fs::read(work.repo().join("podmanStore/overlay-images/images.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            records,
            json!([records[0].clone()]),
            "one image for {platform}"
        );
        assert_eq!(records[0]["id"], chosen.config_hex(), "{platform}");
        assert_eq!(records[0]["names"], json!([name]), "{platform}");
    }
}

#[test]
fn a_corrupt_images_json_fails_the_image_naming_the_file_and_is_left_alone() {
    let registry = Registry::anonymous();
    let base = unique_repo("podman-corrupt");
    push(
        registry,
        &format!("{base}/app"),
        "1",
        &small_image("corrupt"),
    );
    let work = Work::new(Backend::Local);
    let name = format!("{}/{base}/app:1", registry.host());
    wishlist(&work, REPO, &[format!("http://{name}")]);
    let images_json = work.repo().join("podmanStore/overlay-images/images.json");
    std::fs::create_dir_all(images_json.parent().unwrap()).unwrap();
    std::fs::write(&images_json, b"[{\"id\": \"truncated").unwrap();
    let out = work.convert(&["-i"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&images_json.display().to_string()),
        "the error does not name {}: {stderr}",
        images_json.display()
    );
    assert_eq!(
        std::fs::read(&images_json).unwrap(),
        b"[{\"id\": \"truncated"
    );
    // No marker: the next run tries the image again.
    assert!(
        convert_support::marker_config(&work.repo(), registry.host(), &format!("{base}/app:1"))
            .is_none()
    );
}

/// The same store through `cvmfs_server` (the stand-in): written in the image's mounted
/// transaction (issue 29), with its `.cvmfscatalog`; podman reads it; a convert-again publishes
/// nothing more for it.
#[test]
fn the_cvmfs_publisher_writes_a_store_podman_reads() {
    let registry = Registry::anonymous();
    let base = unique_repo("podman-cvmfs");
    let image = small_image("cvmfs");
    push(registry, &format!("{base}/app"), "1", &image);
    let work = Work::new(Backend::Cvmfs);
    let name = format!("{}/{base}/app:1", registry.host());
    wishlist(&work, REPO, &[format!("http://{name}")]);
    assert_converted(&work.convert(&["-i"]));
    let publishes = |log: &[String]| log.iter().filter(|l| l.starts_with("publish ")).count();
    let log = work.standin_log();
    assert_eq!(publishes(&log), 1, "{log:#?}");
    assert!(
        !log.iter().any(|l| l.contains("-b podmanStore")),
        "the store is not an ingest of its own: {log:#?}"
    );
    let repo = work.repo();
    assert!(repo.join("podmanStore/.cvmfscatalog").is_file());
    let before = work.standin_log().len();
    assert_converted(&work.convert(&["-i", "-g"]));
    let again = work.standin_log()[before..].to_vec();
    // The flat tree is built again (-g); the store, unchanged, adds nothing to its commit.
    assert_eq!(publishes(&again), 1, "{again:#?}");

    let Some(podman) = Podman::over(&repo) else {
        return;
    };
    assert_eq!(
        podman.images(),
        [(image.config_hex().to_owned(), vec![name.clone()])]
    );
    let inspect = podman.json(&["image", "inspect", &name]);
    assert_eq!(inspect[0]["Config"]["Cmd"], json!(["--help"]));
    let expected = Tree::scan(&flat(&repo, image.config_hex())).unwrap();
    // Ingest keeps the tar's owners and modes; the stand-in stores what it was given.
    expected.assert_same_as(
        &podman.container_tree(&name),
        &mount_options(),
        "flat",
        "podman container mount",
    );
}
