//! `ducc loop` and `ducc convert-single-image`, against the real registry.

// Test code: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used)]

mod convert_support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use convert_support::{Backend, Image, Layer, Work, flat_dir, marker_config};
use ducc_tests::images::{self, client_for};
use ducc_tests::{Registry, unique_repo};

fn push(name: &str, tag: &str, label: &str) -> Image {
    let registry = Registry::anonymous();
    let client = client_for(registry.host(), None);
    let repo = images::repository(registry.host(), name);
    let image = Image::new(
        vec![Layer::files(&[("etc/label", label.as_bytes())])],
        label,
    );
    image.push(&client, &repo, tag);
    image
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn loop_rereads_the_wish_list_keeps_the_last_good_one_and_stops_cleanly_on_sigterm() {
    let registry = Registry::anonymous();
    let first_name = unique_repo("loop-a");
    let second_name = unique_repo("loop-b");
    let first = push(&first_name, "1", "first");
    let second = push(&second_name, "1", "second");
    let work = Work::new(Backend::Local);
    let wishlist = work.wishlist(&[format!("http://{}/{first_name}:1", registry.host())], "");

    let mut looping = ducc_tests::ducc_command(&work.path("docker"));
    looping
        .args(["loop", "--interval", "2", "-i"])
        .arg(&wishlist)
        .arg("--root")
        .arg(work.path("cvmfs"))
        .arg("--cache-dir")
        .arg(work.path("cache"))
        .arg("-t")
        .arg(work.path("tmp"))
        .arg("-n")
        .arg(work.path("events.jsonl"));
    let child = looping
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    wait_until("the first image", || {
        flat_dir(&work.repo(), &first).exists()
    });
    // A broken wish list is reported and the previous one kept: two more passes over the first
    // image mean at least one re-read saw the broken file.
    let passes = || {
        std::fs::read_to_string(work.path("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"action\":\"image_up_to_date\""))
            .count()
    };
    std::fs::write(&wishlist, "version: 1\ninput: [\n").unwrap();
    let before = passes();
    wait_until("two passes with the broken wish list", || {
        passes() >= before + 2
    });
    // ...and a fixed one with another image is picked up on a later pass.
    work.wishlist(
        &[
            format!("http://{}/{first_name}:1", registry.host()),
            format!("http://{}/{second_name}:1", registry.host()),
        ],
        "",
    );
    // The marker is written last: once it is there, the whole image is.
    wait_until("the second image", || {
        marker_config(&work.repo(), registry.host(), &format!("{second_name}:1")).is_some()
    });
    assert!(flat_dir(&work.repo(), &second).exists());

    // SIGTERM while it waits between passes: a clean stop. The event says the pass after the
    // second image's marker is over and the loop is idle.
    let waits = || {
        std::fs::read_to_string(work.path("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"action\":\"wait_next_pass\""))
            .count()
    };
    let before = waits();
    wait_until("the loop to wait for its next pass", || waits() > before);
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("keeping the previous wish list"),
        "{stderr}"
    );
    assert!(
        out.status.success(),
        "not a clean stop: {}: {stderr}",
        out.status
    );
    assert!(!stderr.contains("interrupted"), "{stderr}");
}

#[test]
fn convert_single_image_converts_without_a_wish_list_and_fails_clearly_on_a_missing_one() {
    let registry = Registry::anonymous();
    let name = unique_repo("single");
    let image = push(&name, "v1", "single");
    let work = Work::new(Backend::Local);
    let run = |tag: &str| {
        let mut command = ducc_tests::ducc_command(&work.path("docker"));
        command
            .arg("convert-single-image")
            .arg(format!("http://{}/{name}:{tag}", registry.host()))
            .arg(convert_support::REPO)
            .arg("--root")
            .arg(work.path("cvmfs"))
            .arg("--cache-dir")
            .arg(work.path("cache"))
            .args(["-r", "2"]);
        command.output().unwrap()
    };
    let out = run("v1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(flat_dir(&work.repo(), &image).join("etc/label").is_file());

    let out = run("nope");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{name}:nope (manifest)")),
        "{stderr}"
    );
    assert!(
        stderr.contains("(attempt 1)"),
        "two attempts were made: {stderr}"
    );
}
