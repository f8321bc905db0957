//! Taking images out of a repository and reclaiming what no image uses (issue 15).
//!
//! - [`Inventory`] lists the images a repository records, by public name: their markers (plain,
//!   or one per platform under `.metadata/.multiarch/<arch>/`), their public symlinks and
//!   `.multiarch/<arch>/` links, read from the published tree.
//! - [`delete_images`] removes images' markers, then their links and podman names: the marker
//!   goes first, so a run killed in between leaves an image that is no longer "converted" (the
//!   next convert repairs it) and that [`Inventory`] still finds by its link (the next delete
//!   finishes it). Content (layers, flat trees, podman entries) is left to the gc.
//! - [`Listing`] is what `ducc list` shows: each converted image with its digests, time,
//!   platforms, flat-tree size, layers (how many shared), signature state and dropped entries,
//!   and each layer with the images that use it; read only, no lock taken.
//! - [`collect_garbage`] marks what the recorded images reach (markers' manifests, links' flat
//!   trees and their [`crate::FlatRecord`]s, podman entries of live configs) and sweeps the
//!   rest: `.layers/<hh>/<hex>`, `.flat/<hh>/<cfg>` and podman store images, plus what dead
//!   processes left in the publisher's state directory.
//!
//! # The grace period
//! A piece goes only after it has been unreferenced for the grace period, counted from the first
//! gc that found it unreferenced; that gc records it in `.metadata/.gc/pending.json` with the
//! time and (for a layer) the configs its `origin.json` listed. Upstream DUCC's gc has no grace
//! period of its own (`0`) and judges by the content's mtime; counting from the first sighting
//! means a layer unpacked long ago and dropped today still gets its full period, and a layer
//! that a conversion (on any publisher node) starts using again in the meantime is kept: its
//! `origin.json` gains a config, which resets its record.
//!
//! # Conversions running meanwhile
//! On one host a gc and the conversions are kept apart by [`crate::Publisher::gc_lock`]: a
//! conversion holds it shared from its "already converted" check to its marker, a gc holds it
//! exclusive from its mark to its last removal, so what a running convert is writing or reusing
//! is never removed. Conversions on other publisher nodes (a gateway) are not held off by that
//! lock: there the grace period protects them (keep it longer than a conversion takes), and the
//! sweep re-reads each layer's `origin.json` inside the lease that removes it (behind a gateway
//! at the newest revision: the node's own view lags). Behind a gateway a gc also holds a lock in
//! the repository itself, `.metadata/.gc/lock.json` (host, pid, start), taken and released each
//! inside a lease of its own, so two gcs on two nodes never run at once: the second refuses
//! ([`crate::PublishError::GcRunning`]); a dead holder's record is taken over (see the cvmfs
//! publisher's `gc_lock`).
//!
//! # Publishes
//! Removals are grouped by lease: one transaction for the markers, one per registry for the
//! links, one for `.flat`, one for `.layers` (with the kept layers' `origin.json` rewrites), one
//! for the podman store and one or two for the gc record. Through `cvmfs_server` a stratum 0
//! takes up to 200 paths per `ingest --delete`, so a gc of 1,000 layers is a handful of
//! revisions; a gateway takes one path per call, so directories whose whole content goes are
//! removed as one path (a `.layers/<hh>` shard, a repository directory of links).

mod delete;
mod gc;
mod inventory;
mod listing;

use std::path::PathBuf;

pub use delete::{DeletePlan, DeleteReport, delete_images, plan_delete};
pub use gc::{GcOptions, GcReport, Piece, PieceKind, collect_garbage};
pub use inventory::{Inventory, RecordedImage};
pub use listing::{
    DROPPED_FILE, ListedImage, ListedLayer, ListedPlatform, Listing, SIGNATURE_FILE, SignatureState,
};

use crate::error::PublishError;
use crate::podman::PodmanError;

/// What went wrong while deleting or collecting; each variant names the file or the piece.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LifecycleError {
    /// A publisher operation failed.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The podman store could not be read or changed.
    #[error(transparent)]
    Podman(#[from] PodmanError),
    /// A directory of the published tree could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The directory or file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A record that says what is in use cannot be read: nothing is removed while it is not
    /// understood (it would decide what goes).
    #[error("cannot read {path}: {reason}; nothing was removed (fix or remove the file)")]
    CorruptRecord {
        /// The marker, flat-tree record or gc record.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn read_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> LifecycleError + '_ {
    move |source| LifecycleError::Read {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests;
