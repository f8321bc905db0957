//! What an extraction did: counts, warnings, owners it could not set, special files it left
//! out.

use crate::entry::EntryPath;

/// Something the extractor did not do as the archive asked, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WarningKind {
    /// A character or block device was not created (unprivileged).
    DeviceSkipped,
    /// An extended attribute was not set: denied by policy (`security.selinux`), by privileges
    /// (`trusted.*` unprivileged, EPERM), or unsupported by the target filesystem.
    XattrSkipped {
        /// The attribute's name.
        name: String,
        /// Why.
        reason: String,
    },
}

/// One warning: which layer, which entry, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The layer's name.
    pub layer: String,
    /// The entry's path.
    pub path: EntryPath,
    /// What happened.
    pub kind: WarningKind,
}

/// Owner an entry should have had but did not get (unprivileged extraction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRecord {
    /// The entry's path.
    pub path: EntryPath,
    /// uid from the archive.
    pub uid: u64,
    /// gid from the archive.
    pub gid: u64,
}

/// What kind of special file an entry left out was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SpecialKind {
    /// A named pipe.
    Fifo,
    /// A character device.
    Char,
    /// A block device.
    Block,
}

impl SpecialKind {
    /// `fifo`, `char` or `block`.
    pub fn as_str(self) -> &'static str {
        match self {
            SpecialKind::Fifo => "fifo",
            SpecialKind::Char => "char",
            SpecialKind::Block => "block",
        }
    }
}

/// A device file or FIFO left out of the tree (see
/// [`ExtractOptions::leave_out_special_files`](crate::ExtractOptions::leave_out_special_files)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftOut {
    /// The layer's name.
    pub layer: String,
    /// The entry's path (a hardlink to a special file left out is listed under its own path).
    pub path: EntryPath,
    /// What it was.
    pub kind: SpecialKind,
}

/// At most this many warnings and owner records are kept; the rest are only counted.
pub(crate) const REPORT_LIST_LIMIT: usize = 10_000;

/// What an extraction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Entries read from the archive(s), including whiteouts.
    pub entries: u64,
    /// Bytes of regular-file data written.
    pub file_bytes: u64,
    /// Warnings, at most 10,000.
    pub warnings: Vec<Warning>,
    /// Warnings not kept in `warnings` because of the limit.
    pub warnings_dropped: u64,
    /// Owners not applied (unprivileged) other than the extracting user's own, at most
    /// 10,000.
    pub owners_not_applied: Vec<OwnerRecord>,
    /// Owner records not kept because of the limit.
    pub owners_dropped: u64,
    /// [`WhiteoutFormat::OverlayDevices`](crate::WhiteoutFormat::OverlayDevices): the directories of the layer that hide everything
    /// below them, where whiteout devices were written for what the stack below held (sorted).
    /// On another stack below, entries there that those devices do not name would show through.
    pub explicit_whiteout_dirs: Vec<EntryPath>,
    /// Layer directories: whiteouts left out because the stack below has no directory to hide
    /// anything in (writing them would make one), at most 10,000. On another
    /// stack below that has the path, it would show through.
    pub dropped_whiteouts: Vec<EntryPath>,
    /// Device files and FIFOs left out, at most 10,000.
    pub left_out: Vec<LeftOut>,
    /// Entries left out but not kept in `left_out` because of the limit.
    pub left_out_uncounted: u64,
}

impl Report {
    pub(crate) fn warn(&mut self, layer: &str, path: &EntryPath, kind: WarningKind) {
        tracing::warn!(layer, path = %path, ?kind, "extraction warning");
        if self.warnings.len() < REPORT_LIST_LIMIT {
            self.warnings.push(Warning {
                layer: layer.to_owned(),
                path: path.clone(),
                kind,
            });
        } else {
            self.warnings_dropped += 1;
        }
    }

    pub(crate) fn dropped_whiteout(&mut self, path: EntryPath) {
        if self.dropped_whiteouts.len() < REPORT_LIST_LIMIT {
            self.dropped_whiteouts.push(path);
        }
    }

    pub(crate) fn owner_not_applied(&mut self, path: &EntryPath, uid: u64, gid: u64) {
        if self.owners_not_applied.len() < REPORT_LIST_LIMIT {
            self.owners_not_applied.push(OwnerRecord {
                path: path.clone(),
                uid,
                gid,
            });
        } else {
            self.owners_dropped += 1;
        }
    }

    pub(crate) fn leave_out(&mut self, layer: &str, path: &EntryPath, kind: SpecialKind) {
        tracing::debug!(layer, path = %path, kind = kind.as_str(), "special file left out");
        if self.left_out.len() < REPORT_LIST_LIMIT {
            self.left_out.push(LeftOut {
                layer: layer.to_owned(),
                path: path.clone(),
                kind,
            });
        } else {
            self.left_out_uncounted += 1;
        }
    }

    /// Adds another report's counts and lists to this one.
    pub fn merge(&mut self, other: Report) {
        self.entries += other.entries;
        self.file_bytes += other.file_bytes;
        for w in other.warnings {
            if self.warnings.len() < REPORT_LIST_LIMIT {
                self.warnings.push(w);
            } else {
                self.warnings_dropped += 1;
            }
        }
        self.warnings_dropped += other.warnings_dropped;
        for o in other.owners_not_applied {
            if self.owners_not_applied.len() < REPORT_LIST_LIMIT {
                self.owners_not_applied.push(o);
            } else {
                self.owners_dropped += 1;
            }
        }
        self.owners_dropped += other.owners_dropped;
        self.explicit_whiteout_dirs
            .extend(other.explicit_whiteout_dirs);
        for path in other.dropped_whiteouts {
            self.dropped_whiteout(path);
        }
        for l in other.left_out {
            if self.left_out.len() < REPORT_LIST_LIMIT {
                self.left_out.push(l);
            } else {
                self.left_out_uncounted += 1;
            }
        }
        self.left_out_uncounted += other.left_out_uncounted;
    }
}
