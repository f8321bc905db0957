//! Streaming, verifying, resuming blob downloads.

use std::io::{self, Read};
use std::sync::Arc;

use ducc_oci::BlobDigest;
use oci_spec::image::Digest;

use crate::digest::{Hasher, verify_step};
use crate::error::{Error, ErrorKind};
use crate::retry::backoff;
use crate::transport::{Access, Endpoint, Req, Transport, map_io_error};

/// A blob being downloaded: implements [`Read`], verifies as it goes, fails at end of stream on
/// a size or digest mismatch (see [`crate::Error::from_io`]), resumes after interruptions.
///
/// After an error every further `read` fails again: a caller that ignores one error still never
/// sees a clean end of stream for unverified content.
pub struct BlobReader {
    transport: Arc<Transport>,
    endpoint: Endpoint,
    url: String,
    digest: BlobDigest,
    /// [`BlobReader::digest`] as the verifier compares it.
    expected: Digest,
    size: Option<u64>,
    offset: u64,
    hasher: Option<Hasher>,
    body: Option<ureq::BodyReader<'static>>,
    resumes_left: u32,
    resumes_done: u32,
    failed: Option<ErrorKind>,
}

impl std::fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobReader")
            .field("digest", &self.digest)
            .field("size", &self.size)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl BlobReader {
    pub(crate) fn open(
        transport: Arc<Transport>,
        endpoint: Endpoint,
        digest: BlobDigest,
        size: Option<u64>,
    ) -> Result<Self, Error> {
        let expected = Digest::from(digest);
        let hasher = Hasher::for_digest(&expected).map_err(|e| endpoint.context(e))?;
        let url = endpoint.url(&format!("blobs/{digest}"));
        let resumes_left = transport.options.retry.max_resumes;
        let mut reader = BlobReader {
            transport,
            endpoint,
            url,
            digest,
            expected,
            size,
            offset: 0,
            hasher: Some(hasher),
            body: None,
            resumes_left,
            resumes_done: 0,
            failed: None,
        };
        reader.body = Some(reader.request_from(0)?);
        Ok(reader)
    }

    /// The digest being verified.
    pub fn digest(&self) -> &BlobDigest {
        &self.digest
    }

    /// The expected size, when known.
    pub fn expected_size(&self) -> Option<u64> {
        self.size
    }

    /// Bytes returned so far.
    pub fn bytes_read(&self) -> u64 {
        self.offset
    }

    /// How many times the download resumed after an interruption.
    pub fn resumes(&self) -> u32 {
        self.resumes_done
    }

    fn context(&self, err: Error) -> Error {
        self.endpoint
            .context(err.with_request_if_missing("GET", &self.url))
    }

    /// GETs the blob from `offset` on (with `Range` when not at the start).
    fn request_from(&self, offset: u64) -> Result<ureq::BodyReader<'static>, Error> {
        let mut req = Req::new("GET", self.url.clone());
        if offset > 0 {
            req = req.header("range", format!("bytes={offset}-"));
        }
        let reply = self.transport.send(&self.endpoint, Access::Pull, req)?;
        let status = reply.status();
        let (method, url) = (reply.method, reply.url.clone());
        let invalid = |detail: String| {
            self.endpoint.context(
                Error::new(ErrorKind::InvalidResponse { detail })
                    .with_request(method, &url)
                    .with_status(status),
            )
        };
        match status {
            200 => {
                let mut body = reply.response.into_body().into_reader();
                if offset > 0 {
                    // The server ignored the range: skip what we already have.
                    tracing::debug!(offset, "server ignored Range, skipping the known prefix");
                    let skipped = io::copy(&mut (&mut body).take(offset), &mut io::sink())
                        .map_err(|e| self.context(map_io_error(e)))?;
                    if skipped != offset {
                        return Err(self.context(Error::new(ErrorKind::SizeMismatch {
                            expected: offset,
                            actual: skipped,
                        })));
                    }
                }
                Ok(body)
            }
            206 if offset > 0 => {
                let range = reply.header("content-range").unwrap_or("").to_owned();
                let starts_right = range
                    .trim()
                    .strip_prefix("bytes ")
                    .and_then(|r| r.split('-').next())
                    .and_then(|start| start.trim().parse::<u64>().ok())
                    == Some(offset);
                if !starts_right {
                    return Err(invalid(format!(
                        "resumed at byte {offset} but Content-Range is {range:?}"
                    )));
                }
                Ok(reply.response.into_body().into_reader())
            }
            _ => Err(self.endpoint.context(reply.into_error())),
        }
    }

    fn fail(&mut self, err: Error) -> io::Error {
        self.body = None;
        self.failed = Some(err.kind().clone());
        io::Error::from(self.context(err))
    }

    /// Drops the broken connection and decides whether to resume.
    fn interrupted(&mut self, cause: Error) -> Result<(), io::Error> {
        self.body = None;
        if self.resumes_left == 0 {
            return Err(self.fail(cause));
        }
        self.resumes_left -= 1;
        let wait = backoff(&self.transport.options.retry, self.resumes_done);
        self.resumes_done += 1;
        tracing::debug!(digest = %self.digest, offset = self.offset, ?wait, "blob download interrupted, resuming");
        std::thread::sleep(wait);
        match self.request_from(self.offset) {
            Ok(body) => {
                self.body = Some(body);
                Ok(())
            }
            Err(err) => Err(self.fail(err)),
        }
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(kind) = &self.failed {
            return Err(io::Error::from(self.context(Error::new(kind.clone()))));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let Some(body) = self.body.as_mut() else {
                // Verified and finished.
                return Ok(0);
            };
            match body.read(buf) {
                Ok(0) => {
                    if self.size.is_some_and(|size| self.offset < size) {
                        let cause = Error::new(ErrorKind::Transport).retryable(true);
                        self.interrupted(cause)?;
                        continue;
                    }
                    let mut seen = self.offset;
                    let verdict =
                        verify_step(&mut self.hasher, &mut seen, &self.expected, self.size, &[]);
                    return match verdict {
                        Ok(()) => {
                            self.body = None;
                            Ok(0)
                        }
                        Err(err) => Err(self.fail(err)),
                    };
                }
                Ok(n) => {
                    let mut seen = self.offset;
                    if let Err(err) = verify_step(
                        &mut self.hasher,
                        &mut seen,
                        &self.expected,
                        self.size,
                        &buf[..n],
                    ) {
                        return Err(self.fail(err));
                    }
                    self.offset = seen;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.interrupted(map_io_error(e))?;
                }
            }
        }
    }
}
