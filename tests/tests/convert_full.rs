//! The headline `ducc convert` test: one wish list holding an OCI image (a real Debian rootfs), a
//! Docker v2s2 image, a zstd-layered image, an uncompressed-layer image, a multi-arch index, a tag
//! glob, images sharing layers and a missing image under `ignore_errors`, converted with the local
//! publisher. The whole repository layout is checked path by path, each flat tree against
//! `umoci raw unpack` of the same image (the Apptainer additions accounted for one by one), each
//! image's layer directories overlay-mounted against its flat tree, the thin images in the
//! registry, and a rerun that requests no blob and changes nothing.
//!
//! `--multi-arch` has its own test: the per-platform layout under `.multiarch/`, the variant
//! symlink, the alias links and the thin index.
//!
//! Needs root (umoci sets owners, overlay mounts), skopeo, umoci and the Debian fixture
//! (debootstrap, built once per target directory by `ducc_tests::fixtures`).
#![allow(clippy::unwrap_used)]

mod convert_support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use convert_support::{
    Backend, Compression, Image, Layer, REPO, Work, flat_dir, hex, layer_dir, origin, run_options,
    scan,
};
use ducc_registry::{Client, Repository};
use ducc_tests::images::{self, Blob};
use ducc_tests::overlay::OverlayMount;
use ducc_tests::tree::{Kind, Options, Tree, scratch_dir};
use ducc_tests::{FaultProxy, Registry, fixtures, require_tool, unique_repo};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Layer content

/// One tar entry of a test layer. Every layer lists its parent directories itself, as image
/// builders do, so no directory of the image is implicit.
#[derive(Debug, Clone)]
enum Entry {
    Dir(&'static str, u32),
    File(&'static str, &'static [u8], u32),
    Owned(&'static str, &'static [u8], u32, u64),
    OwnedDir(&'static str, u32, u64),
    Symlink(&'static str, &'static str),
    Hardlink(&'static str, &'static str),
}

use Entry::{Dir, File, Hardlink, Owned, OwnedDir, Symlink};

/// `.wh.NAME` next to `dir/NAME`.
fn whiteout(path: &'static str) -> Entry {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    let whiteout: &'static str = if dir.is_empty() {
        format!(".wh.{name}").leak()
    } else {
        format!("{dir}/.wh.{name}").leak()
    };
    File(whiteout, b"", 0o644)
}

/// `dir/.wh..wh..opq`.
fn opaque(dir: &'static str) -> Entry {
    File(format!("{dir}/.wh..wh..opq").leak(), b"", 0o644)
}

const MTIME: u64 = 1_650_000_000;

fn tar_entries(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(MTIME);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(0);
        match entry {
            Dir(path, mode) | OwnedDir(path, mode, _) => {
                let owner = if let OwnedDir(_, _, uid) = entry {
                    *uid
                } else {
                    0
                };
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                header.set_uid(owner);
                header.set_gid(owner);
                builder
                    .append_data(&mut header, format!("{path}/"), &[][..])
                    .unwrap();
            }
            File(path, content, mode) | Owned(path, content, mode, _) => {
                let owner = if let Owned(_, _, _, uid) = entry {
                    *uid
                } else {
                    0
                };
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_uid(owner);
                header.set_gid(owner);
                header.set_size(content.len() as u64);
                builder.append_data(&mut header, path, *content).unwrap();
            }
            Symlink(path, target) | Hardlink(path, target) => {
                header.set_entry_type(if matches!(entry, Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                header.set_mode(0o777);
                builder.append_link(&mut header, path, target).unwrap();
            }
        }
    }
    builder.into_inner().unwrap()
}

/// The base layer the Docker image and the glob's tags share: nested directories, modes
/// (setuid, 0600, 0700, sticky), an owner other than root, a hardlink, symlinks (one of them a
/// top-level directory link) and the image's own `/etc/hosts`.
fn shared_base_tar() -> Vec<u8> {
    tar_entries(&[
        Dir("bin", 0o755),
        File("bin/tool", b"#!/bin/sh\necho tool v1\n", 0o755),
        Hardlink("bin/tool-alias", "bin/tool"),
        Symlink("bin/sh-link", "tool"),
        Dir("etc", 0o755),
        File("etc/hosts", IMAGE_HOSTS, 0o644),
        File("etc/os-release", b"ID=ducc-test\n", 0o644),
        Dir("home", 0o755),
        OwnedDir("home/user", 0o700, 1000),
        Owned("home/user/.profile", b"export EDITOR=vi\n", 0o644, 1000),
        Dir("opt", 0o755),
        Dir("opt/app", 0o755),
        File("opt/app/secret", b"not for everyone\n", 0o600),
        File("opt/app/helper", b"#!/bin/sh\nid\n", 0o4755),
        Dir("tmp", 0o1777),
        Dir("usr", 0o755),
        Dir("usr/lib", 0o755),
        Dir("usr/lib/app", 0o750),
        File("usr/lib/app/a.so", b"library a v1\n", 0o644),
        File("usr/lib/app/b.so", b"library b v1\n", 0o644),
        Dir("usr/lib/app/plugins", 0o755),
        File("usr/lib/app/plugins/p1", b"plugin one\n", 0o644),
        Dir("usr/share", 0o755),
        Dir("usr/share/doc", 0o755),
        File("usr/share/doc/README", b"read me\n", 0o644),
        File("usr/share/doc/LICENSE", b"license text\n", 0o644),
        Symlink("lib", "usr/lib"),
    ])
}

const IMAGE_HOSTS: &[u8] = b"127.0.0.1 localhost\n10.1.2.3 image-own-hosts\n";

/// The Docker image's top layer: whiteouts, an opaque directory with a new child, a replaced
/// file (breaking the lower hardlink), a re-targeted symlink and a hardlink pair.
fn app_top_tar() -> Vec<u8> {
    tar_entries(&[
        Dir("bin", 0o755),
        File("bin/tool", b"#!/bin/sh\necho tool v2\n", 0o755),
        Symlink("bin/sh-link", "/bin/tool-alias"),
        Dir("etc", 0o755),
        whiteout("etc/os-release"),
        File("etc/app.conf", b"mode=production\n", 0o640),
        Dir("opt", 0o755),
        Dir("opt/app", 0o755),
        File("opt/app/data", b"shared data\n", 0o644),
        Hardlink("opt/app/data-link", "opt/app/data"),
        Dir("usr", 0o755),
        Dir("usr/lib", 0o755),
        Dir("usr/lib/app", 0o755),
        opaque("usr/lib/app"),
        File("usr/lib/app/c.so", b"library c v2\n", 0o644),
        Dir("usr/share", 0o755),
        Dir("usr/share/doc", 0o755),
        whiteout("usr/share/doc/LICENSE"),
    ])
}

fn zstd_layers() -> [Vec<u8>; 2] {
    [
        tar_entries(&[
            Dir("data", 0o755),
            Dir("data/a", 0o755),
            Dir("data/a/b", 0o755),
            Dir("data/a/b/c", 0o755),
            File("data/a/b/c/deep", b"deep file\n", 0o644),
            File("data/a/b/c/gone", b"removed above\n", 0o644),
            Symlink("data/latest", "a/b"),
            Dir("etc", 0o755),
            File("etc/zstd-release", b"zstd 1\n", 0o644),
        ]),
        tar_entries(&[
            Dir("data", 0o755),
            Dir("data/a", 0o755),
            Dir("data/a/b", 0o755),
            Dir("data/a/b/c", 0o755),
            whiteout("data/a/b/c/gone"),
            File("data/a/b/c/new", b"added by layer two\n", 0o644),
            Hardlink("data/a/b/c/new-link", "data/a/b/c/new"),
        ]),
    ]
}

/// The uncompressed image ships `srv` (a mount point) and a dangling `/etc/resolv.conf` symlink,
/// as systemd-resolved images do: both must stay as the image has them.
fn plain_layers() -> [Vec<u8>; 2] {
    [
        tar_entries(&[
            Dir("etc", 0o755),
            Symlink("etc/resolv.conf", "../run/systemd/resolve/stub-resolv.conf"),
            Dir("srv", 0o755),
            Dir("srv/www", 0o755),
            File("srv/www/index.html", b"<p>old</p>\n", 0o644),
        ]),
        tar_entries(&[
            Dir("srv", 0o755),
            Dir("srv/www", 0o755),
            whiteout("srv/www/index.html"),
            File("srv/www/new.html", b"<p>new</p>\n", 0o644),
        ]),
    ]
}

// ---------------------------------------------------------------------------------------------
// Images

/// Manifest flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Oci,
    Docker,
}

impl Format {
    fn manifest_type(self) -> &'static str {
        match self {
            Format::Oci => "application/vnd.oci.image.manifest.v1+json",
            Format::Docker => "application/vnd.docker.distribution.manifest.v2+json",
        }
    }
}

/// The config fields the tests vary.
#[derive(Debug, Clone, Default)]
struct Runtime {
    arch: &'static str,
    variant: Option<&'static str>,
    env: Vec<&'static str>,
    entrypoint: Vec<&'static str>,
    cmd: Vec<&'static str>,
    label: String,
}

const CREATED: &str = "2024-05-06T07:08:09Z";

/// An image of `layers` in `format` with this runtime config.
fn build(format: Format, mut layers: Vec<Layer>, runtime: &Runtime) -> Image {
    if format == Format::Docker {
        for layer in &mut layers {
            assert_eq!(layer.media_type, OCI_GZIP);
            layer.media_type = "application/vnd.docker.image.rootfs.diff.tar.gzip";
        }
    }
    let mut config_section = json!({"Labels": {"test": runtime.label}});
    if !runtime.env.is_empty() {
        config_section["Env"] = json!(runtime.env);
    }
    if !runtime.entrypoint.is_empty() {
        config_section["Entrypoint"] = json!(runtime.entrypoint);
    }
    if !runtime.cmd.is_empty() {
        config_section["Cmd"] = json!(runtime.cmd);
    }
    let mut config = json!({
        "architecture": runtime.arch,
        "os": "linux",
        "created": CREATED,
        "config": config_section,
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
    });
    if let Some(variant) = runtime.variant {
        config["variant"] = json!(variant);
    }
    let config = Blob::new(serde_json::to_vec(&config).unwrap());
    let config_type = match format {
        Format::Oci => "application/vnd.oci.image.config.v1+json",
        Format::Docker => "application/vnd.docker.container.image.v1+json",
    };
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": format.manifest_type(),
        "config": config.descriptor(config_type),
        "layers": layers.iter().map(|l| l.blob.descriptor(l.media_type)).collect::<Vec<_>>(),
    });
    Image {
        layers,
        config,
        manifest: Blob::new(serde_json::to_vec(&manifest).unwrap()),
    }
}

/// The media type of an OCI gzip layer ([`Layer::new`] with [`Compression::Gzip`]).
const OCI_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Pushes blobs and manifest; tags it `tag`, or pushes it by digest when `tag` is `None`.
fn push(client: &Client, repo: &Repository, tag: Option<&str>, image: &Image) {
    for layer in &image.layers {
        images::push_blob(client, repo, &layer.blob);
    }
    images::push_blob(client, repo, &image.config);
    let media_type: Value = serde_json::from_slice(&image.manifest.bytes).unwrap();
    images::push_manifest(
        client,
        repo,
        tag.unwrap_or(&image.manifest.digest),
        media_type["mediaType"].as_str().unwrap(),
        &image.manifest.bytes,
    );
}

/// Pushes `children` by digest and an OCI index over them (plus, with `attestation`, a BuildKit
/// style `unknown/unknown` attestation entry) tagged `tag`.
fn push_index(
    client: &Client,
    repo: &Repository,
    tag: &str,
    children: &[(&Image, Runtime)],
    attestation: bool,
    docker: bool,
) {
    let mut manifests = Vec::new();
    for (child, runtime) in children {
        push(client, repo, None, child);
        let media_type: Value = serde_json::from_slice(&child.manifest.bytes).unwrap();
        let mut entry = child
            .manifest
            .descriptor(media_type["mediaType"].as_str().unwrap());
        entry["platform"] = json!({"os": "linux", "architecture": runtime.arch});
        if let Some(variant) = runtime.variant {
            entry["platform"]["variant"] = json!(variant);
        }
        manifests.push(entry);
    }
    if attestation {
        let statement = Blob::new(br#"{"_type":"https://in-toto.io/Statement/v0.1"}"#.to_vec());
        let config = Blob::new(
            br#"{"architecture":"unknown","os":"unknown","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#
                .to_vec(),
        );
        images::push_blob(client, repo, &statement);
        images::push_blob(client, repo, &config);
        let manifest = Blob::new(
            serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config.descriptor("application/vnd.oci.image.config.v1+json"),
                "layers": [statement.descriptor("application/vnd.in-toto+json")],
            }))
            .unwrap(),
        );
        images::push_manifest(
            client,
            repo,
            &manifest.digest,
            "application/vnd.oci.image.manifest.v1+json",
            &manifest.bytes,
        );
        let mut entry = manifest.descriptor("application/vnd.oci.image.manifest.v1+json");
        entry["platform"] = json!({"os": "unknown", "architecture": "unknown"});
        entry["annotations"] = json!({
            "vnd.docker.reference.digest": manifests[0]["digest"],
            "vnd.docker.reference.type": "attestation-manifest",
        });
        manifests.push(entry);
    }
    let media_type = if docker {
        "application/vnd.docker.distribution.manifest.list.v2+json"
    } else {
        "application/vnd.oci.image.index.v1+json"
    };
    let index = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": media_type, "manifests": manifests}),
    )
    .unwrap();
    images::push_manifest(client, repo, tag, media_type, &index);
}

/// Pushes a fixture's OCI layout byte for byte, streaming its blobs from disk.
fn push_fixture(client: &Client, repo: &Repository, tag: &str, fixture: &fixtures::Image) {
    let manifest_bytes = std::fs::read(fixture.blob_path(&fixture.manifest_digest)).unwrap();
    let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
    let mut digests: Vec<String> = fixture.layers.iter().map(|l| l.digest.clone()).collect();
    digests.push(fixture.config_digest.clone());
    for digest in digests {
        let path = fixture.blob_path(&digest);
        let size = std::fs::metadata(&path).unwrap().len();
        let mut file = std::fs::File::open(&path).unwrap();
        client
            .push_blob(
                repo,
                &ducc_oci::BlobDigest::parse(&digest).unwrap(),
                size,
                &mut file,
            )
            .unwrap();
    }
    let pushed = images::push_manifest(
        client,
        repo,
        tag,
        manifest["mediaType"].as_str().unwrap(),
        &manifest_bytes,
    );
    assert_eq!(pushed, fixture.manifest_digest);
}

// ---------------------------------------------------------------------------------------------
// Oracles

/// umoci's tree of an OCI layout reference, and the paths umoci stamped with the time of the
/// unpack (see `ducc_tests::tree::umoci_tree`).
fn umoci_unpack(layout_ref: &str, scratch: &Path) -> (Tree, BTreeSet<String>) {
    let umoci = require_tool("umoci", "umoci");
    let rootfs = scratch.join("umoci-rootfs");
    let started = now_secs();
    let out = Command::new(umoci)
        .args(["raw", "unpack", "--image", layout_ref])
        .arg(&rootfs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "umoci raw unpack {layout_ref}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ended = now_secs() + 1;
    let tree = Tree::scan(&rootfs).unwrap();
    let chose = tree
        .nodes
        .iter()
        .filter(|(_, n)| (started..=ended).contains(&n.mtime.0))
        .map(|(p, _)| p.clone())
        .collect();
    (tree, chose)
}

fn now_secs() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// `skopeo copy` of a registry image into a new OCI layout under `scratch`; returns `DIR:TAG`.
fn skopeo_to_layout(host: &str, reference: &str, scratch: &Path) -> String {
    let layout = scratch.join("layout");
    let out = Command::new(require_tool("skopeo", "skopeo"))
        .args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--src-no-creds",
        ])
        .arg(format!("docker://{host}/{reference}"))
        .arg(format!("oci:{}:image", layout.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo copy {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("{}:image", layout.display())
}

/// An OCI layout of `image` with every zstd layer replaced by a gzip blob of the same tar (umoci
/// 0.4.7 reads no zstd); the config, and so the diff_ids, stay as they are.
fn gzip_twin_layout(image: &Image, tars: &[Vec<u8>], scratch: &Path) -> String {
    let layout = scratch.join("twin");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let layers: Vec<Layer> = tars
        .iter()
        .map(|t| Layer::new(t, Compression::Gzip))
        .collect();
    for (layer, original) in layers.iter().zip(&image.layers) {
        assert_eq!(layer.diff_id, original.diff_id);
        std::fs::write(blobs.join(layer.hex()), &layer.blob.bytes).unwrap();
    }
    std::fs::write(blobs.join(image.config_hex()), &image.config.bytes).unwrap();
    let manifest = Blob::new(
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": image.config.descriptor("application/vnd.oci.image.config.v1+json"),
            "layers": layers.iter().map(|l| l.blob.descriptor(l.media_type)).collect::<Vec<_>>(),
        }))
        .unwrap(),
    );
    std::fs::write(blobs.join(hex(&manifest.digest)), &manifest.bytes).unwrap();
    let mut entry = manifest.descriptor("application/vnd.oci.image.manifest.v1+json");
    entry["annotations"] = json!({"org.opencontainers.image.ref.name": "image"});
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [entry]})).unwrap(),
    )
    .unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    format!("{}:image", layout.display())
}

// ---------------------------------------------------------------------------------------------
// The Apptainer additions

const MOUNT_POINTS: [&str; 9] = [
    "proc", "sys", "dev", "tmp", "var/tmp", "home", "root", "srv", "cvmfs",
];
const BIND_FILES: [&str; 2] = ["etc/hosts", "etc/resolv.conf"];
const SINGULARITY_LINKS: [(&str, &str); 6] = [
    ("singularity", ".singularity.d/runscript"),
    (".run", ".singularity.d/actions/run"),
    (".exec", ".singularity.d/actions/exec"),
    (".shell", ".singularity.d/actions/shell"),
    (".test", ".singularity.d/actions/test"),
    ("environment", ".singularity.d/env/90-environment.sh"),
];
const SINGULARITY_FILES: [(&str, u32); 15] = [
    (".singularity.d/runscript", 0o755),
    (".singularity.d/startscript", 0o755),
    (".singularity.d/env/01-base.sh", 0o755),
    (".singularity.d/env/10-docker2singularity.sh", 0o755),
    (".singularity.d/env/90-environment.sh", 0o755),
    (".singularity.d/env/95-apps.sh", 0o755),
    (".singularity.d/env/99-base.sh", 0o755),
    (".singularity.d/env/99-runtimevars.sh", 0o755),
    (".singularity.d/actions/exec", 0o755),
    (".singularity.d/actions/run", 0o755),
    (".singularity.d/actions/shell", 0o755),
    (".singularity.d/actions/start", 0o755),
    (".singularity.d/actions/test", 0o755),
    (".singularity.d/labels.json", 0o644),
    // ducc's completion record, written last in the flat tree's transaction.
    (".singularity.d/.ducc-flat.json", 0o644),
];
const SINGULARITY_DIRS: [&str; 4] = [
    ".singularity.d",
    ".singularity.d/actions",
    ".singularity.d/env",
    ".singularity.d/libs",
];

fn remove_node(tree: &mut Tree, path: &str) {
    tree.nodes.remove(path);
    tree.raw_paths.remove(path.as_bytes());
}

/// Checks every addition ducc makes to a flat tree for Apptainer against what the image itself
/// has (`image`, umoci's tree), removes the additions from `flat` so that what is left must equal
/// the image, and returns the directories into which something was added (their mtime is the
/// time of the conversion).
fn strip_apptainer_additions(flat: &mut Tree, image: &Tree, label: &str) -> BTreeSet<String> {
    let mut touched = BTreeSet::new();
    let catalog = &flat.nodes[".cvmfscatalog"];
    assert!(catalog.kind == Kind::File && catalog.size == 0, "{label}");
    remove_node(flat, ".cvmfscatalog");
    touched.insert(String::new());

    for path in image.nodes.keys() {
        assert!(
            !path.starts_with(".singularity.d"),
            "{label}: test images have no .singularity.d"
        );
    }
    let mut expected: BTreeSet<String> = SINGULARITY_DIRS.iter().map(|d| d.to_string()).collect();
    for (file, mode) in SINGULARITY_FILES {
        expected.insert(file.to_owned());
        let node = flat
            .nodes
            .get(file)
            .unwrap_or_else(|| panic!("{label}: no {file}"));
        assert_eq!(
            (node.kind, node.mode, node.uid, node.gid),
            (Kind::File, mode, 0, 0),
            "{label}: {file}"
        );
    }
    for dir in SINGULARITY_DIRS {
        assert_eq!(flat.nodes[dir].kind, Kind::Dir, "{label}: {dir}");
    }
    let present: BTreeSet<String> = flat
        .nodes
        .keys()
        .filter(|p| *p == ".singularity.d" || p.starts_with(".singularity.d/"))
        .cloned()
        .collect();
    assert_eq!(present, expected, "{label}: the files of .singularity.d");
    for path in present {
        remove_node(flat, &path);
    }
    for (link, target) in SINGULARITY_LINKS {
        assert!(!image.nodes.contains_key(link), "{label}: image has {link}");
        let node = flat
            .nodes
            .get(link)
            .unwrap_or_else(|| panic!("{label}: no {link}"));
        assert_eq!(node.kind, Kind::Symlink, "{label}: {link}");
        assert_eq!(
            node.link_target.as_deref(),
            Some(target.as_bytes()),
            "{label}: {link}"
        );
        remove_node(flat, link);
    }
    // Mount points (and `etc`, the bind files' parent) where the image has nothing: created as
    // root-owned directories; where it has something, it is compared with the image below.
    let mut dirs: Vec<&str> = Vec::new();
    for mount in MOUNT_POINTS.iter().chain(&["etc"]) {
        if mount.contains('/') {
            dirs.push(mount.split('/').next().unwrap());
        }
        dirs.push(mount);
    }
    for dir in dirs {
        if image.nodes.contains_key(dir) {
            continue;
        }
        let node = flat
            .nodes
            .get(dir)
            .unwrap_or_else(|| panic!("{label}: mount point /{dir} missing"));
        assert_eq!(
            (node.kind, node.uid, node.gid),
            (Kind::Dir, 0, 0),
            "{label}: /{dir}"
        );
        remove_node(flat, dir);
        touched.insert(parent(dir));
    }
    for file in BIND_FILES {
        if image.nodes.contains_key(file) {
            continue;
        }
        let node = flat
            .nodes
            .get(file)
            .unwrap_or_else(|| panic!("{label}: /{file} missing"));
        assert_eq!(
            (node.kind, node.size, node.uid, node.gid),
            (Kind::File, 0, 0, 0),
            "{label}: /{file} must be an empty file where the image has none"
        );
        remove_node(flat, file);
        touched.insert(parent(file));
    }
    touched
}

fn parent(path: &str) -> String {
    path.rsplit_once('/')
        .map(|(p, _)| p.to_owned())
        .unwrap_or_default()
}

/// The `export` lines `10-docker2singularity.sh` must hold for `env`.
fn expected_exports(env: &[String]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut has_path = false;
    for item in env {
        let (key, value) = item.split_once('=').unwrap();
        if key == "PATH" {
            has_path = true;
            lines.push(format!("export PATH=\"{value}\""));
        } else {
            lines.push(format!("export {key}=\"${{{key}:-{value}}}\""));
        }
    }
    if !has_path {
        lines.push(
            "export PATH=\"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"".into(),
        );
    }
    lines
}

/// Runs the flat tree's runscript with `sh` and `args`, feeding a shell command on stdin (read
/// only when the script starts a shell); the test images' entrypoints and commands are
/// `/bin/echo ...`, which exists on the host too.
fn run_script(script: &Path, args: &[&str]) -> String {
    use std::io::Write as _;
    let mut child = Command::new("sh")
        .arg(script)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // An exec'd echo does not read stdin: a broken pipe here is fine.
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(b"echo from-the-shell\n");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{} {args:?}", script.display());
    String::from_utf8(out.stdout).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Registry reads

/// The JSON `skopeo inspect --raw` reads for `reference` on `host`.
fn raw_manifest(host: &str, reference: &str) -> Value {
    serde_json::from_slice(&ducc_tests::skopeo::inspect_raw(host, reference, None)).unwrap()
}

/// A blob of `repository` on the (anonymous) registry at `host`.
fn registry_blob(host: &str, repository: &str, digest: &str) -> Vec<u8> {
    let (head, body) = ducc_tests::http::get(
        host,
        &format!("/v2/{repository}/blobs/{digest}"),
        &[],
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(head.status(), 200, "GET blob {digest} of {repository}");
    assert_eq!(images::sha256(&body), digest);
    body
}

/// Checks the thin image at `reference` (a tag or `@digest` of `thin_repository`): one gzip
/// layer holding only `thin.json`, whose layers point at `image`'s layer directories, and a
/// config that keeps the image's runtime config.
fn check_thin_manifest(host: &str, thin_repository: &str, manifest: &Value, image: &Image) {
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "a thin image has one layer: {manifest}");
    let blob = registry_blob(host, thin_repository, layers[0]["digest"].as_str().unwrap());
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(&blob[..])
        .read_to_end(&mut tar)
        .unwrap();
    let mut archive = tar::Archive::new(&tar[..]);
    let mut files = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        files.push((entry.path().unwrap().display().to_string(), content));
    }
    assert_eq!(files.len(), 1, "only thin.json in the thin layer");
    assert_eq!(files[0].0, "thin.json");
    let thin: Value = serde_json::from_slice(&files[0].1).unwrap();
    let expected: Vec<Value> = image
        .layers
        .iter()
        .map(|l| {
            let h = l.hex();
            json!({"digest": h, "url": format!("cvmfs://{REPO}/.layers/{}/{h}/layerfs", &h[..2])})
        })
        .collect();
    assert_eq!(thin["layers"], json!(expected), "thin.json layers");

    let config = registry_blob(
        host,
        thin_repository,
        manifest["config"]["digest"].as_str().unwrap(),
    );
    let config: Value = serde_json::from_slice(&config).unwrap();
    let source: Value = serde_json::from_slice(&image.config.bytes).unwrap();
    assert_eq!(config["rootfs"]["diff_ids"], json!([images::sha256(&tar)]));
    assert_eq!(config["architecture"], source["architecture"]);
    assert_eq!(config["variant"], source["variant"]);
    let mut env = source["config"]["Env"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    env.push(json!("CVMFS_IMAGE=true"));
    assert_eq!(config["config"]["Env"], json!(env));
    assert_eq!(config["config"]["Cmd"], source["config"]["Cmd"]);
    assert_eq!(
        config["config"]["Entrypoint"],
        source["config"]["Entrypoint"]
    );
}

// ---------------------------------------------------------------------------------------------
// Layout checks

/// `"../"` once per directory of `path`'s parent.
fn ups(path: &str) -> String {
    "../".repeat(path.split('/').count() - 1)
}

/// The sha256 and size of a layer's uncompressed tar, decompressed from its blob (streaming; the
/// Debian layers are large), computed once per layer.
fn diff_of(layer: &Layer) -> (String, u64) {
    static SEEN: std::sync::Mutex<BTreeMap<String, (String, u64)>> =
        std::sync::Mutex::new(BTreeMap::new());
    if let Some(known) = SEEN.lock().unwrap().get(&layer.blob.digest) {
        return known.clone();
    }
    let bytes = &layer.blob.bytes[..];
    let mut reader: Box<dyn std::io::Read> = if layer.media_type.ends_with("gzip") {
        Box::new(flate2::read::GzDecoder::new(bytes))
    } else if layer.media_type.ends_with("zstd") {
        Box::new(zstd::stream::read::Decoder::new(bytes).unwrap())
    } else {
        Box::new(bytes)
    };
    let mut hasher = HashingSink(<sha2::Sha256 as sha2::Digest>::new(), 0);
    std::io::copy(&mut reader, &mut hasher).unwrap();
    let digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::finalize(hasher.0))
    );
    let known = (digest, hasher.1);
    SEEN.lock()
        .unwrap()
        .insert(layer.blob.digest.clone(), known.clone());
    known
}

/// A writer that hashes and counts what it is given.
struct HashingSink(sha2::Sha256, u64);

impl std::io::Write for HashingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        sha2::Digest::update(&mut self.0, buf);
        self.1 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One converted image of the wish list and what the tests know about it.
struct Case {
    /// `<repository>:<tag>` as in the public link.
    name: String,
    image: Image,
    env: Vec<String>,
    /// Arguments for the runscript, and its expected output without and with them.
    run: (Vec<&'static str>, &'static str, &'static str),
    /// umoci's tree and the paths umoci stamped.
    umoci: (Tree, BTreeSet<String>),
    /// Directories no layer lists (their mtime is the unpacker's choice).
    implicit_dirs: Vec<String>,
}

/// Checks the layer directories, the flat tree, the public link and the marker of `case`.
fn check_layout(repo: &Path, host: &str, case: &Case, origins: &BTreeMap<String, Vec<String>>) {
    let label = &case.name;
    for catalog in [".layers", ".flat"] {
        assert!(
            repo.join(catalog).join(".cvmfscatalog").is_file(),
            "{catalog}"
        );
    }
    for layer in &case.image.layers {
        let dir = layer_dir(repo, layer);
        let h = layer.hex();
        assert!(
            repo.join(".layers")
                .join(&h[..2])
                .join(".cvmfscatalog")
                .is_file()
        );
        assert!(dir.join("layerfs").is_dir(), "{label}: layerfs of {h}");
        // The layer's nested catalog is its own directory, not its layerfs (issue 28).
        let catalog = std::fs::metadata(dir.join(".cvmfscatalog")).unwrap();
        assert!(catalog.is_file() && catalog.len() == 0, "{label}: {h}");
        assert!(!dir.join("layerfs/.cvmfscatalog").exists(), "{label}: {h}");
        let mut listed = origin(repo, layer);
        let mut expected = origins[&layer.blob.digest].clone();
        listed.sort();
        expected.sort();
        assert_eq!(listed, expected, "{label}: origin.json of {h}");
        let info: Value =
            serde_json::from_slice(&std::fs::read(dir.join(".metadata/layers.json")).unwrap())
                .unwrap();
        let (diff_id, diff_size) = diff_of(layer);
        assert_eq!(diff_id, layer.diff_id);
        let info = info.as_array().unwrap();
        assert_eq!(info.len(), 1, "{label}: layers.json of {h}");
        assert_eq!(info[0]["id"], hex(&layer.diff_id), "{label}: {h}");
        assert_eq!(
            info[0]["compressed-diff-digest"],
            layer.blob.digest.as_str()
        );
        assert_eq!(info[0]["diff-digest"], layer.diff_id.as_str());
        assert_eq!(info[0]["diff-size"], diff_size, "{label}: {h}");
        let config: Value = serde_json::from_slice(&case.image.config.bytes).unwrap();
        match config["created"].as_str() {
            Some(created) => assert_eq!(info[0]["created"], created, "{label}: {h}"),
            None => assert!(!info[0]["created"].as_str().unwrap().is_empty()),
        }
    }

    let flat = flat_dir(repo, &case.image);
    let cfg = case.image.config_hex();
    assert!(
        repo.join(".flat")
            .join(&cfg[..2])
            .join(".cvmfscatalog")
            .is_file()
    );
    assert!(flat.join(".cvmfscatalog").is_file(), "{label}");
    let exports =
        std::fs::read_to_string(flat.join(".singularity.d/env/10-docker2singularity.sh")).unwrap();
    let lines: Vec<String> = exports
        .lines()
        .filter(|l| l.starts_with("export "))
        .map(str::to_owned)
        .collect();
    assert_eq!(lines, expected_exports(&case.env), "{label}: {exports}");
    let runscript = flat.join(".singularity.d/runscript");
    let (args, without, with) = &case.run;
    assert_eq!(run_script(&runscript, &[]), *without, "{label}: runscript");
    assert_eq!(
        run_script(&runscript, args),
        *with,
        "{label}: runscript {args:?}"
    );
    let record: Value = serde_json::from_slice(
        &std::fs::read(flat.join(".singularity.d/.ducc-flat.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        record["config"],
        case.image.config.digest.as_str(),
        "{label}"
    );
    let record_layers: Vec<&str> = record["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let image_layers: Vec<&str> = case
        .image
        .layers
        .iter()
        .map(|l| l.blob.digest.as_str())
        .collect();
    assert_eq!(
        record_layers, image_layers,
        "{label}: .ducc-flat.json layers"
    );
    let labels: Value =
        serde_json::from_slice(&std::fs::read(flat.join(".singularity.d/labels.json")).unwrap())
            .unwrap();
    let config: Value = serde_json::from_slice(&case.image.config.bytes).unwrap();
    if let Some(image_labels) = config["config"]["Labels"].as_object() {
        for (k, v) in image_labels {
            assert_eq!(&labels[k], v, "{label}: labels.json");
        }
    }

    let link = format!("{host}/{}", case.name);
    let text = std::fs::read_link(repo.join(&link)).unwrap();
    assert_eq!(
        text,
        PathBuf::from(format!("{}.flat/{}/{cfg}", ups(&link), &cfg[..2])),
        "{label}: public link text"
    );
    assert_eq!(
        std::fs::canonicalize(repo.join(&link)).unwrap(),
        std::fs::canonicalize(&flat).unwrap()
    );
    let marker: Value = serde_json::from_slice(
        &std::fs::read(repo.join(".metadata").join(&link).join("manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        marker["Config"]["Digest"],
        case.image.config.digest.as_str()
    );
    let layers: Vec<&str> = marker["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["Digest"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = case
        .image
        .layers
        .iter()
        .map(|l| l.blob.digest.as_str())
        .collect();
    assert_eq!(layers, expected, "{label}: marker layers");
}

/// The flat tree against umoci, and the overlay of the layer directories against the flat tree.
fn check_trees(repo: &Path, case: &Case, scratch: &Path) {
    let label = &case.name;
    let flat = flat_dir(repo, &case.image);
    let (expected, umoci_chose) = &case.umoci;
    assert!(expected.nodes.len() > 2, "{label}: umoci tree too small");
    let mut actual = Tree::scan(&flat).unwrap();
    strip_apptainer_additions(&mut actual, expected, label);
    let mut options = Options::default();
    options
        .skip_mtime
        .extend(case.implicit_dirs.iter().cloned());
    options.skip_mtime.extend(umoci_chose.iter().cloned());
    // A directory that received a mount point or bind file keeps the image's time: no mtime is
    // skipped for the additions.
    expected.assert_same_as(&actual, &options, "umoci", &format!("{label} flat"));

    // Overlay of the layer directories, bottom first.
    let layers: Vec<PathBuf> = case
        .image
        .layers
        .iter()
        .map(|l| layer_dir(repo, l).join("layerfs"))
        .collect();
    let merged = scratch.join("merged");
    std::fs::create_dir_all(&merged).unwrap();
    let mount = OverlayMount::mount(&layers, &merged)
        .unwrap_or_else(|e| panic!("overlay mount (needs root): {e}"));
    let merged_tree = Tree::scan(&merged).unwrap();
    drop(mount);
    // The layers' nested-catalog markers are beside their layerfs, not in it (issue 28).
    assert!(!merged_tree.nodes.contains_key(".cvmfscatalog"), "{label}");
    // Hardlinks across layers are the one exception (a copy in the upper layer directory);
    // implicit directories' times are compared (issue 14).
    let options = Options {
        hardlinks: false,
        ..Options::default()
    };
    actual.assert_same_as(
        &merged_tree,
        &options,
        &format!("{label} flat minus additions"),
        "overlay of its layer dirs",
    );
}

/// Whiteouts in overlay form (root): `.wh.NAME` is a character device 0/0, `.wh..wh..opq` the
/// xattr `trusted.overlay.opaque=y`.
fn check_overlay_whiteouts(repo: &Path, app: &Image, zstd: &Image) {
    let top = layer_dir(repo, &app.layers[1]).join("layerfs");
    for name in ["etc/os-release", "usr/share/doc/LICENSE"] {
        let meta = std::fs::symlink_metadata(top.join(name)).unwrap();
        assert!(
            std::os::unix::fs::FileTypeExt::is_char_device(&meta.file_type()),
            "{name}"
        );
        assert_eq!(meta.rdev(), 0, "{name}");
    }
    let xattrs = ducc_tests::tree::read_xattrs(&top.join("usr/lib/app")).unwrap();
    assert_eq!(
        xattrs.get("trusted.overlay.opaque").map(Vec::as_slice),
        Some(&b"y"[..])
    );
    assert!(!top.join("usr/lib/app/.wh..wh..opq").exists());
    assert!(!top.join("etc/.wh.os-release").exists());
    let second = layer_dir(repo, &zstd.layers[1]).join("layerfs");
    let meta = std::fs::symlink_metadata(second.join("data/a/b/c/gone")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &meta.file_type()
    ));
}

/// The events of one run: a start and an end, and per image its steps with digests and sizes.
fn check_events(events: &[Value], cases: &[Case], host: &str, missing: &str) {
    assert_eq!(events.first().unwrap()["action"], "start_ducc");
    let end = events.last().unwrap();
    assert_eq!(end["action"], "end_ducc");
    assert_eq!(end["converted"], cases.len());
    assert_eq!(end["failed"], 0);
    let of = |action: &str| -> Vec<&Value> {
        events
            .iter()
            .filter(|e| e["action"] == action)
            .collect::<Vec<_>>()
    };
    let mut downloads: BTreeMap<String, u64> = BTreeMap::new();
    for event in of("layer_download") {
        let previous = downloads.insert(
            event["layer"].as_str().unwrap().to_owned(),
            event["size"].as_u64().unwrap(),
        );
        assert!(previous.is_none(), "downloaded twice: {event}");
    }
    let mut unpacked: BTreeMap<String, u64> = BTreeMap::new();
    for event in of("layer_unpack") {
        let previous = unpacked.insert(
            event["layer"].as_str().unwrap().to_owned(),
            event["diff_size"].as_u64().unwrap(),
        );
        assert!(previous.is_none(), "unpacked twice: {event}");
    }
    let mut all_layers = BTreeMap::new();
    for case in cases {
        let whole = format!("http://{host}/{}", case.name);
        for action in ["start_image", "flat_built", "thin_push"] {
            assert_eq!(
                of(action).iter().filter(|e| e["image"] == whole).count(),
                1,
                "{action} of {whole}"
            );
        }
        let end = of("end_image")
            .into_iter()
            .find(|e| e["image"] == whole)
            .unwrap_or_else(|| panic!("no end_image for {whole}"));
        assert_eq!(end["status"], "ok");
        for layer in &case.image.layers {
            all_layers.insert(layer.blob.digest.clone(), layer.clone());
        }
    }
    assert_eq!(
        downloads.keys().collect::<Vec<_>>(),
        all_layers.keys().collect::<Vec<_>>(),
        "one download per distinct layer"
    );
    for (digest, layer) in &all_layers {
        assert_eq!(downloads[digest], layer.blob.bytes.len() as u64, "{digest}");
        assert_eq!(unpacked[digest], diff_of(layer).1, "{digest}");
    }
    let failed = of("end_image")
        .into_iter()
        .find(|e| e["image"] == missing)
        .unwrap_or_else(|| panic!("no end_image for {missing}"));
    assert_eq!(failed["status"], "error");
    assert_eq!(failed["ignored"], true);
    assert_eq!(failed["step"], "manifest");
}

/// Everything pushed for the headline run: one image of every kind, on a shared base.
struct Pushed {
    debian: fixtures::Image,
    debian_image: Image,
    shared: Layer,
    app: Image,
    app_runtime: Runtime,
    zstd: Image,
    zstd_tars: [Vec<u8>; 2],
    zstd_runtime: Runtime,
    plain: Image,
    amd64: Image,
    arm64: Image,
    globbed: BTreeMap<&'static str, Image>,
}

/// The Debian fixture as an OCI image with gzip layers, pushed byte for byte.
fn push_debian(client: &Client, repo: &Repository) -> (fixtures::Image, Image) {
    let debian = fixtures::image("debian").expect("the debian fixture (debootstrap)");
    push_fixture(client, repo, "bookworm", &debian);
    let image = Image {
        layers: debian
            .layers
            .iter()
            .map(|l| Layer {
                blob: Blob {
                    bytes: std::fs::read(debian.blob_path(&l.digest)).unwrap(),
                    digest: l.digest.clone(),
                },
                media_type: OCI_GZIP,
                diff_id: l.diff_id.clone(),
            })
            .collect(),
        config: Blob::new(std::fs::read(debian.blob_path(&debian.config_digest)).unwrap()),
        manifest: Blob::new(std::fs::read(debian.blob_path(&debian.manifest_digest)).unwrap()),
    };
    (debian, image)
}

/// Pushes one image of every kind under `repo_of(kind)`.
fn push_every_kind(client: &Client, repo_of: &dyn Fn(&str) -> Repository) -> Pushed {
    let (debian, debian_image) = push_debian(client, &repo_of("debian"));

    // A Docker v2s2 image on the shared base.
    let shared = Layer::new(&shared_base_tar(), Compression::Gzip);
    let app_runtime = Runtime {
        arch: "amd64",
        env: vec![
            "PATH=/usr/local/bin:/usr/bin:/bin",
            "APP_HOME=/opt/app",
            "GREETING=hello world",
        ],
        entrypoint: vec!["/bin/echo", "entry"],
        cmd: vec!["default-arg"],
        label: "app".into(),
        ..Runtime::default()
    };
    let app_layers = vec![
        shared.clone(),
        Layer::new(&app_top_tar(), Compression::Gzip),
    ];
    let app = build(Format::Docker, app_layers, &app_runtime);
    push(client, &repo_of("app"), Some("2.1"), &app);

    // zstd layers, no PATH in Env, a Cmd without Entrypoint.
    let zstd_tars = zstd_layers();
    let zstd_runtime = Runtime {
        arch: "amd64",
        env: vec!["LANG=C.UTF-8"],
        cmd: vec!["/bin/echo", "zstd-cmd"],
        label: "zstd".into(),
        ..Runtime::default()
    };
    let zstd_layers = zstd_tars
        .iter()
        .map(|t| Layer::new(t, Compression::Zstd))
        .collect();
    let zstd = build(Format::Oci, zstd_layers, &zstd_runtime);
    push(client, &repo_of("zstd"), Some("1"), &zstd);

    // Uncompressed layers, no Env, no Cmd or Entrypoint.
    let plain_runtime = Runtime {
        arch: "amd64",
        label: "plain".into(),
        ..Runtime::default()
    };
    let plain_layers = plain_layers()
        .iter()
        .map(|t| Layer::new(t, Compression::None))
        .collect();
    let plain = build(Format::Oci, plain_layers, &plain_runtime);
    push(client, &repo_of("plain"), Some("1"), &plain);

    // A multi-arch index: without --multi-arch the linux/amd64 image is converted.
    let arch_image = |arch: &'static str, variant: Option<&'static str>| {
        let runtime = Runtime {
            arch,
            variant,
            env: vec!["PATH=/bin"],
            cmd: vec!["/bin/echo", arch],
            label: format!("multi-{arch}"),
            ..Runtime::default()
        };
        let tar = tar_entries(&[Dir("etc", 0o755), File("etc/arch", arch.as_bytes(), 0o644)]);
        let layers = vec![Layer::new(&tar, Compression::Gzip)];
        (build(Format::Oci, layers, &runtime), runtime)
    };
    let (amd64, amd64_runtime) = arch_image("amd64", None);
    let (arm64, arm64_runtime) = arch_image("arm64", Some("v8"));
    let platforms = [(&amd64, amd64_runtime), (&arm64, arm64_runtime)];
    push_index(client, &repo_of("multi"), "1", &platforms, true, false);

    // A tag glob: 1.0 and 1.1 match `1.*` and share the base with the Docker image; 2.0 does not.
    let mut globbed = BTreeMap::new();
    for tag in ["1.0", "1.1", "2.0"] {
        let runtime = Runtime {
            arch: "amd64",
            env: vec!["PATH=/bin:/usr/bin", "VERSION=1"],
            entrypoint: vec!["/bin/echo"],
            label: format!("glob-{tag}"),
            ..Runtime::default()
        };
        let top: &'static str = format!("version {tag}\n").leak();
        let top = tar_entries(&[
            Dir("etc", 0o755),
            File("etc/version", top.as_bytes(), 0o644),
        ]);
        let layers = vec![shared.clone(), Layer::new(&top, Compression::Gzip)];
        let image = build(Format::Oci, layers, &runtime);
        push(client, &repo_of("glob"), Some(tag), &image);
        globbed.insert(tag, image);
    }
    Pushed {
        debian,
        debian_image,
        shared,
        app,
        app_runtime,
        zstd,
        zstd_tars,
        zstd_runtime,
        plain,
        amd64,
        arm64,
        globbed,
    }
}

/// The headline run, set up once: every kind of image pushed, one wish list converted, each
/// converted image a [`Case`] with umoci's tree of it.
struct FullRun {
    registry: &'static Registry,
    proxy: FaultProxy,
    /// The proxy's `host:port`: the registry name in the wish list and the layout.
    host: String,
    base: String,
    work: Work,
    repo: PathBuf,
    /// The first run's exit code and stderr.
    first: (Option<i32>, String),
    missing: String,
    /// Debian first, then app, zstd, plain, multi (amd64), glob 1.0 and 1.1.
    cases: Vec<Case>,
    origins: BTreeMap<String, Vec<String>>,
    /// Pushed, not converted: the glob's 2.0 and the index's arm64 image.
    glob_2_0: Image,
    arm64: Image,
    scratch: tempfile::TempDir,
    scratch_dirs: std::cell::Cell<usize>,
}

impl FullRun {
    fn convert() -> FullRun {
        let registry = Registry::anonymous();
        let client = images::client_for(registry.host(), None);
        let proxy = FaultProxy::start(registry.host(), Vec::new());
        let host = proxy.host().to_owned();
        let base = unique_repo("full");
        let repo_of = |path: &str| images::repository(registry.host(), &format!("{base}/{path}"));
        let mut pushed = push_every_kind(&client, &repo_of);

        let work = Work::new(Backend::Local);
        let missing = format!("http://{host}/{base}/absent:gone");
        let wished = [
            "debian:bookworm",
            "app:2.1",
            "zstd:1",
            "plain:1",
            "multi:1",
            "glob:1.*",
        ];
        let mut inputs: Vec<String> = wished
            .iter()
            .map(|name| format!("http://{host}/{base}/{name}"))
            .collect();
        inputs.push(missing.clone());
        work.wishlist(&inputs, "ignore_errors: ['*/absent:*']\n");
        let out = work.convert(&["-n", work.path("events.json").to_str().unwrap()]);
        let first = (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );

        let mut run = FullRun {
            registry,
            proxy,
            host,
            repo: work.repo(),
            base,
            work,
            first,
            missing,
            cases: Vec::new(),
            origins: BTreeMap::new(),
            glob_2_0: pushed.globbed.remove("2.0").unwrap(),
            arm64: pushed.arm64.clone(),
            scratch: scratch_dir("convert-full").unwrap(),
            scratch_dirs: std::cell::Cell::new(0),
        };
        run.cases = run.cases_of(pushed);
        run.origins = origins_of(&run.cases);
        run
    }

    /// A fresh scratch directory.
    fn next_scratch(&self) -> PathBuf {
        self.scratch_dirs.set(self.scratch_dirs.get() + 1);
        let dir = self
            .scratch
            .path()
            .join(self.scratch_dirs.get().to_string());
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// umoci's tree of `name` as skopeo copies it from the registry.
    fn umoci_of(&self, name: &str) -> (Tree, BTreeSet<String>) {
        let dir = self.next_scratch();
        let layout = skopeo_to_layout(self.registry.host(), &format!("{}/{name}", self.base), &dir);
        umoci_unpack(&layout, &dir)
    }

    fn cases_of(&self, mut pushed: Pushed) -> Vec<Case> {
        let base = &self.base;
        // Runscripts: without arguments the entrypoint and Cmd run (neither: a shell, which runs
        // what it reads on stdin); with arguments, the entrypoint with them, or the arguments.
        const SHELL: (&[&str], &str, &str) = (
            &["/bin/echo", "shell", "args"],
            "from-the-shell\n",
            "shell args\n",
        );
        let env = |runtime: &Runtime| runtime.env.iter().map(|s| s.to_string()).collect();
        let mut cases = vec![
            Case {
                name: format!("{base}/debian:bookworm"),
                image: pushed.debian_image,
                env: vec![
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                ],
                run: (SHELL.0.to_vec(), SHELL.1, SHELL.2),
                umoci: ducc_tests::tree::umoci_tree(&pushed.debian),
                implicit_dirs: pushed.debian.implicit_dirs.clone(),
            },
            Case {
                name: format!("{base}/app:2.1"),
                umoci: self.umoci_of("app:2.1"),
                image: pushed.app,
                env: env(&pushed.app_runtime),
                run: (vec!["x", "y"], "entry default-arg\n", "entry x y\n"),
                implicit_dirs: vec![],
            },
            Case {
                name: format!("{base}/zstd:1"),
                umoci: {
                    let dir = self.next_scratch();
                    umoci_unpack(
                        &gzip_twin_layout(&pushed.zstd, &pushed.zstd_tars, &dir),
                        &dir,
                    )
                },
                image: pushed.zstd,
                env: env(&pushed.zstd_runtime),
                run: (vec!["/bin/echo", "x"], "zstd-cmd\n", "x\n"),
                implicit_dirs: vec![],
            },
            Case {
                name: format!("{base}/plain:1"),
                umoci: self.umoci_of("plain:1"),
                image: pushed.plain,
                env: vec![],
                run: (SHELL.0.to_vec(), SHELL.1, SHELL.2),
                implicit_dirs: vec![],
            },
            Case {
                name: format!("{base}/multi:1"),
                umoci: self.umoci_of("multi:1"),
                image: pushed.amd64,
                env: vec!["PATH=/bin".into()],
                run: (vec!["/bin/echo", "x"], "amd64\n", "x\n"),
                implicit_dirs: vec![],
            },
        ];
        for tag in ["1.0", "1.1"] {
            cases.push(Case {
                name: format!("{base}/glob:{tag}"),
                umoci: self.umoci_of(&format!("glob:{tag}")),
                image: pushed.globbed.remove(tag).unwrap(),
                env: vec!["PATH=/bin:/usr/bin".into(), "VERSION=1".into()],
                run: (vec!["x", "y"], "\n", "x y\n"),
                implicit_dirs: vec![],
            });
        }
        assert_eq!(
            origins_of(&cases)[&pushed.shared.blob.digest].len(),
            3,
            "the base is shared by three images"
        );
        cases
    }

    /// The flat tree of case `i`.
    fn flat_of(&self, i: usize) -> PathBuf {
        flat_dir(&self.repo, &self.cases[i].image)
    }
}

/// Which configs each layer's origin.json must list.
fn origins_of(cases: &[Case]) -> BTreeMap<String, Vec<String>> {
    let mut origins: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for case in cases {
        for layer in &case.image.layers {
            let list = origins.entry(layer.blob.digest.clone()).or_default();
            if !list.contains(&case.image.config.digest) {
                list.push(case.image.config.digest.clone());
            }
        }
    }
    origins
}

/// The synthetic images (every case but Debian's): layout, umoci trees and overlay stacks.
fn synthetic_images_have_their_layout_and_match_umoci(run: &FullRun) {
    for case in &run.cases[1..] {
        check_layout(&run.repo, &run.host, case, &run.origins);
        check_trees(&run.repo, case, &run.next_scratch());
    }
}

/// The image's own /etc/hosts is kept, the dangling resolv.conf symlink too; images without
/// them get empty files; every mount point is a directory.
fn bind_files_are_kept_or_added_empty_and_mount_points_are_directories(run: &FullRun) {
    let flat_of = |i| run.flat_of(i);
    assert_eq!(
        std::fs::read(flat_of(1).join("etc/hosts")).unwrap(),
        IMAGE_HOSTS
    );
    assert_eq!(
        std::fs::read(flat_of(1).join("etc/resolv.conf")).unwrap(),
        b""
    );
    assert_eq!(
        std::fs::read_link(flat_of(3).join("etc/resolv.conf")).unwrap(),
        PathBuf::from("../run/systemd/resolve/stub-resolv.conf")
    );
    assert_eq!(std::fs::read(flat_of(3).join("etc/hosts")).unwrap(), b"");
    for mount in MOUNT_POINTS {
        for case in &run.cases[1..] {
            let flat = flat_dir(&run.repo, &case.image);
            let meta = std::fs::symlink_metadata(flat.join(mount)).unwrap();
            assert!(meta.is_dir(), "{}: /{mount}", case.name);
        }
    }
}

/// Layer directories hold overlay whiteouts, not `.wh.` files.
fn layer_directories_hold_overlay_whiteouts(run: &FullRun) {
    check_overlay_whiteouts(&run.repo, &run.cases[1].image, &run.cases[2].image);
}

/// The glob's 2.0, the index's arm64 image and the missing image leave nothing; the top of the
/// repository holds the layout's own entries only.
fn images_not_wished_or_missing_leave_nothing(run: &FullRun) {
    let (base, repo, host) = (&run.base, &run.repo, &run.host);
    let not_converted = [
        (format!("{base}/glob:2.0"), &run.glob_2_0),
        (format!("{base}/multi:1-arm64"), &run.arm64),
    ];
    for (name, image) in not_converted {
        assert!(!flat_dir(repo, image).exists(), "{name}");
        let top = layer_dir(repo, image.layers.last().unwrap());
        assert!(!top.exists(), "{name}");
    }
    for name in [format!("{base}/glob:2.0"), format!("{base}/absent:gone")] {
        let link = std::fs::symlink_metadata(repo.join(host).join(&name));
        assert!(link.is_err(), "{name}");
        assert!(!repo.join(".metadata").join(host).join(&name).exists());
    }
    let top: BTreeSet<String> = std::fs::read_dir(repo)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let layout = [
        ".flat",
        ".layers",
        ".metadata",
        "podmanStore",
        host.as_str(),
    ];
    assert_eq!(top, layout.iter().map(|s| s.to_string()).collect());
}

/// One thin image per converted tag, none for the glob's 2.0.
fn each_converted_tag_has_a_thin_image(run: &FullRun) {
    let registry = run.registry.host();
    for case in &run.cases[1..] {
        let (repository, tag) = case.name.split_once(':').unwrap();
        let thin_repository = format!("{repository}_thin");
        let manifest = raw_manifest(registry, &format!("{thin_repository}:{tag}"));
        check_thin_manifest(registry, &thin_repository, &manifest, &case.image);
    }
    let no_thin = format!("{}/glob_thin:2.0", run.base);
    let no_thin = ducc_tests::skopeo::inspect_raw_command(registry, &no_thin, None)
        .output()
        .unwrap();
    assert!(!no_thin.status.success(), "no thin image for 2.0");
}

/// Every image converted, the missing one ignored and named in the summary.
fn the_run_succeeds_and_its_summary_names_the_ignored_image(run: &FullRun) {
    let (code, stderr) = &run.first;
    assert_eq!(*code, Some(0), "{stderr}");
    let summary_at = stderr
        .find("ducc: 7 converted, 0 up to date, 0 failed (1 more ignored by ignore_errors)")
        .unwrap_or_else(|| panic!("summary line: {stderr}"));
    assert!(
        stderr[summary_at..].contains(&format!("{}/absent:gone", run.base)),
        "the summary names the ignored image: {}",
        &stderr[summary_at..]
    );
}

/// The Debian rootfs: layout, umoci, overlay, its own resolv.conf kept, an empty hosts added,
/// its thin image.
fn the_debian_rootfs_converts_like_the_synthetic_images(run: &FullRun) {
    let debian = &run.cases[0];
    check_layout(&run.repo, &run.host, debian, &run.origins);
    check_trees(&run.repo, debian, &run.next_scratch());
    assert_eq!(
        std::fs::read(run.flat_of(0).join("etc/hosts")).unwrap(),
        b""
    );
    let resolv = std::fs::metadata(run.flat_of(0).join("etc/resolv.conf")).unwrap();
    assert!(resolv.len() > 0, "debootstrap's resolv.conf is kept");
    let registry = run.registry.host();
    let thin_repository = format!("{}/debian_thin", run.base);
    let thin = raw_manifest(registry, &format!("{thin_repository}:bookworm"));
    check_thin_manifest(registry, &thin_repository, &thin, &debian.image);
}

/// The events of the run: one per image and step, the missing image's failure.
fn the_events_tell_every_step_of_every_image(run: &FullRun) {
    let events = run.work.events("events.json");
    check_events(&events, &run.cases, &run.host, &run.missing);
}

/// Rerun: one manifest request per image, no blob, nothing changed.
fn a_rerun_requests_no_blob_and_changes_nothing(run: &FullRun) {
    let before = scan(&run.repo);
    run.proxy.clear_requests();
    let out = run.work.convert(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("ducc: 0 converted, 7 up to date, 0 failed"),
        "{stderr}"
    );
    let proxy = &run.proxy;
    assert_eq!(proxy.count("GET", "/blobs/"), 0, "{:?}", proxy.requests());
    assert_eq!(proxy.count("POST", "/blobs/uploads"), 0);
    assert_eq!(proxy.count("PUT", "/"), 0);
    before.assert_same_as(&scan(&run.repo), &run_options(), "first run", "rerun");
}

// ---------------------------------------------------------------------------------------------
// The tests

/// One behaviour of the headline run, checked on it.
type Check = fn(&FullRun);

/// One conversion of every kind of image, then each behaviour checked on it in turn. The
/// behaviours share the set-up in one test: nextest runs every test in a process of its own,
/// and this set-up (a Debian rootfs, seven images, umoci trees of each) is the slowest of the
/// suite, so a test per behaviour would build it once per behaviour.
#[test]
fn one_wish_list_of_every_kind_converts_to_the_whole_layout_and_reruns_as_a_no_op() {
    let run = FullRun::convert();
    // The synthetic images first, so that a failure of the Debian image (checked after them)
    // does not hide what the others show; the exit code after the layouts, for the same reason.
    let behaviours: [(&str, Check); 9] = [
        (
            "synthetic images have their layout and match umoci",
            synthetic_images_have_their_layout_and_match_umoci,
        ),
        (
            "bind files are kept or added empty, mount points are directories",
            bind_files_are_kept_or_added_empty_and_mount_points_are_directories,
        ),
        (
            "layer directories hold overlay whiteouts",
            layer_directories_hold_overlay_whiteouts,
        ),
        (
            "images not wished or missing leave nothing",
            images_not_wished_or_missing_leave_nothing,
        ),
        (
            "each converted tag has a thin image",
            each_converted_tag_has_a_thin_image,
        ),
        (
            "the run succeeds and its summary names the ignored image",
            the_run_succeeds_and_its_summary_names_the_ignored_image,
        ),
        (
            "the Debian rootfs converts like the synthetic images",
            the_debian_rootfs_converts_like_the_synthetic_images,
        ),
        (
            "the events tell every step of every image",
            the_events_tell_every_step_of_every_image,
        ),
        (
            "a rerun requests no blob and changes nothing",
            a_rerun_requests_no_blob_and_changes_nothing,
        ),
    ];
    for (behaviour, check) in behaviours {
        eprintln!("convert-full: {behaviour}");
        check(&run);
    }
}

/// One platform of a multi-arch test index.
struct Platform {
    /// Arch directory name under `.multiarch/`.
    ad: &'static str,
    image: Image,
}

/// An image for one platform of an index: its own small layer and config.
fn platform_image(
    tag: &str,
    arch: &'static str,
    variant: Option<&'static str>,
) -> (Image, Runtime) {
    let runtime = Runtime {
        arch,
        variant,
        env: vec!["PATH=/bin", "ARCH_NAME=set"],
        cmd: vec!["/bin/echo", arch],
        label: format!("{tag}-{arch}-{}", variant.unwrap_or("")),
        ..Runtime::default()
    };
    let content: &'static str = format!("{tag} {arch} {variant:?}\n").leak();
    let tar = tar_entries(&[
        Dir("etc", 0o755),
        File("etc/platform", content.as_bytes(), 0o644),
    ]);
    (
        build(
            Format::Oci,
            vec![Layer::new(&tar, Compression::Gzip)],
            &runtime,
        ),
        runtime,
    )
}

/// Checks the thin index at `<repository>_thin:<tag>`: in the default `--thin-format docker`, a
/// Docker manifest list with one thin Docker manifest per platform, platform fields copied.
fn check_thin_index(host: &str, repository: &str, tag: &str, platforms: &[Platform]) {
    let thin_repository = format!("{repository}_thin");
    let index = raw_manifest(host, &format!("{thin_repository}:{tag}"));
    assert_eq!(
        index["mediaType"], "application/vnd.docker.distribution.manifest.list.v2+json",
        "{index}"
    );
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), platforms.len(), "{index}");
    for platform in platforms {
        let config: Value = serde_json::from_slice(&platform.image.config.bytes).unwrap();
        let entry = entries
            .iter()
            .find(|e| {
                e["platform"]["architecture"] == config["architecture"]
                    && e["platform"]["variant"] == config["variant"]
            })
            .unwrap_or_else(|| panic!("no thin manifest for {}: {index}", platform.ad));
        assert_eq!(entry["platform"]["os"], "linux");
        assert_eq!(
            entry["mediaType"],
            "application/vnd.docker.distribution.manifest.v2+json"
        );
        let digest = entry["digest"].as_str().unwrap();
        let manifest = raw_manifest(host, &format!("{thin_repository}@{digest}"));
        assert_eq!(manifest["mediaType"], entry["mediaType"]);
        check_thin_manifest(host, &thin_repository, &manifest, &platform.image);
    }
}

/// One platform of a converted index: its flat tree, layers, marker and link under
/// `.multiarch/<arch>/`.
fn check_platform(repo: &Path, host: &str, name: &str, platform: &Platform) {
    let image = &platform.image;
    let cfg = image.config_hex();
    let flat = flat_dir(repo, image);
    assert!(
        flat.join(".singularity.d/runscript").is_file(),
        "{name} {}",
        platform.ad
    );
    assert!(flat.join(".cvmfscatalog").is_file());
    let arch = std::fs::read_to_string(flat.join("etc/platform")).unwrap();
    assert!(arch.contains(image_arch(image).as_str()), "{arch}");
    for layer in &image.layers {
        assert!(
            layer_dir(repo, layer)
                .join("layerfs/etc/platform")
                .is_file()
        );
        assert_eq!(origin(repo, layer), vec![image.config.digest.clone()]);
    }
    let marker = repo
        .join(".metadata/.multiarch")
        .join(platform.ad)
        .join(host)
        .join(name)
        .join("manifest.json");
    let marker: Value = serde_json::from_slice(
        &std::fs::read(&marker).unwrap_or_else(|e| panic!("{}: {e}", marker.display())),
    )
    .unwrap();
    assert_eq!(marker["Config"]["Digest"], image.config.digest.as_str());
    let link = format!(".multiarch/{}/{host}/{name}", platform.ad);
    let text = std::fs::read_link(repo.join(&link)).unwrap_or_else(|e| panic!("{link}: {e}"));
    assert_eq!(
        text,
        PathBuf::from(format!("{}.flat/{}/{cfg}", ups(&link), &cfg[..2])),
        "{link}"
    );
    assert_eq!(
        std::fs::canonicalize(repo.join(&link)).unwrap(),
        std::fs::canonicalize(&flat).unwrap()
    );
}

/// `.multiarch/` holds one directory per converted platform (the attestation entry is no
/// platform) and the alias links; the markers hold the same platforms.
fn multiarch_holds_the_platforms_and_their_aliases_only(repo: &Path) {
    let arch_dirs: BTreeMap<String, Option<PathBuf>> = std::fs::read_dir(repo.join(".multiarch"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_link(e.path()).ok(),
            )
        })
        .collect();
    let expected: BTreeMap<String, Option<PathBuf>> = [
        ("amd64", None),
        ("arm64:v8", None),
        ("arm:v7", None),
        ("aarch64", Some("arm64:v8")),
        ("arm64", Some("arm64:v8")),
        ("x86_64", Some("amd64")),
        ("x86-64", Some("amd64")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.map(PathBuf::from)))
    .collect();
    assert_eq!(
        arch_dirs, expected,
        ".multiarch entries (real dirs and aliases)"
    );
    let marker_archs: BTreeSet<String> = std::fs::read_dir(repo.join(".metadata/.multiarch"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        marker_archs,
        ["amd64", "arm64:v8", "arm:v7"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
}

/// A plain image among indexes under `--multi-arch`: the single-image layout, nothing under
/// `.multiarch`, its thin image.
fn plain_image_keeps_the_single_image_layout(
    repo: &Path,
    host: &str,
    registry: &str,
    base: &str,
    plain: &Image,
) {
    let plain_name = format!("{base}/plain:1");
    let cfg = plain.config_hex();
    let public = format!("{host}/{plain_name}");
    assert_eq!(
        std::fs::read_link(repo.join(&public)).unwrap(),
        PathBuf::from(format!("{}.flat/{}/{cfg}", ups(&public), &cfg[..2]))
    );
    let marker: Value = serde_json::from_slice(
        &std::fs::read(repo.join(".metadata").join(&public).join("manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(marker["Config"]["Digest"], plain.config.digest.as_str());
    for ad in ["amd64", "arm64:v8", "arm:v7"] {
        assert!(
            std::fs::symlink_metadata(repo.join(".multiarch").join(ad).join(&public)).is_err(),
            "the plain image is not under .multiarch/{ad}"
        );
    }
    let thin = raw_manifest(registry, &format!("{base}/plain_thin:1"));
    check_thin_manifest(registry, &format!("{base}/plain_thin"), &thin, plain);
}

#[test]
fn multi_arch_index_converts_every_platform_under_multiarch_with_variant_symlink_and_aliases() {
    let registry = Registry::anonymous();
    let client = images::client_for(registry.host(), None);
    let proxy = FaultProxy::start(registry.host(), Vec::new());
    let host = proxy.host().to_owned();
    let base = unique_repo("multiarch");
    let repo_of = |path: &str| images::repository(registry.host(), &format!("{base}/{path}"));

    // An OCI index: amd64, arm64/v8 and a BuildKit attestation (not a platform).
    let (amd64, amd64_rt) = platform_image("tool", "amd64", None);
    let (arm64, arm64_rt) = platform_image("tool", "arm64", Some("v8"));
    push_index(
        &client,
        &repo_of("tool"),
        "1",
        &[(&amd64, amd64_rt), (&arm64, arm64_rt)],
        true,
        false,
    );
    // A Docker manifest list without amd64: arm/v7 first, then arm64/v8.
    let (armv7, armv7_rt) = platform_image("armonly", "arm", Some("v7"));
    let (arm64b, arm64b_rt) = platform_image("armonly", "arm64", Some("v8"));
    push_index(
        &client,
        &repo_of("armonly"),
        "2",
        &[(&armv7, armv7_rt), (&arm64b, arm64b_rt)],
        false,
        true,
    );
    // A plain image: converted exactly as without --multi-arch.
    let (plain, _) = platform_image("plain", "amd64", None);
    push(&client, &repo_of("plain"), Some("1"), &plain);

    let work = Work::new(Backend::Local);
    work.wishlist(
        &[
            format!("http://{host}/{base}/tool:1"),
            format!("http://{host}/{base}/armonly:2"),
            format!("http://{host}/{base}/plain:1"),
        ],
        "",
    );
    let out = work.convert(&["--multi-arch"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let repo = work.repo();

    let indexes = [
        (
            "tool:1",
            "amd64",
            vec![
                Platform {
                    ad: "amd64",
                    image: amd64,
                },
                Platform {
                    ad: "arm64:v8",
                    image: arm64,
                },
            ],
        ),
        (
            "armonly:2",
            "arm:v7",
            vec![
                Platform {
                    ad: "arm:v7",
                    image: armv7,
                },
                Platform {
                    ad: "arm64:v8",
                    image: arm64b,
                },
            ],
        ),
    ];
    for (name, default_ad, platforms) in &indexes {
        let name = format!("{base}/{name}");
        for platform in platforms {
            check_platform(&repo, &host, &name, platform);
        }
        let public = format!("{host}/{name}");
        let text = std::fs::read_link(repo.join(&public)).unwrap();
        assert_eq!(
            text,
            PathBuf::from(format!(
                "{}.multiarch/$(CVMFS_ARCH:-{default_ad})/{host}/{name}",
                ups(&public)
            )),
            "variant symlink of {name}"
        );
        let (repository, tag) = name.split_once(':').unwrap();
        check_thin_index(registry.host(), repository, tag, platforms);
    }

    multiarch_holds_the_platforms_and_their_aliases_only(&repo);

    plain_image_keeps_the_single_image_layout(&repo, &host, registry.host(), &base, &plain);

    // Rerun: every platform's marker is checked, no blob is fetched, nothing changes.
    let before = scan(&repo);
    proxy.clear_requests();
    let out = work.convert(&["--multi-arch"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(proxy.count("GET", "/blobs/"), 0, "{:?}", proxy.requests());
    assert_eq!(proxy.count("PUT", "/"), 0, "{:?}", proxy.requests());
    before.assert_same_as(&scan(&repo), &run_options(), "first run", "rerun");
}

/// `<architecture> Some("<variant>")` or `<architecture> None`, as written into `etc/platform`.
fn image_arch(image: &Image) -> String {
    let config: Value = serde_json::from_slice(&image.config.bytes).unwrap();
    let variant = config["variant"].as_str();
    format!("{} {variant:?}", config["architecture"].as_str().unwrap())
}
