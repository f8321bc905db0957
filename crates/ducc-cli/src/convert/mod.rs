//! `ducc convert`, `ducc loop` and `ducc convert-single-image`: flags to engine settings, the
//! progress display, the summary and the exit status. The conversion itself is ducc-convert's.

mod progress;

pub use self::progress::log_line;
pub(crate) use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use ducc_convert::{
    BatchLimits, Engine, Event, EventSink, ImageResult, Plan, Settings, SignaturePolicy, Sinks,
    StopToken, Summary,
};
use ducc_oci::{ImageFormat, ImageRef, Platform, RepositoryName};
use ducc_wishlist::WishList;

use self::progress::Progress;
use crate::args::{
    BatchArgs, ConversionFlags, ConvertArgs, ConvertSingleArgs, LayerWhiteouts, LoopArgs,
    ThinFormatArg,
};
use crate::exit::{self, Failure};

/// Runs `ducc convert`.
pub fn run(plan: &Plan, args: ConvertArgs) -> Result<(), Failure> {
    let stop = stop_token()?;
    let list = load(&args.wishlist)?;
    let mut flags = args.flags;
    flags.shard = args.shard;
    flags.batch = batch_limits(&args.batch)?;
    let run = Run::setup(plan, &flags, list.cvmfs_repo(), "")?;
    let summary = run.convert_list(&list, &stop);
    run.finish(summary, &stop)
}

/// The batch limits of `--batch N --batch-seconds S`.
pub(crate) fn batch_limits(args: &BatchArgs) -> Result<BatchLimits, Failure> {
    BatchLimits::new(args.batch, args.batch_seconds).map_err(|e| Failure::Usage(anyhow::anyhow!(e)))
}

/// Runs `ducc loop`: convert, sleep, re-read, until SIGINT or SIGTERM. A changed `cvmfs_repo`
/// (or `user`, or `output_format`) is taken at the next pass.
pub fn run_loop(plan: &Plan, args: LoopArgs) -> Result<(), Failure> {
    let stop = stop_token()?;
    let mut list = load(&args.wishlist)?;
    let mut flags = args.flags;
    flags.shard = args.shard;
    flags.batch = batch_limits(&args.batch)?;
    let mut run = Run::setup(plan, &flags, list.cvmfs_repo(), "")?;
    loop {
        let summary = run.convert_list(&list, &stop);
        if stop.is_stopped() {
            return run.finish(summary, &stop);
        }
        crate::logging::summary(&summary);
        let deadline = Instant::now() + Duration::from_secs(args.interval);
        // From here until the next pass a stop is clean (tests wait for this event).
        run.events.event(&Event::WaitNextPass {
            seconds: args.interval,
        });
        while Instant::now() < deadline {
            if stop.is_stopped() {
                // Stopped between passes: nothing was interrupted, so this is a clean stop.
                run.engine.clean_cache();
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let new = match WishList::load(&args.wishlist) {
            Ok(new) => new,
            Err(err) => {
                tracing::error!(
                    "{}; keeping the previous wish list",
                    ducc_oci::error_chain(&err)
                );
                continue;
            }
        };
        if new.cvmfs_repo() != list.cvmfs_repo() {
            match Run::setup(plan, &flags, new.cvmfs_repo(), "") {
                Ok(switched) => {
                    tracing::info!(
                        "{}: cvmfs_repo changed from {} to {}",
                        args.wishlist.display(),
                        list.cvmfs_repo(),
                        new.cvmfs_repo()
                    );
                    run.engine.clean_cache();
                    run = switched;
                }
                Err(failure) => {
                    tracing::error!(
                        "{}: cannot switch to cvmfs_repo {}: {}; keeping the previous wish list",
                        args.wishlist.display(),
                        new.cvmfs_repo(),
                        failure.message()
                    );
                    continue;
                }
            }
        }
        list = new;
    }
}

/// Runs `ducc convert-single-image`.
pub fn run_single(plan: &Plan, args: ConvertSingleArgs) -> Result<(), Failure> {
    let stop = stop_token()?;
    let input = ImageRef::parse(&args.image).map_err(|e| Failure::Usage(e.into()))?;
    let output = if args.thin_image_name.is_empty() {
        None
    } else {
        Some(ImageRef::parse(&args.thin_image_name).map_err(|e| Failure::Usage(e.into()))?)
    };
    let mut flags = args.flags;
    flags.attempts = args.attempts;
    let run = Run::setup(plan, &flags, &repository(&args.repo)?, &args.username)?;
    let mut summary = Summary::default();
    match run.engine.expand(&input, output.as_ref(), None) {
        Err(error) => {
            let failed = ImageResult::failed(input.whole_name(), ducc_convert::Step::Tags, error);
            summary.add(run.engine.report(failed, false));
        }
        Ok(images) => {
            for (image, output) in images {
                let results = run.engine.convert_image(&image, output.as_ref(), &stop);
                results.into_iter().for_each(|r| summary.add(r));
            }
        }
    }
    run.finish(summary, &stop)
}

pub(crate) fn load(path: &Path) -> Result<WishList, Failure> {
    WishList::load(path).map_err(|err| {
        crate::logging::notice(tracing::Level::ERROR, &ducc_oci::error_chain(&err));
        Failure::Reported(exit::USAGE)
    })
}

/// SIGINT and SIGTERM stop the token; the run stops between steps and aborts what is open.
pub(crate) fn stop_token() -> Result<StopToken, Failure> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&flag))
            .map_err(|e| Failure::Usage(anyhow!("cannot install the signal handler: {e}")))?;
    }
    Ok(StopToken::from_flag(flag))
}

/// The engine of a run and where its events go.
pub(crate) struct Run {
    pub(crate) engine: Engine,
    pub(crate) events: Arc<dyn EventSink>,
    started: Instant,
}

impl Run {
    /// The engine for the repository `repo` with `flags`; `user` pushes thin images where no wish list
    /// says whose they are.
    pub(crate) fn setup(
        plan: &Plan,
        flags: &ConversionFlags,
        repo: &RepositoryName,
        user: &str,
    ) -> Result<Run, Failure> {
        let usage = |e: ducc_convert::ConvertError| Failure::Usage(anyhow!(e.chain()));
        let settings = settings(plan, flags).map_err(Failure::Usage)?;
        let progress = Progress::for_stderr(flags.no_progress);
        let mut sinks = Sinks::new().with(Arc::new(plan.notifications().map_err(usage)?));
        if let Some(progress) = progress {
            sinks = sinks.with(Arc::new(progress));
        }
        let events: Arc<dyn EventSink> = Arc::new(sinks);
        let cache = plan
            .blob_cache(flags.cache_dir.as_deref(), flags.max_concurrent_downloads)
            .map_err(usage)?
            .with_events(Arc::clone(&events));
        let engine = plan
            .engine(repo, settings, Arc::clone(&events), Some(cache), user)
            .map_err(|e| Failure::Usage(anyhow::Error::new(e)))?;
        events.event(&Event::StartDucc {});
        Ok(Run {
            engine,
            events,
            started: Instant::now(),
        })
    }

    fn convert_list(&self, list: &WishList, stop: &StopToken) -> Summary {
        let mut summary = Summary::default();
        match self.engine.convert_list(list, stop) {
            Ok(results) => results.into_iter().for_each(|r| summary.add(r)),
            Err(e) => summary.add(ImageResult::failed(
                list.path().display().to_string(),
                ducc_convert::Step::Tags,
                e,
            )),
        }
        summary
    }

    fn finish(&self, summary: Summary, stop: &StopToken) -> Result<(), Failure> {
        self.engine.clean_cache();
        self.events.event(&Event::EndDucc {
            time_elapsed_s: self.started.elapsed().as_secs_f64(),
            converted: summary.converted(),
            up_to_date: summary.up_to_date(),
            other_shard: summary.other_shard(),
            failed: summary.failed().count(),
            revisions: summary.revisions(),
            lease_waits: summary.lease_waits(),
        });
        crate::logging::summary(&summary);
        if stop.is_stopped() {
            crate::logging::notice(
                tracing::Level::WARN,
                "ducc: interrupted; open transactions were aborted, run again to finish",
            );
            return Err(Failure::Reported(exit::IMAGES_FAILED));
        }
        if summary.has_failures() {
            return Err(Failure::Reported(exit::IMAGES_FAILED));
        }
        Ok(())
    }
}

/// The repository a command line names (`REPO` or `REPO/SUBDIR`), or a usage error saying what
/// is wrong with it.
pub(crate) fn repository(text: &str) -> Result<RepositoryName, Failure> {
    RepositoryName::parse(text).map_err(|e| Failure::Usage(e.into()))
}

/// The engine settings `flags` ask for.
fn settings(plan: &Plan, flags: &ConversionFlags) -> anyhow::Result<Settings> {
    let platform: Platform = flags
        .platform
        .parse()
        .with_context(|| format!("invalid --platform `{}`", flags.platform))?;
    let mut settings = plan
        .settings()
        .overwrite_layers(flags.overwrite_layers)
        .convert_again(flags.convert_again)
        .skip_flat(flags.skip_flat)
        .skip_layers(flags.skip_layers)
        .skip_thin(flags.skip_thin_image || flags.skip_layers)
        .skip_podman(flags.skip_podman)
        .platform(platform)
        .thin_format(match flags.thin_format {
            ThinFormatArg::Docker => ImageFormat::DockerV2,
            ThinFormatArg::Oci => ImageFormat::Oci,
        })
        .multi_arch(flags.multi_arch)
        .parallel_layers(flags.max_concurrent_downloads)
        .download_ahead(!flags.no_download_ahead)
        .attempts(flags.attempts)
        .shard(flags.shard)
        .batch(flags.batch);
    if let Some(path) = &flags.policy {
        settings = settings.signature_policy(&load_policy(path)?);
    }
    if let Some(whiteouts) = flags.layer_whiteouts {
        settings = settings.overlay_whiteouts(whiteouts == LayerWhiteouts::Overlay);
    }
    Ok(settings)
}

/// Reads the signature policy; any error (exit 2) names the file and, for a parse error, the line
/// and column, for an unsupported requirement its scope.
pub(crate) fn load_policy(path: &std::path::Path) -> anyhow::Result<SignaturePolicy> {
    SignaturePolicy::load(path).map_err(anyhow::Error::new)
}
