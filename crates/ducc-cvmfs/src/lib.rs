//! Repository layout and publishers (a local directory, or `cvmfs_server`) for ducc-rs.
//!
//! Filled by the publishing issue; nothing here works yet.
#![forbid(unsafe_code)]
