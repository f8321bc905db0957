//! Batches of images (`--batch N`, `--batch-seconds S`; issue 29): what several images publish
//! besides their layers goes in as one commit.
//!
//! Each image of a batch still converts in a group of its own, nested in the batch's group
//! ([`ducc_cvmfs::Group::nested`]): its transactions see what the images before it wrote (a
//! shared layer's `origin.json`, the podman store's `images.json`) and reuse the leases the batch
//! holds, its layers go in at once (its flat tree's grafts name their stored objects), and the
//! rest joins the batch only once the image is complete, marker included. An image that fails
//! drops its nested group: nothing of it is in the batch, and the others are untouched. The
//! batch is published when it holds N images, when S seconds passed since its first one, when
//! its flat trees staged in scratch space reach [`STAGED_LIMIT`], or at the end of a pass; only
//! then are its images reported converted (their `marker` and `end_image` events are held until
//! then). A batch whose publish fails fails each of its images; a killed run leaves none of it
//! published, and the next run converts them again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ducc_cvmfs::{Group, ImageSlot, PublishError, Published, Publisher};
use ducc_oci::ConfigDigest;

use crate::events::Event;

/// How many bytes of flat trees a batch keeps in scratch space before it is published, whatever
/// its other limits: batching saves a revision per image, which matters for small images only,
/// and a big image's trees should not wait on the disk for the next ones.
pub const STAGED_LIMIT: u64 = 1 << 30;

/// When a batch is published (`--batch`, `--batch-seconds`): whichever limit comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    images: usize,
    seconds: u64,
}

impl BatchLimits {
    /// Batches of at most `images` images (1: every image is its own commit), published at
    /// the latest `seconds` after their first image was complete.
    ///
    /// # Errors
    /// When `images` or `seconds` is 0.
    pub fn new(images: usize, seconds: u64) -> Result<BatchLimits, String> {
        if images == 0 {
            return Err("--batch must be at least 1 (1: every image is its own commit)".into());
        }
        if seconds == 0 {
            return Err("--batch-seconds must be at least 1".into());
        }
        Ok(BatchLimits { images, seconds })
    }

    /// Every image its own commit.
    pub fn none() -> BatchLimits {
        BatchLimits {
            images: 1,
            seconds: 1,
        }
    }

    /// The default: batches of 10 images or 60 seconds. A commit costs about 0.3 s on a
    /// stratum 0 and 1 s through a gateway (`cvmfs-gateway-behaviour.md`, section 6), which for
    /// the daily updates of small images is most of their cost; 10 images keep a failed publish
    /// (which fails its whole batch) and the wait for the marker small.
    pub fn default_limits() -> BatchLimits {
        BatchLimits {
            images: 10,
            seconds: 60,
        }
    }

    /// Images per batch.
    pub fn images(&self) -> usize {
        self.images
    }

    /// Seconds a batch waits at most.
    pub fn seconds(&self) -> u64 {
        self.seconds
    }

    /// Whether a batch of `images` images, whose flat trees take `staged` bytes of scratch
    /// space and whose first image came `age` ago, is to be published now: never when empty,
    /// else at the first limit reached.
    fn due(&self, images: usize, staged: u64, age: Option<Duration>) -> bool {
        images > 0
            && (images >= self.images
                || staged >= STAGED_LIMIT
                || age.is_some_and(|age| age >= Duration::from_secs(self.seconds)))
    }
}

impl Default for BatchLimits {
    fn default() -> BatchLimits {
        BatchLimits::default_limits()
    }
}

/// An image complete in a batch, waiting for the batch's publish.
#[derive(Debug)]
pub(crate) struct Deferred {
    /// The image's result label.
    pub(crate) label: String,
    /// What its conversion did, reported once the batch is in.
    pub(crate) outcome: crate::Outcome,
    /// Whether the wish list's `ignore_errors` covers it.
    pub(crate) ignored: bool,
    /// The revisions it made before the batch (its layers).
    pub(crate) revisions: usize,
    /// The lease waits of its conversion before the batch.
    pub(crate) lease_waits: usize,
    /// Its events held until the batch is published (`published`, `marker`, `end_image`).
    pub(crate) events: Vec<Event>,
    /// Its marker and the config it records: when the batch's publish fails, an image whose
    /// marker is in nonetheless (a lease another process held made the batch publish early)
    /// is converted.
    pub(crate) marker: (ImageSlot, ConfigDigest),
}

#[derive(Default)]
struct State {
    /// What the batch's group had published when the last batch was published.
    reported: Published,
    opened: Option<Instant>,
    images: Vec<Deferred>,
    /// Flat trees in the batch: config and apparent size.
    flat_trees: Vec<(ConfigDigest, u64)>,
}

/// The batch of one run of the engine.
pub(crate) struct Batch<'e> {
    group: Box<dyn Group + 'e>,
    limits: BatchLimits,
    state: Mutex<State>,
}

impl<'e> Batch<'e> {
    /// A batch of `publisher`'s commits.
    pub(crate) fn new(publisher: &'e dyn Publisher, limits: BatchLimits) -> Batch<'e> {
        Batch {
            group: publisher.group(),
            limits,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The group an image of the batch converts in.
    pub(crate) fn image_group(&self) -> Box<dyn Group + '_> {
        self.group.nested()
    }

    /// The apparent size of the flat tree of `config` when an image of the batch built it.
    pub(crate) fn flat_tree(&self, config: &ConfigDigest) -> Option<u64> {
        self.state()
            .flat_trees
            .iter()
            .find(|(c, _)| c == config)
            .map(|(_, size)| *size)
    }

    /// Takes in an image whose nested group was committed into the batch.
    pub(crate) fn add(&self, image: Deferred, flat_tree: Option<(ConfigDigest, u64)>) {
        let mut state = self.state();
        state.opened.get_or_insert_with(Instant::now);
        state.images.push(image);
        state.flat_trees.extend(flat_tree);
    }

    /// Whether the image labelled `label` waits in the batch.
    pub(crate) fn holds(&self, label: &str) -> bool {
        self.state().images.iter().any(|d| d.label == label)
    }

    /// How many images wait in the batch.
    pub(crate) fn len(&self) -> usize {
        self.state().images.len()
    }

    /// Whether the batch should be published now.
    pub(crate) fn is_due(&self) -> bool {
        let state = self.state();
        let staged: u64 = state.flat_trees.iter().map(|(_, size)| size).sum();
        self.limits.due(
            state.images.len(),
            staged,
            state.opened.map(|t| t.elapsed()),
        )
    }

    /// Publishes the batch: its images, and what was published for them since the last batch
    /// (its commit, and what its images' transactions published at once), or why it failed.
    pub(crate) fn publish(&self) -> (Vec<Deferred>, Result<Published, PublishError>) {
        let flushed = self.group.flush();
        let mut state = self.state();
        let images = std::mem::take(&mut state.images);
        let total = self.group.published();
        let since = since(total, state.reported);
        *state = State {
            reported: total,
            ..State::default()
        };
        (images, flushed.map(|_| since))
    }
}

/// What `total` holds beyond `before`.
fn since(total: Published, before: Published) -> Published {
    let mut out = Published::default();
    out.revisions = total.revisions.saturating_sub(before.revisions);
    out.grafted_files = total.grafted_files.saturating_sub(before.grafted_files);
    out.copied_files = total.copied_files.saturating_sub(before.copied_files);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_refuse_zero_and_the_default_batches_ten_images_or_a_minute() {
        assert!(BatchLimits::new(0, 60).unwrap_err().contains("--batch"));
        assert!(
            BatchLimits::new(3, 0)
                .unwrap_err()
                .contains("--batch-seconds")
        );
        let limits = BatchLimits::default();
        assert_eq!((limits.images(), limits.seconds()), (10, 60));
        assert_eq!(BatchLimits::none().images(), 1);
    }

    /// Issue 29: `--batch N` or `--batch-seconds S`, whichever comes first, and the staged
    /// bytes of big flat trees whatever both say; an empty batch is never due.
    #[test]
    fn a_batch_is_due_at_its_image_limit_its_age_limit_or_its_staged_bytes_whichever_comes_first() {
        let limits = BatchLimits::new(3, 60).unwrap();
        let young = Some(Duration::from_secs(59));
        let old = Some(Duration::from_secs(60));
        // (images, staged bytes, age of its first image, due)
        for (images, staged, age, due) in [
            (0, 0, None, false),
            (0, STAGED_LIMIT, old, false),
            (1, 0, Some(Duration::ZERO), false),
            (2, 0, young, false),
            (3, 0, Some(Duration::ZERO), true),
            (1, 0, old, true),
            (2, 0, Some(Duration::from_secs(3600)), true),
            (1, STAGED_LIMIT - 1, young, false),
            (1, STAGED_LIMIT, Some(Duration::ZERO), true),
        ] {
            assert_eq!(
                limits.due(images, staged, age),
                due,
                "{images} images, {staged} bytes, {age:?}"
            );
        }
        // One image per batch: due as soon as it holds one.
        assert!(BatchLimits::none().due(1, 0, Some(Duration::ZERO)));
    }
}
