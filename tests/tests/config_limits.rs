//! An image's config is parsed once, when fetched, before anything of the image is published
//! (issue 27): a config that valid JSON allows either converts in every step (layers, flat tree
//! with its `.singularity.d` environment, podman store, thin image, marker) or fails before the
//! first publish, never in between. The images are valid by digest: each config is pushed as
//! the exact bytes its manifest names.

// Test code: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used)]

mod convert_support;

use convert_support::{Backend, Image, Layer, Work, marker_config};
use ducc_tests::images::{self, Blob};
use ducc_tests::{Registry, unique_repo};
use serde_json::json;

/// How deep the deep configs nest.
const DEPTH: usize = 200_000;

/// The config of `layer` as JSON text: `fields` (text of `"name":value` pairs, each followed by a
/// comma) first, then an ordinary image config.
fn config_text(layer: &Layer, fields: &str, env: &str) -> Vec<u8> {
    let rest = json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-05-06T07:08:09Z",
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
    })
    .to_string();
    format!(
        r#"{{{fields}"config":{{"Env":{env},"Cmd":["/bin/sh"]}},{}"#,
        &rest[1..]
    )
    .into_bytes()
}

/// `[[[...]]]` nested `depth` deep.
fn nested(depth: usize) -> String {
    let mut text = "[".repeat(depth);
    text.push_str(&"]".repeat(depth));
    text
}

/// An image of `layer` whose config is exactly `config` (the manifest names its digest and size).
fn image_with_config_bytes(layer: Layer, config: Vec<u8>) -> Image {
    let mut image = Image::new(vec![layer], "config-limits");
    image.config = Blob::new(config);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": image.config.descriptor("application/vnd.oci.image.config.v1+json"),
        "layers": image.layers.iter().map(|l| l.blob.descriptor(l.media_type)).collect::<Vec<_>>(),
    });
    image.manifest = Blob::new(serde_json::to_vec(&manifest).unwrap());
    image
}

/// Pushes `image` as `<name>:1` and converts it with `backend`; gives the work directory, the
/// image name below the registry and the exit code.
fn convert(backend: Backend, image: &Image) -> (Work, String, Option<i32>, String) {
    let registry = Registry::anonymous();
    let client = images::client_for(registry.host(), None);
    let name = unique_repo("config-limits");
    image.push(&client, &images::repository(registry.host(), &name), "1");
    let work = Work::new(backend);
    work.wishlist(&[registry.image(&format!("{name}:1"))], "");
    let out = work.convert(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (
        work,
        format!("{}/{name}:1", registry.host()),
        out.status.code(),
        stderr,
    )
}

/// Nothing of any image is in the repository: no layer, flat tree, link, marker or podman
/// store, and (for the stand-in) no transaction was ever opened.
fn assert_nothing_published(work: &Work) {
    let repo = work.repo();
    let entries: Vec<String> = std::fs::read_dir(&repo)
        .map(|dir| {
            dir.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name != ".cvmfsdirtab" && name != "new_repository")
                .collect()
        })
        .unwrap_or_default();
    assert!(
        entries.is_empty(),
        "published into {}: {entries:?}",
        repo.display()
    );
    let opened: Vec<String> = work
        .standin_log()
        .into_iter()
        .filter(|l| l.contains("transaction") || l.contains("ingest"))
        .collect();
    assert!(opened.is_empty(), "the stand-in was asked to {opened:?}");
}

#[test]
fn a_config_nested_200000_deep_in_a_field_ducc_does_not_read_converts_in_every_step() {
    for backend in [Backend::Local, Backend::Cvmfs] {
        let layer = Layer::files(&[("etc/motd", b"deep\n")]);
        let config = config_text(
            &layer,
            &format!(r#""x-deep":{},"#, nested(DEPTH)),
            r#"["PATH=/usr/bin:/bin","DEEP=yes"]"#,
        );
        let image = image_with_config_bytes(layer, config);
        let (work, name, code, stderr) = convert(backend, &image);
        assert_eq!(code, Some(0), "{backend:?}: {stderr}");
        let repo = work.repo();
        let (host, path) = name.split_once('/').unwrap();
        assert_eq!(
            marker_config(&repo, host, path),
            Some(image.config.digest.clone()),
            "{backend:?}: marker"
        );
        let link = repo.join(&name);
        let env = std::fs::read_to_string(link.join(".singularity.d/env/10-docker2singularity.sh"))
            .unwrap_or_else(|e| panic!("{backend:?}: the flat tree's environment: {e}"));
        assert!(env.contains("DEEP"), "{backend:?}: {env}");
        assert_eq!(
            std::fs::read_to_string(link.join("etc/motd")).unwrap(),
            "deep\n"
        );
        let stored = work
            .repo()
            .join("podmanStore/overlay-images")
            .join(image.config_hex());
        assert!(stored.is_dir(), "{backend:?}: no podman store image");
    }
}

#[test]
fn a_config_nested_200000_deep_in_a_field_ducc_reads_fails_before_anything_is_published() {
    for backend in [Backend::Local, Backend::Cvmfs] {
        let layer = Layer::files(&[("etc/motd", b"deep\n")]);
        let config = config_text(&layer, "", &format!("[{}]", nested(DEPTH)));
        let image = image_with_config_bytes(layer, config);
        let (work, name, code, stderr) = convert(backend, &image);
        assert_eq!(code, Some(1), "{backend:?}: {stderr}");
        assert!(
            stderr.contains(&format!("{name} (config)")) || stderr.contains("config failed"),
            "{backend:?}: {stderr}"
        );
        assert!(
            stderr.contains("invalid image config"),
            "{backend:?}: {stderr}"
        );
        assert_nothing_published(&work);
    }
}

#[test]
fn a_config_of_32_mib_and_1_byte_fails_before_anything_is_published() {
    for backend in [Backend::Local, Backend::Cvmfs] {
        let layer = Layer::files(&[("etc/motd", b"big\n")]);
        let limit = usize::try_from(ducc_unpack::DEFAULT_MAX_CONFIG_BYTES).unwrap();
        let base = config_text(&layer, r#""pad":"","#, r#"["PATH=/bin"]"#);
        let pad = limit + 1 - base.len();
        let config = config_text(
            &layer,
            &format!(r#""pad":"{}","#, "a".repeat(pad)),
            r#"["PATH=/bin"]"#,
        );
        assert_eq!(config.len(), limit + 1);
        let image = image_with_config_bytes(layer, config);
        let (work, _, code, stderr) = convert(backend, &image);
        assert_eq!(code, Some(1), "{backend:?}: {stderr}");
        assert!(stderr.contains("config failed"), "{backend:?}: {stderr}");
        assert_nothing_published(&work);
    }
}
