//! `ducc download-manifest`.

use crate::args::{DownloadManifestArgs, GlobalArgs};
use crate::exit::{Failure, not_yet};

/// Runs `ducc download-manifest`.
pub fn run(_global: &GlobalArgs, _args: DownloadManifestArgs) -> Result<(), Failure> {
    Err(not_yet("download-manifest", "it lands with the registry client issue"))
}
