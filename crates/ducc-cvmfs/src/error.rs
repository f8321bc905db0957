//! The publishers' error type.

use std::io;
use std::path::PathBuf;

use crate::layout::RepoPath;

/// What went wrong while publishing; every variant names the path, lease or command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// A filesystem operation failed.
    #[error("cannot {action} {path}")]
    Io {
        /// What was being done (`create`, `rename`, `read` …).
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Another garbage collection holds the repository's gc lock (several publisher nodes).
    #[error(
        "another garbage collection is running on this repository: host {host}, pid {pid}, \
         started at {started} (seconds since the epoch), as {record} records; run one gc at a \
         time. If that gc is gone, its lock is taken over once it is older than 24 h (at \
         {expires}), at once from its own host, or now by removing the record in a transaction \
         of its own (cvmfs_server transaction REPO/.metadata/.gc/lock.json; rm the file; \
         cvmfs_server publish REPO)"
    )]
    GcRunning {
        /// The lock record as this host reads it.
        record: PathBuf,
        /// The holder's host name.
        host: String,
        /// The holder's process id.
        pid: u32,
        /// When the holder started (seconds since the epoch).
        started: u64,
        /// When the record counts as stale (seconds since the epoch).
        expires: u64,
    },
    /// A write outside the transaction's lease.
    #[error("path {path} is outside the transaction's lease {lease}")]
    OutsideLease {
        /// The path written.
        path: RepoPath,
        /// The lease of the transaction.
        lease: RepoPath,
    },
    /// A directory ingest onto an existing path, or a file or symlink onto a directory.
    #[error("{path} already exists (remove it first in the same transaction)")]
    AlreadyExists {
        /// The path concerned.
        path: RepoPath,
    },
    /// A parent of the path written is a file or symlink.
    #[error("{path} is not a directory")]
    NotADirectory {
        /// The parent concerned.
        path: RepoPath,
    },
    /// The tar stream could not be applied to a directory.
    #[error("cannot unpack the tar stream into {dir}")]
    Unpack {
        /// The target directory.
        dir: RepoPath,
        /// The cause.
        #[source]
        source: ducc_unpack::Error,
    },
    /// The callback of [`crate::Transaction::fill_dir`] failed.
    #[error("cannot build {dir}")]
    Fill {
        /// The directory being built.
        dir: RepoPath,
        /// The callback's error.
        #[source]
        source: crate::FillError,
    },
    /// An external command could not be started.
    #[error("cannot run {command}")]
    Spawn {
        /// The command line.
        command: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An external command failed; its stderr is part of the message.
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status as text (`exit status: 1`, `signal: 9`).
        status: String,
        /// The command's stderr, trimmed.
        stderr: String,
    },
    /// Writing the tar stream to `cvmfs_server ingest` failed (the command's own error, if any,
    /// is preferred over this one).
    #[error("cannot feed the tar stream to {command}")]
    Feed {
        /// The command line.
        command: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The tar stream holds what the repository would drop without a word: an opaque directory
    /// (`trusted.overlay.opaque`; ingest drops xattrs) or, behind a gateway, a device file. The
    /// stream was stopped before it reached the repository.
    #[error("cannot ingest {dir}: {what}, which cvmfs_server ingest would silently drop; {advice}")]
    WouldDrop {
        /// The directory being ingested.
        dir: RepoPath,
        /// What was found.
        what: &'static str,
        /// What to do instead (never a setting already in effect).
        advice: &'static str,
    },
    /// `cvmfs_server list` does not show the repository.
    #[error("repository {repo} does not exist on this stratum 0 (not in `cvmfs_server list`)")]
    NoSuchRepository {
        /// The repository name.
        repo: String,
    },
    /// The transaction's lease lock could not be taken.
    #[error("cannot lock lease {lease}")]
    Lock {
        /// The lease.
        lease: RepoPath,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The tar stream given to a `cvmfs` transaction could not be read or rewritten.
    #[error("cannot stage the tar stream for {dir}")]
    Tar {
        /// The directory being ingested.
        dir: RepoPath,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The tar stream holds an entry that cannot be real (a size that overflows when padded).
    #[error("cannot ingest {dir}: the tar stream is malformed ({reason})")]
    MalformedTar {
        /// The directory being ingested.
        dir: RepoPath,
        /// What is wrong.
        reason: &'static str,
    },
    /// A `cvmfs` transaction cannot write `path` again: the tar it is building already holds it,
    /// and one ingest cannot carry a path twice.
    #[error("{path} is already part of this transaction's ingest and cannot be written again")]
    AlreadyStaged {
        /// The path.
        path: RepoPath,
    },
    /// `cvmfs_server ingest` needs a base directory below the repository root; a lease on the
    /// root or a top-level file has none.
    #[error(
        "cannot publish {path} through cvmfs_server ingest: it needs a lease below a top-level directory"
    )]
    NoIngestBase {
        /// The path.
        path: RepoPath,
    },
    /// A repository JSON file (such as `origin.json`) exists but cannot be read or parsed; it is
    /// never overwritten with what could be read of it.
    #[error("cannot read {path}: {reason}")]
    CorruptFile {
        /// The published file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A journal of an interrupted commit could not be read.
    #[error("unreadable commit journal {path}")]
    Journal {
        /// The journal file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

pub(crate) fn io_err(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> PublishError {
    let path = path.into();
    move |source| PublishError::Io {
        action,
        path,
        source,
    }
}
