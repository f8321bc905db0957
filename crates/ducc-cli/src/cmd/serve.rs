//! `ducc serve`: flags to a `ducc_serve::Service` driving the conversion engine.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::anyhow;
use ducc_convert::{Outcome, StopToken};
use ducc_serve::{
    Auth, Backend, Config, ConversionFailure, ImageOutcome, ImageReport, ServeError, Service,
    Signals, Target, Token,
};
use ducc_wishlist::{Wish, WishList};

use crate::args::{GlobalArgs, ServeArgs};
use crate::convert::{self, Run};
use crate::exit::Failure;

/// The variable holding the webhook token (never a flag: argv is world-readable).
const TOKEN_VAR: &str = "DUCC_WEBHOOK_TOKEN";

/// Runs `ducc serve` until SIGTERM or SIGINT.
pub fn run(global: &GlobalArgs, args: ServeArgs) -> Result<(), Failure> {
    let auth = auth(&args)?;
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
    let run = Run::setup(global, &flags, &list.cvmfs_repo().to_string(), "")?;
    let engine = Engine {
        run,
        stop: StopToken::from_flag(Arc::clone(&signals.stop)),
    };
    let config = Config::new(&args.wishlist, args.listen, auth)
        .with_interval(Duration::from_secs(args.interval.max(1)))
        .with_retry_backoff(Duration::from_secs(args.retry_backoff))
        .with_queue_capacity(args.queue_capacity);
    let service = Service::bind(config, list, engine, signals)
        .map_err(|e| Failure::Usage(anyhow::Error::new(e)))?;
    eprintln!("ducc serve: listening on http://{}", service.local_addr());
    match service.run() {
        Ok(()) => Ok(()),
        Err(e @ ServeError::WorkerDied) => Err(Failure::Run(e.into())),
        Err(e) => Err(Failure::Usage(e.into())),
    }
}

fn auth(args: &ServeArgs) -> Result<Auth, Failure> {
    let usage = |message: &str| Failure::Usage(anyhow!("{message}"));
    let from_env = std::env::var(TOKEN_VAR).ok();
    let token = match (args.no_auth, &args.token_file, from_env) {
        (true, None, None) => return Ok(Auth::Disabled),
        (true, _, _) => {
            return Err(usage(&format!(
                "--no-auth contradicts the token given in {TOKEN_VAR} or --token-file"
            )));
        }
        (false, Some(_), Some(_)) => {
            return Err(usage(&format!(
                "the webhook token is given twice: use {TOKEN_VAR} or --token-file, not both"
            )));
        }
        (false, Some(path), None) => Token::from_file(path),
        (false, None, Some(secret)) => Token::new(&secret, TOKEN_VAR),
        (false, None, None) => {
            return Err(usage(&format!(
                "ducc serve needs a webhook token: set {TOKEN_VAR} or --token-file (or, on a loopback address only, --no-auth)"
            )));
        }
    };
    token
        .map(Auth::Bearer)
        .map_err(|e| Failure::Usage(e.into()))
}

/// The engine behind `ducc_serve`'s [`Backend`], with the stop flag SIGTERM sets.
struct Engine {
    run: Run,
    stop: StopToken,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.run.engine.clean_cache();
    }
}

impl Backend for Engine {
    fn expand(&self, list: &WishList, wish: &Wish) -> Result<Vec<Target>, ConversionFailure> {
        let images = self
            .run
            .engine
            .expand(&wish.input, Some(&wish.output), Some(list))
            .map_err(|e| ConversionFailure::new("tags", e.chain()))?;
        images
            .into_iter()
            .map(|(image, output)| {
                let output = match output {
                    Some(output) => output,
                    None => list
                        .output_for(&image)
                        .map_err(|e| ConversionFailure::new("tags", e.to_string()))?,
                };
                Ok(Target::new(image, output))
            })
            .collect()
    }

    // The engine's stop token is the flag SIGTERM sets: a SIGTERM aborts its running step.
    fn convert(&self, list: &WishList, target: &Target, _stop: &AtomicBool) -> ImageReport {
        let results =
            self.run
                .engine
                .convert_listed(list, target.image(), Some(target.output()), &self.stop);
        let mut converted = false;
        let mut failures = Vec::new();
        for result in &results {
            match result.result() {
                Ok(outcome) => converted |= *outcome != Outcome::UpToDate,
                Err(failure) => failures.push((
                    result.image(),
                    failure.step().as_str(),
                    failure.error().chain(),
                )),
            }
        }
        match failures.as_slice() {
            [] if converted => Ok(ImageOutcome::Converted),
            [] => Ok(ImageOutcome::UpToDate),
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
}
