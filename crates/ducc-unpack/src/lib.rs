//! Layer unpacking for ducc-rs, usable alone by any CernVM-FS tool: decompression (gzip, zstd,
//! plain) with blob-digest and diff_id checks, a normalised entry model over OCI/Docker layer
//! tars, whiteout-aware extraction into one directory per layer or into a flattened root
//! filesystem, and a canonical tar writer for publishers that ingest tar streams.
//!
//! Every write goes through file descriptors resolved inside the target with
//! `openat2(RESOLVE_IN_ROOT)`: whatever an archive holds (`..` names, absolute symlinks, symlinked
//! parents, hardlinks to outside), nothing is written outside the target directory.
//!
//! Main types: [`LayerReader`] (blob → uncompressed tar, both digests checked at the end),
//! [`read_entries`] (the parser), [`unpack_layer_dir`] / [`extract_layer_dir`] (one layer, one
//! directory), [`FlatExtractor`] (layers in order onto one tree), [`CanonicalTarWriter`] and
//! [`write_tree_as_tar`] (canonical tar out), [`extract_canonical_tar`] (canonical tar in).
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use ducc_unpack::{ExtractOptions, FlatExtractor, LayerDescriptor};
//!
//! // A one-file layer, as a plain tar.
//! let mut builder = tar::Builder::new(Vec::new());
//! let mut header = tar::Header::new_gnu();
//! header.set_size(5);
//! header.set_mode(0o644);
//! header.set_entry_type(tar::EntryType::Regular);
//! builder.append_data(&mut header, "etc/motd", &b"hello"[..])?;
//! let layer = builder.into_inner()?;
//!
//! let root = tempfile::tempdir()?;
//! let mut flat = FlatExtractor::new(root.path(), &ExtractOptions::new())?;
//! let descriptor = LayerDescriptor::new("layer 0", "application/vnd.oci.image.layer.v1.tar");
//! let digests = flat.apply_blob(&layer[..], &descriptor)?;
//! flat.finish();
//! assert_eq!(std::fs::read(root.path().join("etc/motd"))?, b"hello");
//! assert_eq!(digests.uncompressed_size, layer.len() as u64);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod apply;
mod apptainer;
mod digest;
mod entry;
mod error;
mod extract;
mod report;
mod stream;
mod tarout;
#[cfg(test)]
mod testutil;
mod writer;

pub use apptainer::{ApptainerReport, BIND_FILES, ImageRuntime, MOUNT_POINTS, add_apptainer_files};
pub use digest::{BlobDigest, DiffId, DigestParseError, LayerDigest};
pub use entry::{Entry, EntryKind, EntryPath, Timestamp, Xattr, read_entries};
pub use error::Error;
pub use extract::{
    FlatExtractor, LayerOutcome, extract_canonical_tar, extract_layer_dir, unpack_layer_dir,
};
pub use report::{
    ExtractOptions, LayerDirOptions, OwnerRecord, Privileges, REPORT_LIST_LIMIT, Report, Warning,
    WarningKind, WhiteoutFormat,
};
pub use stream::{Compression, LayerDescriptor, LayerDigests, LayerReader};
pub use writer::{
    CanonicalTarWriter, TarSummary, TarWriteOptions, canonicalize_layer, write_tree_as_tar,
};
