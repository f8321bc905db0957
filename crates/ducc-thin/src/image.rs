//! Building the thin image: one gzip layer holding `thin.json`, a config derived from the source
//! image's config, and a manifest. Everything is a pure function of its inputs, so the same source
//! image gives the same thin image digest run after run.

use std::collections::BTreeMap;
use std::io::Write;

use ducc_oci::{BlobDigest, ConfigDigest, DiffId, ImageFormat, ManifestDigest};
use ducc_registry::oci_spec::image::ImageConfiguration;
use serde::Serialize;

use crate::ThinDescriptor;
use crate::error::ThinError;

/// The environment variable the graph driver looks for.
pub const CVMFS_IMAGE_ENV: &str = "CVMFS_IMAGE=true";

/// One blob of the thin image, small enough to keep in memory (a few kilobytes), with the digest
/// of its kind ([`BlobDigest`] for the layer, [`ConfigDigest`], [`ManifestDigest`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThinBlob<D> {
    /// The sha256 of [`ThinBlob::bytes`].
    pub digest: D,
    /// The media type it is referenced with.
    pub media_type: &'static str,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// A built thin image, ready to push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThinImage {
    /// The gzip layer holding only `thin.json`.
    pub layer: ThinBlob<BlobDigest>,
    /// The uncompressed layer digest (`rootfs.diff_ids[0]`).
    pub diff_id: DiffId,
    /// The image config.
    pub config: ThinBlob<ConfigDigest>,
    /// The manifest; its digest is the thin image's digest.
    pub manifest: ThinBlob<ManifestDigest>,
}

impl ThinImage {
    /// Builds the thin image for `descriptor`, keeping from `source` (the input image's config)
    /// everything a runtime needs: Env (plus `CVMFS_IMAGE=true`), Cmd, Entrypoint, WorkingDir,
    /// User, Labels, ExposedPorts, Volumes, StopSignal, the platform, and the creation time.
    ///
    /// # Errors
    /// [`ThinError::Build`] when the layer cannot be written (it never touches the disk, so only
    /// a broken invariant gets there).
    ///
    /// ```
    /// use ducc_oci::ImageFormat;
    /// use ducc_thin::{ThinDescriptor, ThinImage};
    /// use ducc_registry::oci_spec::image::ImageConfiguration;
    /// let source: ImageConfiguration = serde_json::from_str(
    ///     r#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"]},"rootfs":{"type":"layers","diff_ids":[]}}"#,
    /// )?;
    /// let thin = ThinDescriptor::new("https://r.io/a:1", vec![]);
    /// let one = ThinImage::build(&thin, &source, ImageFormat::DockerV2)?;
    /// let two = ThinImage::build(&thin, &source, ImageFormat::DockerV2)?;
    /// assert_eq!(one.manifest.digest, two.manifest.digest);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(
        descriptor: &ThinDescriptor,
        source: &ImageConfiguration,
        format: ImageFormat,
    ) -> Result<ThinImage, ThinError> {
        let mtime = source
            .created()
            .as_deref()
            .and_then(rfc3339_to_unix)
            .unwrap_or(0);
        let tar = thin_tar(&descriptor.to_json(), mtime)?;
        let diff_id = DiffId::of(&tar);
        let layer_bytes = gzip(&tar)?;
        let layer = ThinBlob {
            digest: BlobDigest::of(&layer_bytes),
            media_type: format.gzip_layer_media_type(),
            bytes: layer_bytes,
        };
        let config_bytes = serde_json::to_vec(&thin_config(descriptor, source, &diff_id))
            .map_err(|e| ThinError::Build(format!("cannot serialise the config: {e}")))?;
        let config = ThinBlob {
            digest: ConfigDigest::of(&config_bytes),
            media_type: format.config_media_type(),
            bytes: config_bytes,
        };
        let manifest = ManifestJson {
            schema_version: 2,
            media_type: format.manifest_media_type(),
            config: DescriptorJson::of(&config),
            layers: vec![DescriptorJson::of(&layer)],
        };
        let manifest_bytes = serde_json::to_vec(&manifest)
            .map_err(|e| ThinError::Build(format!("cannot serialise the manifest: {e}")))?;
        Ok(ThinImage {
            layer,
            diff_id,
            manifest: ThinBlob {
                digest: ManifestDigest::of(&manifest_bytes),
                media_type: format.manifest_media_type(),
                bytes: manifest_bytes,
            },
            config,
        })
    }
}

/// A tar with the one entry `thin.json`: mode 0644, owner 0:0, the given mtime.
fn thin_tar(json: &[u8], mtime: u64) -> Result<Vec<u8>, ThinError> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header.set_size(json.len() as u64);
    builder
        .append_data(&mut header, "thin.json", json)
        .and_then(|()| builder.into_inner())
        .map_err(|e| ThinError::Build(format!("cannot write the thin layer: {e}")))
}

/// Gzip with a fixed header (no name, mtime 0) and a fixed level, so the bytes are reproducible.
fn gzip(data: &[u8]) -> Result<Vec<u8>, ThinError> {
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::new(6));
    encoder
        .write_all(data)
        .and_then(|()| encoder.finish())
        .map_err(|e| ThinError::Build(format!("cannot compress the thin layer: {e}")))
}

/// The image config, with sorted maps so its bytes are stable.
#[derive(Serialize)]
struct ConfigJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<String>,
    architecture: String,
    os: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
    config: RuntimeJson,
    rootfs: RootFsJson,
    history: Vec<HistoryJson>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RuntimeJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exposed_ports: Option<BTreeMap<String, Empty>>,
    env: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entrypoint: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cmd: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    volumes: Option<BTreeMap<String, Empty>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    working_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_signal: Option<String>,
}

/// Go's `struct{}`, serialised `{}`, the value type of ExposedPorts and Volumes.
#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct RootFsJson {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

#[derive(Serialize)]
struct HistoryJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<String>,
    created_by: String,
    comment: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestJson {
    schema_version: u32,
    media_type: &'static str,
    config: DescriptorJson,
    layers: Vec<DescriptorJson>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DescriptorJson {
    media_type: &'static str,
    size: u64,
    digest: String,
}

impl DescriptorJson {
    fn of<D: std::fmt::Display>(blob: &ThinBlob<D>) -> DescriptorJson {
        DescriptorJson {
            media_type: blob.media_type,
            size: blob.bytes.len() as u64,
            digest: blob.digest.to_string(),
        }
    }
}

fn thin_config(
    descriptor: &ThinDescriptor,
    source: &ImageConfiguration,
    diff_id: &DiffId,
) -> ConfigJson {
    let mut runtime = RuntimeJson::default();
    if let Some(config) = source.config() {
        runtime.user = config.user().clone().filter(|u| !u.is_empty());
        runtime.exposed_ports = config.exposed_ports().as_ref().map(|ports| set_of(ports));
        runtime.env = config.env().clone().unwrap_or_default();
        runtime.entrypoint = config.entrypoint().clone();
        runtime.cmd = config.cmd().clone();
        runtime.volumes = config.volumes().as_ref().map(|volumes| set_of(volumes));
        runtime.working_dir = config.working_dir().clone().filter(|w| !w.is_empty());
        runtime.labels = config
            .labels()
            .as_ref()
            .map(|labels| labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
        runtime.stop_signal = config.stop_signal().clone();
    }
    runtime.env.retain(|e| !e.starts_with("CVMFS_IMAGE="));
    runtime.env.push(CVMFS_IMAGE_ENV.to_owned());
    let origin = descriptor.origin.as_deref().unwrap_or("an unnamed image");
    ConfigJson {
        created: source.created().clone(),
        architecture: source.architecture().to_string(),
        os: source.os().to_string(),
        variant: source.variant().clone(),
        config: runtime,
        rootfs: RootFsJson {
            kind: "layers",
            diff_ids: vec![diff_id.to_string()],
        },
        history: vec![HistoryJson {
            created: source.created().clone(),
            created_by: format!("ducc-rs thin image of {origin}"),
            comment: "thin.json points at the layers unpacked in CernVM-FS",
        }],
    }
}

fn set_of(items: &[String]) -> BTreeMap<String, Empty> {
    items.iter().map(|item| (item.clone(), Empty {})).collect()
}

/// Seconds since the epoch of an RFC 3339 time (`2024-01-02T03:04:05.678Z`, `...+02:00`).
/// Returns `None` for anything else, including years beyond jiff's range (-9999..=9999);
/// times before 1970 are clamped to 0.
fn rfc3339_to_unix(text: &str) -> Option<u64> {
    let when: jiff::Timestamp = text.trim().parse().ok()?;
    Some(u64::try_from(when.as_second()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ThinLayer;
    use std::io::Read;

    fn source(json: &str) -> ImageConfiguration {
        serde_json::from_str(json).unwrap()
    }

    const SOURCE: &str = r#"{
        "created": "2024-03-01T12:00:00.123456789Z",
        "architecture": "arm64", "os": "linux", "variant": "v8",
        "config": {
            "User": "1000:1000",
            "ExposedPorts": {"8080/tcp": {}, "443/tcp": {}},
            "Env": ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"],
            "Entrypoint": ["/entry.sh"],
            "Cmd": ["bash", "-l"],
            "Volumes": {"/data": {}},
            "WorkingDir": "/work",
            "Labels": {"z": "last", "a": "first"},
            "StopSignal": "SIGINT"
        },
        "rootfs": {"type": "layers", "diff_ids": ["sha256:0000000000000000000000000000000000000000000000000000000000000000"]}
    }"#;

    fn descriptor() -> ThinDescriptor {
        ThinDescriptor::new(
            "https://r.io/a:1",
            vec![ThinLayer::in_repository(
                "unpacked.cern.ch",
                None,
                &ducc_oci::LayerDigest::from_hex(&"ab".repeat(32)).unwrap(),
            )],
        )
    }

    #[test]
    fn layer_holds_only_thin_json_with_fixed_metadata() {
        let image =
            ThinImage::build(&descriptor(), &source(SOURCE), ImageFormat::DockerV2).unwrap();
        let mut tar_bytes = Vec::new();
        flate2::read::GzDecoder::new(&image.layer.bytes[..])
            .read_to_end(&mut tar_bytes)
            .unwrap();
        assert_eq!(DiffId::of(&tar_bytes), image.diff_id);
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let mut entries = archive.entries().unwrap();
        let mut entry = entries.next().unwrap().unwrap();
        assert_eq!(entry.path().unwrap().to_str(), Some("thin.json"));
        assert_eq!(entry.header().mode().unwrap(), 0o644);
        assert_eq!(entry.header().mtime().unwrap(), 1_709_294_400);
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        assert_eq!(content, descriptor().to_json());
        drop(entry);
        assert!(entries.next().is_none(), "only thin.json");
    }

    #[test]
    fn config_keeps_what_a_runtime_needs_and_marks_the_image() {
        let image =
            ThinImage::build(&descriptor(), &source(SOURCE), ImageFormat::DockerV2).unwrap();
        let config: serde_json::Value = serde_json::from_slice(&image.config.bytes).unwrap();
        assert_eq!(config["architecture"], "arm64");
        assert_eq!(config["variant"], "v8");
        assert_eq!(config["created"], "2024-03-01T12:00:00.123456789Z");
        let runtime = &config["config"];
        assert_eq!(
            runtime["Env"],
            serde_json::json!(["PATH=/usr/bin:/bin", "LANG=C.UTF-8", "CVMFS_IMAGE=true"])
        );
        assert_eq!(runtime["Entrypoint"], serde_json::json!(["/entry.sh"]));
        assert_eq!(runtime["Cmd"], serde_json::json!(["bash", "-l"]));
        assert_eq!(runtime["User"], "1000:1000");
        assert_eq!(runtime["WorkingDir"], "/work");
        assert_eq!(runtime["StopSignal"], "SIGINT");
        assert_eq!(
            runtime["ExposedPorts"],
            serde_json::json!({"443/tcp": {}, "8080/tcp": {}})
        );
        assert_eq!(runtime["Volumes"], serde_json::json!({"/data": {}}));
        assert_eq!(
            runtime["Labels"],
            serde_json::json!({"a": "first", "z": "last"})
        );
        assert_eq!(
            config["rootfs"]["diff_ids"],
            serde_json::json!([image.diff_id.to_string()])
        );
        assert_eq!(config["history"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn existing_cvmfs_image_variable_is_not_doubled() {
        let src = source(
            r#"{"architecture":"amd64","os":"linux","config":{"Env":["CVMFS_IMAGE=true"]},"rootfs":{"type":"layers","diff_ids":[]}}"#,
        );
        let image = ThinImage::build(&descriptor(), &src, ImageFormat::DockerV2).unwrap();
        let config: serde_json::Value = serde_json::from_slice(&image.config.bytes).unwrap();
        assert_eq!(
            config["config"]["Env"],
            serde_json::json!(["CVMFS_IMAGE=true"])
        );
    }

    #[test]
    fn source_without_runtime_config_still_gets_the_marker() {
        let src = source(
            r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        );
        let image = ThinImage::build(&descriptor(), &src, ImageFormat::Oci).unwrap();
        let config: serde_json::Value = serde_json::from_slice(&image.config.bytes).unwrap();
        assert_eq!(
            config["config"]["Env"],
            serde_json::json!(["CVMFS_IMAGE=true"])
        );
        assert!(config.get("created").is_none());
    }

    #[test]
    fn same_source_gives_the_same_digest_and_labels_do_not_reorder() {
        let digests: Vec<ManifestDigest> = (0..5)
            .map(|_| {
                ThinImage::build(&descriptor(), &source(SOURCE), ImageFormat::DockerV2)
                    .unwrap()
                    .manifest
                    .digest
            })
            .collect();
        assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
    }

    #[test]
    fn different_layers_give_a_different_digest() {
        let one = ThinImage::build(&descriptor(), &source(SOURCE), ImageFormat::DockerV2).unwrap();
        let other = ThinDescriptor::new("https://r.io/a:1", vec![]);
        let two = ThinImage::build(&other, &source(SOURCE), ImageFormat::DockerV2).unwrap();
        assert_ne!(one.manifest.digest, two.manifest.digest);
    }

    #[test]
    fn manifest_references_config_and_layer_with_the_format_media_types() {
        for (format, manifest_type, layer_type) in [
            (
                ImageFormat::DockerV2,
                "application/vnd.docker.distribution.manifest.v2+json",
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
            ),
            (
                ImageFormat::Oci,
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.oci.image.layer.v1.tar+gzip",
            ),
        ] {
            let image = ThinImage::build(&descriptor(), &source(SOURCE), format).unwrap();
            let manifest: serde_json::Value =
                serde_json::from_slice(&image.manifest.bytes).unwrap();
            assert_eq!(manifest["schemaVersion"], 2);
            assert_eq!(manifest["mediaType"], manifest_type);
            assert_eq!(
                manifest["config"]["digest"],
                image.config.digest.to_string()
            );
            assert_eq!(manifest["config"]["size"], image.config.bytes.len());
            assert_eq!(manifest["layers"][0]["mediaType"], layer_type);
            assert_eq!(
                manifest["layers"][0]["digest"],
                image.layer.digest.to_string()
            );
            assert_eq!(
                image.manifest.digest,
                ManifestDigest::of(&image.manifest.bytes)
            );
        }
    }

    #[test]
    fn rfc3339_times_convert_to_unix_seconds() {
        assert_eq!(rfc3339_to_unix("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_to_unix("2024-03-01T12:00:00Z"), Some(1_709_294_400));
        assert_eq!(
            rfc3339_to_unix("2024-03-01T14:00:00.5+02:00"),
            Some(1_709_294_400)
        );
        assert_eq!(
            rfc3339_to_unix("2024-03-01T10:00:00-02:00"),
            Some(1_709_294_400)
        );
        assert_eq!(rfc3339_to_unix("2000-02-29T00:00:00Z"), Some(951_782_400));
        assert_eq!(rfc3339_to_unix("1969-12-31T23:59:59Z"), Some(0));
        assert_eq!(rfc3339_to_unix("yesterday"), None);
        assert_eq!(rfc3339_to_unix("2024-13-01T00:00:00Z"), None);
        assert_eq!(rfc3339_to_unix("2024-01-01T00:00:00"), None);
        assert_eq!(rfc3339_to_unix("2024-02-30T00:00:00Z"), None);
        // issue 12: a huge year overflowed the hand-written calendar's arithmetic.
        assert_eq!(rfc3339_to_unix("300000000000-11-06T08:49:37Z"), None);
        assert_eq!(rfc3339_to_unix("9999999999999999999-01-01T00:00:00Z"), None);
        assert_eq!(rfc3339_to_unix(""), None);
    }
}
