//! The engine: set up once with a publisher, an image source (the registry) and settings;
//! converts one image, or every image of a wish list, into the repository.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ducc_cvmfs::{Layout, OverlaySupport, Publisher, RefreshPoint};
use ducc_oci::{ImageRef, RepositoryName};
use ducc_registry::{Client, ClientOptions, Credentials, Environment, Login, Repository};
use ducc_thin::PushOutcome;
use ducc_unpack::WhiteoutFormat;
use ducc_wishlist::WishList;

use crate::cache::BlobCache;
use crate::error::{ConvertError, ErrorKind, ImageFailure, Step};
use crate::events::{EndStatus, Event, EventSink, LeaseWaits, NoEvents};
use crate::settings::Settings;
use crate::source::ImageSource;

/// Asks a running conversion to stop: it stops between steps (and inside long extractions), and
/// the transaction it has open is aborted. Cheap to clone; all clones share one flag.
#[derive(Debug, Clone, Default)]
pub struct StopToken {
    flag: Arc<AtomicBool>,
}

impl StopToken {
    /// A token nobody has stopped yet.
    pub fn new() -> StopToken {
        StopToken::default()
    }

    /// A token backed by `flag` (e.g. one that signal handlers set).
    pub fn from_flag(flag: Arc<AtomicBool>) -> StopToken {
        StopToken { flag }
    }

    /// Asks for the stop.
    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was asked for.
    pub fn is_stopped(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    pub(crate) fn flag(&self) -> &AtomicBool {
        &self.flag
    }
}

/// What happened to an image that did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The marker records the same config: nothing was downloaded or written.
    UpToDate,
    /// The image is in another node's shard (`--shard K/N`): this node did not look at it.
    OtherShard,
    /// Work was done.
    Converted {
        /// Layer directories written.
        layers_unpacked: usize,
        /// Whether the flat tree was built (else it existed already or was skipped).
        flat_built: bool,
        /// What the thin-image push did, when there was one.
        thin: Option<PushOutcome>,
    },
}

/// The result of one image: one per platform with `--multi-arch`, and one for a wish whose tags
/// could not be listed.
#[derive(Debug)]
pub struct ImageResult {
    label: String,
    result: Result<Outcome, ImageFailure>,
    ignored: bool,
    revisions: usize,
    held: bool,
    lease_waits: usize,
}

impl ImageResult {
    pub(crate) fn new(label: String, result: Result<Outcome, ImageFailure>) -> ImageResult {
        ImageResult {
            label,
            result,
            ignored: false,
            revisions: 0,
            held: false,
            lease_waits: 0,
        }
    }

    /// `image` failed at `step` with `error` (for a caller's own failures, e.g. a wish list that
    /// could not be expanded; report it with [`Engine::report`]).
    pub fn failed(image: String, step: Step, error: ConvertError) -> ImageResult {
        ImageResult::new(image, Err(ImageFailure::new(step, error)))
    }

    /// The image, with its platform when it is one platform of a multi-platform image.
    pub fn image(&self) -> &str {
        &self.label
    }

    /// What happened.
    pub fn result(&self) -> &Result<Outcome, ImageFailure> {
        &self.result
    }

    /// What happened, by value.
    pub fn into_result(self) -> Result<Outcome, ImageFailure> {
        self.result
    }

    /// The failure, if the image failed.
    pub fn failure(&self) -> Option<&ImageFailure> {
        self.result.as_ref().err()
    }

    /// This result, marked as covered by `ignore_errors` or not.
    pub fn with_ignored(mut self, ignored: bool) -> ImageResult {
        self.ignored = ignored;
        self
    }

    /// Whether the wish list's `ignore_errors` covers this image's failure.
    pub fn is_ignored(&self) -> bool {
        self.ignored
    }

    /// Revisions (commits: each `cvmfs_server` ingest and publish) the conversion made; a
    /// batch's commit (`--batch`) is counted on the last image in it. 0 with the local
    /// publisher, which makes none.
    pub fn revisions(&self) -> usize {
        self.revisions
    }

    /// Whether the image is complete but waits in its [`crate::Session`]'s batch: its final
    /// result comes from [`crate::Session::publish_batch`].
    pub fn is_held(&self) -> bool {
        self.held
    }

    pub(crate) fn with_held(mut self, held: bool) -> ImageResult {
        self.held = held;
        self
    }

    pub(crate) fn add_revisions(&mut self, revisions: usize) {
        self.revisions += revisions;
    }

    /// Waits for a repository lease another publisher node held ([`Event::LeaseWait`]) during
    /// the conversion; a batch's commit's are counted on the last image in it.
    pub fn lease_waits(&self) -> usize {
        self.lease_waits
    }

    pub(crate) fn add_lease_waits(&mut self, waits: usize) {
        self.lease_waits += waits;
    }

    pub(crate) fn result_mut(&mut self) -> &mut Result<Outcome, ImageFailure> {
        &mut self.result
    }
}

/// An image of a wish list still to convert, or a wish whose tags could not be listed.
enum Coming {
    /// The image, its thin image, whether `ignore_errors` covers it.
    Image(ImageRef, Option<ImageRef>, bool),
    /// The failed listing, whether `ignore_errors` covers it.
    Failed(ImageResult, bool),
}

impl Coming {
    fn image(&self) -> Option<&ImageRef> {
        match self {
            Coming::Image(image, ..) => Some(image),
            Coming::Failed(..) => None,
        }
    }
}

/// `results` with each held image's result replaced by its final one from `settled`.
fn settle(mut results: Vec<ImageResult>, settled: Vec<ImageResult>) -> Vec<ImageResult> {
    for result in settled {
        match results
            .iter()
            .rposition(|r| r.is_held() && r.image() == result.image())
        {
            Some(i) => results[i] = result,
            None => results.push(result),
        }
    }
    results
}

/// Sets up an [`Engine`]; see [`Engine::builder`].
pub struct EngineBuilder {
    publisher: Box<dyn Publisher>,
    repo: RepositoryName,
    settings: Settings,
    credentials: Credentials,
    source: Option<Arc<dyn ImageSource>>,
    thin_login: Option<Login>,
    environment: Option<Environment>,
    events: Arc<dyn EventSink>,
    cache: Option<BlobCache>,
}

impl EngineBuilder {
    /// The settings (default: [`Settings::new`]).
    pub fn settings(mut self, settings: Settings) -> EngineBuilder {
        self.settings = settings;
        self
    }

    /// Registry credentials, for pulling and for pushing thin images (default: anonymous).
    pub fn credentials(mut self, credentials: Credentials) -> EngineBuilder {
        self.credentials = credentials;
        self
    }

    /// The client that pulls (default: one with [`EngineBuilder::credentials`] and the default
    /// timeouts and retries): the registry as the engine's [`ImageSource`].
    pub fn client(self, client: Client) -> EngineBuilder {
        self.source(Arc::new(client))
    }

    /// Where images are read from (default: the registry, through [`EngineBuilder::client`]'s
    /// client). Thin images are still pushed to their registry.
    pub fn source(mut self, source: Arc<dyn ImageSource>) -> EngineBuilder {
        self.source = Some(source);
        self
    }

    /// The login for pushing thin images when no wish list says whose they are
    /// (`convert-single-image --username`).
    pub fn thin_login(mut self, login: Option<Login>) -> EngineBuilder {
        self.thin_login = login;
        self
    }

    /// Where a wish list's `user` finds its push password (`DUCC_OUTPUT_REGISTRY_PASS`);
    /// default: the process environment.
    pub fn environment(mut self, environment: Environment) -> EngineBuilder {
        self.environment = Some(environment);
        self
    }

    /// Where events go (default: nowhere).
    pub fn events(mut self, events: Arc<dyn EventSink>) -> EngineBuilder {
        self.events = events;
        self
    }

    /// The blob cache (default: `ducc-cache` in the scratch directory).
    pub fn cache(mut self, cache: BlobCache) -> EngineBuilder {
        self.cache = Some(cache);
        self
    }

    /// The engine.
    ///
    /// # Errors
    /// Overlay whiteouts asked for where the publisher cannot store them; a blob cache that
    /// cannot be created.
    pub fn build(self) -> Result<Engine, ConvertError> {
        let (whiteouts, raw_whiteouts_reason) =
            choose_whiteouts(self.settings.whiteouts, &*self.publisher)?;
        let cache = match self.cache {
            Some(cache) => cache,
            None => BlobCache::open(
                &self.settings.scratch_dir.join("ducc-cache"),
                self.settings.parallel_layers,
            )?,
        };
        // The publisher's lease waits become events (issue 30).
        let lease_waits = Arc::new(LeaseWaits::new(Arc::clone(&self.events)));
        self.publisher.observe(lease_waits.clone());
        let source = self.source.unwrap_or_else(|| {
            Arc::new(Client::new(
                ClientOptions::new()
                    .credentials(self.credentials.clone())
                    .max_config_bytes(ducc_unpack::Limits::default().max_config_bytes),
            ))
        });
        Ok(Engine {
            source,
            credentials: self.credentials,
            thin_login: self.thin_login,
            environment: self.environment.unwrap_or_else(Environment::from_process),
            layout: Layout::of(&self.repo),
            repo: self.repo,
            publisher: self.publisher,
            cache,
            settings: self.settings,
            whiteouts,
            raw_whiteouts_reason,
            raw_whiteouts_told: std::sync::atomic::AtomicBool::new(false),
            events: self.events,
            lease_waits,
        })
    }
}

/// The whiteout form of layer directories: the settings', checked against the publisher, else
/// the publisher's preference. Overlay form on a publisher that keeps devices but drops xattrs
/// (a cvmfs stratum 0) is [`WhiteoutFormat::OverlayDevices`]. With the second value, why the
/// layer directories keep raw `.wh.` names where overlay form was preferred (told once per run,
/// when a layer is written: [`Engine::tell_raw_whiteouts`]).
fn choose_whiteouts(
    chosen: Option<WhiteoutFormat>,
    publisher: &dyn Publisher,
) -> Result<(WhiteoutFormat, Option<String>), ConvertError> {
    let support = publisher.overlay_support();
    let prefers_overlay = publisher.prefers_overlay_whiteouts();
    match (chosen, support) {
        (Some(WhiteoutFormat::Overlay), OverlaySupport::No { reason }) => Err(ConvertError::new(
            ErrorKind::Publish,
            format!("overlay whiteouts cannot be used with this publisher: {reason}"),
        )),
        (Some(WhiteoutFormat::Overlay), OverlaySupport::DevicesOnly) => {
            Ok((WhiteoutFormat::OverlayDevices, None))
        }
        (Some(WhiteoutFormat::OverlayDevices), OverlaySupport::No { reason }) => {
            Err(ConvertError::new(
                ErrorKind::Publish,
                format!("overlay whiteouts cannot be used with this publisher: {reason}"),
            ))
        }
        (Some(chosen), _) => Ok((chosen, None)),
        (None, OverlaySupport::Full) if prefers_overlay => Ok((WhiteoutFormat::Overlay, None)),
        (None, OverlaySupport::DevicesOnly) if prefers_overlay => {
            Ok((WhiteoutFormat::OverlayDevices, None))
        }
        (None, OverlaySupport::No { reason }) if prefers_overlay => {
            Ok((WhiteoutFormat::Oci, Some(reason)))
        }
        (None, _) => Ok((WhiteoutFormat::Oci, None)),
    }
}

/// Converts images into one repository. Set up once ([`Engine::builder`]); its methods take
/// `&self` and may run on several threads at once (each image's writes are transactions on
/// their own leases).
pub struct Engine {
    /// Where images are read from.
    pub(crate) source: Arc<dyn ImageSource>,
    pub(crate) credentials: Credentials,
    pub(crate) thin_login: Option<Login>,
    pub(crate) environment: Environment,
    pub(crate) publisher: Box<dyn Publisher>,
    pub(crate) repo: RepositoryName,
    pub(crate) layout: Layout,
    pub(crate) cache: BlobCache,
    pub(crate) settings: Settings,
    pub(crate) whiteouts: WhiteoutFormat,
    /// Why layer directories keep raw `.wh.` names where overlay form was preferred.
    raw_whiteouts_reason: Option<String>,
    /// Whether [`Engine::tell_raw_whiteouts`] told it already.
    raw_whiteouts_told: std::sync::atomic::AtomicBool,
    pub(crate) events: Arc<dyn EventSink>,
    /// The publisher's lease waits, counted as they become events.
    lease_waits: Arc<LeaseWaits>,
}

impl Engine {
    /// An engine writing into `repo` through `publisher`.
    pub fn builder(publisher: Box<dyn Publisher>, repo: RepositoryName) -> EngineBuilder {
        EngineBuilder {
            publisher,
            repo,
            settings: Settings::new(),
            credentials: Credentials::anonymous(),
            source: None,
            thin_login: None,
            environment: None,
            events: Arc::new(NoEvents),
            cache: None,
        }
    }

    /// The repository (and sub-directory) the engine writes.
    pub fn repository(&self) -> &RepositoryName {
        &self.repo
    }

    /// The repository's paths.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The publisher.
    pub fn publisher(&self) -> &dyn Publisher {
        &*self.publisher
    }

    /// The whiteout form layer directories get.
    pub fn whiteouts(&self) -> WhiteoutFormat {
        self.whiteouts
    }

    /// Called before a layer directory is written: where the layer directories keep raw `.wh.`
    /// names although the publisher prefers overlay form (behind a cvmfs gateway, which drops
    /// device files), says so once per run (a warning and [`Event::RawLayerWhiteouts`]), with
    /// what it means for containers that stack the layer directories.
    pub(crate) fn tell_raw_whiteouts(&self, image: &str) {
        let Some(reason) = &self.raw_whiteouts_reason else {
            return;
        };
        if self
            .raw_whiteouts_told
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        tracing::warn!(
            "layer directories keep raw .wh. whiteout names ({reason}): overlayfs gives them no \
             meaning, so containers that containerd's CernVM-FS snapshotter starts from this \
             repository show the files their images deleted, and the .wh. files themselves"
        );
        self.events.event(&Event::RawLayerWhiteouts {
            image: image.to_owned(),
            reason: reason.clone(),
        });
    }

    /// Lease waits of the publisher since the engine was built ([`Event::LeaseWait`]).
    pub fn lease_waits(&self) -> usize {
        self.lease_waits.count()
    }

    /// Brings the publisher's view of the repository to the newest revision before reads that
    /// decide work (see `Publisher::refresh_view`; issue 30). A failure is only logged: the
    /// checks made inside each lease keep the conversion right; it may repeat work.
    pub(crate) fn refresh_view(&self, point: RefreshPoint) {
        if let Err(e) = self.publisher.refresh_view(point) {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "cannot bring this node's view of the repository to the newest revision: images \
                 and layers published since it was taken may be converted again"
            );
        }
    }

    /// Removes the blobs this engine downloaded (their content is in the repository); call it
    /// when a run ends.
    pub fn clean_cache(&self) {
        self.cache.clean();
    }

    /// Converts `image` (a plain tag or digest, no glob) and pushes `thin` as its thin image:
    /// one result, or, with multi-arch settings and an index, one per platform (plus one for
    /// the image as a whole when its shared links or thin index fail). A failure ends with an
    /// [`Event::EndImage`] error.
    pub fn convert_image(
        &self,
        image: &ImageRef,
        thin: Option<&ImageRef>,
        stop: &StopToken,
    ) -> Vec<ImageResult> {
        self.refresh_view(RefreshPoint::Start);
        let session = self.session(stop);
        let results = session.convert_image(image, thin);
        settle(results, session.publish_batch())
    }

    /// The images a wish stands for, each with its thin image: itself, or one per tag its glob
    /// matches (sorted). `list` maps each tag to its thin image; without it, `thin` gets the
    /// tag.
    ///
    /// # Errors
    /// When the tags of the image's repository cannot be listed.
    pub fn expand(
        &self,
        input: &ImageRef,
        thin: Option<&ImageRef>,
        list: Option<&WishList>,
    ) -> Result<Vec<(ImageRef, Option<ImageRef>)>, ConvertError> {
        let Some(glob) = input.tag_glob() else {
            return Ok(vec![(input.clone(), thin.cloned())]);
        };
        let repository = Repository::of(input);
        let mut tags: Vec<String> = self
            .source
            .list_tags(&repository)
            .map_err(|e| e.context(format!("cannot list the tags of {input}")))?
            .into_iter()
            .filter(|tag| glob.matches(tag))
            .collect();
        tags.sort();
        let mut images = Vec::with_capacity(tags.len());
        for tag in tags {
            let image = input.with_tag(&tag)?;
            let thin = match (list, thin) {
                (Some(list), Some(_)) => Some(list.output_for(&image)?),
                (None, Some(single)) => Some(single.with_tag(&tag)?),
                (_, None) => None,
            };
            images.push((image, thin));
        }
        if images.is_empty() {
            tracing::warn!(image = %input, "no tag matches the glob");
        }
        Ok(images)
    }

    /// Converts every image of `list`, in order, with the thin images it maps them to (pushed
    /// with the list's `user`), until `stop`. Failures that the list's `ignore_errors` covers
    /// are marked ignored.
    ///
    /// # Errors
    /// When the list's `cvmfs_repo` is not the engine's repository (nothing is converted).
    pub fn convert_list(
        &self,
        list: &WishList,
        stop: &StopToken,
    ) -> Result<Vec<ImageResult>, ConvertError> {
        if list.cvmfs_repo() != &self.repo {
            return Err(ConvertError::image(format!(
                "{}: cvmfs_repo {} is not the repository {} this engine writes",
                list.path().display(),
                list.cvmfs_repo(),
                self.repo
            )));
        }
        // Other publisher nodes may have published anything since the last pass.
        self.refresh_view(RefreshPoint::Start);
        let session = self.session(stop);
        std::thread::scope(|scope| {
            // The next image's blobs download while this one converts (see `ahead.rs`).
            let (ahead, images_ahead) = std::sync::mpsc::channel::<ImageRef>();
            if crate::ahead::enabled(&self.settings) {
                scope.spawn(move || crate::ahead::download_ahead(self, images_ahead, stop));
            }
            let mut all = Vec::new();
            let mut wishes = list.wishes().iter();
            // The images (and failed tag listings) to come, known one image ahead.
            let mut coming: VecDeque<Coming> = VecDeque::new();
            while !stop.is_stopped() {
                while coming.iter().filter(|c| c.image().is_some()).count() < 2 {
                    let Some(wish) = wishes.next() else { break };
                    let ignored = list.is_error_ignored(&wish.input);
                    match self.expand(&wish.input, Some(&wish.output), Some(list)) {
                        Ok(images) => coming.extend(images.into_iter().map(|(image, output)| {
                            let ignored = ignored || list.is_error_ignored(&image);
                            Coming::Image(image, output, ignored)
                        })),
                        Err(error) => coming.push_back(Coming::Failed(
                            ImageResult::failed(wish.input.whole_name(), Step::Tags, error),
                            ignored,
                        )),
                    }
                }
                let Some(next) = coming.pop_front() else {
                    break;
                };
                let (image, output, ignored) = match next {
                    Coming::Failed(failed, ignored) => {
                        all.push(self.report(failed, ignored));
                        continue;
                    }
                    Coming::Image(image, output, ignored) => (image, output, ignored),
                };
                if let Some(after) = coming.iter().find_map(Coming::image) {
                    // A closed channel (no downloads ahead) only drops it.
                    let _ = ahead.send(after.clone());
                }
                all.extend(session.convert_wished(list, &image, output.as_ref(), ignored));
                if session.batch_is_due() {
                    all = settle(all, session.publish_batch());
                }
            }
            drop(ahead);
            // Stopped or not: the images in the batch are complete.
            Ok(settle(all, session.publish_batch()))
        })
    }

    /// Converts `image`, one image of `list` (a plain tag, as [`Engine::expand`] gives them),
    /// with its thin image `thin` pushed with the list's `user`; failures that the list's
    /// `ignore_errors` covers are marked ignored.
    pub fn convert_listed(
        &self,
        list: &WishList,
        image: &ImageRef,
        thin: Option<&ImageRef>,
        stop: &StopToken,
    ) -> Vec<ImageResult> {
        self.refresh_view(RefreshPoint::Start);
        let session = self.session(stop);
        let results = session.convert_listed(list, image, thin);
        settle(results, session.publish_batch())
    }

    /// Marks `result` ignored or not and, when it failed, logs it and tells it with an
    /// [`Event::EndImage`] error. The engine's own methods do this for their results.
    pub fn report(&self, mut result: ImageResult, ignored: bool) -> ImageResult {
        result.ignored = ignored;
        if let Err(failure) = &result.result {
            let message = failure.error().chain();
            let step = failure.step();
            // The image, step and error chain are fields, so `--log-format json` carries them.
            let error = failure.error() as &dyn std::error::Error;
            if ignored {
                tracing::warn!(
                    image = %result.label,
                    step = %step,
                    error,
                    "{step} failed (ignored by ignore_errors)"
                );
            } else {
                tracing::error!(image = %result.label, step = %step, error, "{step} failed");
            }
            self.events.event(&Event::EndImage {
                image: result.label.clone(),
                status: EndStatus::Error {
                    step,
                    error: message,
                    ignored,
                },
            });
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ducc_cvmfs::{LocalPublisher, PublishError, RepoPath, Transaction};

    /// A publisher that only answers the policy questions (whiteouts), for `choose_whiteouts`.
    struct Policy {
        support: OverlaySupport,
        prefers_overlay: bool,
    }

    impl Publisher for Policy {
        fn begin(&self, lease: &RepoPath) -> Result<Box<dyn Transaction + '_>, PublishError> {
            Err(PublishError::OutsideLease {
                path: lease.clone(),
                lease: lease.clone(),
            })
        }

        fn published_path(&self, path: &RepoPath) -> std::path::PathBuf {
            std::path::PathBuf::from("/nonexistent").join(path.as_str())
        }

        fn overlay_support(&self) -> OverlaySupport {
            self.support.clone()
        }

        fn prefers_overlay_whiteouts(&self) -> bool {
            self.prefers_overlay
        }

        fn group(&self) -> Box<dyn ducc_cvmfs::Group + '_> {
            Box::new(ducc_cvmfs::Ungrouped::new(self))
        }

        fn gc_lock(&self, _kind: ducc_cvmfs::GcLock) -> Result<ducc_cvmfs::GcGuard, PublishError> {
            Err(PublishError::OutsideLease {
                path: RepoPath::root(),
                lease: RepoPath::root(),
            })
        }

        fn remove_leftovers(
            &self,
            _dry_run: bool,
        ) -> Result<Vec<std::path::PathBuf>, PublishError> {
            Ok(Vec::new())
        }
    }

    fn no(reason: &str) -> OverlaySupport {
        OverlaySupport::No {
            reason: reason.into(),
        }
    }

    #[test]
    fn whiteouts_follow_the_choice_else_the_publisher() {
        use WhiteoutFormat::{Oci, Overlay, OverlayDevices};
        let cases = [
            // (chosen, support, prefers overlay, result)
            (None, OverlaySupport::Full, true, Some(Overlay)),
            (None, no("not root"), true, Some(Oci)),
            (
                None,
                OverlaySupport::DevicesOnly,
                true,
                Some(OverlayDevices),
            ),
            (None, OverlaySupport::DevicesOnly, false, Some(Oci)),
            (None, OverlaySupport::Full, false, Some(Oci)),
            (Some(Oci), OverlaySupport::Full, true, Some(Oci)),
            (Some(Oci), OverlaySupport::DevicesOnly, true, Some(Oci)),
            (
                Some(Overlay),
                OverlaySupport::DevicesOnly,
                false,
                Some(OverlayDevices),
            ),
            (Some(Overlay), no("a gateway drops devices"), false, None),
            (
                Some(OverlayDevices),
                no("a gateway drops devices"),
                true,
                None,
            ),
        ];
        for (chosen, support, prefers_overlay, expected) in cases {
            let publisher = Policy {
                support: support.clone(),
                prefers_overlay,
            };
            let result = choose_whiteouts(chosen, &publisher);
            match expected {
                Some(format) => assert_eq!(
                    result.unwrap().0,
                    format,
                    "{chosen:?} {support:?} {prefers_overlay}"
                ),
                None => {
                    let error = result.unwrap_err();
                    assert_eq!(error.kind(), ErrorKind::Publish);
                    assert!(
                        error.to_string().contains("a gateway drops devices"),
                        "{error}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_wish_list_for_another_repository_converts_nothing() {
        let root = tempfile::tempdir().unwrap();
        let repo = RepositoryName::parse("a.example.org").unwrap();
        let publisher = LocalPublisher::open(root.path(), &repo).unwrap();
        let engine = Engine::builder(Box::new(publisher), repo)
            .settings(Settings::new().scratch_dir(root.path()))
            .build()
            .unwrap();
        let list = WishList::from_yaml(
            std::path::Path::new("other.yaml"),
            "version: 1\nuser: u\ncvmfs_repo: b.example.org\noutput_format: '127.0.0.1:9/thin/$(image)'\ninput:\n  - http://127.0.0.1:9/x/y:1\n",
        )
        .unwrap();
        let error = engine.convert_list(&list, &StopToken::new()).unwrap_err();
        assert!(
            error.to_string().contains("b.example.org") && error.to_string().contains("other.yaml"),
            "{error}"
        );
        assert_eq!(
            std::fs::read_dir(root.path().join("a.example.org"))
                .unwrap()
                .count(),
            0,
            "nothing written"
        );
    }

    #[test]
    fn stop_tokens_share_their_flag() {
        let token = StopToken::new();
        let clone = token.clone();
        assert!(!clone.is_stopped());
        token.stop();
        assert!(clone.is_stopped());
    }
}
