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
    let plan = cli.plan();
    match cli.command {
        Command::Convert(a) => convert::run(&plan, a),
        Command::Loop(a) => convert::run_loop(&plan, a),
        Command::ConvertSingleImage(a) => convert::run_single(&plan, a),
        Command::Serve(a) => cmd::serve::run(&plan, a),
        Command::DeleteImage(a) => cmd::lifecycle::delete_image(&plan, a),
        Command::Prune(a) => cmd::lifecycle::prune(&plan, a),
        Command::GarbageCollection(a) => cmd::lifecycle::gc(&plan, a),
        Command::CheckImageSyntax(a) => cmd::check_image_syntax::run(a),
        Command::Check(a) => cmd::check::run(a),
        Command::DownloadManifest(a) => cmd::download_manifest::run(&plan, a),
        Command::UnpackImage(a) => cmd::unpack_image::run(&plan, a),
        Command::Verify(a) => cmd::verify::run(&plan, a),
        Command::Version => cmd::version::run(),
        Command::List(a) => cmd::list::run(&plan, a),
        Command::Completions(a) => cmd::completions::completions(&a),
        Command::Man => cmd::completions::man(),
    }
}

#[cfg(test)]
mod wiring {
    /// The CLI only wires (issue 26): of the ducc crates it depends on the engine, the service,
    /// the wish list and the vocabulary, never on the registry client, the publishers, the
    /// unpacker, the thin-image builder or the signature checker.
    #[test]
    fn the_cli_depends_only_on_convert_serve_wishlist_and_oci() {
        let manifest = include_str!("../Cargo.toml");
        let dependencies = manifest
            .split("\n[")
            .find(|section| section.starts_with("dependencies]"))
            .expect("a [dependencies] section");
        let ducc: Vec<&str> = dependencies
            .lines()
            .filter_map(|line| line.split(['.', ' ', '=']).next())
            .filter(|name| name.starts_with("ducc-"))
            .collect();
        assert_eq!(
            ducc,
            ["ducc-oci", "ducc-wishlist", "ducc-convert", "ducc-serve"]
        );
    }
}
