//! A tar streamed into `cvmfs_server ingest -t -` that no way of ending ducc can cut at an
//! entry boundary (issue 24; reference: cvmfs-flat-without-rehash.md section 6).
//!
//! `ingest -t -` publishes whatever tar it read when its input ends at an entry boundary, as if
//! the tar were complete (scenario 22), while an input that ends inside a block fails the
//! ingest without publishing anything and without leaving a transaction open (scenario 21; a
//! partial header is libarchive's "Truncated tar archive detected while reading next header",
//! the same fatal error as partial data). So the stream only ever stands still inside a block:
//! - [`CutSafe`] writes the tar in pieces of at most `PIPE_BUF` bytes, one `write(2)` each,
//!   which a pipe takes whole or not at all (POSIX): a process killed at any instant has put a
//!   sum of whole pieces into the pipe;
//! - every piece but the last ends one byte past a 512-byte block boundary, so that sum is never
//!   a multiple of 512 before the last piece, which ends the tar (its end-of-archive blocks
//!   included) and can only be written once the whole tar was produced.
//!
//! A tar that must not be published (staging failed half-way) is never ended by closing the
//! stream: the ingest's process group is killed and its transaction aborted (scenario 20), as
//! the reference's consequence says. [`CutSafe::broken`] tells a write that failed because the
//! server stopped reading (it exited: its own error is the one to report) from the staging's.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use super::{Leaf, Tree};
use crate::error::{PublishError, io_err};
use crate::layout::RepoPath;

/// The largest write a pipe takes whole (POSIX `PIPE_BUF`; 4096 on Linux).
pub(super) const PIPE_ATOMIC: usize = 4096;

/// Tar blocks.
const BLOCK: usize = 512;

/// Writes a stream in atomic pieces that never end on a block boundary until [`CutSafe::finish`].
pub(super) struct CutSafe<W: Write> {
    inner: W,
    /// Bytes not yet written: always fewer than the next piece's length.
    pending: Vec<u8>,
    /// Bytes written so far (always `1 mod 512`, or 0).
    written: u64,
    /// A write failed because the reader is gone (`EPIPE`).
    broken: bool,
}

impl<W: Write> CutSafe<W> {
    pub(super) fn new(inner: W) -> Self {
        Self {
            inner,
            pending: Vec::with_capacity(PIPE_ATOMIC),
            written: 0,
            broken: false,
        }
    }

    /// The length of the next piece: the first ends at byte 3585 (7 blocks and one byte), every
    /// other one is `PIPE_ATOMIC` long, so each ends one byte past a block boundary.
    fn next_piece(&self) -> usize {
        if self.written == 0 {
            PIPE_ATOMIC - BLOCK + 1
        } else {
            PIPE_ATOMIC
        }
    }

    /// Writes `piece` with one `write(2)`: whole, or an error.
    fn put(&mut self, len: usize) -> io::Result<()> {
        loop {
            match self.inner.write(&self.pending[..len]) {
                Ok(n) if n == len => break,
                Ok(n) => {
                    // A pipe never takes part of a write of at most PIPE_BUF bytes; anything
                    // else (a file, a socket) is not what this writer is for.
                    return Err(io::Error::other(format!(
                        "the ingest stream took {n} of {len} bytes of one piece"
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.broken = e.kind() == io::ErrorKind::BrokenPipe;
                    return Err(e);
                }
            }
        }
        self.pending.drain(..len);
        self.written += len as u64;
        Ok(())
    }

    /// Writes what is left: the end of the tar. The stream may end only after this.
    pub(super) fn finish(&mut self) -> io::Result<()> {
        while self.pending.len() > PIPE_ATOMIC {
            // Not reached through `write`, which keeps fewer than one piece pending.
            self.put(self.next_piece())?;
        }
        if !self.pending.is_empty() {
            self.put(self.pending.len())?;
        }
        self.inner.flush()
    }

    /// Whether a write failed because the reading side closed the pipe.
    pub(super) fn broken(&self) -> bool {
        self.broken
    }

    /// Bytes written into the stream so far.
    pub(super) fn written(&self) -> u64 {
        self.written
    }
}

impl<W: Write> Write for CutSafe<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        while self.pending.len() >= self.next_piece() {
            self.put(self.next_piece())?;
        }
        Ok(buf.len())
    }

    /// Writes nothing out: only [`CutSafe::finish`] may end a piece on a block boundary.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A [`CutSafe`] shared between the tar writer that owns a `Box<dyn Write + Send>` (on this thread or
/// the staging thread of an [`OpenIngest`]) and the caller that finishes the stream.
pub(super) struct Shared<W: Write>(pub(super) Arc<Mutex<CutSafe<W>>>);

impl<W: Write> Shared<W> {
    fn lock(&self) -> std::sync::MutexGuard<'_, CutSafe<W>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<W: Write> Write for Shared<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.lock().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.lock().flush()
    }
}

/// A `cvmfs_server` call reading a tar on its stdin, running.
pub(super) struct FedCall {
    child: Child,
    pipe: Shared<ChildStdin>,
    out: JoinHandle<Vec<u8>>,
    err: JoinHandle<Vec<u8>>,
    command: String,
    record: PathBuf,
}

impl FedCall {
    /// A writer into the call's stdin, for the tar writer.
    fn writer(&self) -> Box<dyn Write + Send> {
        Box::new(Shared(Arc::clone(&self.pipe.0)))
    }

    /// Ends the call: after a tar written whole (`fed` is `Ok`) its last piece goes and the
    /// stream closes; otherwise the call's process group is killed unless the server closed the
    /// stream itself. Returns the call's stdout, and whether it was killed (a transaction it
    /// opened is then left open: scenario 20).
    fn close(self, fed: Result<(), PublishError>) -> (Result<String, PublishError>, bool) {
        let FedCall {
            mut child,
            pipe,
            out,
            err,
            command,
            record,
        } = self;
        let fed = fed.and_then(|()| {
            pipe.lock()
                .finish()
                .map_err(io_err("write the end of the tar into", command.as_str()))
        });
        let (broken, written) = {
            let pipe = pipe.lock();
            (pipe.broken(), pipe.written())
        };
        // The last handle on stdin (the tar writer's went with it): the server sees its end.
        drop(pipe);
        let killed = fed.is_err() && !broken;
        if killed {
            tracing::warn!(%command, written, "the ingest stream cannot be completed: killing the ingest");
            if let Err(e) = kill_group(&child) {
                return (Err(PublishError::Spawn { command, source: e }), true);
            }
        }
        let status = match child.wait() {
            Ok(status) => status,
            Err(source) => return (Err(PublishError::Spawn { command, source }), killed),
        };
        let stdout = String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned();
        let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
        if let Err(e) = fs::remove_file(&record)
            && e.kind() != io::ErrorKind::NotFound
        {
            return (Err(io_err("remove", record)(e)), killed);
        }
        if !status.success() && !killed {
            return (
                Err(super::call_failed(command, status, &stdout, &stderr)),
                killed,
            );
        }
        // A feed error, or (a server that exited 0 without reading its whole stream) the
        // pipe's: nothing ducc did not mean to publish can have been published.
        (fed.map(|()| stdout), killed)
    }
}

/// One committed unit's writes, for the staging thread of an [`OpenIngest`].
pub(super) enum Job {
    Unit {
        trees: Vec<Tree>,
        leaves: BTreeMap<RepoPath, Leaf>,
    },
    /// The group commits: end the tar.
    End,
}

/// What the streamed ingests of one group did: revisions made, and the error that ended one.
#[derive(Debug, Default)]
pub(super) struct StreamOutcome {
    pub(super) revisions: AtomicUsize,
    pub(super) failed: Mutex<Option<PublishError>>,
}

/// An ingest of a streaming group ([`crate::Publisher::streaming_group`]) that takes its units as
/// their transactions commit: a thread stages each into the tar while the group's next
/// transactions are prepared (the next layer decodes while the server ingests the one before).
/// It holds the spool lock until it ends: [`super::CvmfsPublisher::spool_lock`] ends it first.
pub(super) struct OpenIngest {
    /// The group it belongs to.
    pub(super) owner: u64,
    /// Its `-b` directory.
    base: RepoPath,
    outcome: Arc<StreamOutcome>,
    jobs: mpsc::Sender<Job>,
    stager: JoinHandle<Result<(), PublishError>>,
    call: FedCall,
    _spool: crate::lock::FileLock,
}

impl OpenIngest {
    /// Starts `ingest -k -t - -b BASE` for group `owner` (the spool lock is taken here).
    pub(super) fn start(
        publisher: &super::CvmfsPublisher,
        owner: u64,
        outcome: Arc<StreamOutcome>,
        base: &RepoPath,
    ) -> Result<Self, PublishError> {
        let spool = publisher.spool_lock()?;
        let base_is_new = !publisher.is_dir(base);
        let args: Vec<OsString> = vec![
            "ingest".into(),
            "-k".into(),
            "-t".into(),
            "-".into(),
            "-b".into(),
            base.as_str().into(),
            publisher.repo.clone().into(),
        ];
        let call = publisher.open_fed(&args)?;
        let writer = call.writer();
        let (jobs, queue) = mpsc::channel();
        let mut stager = super::Stager {
            mount_root: publisher.mount(&RepoPath::root()),
            gateway: publisher.gateway,
            base: base.clone(),
            base_is_new,
            staged: PathBuf::from(format!("the ingest stream into {}", publisher.repo)),
            tar: None,
            dirs: HashSet::new(),
            entries: HashSet::new(),
            leaves: HashSet::new(),
            removals: Vec::new(),
            check_only: false,
        };
        let stager = std::thread::spawn(move || {
            stager.tar = Some(super::tar_builder(writer));
            for job in queue {
                match job {
                    Job::Unit { trees, leaves } => {
                        stager.leaves.extend(leaves.keys().cloned());
                        for tree in &trees {
                            stager.stage(tree)?;
                        }
                        stager.stage_leaves(&leaves)?;
                    }
                    Job::End => return stager.end_tar(),
                }
            }
            Err(PublishError::Io {
                action: "stage",
                path: stager.staged.clone(),
                source: io::Error::other("the streaming group was dropped"),
            })
        });
        Ok(OpenIngest {
            owner,
            base: base.clone(),
            outcome,
            jobs,
            stager,
            call,
            _spool: spool,
        })
    }

    /// Hands a unit to the staging thread; false when it has stopped (see [`Self::end`]).
    pub(super) fn send(&self, job: Job) -> bool {
        self.jobs.send(job).is_ok()
    }

    /// Ends the ingest: the tar is finished and published (`abandon` false), or the ingest is
    /// killed and its transaction aborted. What it did goes to its group's [`StreamOutcome`].
    pub(super) fn end(self, publisher: &super::CvmfsPublisher, abandon: bool) {
        let OpenIngest {
            outcome,
            jobs,
            stager,
            call,
            _spool,
            ..
        } = self;
        if abandon {
            // The staging thread may be blocked writing: the killed server stops reading.
            if let Err(e) = kill_group(&call.child) {
                tracing::warn!(error = %e, "cannot kill an abandoned ingest");
            }
        } else {
            let _ = jobs.send(Job::End);
        }
        drop(jobs);
        let fed = stager.join().unwrap_or_else(|_| {
            Err(PublishError::Io {
                action: "stage",
                path: PathBuf::from(&call.command),
                source: io::Error::other("the staging thread panicked"),
            })
        });
        let fed = if abandon {
            Err(PublishError::Io {
                action: "stage",
                path: PathBuf::from(&call.command),
                source: io::Error::other("the streaming group was dropped"),
            })
        } else {
            fed
        };
        let (result, killed) = call.close(fed);
        if killed || abandon {
            // Scenario 20: a killed ingest leaves its transaction open.
            publisher.abort_left_open();
        }
        match result {
            Ok(_) => {
                publisher.published_here();
                outcome.revisions.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) if !abandon => {
                *outcome.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            }
            Err(_) => {}
        }
    }
}

/// The [`OpenIngest`] of a publisher, if any.
#[derive(Default)]
pub(super) struct IngestSlot(Mutex<Option<OpenIngest>>);

impl std::fmt::Debug for IngestSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let owner = self.lock().as_ref().map(|o| o.owner);
        f.debug_tuple("IngestSlot").field(&owner).finish()
    }
}

impl IngestSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<OpenIngest>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl super::CvmfsPublisher {
    /// Hands a streaming group's committed unit to its open ingest, opening one (after ending
    /// whatever other ingest is open: another group's, or one whose base does not hold this
    /// unit) when there is none.
    pub(super) fn stream_unit(
        &self,
        plan: &super::StreamPlan,
        unit: &super::Unit,
    ) -> Result<(), PublishError> {
        let job = Job::Unit {
            trees: unit.trees.clone(),
            leaves: unit.leaves.clone(),
        };
        let anchor = unit.lease.parent().filter(|p| !p.is_root());
        let anchor = anchor.as_ref().unwrap_or(&unit.lease);
        {
            let slot = self.open_ingest.lock();
            if let Some(open) = slot
                .as_ref()
                .filter(|o| o.owner == plan.id && anchor.starts_with(&o.base))
            {
                if open.send(job) {
                    return Ok(());
                }
                drop(slot);
                return Err(self.stopped(plan));
            }
        }
        self.end_open_ingest(None, false);
        let (base, _) = self.ingest_base(plan.leases.iter().chain([&unit.lease]));
        let open = OpenIngest::start(self, plan.id, Arc::clone(&plan.outcome), &base)?;
        let sent = open.send(job);
        let before = self.open_ingest.lock().replace(open);
        if let Some(before) = before {
            // Opened by another thread meanwhile: not this group's, it goes in as it is.
            before.end(self, false);
        }
        if sent {
            Ok(())
        } else {
            Err(self.stopped(plan))
        }
    }

    /// The error that stopped a group's open ingest (ended now).
    fn stopped(&self, plan: &super::StreamPlan) -> PublishError {
        self.end_open_ingest(Some(plan.id), false);
        let failed = plan
            .outcome
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        failed.unwrap_or_else(|| PublishError::Io {
            action: "stage",
            path: PathBuf::from(format!("the ingest stream into {}", self.repo)),
            source: io::Error::other("the ingest stream stopped"),
        })
    }

    /// Whether group `owner` has its ingest open.
    pub(super) fn is_streaming(&self, owner: u64) -> bool {
        self.open_ingest
            .lock()
            .as_ref()
            .is_some_and(|o| o.owner == owner)
    }

    /// Ends the open ingest (only group `owner`'s when given): published whole, or killed and
    /// aborted with `abandon`. What came of it goes to its group's [`StreamOutcome`].
    pub(super) fn end_open_ingest(&self, owner: Option<u64>, abandon: bool) {
        let open = {
            let mut slot = self.open_ingest.lock();
            match slot.as_ref() {
                Some(o) if owner.is_none_or(|id| id == o.owner) => slot.take(),
                _ => None,
            }
        };
        if let Some(open) = open {
            open.end(self, abandon);
        }
    }

    /// Starts `cvmfs_server ARGS` with a pipe on its stdin, in a process group of its own, noted
    /// in `in-flight` while it runs (the caller holds the spool lock).
    fn open_fed(&self, args: &[OsString]) -> Result<FedCall, PublishError> {
        let command = self.command_line(args);
        tracing::debug!(%command, "running, fed a tar on stdin");
        let spawn_err = |source| PublishError::Spawn {
            command: command.clone(),
            source,
        };
        let mut child = Command::new(&self.server)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(spawn_err)?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = kill_group(&child);
            let _ = child.wait();
            return Err(spawn_err(io::Error::other("no pipes to the child")));
        };
        let record = self.in_flight_path();
        if let Err(e) = fs::write(&record, format!("{} {command}\n", child.id())) {
            let _ = kill_group(&child);
            let _ = child.wait();
            return Err(io_err("write", record)(e));
        }
        // Read beside the feeding: a server blocked on a full stdout would never read on.
        let out = std::thread::spawn(move || read_all(stdout));
        let err = std::thread::spawn(move || read_all(stderr));
        Ok(FedCall {
            child,
            pipe: Shared(Arc::new(Mutex::new(CutSafe::new(stdin)))),
            out,
            err,
            command,
            record,
        })
    }

    /// Runs `cvmfs_server ARGS` (an `ingest -t -`) with `feed` writing the tar into its stdin
    /// on this thread (see [`Self::open_fed`]); returns stdout.
    ///
    /// When `feed` fails, the stream is not closed: the server's process group is killed, then
    /// a transaction it left open aborted; a killed ducc leaves a stream that fails the ingest
    /// by itself (see the module documentation).
    pub(super) fn run_streamed(
        &self,
        args: &[OsString],
        feed: &mut dyn FnMut(Box<dyn Write + Send>) -> Result<(), PublishError>,
    ) -> Result<String, PublishError> {
        let call = self.open_fed(args)?;
        let fed = feed(call.writer());
        let (result, killed) = call.close(fed);
        if killed {
            // Scenario 20: a killed ingest leaves its transaction open.
            self.abort_left_open();
        }
        result
    }
}

/// Kills a child's whole process group (the server script and what it started); one that ended
/// already is no error.
fn kill_group(child: &Child) -> io::Result<()> {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        match rustix::process::kill_process_group(pid, rustix::process::Signal::KILL) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn read_all(mut from: impl Read) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = from.read_to_end(&mut buf);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the length of every `write` call.
    #[derive(Default)]
    struct Calls {
        data: Vec<u8>,
        ends: Vec<usize>,
        lens: Vec<usize>,
    }

    impl Write for Calls {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.data.extend_from_slice(buf);
            self.lens.push(buf.len());
            self.ends.push(self.data.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn stream(sizes: &[usize]) -> (Vec<u8>, Calls) {
        let mut all = Vec::new();
        let mut w = CutSafe::new(Calls::default());
        for (i, size) in sizes.iter().enumerate() {
            let chunk: Vec<u8> = (0..*size).map(|j| (i * 31 + j) as u8).collect();
            w.write_all(&chunk).unwrap();
            w.flush().unwrap();
            all.extend_from_slice(&chunk);
        }
        w.finish().unwrap();
        (all, w.inner)
    }

    #[test]
    fn no_write_but_the_last_ends_on_a_block_boundary_and_none_exceeds_pipe_buf() {
        for sizes in [
            vec![512 * 3],
            vec![1, 511, 512, 100_000, 7, 1024],
            vec![4096; 9],
            vec![3585, 4096, 4096],
            vec![512 * 2000, 1024],
        ] {
            let (all, calls) = stream(&sizes);
            assert_eq!(calls.data, all, "{sizes:?}: every byte once, in order");
            let (last, rest) = calls.ends.split_last().unwrap();
            assert_eq!(*last, all.len());
            for end in rest {
                assert_eq!(end % 512, 1, "{sizes:?}: a write ended at {end}");
            }
            assert!(calls.lens.iter().all(|l| *l <= PIPE_ATOMIC), "{sizes:?}");
        }
    }

    #[test]
    fn a_stream_shorter_than_one_piece_is_one_write_at_finish() {
        let (all, calls) = stream(&[1024]);
        assert_eq!(calls.lens, vec![1024]);
        assert_eq!(calls.data, all);
        let (_, calls) = stream(&[]);
        assert!(calls.lens.is_empty(), "nothing written for an empty stream");
    }

    #[test]
    fn a_closed_reader_is_told_apart_from_other_write_errors() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = CutSafe::new(Closed);
        assert!(w.write_all(&[0; 8192]).is_err());
        assert!(w.broken());
        let mut room = [0u8; 100];
        let mut full = CutSafe::new(io::Cursor::new(room.as_mut_slice()));
        let err = full.write_all(&[0; 8192]).unwrap_err();
        assert!(
            !full.broken(),
            "a short write is not a closed reader: {err}"
        );
    }
}
