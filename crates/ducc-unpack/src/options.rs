//! What the extractors are asked to do: the whiteout form, the privileges to use, and the
//! options of layer-directory and flat extraction.

use std::path::PathBuf;

use crate::limits::Limits;

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
    /// [`Report::explicit_whiteout_dirs`](crate::Report::explicit_whiteout_dirs) names the directories where they were computed.
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
    /// Leave device files and FIFOs out of the tree, listing them in [`Report::left_out`](crate::Report::left_out)
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
    /// Leave device files and FIFOs out of the tree, listing them in [`Report::left_out`](crate::Report::left_out)
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
