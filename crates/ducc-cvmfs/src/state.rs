//! What a repository records of its images, read back through a publisher: markers, whether a
//! layer directory or a flat tree is complete, the flat tree's completion record, and where an
//! image's public names go.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::PublishError;
use crate::layout::{Arch, Layout, PublicName, RepoPath};
use crate::metadata::{MarkerManifest, Origin};
use crate::publisher::Publisher;
use ducc_oci::{ConfigDigest, LayerDigest};

/// Where an image's public names go: the plain layout, or, for one platform of a multi-platform
/// image, under `.multiarch/<arch>` (upstream's newer layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSlot {
    public: PublicName,
    arch: Option<Arch>,
}

impl ImageSlot {
    /// The plain slot of `public`.
    pub fn plain(public: PublicName) -> ImageSlot {
        ImageSlot { public, arch: None }
    }

    /// The slot of platform `arch` of the multi-platform image `public`.
    pub fn platform(public: PublicName, arch: Arch) -> ImageSlot {
        ImageSlot {
            public,
            arch: Some(arch),
        }
    }

    /// The image's public name.
    pub fn public(&self) -> &PublicName {
        &self.public
    }

    /// The platform, for a slot under `.multiarch`.
    pub fn arch(&self) -> Option<&Arch> {
        self.arch.as_ref()
    }

    /// The marker file (`manifest.json`).
    pub fn marker(&self, layout: &Layout) -> RepoPath {
        match &self.arch {
            None => layout.marker_manifest(&self.public),
            Some(arch) => layout.arch_marker_manifest(&self.public, arch),
        }
    }

    /// The marker's directory (the lease that writes it).
    pub fn marker_dir(&self, layout: &Layout) -> RepoPath {
        match &self.arch {
            None => layout.marker_dir(&self.public),
            Some(arch) => layout.arch_marker_dir(&self.public, arch),
        }
    }

    /// `dropped.json` in [`ImageSlot::marker_dir`] (see [`crate::DroppedRecord`]).
    pub fn dropped_record(&self, layout: &Layout) -> RepoPath {
        self.marker_dir(layout)
            .child(crate::lifecycle::DROPPED_FILE)
    }

    /// The public symlink.
    pub fn link(&self, layout: &Layout) -> RepoPath {
        match &self.arch {
            None => layout.public_link(&self.public),
            Some(arch) => layout.arch_link(&self.public, arch),
        }
    }

    /// The public symlink's target for the flat tree of `config`.
    pub fn link_target(&self, layout: &Layout, config: &ConfigDigest) -> PathBuf {
        match &self.arch {
            None => layout.public_link_target(&self.public, config),
            Some(arch) => layout.arch_link_target(&self.public, arch, config),
        }
    }
}

/// The completion record of a flat tree, written after the tree in the same transaction: with
/// `cvmfs`, an ingest cut by a kill may have published part of the tree, so the directory alone
/// does not say it is complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatRecord {
    /// The image config the tree was built for.
    pub config: ConfigDigest,
    /// Its layers, bottom first.
    pub layers: Vec<LayerDigest>,
    /// The apparent size of the tree without this record, measured when it was built (what
    /// podman's store records for an image on it, with the record's own length); `None` in
    /// records written before it was kept.
    pub tree_bytes: Option<u64>,
}

impl FlatRecord {
    /// The record's bytes, as written.
    pub fn to_json(&self) -> Vec<u8> {
        let mut record = serde_json::json!({
            "config": self.config.to_string(),
            "layers": self.layers.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        if let Some(bytes) = self.tree_bytes {
            record["tree_bytes"] = bytes.into();
        }
        record.to_string().into_bytes()
    }

    /// Parses a record.
    ///
    /// # Errors
    /// When the bytes are not a record.
    pub fn from_slice(bytes: &[u8]) -> Result<FlatRecord, serde_json::Error> {
        #[derive(Deserialize)]
        struct Raw {
            config: String,
            layers: Vec<String>,
            #[serde(default)]
            tree_bytes: Option<u64>,
        }
        let raw: Raw = serde_json::from_slice(bytes)?;
        let config = ConfigDigest::parse(&raw.config).map_err(serde::de::Error::custom)?;
        let layers = raw
            .layers
            .iter()
            .map(|l| l.parse::<LayerDigest>().map_err(serde::de::Error::custom))
            .collect::<Result<_, _>>()?;
        Ok(FlatRecord {
            config,
            layers,
            tree_bytes: raw.tree_bytes,
        })
    }
}

/// A repository's recorded state, as this host sees it published.
#[derive(Clone, Copy)]
pub struct RepositoryState<'a> {
    publisher: &'a dyn Publisher,
    layout: &'a Layout,
}

impl<'a> RepositoryState<'a> {
    /// The state `publisher` shows of the repository laid out as `layout`.
    pub fn new(publisher: &'a dyn Publisher, layout: &'a Layout) -> RepositoryState<'a> {
        RepositoryState { publisher, layout }
    }

    /// Where `path` is published on this host.
    pub fn published(&self, path: &RepoPath) -> PathBuf {
        self.publisher.published_path(path)
    }

    /// The config the marker of `slot` records, if there is a readable marker.
    pub fn marker_config(&self, slot: &ImageSlot) -> Option<ConfigDigest> {
        let bytes = std::fs::read(self.published(&slot.marker(self.layout))).ok()?;
        MarkerManifest::from_slice(&bytes).ok()?.config_digest()
    }

    /// Whether the layer's directory is complete: `layerfs` and, written after it in the same
    /// transaction, `layers.json` (with `cvmfs`, a run killed between the two leaves `layerfs`
    /// alone).
    pub fn layer_complete(&self, layer: &LayerDigest) -> bool {
        self.published(&self.layout.layerfs(layer)).is_dir()
            && self.published(&self.layout.layer_info(layer)).is_file()
    }

    /// Whether the flat tree of `config` is complete: its directory and its [`FlatRecord`].
    pub fn flat_complete(&self, config: &ConfigDigest) -> bool {
        self.published(&self.layout.flat_image(config)).is_dir()
            && self
                .published(&self.layout.flat_complete_record(config))
                .is_file()
    }

    /// The apparent size of the published flat tree of `config` (completion record included),
    /// as its record says it was measured when the tree was built; `None` when the tree is not
    /// complete or its record predates the size.
    pub fn flat_size(&self, config: &ConfigDigest) -> Option<u64> {
        let path = self.published(&self.layout.flat_complete_record(config));
        let bytes = std::fs::read(path).ok()?;
        let record = FlatRecord::from_slice(&bytes).ok()?;
        Some(record.tree_bytes? + bytes.len() as u64)
    }

    /// The layer's `origin.json` (empty where there is none). Read it inside the transaction
    /// that rewrites it: a corrupt one is an error, never overwritten with a shorter list.
    ///
    /// # Errors
    /// A file that cannot be read or parsed.
    pub fn origin(&self, layer: &LayerDigest) -> Result<Origin, PublishError> {
        Origin::read(&self.published(&self.layout.layer_origin(layer)))
    }

    /// Whether `link` is published as a symlink with text `target`.
    pub fn symlink_is(&self, link: &RepoPath, target: &Path) -> bool {
        std::fs::read_link(self.published(link)).is_ok_and(|t| t == target)
    }

    /// Whether `path` is published as a real directory (not a symlink).
    pub fn is_real_dir(&self, path: &RepoPath) -> bool {
        std::fs::symlink_metadata(self.published(path)).is_ok_and(|m| m.is_dir())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalPublisher;
    use ducc_oci::RepositoryName;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn flat_record_round_trips_and_rejects_bad_digests() {
        let record = FlatRecord {
            config: ConfigDigest::parse(&digest('c')).unwrap(),
            layers: vec![digest('a').parse().unwrap(), digest('b').parse().unwrap()],
            tree_bytes: Some(4096),
        };
        let bytes = record.to_json();
        assert_eq!(FlatRecord::from_slice(&bytes).unwrap(), record);
        // A record written before the size was kept.
        let old = br#"{"config":"sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc","layers":[]}"#;
        assert_eq!(FlatRecord::from_slice(old).unwrap().tree_bytes, None);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains(&digest('a')), "{text}");
        assert!(FlatRecord::from_slice(br#"{"config":"md5:1","layers":[]}"#).is_err());
        assert!(FlatRecord::from_slice(b"not json").is_err());
    }

    #[test]
    fn completeness_needs_the_record_written_after_the_tree() {
        let root = tempfile::tempdir().unwrap();
        let repo = RepositoryName::parse("r").unwrap();
        let publisher = LocalPublisher::open(root.path(), &repo).unwrap();
        let layout = Layout::of(&repo);
        let state = RepositoryState::new(&publisher, &layout);
        let config = ConfigDigest::parse(&digest('c')).unwrap();
        let layer: LayerDigest = digest('a').parse().unwrap();
        assert!(!state.flat_complete(&config));
        assert!(!state.layer_complete(&layer));
        std::fs::create_dir_all(publisher.published_path(&layout.flat_image(&config))).unwrap();
        std::fs::create_dir_all(publisher.published_path(&layout.layerfs(&layer))).unwrap();
        assert!(!state.flat_complete(&config), "a tree without its record");
        assert!(!state.layer_complete(&layer), "layerfs without layers.json");
        for record in [
            layout.flat_complete_record(&config),
            layout.layer_info(&layer),
        ] {
            let path = publisher.published_path(&record);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"{}").unwrap();
        }
        assert!(state.flat_complete(&config));
        assert!(state.layer_complete(&layer));
    }
}
