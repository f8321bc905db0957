//! Uploads: blobs (monolithic or chunked) and manifests.

use std::io::{self, Read};

use oci_spec::image::Digest;

use crate::client::BlobPush;
use crate::digest::{Hasher, sha256_digest};
use crate::error::{Error, ErrorKind};
use crate::name::Reference;
use crate::transport::{Access, Endpoint, Reply, Req, ReqBody, Transport, resolve_url};

/// Hashes and counts what is read, and remembers a read failure (ureq only sees that the body
/// broke, not why). An end of data before `size` bytes is an error here: ureq would otherwise
/// wait forever for the rest of a length-delimited body.
struct CountingReader<'a> {
    inner: &'a mut dyn Read,
    size: u64,
    hasher: Hasher,
    count: u64,
    failure: Option<io::Error>,
}

impl Read for CountingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(0) if !buf.is_empty() && self.count < self.size => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "upload data ended before its announced size",
            )),
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                self.count += n as u64;
                Ok(n)
            }
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.failure = Some(e);
                Err(copy)
            }
        }
    }
}

/// The upload session URL a `POST` or `PATCH` answer names. It must be on the registry's own
/// origin: the blob and the registry's credentials go there next, and a session elsewhere makes
/// no sense for a registry (it would be a leak), so another origin is refused.
fn location(endpoint: &Endpoint, reply: &Reply) -> Result<String, Error> {
    match reply.header("location") {
        Some(location) if !location.is_empty() => {
            let resolved = resolve_url(&reply.url, location);
            if endpoint.is_own(&resolved) {
                return Ok(resolved);
            }
            let registry_origin = endpoint
                .registry_origin()
                .map_or_else(|| endpoint.host.clone(), |o| o.to_string());
            Err(endpoint.context(
                Error::new(ErrorKind::ForeignUploadLocation {
                    location: crate::redact::redact_url(&resolved),
                    registry_origin,
                })
                .with_request(reply.method, &reply.url)
                .with_status(reply.status()),
            ))
        }
        _ => Err(endpoint.context(
            Error::new(ErrorKind::InvalidResponse {
                detail: "upload response has no Location header".to_owned(),
            })
            .with_request(reply.method, &reply.url)
            .with_status(reply.status()),
        )),
    }
}

fn with_digest_param(url: &str, digest: &Digest) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!(
        "{url}{sep}digest={}",
        crate::auth::encode_query_value(digest.as_ref())
    )
}

fn check_source(
    endpoint: &Endpoint,
    reader: CountingReader<'_>,
    digest: &Digest,
    size: u64,
) -> Result<(), Error> {
    if let Some(failure) = reader.failure {
        return Err(endpoint.context(Error::new(ErrorKind::UploadSource).with_source(failure)));
    }
    if reader.count != size {
        return Err(endpoint.context(Error::new(ErrorKind::SizeMismatch {
            expected: size,
            actual: reader.count,
        })));
    }
    let actual = reader.hasher.finish();
    if actual != digest.to_string() {
        return Err(endpoint.context(Error::new(ErrorKind::DigestMismatch {
            expected: digest.to_string(),
            actual,
        })));
    }
    Ok(())
}

pub(crate) fn push_blob(
    transport: &Transport,
    endpoint: &Endpoint,
    digest: &Digest,
    size: u64,
    data: &mut dyn Read,
    exists: impl Fn(&Digest) -> Result<bool, Error>,
) -> Result<BlobPush, Error> {
    let hasher = Hasher::for_digest(digest).map_err(|e| endpoint.context(e))?;
    if exists(digest)? {
        tracing::debug!(%digest, "blob already in the registry");
        return Ok(BlobPush::AlreadyPresent);
    }
    let start = transport.send(
        endpoint,
        Access::Push,
        Req::new("POST", endpoint.url("blobs/uploads/")).body(ReqBody::Bytes(&[])),
    )?;
    if start.status() != 202 {
        return Err(endpoint.context(start.into_error()));
    }
    let mut upload_url = location(endpoint, &start)?;
    drop(start);
    let mut limited = data.take(size);
    let mut source = CountingReader {
        inner: &mut limited,
        size,
        hasher,
        count: 0,
        failure: None,
    };

    if size <= transport.options.monolithic_upload_limit {
        let req = Req::new("PUT", with_digest_param(&upload_url, digest))
            .header("content-type", "application/octet-stream")
            .body(ReqBody::Stream(&mut source, size));
        let result = transport.send(endpoint, Access::Push, req);
        // A local read failure or wrong data explains a failed upload better than the
        // broken request does.
        check_source(endpoint, source, digest, size)?;
        let reply = result?;
        if reply.status() != 201 {
            return Err(endpoint.context(reply.into_error()));
        }
        return Ok(BlobPush::Uploaded);
    }

    let chunk_size = transport.options.upload_chunk_size;
    let mut chunk = Vec::new();
    let mut offset = 0u64;
    while offset < size {
        chunk.clear();
        let want = chunk_size.min(size - offset);
        // A read failure is kept in `source.failure` and reported by `check_source`.
        let got = (&mut source)
            .take(want)
            .read_to_end(&mut chunk)
            .unwrap_or(0);
        if source.failure.is_some() || got == 0 {
            return Err(check_source(endpoint, source, digest, size)
                .err()
                .unwrap_or_else(|| endpoint.context(Error::new(ErrorKind::UploadSource))));
        }
        let end = offset + chunk.len() as u64 - 1;
        let req = Req::new("PATCH", upload_url.clone())
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{offset}-{end}"))
            .body(ReqBody::Bytes(&chunk));
        let reply = transport.send(endpoint, Access::Push, req)?;
        if reply.status() != 202 {
            return Err(endpoint.context(reply.into_error()));
        }
        upload_url = location(endpoint, &reply)?;
        offset = end + 1;
        tracing::trace!(%digest, offset, size, "uploaded chunk");
    }
    // Refuse to commit data that is not the blob we named.
    check_source(endpoint, source, digest, size)?;
    let reply = transport.send(
        endpoint,
        Access::Push,
        Req::new("PUT", with_digest_param(&upload_url, digest)).body(ReqBody::Bytes(&[])),
    )?;
    if reply.status() != 201 {
        return Err(endpoint.context(reply.into_error()));
    }
    Ok(BlobPush::Uploaded)
}

pub(crate) fn push_manifest(
    transport: &Transport,
    endpoint: &Endpoint,
    reference: &Reference,
    media_type: &str,
    bytes: &[u8],
) -> Result<Digest, Error> {
    if let Some(expected) = reference.digest_value() {
        crate::digest::verify_bytes(bytes, expected).map_err(|e| endpoint.context(e))?;
    }
    let url = endpoint.url(&format!("manifests/{}", reference.url_part()));
    let reply = transport.send(
        endpoint,
        Access::Push,
        Req::new("PUT", url)
            .header("content-type", media_type)
            .body(ReqBody::Bytes(bytes)),
    )?;
    if reply.status() != 201 {
        return Err(endpoint.context(reply.into_error()));
    }
    let digest = match reference.digest_value() {
        Some(d) => d.clone(),
        None => sha256_digest(bytes),
    };
    if let Some(announced) = reply.header("docker-content-digest")
        && let Ok(announced) = announced.trim().parse::<Digest>()
        && announced.algorithm() == digest.algorithm()
        && announced != digest
    {
        return Err(endpoint.context(
            Error::new(ErrorKind::DigestMismatch {
                expected: digest.to_string(),
                actual: announced.to_string(),
            })
            .with_request(reply.method, &reply.url),
        ));
    }
    Ok(digest)
}
