//! The images a repository records, read from its published tree.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use super::{LifecycleError, read_error};
use crate::layout::{Arch, Layout, PublicName, RepoPath};
use crate::publisher::Publisher;
use crate::state::ImageSlot;
use ducc_oci::ConfigDigest;

/// The name of a marker file in its directory.
const MARKER_FILE: &str = "manifest.json";

/// One image the repository records under a public name: any of its markers or links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedImage {
    name: PublicName,
    markers: Vec<ImageSlot>,
    links: Vec<(RepoPath, Option<ConfigDigest>)>,
}

impl RecordedImage {
    fn new(name: PublicName) -> RecordedImage {
        RecordedImage {
            name,
            markers: Vec::new(),
            links: Vec::new(),
        }
    }

    /// The public name.
    pub fn name(&self) -> &PublicName {
        &self.name
    }

    /// The slots whose marker is published: the plain one, or one per platform.
    pub fn markers(&self) -> &[ImageSlot] {
        &self.markers
    }

    /// The published links of the image (the public symlink, `.multiarch/<arch>/` links), each
    /// with the config of the flat tree it points at (none for a multi-platform image's variant
    /// symlink).
    pub fn links(&self) -> &[(RepoPath, Option<ConfigDigest>)] {
        &self.links
    }

    /// Whether this is one platform or more of a multi-platform image.
    pub fn is_multiarch(&self) -> bool {
        self.markers.iter().any(|s| s.arch().is_some())
    }
}

/// The images a repository records, by public name.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    images: BTreeMap<String, RecordedImage>,
}

impl Inventory {
    /// Reads the markers under `.metadata/` and the links under the layout root and
    /// `.multiarch/` as `publisher` shows them published, after bringing its view to the
    /// newest revision ([`Publisher::refresh_view`]): behind a gateway a node's own view lags
    /// behind what other nodes (and its own ingests) published, and everything that reads the
    /// inventory (`list`, `prune`, `delete-image`, gc's mark) decides from it.
    ///
    /// # Errors
    /// [`LifecycleError::Read`] when a directory of the tree cannot be read;
    /// [`LifecycleError::Publish`] when the view cannot be brought up to date.
    pub fn read(publisher: &dyn Publisher, layout: &Layout) -> Result<Inventory, LifecycleError> {
        publisher.refresh_view(crate::RefreshPoint::Start)?;
        let mut inventory = Inventory::default();
        let at = |path: &RepoPath| publisher.published_path(path);

        // Plain markers: .metadata/<registry>/<repository>:<tag>/manifest.json.
        let metadata = layout.metadata_root();
        let skip = [
            layout.gc_dir(),
            metadata.join(".multiarch").unwrap_or_default(),
        ];
        walk(&at(&metadata), &RepoPath::root(), &mut |rel, kind| {
            let full = metadata.join(rel.as_path()).unwrap_or_default();
            if skip.contains(&full) {
                return Walk::Skip;
            }
            if kind == Kind::Dir && at(&full).join(MARKER_FILE).is_file() {
                if let Some(name) = PublicName::from_path(rel) {
                    inventory
                        .entry(&name)
                        .markers
                        .push(ImageSlot::plain(name.clone()));
                }
                return Walk::Skip;
            }
            Walk::Descend
        })?;

        // Platform markers: .metadata/.multiarch/<arch>/<registry>/<repository>:<tag>/.
        let arch_markers = metadata.join(".multiarch").unwrap_or_default();
        for (arch, arch_dir) in arch_dirs(&at(&arch_markers))? {
            walk(&arch_dir, &RepoPath::root(), &mut |rel, kind| {
                if kind == Kind::Dir && arch_dir.join(rel.as_path()).join(MARKER_FILE).is_file() {
                    if let Some(name) = PublicName::from_path(rel) {
                        inventory
                            .entry(&name)
                            .markers
                            .push(ImageSlot::platform(name.clone(), arch.clone()));
                    }
                    return Walk::Skip;
                }
                Walk::Descend
            })?;
        }

        // Public links: <registry>/<repository>:<tag> below the layout root.
        let root = layout.root().clone();
        let podman = layout.podman_store();
        walk(&at(&root), &RepoPath::root(), &mut |rel, kind| {
            let full = root.join(rel.as_path()).unwrap_or_default();
            let first = rel.components().next().unwrap_or("");
            if first.starts_with('.') || full == podman {
                return Walk::Skip;
            }
            if kind == Kind::Symlink
                && let Some((name, config)) = link_of(&at(&full), rel)
            {
                inventory.entry(&name).links.push((full, config));
            }
            Walk::Descend
        })?;

        // Platform links: .multiarch/<arch>/<registry>/<repository>:<tag>.
        let multiarch = layout.multiarch_root();
        for (arch, arch_dir) in arch_dirs(&at(&multiarch))? {
            let arch_root = layout.multiarch_dir(&arch);
            walk(&arch_dir, &RepoPath::root(), &mut |rel, kind| {
                if kind == Kind::Symlink {
                    let full = arch_root.join(rel.as_path()).unwrap_or_default();
                    if let Some((name, config)) = link_of(&at(&full), rel) {
                        inventory.entry(&name).links.push((full, config));
                    }
                }
                Walk::Descend
            })?;
        }
        Ok(inventory)
    }

    fn entry(&mut self, name: &PublicName) -> &mut RecordedImage {
        self.images
            .entry(name.to_string())
            .or_insert_with(|| RecordedImage::new(name.clone()))
    }

    /// The recorded images, by name.
    pub fn images(&self) -> impl Iterator<Item = &RecordedImage> {
        self.images.values()
    }

    /// The image recorded under `name`.
    pub fn get(&self, name: &PublicName) -> Option<&RecordedImage> {
        self.images.get(&name.to_string())
    }

    /// How many images are recorded.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// Whether no image is recorded.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }
}

/// The name and flat-tree config of a symlink at `published` that ducc wrote as `rel` (relative
/// to the layout root or to `.multiarch/<arch>/`): its name parses and its text leads into
/// `.flat/` (a plain link) or `.multiarch/` (a variant symlink).
fn link_of(published: &Path, rel: &RepoPath) -> Option<(PublicName, Option<ConfigDigest>)> {
    let name = PublicName::from_path(rel)?;
    let target = fs::read_link(published).ok()?;
    let parts: Vec<&str> = target
        .to_str()?
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    match parts.as_slice() {
        [.., ".flat", _, hex] => Some((name, ConfigDigest::from_hex(hex).ok())),
        _ if parts.contains(&".multiarch") => Some((name, None)),
        _ => None,
    }
}

/// The `<arch>` directories of a `.multiarch` tree (real directories only: aliases are
/// symlinks), with their published paths.
fn arch_dirs(dir: &Path) -> Result<Vec<(Arch, std::path::PathBuf)>, LifecycleError> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(read_error(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(read_error(dir))?;
        if !entry.file_type().map_err(read_error(dir))?.is_dir() {
            continue;
        }
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let (architecture, variant) = match name.split_once(':') {
            Some((a, v)) => (a, Some(v)),
            None => (name, None),
        };
        if let Ok(arch) = Arch::new(architecture, variant) {
            out.push((arch, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    Symlink,
    Other,
}

enum Walk {
    Descend,
    Skip,
}

/// Calls `visit` for every entry below `dir` (paths relative to it), without following symlinks;
/// a missing `dir` is empty.
fn walk(
    dir: &Path,
    rel: &RepoPath,
    visit: &mut dyn FnMut(&RepoPath, Kind) -> Walk,
) -> Result<(), LifecycleError> {
    let here = dir.join(rel.as_path());
    let entries = match fs::read_dir(&here) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && rel.is_root() => return Ok(()),
        Err(e) => return Err(read_error(&here)(e)),
    };
    let mut children = Vec::new();
    for entry in entries {
        let entry = entry.map_err(read_error(&here))?;
        let kind = entry.file_type().map_err(read_error(&here))?;
        let kind = if kind.is_dir() {
            Kind::Dir
        } else if kind.is_symlink() {
            Kind::Symlink
        } else {
            Kind::Other
        };
        if let Some(name) = entry.file_name().to_str()
            && let Ok(child) = rel.join(name)
        {
            children.push((child, kind));
        }
    }
    children.sort_by(|a, b| a.0.cmp(&b.0));
    for (child, kind) in children {
        if let Walk::Descend = visit(&child, kind)
            && kind == Kind::Dir
        {
            walk(dir, &child, visit)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalPublisher;
    use ducc_oci::RepositoryName;

    #[test]
    fn markers_and_links_are_found_by_name_and_foreign_entries_ignored() {
        let root = tempfile::tempdir().unwrap();
        let repo = RepositoryName::parse("r/sub").unwrap();
        let layout = Layout::of(&repo);
        let publisher = LocalPublisher::open(root.path(), &repo).unwrap();
        let cfg = ConfigDigest::from_hex(&"c1".repeat(32)).unwrap();
        let plain = PublicName::tagged("127.0.0.1:5000", "library/app", "1.0").unwrap();
        let digest_only =
            PublicName::by_digest("reg.io", "a", &format!("sha256:{}", "d".repeat(64))).unwrap();
        let multi = PublicName::tagged("reg.io", "multi", "2").unwrap();
        let arm = Arch::new("arm64", Some("v8")).unwrap();
        let put = |path: RepoPath, content: Option<&Path>| {
            let mut tx = publisher.begin(&path).unwrap();
            match content {
                Some(target) => tx.symlink(&path, target).unwrap(),
                None => tx.write_file(&path, &mut &b"{}"[..]).unwrap(),
            }
            tx.commit().unwrap();
        };
        put(layout.marker_manifest(&plain), None);
        put(
            layout.public_link(&plain),
            Some(&layout.public_link_target(&plain, &cfg)),
        );
        put(layout.marker_manifest(&digest_only), None);
        put(layout.arch_marker_manifest(&multi, &arm), None);
        put(
            layout.arch_link(&multi, &arm),
            Some(&layout.arch_link_target(&multi, &arm, &cfg)),
        );
        let default = Arch::new("amd64", None).unwrap();
        put(
            layout.public_link(&multi),
            Some(&layout.variant_link_target(&multi, &default)),
        );
        // Not ours: a symlink elsewhere, a file with a name-like path, an alias link.
        put(
            RepoPath::new("sub/notes/x:1").unwrap(),
            Some(Path::new("/etc")),
        );
        put(RepoPath::new("sub/reg.io/readme:txt").unwrap(), None);
        put(layout.arch_alias("aarch64"), Some(Path::new("arm64:v8")));

        let inventory = Inventory::read(&publisher, &layout).unwrap();
        let names: Vec<String> = inventory.images().map(|i| i.name().to_string()).collect();
        assert_eq!(
            names,
            [
                "127.0.0.1:5000/library/app:1.0".to_owned(),
                format!("reg.io/a:sha256:{}", "d".repeat(64)),
                "reg.io/multi:2".to_owned(),
            ]
        );
        let app = inventory.get(&plain).unwrap();
        assert_eq!(app.markers(), [ImageSlot::plain(plain.clone())]);
        assert_eq!(app.links(), [(layout.public_link(&plain), Some(cfg))]);
        assert!(!app.is_multiarch());
        let m = inventory.get(&multi).unwrap();
        assert!(m.is_multiarch());
        assert_eq!(
            m.markers(),
            [ImageSlot::platform(multi.clone(), arm.clone())]
        );
        let links: Vec<_> = m.links().iter().map(|(p, c)| (p.clone(), *c)).collect();
        assert_eq!(
            links,
            [
                (layout.public_link(&multi), None),
                (layout.arch_link(&multi, &arm), Some(cfg)),
            ]
        );
        assert!(inventory.get(&digest_only).unwrap().links().is_empty());
    }

    #[test]
    fn an_empty_repository_records_nothing() {
        let root = tempfile::tempdir().unwrap();
        let repo = RepositoryName::parse("r").unwrap();
        let publisher = LocalPublisher::open(root.path(), &repo).unwrap();
        let inventory = Inventory::read(&publisher, &Layout::of(&repo)).unwrap();
        assert!(inventory.is_empty());
        assert_eq!(inventory.len(), 0);
    }
}
