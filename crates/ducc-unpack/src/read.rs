//! The tar reader: every entry of a stream through the same steps (header fields, PAX records,
//! name checks under the limits, whiteout names) into an [`Entry`].

use std::io::{self, Read};
use std::rc::Rc;

use crate::entry::{Entry, EntryKind, EntryPath, PathProblem, Timestamp};
use crate::error::Error;
use crate::limits::{Limits, TarGuard};
use crate::records::{PaxRecords, SparseLayout, SparseReader};

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
#[cfg(test)]
pub(crate) fn read_entries<R: Read>(
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
#[cfg(test)]
pub(crate) fn read_entries_with_limits<R: Read>(
    tar: R,
    layer: &str,
    limits: &Limits,
    visit: impl FnMut(&Entry, &mut dyn Read) -> Result<(), Error>,
) -> Result<u64, Error> {
    read_entries_limited(tar, layer, true, limits, visit)
}

/// [`read_entries`], with whiteout names recognised or (`classify_whiteouts == false`, for
/// verbatim extraction) left as the plain entries they are.
#[cfg(test)]
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
    /// [`Error::Tar`] for a malformed stream, [`Error::InvalidEntry`] for an entry that cannot be
    /// normalised (a `..` component, a bare `.wh.`, an unsupported type, ...), a limit error
    /// ([`Error::TooManyEntries`], [`Error::ExtensionHeaderTooLarge`], [`Error::PathTooLong`],
    /// [`Error::NameTooLong`]), each converted into `visit`'s error type, or whatever `visit`
    /// returns.
    pub fn read<R: Read, E: From<Error>>(
        &self,
        tar: R,
        layer: &str,
        visit: impl FnMut(&Entry, &mut dyn Read) -> Result<(), E>,
    ) -> Result<u64, E> {
        read_entries_limited(tar, layer, !self.verbatim, &self.limits, visit)
    }
}

/// `read_entries_with` (test builds) under the given limits.
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

/// An archive name for a message about its length: its first 200 bytes.
pub(crate) fn shown_name(raw_name: &[u8]) -> String {
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

pub(crate) fn invalid(layer: &str, raw_name: &[u8], reason: impl Into<String>) -> Error {
    Error::InvalidEntry {
        layer: layer.to_owned(),
        entry: String::from_utf8_lossy(raw_name).into_owned(),
        reason: reason.into(),
    }
}

/// Turns a tar entry into a normalised entry; `None` for entries that carry no file (PAX global
/// headers). The steps, in order: the header's own fields, its type, its PAX records (which may
/// give the real name of a sparse file), the name under the limits, the link target, whiteout
/// names.
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
    let fields = HeaderFields::read(tar_entry.header(), layer, &raw_name)?;
    let kind = kind_of(tar_entry.header(), link_name.as_deref(), layer, &raw_name)?;
    let mut size = tar_entry.size();
    let mut records = PaxRecords::read(tar_entry, layer, &raw_name)?;
    let mtime = records.mtime.unwrap_or(fields.mtime);
    let xattrs = std::mem::take(&mut records.xattrs);
    let sparse = records.sparse_layout(layer, &mut raw_name)?;
    if let Some(layout) = &sparse {
        size = layout.real_size;
    }
    let unsafe_path = normalise_entry_name(&raw_name, layer, &raw_name, "path", limits)?;
    let kind = link_target(kind, link_name, layer, &raw_name, limits)?;
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
            mode: fields.mode,
            uid: fields.uid,
            gid: fields.gid,
            mtime,
            size,
            xattrs,
        },
        sparse,
    )))
}

/// The numeric fields of a header (PAX records may give a finer time).
struct HeaderFields {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: Timestamp,
}

impl HeaderFields {
    fn read(header: &tar::Header, layer: &str, raw_name: &[u8]) -> Result<Self, Error> {
        // An empty numeric field reads as 0, as Go's and GNU tar's readers do.
        let numeric = |value: io::Result<u64>, field: &[u8], what: &str| -> Result<u64, Error> {
            match value {
                Ok(v) => Ok(v),
                Err(_) if field.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
                Err(e) => Err(invalid(layer, raw_name, format!("bad {what}: {e}"))),
            }
        };
        let old = header.as_old();
        let mode = numeric(header.mode().map(u64::from), &old.mode, "mode")? as u32 & 0o7777;
        let uid = numeric(header.uid(), &old.uid, "uid")?;
        let gid = numeric(header.gid(), &old.gid, "gid")?;
        let mtime = numeric(header.mtime(), &old.mtime, "mtime")?;
        Ok(HeaderFields {
            mode,
            uid,
            gid,
            mtime: Timestamp {
                secs: i64::try_from(mtime).unwrap_or(i64::MAX),
                nanos: 0,
            },
        })
    }
}

/// What the header's type says the entry is (a hardlink's target comes later, normalised).
fn kind_of(
    header: &tar::Header,
    link_name: Option<&[u8]>,
    layer: &str,
    raw_name: &[u8],
) -> Result<EntryKind, Error> {
    let device = |which: io::Result<Option<u32>>| -> Result<u32, Error> {
        match which {
            Ok(Some(n)) => Ok(n),
            Ok(None) => Ok(0),
            Err(e) => Err(invalid(layer, raw_name, format!("bad device number: {e}"))),
        }
    };
    let entry_type = header.entry_type();
    Ok(match entry_type {
        tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
            // Old (v7) archives mark directories with a trailing slash on a regular entry.
            if raw_name.ends_with(b"/") && entry_type == tar::EntryType::Regular {
                EntryKind::Directory
            } else {
                EntryKind::File
            }
        }
        tar::EntryType::Directory => EntryKind::Directory,
        tar::EntryType::Symlink => EntryKind::Symlink(link_name.unwrap_or_default().to_vec()),
        tar::EntryType::Link => EntryKind::Hardlink(EntryPath::root()),
        tar::EntryType::Char => EntryKind::CharDevice {
            major: device(header.device_major())?,
            minor: device(header.device_minor())?,
        },
        tar::EntryType::Block => EntryKind::BlockDevice {
            major: device(header.device_major())?,
            minor: device(header.device_minor())?,
        },
        tar::EntryType::Fifo => EntryKind::Fifo,
        other => {
            return Err(invalid(
                layer,
                raw_name,
                format!("unsupported tar entry type {:?}", other.as_byte() as char),
            ));
        }
    })
}

/// Checks a symlink's target against the limit and normalises a hardlink's.
fn link_target(
    kind: EntryKind,
    link_name: Option<Vec<u8>>,
    layer: &str,
    raw_name: &[u8],
    limits: &Limits,
) -> Result<EntryKind, Error> {
    match kind {
        EntryKind::Symlink(target) if target.len() > limits.max_path_bytes => {
            // symlink(2) itself refuses targets of PATH_MAX bytes and more.
            Err(Error::PathTooLong {
                layer: layer.to_owned(),
                entry: shown_name(raw_name),
                what: "symlink target",
                length: target.len(),
                limit: limits.max_path_bytes,
            })
        }
        EntryKind::Hardlink(_) => {
            let target = link_name.unwrap_or_default();
            let target_path =
                normalise_entry_name(&target, layer, raw_name, "hardlink target", limits)?;
            if target_path.is_root() {
                return Err(invalid(layer, raw_name, "hardlink to the root"));
            }
            Ok(EntryKind::Hardlink(target_path))
        }
        other => Ok(other),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Layer;

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
