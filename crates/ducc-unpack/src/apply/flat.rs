//! The flat tree's state and its whiteouts: layers applied in order onto one tree, where a
//! whiteout removes what the layers below left and an opaque marker empties a directory of
//! everything this layer did not write.

use std::collections::HashSet;
use std::collections::hash_map::RandomState;
use std::ffi::CString;
use std::fs::File;
use std::hash::BuildHasher;
use std::os::fd::OwnedFd;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::fsutil::{cstring, file_type, list_dir, split};
use super::{Applier, LeftOut, TargetState};
use crate::entry::{Entry, EntryPath};
use crate::error::Error;

/// What a flat tree keeps besides the common state: set when the extractor starts, except for
/// the paths of the current layer ([`FlatState::upper`], emptied when a layer begins and ends)
/// and the layer directory's copy of the file being applied ([`FlatState::pending_copy`], only
/// while one entry is applied).
#[derive(Debug)]
pub(super) struct FlatState {
    /// Tag each regular file with the layer entry it came from ([`crate::SOURCE_XATTR`]).
    pub(super) record_sources: bool,
    /// Device files and FIFOs left out so far, when the options leave them out.
    pub(super) left_out: Option<LeftOut>,
    /// The paths the current layer wrote, and their ancestors: a whiteout or opaque marker of
    /// the same layer removes only what the layers below left.
    upper: PathSet,
    /// Written together with a layer directory (see [`super::both`]): the data of the next
    /// regular file comes from this file and is this many bytes (the layer directory's copy)
    /// rather than from the stream.
    pub(super) pending_copy: Option<(File, u64)>,
}

impl FlatState {
    pub(super) fn new(record_sources: bool, left_out: Option<LeftOut>) -> Self {
        FlatState {
            record_sources,
            left_out,
            upper: PathSet::new(),
            pending_copy: None,
        }
    }

    /// Starts or ends a layer: forgets its paths and any copy not taken.
    pub(super) fn reset_layer(&mut self) {
        self.upper.clear();
        self.pending_copy = None;
    }

    /// Records that the current layer wrote `path` (and so its ancestors).
    pub(super) fn wrote(&mut self, path: &EntryPath) {
        self.upper.insert_with_ancestors(path.as_bytes());
    }
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

impl Applier {
    /// Whether this flat tree's current layer wrote `path`.
    fn flat_wrote(&self, path: &EntryPath) -> bool {
        matches!(&self.kind, TargetState::Flat(flat) if flat.upper.contains(path.as_bytes()))
    }

    /// A flat whiteout: removes what the layers below have at the path (nothing when its
    /// parent is not a directory).
    pub(super) fn flat_whiteout(&mut self, entry: &Entry) -> Result<(), Error> {
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

    /// A flat opaque marker: the directory keeps only what this layer wrote in it.
    pub(super) fn flat_opaque(&mut self, entry: &Entry) -> Result<(), Error> {
        let dir = self.ensure_dir(entry, entry.path.as_bytes(), 0)?;
        self.remember_dir_time(entry, entry.path.as_bytes(), &dir)?;
        self.prune_lower_children(entry, &dir, &entry.path)?;
        if let TargetState::Flat(flat) = &mut self.kind {
            flat.wrote(&entry.path);
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
        if !self.flat_wrote(path) {
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
}
