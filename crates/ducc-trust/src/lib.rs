//! Signature policy for ducc: which images may be published, decided offline from cosign
//! signatures and a containers-policy.json(5) file.
//!
//! - [`Policy`] is the policy file: `default` and `transports.docker` scopes, requirements
//!   `insecureAcceptAnything`, `reject` and `sigstoreSigned` with ECDSA P-256 public keys
//!   (`keyPath`, `keyPaths`, `keyData`) and every [`SignedIdentity`] kind. Anything else is a
//!   [`PolicyError`] at load time: a policy is never half-applied.
//! - [`Policy::scope_for`] finds the most specific [`Scope`] of an image ([`DockerReference`]).
//! - [`verify`] decides on the [`Signature`]s found for a digest (cosign's `.sig` tag payloads and
//!   sigstore bundles v0.3): an [`Acceptance`] naming the keys, or a [`Refusal`] with its reason.
//!
//! No network and no registry code: the caller fetches the signatures (ducc-registry) and hands
//! them over.
//!
//! ```
//! use ducc_trust::{DockerReference, Policy, Refusal, verify};
//!
//! let policy = Policy::parse(
//!     std::path::Path::new("policy.json"),
//!     r#"{"default": [{"type": "reject"}],
//!         "transports": {"docker": {"reg.example/public": [{"type": "insecureAcceptAnything"}]}}}"#,
//! )?;
//! let digest = format!("sha256:{}", "0".repeat(64));
//! let open = DockerReference::parse("reg.example/public/app:1")?;
//! assert!(verify(policy.scope_for(&open), &open, &digest, &[]).is_ok());
//! let other = DockerReference::parse("reg.example/private/app:1")?;
//! assert!(matches!(
//!     verify(policy.scope_for(&other), &other, &digest, &[]),
//!     Err(Refusal::Rejected { .. })
//! ));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod cosign;
mod identity;
mod key;
mod policy;
mod reference;
mod verify;

#[cfg(test)]
mod tests;

pub use cosign::{
    BUNDLE_MEDIA_TYPE, BUNDLE_MEDIA_TYPE_PARAM, COSIGN_PAYLOAD_TYPE, SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING_MEDIA_TYPE,
};
pub use identity::SignedIdentity;
pub use key::{KeyError, KeyId, PublicKey};
pub use policy::{Policy, PolicyError, Requirement, Scope};
pub use reference::{DockerReference, ReferenceError};
pub use verify::{Acceptance, Refusal, Signature, VerifiedBy, verify};
