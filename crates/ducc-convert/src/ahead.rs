//! Downloads ahead (issue 24): while one image converts (its layers decoded, then ingested by
//! the server), the blobs the next image of the pass will need are downloaded into the blob
//! cache, so that image starts from the cache instead of the network.
//!
//! What the next image needs is planned as its conversion will plan it: nothing when its
//! marker records its config (it is up to date), else every layer when its flat tree is to be
//! built, or only the layers whose directories are missing. A blob downloaded ahead is reported
//! (an [`crate::Event::LayerDownload`]) by the image that uses it, when it uses it. Nothing is
//! downloaded ahead for `--multi-arch` images, images of other shards, or when a signature
//! policy is set (an image's signature is checked before any of its blobs is fetched). A
//! failure here is only logged: the image's own conversion fetches what it needs and reports
//! its errors.

use std::sync::mpsc::Receiver;

use ducc_cvmfs::{ImageSlot, RepositoryState};
use ducc_oci::{ConfigDigest, ImageRef, LayerDigest};
use ducc_registry::{ManifestSelection, Repository};

use crate::engine::{Engine, StopToken};
use crate::settings::Settings;

/// Downloads ahead the images that come from `images`, one after the other, until the channel
/// closes or `stop` is set.
pub(crate) fn download_ahead(engine: &Engine, images: Receiver<ImageRef>, stop: &StopToken) {
    for image in images {
        if stop.is_stopped() {
            return;
        }
        let Some((repository, blobs)) = plan(engine, &image) else {
            continue;
        };
        for (digest, size) in blobs {
            if stop.is_stopped() {
                return;
            }
            if let Err(e) = engine
                .cache
                .prefetch(&*engine.source, &repository, &digest, size)
            {
                tracing::debug!("{image}: downloading {digest} ahead: {e:#}");
                break;
            }
        }
    }
}

/// Whether images may be downloaded ahead with these settings.
pub(crate) fn enabled(settings: &Settings) -> bool {
    settings.download_ahead && !settings.multi_arch && settings.policy.is_none()
}

/// The blobs the conversion of `image` will download, with its repository; `None` when it has
/// nothing to download or its manifest cannot be read.
fn plan(engine: &Engine, image: &ImageRef) -> Option<(Repository, Vec<(LayerDigest, u64)>)> {
    if !engine.settings.shard.contains(image) {
        return None;
    }
    let fetched = crate::source::fetch_image_manifest(
        &*engine.source,
        image,
        &ManifestSelection::Platform(engine.settings.platform.clone()),
    )
    .inspect_err(|e| tracing::debug!("{image}: manifest for downloading ahead: {e}"))
    .ok()?;
    let manifest = fetched.image_manifest()?;
    let config = ConfigDigest::try_from(manifest.config().digest()).ok()?;
    let state = RepositoryState::new(&*engine.publisher, &engine.layout);
    let slot = ImageSlot::plain(crate::image::public_name(image).ok()?);
    if !engine.settings.convert_again && state.marker_config(&slot) == Some(config) {
        return None;
    }
    let flat = !engine.settings.skip_flat && !state.flat_complete(&config);
    let blobs: Vec<(LayerDigest, u64)> = manifest
        .layers()
        .iter()
        .filter(|layer| !crate::layers::is_foreign(layer.media_type()))
        .filter_map(|layer| {
            let digest = LayerDigest::try_from(layer.digest()).ok()?;
            let wanted = flat
                || (!engine.settings.skip_layers
                    && (engine.settings.overwrite_layers || !state.layer_complete(&digest)));
            wanted.then_some((digest, layer.size()))
        })
        .collect();
    (!blobs.is_empty()).then_some((Repository::of(image), blobs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downloads_ahead_by_default_but_not_when_asked_not_to_nor_for_multi_arch() {
        assert!(enabled(&Settings::new()));
        assert!(!enabled(&Settings::new().download_ahead(false)));
        assert!(!enabled(&Settings::new().multi_arch(true)));
    }
}
