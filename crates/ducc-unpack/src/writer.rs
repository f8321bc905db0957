//! The canonical tar writer: streams that `cvmfs_server ingest` and other tar-ingesting
//! publishers accept.

use std::io::{Read, Write};
use std::path::Path;

use crate::entry::Entry;
use crate::error::Error;
use crate::options::WhiteoutFormat;

/// Options for [`write_tree_as_tar`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TarWriteOptions {
    /// How whiteouts found in the tree are written: `None` writes the tree as it is (character
    /// devices 0/0, `trusted.overlay.opaque` xattrs and `.wh.` files alike); `Some(Oci)` turns
    /// overlay whiteouts into `.wh.NAME` / `.wh..wh..opq` files; `Some(Overlay)` turns `.wh.`
    /// files into character devices 0/0 and opaque xattrs.
    pub whiteouts: Option<WhiteoutFormat>,
}

impl TarWriteOptions {
    /// Writes the tree as it is.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same options converting whiteouts to the given form.
    pub fn whiteouts(mut self, format: WhiteoutFormat) -> Self {
        self.whiteouts = Some(format);
        self
    }
}

/// What a canonical tar stream holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TarSummary {
    /// Entries written.
    pub entries: u64,
    /// Regular-file data bytes written.
    pub file_bytes: u64,
    /// Bytes of tar written in all.
    pub tar_bytes: u64,
}

/// Writes entries as an uncompressed tar stream and enforces the canonical rules on them: every
/// path at most once, each directory before its children (the root excepted), a hardlink's target
/// earlier in the same stream and not a directory, no `..` and no absolute names (guaranteed by
/// [`crate::EntryPath`]). xattrs go out as PAX `SCHILY.xattr.*` records, long names as PAX
/// `path`/`linkpath`, sub-second mtimes as PAX `mtime`.
///
/// Whiteout entries are written in the writer's format: [`crate::EntryKind::Whiteout`] as a
/// character device 0/0 (overlay) or an empty `.wh.NAME` file (OCI);
/// [`crate::EntryKind::OpaqueWhiteout`] as an empty `.wh..wh..opq` file (OCI only: in overlay form
/// the opaque marker is the `trusted.overlay.opaque` xattr of the directory entry itself).
pub struct CanonicalTarWriter<W: Write> {
    inner: crate::tarout::TarOut<W>,
}

impl<W: Write> std::fmt::Debug for CanonicalTarWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CanonicalTarWriter").finish_non_exhaustive()
    }
}

impl<W: Write> CanonicalTarWriter<W> {
    /// A writer into `out`, writing whiteout entries in the given form.
    pub fn new(out: W, whiteouts: WhiteoutFormat) -> Self {
        CanonicalTarWriter {
            inner: crate::tarout::TarOut::new(out, whiteouts),
        }
    }

    /// Appends one entry; `data` must yield exactly `entry.size` bytes for a regular file and is
    /// not read for other kinds.
    ///
    /// # Errors
    /// [`Error::CanonicalTar`] when the entry breaks a rule (duplicate path, parent not written
    /// yet, hardlink target not written or a directory, an opaque marker in overlay form, AUFS
    /// metadata); [`Error::TarWrite`] when the sink fails or `data` is short.
    pub fn append(&mut self, entry: &Entry, data: &mut dyn Read) -> Result<(), Error> {
        self.inner.append(entry, data)
    }

    /// What was written so far.
    pub fn summary(&self) -> TarSummary {
        self.inner.summary()
    }

    /// Writes the end-of-archive blocks and returns the sink.
    ///
    /// # Errors
    /// [`Error::TarWrite`] when the sink fails.
    pub fn finish(self) -> Result<W, Error> {
        self.inner.finish()
    }
}

/// Writes the tree below `dir` (a layer directory or a flat root filesystem) as a canonical tar
/// stream: names sorted bytewise, each directory before its children, files with several links
/// written once and then as hardlinks to that first path. The root directory itself is not
/// written (an ingesting publisher creates its base directory itself). Does not follow symlinks;
/// sockets are skipped with a log line.
///
/// # Errors
/// [`Error::DestinationIo`] when the tree cannot be read; the errors of
/// [`CanonicalTarWriter::append`].
pub fn write_tree_as_tar<W: Write>(
    dir: &Path,
    out: W,
    options: &TarWriteOptions,
) -> Result<(W, TarSummary), Error> {
    crate::tarout::write_tree(dir, out, options)
}

/// Normalises one layer into a canonical tar stream: extracts the uncompressed `tar` into
/// `scratch` (an existing empty directory, e.g. a temporary directory on the same disk) as a layer
/// directory with whiteouts in `format` (overlay form needs root), then writes that tree into `out`. Duplicates resolve to
/// the last entry, directories come before their children and take the metadata of their last
/// entry, hardlink targets precede their links. A hardlink to a file of another layer is an error.
///
/// # Errors
/// The errors of [`crate::extract_layer_dir`] and [`write_tree_as_tar`].
pub fn canonicalize_layer<R: Read, W: Write>(
    tar: R,
    layer: &str,
    scratch: &Path,
    out: W,
    format: WhiteoutFormat,
    privileges: crate::Privileges,
) -> Result<(W, TarSummary), Error> {
    let options = crate::LayerDirOptions::new()
        .whiteouts(format)
        .privileges(privileges);
    crate::extract_layer_dir(tar, layer, scratch, &options)?;
    crate::tarout::write_tree(scratch, out, &TarWriteOptions::new())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::io;

    use super::*;
    use crate::read::read_entries_with;
    use crate::testutil::{Layer, Node, paths, require_root, snapshot};
    use crate::{
        EntryKind, EntryPath, ExtractOptions, FlatExtractor, LayerDirOptions, Privileges,
        Timestamp, Xattr, extract_canonical_tar, extract_layer_dir,
    };

    fn entry(path: &str, kind: EntryKind, size: u64) -> Entry {
        Entry {
            path: EntryPath::normalise(path.as_bytes()).expect("path"),
            raw_name: path.as_bytes().to_vec(),
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: Timestamp {
                secs: 1_000,
                nanos: 0,
            },
            size,
            xattrs: Vec::new(),
        }
    }

    /// (path, kind) of every entry of a tar, whiteout names left as they are.
    fn listing(tar: &[u8]) -> Vec<(String, EntryKind)> {
        let mut out = Vec::new();
        read_entries_with(tar, "out", false, |e, _| {
            out.push((e.path.to_string(), e.kind.clone()));
            Ok(())
        })
        .expect("parse back");
        out
    }

    /// Checks the canonical rules on a parsed listing.
    fn assert_canonical(listing: &[(String, EntryKind)]) {
        let mut seen: HashSet<String> = HashSet::new();
        let mut dirs: HashSet<String> = HashSet::new();
        for (path, kind) in listing {
            assert!(seen.insert(path.clone()), "{path} twice");
            assert!(
                !path.starts_with('/') && !path.split('/').any(|c| c == ".."),
                "{path}"
            );
            if let Some((parent, _)) = path.rsplit_once('/') {
                assert!(dirs.contains(parent), "{path} before its parent");
            }
            if let EntryKind::Hardlink(target) = kind {
                assert!(
                    seen.contains(&target.to_string()),
                    "{path} before its target {target}"
                );
            }
            if *kind == EntryKind::Directory {
                dirs.insert(path.clone());
            }
        }
    }

    #[test]
    fn the_writer_refuses_a_path_written_twice() {
        let mut w = CanonicalTarWriter::new(Vec::new(), WhiteoutFormat::Oci);
        w.append(&entry("f", EntryKind::File, 1), &mut &b"x"[..])
            .expect("first");
        let err = w
            .append(&entry("f", EntryKind::File, 1), &mut &b"y"[..])
            .expect_err("dup");
        assert!(err.to_string().contains("written twice"), "{err}");
    }

    #[test]
    fn the_writer_refuses_a_child_before_its_directory() {
        let mut w = CanonicalTarWriter::new(Vec::new(), WhiteoutFormat::Oci);
        let err = w
            .append(&entry("d/f", EntryKind::File, 0), &mut io::empty())
            .expect_err("orphan");
        assert!(err.to_string().contains("parent"), "{err}");
        w.append(&entry("g", EntryKind::File, 0), &mut io::empty())
            .expect("file");
        let err = w
            .append(&entry("g/f", EntryKind::File, 0), &mut io::empty())
            .expect_err("file parent");
        assert!(err.to_string().contains("parent"), "{err}");
    }

    #[test]
    fn the_writer_refuses_a_hardlink_before_its_target_or_to_a_directory() {
        let mut w = CanonicalTarWriter::new(Vec::new(), WhiteoutFormat::Oci);
        let target = EntryPath::normalise(b"t").expect("path");
        let err = w
            .append(
                &entry("h", EntryKind::Hardlink(target.clone()), 0),
                &mut io::empty(),
            )
            .expect_err("missing target");
        assert!(err.to_string().contains("not written before"), "{err}");
        w.append(&entry("t", EntryKind::Directory, 0), &mut io::empty())
            .expect("dir");
        let err = w
            .append(
                &entry("h", EntryKind::Hardlink(target), 0),
                &mut io::empty(),
            )
            .expect_err("dir target");
        assert!(err.to_string().contains("directory"), "{err}");
    }

    #[test]
    fn the_writer_fails_on_short_file_data() {
        let mut w = CanonicalTarWriter::new(Vec::new(), WhiteoutFormat::Oci);
        let err = w
            .append(&entry("f", EntryKind::File, 10), &mut &b"abc"[..])
            .expect_err("short");
        assert!(matches!(err, Error::TarWrite { .. }), "{err}");
    }

    #[test]
    fn whiteout_entries_are_written_in_the_writer_form() {
        let mut w = CanonicalTarWriter::new(Vec::new(), WhiteoutFormat::Oci);
        w.append(&entry("d", EntryKind::Directory, 0), &mut io::empty())
            .expect("d");
        w.append(&entry("d/gone", EntryKind::Whiteout, 0), &mut io::empty())
            .expect("wh");
        w.append(&entry("d", EntryKind::OpaqueWhiteout, 0), &mut io::empty())
            .expect("opq");
        let oci = listing(&w.finish().expect("finish"));
        assert_eq!(
            oci,
            [
                ("d".to_owned(), EntryKind::Directory),
                ("d/.wh.gone".to_owned(), EntryKind::File),
                ("d/.wh..wh..opq".to_owned(), EntryKind::File),
            ]
        );
        let mut w = CanonicalTarWriter::new(Vec::new(), WhiteoutFormat::Overlay);
        w.append(&entry("gone", EntryKind::Whiteout, 0), &mut io::empty())
            .expect("wh");
        assert!(
            w.append(&entry("", EntryKind::OpaqueWhiteout, 0), &mut io::empty())
                .is_err()
        );
        let overlay = listing(&w.finish().expect("finish"));
        assert_eq!(
            overlay,
            [(
                "gone".to_owned(),
                EntryKind::CharDevice { major: 0, minor: 0 }
            )]
        );
    }

    #[test]
    fn xattrs_long_names_and_odd_times_round_trip_through_the_writer() {
        let long = format!("{}/file", "x".repeat(200));
        let mut w = CanonicalTarWriter::new(Vec::new(), WhiteoutFormat::Oci);
        let mut dir = entry(&"x".repeat(200), EntryKind::Directory, 0);
        dir.mtime = Timestamp {
            secs: -2,
            nanos: 500_000_000,
        };
        w.append(&dir, &mut io::empty()).expect("dir");
        let mut file = entry(&long, EntryKind::File, 4);
        file.xattrs = vec![Xattr {
            name: b"user.a".to_vec(),
            value: b"\0bin\xff".to_vec(),
        }];
        file.mtime = Timestamp {
            secs: 1_600_000_000,
            nanos: 123_456_789,
        };
        file.uid = 1 << 30;
        w.append(&file, &mut &b"data"[..]).expect("file");
        let link_target = format!("/{}", "t".repeat(150));
        w.append(
            &entry("s", EntryKind::Symlink(link_target.clone().into_bytes()), 0),
            &mut io::empty(),
        )
        .expect("symlink");
        let tar = w.finish().expect("finish");
        let mut back = Vec::new();
        crate::read_entries(&tar[..], "out", |e, data| {
            let mut content = Vec::new();
            io::Read::read_to_end(data, &mut content).expect("data");
            back.push((e.clone(), content));
            Ok(())
        })
        .expect("parse");
        assert_eq!(back[0].0.mtime, dir.mtime);
        assert_eq!(back[1].0.path, file.path);
        assert_eq!(back[1].0.xattrs, file.xattrs);
        assert_eq!(back[1].0.mtime, file.mtime);
        assert_eq!(back[1].0.uid, 1 << 30);
        assert_eq!(back[1].1, b"data");
        assert_eq!(back[2].0.kind, EntryKind::Symlink(link_target.into_bytes()));
    }

    fn sample_tree() -> tempfile::TempDir {
        let base = tempfile::tempdir().expect("tempdir");
        let layer = Layer::new()
            .file("z-first", b"z")
            .dir("b")
            .file("b/f", b"bf")
            .hardlink("a-link", "b/f")
            .symlink("b/s", "/z-first")
            .fifo("b/p")
            .file_with(
                b"b/x",
                b"xa",
                0o4755,
                0,
                0,
                &[("SCHILY.xattr.user.k", b"v")],
            )
            .dir_mode("c", 0o700)
            .dir("c/d")
            .file("c/d/e", b"deep")
            .bytes();
        let mut flat = FlatExtractor::new(base.path(), &ExtractOptions::new()).expect("flat");
        flat.apply_layer(&layer[..], "l").expect("apply");
        base
    }

    #[test]
    fn a_tree_written_back_is_canonical_and_extracts_to_the_same_tree() {
        let tree = sample_tree();
        let (tar, summary) =
            write_tree_as_tar(tree.path(), Vec::new(), &TarWriteOptions::new()).expect("write");
        let list = listing(&tar);
        assert_canonical(&list);
        assert_eq!(summary.entries as usize, list.len());
        assert_eq!(summary.tar_bytes as usize, tar.len());
        // Names sorted bytewise, the hardlink after its first path.
        let names: Vec<_> = list.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            names,
            [
                "a-link", "b", "b/f", "b/p", "b/s", "b/x", "c", "c/d", "c/d/e", "z-first"
            ]
        );
        assert_eq!(
            list[2].1,
            EntryKind::Hardlink(EntryPath::normalise(b"a-link").expect("p"))
        );
        let copy = tempfile::tempdir().expect("copy");
        extract_canonical_tar(&tar[..], "canonical", copy.path(), &ExtractOptions::new())
            .expect("extract");
        assert_eq!(snapshot(copy.path()), snapshot(tree.path()));
        use std::os::unix::fs::MetadataExt;
        let ino = |root: &std::path::Path, p| std::fs::metadata(root.join(p)).expect("meta").ino();
        assert_eq!(ino(copy.path(), "a-link"), ino(copy.path(), "b/f"));
        let mtime = |root: &std::path::Path, p| {
            std::fs::symlink_metadata(root.join(p))
                .expect("meta")
                .mtime()
        };
        for p in ["b", "c/d", "b/s", "b/x"] {
            assert_eq!(mtime(copy.path(), p), mtime(tree.path(), p), "{p}");
        }
        let mut value = [0u8; 8];
        let n = rustix::fs::getxattr(copy.path().join("b/x"), "user.k", &mut value[..])
            .expect("user.k copied");
        assert_eq!(&value[..n], b"v");
    }

    #[test]
    fn overlay_layer_trees_convert_to_oci_whiteouts() {
        require_root!();
        let dir = tempfile::tempdir().expect("tempdir");
        let layer = Layer::new()
            .whiteout(".wh.gone")
            .dir("d")
            .whiteout("d/.wh..wh..opq")
            .file("d/f", b"f")
            .bytes();
        extract_layer_dir(&layer[..], "l", dir.path(), &LayerDirOptions::new())
            .expect("overlay dir");
        let (tar, _) = write_tree_as_tar(
            dir.path(),
            Vec::new(),
            &TarWriteOptions::new().whiteouts(WhiteoutFormat::Oci),
        )
        .expect("write");
        let list = listing(&tar);
        assert_canonical(&list);
        let names: Vec<_> = list.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(names, ["d", "d/.wh..wh..opq", "d/f", ".wh.gone"]);
        assert!(
            list.iter()
                .all(|(_, k)| !matches!(k, EntryKind::CharDevice { .. }))
        );
        // The opaque xattr does not travel in OCI form.
        let mut xattrs = Vec::new();
        crate::read_entries(&tar[..], "out", |e, _| {
            xattrs.extend(e.xattrs.clone());
            Ok(())
        })
        .expect("parse");
        assert!(xattrs.is_empty());
    }

    #[test]
    fn oci_layer_trees_convert_to_overlay_whiteouts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layer = Layer::new()
            .whiteout(".wh.gone")
            .file("kept", b"k")
            .whiteout(".wh.kept")
            .dir("d")
            .whiteout("d/.wh..wh..opq")
            .file("d/f", b"f")
            .whiteout(".wh.e")
            .dir("e")
            .bytes();
        extract_layer_dir(
            &layer[..],
            "l",
            dir.path(),
            &LayerDirOptions::new().whiteouts(WhiteoutFormat::Oci),
        )
        .expect("oci dir");
        let (tar, _) = write_tree_as_tar(
            dir.path(),
            Vec::new(),
            &TarWriteOptions::new().whiteouts(WhiteoutFormat::Overlay),
        )
        .expect("write");
        let mut got = Vec::new();
        crate::read_entries(&tar[..], "out", |e, _| {
            got.push((e.path.to_string(), e.kind.clone(), e.xattrs.clone()));
            Ok(())
        })
        .expect("parse");
        let opaque = vec![Xattr {
            name: b"trusted.overlay.opaque".to_vec(),
            value: b"y".to_vec(),
        }];
        assert_eq!(
            got,
            [
                // Siblings come in the order of the names in the tree (`.wh.gone` first).
                (
                    "gone".to_owned(),
                    EntryKind::CharDevice { major: 0, minor: 0 },
                    vec![]
                ),
                ("d".to_owned(), EntryKind::Directory, opaque.clone()),
                ("d/f".to_owned(), EntryKind::File, vec![]),
                // Whited out and recreated by the same layer: hides the lower one's children.
                ("e".to_owned(), EntryKind::Directory, opaque),
                ("kept".to_owned(), EntryKind::File, vec![]),
            ]
        );
    }

    #[test]
    fn a_layer_canonicalizes_to_each_path_once_and_directories_first() {
        let layer = Layer::new()
            .file("d/f", b"first")
            .dir_with("d", 0o711, 5_000, &[])
            .file("d/f", b"second")
            .file("g", b"g")
            .hardlink("h", "g")
            .bytes();
        let scratch = tempfile::tempdir().expect("scratch");
        let (tar, _) = canonicalize_layer(
            &layer[..],
            "l",
            scratch.path(),
            Vec::new(),
            WhiteoutFormat::Oci,
            Privileges::Auto,
        )
        .expect("canonicalize");
        let list = listing(&tar);
        assert_canonical(&list);
        let mut back = Vec::new();
        crate::read_entries(&tar[..], "out", |e, data| {
            let mut content = Vec::new();
            io::Read::read_to_end(data, &mut content).expect("data");
            back.push((e.path.to_string(), e.mode, e.mtime.secs, content));
            Ok(())
        })
        .expect("parse");
        assert_eq!(back[0], ("d".to_owned(), 0o711, 5_000, vec![]));
        assert_eq!(back[1].0, "d/f");
        assert_eq!(back[1].3, b"second");
        let copy = tempfile::tempdir().expect("copy");
        extract_canonical_tar(&tar[..], "c", copy.path(), &ExtractOptions::new()).expect("extract");
        assert_eq!(paths(copy.path()), ["d", "d/f", "g", "h"]);
        assert_eq!(
            snapshot(copy.path())["h"],
            Node::File {
                content: b"g".to_vec(),
                mode: 0o644
            }
        );
    }
}
