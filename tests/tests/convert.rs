//! `ducc convert` end to end: images pushed into the real registry, converted with the local
//! publisher into a temporary directory.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use ducc_tests::images::{self, Format, ImageSpec};
use ducc_tests::tree::{Options, Tree};
use ducc_tests::{FaultProxy, Registry, unique_repo};

fn ducc(args: &[&str], cache: &Path) -> Output {
    let out = Command::new(ducc_tests::ducc_bin())
        .args(args)
        .arg("--cache-dir")
        .arg(cache)
        .env_remove("DUCC_AUTH_REGISTRIES")
        .output()
        .unwrap();
    eprintln!(
        "stderr of ducc {args:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap()
}

#[test]
fn convert_writes_layers_flat_tree_symlink_marker_and_thin_image() {
    let registry = Registry::anonymous();
    let client = images::client_for(registry.host(), None);
    let repo_name = unique_repo("convert");
    let repo = images::repository(registry.host(), &repo_name);
    let pushed = images::push_image(
        &client,
        &repo,
        "v1",
        &ImageSpec::new(Format::Oci).layers(2).build(),
    );
    let proxy = FaultProxy::start(registry.host(), Vec::new());

    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("cvmfs");
    let wishlist = work.path().join("wish.yaml");
    std::fs::write(
        &wishlist,
        format!(
            "version: 1\nuser: ''\ncvmfs_repo: unpacked.test/sub\ninput:\n  - 'http://{}/{repo_name}:v1'\n",
            proxy.host()
        ),
    )
    .unwrap();
    let cache = work.path().join("cache");
    let args = [
        "convert",
        wishlist.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
    ];
    let out = ducc(&args, &cache);
    assert!(out.status.success(), "convert failed");

    let base = root.join("unpacked.test/sub");
    let manifest: serde_json::Value = serde_json::from_slice(&pushed.image.manifest.bytes).unwrap();
    for (i, layer) in manifest["layers"].as_array().unwrap().iter().enumerate() {
        let h = hex(layer["digest"].as_str().unwrap());
        let dir = base.join(".layers").join(&h[..2]).join(h);
        assert!(
            dir.join(format!("layerfs/layer{i}/data.bin")).is_file(),
            "layer {i}"
        );
        // The layer's nested catalog is its own directory, not its layerfs (issue 28).
        assert!(dir.join(".cvmfscatalog").is_file());
        assert!(!dir.join("layerfs/.cvmfscatalog").exists());
        let origin: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(".metadata/origin.json")).unwrap())
                .unwrap();
        assert_eq!(
            origin["origin"],
            serde_json::json!([manifest["config"]["digest"]])
        );
        assert!(dir.join(".metadata/layers.json").is_file());
    }
    let cfg = hex(manifest["config"]["digest"].as_str().unwrap());
    let flat = base.join(".flat").join(&cfg[..2]).join(cfg);
    assert!(flat.join("layer0/data.bin").is_file() && flat.join("layer1/data.bin").is_file());
    assert!(flat.join(".singularity.d/runscript").is_file());
    assert!(flat.join(".cvmfscatalog").is_file());
    for catalog in [".layers", ".flat", &format!(".flat/{}", &cfg[..2])] {
        assert!(
            base.join(catalog).join(".cvmfscatalog").is_file(),
            "{catalog}"
        );
    }
    let link = base.join(proxy.host()).join(format!("{repo_name}:v1"));
    assert_eq!(
        std::fs::canonicalize(&link).unwrap(),
        std::fs::canonicalize(&flat).unwrap()
    );
    let marker = base
        .join(".metadata")
        .join(proxy.host())
        .join(format!("{repo_name}:v1/manifest.json"));
    let marker: serde_json::Value =
        serde_json::from_slice(&std::fs::read(marker).unwrap()).unwrap();
    assert_eq!(marker["Config"]["Digest"], manifest["config"]["digest"]);

    // The thin image went to the default output, `<repository>_thin:<tag>` on the same registry.
    let thin =
        ducc_tests::skopeo::inspect_raw(registry.host(), &format!("{repo_name}_thin:v1"), None);
    assert!(!thin.is_empty());

    // A second run downloads nothing and changes nothing.
    let before = Tree::scan(&root).unwrap();
    proxy.clear_requests();
    let out = ducc(&args, &cache);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 converted, 1 up to date"));
    assert_eq!(proxy.count("GET", "/blobs/"), 0, "{:?}", proxy.requests());
    let unchanged = Options {
        mtimes: false,
        ..Options::default()
    };
    before.assert_same_as(
        &Tree::scan(&root).unwrap(),
        &unchanged,
        "first run",
        "second run",
    );
}

#[test]
fn failing_image_is_listed_and_others_still_convert() {
    let registry = Registry::anonymous();
    let client = images::client_for(registry.host(), None);
    let repo_name = unique_repo("convert-mixed");
    let repo = images::repository(registry.host(), &repo_name);
    images::push_image(
        &client,
        &repo,
        "good",
        &ImageSpec::new(Format::Docker).layers(1).build(),
    );

    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("cvmfs");
    let wishlist = work.path().join("wish.yaml");
    std::fs::write(
        &wishlist,
        format!(
            "version: 1\ncvmfs_repo: r.test\ninput:\n  - 'http://{h}/{repo_name}:missing'\n  - 'http://{h}/{repo_name}:good'\n",
            h = registry.host()
        ),
    )
    .unwrap();
    let args = [
        "convert",
        wishlist.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
        "-i",
    ];
    let out = ducc(&args, &work.path().join("cache"));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("1 converted, 0 up to date, 1 failed"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{repo_name}:missing (manifest)")),
        "{stderr}"
    );
    assert!(
        root.join("r.test")
            .join(registry.host())
            .join(format!("{repo_name}:good"))
            .exists()
    );
    assert!(
        !root
            .join("r.test/.metadata")
            .join(registry.host())
            .join(format!("{repo_name}:missing"))
            .exists()
    );

    // The same failure under ignore_errors: exit 0.
    std::fs::write(
        &wishlist,
        format!(
            "version: 1\ncvmfs_repo: r.test\ninput:\n  - 'http://{h}/{repo_name}:missing'\nignore_errors: ['*:missing']\n",
            h = registry.host()
        ),
    )
    .unwrap();
    let out = ducc(&args, &work.path().join("cache"));
    assert_eq!(out.status.code(), Some(0));
}
