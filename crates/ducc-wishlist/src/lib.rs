//! Wish lists (v1), image references, `$(var)` templating and tag globs for ducc-rs.
//!
//! A wish list names the images an operator wants unpacked into a CernVM-FS repository:
//!
//! ```yaml
//! version: 1
//! user: alice
//! cvmfs_repo: unpacked.cern.ch          # or unpacked.cern.ch/subdir
//! output_format: '$(scheme)://registry.example.org/thin/$(image)'
//! input:
//!   - 'https://registry.hub.docker.com/library/fedora:latest'
//!   - 'https://registry.hub.docker.com/atlas/analysisbase:21.2.1*'
//! ignore_errors: ['https://registry.hub.docker.com/flaky/*']
//! ```
//!
//! [`WishList::load`] reads and checks such a file; every error names the file, line and column.
//! [`OutputFormat`] expands `$(var)` templates. Image references ([`ducc_oci::ImageRef`]),
//! globs ([`ducc_oci::Glob`], for tag globs and `ignore_errors` patterns) and the repository
//! name ([`ducc_oci::RepositoryName`]) are `ducc-oci`'s: import them from there.
//!
//! ```
//! use ducc_wishlist::WishList;
//! use ducc_oci::ImageRef;
//! let list = WishList::from_yaml(
//!     "wishlist.yaml".as_ref(),
//!     "version: 1\ncvmfs_repo: unpacked.cern.ch/sub\ninput: ['localhost:5000/a/b:1.*']\n",
//! )?;
//! assert_eq!(list.cvmfs_repo().subdir(), Some("sub"));
//! let input = &list.wishes()[0].input;
//! assert!(input.is_tag_glob());
//! let expanded = input.with_tag("1.2")?;
//! assert_eq!(list.output_for(&expanded)?.simple_name(), "localhost:5000/a/b_thin:1.2");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod template;
mod wishlist;

pub use template::{DEFAULT_OUTPUT_FORMAT, OutputFormat, TemplateError, VARIABLES};
pub use wishlist::{Location, Wish, WishList, WishListError, WishListProblem};
