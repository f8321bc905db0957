//! The store's read-modify-write, against the local publisher.

use std::os::unix::fs::MetadataExt as _;

use super::*;
use crate::LocalPublisher;
use ducc_oci::RepositoryName;

struct Repo {
    root: tempfile::TempDir,
    publisher: LocalPublisher,
    layout: Layout,
}

fn repo(name: &str) -> Repo {
    let root = tempfile::tempdir().unwrap();
    let repo = RepositoryName::parse(name).unwrap();
    let publisher = LocalPublisher::open(root.path(), &repo).unwrap();
    Repo {
        root,
        publisher,
        layout: Layout::of(&repo),
    }
}

impl Repo {
    fn store(&self) -> PodmanStore<'_> {
        PodmanStore::new(&self.publisher, &self.layout)
    }

    /// The published path of the store file `tail`.
    fn file(&self, tail: &str) -> PathBuf {
        self.publisher
            .published_path(&self.layout.podman_store().join(tail).unwrap())
    }

    fn json(&self, tail: &str) -> Value {
        serde_json::from_slice(&std::fs::read(self.file(tail)).unwrap()).unwrap()
    }

    /// Publishes a flat tree for `image`: a file, and a second name for it (a hardlink).
    fn flat(&self, image: &PodmanImage) {
        let dir = self.layout.flat_image(&image.config);
        let mut tx = self.publisher.begin(&dir).unwrap();
        tx.fill_dir(&dir, crate::IngestOptions::default(), &mut |path, _| {
            std::fs::create_dir(path.join("etc"))?;
            std::fs::write(path.join("etc/os-release"), b"ID=test\n")?;
            std::fs::hard_link(path.join("etc/os-release"), path.join("etc/again"))?;
            std::fs::write(path.join("big"), vec![7u8; 1000])?;
            Ok(())
        })
        .unwrap();
        tx.commit().unwrap();
    }

    /// Every file of the store with its content (symlinks as `-> target`).
    fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let root = self.publisher.published_path(&self.layout.podman_store());
        let mut out = BTreeMap::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                let rel = path.strip_prefix(&root).unwrap().to_owned();
                if meta.is_dir() {
                    stack.push(path);
                } else if meta.file_type().is_symlink() {
                    let target = std::fs::read_link(&path).unwrap();
                    out.insert(rel, format!("-> {}", target.display()).into_bytes());
                } else {
                    out.insert(rel, std::fs::read(&path).unwrap());
                }
            }
        }
        out
    }
}

/// An image whose config carries `label` (so each label is its own config digest).
fn image(tag: &str, label: &str) -> PodmanImage {
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","created":"2024-05-06T07:08:09Z","config":{{"Env":["A=1"],"Labels":{{"l":"{label}"}}}},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#
    )
    .into_bytes();
    let digest = ConfigDigest::of(&config);
    let manifest = format!(r#"{{"schemaVersion":2,"config":{{"digest":"{digest}"}}}}"#);
    let name = PublicName::tagged("registry.example.org", "lib/app", tag).unwrap();
    PodmanImage::new(&name, digest, config, manifest.into_bytes())
        .unwrap()
        .created(Some("2024-05-06T07:08:09Z"))
}

#[test]
fn an_added_image_has_the_overlay_store_layout_podman_reads() {
    let r = repo("r");
    let img = image("1.0", "a");
    r.flat(&img);
    assert_eq!(r.store().add_image(&img).unwrap(), PodmanOutcome::Added);

    let images = r.json("overlay-images/images.json");
    let record = &images[0];
    assert_eq!(record["id"], img.id());
    assert_eq!(
        record["names"],
        serde_json::json!(["registry.example.org/lib/app:1.0"])
    );
    assert_eq!(record["digest"], img.manifest_digest.as_str());
    assert_eq!(record["created"], "2024-05-06T07:08:09Z");
    let layer = record["layer"].as_str().unwrap().to_owned();
    assert_eq!(layer, flat_layer_id(&img.config));
    let config_key = img.config.to_string();
    let manifest_key = format!("manifest-{}", img.manifest_digest);
    assert_eq!(
        record["big-data-names"],
        serde_json::json!([config_key, manifest_key, "manifest"])
    );
    assert_eq!(
        record["big-data-sizes"][&config_key],
        img.config_bytes.len() as u64
    );
    assert_eq!(record["big-data-digests"][&config_key], config_key.as_str());
    assert_eq!(
        record["big-data-digests"]["manifest"],
        img.manifest_digest.as_str()
    );

    let layers = r.json("overlay-layers/layers.json");
    assert_eq!(layers[0]["id"], layer.as_str());
    assert_eq!(layers[0]["diff-digest"], format!("sha256:{layer}"));
    // 8 bytes for the file and again for its hardlink (as ingest stores it), plus 1000.
    assert_eq!(layers[0]["diff-size"], 1016);
    assert!(layers[0].get("parent").is_none());

    let dir = format!("overlay-images/{}", img.id());
    assert_eq!(
        std::fs::read(r.file(&format!("{dir}/{}", big_data_file_name(&config_key)))).unwrap(),
        img.config_bytes
    );
    for key in [manifest_key.as_str(), "manifest"] {
        let file = r.file(&format!("{dir}/{}", big_data_file_name(key)));
        assert_eq!(std::fs::read(file).unwrap(), img.manifest_bytes);
    }
    let short = std::fs::read_to_string(r.file(&format!("overlay/{layer}/link"))).unwrap();
    assert_eq!(short, short_name(&layer));
    assert_eq!(
        std::fs::read_link(r.file(&format!("overlay/l/{short}"))).unwrap(),
        PathBuf::from(format!("../{layer}/diff"))
    );
    let diff = r.file(&format!("overlay/{layer}/diff"));
    assert_eq!(
        std::fs::read_link(&diff).unwrap(),
        PathBuf::from(format!(
            "../../../.flat/{}/{}",
            img.config.shard(),
            img.id()
        ))
    );
    assert_eq!(
        std::fs::read(diff.join("etc/os-release")).unwrap(),
        b"ID=test\n"
    );
    for empty in [
        ".cvmfscatalog",
        "overlay-images/images.lock",
        "overlay-layers/layers.lock",
    ] {
        assert_eq!(std::fs::read(r.file(empty)).unwrap(), b"", "{empty}");
    }
}

/// `cvmfs_repo: REPO/SUBDIR` puts the flat trees under the subdir, the store at the root.
#[test]
fn the_store_sits_at_the_base_root_and_links_into_the_subdirs_flat_tree() {
    let r = repo("r/some/sub");
    let img = image("1.0", "a");
    r.flat(&img);
    r.store().add_image(&img).unwrap();
    let layer = flat_layer_id(&img.config);
    let diff = r
        .root
        .path()
        .join(format!("r/podmanStore/overlay/{layer}/diff"));
    assert_eq!(
        std::fs::read_link(&diff).unwrap(),
        PathBuf::from(format!(
            "../../../some/sub/.flat/{}/{}",
            img.config.shard(),
            img.id()
        ))
    );
    assert!(diff.join("etc/os-release").is_file());
    assert!(!r.root.path().join("r/some/sub/podmanStore").exists());
}

#[test]
fn a_second_add_publishes_nothing_and_leaves_every_byte() {
    let r = repo("r");
    let img = image("1.0", "a");
    r.flat(&img);
    r.store().add_image(&img).unwrap();
    let before = r.snapshot();
    let inode = std::fs::metadata(r.file("overlay-images/images.json"))
        .unwrap()
        .ino();
    assert_eq!(r.store().add_image(&img).unwrap(), PodmanOutcome::Unchanged);
    assert_eq!(r.snapshot(), before);
    // Not even rewritten with the same bytes.
    let after = std::fs::metadata(r.file("overlay-images/images.json"))
        .unwrap()
        .ino();
    assert_eq!(after, inode);
}

#[test]
fn a_moved_tag_moves_the_name_and_leaves_no_second_entry_with_it() {
    let r = repo("r");
    let old = image("1.0", "old");
    let new = image("1.0", "new");
    let other = image("2.0", "old");
    for i in [&old, &new] {
        r.flat(i);
    }
    r.store().add_image(&old).unwrap();
    assert_eq!(r.store().add_image(&other).unwrap(), PodmanOutcome::Updated);
    assert_eq!(r.store().add_image(&new).unwrap(), PodmanOutcome::Added);
    let listed = r.store().images().unwrap();
    let names = |id: &str| {
        listed
            .iter()
            .find(|i| i.id() == id)
            .map(|i| i.names().to_vec())
            .unwrap()
    };
    assert_eq!(names(old.id()), ["registry.example.org/lib/app:2.0"]);
    assert_eq!(names(new.id()), ["registry.example.org/lib/app:1.0"]);
    assert_eq!(listed.len(), 2);
    // Moving it back is an update of the old image, not a third entry.
    assert_eq!(r.store().add_image(&old).unwrap(), PodmanOutcome::Updated);
    let listed = r.store().images().unwrap();
    assert_eq!(listed.len(), 2);
    let with_1_0: Vec<&str> = listed
        .iter()
        .filter(|i| i.names().iter().any(|n| n.ends_with(":1.0")))
        .map(StoredImage::id)
        .collect();
    assert_eq!(with_1_0, [old.id()]);
}

#[test]
fn fields_and_entries_of_other_writers_are_kept() {
    let r = repo("r");
    let img = image("1.0", "a");
    r.flat(&img);
    let foreign_images = r#"[{"id":"f00d","names":["docker.io/library/x:1"],"layer":"beef","flags":{"k":true},"mapped-top-layers":["m"]}]"#;
    let foreign_layers = r#"[{"id":"beef","compression":2,"uidset":[0]}]"#;
    let mut tx = r.publisher.begin(&r.layout.podman_store()).unwrap();
    for (tail, text) in [
        ("overlay-images/images.json", foreign_images),
        ("overlay-layers/layers.json", foreign_layers),
    ] {
        let path = r.layout.podman_store().join(tail).unwrap();
        tx.write_file(&path, &mut text.as_bytes()).unwrap();
    }
    tx.commit().unwrap();
    r.store().add_image(&img).unwrap();
    let images = r.json("overlay-images/images.json");
    assert_eq!(images[0]["flags"]["k"], true);
    assert_eq!(images[0]["mapped-top-layers"][0], "m");
    assert_eq!(images[1]["id"], img.id());
    let layers = r.json("overlay-layers/layers.json");
    assert_eq!(layers[0]["compression"], 2);
    assert_eq!(layers[0]["uidset"][0], 0);
}

#[test]
fn a_corrupt_store_file_is_an_error_naming_it_and_stays_untouched() {
    for tail in ["overlay-images/images.json", "overlay-layers/layers.json"] {
        let r = repo("r");
        let img = image("1.0", "a");
        r.flat(&img);
        let path = r.layout.podman_store().join(tail).unwrap();
        let mut tx = r.publisher.begin(&r.layout.podman_store()).unwrap();
        tx.write_file(&path, &mut &b"[{\"id\": "[..]).unwrap();
        tx.commit().unwrap();
        let err = r.store().add_image(&img).unwrap_err();
        assert!(
            matches!(&err, PodmanError::CorruptStoreFile { path: p, .. } if *p == r.file(tail)),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains(&r.file(tail).display().to_string())
        );
        assert_eq!(std::fs::read(r.file(tail)).unwrap(), b"[{\"id\": ");
        assert!(!r.file("overlay-images").join(img.id()).exists(), "{tail}");
    }
}

#[test]
fn an_unreadable_store_file_is_an_error_naming_it() {
    let r = repo("r");
    let img = image("1.0", "a");
    r.flat(&img);
    // A directory where images.json belongs cannot be read as a file.
    std::fs::create_dir_all(r.file("overlay-images/images.json")).unwrap();
    let err = r.store().add_image(&img).unwrap_err();
    assert!(
        matches!(&err, PodmanError::Read { path, .. } if *path == r.file("overlay-images/images.json")),
        "{err}"
    );
}

#[test]
fn an_empty_store_file_is_an_empty_store() {
    let r = repo("r");
    let img = image("1.0", "a");
    r.flat(&img);
    let mut tx = r.publisher.begin(&r.layout.podman_store()).unwrap();
    let path = r
        .layout
        .podman_store()
        .join("overlay-images/images.json")
        .unwrap();
    tx.write_file(&path, &mut &b""[..]).unwrap();
    tx.commit().unwrap();
    assert_eq!(r.store().add_image(&img).unwrap(), PodmanOutcome::Added);
    assert_eq!(r.store().images().unwrap().len(), 1);
}

#[test]
fn an_image_without_its_flat_tree_is_refused_naming_the_tree() {
    let r = repo("r");
    let img = image("1.0", "a");
    let err = r.store().add_image(&img).unwrap_err();
    let want = r
        .publisher
        .published_path(&r.layout.flat_image(&img.config));
    assert!(
        matches!(&err, PodmanError::FlatTreeMissing { path, .. } if *path == want),
        "{err}"
    );
    assert!(err.to_string().contains("registry.example.org/lib/app:1.0"));
    assert!(!r.file("").exists());
}

#[test]
fn a_config_that_is_not_its_digest_is_refused() {
    let name = PublicName::tagged("reg.io", "a", "1").unwrap();
    let other = ConfigDigest::from_hex(&"ab".repeat(32)).unwrap();
    let err = PodmanImage::new(&name, other, b"{}".to_vec(), Vec::new()).unwrap_err();
    assert!(
        matches!(&err, PodmanError::ConfigMismatch { image, .. } if image == "reg.io/a:1"),
        "{err}"
    );
}

#[test]
fn images_pulled_by_digest_are_named_with_at_and_a_bad_created_is_left_out() {
    let config = br#"{"created":"yesterday"}"#.to_vec();
    let digest = ConfigDigest::of(&config);
    let at = format!("sha256:{}", "cd".repeat(32));
    let name = PublicName::by_digest("reg.io", "lib/a", &at).unwrap();
    let img = PodmanImage::new(&name, digest, config, Vec::new())
        .unwrap()
        .created(Some("yesterday"));
    assert_eq!(img.name(), format!("reg.io/lib/a@{at}"));
    assert_eq!(img.created, None);
}

/// File names podman 4.3 wrote for these keys (seen in a store it made).
#[test]
fn big_data_file_names_are_containers_storages() {
    let cases = [
        ("manifest", "manifest"),
        ("a.b9", "a.b9"),
        (
            "manifest-sha256:14876731e4a3ec5535adcbbf6eb1f27c37613a7cd0bc02458e917449fc213cdc",
            "=bWFuaWZlc3Qtc2hhMjU2OjE0ODc2NzMxZTRhM2VjNTUzNWFkY2JiZjZlYjFmMjdjMzc2MTNhN2NkMGJjMDI0NThlOTE3NDQ5ZmMyMTNjZGM=",
        ),
        (
            "sha256:15dce61707152ff7ced2b9994b82633fd5d2a56fa394c74a48117408c18bab61",
            "=c2hhMjU2OjE1ZGNlNjE3MDcxNTJmZjdjZWQyYjk5OTRiODI2MzNmZDVkMmE1NmZhMzk0Yzc0YTQ4MTE3NDA4YzE4YmFiNjE=",
        ),
    ];
    for (key, file) in cases {
        assert_eq!(big_data_file_name(key), file, "{key}");
    }
}

#[test]
fn short_names_are_stable_26_character_base32() {
    let a = short_name(&"ab".repeat(32));
    assert_eq!(a.len(), 26);
    assert!(
        a.bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
    );
    assert_eq!(a, short_name(&"ab".repeat(32)));
    assert_ne!(a, short_name(&"ac".repeat(32)));
}

#[test]
fn adds_from_threads_at_once_lose_no_entry() {
    let r = repo("r");
    let images: Vec<PodmanImage> = (0..6)
        .map(|i| image(&format!("t{i}"), &format!("l{i}")))
        .collect();
    for i in &images {
        r.flat(i);
    }
    std::thread::scope(|scope| {
        for img in &images {
            let store = r.store();
            scope.spawn(move || store.add_image(img).unwrap());
        }
    });
    let listed = r.store().images().unwrap();
    assert_eq!(listed.len(), images.len());
    for img in &images {
        assert!(
            listed
                .iter()
                .any(|l| l.id() == img.id() && l.names() == [img.name()])
        );
    }
    assert_eq!(
        r.json("overlay-layers/layers.json")
            .as_array()
            .unwrap()
            .len(),
        images.len()
    );
}

#[test]
fn removed_names_and_images_leave_the_rest_of_the_store() {
    let r = repo("r");
    let a = image("1.0", "a");
    let b = image("2.0", "b");
    for i in [&a, &b] {
        r.flat(i);
        r.store().add_image(i).unwrap();
    }
    assert_eq!(r.store().remove_names(&[a.name(), "nothing:1"]).unwrap(), 1);
    assert_eq!(r.store().remove_names(&[a.name()]).unwrap(), 0);
    let unnamed: Vec<String> = r
        .store()
        .images()
        .unwrap()
        .into_iter()
        .filter(|i| i.names().is_empty())
        .map(|i| i.id().to_owned())
        .collect();
    assert_eq!(unnamed, [a.id()]);

    assert_eq!(r.store().remove_images(&[a.id(), "f00d"]).unwrap(), 1);
    let layer_a = flat_layer_id(&a.config);
    assert!(!r.file(&format!("overlay-images/{}", a.id())).exists());
    assert!(
        std::fs::symlink_metadata(r.file(&format!("overlay/{layer_a}"))).is_err(),
        "layer directory left"
    );
    assert!(
        std::fs::symlink_metadata(r.file(&format!("overlay/l/{}", short_name(&layer_a)))).is_err()
    );
    let left = r.store().images().unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id(), b.id());
    let layers = r.json("overlay-layers/layers.json");
    assert_eq!(layers.as_array().unwrap().len(), 1);
    assert_eq!(layers[0]["id"], flat_layer_id(&b.config));
    // b is untouched and still whole.
    let layer_b = flat_layer_id(&b.config);
    assert!(
        r.file(&format!("overlay/{layer_b}/diff/etc/os-release"))
            .is_file()
    );
    assert_eq!(r.store().remove_images(&[a.id()]).unwrap(), 0);
}

/// A record written by someone else may hold any text as its id or layer: removing it never
/// removes a path outside the store's own directories.
#[test]
fn removing_a_record_with_a_hostile_id_removes_no_path_outside_the_store() {
    let r = repo("r");
    let outside = r.root.path().join("r/keep");
    std::fs::create_dir_all(&outside).unwrap();
    let hostile = r#"[{"id":"../../keep","layer":"../../../keep"},{"id":"..","layer":"."}]"#;
    let mut tx = r.publisher.begin(&r.layout.podman_store()).unwrap();
    let path = r
        .layout
        .podman_store()
        .join("overlay-images/images.json")
        .unwrap();
    tx.write_file(&path, &mut hostile.as_bytes()).unwrap();
    tx.commit().unwrap();
    assert_eq!(r.store().remove_images(&["../../keep", ".."]).unwrap(), 2);
    assert!(outside.is_dir());
    assert!(r.store().images().unwrap().is_empty());
}
