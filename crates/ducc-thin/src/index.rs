//! The thin image of a multi-platform image: one thin image per platform, gathered in an image
//! index (OCI) or manifest list (Docker) under one tag, so each runtime picks its own platform.

use serde::Serialize;

use crate::error::ThinError;
use ducc_oci::{ImageFormat, ManifestDigest, Platform};

use crate::image::{ThinBlob, ThinImage};

/// A built thin index: the per-platform thin images and the index document over them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThinIndex {
    /// The platform images, in the order of the index.
    pub images: Vec<(Platform, ThinImage)>,
    /// The index document; its digest is what the tag names.
    pub manifest: ThinBlob<ManifestDigest>,
}

impl ThinIndex {
    /// The index over `images` (in the given order, which should be the source index's order so
    /// that the digest is the same run after run).
    ///
    /// # Errors
    /// [`ThinError::Build`] when the list is empty or cannot be serialised.
    ///
    /// ```
    /// use ducc_oci::{ImageFormat, Platform};
    /// use ducc_thin::{ThinDescriptor, ThinImage, ThinIndex};
    /// use ducc_registry::oci_spec::image::ImageConfiguration;
    /// let source: ImageConfiguration = serde_json::from_str(
    ///     r#"{"architecture":"arm64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
    /// )?;
    /// let image = ThinImage::build(&ThinDescriptor::new("https://r.io/a:1", vec![]), &source, ImageFormat::Oci)?;
    /// let platform: Platform = "linux/arm64/v8".parse()?;
    /// let index = ThinIndex::build(vec![(platform, image)], ImageFormat::Oci)?;
    /// assert_eq!(index.manifest.media_type, "application/vnd.oci.image.index.v1+json");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(
        images: Vec<(Platform, ThinImage)>,
        format: ImageFormat,
    ) -> Result<ThinIndex, ThinError> {
        if images.is_empty() {
            return Err(ThinError::Build("an index needs at least one image".into()));
        }
        let document = IndexJson {
            schema_version: 2,
            media_type: format.index_media_type(),
            manifests: images
                .iter()
                .map(|(platform, image)| EntryJson {
                    media_type: image.manifest.media_type,
                    size: image.manifest.bytes.len() as u64,
                    digest: image.manifest.digest.to_string(),
                    platform: PlatformJson {
                        architecture: platform.architecture(),
                        os: platform.os(),
                        variant: platform.variant(),
                    },
                })
                .collect(),
        };
        let bytes = serde_json::to_vec(&document)
            .map_err(|e| ThinError::Build(format!("cannot serialise the index: {e}")))?;
        Ok(ThinIndex {
            images,
            manifest: ThinBlob {
                digest: ManifestDigest::of(&bytes),
                media_type: format.index_media_type(),
                bytes,
            },
        })
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexJson<'a> {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<EntryJson<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EntryJson<'a> {
    media_type: &'static str,
    size: u64,
    digest: String,
    platform: PlatformJson<'a>,
}

#[derive(Serialize)]
struct PlatformJson<'a> {
    architecture: &'a str,
    os: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ThinDescriptor;
    use ducc_registry::oci_spec::image::ImageConfiguration;

    fn image(arch: &str, format: ImageFormat) -> ThinImage {
        let source: ImageConfiguration = serde_json::from_str(&format!(
            r#"{{"architecture":"{arch}","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}}}}"#
        ))
        .unwrap();
        ThinImage::build(
            &ThinDescriptor::new("https://r.io/a:1", vec![]),
            &source,
            format,
        )
        .unwrap()
    }

    fn platform(arch: &str, variant: Option<&str>) -> Platform {
        Platform::new("linux", arch, variant)
    }

    #[test]
    fn index_lists_each_platform_image_with_its_platform() {
        for format in [ImageFormat::Oci, ImageFormat::DockerV2] {
            let amd = image("amd64", format);
            let arm = image("arm64", format);
            let index = ThinIndex::build(
                vec![
                    (platform("amd64", None), amd.clone()),
                    (platform("arm64", Some("v8")), arm.clone()),
                ],
                format,
            )
            .unwrap();
            let json: serde_json::Value = serde_json::from_slice(&index.manifest.bytes).unwrap();
            assert_eq!(json["mediaType"], format.index_media_type());
            assert_eq!(json["schemaVersion"], 2);
            let entries = json["manifests"].as_array().unwrap();
            assert_eq!(entries.len(), 2);
            assert_eq!(entries[0]["digest"], amd.manifest.digest.to_string());
            assert_eq!(entries[0]["size"], amd.manifest.bytes.len());
            assert_eq!(entries[0]["mediaType"], format.manifest_media_type());
            assert_eq!(
                entries[0]["platform"],
                serde_json::json!({"architecture":"amd64","os":"linux"})
            );
            assert_eq!(entries[1]["digest"], arm.manifest.digest.to_string());
            assert_eq!(
                entries[1]["platform"],
                serde_json::json!({"architecture":"arm64","os":"linux","variant":"v8"})
            );
            assert_eq!(
                index.manifest.digest,
                ManifestDigest::of(&index.manifest.bytes)
            );
        }
    }

    #[test]
    fn index_is_deterministic_and_refuses_an_empty_list() {
        let build = || {
            ThinIndex::build(
                vec![(platform("amd64", None), image("amd64", ImageFormat::Oci))],
                ImageFormat::Oci,
            )
            .unwrap()
        };
        assert_eq!(build().manifest, build().manifest);
        assert!(matches!(
            ThinIndex::build(vec![], ImageFormat::Oci),
            Err(ThinError::Build(_))
        ));
    }
}
