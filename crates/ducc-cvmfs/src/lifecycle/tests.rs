//! delete and gc on repositories written through the local publisher.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::*;
use crate::LocalPublisher;
use crate::layout::{Layout, PublicName, RepoPath};
use crate::metadata::{MarkerDescriptor, MarkerManifest, Origin};
use crate::publisher::{GcLock, Publisher};
use crate::state::FlatRecord;
use ducc_oci::{ConfigDigest, LayerDigest, RepositoryName};

const DAY: Duration = Duration::from_secs(86_400);

struct Repo {
    _dir: tempfile::TempDir,
    publisher: LocalPublisher,
    layout: Layout,
}

fn layer(c: char) -> LayerDigest {
    format!("sha256:{}", c.to_string().repeat(64))
        .parse()
        .unwrap()
}

fn config(c: char) -> ConfigDigest {
    ConfigDigest::from_hex(&c.to_string().repeat(64)).unwrap()
}

fn name(tag: &str) -> PublicName {
    PublicName::tagged("reg.io", "lib/app", tag).unwrap()
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let repo = RepositoryName::parse("r").unwrap();
        let publisher = LocalPublisher::open(dir.path(), &repo).unwrap();
        Repo {
            _dir: dir,
            publisher,
            layout: Layout::of(&repo),
        }
    }

    /// A repository holding, with their markers, images tagged as their config's character,
    /// with a layer per character of the string: `('1', "ab")` is tag `1`, config `1…`, layers `a…`, `b…`.
    fn with_images(images: &[(char, &str)]) -> Repo {
        let repo = Repo::new();
        for (cfg, layers) in images {
            let layers: Vec<LayerDigest> = layers.chars().map(layer).collect();
            repo.image(&cfg.to_string(), config(*cfg), &layers, true);
        }
        repo
    }

    fn write(&self, path: &RepoPath, content: &[u8]) {
        let mut tx = self.publisher.begin(path).unwrap();
        tx.write_file(path, &mut &content[..]).unwrap();
        tx.commit().unwrap();
    }

    fn link(&self, path: &RepoPath, target: &Path) {
        let mut tx = self.publisher.begin(path).unwrap();
        tx.symlink(path, target).unwrap();
        tx.commit().unwrap();
    }

    /// An image as a conversion leaves it: layers (with origin), flat tree and record, link,
    /// marker.
    fn image(&self, tag: &str, cfg: ConfigDigest, layers: &[LayerDigest], marker: bool) {
        let l = &self.layout;
        for digest in layers {
            if !self.at(&l.layer_info(digest)).exists() {
                self.write(&l.layerfs(digest).join("etc/file").unwrap(), &[7; 1000]);
                self.write(&l.layer_info(digest), b"[]");
            }
            self.reuse(*digest, cfg);
        }
        let record = FlatRecord {
            config: cfg,
            layers: layers.to_vec(),
            tree_bytes: None,
        };
        self.write(&l.flat_image(&cfg).join("bin/sh").unwrap(), &[1; 500]);
        self.write(&l.flat_complete_record(&cfg), &record.to_json());
        let public = name(tag);
        self.link(
            &l.public_link(&public),
            &l.public_link_target(&public, &cfg),
        );
        if marker {
            let descriptor = |digest: String| MarkerDescriptor {
                media_type: String::new(),
                size: 1,
                digest,
            };
            let manifest = MarkerManifest {
                schema_version: 2,
                media_type: String::new(),
                config: descriptor(cfg.to_string()),
                layers: layers.iter().map(|d| descriptor(d.to_string())).collect(),
            };
            self.write(&l.marker_manifest(&public), &manifest.to_json());
        }
    }

    /// What a conversion of `cfg` (on another node, say) does to a layer it shares: adds `cfg`
    /// to the layer's origin.
    fn reuse(&self, layer: LayerDigest, cfg: ConfigDigest) {
        crate::add_origin(&*self.publisher.group(), &self.layout, &layer, &cfg).unwrap();
    }

    fn at(&self, path: &RepoPath) -> std::path::PathBuf {
        self.publisher.published_path(path)
    }

    fn delete(&self, tags: &[&str]) {
        let inventory = Inventory::read(&self.publisher, &self.layout).unwrap();
        let names: Vec<PublicName> = tags.iter().map(|t| name(t)).collect();
        let plan = plan_delete(&inventory, &names);
        assert!(plan.missing.is_empty(), "{:?}", plan.missing);
        delete_images(&self.publisher, &self.layout, &plan.images, &mut |_| {}).unwrap();
    }

    /// A gc without grace period, now.
    fn gc_now(&self) -> GcReport {
        self.gc(Duration::ZERO, SystemTime::now(), false)
    }

    fn gc(&self, grace: Duration, now: SystemTime, dry_run: bool) -> GcReport {
        let options = GcOptions {
            dry_run,
            grace,
            now,
        };
        collect_garbage(&self.publisher, &self.layout, &options, &mut |_| {}).unwrap()
    }

    /// Every path below the repository with its kind, size and content hash.
    fn snapshot(&self) -> BTreeMap<String, String> {
        fn walk(dir: &Path, base: &Path, out: &mut BTreeMap<String, String>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                let rel = path.strip_prefix(base).unwrap().display().to_string();
                let what = if meta.is_dir() {
                    walk(&path, base, out);
                    "dir".to_owned()
                } else if meta.is_symlink() {
                    format!("-> {}", std::fs::read_link(&path).unwrap().display())
                } else {
                    format!("{:?}", std::fs::read(&path).unwrap())
                };
                out.insert(rel, what);
            }
        }
        let mut out = BTreeMap::new();
        let root = self.at(&RepoPath::root());
        walk(&root, &root, &mut out);
        out
    }
}

fn ids(pieces: &[Piece]) -> Vec<String> {
    let mut out: Vec<String> = pieces
        .iter()
        .map(|p| format!("{}:{}", p.kind.as_str(), &p.id[p.id.len() - 4..]))
        .collect();
    out.sort();
    out
}

#[test]
fn shared_layers_survive_and_what_only_the_deleted_image_used_goes() {
    let repo = Repo::with_images(&[('1', "ab"), ('2', "ac")]);
    repo.delete(&["1"]);
    let report = repo.gc_now();
    assert_eq!(ids(&report.removed), ["flat:1111", "layer:bbbb"]);
    assert!(report.removed.iter().all(|p| p.bytes > 0), "{report:?}");
    let l = &repo.layout;
    assert!(!repo.at(&l.layer_dir(&layer('b'))).exists());
    assert!(!repo.at(&l.flat_image(&config('1'))).exists());
    for kept in [layer('a'), layer('c')] {
        assert!(repo.at(&l.layerfs(&kept)).join("etc/file").is_file());
    }
    assert!(
        repo.at(&l.flat_image(&config('2')))
            .join("bin/sh")
            .is_file()
    );
    // The shared layer no longer names the deleted image's config.
    assert_eq!(report.origins_updated, 1);
    let origin = Origin::read(&repo.at(&l.layer_origin(&layer('a')))).unwrap();
    assert_eq!(origin.origin, [config('2').to_string()]);
    // Nothing waits, no record is left, and a second gc finds nothing.
    assert!(!repo.at(&l.gc_pending()).exists());
    let again = repo.gc_now();
    assert!(
        again.removed.is_empty() && again.waiting.is_empty(),
        "{again:?}"
    );
    assert_eq!(again.images, 1);
}

#[test]
fn pieces_wait_for_the_grace_period_counted_from_the_first_gc_that_found_them() {
    let repo = Repo::with_images(&[('1', "a"), ('2', "b")]);
    repo.delete(&["1"]);
    let t0 = SystemTime::now();
    let first = repo.gc(DAY, t0, false);
    assert!(first.removed.is_empty());
    assert_eq!(ids(&first.waiting), ["flat:1111", "layer:aaaa"]);
    assert!(first.waiting_bytes() > 0);
    assert!(repo.at(&repo.layout.gc_pending()).is_file());
    // Half a day later: still waiting, with the first sighting's time.
    let later = repo.gc(DAY, t0 + DAY / 2, false);
    assert!(later.removed.is_empty());
    let since = t0.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    assert!(later.waiting.iter().all(|p| p.since == since), "{later:?}");
    // A day after the first sighting: gone, and the record with them.
    let due = repo.gc(DAY, t0 + DAY, false);
    assert_eq!(ids(&due.removed), ["flat:1111", "layer:aaaa"]);
    assert!(due.waiting.is_empty());
    assert!(!repo.at(&repo.layout.gc_pending()).exists());
}

#[test]
fn a_dry_run_changes_nothing_and_plans_what_the_real_run_does() {
    let repo = Repo::with_images(&[('1', "ab"), ('2', "a")]);
    repo.delete(&["1"]);
    let before = repo.snapshot();
    let now = SystemTime::now();
    let plan = repo.gc(Duration::ZERO, now, true);
    assert_eq!(repo.snapshot(), before);
    assert!(plan.dry_run);
    let real = repo.gc(Duration::ZERO, now, false);
    assert_eq!(ids(&plan.removed), ids(&real.removed));
    assert_eq!(plan.removed_bytes(), real.removed_bytes());
    assert_eq!(plan.origins_updated, real.origins_updated);
    // A dry run with a grace period records no sighting either.
    repo.delete(&["2"]);
    let before = repo.snapshot();
    let plan = repo.gc(DAY, now, true);
    assert!(!plan.waiting.is_empty());
    assert_eq!(repo.snapshot(), before);
}

#[test]
fn a_layer_taken_into_use_again_while_waiting_starts_its_period_again() {
    let repo = Repo::with_images(&[('1', "a")]);
    repo.delete(&["1"]);
    let t0 = SystemTime::now();
    assert_eq!(
        ids(&repo.gc(DAY, t0, false).waiting),
        ["flat:1111", "layer:aaaa"]
    );
    // Another node's conversion reuses the layer: its origin gains a config, no marker yet.
    repo.reuse(layer('a'), config('9'));
    let report = repo.gc(DAY, t0 + 2 * DAY, false);
    assert_eq!(ids(&report.removed), ["flat:1111"]);
    assert_eq!(ids(&report.waiting), ["layer:aaaa"]);
    let now = (t0 + 2 * DAY)
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(report.waiting[0].since, now);
    assert!(repo.at(&repo.layout.layerfs(&layer('a'))).is_dir());
}

#[test]
fn an_image_with_a_link_but_no_marker_keeps_its_flat_tree_and_layers() {
    let repo = Repo::new();
    // A run killed between the link and the marker.
    repo.image("1", config('1'), &[layer('a')], false);
    repo.image("2", config('2'), &[layer('b')], true);
    repo.delete(&["2"]);
    let report = repo.gc_now();
    assert_eq!(ids(&report.removed), ["flat:2222", "layer:bbbb"]);
    assert!(repo.at(&repo.layout.layerfs(&layer('a'))).is_dir());
    assert!(repo.at(&repo.layout.flat_image(&config('1'))).is_dir());
    assert_eq!(report.images, 1);
}

#[test]
fn a_corrupt_marker_stops_the_gc_before_anything_is_removed() {
    let repo = Repo::with_images(&[('1', "a"), ('2', "b")]);
    repo.delete(&["1"]);
    let marker = repo.layout.marker_manifest(&name("2"));
    repo.write(&marker, b"{\"Config\": 12");
    let before = repo.snapshot();
    let options = GcOptions::new(Duration::ZERO);
    let err = collect_garbage(&repo.publisher, &repo.layout, &options, &mut |_| {}).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&repo.at(&marker).display().to_string()),
        "{text}"
    );
    assert!(text.contains("nothing was removed"), "{text}");
    assert_eq!(repo.snapshot(), before);
    // A corrupt gc record is refused the same way.
    repo.write(&marker, b"{\"Config\":{\"Digest\":\"sha256:2222222222222222222222222222222222222222222222222222222222222222\"},\"Layers\":[]}");
    repo.write(&repo.layout.gc_pending(), b"[1,2]");
    let err = collect_garbage(&repo.publisher, &repo.layout, &options, &mut |_| {}).unwrap_err();
    assert!(matches!(err, LifecycleError::CorruptRecord { .. }), "{err}");
}

#[test]
fn deleting_removes_markers_and_links_and_leaves_content() {
    let repo = Repo::with_images(&[('1', "a"), ('2', "a")]);
    repo.delete(&["1"]);
    let l = &repo.layout;
    assert!(std::fs::symlink_metadata(repo.at(&l.public_link(&name("1")))).is_err());
    assert!(!repo.at(&l.marker_dir(&name("1"))).exists());
    assert!(repo.at(&l.marker_manifest(&name("2"))).is_file());
    assert!(
        repo.at(&l.flat_image(&config('1'))).is_dir(),
        "content stays for gc"
    );
    let inventory = Inventory::read(&repo.publisher, l).unwrap();
    assert_eq!(inventory.len(), 1);
    // Deleting the last image of the repository directory takes the directory too.
    repo.delete(&["2"]);
    assert!(!repo.at(&RepoPath::new("reg.io/lib").unwrap()).exists());
    assert!(
        !repo
            .at(&RepoPath::new(".metadata/reg.io").unwrap())
            .exists()
    );
}

#[test]
fn a_gc_waits_for_the_conversions_of_its_host() {
    let repo = Repo::with_images(&[('1', "a")]);
    repo.delete(&["1"]);
    let converting = repo.publisher.gc_lock(GcLock::Convert).unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let report = repo.gc_now();
            done_tx.send(report).unwrap();
        });
        assert!(
            done_rx.recv_timeout(Duration::from_millis(500)).is_err(),
            "the gc ran while a conversion held the lock"
        );
        // The conversion finishes and writes its marker: the layer is in use again.
        repo.image("2", config('2'), &[layer('a')], true);
        drop(converting);
        let report = done_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(ids(&report.removed), ["flat:1111"]);
    });
    assert!(repo.at(&repo.layout.layerfs(&layer('a'))).is_dir());
}

#[test]
fn a_gc_of_one_subdir_leaves_the_podman_images_of_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        RepositoryName::parse("r/a").unwrap(),
        RepositoryName::parse("r/b").unwrap(),
    );
    let publisher = LocalPublisher::open(dir.path(), &a).unwrap();
    let podman_image = |layout: &Layout, tag: &str| {
        let bytes = format!(r#"{{"architecture":"amd64","os":"linux","label":"{tag}"}}"#);
        let cfg = ConfigDigest::of(bytes.as_bytes());
        let file = layout.flat_image(&cfg).join("etc/f").unwrap();
        let mut tx = publisher.begin(&file).unwrap();
        tx.write_file(&file, &mut &b"x"[..]).unwrap();
        tx.commit().unwrap();
        let image =
            crate::PodmanImage::new(&name(tag), cfg, bytes.into_bytes(), b"{}".to_vec()).unwrap();
        crate::PodmanStore::new(&publisher, layout)
            .add_image(&image)
            .unwrap();
        cfg
    };
    let (layout_a, layout_b) = (Layout::of(&a), Layout::of(&b));
    let in_a = podman_image(&layout_a, "in-a");
    let in_b = podman_image(&layout_b, "in-b");
    // Neither image has a marker: both are garbage, each in its own layout.
    let options = GcOptions::new(Duration::ZERO);
    let report = collect_garbage(&publisher, &layout_a, &options, &mut |_| {}).unwrap();
    let mut removed: Vec<(PieceKind, String)> = report
        .removed
        .iter()
        .map(|p| (p.kind, p.id.clone()))
        .collect();
    removed.sort();
    assert_eq!(
        removed,
        [
            (PieceKind::Flat, in_a.to_string()),
            (PieceKind::Podman, in_a.hex()),
        ]
    );
    let left = crate::PodmanStore::new(&publisher, &layout_b)
        .images()
        .unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id(), in_b.hex());
    assert!(
        publisher
            .published_path(&layout_b.flat_image(&in_b))
            .is_dir()
    );
}

#[test]
fn a_layer_another_node_takes_into_use_during_the_sweep_is_kept() {
    let repo = Repo::with_images(&[('1', "a")]);
    repo.delete(&["1"]);
    let options = GcOptions::new(Duration::ZERO);
    // Between the flat trees' transaction and the layers' one, a conversion on another node
    // (which the host's gc lock does not hold off) adds its config to the layer's origin.
    let mut reused = false;
    let report = collect_garbage(&repo.publisher, &repo.layout, &options, &mut |piece| {
        if piece.kind == PieceKind::Flat && !reused {
            repo.reuse(layer('a'), config('9'));
            reused = true;
        }
    })
    .unwrap();
    assert!(reused);
    assert_eq!(ids(&report.removed), ["flat:1111"]);
    assert_eq!(ids(&report.reclaimed), ["layer:aaaa"]);
    assert!(repo.at(&repo.layout.layerfs(&layer('a'))).is_dir());
    // It waits again, its period counted from now.
    let pending = std::fs::read_to_string(repo.at(&repo.layout.gc_pending())).unwrap();
    assert!(pending.contains(&layer('a').to_string()), "{pending}");
    let next = repo.gc(DAY, SystemTime::now(), false);
    assert_eq!(ids(&next.waiting), ["layer:aaaa"]);
}
