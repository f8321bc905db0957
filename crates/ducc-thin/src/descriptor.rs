//! `thin.json`: the descriptor the cvmfs graph driver reads.

use ducc_oci::LayerDigest;
use serde::{Deserialize, Serialize};

/// The descriptor version upstream writes and the graph driver reads.
pub const THIN_VERSION: &str = "1.0";

/// `thin.json`, field for field as upstream DUCC writes it.
///
/// ```
/// use ducc_thin::{ThinDescriptor, ThinLayer};
/// use ducc_oci::LayerDigest;
/// let hex = "ab".repeat(32);
/// let layer = ThinLayer::in_repository("unpacked.cern.ch", None, &LayerDigest::from_hex(&hex)?);
/// let thin = ThinDescriptor::new("https://registry.hub.docker.com/library/ubuntu:22.04", vec![layer]);
/// assert_eq!(thin.layers[0].url, format!("cvmfs://unpacked.cern.ch/.layers/ab/{hex}/layerfs"));
/// # Ok::<(), ducc_oci::DigestError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThinDescriptor {
    /// Always [`THIN_VERSION`].
    pub version: String,
    /// The oldest graph driver version that can read this descriptor, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<String>,
    /// The input image's whole name (`https://registry/repository:tag`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The layers, bottom first.
    pub layers: Vec<ThinLayer>,
    /// Free text, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// One layer of a thin image: where its unpacked directory is in CernVM-FS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThinLayer {
    /// The compressed layer digest; `thin.json` holds its hex only (no `sha256:`), as upstream.
    #[serde(with = "hex_only")]
    pub digest: LayerDigest,
    /// `cvmfs://<repo>[/<subdir>]/.layers/<hh>/<hex>/layerfs`.
    pub url: String,
}

impl ThinLayer {
    /// The layer `digest`, unpacked in repository `repo` (under `subdir` when the wish list's
    /// `cvmfs_repo` has one), at the path of the repository layout.
    pub fn in_repository(repo: &str, subdir: Option<&str>, digest: &LayerDigest) -> ThinLayer {
        let (shard, hex) = (digest.shard(), digest.hex());
        let base = match subdir
            .map(|s| s.trim_matches('/'))
            .filter(|s| !s.is_empty())
        {
            Some(sub) => format!("{repo}/{sub}"),
            None => repo.to_owned(),
        };
        ThinLayer {
            digest: *digest,
            url: format!("cvmfs://{base}/.layers/{shard}/{hex}/layerfs"),
        }
    }
}

impl ThinDescriptor {
    /// A version 1.0 descriptor for the image `origin` with `layers` bottom first.
    pub fn new(origin: &str, layers: Vec<ThinLayer>) -> ThinDescriptor {
        ThinDescriptor {
            version: THIN_VERSION.to_owned(),
            min_version: None,
            origin: Some(origin.to_owned()),
            layers,
            comment: None,
        }
    }

    /// The file's bytes: indented JSON, as upstream writes it, with a final newline.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain strings and vectors cannot fail.
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }
}

/// `thin.json` writes layer digests as bare hex, as upstream does.
mod hex_only {
    use ducc_oci::LayerDigest;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        digest: &LayerDigest,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&digest.hex())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<LayerDigest, D::Error> {
        let hex = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        LayerDigest::from_hex(&hex).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_url_includes_the_subdir() {
        let hex = "0f".repeat(32);
        let digest = LayerDigest::from_hex(&hex).unwrap();
        let layer = ThinLayer::in_repository("unpacked.cern.ch", Some("/sub/dir/"), &digest);
        assert_eq!(
            layer.url,
            format!("cvmfs://unpacked.cern.ch/sub/dir/.layers/0f/{hex}/layerfs")
        );
        assert_eq!(layer.digest, digest);
    }

    #[test]
    fn json_has_upstream_field_names_and_omits_unset_fields() {
        let hex = "aa".repeat(32);
        let thin = ThinDescriptor::new(
            "https://r.io/a:1",
            vec![ThinLayer {
                digest: LayerDigest::from_hex(&hex).unwrap(),
                url: "cvmfs://r/.layers/aa/aa/layerfs".to_owned(),
            }],
        );
        let value: serde_json::Value = serde_json::from_slice(&thin.to_json()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "version": "1.0",
                "origin": "https://r.io/a:1",
                "layers": [{"digest": hex, "url": "cvmfs://r/.layers/aa/aa/layerfs"}]
            })
        );
        let back: ThinDescriptor = serde_json::from_slice(&thin.to_json()).unwrap();
        assert_eq!(back, thin);
    }

    #[test]
    fn a_layer_digest_that_is_not_bare_sha256_hex_is_refused() {
        for bad in [format!("sha256:{}", "aa".repeat(32)), "aa".to_owned()] {
            let json =
                serde_json::json!({"version": "1.0", "layers": [{"digest": bad, "url": "u"}]});
            let err = serde_json::from_value::<ThinDescriptor>(json).unwrap_err();
            assert!(err.to_string().contains("invalid blob digest"), "{err}");
        }
    }

    #[test]
    fn json_keeps_min_version_and_comment_when_set() {
        let mut thin = ThinDescriptor::new("https://r.io/a:1", vec![]);
        thin.min_version = Some("1.0".to_owned());
        thin.comment = Some("made by ducc-rs".to_owned());
        let back: ThinDescriptor = serde_json::from_slice(&thin.to_json()).unwrap();
        assert_eq!(back, thin);
    }
}
