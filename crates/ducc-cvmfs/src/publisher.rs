//! The publisher interface shared by the `local` and `cvmfs` backends.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::PublishError;
use crate::layout::RepoPath;

/// What a publisher can store of overlayfs whiteouts (char device 0/0 for `.wh.NAME`, the xattr
/// `trusted.overlay.opaque=y` for `.wh..wh..opq`), so the caller can pick the layer form
/// (SPEC section 3) before converting anything.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OverlaySupport {
    /// Both whiteout devices and opaque-directory xattrs are stored (local publisher, privileged).
    Full,
    /// Whiteout devices are stored but xattrs are dropped (`cvmfs_server ingest` on a
    /// non-gateway stratum 0): overlay form there writes an opaque directory as whiteout
    /// devices for what the stack below holds in it (`ducc_unpack::WhiteoutFormat::OverlayDevices`);
    /// a layer tar that still carries the opaque xattr fails ([`crate::PublishError::WouldDrop`]).
    DevicesOnly,
    /// Overlay form cannot be stored; layers go in with raw `.wh.` names.
    No {
        /// Why, in words for the user.
        reason: String,
    },
}

/// The largest file [`Transaction::read_file`] reads (metadata files: a podman store's
/// `images.json` of thousands of images stays far below it).
pub const READ_LIMIT: u64 = 64 << 20;

/// Reads the regular file at `path` of this host's filesystem as [`Transaction::read_file`]
/// does: `None` when nothing is there, an error when something other than a regular file is.
pub(crate) fn read_small(path: &Path) -> Result<Option<Vec<u8>>, PublishError> {
    use std::io::Read as _;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) => {
            return Ok(None);
        }
        Err(e) => return Err(crate::error::io_err("read", path)(e)),
    };
    let meta = file
        .metadata()
        .map_err(crate::error::io_err("inspect", path))?;
    if !meta.is_file() || std::fs::symlink_metadata(path).is_ok_and(|m| m.is_symlink()) {
        return Err(crate::error::io_err("read", path)(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a regular file",
        )));
    }
    if meta.len() > READ_LIMIT {
        return Err(PublishError::CorruptFile {
            path: path.to_owned(),
            reason: format!("{} bytes, more than the {READ_LIMIT} read back", meta.len()),
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(READ_LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(crate::error::io_err("read", path))?;
    Ok(Some(bytes))
}

/// The target of the symlink at `path` of this host's filesystem; `None` when there is none.
pub(crate) fn read_link_at(path: &Path) -> Result<Option<PathBuf>, PublishError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_symlink() => std::fs::read_link(path)
            .map(Some)
            .map_err(crate::error::io_err("read", path)),
        Ok(_) => Ok(None),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) =>
        {
            Ok(None)
        }
        Err(e) => Err(crate::error::io_err("inspect", path)(e)),
    }
}

/// The error of a [`Transaction::fill_dir`] callback.
pub type FillError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Options of [`Transaction::ingest_tar`] and [`Transaction::fill_dir`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestOptions {
    /// Make the directory a nested catalog (`.cvmfscatalog` in it).
    pub catalog: bool,
    /// The tree's regular files are files of layers published before (a flat tree): a publisher
    /// may store them by reference to those layers' stored objects instead of storing their
    /// bytes again (see [`FillHints::record_sources`]).
    pub from_layers: bool,
}

/// What a publisher asks of the tree a [`Transaction::fill_dir`] callback builds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FillHints {
    /// Tag each regular file with the layer entry it came from (ducc-unpack's
    /// `ExtractOptions::record_sources`): the publisher stores tagged files by reference.
    pub record_sources: bool,
    /// Leave device files and FIFOs out of the tree and tell the caller which (ducc-unpack's
    /// `ExtractOptions::leave_out_special_files`): the repository cannot store them (a cvmfs
    /// gateway drops them without a word), and a tree that holds one is refused.
    pub leave_out_special_files: bool,
}

/// Who holds a [`Publisher::gc_lock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcLock {
    /// A conversion of one image (shared: conversions run side by side, never during a gc).
    Convert,
    /// A garbage collection (exclusive: it waits for the conversions running, and new ones wait
    /// for it).
    Collect,
}

/// A held [`Publisher::gc_lock`]; dropping it releases the lock (so does the death of its
/// process).
#[derive(Debug)]
pub struct GcGuard {
    /// A lock of the publisher's own released with this one (the cvmfs publisher's lock in the
    /// repository behind a gateway), dropped first.
    _also: Option<Box<dyn std::fmt::Debug + Send + Sync>>,
    _lock: crate::lock::FileLock,
}

impl GcGuard {
    /// Takes the lock file at `path` for `kind`, waiting as long as needed.
    pub(crate) fn take(path: &Path, kind: GcLock) -> Result<GcGuard, PublishError> {
        let lock = match kind {
            GcLock::Convert => crate::lock::FileLock::shared(path),
            GcLock::Collect => crate::lock::FileLock::exclusive(path),
        }
        .map_err(crate::error::io_err("lock", path))?;
        Ok(GcGuard {
            _lock: lock,
            _also: None,
        })
    }

    /// This guard, also holding `other` (released first when it is dropped).
    pub(crate) fn holding(self, other: Box<dyn std::fmt::Debug + Send + Sync>) -> GcGuard {
        GcGuard {
            _also: Some(other),
            ..self
        }
    }
}

/// Where a caller is when it asks [`Publisher::refresh_view`] to bring this host's view of the
/// repository up to date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefreshPoint {
    /// A command or a pass starts and reads the repository to decide its work: other
    /// publisher nodes may have published anything since.
    Start,
    /// The next image of a pass starts: only this publisher's own writes since its last
    /// refresh are known to be missing from its view (behind a cvmfs gateway its own ingests
    /// leave the view where it was).
    NextImage,
}

/// What a publisher tells while it works, beyond what its methods return: installed with
/// [`Publisher::observe`] (an engine turns it into events).
pub trait PublishObserver: Send + Sync {
    /// A lease this host asked for is held by another publisher node (a cvmfs gateway said
    /// busy): the call waits and retries with backoff for up to `limit`.
    fn lease_busy(&self, lease: &str, limit: std::time::Duration);

    /// The wait for `lease` ended after `waited`: granted, or given up at the limit.
    fn lease_wait_ended(&self, lease: &str, waited: std::time::Duration, granted: bool);
}

/// A backend that publishes into a repository through transactions.
///
/// Object safe, so a caller can choose the backend at run time (`Box<dyn Publisher>`).
pub trait Publisher: Send + Sync {
    /// Opens a transaction scoped to `lease` (a sub-path of the repository; the root for all of
    /// it). Blocks while another transaction of this host holds an overlapping lease (string
    /// prefix rule, as a cvmfs gateway); transactions on disjoint leases run at once. A thread
    /// that holds a transaction must not begin an overlapping one: it would wait for itself.
    ///
    /// # Errors
    /// Lock, filesystem or `cvmfs_server` failures, naming the lease.
    fn begin(&self, lease: &RepoPath) -> Result<Box<dyn Transaction + '_>, PublishError>;

    /// Where the published content of `path` can be read on this host (the local tree, or
    /// `/cvmfs/REPO/...`): for "already converted" checks and reading metadata back.
    fn published_path(&self, path: &RepoPath) -> PathBuf;

    /// What this publisher can store of overlayfs whiteouts.
    fn overlay_support(&self) -> OverlaySupport;

    /// Opens a group: transactions begun through it are published together when the group
    /// commits, in as few revisions as the backend allows (see [`Group`]).
    fn group(&self) -> Box<dyn Group + '_>;

    /// Opens a group for data that is worth publishing while the next transaction is prepared
    /// (an image's new layers: the next one decodes while the server ingests the one before),
    /// whose transactions are on `leases` (and on leases to make room for them: catalog
    /// markers of their parents). As [`Publisher::group`], but the publisher may start
    /// publishing each transaction as it commits into the group, to be complete at the group's
    /// commit; dropped without its commit, nothing of it is published. Another group of this
    /// publisher that publishes first ends that early: what was committed into this group so
    /// far goes in first. The default is [`Publisher::group`].
    fn streaming_group(&self, leases: &[RepoPath]) -> Box<dyn Group + '_> {
        let _ = leases;
        self.group()
    }

    /// Whether layer directories take overlay-form whiteouts where the user chose no form and
    /// [`Publisher::overlay_support`] allows them (the local publisher, whose trees overlayfs
    /// reads directly; the cvmfs one, whose layer directories containerd's CernVM-FS
    /// snapshotter stacks); otherwise raw `.wh.` names (OCI form). A publisher that prefers
    /// overlay form but cannot store it gets raw names with a notice.
    fn prefers_overlay_whiteouts(&self) -> bool {
        false
    }

    /// Keeps garbage collection and conversions of this host apart (a `flock` in the
    /// publisher's state directory, so it dies with its process): a conversion holds it shared
    /// from its "already converted" check to its marker, so a gc never sees an image half
    /// written, and a gc holds it exclusive from its mark to its last removal. Publishers on
    /// other hosts are not held off (see `ducc_cvmfs::lifecycle`).
    ///
    /// # Errors
    /// When the lock file cannot be created or locked.
    fn gc_lock(&self, kind: GcLock) -> Result<GcGuard, PublishError>;

    /// Finds what dead processes left in the publisher's state directory (staging areas, lease
    /// files) and, unless `dry_run`, removes it. Returns the paths found.
    ///
    /// # Errors
    /// When the state directory cannot be read or a leftover cannot be removed.
    fn remove_leftovers(&self, dry_run: bool) -> Result<Vec<PathBuf>, PublishError>;

    /// Brings this host's view of the published repository ([`Publisher::published_path`]) to
    /// the newest revision where it may lag, before reads outside a lease that decide work
    /// (the "already converted" check, `list`, `prune`, `delete-image`, gc's mark). Returns
    /// whether it did anything. Default: nothing to do (the view is the repository).
    ///
    /// The `cvmfs` publisher behind a gateway runs `cvmfs_server mount REPO` (a node sees other
    /// nodes' publishes only after a remount, and its own gateway ingests only after the next
    /// one: cvmfs-gateway-behaviour.md, section 7): at [`RefreshPoint::Start`] always, at
    /// [`RefreshPoint::NextImage`] only when it published since its last remount or that
    /// remount is over a minute old.
    ///
    /// # Errors
    /// When the remount fails.
    fn refresh_view(&self, point: RefreshPoint) -> Result<bool, PublishError> {
        let _ = point;
        Ok(false)
    }

    /// Tells `observer` what this publisher does besides its results (lease waits); replaces an
    /// observer installed before. Default: nothing to tell.
    fn observe(&self, observer: std::sync::Arc<dyn PublishObserver>) {
        let _ = observer;
    }
}

/// One open transaction. Paths must lie inside the lease. Dropping it without
/// [`Transaction::commit`] aborts it.
pub trait Transaction {
    /// The lease this transaction was opened on.
    fn lease(&self) -> &RepoPath;

    /// Writes the tree of an uncompressed, canonical tar stream (parents first, each path once,
    /// as `ducc-unpack` writes it) at `dir`, which must not exist yet (remove it first to
    /// replace it). Missing parents of `dir` are created (0755).
    ///
    /// # Errors
    /// [`PublishError::AlreadyExists`], [`PublishError::OutsideLease`], unpack or ingest errors.
    fn ingest_tar(
        &mut self,
        dir: &RepoPath,
        tar: &mut dyn Read,
        options: IngestOptions,
    ) -> Result<(), PublishError>;

    /// Lets `fill` build the tree of `dir` on this host's filesystem: `fill` gets an empty,
    /// existing directory and the publisher's [`FillHints`]; what it leaves there is published
    /// at commit, never before, so a `fill` that fails (a digest mismatch found at the end of a
    /// layer) publishes nothing. Where the tree goes meanwhile is the backend's choice (the local
    /// publisher builds it in its staging area and moves it into place; `cvmfs` keeps it in
    /// scratch space and ingests it, or grafts its files onto stored objects).
    ///
    /// # Errors
    /// As [`Transaction::ingest_tar`]; [`PublishError::Fill`] with `fill`'s error, after the
    /// half-built tree was removed.
    fn fill_dir(
        &mut self,
        dir: &RepoPath,
        options: IngestOptions,
        fill: &mut dyn FnMut(&Path, FillHints) -> Result<(), FillError>,
    ) -> Result<(), PublishError>;

    /// Writes a regular file (mode 0644), replacing a file or symlink at `path`. Missing parents
    /// are created (0755).
    ///
    /// # Errors
    /// [`PublishError::AlreadyExists`] when `path` is a directory, lease and I/O errors.
    fn write_file(&mut self, path: &RepoPath, content: &mut dyn Read) -> Result<(), PublishError>;

    /// Makes a symlink at `path` pointing to `target` (verbatim, usually relative), replacing a
    /// file or symlink there.
    ///
    /// # Errors
    /// As [`Transaction::write_file`].
    fn symlink(&mut self, path: &RepoPath, target: &Path) -> Result<(), PublishError>;

    /// The content of the regular file at `path` as this transaction sees it: what it wrote,
    /// else what earlier transactions of its group wrote (committed into the group, not
    /// published yet), else the published file; `None` when nothing is there.
    /// Read-modify-write of a file that several transactions (or
    /// images) change, such as `origin.json` or the podman store's `images.json`, goes through
    /// this inside the lease that rewrites it, so no change of another is lost. Files larger
    /// than [`READ_LIMIT`] are refused.
    ///
    /// # Errors
    /// [`PublishError::OutsideLease`]; [`PublishError::Io`] when something other than a regular
    /// file is there or it cannot be read; [`PublishError::CorruptFile`] for a file over the
    /// limit or one staged inside a tar stream (not readable before the commit).
    fn read_file(&self, path: &RepoPath) -> Result<Option<Vec<u8>>, PublishError>;

    /// The target of the symlink at `path` as this transaction sees it (as
    /// [`Transaction::read_file`]); `None` when no symlink is there.
    ///
    /// # Errors
    /// As [`Transaction::read_file`].
    fn read_link(&self, path: &RepoPath) -> Result<Option<PathBuf>, PublishError>;

    /// Removes `path` and everything below it; a missing path is not an error.
    ///
    /// # Errors
    /// Lease, I/O or `cvmfs_server` errors.
    fn remove(&mut self, path: &RepoPath) -> Result<(), PublishError>;

    /// Publishes what the transaction wrote and releases the lease.
    ///
    /// # Errors
    /// The first failure; the transaction is then aborted as far as the backend can.
    fn commit(self: Box<Self>) -> Result<(), PublishError>;

    /// Throws away what the transaction wrote (as far as the backend can: see each backend) and
    /// releases the lease.
    ///
    /// # Errors
    /// When cleaning up fails.
    fn abort(self: Box<Self>) -> Result<(), PublishError>;
}

/// What a [`Group`] published, for reports and benchmarks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Published {
    /// Revisions made (`cvmfs_server`: each ingest and each publish is one; 0 for publishers
    /// without revisions).
    pub revisions: usize,
    /// Regular files of trees made of layer files ([`IngestOptions::from_layers`]) published as
    /// references to the objects their layers stored (CernVM-FS graft files): not hashed again.
    pub grafted_files: u64,
    /// Regular files of such trees that could not be grafted and went in with their content.
    pub copied_files: u64,
}

impl std::ops::AddAssign for Published {
    fn add_assign(&mut self, other: Published) {
        self.revisions += other.revisions;
        self.grafted_files += other.grafted_files;
        self.copied_files += other.copied_files;
    }
}

/// Transactions published together: each [`Transaction::commit`] of a transaction begun
/// through the group hands its content to the group, and [`Group::commit`] publishes all of it.
/// A transaction aborted (or dropped) leaves nothing in the group, so one failing part never
/// undoes the others. Dropping a group without committing it publishes nothing of it.
///
/// The local publisher publishes each transaction at its own commit (its commits are renames);
/// `cvmfs` on a stratum 0 publishes a group as one revision (one ingest, or one mounted
/// transaction), behind a gateway one revision per lease. A group holds the leases of its
/// committed transactions until it commits; it never waits for a lease while holding others
/// (it publishes what it has first), so two groups cannot wait for each other.
pub trait Group: Send + Sync {
    /// The publisher of this group.
    fn publisher(&self) -> &dyn Publisher;

    /// Opens a transaction scoped to `lease` whose commit goes into this group.
    ///
    /// # Errors
    /// As [`Publisher::begin`], and the failure to publish what the group held when `lease`
    /// was busy.
    fn begin(&self, lease: &RepoPath) -> Result<Box<dyn Transaction + '_>, PublishError>;

    /// Publishes what the group holds now (its committed transactions) and releases their
    /// leases; the group stays open for more. Returns how many revisions it took.
    ///
    /// # Errors
    /// As [`Group::commit`].
    fn flush(&self) -> Result<Published, PublishError>;

    /// Opens a group inside this one (a batch of images, each in a group of its own): its
    /// transactions see what this group holds ([`Transaction::read_file`]) and may use the
    /// leases it holds; its [`Group::commit`] hands what they wrote to this group, to be
    /// published with it (it publishes nothing itself and returns nothing published); dropping
    /// it uncommitted drops what they wrote and nothing of this group. Its [`Group::flush`]
    /// publishes this group too. Transactions of one group (nested ones included) on one lease
    /// must not be open at the same time.
    fn nested(&self) -> Box<dyn Group + '_>;

    /// What this group published so far: its flushes, and what transactions begun through it
    /// (or through groups nested in it and committed into it) published at their own commit.
    fn published(&self) -> Published;

    /// Publishes what the group's committed transactions wrote and releases their leases.
    /// Returns what it published in all.
    ///
    /// # Errors
    /// The first failure; nothing of the group is published then, as far as the backend can
    /// tell (see each backend).
    fn commit(self: Box<Self>) -> Result<Published, PublishError>;
}

/// A group whose transactions publish at their own commit, for publishers that gain nothing
/// from grouping (their [`Publisher::group`]).
pub struct Ungrouped<'p> {
    publisher: &'p dyn Publisher,
}

impl<'p> Ungrouped<'p> {
    /// The group of `publisher`.
    pub fn new(publisher: &'p dyn Publisher) -> Self {
        Self { publisher }
    }
}

impl Group for Ungrouped<'_> {
    fn publisher(&self) -> &dyn Publisher {
        self.publisher
    }

    fn begin(&self, lease: &RepoPath) -> Result<Box<dyn Transaction + '_>, PublishError> {
        self.publisher.begin(lease)
    }

    fn flush(&self) -> Result<Published, PublishError> {
        Ok(Published::default())
    }

    fn nested(&self) -> Box<dyn Group + '_> {
        Box::new(Ungrouped::new(self.publisher))
    }

    fn published(&self) -> Published {
        Published::default()
    }

    fn commit(self: Box<Self>) -> Result<Published, PublishError> {
        Ok(Published::default())
    }
}

/// `Err(OutsideLease)` unless `path` is the lease or below it (path components).
pub(crate) fn check_lease(lease: &RepoPath, path: &RepoPath) -> Result<(), PublishError> {
    if path.starts_with(lease) {
        Ok(())
    } else {
        Err(PublishError::OutsideLease {
            path: path.clone(),
            lease: lease.clone(),
        })
    }
}

/// Makes each of `dirs` a nested catalog (an empty `.cvmfscatalog` in it) unless it already is,
/// one small transaction per missing marker, leased on the marker itself so it never blocks a
/// transaction on a sibling (a layer directory beside `.layers/<hh>/.cvmfscatalog`). Pass the
/// directories outermost first, e.g. [`crate::Layout::layer_catalog_dirs`] without the last
/// entry (which `ingest_tar` with `catalog: true` creates).
///
/// # Errors
/// The first failing transaction.
pub fn ensure_catalog_markers(group: &dyn Group, dirs: &[RepoPath]) -> Result<(), PublishError> {
    for dir in dirs {
        let marker = crate::Layout::catalog_marker(dir);
        if std::fs::symlink_metadata(group.publisher().published_path(&marker)).is_ok() {
            continue;
        }
        let mut tx = group.begin(&marker)?;
        tx.write_file(&marker, &mut std::io::empty())?;
        tx.commit()?;
    }
    Ok(())
}

/// Adds `config` to the `origin.json` of `layer`, reading the file inside the transaction that
/// rewrites it: two processes adding origins to one layer hold overlapping leases, so each reads
/// what the other published and no entry is lost. Returns whether the file changed; an entry
/// already listed publishes nothing.
///
/// # Errors
/// [`PublishError::CorruptFile`] when the existing file cannot be read or parsed (it is left as
/// it is), and transaction errors.
pub fn add_origin(
    group: &dyn Group,
    layout: &crate::Layout,
    layer: &ducc_oci::LayerDigest,
    config: &ducc_oci::ConfigDigest,
) -> Result<bool, PublishError> {
    let path = layout.layer_origin(layer);
    let mut tx = group.begin(&layout.layer_metadata_dir(layer))?;
    let mut origin = match tx.read_file(&path)? {
        Some(bytes) => {
            crate::Origin::from_slice(&bytes).map_err(|e| PublishError::CorruptFile {
                path: group.publisher().published_path(&path),
                reason: e.to_string(),
            })?
        }
        None => crate::Origin::default(),
    };
    if !origin.add(config) {
        tx.abort()?;
        return Ok(false);
    }
    tx.write_file(&path, &mut &origin.to_json()[..])?;
    tx.commit()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Layout, LocalPublisher};
    use ducc_oci::RepositoryName;

    #[test]
    fn catalog_markers_are_created_once_outermost_first() {
        let root = tempfile::tempdir().unwrap();
        let repo = RepositoryName::parse("r").unwrap();
        let publisher = LocalPublisher::open(root.path(), &repo).unwrap();
        let dirs = [
            RepoPath::new(".layers").unwrap(),
            RepoPath::new(".layers/ab").unwrap(),
        ];
        ensure_catalog_markers(&*publisher.group(), &dirs).unwrap();
        let inner = root.path().join("r/.layers/ab/.cvmfscatalog");
        assert_eq!(std::fs::read(&inner).unwrap(), b"");
        assert!(root.path().join("r/.layers/.cvmfscatalog").is_file());
        // A second call leaves existing markers alone.
        let before = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&inner).unwrap());
        ensure_catalog_markers(&*publisher.group(), &dirs).unwrap();
        let after = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&inner).unwrap());
        assert_eq!(after, before);
    }

    #[test]
    fn a_corrupt_origin_json_is_an_error_naming_it_and_stays_untouched() {
        let root = tempfile::tempdir().unwrap();
        let repo = RepositoryName::parse("r").unwrap();
        let layout = Layout::of(&repo);
        let publisher = LocalPublisher::open(root.path(), &repo).unwrap();
        let layer: ducc_oci::LayerDigest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        let config = ducc_oci::ConfigDigest::from_hex(&"cd".repeat(32)).unwrap();
        assert!(add_origin(&*publisher.group(), &layout, &layer, &config).unwrap());
        assert!(!add_origin(&*publisher.group(), &layout, &layer, &config).unwrap());
        let file = publisher.published_path(&layout.layer_origin(&layer));
        std::fs::write(&file, b"{\"origin\": [\"sha256:").unwrap();
        let other = ducc_oci::ConfigDigest::from_hex(&"ef".repeat(32)).unwrap();
        let err = add_origin(&*publisher.group(), &layout, &layer, &other).unwrap_err();
        assert!(
            err.to_string().contains(&file.display().to_string()),
            "{err}"
        );
        assert_eq!(std::fs::read(&file).unwrap(), b"{\"origin\": [\"sha256:");
    }
}
