//! OCI distribution client for ducc-rs: authentication, manifests and platform choice, verified
//! blob streams, tag lists and push.
//!
//! Filled by the registry-client issue; nothing here works yet.
#![forbid(unsafe_code)]
