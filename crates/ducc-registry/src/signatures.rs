//! Reading the signatures cosign stores beside an image: the `sha256-<hex>.sig` tag (one layer
//! per signature: the simple-signing payload, its signature in an annotation) and the OCI 1.1
//! referrers of the digest (the `referrers` API, else its fallback tag `sha256-<hex>`) whose
//! artifacts are sigstore bundles.
//!
//! Everything goes through the same requests as manifests and blobs: the same credentials and
//! origin rules, and the manifest size limit for every document and signature blob. Nothing is
//! verified here (that is the policy's job, offline); only digests of what is fetched.

use std::io::Read;

use oci_spec::image::{Descriptor, Digest, ImageIndex, ImageManifest};

use crate::client::Client;
use crate::error::{Error, ErrorKind};
use crate::manifest::{Manifest, ManifestSelection};
use crate::name::{Reference, Repository};
use crate::transport::Req;

/// Media type of a cosign simple-signing payload layer.
const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The annotation holding a payload layer's signature.
const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// Media types (and artifact types) of a sigstore bundle v0.3.
const BUNDLE_TYPES: [&str; 2] = [
    "application/vnd.dev.sigstore.bundle.v0.3+json",
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
];
/// At most this many signatures are read per place: a registry listing more is not believed
/// (each one costs requests).
const MAX_SIGNATURES: usize = 64;

/// The bytes of signature blobs still allowed for one digest: all of them together stay within
/// the manifest size limit, so a registry cannot make ducc hold more than that in memory.
struct Budget(u64);

/// One signature stored for a manifest digest, not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoredSignature {
    /// A layer of the `.sig` tag.
    Tagged {
        /// `<tag> layer <n>`.
        source: String,
        /// The simple-signing payload (the layer blob).
        payload: Vec<u8>,
        /// The base64 signature annotation; `None` when the layer has none.
        signature: Option<String>,
    },
    /// A referrer holding a sigstore bundle.
    Bundle {
        /// `referrer <digest>`.
        source: String,
        /// The bundle JSON.
        bundle: Vec<u8>,
        /// A simple-signing payload layer stored beside the bundle, if any.
        payload: Option<Vec<u8>>,
    },
    /// Something stored as a signature that is not one (a referrer without a bundle layer).
    Malformed {
        /// Where it was found.
        source: String,
        /// What is wrong with it.
        detail: String,
    },
}

impl Client {
    /// The signatures stored for `digest` in `repository`: the `.sig` tag's layers, then the
    /// bundles among the digest's referrers (the API, or the fallback tag when the registry has
    /// no referrers API). No signature at all is an empty list.
    ///
    /// # Errors
    /// Network and auth errors, [`ErrorKind::TooLarge`] for an oversized document or signature
    /// blob, [`ErrorKind::DigestMismatch`], [`ErrorKind::InvalidManifest`] for a `.sig` tag
    /// that is an index.
    pub fn fetch_signatures(
        &self,
        repository: &Repository,
        digest: &Digest,
    ) -> Result<Vec<StoredSignature>, Error> {
        let mut budget = Budget(self.inner.options.max_manifest_bytes);
        let mut found = self.tagged_signatures(repository, digest, &mut budget)?;
        found.extend(self.bundle_signatures(repository, digest, &mut budget)?);
        Ok(found)
    }

    /// The `<algorithm>-<hex>.sig` tag's payload layers.
    fn tagged_signatures(
        &self,
        repository: &Repository,
        digest: &Digest,
        budget: &mut Budget,
    ) -> Result<Vec<StoredSignature>, Error> {
        let tag = format!("{}.sig", fallback_tag(digest));
        let Some(manifest) = self.optional_manifest(repository, Reference::tag(&tag)?)? else {
            return Ok(Vec::new());
        };
        let Manifest::Image(manifest) = manifest else {
            return Err(self.inner.endpoint(repository).context(Error::new(
                ErrorKind::InvalidManifest {
                    detail: format!("signature tag {tag} is an index"),
                },
            )));
        };
        let mut found = Vec::new();
        for (n, layer) in manifest.layers().iter().take(MAX_SIGNATURES).enumerate() {
            if layer.media_type().to_string() != SIMPLE_SIGNING {
                continue;
            }
            let payload = self.small_blob(repository, layer, budget)?;
            let signature = layer
                .annotations()
                .as_ref()
                .and_then(|a| a.get(SIGNATURE_ANNOTATION))
                .cloned();
            found.push(StoredSignature::Tagged {
                source: format!("{tag} layer {n}"),
                payload,
                signature,
            });
        }
        Ok(found)
    }

    /// The bundles among the referrers of `digest`.
    fn bundle_signatures(
        &self,
        repository: &Repository,
        digest: &Digest,
        budget: &mut Budget,
    ) -> Result<Vec<StoredSignature>, Error> {
        let Some(index) = self.referrers(repository, digest)? else {
            return Ok(Vec::new());
        };
        let mut found = Vec::new();
        let bundles = index.manifests().iter().filter(|d| {
            d.artifact_type()
                .as_ref()
                .is_some_and(|t| BUNDLE_TYPES.contains(&t.to_string().as_str()))
        });
        for descriptor in bundles.take(MAX_SIGNATURES) {
            let source = format!("referrer {}", descriptor.digest());
            let fetched = self.fetch_manifest_at(
                repository,
                &Reference::digest(descriptor.digest().clone()),
                &ManifestSelection::Index,
            )?;
            let Some(manifest) = fetched.image_manifest() else {
                found.push(malformed(source, "it is an index"));
                continue;
            };
            if manifest.subject().as_ref().map(Descriptor::digest) != Some(digest) {
                // A fallback tag may list anything; only artifacts about this digest count.
                found.push(malformed(source, "its subject is another digest"));
                continue;
            }
            found.push(self.bundle_artifact(repository, source, manifest, budget)?);
        }
        Ok(found)
    }

    fn bundle_artifact(
        &self,
        repository: &Repository,
        source: String,
        manifest: &ImageManifest,
        budget: &mut Budget,
    ) -> Result<StoredSignature, Error> {
        let layer_of = |types: &[&str]| {
            manifest
                .layers()
                .iter()
                .find(|l| types.contains(&l.media_type().to_string().as_str()))
        };
        let Some(bundle) = layer_of(&BUNDLE_TYPES) else {
            return Ok(malformed(source, "it has no sigstore bundle layer"));
        };
        let bundle = self.small_blob(repository, bundle, budget)?;
        let payload = match layer_of(&[SIMPLE_SIGNING]) {
            Some(layer) => Some(self.small_blob(repository, layer, budget)?),
            None => None,
        };
        Ok(StoredSignature::Bundle {
            source,
            bundle,
            payload,
        })
    }

    /// The referrers index of `digest`: the API when the registry has it, else the fallback
    /// tag; `None` when neither exists.
    fn referrers(
        &self,
        repository: &Repository,
        digest: &Digest,
    ) -> Result<Option<ImageIndex>, Error> {
        let endpoint = self.inner.endpoint(repository);
        let url = endpoint.url(&format!("referrers/{digest}"));
        let limit = self.inner.options.max_manifest_bytes;
        let answer = self.inner.get_whole(
            &endpoint,
            || {
                Req::new("GET", url.clone()).header(
                    "accept",
                    "application/vnd.oci.image.index.v1+json".to_owned(),
                )
            },
            "referrers index",
            limit,
        );
        match answer {
            Ok(reply) => {
                let index: ImageIndex = serde_json::from_slice(&reply.body).map_err(|e| {
                    endpoint.context(
                        Error::new(ErrorKind::InvalidResponse {
                            detail: "the referrers answer is not an OCI index".to_owned(),
                        })
                        .with_request(reply.method, &reply.url)
                        .with_source(e),
                    )
                })?;
                Ok(Some(index))
            }
            // No referrers API (distribution answers 404, others 405 or 400): the fallback tag.
            Err(e)
                if matches!(e.kind(), ErrorKind::NotFound)
                    || matches!(e.status(), Some(400 | 405)) =>
            {
                let tag = Reference::tag(&fallback_tag(digest))?;
                match self.optional_manifest(repository, tag)? {
                    Some(Manifest::Index(index)) => Ok(Some(index)),
                    Some(Manifest::Image(_)) => {
                        Err(endpoint.context(Error::new(ErrorKind::InvalidManifest {
                            detail: format!(
                                "referrers fallback tag {} is not an index",
                                fallback_tag(digest)
                            ),
                        })))
                    }
                    None => Ok(None),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// A manifest as served, or `None` when the tag does not exist.
    fn optional_manifest(
        &self,
        repository: &Repository,
        reference: Reference,
    ) -> Result<Option<Manifest>, Error> {
        match self.fetch_manifest_at(repository, &reference, &ManifestSelection::Index) {
            Ok(fetched) => Ok(Some(fetched.manifest().clone())),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A signature blob, refused before it is asked for when it would take the signatures of
    /// the digest over the manifest size limit.
    fn small_blob(
        &self,
        repository: &Repository,
        descriptor: &Descriptor,
        budget: &mut Budget,
    ) -> Result<Vec<u8>, Error> {
        let endpoint = self.inner.endpoint(repository);
        let limit = self.inner.options.max_manifest_bytes;
        if descriptor.size() > budget.0 {
            return Err(endpoint.context(
                Error::new(ErrorKind::TooLarge {
                    what: "signature blobs of one digest",
                    limit,
                })
                .with_request(
                    "GET",
                    &endpoint.url(&format!("blobs/{}", descriptor.digest())),
                ),
            ));
        }
        budget.0 -= descriptor.size();
        let digest =
            crate::name::blob_digest(descriptor.digest()).map_err(|e| endpoint.context(e))?;
        let mut reader = self.open_blob(repository, &digest, Some(descriptor.size()))?;
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .map_err(|e| crate::client::blob_read_error(&endpoint, e))?;
        Ok(bytes)
    }
}

/// `sha256-<hex>`: how cosign and the referrers fallback name a digest in a tag.
fn fallback_tag(digest: &Digest) -> String {
    digest.to_string().replacen(':', "-", 1)
}

fn malformed(source: String, detail: &str) -> StoredSignature {
    StoredSignature::Malformed {
        source,
        detail: detail.to_owned(),
    }
}
