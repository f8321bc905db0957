//! Issue 28: containers that containerd's CernVM-FS snapshotter starts from a cvmfs repository
//! are exactly the image. The snapshotter bind-mounts `.layers/<hh>/<hex>/layerfs` per layer and
//! containerd stacks those with overlayfs, so on a stratum 0 (the stand-in keeps character
//! devices, as ingest does) the kernel overlay of an image's layer directories, read back from
//! the published tree, must equal its flat tree less what ingest cannot keep and the Apptainer
//! additions. Behind a gateway (the stand-in drops devices) layer directories keep raw `.wh.`
//! names and a run says once why snapshotter containers show deleted files. A layer directory
//! is written once per blob: reused over another stack below, its explicit whiteouts may miss
//! entries, which the run names.
//!
//! Needs root (owners, whiteout devices, overlay mounts).
#![allow(clippy::unwrap_used)]

mod convert_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use convert_support::{Backend, Compression, Image, Layer, REPO, Work, flat_dir, layer_dir};
use ducc_tests::overlay::OverlayMount;
use ducc_tests::tree::{Options, Tree, scratch_dir};
use ducc_tests::{Registry, fixtures, images, unique_repo};

/// One tar entry of a test layer (mode 0755 directories, 0644 files, owner 0, fixed times).
enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a str),
    /// `.wh.NAME` (or `.wh..wh..opq`) as an empty file, given by its full name.
    Marker(&'a str),
}

fn tar_layer(entries: &[E]) -> Layer {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        match e {
            E::Dir(path) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, format!("{path}/"), &[][..]).unwrap();
            }
            E::File(path, content) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(content.len() as u64);
                b.append_data(&mut h, path, content.as_bytes()).unwrap();
            }
            E::Marker(path) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_data(&mut h, path, &[][..]).unwrap();
            }
        }
    }
    Layer::new(&b.into_inner().unwrap(), Compression::Gzip)
}

/// The image of the issue's cases: an opaque directory over a lower one with nested
/// subdirectories whose layer makes some names again, a directory replaced by a file and back,
/// and a whiteout of a directory of 200 files.
fn issue_image() -> Image {
    let many: Vec<String> = (0..200).map(|n| format!("testbed/many/f{n:03}")).collect();
    let mut base = vec![
        E::Dir("testbed"),
        E::Dir("testbed/opaque"),
        E::Dir("testbed/opaque/sub"),
        E::Dir("testbed/opaque/sub/deep"),
        E::File("testbed/opaque/sub/deep/f", "deep"),
        E::File("testbed/opaque/sub/again", "old"),
        E::File("testbed/opaque/gone", "gone"),
        E::Dir("testbed/typechange"),
        E::File("testbed/typechange/inner", "inner"),
        E::Dir("testbed/many"),
        E::File("etc-issue.net", "deleted"),
    ];
    base.extend(many.iter().map(|p| E::File(p, "m")));
    let top = [
        E::Dir("testbed"),
        E::Dir("testbed/opaque"),
        E::Marker("testbed/opaque/.wh..wh..opq"),
        E::Dir("testbed/opaque/sub"),
        E::File("testbed/opaque/sub/again", "new"),
        E::File("testbed/opaque/fresh", "fresh"),
        E::File("testbed/typechange", "a file now"),
        E::Marker("testbed/.wh.many"),
        E::Marker(".wh.etc-issue.net"),
    ];
    let back = [
        E::Dir("testbed"),
        E::Dir("testbed/typechange"),
        E::File("testbed/typechange/back", "a directory again"),
    ];
    Image::new(
        vec![tar_layer(&base), tar_layer(&top), tar_layer(&back)],
        "issue28",
    )
}

/// Pushes a fixture image's blobs and manifest as `repo:tag`.
fn push_fixture(
    client: &ducc_registry::Client,
    repo: &ducc_registry::Repository,
    tag: &str,
    fixture: &fixtures::Image,
) {
    let manifest = std::fs::read(fixture.blob_path(&fixture.manifest_digest)).unwrap();
    let media_type = serde_json::from_slice::<serde_json::Value>(&manifest).unwrap()["mediaType"]
        .as_str()
        .unwrap()
        .to_owned();
    let blobs = fixture
        .layers
        .iter()
        .map(|l| l.digest.clone())
        .chain([fixture.config_digest.clone()]);
    for digest in blobs {
        let bytes = std::fs::read(fixture.blob_path(&digest)).unwrap();
        images::push_blob(client, repo, &images::Blob::new(bytes));
    }
    images::push_manifest(client, repo, tag, &media_type, &manifest);
}

/// What the flat tree holds and a container does not: the Apptainer additions and the flat
/// tree's own nested-catalog marker.
fn is_flat_addition(path: &str) -> bool {
    let additions: Vec<&str> = ducc_unpack::MOUNT_POINTS
        .iter()
        .chain(ducc_unpack::BIND_FILES.iter())
        .copied()
        .chain([
            ".singularity.d",
            ".exec",
            ".run",
            ".shell",
            ".test",
            "environment",
            "singularity",
            ".cvmfscatalog",
        ])
        .collect();
    path.starts_with(".singularity.d/")
        || additions
            .iter()
            .any(|a| *a == path || a.starts_with(&format!("{path}/")))
}

/// The kernel overlay of `layers` (bottom first) equals the flat tree `flat`, less what the
/// flat tree adds; returns the overlay's tree.
fn assert_overlay_is_flat(label: &str, layers: &[PathBuf], flat: &Path, scratch: &Path) -> Tree {
    let target = scratch.join(format!("merged-{}", label.replace(['/', ':'], "_")));
    std::fs::create_dir_all(&target).unwrap();
    let mount = OverlayMount::mount(layers, &target)
        .unwrap_or_else(|e| panic!("{label}: overlay mount (needs root): {e}"));
    let merged = Tree::scan(&target).unwrap();
    drop(mount);
    let mut flat = Tree::scan(flat).unwrap();
    let added: Vec<String> = flat
        .nodes
        .keys()
        .filter(|p| !merged.nodes.contains_key(*p) && is_flat_addition(p))
        .cloned()
        .collect();
    for path in added {
        flat.nodes.remove(&path);
        flat.raw_paths.remove(path.as_bytes());
    }
    // Hardlinks into lower layers are copies in a layer directory (issue 14). Directory times
    // are the image's in the layer directories (ingest keeps them) but the publish time in a
    // flat tree written through a mounted transaction: the container is the image there, the
    // flat tree is not (the overlay invariant tests compare every time: overlay_invariant.rs).
    let options = Options {
        hardlinks: false,
        dir_mtimes: false,
        ..Options::default()
    };
    flat.assert_same_as(
        &merged,
        &options,
        &format!("{label}: flat tree"),
        &format!("{label}: overlay of its published layer directories"),
    );
    merged
}

/// `layerfs` of each layer of a fixture image, bottom first, in the published tree `repo`.
fn fixture_layers(repo: &Path, fixture: &fixtures::Image) -> Vec<PathBuf> {
    fixture
        .layers
        .iter()
        .map(|l| {
            let h = convert_support::hex(&l.digest);
            repo.join(".layers").join(&h[..2]).join(h).join("layerfs")
        })
        .collect()
}

fn image_layers(repo: &Path, image: &Image) -> Vec<PathBuf> {
    image
        .layers
        .iter()
        .map(|l| layer_dir(repo, l).join("layerfs"))
        .collect()
}

/// Every path of a tree named `.wh.*` or `.cvmfscatalog`.
fn markers(tree: &Tree) -> Vec<String> {
    tree.nodes
        .keys()
        .filter(|p| {
            let name = p.rsplit('/').next().unwrap_or(p);
            name.starts_with(".wh.") || name == ".cvmfscatalog"
        })
        .cloned()
        .collect()
}

#[test]
fn stratum_0_layer_directories_stack_into_each_image_of_the_convert_set() {
    if !ducc_tests::require_root("whiteout devices, owners and overlay mounts need root") {
        return;
    }
    let registry = Registry::anonymous();
    let client = images::client_for(registry.host(), None);
    let name = unique_repo("snapshotter");
    let repo = images::repository(registry.host(), &name);
    // Every fixture image but the Debian ones, whose rootfs comes from a Debian mirror (the
    // real `layered:v1` was checked with the real snapshotter: issue 28). `longnames` holds
    // non-UTF-8 and long names, which reach the layer directories byte for byte.
    let names: Vec<String> = fixtures::all_names()
        .into_iter()
        .filter(|n| !n.starts_with("debian"))
        .collect();
    let fixtures: Vec<fixtures::Image> = names
        .iter()
        .map(|n| fixtures::image(n).unwrap_or_else(|e| panic!("fixture {n}: {e}")))
        .collect();
    for fixture in &fixtures {
        push_fixture(&client, &repo, &fixture.name, fixture);
    }
    let issue = issue_image();
    issue.push(&client, &repo, "issue28");
    let mut inputs: Vec<String> = names
        .iter()
        .map(|n| format!("http://{}/{name}:{n}", registry.host()))
        .collect();
    inputs.push(format!("http://{}/{name}:issue28", registry.host()));

    let work = Work::new(Backend::Cvmfs);
    work.wishlist(&inputs, "");
    let out = work.convert(&["-i"]);
    assert!(out.status.success());
    let published = work.repo();
    let scratch = scratch_dir("snapshotter-stack").unwrap();

    for fixture in &fixtures {
        let flat = published
            .join(".flat")
            .join(&convert_support::hex(&fixture.config_digest)[..2])
            .join(convert_support::hex(&fixture.config_digest));
        let merged = assert_overlay_is_flat(
            &fixture.name,
            &fixture_layers(&published, fixture),
            &flat,
            scratch.path(),
        );
        assert_eq!(markers(&merged), Vec::<String>::new(), "{}", fixture.name);
    }
    let merged = assert_overlay_is_flat(
        "issue28",
        &image_layers(&published, &issue),
        &flat_dir(&published, &issue),
        scratch.path(),
    );
    assert_eq!(markers(&merged), Vec::<String>::new());
    let present: BTreeSet<&str> = merged.nodes.keys().map(String::as_str).collect();
    for gone in [
        "etc-issue.net",
        "testbed/many",
        "testbed/opaque/gone",
        "testbed/opaque/sub/deep",
        "testbed/typechange/inner",
    ] {
        assert!(!present.contains(gone), "{gone} shows");
    }
    for kept in [
        "testbed/opaque/sub/again",
        "testbed/opaque/fresh",
        "testbed/typechange/back",
    ] {
        assert!(present.contains(kept), "{kept} missing");
    }

    // The opaque directory became whiteout devices, recorded with the stack they hide.
    let top = layer_dir(&published, &issue.layers[1]);
    let device = std::fs::symlink_metadata(top.join("layerfs/testbed/opaque/gone")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &device.file_type()
    ));
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(top.join(".metadata/whiteouts.json")).unwrap())
            .unwrap();
    assert_eq!(
        record,
        serde_json::json!({
            "lower-diff-ids": [issue.layers[0].diff_id],
            "directories": ["testbed/opaque"],
        })
    );
    // Each layer is its own nested catalog, with the marker beside layerfs.
    for layer in &issue.layers {
        assert!(layer_dir(&published, layer).join(".cvmfscatalog").is_file());
    }
    let catalogs = std::process::Command::new(work.path("cvmfs_server"))
        .args(["list-catalogs", REPO])
        .output()
        .unwrap();
    let catalogs = String::from_utf8_lossy(&catalogs.stdout);
    let top_catalog = format!(
        "/.layers/{}/{}",
        &issue.layers[1].hex()[..2],
        issue.layers[1].hex()
    );
    assert!(
        catalogs.lines().any(|l| l.trim() == top_catalog),
        "{catalogs}"
    );
}

/// A layer with an opaque directory, converted over one stack below, then reused by an image
/// whose stack below holds other names there.
#[test]
fn a_layer_reused_over_another_stack_converts_and_names_what_a_container_would_show() {
    if !ducc_tests::require_root("whiteout devices, owners and overlay mounts need root") {
        return;
    }
    let registry = Registry::anonymous();
    let client = images::client_for(registry.host(), None);
    let name = unique_repo("snapshotter-reuse");
    let repo = images::repository(registry.host(), &name);
    let shared = tar_layer(&[
        E::Dir("app"),
        E::Marker("app/.wh..wh..opq"),
        E::File("app/new", "new"),
    ]);
    let first = Image::new(
        vec![
            tar_layer(&[
                E::Dir("app"),
                E::File("app/a", "a"),
                E::File("app/new", "old"),
            ]),
            shared.clone(),
        ],
        "first",
    );
    let second = Image::new(
        vec![
            tar_layer(&[
                E::Dir("app"),
                E::File("app/a", "a"),
                E::File("app/c", "c"),
                E::Dir("app/d"),
                E::File("app/d/x", "x"),
            ]),
            shared.clone(),
        ],
        "second",
    );
    let third = Image::new(vec![first.layers[0].clone(), shared.clone()], "third");
    first.push(&client, &repo, "first");
    second.push(&client, &repo, "second");
    third.push(&client, &repo, "third");

    let work = Work::new(Backend::Cvmfs);
    work.wishlist(&[format!("http://{}/{name}:first", registry.host())], "");
    assert!(work.convert(&["-i"]).status.success());
    work.wishlist(
        &[
            format!("http://{}/{name}:first", registry.host()),
            format!("http://{}/{name}:second", registry.host()),
            format!("http://{}/{name}:third", registry.host()),
        ],
        "",
    );
    let events = work.path("events.jsonl");
    let out = work.convert(&["-i", "-n", events.to_str().unwrap()]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let published = work.repo();

    // The flat tree is right.
    let flat = Tree::scan(&flat_dir(&published, &second)).unwrap();
    let app: Vec<&str> = flat
        .nodes
        .keys()
        .filter(|p| p.starts_with("app/"))
        .map(String::as_str)
        .collect();
    assert_eq!(app, ["app/new"]);
    // The warning and the event name the layer and what a container would show.
    let mismatches: Vec<serde_json::Value> = work
        .events("events.jsonl")
        .into_iter()
        .filter(|e| e["action"] == "layer_whiteouts_mismatch")
        .collect();
    assert_eq!(mismatches.len(), 1, "{mismatches:#?}");
    assert_eq!(mismatches[0]["layer"], shared.blob.digest);
    assert_eq!(
        mismatches[0]["written_for"],
        serde_json::json!([first.layers[0].diff_id])
    );
    assert_eq!(
        mismatches[0]["would_show"],
        serde_json::json!(["/app/c", "/app/d"])
    );
    assert_eq!(mismatches[0]["count"], 2);
    assert!(
        stderr.contains(shared.blob.digest.as_str()) && stderr.contains("/app/c, /app/d"),
        "{stderr}"
    );
    // And it is what the overlay of the layer directories shows.
    let scratch = scratch_dir("snapshotter-reuse").unwrap();
    let target = scratch.path().join("merged");
    std::fs::create_dir_all(&target).unwrap();
    let mount = OverlayMount::mount(&image_layers(&published, &second), &target).unwrap();
    let merged = Tree::scan(&target).unwrap();
    drop(mount);
    let shown: Vec<&str> = merged
        .nodes
        .keys()
        .filter(|p| p.starts_with("app/"))
        .map(String::as_str)
        .collect();
    assert_eq!(shown, ["app/c", "app/d", "app/d/x", "app/new"]);
    // The third image reuses the layer over the stack it was written for: nothing to say.
    assert!(
        mismatches[0]["image"]
            .as_str()
            .unwrap()
            .ends_with(":second")
    );
    let third = Tree::scan(&flat_dir(&published, &third)).unwrap();
    assert!(third.nodes.contains_key("app/new") && !third.nodes.contains_key("app/a"));
}

/// Behind a gateway (which drops device files) layer directories keep raw `.wh.` names, and a
/// run that writes layers says once, not per image, what that means for snapshotter containers.
#[test]
fn a_gateway_conversion_keeps_raw_whiteout_names_and_says_so_once() {
    let registry = Registry::anonymous();
    let client = images::client_for(registry.host(), None);
    let name = unique_repo("snapshotter-gateway");
    let repo = images::repository(registry.host(), &name);
    let base = tar_layer(&[E::Dir("etc"), E::File("etc/gone", "g"), E::Dir("opt")]);
    let one = Image::new(
        vec![
            base.clone(),
            tar_layer(&[E::Dir("etc"), E::Marker("etc/.wh.gone")]),
        ],
        "one",
    );
    let two = Image::new(
        vec![
            base,
            tar_layer(&[
                E::Dir("opt"),
                E::Marker("opt/.wh..wh..opq"),
                E::File("opt/x", "x"),
            ]),
        ],
        "two",
    );
    one.push(&client, &repo, "one");
    two.push(&client, &repo, "two");

    let work = Work::new(Backend::Cvmfs);
    // The same stand-in repository, made again behind a gateway.
    std::fs::remove_dir_all(work.path("standin/repos").join(REPO)).unwrap();
    let mkfs = std::process::Command::new(work.path("cvmfs_server"))
        .args([
            "mkfs",
            "-u",
            "gw,/srv/txn,http://127.0.0.1:4929/api/v1",
            REPO,
        ])
        .output()
        .unwrap();
    assert!(mkfs.status.success(), "{mkfs:?}");
    work.wishlist(
        &[
            format!("http://{}/{name}:one", registry.host()),
            format!("http://{}/{name}:two", registry.host()),
        ],
        "",
    );
    let events = work.path("events.jsonl");
    // Ingest only (no mount): a first run through a gateway cannot open mounted transactions
    // under paths that do not exist yet.
    let out = work
        .command(&["-i", "-n", events.to_str().unwrap()])
        .env("CVMFS_MOUNT_DIR", work.path("no-mount"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let published = work.repo();
    assert!(
        layer_dir(&published, &one.layers[1])
            .join("layerfs/etc/.wh.gone")
            .is_file()
    );
    assert!(
        layer_dir(&published, &two.layers[1])
            .join("layerfs/opt/.wh..wh..opq")
            .is_file()
    );
    assert!(!flat_dir(&published, &one).join("etc/gone").exists());
    let notices: Vec<serde_json::Value> = work
        .events("events.jsonl")
        .into_iter()
        .filter(|e| e["action"] == "raw_layer_whiteouts")
        .collect();
    assert_eq!(notices.len(), 1, "{notices:#?}");
    assert!(
        notices[0]["reason"]
            .as_str()
            .unwrap()
            .contains("gateway drops device files"),
        "{notices:#?}"
    );
    assert_eq!(
        stderr.matches("CernVM-FS snapshotter").count(),
        1,
        "{stderr}"
    );
    // A run that writes no layer says nothing.
    let before = work.events("events.jsonl").len();
    assert!(
        work.convert(&["-i", "-n", events.to_str().unwrap()])
            .status
            .success()
    );
    let rerun = work.events("events.jsonl");
    assert!(
        rerun[before..]
            .iter()
            .all(|e| e["action"] != "raw_layer_whiteouts"),
        "{rerun:#?}"
    );
}
