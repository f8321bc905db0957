//! Waiting for an event, never for a fixed time: a condition polled until a bounded deadline,
//! after which the test fails naming what never happened. The events tests wait for: a file, a
//! status, a process that ended, or one that blocks on a lock (what proves that the other side
//! waits, where a test shows that something does not happen).
//!
//! ```no_run
//! use ducc_tests::wait;
//! let gc = std::process::Command::new("ducc").arg("gc").spawn().unwrap();
//! wait::until("gc to wait for the convert's lock", wait::DEADLINE, || {
//!     wait::blocked_on_lock(gc.id())
//! });
//! ```

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

/// The processes whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            // `pid (comm) S ppid ...`: the parent follows the state, after the last `)`.
            std::fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(pid)
            })
        })
        .collect()
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

/// Whether a thread of process `pid` is blocked writing into a full pipe (its kernel wait
/// channel is `pipe_write`, or `anon_pipe_write` on newer kernels).
pub fn blocked_writing_pipe(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|task| {
        std::fs::read_to_string(task.path().join("wchan")).is_ok_and(|w| w.ends_with("pipe_write"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_child_waiting_for_a_held_lock_is_found_blocked() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("lock");
        let held = std::fs::File::create(&lock).unwrap();
        rustix::fs::flock(&held, rustix::fs::FlockOperation::LockExclusive).unwrap();
        let mut child = std::process::Command::new("flock")
            .arg(&lock)
            .arg("true")
            .spawn()
            .unwrap();
        until("flock to wait for the lock", DEADLINE, || {
            children_of(std::process::id()).contains(&child.id()) && blocked_on_lock(child.id())
        });
        drop(held);
        assert!(child.wait().unwrap().success());
        assert!(process_ended(i32::try_from(child.id()).unwrap()));
    }
}
