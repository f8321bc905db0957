//! `ducc download-manifest`: the exact manifest bytes on stdout, digest and media type on stderr.

use anyhow::anyhow;
use ducc_convert::{Plan, PlanError};
use ducc_oci::ImageRef;

use crate::args::DownloadManifestArgs;
use crate::exit::Failure;

/// Runs `ducc download-manifest`.
pub fn run(plan: &Plan, args: DownloadManifestArgs) -> Result<(), Failure> {
    let image = ImageRef::parse(&args.image).map_err(|e| Failure::Usage(e.into()))?;
    if image.is_tag_glob() {
        return Err(Failure::Usage(anyhow!(
            "{}: download-manifest needs one image, not a tag glob",
            image.whole_name()
        )));
    }
    let platform = crate::args::platform(&args.platform)?;
    let manifest = plan
        .download_manifest(&image, args.index, &platform, args.username.as_deref())
        .map_err(|e| match e {
            PlanError::Setup(e) => Failure::Usage(anyhow::Error::new(e)),
            PlanError::Run(e) => Failure::Run(anyhow::Error::new(e)),
        })?;
    crate::exit::print_bytes(&manifest.bytes)?;
    eprintln!("digest: {}", manifest.digest);
    eprintln!("media type: {}", manifest.media_type);
    Ok(())
}
