//! `ducc convert`, `ducc loop` and `ducc convert-single-image`: wish lists in, repository out.

mod bug;
mod cache;
mod events;
mod pipeline;
mod progress;

pub use self::progress::log_line;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use ducc_cvmfs::{
    CvmfsOptions, CvmfsPublisher, LocalPublisher, OverlaySupport, Publisher, RepositoryName,
};
use ducc_registry::{Environment, Platform};
use ducc_thin::ThinFormat;
use ducc_unpack::{Privileges, WhiteoutFormat};
use ducc_wishlist::{ImageRef, Wish, WishList};
use serde_json::json;

use self::cache::BlobCache;
use self::events::Events;
use self::pipeline::{Converted, Converter, Outcome, Settings, StepError};
use self::progress::Progress;
use crate::args::{
    ConversionFlags, ConvertArgs, ConvertSingleArgs, GlobalArgs, LayerWhiteouts, LoopArgs,
    PublisherKind, ThinFormatArg,
};
use crate::exit::{self, Failure};
use crate::registry;

/// Runs `ducc convert`.
pub fn run(global: &GlobalArgs, args: ConvertArgs) -> Result<(), Failure> {
    let stop = stop_flag()?;
    let list = load(&args.wishlist)?;
    let run = Run::setup(
        global,
        &args.flags,
        &list.cvmfs_repo().to_string(),
        list.user(),
        &stop,
    )?;
    let summary = run.convert_list(&list, &stop);
    run.finish(summary, &stop)
}

/// Runs `ducc loop`: convert, sleep, re-read, until SIGINT or SIGTERM.
pub fn run_loop(global: &GlobalArgs, args: LoopArgs) -> Result<(), Failure> {
    let stop = stop_flag()?;
    let mut list = load(&args.wishlist)?;
    let run = Run::setup(
        global,
        &args.flags,
        &list.cvmfs_repo().to_string(),
        list.user(),
        &stop,
    )?;
    loop {
        let summary = run.convert_list(&list, &stop);
        summary.print();
        if stop.load(Ordering::SeqCst) {
            return run.finish(summary, &stop);
        }
        let deadline = Instant::now() + Duration::from_secs(args.interval);
        // From here until the next pass a stop is clean (tests wait for this event).
        run.events
            .emit("wait_next_pass", json!({"seconds": args.interval}));
        while Instant::now() < deadline {
            if stop.load(Ordering::SeqCst) {
                // Stopped between passes: nothing was interrupted, so this is a clean stop.
                run.converter.cache.clean();
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        match WishList::load(&args.wishlist) {
            Ok(new) if new.cvmfs_repo() == list.cvmfs_repo() => list = new,
            Ok(new) => tracing::error!(
                "{}: cvmfs_repo changed from {} to {}: restart ducc loop to switch repositories; keeping the previous wish list",
                args.wishlist.display(),
                list.cvmfs_repo(),
                new.cvmfs_repo()
            ),
            Err(err) => tracing::error!("{}; keeping the previous wish list", exit::chain(&err)),
        }
    }
}

/// Runs `ducc convert-single-image`.
pub fn run_single(global: &GlobalArgs, args: ConvertSingleArgs) -> Result<(), Failure> {
    let stop = stop_flag()?;
    let input = ImageRef::parse(&args.image).map_err(|e| Failure::Usage(e.into()))?;
    let output = if args.thin_image_name.is_empty() {
        None
    } else {
        Some(ImageRef::parse(&args.thin_image_name).map_err(|e| Failure::Usage(e.into()))?)
    };
    let run = Run::setup(global, &args.flags, &args.repo, &args.username, &stop)?;
    let mut summary = Summary::default();
    let images = run.expand(&input, output.as_ref().map(|o| (o, None)));
    match images {
        Err(error) => summary.failed.push(Failed {
            image: input.whole_name(),
            step: "tags",
            error,
            ignored: false,
        }),
        Ok(images) => {
            for (image, output) in images {
                let mut attempt = 1;
                loop {
                    let results = run.converter.convert(&image, output.as_ref());
                    let failed = results.iter().find_map(|r| r.result.as_ref().err());
                    if let Some(e) = failed
                        && attempt < args.attempts.max(1)
                        && !stop.load(Ordering::SeqCst)
                    {
                        tracing::warn!(
                            "{image}: {} failed (attempt {attempt}): {:#}; retrying",
                            e.step,
                            e.error
                        );
                        attempt += 1;
                        continue;
                    }
                    for converted in results {
                        summary.add(run.events, converted, false);
                    }
                    break;
                }
            }
        }
    }
    run.finish(summary, &stop)
}

/// `ducc serve`'s way into the engine (issue 17): a run set up as `convert` sets one up, then
/// asked for one wish's images and one image at a time.
pub(crate) struct ServeEngine(Run);

/// One result of [`ServeEngine::convert`]: the image (with its platform under `--multi-arch`) and
/// whether work was done, or the step that failed and why.
pub(crate) type Served = (String, Result<bool, (&'static str, anyhow::Error)>);

impl ServeEngine {
    pub(crate) fn setup(
        global: &GlobalArgs,
        flags: &ConversionFlags,
        list: &WishList,
        stop: &Arc<AtomicBool>,
    ) -> Result<ServeEngine, Failure> {
        let repo = list.cvmfs_repo().to_string();
        Run::setup(global, flags, &repo, list.user(), stop).map(ServeEngine)
    }

    /// The images `wish` stands for, each with its thin image, as `convert` expands it.
    pub(crate) fn expand(
        &self,
        list: &WishList,
        wish: &Wish,
    ) -> anyhow::Result<Vec<(ImageRef, Option<ImageRef>)>> {
        self.0.expand(&wish.input, Some((&wish.output, Some(list))))
    }

    /// Converts one image (a plain tag) and pushes its thin image.
    pub(crate) fn convert(&self, image: &ImageRef, output: &ImageRef) -> Vec<Served> {
        let results = self.0.converter.convert(image, Some(output));
        results
            .into_iter()
            .map(|c| {
                let result = c.result.map(|o| o != Outcome::UpToDate);
                (c.label, result.map_err(|e| (e.step, e.error)))
            })
            .collect()
    }

    /// Removes the blob cache's unfinished downloads (at exit).
    pub(crate) fn clean(&self) {
        self.0.converter.cache.clean();
    }
}

pub(crate) fn load(path: &Path) -> Result<WishList, Failure> {
    WishList::load(path).map_err(|err| {
        eprintln!("{}", exit::chain(&err));
        Failure::Reported(exit::USAGE)
    })
}

/// SIGINT and SIGTERM set this flag; the run stops between steps and aborts what is open.
fn stop_flag() -> Result<Arc<AtomicBool>, Failure> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|e| Failure::Usage(anyhow!("cannot install the signal handler: {e}")))?;
    }
    Ok(stop)
}

/// Everything a run needs, set up once.
struct Run {
    converter: Converter<'static>,
    events: &'static Events,
    started: Instant,
}

impl Run {
    fn setup(
        global: &GlobalArgs,
        flags: &ConversionFlags,
        cvmfs_repo: &str,
        user: &str,
        stop: &Arc<AtomicBool>,
    ) -> Result<Run, Failure> {
        let usage = |e: anyhow::Error| Failure::Usage(e);
        let repo = RepositoryName::parse(cvmfs_repo)
            .with_context(|| format!("invalid repository `{cvmfs_repo}`"))
            .map_err(usage)?;
        let publisher: Box<dyn Publisher> = match flags.publisher {
            PublisherKind::Local => Box::new(
                LocalPublisher::open(&flags.root, &repo)
                    .with_context(|| {
                        format!(
                            "cannot open the local repository under {}",
                            flags.root.display()
                        )
                    })
                    .map_err(usage)?,
            ),
            PublisherKind::Cvmfs => Box::new(
                CvmfsPublisher::open(&repo, CvmfsOptions::new().server(&flags.cvmfs_server))
                    .with_context(|| format!("cannot use repository {}", repo.name()))
                    .map_err(usage)?,
            ),
        };
        // The publisher lives as long as the process; leaking it lets the converter borrow it.
        let publisher: &'static dyn Publisher = Box::leak(publisher);
        let whiteouts = choose_whiteouts(flags, publisher.overlay_support()).map_err(usage)?;
        let platform: Platform = flags
            .platform
            .parse()
            .with_context(|| format!("invalid --platform `{}`", flags.platform))
            .map_err(usage)?;
        let temp = global
            .temporary_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        let cache_dir = flags
            .cache_dir
            .clone()
            .unwrap_or_else(|| default_cache_dir(global.temporary_dir.as_deref()));
        let progress = Progress::for_stderr(flags.no_progress);
        let cache = BlobCache::open(&cache_dir, flags.max_concurrent_downloads)
            .map_err(usage)?
            .with_progress(progress.clone());
        let env = Environment::from_process();
        let credentials = registry::credentials(&env).map_err(usage)?;
        let thin_login = ducc_thin::output_login(user, &env);
        let events: &'static Events = Box::leak(Box::new(
            Events::open(global.notification_file.as_deref())
                .map_err(usage)?
                .with_progress(progress),
        ));
        events.emit("start_ducc", json!({}));
        let settings = Settings {
            overwrite_layers: flags.overwrite_layers,
            convert_again: flags.convert_again,
            skip_flat: flags.skip_flat,
            skip_layers: flags.skip_layers,
            skip_thin: flags.skip_thin_image || flags.skip_layers,
            platform,
            whiteouts,
            privileges: Privileges::Auto,
            thin_format: match flags.thin_format {
                ThinFormatArg::Docker => ThinFormat::DockerV2,
                ThinFormatArg::Oci => ThinFormat::Oci,
            },
            multi_arch: flags.multi_arch,
            scratch_dir: temp,
            parallel_layers: flags.max_concurrent_downloads.max(1),
            verify_before_ingest: flags.publisher == PublisherKind::Cvmfs,
        };
        Ok(Run {
            converter: Converter {
                client: registry::client(credentials.clone()),
                credentials,
                thin_login,
                publisher,
                layout: repo.layout(),
                repo,
                cache,
                settings,
                events,
                stop: Arc::clone(stop),
            },
            events,
            started: Instant::now(),
        })
    }

    /// The images a wish stands for: itself, or one per tag its glob matches, each with its
    /// thin image.
    fn expand(
        &self,
        input: &ImageRef,
        output: Option<(&ImageRef, Option<&WishList>)>,
    ) -> anyhow::Result<Vec<(ImageRef, Option<ImageRef>)>> {
        let Some(glob) = input.tag_glob() else {
            return Ok(vec![(input.clone(), output.map(|(o, _)| o.clone()))]);
        };
        let repository = registry::repository(input)?;
        let mut tags: Vec<String> = self
            .converter
            .client
            .list_tags(&repository)
            .with_context(|| format!("cannot list the tags of {input}"))?
            .into_iter()
            .filter(|tag| glob.matches(tag))
            .collect();
        tags.sort();
        let mut images = Vec::with_capacity(tags.len());
        for tag in tags {
            let image = input.with_tag(&tag)?;
            let thin = match output {
                Some((_, Some(list))) => Some(list.output_for(&image)?),
                Some((single, None)) => Some(single.with_tag(&tag)?),
                None => None,
            };
            images.push((image, thin));
        }
        if images.is_empty() {
            tracing::warn!("{input}: no tag matches the glob");
        }
        Ok(images)
    }

    fn convert_list(&self, list: &WishList, stop: &AtomicBool) -> Summary {
        let mut summary = Summary::default();
        for wish in list.wishes() {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let ignored = list.is_error_ignored(&wish.input);
            let images = match self.expand(&wish.input, Some((&wish.output, Some(list)))) {
                Ok(images) => images,
                Err(error) => {
                    summary.fail(
                        self.events,
                        &wish.input.whole_name(),
                        "tags",
                        error,
                        ignored,
                    );
                    continue;
                }
            };
            for (image, output) in images {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let ignored = ignored || list.is_error_ignored(&image);
                for converted in self.converter.convert(&image, output.as_ref()) {
                    summary.add(self.events, converted, ignored);
                }
            }
        }
        summary
    }

    fn finish(&self, summary: Summary, stop: &AtomicBool) -> Result<(), Failure> {
        self.converter.cache.clean();
        self.events.emit(
            "end_ducc",
            json!({"time_elapsed_s": self.started.elapsed().as_secs_f64(), "converted": summary.converted,
                   "up_to_date": summary.up_to_date, "failed": summary.failed.iter().filter(|f| !f.ignored).count()}),
        );
        summary.print();
        if stop.load(Ordering::SeqCst) {
            eprintln!("ducc: interrupted; open transactions were aborted, run again to finish");
            return Err(Failure::Reported(exit::IMAGES_FAILED));
        }
        if summary.failed.iter().any(|f| !f.ignored) {
            return Err(Failure::Reported(exit::IMAGES_FAILED));
        }
        Ok(())
    }
}

fn choose_whiteouts(
    flags: &ConversionFlags,
    support: OverlaySupport,
) -> anyhow::Result<WhiteoutFormat> {
    match (flags.layer_whiteouts, support) {
        (Some(LayerWhiteouts::Oci), _) => Ok(WhiteoutFormat::Oci),
        (Some(LayerWhiteouts::Overlay), OverlaySupport::No { reason }) => Err(anyhow!(
            "--layer-whiteouts overlay cannot be used here: {reason}"
        )),
        (Some(LayerWhiteouts::Overlay), _) => Ok(WhiteoutFormat::Overlay),
        (None, OverlaySupport::Full) if flags.publisher == PublisherKind::Local => {
            Ok(WhiteoutFormat::Overlay)
        }
        (None, OverlaySupport::No { reason }) if flags.publisher == PublisherKind::Local => {
            eprintln!("ducc: layer directories keep raw .wh. whiteout names ({reason})");
            Ok(WhiteoutFormat::Oci)
        }
        (None, _) => Ok(WhiteoutFormat::Oci),
    }
}

/// `<-t>/ducc-cache`, else `$XDG_CACHE_HOME/ducc`, `~/.cache/ducc`, or the system temp dir.
fn default_cache_dir(temporary_dir: Option<&Path>) -> PathBuf {
    if let Some(dir) = temporary_dir {
        return dir.join("ducc-cache");
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("ducc");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".cache/ducc");
    }
    std::env::temp_dir().join("ducc-cache")
}

/// One failed image.
struct Failed {
    image: String,
    step: &'static str,
    error: anyhow::Error,
    ignored: bool,
}

/// What a run did, printed at the end.
#[derive(Default)]
struct Summary {
    converted: usize,
    up_to_date: usize,
    failed: Vec<Failed>,
}

impl Summary {
    fn add(&mut self, events: &Events, converted: Converted, ignored: bool) {
        match converted.result {
            Ok(outcome) => self.record(&converted.label, outcome),
            Err(StepError { step, error }) => {
                self.fail(events, &converted.label, step, error, ignored)
            }
        }
    }

    fn record(&mut self, image: &str, outcome: Outcome) {
        match outcome {
            Outcome::UpToDate => {
                tracing::info!("{image}: up to date");
                self.up_to_date += 1;
            }
            Outcome::Converted {
                layers_unpacked,
                flat_built,
                thin,
            } => {
                tracing::info!(
                    "{image}: converted ({layers_unpacked} layers unpacked, flat tree {}, thin image {})",
                    if flat_built { "built" } else { "kept" },
                    match thin {
                        Some(ducc_thin::PushOutcome::AlreadyPresent) => "already pushed",
                        Some(_) => "pushed",
                        None => "skipped",
                    }
                );
                self.converted += 1;
            }
        }
    }

    fn fail(
        &mut self,
        events: &Events,
        image: &str,
        step: &'static str,
        error: anyhow::Error,
        ignored: bool,
    ) {
        let message = format!("{error:#}");
        if ignored {
            tracing::warn!("{image}: {step} failed (ignored by ignore_errors): {message}");
        } else {
            tracing::error!("{image}: {step} failed: {message}");
        }
        events.emit("end_image", json!({"image": image, "status": "error", "step": step, "error": message, "ignored": ignored}));
        self.failed.push(Failed {
            image: image.to_owned(),
            step,
            error,
            ignored,
        });
    }

    fn print(&self) {
        let failed: Vec<&Failed> = self.failed.iter().filter(|f| !f.ignored).collect();
        eprintln!(
            "ducc: {} converted, {} up to date, {} failed{}",
            self.converted,
            self.up_to_date,
            failed.len(),
            match self.failed.len() - failed.len() {
                0 => String::new(),
                n => format!(" ({n} more ignored by ignore_errors)"),
            }
        );
        for f in failed {
            eprintln!("  {} ({}): {:#}", f.image, f.step, f.error);
        }
        for f in self.failed.iter().filter(|f| f.ignored) {
            eprintln!("  ignored: {} ({}): {:#}", f.image, f.step, f.error);
        }
    }
}
