//! Layer blob streams: decompression chosen by media type and magic bytes, with both digests
//! computed while reading.

use std::io::{self, BufReader, Cursor, Read};

use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::limits::Limits;
use ducc_oci::{BlobDigest, DiffId};

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip, possibly several members.
    Gzip,
    /// zstd, possibly several frames and skippable frames.
    Zstd,
}

impl Compression {
    /// The compression a layer media type announces, or `None` for a media type that is not a
    /// layer this crate reads (OCI `tar`, `tar+gzip`, `tar+zstd` and their nondistributable forms;
    /// Docker `tar.gzip`, foreign `tar.gzip` and `tar`).
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                Some(Compression::Zstd)
            }
            _ => None,
        }
    }

    /// The compression the first bytes of a stream show, if any.
    fn sniff(prefix: &[u8]) -> Option<Compression> {
        match prefix {
            [0x1f, 0x8b, ..] => Some(Compression::Gzip),
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Some(Compression::Zstd),
            // zstd skippable frame (0x184D2A50..=0x184D2A5F, little endian), as zstd:chunked may use.
            [b, 0x2a, 0x4d, 0x18, ..] if b & 0xf0 == 0x50 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// What the caller knows about a layer blob: how to name it in messages, its media type, and the
/// digests it must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDescriptor {
    /// How errors and the report name this layer (usually its blob digest).
    pub name: String,
    /// The layer's media type from the manifest.
    pub media_type: String,
    /// The expected digest of the blob (compressed bytes); when `None` the compressed bytes
    /// are not hashed at all (for a caller that verified the blob as it downloaded it).
    pub blob_digest: Option<BlobDigest>,
    /// The expected diff_id (uncompressed bytes); not checked when `None`.
    pub diff_id: Option<DiffId>,
}

impl LayerDescriptor {
    /// A descriptor with no expected digests.
    pub fn new(name: impl Into<String>, media_type: impl Into<String>) -> Self {
        LayerDescriptor {
            name: name.into(),
            media_type: media_type.into(),
            blob_digest: None,
            diff_id: None,
        }
    }

    /// The same descriptor, checking the blob digest.
    pub fn with_blob_digest(mut self, digest: BlobDigest) -> Self {
        self.blob_digest = Some(digest);
        self
    }

    /// The same descriptor, checking the diff_id.
    pub fn with_diff_id(mut self, diff_id: DiffId) -> Self {
        self.diff_id = Some(diff_id);
        self
    }
}

/// Digests and sizes of a layer that was read to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerDigests {
    /// sha256 of the compressed bytes, checked against the descriptor's; `None` when the
    /// descriptor named none (the compressed bytes were then not hashed).
    pub blob_digest: Option<BlobDigest>,
    /// sha256 of the uncompressed bytes.
    pub diff_id: DiffId,
    /// Number of compressed bytes.
    pub compressed_size: u64,
    /// Number of uncompressed bytes.
    pub uncompressed_size: u64,
}

/// Counts, and hashes when it has a hasher, every byte read through it.
struct HashingReader<R> {
    inner: R,
    hasher: Option<Sha256>,
    len: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
        self.len += n as u64;
        Ok(n)
    }
}

type Compressed<R> = BufReader<io::Chain<Cursor<Vec<u8>>, HashingReader<R>>>;

enum Decoder<R: Read> {
    Plain(Compressed<R>),
    Gzip(Box<flate2::bufread::MultiGzDecoder<Compressed<R>>>),
    Zstd(zstd::stream::read::Decoder<'static, Compressed<R>>),
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(r) => r.read(buf),
            Decoder::Gzip(r) => r.read(buf),
            Decoder::Zstd(r) => r.read(buf),
        }
    }
}

impl<R: Read> Decoder<R> {
    /// Compressed bytes taken from the blob so far (read-ahead of the buffer included).
    fn compressed_len(&self) -> u64 {
        let buffered = match self {
            Decoder::Plain(r) => r,
            Decoder::Gzip(r) => r.get_ref(),
            Decoder::Zstd(r) => r.get_ref(),
        };
        buffered.get_ref().get_ref().1.len
    }
}

/// Buffer between the blob source and the decompressor.
const COMPRESSED_BUFFER: usize = 256 * 1024;

/// A layer blob read as its uncompressed tar stream, hashing both the compressed and the
/// uncompressed bytes on the way.
///
/// Read the tar through it (it implements [`Read`]), then call [`LayerReader::finish`], which
/// drains both streams to their ends and checks the digests the [`LayerDescriptor`] names.
pub struct LayerReader<R: Read> {
    decoder: Decoder<R>,
    /// The diff_id's hasher; `None` when the caller hashes the uncompressed bytes itself.
    hasher: Option<Sha256>,
    len: u64,
    layer: String,
    compression: Compression,
    expected_blob: Option<BlobDigest>,
    expected_diff_id: Option<DiffId>,
    read_error: Option<(io::ErrorKind, String)>,
    /// A limit the stream broke: reported as itself rather than as a read error.
    limit_error: Option<Error>,
    limits: Limits,
}

impl<R: Read> std::fmt::Debug for LayerReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerReader")
            .field("layer", &self.layer)
            .field("compression", &self.compression)
            .field("uncompressed_bytes", &self.len)
            .finish_non_exhaustive()
    }
}

impl<R: Read> LayerReader<R> {
    /// Opens a layer blob. The compression comes from the media type and is checked against the
    /// stream's magic bytes; where they disagree the bytes win (a gzip stream labelled as plain tar
    /// is read as gzip), with a warning logged.
    ///
    /// # Errors
    /// [`Error::UnknownMediaType`] for a media type that is no layer; [`Error::Read`] when the
    /// first bytes cannot be read.
    pub fn open(blob: R, descriptor: &LayerDescriptor) -> Result<Self, Error> {
        Self::open_with_limits(blob, descriptor, &Limits::default())
    }

    /// Like [`LayerReader::open`], with the zstd window and decompression-bomb limits taken from
    /// `limits` instead of the defaults.
    ///
    /// # Errors
    /// As [`LayerReader::open`].
    pub fn open_with_limits(
        blob: R,
        descriptor: &LayerDescriptor,
        limits: &Limits,
    ) -> Result<Self, Error> {
        let Some(labelled) = Compression::from_media_type(&descriptor.media_type) else {
            return Err(Error::UnknownMediaType {
                layer: descriptor.name.clone(),
                media_type: descriptor.media_type.clone(),
            });
        };
        Self::open_inner(blob, labelled, descriptor, limits)
    }

    /// Like [`LayerReader::open`], with the compression given instead of read from the media type
    /// (the magic bytes still win).
    ///
    /// # Errors
    /// [`Error::Read`] when the first bytes cannot be read.
    pub fn open_with(
        blob: R,
        labelled: Compression,
        descriptor: &LayerDescriptor,
    ) -> Result<Self, Error> {
        Self::open_inner(blob, labelled, descriptor, &Limits::default())
    }

    fn open_inner(
        blob: R,
        labelled: Compression,
        descriptor: &LayerDescriptor,
        limits: &Limits,
    ) -> Result<Self, Error> {
        let layer = descriptor.name.clone();
        let mut hashing = HashingReader {
            inner: blob,
            // Only a digest that is checked is worth a sha256 over every compressed byte.
            hasher: descriptor.blob_digest.map(|_| Sha256::new()),
            len: 0,
        };
        let mut prefix = Vec::with_capacity(4);
        let read_err = |source| Error::Read {
            layer: layer.clone(),
            what: "compressed",
            source,
        };
        while prefix.len() < 4 {
            let mut byte = [0u8; 4];
            let want = 4 - prefix.len();
            match hashing.read(&mut byte[..want]) {
                Ok(0) => break,
                Ok(n) => prefix.extend_from_slice(&byte[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(read_err(e)),
            }
        }
        let sniffed = Compression::sniff(&prefix).unwrap_or(Compression::None);
        if sniffed != labelled {
            tracing::warn!(
                layer = %layer,
                labelled = ?labelled,
                content = ?sniffed,
                "layer content does not match its media type; reading it as its content says"
            );
        }
        let compressed =
            BufReader::with_capacity(COMPRESSED_BUFFER, Cursor::new(prefix).chain(hashing));
        let decoder = match sniffed {
            Compression::None => Decoder::Plain(compressed),
            Compression::Gzip => {
                Decoder::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(compressed)))
            }
            Compression::Zstd => {
                let mut d =
                    zstd::stream::read::Decoder::with_buffer(compressed).map_err(read_err)?;
                // The decoder allocates the window a frame asks for: bound it before any frame
                // is read.
                d.window_log_max(limits.zstd_window_log_max).map_err(|_| {
                    Error::ZstdWindowTooLarge {
                        layer: layer.clone(),
                        window_log_max: limits.zstd_window_log_max,
                    }
                })?;
                Decoder::Zstd(d)
            }
        };
        Ok(LayerReader {
            decoder,
            hasher: Some(Sha256::new()),
            len: 0,
            layer,
            compression: sniffed,
            expected_blob: descriptor.blob_digest,
            expected_diff_id: descriptor.diff_id,
            read_error: None,
            limit_error: None,
            limits: *limits,
        })
    }

    /// The compression actually used (from the magic bytes).
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// The layer's name as given in its descriptor.
    pub fn layer_name(&self) -> &str {
        &self.layer
    }

    /// If a read failed (truncated or corrupt blob), that failure as this crate's error. Extraction
    /// functions use it to report a broken blob as [`Error::Read`] rather than as a tar error.
    pub(crate) fn take_read_error(&mut self) -> Option<Error> {
        if let Some(e) = self.limit_error.take() {
            return Some(e);
        }
        self.read_error.take().map(|(kind, message)| Error::Read {
            layer: self.layer.clone(),
            what: "compressed",
            source: io::Error::new(kind, message),
        })
    }

    /// Reads both streams to their ends (tar padding, trailing zero blocks, further gzip members),
    /// then checks the digests.
    ///
    /// # Errors
    /// [`Error::Read`] when a stream fails before its end; [`Error::BlobDigestMismatch`] or
    /// [`Error::DiffIdMismatch`] naming the expected and actual values.
    pub fn finish(self) -> Result<LayerDigests, Error> {
        self.finish_inner(None)
    }

    /// From here on the uncompressed bytes are not hashed by this reader: the caller hashes
    /// every byte it reads (to its end) and gives the result to
    /// [`LayerReader::finish_with_diff_id`], so that the hash can run on another thread.
    pub(crate) fn hash_uncompressed_elsewhere(&mut self) {
        self.hasher = None;
    }

    /// As [`LayerReader::finish`], with the diff_id the caller computed over every uncompressed
    /// byte (after [`LayerReader::hash_uncompressed_elsewhere`], and the stream read to its end).
    pub(crate) fn finish_with_diff_id(self, diff_id: DiffId) -> Result<LayerDigests, Error> {
        self.finish_inner(Some(diff_id))
    }

    fn finish_inner(mut self, hashed_elsewhere: Option<DiffId>) -> Result<LayerDigests, Error> {
        if let Some(e) = self.take_read_error() {
            return Err(e);
        }
        let layer = self.layer.clone();
        match io::copy(&mut self, &mut io::sink()) {
            Err(source) => {
                return Err(self.take_read_error().unwrap_or(Error::Read {
                    layer,
                    what: "compressed",
                    source,
                }));
            }
            // Hashed elsewhere, the caller must have read every byte.
            Ok(left) if left > 0 && self.hasher.is_none() => {
                return Err(Error::Read {
                    layer,
                    what: "uncompressed",
                    source: io::Error::other(format!("{left} bytes left unhashed")),
                });
            }
            Ok(_) => {}
        }
        let compressed = match self.decoder {
            Decoder::Plain(r) => r,
            Decoder::Gzip(r) => r.into_inner(),
            Decoder::Zstd(r) => r.finish(),
        };
        let mut chain = compressed.into_inner();
        if let Err(source) = io::copy(&mut chain, &mut io::sink()) {
            return Err(Error::Read {
                layer,
                what: "compressed",
                source,
            });
        }
        let (_, hashing) = chain.into_inner();
        let blob_digest = hashing
            .hasher
            .map(|hasher| BlobDigest::from_sha256_bytes(hasher.finalize().into()));
        let diff_id = match (self.hasher, hashed_elsewhere) {
            (Some(hasher), _) => DiffId::from_sha256_bytes(hasher.finalize().into()),
            (None, Some(diff_id)) => diff_id,
            (None, None) => {
                return Err(Error::Read {
                    layer,
                    what: "uncompressed",
                    source: io::Error::other("the uncompressed bytes were not hashed"),
                });
            }
        };
        if let (Some(expected), Some(actual)) = (self.expected_blob, blob_digest)
            && expected != actual
        {
            return Err(Error::BlobDigestMismatch {
                layer,
                expected,
                actual,
            });
        }
        if let Some(expected) = self.expected_diff_id
            && expected != diff_id
        {
            return Err(Error::DiffIdMismatch {
                layer,
                expected,
                actual: diff_id,
            });
        }
        Ok(LayerDigests {
            blob_digest,
            diff_id,
            compressed_size: hashing.len,
            uncompressed_size: self.len,
        })
    }
}

impl<R: Read> LayerReader<R> {
    /// Records `error` as the stream's failure and returns it as an I/O error for the reader.
    fn fail_limit(&mut self, error: Error) -> io::Error {
        let io_error = io::Error::other(error.to_string());
        self.limit_error.get_or_insert(error);
        io_error
    }
}

impl<R: Read> Read for LayerReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(e) = &self.limit_error {
            // A stream that broke a limit stays broken: never hand out more of it.
            return Err(io::Error::other(e.to_string()));
        }
        match self.decoder.read(buf) {
            Ok(n) => {
                if let Some(hasher) = &mut self.hasher {
                    hasher.update(&buf[..n]);
                }
                self.len += n as u64;
                if !matches!(self.compression, Compression::None) {
                    // Checked on every read, so a bomb stops within one buffer of the cap.
                    let compressed = self.decoder.compressed_len();
                    if self.len > self.limits.expansion_cap(compressed) {
                        let error = Error::DecompressionBomb {
                            layer: self.layer.clone(),
                            compressed,
                            uncompressed: self.len,
                            ratio: self.limits.max_expansion_ratio,
                            allowance: self.limits.expansion_allowance,
                        };
                        return Err(self.fail_limit(error));
                    }
                }
                Ok(n)
            }
            Err(e) => {
                let window = e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<zstd::Error>())
                    .is_some_and(|z| {
                        z.is(zstd::zstd_safe::zstd_sys::ZSTD_ErrorCode::ZSTD_error_frameParameter_windowTooLarge)
                    });
                if window {
                    let error = Error::ZstdWindowTooLarge {
                        layer: self.layer.clone(),
                        window_log_max: self.limits.zstd_window_log_max,
                    };
                    return Err(self.fail_limit(error));
                }
                if e.kind() != io::ErrorKind::Interrupted && self.read_error.is_none() {
                    self.read_error = Some((e.kind(), ducc_oci::error_chain(&e)));
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use sha2::{Digest, Sha256};

    use super::*;
    use crate::limits::Limits;

    const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    const DOCKER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

    fn sample_tar() -> Vec<u8> {
        let mut layer = crate::testutil::Layer::new();
        layer.file("etc/hello", b"hello world\n").dir("usr");
        layer.bytes()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("gzip");
        e.finish().expect("gzip")
    }

    fn sha(data: &[u8]) -> [u8; 32] {
        Sha256::digest(data).into()
    }

    /// Reads a blob through a LayerReader with the right digests expected; returns the tar.
    fn read_back(
        blob: &[u8],
        media_type: &str,
        tar: &[u8],
    ) -> Result<(Vec<u8>, LayerDigests), Error> {
        let descriptor = LayerDescriptor::new("test-layer", media_type)
            .with_blob_digest(BlobDigest::from_sha256_bytes(sha(blob)))
            .with_diff_id(DiffId::from_sha256_bytes(sha(tar)));
        let mut reader = LayerReader::open(blob, &descriptor)?;
        let mut out = Vec::new();
        reader.read_to_end(&mut out).map_err(|source| Error::Read {
            layer: "test-layer".into(),
            what: "uncompressed",
            source,
        })?;
        let digests = reader.finish()?;
        Ok((out, digests))
    }

    #[test]
    fn plain_tar_passes_through_with_both_digests_equal() {
        let tar = sample_tar();
        let (out, digests) = read_back(&tar, TAR, &tar).expect("read");
        assert_eq!(out, tar);
        assert_eq!(
            digests.blob_digest.expect("checked").sha256_bytes(),
            digests.diff_id.sha256_bytes()
        );
        assert_eq!(digests.compressed_size, tar.len() as u64);
    }

    #[test]
    fn gzip_layer_is_decompressed_and_both_digests_checked() {
        let tar = sample_tar();
        let blob = gzip(&tar);
        let (out, digests) = read_back(&blob, GZIP, &tar).expect("read");
        assert_eq!(out, tar);
        assert_eq!(digests.compressed_size, blob.len() as u64);
        assert_eq!(digests.uncompressed_size, tar.len() as u64);
        assert_eq!(
            digests.blob_digest.expect("checked").sha256_bytes(),
            &sha(&blob)
        );
    }

    #[test]
    fn without_an_expected_blob_digest_the_compressed_bytes_are_not_hashed() {
        let tar = sample_tar();
        let blob = gzip(&tar);
        let descriptor = LayerDescriptor::new("test-layer", GZIP)
            .with_diff_id(DiffId::from_sha256_bytes(sha(&tar)));
        let mut reader = LayerReader::open(blob.as_slice(), &descriptor).expect("open");
        let mut out = Vec::new();
        reader.read_to_end(&mut out).expect("read");
        let digests = reader.finish().expect("finish");
        assert_eq!(out, tar);
        assert_eq!(digests.blob_digest, None);
        assert_eq!(digests.compressed_size, blob.len() as u64);
        assert_eq!(digests.diff_id.sha256_bytes(), &sha(&tar));
    }

    #[test]
    fn docker_gzip_media_type_is_read_as_gzip() {
        let tar = sample_tar();
        let (out, _) = read_back(&gzip(&tar), DOCKER_GZIP, &tar).expect("read");
        assert_eq!(out, tar);
    }

    #[test]
    fn multi_member_gzip_is_read_to_the_last_member() {
        let tar = sample_tar();
        let (first, second) = tar.split_at(700);
        let mut blob = gzip(first);
        blob.extend(gzip(second));
        let (out, _) = read_back(&blob, GZIP, &tar).expect("read");
        assert_eq!(out, tar);
    }

    #[test]
    fn zstd_layer_is_decompressed() {
        let tar = sample_tar();
        let blob = zstd::encode_all(&tar[..], 3).expect("zstd");
        let (out, _) = read_back(&blob, ZSTD, &tar).expect("read");
        assert_eq!(out, tar);
    }

    /// A zstd frame of `tar` that declares a window of 2^`log` bytes (streamed, so the encoder
    /// cannot shrink the window to the content size).
    fn zstd_with_window(tar: &[u8], log: u32) -> Vec<u8> {
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("encoder");
        encoder.window_log(log).expect("window");
        encoder.long_distance_matching(true).expect("ldm");
        encoder.write_all(tar).expect("write");
        encoder.finish().expect("finish")
    }

    #[test]
    fn a_zstd_frame_with_a_window_over_the_limit_is_refused_naming_the_layer() {
        let tar = sample_tar();
        let blob = zstd_with_window(&tar, 28);
        let mut reader =
            LayerReader::open(&blob[..], &LayerDescriptor::new("test-layer", ZSTD)).expect("open");
        let mut out = Vec::new();
        reader
            .read_to_end(&mut out)
            .expect_err("window 2^28 over the default 2^27");
        let err = reader.finish().expect_err("finish reports the limit");
        assert!(
            matches!(err, Error::ZstdWindowTooLarge { ref layer, window_log_max: 27 } if layer == "test-layer"),
            "{err:?}"
        );
        assert!(err.to_string().contains("2^27"), "{err}");
    }

    #[test]
    fn a_raised_zstd_window_limit_accepts_a_larger_window() {
        let tar = sample_tar();
        let blob = zstd_with_window(&tar, 30);
        let limits = Limits::new().zstd_window_log_max(30);
        let mut reader =
            LayerReader::open_with_limits(&blob[..], &LayerDescriptor::new("l", ZSTD), &limits)
                .expect("open");
        let mut out = Vec::new();
        reader.read_to_end(&mut out).expect("read");
        assert_eq!(out, tar);
        reader.finish().expect("finish");
    }

    #[test]
    fn a_window_limit_libzstd_cannot_take_is_an_error_at_open() {
        let blob = zstd::encode_all(&sample_tar()[..], 3).expect("zstd");
        let limits = Limits::new().zstd_window_log_max(63);
        let err =
            LayerReader::open_with_limits(&blob[..], &LayerDescriptor::new("l", ZSTD), &limits)
                .expect_err("window log 63");
        assert!(
            matches!(
                err,
                Error::ZstdWindowTooLarge {
                    window_log_max: 63,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    /// Compresses `len` zero bytes, streamed.
    fn compressed_zeros(len: u64, zstd: bool) -> Vec<u8> {
        let mut zeros = io::repeat(0).take(len);
        if zstd {
            let mut e = zstd::stream::write::Encoder::new(Vec::new(), 1).expect("encoder");
            io::copy(&mut zeros, &mut e).expect("zstd");
            e.finish().expect("zstd")
        } else {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            io::copy(&mut zeros, &mut e).expect("gzip");
            e.finish().expect("gzip")
        }
    }

    /// Reads a blob to its end; returns the error and how many uncompressed bytes came out.
    fn read_until_error(blob: &[u8], media_type: &str, limits: &Limits) -> (Error, u64) {
        let descriptor = LayerDescriptor::new("bomb-layer", media_type);
        let mut reader = LayerReader::open_with_limits(blob, &descriptor, limits).expect("open");
        let mut produced = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => panic!("read to the end after {produced} bytes: no limit hit"),
                Ok(n) => produced += n as u64,
                Err(_) => break,
            }
        }
        (
            reader.finish().expect_err("finish reports the limit"),
            produced,
        )
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_expansion_cap() {
        // 256 MiB of zeros in about 250 KiB of gzip; a lowered cap, since gzip cannot exceed
        // about 1032:1 and so never reaches the default ratio.
        let blob = compressed_zeros(256 << 20, false);
        let limits = Limits::new()
            .max_expansion_ratio(64)
            .expansion_allowance(1 << 20);
        let (err, produced) = read_until_error(&blob, GZIP, &limits);
        let cap = limits.expansion_cap(blob.len() as u64);
        let Error::DecompressionBomb {
            layer,
            compressed,
            uncompressed,
            ratio,
            allowance,
        } = &err
        else {
            panic!("unexpected error {err:?}");
        };
        assert_eq!(
            (layer.as_str(), *ratio, *allowance),
            ("bomb-layer", 64, 1 << 20)
        );
        assert!(*compressed <= blob.len() as u64);
        assert!(*uncompressed > limits.expansion_cap(*compressed));
        assert!(produced <= cap, "{produced} bytes handed out, cap {cap}");
        assert!(produced < 64 << 20, "stopped early: {produced}");
        assert!(err.to_string().contains("decompression bomb"), "{err}");
    }

    #[test]
    fn a_zstd_bomb_stops_under_the_default_limits() {
        // 1 GiB of zeros in a few dozen KiB of zstd (over 30,000:1).
        let blob = compressed_zeros(1 << 30, true);
        let (err, produced) = read_until_error(&blob, ZSTD, &Limits::new());
        assert!(matches!(err, Error::DecompressionBomb { .. }), "{err:?}");
        let cap = Limits::new().expansion_cap(blob.len() as u64);
        assert!(
            produced <= cap && produced < 1 << 30,
            "{produced} of cap {cap}"
        );
    }

    #[test]
    fn a_layer_of_zero_filled_files_passes_the_default_limits() {
        // A realistic worst case: a 300 MiB preallocated zero file and a few small files,
        // with both compressors.
        let mut layer = crate::testutil::Layer::new();
        layer.file("etc/hostname", b"box\n");
        let mut tar = layer.bytes();
        tar.truncate(tar.len() - 1024);
        let mut builder = tar::Builder::new(tar);
        let mut h = tar::Header::new_gnu();
        h.set_size(300 << 20);
        h.set_mode(0o600);
        h.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut h, "var/swapfile", io::repeat(0).take(300 << 20))
            .expect("append");
        let tar = builder.into_inner().expect("tar");
        for zstd in [false, true] {
            let blob = if zstd {
                zstd::encode_all(&tar[..], 3).expect("zstd")
            } else {
                gzip(&tar)
            };
            let media_type = if zstd { ZSTD } else { GZIP };
            let mut reader =
                LayerReader::open(&blob[..], &LayerDescriptor::new("l", media_type)).expect("open");
            let n = io::copy(&mut reader, &mut io::sink()).expect("under the limits");
            assert_eq!(n, tar.len() as u64);
            reader.finish().expect("finish");
        }
    }

    #[test]
    fn extractors_apply_the_limits_of_their_options() {
        let tar = sample_tar();
        // Flat, from a blob: the zstd window limit reaches the decompressing thread.
        let blob = zstd_with_window(&tar, 28);
        let root = tempfile::tempdir().expect("tempdir");
        let mut flat =
            crate::FlatExtractor::new(root.path(), &crate::ExtractOptions::new()).expect("flat");
        let err = flat
            .apply_blob(&blob[..], &LayerDescriptor::new("flat-layer", ZSTD))
            .expect_err("default window limit");
        assert!(matches!(err, Error::ZstdWindowTooLarge { .. }), "{err:?}");
        let root = tempfile::tempdir().expect("tempdir");
        let options = crate::ExtractOptions::new().limits(Limits::new().zstd_window_log_max(28));
        let mut flat = crate::FlatExtractor::new(root.path(), &options).expect("flat");
        flat.apply_blob(&blob[..], &LayerDescriptor::new("flat-layer", ZSTD))
            .expect("raised window limit");
        // Layer directory: the entry limit reaches the parser.
        let dir = tempfile::tempdir().expect("tempdir");
        let options = crate::LayerDirOptions::new().limits(Limits::new().max_entries_per_layer(1));
        let err = crate::extract_layer_dir(&tar[..], "dir-layer", dir.path(), &options)
            .expect_err("two entries, limit 1");
        assert!(
            matches!(err, Error::TooManyEntries { ref layer, limit: 1 } if layer == "dir-layer"),
            "{err:?}"
        );
        // Verbatim: the path limit reaches the parser.
        let dir = tempfile::tempdir().expect("tempdir");
        let options = crate::ExtractOptions::new().limits(Limits::new().max_path_bytes(5));
        let err = crate::extract_canonical_tar(&tar[..], "canon", dir.path(), &options)
            .expect_err("etc/hello is 9 bytes");
        assert!(
            matches!(err, Error::PathTooLong { limit: 5, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn zstd_skippable_frames_are_skipped() {
        let tar = sample_tar();
        let mut blob = Vec::new();
        // A skippable frame (magic 0x184D2A50, 4-byte length, payload), as zstd:chunked writes.
        blob.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 1, 2, 3]);
        blob.extend(zstd::encode_all(&tar[..], 3).expect("zstd"));
        blob.extend_from_slice(&[0x5e, 0x2a, 0x4d, 0x18, 2, 0, 0, 0, 9, 9]);
        let (out, _) = read_back(&blob, ZSTD, &tar).expect("read");
        assert_eq!(out, tar);
    }

    #[test]
    fn gzip_content_labelled_as_plain_tar_is_read_as_gzip() {
        let tar = sample_tar();
        let blob = gzip(&tar);
        let reader = LayerReader::open(&blob[..], &LayerDescriptor::new("l", TAR)).expect("open");
        assert_eq!(reader.compression(), Compression::Gzip);
        let (out, _) = read_back(&blob, TAR, &tar).expect("read");
        assert_eq!(out, tar);
    }

    #[test]
    fn unknown_media_type_is_an_error_naming_it() {
        let err = LayerReader::open(&b""[..], &LayerDescriptor::new("l", "text/plain"))
            .expect_err("refused");
        assert!(
            matches!(err, Error::UnknownMediaType { ref media_type, .. } if media_type == "text/plain")
        );
        assert!(err.to_string().contains("text/plain"));
    }

    #[test]
    fn wrong_diff_id_fails_at_finish_naming_both_values() {
        let tar = sample_tar();
        let wrong = DiffId::from_sha256_bytes([7; 32]);
        let descriptor = LayerDescriptor::new("layer-x", GZIP).with_diff_id(wrong);
        let blob = gzip(&tar);
        let mut reader = LayerReader::open(&blob[..], &descriptor).expect("open");
        // Read only part of it: finish must drain the rest before hashing.
        let mut head = [0u8; 100];
        reader.read_exact(&mut head).expect("read");
        let err = reader.finish().expect_err("mismatch");
        let Error::DiffIdMismatch {
            expected,
            actual,
            layer,
        } = &err
        else {
            panic!("unexpected error {err:?}");
        };
        assert_eq!(*expected, wrong);
        assert_eq!(actual.sha256_bytes(), &sha(&tar));
        assert_eq!(layer, "layer-x");
        let message = err.to_string();
        assert!(message.contains(&wrong.to_string()) && message.contains(&actual.to_string()));
    }

    #[test]
    fn wrong_blob_digest_fails_at_finish() {
        let tar = sample_tar();
        let wrong = BlobDigest::from_sha256_bytes([1; 32]);
        let descriptor = LayerDescriptor::new("l", TAR).with_blob_digest(wrong);
        let reader = LayerReader::open(&tar[..], &descriptor).expect("open");
        let err = reader.finish().expect_err("mismatch");
        assert!(matches!(err, Error::BlobDigestMismatch { expected, .. } if expected == wrong));
    }

    #[test]
    fn truncated_gzip_is_a_read_error() {
        let tar = sample_tar();
        let blob = gzip(&tar);
        let cut = &blob[..blob.len() / 2];
        let mut reader = LayerReader::open(cut, &LayerDescriptor::new("l", GZIP)).expect("open");
        let mut out = Vec::new();
        let read = reader.read_to_end(&mut out);
        assert!(
            read.is_err(),
            "a truncated gzip stream must not read as complete"
        );
        assert!(matches!(reader.finish(), Err(Error::Read { .. })));
    }

    #[test]
    fn trailing_zero_blocks_after_the_tar_end_count_in_the_diff_id() {
        let mut tar = sample_tar();
        tar.extend_from_slice(&[0u8; 4096]);
        let blob = gzip(&tar);
        let descriptor =
            LayerDescriptor::new("l", GZIP).with_diff_id(DiffId::from_sha256_bytes(sha(&tar)));
        let mut reader = LayerReader::open(&blob[..], &descriptor).expect("open");
        let entries = crate::read_entries(&mut reader, "l", |_, _| Ok(())).expect("parse");
        assert_eq!(entries, 2);
        let digests = reader.finish().expect("the drained stream verifies");
        assert_eq!(digests.uncompressed_size, tar.len() as u64);
    }
}
