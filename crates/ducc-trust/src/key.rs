//! Public keys of a `sigstoreSigned` requirement: ECDSA P-256 in PEM (SubjectPublicKeyInfo), as
//! `cosign generate-key-pair` writes them.

use std::fmt;

use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::{DecodePublicKey as _, EncodePublicKey as _};
use sha2::{Digest as _, Sha256};

/// A public key that signatures are verified with.
#[derive(Clone)]
pub struct PublicKey {
    key: VerifyingKey,
    id: KeyId,
    origin: String,
}

/// A key's fingerprint: `sha256:<hex>` of its DER SubjectPublicKeyInfo (what `signature.json`
/// records, so that the key can be told apart from others without the file it came from).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct KeyId(String);

impl KeyId {
    /// `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a key was refused: only ECDSA P-256 PEM public keys are understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an ECDSA P-256 public key in PEM (SubjectPublicKeyInfo) form")]
pub struct KeyError;

impl PublicKey {
    /// Parses a PEM `PUBLIC KEY`; `origin` says where it came from (a path, `keyData`).
    ///
    /// # Errors
    /// [`KeyError`] for anything but an ECDSA P-256 public key.
    pub fn from_pem(pem: &str, origin: impl Into<String>) -> Result<PublicKey, KeyError> {
        let key = VerifyingKey::from_public_key_pem(pem.trim()).map_err(|_| KeyError)?;
        let der = key.to_public_key_der().map_err(|_| KeyError)?;
        let id = KeyId(format!(
            "sha256:{}",
            hex::encode(Sha256::digest(der.as_bytes()))
        ));
        Ok(PublicKey {
            key,
            id,
            origin: origin.into(),
        })
    }

    /// The key's fingerprint.
    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// Where the key came from (`keyPath` file or `keyData`).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Whether `signature` (ASN.1 DER, as cosign writes it) is this key's ECDSA-SHA256 signature
    /// of `message`. A signature that is not DER counts as not verifying.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = Signature::from_der(signature) else {
            return false;
        };
        self.key.verify(message, &signature).is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("id", &self.id)
            .field("origin", &self.origin)
            .finish()
    }
}
