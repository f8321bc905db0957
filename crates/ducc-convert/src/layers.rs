//! The one layer planner: the layers of an image manifest, each with the diff_id its config
//! lists, for every path that unpacks an image (`convert`, `unpack-image`).

use ducc_oci::{ConfigDigest, DiffId, LayerDigest};
use ducc_registry::oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest, MediaType};
use ducc_unpack::LayerDescriptor;

use crate::error::{ConvertError, bail_invalid, invalid};

/// One layer of an image to unpack: its manifest descriptor, blob digest and diff_id.
pub(crate) struct PlannedLayer {
    pub(crate) descriptor: Descriptor,
    pub(crate) digest: LayerDigest,
    pub(crate) diff_id: DiffId,
}

impl PlannedLayer {
    /// The layer as ducc-unpack decodes it: checked against its diff_id. Not with its blob
    /// digest: every blob decoded comes from a reader that checked it (the registry client as
    /// it streams, or the blob cache, which holds only checked blobs); hashing the compressed
    /// bytes again would be a second sha256 over every layer for nothing.
    pub(crate) fn unpack_descriptor(&self) -> LayerDescriptor {
        LayerDescriptor::new(
            self.digest.to_string(),
            self.descriptor.media_type().to_string(),
        )
        .with_diff_id(self.diff_id)
    }
}

/// The layers of `manifest`, bottom first, with the diff_ids of `config`; Docker's foreign
/// layers (Windows base layers that may not be redistributed, whose blobs live elsewhere) are
/// left out with a warning, as upstream DUCC does.
///
/// # Errors
/// A config listing another number of diff_ids than the manifest has layers; a digest or
/// diff_id that is not a sha256 digest.
pub(crate) fn plan_layers(
    manifest: &ImageManifest,
    config: &ImageConfiguration,
) -> Result<Vec<PlannedLayer>, ConvertError> {
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        bail_invalid!(
            "the manifest has {} layers but the config lists {} diff_ids",
            manifest.layers().len(),
            diff_ids.len()
        );
    }
    let mut layers = Vec::new();
    for (descriptor, diff_id) in manifest.layers().iter().zip(diff_ids) {
        if is_foreign(descriptor.media_type()) {
            tracing::warn!("skipping foreign layer {}", descriptor.digest());
            continue;
        }
        layers.push(PlannedLayer {
            digest: layer_digest(descriptor)?,
            diff_id: diff_id
                .parse()
                .map_err(|e| invalid!("diff_id {diff_id}: {e}"))?,
            descriptor: descriptor.clone(),
        });
    }
    Ok(layers)
}

/// Checks, before any blob of the image is downloaded, that the blobs it needs can be stored:
/// the config and every layer (foreign ones left out) addressed by sha256. Manifests may be
/// pinned with any digest the registry verifies (`@sha512:`), but the repository layout names
/// layer directories and flat trees by sha256 hex, so a blob of another algorithm cannot be
/// converted.
///
/// # Errors
/// The first digest that is not sha256, named with its kind.
pub(crate) fn check_blob_digests(manifest: &ImageManifest) -> Result<ConfigDigest, ConvertError> {
    let config = ConfigDigest::try_from(manifest.config().digest()).map_err(|e| invalid!("{e}"))?;
    for descriptor in manifest.layers() {
        if !is_foreign(descriptor.media_type()) {
            layer_digest(descriptor)?;
        }
    }
    Ok(config)
}

/// The typed digest of a layer's blob.
fn layer_digest(descriptor: &Descriptor) -> Result<LayerDigest, ConvertError> {
    LayerDigest::try_from(descriptor.digest()).map_err(|e| invalid!("{e}"))
}

/// Whether a layer of this media type is one of Docker's foreign layers.
pub(crate) fn is_foreign(media_type: &MediaType) -> bool {
    const DOCKER_FOREIGN: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
    matches!(media_type, MediaType::Other(other) if other == DOCKER_FOREIGN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(layers: &[(&str, &str)]) -> ImageManifest {
        let layers: Vec<serde_json::Value> = layers
            .iter()
            .map(|(media_type, hex)| {
                serde_json::json!({
                    "mediaType": media_type,
                    "digest": format!("sha256:{}", hex.repeat(64)),
                    "size": 1,
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": format!("sha256:{}", "c".repeat(64)),
                "size": 1,
            },
            "layers": layers,
        }))
        .unwrap()
    }

    fn config(diff_ids: &[&str]) -> ImageConfiguration {
        let diff_ids: Vec<String> = diff_ids
            .iter()
            .map(|hex| format!("sha256:{}", hex.repeat(64)))
            .collect();
        serde_json::from_value(serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap()
    }

    const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    const FOREIGN: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

    #[test]
    fn layers_pair_with_their_diff_ids_and_foreign_ones_are_left_out() {
        let planned = plan_layers(
            &manifest(&[(GZIP, "a"), (FOREIGN, "b"), (GZIP, "d")]),
            &config(&["1", "2", "3"]),
        )
        .unwrap();
        let pairs: Vec<(String, String)> = planned
            .iter()
            .map(|l| (l.digest.to_string(), l.diff_id.to_string()))
            .collect();
        assert_eq!(
            pairs,
            [
                (
                    format!("sha256:{}", "a".repeat(64)),
                    format!("sha256:{}", "1".repeat(64))
                ),
                (
                    format!("sha256:{}", "d".repeat(64)),
                    format!("sha256:{}", "3".repeat(64))
                ),
            ]
        );
        assert_eq!(planned[0].unpack_descriptor().media_type, GZIP);
    }

    #[test]
    fn only_dockers_foreign_layers_are_foreign() {
        assert!(is_foreign(&MediaType::from(FOREIGN)));
        for other in [
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            GZIP,
            "application/vnd.oci.image.layer.v1.tar+zstd",
            "application/vnd.example.foreign+json",
        ] {
            assert!(!is_foreign(&MediaType::from(other)), "{other}");
        }
    }

    #[test]
    fn a_config_with_another_number_of_diff_ids_is_refused() {
        let error = plan_layers(&manifest(&[(GZIP, "a")]), &config(&["1", "2"]))
            .err()
            .unwrap();
        assert!(
            error
                .to_string()
                .contains("the manifest has 1 layers but the config lists 2 diff_ids"),
            "{error}"
        );
    }
}
