//! Test helpers: layers built header by header (raw names where `tar::Builder` would refuse),
//! and a tree snapshot to compare results on.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// Builds a layer tar entry by entry, writing names verbatim (`..`, absolute names, long names
/// through PAX).
pub(crate) struct Layer {
    builder: tar::Builder<Vec<u8>>,
    pub(crate) mtime: u64,
}

impl Layer {
    pub(crate) fn new() -> Self {
        Layer {
            builder: tar::Builder::new(Vec::new()),
            mtime: 1_600_000_000,
        }
    }

    fn header(
        &self,
        name: &[u8],
        kind: tar::EntryType,
        mode: u32,
    ) -> (tar::Header, Vec<(String, Vec<u8>)>) {
        let mut h = tar::Header::new_ustar();
        let mut pax = Vec::new();
        let field = &mut h.as_old_mut().name;
        if name.len() <= field.len() {
            field[..name.len()].copy_from_slice(name);
        } else {
            field.copy_from_slice(&name[..100]);
            pax.push(("path".to_owned(), name.to_vec()));
        }
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(self.mtime);
        h.set_size(0);
        (h, pax)
    }

    fn push(&mut self, mut h: tar::Header, pax: Vec<(String, Vec<u8>)>, data: &[u8]) -> &mut Self {
        if !pax.is_empty() {
            self.builder
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .expect("pax");
        }
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.builder.append(&h, data).expect("append");
        self
    }

    pub(crate) fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.file_with(name.as_bytes(), data, 0o644, 0, 0, &[])
    }

    pub(crate) fn file_with(
        &mut self,
        name: &[u8],
        data: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
        extra_pax: &[(&str, &[u8])],
    ) -> &mut Self {
        let (mut h, mut pax) = self.header(name, tar::EntryType::Regular, mode);
        h.set_uid(uid);
        h.set_gid(gid);
        for (k, v) in extra_pax {
            pax.push(((*k).to_owned(), v.to_vec()));
        }
        self.push(h, pax, data)
    }

    pub(crate) fn dir(&mut self, name: &str) -> &mut Self {
        self.dir_mode(name, 0o755)
    }

    pub(crate) fn dir_mode(&mut self, name: &str, mode: u32) -> &mut Self {
        let (h, pax) = self.header(name.as_bytes(), tar::EntryType::Directory, mode);
        self.push(h, pax, &[])
    }

    pub(crate) fn dir_owned(&mut self, name: &str, mode: u32, uid: u64, gid: u64) -> &mut Self {
        let (mut h, pax) = self.header(name.as_bytes(), tar::EntryType::Directory, mode);
        h.set_uid(uid);
        h.set_gid(gid);
        self.push(h, pax, &[])
    }

    pub(crate) fn dir_with(
        &mut self,
        name: &str,
        mode: u32,
        mtime: u64,
        extra_pax: &[(&str, &[u8])],
    ) -> &mut Self {
        let (mut h, mut pax) = self.header(name.as_bytes(), tar::EntryType::Directory, mode);
        h.set_mtime(mtime);
        for (k, v) in extra_pax {
            pax.push(((*k).to_owned(), v.to_vec()));
        }
        self.push(h, pax, &[])
    }

    pub(crate) fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.link(name, target, tar::EntryType::Symlink, 0o777)
    }

    pub(crate) fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.link(name, target, tar::EntryType::Link, 0o644)
    }

    /// A symlink or hardlink entry: its target in the header, or in a PAX `linkpath` record
    /// when too long for it.
    fn link(&mut self, name: &str, target: &str, kind: tar::EntryType, mode: u32) -> &mut Self {
        let (mut h, mut pax) = self.header(name.as_bytes(), kind, mode);
        let field = &mut h.as_old_mut().linkname;
        if target.len() <= field.len() {
            field[..target.len()].copy_from_slice(target.as_bytes());
        } else {
            pax.push(("linkpath".to_owned(), target.as_bytes().to_vec()));
        }
        self.push(h, pax, &[])
    }

    pub(crate) fn device(
        &mut self,
        name: &str,
        kind: tar::EntryType,
        major: u32,
        minor: u32,
    ) -> &mut Self {
        let (mut h, pax) = self.header(name.as_bytes(), kind, 0o600);
        h.set_device_major(major).expect("major");
        h.set_device_minor(minor).expect("minor");
        self.push(h, pax, &[])
    }

    pub(crate) fn fifo(&mut self, name: &str) -> &mut Self {
        let (h, pax) = self.header(name.as_bytes(), tar::EntryType::Fifo, 0o644);
        self.push(h, pax, &[])
    }

    /// An entry with a raw type byte and no data.
    pub(crate) fn raw(&mut self, name: &[u8], kind: tar::EntryType) -> &mut Self {
        let (h, pax) = self.header(name, kind, 0o644);
        self.push(h, pax, &[])
    }

    pub(crate) fn whiteout(&mut self, name: &str) -> &mut Self {
        self.file(name, b"")
    }

    pub(crate) fn bytes(&mut self) -> Vec<u8> {
        let builder = std::mem::replace(&mut self.builder, tar::Builder::new(Vec::new()));
        builder.into_inner().expect("finish")
    }
}

/// What a path in a tree is, for comparisons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    File { content: Vec<u8>, mode: u32 },
    Dir { mode: u32 },
    Symlink(String),
    Char(u64),
    Block(u64),
    Fifo,
}

/// Every path below `root` (relative, sorted) with what it is.
pub(crate) fn snapshot(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Node>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("read_dir")
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let rel = path
                .strip_prefix(root)
                .expect("prefix")
                .to_string_lossy()
                .into_owned();
            let meta = std::fs::symlink_metadata(&path).expect("lstat");
            let ft = meta.file_type();
            let mode = meta.mode() & 0o7777;
            let node = if ft.is_dir() {
                Node::Dir { mode }
            } else if ft.is_symlink() {
                Node::Symlink(
                    std::fs::read_link(&path)
                        .expect("readlink")
                        .to_string_lossy()
                        .into_owned(),
                )
            } else if ft.is_char_device() {
                Node::Char(meta.rdev())
            } else if ft.is_block_device() {
                Node::Block(meta.rdev())
            } else if ft.is_fifo() {
                Node::Fifo
            } else {
                let mut content = Vec::new();
                std::fs::File::open(&path)
                    .expect("open")
                    .read_to_end(&mut content)
                    .expect("read");
                Node::File { content, mode }
            };
            let is_dir = matches!(node, Node::Dir { .. });
            out.insert(rel, node);
            if is_dir {
                walk(root, &path, out);
            }
        }
    }
    walk(root, root, &mut out);
    out
}

/// The paths of a snapshot.
pub(crate) fn paths(root: &Path) -> Vec<String> {
    snapshot(root).into_keys().collect()
}

/// Fails the calling test unless running as root (skips it with `DUCC_ALLOW_SKIP=1`): the test
/// crate's one skip rule, [`ducc_tests::require_root`].
macro_rules! require_root {
    () => {
        if !ducc_tests::require_root("this test needs root") {
            return;
        }
    };
}
pub(crate) use require_root;

/// The uid and gid the unprivileged tests run as.
pub(crate) const NOBODY: u32 = 65534;

/// Runs `f` on a thread whose credentials are dropped to nobody (when running as root; the
/// credentials of one thread only, so other tests are unaffected), after giving `dir` to nobody.
/// Not root: runs `f` as the current user.
pub(crate) fn as_nobody<T: Send>(dir: &Path, f: impl FnOnce() -> T + Send) -> T {
    let root = ducc_oci::is_root();
    if root {
        let nobody = (
            Some(rustix::fs::Uid::from_raw(NOBODY)),
            Some(rustix::fs::Gid::from_raw(NOBODY)),
        );
        rustix::fs::chown(dir, nobody.0, nobody.1).expect("give the test directory to nobody");
    }
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                if root {
                    let gid = rustix::fs::Gid::from_raw(NOBODY);
                    let uid = rustix::fs::Uid::from_raw(NOBODY);
                    rustix::thread::set_thread_groups(&[]).expect("drop groups");
                    rustix::thread::set_thread_res_gid(gid, gid, gid).expect("drop gid");
                    rustix::thread::set_thread_res_uid(uid, uid, uid).expect("drop uid");
                    assert!(!ducc_oci::is_root());
                }
                f()
            })
            .join()
            .expect("test thread")
    })
}
