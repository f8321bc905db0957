//! `ducc list`: what a repository holds, read from its published tree (issue 27). It opens the
//! publisher as `convert` does (for `cvmfs`, that runs only `cvmfs_server list`, and behind a
//! gateway `cvmfs_server mount` to see the newest revision: issue 30), publishes nothing and
//! takes no lock but the publisher's own while remounting; `--garbage` is gc's own dry run.

use anyhow::anyhow;
use ducc_convert::{GcSummary, Plan, PlanError};

use crate::args::ListArgs;
use crate::cmd::lifecycle;
use crate::convert::repository;
use crate::exit::{Failure, print_stdout};

/// Runs `ducc list`.
pub fn run(plan: &Plan, args: ListArgs) -> Result<(), Failure> {
    let repo = repository(&args.repo)?;
    if args.garbage {
        return garbage(plan, &repo, args.grace_period, args.json);
    }
    let listing = plan.list(&repo).map_err(|e| match e {
        PlanError::Setup(e) => Failure::Usage(anyhow::Error::new(e)),
        PlanError::Run(e) => Failure::Run(anyhow!(e.chain())),
    })?;
    let text = match (args.json, args.layers) {
        (true, false) => listing.images_json(),
        (true, true) => listing.layers_json(),
        (false, false) => listing.images_table(),
        (false, true) => listing.layers_table(),
    };
    print_stdout(&text)
}

/// `--garbage`: gc's dry run, printed as `gc --dry-run` prints it (or as JSON).
fn garbage(
    plan: &Plan,
    repo: &ducc_oci::RepositoryName,
    grace_days: u32,
    json: bool,
) -> Result<(), Failure> {
    let engine = lifecycle::engine(plan, repo)?;
    let report = engine
        .collect_garbage_after(grace_days, true)
        .map_err(|e| Failure::Run(anyhow!(e.chain())))?;
    if json {
        print_stdout(&GcSummary(&report).json())
    } else {
        print_stdout(&format!("{}\n", GcSummary(&report)))
    }
}
