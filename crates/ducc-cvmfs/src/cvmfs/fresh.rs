//! Reads that decide writes, made fresh behind a gateway (issue 30).
//!
//! Several publisher nodes may share a repository behind one gateway, and each node's
//! `/cvmfs/REPO` lags behind what the others published: it moves to the newest revision only at
//! the node's own `cvmfs_server transaction` (or `cvmfs_server mount`), and after such a repair
//! even the node's own gateway ingests leave it pinned where it was (reference:
//! cvmfs-gateway-behaviour.md, section 7). A file several images rewrite (a layer's
//! `origin.json`, the podman store's `images.json`) read from that view and written back would
//! drop what other nodes added meanwhile, and a layer another node just published would be
//! written again.
//!
//! So behind a gateway, with the repository mounted here, a transaction whose read reaches the
//! published tree ([`crate::Transaction::read_file`], [`crate::Transaction::read_link`]) first
//! opens its server transaction on its lease (`cvmfs_server transaction REPO/LEASE`, which
//! remounts the node to the newest revision, retried with backoff while another node holds an
//! overlapping lease: rc 16), then reads through the mount: the read sees everything published
//! before it, and nobody else can publish below the lease until this transaction's commit
//! writes its unit through the mount and publishes it (`cvmfs_server publish`). Before opening
//! it, the transaction's group publishes what it holds, so a node never waits for a lease while
//! holding another, and never has two server transactions open (it cannot: rc 17).
//!
//! While such a transaction is open it holds this host's spool lock, so no other `cvmfs_server`
//! call of this process may run before its commit or abort (one that tries is an error, not a
//! deadlock). A run killed meanwhile leaves the `in-flight` record, and the next run aborts the
//! transaction it left open (as for every mounted transaction). A unit holding a tar stream
//! ([`crate::Transaction::ingest_tar`]) cannot go through the mount: its server transaction is
//! aborted at commit and the unit published as before (its reads were fresh, but the lease was
//! not held until its publish).

use std::ffi::OsString;
use std::fs;
use std::sync::atomic::Ordering;

use super::{CvmfsPublisher, TreeSource, Unit};
use crate::error::{PublishError, io_err};
use crate::graft::GraftReport;
use crate::layout::RepoPath;
use crate::lock::FileLock;

/// A server transaction a read opened on a transaction's lease, held until its unit is
/// published through the mount; dropped unpublished, it is aborted (`abort -f`).
#[derive(Debug)]
pub(super) struct Fresh<'a> {
    publisher: &'a CvmfsPublisher,
    /// `REPO/LEASE` as given to `cvmfs_server transaction`.
    target: String,
    /// Whether it was published or aborted already.
    closed: bool,
    // Released last (after the abort of a dropped one).
    _spool: FileLock,
}

impl CvmfsPublisher {
    /// Whether reads that decide writes go through a server transaction on their lease: behind
    /// a gateway, with the repository mounted here.
    pub(super) fn reads_fresh(&self) -> bool {
        self.gateway && self.mounted
    }

    /// What `cvmfs_server transaction` is given for `lease`: a gateway leases a path only below
    /// an existing directory (scenario 1), so the first missing ancestor is leased instead and
    /// the writes create the rest.
    pub(super) fn transaction_target(&self, lease: &RepoPath) -> String {
        let lease = lease
            .ancestors()
            .into_iter()
            .find(|a| !self.is_dir(a))
            .unwrap_or_else(|| lease.clone());
        if lease.is_root() {
            self.repo.clone()
        } else {
            format!("{}/{}", self.repo, lease.as_str())
        }
    }

    /// Opens the server transaction on `lease` (see the module documentation): afterwards this
    /// node's mount shows the newest revision and no other node can publish below `lease`.
    pub(super) fn open_fresh(&self, lease: &RepoPath) -> Result<Fresh<'_>, PublishError> {
        let spool = self.spool_lock()?;
        let target = self.transaction_target(lease);
        // Recorded before the transaction opens: a run killed from here on leaves the record,
        // and the next one aborts what it left open.
        let record = self.in_flight_path();
        let text = format!(
            "{} transaction {target} (fresh reads)\n",
            std::process::id()
        );
        fs::write(&record, text).map_err(io_err("write", record.as_path()))?;
        let args: Vec<OsString> = vec!["transaction".into(), target.clone().into()];
        if let Err(e) = self.run_busy_retry(&target, &mut || self.run(&args)) {
            let _ = fs::remove_file(&record);
            return Err(e);
        }
        self.fresh_open.store(true, Ordering::SeqCst);
        tracing::debug!(repo = %self.repo, %target, "transaction opened for fresh reads");
        Ok(Fresh {
            publisher: self,
            target,
            closed: false,
            _spool: spool,
        })
    }
}

impl Fresh<'_> {
    /// Whether `unit` can be published through this transaction's mount.
    pub(super) fn can_publish(unit: &Unit) -> bool {
        !unit
            .trees
            .iter()
            .any(|t| matches!(t.source, TreeSource::Tar(_)))
    }

    /// Writes `unit` through the mount and publishes it; on any failure the transaction is
    /// aborted (`abort -f`) and nothing of it is published.
    pub(super) fn publish(self, unit: &Unit) -> Result<GraftReport, PublishError> {
        let publisher = self.publisher;
        let mut report = GraftReport::default();
        self.publish_with(|| {
            report = publisher.write_units(std::slice::from_ref(unit))?;
            Ok(())
        })?;
        Ok(report)
    }

    /// Lets `write` write through the mount, then publishes; on any failure the transaction is
    /// aborted (`abort -f`) and nothing of it is published.
    pub(super) fn publish_with(
        mut self,
        write: impl FnOnce() -> Result<(), PublishError>,
    ) -> Result<(), PublishError> {
        let publisher = self.publisher;
        // On an error, dropping `self` aborts it.
        write()?;
        publisher.run_recorded(&["publish".into(), publisher.repo.clone().into()], true)?;
        publisher.published_here();
        self.closed = true;
        publisher.fresh_open.store(false, Ordering::SeqCst);
        tracing::debug!(repo = %publisher.repo, target = %self.target, "published the transaction of fresh reads");
        Ok(())
    }

    /// Aborts the transaction (`abort -f`): nothing of it is published.
    pub(super) fn abort(mut self) -> Result<(), PublishError> {
        self.close()
    }

    fn close(&mut self) -> Result<(), PublishError> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let publisher = self.publisher;
        let aborted = publisher.run(&["abort".into(), "-f".into(), publisher.repo.clone().into()]);
        publisher.fresh_open.store(false, Ordering::SeqCst);
        let record = publisher.in_flight_path();
        if let Err(e) = fs::remove_file(&record)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(io_err("remove", record)(e));
        }
        aborted.map(|_| ())
    }
}

impl Drop for Fresh<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::warn!(repo = %self.publisher.repo, target = %self.target, error = %e, "abort of a transaction of fresh reads did not succeed");
        }
    }
}
