//! The root handle: a target directory opened once, through which every path of the target is
//! resolved (the tree a layer is applied to, the flat tree and lower layers below it, the
//! apptainer files of a flat tree, a tree written as tar), as libpathrs' `Root` does. Paths
//! from an archive are `unsafe_` until resolved here; the kernel keeps the resolution inside
//! the root (`openat2`), so no name, symlink or rename race leads out of it.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// How often a resolution is retried when the kernel says a rename raced it.
const RACE_RETRIES: u32 = 16;

/// A directory opened once (an `O_PATH` handle) and the path it was opened at, for messages.
#[derive(Debug)]
pub(crate) struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

impl Root {
    /// Opens the directory at `path`; a final symlink is not followed.
    ///
    /// # Errors
    /// The `open` error: `NOENT`, `NOTDIR` or `LOOP` (a symlink), ...
    pub(crate) fn open(path: &Path) -> Result<Self, Errno> {
        Self::open_with(path, OFlags::NOFOLLOW)
    }

    /// Opens the directory at `path`, following a final symlink (a directory the caller names,
    /// such as a lower layer).
    ///
    /// # Errors
    /// The `open` error.
    pub(crate) fn open_following(path: &Path) -> Result<Self, Errno> {
        Self::open_with(path, OFlags::empty())
    }

    fn open_with(path: &Path, extra: OFlags) -> Result<Self, Errno> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC | extra,
            Mode::empty(),
        )?;
        Ok(Root {
            fd,
            path: path.to_owned(),
        })
    }

    /// Where the root was opened.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `unsafe_path` below the root with chroot-like resolution: `..` and absolute
    /// symlinks stop at the root, magic links are refused. The empty path is the root itself.
    ///
    /// # Errors
    /// The `openat2` error.
    pub(crate) fn resolve(&self, unsafe_path: &[u8], flags: OFlags) -> Result<OwnedFd, Errno> {
        self.openat2(
            unsafe_path,
            flags,
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
    }

    /// Opens `unsafe_path` below the root following no symlink at all and never leaving it:
    /// for paths the caller names itself, which must be what they say.
    ///
    /// # Errors
    /// The `openat2` error (`ELOOP` for a symlink on the way, `EXDEV` for a way out).
    pub(crate) fn resolve_no_symlinks(
        &self,
        unsafe_path: &[u8],
        flags: OFlags,
    ) -> Result<OwnedFd, Errno> {
        self.openat2(
            unsafe_path,
            flags,
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
    }

    /// A second handle on the same directory.
    ///
    /// # Errors
    /// The `openat2` error.
    pub(crate) fn try_clone(&self) -> Result<Root, Errno> {
        Ok(Root {
            fd: self.reopen(OFlags::PATH | OFlags::DIRECTORY)?,
            path: self.path.clone(),
        })
    }

    /// The root itself, opened again with `flags` (to read or change its own metadata).
    ///
    /// # Errors
    /// The `openat2` error.
    pub(crate) fn reopen(&self, flags: OFlags) -> Result<OwnedFd, Errno> {
        self.resolve(b"", flags)
    }

    fn openat2(
        &self,
        unsafe_path: &[u8],
        flags: OFlags,
        resolve: ResolveFlags,
    ) -> Result<OwnedFd, Errno> {
        let path: &[u8] = if unsafe_path.is_empty() {
            b"."
        } else {
            unsafe_path
        };
        let mut attempts = 0;
        loop {
            match rustix::fs::openat2(
                &self.fd,
                path,
                flags | OFlags::CLOEXEC,
                Mode::empty(),
                resolve,
            ) {
                // openat2 asks for a retry when a rename raced the lookup.
                Err(Errno::AGAIN) if attempts < RACE_RETRIES => attempts += 1,
                other => return other,
            }
        }
    }
}

impl AsFd for Root {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_never_leaves_the_root() {
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("secret"), b"s").expect("secret");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("d")).expect("d");
        std::fs::write(dir.path().join("d/f"), b"f").expect("f");
        std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).expect("symlink");
        std::os::unix::fs::symlink("/", dir.path().join("slash")).expect("symlink");
        let root = Root::open(dir.path()).expect("open");
        let read = OFlags::RDONLY;
        // `..` and absolute symlinks stop at the root.
        assert!(root.resolve(b"../../d/f", read).is_ok());
        assert!(root.resolve(b"slash/d/f", read).is_ok());
        assert_eq!(
            root.resolve(b"out/secret", read).map(|_| ()),
            Err(Errno::NOENT)
        );
        // Without symlinks, a symlink on the way and `..` out are refused.
        assert!(root.resolve_no_symlinks(b"d/f", read).is_ok());
        assert_eq!(
            root.resolve_no_symlinks(b"slash/d", read).map(|_| ()),
            Err(Errno::LOOP)
        );
        assert_eq!(
            root.resolve_no_symlinks(b"../x", read).map(|_| ()),
            Err(Errno::XDEV)
        );
        // A symlinked root is refused unless asked for.
        assert!(Root::open(&dir.path().join("out")).is_err());
        assert!(Root::open_following(&dir.path().join("out")).is_ok());
        assert_eq!(root.path(), dir.path());
    }
}
