//! `cargo xtask`: project chores.
//!
//! - `cargo xtask ci`: install what the tests need (on a fresh machine), then fmt check, clippy with
//!   `-D warnings`, and the whole test suite with nextest. This is the README's test command.
//! - `cargo xtask deps`: only install the test dependencies.
//! - `cargo xtask fixtures`: build the shared test fixtures (also done lazily by the tests).
//! - `cargo xtask bench unpack|convert|gc [--rounds N]`: benchmarks (a 1 GB image; gc: 200
//!   small images), side by side with peer tools (`bench` alone prints what each measures).
//! - `cargo xtask fuzz [SECONDS] [TARGET...]`: libFuzzer on each fuzz target for SECONDS (not in CI).

mod bench;
mod ci;
mod fixtures;
mod fuzz;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci::run(&args[1..]),
        Some("deps") => ci::install_deps(),
        Some("fixtures") => fixtures::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("fuzz") => fuzz::run(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask ci|deps|fixtures|bench unpack|convert|gc|fuzz [SECONDS] [TARGET...]"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}
