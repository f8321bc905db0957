//! Issue 30, part A: device files and FIFOs of an image behind a cvmfs gateway. The gateway
//! drops them without a word (reference cvmfs-gateway-behaviour.md, scenario 3), so ducc leaves
//! them out of the layer directories and the flat tree, the image converts, and
//! `dropped.json` beside its marker says what it lost; on a stratum 0 nothing changes.
#![allow(clippy::unwrap_used)]

mod convert_support;

use convert_support::{
    Backend, Compression, Image, Layer, REPO, Work, flat_dir, layer_dir, run_options, scan,
};
use ducc_tests::{Registry, images, unique_repo};

/// The special files of the image, as `dropped.json` names them.
const SPECIAL: [(&str, &str); 3] = [
    ("dev/initctl", "fifo"),
    ("dev/loop0", "block"),
    ("dev/null", "char"),
];

/// A layer of `dev/` with a FIFO, a character and a block device beside a regular file.
fn special_layer() -> Layer {
    let mut b = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_mtime(1_600_000_000);
        h.set_size(0);
        h
    };
    b.append_data(
        &mut header(tar::EntryType::Directory, 0o755),
        "dev/",
        &[][..],
    )
    .unwrap();
    b.append_data(
        &mut header(tar::EntryType::Fifo, 0o600),
        "dev/initctl",
        &[][..],
    )
    .unwrap();
    let mut h = header(tar::EntryType::Char, 0o666);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    b.append_data(&mut h, "dev/null", &[][..]).unwrap();
    let mut h = header(tar::EntryType::Block, 0o660);
    h.set_device_major(7).unwrap();
    h.set_device_minor(0).unwrap();
    b.append_data(&mut h, "dev/loop0", &[][..]).unwrap();
    let mut h = header(tar::EntryType::Regular, 0o644);
    h.set_size(5);
    b.append_data(&mut h, "dev/README", &b"devs\n"[..]).unwrap();
    Layer::new(&b.into_inner().unwrap(), Compression::Gzip)
}

/// A two-layer image whose upper layer holds the special files, pushed as `NAME:v1`; returns
/// the image and its reference.
fn push_image(registry: &Registry) -> (Image, String) {
    let name = unique_repo("gw-special");
    let client = images::client_for(registry.host(), None);
    let repo = images::repository(registry.host(), &name);
    let image = Image::new(
        vec![
            Layer::files(&[("etc/os-release", b"ID=test\n")]),
            special_layer(),
        ],
        "special",
    );
    image.push(&client, &repo, "v1");
    (image, format!("http://{}/{name}:v1", registry.host()))
}

/// `.metadata/<registry>/<repository>:<tag>/` of `input` in `repo`.
fn marker_dir(repo: &std::path::Path, input: &str) -> std::path::PathBuf {
    repo.join(".metadata")
        .join(input.strip_prefix("http://").unwrap())
}

/// Converts `input` in `work` (events in `<work>/events.jsonl`); asserts exit 0 and returns
/// the run's stderr.
fn convert(work: &Work, input: &str) -> String {
    work.wishlist(&[input.to_owned()], "");
    let out = work.convert(&["-n", work.path("events.jsonl").to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    stderr
}

#[test]
fn an_image_with_special_files_converts_behind_a_gateway_and_records_what_it_lost() {
    if !ducc_tests::require_root("the stratum-0 run creates device files") {
        return;
    }
    let registry = Registry::anonymous();
    let (image, input) = push_image(registry);

    let stratum0 = Work::new(Backend::Cvmfs);
    let stratum0_log = convert(&stratum0, &input);
    let gateway = Work::gateway();
    let gateway_log = convert(&gateway, &input);

    // On a stratum 0 nothing changes: the entries are there and nothing is recorded as lost.
    let s0_flat = flat_dir(&stratum0.repo(), &image);
    for (path, _) in SPECIAL {
        assert!(
            std::fs::symlink_metadata(s0_flat.join(path)).is_ok(),
            "{path}"
        );
    }
    assert!(
        !marker_dir(&stratum0.repo(), &input)
            .join("dropped.json")
            .exists()
    );
    assert!(
        !stratum0
            .events("events.jsonl")
            .iter()
            .any(|e| e["action"] == "entries_dropped")
    );
    assert!(!stratum0_log.contains("left out"), "{stratum0_log}");

    // One warning says how many entries the image lost, which, and where they are listed.
    let warnings: Vec<&str> = gateway_log
        .lines()
        .filter(|l| l.contains("left out of its layers and flat tree"))
        .collect();
    assert_eq!(warnings.len(), 1, "{gateway_log}");
    assert!(
        warnings[0].contains("3 left out") && warnings[0].contains("dropped.json"),
        "{gateway_log}"
    );
    for (path, _) in SPECIAL {
        assert!(warnings[0].contains(path), "{path}: {gateway_log}");
    }

    // Behind the gateway: the flat tree is the stratum-0 one less the three entries.
    let mut expected = scan(&s0_flat);
    for (path, _) in SPECIAL {
        assert!(expected.nodes.remove(path).is_some(), "{path}");
        expected.raw_paths.remove(path.as_bytes());
    }
    expected.assert_same_as(
        &scan(&flat_dir(&gateway.repo(), &image)),
        &run_options(),
        "stratum 0 less the special files",
        "gateway",
    );
    let layerfs = layer_dir(&gateway.repo(), &image.layers[1]).join("layerfs");
    assert!(layerfs.join("dev/README").is_file());
    for (path, _) in SPECIAL {
        assert!(
            std::fs::symlink_metadata(layerfs.join(path)).is_err(),
            "{path}"
        );
    }

    // The record beside the marker names the three, with their kinds and layer.
    let marker = marker_dir(&gateway.repo(), &input);
    assert!(marker.join("manifest.json").is_file());
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(marker.join("dropped.json")).unwrap()).unwrap();
    let layer = &image.layers[1].blob.digest;
    let listed: Vec<(String, String, String)> = record["dropped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_owned(),
                e["kind"].as_str().unwrap().to_owned(),
                e["layer"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String, String)> = SPECIAL
        .iter()
        .map(|(p, k)| ((*p).to_owned(), (*k).to_owned(), layer.clone()))
        .collect();
    assert_eq!(listed, want);

    // One event says it, and `ducc list` counts it.
    let events = gateway.events("events.jsonl");
    let dropped: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["action"] == "entries_dropped")
        .collect();
    assert_eq!(dropped.len(), 1, "{events:?}");
    assert_eq!(dropped[0]["count"], 3);
    assert_eq!(dropped[0]["first"].as_array().unwrap().len(), 3);
    let (code, out) = gateway.lifecycle("list", &[REPO, "--json"]);
    assert_eq!(code, 0, "{out}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["images"][0]["dropped"], 3, "{out}");
}

#[test]
fn dropped_json_goes_with_its_marker_and_is_never_garbage() {
    let registry = Registry::anonymous();
    let (image, input) = push_image(registry);
    let gateway = Work::gateway();
    convert(&gateway, &input);
    let repo = gateway.repo();
    let record = marker_dir(&repo, &input).join("dropped.json");
    assert!(record.is_file());

    // gc finds nothing to remove while the image is recorded: the record is part of it.
    let (code, out) = gateway.lifecycle("gc", &[REPO, "--dry-run", "--grace-period", "0"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("dropped.json"), "{out}");
    assert!(out.contains("would remove 0 piece(s)"), "{out}");
    assert!(record.is_file());

    let (code, out) = gateway.lifecycle("delete-image", &[REPO, &input]);
    assert_eq!(code, 0, "{out}");
    assert!(!record.exists(), "{out}");
    assert!(!marker_dir(&repo, &input).exists(), "{out}");
    // Its content is garbage now, the record is gone with the marker.
    let (code, out) = gateway.lifecycle("gc", &[REPO, "--grace-period", "0"]);
    assert_eq!(code, 0, "{out}");
    assert!(!flat_dir(&repo, &image).exists(), "{out}");
    assert!(!out.contains("dropped.json"), "{out}");
}
