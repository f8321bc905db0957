//! `ducc convert --multi-arch` end to end against the real registry, local publisher: every linux
//! platform of an index goes under `.multiarch/<arch>[:<variant>]` (upstream's newer layout), the
//! public name becomes a CernVM-FS variant symlink, `.multiarch` gets the `uname -m` aliases and
//! the thin image is an index; attestation and non-linux entries are left out; a failed platform
//! holds back the shared links; a plain manifest is converted as without the flag.
#![allow(clippy::unwrap_used)]

mod convert_support;

use std::path::Path;

use convert_support::{Backend, Image, Layer, REPO, Work, flat_dir, layer_dir, run_options, scan};
use ducc_registry::{Client, ManifestSelection, Reference, Repository};
use ducc_tests::images;
use ducc_tests::{FaultProxy, Registry, unique_repo};
use serde_json::{Value, json};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// An image whose config names its platform.
fn platform_image(layers: Vec<Layer>, arch: &str, variant: Option<&str>) -> Image {
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    let mut config = json!({
        "architecture": arch,
        "os": "linux",
        "created": "2024-05-06T07:08:09Z",
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"], "Labels": {"arch": arch}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    if let Some(variant) = variant {
        config["variant"] = json!(variant);
    }
    Image::with_config(layers, &config)
}

/// Pushes an OCI index over `entries` (image, os, arch, variant) plus an attestation-style
/// `unknown/unknown` entry, each child by digest, and tags the index `tag`.
fn push_index(
    client: &Client,
    repo: &Repository,
    tag: &str,
    entries: &[(&Image, &str, &str, Option<&str>)],
) {
    let mut manifests = Vec::new();
    for (image, os, arch, variant) in entries {
        for layer in &image.layers {
            images::push_blob(client, repo, &layer.blob);
        }
        images::push_blob(client, repo, &image.config);
        images::push_manifest(
            client,
            repo,
            &image.manifest.digest,
            OCI_MANIFEST,
            &image.manifest.bytes,
        );
        let mut entry = image.manifest.descriptor(OCI_MANIFEST);
        entry["platform"] = json!({"architecture": arch, "os": os});
        if let Some(variant) = variant {
            entry["platform"]["variant"] = json!(variant);
        }
        manifests.push(entry);
    }
    // An attestation entry pointing at the first image: never a platform of its own.
    let mut attestation = entries[0].0.manifest.descriptor(OCI_MANIFEST);
    attestation["platform"] = json!({"architecture": "unknown", "os": "unknown"});
    attestation["annotations"] = json!({
        "vnd.docker.reference.digest": entries[0].0.manifest.digest,
        "vnd.docker.reference.type": "attestation-manifest",
    });
    manifests.push(attestation);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    }))
    .unwrap();
    images::push_manifest(client, repo, tag, OCI_INDEX, &index);
}

fn marker_config(repo: &Path, arch: Option<&str>, host: &str, name: &str) -> Option<String> {
    let mut path = repo.join(".metadata");
    if let Some(arch) = arch {
        path = path.join(".multiarch").join(arch);
    }
    let path = path.join(host).join(name).join("manifest.json");
    let marker: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    marker["Config"]["Digest"].as_str().map(str::to_owned)
}

fn link_text(path: &Path) -> String {
    std::fs::read_link(path).unwrap().display().to_string()
}

/// `../` once per directory between the repository root and the public link's directory.
fn ups(host: &str, name: &str) -> String {
    "../".repeat(1 + name.split('/').count() - 1 + host.split('/').count() - 1)
}

struct Fixture {
    host: String,
    name: String,
    amd: Image,
    arm: Image,
    windows: Image,
}

fn fixture(registry: &Registry, push_arm_blob: bool) -> Fixture {
    let client = images::client_for(registry.host(), None);
    let name = unique_repo("multi");
    let repo = images::repository(registry.host(), &name);
    let base = Layer::random("base/shared.bin", 4096);
    let amd = platform_image(
        vec![base.clone(), Layer::files(&[("etc/arch", b"amd64")])],
        "amd64",
        None,
    );
    let arm = platform_image(
        vec![base.clone(), Layer::files(&[("etc/arch", b"arm64")])],
        "arm64",
        Some("v8"),
    );
    let windows = platform_image(
        vec![Layer::files(&[("Windows/arch", b"win")])],
        "amd64",
        None,
    );
    push_index(
        &client,
        &repo,
        "1",
        &[
            (&amd, "linux", "amd64", None),
            (&arm, "linux", "arm64", Some("v8")),
            (&windows, "windows", "amd64", None),
        ],
    );
    if !push_arm_blob {
        // Remove the arm64-only layer from the registry's storage: that platform fails.
        let blob = registry.stored_blob_path(&arm.layers[1].blob.digest);
        std::fs::remove_file(&blob).unwrap();
    }
    Fixture {
        host: registry.host().to_owned(),
        name,
        amd,
        arm,
        windows,
    }
}

#[test]
fn multi_arch_index_gets_the_multiarch_layout_variant_link_aliases_and_thin_index() {
    let registry = Registry::anonymous();
    let f = fixture(registry, true);
    let proxy = FaultProxy::start(&f.host, Vec::new());
    let host = proxy.host().to_owned();
    let work = Work::new(Backend::Local);
    work.wishlist(
        &[format!("http://{host}/{}:1", f.name)],
        &format!(
            "output_format: 'http://{}/$(repository)_thin:$(tag)'\n",
            f.host
        ),
    );
    let out = work.convert(&["--multi-arch", "--thin-format", "oci"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("2 converted, 0 up to date, 0 failed"),
        "{stderr}"
    );
    let repo = work.repo();
    let tag = format!("{}:1", f.name);

    // Each linux platform: its marker and symlink under .multiarch, sharing the base layer.
    for (image, arch, content) in [(&f.amd, "amd64", "amd64"), (&f.arm, "arm64:v8", "arm64")] {
        assert_eq!(
            marker_config(&repo, Some(arch), &host, &tag).unwrap(),
            image.config.digest
        );
        let link = repo.join(".multiarch").join(arch).join(&host).join(&tag);
        assert_eq!(
            std::fs::canonicalize(&link).unwrap(),
            std::fs::canonicalize(flat_dir(&repo, image)).unwrap()
        );
        assert!(link_text(&link).starts_with("../../../"));
        assert_eq!(
            std::fs::read_to_string(link.join("etc/arch")).unwrap(),
            content
        );
        assert!(link.join("base/shared.bin").is_file());
        assert!(link.join(".singularity.d/runscript").is_file());
        for layer in &image.layers {
            assert!(layer_dir(&repo, layer).join("layerfs").is_dir());
        }
    }
    // Neither the attestation nor the windows entry was converted, and no plain marker exists.
    assert!(!flat_dir(&repo, &f.windows).exists());
    assert!(!layer_dir(&repo, &f.windows.layers[0]).exists());
    assert_eq!(marker_config(&repo, None, &host, &tag), None);
    let mut arch_dirs: Vec<String> = std::fs::read_dir(repo.join(".multiarch"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| !e.file_type().unwrap().is_symlink())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    arch_dirs.sort();
    assert_eq!(arch_dirs, ["amd64", "arm64:v8"]);

    // The public name is a variant symlink for the CernVM-FS client to resolve.
    let public = repo.join(&host).join(&tag);
    assert_eq!(
        link_text(&public),
        format!(
            "{}.multiarch/$(CVMFS_ARCH:-amd64)/{host}/{tag}",
            ups(&host, &f.name)
        )
    );
    // What a client with CVMFS_ARCH=x86_64 or aarch64 resolves, through the aliases.
    for (alias, target, content) in [
        ("x86_64", "amd64", "amd64"),
        ("x86-64", "amd64", "amd64"),
        ("aarch64", "arm64:v8", "arm64"),
        ("arm64", "arm64:v8", "arm64"),
    ] {
        let path = repo.join(".multiarch").join(alias);
        assert_eq!(link_text(&path), target, "{alias}");
        let resolved = path.join(&host).join(&tag).join("etc/arch");
        assert_eq!(std::fs::read_to_string(resolved).unwrap(), content);
    }
    for absent in ["i386", "armhf", "armel"] {
        assert!(std::fs::symlink_metadata(repo.join(".multiarch").join(absent)).is_err());
    }

    // The thin image is an index with one thin image per platform.
    let thin: Value = serde_json::from_slice(&ducc_tests::skopeo::inspect_raw(
        &f.host,
        &format!("{}_thin:1", f.name),
        None,
    ))
    .unwrap();
    assert_eq!(thin["mediaType"], OCI_INDEX);
    let entries = thin["manifests"].as_array().unwrap();
    assert_eq!(
        entries
            .iter()
            .map(|e| e["platform"].clone())
            .collect::<Vec<_>>(),
        [
            json!({"architecture": "amd64", "os": "linux"}),
            json!({"architecture": "arm64", "os": "linux", "variant": "v8"}),
        ]
    );
    let client = images::client_for(&f.host, None);
    let thin_repo = images::repository(&f.host, &format!("{}_thin", f.name));
    for (entry, image) in entries.iter().zip([&f.amd, &f.arm]) {
        let digest = ducc_registry::parse_digest(entry["digest"].as_str().unwrap()).unwrap();
        let child = client
            .fetch_manifest_at(
                &thin_repo,
                &Reference::digest(digest),
                &ManifestSelection::Index,
            )
            .unwrap();
        let manifest = child.image_manifest().unwrap();
        let config = images::fetch_config(&client, &thin_repo, manifest.config());
        assert_eq!(
            config.config().architecture().to_string(),
            entry["platform"]["architecture"].as_str().unwrap()
        );
        // The thin layer's thin.json points at this platform's own layers.
        let thin_json = thin_json(&client, &thin_repo, manifest.layers()[0].digest().as_ref());
        let urls: Vec<&str> = thin_json["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["url"].as_str().unwrap())
            .collect();
        let expected: Vec<String> = image
            .layers
            .iter()
            .map(|l| {
                let h = l.hex();
                format!("cvmfs://unpacked.test/.layers/{}/{h}/layerfs", &h[..2])
            })
            .collect();
        assert_eq!(urls, expected);
    }

    // A rerun: one index and two manifest requests, no blob, nothing changed.
    let before = scan(&repo);
    proxy.clear_requests();
    let out = work.convert(&["--multi-arch", "--thin-format", "oci"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 converted, 2 up to date"));
    assert_eq!(proxy.count("GET", "/blobs/"), 0, "{:?}", proxy.requests());
    before.assert_same_as(&scan(&repo), &run_options(), "first run", "rerun");
}

/// Reads `thin.json` out of a thin image's gzip layer.
fn thin_json(client: &Client, repo: &Repository, digest: &str) -> Value {
    let digest = ducc_oci::BlobDigest::parse(digest).unwrap();
    let reader = client.open_blob(repo, &digest, None).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(reader));
    let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(entry.path().unwrap().to_str().unwrap(), "thin.json");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn a_failed_platform_holds_back_the_shared_links_until_a_run_converts_it() {
    let registry = Registry::anonymous();
    let f = fixture(registry, false);
    let work = Work::new(Backend::Local);
    work.wishlist(&[format!("http://{}/{}:1", f.host, f.name)], "");
    let out = work.convert(&["--multi-arch", "-i"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("1 converted, 0 up to date, 1 failed"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{}:1 (linux/arm64/v8) (layers)", f.name)),
        "{stderr}"
    );
    let repo = work.repo();
    let tag = format!("{}:1", f.name);
    // No marker either: the markers go last, once the whole image is there.
    assert_eq!(marker_config(&repo, Some("amd64"), &f.host, &tag), None);
    assert_eq!(marker_config(&repo, Some("arm64:v8"), &f.host, &tag), None);
    assert!(flat_dir(&repo, &f.amd).is_dir());
    assert!(!flat_dir(&repo, &f.arm).exists());
    // Neither the variant link nor the aliases: the image as a whole is not there yet.
    assert!(std::fs::symlink_metadata(repo.join(&f.host).join(&tag)).is_err());
    assert!(std::fs::symlink_metadata(repo.join(".multiarch/x86_64")).is_err());

    // The blob is back: the next run converts arm64 only and writes the shared links.
    let client = images::client_for(&f.host, None);
    let image_repo = images::repository(&f.host, &f.name);
    images::push_blob(&client, &image_repo, &f.arm.layers[1].blob);
    let out = work.convert(&["--multi-arch", "-i"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 converted, 0 up to date, 0 failed"));
    for (image, arch) in [(&f.amd, "amd64"), (&f.arm, "arm64:v8")] {
        assert_eq!(
            marker_config(&repo, Some(arch), &f.host, &tag).unwrap(),
            image.config.digest
        );
    }
    assert_eq!(
        link_text(&repo.join(&f.host).join(&tag)),
        format!(
            "{}.multiarch/$(CVMFS_ARCH:-amd64)/{}/{tag}",
            ups(&f.host, &f.name),
            f.host
        )
    );
    assert_eq!(link_text(&repo.join(".multiarch/aarch64")), "arm64:v8");
}

#[test]
fn multi_arch_converts_a_plain_manifest_as_without_the_flag() {
    let registry = Registry::anonymous();
    let client = images::client_for(registry.host(), None);
    let name = unique_repo("multi-plain");
    let repo = images::repository(registry.host(), &name);
    let image = Image::new(vec![Layer::files(&[("etc/hello", b"hi")])], "plain");
    image.push(&client, &repo, "1");
    let work = Work::new(Backend::Local);
    work.wishlist(&[format!("http://{}/{name}:1", registry.host())], "");
    assert!(work.convert(&["--multi-arch", "-i"]).status.success());
    let published = work.repo();
    let tag = format!("{name}:1");
    assert_eq!(
        marker_config(&published, None, registry.host(), &tag).unwrap(),
        image.config.digest
    );
    assert_eq!(
        std::fs::canonicalize(published.join(registry.host()).join(&tag)).unwrap(),
        std::fs::canonicalize(flat_dir(&published, &image)).unwrap()
    );
    assert!(!published.join(".multiarch").exists());
}

#[test]
fn default_platform_picks_the_variant_link_default() {
    let registry = Registry::anonymous();
    let f = fixture(registry, true);
    let work = Work::new(Backend::Local);
    work.wishlist(&[format!("http://{}/{}:1", f.host, f.name)], "");
    let out = work.convert(&["--multi-arch", "-i", "--platform", "linux/arm64"]);
    assert!(out.status.success());
    assert_eq!(
        link_text(&work.repo().join(&f.host).join(format!("{}:1", f.name))),
        format!(
            "{}.multiarch/$(CVMFS_ARCH:-arm64:v8)/{}/{}:1",
            ups(&f.host, &f.name),
            f.host,
            f.name
        )
    );
}

#[test]
fn deleting_a_multi_arch_image_takes_every_platform_and_gc_its_content() {
    let registry = Registry::anonymous();
    let f = fixture(registry, true);
    let work = Work::new(Backend::Local);
    let image = format!("http://{}/{}:1", f.host, f.name);
    work.wishlist(std::slice::from_ref(&image), "");
    assert!(work.convert(&["--multi-arch", "-i"]).status.success());
    let repo = work.repo();
    let tag = format!("{}:1", f.name);
    let link = repo.join(&f.host).join(&tag);
    assert!(std::fs::symlink_metadata(&link).is_ok());

    let out = work
        .lifecycle_command("delete-image", &[REPO, &image])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(std::fs::symlink_metadata(&link).is_err(), "{stdout}");
    for arch in ["amd64", "arm64:v8"] {
        assert!(
            marker_config(&repo, Some(arch), &f.host, &tag).is_none(),
            "{arch}"
        );
        let arch_link = repo.join(".multiarch").join(arch).join(&f.host).join(&tag);
        assert!(std::fs::symlink_metadata(&arch_link).is_err(), "{arch}");
        // The platform directory stays: the alias links point at it.
        assert!(repo.join(".multiarch").join(arch).is_dir(), "{arch}");
    }
    assert!(flat_dir(&repo, &f.amd).is_dir(), "content waits for gc");

    let out = work
        .lifecycle_command("gc", &[REPO, "--grace-period", "0"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for image in [&f.amd, &f.arm] {
        assert!(!flat_dir(&repo, image).exists(), "{stdout}");
        for layer in &image.layers {
            assert!(!layer_dir(&repo, layer).exists(), "{stdout}");
        }
    }
    assert!(stdout.contains("0 image(s) recorded"), "{stdout}");
}
