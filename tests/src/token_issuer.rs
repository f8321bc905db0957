//! A test-only token server for the registry's `auth: token` mode (the Docker token protocol).
//!
//! It answers `GET /token?service=..&scope=..` on 127.0.0.1. A request with the right Basic
//! credentials gets the `pull`/`push` it asks for; a request without credentials gets `pull` on
//! repositories under [`PUBLIC_PREFIX`] and nothing elsewhere (as Docker Hub does, the token then
//! simply carries no access and the registry refuses the request); a request with wrong
//! credentials gets 401. Tokens are RS256 JWTs signed with a throwaway key made by the `openssl`
//! command at start; the JWT header carries the certificate (`x5c`) the registry checks against
//! its `rootcertbundle`.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use crate::Credentials;
use crate::http::{self, AcceptLoop};
use crate::tools::openssl_self_signed;

/// Repositories under this prefix may be pulled without credentials.
pub const PUBLIC_PREFIX: &str = "public/";

/// The `service` the registry and the issuer agree on (the JWT's `aud`).
pub const SERVICE: &str = "ducc-test-registry";

/// The `issuer` the registry expects (the JWT's `iss`).
pub const ISSUER: &str = "ducc-test-token-issuer";

/// One request the issuer answered, for tests that count token fetches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// User name from Basic credentials, `None` for anonymous requests.
    pub user: Option<String>,
    /// The `scope` parameters, decoded, in order.
    pub scopes: Vec<String>,
    /// The `service` parameter.
    pub service: Option<String>,
    /// HTTP status the issuer answered with (200, or 401 for wrong credentials).
    pub status: u16,
}

/// A running token issuer; stops (and joins its thread) on drop.
pub struct TokenIssuer {
    cert_path: PathBuf,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
    server: AcceptLoop,
}

struct Signer {
    key_path: PathBuf,
    cert_der_base64: String,
    user: Credentials,
    expires_in: u64,
    counter: AtomicU64,
}

impl TokenIssuer {
    /// Makes a key and certificate in `dir` and starts answering on a free port of 127.0.0.1.
    ///
    /// `user` is the one account that gets pull and push; tokens last `expires_in` seconds.
    pub fn start(dir: &Path, user: Credentials, expires_in: u64) -> TokenIssuer {
        let key_path = dir.join("token-signing.key");
        let cert_path = dir.join("token-signing.crt");
        openssl_self_signed(
            "the token signing key",
            &["rsa:2048"],
            &["-subj".as_ref(), "/CN=ducc-test-token-issuer".as_ref()],
            &cert_path,
            &key_path,
        );
        let cert_pem = std::fs::read_to_string(&cert_path).expect("read token certificate");
        // The x5c entry is the standard-base64 DER, which is the PEM body without line breaks.
        let cert_der_base64: String = cert_pem
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect::<Vec<_>>()
            .concat();
        assert!(
            STANDARD.decode(&cert_der_base64).is_ok(),
            "certificate PEM body is not base64"
        );

        let requests = Arc::new(Mutex::new(Vec::new()));
        let signer = Signer {
            key_path,
            cert_der_base64,
            user,
            expires_in,
            counter: AtomicU64::new(0),
        };
        let server = {
            let requests = Arc::clone(&requests);
            // One request per connection, answered inline: token requests are rare and quick,
            // and the timeouts keep a silent client from blocking the others for long.
            AcceptLoop::start("token-issuer", move |stream| {
                let _ = signer.serve(stream, &requests);
            })
        };
        TokenIssuer {
            cert_path,
            requests,
            server,
        }
    }

    /// The realm URL to configure in the registry (`http://127.0.0.1:PORT/token`).
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.server.addr())
    }

    /// Path of the PEM certificate for the registry's `rootcertbundle`.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.requests.lock().unwrap().clone()
    }
}

impl Signer {
    fn serve(&self, mut stream: TcpStream, log: &Mutex<Vec<TokenRequest>>) -> std::io::Result<()> {
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let Some(head) = http::read_head(&mut reader)? else {
            return Ok(());
        };
        let (method, target) = head.request_parts();
        if method != "GET" || !(target == "/token" || target.starts_with("/token?")) {
            return http::write_response(&mut stream, 404, "Not Found", &[], b"");
        }
        let query = http::query_pairs(target);
        let scopes: Vec<String> = query
            .iter()
            .filter(|(key, _)| key == "scope")
            // Several scopes may also come space-separated in one parameter.
            .flat_map(|(_, value)| value.split(' ').map(str::to_owned).collect::<Vec<_>>())
            .filter(|scope| !scope.is_empty())
            .collect();
        let service = query
            .iter()
            .find(|(key, _)| key == "service")
            .map(|(_, v)| v.clone());
        let basic = head.header("Authorization").and_then(parse_basic);
        let (status, user) = match &basic {
            None => (200, None),
            Some((user, password))
                if *user == self.user.username && *password == self.user.password =>
            {
                (200, Some(user.clone()))
            }
            Some((user, _)) => (401, Some(user.clone())),
        };
        log.lock().unwrap().push(TokenRequest {
            user: user.clone(),
            scopes: scopes.clone(),
            service: service.clone(),
            status,
        });
        if status == 401 {
            let body =
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"wrong user name or password"}]}"#;
            return http::write_response(
                &mut stream,
                401,
                "Unauthorized",
                &[
                    ("Content-Type", "application/json"),
                    ("WWW-Authenticate", "Basic realm=\"token\""),
                ],
                body,
            );
        }
        let access: Vec<serde_json::Value> = scopes
            .iter()
            .filter_map(|scope| self.grant(scope, basic.is_some()))
            .collect();
        let token = self.sign(user.as_deref().unwrap_or(""), &access)?;
        let body = serde_json::json!({
            "token": token,
            "access_token": token,
            "expires_in": self.expires_in,
        });
        http::write_response(
            &mut stream,
            200,
            "OK",
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
    }

    /// The access entry granted for one requested scope, if any.
    fn grant(&self, scope: &str, authenticated: bool) -> Option<serde_json::Value> {
        // `repository:NAME:ACTIONS`; NAME has no ':' (a registry host is not part of it).
        let (kind, rest) = scope.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        if kind != "repository" {
            return None;
        }
        let granted: Vec<&str> = actions
            .split(',')
            .filter(|action| match *action {
                "pull" => authenticated || name.starts_with(PUBLIC_PREFIX),
                "push" => authenticated,
                _ => false,
            })
            .collect();
        if granted.is_empty() {
            return None;
        }
        Some(serde_json::json!({"type": kind, "name": name, "actions": granted}))
    }

    fn sign(&self, subject: &str, access: &[serde_json::Value]) -> std::io::Result<String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let header =
            serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [self.cert_der_base64]});
        let claims = serde_json::json!({
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": now + self.expires_in,
            "nbf": now.saturating_sub(10),
            "iat": now,
            "jti": format!("{}-{}", now, self.counter.fetch_add(1, Ordering::SeqCst)),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        // `openssl dgst -sha256 -sign` writes a PKCS#1 v1.5 signature: exactly RS256.
        let mut child = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&self.key_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(signing_input.as_bytes())?;
        let output = child.wait_with_output()?;
        if !output.status.success() || output.stdout.is_empty() {
            return Err(std::io::Error::other(format!(
                "openssl dgst -sign failed: {}",
                output.status
            )));
        }
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(&output.stdout)
        ))
    }
}

/// `Basic <base64(user:password)>` to its two parts.
fn parse_basic(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}
