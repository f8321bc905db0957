//! Which wish a pushed image answers: the same matching as `ducc convert` (registry, repository,
//! and the tag, literally or by the wish's tag glob).

use ducc_oci::{ImageRef, ReferenceError};
use ducc_wishlist::WishList;

/// One image to convert: a plain tag the wish list names, and the thin image it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    image: ImageRef,
    output: ImageRef,
}

impl Target {
    /// An image (no glob) and its thin image.
    pub fn new(image: ImageRef, output: ImageRef) -> Target {
        Target { image, output }
    }

    /// The image to convert, with the wish's scheme.
    pub fn image(&self) -> &ImageRef {
        &self.image
    }

    /// The thin image the wish list maps it to.
    pub fn output(&self) -> &ImageRef {
        &self.output
    }

    /// The name the queue deduplicates on: `scheme://registry/repository:tag`.
    pub fn key(&self) -> String {
        self.image.whole_name()
    }
}

/// The wished image that `pushed` is, if the wish list names it: the first wish whose registry
/// and repository are the pushed one's and whose tag is the pushed tag or a glob matching it.
/// Wishes pinned to a digest never match a tag push (the tag moving does not change them).
///
/// # Errors
/// A [`ReferenceError`] when the wish list's output format gives no valid thin image for it.
pub fn wished_target(list: &WishList, pushed: &ImageRef) -> Result<Option<Target>, ReferenceError> {
    let Some(tag) = pushed.tag() else {
        return Ok(None);
    };
    for wish in list.wishes() {
        let input = &wish.input;
        if input.digest().is_some()
            || !same_registry(input.registry(), pushed.registry())
            || input.repository() != pushed.repository()
        {
            continue;
        }
        match input.tag_glob() {
            Some(glob) if glob.matches(tag) => {
                let image = input.with_tag(tag)?;
                let output = list.output_for(&image)?;
                return Ok(Some(Target::new(image, output)));
            }
            None if input.tag() == Some(tag) => {
                return Ok(Some(Target::new(input.clone(), wish.output.clone())));
            }
            _ => {}
        }
    }
    Ok(None)
}

/// Host names are case-insensitive; ports and IP literals compare as written.
fn same_registry(wished: &str, pushed: &str) -> bool {
    wished.eq_ignore_ascii_case(pushed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn list() -> WishList {
        WishList::from_yaml(
            "wish.yaml".as_ref(),
            "version: 1\ncvmfs_repo: unpacked.test\n\
             output_format: 'https://thin.example.org/$(image)'\n\
             input:\n\
             - 'http://Registry.local:5000/team/app:1.*'\n\
             - 'http://registry.local:5000/team/app:latest'\n\
             - 'https://harbor.example.org/proj/tool:2.0'\n\
             - 'https://harbor.example.org/proj/pinned:3@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef'\n",
        )
        .unwrap()
    }

    fn matched(pushed: &str) -> Option<(String, String)> {
        wished_target(&list(), &ImageRef::parse(pushed).unwrap())
            .unwrap()
            .map(|t| (t.image().whole_name(), t.output().whole_name()))
    }

    #[test]
    fn pushes_match_wishes_as_convert_does() {
        let cases: [(&str, Option<(&str, &str)>); 9] = [
            // a tag glob, with the output for the expanded tag
            (
                "https://registry.local:5000/team/app:1.2",
                Some((
                    "http://Registry.local:5000/team/app:1.2",
                    "https://thin.example.org/team/app:1.2",
                )),
            ),
            // a literal tag; the wish's scheme wins over the notification's guess
            (
                "https://registry.local:5000/team/app:latest",
                Some((
                    "http://registry.local:5000/team/app:latest",
                    "https://thin.example.org/team/app:latest",
                )),
            ),
            // the whole tag must match the glob
            ("http://registry.local:5000/team/app:2.1", None),
            ("http://registry.local:5000/team/app:x1.2", None),
            // another repository or registry
            ("http://registry.local:5000/team/other:1.2", None),
            ("http://registry.local:5001/team/app:1.2", None),
            (
                "https://harbor.example.org/proj/tool:2.0",
                Some((
                    "https://harbor.example.org/proj/tool:2.0",
                    "https://thin.example.org/proj/tool:2.0",
                )),
            ),
            ("https://harbor.example.org/proj/tool:2.0.1", None),
            // a wish pinned to a digest is not moved by a tag push
            ("https://harbor.example.org/proj/pinned:3", None),
        ];
        for (pushed, expected) in cases {
            let expected = expected.map(|(i, o)| (i.to_owned(), o.to_owned()));
            assert_eq!(matched(pushed), expected, "{pushed}");
        }
    }

    #[test]
    fn the_queue_key_is_the_wished_image() {
        let target = wished_target(
            &list(),
            &ImageRef::parse("http://registry.local:5000/team/app:1.5").unwrap(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(target.key(), "http://Registry.local:5000/team/app:1.5");
    }
}
