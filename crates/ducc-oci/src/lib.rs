//! The OCI vocabulary every ducc-rs crate shares: image references with one grammar, typed
//! sha256 digests, and platforms.
//!
//! A leaf crate: no network, no filesystem, no other ducc crate. The wish-list parser, the
//! registry client, the layer unpacker, the repository layout and the thin-image builder all
//! speak these types, so a reference is parsed once and a digest is never printed and parsed
//! again on its way from one crate to the next.
//!
//! - [`ImageRef`]: `[SCHEME://]REGISTRY/REPOSITORY[:TAG][@DIGEST]`, with a [`Scheme`], tag globs
//!   ([`Glob`]) and a [`ReferenceError`] that suggests the corrected form of common mistakes.
//! - [`BlobDigest`] (alias [`LayerDigest`]), [`DiffId`], [`ConfigDigest`], [`ManifestDigest`]:
//!   distinct `Copy` types, parsed from and shown as `sha256:<hex>` (also through serde), with
//!   [`From`]/[`TryFrom`] conversions to and from [`oci_spec::image::Digest`]; [`sha256`] and
//!   [`Sha256Hasher`] make them from content.
//! - [`Platform`]: `os/arch[/variant]`, matched against index entries as containerd normalises
//!   them.
//! - [`ImageFormat`]: Docker v2 schema 2 or OCI, with the media types of each.
//! - [`RepositoryName`]: the CernVM-FS repository (and optional sub-directory) a wish list's
//!   `cvmfs_repo` names, with a [`RepositoryNameError`] that says what is wrong.
//! - [`error_chain`]: an error and its causes on one line, the one printer every crate uses;
//!   [`is_root`]: the one root check.
//!
//! ```
//! use ducc_oci::{BlobDigest, ConfigDigest, ImageRef, Platform, Scheme};
//! use ducc_oci::oci_spec::image::Digest;
//!
//! let image = ImageRef::parse("http://localhost:5000/library/ubuntu:24.04")?;
//! assert_eq!(image.scheme(), Scheme::Http);
//! assert_eq!(image.simple_name(), "localhost:5000/library/ubuntu:24.04");
//! let err = ImageRef::parse("ubuntu:24.04").unwrap_err();
//! assert_eq!(err.suggestion(), Some("registry.hub.docker.com/library/ubuntu:24.04"));
//!
//! let config = ConfigDigest::parse(&format!("sha256:{}", "0f".repeat(32)))?;
//! assert_eq!(config.shard(), "0f");
//! let oci: Digest = config.into();
//! assert_eq!(oci.to_string(), config.to_string());
//! let layer = BlobDigest::try_from(&oci)?; // same bytes, now as a layer's digest
//! assert_eq!(layer.hex(), config.hex());
//!
//! let arm: Platform = "linux/arm64/v8".parse()?;
//! assert!(arm.matches(&"linux/aarch64".parse()?));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod chain;
mod digest;
mod format;
mod glob;
mod platform;
mod privileges;
mod reference;
mod repository;

pub use oci_spec;

pub use chain::{error_causes, error_chain};
pub use digest::{
    BlobDigest, ConfigDigest, DiffId, DigestError, DigestProblem, LayerDigest, ManifestDigest,
    Sha256Hasher, sha256,
};
pub use format::ImageFormat;
pub use glob::Glob;
pub use platform::{Platform, PlatformError};
pub use privileges::is_root;
pub use reference::{ImageRef, ReferenceError, ReferenceProblem, Scheme};
pub use repository::{RepositoryName, RepositoryNameError, RepositoryNameProblem};
