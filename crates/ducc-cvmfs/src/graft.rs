//! Writing a tree through a mounted repository (`/cvmfs/REPO` in a `cvmfs_server transaction`),
//! its regular files as CernVM-FS graft files where they are layer files already stored.
//!
//! A graft file is an empty placeholder `NAME` plus a marker `.cvmfsgraft-NAME` holding
//! `size=`, `checksum=` and `compression=` of an object in the repository's storage: at
//! `publish` the server enters the file with that object's hash instead of reading, hashing and
//! compressing its bytes again (reference: cvmfs-flat-without-rehash.md, scenarios 5-12). The
//! object is read back from the repository itself: the layer file the flat file came from (its
//! source tag, see `ducc_unpack::file_source`) is looked up under `.layers/<hh>/<hex>/layerfs`
//! through the mount, and its magic xattrs `user.hash`, `user.compression` and `user.chunks`
//! (readable by name although not listed) name the object. A graft never names an object this
//! repository did not publish, and every marker carries `size=` (a marker without it panics the
//! publish: scenario 9). A file without a tag, one whose layer file is not there as a regular
//! file of the same size behind real directories, a chunked one, or one whose xattrs cannot be
//! read goes in as a real file: right, only hashed once more.
//!
//! Owners, modes and times are set through the union as the tree has them, parents are created
//! before their children and directories get their metadata last (deepest first), since
//! writing into a directory changes its time. Hardlinks are written as separate files (the
//! server splits them anyway: scenario 9).

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps};

use crate::error::{PublishError, io_err};
use crate::layout::{CATALOG_MARKER, Layout, RepoPath};

/// The prefix of a graft marker's name.
pub(crate) const GRAFT_PREFIX: &str = ".cvmfsgraft-";

/// What a mounted write stored how.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GraftReport {
    /// Regular files published as grafts of stored objects.
    pub(crate) grafted: u64,
    /// Regular files (not empty) written with their content.
    pub(crate) stored: u64,
}

/// An object of the repository's storage, as a graft marker names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Graft {
    size: u64,
    checksum: String,
    compression: &'static str,
}

impl Graft {
    /// The marker's text: every key the server needs, `size=` first.
    fn marker(&self) -> String {
        format!(
            "size={}\nchecksum={}\ncompression={}\n",
            self.size, self.checksum, self.compression
        )
    }
}

/// Whether `hash` is a content hash as cvmfs prints it: hex digits, optionally a `-suffix`
/// naming the algorithm (`-rmd160`, `-shake128`).
fn valid_checksum(hash: &str) -> bool {
    let (hex, suffix) = hash.split_once('-').unwrap_or((hash, ""));
    hex.len() >= 40
        && hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        && suffix.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A magic xattr of a file under the mount, read by name without following a final symlink.
fn magic_xattr(path: &Path, name: &str) -> Option<String> {
    let mut buffer = [0u8; 256];
    let len = rustix::fs::lgetxattr(path, name, &mut buffer).ok()?;
    let text = std::str::from_utf8(&buffer[..len]).ok()?;
    Some(text.trim_end_matches(['\0', '\n']).to_owned())
}

/// Writes trees, files and symlinks through the mounted repository.
pub(crate) struct MountWriter<'a> {
    /// `/cvmfs/REPO`.
    pub(crate) mount_root: &'a Path,
    pub(crate) layout: &'a Layout,
}

impl MountWriter<'_> {
    fn mount(&self, path: &RepoPath) -> PathBuf {
        self.mount_root.join(path.as_path())
    }

    /// The stored object the flat file `local` of `size` bytes can be grafted onto, if any.
    pub(crate) fn graft_for(&self, local: &Path, size: u64) -> Option<Graft> {
        let source = ducc_unpack::file_source(local)?;
        let layer: ducc_oci::LayerDigest = source.layer.parse().ok()?;
        let mut path = self.mount(&self.layout.layerfs(&layer));
        let mut components = source.path.components().peekable();
        while let Some(component) = components.next() {
            path.push(component);
            let meta = fs::symlink_metadata(&path).ok()?;
            let last = components.peek().is_none();
            // Real directories only: a symlink on the way could lead anywhere.
            if (!last && !meta.is_dir()) || (last && (!meta.is_file() || meta.len() != size)) {
                return None;
            }
        }
        let checksum = magic_xattr(&path, "user.hash")?;
        let compression = match magic_xattr(&path, "user.compression")?.as_str() {
            "zlib" => "zlib",
            "none" => "none",
            _ => return None,
        };
        // A chunked file would need its chunk list in the marker: stored as content instead.
        if magic_xattr(&path, "user.chunks").is_some_and(|c| c != "1") {
            return None;
        }
        valid_checksum(&checksum).then_some(Graft {
            size,
            checksum,
            compression,
        })
    }

    /// Writes the tree in the local directory `local` at `dir` (which must not exist), creating
    /// missing parents 0755 root-owned; with `catalog` it becomes a nested catalog.
    pub(crate) fn write_tree(
        &self,
        local: &Path,
        dir: &RepoPath,
        catalog: bool,
        report: &mut GraftReport,
    ) -> Result<(), PublishError> {
        if let Some(parent) = dir.parent() {
            self.make_parents(&parent)?;
        }
        let dest = self.mount(dir);
        fs::create_dir(&dest).map_err(io_err("create", dest.as_path()))?;
        self.write_dir_contents(local, &dest, report)?;
        let marker = dest.join(CATALOG_MARKER);
        if catalog && fs::symlink_metadata(&marker).is_err() {
            File::create(&marker).map_err(io_err("create", marker.as_path()))?;
        }
        let meta = fs::symlink_metadata(local).map_err(io_err("inspect", local))?;
        set_metadata(&dest, &meta)
    }

    fn write_dir_contents(
        &self,
        local: &Path,
        dest: &Path,
        report: &mut GraftReport,
    ) -> Result<(), PublishError> {
        let mut names: Vec<_> = fs::read_dir(local)
            .map_err(io_err("list", local))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io_err("list", local))?;
        names.sort();
        for name in names {
            let from = local.join(&name);
            let to = dest.join(&name);
            let meta = fs::symlink_metadata(&from).map_err(io_err("inspect", from.as_path()))?;
            let kind = meta.file_type();
            if kind.is_dir() {
                fs::create_dir(&to).map_err(io_err("create", to.as_path()))?;
                self.write_dir_contents(&from, &to, report)?;
            } else if kind.is_symlink() {
                let target = fs::read_link(&from).map_err(io_err("read", from.as_path()))?;
                std::os::unix::fs::symlink(&target, &to).map_err(io_err("create", to.as_path()))?;
            } else if kind.is_file() {
                self.write_file(&from, &to, &name, meta.len(), report)?;
            } else {
                let file_type = FileType::from_raw_mode(meta.mode());
                if matches!(file_type, FileType::Socket | FileType::Unknown) {
                    tracing::warn!(path = %from.display(), "a socket in a tree is not published");
                    continue;
                }
                rustix::fs::mknodat(
                    CWD,
                    &to,
                    file_type,
                    Mode::from_raw_mode(meta.mode() & 0o7777),
                    meta.rdev(),
                )
                .map_err(|e| io_err("create", to.as_path())(e.into()))?;
            }
            set_metadata(&to, &meta)?;
        }
        Ok(())
    }

    fn write_file(
        &self,
        from: &Path,
        to: &Path,
        name: &OsStr,
        size: u64,
        report: &mut GraftReport,
    ) -> Result<(), PublishError> {
        if size > 0
            && let Some(graft) = self.graft_for(from, size)
        {
            File::create(to).map_err(io_err("create", to))?;
            let mut marker_name = GRAFT_PREFIX.as_bytes().to_vec();
            marker_name.extend_from_slice(name.as_bytes());
            let marker = to.with_file_name(OsStr::from_bytes(&marker_name));
            fs::write(&marker, graft.marker()).map_err(io_err("write", marker.as_path()))?;
            report.grafted += 1;
            return Ok(());
        }
        let mut input = File::open(from).map_err(io_err("read", from))?;
        let mut output = File::create(to).map_err(io_err("create", to))?;
        io::copy(&mut input, &mut output).map_err(io_err("write", to))?;
        output.flush().map_err(io_err("write", to))?;
        if size > 0 {
            report.stored += 1;
        }
        Ok(())
    }

    /// Creates the missing directories down to `dir`, 0755 root-owned.
    fn make_parents(&self, dir: &RepoPath) -> Result<(), PublishError> {
        let mut chain = dir.ancestors();
        chain.push(dir.clone());
        for d in chain.iter().filter(|d| !d.is_root()) {
            let path = self.mount(d);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => continue,
                Ok(_) => return Err(PublishError::NotADirectory { path: d.clone() }),
                Err(_) => {
                    fs::create_dir(&path).map_err(io_err("create", path.as_path()))?;
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                        .map_err(io_err("set the mode of", path.as_path()))?;
                }
            }
        }
        Ok(())
    }

    /// A small file (mode 0644, root-owned) at `path`, replacing a file or symlink there.
    pub(crate) fn write_leaf_file(
        &self,
        path: &RepoPath,
        content: &Path,
    ) -> Result<(), PublishError> {
        let to = self.prepare_leaf(path)?;
        fs::copy(content, &to).map_err(io_err("write", to.as_path()))?;
        fs::set_permissions(&to, fs::Permissions::from_mode(0o644))
            .map_err(io_err("set the mode of", to.as_path()))?;
        chown(&to, 0, 0)
    }

    /// A symlink at `path`, replacing a file or symlink there.
    pub(crate) fn write_leaf_symlink(
        &self,
        path: &RepoPath,
        target: &Path,
    ) -> Result<(), PublishError> {
        let to = self.prepare_leaf(path)?;
        std::os::unix::fs::symlink(target, &to).map_err(io_err("create", to.as_path()))?;
        chown(&to, 0, 0)
    }

    fn prepare_leaf(&self, path: &RepoPath) -> Result<PathBuf, PublishError> {
        if let Some(parent) = path.parent() {
            self.make_parents(&parent)?;
        }
        let to = self.mount(path);
        match fs::symlink_metadata(&to) {
            Ok(m) if m.is_dir() => Err(PublishError::AlreadyExists { path: path.clone() }),
            Ok(_) => {
                fs::remove_file(&to).map_err(io_err("remove", to.as_path()))?;
                Ok(to)
            }
            Err(_) => Ok(to),
        }
    }
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), PublishError> {
    rustix::fs::chownat(
        CWD,
        path,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| io_err("set the owner of", path)(e.into()))
}

/// Owner, mode (not of a symlink) and modification time of `meta` on `path`.
fn set_metadata(path: &Path, meta: &fs::Metadata) -> Result<(), PublishError> {
    chown(path, meta.uid(), meta.gid())?;
    if !meta.file_type().is_symlink() {
        fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(io_err("set the mode of", path))?;
    }
    let time = Timespec {
        tv_sec: meta.mtime(),
        tv_nsec: meta.mtime_nsec(),
    };
    rustix::fs::utimensat(
        CWD,
        path,
        &Timestamps {
            last_access: time,
            last_modification: time,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| io_err("set the time of", path)(e.into()))
}

/// Removes `path` (a tree, file or symlink) through the mount; a missing path is fine.
pub(crate) fn remove_any(path: &Path) -> Result<(), PublishError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(io_err("remove", path)),
        Ok(_) => fs::remove_file(path).map_err(io_err("remove", path)),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mount with one published layer file `etc/motd` ("hello") carrying `xattrs`, and a flat
    /// tree in `local` whose `etc/motd` came from it (source tag) and whose `etc/own` has none.
    fn setup(xattrs: &[(&str, &str)]) -> (tempfile::TempDir, Layout, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let layout = crate::Layout::of(&ducc_oci::RepositoryName::parse("r").unwrap());
        let layer: ducc_oci::LayerDigest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        let mount = dir.path().join("mnt");
        let layerfs = mount.join(layout.layerfs(&layer).as_path());
        fs::create_dir_all(layerfs.join("etc")).unwrap();
        fs::write(layerfs.join("etc/motd"), "hello").unwrap();
        for (name, value) in xattrs {
            rustix::fs::lsetxattr(
                layerfs.join("etc/motd"),
                *name,
                value.as_bytes(),
                rustix::fs::XattrFlags::empty(),
            )
            .unwrap();
        }
        let local = dir.path().join("flat");
        fs::create_dir_all(local.join("etc")).unwrap();
        fs::write(local.join("etc/motd"), "hello").unwrap();
        fs::write(local.join("etc/own"), "mine").unwrap();
        let mut tag = layer.to_string().into_bytes();
        tag.push(0);
        tag.extend_from_slice(b"etc/motd");
        rustix::fs::lsetxattr(
            local.join("etc/motd"),
            ducc_unpack::SOURCE_XATTR,
            &tag,
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        (dir, layout, local)
    }

    fn write(dir: &Path, layout: &Layout, local: &Path) -> (GraftReport, PathBuf) {
        let mount = dir.join("mnt");
        let writer = MountWriter {
            mount_root: &mount,
            layout,
        };
        let mut report = GraftReport::default();
        let flat = RepoPath::new(".flat/cd/flat").unwrap();
        writer.write_tree(local, &flat, true, &mut report).unwrap();
        (report, mount.join(flat.as_path()))
    }

    #[test]
    fn a_layer_file_with_its_object_is_grafted_and_the_rest_written() {
        let hash = "4ab2cb8c7b9fdcc1f56ae958ef186d9e09813b71";
        let (dir, layout, local) = setup(&[
            ("user.hash", hash),
            ("user.compression", "zlib"),
            ("user.chunks", "1"),
        ]);
        let (report, flat) = write(dir.path(), &layout, &local);
        assert_eq!(
            report,
            GraftReport {
                grafted: 1,
                stored: 1
            }
        );
        assert_eq!(
            fs::read(flat.join("etc/motd")).unwrap(),
            b"",
            "a placeholder"
        );
        assert_eq!(
            fs::read_to_string(flat.join("etc/.cvmfsgraft-motd")).unwrap(),
            format!("size=5\nchecksum={hash}\ncompression=zlib\n")
        );
        assert_eq!(fs::read(flat.join("etc/own")).unwrap(), b"mine");
        assert!(flat.join(CATALOG_MARKER).is_file());
    }

    #[test]
    fn a_layer_file_whose_hash_cannot_be_read_or_is_chunked_goes_in_with_its_content() {
        for xattrs in [
            &[][..],
            &[("user.hash", "not a hash"), ("user.compression", "zlib")][..],
            &[
                ("user.hash", "4ab2cb8c7b9fdcc1f56ae958ef186d9e09813b71"),
                ("user.compression", "zlib"),
                ("user.chunks", "3"),
            ][..],
        ] {
            let (dir, layout, local) = setup(xattrs);
            let (report, flat) = write(dir.path(), &layout, &local);
            assert_eq!(
                report,
                GraftReport {
                    grafted: 0,
                    stored: 2
                },
                "{xattrs:?}"
            );
            assert_eq!(fs::read(flat.join("etc/motd")).unwrap(), b"hello");
            assert!(!flat.join("etc/.cvmfsgraft-motd").exists());
        }
    }

    #[test]
    fn a_layer_file_behind_a_symlink_or_of_another_size_is_never_grafted() {
        let (dir, layout, local) = setup(&[
            ("user.hash", "4ab2cb8c7b9fdcc1f56ae958ef186d9e09813b71"),
            ("user.compression", "zlib"),
        ]);
        // The flat file is bigger than the layer file it names.
        fs::write(local.join("etc/motd"), "hello, world").unwrap();
        let writer = MountWriter {
            mount_root: &dir.path().join("mnt"),
            layout: &layout,
        };
        assert_eq!(writer.graft_for(&local.join("etc/motd"), 12), None);
        // A symlinked directory on the way in the layer.
        let layerfs = dir.path().join("mnt").join(
            layout
                .layerfs(&format!("sha256:{}", "ab".repeat(32)).parse().unwrap())
                .as_path(),
        );
        fs::rename(layerfs.join("etc"), layerfs.join("real")).unwrap();
        std::os::unix::fs::symlink("real", layerfs.join("etc")).unwrap();
        assert_eq!(writer.graft_for(&local.join("etc/motd"), 5), None);
    }

    #[test]
    fn a_marker_always_starts_with_its_size() {
        let graft = Graft {
            size: 31_945_032,
            checksum: "4ab2cb8c7b9fdcc1f56ae958ef186d9e09813b71".into(),
            compression: "zlib",
        };
        assert_eq!(
            graft.marker(),
            "size=31945032\nchecksum=4ab2cb8c7b9fdcc1f56ae958ef186d9e09813b71\ncompression=zlib\n"
        );
    }

    #[test]
    fn only_lowercase_hex_hashes_with_an_optional_suffix_are_grafted() {
        for (hash, ok) in [
            ("4ab2cb8c7b9fdcc1f56ae958ef186d9e09813b71", true),
            ("4ab2cb8c7b9fdcc1f56ae958ef186d9e09813b71-rmd160", true),
            ("4AB2CB8C7B9FDCC1F56AE958EF186D9E09813B71", false),
            ("4ab2cb8c", false),
            ("", false),
            ("4ab2cb8c7b9fdcc1f56ae958ef186d9e09813b71\nsize=1", false),
            ("4ab2cb8c7b9fdcc1f56ae958ef186d9e09813b71-../x", false),
        ] {
            assert_eq!(valid_checksum(hash), ok, "{hash:?}");
        }
    }
}
