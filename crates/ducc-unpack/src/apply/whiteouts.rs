//! Explicit whiteouts ([`WhiteoutFormat::OverlayDevices`]): where a layer directory hides a
//! whole directory of the stack below without an opaque xattr, what the stack below held there
//! is listed while still in view and whited out name by name when the layer ends.

use std::ffi::CString;
use std::os::fd::OwnedFd;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::Applier;
use super::fsutil::{file_type, list_dir, timestamps};
use super::layer_dir::LayerDirState;
use crate::entry::{Entry, EntryPath};
use crate::error::Error;
#[cfg(doc)]
use crate::options::WhiteoutFormat;
use crate::root::Root;

/// [`WhiteoutFormat::OverlayDevices`]: a path where this layer hides everything the stack below
/// has (an opaque marker, or a whiteout whose name the layer may make a directory again), with
/// what the stack below held there when it was still in view.
#[derive(Debug)]
pub(super) struct HiddenBelow {
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

impl Applier {
    /// [`WhiteoutFormat::OverlayDevices`]: takes down what the stack below has at `unsafe_path`
    /// (recursively), while it is still in view: the flat tree below loses it once the flat
    /// side applies this entry. The first record of a path wins: a directory made again over
    /// a whiteout of this layer finds the stack below already gone from the flat tree.
    pub(super) fn remember_hidden(
        &mut self,
        entry: &Entry,
        unsafe_path: &EntryPath,
    ) -> Result<(), Error> {
        if self
            .layer_dir()
            .is_none_or(|state| state.hidden.contains_key(unsafe_path))
        {
            return Ok(());
        }
        self.sync_below(None)?;
        let tree = self.snapshot_below(entry, unsafe_path)?;
        let Some(state) = self.layer_dir_mut() else {
            return Ok(());
        };
        state.hidden.insert(
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
        let roots: Vec<&Root> = match self.layer_dir() {
            Some(LayerDirState {
                below: Some(below), ..
            }) => vec![&below.root],
            Some(state) => state.lower_roots.iter().collect(),
            None => Vec::new(),
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
    pub(super) fn write_explicit_whiteouts(&mut self) -> Result<(), Error> {
        let mut hidden: Vec<(EntryPath, HiddenBelow)> = match self.layer_dir_mut() {
            Some(state) if !state.hidden.is_empty() => state.hidden.drain().collect(),
            _ => return Ok(()),
        };
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
}
