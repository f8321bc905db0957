//! `ducc unpack-image IMAGE DEST [--platform P] [--layers]`: pull an image and write its flat
//! root filesystem to DEST, or with `--layers` one directory per layer, `DEST/<n>-<hex>/` (`n`
//! counts from 0 at the bottom layer, `hex` is the blob digest). Our `umoci unpack` /
//! `crane export`, for operators who want to look at an image. The pull is ducc-convert's
//! (`Plan::unpack_image`). Layer directories use the overlayfs whiteout form when running as root (they
//! can be stacked with `mount -t overlay`), the raw `.wh.` names otherwise.

use std::path::Path;

use anyhow::{Context, anyhow, bail};
use ducc_convert::{Plan, PlanError, UnpackInto, Unpacked};
use ducc_oci::ImageRef;

use crate::args::UnpackImageArgs;
use crate::exit::Failure;

/// Runs `ducc unpack-image`.
pub fn run(plan: &Plan, args: UnpackImageArgs) -> Result<(), Failure> {
    let image = ImageRef::parse(&args.image).map_err(|e| Failure::Usage(e.into()))?;
    if image.is_tag_glob() {
        return Err(Failure::Usage(anyhow!(
            "{}: unpack-image needs one image, not a tag glob",
            image.whole_name()
        )));
    }
    let platform = crate::args::platform(&args.platform)?;
    prepare_dest(&args.dest).map_err(Failure::Usage)?;
    let into = if args.layers {
        let overlay_whiteouts = ducc_oci::is_root();
        if !overlay_whiteouts {
            eprintln!(
                "ducc: not running as root: layer directories keep the raw .wh. whiteout names \
                 (overlay form needs device nodes and trusted.* xattrs)"
            );
        }
        UnpackInto::Layers { overlay_whiteouts }
    } else {
        UnpackInto::Flat
    };
    let unpacked = plan
        .unpack_image(&image, &platform, &args.dest, into)
        .map_err(|e| match e {
            PlanError::Setup(e) => Failure::Usage(anyhow::Error::new(e)),
            PlanError::Run(e) => Failure::Run(anyhow!(e.chain())),
        })?;
    summarise(&image, &args.dest, &unpacked);
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

fn summarise(image: &ImageRef, dest: &Path, unpacked: &Unpacked) {
    eprintln!(
        "ducc: unpacked {} into {}: {} entries, {} bytes of file data",
        image.whole_name(),
        dest.display(),
        unpacked.entries,
        unpacked.file_bytes
    );
    if unpacked.warnings > 0 {
        eprintln!("ducc: {} warning(s), for example:", unpacked.warnings);
        for warning in &unpacked.first_warnings {
            eprintln!("  {warning}");
        }
    }
    if unpacked.owners_not_applied > 0 {
        eprintln!(
            "ducc: not running as root: {} owner(s) were not applied",
            unpacked.owners_not_applied
        );
    }
}
