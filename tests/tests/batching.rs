//! Issue 29: batches (`--batch N`, `--batch-seconds S`). Through the `cvmfs_server` stand-in on
//! a stratum 0: each image's new layers go in as one ingest of their own (the flat tree's grafts
//! name their stored objects), and what the images of a batch publish besides (flat trees,
//! links, podman store, `origin.json` updates, markers) as one mounted transaction. The
//! repository always ends as the local publisher's; a failing image never holds back or undoes
//! the others; a killed run is finished by the next one.
#![allow(clippy::unwrap_used)]

mod convert_support;

use convert_support::{
    Backend, Image, Layer, REPO, Work, assert_same_repository, flat_dir, marker_config, origin,
};
use ducc_tests::{Registry, images, random_hex, unique_repo};

/// `count` images sharing a base layer, each with a small layer of its own, pushed as
/// `img0`, `img1`, ...; returns the base layer and the images.
fn push_small_images(name: &str, count: usize) -> (Layer, Vec<Image>) {
    let registry = Registry::anonymous();
    let client = images::client_for(registry.host(), None);
    let repo = images::repository(registry.host(), name);
    let base = Layer::files(&[("etc/os-release", b"ID=batch\n"), ("tmp/gone", b"x")]);
    let images = (0..count)
        .map(|i| {
            let label = format!("img{i}");
            let image = Image::new(
                vec![
                    base.clone(),
                    Layer::files(&[
                        (&format!("opt/{label}/data"), label.as_bytes()),
                        ("tmp/.wh.gone", b""),
                    ]),
                ],
                &label,
            );
            image.push(&client, &repo, &label);
            image
        })
        .collect();
    (base, images)
}

fn inputs(name: &str, tags: &[&str]) -> Vec<String> {
    let host = Registry::anonymous().host().to_owned();
    tags.iter()
        .map(|tag| format!("http://{host}/{name}:{tag}"))
        .collect()
}

/// The stand-in's calls since `before`, without the `list` calls.
fn calls_since(work: &Work, before: usize) -> Vec<String> {
    work.standin_log()[before..]
        .iter()
        .filter(|l| *l != "list")
        .cloned()
        .collect()
}

/// How many calls start with each of `prefixes`, in order.
fn count(calls: &[String], prefix: &str) -> usize {
    calls.iter().filter(|c| c.starts_with(prefix)).count()
}

#[test]
fn a_batch_is_one_ingest_per_image_and_one_mounted_transaction_for_the_rest() {
    let name = unique_repo("batch-calls");
    let (base, images) = push_small_images(&name, 5);
    let tags = ["img0", "img1", "img2", "img3", "img4"];
    let inputs = inputs(&name, &tags);
    let local = Work::local_reference(&inputs);
    let cvmfs = Work::new(Backend::Cvmfs);
    cvmfs.wishlist(&inputs, "");
    let before = cvmfs.standin_log().len();
    let events = cvmfs.path("events.jsonl");
    let out = cvmfs.convert(&[
        "-i",
        "--layer-whiteouts",
        "oci",
        "--batch",
        "10",
        "-n",
        events.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let calls = calls_since(&cvmfs, before);
    // One ingest per image (the first with the shared base), one transaction for all five.
    assert_eq!(count(&calls, "ingest -k -t"), 5, "{calls:#?}");
    assert_eq!(count(&calls, "transaction "), 1, "{calls:#?}");
    assert_eq!(count(&calls, "publish "), 1, "{calls:#?}");
    assert_eq!(calls.len(), 7, "{calls:#?}");
    assert_same_repository(&local, &cvmfs, "cvmfs publisher, one batch");
    // Every image is in the shared layer's origin.json and in the podman store, though each
    // one read them while the ones before it were only in the batch.
    let mut configs: Vec<String> = images.iter().map(|i| i.config.digest.clone()).collect();
    let mut listed = origin(&cvmfs.repo(), &base);
    configs.sort();
    listed.sort();
    assert_eq!(listed, configs);
    let store: serde_json::Value = serde_json::from_slice(
        &std::fs::read(cvmfs.repo().join("podmanStore/overlay-images/images.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(store.as_array().unwrap().len(), 5, "{store:#}");
    // 5 ingests + 1 publish, counted in the summary and on the events.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .contains("5 converted, 0 up to date, 0 failed; 6 revisions (1.2 per converted image)"),
        "{stderr}"
    );
    let events = cvmfs.events("events.jsonl");
    let published: usize = events
        .iter()
        .filter(|e| e["action"] == "published")
        .map(|e| e["revisions"].as_u64().unwrap() as usize)
        .sum();
    assert_eq!(published, 6);
    let end = events.iter().rfind(|e| e["action"] == "end_ducc").unwrap();
    assert_eq!(end["revisions"], 6);
    // Each marker event comes after the batch was published: the marker was in by then.
    let markers = events.iter().filter(|e| e["action"] == "marker").count();
    assert_eq!(markers, 5);

    // A rerun does nothing.
    let before = cvmfs.standin_log().len();
    assert!(cvmfs.convert(&["-i", "--batch", "10"]).status.success());
    assert!(calls_since(&cvmfs, before).is_empty());
}

#[test]
fn batches_close_at_their_image_limit_and_a_tag_of_a_batched_tree_reuses_it() {
    let name = unique_repo("batch-limit");
    let registry = Registry::anonymous();
    let client = images::client_for(registry.host(), None);
    let (_, images) = push_small_images(&name, 3);
    // `img1` again under another tag: its flat tree is in the batch when it comes.
    images[1].push(
        &client,
        &images::repository(registry.host(), &name),
        "alias",
    );
    let inputs = inputs(&name, &["img0", "img1", "alias", "img2"]);
    let local = Work::local_reference(&inputs);
    let cvmfs = Work::new(Backend::Cvmfs);
    cvmfs.wishlist(&inputs, "");
    let before = cvmfs.standin_log().len();
    assert!(
        cvmfs
            .convert(&["-i", "--layer-whiteouts", "oci", "--batch", "2"])
            .status
            .success()
    );
    let calls = calls_since(&cvmfs, before);
    // Three images with new layers; two batches of two.
    assert_eq!(count(&calls, "ingest -k -t"), 3, "{calls:#?}");
    assert_eq!(count(&calls, "transaction "), 2, "{calls:#?}");
    assert_same_repository(&local, &cvmfs, "cvmfs publisher, batches of two");
    for tag in ["img1", "alias"] {
        assert_eq!(
            marker_config(&cvmfs.repo(), registry.host(), &format!("{name}:{tag}")),
            Some(images[1].config.digest.clone()),
            "{tag}"
        );
    }
}

#[test]
fn a_failing_image_leaves_the_others_of_its_batch_converted() {
    let name = unique_repo("batch-failing");
    let registry = Registry::anonymous();
    let client = images::client_for(registry.host(), None);
    let repo = images::repository(registry.host(), &name);
    let (_, _images) = push_small_images(&name, 2);
    // A config that lies about its layer's diff_id: the image fails while its layers and
    // flat tree are built, after catalog markers went into its group.
    let layer = Layer::files(&[("opt/liar", b"lie")]);
    let liar = Image::with_diff_ids(
        vec![layer],
        "liar",
        &[&format!("sha256:{}", "0".repeat(64))],
    );
    liar.push(&client, &repo, "liar");
    let good = inputs(&name, &["img0", "img1"]);
    let all = inputs(&name, &["img0", "liar", "img1"]);
    let local = Work::local_reference(&good);
    let cvmfs = Work::new(Backend::Cvmfs);
    cvmfs.wishlist(&all, "");
    let before = cvmfs.standin_log().len();
    let out = cvmfs.convert(&["-i", "--layer-whiteouts", "oci", "--batch", "10"]);
    assert!(!out.status.success());
    // The call log: the two good images' layer ingests and one mounted transaction for the
    // rest of both. The liar's layer may have started streaming into an ingest of its own
    // before its diff_id was found wrong (issue 24): that ingest is aborted at once, and
    // nothing of it is published (the repository check below).
    let mut calls = calls_since(&cvmfs, before);
    let all_calls = calls.clone();
    if let Some(abort) = calls.iter().position(|c| c.starts_with("abort -f ")) {
        assert!(
            abort > 0 && calls[abort - 1].starts_with("ingest -k -t"),
            "an abort of anything but the liar's ingest: {all_calls:#?}"
        );
        calls.drain(abort - 1..=abort);
    }
    assert_eq!(count(&calls, "ingest -k -t"), 2, "{all_calls:#?}");
    assert_eq!(count(&calls, "transaction "), 1, "{all_calls:#?}");
    assert_eq!(count(&calls, "publish "), 1, "{all_calls:#?}");
    assert_eq!(calls.len(), 4, "{all_calls:#?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("2 converted, 0 up to date, 1 failed") && stderr.contains(":liar"),
        "{stderr}"
    );
    assert_eq!(
        marker_config(&cvmfs.repo(), registry.host(), &format!("{name}:liar")),
        None
    );
    // The two good images are in, exactly as a run without the liar makes them.
    assert_same_repository(
        &local,
        &cvmfs,
        "cvmfs publisher, a batch with a failing image",
    );
}

#[test]
fn a_batch_whose_commit_fails_fails_its_images_and_the_next_run_converts_them() {
    let name = unique_repo("batch-commit-fails");
    let _ = push_small_images(&name, 3);
    let inputs = inputs(&name, &["img0", "img1", "img2"]);
    let local = Work::local_reference(&inputs);
    let cvmfs = Work::new(Backend::Cvmfs);
    cvmfs.wishlist(&inputs, "");
    cvmfs.fail_next("transaction", "simulated: cannot open the transaction");
    let out = cvmfs.convert(&["-i", "--layer-whiteouts", "oci", "--batch", "10"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("0 converted, 0 up to date, 3 failed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the commit of its batch of 3 images failed")
            && stderr.contains("simulated: cannot open the transaction"),
        "{stderr}"
    );
    for tag in ["img0", "img1", "img2"] {
        let host = Registry::anonymous().host().to_owned();
        assert_eq!(
            marker_config(&cvmfs.repo(), &host, &format!("{name}:{tag}")),
            None
        );
    }
    // The layers are in (their ingests came first); the next run publishes the rest.
    let before = cvmfs.standin_log().len();
    assert!(
        cvmfs
            .convert(&["-i", "--layer-whiteouts", "oci", "--batch", "10"])
            .status
            .success()
    );
    let calls = calls_since(&cvmfs, before);
    assert_eq!(count(&calls, "ingest -k -t"), 0, "{calls:#?}");
    assert_eq!(count(&calls, "transaction "), 1, "{calls:#?}");
    assert_same_repository(
        &local,
        &cvmfs,
        "cvmfs publisher after a failed batch commit and a rerun",
    );
}

/// Runs a batched convert of three images and a last one (`late`) that pauses at the
/// stand-in's `point` (`ingest`: the last image's layer ingest, two images complete in the
/// batch; other points: the first such call), kills ducc and the stand-in there, and checks that
/// the next run ends with the local publisher's repository and that a third run does nothing.
fn killed_in_a_batch_then_rerun(point: &str, label: &str) {
    let name = unique_repo(label);
    let (base, images) = push_small_images(&name, 3);
    // The late image's own layer lies in a shard no other layer uses, so its ingest's `-b`
    // names it alone.
    let registry = Registry::anonymous();
    let taken: Vec<String> = std::iter::once(&base)
        .chain(images.iter().flat_map(|i| &i.layers))
        .map(|l| l.hex()[..2].to_owned())
        .collect();
    let own = (0..)
        .map(|salt| Layer::files(&[("opt/late/data", format!("late {salt}").as_bytes())]))
        .find(|l| !taken.iter().any(|t| *t == l.hex()[..2]))
        .unwrap();
    let shard = own.hex()[..2].to_owned();
    let late = Image::new(vec![base.clone(), own], "late");
    late.push(
        &images::client_for(registry.host(), None),
        &images::repository(registry.host(), &name),
        "late",
    );
    let inputs = inputs(&name, &["img0", "img1", "late", "img2"]);
    let local = Work::local_reference(&inputs);
    let cvmfs = Work::new(Backend::Cvmfs);
    cvmfs.wishlist(&inputs, "");
    let filter = if point == "ingest" {
        format!("-b .layers/{shard} ")
    } else {
        String::new()
    };
    let command = cvmfs.command(&["-i", "--layer-whiteouts", "oci", "--batch", "10"]);
    let (child, standin) = cvmfs.spawn_paused(command, point, &filter);
    cvmfs.kill_paused(child, standin, point);
    // Killed before the batch's commit was in (at the third image's layer ingest, two images
    // complete in the batch; or as the commit publishes): none of that commit is published,
    // neither an image's marker nor its link nor its flat tree (issue 29: the whole commit or
    // none of it).
    let host = registry.host().to_owned();
    let batched = [
        ("img0", &images[0]),
        ("img1", &images[1]),
        ("late", &late),
        ("img2", &images[2]),
    ];
    for (tag, image) in batched {
        let what = format!("{tag} after a kill at {point}");
        assert_eq!(
            marker_config(&cvmfs.repo(), &host, &format!("{name}:{tag}")),
            None,
            "{what}"
        );
        let link = cvmfs.repo().join(&host).join(format!("{name}:{tag}"));
        assert!(link.symlink_metadata().is_err(), "{what}");
        assert!(!flat_dir(&cvmfs.repo(), image).exists(), "{what}");
    }
    assert!(
        cvmfs
            .convert(&["-i", "--layer-whiteouts", "oci", "--batch", "10"])
            .status
            .success()
    );
    assert_same_repository(
        &local,
        &cvmfs,
        &format!("cvmfs after a kill at {point} and a rerun"),
    );
    let before = cvmfs.standin_log().len();
    assert!(cvmfs.convert(&["-i", "--batch", "10"]).status.success());
    let again = calls_since(&cvmfs, before);
    assert!(again.is_empty(), "{again:#?}");
}

/// Killed at the third image's layer ingest, two images complete in the batch and nothing of
/// them but their layers published.
#[test]
fn a_run_killed_between_an_images_layer_ingest_and_its_batch_commit_is_finished_by_the_next() {
    killed_in_a_batch_then_rerun("ingest", "batch-kill-ingest");
}

/// Killed while the batch's mounted transaction publishes.
#[test]
fn a_run_killed_in_the_middle_of_a_batch_commit_is_finished_by_the_next() {
    killed_in_a_batch_then_rerun("publish", "batch-kill-publish");
}

/// Behind a gateway a batch changes no read-modify-write commit: the podman store and a shared
/// layer's `origin.json` are read inside a server transaction on their lease (fresh, issue 30)
/// and published at once, image by image, since a node holds one transaction at a time and other
/// nodes may write the same files. The repository is the same, and the summary counts every
/// revision the server made, those published at once included.
#[test]
fn behind_a_gateway_a_batch_changes_no_read_modify_write_commit_and_counts_every_revision() {
    let name = unique_repo("batch-gateway");
    let (base, images) = push_small_images(&name, 4);
    let inputs = inputs(&name, &["img0", "img1", "img2", "img3"]);
    let local = Work::local_reference(&inputs);
    let count_calls = |batch: &str| {
        let cvmfs = Work::gateway();
        cvmfs.wishlist(&inputs, "");
        let before = cvmfs.standin_log().len();
        let out = cvmfs.convert(&["-i", "--layer-whiteouts", "oci", "--batch", batch]);
        assert!(out.status.success());
        let calls = calls_since(&cvmfs, before);
        assert_same_repository(&local, &cvmfs, &format!("cvmfs gateway, --batch {batch}"));
        // Every commit stays on a narrow lease: none on the repository root, which would hold
        // off every other node (issue 29).
        let root = [
            format!("transaction {REPO}"),
            format!("transaction {REPO}/"),
        ];
        assert!(
            calls.iter().all(|c| !root.contains(c)),
            "--batch {batch}: a lease on the repository root: {calls:#?}"
        );
        assert!(
            count(&calls, &format!("transaction {REPO}/")) > 0,
            "--batch {batch}: mounted transactions on leases: {calls:#?}"
        );
        let mut configs: Vec<String> = images.iter().map(|i| i.config.digest.clone()).collect();
        let mut listed = origin(&cvmfs.repo(), &base);
        configs.sort();
        listed.sort();
        assert_eq!(listed, configs);
        let on = |path: &str| {
            calls
                .iter()
                .filter(|c| c.contains(&format!(" {path}")) || c.contains(&format!("/{path}")))
                .count()
        };
        let shared = format!(".layers/{}/{}", &base.hex()[..2], base.hex());
        let revisions = count(&calls, "ingest ") + count(&calls, "publish ");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("0 failed; {revisions} revisions")),
            "--batch {batch}: {revisions} revisions in the log: {stderr}"
        );
        (revisions, on("podmanStore"), on(&shared))
    };
    let (unbatched, store_unbatched, origin_unbatched) = count_calls("1");
    let (batched, store_batched, origin_batched) = count_calls("10");
    // Each image reads and rewrites the podman store and the shared layer's origin.json in a
    // server transaction of its own, batched or not.
    assert_eq!(
        (store_batched, origin_batched),
        (store_unbatched, origin_unbatched)
    );
    assert!(store_batched >= 4, "{store_batched}");
    assert!(
        batched <= unbatched,
        "batched {batched} revisions, unbatched {unbatched}"
    );
    eprintln!("gateway, 4 images: {unbatched} revisions unbatched, {batched} batched");
}

/// Issue 24: the next image's blobs download while the server ingests the layers of the one
/// before it; the next image reports the download as its own, once.
#[test]
fn the_next_images_blobs_download_while_the_server_ingests_the_layers_before_them() {
    let name = unique_repo("download-ahead");
    let _ = push_small_images(&name, 1);
    let registry = Registry::anonymous();
    let own = Layer::files(&[("opt/next/data", random_hex(32).as_bytes())]);
    let next = Image::new(vec![own.clone()], "next");
    next.push(
        &images::client_for(registry.host(), None),
        &images::repository(registry.host(), &name),
        "next",
    );
    let inputs = inputs(&name, &["img0", "next"]);
    let local = Work::local_reference(&inputs);
    let cvmfs = Work::new(Backend::Cvmfs);
    cvmfs.wishlist(&inputs, "");
    let events = cvmfs.path("events.jsonl");
    let command = cvmfs.command(&[
        "-i",
        "--layer-whiteouts",
        "oci",
        "-n",
        events.to_str().unwrap(),
    ]);
    // Paused in the first image's layer ingest: the next image's blob arrives in the cache.
    let (mut child, _standin) = cvmfs.spawn_paused(command, "ingest", "");
    let blob = own.hex();
    ducc_tests::wait::until(
        "the next image's blob in the cache during the first image's ingest",
        ducc_tests::wait::DEADLINE,
        || {
            ducc_tests::tree::Tree::scan(&cvmfs.path("cache"))
                .unwrap()
                .paths_where(|path, _| path.ends_with(&format!("sha256/{blob}")))
                .len()
                == 1
        },
    );
    assert_eq!(
        count(&calls_since(&cvmfs, 0), "ingest -k -t"),
        1,
        "still in the first ingest"
    );
    std::fs::remove_file(cvmfs.path("standin/pause/ingest")).unwrap();
    assert!(child.wait().unwrap().success());
    assert_same_repository(&local, &cvmfs, "cvmfs publisher, downloads ahead");
    let downloads: Vec<(String, String)> = cvmfs
        .events("events.jsonl")
        .iter()
        .filter(|e| e["action"] == "layer_download")
        .map(|e| {
            (
                e["image"].as_str().unwrap().to_owned(),
                e["layer"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let next_label = format!("{}/{name}:next", registry.host());
    let of_next: Vec<&(String, String)> = downloads
        .iter()
        .filter(|(_, layer)| *layer == own.blob.digest)
        .collect();
    assert_eq!(of_next.len(), 1, "{downloads:#?}");
    assert!(of_next[0].0.ends_with(&next_label), "{downloads:#?}");
}
