//! `ducc delete-image`, `ducc prune` and `ducc garbage-collection`: flags to the engine's
//! lifecycle calls, its text on stdout, the exit status (1 when something asked for was not done).

use std::sync::Arc;

use anyhow::anyhow;
use ducc_convert::{Engine, GcSummary, Plan, PruneOptions};
use ducc_oci::{ImageRef, RepositoryName};

use crate::args::{DeleteImageArgs, GcArgs, PruneArgs};
use crate::convert::{load, repository};
use crate::exit::{self, Failure, print_stdout};

/// The engine for `repo`, its events going to `-n`.
pub(crate) fn engine(plan: &Plan, repo: &RepositoryName) -> Result<Engine, Failure> {
    let usage = |e: ducc_convert::ConvertError| Failure::Usage(anyhow!(e.chain()));
    let events = Arc::new(plan.notifications().map_err(usage)?);
    plan.engine(repo, plan.settings(), events, None, "")
        .map_err(|e| Failure::Usage(anyhow::Error::new(e)))
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
pub fn delete_image(plan: &Plan, args: DeleteImageArgs) -> Result<(), Failure> {
    let images = args
        .images
        .iter()
        .map(|i| ImageRef::parse(i).map_err(|e| Failure::Usage(e.into())))
        .collect::<Result<Vec<_>, _>>()?;
    let engine = engine(plan, &repository(&args.repo)?)?;
    let outcome = engine
        .delete_images(&images, args.dry_run)
        .map_err(|e| Failure::Run(anyhow!(e.chain())))?;
    done(&outcome.to_string(), outcome.is_complete())
}

/// Runs `ducc prune`.
pub fn prune(plan: &Plan, args: PruneArgs) -> Result<(), Failure> {
    let lists = args
        .wishlists
        .iter()
        .map(|path| load(path))
        .collect::<Result<Vec<_>, _>>()?;
    let engine = engine(plan, lists[0].cvmfs_repo())?;
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
pub fn gc(plan: &Plan, args: GcArgs) -> Result<(), Failure> {
    let engine = engine(plan, &repository(&args.repo)?)?;
    let report = engine
        .collect_garbage_after(args.grace_period, args.dry_run)
        .map_err(|e| Failure::Run(anyhow!(e.chain())))?;
    done(&GcSummary(&report).to_string(), true)
}
