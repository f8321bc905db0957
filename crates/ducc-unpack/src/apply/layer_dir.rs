//! The layer directory's state and what only a layer directory does: look at the stack below
//! (the lower layer directories, or the flat tree written alongside), take an implicit parent's
//! metadata and a hardlink's lower target from it, and write whiteouts and opaque markers in
//! the form the options name.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat, XattrFlags};
use rustix::io::Errno;

use super::both::FlatLink;
use super::create::CreateError;
use super::fsutil::{cstring, file_type, is_whiteout_device, list_dir, split, timestamps};
use super::whiteouts::HiddenBelow;
use super::{Applier, DirFix, LeftOut, ParentDir, TargetState, implicit_dir_fix};
use crate::entry::{Entry, EntryKind, EntryPath, Timestamp};
use crate::error::Error;
use crate::options::WhiteoutFormat;
use crate::root::Root;

const OPAQUE_TRUSTED: &str = "trusted.overlay.opaque";
const OPAQUE_USER: &str = "user.overlay.opaque";

/// What a layer directory keeps besides the common state. The whiteout form, the stack below
/// and the special-file rule are set when the extractor opens the directory; [`Self::below`]
/// only while the layer is written together with the flat tree; the opaque directories and
/// hidden paths are the current layer's (emptied when a layer begins).
#[derive(Debug)]
pub(super) struct LayerDirState {
    /// The form whiteouts and opaque markers are written in.
    pub(super) whiteouts: WhiteoutFormat,
    /// The lower layer directories, top first (the stack below, unless [`Self::below`] is set).
    pub(super) lower_roots: Vec<Root>,
    /// Device files and FIFOs left out so far, when the options leave them out.
    pub(super) left_out: Option<LeftOut>,
    /// The flat tree written together with this layer directory, which is then the stack below
    /// (see [`super::both`]).
    pub(super) below: Option<FlatBelow>,
    /// Directories the current layer made opaque.
    opaque_dirs: Vec<EntryPath>,
    /// [`WhiteoutFormat::OverlayDevices`]: what the current layer hides of the stack below,
    /// whited out name by name when the layer ends.
    pub(super) hidden: HashMap<EntryPath, HiddenBelow>,
}

/// The flat tree below a layer directory written together with it (see [`super::both`]).
#[derive(Debug)]
pub(super) struct FlatBelow {
    /// The flat tree's root: the stack below this layer (plus the entries of this layer that
    /// came before the current one).
    pub(super) root: Root,
    /// The flat tree's worker, which runs behind this side: waited for before the flat tree
    /// is looked at, and asked for its pending directory fixes (a directory the flat side
    /// already touched in this layer has its pre-layer time and mode there).
    pub(super) link: FlatLink,
    /// The last regular file written, which the flat side copies instead of reading the
    /// stream a second time (taken when the entry is sent to the worker).
    pub(super) last_file: Option<(File, u64)>,
}

impl LayerDirState {
    pub(super) fn new(
        whiteouts: WhiteoutFormat,
        lower_roots: Vec<Root>,
        left_out: Option<LeftOut>,
    ) -> Self {
        LayerDirState {
            whiteouts,
            lower_roots,
            left_out,
            below: None,
            opaque_dirs: Vec::new(),
            hidden: HashMap::new(),
        }
    }

    /// Starts a layer: forgets the opaque directories and hidden paths of the one before.
    pub(super) fn begin_layer(&mut self) {
        self.opaque_dirs.clear();
        self.hidden.clear();
        if let Some(below) = &mut self.below {
            below.last_file = None;
        }
    }

    /// Whether the layer's whiteouts are character devices (the overlay forms).
    pub(super) fn whiteouts_are_devices(&self) -> bool {
        self.whiteouts.uses_devices()
    }

    /// Whether a directory strictly above `path` was made opaque by this layer.
    fn under_opaque_dir(&self, path: &EntryPath) -> bool {
        self.opaque_dirs
            .iter()
            .any(|dir| path.starts_with(dir) && path != dir)
    }

    /// Whether anything is known of the stack below: lower layer directories, or the flat tree.
    pub(super) fn has_stack_below(&self) -> bool {
        !self.lower_roots.is_empty() || self.below.is_some()
    }
}

impl Applier {
    /// The layer directory's state, when this applier writes one.
    pub(super) fn layer_dir(&self) -> Option<&LayerDirState> {
        match &self.kind {
            TargetState::LayerDir(state) => Some(state),
            _ => None,
        }
    }

    /// [`Applier::layer_dir`], to change.
    pub(super) fn layer_dir_mut(&mut self) -> Option<&mut LayerDirState> {
        match &mut self.kind {
            TargetState::LayerDir(state) => Some(state),
            _ => None,
        }
    }

    /// Records that the current layer made `unsafe_dir` opaque.
    fn note_opaque(&mut self, unsafe_dir: &EntryPath) {
        if let Some(state) = self.layer_dir_mut()
            && !state.opaque_dirs.contains(unsafe_dir)
        {
            state.opaque_dirs.push(unsafe_dir.clone());
        }
    }

    /// A layer directory's whiteout, in the form the options name: dropped when there is no
    /// directory to hide anything in; else a raw `.wh.` file, or a whiteout device (an opaque
    /// marker where this layer has its own directory).
    pub(super) fn layer_dir_whiteout(
        &mut self,
        entry: &Entry,
        whiteouts: WhiteoutFormat,
    ) -> Result<(), Error> {
        if !self.whiteout_parent_below(entry)? {
            tracing::debug!(layer = %self.current.name, entry = %entry.display_name(), "whiteout with no directory to hide anything in: dropped");
            self.report.dropped_whiteout(entry.path.clone());
            return Ok(());
        }
        if whiteouts == WhiteoutFormat::Oci {
            let mut marker = b".wh.".to_vec();
            marker.extend_from_slice(entry.path.file_name());
            return self.create_marker_file(entry, &entry.path.parent().join(&marker));
        }
        if self
            .layer_dir()
            .is_some_and(|state| state.under_opaque_dir(&entry.path))
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
                rustix::fs::mknodat(&*parent, &name, FileType::CharacterDevice, Mode::empty(), 0)
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

    /// A layer directory's opaque marker: a raw `.wh..wh..opq` file, or the directory marked
    /// opaque in the overlay forms.
    pub(super) fn layer_dir_opaque(
        &mut self,
        entry: &Entry,
        whiteouts: WhiteoutFormat,
    ) -> Result<(), Error> {
        if whiteouts == WhiteoutFormat::Oci {
            return self.create_marker_file(entry, &entry.path.join(b".wh..wh..opq"));
        }
        self.ensure_dir(entry, entry.path.as_bytes(), 0)?;
        self.mark_opaque(entry, &entry.path)
    }

    /// Whether a layer directory's whiteout has a directory to hide something in, in the merged
    /// view of the stack below and this layer so far. Not when this layer made a path above it
    /// a non-directory (umoci writes `dir2file` as a file, then `dir2file/.wh.sub`): writing the
    /// whiteout would turn the file back into a directory. Not when the stack below lacks the
    /// directory: a whiteout would create it. The flat tree ignores such whiteouts too.
    fn whiteout_parent_below(&self, entry: &Entry) -> Result<bool, Error> {
        let unsafe_parent = entry.path.parent_bytes();
        let dir_flags = OFlags::PATH | OFlags::DIRECTORY;
        let Some(state) = self.layer_dir() else {
            return Ok(true);
        };
        if let Some(below) = &state.below {
            self.sync_below(None)?;
            return Ok(below.root.resolve(unsafe_parent, dir_flags).is_ok());
        }
        match self.root.resolve(unsafe_parent, dir_flags) {
            Ok(_) => return Ok(true),
            Err(Errno::NOTDIR) | Err(Errno::LOOP) => return Ok(false),
            Err(Errno::NOENT) => {}
            Err(e) => return Err(self.fs_err(entry, "resolve whiteout parent", e)),
        }
        if state.lower_roots.is_empty() {
            // Nothing is known about the stack below: keep the whiteout.
            return Ok(true);
        }
        Ok(self
            .lookup_below(unsafe_parent)
            .is_some_and(|(_, stat, _)| file_type(&stat) == FileType::Directory))
    }

    /// In overlay form a 0/0 character device or an `overlay.*` xattr in the layer's own content
    /// would be read by overlayfs as a whiteout or an opaque marker.
    pub(super) fn refuse_overlay_lookalikes(&self, entry: &Entry) -> Result<(), Error> {
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

    /// Before the stack below is looked at: when it is the flat tree written by a worker that
    /// runs behind (see [`super::both`]), waits until the worker has applied every earlier entry, and
    /// returns the flat side's pending fix of `fix_of`. Without a worker, nothing to wait for.
    pub(super) fn sync_below(&self, fix_of: Option<&[u8]>) -> Result<Option<DirFix>, Error> {
        match self.layer_dir().and_then(|state| state.below.as_ref()) {
            Some(below) => below.link.sync(fix_of),
            None => Ok(None),
        }
    }

    /// The target of the symlink that the stack below has at `unsafe_path`, if it has one there.
    pub(super) fn lower_symlink(&self, unsafe_path: &[u8]) -> Option<Vec<u8>> {
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
    pub(super) fn lookup_below(&self, unsafe_path: &[u8]) -> Option<(OwnedFd, Stat, CString)> {
        let state = self.layer_dir()?;
        let path = EntryPath::normalise(unsafe_path).ok()?;
        if path.is_root() {
            return None;
        }
        let (unsafe_parent, name) = split(&path);
        let name = cstring(name).ok()?;
        if let Some(below) = &state.below {
            let dir = below
                .root
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
        'layers: for lower in &state.lower_roots {
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
    pub(super) fn inherit_from_lower(
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
            let dir = self.open_dir(entry, parent, name)?;
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
                mtime: flat_fix.map_or(Timestamp::mtime_of(&stat), |f| f.mtime),
                mode: Some(
                    flat_fix
                        .and_then(|f| f.mode)
                        .unwrap_or(stat.st_mode & 0o7777),
                ),
            },
        );
        Ok(())
    }

    /// Materialises a hardlink to a file of a lower layer as a copy of that file.
    pub(super) fn copy_from_lower(
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
            return Err(self.hardlink_err(
                entry,
                unsafe_target,
                "is neither in this layer nor in the lower layers",
            ));
        };
        let stat =
            rustix::fs::fstat(&source).map_err(|e| CreateError::Io(e.into(), "stat lower file"))?;
        if file_type(&stat) != FileType::RegularFile {
            return Err(self.hardlink_err(
                entry,
                unsafe_target,
                "is not a regular file in the lower layers",
            ));
        }
        let copy = Entry {
            kind: EntryKind::File,
            mode: stat.st_mode & 0o7777,
            uid: u64::from(stat.st_uid),
            gid: u64::from(stat.st_gid),
            mtime: Timestamp::mtime_of(&stat),
            size: u64::try_from(stat.st_size).unwrap_or(0),
            xattrs: crate::tarout::fd_xattrs(&source),
            ..entry.clone()
        };
        let source = (std::fs::File::from(source), copy.size);
        self.create_file(&copy, parent, name, &mut io::empty(), Some(source))
    }

    /// Overlay form: sets the opaque xattr on a directory of this layer and drops the whiteout
    /// devices this layer put below it. Without xattrs ([`WhiteoutFormat::OverlayDevices`]):
    /// remembers what the stack below has there, whited out when the layer ends.
    pub(super) fn mark_opaque(
        &mut self,
        entry: &Entry,
        unsafe_dir: &EntryPath,
    ) -> Result<(), Error> {
        if self
            .layer_dir()
            .is_some_and(|state| state.whiteouts == WhiteoutFormat::OverlayDevices)
        {
            self.remember_hidden(entry, unsafe_dir)?;
            self.note_opaque(unsafe_dir);
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
            self.warn_xattr_skipped(
                unsafe_dir,
                OPAQUE_TRUSTED.as_bytes(),
                "unprivileged: wrote user.overlay.opaque instead (mount with userxattr)",
            );
            OPAQUE_USER
        };
        rustix::fs::fsetxattr(&dir, name, b"y", XattrFlags::empty())
            .map_err(|e| self.fs_err(entry, "set opaque xattr", e))?;
        self.remove_whiteout_devices(entry, &dir)?;
        self.note_opaque(unsafe_dir);
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
