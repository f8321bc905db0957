//! The real CNCF distribution registry (`docker-registry serve`), started on 127.0.0.1.
//!
//! Three flavours: [`Registry::anonymous`], [`Registry::basic_auth`] (htpasswd, bcrypt) and
//! [`Registry::token_auth`] (`auth: token` backed by the in-process [`TokenIssuer`]). Each returns
//! one instance per test process, started on first use, so tests share it and must use distinct
//! repository names ([`unique_repo`]). A test that needs a registry of its own (to count
//! requests, to tamper with storage) calls [`Registry::start`] and gets a private instance that
//! stops when dropped.
//!
//! No process outlives the test process: the registry runs under a small `sh` watchdog whose
//! stdin is a pipe held by the test process. When the [`Registry`] is dropped, or the test
//! process ends in any way (statics are never dropped, a test may panic or be killed), the pipe
//! closes, and the watchdog kills the registry and removes its temporary directory.

use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::token_issuer::{self, TokenIssuer};
use crate::tools::require_tool;
use crate::{Credentials, http};

/// How a registry authenticates its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// No authentication: anyone may pull and push.
    Anonymous,
    /// `auth: htpasswd` with one bcrypt user; the registry answers `WWW-Authenticate: Basic`.
    BasicAuth,
    /// `auth: token`: the registry answers `WWW-Authenticate: Bearer` pointing at a [`TokenIssuer`].
    TokenAuth,
}

/// A running registry; see the module documentation.
pub struct Registry {
    flavour: Flavour,
    host: String,
    dir: PathBuf,
    credentials: Option<Credentials>,
    issuer: Option<TokenIssuer>,
    watchdog: Child,
    // Dropping this closes the watchdog's stdin, which stops the registry.
    lifeline: Option<ChildStdin>,
}

/// Seconds the token issuer's tokens stay valid.
const TOKEN_LIFETIME_SECS: u64 = 300;

/// Longest wait for a registry to answer `/v2/` after start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Kills the registry and removes its directory once stdin closes. `$1` registry binary,
/// `$2` config, `$3` directory to remove.
const WATCHDOG: &str = r#"
"$1" serve "$2" >"$3/registry.log" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$3/registry.pid"
cat >/dev/null
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
rm -rf "$3"
"#;

impl Registry {
    /// The shared registry without authentication.
    pub fn anonymous() -> &'static Registry {
        static SHARED: OnceLock<Registry> = OnceLock::new();
        SHARED.get_or_init(|| Registry::start(Flavour::Anonymous))
    }

    /// The shared registry with htpasswd Basic authentication; see [`Registry::credentials`].
    pub fn basic_auth() -> &'static Registry {
        static SHARED: OnceLock<Registry> = OnceLock::new();
        SHARED.get_or_init(|| Registry::start(Flavour::BasicAuth))
    }

    /// The shared registry with token authentication; see [`Registry::credentials`] and
    /// [`token_issuer::PUBLIC_PREFIX`] for what anonymous clients may pull.
    pub fn token_auth() -> &'static Registry {
        static SHARED: OnceLock<Registry> = OnceLock::new();
        SHARED.get_or_init(|| Registry::start(Flavour::TokenAuth))
    }

    /// Starts a private registry of `flavour` with its own storage; it stops when dropped.
    ///
    /// # Panics
    /// When `docker-registry` (or, for the auth flavours, `htpasswd`/`openssl`) is missing, or
    /// the registry does not come up; the message includes the registry's log.
    pub fn start(flavour: Flavour) -> Registry {
        Registry::start_with_binary(flavour, &registry_binary())
    }

    /// As [`Registry::start`], with another registry binary (`DUCC_TEST_REGISTRY_BIN` sets the
    /// default), e.g. a newer distribution build.
    ///
    /// # Panics
    /// As [`Registry::start`].
    pub fn start_with_binary(flavour: Flavour, binary: &Path) -> Registry {
        Registry::start_configured(flavour, binary, "")
    }

    /// As [`Registry::start`], with `extra` YAML (top-level sections such as `notifications:`)
    /// appended to the registry's configuration.
    ///
    /// # Panics
    /// As [`Registry::start`].
    pub fn start_with_config(flavour: Flavour, extra: &str) -> Registry {
        Registry::start_configured(flavour, &registry_binary(), extra)
    }

    fn start_configured(flavour: Flavour, binary: &Path, extra: &str) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("ducc-test-registry-")
            .tempdir()
            .expect("make registry directory")
            // From here the watchdog removes the directory.
            .keep();
        let credentials = match flavour {
            Flavour::Anonymous => None,
            Flavour::BasicAuth | Flavour::TokenAuth => Some(Credentials {
                username: "ducc-tester".to_owned(),
                password: format!("pw-{}", random_hex(12)),
            }),
        };
        let issuer = (flavour == Flavour::TokenAuth).then(|| {
            TokenIssuer::start(
                &dir,
                credentials.clone().expect("token flavour has a user"),
                TOKEN_LIFETIME_SECS,
            )
        });
        let auth_section = match flavour {
            Flavour::Anonymous => String::new(),
            Flavour::BasicAuth => {
                let credentials = credentials.as_ref().expect("basic flavour has a user");
                let htpasswd_path = dir.join("htpasswd");
                write_htpasswd(&htpasswd_path, credentials);
                format!(
                    "auth:\n  htpasswd:\n    realm: ducc-test-registry\n    path: {}\n",
                    htpasswd_path.display()
                )
            }
            Flavour::TokenAuth => {
                let issuer = issuer.as_ref().expect("token flavour has an issuer");
                format!(
                    "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                    issuer.realm(),
                    token_issuer::SERVICE,
                    token_issuer::ISSUER,
                    issuer.cert_path().display()
                )
            }
        };

        // Picking a free port and handing it to another process can race with other tests;
        // a registry that lost the race exits at once, and we try again.
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let host = format!("127.0.0.1:{port}");
            let config_path = dir.join("config.yml");
            let sections = format!("{auth_section}{extra}");
            std::fs::write(&config_path, config_yaml(&dir, &host, &sections))
                .expect("write registry config");
            let _ = std::fs::remove_file(dir.join("registry.log"));
            let mut watchdog = Command::new("sh")
                .arg("-c")
                .arg(WATCHDOG)
                .arg("ducc-test-registry-watchdog")
                .arg(binary)
                .arg(&config_path)
                .arg(&dir)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                // Its own process group: a Ctrl-C to the test run reaches us, not the registry,
                // and the watchdog still cleans up when we go.
                .process_group(0)
                .spawn()
                .expect("start registry watchdog (sh)");
            let lifeline = watchdog.stdin.take();
            let mut registry = Registry {
                flavour,
                host,
                dir: dir.clone(),
                credentials: credentials.clone(),
                issuer: None,
                watchdog,
                lifeline,
            };
            match registry.wait_until_up() {
                Ok(()) => {
                    registry.issuer = issuer;
                    return registry;
                }
                Err(log) => {
                    last_log = log;
                    // Stop this attempt but keep the directory for the next one.
                    registry.stop_keeping_dir();
                    if !last_log.contains("address already in use") {
                        break;
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!("docker-registry did not start; its log:\n{last_log}");
    }

    /// The flavour this registry was started with.
    pub fn flavour(&self) -> Flavour {
        self.flavour
    }

    /// `127.0.0.1:PORT`, as used in image references.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `http://127.0.0.1:PORT`, the registry's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.host)
    }

    /// An image string for ducc: `http://127.0.0.1:PORT/{reference}` (`repo:tag`, `repo@digest`).
    pub fn image(&self, reference: &str) -> String {
        format!("http://{}/{reference}", self.host)
    }

    /// The user with pull and push rights (`None` for the anonymous flavour).
    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    /// The token issuer of the token flavour, to count token requests.
    pub fn token_issuer(&self) -> Option<&TokenIssuer> {
        self.issuer.as_ref()
    }

    /// The registry's log so far (useful in assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// Process id of the registry server, while it runs.
    pub fn process_id(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("registry.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Where the registry stores the blob (or manifest) with `digest` (`sha256:<hex>`), so tests
    /// can corrupt stored content behind the registry's back.
    pub fn stored_blob_path(&self, digest: &str) -> PathBuf {
        let (algorithm, hex) = digest.split_once(':').expect("digest is algorithm:hex");
        self.dir
            .join("storage/docker/registry/v2/blobs")
            .join(algorithm)
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    fn wait_until_up(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(status) = http::get_status(&self.host, "/v2/", Duration::from_secs(2))
                && (status == 200 || status == 401)
            {
                return Ok(());
            }
            let registry_exited = std::fs::read_to_string(self.dir.join("registry.pid"))
                .ok()
                .and_then(|pid| pid.trim().parse::<u32>().ok())
                .is_some_and(|pid| !process_alive(pid));
            if registry_exited
                || Instant::now() > deadline
                || self.watchdog.try_wait().ok().flatten().is_some()
            {
                // Give the log a moment to be flushed.
                std::thread::sleep(Duration::from_millis(100));
                return Err(self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop_keeping_dir(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("registry.pid"))
            && let Some(pid) = pid
                .trim()
                .parse::<i32>()
                .ok()
                .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
        self.lifeline = None;
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Closing the lifeline makes the watchdog kill the registry and remove the directory.
        self.lifeline = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.watchdog.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The watchdog hung: kill its whole group (it and the registry) and clean up ourselves.
        if let Some(group) = rustix::process::Pid::from_raw(self.watchdog.id() as i32) {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let _ = self.watchdog.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A repository name no other test in this process uses: `{prefix}-{pid}-{n}`.
///
/// `prefix` may contain `/` (e.g. `public/busybox` for anonymous token pulls).
pub fn unique_repo(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// Hex of `bytes` random bytes from the kernel.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut urandom| urandom.read_exact(&mut buf))
        .expect("read /dev/urandom");
    hex::encode(buf)
}

/// Whether `pid` runs: it exists and is not a zombie (the watchdog reaps it only at the end).
fn process_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) state ...`; comm may contain spaces and parentheses.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

fn registry_binary() -> PathBuf {
    match std::env::var_os("DUCC_TEST_REGISTRY_BIN") {
        Some(path) => PathBuf::from(path),
        None => require_tool("docker-registry", "docker-registry"),
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

fn write_htpasswd(path: &Path, credentials: &Credentials) {
    let htpasswd = require_tool("htpasswd", "apache2-utils");
    // -B bcrypt (the only hash the registry accepts), -b password from the command line,
    // -n print instead of updating a file.
    let output = Command::new(htpasswd)
        .args([
            "-B",
            "-b",
            "-n",
            &credentials.username,
            &credentials.password,
        ])
        .output()
        .expect("run htpasswd");
    assert!(
        output.status.success(),
        "htpasswd failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::write(path, output.stdout).expect("write htpasswd file");
}

fn config_yaml(dir: &Path, host: &str, auth_section: &str) -> String {
    format!(
        "version: 0.1\n\
         log:\n  level: info\n  formatter: text\n\
         storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n  \
         maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: {host}\n  secret: {secret}\n\
         {auth_section}",
        storage = dir.join("storage").display(),
        secret = random_hex(16),
    )
}
