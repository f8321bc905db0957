//! Deciding: an image's signatures against the scope that applies to it.

use std::fmt;

use crate::cosign::{Checked, check_bundle, check_simple_signing};
use crate::key::KeyId;
use crate::policy::{Requirement, Scope};
use crate::reference::DockerReference;

/// One signature found for an image, as the registry stores it.
#[derive(Debug, Clone)]
pub struct Signature {
    source: String,
    content: Content,
}

#[derive(Debug, Clone)]
enum Content {
    SimpleSigning {
        payload: Vec<u8>,
        signature: String,
    },
    Bundle {
        bundle: Vec<u8>,
        payload: Option<Vec<u8>>,
    },
    Unreadable(String),
}

impl Signature {
    /// A `.sig` tag layer: the simple-signing payload and its base64 signature (the
    /// `dev.cosignproject.cosign/signature` annotation). `source` says where it was found.
    pub fn simple_signing(
        source: impl Into<String>,
        payload: Vec<u8>,
        signature: String,
    ) -> Signature {
        Signature {
            source: source.into(),
            content: Content::SimpleSigning { payload, signature },
        }
    }

    /// A sigstore bundle (from a referrer), with the simple-signing payload stored beside it
    /// when its message signature signs one.
    pub fn bundle(
        source: impl Into<String>,
        bundle: Vec<u8>,
        payload: Option<Vec<u8>>,
    ) -> Signature {
        Signature {
            source: source.into(),
            content: Content::Bundle { bundle, payload },
        }
    }

    /// Something stored as a signature that cannot be read as one (a layer without the
    /// signature annotation, a referrer without a bundle).
    pub fn unreadable(source: impl Into<String>, detail: impl Into<String>) -> Signature {
        Signature {
            source: source.into(),
            content: Content::Unreadable(detail.into()),
        }
    }

    /// Where it was found (`sha256-<hex>.sig` layer N, referrer `sha256:...`).
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// An image accepted by its scope.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Acceptance {
    /// The scope that applied.
    pub scope: String,
    /// The digest checked.
    pub digest: String,
    /// One entry per `sigstoreSigned` requirement: the key and signature that satisfied it;
    /// empty when the scope accepts anything.
    pub verified: Vec<VerifiedBy>,
}

/// A signature that satisfied a requirement.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VerifiedBy {
    /// The key's fingerprint.
    pub key: KeyId,
    /// Where the key came from (its file, or `keyData`).
    pub key_origin: String,
    /// Where the signature was found.
    pub signature: String,
}

/// Why an image was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The scope's requirement is `reject`.
    #[error("rejected: the policy rejects every image of scope {scope}")]
    Rejected {
        /// The scope.
        scope: String,
    },
    /// No signature is stored for the digest.
    #[error("no signature: none is stored for {digest} (scope {scope} requires one)")]
    NoSignature {
        /// The scope.
        scope: String,
        /// The digest checked.
        digest: String,
    },
    /// Signatures exist, but none verifies with the scope's keys.
    #[error(
        "not signed by these keys: none of the {count} signatures stored for {digest} verifies with a key of scope {scope}"
    )]
    NotByTheseKeys {
        /// The scope.
        scope: String,
        /// The digest checked.
        digest: String,
        /// How many signatures were looked at.
        count: usize,
    },
    /// A signature by a scope key covers another digest.
    #[error("digest mismatch: the signature by key {key} covers {signed}, not {digest}")]
    DigestMismatch {
        /// The digest checked.
        digest: String,
        /// The digest the signature covers.
        signed: String,
        /// The key that made it.
        key: KeyId,
    },
    /// A signature by a scope key covers the digest but claims an identity that
    /// `signedIdentity` does not accept.
    #[error(
        "identity mismatch: the signature claims {signed}, which {rule} does not accept for {image}"
    )]
    IdentityMismatch {
        /// The image's identity.
        image: String,
        /// What the signature claims (`no identity` when the format carries none).
        signed: String,
        /// The `signedIdentity` kind.
        rule: &'static str,
    },
    /// The only signatures found cannot be read.
    #[error("unreadable signature: {source_name}: {detail}")]
    Unreadable {
        /// Where it was found.
        source_name: String,
        /// What is wrong with it.
        detail: String,
    },
}

impl Refusal {
    /// A short reason: `rejected`, `no signature`, `not signed by these keys`, `digest
    /// mismatch`, `identity mismatch`, `unreadable signature`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Rejected { .. } => "rejected",
            Refusal::NoSignature { .. } => "no signature",
            Refusal::NotByTheseKeys { .. } => "not signed by these keys",
            Refusal::DigestMismatch { .. } => "digest mismatch",
            Refusal::IdentityMismatch { .. } => "identity mismatch",
            Refusal::Unreadable { .. } => "unreadable signature",
        }
    }

    /// How close the signature came: of several failed signatures, the closest one is reported.
    fn closeness(&self) -> u8 {
        match self {
            Refusal::Rejected { .. } => 6,
            Refusal::IdentityMismatch { .. } => 5,
            Refusal::DigestMismatch { .. } => 4,
            Refusal::NotByTheseKeys { .. } => 3,
            Refusal::Unreadable { .. } => 2,
            Refusal::NoSignature { .. } => 1,
        }
    }
}

impl fmt::Display for Acceptance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.verified.is_empty() {
            return write!(
                f,
                "{} accepted without signature by scope {}",
                self.digest, self.scope
            );
        }
        write!(f, "{} signed by ", self.digest)?;
        for (i, v) in self.verified.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{} ({})", v.key, v.key_origin)?;
        }
        write!(f, " (scope {})", self.scope)
    }
}

/// Checks `image` at `digest` (`sha256:<hex>`, the manifest or index digest being converted)
/// against `scope` with the `signatures` found for that digest.
///
/// A signature satisfies a `sigstoreSigned` requirement when one of its keys verifies it, its
/// payload covers `digest`, and its claimed identity is accepted by `signedIdentity`.
///
/// # Errors
/// The [`Refusal`]: for a failed `sigstoreSigned`, the closest signature's reason.
pub fn verify(
    scope: Scope<'_>,
    image: &DockerReference,
    digest: &str,
    signatures: &[Signature],
) -> Result<Acceptance, Refusal> {
    let mut verified = Vec::new();
    for requirement in scope.requirements() {
        match requirement {
            Requirement::InsecureAcceptAnything => {}
            Requirement::Reject => {
                return Err(Refusal::Rejected {
                    scope: scope.name().to_owned(),
                });
            }
            Requirement::SigstoreSigned { keys, identity } => {
                let mut best = Refusal::NoSignature {
                    scope: scope.name().to_owned(),
                    digest: digest.to_owned(),
                };
                let mut found = None;
                for signature in signatures {
                    let checked = match &signature.content {
                        Content::SimpleSigning { payload, signature } => {
                            check_simple_signing(payload, signature, keys)
                        }
                        Content::Bundle { bundle, payload } => {
                            check_bundle(bundle, payload.as_deref(), keys)
                        }
                        Content::Unreadable(detail) => Checked::Unreadable(detail.clone()),
                    };
                    let refusal = match checked {
                        Checked::Verified { key, claim } if claim.digest != digest => {
                            Refusal::DigestMismatch {
                                digest: digest.to_owned(),
                                signed: claim.digest,
                                key: key.id().clone(),
                            }
                        }
                        Checked::Verified { key, claim } => match &claim.identity {
                            Some(signed) if identity.matches(image, signed) => {
                                found = Some(VerifiedBy {
                                    key: key.id().clone(),
                                    key_origin: key.origin().to_owned(),
                                    signature: signature.source.clone(),
                                });
                                break;
                            }
                            signed => Refusal::IdentityMismatch {
                                image: image.to_string(),
                                signed: signed
                                    .as_ref()
                                    .map_or_else(|| "no identity".to_owned(), ToString::to_string),
                                rule: identity.kind(),
                            },
                        },
                        Checked::NotByTheseKeys => Refusal::NotByTheseKeys {
                            scope: scope.name().to_owned(),
                            digest: digest.to_owned(),
                            count: signatures.len(),
                        },
                        Checked::Unreadable(detail) => Refusal::Unreadable {
                            source_name: signature.source.clone(),
                            detail,
                        },
                    };
                    if refusal.closeness() > best.closeness() {
                        best = refusal;
                    }
                }
                match found {
                    Some(by) => verified.push(by),
                    None => return Err(best),
                }
            }
        }
    }
    Ok(Acceptance {
        scope: scope.name().to_owned(),
        digest: digest.to_owned(),
        verified,
    })
}
