//! Options shared by the extractors, and the report they return.

use std::path::PathBuf;

use crate::entry::EntryPath;

/// How whiteouts are written into a layer directory or a canonical tar stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WhiteoutFormat {
    /// overlayfs form: `.wh.NAME` becomes a character device 0/0 named `NAME`, `.wh..wh..opq`
    /// becomes the xattr `trusted.overlay.opaque=y` on its directory.
    #[default]
    Overlay,
    /// OCI form: the `.wh.NAME` and `.wh..wh..opq` entries are kept as the empty files they are.
    Oci,
    /// overlayfs form without xattrs, for stores that keep devices but drop xattrs (`cvmfs_server
    /// ingest` on a stratum 0): `.wh.NAME` becomes a character device 0/0 named `NAME`; a
    /// directory that hides everything below it (`.wh..wh..opq`, or a whiteout of a directory
    /// that the layer makes again) gets a whiteout device for every entry the stack below has
    /// in it that the layer does not provide, and so on inside every directory of the layer
    /// that lies over a directory below. Those devices depend on the stack below: the layer's
    /// [`Report::explicit_whiteout_dirs`] names the directories where they were computed.
    OverlayDevices,
}

impl WhiteoutFormat {
    /// Whether whiteouts are character devices 0/0 (either overlay form).
    pub fn uses_devices(self) -> bool {
        matches!(
            self,
            WhiteoutFormat::Overlay | WhiteoutFormat::OverlayDevices
        )
    }
}

/// Which privileged operations the extractor attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Privileges {
    /// Root behaviour when the effective uid is 0, else unprivileged behaviour.
    #[default]
    Auto,
    /// Set owners, create devices, set `trusted.*` xattrs.
    Root,
    /// Do not set owners (they go into the report), skip device nodes with a warning, skip
    /// `trusted.*` xattrs, tolerate EPERM on `security.capability`.
    Unprivileged,
}

impl Privileges {
    /// Whether root behaviour applies.
    pub(crate) fn is_root(self) -> bool {
        match self {
            Privileges::Auto => ducc_oci::is_root(),
            Privileges::Root => true,
            Privileges::Unprivileged => false,
        }
    }
}

/// Options for extracting one layer into its own directory.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct LayerDirOptions {
    /// How whiteouts are written (default: overlay form).
    pub whiteouts: WhiteoutFormat,
    /// The directories of the layers below this one, topmost first. A hardlink whose target is
    /// not in this layer is materialised as a copy of the target found there; with no lower
    /// layers such a hardlink is an error.
    pub lower_layers: Vec<PathBuf>,
    /// Which privileged operations to attempt.
    pub privileges: Privileges,
    /// Limits on hostile layers (see [`Limits`]).
    pub limits: Limits,
    /// Leave device files and FIFOs out of the tree, listing them in [`Report::left_out`]
    /// (for a repository that cannot store them, such as a CernVM-FS gateway).
    pub leave_out_special_files: bool,
}

impl LayerDirOptions {
    /// Default options: overlay whiteouts, no lower layers, privileges from the effective uid.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same options with the given whiteout format.
    pub fn whiteouts(mut self, format: WhiteoutFormat) -> Self {
        self.whiteouts = format;
        self
    }

    /// The same options with the given lower layer directories (topmost first).
    pub fn lower_layers(mut self, lower: Vec<PathBuf>) -> Self {
        self.lower_layers = lower;
        self
    }

    /// The same options with the given privileges.
    pub fn privileges(mut self, privileges: Privileges) -> Self {
        self.privileges = privileges;
        self
    }

    /// The same options with the given limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The same options, leaving device files and FIFOs out (or not).
    pub fn leave_out_special_files(mut self, leave_out: bool) -> Self {
        self.leave_out_special_files = leave_out;
        self
    }
}

/// Options for flat extraction and for verbatim tar extraction.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ExtractOptions {
    /// Which privileged operations to attempt.
    pub privileges: Privileges,
    /// Limits on hostile layers (see [`Limits`]).
    pub limits: Limits,
    /// Flat extraction: tag each regular file filled from a layer entry with its source (see
    /// [`crate::file_source`]).
    pub record_sources: bool,
    /// Leave device files and FIFOs out of the tree, listing them in [`Report::left_out`]
    /// (for a repository that cannot store them, such as a CernVM-FS gateway).
    pub leave_out_special_files: bool,
}

impl ExtractOptions {
    /// Default options: privileges from the effective uid, default [`Limits`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The same options with the given privileges.
    pub fn privileges(mut self, privileges: Privileges) -> Self {
        self.privileges = privileges;
        self
    }

    /// The same options with the given limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The same options, tagging (or not) each flat file with its source layer entry.
    pub fn record_sources(mut self, record: bool) -> Self {
        self.record_sources = record;
        self
    }

    /// The same options, leaving device files and FIFOs out (or not).
    pub fn leave_out_special_files(mut self, leave_out: bool) -> Self {
        self.leave_out_special_files = leave_out;
        self
    }
}

/// Limits that stop a hostile layer early, each with a typed [`Error`](crate::Error) naming the
/// layer. The defaults are far above what real images hold (the reasons are in the crate docs,
/// section "Limits on hostile layers"); raise one with its setter when an image needs it.
///
/// ```
/// let limits = ducc_unpack::Limits::new().max_entries_per_layer(20_000_000);
/// assert_eq!(limits.max_entries_per_layer, 20_000_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Most tar entries in one layer, extension headers included
    /// ([`DEFAULT_MAX_ENTRIES_PER_LAYER`]).
    pub max_entries_per_layer: u64,
    /// Largest PAX extended header (`x`) or GNU long name/link record (`L`, `K`), in bytes; the
    /// tar parser holds such a record in memory ([`DEFAULT_MAX_PAX_HEADER_BYTES`]).
    pub max_pax_header_bytes: u64,
    /// Longest entry path and symlink target, in bytes after normalisation
    /// ([`DEFAULT_MAX_PATH_BYTES`]).
    pub max_path_bytes: usize,
    /// Longest path component, in bytes ([`DEFAULT_MAX_NAME_BYTES`]).
    pub max_name_bytes: usize,
    /// Largest zstd window, as a power of two; a frame that asks for more is refused before its
    /// window is allocated ([`DEFAULT_ZSTD_WINDOW_LOG_MAX`]).
    pub zstd_window_log_max: u32,
    /// Most uncompressed bytes per compressed byte, past the allowance
    /// ([`DEFAULT_MAX_EXPANSION_RATIO`]).
    pub max_expansion_ratio: u64,
    /// Uncompressed bytes a compressed layer may always reach, whatever its compressed size
    /// ([`DEFAULT_EXPANSION_ALLOWANCE`]).
    pub expansion_allowance: u64,
    /// Largest image config, in bytes ([`DEFAULT_MAX_CONFIG_BYTES`]): a config is held in
    /// memory, so a bigger one is refused by its descriptor's size, before it is downloaded.
    ///
    /// The config is parsed once, as an image config, when it is fetched, before anything of the
    /// image is published; every later step (the flat tree's `.singularity.d` environment, the
    /// podman store, the thin image) uses that parsed value. Fields ducc does not read are
    /// skipped at any depth (a valid config nested 200,000 deep there converts); a field it reads
    /// (`config.Env`, `Labels`, ...) that is nested beyond the JSON parser's depth limit of 128
    /// fails the image at that parse, so nothing of it is published.
    pub max_config_bytes: u64,
}

/// Default [`Limits::max_entries_per_layer`]: 4 million.
pub const DEFAULT_MAX_ENTRIES_PER_LAYER: u64 = 4_000_000;
/// Default [`Limits::max_pax_header_bytes`]: 1 MiB.
pub const DEFAULT_MAX_PAX_HEADER_BYTES: u64 = 1 << 20;
/// Default [`Limits::max_path_bytes`]: 4095 (Linux `PATH_MAX`, 4096, counts the closing NUL).
pub const DEFAULT_MAX_PATH_BYTES: usize = 4095;
/// Default [`Limits::max_name_bytes`]: 255 (Linux `NAME_MAX`).
pub const DEFAULT_MAX_NAME_BYTES: usize = 255;
/// Default [`Limits::zstd_window_log_max`]: 27 (a 128 MiB window).
pub const DEFAULT_ZSTD_WINDOW_LOG_MAX: u32 = 27;
/// Default [`Limits::max_expansion_ratio`]: 4096 to 1.
pub const DEFAULT_MAX_EXPANSION_RATIO: u64 = 4096;
/// Default [`Limits::expansion_allowance`]: 512 MiB.
pub const DEFAULT_EXPANSION_ALLOWANCE: u64 = 512 << 20;
/// Default [`Limits::max_config_bytes`]: 32 MiB (real configs are a few KiB; the largest seen,
/// with thousands of history entries, under 1 MiB).
pub const DEFAULT_MAX_CONFIG_BYTES: u64 = 32 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries_per_layer: DEFAULT_MAX_ENTRIES_PER_LAYER,
            max_pax_header_bytes: DEFAULT_MAX_PAX_HEADER_BYTES,
            max_path_bytes: DEFAULT_MAX_PATH_BYTES,
            max_name_bytes: DEFAULT_MAX_NAME_BYTES,
            zstd_window_log_max: DEFAULT_ZSTD_WINDOW_LOG_MAX,
            max_expansion_ratio: DEFAULT_MAX_EXPANSION_RATIO,
            expansion_allowance: DEFAULT_EXPANSION_ALLOWANCE,
            max_config_bytes: DEFAULT_MAX_CONFIG_BYTES,
        }
    }
}

impl Limits {
    /// The default limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same limits with another [`Limits::max_entries_per_layer`].
    pub fn max_entries_per_layer(mut self, entries: u64) -> Self {
        self.max_entries_per_layer = entries;
        self
    }

    /// The same limits with another [`Limits::max_pax_header_bytes`].
    pub fn max_pax_header_bytes(mut self, bytes: u64) -> Self {
        self.max_pax_header_bytes = bytes;
        self
    }

    /// The same limits with another [`Limits::max_path_bytes`].
    pub fn max_path_bytes(mut self, bytes: usize) -> Self {
        self.max_path_bytes = bytes;
        self
    }

    /// The same limits with another [`Limits::max_name_bytes`].
    pub fn max_name_bytes(mut self, bytes: usize) -> Self {
        self.max_name_bytes = bytes;
        self
    }

    /// The same limits with another [`Limits::zstd_window_log_max`] (libzstd accepts 10 to 31).
    pub fn zstd_window_log_max(mut self, log: u32) -> Self {
        self.zstd_window_log_max = log;
        self
    }

    /// The same limits with another [`Limits::max_expansion_ratio`].
    pub fn max_expansion_ratio(mut self, ratio: u64) -> Self {
        self.max_expansion_ratio = ratio;
        self
    }

    /// The same limits with another [`Limits::expansion_allowance`].
    pub fn expansion_allowance(mut self, bytes: u64) -> Self {
        self.expansion_allowance = bytes;
        self
    }

    /// The same limits with another [`Limits::max_config_bytes`].
    pub fn max_config_bytes(mut self, bytes: u64) -> Self {
        self.max_config_bytes = bytes;
        self
    }

    /// Most uncompressed bytes allowed after `compressed` compressed bytes (saturating).
    pub(crate) fn expansion_cap(&self, compressed: u64) -> u64 {
        self.expansion_allowance
            .saturating_add(compressed.saturating_mul(self.max_expansion_ratio))
    }
}

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
/// [`ExtractOptions::leave_out_special_files`]).
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
pub const REPORT_LIST_LIMIT: usize = 10_000;

/// What an extraction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Entries read from the archive(s), including whiteouts.
    pub entries: u64,
    /// Bytes of regular-file data written.
    pub file_bytes: u64,
    /// Warnings, at most [`REPORT_LIST_LIMIT`].
    pub warnings: Vec<Warning>,
    /// Warnings not kept in `warnings` because of the limit.
    pub warnings_dropped: u64,
    /// Owners not applied (unprivileged) other than the extracting user's own, at most
    /// [`REPORT_LIST_LIMIT`].
    pub owners_not_applied: Vec<OwnerRecord>,
    /// Owner records not kept because of the limit.
    pub owners_dropped: u64,
    /// [`WhiteoutFormat::OverlayDevices`]: the directories of the layer that hide everything
    /// below them, where whiteout devices were written for what the stack below held (sorted).
    /// On another stack below, entries there that those devices do not name would show through.
    pub explicit_whiteout_dirs: Vec<EntryPath>,
    /// Layer directories: whiteouts left out because the stack below has no directory to hide
    /// anything in (writing them would make one), at most [`REPORT_LIST_LIMIT`]. On another
    /// stack below that has the path, it would show through.
    pub dropped_whiteouts: Vec<EntryPath>,
    /// Device files and FIFOs left out, at most [`REPORT_LIST_LIMIT`].
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
