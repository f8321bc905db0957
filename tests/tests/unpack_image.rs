//! `ducc unpack-image` end to end: fixture images pushed into the real distribution registry
//! (with `skopeo copy` for the gzip ones; blob by blob with ducc-registry where skopeo would
//! recompress: zstd, plain and mislabelled layers), pulled and unpacked by the `ducc` binary, and
//! compared with umoci's tree of the same image. `--layers` output is stacked with overlayfs and
//! compared the same way. Failure paths: a non-empty destination, a tag glob, a missing tag, a
//! corrupted blob and a wrong diff_id.
//!
//! Needs root (owners, devices, overlay mounts), umoci, skopeo, debootstrap and docker-registry,
//! and the `ducc` binary (`cargo build -p ducc-cli`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ducc_tests::fixtures::{self, Image};
use ducc_tests::tree::{Options, Tree, oracle_options, scratch_dir, umoci_tree};
use ducc_tests::{Flavour, Registry, images, require_tool, unique_repo};
use serde_json::Value;

fn ducc(args: &[&str]) -> Output {
    let bin = ducc_tests::ducc_bin();
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build -p ducc-cli` first",
        bin.display()
    );
    Command::new(bin).args(args).output().expect("ducc runs")
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An image reference on a port where nothing listens: for runs refused before any request.
const NEVER_CONTACTED: &str = "http://127.0.0.1:1/never/contacted:latest";

/// Runs `ducc unpack-image ARGS… REFERENCE DEST` expecting it to fail with exit code `code`
/// (2: refused before any work, 1: the image failed); returns its stderr.
fn unpack_image_fails(args: &[&str], reference: &str, dest: &Path, code: i32) -> String {
    let mut all = vec!["unpack-image"];
    all.extend(args);
    all.extend([reference, dest.to_str().expect("utf-8")]);
    let out = ducc(&all);
    assert_eq!(out.status.code(), Some(code), "{}", text(&out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Why these tests need root (CI runs them as root).
const NEEDS_ROOT: &str =
    "unpack-image end-to-end tests compare owners and devices and mount overlays";

/// `skopeo copy` of the fixture layout to `repo:latest`; returns ducc's image name.
fn skopeo_push(image: &Image, registry: &Registry, repo: &str) -> String {
    let skopeo = require_tool("skopeo", "skopeo");
    let out = Command::new(skopeo)
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}", image.layout_ref()))
        .arg(format!("docker://{}/{repo}:latest", registry.host()))
        .output()
        .expect("skopeo runs");
    assert!(
        out.status.success(),
        "skopeo copy {}: {}",
        image.name,
        text(&out)
    );
    registry.image(&format!("{repo}:latest"))
}

/// Pushes the layout's blobs and manifest byte for byte (skopeo would recompress zstd and plain
/// layers), after letting `edit` change the config; returns ducc's image name.
fn exact_push(
    image: &Image,
    registry: &Registry,
    repo: &str,
    edit: impl FnOnce(&mut Value),
) -> String {
    let client = images::client_for(registry.host(), registry.credentials());
    let repository = images::repository(registry.host(), repo);
    for layer in &image.layers {
        let path = image.blob_path(&layer.digest);
        let mut file = std::fs::File::open(&path).expect("open blob");
        let digest = ducc_oci::BlobDigest::parse(&layer.digest).expect("digest");
        client
            .push_blob(&repository, &digest, layer.size, &mut file)
            .expect("push layer");
    }
    let mut config: Value = serde_json::from_slice(
        &std::fs::read(image.blob_path(&image.config_digest)).expect("config"),
    )
    .expect("config json");
    edit(&mut config);
    let config_bytes = serde_json::to_vec(&config).expect("config bytes");
    let config_blob = images::Blob::new(config_bytes);
    images::push_blob(&client, &repository, &config_blob);
    let mut manifest: Value = serde_json::from_slice(
        &std::fs::read(image.blob_path(&image.manifest_digest)).expect("manifest"),
    )
    .expect("manifest json");
    manifest["config"]["digest"] = Value::from(config_blob.digest.clone());
    manifest["config"]["size"] = Value::from(config_blob.bytes.len());
    client
        .push_manifest(
            &repository,
            &images::tag("latest"),
            "application/vnd.oci.image.manifest.v1+json",
            &serde_json::to_vec(&manifest).expect("manifest bytes"),
        )
        .expect("push manifest");
    registry.image(&format!("{repo}:latest"))
}

/// Pushes `name` (skopeo for gzip images, exactly otherwise), runs `ducc unpack-image` into a
/// fresh directory and compares the tree with umoci's.
fn check_flat(name: &str) {
    if !ducc_tests::require_root(NEEDS_ROOT) {
        return;
    }
    let image = fixtures::image(name).expect("fixture image");
    let (expected, umoci_chose) = umoci_tree(&image);
    let registry = Registry::anonymous();
    let repo = unique_repo(&format!("unpack-{name}"));
    let all_gzip = image
        .layers
        .iter()
        .all(|l| l.media_type == fixtures::MEDIA_GZIP);
    let reference = if all_gzip {
        skopeo_push(&image, registry, &repo)
    } else {
        exact_push(&image, registry, &repo, |_| {})
    };
    let scratch = scratch_dir(&format!("unpack-image-{name}")).expect("scratch");
    let dest = scratch.path().join("rootfs");
    let dest_str = dest.to_str().expect("utf-8 path");
    let out = ducc(&["unpack-image", &reference, dest_str]);
    assert!(
        out.status.success(),
        "ducc unpack-image {reference}: {}",
        text(&out)
    );
    let actual = Tree::scan(&dest).expect("scan");
    expected.assert_same_as(
        &actual,
        &oracle_options(&image, &umoci_chose),
        "umoci",
        "ducc unpack-image",
    );
}

#[test]
fn unpack_image_debian_rootfs_equals_umoci() {
    check_flat("debian");
}

#[test]
fn unpack_image_special_files_equal_umoci() {
    check_flat("special");
}

#[test]
fn unpack_image_hardlinks_equal_umoci() {
    check_flat("hardlinks");
}

#[test]
fn unpack_image_zstd_layers_equal_umoci_on_gzip_twin() {
    check_flat("whiteouts-zstd");
}

#[test]
fn unpack_image_plain_and_mislabelled_layers_equal_umoci_on_gzip_twin() {
    check_flat("mixed");
}

/// An overlay mount, unmounted on drop.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn unpack_image_layers_stack_as_overlay_to_the_umoci_tree() {
    if !ducc_tests::require_root(NEEDS_ROOT) {
        return;
    }
    let image = fixtures::image("debian").expect("fixture image");
    let (expected, umoci_chose) = umoci_tree(&image);
    let registry = Registry::anonymous();
    let reference = skopeo_push(&image, registry, &unique_repo("unpack-layers"));
    let scratch = scratch_dir("unpack-image-layers").expect("scratch");
    let dest = scratch.path().join("layers");
    let out = ducc(&[
        "unpack-image",
        "--layers",
        &reference,
        dest.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let mut dirs: Vec<String> = std::fs::read_dir(&dest)
        .expect("read layers")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    let expected_names: Vec<String> = image
        .layers
        .iter()
        .enumerate()
        .map(|(n, l)| format!("{n}-{}", &l.digest["sha256:".len()..]))
        .collect();
    dirs.sort_by_key(|d| d.split('-').next().and_then(|n| n.parse::<usize>().ok()));
    assert_eq!(
        dirs, expected_names,
        "one directory per layer, named <n>-<hex>"
    );
    let lower: Vec<String> = dirs
        .iter()
        .rev()
        .map(|d| dest.join(d).display().to_string())
        .collect();
    let merged = scratch.path().join("merged");
    std::fs::create_dir(&merged).expect("mkdir");
    let mount = Command::new(require_tool("mount", "mount"))
        .args(["-t", "overlay", "-o"])
        .arg(format!("ro,lowerdir={}", lower.join(":")))
        .arg("none")
        .arg(&merged)
        .output()
        .expect("mount runs");
    if !mount.status.success() {
        ducc_tests::skip_or_fail(&format!(
            "overlay mounting is not allowed here: {}",
            text(&mount)
        ));
        return;
    }
    let guard = Mounted(merged.clone());
    let actual = Tree::scan(&merged).expect("scan merged");
    drop(guard);
    let options = Options {
        hardlinks: false,
        ..oracle_options(&image, &umoci_chose)
    };
    expected.assert_same_as(
        &actual,
        &options,
        "umoci",
        "overlay of ducc unpack-image --layers",
    );
}

#[test]
fn unpack_image_refuses_a_non_empty_destination() {
    let scratch = scratch_dir("unpack-image-nonempty").expect("scratch");
    std::fs::write(scratch.path().join("precious"), b"keep").expect("write");
    let stderr = unpack_image_fails(&[], NEVER_CONTACTED, scratch.path(), 2);
    assert!(stderr.contains("not empty"), "{stderr}");
    assert_eq!(
        std::fs::read(scratch.path().join("precious")).expect("read"),
        b"keep"
    );
}

#[test]
fn unpack_image_refuses_a_tag_glob() {
    let scratch = scratch_dir("unpack-image-glob").expect("scratch");
    let dest = scratch.path().join("d");
    let stderr = unpack_image_fails(&[], "http://127.0.0.1:1/some/repo:1.*", &dest, 2);
    assert!(stderr.contains("tag glob"), "{stderr}");
}

#[test]
fn unpack_image_of_a_missing_tag_fails_naming_the_image() {
    let registry = Registry::anonymous();
    let scratch = scratch_dir("unpack-image-missing").expect("scratch");
    let reference = registry.image(&format!("{}:nope", unique_repo("missing")));
    let stderr = unpack_image_fails(&[], &reference, &scratch.path().join("d"), 1);
    assert!(stderr.contains(&reference), "{stderr}");
}

#[test]
fn unpack_image_fails_on_a_wrong_diff_id() {
    let image = fixtures::image("whiteouts").expect("fixture image");
    let registry = Registry::anonymous();
    let wrong = format!("sha256:{}", "0".repeat(64));
    let reference = exact_push(&image, registry, &unique_repo("wrong-diffid"), |config| {
        config["rootfs"]["diff_ids"][1] = Value::from(wrong.clone());
    });
    let scratch = scratch_dir("unpack-image-diffid").expect("scratch");
    let stderr = unpack_image_fails(&[], &reference, &scratch.path().join("d"), 1);
    assert!(
        stderr.contains(&wrong) && stderr.contains(&image.layers[1].digest),
        "{stderr}"
    );
}

#[test]
fn unpack_image_fails_on_a_corrupted_blob() {
    // A private registry: blobs are shared between repositories, others must not see the damage.
    let registry = Registry::start(Flavour::Anonymous);
    let image = fixtures::image("hardlinks").expect("fixture image");
    let reference = exact_push(&image, &registry, "corrupt/image", |_| {});
    let victim = &image.layers[0].digest;
    let stored = registry.stored_blob_path(victim);
    let mut bytes = std::fs::read(&stored).expect("stored blob");
    let last = bytes.len() - 10;
    bytes[last] ^= 0xff;
    std::fs::write(&stored, bytes).expect("corrupt");
    let scratch = scratch_dir("unpack-image-corrupt").expect("scratch");
    let stderr = unpack_image_fails(&[], &reference, &scratch.path().join("d"), 1);
    assert!(stderr.contains(victim.as_str()), "{stderr}");
}

#[test]
fn unpack_image_refuses_a_file_as_destination() {
    let scratch = scratch_dir("unpack-image-file-dest").expect("scratch");
    let dest = scratch.path().join("a-file");
    std::fs::write(&dest, b"not a directory").expect("write");
    let stderr = unpack_image_fails(&[], NEVER_CONTACTED, &dest, 2);
    assert!(stderr.contains("not a readable directory"), "{stderr}");
    assert_eq!(std::fs::read(&dest).expect("read"), b"not a directory");
}

#[test]
fn unpack_image_refuses_a_malformed_platform() {
    let scratch = scratch_dir("unpack-image-platform").expect("scratch");
    let dest = scratch.path().join("d");
    unpack_image_fails(&["--platform", "linux"], NEVER_CONTACTED, &dest, 2);
    assert!(
        !dest.exists(),
        "nothing is created before the arguments are checked"
    );
}
