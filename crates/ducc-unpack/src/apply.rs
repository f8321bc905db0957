//! The applier: takes every entry through the same ordered steps inside a root directory fd
//! (whiteouts, resolve the parent inside the root, clear the way, create by type, metadata,
//! record as written by this layer), then fixes directory modes and times after the layer.
//!
//! Every path from an archive is untrusted (`unsafe_` names): it is only ever resolved with
//! `openat2(RESOLVE_IN_ROOT)` against the root fd, and only up to its parent; the final component
//! is always handled with `*at` calls that do not follow it.
//!
//! What an applier keeps is split by how long it lives and which target needs it: the common
//! state of every target ([`Applier`]), the common state of the layer being applied
//! ([`LayerState`]), and one state per target kind ([`TargetState`]): a layer directory's
//! ([`layer_dir::LayerDirState`]), a flat tree's ([`flat::FlatState`]), none for a verbatim
//! extraction. The modules follow the same split: `create` (an entry by type, owners, xattrs),
//! `layer_dir` (the stack below, whiteouts and opaque markers of a layer directory),
//! `whiteouts` (explicit whiteout devices), `flat` (the flat tree's whiteouts), `both` (a
//! layer directory and the flat tree in one pass), `fsutil` (stateless file-system helpers).

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::entry::{Entry, EntryKind, EntryPath, Timestamp};
use crate::error::Error;
use crate::options::{Privileges, WhiteoutFormat};
use crate::read::read_entries_limited;
use crate::report::{Report, SpecialKind};
use crate::root::Root;

mod both;
mod create;
mod flat;
mod fsutil;
mod layer_dir;
mod whiteouts;

pub(crate) use both::apply_tar_both;

use flat::FlatState;
use fsutil::{
    COPY_BUFFER, cstring, file_type, is_whiteout_device, process_umask, resolve_lexically, split,
    timestamps, tree_without_default_acls,
};
use layer_dir::LayerDirState;

/// What kind of tree is being built, with what the extractor's options say for it.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// One layer into its own directory, which must be empty.
    LayerDir {
        whiteouts: WhiteoutFormat,
        lower_layers: Vec<PathBuf>,
        leave_out_special: bool,
    },
    /// Layers in order onto one tree.
    Flat {
        record_sources: bool,
        leave_out_special: bool,
    },
    /// An already canonical tar, extracted as it is.
    Verbatim,
}

/// How many symlinks deep a missing parent directory is followed to create it.
const MAX_PARENT_SYMLINKS: u32 = 40;

/// The device files and FIFOs left out so far and what they were, so that a hardlink to one is
/// left out too (kept only when the options leave special files out).
type LeftOut = HashMap<EntryPath, SpecialKind>;

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

/// What the application of one layer keeps from its first entry to its end, whatever the
/// target: reset when the next layer begins (the target's own per-layer state is in
/// [`TargetState`]).
#[derive(Debug)]
struct LayerState {
    /// The layer's name, for messages.
    name: String,
    /// Directories whose time (and mode) are set again when the layer ends.
    dir_fixes: HashMap<Vec<u8>, DirFix>,
    /// The last parent directory resolved, for consecutive entries of one directory (also
    /// dropped after each whiteout, which may remove it).
    parent_cache: Option<(Vec<u8>, Arc<ParentDir>)>,
    /// Whether the layer was warned once that the tree takes no xattrs.
    xattr_unsupported_warned: bool,
}

impl LayerState {
    fn new() -> Self {
        LayerState {
            name: String::new(),
            dir_fixes: HashMap::new(),
            parent_cache: None,
            xattr_unsupported_warned: false,
        }
    }

    /// Starts layer `name`, keeping the allocations of the one before.
    fn begin(&mut self, name: &str) {
        name.clone_into(&mut self.name);
        self.dir_fixes.clear();
        self.parent_cache = None;
        self.xattr_unsupported_warned = false;
    }
}

/// What only one kind of target keeps, for as long as the applier lives (each kind's own
/// per-layer parts are reset when a layer begins).
#[derive(Debug)]
enum TargetState {
    /// One layer into its own directory: whiteouts in a chosen form, a stack below.
    LayerDir(LayerDirState),
    /// Layers in order onto one tree: whiteouts remove, the paths of the layer are tracked.
    Flat(FlatState),
    /// A canonical tar as it is: `.wh.` names stay files, nothing is looked up below.
    Verbatim,
}

impl TargetState {
    /// The special files left out so far, when this target leaves them out.
    fn left_out(&self) -> Option<&LeftOut> {
        match self {
            TargetState::LayerDir(state) => state.left_out.as_ref(),
            TargetState::Flat(state) => state.left_out.as_ref(),
            TargetState::Verbatim => None,
        }
    }

    /// [`TargetState::left_out`], to change.
    fn left_out_mut(&mut self) -> Option<&mut LeftOut> {
        match self {
            TargetState::LayerDir(state) => state.left_out.as_mut(),
            TargetState::Flat(state) => state.left_out.as_mut(),
            TargetState::Verbatim => None,
        }
    }
}

/// The extraction state for one target directory, common to every kind of target: set when the
/// target is opened, except for the report (which grows), the copy buffer, `mode_at_create`
/// (cleared once a default ACL is set) and the per-layer state in `current`.
#[derive(Debug)]
pub(crate) struct Applier {
    /// The target directory: every path of an entry is resolved through it.
    root: Root,
    /// Whether owners, devices and `trusted.*` xattrs are applied (root behaviour).
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
    /// Limits on hostile layers.
    limits: crate::Limits,
    /// What the layer being applied keeps until it ends.
    current: LayerState,
    /// What only this kind of target keeps.
    kind: TargetState,
}

impl Applier {
    /// Opens the target directory.
    ///
    /// # Errors
    /// [`Error::Destination`] when `dest` is missing, not a directory, or (a layer directory)
    /// not empty; [`Error::DestinationIo`] when it or a lower layer directory cannot be opened.
    pub(crate) fn open(
        dest: &Path,
        target: Target,
        privileges: Privileges,
        limits: crate::Limits,
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
        if matches!(target, Target::LayerDir { .. }) {
            let mut entries = std::fs::read_dir(dest).map_err(|source| Error::DestinationIo {
                path: dest.to_owned(),
                op: "list",
                source,
            })?;
            if entries.next().is_some() {
                return Err(dest_err("is not empty"));
            }
        }
        let left_out = |leave_out_special: bool| leave_out_special.then(LeftOut::new);
        let kind = match target {
            Target::LayerDir {
                whiteouts,
                lower_layers,
                leave_out_special,
            } => {
                let mut lower_roots = Vec::new();
                for lower in lower_layers {
                    let lower_root =
                        Root::open_following(&lower).map_err(|e| Error::DestinationIo {
                            path: lower.clone(),
                            op: "open lower layer directory",
                            source: e.into(),
                        })?;
                    lower_roots.push(lower_root);
                }
                TargetState::LayerDir(LayerDirState::new(
                    whiteouts,
                    lower_roots,
                    left_out(leave_out_special),
                ))
            }
            Target::Flat {
                record_sources,
                leave_out_special,
            } => TargetState::Flat(FlatState::new(record_sources, left_out(leave_out_special))),
            Target::Verbatim => TargetState::Verbatim,
        };
        Ok(Applier {
            root,
            privileged: privileges.is_root(),
            euid: rustix::process::geteuid().as_raw(),
            egid: rustix::process::getegid().as_raw(),
            umask: process_umask(),
            mode_at_create: tree_without_default_acls(dest),
            report: Report::default(),
            buffer: vec![0; COPY_BUFFER],
            current: LayerState::new(),
            limits,
            kind,
        })
    }

    /// The limits the layers are read under.
    pub(crate) fn limits(&self) -> crate::Limits {
        self.limits
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
        let classify = !matches!(self.kind, TargetState::Verbatim);
        let limits = self.limits;
        let count = read_entries_limited(tar, layer, classify, &limits, |entry, data| {
            self.apply_entry(entry, data)
        })?;
        self.end_layer(count)
    }

    /// Starts layer `name`: every per-layer state is reset, keeping its allocations.
    fn begin_layer(&mut self, name: &str) {
        self.current.begin(name);
        match &mut self.kind {
            TargetState::LayerDir(state) => state.begin_layer(),
            TargetState::Flat(state) => state.reset_layer(),
            TargetState::Verbatim => {}
        }
    }

    /// Ends the layer after its `count` entries: a layer directory's explicit whiteouts, then
    /// every directory's time and mode.
    fn end_layer(&mut self, count: u64) -> Result<(), Error> {
        self.report.entries += count;
        self.current.parent_cache = None;
        match &mut self.kind {
            TargetState::LayerDir(state) => {
                if let Some(below) = &mut state.below {
                    below.last_file = None;
                }
                self.write_explicit_whiteouts()?;
            }
            TargetState::Flat(state) => state.reset_layer(),
            TargetState::Verbatim => {}
        }
        self.fix_directories()
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
                    .layer_dir()
                    .is_some_and(LayerDirState::whiteouts_are_devices)
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
                    if let Some(left_out) = self.kind.left_out_mut() {
                        left_out.insert(entry.path.clone(), kind);
                    }
                    return Ok(());
                }
                if let Some(left_out) = self.kind.left_out_mut() {
                    left_out.remove(&entry.path);
                }
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
                if let TargetState::Flat(flat) = &mut self.kind {
                    flat.wrote(&entry.path);
                }
                Ok(())
            }
        }
    }

    /// What special file `entry` is, when such files are left out: a device, a FIFO, or a
    /// hardlink to one left out before.
    fn special_to_leave_out(&self, entry: &Entry) -> Option<SpecialKind> {
        let left_out = self.kind.left_out()?;
        match &entry.kind {
            EntryKind::Fifo => Some(SpecialKind::Fifo),
            EntryKind::CharDevice { .. } => Some(SpecialKind::Char),
            EntryKind::BlockDevice { .. } => Some(SpecialKind::Block),
            EntryKind::Hardlink(target) => left_out.get(target).copied(),
            _ => None,
        }
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
                mtime: Timestamp::mtime_of(stat),
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
                                .layer_dir()
                                .is_some_and(LayerDirState::whiteouts_are_devices)
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
                mtime: Timestamp::mtime_of(&stat),
                mode: None,
            });
        fix.mode.get_or_insert(original);
        Ok(())
    }

    /// A whiteout: flat trees remove the lower path; layer directories record it.
    fn apply_whiteout(&mut self, entry: &Entry) -> Result<(), Error> {
        match &self.kind {
            TargetState::Flat(_) => self.flat_whiteout(entry),
            TargetState::LayerDir(state) => {
                let whiteouts = state.whiteouts;
                self.layer_dir_whiteout(entry, whiteouts)
            }
            TargetState::Verbatim => Ok(()),
        }
    }

    /// An opaque marker.
    fn apply_opaque(&mut self, entry: &Entry) -> Result<(), Error> {
        match &self.kind {
            TargetState::Flat(_) => self.flat_opaque(entry),
            TargetState::LayerDir(state) => {
                let whiteouts = state.whiteouts;
                self.layer_dir_opaque(entry, whiteouts)
            }
            TargetState::Verbatim => Ok(()),
        }
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

#[cfg(test)]
#[path = "apply_tests.rs"]
mod tests;
