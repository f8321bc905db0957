//! Layer unpacking for ducc-rs: decompression, digest checks, whiteout-aware layer extraction and
//! flattening.
//!
//! Filled by the layer-unpacking issue; nothing here works yet.
