//! `ducc verify IMAGE... --policy FILE`: each image accepted (by which key) or refused (and why),
//! checked exactly as a conversion checks it, without converting anything.

use anyhow::anyhow;
use ducc_convert::Plan;
use ducc_oci::ImageRef;

use crate::args::VerifyArgs;
use crate::exit::{Failure, IMAGES_FAILED, print_stdout};

/// Runs `ducc verify`.
pub fn run(plan: &Plan, args: VerifyArgs) -> Result<(), Failure> {
    let policy = crate::convert::load_policy(&args.policy).map_err(Failure::Usage)?;
    let mut images = Vec::with_capacity(args.images.len());
    for text in &args.images {
        let image = ImageRef::parse(text).map_err(|e| Failure::Usage(e.into()))?;
        if image.is_tag_glob() {
            return Err(Failure::Usage(anyhow!(
                "{}: verify needs plain images, not a tag glob",
                image.whole_name()
            )));
        }
        images.push(image);
    }
    let mut refused = 0;
    let mut printed = Ok(());
    plan.verify_images(&policy, &images, |image, result| {
        let line = match result {
            Ok(acceptance) => format!("{}: accepted: {acceptance}\n", image.whole_name()),
            Err(error) => {
                refused += 1;
                format!("{}: refused: {}\n", image.whole_name(), error.chain())
            }
        };
        if printed.is_ok() {
            printed = print_stdout(&line);
        }
    })
    .map_err(|e| Failure::Usage(anyhow::Error::new(e)))?;
    printed?;
    if refused > 0 {
        return Err(Failure::Reported(IMAGES_FAILED));
    }
    Ok(())
}
