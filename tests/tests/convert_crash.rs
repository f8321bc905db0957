//! `ducc convert` interrupted: killed with SIGKILL at several points, or stopped with SIGTERM,
//! then run again, ends in the repository an uninterrupted run produces.
#![allow(clippy::unwrap_used)]

mod convert_support;

use std::os::unix::process::ExitStatusExt as _;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use convert_support::{Backend, Image, Layer, REPO, Work, marker_config, run_options, scan};
use ducc_tests::tree::Tree;
use ducc_tests::{Action, FaultProxy, Registry, Rule, images, unique_repo};

/// An image big enough that a run takes a moment: four layers of 2 MiB random data, one of them
/// overwriting a file of another.
fn push_big(name: &str) -> Image {
    let registry = Registry::anonymous();
    let client = images::client_for(registry.host(), None);
    let repo = images::repository(registry.host(), name);
    let image = Image::new(
        vec![
            Layer::random("a/data", 2 << 20),
            Layer::random("b/data", 2 << 20),
            Layer::random("a/data", 2 << 20),
            Layer::files(&[("etc/hostname", b"crash\n"), ("b/small", b"small")]),
        ],
        name,
    );
    image.push(&client, &repo, "big");
    image
}

/// The repository of an uninterrupted run of the wish list `inputs`.
fn clean_run(inputs: &[String]) -> Tree {
    let work = Work::new(Backend::Local);
    work.wishlist(inputs, "");
    assert!(work.convert(&["-i"]).status.success());
    scan(&work.repo())
}

/// Spawns `ducc convert` writing events to `<work>/events.jsonl`.
fn spawn(work: &Work) -> Child {
    work.command(&["-i", "-n", work.path("events.jsonl").to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until the events file holds an event with `action` (true), or the process ended
/// (false).
fn wait_for_event(work: &Work, child: &mut Child, action: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(work.path("events.jsonl")).unwrap_or_default();
        if text
            .lines()
            .any(|l| l.contains(&format!("\"action\":\"{action}\"")))
        {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("no {action} event within a minute");
}

fn signal(child: &Child, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, signal).unwrap();
}

/// Staging directories of the local publisher that are not empty.
fn staging_left(work: &Work) -> Vec<String> {
    let staging = work.path("cvmfs/.ducc").join(REPO).join("staging");
    std::fs::read_dir(&staging)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A one-file image, pushed as `<name>:v1`.
fn push_small(name: &str) -> Image {
    let registry = Registry::anonymous();
    let client = images::client_for(registry.host(), None);
    let repo = images::repository(registry.host(), name);
    let image = Image::new(vec![Layer::files(&[("etc/gate", b"gate\n")])], name);
    image.push(&client, &repo, "v1");
    image
}

#[test]
fn killed_runs_end_in_the_repository_of_an_uninterrupted_run() {
    let registry = Registry::anonymous();
    let name = unique_repo("kill");
    let image = push_big(&name);
    // A second image behind a proxy whose manifest request stalls during the killed runs: the
    // run cannot end before that request, so at every kill point of the first image the
    // process is certainly still running, and its death is the signal's doing.
    let gate_name = unique_repo("kill-gate");
    let gate = push_small(&gate_name);
    let gate_proxy = FaultProxy::start(registry.host(), Vec::new());
    let stall_gate = || {
        gate_proxy.set_rules(vec![
            Rule::new(Action::Stall(Duration::from_secs(300)))
                .path_contains(&format!("/{gate_name}/manifests/"))
                .times(1),
        ]);
    };
    let inputs = [
        format!("http://{}/{name}:big", registry.host()),
        format!("http://{}/{gate_name}:v1", gate_proxy.host()),
    ];
    let expected = clean_run(&inputs);

    // After a download, after a layer, after the flat tree, at the public link (just before the
    // marker), and at fixed delays after the start.
    let points: [(&str, Option<&str>, u64); 6] = [
        ("first download", Some("layer_download"), 0),
        ("first layer", Some("layer_unpack"), 0),
        ("flat tree", Some("flat_built"), 0),
        ("symlink", Some("symlink"), 0),
        ("after 50 ms", None, 50),
        ("after 200 ms", None, 200),
    ];
    for (label, action, delay) in points {
        let work = Work::new(Backend::Local);
        work.wishlist(&inputs, "");
        stall_gate();
        let mut child = spawn(&work);
        let running = match action {
            Some(action) => wait_for_event(&work, &mut child, action),
            None => {
                std::thread::sleep(Duration::from_millis(delay));
                child.try_wait().unwrap().is_none()
            }
        };
        assert!(running, "{label}: the run ended before the kill point");
        signal(&child, rustix::process::Signal::KILL);
        let status = child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(rustix::process::Signal::KILL.as_raw()),
            "{label}: the run was not killed by the signal but ended with {status}"
        );
        assert!(
            marker_config(&work.repo(), gate_proxy.host(), &format!("{gate_name}:v1")).is_none(),
            "{label}: the gate image was converted before the kill"
        );

        gate_proxy.set_rules(Vec::new());
        let out = work.convert(&["-i"]);
        assert!(out.status.success(), "{label}: rerun failed");
        expected.assert_same_as(
            &scan(&work.repo()),
            &run_options(),
            "uninterrupted run",
            &format!("run killed at {label}"),
        );
        assert!(
            staging_left(&work).is_empty(),
            "{label}: {:?}",
            staging_left(&work)
        );
        assert_eq!(
            marker_config(&work.repo(), registry.host(), &format!("{name}:big")).as_deref(),
            Some(image.config.digest.as_str())
        );
        assert_eq!(
            marker_config(&work.repo(), gate_proxy.host(), &format!("{gate_name}:v1")).as_deref(),
            Some(gate.config.digest.as_str())
        );
    }
}

#[test]
fn sigterm_aborts_the_run_and_a_rerun_completes() {
    let registry = Registry::anonymous();
    let name = unique_repo("term");
    let image = push_big(&name);
    let inputs = [format!("http://{}/{name}:big", registry.host())];
    let expected = clean_run(&inputs);

    let work = Work::new(Backend::Local);
    work.wishlist(&inputs, "");
    let mut child = spawn(&work);
    assert!(
        wait_for_event(&work, &mut child, "layer_download"),
        "the run ended before the signal"
    );
    signal(&child, rustix::process::Signal::TERM);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(staging_left(&work).is_empty(), "{:?}", staging_left(&work));
    let partial = Tree::scan_if_present(&work.path("cvmfs"))
        .unwrap()
        .paths_where(|path, _| path.rsplit('/').next().unwrap_or(path).contains(".partial"));
    assert!(partial.is_empty(), "{partial:?}");
    assert!(marker_config(&work.repo(), registry.host(), &format!("{name}:big")).is_none());
    let events = work.events("events.jsonl");
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "end_image" && e["status"] == "error"),
        "{events:#?}"
    );

    let out = work.convert(&["-i"]);
    assert!(out.status.success());
    expected.assert_same_as(
        &scan(&work.repo()),
        &run_options(),
        "uninterrupted run",
        "run after SIGTERM",
    );
    assert_eq!(
        marker_config(&work.repo(), registry.host(), &format!("{name}:big")).as_deref(),
        Some(image.config.digest.as_str())
    );
}
