//! What a repository holds, as an operator asks for it (`ducc list`, issue 27): each converted
//! image with its digests, time, platforms, flat-tree size and layers, and each layer with the
//! images that use it. Read from the published tree only; nothing is written or locked.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::time::UNIX_EPOCH;

use serde::Serialize;

use super::gc::{sharded, tree_bytes};
use super::{Inventory, LifecycleError};
use crate::layout::{Layout, RepoPath};
use crate::metadata::{LayerInfo, MarkerManifest};
use crate::podman::PodmanStore;
use crate::publisher::Publisher;
use crate::state::ImageSlot;
use ducc_oci::{ConfigDigest, LayerDigest};

/// The file beside an image's marker that records its signature check (issue 25).
pub const SIGNATURE_FILE: &str = "signature.json";
/// The file beside an image's marker that records the entries a gateway could not hold
/// (issue 30).
pub const DROPPED_FILE: &str = "dropped.json";

/// Whether an image's conversion recorded a signature check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SignatureState {
    /// Every marker of the image has a readable `signature.json` beside it.
    Signed,
    /// No marker has one.
    Unsigned,
    /// Some markers have one and others not, or one cannot be read as JSON.
    Unclear,
}

impl SignatureState {
    /// `signed`, `unsigned` or `unclear`.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureState::Signed => "signed",
            SignatureState::Unsigned => "unsigned",
            SignatureState::Unclear => "unclear",
        }
    }
}

/// One platform of a converted image: what its marker records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListedPlatform {
    /// `<arch>[:<variant>]` of a multi-platform image; `None` for a plain one (converted for
    /// the platform its run asked for).
    pub platform: Option<String>,
    /// The manifest digest, where the podman store records it (else `None`).
    pub manifest: Option<String>,
    /// The config digest.
    pub config: String,
    /// When the marker was published (seconds since the epoch).
    pub converted_at: u64,
    /// The layers, bottom first (`sha256:<hex>` of the compressed blobs).
    pub layers: Vec<String>,
    /// Apparent bytes of the files of the flat tree (0 where there is none).
    pub flat_bytes: u64,
}

/// One converted image: its name and every platform its markers record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListedImage {
    /// `<registry>/<repository>:<tag>`.
    pub name: String,
    /// Its platforms (one for a plain image).
    pub platforms: Vec<ListedPlatform>,
    /// Distinct layers of all its platforms.
    pub layers: usize,
    /// How many of those another image uses too.
    pub shared_layers: usize,
    /// Whether its conversion recorded a signature.
    pub signature: SignatureState,
    /// Entries its conversion had to leave out (from `dropped.json`), when recorded.
    pub dropped: Option<usize>,
}

/// One layer directory and the images that use it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListedLayer {
    /// `sha256:<hex>` of the compressed blob.
    pub digest: String,
    /// Unpacked bytes, from its `layers.json` (`None` when that cannot be read).
    pub diff_bytes: Option<u64>,
    /// Compressed bytes, from the markers that name it (`None` when none does).
    pub compressed_bytes: Option<u64>,
    /// The images whose markers name it (none: garbage, see `gc`).
    pub images: Vec<String>,
}

/// What a repository holds: its converted images and its layers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Listing {
    /// The converted images (those with a marker), by name.
    pub images: Vec<ListedImage>,
    /// Every layer directory of the repository, by digest.
    pub layers: Vec<ListedLayer>,
}

impl Listing {
    /// Reads what `publisher` shows published under `layout`.
    ///
    /// # Errors
    /// [`LifecycleError::Read`] when a directory cannot be read and
    /// [`LifecycleError::CorruptRecord`] when a marker is not one.
    pub fn read(publisher: &dyn Publisher, layout: &Layout) -> Result<Listing, LifecycleError> {
        let at = |path: &RepoPath| publisher.published_path(path);
        let inventory = Inventory::read(publisher, layout)?;
        let stored = PodmanStore::new(publisher, layout)
            .images()
            .unwrap_or_default();
        let mut flat_sizes: BTreeMap<ConfigDigest, u64> = BTreeMap::new();
        let mut users: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut compressed: BTreeMap<String, u64> = BTreeMap::new();
        let mut images = Vec::new();
        for image in inventory.images() {
            if image.markers().is_empty() {
                continue;
            }
            let name = image.name().to_string();
            let podman_name = image.name().podman_name();
            let mut platforms = Vec::new();
            for slot in image.markers() {
                let path = at(&slot.marker(layout));
                let corrupt = |reason: String| LifecycleError::CorruptRecord {
                    path: path.clone(),
                    reason,
                };
                let bytes = fs::read(&path).map_err(|e| corrupt(e.to_string()))?;
                let marker =
                    MarkerManifest::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
                let converted_at = fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs());
                let hex = marker.config.digest.strip_prefix("sha256:").unwrap_or("");
                let in_store = stored
                    .iter()
                    .find(|s| s.names().contains(&podman_name) && s.id() == hex)
                    .or_else(|| stored.iter().find(|s| s.id() == hex));
                let manifest = in_store
                    .and_then(|s| s.manifest_digest())
                    .map(str::to_owned);
                // The podman store measured the flat tree when it added the image; walking a
                // tree of a million files through /cvmfs is the fallback only.
                let flat_bytes = match (
                    in_store.and_then(|s| s.layer_size()),
                    marker.config_digest(),
                ) {
                    (Some(size), _) => size,
                    (None, Some(config)) => *flat_sizes
                        .entry(config)
                        .or_insert_with(|| tree_bytes(&at(&layout.flat_image(&config)))),
                    (None, None) => 0,
                };
                for layer in &marker.layers {
                    users
                        .entry(layer.digest.clone())
                        .or_default()
                        .insert(name.clone());
                    compressed.insert(layer.digest.clone(), layer.size);
                }
                platforms.push(ListedPlatform {
                    platform: slot.arch().map(|a| a.as_str().to_owned()),
                    manifest,
                    config: marker.config.digest.clone(),
                    converted_at,
                    layers: marker.layers.iter().map(|l| l.digest.clone()).collect(),
                    flat_bytes,
                });
            }
            let marker_dirs: Vec<_> = image
                .markers()
                .iter()
                .map(|slot: &ImageSlot| at(&slot.marker_dir(layout)))
                .collect();
            images.push(ListedImage {
                name,
                platforms,
                layers: 0,
                shared_layers: 0,
                signature: signature_state(&marker_dirs),
                dropped: dropped_count(&marker_dirs),
            });
        }
        for image in &mut images {
            let layers: BTreeSet<&String> =
                image.platforms.iter().flat_map(|p| &p.layers).collect();
            image.layers = layers.len();
            image.shared_layers = layers
                .iter()
                .filter(|l| users.get(**l).is_some_and(|u| u.len() > 1))
                .count();
        }

        let mut layers = Vec::new();
        for hex in sharded(&at(&layout.layers_root()))? {
            let Ok(digest) = format!("sha256:{hex}").parse::<LayerDigest>() else {
                continue;
            };
            let key = digest.to_string();
            let diff_bytes = fs::read(at(&layout.layer_info(&digest)))
                .ok()
                .and_then(|b| serde_json::from_slice::<Vec<LayerInfo>>(&b).ok())
                .and_then(|infos| infos.first().map(|i| i.diff_size));
            layers.push(ListedLayer {
                images: users
                    .get(&key)
                    .map(|u| u.iter().cloned().collect())
                    .unwrap_or_default(),
                compressed_bytes: compressed.get(&key).copied(),
                diff_bytes,
                digest: key,
            });
        }
        Ok(Listing { images, layers })
    }
}

/// Signed when every marker directory has a `signature.json` that is JSON, unsigned when none
/// has one, else unclear.
fn signature_state(marker_dirs: &[std::path::PathBuf]) -> SignatureState {
    let mut signed = 0;
    let mut unsigned = 0;
    for dir in marker_dirs {
        match fs::read(dir.join(SIGNATURE_FILE)) {
            Ok(bytes) if serde_json::from_slice::<serde_json::Value>(&bytes).is_ok() => {
                signed += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => unsigned += 1,
            _ => return SignatureState::Unclear,
        }
    }
    match (signed, unsigned) {
        (_, 0) if signed > 0 => SignatureState::Signed,
        (0, _) => SignatureState::Unsigned,
        _ => SignatureState::Unclear,
    }
}

/// The entries `dropped.json` files beside the markers list (a JSON array, or an object whose
/// first array field is the list), summed; `None` when no marker has one.
fn dropped_count(marker_dirs: &[std::path::PathBuf]) -> Option<usize> {
    let mut total = None;
    for dir in marker_dirs {
        let Ok(bytes) = fs::read(dir.join(DROPPED_FILE)) else {
            continue;
        };
        let count = match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(serde_json::Value::Array(entries)) => entries.len(),
            Ok(serde_json::Value::Object(fields)) => fields
                .values()
                .find_map(|v| v.as_array().map(Vec::len))
                .unwrap_or(0),
            _ => 0,
        };
        *total.get_or_insert(0) += count;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LocalPublisher, PublicName};
    use ducc_oci::RepositoryName;

    #[test]
    fn a_corrupt_marker_fails_the_listing_naming_the_file() {
        let root = tempfile::tempdir().unwrap();
        let repo = RepositoryName::parse("r").unwrap();
        let layout = Layout::of(&repo);
        let publisher = LocalPublisher::open(root.path(), &repo).unwrap();
        let name = PublicName::tagged("reg.io", "a", "1").unwrap();
        let marker = layout.marker_manifest(&name);
        let mut tx = publisher.begin(&marker).unwrap();
        tx.write_file(&marker, &mut &b"not json"[..]).unwrap();
        tx.commit().unwrap();
        let err = Listing::read(&publisher, &layout).unwrap_err();
        assert!(
            matches!(&err, LifecycleError::CorruptRecord { path, .. } if path.ends_with("reg.io/a:1/manifest.json")),
            "{err}"
        );
    }

    #[test]
    fn signature_state_and_dropped_count_come_from_the_files_beside_each_marker() {
        let temps = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let dirs: Vec<std::path::PathBuf> = temps.iter().map(|t| t.path().to_owned()).collect();
        assert_eq!(signature_state(&dirs), SignatureState::Unsigned);
        assert_eq!(dropped_count(&dirs), None);
        fs::write(dirs[0].join(SIGNATURE_FILE), b"{}").unwrap();
        assert_eq!(signature_state(&dirs), SignatureState::Unclear);
        fs::write(dirs[1].join(SIGNATURE_FILE), b"{}").unwrap();
        assert_eq!(signature_state(&dirs), SignatureState::Signed);
        fs::write(dirs[1].join(SIGNATURE_FILE), b"garbled").unwrap();
        assert_eq!(signature_state(&dirs), SignatureState::Unclear);
        fs::write(dirs[0].join(DROPPED_FILE), b"[1,2,3]").unwrap();
        fs::write(dirs[1].join(DROPPED_FILE), br#"{"entries":[1]}"#).unwrap();
        assert_eq!(dropped_count(&dirs), Some(4));
    }
}
