//! Garbage collection: mark what recorded images reach, sweep the rest after a grace period.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::delete::{DeleteReport, collapse};
use super::{Inventory, LifecycleError, read_error};
use crate::layout::{Layout, RepoPath};
use crate::metadata::{MarkerManifest, Origin};
use crate::podman::PodmanStore;
use crate::publisher::{GcLock, Publisher};
use crate::state::FlatRecord;
use ducc_oci::{ConfigDigest, LayerDigest};

/// Settings of [`collect_garbage`].
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Plan only: nothing is removed and nothing recorded.
    pub dry_run: bool,
    /// How long a piece must have been unreferenced before it goes.
    pub grace: Duration,
    /// The time the run counts from (the clock, except in tests).
    pub now: SystemTime,
}

impl GcOptions {
    /// A real run with `grace`, now.
    pub fn new(grace: Duration) -> GcOptions {
        GcOptions {
            dry_run: false,
            grace,
            now: SystemTime::now(),
        }
    }
}

/// What kind of content a [`Piece`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PieceKind {
    /// `.layers/<hh>/<hex>`: a layer directory with its metadata.
    Layer,
    /// `.flat/<hh>/<cfg>`: a flat tree.
    Flat,
    /// An image of the podman store (its records, big data and flat-tree layer).
    Podman,
}

impl PieceKind {
    /// `layer`, `flat` or `podman`.
    pub fn as_str(self) -> &'static str {
        match self {
            PieceKind::Layer => "layer",
            PieceKind::Flat => "flat",
            PieceKind::Podman => "podman",
        }
    }
}

/// One piece of content that no recorded image uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// What it is.
    pub kind: PieceKind,
    /// Its digest (`sha256:<hex>`: the layer blob, the config) or podman image ID.
    pub id: String,
    /// Where it is in the repository (for a podman image, its big-data directory).
    pub path: RepoPath,
    /// Bytes of its files (apparent sizes).
    pub bytes: u64,
    /// When a gc first found it unreferenced (seconds since the epoch).
    pub since: u64,
}

impl Piece {
    fn key(&self) -> String {
        format!("{}:{}", self.kind.as_str(), self.id)
    }
}

/// What [`collect_garbage`] did, or would do with [`GcOptions::dry_run`].
#[derive(Debug, Clone, Default)]
pub struct GcReport {
    /// Whether this was a plan only.
    pub dry_run: bool,
    /// The grace period used.
    pub grace: Duration,
    /// Images the repository records (all of their content is kept).
    pub images: usize,
    /// Pieces removed (planned, on a dry run): unreferenced for at least the grace period.
    pub removed: Vec<Piece>,
    /// Unreferenced pieces that wait for their grace period to end.
    pub waiting: Vec<Piece>,
    /// Pieces that were due but that a conversion started using again during the gc.
    pub reclaimed: Vec<Piece>,
    /// Kept layers whose `origin.json` lost configs no image uses any more.
    pub origins_updated: usize,
    /// What dead processes had left in the publisher's state directory.
    pub leftovers: Vec<PathBuf>,
    /// Files gc could not judge and left alone (a corrupt `origin.json` of a kept layer).
    pub problems: Vec<String>,
}

impl GcReport {
    /// Bytes of the removed pieces.
    pub fn removed_bytes(&self) -> u64 {
        self.removed.iter().map(|p| p.bytes).sum()
    }

    /// Bytes of the waiting pieces.
    pub fn waiting_bytes(&self) -> u64 {
        self.waiting.iter().map(|p| p.bytes).sum()
    }
}

/// `.metadata/.gc/pending.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pending {
    version: u32,
    /// By `<kind>:<id>`.
    pieces: BTreeMap<String, Sighting>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sighting {
    /// First found unreferenced, seconds since the epoch.
    since: u64,
    /// For a layer: the configs its `origin.json` listed then.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    origins: Vec<String>,
}

impl Pending {
    fn read(path: &Path) -> Result<Pending, LifecycleError> {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Pending {
                    version: 1,
                    pieces: BTreeMap::new(),
                });
            }
            Err(e) => return Err(read_error(path)(e)),
        };
        let pending: Pending =
            serde_json::from_slice(&bytes).map_err(|e| LifecycleError::CorruptRecord {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        if pending.version != 1 {
            return Err(LifecycleError::CorruptRecord {
                path: path.to_owned(),
                reason: format!("version {} is not 1", pending.version),
            });
        }
        Ok(pending)
    }

    fn to_json(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }
}

/// A layer directory found in `.layers/`, with what its `origin.json` said at the mark.
struct FoundLayer {
    digest: LayerDigest,
    origin: Result<Origin, String>,
}

/// Marks what the recorded images of the repository reach and removes the rest (see the
/// [module documentation](super)): podman store images first (their layers point into flat
/// trees), then flat trees, then layer directories, each kind in one transaction, then what
/// dead processes left in the publisher's state directory. Holds [`Publisher::gc_lock`]
/// exclusive throughout. `removed` is told each piece as its transaction commits.
///
/// # Errors
/// [`LifecycleError::CorruptRecord`] when a marker, a linked flat tree's record or the gc record
/// cannot be read (nothing is removed then), and the first failing transaction (what committed
/// before stays removed; a rerun ends where an uninterrupted run would).
pub fn collect_garbage(
    publisher: &dyn Publisher,
    layout: &Layout,
    options: &GcOptions,
    removed: &mut dyn FnMut(&Piece),
) -> Result<GcReport, LifecycleError> {
    let _lock = publisher.gc_lock(GcLock::Collect)?;
    let at = |path: &RepoPath| publisher.published_path(path);
    let now = options
        .now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut report = GcReport {
        dry_run: options.dry_run,
        grace: options.grace,
        ..GcReport::default()
    };

    // Mark.
    let inventory = Inventory::read(publisher, layout)?;
    report.images = inventory.len();
    let mut live_configs = BTreeSet::new();
    let mut live_layers = BTreeSet::new();
    let mut linked_only = BTreeSet::new();
    for image in inventory.images() {
        for slot in image.markers() {
            let path = at(&slot.marker(layout));
            let marker = fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| MarkerManifest::from_slice(&b).map_err(|e| e.to_string()))
                .map_err(|reason| LifecycleError::CorruptRecord {
                    path: path.clone(),
                    reason,
                })?;
            let config = marker
                .config_digest()
                .ok_or_else(|| LifecycleError::CorruptRecord {
                    path: path.clone(),
                    reason: format!("config digest {:?} is malformed", marker.config.digest),
                })?;
            live_configs.insert(config);
            for layer in &marker.layers {
                let digest: LayerDigest =
                    layer.digest.parse().map_err(|e: ducc_oci::DigestError| {
                        LifecycleError::CorruptRecord {
                            path: path.clone(),
                            reason: e.to_string(),
                        }
                    })?;
                live_layers.insert(digest);
            }
        }
        for (_, config) in image.links() {
            if let Some(config) = config
                && live_configs.insert(*config)
            {
                linked_only.insert(*config);
            }
        }
    }
    // A flat tree reached only by a link (a run killed between the link and the marker): its
    // layers are those of its record, or, without one, those whose origin.json lists it.
    let mut unresolved = BTreeSet::new();
    for config in &linked_only {
        let record = at(&layout.flat_complete_record(config));
        match fs::read(&record) {
            Ok(bytes) => {
                let parsed =
                    FlatRecord::from_slice(&bytes).map_err(|e| LifecycleError::CorruptRecord {
                        path: record.clone(),
                        reason: e.to_string(),
                    })?;
                live_layers.extend(parsed.layers);
            }
            Err(_) => {
                unresolved.insert(config.to_string());
            }
        }
    }
    let layers = find_layers(publisher, layout)?;
    for layer in &layers {
        if let Ok(origin) = &layer.origin
            && origin.origin.iter().any(|c| unresolved.contains(c))
        {
            live_layers.insert(layer.digest);
        }
    }

    // Candidates, with the grace period.
    let pending_path = at(&layout.gc_pending());
    let old = Pending::read(&pending_path)?;
    let mut pending = Pending {
        version: 1,
        pieces: BTreeMap::new(),
    };
    let mut candidates = Vec::new();
    let mut sight = |piece: Piece, origins: Vec<String>, pending: &mut Pending| {
        let key = piece.key();
        let since = match old.pieces.get(&key) {
            // A layer that gained a config since it was first found is being reused: its
            // period starts again.
            Some(seen) if origins.iter().all(|o| seen.origins.contains(o)) => seen.since,
            _ => now,
        };
        pending.pieces.insert(key, Sighting { since, origins });
        candidates.push(Piece { since, ..piece });
    };
    let store = PodmanStore::new(publisher, layout);
    for image in store.images()? {
        let live = ConfigDigest::from_hex(image.id()).is_ok_and(|c| live_configs.contains(&c));
        // The store is shared by every subdir of the repository: judge only this layout's.
        if !live && podman_image_is_ours(publisher, layout, image.layer()) {
            // An ID that is no path component (another writer's) is shown as the store.
            let (path, bytes) = match layout
                .podman_store()
                .join(format!("overlay-images/{}", image.id()))
            {
                Ok(path) => {
                    let bytes = tree_bytes(&at(&path));
                    (path, bytes)
                }
                Err(_) => (layout.podman_store(), 0),
            };
            let piece = piece(PieceKind::Podman, image.id().to_owned(), path, bytes);
            sight(piece, Vec::new(), &mut pending);
        }
    }
    for config in find_flats(publisher, layout)? {
        if !live_configs.contains(&config) {
            let path = layout.flat_image(&config);
            let bytes = tree_bytes(&at(&path));
            sight(
                piece(PieceKind::Flat, config.to_string(), path, bytes),
                Vec::new(),
                &mut pending,
            );
        }
    }
    let mut origin_at_mark = BTreeMap::new();
    for layer in &layers {
        let origins = layer.origin.as_ref().map(|o| o.origin.clone());
        if live_layers.contains(&layer.digest) {
            match &layer.origin {
                Ok(origin) => {
                    origin_at_mark.insert(layer.digest, origin.clone());
                }
                Err(reason) => report.problems.push(format!(
                    "{}: {reason} (left as it is)",
                    at(&layout.layer_origin(&layer.digest)).display()
                )),
            }
            continue;
        }
        let path = layout.layer_dir(&layer.digest);
        let bytes = tree_bytes(&at(&path));
        sight(
            piece(PieceKind::Layer, layer.digest.to_string(), path, bytes),
            origins.unwrap_or_default(),
            &mut pending,
        );
    }
    let grace = options.grace.as_secs();
    let (due, waiting): (Vec<Piece>, Vec<Piece>) = candidates
        .into_iter()
        .partition(|p| now.saturating_sub(p.since) >= grace);
    report.waiting = waiting;

    // Origins of kept layers: drop configs no image uses.
    let mut origin_updates = BTreeMap::new();
    for (digest, origin) in &origin_at_mark {
        let kept: Vec<String> = origin
            .origin
            .iter()
            .filter(|c| ConfigDigest::parse(c).is_ok_and(|c| live_configs.contains(&c)))
            .cloned()
            .collect();
        if kept.len() != origin.origin.len() {
            origin_updates.insert(*digest, Origin { origin: kept });
        }
    }

    if options.dry_run {
        report.origins_updated = origin_updates.len();
        report.removed = due;
        report.leftovers = publisher.remove_leftovers(true)?;
        return Ok(report);
    }

    // Sweep. The record goes first, so a run killed below starts the next one from the same
    // sightings; a piece due at its first sighting (no grace period) needs no record.
    let mut first = pending.clone();
    for piece in &due {
        if !old.pieces.contains_key(&piece.key()) {
            first.pieces.remove(&piece.key());
        }
    }
    write_pending(publisher, layout, &old, &first)?;
    let mut sweep = Sweep {
        publisher,
        report: &mut report,
        removed,
    };
    let podman: Vec<&Piece> = due.iter().filter(|p| p.kind == PieceKind::Podman).collect();
    if !podman.is_empty() {
        let ids: Vec<&str> = podman.iter().map(|p| p.id.as_str()).collect();
        store.remove_images(&ids)?;
        for piece in podman {
            sweep.done(piece.clone());
        }
    }
    let flats: Vec<Piece> = due
        .iter()
        .filter(|p| p.kind == PieceKind::Flat)
        .cloned()
        .collect();
    sweep.remove(&layout.flat_root(), flats)?;
    // Inside the lease on `.layers`: a layer that gained a config since the mark is in use again.
    let layers_lease = layout.layers_root();
    let mut tx = publisher.begin(&layers_lease)?;
    let mut layer_pieces = Vec::new();
    for piece in due.iter().filter(|p| p.kind == PieceKind::Layer) {
        let Ok(digest) = piece.id.parse::<LayerDigest>() else {
            continue;
        };
        // Read inside the lease (behind a gateway: at the newest revision, see cvmfs.rs).
        let now_origin = read_origin_in(&*tx, &layout.layer_origin(&digest))
            .map(|o| o.origin)
            .unwrap_or_default();
        let key = piece.key();
        let seen = pending.pieces.get(&key).map(|s| s.origins.clone());
        if now_origin
            .iter()
            .any(|o| !seen.as_ref().is_some_and(|s| s.contains(o)))
        {
            pending.pieces.insert(
                key,
                Sighting {
                    since: now,
                    origins: now_origin,
                },
            );
            sweep.report.reclaimed.push(piece.clone());
            continue;
        }
        layer_pieces.push(piece.clone());
    }
    let paths: Vec<RepoPath> = layer_pieces.iter().map(|p| p.path.clone()).collect();
    let paths = collapse(publisher, &layers_lease, &paths, 1)?;
    for path in &paths {
        tx.remove(path)?;
    }
    let mut updated = 0;
    for (digest, origin) in &origin_updates {
        // Rewritten only when nobody changed it since the mark.
        let file = layout.layer_origin(digest);
        if read_origin_in(&*tx, &file).ok().as_ref() == origin_at_mark.get(digest) {
            tx.write_file(&file, &mut &origin.to_json()[..])?;
            updated += 1;
        }
    }
    tx.commit()?;
    sweep.report.origins_updated = updated;
    for piece in layer_pieces {
        sweep.done(piece);
    }
    report.leftovers = publisher.remove_leftovers(false)?;

    for piece in &report.removed {
        pending.pieces.remove(&piece.key());
    }
    write_pending(publisher, layout, &first, &pending)?;
    Ok(report)
}

/// Whether the podman store image whose layer is `layer` is a flat tree of `layout` (its
/// `overlay/<layer>/diff` link leads into this layout's `.flat`): the store sits at the base
/// repository's root, shared by the layouts of every `cvmfs_repo` subdir. An image without that
/// link belongs to the layout at the base root.
fn podman_image_is_ours(publisher: &dyn Publisher, layout: &Layout, layer: &str) -> bool {
    let Ok(diff) = layout.podman_store().join(format!("overlay/{layer}/diff")) else {
        return false;
    };
    let Ok(target) = fs::read_link(publisher.published_path(&diff)) else {
        return layout.root().is_root();
    };
    let mut parts: Vec<String> = diff
        .parent()
        .map(|p| p.components().map(str::to_owned).collect())
        .unwrap_or_default();
    for part in target.iter() {
        match part.to_str() {
            Some("..") => {
                if parts.pop().is_none() {
                    return false;
                }
            }
            Some(".") => {}
            Some(name) => parts.push(name.to_owned()),
            None => return false,
        }
    }
    RepoPath::new(parts.join("/")).is_ok_and(|p| p.starts_with(&layout.flat_root()))
}

fn piece(kind: PieceKind, id: String, path: RepoPath, bytes: u64) -> Piece {
    Piece {
        kind,
        id,
        path,
        bytes,
        since: 0,
    }
}

struct Sweep<'a> {
    publisher: &'a dyn Publisher,
    report: &'a mut GcReport,
    removed: &'a mut dyn FnMut(&Piece),
}

impl Sweep<'_> {
    fn done(&mut self, piece: Piece) {
        (self.removed)(&piece);
        self.report.removed.push(piece);
    }

    /// Removes `pieces` (below `lease`) in one transaction.
    fn remove(&mut self, lease: &RepoPath, pieces: Vec<Piece>) -> Result<(), LifecycleError> {
        if pieces.is_empty() {
            return Ok(());
        }
        let paths: Vec<RepoPath> = pieces.iter().map(|p| p.path.clone()).collect();
        let mut unused = DeleteReport::default();
        super::delete::remove_grouped(
            self.publisher,
            BTreeMap::from([(lease.clone(), paths)]),
            1,
            &mut unused,
            &mut |_| {},
        )?;
        for piece in pieces {
            self.done(piece);
        }
        Ok(())
    }
}

/// Publishes `new` as the gc record unless it equals `old` (an empty record is removed).
fn write_pending(
    publisher: &dyn Publisher,
    layout: &Layout,
    old: &Pending,
    new: &Pending,
) -> Result<(), LifecycleError> {
    if old.pieces == new.pieces {
        return Ok(());
    }
    let path = layout.gc_pending();
    let mut tx = publisher.begin(&layout.gc_dir())?;
    if new.pieces.is_empty() {
        tx.remove(&path)?;
    } else {
        tx.write_file(&path, &mut &new.to_json()[..])?;
    }
    tx.commit()?;
    Ok(())
}

/// The `origin.json` at `path` as `tx` sees it (empty when there is none).
fn read_origin_in(tx: &dyn crate::Transaction, path: &RepoPath) -> Result<Origin, String> {
    match tx.read_file(path).map_err(|e| e.to_string())? {
        Some(bytes) => Origin::from_slice(&bytes).map_err(|e| e.to_string()),
        None => Ok(Origin::default()),
    }
}

/// The layer directories of `.layers/<hh>/<hex>` (names that are not digests are not ours and
/// are left alone), with their `origin.json`.
fn find_layers(
    publisher: &dyn Publisher,
    layout: &Layout,
) -> Result<Vec<FoundLayer>, LifecycleError> {
    let mut out = Vec::new();
    for hex in sharded(&publisher.published_path(&layout.layers_root()))? {
        let Ok(digest) = format!("sha256:{hex}").parse::<LayerDigest>() else {
            continue;
        };
        let origin = Origin::read(&publisher.published_path(&layout.layer_origin(&digest)))
            .map_err(|e| e.to_string());
        out.push(FoundLayer { digest, origin });
    }
    Ok(out)
}

/// The flat trees of `.flat/<hh>/<cfg>`.
fn find_flats(
    publisher: &dyn Publisher,
    layout: &Layout,
) -> Result<Vec<ConfigDigest>, LifecycleError> {
    Ok(sharded(&publisher.published_path(&layout.flat_root()))?
        .iter()
        .filter_map(|hex| ConfigDigest::from_hex(hex).ok())
        .collect())
}

/// The names of the directories two levels below `root` whose shard is their first two
/// characters (`<hh>/<hex>`).
pub(super) fn sharded(root: &Path) -> Result<Vec<String>, LifecycleError> {
    let mut out = Vec::new();
    for shard in dir_names(root)? {
        let dir = root.join(&shard);
        for name in dir_names(&dir)? {
            if name.starts_with(&shard) {
                out.push(name);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The real subdirectories of `dir` (none when it is missing).
fn dir_names(dir: &Path) -> Result<Vec<String>, LifecycleError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(read_error(dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(read_error(dir))?;
        if entry.file_type().map_err(read_error(dir))?.is_dir()
            && let Some(name) = entry.file_name().to_str()
        {
            out.push(name.to_owned());
        }
    }
    Ok(out)
}

/// The apparent size of every file below `path` (symlinks not followed; unreadable parts count
/// as nothing).
pub(super) fn tree_bytes(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return if meta.is_file() { meta.len() } else { 0 };
    }
    let Ok(entries) = fs::read_dir(path) else {
        return 0;
    };
    entries.flatten().map(|e| tree_bytes(&e.path())).sum()
}
