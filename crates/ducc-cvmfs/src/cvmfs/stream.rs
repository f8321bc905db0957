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

use std::cell::RefCell;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::rc::Rc;

use crate::error::{PublishError, io_err};

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

/// A [`CutSafe`] shared between the tar writer that owns a `Box<dyn Write>` and the caller that
/// finishes the stream once the tar is whole.
pub(super) struct Shared<W: Write>(pub(super) Rc<RefCell<CutSafe<W>>>);

impl<W: Write> Write for Shared<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.borrow_mut().flush()
    }
}

impl super::CvmfsPublisher {
    /// Runs `cvmfs_server ARGS` (an `ingest -t -`) with `feed` writing the tar into its stdin,
    /// noted in `in-flight` while it runs (the caller holds the spool lock); returns stdout.
    ///
    /// The server runs in a process group of its own. When `feed` fails, the stream is not
    /// closed: the group is killed, then a transaction it left open aborted; a killed ducc
    /// leaves a stream that fails the ingest by itself (see the module documentation).
    pub(super) fn run_streamed(
        &self,
        args: &[OsString],
        feed: &mut dyn FnMut(Box<dyn Write>) -> Result<(), PublishError>,
    ) -> Result<String, PublishError> {
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
        let record_path = self.in_flight_path();
        let record = fs::write(&record_path, format!("{} {command}\n", child.id()))
            .map_err(io_err("write", record_path.as_path()));
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = kill_group(&mut child);
            return Err(spawn_err(io::Error::other("no pipes to the child")));
        };
        // Read beside the feeding: a server blocked on a full stdout would never read on.
        let out = std::thread::spawn(move || read_all(stdout));
        let err = std::thread::spawn(move || read_all(stderr));
        let pipe = Rc::new(RefCell::new(CutSafe::new(stdin)));
        let fed = record.and_then(|()| {
            feed(Box::new(Shared(pipe.clone())))?;
            pipe.borrow_mut()
                .finish()
                .map_err(io_err("write the end of the tar into", command.as_str()))
        });
        let (broken, written) = {
            let pipe = pipe.borrow();
            (pipe.broken(), pipe.written())
        };
        // The last handle on stdin: the server sees its end now, after the tar's last piece.
        drop(pipe);
        let killed = fed.is_err() && !broken;
        if killed {
            tracing::warn!(%command, written, "staging the ingest stream failed: killing the ingest");
            kill_group(&mut child).map_err(spawn_err)?;
        }
        let status = child.wait().map_err(spawn_err)?;
        let stdout = String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned();
        let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
        if killed {
            // Scenario 20: a killed ingest leaves its transaction open.
            self.abort_left_open();
        }
        if let Err(e) = fs::remove_file(&record_path)
            && e.kind() != io::ErrorKind::NotFound
        {
            return Err(io_err("remove", record_path)(e));
        }
        if !status.success() && !killed {
            return Err(PublishError::Command {
                command,
                status: status.to_string(),
                stderr: [stderr.trim(), stdout.trim()]
                    .iter()
                    .filter(|t| !t.is_empty())
                    .copied()
                    .collect::<Vec<_>>()
                    .join("\n"),
            });
        }
        // A feed error, or (a server that exited 0 without reading its whole stream) the
        // pipe's: nothing ducc did not mean to publish can have been published.
        fed?;
        Ok(stdout)
    }
}

/// Kills a child's whole process group (the server script and what it started) and reaps it.
fn kill_group(child: &mut std::process::Child) -> io::Result<()> {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        rustix::process::kill_process_group(pid, rustix::process::Signal::KILL)?;
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
