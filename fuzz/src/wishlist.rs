//! ducc-wishlist's public parsers: wish-list files and image references.

use std::path::Path;

use ducc_wishlist::WishList;
use ducc_oci::ImageRef;

/// A wish-list file; for each wish that parses, its outputs and ignore rules are computed.
pub fn check_wishlist(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(list) = WishList::from_yaml(Path::new("fuzz.yaml"), text) {
        for wish in list.wishes() {
            let _ = list.output_for(&wish.input);
            let _ = list.is_error_ignored(&wish.input);
            if let Some(glob) = wish.input.tag_glob() {
                let _ = glob.to_string();
            }
        }
        let _ = list.output_format().to_string();
    }
}

/// An image reference; one that parses must print as a reference that parses to the same.
pub fn check_reference(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(image) = ImageRef::parse(text) else {
        return;
    };
    let printed = image.to_string();
    let again = ImageRef::parse(&printed)
        .unwrap_or_else(|e| panic!("{text:?} parsed, its display {printed:?} does not: {e}"));
    assert_eq!(again, image, "{text:?} and its display {printed:?} differ");
    let _ = image.tag_glob();
    let _ = image.with_tag("latest");
}
