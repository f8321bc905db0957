//! A layer directory and the flat tree written from one pass over a layer's tar stream, on two
//! threads: this one parses the tar and writes the layer directory, a worker applies the same
//! entries, in the same order, to the flat tree.
//!
//! A regular file is written once from the stream, into its layer directory; the worker copies
//! the flat tree's file from it (`copy_file_range`) and sets its metadata, so the file-system
//! work of the two trees (creating every inode twice, writing every byte twice) is split over
//! two cores instead of queueing behind the tar parser.
//!
//! The worker runs behind: when the layer directory needs to know the stack below (the flat
//! tree as it is before the current entry: an implicit parent's metadata, a hardlink's lower
//! target, a whiteout's reason to exist, a symlink of a lower layer on the way), it first waits
//! for the worker to apply every entry sent before ([`FlatLink::sync`]). The queue is in order,
//! so that wait is a marker sent through it.

use std::fs::File;
use std::io::{self, Read};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use super::layer_dir::FlatBelow;
use super::{Applier, DirFix, TargetState};
use crate::entry::{Entry, EntryKind};
use crate::error::Error;
use crate::read::read_entries_limited;
use crate::root::Root;

/// Entries queued for the worker at most (each regular file holds its open layer file).
pub(super) const ENTRIES_IN_FLIGHT: usize = 128;

/// What the worker is sent, in entry order.
#[derive(Debug)]
enum Job {
    /// An entry the layer directory has applied, with its regular file's data there.
    Entry {
        entry: Entry,
        file: Option<(File, u64)>,
    },
    /// Answered once every entry sent before is applied, with the flat tree's pending fix of
    /// the directory named (its time and mode before this layer), if it has one.
    Sync {
        fix_of: Option<Vec<u8>>,
        answer: SyncSender<Option<DirFix>>,
    },
}

/// The worker's first error, kept for this side (the worker stops at it).
type Failure = Mutex<Option<Error>>;

/// The layer directory's side of the link to the flat tree's worker (the queue closes once
/// every clone is dropped).
#[derive(Debug, Clone)]
pub(super) struct FlatLink {
    jobs: SyncSender<Job>,
    failure: Arc<Failure>,
    layer: Arc<str>,
}

impl FlatLink {
    /// Waits until the worker has applied every entry sent so far, so that the flat tree shows
    /// the stack below the current entry; returns the flat side's pending fix of `fix_of`.
    pub(super) fn sync(&self, fix_of: Option<&[u8]>) -> Result<Option<DirFix>, Error> {
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        self.jobs
            .send(Job::Sync {
                fix_of: fix_of.map(<[u8]>::to_vec),
                answer,
            })
            .map_err(|_| self.failure())?;
        answered.recv().map_err(|_| self.failure())
    }

    fn send(&self, entry: Entry, file: Option<(File, u64)>) -> Result<(), Error> {
        self.jobs
            .send(Job::Entry { entry, file })
            .map_err(|_| self.failure())
    }

    /// Why the worker is gone: its error, or (a panic, which the join reports) that it ended.
    fn failure(&self) -> Error {
        take_failure(&self.failure).unwrap_or_else(|| ended_early(&self.layer))
    }
}

fn take_failure(failure: &Failure) -> Option<Error> {
    failure
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
}

fn ended_early(layer: &str) -> Error {
    Error::Read {
        layer: layer.to_owned(),
        what: "uncompressed",
        source: io::Error::other("the flat tree's thread ended early"),
    }
}

/// Applies one layer's uncompressed tar stream to its layer directory (`layer`) and to the flat
/// tree of the image (`flat`, holding the layers beneath) in one pass over the stream.
///
/// Each entry goes to the layer directory first, while the flat tree still shows the stack
/// below (with this layer's earlier entries), then to the flat tree's worker. An error of the
/// flat side wins: it belongs to an entry at or before the one this side stopped at.
pub(crate) fn apply_tar_both<R: Read>(
    layer: &mut Applier,
    flat: &mut Applier,
    tar: R,
    name: &str,
) -> Result<(), Error> {
    let flat_root = flat.root.try_clone().map_err(|e| Error::DestinationIo {
        path: flat.root.path().to_owned(),
        op: "open the flat tree",
        source: e.into(),
    })?;
    layer.begin_layer(name);
    flat.begin_layer(name);
    let limits = flat.limits();
    let failure = Arc::new(Failure::default());
    let (jobs, queued) = std::sync::mpsc::sync_channel(ENTRIES_IN_FLIGHT);
    let worker_flat = &mut *flat;
    let applied = std::thread::scope(|scope| {
        let kept = Arc::clone(&failure);
        let worker = std::thread::Builder::new()
            .name("ducc-flat".to_owned())
            .spawn_scoped(scope, move || run_flat(worker_flat, queued, &kept))
            .map_err(|source| Error::DestinationIo {
                path: layer.root.path().to_owned(),
                op: "start the flat tree's thread",
                source,
            })?;
        // However this side ends (a panic too), both senders are dropped and the queue closes,
        // so the worker ends and the scope can join it.
        let link = FlatLink {
            jobs,
            failure: Arc::clone(&failure),
            layer: Arc::from(name),
        };
        let sender = link.clone();
        let linked = Linked::new(layer, flat_root, link);
        let applied = apply_entries_both(&mut *linked.0, &sender, name, tar, &limits);
        drop((sender, linked));
        if let Err(panic) = worker.join() {
            std::panic::resume_unwind(panic);
        }
        applied
    });
    if let Some(e) = take_failure(&failure) {
        return Err(e);
    }
    let count = applied?;
    layer.end_layer(count)?;
    flat.end_layer(count)
}

/// The layer directory's applier while the worker runs: dropping it closes the worker's queue
/// and forgets the flat tree.
struct Linked<'a>(&'a mut Applier);

impl<'a> Linked<'a> {
    fn new(layer: &'a mut Applier, flat_root: Root, link: FlatLink) -> Self {
        if let Some(state) = layer.layer_dir_mut() {
            state.below = Some(FlatBelow {
                root: flat_root,
                link,
                last_file: None,
            });
        }
        Linked(layer)
    }
}

impl Drop for Linked<'_> {
    fn drop(&mut self) {
        if let Some(state) = self.0.layer_dir_mut() {
            state.below = None;
        }
    }
}

impl Applier {
    /// The layer directory's last regular file, for the flat side (see [`FlatBelow`]).
    fn take_last_file(&mut self) -> Option<(File, u64)> {
        self.layer_dir_mut()?.below.as_mut()?.last_file.take()
    }

    /// The flat side: where the data of the next regular file comes from (see
    /// [`super::flat::FlatState::pending_copy`]).
    fn set_pending_copy(&mut self, file: Option<(File, u64)>) {
        if let TargetState::Flat(flat) = &mut self.kind {
            flat.pending_copy = file;
        }
    }
}

/// This side's entry loop: each entry into the layer directory, then to the worker with the
/// layer directory's file of a regular file.
fn apply_entries_both<R: Read>(
    layer: &mut Applier,
    link: &FlatLink,
    name: &str,
    tar: R,
    limits: &crate::Limits,
) -> Result<u64, Error> {
    read_entries_limited(tar, name, true, limits, |entry, data| {
        layer.take_last_file();
        layer.apply_entry(entry, data)?;
        let file = if entry.kind == EntryKind::File {
            Some(layer.take_last_file().ok_or_else(|| {
                layer.fs_err(
                    entry,
                    "copy from the layer directory",
                    io::Error::from(io::ErrorKind::NotFound),
                )
            })?)
        } else {
            None
        };
        link.send(entry.clone(), file)
    })
}

/// The worker: applies each entry to the flat tree, a regular file's data copied from the layer
/// directory's file, until the queue closes or an entry fails (its error is then kept and the
/// queue dropped, so this side's next send or sync returns it).
fn run_flat(flat: &mut Applier, jobs: Receiver<Job>, failure: &Failure) {
    for job in jobs {
        match job {
            Job::Entry { entry, file } => {
                #[cfg(test)]
                tests::lag();
                flat.set_pending_copy(file);
                let applied = flat.apply_entry(&entry, &mut io::empty());
                flat.set_pending_copy(None);
                if let Err(e) = applied {
                    *failure
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e);
                    return;
                }
            }
            Job::Sync { fix_of, answer } => {
                let fix = fix_of.and_then(|dir| flat.current.dir_fixes.get(&dir).copied());
                let _ = answer.send(fix);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;
    use std::path::Path;
    use std::process::Command;

    use std::sync::atomic::{AtomicU64, Ordering};

    use crate::testutil::{Layer, require_root, snapshot};
    use crate::{
        Error, ExtractOptions, FlatExtractor, LayerDirOptions, WhiteoutFormat, extract_layer_dir,
    };

    /// Microseconds the worker waits before each entry (each test is a process of its own
    /// under nextest; elsewhere another test only gets slower).
    static LAG_MICROS: AtomicU64 = AtomicU64::new(0);

    pub(super) fn lag() {
        let micros = LAG_MICROS.load(Ordering::Relaxed);
        if micros > 0 {
            std::thread::sleep(std::time::Duration::from_micros(micros));
        }
    }

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
        // More files than the worker queues at once, with modes, owners and sizes that differ.
        for n in 0..(3 * super::ENTRIES_IN_FLIGHT) {
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
    fn the_flat_tree_from_one_pass_is_the_one_a_plain_extraction_writes() {
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
        // The hardlink to the lower file became a copy of the flat tree's file.
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
    fn a_flat_write_that_fails_names_its_entry_and_ends_the_layer() {
        require_root!();
        let base = tempfile::tempdir().expect("tempdir");
        let (flat, layer_dir) = (base.path().join("flat"), base.path().join("layer"));
        for dir in [&flat, &layer_dir] {
            std::fs::create_dir(dir).expect("mkdir");
        }
        // Room for the inodes but not for the data: the copies fail, the layer directory not.
        let _full = Tmpfs::mount(&flat, "256k");
        let mut layer = Layer::new();
        for n in 0..(4 * super::ENTRIES_IN_FLIGHT) {
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
        // The next layer starts afresh (no worker left over from this one).
        let small = Layer::new().file("small", b"fits").bytes();
        let second = base.path().join("second");
        std::fs::create_dir(&second).expect("mkdir");
        std::fs::remove_dir_all(&layer_dir).expect("clear");
        for n in 0..(4 * super::ENTRIES_IN_FLIGHT) {
            let _ = std::fs::remove_file(flat.join(format!("f{n:03}")));
        }
        both.apply_layer_with_layer_dir(&small[..], "small", &second, &options)
            .expect("a layer that fits");
        assert_eq!(std::fs::read(flat.join("small")).expect("small"), b"fits");
    }

    /// The stack below a layer with something for every place where the layer directory looks
    /// at the flat tree, and a layer that needs each of them, after many plain files (so that
    /// a worker that lags is far behind when they come).
    fn layers_that_look_below() -> Vec<Vec<u8>> {
        let mut lower = Layer::new();
        lower
            .dir_owned("secret", 0o700, 1000, 1000)
            .dir_with("tmp", 0o1777, 7_000, &[])
            .dir("etc")
            .file("etc/lower", b"lower file")
            .file("etc/passwd", b"root")
            .dir("usr")
            .dir("usr/lib")
            .file("usr/lib/a", b"a")
            .symlink("lib", "usr/lib")
            .dir("gone")
            .file("gone/x", b"x")
            .dir("d2f")
            .file("d2f/sub", b"sub")
            .file("f2d", b"file");
        let mut upper = Layer::new();
        upper.mtime = 1_700_000_000;
        for n in 0..(2 * super::ENTRIES_IN_FLIGHT) {
            upper.file(&format!("bulk/f{n:03}"), &vec![b'b'; n % 7]);
        }
        upper
            // Implicit parents: their metadata comes from below.
            .file("secret/.bashrc", b"rc")
            .file("tmp/x", b"x")
            // A hardlink to a file of the layer below: copied from the flat tree.
            .hardlink("etc/copied", "etc/lower")
            // Whiteouts of what is below, one under a directory of this layer.
            .whiteout("etc/.wh.passwd")
            .whiteout("gone/.wh.x")
            .dir("fresh")
            .file("fresh/kept", b"kept")
            .whiteout("fresh/.wh.never-below")
            // Through a symlink of the layer below.
            .file("lib/b", b"b")
            // A directory that becomes a file, with a whiteout under it; a file that becomes
            // a directory.
            .file("d2f", b"now a file")
            .whiteout("d2f/.wh.sub")
            .file("f2d/inner", b"inner");
        vec![lower.bytes(), upper.bytes()]
    }

    #[test]
    fn a_flat_worker_far_behind_writes_what_one_thread_writes() {
        require_root!();
        let layers = layers_that_look_below();
        let base = tempfile::tempdir().expect("tempdir");
        let dir = |name: &str| {
            let path = base.path().join(name);
            std::fs::create_dir(&path).expect("mkdir");
            path
        };
        let options = LayerDirOptions::new().whiteouts(WhiteoutFormat::Overlay);
        // One pass, the worker waiting before every entry.
        LAG_MICROS.store(2_000, Ordering::Relaxed);
        let flat = dir("flat");
        let mut both = FlatExtractor::new(&flat, &ExtractOptions::new()).expect("flat");
        let mut layer_dirs = Vec::new();
        for (n, layer) in layers.iter().enumerate() {
            let dest = dir(&format!("both-{n}"));
            both.apply_layer_with_layer_dir(&layer[..], &format!("layer{n}"), &dest, &options)
                .expect("one pass");
            layer_dirs.push(dest);
        }
        LAG_MICROS.store(0, Ordering::Relaxed);
        // Each tree on its own, on one thread: the layer directories from the lower layer
        // directories, the flat tree from the layers.
        let plain = dir("plain");
        let mut alone = FlatExtractor::new(&plain, &ExtractOptions::new()).expect("plain");
        let mut lower: Vec<std::path::PathBuf> = Vec::new();
        for (n, layer) in layers.iter().enumerate() {
            alone
                .apply_layer(&layer[..], &format!("layer{n}"))
                .expect("flat");
            let dest = dir(&format!("alone-{n}"));
            let options = options
                .clone()
                .lower_layers(lower.iter().rev().cloned().collect());
            extract_layer_dir(&layer[..], &format!("layer{n}"), &dest, &options)
                .expect("layer directory");
            lower.push(dest);
            assert_eq!(
                snapshot(&layer_dirs[n]),
                snapshot(&lower[n]),
                "layer directory {n}"
            );
            assert_eq!(
                owners_and_times(&layer_dirs[n]),
                owners_and_times(&lower[n]),
                "layer directory {n}"
            );
        }
        assert_eq!(snapshot(&flat), snapshot(&plain));
        assert_eq!(owners_and_times(&flat), owners_and_times(&plain));
        // What each look below found, in the layer directory of the upper layer.
        let upper = &layer_dirs[1];
        let meta = |p: &str| std::fs::symlink_metadata(upper.join(p)).expect(p);
        assert_eq!(
            (meta("secret").mode() & 0o7777, meta("secret").uid()),
            (0o700, 1000)
        );
        assert_eq!(
            (meta("tmp").mode() & 0o7777, meta("tmp").mtime()),
            (0o1777, 7_000)
        );
        assert_eq!(
            std::fs::read(upper.join("etc/copied")).expect("copied"),
            b"lower file"
        );
        let whiteout = |p: &str| {
            use std::os::unix::fs::FileTypeExt as _;
            meta(p).file_type().is_char_device() && meta(p).rdev() == 0
        };
        assert!(whiteout("etc/passwd") && whiteout("gone/x"));
        assert!(upper.join("usr/lib/b").exists() && !upper.join("lib").exists());
        assert!(meta("d2f").is_file());
        assert!(
            whiteout("fresh/never-below"),
            "its parent is in the stack below"
        );
    }
}
