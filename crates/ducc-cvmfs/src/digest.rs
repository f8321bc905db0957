//! The image config digest type. Layer (blob) digests and diff ids are `ducc-unpack`'s
//! [`LayerDigest`](ducc_unpack::LayerDigest) and [`DiffId`](ducc_unpack::DiffId): each digest
//! kind is its own type, so a config digest can never be taken for a layer digest.

use std::fmt;
use std::str::FromStr;

/// A string that is not `sha256:` followed by 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: expected sha256: and 64 lowercase hex digits")]
pub struct DigestError {
    /// Which digest kind was being parsed (`layer digest`, `config digest`, `diff id`).
    pub kind: &'static str,
    /// The rejected input.
    pub value: String,
}

/// Checks `sha256:<64 lowercase hex>` and returns the hex part. Only sha256 is accepted: the
/// layout uses the hex as a directory name, and upstream DUCC's layout only knows sha256.
fn parse_sha256<'a>(kind: &'static str, value: &'a str) -> Result<&'a str, DigestError> {
    let hex = value.strip_prefix("sha256:").unwrap_or("");
    if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(hex)
    } else {
        Err(DigestError {
            kind,
            value: value.to_owned(),
        })
    }
}

macro_rules! sha256_digest {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name {
            hex: String,
        }

        impl $name {
            #[doc = concat!("Parses a ", $kind, " written as `sha256:<64 lowercase hex digits>`.")]
            ///
            /// # Errors
            /// [`DigestError`] when the algorithm is not sha256 or the hex part is malformed.
            pub fn parse(value: &str) -> Result<Self, DigestError> {
                parse_sha256($kind, value).map(|hex| Self { hex: hex.to_owned() })
            }

            /// Builds the digest from its 64 lowercase hex digits (without `sha256:`).
            ///
            /// # Errors
            /// [`DigestError`] when `hex` is not 64 lowercase hex digits.
            pub fn from_hex(hex: &str) -> Result<Self, DigestError> {
                Self::parse(&format!("sha256:{hex}"))
            }

            /// The 64 hex digits, without `sha256:`.
            pub fn hex(&self) -> &str {
                &self.hex
            }

            /// The first two hex digits: the shard directory name in the layout.
            pub fn shard(&self) -> &str {
                &self.hex[..2]
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "sha256:{}", self.hex)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(sha256:{})", stringify!($name), self.hex)
            }
        }

        impl FromStr for $name {
            type Err = DigestError;
            fn from_str(s: &str) -> Result<Self, DigestError> {
                Self::parse(s)
            }
        }
    };
}

sha256_digest!(
    /// Digest of an image config blob (the image id): it names the flat tree (`.flat/<hh>/<hex>/`).
    ConfigDigest,
    "config digest"
);
#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0f35a1c8d2e4b6f7081920a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7";

    #[test]
    fn parses_sha256_and_exposes_hex_and_shard() {
        let d = ConfigDigest::parse(&format!("sha256:{HEX}")).unwrap();
        assert_eq!(d.hex(), HEX);
        assert_eq!(d.shard(), "0f");
        assert_eq!(d.to_string(), format!("sha256:{HEX}"));
        assert_eq!(ConfigDigest::from_hex(HEX).unwrap().hex(), HEX);
    }

    #[test]
    fn rejects_malformed_digests_naming_the_kind() {
        let upper = format!("sha256:{}", HEX.to_uppercase());
        let short = format!("sha256:{}", &HEX[..63]);
        let other_algo = format!("sha512:{HEX}");
        let traversal = format!("sha256:../{}", &HEX[3..]);
        for bad in [
            upper.as_str(),
            short.as_str(),
            other_algo.as_str(),
            traversal.as_str(),
            HEX,
            "",
        ] {
            let err = ConfigDigest::parse(bad).unwrap_err();
            assert_eq!(err.value, bad);
            assert!(
                err.to_string().starts_with("invalid config digest"),
                "{err}"
            );
        }
    }
}
