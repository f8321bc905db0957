//! `ducc unpack-image`.

use crate::args::{GlobalArgs, UnpackImageArgs};
use crate::exit::{Failure, not_yet};

/// Runs `ducc unpack-image`.
pub fn run(_global: &GlobalArgs, _args: UnpackImageArgs) -> Result<(), Failure> {
    Err(not_yet("unpack-image", "it lands with the layer unpacking issue"))
}
