//! The garbage-collection lock of a repository shared by several publisher nodes (issue 30).
//!
//! On one host [`crate::Publisher::gc_lock`] is a `flock` in the publisher's state directory.
//! Behind a gateway other nodes have state directories of their own, so a gc there also takes a
//! lock in the repository itself: the record `.metadata/.gc/lock.json` naming the host, process
//! and start time of the gc that holds it. It is read and written inside one server
//! transaction on its own path (a gateway lease: two nodes cannot both find it free), with the
//! node brought to the newest revision first (see `fresh.rs`), and published at once; the gc
//! removes it again, the same way, when it ends. A second gc (on any node) finding it refuses
//! to start, naming the holder ([`PublishError::GcRunning`]).
//!
//! A gc that died leaves the record behind. It is cleared by the next gc when it names this
//! host and a process that no longer runs here, or when it is older than [`GC_LOCK_EXPIRY`];
//! an operator who knows the holder is gone clears it at once with
//! `cvmfs_server transaction REPO/.metadata/.gc/lock.json`,
//! `rm /cvmfs/REPO/.metadata/.gc/lock.json`, `cvmfs_server publish REPO`.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::{CvmfsOptions, CvmfsPublisher};
use crate::error::{PublishError, io_err};
use crate::layout::RepoPath;
use ducc_oci::RepositoryName;

/// How long a gc lock record holds when its holder cannot be checked (another host): a gc
/// running longer than this can be joined by a second one.
pub const GC_LOCK_EXPIRY: Duration = Duration::from_secs(24 * 3600);

/// Who holds a repository's gc lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LockRecord {
    /// The holder's host name.
    pub(crate) host: String,
    /// The holder's process id.
    pub(crate) pid: u32,
    /// When it took the lock (seconds since the epoch).
    pub(crate) started: u64,
}

impl LockRecord {
    fn ours(now: u64) -> LockRecord {
        LockRecord {
            host: host_name(),
            pid: std::process::id(),
            started: now,
        }
    }

    /// Whether the holder is known to be gone: a process of this host that no longer runs, or
    /// a record older than [`GC_LOCK_EXPIRY`].
    fn is_stale(&self, now: u64) -> bool {
        let dead_here = self.host == host_name()
            && self.pid != std::process::id()
            && !Path::new(&format!("/proc/{}", self.pid)).exists();
        dead_here || now.saturating_sub(self.started) > GC_LOCK_EXPIRY.as_secs()
    }
}

/// This host's name (`/proc/sys/kernel/hostname`), or `unknown`.
fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A held repository gc lock: released (its record removed) when dropped.
#[derive(Debug)]
pub(crate) struct RepoGcLock {
    repo: RepositoryName,
    options: CvmfsOptions,
    record: LockRecord,
}

impl CvmfsPublisher {
    fn gc_lock_path(&self) -> RepoPath {
        self.layout.gc_dir().child("lock.json")
    }

    /// The options this publisher was opened with, resolved (to open it again).
    fn resolved_options(&self) -> CvmfsOptions {
        CvmfsOptions::new()
            .server(&self.server)
            .mount_dir(&self.mount_dir)
            .state_dir(&self.state_dir)
            .gateway(self.gateway)
            .mounted(self.mounted)
    }

    /// Takes the repository's gc lock (see the module documentation), or fails with
    /// [`PublishError::GcRunning`] naming its holder. `None` where one host publishes (no
    /// gateway) or the repository is not mounted here (nothing can be read fresh).
    pub(crate) fn take_repo_gc_lock(&self) -> Result<Option<RepoGcLock>, PublishError> {
        if !self.reads_fresh() {
            return Ok(None);
        }
        let path = self.gc_lock_path();
        let now = now_secs();
        let fresh = self.open_fresh(&path)?;
        let at = self.mount(&path);
        if let Some(holder) = read_record(&at)? {
            if !holder.is_stale(now) {
                fresh.abort()?;
                return Err(PublishError::GcRunning {
                    record: at,
                    host: holder.host,
                    pid: holder.pid,
                    started: holder.started,
                    expires: holder.started + GC_LOCK_EXPIRY.as_secs(),
                });
            }
            tracing::warn!(
                repo = %self.repo,
                host = %holder.host,
                pid = holder.pid,
                started = holder.started,
                "the gc lock of a garbage collection that is gone is taken over"
            );
        }
        let record = LockRecord::ours(now);
        let bytes = serde_json::to_vec_pretty(&record).unwrap_or_default();
        fresh.publish_with(|| {
            if let Some(dir) = at.parent() {
                fs::create_dir_all(dir).map_err(io_err("create", dir))?;
            }
            fs::write(&at, &bytes).map_err(io_err("write", at.as_path()))
        })?;
        tracing::info!(repo = %self.repo, "repository gc lock taken");
        let repo = RepositoryName::parse(&self.repo).map_err(|e| PublishError::CorruptFile {
            path: at.clone(),
            reason: e.to_string(),
        })?;
        Ok(Some(RepoGcLock {
            repo,
            options: self.resolved_options(),
            record,
        }))
    }

    /// Removes the gc lock record if it is `ours` (a record of someone else is left alone).
    fn release_repo_gc_lock(&self, ours: &LockRecord) -> Result<(), PublishError> {
        let path = self.gc_lock_path();
        let fresh = self.open_fresh(&path)?;
        let at = self.mount(&path);
        if read_record(&at)?.as_ref() != Some(ours) {
            tracing::warn!(repo = %self.repo, "the gc lock record is no longer ours: left alone");
            return fresh.abort();
        }
        fresh.publish_with(|| fs::remove_file(&at).map_err(io_err("remove", at.as_path())))?;
        tracing::info!(repo = %self.repo, "repository gc lock released");
        Ok(())
    }
}

/// The lock record at `at`; `None` when there is none. One that cannot be parsed is an error:
/// nobody knows whether its gc still runs.
fn read_record(at: &Path) -> Result<Option<LockRecord>, PublishError> {
    let bytes = match fs::read(at) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", at)(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| PublishError::CorruptFile {
            path: at.to_owned(),
            reason: format!("not a gc lock record ({e}); remove it if no gc runs"),
        })
}

impl Drop for RepoGcLock {
    fn drop(&mut self) {
        let released = CvmfsPublisher::open(&self.repo, self.options.clone())
            .and_then(|publisher| publisher.release_repo_gc_lock(&self.record));
        if let Err(e) = released {
            tracing::warn!(
                repo = %self.repo.name(),
                error = %e,
                "the repository gc lock could not be released: the next gc takes it over once this process is gone"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_of_a_gone_process_of_this_host_or_past_its_expiry_is_stale() {
        let now = now_secs();
        let live = LockRecord::ours(now);
        assert!(!live.is_stale(now), "our own, fresh");
        let parent = LockRecord {
            pid: std::os::unix::process::parent_id(),
            ..live.clone()
        };
        assert!(!parent.is_stale(now), "a running process of this host");
        // A pid above the kernel's limit never runs.
        let gone = LockRecord {
            pid: 4_194_305,
            ..live.clone()
        };
        assert!(gone.is_stale(now));
        let elsewhere = LockRecord {
            host: format!("{}-not-this-one", host_name()),
            pid: 4_194_305,
            started: now - 3600,
        };
        assert!(!elsewhere.is_stale(now), "another host's cannot be checked");
        assert!(
            elsewhere.is_stale(now + GC_LOCK_EXPIRY.as_secs()),
            "until it expires"
        );
    }

    #[test]
    fn an_unreadable_lock_record_is_an_error_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock.json");
        assert_eq!(read_record(&path).unwrap(), None);
        fs::write(&path, b"{\"host\": 3").unwrap();
        let err = read_record(&path).unwrap_err().to_string();
        assert!(err.contains("lock.json"), "{err}");
        let record = LockRecord::ours(12);
        fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
        assert_eq!(read_record(&path).unwrap(), Some(record));
    }
}
