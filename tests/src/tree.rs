//! The test crate's one tree snapshot: [`Tree::scan`] records paths, types, modes, owners,
//! sizes, content hashes, symlink targets, device numbers, hardlink groups, xattrs and mtimes.
//! A test asks a snapshot what it needs ([`Tree::paths_where`], [`Tree::file_bytes`]) or
//! compares two, with the first differences reported readably.
//!
//! ```no_run
//! use ducc_tests::tree::{Options, Tree};
//! let expected = Tree::scan("/tmp/umoci-rootfs".as_ref()).unwrap();
//! let actual = Tree::scan("/tmp/ducc-rootfs".as_ref()).unwrap();
//! expected.assert_same_as(&actual, &Options::default(), "umoci", "ducc");
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// The type of a tree node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Directory.
    Dir,
    /// Regular file.
    File,
    /// Symbolic link.
    Symlink,
    /// Character device.
    Char,
    /// Block device.
    Block,
    /// Named pipe.
    Fifo,
    /// Unix socket.
    Socket,
}

/// Everything compared about one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Type.
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky (the low 12 bits of st_mode).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size of regular files (0 for the others).
    pub size: u64,
    /// sha256 hex of a regular file's content.
    pub content: Option<String>,
    /// Target of a symlink, as bytes.
    pub link_target: Option<Vec<u8>>,
    /// Device major and minor numbers.
    pub rdev: Option<(u32, u32)>,
    /// Extended attributes.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, i64),
    /// The other paths in this tree that share this node's inode (hardlink group), sorted.
    pub hardlinks: Vec<String>,
}

/// A scanned directory tree; keys are paths relative to the root (`""` for the root itself).
#[derive(Debug, Clone, Default)]
pub struct Tree {
    /// Nodes by relative path (lossy UTF-8 for display; non-UTF-8 bytes become U+FFFD
    /// replacement characters and are also kept exactly in `raw_paths`).
    pub nodes: BTreeMap<String, Node>,
    /// The exact bytes of every path, for names that are not UTF-8.
    pub raw_paths: BTreeSet<Vec<u8>>,
}

/// What to leave out of a comparison.
#[derive(Debug, Clone)]
pub struct Options {
    /// Compare mtimes at all.
    pub mtimes: bool,
    /// Compare directory mtimes (off where one side has implicitly created directories).
    pub dir_mtimes: bool,
    /// Paths whose mtime is not compared (implicitly created directories).
    pub skip_mtime: BTreeSet<String>,
    /// Compare the root directory's own metadata.
    pub root_metadata: bool,
    /// Compare owners and groups.
    pub owners: bool,
    /// Compare hardlink groups.
    pub hardlinks: bool,
    /// xattr name prefixes ignored on both sides.
    pub ignore_xattr_prefixes: Vec<String>,
    /// How many differences to list before giving up.
    pub max_differences: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mtimes: true,
            dir_mtimes: true,
            skip_mtime: BTreeSet::new(),
            root_metadata: false,
            owners: true,
            hardlinks: true,
            // The cvmfs stand-in keeps the magic xattrs a client reads by name (`user.hash`,
            // `user.compression`, `user.chunks`) as real ones; a real client lists none of them.
            ignore_xattr_prefixes: [
                "security.selinux",
                "user.hash",
                "user.compression",
                "user.chunks",
            ]
            .map(str::to_owned)
            .to_vec(),
            max_differences: 30,
        }
    }
}

/// One difference between two trees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// Present only in the expected tree.
    Missing(String),
    /// Present only in the actual tree.
    Extra(String),
    /// Present in both with a field that differs.
    Field {
        /// Relative path.
        path: String,
        /// Which field.
        field: &'static str,
        /// The expected value, printed.
        expected: String,
        /// The actual value, printed.
        actual: String,
    },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::Missing(p) => write!(f, "/{p}: missing"),
            Difference::Extra(p) => write!(f, "/{p}: unexpected"),
            Difference::Field {
                path,
                field,
                expected,
                actual,
            } => {
                write!(
                    f,
                    "/{path}: {field} differs: expected {expected}, got {actual}"
                )
            }
        }
    }
}

fn display_path(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

impl Tree {
    /// Scans `root` without following symlinks.
    ///
    /// # Errors
    /// Any I/O error, with the path that caused it.
    pub fn scan(root: &Path) -> io::Result<Tree> {
        let mut tree = Tree::default();
        let mut inodes: HashMap<(u64, u64), Vec<String>> = HashMap::new();
        let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
        while let Some(rel) = stack.pop() {
            let abs = if rel.is_empty() {
                root.to_owned()
            } else {
                root.join(OsStr::from_bytes(&rel))
            };
            let with_path =
                |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", abs.display()));
            let meta = fs::symlink_metadata(&abs).map_err(with_path)?;
            let node = node_of(&abs, &meta).map_err(with_path)?;
            let name = display_path(&rel);
            if node.kind != Kind::Dir && meta.nlink() > 1 {
                inodes
                    .entry((meta.dev(), meta.ino()))
                    .or_default()
                    .push(name.clone());
            }
            if node.kind == Kind::Dir {
                let mut children: Vec<Vec<u8>> = fs::read_dir(&abs)
                    .map_err(with_path)?
                    .map(|d| d.map(|d| d.file_name().as_bytes().to_vec()))
                    .collect::<io::Result<_>>()
                    .map_err(with_path)?;
                children.sort();
                for child in children.into_iter().rev() {
                    let child_rel = if rel.is_empty() {
                        child
                    } else {
                        [rel.as_slice(), b"/", &child].concat()
                    };
                    stack.push(child_rel);
                }
            }
            tree.raw_paths.insert(rel);
            tree.nodes.insert(name, node);
        }
        for group in inodes.into_values() {
            for path in &group {
                let mut others: Vec<String> =
                    group.iter().filter(|p| *p != path).cloned().collect();
                others.sort();
                if let Some(node) = tree.nodes.get_mut(path) {
                    node.hardlinks = others;
                }
            }
        }
        Ok(tree)
    }

    /// As [`Tree::scan`], but a `root` that does not exist is an empty tree: for directories a
    /// run may or may not have made (a cache, a staging area).
    ///
    /// # Errors
    /// Any other I/O error, with the path that caused it.
    pub fn scan_if_present(root: &Path) -> io::Result<Tree> {
        match fs::symlink_metadata(root) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Tree::default()),
            _ => Tree::scan(root),
        }
    }

    /// The paths below the root (the root itself left out) whose node `keep` accepts, sorted.
    pub fn paths_where(&self, mut keep: impl FnMut(&str, &Node) -> bool) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(path, node)| !path.is_empty() && keep(path, node))
            .map(|(path, _)| path.clone())
            .collect()
    }

    /// The total size of the regular files in the tree.
    pub fn file_bytes(&self) -> u64 {
        self.nodes.values().map(|node| node.size).sum()
    }

    /// Lists the differences between `self` (expected) and `actual`, at most
    /// `options.max_differences` of them, in path order.
    pub fn diff(&self, actual: &Tree, options: &Options) -> Vec<Difference> {
        let mut out = Vec::new();
        let paths: BTreeSet<&String> = self.nodes.keys().chain(actual.nodes.keys()).collect();
        for path in paths {
            if out.len() >= options.max_differences {
                break;
            }
            match (self.nodes.get(path), actual.nodes.get(path)) {
                (Some(_), None) => out.push(Difference::Missing(path.clone())),
                (None, Some(_)) => out.push(Difference::Extra(path.clone())),
                (Some(e), Some(a)) => compare_node(path, e, a, options, &mut out),
                (None, None) => {}
            }
        }
        if self.raw_paths != actual.raw_paths && out.is_empty() {
            out.push(Difference::Field {
                path: String::new(),
                field: "raw path bytes",
                expected: format!(
                    "{:?}",
                    self.raw_paths
                        .difference(&actual.raw_paths)
                        .collect::<Vec<_>>()
                ),
                actual: format!(
                    "{:?}",
                    actual
                        .raw_paths
                        .difference(&self.raw_paths)
                        .collect::<Vec<_>>()
                ),
            });
        }
        out.truncate(options.max_differences);
        out
    }

    /// Panics with a readable list of the first differences when the trees differ.
    pub fn assert_same_as(
        &self,
        actual: &Tree,
        options: &Options,
        expected_label: &str,
        actual_label: &str,
    ) {
        let differences = self.diff(actual, options);
        if !differences.is_empty() {
            let list: Vec<String> = differences.iter().map(|d| format!("  {d}")).collect();
            panic!(
                "the {actual_label} tree differs from the {expected_label} tree ({} paths vs {}); first differences \
                 (expected = {expected_label}, got = {actual_label}):\n{}",
                self.nodes.len(),
                actual.nodes.len(),
                list.join("\n")
            );
        }
    }
}

fn compare_node(path: &str, e: &Node, a: &Node, options: &Options, out: &mut Vec<Difference>) {
    let mut field = |field: &'static str, expected: String, actual: String| {
        if expected != actual {
            out.push(Difference::Field {
                path: path.to_owned(),
                field,
                expected,
                actual,
            });
        }
    };
    field("type", format!("{:?}", e.kind), format!("{:?}", a.kind));
    if e.kind != a.kind {
        return;
    }
    if path.is_empty() && !options.root_metadata {
        return;
    }
    field("mode", format!("{:04o}", e.mode), format!("{:04o}", a.mode));
    if options.owners {
        field(
            "owner",
            format!("{}:{}", e.uid, e.gid),
            format!("{}:{}", a.uid, a.gid),
        );
    }
    field("size", e.size.to_string(), a.size.to_string());
    field(
        "content sha256",
        format!("{:?}", e.content),
        format!("{:?}", a.content),
    );
    field(
        "symlink target",
        format!("{:?}", e.link_target.as_deref().map(display_path)),
        format!("{:?}", a.link_target.as_deref().map(display_path)),
    );
    field("device", format!("{:?}", e.rdev), format!("{:?}", a.rdev));
    let xattrs = |n: &Node| -> String {
        let kept: Vec<String> = n
            .xattrs
            .iter()
            .filter(|(k, _)| {
                !options
                    .ignore_xattr_prefixes
                    .iter()
                    .any(|p| k.starts_with(p.as_str()))
            })
            .map(|(k, v)| format!("{k}={}", printable(v)))
            .collect();
        format!("{{{}}}", kept.join(", "))
    };
    field("xattrs", xattrs(e), xattrs(a));
    if options.hardlinks {
        field(
            "hardlinks",
            format!("{:?}", e.hardlinks),
            format!("{:?}", a.hardlinks),
        );
    }
    let compare_mtime = options.mtimes
        && !options.skip_mtime.contains(path)
        && (e.kind != Kind::Dir || options.dir_mtimes);
    if compare_mtime {
        field(
            "mtime",
            format!("{}.{:09}", e.mtime.0, e.mtime.1),
            format!("{}.{:09}", a.mtime.0, a.mtime.1),
        );
    }
}

fn printable(v: &[u8]) -> String {
    match std::str::from_utf8(v) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => format!("{s:?}"),
        _ => format!("0x{}", hex::encode(v)),
    }
}

fn node_of(abs: &Path, meta: &fs::Metadata) -> io::Result<Node> {
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_char_device() {
        Kind::Char
    } else if ft.is_block_device() {
        Kind::Block
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        Kind::Socket
    };
    let content = if kind == Kind::File {
        Some(hash_file(abs)?)
    } else {
        None
    };
    let link_target = if kind == Kind::Symlink {
        Some(fs::read_link(abs)?.as_os_str().as_bytes().to_vec())
    } else {
        None
    };
    let rdev = matches!(kind, Kind::Char | Kind::Block).then(|| {
        (
            rustix::fs::major(meta.rdev()),
            rustix::fs::minor(meta.rdev()),
        )
    });
    Ok(Node {
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        size: if kind == Kind::File { meta.len() } else { 0 },
        content,
        link_target,
        rdev,
        xattrs: read_xattrs(abs)?,
        mtime: (meta.mtime(), meta.mtime_nsec()),
        hardlinks: Vec::new(),
    })
}

fn hash_file(path: &Path) -> io::Result<String> {
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

/// All xattrs of a path, not following a final symlink.
///
/// # Errors
/// I/O errors other than "not supported".
pub fn read_xattrs(path: &Path) -> io::Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let size = match rustix::fs::llistxattr_query(path) {
        Ok(n) => n,
        Err(e) if e == rustix::io::Errno::NOTSUP => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    let mut names = vec![0u8; size];
    let n = rustix::fs::llistxattr(path, &mut names[..])?;
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let len = rustix::fs::lgetxattr_query(path, name)?;
        let mut value = vec![0u8; len];
        let got = rustix::fs::lgetxattr(path, name, &mut value[..])?;
        value.truncate(got);
        out.insert(String::from_utf8_lossy(name).into_owned(), value);
    }
    Ok(out)
}

/// A temporary directory under the fixtures directory's `scratch/` (same filesystem as the
/// fixtures, unlike `/tmp` which may be tmpfs without xattr or device support), removed on drop.
///
/// # Errors
/// The directory cannot be created.
pub fn scratch_dir(label: &str) -> io::Result<tempfile::TempDir> {
    let base: PathBuf = crate::fixtures::fixtures_dir().join("scratch");
    fs::create_dir_all(&base)?;
    tempfile::Builder::new()
        .prefix(&format!("{label}-"))
        .tempdir_in(base)
}

/// umoci's tree of `image`'s oracle twin (`umoci raw unpack`, run once per fixture version and
/// cached under the fixtures directory), and the paths to which umoci gave the time of the unpack
/// rather than a time from the layers. umoci does not restore a directory's mtime after an opaque
/// whiteout removed lower children, so those times are umoci's choice and not comparable: add
/// them to [`Options::skip_mtime`].
///
/// # Panics
/// When umoci is not installed (the message says what to install) or fails.
pub fn umoci_tree(image: &crate::fixtures::Image) -> (Tree, BTreeSet<String>) {
    use crate::fixtures;
    let umoci = crate::require_tool("umoci", "umoci");
    let twin = fixtures::image(&image.oracle_twin).expect("oracle twin fixture");
    let key = format!(
        "umoci-{}-{}",
        twin.name,
        &twin.manifest_digest["sha256:".len()..][..16]
    );
    let dir = fixtures::cached_dir(&key, |tmp| {
        let started = now_secs();
        let out = std::process::Command::new(&umoci)
            .args(["raw", "unpack", "--image"])
            .arg(twin.layout_ref())
            .arg(tmp.join("rootfs"))
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "umoci raw unpack {} failed: {}",
                twin.layout_ref(),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        fs::write(
            tmp.join("unpack-window"),
            format!("{started} {}", now_secs() + 1),
        )
    })
    .expect("umoci raw unpack");
    let tree = Tree::scan(&dir.join("rootfs")).expect("scan umoci tree");
    let window = fs::read_to_string(dir.join("unpack-window")).expect("unpack-window");
    let (start, end) = window.trim().split_once(' ').expect("two times");
    let (start, end): (i64, i64) = (start.parse().expect("start"), end.parse().expect("end"));
    let umoci_chose = tree
        .nodes
        .iter()
        .filter(|(_, node)| (start..=end).contains(&node.mtime.0))
        .map(|(path, _)| path.clone())
        .collect();
    (tree, umoci_chose)
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Comparison options for a flat tree of `image` against umoci's: mtimes of directories no layer
/// lists, and of paths umoci stamped with the unpack time, are skipped.
pub fn oracle_options(image: &crate::fixtures::Image, umoci_chose: &BTreeSet<String>) -> Options {
    let mut options = Options::default();
    options
        .skip_mtime
        .extend(image.implicit_dirs.iter().cloned());
    options.skip_mtime.extend(umoci_chose.iter().cloned());
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_with(f: impl FnOnce(&Path)) -> (tempfile::TempDir, Tree) {
        let dir = tempfile::tempdir().unwrap();
        f(dir.path());
        let tree = Tree::scan(dir.path()).unwrap();
        (dir, tree)
    }

    fn base(root: &Path) {
        fs::create_dir(root.join("d")).unwrap();
        fs::write(root.join("d/f"), b"content").unwrap();
        fs::hard_link(root.join("d/f"), root.join("d/g")).unwrap();
        std::os::unix::fs::symlink("d/f", root.join("link")).unwrap();
    }

    #[test]
    fn identical_trees_have_no_differences() {
        let (_a, a) = tree_with(base);
        let (_b, b) = tree_with(base);
        assert_eq!(
            a.diff(
                &b,
                &Options {
                    mtimes: false,
                    ..Options::default()
                }
            ),
            vec![]
        );
        assert_eq!(a.nodes["d/f"].hardlinks, vec!["d/g".to_owned()]);
    }

    #[test]
    fn content_mode_link_and_hardlink_changes_are_reported() {
        let (_a, a) = tree_with(base);
        let (_b, b) = tree_with(|root| {
            fs::create_dir(root.join("d")).unwrap();
            fs::write(root.join("d/f"), b"other").unwrap();
            fs::write(root.join("d/g"), b"content").unwrap();
            std::os::unix::fs::symlink("d/g", root.join("link")).unwrap();
            fs::write(root.join("extra"), b"").unwrap();
        });
        let diffs = a.diff(
            &b,
            &Options {
                mtimes: false,
                ..Options::default()
            },
        );
        let text: Vec<String> = diffs.iter().map(ToString::to_string).collect();
        assert!(
            text.iter()
                .any(|t| t.starts_with("/d/f: content sha256 differs")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.starts_with("/d/f: hardlinks differs")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.starts_with("/link: symlink target differs")),
            "{text:?}"
        );
        assert!(text.contains(&"/extra: unexpected".to_owned()), "{text:?}");
    }

    #[test]
    fn missing_path_and_type_change_are_reported() {
        let (_a, a) = tree_with(base);
        let (_b, b) = tree_with(|root| {
            fs::write(root.join("d"), b"now a file").unwrap();
        });
        let diffs = a.diff(
            &b,
            &Options {
                mtimes: false,
                ..Options::default()
            },
        );
        assert!(diffs.contains(&Difference::Field {
            path: "d".to_owned(),
            field: "type",
            expected: "Dir".to_owned(),
            actual: "File".to_owned()
        }));
        assert!(diffs.contains(&Difference::Missing("link".to_owned())));
    }

    #[test]
    #[should_panic(expected = "first differences")]
    fn assert_same_as_panics_on_a_difference() {
        let (_a, a) = tree_with(base);
        let (_b, b) = tree_with(|_| {});
        a.assert_same_as(&b, &Options::default(), "left", "right");
    }
}
