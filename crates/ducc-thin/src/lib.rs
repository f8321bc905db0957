//! Thin-image descriptor (`thin.json`) and thin-image build for ducc-rs.
//!
//! Filled by the thin-image issue; nothing here works yet.
#![forbid(unsafe_code)]
