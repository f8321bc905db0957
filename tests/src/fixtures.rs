//! Test images as OCI layouts on disk, built once per target directory and reused.
//!
//! Every image is written by this module itself: layer tars with the `tar` crate (raw PAX records
//! where the builder has no API), compressed with flate2 or zstd, plus `oci-layout`, `index.json`,
//! the manifest and the config under `blobs/sha256/`. The layouts live under
//! [`fixtures_dir`]`/images-v`[`FIXTURES_VERSION`], so changing a recipe and bumping the version
//! rebuilds them. Builds are serialised by a lock file and promoted with an atomic rename, so test
//! processes that race for the same image build it once.
//!
//! Images:
//! - `debian`: a real Debian bookworm rootfs from `debootstrap --variant=minbase`, split into two
//!   gzip layers (everything but `usr/share`, then `usr/share`, so some hardlinks cross layers), plus
//!   a third layer that changes it the way a Dockerfile would (opaque directory, whiteouts, a
//!   replaced file, a hardlink to a lower file, xattrs).
//! - synthetic images, one per theme: `whiteouts`, `typechange`, `hardlinks`, `longnames`,
//!   `special` (xattrs, devices, FIFOs, setuid/setgid/sticky, owners, fractional mtimes), `sparse`.
//! - `mixed`: the `whiteouts` layers stored as a plain tar, a multi-member gzip and a gzip stream
//!   labelled as plain tar.
//! - `<name>-zstd` for every image above: the same layers compressed with zstd.
//!
//! [`Image::oracle_twin`] names the image umoci should unpack for comparison (umoci 0.4.7 reads
//! neither zstd nor mislabelled layers).

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// Version of the image recipes; bump it when a recipe changes so cached layouts are rebuilt.
pub const FIXTURES_VERSION: &str = "2";

/// Version of the debootstrap recipe (the rootfs directory is reused across image versions).
const ROOTFS_VERSION: &str = "bookworm-minbase-1";

/// Version of the benchmark image recipe.
const BENCH_VERSION: &str = "bookworm-bench-1";

/// Tag every fixture layout carries in `index.json`.
pub const TAG: &str = "latest";

/// Media type of a gzip layer.
pub const MEDIA_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Media type of a zstd layer.
pub const MEDIA_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Media type of an uncompressed layer.
pub const MEDIA_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// The synthetic images (no network needed).
pub const SYNTHETIC: &[&str] = &[
    "whiteouts",
    "typechange",
    "hardlinks",
    "longnames",
    "special",
    "sparse",
];

/// Every image the tests use: the synthetic ones, `mixed`, `debian`, and the zstd twins.
pub fn all_names() -> Vec<String> {
    let mut names: Vec<String> = SYNTHETIC.iter().map(|s| (*s).to_owned()).collect();
    names.push("mixed".to_owned());
    names.push("sparse-dense".to_owned());
    names.push("debian".to_owned());
    let zstd: Vec<String> = names
        .iter()
        .filter(|n| *n != "mixed" && *n != "sparse-dense")
        .map(|n| format!("{n}-zstd"))
        .collect();
    names.extend(zstd);
    names
}

/// One layer of a fixture image, as written in the manifest and config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// Media type in the manifest.
    pub media_type: String,
    /// `sha256:<hex>` of the blob as stored.
    pub digest: String,
    /// `sha256:<hex>` of the uncompressed tar (the config's diff_id).
    pub diff_id: String,
    /// Size of the blob in bytes.
    pub size: u64,
}

/// A fixture image: an OCI layout directory with one tagged manifest.
#[derive(Debug, Clone)]
pub struct Image {
    /// Fixture name (`debian`, `whiteouts-zstd`, ...).
    pub name: String,
    /// The OCI layout directory.
    pub layout: PathBuf,
    /// The tag in `index.json`.
    pub tag: String,
    /// `sha256:<hex>` of the manifest.
    pub manifest_digest: String,
    /// `sha256:<hex>` of the config.
    pub config_digest: String,
    /// Layers, bottom first.
    pub layers: Vec<LayerInfo>,
    /// The image umoci should unpack as the expected tree (itself when umoci can read it).
    pub oracle_twin: String,
    /// Directories that no layer lists explicitly (their mtime is the unpacker's choice).
    pub implicit_dirs: Vec<String>,
}

impl Image {
    /// `LAYOUT:TAG`, the form umoci and skopeo's `oci:` transport take.
    pub fn layout_ref(&self) -> String {
        format!("{}:{}", self.layout.display(), self.tag)
    }

    /// Path of a blob (`sha256:<hex>`) in the layout.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.layout.join("blobs/sha256").join(hex)
    }

    /// Opens a layer blob for reading.
    pub fn open_layer(&self, index: usize) -> io::Result<File> {
        let layer = self
            .layers
            .get(index)
            .ok_or_else(|| io::Error::other(format!("image {} has no layer {index}", self.name)))?;
        File::open(self.blob_path(&layer.digest))
    }

    fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "tag": self.tag,
            "manifest_digest": self.manifest_digest,
            "config_digest": self.config_digest,
            "oracle_twin": self.oracle_twin,
            "implicit_dirs": self.implicit_dirs,
            "layers": self.layers.iter().map(|l| json!({
                "media_type": l.media_type, "digest": l.digest, "diff_id": l.diff_id, "size": l.size,
            })).collect::<Vec<_>>(),
        })
    }

    fn from_json(layout: PathBuf, v: &Value) -> io::Result<Image> {
        let s = |k: &str| -> io::Result<String> {
            v[k].as_str().map(str::to_owned).ok_or_else(|| {
                io::Error::other(format!("fixture.json in {}: no {k}", layout.display()))
            })
        };
        let layers = v["layers"]
            .as_array()
            .ok_or_else(|| io::Error::other("fixture.json: no layers"))?
            .iter()
            .map(|l| LayerInfo {
                media_type: l["media_type"].as_str().unwrap_or_default().to_owned(),
                digest: l["digest"].as_str().unwrap_or_default().to_owned(),
                diff_id: l["diff_id"].as_str().unwrap_or_default().to_owned(),
                size: l["size"].as_u64().unwrap_or_default(),
            })
            .collect();
        let implicit_dirs = v["implicit_dirs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Image {
            name: s("name")?,
            tag: s("tag")?,
            manifest_digest: s("manifest_digest")?,
            config_digest: s("config_digest")?,
            oracle_twin: s("oracle_twin")?,
            implicit_dirs,
            layers,
            layout,
        })
    }
}

/// Where the fixtures live: `$DUCC_FIXTURES_DIR`, else `ducc-fixtures` in cargo's target directory
/// (`$CARGO_TARGET_DIR`, else the directory holding `CACHEDIR.TAG` above the running executable).
pub fn fixtures_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DUCC_FIXTURES_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("ducc-fixtures");
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1) {
            if dir.join("CACHEDIR.TAG").is_file() {
                return dir.join("ducc-fixtures");
            }
        }
    }
    std::env::temp_dir().join("ducc-fixtures")
}

/// Returns the fixture image `name`, building it (and what it depends on) if it is missing.
///
/// # Errors
/// The name is unknown, a tool is missing (the message says what to install), or writing fails.
pub fn image(name: &str) -> io::Result<Image> {
    let dir = fixtures_dir().join(format!("images-v{FIXTURES_VERSION}"));
    load_or_build(&dir, name, |tmp, layout| {
        let (spec, twin) = recipe(name)?;
        write_image(name, tmp, layout, spec, &twin)
    })
}

/// The image laid out at `dir/name`; if it is missing, `build(tmp, layout)` writes it into a
/// temporary directory that is then renamed into place. One process builds while the others
/// wait on `dir/.lock`, and find it built.
fn load_or_build(
    dir: &Path,
    name: &str,
    build: impl FnOnce(&Path, &Path) -> io::Result<Image>,
) -> io::Result<Image> {
    let layout = dir.join(name);
    if let Some(image) = load(&layout)? {
        return Ok(image);
    }
    fs::create_dir_all(dir)?;
    let _lock = Lock::acquire(&dir.join(".lock"))?;
    // Another process may have built it while we waited for the lock.
    if let Some(image) = load(&layout)? {
        return Ok(image);
    }
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    remove_stale(&tmp)?;
    let image = build(&tmp, &layout).inspect_err(|_| {
        let _ = remove_stale(&tmp);
    })?;
    fs::rename(&tmp, &layout)?;
    Ok(image)
}

/// Builds every image of [`all_names`] that is missing and returns them all.
///
/// # Errors
/// As [`image`].
pub fn build_all() -> io::Result<Vec<Image>> {
    all_names().iter().map(|n| image(n)).collect()
}

/// The benchmark image: Debian bookworm minbase plus build-essential, python3, perl and friends
/// (about 1 GB uncompressed) in four gzip layers. Built on first use; never used by the tests.
///
/// # Errors
/// As [`image`].
pub fn bench_image() -> io::Result<Image> {
    let dir = fixtures_dir().join(format!("bench-{BENCH_VERSION}"));
    load_or_build(&dir, "image", |tmp, layout| bench_layers(&dir, tmp, layout))
}

/// Writes the benchmark image (see [`bench_image`]) to `tmp`, its rootfs built under `dir`.
fn bench_layers(dir: &Path, tmp: &Path, layout: &Path) -> io::Result<Image> {
    let rootfs = debootstrap_rootfs(
        &dir.join("rootfs"),
        &[
            "build-essential",
            "python3",
            "python3-dev",
            "perl",
            "git",
            "cmake",
            "gfortran",
            "libboost-dev",
            "vim",
            "curl",
        ],
    )?;
    let spec = ImageSpec {
        layers: vec![
            LayerSource::Tree {
                rootfs: rootfs.clone(),
                prefixes: vec![],
                exclude: vec!["usr/lib", "usr/share", "usr/include"],
            },
            LayerSource::Tree {
                rootfs: rootfs.clone(),
                prefixes: vec!["usr/lib"],
                exclude: vec![],
            },
            LayerSource::Tree {
                rootfs: rootfs.clone(),
                prefixes: vec!["usr/share"],
                exclude: vec![],
            },
            LayerSource::Tree {
                rootfs,
                prefixes: vec!["usr/include"],
                exclude: vec![],
            },
        ],
        compression: vec![Compression::Gzip; 4],
    };
    write_image("bench", tmp, layout, spec, "bench")
}

/// A directory under [`fixtures_dir`]`/cache/KEY`, built once by `build` (given an empty
/// directory) under a lock and promoted by an atomic rename, so racing test processes build it
/// once. Use a key that changes whenever the inputs do (e.g. a manifest digest).
///
/// # Errors
/// What `build` returns, or I/O errors around it.
pub fn cached_dir(key: &str, build: impl FnOnce(&Path) -> io::Result<()>) -> io::Result<PathBuf> {
    let base = fixtures_dir().join("cache");
    let done = base.join(key);
    if done.is_dir() {
        return Ok(done);
    }
    fs::create_dir_all(&base)?;
    let _lock = Lock::acquire(&base.join(".lock"))?;
    if done.is_dir() {
        return Ok(done);
    }
    let tmp = base.join(format!(".{key}.tmp-{}", std::process::id()));
    remove_stale(&tmp)?;
    fs::create_dir_all(&tmp)?;
    if let Err(e) = build(&tmp) {
        let _ = remove_stale(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, &done)?;
    Ok(done)
}

fn load(layout: &Path) -> io::Result<Option<Image>> {
    let meta = layout.join("fixture.json");
    match fs::read(&meta) {
        Ok(bytes) => {
            let v: Value = serde_json::from_slice(&bytes).map_err(io::Error::other)?;
            Image::from_json(layout.to_owned(), &v).map(Some)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes a leftover build directory, unless something is mounted below it (a debootstrap that
/// died with `proc` mounted): deleting through a mount would reach the host.
fn remove_stale(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = dir.to_string_lossy().into_owned();
    if mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| m.starts_with(prefix.as_str()))
    {
        return Err(io::Error::other(format!(
            "{} has mounts below it; unmount them and remove it by hand",
            dir.display()
        )));
    }
    fs::remove_dir_all(dir)
}

/// An exclusive `flock` on a file, released on drop.
struct Lock(File);

impl Lock {
    fn acquire(path: &Path) -> io::Result<Lock> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)?;
        Ok(Lock(file))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(&self.0, rustix::fs::FlockOperation::Unlock);
    }
}

// ---------------------------------------------------------------------------------------------
// Entries: what a synthetic layer holds

/// What an entry is.
#[derive(Debug, Clone)]
enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(Vec<u8>),
    Hardlink(Vec<u8>),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
    /// A sparse file of this size with data at the given offsets (written from a holey file).
    Sparse(u64, Vec<(u64, Vec<u8>)>),
}

/// One tar entry of a synthetic layer.
#[derive(Debug, Clone)]
struct Entry {
    path: Vec<u8>,
    kind: Kind,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    mtime_nanos: u32,
    xattrs: Vec<(String, Vec<u8>)>,
    pax: bool,
}

const MTIME: u64 = 1_600_000_000;

fn entry(path: impl AsRef<[u8]>, kind: Kind, mode: u32) -> Entry {
    Entry {
        path: path.as_ref().to_vec(),
        kind,
        mode,
        uid: 0,
        gid: 0,
        mtime: MTIME,
        mtime_nanos: 0,
        xattrs: vec![],
        pax: false,
    }
}

fn dir(path: &str, mode: u32) -> Entry {
    entry(path, Kind::Dir, mode)
}

fn file(path: impl AsRef<[u8]>, content: &str) -> Entry {
    entry(path, Kind::File(content.as_bytes().to_vec()), 0o644)
}

fn symlink(path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Entry {
    entry(path, Kind::Symlink(target.as_ref().to_vec()), 0o777)
}

fn hardlink(path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Entry {
    entry(path, Kind::Hardlink(target.as_ref().to_vec()), 0o644)
}

fn whiteout(dir_and_name: &str) -> Entry {
    let (parent, name) = dir_and_name
        .rsplit_once('/')
        .map_or(("", dir_and_name), |(p, n)| (p, n));
    let path = if parent.is_empty() {
        format!(".wh.{name}")
    } else {
        format!("{parent}/.wh.{name}")
    };
    entry(path, Kind::File(vec![]), 0o644)
}

fn opaque(dir: &str) -> Entry {
    entry(format!("{dir}/.wh..wh..opq"), Kind::File(vec![]), 0o644)
}

impl Entry {
    fn owner(mut self, uid: u64, gid: u64) -> Entry {
        self.uid = uid;
        self.gid = gid;
        self
    }
    fn mtime(mut self, secs: u64, nanos: u32) -> Entry {
        self.mtime = secs;
        self.mtime_nanos = nanos;
        if nanos != 0 {
            self.pax = true;
        }
        self
    }
    fn xattr(mut self, key: &str, value: &[u8]) -> Entry {
        self.xattrs.push((key.to_owned(), value.to_vec()));
        self.pax = true;
        self
    }
    fn pax(mut self) -> Entry {
        self.pax = true;
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Recipes

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    Gzip,
    /// gzip with a new member every 64 KiB of input
    GzipMulti,
    /// gzip bytes with the plain-tar media type
    GzipAsTar,
    Zstd,
    Plain,
}

impl Compression {
    fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip | Compression::GzipMulti => MEDIA_GZIP,
            Compression::GzipAsTar | Compression::Plain => MEDIA_TAR,
            Compression::Zstd => MEDIA_ZSTD,
        }
    }
}

enum LayerSource {
    Entries(Vec<Entry>),
    /// Paths of a directory tree: those under one of `prefixes` (everything when empty), minus
    /// those under one of `exclude`.
    Tree {
        rootfs: PathBuf,
        prefixes: Vec<&'static str>,
        exclude: Vec<&'static str>,
    },
}

struct ImageSpec {
    layers: Vec<LayerSource>,
    compression: Vec<Compression>,
}

fn recipe(name: &str) -> io::Result<(ImageSpec, String)> {
    let (base, zstd) = match name.strip_suffix("-zstd") {
        Some(base) => (base, true),
        None => (name, false),
    };
    let layers = match base {
        "whiteouts" | "mixed" => whiteouts_layers(),
        "typechange" => typechange_layers(),
        "hardlinks" => hardlinks_layers(),
        "longnames" => longnames_layers(),
        "special" => special_layers(),
        "sparse" => sparse_layers(),
        // umoci 0.4.7 rejects old-GNU sparse entries: its twin holds the same files densely.
        "sparse-dense" => vec![entries(sparse_entries().into_iter().map(densify).collect())],
        "debian" => debian_layers()?,
        _ => return Err(io::Error::other(format!("unknown fixture image {name}"))),
    };
    let n = layers.len();
    let compression = if zstd {
        vec![Compression::Zstd; n]
    } else if base == "mixed" {
        let mut c = vec![
            Compression::Plain,
            Compression::GzipMulti,
            Compression::GzipAsTar,
        ];
        c.resize(n, Compression::Gzip);
        c
    } else {
        vec![Compression::Gzip; n]
    };
    let twin = match base {
        "mixed" => "whiteouts".to_owned(),
        "sparse" => "sparse-dense".to_owned(),
        _ => base.to_owned(),
    };
    Ok((
        ImageSpec {
            layers,
            compression,
        },
        twin,
    ))
}

fn entries(list: Vec<Entry>) -> LayerSource {
    LayerSource::Entries(list)
}

/// Plain and opaque whiteouts, in every order the spec allows.
fn whiteouts_layers() -> Vec<LayerSource> {
    vec![
        entries(vec![
            dir("etc", 0o755),
            file("etc/gone", "lower file, whited out in layer 2\n"),
            file("etc/keep", "lower keep\n"),
            file("etc/keep2", "lower keep2\n"),
            dir("data", 0o755),
            dir("data/sub", 0o750),
            file("data/sub/x", "x\n"),
            file("data/file", "data file\n"),
            dir("opq", 0o755),
            file("opq/lower1", "lower1\n"),
            dir("opq/lowerdir", 0o755),
            file("opq/lowerdir/deep", "deep\n"),
            dir("opq2", 0o755),
            file("opq2/lower", "lower\n"),
            dir("opq2/sub", 0o755),
            file("opq2/sub/bar", "lower bar\n"),
            dir("same", 0o755),
            file("same/f", "lower f\n"),
            dir("untouched", 0o755),
            file("untouched/a", "a\n"),
        ]),
        entries(vec![
            // A whiteout hides a lower file and a lower directory tree.
            whiteout("etc/gone"),
            whiteout("data"),
            // Whiteout before a same-layer file of the same name: lower gone, new file stays.
            whiteout("etc/keep"),
            file("etc/keep", "upper keep\n"),
            // A whiteout typed as a symlink still is a whiteout.
            entry("etc/.wh.keep2", Kind::Symlink(b"whatever".to_vec()), 0o777),
            // Opaque first, then same-layer children.
            opaque("opq"),
            file("opq/new", "new\n"),
            // Opaque last (the spec's example): same-layer children survive, lower ones go.
            dir("opq2", 0o700),
            dir("opq2/sub", 0o755),
            file("opq2/sub/foo", "upper foo\n"),
            opaque("opq2"),
            // Whiteout after a same-layer file: it hides only lower layers, the file stays.
            file("same/f", "upper f\n"),
            whiteout("same/f"),
            // Whiteout of something that never existed: no-op.
            whiteout("nothing-here"),
            // Opaque marker on a directory no lower layer has.
            opaque("fresh"),
            file("fresh/child", "child\n"),
        ]),
        entries(vec![
            // A later layer recreates what layer 2 removed, and removes what layer 2 added.
            dir("data", 0o711),
            file("data/again", "again\n"),
            whiteout("opq/new"),
            whiteout("untouched/a"),
        ]),
    ]
}

/// Each type replaced by each other type.
fn typechange_layers() -> Vec<LayerSource> {
    vec![
        entries(vec![
            dir("d2f", 0o755),
            file("d2f/child", "child\n"),
            file("f2l", "file\n"),
            dir("target", 0o755),
            file("target/t", "t\n"),
            symlink("l2d", "target"),
            file("f2d", "file\n"),
            dir("d2l", 0o755),
            file("d2l/c", "c\n"),
            symlink("l2f", "/etc/passwd"),
            dir("run", 0o755),
            dir("var", 0o755),
            symlink("var/run", "/run"),
            symlink("up", "../../../.."),
            file("fifo2f", "placeholder\n"),
        ]),
        entries(vec![
            file("d2f", "now a file\n"),
            symlink("f2l", "d2f"),
            dir("l2d", 0o755),
            file("l2d/inner", "inner\n"),
            dir("f2d", 0o755),
            file("f2d/x", "x\n"),
            symlink("d2l", "target"),
            file("l2f", "now a file\n"),
            // Written through an absolute symlink parent: lands in <root>/run, never the host.
            file("var/run/pidfile", "42\n"),
            // Written through a relative symlink that climbs out: clamped to the root.
            file("up/escaped", "stays inside\n"),
            entry("fifo2f", Kind::Fifo, 0o600),
        ]),
        entries(vec![
            // A symlink followed by a regular file of the same name in one layer: the file
            // replaces the link and nothing is written through it.
            symlink("sym-then-file", "target/t"),
            file("sym-then-file", "own content\n"),
            // A symlink to a directory followed by a directory entry of the same name.
            symlink("sym-then-dir", "target"),
            dir("sym-then-dir", 0o700),
            // Duplicate entries: the last one wins.
            file("dup", "first\n"),
            file("dup", "second\n"),
        ]),
    ]
}

/// Hardlinks inside a layer, across layers, to symlinks, with absolute targets, over files.
fn hardlinks_layers() -> Vec<LayerSource> {
    vec![
        entries(vec![
            dir("bin", 0o755),
            entry(
                "bin/tool",
                Kind::File(b"#!/bin/sh\necho tool\n".to_vec()),
                0o755,
            ),
            hardlink("bin/tool2", "bin/tool"),
            hardlink("bin/tool3", "bin/tool"),
            dir("lib", 0o755),
            file("lib/a", "library a\n"),
            file("lib/b", "library b, replaced by a link in layer 2\n"),
            symlink("sym", "bin/tool"),
            hardlink("sym-hard", "sym"),
            entry("fifo", Kind::Fifo, 0o644),
            hardlink("fifo-hard", "fifo"),
        ]),
        entries(vec![
            // To a lower-layer file.
            hardlink("bin/alias", "lib/a"),
            // Absolute target (kaniko writes these).
            hardlink("abs-link", "/bin/tool"),
            // Over an existing lower file.
            hardlink("lib/b", "lib/a"),
            dir("new", 0o755),
            file("new/f", "new f\n"),
            hardlink("new/g", "new/f"),
        ]),
    ]
}

fn long_component(c: char, len: usize) -> String {
    std::iter::repeat_n(c, len).collect()
}

/// Names and link targets beyond the ustar limits, GNU and PAX encodings, non-UTF-8 names.
fn longnames_layers() -> Vec<LayerSource> {
    let c150 = long_component('a', 150);
    let c255 = long_component('b', 255);
    let c200 = long_component('c', 200);
    let deep = format!("deep/{c200}/{c200}");
    let file_gnu = format!("gnu/{c150}");
    let file_255 = format!("gnu/{c255}");
    let file_pax = format!("{deep}/pax-file");
    vec![
        entries(vec![
            dir("gnu", 0o755),
            file(&file_gnu, "gnu long name\n"),
            file(&file_255, "255-byte component\n"),
            dir("deep", 0o755),
            dir(&format!("deep/{c200}"), 0o755).pax(),
            dir(&deep, 0o755).pax(),
            file(&file_pax, "pax long name, path over 400 bytes\n").pax(),
            symlink(format!("gnu/link-{}", long_component('d', 10)), &file_255),
            symlink("pax-link", format!("/{file_pax}")).pax(),
            entry(
                b"bin\xff\xfe-latin1",
                Kind::File(b"not utf-8\n".to_vec()),
                0o644,
            ),
        ]),
        entries(vec![
            hardlink(format!("gnu/hard-{c150}"), &file_gnu),
            hardlink("hard-to-pax", &file_pax).pax(),
            whiteout(&file_255),
        ]),
    ]
}

/// A `security.capability` value (v2, effective, cap_net_raw permitted).
const CAP_NET_RAW: [u8; 20] = [
    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// xattrs, device nodes, FIFOs, special mode bits, owners and fractional mtimes.
fn special_layers() -> Vec<LayerSource> {
    vec![
        entries(vec![
            dir("usr", 0o755),
            dir("usr/bin", 0o755),
            entry(
                "usr/bin/ping",
                Kind::File(b"\x7fELF not really\n".to_vec()),
                0o755,
            )
            .xattr("security.capability", &CAP_NET_RAW)
            .xattr("user.origin", b"fixture"),
            entry("usr/bin/su", Kind::File(b"setuid\n".to_vec()), 0o4755),
            entry("usr/bin/wall", Kind::File(b"setgid\n".to_vec()), 0o2755).owner(0, 5),
            dir("tmp", 0o1777),
            dir("shared", 0o2775)
                .owner(1000, 1000)
                .xattr("user.dirnote", b"on a directory"),
            entry("shared/binary-xattr", Kind::File(b"x\n".to_vec()), 0o640)
                .owner(1000, 100)
                .xattr("user.bin", &[0, 1, 2, 255, 254]),
            dir("dev", 0o755),
            entry("dev/null", Kind::Char(1, 3), 0o666),
            entry("dev/loop0", Kind::Block(7, 0), 0o660).owner(0, 6),
            entry("dev/bigminor", Kind::Char(240, 70000), 0o600),
            entry("dev/initctl", Kind::Fifo, 0o600),
            entry(
                "home-nobody",
                Kind::File(b"owned by nobody\n".to_vec()),
                0o600,
            )
            .owner(65534, 65534),
            entry(
                "big-uid",
                Kind::File(b"uid beyond 16 bits\n".to_vec()),
                0o644,
            )
            .owner(100_000, 200_000),
            entry("no-perms", Kind::File(b"mode 000\n".to_vec()), 0o000),
            file("fraction", "mtime with nanoseconds\n").mtime(1_500_000_000, 123_456_789),
            file("future", "far-future mtime\n").mtime(4_102_444_800, 0),
            symlink("link-owned", "usr/bin/ping")
                .owner(1000, 1000)
                .mtime(1_400_000_000, 0),
            // Read-only directory with children in the same layer.
            dir("ro", 0o500),
            file("ro/child", "inside a 0500 directory\n"),
            dir("ro/sub", 0o000),
        ]),
        entries(vec![
            // Dir over dir: children stay, metadata comes from the upper entry.
            dir("shared", 0o750)
                .owner(2000, 2000)
                .xattr("user.dirnote", b"replaced"),
            // xattrs replaced on a file that changes.
            entry(
                "usr/bin/ping",
                Kind::File(b"\x7fELF upper\n".to_vec()),
                0o4711,
            )
            .xattr("security.capability", &CAP_NET_RAW),
            dir("tmp", 0o1777).mtime(1_700_000_000, 500),
        ]),
    ]
}

fn sparse_layers() -> Vec<LayerSource> {
    vec![entries(sparse_entries())]
}

fn sparse_entries() -> Vec<Entry> {
    vec![
        dir("sparse", 0o755),
        entry(
            "sparse/holes",
            Kind::Sparse(
                8 << 20,
                vec![
                    (1 << 20, b"middle".repeat(1000)),
                    ((6 << 20) + 17, b"tail".to_vec()),
                ],
            ),
            0o644,
        ),
        entry(
            "sparse/leading-data",
            Kind::Sparse(3 << 20, vec![(0, vec![7u8; 70_000])]),
            0o600,
        ),
        entry("sparse/all-hole", Kind::Sparse(2 << 20, vec![]), 0o644),
        file("sparse/plain", "not sparse\n"),
    ]
}

/// The same entry with a sparse file written out in full.
fn densify(mut e: Entry) -> Entry {
    if let Kind::Sparse(size, chunks) = &e.kind {
        let mut content = vec![0u8; usize::try_from(*size).unwrap_or(0)];
        for (offset, data) in chunks {
            let at = usize::try_from(*offset).unwrap_or(0);
            content[at..at + data.len()].copy_from_slice(data);
        }
        e.kind = Kind::File(content);
    }
    e
}

/// The real Debian rootfs in two layers plus a third that edits it like a Dockerfile would.
fn debian_layers() -> io::Result<Vec<LayerSource>> {
    let rootfs = debootstrap_rootfs(
        &fixtures_dir().join(format!("rootfs-{ROOTFS_VERSION}")),
        &[],
    )?;
    Ok(vec![
        LayerSource::Tree {
            rootfs: rootfs.clone(),
            prefixes: vec![],
            exclude: vec!["usr/share"],
        },
        LayerSource::Tree {
            rootfs,
            prefixes: vec!["usr/share"],
            exclude: vec![],
        },
        entries(vec![
            dir("usr/share/doc", 0o755),
            opaque("usr/share/doc"),
            file(
                "usr/share/doc/README",
                "documentation removed to save space\n",
            ),
            whiteout("etc/motd"),
            whiteout("var/cache/debconf"),
            entry(
                "etc/hostname",
                Kind::File(b"ducc-fixture\n".to_vec()),
                0o644,
            ),
            dir("usr/local/bin", 0o755),
            hardlink("usr/local/bin/dpkg-alias", "usr/bin/dpkg"),
            entry(
                "usr/local/bin/netcap",
                Kind::File(b"capability holder\n".to_vec()),
                0o755,
            )
            .xattr("security.capability", &CAP_NET_RAW)
            .xattr("user.note", b"set by the fixture"),
        ]),
    ])
}

/// Runs debootstrap into `dest` unless it is there already; returns `dest`.
fn debootstrap_rootfs(dest: &Path, include: &[&str]) -> io::Result<PathBuf> {
    if dest.join("usr/bin/dpkg").exists() {
        return Ok(dest.to_owned());
    }
    let parent = dest
        .parent()
        .ok_or_else(|| io::Error::other("rootfs path has no parent"))?;
    fs::create_dir_all(parent)?;
    let _lock = Lock::acquire(&parent.join(".rootfs.lock"))?;
    if dest.join("usr/bin/dpkg").exists() {
        return Ok(dest.to_owned());
    }
    let program = ["/usr/sbin/debootstrap", "/sbin/debootstrap"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .ok_or_else(|| {
            io::Error::other(
                "debootstrap not found: install it (`apt-get install debootstrap`, or `cargo xtask deps`)",
            )
        })?;
    let mirror = std::env::var("DUCC_DEBIAN_MIRROR")
        .unwrap_or_else(|_| "http://deb.debian.org/debian".to_owned());
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        dest.file_name()
            .map(OsStr::to_string_lossy)
            .unwrap_or_default(),
        std::process::id()
    ));
    remove_stale(&tmp)?;
    let mut cmd = Command::new(program);
    cmd.arg("--variant=minbase");
    if !include.is_empty() {
        cmd.arg(format!("--include={}", include.join(",")));
    }
    cmd.arg("bookworm").arg(&tmp).arg(&mirror);
    eprintln!("fixtures: running {cmd:?} (takes a minute or more)");
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "debootstrap into {} failed ({}): {}\n{}",
            tmp.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            tail(&String::from_utf8_lossy(&out.stdout), 20),
        )));
    }
    // Apt's downloaded lists change daily and say nothing about layer handling.
    let lists = tmp.join("var/lib/apt/lists");
    if lists.is_dir() {
        fs::remove_dir_all(&lists)?;
        fs::create_dir(&lists)?;
    }
    remove_stale(dest)?;
    fs::rename(&tmp, dest)?;
    Ok(dest.to_owned())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// Writing layers and layouts

/// A writer that hashes and counts what goes through it.
struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashWriter<W> {
    fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.clone().finalize()))
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

type BlobFile = HashWriter<BufWriter<File>>;

enum Compressor {
    Gzip(flate2::write::GzEncoder<BlobFile>),
    GzipMulti {
        enc: Option<flate2::write::GzEncoder<BlobFile>>,
        in_member: usize,
    },
    Zstd(zstd::Encoder<'static, BlobFile>),
    Plain(BlobFile),
}

const MEMBER: usize = 64 << 10;

impl Compressor {
    fn new(c: Compression, out: BlobFile) -> io::Result<Compressor> {
        let gz = |out| flate2::write::GzEncoder::new(out, flate2::Compression::new(6));
        Ok(match c {
            Compression::Gzip | Compression::GzipAsTar => Compressor::Gzip(gz(out)),
            Compression::GzipMulti => Compressor::GzipMulti {
                enc: Some(gz(out)),
                in_member: 0,
            },
            Compression::Zstd => Compressor::Zstd(zstd::Encoder::new(out, 3)?),
            Compression::Plain => Compressor::Plain(out),
        })
    }

    fn finish(self) -> io::Result<BlobFile> {
        match self {
            Compressor::Gzip(enc) => enc.finish(),
            Compressor::GzipMulti { enc, .. } => enc
                .ok_or_else(|| io::Error::other("gzip member lost"))?
                .finish(),
            Compressor::Zstd(enc) => enc.finish(),
            Compressor::Plain(out) => Ok(out),
        }
    }
}

impl Write for Compressor {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Gzip(enc) => enc.write(buf),
            Compressor::GzipMulti { enc, in_member } => {
                if *in_member >= MEMBER {
                    let out = enc
                        .take()
                        .ok_or_else(|| io::Error::other("gzip member lost"))?
                        .finish()?;
                    *enc = Some(flate2::write::GzEncoder::new(
                        out,
                        flate2::Compression::new(6),
                    ));
                    *in_member = 0;
                }
                let room = MEMBER - *in_member;
                let n = enc
                    .as_mut()
                    .ok_or_else(|| io::Error::other("gzip member lost"))?
                    .write(&buf[..buf.len().min(room)])?;
                *in_member += n;
                Ok(n)
            }
            Compressor::Zstd(enc) => enc.write(buf),
            Compressor::Plain(out) => out.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Gzip(enc) => enc.flush(),
            Compressor::GzipMulti { enc, .. } => enc.as_mut().map_or(Ok(()), Write::flush),
            Compressor::Zstd(enc) => enc.flush(),
            Compressor::Plain(out) => out.flush(),
        }
    }
}

type LayerTar = tar::Builder<HashWriter<Compressor>>;

/// Writes the layout into `tmp` (to be renamed to `final_layout` by the caller).
fn write_image(
    name: &str,
    tmp: &Path,
    final_layout: &Path,
    spec: ImageSpec,
    twin: &str,
) -> io::Result<Image> {
    let blobs = tmp.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    let mut layers = Vec::new();
    let mut explicit_dirs = BTreeSet::new();
    let mut parents = BTreeSet::new();
    let mut inodes = HashMap::new();
    let scratch = tmp.join("scratch");
    for (source, compression) in spec.layers.iter().zip(&spec.compression) {
        let part = blobs.join("layer.partial");
        let out = HashWriter::new(BufWriter::new(File::create(&part)?));
        let mut tar = tar::Builder::new(HashWriter::new(Compressor::new(*compression, out)?));
        tar.follow_symlinks(false);
        match source {
            LayerSource::Entries(list) => {
                for e in list {
                    if matches!(e.kind, Kind::Dir) {
                        explicit_dirs.insert(e.path.clone());
                    }
                    let mut p = e.path.as_slice();
                    while let Some(pos) = p.iter().rposition(|b| *b == b'/') {
                        p = &p[..pos];
                        parents.insert(p.to_vec());
                    }
                    write_entry(&mut tar, e, &scratch)?;
                }
            }
            LayerSource::Tree {
                rootfs,
                prefixes,
                exclude,
            } => {
                write_tree(&mut tar, rootfs, prefixes, exclude, &mut inodes)?;
            }
        }
        let inner = tar.into_inner()?;
        let diff_id = inner.digest();
        let mut out = inner.inner.finish()?;
        out.flush()?;
        let digest = out.digest();
        let size = out.count;
        drop(out);
        fs::rename(&part, blobs.join(&digest["sha256:".len()..]))?;
        layers.push(LayerInfo {
            media_type: compression.media_type().to_owned(),
            digest,
            diff_id,
            size,
        });
    }
    if scratch.exists() {
        fs::remove_dir_all(&scratch)?;
    }
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] },
        "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>() },
        "history": layers.iter().map(|_| json!({"created_by": format!("ducc-tests fixture {name}")})).collect::<Vec<_>>(),
    });
    let (config_digest, config_size) = write_blob(
        &blobs,
        &serde_json::to_vec(&config).map_err(io::Error::other)?,
    )?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size },
        "layers": layers.iter().map(|l| json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size})).collect::<Vec<_>>(),
    });
    let (manifest_digest, manifest_size) = write_blob(
        &blobs,
        &serde_json::to_vec(&manifest).map_err(io::Error::other)?,
    )?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "platform": { "architecture": "amd64", "os": "linux" },
            "annotations": { "org.opencontainers.image.ref.name": TAG },
        }],
    });
    fs::write(
        tmp.join("index.json"),
        serde_json::to_vec(&index).map_err(io::Error::other)?,
    )?;
    fs::write(tmp.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let implicit_dirs = parents
        .difference(&explicit_dirs)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let image = Image {
        name: name.to_owned(),
        layout: final_layout.to_owned(),
        tag: TAG.to_owned(),
        manifest_digest,
        config_digest,
        layers,
        oracle_twin: twin.to_owned(),
        implicit_dirs,
    };
    fs::write(
        tmp.join("fixture.json"),
        serde_json::to_vec_pretty(&image.to_json()).map_err(io::Error::other)?,
    )?;
    Ok(image)
}

fn write_blob(blobs: &Path, bytes: &[u8]) -> io::Result<(String, u64)> {
    let hex = hex::encode(Sha256::digest(bytes));
    fs::write(blobs.join(&hex), bytes)?;
    Ok((format!("sha256:{hex}"), bytes.len() as u64))
}

fn os(path: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(path))
}

/// One PAX record: `"<len> <key>=<value>\n"` where len counts the whole record.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(format!("{len} {key}=").as_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn write_entry(tar: &mut LayerTar, e: &Entry, scratch: &Path) -> io::Result<()> {
    let mut header = if e.pax {
        tar::Header::new_ustar()
    } else {
        tar::Header::new_gnu()
    };
    header.set_mode(e.mode);
    header.set_uid(e.uid);
    header.set_gid(e.gid);
    header.set_mtime(e.mtime);
    header.set_size(0);
    let entry_type = match &e.kind {
        Kind::Dir => tar::EntryType::Directory,
        Kind::File(_) => tar::EntryType::Regular,
        Kind::Symlink(_) => tar::EntryType::Symlink,
        Kind::Hardlink(_) => tar::EntryType::Link,
        Kind::Char(..) => tar::EntryType::Char,
        Kind::Block(..) => tar::EntryType::Block,
        Kind::Fifo => tar::EntryType::Fifo,
        Kind::Sparse(..) => return write_sparse(tar, e, scratch),
    };
    header.set_entry_type(entry_type);
    if let Kind::Char(major, minor) | Kind::Block(major, minor) = e.kind {
        header.set_device_major(major)?;
        header.set_device_minor(minor)?;
    }
    let data: &[u8] = match &e.kind {
        Kind::File(content) => content,
        _ => &[],
    };
    header.set_size(data.len() as u64);
    if !e.pax {
        return match &e.kind {
            Kind::Symlink(target) | Kind::Hardlink(target) => {
                tar.append_link(&mut header, os(&e.path), os(target))
            }
            _ => tar.append_data(&mut header, os(&e.path), data),
        };
    }
    let mut records = Vec::new();
    if header.set_path(os(&e.path)).is_err() || e.path.len() > 90 {
        pax_record(&mut records, "path", &e.path);
        header.set_path("pax-long-name")?;
    }
    if let Kind::Symlink(target) | Kind::Hardlink(target) = &e.kind
        && (header.set_link_name(os(target)).is_err() || target.len() > 90)
    {
        pax_record(&mut records, "linkpath", target);
        header.set_link_name("pax-long-link")?;
    }
    if e.mtime_nanos != 0 {
        pax_record(
            &mut records,
            "mtime",
            format!("{}.{:09}", e.mtime, e.mtime_nanos).as_bytes(),
        );
    }
    for (key, value) in &e.xattrs {
        pax_record(&mut records, &format!("SCHILY.xattr.{key}"), value);
    }
    if !records.is_empty() {
        let mut pax = tar::Header::new_ustar();
        pax.set_entry_type(tar::EntryType::XHeader);
        pax.set_path("PaxHeaders/entry")?;
        pax.set_mode(0o644);
        pax.set_size(records.len() as u64);
        pax.set_cksum();
        tar.append(&pax, records.as_slice())?;
    }
    header.set_cksum();
    tar.append(&header, data)
}

/// Writes a holey file to scratch and lets the tar builder store it as an old-GNU sparse entry.
fn write_sparse(tar: &mut LayerTar, e: &Entry, scratch: &Path) -> io::Result<()> {
    let Kind::Sparse(size, chunks) = &e.kind else {
        return Err(io::Error::other("not a sparse entry"));
    };
    fs::create_dir_all(scratch)?;
    let path = scratch.join("sparse");
    let _ = fs::remove_file(&path);
    {
        let f = File::create(&path)?;
        f.set_len(*size)?;
        for (offset, data) in chunks {
            std::os::unix::fs::FileExt::write_all_at(&f, data, *offset)?;
        }
    }
    {
        // append_file takes the header from the file's own metadata, so give it the entry's.
        let f = File::open(&path)?;
        rustix::fs::fchown(
            &f,
            Some(rustix::process::Uid::from_raw(e.uid as u32)),
            Some(rustix::process::Gid::from_raw(e.gid as u32)),
        )?;
        rustix::fs::fchmod(&f, rustix::fs::Mode::from_raw_mode(e.mode))?;
        let t = rustix::fs::Timespec {
            tv_sec: e.mtime as i64,
            tv_nsec: 0,
        };
        rustix::fs::futimens(
            &f,
            &rustix::fs::Timestamps {
                last_access: t,
                last_modification: t,
            },
        )?;
    }
    let mut f = File::open(&path)?;
    // Sparse detection is on by default: the builder finds the holes with SEEK_DATA and writes
    // an old-GNU sparse entry.
    tar.append_file(os(&e.path), &mut f)?;
    Ok(())
}

/// Writes the paths of a directory tree selected by prefixes, sorted, parents first, with their
/// real metadata; files seen before (same inode) become hardlinks to the first path.
fn write_tree(
    tar: &mut LayerTar,
    rootfs: &Path,
    prefixes: &[&str],
    exclude: &[&str],
    inodes: &mut HashMap<(u64, u64), Vec<u8>>,
) -> io::Result<()> {
    let under = |rel: &[u8], prefix: &str| {
        rel == prefix.as_bytes()
            || (rel.starts_with(prefix.as_bytes()) && rel.get(prefix.len()) == Some(&b'/'))
    };
    let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
    while let Some(rel_dir) = stack.pop() {
        let abs_dir = rootfs.join(os(&rel_dir));
        let mut names: Vec<Vec<u8>> = fs::read_dir(&abs_dir)?
            .map(|d| d.map(|d| d.file_name().as_bytes().to_vec()))
            .collect::<io::Result<_>>()?;
        names.sort();
        let mut subdirs = Vec::new();
        for name in names {
            let rel = if rel_dir.is_empty() {
                name
            } else {
                [rel_dir.as_slice(), b"/", &name].concat()
            };
            if exclude.iter().any(|x| under(&rel, x)) {
                continue;
            }
            let selected = prefixes.is_empty() || prefixes.iter().any(|p| under(&rel, p));
            let leads_to_prefix = prefixes.iter().any(|p| {
                p.as_bytes().starts_with(&rel) && p.as_bytes().get(rel.len()) == Some(&b'/')
            });
            let abs = rootfs.join(os(&rel));
            let meta = fs::symlink_metadata(&abs)?;
            if selected {
                write_tree_entry(tar, &abs, &rel, &meta, inodes)?;
            }
            if meta.is_dir() && (selected || leads_to_prefix) {
                subdirs.push(rel);
            }
        }
        // Depth-first in sorted order: push in reverse so the smallest name is popped first.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(())
}

fn write_tree_entry(
    tar: &mut LayerTar,
    abs: &Path,
    rel: &[u8],
    meta: &fs::Metadata,
    inodes: &mut HashMap<(u64, u64), Vec<u8>>,
) -> io::Result<()> {
    let xattrs = read_xattrs(abs)?;
    if !xattrs.is_empty() {
        let mut records = Vec::new();
        for (key, value) in &xattrs {
            pax_record(&mut records, &format!("SCHILY.xattr.{key}"), value);
        }
        let mut pax = tar::Header::new_ustar();
        pax.set_entry_type(tar::EntryType::XHeader);
        pax.set_path("PaxHeaders/entry")?;
        pax.set_mode(0o644);
        pax.set_size(records.len() as u64);
        pax.set_cksum();
        tar.append(&pax, records.as_slice())?;
    }
    if !meta.is_dir() && meta.nlink() > 1 {
        let key = (meta.dev(), meta.ino());
        if let Some(first) = inodes.get(&key) {
            let mut header = tar::Header::new_gnu();
            header.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
            header.set_entry_type(tar::EntryType::Link);
            header.set_size(0);
            return tar.append_link(&mut header, os(rel), os(first));
        }
        inodes.insert(key, rel.to_vec());
    }
    let ft = meta.file_type();
    if ft.is_socket() {
        return Ok(());
    }
    // The builder's own path for special files ignores the archive name, so write those here.
    let special = if ft.is_fifo() {
        Some(tar::EntryType::Fifo)
    } else if ft.is_char_device() {
        Some(tar::EntryType::Char)
    } else if ft.is_block_device() {
        Some(tar::EntryType::Block)
    } else {
        None
    };
    if let Some(entry_type) = special {
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
        header.set_entry_type(entry_type);
        header.set_size(0);
        header.set_device_major(rustix::fs::major(meta.rdev()))?;
        header.set_device_minor(rustix::fs::minor(meta.rdev()))?;
        return tar.append_data(&mut header, os(rel), io::empty());
    }
    tar.append_path_with_name(abs, os(rel))
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", String::from_utf8_lossy(rel))))
}

fn read_xattrs(path: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    let size = match rustix::fs::llistxattr_query(path) {
        Ok(n) => n,
        Err(e) if e == rustix::io::Errno::NOTSUP => return Ok(vec![]),
        Err(e) => return Err(e.into()),
    };
    if size == 0 {
        return Ok(vec![]);
    }
    let mut names = vec![0u8; size];
    let n = rustix::fs::llistxattr(path, &mut names[..])?;
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let key = String::from_utf8_lossy(name).into_owned();
        if key == "security.selinux" {
            continue;
        }
        let len = rustix::fs::lgetxattr_query(path, name)?;
        let mut value = vec![0u8; len];
        let got = rustix::fs::lgetxattr(path, name, &mut value[..])?;
        value.truncate(got);
        out.push((key, value));
    }
    out.sort();
    Ok(out)
}

/// Reads a whole file into a sha256 hex digest (for callers comparing blobs).
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}
