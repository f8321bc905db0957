//! Manifests, indexes and configs as fetched: exact bytes, media type, digest, typed value.

use oci_spec::image::{Descriptor, Digest, ImageConfiguration, ImageIndex, ImageManifest};

use crate::error::{Error, ErrorKind};
use ducc_oci::{ConfigDigest, Platform};

/// The manifest media types this client accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ManifestMediaType {
    /// `application/vnd.oci.image.manifest.v1+json`
    OciManifest,
    /// `application/vnd.oci.image.index.v1+json`
    OciIndex,
    /// `application/vnd.docker.distribution.manifest.v2+json`
    DockerManifest,
    /// `application/vnd.docker.distribution.manifest.list.v2+json`
    DockerManifestList,
}

impl ManifestMediaType {
    /// All four, in the order they go into `Accept`.
    pub const ALL: [ManifestMediaType; 4] = [
        ManifestMediaType::OciIndex,
        ManifestMediaType::OciManifest,
        ManifestMediaType::DockerManifestList,
        ManifestMediaType::DockerManifest,
    ];

    /// The media type string.
    pub fn as_str(self) -> &'static str {
        match self {
            ManifestMediaType::OciManifest => "application/vnd.oci.image.manifest.v1+json",
            ManifestMediaType::OciIndex => "application/vnd.oci.image.index.v1+json",
            ManifestMediaType::DockerManifest => {
                "application/vnd.docker.distribution.manifest.v2+json"
            }
            ManifestMediaType::DockerManifestList => {
                "application/vnd.docker.distribution.manifest.list.v2+json"
            }
        }
    }

    /// The accepted media type with this name, if any (parameters after `;` are ignored).
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.split(';').next().unwrap_or("").trim();
        ManifestMediaType::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(name))
    }

    /// Whether this is an index (OCI index or Docker manifest list).
    pub fn is_index(self) -> bool {
        matches!(
            self,
            ManifestMediaType::OciIndex | ManifestMediaType::DockerManifestList
        )
    }
}

impl std::fmt::Display for ManifestMediaType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed manifest document.
// One value per fetch, never stored in bulk: boxing would only make matching clumsier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Manifest {
    /// One image: config and layers.
    Image(ImageManifest),
    /// An index (or Docker manifest list) of per-platform manifests.
    Index(ImageIndex),
}

/// Which manifest to return when the reference names an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestSelection {
    /// The manifest for this platform; an image manifest served directly is returned as is.
    Platform(Platform),
    /// Whatever the reference names, index or not, without choosing a platform.
    Index,
}

impl Default for ManifestSelection {
    fn default() -> Self {
        ManifestSelection::Platform(Platform::linux_amd64())
    }
}

/// A manifest as the registry served it, verified.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub(crate) bytes: Vec<u8>,
    pub(crate) media_type: ManifestMediaType,
    pub(crate) digest: Digest,
    pub(crate) manifest: Manifest,
    pub(crate) index_digest: Option<Digest>,
    pub(crate) platform: Option<Platform>,
}

impl FetchedManifest {
    /// A manifest document read from somewhere else than a registry (an image source in memory
    /// or on disk), checked as a fetched one is: parsed (its kind from its `mediaType` or
    /// shape), its digest the sha256 of `bytes`.
    ///
    /// # Errors
    /// As parsing a served manifest: [`ErrorKind::InvalidManifest`],
    /// [`ErrorKind::UnsupportedMediaType`], [`ErrorKind::AmbiguousManifest`].
    pub fn checked(bytes: Vec<u8>) -> Result<Self, Error> {
        let (media_type, manifest) = parse_manifest(&bytes, None)?;
        Ok(FetchedManifest {
            digest: crate::digest::sha256_digest(&bytes),
            bytes,
            media_type,
            manifest,
            index_digest: None,
            platform: None,
        })
    }

    /// This manifest as the entry for `platform` of the index whose digest is `index_digest`
    /// (what [`crate::Client::fetch_manifest`] returns for a platform chosen from an index).
    pub fn chosen_from(self, index_digest: Digest, platform: Platform) -> Self {
        FetchedManifest {
            index_digest: Some(index_digest),
            platform: Some(platform),
            ..self
        }
    }

    /// The exact bytes served (what the digest is computed over).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes, taken out.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The media type (from the document, checked against `Content-Type`).
    pub fn media_type(&self) -> ManifestMediaType {
        self.media_type
    }

    /// The digest of [`FetchedManifest::bytes`].
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The typed document.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The image manifest, when this is one (not an index).
    pub fn image_manifest(&self) -> Option<&ImageManifest> {
        match &self.manifest {
            Manifest::Image(m) => Some(m),
            Manifest::Index(_) => None,
        }
    }

    /// The index, when this is one.
    pub fn index(&self) -> Option<&ImageIndex> {
        match &self.manifest {
            Manifest::Index(i) => Some(i),
            Manifest::Image(_) => None,
        }
    }

    /// The digest of the index this manifest was chosen from, if it was.
    pub fn index_digest(&self) -> Option<&Digest> {
        self.index_digest.as_ref()
    }

    /// The platform entry this manifest was chosen by, if it was chosen from an index.
    pub fn platform(&self) -> Option<&Platform> {
        self.platform.as_ref()
    }
}

/// An image config blob, verified and parsed.
#[derive(Debug, Clone)]
pub struct FetchedConfig {
    pub(crate) bytes: Vec<u8>,
    pub(crate) digest: ConfigDigest,
    pub(crate) config: ImageConfiguration,
}

impl FetchedConfig {
    /// A config read from somewhere else than a registry (an image source in memory or on
    /// disk), checked as a fetched one is: `bytes` must hash to `digest` and parse as a config.
    ///
    /// # Errors
    /// [`ErrorKind::DigestMismatch`], [`ErrorKind::InvalidConfig`].
    pub fn checked(bytes: Vec<u8>, digest: ConfigDigest) -> Result<Self, Error> {
        let actual = ConfigDigest::of(&bytes);
        if actual != digest {
            return Err(Error::new(ErrorKind::DigestMismatch {
                expected: digest.to_string(),
                actual: actual.to_string(),
            }));
        }
        FetchedConfig::parse(bytes, digest)
    }

    /// A config whose bytes were verified against `digest` as they were read, parsed.
    pub(crate) fn parse(bytes: Vec<u8>, digest: ConfigDigest) -> Result<Self, Error> {
        let config: ImageConfiguration = serde_json::from_slice(&bytes)
            .map_err(|e| Error::new(ErrorKind::InvalidConfig).with_source(e))?;
        Ok(FetchedConfig {
            bytes,
            digest,
            config,
        })
    }

    /// The exact bytes served.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The config digest (the image ID).
    pub fn digest(&self) -> &ConfigDigest {
        &self.digest
    }

    /// The typed config (works for OCI and Docker configs).
    pub fn config(&self) -> &ImageConfiguration {
        &self.config
    }
}

/// The platforms an index offers, `unknown/unknown` attestation entries left out.
pub fn available_platforms(index: &ImageIndex) -> Vec<Platform> {
    index
        .manifests()
        .iter()
        .filter_map(|d| d.platform().as_ref().map(Platform::from_oci))
        .filter(|p| !p.is_unknown())
        .collect()
}

/// The index entry for a platform: the first whose normalised platform equals the wanted one,
/// skipping attestation entries (`unknown/unknown`) and entries without a platform.
///
/// # Errors
/// [`ErrorKind::PlatformNotFound`] listing the available platforms.
pub fn choose_platform<'a>(
    index: &'a ImageIndex,
    wanted: &Platform,
) -> Result<&'a Descriptor, Error> {
    index
        .manifests()
        .iter()
        .find(|d| {
            d.platform().as_ref().is_some_and(|p| {
                let p = Platform::from_oci(p);
                !p.is_unknown() && wanted.matches(&p)
            })
        })
        .ok_or_else(|| {
            Error::new(ErrorKind::PlatformNotFound {
                wanted: wanted.to_string(),
                available: available_platforms(index)
                    .iter()
                    .map(Platform::to_string)
                    .collect(),
            })
        })
}

/// Media types that are JSON but say nothing about the kind of document.
fn is_generic_content_type(ct: &str) -> bool {
    matches!(
        ct,
        "" | "application/json" | "text/plain" | "application/octet-stream"
    )
}

/// Identifies and parses a manifest document.
///
/// The kind comes from the document's `mediaType`, else the `Content-Type`; when both are
/// present they must agree, and a document with both `layers` and `manifests` is refused
/// (CVE-2021-41190: the same bytes must not mean an image to one client and an index to another).
pub(crate) fn parse_manifest(
    bytes: &[u8],
    content_type: Option<&str>,
) -> Result<(ManifestMediaType, Manifest), Error> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        schema_version: Option<u64>,
        media_type: Option<String>,
        layers: Option<serde::de::IgnoredAny>,
        manifests: Option<serde::de::IgnoredAny>,
        config: Option<serde::de::IgnoredAny>,
        fs_layers: Option<serde::de::IgnoredAny>,
    }
    let invalid = |detail: String| Error::new(ErrorKind::InvalidManifest { detail });
    let probe: Probe = serde_json::from_slice(bytes)
        .map_err(|e| invalid("not a JSON object".to_owned()).with_source(e))?;
    let content_type = content_type
        .map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|ct| !is_generic_content_type(ct));
    let declared = probe.media_type.as_deref().filter(|m| !m.is_empty());

    if probe.schema_version == Some(1) || probe.fs_layers.is_some() {
        let media_type = declared
            .map(str::to_owned)
            .or(content_type)
            .unwrap_or_else(|| "application/vnd.docker.distribution.manifest.v1+json".to_owned());
        return Err(Error::new(ErrorKind::UnsupportedMediaType { media_type }));
    }
    if probe.layers.is_some() && probe.manifests.is_some() {
        return Err(Error::new(ErrorKind::AmbiguousManifest));
    }
    let name = match (declared, content_type.as_deref()) {
        (Some(d), Some(ct)) if !d.eq_ignore_ascii_case(ct) => {
            return Err(invalid(format!(
                "Content-Type {ct:?} disagrees with mediaType {d:?}"
            )));
        }
        (Some(d), _) => d.to_owned(),
        (None, Some(ct)) => ct.to_owned(),
        (None, None) if probe.manifests.is_some() => {
            ManifestMediaType::OciIndex.as_str().to_owned()
        }
        (None, None) if probe.config.is_some() => {
            ManifestMediaType::OciManifest.as_str().to_owned()
        }
        (None, None) => {
            return Err(invalid(
                "no mediaType, Content-Type or recognisable shape".to_owned(),
            ));
        }
    };
    let media_type = ManifestMediaType::from_name(&name).ok_or_else(|| {
        Error::new(ErrorKind::UnsupportedMediaType {
            media_type: name.clone(),
        })
    })?;
    if media_type.is_index() {
        if probe.layers.is_some() || probe.config.is_some() {
            return Err(invalid(format!(
                "{media_type} document has `layers` or `config`"
            )));
        }
        let index: ImageIndex = serde_json::from_slice(bytes)
            .map_err(|e| invalid(format!("cannot parse as {media_type}")).with_source(e))?;
        Ok((media_type, Manifest::Index(index)))
    } else {
        if probe.manifests.is_some() {
            return Err(invalid(format!("{media_type} document has `manifests`")));
        }
        let manifest: ImageManifest = serde_json::from_slice(bytes)
            .map_err(|e| invalid(format!("cannot parse as {media_type}")).with_source(e))?;
        Ok((media_type, Manifest::Image(manifest)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#""config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}"#;

    fn manifest_doc(media_type: Option<&str>) -> String {
        let media_type = media_type.map_or(String::new(), |m| format!(r#""mediaType":"{m}","#));
        format!(r#"{{"schemaVersion":2,{media_type}{CONFIG},"layers":[]}}"#)
    }

    fn index_doc(media_type: Option<&str>) -> String {
        let media_type = media_type.map_or(String::new(), |m| format!(r#""mediaType":"{m}","#));
        format!(r#"{{"schemaVersion":2,{media_type}"manifests":[]}}"#)
    }

    /// `Ok(media type)` or `Err(error kind name)`.
    fn outcome(
        doc: impl AsRef<str>,
        content_type: Option<&str>,
    ) -> Result<ManifestMediaType, String> {
        parse_manifest(doc.as_ref().as_bytes(), content_type)
            .map(|(m, _)| m)
            .map_err(|e| {
                format!("{:?}", e.kind())
                    .split([' ', '{', '('])
                    .next()
                    .unwrap_or("")
                    .to_owned()
            })
    }

    macro_rules! parse_table {
        ($($name:ident: $doc:expr, $ct:expr => $expected:expr;)*) => {$(
            #[test]
            fn $name() {
                assert_eq!(outcome($doc, $ct), $expected);
            }
        )*};
    }

    const OCI_M: &str = "application/vnd.oci.image.manifest.v1+json";
    const OCI_I: &str = "application/vnd.oci.image.index.v1+json";
    const DOCKER_L: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

    parse_table! {
        oci_manifest_with_matching_content_type: manifest_doc(Some(OCI_M)), Some(OCI_M) => Ok(ManifestMediaType::OciManifest);
        oci_manifest_type_from_content_type_only: manifest_doc(None), Some(OCI_M) => Ok(ManifestMediaType::OciManifest);
        content_type_parameters_are_ignored: manifest_doc(Some(OCI_M)), Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8") => Ok(ManifestMediaType::OciManifest);
        generic_content_type_defers_to_the_document: index_doc(Some(DOCKER_L)), Some("application/json") => Ok(ManifestMediaType::DockerManifestList);
        shape_decides_when_nothing_is_declared: index_doc(None), None => Ok(ManifestMediaType::OciIndex);
        manifest_shape_without_declaration: manifest_doc(None), None => Ok(ManifestMediaType::OciManifest);
        index_declared_as_manifest_is_refused: index_doc(Some(OCI_M)), None => Err("InvalidManifest".to_owned());
        manifest_declared_as_index_is_refused: manifest_doc(Some(OCI_I)), None => Err("InvalidManifest".to_owned());
        content_type_disagreeing_is_refused: manifest_doc(Some(OCI_M)), Some(OCI_I) => Err("InvalidManifest".to_owned());
        artifact_manifest_is_unsupported: manifest_doc(Some("application/vnd.oci.artifact.manifest.v1+json")), None => Err("UnsupportedMediaType".to_owned());
        schema1_by_version_is_unsupported: r#"{"schemaVersion":1,"name":"x"}"#, Some("application/json") => Err("UnsupportedMediaType".to_owned());
        both_layers_and_manifests_is_ambiguous: format!(r#"{{"schemaVersion":2,{CONFIG},"layers":[],"manifests":[]}}"#), Some(OCI_I) => Err("AmbiguousManifest".to_owned());
        not_json_is_invalid: "<html>", Some(OCI_M) => Err("InvalidManifest".to_owned());
        nothing_recognisable_is_invalid: r#"{"schemaVersion":2}"#, None => Err("InvalidManifest".to_owned());
    }

    #[test]
    fn schema1_error_names_the_served_media_type() {
        let err = parse_manifest(
            br#"{"schemaVersion":1}"#,
            Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported media type \"application/vnd.docker.distribution.manifest.v1+prettyjws\""
        );
    }
}
