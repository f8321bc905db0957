//! Cross-process locks built on `flock`: a lock dies with its process, so a `kill -9` never
//! leaves a stale lock behind.
//!
//! Lease locks: every holder owns a file `lease-*.lock` in the lock directory, flocked for as
//! long as it holds the lease, whose content is the lease path. A new lease is granted when no
//! live holder's path overlaps it; the directory listing is read and changed only under
//! `table.lock`. Overlap is the gateway's string-prefix rule (`a/b` blocks `a/bc`): stricter
//! than path components, so a local lock never grants what a gateway would refuse.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{FlockOperation, flock};

use crate::layout::RepoPath;

/// A file held with an exclusive `flock` until dropped.
#[derive(Debug)]
pub(crate) struct FileLock {
    _file: File,
}

impl FileLock {
    /// Blocks until the exclusive lock on `path` (created if missing) is ours.
    pub(crate) fn exclusive(path: &Path) -> io::Result<Self> {
        let file = open_lock_file(path)?;
        flock(&file, FlockOperation::LockExclusive)?;
        Ok(Self { _file: file })
    }

    /// Takes the exclusive lock on `path` if nobody holds it; `None` when someone does.
    /// A shared lock: many holders at once, none while an exclusive one is held.
    pub(crate) fn shared(path: &Path) -> io::Result<Self> {
        let file = open_lock_file(path)?;
        flock(&file, FlockOperation::LockShared)?;
        Ok(Self { _file: file })
    }

    pub(crate) fn try_exclusive(path: &Path) -> io::Result<Option<Self>> {
        let file = open_lock_file(path)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(Self { _file: file })),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

fn open_lock_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// Whether two leases may not be held at once (string-prefix rule; the root overlaps all).
pub(crate) fn leases_overlap(a: &RepoPath, b: &RepoPath) -> bool {
    a.as_str().starts_with(b.as_str()) || b.as_str().starts_with(a.as_str())
}

/// The lease table of one repository.
#[derive(Debug, Clone)]
pub(crate) struct LeaseLocks {
    dir: PathBuf,
}

/// A granted lease; dropping it releases the lease.
#[derive(Debug)]
pub(crate) struct LeaseGuard {
    dir: PathBuf,
    path: PathBuf,
    _lock: FileLock,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name no other transaction of any process on this host uses.
pub(crate) fn unique_name(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl LeaseLocks {
    /// The table kept in `dir` (created if missing).
    pub(crate) fn new(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// Blocks until no live holder overlaps `lease`, then holds it.
    pub(crate) fn acquire(&self, lease: &RepoPath) -> io::Result<LeaseGuard> {
        self.take(lease, true, &[])?
            .ok_or_else(|| io::Error::other("lease not granted"))
    }

    /// Holds `lease` if no live holder overlaps it now, the leases of `ours` not counting;
    /// `None` when one does. `ours` are a caller's own leases that overlap `lease` by string
    /// prefix only (`a:1.0` and `a:1.0.1`), held for commits it publishes one after another.
    pub(crate) fn try_acquire_beside(
        &self,
        lease: &RepoPath,
        ours: &[&LeaseGuard],
    ) -> io::Result<Option<LeaseGuard>> {
        self.take(lease, false, ours)
    }

    fn take(
        &self,
        lease: &RepoPath,
        wait: bool,
        ours: &[&LeaseGuard],
    ) -> io::Result<Option<LeaseGuard>> {
        loop {
            let table = FileLock::exclusive(&self.dir.join("table.lock"))?;
            match self.find_live_overlap(lease, ours)? {
                None => {
                    let path = self.dir.join(unique_name("lease-") + ".lock");
                    let mut file = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&path)?;
                    flock(&file, FlockOperation::NonBlockingLockExclusive)?;
                    file.write_all(lease.as_str().as_bytes())?;
                    drop(table);
                    tracing::debug!(lease = %lease, "lease granted");
                    return Ok(Some(LeaseGuard {
                        dir: self.dir.clone(),
                        path,
                        _lock: FileLock { _file: file },
                    }));
                }
                Some(_) if !wait => return Ok(None),
                Some((holder, other)) => {
                    drop(table);
                    tracing::debug!(lease = %lease, holder = %other, "waiting for overlapping lease");
                    // Wait until the holder lets go (or dies), then look again.
                    flock(&holder, FlockOperation::LockExclusive)?;
                }
            }
        }
    }

    /// A live holder whose lease overlaps `lease`, opened; stale entries are removed on the way.
    /// Lease files whose holder is gone (they are removed lazily when a lease overlaps them);
    /// removed unless `dry_run`. Returns their paths.
    pub(crate) fn remove_dead(&self, dry_run: bool) -> Result<Vec<PathBuf>, crate::PublishError> {
        self.remove_dead_io(dry_run)
            .map_err(crate::error::io_err("clean", self.dir.as_path()))
    }

    fn remove_dead_io(&self, dry_run: bool) -> io::Result<Vec<PathBuf>> {
        let _table = FileLock::exclusive(&self.dir.join("table.lock"))?;
        let mut dead = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if !entry.file_name().to_string_lossy().starts_with("lease-") {
                continue;
            }
            let file = match File::open(entry.path()) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {
                    if !dry_run {
                        fs::remove_file(entry.path())?;
                    }
                    dead.push(entry.path());
                }
                Err(e) if e == rustix::io::Errno::WOULDBLOCK => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(dead)
    }

    fn find_live_overlap(
        &self,
        lease: &RepoPath,
        ours: &[&LeaseGuard],
    ) -> io::Result<Option<(File, String)>> {
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if ours.iter().any(|g| g.path == entry.path()) {
                continue;
            }
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with("lease-") {
                continue;
            }
            let mut file = match File::open(entry.path()) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let mut text = String::new();
            file.read_to_string(&mut text)?;
            let Ok(other) = RepoPath::new(&text) else {
                continue;
            };
            if !leases_overlap(lease, &other) {
                continue;
            }
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {
                    // Its holder died without cleaning up.
                    fs::remove_file(entry.path())?;
                }
                Err(e) if e == rustix::io::Errno::WOULDBLOCK => return Ok(Some((file, text))),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        // Remove the entry under the table lock so a scanner never reads a half-gone entry; the
        // flock itself goes when the file closes.
        let table = FileLock::exclusive(&self.dir.join("table.lock"));
        if let Err(e) = fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove lease file");
        }
        drop(table);
    }
}

/// The staging directories below `root` (each `<id>` beside its lock file `<id>.lock`, the layout
/// both publishers use) whose owner is gone: the lock file is not held, or is missing.
pub(crate) fn dead_staging(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut dead = Vec::new();
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".lock") || !entry.file_type()?.is_dir() {
            continue;
        }
        let lock = root.join(format!("{name}.lock"));
        let held = match fs::metadata(&lock) {
            Ok(_) => FileLock::try_exclusive(&lock)?.is_none(),
            Err(_) => false,
        };
        if !held {
            dead.push(entry.path());
        }
    }
    dead.sort();
    Ok(dead)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    fn p(s: &str) -> RepoPath {
        RepoPath::new(s).unwrap()
    }

    #[test]
    fn overlap_follows_the_gateway_string_prefix_rule() {
        let cases = [
            ("a/b", "a/b", true),
            ("a/b", "a/b/c", true),
            ("a/b", "a/bc", true),
            ("", "x", true),
            ("a/b", "a/c", false),
            (".layers/0f", ".flat/0f", false),
        ];
        for (a, b, want) in cases {
            assert_eq!(leases_overlap(&p(a), &p(b)), want, "{a} vs {b}");
            assert_eq!(leases_overlap(&p(b), &p(a)), want, "{b} vs {a}");
        }
    }

    #[test]
    fn disjoint_leases_are_held_at_once_overlapping_ones_wait() {
        let dir = tempfile::tempdir().unwrap();
        let locks = LeaseLocks::new(dir.path()).unwrap();
        let a = locks.acquire(&p("x/a")).unwrap();
        let _b = locks.acquire(&p("x/b")).unwrap();
        let (tx, rx) = mpsc::channel();
        let locks2 = locks.clone();
        let waiter = std::thread::spawn(move || {
            let _g = locks2.acquire(&p("x/a/deeper")).unwrap();
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "granted while held"
        );
        drop(a);
        rx.recv_timeout(Duration::from_secs(10))
            .expect("granted after release");
        waiter.join().unwrap();
    }

    #[test]
    fn a_dead_holders_entry_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let locks = LeaseLocks::new(dir.path()).unwrap();
        // An entry whose file nobody holds, as a killed process leaves it.
        fs::write(dir.path().join("lease-dead.lock"), "x").unwrap();
        let _g = locks.acquire(&p("x")).unwrap();
        assert!(!dir.path().join("lease-dead.lock").exists());
    }
}
