//! `ducc serve`: flags to a `ducc_serve::Service` driving the conversion engine.

use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use ducc_convert::{Plan, StopToken};
use ducc_serve::{Auth, Config, EngineBackend, ServeError, Service, Signals};

use crate::args::ServeArgs;
use crate::convert::{self, Run};
use crate::exit::Failure;

/// The variable holding the webhook token (never a flag: argv is world-readable).
const TOKEN_VAR: &str = "DUCC_WEBHOOK_TOKEN";

/// Runs `ducc serve` until SIGTERM or SIGINT.
pub fn run(plan: &Plan, args: ServeArgs) -> Result<(), Failure> {
    let auth = Auth::from_sources(
        args.no_auth,
        args.token_file.as_deref(),
        TOKEN_VAR,
        std::env::var(TOKEN_VAR).ok().as_deref(),
    )
    .map_err(|e| Failure::Usage(e.into()))?;
    let list = convert::load(&args.wishlist)?;
    let signals = Signals::default();
    let handlers = [
        (signal_hook::consts::SIGINT, &signals.stop),
        (signal_hook::consts::SIGTERM, &signals.stop),
        (signal_hook::consts::SIGHUP, &signals.reload),
    ];
    for (signal, flag) in handlers {
        signal_hook::flag::register(signal, Arc::clone(flag))
            .map_err(|e| Failure::Usage(anyhow!("cannot install the signal handler: {e}")))?;
    }
    let mut flags = args.flags;
    // A daemon's stderr is a log, even when started from a terminal.
    flags.no_progress = true;
    flags.shard = args.shard;
    flags.batch = crate::convert::batch_limits(&args.batch)?;
    let run = Run::setup(plan, &flags, list.cvmfs_repo(), "")?;
    let engine = EngineBackend::new(run.engine, StopToken::from_flag(Arc::clone(&signals.stop)));
    let config = Config::new(&args.wishlist, args.listen, auth)
        .with_interval(Duration::from_secs(args.interval.max(1)))
        .with_retry_backoff(Duration::from_secs(args.retry_backoff))
        .with_queue_capacity(args.queue_capacity)
        .with_shard(args.shard);
    let service = Service::bind(config, list, engine, signals)
        .map_err(|e| Failure::Usage(anyhow::Error::new(e)))?;
    crate::logging::notice(
        tracing::Level::INFO,
        &format!("ducc serve: listening on http://{}", service.local_addr()),
    );
    match service.run() {
        Ok(()) => Ok(()),
        Err(e @ ServeError::WorkerDied) => Err(Failure::Run(e.into())),
        Err(e) => Err(Failure::Usage(e.into())),
    }
}
