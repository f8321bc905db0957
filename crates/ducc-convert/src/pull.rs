//! Pulling one image into a plain directory, outside any repository (`ducc unpack-image`): its
//! flat root filesystem, or one directory per layer.
//!
//! Blobs stream from the registry straight into ducc-unpack: the registry client checks the blob
//! digest and size as it reads, ducc-unpack checks the blob digest again and the config's
//! diff_id after draining the stream. Nothing is held in memory whole.

use std::io::BufReader;
use std::path::{Path, PathBuf};

use ducc_registry::oci_spec::image::Descriptor;
use ducc_registry::{Client, ManifestSelection, Platform};
use ducc_unpack::{
    ExtractOptions, FlatExtractor, LayerDescriptor, LayerDirOptions, Report, WhiteoutFormat,
    unpack_layer_dir,
};
use ducc_wishlist::ImageRef;

use crate::error::{Context as _, ConvertError, bail_invalid, invalid};

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

/// One layer to unpack: what the manifest and config say about it.
struct Layer {
    descriptor: Descriptor,
    unpack: LayerDescriptor,
}

struct Pull<'a> {
    client: &'a Client,
    image: &'a ImageRef,
}

impl Pull<'_> {
    /// The platform's manifest, its config's diff_ids, and one [`Layer`] per manifest layer.
    fn plan(&self, platform: &Platform) -> Result<Vec<Layer>, ConvertError> {
        let whole = self.image.whole_name();
        let name = ducc_registry::ImageName::from_ref(self.image)?;
        let manifest = self
            .client
            .fetch_manifest(&name, &ManifestSelection::Platform(platform.clone()))
            .with_context(|| format!("cannot fetch the manifest of {whole}"))?;
        let image_manifest = manifest.image_manifest().ok_or_else(|| {
            invalid!("{whole}: the registry answered with an index, not an image manifest")
        })?;
        let config = self
            .client
            .fetch_config(&name.repository, image_manifest.config())
            .with_context(|| format!("cannot fetch the config of {whole}"))?;
        let diff_ids = config.config().rootfs().diff_ids();
        let layers = image_manifest.layers();
        if diff_ids.len() != layers.len() {
            bail_invalid!(
                "{whole}: the manifest lists {} layers but the config {} diff_ids",
                layers.len(),
                diff_ids.len()
            );
        }
        tracing::info!(image = %whole, manifest = %manifest.digest(), layers = layers.len(), "pulling");
        layers
            .iter()
            .zip(diff_ids)
            .map(|(descriptor, diff_id)| {
                let digest = descriptor.digest().to_string();
                let unpack =
                    LayerDescriptor::new(digest.clone(), descriptor.media_type().to_string())
                        .with_blob_digest(
                            digest
                                .parse()
                                .with_context(|| format!("{whole}: layer digest {digest}"))?,
                        )
                        .with_diff_id(
                            diff_id
                                .parse()
                                .with_context(|| format!("{whole}: diff_id {diff_id}"))?,
                        );
                Ok(Layer {
                    descriptor: descriptor.clone(),
                    unpack,
                })
            })
            .collect()
    }

    /// A streaming reader over one layer blob.
    fn open(&self, layer: &Layer) -> Result<BufReader<ducc_registry::BlobReader>, ConvertError> {
        let repository = ducc_registry::Repository::of(self.image);
        let blob = self
            .client
            .open_blob(
                &repository,
                layer.descriptor.digest(),
                Some(layer.descriptor.size()),
            )
            .with_context(|| format!("cannot download layer {}", layer.descriptor.digest()))?;
        Ok(BufReader::with_capacity(1 << 20, blob))
    }

    fn unpack_context(&self, layer: &Layer) -> String {
        format!(
            "{}: cannot unpack layer {}",
            self.image.whole_name(),
            layer.descriptor.digest()
        )
    }

    fn flat(&self, layers: &[Layer], dest: &Path) -> Result<Report, ConvertError> {
        let mut flat = FlatExtractor::new(dest, &ExtractOptions::new())?;
        for layer in layers {
            tracing::info!(layer = %layer.descriptor.digest(), "applying");
            flat.apply_blob(self.open(layer)?, &layer.unpack)
                .with_context(|| self.unpack_context(layer))?;
        }
        Ok(flat.finish())
    }

    fn layers(
        &self,
        layers: &[Layer],
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
            let outcome = unpack_layer_dir(self.open(layer)?, &layer.unpack, &layer_dest, &options)
                .with_context(|| self.unpack_context(layer))?;
            report.merge(outcome.report);
            done.push(layer_dest);
        }
        Ok(report)
    }
}
