//! The conversion engine, as serve sees it.

use std::sync::atomic::AtomicBool;

use ducc_convert::{Outcome, Step};
use ducc_wishlist::{Wish, WishList};

use crate::matching::Target;

/// What a conversion that did not fail did: the engine's [`Outcome`] of each image it made
/// (one, or one per platform with `--multi-arch`) and the revisions (commits) it made in the
/// repository (0 with the local publisher).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    outcomes: Vec<Outcome>,
    revisions: usize,
}

impl Done {
    /// `outcomes` of one conversion that made `revisions` revisions.
    pub fn new(outcomes: Vec<Outcome>, revisions: usize) -> Done {
        Done {
            outcomes,
            revisions,
        }
    }

    /// Whether work was done for any of its images (layers, flat tree, links, marker or thin
    /// image written); else the repository had them already, or they are another shard's.
    pub fn converted(&self) -> bool {
        self.outcomes
            .iter()
            .any(|o| matches!(o, Outcome::Converted { .. }))
    }

    /// The engine's outcome of each image.
    pub fn outcomes(&self) -> &[Outcome] {
        &self.outcomes
    }

    /// Revisions (commits) made in the repository.
    pub fn revisions(&self) -> usize {
        self.revisions
    }
}

/// A failed conversion or tag listing: the step and the error, already formatted with its causes
/// (the engine's error types stay the engine's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversionFailure {
    step: Step,
    message: String,
}

impl ConversionFailure {
    /// A failure at `step` (the engine's steps: `tags`, `manifest`, `layers`, `flat`, ...).
    pub fn new(step: Step, message: impl Into<String>) -> ConversionFailure {
        ConversionFailure {
            step,
            message: message.into(),
        }
    }

    /// The step that failed.
    pub fn step(&self) -> Step {
        self.step
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
pub type ImageReport = Result<Done, ConversionFailure>;

/// What [`Session::convert`] did with one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conversion {
    /// The conversion ended.
    Done(ImageReport),
    /// The image is complete but waits in the session's batch of commits (`--batch`): its
    /// report comes from [`Session::publish`].
    Held,
}

/// Conversions one at a time, on the worker thread, that may hold converted images in a batch
/// of commits (`--batch`): serve publishes the batch when it is due, when the queue is empty,
/// at the end of a full pass and before it stops.
pub trait Session {
    /// Converts one image (a plain tag), as [`Backend::convert`] does, or holds it in the batch.
    fn convert(&mut self, list: &WishList, target: &Target, stop: &AtomicBool) -> Conversion;

    /// Whether the batch reached one of its limits and should be published now.
    fn batch_is_due(&self) -> bool;

    /// Publishes the batch: the report of each image it held.
    fn publish(&mut self) -> Vec<(Target, ImageReport)>;
}

/// A session over [`Backend::convert`]: every image ends on its own.
struct Unbatched<'a, B: ?Sized>(&'a B);

impl<B: Backend + ?Sized> Session for Unbatched<'_, B> {
    fn convert(&mut self, list: &WishList, target: &Target, stop: &AtomicBool) -> Conversion {
        Conversion::Done(self.0.convert(list, target, stop))
    }

    fn batch_is_due(&self) -> bool {
        false
    }

    fn publish(&mut self) -> Vec<(Target, ImageReport)> {
        Vec::new()
    }
}

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

    /// Waits for a repository lease another publisher node held, since the backend was
    /// made (it only grows; `ducc_lease_waits_total`). The default: none.
    fn lease_waits(&self) -> u64 {
        0
    }

    /// The session the worker converts in, for as long as serve runs. The default converts
    /// each image on its own through [`Backend::convert`]; a backend that batches commits
    /// returns its own.
    fn session(&self) -> Box<dyn Session + '_> {
        Box::new(Unbatched(self))
    }
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
            .map_err(|e| ConversionFailure::new(Step::Tags, e.chain()))?;
        images
            .into_iter()
            .map(|(image, output)| {
                let output = match output {
                    Some(output) => output,
                    None => list
                        .output_for(&image)
                        .map_err(|e| ConversionFailure::new(Step::Tags, e.to_string()))?,
                };
                Ok(Target::new(image, output))
            })
            .collect()
    }

    fn convert(&self, list: &WishList, target: &Target, _stop: &AtomicBool) -> ImageReport {
        report(
            &self
                .engine
                .convert_listed(list, target.image(), Some(target.output()), &self.stop),
        )
    }

    fn lease_waits(&self) -> u64 {
        u64::try_from(self.engine.lease_waits()).unwrap_or(u64::MAX)
    }

    fn session(&self) -> Box<dyn Session + '_> {
        Box::new(EngineSession {
            session: self.engine.session(&self.stop),
            held: Vec::new(),
        })
    }
}

/// The engine's session (its batch of commits), and the images it holds.
struct EngineSession<'e> {
    session: ducc_convert::Session<'e>,
    held: Vec<Target>,
}

impl Session for EngineSession<'_> {
    fn convert(&mut self, list: &WishList, target: &Target, _stop: &AtomicBool) -> Conversion {
        let results = self
            .session
            .convert_listed(list, target.image(), Some(target.output()));
        if results.iter().any(ducc_convert::ImageResult::is_held) {
            self.held.push(target.clone());
            return Conversion::Held;
        }
        Conversion::Done(report(&results))
    }

    fn batch_is_due(&self) -> bool {
        self.session.batch_is_due()
    }

    fn publish(&mut self) -> Vec<(Target, ImageReport)> {
        let results = self.session.publish_batch();
        let held = std::mem::take(&mut self.held);
        held.into_iter()
            .filter_map(|target| {
                let label = target.image().whole_name();
                let result = results.iter().find(|r| r.image() == label)?;
                Some((target, report(std::slice::from_ref(result))))
            })
            .collect()
    }
}

/// The report of one image from the engine's results (one per platform with `--multi-arch`).
fn report(results: &[ducc_convert::ImageResult]) -> ImageReport {
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    let revisions = results.iter().map(|r| r.revisions()).sum();
    for result in results {
        match result.result() {
            Ok(outcome) => outcomes.push(outcome.clone()),
            Err(failure) => {
                failures.push((result.image(), failure.step(), failure.error().chain()))
            }
        }
    }
    match failures.as_slice() {
        [] => Ok(Done::new(outcomes, revisions)),
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
