//! `ducc check-image-syntax`.

use crate::args::CheckImageSyntaxArgs;
use crate::exit::Failure;

/// Runs `ducc check-image-syntax`.
pub fn run(_args: CheckImageSyntaxArgs) -> Result<(), Failure> {
    Ok(())
}
