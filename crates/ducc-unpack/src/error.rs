//! The crate's error type.

use std::io;
use std::path::PathBuf;

use ducc_oci::{BlobDigest, DiffId};

/// Everything that can go wrong while reading, extracting or writing a layer.
///
/// `layer` fields carry the name the caller gave the layer (usually its digest); `entry` fields
/// carry the entry's path as written in the archive (lossily decoded when not UTF-8).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The media type names no layer format this crate reads.
    #[error("layer {layer}: unknown layer media type {media_type:?}")]
    UnknownMediaType {
        /// The layer.
        layer: String,
        /// The media type as given.
        media_type: String,
    },
    /// Reading or decompressing the layer blob failed (truncated stream, corrupt gzip or zstd).
    #[error("layer {layer}: reading the {what} stream")]
    Read {
        /// The layer.
        layer: String,
        /// `compressed` or `uncompressed`.
        what: &'static str,
        /// The I/O or decoder error.
        source: io::Error,
    },
    /// The compressed bytes do not hash to the expected blob digest.
    #[error("layer {layer}: blob digest mismatch: expected {expected}, got {actual}")]
    BlobDigestMismatch {
        /// The layer.
        layer: String,
        /// The digest the caller expected.
        expected: BlobDigest,
        /// The digest of the bytes read.
        actual: BlobDigest,
    },
    /// The uncompressed bytes do not hash to the expected diff_id.
    #[error("layer {layer}: diff_id mismatch: expected {expected}, got {actual}")]
    DiffIdMismatch {
        /// The layer.
        layer: String,
        /// The diff_id the caller expected.
        expected: DiffId,
        /// The digest of the uncompressed bytes read.
        actual: DiffId,
    },
    /// The tar stream is malformed (bad header, checksum, truncated entry).
    #[error("layer {layer}: malformed tar stream")]
    Tar {
        /// The layer.
        layer: String,
        /// The parser's error.
        source: io::Error,
    },
    /// An entry is refused: a `..` component, an empty or NUL-containing name, a bare `.wh.`, a
    /// non-directory entry for the root, an unsupported type, a device number too large.
    #[error("layer {layer}: entry {entry:?}: {reason}")]
    InvalidEntry {
        /// The layer.
        layer: String,
        /// The entry's name as in the archive.
        entry: String,
        /// Why it is refused.
        reason: String,
    },
    /// A hardlink's target does not exist in the tree (or not in this layer, when no lower layers
    /// were given), or is a directory.
    #[error("layer {layer}: hardlink {entry:?}: target {target:?} {reason}")]
    HardlinkTarget {
        /// The layer.
        layer: String,
        /// The hardlink entry's name.
        entry: String,
        /// The hardlink's target as in the archive.
        target: String,
        /// What is wrong with the target.
        reason: &'static str,
    },
    /// A filesystem operation for an entry failed.
    #[error("layer {layer}: entry {entry:?}: {op}")]
    Fs {
        /// The layer.
        layer: String,
        /// The entry being applied.
        entry: String,
        /// The operation, e.g. `create file`, `set owner`.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The destination directory is unusable (missing, not a directory, not empty when it must be).
    #[error("destination {path}: {reason}")]
    Destination {
        /// The destination path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An I/O error on the destination itself (opening it, promoting a finished layer directory).
    #[error("destination {path}: {op}")]
    DestinationIo {
        /// The path.
        path: PathBuf,
        /// The operation.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// A tree could not be read back or written as a tar stream.
    #[error("canonical tar: {path:?}: {reason}")]
    CanonicalTar {
        /// The entry path in the stream.
        path: String,
        /// What rule it breaks.
        reason: String,
    },
    /// Writing the tar stream to its sink failed.
    #[error("canonical tar: writing {path:?}")]
    TarWrite {
        /// The entry being written.
        path: String,
        /// The sink's error.
        source: io::Error,
    },
    /// The layer has more tar entries than [`Limits::max_entries_per_layer`](crate::Limits).
    #[error(
        "layer {layer}: more than {limit} tar entries (the limit; raise `max_entries_per_layer` \
         if the image is genuine)"
    )]
    TooManyEntries {
        /// The layer.
        layer: String,
        /// The limit in force.
        limit: u64,
    },
    /// A PAX extended header or GNU long name/link record is larger than
    /// [`Limits::max_pax_header_bytes`](crate::Limits); refused before it is read into memory.
    #[error(
        "layer {layer}: {kind} record {header:?} at byte {offset} is {size} bytes, more than the \
         limit of {limit}"
    )]
    ExtensionHeaderTooLarge {
        /// The layer.
        layer: String,
        /// `PAX extended header`, `GNU long name` or `GNU long link`.
        kind: &'static str,
        /// The record's own name in the archive (e.g. `././@PaxHeader`).
        header: String,
        /// Offset of its header block in the uncompressed tar stream.
        offset: u64,
        /// The size its header announces.
        size: u64,
        /// The limit in force.
        limit: u64,
    },
    /// An entry's path or symlink target is longer than
    /// [`Limits::max_path_bytes`](crate::Limits).
    #[error("layer {layer}: entry {entry:?}: {what} is {length} bytes long, more than {limit}")]
    PathTooLong {
        /// The layer.
        layer: String,
        /// The entry's name as in the archive (cut to its first 200 bytes).
        entry: String,
        /// `path`, `symlink target` or `hardlink target`.
        what: &'static str,
        /// Its length after normalisation.
        length: usize,
        /// The limit in force.
        limit: usize,
    },
    /// A component of an entry's path is longer than [`Limits::max_name_bytes`](crate::Limits).
    #[error(
        "layer {layer}: entry {entry:?}: a name component of its {what} is {length} bytes long, \
         more than {limit}"
    )]
    NameTooLong {
        /// The layer.
        layer: String,
        /// The entry's name as in the archive (cut to its first 200 bytes).
        entry: String,
        /// `path` or `hardlink target`.
        what: &'static str,
        /// The component's length.
        length: usize,
        /// The limit in force.
        limit: usize,
    },
    /// A zstd frame needs a larger window than [`Limits::zstd_window_log_max`](crate::Limits).
    #[error(
        "layer {layer}: a zstd frame needs a window larger than 2^{window_log_max} bytes (the \
         limit; raise `zstd_window_log_max` if the image is genuine)"
    )]
    ZstdWindowTooLarge {
        /// The layer.
        layer: String,
        /// The limit in force.
        window_log_max: u32,
    },
    /// The layer decompresses to more than its compressed size allows
    /// ([`Limits::max_expansion_ratio`](crate::Limits) and
    /// [`Limits::expansion_allowance`](crate::Limits)): a decompression bomb, stopped early.
    #[error(
        "layer {layer}: {uncompressed} uncompressed bytes from {compressed} compressed bytes, \
         more than {allowance} bytes plus {ratio} per compressed byte (a decompression bomb?)"
    )]
    DecompressionBomb {
        /// The layer.
        layer: String,
        /// Compressed bytes read so far.
        compressed: u64,
        /// Uncompressed bytes produced so far.
        uncompressed: u64,
        /// The ratio limit in force.
        ratio: u64,
        /// The allowance in force.
        allowance: u64,
    },
}
