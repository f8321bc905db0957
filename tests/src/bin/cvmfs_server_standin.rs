//! A STAND-IN for `cvmfs_server`, for tests only: it is not CernVM-FS and publishes nothing
//! anywhere. It plays a CernVM-FS 2.12.0 stratum 0 (local upstream, or behind a repository
//! gateway) in a state directory so the `cvmfs` publisher of ducc-rs can be tested without a real
//! installation.
//!
//! It was checked, one test per scenario (`tests/tests/cvmfs_scenarios.rs`), against the
//! behaviour measured on the real server: `reference/cvmfs-real-behaviour.md` scenarios 1-12 and
//! 14 (13 is timing only) and `reference/cvmfs-gateway-behaviour.md` scenarios 1-5 (6 is timing;
//! its "one revision per call" is checked). Where it follows the real server:
//! - Revisions: every successful `publish`, `ingest` and `ingest --delete` adds one, even with no
//!   change, an empty tar or a missing delete path (`repos/REPO/revision`, mkfs leaves 1).
//! - Exit status and messages of the state errors: a second `transaction` 17, `ingest` during a
//!   transaction 1 (`another transaction is already open`, `Impossible to start a transaction`),
//!   `publish` without one 1 (message on stdout), `abort -f` without one 22; a lease whose parent
//!   is missing 2, whose parent is a file 20; a busy gateway lease 16.
//! - `ingest [-c|--catalog] [-k] [-t FILE|-] [-b BASE] [-d PATH]... REPO`: directories ingest
//!   invents (the `-b` directory and parents missing from the tar) are 0755, mtime now, owned by
//!   65534:65534 with `-k` (the kernel's view of the stored 4294967295) and by the repository
//!   owner without; a `./` entry gives a new `-b` directory its metadata; published directories are
//!   never updated by an entry, except that `--catalog` resets an existing `-b` directory (0755,
//!   owner as above, now); a directory header after its child is ignored; duplicate directories:
//!   first wins; a duplicate file, a dangling hardlink or a `-d` overlapping the tar aborts with
//!   rc 1 and no revision; xattrs dropped, `.wh.` names literal, hardlinks split; `.cvmfscatalog`
//!   files (from `--catalog` or the tar) make nested catalogs (`list-catalogs REPO`); an empty
//!   tar creates no `-b` directory.
//! - Transactions through the mount: on a stratum 0 a lease sub-path is only syntax (whole
//!   repository writable, `publish`/`abort` ignore it); behind a gateway changes outside the lease
//!   are dropped at publish without a word. Changes at or below a directory owned by 65534 cannot
//!   be made on the real server (EACCES/EOVERFLOW at write time); the stand-in cannot fail the
//!   write, so its `publish` drops them and names each on stderr (`... Permission denied`).
//! - Gateway mode (`mkfs -u gw,...`): leases of different nodes (`$CVMFS_STANDIN_NODE`) conflict
//!   when one is a string prefix of the other, ASCII case-insensitively, with `_` and `%` as SQL
//!   LIKE wildcards; `ingest -b P` leases `P`, needs P's parent and takes one `--delete` only;
//!   device files and FIFOs are dropped; a lease lives `$CVMFS_STANDIN_MAX_LEASE_TIME` seconds
//!   (default 7200) and an expired one fails `publish` with rc 1 (`invalid lease`), leaving the
//!   repository in transaction until `abort -f`.
//! - Several publisher nodes behind one gateway (scenario 7): each node (`$CVMFS_STANDIN_NODE`,
//!   default `local`) has its own spool (one call at a time, one open transaction: a second is
//!   rc 17; `list` shows only its own), its own scratch area and its own view of the repository,
//!   its mount `mnt/REPO` (node `local`) or `mnt-NODE/REPO`; all nodes share the published tree,
//!   the object store, the lease table and the revision counter. A view lags: it moves to the
//!   newest revision at the node's own `transaction` (before it opens: "not based on the newest
//!   published revision") and at `cvmfs_server mount REPO`, not at other nodes' publishes; that
//!   repair pins it, after which the node's own gateway `ingest` no longer moves it (its view
//!   keeps the revision from before) until its next `transaction` or `mount`. Its own `publish`
//!   moves it to the newest revision. A node that never fell behind (one node alone) always
//!   shows the newest revision, as before. A node's first call mounts the newest revision.
//!
//! Stand-in limits (not like the real server): names `.` and `..` are refused (the real server
//! stores literal `.`/`..` entries); a char 0/0 device is visible through the mount (the real
//! overlay hides it); one node's second gateway lease (a token overwrite) is not modelled; the magic
//! xattrs `user.hash`, `user.compression` and `user.chunks` are real xattrs, so a listing shows
//! them (the real client only answers them by name); a graft naming an unknown object publishes a
//! file of the marker's size that reads as zeros (the real one fails with EIO), listed in
//! `repos/REPO/unreadable` instead. Of several nodes: no older revision is kept, so a lagging
//! view is the node's mount left as it was (never rebuilt at an older revision), an `abort` on
//! a lagging view remounts the newest revision, and the check for writes outside a transaction
//! skips a view that lags; whether the real `publish` un-pins a pinned node is not measured (the
//! stand-in moves the view and keeps the pin); `cvmfs_talk remount sync` (which leaves stale
//! entries on the real client) is not modelled; all nodes' calls are serialised on the shared
//! state (a real gateway merges commits of several nodes at once), but a paused call lets other
//! nodes' calls run.
//!
//! State (`$CVMFS_STANDIN_STATE`): `mnt/REPO` plays `/cvmfs/REPO` (point `CVMFS_MOUNT_DIR` at
//! `mnt`; another node's at `mnt-NODE`), `repos/REPO/published` holds the published tree,
//! `repos/REPO/transactions/NODE` the open leases, `repos/REPO/views/NODE` the revision a node's
//! mount shows (` pinned` after it), `log` one line per call (the arguments joined by spaces). A file `fail/COMMAND`
//! makes the next `COMMAND` fail with the file's content on stderr (and is removed). A file
//! `pause/POINT` (`ingest`: lease taken, tar unread; `ingest-commit`: tar read, nothing
//! published; `transaction`: transaction open; `publish`: nothing published) makes the call write `paused` and wait while the
//! file exists, so a test can kill it there; other nodes' calls run meanwhile. The file's
//! content, if any, filters: text the call's arguments contain, after an optional first word
//! `node=NODE` naming the calling node. Every call first checks that the mount was not
//! written outside an open transaction.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use rustix::fs::{AtFlags, CWD, FileType, FlockOperation, Mode, Timespec, Timestamps};

/// A failure: the message goes to stderr (or stdout, as `publish` does), with an exit status.
struct Failure(String, u8, bool);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string(), 1, false)
    }
}

fn fail<T>(msg: impl Into<String>) -> Result<T, Failure> {
    Err(Failure(msg.into(), 1, false))
}

fn fail_with<T>(code: u8, msg: impl Into<String>) -> Result<T, Failure> {
    Err(Failure(msg.into(), code, false))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(state) = std::env::var_os("CVMFS_STANDIN_STATE").map(PathBuf::from) else {
        eprintln!("cvmfs_server stand-in: CVMFS_STANDIN_STATE is not set");
        return ExitCode::from(2);
    };
    let _ = COPYING.set(state.join("copying"));
    let standin = Standin {
        node: std::env::var("CVMFS_STANDIN_NODE").unwrap_or_else(|_| "local".into()),
        state,
        args: args.clone(),
        shared: std::cell::OnceCell::new(),
    };
    match standin.run(&args) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(Failure(msg, code, on_stdout)) => {
            if on_stdout {
                println!("{msg}");
            } else {
                eprintln!("{msg}");
            }
            ExitCode::from(code)
        }
    }
}

struct Standin {
    state: PathBuf,
    node: String,
    /// The call's arguments (for pause filters).
    args: Vec<String>,
    /// The lock on the state all nodes share, held for the whole call but while paused.
    shared: std::cell::OnceCell<File>,
}

/// What a node's mount shows of a repository (gateway scenario 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct View {
    /// The revision the mount shows.
    rev: u64,
    /// Pinned to that revision by a remount that brought it forward: the node's own gateway
    /// ingests no longer move it.
    pinned: bool,
}

/// A repository's settings, from `mkfs`.
struct RepoConfig {
    gateway: bool,
    owner: (u32, u32),
}

impl Standin {
    fn run(&self, args: &[String]) -> Result<String, Failure> {
        fs::create_dir_all(&self.state)?;
        // One call of a node at a time, as the spool lock serialises a real publisher node.
        let node_lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.state.join(self.per_node("lock")))?;
        rustix::fs::flock(&node_lock, FlockOperation::LockExclusive)?;
        // The shared state (published tree, leases, revisions) one call at a time; a paused
        // call lets other nodes' calls run (see `pause`).
        let shared = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.state.join("shared.lock"))?;
        rustix::fs::flock(&shared, FlockOperation::LockExclusive)?;
        let _ = self.shared.set(shared);
        let mut log = File::options()
            .create(true)
            .append(true)
            .open(self.state.join("log"))?;
        writeln!(log, "{}", args.join(" "))?;
        let Some((command, rest)) = args.split_first() else {
            return fail("usage: cvmfs_server COMMAND [options] REPO");
        };
        if command != "mkfs" {
            // A node's first call mounts the newest revision.
            for repo in self.repos() {
                self.view(&repo)?;
            }
        }
        if !matches!(command.as_str(), "mkfs" | "list" | "list-catalogs") {
            self.check_no_stray_writes()?;
        }
        let injected = self.state.join("fail").join(command);
        if let Ok(msg) = fs::read_to_string(&injected) {
            fs::remove_file(&injected)?;
            return fail(msg);
        }
        match command.as_str() {
            "mkfs" => self.mkfs(rest),
            "list" => self.list(),
            "transaction" => self.transaction(rest),
            "publish" => self.publish(rest),
            "abort" => self.abort(rest),
            "ingest" => self.ingest(rest),
            "list-catalogs" => self.list_catalogs(rest),
            "mount" => self.mount_command(rest),
            other => fail(format!("cvmfs_server stand-in: unknown command {other}")),
        }
    }

    fn repo_dir(&self, repo: &str) -> PathBuf {
        self.state.join("repos").join(repo)
    }

    fn published(&self, repo: &str) -> PathBuf {
        self.repo_dir(repo).join("published")
    }

    /// The object store: `<hash>` files holding zlib-compressed content.
    fn objects(&self, repo: &str) -> PathBuf {
        self.repo_dir(repo).join("objects")
    }

    /// Replaces every graft marker (`.cvmfsgraft-NAME`) at or below `scope` in the mount by
    /// the object it names, written into `NAME` (flat-without-rehash scenarios 5-12): every
    /// marker is checked first, and one without `size=` fails the publish as the real server
    /// panics, with the transaction left open. An object the store does not hold gives a file
    /// that cannot be read: the stand-in cannot fail reads, so it lists such files in
    /// `repos/REPO/unreadable`.
    fn resolve_grafts(&self, repo: &str, scope: &str) -> Result<(), Failure> {
        let root = self.mount(repo).join(scope);
        let mut markers = Vec::new();
        find_grafts(&root, &mut markers)?;
        let mut grafts = Vec::new();
        for marker in markers {
            let text = fs::read_to_string(&marker)?;
            let mut size = None;
            let mut checksum = None;
            let mut compression = "zlib".to_owned();
            for line in text.lines() {
                match line.split_once('=') {
                    Some(("size", v)) => size = v.trim().parse::<u64>().ok(),
                    Some(("checksum", v)) => checksum = Some(v.trim().to_owned()),
                    Some(("compression", v)) => compression = v.trim().to_owned(),
                    _ => {}
                }
            }
            // Names are bytes: a graft of a file whose name is not UTF-8 is a graft too.
            let name = marker.file_name().map(OsStr::as_bytes).unwrap_or_default();
            let name = name.strip_prefix(b".cvmfsgraft-").unwrap_or(name);
            let target = marker.with_file_name(OsStr::from_bytes(name));
            let (Some(size), Some(checksum)) = (size, checksum) else {
                return fail(format!(
                    "PANIC: sync_mediator.cc : 965 Encountered a grafted file ({}) with invalid grafting information; check the graft file format",
                    target.display()
                ));
            };
            grafts.push((marker, target, size, checksum, compression));
        }
        for (marker, target, size, checksum, compression) in grafts {
            // Markers are never entries: removing one leaves its directory's time as it was.
            let dir_mtime = marker
                .parent()
                .and_then(|d| fs::symlink_metadata(d).ok())
                .map(|m| m.mtime());
            fs::remove_file(&marker)?;
            if let (Some(dir), Some(mtime)) = (marker.parent(), dir_mtime) {
                set_mtime(dir, mtime)?;
            }
            if fs::symlink_metadata(&target).is_err() {
                continue; // a marker without its file grafts nothing
            }
            let meta = fs::symlink_metadata(&target)?;
            let object = self.objects(repo).join(&checksum);
            let mut out = File::options().write(true).truncate(true).open(&target)?;
            match File::open(&object) {
                Ok(stored) if compression == "zlib" => {
                    io::copy(&mut flate2::read::ZlibDecoder::new(stored), &mut out)?;
                }
                Ok(mut stored) => {
                    io::copy(&mut stored, &mut out)?;
                }
                Err(_) => {
                    out.set_len(size)?;
                    let mut list = File::options()
                        .create(true)
                        .append(true)
                        .open(self.repo_dir(repo).join("unreadable"))?;
                    let rel = target.strip_prefix(self.mount(repo)).unwrap_or(&target);
                    writeln!(list, "{}", rel.display())?;
                }
            }
            drop(out);
            set_magic_xattrs(&target, &checksum, &compression);
            set_mtime(&target, meta.mtime())?;
        }
        Ok(())
    }

    /// Stores every regular file under `dir` that has no object yet (no `user.hash`).
    fn store_new_files(&self, repo: &str, dir: &Path) -> Result<(), Failure> {
        let objects = self.objects(repo);
        fs::create_dir_all(&objects)?;
        let Ok(meta) = fs::symlink_metadata(dir) else {
            return Ok(());
        };
        if meta.is_file() {
            if rustix::fs::lgetxattr(dir, "user.hash", &mut [0u8; 128]).is_err() {
                let mtime = meta.mtime();
                store_object(&objects, dir)?;
                set_mtime(dir, mtime)?;
            }
            return Ok(());
        }
        if meta.is_dir() {
            for entry in fs::read_dir(dir)?.flatten() {
                self.store_new_files(repo, &entry.path())?;
            }
        }
        Ok(())
    }

    /// `NAME` for the node `local`, `NAME-NODE` for the others.
    fn per_node(&self, name: &str) -> String {
        if self.node == "local" {
            name.to_owned()
        } else {
            format!("{name}-{}", self.node)
        }
    }

    /// This node's `/cvmfs/REPO`: `mnt/REPO` for the node `local`, `mnt-NODE/REPO` for others.
    fn mount(&self, repo: &str) -> PathBuf {
        self.state.join(self.per_node("mnt")).join(repo)
    }

    fn view_path(&self, repo: &str) -> PathBuf {
        self.repo_dir(repo).join("views").join(&self.node)
    }

    /// What this node's mount shows. A node's first call mounts the newest revision.
    fn view(&self, repo: &str) -> Result<View, Failure> {
        if let Ok(text) = fs::read_to_string(self.view_path(repo)) {
            let mut words = text.split_whitespace();
            let rev = words.next().and_then(|r| r.parse().ok()).unwrap_or(1);
            let pinned = words.next() == Some("pinned");
            return Ok(View { rev, pinned });
        }
        let mount = self.mount(repo);
        if fs::symlink_metadata(&mount).is_err() {
            if let Some(parent) = mount.parent() {
                fs::create_dir_all(parent)?;
            }
            copy_entry(&self.published(repo), &mount)?;
        }
        let view = View {
            rev: self.revision(repo),
            pinned: false,
        };
        self.set_view(repo, view)?;
        Ok(view)
    }

    fn set_view(&self, repo: &str, view: View) -> Result<(), Failure> {
        let path = self.view_path(repo);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let pinned = if view.pinned { " pinned" } else { "" };
        fs::write(path, format!("{}{pinned}\n", view.rev))?;
        Ok(())
    }

    /// Makes this node's mount show the newest revision (a remount), whole.
    fn remount_newest(&self, repo: &str, pinned: bool) -> Result<(), Failure> {
        let mount = self.mount(repo);
        sync(&self.published(repo), &mount, "")?;
        self.set_view(
            repo,
            View {
                rev: self.revision(repo),
                pinned,
            },
        )
    }

    /// `transaction` and `mount` behind a gateway: a node whose view is behind the newest
    /// revision is remounted to it, and that repair pins it (gateway scenario 7).
    fn repair_view(&self, repo: &str) -> Result<(), Failure> {
        let view = self.view(repo)?;
        if view.rev < self.revision(repo) {
            self.remount_newest(repo, true)?;
        }
        Ok(())
    }

    /// `mount REPO`: brings this node's view to the newest revision (gateway scenario 7).
    fn mount_command(&self, args: &[String]) -> Result<String, Failure> {
        let (_, repo) = split_repo(args)?;
        let cfg = self.config(&repo)?;
        if cfg.gateway && !self.transactions(&repo)?.contains_key(&self.node) {
            self.repair_view(&repo)?;
        }
        Ok(String::new())
    }

    fn config(&self, repo: &str) -> Result<RepoConfig, Failure> {
        let Ok(text) = fs::read_to_string(self.repo_dir(repo).join("config")) else {
            return fail(format!("The repository {repo} does not exist"));
        };
        let mut cfg = RepoConfig {
            gateway: false,
            owner: (0, 0),
        };
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("gateway=") {
                cfg.gateway = v == "true";
            } else if let Some((u, g)) = line.strip_prefix("owner=").and_then(|v| v.split_once(':'))
            {
                cfg.owner = (u.parse()?, g.parse()?);
            }
        }
        Ok(cfg)
    }

    fn repos(&self) -> Vec<String> {
        let mut out: Vec<String> = fs::read_dir(self.state.join("repos"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Open transactions of a repository: node → (lease path, expiry in seconds).
    fn transactions(&self, repo: &str) -> Result<BTreeMap<String, (String, i64)>, Failure> {
        let mut out = BTreeMap::new();
        let dir = self.repo_dir(repo).join("transactions");
        if let Ok(entries) = fs::read_dir(&dir) {
            for e in entries.flatten() {
                let text = fs::read_to_string(e.path())?;
                let mut lines = text.lines();
                let lease = lines.next().unwrap_or("").to_owned();
                let expiry = lines
                    .next()
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(i64::MAX);
                out.insert(
                    e.file_name().to_string_lossy().into_owned(),
                    (lease, expiry),
                );
            }
        }
        Ok(out)
    }

    fn mkfs(&self, args: &[String]) -> Result<String, Failure> {
        let (opts, repo) = split_repo(args)?;
        let mut gateway = false;
        let mut owner = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        let mut it = opts.iter();
        while let Some(flag) = it.next() {
            let value = it
                .next()
                .ok_or_else(|| Failure(format!("{flag} needs a value"), 1, false))?;
            match flag.as_str() {
                "-u" => gateway = value.starts_with("gw,"),
                "-o" => {
                    let (u, g) = value
                        .split_once(':')
                        .ok_or_else(|| Failure("-o UID:GID".into(), 1, false))?;
                    owner = (u.parse()?, g.parse()?);
                }
                other => return fail(format!("mkfs: unknown option {other}")),
            }
        }
        if self.repo_dir(&repo).exists() {
            return fail(format!("The repository {repo} already exists"));
        }
        fs::create_dir_all(self.published(&repo))?;
        fs::create_dir_all(self.mount(&repo))?;
        fs::create_dir_all(self.repo_dir(&repo).join("transactions"))?;
        fs::write(self.repo_dir(&repo).join("revision"), "1\n")?;
        fs::write(
            self.repo_dir(&repo).join("config"),
            format!("gateway={gateway}\nowner={}:{}\n", owner.0, owner.1),
        )?;
        Ok(String::new())
    }

    fn list(&self) -> Result<String, Failure> {
        let mut out = String::new();
        for repo in self.repos() {
            let cfg = self.config(&repo)?;
            let kind = if cfg.gateway { "gw" } else { "local" };
            // A node's spool knows its own transaction only.
            // An ingest killed in its transaction leaves it open and the repository unhealthy
            // (flat-without-rehash scenarios 20 and 23).
            let busy = if !self.transactions(&repo)?.contains_key(&self.node) {
                ""
            } else if self.killed_ingest(&repo) {
                " - in transaction - unhealthy"
            } else {
                " - in transaction"
            };
            out.push_str(&format!("{repo} (stratum0 / {kind}{busy})\n"));
        }
        Ok(out)
    }

    /// Waits at `pause/POINT` while that file exists (see the module docs).
    fn pause(&self, point: &str) -> Result<(), Failure> {
        let flag = self.state.join("pause").join(point);
        // The file's content, when not empty, must appear in the call's arguments; a first
        // word `node=NODE` must name the calling node.
        let Ok(filter) = fs::read_to_string(&flag) else {
            return Ok(());
        };
        let filter = filter.trim();
        let text = match filter.strip_prefix("node=") {
            Some(rest) => {
                let (node, text) = rest.split_once(' ').unwrap_or((rest, ""));
                if node != self.node {
                    return Ok(());
                }
                text.trim()
            }
            None => filter,
        };
        if !self.args.join(" ").contains(text) {
            return Ok(());
        }
        // Written whole, then renamed: a reader never sees it half-written.
        let tmp = self.state.join("paused.tmp");
        fs::write(&tmp, format!("{point} {}", std::process::id()))?;
        fs::rename(&tmp, self.state.join("paused"))?;
        // Other nodes' calls run meanwhile (this node's wait for it, as its spool lock is held).
        if let Some(shared) = self.shared.get() {
            rustix::fs::flock(shared, FlockOperation::Unlock)?;
        }
        while flag.exists() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if let Some(shared) = self.shared.get() {
            rustix::fs::flock(shared, FlockOperation::LockExclusive)?;
        }
        Ok(())
    }

    fn revision(&self, repo: &str) -> u64 {
        fs::read_to_string(self.repo_dir(repo).join("revision"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(1)
    }

    /// Every successful publish, ingest and delete is a new revision.
    fn bump_revision(&self, repo: &str) -> Result<(), Failure> {
        let next = self.revision(repo) + 1;
        fs::write(self.repo_dir(repo).join("revision"), format!("{next}\n"))?;
        Ok(())
    }

    /// `list-catalogs REPO`: `/` and every directory holding a `.cvmfscatalog`.
    fn list_catalogs(&self, args: &[String]) -> Result<String, Failure> {
        let (_, repo) = split_repo(args)?;
        self.config(&repo)?;
        fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) {
            let Ok(entries) = fs::read_dir(dir) else {
                return;
            };
            let mut names: Vec<_> = entries.flatten().collect();
            names.sort_by_key(|e| e.file_name());
            for e in names {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let child = format!("{rel}/{}", e.file_name().to_string_lossy());
                    if e.path().join(".cvmfscatalog").is_file() {
                        out.push(child.clone());
                    }
                    walk(&e.path(), &child, out);
                }
            }
        }
        let mut out = vec!["/".to_owned()];
        walk(&self.published(&repo), "", &mut out);
        Ok(out.into_iter().map(|l| l + "\n").collect())
    }

    /// Checks a lease path's parent in the published tree: missing is rc 2, a file rc 20.
    fn check_lease_parent(&self, repo: &str, lease: &str) -> Result<(), Failure> {
        if lease.is_empty() {
            return Ok(());
        }
        let parent = lease.rsplit_once('/').map_or("", |(p, _)| p);
        if parent.is_empty() {
            return Ok(());
        }
        match fs::symlink_metadata(self.published(repo).join(parent)) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => fail_with(
                20,
                format!(
                    "CernVM-FS transaction error: cannot open transaction on /{parent}, which is not a directory"
                ),
            ),
            Err(_) => fail_with(
                2,
                format!(
                    "CernVM-FS transaction error: cannot open transaction on non-existing path /{parent}"
                ),
            ),
        }
    }

    /// Takes a lease for this node, as `transaction` and `ingest` do.
    fn acquire(&self, repo: &str, lease: &str) -> Result<(), Failure> {
        let cfg = self.config(repo)?;
        let open = self.transactions(repo)?;
        if open.contains_key(&self.node) {
            return fail_with(
                17,
                "CernVM-FS transaction error: another transaction is already open",
            );
        }
        if !cfg.gateway && !open.is_empty() {
            // A stratum 0 has one transaction at a time (one spool area).
            return fail_with(
                17,
                "CernVM-FS transaction error: another transaction is already open",
            );
        }
        self.check_lease_parent(repo, lease)?;
        let now = now_secs();
        for (other, expiry) in open.values() {
            if *expiry <= now {
                continue; // an expired lease may be taken by anyone
            }
            if leases_conflict(lease, other) {
                let left = expiry - now;
                return fail_with(
                    16,
                    format!(
                        "Path busy. Time remaining = {}h{}m{}s\nCernVM-FS transaction error: lease path busy",
                        left / 3600,
                        left % 3600 / 60,
                        left % 60
                    ),
                );
            }
        }
        let max: i64 = std::env::var("CVMFS_STANDIN_MAX_LEASE_TIME")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(7200);
        fs::write(
            self.repo_dir(repo).join("transactions").join(&self.node),
            format!("{lease}\n{}\n", now + max),
        )?;
        Ok(())
    }

    fn own_lease(&self, repo: &str) -> Result<(String, i64), Failure> {
        self.config(repo)?;
        match self.transactions(repo)?.remove(&self.node) {
            Some(lease) => Ok(lease),
            None => Err(Failure(
                format!("Repository {repo} is not in a transaction"),
                1,
                true,
            )),
        }
    }

    fn release(&self, repo: &str) -> Result<(), Failure> {
        fs::remove_file(self.repo_dir(repo).join("transactions").join(&self.node))?;
        match fs::remove_file(self.repo_dir(repo).join("ingesting").join(&self.node)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Whether this node's open transaction is an ingest's whose process is gone.
    fn killed_ingest(&self, repo: &str) -> bool {
        let record = self.repo_dir(repo).join("ingesting").join(&self.node);
        fs::read_to_string(record).is_ok_and(|pid| {
            let stat = fs::read_to_string(format!("/proc/{}/stat", pid.trim()));
            // Gone, or a zombie its parent has not reaped yet.
            stat.map_or(true, |stat| {
                stat.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
            })
        })
    }

    /// The part of the tree a lease publishes: without a gateway the whole repository.
    fn scope(&self, repo: &str, lease: &str) -> Result<String, Failure> {
        Ok(if self.config(repo)?.gateway {
            lease.to_owned()
        } else {
            String::new()
        })
    }

    fn transaction(&self, args: &[String]) -> Result<String, Failure> {
        let (opts, target) = split_repo(args)?;
        if let Some(flag) = opts
            .iter()
            .find(|o| *o != "-t" && o.parse::<u64>().is_err())
        {
            return fail(format!(
                "transaction: option {flag} is not supported by the stand-in"
            ));
        }
        let (repo, lease) = target.split_once('/').unwrap_or((target.as_str(), ""));
        self.acquire(repo, &clean(lease))?;
        if self.config(repo)?.gateway {
            // "not based on the newest published revision": remounted first (scenario 7).
            self.repair_view(repo)?;
        }
        self.pause("transaction")?;
        Ok(String::new())
    }

    fn publish(&self, args: &[String]) -> Result<String, Failure> {
        let (_, target) = split_repo(args)?;
        // A sub-path is accepted and ignored: the transaction's own lease counts.
        let repo = target.split_once('/').map_or(target.as_str(), |(r, _)| r);
        let (lease, expiry) = self.own_lease(repo)?;
        let cfg = self.config(repo)?;
        if cfg.gateway && expiry <= now_secs() {
            return fail(
                "SessionContext::DoUpload - error reply: {\"reason\":\"invalid lease\",\"status\":\"error\"}\n\
                 PANIC: session_context.cc : 405\n\
                 SessionContext: could not submit payload. Aborting.\n\
                 Synchronization failed",
            );
        }
        self.pause("publish")?;
        let view = self.view(repo)?;
        let current = view.rev == self.revision(repo);
        let scope = self.scope(repo, &lease)?;
        // Graft markers first (a bad one fails the publish before anything changes), then every
        // new regular file is stored as an object, as the server hashes what it publishes.
        self.resolve_grafts(repo, &scope)?;
        self.store_new_files(repo, &self.mount(repo).join(&scope))?;
        let mut warnings = String::new();
        // What the real overlay would have refused at write time never reaches the upper dir.
        for path in diff_trees(&self.published(repo), &self.mount(repo)) {
            if within(&path, &scope) && below_immutable(&self.published(repo), &path) {
                warnings.push_str(&format!(
                    "cvmfs_server stand-in: {repo}/{path}: Permission denied (below a directory owned by 4294967295; dropped)\n"
                ));
                sync(&self.published(repo), &self.mount(repo), &path)?;
            }
        }
        sync(&self.mount(repo), &self.published(repo), &scope)?;
        self.release(repo)?;
        self.bump_revision(repo)?;
        // A gateway ignores changes outside the lease: the mount shows the published state,
        // the newest revision (what others published meanwhile too).
        if cfg.gateway {
            if current {
                self.revert_outside_leases(repo)?;
            } else {
                self.remount_newest(repo, view.pinned)?;
            }
        }
        self.set_view(
            repo,
            View {
                rev: self.revision(repo),
                pinned: view.pinned,
            },
        )?;
        eprint!("{warnings}");
        Ok(String::new())
    }

    fn abort(&self, args: &[String]) -> Result<String, Failure> {
        let (opts, target) = split_repo(args)?;
        if let Some(flag) = opts.iter().find(|o| *o != "-f") {
            return fail(format!("abort: unknown option {flag}"));
        }
        let repo = target.split_once('/').map_or(target.as_str(), |(r, _)| r);
        let (lease, _) = self
            .own_lease(repo)
            .map_err(|Failure(m, _, _)| Failure(m, 22, false))?;
        let scope = self.scope(repo, &lease)?;
        let view = self.view(repo)?;
        if view.rev == self.revision(repo) {
            sync(&self.published(repo), &self.mount(repo), &scope)?;
        } else {
            // The stand-in keeps no older revisions: the mount shows the newest one.
            self.remount_newest(repo, view.pinned)?;
        }
        self.release(repo)?;
        Ok(String::new())
    }

    /// Fails when the mount differs from the published tree anywhere no open lease covers.
    fn check_no_stray_writes(&self) -> Result<(), Failure> {
        for repo in self.repos() {
            // With a transaction open the whole mount is writable (behind a gateway, what lies
            // outside the lease is dropped at publish). A view behind the newest revision
            // cannot be checked (no older revisions are kept).
            if self.transactions(&repo)?.contains_key(&self.node)
                || self.view(&repo)?.rev != self.revision(&repo)
            {
                continue;
            }
            let stray = diff_trees(&self.published(&repo), &self.mount(&repo));
            if let Some(first) = stray.first() {
                return fail(format!(
                    "cvmfs_server stand-in: {}/{first} was written outside a transaction ({} paths)",
                    repo,
                    stray.len()
                ));
            }
        }
        Ok(())
    }

    /// The scope of this node's open transaction (other nodes write their own mounts).
    fn open_scopes(&self, repo: &str) -> Result<Vec<String>, Failure> {
        let mut out = Vec::new();
        if let Some((lease, _)) = self.transactions(repo)?.get(&self.node) {
            out.push(self.scope(repo, lease)?);
        }
        Ok(out)
    }

    fn revert_outside_leases(&self, repo: &str) -> Result<(), Failure> {
        let leases = self.open_scopes(repo)?;
        for path in diff_trees(&self.published(repo), &self.mount(repo)) {
            if !leases.iter().any(|l| within(&path, l)) {
                sync(&self.published(repo), &self.mount(repo), &path)?;
            }
        }
        Ok(())
    }

    fn ingest(&self, args: &[String]) -> Result<String, Failure> {
        let (opts, target) = split_repo(args)?;
        let repo = target
            .split_once('/')
            .map_or(target.as_str(), |(r, _)| r)
            .to_owned();
        let mut tar_file = None;
        let mut base = None;
        let mut deletes = Vec::new();
        let mut catalog = false;
        let mut keep_owners = false;
        let mut it = opts.iter();
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| Failure(format!("ingest: {flag} needs a value"), 1, false))
            };
            match flag.as_str() {
                "-t" | "--tar_file" => tar_file = Some(value()?),
                "-b" | "--base_dir" => base = Some(clean(&value()?)),
                "-d" | "--delete" => deletes.push(clean(&value()?)),
                "-c" | "--catalog" => catalog = true,
                "-k" | "--keep-ownership" => keep_owners = true,
                other => return fail(format!("ingest: unknown option {other}")),
            }
        }
        let cfg = self.config(&repo)?;
        if tar_file.is_some() && base.is_none() {
            return fail("ingest: -t needs -b");
        }
        if tar_file.is_none() && deletes.is_empty() {
            return fail("ingest: nothing to do (-t or -d)");
        }
        if cfg.gateway && deletes.len() > 1 {
            return fail(
                "Could not delete multiple paths using a gateway in a single transaction.",
            );
        }
        if cfg.gateway && !deletes.is_empty() && tar_file.is_some() {
            return fail("ingest: with a gateway --delete cannot go with --tar_file");
        }
        // ingest opens a transaction of its own: REPO, or REPO/BASE resp. REPO/DELETE with a gateway.
        let lease = if cfg.gateway {
            base.clone().unwrap_or_else(|| deletes[0].clone())
        } else {
            String::new()
        };
        if let Err(Failure(msg, _, _)) = self.acquire(&repo, &lease) {
            let msg = msg.replace("CernVM-FS transaction error: ", "");
            return fail(format!(
                "CernVM-FS transaction error: {msg}\nImpossible to start a transaction"
            ));
        }
        // Who holds the transaction: an ingest killed in it leaves the repository unhealthy.
        let ingesting = self.repo_dir(&repo).join("ingesting");
        fs::create_dir_all(&ingesting)?;
        fs::write(ingesting.join(&self.node), std::process::id().to_string())?;
        let result = self.pause("ingest").and_then(|()| {
            self.ingest_in_transaction(&repo, &cfg, tar_file, base, &deletes, catalog, keep_owners)
        });
        // The real server aborts a failed ingest's transaction itself.
        self.release(&repo)?;
        let (warnings, follow) = result?;
        self.bump_revision(&repo)?;
        match follow {
            Follow::Stay => {}
            Follow::Step => self.set_view(
                &repo,
                View {
                    rev: self.revision(&repo),
                    pinned: false,
                },
            )?,
            Follow::Remount => self.remount_newest(&repo, false)?,
        }
        eprint!("{warnings}");
        Ok(String::new())
    }

    /// Returns the warnings to print and how this node's view follows the ingest.
    #[allow(clippy::too_many_arguments)]
    fn ingest_in_transaction(
        &self,
        repo: &str,
        cfg: &RepoConfig,
        tar_file: Option<String>,
        base: Option<String>,
        deletes: &[String],
        catalog: bool,
        keep_owners: bool,
    ) -> Result<(String, Follow), Failure> {
        let published = self.published(repo);
        let scratch = self.state.join(self.per_node("scratch"));
        if scratch.exists() {
            fs::remove_dir_all(&scratch)?;
        }
        fs::create_dir_all(&scratch)?;
        let owner = if keep_owners { None } else { Some(cfg.owner) };
        let objects = self.objects(repo);
        fs::create_dir_all(&objects)?;
        let mut applied = Vec::new();
        let mut warnings = String::new();
        let mut reset = None;
        if let (Some(tar_file), Some(base)) = (tar_file, base) {
            let input: Box<dyn Read> = if tar_file == "-" {
                Box::new(io::stdin().lock())
            } else {
                Box::new(File::open(&tar_file)?)
            };
            let mut ingest = Ingest {
                published: &published,
                scratch: &scratch,
                owner,
                gateway: cfg.gateway,
                known_dirs: BTreeSet::new(),
                written: BTreeSet::new(),
                new_dirs: Vec::new(),
                hardlinks: Vec::new(),
                shadowed: Vec::new(),
                reset_base: None,
                objects: &objects,
            };
            ingest.run(input, &base, catalog)?;
            reset = ingest.reset_base.map(|r| (base.clone(), r));
            // A delete overlapping the tar's paths finds no catalog for them (scenario 8).
            for path in deletes {
                let touched = ingest.known_dirs.iter().chain(ingest.written.iter());
                if let Some(hit) = touched
                    .into_iter()
                    .find(|t| t.starts_with(path) || Path::new(path).starts_with(t))
                {
                    return fail(format!(
                        "PANIC: catalog_mgr_rw.cc : 484 catalog for directory '/{}' cannot be found\nAborted\nSynchronization failed",
                        hit.display()
                    ));
                }
            }
            if scratch.join(&base).exists() {
                applied.push(base);
            }
        }
        self.pause("ingest-commit")?;
        // Behind a gateway a pinned view stays where it is (scenario 7); otherwise this node's
        // mount shows the new revision: path by path when it showed the one before.
        let view = self.view(repo)?;
        let follow = if cfg.gateway && view.pinned {
            Follow::Stay
        } else if view.rev == self.revision(repo) {
            Follow::Step
        } else {
            Follow::Remount
        };
        let mount = self.mount(repo);
        // Deletions run first, then the tar's tree is merged in.
        for path in deletes {
            if fs::symlink_metadata(published.join(path)).is_err() {
                warnings.push_str(&format!(
                    "[WARNING] '{path}' cannot be deleted. Unrecognized file type.\n"
                ));
            }
            remove_any(&published.join(path))?;
            if follow == Follow::Step {
                remove_any(&mount.join(path))?;
            }
        }
        for path in applied {
            merge(&scratch, &published, &path)?;
            if let Some((base, (owner, mtime))) = reset.as_ref().filter(|(b, _)| *b == path) {
                let dir = published.join(base);
                lchown(&dir, *owner)?;
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
                set_mtime(&dir, *mtime)?;
            }
            if follow == Follow::Step {
                sync(&published, &mount, &path)?;
            }
        }
        fs::remove_dir_all(&scratch)?;
        Ok((warnings, follow))
    }
}

/// How a node's view follows its own ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Follow {
    /// Pinned: the mount keeps showing the revision before.
    Stay,
    /// The mount showed the revision before: the ingest's paths are updated in it.
    Step,
    /// The mount was behind: remounted to the newest revision.
    Remount,
}

/// Whether two lease paths conflict at a gateway: SQL `a LIKE b||'%' OR b LIKE a||'%'`, so a
/// string prefix either way, ASCII case-insensitive, `_` any one character, `%` any run.
fn leases_conflict(a: &str, b: &str) -> bool {
    let a = format!("{}/{a}", "REPO");
    let b = format!("{}/{b}", "REPO");
    like(a.as_bytes(), format!("{b}%").as_bytes()) || like(b.as_bytes(), format!("{a}%").as_bytes())
}

/// SQL LIKE, ASCII case-insensitive.
fn like(text: &[u8], pattern: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'%', rest)) => (0..=text.len()).any(|i| like(&text[i..], rest)),
        Some((b'_', rest)) => !text.is_empty() && like(&text[1..], rest),
        Some((c, rest)) => text
            .split_first()
            .is_some_and(|(t, tail)| t.eq_ignore_ascii_case(c) && like(tail, rest)),
    }
}

/// Whether `path` or one of its ancestors is a published directory owned by 65534 (the stored
/// 4294967295): the real overlay refuses every change there.
fn below_immutable(published: &Path, path: &str) -> bool {
    let mut prefix = PathBuf::from(published);
    for part in path.split('/').filter(|p| !p.is_empty()) {
        prefix.push(part);
        match fs::symlink_metadata(&prefix) {
            Ok(m) if m.is_dir() && m.uid() == NOBODY => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

/// How the kernel shows the uid/gid 4294967295 that ingest stores for invented directories.
const NOBODY: u32 = 65534;

/// An ingest's input, noting when it ended: libarchive tells a truncated tar from a damaged one.
struct Input<R> {
    inner: R,
    ended: std::rc::Rc<std::cell::Cell<bool>>,
}

impl<R: Read> Read for Input<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.ended.set(true);
        }
        Ok(n)
    }
}

/// A tar that could not be read on: when its input ended inside a header or a file's data the
/// ingest fails, publishing nothing (flat-without-rehash scenario 21; libarchive's "Truncated tar
/// archive"); a damaged header before its end leaves the ingest waiting forever with its
/// transaction open, until its process group is killed (scenario 23).
fn unreadable_tar(e: io::Error, ended: bool) -> Failure {
    if ended {
        return Failure(
            format!("Truncated tar archive detected while reading: {e}\nSynchronization failed"),
            1,
            false,
        );
    }
    eprintln!("cvmfs_server stand-in: damaged tar header ({e}): waiting as the real ingest does");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// The tar engine: builds the new entries in `scratch` (mirroring repository paths), deciding
/// per entry against the published tree as `SyncUnionTarball` does.
struct Ingest<'a> {
    published: &'a Path,
    scratch: &'a Path,
    owner: Option<(u32, u32)>,
    gateway: bool,
    /// Directories that exist (published, placeholders, or seen in this tar).
    known_dirs: BTreeSet<PathBuf>,
    /// Non-directory paths added by this tar.
    written: BTreeSet<PathBuf>,
    /// Directories this tar creates with their header's mode and mtime (applied at the end).
    new_dirs: Vec<(PathBuf, u32, i64)>,
    /// (link, target) pairs, resolved after the stream.
    hardlinks: Vec<(PathBuf, PathBuf)>,
    /// Directory entries over published files: they and their children are not reachable.
    shadowed: Vec<PathBuf>,
    /// With `--catalog` on an existing `-b` directory: its new owner and mtime (mode 0755).
    reset_base: Option<((u32, u32), i64)>,
    /// The repository's object store.
    objects: &'a Path,
}

impl Ingest<'_> {
    fn run(&mut self, input: Box<dyn Read>, base: &str, catalog: bool) -> Result<(), Failure> {
        let mut input = input;
        let mut first = Vec::new();
        (&mut input).take(512).read_to_end(&mut first)?;
        if !first.is_empty() && !looks_like_tar(&first) {
            return fail("Impossible to open the archive: Unrecognized archive format");
        }
        let ended = std::rc::Rc::new(std::cell::Cell::new(false));
        let stream = Input {
            inner: io::Cursor::new(first).chain(input),
            ended: ended.clone(),
        };
        let unreadable = |e: io::Error| unreadable_tar(e, ended.get());
        let now = now_secs();
        // Nothing is created before the first entry: an empty tar makes no -b directory.
        let mut archive = tar::Archive::new(stream);
        for entry in archive.entries().map_err(unreadable)? {
            let mut entry = entry.map_err(unreadable)?;
            let header = entry.header().clone();
            // Names are bytes, as libarchive hands them to the server (PAX names under
            // `hdrcharset=BINARY`, header fields always).
            let raw = entry.path_bytes().into_owned();
            let name = raw
                .strip_prefix(b"./")
                .or_else(|| raw.strip_prefix(b"/"))
                .unwrap_or(&raw);
            let name = name.strip_suffix(b"/").unwrap_or(name);
            if name.split(|b| *b == b'/').any(|c| c == b".." || c == b".") {
                return fail(format!(
                    "cvmfs_server stand-in: refusing entry {:?} (the real server would store a literal `.` or `..`)",
                    String::from_utf8_lossy(&raw)
                ));
            }
            let full = if name.is_empty() {
                PathBuf::from(base)
            } else {
                Path::new(base).join(OsStr::from_bytes(name))
            };
            if self.shadowed.iter().any(|s| full.starts_with(s)) {
                continue; // below a published file: stored unreachable by the real server
            }
            let parent = full.parent().map(Path::to_owned).unwrap_or_default();
            self.placeholders(&parent, now)?;
            let kind = header.entry_type();
            if let Some(target) = entry.link_name_bytes().filter(|_| kind.is_hard_link()) {
                let target = target.strip_prefix(b"./").unwrap_or(&target);
                self.hardlinks
                    .push((full, Path::new(base).join(OsStr::from_bytes(target))));
                continue;
            }
            let mode = header.mode()? & 0o7777;
            let mtime = header.mtime()? as i64;
            let owner = self
                .owner
                .unwrap_or((header.uid()? as u32, header.gid()? as u32));
            let dst = self.scratch.join(&full);
            if kind.is_dir() {
                if fs::symlink_metadata(self.published.join(&full)).is_ok_and(|m| !m.is_dir()) {
                    // A directory entry over a published file keeps the file (scenario 4e).
                    self.shadowed.push(full);
                    continue;
                }
                if self.known_dirs.insert(full.clone()) {
                    if fs::symlink_metadata(self.published.join(&full)).is_ok_and(|m| m.is_dir()) {
                        // Published directories are never updated by ingest.
                        fs::create_dir_all(&dst)?;
                        continue;
                    }
                    fs::create_dir_all(&dst)?;
                    lchown(&dst, owner)?;
                    self.new_dirs.push((full, mode, mtime));
                }
                continue;
            }
            if !self.written.insert(full.clone()) {
                return fail(format!(
                    "catalog_rw.cc:171: void catalog::WritableCatalog::AddEntry(...): Assertion `retval' failed. (duplicate {})",
                    full.display()
                ));
            }
            let is_special =
                kind.is_character_special() || kind.is_block_special() || kind.is_fifo();
            if is_special && full.file_name() == Some(OsStr::new(".cvmfscatalog")) {
                return fail(format!(
                    "PANIC: special file {} cannot be a catalog marker",
                    full.display()
                ));
            }
            remove_any(&dst)?;
            if kind.is_file()
                || kind == tar::EntryType::Continuous
                || kind == tar::EntryType::GNUSparse
            {
                let mut out = File::create(&dst)?;
                let copied = io::copy(&mut entry, &mut out).map_err(unreadable)?;
                if copied < header.entry_size()? {
                    return Err(unreadable(io::ErrorKind::UnexpectedEof.into()));
                }
                drop(out);
                store_object(self.objects, &dst)?;
            } else if kind.is_symlink() {
                let target = entry.link_name()?.ok_or_else(|| {
                    Failure(
                        format!("symlink {} has no target", full.display()),
                        1,
                        false,
                    )
                })?;
                std::os::unix::fs::symlink(target, &dst)?;
            } else if is_special {
                if self.gateway {
                    // The gateway's receiver only merges directories, files and symlinks.
                    self.written.remove(&full);
                    continue;
                }
                let file_type = if kind.is_character_special() {
                    FileType::CharacterDevice
                } else if kind.is_block_special() {
                    FileType::BlockDevice
                } else {
                    FileType::Fifo
                };
                let dev = rustix::fs::makedev(
                    header.device_major()?.unwrap_or(0),
                    header.device_minor()?.unwrap_or(0),
                );
                rustix::fs::mknodat(CWD, &dst, file_type, Mode::from_raw_mode(mode), dev)?;
            } else {
                return fail(format!(
                    "PANIC: unexpected file {} (tar type {:?})",
                    full.display(),
                    kind
                ));
            }
            lchown(&dst, owner)?;
            if !kind.is_symlink() {
                fs::set_permissions(&dst, fs::Permissions::from_mode(mode))?;
            }
            set_mtime(&dst, mtime)?;
        }
        self.resolve_hardlinks()?;
        if catalog && self.scratch.join(base).is_dir() {
            let marker = self.scratch.join(base).join(".cvmfscatalog");
            File::create(&marker)?;
            lchown(&marker, self.owner.unwrap_or((0, 0)))?;
            fs::set_permissions(&marker, fs::Permissions::from_mode(0o664))?;
            if fs::symlink_metadata(self.published.join(base)).is_ok_and(|m| m.is_dir()) {
                // --catalog resets an existing -b directory (scenario 4d): applied at merge.
                self.reset_base = Some((self.owner.unwrap_or((NOBODY, NOBODY)), now));
            }
        }
        // Directory times last: creating children changes them.
        for (dir, mode, mtime) in self.new_dirs.iter().rev() {
            let path = self.scratch.join(dir);
            fs::set_permissions(&path, fs::Permissions::from_mode(*mode))?;
            set_mtime(&path, *mtime)?;
        }
        Ok(())
    }

    /// Creates placeholder directories (0755, now) for every not yet known ancestor down to `dir`.
    fn placeholders(&mut self, dir: &Path, now: i64) -> Result<(), Failure> {
        let mut path = PathBuf::new();
        for part in dir.components() {
            path.push(part);
            if self.known_dirs.contains(&path) {
                continue;
            }
            self.known_dirs.insert(path.clone());
            let scratch = self.scratch.join(&path);
            fs::create_dir_all(&scratch)?;
            if fs::symlink_metadata(self.published.join(&path)).is_ok_and(|m| m.is_dir()) {
                continue; // published directories are never updated by ingest
            }
            // Invented directories: -U/-G, which -k makes 4294967295 (shown as 65534).
            lchown(&scratch, self.owner.unwrap_or((NOBODY, NOBODY)))?;
            self.new_dirs.push((path.clone(), 0o755, now));
        }
        Ok(())
    }

    /// Each hardlink becomes an independent copy of its target, found in this tar or published.
    fn resolve_hardlinks(&mut self) -> Result<(), Failure> {
        for (link, target) in std::mem::take(&mut self.hardlinks) {
            let source = if self.written.contains(&target) {
                self.scratch.join(&target)
            } else {
                self.published.join(&target)
            };
            match fs::symlink_metadata(&source) {
                Ok(m) if m.is_dir() => {
                    return fail(format!(
                        "PANIC: hardlink {} points to directory {}",
                        link.display(),
                        target.display()
                    ));
                }
                Ok(_) => {}
                Err(_) => {
                    return fail(format!(
                        "PANIC: catalog_mgr_rw.cc:304 catalog for file '{}' cannot be found, aborting",
                        target.display()
                    ));
                }
            }
            let dst = self.scratch.join(&link);
            remove_any(&dst)?;
            copy_entry(&source, &dst)?;
            self.written.insert(link);
        }
        Ok(())
    }
}

/// The options before the repository name, and the name (the last argument).
fn split_repo(args: &[String]) -> Result<(Vec<String>, String), Failure> {
    match args.split_last() {
        Some((repo, opts)) if !repo.starts_with('-') => Ok((opts.to_vec(), repo.clone())),
        _ => fail("the last argument must be the repository name"),
    }
}

fn clean(path: &str) -> String {
    path.trim_matches('/').to_owned()
}

fn within(path: &str, scope: &str) -> bool {
    scope.is_empty() || path == scope || path.starts_with(&format!("{scope}/"))
}

/// A header block with a valid checksum (or an end-of-archive zero block).
fn looks_like_tar(block: &[u8]) -> bool {
    if block.len() < 512 {
        return false;
    }
    if block.iter().all(|b| *b == 0) {
        return true;
    }
    let stored = std::str::from_utf8(&block[148..156])
        .ok()
        .and_then(|s| u32::from_str_radix(s.trim_matches(|c: char| c == ' ' || c == '\0'), 8).ok());
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(*b)
            }
        })
        .sum();
    stored == Some(sum)
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn lchown(path: &Path, (uid, gid): (u32, u32)) -> Result<(), Failure> {
    // Only root may give files away; unprivileged runs keep the caller's owner.
    if ducc_oci::is_root() {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    }
    Ok(())
}

fn set_mtime(path: &Path, secs: i64) -> Result<(), Failure> {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let times = Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

fn remove_any(path: &Path) -> Result<(), Failure> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path)?,
        Ok(_) => fs::remove_file(path)?,
        Err(_) => {}
    }
    Ok(())
}

/// The graft markers under `dir`.
fn find_grafts(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Failure> {
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return Ok(());
    };
    if !meta.is_dir() {
        return Ok(());
    }
    for entry in fs::read_dir(dir)?.flatten() {
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            find_grafts(&path, out)?;
        } else if entry.file_name().as_bytes().starts_with(b".cvmfsgraft-") {
            out.push(path);
        }
    }
    Ok(())
}

/// Stores the content of `file` as an object (zlib, as the server compresses by default) and
/// names it on the file with the magic xattrs a client shows (`user.hash`, `user.compression`,
/// `user.chunks`). The hash is the SHA-1 of the stored (compressed) object, as the real server's
/// (flat-without-rehash scenario 2).
fn store_object(objects: &Path, file: &Path) -> Result<String, Failure> {
    use sha1::Digest as _;
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    io::copy(&mut File::open(file)?, &mut encoder)?;
    let compressed = encoder.finish()?;
    let hash = hex::encode(sha1::Sha1::digest(&compressed));
    let object = objects.join(&hash);
    if !object.exists() {
        let partial = objects.join(format!("{hash}.partial"));
        fs::write(&partial, &compressed)?;
        fs::rename(&partial, &object)?;
    }
    set_magic_xattrs(file, &hash, "zlib");
    Ok(hash)
}

/// The magic xattrs of a stored file (best effort: a file system without user xattrs keeps none,
/// and ducc then publishes the files that would graft onto it by content).
fn set_magic_xattrs(file: &Path, hash: &str, compression: &str) {
    for (name, value) in [
        ("user.hash", hash),
        ("user.compression", compression),
        ("user.chunks", "1"),
    ] {
        let _ = rustix::fs::lsetxattr(
            file,
            name,
            value.as_bytes(),
            rustix::fs::XattrFlags::empty(),
        );
    }
}

fn copy_magic_xattrs(src: &Path, dst: &Path) {
    for name in ["user.hash", "user.compression", "user.chunks"] {
        let mut value = [0u8; 128];
        if let Ok(n) = rustix::fs::lgetxattr(src, name, &mut value) {
            let _ = rustix::fs::lsetxattr(dst, name, &value[..n], rustix::fs::XattrFlags::empty());
        }
    }
}

/// Where regular files are written before they are renamed into a tree (`copying/` in the
/// state directory, so on the same filesystem as every tree).
static COPYING: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Copies a regular file so that a reader of `dst` sees it absent or whole, never half
/// written (as a reader of `/cvmfs/REPO` sees one revision or the next): the copy is written
/// under `copying/` and renamed into place.
fn copy_file_whole(src: &Path, dst: &Path) -> Result<(), Failure> {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let Some(dir) = COPYING.get() else {
        return fail("cvmfs_server stand-in: no directory to copy files through (set in main)");
    };
    fs::create_dir_all(dir)?;
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!("{}-{n}", std::process::id()));
    fs::copy(src, &tmp)?;
    fs::rename(&tmp, dst)?;
    Ok(())
}

/// Copies one entry (file, symlink, device, FIFO or directory tree) with its metadata.
fn copy_entry(src: &Path, dst: &Path) -> Result<(), Failure> {
    let meta = fs::symlink_metadata(src)?;
    let ft = meta.file_type();
    if ft.is_dir() {
        fs::create_dir(dst)?;
        let mut names: Vec<_> = fs::read_dir(src)?
            .flatten()
            .map(|e| e.file_name())
            .collect();
        names.sort();
        for name in names {
            copy_entry(&src.join(&name), &dst.join(&name))?;
        }
    } else if ft.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(src)?, dst)?;
    } else if ft.is_file() {
        copy_file_whole(src, dst)?;
        copy_magic_xattrs(src, dst);
    } else {
        let kind = FileType::from_raw_mode(meta.mode());
        rustix::fs::mknodat(
            CWD,
            dst,
            kind,
            Mode::from_raw_mode(meta.mode() & 0o7777),
            meta.rdev(),
        )?;
    }
    lchown(dst, (meta.uid(), meta.gid()))?;
    if !ft.is_symlink() {
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    set_mtime(dst, meta.mtime())?;
    Ok(())
}

/// Makes `dst/path` a copy of `src/path` (or removes it when `src/path` does not exist).
fn sync(src: &Path, dst: &Path, path: &str) -> Result<(), Failure> {
    let to = if path.is_empty() {
        dst.to_owned()
    } else {
        dst.join(path)
    };
    let from = if path.is_empty() {
        src.to_owned()
    } else {
        src.join(path)
    };
    remove_any(&to)?;
    if fs::symlink_metadata(&from).is_ok() {
        // Missing parents are copied with their own metadata, so both trees stay equal.
        let mut prefix = PathBuf::new();
        for part in Path::new(path)
            .parent()
            .into_iter()
            .flat_map(Path::components)
        {
            prefix.push(part);
            if fs::symlink_metadata(dst.join(&prefix)).is_err() {
                copy_dir_only(&src.join(&prefix), &dst.join(&prefix))?;
            }
        }
        copy_entry(&from, &to)?;
    }
    Ok(())
}

/// Moves the scratch tree at `path` into the published tree: new entries are added, files and
/// symlinks replace what was there, existing directories keep their own metadata.
fn merge(scratch: &Path, published: &Path, path: &str) -> Result<(), Failure> {
    // Ancestors of `path` in the scratch are placeholders or published directories.
    let mut prefix = String::new();
    for part in path.split('/') {
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(part);
        let dst = published.join(&prefix);
        if fs::symlink_metadata(&dst).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        remove_any(&dst)?;
        if prefix == path {
            break;
        }
        copy_dir_only(&scratch.join(&prefix), &dst)?;
    }
    merge_tree(&scratch.join(path), &published.join(path))
}

fn copy_dir_only(src: &Path, dst: &Path) -> Result<(), Failure> {
    let meta = fs::symlink_metadata(src)?;
    fs::create_dir(dst)?;
    lchown(dst, (meta.uid(), meta.gid()))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    set_mtime(dst, meta.mtime())?;
    Ok(())
}

fn merge_tree(src: &Path, dst: &Path) -> Result<(), Failure> {
    let meta = fs::symlink_metadata(src)?;
    if meta.is_dir() && fs::symlink_metadata(dst).is_ok_and(|m| m.is_dir()) {
        let mtime = fs::symlink_metadata(dst)?.mtime();
        for e in fs::read_dir(src)?.flatten() {
            merge_tree(&e.path(), &dst.join(e.file_name()))?;
        }
        set_mtime(dst, mtime)?;
        return Ok(());
    }
    remove_any(dst)?;
    copy_entry(src, dst)
}

/// Repository paths where two trees differ (type, mode, owner, content, symlink target);
/// a differing directory is reported once, not its children.
fn diff_trees(a: &Path, b: &Path) -> Vec<String> {
    fn describe(path: &Path) -> Option<(u32, u32, u32, Vec<u8>)> {
        let m = fs::symlink_metadata(path).ok()?;
        let content = if m.is_symlink() {
            fs::read_link(path)
                .ok()?
                .into_os_string()
                .into_encoded_bytes()
        } else if m.is_file() {
            fs::read(path).ok()?
        } else if m.is_dir() {
            Vec::new()
        } else {
            m.rdev().to_le_bytes().to_vec()
        };
        Some((m.mode(), m.uid(), m.gid(), content))
    }
    fn walk(a: &Path, b: &Path, rel: &str, out: &mut Vec<String>) {
        let (da, db) = (describe(a), describe(b));
        if da != db {
            out.push(rel.to_owned());
            return;
        }
        if fs::symlink_metadata(a).is_ok_and(|m| m.is_dir()) {
            let mut names = BTreeSet::new();
            for dir in [a, b] {
                if let Ok(entries) = fs::read_dir(dir) {
                    names.extend(entries.flatten().map(|e| e.file_name()));
                }
            }
            for name in names {
                let child = if rel.is_empty() {
                    name.to_string_lossy().into_owned()
                } else {
                    format!("{rel}/{}", name.to_string_lossy())
                };
                walk(&a.join(&name), &b.join(&name), &child, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(a, b, "", &mut out);
    out
}
