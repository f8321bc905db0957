//! Thin images for ducc-rs: the `thin.json` descriptor that points at layers unpacked in
//! CernVM-FS, the one-layer image that carries it, and its push, all without a Docker daemon.
//!
//! Upstream DUCC imported a tar into a local Docker daemon and pushed from there. Here the image
//! is built in memory (it is a few kilobytes: [`ThinImage::build`]), deterministically (the same
//! source image gives the same digest, run after run), and pushed with the ducc-registry client
//! ([`push`]), which skips whatever the registry already has.
//!
//! ```
//! use ducc_oci::ImageFormat;
//! use ducc_thin::{ThinDescriptor, ThinImage, ThinLayer};
//! use ducc_oci::LayerDigest;
//! use ducc_registry::oci_spec::image::ImageConfiguration;
//!
//! let source: ImageConfiguration = serde_json::from_str(
//!     r#"{"architecture":"amd64","os":"linux","config":{"Cmd":["bash"]},"rootfs":{"type":"layers","diff_ids":[]}}"#,
//! )?;
//! let layer = LayerDigest::from_hex(&"ab".repeat(32))?;
//! let layers = vec![ThinLayer::in_repository("unpacked.cern.ch", None, &layer)];
//! let thin = ThinDescriptor::new("https://registry.hub.docker.com/library/ubuntu:22.04", layers);
//! let image = ThinImage::build(&thin, &source, ImageFormat::DockerV2)?;
//! assert_eq!(image.manifest.digest, ducc_oci::ManifestDigest::of(&image.manifest.bytes));
//! // ducc_thin::push(&client, &repository, "22.04", &image)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod descriptor;
mod error;
mod image;
mod index;
mod push;

pub use descriptor::{THIN_VERSION, ThinDescriptor, ThinLayer};
pub use error::ThinError;
pub use image::{CVMFS_IMAGE_ENV, ThinBlob, ThinImage};
pub use index::ThinIndex;
pub use push::{PushOutcome, push, push_index};
