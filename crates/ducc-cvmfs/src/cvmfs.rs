//! The `cvmfs` publisher: drives `cvmfs_server` on a CernVM-FS stratum 0 (or a gateway
//! publisher).
//!
//! How a [`Transaction`] maps to `cvmfs_server` (reference: cvmfs-server-semantics.md):
//! - [`Transaction::ingest_tar`] runs `cvmfs_server ingest [--catalog] -k -t - -b DIR REPO` fed
//!   with the tar stream, and [`Transaction::remove`] runs `cvmfs_server ingest --delete PATH
//!   REPO`, at once: `ingest` is a transaction and publish of its own and cannot run while a
//!   transaction is open, so what they do is published when they return and an abort cannot
//!   take it back. Callers write the "converted" marker last for that reason.
//! - Files and symlinks are staged locally and written at commit, in one
//!   `cvmfs_server transaction REPO/LEASE`, through `/cvmfs/REPO` (`CVMFS_MOUNT_DIR`), then
//!   `cvmfs_server publish REPO`. Any failure after the transaction opened runs
//!   `cvmfs_server abort -f REPO` and returns the original error.
//! - A lease's parent directory must be published before the lease is taken: missing parents
//!   are created first, in a transaction of their own.
//! - A tar stream holding what ingest would silently drop (an opaque directory's
//!   `trusted.overlay.opaque` xattr; behind a gateway, device files) is stopped before it reaches
//!   the repository and fails with [`PublishError::WouldDrop`].
//! - One publisher host holds at most one transaction per repository, so every `cvmfs_server`
//!   call that opens one (ingest included) runs under a host-wide lock; lease locks keep two ducc
//!   processes off overlapping paths for the whole [`Transaction`].

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{PublishError, io_err};
use crate::guard::{Refused, TarGuard};
use crate::layout::{RepoPath, RepositoryName};
use crate::lock::{FileLock, LeaseGuard, LeaseLocks, unique_name};
use crate::publisher::{IngestOptions, OverlaySupport, Publisher, Transaction, check_lease};

/// Settings of a [`CvmfsPublisher`]; [`CvmfsOptions::default`] is right on a stratum 0.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CvmfsOptions {
    /// The `cvmfs_server` binary (default: `cvmfs_server` from `PATH`).
    pub server: Option<PathBuf>,
    /// The directory the repositories are mounted under (default: `$CVMFS_MOUNT_DIR`, else
    /// `/cvmfs`).
    pub mount_dir: Option<PathBuf>,
    /// Where locks and staged files live (default: `$TMPDIR/ducc-cvmfs/<repo>`).
    pub state_dir: Option<PathBuf>,
    /// Whether the repository publishes through a gateway (default: read
    /// `CVMFS_UPSTREAM_STORAGE` from `/etc/cvmfs/repositories.d/<repo>/server.conf`).
    pub gateway: Option<bool>,
}

impl CvmfsOptions {
    /// The default settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses this `cvmfs_server` binary.
    pub fn server(mut self, path: impl Into<PathBuf>) -> Self {
        self.server = Some(path.into());
        self
    }

    /// Reads and writes repositories under this directory instead of `/cvmfs`.
    pub fn mount_dir(mut self, path: impl Into<PathBuf>) -> Self {
        self.mount_dir = Some(path.into());
        self
    }

    /// Keeps locks and staged files here.
    pub fn state_dir(mut self, path: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(path.into());
        self
    }

    /// Says whether the repository publishes through a gateway.
    pub fn gateway(mut self, gateway: bool) -> Self {
        self.gateway = Some(gateway);
        self
    }
}

/// Publishes through `cvmfs_server` (see the module documentation for the command sequences).
///
/// ```no_run
/// use ducc_cvmfs::{CvmfsOptions, CvmfsPublisher, Publisher, RepoPath, RepositoryName};
///
/// let repo = RepositoryName::parse("unpacked.example.org").unwrap();
/// let publisher = CvmfsPublisher::open(&repo, CvmfsOptions::new()).unwrap();
/// let mut tx = publisher.begin(&RepoPath::new("notes").unwrap()).unwrap();
/// tx.write_file(&RepoPath::new("notes/hello.txt").unwrap(), &mut &b"hi"[..]).unwrap();
/// tx.commit().unwrap(); // cvmfs_server transaction unpacked.example.org/notes ... publish
/// ```
#[derive(Debug)]
pub struct CvmfsPublisher {
    repo: String,
    server: PathBuf,
    mount_dir: PathBuf,
    state_dir: PathBuf,
    locks: LeaseLocks,
    gateway: bool,
}

/// A staged change, written through the mount at commit.
#[derive(Debug, Clone)]
enum Staged {
    File(RepoPath),
    Symlink(RepoPath),
}

impl Staged {
    fn path(&self) -> &RepoPath {
        match self {
            Staged::File(p) | Staged::Symlink(p) => p,
        }
    }
}

impl CvmfsPublisher {
    /// Checks with `cvmfs_server list` that the repository exists and prepares the state
    /// directory.
    ///
    /// # Errors
    /// [`PublishError::NoSuchRepository`], or the failure of `cvmfs_server list`.
    pub fn open(repo: &RepositoryName, options: CvmfsOptions) -> Result<Self, PublishError> {
        let name = repo.name().to_owned();
        let server = options
            .server
            .unwrap_or_else(|| PathBuf::from("cvmfs_server"));
        let mount_dir = options
            .mount_dir
            .or_else(|| std::env::var_os("CVMFS_MOUNT_DIR").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/cvmfs"));
        let state_dir = options
            .state_dir
            .unwrap_or_else(|| std::env::temp_dir().join("ducc-cvmfs").join(&name));
        let gateway = options
            .gateway
            .unwrap_or_else(|| upstream_is_gateway(&name));
        let locks_dir = state_dir.join("locks");
        let locks = LeaseLocks::new(&locks_dir).map_err(io_err("create", locks_dir))?;
        let staging = state_dir.join("staging");
        fs::create_dir_all(&staging).map_err(io_err("create", staging))?;
        let publisher = Self {
            repo: name,
            server,
            mount_dir,
            state_dir,
            locks,
            gateway,
        };
        let listing = publisher.run(&["list".into()], None)?;
        let listed = listing
            .lines()
            .any(|line| line.split_whitespace().next() == Some(publisher.repo.as_str()));
        if !listed {
            return Err(PublishError::NoSuchRepository {
                repo: publisher.repo,
            });
        }
        publisher.clean_dead_staging();
        Ok(publisher)
    }

    /// The repository name given to `cvmfs_server`.
    pub fn repository(&self) -> &str {
        &self.repo
    }

    fn mount(&self, path: &RepoPath) -> PathBuf {
        self.mount_dir.join(&self.repo).join(path.as_path())
    }

    fn spool_lock(&self) -> Result<FileLock, PublishError> {
        let path = self.state_dir.join("spool.lock");
        FileLock::exclusive(&path).map_err(io_err("lock", path))
    }

    /// `REPO` or `REPO/PATH`, as `cvmfs_server transaction` takes a lease.
    fn with_lease(&self, lease: &RepoPath) -> String {
        if lease.is_root() {
            self.repo.clone()
        } else {
            format!("{}/{}", self.repo, lease.as_str())
        }
    }

    /// Runs `cvmfs_server ARGS`, feeding `stdin`; returns stdout. A failure carries stderr.
    ///
    /// When feeding `stdin` fails (a read error of the tar stream, or the guard stopping it), the
    /// command's process group is killed before its stdin closes: a stream cut at an entry
    /// boundary could otherwise pass for a complete tar and be published.
    fn run(&self, args: &[OsString], stdin: Option<&mut dyn Read>) -> Result<String, PublishError> {
        let command = std::iter::once(self.server.display().to_string())
            .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(" ");
        tracing::debug!(%command, "running");
        let mut cmd = Command::new(&self.server);
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if stdin.is_some() {
            cmd.process_group(0);
        }
        let mut child = cmd.spawn().map_err(|source| PublishError::Spawn {
            command: command.clone(),
            source,
        })?;
        let stdout = child.stdout.take().map(drain_in_thread);
        let stderr = child.stderr.take().map(drain_in_thread);
        let mut fed = Ok(());
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            fed = io::copy(input, &mut pipe).map(drop);
            if fed.is_err() {
                let group = rustix::process::Pid::from_child(&child);
                if let Err(e) =
                    rustix::process::kill_process_group(group, rustix::process::Signal::KILL)
                {
                    tracing::debug!(error = %e, "killing the ingest process group");
                }
            }
            drop(pipe);
        }
        let status = child.wait().map_err(|source| PublishError::Spawn {
            command: command.clone(),
            source,
        })?;
        let stdout = stdout.and_then(|h| h.join().ok()).unwrap_or_default();
        let stderr = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
        // A command that failed on its own explains a broken pipe better than the pipe does; one
        // we killed does not.
        let killed_by_us = fed.is_err() && status.signal().is_some();
        if !status.success() && !killed_by_us {
            return Err(PublishError::Command {
                command,
                status: status.to_string(),
                stderr: stderr.trim().to_owned(),
            });
        }
        fed.map_err(|source| PublishError::Feed {
            command: command.clone(),
            source,
        })?;
        Ok(stdout)
    }

    /// `cvmfs_server abort -f REPO`, whose own failure is only logged: the caller returns the
    /// error that made it abort.
    fn abort_quietly(&self) {
        if let Err(e) = self.run(
            &["abort".into(), "-f".into(), self.repo.clone().into()],
            None,
        ) {
            tracing::warn!(repo = %self.repo, error = %e, "abort after a failure did not succeed");
        }
    }

    /// Runs `body` inside `cvmfs_server transaction REPO[/LEASE]` and publishes; any failure
    /// after the transaction opened aborts it and returns the first error.
    fn in_transaction(
        &self,
        lease: &RepoPath,
        body: impl FnOnce() -> Result<(), PublishError>,
    ) -> Result<(), PublishError> {
        self.run(&["transaction".into(), self.with_lease(lease).into()], None)?;
        let result = body().and_then(|()| {
            self.run(&["publish".into(), self.repo.clone().into()], None)
                .map(drop)
        });
        if result.is_err() {
            self.abort_quietly();
        }
        result
    }

    /// Publishes the missing ancestors of `path` (so a lease on `path` has its parent), in a
    /// transaction leased on the outermost missing one.
    fn ensure_parent(&self, path: &RepoPath) -> Result<(), PublishError> {
        let Some(parent) = path.parent() else {
            return Ok(());
        };
        if parent.is_root() || self.mount(&parent).is_dir() {
            return Ok(());
        }
        let _spool = self.spool_lock()?;
        let mut chain = parent.ancestors();
        chain.push(parent.clone());
        let Some(first_missing) = chain.into_iter().find(|p| !self.mount(p).is_dir()) else {
            return Ok(()); // created meanwhile by another process
        };
        tracing::info!(repo = %self.repo, path = %parent, "creating missing parent directories");
        self.in_transaction(&first_missing, || {
            let dir = self.mount(&parent);
            fs::create_dir_all(&dir).map_err(io_err("create", dir))
        })
    }

    /// Removes staging directories whose transaction's process is gone.
    fn clean_dead_staging(&self) {
        let root = self.state_dir.join("staging");
        let Ok(entries) = fs::read_dir(&root) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".lock")
                && let Ok(Some(_lock)) = FileLock::try_exclusive(&entry.path())
            {
                let _ = fs::remove_dir_all(root.join(id));
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

fn drain_in_thread<R: Read + Send + 'static>(mut reader: R) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = reader.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Whether `server.conf` says `CVMFS_UPSTREAM_STORAGE=gw,...`; false when unreadable.
fn upstream_is_gateway(repo: &str) -> bool {
    let conf = Path::new("/etc/cvmfs/repositories.d")
        .join(repo)
        .join("server.conf");
    fs::read_to_string(conf).is_ok_and(|text| {
        text.lines().any(|l| {
            l.trim()
                .strip_prefix("CVMFS_UPSTREAM_STORAGE=")
                .is_some_and(|v| v.trim_matches(['"', '\'']).starts_with("gw"))
        })
    })
}

impl Publisher for CvmfsPublisher {
    fn begin(&self, lease: &RepoPath) -> Result<Box<dyn Transaction + '_>, PublishError> {
        let guard = self
            .locks
            .acquire(lease)
            .map_err(|source| PublishError::Lock {
                lease: lease.clone(),
                source,
            })?;
        self.ensure_parent(lease)?;
        let id = unique_name("tx-");
        let root = self.state_dir.join("staging");
        let lock_path = root.join(format!("{id}.lock"));
        let owner = FileLock::exclusive(&lock_path).map_err(io_err("lock", lock_path.as_path()))?;
        let staging = root.join(id);
        fs::create_dir_all(&staging).map_err(io_err("create", staging.as_path()))?;
        Ok(Box::new(CvmfsTransaction {
            publisher: self,
            lease: lease.clone(),
            staging,
            lock_path,
            staged: Vec::new(),
            finished: false,
            _owner: owner,
            _lease: guard,
        }))
    }

    fn published_path(&self, path: &RepoPath) -> PathBuf {
        self.mount(path)
    }

    fn overlay_support(&self) -> OverlaySupport {
        if self.gateway {
            OverlaySupport::No {
                reason: "a cvmfs gateway drops device files, so whiteout devices cannot be stored"
                    .into(),
            }
        } else {
            OverlaySupport::DevicesOnly
        }
    }
}

struct CvmfsTransaction<'p> {
    publisher: &'p CvmfsPublisher,
    lease: RepoPath,
    staging: PathBuf,
    lock_path: PathBuf,
    staged: Vec<Staged>,
    finished: bool,
    _owner: FileLock,
    _lease: LeaseGuard,
}

impl CvmfsTransaction<'_> {
    fn staged_file(&self, index: usize) -> PathBuf {
        self.staging.join(index.to_string())
    }

    /// Checks that a file or symlink may go at `path` and forgets an earlier staged one there.
    fn prepare_leaf(&mut self, path: &RepoPath) -> Result<(), PublishError> {
        check_lease(&self.lease, path)?;
        let is_dir = fs::symlink_metadata(self.publisher.mount(path)).is_ok_and(|m| m.is_dir());
        if path.is_root() || is_dir {
            return Err(PublishError::AlreadyExists { path: path.clone() });
        }
        self.staged.retain(|s| s.path() != path);
        Ok(())
    }

    fn finish(&mut self) {
        self.finished = true;
        let _ = fs::remove_dir_all(&self.staging);
        let _ = fs::remove_file(&self.lock_path);
    }

    /// Writes the staged files and symlinks through the mount (inside an open transaction).
    fn write_staged(&self) -> Result<(), PublishError> {
        for (index, change) in self.staged.iter().enumerate() {
            let target = self.publisher.mount(change.path());
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(io_err("create", parent))?;
            }
            if fs::symlink_metadata(&target).is_ok() {
                fs::remove_file(&target).map_err(io_err("replace", target.as_path()))?;
            }
            match change {
                Staged::File(_) => {
                    let mut src = File::open(self.staged_file(index))
                        .map_err(io_err("read", self.staged_file(index)))?;
                    let mut dst = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o644)
                        .open(&target)
                        .map_err(io_err("create", target.as_path()))?;
                    io::copy(&mut src, &mut dst).map_err(io_err("write", target.as_path()))?;
                    fs::set_permissions(
                        &target,
                        std::os::unix::fs::PermissionsExt::from_mode(0o644),
                    )
                    .map_err(io_err("chmod", target.as_path()))?;
                }
                Staged::Symlink(_) => {
                    let link = fs::read_link(self.staged_file(index))
                        .map_err(io_err("read", self.staged_file(index)))?;
                    std::os::unix::fs::symlink(link, &target)
                        .map_err(io_err("create symlink", target.as_path()))?;
                }
            }
        }
        Ok(())
    }
}

impl Transaction for CvmfsTransaction<'_> {
    fn lease(&self) -> &RepoPath {
        &self.lease
    }

    fn ingest_tar(
        &mut self,
        dir: &RepoPath,
        tar: &mut dyn Read,
        options: IngestOptions,
    ) -> Result<(), PublishError> {
        check_lease(&self.lease, dir)?;
        let p = self.publisher;
        if dir.is_root() || fs::symlink_metadata(p.mount(dir)).is_ok() {
            return Err(PublishError::AlreadyExists { path: dir.clone() });
        }
        if p.gateway {
            // The gateway takes the lease REPO/DIR, whose parent must exist.
            p.ensure_parent(dir)?;
        }
        let mut args: Vec<OsString> = vec!["ingest".into()];
        if options.catalog {
            args.push("--catalog".into());
        }
        for a in ["-k", "-t", "-", "-b"] {
            args.push(a.into());
        }
        args.push(dir.as_str().into());
        args.push(p.repo.clone().into());
        let _spool = p.spool_lock()?;
        let mut guarded = TarGuard::new(tar, p.gateway);
        let mut result = p.run(&args, Some(&mut guarded)).map(drop);
        if let Some(found) = guarded.found() {
            let what = match found {
                Refused::OpaqueXattr => "an opaque directory (xattr trusted.overlay.opaque)",
                Refused::SpecialFile => "a device file or FIFO behind a gateway",
            };
            result = Err(PublishError::WouldDrop {
                dir: dir.clone(),
                what,
            });
        }
        if result.is_err() {
            // ingest normally cleans up its own transaction; make sure none is left open.
            p.abort_quietly();
        }
        result
    }

    fn write_file(&mut self, path: &RepoPath, content: &mut dyn Read) -> Result<(), PublishError> {
        self.prepare_leaf(path)?;
        let file = self.staged_file(self.staged.len());
        let mut out = File::create(&file).map_err(io_err("create", file.as_path()))?;
        io::copy(content, &mut out).map_err(io_err("write", file.as_path()))?;
        out.flush().map_err(io_err("write", file))?;
        self.staged.push(Staged::File(path.clone()));
        Ok(())
    }

    fn symlink(&mut self, path: &RepoPath, target: &Path) -> Result<(), PublishError> {
        self.prepare_leaf(path)?;
        let file = self.staged_file(self.staged.len());
        std::os::unix::fs::symlink(target, &file).map_err(io_err("create symlink", file))?;
        self.staged.push(Staged::Symlink(path.clone()));
        Ok(())
    }

    fn remove(&mut self, path: &RepoPath) -> Result<(), PublishError> {
        check_lease(&self.lease, path)?;
        self.staged.retain(|s| !s.path().starts_with(path));
        let p = self.publisher;
        if fs::symlink_metadata(p.mount(path)).is_err() {
            return Ok(());
        }
        let _spool = p.spool_lock()?;
        let args: Vec<OsString> = vec![
            "ingest".into(),
            "--delete".into(),
            path.as_str().into(),
            p.repo.clone().into(),
        ];
        let result = p.run(&args, None).map(drop);
        if result.is_err() {
            p.abort_quietly();
        }
        result
    }

    fn commit(mut self: Box<Self>) -> Result<(), PublishError> {
        let result = if self.staged.is_empty() {
            Ok(())
        } else {
            let p = self.publisher;
            match p.spool_lock() {
                Ok(_spool) => p.in_transaction(&self.lease, || self.write_staged()),
                Err(e) => Err(e),
            }
        };
        self.finish();
        result
    }

    fn abort(mut self: Box<Self>) -> Result<(), PublishError> {
        self.finish();
        Ok(())
    }
}

impl Drop for CvmfsTransaction<'_> {
    fn drop(&mut self) {
        if !self.finished {
            tracing::debug!(lease = %self.lease, "cvmfs transaction dropped without commit: staged writes discarded");
            self.finish();
        }
    }
}
