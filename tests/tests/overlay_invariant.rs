//! The overlay invariant on images these tests build (issue 14): the layer directories of an
//! image, stacked with `mount -t overlay -o ro,lowerdir=TOP:...:BOTTOM`, show exactly its flat
//! tree: modes, owners, times (implicit directories included), xattrs, contents. Each image is
//! checked both ways a layer directory is written: together with the flat tree (one decode,
//! `FlatExtractor::apply_blob_with_layer_dir`, as `ducc convert` does) and alone on top of the
//! lower layer directories (`unpack_layer_dir` with `lower_layers`).
//!
//! The one exception: hardlink groups. A hardlink to a file of a lower layer is a copy in its
//! layer directory (overlayfs cannot link across layers), so link counts are not compared.
//!
//! Needs root (owners, whiteout devices, `trusted.overlay.opaque`, overlay mounts).

use std::io::Write;
use std::path::{Path, PathBuf};

use ducc_tests::overlay::OverlayMount;
use ducc_tests::tree::{Options, Tree, scratch_dir};
use ducc_unpack::{
    ExtractOptions, FlatExtractor, LayerDescriptor, LayerDirOptions, Privileges, WhiteoutFormat,
    unpack_layer_dir,
};
use sha2::{Digest as _, Sha256};

/// One tar entry of a test layer.
enum E<'a> {
    Dir(&'a str, u32, u32, i64),
    DirX(&'a str, u32, u32, i64, &'a str, &'a [u8]),
    File(&'a str, &'a [u8], u32, u32, i64),
    Link(&'a str, &'a str),
    Sym(&'a str, &'a str),
    Whiteout(&'a str),
}

fn header(kind: tar::EntryType, mode: u32, owner: u32, mtime: i64, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(u64::from(owner));
    h.set_gid(u64::from(owner));
    h.set_mtime(u64::try_from(mtime).expect("mtime"));
    h.set_size(size);
    h
}

/// A gzipped layer tar of `entries`, in order, and its descriptor.
fn layer(name: &str, entries: &[E]) -> (Vec<u8>, LayerDescriptor) {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match *e {
            E::Dir(path, mode, owner, mtime) => {
                let mut h = header(tar::EntryType::Directory, mode, owner, mtime, 0);
                b.append_data(&mut h, path, &[][..]).expect("dir");
            }
            E::DirX(path, mode, owner, mtime, xattr, value) => {
                let key = format!("SCHILY.xattr.{xattr}");
                b.append_pax_extensions([(key.as_str(), value)])
                    .expect("pax");
                let mut h = header(tar::EntryType::Directory, mode, owner, mtime, 0);
                b.append_data(&mut h, path, &[][..]).expect("dir");
            }
            E::File(path, data, mode, owner, mtime) => {
                let mut h = header(
                    tar::EntryType::Regular,
                    mode,
                    owner,
                    mtime,
                    data.len() as u64,
                );
                b.append_data(&mut h, path, data).expect("file");
            }
            E::Link(path, target) => {
                let mut h = header(tar::EntryType::Link, 0o644, 0, 1_000, 0);
                b.append_link(&mut h, path, target).expect("hardlink");
            }
            E::Sym(path, target) => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0, 1_000, 0);
                b.append_link(&mut h, path, target).expect("symlink");
            }
            E::Whiteout(path) => {
                let mut h = header(tar::EntryType::Regular, 0o644, 0, 1_000, 0);
                b.append_data(&mut h, path, &[][..]).expect("whiteout");
            }
        }
    }
    let tar = b.into_inner().expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    let blob = gz.finish().expect("gzip");
    let descriptor = LayerDescriptor::new(name, "application/vnd.oci.image.layer.v1.tar+gzip")
        .with_blob_digest(
            format!("sha256:{}", hex::encode(Sha256::digest(&blob)))
                .parse()
                .expect("digest"),
        )
        .with_diff_id(
            format!("sha256:{}", hex::encode(Sha256::digest(&tar)))
                .parse()
                .expect("diff id"),
        );
    (blob, descriptor)
}

fn layer_options(format: WhiteoutFormat) -> LayerDirOptions {
    LayerDirOptions::new()
        .whiteouts(format)
        .privileges(Privileges::Root)
}

/// The flat tree and the layer directories of `layers`, written together (one decode).
fn together(
    layers: &[(Vec<u8>, LayerDescriptor)],
    base: &Path,
    format: WhiteoutFormat,
) -> (PathBuf, Vec<PathBuf>) {
    let flat_dir = base.join("flat");
    std::fs::create_dir(&flat_dir).expect("mkdir flat");
    let mut flat = FlatExtractor::new(
        &flat_dir,
        &ExtractOptions::new().privileges(Privileges::Root),
    )
    .expect("flat extractor");
    let mut dirs = Vec::new();
    for (n, (blob, descriptor)) in layers.iter().enumerate() {
        let dir = base.join(format!("together-{n}"));
        std::fs::create_dir(&dir).expect("mkdir layer");
        flat.apply_blob_with_layer_dir(&blob[..], descriptor, &dir, &layer_options(format))
            .unwrap_or_else(|e| panic!("layer {n}: {e}"));
        dirs.push(dir);
    }
    flat.finish();
    (flat_dir, dirs)
}

/// The layer directories of `layers`, each alone on top of the lower layer directories.
fn alone(
    layers: &[(Vec<u8>, LayerDescriptor)],
    base: &Path,
    format: WhiteoutFormat,
) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for (n, (blob, descriptor)) in layers.iter().enumerate() {
        let dir = base.join(format!("alone-{n}"));
        let lower = dirs.iter().rev().cloned().collect();
        unpack_layer_dir(
            &blob[..],
            descriptor,
            &dir,
            &layer_options(format).lower_layers(lower),
        )
        .unwrap_or_else(|e| panic!("layer {n}: {e}"));
        dirs.push(dir);
    }
    dirs
}

fn merged(label: &str, dirs: &[PathBuf], base: &Path) -> Tree {
    let target = base.join(format!("merged-{label}"));
    std::fs::create_dir(&target).expect("mkdir merged");
    let mount = OverlayMount::mount(dirs, &target)
        .unwrap_or_else(|e| panic!("overlay mount (needs root): {e}"));
    let tree = Tree::scan(&target).expect("scan merged");
    drop(mount);
    tree
}

/// Both ways of writing the layer directories, in both overlay forms (opaque xattrs, and
/// explicit whiteout devices as a cvmfs stratum 0 stores them: issue 28), give an overlay equal
/// to the flat tree, which is also checked with `expect` on a few paths.
fn check(name: &str, layers: &[&[E]], expect: impl Fn(&Tree)) {
    for format in [WhiteoutFormat::Overlay, WhiteoutFormat::OverlayDevices] {
        check_form(name, layers, format, &expect);
    }
}

fn check_form(name: &str, layers: &[&[E]], format: WhiteoutFormat, expect: &impl Fn(&Tree)) {
    if !ducc_tests::require_root("the invariant needs owners, whiteout devices and overlay mounts")
    {
        return;
    }
    let layers: Vec<_> = layers
        .iter()
        .enumerate()
        .map(|(n, entries)| layer(&format!("{name} layer {n}"), entries))
        .collect();
    let scratch = scratch_dir(&format!("invariant-{name}")).expect("scratch");
    let (flat_dir, together_dirs) = together(&layers, scratch.path(), format);
    let alone_dirs = alone(&layers, scratch.path(), format);
    let flat = Tree::scan(&flat_dir).expect("scan flat");
    expect(&flat);
    // Only hardlink groups are left out; every mtime is compared.
    let options = Options {
        hardlinks: false,
        ..Options::default()
    };
    for (label, dirs) in [("together", &together_dirs), ("alone", &alone_dirs)] {
        let tree = merged(label, dirs, scratch.path());
        flat.assert_same_as(
            &tree,
            &options,
            &format!("{name}: flat tree"),
            &format!("{name}: overlay of the {format:?} layer dirs written {label}"),
        );
    }
}

fn mode(tree: &Tree, path: &str) -> u32 {
    tree.nodes
        .get(path)
        .unwrap_or_else(|| panic!("{path} missing"))
        .mode
}

/// Asserts that the flat tree holds every path of `present` and none of `absent`.
fn assert_paths(tree: &Tree, present: &[&str], absent: &[&str]) {
    for path in present {
        assert!(tree.nodes.contains_key(*path), "{path} missing");
    }
    for path in absent {
        assert!(!tree.nodes.contains_key(*path), "{path} present");
    }
}

#[test]
fn implicit_parents_keep_a_0700_directory_private() {
    check(
        "private-root",
        &[
            &[
                E::DirX("root", 0o700, 0, 5_000, "user.origin", b"base"),
                E::File("root/.profile", b"profile", 0o644, 0, 5_001),
                E::Dir("home", 0o755, 0, 5_002),
                E::Dir("home/user", 0o750, 1000, 5_003),
            ],
            &[
                E::File("root/.bashrc", b"bashrc", 0o644, 0, 6_000),
                E::File("home/user/.config/app/settings", b"x", 0o600, 1000, 6_001),
            ],
        ],
        |flat| {
            assert_eq!(mode(flat, "root"), 0o700);
            assert_eq!(flat.nodes["root"].mtime.0, 5_000);
            assert_eq!(flat.nodes["home/user"].uid, 1000);
            assert_eq!(mode(flat, "home/user/.config"), 0o755);
            assert_eq!(flat.nodes["home/user/.config"].mtime.0, 6_001);
        },
    );
}

#[test]
fn implicit_parents_keep_a_sticky_1777_directory() {
    check(
        "sticky-tmp",
        &[
            &[
                E::Dir("tmp", 0o1777, 0, 7_000),
                E::Dir("var", 0o755, 0, 7_001),
                E::Dir("var/tmp", 0o1777, 0, 7_002),
            ],
            &[E::File("tmp/x", b"x", 0o644, 0, 8_000)],
            &[E::File("var/tmp/deep/y", b"y", 0o644, 0, 9_000)],
        ],
        |flat| {
            assert_eq!(mode(flat, "tmp"), 0o1777);
            assert_eq!(mode(flat, "var/tmp"), 0o1777);
            assert_eq!(flat.nodes["var/tmp"].mtime.0, 7_002);
        },
    );
}

#[test]
fn a_directory_made_a_file_with_a_whiteout_under_it_stays_a_file() {
    // As umoci repack writes it: the new file, then a whiteout under its path.
    check(
        "dir2file",
        &[
            &[
                E::Dir("testbed", 0o755, 0, 1_000),
                E::Dir("testbed/dir2file", 0o755, 0, 1_000),
                E::File("testbed/dir2file/sub", b"sub", 0o644, 0, 1_000),
            ],
            &[
                E::File("testbed/dir2file", b"now a file", 0o644, 0, 2_000),
                E::Whiteout("testbed/dir2file/.wh.sub"),
                E::Whiteout("nothing/below/.wh.gone"),
            ],
        ],
        |flat| {
            assert_eq!(
                flat.nodes["testbed/dir2file"].kind,
                ducc_tests::tree::Kind::File
            );
            assert_paths(flat, &[], &["nothing"]);
        },
    );
}

#[test]
fn a_file_made_a_directory_shows_the_directory() {
    check(
        "file2dir",
        &[
            &[
                E::Dir("testbed", 0o755, 0, 1_000),
                E::File("testbed/file2dir", b"file", 0o644, 0, 1_000),
                E::File("testbed/implicit2dir", b"file", 0o644, 0, 1_000),
            ],
            &[
                E::Dir("testbed/file2dir", 0o711, 0, 2_000),
                E::File("testbed/file2dir/inner", b"inner", 0o644, 0, 2_000),
                E::File("testbed/implicit2dir/inner", b"inner", 0o644, 0, 2_001),
            ],
        ],
        |flat| {
            assert_eq!(mode(flat, "testbed/file2dir"), 0o711);
            assert_eq!(mode(flat, "testbed/implicit2dir"), 0o755);
        },
    );
}

#[test]
fn an_opaque_directory_under_an_implicit_parent_hides_only_the_lower_children() {
    check(
        "opaque-implicit",
        &[
            &[
                E::Dir("a", 0o750, 0, 3_000),
                E::Dir("a/b", 0o700, 0, 3_001),
                E::File("a/b/old", b"old", 0o644, 0, 3_002),
                E::File("a/keep", b"keep", 0o644, 0, 3_003),
            ],
            &[
                E::File("a/b/new", b"new", 0o644, 0, 4_000),
                E::Whiteout("a/b/.wh..wh..opq"),
            ],
        ],
        |flat| {
            assert_paths(flat, &["a/keep"], &["a/b/old"]);
            assert_eq!(mode(flat, "a"), 0o750);
            assert_eq!(mode(flat, "a/b"), 0o700);
        },
    );
}

#[test]
fn hardlinks_into_lower_layers_and_symlinked_parents_resolve_in_the_stack_below() {
    check(
        "hardlinks-symlinks",
        &[
            &[
                E::Dir("usr", 0o755, 0, 1_000),
                E::Dir("usr/bin", 0o755, 0, 1_001),
                E::File("usr/bin/tool", b"tool", 0o755, 0, 1_002),
                E::Dir("usr/lib", 0o755, 0, 1_003),
                E::Sym("lib", "usr/lib"),
            ],
            &[
                E::Link("usr/bin/tool2", "usr/bin/tool"),
                E::File("lib/libx.so", b"lib", 0o644, 0, 2_000),
                E::Whiteout("usr/.wh.nothing-here"),
            ],
        ],
        |flat| {
            assert_eq!(
                flat.nodes["usr/bin/tool2"].content,
                flat.nodes["usr/bin/tool"].content
            );
            assert_paths(flat, &["usr/lib/libx.so"], &[]);
            assert_eq!(flat.nodes["usr/lib"].mtime.0, 1_003);
        },
    );
}

/// Issue 28: an opaque directory over a lower one with nested subdirectories, whose layer makes
/// some names again (a directory over a lower directory, a file over a directory, a directory
/// over a file), with whiteouts under the re-created directory too.
#[test]
fn an_opaque_directory_that_makes_names_again_hides_everything_else_below() {
    check(
        "opaque-again",
        &[
            &[
                E::Dir("o", 0o755, 0, 1_000),
                E::Dir("o/sub", 0o755, 0, 1_001),
                E::Dir("o/sub/deep", 0o755, 0, 1_002),
                E::File("o/sub/deep/f", b"f", 0o644, 0, 1_003),
                E::File("o/sub/keep-name", b"old", 0o644, 0, 1_004),
                E::File("o/sub/gone", b"gone", 0o644, 0, 1_005),
                E::Dir("o/dir2file", 0o755, 0, 1_006),
                E::File("o/dir2file/x", b"x", 0o644, 0, 1_007),
                E::File("o/file2dir", b"file", 0o644, 0, 1_008),
                E::File("o/plain", b"plain", 0o644, 0, 1_009),
            ],
            &[
                E::Dir("o", 0o755, 0, 2_000),
                E::Whiteout("o/.wh..wh..opq"),
                E::Dir("o/sub", 0o750, 0, 2_001),
                E::File("o/sub/keep-name", b"new", 0o644, 0, 2_002),
                E::File("o/dir2file", b"now a file", 0o644, 0, 2_003),
                E::Dir("o/file2dir", 0o755, 0, 2_004),
                E::File("o/file2dir/y", b"y", 0o644, 0, 2_005),
            ],
        ],
        |flat| {
            assert_paths(
                flat,
                &["o/file2dir/y"],
                &["o/sub/deep", "o/sub/gone", "o/plain", "o/dir2file/x"],
            );
            assert_eq!(flat.nodes["o/sub/keep-name"].mtime.0, 2_002);
        },
    );
}

/// Issue 28: a directory whited out and made again in the same layer is a new directory: none
/// of the lower children show, nested ones included.
#[test]
fn a_directory_whited_out_and_made_again_shows_only_the_new_children() {
    check(
        "whiteout-again",
        &[
            &[
                E::Dir("d", 0o755, 0, 1_000),
                E::Dir("d/n", 0o755, 0, 1_001),
                E::File("d/n/old", b"old", 0o644, 0, 1_002),
                E::File("d/old", b"old", 0o644, 0, 1_003),
            ],
            &[
                E::Whiteout("d/.wh.n"),
                E::Whiteout(".wh.d"),
                E::Dir("d", 0o700, 0, 2_000),
                E::Dir("d/n", 0o700, 0, 2_001),
                E::File("d/n/new", b"new", 0o644, 0, 2_002),
            ],
        ],
        |flat| {
            assert_paths(flat, &["d/n/new"], &["d/old", "d/n/old"]);
        },
    );
}

/// Issue 28: a directory replaced by a file and then by a directory again, and a whiteout of a
/// directory of 200 files.
#[test]
fn a_directory_made_a_file_and_back_and_a_deleted_directory_of_200_files() {
    let many: Vec<String> = (0..200).map(|n| format!("many/f{n:03}")).collect();
    let mut base = vec![
        E::Dir("t", 0o755, 0, 1_000),
        E::File("t/inner", b"inner", 0o644, 0, 1_001),
        E::Dir("many", 0o755, 0, 1_002),
    ];
    base.extend(many.iter().map(|p| E::File(p, b"m", 0o644, 0, 1_003)));
    check(
        "dir-file-dir",
        &[
            &base,
            &[
                E::File("t", b"a file now", 0o644, 0, 2_000),
                E::Whiteout(".wh.many"),
            ],
            &[
                E::Dir("t", 0o755, 0, 3_000),
                E::File("t/again", b"again", 0o644, 0, 3_001),
            ],
        ],
        |flat| {
            assert_paths(flat, &["t/again"], &["t/inner"]);
            assert!(!flat.nodes.keys().any(|k| k.starts_with("many")));
        },
    );
}
