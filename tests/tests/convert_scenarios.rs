//! `ducc convert` end to end against the real registry, local publisher: a moved tag, images
//! sharing layers, tag globs, bad input (unreachable registry, corrupt blob), and zstd and
//! uncompressed layers.
#![allow(clippy::unwrap_used)]

mod convert_support;

use std::collections::BTreeMap;

use convert_support::{
    Backend, Compression, Image, Layer, Work, closed_port, flat_dir, layer_dir, marker_config,
    origin, tar_of,
};
use ducc_tests::tree::Tree;
use ducc_tests::{Action, FaultProxy, Registry, Rule, images, unique_repo};

#[test]
fn moved_tag_is_converted_again_and_its_link_repointed() {
    let registry = Registry::anonymous();
    let client = images::client_for(registry.host(), None);
    let name = unique_repo("moved");
    let repo = images::repository(registry.host(), &name);
    let base = Layer::random("base/data.bin", 2048);
    let old = Image::new(
        vec![base.clone(), Layer::files(&[("app/version", b"one")])],
        "old",
    );
    let new = Image::new(
        vec![base.clone(), Layer::files(&[("app/version", b"two")])],
        "new",
    );
    old.push(&client, &repo, "latest");

    let work = Work::new(Backend::Local);
    work.wishlist(&[format!("http://{}/{name}:latest", registry.host())], "");
    assert!(work.convert(&["-i"]).status.success());
    let published = work.repo();
    let link = published
        .join(registry.host())
        .join(format!("{name}:latest"));
    assert_eq!(
        std::fs::canonicalize(&link).unwrap(),
        std::fs::canonicalize(flat_dir(&published, &old)).unwrap()
    );

    new.push(&client, &repo, "latest");
    let out = work.convert(&["-i"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 converted, 0 up to date"));
    assert_eq!(
        std::fs::canonicalize(&link).unwrap(),
        std::fs::canonicalize(flat_dir(&published, &new)).unwrap()
    );
    assert_eq!(std::fs::read(link.join("app/version")).unwrap(), b"two");
    // The old flat tree stays for running containers (garbage collection removes it later).
    assert_eq!(
        std::fs::read(flat_dir(&published, &old).join("app/version")).unwrap(),
        b"one"
    );
    assert_eq!(
        marker_config(&published, registry.host(), &format!("{name}:latest")).unwrap(),
        new.config.digest
    );
    // The shared layer lists both configs, once each; the others their own.
    let mut both = vec![old.config.digest.clone(), new.config.digest.clone()];
    both.sort();
    let mut listed = origin(&published, &base);
    listed.sort();
    assert_eq!(listed, both);
    assert_eq!(
        origin(&published, &new.layers[1]),
        vec![new.config.digest.clone()]
    );
    assert_eq!(
        origin(&published, &old.layers[1]),
        vec![old.config.digest.clone()]
    );

    // A third run has nothing to do, and re-adds nothing to origin.json.
    let out = work.convert(&["-i"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 converted, 1 up to date"));
    assert_eq!(origin(&published, &base).len(), 2);
}

#[test]
fn images_sharing_layers_download_and_write_each_layer_once() {
    let registry = Registry::anonymous();
    let client = images::client_for(registry.host(), None);
    let name = unique_repo("shared");
    let repo = images::repository(registry.host(), &name);
    let base = Layer::random("base/data.bin", 64 * 1024);
    let middle = Layer::random("middle/data.bin", 16 * 1024);
    let a = Image::new(
        vec![base.clone(), middle.clone(), Layer::files(&[("a", b"a")])],
        "a",
    );
    let b = Image::new(
        vec![base.clone(), middle.clone(), Layer::files(&[("b", b"b")])],
        "b",
    );
    a.push(&client, &repo, "a");
    b.push(&client, &repo, "b");
    let proxy = FaultProxy::start(registry.host(), Vec::new());

    let work = Work::new(Backend::Local);
    work.wishlist(
        &[
            format!("http://{}/{name}:a", proxy.host()),
            format!("http://{}/{name}:b", proxy.host()),
        ],
        "",
    );
    let notifications = work.path("events.jsonl");
    let out = work.convert(&["-i", "-n", notifications.to_str().unwrap()]);
    assert!(out.status.success());

    let mut gets: BTreeMap<String, usize> = BTreeMap::new();
    for request in proxy
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path().contains("/blobs/"))
    {
        *gets
            .entry(request.path().rsplit('/').next().unwrap().to_owned())
            .or_default() += 1;
    }
    let mut expected: BTreeMap<String, usize> = BTreeMap::new();
    for blob in [
        &base.blob,
        &middle.blob,
        &a.layers[2].blob,
        &b.layers[2].blob,
        &a.config,
        &b.config,
    ] {
        expected.insert(blob.digest.clone(), 1);
    }
    assert_eq!(gets, expected, "GET /blobs/ per digest");

    let mut unpacked: BTreeMap<String, usize> = BTreeMap::new();
    for event in work
        .events("events.jsonl")
        .iter()
        .filter(|e| e["action"] == "layer_unpack")
    {
        *unpacked
            .entry(event["layer"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(unpacked.len(), 4, "{unpacked:?}");
    assert!(unpacked.values().all(|&n| n == 1), "{unpacked:?}");

    let published = work.repo();
    for layer in [&base, &middle] {
        let mut listed = origin(&published, layer);
        listed.sort();
        let mut both = vec![a.config.digest.clone(), b.config.digest.clone()];
        both.sort();
        assert_eq!(listed, both);
    }
    assert_eq!(
        std::fs::read(flat_dir(&published, &a).join("a")).unwrap(),
        b"a"
    );
    assert!(!flat_dir(&published, &a).join("b").exists());
    assert_eq!(
        std::fs::read(flat_dir(&published, &b).join("b")).unwrap(),
        b"b"
    );
}

#[test]
fn tag_glob_converts_each_matching_tag_under_its_own_thin_tag() {
    let registry = Registry::anonymous();
    let client = images::client_for(registry.host(), None);
    let name = unique_repo("glob");
    let repo = images::repository(registry.host(), &name);
    let mut pushed = BTreeMap::new();
    for tag in ["1.0", "1.1", "2.0", "x1.0"] {
        let image = Image::new(vec![Layer::files(&[("tag", tag.as_bytes())])], tag);
        image.push(&client, &repo, tag);
        pushed.insert(tag, image);
    }

    let work = Work::new(Backend::Local);
    work.wishlist(
        &[format!("http://{}/{name}:1.*", registry.host())],
        &format!(
            "output_format: 'http://{}/thin/$(repository):$(tag)'\n",
            registry.host()
        ),
    );
    let out = work.convert(&[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 converted, 0 up to date, 0 failed"));

    let published = work.repo();
    let thin_repo = images::repository(registry.host(), &format!("thin/{name}"));
    for (tag, image) in &pushed {
        let link = published
            .join(registry.host())
            .join(format!("{name}:{tag}"));
        let thin = client.fetch_manifest_at(
            &thin_repo,
            &images::tag(tag),
            &ducc_registry::ManifestSelection::Platform("linux/amd64".parse().unwrap()),
        );
        if tag.starts_with("1.") {
            assert_eq!(std::fs::read(link.join("tag")).unwrap(), tag.as_bytes());
            assert!(flat_dir(&published, image).is_dir());
            let thin = thin.unwrap_or_else(|e| panic!("thin image of {tag}: {e}"));
            // The thin image's config is the image's own plus the thin descriptor: it keeps the
            // label that tells the tags apart.
            let config =
                images::fetch_config(&client, &thin_repo, thin.image_manifest().unwrap().config());
            let labels = config
                .config()
                .config()
                .as_ref()
                .unwrap()
                .labels()
                .clone()
                .unwrap();
            assert_eq!(labels.get("test").map(String::as_str), Some(*tag));
        } else {
            assert!(
                std::fs::symlink_metadata(&link).is_err(),
                "{tag} must not be converted"
            );
            assert!(!flat_dir(&published, image).exists());
            assert!(thin.is_err(), "no thin image for {tag}");
        }
    }
}

#[test]
fn unreachable_registry_and_corrupt_blob_fail_their_images_only() {
    let registry = Registry::anonymous();
    let client = images::client_for(registry.host(), None);
    let name = unique_repo("bad");
    let repo = images::repository(registry.host(), &name);
    let good = Image::new(vec![Layer::files(&[("good", b"fine")])], "good");
    let corrupt = Image::new(
        vec![
            Layer::files(&[("ok", b"fine")]),
            Layer::random("broken/data.bin", 8192),
        ],
        "corrupt",
    );
    good.push(&client, &repo, "good");
    corrupt.push(&client, &repo, "corrupt");
    let broken = &corrupt.layers[1];
    let proxy = FaultProxy::start(
        registry.host(),
        vec![
            Rule::new(Action::CorruptByte(100))
                .method("GET")
                .path_contains(&broken.blob.digest),
        ],
    );

    let work = Work::new(Backend::Local);
    let port = closed_port();
    work.wishlist(
        &[
            format!("http://127.0.0.1:{port}/nowhere/image:1"),
            format!("http://{}/{name}:corrupt", proxy.host()),
            format!("http://{}/{name}:good", proxy.host()),
        ],
        "",
    );
    let out = work.convert(&["-i"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("1 converted, 0 up to date, 2 failed"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}/nowhere/image:1 (manifest)")),
        "{stderr}"
    );
    let corrupt_line = stderr
        .lines()
        .find(|l| l.contains(&format!("{name}:corrupt (layers)")))
        .unwrap_or_else(|| panic!("no summary line for the corrupt image in {stderr}"));
    assert!(corrupt_line.contains(&broken.blob.digest), "{corrupt_line}");

    let published = work.repo();
    assert!(
        std::fs::read(
            published
                .join(proxy.host())
                .join(format!("{name}:good/good"))
        )
        .is_ok()
    );
    assert!(marker_config(&published, proxy.host(), &format!("{name}:corrupt")).is_none());
    assert!(
        !layer_dir(&published, broken).exists(),
        "no directory for the corrupt layer"
    );
    assert!(!flat_dir(&published, &corrupt).exists());
    assert!(
        std::fs::symlink_metadata(published.join(proxy.host()).join(format!("{name}:corrupt")))
            .is_err()
    );
    assert!(!published.join(format!("127.0.0.1:{port}")).exists());
    // Nothing half-written is left in the repository or the blob cache.
    let paths = |dir: &str| {
        let root = work.path(dir);
        Tree::scan_if_present(&root)
            .unwrap()
            .paths_where(|_, _| true)
            .into_iter()
            .map(move |path| root.join(path).display().to_string())
    };
    let leftovers: Vec<_> = paths("cvmfs")
        .chain(paths("cache/sha256"))
        .filter(|p| p.contains(".partial") || p.contains(broken.hex()))
        .chain(paths("cache/partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Once the registry serves the blob intact, the next run converts the image.
    proxy.set_rules(Vec::new());
    work.wishlist(&[format!("http://{}/{name}:corrupt", proxy.host())], "");
    assert!(work.convert(&["-i"]).status.success());
    assert_eq!(
        marker_config(&published, proxy.host(), &format!("{name}:corrupt")).unwrap(),
        corrupt.config.digest
    );
}

#[test]
fn zstd_and_uncompressed_layers_are_converted() {
    let registry = Registry::anonymous();
    let client = images::client_for(registry.host(), None);
    let name = unique_repo("compression");
    let repo = images::repository(registry.host(), &name);
    let zstd = Image::new(
        vec![
            Layer::new(
                &tar_of(&[("etc/os", b"zstd base"), ("usr/bin/tool", b"v1")]),
                Compression::Zstd,
            ),
            Layer::new(&tar_of(&[("usr/bin/tool", b"v2")]), Compression::Zstd),
        ],
        "zstd",
    );
    let plain = Image::new(
        vec![
            Layer::new(&tar_of(&[("etc/os", b"plain base")]), Compression::None),
            Layer::new(
                &tar_of(&[("data/file", b"uncompressed")]),
                Compression::Gzip,
            ),
        ],
        "plain",
    );
    zstd.push(&client, &repo, "zstd");
    plain.push(&client, &repo, "plain");

    let work = Work::new(Backend::Local);
    work.wishlist(
        &[
            format!("http://{}/{name}:zstd", registry.host()),
            format!("http://{}/{name}:plain", registry.host()),
        ],
        "",
    );
    assert!(work.convert(&["-i"]).status.success());
    let published = work.repo();
    let read = |path: std::path::PathBuf| std::fs::read_to_string(path).unwrap();
    assert_eq!(
        read(flat_dir(&published, &zstd).join("etc/os")),
        "zstd base"
    );
    assert_eq!(read(flat_dir(&published, &zstd).join("usr/bin/tool")), "v2");
    assert_eq!(
        read(layer_dir(&published, &zstd.layers[0]).join("layerfs/usr/bin/tool")),
        "v1"
    );
    assert_eq!(
        read(layer_dir(&published, &zstd.layers[1]).join("layerfs/usr/bin/tool")),
        "v2"
    );
    assert_eq!(
        read(flat_dir(&published, &plain).join("etc/os")),
        "plain base"
    );
    assert_eq!(
        read(flat_dir(&published, &plain).join("data/file")),
        "uncompressed"
    );
    assert_eq!(
        read(layer_dir(&published, &plain.layers[0]).join("layerfs/etc/os")),
        "plain base"
    );
    for layer in zstd.layers.iter().chain(&plain.layers) {
        let info: serde_json::Value = serde_json::from_slice(
            &std::fs::read(layer_dir(&published, layer).join(".metadata/layers.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(info[0]["diff-digest"], layer.diff_id.as_str());
        assert_eq!(
            info[0]["compressed-diff-digest"],
            layer.blob.digest.as_str()
        );
    }
}

#[test]
fn failed_thin_push_leaves_no_marker_and_the_next_run_pushes_it() {
    // The marker goes after the thin image: a run whose push failed (or that was killed between
    // the two) must not make the next run skip the image and never push it.
    let registry = Registry::anonymous();
    let client = images::client_for(registry.host(), None);
    let name = unique_repo("thin-late");
    let repo = images::repository(registry.host(), &name);
    let image = Image::new(vec![Layer::files(&[("etc/motd", b"thin")])], "thin-late");
    image.push(&client, &repo, "1");
    let proxy = FaultProxy::start(
        registry.host(),
        vec![
            Rule::new(Action::status(403))
                .method("PUT")
                .path_contains("/manifests/"),
        ],
    );
    let work = Work::new(Backend::Local);
    work.wishlist(
        &[format!("http://{}/{name}:1", registry.host())],
        &format!(
            "output_format: 'http://{}/$(repository)_thin:$(tag)'\n",
            proxy.host()
        ),
    );
    let out = work.convert(&[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{name}:1 (thin)")), "{stderr}");
    let published = work.repo();
    assert!(marker_config(&published, registry.host(), &format!("{name}:1")).is_none());
    // Layers, flat tree and link are in place; only the marker waits.
    assert!(flat_dir(&published, &image).join("etc/motd").is_file());

    proxy.set_rules(Vec::new());
    let out = work.convert(&[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 converted, 0 up to date"));
    assert_eq!(
        marker_config(&published, registry.host(), &format!("{name}:1")).unwrap(),
        image.config.digest
    );
    let thin: serde_json::Value = serde_json::from_slice(&ducc_tests::skopeo::inspect_raw(
        registry.host(),
        &format!("{name}_thin:1"),
        None,
    ))
    .unwrap();
    assert_eq!(thin["schemaVersion"], 2);
}
