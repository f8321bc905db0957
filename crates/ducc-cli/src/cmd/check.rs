//! `ducc check`.

use ducc_wishlist::WishList;

use crate::args::CheckArgs;
use crate::exit::{self, Failure, print_stdout};

/// Runs `ducc check`: loads the wish list and prints each input with its thin image.
pub fn run(args: CheckArgs) -> Result<(), Failure> {
    let list = match WishList::load(&args.wishlist) {
        Ok(list) => list,
        Err(err) => {
            // `FILE:LINE:COL: message`, like a compiler, so editors can jump to it.
            eprintln!("{}", ducc_oci::error_chain(&err));
            return Err(Failure::Reported(exit::USAGE));
        }
    };
    let mut text = format!(
        "{}: wish list v1 for {} ({} input{}, output format {})\n",
        list.path().display(),
        list.cvmfs_repo(),
        list.wishes().len(),
        if list.wishes().len() == 1 { "" } else { "s" },
        list.output_format(),
    );
    for wish in list.wishes() {
        let glob = if wish.input.is_tag_glob() {
            "  (tag glob: one thin image per matching tag)"
        } else {
            ""
        };
        text.push_str(&format!("{} -> {}{glob}\n", wish.input, wish.output));
    }
    for glob in list.ignore_errors() {
        text.push_str(&format!("ignore errors of: {glob}\n"));
    }
    print_stdout(&text)
}
