//! The `local` publisher: the repository is a plain directory tree.
//!
//! A transaction writes into its own staging directory on the same filesystem; at commit a
//! journal is written and each staged path is moved into place with one `rename` (directories
//! that already exist are swapped with `renameat2(RENAME_EXCHANGE)`), so a reader sees the old
//! tree or the new one, never half. A process killed before the journal exists leaves the
//! published tree untouched; one killed during the moves leaves a journal that the next
//! [`LocalPublisher::open`] finishes. Leftover staging of dead processes is removed then.
//!
//! State lives next to the repositories, outside the published tree:
//! `ROOT/.ducc/<repo>/locks/` (lease locks) and `ROOT/.ducc/<repo>/staging/`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{CWD, RenameFlags, renameat_with};
use serde::{Deserialize, Serialize};

use crate::error::{PublishError, io_err};
use crate::layout::{CATALOG_MARKER, RepoPath};
use crate::lock::{FileLock, LeaseGuard, LeaseLocks, dead_staging, unique_name};
use crate::publisher::{
    FillError, FillHints, GcGuard, GcLock, Group, IngestOptions, OverlaySupport, Publisher,
    Transaction, Ungrouped, check_lease, read_link_at, read_small,
};
use ducc_oci::RepositoryName;

/// Publishes into a directory: the repository `REPO` lives at `ROOT/REPO`.
///
/// ```
/// use ducc_cvmfs::{LocalPublisher, Publisher, RepoPath};
/// use ducc_oci::RepositoryName;
///
/// let root = tempfile::tempdir().unwrap();
/// let repo = RepositoryName::parse("unpacked.example.org").unwrap();
/// let publisher = LocalPublisher::open(root.path(), &repo).unwrap();
/// let mut tx = publisher.begin(&RepoPath::new("notes").unwrap()).unwrap();
/// tx.write_file(&RepoPath::new("notes/hello.txt").unwrap(), &mut &b"hi"[..]).unwrap();
/// tx.commit().unwrap();
/// let published = root.path().join("unpacked.example.org/notes/hello.txt");
/// assert_eq!(std::fs::read(published).unwrap(), b"hi");
/// ```
#[derive(Debug)]
pub struct LocalPublisher {
    repo_dir: PathBuf,
    state_dir: PathBuf,
    locks: LeaseLocks,
    overlay: OverlaySupport,
}

/// One change of a transaction, in the order made.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    /// The staged tree at this path replaces whatever is published there.
    Replace(RepoPath),
    /// Whatever is published at this path goes away.
    Remove(RepoPath),
}

/// What a commit does, written before the first move so an interrupted commit can be finished.
#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    lease: String,
    ops: Vec<JournalOp>,
}

#[derive(Debug, Serialize, Deserialize)]
enum JournalOp {
    /// `ino` identifies the staged entry: once the published path has it, the move is done.
    Replace {
        path: String,
        ino: u64,
    },
    Remove {
        path: String,
    },
}

impl LocalPublisher {
    /// Opens (creating if needed) the repository `ROOT/<repo name>`, finishes commits that a
    /// killed process left half done, and removes staging that dead processes left behind.
    /// Layer whiteouts can be stored in overlay form when this process may (root, or
    /// `CAP_MKNOD` and `CAP_SYS_ADMIN`).
    ///
    /// # Errors
    /// When the directories cannot be created or recovery fails.
    pub fn open(root: &Path, repo: &RepositoryName) -> Result<Self, PublishError> {
        let repo_dir = root.join(repo.name());
        let state_dir = root.join(".ducc").join(repo.name());
        for dir in [&repo_dir, &state_dir.join("staging")] {
            fs::create_dir_all(dir).map_err(io_err("create", dir.as_path()))?;
        }
        let locks_dir = state_dir.join("locks");
        let locks = LeaseLocks::new(&locks_dir).map_err(io_err("create", locks_dir))?;
        let overlay = if may_write_overlay_whiteouts() {
            OverlaySupport::Full
        } else {
            OverlaySupport::No {
                reason: "creating whiteout devices and trusted.* xattrs needs root or \
                         CAP_MKNOD and CAP_SYS_ADMIN"
                    .into(),
            }
        };
        let publisher = Self {
            repo_dir,
            state_dir,
            locks,
            overlay,
        };
        publisher.recover()?;
        Ok(publisher)
    }

    /// The directory that holds the published repository tree.
    pub fn repository_dir(&self) -> &Path {
        &self.repo_dir
    }

    fn staging_root(&self) -> PathBuf {
        self.state_dir.join("staging")
    }

    fn staging_table(&self) -> Result<FileLock, PublishError> {
        let path = self.state_dir.join("staging.lock");
        FileLock::exclusive(&path).map_err(io_err("lock", path))
    }

    /// Finishes or throws away the staging of transactions whose process is gone.
    fn recover(&self) -> Result<(), PublishError> {
        let table = self.staging_table()?;
        let root = self.staging_root();
        let mut dead = Vec::new();
        for entry in fs::read_dir(&root).map_err(io_err("read", root.as_path()))? {
            let entry = entry.map_err(io_err("read", root.as_path()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".lock") else {
                if !root.join(format!("{name}.lock")).exists() {
                    // A staging directory whose lock file is gone: its owner was cleaning up.
                    dead.push((name, None));
                }
                continue;
            };
            let lock_path = entry.path();
            if let Some(lock) =
                FileLock::try_exclusive(&lock_path).map_err(io_err("lock", lock_path.as_path()))?
            {
                dead.push((id.to_owned(), Some(lock)));
            }
        }
        drop(table);
        for (id, lock) in dead {
            let dir = root.join(&id);
            let journal_path = dir.join("journal");
            if journal_path.exists() {
                let text =
                    fs::read(&journal_path).map_err(io_err("read", journal_path.as_path()))?;
                let journal: Journal =
                    serde_json::from_slice(&text).map_err(|source| PublishError::Journal {
                        path: journal_path.clone(),
                        source,
                    })?;
                let lease = RepoPath::new(&journal.lease).map_err(|_| PublishError::Journal {
                    path: journal_path.clone(),
                    source: serde::de::Error::custom("lease is not a clean path"),
                })?;
                let _guard = self
                    .locks
                    .acquire(&lease)
                    .map_err(|source| PublishError::Lock {
                        lease: lease.clone(),
                        source,
                    })?;
                tracing::info!(staging = %dir.display(), "finishing a commit interrupted by a killed process");
                apply_journal(&self.repo_dir, &dir, &journal)?;
            } else {
                tracing::info!(staging = %dir.display(), "removing staging left by a dead process");
            }
            remove_all(&dir)?;
            if lock.is_some() {
                let lock_path = root.join(format!("{id}.lock"));
                fs::remove_file(&lock_path).map_err(io_err("remove", lock_path))?;
            }
        }
        Ok(())
    }
}

impl Publisher for LocalPublisher {
    fn begin(&self, lease: &RepoPath) -> Result<Box<dyn Transaction + '_>, PublishError> {
        let guard = self
            .locks
            .acquire(lease)
            .map_err(|source| PublishError::Lock {
                lease: lease.clone(),
                source,
            })?;
        // The lock file exists and is held before the directory does, so recovery never takes
        // a starting transaction for a dead one.
        let table = self.staging_table()?;
        let id = unique_name("tx-");
        let lock_path = self.staging_root().join(format!("{id}.lock"));
        let owner = FileLock::exclusive(&lock_path).map_err(io_err("lock", lock_path.as_path()))?;
        let staging = self.staging_root().join(&id);
        for dir in [staging.join("tree"), staging.join("trash")] {
            fs::create_dir_all(&dir).map_err(io_err("create", dir))?;
        }
        drop(table);
        tracing::debug!(lease = %lease, staging = %staging.display(), "local transaction opened");
        Ok(Box::new(LocalTransaction {
            publisher: self,
            lease: lease.clone(),
            staging,
            lock_path,
            ops: Vec::new(),
            journal_written: false,
            finished: false,
            owner: Some(owner),
            _lease: guard,
        }))
    }

    fn published_path(&self, path: &RepoPath) -> PathBuf {
        self.repo_dir.join(path.as_path())
    }

    fn overlay_support(&self) -> OverlaySupport {
        self.overlay.clone()
    }

    fn group(&self) -> Box<dyn Group + '_> {
        // Each commit is a few renames: nothing to gain from publishing transactions together.
        Box::new(Ungrouped::new(self))
    }

    fn gc_lock(&self, kind: GcLock) -> Result<GcGuard, PublishError> {
        GcGuard::take(&self.state_dir.join("gc.lock"), kind)
    }

    fn remove_leftovers(&self, dry_run: bool) -> Result<Vec<PathBuf>, PublishError> {
        let root = self.staging_root();
        let mut found = {
            let _table = self.staging_table()?;
            dead_staging(&root).map_err(io_err("read", root.as_path()))?
        };
        if !dry_run && !found.is_empty() {
            // Finishes a dead commit's journal before its staging goes.
            self.recover()?;
        }
        found.extend(self.locks.remove_dead(dry_run)?);
        Ok(found)
    }

    fn prefers_overlay_whiteouts(&self) -> bool {
        true
    }
}

/// Root, or both `CAP_MKNOD` (27) and `CAP_SYS_ADMIN` (21) effective.
fn may_write_overlay_whiteouts() -> bool {
    if ducc_oci::is_root() {
        return true;
    }
    let Ok(status) = fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 27) != 0 && caps & (1 << 21) != 0)
}

struct LocalTransaction<'p> {
    publisher: &'p LocalPublisher,
    lease: RepoPath,
    staging: PathBuf,
    lock_path: PathBuf,
    ops: Vec<Op>,
    journal_written: bool,
    finished: bool,
    owner: Option<FileLock>,
    _lease: LeaseGuard,
}

impl LocalTransaction<'_> {
    fn staged(&self, path: &RepoPath) -> PathBuf {
        self.staging.join("tree").join(path.as_path())
    }

    fn published(&self, path: &RepoPath) -> PathBuf {
        self.publisher.repo_dir.join(path.as_path())
    }

    /// Whether `path` lies inside a tree this transaction replaces (so it is written there).
    fn covered(&self, path: &RepoPath) -> bool {
        self.ops
            .iter()
            .any(|op| matches!(op, Op::Replace(q) if path.starts_with(q)))
    }

    /// Whether `path` lies under a path this transaction removes.
    fn removed(&self, path: &RepoPath) -> bool {
        self.ops
            .iter()
            .any(|op| matches!(op, Op::Remove(q) if path.starts_with(q)))
    }

    /// The metadata of what `path` will be after commit, as far as this transaction has decided.
    fn future_metadata(&self, path: &RepoPath) -> Option<fs::Metadata> {
        if let Ok(m) = fs::symlink_metadata(self.staged(path)) {
            return Some(m);
        }
        if self.covered(path) || self.removed(path) {
            return None;
        }
        fs::symlink_metadata(self.published(path)).ok()
    }

    /// Where what `path` will be after commit can be read now: staged, or published unless
    /// this transaction replaces or removes it (`None`).
    fn future_source(&self, path: &RepoPath) -> Option<PathBuf> {
        let staged = self.staged(path);
        if fs::symlink_metadata(&staged).is_ok() {
            return Some(staged);
        }
        if self.covered(path) || self.removed(path) {
            return None;
        }
        Some(self.published(path))
    }

    fn record_replace(&mut self, path: &RepoPath) {
        if !self.covered(path) {
            self.ops.push(Op::Replace(path.clone()));
        }
    }

    /// Makes the staged parents of `path`, after checking that none of them is (or will be) a
    /// non-directory: a commit must not fail half-way on something known now.
    fn staged_parent(&self, path: &RepoPath) -> Result<PathBuf, PublishError> {
        for ancestor in path.ancestors() {
            if self.future_metadata(&ancestor).is_some_and(|m| !m.is_dir()) {
                return Err(PublishError::NotADirectory { path: ancestor });
            }
        }
        let target = self.staged(path);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io_err("create", parent))?;
        }
        Ok(target)
    }

    /// Checks that a file or symlink may go at `path`, and makes room in staging.
    fn prepare_leaf(&mut self, path: &RepoPath) -> Result<PathBuf, PublishError> {
        check_lease(&self.lease, path)?;
        if path.is_root() || self.future_metadata(path).is_some_and(|m| m.is_dir()) {
            return Err(PublishError::AlreadyExists { path: path.clone() });
        }
        let target = self.staged_parent(path)?;
        match fs::remove_file(&target) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", target)(e)),
        }
        Ok(target)
    }

    /// Creates the staged directory `dir` (which must not exist), lets `build` write its tree,
    /// and records it for the commit; a failed build leaves nothing staged.
    fn build_dir(
        &mut self,
        dir: &RepoPath,
        options: IngestOptions,
        build: impl FnOnce(&Path) -> Result<(), PublishError>,
    ) -> Result<(), PublishError> {
        check_lease(&self.lease, dir)?;
        if dir.is_root() || self.future_metadata(dir).is_some() {
            return Err(PublishError::AlreadyExists { path: dir.clone() });
        }
        let target = self.staged_parent(dir)?;
        fs::create_dir(&target).map_err(io_err("create", target.as_path()))?;
        if let Err(e) = build(&target) {
            // The half-written tree must not be committed with the rest.
            remove_all(&target)?;
            return Err(e);
        }
        if options.catalog {
            let marker = target.join(CATALOG_MARKER);
            if fs::symlink_metadata(&marker).is_err() {
                File::create(&marker).map_err(io_err("create", marker))?;
            }
        }
        self.record_replace(dir);
        Ok(())
    }

    fn finish(&mut self) {
        self.finished = true;
        if let Err(e) = remove_all(&self.staging) {
            tracing::warn!(error = %e, "cannot remove transaction staging");
        }
        if let Err(e) = fs::remove_file(&self.lock_path) {
            tracing::warn!(path = %self.lock_path.display(), error = %e, "cannot remove staging lock");
        }
        self.owner = None;
    }

    fn do_commit(&mut self) -> Result<(), PublishError> {
        let mut ops = Vec::with_capacity(self.ops.len());
        for op in &self.ops {
            ops.push(match op {
                Op::Replace(path) => {
                    let staged = self.staged(path);
                    let meta = fs::symlink_metadata(&staged).map_err(io_err("inspect", staged))?;
                    JournalOp::Replace {
                        path: path.as_str().to_owned(),
                        ino: meta.ino(),
                    }
                }
                Op::Remove(path) => JournalOp::Remove {
                    path: path.as_str().to_owned(),
                },
            });
        }
        let journal = Journal {
            lease: self.lease.as_str().to_owned(),
            ops,
        };
        let tmp = self.staging.join("journal.tmp");
        let text = serde_json::to_vec(&journal).map_err(|source| PublishError::Journal {
            path: tmp.clone(),
            source,
        })?;
        let mut file = File::create(&tmp).map_err(io_err("create", tmp.as_path()))?;
        file.write_all(&text)
            .and_then(|()| file.sync_all())
            .map_err(io_err("write", tmp.as_path()))?;
        // The rename is the commit point: from here on the commit is finished, now or at the
        // next open.
        let path = self.staging.join("journal");
        fs::rename(&tmp, &path).map_err(io_err("rename", tmp))?;
        self.journal_written = true;
        apply_journal(&self.publisher.repo_dir, &self.staging, &journal)
    }
}

impl Transaction for LocalTransaction<'_> {
    fn lease(&self) -> &RepoPath {
        &self.lease
    }

    fn ingest_tar(
        &mut self,
        dir: &RepoPath,
        tar: &mut dyn Read,
        options: IngestOptions,
    ) -> Result<(), PublishError> {
        self.build_dir(dir, options, |target| {
            ducc_unpack::extract_canonical_tar(
                tar,
                dir.as_str(),
                target,
                &ducc_unpack::ExtractOptions::new(),
            )
            .map(|_| ())
            .map_err(|source| PublishError::Unpack {
                dir: dir.clone(),
                source,
            })
        })
    }

    fn fill_dir(
        &mut self,
        dir: &RepoPath,
        options: IngestOptions,
        fill: &mut dyn FnMut(&Path, FillHints) -> Result<(), FillError>,
    ) -> Result<(), PublishError> {
        // The tree is built where it is published from: nothing to record.
        self.build_dir(dir, options, |target| {
            fill(target, FillHints::default()).map_err(|source| PublishError::Fill {
                dir: dir.clone(),
                source,
            })
        })
    }

    fn write_file(&mut self, path: &RepoPath, content: &mut dyn Read) -> Result<(), PublishError> {
        let target = self.prepare_leaf(path)?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&target)
            .map_err(io_err("create", target.as_path()))?;
        io::copy(content, &mut file).map_err(io_err("write", target.as_path()))?;
        // The umask must not decide the published mode.
        fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .map_err(io_err("chmod", target))?;
        self.record_replace(path);
        Ok(())
    }

    fn read_file(&self, path: &RepoPath) -> Result<Option<Vec<u8>>, PublishError> {
        check_lease(&self.lease, path)?;
        match self.future_source(path) {
            Some(at) => read_small(&at),
            None => Ok(None),
        }
    }

    fn read_link(&self, path: &RepoPath) -> Result<Option<PathBuf>, PublishError> {
        check_lease(&self.lease, path)?;
        match self.future_source(path) {
            Some(at) => read_link_at(&at),
            None => Ok(None),
        }
    }

    fn symlink(&mut self, path: &RepoPath, target: &Path) -> Result<(), PublishError> {
        let staged = self.prepare_leaf(path)?;
        std::os::unix::fs::symlink(target, &staged).map_err(io_err("create symlink", staged))?;
        self.record_replace(path);
        Ok(())
    }

    fn remove(&mut self, path: &RepoPath) -> Result<(), PublishError> {
        check_lease(&self.lease, path)?;
        let staged = self.staged(path);
        if fs::symlink_metadata(&staged).is_ok() {
            remove_all(&staged)?;
        }
        let strictly_inside_replaced = self
            .ops
            .iter()
            .any(|op| matches!(op, Op::Replace(q) if path.starts_with(q) && path != q));
        if !strictly_inside_replaced {
            self.ops.retain(|op| match op {
                Op::Replace(q) | Op::Remove(q) => !q.starts_with(path),
            });
            self.ops.push(Op::Remove(path.clone()));
        }
        Ok(())
    }

    fn commit(mut self: Box<Self>) -> Result<(), PublishError> {
        let result = self.do_commit();
        match &result {
            Ok(()) => {
                tracing::debug!(lease = %self.lease, "local transaction committed");
                self.finish();
            }
            // A written journal must survive for the next open to finish the commit.
            Err(_) if self.journal_written => self.finished = true,
            Err(_) => self.finish(),
        }
        result
    }

    fn abort(mut self: Box<Self>) -> Result<(), PublishError> {
        self.finish();
        Ok(())
    }
}

impl Drop for LocalTransaction<'_> {
    fn drop(&mut self) {
        if !self.finished {
            tracing::debug!(lease = %self.lease, "local transaction dropped without commit: aborted");
            self.finish();
        }
    }
}

/// Applies a journal's moves from `staging/tree` into `repo_dir`, skipping those a previous
/// attempt finished (listed in `staging/done`), then empties the trash.
fn apply_journal(repo_dir: &Path, staging: &Path, journal: &Journal) -> Result<(), PublishError> {
    let done_path = staging.join("done");
    let done = match File::open(&done_path) {
        Ok(f) => BufReader::new(f).lines().count(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io_err("read", done_path)(e)),
    };
    let mut done_log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&done_path)
        .map_err(io_err("open", done_path.as_path()))?;
    let trash = staging.join("trash");
    fs::create_dir_all(&trash).map_err(io_err("create", trash.as_path()))?;
    for (i, op) in journal.ops.iter().enumerate().skip(done) {
        match op {
            JournalOp::Replace { path, ino } => {
                let dst = repo_dir.join(path);
                let src = staging.join("tree").join(path);
                let already = fs::symlink_metadata(&dst).is_ok_and(|m| m.ino() == *ino);
                let staged = fs::symlink_metadata(&src).is_ok();
                if !already && !staged {
                    // Nothing to move: never let one lost entry block every later open.
                    tracing::warn!(path = %dst.display(), "staged entry of an interrupted commit is gone; skipped");
                } else if !already {
                    if let Some(parent) = dst.parent() {
                        fs::create_dir_all(parent).map_err(io_err("create", parent))?;
                    }
                    if fs::symlink_metadata(&dst).is_ok() {
                        // Atomic for readers: they see the old entry or the new one.
                        renameat_with(CWD, &src, CWD, &dst, RenameFlags::EXCHANGE)
                            .map_err(|e| io_err("swap into place", dst.as_path())(e.into()))?;
                    } else {
                        fs::rename(&src, &dst).map_err(io_err("move into place", dst.as_path()))?;
                    }
                }
                // After a swap the old entry sits where the staged one was.
                if fs::symlink_metadata(&src).is_ok() {
                    let old = trash.join(i.to_string());
                    fs::rename(&src, &old).map_err(io_err("move to trash", src))?;
                }
            }
            JournalOp::Remove { path } => {
                let dst = repo_dir.join(path);
                if fs::symlink_metadata(&dst).is_ok() {
                    let old = trash.join(format!("{i}-removed"));
                    fs::rename(&dst, &old).map_err(io_err("move to trash", dst))?;
                }
            }
        }
        writeln!(done_log, "{i}").map_err(io_err("write", done_path.as_path()))?;
        #[cfg(test)]
        tests::pause_after_op(i);
    }
    remove_all(&trash)
}

/// `rm -rf`, tolerating a path that is already gone.
fn remove_all(path: &Path) -> Result<(), PublishError> {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

#[cfg(test)]
mod tests;
