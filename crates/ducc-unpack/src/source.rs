//! Where a flat tree's regular file came from: the layer and the entry whose data it holds.
//!
//! With [`ExtractOptions::record_sources`](crate::ExtractOptions::record_sources), the flat
//! extractor tags every regular file it fills from a layer entry with the extended attribute
//! [`SOURCE_XATTR`]: the layer's name (as the [`LayerDescriptor`](crate::LayerDescriptor) gave
//! it) and the entry's path in that layer. The tag lives on the inode, so it goes with the file
//! through hardlinks and dies with it when a later layer replaces or deletes the file; a file
//! that no layer entry filled (an Apptainer file, say) has none. A publisher that has already
//! stored the layer's own directory can then point the flat file at the stored object instead
//! of storing the same bytes again (CernVM-FS graft files). Archives cannot forge a tag: an
//! entry's own xattr of that name is never applied.
//!
//! A file system without user xattrs keeps no tags; [`file_source`] then finds none, and the
//! file is published from its content.

use std::path::{Path, PathBuf};

/// The extended attribute that holds a flat file's [`FileSource`].
pub const SOURCE_XATTR: &str = "user.ducc.source";

/// The layer entry whose data a flat tree's regular file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSource {
    /// The layer's name, as its [`LayerDescriptor`](crate::LayerDescriptor) gave it (ducc uses
    /// the blob digest).
    pub layer: String,
    /// The entry's path in the layer (normalised: relative, no `.` or `..` components), which is
    /// also its path in the layer's own directory.
    pub path: PathBuf,
}

/// The tag's value: the layer name, a NUL, the entry path.
pub(crate) fn encode(layer: &str, path: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(layer.len() + 1 + path.len());
    value.extend_from_slice(layer.as_bytes());
    value.push(0);
    value.extend_from_slice(path);
    value
}

/// The source recorded on the regular file at `path` (not following a final symlink), if any.
/// Unreadable or malformed tags count as none.
pub fn file_source(path: &Path) -> Option<FileSource> {
    let mut buffer = vec![0u8; 4096 + 512];
    let len = rustix::fs::lgetxattr(path, SOURCE_XATTR, &mut buffer).ok()?;
    buffer.truncate(len);
    let split = buffer.iter().position(|b| *b == 0)?;
    let layer = std::str::from_utf8(&buffer[..split]).ok()?.to_owned();
    let raw = &buffer[split + 1..];
    let path = PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(raw));
    if layer.is_empty()
        || path.as_os_str().is_empty()
        || path.is_absolute()
        || path
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return None;
    }
    Some(FileSource { layer, path })
}
