//! `ducc convert`, `ducc loop` and `ducc convert-single-image`.

use crate::args::{ConvertArgs, ConvertSingleArgs, GlobalArgs, LoopArgs};
use crate::exit::{Failure, not_yet};

const WHAT: &str = "the conversion pipeline lands with the `ducc convert` issue";

/// Runs `ducc convert`.
pub fn run(_global: &GlobalArgs, _args: ConvertArgs) -> Result<(), Failure> {
    Err(not_yet("convert", WHAT))
}

/// Runs `ducc loop`.
pub fn run_loop(_global: &GlobalArgs, _args: LoopArgs) -> Result<(), Failure> {
    Err(not_yet("loop", WHAT))
}

/// Runs `ducc convert-single-image`.
pub fn run_single(_global: &GlobalArgs, _args: ConvertSingleArgs) -> Result<(), Failure> {
    Err(not_yet("convert-single-image", WHAT))
}
