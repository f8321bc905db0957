//! The normalised entry model over a layer tar, and its parser.

use std::cell::RefCell;
use std::fmt;
use std::io::{self, Read};
use std::rc::Rc;

use crate::error::Error;
use crate::report::{DEFAULT_MAX_NAME_BYTES, DEFAULT_MAX_PATH_BYTES, Limits};
/// Most sparse segments accepted for one file (a bound on memory for hostile maps).
const MAX_SPARSE_SEGMENTS: usize = 1 << 20;

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

/// Reads a layer's uncompressed tar stream entry by entry and hands each normalised entry and its
/// data to `visit`. PAX global headers are skipped. Returns the number of entries visited.
///
/// `layer` names the layer in errors. The default [`Limits`] apply.
///
/// # Errors
/// [`Error::Tar`] for a malformed stream, [`Error::InvalidEntry`] for an entry that cannot be
/// normalised (a `..` component, a bare `.wh.`, an unsupported type, ...), a limit error
/// ([`Error::TooManyEntries`], [`Error::ExtensionHeaderTooLarge`], [`Error::PathTooLong`],
/// [`Error::NameTooLong`]), or whatever `visit` returns.
pub fn read_entries<R: Read>(
    tar: R,
    layer: &str,
    visit: impl FnMut(&Entry, &mut dyn Read) -> Result<(), Error>,
) -> Result<u64, Error> {
    read_entries_limited(tar, layer, true, &Limits::default(), visit)
}

/// [`read_entries`] with the given limits.
///
/// # Errors
/// As [`read_entries`].
pub fn read_entries_with_limits<R: Read>(
    tar: R,
    layer: &str,
    limits: &Limits,
    visit: impl FnMut(&Entry, &mut dyn Read) -> Result<(), Error>,
) -> Result<u64, Error> {
    read_entries_limited(tar, layer, true, limits, visit)
}

/// [`read_entries`], with whiteout names recognised or (`classify_whiteouts == false`, for
/// verbatim extraction) left as the plain entries they are.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn read_entries_with<R: Read>(
    tar: R,
    layer: &str,
    classify_whiteouts: bool,
    visit: impl FnMut(&Entry, &mut dyn Read) -> Result<(), Error>,
) -> Result<u64, Error> {
    read_entries_limited(tar, layer, classify_whiteouts, &Limits::default(), visit)
}

/// How a tar stream is read into [`Entry`] values: the [`Limits`], and whether whiteout names
/// are recognised (a layer) or left as the plain entries they are (a tar copied into another
/// tar, such as a publisher restaging a tree under a prefix). Every name goes through the same
/// checks either way: `..` components, NUL bytes and the length limits refuse the stream;
/// leading `/` and `./` are dropped. Names stay bytes ([`EntryPath`]).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut builder = tar::Builder::new(Vec::new());
/// let mut header = tar::Header::new_ustar();
/// header.set_size(0);
/// header.set_mode(0o644);
/// builder.append_data(&mut header, "d/.wh.gone", &b""[..])?;
/// let tar = builder.into_inner()?;
///
/// let mut names = Vec::new();
/// ducc_unpack::EntryReader::new().verbatim().read(&tar[..], "copy", |entry, _| {
///     names.push(entry.path.to_string());
///     Ok::<_, ducc_unpack::Error>(())
/// })?;
/// assert_eq!(names, ["d/.wh.gone"]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct EntryReader {
    limits: Limits,
    verbatim: bool,
}

impl EntryReader {
    /// A reader of layers: whiteout names recognised, the default [`Limits`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The same reader under `limits`.
    pub fn limits(mut self, limits: &Limits) -> Self {
        self.limits = *limits;
        self
    }

    /// The same reader leaving `.wh.` names as the plain entries they are.
    pub fn verbatim(mut self) -> Self {
        self.verbatim = true;
        self
    }

    /// Reads `tar` entry by entry and hands each normalised entry and its data to `visit`. PAX
    /// global headers are skipped. Returns the number of entries visited.
    ///
    /// `layer` names the stream in errors.
    ///
    /// # Errors
    /// As [`read_entries`], converted into `visit`'s own error type, or whatever `visit` returns.
    pub fn read<R: Read, E: From<Error>>(
        &self,
        tar: R,
        layer: &str,
        visit: impl FnMut(&Entry, &mut dyn Read) -> Result<(), E>,
    ) -> Result<u64, E> {
        read_entries_limited(tar, layer, !self.verbatim, &self.limits, visit)
    }
}

/// [`read_entries_with`] under the given limits.
pub(crate) fn read_entries_limited<R: Read, E: From<Error>>(
    tar: R,
    layer: &str,
    classify_whiteouts: bool,
    limits: &Limits,
    mut visit: impl FnMut(&Entry, &mut dyn Read) -> Result<(), E>,
) -> Result<u64, E> {
    let guard = TarGuard::new(tar, layer, limits);
    let broken = Rc::clone(&guard.broken);
    let mut archive = tar::Archive::new(guard);
    // A limit the guard saw is reported as itself, not as the parse error it caused.
    let tar_err = |source| {
        broken.borrow_mut().take().unwrap_or_else(|| Error::Tar {
            layer: layer.to_owned(),
            source,
        })
    };
    let mut count = 0;
    let mut raw_entries = 0u64;
    for item in archive.entries().map_err(tar_err)? {
        let mut tar_entry = item.map_err(tar_err)?;
        raw_entries += 1;
        if raw_entries > limits.max_entries_per_layer {
            return Err(Error::TooManyEntries {
                layer: layer.to_owned(),
                limit: limits.max_entries_per_layer,
            }
            .into());
        }
        let parsed = parse_entry(&mut tar_entry, layer, classify_whiteouts, limits)?;
        let Some((entry, sparse)) = parsed else {
            continue;
        };
        count += 1;
        match sparse {
            None => visit(&entry, &mut tar_entry)?,
            Some(layout) => {
                let mut reader = SparseReader::new(&mut tar_entry, layout, layer, &entry)?;
                visit(&entry, &mut reader)?;
            }
        }
    }
    Ok(count)
}

/// How a PAX sparse file's data is laid out.
struct SparseLayout {
    /// (offset, length) pairs, or `None` when the map precedes the data (format 1.0).
    segments: Option<Vec<(u64, u64)>>,
    real_size: u64,
}

/// An archive name for a message about its length: its first 200 bytes.
fn shown_name(raw_name: &[u8]) -> String {
    const SHOWN: usize = 200;
    if raw_name.len() <= SHOWN {
        return String::from_utf8_lossy(raw_name).into_owned();
    }
    format!("{}...", String::from_utf8_lossy(&raw_name[..SHOWN]))
}

/// Normalises an archive name (the entry's own, or a hardlink's target) under the limits.
fn normalise_entry_name(
    name: &[u8],
    layer: &str,
    raw_name: &[u8],
    what: &'static str,
    limits: &Limits,
) -> Result<EntryPath, Error> {
    EntryPath::normalise_limited(name, limits.max_name_bytes, limits.max_path_bytes).map_err(
        |problem| match problem {
            PathProblem::Invalid(reason) if what == "path" => invalid(layer, raw_name, reason),
            PathProblem::Invalid(reason) => invalid(layer, raw_name, format!("{what}: {reason}")),
            PathProblem::NameTooLong(length) => Error::NameTooLong {
                layer: layer.to_owned(),
                entry: shown_name(raw_name),
                what,
                length,
                limit: limits.max_name_bytes,
            },
            PathProblem::PathTooLong(length) => Error::PathTooLong {
                layer: layer.to_owned(),
                entry: shown_name(raw_name),
                what,
                length,
                limit: limits.max_path_bytes,
            },
        },
    )
}

fn invalid(layer: &str, raw_name: &[u8], reason: impl Into<String>) -> Error {
    Error::InvalidEntry {
        layer: layer.to_owned(),
        entry: String::from_utf8_lossy(raw_name).into_owned(),
        reason: reason.into(),
    }
}

fn parse_decimal(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// Parses a PAX time (`123`, `123.456`, `-1.5`).
fn parse_pax_time(value: &[u8]) -> Option<Timestamp> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = whole.parse().ok()?;
    let mut nanos: u32 = 0;
    for (i, digit) in fraction.bytes().take(9).enumerate() {
        nanos += u32::from(digit - b'0') * 10u32.pow(8 - i as u32);
    }
    if !negative {
        return Some(Timestamp { secs, nanos });
    }
    // -1.5 is 1.5 s before the epoch: secs -2, nanos 500_000_000.
    if nanos == 0 {
        Some(Timestamp { secs: -secs, nanos })
    } else {
        Some(Timestamp {
            secs: -secs - 1,
            nanos: 1_000_000_000 - nanos,
        })
    }
}

fn percent_decode(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'%' {
            let hex = std::str::from_utf8(text.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Standard base64, padded or not (libarchive writes xattr values without padding).
fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine;
    let end = text.iter().rposition(|&c| c != b'=').map_or(0, |i| i + 1);
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(&text[..end])
        .ok()
}

/// Turns a tar entry into a normalised entry; `None` for entries that carry no file (PAX global
/// headers).
fn parse_entry<R: Read>(
    tar_entry: &mut tar::Entry<'_, R>,
    layer: &str,
    classify_whiteouts: bool,
    limits: &Limits,
) -> Result<Option<(Entry, Option<SparseLayout>)>, Error> {
    let entry_type = tar_entry.header().entry_type();
    if entry_type.is_pax_global_extensions() {
        return Ok(None);
    }
    let mut raw_name = tar_entry.path_bytes().into_owned();
    let link_name = tar_entry.link_name_bytes().map(|c| c.into_owned());
    let header = tar_entry.header();
    // An empty numeric field reads as 0, as Go's and GNU tar's readers do.
    let numeric = |value: io::Result<u64>, field: &[u8], what: &str| -> Result<u64, Error> {
        match value {
            Ok(v) => Ok(v),
            Err(_) if field.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
            Err(e) => Err(invalid(layer, &raw_name, format!("bad {what}: {e}"))),
        }
    };
    let old = header.as_old();
    let mode = numeric(header.mode().map(u64::from), &old.mode, "mode")? as u32 & 0o7777;
    let uid = numeric(header.uid(), &old.uid, "uid")?;
    let gid = numeric(header.gid(), &old.gid, "gid")?;
    let header_mtime = numeric(header.mtime(), &old.mtime, "mtime")?;
    let mut mtime = Timestamp {
        secs: i64::try_from(header_mtime).unwrap_or(i64::MAX),
        nanos: 0,
    };
    let device = |which: io::Result<Option<u32>>, raw_name: &[u8]| -> Result<u32, Error> {
        match which {
            Ok(Some(n)) => Ok(n),
            Ok(None) => Ok(0),
            Err(e) => Err(invalid(layer, raw_name, format!("bad device number: {e}"))),
        }
    };
    let kind_from_type = match entry_type {
        tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
            // Old (v7) archives mark directories with a trailing slash on a regular entry.
            if raw_name.ends_with(b"/") && entry_type == tar::EntryType::Regular {
                EntryKind::Directory
            } else {
                EntryKind::File
            }
        }
        tar::EntryType::Directory => EntryKind::Directory,
        tar::EntryType::Symlink => EntryKind::Symlink(link_name.clone().unwrap_or_default()),
        tar::EntryType::Link => EntryKind::Hardlink(EntryPath::root()),
        tar::EntryType::Char => EntryKind::CharDevice {
            major: device(header.device_major(), &raw_name)?,
            minor: device(header.device_minor(), &raw_name)?,
        },
        tar::EntryType::Block => EntryKind::BlockDevice {
            major: device(header.device_major(), &raw_name)?,
            minor: device(header.device_minor(), &raw_name)?,
        },
        tar::EntryType::Fifo => EntryKind::Fifo,
        other => {
            return Err(invalid(
                layer,
                &raw_name,
                format!("unsupported tar entry type {:?}", other.as_byte() as char),
            ));
        }
    };
    let mut size = tar_entry.size();
    let mut xattrs = Vec::new();
    let mut sparse_major: Option<u64> = None;
    let mut sparse_name: Option<Vec<u8>> = None;
    let mut sparse_real_size: Option<u64> = None;
    let mut sparse_map: Option<Vec<u8>> = None;
    let mut sparse_pairs: Vec<u64> = Vec::new();
    if let Some(extensions) = tar_entry.pax_extensions().map_err(|source| Error::Tar {
        layer: layer.to_owned(),
        source,
    })? {
        for extension in extensions {
            let extension = extension.map_err(|source| Error::Tar {
                layer: layer.to_owned(),
                source,
            })?;
            let key = extension.key_bytes();
            let value = extension.value_bytes();
            if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                xattrs.push(Xattr {
                    name: name.to_vec(),
                    value: value.to_vec(),
                });
            } else if let Some(encoded) = key.strip_prefix(b"LIBARCHIVE.xattr.") {
                // bsdtar: the name %-encoded, the value base64.
                let (Some(name), Some(value)) = (percent_decode(encoded), base64_decode(value))
                else {
                    return Err(invalid(layer, &raw_name, "bad LIBARCHIVE.xattr record"));
                };
                if !xattrs.iter().any(|x: &Xattr| x.name == name) {
                    xattrs.push(Xattr { name, value });
                }
            } else if key == b"mtime" {
                mtime = parse_pax_time(value)
                    .ok_or_else(|| invalid(layer, &raw_name, "bad PAX mtime"))?;
            } else if key == b"GNU.sparse.major" {
                sparse_major = parse_decimal(value);
            } else if key == b"GNU.sparse.name" {
                sparse_name = Some(value.to_vec());
            } else if key == b"GNU.sparse.realsize" || key == b"GNU.sparse.size" {
                sparse_real_size = parse_decimal(value);
            } else if key == b"GNU.sparse.map" {
                sparse_map = Some(value.to_vec());
            } else if key == b"GNU.sparse.offset" || key == b"GNU.sparse.numbytes" {
                if sparse_pairs.len() >= 2 * MAX_SPARSE_SEGMENTS {
                    return Err(invalid(layer, &raw_name, "too many sparse segments"));
                }
                sparse_pairs.push(
                    parse_decimal(value)
                        .ok_or_else(|| invalid(layer, &raw_name, "bad sparse segment"))?,
                );
            }
        }
    }
    let mut sparse = None;
    if sparse_real_size.is_some() || sparse_major.is_some() || sparse_map.is_some() {
        let Some(real_size) = sparse_real_size else {
            return Err(invalid(
                layer,
                &raw_name,
                "PAX sparse file without its real size",
            ));
        };
        if let Some(name) = sparse_name {
            raw_name = name;
        }
        let segments = if sparse_major == Some(1) {
            None
        } else {
            let numbers = match sparse_map {
                Some(map) => {
                    let mut numbers = Vec::new();
                    for part in map.split(|&b| b == b',').filter(|p| !p.is_empty()) {
                        if numbers.len() >= 2 * MAX_SPARSE_SEGMENTS {
                            return Err(invalid(layer, &raw_name, "too many sparse segments"));
                        }
                        numbers.push(
                            parse_decimal(part)
                                .ok_or_else(|| invalid(layer, &raw_name, "bad sparse map"))?,
                        );
                    }
                    numbers
                }
                None => sparse_pairs,
            };
            if numbers.len() % 2 != 0 {
                return Err(invalid(layer, &raw_name, "odd number of sparse map values"));
            }
            Some(numbers.chunks(2).map(|p| (p[0], p[1])).collect())
        };
        size = real_size;
        sparse = Some(SparseLayout {
            segments,
            real_size,
        });
    }

    let unsafe_path = normalise_entry_name(&raw_name, layer, &raw_name, "path", limits)?;
    let kind = match kind_from_type {
        EntryKind::Symlink(target) if target.len() > limits.max_path_bytes => {
            // symlink(2) itself refuses targets of PATH_MAX bytes and more.
            return Err(Error::PathTooLong {
                layer: layer.to_owned(),
                entry: shown_name(&raw_name),
                what: "symlink target",
                length: target.len(),
                limit: limits.max_path_bytes,
            });
        }
        EntryKind::Hardlink(_) => {
            let target = link_name.unwrap_or_default();
            let target_path =
                normalise_entry_name(&target, layer, &raw_name, "hardlink target", limits)?;
            if target_path.is_root() {
                return Err(invalid(layer, &raw_name, "hardlink to the root"));
            }
            EntryKind::Hardlink(target_path)
        }
        other => other,
    };
    if !matches!(kind, EntryKind::File) {
        size = 0;
    }
    let (path, kind) = if classify_whiteouts {
        classify_whiteout(unsafe_path, kind, layer, &raw_name)?
    } else {
        (unsafe_path, kind)
    };
    if path.is_root() && !matches!(kind, EntryKind::Directory | EntryKind::OpaqueWhiteout) {
        // CVE-2021-29136: a symlink named `.` would replace the root itself.
        return Err(invalid(
            layer,
            &raw_name,
            "a non-directory entry for the root",
        ));
    }
    Ok(Some((
        Entry {
            path,
            raw_name,
            kind,
            mode,
            uid,
            gid,
            mtime,
            size,
            xattrs,
        },
        sparse,
    )))
}

/// Recognises whiteout names (by base name, whatever the entry's type).
fn classify_whiteout(
    path: EntryPath,
    kind: EntryKind,
    layer: &str,
    raw_name: &[u8],
) -> Result<(EntryPath, EntryKind), Error> {
    if path.components().any(|c| c.starts_with(b".wh..wh.")) {
        if path.file_name() == b".wh..wh..opq" {
            if path
                .parent()
                .components()
                .any(|c| c.starts_with(b".wh..wh."))
            {
                return Ok((path, EntryKind::AufsMetadata));
            }
            return Ok((path.parent(), EntryKind::OpaqueWhiteout));
        }
        return Ok((path, EntryKind::AufsMetadata));
    }
    let name = path.file_name();
    if let Some(hidden) = name.strip_prefix(b".wh.") {
        if hidden.is_empty() {
            return Err(invalid(layer, raw_name, "bare `.wh.` whiteout"));
        }
        if hidden == b"." || hidden == b".." {
            return Err(invalid(layer, raw_name, "whiteout of `.` or `..`"));
        }
        let hidden = hidden.to_vec();
        return Ok((path.parent().join(&hidden), EntryKind::Whiteout));
    }
    if path.components().any(|c| c.starts_with(b".wh.")) {
        return Err(invalid(layer, raw_name, "a path below a whiteout name"));
    }
    Ok((path, kind))
}

/// Size of a tar block.
const BLOCK: usize = 512;

/// Where the guard is in the tar stream.
enum GuardState {
    /// Collecting the header block that starts at `offset`.
    Header,
    /// Collecting a GNU sparse extension block; `data` bytes of entry data follow the last one.
    SparseExtension { data: u64 },
    /// Passing `remaining` bytes of entry data (with padding); a PAX record's data is kept in
    /// `record` (up to `keep` bytes) to learn the `size` it gives the next entry.
    Data {
        remaining: u64,
        keep: u64,
        record: Option<Vec<u8>>,
    },
    /// After the end-of-archive block, or once the stream is malformed (the tar parser reports
    /// that itself): bytes pass unchecked.
    Done,
}

/// Walks the tar stream's header blocks the way the `tar` crate does and refuses an extension
/// record (PAX `x`, GNU `L`/`K`) larger than the limit before the parser buffers it: the parser
/// reads such records whole into memory, so an 8 GiB PAX header from a few MiB of gzip would
/// otherwise be held in RAM.
struct TarGuard<R> {
    inner: R,
    layer: String,
    max_record: u64,
    state: GuardState,
    /// The header block being collected (or a sparse extension block).
    block: Vec<u8>,
    /// Offset of the next byte in the uncompressed stream.
    offset: u64,
    /// The `size` a preceding PAX header gives the next entry (as the parser applies it).
    pax_size: Option<u64>,
    /// The limit error, once broken; shared with [`read_entries_limited`].
    broken: Rc<RefCell<Option<Error>>>,
}

impl<R: Read> TarGuard<R> {
    fn new(inner: R, layer: &str, limits: &Limits) -> Self {
        TarGuard {
            inner,
            layer: layer.to_owned(),
            max_record: limits.max_pax_header_bytes,
            state: GuardState::Header,
            block: Vec::with_capacity(BLOCK),
            offset: 0,
            pax_size: None,
            broken: Rc::new(RefCell::new(None)),
        }
    }

    /// Follows `bytes`, which the parser is about to receive.
    fn observe(&mut self, mut bytes: &[u8]) -> Result<(), Error> {
        while !bytes.is_empty() {
            match &mut self.state {
                GuardState::Done => return Ok(()),
                GuardState::Header | GuardState::SparseExtension { .. } => {
                    let take = (BLOCK - self.block.len()).min(bytes.len());
                    self.block.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    self.offset += take as u64;
                    if self.block.len() == BLOCK {
                        self.state = match self.state {
                            GuardState::SparseExtension { data } => {
                                self.sparse_extension_block(data)
                            }
                            _ => self.header_block()?,
                        };
                        self.block.clear();
                    }
                }
                GuardState::Data {
                    remaining,
                    keep,
                    record,
                } => {
                    let take = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len());
                    if let Some(record) = record {
                        let kept = usize::try_from(*keep).unwrap_or(usize::MAX).min(take);
                        record.extend_from_slice(&bytes[..kept]);
                        *keep -= kept as u64;
                    }
                    *remaining -= take as u64;
                    bytes = &bytes[take..];
                    self.offset += take as u64;
                    if *remaining == 0 {
                        if let Some(record) = record.take() {
                            self.pax_size = pax_size_value(&record);
                        }
                        self.state = GuardState::Header;
                    }
                }
            }
        }
        Ok(())
    }

    /// The state after a complete header block.
    fn header_block(&mut self) -> Result<GuardState, Error> {
        let header_offset = self.offset - BLOCK as u64;
        if self.block.iter().all(|&b| b == 0) {
            return Ok(GuardState::Done);
        }
        let header = tar::Header::from_byte_slice(&self.block);
        let sum: u32 = self.block[..148]
            .iter()
            .chain(&self.block[156..])
            .map(|&b| u32::from(b))
            .sum::<u32>()
            + 8 * 32;
        if header.cksum().ok() != Some(sum) {
            return Ok(GuardState::Done);
        }
        let entry_type = header.entry_type();
        let is_extension = entry_type.is_gnu_longname()
            || entry_type.is_gnu_longlink()
            || entry_type.is_pax_local_extensions()
            || entry_type.is_pax_global_extensions();
        let size = match self.pax_size.filter(|_| !is_extension) {
            Some(size) => size,
            None => match header.entry_size() {
                Ok(size) => size,
                Err(_) => return Ok(GuardState::Done),
            },
        };
        let Some(padded) = size
            .checked_add(BLOCK as u64 - 1)
            .map(|s| s & !(BLOCK as u64 - 1))
        else {
            return Ok(GuardState::Done);
        };
        let recognised = header.as_gnu().is_some() || header.as_ustar().is_some();
        let buffered_kind = if !recognised {
            None
        } else if entry_type.is_pax_local_extensions() {
            Some("PAX extended header")
        } else if entry_type.is_gnu_longname() {
            Some("GNU long name")
        } else if entry_type.is_gnu_longlink() {
            Some("GNU long link")
        } else {
            None
        };
        if let Some(kind) = buffered_kind {
            if size > self.max_record {
                return Err(Error::ExtensionHeaderTooLarge {
                    layer: self.layer.clone(),
                    kind,
                    header: shown_name(&header.path_bytes()),
                    offset: header_offset,
                    size,
                    limit: self.max_record,
                });
            }
            if !entry_type.is_pax_local_extensions() {
                return Ok(Self::data(padded, 0, None));
            }
            if size == 0 {
                // An empty PAX record gives no size.
                self.pax_size = None;
                return Ok(GuardState::Header);
            }
            let record = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            return Ok(Self::data(padded, size, Some(record)));
        }
        // The entry the PAX header described: its size is used up.
        self.pax_size = None;
        let extended =
            entry_type.is_gnu_sparse() && header.as_gnu().is_some_and(|g| g.is_extended());
        if extended {
            return Ok(GuardState::SparseExtension { data: padded });
        }
        Ok(Self::data(padded, 0, None))
    }

    /// The state after a GNU sparse extension block (its flag byte says whether another follows).
    fn sparse_extension_block(&self, data: u64) -> GuardState {
        if self.block[504] == 1 {
            GuardState::SparseExtension { data }
        } else {
            Self::data(data, 0, None)
        }
    }

    fn data(remaining: u64, keep: u64, record: Option<Vec<u8>>) -> GuardState {
        if remaining == 0 {
            return GuardState::Header;
        }
        GuardState::Data {
            remaining,
            keep,
            record,
        }
    }
}

/// The `size` record of a PAX header, read as the `tar` crate reads it (the first `size` key; a
/// malformed record or value gives none).
fn pax_size_value(record: &[u8]) -> Option<u64> {
    for extension in tar::PaxExtensions::new(record) {
        let extension = extension.ok()?;
        if extension.key() != Ok("size") {
            continue;
        }
        return extension.value().ok()?.parse().ok();
    }
    None
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(error) = self.broken.borrow().as_ref() {
            return Err(io::Error::other(error.to_string()));
        }
        let n = self.inner.read(buf)?;
        if let Err(error) = self.observe(&buf[..n]) {
            let message = error.to_string();
            *self.broken.borrow_mut() = Some(error);
            return Err(io::Error::other(message));
        }
        Ok(n)
    }
}

/// Reconstructs a PAX sparse file's logical content (holes read as zeros).
struct SparseReader<'a> {
    inner: &'a mut dyn Read,
    segments: Vec<(u64, u64)>,
    index: usize,
    pos: u64,
    real_size: u64,
}

impl<'a> SparseReader<'a> {
    fn new(
        inner: &'a mut dyn Read,
        layout: SparseLayout,
        layer: &str,
        entry: &Entry,
    ) -> Result<Self, Error> {
        let bad = |reason: &str| invalid(layer, &entry.raw_name, reason);
        let segments = match layout.segments {
            Some(s) => s,
            None => {
                // Format 1.0: decimal numbers, one a line, then padding to 512 bytes.
                let mut consumed = 0u64;
                let mut read_number = |consumed: &mut u64| -> Result<u64, Error> {
                    let mut digits = Vec::new();
                    loop {
                        let mut byte = [0u8; 1];
                        inner
                            .read_exact(&mut byte)
                            .map_err(|_| bad("truncated sparse map"))?;
                        *consumed += 1;
                        if byte[0] == b'\n' {
                            break;
                        }
                        if digits.len() > 20 {
                            return Err(bad("bad sparse map"));
                        }
                        digits.push(byte[0]);
                    }
                    parse_decimal(&digits).ok_or_else(|| bad("bad sparse map"))
                };
                let count = read_number(&mut consumed)?;
                if count > MAX_SPARSE_SEGMENTS as u64 {
                    return Err(bad("too many sparse segments"));
                }
                let mut segments = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    let offset = read_number(&mut consumed)?;
                    let length = read_number(&mut consumed)?;
                    segments.push((offset, length));
                }
                let padding = (512 - consumed % 512) % 512;
                io::copy(&mut (&mut *inner).take(padding), &mut io::sink())
                    .map_err(|_| bad("truncated sparse map"))?;
                segments
            }
        };
        let mut end = 0u64;
        for &(offset, length) in &segments {
            let segment_end = offset
                .checked_add(length)
                .ok_or_else(|| bad("bad sparse map"))?;
            if offset < end || segment_end > layout.real_size {
                return Err(bad("overlapping or out-of-range sparse segments"));
            }
            end = segment_end;
        }
        Ok(SparseReader {
            inner,
            segments,
            index: 0,
            pos: 0,
            real_size: layout.real_size,
        })
    }
}

impl Read for SparseReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.index < self.segments.len() {
            let (offset, length) = self.segments[self.index];
            if self.pos < offset {
                let n = buf
                    .len()
                    .min(usize::try_from(offset - self.pos).unwrap_or(usize::MAX));
                buf[..n].fill(0);
                self.pos += n as u64;
                return Ok(n);
            }
            let end = offset + length;
            if self.pos < end {
                let want = buf
                    .len()
                    .min(usize::try_from(end - self.pos).unwrap_or(usize::MAX));
                let n = self.inner.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "sparse file data ends early",
                    ));
                }
                self.pos += n as u64;
                return Ok(n);
            }
            self.index += 1;
        }
        if self.pos < self.real_size {
            let n = buf
                .len()
                .min(usize::try_from(self.real_size - self.pos).unwrap_or(usize::MAX));
            buf[..n].fill(0);
            self.pos += n as u64;
            return Ok(n);
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Layer;

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

    #[test]
    fn pax_times_parse_with_fractions_and_signs() {
        type Case<'a> = (&'a [u8], Option<(i64, u32)>);
        let cases: &[Case] = &[
            (b"0", Some((0, 0))),
            (b"12.5", Some((12, 500_000_000))),
            (b"-1.5", Some((-2, 500_000_000))),
            (b"-3", Some((-3, 0))),
            (b"1.1234567891", Some((1, 123_456_789))),
            (b"x", None),
            (b"1.x", None),
            (b"", None),
        ];
        for (raw, expected) in cases {
            let got = parse_pax_time(raw).map(|t| (t.secs, t.nanos));
            assert_eq!(got, *expected, "{:?}", String::from_utf8_lossy(raw));
        }
    }

    fn kinds(layer: Vec<u8>) -> Result<Vec<(String, EntryKind)>, Error> {
        let mut out = Vec::new();
        read_entries(&layer[..], "l", |e, _| {
            out.push((e.path.to_string(), e.kind.clone()));
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn whiteout_names_are_recognised_by_base_name_whatever_the_type() {
        let got = kinds(
            Layer::new()
                .whiteout("a/.wh.b")
                .dir("a/.wh..wh..opq")
                .symlink(".wh.c", "/x")
                .whiteout(".wh..wh.aufs")
                .file(".wh..wh.plnk/1.2", b"")
                .bytes(),
        )
        .expect("parse");
        assert_eq!(
            got,
            [
                ("a/b".to_owned(), EntryKind::Whiteout),
                ("a".to_owned(), EntryKind::OpaqueWhiteout),
                ("c".to_owned(), EntryKind::Whiteout),
                (".wh..wh.aufs".to_owned(), EntryKind::AufsMetadata),
                (".wh..wh.plnk/1.2".to_owned(), EntryKind::AufsMetadata),
            ]
        );
    }

    #[test]
    fn a_name_below_a_whiteout_name_is_refused() {
        let err = kinds(Layer::new().file(".wh.x/y", b"").bytes()).expect_err("refused");
        assert!(matches!(err, Error::InvalidEntry { .. }));
    }

    #[test]
    fn a_truncated_tar_is_a_tar_error() {
        let mut layer = Layer::new().file("f", &[7u8; 2000]).bytes();
        layer.truncate(1024);
        let err = read_entries(&layer[..], "l", |_, data| {
            io::copy(data, &mut io::sink())
                .map(|_| ())
                .map_err(|source| Error::Tar {
                    layer: "l".into(),
                    source,
                })
        })
        .expect_err("truncated");
        assert!(matches!(err, Error::Tar { .. }), "{err}");
    }

    /// A ustar header block of the given type, name and announced size (no data follows).
    fn raw_header(name: &str, kind: tar::EntryType, size: u64) -> Vec<u8> {
        let mut h = tar::Header::new_ustar();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(size);
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    /// Counts the bytes a reader hands out.
    struct Counting<R> {
        inner: R,
        read: u64,
    }

    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read += n as u64;
            Ok(n)
        }
    }

    fn drain(tar: &[u8], limits: &Limits) -> Result<u64, Error> {
        read_entries_with_limits(tar, "layer-l", limits, |_, data| {
            io::copy(data, &mut io::sink())
                .map(|_| ())
                .map_err(|source| Error::Tar {
                    layer: "layer-l".into(),
                    source,
                })
        })
    }

    #[test]
    fn a_layer_with_more_entries_than_the_limit_is_refused_naming_it() {
        let mut layer = Layer::new();
        for i in 0..11 {
            layer.file(&format!("f{i}"), b"x");
        }
        let tar = layer.bytes();
        let limits = Limits::new().max_entries_per_layer(10);
        let err = drain(&tar, &limits).expect_err("11 entries, limit 10");
        assert!(
            matches!(err, Error::TooManyEntries { ref layer, limit: 10 } if layer == "layer-l"),
            "{err:?}"
        );
        assert!(err.to_string().contains("layer-l"), "{err}");
        let limits = Limits::new().max_entries_per_layer(11);
        assert_eq!(drain(&tar, &limits).expect("11 entries, limit 11"), 11);
    }

    #[test]
    fn a_huge_pax_header_is_refused_before_it_is_read() {
        // An 8 GiB PAX header: the parser would try to hold all of it in memory.
        let mut stream = raw_header("././@PaxHeader", tar::EntryType::XHeader, 8 << 30);
        stream.extend_from_slice(&[b'9'; 4096]);
        let mut reader = Counting {
            inner: io::Read::chain(&stream[..], io::repeat(b'1')),
            read: 0,
        };
        let err = read_entries(&mut reader, "layer-p", |_, _| Ok(())).expect_err("refused");
        let Error::ExtensionHeaderTooLarge {
            layer,
            kind,
            header,
            offset,
            size,
            limit,
        } = &err
        else {
            panic!("unexpected error {err:?}");
        };
        assert_eq!(
            (
                layer.as_str(),
                *kind,
                header.as_str(),
                *offset,
                *size,
                *limit
            ),
            (
                "layer-p",
                "PAX extended header",
                "././@PaxHeader",
                0,
                8 << 30,
                crate::DEFAULT_MAX_PAX_HEADER_BYTES
            )
        );
        assert!(reader.read < 64 * 1024, "read {} bytes", reader.read);
    }

    #[test]
    fn a_pax_header_over_a_lowered_limit_is_refused_and_one_under_it_passes() {
        let value = vec![b'v'; 2000];
        let tar = Layer::new()
            .file_with(
                b"f",
                b"data",
                0o644,
                0,
                0,
                &[("SCHILY.xattr.user.big", &value)],
            )
            .bytes();
        let err = drain(&tar, &Limits::new().max_pax_header_bytes(1000)).expect_err("refused");
        assert!(
            matches!(err, Error::ExtensionHeaderTooLarge { limit: 1000, size, .. } if size > 2000),
            "{err:?}"
        );
        assert_eq!(drain(&tar, &Limits::new()).expect("default limit"), 1);
    }

    #[test]
    fn a_huge_gnu_long_name_is_refused_before_it_is_read() {
        let mut stream = raw_header("././@LongLink", tar::EntryType::GNULongName, 1 << 30);
        stream.extend_from_slice(&[b'a'; 1024]);
        let err = read_entries(&stream[..], "layer-g", |_, _| Ok(())).expect_err("refused");
        assert!(
            matches!(err, Error::ExtensionHeaderTooLarge { kind: "GNU long name", size, .. } if size == 1 << 30),
            "{err:?}"
        );
    }

    #[test]
    fn the_guard_follows_pax_sizes_and_finds_a_later_huge_header() {
        // A file whose size comes from its PAX record (the header says 0), then a huge PAX
        // header: the guard must skip exactly the PAX-sized data to see the second header.
        let mut layer = Layer::new();
        let data = vec![7u8; 1500];
        layer.file_with(b"sized", &data, 0o644, 0, 0, &[]);
        let mut tar = layer.bytes();
        // Rewrite: PAX `size=1500` record, then the header with size 0.
        let file_header = tar[..512].to_vec();
        let mut stream = Vec::new();
        let record = b"13 size=1500\n";
        stream.extend(raw_header(
            "./PaxHeaders/sized",
            tar::EntryType::XHeader,
            record.len() as u64,
        ));
        let mut body = record.to_vec();
        body.resize(512, 0);
        stream.extend(body);
        let mut h = tar::Header::from_byte_slice(&file_header).clone();
        h.set_size(0);
        h.set_cksum();
        stream.extend_from_slice(h.as_bytes());
        stream.extend_from_slice(&tar[512..512 + 1536]);
        stream.extend(raw_header(
            "././@PaxHeader",
            tar::EntryType::XHeader,
            4 << 20,
        ));
        stream.extend_from_slice(&[b'8'; 1024]);
        tar.clear();
        let mut sizes = Vec::new();
        let err = read_entries(&stream[..], "layer-s", |e, data| {
            sizes.push(e.size);
            io::copy(data, &mut io::sink())
                .map(|_| ())
                .map_err(|source| Error::Tar {
                    layer: "layer-s".into(),
                    source,
                })
        })
        .expect_err("second header refused");
        assert_eq!(sizes, [1500]);
        assert!(
            matches!(err, Error::ExtensionHeaderTooLarge { offset, .. } if offset == 512 * 2 + 512 + 1536),
            "{err:?}"
        );
    }

    #[test]
    fn an_overlong_path_is_refused_with_its_length_and_the_limit() {
        let long = "d/".repeat(2100) + "f";
        let tar = Layer::new().file(&long, b"").bytes();
        let err = drain(&tar, &Limits::new()).expect_err("refused");
        assert!(
            matches!(err, Error::PathTooLong { what: "path", length: 4201, limit: 4095, ref entry, .. } if entry.len() < 300),
            "{err:?}"
        );
        // Raised, the same path passes.
        assert_eq!(
            drain(&tar, &Limits::new().max_path_bytes(8192)).expect("raised"),
            1
        );
    }

    #[test]
    fn an_overlong_name_component_is_refused() {
        let name = "a/".to_owned() + &"n".repeat(256);
        let tar = Layer::new().file(&name, b"").bytes();
        let err = drain(&tar, &Limits::new()).expect_err("refused");
        assert!(
            matches!(
                err,
                Error::NameTooLong {
                    what: "path",
                    length: 256,
                    limit: 255,
                    ..
                }
            ),
            "{err:?}"
        );
        let tar = Layer::new().hardlink("h", &name).bytes();
        let err = drain(&tar, &Limits::new()).expect_err("refused");
        assert!(
            matches!(
                err,
                Error::NameTooLong {
                    what: "hardlink target",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn an_overlong_symlink_target_is_refused() {
        let target = "t".repeat(5000);
        let tar = Layer::new().symlink("s", &target).bytes();
        let err = drain(&tar, &Limits::new()).expect_err("refused");
        assert!(
            matches!(
                err,
                Error::PathTooLong {
                    what: "symlink target",
                    length: 5000,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_realistic_layer_passes_the_default_limits() {
        // Long names through PAX and GNU, xattrs, a PAX size record, many entries, a hardlink,
        // a deep path close to the limits.
        let deep = format!("{}/{}", "d".repeat(200), "e/".repeat(1800)) + &"n".repeat(255);
        let mut layer = Layer::new();
        layer
            .dir("usr")
            .file_with(
                b"usr/bin/ping",
                b"\x7fELF",
                0o755,
                0,
                0,
                &[("SCHILY.xattr.security.capability", &[1u8; 20])],
            )
            .file(&deep, b"deep")
            .symlink("usr/lib64", "lib")
            .hardlink("usr/bin/ping6", "usr/bin/ping");
        for i in 0..5000 {
            layer.file(&format!("usr/share/doc/pkg{i}/copyright"), b"GPL");
        }
        let mut tar = layer.bytes();
        let mut gnu = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        gnu.append_data(&mut h, "g/".repeat(100) + "x", &b"gnu"[..])
            .expect("gnu long name");
        let gnu = gnu.into_inner().expect("gnu");
        // Both archives' entries in one stream: drop the first's end blocks.
        tar.truncate(tar.len() - 1024);
        tar.extend(gnu);
        assert_eq!(drain(&tar, &Limits::new()).expect("passes"), 5006);
    }
}
