//! `ducc loop` and `ducc convert-single-image`, against the real registry.

// Test code: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used)]

mod convert_support;

use std::process::Stdio;
use std::time::Duration;

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

fn wait_until(what: &str, done: impl FnMut() -> bool) {
    ducc_tests::wait::until(what, Duration::from_secs(60), done);
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

    let child = loop_command(&work, &wishlist, 2).spawn().unwrap();

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
    sigterm(&child);
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

/// The `ducc loop` command on `wishlist` in `work`, events into `events.jsonl`.
fn loop_command(work: &Work, wishlist: &std::path::Path, interval: u64) -> std::process::Command {
    let mut looping = work.ducc("loop", wishlist);
    looping
        .args(["--interval", &interval.to_string(), "-i"])
        .arg("-n")
        .arg(work.path("events.jsonl"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    looping
}

fn events_of(work: &Work, action: &str) -> usize {
    std::fs::read_to_string(work.path("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&format!("\"action\":\"{action}\"")))
        .count()
}

fn sigterm(child: &std::process::Child) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
}

#[test]
fn loop_takes_a_changed_cvmfs_repo_at_its_next_pass() {
    let registry = Registry::anonymous();
    let first_name = unique_repo("loop-repo-a");
    let second_name = unique_repo("loop-repo-b");
    let first = push(&first_name, "1", "first");
    let second = push(&second_name, "1", "second");
    let work = Work::new(Backend::Local);
    let wishlist = work.wishlist(&[format!("http://{}/{first_name}:1", registry.host())], "");
    let child = loop_command(&work, &wishlist, 1).spawn().unwrap();
    wait_until("the first image", || {
        flat_dir(&work.repo(), &first).exists()
    });
    // The same list, now for another repository, with a second image.
    let other = "other.example.org";
    std::fs::write(
        &wishlist,
        format!(
            "version: 1\nuser: ''\ncvmfs_repo: {other}\ninput:\n  - 'http://{host}/{first_name}:1'\n  - 'http://{host}/{second_name}:1'\n",
            host = registry.host()
        ),
    )
    .unwrap();
    let other_repo = work.path("cvmfs").join(other);
    wait_until("both images in the other repository", || {
        marker_config(&other_repo, registry.host(), &format!("{second_name}:1")).is_some()
            && marker_config(&other_repo, registry.host(), &format!("{first_name}:1")).is_some()
    });
    assert!(flat_dir(&other_repo, &second).exists());
    assert!(flat_dir(&other_repo, &first).exists());
    // The first repository got nothing of the second image.
    assert!(marker_config(&work.repo(), registry.host(), &format!("{second_name}:1")).is_none());
    let before = events_of(&work, "wait_next_pass");
    wait_until("the loop to wait", || {
        events_of(&work, "wait_next_pass") > before
    });
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {stderr}", out.status);
    assert!(!stderr.contains("restart ducc loop"), "{stderr}");
}

#[test]
fn loop_stopped_in_the_middle_of_a_pass_prints_its_summary_once() {
    let registry = Registry::anonymous();
    let names: Vec<String> = (0..6)
        .map(|i| unique_repo(&format!("loop-stop-{i}")))
        .collect();
    for (i, name) in names.iter().enumerate() {
        push(name, "1", &format!("image {i}"));
    }
    let work = Work::new(Backend::Local);
    let inputs: Vec<String> = names
        .iter()
        .map(|n| format!("http://{}/{n}:1", registry.host()))
        .collect();
    let wishlist = work.wishlist(&inputs, "");
    let child = loop_command(&work, &wishlist, 1).spawn().unwrap();
    // The first image started: the pass is under way, with five more images to go.
    wait_until("the first image to start", || {
        events_of(&work, "start_image") > 0
    });
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summaries = stderr
        .lines()
        .filter(|l| l.starts_with("ducc: ") && l.contains(" converted, "))
        .count();
    assert_eq!(summaries, 1, "{stderr}");
    assert_eq!(events_of(&work, "wait_next_pass"), 0, "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(events_of(&work, "end_ducc"), 1, "{stderr}");
}
