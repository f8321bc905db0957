//! One module per command.

pub mod check;
pub mod check_image_syntax;
pub mod completions;
pub mod download_manifest;
pub mod lifecycle;
pub mod list;
pub mod serve;
pub mod unpack_image;
pub mod verify;
pub mod version;
