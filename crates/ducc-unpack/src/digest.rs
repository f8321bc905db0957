//! Typed sha256 digests: the compressed blob digest and the uncompressed diff_id are distinct types.

use std::fmt;
use std::str::FromStr;

/// Why a digest string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DigestParseError {
    /// The algorithm prefix is not `sha256:`.
    #[error("digest {0:?}: only sha256 digests are supported")]
    UnsupportedAlgorithm(String),
    /// The hex part is not 64 lowercase hex digits.
    #[error("digest {0:?}: expected 64 lowercase hex digits after sha256:")]
    BadHex(String),
}

fn parse_sha256(text: &str) -> Result<[u8; 32], DigestParseError> {
    let Some(hex_part) = text.strip_prefix("sha256:") else {
        return Err(DigestParseError::UnsupportedAlgorithm(text.to_owned()));
    };
    if hex_part.len() != 64
        || !hex_part
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(DigestParseError::BadHex(text.to_owned()));
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out)
        .map_err(|_| DigestParseError::BadHex(text.to_owned()))?;
    Ok(out)
}

macro_rules! sha256_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 32]);

        impl $name {
            /// Wraps raw sha256 bytes.
            pub fn from_sha256_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }
            /// The raw sha256 bytes.
            pub fn sha256_bytes(&self) -> &[u8; 32] {
                &self.0
            }
            /// The 64 lowercase hex digits, without the `sha256:` prefix.
            pub fn hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl FromStr for $name {
            type Err = DigestParseError;
            /// Parses `sha256:<64 lowercase hex digits>`.
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                parse_sha256(text).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "sha256:{}", hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(sha256:{})", stringify!($name), hex::encode(self.0))
            }
        }
    };
}

sha256_type!(
    /// Digest of a layer blob as stored and served (the compressed bytes): the manifest's layer
    /// descriptor digest, and the `<hex>` of `.layers/<hh>/<hex>`.
    BlobDigest
);
sha256_type!(
    /// Digest of a layer's uncompressed tar stream: the image config's `rootfs.diff_ids[i]`.
    DiffId
);

/// Another name for [`BlobDigest`]: the digest that identifies a layer in a manifest.
pub type LayerDigest = BlobDigest;
