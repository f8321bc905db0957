//! The edge cases of layer application (reference B.4), one test per rule, on layers the tests
//! build themselves.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::testutil::{Layer, Node, paths, require_root, snapshot};
use crate::{
    Error, ExtractOptions, FlatExtractor, LayerDirOptions, Privileges, Report, WarningKind,
    WhiteoutFormat, extract_canonical_tar, extract_layer_dir,
};

/// Applies layers in order onto a fresh flat tree.
fn flat_with(
    layers: &[Vec<u8>],
    privileges: Privileges,
) -> (tempfile::TempDir, Result<Report, Error>) {
    let base = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(base.path().join("root")).expect("mkdir");
    let result = (|| {
        let mut flat = FlatExtractor::new(
            &base.path().join("root"),
            &ExtractOptions::new().privileges(privileges),
        )?;
        for (i, layer) in layers.iter().enumerate() {
            flat.apply_layer(&layer[..], &format!("layer{i}"))?;
        }
        Ok(flat.finish())
    })();
    (base, result)
}

fn flat(layers: &[Vec<u8>]) -> (tempfile::TempDir, Result<Report, Error>) {
    flat_with(layers, Privileges::Auto)
}

fn root(base: &tempfile::TempDir) -> std::path::PathBuf {
    base.path().join("root")
}

fn layer_dir(
    layer: Vec<u8>,
    options: &LayerDirOptions,
) -> (tempfile::TempDir, Result<Report, Error>) {
    let base = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(base.path().join("root")).expect("mkdir");
    let result = extract_layer_dir(&layer[..], "the-layer", &base.path().join("root"), options);
    (base, result)
}

fn file(content: &str, mode: u32) -> Node {
    Node::File {
        content: content.as_bytes().to_vec(),
        mode,
    }
}

fn read(root: &Path, path: &str) -> String {
    std::fs::read_to_string(root.join(path)).expect("read")
}

fn exists(root: &Path, path: &str) -> bool {
    std::fs::symlink_metadata(root.join(path)).is_ok()
}

fn lower() -> Vec<u8> {
    Layer::new()
        .dir("a")
        .file("a/lower-file", b"lower")
        .dir("a/b")
        .dir("a/b/c")
        .file("a/b/c/bar", b"bar")
        .file("foo", b"lower foo")
        .dir("d")
        .file("d/x", b"x")
        .dir("d/sub")
        .file("d/sub/y", b"y")
        .bytes()
}

/// One row of a table: the layers applied in order onto a fresh flat tree (or the one layer
/// into a layer directory), and what the tree must show then. `pins` names the rule the row
/// pins; a failure names the row.
struct Case {
    pins: &'static str,
    layers: Vec<Vec<u8>>,
    layer_dir: Option<LayerDirOptions>,
    checks: Vec<Check>,
}

/// What a [`Case`] asserts about the flat tree.
enum Check {
    /// The file at the path holds this text.
    Reads(String, &'static str),
    /// Nothing is at the path.
    Gone(&'static str),
    /// Something is at the path.
    Kept(&'static str),
    /// Every path of the tree that starts with the prefix, sorted.
    PathsUnder(&'static str, Vec<&'static str>),
    /// What the path is (type, mode, content or target).
    Is(String, Node),
    /// The two paths are one inode.
    SameInode(&'static str, &'static str),
    /// The inode at the path has this many links.
    Links(&'static str, u64),
    /// The xattr (path, name) has this value, or is missing.
    Xattr(&'static str, &'static str, Option<&'static [u8]>),
}

fn case(pins: &'static str, layers: Vec<Vec<u8>>) -> Case {
    Case {
        pins,
        layers,
        layer_dir: None,
        checks: Vec::new(),
    }
}

impl Case {
    fn reads(mut self, path: impl Into<String>, content: &'static str) -> Self {
        self.checks.push(Check::Reads(path.into(), content));
        self
    }

    fn gone(mut self, path: &'static str) -> Self {
        self.checks.push(Check::Gone(path));
        self
    }

    fn kept(mut self, path: &'static str) -> Self {
        self.checks.push(Check::Kept(path));
        self
    }

    fn paths_under(mut self, prefix: &'static str, expected: &[&'static str]) -> Self {
        self.checks
            .push(Check::PathsUnder(prefix, expected.to_vec()));
        self
    }

    fn is(mut self, path: impl Into<String>, node: Node) -> Self {
        self.checks.push(Check::Is(path.into(), node));
        self
    }

    fn same_inode(mut self, a: &'static str, b: &'static str) -> Self {
        self.checks.push(Check::SameInode(a, b));
        self
    }

    /// The one layer goes into a layer directory written with `options`.
    fn in_layer_dir(mut self, options: LayerDirOptions) -> Self {
        assert_eq!(self.layers.len(), 1, "{}: one layer", self.pins);
        self.layer_dir = Some(options);
        self
    }

    fn xattr(
        mut self,
        path: &'static str,
        name: &'static str,
        value: Option<&'static [u8]>,
    ) -> Self {
        self.checks.push(Check::Xattr(path, name, value));
        self
    }

    fn links(mut self, path: &'static str, count: u64) -> Self {
        self.checks.push(Check::Links(path, count));
        self
    }

    /// Applies the layers and asserts every check of the row.
    fn check(self) {
        let pins = self.pins;
        let (base, result) = match self.layer_dir {
            Some(options) => layer_dir(self.layers.concat(), &options),
            None => flat(&self.layers),
        };
        result.unwrap_or_else(|e| panic!("{pins}: {e}"));
        let tree = root(&base);
        let meta = |p: &str| std::fs::metadata(tree.join(p)).expect(p);
        for check in self.checks {
            match check {
                Check::Reads(path, content) => assert_eq!(read(&tree, &path), content, "{pins}"),
                Check::Gone(path) => assert!(!exists(&tree, path), "{pins}: {path} is there"),
                Check::Kept(path) => assert!(exists(&tree, path), "{pins}: {path} is gone"),
                Check::PathsUnder(prefix, expected) => {
                    let all = paths(&tree);
                    let under: Vec<_> = all.iter().filter(|p| p.starts_with(prefix)).collect();
                    assert_eq!(under, expected, "{pins}");
                }
                Check::Is(path, node) => assert_eq!(snapshot(&tree)[&path], node, "{pins}"),
                Check::SameInode(a, b) => assert_eq!(meta(a).ino(), meta(b).ino(), "{pins}"),
                Check::Links(path, count) => assert_eq!(meta(path).nlink(), count, "{pins}"),
                Check::Xattr(path, name, value) => {
                    assert_eq!(xattr(&tree.join(path), name).as_deref(), value, "{pins}");
                }
            }
        }
    }
}

/// One row of a table of refused layers: the layers, applied onto a fresh flat tree, fail with
/// an error that `expected` accepts.
struct Refused {
    pins: &'static str,
    layers: Vec<Vec<u8>>,
    expected: fn(&Error) -> bool,
}

fn check_refused(rows: Vec<Refused>) {
    for row in rows {
        let (_base, result) = flat(&row.layers);
        let err = result.expect_err(row.pins);
        assert!((row.expected)(&err), "{}: {err}", row.pins);
    }
}

// --- whiteouts (B.4 1–11) ---

#[test]
fn flat_whiteouts_and_opaque_markers_remove_only_what_the_layers_below_left() {
    let d_new = ["d", "d/new"];
    let spec = ["a", "a/b", "a/b/c", "a/b/c/foo"];
    let long = "n".repeat(255);
    let rows = [
        case(
            "a plain whiteout removes a lower file",
            vec![lower(), Layer::new().whiteout(".wh.foo").bytes()],
        )
        .gone("foo")
        .kept("a/lower-file"),
        case(
            "a plain whiteout removes a lower directory recursively",
            vec![lower(), Layer::new().whiteout(".wh.d").bytes()],
        )
        .gone("d"),
        case(
            "a whiteout after a same-layer file does not remove it",
            vec![
                lower(),
                Layer::new()
                    .file("foo", b"upper foo")
                    .whiteout(".wh.foo")
                    .bytes(),
            ],
        )
        .reads("foo", "upper foo"),
        case(
            "a whiteout before a same-layer file removes only the lower one",
            vec![
                lower(),
                Layer::new()
                    .whiteout(".wh.d")
                    .dir("d")
                    .file("d/new", b"new")
                    .bytes(),
            ],
        )
        .paths_under("d", &d_new),
        case(
            "a whiteout after a same-layer directory hides only the lower children",
            vec![
                lower(),
                Layer::new()
                    .dir("d")
                    .file("d/new", b"new")
                    .whiteout(".wh.d")
                    .bytes(),
            ],
        )
        .paths_under("d", &d_new),
        case(
            "an opaque marker before siblings hides lower children, keeps same-layer ones",
            vec![
                lower(),
                Layer::new()
                    .dir("d")
                    .whiteout("d/.wh..wh..opq")
                    .file("d/new", b"new")
                    .bytes(),
            ],
        )
        .paths_under("d", &d_new),
        // image-spec layer.md: a/, a/b/, a/b/c/foo, a/.wh..wh..opq: foo survives, lower bar is gone.
        case(
            "an opaque marker listed after same-layer children applies first (the spec example)",
            vec![
                lower(),
                Layer::new()
                    .dir("a")
                    .dir("a/b")
                    .dir("a/b/c")
                    .file("a/b/c/foo", b"foo")
                    .whiteout("a/.wh..wh..opq")
                    .bytes(),
            ],
        )
        .paths_under("a", &spec),
        case(
            "AUFS metadata entries are skipped",
            vec![
                Layer::new()
                    .dir(".wh..wh.plnk")
                    .file(".wh..wh.plnk/12.34", b"link data")
                    .whiteout(".wh..wh.aufs")
                    .file("kept", b"k")
                    .bytes(),
            ],
        )
        .paths_under("", &["kept"]),
        case(
            "a whiteout of a 255-byte name is accepted",
            vec![
                Layer::new().file(&long, b"x").bytes(),
                Layer::new().whiteout(&format!(".wh.{long}")).bytes(),
            ],
        )
        .paths_under("", &[]),
        case(
            "entries after an opaque marker land in the new directory, not the removed one",
            vec![
                Layer::new()
                    .dir("d")
                    .dir("d/sub")
                    .file("d/sub/x", b"x")
                    .file("d/sub/y", b"y")
                    .bytes(),
                Layer::new()
                    .whiteout("d/sub/.wh.x")
                    .whiteout("d/.wh..wh..opq")
                    .file("d/sub/new", b"n")
                    .bytes(),
            ],
        )
        .paths_under("d/", &["d/sub", "d/sub/new"]),
    ];
    rows.into_iter().for_each(Case::check);
}

#[test]
fn opaque_on_a_directory_missing_below_is_a_no_op_that_creates_it() {
    let upper = Layer::new().whiteout("new/.wh..wh..opq").bytes();
    let (base, result) = flat(&[lower(), upper]);
    result.expect("apply");
    assert!(
        std::fs::symlink_metadata(root(&base).join("new"))
            .expect("created")
            .is_dir()
    );
    assert!(exists(&root(&base), "foo"));
}

#[test]
fn whiteout_for_a_path_missing_below_is_a_no_op() {
    let upper = Layer::new()
        .whiteout(".wh.nothing")
        .whiteout("nodir/.wh.x")
        .bytes();
    let (base, result) = flat(&[lower(), upper]);
    result.expect("apply");
    assert_eq!(snapshot(&root(&base)), {
        let (b2, r2) = flat(&[lower()]);
        r2.expect("apply");
        snapshot(&root(&b2))
    });
}

#[test]
fn bare_and_dot_whiteouts_are_errors_that_touch_nothing() {
    for name in [".wh.", "a/.wh.", ".wh..", ".wh..."] {
        let (base, result) = flat(&[lower(), Layer::new().whiteout(name).bytes()]);
        let err = result.expect_err(name);
        assert!(matches!(err, Error::InvalidEntry { .. }), "{name}: {err}");
        assert!(err.to_string().contains("layer1"), "{err}");
        assert!(exists(&root(&base), "a/lower-file"), "{name}");
    }
}

#[test]
fn whiteout_markers_never_appear_in_the_flat_tree_whatever_their_type() {
    let upper = Layer::new()
        .whiteout(".wh.foo")
        .symlink(".wh.d", "/etc")
        .dir("a/.wh.b")
        .whiteout("a/.wh..wh..opq")
        .bytes();
    let (base, result) = flat(&[lower(), upper]);
    result.expect("apply");
    let all = paths(&root(&base));
    assert!(all.iter().all(|p| !p.contains(".wh.")), "{all:?}");
    assert!(!exists(&root(&base), "d") && !exists(&root(&base), "foo"));
}

// --- replacing (B.4 12–20) ---

#[test]
fn flat_entries_replace_what_is_below_and_resolve_their_parents_inside_the_root() {
    let rows = [
        case(
            "a file replaces a lower directory and its subtree",
            vec![lower(), Layer::new().file("d", b"now a file").bytes()],
        )
        .reads("d", "now a file"),
        case(
            "a directory replaces a lower file and a lower symlink",
            vec![
                Layer::new().file("x", b"file").symlink("y", "/etc").bytes(),
                Layer::new()
                    .dir("x")
                    .dir("y")
                    .file("y/inside", b"i")
                    .bytes(),
            ],
        )
        .is("x", Node::Dir { mode: 0o755 })
        .is("y", Node::Dir { mode: 0o755 })
        .reads("y/inside", "i"),
        case(
            "a parent that is an absolute symlink resolves inside the root",
            vec![
                Layer::new()
                    .dir("run")
                    .dir("var")
                    .symlink("var/run", "/run")
                    .file("var/run/x", b"x")
                    .bytes(),
            ],
        )
        .reads("run/x", "x"),
        case(
            "a dangling absolute symlink parent is created inside the root",
            vec![
                Layer::new()
                    .dir("var")
                    .symlink("var/lock", "/run/lock")
                    .file("var/lock/l", b"l")
                    .bytes(),
            ],
        )
        .reads("run/lock/l", "l"),
        case(
            "an absolute name is root-relative",
            vec![Layer::new().file("/etc/passwd", b"root:x:0:0").bytes()],
        )
        .reads("etc/passwd", "root:x:0:0"),
        case(
            "of duplicate entries in one layer the last one wins",
            vec![
                Layer::new()
                    .file("f", b"first")
                    .file("f", b"second")
                    .dir("d")
                    .file("d/x", b"x")
                    .symlink("d", "/f")
                    .bytes(),
            ],
        )
        .is("f", file("second", 0o644))
        .is("d", Node::Symlink("/f".into())),
        case(
            "a file whose parent entry comes later or never gets a sane parent",
            vec![
                Layer::new()
                    .file("late/f", b"f")
                    .dir_mode("late", 0o710)
                    .file("never/g", b"g")
                    .bytes(),
            ],
        )
        .is("late", Node::Dir { mode: 0o710 })
        .is("never", Node::Dir { mode: 0o755 })
        .is("never/g", file("g", 0o644)),
    ];
    rows.into_iter().for_each(Case::check);
}

#[test]
fn directory_over_directory_merges_and_takes_the_new_metadata() {
    let mut second = Layer::new();
    second.mtime = 1_700_000_000;
    second.dir_mode("d", 0o700).file("d/new", b"n");
    let (base, result) = flat(&[lower(), second.bytes()]);
    result.expect("apply");
    let meta = std::fs::metadata(root(&base).join("d")).expect("d");
    assert_eq!(meta.mode() & 0o7777, 0o700);
    assert_eq!(meta.mtime(), 1_700_000_000);
    assert!(
        exists(&root(&base), "d/x")
            && exists(&root(&base), "d/sub/y")
            && exists(&root(&base), "d/new")
    );
}

#[test]
fn a_symlink_replacing_a_directory_carries_later_writes_inside_the_root() {
    let second = Layer::new().symlink("d", "/elsewhere").bytes();
    let third = Layer::new()
        .dir("elsewhere")
        .file("d/through", b"t")
        .bytes();
    let (base, result) = flat(&[lower(), second, third]);
    result.expect("apply");
    assert_eq!(read(&root(&base), "elsewhere/through"), "t");
    assert!(
        std::fs::symlink_metadata(root(&base).join("d"))
            .expect("d")
            .file_type()
            .is_symlink()
    );
    assert!(!Path::new("/elsewhere").exists());
}

#[test]
fn an_escaping_relative_symlink_parent_is_clamped_to_the_root() {
    let layer = Layer::new()
        .symlink("up", "../../../../../../..")
        .file("up/evil", b"e")
        .bytes();
    let (base, result) = flat(&[layer]);
    result.expect("apply");
    assert_eq!(read(&root(&base), "evil"), "e");
    assert!(!base.path().join("evil").exists());
}

#[test]
fn a_non_directory_entry_for_the_root_is_refused() {
    for name in [".", "/", "./"] {
        let layer = Layer::new().symlink(name, "/tmp").bytes();
        let (_base, result) = flat(&[layer]);
        let err = result.expect_err(name);
        assert!(matches!(err, Error::InvalidEntry { .. }), "{name}: {err}");
    }
}

#[test]
fn a_directory_entry_for_the_root_sets_the_root_metadata() {
    let layer = Layer::new()
        .dir_with("./", 0o750, 1_234_567, &[])
        .file("f", b"f")
        .bytes();
    let (base, result) = flat(&[layer]);
    result.expect("apply");
    let meta = std::fs::metadata(root(&base)).expect("root");
    assert_eq!(meta.mode() & 0o7777, 0o750);
    assert_eq!(meta.mtime(), 1_234_567);
}

#[test]
fn a_symlink_then_a_directory_of_the_same_name_never_chmods_the_outside_target() {
    let outside = tempfile::tempdir().expect("outside");
    std::fs::set_permissions(outside.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let target = outside.path().to_str().expect("utf8").to_owned();
    let layer = Layer::new()
        .symlink("s", &target)
        .dir_mode("s", 0o777)
        .bytes();
    let (base, result) = flat(&[layer]);
    result.expect("apply");
    let outside_mode = std::fs::metadata(outside.path()).expect("outside").mode() & 0o7777;
    assert_eq!(outside_mode, 0o755);
    assert_eq!(snapshot(&root(&base))["s"], Node::Dir { mode: 0o777 });
}

#[test]
fn a_symlink_then_a_file_of_the_same_name_replaces_the_link() {
    let outside = tempfile::tempdir().expect("outside");
    let victim = outside.path().join("victim");
    std::fs::write(&victim, "untouched").expect("write");
    let layer = Layer::new()
        .symlink("s", victim.to_str().expect("utf8"))
        .file("s", b"replaced")
        .bytes();
    let (base, result) = flat(&[layer]);
    result.expect("apply");
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "untouched"
    );
    assert_eq!(snapshot(&root(&base))["s"], file("replaced", 0o644));
}

// --- names (B.4 21–22, 39, 44) ---

#[test]
fn names_with_dotdot_are_errors_naming_layer_and_entry_and_write_nothing() {
    for name in ["../x", "a/../../x", "a/.."] {
        let layer = Layer::new().file("ok", b"ok").file(name, b"evil").bytes();
        let (base, result) = flat(&[layer]);
        let err = result.expect_err(name);
        let message = err.to_string();
        assert!(
            message.contains("layer0") && message.contains(name),
            "{message}"
        );
        assert!(!base.path().join("x").exists());
    }
}

#[test]
fn overlong_names_give_a_clean_error() {
    let long_component = "n".repeat(300);
    let long_path = format!("{}/f", "d/".repeat(2100));
    for name in [long_component.as_str(), long_path.as_str()] {
        let layer = Layer::new().file(name, b"x").bytes();
        let (_base, result) = flat(&[layer]);
        let err = result.expect_err("too long");
        assert!(
            matches!(err, Error::NameTooLong { .. } | Error::PathTooLong { .. }),
            "{err}"
        );
    }
}

/// A file `f` whose header says 0 bytes and whose PAX `size` record says 5.
fn pax_size_layer() -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.set_path("f").expect("path");
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(0);
    h.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_pax_extensions([("size", &b"5"[..])])
        .expect("pax");
    builder.append(&h, &b"hello"[..]).expect("append");
    builder.into_inner().expect("finish")
}

/// A PAX global header, then a file `f`.
fn pax_global_header_layer() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut g = tar::Header::new_ustar();
    g.set_path("pax_global_header").expect("path");
    g.set_entry_type(tar::EntryType::XGlobalHeader);
    let record = b"20 comment=ignored!\n";
    g.set_size(record.len() as u64);
    g.set_cksum();
    builder.append(&g, &record[..]).expect("g");
    let mut tail = Layer::new().file("f", b"f").bytes();
    let mut raw = builder.into_inner().expect("finish");
    raw.truncate(raw.len() - 1024);
    raw.append(&mut tail);
    raw
}

/// A file `name` holding "ok" and a symlink `link` to `target`, through GNU L/K entries.
fn gnu_long_names_layer(name: &str, target: &str) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(2);
    builder
        .append_data(&mut h, name, &b"ok"[..])
        .expect("long name");
    let mut l = tar::Header::new_gnu();
    l.set_entry_type(tar::EntryType::Symlink);
    l.set_mode(0o777);
    l.set_size(0);
    builder
        .append_link(&mut l, "link", target)
        .expect("long link");
    let raw = builder.into_inner().expect("finish");
    assert!(
        raw.windows(13).any(|w| w == b"././@LongLink"),
        "the builder wrote GNU L/K entries"
    );
    raw
}

/// A character device whose major number is base-256 encoded and too large.
fn huge_device_number_layer() -> Vec<u8> {
    let mut layer = Layer::new().device("d", tar::EntryType::Char, 1, 1).bytes();
    // Base-256 encoding of a huge major number in the devmajor field (offset 329).
    layer[329] = 0x80;
    layer[330..337].fill(0xff);
    let mut sum: u32 = layer[..512].iter().map(|&b| u32::from(b)).sum();
    sum -= layer[148..156].iter().map(|&b| u32::from(b)).sum::<u32>();
    sum += 8 * 32;
    layer[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    layer
}

#[test]
fn flat_trees_honour_pax_and_gnu_records() {
    let pax_dir = "long-directory-name-".repeat(8);
    let pax_name = format!("{pax_dir}/file");
    let pax_target = format!("/{}", "t".repeat(150));
    let gnu_name = format!("{}/file", "g".repeat(150));
    let gnu_target = format!("/{}", "l".repeat(150));
    let rows = [
        // The header says 0 bytes, the PAX record 5: Go and GNU tar read 5.
        case(
            "a PAX size record overrides the header size",
            vec![pax_size_layer()],
        )
        .reads("f", "hello"),
        case(
            "a PAX global header is not extracted",
            vec![pax_global_header_layer()],
        )
        .paths_under("", &["f"]),
        case(
            "long names and link targets through PAX are honoured",
            vec![
                Layer::new()
                    .dir(&pax_dir)
                    .file(&pax_name, b"x")
                    .symlink("link", &pax_target)
                    .bytes(),
            ],
        )
        .reads(pax_name.as_str(), "x")
        .is("link", Node::Symlink(pax_target.clone())),
        case(
            "GNU long names and long link targets are honoured",
            vec![gnu_long_names_layer(&gnu_name, &gnu_target)],
        )
        .reads(gnu_name.as_str(), "ok")
        .is("link", Node::Symlink(gnu_target.clone())),
    ];
    rows.into_iter().for_each(Case::check);
}

#[test]
fn entries_a_flat_tree_cannot_hold_are_refused() {
    check_refused(vec![
        Refused {
            pins: "device numbers that do not parse are refused",
            layers: vec![huge_device_number_layer()],
            expected: |e| matches!(e, Error::InvalidEntry { .. }),
        },
        Refused {
            pins: "unsupported entry types are errors",
            layers: vec![Layer::new().raw(b"vol", tar::EntryType::new(b'V')).bytes()],
            expected: |e| matches!(e, Error::InvalidEntry { .. }),
        },
    ]);
}

#[test]
fn non_utf8_names_are_kept_byte_exact() {
    use std::os::unix::ffi::OsStrExt;
    let name = b"caf\xe9-\xff";
    let layer = Layer::new().file_with(name, b"x", 0o644, 0, 0, &[]).bytes();
    let (base, result) = flat(&[layer]);
    result.expect("apply");
    let listed: Vec<_> = std::fs::read_dir(root(&base))
        .expect("list")
        .map(|e| e.expect("entry").file_name().as_bytes().to_vec())
        .collect();
    assert_eq!(listed, [name.to_vec()]);
}

// --- hardlinks (B.4 23–29) ---

#[test]
fn flat_hardlinks_link_their_target_inside_the_root() {
    let rows = [
        case(
            "a hardlink to a file of the same layer shares its inode",
            vec![Layer::new().file("a", b"data").hardlink("b", "a").bytes()],
        )
        .same_inode("a", "b")
        .links("a", 2),
        case(
            "a hardlink to a lower layer's file works in the flat tree",
            vec![lower(), Layer::new().hardlink("link", "foo").bytes()],
        )
        .same_inode("link", "foo"),
        case(
            "an absolute hardlink target resolves inside the root",
            vec![
                Layer::new()
                    .dir("usr")
                    .file("usr/x", b"x")
                    .hardlink("usr/y", "/usr/x")
                    .bytes(),
            ],
        )
        .reads("usr/y", "x"),
        case(
            "a hardlink over an existing file replaces it",
            vec![
                lower(),
                Layer::new()
                    .file("a", b"a")
                    .file("b", b"b")
                    .hardlink("b", "a")
                    .bytes(),
                Layer::new().hardlink("foo", "a").bytes(),
            ],
        )
        .reads("b", "a")
        .reads("foo", "a"),
        case(
            "a hardlink to a symlink links the symlink itself",
            vec![
                Layer::new()
                    .symlink("s", "/nowhere")
                    .hardlink("h", "s")
                    .bytes(),
            ],
        )
        .is("h", Node::Symlink("/nowhere".into())),
    ];
    rows.into_iter().for_each(Case::check);
}

#[test]
fn flat_hardlinks_that_break_a_rule_are_refused() {
    check_refused(vec![
        Refused {
            pins: "a hardlink target escaping with .. is refused",
            layers: vec![Layer::new().hardlink("h", "../../etc/passwd").bytes()],
            expected: |e| matches!(e, Error::InvalidEntry { .. }),
        },
        Refused {
            pins: "a hardlink before its target is a clear error naming the target",
            layers: vec![
                Layer::new()
                    .hardlink("h", "later")
                    .file("later", b"l")
                    .bytes(),
            ],
            expected: |e| e.to_string().contains("later"),
        },
        Refused {
            pins: "a hardlink to a directory is refused",
            layers: vec![Layer::new().dir("d").hardlink("h", "d").bytes()],
            expected: |e| {
                matches!(
                    e,
                    Error::HardlinkTarget {
                        reason: "is a directory",
                        ..
                    }
                )
            },
        },
    ]);
}

#[test]
fn a_hardlink_to_another_layer_in_a_layer_directory_is_an_error_naming_the_entry() {
    let (_base, result) = layer_dir(
        Layer::new().hardlink("link", "foo").bytes(),
        &LayerDirOptions::new(),
    );
    let err = result.expect_err("no lower layers");
    assert!(
        matches!(err, Error::HardlinkTarget { ref entry, .. } if entry == "link"),
        "{err}"
    );
}

#[test]
fn a_hardlink_to_another_layer_is_copied_from_the_lower_layers_when_given() {
    let lower_base = tempfile::tempdir().expect("lower");
    extract_layer_dir(
        &lower()[..],
        "lower",
        lower_base.path(),
        &LayerDirOptions::new(),
    )
    .expect("lower layer");
    let options = LayerDirOptions::new().lower_layers(vec![lower_base.path().to_owned()]);
    let (base, result) = layer_dir(Layer::new().hardlink("link", "foo").bytes(), &options);
    result.expect("copied");
    assert_eq!(read(&root(&base), "link"), "lower foo");
}

#[test]
fn a_hardlink_target_through_a_symlinked_parent_stays_inside_the_root() {
    let outside = tempfile::tempdir().expect("outside");
    std::fs::write(outside.path().join("secret"), "s").expect("write");
    let layer = Layer::new()
        .symlink("out", outside.path().to_str().expect("utf8"))
        .hardlink("h", "out/secret")
        .bytes();
    let (_base, result) = flat(&[layer]);
    let err = result.expect_err("the target is not inside the root");
    assert!(matches!(err, Error::HardlinkTarget { .. }), "{err}");
    assert_eq!(
        std::fs::metadata(outside.path().join("secret"))
            .expect("secret")
            .nlink(),
        1
    );
}

// --- devices, owners, modes, xattrs, times (B.4 30–38) ---

#[test]
fn devices_as_root_keep_their_numbers_and_fifos_are_created() {
    require_root!();
    let layer = Layer::new()
        .device("null", tar::EntryType::Char, 1, 3)
        .device("loop", tar::EntryType::Block, 7, 0)
        .fifo("pipe")
        .bytes();
    let (base, result) = flat(&[layer]);
    result.expect("apply");
    let s = snapshot(&root(&base));
    assert_eq!(s["null"], Node::Char(rustix::fs::makedev(1, 3)));
    assert_eq!(s["loop"], Node::Block(rustix::fs::makedev(7, 0)));
    assert_eq!(s["pipe"], Node::Fifo);
}

#[test]
fn devices_unprivileged_are_skipped_with_a_warning_and_fifos_still_created() {
    let layer = Layer::new()
        .device("null", tar::EntryType::Char, 1, 3)
        .fifo("pipe")
        .bytes();
    let (base, result) = flat_with(&[layer], Privileges::Unprivileged);
    let report = result.expect("apply");
    assert_eq!(paths(&root(&base)), ["pipe"]);
    assert_eq!(report.warnings.len(), 1);
    assert_eq!(report.warnings[0].kind, WarningKind::DeviceSkipped);
    assert_eq!(report.warnings[0].path.to_string(), "null");
}

/// Issue 30: a repository behind a CernVM-FS gateway cannot store special files.
#[test]
fn special_files_left_out_are_listed_and_hide_what_they_replace() {
    let lower = Layer::new().dir("dev").file("dev/x", b"lower").bytes();
    let upper = Layer::new()
        .fifo("dev/x")
        .device("dev/null", tar::EntryType::Char, 1, 3)
        .device("dev/loop", tar::EntryType::Block, 7, 0)
        .fifo("pipe")
        .hardlink("pipe2", "pipe")
        .file("keep", b"k")
        .bytes();
    let base = tempfile::tempdir().expect("tempdir");
    let flat_root = base.path().join("flat");
    let layer_dir = base.path().join("layer");
    std::fs::create_dir(&flat_root).expect("mkdir");
    std::fs::create_dir(&layer_dir).expect("mkdir");
    let options = ExtractOptions::new().leave_out_special_files(true);
    let mut flat = FlatExtractor::new(&flat_root, &options).expect("flat");
    flat.apply_layer(&lower[..], "layer0").expect("lower");
    let layer_report = flat
        .apply_layer_with_layer_dir(
            &upper[..],
            "layer1",
            &layer_dir,
            &LayerDirOptions::new()
                .whiteouts(WhiteoutFormat::Oci)
                .leave_out_special_files(true),
        )
        .expect("upper");
    let flat_report = flat.finish();
    assert_eq!(paths(&flat_root), ["dev", "keep"]);
    assert_eq!(paths(&layer_dir), ["dev", "keep"]);
    let listed = |report: &Report| -> Vec<(String, String, &'static str)> {
        report
            .left_out
            .iter()
            .map(|l| (l.layer.clone(), l.path.to_string(), l.kind.as_str()))
            .collect()
    };
    let expected = [
        ("dev/x", "fifo"),
        ("dev/null", "char"),
        ("dev/loop", "block"),
        ("pipe", "fifo"),
        ("pipe2", "fifo"),
    ]
    .map(|(p, k)| ("layer1".to_owned(), p.to_owned(), k))
    .to_vec();
    assert_eq!(listed(&flat_report), expected);
    assert_eq!(listed(&layer_report), expected);
}

#[test]
fn special_files_are_kept_unless_asked_to_leave_them_out() {
    let layer = Layer::new().fifo("pipe").bytes();
    let (base, result) = flat(&[layer]);
    let report = result.expect("apply");
    assert_eq!(paths(&root(&base)), ["pipe"]);
    assert!(report.left_out.is_empty());
}

#[test]
fn setuid_setgid_and_sticky_bits_are_preserved_after_chown() {
    let layer = Layer::new()
        .file_with(b"suid", b"x", 0o4755, 1000, 1000, &[])
        .file_with(b"sgid", b"x", 0o2755, 0, 50, &[])
        .dir_mode("tmp", 0o1777)
        .bytes();
    let (base, result) = flat(&[layer]);
    result.expect("apply");
    let s = snapshot(&root(&base));
    assert_eq!(s["suid"], file("x", 0o4755));
    assert_eq!(s["sgid"], file("x", 0o2755));
    assert_eq!(s["tmp"], Node::Dir { mode: 0o1777 });
    if ducc_oci::is_root() {
        let meta = std::fs::metadata(root(&base).join("suid")).expect("suid");
        assert_eq!((meta.uid(), meta.gid()), (1000, 1000));
    }
}

/// Applies `layers` in order, each written into its own directory and onto the flat tree in one
/// pass, as `ducc convert` does; returns the base holding `root/` (the flat tree) and `layer-N/`.
fn both_trees(layers: &[Vec<u8>]) -> tempfile::TempDir {
    let base = tempfile::tempdir().expect("tempdir");
    let flat_root = root(&base);
    std::fs::create_dir(&flat_root).expect("mkdir");
    let mut flat = FlatExtractor::new(&flat_root, &ExtractOptions::new()).expect("flat");
    for (i, layer) in layers.iter().enumerate() {
        let dir = base.path().join(format!("layer-{i}"));
        std::fs::create_dir(&dir).expect("mkdir");
        flat.apply_layer_with_layer_dir(
            &layer[..],
            &format!("layer{i}"),
            &dir,
            &LayerDirOptions::new(),
        )
        .expect("apply");
    }
    base
}

/// (mode, uid, gid) of a path.
fn owner_and_mode(path: &Path) -> (u32, u32, u32) {
    let meta = std::fs::symlink_metadata(path).expect("stat");
    (meta.mode() & 0o7777, meta.uid(), meta.gid())
}

#[test]
fn file_modes_the_umask_would_narrow_come_out_exact() {
    // The files are created with their final mode where nothing changes it: not these.
    let modes = [
        0o644, 0o664, 0o666, 0o777, 0o600, 0o444, 0o000, 0o4755, 0o2711, 0o1777,
    ];
    let mut layer = Layer::new();
    for mode in modes {
        layer.file_with(format!("m{mode:o}").as_bytes(), b"x", mode, 0, 0, &[]);
    }
    let layer = layer.bytes();
    let (base, result) = flat(std::slice::from_ref(&layer));
    result.expect("flat");
    let both = both_trees(&[layer]);
    for mode in modes {
        let name = format!("m{mode:o}");
        assert_eq!(
            snapshot(&root(&base))[&name],
            file("x", mode),
            "flat {name}"
        );
        for tree in ["root", "layer-0"] {
            let got = owner_and_mode(&both.path().join(tree).join(&name)).0;
            assert_eq!(got, mode, "{tree}/{name}: {got:o}");
        }
    }
}

#[test]
fn a_file_in_a_setgid_directory_gets_the_group_of_its_entry() {
    require_root!();
    // New inodes in a setgid directory take its group (50): a file whose entry says group 0
    // must still be given group 0, one that says 50 keeps it.
    let lower = Layer::new().dir_owned("shared", 0o2775, 0, 50).bytes();
    let upper = Layer::new()
        .dir_owned("shared", 0o2775, 0, 50)
        .file_with(b"shared/root-group", b"x", 0o644, 0, 0, &[])
        .file_with(b"shared/dir-group", b"x", 0o644, 0, 50, &[])
        .file_with(b"shared/other", b"x", 0o640, 7, 8, &[])
        .bytes();
    let (base, result) = flat(&[lower.clone(), upper.clone()]);
    result.expect("flat");
    let both = both_trees(&[lower, upper]);
    for tree in [root(&base), root(&both), both.path().join("layer-1")] {
        let at = |name: &str| owner_and_mode(&tree.join("shared").join(name));
        assert_eq!(at("root-group"), (0o644, 0, 0), "{}", tree.display());
        assert_eq!(at("dir-group"), (0o644, 0, 50), "{}", tree.display());
        assert_eq!(at("other"), (0o640, 7, 8), "{}", tree.display());
    }
}

#[test]
fn a_default_acl_from_the_layer_does_not_change_the_modes_of_files() {
    require_root!();
    // system.posix_acl_default of u::rwx,g::r-x,o::--- (version 2; tag, permissions, id): a
    // file created in it with mode 0644 would come out 0640, whatever the umask.
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm) in [(0x01u16, 7u16), (0x04, 5), (0x20, 0)] {
        acl.extend_from_slice(&tag.to_le_bytes());
        acl.extend_from_slice(&perm.to_le_bytes());
        acl.extend_from_slice(&u32::MAX.to_le_bytes());
    }
    let layer = Layer::new()
        .dir_with(
            "acl",
            0o755,
            1_000,
            &[("SCHILY.xattr.system.posix_acl_default", &acl)],
        )
        .file_with(b"acl/f", b"x", 0o644, 0, 0, &[])
        .bytes();
    let (base, result) = flat(std::slice::from_ref(&layer));
    let report = result.expect("flat");
    assert!(
        report.warnings.is_empty(),
        "the default ACL was not set: {:?}",
        report.warnings
    );
    let both = both_trees(&[layer]);
    for tree in [root(&base), root(&both), both.path().join("layer-0")] {
        assert_eq!(
            owner_and_mode(&tree.join("acl/f")).0,
            0o644,
            "{}",
            tree.display()
        );
    }
}

#[test]
fn owners_unprivileged_are_recorded_not_applied() {
    let layer = Layer::new()
        .file_with(b"f", b"x", 0o644, 1234, 5678, &[])
        .bytes();
    let (base, result) = flat_with(&[layer], Privileges::Unprivileged);
    let report = result.expect("no EPERM abort");
    assert_eq!(report.owners_not_applied.len(), 1);
    assert_eq!(
        (
            report.owners_not_applied[0].uid,
            report.owners_not_applied[0].gid
        ),
        (1234, 5678)
    );
    let meta = std::fs::metadata(root(&base).join("f")).expect("f");
    assert_eq!(meta.uid(), rustix::process::geteuid().as_raw());
}

#[test]
fn owners_as_root_are_applied_to_files_dirs_and_symlinks() {
    require_root!();
    let mut layer = Layer::new();
    layer.file_with(b"f", b"x", 0o644, 12, 34, &[]);
    let mut bytes = layer.bytes();
    // A symlink owned by 56:78 (raw header edit of the builder's default 0:0).
    let mut extra = Layer::new();
    extra.symlink("s", "/f");
    let mut link = extra.bytes();
    link.truncate(512);
    let mut h = tar::Header::from_byte_slice(&link[..512]).clone();
    h.set_uid(56);
    h.set_gid(78);
    h.set_cksum();
    bytes.truncate(bytes.len() - 1024);
    bytes.extend_from_slice(h.as_bytes());
    bytes.extend_from_slice(&[0u8; 1024]);
    let (base, result) = flat(&[bytes]);
    result.expect("apply");
    let f = std::fs::metadata(root(&base).join("f")).expect("f");
    assert_eq!((f.uid(), f.gid()), (12, 34));
    let s = std::fs::symlink_metadata(root(&base).join("s")).expect("s");
    assert_eq!((s.uid(), s.gid()), (56, 78));
}

#[test]
fn security_capability_survives_as_root_after_chown() {
    require_root!();
    // VFS cap v2: cap_net_raw (bit 13) permitted and effective.
    let cap: Vec<u8> = [
        0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]
    .to_vec();
    let layer = Layer::new()
        .file_with(
            b"ping",
            b"elf",
            0o755,
            0,
            0,
            &[("SCHILY.xattr.security.capability", &cap)],
        )
        .bytes();
    let (base, result) = flat(&[layer]);
    result.expect("apply");
    let value = xattr(&root(&base).join("ping"), "security.capability");
    assert_eq!(value, Some(cap));
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
        Ok(n) => {
            buf.truncate(n);
            Some(buf)
        }
        Err(_) => None,
    }
}

#[test]
fn user_xattrs_are_set_and_selinux_labels_skipped() {
    let layer = Layer::new()
        .file_with(
            b"f",
            b"x",
            0o644,
            0,
            0,
            &[
                ("SCHILY.xattr.user.note", b"hi"),
                (
                    "SCHILY.xattr.security.selinux",
                    b"system_u:object_r:bin_t:s0",
                ),
            ],
        )
        .bytes();
    let (base, result) = flat(&[layer]);
    let report = result.expect("apply");
    let path = root(&base).join("f");
    if report
        .warnings
        .iter()
        .any(|w| matches!(&w.kind, WarningKind::XattrSkipped { name, .. } if name == "user.note"))
    {
        ducc_tests::skip_or_fail("the temp filesystem has no user xattrs");
        return;
    }
    assert_eq!(xattr(&path, "user.note"), Some(b"hi".to_vec()));
    let selinux = xattr(&path, "security.selinux");
    assert_ne!(selinux, Some(b"system_u:object_r:bin_t:s0".to_vec()));
}

#[test]
fn trusted_xattrs_unprivileged_are_skipped_with_a_warning() {
    let layer = Layer::new()
        .file_with(
            b"f",
            b"x",
            0o644,
            0,
            0,
            &[("SCHILY.xattr.trusted.thing", b"v")],
        )
        .bytes();
    let (base, result) = flat_with(&[layer], Privileges::Unprivileged);
    let report = result.expect("apply");
    assert!(report.warnings.iter().any(
        |w| matches!(&w.kind, WarningKind::XattrSkipped { name, .. } if name == "trusted.thing")
    ));
    assert_eq!(xattr(&root(&base).join("f"), "trusted.thing"), None);
}

#[test]
fn directory_mtimes_are_the_header_ones_after_children_and_whiteouts() {
    let mut first = Layer::new();
    first.mtime = 1_000_000;
    first.dir("d").file("d/a", b"a").file("d/b", b"b");
    let mut second = Layer::new();
    second.mtime = 2_000_000;
    second
        .whiteout("d/.wh.a")
        .file("d/c", b"c")
        .dir_with("e", 0o755, 3_000_000, &[])
        .file("e/x", b"x");
    let (base, result) = flat(&[first.bytes(), second.bytes()]);
    result.expect("apply");
    let mtime = |p| {
        std::fs::metadata(root(&base).join(p))
            .expect("meta")
            .mtime()
    };
    // `d` has no entry in the second layer: it keeps the first layer's time.
    assert_eq!(mtime("d"), 1_000_000);
    assert_eq!(mtime("e"), 3_000_000);
}

#[test]
fn zero_negative_far_future_and_fractional_mtimes_are_honoured() {
    let layer = Layer::new()
        .file_with(b"zero", b"", 0o644, 0, 0, &[("mtime", b"0")])
        .file_with(b"negative", b"", 0o644, 0, 0, &[("mtime", b"-1.5")])
        .file_with(b"future", b"", 0o644, 0, 0, &[("mtime", b"4102444800")])
        .file_with(
            b"fraction",
            b"",
            0o644,
            0,
            0,
            &[("mtime", b"1600000000.123456789")],
        )
        .bytes();
    let (base, result) = flat(&[layer]);
    result.expect("apply");
    let meta = |p| std::fs::metadata(root(&base).join(p)).expect("meta");
    assert_eq!(meta("zero").mtime(), 0);
    assert_eq!(
        (meta("negative").mtime(), meta("negative").mtime_nsec()),
        (-2, 500_000_000)
    );
    assert_eq!(meta("future").mtime(), 4_102_444_800);
    assert_eq!(
        (meta("fraction").mtime(), meta("fraction").mtime_nsec()),
        (1_600_000_000, 123_456_789)
    );
}

#[test]
fn symlink_mtime_is_set_without_following_and_symlinks_are_never_chmodded() {
    let target = tempfile::NamedTempFile::new().expect("target");
    std::fs::set_permissions(target.path(), std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let before = std::fs::metadata(target.path()).expect("meta").mtime();
    let layer = Layer::new()
        .symlink("s", target.path().to_str().expect("utf8"))
        .bytes();
    let (base, result) = flat(&[layer]);
    result.expect("apply");
    let link = std::fs::symlink_metadata(root(&base).join("s")).expect("s");
    assert_eq!(link.mtime(), 1_600_000_000);
    let after = std::fs::metadata(target.path()).expect("meta");
    assert_eq!(after.mtime(), before);
    assert_eq!(after.mode() & 0o7777, 0o600);
}

// --- archive structure (B.4 40–43, 45, 51, 52) ---

#[test]
fn gnu_sparse_files_are_reconstructed() {
    // An old-GNU sparse header: 10 bytes "0123456789" at offset 4096, real size 8192.
    let mut h = tar::Header::new_gnu();
    h.set_path("sparse").expect("path");
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_mode(0o644);
    h.set_size(10);
    {
        let gnu = h.as_gnu_mut().expect("gnu");
        gnu.sparse[0].offset.copy_from_slice(b"00000010000\0");
        gnu.sparse[0].numbytes.copy_from_slice(b"00000000012\0");
        // GNU tar ends the map with an empty block at the real size.
        gnu.sparse[1].offset.copy_from_slice(b"00000020000\0");
        gnu.sparse[1].numbytes.copy_from_slice(b"00000000000\0");
        gnu.realsize.copy_from_slice(b"00000020000\0");
    }
    h.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&h, &b"0123456789"[..]).expect("append");
    let raw = builder.into_inner().expect("finish");
    let (base, result) = flat(&[raw]);
    result.expect("apply");
    let content = std::fs::read(root(&base).join("sparse")).expect("read");
    assert_eq!(content.len(), 8192);
    assert_eq!(&content[4096..4106], b"0123456789");
    assert!(content[..4096].iter().all(|&b| b == 0) && content[4106..].iter().all(|&b| b == 0));
}

#[test]
fn pax_sparse_1_0_files_are_reconstructed() {
    // GNU tar --format=pax sparse 1.0: map "1\n100\n5\n" padded to 512, then the data.
    let mut data = b"1\n100\n5\n".to_vec();
    data.resize(512, 0);
    data.extend_from_slice(b"hello");
    let layer = Layer::new()
        .file_with(
            b"GNUSparseFile.0/s",
            &data,
            0o644,
            0,
            0,
            &[
                ("GNU.sparse.major", b"1"),
                ("GNU.sparse.minor", b"0"),
                ("GNU.sparse.name", b"dir/s"),
                ("GNU.sparse.realsize", b"200"),
            ],
        )
        .bytes();
    let (base, result) = flat(&[layer]);
    result.expect("apply");
    let content = std::fs::read(root(&base).join("dir/s")).expect("read");
    assert_eq!(content.len(), 200);
    assert_eq!(&content[100..105], b"hello");
    assert!(content[..100].iter().all(|&b| b == 0));
}

#[test]
fn read_only_directories_still_get_their_children_unprivileged() {
    let layer = Layer::new()
        .dir_mode("ro", 0o500)
        .file("ro/f", b"f")
        .dir_mode("none", 0o000)
        .dir_mode("none/sub", 0o555)
        .file("none/sub/g", b"g")
        .bytes();
    let (base, result) = flat_with(&[layer], Privileges::Unprivileged);
    result.expect("apply");
    let mode = |p| {
        std::fs::symlink_metadata(root(&base).join(p))
            .expect("meta")
            .mode()
            & 0o7777
    };
    assert_eq!((mode("ro"), mode("none")), (0o500, 0o000));
    assert_eq!(read(&root(&base), "ro/f"), "f");
    if ducc_oci::is_root() {
        assert_eq!(read(&root(&base), "none/sub/g"), "g");
        assert_eq!(mode("none/sub"), 0o555);
    }
    crate::extract::remove_tree(base.path()).expect("cleanup");
}

// --- layer directories (B.4 53) and verbatim extraction ---

#[test]
fn overlay_layer_directories_hold_whiteout_devices_and_opaque_xattrs() {
    require_root!();
    let rows = [
        case(
            "overlay layer directories hold whiteout devices and opaque xattrs; whiteouts inside \
             an opaque directory are dropped, before or after the marker",
            vec![
                Layer::new()
                    .whiteout(".wh.gone")
                    .dir("d")
                    .whiteout("d/.wh.inner")
                    .whiteout("d/.wh..wh..opq")
                    .whiteout("d/.wh.after")
                    .file("d/kept", b"k")
                    .bytes(),
            ],
        )
        .in_layer_dir(LayerDirOptions::new())
        .is("gone", Node::Char(0))
        .paths_under("", &["d", "d/kept", "gone"])
        .xattr("d", "trusted.overlay.opaque", Some(b"y")),
        case(
            "an overlay whiteout then a same-layer directory makes it opaque",
            vec![
                Layer::new()
                    .whiteout(".wh.d")
                    .dir("d")
                    .file("d/new", b"n")
                    .bytes(),
            ],
        )
        .in_layer_dir(LayerDirOptions::new())
        .is("d", Node::Dir { mode: 0o755 })
        .xattr("d", "trusted.overlay.opaque", Some(b"y")),
    ];
    rows.into_iter().for_each(Case::check);
}

/// Issue 28: without xattrs an opaque directory is whiteout devices for what the stack below
/// has there and the layer does not provide, recursively under the layer's directories that lie
/// over lower ones; the report names the directories whose devices depend on the stack below.
#[test]
fn devices_only_form_writes_explicit_whiteouts_for_an_opaque_directory() {
    require_root!();
    let lower = Layer::new()
        .dir("o")
        .dir("o/sub")
        .file("o/sub/old", b"o")
        .file("o/sub/same", b"o")
        .file("o/gone", b"g")
        .dir("o/tree")
        .file("o/tree/leaf", b"l")
        .dir("d")
        .file("d/old", b"o")
        .file("plain", b"p")
        .bytes();
    let base = tempfile::tempdir().expect("tempdir");
    let lower_dir = base.path().join("lower");
    std::fs::create_dir(&lower_dir).expect("mkdir");
    let options = LayerDirOptions::new().whiteouts(WhiteoutFormat::OverlayDevices);
    extract_layer_dir(&lower[..], "lower", &lower_dir, &options).expect("lower");
    let upper = Layer::new()
        .dir("o")
        .whiteout("o/.wh..wh..opq")
        .whiteout("o/.wh.gone")
        .dir("o/sub")
        .file("o/sub/same", b"new")
        .file("o/new", b"n")
        .whiteout(".wh.d")
        .dir("d")
        .file("d/new", b"n")
        .whiteout(".wh.plain")
        .bytes();
    let upper_dir = base.path().join("upper");
    std::fs::create_dir(&upper_dir).expect("mkdir");
    let report = extract_layer_dir(
        &upper[..],
        "upper",
        &upper_dir,
        &options.clone().lower_layers(vec![lower_dir]),
    )
    .expect("upper");
    let s = snapshot(&upper_dir);
    assert_eq!(
        s.keys().cloned().collect::<Vec<_>>(),
        [
            "d",
            "d/new",
            "d/old",
            "o",
            "o/gone",
            "o/new",
            "o/sub",
            "o/sub/old",
            "o/sub/same",
            "o/tree",
            "plain"
        ]
    );
    for device in ["d/old", "o/gone", "o/sub/old", "o/tree", "plain"] {
        assert_eq!(s[device], Node::Char(0), "{device}");
    }
    for dir in ["o", "o/sub", "d"] {
        assert_eq!(xattr(&upper_dir.join(dir), "trusted.overlay.opaque"), None);
    }
    let explicit: Vec<String> = report
        .explicit_whiteout_dirs
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(explicit, ["d", "o"]);
}

#[test]
fn overlay_layer_refuses_content_that_overlayfs_would_misread() {
    require_root!();
    let layer = Layer::new()
        .device("fake-whiteout", tar::EntryType::Char, 0, 0)
        .bytes();
    let (_base, result) = layer_dir(layer, &LayerDirOptions::new());
    assert!(matches!(
        result.expect_err("refused"),
        Error::InvalidEntry { .. }
    ));
}

#[test]
fn oci_layer_directories_keep_whiteouts_as_files() {
    let layer = Layer::new()
        .whiteout(".wh.gone")
        .dir("d")
        .whiteout("d/.wh..wh..opq")
        .file("d/f", b"f")
        .bytes();
    let (base, result) = layer_dir(
        layer,
        &LayerDirOptions::new().whiteouts(WhiteoutFormat::Oci),
    );
    result.expect("apply");
    assert_eq!(
        paths(&root(&base)),
        [".wh.gone", "d", "d/.wh..wh..opq", "d/f"]
    );
}

#[test]
fn layer_directory_destination_must_exist_empty_and_be_a_directory() {
    let base = tempfile::tempdir().expect("tempdir");
    let layer = Layer::new().file("f", b"f").bytes();
    std::fs::write(base.path().join("file"), "x").expect("write");
    for (dest, why) in [
        ("missing", "does not exist"),
        ("file", "is not a directory"),
        ("", "is not empty"),
    ] {
        let err = extract_layer_dir(
            &layer[..],
            "l",
            &base.path().join(dest),
            &LayerDirOptions::new(),
        )
        .expect_err(dest);
        assert!(err.to_string().contains(why), "{dest}: {err}");
    }
}

#[test]
fn verbatim_extraction_keeps_whiteout_names_and_devices_as_they_are() {
    let layer = Layer::new()
        .whiteout(".wh.gone")
        .dir("d")
        .whiteout("d/.wh..wh..opq")
        .fifo("p")
        .bytes();
    let base = tempfile::tempdir().expect("tempdir");
    extract_canonical_tar(&layer[..], "canonical", base.path(), &ExtractOptions::new())
        .expect("apply");
    assert_eq!(paths(base.path()), [".wh.gone", "d", "d/.wh..wh..opq", "p"]);
}

// --- unprivileged for real (one thread dropped to nobody) and other additions ---

fn flat_as_nobody(layers: &[Vec<u8>]) -> (tempfile::TempDir, Result<Report, Error>) {
    let base = tempfile::tempdir().expect("tempdir");
    let result = crate::testutil::as_nobody(base.path(), || {
        std::fs::create_dir(base.path().join("root")).expect("mkdir");
        let mut flat = FlatExtractor::new(&base.path().join("root"), &ExtractOptions::new())?;
        for (i, layer) in layers.iter().enumerate() {
            flat.apply_layer(&layer[..], &format!("layer{i}"))?;
        }
        Ok(flat.finish())
    });
    (base, result)
}

#[test]
fn unprivileged_read_only_directories_of_this_and_lower_layers_still_get_children() {
    let first = Layer::new()
        .dir_mode("lower-ro", 0o555)
        .dir_mode("same", 0o500)
        .file("same/f", b"f")
        .bytes();
    let second = Layer::new().file("lower-ro/new", b"n").bytes();
    let (base, result) = flat_as_nobody(&[first, second]);
    let report = result.expect("apply");
    let mode = |p| {
        std::fs::symlink_metadata(root(&base).join(p))
            .expect("meta")
            .mode()
            & 0o7777
    };
    assert_eq!((mode("lower-ro"), mode("same")), (0o555, 0o500));
    assert_eq!(read(&root(&base), "same/f"), "f");
    assert_eq!(read(&root(&base), "lower-ro/new"), "n");
    // Owners 0:0 could not be applied by nobody: they are in the report.
    assert!(
        report
            .owners_not_applied
            .iter()
            .any(|o| o.path.to_string() == "same/f")
    );
}

#[test]
fn unprivileged_devices_are_skipped_and_owners_recorded() {
    let layer = Layer::new()
        .device("null", tar::EntryType::Char, 1, 3)
        .fifo("pipe")
        .file_with(b"owned", b"o", 0o644, 42, 43, &[])
        .bytes();
    let (base, result) = flat_as_nobody(&[layer]);
    let report = result.expect("no EPERM abort");
    assert_eq!(paths(&root(&base)), ["owned", "pipe"]);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.kind == WarningKind::DeviceSkipped)
    );
    assert!(
        report
            .owners_not_applied
            .iter()
            .any(|o| (o.uid, o.gid) == (42, 43))
    );
    let meta = std::fs::metadata(root(&base).join("owned")).expect("owned");
    if ducc_oci::is_root() {
        assert_eq!(meta.uid(), crate::testutil::NOBODY);
    }
}

#[test]
fn implicit_parents_of_a_layer_directory_take_the_lower_layers_metadata() {
    let lower_base = tempfile::tempdir().expect("lower");
    let lower = Layer::new().dir_with("tmp", 0o1777, 7_000, &[]).bytes();
    extract_layer_dir(
        &lower[..],
        "lower",
        lower_base.path(),
        &LayerDirOptions::new(),
    )
    .expect("lower");
    let options = LayerDirOptions::new().lower_layers(vec![lower_base.path().to_owned()]);
    let (base, result) = layer_dir(
        Layer::new()
            .file("tmp/x", b"x")
            .file("other/y", b"y")
            .bytes(),
        &options,
    );
    result.expect("apply");
    let meta = |p| std::fs::symlink_metadata(root(&base).join(p)).expect("meta");
    assert_eq!(meta("tmp").mode() & 0o7777, 0o1777);
    assert_eq!(meta("tmp").mtime(), 7_000);
    assert_eq!(meta("other").mode() & 0o7777, 0o755);
}

#[test]
fn libarchive_xattr_records_are_decoded() {
    // bsdtar writes LIBARCHIVE.xattr.<%-encoded name>=<base64 value, no padding>.
    let layer = Layer::new()
        .file_with(
            b"f",
            b"x",
            0o644,
            0,
            0,
            &[("LIBARCHIVE.xattr.user.a%3Db", b"aGk")],
        )
        .bytes();
    let mut seen = Vec::new();
    crate::read_entries(&layer[..], "l", |e, _| {
        seen.extend(e.xattrs.clone());
        Ok(())
    })
    .expect("parse");
    assert_eq!(
        seen,
        [crate::Xattr {
            name: b"user.a=b".to_vec(),
            value: b"hi".to_vec()
        }]
    );
    let bad = Layer::new()
        .file_with(
            b"f",
            b"x",
            0o644,
            0,
            0,
            &[("LIBARCHIVE.xattr.user.a", b"@@")],
        )
        .bytes();
    assert!(matches!(
        crate::read_entries(&bad[..], "l", |_, _| Ok(())),
        Err(Error::InvalidEntry { .. })
    ));
}

#[test]
fn extractors_and_readers_can_move_to_other_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<FlatExtractor>();
    assert_send::<crate::LayerReader<std::fs::File>>();
    assert_send::<crate::CanonicalTarWriter<std::fs::File>>();
    assert_send::<Report>();
    assert_send::<Error>();
}

#[test]
fn a_directory_keeps_its_time_when_later_layers_change_only_its_children() {
    // b2's umoci oracle: umoci restores parent metadata after every entry.
    let mut first = Layer::new();
    first.mtime = 1_600_000_000;
    first
        .dir("opq")
        .file("opq/old", b"o")
        .dir("run")
        .dir("var")
        .symlink("var/run", "/run");
    let mut second = Layer::new();
    second.mtime = 1_700_000_000;
    second
        .whiteout("opq/.wh..wh..opq")
        .file("opq/new", b"n")
        .file("var/run/pidfile", b"1");
    let mut third = Layer::new();
    third.mtime = 1_800_000_000;
    third.whiteout("opq/.wh.new");
    let (base, result) = flat(&[first.bytes(), second.bytes(), third.bytes()]);
    result.expect("apply");
    let mtime = |p| {
        std::fs::metadata(root(&base).join(p))
            .expect("meta")
            .mtime()
    };
    assert_eq!(mtime("opq"), 1_600_000_000);
    assert_eq!(mtime("run"), 1_600_000_000);
    assert_eq!(read(&root(&base), "run/pidfile"), "1");
    assert!(paths(&root(&base)).iter().all(|p| !p.starts_with("opq/")));
}

#[test]
fn a_layer_directory_writes_through_a_lower_layer_symlink_where_it_points() {
    // b2's overlay consumer test: the merged view must equal the flat tree.
    let lower_base = tempfile::tempdir().expect("lower");
    let lower = Layer::new()
        .dir_with(
            "run",
            0o755,
            5_000,
            &[("SCHILY.xattr.user.origin", b"lower")],
        )
        .dir("var")
        .symlink("var/run", "/run")
        .symlink("up", "../../..")
        .bytes();
    let lower_report = extract_layer_dir(
        &lower[..],
        "lower",
        lower_base.path(),
        &LayerDirOptions::new(),
    )
    .expect("lower");
    let options = LayerDirOptions::new().lower_layers(vec![lower_base.path().to_owned()]);
    let upper = Layer::new()
        .file("var/run/pidfile", b"1")
        .file("up/escaped", b"e")
        .bytes();
    let (base, result) = layer_dir(upper, &options);
    result.expect("apply");
    assert_eq!(
        paths(&root(&base)),
        ["escaped", "run", "run/pidfile", "var"]
    );
    let meta = std::fs::metadata(root(&base).join("run")).expect("run");
    assert_eq!(meta.mtime(), 5_000);
    let user_xattrs = !lower_report.warnings.iter().any(
        |w| matches!(&w.kind, WarningKind::XattrSkipped { name, .. } if name == "user.origin"),
    );
    if user_xattrs {
        assert_eq!(
            xattr(&root(&base).join("run"), "user.origin"),
            Some(b"lower".to_vec())
        );
    }
}

#[test]
fn damaged_archives_fail_cleanly_and_never_write_outside() {
    let layer = Layer::new()
        .dir("d")
        .symlink("d/up", "../../..")
        .file("d/up/f", b"x")
        .hardlink("h", "d/up/f")
        .file_with(
            b"p",
            b"y",
            0o644,
            0,
            0,
            &[("SCHILY.xattr.user.a", b"b"), ("mtime", b"1.5")],
        )
        .bytes();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for round in 0..150 {
        let mut damaged = layer.clone();
        // xorshift: a few bytes changed in the headers and PAX records.
        for _ in 0..1 + round % 4 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let at = (state % (damaged.len() as u64 / 2)) as usize;
            damaged[at] = (state >> 32) as u8;
        }
        if round % 5 == 0 {
            damaged.truncate((state % damaged.len() as u64) as usize);
        }
        let base = tempfile::tempdir().expect("tempdir");
        let inside = base.path().join("a/b/root");
        std::fs::create_dir_all(&inside).expect("mkdir");
        if let Ok(mut flat) = FlatExtractor::new(&inside, &ExtractOptions::new()) {
            let _ = flat.apply_layer(&damaged[..], "damaged");
        }
        let outside: Vec<_> = paths(base.path())
            .into_iter()
            .filter(|p| !p.starts_with("a/b/root"))
            .collect();
        assert_eq!(outside, ["a", "a/b"], "round {round}");
    }
}

#[test]
fn unprivileged_overlay_layers_use_whiteout_devices_and_the_user_opaque_xattr() {
    let layer = Layer::new()
        .whiteout(".wh.gone")
        .dir("d")
        .whiteout("d/.wh..wh..opq")
        .file("d/f", b"f")
        .bytes();
    let base = tempfile::tempdir().expect("tempdir");
    let dest = base.path().join("root");
    let result = crate::testutil::as_nobody(base.path(), || {
        std::fs::create_dir(&dest).expect("mkdir");
        extract_layer_dir(&layer[..], "l", &dest, &LayerDirOptions::new())
    });
    let report = match result {
        Err(Error::Fs {
            op: "set opaque xattr",
            source,
            ..
        }) if source.raw_os_error() == Some(rustix::io::Errno::NOTSUP.raw_os_error()) => {
            ducc_tests::skip_or_fail("the temp filesystem has no user xattrs");
            return;
        }
        other => other.expect("apply"),
    };
    assert_eq!(snapshot(&dest)["gone"], Node::Char(0));
    assert_eq!(
        xattr(&dest.join("d"), "user.overlay.opaque"),
        Some(b"y".to_vec())
    );
    assert_eq!(xattr(&dest.join("d"), "trusted.overlay.opaque"), None);
    assert!(report.warnings.iter().any(
        |w| matches!(&w.kind, WarningKind::XattrSkipped { name, .. } if name == "trusted.overlay.opaque")
    ));
}

#[test]
fn unprivileged_whiteouts_remove_read_only_lower_directories() {
    let first = Layer::new()
        .dir("gone")
        .dir_mode("gone/ro", 0o555)
        .file("gone/ro/f", b"f")
        .dir("kept")
        .bytes();
    let second = Layer::new().whiteout(".wh.gone").bytes();
    let (base, result) = flat_as_nobody(&[first, second]);
    result.expect("apply");
    assert_eq!(paths(&root(&base)), ["kept"]);
}
