//! `delete-image`: an image's markers, links and podman names go; its content stays for gc.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use super::{Inventory, LifecycleError, RecordedImage};
use crate::layout::{CATALOG_MARKER, Layout, PublicName, RepoPath};
use crate::podman::PodmanStore;
use crate::publisher::Publisher;

/// What [`delete_images`] would do for a list of names.
#[derive(Debug, Clone, Default)]
pub struct DeletePlan {
    /// The recorded images to delete, in the order asked.
    pub images: Vec<RecordedImage>,
    /// Names asked for that the repository does not record.
    pub missing: Vec<PublicName>,
}

impl DeletePlan {
    /// The paths removed for `image`, markers first (their directories), then links.
    pub fn paths(layout: &Layout, image: &RecordedImage) -> Vec<RepoPath> {
        let mut paths: Vec<RepoPath> = image
            .markers()
            .iter()
            .map(|slot| slot.marker_dir(layout))
            .collect();
        paths.extend(image.links().iter().map(|(link, _)| link.clone()));
        paths
    }
}

/// What [`delete_images`] did.
#[derive(Debug, Clone, Default)]
pub struct DeleteReport {
    /// Repository paths removed (markers' directories, links), as removed: a directory that
    /// held nothing else is removed in their place.
    pub removed: Vec<RepoPath>,
    /// Names taken off podman store images.
    pub podman_names: usize,
}

/// Looks `names` up in `inventory`: each recorded one once, in order; the others are missing.
pub fn plan_delete(inventory: &Inventory, names: &[PublicName]) -> DeletePlan {
    let mut plan = DeletePlan::default();
    let mut seen = BTreeSet::new();
    for name in names {
        if !seen.insert(name.to_string()) {
            continue;
        }
        match inventory.get(name) {
            Some(image) => plan.images.push(image.clone()),
            None => plan.missing.push(name.clone()),
        }
    }
    plan
}

/// Deletes `images`: every marker in one transaction (leased on `.metadata`), then the links, one
/// transaction per lease (`<registry>` below the layout root, `.multiarch`), then their names in
/// the podman store. `removed` is told each path as its transaction commits.
///
/// # Errors
/// The first failing transaction; what committed before it stays deleted, and a rerun deletes
/// the rest (an image whose marker is gone is still found by its links).
pub fn delete_images(
    publisher: &dyn Publisher,
    layout: &Layout,
    images: &[RecordedImage],
    removed: &mut dyn FnMut(&RepoPath),
) -> Result<DeleteReport, LifecycleError> {
    let mut report = DeleteReport::default();
    let markers: Vec<RepoPath> = images
        .iter()
        .flat_map(|i| i.markers().iter().map(|s| s.marker_dir(layout)))
        .collect();
    let mut groups: BTreeMap<RepoPath, Vec<RepoPath>> = BTreeMap::new();
    if !markers.is_empty() {
        groups.insert(layout.metadata_root(), markers);
    }
    remove_grouped(publisher, groups, 1, &mut report, removed)?;

    let mut groups: BTreeMap<RepoPath, Vec<RepoPath>> = BTreeMap::new();
    let multiarch = layout.multiarch_root();
    for (link, _) in images.iter().flat_map(|i| i.links()) {
        let lease = if link.starts_with(&multiarch) {
            multiarch.clone()
        } else {
            // <root>/<registry>: the link's first component below the layout root.
            let depth = layout.root().components().count() + 1;
            prefix(link, depth)
        };
        groups.entry(lease).or_default().push(link.clone());
    }
    for (lease, paths) in groups {
        // `.multiarch/<arch>` stays (alias links point at it); below a registry, a repository
        // directory whose every link goes goes with them.
        let keep_depth = if lease == multiarch { 2 } else { 1 };
        let group = BTreeMap::from([(lease, paths)]);
        remove_grouped(publisher, group, keep_depth, &mut report, removed)?;
    }

    let names: Vec<String> = images.iter().map(|i| i.name().podman_name()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    if !names.is_empty() && publisher.published_path(&layout.podman_store()).is_dir() {
        report.podman_names = PodmanStore::new(publisher, layout).remove_names(&names)?;
    }
    Ok(report)
}

/// The first `depth` components of `path`.
fn prefix(path: &RepoPath, depth: usize) -> RepoPath {
    let parts: Vec<&str> = path.components().take(depth).collect();
    RepoPath::new(parts.join("/")).unwrap_or_default()
}

/// Removes each group's paths in one transaction on its lease (collapsed, see [`collapse`]).
pub(super) fn remove_grouped(
    publisher: &dyn Publisher,
    groups: BTreeMap<RepoPath, Vec<RepoPath>>,
    keep_depth: usize,
    report: &mut DeleteReport,
    removed: &mut dyn FnMut(&RepoPath),
) -> Result<(), LifecycleError> {
    for (lease, paths) in groups {
        let paths = collapse(publisher, &lease, &paths, keep_depth)?;
        if paths.is_empty() {
            continue;
        }
        let mut tx = publisher.begin(&lease)?;
        for path in &paths {
            tx.remove(path)?;
        }
        tx.commit()?;
        for path in &paths {
            removed(path);
        }
        report.removed.extend(paths);
    }
    Ok(())
}

/// The paths to remove so that `paths` go: where every entry of a directory below `lease` goes
/// (a `.cvmfscatalog` marker aside), the directory itself, as one path, unless it lies fewer than
/// `keep_depth` levels below the lease. Nested paths are dropped, so each path is named once.
/// Paths that are not published are left out.
pub(super) fn collapse(
    publisher: &dyn Publisher,
    lease: &RepoPath,
    paths: &[RepoPath],
    keep_depth: usize,
) -> Result<Vec<RepoPath>, LifecycleError> {
    let depth_of_lease = lease.components().count();
    let mut set: BTreeSet<RepoPath> = paths
        .iter()
        .filter(|p| p.starts_with(lease) && *p != lease)
        .filter(|p| fs::symlink_metadata(publisher.published_path(p)).is_ok())
        .cloned()
        .collect();
    loop {
        let parents: BTreeSet<RepoPath> = set
            .iter()
            .filter_map(RepoPath::parent)
            .filter(|d| {
                d.starts_with(lease) && d.components().count() >= depth_of_lease + keep_depth
            })
            .filter(|d| !set.contains(d))
            .collect();
        let mut grew = false;
        for dir in parents {
            let published = publisher.published_path(&dir);
            let entries = fs::read_dir(&published).map_err(super::read_error(&published))?;
            let mut all_go = true;
            for entry in entries {
                let entry = entry.map_err(super::read_error(&published))?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else {
                    all_go = false;
                    break;
                };
                if name == CATALOG_MARKER {
                    continue;
                }
                if !dir.join(name).is_ok_and(|child| set.contains(&child)) {
                    all_go = false;
                    break;
                }
            }
            if all_go {
                set.insert(dir);
                grew = true;
            }
        }
        if !grew {
            break;
        }
    }
    let all: Vec<RepoPath> = set.iter().cloned().collect();
    Ok(all
        .into_iter()
        .filter(|p| !set.iter().any(|other| other != p && p.starts_with(other)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalPublisher;
    use ducc_oci::RepositoryName;

    fn write(publisher: &LocalPublisher, path: &str) {
        let path = RepoPath::new(path).unwrap();
        let mut tx = publisher.begin(&path).unwrap();
        tx.write_file(&path, &mut &b"x"[..]).unwrap();
        tx.commit().unwrap();
    }

    #[test]
    fn collapse_takes_whole_directories_but_not_the_kept_levels() {
        let root = tempfile::tempdir().unwrap();
        let repo = RepositoryName::parse("r").unwrap();
        let publisher = LocalPublisher::open(root.path(), &repo).unwrap();
        for path in [
            ".layers/ab/.cvmfscatalog",
            ".layers/ab/one/f",
            ".layers/ab/two/f",
            ".layers/cd/three/f",
            ".layers/cd/four/f",
        ] {
            write(&publisher, path);
        }
        let p = |s: &str| RepoPath::new(s).unwrap();
        let lease = p(".layers");
        let asked = [
            p(".layers/ab/one"),
            p(".layers/ab/two"),
            p(".layers/cd/three"),
            p(".layers/cd/gone"),
        ];
        assert_eq!(
            collapse(&publisher, &lease, &asked, 1).unwrap(),
            [p(".layers/ab"), p(".layers/cd/three")]
        );
        assert_eq!(
            collapse(&publisher, &lease, &asked, 2).unwrap(),
            [
                p(".layers/ab/one"),
                p(".layers/ab/two"),
                p(".layers/cd/three")
            ]
        );
    }

    #[test]
    fn names_not_recorded_are_missing_and_repeats_are_dropped() {
        let inventory = Inventory::default();
        let name = PublicName::tagged("reg.io", "a", "1").unwrap();
        let plan = plan_delete(&inventory, &[name.clone(), name.clone()]);
        assert!(plan.images.is_empty());
        assert_eq!(plan.missing, [name]);
    }
}
