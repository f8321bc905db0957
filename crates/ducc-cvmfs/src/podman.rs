//! The podman additional image store (`podmanStore/` at the base repository's root): each
//! converted image is one image of containers/storage's overlay-driver format whose single
//! layer is the image's flat tree, so podman runs it straight from the repository
//! (`additionalimagestores = ["/cvmfs/REPO/podmanStore"]`) without pulling anything.
//!
//! What is written, below `podmanStore/` (containers/storage's names, upstream DUCC's place):
//! - `overlay/<L>/diff`: a relative symlink to the image's `.flat/<hh>/<cfg>` tree;
//!   `overlay/<L>/link` holds the layer's short name and `overlay/l/<short>` links back to
//!   `../<L>/diff` (the overlay driver mounts lower directories through these short names).
//! - `overlay-layers/layers.json` and `overlay-images/images.json`: the layer and image records,
//!   each file replaced whole in one transaction; `layers.lock` and `images.lock` next to them
//!   (empty: podman only opens them, and cannot create them on a read-only store).
//! - `overlay-images/<id>/`: the image's "big data" under containers/storage's keys: the config
//!   under its digest (`sha256:<cfg>`), the manifest under `manifest-<digest>` and `manifest`.
//!   A key that is not plain lowercase is stored as `=` + base64 of the key, as podman names it.
//! - `.cvmfscatalog`: the store is one nested catalog (SPEC section 3).
//!
//! The image ID is the config digest's hex, as podman computes it. The layer ID `<L>` is not a
//! content digest: the flat tree has no tar of its own. It is the sha256 of a fixed prefix and
//! the config digest, so it is stable across runs and cannot equal the diff_id of any real layer
//! (whose preimage is a tar archive). The layer's `diff-digest` is `sha256:<L>` with the tree's
//! size as `diff-size`: podman trusts a size only next to a digest, and would otherwise walk
//! the whole tree on every `podman images`; it never pulls by a digest nobody else has.
//!
//! Every change is one transaction leased on `podmanStore`: the JSON files are read inside it,
//! so two converts at once serialise and neither loses the other's entry, and an entry that is
//! already right publishes nothing.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use crate::error::PublishError;
use crate::layout::{Layout, PublicName, RepoPath, relative_target};
use crate::publisher::{Publisher, Transaction};
use ducc_oci::ConfigDigest;

/// Domain prefix of flat-tree layer IDs (see the module documentation).
const LAYER_ID_PREFIX: &str = "ducc-rs podman store: the flat tree of image ";

/// containers/storage's big-data key of the manifest, and the prefix of its per-digest key.
const MANIFEST_KEY: &str = "manifest";

/// What went wrong with the podman store; each variant names the image or the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PodmanError {
    /// `images.json` or `layers.json` exists but is not what containers/storage writes. It is
    /// left as it is: overwriting it would drop every image it lists.
    #[error("cannot read the podman store file {path}: {reason}")]
    CorruptStoreFile {
        /// The published file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A store file or the flat tree could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The config bytes given do not hash to the config digest.
    #[error("the config given for {image} hashes to {actual}, not to its digest {expected}")]
    ConfigMismatch {
        /// The image name.
        image: String,
        /// The config digest.
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },
    /// The image's flat tree is not published: the store's layer would point nowhere.
    #[error("the flat tree {path} of {image} is not published; the podman store needs it")]
    FlatTreeMissing {
        /// The image name.
        image: String,
        /// The published path looked at.
        path: PathBuf,
    },
    /// The transaction that changes the store failed.
    #[error("cannot update the podman store for {what}")]
    Publish {
        /// The image, or what was removed.
        what: String,
        /// The cause.
        #[source]
        source: Box<PublishError>,
    },
}

/// One image to put into the store: its name, config and manifest as the registry served them.
#[derive(Debug, Clone)]
pub struct PodmanImage {
    name: String,
    /// The config digest's hex, podman's image id.
    id: String,
    config: ConfigDigest,
    config_bytes: Vec<u8>,
    manifest_bytes: Vec<u8>,
    manifest_digest: String,
    created: Option<String>,
}

impl PodmanImage {
    /// The image named `name` (podman sees `<registry>/<repository>:<tag>`, or
    /// `<registry>/<repository>@sha256:<hex>` for an image pulled by digest only), with the
    /// exact config and manifest bytes (their digests are what podman shows). The bytes are not
    /// parsed again: the caller parsed the config once, when it fetched it, and gives its
    /// `created` with [`PodmanImage::created`].
    ///
    /// # Errors
    /// [`PodmanError::ConfigMismatch`] when `config_bytes` do not hash to `config`.
    pub fn new(
        name: &PublicName,
        config: ConfigDigest,
        config_bytes: Vec<u8>,
        manifest_bytes: Vec<u8>,
    ) -> Result<Self, PodmanError> {
        let name = name.podman_name();
        let actual = ConfigDigest::of(&config_bytes).to_string();
        if actual != config.to_string() {
            return Err(PodmanError::ConfigMismatch {
                image: name,
                expected: config.to_string(),
                actual,
            });
        }
        Ok(Self {
            name,
            id: config.hex(),
            config,
            manifest_digest: ducc_oci::ManifestDigest::of(&manifest_bytes).to_string(),
            config_bytes,
            manifest_bytes,
            created: None,
        })
    }

    /// The same image with the config's `created` time as the store's, so a rerun writes the
    /// same record. Only a time podman can parse is kept; else none, as for an old image.
    pub fn created(mut self, created: Option<&str>) -> Self {
        self.created = created
            .filter(|t| t.parse::<jiff::Timestamp>().is_ok())
            .map(str::to_owned);
        self
    }

    /// The name podman lists the image under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The image ID: the config digest's hex.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The big-data items: key and content, in containers/storage's order.
    fn big_data(&self) -> [(String, &[u8]); 3] {
        [
            (self.config.to_string(), &self.config_bytes[..]),
            (
                format!("{MANIFEST_KEY}-{}", self.manifest_digest),
                &self.manifest_bytes[..],
            ),
            (MANIFEST_KEY.to_owned(), &self.manifest_bytes[..]),
        ]
    }
}

/// What [`PodmanStore::add_image`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PodmanOutcome {
    /// The image was not in the store and is now.
    Added,
    /// The image was there; its name or files were brought up to date (a tag moved to it).
    Updated,
    /// Everything was already as it should be: nothing was published.
    Unchanged,
}

impl PodmanOutcome {
    /// `added`, `updated` or `unchanged`, for events and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Updated => "updated",
            Self::Unchanged => "unchanged",
        }
    }
}

/// An image as the store lists it (for gc: which images, under which names, on which layer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredImage {
    id: String,
    names: Vec<String>,
    layer: String,
    manifest_digest: Option<String>,
    layer_size: Option<u64>,
}

impl StoredImage {
    /// The image ID (the config digest's hex for images ducc wrote).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The names podman lists it under; empty once every tag moved away.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The ID of its top layer.
    pub fn layer(&self) -> &str {
        &self.layer
    }

    /// The digest of the manifest it was converted from (`sha256:<hex>`), where recorded.
    pub fn manifest_digest(&self) -> Option<&str> {
        self.manifest_digest.as_deref()
    }

    /// The size its layer record gives (`diff-size`: for an image ducc wrote, the apparent size
    /// of the files of its flat tree, measured when it was added), where recorded.
    pub fn layer_size(&self) -> Option<u64> {
        self.layer_size
    }
}

/// The podman store of one repository, written through a publisher.
///
/// ```
/// use ducc_cvmfs::{
///     IngestOptions, Layout, LocalPublisher, PodmanImage, PodmanOutcome, PodmanStore, PublicName,
///     Publisher,
/// };
/// use ducc_oci::{ConfigDigest, RepositoryName};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let root = tempfile::tempdir()?;
/// let repo = RepositoryName::parse("unpacked.example.org")?;
/// let layout = Layout::of(&repo);
/// let publisher = LocalPublisher::open(root.path(), &repo)?;
/// let config_bytes = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
/// let config = ConfigDigest::parse(&format!("sha256:{}", sha256_hex(config_bytes)))?;
/// // The flat tree exists before the image goes into the store.
/// let mut tx = publisher.begin(&layout.flat_image(&config))?;
/// tx.write_file(&layout.flat_image(&config).join("etc/os-release")?, &mut &b"ID=demo\n"[..])?;
/// tx.commit()?;
///
/// let name = PublicName::tagged("registry.example.org", "demo/app", "1.0")?;
/// let image = PodmanImage::new(&name, config, config_bytes.to_vec(), b"{}".to_vec())?
///     .created(Some("2024-05-06T07:08:09Z"));
/// let store = PodmanStore::new(&publisher, &layout);
/// assert_eq!(store.add_image(&image)?, PodmanOutcome::Added);
/// assert_eq!(store.add_image(&image)?, PodmanOutcome::Unchanged);
/// assert_eq!(store.images()?[0].names(), ["registry.example.org/demo/app:1.0"]);
/// # Ok(()) }
/// # fn sha256_hex(b: &[u8]) -> String { use sha2::Digest; hex::encode(sha2::Sha256::digest(b)) }
/// ```
pub struct PodmanStore<'a> {
    publisher: &'a dyn Publisher,
    layout: &'a Layout,
}

impl<'a> PodmanStore<'a> {
    /// The store of `layout`'s repository (at its base root, whatever the subdir).
    pub fn new(publisher: &'a dyn Publisher, layout: &'a Layout) -> Self {
        Self { publisher, layout }
    }

    fn root(&self) -> RepoPath {
        self.layout.podman_store()
    }

    fn path(&self, tail: &str) -> RepoPath {
        // Every tail is built here from fixed names, hex and checked plain names: always clean.
        self.root()
            .join(tail)
            .unwrap_or_else(|_| unreachable!("podman store path {tail:?} is not clean"))
    }

    fn images_json(&self) -> RepoPath {
        self.path("overlay-images/images.json")
    }

    fn layers_json(&self) -> RepoPath {
        self.path("overlay-layers/layers.json")
    }

    fn published(&self, path: &RepoPath) -> PathBuf {
        self.publisher.published_path(path)
    }

    /// The records of the store file at `path` as `tx` sees it (see [`read_records`]).
    fn read_records_in<T: serde::de::DeserializeOwned>(
        &self,
        tx: &dyn crate::Transaction,
        path: &RepoPath,
    ) -> Result<Vec<T>, PodmanError> {
        let at = self.published(path);
        let bytes = tx
            .read_file(path)
            .map_err(|e| store_read_error(self.published(path), e))?;
        parse_records(&at, bytes.unwrap_or_default())
    }

    /// Whether `tx` sees a regular file with exactly `content` at `path`.
    fn file_is_in(
        &self,
        tx: &dyn crate::Transaction,
        path: &RepoPath,
        content: &[u8],
    ) -> Result<bool, PodmanError> {
        let bytes = tx
            .read_file(path)
            .map_err(|e| store_read_error(self.published(path), e))?;
        Ok(bytes.as_deref() == Some(content))
    }

    /// The images the store lists, as published (no lease: for a report or a gc plan).
    ///
    /// # Errors
    /// [`PodmanError::CorruptStoreFile`] or [`PodmanError::Read`] for `images.json` or
    /// `layers.json`.
    pub fn images(&self) -> Result<Vec<StoredImage>, PodmanError> {
        let records: Vec<ImageRecord> = read_records(&self.published(&self.images_json()))?;
        let layers: Vec<LayerRecord> = read_records(&self.published(&self.layers_json()))?;
        let sizes: BTreeMap<String, u64> = layers
            .into_iter()
            .filter_map(|l| Some((l.id, l.diff_size?)))
            .collect();
        Ok(records
            .into_iter()
            .map(|r| StoredImage {
                layer_size: sizes.get(&r.layer).copied(),
                id: r.id,
                names: r.names,
                layer: r.layer,
                manifest_digest: r.digest,
            })
            .collect())
    }

    /// Adds `image` (its flat tree must be published), or brings its entry up to date: the name
    /// is taken from any other image that had it (a moved tag; that image keeps its entry, with
    /// no name, until gc removes it). Publishes nothing when all is as it should be.
    ///
    /// # Errors
    /// [`PodmanError::FlatTreeMissing`], a corrupt or unreadable store file, or the failure of
    /// the transaction (nothing of this call is then published).
    pub fn add_image(&self, image: &PodmanImage) -> Result<PodmanOutcome, PodmanError> {
        let group = self.publisher.group();
        let outcome = self.add_image_to(&*group, image, None)?;
        group.commit().map_err(|source| PodmanError::Publish {
            what: image.name.clone(),
            source: Box::new(source),
        })?;
        Ok(outcome)
    }

    /// As [`PodmanStore::add_image`], through `group`. With `flat_size` (the apparent size of
    /// the image's flat tree, which the caller publishes in the same group), the flat tree need
    /// not be published yet; without, it must be, and its size is measured there.
    ///
    /// # Errors
    /// As [`PodmanStore::add_image`].
    pub fn add_image_to(
        &self,
        group: &dyn crate::Group,
        image: &PodmanImage,
        flat_size: Option<u64>,
    ) -> Result<PodmanOutcome, PodmanError> {
        let publish = |source| PodmanError::Publish {
            what: image.name.clone(),
            source: Box::new(source),
        };
        let flat = self.layout.flat_image(&image.config);
        let flat_published = self.published(&flat);
        if flat_size.is_none() && !flat_published.is_dir() {
            return Err(PodmanError::FlatTreeMissing {
                image: image.name.clone(),
                path: flat_published,
            });
        }
        let mut tx = group.begin(&self.root()).map_err(publish)?;
        let mut images: Vec<ImageRecord> = self.read_records_in(&*tx, &self.images_json())?;
        let mut layers: Vec<LayerRecord> = self.read_records_in(&*tx, &self.layers_json())?;
        let layer_id = flat_layer_id(&image.config);
        let short = short_name(&layer_id);

        let existed = images.iter().any(|r| r.id == image.id());
        let images_changed = put_image(&mut images, image, &layer_id);
        let layers_changed = match layers.iter_mut().find(|l| l.id == layer_id) {
            Some(record) => record.bring_up_to_date(&layer_id, image.created.as_deref(), None),
            None => {
                let size = match flat_size {
                    Some(size) => size,
                    None => tree_size(&flat_published)?,
                };
                let mut record = LayerRecord::default();
                record.bring_up_to_date(&layer_id, image.created.as_deref(), Some(size));
                layers.push(record);
                true
            }
        };

        let mut writes = Writes::default();
        if images_changed {
            writes.files.push((self.images_json(), to_json(&images)));
        }
        if layers_changed {
            writes.files.push((self.layers_json(), to_json(&layers)));
        }
        for (path, content) in [
            (Layout::catalog_marker(&self.root()), Vec::new()),
            (self.path("overlay-images/images.lock"), Vec::new()),
            (self.path("overlay-layers/layers.lock"), Vec::new()),
            (
                self.path(&format!("overlay/{layer_id}/link")),
                short.clone().into_bytes(),
            ),
        ] {
            if !self.file_is_in(&*tx, &path, &content)? {
                writes.files.push((path, content));
            }
        }
        for (key, content) in image.big_data() {
            let path = self.path(&format!(
                "overlay-images/{}/{}",
                image.id(),
                big_data_file_name(&key)
            ));
            if !self.file_is_in(&*tx, &path, content)? {
                writes.files.push((path, content.to_vec()));
            }
        }
        let diff = self.path(&format!("overlay/{layer_id}/diff"));
        let short_link = self.path(&format!("overlay/l/{short}"));
        for (link, target) in [
            (diff.clone(), relative_target(&diff, &flat)),
            (short_link, PathBuf::from(format!("../{layer_id}/diff"))),
        ] {
            if tx.read_link(&link).map_err(publish)?.as_ref() != Some(&target) {
                writes.links.push((link, target));
            }
        }

        if writes.is_empty() {
            tx.abort().map_err(publish)?;
            return Ok(PodmanOutcome::Unchanged);
        }
        writes.apply(tx.as_mut()).map_err(publish)?;
        tx.commit().map_err(publish)?;
        tracing::debug!(image = %image.name, id = image.id(), "podman store updated");
        Ok(if existed {
            PodmanOutcome::Updated
        } else {
            PodmanOutcome::Added
        })
    }

    /// Takes `names` off whatever images carry them (the images stay, for gc to judge). Returns
    /// how many names were removed; none publishes nothing.
    ///
    /// # Errors
    /// A corrupt or unreadable `images.json`, or the failure of the transaction.
    pub fn remove_names(&self, names: &[&str]) -> Result<usize, PodmanError> {
        let publish = |source| PodmanError::Publish {
            what: format!("the names {}", names.join(", ")),
            source: Box::new(source),
        };
        let mut tx = self.publisher.begin(&self.root()).map_err(publish)?;
        let mut images: Vec<ImageRecord> = self.read_records_in(&*tx, &self.images_json())?;
        let mut removed = 0;
        for record in &mut images {
            let before = record.names.len();
            record.names.retain(|n| !names.contains(&n.as_str()));
            removed += before - record.names.len();
        }
        if removed == 0 {
            tx.abort().map_err(publish)?;
            return Ok(0);
        }
        tx.write_file(&self.images_json(), &mut &to_json(&images)[..])
            .map_err(publish)?;
        tx.commit().map_err(publish)?;
        Ok(removed)
    }

    /// Removes the images with these IDs: their records and big data, and each one's layer
    /// (record, directory and short link) unless another image still uses it. Returns how many
    /// images were removed; IDs not in the store are ignored.
    ///
    /// # Errors
    /// A corrupt or unreadable store file, or the failure of the transaction.
    pub fn remove_images(&self, ids: &[&str]) -> Result<usize, PodmanError> {
        let publish = |source| PodmanError::Publish {
            what: format!("the images {}", ids.join(", ")),
            source: Box::new(source),
        };
        let mut tx = self.publisher.begin(&self.root()).map_err(publish)?;
        let mut images: Vec<ImageRecord> = self.read_records_in(&*tx, &self.images_json())?;
        let mut layers: Vec<LayerRecord> = self.read_records_in(&*tx, &self.layers_json())?;
        let (gone, kept): (Vec<_>, Vec<_>) =
            images.drain(..).partition(|r| ids.contains(&r.id.as_str()));
        images = kept;
        if gone.is_empty() {
            tx.abort().map_err(publish)?;
            return Ok(0);
        }
        let still_used: HashSet<&str> = images.iter().map(|r| r.layer.as_str()).collect();
        let mut removals = Vec::new();
        for record in &gone {
            // IDs and short names come from files others may have written: each must stay one
            // path component inside the store.
            if is_plain_name(&record.id) {
                removals.push(self.path(&format!("overlay-images/{}", record.id)));
            }
            if !is_plain_name(&record.layer) || still_used.contains(record.layer.as_str()) {
                continue;
            }
            let layer_dir = self.path(&format!("overlay/{}", record.layer));
            let link_file = self.path(&format!("overlay/{}/link", record.layer));
            let short = tx
                .read_file(&link_file)
                .ok()
                .flatten()
                .and_then(|b| String::from_utf8(b).ok())
                .map(|s| s.trim().to_owned())
                .filter(|s| is_plain_name(s))
                .unwrap_or_else(|| short_name(&record.layer));
            removals.push(self.path(&format!("overlay/l/{short}")));
            removals.push(layer_dir);
            layers.retain(|l| l.id != record.layer);
        }
        for path in &removals {
            tx.remove(path).map_err(publish)?;
        }
        tx.write_file(&self.images_json(), &mut &to_json(&images)[..])
            .map_err(publish)?;
        tx.write_file(&self.layers_json(), &mut &to_json(&layers)[..])
            .map_err(publish)?;
        tx.commit().map_err(publish)?;
        Ok(gone.len())
    }
}

/// Whether `name` is one clean path component (not empty, `.`, `..`, and without `/`).
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// Files and symlinks one call writes, in one transaction.
#[derive(Default)]
struct Writes {
    files: Vec<(RepoPath, Vec<u8>)>,
    links: Vec<(RepoPath, PathBuf)>,
}

impl Writes {
    fn is_empty(&self) -> bool {
        self.files.is_empty() && self.links.is_empty()
    }

    fn apply(&self, tx: &mut dyn Transaction) -> Result<(), PublishError> {
        for (path, content) in &self.files {
            tx.write_file(path, &mut &content[..])?;
        }
        for (path, target) in &self.links {
            tx.symlink(path, target)?;
        }
        Ok(())
    }
}

/// An entry of `overlay-images/images.json` (containers/storage's `Image`). Fields this code
/// does not know are kept as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ImageRecord {
    id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    digests: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    names: Vec<String>,
    #[serde(
        rename = "names-history",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    names_history: Vec<String>,
    #[serde(default)]
    layer: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    metadata: String,
    #[serde(
        rename = "big-data-names",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    big_data_names: Vec<String>,
    #[serde(
        rename = "big-data-sizes",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    big_data_sizes: BTreeMap<String, u64>,
    #[serde(
        rename = "big-data-digests",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    big_data_digests: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created: Option<String>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

/// An entry of `overlay-layers/layers.json` (containers/storage's `Layer`); unknown fields kept.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct LayerRecord {
    id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created: Option<String>,
    #[serde(
        rename = "diff-digest",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    diff_digest: Option<String>,
    #[serde(rename = "diff-size", default, skip_serializing_if = "Option::is_none")]
    diff_size: Option<u64>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

impl LayerRecord {
    /// Sets the fields of a flat-tree layer; `size` only when measured (a record that has one
    /// keeps it: the tree of a config digest never changes). Returns whether anything changed.
    fn bring_up_to_date(&mut self, id: &str, created: Option<&str>, size: Option<u64>) -> bool {
        let before = (
            self.id.clone(),
            self.created.clone(),
            self.diff_digest.clone(),
            self.diff_size,
            self.other.len(),
        );
        self.id = id.to_owned();
        self.created = created.map(str::to_owned);
        self.diff_digest = Some(format!("sha256:{id}"));
        if let Some(size) = size {
            self.diff_size = Some(size);
        }
        // A flat-tree layer has no parent (one layer per image).
        self.other.remove("parent");
        before
            != (
                self.id.clone(),
                self.created.clone(),
                self.diff_digest.clone(),
                self.diff_size,
                self.other.len(),
            )
    }
}

/// Gives `image` its record in `images` and its name, taking the name from any other record.
/// Returns whether anything changed.
fn put_image(images: &mut Vec<ImageRecord>, image: &PodmanImage, layer_id: &str) -> bool {
    let mut changed = false;
    for record in images.iter_mut().filter(|r| r.id != image.id()) {
        let before = record.names.len();
        record.names.retain(|n| n != &image.name);
        changed |= record.names.len() != before;
    }
    let index = match images.iter().position(|r| r.id == image.id()) {
        Some(i) => i,
        None => {
            images.push(ImageRecord {
                id: image.id().to_owned(),
                ..ImageRecord::default()
            });
            changed = true;
            images.len() - 1
        }
    };
    let record = &mut images[index];
    let wanted = expected_record(record, image, layer_id);
    if serde_json::to_value(&*record).ok() != serde_json::to_value(&wanted).ok() {
        *record = wanted;
        changed = true;
    }
    changed
}

/// What the record of `image` should be, starting from `current` (names it has keep their order
/// and the new one goes last, as podman adds names; unknown fields stay).
fn expected_record(current: &ImageRecord, image: &PodmanImage, layer_id: &str) -> ImageRecord {
    let mut record = current.clone();
    if !record.names.contains(&image.name) {
        record.names.push(image.name.clone());
    }
    // podman keeps the names an image ever had, newest first.
    if record.names_history.first() != Some(&image.name) {
        record.names_history.retain(|n| n != &image.name);
        record.names_history.insert(0, image.name.clone());
    }
    record.digest = Some(image.manifest_digest.clone());
    if !record.digests.contains(&image.manifest_digest) {
        record.digests.insert(0, image.manifest_digest.clone());
    }
    record.layer = layer_id.to_owned();
    if record.metadata.is_empty() {
        record.metadata = "{}".to_owned();
    }
    for (key, content) in image.big_data() {
        if !record.big_data_names.contains(&key) {
            record.big_data_names.push(key.clone());
        }
        record
            .big_data_sizes
            .insert(key.clone(), content.len() as u64);
        record
            .big_data_digests
            .insert(key, ducc_oci::BlobDigest::of(content).to_string());
    }
    record.created = image.created.clone();
    record
}

/// Reads a JSON array of records; a missing or empty file is an empty store (as
/// containers/storage reads it).
fn read_records<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, PodmanError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(PodmanError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    parse_records(path, bytes)
}

/// The error of reading the store file published at `path` through a transaction.
fn store_read_error(path: PathBuf, error: PublishError) -> PodmanError {
    match error {
        PublishError::Io { source, .. } => PodmanError::Read { path, source },
        other => PodmanError::CorruptStoreFile {
            path,
            reason: other.to_string(),
        },
    }
}

/// Parses the bytes of the store file at `path` (`read_records`).
fn parse_records<T: serde::de::DeserializeOwned>(
    path: &Path,
    bytes: Vec<u8>,
) -> Result<Vec<T>, PodmanError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&bytes).map_err(|e| PodmanError::CorruptStoreFile {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

fn to_json<T: Serialize>(records: &[T]) -> Vec<u8> {
    // Plain data with string keys: serialising cannot fail.
    serde_json::to_vec(records).unwrap_or_else(|e| unreachable!("podman store record: {e}"))
}

/// The layer ID of the flat tree of `config` (see the module documentation).
fn flat_layer_id(config: &ConfigDigest) -> String {
    hex::encode(Sha256::digest(
        format!("{LAYER_ID_PREFIX}{config}").as_bytes(),
    ))
}

/// The short name of a layer (`overlay/l/<short>`): 26 characters of base32, as
/// containers/storage makes them, derived from the layer ID instead of drawn at random so every
/// run writes the same one.
fn short_name(layer_id: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = Sha256::digest(layer_id.as_bytes());
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = String::with_capacity(26);
    for byte in digest.iter() {
        bits = (bits << 8) | u32::from(*byte);
        count += 8;
        while count >= 5 && out.len() < 26 {
            count -= 5;
            out.push(char::from(ALPHABET[((bits >> count) & 31) as usize]));
        }
    }
    out
}

/// The file name of a big-data key: the key itself when it is only lowercase letters, digits
/// and dots, else `=` and its standard base64 (containers/storage's `makeBigDataBaseName`).
fn big_data_file_name(key: &str) -> String {
    if key
        .bytes()
        .all(|b| b == b'.' || b.is_ascii_digit() || b.is_ascii_lowercase())
    {
        key.to_owned()
    } else {
        format!("={}", base64::engine::general_purpose::STANDARD.encode(key))
    }
}

/// The size of the tree for `diff-size`: the apparent size of its regular files, symlinks not
/// followed. A hardlinked file counts once per name: `cvmfs_server ingest` stores hardlinks as
/// independent files, and the record must not depend on the publisher. The kind of each entry
/// comes from the directory listing, and only regular files are looked at, by name inside
/// their open directory (a whole flat tree is tens of thousands of files).
/// The apparent size of the regular files under `root`, as podman's `diff-size` counts it.
///
/// # Errors
/// [`PodmanError::Read`] naming the directory or entry that could not be read.
pub fn tree_size(root: &Path) -> Result<u64, PodmanError> {
    let read_err = |path: &Path| {
        let path = path.to_owned();
        move |source| PodmanError::Read { path, source }
    };
    let mut total = 0u64;
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(read_err(&dir))? {
            let entry = entry.map_err(read_err(&dir))?;
            // The entry's path is built only for an error (or a directory to walk).
            let entry_err = |source| PodmanError::Read {
                path: entry.path(),
                source,
            };
            let kind = entry.file_type().map_err(entry_err)?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                total += entry.metadata().map_err(entry_err)?.len();
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests;
