//! A session: conversions that share one batch (`--batch`, issue 29). `convert` runs one for a
//! wish list; `serve` keeps one for as long as it runs, so the images of a full pass or of a
//! burst of notifications go in as few commits as the batch limits allow.

use ducc_oci::ImageRef;
use ducc_registry::Login;
use ducc_wishlist::WishList;

use crate::batch::Batch;
use crate::engine::{Engine, ImageResult, Outcome, StopToken};
use crate::error::{ConvertError, Step};
use crate::events::Event;
use crate::image::Job;

/// Conversions that share one batch of commits. Get one with [`Engine::session`]; it converts
/// one image at a time, on the thread that holds it.
///
/// With batching (`Settings::batch` above one image, and not `--multi-arch`) an image that
/// converts is complete but *held*: what it publishes besides its layers (marker included)
/// waits in the session's batch, and its result says [`ImageResult::is_held`]. Publish the
/// batch when [`Session::batch_is_due`] says so, when there is nothing else to do, and before
/// the session ends ([`Session::publish_batch`]): that gives each held image its final result.
/// A session dropped with images held publishes nothing of them (as after a kill: the next run
/// converts them again).
pub struct Session<'e> {
    engine: &'e Engine,
    stop: &'e StopToken,
    batch: Option<Batch<'e>>,
}

impl Engine {
    /// A session of conversions stopped by `stop` (see [`Session`]).
    pub fn session<'e>(&'e self, stop: &'e StopToken) -> Session<'e> {
        let limits = self.settings.batch;
        let batch = (limits.images() > 1 && !self.settings.multi_arch)
            .then(|| Batch::new(&*self.publisher, limits));
        Session {
            engine: self,
            stop,
            batch,
        }
    }
}

impl<'e> Session<'e> {
    /// Converts `image`, one image of `list` (a plain tag, as [`Engine::expand`] gives them),
    /// with its thin image `thin` pushed with the list's `user`; failures that the list's
    /// `ignore_errors` covers are marked ignored.
    pub fn convert_listed(
        &self,
        list: &WishList,
        image: &ImageRef,
        thin: Option<&ImageRef>,
    ) -> Vec<ImageResult> {
        self.convert_wished(list, image, thin, list.is_error_ignored(image))
    }

    /// [`Session::convert_listed`], its failure ignored when `ignored` (the wish it comes
    /// from is covered by `ignore_errors`).
    pub(crate) fn convert_wished(
        &self,
        list: &WishList,
        image: &ImageRef,
        thin: Option<&ImageRef>,
        ignored: bool,
    ) -> Vec<ImageResult> {
        let login = ducc_registry::output_login(list.user(), &self.engine.environment);
        let login = login.as_ref().or(self.engine.thin_login.as_ref());
        self.attempt(image, thin, login, ignored)
    }

    /// Converts `image` (a plain tag or digest, no glob) and pushes `thin` as its thin image
    /// with the engine's thin login; see [`Engine::convert_image`].
    pub fn convert_image(&self, image: &ImageRef, thin: Option<&ImageRef>) -> Vec<ImageResult> {
        self.attempt(image, thin, self.engine.thin_login.as_ref(), false)
    }

    /// How many converted images wait in the batch.
    pub fn held(&self) -> usize {
        self.batch.as_ref().map_or(0, Batch::len)
    }

    /// Whether the batch reached one of its limits (images, seconds, staged bytes) and should
    /// be published now.
    pub fn batch_is_due(&self) -> bool {
        self.batch.as_ref().is_some_and(Batch::is_due)
    }

    /// Publishes the batch, tells its images' held events, and returns the final result of
    /// each image it held (in the order they were converted). When the publish fails, each of
    /// them fails (step `marker`: none is recorded) unless its marker is in nonetheless.
    pub fn publish_batch(&self) -> Vec<ImageResult> {
        let Some(batch) = &self.batch else {
            return Vec::new();
        };
        let engine = self.engine;
        let started = std::time::Instant::now();
        let waits_before = engine.lease_waits();
        let (images, published) = batch.publish();
        // Lease waits of the batch's commit count on its last image.
        let batch_waits = engine.lease_waits() - waits_before;
        let Some(last) = images.last().map(|d| d.label.clone()) else {
            return Vec::new();
        };
        let mut results = Vec::with_capacity(images.len());
        match published {
            Ok(published) => {
                tracing::info!(
                    images = images.len(),
                    revisions = published.revisions,
                    seconds = started.elapsed().as_secs_f64(),
                    "batch of {} images published",
                    images.len()
                );
                for image in images {
                    for mut event in image.events {
                        if let Event::Published {
                            revisions,
                            grafted_files,
                            copied_files,
                            image_publish_s,
                            ..
                        } = &mut event
                        {
                            // The batch's one commit is counted on its last image.
                            *image_publish_s = started.elapsed().as_secs_f64();
                            if image.label == last {
                                *revisions += published.revisions;
                                *grafted_files += published.grafted_files;
                                *copied_files += published.copied_files;
                            }
                        }
                        engine.events.event(&event);
                    }
                    let mut result = ImageResult::new(image.label, Ok(image.outcome))
                        .with_ignored(image.ignored);
                    result.add_revisions(image.revisions);
                    result.add_lease_waits(image.lease_waits);
                    if result.image() == last {
                        result.add_revisions(published.revisions);
                        result.add_lease_waits(batch_waits);
                    }
                    results.push(result);
                }
            }
            Err(error) => {
                let error = ConvertError::from(error).chain();
                let count = images.len();
                let state = ducc_cvmfs::RepositoryState::new(&*engine.publisher, &engine.layout);
                for image in images {
                    let (slot, config) = &image.marker;
                    if !engine.settings.convert_again
                        && state.marker_config(slot).as_ref() == Some(config)
                    {
                        // Published before the batch's end (see `Deferred::marker`).
                        image.events.iter().for_each(|e| engine.events.event(e));
                        let mut result = ImageResult::new(image.label, Ok(image.outcome))
                            .with_ignored(image.ignored);
                        result.add_revisions(image.revisions);
                        result.add_lease_waits(image.lease_waits);
                        if result.image() == last {
                            result.add_lease_waits(batch_waits);
                        }
                        results.push(result);
                        continue;
                    }
                    let failed = ImageResult::failed(
                        image.label,
                        Step::Marker,
                        ConvertError::image(format!(
                            "the commit of its batch of {count} image{} failed: {error}",
                            if count == 1 { "" } else { "s" }
                        )),
                    );
                    let mut failed = engine.report(failed, image.ignored);
                    failed.add_revisions(image.revisions);
                    failed.add_lease_waits(image.lease_waits);
                    if failed.image() == last {
                        failed.add_lease_waits(batch_waits);
                    }
                    results.push(failed);
                }
            }
        }
        results
    }

    /// Converts `image` up to [`crate::Settings::attempts`] times, until it does not fail, and
    /// reports the last attempt's results.
    fn attempt(
        &self,
        image: &ImageRef,
        thin: Option<&ImageRef>,
        login: Option<&Login>,
        ignored: bool,
    ) -> Vec<ImageResult> {
        let engine = self.engine;
        let shard = engine.settings.shard;
        if !shard.contains(image) {
            let label = image.whole_name();
            engine.events.event(&Event::ImageOtherShard {
                image: label.clone(),
                shard: shard.to_string(),
                owner: crate::Shard::owner_of(&image.simple_name(), shard.count()),
            });
            return vec![ImageResult::new(label, Ok(Outcome::OtherShard)).with_ignored(ignored)];
        }
        let job = Job::new(engine, self.stop, login, self.batch.as_ref(), ignored);
        let mut attempt = 1;
        loop {
            // This node's own publishes since its last refresh (behind a gateway) show in its
            // view only after one: the image's checks would miss them and write again.
            engine.refresh_view(ducc_cvmfs::RefreshPoint::NextImage);
            let results = job.convert(image, thin);
            if let Some(failure) = results.iter().find_map(ImageResult::failure)
                && attempt < engine.settings.attempts
                && !self.stop.is_stopped()
            {
                tracing::warn!(
                    image = %image,
                    step = %failure.step(),
                    error = failure.error() as &dyn std::error::Error,
                    "{} failed (attempt {attempt}), retrying",
                    failure.step(),
                );
                attempt += 1;
                continue;
            }
            return results
                .into_iter()
                .map(|r| {
                    let held = r.result().is_ok()
                        && self.batch.as_ref().is_some_and(|b| b.holds(r.image()));
                    engine.report(r, ignored).with_held(held)
                })
                .collect();
        }
    }
}
