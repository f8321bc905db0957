//! `ducc version`.

use crate::exit::{Failure, print_stdout};

/// Prints `ducc <version>`.
pub fn run() -> Result<(), Failure> {
    print_stdout(&format!("ducc {}\n", env!("CARGO_PKG_VERSION")))
}
