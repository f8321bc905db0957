//! Where the engine reads images from: a small trait that the registry client implements, so
//! the engine's decisions (what to plan, which blobs to fetch, what is up to date) are the same
//! whatever serves the images, and can be tested with images held in memory.
//!
//! Only reads go through it. Thin images are pushed with a client of their own (with the login
//! of the wish list that names them), so a source never writes.

use std::io::Read;

use ducc_oci::{BlobDigest, ConfigDigest, ImageRef};
use ducc_registry::oci_spec::image::Digest;
use ducc_registry::{
    Client, FetchedConfig, FetchedManifest, ManifestSelection, Reference, Repository,
    StoredSignature,
};

use crate::error::ConvertError;

#[cfg(test)]
pub(crate) mod memory;

/// What the engine reads images through: tags, manifests, configs, blobs and signatures of a
/// repository. [`ducc_registry::Client`] is one (the registry, over HTTP).
///
/// Each method checks what it returns as the registry client does: a manifest, a config and the
/// end of a blob's stream are verified against their digests (a blob reader fails at its end
/// when size or digest do not match, so a reader read to its end has read a verified blob).
pub trait ImageSource: Send + Sync {
    /// All tags of `repository` (for a wish's tag glob).
    ///
    /// # Errors
    /// When the tags cannot be listed.
    fn list_tags(&self, repository: &Repository) -> Result<Vec<String>, ConvertError>;

    /// The manifest `reference` names in `repository`; with [`ManifestSelection::Platform`],
    /// an index resolved to the entry for that platform (see
    /// [`ducc_registry::Client::fetch_manifest`]).
    ///
    /// # Errors
    /// A missing manifest or platform, a document that is not a manifest, a digest mismatch.
    fn fetch_manifest(
        &self,
        repository: &Repository,
        reference: &Reference,
        selection: &ManifestSelection,
    ) -> Result<FetchedManifest, ConvertError>;

    /// The image config blob `digest` of `size` bytes, checked and parsed.
    ///
    /// # Errors
    /// A missing or oversized config, a digest mismatch, a config that does not parse.
    fn fetch_config(
        &self,
        repository: &Repository,
        digest: &ConfigDigest,
        size: u64,
    ) -> Result<FetchedConfig, ConvertError>;

    /// Blob `digest` of `size` bytes, opened for streaming; the reader fails at its end when
    /// the bytes are not that blob.
    ///
    /// # Errors
    /// When the blob cannot be opened (missing, auth, network); later failures come from `read`.
    fn open_blob(
        &self,
        repository: &Repository,
        digest: &BlobDigest,
        size: u64,
    ) -> Result<Box<dyn Read + Send>, ConvertError>;

    /// The signatures stored for manifest `digest` (cosign's tag and the referrers).
    ///
    /// # Errors
    /// When they cannot be read.
    fn fetch_signatures(
        &self,
        repository: &Repository,
        digest: &Digest,
    ) -> Result<Vec<StoredSignature>, ConvertError>;
}

/// The manifest `image` names (its digest when it has one, else its tag).
pub(crate) fn fetch_image_manifest(
    source: &dyn ImageSource,
    image: &ImageRef,
    selection: &ManifestSelection,
) -> Result<FetchedManifest, ConvertError> {
    source.fetch_manifest(&Repository::of(image), &Reference::of(image)?, selection)
}

impl ImageSource for Client {
    fn list_tags(&self, repository: &Repository) -> Result<Vec<String>, ConvertError> {
        Ok(Client::list_tags(self, repository)?)
    }

    fn fetch_manifest(
        &self,
        repository: &Repository,
        reference: &Reference,
        selection: &ManifestSelection,
    ) -> Result<FetchedManifest, ConvertError> {
        Ok(self.fetch_manifest_at(repository, reference, selection)?)
    }

    fn fetch_config(
        &self,
        repository: &Repository,
        digest: &ConfigDigest,
        size: u64,
    ) -> Result<FetchedConfig, ConvertError> {
        Ok(Client::fetch_config(self, repository, digest, size)?)
    }

    fn open_blob(
        &self,
        repository: &Repository,
        digest: &BlobDigest,
        size: u64,
    ) -> Result<Box<dyn Read + Send>, ConvertError> {
        Ok(Box::new(Client::open_blob(
            self,
            repository,
            digest,
            Some(size),
        )?))
    }

    fn fetch_signatures(
        &self,
        repository: &Repository,
        digest: &Digest,
    ) -> Result<Vec<StoredSignature>, ConvertError> {
        Ok(Client::fetch_signatures(self, repository, digest)?)
    }
}
