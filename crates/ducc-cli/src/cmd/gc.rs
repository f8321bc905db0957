//! `ducc garbage-collection`.

use crate::args::{GcArgs, GlobalArgs};
use crate::exit::{Failure, not_yet};

/// Runs `ducc garbage-collection`.
pub fn run(_global: &GlobalArgs, _args: GcArgs) -> Result<(), Failure> {
    Err(not_yet(
        "garbage-collection",
        "garbage collection has no issue yet",
    ))
}
