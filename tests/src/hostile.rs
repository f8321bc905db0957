//! A registry that misbehaves on purpose, to check that credentials stay on their registry
//! (issue 12): a second host, and an https front that points at plain http.
//!
//! - The other host is a [`FaultProxy`] on [`OTHER_HOST_IP`] (`127.0.0.2`, loopback on Linux
//!   like every `127.x.y.z`): a different origin from everything on `127.0.0.1`. Put in front of
//!   the real registry with [`FaultProxy::set_upstream_header`] carrying the registry's
//!   credentials, it plays a storage host that serves content without the client's credentials,
//!   and its [`FaultProxy::requests`] show what the client actually sent there.
//! - [`TlsFront`] is an https server on 127.0.0.1 with a throwaway self-signed certificate
//!   (made by `openssl`), answering every request with what its handler says, e.g. a redirect to
//!   `http://127.0.0.2:…`. [`TlsFront::ca_pem`] is the certificate a client must trust.

use std::io::{BufReader, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::fault_proxy::{FaultProxy, RecordedRequest, Rule};
use crate::http::{self, AcceptLoop, Head};
use crate::tools::openssl_self_signed;

/// The address of "another host": loopback, but another origin than 127.0.0.1.
pub const OTHER_HOST_IP: &str = "127.0.0.2";

/// A [`FaultProxy`] on [`OTHER_HOST_IP`] forwarding to `upstream`.
///
/// # Panics
/// When 127.0.0.2 cannot be bound.
pub fn other_host(upstream: &str, rules: Vec<Rule>) -> FaultProxy {
    FaultProxy::start_on(OTHER_HOST_IP, upstream, rules)
}

/// What a [`TlsFront`] answers: status, header fields, body.
pub type TlsAnswer = (u16, Vec<(String, String)>, Vec<u8>);

type TlsHandler = dyn Fn(&RecordedRequest) -> TlsAnswer + Send + Sync;

/// An https server on 127.0.0.1 answering each request with its handler; stops on drop.
pub struct TlsFront {
    ca_pem: Vec<u8>,
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
    server: AcceptLoop,
    _dir: tempfile::TempDir,
}

impl TlsFront {
    /// Makes a certificate for 127.0.0.1 and starts serving on a free port.
    ///
    /// # Panics
    /// When `openssl` is missing or fails, or the server cannot start.
    pub fn start(handler: impl Fn(&RecordedRequest) -> TlsAnswer + Send + Sync + 'static) -> Self {
        let dir = tempfile::tempdir().expect("make TLS front directory");
        let (cert_path, key_path) = self_signed_certificate(dir.path());
        let ca_pem = std::fs::read(&cert_path).expect("read TLS certificate");
        let cert = pem_block(&ca_pem, "CERTIFICATE");
        let key = pem_block(
            &std::fs::read(&key_path).expect("read TLS key"),
            "PRIVATE KEY",
        );
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS protocol versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![rustls::pki_types::CertificateDer::from(cert)],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
        )
        .expect("TLS server configuration");
        let config = Arc::new(config);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let server = {
            let requests = Arc::clone(&requests);
            // One connection at a time: the tests send one request at a time.
            AcceptLoop::start("tls-front", move |stream| {
                let _ = serve_tls(stream, &config, &handler, &requests);
            })
        };
        TlsFront {
            ca_pem,
            requests,
            server,
            _dir: dir,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> &str {
        self.server.addr()
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.server.addr())
    }

    /// The server's certificate (PEM), to trust as the only root.
    pub fn ca_pem(&self) -> &[u8] {
        &self.ca_pem
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve_tls(
    stream: TcpStream,
    config: &Arc<rustls::ServerConfig>,
    handler: &TlsHandler,
    requests: &Mutex<Vec<RecordedRequest>>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let tcp = stream.try_clone()?;
    let connection =
        rustls::ServerConnection::new(Arc::clone(config)).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(connection, stream);
    let head: Head = {
        let mut reader = BufReader::new(&mut tls);
        match http::read_head(&mut reader)? {
            Some(head) => head,
            None => return Ok(()),
        }
    };
    let (method, target) = head.request_parts();
    let request = RecordedRequest {
        method: method.to_owned(),
        target: target.to_owned(),
        headers: head.headers.clone(),
        action: crate::Action::Forward,
    };
    requests.lock().unwrap().push(request.clone());
    let (status, headers, body) = handler(&request);
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    http::write_response(&mut tls, status, "Answer", &headers, &body)?;
    tls.conn.send_close_notify();
    tls.flush()?;
    let _ = tcp.shutdown(Shutdown::Both);
    Ok(())
}

/// A self-signed end-entity certificate for `IP:127.0.0.1` and its PKCS#8 key, in `dir`.
fn self_signed_certificate(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let config = dir.join("openssl.cnf");
    // CA:FALSE: webpki refuses a CA certificate as a server's own.
    std::fs::write(
        &config,
        "[req]\ndistinguished_name = dn\nx509_extensions = ext\nprompt = no\n\
         [dn]\nCN = 127.0.0.1\n\
         [ext]\nsubjectAltName = IP:127.0.0.1\nbasicConstraints = critical,CA:FALSE\n\
         keyUsage = critical,digitalSignature\nextendedKeyUsage = serverAuth\n",
    )
    .expect("write openssl config");
    let (cert, key) = (dir.join("front.crt"), dir.join("front.key"));
    openssl_self_signed(
        "the TLS certificate",
        &["ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
        &["-config".as_ref(), config.as_os_str()],
        &cert,
        &key,
    );
    (cert, key)
}

/// The DER bytes of the first `-----BEGIN {label}-----` block of `pem`.
fn pem_block(pem: &[u8], label: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(pem);
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body: String = text
        .split(&begin)
        .nth(1)
        .and_then(|rest| rest.split(&end).next())
        .unwrap_or_else(|| panic!("no {label} block in the PEM"))
        .lines()
        .map(str::trim)
        .collect();
    STANDARD.decode(body).expect("PEM body is base64")
}
