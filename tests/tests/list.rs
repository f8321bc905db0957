//! `ducc list` on repositories that `ducc convert` built from the real registry, with the local
//! publisher and the `cvmfs_server` stand-in (issue 27): every image with its digests and
//! layers, shared layers counted right, `--json` stable, `--layers` naming each layer's users,
//! `--garbage` printing exactly what `gc --dry-run` prints, and no changing `cvmfs_server` call.

// Test code: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used)]

mod convert_support;

use convert_support::{Backend, Image, Layer, REPO, Work, flat_dir};
use ducc_tests::tree::Tree;
use ducc_tests::{Registry, images, unique_repo};
use serde_json::Value;

/// Two images that share a base layer (`one`, `two`) and one that shares nothing (`three`),
/// converted into `work`.
struct Converted {
    work: Work,
    host: String,
    path: String,
    base: Layer,
    images: [Image; 3],
}

impl Converted {
    fn new(backend: Backend) -> Converted {
        Converted::with_flags(backend, &["-i"])
    }

    /// As [`Converted::new`], converted with `flags`.
    fn with_flags(backend: Backend, flags: &[&str]) -> Converted {
        let registry = Registry::anonymous();
        let client = images::client_for(registry.host(), None);
        let path = unique_repo("list");
        let repository = images::repository(registry.host(), &path);
        let base = Layer::files(&[("etc/base", b"base\n")]);
        let images = [
            Image::new(vec![base.clone(), Layer::files(&[("one", b"1\n")])], "one"),
            Image::new(vec![base.clone(), Layer::files(&[("two", b"2\n")])], "two"),
            Image::new(vec![Layer::files(&[("three", b"3\n")])], "three"),
        ];
        let mut inputs = Vec::new();
        for (image, tag) in images.iter().zip(["one", "two", "three"]) {
            image.push(&client, &repository, tag);
            inputs.push(registry.image(&format!("{path}:{tag}")));
        }
        let work = Work::new(backend);
        work.wishlist(&inputs, "");
        let out = work.convert(flags);
        assert!(out.status.success(), "{backend:?}: convert failed");
        Converted {
            work,
            host: registry.host().to_owned(),
            path,
            base,
            images,
        }
    }

    /// `<registry>/<repository>:<tag>`.
    fn name(&self, tag: &str) -> String {
        format!("{}/{}:{tag}", self.host, self.path)
    }

    /// `ducc list REPO ARGS...`: stdout, after checking it succeeded.
    fn list(&self, args: &[&str]) -> String {
        let mut all = vec![REPO];
        all.extend_from_slice(args);
        let (code, stdout) = self.work.lifecycle("list", &all);
        assert_eq!(code, 0, "ducc list {args:?}");
        stdout
    }

    fn list_json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.list(args)).unwrap()
    }
}

#[test]
fn list_shows_every_image_with_its_digests_and_counts_shared_layers() {
    for backend in [Backend::Local, Backend::Cvmfs] {
        let c = Converted::new(backend);
        let before = c.work.standin_log().len();
        let listed = c.list_json(&["--json"]);
        let images = listed["images"].as_array().unwrap();
        let names: Vec<&str> = images.iter().map(|i| i["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [c.name("one"), c.name("three"), c.name("two")],
            "{backend:?}"
        );
        for (image, tag, layers, shared) in [
            (&c.images[0], "one", 2, 1),
            (&c.images[1], "two", 2, 1),
            (&c.images[2], "three", 1, 0),
        ] {
            let entry = images.iter().find(|i| i["name"] == c.name(tag)).unwrap();
            assert_eq!(entry["layers"], layers, "{backend:?} {tag}: {entry}");
            assert_eq!(entry["shared_layers"], shared, "{backend:?} {tag}: {entry}");
            assert_eq!(entry["signature"], "unsigned", "{backend:?} {tag}");
            assert_eq!(entry["dropped"], Value::Null, "{backend:?} {tag}");
            let platform = &entry["platforms"][0];
            assert_eq!(platform["config"], image.config.digest.as_str());
            assert_eq!(platform["manifest"], image.manifest.digest.as_str());
            let layer_digests: Vec<&str> = image
                .layers
                .iter()
                .map(|l| l.blob.digest.as_str())
                .collect();
            assert_eq!(platform["layers"], serde_json::json!(layer_digests));
            assert_eq!(
                platform["flat_bytes"].as_u64().unwrap(),
                Tree::scan(&flat_dir(&c.work.repo(), image))
                    .unwrap()
                    .file_bytes(),
                "{backend:?} {tag}: {entry}"
            );
            assert!(platform["converted_at"].as_u64().unwrap() > 1_700_000_000);
        }

        // The text form: a header and one line per image, in the same order.
        let text = c.list(&[]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("NAME "), "{text}");
        let one: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(one[0], c.name("one"));
        assert_eq!(one[1], &c.images[0].manifest.digest[7..19]);
        assert_eq!(one[2], &c.images[0].config.digest[7..19]);
        assert_eq!(one[one.len() - 4..], ["2", "1", "unsigned", "-"], "{text}");

        // --json is stable: the same repository lists the same bytes.
        assert_eq!(c.list(&["--json"]), c.list(&["--json"]), "{backend:?}");

        // --layers: every layer once, the base one with both of its users.
        let layers = c.list_json(&["--layers", "--json"]);
        let layers = layers["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 4, "{backend:?}: {layers:?}");
        let base = layers
            .iter()
            .find(|l| l["digest"] == c.base.blob.digest.as_str())
            .unwrap();
        assert_eq!(
            base["images"],
            serde_json::json!([c.name("one"), c.name("two")]),
            "{backend:?}"
        );
        assert_eq!(base["compressed_bytes"], c.base.blob.bytes.len());
        assert!(base["diff_bytes"].as_u64().is_some(), "{base}");

        // Nothing but `cvmfs_server list` was run for any of it.
        let calls = &c.work.standin_log()[before..];
        assert!(calls.iter().all(|l| l == "list"), "{backend:?}: {calls:#?}");
    }
}

#[test]
fn list_garbage_prints_what_gc_dry_run_prints_and_when_the_rest_is_due() {
    for backend in [Backend::Local, Backend::Cvmfs] {
        let c = Converted::new(backend);
        let (code, _) = c.work.lifecycle(
            "delete-image",
            &[REPO, &format!("http://{}", c.name("two"))],
        );
        assert_eq!(code, 0);
        // Now: the layer of `two` alone and its flat tree (and podman entry) are garbage.
        for grace in ["0", "1"] {
            let before = c.work.standin_log().len();
            let listed = c.list(&["--garbage", "--grace-period", grace]);
            assert_eq!(
                c.work.standin_log()[before..]
                    .iter()
                    .filter(|l| *l != "list")
                    .count(),
                0,
                "{backend:?}: list --garbage changed something"
            );
            let (code, planned) = c
                .work
                .lifecycle("gc", &[REPO, "--dry-run", "--grace-period", grace]);
            assert_eq!(code, 0);
            if grace == "0" {
                assert_eq!(listed, planned, "{backend:?} grace {grace}");
                assert!(listed.contains("would remove 3 piece(s)"), "{listed}");
            }
        }
        // A real gc with a grace period records when it first saw each piece: from then on the
        // due times are fixed, and list --garbage says them exactly as gc --dry-run does.
        let (code, _) = c.work.lifecycle("gc", &[REPO, "--grace-period", "1"]);
        assert_eq!(code, 0);
        let listed = c.list(&["--garbage"]);
        let (_, planned) = c.work.lifecycle("gc", &[REPO, "--dry-run"]);
        assert_eq!(listed, planned, "{backend:?}");
        let waiting: Vec<&str> = listed
            .lines()
            .filter(|l| l.starts_with("waiting "))
            .collect();
        assert_eq!(waiting.len(), 3, "{listed}");
        assert!(waiting.iter().all(|l| l.contains(" until 20")), "{listed}");

        let json = c.list_json(&["--garbage", "--json"]);
        assert_eq!(json["waiting"].as_array().unwrap().len(), 3, "{json}");
        let piece = &json["waiting"][0];
        assert_eq!(
            piece["due"].as_u64().unwrap(),
            piece["unreferenced_since"].as_u64().unwrap() + 86_400
        );
    }
}

#[test]
fn list_shows_signature_state_and_dropped_entries_recorded_beside_the_marker() {
    let c = Converted::new(Backend::Local);
    let marker_dir = |tag: &str| {
        c.work
            .repo()
            .join(".metadata")
            .join(&c.host)
            .join(format!("{}:{tag}", c.path))
    };
    std::fs::write(
        marker_dir("one").join("signature.json"),
        br#"{"signed":true}"#,
    )
    .unwrap();
    std::fs::write(
        marker_dir("three").join("dropped.json"),
        br#"[{"path":"dev/null"},{"path":"run/fifo"}]"#,
    )
    .unwrap();
    let listed = c.list_json(&["--json"]);
    let field = |tag: &str, key: &str| {
        listed["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == c.name(tag))
            .unwrap()[key]
            .clone()
    };
    assert_eq!(field("one", "signature"), "signed");
    assert_eq!(field("two", "signature"), "unsigned");
    assert_eq!(field("three", "dropped"), 2);
    assert_eq!(field("one", "dropped"), Value::Null);
}

#[test]
fn list_of_a_repository_that_does_not_exist_fails_and_creates_nothing() {
    let work = Work::new(Backend::Local);
    let (code, _) = work.lifecycle("list", &[REPO]);
    assert_eq!(code, 2);
    assert!(!work.repo().exists());
}

/// The command line's repository has the wish list's `cvmfs_repo` grammar (issue 26): a name
/// with a space is a usage error that says what is wrong, and nothing is created.
#[test]
fn list_of_a_malformed_repository_name_is_a_usage_error_naming_the_problem() {
    let work = Work::new(Backend::Local);
    let out = work
        .lifecycle_command("list", &["bad repo"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "invalid repository name `bad repo`: a repository name has only letters, digits, \
             `.`, `-` and `_`"
        ),
        "{stderr}"
    );
    assert!(!work.path("cvmfs").join("bad repo").exists());
}

#[test]
fn list_without_a_podman_store_measures_the_flat_tree_and_has_no_manifest_digest() {
    let c = Converted::with_flags(Backend::Local, &["-i", "-p"]);
    let listed = c.list_json(&["--json"]);
    for (image, tag) in c.images.iter().zip(["one", "two", "three"]) {
        let entry = listed["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == c.name(tag))
            .unwrap();
        let platform = &entry["platforms"][0];
        assert_eq!(platform["manifest"], Value::Null, "{entry}");
        assert_eq!(
            platform["flat_bytes"].as_u64().unwrap(),
            Tree::scan(&flat_dir(&c.work.repo(), image))
                .unwrap()
                .file_bytes(),
            "{entry}"
        );
    }
    let text = c.list(&[]);
    let one: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(one[1], "-", "{text}");
}
