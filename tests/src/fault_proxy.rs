//! A fault-injecting HTTP proxy for registry tests.
//!
//! [`FaultProxy`] listens on 127.0.0.1 and forwards each request to an upstream server (usually a
//! [`Registry`](crate::Registry)), one request per connection (it asks both sides for
//! `Connection: close`). [`Rule`]s pick requests by method and path and apply an [`Action`] to
//! the first N of them: reset the connection, cut the response body short, stall, flip a body
//! byte, or answer on the upstream's behalf (429 with `Retry-After`, 503, a redirect, any canned
//! response). Every request is recorded ([`FaultProxy::requests`]) so tests can assert what a
//! client fetched.
//!
//! Bounded: dropping the proxy shuts every connection down, wakes stalled handlers and joins all
//! of its threads.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::http::{self, Head};

/// What the proxy does with a request a [`Rule`] picked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Forward untouched (useful to let the first N matches through before a later rule).
    Forward,
    /// Reset the client connection (TCP RST) without forwarding.
    Reset,
    /// Forward, send the response head and this many body bytes, then reset the connection.
    ResetAfterBody(u64),
    /// Forward, send the response head and this many body bytes, then close cleanly (FIN):
    /// the body is shorter than its `Content-Length`.
    TruncateBody(u64),
    /// Forward, but flip every bit of the body byte at this offset.
    CorruptByte(u64),
    /// Accept the request and say nothing for this long (or until the proxy drops), then close.
    Stall(Duration),
    /// Answer without asking upstream.
    Respond {
        /// Status code.
        status: u16,
        /// Extra header fields (`Content-Length` and `Connection` are set by the proxy).
        headers: Vec<(String, String)>,
        /// Body.
        body: Vec<u8>,
    },
    /// Answer with these bytes exactly as they are (status line, headers, body), then close:
    /// for malformed heads such as a garbage `Content-Length`.
    RawResponse(Vec<u8>),
    /// Answer `307 Temporary Redirect` to this base URL followed by the request's path and query.
    Redirect(String),
    /// Serve `GET /v2/<name>/tags/list` in pages as distribution 3 and Docker Hub do (`n`,
    /// `last`, a `Link: <...>; rel="next"` header), at most this many tags per page, from the
    /// full list fetched upstream. The Debian registry (2.8) ignores `n` for tag lists, so
    /// pagination tests need this to see more than one page.
    PaginateTags(usize),
    /// As [`Action::PaginateTags`], with the `Link` target absolute on another base URL
    /// (`http://127.0.0.2:PORT`): a registry sending the client to another host for the next page.
    PaginateTagsAt {
        /// At most this many tags per page.
        limit: usize,
        /// Put in front of the `Link` target's path.
        link_base: String,
    },
    /// Forward, and in the response replace `from` by `to` in every value of header `name`
    /// (e.g. send an upload `Location` or a token `realm` to another host).
    RewriteResponseHeader {
        /// Header name, case-insensitive.
        name: String,
        /// Text to replace.
        from: String,
        /// Replacement.
        to: String,
    },
}

impl Action {
    /// A body-less answer with `status`, e.g. 503.
    pub fn status(status: u16) -> Action {
        Action::Respond {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Forward, replacing `from` by `to` in the response's `name` header.
    pub fn rewrite_response_header(name: &str, from: &str, to: &str) -> Action {
        Action::RewriteResponseHeader {
            name: name.to_owned(),
            from: from.to_owned(),
            to: to.to_owned(),
        }
    }

    /// `429 Too Many Requests` with `Retry-After: {retry_after}` (seconds or an HTTP date).
    pub fn too_many_requests(retry_after: &str) -> Action {
        Action::Respond {
            status: 429,
            headers: vec![("Retry-After".to_owned(), retry_after.to_owned())],
            body: br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#.to_vec(),
        }
    }
}

/// Picks requests by method and path and applies an [`Action`] to the first `times` of them.
#[derive(Debug, Clone)]
pub struct Rule {
    method: Option<String>,
    path_contains: Option<String>,
    with_header: Option<String>,
    action: Action,
    remaining: Option<u64>,
}

impl Rule {
    /// A rule applying `action` to every request, until narrowed with the methods below.
    pub fn new(action: Action) -> Rule {
        Rule {
            method: None,
            path_contains: None,
            with_header: None,
            action,
            remaining: None,
        }
    }

    /// Only requests with this method (`GET`, `HEAD`, ...).
    pub fn method(mut self, method: &str) -> Rule {
        self.method = Some(method.to_owned());
        self
    }

    /// Only requests whose target (path and query) contains `fragment`, e.g. `/blobs/`.
    pub fn path_contains(mut self, fragment: &str) -> Rule {
        self.path_contains = Some(fragment.to_owned());
        self
    }

    /// Only requests that carry header `name` (e.g. `Authorization`).
    pub fn with_header(mut self, name: &str) -> Rule {
        self.with_header = Some(name.to_owned());
        self
    }

    /// Only the first `n` matching requests; later ones fall through to the next rule.
    pub fn times(mut self, n: u64) -> Rule {
        self.remaining = Some(n);
        self
    }

    fn matches(&self, method: &str, target: &str, head: &Head) -> bool {
        self.remaining != Some(0)
            && self
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self
                .path_contains
                .as_deref()
                .is_none_or(|f| target.contains(f))
            && self
                .with_header
                .as_deref()
                .is_none_or(|name| head.header(name).is_some())
    }
}

/// One request the proxy saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// Method, e.g. `GET`.
    pub method: String,
    /// Request target: path and query.
    pub target: String,
    /// Header fields as the client sent them.
    pub headers: Vec<(String, String)>,
    /// The action applied.
    pub action: Action,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

struct Shared {
    upstream: String,
    /// A header set on every request sent upstream (not recorded as the client's).
    upstream_header: Mutex<Option<(String, String)>>,
    rules: Mutex<Vec<Rule>>,
    requests: Mutex<Vec<RecordedRequest>>,
    stop: AtomicBool,
    /// Live sockets by connection id, shut down when the proxy drops.
    sockets: Mutex<HashMap<u64, Vec<TcpStream>>>,
    stall_wakeup: (Mutex<()>, Condvar),
    next_id: AtomicU64,
}

/// A running proxy; see the module documentation.
pub struct FaultProxy {
    addr: String,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
    handlers: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// How long the proxy waits on a silent peer before giving up on a connection.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

impl FaultProxy {
    /// Starts a proxy on a free port of 127.0.0.1 forwarding to `upstream` (`host:port`).
    pub fn start(upstream: &str, rules: Vec<Rule>) -> FaultProxy {
        FaultProxy::start_on("127.0.0.1", upstream, rules)
    }

    /// Starts a proxy on a free port of the loopback address `ip` (e.g. `127.0.0.2`, another
    /// host as far as origins go) forwarding to `upstream`.
    ///
    /// # Panics
    /// When `ip` cannot be bound (every `127.x.y.z` is loopback on Linux).
    pub fn start_on(ip: &str, upstream: &str, rules: Vec<Rule>) -> FaultProxy {
        let listener = TcpListener::bind((ip, 0))
            .unwrap_or_else(|e| panic!("cannot bind the fault proxy on {ip}: {e}"));
        let addr = listener.local_addr().expect("proxy address").to_string();
        let shared = Arc::new(Shared {
            upstream: upstream.to_owned(),
            upstream_header: Mutex::new(None),
            rules: Mutex::new(rules),
            requests: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            sockets: Mutex::new(HashMap::new()),
            stall_wakeup: (Mutex::new(()), Condvar::new()),
            next_id: AtomicU64::new(0),
        });
        let handlers: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let shared = Arc::clone(&shared);
            let handlers = Arc::clone(&handlers);
            std::thread::Builder::new()
                .name("fault-proxy-accept".into())
                .spawn(move || {
                    for stream in listener.incoming() {
                        if shared.stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(stream) = stream else { continue };
                        let shared = Arc::clone(&shared);
                        let handler = std::thread::Builder::new()
                            .name("fault-proxy-conn".into())
                            .spawn(move || handle_connection(&shared, stream));
                        if let Ok(handler) = handler {
                            let mut handlers = handlers.lock().unwrap();
                            handlers.retain(|h| !h.is_finished());
                            handlers.push(handler);
                        }
                    }
                })
                .expect("spawn fault proxy thread")
        };
        FaultProxy {
            addr,
            shared,
            acceptor: Some(acceptor),
            handlers,
        }
    }

    /// Sets `name: value` on every request forwarded upstream from now on, e.g. the registry's
    /// `Authorization`: the proxy then stands for a storage host that serves content without the
    /// client's credentials. [`FaultProxy::requests`] still shows what the client sent.
    pub fn set_upstream_header(&self, name: &str, value: &str) {
        *self.shared.upstream_header.lock().unwrap() = Some((name.to_owned(), value.to_owned()));
    }

    /// `IP:PORT`, to use in place of the upstream's host.
    pub fn host(&self) -> &str {
        &self.addr
    }

    /// `http://IP:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the rules; requests already being handled keep their action.
    pub fn set_rules(&self, rules: Vec<Rule>) {
        *self.shared.rules.lock().unwrap() = rules;
    }

    /// Every request seen so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Requests seen so far with `method` whose path contains `fragment`.
    pub fn count(&self, method: &str, fragment: &str) -> usize {
        self.shared
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method) && r.path().contains(fragment))
            .count()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.requests.lock().unwrap().clear();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let _guard = self.shared.stall_wakeup.0.lock().unwrap();
            self.shared.stall_wakeup.1.notify_all();
        }
        for sockets in self.shared.sockets.lock().unwrap().values() {
            for socket in sockets {
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
        let _ = TcpStream::connect(&self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let handlers = std::mem::take(&mut *self.handlers.lock().unwrap());
        for handler in handlers {
            let _ = handler.join();
        }
    }
}

/// Registers sockets for shutdown on drop; unregisters when the connection ends.
struct Tracked<'a> {
    shared: &'a Shared,
    id: u64,
}

impl<'a> Tracked<'a> {
    fn new(shared: &'a Shared) -> Tracked<'a> {
        Tracked {
            shared,
            id: shared.next_id.fetch_add(1, Ordering::SeqCst),
        }
    }

    fn add(&self, socket: &TcpStream) -> io::Result<()> {
        let clone = socket.try_clone()?;
        if self.shared.stop.load(Ordering::SeqCst) {
            let _ = clone.shutdown(Shutdown::Both);
        }
        self.shared
            .sockets
            .lock()
            .unwrap()
            .entry(self.id)
            .or_default()
            .push(clone);
        Ok(())
    }
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        self.shared.sockets.lock().unwrap().remove(&self.id);
    }
}

fn handle_connection(shared: &Shared, client: TcpStream) {
    let tracked = Tracked::new(shared);
    if tracked.add(&client).is_err() {
        return;
    }
    let _ = client.set_read_timeout(Some(IO_TIMEOUT));
    let _ = client.set_write_timeout(Some(IO_TIMEOUT));
    let Ok(reader_stream) = client.try_clone() else {
        return;
    };
    let mut client_reader = BufReader::new(reader_stream);
    let Ok(Some(mut head)) = http::read_head(&mut client_reader) else {
        return;
    };
    let (method, target) = head.request_parts();
    let (method, target) = (method.to_owned(), target.to_owned());
    let action = {
        let mut rules = shared.rules.lock().unwrap();
        match rules
            .iter_mut()
            .find(|rule| rule.matches(&method, &target, &head))
        {
            Some(rule) => {
                if let Some(remaining) = rule.remaining.as_mut() {
                    *remaining -= 1;
                }
                rule.action.clone()
            }
            None => Action::Forward,
        }
    };
    shared.requests.lock().unwrap().push(RecordedRequest {
        method: method.clone(),
        target: target.clone(),
        headers: head.headers.clone(),
        action: action.clone(),
    });
    if let Some((name, value)) = shared.upstream_header.lock().unwrap().clone() {
        head.set_header(&name, &value);
    }
    let mut client = client;
    match action {
        Action::Reset => reset(&client),
        Action::Stall(duration) => {
            let (lock, wakeup) = &shared.stall_wakeup;
            let guard = lock.lock().unwrap();
            let _ =
                wakeup.wait_timeout_while(guard, duration, |_| !shared.stop.load(Ordering::SeqCst));
            let _ = client.shutdown(Shutdown::Both);
        }
        Action::Respond {
            status,
            headers,
            body,
        } => {
            drain_request_body(&head, &mut client_reader);
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            let _ = http::write_response(&mut client, status, reason(status), &headers, &body);
        }
        Action::RawResponse(bytes) => {
            drain_request_body(&head, &mut client_reader);
            let _ = client.write_all(&bytes);
            let _ = client.flush();
            let _ = client.shutdown(Shutdown::Both);
        }
        Action::Redirect(base) => {
            drain_request_body(&head, &mut client_reader);
            let location = format!("{}{}", base.trim_end_matches('/'), target);
            let _ = http::write_response(
                &mut client,
                307,
                "Temporary Redirect",
                &[("Location", location.as_str())],
                b"",
            );
        }
        Action::PaginateTags(limit) => {
            let _ = paginate_tags(&tracked, shared, &head, &target, limit, "", &mut client);
            let _ = client.shutdown(Shutdown::Both);
        }
        Action::PaginateTagsAt { limit, link_base } => {
            let _ = paginate_tags(
                &tracked,
                shared,
                &head,
                &target,
                limit,
                &link_base,
                &mut client,
            );
            let _ = client.shutdown(Shutdown::Both);
        }
        Action::Forward
        | Action::RewriteResponseHeader { .. }
        | Action::ResetAfterBody(_)
        | Action::TruncateBody(_)
        | Action::CorruptByte(_) => {
            head.set_header("Connection", "close");
            let _ = forward(&tracked, shared, &head, client_reader, client, &action);
        }
    }
}

/// Sends the request upstream, pipes the request body in a helper thread, and relays the
/// response while applying `action` to its body.
fn forward(
    tracked: &Tracked<'_>,
    shared: &Shared,
    head: &Head,
    mut client_reader: BufReader<TcpStream>,
    mut client: TcpStream,
    action: &Action,
) -> io::Result<()> {
    let mut upstream = TcpStream::connect(&shared.upstream)?;
    tracked.add(&upstream)?;
    upstream.set_read_timeout(Some(IO_TIMEOUT))?;
    upstream.set_write_timeout(Some(IO_TIMEOUT))?;
    upstream.write_all(&head.to_bytes())?;
    let request_pipe = {
        let mut upstream_writer = upstream.try_clone()?;
        std::thread::Builder::new()
            .name("fault-proxy-body".into())
            .spawn(move || {
                // Ends when the client stops sending or when the sockets are shut down below.
                let _ = io::copy(&mut client_reader, &mut upstream_writer);
            })?
    };
    let mut upstream_reader = BufReader::new(upstream.try_clone()?);
    let result = relay_response(&mut upstream_reader, &mut client, action);
    let _ = upstream.shutdown(Shutdown::Both);
    match (&result, action) {
        (Ok(true), Action::ResetAfterBody(_)) => {
            reset(&client);
            // Ends the request pipe's read without sending anything to the client.
            let _ = client.shutdown(Shutdown::Read);
        }
        _ => {
            let _ = client.flush();
            let _ = client.shutdown(Shutdown::Both);
        }
    }
    let _ = request_pipe.join();
    result.map(|_| ())
}

/// Relays one response; `Ok(true)` when the body was cut short on purpose.
fn relay_response(
    upstream: &mut BufReader<TcpStream>,
    client: &mut TcpStream,
    action: &Action,
) -> io::Result<bool> {
    let Some(mut head) = http::read_head(upstream)? else {
        return Ok(false);
    };
    if let Action::RewriteResponseHeader { name, from, to } = action {
        for (field, value) in &mut head.headers {
            if field.eq_ignore_ascii_case(name) {
                *value = value.replace(from.as_str(), to);
            }
        }
    }
    client.write_all(&head.to_bytes())?;
    let limit = match action {
        Action::ResetAfterBody(n) | Action::TruncateBody(n) => Some(*n),
        _ => None,
    };
    let corrupt_at = match action {
        Action::CorruptByte(offset) => Some(*offset),
        _ => None,
    };
    let mut sent: u64 = 0;
    loop {
        let chunk = upstream.fill_buf()?;
        if chunk.is_empty() {
            return Ok(false);
        }
        let mut chunk = chunk.to_vec();
        let len = chunk.len() as u64;
        if let Some(limit) = limit
            && sent + len >= limit
        {
            let keep = (limit - sent) as usize;
            client.write_all(&chunk[..keep])?;
            return Ok(true);
        }
        if let Some(offset) = corrupt_at
            && (sent..sent + len).contains(&offset)
        {
            chunk[(offset - sent) as usize] ^= 0xff;
        }
        client.write_all(&chunk)?;
        upstream.consume(len as usize);
        sent += len;
    }
}

/// Fetches the whole tag list upstream and answers with one page of it.
fn paginate_tags(
    tracked: &Tracked<'_>,
    shared: &Shared,
    head: &Head,
    target: &str,
    limit: usize,
    link_base: &str,
    client: &mut TcpStream,
) -> io::Result<()> {
    let (path, _) = target.split_once('?').unwrap_or((target, ""));
    let query = http::query_pairs(target);
    let param = |key: &str| query.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let page_size = param("n")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(limit)
        .min(limit);
    let last = param("last");

    // HTTP/1.0 so the upstream answer is not chunked and ends at end of stream.
    let mut upstream_head = head.clone();
    upstream_head.first_line = format!("GET {path} HTTP/1.0");
    upstream_head.set_header("Connection", "close");
    let mut upstream = TcpStream::connect(&shared.upstream)?;
    tracked.add(&upstream)?;
    upstream.set_read_timeout(Some(IO_TIMEOUT))?;
    upstream.write_all(&upstream_head.to_bytes())?;
    let mut reader = BufReader::new(upstream);
    let response = http::read_head(&mut reader)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no upstream answer"))?;
    let mut body = Vec::new();
    reader.read_to_end(&mut body)?;
    if response.status() != 200 {
        let mut relayed = response.clone();
        relayed.set_header("Content-Length", &body.len().to_string());
        relayed.set_header("Connection", "close");
        client.write_all(&relayed.to_bytes())?;
        return client.write_all(&body);
    }
    let list: serde_json::Value = serde_json::from_slice(&body).map_err(io::Error::other)?;
    let mut tags: Vec<String> = list["tags"]
        .as_array()
        .map(|tags| {
            tags.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    tags.sort();
    let after: Vec<String> = tags
        .into_iter()
        .filter(|t| last.as_deref().is_none_or(|l| t.as_str() > l))
        .collect();
    let page: Vec<String> = after.iter().take(page_size).cloned().collect();
    let page_body = serde_json::json!({"name": list["name"], "tags": page}).to_string();
    let mut headers = vec![("Content-Type", "application/json".to_owned())];
    if after.len() > page.len()
        && let Some(last_in_page) = page.last()
    {
        headers.push((
            "Link",
            format!("<{link_base}{path}?n={page_size}&last={last_in_page}>; rel=\"next\""),
        ));
    }
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    http::write_response(client, 200, "OK", &headers, page_body.as_bytes())
}

/// Closes `socket` with a TCP RST (SO_LINGER 0) instead of a FIN.
fn reset(socket: &TcpStream) {
    let _ = rustix::net::sockopt::set_socket_linger(socket, Some(Duration::ZERO));
    // The RST goes out when the last descriptor closes; shutting down would send a FIN first.
}

/// Reads a request body with a `Content-Length` (up to 16 MiB) so a canned answer does not
/// meet a client still writing.
fn drain_request_body(head: &Head, reader: &mut BufReader<TcpStream>) {
    let length = head
        .header("Content-Length")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let _ = io::copy(&mut reader.take(length.min(16 << 20)), &mut io::sink());
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
