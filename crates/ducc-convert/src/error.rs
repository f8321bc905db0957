//! The engine's errors: which step of an image failed, what kind of failure it was, and the
//! chain of causes from the library that failed (registry, publisher, unpacker, thin image).

use std::fmt;

/// A [`ConvertError`] of kind [`ErrorKind::Image`] with a `format!` message.
macro_rules! invalid {
    ($($arg:tt)*) => {
        $crate::error::ConvertError::image(format!($($arg)*))
    };
}

/// Returns early with [`invalid!`].
macro_rules! bail_invalid {
    ($($arg:tt)*) => {
        return Err($crate::error::invalid!($($arg)*).into())
    };
}

pub(crate) use {bail_invalid, invalid};

/// The step of an image's conversion that failed, as the `-n` events and the summary name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Step {
    /// Listing the tags a wish's glob matches.
    Tags,
    /// Fetching or checking the manifest (or index).
    Manifest,
    /// Fetching or checking the image config.
    Config,
    /// Checking the image's signatures against the signature policy (before any blob).
    Signature,
    /// Downloading and unpacking the layers.
    Layers,
    /// Building the flat root filesystem.
    Flat,
    /// The public symlink (or the `.multiarch` links).
    Symlink,
    /// The podman additional image store.
    Podman,
    /// The completion marker.
    Marker,
    /// Pushing the thin image.
    Thin,
    /// A bug: a panic caught at the image boundary.
    Internal,
}

impl Step {
    /// The step's name: `manifest`, `layers`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Tags => "tags",
            Step::Manifest => "manifest",
            Step::Config => "config",
            Step::Signature => "signature",
            Step::Layers => "layers",
            Step::Flat => "flat",
            Step::Symlink => "symlink",
            Step::Podman => "podman",
            Step::Marker => "marker",
            Step::Thin => "thin",
            Step::Internal => "internal",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of failure an error is, for decisions a caller makes (retry later, fix the input).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The registry failed or refused (network, auth, not found, digest mismatch).
    Registry,
    /// The repository could not be written (publisher, lock, `cvmfs_server`).
    Publish,
    /// A layer could not be unpacked (bad tar, limits, digests).
    Unpack,
    /// The thin image could not be built or pushed.
    Thin,
    /// The image itself is not convertible (manifest and config disagree, no linux platform,
    /// bad names or digests).
    Image,
    /// Local I/O (scratch space, blob cache).
    Io,
    /// The signature policy refuses the image.
    Signature,
    /// A stop was requested (SIGINT, SIGTERM).
    Interrupted,
    /// A bug in ducc: a panic was caught.
    Bug,
}

/// An error of the engine: a message saying what was being done, its kind, and the error that
/// caused it (available through [`std::error::Error::source`]).
///
/// Without a message of its own it shows its cause's message: then it only carries the kind.
#[derive(Debug)]
pub struct ConvertError {
    kind: ErrorKind,
    message: Option<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl ConvertError {
    /// An error of `kind` with `message` and no cause.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ConvertError {
        ConvertError {
            kind,
            message: Some(message.into()),
            source: None,
        }
    }

    /// The image is not convertible: `message` says why.
    pub(crate) fn image(message: impl Into<String>) -> ConvertError {
        ConvertError::new(ErrorKind::Image, message)
    }

    /// The stop token was set.
    pub(crate) fn interrupted() -> ConvertError {
        ConvertError::new(ErrorKind::Interrupted, "interrupted by a signal")
    }

    /// `cause` of `kind`, shown as it is.
    pub(crate) fn from_cause(
        kind: ErrorKind,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> ConvertError {
        ConvertError {
            kind,
            message: None,
            source: Some(Box::new(cause)),
        }
    }

    /// This error with `message` in front (`message: this error`), of the same kind.
    pub fn context(self, message: impl Into<String>) -> ConvertError {
        ConvertError {
            kind: self.kind,
            message: Some(message.into()),
            source: Some(Box::new(self)),
        }
    }

    /// What kind of failure this is (the innermost kind: context does not change it).
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message and its causes on one line, `message: cause: cause`.
    pub fn chain(&self) -> String {
        ducc_oci::error_chain(self)
    }
}

impl fmt::Display for ConvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.message, &self.source) {
            (Some(message), _) => f.write_str(message),
            (None, Some(source)) => fmt::Display::fmt(source, f),
            (None, None) => f.write_str("unknown error"),
        }
    }
}

impl std::error::Error for ConvertError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        let source = self.source.as_deref()?;
        if self.message.is_some() {
            Some(source)
        } else {
            // Shown as its cause: the cause's causes come next.
            source.source()
        }
    }
}

macro_rules! from_library {
    ($($error:ty => $kind:ident),* $(,)?) => {
        $(impl From<$error> for ConvertError {
            fn from(error: $error) -> ConvertError {
                ConvertError::from_cause(ErrorKind::$kind, error)
            }
        })*
    };
}

from_library! {
    ducc_registry::Error => Registry,
    ducc_trust::Refusal => Signature,
    ducc_cvmfs::PublishError => Publish,
    ducc_cvmfs::PodmanError => Publish,
    ducc_cvmfs::lifecycle::LifecycleError => Publish,
    ducc_cvmfs::PathError => Image,
    ducc_oci::DigestError => Image,
    ducc_unpack::Error => Unpack,
    ducc_thin::ThinError => Thin,
    ducc_oci::ReferenceError => Image,
    ducc_wishlist::TemplateError => Image,
    std::io::Error => Io,
}

/// `with_context` for results whose error becomes a [`ConvertError`].
pub(crate) trait Context<T> {
    /// The error with the message `message()` makes in front.
    fn with_context<M: Into<String>>(self, message: impl FnOnce() -> M) -> Result<T, ConvertError>;
}

impl<T, E: Into<ConvertError>> Context<T> for Result<T, E> {
    fn with_context<M: Into<String>>(self, message: impl FnOnce() -> M) -> Result<T, ConvertError> {
        self.map_err(|e| e.into().context(message()))
    }
}

/// A failed image: the step and the error.
#[derive(Debug)]
pub struct ImageFailure {
    step: Step,
    error: ConvertError,
}

impl ImageFailure {
    /// `error` at `step`.
    pub fn new(step: Step, error: ConvertError) -> ImageFailure {
        ImageFailure { step, error }
    }

    /// The step that failed.
    pub fn step(&self) -> Step {
        self.step
    }

    /// What went wrong.
    pub fn error(&self) -> &ConvertError {
        &self.error
    }

    /// The error, by value.
    pub fn into_error(self) -> ConvertError {
        self.error
    }
}

impl fmt::Display for ImageFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {}", self.step, self.error.chain())
    }
}

impl std::error::Error for ImageFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Turns an error into an [`ImageFailure`] at `step`.
pub(crate) fn at<E: Into<ConvertError>>(step: Step) -> impl Fn(E) -> ImageFailure {
    move |error| ImageFailure::new(step, error.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_goes_in_front_and_the_kind_stays_the_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let error = ConvertError::from(io)
            .context("cannot open cached blob /x")
            .context("layer sha256:ab of img");
        assert_eq!(
            error.chain(),
            "layer sha256:ab of img: cannot open cached blob /x: no such file"
        );
        assert_eq!(error.kind(), ErrorKind::Io);
        assert_eq!(error.to_string(), "layer sha256:ab of img");
    }

    #[test]
    fn an_error_without_a_message_shows_its_cause_once() {
        let error = ConvertError::from(std::io::Error::other("disk full"));
        assert_eq!(error.to_string(), "disk full");
        assert_eq!(error.chain(), "disk full");
        let failure = ImageFailure::new(Step::Flat, error.context("flat tree"));
        assert_eq!(failure.to_string(), "flat failed: flat tree: disk full");
        assert_eq!(failure.step().as_str(), "flat");
    }
}
