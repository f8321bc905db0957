//! `ducc unpack-image IMAGE DEST [--platform P] [--layers]`: pull an image and write its flat
//! root filesystem to DEST, or with `--layers` one directory per layer, `DEST/<n>-<hex>/` (`n`
//! counts from 0 at the bottom layer, `hex` is the blob digest). Our `umoci unpack` /
//! `crane export`, for operators who want to look at an image. The pull is ducc-convert's
//! [`pull_image`]. Layer directories use the overlayfs whiteout form when running as root (they
//! can be stacked with `mount -t overlay`), the raw `.wh.` names otherwise.

use std::path::Path;

use anyhow::{Context, anyhow, bail};
use ducc_convert::{PullTarget, pull_image};
use ducc_oci::{ImageRef, Platform};
use ducc_registry::Environment;
use ducc_unpack::{Report, WhiteoutFormat};

use crate::args::{GlobalArgs, UnpackImageArgs};
use crate::exit::Failure;
use crate::registry;

/// Runs `ducc unpack-image`.
pub fn run(_global: &GlobalArgs, args: UnpackImageArgs) -> Result<(), Failure> {
    let image = ImageRef::parse(&args.image).map_err(|e| Failure::Usage(e.into()))?;
    if image.is_tag_glob() {
        return Err(Failure::Usage(anyhow!(
            "{}: unpack-image needs one image, not a tag glob",
            image.whole_name()
        )));
    }
    let platform: Platform = args
        .platform
        .parse()
        .map_err(|e: ducc_oci::PlatformError| {
            Failure::Usage(ducc_registry::Error::from(e).into())
        })?;
    prepare_dest(&args.dest).map_err(Failure::Usage)?;
    let credentials =
        registry::credentials(&Environment::from_process()).map_err(Failure::Usage)?;
    let client = registry::client(credentials);
    let target = if args.layers {
        PullTarget::Layers(if ducc_oci::is_root() {
            WhiteoutFormat::Overlay
        } else {
            eprintln!(
                "ducc: not running as root: layer directories keep the raw .wh. whiteout names \
                 (overlay form needs device nodes and trusted.* xattrs)"
            );
            WhiteoutFormat::Oci
        })
    } else {
        PullTarget::Flat
    };
    let report = pull_image(&client, &image, &platform, &args.dest, target)
        .map_err(|e| Failure::Run(anyhow!(e.chain())))?;
    summarise(&image, &args.dest, &report);
    Ok(())
}

/// DEST is created if missing and must be an empty directory if it exists.
fn prepare_dest(dest: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{}: the destination exists and is not empty",
                    dest.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(dest)
            .with_context(|| format!("cannot create the destination {}", dest.display())),
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "{}: the destination is not a readable directory",
            dest.display()
        ))),
    }
}

fn summarise(image: &ImageRef, dest: &Path, report: &Report) {
    eprintln!(
        "ducc: unpacked {} into {}: {} entries, {} bytes of file data",
        image.whole_name(),
        dest.display(),
        report.entries,
        report.file_bytes
    );
    let warnings = report.warnings.len() as u64 + report.warnings_dropped;
    if warnings > 0 {
        eprintln!("ducc: {warnings} warning(s), for example:");
        for warning in report.warnings.iter().take(5) {
            eprintln!("  {}: /{}: {:?}", warning.layer, warning.path, warning.kind);
        }
    }
    let owners = report.owners_not_applied.len() as u64 + report.owners_dropped;
    if owners > 0 {
        eprintln!("ducc: not running as root: {owners} owner(s) were not applied");
    }
}
