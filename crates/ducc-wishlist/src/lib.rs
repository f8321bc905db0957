//! Wish lists (v1), image references, `$(var)` templating and tag globs for ducc-rs.
#![forbid(unsafe_code)]
