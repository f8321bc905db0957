//! The `cvmfs` publisher against the `cvmfs_server` stand-in: exact command sequences, failures,
//! and one scenario run against both publishers with the trees compared.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ducc_cvmfs::{
    CvmfsOptions, CvmfsPublisher, IngestOptions, Layout, LocalPublisher, OverlaySupport,
    PublicName, PublishError, Publisher, RepoPath, Transaction,
};
use ducc_oci::{ConfigDigest, LayerDigest, RepositoryName};
use ducc_tests::tree::{Options, Tree};

mod standin_support;

use standin_support::{REPO, Stratum0, files_tar};

fn p(s: &str) -> RepoPath {
    RepoPath::new(s).unwrap()
}

fn layer() -> LayerDigest {
    format!("sha256:{}", "ab".repeat(32)).parse().unwrap()
}

fn config() -> ConfigDigest {
    ConfigDigest::from_hex(&"0f".repeat(32)).unwrap()
}

/// A canonical layer tar: a directory, files, a symlink, a hardlink and a whiteout name.
fn layer_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, kind: tar::EntryType, mode: u32, data: &[u8], link: Option<&str>| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_500_000_000);
        h.set_size(data.len() as u64);
        match link {
            Some(target) => b.append_link(&mut h, name, target).unwrap(),
            None => b.append_data(&mut h, name, data).unwrap(),
        }
    };
    add("etc", tar::EntryType::Directory, 0o755, b"", None);
    add("etc/motd", tar::EntryType::Regular, 0o644, b"hello", None);
    add(
        "etc/motd.hard",
        tar::EntryType::Link,
        0o644,
        b"",
        Some("etc/motd"),
    );
    add(
        "etc/link",
        tar::EntryType::Symlink,
        0o777,
        b"",
        Some("motd"),
    );
    add("etc/.wh.removed", tar::EntryType::Regular, 0o644, b"", None);
    add("bin", tar::EntryType::Directory, 0o700, b"", None);
    add("bin/tool", tar::EntryType::Regular, 0o4755, b"#!", None);
    b.into_inner().unwrap()
}

fn hex() -> String {
    "ab".repeat(32)
}

/// Log lines with the staged tar's path (`-t /.../ingest.tar`) written as `-t STAGED`.
fn normalised(lines: Vec<String>) -> Vec<String> {
    lines
        .into_iter()
        .map(|l| {
            let words: Vec<&str> = l.split(' ').collect();
            let mut out = Vec::new();
            let mut i = 0;
            while i < words.len() {
                out.push(words[i].to_owned());
                if words[i] == "-t" && words.get(i + 1).is_some_and(|w| *w != "-") {
                    out.push("STAGED".to_owned());
                    i += 1;
                }
                i += 1;
            }
            out.join(" ")
        })
        .collect()
}

/// Every entry of a published tree owned by 65534 (what ingest invents with `-k`).
fn nobody_owned(root: &Path) -> Vec<String> {
    Tree::scan(root)
        .unwrap()
        .paths_where(|_, node| node.uid == 65534 || node.gid == 65534)
}

/// Ingest options that put a nested catalog at the ingested directory.
fn with_catalog() -> IngestOptions {
    IngestOptions {
        catalog: true,
        ..Default::default()
    }
}

/// Ingests [`layer_tar`] at `path` in `tx` as a nested catalog.
fn ingest_layer_tar(tx: &mut dyn Transaction, path: &RepoPath) {
    ingest(tx, path, &layer_tar(), with_catalog());
}

/// The layout of the repository [`REPO`].
fn layout() -> Layout {
    Layout::of(&RepositoryName::parse(REPO).unwrap())
}

/// Publishes the public link of `name` to the flat tree of `cfg`, in a transaction of its own.
fn publish_link(publisher: &dyn Publisher, layout: &Layout, name: &PublicName, cfg: &ConfigDigest) {
    let link = layout.public_link(name);
    let mut tx = publisher.begin(&link).unwrap();
    tx.symlink(&link, &layout.public_link_target(name, cfg))
        .unwrap();
    tx.commit().unwrap();
}

/// A stand-in stratum 0 (or gateway) and its publisher without mounted writes.
fn stratum(gateway: bool) -> (Stratum0, CvmfsPublisher) {
    let s = Stratum0::new(gateway);
    let publisher = s.publisher(gateway);
    (s, publisher)
}

/// Ingests `tar` at `path` in `tx`, which must succeed.
fn ingest(tx: &mut dyn Transaction, path: &RepoPath, tar: &[u8], options: IngestOptions) {
    tx.ingest_tar(path, &mut &tar[..], options).unwrap();
}

/// Ingests `tar` at `path` in a transaction on `lease` and returns the error that refused it,
/// having checked that the refusal came before any `cvmfs_server` command.
fn refused_ingest(
    s: &Stratum0,
    publisher: &CvmfsPublisher,
    lease: &str,
    path: &str,
    tar: &[u8],
) -> PublishError {
    let start = s.log_len();
    let mut tx = publisher.begin(&p(lease)).unwrap();
    let err = tx
        .ingest_tar(&p(path), &mut &tar[..], IngestOptions::default())
        .expect_err("the ingest is refused");
    drop(tx);
    let log = s.log_since(start);
    assert!(log.is_empty(), "{log:?}");
    err
}

/// What `cvmfs_server list` prints.
fn server_list(s: &Stratum0) -> String {
    let list = std::process::Command::new(s.wrapper())
        .arg("list")
        .output()
        .unwrap();
    String::from_utf8_lossy(&list.stdout).into_owned()
}

/// A layer tar with a root entry `./` of mode 0750 (the image root's mode).
fn layer_tar_with_root() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o750);
    h.set_uid(1000);
    h.set_gid(1000);
    h.set_size(0);
    b.append_data(&mut h, "./", &[][..]).unwrap();
    let mut bytes = b.into_inner().unwrap();
    bytes.truncate(bytes.len() - 1024);
    bytes.extend(layer_tar());
    bytes
}

#[test]
fn a_layer_and_its_metadata_go_in_as_one_ingest_on_the_shard_with_root_owned_dirs() {
    let s = Stratum0::new(false);
    if !ducc_tests::require_root("the test checks owners") {
        return;
    }
    let publisher = s.publisher(false);
    let layout = layout();
    let start = s.log_len();
    let group = publisher.group();
    ducc_cvmfs::ensure_catalog_markers(
        &*group,
        &[layout.layers_root(), layout.layer_shard(&layer())],
    )
    .unwrap();
    group.commit().unwrap();
    let mut tx = publisher.begin(&layout.layer_dir(&layer())).unwrap();
    ingest(
        &mut *tx,
        &layout.layerfs(&layer()),
        &layer_tar_with_root(),
        with_catalog(),
    );
    tx.write_file(&layout.layer_info(&layer()), &mut &b"[]"[..])
        .unwrap();
    tx.write_file(&layout.layer_origin(&layer()), &mut &b"{}"[..])
        .unwrap();
    tx.commit().unwrap();
    let h = hex();
    assert_eq!(
        normalised(s.log_since(start)),
        [
            // Both catalog markers in one group: one ingest.
            "ingest -k -t - -b .layers test.repo",
            "ingest -k -t - -b .layers/ab test.repo",
        ]
    );
    let dir = s.published().join(format!(".layers/ab/{h}"));
    let layerfs = dir.join("layerfs");
    assert_eq!(
        fs::read_to_string(layerfs.join("etc/motd.hard")).unwrap(),
        "hello"
    );
    assert!(layerfs.join(".cvmfscatalog").is_file());
    assert!(layerfs.join("etc/.wh.removed").is_file());
    assert_eq!(
        fs::read_to_string(dir.join(".metadata/layers.json")).unwrap(),
        "[]"
    );
    let owner = |p: &Path| {
        let m = fs::symlink_metadata(p).unwrap();
        (m.mode() & 0o7777, m.uid(), m.gid())
    };
    assert_eq!(
        owner(&layerfs),
        (0o750, 0, 0),
        "the image root's mode, root-owned"
    );
    assert_eq!(owner(&dir), (0o755, 0, 0));
    assert_eq!(owner(&dir.join(".metadata")), (0o755, 0, 0));
    assert_eq!(nobody_owned(&s.published()), Vec::<String>::new());
    // Nothing below is immutable: a later transaction may rewrite the metadata.
    let mut tx = publisher
        .begin(&layout.layer_metadata_dir(&layer()))
        .unwrap();
    tx.write_file(&layout.layer_origin(&layer()), &mut &b"{\"origin\":[]}"[..])
        .unwrap();
    tx.commit().unwrap();
    assert_eq!(
        fs::read_to_string(dir.join(".metadata/origin.json")).unwrap(),
        "{\"origin\":[]}"
    );
}

#[test]
fn with_a_gateway_a_layer_is_one_ingest_whose_lease_parent_exists() {
    let (s, publisher) = stratum(true);
    assert!(matches!(
        publisher.overlay_support(),
        OverlaySupport::No { .. }
    ));
    let layout = layout();
    let start = s.log_len();
    let mut tx = publisher.begin(&layout.layer_dir(&layer())).unwrap();
    ingest_layer_tar(&mut *tx, &layout.layerfs(&layer()));
    tx.commit().unwrap();
    assert_eq!(
        normalised(s.log_since(start)),
        ["ingest -k -t - -b .layers test.repo"]
    );
    assert!(
        s.published()
            .join(format!(".layers/ab/{}/layerfs/etc/motd", hex()))
            .is_file()
    );
}

#[test]
fn a_flat_tree_and_its_public_symlink_are_one_ingest_each_without_invented_dirs() {
    let (s, publisher) = stratum(false);
    assert_eq!(publisher.overlay_support(), OverlaySupport::DevicesOnly);
    let repo = RepositoryName::parse("test.repo/sub").unwrap();
    let layout = Layout::of(&repo);
    let name = PublicName::tagged("reg.io", "library/ubuntu", "22.04").unwrap();
    let cfg = "0f".repeat(32);
    let start = s.log_len();
    let mut tx = publisher.begin(&layout.flat_image(&config())).unwrap();
    ingest_layer_tar(&mut *tx, &layout.flat_image(&config()));
    tx.write_file(&layout.flat_complete_record(&config()), &mut &b"{}"[..])
        .unwrap();
    tx.commit().unwrap();
    publish_link(&publisher, &layout, &name, &config());
    assert_eq!(
        normalised(s.log_since(start)),
        [
            "ingest -k -t - -b sub test.repo",
            "ingest -k -t - -b sub/reg.io test.repo",
        ]
    );
    let published_link = s.published().join("sub/reg.io/library/ubuntu:22.04");
    assert_eq!(
        fs::read_link(&published_link).unwrap(),
        PathBuf::from(format!("../../.flat/0f/{cfg}"))
    );
    assert_eq!(
        fs::read_to_string(published_link.join("etc/motd")).unwrap(),
        "hello"
    );
    assert!(
        published_link
            .join(".singularity.d/.ducc-flat.json")
            .is_file()
    );
    if ducc_oci::is_root() {
        assert_eq!(nobody_owned(&s.published()), Vec::<String>::new());
        let flat = s.published().join(format!("sub/.flat/0f/{cfg}"));
        assert_eq!(fs::metadata(&flat).unwrap().uid(), 0);
    }
}

#[test]
fn a_symlink_is_replaced_in_place_and_removes_go_through_ingest_delete_first() {
    let (s, publisher) = stratum(false);
    let mut tx = publisher.begin(&p("links")).unwrap();
    tx.symlink(&p("links/current"), Path::new("v1")).unwrap();
    tx.write_file(&p("links/old"), &mut &b"x"[..]).unwrap();
    tx.commit().unwrap();
    let start = s.log_len();
    let mut tx = publisher.begin(&p("links")).unwrap();
    tx.symlink(&p("links/current"), Path::new("v2")).unwrap();
    tx.remove(&p("links/old")).unwrap();
    tx.remove(&p("links/never-there")).unwrap();
    tx.commit().unwrap();
    assert_eq!(
        normalised(s.log_since(start)),
        [
            "ingest --delete links/old test.repo",
            "ingest -k -t STAGED -b links test.repo"
        ]
    );
    assert_eq!(
        fs::read_link(s.published().join("links/current")).unwrap(),
        Path::new("v2")
    );
    assert!(!s.published().join("links/old").exists());
}

#[test]
fn a_file_below_a_published_file_is_refused_its_streamed_ingest_killed_and_nothing_published() {
    let (s, publisher) = stratum(false);
    let mut tx = publisher.begin(&p("x/y")).unwrap();
    tx.write_file(&p("x/y/file"), &mut &b"f"[..]).unwrap();
    tx.commit().unwrap();
    let start = s.log_len();
    let mut tx = publisher.begin(&p("x/y")).unwrap();
    tx.write_file(&p("x/y/ok"), &mut &b"1"[..]).unwrap();
    tx.write_file(&p("x/y/file/below"), &mut &b"2"[..]).unwrap();
    match tx.commit() {
        Err(PublishError::NotADirectory { path }) => assert_eq!(path.as_str(), "x/y/file"),
        other => panic!("{other:?}"),
    }
    // Found while the tar streamed into the ingest: never ended by closing its input (it could
    // stop at an entry boundary), the ingest is killed (before or after it logged its call and
    // opened its transaction) and a transaction it left open aborted.
    let log = s.log_since(start);
    let allowed = [
        "ingest -k -t - -b x test.repo",
        "list",
        "abort -f test.repo",
    ];
    assert!(log.iter().all(|l| allowed.contains(&l.as_str())), "{log:?}");
    assert!(log.iter().any(|l| l == "list"), "{log:?}");
    assert!(!server_list(&s).contains("in transaction"));
    assert!(
        !s.published().join("x/y/ok").exists(),
        "nothing of it was published"
    );
}

#[test]
fn a_failing_ingest_returns_its_stderr_publishes_nothing_and_leaves_no_transaction() {
    let (s, publisher) = stratum(false);
    s.fail_next("ingest", "signing the manifest failed");
    let start = s.log_len();
    let mut tx = publisher.begin(&p("y/z")).unwrap();
    tx.write_file(&p("y/z/f"), &mut &b"1"[..]).unwrap();
    let err = tx.commit().unwrap_err();
    match &err {
        PublishError::Command {
            command, stderr, ..
        } => {
            assert!(command.contains("cvmfs_server ingest -k -t "), "{command}");
            assert_eq!(stderr, "signing the manifest failed");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string()
            .ends_with("failed (exit status: 1): signing the manifest failed"),
        "{err}"
    );
    assert_eq!(
        normalised(s.log_since(start)),
        ["ingest -k -t - -b y test.repo", "list"]
    );
    assert!(!s.published().join("y").exists());
    assert_eq!(server_list(&s), "test.repo (stratum0 / local)\n");
}

#[test]
fn a_tar_with_a_path_twice_is_refused_before_any_command() {
    let (s, publisher) = stratum(false);
    let mut duplicate = tar::Builder::new(Vec::new());
    for content in [&b"1"[..], &b"2"[..]] {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(1);
        duplicate.append_data(&mut h, "same", content).unwrap();
    }
    let tar = duplicate.into_inner().unwrap();
    match refused_ingest(&s, &publisher, "z/layer", "z/layer", &tar) {
        e @ PublishError::Tar { .. } => {
            assert!(format!("{:?}", e).contains("appears twice"), "{e:?}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_transaction_that_staged_nothing_runs_no_command() {
    let (s, publisher) = stratum(false);
    let start = s.log_len();
    let tx = publisher.begin(&p("n/o")).unwrap();
    tx.commit().unwrap();
    let mut tx = publisher.begin(&p("n/o")).unwrap();
    tx.remove(&p("n/o/missing")).unwrap();
    tx.commit().unwrap();
    assert!(s.log_since(start).is_empty());
}

#[test]
fn dropping_a_transaction_discards_staged_writes_without_commands() {
    let (s, publisher) = stratum(false);
    let start = s.log_len();
    let mut tx = publisher.begin(&p("w")).unwrap();
    tx.write_file(&p("w/f"), &mut &b"1"[..]).unwrap();
    drop(tx);
    assert!(s.log_since(start).is_empty());
    assert!(!s.published().join("w").exists());
}

#[test]
fn ingesting_onto_a_published_path_or_outside_the_lease_is_refused() {
    let (s, publisher) = stratum(false);
    let mut tx = publisher.begin(&p("d")).unwrap();
    ingest(
        &mut *tx,
        &p("d/layer"),
        &layer_tar(),
        IngestOptions::default(),
    );
    let start = s.log_len();
    assert!(matches!(
        tx.ingest_tar(
            &p("d/layer"),
            &mut &layer_tar()[..],
            IngestOptions::default()
        ),
        Err(PublishError::AlreadyExists { .. })
    ));
    assert!(matches!(
        tx.ingest_tar(
            &p("e/layer"),
            &mut &layer_tar()[..],
            IngestOptions::default()
        ),
        Err(PublishError::OutsideLease { .. })
    ));
    assert!(s.log_since(start).is_empty());
}

#[test]
fn a_repository_missing_from_the_list_is_refused() {
    let s = Stratum0::new(false);
    let options = CvmfsOptions::new()
        .server(s.wrapper())
        .mount_dir(s.dir.path().join("state/mnt"))
        .state_dir(s.dir.path().join("ducc-state"));
    match CvmfsPublisher::open(&RepositoryName::parse("other.repo").unwrap(), options) {
        Err(e @ PublishError::NoSuchRepository { .. }) => {
            assert_eq!(
                e.to_string(),
                "repository other.repo does not exist on this stratum 0 (not in `cvmfs_server list`)"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_missing_cvmfs_server_binary_is_a_spawn_error() {
    let dir = tempfile::tempdir().unwrap();
    let options = CvmfsOptions::new()
        .server(dir.path().join("no-such-binary"))
        .state_dir(dir.path().join("state"));
    match CvmfsPublisher::open(&RepositoryName::parse(REPO).unwrap(), options) {
        Err(PublishError::Spawn { command, .. }) => {
            assert!(command.ends_with("no-such-binary list"))
        }
        other => panic!("{other:?}"),
    }
}

/// What two publishers' trees are compared on: paths, types, modes, content and symlink
/// targets, `.cvmfscatalog` included; not owners, times or hardlinks.
fn publishers_options() -> Options {
    Options {
        owners: false,
        mtimes: false,
        hardlinks: false,
        ..Options::default()
    }
}

/// The same conversion-like scenario through any publisher.
fn scenario(publisher: &dyn Publisher) {
    let layout = layout();
    let mut tx = publisher.begin(&layout.layer_dir(&layer())).unwrap();
    ingest_layer_tar(&mut *tx, &layout.layerfs(&layer()));
    tx.write_file(&layout.layer_info(&layer()), &mut &b"[]"[..])
        .unwrap();
    tx.commit().unwrap();
    let mut tx = publisher.begin(&layout.flat_shard(&config())).unwrap();
    ingest_layer_tar(&mut *tx, &layout.flat_image(&config()));
    tx.commit().unwrap();
    let name = PublicName::tagged("reg.io", "library/ubuntu", "22.04").unwrap();
    publish_link(publisher, &layout, &name, &config());
    let link = layout.public_link(&name);
    // Replace the layer: remove, then ingest again.
    let mut tx = publisher.begin(&layout.layer_dir(&layer())).unwrap();
    tx.remove(&layout.layerfs(&layer())).unwrap();
    ingest_layer_tar(&mut *tx, &layout.layerfs(&layer()));
    tx.commit().unwrap();
    // An aborted change leaves no trace (in the cvmfs publisher: a staged write).
    let mut tx = publisher.begin(&link).unwrap();
    tx.symlink(&link, Path::new("elsewhere")).unwrap();
    tx.abort().unwrap();
}

#[test]
fn local_and_cvmfs_publishers_produce_the_same_tree() {
    let s = Stratum0::new(false);
    scenario(&s.publisher(false));
    let root = tempfile::tempdir().unwrap();
    let local = LocalPublisher::open(root.path(), &RepositoryName::parse(REPO).unwrap()).unwrap();
    scenario(&local);
    let cvmfs_tree = Tree::scan(&s.published()).unwrap();
    let local_tree = Tree::scan(local.repository_dir()).unwrap();
    assert!(cvmfs_tree.nodes.contains_key("reg.io/library/ubuntu:22.04"));
    local_tree.assert_same_as(&cvmfs_tree, &publishers_options(), "local", "cvmfs");
}

/// A layer in overlay form: many files (so the stream passes in several chunks), then a
/// directory carrying `trusted.overlay.opaque` (PAX, as ducc-unpack writes it) or a whiteout
/// device.
fn overlay_tar(opaque: bool) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..32 {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(512);
        b.append_data(&mut h, format!("f{i:02}"), &[b'x'; 512][..])
            .unwrap();
    }
    let mut h = tar::Header::new_ustar();
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(0);
    if opaque {
        b.append_pax_extensions([("SCHILY.xattr.trusted.overlay.opaque", &b"y"[..])])
            .unwrap();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        b.append_data(&mut h, "opaque", &[][..]).unwrap();
    } else {
        h.set_entry_type(tar::EntryType::Char);
        h.set_mode(0);
        h.set_device_major(0).unwrap();
        h.set_device_minor(0).unwrap();
        b.append_data(&mut h, "gone", &[][..]).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn what_ingest_would_silently_drop_fails_the_ingest_and_publishes_nothing() {
    // (gateway, opaque): an opaque directory anywhere; a whiteout device behind a gateway.
    for (gateway, opaque, what) in [
        (false, true, "opaque directory"),
        (true, true, "opaque directory"),
        (true, false, "device file"),
    ] {
        let (s, publisher) = stratum(gateway);
        // Stopped while staging: no command ran at all.
        match refused_ingest(&s, &publisher, "l", "l/layerfs", &overlay_tar(opaque)) {
            e @ PublishError::WouldDrop { .. } => {
                assert!(
                    e.to_string().starts_with("cannot ingest l/layerfs: "),
                    "{e}"
                );
                assert!(e.to_string().contains(what), "{e}");
                // Issue 30: the advice never names a setting already in effect (raw `.wh.`
                // whiteouts are the only form behind a gateway).
                assert_eq!(
                    e.to_string().contains("--layer-whiteouts oci"),
                    opaque && !gateway,
                    "{e}"
                );
                assert_eq!(e.to_string().contains("raw .wh. whiteouts"), opaque, "{e}");
            }
            other => panic!("gateway {gateway}: {other:?}"),
        }
        assert!(
            !s.published().join("l/layerfs").exists(),
            "gateway {gateway}"
        );
        assert!(!server_list(&s).contains("in transaction"));
    }
}

#[test]
fn whiteout_devices_are_ingested_on_a_stratum_0() {
    if !ducc_tests::require_root("the stand-in needs root to create device files") {
        return;
    }
    let (s, publisher) = stratum(false);
    let mut tx = publisher.begin(&p("l")).unwrap();
    ingest(
        &mut *tx,
        &p("l/layerfs"),
        &overlay_tar(false),
        IngestOptions::default(),
    );
    tx.commit().unwrap();
    assert!(s.published().join("l/layerfs/f31").is_file());
}

/// An image as a conversion leaves it, written through `publisher`: layers with origin, flat tree
/// and its record, public link, marker.
fn lifecycle_image(
    publisher: &dyn Publisher,
    tag: &str,
    cfg: &ConfigDigest,
    layers: &[LayerDigest],
) {
    let layout = layout();
    let put = |path: RepoPath, content: &[u8]| {
        let mut tx = publisher.begin(&path).unwrap();
        tx.write_file(&path, &mut &content[..]).unwrap();
        tx.commit().unwrap();
    };
    for layer in layers {
        if !publisher.published_path(&layout.layer_info(layer)).exists() {
            let mut tx = publisher.begin(&layout.layer_dir(layer)).unwrap();
            let bytes = files_tar(&[("etc/f", b"abc")]);
            ingest(&mut *tx, &layout.layerfs(layer), &bytes, with_catalog());
            tx.write_file(&layout.layer_info(layer), &mut &b"[]"[..])
                .unwrap();
            tx.commit().unwrap();
        }
        let group = publisher.group();
        ducc_cvmfs::add_origin(&*group, &layout, layer, cfg).unwrap();
        group.commit().unwrap();
    }
    let record = ducc_cvmfs::FlatRecord {
        config: *cfg,
        layers: layers.to_vec(),
        tree_bytes: None,
    };
    put(layout.flat_complete_record(cfg), &record.to_json());
    let name = PublicName::tagged("reg.io", "lib/app", tag).unwrap();
    publish_link(publisher, &layout, &name, cfg);
    let marker = serde_json::json!({
        "SchemaVersion": 2,
        "Config": {"Digest": cfg.to_string()},
        "Layers": layers.iter().map(|l| serde_json::json!({"Digest": l.to_string()})).collect::<Vec<_>>(),
    });
    put(layout.marker_manifest(&name), marker.to_string().as_bytes());
}

#[test]
fn gc_through_a_gateway_deletes_one_path_per_call_and_whole_shards_as_one() {
    use ducc_cvmfs::lifecycle::{
        GcOptions, Inventory, collect_garbage, delete_images, plan_delete,
    };
    for gateway in [false, true] {
        let (s, publisher) = stratum(gateway);
        let layout = layout();
        let digest = |prefix: &str| {
            let hex = format!("{prefix}{}", "0".repeat(64 - prefix.len()));
            LayerDigest::from_hex(&hex).unwrap()
        };
        // Shard `aa` holds two layers of the deleted image only; shard `bb` one of each.
        let (a1, a2, shared, kept) = (digest("aa"), digest("aa01"), digest("bb"), digest("bb02"));
        let gone = ConfigDigest::from_hex(&"c1".repeat(32)).unwrap();
        let live = ConfigDigest::from_hex(&"c2".repeat(32)).unwrap();
        lifecycle_image(&publisher, "gone", &gone, &[a1, a2, shared]);
        lifecycle_image(&publisher, "live", &live, &[shared, kept]);
        let inventory = Inventory::read(&publisher, &layout).unwrap();
        let name = PublicName::tagged("reg.io", "lib/app", "gone").unwrap();
        let plan = plan_delete(&inventory, &[name]);
        delete_images(&publisher, &layout, &plan.images, &mut |_| {}).unwrap();

        let from = s.log_since(0).len();
        let options = GcOptions::new(std::time::Duration::ZERO);
        let report = collect_garbage(&publisher, &layout, &options, &mut |_| {}).unwrap();
        assert_eq!(report.removed.len(), 3, "{report:?}"); // two layers and the flat tree
        let log = s.log_since(from);
        let deletes: Vec<&String> = log.iter().filter(|l| l.contains("--delete")).collect();
        let paths: usize = deletes.iter().map(|l| l.matches("--delete").count()).sum();
        if gateway {
            assert!(
                deletes.iter().all(|l| l.matches("--delete").count() == 1),
                "{log:#?}"
            );
        }
        // The shard of the two gone layers is one path; the flat tree's shard another.
        assert!(
            deletes.iter().any(|l| l.contains("--delete .layers/aa ")),
            "{log:#?}"
        );
        assert_eq!(paths, 2, "{log:#?}");
        let published = s.published();
        assert!(!published.join(".layers/aa").exists());
        let shared_dir = published.join(".layers/bb").join(shared.hex());
        assert!(shared_dir.join("layerfs/etc/f").is_file());
        let origin = fs::read_to_string(shared_dir.join(".metadata/origin.json")).unwrap();
        assert!(
            !origin.contains(&gone.hex()) && origin.contains(&live.hex()),
            "{origin}"
        );
    }
}

#[test]
fn removals_on_a_stratum_0_go_in_batches_of_200_paths_per_delete() {
    let (s, publisher) = stratum(false);
    let dir = RepoPath::new("many/d").unwrap();
    let names: Vec<String> = (0..450).map(|i| format!("f{i:03}")).collect();
    let files: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
    let bytes = files_tar(&files);
    let mut tx = publisher.begin(&dir).unwrap();
    ingest(&mut *tx, &dir, &bytes, IngestOptions::default());
    tx.commit().unwrap();
    let from = s.log_since(0).len();
    let mut tx = publisher.begin(&dir).unwrap();
    for i in 0..450 {
        tx.remove(&dir.join(format!("f{i:03}")).unwrap()).unwrap();
    }
    tx.commit().unwrap();
    let log = s.log_since(from);
    let counts: Vec<usize> = log
        .iter()
        .filter(|l| l.contains("--delete"))
        .map(|l| l.matches("--delete").count())
        .collect();
    assert_eq!(counts, [200, 200, 50], "{log:#?}");
    assert_eq!(
        fs::read_dir(s.published().join("many/d")).unwrap().count(),
        0
    );
}

/// Issue 30: behind a gateway the tree is written without device files and FIFOs (the gateway
/// would drop them without a word); a stratum 0 stores them.
#[test]
fn a_gateway_asks_the_fill_to_leave_special_files_out_and_a_stratum_0_does_not() {
    for gateway in [false, true] {
        let (s, publisher) = stratum(gateway);
        let mut tx = publisher.begin(&p("l")).unwrap();
        let mut asked = None;
        tx.fill_dir(
            &p("l/layerfs"),
            IngestOptions::default(),
            &mut |dest, hints| {
                asked = Some(hints.leave_out_special_files);
                std::fs::write(dest.join("f"), b"x")?;
                Ok(())
            },
        )
        .unwrap();
        tx.commit().unwrap();
        assert_eq!(asked, Some(gateway), "gateway {gateway}");
        assert!(s.published().join("l/layerfs/f").is_file());
    }
}

/// Names that are bytes, not text: a file named in Latin-1, a 300-byte path (a PAX `path` record
/// in ducc-unpack's tar output), a symlink whose target is not UTF-8 and a hardlink to the
/// Latin-1 file.
const LATIN1: &[u8] = b"caf\xe9";

fn long_path() -> Vec<u8> {
    let mut path = vec![b'd'; 150];
    path.push(b'/');
    path.extend(vec![b'n'; 149]);
    assert_eq!(path.len(), 300);
    path
}

fn byte_names_tar() -> Vec<u8> {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let mut b = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(size);
        h
    };
    let path = |bytes: &[u8]| Path::new(OsStr::from_bytes(bytes)).to_owned();
    let mut h = header(tar::EntryType::Regular, 6);
    b.append_data(&mut h, path(LATIN1), &b"latin1"[..]).unwrap();
    let long = long_path();
    let mut h = header(tar::EntryType::Directory, 0);
    b.append_data(&mut h, path(&long[..150]), &[][..]).unwrap();
    let mut h = header(tar::EntryType::Regular, 4);
    b.append_data(&mut h, path(&long), &b"long"[..]).unwrap();
    let mut h = header(tar::EntryType::Symlink, 0);
    b.append_link(&mut h, "link", path(b"caf\xe9/../caf\xe9"))
        .unwrap();
    let mut h = header(tar::EntryType::Link, 0);
    b.append_link(&mut h, path(b"hard-\xff"), path(LATIN1))
        .unwrap();
    b.into_inner().unwrap()
}

/// Issue 28: a layer's names reach its `layerfs` and the flat tree byte for byte (they were
/// restaged as text, a non-UTF-8 name becoming U+FFFD).
#[test]
fn non_utf8_and_300_byte_names_are_published_byte_exact_in_layerfs_and_flat() {
    let (s, publisher) = stratum(false);
    let layout = layout();
    let tar = byte_names_tar();
    let mut tx = publisher.begin(&layout.layer_dir(&layer())).unwrap();
    ingest(
        &mut *tx,
        &layout.layerfs(&layer()),
        &tar,
        IngestOptions::default(),
    );
    tx.commit().unwrap();
    let mut tx = publisher.begin(&layout.flat_shard(&config())).unwrap();
    tx.fill_dir(
        &layout.flat_image(&config()),
        IngestOptions::default(),
        &mut |dir, _| {
            let mut flat =
                ducc_unpack::FlatExtractor::new(dir, &ducc_unpack::ExtractOptions::new())?;
            flat.apply_layer(&tar[..], "byte names")?;
            flat.finish();
            Ok(())
        },
    )
    .unwrap();
    tx.commit().unwrap();

    let long = long_path();
    let names: [&[u8]; 5] = [LATIN1, &long[..150], &long, b"link", b"hard-\xff"];
    let mut expected: std::collections::BTreeSet<Vec<u8>> =
        names.iter().map(|n| n.to_vec()).collect();
    expected.insert(Vec::new());
    let published = s.published();
    for dir in [layout.layerfs(&layer()), layout.flat_image(&config())] {
        let tree = Tree::scan(&published.join(dir.as_path())).unwrap();
        assert_eq!(tree.raw_paths, expected, "{dir}");
        let node = |name: &[u8]| &tree.nodes[String::from_utf8_lossy(name).as_ref()];
        let sha256 = |data: &[u8]| Some(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(data)));
        assert_eq!(node(LATIN1).content, sha256(b"latin1"), "{dir}");
        assert_eq!(node(b"hard-\xff").content, sha256(b"latin1"), "{dir}");
        assert_eq!(node(&long).content, sha256(b"long"), "{dir}");
        assert_eq!(
            node(b"link").link_target.as_deref(),
            Some(&b"caf\xe9/../caf\xe9"[..]),
            "{dir}"
        );
    }
}

/// The stream given to a transaction goes through ducc-unpack's reader: a name that leaves the
/// tree is refused there, before anything is staged or run.
#[test]
fn a_tar_entry_that_leaves_the_tree_is_refused_by_the_reader_before_any_command() {
    let (s, publisher) = stratum(false);
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    let name = b"../escape";
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_mode(0o644);
    h.set_size(1);
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    let tar = b.into_inner().unwrap();
    match refused_ingest(&s, &publisher, "e/layer", "e/layer", &tar) {
        PublishError::Unpack {
            source: ducc_unpack::Error::InvalidEntry { entry, .. },
            ..
        } => assert_eq!(entry, "../escape"),
        other => panic!("{other:?}"),
    }
    assert!(!s.published().join("escape").exists());
}

/// Issue 24: commits a transaction with one file `DIR/data` into `group`, on lease `DIR`.
fn stream_file(group: &dyn ducc_cvmfs::Group, dir: &str, data: &[u8]) {
    let mut tx = group.begin(&p(dir)).unwrap();
    tx.write_file(&p(&format!("{dir}/data")), &mut &data[..])
        .unwrap();
    tx.commit().unwrap();
}

/// Issue 24: commits a transaction with a tree `DIR/tree` holding one file `data` into
/// `group`, on lease `DIR` (a layer's shape: what opens a streaming group's ingest).
fn stream_tree(group: &dyn ducc_cvmfs::Group, dir: &str, data: &[u8]) {
    let mut tx = group.begin(&p(dir)).unwrap();
    let tar = files_tar(&[("data", data)]);
    ingest(
        &mut *tx,
        &p(&format!("{dir}/tree")),
        &tar,
        IngestOptions::default(),
    );
    tx.commit().unwrap();
}

/// The stand-in's log holds a line starting with `prefix` (waited for: the call runs beside).
fn wait_for_call(s: &Stratum0, from: usize, prefix: &str) {
    ducc_tests::wait::until(
        &format!("a stand-in call {prefix}"),
        ducc_tests::wait::DEADLINE,
        || s.log_since(from).iter().any(|l| l.starts_with(prefix)),
    );
}

#[test]
fn a_streaming_group_ingests_as_its_transactions_commit_and_publishes_them_at_its_commit() {
    let (s, publisher) = stratum(false);
    let start = s.log_len();
    let leases = [p("st/aa/one"), p("st/bb/two")];
    let group = publisher.streaming_group(&leases);
    stream_tree(&*group, "st/aa/one", b"1");
    // The ingest runs while the group is open; its tar is not ended, so nothing is in.
    wait_for_call(&s, start, "ingest -k -t - -b st ");
    assert!(!s.published().join("st").exists());
    stream_tree(&*group, "st/bb/two", b"2");
    let published = group.commit().unwrap();
    assert_eq!(published.revisions, 1);
    assert_eq!(s.log_since(start), ["ingest -k -t - -b st test.repo"]);
    assert_eq!(
        fs::read(s.published().join("st/aa/one/tree/data")).unwrap(),
        b"1"
    );
    assert_eq!(
        fs::read(s.published().join("st/bb/two/tree/data")).unwrap(),
        b"2"
    );
}

#[test]
fn a_dropped_streaming_group_kills_its_ingest_and_publishes_nothing() {
    let (s, publisher) = stratum(false);
    let start = s.log_len();
    let group = publisher.streaming_group(&[p("gone/x")]);
    stream_tree(&*group, "gone/x", b"x");
    wait_for_call(&s, start, "ingest -k -t - -b gone ");
    drop(group);
    assert!(!s.published().join("gone").exists());
    assert!(!server_list(&s).contains("in transaction"));
    let log = s.log_since(start);
    assert_eq!(log[0], "ingest -k -t - -b gone test.repo");
    assert!(
        log[1..]
            .iter()
            .all(|l| l == "list" || l == "abort -f test.repo"),
        "{log:?}"
    );
    // The next transaction is not held off.
    let mut tx = publisher.begin(&p("after")).unwrap();
    tx.write_file(&p("after/f"), &mut &b"f"[..]).unwrap();
    tx.commit().unwrap();
    assert!(s.published().join("after/f").exists());
}

#[test]
fn another_publish_ends_a_streaming_groups_ingest_first_and_a_later_unit_opens_another() {
    let (s, publisher) = stratum(false);
    let start = s.log_len();
    let group = publisher.streaming_group(&[p("early/a"), p("early/b")]);
    stream_tree(&*group, "early/a", b"a");
    wait_for_call(&s, start, "ingest -k -t - -b early ");
    let mut tx = publisher.begin(&p("other")).unwrap();
    tx.write_file(&p("other/f"), &mut &b"o"[..]).unwrap();
    tx.commit().unwrap();
    assert_eq!(
        fs::read(s.published().join("early/a/tree/data")).unwrap(),
        b"a",
        "what the group had streamed went in first"
    );
    stream_tree(&*group, "early/b", b"b");
    let published = group.commit().unwrap();
    assert_eq!(published.revisions, 2);
    assert_eq!(
        normalised(s.log_since(start)),
        [
            "ingest -k -t - -b early test.repo",
            "ingest -k -t - -b other test.repo",
            "ingest -k -t - -b early test.repo"
        ]
    );
    assert_eq!(
        fs::read(s.published().join("early/b/tree/data")).unwrap(),
        b"b"
    );
}

#[test]
fn a_streaming_group_whose_ingest_fails_returns_its_error_and_publishes_nothing() {
    let (s, publisher) = stratum(false);
    s.fail_next("ingest", "the spool is full");
    let group = publisher.streaming_group(&[p("fails/x"), p("fails/y")]);
    let mut tx = group.begin(&p("fails/x")).unwrap();
    tx.write_file(&p("fails/x/data"), &mut &b"x"[..]).unwrap();
    // The failed ingest shows at a later commit into the group, or at the group's own.
    let err = tx
        .commit()
        .and_then(|()| {
            let mut tx = group.begin(&p("fails/y"))?;
            tx.write_file(&p("fails/y/data"), &mut &b"y"[..])?;
            tx.commit()
        })
        .and_then(|()| group.commit().map(|_| ()))
        .unwrap_err();
    match &err {
        PublishError::Command { stderr, .. } => assert_eq!(stderr, "the spool is full"),
        other => panic!("{other:?}"),
    }
    assert!(!s.published().join("fails").exists());
    assert!(!server_list(&s).contains("in transaction"));
}

#[test]
fn behind_a_gateway_a_streaming_group_is_a_group() {
    let (s, publisher) = stratum(true);
    let start = s.log_len();
    let group = publisher.streaming_group(&[p("gw/a")]);
    stream_file(&*group, "gw/a", b"a");
    assert!(
        s.log_since(start).is_empty(),
        "nothing runs before the commit"
    );
    group.commit().unwrap();
    assert_eq!(
        normalised(s.log_since(start)),
        ["ingest -k -t - -b gw test.repo"]
    );
}

#[test]
fn a_streaming_group_holds_small_files_back_until_its_first_tree_and_streams_them_first() {
    let (s, publisher) = stratum(false);
    let start = s.log_len();
    // A catalog marker, then nothing more: dropped, no ingest was ever started (a kill would
    // have been followed by a `list` for its transaction).
    let group = publisher.streaming_group(&[p("held/aa/one")]);
    stream_file(&*group, "held/aa", b"marker");
    drop(group);
    assert!(s.log_since(start).is_empty(), "{:?}", s.log_since(start));
    // The same, then a tree: one ingest holds both, the held unit first.
    let group = publisher.streaming_group(&[p("held/aa/one")]);
    stream_file(&*group, "held/aa", b"marker");
    stream_tree(&*group, "held/aa/one", b"tree");
    wait_for_call(&s, start, "ingest -k -t - -b held ");
    assert_eq!(group.commit().unwrap().revisions, 1);
    assert_eq!(s.log_since(start), ["ingest -k -t - -b held test.repo"]);
    assert_eq!(
        fs::read(s.published().join("held/aa/data")).unwrap(),
        b"marker"
    );
    assert_eq!(
        fs::read(s.published().join("held/aa/one/tree/data")).unwrap(),
        b"tree"
    );
}
