//! `ducc convert` on a disk that fills up: a small tmpfs used as the local publisher's `--root`,
//! or as the blob cache and scratch space. The image that does not fit fails with a clear error
//! (image, step, "No space left on device" and the path), nothing of it is published, the image
//! converted before is untouched, no staging or partial download is left occupying the space, and
//! once there is room again the next run converts it cleanly.
//!
//! Mounting needs root (CI runs as root); where it is refused the tests print why and stop.
#![allow(clippy::unwrap_used)]

mod convert_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use convert_support::{
    Backend, Image, Layer, REPO, Work, flat_dir, layer_dir, marker_config, run_options, scan,
};
use ducc_tests::tree::Tree;
use ducc_tests::{Registry, images, require_tool, unique_repo};

/// A tmpfs mounted on a directory, unmounted when dropped (also when the test panics).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`4m`) on `dir`; `Err` says why it cannot be done here.
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        if !ducc_oci::is_root() {
            return Err("not running as root".to_owned());
        }
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new(require_tool("mount", "mount"))
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode=0755"))
            .arg("ducc-disk-full")
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(Tmpfs {
                dir: dir.to_owned(),
            })
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// Gives the tmpfs a new size.
    fn resize(&self, size: &str) {
        let out = Command::new(require_tool("mount", "mount"))
            .args(["-o"])
            .arg(format!("remount,size={size}"))
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "remount {}: {}",
            self.dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Bytes in use.
    fn used(&self) -> u64 {
        let stat = rustix::fs::statvfs(&self.dir).unwrap();
        (stat.f_blocks - stat.f_bfree) * stat.f_frsize
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy (a process of a failed test): detach it so nothing stays mounted.
            let lazy = Command::new("umount").arg("-l").arg(&self.dir).status();
            if !matches!(lazy, Ok(s) if s.success()) {
                eprintln!("cannot unmount {} ({lazy:?})", self.dir.display());
            }
        }
    }
}

/// Mounts or explains why the test cannot run here.
fn mount_or_skip(dir: &Path, size: &str) -> Option<Tmpfs> {
    match Tmpfs::mount(dir, size) {
        Ok(tmpfs) => Some(tmpfs),
        Err(reason) => {
            ducc_tests::skip_or_fail(&format!(
                "cannot mount a tmpfs here ({reason}); run as root to test a full disk"
            ));
            None
        }
    }
}

/// A small image that fits, and one whose single 6 MiB layer of random data does not fit in
/// 4 MiB (compressed or not), pushed as `<name>:small` and `<name>:big`.
fn push_images(name: &str) -> (Image, Image) {
    let registry = Registry::anonymous();
    let client = images::client_for(registry.host(), None);
    let repo = images::repository(registry.host(), name);
    let small = Image::new(
        vec![
            Layer::files(&[("etc/os-release", b"ID=small\n"), ("bin/tool", b"tool")]),
            Layer::random("data/blob", 64 * 1024),
        ],
        "small",
    );
    let big = Image::new(vec![Layer::random("data/big", 6 << 20)], "big");
    small.push(&client, &repo, "small");
    big.push(&client, &repo, "big");
    (small, big)
}

/// `ducc convert` of the work's wish list into `root`, with this cache and scratch space.
fn convert(work: &Work, root: &Path, cache: &Path, scratch: &Path) -> Output {
    std::fs::create_dir_all(scratch).unwrap();
    let out = ducc_tests::ducc_command(&work.path("docker"))
        .arg("convert")
        .arg(work.path("wish.yaml"))
        .arg("--root")
        .arg(root)
        .arg("--cache-dir")
        .arg(cache)
        .arg("-t")
        .arg(scratch)
        .arg("-i")
        .env("TMPDIR", scratch)
        .output()
        .unwrap();
    eprintln!(
        "stderr of ducc convert:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The summary line of the failed image: `  <image> (<step>): <error>`.
fn failure_line(stderr: &str, image: &str) -> String {
    stderr
        .lines()
        .find(|l| l.starts_with(&format!("  {image} (")))
        .unwrap_or_else(|| panic!("no summary line for {image} in:\n{stderr}"))
        .to_owned()
}

/// Checks the failure of the big image: exit status, a summary line naming the image, a step,
/// ENOSPC and the path that could not be written: one of `paths` (the full filesystem's mount
/// point, or the repository path being written).
fn check_failure(out: &Output, image: &str, paths: &[String]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(", 1 failed"), "{stderr}");
    let line = failure_line(&stderr, image);
    let step = line[image.len() + 4..].split(')').next().unwrap();
    assert!(
        ["layers", "flat", "symlink", "marker"].contains(&step),
        "step {step:?} in {line}"
    );
    assert!(
        line.contains("No space left on device"),
        "the error says the disk is full: {line}"
    );
    assert!(
        paths.iter().any(|p| line.contains(p.as_str())),
        "the error names the path that could not be written (one of {paths:?}): {line}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Nothing of `big` is visible in the repository.
fn check_nothing_published(repo: &Path, host: &str, name: &str, big: &Image) {
    assert!(
        marker_config(repo, host, &format!("{name}:big")).is_none(),
        "no marker"
    );
    assert!(
        std::fs::symlink_metadata(repo.join(host).join(format!("{name}:big"))).is_err(),
        "no public link"
    );
    assert!(!flat_dir(repo, big).exists(), "no flat tree");
    for layer in &big.layers {
        assert!(!layer_dir(repo, layer).exists(), "no layer directory");
    }
}

/// Compares the repository after the failed run with the one before: every earlier path is
/// unchanged (content, modes, owners, file mtimes) and nothing new appeared but the empty
/// catalog directories a layer's shard needs.
fn check_unchanged(before: &Tree, after: &Tree) {
    let mut kept = after.clone();
    let new: BTreeSet<String> = after
        .nodes
        .keys()
        .filter(|p| !before.nodes.contains_key(*p))
        .cloned()
        .collect();
    for path in &new {
        let is_shard = path.split('/').count() <= 3
            && (path.starts_with(".layers/") || path.starts_with(".flat/"))
            && (after.nodes[path].kind == ducc_tests::tree::Kind::Dir
                || path.ends_with("/.cvmfscatalog") && after.nodes[path].size == 0);
        assert!(is_shard, "the failed run published {path}");
        kept.nodes.remove(path);
        kept.raw_paths.remove(path.as_bytes());
    }
    let mut options = run_options();
    options.mtimes = true;
    options.dir_mtimes = false;
    before.assert_same_as(&kept, &options, "before the failed run", "after it");
}

/// Entries in the local publisher's staging area.
fn staging_entries(root: &Path) -> Vec<String> {
    std::fs::read_dir(root.join(".ducc").join(REPO).join("staging"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Files under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(files_under(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out
}

/// Slack for the used-space comparison: directory blocks and inodes that may stay.
const SLACK: u64 = 256 * 1024;

#[test]
fn full_repository_disk_fails_the_image_clearly_and_publishes_nothing_of_it() {
    let registry = Registry::anonymous();
    let name = unique_repo("diskfull-root");
    let work = Work::new(Backend::Local);
    let root = work.path("cvmfs");
    let Some(tmpfs) = mount_or_skip(&root, "4m") else {
        return;
    };
    let (_small, big) = push_images(&name);
    let host = registry.host();

    work.wishlist(&[format!("http://{host}/{name}:small")], "");
    let out = convert(&work, &root, &work.path("cache"), &work.path("tmp"));
    assert!(out.status.success(), "the small image fits");
    let repo = work.repo();
    let before = scan(&repo);
    let used_before = tmpfs.used();

    work.wishlist(
        &[
            format!("http://{host}/{name}:big"),
            format!("http://{host}/{name}:small"),
        ],
        "",
    );
    let out = convert(&work, &root, &work.path("cache"), &work.path("tmp"));
    let h = big.layers[0].hex();
    check_failure(
        &out,
        &format!("http://{host}/{name}:big"),
        &[
            root.display().to_string(),
            format!(".layers/{}/{h}/layerfs", &h[..2]),
        ],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("0 converted, 1 up to date, 1 failed"),
        "the small image is still up to date"
    );
    check_nothing_published(&repo, host, &name, &big);
    check_unchanged(&before, &scan(&repo));
    assert_eq!(staging_entries(&root), Vec::<String>::new(), "staging left");
    let used_after = tmpfs.used();
    assert!(
        used_after <= used_before + SLACK,
        "the failed run left {} KiB in use on the repository's filesystem",
        (used_after - used_before) / 1024
    );

    // With room again, the next run converts the big image.
    tmpfs.resize("64m");
    let out = convert(&work, &root, &work.path("cache"), &work.path("tmp"));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 converted, 1 up to date, 0 failed"));
    assert_eq!(
        marker_config(&repo, host, &format!("{name}:big")).unwrap(),
        big.config.digest
    );
    let flat_file = std::fs::metadata(flat_dir(&repo, &big).join("data/big")).unwrap();
    assert_eq!(flat_file.len(), 6 << 20);
    assert!(
        layer_dir(&repo, &big.layers[0])
            .join("layerfs/data/big")
            .is_file()
    );
    assert_eq!(staging_entries(&root), Vec::<String>::new());
}

#[test]
fn full_cache_and_scratch_disk_fails_the_image_clearly_and_publishes_nothing_of_it() {
    let registry = Registry::anonymous();
    let name = unique_repo("diskfull-cache");
    let work = Work::new(Backend::Local);
    let space = work.path("space");
    let Some(tmpfs) = mount_or_skip(&space, "4m") else {
        return;
    };
    let cache = space.join("cache");
    let scratch = space.join("tmp");
    let root = work.path("cvmfs");
    let (_small, big) = push_images(&name);
    let host = registry.host();

    work.wishlist(&[format!("http://{host}/{name}:small")], "");
    let out = convert(&work, &root, &cache, &scratch);
    assert!(out.status.success(), "the small image fits");
    let repo = work.repo();
    let before = scan(&repo);
    let used_before = tmpfs.used();
    let cached_before = files_under(&space);

    work.wishlist(&[format!("http://{host}/{name}:big")], "");
    let out = convert(&work, &root, &cache, &scratch);
    // The blob cache is what fills up: the message must say where (a bare "cannot download
    // blob" reads like a network problem).
    check_failure(
        &out,
        &format!("http://{host}/{name}:big"),
        &[space.display().to_string()],
    );
    check_nothing_published(&repo, host, &name, &big);
    check_unchanged(&before, &scan(&repo));
    assert_eq!(staging_entries(&root), Vec::<String>::new(), "staging left");
    assert_eq!(
        files_under(&space),
        cached_before,
        "partial downloads or scratch files left in the cache and scratch space"
    );
    let used_after = tmpfs.used();
    assert!(
        used_after <= used_before + SLACK,
        "the failed run left {} KiB in use on the scratch filesystem",
        (used_after - used_before) / 1024
    );

    tmpfs.resize("64m");
    let out = convert(&work, &root, &cache, &scratch);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 converted, 0 up to date, 0 failed"));
    assert_eq!(
        marker_config(&repo, host, &format!("{name}:big")).unwrap(),
        big.config.digest
    );
    assert_eq!(
        std::fs::metadata(flat_dir(&repo, &big).join("data/big"))
            .unwrap()
            .len(),
        6 << 20
    );
}
