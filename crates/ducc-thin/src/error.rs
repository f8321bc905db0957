//! Errors of thin-image building and pushing.

/// A thin image that could not be built or pushed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ThinError {
    /// Building the image in memory failed (a broken invariant, not bad input).
    #[error("cannot build the thin image: {0}")]
    Build(String),
    /// The output image name cannot be used for a push.
    #[error("invalid thin image name `{image}`")]
    Name {
        /// The output image.
        image: String,
        /// Why.
        #[source]
        source: ducc_registry::Error,
    },
    /// A registry request of the push failed; the registry's message is in the cause.
    #[error("cannot push thin image `{image}` ({step})")]
    Push {
        /// The output image.
        image: String,
        /// Which part of the push: `layer`, `config`, `manifest` or `existing manifest check`.
        step: &'static str,
        /// The registry error.
        #[source]
        source: ducc_registry::Error,
    },
    /// The registry stored the manifest under another digest than the one built.
    #[error("registry stored thin image `{image}` as {stored}, not {built}")]
    DigestChanged {
        /// The output image.
        image: String,
        /// The digest built here.
        built: ducc_oci::ManifestDigest,
        /// The digest the registry answered.
        stored: ducc_registry::oci_spec::image::Digest,
    },
}
