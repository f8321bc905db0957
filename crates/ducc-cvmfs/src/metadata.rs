//! The JSON files of the layout, in upstream DUCC's shapes: `origin.json`, `layers.json` and the
//! marker `manifest.json`; and ours, `whiteouts.json` and, beside the marker, `dropped.json`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use ducc_oci::{ConfigDigest, DiffId, LayerDigest};

/// `.layers/<hh>/<hex>/.metadata/origin.json`: `{"origin":["sha256:<config digest>", ...]}`.
///
/// Differs from upstream on purpose: upstream appends on every conversion and so repeats
/// digests; here a config digest is listed once, in the order first seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// Config digests (`sha256:<hex>`) of the images that use the layer.
    pub origin: Vec<String>,
}

impl Origin {
    /// Parses an existing `origin.json`, dropping duplicates an upstream DUCC may have written.
    ///
    /// # Errors
    /// The JSON error when the bytes are not an `origin.json`.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let raw: Origin = serde_json::from_slice(bytes)?;
        let mut out = Origin::default();
        for o in raw.origin {
            if !out.origin.contains(&o) {
                out.origin.push(o);
            }
        }
        Ok(out)
    }

    /// Reads the `origin.json` at `path` (a published file): a missing file is an empty list;
    /// an unreadable or corrupt one is an error naming it, so it is never overwritten with a
    /// shorter list (garbage collection trusts it).
    ///
    /// # Errors
    /// [`crate::PublishError::CorruptFile`].
    pub fn read(path: &std::path::Path) -> Result<Self, crate::PublishError> {
        let corrupt = |reason: String| crate::PublishError::CorruptFile {
            path: path.to_owned(),
            reason,
        };
        match std::fs::read(path) {
            Ok(bytes) => Self::from_slice(&bytes).map_err(|e| corrupt(e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(corrupt(e.to_string())),
        }
    }

    /// Adds a config digest unless already listed; returns whether it was added.
    pub fn add(&mut self, config: &ConfigDigest) -> bool {
        let text = config.to_string();
        if self.origin.contains(&text) {
            false
        } else {
            self.origin.push(text);
            true
        }
    }

    /// The JSON text.
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// One entry of `layers.json` (containers/storage's layer record, as upstream `StoreLayerInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// The diff id hex, without `sha256:`.
    pub id: String,
    /// When the layer was stored, RFC 3339 in UTC.
    pub created: String,
    /// `sha256:<hex>` of the compressed blob.
    #[serde(rename = "compressed-diff-digest")]
    pub compressed_diff_digest: String,
    /// `sha256:<hex>` of the uncompressed tar.
    #[serde(rename = "diff-digest")]
    pub diff_digest: String,
    /// Size in bytes of the uncompressed tar.
    #[serde(rename = "diff-size")]
    pub diff_size: u64,
}

impl LayerInfo {
    /// The record for a layer stored at `created`.
    pub fn new(layer: &LayerDigest, diff_id: &DiffId, diff_size: u64, created: SystemTime) -> Self {
        Self {
            id: diff_id.hex(),
            created: rfc3339_utc(created),
            compressed_diff_digest: layer.to_string(),
            diff_digest: diff_id.to_string(),
            diff_size,
        }
    }

    /// The whole `layers.json`: a JSON array holding this one record, as upstream writes it.
    pub fn to_layers_json(&self) -> Vec<u8> {
        serde_json::to_vec(&[self]).unwrap_or_default()
    }
}

/// `.layers/<hh>/<hex>/.metadata/whiteouts.json`, written with a layer directory whose whiteouts
/// depend on the stack below it (issue 28): on a cvmfs stratum 0 an opaque directory becomes a
/// whiteout device for each entry the layers below hold in it, so the devices are right for
/// that stack only. `{"lower-diff-ids":["sha256:..", ...],"directories":["etc/x", ...]}`: the
/// stack below they were written for (bottom first), and the layer's directories that hide
/// everything below them (`""` is the root); `"dropped"` lists whiteouts left out because that
/// stack had nothing to hide there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerWhiteouts {
    /// The diff_ids (`sha256:<hex>`) of the layers below, bottom first.
    #[serde(rename = "lower-diff-ids")]
    pub lower_diff_ids: Vec<String>,
    /// Layer-relative paths of the directories whose whiteouts were written for that stack.
    pub directories: Vec<String>,
    /// Layer-relative paths of whiteouts left out because that stack had no directory to hide
    /// anything in (omitted when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<String>,
}

impl LayerWhiteouts {
    /// The record for whiteouts written over `lower` (bottom first) in `directories`.
    pub fn new(lower: &[DiffId], directories: Vec<String>) -> Self {
        Self {
            lower_diff_ids: lower.iter().map(ToString::to_string).collect(),
            directories,
            dropped: Vec::new(),
        }
    }

    /// Reads the record at `path` (a published file): `None` where there is none (the layer's
    /// whiteouts do not depend on the stack below, or it was written before this record).
    ///
    /// # Errors
    /// [`crate::PublishError::CorruptFile`] when it cannot be read or parsed.
    pub fn read(path: &std::path::Path) -> Result<Option<Self>, crate::PublishError> {
        let corrupt = |reason: String| crate::PublishError::CorruptFile {
            path: path.to_owned(),
            reason,
        };
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| corrupt(e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(corrupt(e.to_string())),
        }
    }

    /// Whether the whiteouts were written for exactly this stack below (bottom first).
    pub fn written_for(&self, lower: &[DiffId]) -> bool {
        self.lower_diff_ids.len() == lower.len()
            && self
                .lower_diff_ids
                .iter()
                .zip(lower)
                .all(|(recorded, id)| *recorded == id.to_string())
    }

    /// The JSON text.
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// One descriptor inside [`MarkerManifest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkerDescriptor {
    /// Media type of the blob.
    #[serde(rename = "MediaType", alias = "mediaType", default)]
    pub media_type: String,
    /// Size in bytes.
    #[serde(rename = "Size", alias = "size", default)]
    pub size: u64,
    /// `sha256:<hex>`.
    #[serde(rename = "Digest", alias = "digest")]
    pub digest: String,
}

/// The marker `.metadata/<registry>/<repository>:<tag>/manifest.json`.
///
/// Upstream stores its re-marshalled Go struct, whose keys are the Go field names
/// (`SchemaVersion`, `MediaType`, `Config`, `Layers`; descriptors `MediaType`, `Size`,
/// `Digest`). We write the same keys so upstream's `gc` and "already converted" check read our
/// markers; reading also accepts the OCI spellings (Go's decoder is case-insensitive too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkerManifest {
    /// Manifest schema version (2).
    #[serde(rename = "SchemaVersion", alias = "schemaVersion", default)]
    pub schema_version: u32,
    /// Manifest media type.
    #[serde(rename = "MediaType", alias = "mediaType", default)]
    pub media_type: String,
    /// The image config.
    #[serde(rename = "Config", alias = "config")]
    pub config: MarkerDescriptor,
    /// The layers, bottom first.
    #[serde(rename = "Layers", alias = "layers", default)]
    pub layers: Vec<MarkerDescriptor>,
}

impl MarkerManifest {
    /// Parses a marker written by us or by upstream.
    ///
    /// # Errors
    /// The JSON error when the bytes are not a marker manifest.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The JSON text.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The config digest, when it is a well-formed sha256 digest.
    pub fn config_digest(&self) -> Option<ConfigDigest> {
        ConfigDigest::parse(&self.config.digest).ok()
    }
}

/// One entry of [`DroppedRecord`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DroppedEntry {
    /// The entry's path in the image's tree (relative, as the layer names it).
    pub path: String,
    /// `fifo`, `char` or `block`.
    pub kind: String,
    /// The layer that held it (`sha256:<hex>`).
    pub layer: String,
}

/// `dropped.json` beside an image's marker: the entries of the image that its layer
/// directories and flat tree leave out because the repository cannot store them (device files
/// and FIFOs behind a cvmfs gateway): `{"dropped":[{"path":...,"kind":...,"layer":...}]}`.
/// Written and removed with the marker; `ducc list` counts its first array.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedRecord {
    /// The entries, by path.
    pub dropped: Vec<DroppedEntry>,
}

impl DroppedRecord {
    /// The JSON text.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a time (before 1970 counts as 1970; past jiff's range, its end).
pub(crate) fn rfc3339_utc(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let stamp = i64::try_from(secs)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .unwrap_or(jiff::Timestamp::MAX);
    stamp.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg(c: char) -> ConfigDigest {
        ConfigDigest::from_hex(&c.to_string().repeat(64)).unwrap()
    }

    #[test]
    fn layer_whiteouts_round_trip_and_know_their_stack() {
        let below = [DiffId::of(b"one"), DiffId::of(b"two")];
        let record = LayerWhiteouts::new(&below, vec!["etc/x".into()]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("whiteouts.json");
        assert_eq!(LayerWhiteouts::read(&path).unwrap(), None);
        std::fs::write(&path, record.to_json()).unwrap();
        let read = LayerWhiteouts::read(&path).unwrap().unwrap();
        assert_eq!(read, record);
        assert!(read.written_for(&below));
        assert!(!read.written_for(&below[..1]));
        assert!(!read.written_for(&[below[1], below[0]]));
        let text: serde_json::Value = serde_json::from_slice(&record.to_json()).unwrap();
        assert_eq!(
            text,
            serde_json::json!({"lower-diff-ids": [below[0].to_string(), below[1].to_string()],
                               "directories": ["etc/x"]})
        );
    }

    #[test]
    fn a_corrupt_whiteouts_json_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("whiteouts.json");
        std::fs::write(&path, b"{\"lower-diff-ids\": [").unwrap();
        let err = LayerWhiteouts::read(&path).unwrap_err();
        assert!(
            matches!(&err, crate::PublishError::CorruptFile { path: p, .. } if *p == path),
            "{err}"
        );
    }

    #[test]
    fn origin_lists_each_config_once_and_drops_upstream_duplicates() {
        let a = cfg('a');
        let upstream = format!(r#"{{"origin":["{a}","{a}"]}}"#);
        let mut origin = Origin::from_slice(upstream.as_bytes()).unwrap();
        assert_eq!(origin.origin, vec![a.to_string()]);
        assert!(!origin.add(&a));
        assert!(origin.add(&cfg('b')));
        assert_eq!(
            String::from_utf8(origin.to_json()).unwrap(),
            format!(r#"{{"origin":["{a}","{}"]}}"#, cfg('b'))
        );
    }

    #[test]
    fn layers_json_has_upstream_keys() {
        let layer: LayerDigest = format!("sha256:{}", "1".repeat(64)).parse().unwrap();
        let diff: DiffId = format!("sha256:{}", "2".repeat(64)).parse().unwrap();
        let info = LayerInfo::new(
            &layer,
            &diff,
            42,
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        );
        let text = String::from_utf8(info.to_layers_json()).unwrap();
        assert_eq!(
            text,
            format!(
                r#"[{{"id":"{d}","created":"2023-11-14T22:13:20Z","compressed-diff-digest":"sha256:{l}","diff-digest":"sha256:{d}","diff-size":42}}]"#,
                d = "2".repeat(64),
                l = "1".repeat(64)
            )
        );
    }

    #[test]
    fn rfc3339_handles_leap_years_and_epoch() {
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (4_107_542_399, "2100-02-28T23:59:59Z"),
        ];
        for (secs, want) in cases {
            assert_eq!(rfc3339_utc(UNIX_EPOCH + Duration::from_secs(secs)), want);
        }
        // Beyond year 9999 (a hostile clock or config) is clamped, never a panic.
        let far = UNIX_EPOCH + Duration::from_secs(1 << 40);
        let clamped = rfc3339_utc(far);
        assert!(
            clamped.starts_with("9999-12-") && clamped.ends_with('Z'),
            "{clamped}"
        );
    }

    #[test]
    fn marker_is_written_with_go_field_names_and_reads_both_spellings() {
        let marker = MarkerManifest {
            schema_version: 2,
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            config: MarkerDescriptor {
                media_type: "application/vnd.oci.image.config.v1+json".into(),
                size: 7,
                digest: cfg('c').to_string(),
            },
            layers: vec![],
        };
        let text = String::from_utf8(marker.to_json()).unwrap();
        assert!(
            text.starts_with(r#"{"SchemaVersion":2,"MediaType":"#),
            "{text}"
        );
        assert!(text.contains(r#""Config":{"MediaType":"#), "{text}");
        assert_eq!(MarkerManifest::from_slice(text.as_bytes()).unwrap(), marker);
        let oci = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x","size":7,"digest":"{}"}},"layers":[]}}"#,
            cfg('c')
        );
        assert_eq!(
            MarkerManifest::from_slice(oci.as_bytes())
                .unwrap()
                .config_digest(),
            Some(cfg('c'))
        );
    }
}
