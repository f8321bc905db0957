//! The conversion engine, as serve sees it.

use std::sync::atomic::AtomicBool;

use ducc_wishlist::{Wish, WishList};

use crate::matching::Target;

/// What a conversion that did not fail did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageOutcome {
    /// Work was done (layers, flat tree, links, marker or thin image written).
    Converted {
        /// Revisions (commits) it made in the repository (0 with the local publisher).
        revisions: usize,
    },
    /// The repository records this image as converted already.
    UpToDate,
}

/// A failed conversion or tag listing: the step and the error, already formatted with its causes
/// (the engine's error types stay the engine's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversionFailure {
    step: String,
    message: String,
}

impl ConversionFailure {
    /// A failure at `step` (`tags`, `manifest`, `layers`, `flat`, ...).
    pub fn new(step: impl Into<String>, message: impl Into<String>) -> ConversionFailure {
        ConversionFailure {
            step: step.into(),
            message: message.into(),
        }
    }

    /// The step that failed.
    pub fn step(&self) -> &str {
        &self.step
    }

    /// What went wrong, with its causes.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for ConversionFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failed: {}", self.step, self.message)
    }
}

/// What one image's conversion ended in.
pub type ImageReport = Result<ImageOutcome, ConversionFailure>;

/// The conversion engine serve drives: `ducc convert` one image at a time. The CLI implements it
/// over its engine; tests implement it to script outcomes.
///
/// serve calls it from one worker thread, one call at a time.
pub trait Backend: Send + Sync {
    /// The images `wish` stands for, as `ducc convert` expands it: the wish itself, or one image
    /// per tag of the registry's tag list that its glob matches, each with its thin image.
    ///
    /// # Errors
    /// A [`ConversionFailure`] (step `tags`) when the tag list cannot be read.
    fn expand(&self, list: &WishList, wish: &Wish) -> Result<Vec<Target>, ConversionFailure>;

    /// Converts one image (a plain tag) into the repository and pushes its thin image, as
    /// `ducc convert` does for it. Once `stop` is set it aborts the running step (and its
    /// transaction) and returns.
    fn convert(&self, list: &WishList, target: &Target, stop: &AtomicBool) -> ImageReport;
}

/// The [`Backend`] over ducc-convert's [`Engine`](ducc_convert::Engine): what `ducc serve`
/// runs. Its stop token is the one SIGTERM sets, so a stop aborts the running step.
pub struct EngineBackend {
    engine: ducc_convert::Engine,
    stop: ducc_convert::StopToken,
}

impl EngineBackend {
    /// `engine`, stopped by `stop`.
    pub fn new(engine: ducc_convert::Engine, stop: ducc_convert::StopToken) -> EngineBackend {
        EngineBackend { engine, stop }
    }
}

impl Drop for EngineBackend {
    fn drop(&mut self) {
        self.engine.clean_cache();
    }
}

impl Backend for EngineBackend {
    fn expand(&self, list: &WishList, wish: &Wish) -> Result<Vec<Target>, ConversionFailure> {
        let images = self
            .engine
            .expand(&wish.input, Some(&wish.output), Some(list))
            .map_err(|e| ConversionFailure::new("tags", e.chain()))?;
        images
            .into_iter()
            .map(|(image, output)| {
                let output = match output {
                    Some(output) => output,
                    None => list
                        .output_for(&image)
                        .map_err(|e| ConversionFailure::new("tags", e.to_string()))?,
                };
                Ok(Target::new(image, output))
            })
            .collect()
    }

    fn convert(&self, list: &WishList, target: &Target, _stop: &AtomicBool) -> ImageReport {
        let results =
            self.engine
                .convert_listed(list, target.image(), Some(target.output()), &self.stop);
        let mut converted = false;
        let mut failures = Vec::new();
        let revisions = results.iter().map(|r| r.revisions()).sum();
        for result in &results {
            match result.result() {
                Ok(outcome) => {
                    converted |= matches!(outcome, ducc_convert::Outcome::Converted { .. });
                }
                Err(failure) => failures.push((
                    result.image(),
                    failure.step().as_str(),
                    failure.error().chain(),
                )),
            }
        }
        match failures.as_slice() {
            [] if converted => Ok(ImageOutcome::Converted { revisions }),
            [] => Ok(ImageOutcome::UpToDate),
            [(_, step, message)] => Err(ConversionFailure::new(*step, message.clone())),
            // --multi-arch: one line per failed platform.
            [(_, step, _), ..] => Err(ConversionFailure::new(
                *step,
                failures
                    .iter()
                    .map(|(label, step, message)| format!("{label} ({step}): {message}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            )),
        }
    }
}
