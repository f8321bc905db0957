//! An [`ImageSource`] held in memory, for the engine's unit tests: images built from tiny tar
//! layers, and a record of what the engine read (manifests, configs, blobs), so a test can
//! assert which blobs were fetched and in which order.

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::sync::Mutex;

use ducc_oci::{BlobDigest, ConfigDigest, DiffId, Platform};
use ducc_registry::oci_spec::image::Digest;
use ducc_registry::{
    FetchedConfig, FetchedManifest, ManifestSelection, Reference, Repository, StoredSignature,
};

use super::ImageSource;
use crate::error::{ConvertError, ErrorKind};

pub(crate) const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub(crate) const FOREIGN: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/// A layer of a test image: an uncompressed tar (its blob digest is its diff_id), or a foreign
/// layer whose blob the source does not have.
#[derive(Clone)]
pub(crate) struct TestLayer {
    pub(crate) bytes: Vec<u8>,
    pub(crate) foreign: bool,
}

impl TestLayer {
    /// A tar holding the regular files `files` (path, content).
    pub(crate) fn files(files: &[(&str, &str)]) -> TestLayer {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, content) in files {
            let mut header = tar::Header::new_ustar();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mtime(1);
            builder
                .append_data(&mut header, path, content.as_bytes())
                .expect("a tar in memory");
        }
        TestLayer {
            bytes: builder.into_inner().expect("a tar in memory"),
            foreign: false,
        }
    }

    /// A foreign layer (a Windows base layer that lives elsewhere): never fetched.
    pub(crate) fn foreign(name: &str) -> TestLayer {
        TestLayer {
            bytes: name.as_bytes().to_vec(),
            foreign: true,
        }
    }

    pub(crate) fn digest(&self) -> BlobDigest {
        BlobDigest::of(&self.bytes)
    }
}

/// Images of one registry, in memory. Repositories are keyed by path (the registry host is
/// not looked at); manifests by tag and by digest.
#[derive(Default)]
pub(crate) struct InMemorySource {
    manifests: HashMap<(String, String), Vec<u8>>,
    tags: HashMap<String, Vec<String>>,
    blobs: HashMap<BlobDigest, Vec<u8>>,
    read: Mutex<Reads>,
}

/// What the engine read, in order.
#[derive(Default, Clone, Debug)]
pub(crate) struct Reads {
    /// Manifests fetched, by the reference asked for.
    pub(crate) manifests: Vec<String>,
    pub(crate) configs: Vec<ConfigDigest>,
    pub(crate) blobs: Vec<BlobDigest>,
}

impl InMemorySource {
    /// Adds an image manifest of `layers` (bottom first) for `platform` under `tag` of
    /// `repository` (none: reachable by digest only); returns its digest and config digest.
    pub(crate) fn add_image(
        &mut self,
        repository: &str,
        tag: Option<&str>,
        layers: &[TestLayer],
        platform: &str,
    ) -> (Digest, ConfigDigest) {
        let (os, architecture) = platform.split_once('/').expect("os/arch");
        let diff_ids: Vec<String> = layers
            .iter()
            .map(|l| DiffId::of(&l.bytes).to_string())
            .collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": architecture,
            "os": os,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "config": {"Env": ["PATH=/usr/bin"]},
        }))
        .expect("json");
        let config_digest = ConfigDigest::of(&config);
        self.blobs.insert(
            BlobDigest::from_sha256_bytes(*config_digest.sha256_bytes()),
            config.clone(),
        );
        let descriptors: Vec<serde_json::Value> = layers
            .iter()
            .map(|layer| {
                if !layer.foreign {
                    self.blobs.insert(layer.digest(), layer.bytes.clone());
                }
                serde_json::json!({
                    "mediaType": if layer.foreign { FOREIGN } else { TAR },
                    "digest": layer.digest().to_string(),
                    "size": layer.bytes.len(),
                })
            })
            .collect();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest.to_string(),
                "size": config.len(),
            },
            "layers": descriptors,
        });
        (self.add_manifest(repository, tag, &manifest), config_digest)
    }

    /// Adds an index of `entries` (manifest digest, `os/arch`) under `tag`; returns its digest.
    pub(crate) fn add_index(
        &mut self,
        repository: &str,
        tag: &str,
        entries: &[(Digest, &str)],
    ) -> Digest {
        let manifests: Vec<serde_json::Value> = entries
            .iter()
            .map(|(digest, platform)| {
                let (os, architecture) = platform.split_once('/').expect("os/arch");
                let size = self.manifests[&(repository.to_owned(), digest.to_string())].len();
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": digest.to_string(),
                    "size": size,
                    "platform": {"os": os, "architecture": architecture},
                })
            })
            .collect();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        self.add_manifest(repository, Some(tag), &index)
    }

    /// Adds a manifest document as it is; returns its digest.
    pub(crate) fn add_manifest(
        &mut self,
        repository: &str,
        tag: Option<&str>,
        document: &serde_json::Value,
    ) -> Digest {
        let bytes = serde_json::to_vec(document).expect("json");
        let digest = Digest::from(ducc_oci::ManifestDigest::of(&bytes));
        if let Some(tag) = tag {
            self.manifests
                .insert((repository.to_owned(), tag.to_owned()), bytes.clone());
            self.tags
                .entry(repository.to_owned())
                .or_default()
                .push(tag.to_owned());
        }
        self.manifests
            .insert((repository.to_owned(), digest.to_string()), bytes);
        digest
    }

    /// What the engine read so far.
    pub(crate) fn reads(&self) -> Reads {
        self.read.lock().expect("not poisoned").clone()
    }

    /// Forgets what the engine read so far.
    pub(crate) fn forget_reads(&self) {
        *self.read.lock().expect("not poisoned") = Reads::default();
    }

    fn record(&self, f: impl FnOnce(&mut Reads)) {
        f(&mut self.read.lock().expect("not poisoned"));
    }

    fn manifest(
        &self,
        repository: &Repository,
        reference: &str,
    ) -> Result<FetchedManifest, ConvertError> {
        self.record(|r| r.manifests.push(reference.to_owned()));
        let bytes = self
            .manifests
            .get(&(repository.path().to_owned(), reference.to_owned()))
            .ok_or_else(|| not_found(format!("manifest {repository}:{reference}")))?;
        Ok(FetchedManifest::checked(bytes.clone())?)
    }
}

fn not_found(what: String) -> ConvertError {
    ConvertError::new(ErrorKind::Registry, format!("{what}: not found"))
}

impl ImageSource for InMemorySource {
    fn list_tags(&self, repository: &Repository) -> Result<Vec<String>, ConvertError> {
        Ok(self
            .tags
            .get(repository.path())
            .cloned()
            .unwrap_or_default())
    }

    fn fetch_manifest(
        &self,
        repository: &Repository,
        reference: &Reference,
        selection: &ManifestSelection,
    ) -> Result<FetchedManifest, ConvertError> {
        let fetched = self.manifest(repository, &reference.url_part())?;
        let (Some(index), ManifestSelection::Platform(platform)) = (fetched.index(), selection)
        else {
            return Ok(fetched);
        };
        let entry = ducc_registry::choose_platform(index, platform)?;
        let chosen = self.manifest(repository, entry.digest().as_ref())?;
        let entry_platform = entry
            .platform()
            .as_ref()
            .map(Platform::from_oci)
            .expect("chosen by its platform");
        Ok(chosen.chosen_from(fetched.digest().clone(), entry_platform))
    }

    fn fetch_config(
        &self,
        _repository: &Repository,
        digest: &ConfigDigest,
        _size: u64,
    ) -> Result<FetchedConfig, ConvertError> {
        self.record(|r| r.configs.push(*digest));
        let blob = BlobDigest::from_sha256_bytes(*digest.sha256_bytes());
        let bytes = self
            .blobs
            .get(&blob)
            .ok_or_else(|| not_found(format!("config {digest}")))?;
        Ok(FetchedConfig::checked(bytes.clone(), *digest)?)
    }

    fn open_blob(
        &self,
        _repository: &Repository,
        digest: &BlobDigest,
        _size: u64,
    ) -> Result<Box<dyn Read + Send>, ConvertError> {
        self.record(|r| r.blobs.push(*digest));
        let bytes = self
            .blobs
            .get(digest)
            .ok_or_else(|| not_found(format!("blob {digest}")))?;
        Ok(Box::new(Cursor::new(bytes.clone())))
    }

    fn fetch_signatures(
        &self,
        _repository: &Repository,
        _digest: &Digest,
    ) -> Result<Vec<StoredSignature>, ConvertError> {
        Ok(Vec::new())
    }
}
