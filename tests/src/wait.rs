//! Waiting for an event, never for a fixed time: a condition polled until a bounded deadline,
//! after which the test fails naming what never happened. The events tests wait for: a file, a
//! line a child prints, a process that ended or that blocks on a lock.
//!
//! ```no_run
//! use ducc_tests::wait;
//! let mut child = std::process::Command::new("ducc")
//!     .stderr(std::process::Stdio::piped())
//!     .spawn()
//!     .unwrap();
//! let mut stderr = wait::Lines::follow(child.stderr.take().unwrap());
//! stderr.wait_for("the recovery warning", wait::DEADLINE, |line| line.contains("recovering"));
//! wait::until("ducc to end", wait::DEADLINE, || child.try_wait().unwrap().is_some());
//! ```

use std::io::{BufRead, BufReader, Read};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The longest a test waits for something that should happen soon: generous, since CI shares
/// two cores between builds and tests, yet bounded so a hang fails instead of stalling CI.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(20);

/// Polls `done` until it holds.
///
/// # Panics
/// When `deadline` passes first, naming `what`.
pub fn until(what: &str, deadline: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// Whether process `pid` has ended: gone, or a zombie nobody reaped yet.
pub fn process_ended(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S ...`: the state follows the last `)` (comm may hold one).
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// Whether process `pid` is blocked waiting for a `flock` (or POSIX lock) that another process
/// holds: the kernel lists such a waiter in `/proc/locks` on a line marked `->`.
pub fn blocked_on_lock(pid: u32) -> bool {
    let Ok(locks) = std::fs::read_to_string("/proc/locks") else {
        return false;
    };
    // `3: -> FLOCK  ADVISORY  WRITE 1234 00:2a:5678 0 EOF`: the pid follows the access mode.
    locks.lines().any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        fields.next() == Some("->") && fields.nth(3).and_then(|p| p.parse().ok()) == Some(pid)
    })
}

/// The lines of a child's output stream, read on a thread of their own (so the child never
/// blocks on a full pipe), to wait for one of them.
pub struct Lines {
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    /// Starts reading `stream` line by line.
    pub fn follow(stream: impl Read + Send + 'static) -> Lines {
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for the first line, from here on, that `wanted` accepts, and returns it.
    ///
    /// # Panics
    /// When the stream ends or `deadline` passes first, naming `what` and the lines seen.
    pub fn wait_for(
        &mut self,
        what: &str,
        deadline: Duration,
        wanted: impl Fn(&str) -> bool,
    ) -> String {
        let started = Instant::now();
        loop {
            let left = deadline.saturating_sub(started.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "timed out after {deadline:?} waiting for {what}; lines so far:\n{}",
                    self.seen.join("\n")
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "the stream ended before {what}; its lines:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Every line seen so far and the rest of the stream, read to its end.
    pub fn into_text(mut self) -> String {
        self.seen.extend(self.lines.iter());
        self.seen.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_that_comes_is_found_and_the_rest_is_kept() {
        let mut lines = Lines::follow(&b"one\ntwo\nthree\n"[..]);
        assert_eq!(lines.wait_for("two", DEADLINE, |l| l == "two"), "two");
        assert_eq!(lines.into_text(), "one\ntwo\nthree");
    }

    #[test]
    #[should_panic(expected = "the stream ended before four")]
    fn a_line_that_never_comes_fails_when_the_stream_ends() {
        let mut lines = Lines::follow(&b"one\n"[..]);
        lines.wait_for("four", DEADLINE, |l| l == "four");
    }

    #[test]
    #[should_panic(expected = "timed out after")]
    fn a_condition_that_never_holds_fails_at_the_deadline() {
        until("nothing", Duration::from_millis(50), || false);
    }

    #[test]
    fn this_process_runs_and_is_not_blocked_on_a_lock() {
        assert!(!process_ended(i32::try_from(std::process::id()).unwrap()));
        assert!(!blocked_on_lock(std::process::id()));
    }
}
