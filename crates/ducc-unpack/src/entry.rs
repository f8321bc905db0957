//! The normalised entry model over a layer tar, and its parser.

use std::fmt;
use std::io::{self, Read};

use crate::error::Error;

/// Longest path component accepted (Linux `NAME_MAX`).
const NAME_MAX: usize = 255;
/// Longest path accepted (Linux `PATH_MAX` less the terminating NUL).
const PATH_MAX: usize = 4095;
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
        if unsafe_name.contains(&0) {
            return Err("name contains a NUL byte".to_owned());
        }
        let mut out = Vec::with_capacity(unsafe_name.len());
        for component in unsafe_name.split(|&b| b == b'/') {
            match component {
                b"" | b"." => {}
                b".." => return Err("name has a `..` component".to_owned()),
                c => {
                    // A whiteout of a 255-byte name is longer, and is never created as such.
                    let limit = if c.starts_with(b".wh.") {
                        NAME_MAX + 4
                    } else {
                        NAME_MAX
                    };
                    if c.len() > limit {
                        return Err(format!(
                            "a name component is {} bytes long, more than {NAME_MAX}",
                            c.len()
                        ));
                    }
                    if !out.is_empty() {
                        out.push(b'/');
                    }
                    out.extend_from_slice(c);
                }
            }
        }
        if out.len() > PATH_MAX {
            return Err(format!(
                "name is {} bytes long, more than {PATH_MAX}",
                out.len()
            ));
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
/// `layer` names the layer in errors.
///
/// # Errors
/// [`Error::Tar`] for a malformed stream, [`Error::InvalidEntry`] for an entry that cannot be
/// normalised (a `..` component, a bare `.wh.`, an unsupported type, ...), or whatever `visit`
/// returns.
pub fn read_entries<R: Read>(
    tar: R,
    layer: &str,
    visit: impl FnMut(&Entry, &mut dyn Read) -> Result<(), Error>,
) -> Result<u64, Error> {
    read_entries_with(tar, layer, true, visit)
}

/// [`read_entries`], with whiteout names recognised or (`classify_whiteouts == false`, for
/// verbatim extraction) left as the plain entries they are.
pub(crate) fn read_entries_with<R: Read>(
    tar: R,
    layer: &str,
    classify_whiteouts: bool,
    mut visit: impl FnMut(&Entry, &mut dyn Read) -> Result<(), Error>,
) -> Result<u64, Error> {
    let mut archive = tar::Archive::new(tar);
    let tar_err = |source| Error::Tar {
        layer: layer.to_owned(),
        source,
    };
    let mut count = 0;
    for item in archive.entries().map_err(tar_err)? {
        let mut tar_entry = item.map_err(tar_err)?;
        let parsed = parse_entry(&mut tar_entry, layer, classify_whiteouts)?;
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

    let unsafe_path = EntryPath::normalise(&raw_name).map_err(|r| invalid(layer, &raw_name, r))?;
    let kind = match kind_from_type {
        EntryKind::Hardlink(_) => {
            let target = link_name.unwrap_or_default();
            let target_path = EntryPath::normalise(&target)
                .map_err(|r| invalid(layer, &raw_name, format!("hardlink target: {r}")))?;
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
}
