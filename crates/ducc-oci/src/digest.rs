//! Typed sha256 digests: one type per digest kind, so a diff_id cannot go where a blob digest is
//! meant, and a config digest cannot name a layer directory.
//!
//! Only sha256 is accepted: the repository layout uses the hex as a directory name, and upstream
//! DUCC's layout only knows sha256. Digests of other algorithms stay [`oci_spec::image::Digest`]s
//! (the registry client verifies sha384 and sha512 too); converting one into a typed digest
//! fails with [`DigestProblem::UnsupportedAlgorithm`].

use std::fmt;
use std::io;
use std::str::FromStr;

use oci_spec::image::Digest;
use sha2::Digest as _;

/// What is wrong with a digest string.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DigestProblem {
    /// The algorithm is not sha256 (the algorithm as given, empty when there is no `:`).
    UnsupportedAlgorithm(String),
    /// The part after `sha256:` is not 64 lowercase hex digits.
    BadHex,
}

impl fmt::Display for DigestProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DigestProblem::UnsupportedAlgorithm(a) if a.is_empty() => {
                f.write_str("expected `sha256:` and 64 lowercase hex digits")
            }
            DigestProblem::UnsupportedAlgorithm(a) => {
                write!(f, "algorithm `{a}` is not supported (only sha256)")
            }
            DigestProblem::BadHex => {
                f.write_str("expected 64 lowercase hex digits after `sha256:`")
            }
        }
    }
}

/// A string that is not a sha256 digest of the kind asked for.
///
/// Displays as ``invalid config digest `VALUE`: PROBLEM``.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} `{value}`: {problem}")]
pub struct DigestError {
    kind: &'static str,
    value: String,
    problem: DigestProblem,
}

impl DigestError {
    /// Which digest kind was being parsed (`blob digest`, `diff id`, `config digest`,
    /// `manifest digest`).
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The rejected input.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// What is wrong with it.
    pub fn problem(&self) -> &DigestProblem {
        &self.problem
    }
}

fn parse_sha256(kind: &'static str, text: &str) -> Result<[u8; 32], DigestError> {
    let fail = |problem| DigestError {
        kind,
        value: text.to_owned(),
        problem,
    };
    let Some(hex_part) = text.strip_prefix("sha256:") else {
        let algorithm = text.split_once(':').map_or("", |(a, _)| a);
        return Err(fail(DigestProblem::UnsupportedAlgorithm(
            algorithm.to_owned(),
        )));
    };
    // Uppercase hex decodes fine but would name another directory than upstream's.
    if hex_part.len() != 64
        || !hex_part
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(fail(DigestProblem::BadHex));
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out).map_err(|_| fail(DigestProblem::BadHex))?;
    Ok(out)
}

/// The sha256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(bytes).into()
}

/// A running sha256 for content that streams past (also an [`io::Write`] sink, so
/// `io::copy(&mut reader, &mut hasher)` hashes a reader).
#[derive(Clone, Default)]
pub struct Sha256Hasher {
    inner: sha2::Sha256,
    len: u64,
}

impl Sha256Hasher {
    /// A hasher that has seen nothing.
    pub fn new() -> Self {
        Sha256Hasher::default()
    }

    /// Adds `data`.
    pub fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
        self.len = self.len.saturating_add(data.len() as u64);
    }

    /// Bytes seen so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was seen yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The sha256 of everything seen.
    pub fn finish(self) -> [u8; 32] {
        self.inner.finalize().into()
    }
}

impl fmt::Debug for Sha256Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sha256Hasher")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl io::Write for Sha256Hasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

macro_rules! sha256_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 32]);

        impl $name {
            #[doc = concat!("What this digest is called in error messages: `", $kind, "`.")]
            pub const KIND: &'static str = $kind;

            #[doc = concat!("Parses a ", $kind, " written as `sha256:<64 lowercase hex digits>`.")]
            ///
            /// # Errors
            /// [`DigestError`] when the algorithm is not sha256 or the hex part is malformed.
            pub fn parse(text: &str) -> Result<Self, DigestError> {
                parse_sha256($kind, text).map(Self)
            }

            #[doc = concat!("Builds a ", $kind, " from its 64 lowercase hex digits (without `sha256:`).")]
            ///
            /// # Errors
            /// [`DigestError`] when `hex` is not 64 lowercase hex digits.
            pub fn from_hex(hex: &str) -> Result<Self, DigestError> {
                Self::parse(&format!("sha256:{hex}")).map_err(|mut e| {
                    e.value = hex.to_owned();
                    e
                })
            }

            /// Wraps raw sha256 bytes.
            pub fn from_sha256_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            /// The sha256 of `content`.
            pub fn of(content: &[u8]) -> Self {
                Self(sha256(content))
            }

            /// The raw sha256 bytes.
            pub fn sha256_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// The 64 lowercase hex digits, without `sha256:`.
            pub fn hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The first two hex digits: the shard directory name in the repository layout.
            pub fn shard(&self) -> String {
                hex::encode(&self.0[..1])
            }
        }

        impl FromStr for $name {
            type Err = DigestError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Self::parse(text)
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

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }

        impl From<$name> for Digest {
            fn from(digest: $name) -> Digest {
                to_oci(&digest.0)
            }
        }

        impl From<&$name> for Digest {
            fn from(digest: &$name) -> Digest {
                to_oci(&digest.0)
            }
        }

        impl TryFrom<&Digest> for $name {
            type Error = DigestError;

            fn try_from(digest: &Digest) -> Result<Self, DigestError> {
                // oci-spec has already checked length and case for sha256.
                Self::parse(digest.as_ref())
            }
        }

        impl TryFrom<Digest> for $name {
            type Error = DigestError;

            fn try_from(digest: Digest) -> Result<Self, DigestError> {
                Self::try_from(&digest)
            }
        }

        impl PartialEq<Digest> for $name {
            fn eq(&self, other: &Digest) -> bool {
                Self::try_from(other).is_ok_and(|d| d == *self)
            }
        }
    };
}

fn to_oci(bytes: &[u8; 32]) -> Digest {
    match Digest::try_from(format!("sha256:{}", hex::encode(bytes))) {
        Ok(digest) => digest,
        // `sha256:` and 64 lowercase hex digits is exactly what oci-spec requires of sha256.
        Err(e) => unreachable!("oci-spec refused a well-formed sha256 digest: {e}"),
    }
}

sha256_type!(
    /// Digest of a blob as stored and served: for a layer, the compressed bytes, as the
    /// manifest's layer descriptor names them. The `<hex>` of `.layers/<hh>/<hex>`.
    BlobDigest,
    "blob digest"
);
sha256_type!(
    /// Digest of a layer's uncompressed tar stream: the image config's `rootfs.diff_ids[i]`.
    DiffId,
    "diff id"
);
sha256_type!(
    /// Digest of an image config blob (the image id): it names the flat tree
    /// (`.flat/<hh>/<hex>/`).
    ConfigDigest,
    "config digest"
);
sha256_type!(
    /// Digest of a manifest or index document: what `@sha256:...` pins and what a push returns.
    ManifestDigest,
    "manifest digest"
);

/// Another name for [`BlobDigest`]: the digest that identifies a layer in a manifest and in the
/// repository layout.
pub type LayerDigest = BlobDigest;

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
        assert_eq!(ConfigDigest::from_hex(HEX).unwrap(), d);
        assert_eq!(format!("{d:?}"), format!("ConfigDigest(sha256:{HEX})"));
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
            assert_eq!(err.value(), bad);
            assert_eq!(err.kind(), "config digest");
            assert!(
                err.to_string().starts_with("invalid config digest"),
                "{err}"
            );
        }
    }

    #[test]
    fn other_algorithms_are_named_in_the_error() {
        let err = BlobDigest::parse(&format!("sha512:{HEX}{HEX}")).unwrap_err();
        assert_eq!(
            err.problem(),
            &DigestProblem::UnsupportedAlgorithm("sha512".to_owned())
        );
        assert!(err.to_string().contains("`sha512`"), "{err}");
        let err = DiffId::parse("sha256:abc").unwrap_err();
        assert_eq!(err.problem(), &DigestProblem::BadHex);
    }

    #[test]
    fn from_hex_reports_the_hex_as_given() {
        let err = DiffId::from_hex("xyz").unwrap_err();
        assert_eq!(err.value(), "xyz");
        assert_eq!(
            err.to_string(),
            "invalid diff id `xyz`: expected 64 lowercase hex digits after `sha256:`"
        );
    }

    #[test]
    fn of_hashes_the_content() {
        // sha256 of the empty string, a well-known constant.
        assert_eq!(
            BlobDigest::of(b"").hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut hasher = Sha256Hasher::new();
        hasher.update(b"hello ");
        io::Write::write_all(&mut hasher, b"world").unwrap();
        assert_eq!(hasher.len(), 11);
        assert_eq!(
            DiffId::from_sha256_bytes(hasher.finish()),
            DiffId::of(b"hello world")
        );
    }

    #[test]
    fn converts_to_and_from_oci_spec_digests() {
        let blob = BlobDigest::from_hex(HEX).unwrap();
        let oci: Digest = blob.into();
        assert_eq!(oci.to_string(), blob.to_string());
        assert_eq!(BlobDigest::try_from(&oci).unwrap(), blob);
        assert_eq!(blob, oci);
        let sha512: Digest = format!("sha512:{}", "ab".repeat(64)).parse().unwrap();
        assert!(matches!(
            ManifestDigest::try_from(sha512).unwrap_err().problem(),
            DigestProblem::UnsupportedAlgorithm(a) if a == "sha512"
        ));
    }

    #[test]
    fn serde_uses_the_prefixed_string_form() {
        let d = ManifestDigest::from_hex(HEX).unwrap();
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"sha256:{HEX}\""));
        assert_eq!(serde_json::from_str::<ManifestDigest>(&json).unwrap(), d);
        let err = serde_json::from_str::<ManifestDigest>(&format!("\"{HEX}\"")).unwrap_err();
        assert!(err.to_string().contains("invalid manifest digest"), "{err}");
    }

    #[test]
    fn digest_strings_parse_and_print_back() {
        let text = format!("sha256:{}", "ab".repeat(32));
        let digest: BlobDigest = text.parse().expect("parse");
        assert_eq!(digest.to_string(), text);
        assert_eq!(digest.hex(), "ab".repeat(32));
        assert!("sha512:00".parse::<DiffId>().is_err());
        assert!(
            format!("sha256:{}", "AB".repeat(32))
                .parse::<DiffId>()
                .is_err()
        );
        assert!("sha256:abc".parse::<DiffId>().is_err());
    }

    #[test]
    fn each_kind_names_itself_in_errors() {
        for (kind, err) in [
            ("blob digest", BlobDigest::parse("x").unwrap_err()),
            ("diff id", DiffId::parse("x").unwrap_err()),
            ("config digest", ConfigDigest::parse("x").unwrap_err()),
            ("manifest digest", ManifestDigest::parse("x").unwrap_err()),
        ] {
            assert!(
                err.to_string().starts_with(&format!("invalid {kind} `x`")),
                "{err}"
            );
        }
    }
}
