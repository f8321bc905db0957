//! Flat-tree file data copied on a thread of its own while a layer directory and the flat tree
//! are written in one pass (see [`crate::apply::apply_tar_both`]).
//!
//! A regular file of the layer is written once from the stream, into its layer directory; the
//! flat tree's copy of it comes from that file (`copy_file_range`). The flat side creates the
//! new inode itself, in entry order, and hands the data and the metadata that must follow it
//! (owner, mode, time: a write clears setuid bits and moves the time) to the copier, so the
//! thread that parses the tar and writes the layer directory does not also copy every byte a
//! second time. Every flat inode is new (`O_EXCL`), so a late copy never lands in a file of a
//! later entry: an entry that replaces a file unlinks it first, and the copy then goes to the
//! unlinked inode.
//!
//! Whatever reads the flat tree's files waits first ([`DeferredCopies::wait`]): a hardlink that
//! the layer directory copies from the stack below, and the end of the layer.

use std::fs::File;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use rustix::fs::{Gid, Mode, Uid};

use crate::entry::Timestamp;
use crate::error::Error;

/// Copies queued at most (each holds two open files).
pub(crate) const COPIES_IN_FLIGHT: usize = 32;

/// One flat-tree file whose data and final metadata are still to be written.
#[derive(Debug)]
pub(crate) struct CopyJob {
    /// The layer directory's file, read from its start.
    pub(crate) source: File,
    /// The flat tree's new, empty file.
    pub(crate) dest: File,
    pub(crate) len: u64,
    /// Set after the data (a chown clears setuid bits).
    pub(crate) owner: Option<(Uid, Gid)>,
    /// Set after the owner, when the file was not created with it.
    pub(crate) mode: Option<u32>,
    pub(crate) mtime: Timestamp,
    /// For the error: the layer and the entry.
    pub(crate) layer: Arc<str>,
    pub(crate) entry: String,
}

impl CopyJob {
    fn run(mut self, buffer: &mut [u8]) -> Result<(), Error> {
        let fail = |op: &'static str, source: std::io::Error| Error::Fs {
            layer: self.layer.to_string(),
            entry: self.entry.clone(),
            op,
            source,
        };
        let copied = crate::apply::copy_file(&self.source, &mut self.dest, self.len, buffer)
            .map_err(|e| fail("write file data", e))?;
        if copied != self.len {
            return Err(fail(
                "write file data",
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "the layer directory's copy has {copied} of {} bytes",
                        self.len
                    ),
                ),
            ));
        }
        if let Some((uid, gid)) = self.owner {
            rustix::fs::fchown(&self.dest, Some(uid), Some(gid))
                .map_err(|e| fail("set owner", e.into()))?;
        }
        if let Some(mode) = self.mode {
            rustix::fs::fchmod(&self.dest, Mode::from_raw_mode(mode))
                .map_err(|e| fail("set mode", e.into()))?;
        }
        rustix::fs::futimens(&self.dest, &crate::apply::timestamps(self.mtime))
            .map_err(|e| fail("set time", e.into()))?;
        Ok(())
    }
}

/// What the copier is sent, in entry order.
#[derive(Debug)]
enum Job {
    Copy(CopyJob),
    /// Answered once every copy queued before it is written: the queue is in order.
    Flush(SyncSender<()>),
}

/// The copier's first error, kept for the queueing side (it stops at it).
type Failure = Mutex<Option<Error>>;

/// The queueing side, held by the flat tree's applier for one layer.
#[derive(Debug)]
pub(crate) struct DeferredCopies {
    jobs: SyncSender<Job>,
    failure: Arc<Failure>,
}

impl DeferredCopies {
    /// Queues a copy (waits while [`COPIES_IN_FLIGHT`] are queued). Fails with the copier's
    /// error once it has stopped at one.
    pub(crate) fn send(&mut self, job: CopyJob) -> Result<(), Error> {
        let layer = Arc::clone(&job.layer);
        self.jobs
            .send(Job::Copy(job))
            .map_err(|_| self.failure(&layer))
    }

    /// Waits until every queued copy is written; the copier's error if one failed.
    pub(crate) fn wait(&mut self, layer: &str) -> Result<(), Error> {
        let (done, flushed) = std::sync::mpsc::sync_channel(1);
        self.jobs
            .send(Job::Flush(done))
            .map_err(|_| self.failure(layer))?;
        flushed.recv().map_err(|_| self.failure(layer))
    }

    /// Why the copier is gone: its error, or (a panic) that it ended early.
    fn failure(&self, layer: &str) -> Error {
        let kept = self
            .failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        kept.unwrap_or_else(|| Error::Read {
            layer: layer.to_owned(),
            what: "uncompressed",
            source: std::io::Error::other("the flat tree's copying thread ended early"),
        })
    }
}

/// Runs `with` beside a copier thread that writes what its [`DeferredCopies`] queues, in
/// order, until the queue is dropped or a copy fails (its error is then kept, and the queue
/// closes, so the next send or wait returns it).
pub(crate) fn with_copier<T>(with: impl FnOnce(DeferredCopies) -> T) -> T {
    let failure = Arc::new(Failure::default());
    let (jobs, queued) = std::sync::mpsc::sync_channel(COPIES_IN_FLIGHT);
    std::thread::scope(|scope| {
        let kept = Arc::clone(&failure);
        scope.spawn(move || run_copies(queued, &kept));
        with(DeferredCopies { jobs, failure })
    })
}

fn run_copies(jobs: Receiver<Job>, failure: &Failure) {
    // For filesystems without copy_file_range only.
    let mut buffer = vec![0; crate::apply::COPY_BUFFER];
    for job in jobs {
        match job {
            Job::Copy(copy) => {
                if let Err(e) = copy.run(&mut buffer) {
                    *failure
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e);
                    return;
                }
            }
            Job::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;
    use std::path::Path;
    use std::process::Command;

    use crate::testutil::{Layer, require_root, snapshot};
    use crate::{Error, ExtractOptions, FlatExtractor, LayerDirOptions, WhiteoutFormat};

    /// Owner and time of every path below `root` (what [`snapshot`] leaves out).
    fn owners_and_times(root: &Path) -> Vec<(String, u32, u32, i64, i64)> {
        let mut out: Vec<_> = snapshot(root)
            .into_keys()
            .map(|path| {
                let meta = std::fs::symlink_metadata(root.join(&path)).expect("lstat");
                (
                    path,
                    meta.uid(),
                    meta.gid(),
                    meta.mtime(),
                    meta.mtime_nsec(),
                )
            })
            .collect();
        out.sort();
        out
    }

    fn layers() -> (Vec<u8>, Vec<u8>) {
        let lower = Layer::new()
            .dir("etc")
            .file("etc/lower", b"from the layer below")
            .file("etc/replaced", b"old")
            .bytes();
        let mut upper = Layer::new();
        upper.mtime = 1_700_000_000;
        // More files than the copier queues at once, with modes, owners and sizes that differ.
        for n in 0..(3 * super::COPIES_IN_FLIGHT) {
            let mode = [0o644, 0o4755, 0o600, 0o2750][n % 4];
            let (uid, gid) = if n % 3 == 0 { (1000, 1001) } else { (0, 0) };
            let data = vec![b'a' + (n % 26) as u8; n * 997];
            upper.file_with(
                format!("etc/f{n:03}").as_bytes(),
                &data,
                mode,
                uid,
                gid,
                &[],
            );
        }
        upper
            .file_with(
                b"etc/with-xattr",
                b"xattr",
                0o644,
                0,
                0,
                &[("SCHILY.xattr.user.note", b"kept")],
            )
            // Copied into the layer directory from the flat tree's file.
            .hardlink("etc/copied", "etc/lower")
            .hardlink("etc/linked", "etc/f001")
            .file("etc/replaced", b"new")
            .file("etc/twice", b"first")
            .file("etc/twice", b"second");
        (lower, upper.bytes())
    }

    #[test]
    fn the_copier_writes_the_flat_tree_a_plain_extraction_writes() {
        require_root!();
        let (lower, upper) = layers();
        let base = tempfile::tempdir().expect("tempdir");
        let (flat, plain) = (base.path().join("flat"), base.path().join("plain"));
        let (l1, l2) = (base.path().join("l1"), base.path().join("l2"));
        for dir in [&flat, &plain, &l1, &l2] {
            std::fs::create_dir(dir).expect("mkdir");
        }
        let options = LayerDirOptions::new().whiteouts(WhiteoutFormat::Overlay);
        let mut both = FlatExtractor::new(&flat, &ExtractOptions::new()).expect("flat");
        both.apply_layer_with_layer_dir(&lower[..], "lower", &l1, &options)
            .expect("lower");
        both.apply_layer_with_layer_dir(&upper[..], "upper", &l2, &options)
            .expect("upper");
        let mut alone = FlatExtractor::new(&plain, &ExtractOptions::new()).expect("plain");
        alone.apply_layer(&lower[..], "lower").expect("lower");
        alone.apply_layer(&upper[..], "upper").expect("upper");
        assert_eq!(both.report().file_bytes, alone.report().file_bytes);

        assert_eq!(snapshot(&flat), snapshot(&plain));
        assert_eq!(owners_and_times(&flat), owners_and_times(&plain));
        let meta = std::fs::metadata(flat.join("etc/f001")).expect("f001");
        assert_eq!(
            meta.mode() & 0o7777,
            0o4755,
            "a setuid bit survives the copy"
        );
        assert_eq!(
            std::fs::read(flat.join("etc/twice")).expect("twice"),
            b"second"
        );
        assert_eq!(
            rustix::fs::getxattr(flat.join("etc/with-xattr"), "user.note", &mut [0u8; 8][..]).ok(),
            Some(4)
        );
        // The hardlink to the lower file became a copy of the flat tree's (written) file.
        assert_eq!(
            std::fs::read(l2.join("etc/copied")).expect("copied"),
            b"from the layer below"
        );
        assert_eq!(
            std::fs::metadata(flat.join("etc/linked"))
                .expect("linked")
                .ino(),
            std::fs::metadata(flat.join("etc/f001"))
                .expect("f001")
                .ino()
        );
    }

    /// A tmpfs of `size` on `dir`, unmounted when dropped.
    struct Tmpfs(std::path::PathBuf);

    impl Tmpfs {
        fn mount(dir: &Path, size: &str) -> Tmpfs {
            let status = Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={size}"),
                    "ducc-unpack-test",
                ])
                .arg(dir)
                .status()
                .expect("run mount");
            assert!(status.success(), "mount a tmpfs on {}", dir.display());
            Tmpfs(dir.to_owned())
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }

    #[test]
    fn a_flat_copy_that_fails_names_its_entry_and_ends_the_layer() {
        require_root!();
        let base = tempfile::tempdir().expect("tempdir");
        let (flat, layer_dir) = (base.path().join("flat"), base.path().join("layer"));
        for dir in [&flat, &layer_dir] {
            std::fs::create_dir(dir).expect("mkdir");
        }
        // Room for the inodes but not for the data: the copies fail, the layer directory not.
        let _full = Tmpfs::mount(&flat, "256k");
        let mut layer = Layer::new();
        for n in 0..(4 * super::COPIES_IN_FLIGHT) {
            layer.file(&format!("f{n:03}"), &[7u8; 64 * 1024]);
        }
        let tar = layer.bytes();
        let mut both = FlatExtractor::new(&flat, &ExtractOptions::new()).expect("flat");
        let options = LayerDirOptions::new();
        let err = both
            .apply_layer_with_layer_dir(&tar[..], "big", &layer_dir, &options)
            .expect_err("the flat tree is full");
        match &err {
            Error::Fs {
                layer,
                entry,
                op,
                source,
            } => {
                assert_eq!(layer, "big");
                assert!(entry.starts_with("f0"), "{err}");
                assert_eq!(*op, "write file data");
                assert_eq!(source.kind(), std::io::ErrorKind::StorageFull, "{err}");
            }
            other => panic!("unexpected error: {other}"),
        }
        // The next layer starts afresh (no copier left over from this one).
        let small = Layer::new().file("small", b"fits").bytes();
        let second = base.path().join("second");
        std::fs::create_dir(&second).expect("mkdir");
        std::fs::remove_dir_all(&layer_dir).expect("clear");
        for n in 0..(4 * super::COPIES_IN_FLIGHT) {
            let _ = std::fs::remove_file(flat.join(format!("f{n:03}")));
        }
        both.apply_layer_with_layer_dir(&small[..], "small", &second, &options)
            .expect("a layer that fits");
        assert_eq!(std::fs::read(flat.join("small")).expect("small"), b"fits");
    }
}
