//! Pulling one image into a plain directory, outside any repository (`ducc unpack-image`): its
//! flat root filesystem, or one directory per layer.
//!
//! Blobs stream from the registry straight into ducc-unpack: a read-ahead thread takes them from
//! the registry client, which checks the blob's size and digest as it reads (its end is an error
//! when they do not match), while ducc-unpack decompresses and checks the config's diff_id after
//! draining the stream. Nothing is held in memory whole.

use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use ducc_oci::{ImageRef, Platform};
use ducc_registry::{Client, ManifestSelection};
use ducc_unpack::{
    ExtractOptions, FlatExtractor, LayerDirOptions, Report, WhiteoutFormat, unpack_layer_dir,
};

use crate::error::{Context as _, ConvertError, invalid};
use crate::layers::PlannedLayer;

/// What [`pull_image`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PullTarget {
    /// The flat root filesystem, into the destination itself.
    Flat,
    /// One directory per layer, `DEST/<n>-<hex>/` (`n` counts from 0 at the bottom layer, `hex`
    /// is the blob digest), each with whiteouts in the given form; a layer's implicit parents
    /// take their metadata from the layers below.
    Layers(WhiteoutFormat),
}

/// Pulls `image` (a tag or digest; the manifest of `platform` from an index) with `client` and
/// writes `target` into `dest`, an existing empty directory. Returns what was unpacked.
///
/// # Errors
/// Registry failures, a manifest and config that disagree, layers that cannot be unpacked.
pub fn pull_image(
    client: &Client,
    image: &ImageRef,
    platform: &Platform,
    dest: &Path,
    target: PullTarget,
) -> Result<Report, ConvertError> {
    let pull = Pull { client, image };
    let layers = pull.plan(platform)?;
    match target {
        PullTarget::Flat => pull.flat(&layers, dest),
        PullTarget::Layers(whiteouts) => pull.layers(&layers, dest, whiteouts),
    }
}

struct Pull<'a> {
    client: &'a Client,
    image: &'a ImageRef,
}

impl Pull<'_> {
    /// The platform's manifest and config, and the layers to unpack.
    fn plan(&self, platform: &Platform) -> Result<Vec<PlannedLayer>, ConvertError> {
        let whole = self.image.whole_name();
        let repository = ducc_registry::Repository::of(self.image);
        let manifest = self
            .client
            .fetch_manifest(self.image, &ManifestSelection::Platform(platform.clone()))
            .with_context(|| format!("cannot fetch the manifest of {whole}"))?;
        let image_manifest = manifest.image_manifest().ok_or_else(|| {
            invalid!("{whole}: the registry answered with an index, not an image manifest")
        })?;
        let config_digest = crate::layers::check_blob_digests(image_manifest)
            .map_err(|e| e.context(whole.clone()))?;
        let config = self
            .client
            .fetch_config(&repository, &config_digest, image_manifest.config().size())
            .with_context(|| format!("cannot fetch the config of {whole}"))?;
        let layers = crate::layers::plan_layers(image_manifest, config.config())
            .map_err(|e| e.context(format!("image {whole}")))?;
        tracing::info!(image = %whole, manifest = %manifest.digest(), layers = layers.len(), "pulling");
        Ok(layers)
    }

    /// A streaming reader over one layer blob.
    fn open(
        &self,
        layer: &PlannedLayer,
    ) -> Result<BufReader<ducc_registry::BlobReader>, ConvertError> {
        let repository = ducc_registry::Repository::of(self.image);
        let blob = self
            .client
            .open_blob(&repository, &layer.digest, Some(layer.descriptor.size()))
            .with_context(|| format!("cannot download layer {}", layer.descriptor.digest()))?;
        Ok(BufReader::with_capacity(1 << 20, blob))
    }

    fn unpack_context(&self, layer: &PlannedLayer) -> String {
        format!(
            "{}: cannot unpack layer {}",
            self.image.whole_name(),
            layer.descriptor.digest()
        )
    }

    fn flat(&self, layers: &[PlannedLayer], dest: &Path) -> Result<Report, ConvertError> {
        let mut flat = FlatExtractor::new(dest, &ExtractOptions::new())?;
        for layer in layers {
            tracing::info!(layer = %layer.descriptor.digest(), "applying");
            let blob = self.open(layer)?;
            with_read_ahead(blob, |blob| {
                flat.apply_blob(blob, &layer.unpack_descriptor())
            })
            .with_context(|| self.unpack_context(layer))?;
        }
        Ok(flat.finish())
    }

    fn layers(
        &self,
        layers: &[PlannedLayer],
        dest: &Path,
        whiteouts: WhiteoutFormat,
    ) -> Result<Report, ConvertError> {
        let mut report = Report::default();
        let mut done: Vec<PathBuf> = Vec::new();
        for (n, layer) in layers.iter().enumerate() {
            let hex = layer.descriptor.digest().digest().to_owned();
            let layer_dest = dest.join(format!("{n}-{hex}"));
            let lower: Vec<PathBuf> = done.iter().rev().cloned().collect();
            let options = LayerDirOptions::new()
                .whiteouts(whiteouts)
                .lower_layers(lower);
            tracing::info!(layer = %layer.descriptor.digest(), dest = %layer_dest.display(), "unpacking");
            let blob = self.open(layer)?;
            let outcome = with_read_ahead(blob, |blob| {
                unpack_layer_dir(blob, &layer.unpack_descriptor(), &layer_dest, &options)
            })
            .with_context(|| self.unpack_context(layer))?;
            report.merge(outcome.report);
            done.push(layer_dest);
        }
        Ok(report)
    }
}

/// Size of the chunks the read-ahead thread takes from the registry.
const READ_AHEAD_CHUNK: usize = 1 << 20;
/// Chunks read ahead (bounds the memory: a few MiB).
const READ_AHEAD_CHUNKS: usize = 4;

/// Runs `consume` on a reader of `blob` whose bytes a second thread takes from the registry
/// ahead of it, so that the network and the registry client's digest check overlap with the
/// decompression. Errors of `blob` reach the reader as they are (a registry error inside an
/// [`io::Error`] stays there).
fn with_read_ahead<R: Read + Send, T>(blob: R, consume: impl FnOnce(&mut ReadAhead) -> T) -> T {
    std::thread::scope(|scope| {
        let (chunks, incoming) = mpsc::sync_channel::<io::Result<Vec<u8>>>(READ_AHEAD_CHUNKS);
        let (recycle, recycled) = mpsc::channel::<Vec<u8>>();
        scope.spawn(move || {
            let mut blob = blob;
            loop {
                let mut chunk = recycled.try_recv().unwrap_or_default();
                chunk.resize(READ_AHEAD_CHUNK, 0);
                let mut filled = 0;
                while filled < chunk.len() {
                    match blob.read(&mut chunk[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            let _ = chunks.send(Err(e));
                            return;
                        }
                    }
                }
                chunk.truncate(filled);
                // An empty chunk is the end of the blob; a send fails once the reader is gone.
                if chunks.send(Ok(chunk)).is_err() || filled == 0 {
                    return;
                }
            }
        });
        let mut reader = ReadAhead {
            incoming,
            recycle,
            current: Vec::new(),
            position: 0,
            state: ReadAheadState::Reading,
        };
        consume(&mut reader)
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadAheadState {
    Reading,
    Ended,
    Failed,
}

/// The reading side of [`with_read_ahead`].
struct ReadAhead {
    incoming: mpsc::Receiver<io::Result<Vec<u8>>>,
    recycle: mpsc::Sender<Vec<u8>>,
    current: Vec<u8>,
    position: usize,
    state: ReadAheadState,
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.position == self.current.len() {
            match self.state {
                ReadAheadState::Ended => return Ok(0),
                ReadAheadState::Failed => {
                    return Err(io::Error::other(
                        "the blob could not be read (reported before)",
                    ));
                }
                ReadAheadState::Reading => {}
            }
            match self.incoming.recv() {
                Ok(Ok(chunk)) if chunk.is_empty() => self.state = ReadAheadState::Ended,
                Ok(Ok(chunk)) => {
                    let used = std::mem::replace(&mut self.current, chunk);
                    let _ = self.recycle.send(used);
                    self.position = 0;
                }
                Ok(Err(e)) => {
                    self.state = ReadAheadState::Failed;
                    return Err(e);
                }
                Err(_) => {
                    self.state = ReadAheadState::Failed;
                    return Err(io::Error::other("the blob reading thread ended early"));
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.position);
        buf[..n].copy_from_slice(&self.current[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `data`, then an error of kind `ConnectionReset`.
    struct FailingAfter<'a>(&'a [u8]);

    impl Read for FailingAfter<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"));
            }
            let n = buf.len().min(self.0.len()).min(70_000);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn sample() -> Vec<u8> {
        (0..3_000_000u32).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn read_ahead_hands_over_every_byte_in_order() {
        let data = sample();
        let out = with_read_ahead(&data[..], |reader| {
            let mut out = Vec::new();
            reader.read_to_end(&mut out).map(|_| out)
        })
        .expect("read");
        assert_eq!(out, data);
    }

    #[test]
    fn read_ahead_passes_the_blob_error_on_and_never_ends_cleanly_after_it() {
        let data = sample();
        let (head, first, second) = with_read_ahead(FailingAfter(&data), |reader| {
            let mut head = Vec::new();
            let first = reader.read_to_end(&mut head).expect_err("the blob fails");
            let second = reader.read(&mut [0u8; 16]).expect_err("still failed");
            (head, first, second)
        });
        assert_eq!(first.kind(), io::ErrorKind::ConnectionReset);
        assert!(second.to_string().contains("could not be read"), "{second}");
        assert!(data.starts_with(&head));
    }

    #[test]
    fn read_ahead_stops_when_the_reader_leaves_early() {
        let data = sample();
        let first = with_read_ahead(&data[..], |reader| {
            let mut byte = [0u8; 1];
            reader.read_exact(&mut byte).map(|()| byte[0])
        })
        .expect("read");
        assert_eq!(first, data[0]);
    }
}
