//! File-system helpers of the applier that know nothing of its state: names, times, file types,
//! lexical symlink resolution, directory listing and data copies.

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{Dir, FileType, Stat, Timespec, Timestamps};
use rustix::io::Errno;

use crate::entry::{EntryPath, Timestamp};

/// Size of the buffer file data is copied through.
pub(super) const COPY_BUFFER: usize = 256 * 1024;

/// A directory's default ACL: new inodes in it take their mode from it, not from the umask.
pub(super) const DEFAULT_ACL: &str = "system.posix_acl_default";

pub(super) fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))
}

fn timespec(t: Timestamp) -> Timespec {
    Timespec {
        tv_sec: t.secs,
        tv_nsec: i64::from(t.nanos.min(999_999_999)),
    }
}

pub(super) fn timestamps(t: Timestamp) -> Timestamps {
    Timestamps {
        last_access: timespec(t),
        last_modification: timespec(t),
    }
}

pub(super) fn file_type(stat: &Stat) -> FileType {
    FileType::from_raw_mode(stat.st_mode)
}

pub(super) fn is_whiteout_device(stat: &Stat) -> bool {
    file_type(stat) == FileType::CharacterDevice && stat.st_rdev == 0
}

/// Splits a normalised path into parent bytes and final component.
pub(super) fn split(path: &EntryPath) -> (&[u8], &[u8]) {
    (path.parent_bytes(), path.file_name())
}

/// Lexically resolves `target` (a symlink's target, found at `link_dir/...`) to a root-relative
/// path, clamping `..` at the root as the kernel's `RESOLVE_IN_ROOT` does.
pub(super) fn resolve_lexically(link_dir: &[u8], target: &[u8]) -> Vec<Vec<u8>> {
    let mut parts: Vec<Vec<u8>> = Vec::new();
    if !target.starts_with(b"/") {
        for c in link_dir.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            parts.push(c.to_vec());
        }
    }
    for c in target.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c.to_vec()),
        }
    }
    parts
}

/// The names in a directory opened for reading, without `.` and `..`.
pub(super) fn list_dir(dir: &OwnedFd) -> Result<Vec<CString>, Errno> {
    let mut names = Vec::new();
    for item in Dir::read_from(dir)? {
        let item = item?;
        let name = item.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        names.push(name.to_owned());
    }
    Ok(names)
}

/// Which side of a data copy failed.
pub(super) enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

pub(super) fn copy_data(
    data: &mut dyn Read,
    out: &mut std::fs::File,
    buffer: &mut [u8],
) -> Result<u64, CopyError> {
    let mut total = 0u64;
    loop {
        let n = match data.read(buffer) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        out.write_all(&buffer[..n]).map_err(CopyError::Write)?;
        total += n as u64;
    }
}

/// Copies the first `len` bytes of `source` (from its start, whatever its offset) to the end of
/// `out`: in the kernel with `copy_file_range` (no copy through user space, shared extents where
/// the filesystem has them), through `buffer` where the kernel cannot.
pub(super) fn copy_file(
    source: &std::fs::File,
    out: &mut std::fs::File,
    len: u64,
    buffer: &mut [u8],
) -> io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut offset = 0u64;
    while offset < len {
        let want = usize::try_from(len - offset).unwrap_or(usize::MAX);
        match rustix::fs::copy_file_range(source, Some(&mut offset), &*out, None, want) {
            Ok(0) => break,
            Ok(_) => {}
            Err(Errno::INTR) => {}
            // Across filesystems, or where the kernel has no such copy: through user space.
            Err(Errno::XDEV | Errno::NOSYS | Errno::INVAL | Errno::OPNOTSUPP) => {
                while offset < len {
                    let want = buffer
                        .len()
                        .min(usize::try_from(len - offset).unwrap_or(usize::MAX));
                    let n = match source.read_at(&mut buffer[..want], offset) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    };
                    out.write_all(&buffer[..n])?;
                    offset += n as u64;
                }
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(offset)
}

/// Whether `dest` is an empty directory without a default ACL.
pub(super) fn tree_without_default_acls(dest: &Path) -> bool {
    let empty = std::fs::read_dir(dest).is_ok_and(|mut entries| entries.next().is_none());
    empty
        && matches!(
            rustix::fs::getxattr(dest, DEFAULT_ACL, &mut [0u8; 0][..]),
            Err(Errno::NODATA | Errno::NOTSUP)
        )
}

/// The process umask, from `/proc/self/status` (reading it with `umask(2)` would change it for
/// a moment under the other threads).
pub(super) fn process_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}
