//! Hashing content as it streams past and checking it against a digest.

use std::io::{self, Read};

use oci_spec::image::{Digest, DigestAlgorithm};
use sha2::Digest as _;

use crate::error::{Error, ErrorKind};

/// A running hash for one of the algorithms we can verify.
#[derive(Clone)]
pub(crate) enum Hasher {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    /// The hasher for the digest's algorithm.
    pub(crate) fn for_digest(digest: &Digest) -> Result<Self, Error> {
        Hasher::for_algorithm(digest.algorithm())
    }

    pub(crate) fn for_algorithm(algorithm: &DigestAlgorithm) -> Result<Self, Error> {
        match algorithm {
            DigestAlgorithm::Sha256 => Ok(Hasher::Sha256(sha2::Sha256::new())),
            DigestAlgorithm::Sha384 => Ok(Hasher::Sha384(sha2::Sha384::new())),
            DigestAlgorithm::Sha512 => Ok(Hasher::Sha512(sha2::Sha512::new())),
            other => Err(Error::new(ErrorKind::UnsupportedDigest {
                algorithm: other.to_string(),
            })),
        }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// `algorithm:hex` of everything seen.
    pub(crate) fn finish(self) -> String {
        match self {
            Hasher::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Hasher::Sha384(h) => format!("sha384:{}", hex::encode(h.finalize())),
            Hasher::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        }
    }
}

/// The sha256 digest of some bytes, as the untyped digest a registry's answers carry
/// (`ducc-oci` computes it).
pub(crate) fn sha256_digest(bytes: &[u8]) -> Digest {
    ducc_oci::BlobDigest::of(bytes).into()
}

/// Checks in-memory bytes against a digest.
///
/// # Errors
/// [`ErrorKind::DigestMismatch`], or [`ErrorKind::UnsupportedDigest`] for an algorithm other
/// than sha256/sha384/sha512.
pub fn verify_bytes(bytes: &[u8], expected: &Digest) -> Result<(), Error> {
    let mut hasher = Hasher::for_digest(expected)?;
    hasher.update(bytes);
    let actual = hasher.finish();
    if actual == expected.to_string() {
        Ok(())
    } else {
        Err(Error::new(ErrorKind::DigestMismatch {
            expected: expected.to_string(),
            actual,
        }))
    }
}

/// Wraps a reader, hashes and counts what passes, and at end of stream fails with
/// [`ErrorKind::DigestMismatch`] or [`ErrorKind::SizeMismatch`] (as an `io::Error` that
/// [`Error::from_io`] unwraps) instead of returning `Ok(0)`. Content longer than the expected
/// size fails as soon as it is seen.
pub struct VerifyingReader<R> {
    inner: R,
    expected_digest: Digest,
    expected_size: Option<u64>,
    hasher: Option<Hasher>,
    seen: u64,
}

impl<R: Read> VerifyingReader<R> {
    /// Verifies `inner` against a digest and, when known, a size.
    ///
    /// # Errors
    /// [`ErrorKind::UnsupportedDigest`] when the algorithm cannot be verified.
    pub fn new(
        inner: R,
        expected_digest: Digest,
        expected_size: Option<u64>,
    ) -> Result<Self, Error> {
        let hasher = Hasher::for_digest(&expected_digest)?;
        Ok(VerifyingReader {
            inner,
            expected_digest,
            expected_size,
            hasher: Some(hasher),
            seen: 0,
        })
    }

    /// Bytes passed through so far.
    pub fn bytes_read(&self) -> u64 {
        self.seen
    }

    /// The wrapped reader.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        verify_step(
            &mut self.hasher,
            &mut self.seen,
            &self.expected_digest,
            self.expected_size,
            &buf[..n],
        )
        .map_err(io::Error::from)?;
        Ok(n)
    }
}

/// One step of verification: `chunk` is what was just read (empty at end of stream).
/// After the end has been verified, further calls are no-ops.
pub(crate) fn verify_step(
    hasher: &mut Option<Hasher>,
    seen: &mut u64,
    expected_digest: &Digest,
    expected_size: Option<u64>,
    chunk: &[u8],
) -> Result<(), Error> {
    if chunk.is_empty() {
        let Some(h) = hasher.take() else {
            return Ok(());
        };
        if let Some(size) = expected_size
            && *seen != size
        {
            return Err(Error::new(ErrorKind::SizeMismatch {
                expected: size,
                actual: *seen,
            }));
        }
        let actual = h.finish();
        if actual != expected_digest.to_string() {
            return Err(Error::new(ErrorKind::DigestMismatch {
                expected: expected_digest.to_string(),
                actual,
            }));
        }
        return Ok(());
    }
    let Some(h) = hasher.as_mut() else {
        // Data after a verified end: the stream is longer than it claimed.
        return Err(Error::new(ErrorKind::SizeMismatch {
            expected: *seen,
            actual: seen.saturating_add(chunk.len() as u64),
        }));
    };
    *seen = seen.saturating_add(chunk.len() as u64);
    if let Some(size) = expected_size
        && *seen > size
    {
        return Err(Error::new(ErrorKind::SizeMismatch {
            expected: size,
            actual: *seen,
        }));
    }
    h.update(chunk);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(reader: &mut impl Read) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        reader.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn verifying_reader_passes_content_that_matches() {
        let data = b"hello layer".repeat(1000);
        let mut reader =
            VerifyingReader::new(&data[..], sha256_digest(&data), Some(data.len() as u64)).unwrap();
        assert_eq!(read_all(&mut reader).unwrap(), data);
        assert_eq!(reader.bytes_read(), data.len() as u64);
    }

    #[test]
    fn verifying_reader_fails_at_eof_on_digest_mismatch() {
        let data = b"tampered".to_vec();
        let mut reader = VerifyingReader::new(&data[..], sha256_digest(b"original"), None).unwrap();
        let err = read_all(&mut reader).unwrap_err();
        let registry_err = Error::from_io(&err).unwrap();
        match registry_err.kind() {
            ErrorKind::DigestMismatch { expected, actual } => {
                assert_eq!(expected, &sha256_digest(b"original").to_string());
                assert_eq!(actual, &sha256_digest(b"tampered").to_string());
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn verifying_reader_fails_on_short_content() {
        let data = b"short".to_vec();
        let mut reader = VerifyingReader::new(&data[..], sha256_digest(&data), Some(6)).unwrap();
        let err = read_all(&mut reader).unwrap_err();
        assert!(matches!(
            Error::from_io(&err).unwrap().kind(),
            ErrorKind::SizeMismatch {
                expected: 6,
                actual: 5
            }
        ));
    }

    #[test]
    fn verifying_reader_fails_on_long_content_before_eof() {
        let data = vec![7u8; 100];
        let mut reader = VerifyingReader::new(&data[..], sha256_digest(&data), Some(10)).unwrap();
        let mut buf = [0u8; 100];
        let err = reader.read(&mut buf).unwrap_err();
        assert!(matches!(
            Error::from_io(&err).unwrap().kind(),
            ErrorKind::SizeMismatch { expected: 10, .. }
        ));
    }

    #[test]
    fn sha512_digests_are_verified_too() {
        let data = b"x".to_vec();
        let mut h = Hasher::Sha512(sha2::Sha512::new());
        h.update(&data);
        let digest: Digest = h.finish().parse().unwrap();
        assert!(verify_bytes(&data, &digest).is_ok());
        assert!(verify_bytes(b"y", &digest).is_err());
    }

    #[test]
    fn unknown_algorithms_are_refused() {
        let digest: Digest = "blake3:abcdef".parse().unwrap();
        assert!(matches!(
            verify_bytes(b"x", &digest).unwrap_err().kind(),
            ErrorKind::UnsupportedDigest { .. }
        ));
    }
}
