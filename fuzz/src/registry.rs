//! ducc-registry's parsers of registry answers.
//!
//! The `WWW-Authenticate` and `Link` parsers are `pub(crate)` in ducc-registry, so their source
//! files (which depend on nothing else in that crate) are compiled here unchanged: the fuzzer
//! runs the very code the client runs. The manifest parser depends on the crate's error and
//! platform types, so it is reached through the nearest public API instead:
//! [`ducc_registry::Client::fetch_manifest`] against a registry on the loopback interface that
//! serves the input.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ducc_registry::{
    Client, ClientOptions, ImageName, ManifestSelection, Platform, Reference, Repository,
    RetryPolicy, Scheme,
};

#[allow(dead_code, unreachable_pub, clippy::all)]
#[path = "../../crates/ducc-registry/src/auth.rs"]
mod auth;
#[allow(dead_code, unreachable_pub, clippy::all)]
#[path = "../../crates/ducc-registry/src/link.rs"]
mod link;

/// A `WWW-Authenticate` value through the challenge parser; every parsed challenge must have a
/// scheme, and parameter lookups must not panic.
pub fn check_www_authenticate(data: &[u8]) {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(challenges) = auth::parse_challenges(header) {
        assert!(!challenges.is_empty(), "Some(empty) for {header:?}");
        for challenge in &challenges {
            assert!(!challenge.scheme.is_empty(), "empty scheme in {header:?}");
            let _ = challenge.param("realm");
            let _ = challenge.is("bearer");
        }
    }
    let _ = auth::encode_query_value(header);
}

/// A `Link` value through the `rel="next"` parser; the target must come from the header.
pub fn check_link(data: &[u8]) {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(target) = link::next_link(header) {
        assert!(header.contains(&target), "{target:?} not in {header:?}");
    }
}

/// Content types the loopback registry may announce (selected by the input's first byte).
const CONTENT_TYPES: &[Option<&str>] = &[
    None,
    Some("application/vnd.oci.image.manifest.v1+json"),
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/vnd.docker.distribution.manifest.v2+json"),
    Some("application/vnd.docker.distribution.manifest.list.v2+json"),
    Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
    Some("application/json"),
    Some("text/plain; charset=utf-8"),
];

struct Registry {
    port: u16,
    answer: Arc<Mutex<Vec<u8>>>,
    client: Client,
}

/// The loopback registry of this process: it answers every request with the current answer.
fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().expect("local address").port();
        let answer = Arc::new(Mutex::new(Vec::new()));
        let served = Arc::clone(&answer);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                serve(stream, &served);
            }
        });
        let options = ClientOptions::new()
            .retry(RetryPolicy::none())
            .connect_timeout(Duration::from_secs(2))
            .read_timeout(Duration::from_secs(2));
        Registry {
            port,
            answer,
            client: Client::new(options),
        }
    })
}

fn serve(mut stream: TcpStream, answer: &Mutex<Vec<u8>>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 1 << 16 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let response = answer.lock().map(|a| a.clone()).unwrap_or_default();
    let _ = stream.write_all(&response);
}

/// A manifest document: byte 0 picks the `Content-Type`, byte 1 whether a platform is chosen
/// (which makes the client fetch the index entry it picks, answered with the same document),
/// the rest is the body.
pub fn check_manifest(data: &[u8]) {
    let [content_type, selection, body @ ..] = data else {
        return;
    };
    let registry = registry();
    let mut response = b"HTTP/1.1 200 OK\r\nConnection: close\r\n".to_vec();
    if let Some(ct) = CONTENT_TYPES[usize::from(*content_type) % CONTENT_TYPES.len()] {
        response.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
    }
    response.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    response.extend_from_slice(body);
    *registry.answer.lock().expect("answer lock") = response;

    let repository = Repository::new(
        Scheme::Http,
        &format!("127.0.0.1:{}", registry.port),
        "fuzz/image",
    )
    .expect("repository");
    let reference = Reference::tag("latest").expect("tag");
    let image = ImageName::new(repository, reference);
    let selection = if selection % 2 == 0 {
        ManifestSelection::Index
    } else {
        ManifestSelection::Platform(Platform::linux_amd64())
    };
    if let Ok(fetched) = registry.client.fetch_manifest(&image, &selection) {
        // What the client accepted must be what was served, and consistent with itself.
        assert_eq!(fetched.bytes(), body, "served bytes changed");
        let _ = (fetched.media_type(), fetched.digest(), fetched.platform());
        if let Some(index) = fetched.index() {
            for platform in ducc_registry::available_platforms(index) {
                let _ = ducc_registry::choose_platform(index, &platform);
            }
        }
    }
}
