//! A scripted HTTP/1.1 server on 127.0.0.1 for unit tests of retry, redirect, resume and auth
//! logic. One request per connection; every request is recorded. The real-registry tests live in
//! the `ducc-tests` package.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub(crate) method: String,
    pub(crate) target: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Recorded {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

pub(crate) struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send only this many body bytes (Content-Length still announces all), then close.
    truncate_at: Option<usize>,
    /// Wait this long before closing (after a truncated body: a stalled transfer).
    stall: Option<std::time::Duration>,
}

impl Answer {
    pub(crate) fn new(status: u16) -> Self {
        Answer {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            truncate_at: None,
            stall: None,
        }
    }

    pub(crate) fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    pub(crate) fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub(crate) fn truncate_at(mut self, n: usize) -> Self {
        self.truncate_at = Some(n);
        self
    }

    pub(crate) fn stall(mut self, wait: std::time::Duration) -> Self {
        self.stall = Some(wait);
        self
    }
}

type Handler = dyn Fn(&Recorded, &str) -> Answer + Send + Sync;

pub(crate) struct TestServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server; `handler(request, base_url)` answers each request.
    pub(crate) fn start(
        handler: impl Fn(&Recorded, &str) -> Answer + Send + Sync + 'static,
    ) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let thread = {
            let requests = requests.clone();
            let stop = stop.clone();
            let base = format!("http://{addr}");
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    // One thread per connection, so a stalled answer does not block the next.
                    let (handler, requests, base) =
                        (handler.clone(), requests.clone(), base.clone());
                    std::thread::spawn(move || serve_one(stream, &*handler, &requests, &base));
                }
            })
        };
        TestServer {
            addr,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:<port>`
    pub(crate) fn host(&self) -> String {
        self.addr.to_string()
    }

    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve_one(stream: TcpStream, handler: &Handler, requests: &Mutex<Vec<Recorded>>, base: &str) {
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let target = parts.next().unwrap_or("").to_owned();
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 {
            return;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let request = Recorded {
        method,
        target,
        headers,
        body,
    };
    requests.lock().unwrap().push(request.clone());
    let answer = handler(&request, base);
    let mut out = stream;
    let mut head = format!("HTTP/1.1 {} Test\r\n", answer.status);
    for (k, v) in &answer.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        answer.body.len()
    ));
    let _ = out.write_all(head.as_bytes());
    if request.method != "HEAD" {
        let end = answer
            .truncate_at
            .unwrap_or(answer.body.len())
            .min(answer.body.len());
        let _ = out.write_all(&answer.body[..end]);
    }
    let _ = out.flush();
    if let Some(wait) = answer.stall {
        std::thread::sleep(wait);
    }
    let _ = out.shutdown(std::net::Shutdown::Both);
}
