//! Pushing a thin image with the registry client, and the push credentials.

use ducc_oci::{BlobDigest, ManifestDigest};
use ducc_registry::oci_spec::image::Digest;
use ducc_registry::{BlobPush, Client, ErrorKind, ManifestSelection, Reference, Repository};

use crate::error::ThinError;
use crate::image::{ThinBlob, ThinImage};
use crate::index::ThinIndex;

/// What [`push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// The tag already pointed at this very manifest: nothing was sent.
    AlreadyPresent,
    /// The manifest was pushed (blobs only where the registry lacked them).
    Pushed {
        /// Blobs uploaded (0 to 2).
        blobs_uploaded: u8,
    },
}

/// Pushes `image` to `repository` under `tag`, unless the tag already names the same manifest.
///
/// Blobs the registry already has are not sent again (the client asks with `HEAD` first); the
/// manifest goes last, so a failed push never leaves the tag pointing at a half-pushed image.
///
/// # Errors
/// [`ThinError::Push`] with the registry's error for the step that failed, or
/// [`ThinError::DigestChanged`] when the registry stored other bytes than those built.
pub fn push(
    client: &Client,
    repository: &Repository,
    tag: &str,
    image: &ThinImage,
) -> Result<PushOutcome, ThinError> {
    let target = Target::new(repository, tag)?;
    if target.already_names(client, &image.manifest.digest)? {
        return Ok(PushOutcome::AlreadyPresent);
    }
    let blobs_uploaded = target.push_image(client, image, &target.reference)?;
    tracing::info!(image = %target.name, digest = %image.manifest.digest, "thin image pushed");
    Ok(PushOutcome::Pushed { blobs_uploaded })
}

/// Pushes the thin index of a multi-platform image to `repository` under `tag`, unless the tag
/// already names the same index: each platform's thin image first (by digest, blobs only where
/// missing), then the index, so the tag never points at an index with a missing entry.
///
/// # Errors
/// As [`push`].
pub fn push_index(
    client: &Client,
    repository: &Repository,
    tag: &str,
    index: &ThinIndex,
) -> Result<PushOutcome, ThinError> {
    let target = Target::new(repository, tag)?;
    if target.already_names(client, &index.manifest.digest)? {
        return Ok(PushOutcome::AlreadyPresent);
    }
    let mut blobs_uploaded = 0;
    for (_, image) in &index.images {
        let digest = Digest::from(image.manifest.digest);
        blobs_uploaded += target.push_image(client, image, &Reference::digest(digest))?;
    }
    target.push_manifest(client, &index.manifest, &target.reference)?;
    tracing::info!(image = %target.name, digest = %index.manifest.digest, "thin index pushed");
    Ok(PushOutcome::Pushed { blobs_uploaded })
}

/// Where a push goes.
struct Target<'r> {
    repository: &'r Repository,
    reference: Reference,
    name: String,
}

impl<'r> Target<'r> {
    fn new(repository: &'r Repository, tag: &str) -> Result<Self, ThinError> {
        let name = format!("{}/{}:{tag}", repository.registry(), repository.path());
        let reference = Reference::tag(tag).map_err(|source| ThinError::Name {
            image: name.clone(),
            source,
        })?;
        Ok(Self {
            repository,
            reference,
            name,
        })
    }

    fn fail(&self, step: &'static str) -> impl Fn(ducc_registry::Error) -> ThinError + use<> {
        let image = self.name.clone();
        move |source| ThinError::Push {
            image: image.clone(),
            step,
            source,
        }
    }

    /// Whether the tag already names `digest`.
    fn already_names(&self, client: &Client, digest: &ManifestDigest) -> Result<bool, ThinError> {
        let existing =
            client.fetch_manifest_at(self.repository, &self.reference, &ManifestSelection::Index);
        match existing {
            Ok(found) if digest == found.digest() => {
                tracing::debug!(image = %self.name, %digest, "thin image already in the registry");
                Ok(true)
            }
            Ok(_) => Ok(false),
            // Nothing there yet, or something we would replace anyway.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::NotFound
                        | ErrorKind::UnsupportedMediaType { .. }
                        | ErrorKind::InvalidManifest { .. }
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.fail("existing manifest check")(e)),
        }
    }

    /// The image's blobs, then its manifest under `reference`; the number of blobs uploaded.
    fn push_image(
        &self,
        client: &Client,
        image: &ThinImage,
        reference: &Reference,
    ) -> Result<u8, ThinError> {
        let mut blobs_uploaded = 0;
        let blobs = [
            (image.layer.digest, &image.layer.bytes, "layer"),
            // A config is a blob like any other in the registry's blob store.
            (
                BlobDigest::from_sha256_bytes(*image.config.digest.sha256_bytes()),
                &image.config.bytes,
                "config",
            ),
        ];
        for (digest, bytes, step) in blobs {
            if push_blob(client, self.repository, &digest, bytes).map_err(self.fail(step))?
                == BlobPush::Uploaded
            {
                blobs_uploaded += 1;
            }
        }
        self.push_manifest(client, &image.manifest, reference)?;
        Ok(blobs_uploaded)
    }

    fn push_manifest(
        &self,
        client: &Client,
        manifest: &ThinBlob<ManifestDigest>,
        reference: &Reference,
    ) -> Result<(), ThinError> {
        let stored = client
            .push_manifest(
                self.repository,
                reference,
                manifest.media_type,
                &manifest.bytes,
            )
            .map_err(self.fail("manifest"))?;
        if manifest.digest != stored {
            return Err(ThinError::DigestChanged {
                image: self.name.clone(),
                built: manifest.digest,
                stored,
            });
        }
        Ok(())
    }
}

fn push_blob(
    client: &Client,
    repository: &Repository,
    digest: &BlobDigest,
    bytes: &[u8],
) -> Result<BlobPush, ducc_registry::Error> {
    client.push_blob(repository, digest, bytes.len() as u64, &mut &bytes[..])
}
