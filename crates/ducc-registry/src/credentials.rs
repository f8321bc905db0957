//! Where registry credentials come from: explicit logins, the `DUCC_AUTH_REGISTRIES` variables,
//! and docker's `config.json` (inline `auths`, `credHelpers`, `credsStore`).
//!
//! The environment is an [`Environment`] value rather than the process environment, so tests and
//! embedders decide exactly what is visible (including the `PATH` used to find credential helpers).

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;

use crate::error::Error;

/// A snapshot of environment variables.
#[derive(Clone, Default)]
pub struct Environment {
    vars: BTreeMap<String, String>,
}

impl Environment {
    /// The current process environment (variables that are not UTF-8 are left out).
    pub fn from_process() -> Self {
        Environment {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }

    /// Exactly these variables.
    pub fn from_vars<K: Into<String>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Environment {
            vars: vars
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// Adds or replaces one variable.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.vars.insert(key.into(), value.into());
        self
    }

    /// One variable, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(String::as_str)
    }

    /// One variable, if set and not empty.
    fn non_empty(&self, key: &str) -> Option<&str> {
        self.get(key).filter(|v| !v.is_empty())
    }
}

impl fmt::Debug for Environment {
    /// Names only: values may be passwords.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.vars.keys()).finish()
    }
}

/// A user name and password (or token) for one registry. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    username: String,
    password: String,
}

impl Login {
    /// A login.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Login {
            username: username.into(),
            password: password.into(),
        }
    }

    /// The user name.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The password or token.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The value of an `Authorization: Basic ...` header.
    pub(crate) fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A pull-through proxy from `DUCC_<R>_PROXY=host[/path]`: requests for the matching registry go to
/// `scheme://host/v2/path/<repository>/...` instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullThroughProxy {
    host: String,
    path_prefix: Option<String>,
}

impl PullThroughProxy {
    fn parse(text: &str) -> Self {
        let text = text
            .trim()
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        match text.split_once('/') {
            Some((host, path)) if !path.is_empty() => PullThroughProxy {
                host: host.to_owned(),
                path_prefix: Some(path.trim_matches('/').to_owned()),
            },
            Some((host, _)) => PullThroughProxy {
                host: host.to_owned(),
                path_prefix: None,
            },
            None => PullThroughProxy {
                host: text.to_owned(),
                path_prefix: None,
            },
        }
    }

    /// The proxy's `host[:port]`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The path put in front of the repository, if any.
    pub fn path_prefix(&self) -> Option<&str> {
        self.path_prefix.as_deref()
    }

    /// The repository path as the proxy knows it.
    pub fn repository_path(&self, repository: &str) -> String {
        match &self.path_prefix {
            Some(prefix) => format!("{prefix}/{repository}"),
            None => repository.to_owned(),
        }
    }
}

/// One `DUCC_AUTH_REGISTRIES` entry.
#[derive(Debug, Clone)]
struct DuccRegistry {
    name: String,
    ident: String,
    login: Option<Login>,
    proxy: Option<PullThroughProxy>,
}

/// Docker's `config.json`, the parts that hold credentials.
#[derive(Debug, Clone, Default, serde::Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Clone, Default, serde::Deserialize)]
struct DockerAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

impl fmt::Debug for DockerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerAuth")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// All credential sources, consulted per registry host in this order: explicit logins
/// ([`Credentials::with_login`]), `DUCC_AUTH_REGISTRIES`, docker `config.json`.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    logins: Vec<(String, Login)>,
    ducc: Vec<DuccRegistry>,
    docker: Option<(PathBuf, DockerConfig)>,
    env: Environment,
}

impl Credentials {
    /// No credentials at all: anonymous access only.
    pub fn anonymous() -> Self {
        Credentials::default()
    }

    /// Reads `DUCC_AUTH_REGISTRIES` with `DUCC_<R>_IDENT/_USER/_PASS/_PROXY`, and docker's
    /// `config.json` from `$DOCKER_CONFIG` or `$HOME/.docker` (a missing file is no credentials).
    /// Credential helpers are looked up later, on first use, through this environment's `PATH`.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Credentials`] when a `DUCC_<R>_IDENT` is missing, when both user and
    /// password (or a proxy) are missing, or when `config.json` exists but cannot be read or parsed.
    pub fn from_environment(env: &Environment) -> Result<Self, Error> {
        let mut ducc = Vec::new();
        for name in env
            .get("DUCC_AUTH_REGISTRIES")
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            let var = |suffix: &str| env.non_empty(&format!("DUCC_{name}_{suffix}"));
            let ident = var("IDENT").ok_or_else(|| {
                Error::credentials(format!(
                    "DUCC_AUTH_REGISTRIES names {name:?} but DUCC_{name}_IDENT is not set"
                ))
            })?;
            let proxy = var("PROXY").map(PullThroughProxy::parse);
            let login = match (var("USER"), var("PASS")) {
                (Some(user), Some(pass)) => Some(Login::new(user, pass)),
                _ if proxy.is_some() => None,
                _ => {
                    return Err(Error::credentials(format!(
                        "DUCC_{name}_USER and DUCC_{name}_PASS (or DUCC_{name}_PROXY) must be set"
                    )));
                }
            };
            ducc.push(DuccRegistry {
                name: name.to_owned(),
                ident: ident.to_owned(),
                login,
                proxy,
            });
        }
        let config_dir = env
            .non_empty("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| env.non_empty("HOME").map(|h| Path::new(h).join(".docker")));
        let docker = match config_dir {
            Some(dir) => read_docker_config(&dir.join("config.json"))?,
            None => None,
        };
        Ok(Credentials {
            logins: Vec::new(),
            ducc,
            docker,
            env: env.clone(),
        })
    }

    /// Adds a login for one registry host, consulted before every other source.
    pub fn with_login(mut self, registry: impl Into<String>, login: Login) -> Self {
        self.logins.push((registry.into(), login));
        self
    }

    /// The pull-through proxy configured for a registry host, if any.
    pub fn proxy_for(&self, registry: &str) -> Option<&PullThroughProxy> {
        self.ducc
            .iter()
            .find(|entry| registry.contains(&entry.ident))
            .and_then(|entry| entry.proxy.as_ref())
    }

    /// The login for a registry host, if any source has one.
    ///
    /// A `DUCC_<R>` entry with a proxy gives no login (as upstream: requests go to the proxy
    /// anonymously, or with whatever docker's config holds for the proxy host).
    ///
    /// # Errors
    /// [`crate::ErrorKind::Credentials`] when a credential helper fails or answers garbage.
    pub fn login_for(&self, registry: &str) -> Result<Option<Login>, Error> {
        if let Some((_, login)) = self.logins.iter().find(|(host, _)| host == registry) {
            return Ok(Some(login.clone()));
        }
        if let Some(entry) = self.ducc.iter().find(|e| registry.contains(&e.ident))
            && entry.proxy.is_none()
        {
            tracing::debug!(registry, source = %entry.name, "using DUCC_AUTH_REGISTRIES login");
            return Ok(entry.login.clone());
        }
        let Some((path, config)) = &self.docker else {
            return Ok(None);
        };
        let wanted = normalize_registry_key(registry);
        if let Some((key, helper)) = config
            .cred_helpers
            .iter()
            .find(|(key, _)| normalize_registry_key(key) == wanted)
        {
            return run_credential_helper(&self.env, helper, key);
        }
        if let Some((key, auth)) = config
            .auths
            .iter()
            .find(|(key, _)| normalize_registry_key(key) == wanted)
            && let Some(login) = inline_login(auth).map_err(|detail| {
                Error::credentials(format!("{}: auths[{key:?}]: {detail}", path.display()))
            })?
        {
            return Ok(Some(login));
        }
        if let Some(store) = &config.creds_store {
            let server = if wanted == "docker.io" {
                "https://index.docker.io/v1/"
            } else {
                registry
            };
            return run_credential_helper(&self.env, store, server);
        }
        Ok(None)
    }
}

fn read_docker_config(path: &Path) -> Result<Option<(PathBuf, DockerConfig)>, Error> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(
                Error::credentials(format!("cannot read {}", path.display())).with_source(e),
            );
        }
    };
    let config: DockerConfig = serde_json::from_slice(&bytes).map_err(|e| {
        Error::credentials(format!("cannot parse {}", path.display())).with_source(e)
    })?;
    Ok(Some((path.to_owned(), config)))
}

fn inline_login(auth: &DockerAuth) -> Result<Option<Login>, &'static str> {
    if let Some(encoded) = auth.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| "`auth` is not base64")?;
        let text = String::from_utf8(decoded).map_err(|_| "`auth` is not UTF-8")?;
        let (user, pass) = text.split_once(':').ok_or("`auth` is not user:password")?;
        return Ok(Some(Login::new(user, pass)));
    }
    match (&auth.username, &auth.password) {
        (Some(user), Some(pass)) if !user.is_empty() => Ok(Some(Login::new(user, pass))),
        _ => Ok(None),
    }
}

/// `https://index.docker.io/v1/` → `docker.io`; `http://host:5000/x` → `host:5000`.
fn normalize_registry_key(key: &str) -> String {
    let key = key
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = key.split('/').next().unwrap_or(key).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_owned()
        }
        _ => host,
    }
}

/// Finds `name` in the environment's `PATH` (not the process's).
fn find_in_path(env: &Environment, name: &str) -> Option<PathBuf> {
    let path = env.get("PATH")?;
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Runs `docker-credential-<helper> get` with the server URL on stdin.
fn run_credential_helper(
    env: &Environment,
    helper: &str,
    server: &str,
) -> Result<Option<Login>, Error> {
    let program = format!("docker-credential-{helper}");
    if helper.is_empty() || helper.contains('/') {
        return Err(Error::credentials(format!(
            "invalid credential helper name {helper:?}"
        )));
    }
    let path = find_in_path(env, &program)
        .ok_or_else(|| Error::credentials(format!("{program} not found in PATH")))?;
    let mut command = Command::new(&path);
    command
        .arg("get")
        .env_clear()
        .envs(
            [
                "PATH",
                "HOME",
                "USER",
                "XDG_RUNTIME_DIR",
                "DBUS_SESSION_BUS_ADDRESS",
            ]
            .iter()
            .filter_map(|k| env.get(k).map(|v| (*k, v))),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| Error::credentials(format!("cannot run {program}")).with_source(e))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading stdin gives a broken pipe; its exit status says more.
        let _ = stdin.write_all(server.as_bytes());
    }
    let output = child
        .wait_with_output()
        .map_err(|e| Error::credentials(format!("cannot run {program}")).with_source(e))?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stdout).to_ascii_lowercase()
            + &String::from_utf8_lossy(&output.stderr).to_ascii_lowercase();
        if said.contains("credentials not found") {
            tracing::debug!(helper = %program, server, "credential helper has no entry");
            return Ok(None);
        }
        return Err(Error::credentials(format!(
            "{program} get for {server} failed ({})",
            output.status
        )));
    }
    #[derive(serde::Deserialize)]
    struct HelperReply {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let reply: HelperReply = serde_json::from_slice(&output.stdout).map_err(|_| {
        Error::credentials(format!(
            "{program} get for {server} did not print credentials JSON"
        ))
    })?;
    if reply.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Login::new(reply.username, reply.secret)))
}

/// The environment variable holding the password that pushes thin images.
pub const OUTPUT_PASSWORD_VAR: &str = "DUCC_OUTPUT_REGISTRY_PASS";
/// Older names of [`OUTPUT_PASSWORD_VAR`], still read, with a deprecation warning.
pub const DEPRECATED_OUTPUT_PASSWORD_VARS: [&str; 2] = [
    "DUCC_DOCKER_REGISTRY_PASS",
    "DOCKER2CVMFS_DOCKER_REGISTRY_PASS",
];

/// The login that pushes thin images as `user` (a wish list's `user`): the password from
/// `DUCC_OUTPUT_REGISTRY_PASS` (or, with a warning, its older names). `None` when `user` is
/// empty or no password is set, in which case the client's other credentials (docker's
/// `config.json`) or anonymous access apply.
pub fn output_login(user: &str, env: &Environment) -> Option<Login> {
    if user.is_empty() {
        return None;
    }
    if let Some(password) = env.get(OUTPUT_PASSWORD_VAR) {
        return Some(Login::new(user, password));
    }
    DEPRECATED_OUTPUT_PASSWORD_VARS.iter().find_map(|var| {
        env.get(var).map(|password| {
            tracing::warn!("{var} is deprecated: set {OUTPUT_PASSWORD_VAR} instead");
            Login::new(user, password)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn env(vars: &[(&str, &str)]) -> Environment {
        Environment::from_vars(vars.iter().copied())
    }

    #[test]
    fn ducc_auth_registries_gives_login_by_ident_substring() {
        let creds = Credentials::from_environment(&env(&[
            ("DUCC_AUTH_REGISTRIES", "GITLAB, HUB"),
            ("DUCC_GITLAB_IDENT", "gitlab-registry.cern.ch"),
            ("DUCC_GITLAB_USER", "alice"),
            ("DUCC_GITLAB_PASS", "s3cret"),
            ("DUCC_HUB_IDENT", "docker.io"),
            ("DUCC_HUB_USER", "bob"),
            ("DUCC_HUB_PASS", "pw"),
        ]))
        .unwrap();
        let login = creds
            .login_for("gitlab-registry.cern.ch:443")
            .unwrap()
            .unwrap();
        assert_eq!((login.username(), login.password()), ("alice", "s3cret"));
        let hub = creds.login_for("registry-1.docker.io").unwrap().unwrap();
        assert_eq!(hub.username(), "bob");
        assert_eq!(creds.login_for("quay.io").unwrap(), None);
    }

    #[test]
    fn ducc_entry_without_ident_is_an_error() {
        let err = Credentials::from_environment(&env(&[
            ("DUCC_AUTH_REGISTRIES", "X"),
            ("DUCC_X_USER", "u"),
            ("DUCC_X_PASS", "p"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("DUCC_X_IDENT"), "{err}");
    }

    #[test]
    fn ducc_entry_without_password_or_proxy_is_an_error() {
        let err = Credentials::from_environment(&env(&[
            ("DUCC_AUTH_REGISTRIES", "X"),
            ("DUCC_X_IDENT", "reg"),
            ("DUCC_X_USER", "u"),
        ]))
        .unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Credentials { .. }));
        assert!(err.to_string().contains("DUCC_X_PASS"), "{err}");
    }

    #[test]
    fn ducc_proxy_rewrites_and_gives_no_login() {
        let creds = Credentials::from_environment(&env(&[
            ("DUCC_AUTH_REGISTRIES", "HUB"),
            ("DUCC_HUB_IDENT", "docker.io"),
            ("DUCC_HUB_PROXY", "mirror.local:5000/cache/hub"),
            ("DUCC_HUB_USER", "u"),
            ("DUCC_HUB_PASS", "p"),
        ]))
        .unwrap();
        let proxy = creds.proxy_for("registry-1.docker.io").unwrap();
        assert_eq!(proxy.host(), "mirror.local:5000");
        assert_eq!(
            proxy.repository_path("library/ubuntu"),
            "cache/hub/library/ubuntu"
        );
        assert_eq!(creds.login_for("registry-1.docker.io").unwrap(), None);
        assert!(creds.proxy_for("quay.io").is_none());
    }

    fn write_config(dir: &Path, json: &str) {
        std::fs::write(dir.join("config.json"), json).unwrap();
    }

    #[test]
    fn docker_config_auth_field_and_username_password_both_work() {
        let dir = tempfile::tempdir().unwrap();
        let encoded = base64::engine::general_purpose::STANDARD.encode("carol:pa:ss");
        write_config(
            dir.path(),
            &format!(
                r#"{{"auths": {{
                    "https://index.docker.io/v1/": {{"auth": "{encoded}"}},
                    "http://127.0.0.1:5000": {{"username": "dave", "password": "pw2"}}
                }}}}"#
            ),
        );
        let creds =
            Credentials::from_environment(&env(&[("DOCKER_CONFIG", dir.path().to_str().unwrap())]))
                .unwrap();
        let hub = creds.login_for("docker.io").unwrap().unwrap();
        assert_eq!((hub.username(), hub.password()), ("carol", "pa:ss"));
        let local = creds.login_for("127.0.0.1:5000").unwrap().unwrap();
        assert_eq!((local.username(), local.password()), ("dave", "pw2"));
        assert_eq!(creds.login_for("127.0.0.1:5001").unwrap(), None);
    }

    #[test]
    fn docker_config_is_found_under_home() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".docker")).unwrap();
        write_config(
            &home.path().join(".docker"),
            r#"{"auths": {"reg.io": {"username": "e", "password": "f"}}}"#,
        );
        let creds = Credentials::from_environment(&env(&[("HOME", home.path().to_str().unwrap())]))
            .unwrap();
        assert_eq!(creds.login_for("reg.io").unwrap().unwrap().username(), "e");
    }

    #[test]
    fn unparsable_docker_config_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), "{not json");
        let err =
            Credentials::from_environment(&env(&[("DOCKER_CONFIG", dir.path().to_str().unwrap())]))
                .unwrap_err();
        assert!(err.to_string().contains("config.json"), "{err}");
    }

    #[test]
    fn bad_base64_auth_is_an_error_without_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        write_config(
            dir.path(),
            r#"{"auths": {"reg.io": {"auth": "!!notbase64!!"}}}"#,
        );
        let creds =
            Credentials::from_environment(&env(&[("DOCKER_CONFIG", dir.path().to_str().unwrap())]))
                .unwrap();
        let err = creds.login_for("reg.io").unwrap_err();
        assert!(err.to_string().contains("not base64"), "{err}");
        assert!(!err.to_string().contains("notbase64"), "{err}");
    }

    /// Writes `docker-credential-<name>` into `bin` answering for one server.
    fn write_helper(bin: &Path, name: &str, server: &str, user: &str, secret: &str) {
        use std::os::unix::fs::PermissionsExt;
        let path = bin.join(format!("docker-credential-{name}"));
        let script = format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 3\nread -r server\n\
             if [ \"$server\" = \"{server}\" ]; then\n\
             printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{secret}\"}}' \"$server\"\n\
             else\necho 'credentials not found in native keychain'; exit 1\nfi\n"
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn cred_helper_and_creds_store_run_from_the_injected_path() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        write_helper(&bin, "x", "helped.io", "hu", "hs");
        write_helper(&bin, "store", "stored.io", "su", "ss");
        write_config(
            dir.path(),
            r#"{"credHelpers": {"helped.io": "x"}, "credsStore": "store"}"#,
        );
        let creds = Credentials::from_environment(&env(&[
            ("DOCKER_CONFIG", dir.path().to_str().unwrap()),
            ("PATH", &format!("{}:/usr/bin:/bin", bin.display())),
        ]))
        .unwrap();
        let helped = creds.login_for("helped.io").unwrap().unwrap();
        assert_eq!((helped.username(), helped.password()), ("hu", "hs"));
        let stored = creds.login_for("stored.io").unwrap().unwrap();
        assert_eq!((stored.username(), stored.password()), ("su", "ss"));
        assert_eq!(
            creds.login_for("other.io").unwrap(),
            None,
            "store says not found"
        );
    }

    #[test]
    fn missing_cred_helper_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), r#"{"credHelpers": {"helped.io": "absent"}}"#);
        let creds = Credentials::from_environment(&env(&[
            ("DOCKER_CONFIG", dir.path().to_str().unwrap()),
            ("PATH", dir.path().to_str().unwrap()),
        ]))
        .unwrap();
        let err = creds.login_for("helped.io").unwrap_err();
        assert!(
            err.to_string().contains("docker-credential-absent"),
            "{err}"
        );
    }

    #[test]
    fn explicit_login_wins_over_every_other_source() {
        let creds = Credentials::from_environment(&env(&[
            ("DUCC_AUTH_REGISTRIES", "R"),
            ("DUCC_R_IDENT", "reg.io"),
            ("DUCC_R_USER", "envuser"),
            ("DUCC_R_PASS", "envpass"),
        ]))
        .unwrap()
        .with_login("reg.io", Login::new("pusher", "pushpass"));
        assert_eq!(
            creds.login_for("reg.io").unwrap().unwrap().username(),
            "pusher"
        );
    }

    #[test]
    fn debug_output_never_shows_passwords() {
        let login = Login::new("u", "topsecret");
        let environment = env(&[("DUCC_R_PASS", "topsecret")]);
        assert!(!format!("{login:?}").contains("topsecret"));
        assert!(!format!("{environment:?}").contains("topsecret"));
    }

    #[test]
    fn output_password_comes_from_the_current_variable_first() {
        let env = env(&[
            (OUTPUT_PASSWORD_VAR, "new"),
            ("DUCC_DOCKER_REGISTRY_PASS", "old"),
        ]);
        let login = output_login("alice", &env).unwrap();
        assert_eq!((login.username(), login.password()), ("alice", "new"));
    }

    #[test]
    fn deprecated_output_password_variables_are_still_read_in_order() {
        let both = env(&[
            ("DOCKER2CVMFS_DOCKER_REGISTRY_PASS", "oldest"),
            ("DUCC_DOCKER_REGISTRY_PASS", "old"),
        ]);
        assert_eq!(output_login("alice", &both).unwrap().password(), "old");
        let oldest = env(&[("DOCKER2CVMFS_DOCKER_REGISTRY_PASS", "oldest")]);
        assert_eq!(output_login("alice", &oldest).unwrap().password(), "oldest");
    }

    #[test]
    fn no_output_user_or_no_password_means_no_output_login() {
        assert!(output_login("", &env(&[(OUTPUT_PASSWORD_VAR, "pw")])).is_none());
        assert!(output_login("alice", &env(&[])).is_none());
    }
}
