//! `ducc serve` against the real registry: notifications in, converted images out (issue 17).
//!
//! Each test starts its own `ducc serve` on 127.0.0.1 (and, where the registry itself must
//! notify, its own registry with `notifications.endpoints` pointing at it). Every wait is bounded.

// Test code: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used)]

mod convert_support;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use convert_support::{Backend, Image, Layer, Work, flat_dir, marker_config};
use ducc_tests::http::{Head, read_head};
use ducc_tests::images::{self, client_for};
use ducc_tests::{Flavour, Registry, random_hex, require_tool, unique_repo};
use serde_json::json;

/// Longest wait for anything serve should do by itself.
const WAIT: Duration = Duration::from_secs(90);

fn wait_until(what: &str, done: impl FnMut() -> bool) {
    ducc_tests::wait::until(what, WAIT, done);
}

/// A fresh repository name made of `label`, a work directory whose wish list holds that
/// repository's `tag` (a glob or not) on the shared anonymous registry alone, and serve started
/// on it on loopback with a fresh notification token.
fn serve_wishing(label: &str, tag: &str) -> (String, Work, String, Serve) {
    let name = unique_repo(label);
    let work = Work::new(Backend::Local);
    let wish = format!("http://{}/{name}:{tag}", Registry::anonymous().host());
    work.wishlist(&[wish], "");
    let token = format!("tok-{}", random_hex(16));
    let serve = Serve::start(&work, "127.0.0.1:0", Some(&token), &[]);
    (name, work, token, serve)
}

/// One HTTP exchange with `Connection: close`: status and body.
fn exchange(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut request = Head {
        first_line: format!("{method} {path} HTTP/1.1"),
        headers: vec![("Host".to_owned(), addr.to_owned())],
    };
    for (name, value) in headers {
        request.set_header(name, value);
    }
    request.set_header("Content-Length", &body.len().to_string());
    request.set_header("Connection", "close");
    stream.write_all(&request.to_bytes()).unwrap();
    // The server may answer (413) and close before it has read a large body.
    let _ = stream.write_all(body);
    let mut reader = std::io::BufReader::new(stream);
    let head = read_head(&mut reader).unwrap().expect("an answer");
    let mut text = String::new();
    let _ = reader.take(16 << 20).read_to_string(&mut text);
    (head.status(), text)
}

/// A running `ducc serve`; killed when dropped.
struct Serve {
    child: Child,
    addr: String,
    log: PathBuf,
    token: Option<String>,
}

impl Serve {
    /// Starts `ducc serve` on `listen` over the wish list of `work`, with `token` (else
    /// `--no-auth`).
    fn start(work: &Work, listen: &str, token: Option<&str>, extra: &[&str]) -> Serve {
        let log = work.path(&format!("serve-{}.log", random_hex(4)));
        let mut command = work.ducc("serve", &work.path("wish.yaml"));
        command
            .args(["--listen", listen, "--retry-backoff", "1", "-i"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        match token {
            Some(token) => command.env("DUCC_WEBHOOK_TOKEN", token),
            None => command.arg("--no-auth"),
        };
        let child = command.spawn().unwrap();
        let mut serve = Serve {
            child,
            addr: String::new(),
            log,
            token: token.map(str::to_owned),
        };
        wait_until("ducc serve to listen", || {
            if let Some(status) = serve.child.try_wait().unwrap() {
                panic!("ducc serve exited at start ({status}): {}", serve.log());
            }
            serve
                .log()
                .lines()
                .find_map(|l| {
                    l.strip_prefix("ducc serve: listening on http://")
                        .map(str::to_owned)
                })
                .map(|addr| serve.addr = addr)
                .is_some()
        });
        serve
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn get(&self, path: &str) -> (u16, String) {
        exchange(&self.addr, "GET", path, &[], b"")
    }

    /// POSTs `body` to a notify endpoint with the right token.
    fn notify(&self, endpoint: &str, body: &[u8]) -> (u16, String) {
        let auth = format!("Bearer {}", self.token.as_deref().unwrap_or_default());
        exchange(
            &self.addr,
            "POST",
            endpoint,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body,
        )
    }

    fn status(&self) -> serde_json::Value {
        let (code, body) = self.get("/status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// The value of the metric line starting with `series ` (name and labels exactly as
    /// exported), or 0 when it is not there yet.
    fn metric(&self, series: &str) -> f64 {
        let (code, body) = self.get("/metrics");
        assert_eq!(code, 200, "{body}");
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    fn passes(&self) -> u64 {
        self.status()["full_pass"]["completed"].as_u64().unwrap()
    }

    /// `VmRSS` and `VmHWM` of the serve process, in KiB.
    fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap()
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(i32::try_from(self.child.id()).unwrap()).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
    }

    /// Waits for the end of the first full pass.
    fn first_pass(&self) {
        wait_until("the first full pass", || self.passes() >= 1);
    }

    /// Waits until no image is queued or converting.
    fn wait_idle(&self, what: &str) {
        wait_until(what, || {
            let status = self.status();
            status["queue"]["depth"] == 0 && status["running"].is_null()
        });
    }

    /// POSTs `body` to a notify endpoint with the right token, asserts a 200 and returns the body.
    fn notify_ok(&self, endpoint: &str, body: &[u8]) -> String {
        let (code, text) = self.notify(endpoint, body);
        assert_eq!(code, 200, "{text}");
        text
    }

    /// SIGTERM; asserts that serve exits successfully, and returns its log.
    fn stop(mut self) -> String {
        self.signal(rustix::process::Signal::TERM);
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "serve did not stop: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let log = self.log();
        assert!(status.success(), "{status}: {log}");
        log
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An image of one small layer whose `etc/label` says `label`.
fn labelled(label: &str) -> Image {
    Image::new(
        vec![Layer::files(&[("etc/label", label.as_bytes())])],
        label,
    )
}

/// Pushes `image` as `name:tag` to the shared anonymous registry with ducc-registry.
fn push_direct(image: &Image, name: &str, tag: &str) {
    let registry = Registry::anonymous();
    let client = client_for(registry.host(), None);
    image.push(&client, &images::repository(registry.host(), name), tag);
}

/// Writes `image` as an OCI layout tagged `tag` under `dir` and pushes it with `skopeo copy` to
/// `host/name:tag`, as an operator's CI would.
fn push_with_skopeo(image: &Image, dir: &Path, host: &str, name: &str, tag: &str) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    for blob in image
        .layers
        .iter()
        .map(|l| &l.blob)
        .chain([&image.config, &image.manifest])
    {
        std::fs::write(blobs.join(convert_support::hex(&blob.digest)), &blob.bytes).unwrap();
    }
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut manifest = image
        .manifest
        .descriptor("application/vnd.oci.image.manifest.v1+json");
    manifest["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
    let index = json!({"schemaVersion": 2, "manifests": [manifest]});
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    let skopeo = require_tool("skopeo", "skopeo");
    let out = Command::new(skopeo)
        .args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--dest-no-creds",
        ])
        .arg(format!("oci:{}:{tag}", dir.display()))
        .arg(format!("docker://{host}/{name}:{tag}"))
        .env("HOME", dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo copy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A distribution envelope with one tagged manifest push of `host/name:tag`.
fn push_envelope(host: &str, name: &str, tag: &str) -> Vec<u8> {
    json!({"events": [{
        "id": random_hex(8),
        "timestamp": "2026-12-01T00:00:00Z",
        "action": "push",
        "target": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", "0".repeat(64)),
            "repository": name,
            "url": format!("http://{host}/v2/{name}/manifests/sha256:0"),
            "tag": tag,
        },
        "request": {"id": "r", "addr": "127.0.0.1:1", "host": host, "method": "PUT", "useragent": "test"},
        "actor": {},
        "source": {"addr": host, "instanceID": "i"},
    }]})
    .to_string()
    .into_bytes()
}

/// Waits (for `what`) until the image `name` (`repository:tag`) of the shared anonymous registry
/// has its marker in the repository of `work`.
fn wait_for_marker(what: &str, work: &Work, name: &str) {
    let host = Registry::anonymous().host();
    wait_until(what, || marker_config(&work.repo(), host, name).is_some());
}

fn label_in(work: &Work, image: &Image) -> Option<String> {
    std::fs::read_to_string(flat_dir(&work.repo(), image).join("etc/label")).ok()
}

#[test]
fn a_skopeo_push_to_a_notifying_registry_converts_wished_images_and_ignores_the_rest() {
    let token = format!("tok-{}", random_hex(16));
    let serve_port = free_port();
    // The registry's own notification endpoint, with the token in its headers; pulls and blobs
    // are not sent at all.
    let registry = Registry::start_with_config(
        Flavour::Anonymous,
        &format!(
            "notifications:\n  endpoints:\n    - name: ducc\n      \
             url: http://127.0.0.1:{serve_port}/notify/distribution\n      \
             headers:\n        Authorization: [Bearer {token}]\n      \
             timeout: 2s\n      threshold: 3\n      backoff: 1s\n      \
             ignoredmediatypes: [application/octet-stream]\n      \
             ignore:\n        actions: [pull]\n"
        ),
    );
    let work = Work::new(Backend::Local);
    let host = registry.host().to_owned();
    work.wishlist(&[format!("http://{host}/wished:1.*")], "");
    let serve = Serve::start(&work, &format!("127.0.0.1:{serve_port}"), Some(&token), &[]);
    serve.first_pass();

    let mut latencies = Vec::new();
    for round in 0..3 {
        let image = labelled(&format!("wished-{round}"));
        let tag = format!("1.{round}");
        push_with_skopeo(
            &image,
            &work.path(&format!("oci-{round}")),
            &host,
            "wished",
            &tag,
        );
        let pushed = Instant::now();
        // No other action: the registry's notification alone brings it in, marker last.
        wait_until("the pushed image's marker", || {
            marker_config(&work.repo(), &host, &format!("wished:{tag}")).is_some()
        });
        latencies.push(pushed.elapsed());
        assert_eq!(
            label_in(&work, &image).as_deref(),
            Some(&*format!("wished-{round}"))
        );
        let link = work.repo().join(&host).join(format!("wished:{tag}"));
        assert_eq!(
            std::fs::canonicalize(&link).unwrap(),
            std::fs::canonicalize(flat_dir(&work.repo(), &image)).unwrap()
        );
    }
    // Each push converted at its first attempt: serve waited for the registry to link the tag
    // (it notifies before it does).
    let status = serve.status();
    let results = status["results"].as_array().unwrap();
    assert!(
        results.iter().all(|r| r["step"] != "manifest"),
        "a notified conversion found no manifest: {status}"
    );
    latencies.sort();
    eprintln!(
        "serve figure: push-to-marker latency of a one-layer image, median of {}: {:.3} s (all: {:?})",
        latencies.len(),
        latencies[latencies.len() / 2].as_secs_f64(),
        latencies
    );

    // Pushes the wish list does not name: another repository, and a tag outside the glob.
    let ignored = labelled("ignored");
    push_with_skopeo(&ignored, &work.path("oci-other"), &host, "unwished", "1.0");
    push_with_skopeo(&ignored, &work.path("oci-tag"), &host, "wished", "2.0");
    let not_wished = "ducc_webhook_events_total{endpoint=\"distribution\",outcome=\"not_wished\"}";
    wait_until("two ignored pushes", || serve.metric(not_wished) >= 2.0);
    assert!(marker_config(&work.repo(), &host, "unwished:1.0").is_none());
    assert!(marker_config(&work.repo(), &host, "wished:2.0").is_none());
    assert!(flat_dir(&work.repo(), &ignored).symlink_metadata().is_err());
    assert_eq!(serve.metric("ducc_images_converted_total"), 3.0);
    assert!(
        serve.metric("ducc_webhook_requests_total{endpoint=\"/notify/distribution\",code=\"200\"}")
            >= 5.0
    );
    let log = serve.stop();
    assert!(!log.contains(&token), "the token is logged: {log}");
}

#[test]
fn notify_refuses_missing_or_wrong_tokens_malformed_and_oversized_bodies_and_counts_them() {
    let registry = Registry::anonymous();
    let (name, _work, token, serve) = serve_wishing("serve-refused", "1");
    let wished = push_envelope(registry.host(), &name, "1");
    let post = |headers: &[(&str, &str)], body: &[u8]| {
        exchange(&serve.addr, "POST", "/notify/distribution", headers, body)
    };
    let wrong = format!("Bearer {token}x");
    // No header, a wrong token, another scheme, the token without its scheme.
    let refused: [&[(&str, &str)]; 4] = [
        &[],
        &[("Authorization", &wrong)],
        &[("Authorization", "Basic dXNlcjpwYXNz")],
        &[("Authorization", &token)],
    ];
    for headers in refused {
        let (code, text) = post(headers, &wished);
        assert_eq!(code, 401, "{headers:?}: {text}");
    }
    let (code, text) = serve.notify("/notify/distribution", b"{\"events\": 3}");
    assert_eq!(code, 400, "{text}");
    assert!(
        text.contains("malformed distribution notification"),
        "{text}"
    );
    let (code, text) = serve.notify("/notify/harbor", b"not json");
    assert_eq!(code, 400, "{text}");
    let oversized = vec![b' '; 2 * 1024 * 1024];
    let (code, text) = serve.notify("/notify/distribution", &oversized);
    assert_eq!(code, 413, "{text}");
    let (code, _) = serve.get("/nowhere");
    assert_eq!(code, 404);
    let (code, _) = serve.get("/notify/distribution");
    assert_eq!(code, 405);

    // Nothing was queued or converted by the refused requests.
    serve.first_pass();
    // (The wished image is not in the registry: the pass's failure waits there as a retry.)
    let status = serve.status();
    let queued = status["queue"]["images"].as_array().unwrap();
    assert!(queued.iter().all(|e| e["trigger"] == "retry"), "{status}");
    let metric = |code: u16| {
        serve.metric(&format!(
            "ducc_webhook_requests_total{{endpoint=\"/notify/distribution\",code=\"{code}\"}}"
        ))
    };
    assert_eq!(metric(401), 4.0);
    assert_eq!(metric(400), 1.0);
    assert_eq!(metric(413), 1.0);
    assert_eq!(
        serve.metric("ducc_webhook_requests_total{endpoint=\"/notify/harbor\",code=\"400\"}"),
        1.0
    );
    assert_eq!(
        serve.metric("ducc_webhook_requests_total{endpoint=\"other\",code=\"404\"}"),
        1.0
    );
    assert_eq!(
        serve.metric("ducc_webhook_events_total{endpoint=\"distribution\",outcome=\"queued\"}"),
        0.0
    );
    let (code, _) = serve.get("/healthz");
    assert_eq!(code, 200);
    let log = serve.stop();
    assert!(!log.contains(&token), "the token is logged: {log}");
}

#[test]
fn serve_refuses_to_start_without_a_token_unless_on_loopback_with_no_auth() {
    let work = Work::new(Backend::Local);
    work.wishlist(&["http://127.0.0.1:1/app:1".to_owned()], "");
    let run = |listen: &str, extra: &[&str], token: Option<&str>| {
        let mut command = ducc_tests::ducc_command(&work.path("docker"));
        command
            .arg("serve")
            .arg(work.path("wish.yaml"))
            .args(["--listen", listen])
            .arg("--root")
            .arg(work.path("cvmfs"))
            .args(extra);
        if let Some(token) = token {
            command.env("DUCC_WEBHOOK_TOKEN", token);
        }
        let out = command.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let missing = work.path("no-token-file");
    // (listen, arguments, DUCC_WEBHOOK_TOKEN, what the usage error says)
    let refused: [(&str, &[&str], Option<&str>, &str); 5] = [
        ("127.0.0.1:0", &[], None, "needs a webhook token"),
        (
            "0.0.0.0:0",
            &["--no-auth"],
            None,
            "only allowed on a loopback address",
        ),
        (
            "127.0.0.1:0",
            &["--no-auth"],
            Some("t"),
            "--no-auth contradicts",
        ),
        ("127.0.0.1:0", &[], Some(""), "is empty"),
        (
            "127.0.0.1:0",
            &["--token-file", missing.to_str().unwrap()],
            None,
            "no-token-file",
        ),
    ];
    for (listen, extra, token, says) in refused {
        let (code, stderr) = run(listen, extra, token);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
    }

    // On loopback, --no-auth accepts notifications without a token.
    let serve = Serve::start(&work, "127.0.0.1:0", None, &[]);
    let (code, text) = exchange(
        &serve.addr,
        "POST",
        "/notify/distribution",
        &[],
        b"{\"events\": []}",
    );
    assert_eq!(code, 200, "{text}");
    serve.stop();
}

#[test]
fn a_burst_of_hundreds_of_events_converts_the_image_once_with_bounded_memory() {
    let registry = Registry::anonymous();
    let (name, work, _token, serve) = serve_wishing("serve-burst", "1.*");
    // The repository has no tags yet: the first pass converts nothing.
    serve.first_pass();
    serve.wait_idle("an idle worker after the first pass");
    let (idle_rss, _) = serve.memory_kib();

    let image = labelled("burst");
    push_direct(&image, &name, "1.0");
    let envelope = push_envelope(registry.host(), &name, "1.0");
    let unwished = push_envelope(registry.host(), &format!("{name}-other"), "1.0");
    const EVENTS: usize = 400;
    let mut peak_rss = idle_rss;
    let mut deepest = 0;
    std::thread::scope(|scope| {
        let senders: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    for n in 0..EVENTS / 4 {
                        let body = if n % 10 == 9 { &unwished } else { &envelope };
                        serve.notify_ok("/notify/distribution", body);
                    }
                })
            })
            .collect();
        while senders.iter().any(|s| !s.is_finished()) {
            peak_rss = peak_rss.max(serve.memory_kib().0);
            let depth = serve.status()["queue"]["depth"].as_u64().unwrap();
            deepest = deepest.max(depth);
            std::thread::sleep(Duration::from_millis(20));
        }
        for sender in senders {
            sender.join().unwrap();
        }
    });
    wait_for_marker("the burst's image", &work, &format!("{name}:1.0"));
    serve.wait_idle("an empty queue and an idle worker");
    assert_eq!(label_in(&work, &image).as_deref(), Some("burst"));
    let (_, hwm) = serve.memory_kib();
    eprintln!(
        "serve figure: RSS idle {idle_rss} KiB; during a burst of {EVENTS} events peak RSS {peak_rss} KiB, VmHWM {hwm} KiB; deepest queue {deepest}"
    );
    // One image, converted once; a push that came in while it converted may queue it a second
    // time, which then finds it up to date.
    assert_eq!(serve.metric("ducc_images_converted_total"), 1.0);
    assert!(serve.metric("ducc_images_up_to_date_total") <= 1.0);
    assert!(
        deepest <= 1,
        "the queue held {deepest} entries for one image"
    );
    let queued = "ducc_webhook_events_total{endpoint=\"distribution\",outcome=\"queued\"}";
    let deduplicated =
        "ducc_webhook_events_total{endpoint=\"distribution\",outcome=\"deduplicated\"}";
    let not_wished = "ducc_webhook_events_total{endpoint=\"distribution\",outcome=\"not_wished\"}";
    let wished_events = EVENTS - EVENTS / 10;
    assert_eq!(
        serve.metric(queued) + serve.metric(deduplicated),
        wished_events as f64
    );
    assert!(serve.metric(queued) <= 2.0);
    assert_eq!(serve.metric(not_wished), (EVENTS / 10) as f64);
    // Bounded: the burst itself adds little to a process that converts images.
    assert!(
        hwm < idle_rss + 64 * 1024,
        "memory grew from {idle_rss} KiB to a peak of {hwm} KiB"
    );
    serve.stop();
}

#[test]
fn a_harbor_push_artifact_event_converts_the_image() {
    let registry = Registry::anonymous();
    let (name, work, _token, serve) = serve_wishing("serve-harbor/app", "2.*");
    serve.first_pass();
    let image = labelled("harbor");
    push_direct(&image, &name, "2.1");
    let (namespace, repository) = name.split_once('/').unwrap();
    let payload = json!({
        "type": "PUSH_ARTIFACT",
        "occur_at": 1_796_000_000,
        "operator": "ci-robot",
        "event_data": {
            "resources": [{
                "digest": image.manifest.digest,
                "tag": "2.1",
                "resource_url": format!("{}/{name}:2.1", registry.host()),
            }],
            "repository": {
                "date_created": 1_790_000_000,
                "name": repository,
                "namespace": namespace,
                "repo_full_name": name,
                "repo_type": "private",
            },
        },
    });
    serve.notify_ok("/notify/harbor", payload.to_string().as_bytes());
    wait_for_marker("the Harbor-notified image", &work, &format!("{name}:2.1"));
    assert_eq!(label_in(&work, &image).as_deref(), Some("harbor"));
    // The result is recorded just after the marker is written.
    wait_until("the Harbor-notified result", || {
        serve.status()["results"][0]["trigger"] != "full_pass"
    });
    let result = &serve.status()["results"][0];
    assert_eq!(
        result["trigger"],
        json!({"notification": "harbor"}),
        "{result}"
    );
    assert_eq!(result["outcome"], "converted", "{result}");
    // Other Harbor events are acknowledged and skipped.
    let pull = json!({"type": "PULL_ARTIFACT", "event_data": {"resources": []}});
    serve.notify_ok("/notify/harbor", pull.to_string().as_bytes());
    assert_eq!(
        serve.metric("ducc_webhook_events_total{endpoint=\"harbor\",outcome=\"skipped\"}"),
        1.0
    );
    serve.stop();
}

#[test]
fn sighup_rereads_the_wish_list_and_a_broken_one_keeps_the_last_good_one() {
    let registry = Registry::anonymous();
    let first = unique_repo("serve-hup-a");
    let second = unique_repo("serve-hup-b");
    let work = Work::new(Backend::Local);
    let first_input = format!("http://{}/{first}:1", registry.host());
    work.wishlist(std::slice::from_ref(&first_input), "");
    let token = format!("tok-{}", random_hex(16));
    let serve = Serve::start(&work, "127.0.0.1:0", Some(&token), &[]);
    serve.first_pass();
    let second_image = labelled("second");
    push_direct(&second_image, &second, "1");
    let notify_second = || {
        let text = serve.notify_ok(
            "/notify/distribution",
            &push_envelope(registry.host(), &second, "1"),
        );
        serde_json::from_str::<serde_json::Value>(&text).unwrap()
    };
    assert_eq!(notify_second()["not_wished"], 1);

    // A broken list is reported and the last good one stays in use.
    std::fs::write(work.path("wish.yaml"), "version: 1\ninput: [\n").unwrap();
    serve.signal(rustix::process::Signal::HUP);
    wait_until("the broken list to be reported", || {
        serve.status()["wishlist"]["reload_error"].is_string()
    });
    assert_eq!(serve.status()["wishlist"]["wishes"], 1);
    assert!(serve.log().contains("keeping the previous wish list"));
    assert_eq!(notify_second()["not_wished"], 1);

    // A good one naming the second image is picked up, and its push converts it.
    work.wishlist(
        &[
            first_input,
            format!("http://{}/{second}:1", registry.host()),
        ],
        "",
    );
    serve.signal(rustix::process::Signal::HUP);
    wait_until("the fixed list", || {
        serve.status()["wishlist"]["wishes"] == 2
    });
    assert!(serve.status()["wishlist"]["reload_error"].is_null());
    assert_eq!(notify_second()["queued"], 1);
    wait_for_marker("the second image", &work, &format!("{second}:1"));
    assert_eq!(label_in(&work, &second_image).as_deref(), Some("second"));
    serve.stop();
}

#[test]
fn a_failed_conversion_is_shown_counted_and_retried_with_backoff_until_it_works() {
    // A literal tag that does not exist yet: every attempt fails at the manifest.
    let (name, work, _token, serve) = serve_wishing("serve-retry", "1");
    wait_until("two failed attempts", || {
        serve.metric("ducc_conversion_failures_total") >= 2.0
    });
    let status = serve.status();
    let failed = &status["results"][0];
    assert_eq!(failed["outcome"], "failed", "{status}");
    assert_eq!(failed["step"], "manifest", "{status}");
    assert!(
        failed["error"].as_str().unwrap().contains(&name),
        "{status}"
    );
    assert!(
        failed["retry_in_seconds"].as_u64().unwrap() >= 1,
        "{status}"
    );
    let (code, page) = exchange(
        &serve.addr,
        "GET",
        "/status",
        &[("Accept", "text/html")],
        b"",
    );
    assert_eq!(code, 200);
    assert!(page.contains("<table>") && page.contains(&name), "{page}");
    let (code, _) = serve.get("/healthz");
    assert_eq!(code, 200, "the server lives on after failures");

    // Once the image exists, a retry converts it with no notification.
    let image = labelled("retried");
    push_direct(&image, &name, "1");
    wait_for_marker("the retried image", &work, &format!("{name}:1"));
    assert_eq!(label_in(&work, &image).as_deref(), Some("retried"));
    assert!(serve.log().contains("retrying in"), "{}", serve.log());
    serve.stop();
}

#[test]
fn sigterm_in_the_middle_of_a_conversion_aborts_it_and_exits_cleanly() {
    let registry = Registry::anonymous();
    // The first layer download stalls: serve is mid-conversion when SIGTERM comes.
    let proxy = ducc_tests::fault_proxy::FaultProxy::start(
        registry.host(),
        vec![
            ducc_tests::fault_proxy::Rule::new(ducc_tests::fault_proxy::Action::Stall(
                Duration::from_secs(3),
            ))
            .method("GET")
            .path_contains("/blobs/")
            .times(1),
        ],
    );
    let name = unique_repo("serve-stop/app");
    let image = labelled("stopped");
    push_direct(&image, &name, "1");
    let work = Work::new(Backend::Local);
    work.wishlist(&[format!("http://{}/{name}:1", proxy.host())], "");
    let token = format!("tok-{}", random_hex(16));
    let serve = Serve::start(&work, "127.0.0.1:0", Some(&token), &[]);
    // The start-up pass reached the layer blob.
    wait_until("the stalled blob download", || {
        proxy.count("GET", "/blobs/") > 0
    });
    let log = serve.stop();
    assert!(
        marker_config(&work.repo(), proxy.host(), &format!("{name}:1")).is_none(),
        "a stopped conversion wrote its marker: {log}"
    );
    assert!(
        !flat_dir(&work.repo(), &image).exists(),
        "a stopped conversion published its flat tree: {log}"
    );
}

/// The node (from 1) of `n` that takes `name` (`<registry>/<repository>:<tag>`), as the README
/// documents `--shard`: the highest first 8 bytes of SHA-256 of the node number and the name.
fn shard_owner(name: &str, n: u32) -> u32 {
    use sha2::{Digest, Sha256};
    (1..=n)
        .max_by_key(|k| {
            let digest = Sha256::digest([&k.to_be_bytes()[..], name.as_bytes()].concat());
            u64::from_be_bytes(digest[..8].try_into().unwrap())
        })
        .unwrap()
}

#[test]
fn serve_with_a_shard_converts_its_images_and_ignores_other_shards_notifications() {
    let registry = Registry::anonymous();
    let host = registry.host();
    let name = unique_repo("serve-shard");
    let owner = |tag: &str| shard_owner(&format!("{host}/{name}:{tag}"), 2);
    let mut tags: Vec<String> = (0..8).map(|i| format!("v{i}")).collect();
    // The repository name is random: eight tags all fall to one node once in 128 runs (the test
    // failed so); more tags until both nodes have some.
    while tags.iter().all(|tag| owner(tag) == owner(&tags[0])) {
        tags.push(format!("v{}", tags.len()));
    }
    for tag in &tags {
        push_direct(&labelled(tag), &name, tag);
    }
    let (mine, others): (Vec<&String>, Vec<&String>) = tags.iter().partition(|tag| owner(tag) == 1);
    assert!(
        !mine.is_empty() && !others.is_empty(),
        "{mine:?} {others:?}"
    );
    let work = Work::new(Backend::Local);
    work.wishlist(&[format!("http://{host}/{name}:v*")], "");
    let serve = Serve::start(&work, "127.0.0.1:0", None, &["--shard", "1/2"]);
    serve.first_pass();
    for tag in &mine {
        assert!(
            marker_config(&work.repo(), host, &format!("{name}:{tag}")).is_some(),
            "{tag} of this shard"
        );
    }
    for tag in &others {
        assert!(
            marker_config(&work.repo(), host, &format!("{name}:{tag}")).is_none(),
            "{tag} of the other shard"
        );
    }
    let pass = &serve.status()["full_pass"];
    assert_eq!(pass["last_converted"], mine.len(), "{pass}");
    assert_eq!(pass["last_other_shard"], others.len(), "{pass}");
    assert_eq!(
        serve.metric("ducc_images_other_shard_total"),
        others.len() as f64
    );
    let (code, page) = exchange(
        &serve.addr,
        "GET",
        "/status",
        &[("Accept", "text/html")],
        b"",
    );
    assert_eq!(code, 200);
    assert!(page.contains(" other shard"), "{page}");

    // A push of another shard's image is answered, counted and not converted.
    let other = others[0];
    let text = serve.notify_ok("/notify/distribution", &push_envelope(host, &name, other));
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["other_shard"], 1, "{answer}");
    assert_eq!(answer["queued"], 0, "{answer}");
    assert_eq!(
        serve
            .metric("ducc_webhook_events_total{endpoint=\"distribution\",outcome=\"other_shard\"}"),
        1.0
    );
    assert_eq!(serve.status()["queue"]["depth"], 0);
    // A push of this shard's image is queued as before.
    let text = serve.notify_ok("/notify/distribution", &push_envelope(host, &name, mine[0]));
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["queued"], 1, "{answer}");
    let log = serve.stop();
    assert!(
        marker_config(&work.repo(), host, &format!("{name}:{other}")).is_none(),
        "{log}"
    );
    assert!(log.contains("in another node's shard"), "{log}");
}

/// The stand-in's calls of `work` from `before` on that start with `prefix`.
fn standin_calls(work: &Work, before: usize, prefix: &str) -> usize {
    work.standin_log()[before..]
        .iter()
        .filter(|c| c.starts_with(prefix))
        .count()
}

/// Pushes `tags` of `name`, each a one-layer image labelled with its tag; the wish list inputs.
fn push_tags(name: &str, tags: &[&str]) -> Vec<String> {
    let host = Registry::anonymous().host().to_owned();
    tags.iter()
        .map(|tag| {
            push_direct(&labelled(tag), name, tag);
            format!("http://{host}/{name}:{tag}")
        })
        .collect()
}

/// serve through the cvmfs publisher (the stand-in, a stratum 0) over `wish`, with `--batch`.
fn serve_batching(wish: &str) -> (Work, Serve) {
    let work = Work::new(Backend::Cvmfs);
    work.wishlist(&[wish.to_owned()], "");
    let serve = Serve::start(
        &work,
        "127.0.0.1:0",
        Some("tok-batch"),
        &["--layer-whiteouts", "oci", "--batch", "10"],
    );
    (work, serve)
}

#[test]
fn serve_batches_the_images_of_a_full_pass_and_publishes_a_lone_notified_image_at_once() {
    let registry = Registry::anonymous();
    let name = unique_repo("serve-batch");
    let tags = ["1.0", "1.1", "1.2", "1.3"];
    let inputs = push_tags(&name, &tags);
    let (work, serve) = serve_batching(&format!("http://{}/{name}:1.*", registry.host()));
    serve.first_pass();
    // Four images: one ingest each, and one mounted transaction for the rest of all four.
    assert_eq!(
        standin_calls(&work, 0, "ingest -k -t"),
        4,
        "{:#?}",
        work.standin_log()
    );
    assert_eq!(
        standin_calls(&work, 0, "transaction "),
        1,
        "{:#?}",
        work.standin_log()
    );
    assert_eq!(
        standin_calls(&work, 0, "publish "),
        1,
        "{:#?}",
        work.standin_log()
    );
    let status = serve.status();
    assert_eq!(status["full_pass"]["last_converted"], 4, "{status:#}");
    assert_eq!(status["batch"]["images"], json!([]), "{status:#}");
    assert_eq!(serve.metric("ducc_images_converted_total"), 4.0);
    assert_eq!(serve.metric("ducc_revisions_total"), 5.0);
    let reference = Work::local_reference(&inputs);
    convert_support::scan(&reference.repo()).assert_same_as(
        &convert_support::scan(&work.repo()),
        &convert_support::run_options(),
        "local publisher",
        "serve's batched full pass",
    );

    // A notified image with nothing else to do is published at once, on its own.
    let before = work.standin_log().len();
    push_tags(&name, &["1.4"]);
    serve.notify_ok(
        "/notify/distribution",
        &push_envelope(registry.host(), &name, "1.4"),
    );
    wait_for_marker("the notified image", &work, &format!("{name}:1.4"));
    wait_until("its result", || {
        serve.metric("ducc_images_converted_total") >= 5.0
    });
    assert_eq!(standin_calls(&work, before, "ingest -k -t"), 1);
    assert_eq!(standin_calls(&work, before, "transaction "), 1);
    assert_eq!(serve.metric("ducc_revisions_total"), 7.0);
    let log = serve.stop();
    assert!(log.contains("waiting for its batch's commit"), "{log}");
}

#[test]
fn in_serve_a_failed_batch_commit_fails_its_images_and_their_retries_convert_them() {
    let registry = Registry::anonymous();
    let name = unique_repo("serve-batch-fails");
    let tags = ["2.0", "2.1", "2.2"];
    let inputs = push_tags(&name, &tags);
    let work = Work::new(Backend::Cvmfs);
    let fail = work.fail_next("transaction", "simulated: cannot open the transaction");
    work.wishlist(&[format!("http://{}/{name}:2.*", registry.host())], "");
    let serve = Serve::start(
        &work,
        "127.0.0.1:0",
        Some("tok-batch"),
        &["--layer-whiteouts", "oci", "--batch", "10"],
    );
    serve.first_pass();
    let status = serve.status();
    assert_eq!(status["full_pass"]["last_failed"], 3, "{status:#}");
    assert!(!fail.exists(), "the failure was used");
    let failed: Vec<&serde_json::Value> = status["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["outcome"] == "failed")
        .collect();
    // The pass's three images failed with their batch; retries (batches of their own) may
    // have failed since.
    let of_the_pass = failed
        .iter()
        .filter(|r| {
            r["error"]
                .as_str()
                .unwrap()
                .contains("the commit of its batch of 3 images failed")
        })
        .count();
    assert_eq!(of_the_pass, 3, "{status:#}");
    for result in failed {
        assert_eq!(result["step"], "marker", "{status:#}");
        let error = result["error"].as_str().unwrap();
        assert!(
            error.contains("simulated: cannot open the transaction"),
            "{status:#}"
        );
        assert!(result["retry_in_seconds"].as_u64().is_some(), "{status:#}");
    }
    // The stand-in fails one transaction only: the retries convert them (their layers are in
    // already).
    wait_until("the retried images", || {
        tags.iter().all(|tag| {
            marker_config(&work.repo(), registry.host(), &format!("{name}:{tag}")).is_some()
        })
    });
    wait_until("their results", || {
        serve.metric("ducc_images_converted_total") >= 3.0
    });
    serve.stop();
    let reference = Work::local_reference(&inputs);
    convert_support::scan(&reference.repo()).assert_same_as(
        &convert_support::scan(&work.repo()),
        &convert_support::run_options(),
        "local publisher",
        "serve after a failed batch commit and retries",
    );
}
