//! Layer unpacking for ducc-rs, usable alone by any CernVM-FS tool: decompression (gzip, zstd,
//! plain) with blob-digest and diff_id checks, a normalised entry model over OCI/Docker layer
//! tars, whiteout-aware extraction into one directory per layer or into a flattened root
//! filesystem, and a canonical tar writer for publishers that ingest tar streams.
//!
//! Every write goes through file descriptors resolved inside the target with
//! `openat2(RESOLVE_IN_ROOT)`: whatever an archive holds (`..` names, absolute symlinks, symlinked
//! parents, hardlinks to outside), nothing is written outside the target directory.
//!
//! # What an embedding tool uses
//!
//! - **Read a layer blob**: [`LayerReader`] turns a blob into its uncompressed tar
//!   ([`LayerDescriptor`] in, [`LayerDigests`] out, both digests checked at the end).
//! - **Unpack**: [`FlatExtractor`] applies layers in order onto one root filesystem;
//!   [`unpack_layer_dir`] / [`extract_layer_dir`] write one layer into a directory of its own
//!   (whiteouts in the [`WhiteoutFormat`] asked for); [`extract_canonical_tar`] writes a canonical
//!   tar back into a tree. Each takes its options ([`ExtractOptions`], [`LayerDirOptions`], with
//!   [`Limits`] and [`Privileges`]) and returns a [`Report`] of what it did not do as asked.
//! - **Write tar**: [`write_tree_as_tar`] (a tree) and [`CanonicalTarWriter`] (entries) write
//!   canonical streams for publishers that ingest tar; [`canonicalize_layer`] does both for a
//!   layer.
//! - **Read tar**: [`EntryReader`] hands out each entry of a stream as an [`Entry`] (names as
//!   bytes, in [`EntryPath`]), through the same checks every layer goes through, for a tool that
//!   copies entries somewhere else.
//! - **Around a flat tree**: [`add_apptainer_files`] (the `.singularity.d` files of an image),
//!   [`file_source`] (which layer file a flat file came from), [`dropped_below`] and
//!   [`uncovered_below`] (what a layer's whiteouts miss over another stack of layers).
//!
//! Everything fails with one [`Error`], naming the layer and the entry.
//!
//! # Limits on hostile layers
//!
//! A layer is untrusted input: each of these limits stops a hostile one early with a typed
//! [`Error`] naming the layer (the caller adds the image). The defaults are set far above what
//! real images reach; [`Limits`] on [`ExtractOptions`] and [`LayerDirOptions`] (and
//! [`LayerReader::open_with_limits`], [`EntryReader::limits`]) raises any of them.
//!
//! | limit | default | error |
//! | --- | --- | --- |
//! | tar entries per layer, extension headers included | 4,000,000 | [`Error::TooManyEntries`] |
//! | PAX extended header, GNU long name or long link record | 1 MiB | [`Error::ExtensionHeaderTooLarge`] |
//! | path and symlink target, after normalisation | 4095 bytes | [`Error::PathTooLong`] |
//! | path component | 255 bytes | [`Error::NameTooLong`] |
//! | zstd window | 2^27 bytes (128 MiB) | [`Error::ZstdWindowTooLarge`] |
//! | uncompressed bytes of a gzip or zstd layer | 512 MiB + 4096 × compressed bytes | [`Error::DecompressionBomb`] |
//! | image config (checked by the engine's registry client, by descriptor size) | 32 MiB | the image fails at its config step |
//!
//! Why these values:
//! - **Entries**: the largest real layers (a full TeX Live, a CUDA toolkit, a conda environment
//!   with a deep learning stack) hold a few hundred thousand entries; 4 million is ten times
//!   that, and bounds the memory of the per-layer path set the extractor keeps. Each entry is
//!   at least one 512-byte header block, so 4 million entries are 2 GiB of tar.
//! - **PAX header**: the tar parser holds a PAX record (and a GNU long name) in memory whole, so
//!   its size must be bounded before it is read. Go's `archive/tar`, which Docker, containerd
//!   and the registries use, refuses such records above 1 MiB: no image they can read has a
//!   larger one. Real records are a few hundred bytes (names, times, a few xattrs).
//! - **Paths**: Linux cannot create a path of `PATH_MAX` (4096 bytes with its NUL) or a name over
//!   `NAME_MAX` (255), so no real layer holds one. A whiteout name may be 4 bytes longer (its
//!   `.wh.` prefix), as it is never created under its own name.
//! - **zstd window**: the decoder allocates the window a frame declares. 2^27 is the largest the
//!   `zstd` command-line tool decodes without `--memory` or `--long`, and above every level's
//!   default (level 19 uses 2^23, `--ultra -22` 2^27); encoders used for images (containerd,
//!   podman's zstd:chunked) stay far below. A larger window costs that much memory per layer
//!   being decoded.
//! - **Decompression bomb**: checked on every read of a gzip or zstd stream, so a bomb stops
//!   after at most the cap, long before the disk fills. Real layers compress 2:1 to 10:1; a
//!   layer of zero-filled files reaches about 1000:1 with gzip (deflate cannot exceed 1032:1,
//!   so gzip alone never reaches the ratio: a gzip layer is bounded by its own download size)
//!   and about 30,000:1 with zstd. The 512 MiB allowance lets any layer, however small, hold
//!   that much (a sparse or preallocated zero file, an empty disk image); past it a layer must
//!   bring at least one compressed byte per 4096 bytes it expands to, which only a layer that
//!   is almost entirely zeros *and* larger than 512 MiB breaks. A plain tar is not checked (it
//!   is its own size).
//! - **Image config**: held in memory whole, and parsed once, when fetched, before anything of
//!   the image is published ([`Limits::max_config_bytes`] says how deep nesting fares). Real
//!   configs are a few KiB; 32 MiB leaves room for any real one while bounding the memory.
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
mod entry;
mod error;
mod extract;
mod limits;
mod options;
mod read;
mod records;
mod report;
mod root;
mod source;
mod stack;
mod stream;
mod tarout;
#[cfg(test)]
mod testutil;
mod writer;

pub use apptainer::{ApptainerReport, BIND_FILES, ImageRuntime, MOUNT_POINTS, add_apptainer_files};
pub use entry::{Entry, EntryKind, EntryPath, Timestamp, Xattr};
pub use error::Error;
pub use extract::{
    FlatExtractor, LayerOutcome, extract_canonical_tar, extract_layer_dir, unpack_layer_dir,
};
pub use limits::{DEFAULT_MAX_CONFIG_BYTES, Limits};
pub use options::{ExtractOptions, LayerDirOptions, Privileges, WhiteoutFormat};
pub use read::EntryReader;
#[cfg(test)]
use read::read_entries;
pub use report::{LeftOut, OwnerRecord, Report, SpecialKind, Warning, WarningKind};
pub use source::{FileSource, SOURCE_XATTR, file_source};
pub use stack::{dropped_below, uncovered_below};
pub use stream::{Compression, LayerDescriptor, LayerDigests, LayerReader};
pub use writer::{
    CanonicalTarWriter, TarSummary, TarWriteOptions, canonicalize_layer, write_tree_as_tar,
};
