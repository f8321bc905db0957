//! Creating an entry by type at its place (replacing what is there unless both are
//! directories), with its owner, mode, xattrs and time; removing what is in the way.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat, XattrFlags};
use rustix::io::Errno;

use super::flat::FlatState;
use super::fsutil::{
    CopyError, DEFAULT_ACL, copy_data, copy_file, cstring, file_type, is_whiteout_device, list_dir,
    split, timestamps,
};
use super::layer_dir::LayerDirState;
use super::{Applier, DirFix, ParentDir, TargetState};
use crate::entry::{Entry, EntryKind, EntryPath};
use crate::error::Error;
use crate::report::WarningKind;

impl Applier {
    /// Creates the entry at `parent/name`, replacing what is there unless both are directories.
    pub(super) fn create(
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
                            .layer_dir()
                            .is_some_and(LayerDirState::whiteouts_are_devices)
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
            EntryKind::File => self.create_file(entry, parent, name, data, None),
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

    /// Creates a regular file with the data of `data`, or of `copy` (a file of the stack below
    /// and its length) when given, or of the layer directory's copy when this is the flat side
    /// of a one-pass extraction ([`super::flat::FlatState::pending_copy`]).
    pub(super) fn create_file(
        &mut self,
        entry: &Entry,
        parent: &ParentDir,
        name: &CString,
        data: &mut dyn Read,
        copy: Option<(File, u64)>,
    ) -> Result<(), CreateError> {
        // Read back by the flat side when this layer directory is written together with it.
        let keep_last_file = self.layer_dir().is_some_and(|state| state.below.is_some());
        let access = if keep_last_file {
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
        let copy = copy.or_else(|| match &mut self.kind {
            TargetState::Flat(flat) => flat.pending_copy.take(),
            _ => None,
        });
        let copied = if let Some((source, len)) = copy {
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
        if let TargetState::Flat(FlatState {
            record_sources: true,
            ..
        }) = &self.kind
        {
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
        if let Some(LayerDirState {
            below: Some(below), ..
        }) = self.layer_dir_mut()
        {
            below.last_file = Some((file, written));
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
            let dir = self.open_dir(entry, parent, name)?;
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
        let target_err = |reason| self.hardlink_err(entry, unsafe_target, reason);
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
            None => match &self.kind {
                TargetState::LayerDir(state) if state.has_stack_below() => {
                    self.copy_from_lower(entry, unsafe_target, parent, name)
                }
                TargetState::LayerDir(_) => Err(target_err(
                    "is not in this layer (give the lower layers to copy it from)",
                )),
                TargetState::Flat(_) | TargetState::Verbatim => Err(target_err("does not exist")),
            },
        }
    }

    /// A hardlink whose target cannot be linked, for `reason`.
    pub(super) fn hardlink_err(
        &self,
        entry: &Entry,
        unsafe_target: &EntryPath,
        reason: &'static str,
    ) -> CreateError {
        CreateError::Done(Error::HardlinkTarget {
            layer: self.current.name.clone(),
            entry: entry.display_name(),
            target: unsafe_target.to_string(),
            reason,
        })
    }

    /// Sets the owner as root; records it when unprivileged. `fresh` says the inode was just
    /// created by us (and so already has our ids).
    pub(super) fn set_owner_at(
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

    pub(super) fn set_owner_fd(
        &mut self,
        entry: &Entry,
        fd: impl AsFd,
        fresh: bool,
    ) -> Result<(), Error> {
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

    pub(super) fn set_xattrs_fd(&mut self, entry: &Entry, fd: impl AsFd) -> Result<(), Error> {
        self.set_xattrs_with(entry, |name, value| {
            rustix::fs::fsetxattr(&fd, name, value, XattrFlags::empty())
        })
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
        self.set_xattrs_with(entry, |name, value| {
            rustix::fs::lsetxattr(&path, name, value, XattrFlags::empty())
        })
    }

    /// Sets each of the entry's xattrs with `set` (name, value), except the source tag and
    /// those [`Applier::xattr_allowed`] refuses; a failure is an error or a warning as
    /// [`Applier::xattr_result`] decides.
    fn set_xattrs_with(
        &mut self,
        entry: &Entry,
        mut set: impl FnMut(&CStr, &[u8]) -> Result<(), Errno>,
    ) -> Result<(), Error> {
        for xattr in &entry.xattrs {
            if xattr.name == crate::SOURCE_XATTR.as_bytes() || self.skip_xattr(entry, &xattr.name) {
                continue;
            }
            let result = cstring(&xattr.name)
                .map_err(|_| Errno::INVAL)
                .and_then(|name| set(&name, &xattr.value));
            self.xattr_result(entry, &xattr.name, result)?;
        }
        Ok(())
    }

    fn skip_xattr(&mut self, entry: &Entry, name: &[u8]) -> bool {
        match self.xattr_allowed(name) {
            Ok(()) => false,
            Err(reason) => {
                if name != b"security.selinux" {
                    self.warn_xattr_skipped(&entry.path, name, reason);
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
        self.warn_xattr_skipped(&entry.path, name, reason);
        Ok(())
    }

    /// Warns that the xattr `name` of `path` was not set, for `reason`.
    pub(super) fn warn_xattr_skipped(&mut self, path: &EntryPath, name: &[u8], reason: &str) {
        self.report.warn(
            &self.current.name,
            path,
            WarningKind::XattrSkipped {
                name: String::from_utf8_lossy(name).into_owned(),
                reason: reason.to_owned(),
            },
        );
    }

    /// Removes `parent/name` whatever it is, recursively for directories, never following links.
    pub(super) fn remove_all(
        &self,
        entry: &Entry,
        parent: &OwnedFd,
        name: &CString,
    ) -> Result<(), Error> {
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

    /// Opens the directory `parent/name` for reading, not following a symlink there.
    pub(super) fn open_dir(
        &self,
        entry: &Entry,
        parent: &OwnedFd,
        name: &CString,
    ) -> Result<OwnedFd, Error> {
        rustix::fs::openat(
            parent,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.fs_err(entry, "open directory", e))
    }

    pub(super) fn open_dir_for_listing(
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
}

/// Why creating an entry did not succeed.
pub(super) enum CreateError {
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
