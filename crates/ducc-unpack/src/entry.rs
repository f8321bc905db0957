//! The normalised entry model over a layer tar: paths as bytes, kinds, times, xattrs.

use std::fmt;

use crate::limits::{DEFAULT_MAX_NAME_BYTES, DEFAULT_MAX_PATH_BYTES};

/// A normalised path inside the root: relative, no `.`/`..`/empty components, no NUL, components
/// at most 255 bytes and the whole at most 4095. The empty path is the root itself. Bytes are kept
/// as they are (names need not be UTF-8).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EntryPath(Vec<u8>);

impl EntryPath {
    /// The root.
    pub fn root() -> Self {
        EntryPath(Vec::new())
    }

    /// Normalises an untrusted archive name: leading `/` and `./` are dropped (absolute names are
    /// root-relative), `//` and `.` components collapse.
    ///
    /// # Errors
    /// A message naming the problem: a `..` component, a NUL byte, a component over 255 bytes or a
    /// path over 4095 bytes.
    pub fn normalise(unsafe_name: &[u8]) -> Result<Self, String> {
        Self::normalise_limited(unsafe_name, DEFAULT_MAX_NAME_BYTES, DEFAULT_MAX_PATH_BYTES)
            .map_err(|problem| match problem {
                PathProblem::Invalid(reason) => reason,
                PathProblem::NameTooLong(length) => format!(
                    "a name component is {length} bytes long, more than {DEFAULT_MAX_NAME_BYTES}"
                ),
                PathProblem::PathTooLong(length) => {
                    format!("name is {length} bytes long, more than {DEFAULT_MAX_PATH_BYTES}")
                }
            })
    }

    /// [`EntryPath::normalise`] with the component and path limits given.
    pub(crate) fn normalise_limited(
        unsafe_name: &[u8],
        max_name: usize,
        max_path: usize,
    ) -> Result<Self, PathProblem> {
        if unsafe_name.contains(&0) {
            return Err(PathProblem::Invalid("name contains a NUL byte".to_owned()));
        }
        let mut out = Vec::with_capacity(unsafe_name.len());
        for component in unsafe_name.split(|&b| b == b'/') {
            match component {
                b"" | b"." => {}
                b".." => {
                    return Err(PathProblem::Invalid("name has a `..` component".to_owned()));
                }
                c => {
                    // A whiteout of a 255-byte name is longer, and is never created as such.
                    let limit = if c.starts_with(b".wh.") {
                        max_name.saturating_add(4)
                    } else {
                        max_name
                    };
                    if c.len() > limit {
                        return Err(PathProblem::NameTooLong(c.len()));
                    }
                    if !out.is_empty() {
                        out.push(b'/');
                    }
                    out.extend_from_slice(c);
                }
            }
        }
        if out.len() > max_path {
            return Err(PathProblem::PathTooLong(out.len()));
        }
        Ok(EntryPath(out))
    }

    /// The path's bytes (`a/b/c`; empty for the root).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether this is the root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The parent path (the root's parent is the root).
    pub fn parent(&self) -> EntryPath {
        EntryPath(self.parent_bytes().to_vec())
    }

    /// The parent's bytes.
    pub(crate) fn parent_bytes(&self) -> &[u8] {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => &self.0[..i],
            None => &[],
        }
    }

    /// The last component (empty for the root).
    pub fn file_name(&self) -> &[u8] {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        }
    }

    /// This path with one more component (which must be a valid single component).
    pub fn join(&self, component: &[u8]) -> EntryPath {
        let mut out = Vec::with_capacity(self.0.len() + 1 + component.len());
        out.extend_from_slice(&self.0);
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(component);
        EntryPath(out)
    }

    /// The components, outermost first.
    pub fn components(&self) -> impl Iterator<Item = &[u8]> {
        self.0.split(|&b| b == b'/').filter(|c| !c.is_empty())
    }

    /// Whether `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &EntryPath) -> bool {
        other.0.is_empty()
            || (self.0.starts_with(&other.0)
                && (self.0.len() == other.0.len() || self.0[other.0.len()] == b'/'))
    }
}

impl fmt::Display for EntryPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str(".")
        } else {
            f.write_str(&String::from_utf8_lossy(&self.0))
        }
    }
}

impl fmt::Debug for EntryPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

/// Why a name does not normalise.
#[derive(Debug)]
pub(crate) enum PathProblem {
    /// A `..` component or a NUL byte.
    Invalid(String),
    /// A component of this many bytes is over the limit.
    NameTooLong(usize),
    /// The normalised path, this many bytes, is over the limit.
    PathTooLong(usize),
}

/// A point in time: seconds since the Unix epoch (may be negative) and nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Timestamp {
    /// Whole seconds since 1970-01-01T00:00:00Z.
    pub secs: i64,
    /// Nanoseconds, below 1_000_000_000.
    pub nanos: u32,
}

impl Timestamp {
    /// The modification time of a `stat`.
    pub(crate) fn mtime_of(stat: &rustix::fs::Stat) -> Self {
        Timestamp {
            secs: stat.st_mtime,
            nanos: u32::try_from(stat.st_mtime_nsec).unwrap_or(0),
        }
    }
}

/// One extended attribute.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Xattr {
    /// Its full name (`user.foo`, `security.capability`).
    pub name: Vec<u8>,
    /// Its value.
    pub value: Vec<u8>,
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EntryKind {
    /// A regular file; its data follows (sparse files already reconstructed).
    File,
    /// A directory.
    Directory,
    /// A symbolic link with its target, verbatim.
    Symlink(Vec<u8>),
    /// A hard link to another path in the tree (normalised like entry names).
    Hardlink(EntryPath),
    /// A character device.
    CharDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A block device.
    BlockDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
    /// A whiteout `.wh.NAME`: the entry's path is the hidden path (`dir/NAME`), not the marker.
    Whiteout,
    /// An opaque marker `.wh..wh..opq`: the entry's path is the directory whose lower-layer
    /// children are hidden.
    OpaqueWhiteout,
    /// AUFS metadata (`.wh..wh.plnk/...`, `.wh..wh.aufs`, other `.wh..wh.*`): never extracted.
    AufsMetadata,
}

/// One normalised tar entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The normalised path (for whiteouts, the path they hide).
    pub path: EntryPath,
    /// The entry's name exactly as in the archive (for messages and for raw whiteout output).
    pub raw_name: Vec<u8>,
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits including setuid, setgid and sticky (`0o7777` at most).
    pub mode: u32,
    /// Owner uid (PAX `uid` honoured).
    pub uid: u64,
    /// Owner gid (PAX `gid` honoured).
    pub gid: u64,
    /// Modification time (PAX `mtime` with its fraction honoured).
    pub mtime: Timestamp,
    /// Size of the data that follows (regular files; the real size of a sparse file).
    pub size: u64,
    /// Extended attributes from PAX `SCHILY.xattr.*` records, in archive order.
    pub xattrs: Vec<Xattr>,
}

impl Entry {
    /// The entry's archive name, lossily decoded, for messages.
    pub fn display_name(&self) -> String {
        String::from_utf8_lossy(&self.raw_name).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalise_to_root_relative_paths() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"a/b", b"a/b"),
            (b"./a/b/", b"a/b"),
            (b"/etc//passwd", b"etc/passwd"),
            (b"a/./b", b"a/b"),
            (b"./", b""),
            (b"/", b""),
        ];
        for (raw, normal) in cases {
            assert_eq!(
                EntryPath::normalise(raw).expect("valid").as_bytes(),
                *normal
            );
        }
    }

    #[test]
    fn names_with_dotdot_nul_or_overlong_parts_are_refused() {
        let long_component = vec![b'x'; 256];
        let long_path = b"d/".repeat(2100);
        let cases: &[&[u8]] = &[
            b"..",
            b"a/../b",
            b"../a",
            b"a\0b",
            &long_component,
            &long_path,
        ];
        for raw in cases {
            assert!(
                EntryPath::normalise(raw).is_err(),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }
}
