//! The two manifest formats an image is written in: Docker image manifest v2 schema 2 and OCI.

/// Which manifest format (and with it, which media types for the index, config and layers) an
/// image is written in. ducc-rs writes thin images in either; Docker v2 is what the cvmfs graph
/// driver expects, so it is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageFormat {
    /// Docker image manifest v2 schema 2.
    #[default]
    DockerV2,
    /// OCI image manifest.
    Oci,
}

impl ImageFormat {
    /// The media type of an image manifest in this format.
    pub fn manifest_media_type(self) -> &'static str {
        match self {
            ImageFormat::DockerV2 => "application/vnd.docker.distribution.manifest.v2+json",
            ImageFormat::Oci => "application/vnd.oci.image.manifest.v1+json",
        }
    }

    /// The media type of an index (manifest list) over images of this format.
    pub fn index_media_type(self) -> &'static str {
        match self {
            ImageFormat::DockerV2 => "application/vnd.docker.distribution.manifest.list.v2+json",
            ImageFormat::Oci => "application/vnd.oci.image.index.v1+json",
        }
    }

    /// The media type of an image config in this format.
    pub fn config_media_type(self) -> &'static str {
        match self {
            ImageFormat::DockerV2 => "application/vnd.docker.container.image.v1+json",
            ImageFormat::Oci => "application/vnd.oci.image.config.v1+json",
        }
    }

    /// The media type of a gzip-compressed layer in this format.
    pub fn gzip_layer_media_type(self) -> &'static str {
        match self {
            ImageFormat::DockerV2 => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            ImageFormat::Oci => "application/vnd.oci.image.layer.v1.tar+gzip",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_format_names_its_own_family_of_media_types() {
        for (format, family) in [
            (ImageFormat::DockerV2, "application/vnd.docker."),
            (ImageFormat::Oci, "application/vnd.oci.image."),
        ] {
            for media_type in [
                format.manifest_media_type(),
                format.index_media_type(),
                format.config_media_type(),
                format.gzip_layer_media_type(),
            ] {
                assert!(media_type.starts_with(family), "{format:?}: {media_type}");
            }
        }
        assert_eq!(ImageFormat::default(), ImageFormat::DockerV2);
    }
}
