//! `ducc delete-image`, `ducc prune` and `ducc garbage-collection`: flags to the engine's
//! lifecycle calls, its text on stdout, the exit status (1 when something asked for was not done).

use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use ducc_convert::{Engine, EventSink, GcSummary, NotificationFile, PruneOptions, Settings};
use ducc_cvmfs::lifecycle::GcOptions;
use ducc_oci::{ImageRef, RepositoryName};
use ducc_registry::Environment;

use crate::args::{DeleteImageArgs, GcArgs, GlobalArgs, PruneArgs, PublisherFlags};
use crate::convert::{load, open_publisher, repository};
use crate::exit::{self, Failure, print_stdout};
use crate::registry;

/// The engine for `repo`, its events going to `-n`.
pub(crate) fn engine(
    global: &GlobalArgs,
    target: &PublisherFlags,
    repo: &RepositoryName,
) -> Result<Engine, Failure> {
    let usage = Failure::Usage;
    let publisher = open_publisher(target, repo).map_err(usage)?;
    let events: Arc<dyn EventSink> = Arc::new(
        NotificationFile::open(global.notification_file.as_deref())
            .map_err(|e| usage(anyhow!(e.chain())))?,
    );
    let env = Environment::from_process();
    let scratch = global
        .temporary_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir);
    Engine::builder(publisher, repo.clone())
        .settings(Settings::new().scratch_dir(&scratch))
        .credentials(registry::credentials(&env).map_err(usage)?)
        .environment(env)
        .events(events)
        .build()
        .map_err(|e| usage(anyhow!(e.chain())))
}

fn done(text: &str, complete: bool) -> Result<(), Failure> {
    print_stdout(&format!("{text}\n"))?;
    if complete {
        Ok(())
    } else {
        Err(Failure::Reported(exit::IMAGES_FAILED))
    }
}

/// Runs `ducc delete-image`.
pub fn delete_image(global: &GlobalArgs, args: DeleteImageArgs) -> Result<(), Failure> {
    let images = args
        .images
        .iter()
        .map(|i| ImageRef::parse(i).map_err(|e| Failure::Usage(e.into())))
        .collect::<Result<Vec<_>, _>>()?;
    let engine = engine(global, &args.target, &repository(&args.repo)?)?;
    let outcome = engine
        .delete_images(&images, args.dry_run)
        .map_err(|e| Failure::Run(anyhow!(e.chain())))?;
    done(&outcome.to_string(), outcome.is_complete())
}

/// Runs `ducc prune`.
pub fn prune(global: &GlobalArgs, args: PruneArgs) -> Result<(), Failure> {
    let lists = args
        .wishlists
        .iter()
        .map(|path| load(path))
        .collect::<Result<Vec<_>, _>>()?;
    let engine = engine(global, &args.target, lists[0].cvmfs_repo())?;
    let options = PruneOptions {
        dry_run: args.dry_run,
        max_deletions: args.max_deletions,
        shard: args.shard,
    };
    let outcome = engine
        .prune(&lists, &options)
        .map_err(|e| Failure::Run(anyhow!(e.chain())))?;
    done(&outcome.to_string(), outcome.is_complete())
}

/// Runs `ducc garbage-collection`.
pub fn gc(global: &GlobalArgs, args: GcArgs) -> Result<(), Failure> {
    let engine = engine(global, &args.target, &repository(&args.repo)?)?;
    let mut options = GcOptions::new(Duration::from_secs(u64::from(args.grace_period) * 86_400));
    options.dry_run = args.dry_run;
    let report = engine
        .collect_garbage(&options)
        .map_err(|e| Failure::Run(anyhow!(e.chain())))?;
    done(&GcSummary(&report).to_string(), true)
}
