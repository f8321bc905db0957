//! Repository layout and publishers for ducc-rs.
//!
//! - [`Layout`] owns every path of the repository (SPEC section 3): typed digests in
//!   ([`ducc_oci::LayerDigest`], [`ducc_oci::ConfigDigest`]), [`RepoPath`]s out, upstream
//!   DUCC's names, under an optional `cvmfs_repo` subdir ([`Layout::of`] a
//!   [`ducc_oci::RepositoryName`]). [`Origin`], [`LayerInfo`] and [`MarkerManifest`] are its
//!   JSON files.
//! - [`Publisher`] opens [`Transaction`]s scoped to a sub-path (a lease): ingest a tar stream
//!   into a directory, write a file, make a symlink, remove a path, then commit or abort;
//!   dropping an uncommitted transaction aborts it. Two transactions whose leases overlap never
//!   run at once on one host, across processes (`flock`); disjoint ones do.
//! - [`LocalPublisher`] publishes into a directory (staging plus atomic renames, crash safe);
//!   [`CvmfsPublisher`] drives `cvmfs_server` (transaction, ingest, publish, `abort -f`).
//! - [`lifecycle`]: what the repository records ([`lifecycle::Inventory`]), deleting images
//!   ([`lifecycle::delete_images`]) and garbage collection ([`lifecycle::collect_garbage`]).
//! - [`PodmanStore`] keeps `podmanStore/`, the podman additional image store: one image per
//!   converted image, whose single layer is its flat tree ([`PodmanImage`]).
//!
//! ```
//! use ducc_cvmfs::{IngestOptions, Layout, LocalPublisher, Publisher};
//! use ducc_oci::RepositoryName;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A layer as canonical tar (normally written by ducc-unpack).
//! let mut builder = tar::Builder::new(Vec::new());
//! let mut header = tar::Header::new_ustar();
//! header.set_size(5);
//! header.set_mode(0o644);
//! header.set_uid(0);
//! header.set_gid(0);
//! header.set_mtime(1_600_000_000);
//! builder.append_data(&mut header, "etc/motd", &b"hello"[..])?;
//! let tar = builder.into_inner()?;
//!
//! let root = tempfile::tempdir()?;
//! let repo = RepositoryName::parse("unpacked.example.org")?;
//! let layout = Layout::of(&repo);
//! let layer = format!("sha256:{}", "ab".repeat(32)).parse()?;
//! let publisher = LocalPublisher::open(root.path(), &repo)?;
//!
//! let mut tx = publisher.begin(&layout.layer_dir(&layer))?;
//! tx.ingest_tar(&layout.layerfs(&layer), &mut &tar[..], IngestOptions { catalog: true, ..Default::default() })?;
//! tx.commit()?;
//!
//! let motd = publisher.published_path(&layout.layerfs(&layer)).join("etc/motd");
//! assert_eq!(std::fs::read(motd)?, b"hello");
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod cvmfs;
mod error;
mod graft;
mod guard;
mod layout;
pub mod lifecycle;
mod local;
mod lock;
mod metadata;
mod podman;
mod publisher;
mod state;

pub use cvmfs::{CvmfsOptions, CvmfsPublisher, GC_LOCK_EXPIRY};
pub use error::PublishError;
pub use layout::{
    ARCH_ALIASES, Arch, CATALOG_MARKER, Layout, PathError, PublicName, RepoPath, relative_target,
};
pub use local::LocalPublisher;
pub use metadata::{
    DroppedEntry, DroppedRecord, LayerInfo, LayerWhiteouts, MarkerDescriptor, MarkerManifest,
    Origin,
};
pub use podman::{PodmanError, PodmanImage, PodmanOutcome, PodmanStore, StoredImage, tree_size};
pub use publisher::{
    FillError, FillHints, GcGuard, GcLock, Group, IngestOptions, OverlaySupport, PublishObserver,
    Published, Publisher, READ_LIMIT, RefreshPoint, Transaction, Ungrouped, add_origin,
    ensure_catalog_markers,
};
pub use state::{FlatRecord, ImageSlot, RepositoryState};
