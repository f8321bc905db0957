//! `ducc check`.

use crate::args::CheckArgs;
use crate::exit::Failure;

/// Runs `ducc check`.
pub fn run(_args: CheckArgs) -> Result<(), Failure> {
    Ok(())
}
