//! The applier: takes every entry through the same ordered steps inside a root directory fd
//! (whiteouts, resolve the parent inside the root, clear the way, create by type, metadata,
//! record as written by this layer), then fixes directory modes and times after the layer.
//!
//! Every path from an archive is untrusted (`unsafe_` names): it is only ever resolved with
//! `openat2(RESOLVE_IN_ROOT)` against the root fd, and only up to its parent; the final component
//! is always handled with `*at` calls that do not follow it.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::hash::BuildHasher;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Stat, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;

use crate::entry::{Entry, EntryKind, EntryPath, Timestamp};
use crate::error::Error;
use crate::options::{Privileges, WhiteoutFormat};
use crate::read::read_entries_limited;
use crate::report::{Report, SpecialKind, WarningKind};
use crate::root::Root;

mod both;

pub(crate) use both::apply_tar_both;

/// What kind of tree is being built.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// One layer into its own directory.
    LayerDir {
        whiteouts: WhiteoutFormat,
        lower_layers: Vec<PathBuf>,
    },
    /// Layers in order onto one tree.
    Flat,
    /// An already canonical tar, extracted as it is.
    Verbatim,
}

/// Size of the buffer file data is copied through.
pub(crate) const COPY_BUFFER: usize = 256 * 1024;
/// How many symlinks deep a missing parent directory is followed to create it.
const MAX_PARENT_SYMLINKS: u32 = 40;

const OPAQUE_TRUSTED: &str = "trusted.overlay.opaque";
const OPAQUE_USER: &str = "user.overlay.opaque";
/// A directory's default ACL: new inodes in it take their mode from it, not from the umask.
const DEFAULT_ACL: &str = "system.posix_acl_default";

/// Pending fixes for a directory, applied after its layer (children change a directory's mtime,
/// and an unprivileged extractor needs write access until the last child is in).
#[derive(Debug, Clone, Copy)]
struct DirFix {
    mtime: Timestamp,
    mode: Option<u32>,
}

/// A parent directory resolved inside the root (an `O_PATH` fd), and the group that a new inode
/// created in it gets: the directory's own when it is setgid, else the extractor's.
#[derive(Debug)]
struct ParentDir {
    fd: OwnedFd,
    new_inode_gid: u32,
}

impl std::ops::Deref for ParentDir {
    type Target = OwnedFd;

    fn deref(&self) -> &OwnedFd {
        &self.fd
    }
}

impl AsFd for ParentDir {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// [`WhiteoutFormat::OverlayDevices`]: a path where this layer hides everything the stack below
/// has (an opaque marker, or a whiteout whose name the layer may make a directory again), with
/// what the stack below held there when it was still in view.
#[derive(Debug)]
struct HiddenBelow {
    /// The entry that hid it: whiteout devices written for it take its owner and time.
    marker: Entry,
    /// The stack below at that path, when it is a directory there.
    tree: Option<LowerTree>,
}

/// The names in a directory of the stack below, each with its own listing when it is a
/// directory.
#[derive(Debug, Default)]
struct LowerTree {
    children: Vec<(CString, Option<LowerTree>)>,
}

/// The set of paths written by the current layer (and their ancestors), kept as 128-bit keyed
/// hashes so that memory stays small for layers with many entries.
#[derive(Debug)]
struct PathSet {
    set: HashSet<u128>,
    k1: RandomState,
    k2: RandomState,
}

impl PathSet {
    fn new() -> Self {
        PathSet {
            set: HashSet::new(),
            k1: RandomState::new(),
            k2: RandomState::new(),
        }
    }

    fn key(&self, path: &[u8]) -> u128 {
        (u128::from(self.k1.hash_one(path)) << 64) | u128::from(self.k2.hash_one(path))
    }

    fn contains(&self, path: &[u8]) -> bool {
        self.set.contains(&self.key(path))
    }

    /// Inserts `path` and all its ancestors (the root included).
    fn insert_with_ancestors(&mut self, path: &[u8]) {
        let mut end = path.len();
        loop {
            let key = self.key(&path[..end]);
            if !self.set.insert(key) {
                // Ancestors of a path already present are present too.
                return;
            }
            if end == 0 {
                return;
            }
            end = path[..end].iter().rposition(|&b| b == b'/').unwrap_or(0);
        }
    }

    fn clear(&mut self) {
        self.set.clear();
    }
}

/// What the application of one layer keeps from its first entry to its end, when directory
/// times and modes are fixed and explicit whiteouts written; reset for the next layer.
#[derive(Debug)]
struct LayerState {
    /// The layer's name, for messages.
    name: String,
    /// The paths this layer wrote, and their ancestors.
    upper: PathSet,
    /// Directories whose time (and mode) are set again when the layer ends.
    dir_fixes: HashMap<Vec<u8>, DirFix>,
    /// Directories this layer made opaque.
    opaque_dirs: Vec<EntryPath>,
    /// What this layer hides of the stack below, for explicit whiteouts
    /// ([`WhiteoutFormat::OverlayDevices`]).
    hidden: HashMap<EntryPath, HiddenBelow>,
    /// The last parent directory resolved, for consecutive entries of one directory.
    parent_cache: Option<(Vec<u8>, Arc<ParentDir>)>,
    /// Whether the layer was warned once that the tree takes no xattrs.
    xattr_unsupported_warned: bool,
    /// Layer directory side with a flat tree: the last regular file written, which the flat
    /// side copies instead of reading the stream a second time.
    last_file: Option<(std::fs::File, u64)>,
    /// Flat side with a layer directory: the data of the next regular file comes from this file
    /// and is this many bytes (the layer directory's copy) rather than from the stream.
    pending_copy: Option<(std::fs::File, u64)>,
}

impl LayerState {
    fn new() -> Self {
        LayerState {
            name: String::new(),
            upper: PathSet::new(),
            dir_fixes: HashMap::new(),
            opaque_dirs: Vec::new(),
            hidden: HashMap::new(),
            parent_cache: None,
            xattr_unsupported_warned: false,
            last_file: None,
            pending_copy: None,
        }
    }

    /// Starts layer `name`, keeping the allocations of the one before.
    fn begin(&mut self, name: &str) {
        name.clone_into(&mut self.name);
        self.upper.clear();
        self.dir_fixes.clear();
        self.opaque_dirs.clear();
        self.hidden.clear();
        self.parent_cache = None;
        self.xattr_unsupported_warned = false;
        self.last_file = None;
        self.pending_copy = None;
    }
}

/// The extraction state for one target directory.
#[derive(Debug)]
pub(crate) struct Applier {
    /// The target directory.
    root: Root,
    mode: Target,
    /// The lower layer directories, top first (a layer directory's stack below).
    lower_roots: Vec<Root>,
    privileged: bool,
    euid: u32,
    egid: u32,
    /// The process umask, when known: a file created with its final mode gets `mode & !umask`.
    umask: Option<u32>,
    /// Whether a new file may get its mode at creation: not where a default ACL (which replaces
    /// the umask) may be in the tree, that is one on the root, one this extractor set, or a tree
    /// that was not empty at the start.
    mode_at_create: bool,
    report: Report,
    buffer: Vec<u8>,
    /// What the layer being applied keeps until it ends.
    current: LayerState,
    /// Limits on hostile layers (set by the extractor from its options).
    pub(crate) limits: crate::Limits,
    // Layer directory written together with the flat tree (see [`apply_tar_both`]):
    /// The flat tree's root: the stack below this layer (plus the entries of this layer that
    /// came before the current one).
    below_flat: Option<Root>,
    /// The flat tree's worker, which runs behind this side: waited for before the flat tree
    /// is looked at, and asked for its pending directory fixes (a directory the flat side
    /// already touched in this layer has its pre-layer time and mode there).
    below_link: Option<both::FlatLink>,
    /// Keep the last regular file written, so the flat side copies it instead of reading the
    /// stream a second time.
    keep_last_file: bool,
    /// Flat side: tag each regular file with the layer entry it came from
    /// ([`crate::SOURCE_XATTR`]).
    pub(crate) record_sources: bool,
    /// Device files and FIFOs are left out (and listed in the report).
    pub(crate) leave_out_special: bool,
    /// The paths left out so far and what they were, so that a hardlink to one is left out too.
    left_out: HashMap<EntryPath, SpecialKind>,
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))
}

fn timespec(t: Timestamp) -> Timespec {
    Timespec {
        tv_sec: t.secs,
        tv_nsec: i64::from(t.nanos.min(999_999_999)),
    }
}

pub(crate) fn timestamps(t: Timestamp) -> Timestamps {
    Timestamps {
        last_access: timespec(t),
        last_modification: timespec(t),
    }
}

fn file_type(stat: &Stat) -> FileType {
    FileType::from_raw_mode(stat.st_mode)
}

fn is_whiteout_device(stat: &Stat) -> bool {
    file_type(stat) == FileType::CharacterDevice && stat.st_rdev == 0
}

/// Splits a normalised path into parent bytes and final component.
fn split(path: &EntryPath) -> (&[u8], &[u8]) {
    (path.parent_bytes(), path.file_name())
}

/// Lexically resolves `target` (a symlink's target, found at `link_dir/...`) to a root-relative
/// path, clamping `..` at the root as the kernel's `RESOLVE_IN_ROOT` does.
fn resolve_lexically(link_dir: &[u8], target: &[u8]) -> Vec<Vec<u8>> {
    let mut parts: Vec<Vec<u8>> = Vec::new();
    if !target.starts_with(b"/") {
        for c in link_dir.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            parts.push(c.to_vec());
        }
    }
    for c in target.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c.to_vec()),
        }
    }
    parts
}

impl Applier {
    /// Opens the target directory.
    pub(crate) fn open(
        dest: &Path,
        mode: Target,
        privileges: Privileges,
        must_be_empty: bool,
    ) -> Result<Self, Error> {
        let dest_err = |reason: &str| Error::Destination {
            path: dest.to_owned(),
            reason: reason.to_owned(),
        };
        let root = match Root::open(dest) {
            Ok(root) => root,
            Err(Errno::NOENT) => return Err(dest_err("does not exist")),
            Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
                return Err(dest_err("is not a directory"));
            }
            Err(e) => {
                return Err(Error::DestinationIo {
                    path: dest.to_owned(),
                    op: "open",
                    source: e.into(),
                });
            }
        };
        if must_be_empty {
            let mut entries = std::fs::read_dir(dest).map_err(|source| Error::DestinationIo {
                path: dest.to_owned(),
                op: "list",
                source,
            })?;
            if entries.next().is_some() {
                return Err(dest_err("is not empty"));
            }
        }
        let mut lower_roots = Vec::new();
        if let Target::LayerDir { lower_layers, .. } = &mode {
            for lower in lower_layers {
                let lower_root = Root::open_following(lower).map_err(|e| Error::DestinationIo {
                    path: lower.clone(),
                    op: "open lower layer directory",
                    source: e.into(),
                })?;
                lower_roots.push(lower_root);
            }
        }
        Ok(Applier {
            root,
            mode,
            lower_roots,
            privileged: privileges.is_root(),
            euid: rustix::process::geteuid().as_raw(),
            egid: rustix::process::getegid().as_raw(),
            umask: process_umask(),
            mode_at_create: tree_without_default_acls(dest),
            report: Report::default(),
            buffer: vec![0; COPY_BUFFER],
            current: LayerState::new(),
            limits: crate::Limits::default(),
            below_flat: None,
            below_link: None,
            keep_last_file: false,
            record_sources: false,
            leave_out_special: false,
            left_out: HashMap::new(),
        })
    }

    pub(crate) fn report(&self) -> &Report {
        &self.report
    }

    pub(crate) fn root_path(&self) -> &Path {
        self.root.path()
    }

    pub(crate) fn into_report(self) -> Report {
        self.report
    }

    /// Applies one layer's uncompressed tar stream.
    pub(crate) fn apply_tar<R: Read>(&mut self, tar: R, layer: &str) -> Result<(), Error> {
        self.begin_layer(layer);
        let classify = !matches!(self.mode, Target::Verbatim);
        let limits = self.limits;
        let count = read_entries_limited(tar, layer, classify, &limits, |entry, data| {
            self.apply_entry(entry, data)
        })?;
        self.end_layer(count)
    }

    fn begin_layer(&mut self, layer: &str) {
        self.current.begin(layer);
    }

    fn end_layer(&mut self, count: u64) -> Result<(), Error> {
        self.report.entries += count;
        self.current.parent_cache = None;
        self.current.last_file = None;
        self.current.pending_copy = None;
        self.write_explicit_whiteouts()?;
        self.fix_directories()?;
        self.current.upper.clear();
        Ok(())
    }

    fn fs_err(&self, entry: &Entry, op: &'static str, source: impl Into<io::Error>) -> Error {
        Error::Fs {
            layer: self.current.name.clone(),
            entry: entry.display_name(),
            op,
            source: source.into(),
        }
    }

    fn invalid(&self, entry: &Entry, reason: impl Into<String>) -> Error {
        Error::InvalidEntry {
            layer: self.current.name.clone(),
            entry: entry.display_name(),
            reason: reason.into(),
        }
    }

    fn is_flat(&self) -> bool {
        matches!(self.mode, Target::Flat)
    }

    fn layer_whiteouts(&self) -> Option<WhiteoutFormat> {
        match &self.mode {
            Target::LayerDir { whiteouts, .. } => Some(*whiteouts),
            _ => None,
        }
    }

    /// The ordered steps for one entry.
    fn apply_entry(&mut self, entry: &Entry, data: &mut dyn Read) -> Result<(), Error> {
        match &entry.kind {
            EntryKind::AufsMetadata => {
                tracing::debug!(layer = %self.current.name, entry = %entry.display_name(), "skipping AUFS metadata");
                Ok(())
            }
            EntryKind::Whiteout | EntryKind::OpaqueWhiteout => {
                // Removals may take away the cached parent directory: resolve afresh after them.
                self.current.parent_cache = None;
                let result = if entry.kind == EntryKind::Whiteout {
                    self.apply_whiteout(entry)
                } else {
                    self.apply_opaque(entry)
                };
                self.current.parent_cache = None;
                result
            }
            _ if entry.path.is_root() => self.apply_root(entry),
            _ => {
                if self
                    .layer_whiteouts()
                    .is_some_and(WhiteoutFormat::uses_devices)
                {
                    self.refuse_overlay_lookalikes(entry)?;
                }
                let left_out = self.special_to_leave_out(entry);
                let (unsafe_parent, name) = split(&entry.path);
                let parent = self.parent_dir(entry, unsafe_parent)?;
                let name = cstring(name).map_err(|e| self.fs_err(entry, "name", e))?;
                if let Some(kind) = left_out {
                    // What was at the path goes, as it would for the entry itself: the path
                    // shows nothing rather than a lower layer's version.
                    self.current.parent_cache = None;
                    self.remove_all(entry, &parent, &name)?;
                    self.report.leave_out(&self.current.name, &entry.path, kind);
                    self.left_out.insert(entry.path.clone(), kind);
                    return Ok(());
                }
                self.left_out.remove(&entry.path);
                if self
                    .current
                    .parent_cache
                    .as_ref()
                    .is_some_and(|(cached, _)| cached.as_slice() == entry.path.as_bytes())
                {
                    // This entry replaces, or changes the owner of, the cached directory.
                    self.current.parent_cache = None;
                }
                self.create(entry, &parent, &name, data)?;
                if self.is_flat() {
                    self.current
                        .upper
                        .insert_with_ancestors(entry.path.as_bytes());
                }
                Ok(())
            }
        }
    }

    /// What special file `entry` is, when such files are left out: a device, a FIFO, or a
    /// hardlink to one left out before.
    fn special_to_leave_out(&self, entry: &Entry) -> Option<SpecialKind> {
        if !self.leave_out_special {
            return None;
        }
        match &entry.kind {
            EntryKind::Fifo => Some(SpecialKind::Fifo),
            EntryKind::CharDevice { .. } => Some(SpecialKind::Char),
            EntryKind::BlockDevice { .. } => Some(SpecialKind::Block),
            EntryKind::Hardlink(target) => self.left_out.get(target).copied(),
            _ => None,
        }
    }

    /// In overlay form a 0/0 character device or an `overlay.*` xattr in the layer's own content
    /// would be read by overlayfs as a whiteout or an opaque marker.
    fn refuse_overlay_lookalikes(&self, entry: &Entry) -> Result<(), Error> {
        if matches!(entry.kind, EntryKind::CharDevice { major: 0, minor: 0 }) {
            return Err(self.invalid(
                entry,
                "a character device 0/0 in the layer's content would read as an overlay whiteout",
            ));
        }
        if let Some(x) = entry.xattrs.iter().find(|x| {
            x.name.starts_with(b"trusted.overlay.") || x.name.starts_with(b"user.overlay.")
        }) {
            return Err(self.invalid(
                entry,
                format!(
                    "xattr {} in the layer's content would be read by overlayfs",
                    String::from_utf8_lossy(&x.name)
                ),
            ));
        }
        Ok(())
    }

    /// A directory entry for the root applies its metadata to the root.
    fn apply_root(&mut self, entry: &Entry) -> Result<(), Error> {
        if entry.kind != EntryKind::Directory {
            return Err(self.invalid(entry, "a non-directory entry for the root"));
        }
        let dir = self
            .root
            .reopen(OFlags::RDONLY | OFlags::DIRECTORY)
            .map_err(|e| self.fs_err(entry, "open the root", e))?;
        self.set_owner_fd(entry, &dir, true)?;
        self.set_xattrs_fd(entry, &dir)?;
        self.current.dir_fixes.insert(
            Vec::new(),
            DirFix {
                mtime: entry.mtime,
                mode: Some(entry.mode),
            },
        );
        Ok(())
    }

    /// Resolves (creating if needed) the parent directory of an entry inside the root and returns
    /// an `O_PATH` fd to it. The last parent is cached: consecutive entries of one directory are
    /// common, and an entry can never change its own parent's ancestry.
    fn parent_dir(&mut self, entry: &Entry, unsafe_parent: &[u8]) -> Result<Arc<ParentDir>, Error> {
        if let Some((cached, dir)) = &self.current.parent_cache
            && cached.as_slice() == unsafe_parent
        {
            return Ok(Arc::clone(dir));
        }
        let fd = self.ensure_dir(entry, unsafe_parent, 0)?;
        let stat = rustix::fs::fstat(&fd).map_err(|e| self.fs_err(entry, "stat directory", e))?;
        self.remember_dir_stat(unsafe_parent, &stat);
        let new_inode_gid = if stat.st_mode & 0o2000 != 0 {
            stat.st_gid
        } else {
            self.egid
        };
        let dir = Arc::new(ParentDir { fd, new_inode_gid });
        self.current.parent_cache = Some((unsafe_parent.to_vec(), Arc::clone(&dir)));
        Ok(dir)
    }

    /// Remembers a directory's time before this layer changes its children, so that it can be
    /// put back when the layer ends (as umoci does): only an entry for the directory itself
    /// changes its metadata.
    fn remember_dir_time(
        &mut self,
        entry: &Entry,
        unsafe_dir: &[u8],
        fd: &OwnedFd,
    ) -> Result<(), Error> {
        if self.current.dir_fixes.contains_key(unsafe_dir) {
            return Ok(());
        }
        let stat = rustix::fs::fstat(fd).map_err(|e| self.fs_err(entry, "stat directory", e))?;
        self.remember_dir_stat(unsafe_dir, &stat);
        Ok(())
    }

    /// [`Applier::remember_dir_time`] with the directory's `stat` at hand.
    fn remember_dir_stat(&mut self, unsafe_dir: &[u8], stat: &Stat) {
        if self.current.dir_fixes.contains_key(unsafe_dir) {
            return;
        }
        self.current.dir_fixes.insert(
            unsafe_dir.to_vec(),
            DirFix {
                mtime: Timestamp {
                    secs: stat.st_mtime,
                    nanos: u32::try_from(stat.st_mtime_nsec).unwrap_or(0),
                },
                mode: None,
            },
        );
    }

    /// `mkdir -p` inside the root: missing directories are created (0755, or 0700 until the
    /// layer ends when unprivileged), a non-directory in the way is replaced by a directory, a
    /// dangling symlink in the way is followed (inside the root) and its target created.
    fn ensure_dir(
        &mut self,
        entry: &Entry,
        unsafe_path: &[u8],
        depth: u32,
    ) -> Result<OwnedFd, Error> {
        let flags = OFlags::PATH | OFlags::DIRECTORY;
        match self.root.resolve(unsafe_path, flags) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) | Err(Errno::NOTDIR) => {}
            Err(e) => return Err(self.fs_err(entry, "resolve parent directory", e)),
        }
        if depth > MAX_PARENT_SYMLINKS {
            return Err(self.fs_err(entry, "resolve parent directory", Errno::LOOP));
        }
        let mut current = self
            .root
            .resolve(b"", flags)
            .map_err(|e| self.fs_err(entry, "open the root", e))?;
        let mut end = 0;
        let components: Vec<&[u8]> = unsafe_path
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .collect();
        for component in components {
            let start = if end == 0 { 0 } else { end + 1 };
            end = start + component.len();
            let unsafe_prefix = &unsafe_path[..end];
            let name = cstring(component).map_err(|e| self.fs_err(entry, "name", e))?;
            let mut attempts = 0;
            current = loop {
                attempts += 1;
                if attempts > 4 {
                    return Err(self.fs_err(entry, "create parent directory", Errno::LOOP));
                }
                match self.root.resolve(unsafe_prefix, flags) {
                    Ok(fd) => break fd,
                    Err(Errno::NOENT) => {
                        self.sync_below(None)?;
                        if let Some(target) = self.lower_symlink(unsafe_prefix) {
                            // The merged view has a symlink here (from a lower layer): the
                            // entry belongs where it points, as in the flat tree.
                            let dir_bytes = &unsafe_path[..start.saturating_sub(1)];
                            let mut redirected = resolve_lexically(dir_bytes, &target).join(&b'/');
                            let rest = &unsafe_path[end..];
                            if redirected.is_empty() {
                                redirected
                                    .extend_from_slice(rest.strip_prefix(b"/").unwrap_or(rest));
                            } else {
                                redirected.extend_from_slice(rest);
                            }
                            return self.ensure_dir(entry, &redirected, depth + 1);
                        }
                        // Creating a child changes the directory's time: put it back at the end.
                        let dir_bytes = &unsafe_path[..start.saturating_sub(1)];
                        self.remember_dir_time(entry, dir_bytes, &current)?;
                        match rustix::fs::mkdirat(&current, &name, Mode::from_raw_mode(0o755)) {
                            Ok(()) => {
                                self.inherit_from_lower(entry, unsafe_prefix, &current, &name)?;
                            }
                            Err(Errno::EXIST) => {
                                // A dangling symlink: create what it points to, inside the root.
                                let target = rustix::fs::readlinkat(&current, &name, Vec::new())
                                    .map_err(|e| self.fs_err(entry, "read parent symlink", e))?;
                                let dir_bytes = &unsafe_path[..start.saturating_sub(1)];
                                let resolved =
                                    resolve_lexically(dir_bytes, target.as_bytes()).join(&b'/');
                                self.ensure_dir(entry, &resolved, depth + 1)?;
                            }
                            Err(e) => {
                                return Err(self.fs_err(entry, "create parent directory", e));
                            }
                        }
                    }
                    Err(Errno::NOTDIR) => {
                        // Something that is not a directory sits where a directory must be.
                        let dir_bytes = &unsafe_path[..start.saturating_sub(1)];
                        self.remember_dir_time(entry, dir_bytes, &current)?;
                        let stat = rustix::fs::statat(&current, &name, AtFlags::SYMLINK_NOFOLLOW)
                            .map_err(|e| self.fs_err(entry, "stat parent", e))?;
                        let was_whiteout = is_whiteout_device(&stat);
                        self.remove_all(entry, &current, &name)?;
                        rustix::fs::mkdirat(&current, &name, Mode::from_raw_mode(0o755))
                            .map_err(|e| self.fs_err(entry, "create parent directory", e))?;
                        self.current
                            .dir_fixes
                            .insert(unsafe_prefix.to_vec(), implicit_dir_fix(entry));
                        if was_whiteout
                            && self
                                .layer_whiteouts()
                                .is_some_and(WhiteoutFormat::uses_devices)
                        {
                            let dir = EntryPath::normalise(unsafe_prefix)
                                .map_err(|r| self.invalid(entry, r))?;
                            self.mark_opaque(entry, &dir)?;
                        }
                    }
                    Err(e) => return Err(self.fs_err(entry, "resolve parent directory", e)),
                }
            };
        }
        Ok(current)
    }

    /// Before the stack below is looked at: when it is the flat tree written by a worker that
    /// runs behind (see [`both`]), waits until the worker has applied every earlier entry, and
    /// returns the flat side's pending fix of `fix_of`. Without a worker, nothing to wait for.
    fn sync_below(&self, fix_of: Option<&[u8]>) -> Result<Option<DirFix>, Error> {
        match &self.below_link {
            Some(link) => link.sync(fix_of),
            None => Ok(None),
        }
    }

    /// The target of the symlink that the stack below has at `unsafe_path`, if it has one there.
    fn lower_symlink(&self, unsafe_path: &[u8]) -> Option<Vec<u8>> {
        let (dir, stat, name) = self.lookup_below(unsafe_path)?;
        if file_type(&stat) != FileType::Symlink {
            return None;
        }
        rustix::fs::readlinkat(&dir, &name, Vec::new())
            .ok()
            .map(|t| t.into_bytes())
    }

    /// What the stack below this layer has at `unsafe_path`: the directory holding it (an
    /// `O_PATH` fd), its `lstat` and its name. The stack below is the flat tree of the layers
    /// beneath when the layer is written together with it, else the lower layer directories,
    /// walked top down as overlayfs does: a whiteout, an opaque directory or a non-directory on
    /// the way hides everything beneath it. `None` when the path is not in the stack below.
    fn lookup_below(&self, unsafe_path: &[u8]) -> Option<(OwnedFd, Stat, CString)> {
        let path = EntryPath::normalise(unsafe_path).ok()?;
        if path.is_root() {
            return None;
        }
        let (unsafe_parent, name) = split(&path);
        let name = cstring(name).ok()?;
        if let Some(flat) = &self.below_flat {
            let dir = flat
                .resolve(unsafe_parent, OFlags::PATH | OFlags::DIRECTORY)
                .ok()?;
            let stat = rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
            return Some((dir, stat, name));
        }
        let components: Vec<&[u8]> = path
            .as_bytes()
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .collect();
        'layers: for lower in &self.lower_roots {
            let mut dir = lower.resolve(b"", OFlags::PATH | OFlags::DIRECTORY).ok()?;
            for (i, component) in components.iter().enumerate() {
                let last = i + 1 == components.len();
                let cname = cstring(component).ok()?;
                match rustix::fs::statat(&dir, &cname, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(stat) if is_whiteout_device(&stat) => return None,
                    Ok(stat) if last => return Some((dir, stat, cname)),
                    Ok(stat) if file_type(&stat) == FileType::Directory => {
                        dir = rustix::fs::openat(
                            &dir,
                            &cname,
                            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                            Mode::empty(),
                        )
                        .ok()?;
                    }
                    // A file, symlink or device hides the layers' paths beneath it.
                    Ok(_) => return None,
                    Err(Errno::NOENT) => {
                        let mut raw = b".wh.".to_vec();
                        raw.extend_from_slice(component);
                        if rustix::fs::statat(&dir, raw.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
                            .is_ok()
                            || is_opaque_dir(&dir)
                        {
                            return None;
                        }
                        continue 'layers;
                    }
                    Err(_) => return None,
                }
            }
        }
        None
    }

    /// The directory at `unsafe_dir` in the stack below: its `stat` and xattrs.
    fn below_dir(
        &self,
        entry: &Entry,
        unsafe_dir: &[u8],
    ) -> Result<Option<(Stat, Vec<crate::entry::Xattr>)>, Error> {
        let Some((parent, stat, name)) = self.lookup_below(unsafe_dir) else {
            return Ok(None);
        };
        if file_type(&stat) != FileType::Directory {
            return Ok(None);
        }
        let fd = rustix::fs::openat(
            &parent,
            &name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.fs_err(entry, "open lower directory", e))?;
        let stat =
            rustix::fs::fstat(&fd).map_err(|e| self.fs_err(entry, "stat lower directory", e))?;
        Ok(Some((stat, crate::tarout::fd_xattrs(&fd))))
    }

    /// A layer directory's implicit parent (one the layer has no entry for) takes the owner,
    /// mode, times and xattrs of the same directory in the stack below (as containerd does), so
    /// that stacking the layers does not change it. One that is not in the stack below either
    /// (and a flat tree's implicit directory) is 0755 with the time of the entry that needed
    /// it, the same on both sides and on every run.
    fn inherit_from_lower(
        &mut self,
        entry: &Entry,
        unsafe_dir: &[u8],
        parent: &OwnedFd,
        name: &CString,
    ) -> Result<(), Error> {
        let flat_fix = self.sync_below(Some(unsafe_dir))?;
        let Some((stat, xattrs)) = self.below_dir(entry, unsafe_dir)? else {
            self.current
                .dir_fixes
                .insert(unsafe_dir.to_vec(), implicit_dir_fix(entry));
            return Ok(());
        };
        if self.privileged {
            rustix::fs::chownat(
                parent,
                name,
                Some(rustix::fs::Uid::from_raw(stat.st_uid)),
                Some(rustix::fs::Gid::from_raw(stat.st_gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| self.fs_err(entry, "set owner", e))?;
        }
        // Its xattrs too, except the overlay markers that belong to that lower layer.
        let xattrs: Vec<_> = xattrs
            .into_iter()
            .filter(|x| {
                !x.name.starts_with(b"trusted.overlay.") && !x.name.starts_with(b"user.overlay.")
            })
            .collect();
        if !xattrs.is_empty() {
            let dir = rustix::fs::openat(
                parent,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| self.fs_err(entry, "open directory", e))?;
            let implicit = Entry {
                xattrs,
                ..entry.clone()
            };
            self.set_xattrs_fd(&implicit, &dir)?;
        }
        // The flat side may have touched the directory earlier in this layer (a whiteout below
        // it that this layer directory dropped): its time and mode before the layer are in the
        // flat side's pending fixes (`flat_fix`).
        self.current.dir_fixes.insert(
            unsafe_dir.to_vec(),
            DirFix {
                mtime: flat_fix.map_or(
                    Timestamp {
                        secs: stat.st_mtime,
                        nanos: u32::try_from(stat.st_mtime_nsec).unwrap_or(0),
                    },
                    |f| f.mtime,
                ),
                mode: Some(
                    flat_fix
                        .and_then(|f| f.mode)
                        .unwrap_or(stat.st_mode & 0o7777),
                ),
            },
        );
        Ok(())
    }

    /// Unprivileged: gives the owner write access to an entry's parent (a read-only directory of
    /// a lower layer), restoring its mode when the layer ends.
    fn make_parent_writable(&mut self, entry: &Entry) -> Result<(), Error> {
        let unsafe_parent = entry.path.parent();
        let stat = if unsafe_parent.is_root() {
            let root = self
                .root
                .reopen(OFlags::RDONLY | OFlags::DIRECTORY)
                .map_err(|e| self.fs_err(entry, "open the root", e))?;
            let stat =
                rustix::fs::fstat(&root).map_err(|e| self.fs_err(entry, "stat the root", e))?;
            rustix::fs::fchmod(&root, Mode::from_raw_mode((stat.st_mode & 0o7777) | 0o700))
                .map_err(|e| self.fs_err(entry, "make the root writable", e))?;
            stat
        } else {
            let (unsafe_grandparent, name) = split(&unsafe_parent);
            let grandparent = self
                .root
                .resolve(unsafe_grandparent, OFlags::PATH | OFlags::DIRECTORY)
                .map_err(|e| self.fs_err(entry, "resolve parent directory", e))?;
            let name = cstring(name).map_err(|e| self.fs_err(entry, "name", e))?;
            let stat = rustix::fs::statat(&grandparent, &name, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| self.fs_err(entry, "stat parent", e))?;
            if file_type(&stat) != FileType::Directory {
                return Err(self.fs_err(entry, "make parent writable", Errno::NOTDIR));
            }
            rustix::fs::chmodat(
                &grandparent,
                &name,
                Mode::from_raw_mode((stat.st_mode & 0o7777) | 0o700),
                AtFlags::empty(),
            )
            .map_err(|e| self.fs_err(entry, "make parent writable", e))?;
            stat
        };
        let original = stat.st_mode & 0o7777;
        let fix = self
            .current
            .dir_fixes
            .entry(unsafe_parent.as_bytes().to_vec())
            .or_insert(DirFix {
                mtime: Timestamp {
                    secs: stat.st_mtime,
                    nanos: u32::try_from(stat.st_mtime_nsec).unwrap_or(0),
                },
                mode: None,
            });
        fix.mode.get_or_insert(original);
        Ok(())
    }

    /// Creates the entry at `parent/name`, replacing what is there unless both are directories.
    fn create(
        &mut self,
        entry: &Entry,
        parent: &ParentDir,
        name: &CString,
        data: &mut dyn Read,
    ) -> Result<(), Error> {
        let mut made_writable = false;
        for attempt in 0..3 {
            match self.try_create(entry, parent, name, data) {
                Ok(()) => return Ok(()),
                Err(CreateError::Io(e, _))
                    if e.kind() == io::ErrorKind::PermissionDenied
                        && !self.privileged
                        && !made_writable =>
                {
                    made_writable = true;
                    self.make_parent_writable(entry)?;
                }
                Err(CreateError::Exists) if attempt < 2 => {
                    let existing = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)
                    {
                        Ok(stat) => stat,
                        Err(Errno::NOENT) => continue,
                        Err(e) => return Err(self.fs_err(entry, "stat existing path", e)),
                    };
                    let existing_is_dir = file_type(&existing) == FileType::Directory;
                    if existing_is_dir && entry.kind == EntryKind::Directory {
                        // Directory over directory: merge, take the new metadata.
                        return self.finish_directory(entry, parent, name, false);
                    }
                    if let EntryKind::Hardlink(target) = &entry.kind
                        && self.is_same_inode(target, &existing)
                    {
                        return Ok(());
                    }
                    let was_whiteout = is_whiteout_device(&existing);
                    self.remove_all(entry, parent, name)?;
                    if was_whiteout
                        && entry.kind == EntryKind::Directory
                        && self
                            .layer_whiteouts()
                            .is_some_and(WhiteoutFormat::uses_devices)
                    {
                        // The lower directory was whited out: the new one must hide its children.
                        self.try_create(entry, parent, name, data)
                            .map_err(|e| e.into_error(self, entry))?;
                        return self.mark_opaque(entry, &entry.path);
                    }
                }
                Err(e) => return Err(e.into_error(self, entry)),
            }
        }
        Err(self.fs_err(entry, "replace existing path", Errno::EXIST))
    }

    fn is_same_inode(&self, unsafe_target: &EntryPath, existing: &Stat) -> bool {
        let (tparent, tname) = split(unsafe_target);
        let Ok(tdir) = self.root.resolve(tparent, OFlags::PATH | OFlags::DIRECTORY) else {
            return false;
        };
        rustix::fs::statat(&tdir, tname, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|t| t.st_ino == existing.st_ino && t.st_dev == existing.st_dev)
    }

    fn try_create(
        &mut self,
        entry: &Entry,
        parent: &ParentDir,
        name: &CString,
        data: &mut dyn Read,
    ) -> Result<(), CreateError> {
        match &entry.kind {
            EntryKind::File => self.create_file(entry, parent, name, data),
            EntryKind::Directory => {
                let initial = if self.privileged {
                    0o700
                } else {
                    0o700 | entry.mode
                };
                rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(initial & 0o777))
                    .map_err(|e| CreateError::from_errno(e, "create directory"))?;
                self.finish_directory(entry, parent, name, true)
                    .map_err(CreateError::Done)
            }
            EntryKind::Symlink(target) => {
                if target.is_empty() {
                    return Err(CreateError::Done(
                        self.invalid(entry, "symlink with an empty target"),
                    ));
                }
                let target = cstring(target).map_err(|e| CreateError::Io(e, "symlink target"))?;
                rustix::fs::symlinkat(&target, parent, name)
                    .map_err(|e| CreateError::from_errno(e, "create symlink"))?;
                self.set_owner_at(entry, parent, name, true)
                    .map_err(CreateError::Done)?;
                self.set_xattrs_at(entry, parent, name)
                    .map_err(CreateError::Done)?;
                rustix::fs::utimensat(
                    parent,
                    name,
                    &timestamps(entry.mtime),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| CreateError::Io(e.into(), "set symlink time"))?;
                Ok(())
            }
            EntryKind::Hardlink(target) => self.create_hardlink(entry, target, parent, name),
            EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
                if !self.privileged {
                    self.report
                        .warn(&self.current.name, &entry.path, WarningKind::DeviceSkipped);
                    return Ok(());
                }
                let kind = if matches!(entry.kind, EntryKind::CharDevice { .. }) {
                    FileType::CharacterDevice
                } else {
                    FileType::BlockDevice
                };
                rustix::fs::mknodat(
                    parent,
                    name,
                    kind,
                    Mode::from_raw_mode(0o600),
                    rustix::fs::makedev(*major, *minor),
                )
                .map_err(|e| CreateError::from_errno(e, "create device"))?;
                self.finish_special(entry, parent, name)
                    .map_err(CreateError::Done)
            }
            EntryKind::Fifo => {
                rustix::fs::mknodat(parent, name, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
                    .map_err(|e| CreateError::from_errno(e, "create fifo"))?;
                self.finish_special(entry, parent, name)
                    .map_err(CreateError::Done)
            }
            EntryKind::Whiteout | EntryKind::OpaqueWhiteout | EntryKind::AufsMetadata => Ok(()),
        }
    }

    fn create_file(
        &mut self,
        entry: &Entry,
        parent: &ParentDir,
        name: &CString,
        data: &mut dyn Read,
    ) -> Result<(), CreateError> {
        // Read back by the flat side when this layer directory is written together with it.
        let access = if self.keep_last_file {
            OFlags::RDWR
        } else {
            OFlags::WRONLY
        };
        // As root, a new inode already has the entry's owner when it is ours (and the group a
        // new inode gets in this directory): no chown then. Without a chown to clear them
        // afterwards, the mode can be given at creation, when the umask leaves it whole and it
        // has no setuid, setgid or sticky bit (which a write would clear unprivileged).
        let owner_preset = self.privileged
            && entry.uid == u64::from(self.euid)
            && entry.gid == u64::from(parent.new_inode_gid);
        let mode_preset = owner_preset
            && self.mode_at_create
            && entry.mode & !0o777 == 0
            && self.umask.is_some_and(|umask| entry.mode & umask == 0);
        let initial_mode = if mode_preset { entry.mode } else { 0o600 };
        let fd = rustix::fs::openat(
            parent,
            name,
            access | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(initial_mode),
        )
        .map_err(|e| CreateError::from_errno(e, "create file"))?;
        let mut file = std::fs::File::from(fd);
        let copied = if let Some((source, len)) = self.current.pending_copy.take() {
            let mut buffer = std::mem::take(&mut self.buffer);
            let copied = copy_file(&source, &mut file, len, &mut buffer).map_err(CopyError::Write);
            self.buffer = buffer;
            copied
        } else {
            let mut buffer = std::mem::take(&mut self.buffer);
            let copied = copy_data(data, &mut file, &mut buffer);
            self.buffer = buffer;
            copied
        };
        let written = match copied {
            Ok(n) => n,
            Err(CopyError::Read(source)) => {
                return Err(CreateError::Done(Error::Tar {
                    layer: self.current.name.clone(),
                    source,
                }));
            }
            Err(CopyError::Write(e)) => return Err(CreateError::Io(e, "write file data")),
        };
        self.report.file_bytes += written;
        if !owner_preset {
            self.set_owner_fd(entry, &file, true)
                .map_err(CreateError::Done)?;
        }
        self.set_xattrs_fd(entry, &file)
            .map_err(CreateError::Done)?;
        if self.record_sources && self.is_flat() {
            // Best effort: a file without its tag is published from its content.
            let value = crate::source::encode(&self.current.name, entry.path.as_bytes());
            let _ = rustix::fs::fsetxattr(&file, crate::SOURCE_XATTR, &value, XattrFlags::empty());
        }
        if !mode_preset {
            rustix::fs::fchmod(&file, Mode::from_raw_mode(entry.mode))
                .map_err(|e| CreateError::Io(e.into(), "set mode"))?;
        }
        rustix::fs::futimens(&file, &timestamps(entry.mtime))
            .map_err(|e| CreateError::Io(e.into(), "set time"))?;
        if self.keep_last_file {
            self.current.last_file = Some((file, written));
        }
        Ok(())
    }

    /// Owner and xattrs now; mode and time when the layer ends.
    fn finish_directory(
        &mut self,
        entry: &Entry,
        parent: &OwnedFd,
        name: &CString,
        created: bool,
    ) -> Result<(), Error> {
        self.set_owner_at(entry, parent, name, created)?;
        if !entry.xattrs.is_empty() {
            let dir = rustix::fs::openat(
                parent,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| self.fs_err(entry, "open directory", e))?;
            self.set_xattrs_fd(entry, &dir)?;
        }
        self.current.dir_fixes.insert(
            entry.path.as_bytes().to_vec(),
            DirFix {
                mtime: entry.mtime,
                mode: Some(entry.mode),
            },
        );
        Ok(())
    }

    /// Metadata for devices and FIFOs.
    fn finish_special(
        &mut self,
        entry: &Entry,
        parent: &OwnedFd,
        name: &CString,
    ) -> Result<(), Error> {
        self.set_owner_at(entry, parent, name, true)?;
        self.set_xattrs_at(entry, parent, name)?;
        // The node was created by this call and is no symlink, so following is harmless here.
        rustix::fs::chmodat(
            parent,
            name,
            Mode::from_raw_mode(entry.mode),
            AtFlags::empty(),
        )
        .map_err(|e| self.fs_err(entry, "set mode", e))?;
        rustix::fs::utimensat(
            parent,
            name,
            &timestamps(entry.mtime),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.fs_err(entry, "set time", e))?;
        Ok(())
    }

    fn create_hardlink(
        &mut self,
        entry: &Entry,
        unsafe_target: &EntryPath,
        parent: &ParentDir,
        name: &CString,
    ) -> Result<(), CreateError> {
        if unsafe_target == &entry.path {
            return Ok(());
        }
        let target_err = |reason| {
            CreateError::Done(Error::HardlinkTarget {
                layer: self.current.name.clone(),
                entry: entry.display_name(),
                target: unsafe_target.to_string(),
                reason,
            })
        };
        let (tparent, tname) = split(unsafe_target);
        let found = match self.root.resolve(tparent, OFlags::PATH | OFlags::DIRECTORY) {
            Ok(tdir) => match rustix::fs::statat(&tdir, tname, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => Some((tdir, stat)),
                Err(Errno::NOENT) => None,
                Err(e) => return Err(CreateError::Io(e.into(), "stat hardlink target")),
            },
            Err(Errno::NOENT) | Err(Errno::NOTDIR) => None,
            Err(e) => return Err(CreateError::Io(e.into(), "resolve hardlink target")),
        };
        match found {
            Some((_, stat)) if file_type(&stat) == FileType::Directory => {
                Err(target_err("is a directory"))
            }
            Some((tdir, _)) => {
                let tname = cstring(tname).map_err(|e| CreateError::Io(e, "name"))?;
                rustix::fs::linkat(&tdir, &tname, parent, name, AtFlags::empty())
                    .map_err(|e| CreateError::from_errno(e, "create hardlink"))
            }
            None => {
                if self.lower_roots.is_empty() && self.below_flat.is_none() {
                    if matches!(self.mode, Target::LayerDir { .. }) {
                        return Err(target_err(
                            "is not in this layer (give the lower layers to copy it from)",
                        ));
                    }
                    return Err(target_err("does not exist"));
                }
                self.copy_from_lower(entry, unsafe_target, parent, name)
            }
        }
    }

    /// Materialises a hardlink to a file of a lower layer as a copy of that file.
    fn copy_from_lower(
        &mut self,
        entry: &Entry,
        unsafe_target: &EntryPath,
        parent: &ParentDir,
        name: &CString,
    ) -> Result<(), CreateError> {
        self.sync_below(None).map_err(CreateError::Done)?;
        let source = match self.lookup_below(unsafe_target.as_bytes()) {
            Some((dir, stat, name)) if file_type(&stat) == FileType::RegularFile => Some(
                rustix::fs::openat(
                    &dir,
                    &name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| CreateError::Io(e.into(), "open hardlink target in lower layer"))?,
            ),
            _ => None,
        };
        let Some(source) = source else {
            return Err(CreateError::Done(Error::HardlinkTarget {
                layer: self.current.name.clone(),
                entry: entry.display_name(),
                target: unsafe_target.to_string(),
                reason: "is neither in this layer nor in the lower layers",
            }));
        };
        let stat =
            rustix::fs::fstat(&source).map_err(|e| CreateError::Io(e.into(), "stat lower file"))?;
        if file_type(&stat) != FileType::RegularFile {
            return Err(CreateError::Done(Error::HardlinkTarget {
                layer: self.current.name.clone(),
                entry: entry.display_name(),
                target: unsafe_target.to_string(),
                reason: "is not a regular file in the lower layers",
            }));
        }
        let copy = Entry {
            kind: EntryKind::File,
            mode: stat.st_mode & 0o7777,
            uid: u64::from(stat.st_uid),
            gid: u64::from(stat.st_gid),
            mtime: Timestamp {
                secs: stat.st_mtime,
                nanos: u32::try_from(stat.st_mtime_nsec).unwrap_or(0),
            },
            size: u64::try_from(stat.st_size).unwrap_or(0),
            xattrs: crate::tarout::fd_xattrs(&source),
            ..entry.clone()
        };
        self.current.pending_copy = Some((std::fs::File::from(source), copy.size));
        let created = self.create_file(&copy, parent, name, &mut io::empty());
        self.current.pending_copy = None;
        created
    }

    /// Sets the owner as root; records it when unprivileged. `fresh` says the inode was just
    /// created by us (and so already has our ids).
    fn set_owner_at(
        &mut self,
        entry: &Entry,
        parent: &OwnedFd,
        name: &CString,
        fresh: bool,
    ) -> Result<(), Error> {
        let Some((uid, gid)) = self.owner_to_set(entry, fresh)? else {
            return Ok(());
        };
        rustix::fs::chownat(
            parent,
            name,
            Some(uid),
            Some(gid),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.fs_err(entry, "set owner", e))
    }

    fn set_owner_fd(&mut self, entry: &Entry, fd: impl AsFd, fresh: bool) -> Result<(), Error> {
        let Some((uid, gid)) = self.owner_to_set(entry, fresh)? else {
            return Ok(());
        };
        rustix::fs::fchown(fd, Some(uid), Some(gid)).map_err(|e| self.fs_err(entry, "set owner", e))
    }

    fn owner_to_set(
        &mut self,
        entry: &Entry,
        fresh: bool,
    ) -> Result<Option<(rustix::fs::Uid, rustix::fs::Gid)>, Error> {
        let (Ok(uid), Ok(gid)) = (u32::try_from(entry.uid), u32::try_from(entry.gid)) else {
            return Err(self.invalid(entry, "uid or gid does not fit in 32 bits"));
        };
        if !self.privileged {
            if uid != self.euid || gid != self.egid {
                self.report
                    .owner_not_applied(&entry.path, entry.uid, entry.gid);
            }
            return Ok(None);
        }
        // A fresh inode already has our uid, but its gid may come from a setgid parent.
        let _ = fresh;
        Ok(Some((
            rustix::fs::Uid::from_raw(uid),
            rustix::fs::Gid::from_raw(gid),
        )))
    }

    /// Whether an xattr from the archive may be set here; `Err(reason)` to skip it.
    fn xattr_allowed(&self, name: &[u8]) -> Result<(), &'static str> {
        if name == b"security.selinux" {
            return Err("host policy decides SELinux labels");
        }
        if name == b"system.nfs4_acl" {
            return Err("NFSv4 ACLs are not portable");
        }
        if name.starts_with(b"trusted.") && !self.privileged {
            return Err("trusted.* needs root");
        }
        Ok(())
    }

    fn set_xattrs_fd(&mut self, entry: &Entry, fd: impl AsFd) -> Result<(), Error> {
        for xattr in &entry.xattrs {
            if xattr.name == crate::SOURCE_XATTR.as_bytes() || self.skip_xattr(entry, &xattr.name) {
                continue;
            }
            let result = cstring(&xattr.name)
                .map_err(|_| Errno::INVAL)
                .and_then(|name| {
                    rustix::fs::fsetxattr(&fd, &name, &xattr.value, XattrFlags::empty())
                });
            self.xattr_result(entry, &xattr.name, result)?;
        }
        Ok(())
    }

    fn set_xattrs_at(
        &mut self,
        entry: &Entry,
        parent: &OwnedFd,
        name: &CString,
    ) -> Result<(), Error> {
        if entry.xattrs.is_empty() {
            return Ok(());
        }
        // No fd can be opened on a symlink or device for fsetxattr; go through the parent fd's
        // /proc entry, which does not follow the final component (lsetxattr).
        let mut path =
            format!("/proc/self/fd/{}/", std::os::fd::AsRawFd::as_raw_fd(parent)).into_bytes();
        path.extend_from_slice(name.as_bytes());
        let path = cstring(&path).map_err(|e| self.fs_err(entry, "name", e))?;
        for xattr in &entry.xattrs {
            if xattr.name == crate::SOURCE_XATTR.as_bytes() || self.skip_xattr(entry, &xattr.name) {
                continue;
            }
            let result = cstring(&xattr.name)
                .map_err(|_| Errno::INVAL)
                .and_then(|xname| {
                    rustix::fs::lsetxattr(&path, &xname, &xattr.value, XattrFlags::empty())
                });
            self.xattr_result(entry, &xattr.name, result)?;
        }
        Ok(())
    }

    fn skip_xattr(&mut self, entry: &Entry, name: &[u8]) -> bool {
        match self.xattr_allowed(name) {
            Ok(()) => false,
            Err(reason) => {
                if name != b"security.selinux" {
                    self.report.warn(
                        &self.current.name,
                        &entry.path,
                        WarningKind::XattrSkipped {
                            name: String::from_utf8_lossy(name).into_owned(),
                            reason: reason.to_owned(),
                        },
                    );
                }
                true
            }
        }
    }

    fn xattr_result(
        &mut self,
        entry: &Entry,
        name: &[u8],
        result: Result<(), Errno>,
    ) -> Result<(), Error> {
        let reason = match result {
            Ok(()) => {
                if name == DEFAULT_ACL.as_bytes() {
                    self.mode_at_create = false;
                }
                return Ok(());
            }
            Err(Errno::NOTSUP) => {
                if self.current.xattr_unsupported_warned {
                    return Ok(());
                }
                self.current.xattr_unsupported_warned = true;
                "the target filesystem does not support it (further such xattrs of this layer are skipped silently)"
            }
            Err(Errno::PERM) | Err(Errno::ACCESS) if !self.privileged => {
                "not permitted unprivileged"
            }
            // Some filesystems refuse user.* on symlinks and devices.
            Err(Errno::PERM) if name.starts_with(b"user.") => "not permitted on this file type",
            Err(e) => return Err(self.fs_err(entry, "set xattr", e)),
        };
        self.report.warn(
            &self.current.name,
            &entry.path,
            WarningKind::XattrSkipped {
                name: String::from_utf8_lossy(name).into_owned(),
                reason: reason.to_owned(),
            },
        );
        Ok(())
    }

    /// Removes `parent/name` whatever it is, recursively for directories, never following links.
    fn remove_all(&self, entry: &Entry, parent: &OwnedFd, name: &CString) -> Result<(), Error> {
        match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(Errno::ISDIR) | Err(Errno::PERM) => {
                if !self.privileged {
                    // A read-only directory (of a lower layer) must become writable to be emptied;
                    // it is removed anyway. Failing here is reported by the steps below.
                    let _ = rustix::fs::chmodat(
                        parent,
                        name,
                        Mode::from_raw_mode(0o700),
                        AtFlags::empty(),
                    );
                }
                let dir = self.open_dir_for_listing(entry, parent, name)?;
                for child in list_dir(&dir).map_err(|e| self.fs_err(entry, "list directory", e))? {
                    self.remove_all(entry, &dir, &child)?;
                }
                drop(dir);
                rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)
                    .map_err(|e| self.fs_err(entry, "remove directory", e))
            }
            Err(e) => Err(self.fs_err(entry, "remove existing path", e)),
        }
    }

    fn open_dir_for_listing(
        &self,
        entry: &Entry,
        parent: &OwnedFd,
        name: &CString,
    ) -> Result<OwnedFd, Error> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rustix::fs::openat(parent, name, flags, Mode::empty()) {
            Ok(fd) => Ok(fd),
            Err(Errno::ACCESS) if !self.privileged => {
                rustix::fs::chmodat(parent, name, Mode::from_raw_mode(0o700), AtFlags::empty())
                    .map_err(|e| self.fs_err(entry, "make directory accessible", e))?;
                rustix::fs::openat(parent, name, flags, Mode::empty())
                    .map_err(|e| self.fs_err(entry, "open directory", e))
            }
            Err(e) => Err(self.fs_err(entry, "open directory", e)),
        }
    }

    /// A whiteout: flat trees remove the lower path; layer directories record it.
    fn apply_whiteout(&mut self, entry: &Entry) -> Result<(), Error> {
        match self.mode.clone() {
            Target::Flat => {
                let (unsafe_parent, name) = split(&entry.path);
                let parent = match self
                    .root
                    .resolve(unsafe_parent, OFlags::PATH | OFlags::DIRECTORY)
                {
                    Ok(_) => self.parent_dir(entry, unsafe_parent)?,
                    // Nothing to hide.
                    Err(Errno::NOENT) | Err(Errno::NOTDIR) => return Ok(()),
                    Err(e) => return Err(self.fs_err(entry, "resolve whiteout parent", e)),
                };
                let name = cstring(name).map_err(|e| self.fs_err(entry, "name", e))?;
                self.remove_lower(entry, &parent, &name, &entry.path)
            }
            Target::LayerDir { .. } if !self.whiteout_parent_below(entry)? => {
                tracing::debug!(layer = %self.current.name, entry = %entry.display_name(), "whiteout with no directory to hide anything in: dropped");
                self.report.dropped_whiteout(entry.path.clone());
                Ok(())
            }
            Target::LayerDir {
                whiteouts: WhiteoutFormat::Oci,
                ..
            } => {
                let mut marker = b".wh.".to_vec();
                marker.extend_from_slice(entry.path.file_name());
                self.create_marker_file(entry, &entry.path.parent().join(&marker))
            }
            Target::LayerDir {
                whiteouts: whiteouts @ (WhiteoutFormat::Overlay | WhiteoutFormat::OverlayDevices),
                ..
            } => {
                if self
                    .current
                    .opaque_dirs
                    .iter()
                    .any(|d| entry.path.starts_with(d) && &entry.path != d)
                {
                    // Everything lower is hidden already; overlayfs mishandles whiteouts there.
                    return Ok(());
                }
                let (unsafe_parent, name) = split(&entry.path);
                let parent = self.parent_dir(entry, unsafe_parent)?;
                let name = cstring(name).map_err(|e| self.fs_err(entry, "name", e))?;
                match rustix::fs::statat(&*parent, &name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(stat) if file_type(&stat) == FileType::Directory => {
                        // This layer has its own directory here: it must hide the lower one's children.
                        self.mark_opaque(entry, &entry.path)
                    }
                    // This layer's own file already hides the lower one.
                    Ok(_) => Ok(()),
                    Err(Errno::NOENT) => {
                        rustix::fs::mknodat(
                            &*parent,
                            &name,
                            FileType::CharacterDevice,
                            Mode::empty(),
                            0,
                        )
                        .map_err(|e| self.fs_err(entry, "create whiteout device", e))?;
                        self.set_owner_at(entry, &parent, &name, true)?;
                        rustix::fs::utimensat(
                            &*parent,
                            &name,
                            &timestamps(entry.mtime),
                            AtFlags::SYMLINK_NOFOLLOW,
                        )
                        .map_err(|e| self.fs_err(entry, "set time", e))?;
                        if whiteouts == WhiteoutFormat::OverlayDevices {
                            // This layer may make the name a directory again: what the stack
                            // below has there must then be whited out one by one.
                            self.remember_hidden(entry, &entry.path)?;
                        }
                        Ok(())
                    }
                    Err(e) => Err(self.fs_err(entry, "stat whiteout target", e)),
                }
            }
            Target::Verbatim => Ok(()),
        }
    }

    /// Whether a layer directory's whiteout has a directory to hide something in, in the merged
    /// view of the stack below and this layer so far. Not when this layer made a path above it
    /// a non-directory (umoci writes `dir2file` as a file, then `dir2file/.wh.sub`): writing the
    /// whiteout would turn the file back into a directory. Not when the stack below lacks the
    /// directory: a whiteout would create it. The flat tree ignores such whiteouts too.
    fn whiteout_parent_below(&self, entry: &Entry) -> Result<bool, Error> {
        let unsafe_parent = entry.path.parent_bytes();
        let dir_flags = OFlags::PATH | OFlags::DIRECTORY;
        if let Some(flat) = &self.below_flat {
            self.sync_below(None)?;
            return Ok(flat.resolve(unsafe_parent, dir_flags).is_ok());
        }
        match self.root.resolve(unsafe_parent, dir_flags) {
            Ok(_) => return Ok(true),
            Err(Errno::NOTDIR) | Err(Errno::LOOP) => return Ok(false),
            Err(Errno::NOENT) => {}
            Err(e) => return Err(self.fs_err(entry, "resolve whiteout parent", e)),
        }
        if self.lower_roots.is_empty() {
            // Nothing is known about the stack below: keep the whiteout.
            return Ok(true);
        }
        Ok(self
            .lookup_below(unsafe_parent)
            .is_some_and(|(_, stat, _)| file_type(&stat) == FileType::Directory))
    }

    /// An opaque marker.
    fn apply_opaque(&mut self, entry: &Entry) -> Result<(), Error> {
        match self.mode.clone() {
            Target::Flat => {
                let dir = self.ensure_dir(entry, entry.path.as_bytes(), 0)?;
                self.remember_dir_time(entry, entry.path.as_bytes(), &dir)?;
                self.prune_lower_children(entry, &dir, &entry.path)?;
                self.current
                    .upper
                    .insert_with_ancestors(entry.path.as_bytes());
                Ok(())
            }
            Target::LayerDir {
                whiteouts: WhiteoutFormat::Oci,
                ..
            } => self.create_marker_file(entry, &entry.path.join(b".wh..wh..opq")),
            Target::LayerDir {
                whiteouts: WhiteoutFormat::Overlay | WhiteoutFormat::OverlayDevices,
                ..
            } => {
                self.ensure_dir(entry, entry.path.as_bytes(), 0)?;
                self.mark_opaque(entry, &entry.path)
            }
            Target::Verbatim => Ok(()),
        }
    }

    /// Writes a raw `.wh.` marker as the empty file it is in the archive.
    fn create_marker_file(
        &mut self,
        entry: &Entry,
        unsafe_marker: &EntryPath,
    ) -> Result<(), Error> {
        let marker = Entry {
            path: unsafe_marker.clone(),
            kind: EntryKind::File,
            size: 0,
            ..entry.clone()
        };
        let (unsafe_parent, name) = split(unsafe_marker);
        let parent = self.parent_dir(entry, unsafe_parent)?;
        let name = cstring(name).map_err(|e| self.fs_err(entry, "name", e))?;
        self.create(&marker, &parent, &name, &mut io::empty())
    }

    /// Overlay form: sets the opaque xattr on a directory of this layer and drops the whiteout
    /// devices this layer put below it. Without xattrs ([`WhiteoutFormat::OverlayDevices`]):
    /// remembers what the stack below has there, whited out when the layer ends.
    fn mark_opaque(&mut self, entry: &Entry, unsafe_dir: &EntryPath) -> Result<(), Error> {
        if self.layer_whiteouts() == Some(WhiteoutFormat::OverlayDevices) {
            self.remember_hidden(entry, unsafe_dir)?;
            if !self.current.opaque_dirs.contains(unsafe_dir) {
                self.current.opaque_dirs.push(unsafe_dir.clone());
            }
            return Ok(());
        }
        let dir = self
            .root
            .resolve(
                unsafe_dir.as_bytes(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
            )
            .map_err(|e| self.fs_err(entry, "open opaque directory", e))?;
        let name = if self.privileged {
            OPAQUE_TRUSTED
        } else {
            self.report.warn(
                &self.current.name,
                unsafe_dir,
                WarningKind::XattrSkipped {
                    name: OPAQUE_TRUSTED.to_owned(),
                    reason:
                        "unprivileged: wrote user.overlay.opaque instead (mount with userxattr)"
                            .to_owned(),
                },
            );
            OPAQUE_USER
        };
        rustix::fs::fsetxattr(&dir, name, b"y", XattrFlags::empty())
            .map_err(|e| self.fs_err(entry, "set opaque xattr", e))?;
        self.remove_whiteout_devices(entry, &dir)?;
        if !self.current.opaque_dirs.contains(unsafe_dir) {
            self.current.opaque_dirs.push(unsafe_dir.clone());
        }
        Ok(())
    }

    /// [`WhiteoutFormat::OverlayDevices`]: takes down what the stack below has at `unsafe_path`
    /// (recursively), while it is still in view: the flat tree below loses it once the flat
    /// side applies this entry. The first record of a path wins: a directory made again over
    /// a whiteout of this layer finds the stack below already gone from the flat tree.
    fn remember_hidden(&mut self, entry: &Entry, unsafe_path: &EntryPath) -> Result<(), Error> {
        if self.current.hidden.contains_key(unsafe_path) {
            return Ok(());
        }
        self.sync_below(None)?;
        let tree = self.snapshot_below(entry, unsafe_path)?;
        self.current.hidden.insert(
            unsafe_path.clone(),
            HiddenBelow {
                marker: entry.clone(),
                tree,
            },
        );
        Ok(())
    }

    /// The names the stack below has in the directory at `unsafe_path` (none when it has no
    /// directory there), each with its own listing when it is a directory.
    fn snapshot_below(
        &self,
        entry: &Entry,
        unsafe_path: &EntryPath,
    ) -> Result<Option<LowerTree>, Error> {
        let is_dir = unsafe_path.is_root()
            || self
                .lookup_below(unsafe_path.as_bytes())
                .is_some_and(|(_, stat, _)| file_type(&stat) == FileType::Directory);
        if !is_dir {
            return Ok(None);
        }
        let mut tree = LowerTree::default();
        for name in self.names_below(entry, unsafe_path)? {
            let child = unsafe_path.join(name.as_bytes());
            let Some((_, stat, _)) = self.lookup_below(child.as_bytes()) else {
                continue;
            };
            let sub = if file_type(&stat) == FileType::Directory {
                self.snapshot_below(entry, &child)?
            } else {
                None
            };
            tree.children.push((name, sub));
        }
        Ok(Some(tree))
    }

    /// Every name found in the directory `unsafe_path` of the flat tree below, or of any lower
    /// layer directory (some of them hidden by a higher layer: [`Applier::lookup_below`]
    /// decides), without raw `.wh.` names.
    fn names_below(&self, entry: &Entry, unsafe_path: &EntryPath) -> Result<Vec<CString>, Error> {
        let roots: Vec<&Root> = match &self.below_flat {
            Some(flat) => vec![flat],
            None => self.lower_roots.iter().collect(),
        };
        let mut names = std::collections::BTreeSet::new();
        for root in roots {
            let dir = match root.resolve(unsafe_path.as_bytes(), OFlags::RDONLY | OFlags::DIRECTORY)
            {
                Ok(dir) => dir,
                Err(Errno::NOENT) | Err(Errno::NOTDIR) | Err(Errno::LOOP) => continue,
                Err(e) => return Err(self.fs_err(entry, "open directory below", e)),
            };
            let listed =
                list_dir(&dir).map_err(|e| self.fs_err(entry, "list directory below", e))?;
            names.extend(
                listed
                    .into_iter()
                    .filter(|n| !n.as_bytes().starts_with(b".wh.")),
            );
        }
        Ok(names.into_iter().collect())
    }

    /// [`WhiteoutFormat::OverlayDevices`], when the layer ends: in each directory of the layer
    /// that hides the stack below, a whiteout device for every name the stack below held that
    /// the layer does not provide, recursively where the layer's directory lies over one below.
    /// Paths the layer did not leave a directory at need nothing (a device or a file hides all).
    fn write_explicit_whiteouts(&mut self) -> Result<(), Error> {
        if self.current.hidden.is_empty() {
            return Ok(());
        }
        let mut hidden: Vec<(EntryPath, HiddenBelow)> = self.current.hidden.drain().collect();
        hidden.sort_by(|a, b| a.0.cmp(&b.0));
        for (path, below) in hidden {
            let dir = match self.root.resolve(
                path.as_bytes(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
            ) {
                Ok(dir) => dir,
                Err(Errno::NOENT) | Err(Errno::NOTDIR) | Err(Errno::LOOP) => continue,
                Err(e) => return Err(self.fs_err(&below.marker, "open hiding directory", e)),
            };
            if let Some(tree) = &below.tree {
                self.whiteout_rest(&below.marker, &dir, &path, tree)?;
            }
            self.report.explicit_whiteout_dirs.push(path);
        }
        self.report.explicit_whiteout_dirs.sort();
        self.report.explicit_whiteout_dirs.dedup();
        Ok(())
    }

    /// Whiteout devices in `dir` (the layer's directory at `unsafe_path`) for the names of
    /// `below` it lacks; into its directories over directories below.
    fn whiteout_rest(
        &mut self,
        marker: &Entry,
        dir: &OwnedFd,
        unsafe_path: &EntryPath,
        below: &LowerTree,
    ) -> Result<(), Error> {
        for (name, sub) in &below.children {
            match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Err(Errno::NOENT) => {
                    self.remember_dir_time(marker, unsafe_path.as_bytes(), dir)?;
                    rustix::fs::mknodat(dir, name, FileType::CharacterDevice, Mode::empty(), 0)
                        .map_err(|e| self.fs_err(marker, "create whiteout device", e))?;
                    self.set_owner_at(marker, dir, name, true)?;
                    rustix::fs::utimensat(
                        dir,
                        name,
                        &timestamps(marker.mtime),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| self.fs_err(marker, "set time", e))?;
                }
                Ok(stat) if file_type(&stat) == FileType::Directory => {
                    if let Some(sub) = sub {
                        let child = self.open_dir_for_listing(marker, dir, name)?;
                        self.whiteout_rest(
                            marker,
                            &child,
                            &unsafe_path.join(name.as_bytes()),
                            sub,
                        )?;
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(self.fs_err(marker, "stat whiteout target", e)),
            }
        }
        Ok(())
    }

    fn remove_whiteout_devices(&self, entry: &Entry, dir: &OwnedFd) -> Result<(), Error> {
        for child in list_dir(dir).map_err(|e| self.fs_err(entry, "list directory", e))? {
            let stat = rustix::fs::statat(dir, &child, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| self.fs_err(entry, "stat", e))?;
            if is_whiteout_device(&stat) {
                rustix::fs::unlinkat(dir, &child, AtFlags::empty())
                    .map_err(|e| self.fs_err(entry, "remove whiteout device", e))?;
            } else if file_type(&stat) == FileType::Directory {
                let sub = self.open_dir_for_listing(entry, dir, &child)?;
                self.remove_whiteout_devices(entry, &sub)?;
            }
        }
        Ok(())
    }

    /// Flat whiteout: removes `path` unless this layer wrote it; if this layer wrote it as a
    /// directory, removes the lower children below it.
    fn remove_lower(
        &mut self,
        entry: &Entry,
        parent: &OwnedFd,
        name: &CString,
        path: &EntryPath,
    ) -> Result<(), Error> {
        if !self.current.upper.contains(path.as_bytes()) {
            return self.remove_all(entry, parent, name);
        }
        match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if file_type(&stat) == FileType::Directory => {
                let dir = self.open_dir_for_listing(entry, parent, name)?;
                self.prune_lower_children(entry, &dir, path)
            }
            Ok(_) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(self.fs_err(entry, "stat whiteout target", e)),
        }
    }

    /// Removes every child of `dir` that this layer did not write, recursing into those it did.
    fn prune_lower_children(
        &mut self,
        entry: &Entry,
        dir: &OwnedFd,
        path: &EntryPath,
    ) -> Result<(), Error> {
        let listable = rustix::fs::openat(
            dir,
            c".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.fs_err(entry, "open directory", e))?;
        for child in list_dir(&listable).map_err(|e| self.fs_err(entry, "list directory", e))? {
            let child_path = path.join(child.as_bytes());
            self.remove_lower(entry, &listable, &child, &child_path)?;
        }
        Ok(())
    }

    /// After a layer: directory modes (deepest first, so an unprivileged extractor keeps access
    /// until the end) and times.
    fn fix_directories(&mut self) -> Result<(), Error> {
        let mut fixes: Vec<(Vec<u8>, DirFix)> = self.current.dir_fixes.drain().collect();
        fixes.sort_by(|a, b| {
            let depth =
                |p: &[u8]| p.iter().filter(|&&c| c == b'/').count() + usize::from(!p.is_empty());
            depth(&b.0).cmp(&depth(&a.0)).then_with(|| a.0.cmp(&b.0))
        });
        for (unsafe_path, fix) in fixes {
            let err = |op, e: Errno| Error::Fs {
                layer: self.current.name.clone(),
                entry: String::from_utf8_lossy(&unsafe_path).into_owned(),
                op,
                source: e.into(),
            };
            if unsafe_path.is_empty() {
                let root = self
                    .root
                    .reopen(OFlags::RDONLY | OFlags::DIRECTORY)
                    .map_err(|e| err("open the root", e))?;
                if let Some(mode) = fix.mode {
                    rustix::fs::fchmod(&root, Mode::from_raw_mode(mode))
                        .map_err(|e| err("set mode", e))?;
                }
                rustix::fs::futimens(&root, &timestamps(fix.mtime))
                    .map_err(|e| err("set time", e))?;
                continue;
            }
            // A directory entry's own fix never follows a symlink now in its place; a parent's
            // time is put back where its children went, through symlinks inside the root.
            let flags = if fix.mode.is_some() {
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW
            } else {
                OFlags::PATH | OFlags::DIRECTORY
            };
            let dir = match self.root.resolve(&unsafe_path, flags) {
                Ok(fd) => fd,
                // Removed or replaced later in the layer.
                Err(Errno::NOENT) | Err(Errno::NOTDIR) | Err(Errno::LOOP) => continue,
                Err(e) => return Err(err("resolve directory", e)),
            };
            // An O_PATH fd cannot be chmodded or timed directly; its /proc link can, and it names
            // exactly the directory resolved above.
            let proc_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&dir));
            if let Some(mode) = fix.mode {
                rustix::fs::chmod(proc_path.as_str(), Mode::from_raw_mode(mode))
                    .map_err(|e| err("set mode", e))?;
            }
            rustix::fs::utimensat(
                rustix::fs::CWD,
                proc_path.as_str(),
                &timestamps(fix.mtime),
                AtFlags::empty(),
            )
            .map_err(|e| err("set time", e))?;
        }
        Ok(())
    }
}

/// The fix of a directory created implicitly with nothing below it: 0755, and the time of the
/// entry that needed it, so that both trees (and every run) agree.
fn implicit_dir_fix(entry: &Entry) -> DirFix {
    DirFix {
        mtime: entry.mtime,
        mode: Some(0o755),
    }
}

/// Whether the directory (an `O_PATH` fd in a layer directory) is marked opaque, in either
/// whiteout form.
fn is_opaque_dir(dir: &OwnedFd) -> bool {
    if rustix::fs::statat(dir, c".wh..wh..opq", AtFlags::SYMLINK_NOFOLLOW).is_ok() {
        return true;
    }
    let Ok(readable) = rustix::fs::openat(
        dir,
        c".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return false;
    };
    [OPAQUE_TRUSTED, OPAQUE_USER].iter().any(|name| {
        let mut value = [0u8; 2];
        matches!(rustix::fs::fgetxattr(&readable, *name, &mut value), Ok(1) if value[0] == b'y')
    })
}

/// The names in a directory opened for reading, without `.` and `..`.
fn list_dir(dir: &OwnedFd) -> Result<Vec<CString>, Errno> {
    let mut names = Vec::new();
    for item in Dir::read_from(dir)? {
        let item = item?;
        let name = item.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        names.push(name.to_owned());
    }
    Ok(names)
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

fn copy_data(
    data: &mut dyn Read,
    out: &mut std::fs::File,
    buffer: &mut [u8],
) -> Result<u64, CopyError> {
    let mut total = 0u64;
    loop {
        let n = match data.read(buffer) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        out.write_all(&buffer[..n]).map_err(CopyError::Write)?;
        total += n as u64;
    }
}

/// Copies the first `len` bytes of `source` (from its start, whatever its offset) to the end of
/// `out`: in the kernel with `copy_file_range` (no copy through user space, shared extents where
/// the filesystem has them), through `buffer` where the kernel cannot.
pub(crate) fn copy_file(
    source: &std::fs::File,
    out: &mut std::fs::File,
    len: u64,
    buffer: &mut [u8],
) -> io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut offset = 0u64;
    while offset < len {
        let want = usize::try_from(len - offset).unwrap_or(usize::MAX);
        match rustix::fs::copy_file_range(source, Some(&mut offset), &*out, None, want) {
            Ok(0) => break,
            Ok(_) => {}
            Err(Errno::INTR) => {}
            // Across filesystems, or where the kernel has no such copy: through user space.
            Err(Errno::XDEV | Errno::NOSYS | Errno::INVAL | Errno::OPNOTSUPP) => {
                while offset < len {
                    let want = buffer
                        .len()
                        .min(usize::try_from(len - offset).unwrap_or(usize::MAX));
                    let n = match source.read_at(&mut buffer[..want], offset) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    };
                    out.write_all(&buffer[..n])?;
                    offset += n as u64;
                }
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(offset)
}

/// Whether `dest` is an empty directory without a default ACL.
fn tree_without_default_acls(dest: &Path) -> bool {
    let empty = std::fs::read_dir(dest).is_ok_and(|mut entries| entries.next().is_none());
    empty
        && matches!(
            rustix::fs::getxattr(dest, DEFAULT_ACL, &mut [0u8; 0][..]),
            Err(Errno::NODATA | Errno::NOTSUP)
        )
}

/// The process umask, from `/proc/self/status` (reading it with `umask(2)` would change it for
/// a moment under the other threads).
fn process_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}

/// Why creating an entry did not succeed.
enum CreateError {
    /// Something is in the way.
    Exists,
    Io(io::Error, &'static str),
    Done(Error),
}

impl CreateError {
    fn from_errno(e: Errno, op: &'static str) -> Self {
        if e == Errno::EXIST {
            CreateError::Exists
        } else {
            CreateError::Io(e.into(), op)
        }
    }

    fn into_error(self, applier: &Applier, entry: &Entry) -> Error {
        match self {
            CreateError::Exists => applier.fs_err(entry, "create", Errno::EXIST),
            CreateError::Io(e, op) => applier.fs_err(entry, op, e),
            CreateError::Done(e) => e,
        }
    }
}

#[cfg(test)]
#[path = "apply_tests.rs"]
mod tests;
