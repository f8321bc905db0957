//! Whether a layer directory written in [`crate::WhiteoutFormat::OverlayDevices`] hides what
//! another stack below holds: its whiteout devices name what the stack it was written over held
//! under its opaque directories, and a layer directory is written once per blob.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::entry::EntryPath;

/// The paths that stacking `layer_dir` over the tree `below` (the layers beneath, flattened)
/// shows although the layer hides everything below `directories` (its
/// [`crate::Report::explicit_whiteout_dirs`]): entries of `below` in those directories that the
/// layer directory neither provides nor whites out, looked for recursively where the layer's
/// directory lies over one of `below`. An uncovered directory is named once, not its content.
/// Sorted.
///
/// Names are compared by directory listing, not `stat`: a publisher's own `/cvmfs/REPO` mount
/// (an overlay itself) lists a stored whiteout device but cannot `stat` it.
///
/// # Errors
/// When a directory cannot be listed.
///
/// Whiteouts the layer dropped ([`crate::Report::dropped_whiteouts`]: nothing to hide on the
/// stack it was written over) are checked with [`dropped_below`].
pub fn uncovered_below(
    layer_dir: &Path,
    below: &Path,
    directories: &[EntryPath],
) -> io::Result<Vec<EntryPath>> {
    let mut out = BTreeSet::new();
    for dir in directories {
        if let (Some(layer), Some(below)) = (inside(layer_dir, dir), inside(below, dir)) {
            walk(&layer, &below, dir, &mut out)?;
        }
    }
    Ok(out.into_iter().collect())
}

/// `root` joined with `path`, unless a directory on the way is a symlink (which could lead out
/// of the tree: these trees hold images' content).
fn inside(root: &Path, path: &EntryPath) -> Option<std::path::PathBuf> {
    let mut at = root.to_owned();
    let components: Vec<&[u8]> = path.components().collect();
    for (i, component) in components.iter().enumerate() {
        at.push(std::ffi::OsStr::from_bytes(component));
        if i + 1 < components.len()
            && std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink())
        {
            return None;
        }
    }
    Some(at)
}

/// Of the whiteouts a layer directory dropped (its [`crate::Report::dropped_whiteouts`]), those
/// whose path `below` (another stack below, flattened) holds: stacked over it, they would show.
pub fn dropped_below(below: &Path, dropped: &[EntryPath]) -> Vec<EntryPath> {
    dropped
        .iter()
        .filter(|p| inside(below, p).is_some_and(|at| std::fs::symlink_metadata(at).is_ok()))
        .cloned()
        .collect()
}

fn names(dir: &Path) -> io::Result<Option<BTreeSet<OsString>>> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut set = BTreeSet::new();
    for entry in std::fs::read_dir(dir)? {
        set.insert(entry?.file_name());
    }
    Ok(Some(set))
}

fn walk(
    layer: &Path,
    below: &Path,
    path: &EntryPath,
    out: &mut BTreeSet<EntryPath>,
) -> io::Result<()> {
    let (Some(provided), Some(held)) = (names(layer)?, names(below)?) else {
        return Ok(());
    };
    for name in held {
        let child = path.join(name.as_bytes());
        if !provided.contains(&name) {
            out.insert(child);
            continue;
        }
        let is_dir = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
        if is_dir(&layer.join(&name)) && is_dir(&below.join(&name)) {
            walk(&layer.join(&name), &below.join(&name), &child, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_below_that_the_layer_neither_provides_nor_whites_out_are_uncovered() {
        let base = tempfile::tempdir().expect("tempdir");
        let layer = base.path().join("layer");
        let below = base.path().join("below");
        for dir in ["o/sub", "other"] {
            std::fs::create_dir_all(layer.join(dir)).expect("mkdir");
        }
        // A whited-out name is any entry of that name (a regular file stands in for the device).
        std::fs::write(layer.join("o/covered"), b"").expect("write");
        std::fs::write(layer.join("o/sub/mine"), b"").expect("write");
        for dir in ["o/sub", "o/newdir/deep", "other"] {
            std::fs::create_dir_all(below.join(dir)).expect("mkdir");
        }
        for file in ["o/covered", "o/new", "o/sub/new", "o/sub/mine", "other/x"] {
            std::fs::write(below.join(file), b"").expect("write");
        }
        let dirs = [EntryPath::normalise(b"o").expect("path")];
        let uncovered: Vec<String> = uncovered_below(&layer, &below, &dirs)
            .expect("walk")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(uncovered, ["o/new", "o/newdir", "o/sub/new"]);
        // A directory the stack below does not have hides nothing there.
        let none = [EntryPath::normalise(b"absent").expect("path")];
        assert!(
            uncovered_below(&layer, &below, &none)
                .expect("walk")
                .is_empty()
        );
        let dropped = [
            EntryPath::normalise(b"other/x").expect("path"),
            EntryPath::normalise(b"nowhere/y").expect("path"),
        ];
        let shown: Vec<String> = dropped_below(&below, &dropped)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(shown, ["other/x"]);
        // Never through a symlinked directory, which could lead out of the tree.
        std::os::unix::fs::symlink(base.path(), below.join("out")).expect("symlink");
        let outside = [EntryPath::normalise(b"out/below/other").expect("path")];
        assert!(dropped_below(&below, &outside).is_empty());
        assert!(
            uncovered_below(&layer, &below, &outside)
                .expect("walk")
                .is_empty()
        );
    }
}
