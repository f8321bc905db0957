//! The `cvmfs` publisher: drives `cvmfs_server` on a CernVM-FS stratum 0 or a gateway publisher.
//!
//! Two ways in, chosen per commit (issues 24 and 29; references: cvmfs-real-behaviour.md,
//! cvmfs-gateway-behaviour.md, cvmfs-flat-without-rehash.md):
//! - **Ingest** (`cvmfs_server ingest -k -t - -b BASE REPO`) for layer data: the server reads,
//!   hashes and compresses each byte once, while ducc writes the tar into its stdin. Every
//!   directory an ingest has to invent (the `-b` directory or a parent missing from the tar) is
//!   stored owned by 4294967295 with `-k`, and nothing can ever be created below such a directory
//!   by a later transaction (scenarios 1, 3), so the tar names every directory explicitly, with
//!   its owner and mode, before its children (scenario 11). A stream cut at an entry boundary
//!   would be published as if whole (flat-without-rehash scenario 22): the stream is written so
//!   that it can only ever stop inside a block, whatever ends ducc (`stream.rs`). A commit that
//!   removes paths first (`ingest --delete`) stages its tar in a file instead, checked whole
//!   before anything is removed.
//! - **Through the mount** (`cvmfs_server transaction`, writes under `/cvmfs/REPO`, `cvmfs_server
//!   publish`) for everything else an image publishes: its flat tree, whose regular files are
//!   graft files naming the objects its layers' ingests stored (see `graft.rs`: not hashed
//!   again), its symlink, podman store entries, `origin.json` updates and marker. Used where the
//!   repository is mounted on this host ([`CvmfsOptions::mounted`]); otherwise all goes in by
//!   ingest. Directories ducc's ingests made are writable through the union (scenario 24).
//!
//! A [`Transaction`] only records what it writes: trees built by [`Transaction::fill_dir`] in
//! scratch space (or a stream given to [`Transaction::ingest_tar`], checked and copied), files,
//! symlinks and removals; nothing reaches the server before the commit. Its commit publishes it
//! alone, or hands it to its [`Group`]; a streaming group ([`Publisher::streaming_group`], an
//! image's new layers on a stratum 0) has a thread write it into the group's open ingest at
//! once, so the server reads one layer while the next decodes, and the group's commit ends the
//! tar (`stream.rs`). What one publish covers:
//! - On a stratum 0 (one transaction at a time for the whole repository), a group goes in as one
//!   revision: one ingest whose base is the deepest directory holding all its leases (`-b
//!   .layers` for an image's new layers with their metadata and new shard catalogs), or one
//!   mounted transaction when it holds no layer data. Removals alone stay `ingest --delete` calls
//!   (several paths per call), in their own revisions.
//! - Behind a gateway each transaction goes in on its own lease: an ingest (the lease's parent as
//!   base, as a gateway requires; one `--delete` path per call) or a mounted transaction on the
//!   lease (`transaction REPO/LEASE`), so other nodes keep working beside it.
//! - A mounted transaction that fails anywhere (a write, a graft that cannot be checked, the
//!   publish) is aborted with `abort -f`: nothing of it is published and nothing stays open.
//! - Behind a gateway this node's view of the repository lags (other nodes' publishes, and its
//!   own ingests once a remount pinned it: gateway-behaviour section 7). Reads that decide
//!   writes inside a lease are made fresh (`fresh.rs`); reads outside a lease (markers, the
//!   lifecycle commands' inventory) come after [`Publisher::refresh_view`], which remounts with
//!   `cvmfs_server mount REPO` (at a pass's start, and before an image when this host published
//!   since). A lease another node holds (rc 16) is retried with backoff for up to two minutes,
//!   told to the [`PublishObserver`] installed with [`Publisher::observe`].
//!
//! Every `cvmfs_server` call of this host runs under one lock (`spool.lock` in the state
//! directory), and lease locks keep two ducc processes off overlapping paths from a
//! transaction's begin to its publish (an `origin.json` read inside one is current). Before a
//! call, or a mounted transaction, a record `in-flight` names the process; a run killed there
//! leaves it behind, and the next publisher to take the lock waits for that process to end and
//! aborts the transaction it left open (`cvmfs_server abort -f`), so a killed run never blocks
//! the next one and never leaves anything half-published.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::error::{PublishError, io_err};
use crate::guard::{Refused, TarGuard};
use crate::layout::{CATALOG_MARKER, Layout, RepoPath};
use crate::lock::{FileLock, LeaseGuard, LeaseLocks, dead_staging, unique_name};
use crate::publisher::{
    FillError, FillHints, GcGuard, GcLock, Group, IngestOptions, OverlaySupport, PublishObserver,
    Published, Publisher, RefreshPoint, Transaction, check_lease, read_link_at, read_small,
};
use ducc_oci::RepositoryName;

mod fresh;
mod gclock;
mod stream;

pub use gclock::GC_LOCK_EXPIRY;

/// How long a gateway lease that is busy (another node holds an overlapping one: rc 16, no
/// waiting on the server's side) is retried before the ingest fails.
const BUSY_RETRY: Duration = Duration::from_secs(120);

/// How old a remount to the newest revision may get before the next image remounts again,
/// though this host published nothing since: other nodes' publishes show then (a long pass, or
/// `serve` between notifications). See [`Publisher::refresh_view`].
const VIEW_MAX_AGE: Duration = Duration::from_secs(60);

/// How many paths one `cvmfs_server ingest --delete` call takes on a stratum 0 (upstream's gc
/// takes 50; 200 keep the command line near 20 KiB).
const DELETE_BATCH: usize = 200;

/// How long a publisher waits for a `cvmfs_server` process left running by a killed run.
const ORPHAN_WAIT: Duration = Duration::from_secs(600);

/// Settings of a [`CvmfsPublisher`]; [`CvmfsOptions::default`] is right on a stratum 0.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CvmfsOptions {
    /// The `cvmfs_server` binary (default: `cvmfs_server` from `PATH`).
    pub server: Option<PathBuf>,
    /// The directory the repositories are mounted under, for reading (default:
    /// `$CVMFS_MOUNT_DIR`, else `/cvmfs`).
    pub mount_dir: Option<PathBuf>,
    /// Where locks and staged tars live (default: `$TMPDIR/ducc-cvmfs/<repo>`).
    pub state_dir: Option<PathBuf>,
    /// Whether the repository publishes through a gateway (default: read
    /// `CVMFS_UPSTREAM_STORAGE` from `/etc/cvmfs/repositories.d/<repo>/server.conf`, else the
    /// upstream type `cvmfs_server list` shows, `(stratum0 / gw)`).
    pub gateway: Option<bool>,
    /// Whether transactions may write through the mounted repository (`cvmfs_server
    /// transaction`, writes under `/cvmfs/REPO`, `cvmfs_server publish`): flat trees as graft
    /// files and groups as one publish (default: when the repository is mounted here).
    pub mounted: Option<bool>,
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

    /// Reads repositories under this directory instead of `/cvmfs`.
    pub fn mount_dir(mut self, path: impl Into<PathBuf>) -> Self {
        self.mount_dir = Some(path.into());
        self
    }

    /// Keeps locks and staged tars here.
    pub fn state_dir(mut self, path: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(path.into());
        self
    }

    /// Says whether the repository publishes through a gateway.
    pub fn gateway(mut self, gateway: bool) -> Self {
        self.gateway = Some(gateway);
        self
    }

    /// Says whether transactions may write through the mounted repository.
    pub fn mounted(mut self, mounted: bool) -> Self {
        self.mounted = Some(mounted);
        self
    }
}

/// Publishes through `cvmfs_server ingest` (see the module documentation).
///
/// ```no_run
/// use ducc_cvmfs::{CvmfsOptions, CvmfsPublisher, Publisher, RepoPath};
/// use ducc_oci::RepositoryName;
///
/// let repo = RepositoryName::parse("unpacked.example.org").unwrap();
/// let publisher = CvmfsPublisher::open(&repo, CvmfsOptions::new()).unwrap();
/// let mut tx = publisher.begin(&RepoPath::new("notes/today").unwrap()).unwrap();
/// tx.write_file(&RepoPath::new("notes/today/hello.txt").unwrap(), &mut &b"hi"[..]).unwrap();
/// tx.commit().unwrap(); // cvmfs_server ingest -k -t STAGED -b notes unpacked.example.org
/// ```
#[derive(Debug)]
pub struct CvmfsPublisher {
    repo: String,
    server: PathBuf,
    mount_dir: PathBuf,
    state_dir: PathBuf,
    locks: LeaseLocks,
    gateway: bool,
    mounted: bool,
    layout: crate::Layout,
    /// Whether a transaction of fresh reads is open (see `fresh.rs`): it holds the spool lock.
    fresh_open: std::sync::atomic::AtomicBool,
    /// Behind a gateway: whether this host published since its last remount, so that its view
    /// may lack its own writes (see [`Publisher::refresh_view`]).
    view_behind: std::sync::atomic::AtomicBool,
    /// When this host last remounted to the newest revision ([`Publisher::refresh_view`]).
    last_remount: Mutex<Option<Instant>>,
    /// Who is told about lease waits ([`Publisher::observe`]).
    observer: ObserverSlot,
    /// The ingest a streaming group of this process has open ([`Publisher::streaming_group`]).
    open_ingest: stream::IngestSlot,
    /// Numbers streaming groups.
    groups: std::sync::atomic::AtomicU64,
}

/// The installed [`PublishObserver`], if any.
#[derive(Default)]
struct ObserverSlot(Mutex<Option<Arc<dyn PublishObserver>>>);

impl ObserverSlot {
    fn get(&self) -> Option<Arc<dyn PublishObserver>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl std::fmt::Debug for ObserverSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let installed = self.get().is_some();
        f.debug_struct("ObserverSlot")
            .field("installed", &installed)
            .finish()
    }
}

impl CvmfsPublisher {
    /// Checks with `cvmfs_server list` that the repository exists, prepares the state directory
    /// and cleans up after a killed run (see the module documentation).
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
        let gateway = options.gateway;
        let locks_dir = state_dir.join("locks");
        let locks = LeaseLocks::new(&locks_dir).map_err(io_err("create", locks_dir))?;
        let staging = state_dir.join("staging");
        fs::create_dir_all(&staging).map_err(io_err("create", staging))?;
        let mounted = options
            .mounted
            .unwrap_or_else(|| mount_dir.join(&name).is_dir());
        let publisher = Self {
            repo: name,
            server,
            mount_dir,
            state_dir,
            locks,
            gateway: gateway.unwrap_or(false),
            mounted,
            layout: Layout::of(repo),
            fresh_open: std::sync::atomic::AtomicBool::new(false),
            view_behind: std::sync::atomic::AtomicBool::new(false),
            last_remount: Mutex::new(None),
            observer: ObserverSlot::default(),
            open_ingest: stream::IngestSlot::default(),
            groups: std::sync::atomic::AtomicU64::new(0),
        };
        let listing = publisher.run(&["list".into()])?;
        if !publisher.listed(&listing) {
            return Err(PublishError::NoSuchRepository {
                repo: publisher.repo,
            });
        }
        let mut publisher = publisher;
        publisher.gateway = gateway.unwrap_or_else(|| {
            upstream_is_gateway(&publisher.repo) || publisher.listed_as_gateway(&listing)
        });
        // Staged tars of dead runs go only once the spool lock is held and any call a killed run
        // left running has ended: such an orphan may still be about to read its tar.
        let spool = publisher.spool_lock()?;
        publisher.clean_dead_staging();
        drop(spool);
        Ok(publisher)
    }

    /// The repository name given to `cvmfs_server`.
    pub fn repository(&self) -> &str {
        &self.repo
    }

    fn mount(&self, path: &RepoPath) -> PathBuf {
        self.mount_dir.join(&self.repo).join(path.as_path())
    }

    fn listed(&self, listing: &str) -> bool {
        listing
            .lines()
            .any(|line| line.split_whitespace().next() == Some(self.repo.as_str()))
    }

    /// `cvmfs_server list` names the upstream type: `REPO (stratum0 / gw)` behind a gateway.
    fn listed_as_gateway(&self, listing: &str) -> bool {
        listing.lines().any(|line| {
            line.split_whitespace().next() == Some(self.repo.as_str()) && line.contains("/ gw")
        })
    }

    fn in_flight_path(&self) -> PathBuf {
        self.state_dir.join("in-flight")
    }

    /// Takes the host-wide lock every `cvmfs_server` call that opens a transaction runs under,
    /// first finishing what a killed holder left behind.
    fn spool_lock(&self) -> Result<FileLock, PublishError> {
        // A streaming group's open ingest holds it: its units so far go in first.
        self.end_open_ingest(None, false);
        let path = self.state_dir.join("spool.lock");
        if self.fresh_open.load(std::sync::atomic::Ordering::SeqCst) {
            // This process holds it for a transaction of fresh reads: waiting would never end.
            return Err(PublishError::Command {
                command: format!("{} (spool lock)", self.server.display()),
                status: "refused".into(),
                stderr: "a cvmfs_server call while a transaction of fresh reads of this process \
                         is open on the same repository"
                    .into(),
            });
        }
        let lock = FileLock::exclusive(&path).map_err(io_err("lock", path))?;
        self.recover_killed_call()?;
        Ok(lock)
    }

    /// With the spool lock held: a leftover `in-flight` record means its writer died during a
    /// `cvmfs_server` call. Waits for that call's process, then aborts the transaction it may
    /// have left open (it was ours: no live ducc process holds the lock).
    fn recover_killed_call(&self) -> Result<(), PublishError> {
        let record = self.in_flight_path();
        let Ok(text) = fs::read_to_string(&record) else {
            return Ok(());
        };
        let pid = text
            .split_whitespace()
            .next()
            .and_then(|p| p.parse::<u32>().ok());
        tracing::warn!(repo = %self.repo, call = %text.trim(), "a run was killed during a cvmfs_server call: recovering");
        if let Some(pid) = pid {
            let started = Instant::now();
            while Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
                if started.elapsed() > ORPHAN_WAIT {
                    return Err(PublishError::Command {
                        command: text.trim().to_owned(),
                        status: format!("still running as pid {pid}"),
                        stderr: format!(
                            "a cvmfs_server call left by a killed run is still running after {} s",
                            ORPHAN_WAIT.as_secs()
                        ),
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let listing = self.run(&["list".into()])?;
        let open = listing.lines().any(|line| {
            line.split_whitespace().next() == Some(self.repo.as_str())
                && line.contains("in transaction")
        });
        if open {
            self.run(&["abort".into(), "-f".into(), self.repo.clone().into()])?;
        }
        fs::remove_file(&record).map_err(io_err("remove", record))?;
        Ok(())
    }

    /// Runs `cvmfs_server ARGS` and returns stdout; a failure carries stderr.
    fn run(&self, args: &[OsString]) -> Result<String, PublishError> {
        self.run_recorded(args, false)
    }

    /// As [`Self::run`]; with `record`, the call is noted in `in-flight` while it runs (the
    /// caller holds the spool lock).
    fn run_recorded(&self, args: &[OsString], record: bool) -> Result<String, PublishError> {
        let command = self.command_line(args);
        tracing::debug!(%command, "running");
        let child = Command::new(&self.server)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| PublishError::Spawn {
                command: command.clone(),
                source,
            })?;
        let record_path = self.in_flight_path();
        if record {
            let text = format!("{} {command}\n", child.id());
            fs::write(&record_path, text).map_err(io_err("write", record_path.as_path()))?;
        }
        let output = child
            .wait_with_output()
            .map_err(|source| PublishError::Spawn {
                command: command.clone(),
                source,
            })?;
        if record
            && let Err(e) = fs::remove_file(&record_path)
            && e.kind() != io::ErrorKind::NotFound
        {
            return Err(io_err("remove", record_path)(e));
        }
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(call_failed(command, output.status, &stdout, &stderr));
        }
        Ok(stdout)
    }

    /// `cvmfs_server ARGS` as one line, for logs and errors.
    fn command_line(&self, args: &[OsString]) -> String {
        std::iter::once(self.server.display().to_string())
            .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs an ingest under the spool lock. A gateway lease that another node holds is retried
    /// for a while; an ingest that failed and left this repository in a transaction is aborted.
    fn ingest(&self, args: Vec<OsString>, lease: &str) -> Result<(), PublishError> {
        self.ingest_with(lease, &mut || self.run_recorded(&args, true))
    }

    /// As [`Self::ingest`], the tar written by `feed` into `ingest -t -` (see `stream.rs`); a
    /// busy lease feeds it again from the start.
    fn ingest_streamed(
        &self,
        args: Vec<OsString>,
        lease: &str,
        feed: &mut dyn FnMut(Box<dyn Write + Send>) -> Result<(), PublishError>,
    ) -> Result<(), PublishError> {
        self.ingest_with(lease, &mut || self.run_streamed(&args, feed))
    }

    fn ingest_with(
        &self,
        lease: &str,
        call: &mut dyn FnMut() -> Result<String, PublishError>,
    ) -> Result<(), PublishError> {
        let _spool = self.spool_lock()?;
        match self.run_busy_retry(lease, call) {
            Ok(_) => {
                self.published_here();
                Ok(())
            }
            Err(e) => {
                if let PublishError::Command { stderr, .. } = &e
                    && !stderr.contains("another transaction is already open")
                {
                    self.abort_left_open();
                }
                Err(e)
            }
        }
    }

    /// Notes that this host made a revision: behind a gateway its view may not show it until
    /// its next remount (see [`Publisher::refresh_view`]).
    fn published_here(&self) {
        self.view_behind
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Aborts a transaction a failed ingest of ours left open (the server normally aborts it
    /// itself); only logged, the caller returns the ingest's error.
    fn abort_left_open(&self) {
        let open = self.run(&["list".into()]).is_ok_and(|listing| {
            listing.lines().any(|line| {
                line.split_whitespace().next() == Some(self.repo.as_str())
                    && line.contains("in transaction")
            })
        });
        if open && let Err(e) = self.run(&["abort".into(), "-f".into(), self.repo.clone().into()]) {
            tracing::warn!(repo = %self.repo, error = %e, "abort after a failed ingest did not succeed");
        }
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

    /// Whether `path` is a published directory.
    fn is_dir(&self, path: &RepoPath) -> bool {
        fs::symlink_metadata(self.mount(path)).is_ok_and(|m| m.is_dir())
    }
}

/// A `cvmfs_server` call that exited non-zero: its stderr and stdout (`publish` says "not in a
/// transaction" on stdout), both kept.
fn call_failed(
    command: String,
    status: std::process::ExitStatus,
    stdout: &str,
    stderr: &str,
) -> PublishError {
    let text = [stderr.trim(), stdout.trim()]
        .iter()
        .filter(|t| !t.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("\n");
    PublishError::Command {
        command,
        status: status.to_string(),
        stderr: text,
    }
}

fn is_busy(stderr: &str) -> bool {
    stderr.contains("lease path busy") || stderr.contains("Path busy")
}

/// A process whose parent died is reaped by init; until then `/proc/PID` shows it as a zombie.
fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
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
        Ok(Box::new(CvmfsTransaction::new(
            self,
            None,
            lease,
            Arc::new(guard),
        )?))
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

    fn group(&self) -> Box<dyn Group + '_> {
        Box::new(CvmfsGroup::new(self, None))
    }

    /// On a stratum 0, units stream into one `ingest -t - -b BASE` as their transactions
    /// commit (see `stream.rs`), BASE the one the group's commit would take (the deepest
    /// directory holding `leases` and the first unit's); behind a gateway every transaction
    /// has a lease of its own, and this is [`Publisher::group`].
    fn streaming_group(&self, leases: &[RepoPath]) -> Box<dyn Group + '_> {
        let mut group = CvmfsGroup::new(self, None);
        if !self.gateway {
            group.stream = Some(StreamPlan {
                id: self
                    .groups
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst),
                leases: leases.to_vec(),
                outcome: Arc::default(),
            });
        }
        Box::new(group)
    }

    fn prefers_overlay_whiteouts(&self) -> bool {
        true
    }

    /// As the trait says; behind a gateway a gc also takes the repository's own gc lock, so a
    /// second gc on another node refuses to start (see `gclock.rs`).
    fn gc_lock(&self, kind: GcLock) -> Result<GcGuard, PublishError> {
        let guard = GcGuard::take(&self.state_dir.join("gc.lock"), kind)?;
        if kind == GcLock::Collect
            && let Some(repo_lock) = self.take_repo_gc_lock()?
        {
            return Ok(guard.holding(Box::new(repo_lock)));
        }
        Ok(guard)
    }

    /// As the trait says: behind a gateway with the repository mounted here, `cvmfs_server
    /// mount REPO` under the spool lock (so no transaction of this host is open meanwhile). At
    /// [`RefreshPoint::NextImage`] also when the last remount is over a minute old, so other
    /// nodes' publishes show in a long pass and to `serve` between notifications.
    fn refresh_view(&self, point: RefreshPoint) -> Result<bool, PublishError> {
        use std::sync::atomic::Ordering;
        if !self.reads_fresh() {
            return Ok(false);
        }
        let last = *self.last_remount.lock().unwrap_or_else(|e| e.into_inner());
        let recent = last.is_some_and(|at| at.elapsed() < VIEW_MAX_AGE);
        if point == RefreshPoint::NextImage && recent && !self.view_behind.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let _spool = self.spool_lock()?;
        // Cleared before the remount: a revision made meanwhile by another thread marks it
        // again.
        self.view_behind.store(false, Ordering::SeqCst);
        if let Err(e) = self.run(&["mount".into(), self.repo.clone().into()]) {
            self.view_behind.store(true, Ordering::SeqCst);
            return Err(e);
        }
        *self.last_remount.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        tracing::debug!(repo = %self.repo, ?point, "remounted to the newest revision");
        Ok(true)
    }

    fn observe(&self, observer: Arc<dyn PublishObserver>) {
        *self.observer.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(observer);
    }

    fn remove_leftovers(&self, dry_run: bool) -> Result<Vec<PathBuf>, PublishError> {
        let root = self.state_dir.join("staging");
        // Only with the spool lock: a call left running by a killed run may still read its tar.
        let spool = self.spool_lock()?;
        let mut found = dead_staging(&root).map_err(io_err("read", root.as_path()))?;
        if !dry_run {
            for dir in &found {
                fs::remove_dir_all(dir).map_err(io_err("remove", dir.as_path()))?;
                let lock = dir.with_extension("lock");
                let _ = fs::remove_file(lock);
            }
        }
        drop(spool);
        found.extend(self.locks.remove_dead(dry_run)?);
        Ok(found)
    }
}

/// A staging directory of this process: removed with its lock file when dropped; a dead
/// process's is found by its unlocked lock file.
#[derive(Debug)]
struct Staging {
    dir: PathBuf,
    lock_path: PathBuf,
    _owner: FileLock,
}

impl Staging {
    fn new(publisher: &CvmfsPublisher, prefix: &str) -> Result<Self, PublishError> {
        let id = unique_name(prefix);
        let root = publisher.state_dir.join("staging");
        let lock_path = root.join(format!("{id}.lock"));
        let owner = FileLock::exclusive(&lock_path).map_err(io_err("lock", lock_path.as_path()))?;
        let dir = root.join(id);
        fs::create_dir_all(&dir).map_err(io_err("create", dir.as_path()))?;
        Ok(Self {
            dir,
            lock_path,
            _owner: owner,
        })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
        let _ = fs::remove_file(&self.lock_path);
    }
}

/// A tree a transaction wrote, kept until its unit is published.
#[derive(Debug, Clone)]
struct Tree {
    dir: RepoPath,
    source: TreeSource,
    options: IngestOptions,
}

#[derive(Debug, Clone)]
enum TreeSource {
    /// Built by a [`Transaction::fill_dir`] callback in this directory.
    Dir(PathBuf),
    /// Given to [`Transaction::ingest_tar`], copied to this file.
    Tar(PathBuf),
}

/// A file or symlink written at commit.
#[derive(Debug, Clone)]
enum Leaf {
    /// Content staged in this file.
    File(PathBuf),
    /// A symlink with this target.
    Symlink(PathBuf),
}

/// What one committed transaction wrote, waiting to be published with its lease held.
#[derive(Debug)]
struct Unit {
    lease: RepoPath,
    trees: Vec<Tree>,
    leaves: BTreeMap<RepoPath, Leaf>,
    removals: Vec<RepoPath>,
    /// Units merged into this one (see [`Unit::absorb`]): emptied, kept for their staging.
    absorbed: Vec<Unit>,
    /// Handed to its streaming group's open ingest (see `stream.rs`): published with it.
    streamed: bool,
    // Dropped after the fields above were published or discarded. Shared by the transactions
    // of one group on one lease (see `CvmfsGroup::begin`).
    _staging: Staging,
    _lease: Arc<LeaseGuard>,
}

/// What a unit holds at a path, as far as the unit decides it.
enum Seen {
    /// What is (or is not) at this path of this host's filesystem.
    At(PathBuf),
    /// A symlink with this target.
    Link(PathBuf),
    /// Nothing: removed, or inside a tree that does not hold it.
    Nothing,
    /// Inside a tree staged as a tar stream.
    InTar,
}

impl Unit {
    fn is_empty(&self) -> bool {
        self.trees.is_empty() && self.leaves.is_empty() && self.removals.is_empty()
    }

    /// What this unit makes of `path`; `None` when it leaves it as it was.
    fn sees(&self, path: &RepoPath) -> Option<Seen> {
        match self.leaves.get(path) {
            Some(Leaf::File(file)) => return Some(Seen::At(file.clone())),
            Some(Leaf::Symlink(target)) => return Some(Seen::Link(target.clone())),
            None => {}
        }
        if let Some(tree) = self.trees.iter().rev().find(|t| path.starts_with(&t.dir)) {
            return Some(match &tree.source {
                TreeSource::Dir(local) => {
                    let rel = &path.as_str()[tree.dir.as_str().len()..];
                    Seen::At(local.join(rel.trim_start_matches('/')))
                }
                TreeSource::Tar(_) => Seen::InTar,
            });
        }
        if self.removals.iter().any(|r| path.starts_with(r)) {
            return Some(Seen::Nothing);
        }
        None
    }

    /// Takes `later`'s writes into this unit when publishing them together, in this unit's
    /// place, changes nothing: `later` lies in this unit's lease, removes nothing, and its trees
    /// touch none of this unit's trees or files (`later`'s files replace this unit's at the same
    /// paths). Otherwise gives `later` back.
    fn absorb(&mut self, mut later: Unit) -> Option<Unit> {
        let clash = later.trees.iter().any(|t| {
            self.trees
                .iter()
                .any(|o| o.dir.starts_with(&t.dir) || t.dir.starts_with(&o.dir))
                || self.leaves.keys().any(|l| l.starts_with(&t.dir))
        });
        if !later.lease.starts_with(&self.lease) || !later.removals.is_empty() || clash {
            return Some(later);
        }
        self.trees.append(&mut later.trees);
        self.leaves.append(&mut later.leaves);
        self.absorbed.push(later);
        None
    }

    /// Whether the unit can go through the mount: it holds no tree of new data (a layer), only
    /// trees made of layer files, small files, links and removals.
    fn mountable(&self) -> bool {
        self.trees
            .iter()
            .all(|t| t.options.from_layers && matches!(t.source, TreeSource::Dir(_)))
    }
}

/// A [`Group`] of the `cvmfs` publisher (see [`Group`] for the rules).
struct CvmfsGroup<'p> {
    publisher: &'p CvmfsPublisher,
    /// The group this one is nested in ([`Group::nested`]).
    parent: Option<&'p CvmfsGroup<'p>>,
    units: Mutex<Vec<Unit>>,
    published: Mutex<Published>,
    /// A streaming group's ingest ([`Publisher::streaming_group`]).
    stream: Option<StreamPlan>,
}

/// How a streaming group's units go in: into an open ingest.
struct StreamPlan {
    /// Tells this group's open ingest from another's.
    id: u64,
    /// The leases its transactions are declared on.
    leases: Vec<RepoPath>,
    outcome: Arc<stream::StreamOutcome>,
}

impl<'p> CvmfsGroup<'p> {
    fn new(publisher: &'p CvmfsPublisher, parent: Option<&'p CvmfsGroup<'p>>) -> Self {
        CvmfsGroup {
            publisher,
            parent,
            units: Mutex::new(Vec::new()),
            published: Mutex::new(Published::default()),
            stream: None,
        }
    }

    /// Takes a committed transaction's unit: a streaming group hands it to its open ingest,
    /// opened at the first unit with a tree (a layer), the units of small files held back until
    /// then going first: a group whose first layer fails never starts an ingest. A unit that
    /// removes paths goes in at the group's commit, after what was streamed.
    fn add(&self, mut unit: Unit) -> Result<(), PublishError> {
        let mut units = self.units();
        if let Some(plan) = &self.stream {
            let streamable = |u: &Unit| u.removals.is_empty() && !u.is_empty();
            if !streamable(&unit) {
                self.publisher.end_open_ingest(Some(plan.id), false);
            } else if !unit.trees.is_empty() || self.publisher.is_streaming(plan.id) {
                for held in units.iter_mut().filter(|u| !u.streamed && streamable(u)) {
                    self.publisher.stream_unit(plan, held)?;
                    held.streamed = true;
                }
                self.publisher.stream_unit(plan, &unit)?;
                unit.streamed = true;
            }
        }
        units.push(unit);
        Ok(())
    }

    /// Ends this group's open ingest, if any; its revisions, or the error that ended it.
    fn end_stream(&self) -> Result<usize, PublishError> {
        let Some(plan) = &self.stream else {
            return Ok(0);
        };
        self.publisher.end_open_ingest(Some(plan.id), false);
        if let Some(e) = plan
            .outcome
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            return Err(e);
        }
        Ok(plan
            .outcome
            .revisions
            .swap(0, std::sync::atomic::Ordering::SeqCst))
    }

    fn units(&self) -> std::sync::MutexGuard<'_, Vec<Unit>> {
        self.units.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take_units(&self) -> Vec<Unit> {
        std::mem::take(&mut *self.units())
    }

    /// This group and the groups it is nested in, innermost first.
    fn chain(&self) -> impl Iterator<Item = &CvmfsGroup<'p>> {
        std::iter::successors(Some(self), |g| g.parent)
    }

    /// The lease guard of a unit of this group (or of one it is nested in) whose lease holds
    /// `lease`.
    fn held(&self, lease: &RepoPath) -> Option<Arc<LeaseGuard>> {
        self.chain().find_map(|g| {
            g.units()
                .iter()
                .rev()
                .find(|u| lease.starts_with(&u.lease))
                .map(|u| Arc::clone(&u._lease))
        })
    }

    /// The lease guards of the units of this group and of those it is nested in.
    fn guards(&self) -> Vec<Arc<LeaseGuard>> {
        self.chain()
            .flat_map(|g| {
                g.units()
                    .iter()
                    .map(|u| Arc::clone(&u._lease))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// What the units of this group (and of those it is nested in) make of `path`, newest
    /// first.
    fn sees(&self, path: &RepoPath) -> Option<Seen> {
        self.chain()
            .find_map(|g| g.units().iter().rev().find_map(|u| u.sees(path)))
    }
}

impl Drop for CvmfsGroup<'_> {
    /// A streaming group dropped without its commit: its ingest is killed and aborted before
    /// the units it reads from go.
    fn drop(&mut self) {
        if let Some(plan) = &self.stream {
            self.publisher.end_open_ingest(Some(plan.id), true);
        }
    }
}

impl Group for CvmfsGroup<'_> {
    fn publisher(&self) -> &dyn Publisher {
        self.publisher
    }

    fn begin(&self, lease: &RepoPath) -> Result<Box<dyn Transaction + '_>, PublishError> {
        let lock_err = |source| PublishError::Lock {
            lease: lease.clone(),
            source,
        };
        // A lease this group holds already (an earlier transaction on it, committed into the
        // group) is this group's to use again: a batch of images rewriting one shared file.
        let held = self.held(lease);
        let locks = &self.publisher.locks;
        // The group's own leases never hold it off: they are published one after another (two
        // tags `1.0` and `1.0.1` overlap by the gateway's string-prefix rule only).
        let guards = self.guards();
        let ours: Vec<&LeaseGuard> = guards.iter().map(|g| &**g).collect();
        let guard = match held {
            Some(guard) => guard,
            None => match locks.try_acquire_beside(lease, &ours).map_err(lock_err)? {
                Some(guard) => Arc::new(guard),
                None => {
                    // Never wait while holding leases: what another process (or this group)
                    // holds may be waiting for ours.
                    self.flush()?;
                    Arc::new(locks.acquire(lease).map_err(lock_err)?)
                }
            },
        };
        Ok(Box::new(CvmfsTransaction::new(
            self.publisher,
            Some(self),
            lease,
            guard,
        )?))
    }

    fn flush(&self) -> Result<Published, PublishError> {
        if let Some(parent) = self.parent {
            parent.units().append(&mut self.units());
            return parent.flush();
        }
        let streamed = self.end_stream()?;
        let units = self.take_units();
        let mut published = self
            .publisher
            .publish(units.into_iter().filter(|u| !u.streamed).collect())?;
        published.revisions += streamed;
        *self.published.lock().unwrap_or_else(|e| e.into_inner()) += published;
        Ok(published)
    }

    fn nested(&self) -> Box<dyn Group + '_> {
        Box::new(CvmfsGroup::new(self.publisher, Some(self)))
    }

    fn published(&self) -> Published {
        *self.published.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn commit(self: Box<Self>) -> Result<Published, PublishError> {
        if let Some(parent) = self.parent {
            parent.units().append(&mut self.units());
            // What its transactions published at their own commit (fresh reads behind a
            // gateway) counts for the parent.
            *parent.published.lock().unwrap_or_else(|e| e.into_inner()) += self.published();
            return Ok(Published::default());
        }
        self.flush()?;
        Ok(*self.published.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

struct CvmfsTransaction<'a> {
    publisher: &'a CvmfsPublisher,
    /// Where the commit goes: `None` publishes at once.
    group: Option<&'a CvmfsGroup<'a>>,
    unit: Unit,
    next_tree: usize,
    /// Behind a gateway: the server transaction its first read of the published tree opened
    /// on its lease, published at its commit (see `fresh.rs`).
    fresh: Mutex<Option<fresh::Fresh<'a>>>,
}

impl<'a> CvmfsTransaction<'a> {
    /// Before a read of the published tree that decides a write: behind a gateway, opens the
    /// server transaction on this transaction's lease (once), after its group published what
    /// it holds, so the read sees the newest revision and nobody else publishes below the
    /// lease until this transaction's commit (see `fresh.rs`).
    fn go_fresh(&self) -> Result<(), PublishError> {
        if !self.publisher.reads_fresh() {
            return Ok(());
        }
        let mut fresh = self.fresh.lock().unwrap_or_else(|e| e.into_inner());
        if fresh.is_some() {
            return Ok(());
        }
        // Never wait for a lease while holding others, never two server transactions.
        if let Some(group) = self.group {
            group.flush()?;
        }
        *fresh = Some(self.publisher.open_fresh(&self.unit.lease)?);
        Ok(())
    }

    fn new(
        publisher: &'a CvmfsPublisher,
        group: Option<&'a CvmfsGroup<'a>>,
        lease: &RepoPath,
        guard: Arc<LeaseGuard>,
    ) -> Result<Self, PublishError> {
        Ok(Self {
            publisher,
            group,
            unit: Unit {
                lease: lease.clone(),
                trees: Vec::new(),
                leaves: BTreeMap::new(),
                removals: Vec::new(),
                absorbed: Vec::new(),
                streamed: false,
                _staging: Staging::new(publisher, "tx-")?,
                _lease: guard,
            },
            next_tree: 0,
            fresh: Mutex::new(None),
        })
    }

    fn removed(&self, path: &RepoPath) -> bool {
        self.unit.removals.iter().any(|r| path.starts_with(r))
    }

    fn published(&self, path: &RepoPath) -> bool {
        fs::symlink_metadata(self.publisher.mount(path)).is_ok() && !self.removed(path)
    }

    /// Checks that a new tree may go at `dir`.
    fn prepare_tree(&self, dir: &RepoPath) -> Result<(), PublishError> {
        check_lease(&self.unit.lease, dir)?;
        let pending = self
            .unit
            .trees
            .iter()
            .any(|t| t.dir.starts_with(dir) || dir.starts_with(&t.dir))
            || self.unit.leaves.keys().any(|l| l.starts_with(dir));
        if dir.is_root() || self.published(dir) || pending {
            return Err(PublishError::AlreadyExists { path: dir.clone() });
        }
        Ok(())
    }

    /// Checks that a file or symlink may go at `path`.
    fn prepare_leaf(&mut self, path: &RepoPath) -> Result<(), PublishError> {
        check_lease(&self.unit.lease, path)?;
        // A file may go into a tree of the same unit (a flat tree's completion record): the
        // tree must then not hold that path itself, checked when the unit is staged.
        if self.unit.trees.iter().any(|t| t.dir == *path) {
            return Err(PublishError::AlreadyExists { path: path.clone() });
        }
        let published_dir = self.publisher.is_dir(path) && !self.removed(path);
        if path.is_root() || published_dir {
            return Err(PublishError::AlreadyExists { path: path.clone() });
        }
        Ok(())
    }

    /// Where what `path` will be can be read now (see [`Transaction::read_file`]): this
    /// transaction's writes, then its group's, newest first, then the published tree.
    fn future_source(&self, path: &RepoPath) -> Result<Option<Seen>, PublishError> {
        check_lease(&self.unit.lease, path)?;
        if let Some(seen) = self.unit.sees(path) {
            return Ok(Some(seen));
        }
        if let Some(seen) = self.group.and_then(|g| g.sees(path)) {
            return Ok(Some(seen));
        }
        // Behind a gateway this node's view lags: brought to the newest revision inside the
        // lease first (see `fresh.rs`).
        self.go_fresh()?;
        Ok(Some(Seen::At(self.publisher.mount(path))))
    }

    fn staging_path(&mut self, what: &str) -> PathBuf {
        self.next_tree += 1;
        self.unit
            ._staging
            .dir
            .join(format!("{what}-{}", self.next_tree))
    }
}

impl Transaction for CvmfsTransaction<'_> {
    fn lease(&self) -> &RepoPath {
        &self.unit.lease
    }

    fn ingest_tar(
        &mut self,
        dir: &RepoPath,
        tar: &mut dyn Read,
        options: IngestOptions,
    ) -> Result<(), PublishError> {
        self.prepare_tree(dir)?;
        let file = self.staging_path("tree");
        let file = file.with_extension("tar");
        let mut out =
            BufWriter::new(File::create(&file).map_err(io_err("create", file.as_path()))?);
        // Checked now, so a bad stream fails here rather than at the group's commit.
        let mut check = Stager::checker(self.publisher, dir);
        let mut tee = Tee {
            inner: tar,
            copy: &mut out,
        };
        check.stage_stream(dir, &mut tee, options)?;
        io::copy(&mut tee, &mut io::sink()).map_err(|source| PublishError::Tar {
            dir: dir.clone(),
            source,
        })?;
        out.flush().map_err(io_err("write", file.as_path()))?;
        self.unit.trees.push(Tree {
            dir: dir.clone(),
            source: TreeSource::Tar(file),
            options,
        });
        Ok(())
    }

    fn fill_dir(
        &mut self,
        dir: &RepoPath,
        options: IngestOptions,
        fill: &mut dyn FnMut(&Path, FillHints) -> Result<(), FillError>,
    ) -> Result<(), PublishError> {
        self.prepare_tree(dir)?;
        let tree = self.staging_path("tree");
        fs::create_dir_all(&tree).map_err(io_err("create", tree.as_path()))?;
        let hints = FillHints {
            record_sources: options.from_layers && self.publisher.mounted,
            leave_out_special_files: self.publisher.gateway,
        };
        if let Err(source) = fill(&tree, hints) {
            let _ = fs::remove_dir_all(&tree);
            return Err(PublishError::Fill {
                dir: dir.clone(),
                source,
            });
        }
        self.unit.trees.push(Tree {
            dir: dir.clone(),
            source: TreeSource::Dir(tree),
            options,
        });
        Ok(())
    }

    fn write_file(&mut self, path: &RepoPath, content: &mut dyn Read) -> Result<(), PublishError> {
        self.prepare_leaf(path)?;
        let file = self.staging_path("leaf");
        let mut out = File::create(&file).map_err(io_err("create", file.as_path()))?;
        io::copy(content, &mut out).map_err(io_err("write", file.as_path()))?;
        out.flush().map_err(io_err("write", file.as_path()))?;
        self.unit.leaves.insert(path.clone(), Leaf::File(file));
        Ok(())
    }

    fn read_file(&self, path: &RepoPath) -> Result<Option<Vec<u8>>, PublishError> {
        match self.future_source(path)? {
            Some(Seen::At(at)) => read_small(&at),
            Some(Seen::InTar) => Err(in_tar(path)),
            _ => Ok(None),
        }
    }

    fn read_link(&self, path: &RepoPath) -> Result<Option<PathBuf>, PublishError> {
        match self.future_source(path)? {
            Some(Seen::At(at)) => read_link_at(&at),
            Some(Seen::Link(target)) => Ok(Some(target)),
            Some(Seen::InTar) => Err(in_tar(path)),
            _ => Ok(None),
        }
    }

    fn symlink(&mut self, path: &RepoPath, target: &Path) -> Result<(), PublishError> {
        self.prepare_leaf(path)?;
        self.unit
            .leaves
            .insert(path.clone(), Leaf::Symlink(target.to_owned()));
        Ok(())
    }

    fn remove(&mut self, path: &RepoPath) -> Result<(), PublishError> {
        check_lease(&self.unit.lease, path)?;
        self.unit.leaves.retain(|l, _| !l.starts_with(path));
        if self
            .unit
            .trees
            .iter()
            .any(|t| t.dir.starts_with(path) || path.starts_with(&t.dir))
        {
            return Err(PublishError::AlreadyStaged { path: path.clone() });
        }
        if !self.published(path) {
            return Ok(());
        }
        self.unit.removals.retain(|r| !r.starts_with(path));
        self.unit.removals.push(path.clone());
        Ok(())
    }

    fn commit(self: Box<Self>) -> Result<(), PublishError> {
        let this = *self;
        let fresh = this.fresh.into_inner().unwrap_or_else(|e| e.into_inner());
        if let Some(fresh) = fresh {
            if this.unit.is_empty() {
                // Read, found nothing to change: no revision.
                return fresh.abort();
            }
            if fresh::Fresh::can_publish(&this.unit) {
                // Published now, on the lease its reads were made in.
                let report = fresh.publish(&this.unit)?;
                if let Some(group) = this.group {
                    *group.published.lock().unwrap_or_else(|e| e.into_inner()) += Published {
                        revisions: 1,
                        grafted_files: report.grafted,
                        copied_files: report.stored,
                    };
                }
                return Ok(());
            }
            fresh.abort()?;
        }
        match this.group {
            Some(group) => group.add(this.unit),
            None => this.publisher.publish(vec![this.unit]).map(|_| ()),
        }
    }

    fn abort(self: Box<Self>) -> Result<(), PublishError> {
        tracing::debug!(lease = %self.unit.lease, "cvmfs transaction aborted: nothing staged is kept");
        Ok(())
    }
}

/// A read of a path staged inside a tar stream given to [`Transaction::ingest_tar`].
fn in_tar(path: &RepoPath) -> PublishError {
    PublishError::CorruptFile {
        path: PathBuf::from(path.as_str()),
        reason: "it is part of a tar stream staged for ingest, not readable before the commit"
            .into(),
    }
}

/// Copies what is read from `inner` into `copy`.
struct Tee<'a> {
    inner: &'a mut dyn Read,
    copy: &'a mut dyn Write,
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

impl CvmfsPublisher {
    /// Publishes `units` (see [`Group`]): behind a gateway one revision per unit, on its lease;
    /// on a stratum 0 all of them in one revision. Returns the revisions made.
    fn publish(&self, units: Vec<Unit>) -> Result<Published, PublishError> {
        let units = coalesce(units.into_iter().filter(|u| !u.is_empty()));
        let mut published = Published::default();
        if units.is_empty() {
            return Ok(published);
        }
        if self.gateway {
            for unit in units {
                published += self.publish_together(std::slice::from_ref(&unit))?;
            }
            return Ok(published);
        }
        self.publish_together(&units)
    }

    fn publish_together(&self, units: &[Unit]) -> Result<Published, PublishError> {
        let mut published = Published::default();
        // A flat tree of layer files goes through the mount (grafts), with whatever else its
        // group holds; so do small files and links alone. Removals without one stay
        // `ingest --delete` calls (batched, measured: gc and delete-image).
        let grafts = units
            .iter()
            .any(|u| u.trees.iter().any(|t| t.options.from_layers));
        // Behind a gateway a mounted transaction's lease needs its parent published, which a
        // small commit of new paths may lack: those go by ingest, which creates its base.
        let leaves_only = !self.gateway
            && units
                .iter()
                .all(|u| u.trees.is_empty() && u.removals.is_empty());
        if self.mounted && (grafts || leaves_only) && units.iter().all(Unit::mountable) {
            let report = self.commit_mounted(units)?;
            published.revisions = 1;
            published.grafted_files = report.grafted;
            published.copied_files = report.stored;
        } else {
            published.revisions = self.commit_ingest(units)?;
        }
        Ok(published)
    }

    /// One tar for all units (`ingest -k -t - -b BASE`, streamed as it is staged), or, when
    /// paths are removed first (`ingest --delete`, a revision each call), a staged tar checked
    /// whole before anything is removed (`ingest -k -t FILE -b BASE`).
    fn commit_ingest(&self, units: &[Unit]) -> Result<usize, PublishError> {
        let mut removals: Vec<RepoPath> = Vec::new();
        for r in units.iter().flat_map(|u| &u.removals) {
            if !removals.iter().any(|k| r.starts_with(k)) {
                removals.retain(|k| !k.starts_with(r));
                removals.push(r.clone());
            }
        }
        let (base, base_is_new) = self.ingest_base(units.iter().map(|u| &u.lease));
        let lease = format!("{}/{}", self.repo, base.as_str());
        let stage_all = |staged: PathBuf, out: Option<Box<dyn Write + Send>>| {
            let mut stager = Stager {
                mount_root: self.mount(&RepoPath::root()),
                gateway: self.gateway,
                base: base.clone(),
                base_is_new,
                staged,
                tar: out.map(tar_builder),
                dirs: HashSet::new(),
                entries: HashSet::new(),
                leaves: units
                    .iter()
                    .flat_map(|u| u.leaves.keys().cloned())
                    .collect(),
                removals: removals.clone(),
                check_only: false,
            };
            for tree in units.iter().flat_map(|u| &u.trees) {
                stager.stage(tree)?;
            }
            for unit in units {
                stager.stage_leaves(&unit.leaves)?;
            }
            Ok::<_, PublishError>(stager)
        };
        let ingest_args = |tar: OsString| -> Vec<OsString> {
            vec![
                "ingest".into(),
                "-k".into(),
                "-t".into(),
                tar,
                "-b".into(),
                base.as_str().into(),
                self.repo.clone().into(),
            ]
        };
        if removals.is_empty() {
            // The server reads, hashes and compresses while the tar is staged.
            let stream = PathBuf::from(format!("the ingest stream into {}", self.repo));
            self.ingest_streamed(ingest_args("-".into()), &lease, &mut |out| {
                stage_all(stream.clone(), Some(out))?.end_tar()
            })?;
            return Ok(1);
        }
        let staging = Staging::new(self, "ingest-")?;
        let staged = staging.dir.join("ingest.tar");
        let mut stager = stage_all(staged.clone(), None)?;
        let mut revisions = 0;
        // A gateway takes one delete path per call (gateway scenario 4); a stratum 0 takes
        // many (scenario 8), in batches that keep the command line short. Each call is a
        // revision of its own.
        let batch = if self.gateway { 1 } else { DELETE_BATCH };
        for paths in removals.chunks(batch) {
            let mut args: Vec<OsString> = vec!["ingest".into()];
            for path in paths {
                args.push("--delete".into());
                args.push(path.as_str().into());
            }
            args.push(self.repo.clone().into());
            let lease = format!("{}/{}", self.repo, paths[0].as_str());
            self.ingest(args, &lease)?;
            revisions += 1;
        }
        if stager.tar.is_none() {
            return Ok(revisions);
        }
        stager.end_tar()?;
        self.ingest(ingest_args(staged.into_os_string()), &lease)?;
        drop(staging);
        Ok(revisions + 1)
    }

    /// The ingest base for leases: the deepest directory holding all of them (a lease's parent
    /// for a single lease, as `-b .layers/<hh>` for a layer: scenario 14's shape) when it is
    /// published, else its first missing ancestor, which the tar's `./` entry creates 0755 0:0
    /// (scenario 2). Its parent always exists, as a gateway requires.
    fn ingest_base<'l>(&self, leases: impl Iterator<Item = &'l RepoPath>) -> (RepoPath, bool) {
        let mut common: Option<RepoPath> = None;
        for lease in leases {
            let anchor = match lease.parent() {
                Some(parent) if !parent.is_root() => parent,
                _ => lease.clone(),
            };
            common = Some(match common {
                None => anchor,
                Some(c) => common_ancestor(&c, &anchor),
            });
        }
        let dir = common.unwrap_or_else(RepoPath::root);
        let mut chain = dir.ancestors();
        chain.push(dir.clone());
        match chain.into_iter().find(|p| !self.is_dir(p)) {
            Some(missing) => (missing, true),
            None => (dir, false),
        }
    }

    /// One mounted transaction for all units: `cvmfs_server transaction`, the writes through
    /// the mount (flat trees as graft files), `cvmfs_server publish`; any failure aborts it
    /// (`abort -f`), so nothing of it is published and nothing is left open.
    fn commit_mounted(&self, units: &[Unit]) -> Result<crate::graft::GraftReport, PublishError> {
        let _spool = self.spool_lock()?;
        let target = if self.gateway {
            self.transaction_target(&units[0].lease)
        } else {
            self.repo.clone()
        };
        // Recorded before the transaction opens: a run killed anywhere from here on leaves
        // the record, and the next one aborts what it left open.
        let record = self.in_flight_path();
        let text = format!(
            "{} transaction {target} (mounted writes)\n",
            std::process::id()
        );
        fs::write(&record, text).map_err(io_err("write", record.as_path()))?;
        let args: Vec<OsString> = vec!["transaction".into(), target.clone().into()];
        let opened = self.run_busy_retry(&target, &mut || self.run(&args));
        if let Err(e) = opened {
            let _ = fs::remove_file(&record);
            return Err(e);
        }
        let started = Instant::now();
        let written = self.write_units(units);
        let result = written.and_then(|report| {
            self.run_recorded(&["publish".into(), self.repo.clone().into()], true)
                .map(|_| report)
        });
        if result.is_ok() {
            self.published_here();
        }
        match result {
            Ok(report) => {
                tracing::info!(
                    repo = %self.repo,
                    grafted = report.grafted,
                    stored = report.stored,
                    seconds = started.elapsed().as_secs_f64(),
                    "published through the mount"
                );
                Ok(report)
            }
            Err(e) => {
                if let Err(abort) =
                    self.run(&["abort".into(), "-f".into(), self.repo.clone().into()])
                {
                    tracing::warn!(repo = %self.repo, error = %abort, "abort after a failed mounted transaction did not succeed");
                }
                let _ = fs::remove_file(&record);
                Err(e)
            }
        }
    }

    /// `cvmfs_server ARGS` (noted in `in-flight` with `record`), retried with backoff while a
    /// gateway says `lease` is busy (rc 16: another node holds an overlapping lease), for up to
    /// [`BUSY_RETRY`]. The wait is visible: a warning and the observer's `lease_busy` when it
    /// starts, `lease_wait_ended` when it ends.
    fn run_busy_retry(
        &self,
        lease: &str,
        call: &mut dyn FnMut() -> Result<String, PublishError>,
    ) -> Result<String, PublishError> {
        let started = Instant::now();
        let mut wait = Duration::from_millis(200);
        let mut waits = 0;
        loop {
            match call() {
                Err(PublishError::Command { stderr, .. })
                    if is_busy(&stderr) && started.elapsed() < BUSY_RETRY =>
                {
                    if waits == 0 {
                        tracing::warn!(
                            repo = %self.repo,
                            "gateway lease {lease} busy (another publisher holds an overlapping one): waiting up to {} s",
                            BUSY_RETRY.as_secs()
                        );
                        if let Some(observer) = self.observer.get() {
                            observer.lease_busy(lease, BUSY_RETRY);
                        }
                    } else {
                        tracing::info!(repo = %self.repo, waited_s = started.elapsed().as_secs_f64(), "gateway lease {lease} still busy, retrying");
                    }
                    waits += 1;
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                result => {
                    if waits > 0 {
                        let waited = started.elapsed();
                        if result.is_ok() {
                            tracing::info!(repo = %self.repo, waited_s = waited.as_secs_f64(), waits, "gateway lease {lease} granted after waiting");
                        } else {
                            tracing::warn!(repo = %self.repo, waited_s = waited.as_secs_f64(), waits, "gave up waiting for gateway lease {lease}");
                        }
                        if let Some(observer) = self.observer.get() {
                            observer.lease_wait_ended(lease, waited, result.is_ok());
                        }
                    }
                    return result;
                }
            }
        }
    }

    /// The units' writes through the mount, in transaction order: removals, trees, leaves.
    fn write_units(&self, units: &[Unit]) -> Result<crate::graft::GraftReport, PublishError> {
        let mut report = crate::graft::GraftReport::default();
        let mount_root = self.mount_dir.join(&self.repo);
        for unit in units {
            for path in &unit.removals {
                crate::graft::remove_any(&self.mount(path))?;
            }
            for tree in &unit.trees {
                let TreeSource::Dir(local) = &tree.source else {
                    continue;
                };
                if self.gateway
                    && tree.options.from_layers
                    && fs::symlink_metadata(self.mount(&tree.dir)).is_ok()
                {
                    // Another node published this tree of layer files (a flat tree is named by
                    // its config) since this node's view was taken: the transaction's remount
                    // shows it now, and it is the same.
                    tracing::info!(repo = %self.repo, dir = %tree.dir, "another publisher node published this tree meanwhile: kept");
                    continue;
                }
                let writer = crate::graft::MountWriter {
                    mount_root: &mount_root,
                    layout: &self.layout,
                };
                writer.write_tree(local, &tree.dir, tree.options.catalog, &mut report)?;
            }
            for (path, leaf) in &unit.leaves {
                let writer = crate::graft::MountWriter {
                    mount_root: &mount_root,
                    layout: &self.layout,
                };
                match leaf {
                    Leaf::File(file) => writer.write_leaf_file(path, file)?,
                    Leaf::Symlink(target) => writer.write_leaf_symlink(path, target)?,
                }
            }
        }
        Ok(report)
    }
}

/// Merges each unit into the latest earlier one whose lease holds it (transactions of one group
/// on one lease: a batch of images rewriting one shared file) where [`Unit::absorb`] allows, so
/// each path is written once per publish and a gateway takes one revision per lease. A unit
/// that cannot be merged stays after the ones before it, and nothing later merges past it.
fn coalesce(units: impl Iterator<Item = Unit>) -> Vec<Unit> {
    let mut out: Vec<Unit> = Vec::new();
    let mut closed: Vec<bool> = Vec::new();
    for unit in units {
        let home = out
            .iter()
            .rposition(|u| unit.lease.starts_with(&u.lease) || u.lease.starts_with(&unit.lease));
        let unit = match home {
            Some(i) if !closed[i] && unit.lease.starts_with(&out[i].lease) => {
                match out[i].absorb(unit) {
                    None => continue,
                    Some(unit) => {
                        closed[i] = true;
                        unit
                    }
                }
            }
            _ => unit,
        };
        out.push(unit);
        closed.push(false);
    }
    out
}

/// The deepest common ancestor (or self) of two paths.
fn common_ancestor(a: &RepoPath, b: &RepoPath) -> RepoPath {
    let shared: Vec<&str> = a
        .components()
        .zip(b.components())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x)
        .collect();
    if shared.is_empty() {
        RepoPath::root()
    } else {
        RepoPath::new(shared.join("/")).unwrap_or_else(|_| RepoPath::root())
    }
}

/// The current time in seconds, for directories the transaction adds on its own.
fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn dir_header(mode: u32, uid: u64, gid: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_mtime(mtime);
    h.set_size(0);
    h
}

/// Appends one entry to a staged tar, its name and link target as bytes: one that does not fit
/// its header field or is not UTF-8 goes in a PAX `path` (`linkpath`) record, as ducc-unpack's
/// tar output writes long names, and a name that is not UTF-8 comes with `hdrcharset=BINARY`:
/// libarchive, ingest's reader, otherwise converts PAX names from UTF-8 to the locale.
fn append_named(
    builder: &mut tar::Builder<Box<dyn Write + Send>>,
    header: &mut tar::Header,
    name: &[u8],
    link: Option<&[u8]>,
    data: &mut dyn Read,
) -> io::Result<()> {
    let mut pax: Vec<(&str, &[u8])> = Vec::new();
    let binary =
        std::str::from_utf8(name).is_err() || link.is_some_and(|l| std::str::from_utf8(l).is_err());
    if binary {
        pax.push(("hdrcharset", b"BINARY"));
    }
    put_name(&mut header.as_old_mut().name, name, "path", &mut pax);
    if let Some(link) = link {
        put_name(
            &mut header.as_old_mut().linkname,
            link,
            "linkpath",
            &mut pax,
        );
    }
    if !pax.is_empty() {
        builder.append_pax_extensions(pax)?;
    }
    header.set_cksum();
    builder.append(header, data)
}

/// Puts `name` in a header field; when it does not fit or is not UTF-8, also in a PAX record
/// (the field then holds its first bytes, for readers that ignore PAX).
fn put_name<'n>(
    field: &mut [u8],
    name: &'n [u8],
    key: &'static str,
    pax: &mut Vec<(&'static str, &'n [u8])>,
) {
    field.fill(0);
    let shown = name.len().min(field.len());
    field[..shown].copy_from_slice(&name[..shown]);
    if name.len() > field.len() || std::str::from_utf8(name).is_err() {
        pax.push((key, name));
    }
}

/// `dir/rel` as repository path bytes (`dir` for the root of the tree).
fn below(dir: &RepoPath, rel: &ducc_unpack::EntryPath) -> Vec<u8> {
    let mut path = dir.as_str().as_bytes().to_vec();
    if !rel.is_root() {
        path.push(b'/');
        path.extend_from_slice(rel.as_bytes());
    }
    path
}

/// A tar builder as the stager writes: every header field as given.
fn tar_builder(out: Box<dyn Write + Send>) -> tar::Builder<Box<dyn Write + Send>> {
    let mut builder = tar::Builder::new(out);
    builder.mode(tar::HeaderMode::Complete);
    builder
}

/// Builds the one tar of an ingest: every directory named before its children, each path once,
/// names relative to the ingest base.
struct Stager {
    /// The repository's mount (`/cvmfs/REPO`), where published directories are looked up.
    mount_root: PathBuf,
    /// Whether the repository publishes through a gateway (see [`TarGuard`]).
    gateway: bool,
    /// The `-b` directory of the ingest.
    base: RepoPath,
    /// Whether `base` is not published yet (the tar's `./` entry then creates it).
    base_is_new: bool,
    /// The staged tar's file (or what a streamed one is called in errors).
    staged: PathBuf,
    /// The staged tar, once something was put in it (from the start when streamed).
    tar: Option<tar::Builder<Box<dyn Write + Send>>>,
    /// Directories named by the staged tar (repository paths as bytes; the base as its own path).
    dirs: HashSet<Vec<u8>>,
    /// Other entries of the staged tar (repository paths as bytes).
    entries: HashSet<Vec<u8>>,
    /// Files and symlinks that go in at the end, by repository path.
    leaves: HashSet<RepoPath>,
    /// Paths removed before the ingest.
    removals: Vec<RepoPath>,
    /// Only check the stream (nothing is written).
    check_only: bool,
}

/// Why reading a stream into the staged tar stopped.
enum Stop {
    /// ducc-unpack's reader refused the stream (malformed, a `..` name, a limit).
    Read(ducc_unpack::Error),
    /// Staging an entry failed.
    Stage(PublishError),
}

impl From<ducc_unpack::Error> for Stop {
    fn from(e: ducc_unpack::Error) -> Self {
        Stop::Read(e)
    }
}

impl From<PublishError> for Stop {
    fn from(e: PublishError) -> Self {
        Stop::Stage(e)
    }
}

/// How far one stream's tree is staged.
struct TreeProgress {
    /// Whether the tree's own directory is named.
    root_done: bool,
    /// Whether the stream brought its own catalog marker.
    has_marker: bool,
    /// The tree root's time (its entry's, else now).
    root_mtime: u64,
}

impl Stager {
    /// The name of repository path `path` in the staged tar (relative to the base).
    fn tar_name(&self, path: &[u8]) -> Vec<u8> {
        let base = self.base.as_str().as_bytes();
        let rel = if path == base {
            &[][..]
        } else {
            path.strip_prefix(base)
                .and_then(|r| r.strip_prefix(b"/"))
                .unwrap_or(path)
        };
        if rel.is_empty() {
            b"./".to_vec()
        } else {
            rel.to_vec()
        }
    }

    fn builder(&mut self) -> Result<&mut tar::Builder<Box<dyn Write + Send>>, PublishError> {
        if self.tar.is_none() {
            let out: Box<dyn Write + Send> = if self.check_only {
                Box::new(io::sink())
            } else {
                let path = self.staged.clone();
                let file = File::create(&path).map_err(io_err("create", path))?;
                Box::new(BufWriter::with_capacity(1 << 20, file))
            };
            self.tar = Some(tar_builder(out));
        }
        self.tar.as_mut().ok_or_else(|| PublishError::Io {
            action: "create",
            path: self.staged.clone(),
            source: io::Error::other("no staged tar"),
        })
    }

    /// Appends an entry for repository path `path` (a link to `link`) to the staged tar.
    fn append(
        &mut self,
        header: &mut tar::Header,
        path: &[u8],
        link: Option<&[u8]>,
        data: &mut dyn Read,
    ) -> Result<(), PublishError> {
        let name = self.tar_name(path);
        let staged = self.staged.clone();
        append_named(self.builder()?, header, &name, link, data).map_err(io_err("write", staged))
    }

    /// Appends a directory entry for repository path `path` unless the tar names it already.
    fn add_dir(&mut self, path: &[u8], header: &mut tar::Header) -> Result<(), PublishError> {
        if !self.dirs.insert(path.to_owned()) {
            return Ok(());
        }
        self.append(header, path, None, &mut io::empty())
    }

    /// Names in the tar every directory from the base down to `dir` that is neither published
    /// nor named yet, 0755 0:0, so ingest never has to invent one.
    fn ensure_dirs(&mut self, dir: &RepoPath) -> Result<(), PublishError> {
        let base = self.base.clone();
        let mut chain = dir.ancestors();
        chain.push(dir.clone());
        let now = now_secs();
        for d in chain.iter().filter(|d| d.starts_with(&base)) {
            let bytes = d.as_str().as_bytes();
            if self.dirs.contains(bytes) {
                continue;
            }
            let removed = self.removed(d);
            if !self.base_is_new && !removed {
                match fs::symlink_metadata(self.mount_root.join(d.as_path())) {
                    Ok(m) if m.is_dir() => continue,
                    // A directory entry over a published file would be ignored (scenario 4e)
                    // and everything below it lost.
                    Ok(_) if !self.leaves.contains(d) => {
                        return Err(PublishError::NotADirectory { path: d.clone() });
                    }
                    _ => {}
                }
            }
            if self.entries.contains(bytes) || self.leaves.contains(d) {
                return Err(PublishError::NotADirectory { path: d.clone() });
            }
            self.add_dir(bytes, &mut dir_header(0o755, 0, 0, now))?;
        }
        Ok(())
    }

    /// Names in the tar every directory of the tree at `dir` down to `parent` (relative to
    /// `dir`, names as bytes) that the stream has not named, 0755 0:0. Nothing below `dir` is
    /// published (the tree is new, or replaces what this transaction removes).
    fn ensure_tree_dirs(
        &mut self,
        dir: &RepoPath,
        parent: &ducc_unpack::EntryPath,
    ) -> Result<(), PublishError> {
        let now = now_secs();
        let mut path = dir.as_str().as_bytes().to_vec();
        for component in parent.components() {
            path.push(b'/');
            path.extend_from_slice(component);
            if self.dirs.contains(&path) {
                continue;
            }
            let leaf = std::str::from_utf8(&path)
                .ok()
                .and_then(|p| RepoPath::new(p).ok())
                .filter(|p| self.leaves.contains(p));
            if self.entries.contains(&path) || leaf.is_some() {
                return Err(PublishError::NotADirectory {
                    path: dir
                        .join(String::from_utf8_lossy(parent.as_bytes()).as_ref())
                        .unwrap_or_else(|_| dir.clone()),
                });
            }
            self.add_dir(&path.clone(), &mut dir_header(0o755, 0, 0, now))?;
        }
        Ok(())
    }

    /// Whether `path` lies in a path this transaction removes.
    fn removed(&self, path: &RepoPath) -> bool {
        self.removals.iter().any(|r| path.starts_with(r))
    }

    /// Ends the staged tar (its end-of-archive blocks) and flushes it.
    fn end_tar(&mut self) -> Result<(), PublishError> {
        let Some(builder) = self.tar.take() else {
            return Ok(());
        };
        let mut out = builder
            .into_inner()
            .map_err(io_err("write", self.staged.as_path()))?;
        out.flush().map_err(io_err("write", self.staged.as_path()))
    }

    /// A stager that only checks a stream given to [`Transaction::ingest_tar`].
    fn checker(publisher: &CvmfsPublisher, dir: &RepoPath) -> Self {
        Stager {
            mount_root: publisher.mount(&RepoPath::root()),
            gateway: publisher.gateway,
            base: dir.clone(),
            base_is_new: true,
            staged: PathBuf::new(),
            tar: None,
            dirs: HashSet::new(),
            entries: HashSet::new(),
            leaves: HashSet::new(),
            removals: Vec::new(),
            check_only: true,
        }
    }

    /// Stages one tree of a unit.
    fn stage(&mut self, tree: &Tree) -> Result<(), PublishError> {
        match &tree.source {
            TreeSource::Tar(file) => {
                let mut input =
                    io::BufReader::new(File::open(file).map_err(io_err("read", file.as_path()))?);
                self.stage_stream(&tree.dir, &mut input, tree.options)
            }
            TreeSource::Dir(local) => {
                // The tree as a canonical tar, written on a thread into a pipe this one reads.
                let (mut reader, writer) =
                    io::pipe().map_err(io_err("create a pipe for", local.as_path()))?;
                std::thread::scope(|scope| {
                    let producer = scope.spawn(move || {
                        ducc_unpack::write_tree_as_tar(
                            local,
                            writer,
                            &ducc_unpack::TarWriteOptions::new(),
                        )
                        .map(|_| ())
                    });
                    let staged = self.stage_stream(&tree.dir, &mut reader, tree.options);
                    let _ = io::copy(&mut reader, &mut io::sink());
                    let produced = producer.join().map_err(|_| PublishError::Io {
                        action: "read",
                        path: local.clone(),
                        source: io::Error::other("the tar writer thread panicked"),
                    })?;
                    produced.map_err(|source| PublishError::Unpack {
                        dir: tree.dir.clone(),
                        source,
                    })?;
                    staged
                })
            }
        }
    }

    /// Copies the entries of `tar` under `dir` into the staged tar, refusing what ingest would
    /// silently drop.
    fn stage_stream(
        &mut self,
        dir: &RepoPath,
        tar: &mut dyn Read,
        options: IngestOptions,
    ) -> Result<(), PublishError> {
        if let Some(parent) = dir.parent() {
            self.ensure_dirs(&parent)?;
        }
        let mut guarded = TarGuard::new(tar, self.gateway);
        let result = self.stage_tree(dir, &mut guarded, options);
        if let Some(found) = guarded.found() {
            return Err(match found {
                // Behind a gateway raw `.wh.` names are the only form ducc writes: no flag to
                // suggest there.
                Refused::OpaqueXattr => PublishError::WouldDrop {
                    dir: dir.clone(),
                    what: "an opaque directory (xattr trusted.overlay.opaque)",
                    advice: if self.gateway {
                        "write the layer with raw .wh. whiteouts (.wh..wh..opq)"
                    } else {
                        "write the layer with raw .wh. whiteouts (--layer-whiteouts oci)"
                    },
                },
                // ducc's own trees leave them out (FillHints): only a tar stream given as it
                // is can hold one here.
                Refused::SpecialFile => PublishError::WouldDrop {
                    dir: dir.clone(),
                    what: "a device file or FIFO behind a gateway",
                    advice: "leave device files and FIFOs out of the tree",
                },
                Refused::OversizedEntry => PublishError::MalformedTar {
                    dir: dir.clone(),
                    reason: "an entry size overflows when padded",
                },
            });
        }
        result
    }

    /// Copies the entries of `tar` under `dir` into the staged tar. The stream is read by
    /// ducc-unpack's entry reader, `.wh.` names left as they are: its checks (`..` names,
    /// absolute names, the limits on names and entries) are the ones every layer goes through,
    /// and names stay bytes.
    fn stage_tree(
        &mut self,
        dir: &RepoPath,
        tar: &mut dyn Read,
        options: IngestOptions,
    ) -> Result<(), PublishError> {
        let mut progress = TreeProgress {
            root_done: false,
            has_marker: false,
            root_mtime: now_secs(),
        };
        let read =
            ducc_unpack::EntryReader::new()
                .verbatim()
                .read(tar, dir.as_str(), |entry, data| {
                    self.stage_entry(dir, entry, data, &mut progress)
                });
        match read {
            Ok(_) => {}
            Err(Stop::Read(source)) => {
                return Err(PublishError::Unpack {
                    dir: dir.clone(),
                    source,
                });
            }
            Err(Stop::Stage(e)) => return Err(e),
        }
        if !progress.root_done {
            let mtime = progress.root_mtime;
            self.add_dir(dir.as_str().as_bytes(), &mut dir_header(0o755, 0, 0, mtime))?;
        }
        if options.catalog && !progress.has_marker {
            let marker = format!("{}/{CATALOG_MARKER}", dir.as_str()).into_bytes();
            self.entries.insert(marker.clone());
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(progress.root_mtime);
            h.set_size(0);
            self.append(&mut h, &marker, None, &mut io::empty())?;
        }
        Ok(())
    }

    /// Copies one entry of a stream under `dir` into the staged tar.
    fn stage_entry(
        &mut self,
        dir: &RepoPath,
        entry: &ducc_unpack::Entry,
        data: &mut dyn Read,
        progress: &mut TreeProgress,
    ) -> Result<(), Stop> {
        use ducc_unpack::EntryKind;
        let stream_err = |reason: String| PublishError::Tar {
            dir: dir.clone(),
            source: io::Error::other(reason),
        };
        let mtime = u64::try_from(entry.mtime.secs).unwrap_or(0);
        if entry.path.is_root() {
            // The tree's root: the image root's mode, owned by root (issue 11). The reader
            // refuses a root that is not a directory.
            if !progress.root_done {
                progress.root_mtime = mtime;
                let mut header = dir_header(entry.mode, 0, 0, mtime);
                self.add_dir(dir.as_str().as_bytes(), &mut header)?;
                progress.root_done = true;
            }
            return Ok(());
        }
        if !progress.root_done {
            let mut header = dir_header(0o755, 0, 0, progress.root_mtime);
            self.add_dir(dir.as_str().as_bytes(), &mut header)?;
            progress.root_done = true;
        }
        let path = below(dir, &entry.path);
        if entry.path.as_bytes() == CATALOG_MARKER.as_bytes() {
            // An image's own marker at its root stands in for ours; twice is once.
            if progress.has_marker {
                return Ok(());
            }
            progress.has_marker = true;
        }
        // A tar that skips a directory still gets it named (never a placeholder).
        let parent = entry.path.parent();
        if !self.dirs.contains(&below(dir, &parent)) {
            self.ensure_tree_dirs(dir, &parent)?;
        }
        let mut out = tar::Header::new_ustar();
        out.set_mode(entry.mode);
        out.set_uid(entry.uid);
        out.set_gid(entry.gid);
        out.set_mtime(mtime);
        out.set_size(0);
        if entry.kind == EntryKind::Directory {
            out.set_entry_type(tar::EntryType::Directory);
            self.add_dir(&path, &mut out)?;
            return Ok(());
        }
        if !self.entries.insert(path.clone()) {
            return Err(
                stream_err(format!("entry {:?} appears twice", entry.display_name())).into(),
            );
        }
        let staged = self.staged.clone();
        let device = |out: &mut tar::Header, major: u32, minor: u32| {
            out.set_device_major(major)
                .and_then(|()| out.set_device_minor(minor))
                .map_err(io_err("write", staged.as_path()))
        };
        match &entry.kind {
            EntryKind::Symlink(target) => {
                out.set_entry_type(tar::EntryType::Symlink);
                self.append(&mut out, &path, Some(target), &mut io::empty())?;
            }
            EntryKind::Hardlink(target) => {
                // Hardlink targets name archive members: under the same prefix.
                let target = self.tar_name(&below(dir, target));
                out.set_entry_type(tar::EntryType::Link);
                self.append(&mut out, &path, Some(&target), &mut io::empty())?;
            }
            EntryKind::CharDevice { major, minor } => {
                out.set_entry_type(tar::EntryType::Char);
                device(&mut out, *major, *minor)?;
                self.append(&mut out, &path, None, &mut io::empty())?;
            }
            EntryKind::BlockDevice { major, minor } => {
                out.set_entry_type(tar::EntryType::Block);
                device(&mut out, *major, *minor)?;
                self.append(&mut out, &path, None, &mut io::empty())?;
            }
            EntryKind::Fifo => {
                out.set_entry_type(tar::EntryType::Fifo);
                // Empty device fields are not numbers to every reader.
                device(&mut out, 0, 0)?;
                self.append(&mut out, &path, None, &mut io::empty())?;
            }
            _ => {
                out.set_entry_type(tar::EntryType::Regular);
                out.set_size(entry.size);
                // A read error of the stream is the stream's, not the staged file's.
                let mut failed = None;
                let mut reader = ReadWatch {
                    inner: data,
                    failed: &mut failed,
                };
                let result = self.append(&mut out, &path, None, &mut reader);
                if let Some(e) = failed {
                    return Err(PublishError::Tar {
                        dir: dir.clone(),
                        source: e,
                    }
                    .into());
                }
                result?;
            }
        }
        Ok(())
    }

    /// Appends the leaves to the staged tar.
    fn stage_leaves(&mut self, leaves: &BTreeMap<RepoPath, Leaf>) -> Result<(), PublishError> {
        let now = now_secs();
        for (path, leaf) in leaves {
            let bytes = path.as_str().as_bytes();
            if self.entries.contains(bytes) || self.dirs.contains(bytes) {
                return Err(PublishError::AlreadyStaged { path: path.clone() });
            }
            if let Some(parent) = path.parent() {
                self.ensure_dirs(&parent)?;
            }
            let mut h = tar::Header::new_ustar();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(now);
            match leaf {
                Leaf::File(file) => {
                    let mut content = File::open(file).map_err(io_err("read", file.as_path()))?;
                    let size = content
                        .metadata()
                        .map_err(io_err("inspect", file.as_path()))?
                        .len();
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(0o644);
                    h.set_size(size);
                    self.append(&mut h, bytes, None, &mut content)?;
                }
                Leaf::Symlink(target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_size(0);
                    let target = target.as_os_str().as_encoded_bytes();
                    self.append(&mut h, bytes, Some(target), &mut io::empty())?;
                }
            }
            self.entries.insert(bytes.to_owned());
        }
        Ok(())
    }
}

/// Passes reads through and keeps the first error, so a failing source is told apart from a
/// failing destination.
struct ReadWatch<'a, R> {
    inner: R,
    failed: &'a mut Option<io::Error>,
}

impl<R: Read> Read for ReadWatch<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if self.failed.is_none() {
                *self.failed = Some(io::Error::new(e.kind(), e.to_string()));
            }
        })
    }
}
