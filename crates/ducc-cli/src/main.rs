//! `ducc`: the command-line tool of ducc-rs. It parses flags and wires the library crates; the
//! work itself lives in those crates.
#![forbid(unsafe_code)]

mod args;
mod cmd;
mod convert;
mod exit;
mod logging;
#[cfg(test)]
mod readme;
mod registry;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};
use crate::exit::Failure;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(exit::USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    logging::init(cli.global.verbose, cli.global.log_format);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Convert(a) => convert::run(&cli.global, a),
        Command::Loop(a) => convert::run_loop(&cli.global, a),
        Command::ConvertSingleImage(a) => convert::run_single(&cli.global, a),
        Command::Serve(a) => cmd::serve::run(&cli.global, a),
        Command::DeleteImage(a) => cmd::lifecycle::delete_image(&cli.global, a),
        Command::Prune(a) => cmd::lifecycle::prune(&cli.global, a),
        Command::GarbageCollection(a) => cmd::lifecycle::gc(&cli.global, a),
        Command::CheckImageSyntax(a) => cmd::check_image_syntax::run(a),
        Command::Check(a) => cmd::check::run(a),
        Command::DownloadManifest(a) => cmd::download_manifest::run(&cli.global, a),
        Command::UnpackImage(a) => cmd::unpack_image::run(&cli.global, a),
        Command::Verify(a) => cmd::verify::run(a),
        Command::Version => cmd::version::run(),
        Command::List(a) => cmd::list::run(&cli.global, a),
        Command::Completions(a) => cmd::completions::completions(&a),
        Command::Man => cmd::completions::man(),
    }
}
