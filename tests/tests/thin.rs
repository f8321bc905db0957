//! Thin images built by ducc-thin and pushed with ducc-registry into the real CNCF registry,
//! read back with skopeo as the independent oracle.

// Test code: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::process::Command;

use ducc_oci::ImageFormat;
use ducc_oci::{LayerDigest, ManifestDigest};
use ducc_registry::oci_spec::image::ImageConfiguration;
use ducc_tests::images::{self, client_for};
use ducc_tests::{FaultProxy, Registry, require_tool, skopeo, unique_repo};
use ducc_thin::{PushOutcome, ThinDescriptor, ThinError, ThinImage, ThinLayer};

const SOURCE_CONFIG: &str = r#"{
    "created": "2024-05-06T07:08:09Z",
    "architecture": "amd64", "os": "linux",
    "config": {
        "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/root"],
        "Entrypoint": ["/docker-entrypoint.sh"],
        "Cmd": ["python3"],
        "WorkingDir": "/srv",
        "Labels": {"org.opencontainers.image.title": "demo"}
    },
    "rootfs": {"type": "layers", "diff_ids": []}
}"#;

fn source() -> ImageConfiguration {
    serde_json::from_str(SOURCE_CONFIG).unwrap()
}

fn descriptor(origin: &str) -> ThinDescriptor {
    let layers = (0..3)
        .map(|i| {
            ThinLayer::in_repository(
                "unpacked.cern.ch",
                Some("sub"),
                &LayerDigest::from_hex(&format!("{i:02x}").repeat(32)).unwrap(),
            )
        })
        .collect();
    ThinDescriptor::new(origin, layers)
}

/// Copies `host/reference` into an OCI layout with skopeo and returns the thin layer's files.
fn files_in_pushed_layer(
    host: &str,
    reference: &str,
    creds: Option<&ducc_tests::Credentials>,
) -> Vec<(String, u32, Vec<u8>)> {
    let skopeo_bin = require_tool("skopeo", "skopeo");
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let mut copy = Command::new(skopeo_bin);
    copy.args(["copy", "--src-tls-verify=false"]);
    match creds {
        Some(c) => copy
            .arg("--src-creds")
            .arg(format!("{}:{}", c.username, c.password)),
        None => copy.arg("--src-no-creds"),
    };
    copy.arg(format!("docker://{host}/{reference}"))
        .arg(format!("oci:{}:thin", layout.display()));
    let out = copy.output().unwrap();
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .replace("sha256:", "");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(layout.join("blobs/sha256").join(manifest_digest)).unwrap(),
    )
    .unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "a thin image has one layer");
    let layer_digest = layers[0]["digest"].as_str().unwrap().replace("sha256:", "");
    let blob = std::fs::read(layout.join("blobs/sha256").join(layer_digest)).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&blob[..]));
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            (
                entry.path().unwrap().display().to_string(),
                entry.header().mode().unwrap(),
                content,
            )
        })
        .collect()
}

/// The config skopeo reads for `host/reference`.
fn pushed_config(
    host: &str,
    reference: &str,
    creds: Option<&ducc_tests::Credentials>,
) -> serde_json::Value {
    let skopeo_bin = require_tool("skopeo", "skopeo");
    let mut cmd = Command::new(skopeo_bin);
    cmd.args(["inspect", "--config", "--raw", "--tls-verify=false"]);
    match creds {
        Some(c) => cmd
            .arg("--creds")
            .arg(format!("{}:{}", c.username, c.password)),
        None => cmd.arg("--no-creds"),
    };
    let out = cmd
        .arg(format!("docker://{host}/{reference}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect --config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn push_and_check(registry: &Registry, format: ImageFormat) {
    let client = client_for(registry.host(), registry.credentials());
    let repo_name = unique_repo("thin");
    let repo = images::repository(registry.host(), &repo_name);
    let thin = descriptor("https://registry.hub.docker.com/library/python:3.12");
    let image = ThinImage::build(&thin, &source(), format).unwrap();

    let outcome = ducc_thin::push(&client, &repo, "3.12", &image).unwrap();
    assert_eq!(outcome, PushOutcome::Pushed { blobs_uploaded: 2 });

    let raw = skopeo::inspect_raw(
        registry.host(),
        &format!("{repo_name}:3.12"),
        registry.credentials(),
    );
    assert_eq!(
        raw, image.manifest.bytes,
        "the registry serves the manifest as built"
    );
    let manifest: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(manifest["mediaType"], format.manifest_media_type());

    let files = files_in_pushed_layer(
        registry.host(),
        &format!("{repo_name}:3.12"),
        registry.credentials(),
    );
    assert_eq!(files.len(), 1, "only thin.json: {files:?}");
    let (path, mode, content) = &files[0];
    assert_eq!((path.as_str(), *mode), ("thin.json", 0o644));
    let read_back: ThinDescriptor = serde_json::from_slice(content).unwrap();
    assert_eq!(read_back, thin);
    assert_eq!(
        read_back.layers[1].url,
        format!(
            "cvmfs://unpacked.cern.ch/sub/.layers/01/{}/layerfs",
            "01".repeat(32)
        )
    );

    let config = pushed_config(
        registry.host(),
        &format!("{repo_name}:3.12"),
        registry.credentials(),
    );
    assert_eq!(
        config,
        serde_json::from_slice::<serde_json::Value>(&image.config.bytes).unwrap()
    );
    assert_eq!(
        config["config"]["Env"],
        serde_json::json!([
            "PATH=/usr/local/bin:/usr/bin:/bin",
            "HOME=/root",
            "CVMFS_IMAGE=true"
        ])
    );
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/docker-entrypoint.sh"])
    );
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["python3"]));
    assert_eq!(config["config"]["WorkingDir"], "/srv");
    assert_eq!(
        config["rootfs"]["diff_ids"],
        serde_json::json!([image.diff_id])
    );
}

#[test]
fn docker_v2_thin_image_reads_back_through_skopeo() {
    push_and_check(Registry::anonymous(), ImageFormat::DockerV2);
}

#[test]
fn oci_thin_image_reads_back_through_skopeo() {
    push_and_check(Registry::anonymous(), ImageFormat::Oci);
}

#[test]
fn thin_image_pushes_with_basic_auth() {
    push_and_check(Registry::basic_auth(), ImageFormat::DockerV2);
}

#[test]
fn thin_image_pushes_with_token_auth() {
    push_and_check(Registry::token_auth(), ImageFormat::DockerV2);
}

#[test]
fn push_without_credentials_fails_with_the_registry_message() {
    let registry = Registry::basic_auth();
    let client = client_for(registry.host(), None);
    let repo = images::repository(registry.host(), &unique_repo("thin-denied"));
    let image = ThinImage::build(
        &descriptor("https://r.io/a:1"),
        &source(),
        ImageFormat::DockerV2,
    )
    .unwrap();
    let err = ducc_thin::push(&client, &repo, "1", &image).unwrap_err();
    assert!(matches!(err, ThinError::Push { .. }), "{err}");
    let chain = ducc_oci::error_chain(&err);
    assert!(
        chain.contains("401") || chain.to_lowercase().contains("unauthorized"),
        "{chain}"
    );
}

#[test]
fn same_source_builds_the_same_digest_and_a_second_push_sends_nothing() {
    let registry = Registry::anonymous();
    let proxy = FaultProxy::start(registry.host(), Vec::new());
    let client = client_for(proxy.host(), None);
    let repo = images::repository(proxy.host(), &unique_repo("thin-idem"));
    let first = ThinImage::build(
        &descriptor("https://r.io/a:1"),
        &source(),
        ImageFormat::DockerV2,
    )
    .unwrap();
    let second = ThinImage::build(
        &descriptor("https://r.io/a:1"),
        &source(),
        ImageFormat::DockerV2,
    )
    .unwrap();
    assert_eq!(first, second, "bytes and digests are reproducible");

    assert!(matches!(
        ducc_thin::push(&client, &repo, "1", &first).unwrap(),
        PushOutcome::Pushed { .. }
    ));
    proxy.clear_requests();
    assert_eq!(
        ducc_thin::push(&client, &repo, "1", &second).unwrap(),
        PushOutcome::AlreadyPresent
    );
    let requests = proxy.requests();
    assert_eq!(proxy.count("PUT", "/manifests/"), 0, "{requests:?}");
    assert_eq!(proxy.count("POST", "/blobs/uploads"), 0, "{requests:?}");
    assert_eq!(proxy.count("PATCH", "/blobs/uploads"), 0, "{requests:?}");
}

#[test]
fn changed_tag_target_is_replaced_but_present_blobs_are_not_resent() {
    let registry = Registry::anonymous();
    let proxy = FaultProxy::start(registry.host(), Vec::new());
    let client = client_for(proxy.host(), None);
    let repo = images::repository(proxy.host(), &unique_repo("thin-move"));
    let old = ThinImage::build(
        &descriptor("https://r.io/a:1"),
        &source(),
        ImageFormat::DockerV2,
    )
    .unwrap();
    ducc_thin::push(&client, &repo, "1", &old).unwrap();
    // Same descriptor and creation time (so the same layer), another Cmd: only the config goes up.
    let mut other_source = source();
    let mut runtime = other_source.config().clone().unwrap();
    runtime.set_cmd(Some(vec!["bash".to_owned()]));
    other_source.set_config(Some(runtime));
    let new = ThinImage::build(
        &descriptor("https://r.io/a:1"),
        &other_source,
        ImageFormat::DockerV2,
    )
    .unwrap();
    assert_eq!(new.layer, old.layer);
    assert_ne!(new.manifest.digest, old.manifest.digest);
    proxy.clear_requests();
    assert_eq!(
        ducc_thin::push(&client, &repo, "1", &new).unwrap(),
        PushOutcome::Pushed { blobs_uploaded: 1 }
    );
    assert_eq!(proxy.count("PUT", "/manifests/1"), 1);
    let raw = skopeo::inspect_raw(registry.host(), &format!("{}:1", repo.path()), None);
    assert_eq!(
        raw, new.manifest.bytes,
        "the tag now names the new thin image"
    );
}

#[test]
fn each_expanded_glob_tag_gets_its_own_thin_image() {
    // Upstream pushed every tag a glob expanded to under one output name; here each expanded input
    // tag maps to its own output tag, carrying its own origin.
    let registry = Registry::anonymous();
    let client = client_for(registry.host(), None);
    let repo_name = unique_repo("thin-glob");
    let repo = images::repository(registry.host(), &repo_name);
    let mut digests = Vec::new();
    for tag in ["21.2.10", "21.2.11"] {
        let origin = format!("https://registry.hub.docker.com/atlas/analysisbase:{tag}");
        let image =
            ThinImage::build(&descriptor(&origin), &source(), ImageFormat::DockerV2).unwrap();
        ducc_thin::push(&client, &repo, tag, &image).unwrap();
        digests.push(image.manifest.digest);
    }
    assert_ne!(digests[0], digests[1]);
    for (tag, digest) in ["21.2.10", "21.2.11"].iter().zip(&digests) {
        let raw = skopeo::inspect_raw(registry.host(), &format!("{repo_name}:{tag}"), None);
        assert_eq!(&ManifestDigest::of(&raw), digest, "{tag}");
        let files = files_in_pushed_layer(registry.host(), &format!("{repo_name}:{tag}"), None);
        let thin: ThinDescriptor = serde_json::from_slice(&files[0].2).unwrap();
        assert!(thin.origin.unwrap().ends_with(tag));
    }
}

/// A thin index over one image per platform reads back through skopeo, each entry resolving to
/// its platform's thin image; a second push of the same index sends nothing.
#[test]
fn thin_index_reads_back_through_skopeo_and_a_second_push_sends_nothing() {
    use ducc_oci::Platform;
    use ducc_thin::ThinIndex;
    let registry = Registry::anonymous();
    let proxy = FaultProxy::start(registry.host(), Vec::new());
    let client = client_for(proxy.host(), None);
    let name = unique_repo("thin-index");
    let repo = images::repository(proxy.host(), &name);
    let build = || {
        let platforms = [("amd64", None), ("arm64", Some("v8"))];
        let images = platforms
            .iter()
            .map(|(arch, variant)| {
                let config: ImageConfiguration = serde_json::from_str(
                    &SOURCE_CONFIG.replace("\"amd64\"", &format!("\"{arch}\"")),
                )
                .unwrap();
                let image = ThinImage::build(
                    &descriptor(&format!("https://r.io/a:{arch}")),
                    &config,
                    ImageFormat::Oci,
                )
                .unwrap();
                let platform = Platform::new("linux", arch, *variant);
                (platform, image)
            })
            .collect();
        ThinIndex::build(images, ImageFormat::Oci).unwrap()
    };
    let index = build();
    assert!(matches!(
        ducc_thin::push_index(&client, &repo, "1", &index).unwrap(),
        PushOutcome::Pushed { blobs_uploaded: 4 }
    ));
    let raw = skopeo::inspect_raw(registry.host(), &format!("{name}:1"), None);
    assert_eq!(
        raw, index.manifest.bytes,
        "the registry serves the index as built"
    );
    for (platform, image) in &index.images {
        let child = skopeo::inspect_raw(
            registry.host(),
            &format!("{name}@{}", image.manifest.digest),
            None,
        );
        assert_eq!(child, image.manifest.bytes, "{platform:?}");
    }

    proxy.clear_requests();
    assert_eq!(
        ducc_thin::push_index(&client, &repo, "1", &build()).unwrap(),
        PushOutcome::AlreadyPresent
    );
    let requests = proxy.requests();
    assert_eq!(proxy.count("PUT", "/manifests/"), 0, "{requests:?}");
    assert_eq!(proxy.count("POST", "/blobs/uploads"), 0, "{requests:?}");
}
