//! Tar output: the canonical writer's machinery and the directory-tree reader.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::ffi::CString;
use std::hash::BuildHasher;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::entry::{Entry, EntryKind, EntryPath, Timestamp, Xattr};
use crate::error::Error;
use crate::options::WhiteoutFormat;
use crate::root::Root;
use crate::writer::{TarSummary, TarWriteOptions};

/// Largest value the 12-byte octal size field holds.
const MAX_OCTAL_SIZE: u64 = 0o77777777777;
/// Largest value the 8-byte octal id fields hold.
const MAX_OCTAL_ID: u64 = 0o7777777;

/// Counts the bytes going to the sink.
struct Counting<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Kinds remembered per written path (for the parent and hardlink rules).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Written {
    Directory,
    Other,
}

pub(crate) struct TarOut<W: Write> {
    builder: tar::Builder<Counting<W>>,
    whiteouts: WhiteoutFormat,
    summary: TarSummary,
    written: HashMap<u128, Written>,
    k1: RandomState,
    k2: RandomState,
}

impl<W: Write> TarOut<W> {
    pub(crate) fn new(out: W, whiteouts: WhiteoutFormat) -> Self {
        let mut builder = tar::Builder::new(Counting {
            inner: out,
            count: 0,
        });
        builder.mode(tar::HeaderMode::Complete);
        TarOut {
            builder,
            whiteouts,
            summary: TarSummary::default(),
            written: HashMap::new(),
            k1: RandomState::new(),
            k2: RandomState::new(),
        }
    }

    fn key(&self, path: &[u8]) -> u128 {
        (u128::from(self.k1.hash_one(path)) << 64) | u128::from(self.k2.hash_one(path))
    }

    fn rule(path: &EntryPath, reason: impl Into<String>) -> Error {
        Error::CanonicalTar {
            path: path.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn append(&mut self, entry: &Entry, data: &mut dyn Read) -> Result<(), Error> {
        // Whiteouts take the form the writer was asked for.
        let converted;
        let entry = match (&entry.kind, self.whiteouts) {
            (EntryKind::Whiteout, WhiteoutFormat::Overlay | WhiteoutFormat::OverlayDevices) => {
                converted = Entry {
                    kind: EntryKind::CharDevice { major: 0, minor: 0 },
                    size: 0,
                    ..entry.clone()
                };
                &converted
            }
            (EntryKind::Whiteout, WhiteoutFormat::Oci) => {
                let mut marker = b".wh.".to_vec();
                marker.extend_from_slice(entry.path.file_name());
                converted = Entry {
                    path: entry.path.parent().join(&marker),
                    kind: EntryKind::File,
                    size: 0,
                    ..entry.clone()
                };
                &converted
            }
            (EntryKind::OpaqueWhiteout, WhiteoutFormat::Oci) => {
                converted = Entry {
                    path: entry.path.join(b".wh..wh..opq"),
                    kind: EntryKind::File,
                    size: 0,
                    ..entry.clone()
                };
                &converted
            }
            (EntryKind::OpaqueWhiteout, WhiteoutFormat::Overlay) => {
                return Err(Self::rule(
                    &entry.path,
                    "in overlay form an opaque directory is the trusted.overlay.opaque xattr of its directory entry",
                ));
            }
            (EntryKind::OpaqueWhiteout, WhiteoutFormat::OverlayDevices) => {
                return Err(Self::rule(
                    &entry.path,
                    "in overlay form without xattrs an opaque directory is whiteout devices for what the stack below holds, which a stream does not know",
                ));
            }
            (EntryKind::AufsMetadata, _) => {
                return Err(Self::rule(
                    &entry.path,
                    "AUFS metadata has no place in a canonical stream",
                ));
            }
            _ => entry,
        };
        let path = &entry.path;
        if path.is_root() {
            return Err(Self::rule(path, "the root itself is not written"));
        }
        let key = self.key(path.as_bytes());
        if self.written.contains_key(&key) {
            return Err(Self::rule(path, "written twice"));
        }
        let parent = path.parent_bytes();
        if !parent.is_empty() && self.written.get(&self.key(parent)) != Some(&Written::Directory) {
            return Err(Self::rule(
                path,
                "its parent directory was not written before it",
            ));
        }
        if let EntryKind::Hardlink(target) = &entry.kind {
            match self.written.get(&self.key(target.as_bytes())) {
                Some(Written::Other) => {}
                Some(Written::Directory) => {
                    return Err(Self::rule(
                        path,
                        format!("hardlink to the directory {target}"),
                    ));
                }
                None => {
                    return Err(Self::rule(
                        path,
                        format!("hardlink target {target} was not written before it"),
                    ));
                }
            }
        }
        self.write_entry(entry, data)?;
        let kind = if entry.kind == EntryKind::Directory {
            Written::Directory
        } else {
            Written::Other
        };
        self.written.insert(key, kind);
        self.summary.entries += 1;
        if entry.kind == EntryKind::File {
            self.summary.file_bytes += entry.size;
        }
        Ok(())
    }

    fn write_entry(&mut self, entry: &Entry, data: &mut dyn Read) -> Result<(), Error> {
        let path = &entry.path;
        let write_err = |source| Error::TarWrite {
            path: path.to_string(),
            source,
        };
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let mut header = tar::Header::new_ustar();
        let mut name = path.as_bytes().to_vec();
        if entry.kind == EntryKind::Directory {
            name.push(b'/');
        }
        set_name_field(&mut header.as_old_mut().name, &name, "path", &mut pax);
        let (entry_type, size) = match &entry.kind {
            EntryKind::File => (tar::EntryType::Regular, entry.size),
            EntryKind::Directory => (tar::EntryType::Directory, 0),
            EntryKind::Symlink(target) => {
                set_name_field(
                    &mut header.as_old_mut().linkname,
                    target,
                    "linkpath",
                    &mut pax,
                );
                (tar::EntryType::Symlink, 0)
            }
            EntryKind::Hardlink(target) => {
                set_name_field(
                    &mut header.as_old_mut().linkname,
                    target.as_bytes(),
                    "linkpath",
                    &mut pax,
                );
                (tar::EntryType::Link, 0)
            }
            EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
                let set = header
                    .set_device_major(*major)
                    .and_then(|()| header.set_device_minor(*minor));
                if set.is_err() {
                    return Err(Self::rule(path, "device number too large for a tar header"));
                }
                let t = if matches!(entry.kind, EntryKind::CharDevice { .. }) {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                };
                (t, 0)
            }
            EntryKind::Fifo => (tar::EntryType::Fifo, 0),
            EntryKind::Whiteout | EntryKind::OpaqueWhiteout | EntryKind::AufsMetadata => {
                return Err(Self::rule(path, "unconverted whiteout"));
            }
        };
        header.set_entry_type(entry_type);
        header.set_mode(entry.mode & 0o7777);
        if entry.uid > MAX_OCTAL_ID {
            pax.push(("uid".to_owned(), entry.uid.to_string().into_bytes()));
        } else {
            header.set_uid(entry.uid);
        }
        if entry.gid > MAX_OCTAL_ID {
            pax.push(("gid".to_owned(), entry.gid.to_string().into_bytes()));
        } else {
            header.set_gid(entry.gid);
        }
        if size > MAX_OCTAL_SIZE {
            pax.push(("size".to_owned(), size.to_string().into_bytes()));
        } else {
            header.set_size(size);
        }
        let Timestamp { secs, nanos } = entry.mtime;
        header.set_mtime(u64::try_from(secs).unwrap_or(0).min(MAX_OCTAL_SIZE));
        if secs < 0 || nanos != 0 || u64::try_from(secs).is_ok_and(|s| s > MAX_OCTAL_SIZE) {
            pax.push((
                "mtime".to_owned(),
                format_pax_time(entry.mtime).into_bytes(),
            ));
        }
        for Xattr { name, value } in &entry.xattrs {
            let Ok(name) = std::str::from_utf8(name) else {
                return Err(Self::rule(path, "xattr name is not UTF-8"));
            };
            pax.push((format!("SCHILY.xattr.{name}"), value.clone()));
        }
        if !pax.is_empty() {
            self.builder
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(write_err)?;
        }
        header.set_cksum();
        if entry_type == tar::EntryType::Regular {
            let mut limited = ExactReader {
                inner: data,
                remaining: size,
            };
            self.builder
                .append(&header, &mut limited)
                .map_err(write_err)?;
            if limited.remaining != 0 {
                return Err(write_err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file data shorter than its size",
                )));
            }
        } else {
            self.builder
                .append(&header, io::empty())
                .map_err(write_err)?;
        }
        Ok(())
    }

    pub(crate) fn summary(&self) -> TarSummary {
        TarSummary {
            tar_bytes: self.builder.get_ref().count,
            ..self.summary
        }
    }

    pub(crate) fn finish(self) -> Result<W, Error> {
        let counting = self
            .builder
            .into_inner()
            .map_err(|source| Error::TarWrite {
                path: "end of archive".to_owned(),
                source,
            })?;
        Ok(counting.inner)
    }

    fn finish_with_summary(self) -> Result<(W, TarSummary), Error> {
        let mut summary = self.summary;
        let counting = self
            .builder
            .into_inner()
            .map_err(|source| Error::TarWrite {
                path: "end of archive".to_owned(),
                source,
            })?;
        summary.tar_bytes = counting.count;
        Ok((counting.inner, summary))
    }
}

/// Yields at most `remaining` bytes and errors if the source ends before that.
struct ExactReader<'a> {
    inner: &'a mut dyn Read,
    remaining: u64,
}

impl Read for ExactReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file data shorter than its size",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Puts a name into a fixed header field, or into a PAX record when it does not fit.
fn set_name_field(field: &mut [u8], name: &[u8], pax_key: &str, pax: &mut Vec<(String, Vec<u8>)>) {
    field.fill(0);
    if name.len() <= field.len() {
        field[..name.len()].copy_from_slice(name);
    } else {
        // A readable truncated stand-in for readers that ignore PAX.
        let cut = field.len();
        field.copy_from_slice(&name[..cut]);
        pax.push((pax_key.to_owned(), name.to_vec()));
    }
}

fn format_pax_time(t: Timestamp) -> String {
    if t.secs >= 0 {
        if t.nanos == 0 {
            t.secs.to_string()
        } else {
            format!("{}.{:09}", t.secs, t.nanos)
        }
    } else if t.nanos == 0 {
        t.secs.to_string()
    } else {
        // secs -2, nanos 500_000_000 is -1.5.
        format!("-{}.{:09}", -(t.secs + 1), 1_000_000_000 - t.nanos)
    }
}

/// Reads the tree below `dir` and writes it as a canonical tar.
pub(crate) fn write_tree<W: Write>(
    dir: &Path,
    out: W,
    options: &TarWriteOptions,
) -> Result<(W, TarSummary), Error> {
    let io_err = |op, e: Errno| Error::DestinationIo {
        path: dir.to_owned(),
        op,
        source: e.into(),
    };
    // Children are opened by name from their parent's fd: a tree that changes underneath
    // cannot lead the walk outside it.
    let root = Root::open_following(dir)
        .and_then(|root| root.reopen(OFlags::RDONLY | OFlags::DIRECTORY))
        .map_err(|e| io_err("open tree", e))?;
    let mut walker = TreeWalker {
        out: TarOut::new(out, options.whiteouts.unwrap_or(WhiteoutFormat::Overlay)),
        convert: options.whiteouts,
        links: HashMap::new(),
        dir,
    };
    walker.walk(&root, &EntryPath::root())?;
    walker.out.finish_with_summary()
}

struct TreeWalker<'a, W: Write> {
    out: TarOut<W>,
    convert: Option<WhiteoutFormat>,
    /// First path of each multiply-linked inode.
    links: HashMap<(u64, u64), EntryPath>,
    dir: &'a Path,
}

impl<W: Write> TreeWalker<'_, W> {
    fn io_err(&self, path: &EntryPath, op: &'static str, e: impl Into<io::Error>) -> Error {
        Error::DestinationIo {
            path: self.dir.join(
                <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(path.as_bytes()),
            ),
            op,
            source: e.into(),
        }
    }

    /// Writes the children of the open directory `dir` (at `path`), sorted bytewise.
    fn walk(&mut self, dir: &OwnedFd, path: &EntryPath) -> Result<(), Error> {
        let mut names = Vec::new();
        for item in Dir::read_from(dir).map_err(|e| self.io_err(path, "list directory", e))? {
            let item = item.map_err(|e| self.io_err(path, "list directory", e))?;
            let name = item.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(name.to_vec());
            }
        }
        names.sort_unstable();
        for name in &names {
            let child = path.join(name);
            let cname = CString::new(name.as_slice())
                .map_err(|_| self.io_err(&child, "name", Errno::INVAL))?;
            let stat = rustix::fs::statat(dir, &cname, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| self.io_err(&child, "stat", e))?;
            let kind = FileType::from_raw_mode(stat.st_mode);
            if self.convert == Some(WhiteoutFormat::Overlay) && kind == FileType::RegularFile {
                if name.as_slice() == b".wh..wh..opq" {
                    // Written as the xattr of the directory, with its header.
                    continue;
                }
                if let Some(hidden) = name.strip_prefix(b".wh.")
                    && !hidden.is_empty()
                {
                    if names.iter().any(|n| n.as_slice() == hidden) {
                        // This layer's own entry already hides the lower one.
                        continue;
                    }
                    let entry = self.entry_from_stat(
                        &path.join(hidden),
                        EntryKind::Whiteout,
                        &stat,
                        Vec::new(),
                    );
                    self.out.append(&entry, &mut io::empty())?;
                    continue;
                }
            }
            match kind {
                FileType::Directory => {
                    let sub = rustix::fs::openat(
                        dir,
                        &cname,
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| self.io_err(&child, "open directory", e))?;
                    let mut xattrs = fd_xattrs(&sub);
                    let mut opaque = false;
                    match self.convert {
                        Some(WhiteoutFormat::Oci) => {
                            let before = xattrs.len();
                            xattrs.retain(|x| {
                                x.name != b"trusted.overlay.opaque"
                                    && x.name != b"user.overlay.opaque"
                            });
                            opaque = xattrs.len() != before;
                        }
                        // Opaque when it holds an opaque marker, or when this layer also whites
                        // out the lower directory of the same name.
                        Some(WhiteoutFormat::Overlay)
                            if (rustix::fs::statat(
                                &sub,
                                c".wh..wh..opq",
                                AtFlags::SYMLINK_NOFOLLOW,
                            )
                            .is_ok()
                                || names
                                    .iter()
                                    .any(|n| n.strip_prefix(b".wh.") == Some(name.as_slice())))
                                && !xattrs.iter().any(|x| x.name == b"trusted.overlay.opaque") =>
                        {
                            xattrs.push(Xattr {
                                name: b"trusted.overlay.opaque".to_vec(),
                                value: b"y".to_vec(),
                            });
                        }
                        _ => {}
                    }
                    let entry = self.entry_from_stat(&child, EntryKind::Directory, &stat, xattrs);
                    self.out.append(&entry, &mut io::empty())?;
                    if opaque {
                        let marker = Entry {
                            kind: EntryKind::OpaqueWhiteout,
                            xattrs: Vec::new(),
                            mode: 0o644,
                            ..entry
                        };
                        self.out.append(&marker, &mut io::empty())?;
                    }
                    self.walk(&sub, &child)?;
                }
                FileType::RegularFile => {
                    let file = rustix::fs::openat(
                        dir,
                        &cname,
                        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| self.io_err(&child, "open file", e))?;
                    if stat.st_nlink > 1 {
                        let key = (stat.st_dev, stat.st_ino);
                        if let Some(first) = self.links.get(&key) {
                            let entry = self.entry_from_stat(
                                &child,
                                EntryKind::Hardlink(first.clone()),
                                &stat,
                                Vec::new(),
                            );
                            self.out.append(&entry, &mut io::empty())?;
                            continue;
                        }
                        self.links.insert(key, child.clone());
                    }
                    let xattrs = fd_xattrs(&file);
                    let entry = self.entry_from_stat(&child, EntryKind::File, &stat, xattrs);
                    let mut reader =
                        io::BufReader::with_capacity(64 * 1024, std::fs::File::from(file));
                    self.out.append(&entry, &mut reader)?;
                }
                FileType::Symlink => {
                    let target = rustix::fs::readlinkat(dir, &cname, Vec::new())
                        .map_err(|e| self.io_err(&child, "read symlink", e))?;
                    let xattrs = path_xattrs(dir, &cname);
                    let entry = self.entry_from_stat(
                        &child,
                        EntryKind::Symlink(target.into_bytes()),
                        &stat,
                        xattrs,
                    );
                    self.out.append(&entry, &mut io::empty())?;
                }
                FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo => {
                    let major = rustix::fs::major(stat.st_rdev);
                    let minor = rustix::fs::minor(stat.st_rdev);
                    let kind = match kind {
                        FileType::CharacterDevice
                            if stat.st_rdev == 0 && self.convert == Some(WhiteoutFormat::Oci) =>
                        {
                            EntryKind::Whiteout
                        }
                        FileType::CharacterDevice => EntryKind::CharDevice { major, minor },
                        FileType::BlockDevice => EntryKind::BlockDevice { major, minor },
                        _ => EntryKind::Fifo,
                    };
                    let xattrs = if kind == EntryKind::Whiteout {
                        Vec::new()
                    } else {
                        path_xattrs(dir, &cname)
                    };
                    let entry = self.entry_from_stat(&child, kind, &stat, xattrs);
                    self.out.append(&entry, &mut io::empty())?;
                }
                _ => {
                    tracing::info!(path = %child, "skipping a socket or unknown file type");
                }
            }
        }
        Ok(())
    }

    fn entry_from_stat(
        &self,
        path: &EntryPath,
        kind: EntryKind,
        stat: &Stat,
        xattrs: Vec<Xattr>,
    ) -> Entry {
        let size = if kind == EntryKind::File {
            u64::try_from(stat.st_size).unwrap_or(0)
        } else {
            0
        };
        Entry {
            path: path.clone(),
            raw_name: path.as_bytes().to_vec(),
            kind,
            mode: stat.st_mode & 0o7777,
            uid: u64::from(stat.st_uid),
            gid: u64::from(stat.st_gid),
            mtime: Timestamp::mtime_of(stat),
            size,
            xattrs,
        }
    }
}

/// Every xattr of an open file or directory, sorted by name.
pub(crate) fn fd_xattrs(fd: &OwnedFd) -> Vec<Xattr> {
    let mut out = Vec::new();
    let Ok(size) = rustix::fs::flistxattr_query(fd) else {
        return out;
    };
    if size == 0 {
        return out;
    }
    let mut names = vec![0u8; size];
    let Ok(n) = rustix::fs::flistxattr(fd, &mut names[..]) else {
        return out;
    };
    names.truncate(n);
    // A flat file's source tag is ducc's own bookkeeping, never part of the tree's content.
    let ours = |n: &[u8]| n == crate::SOURCE_XATTR.as_bytes();
    for name in names
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty() && !ours(n))
    {
        let Ok(cname) = CString::new(name) else {
            continue;
        };
        let Ok(len) = rustix::fs::fgetxattr_query(fd, &cname) else {
            continue;
        };
        let mut value = vec![0u8; len];
        if let Ok(n) = rustix::fs::fgetxattr(fd, &cname, &mut value[..]) {
            value.truncate(n);
            out.push(Xattr {
                name: name.to_vec(),
                value,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Every xattr of a symlink or device, read without following it, sorted by name.
fn path_xattrs(dir: &OwnedFd, name: &CString) -> Vec<Xattr> {
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(name.as_bytes());
    let Ok(path) = CString::new(path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let Ok(size) = rustix::fs::llistxattr_query(&path) else {
        return out;
    };
    if size == 0 {
        return out;
    }
    let mut names = vec![0u8; size];
    let Ok(n) = rustix::fs::llistxattr(&path, &mut names[..]) else {
        return out;
    };
    names.truncate(n);
    for xname in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let Ok(cname) = CString::new(xname) else {
            continue;
        };
        let Ok(len) = rustix::fs::lgetxattr_query(&path, &cname) else {
            continue;
        };
        let mut value = vec![0u8; len];
        if let Ok(n) = rustix::fs::lgetxattr(&path, &cname, &mut value[..]) {
            value.truncate(n);
            out.push(Xattr {
                name: xname.to_vec(),
                value,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
