//! OCI distribution client for ducc-rs: authentication, manifests and platform choice, verified
//! blob streams, tag lists and push.
//!
//! Blocking and streaming, on `ureq` with rustls and no transparent decompression, so the bytes
//! hashed are the bytes served. Typed documents come from [`oci_spec`] (re-exported).
//!
//! - [`Client`] (built from [`ClientOptions`]) does the requests: [`Client::fetch_manifest`],
//!   [`Client::fetch_config`], [`Client::open_blob`], [`Client::list_tags`],
//!   [`Client::push_blob`], [`Client::push_manifest`], and [`Client::fetch_signatures`] (cosign's
//!   `.sig` tag and the referrers of a digest, read like manifests).
//! - Images are named by `ducc-oci`'s [`ducc_oci::ImageRef`], the one grammar of image names
//!   ([`Client::fetch_manifest`] takes one); [`Repository`] and [`Reference`] are the parts a
//!   request is made of ([`Repository::of`], [`Reference::of`]), for manifests that no image
//!   name names ([`Client::fetch_manifest_at`]: an index entry by digest, a signature tag).
//! - Digests: manifests are addressed through a [`Reference`], a tag or a digest of any
//!   algorithm the client verifies (sha256, sha384, sha512: an image may be pinned
//!   `@sha512:...`), as an [`oci_spec::image::Digest`]. Blobs (layers, configs) are addressed
//!   by `ducc-oci`'s sha256-only typed digests ([`ducc_oci::BlobDigest`],
//!   [`ducc_oci::ConfigDigest`]): [`Client::open_blob`], [`Client::blob_exists`],
//!   [`Client::push_blob`], [`Client::fetch_config`] and [`BlobReader::digest`], since the
//!   repository layout names them by sha256 hex; a descriptor of another algorithm fails to
//!   convert (`TryFrom`) before anything is downloaded.
//! - [`Credentials`] come from explicit logins, `DUCC_AUTH_REGISTRIES` and docker's
//!   `config.json`, read from an injectable [`Environment`].
//!   [`output_login`] is the login that pushes thin images (a wish list's `user` with
//!   `DUCC_OUTPUT_REGISTRY_PASS`).
//! - [`ManifestSelection`] (a [`ducc_oci::Platform`]) and [`choose_platform`] choose a manifest from an index.
//! - Every failure is an [`Error`] whose [`ErrorKind`] callers match on; it names the registry,
//!   repository and request, carries status and registry error codes, and says whether a retry
//!   may help.
//!
//! Credentials (Basic logins and tokens) only go to the registry's own origin (scheme, host and
//! port, normalised): a `Link`, `Location` or redirect to another origin is followed without them,
//! an upload session on another origin is refused, an https registry that points at plain http is
//! refused, and a token request carries only that registry's login, to the realm it names.
//!
//! ```
//! use ducc_registry::{Reference, Repository, ManifestSelection};
//! use ducc_oci::{ImageRef, Platform, Scheme};
//!
//! let image = ImageRef::parse("registry.example:5000/library/ubuntu:24.04").expect("valid");
//! let (repo, reference) = (Repository::of(&image), Reference::of(&image)?);
//! assert_eq!(repo, Repository::new(Scheme::Https, "registry.example:5000", "library/ubuntu")?);
//! let selection = ManifestSelection::Platform("linux/arm64/v8".parse::<Platform>()?);
//! assert_eq!(repo.registry(), "registry.example:5000");
//! assert_eq!(reference.url_part(), "24.04");
//! assert!(matches!(selection, ManifestSelection::Platform(p) if p.matches(&"linux/aarch64".parse()?)));
//!
//! // With a reachable registry:
//! // let client = ducc_registry::Client::new(ducc_registry::ClientOptions::new());
//! // let manifest = client.fetch_manifest(&image, &selection)?;
//! # Ok::<(), ducc_registry::Error>(())
//! ```
#![forbid(unsafe_code)]

mod auth;
mod blob;
mod client;
mod credentials;
mod digest;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod link;
mod manifest;
mod name;
mod options;
mod origin;
mod push;
mod redact;
mod retry;
mod signatures;
mod transport;

#[cfg(test)]
mod tests;

pub use oci_spec;

pub use blob::BlobReader;
pub use client::{BlobPush, Client};
pub use credentials::{
    Credentials, DEPRECATED_OUTPUT_PASSWORD_VARS, Environment, Login, OUTPUT_PASSWORD_VAR,
    PullThroughProxy, output_login,
};
pub use digest::{VerifyingReader, verify_bytes};
pub use error::{Error, ErrorKind, RegistryErrorCode, RequestInfo};
pub use manifest::{
    FetchedConfig, FetchedManifest, Manifest, ManifestMediaType, ManifestSelection,
    available_platforms, choose_platform,
};
pub use name::{Reference, Repository, parse_digest};
pub use options::{ClientOptions, DEFAULT_MAX_RETRY_AFTER, RetryPolicy};
pub use signatures::StoredSignature;
