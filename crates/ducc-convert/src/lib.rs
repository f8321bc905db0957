//! The ducc conversion engine: container images from OCI registries into a CernVM-FS
//! repository, as `ducc convert` does it, for any program.
//!
//! An [`Engine`] is set up once with a publisher (where the repository is written: a local
//! directory, or `cvmfs_server` transactions), registry credentials and [`Settings`]; it reads
//! images through an [`ImageSource`] (the registry client, or any other through
//! [`EngineBuilder::source`]). For each
//! image it fetches the manifest and config, skips the image when its marker records the same
//! config, downloads the layer blobs into a [`BlobCache`] (ahead of the decoding), decodes each
//! layer once into its layer directory and onto the flat root filesystem, sets the public
//! symlink, pushes the thin image and writes the marker last. Every write is a transaction of
//! the publisher on its own lease; a failure aborts the open one, so a failed image leaves no
//! marker and nothing half-published. With multi-arch settings each linux platform of an index
//! goes into `.multiarch/<arch>`.
//!
//! What happens is told as [`Event`]s to an [`EventSink`] (the CLI writes them as JSON lines
//! and draws progress bars from them); what came of each image is an [`ImageResult`], a
//! failure an [`ImageFailure`] naming its [`Step`] with a typed [`ConvertError`].
//!
//! Converting one image into a local directory (`./cvmfs/unpacked.example.org/`):
//!
//! ```no_run
//! use std::path::Path;
//!
//! use ducc_convert::{Engine, Settings, StopToken};
//! use ducc_cvmfs::LocalPublisher;
//! use ducc_oci::{ImageRef, RepositoryName};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let repo = RepositoryName::parse("unpacked.example.org")?;
//! let publisher = LocalPublisher::open(Path::new("./cvmfs"), &repo)?;
//! let engine = Engine::builder(Box::new(publisher), repo)
//!     .settings(Settings::new().skip_thin(true))
//!     .build()?;
//! let image = ImageRef::parse("https://registry.example.org/library/alpine:3.20")?;
//! for result in engine.convert_image(&image, None, &StopToken::new()) {
//!     match result.into_result() {
//!         Ok(outcome) => println!("converted: {outcome:?}"),
//!         Err(failure) => eprintln!("{failure}"),
//!     }
//! }
//! engine.clean_cache();
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod ahead;
mod batch;
mod bug;
mod cache;
mod dropped;
mod engine;
#[cfg(test)]
mod engine_tests;
mod error;
mod events;
mod image;
mod layers;
mod lifecycle;
mod listing;
mod notify;
mod plan;
mod pull;
mod session;
mod settings;
mod shard;
mod signature;
mod source;
mod summary;
mod whiteouts;

pub use batch::{BatchLimits, STAGED_LIMIT};
pub use cache::BlobCache;
pub use engine::{Engine, EngineBuilder, ImageResult, Outcome, StopToken};
pub use error::{ConvertError, ErrorKind, ImageFailure, Step};
pub use events::{DownloadObserver, EndStatus, Event, EventSink, NoEvents, Sinks};
pub use lifecycle::{DeleteOutcome, GcSummary, Protected, PruneOptions, PruneOutcome, human_bytes};
pub use listing::RepositoryListing;
pub use notify::NotificationFile;
pub use plan::{
    DownloadedManifest, Plan, PlanError, PublisherChoice, SignaturePolicy, UnpackInto, Unpacked,
};
pub use session::Session;
pub use settings::Settings;
pub use shard::{Shard, ShardError};
pub use signature::{check_signatures, verify_image};
pub use source::ImageSource;
pub use summary::Summary;
