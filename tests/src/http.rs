//! Just enough HTTP/1.1 for the test servers: an accept loop on loopback, reading a message head,
//! percent-decoding a query, and a tiny blocking GET used to wait for servers to come up.

use std::io::{self, BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Longest message head the test servers accept; real clients send a few hundred bytes.
const MAX_HEAD: usize = 64 * 1024;

/// The head of an HTTP/1.1 message: its first line and its header fields in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Request line (`GET /v2/ HTTP/1.1`) or status line (`HTTP/1.1 200 OK`).
    pub first_line: String,
    /// Header fields as sent, names in their original case.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Replaces every field called `name` by one with `value`.
    pub fn set_header(&mut self, name: &str, value: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_owned(), value.to_owned()));
    }

    /// The three words of a request line: method, target, version.
    pub fn request_parts(&self) -> (&str, &str) {
        let mut words = self.first_line.split(' ');
        let method = words.next().unwrap_or("");
        let target = words.next().unwrap_or("");
        (method, target)
    }

    /// Status code of a status line, 0 when it does not parse.
    pub fn status(&self) -> u16 {
        self.first_line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0)
    }

    /// The head as bytes on the wire, blank line included.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(self.first_line.as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// Reads one message head; `Ok(None)` when the peer closed the connection before sending one.
pub fn read_head<R: BufRead>(reader: &mut R) -> io::Result<Option<Head>> {
    let mut first_line = String::new();
    let mut total = 0;
    loop {
        first_line.clear();
        let n = reader.read_line(&mut first_line)?;
        if n == 0 {
            return Ok(None);
        }
        total += n;
        // RFC 9112 lets a server ignore empty lines before a request line.
        if !first_line.trim().is_empty() {
            break;
        }
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        total += n;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "message head cut short",
            ));
        }
        if total > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "message head too long",
            ));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "header line without ':'"))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    Ok(Some(Head {
        first_line: first_line.trim_end_matches(['\r', '\n']).to_owned(),
        headers,
    }))
}

/// Decodes `%XX` escapes and `+` (a space in query strings).
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits a request target's query into decoded `(key, value)` pairs, in order.
pub fn query_pairs(target: &str) -> Vec<(String, String)> {
    let Some((_, query)) = target.split_once('?') else {
        return Vec::new();
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

/// Writes a complete response with `Connection: close` and the given body.
pub fn write_response(
    stream: &mut impl Write,
    status: u16,
    reason: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<()> {
    let mut head = Head {
        first_line: format!("HTTP/1.1 {status} {reason}"),
        headers: Vec::new(),
    };
    for (name, value) in headers {
        head.headers.push(((*name).to_owned(), (*value).to_owned()));
    }
    head.set_header("Content-Length", &body.len().to_string());
    head.set_header("Connection", "close");
    stream.write_all(&head.to_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

/// Sends `GET path` to `host` ("127.0.0.1:PORT") and returns the status code, or the I/O error.
pub fn get_status(host: &str, path: &str, timeout: Duration) -> io::Result<u16> {
    get(host, path, &[], timeout).map(|(head, _)| head.status())
}

/// Sends `GET target` with extra `headers` to `host` and reads the whole response
/// (the request asks for `Connection: close`, so the body ends at end of stream).
pub fn get(
    host: &str,
    target: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> io::Result<(Head, Vec<u8>)> {
    let mut stream = TcpStream::connect(host)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut request = Head {
        first_line: format!("GET {target} HTTP/1.1"),
        headers: vec![("Host".to_owned(), host.to_owned())],
    };
    for (name, value) in headers {
        request
            .headers
            .push(((*name).to_owned(), (*value).to_owned()));
    }
    request.set_header("Connection", "close");
    stream.write_all(&request.to_bytes())?;
    let mut reader = io::BufReader::new(stream);
    let head = read_head(&mut reader)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no response"))?;
    let mut body = Vec::new();
    reader.take(64 << 20).read_to_end(&mut body)?;
    Ok((head, body))
}

/// A thread serving the connections of a free port of 127.0.0.1 one at a time, until dropped
/// (the drop stops it and joins the thread).
pub struct AcceptLoop {
    addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AcceptLoop {
    /// Binds a free port of 127.0.0.1 and hands each connection to `serve`, in turn, on a
    /// thread called `name`.
    ///
    /// # Panics
    /// When the port cannot be bound or the thread cannot be started.
    pub fn start(name: &str, mut serve: impl FnMut(TcpStream) + Send + 'static) -> AcceptLoop {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("bind a port for the {name}: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("address of the {name}: {e}"))
            .to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || {
                    for stream in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        if let Ok(stream) = stream {
                            serve(stream);
                        }
                    }
                })
                .unwrap_or_else(|e| panic!("spawn the {name} thread: {e}"))
        };
        AcceptLoop {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

impl Drop for AcceptLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
