//! The client: one value, cheap to clone and share between threads, that talks to any number of
//! registries.

use std::io::Read;
use std::sync::Arc;

use oci_spec::image::Digest;

use crate::blob::BlobReader;
use crate::digest::{Hasher, sha256_digest};
use crate::error::{Error, ErrorKind};
use crate::manifest::{
    FetchedConfig, FetchedManifest, Manifest, ManifestMediaType, ManifestSelection,
    choose_platform, parse_manifest,
};
use crate::name::{Reference, Repository};
use crate::options::ClientOptions;
use crate::transport::{Access, Endpoint, Req};
use ducc_oci::Platform;
use ducc_oci::{BlobDigest, ConfigDigest, ImageRef};

/// What [`Client::push_blob`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobPush {
    /// The registry already had the blob (`HEAD` said so); nothing was sent.
    AlreadyPresent,
    /// The blob was uploaded.
    Uploaded,
}

/// A blocking OCI distribution client.
///
/// Every method authenticates as the registry asks (anonymous, Basic, Bearer token with the
/// right scope), retries per the [`crate::RetryPolicy`], verifies digests, and returns errors
/// that name the registry, repository and request.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<crate::transport::Transport>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// A client with these options.
    pub fn new(options: ClientOptions) -> Self {
        Client {
            inner: Arc::new(crate::transport::Transport::new(options)),
        }
    }

    /// Fetches the manifest `image` names (its digest when it has one, else its tag).
    ///
    /// With [`ManifestSelection::Platform`], an index (or Docker manifest list) is resolved to
    /// the entry for that platform, which is fetched by digest; an image manifest is returned as
    /// served. With [`ManifestSelection::Index`], the document is returned as served, whatever
    /// it is. The bytes are checked against the reference's digest (when it has one), against
    /// `Docker-Content-Digest` (when sent), and against the index entry's digest and size.
    ///
    /// # Errors
    /// Among others: [`ErrorKind::NotFound`], [`ErrorKind::UnsupportedMediaType`] (schema1 or
    /// anything not OCI/Docker v2), [`ErrorKind::AmbiguousManifest`],
    /// [`ErrorKind::PlatformNotFound`], [`ErrorKind::DigestMismatch`], auth and network errors.
    pub fn fetch_manifest(
        &self,
        image: &ImageRef,
        selection: &ManifestSelection,
    ) -> Result<FetchedManifest, Error> {
        self.fetch_manifest_at(&Repository::of(image), &Reference::of(image)?, selection)
    }

    /// [`Client::fetch_manifest`] of the manifest `reference` names in `repository` (another
    /// manifest of an image's repository: an index entry by digest, a signature's tag).
    ///
    /// # Errors
    /// As [`Client::fetch_manifest`].
    pub fn fetch_manifest_at(
        &self,
        repository: &Repository,
        reference: &Reference,
        selection: &ManifestSelection,
    ) -> Result<FetchedManifest, Error> {
        let endpoint = self.inner.endpoint(repository);
        let (bytes, media_type, manifest, digest) = self.get_manifest(
            &endpoint,
            &reference.url_part(),
            reference.digest_value(),
            None,
        )?;
        let (index, platform) = match (&manifest, selection) {
            (Manifest::Index(index), ManifestSelection::Platform(platform)) => (index, platform),
            _ => {
                return Ok(FetchedManifest {
                    bytes,
                    media_type,
                    digest,
                    manifest,
                    index_digest: None,
                    platform: None,
                });
            }
        };
        let entry = choose_platform(index, platform).map_err(|e| endpoint.context(e))?;
        let entry_platform = entry.platform().as_ref().map(Platform::from_oci);
        let (bytes, media_type, manifest, entry_digest) = self.get_manifest(
            &endpoint,
            entry.digest().as_ref(),
            Some(entry.digest()),
            Some(entry.size()),
        )?;
        if let Manifest::Index(_) = manifest {
            return Err(endpoint.context(Error::new(ErrorKind::InvalidManifest {
                detail: format!(
                    "index entry {} for {platform} is itself an index",
                    entry.digest()
                ),
            })));
        }
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest: entry_digest,
            manifest,
            index_digest: Some(digest),
            platform: entry_platform,
        })
    }

    /// Fetches, verifies and parses the image config blob `digest` of `size` bytes (as the
    /// manifest's config descriptor gives them).
    ///
    /// # Errors
    /// Network and auth errors, [`ErrorKind::DigestMismatch`], [`ErrorKind::SizeMismatch`],
    /// [`ErrorKind::TooLarge`], [`ErrorKind::InvalidConfig`].
    pub fn fetch_config(
        &self,
        repository: &Repository,
        digest: &ConfigDigest,
        size: u64,
    ) -> Result<FetchedConfig, Error> {
        let endpoint = self.inner.endpoint(repository);
        let limit = self.inner.options.max_config_bytes;
        if size > limit {
            return Err(endpoint.context(
                Error::new(ErrorKind::TooLarge {
                    what: "image config",
                    limit,
                })
                .with_request("GET", &endpoint.url(&format!("blobs/{digest}"))),
            ));
        }
        // A config is a blob like any other in the registry's blob store.
        let blob = BlobDigest::from_sha256_bytes(*digest.sha256_bytes());
        let mut reader = self.open_blob(repository, &blob, Some(size))?;
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        reader
            .read_to_end(&mut bytes)
            .map_err(|e| blob_read_error(&endpoint, e))?;
        FetchedConfig::parse(bytes, *digest).map_err(|e| endpoint.context(e))
    }

    /// Opens a blob for streaming. The reader verifies size (when given) and digest as it goes
    /// and fails at end of stream on a mismatch; it follows redirects (credentials are only sent
    /// to the registry's own host) and resumes with `Range` after an interrupted read.
    ///
    /// # Errors
    /// Errors of the first request ([`ErrorKind::NotFound`], auth, network); later errors
    /// come from `read` as `io::Error`s that [`Error::from_io`] unwraps.
    pub fn open_blob(
        &self,
        repository: &Repository,
        digest: &BlobDigest,
        size: Option<u64>,
    ) -> Result<BlobReader, Error> {
        let endpoint = self.inner.endpoint(repository);
        BlobReader::open(self.inner.clone(), endpoint, *digest, size)
    }

    /// All tags of a repository, following `Link` pagination.
    ///
    /// # Errors
    /// Network and auth errors, [`ErrorKind::NotFound`], [`ErrorKind::InvalidResponse`].
    pub fn list_tags(&self, repository: &Repository) -> Result<Vec<String>, Error> {
        self.tags(repository, None)
    }

    /// All tags of a repository, asking for `page_size` per page (`?n=`), following `Link`.
    ///
    /// # Errors
    /// As [`Client::list_tags`].
    pub fn list_tags_paged(
        &self,
        repository: &Repository,
        page_size: u32,
    ) -> Result<Vec<String>, Error> {
        self.tags(repository, Some(page_size.max(1)))
    }

    /// Whether the repository has a blob (`HEAD`, with push scope since it precedes uploads).
    ///
    /// # Errors
    /// Network and auth errors; 404 is `Ok(false)`.
    pub fn blob_exists(&self, repository: &Repository, digest: &BlobDigest) -> Result<bool, Error> {
        let endpoint = self.inner.endpoint(repository);
        self.blob_exists_at(&endpoint, &Digest::from(digest))
    }

    /// Uploads a blob of known size from a reader, unless the registry has it already.
    /// Up to [`ClientOptions::monolithic_upload_limit`] it is one `POST` + `PUT`; larger blobs go
    /// in `PATCH` chunks. The data is hashed as it is sent and the upload is refused before the
    /// final `PUT` when it does not match `digest`.
    ///
    /// # Errors
    /// Network and auth errors, [`ErrorKind::UploadSource`] when `data` fails,
    /// [`ErrorKind::SizeMismatch`]/[`ErrorKind::DigestMismatch`] when `data` is not that blob.
    pub fn push_blob(
        &self,
        repository: &Repository,
        digest: &BlobDigest,
        size: u64,
        data: &mut dyn Read,
    ) -> Result<BlobPush, Error> {
        let endpoint = self.inner.endpoint(repository);
        crate::push::push_blob(&self.inner, &endpoint, &digest.into(), size, data, |d| {
            self.blob_exists_at(&endpoint, d)
        })
    }

    /// Uploads a manifest under a tag or digest, with its media type as `Content-Type`, and
    /// returns its digest (sha256 of `bytes`, checked against the registry's answer).
    ///
    /// # Errors
    /// Network and auth errors, [`ErrorKind::DigestMismatch`] when the registry reports another
    /// digest, and the registry's refusal (e.g. `MANIFEST_BLOB_UNKNOWN`) as
    /// [`ErrorKind::UnexpectedStatus`] with its codes.
    pub fn push_manifest(
        &self,
        repository: &Repository,
        reference: &Reference,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest, Error> {
        let endpoint = self.inner.endpoint(repository);
        crate::push::push_manifest(&self.inner, &endpoint, reference, media_type, bytes)
    }
}

/// Turns a blob reader's I/O error back into our error.
pub(crate) fn blob_read_error(endpoint: &Endpoint, err: std::io::Error) -> Error {
    match err.into_inner().map(|e| e.downcast::<Error>()) {
        Some(Ok(inner)) => endpoint.context(*inner),
        Some(Err(other)) => {
            endpoint.context(crate::transport::map_io_error(std::io::Error::other(other)))
        }
        None => endpoint.context(Error::new(ErrorKind::Transport).retryable(true)),
    }
}

impl Client {
    /// GETs one manifest and checks it: digest (when known), size (when known),
    /// `Docker-Content-Digest`, media type and shape.
    fn get_manifest(
        &self,
        endpoint: &Endpoint,
        url_part: &str,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<(Vec<u8>, ManifestMediaType, Manifest, Digest), Error> {
        let accept = ManifestMediaType::ALL
            .map(ManifestMediaType::as_str)
            .join(", ");
        let url = endpoint.url(&format!("manifests/{url_part}"));
        let limit = self.inner.options.max_manifest_bytes;
        if let Some(size) = expected_size
            && size > limit
        {
            // An index entry announcing a huge manifest: refuse before asking for it.
            return Err(endpoint.context(
                Error::new(ErrorKind::TooLarge {
                    what: "manifest or index",
                    limit,
                })
                .with_request("GET", &url),
            ));
        }
        let mut reply = self.inner.get_whole(
            endpoint,
            || Req::new("GET", url.clone()).header("accept", accept.clone()),
            "manifest or index",
            limit,
        )?;
        let (method, url) = (reply.method, reply.url.clone());
        let located = |e: Error| endpoint.context(e.with_request_if_missing(method, &url));
        let bytes = std::mem::take(&mut reply.body);
        if let Some(size) = expected_size
            && bytes.len() as u64 != size
        {
            return Err(located(Error::new(ErrorKind::SizeMismatch {
                expected: size,
                actual: bytes.len() as u64,
            })));
        }
        let digest = match expected {
            Some(expected) => {
                crate::digest::verify_bytes(&bytes, expected).map_err(located)?;
                expected.clone()
            }
            None => sha256_digest(&bytes),
        };
        // `Docker-Content-Digest` is only a hint; but when it is a digest we can check and it
        // disagrees, the bytes are not what the registry thinks it served.
        if let Some(announced) = reply.header("docker-content-digest")
            && let Ok(announced) = announced.trim().parse::<Digest>()
            && let Ok(mut hasher) = Hasher::for_digest(&announced)
        {
            hasher.update(&bytes);
            let actual = hasher.finish();
            if actual != announced.to_string() {
                return Err(located(Error::new(ErrorKind::DigestMismatch {
                    expected: announced.to_string(),
                    actual,
                })));
            }
        }
        let (media_type, manifest) =
            parse_manifest(&bytes, reply.header("content-type")).map_err(located)?;
        Ok((bytes, media_type, manifest, digest))
    }

    fn blob_exists_at(&self, endpoint: &Endpoint, digest: &Digest) -> Result<bool, Error> {
        let url = endpoint.url(&format!("blobs/{digest}"));
        let reply = self
            .inner
            .send(endpoint, Access::Push, Req::new("HEAD", url))?;
        match reply.status() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(endpoint.context(reply.into_error())),
        }
    }

    fn tags(&self, repository: &Repository, page_size: Option<u32>) -> Result<Vec<String>, Error> {
        #[derive(serde::Deserialize)]
        struct TagPage {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        /// A repository with more pages than this is treated as a registry loop.
        const MAX_PAGES: usize = 100_000;
        let endpoint = self.inner.endpoint(repository);
        let mut url = endpoint.url("tags/list");
        if let Some(n) = page_size {
            url.push_str(&format!("?n={n}"));
        }
        let mut tags = Vec::new();
        let mut seen_urls = std::collections::HashSet::new();
        for _ in 0..MAX_PAGES {
            if !seen_urls.insert(url.clone()) {
                return Err(endpoint.context(
                    Error::new(ErrorKind::InvalidResponse {
                        detail: "tag list pagination loops".to_owned(),
                    })
                    .with_request("GET", &url),
                ));
            }
            let reply = self.inner.get_whole(
                &endpoint,
                || Req::new("GET", url.clone()),
                "tag list page",
                self.inner.options.max_manifest_bytes,
            )?;
            let next = reply.header("link").map(str::to_owned);
            let (method, reply_url) = (reply.method, reply.url.clone());
            let page: TagPage = serde_json::from_slice(&reply.body).map_err(|e| {
                endpoint.context(
                    Error::new(ErrorKind::InvalidResponse {
                        detail: "tag list is not JSON {\"tags\": [...]}".to_owned(),
                    })
                    .with_request(method, &reply_url)
                    .with_source(e),
                )
            })?;
            tags.extend(page.tags.unwrap_or_default());
            match next {
                None => return Ok(tags),
                Some(link) => {
                    let target = crate::link::next_link(&link);
                    match target {
                        Some(target) => url = crate::transport::resolve_url(&reply_url, &target),
                        None => return Ok(tags),
                    }
                }
            }
        }
        Err(endpoint.context(Error::new(ErrorKind::InvalidResponse {
            detail: format!("tag list has more than {MAX_PAGES} pages"),
        })))
    }
}
