//! Test images built from scratch and pushed with ducc-registry's own push code: small random
//! gzip layers, a config, and an OCI or Docker v2 schema 2 manifest; indexes over several of them
//! (with a BuildKit-style attestation entry when asked).
//!
//! ```no_run
//! use ducc_tests::images::{self, Format};
//! use ducc_tests::{Registry, unique_repo};
//!
//! let registry = Registry::anonymous();
//! let client = images::client_for(registry.host(), registry.credentials());
//! let repo = images::repository(registry.host(), &unique_repo("demo"));
//! let image = images::ImageSpec::new(Format::Oci).build();
//! let pushed = images::push_image(&client, &repo, "v1", &image);
//! assert!(pushed.manifest_digest.starts_with("sha256:"));
//! ```

use std::io::Write as _;

use ducc_oci::Scheme;
use ducc_registry::{Client, ClientOptions, Login, Reference, Repository, RetryPolicy};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::Credentials;
use crate::registry::random_hex;

/// Manifest flavour of a test image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OCI image manifest / OCI index.
    Oci,
    /// Docker v2 schema 2 manifest / Docker manifest list.
    Docker,
}

impl Format {
    /// Media type of an image manifest in this format.
    pub fn manifest_type(self) -> &'static str {
        match self {
            Format::Oci => "application/vnd.oci.image.manifest.v1+json",
            Format::Docker => "application/vnd.docker.distribution.manifest.v2+json",
        }
    }

    /// Media type of an index in this format.
    pub fn index_type(self) -> &'static str {
        match self {
            Format::Oci => "application/vnd.oci.image.index.v1+json",
            Format::Docker => "application/vnd.docker.distribution.manifest.list.v2+json",
        }
    }

    fn config_type(self) -> &'static str {
        match self {
            Format::Oci => "application/vnd.oci.image.config.v1+json",
            Format::Docker => "application/vnd.docker.container.image.v1+json",
        }
    }

    fn layer_type(self) -> &'static str {
        match self {
            Format::Oci => "application/vnd.oci.image.layer.v1.tar+gzip",
            Format::Docker => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        }
    }
}

/// A blob: its bytes and `sha256:` digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// Content.
    pub bytes: Vec<u8>,
    /// `sha256:<hex>` of the content.
    pub digest: String,
}

impl Blob {
    /// A blob of these bytes.
    pub fn new(bytes: Vec<u8>) -> Blob {
        let digest = sha256(&bytes);
        Blob { bytes, digest }
    }

    /// Its descriptor JSON with `media_type`.
    pub fn descriptor(&self, media_type: &str) -> serde_json::Value {
        json!({"mediaType": media_type, "digest": self.digest, "size": self.bytes.len()})
    }
}

/// What to build: format, platform, number and size of random layers.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    format: Format,
    os: String,
    architecture: String,
    variant: Option<String>,
    layers: usize,
    layer_file_size: usize,
}

/// A built (not yet pushed) image.
#[derive(Debug, Clone)]
pub struct TestImage {
    /// Format of the manifest.
    pub format: Format,
    /// Gzip-compressed tar layers, in order.
    pub layers: Vec<Blob>,
    /// Config blob.
    pub config: Blob,
    /// The manifest, as bytes.
    pub manifest: Blob,
    /// `os`, `architecture`, `variant` of the config.
    pub platform: (String, String, Option<String>),
}

impl ImageSpec {
    /// linux/amd64, two layers each holding one 4 KiB random file.
    pub fn new(format: Format) -> ImageSpec {
        ImageSpec {
            format,
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
            layers: 2,
            layer_file_size: 4096,
        }
    }

    /// Sets the platform.
    pub fn platform(mut self, os: &str, architecture: &str, variant: Option<&str>) -> ImageSpec {
        self.os = os.into();
        self.architecture = architecture.into();
        self.variant = variant.map(str::to_owned);
        self
    }

    /// Sets the number of layers.
    pub fn layers(mut self, count: usize) -> ImageSpec {
        self.layers = count;
        self
    }

    /// Sets the size of the random file in each layer (gzip cannot shrink random bytes, so the
    /// layer blob is a little larger than this).
    pub fn layer_file_size(mut self, bytes: usize) -> ImageSpec {
        self.layer_file_size = bytes;
        self
    }

    /// Builds layers, config and manifest; every call gives new random content.
    pub fn build(&self) -> TestImage {
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for index in 0..self.layers {
            let tar = random_tar(&format!("layer{index}/data.bin"), self.layer_file_size);
            diff_ids.push(sha256(&tar));
            layers.push(Blob::new(gzip(&tar)));
        }
        let mut config = json!({
            "architecture": self.architecture,
            "os": self.os,
            "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": (0..self.layers).map(|i| json!({"created_by": format!("test layer {i}")})).collect::<Vec<_>>(),
        });
        if let Some(variant) = &self.variant {
            config["variant"] = json!(variant);
        }
        let config = Blob::new(serde_json::to_vec(&config).unwrap());
        let mut manifest = json!({
            "schemaVersion": 2,
            "mediaType": self.format.manifest_type(),
            "config": config.descriptor(self.format.config_type()),
            "layers": layers.iter().map(|l| l.descriptor(self.format.layer_type())).collect::<Vec<_>>(),
        });
        if self.format == Format::Oci {
            manifest["annotations"] = json!({"org.example.test": random_hex(4)});
        }
        TestImage {
            format: self.format,
            layers,
            config,
            manifest: Blob::new(serde_json::to_vec_pretty(&manifest).unwrap()),
            platform: (
                self.os.clone(),
                self.architecture.clone(),
                self.variant.clone(),
            ),
        }
    }
}

/// An image as pushed: where, and its manifest's digest.
#[derive(Debug, Clone)]
pub struct PushedImage {
    /// The image.
    pub image: TestImage,
    /// `sha256:<hex>` of the manifest bytes.
    pub manifest_digest: String,
}

/// A client that logs in to `host` with `credentials` and retries quickly (tests must be fast).
pub fn client_for(host: &str, credentials: Option<&Credentials>) -> Client {
    client_with(host, credentials, quick_retries())
}

/// As [`client_for`], with this retry policy.
pub fn client_with(host: &str, credentials: Option<&Credentials>, retry: RetryPolicy) -> Client {
    let mut logins = ducc_registry::Credentials::anonymous();
    if let Some(credentials) = credentials {
        logins = logins.with_login(
            host,
            Login::new(&credentials.username, &credentials.password),
        );
    }
    Client::new(ClientOptions::new().credentials(logins).retry(retry))
}

/// Retries with millisecond backoff, so fault tests do not sleep for long.
pub fn quick_retries() -> RetryPolicy {
    RetryPolicy::new()
        .max_retries(4)
        .initial_backoff(std::time::Duration::from_millis(10))
        .max_backoff(std::time::Duration::from_millis(100))
}

/// The repository `path` on the plain-HTTP registry at `host`.
pub fn repository(host: &str, path: &str) -> Repository {
    Repository::new(Scheme::Http, host, path).unwrap()
}

/// A `Reference` for a tag.
pub fn tag(tag: &str) -> Reference {
    Reference::tag(tag).unwrap()
}

/// Pushes a blob with ducc-registry.
///
/// # Panics
/// When the push fails.
pub fn push_blob(client: &Client, repo: &Repository, blob: &Blob) {
    let digest = ducc_oci::BlobDigest::parse(&blob.digest).unwrap();
    client
        .push_blob(
            repo,
            &digest,
            blob.bytes.len() as u64,
            &mut blob.bytes.as_slice(),
        )
        .unwrap_or_else(|err| panic!("push blob {} to {}: {err}", blob.digest, repo.path()));
}

/// Fetches the config a manifest's config descriptor names.
///
/// # Panics
/// When the digest is not sha256 or the fetch fails.
pub fn fetch_config(
    client: &Client,
    repo: &Repository,
    descriptor: &ducc_registry::oci_spec::image::Descriptor,
) -> ducc_registry::FetchedConfig {
    let digest = ducc_oci::ConfigDigest::try_from(descriptor.digest()).unwrap();
    client
        .fetch_config(repo, &digest, descriptor.size())
        .unwrap_or_else(|err| panic!("fetch config {digest} from {}: {err}", repo.path()))
}

/// Pushes layers, config and manifest, tagging the manifest `tag`.
///
/// # Panics
/// When a push fails.
pub fn push_image(
    client: &Client,
    repo: &Repository,
    tag_name: &str,
    image: &TestImage,
) -> PushedImage {
    for layer in &image.layers {
        push_blob(client, repo, layer);
    }
    push_blob(client, repo, &image.config);
    let digest = push_manifest(
        client,
        repo,
        tag_name,
        image.format.manifest_type(),
        &image.manifest.bytes,
    );
    assert_eq!(
        digest, image.manifest.digest,
        "registry digest of the pushed manifest"
    );
    PushedImage {
        image: image.clone(),
        manifest_digest: digest,
    }
}

/// Pushes manifest bytes under `reference` (a tag, or a `sha256:` digest); returns the digest.
///
/// # Panics
/// When the push fails.
pub fn push_manifest(
    client: &Client,
    repo: &Repository,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) -> String {
    let reference = Reference::parse(reference).unwrap();
    client
        .push_manifest(repo, &reference, media_type, bytes)
        .unwrap_or_else(|err| panic!("push manifest to {}: {err}", repo.path()))
        .to_string()
}

/// Builds the index (or manifest list) over already pushed `children`; with
/// `attestation_for`, adds a BuildKit-style `unknown/unknown` attestation manifest (pushed by
/// digest) referring to that child.
pub fn build_index(
    format: Format,
    children: &[PushedImage],
    attestation_for: Option<&PushedImage>,
    client: &Client,
    repo: &Repository,
) -> Blob {
    let mut manifests: Vec<serde_json::Value> = children
        .iter()
        .map(|child| {
            let (os, architecture, variant) = &child.image.platform;
            let mut platform = json!({"architecture": architecture, "os": os});
            if let Some(variant) = variant {
                platform["variant"] = json!(variant);
            }
            let mut entry = child.image.manifest.descriptor(format.manifest_type());
            entry["platform"] = platform;
            entry
        })
        .collect();
    if let Some(subject) = attestation_for {
        let statement = Blob::new(
            serde_json::to_vec(&json!({"_type": "https://in-toto.io/Statement/v0.1", "subject": [{"digest": {"sha256": subject.manifest_digest.trim_start_matches("sha256:")}}]})).unwrap(),
        );
        let config = Blob::new(br#"{"architecture":"unknown","os":"unknown","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec());
        push_blob(client, repo, &statement);
        push_blob(client, repo, &config);
        let mut layer = statement.descriptor("application/vnd.in-toto+json");
        layer["annotations"] =
            json!({"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"});
        let attestation = Blob::new(
            serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config.descriptor("application/vnd.oci.image.config.v1+json"),
                "layers": [layer],
            }))
            .unwrap(),
        );
        push_manifest(
            client,
            repo,
            &attestation.digest,
            "application/vnd.oci.image.manifest.v1+json",
            &attestation.bytes,
        );
        let mut entry = attestation.descriptor("application/vnd.oci.image.manifest.v1+json");
        entry["platform"] = json!({"architecture": "unknown", "os": "unknown"});
        entry["annotations"] = json!({
            "vnd.docker.reference.digest": subject.manifest_digest,
            "vnd.docker.reference.type": "attestation-manifest",
        });
        manifests.push(entry);
    }
    Blob::new(
        serde_json::to_vec_pretty(&json!({
            "schemaVersion": 2,
            "mediaType": format.index_type(),
            "manifests": manifests,
        }))
        .unwrap(),
    )
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A tar holding one regular file of `size` random bytes at `path`.
pub fn random_tar(path: &str, size: usize) -> Vec<u8> {
    let content = random_bytes(size);
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut header, path, content.as_slice())
        .unwrap();
    builder.into_inner().unwrap()
}

/// `size` random bytes.
pub fn random_bytes(size: usize) -> Vec<u8> {
    hex::decode(random_hex(size)).unwrap()
}

/// `count` tiny images as a busy site's daily updates look (issue 29's bench set): each is a
/// shared base layer holding one small file plus a small layer of its own, in `format`.
/// Built anew (random content) on every call.
pub fn small_image_set(format: Format, count: usize) -> Vec<TestImage> {
    let base_tar = random_tar("etc/os-release", 64);
    let base = Blob::new(gzip(&base_tar));
    (0..count)
        .map(|index| {
            let own_tar = random_tar(&format!("opt/app{index}/data.bin"), 512);
            let own = Blob::new(gzip(&own_tar));
            let config = Blob::new(
                serde_json::to_vec(&json!({
                    "architecture": "amd64",
                    "os": "linux",
                    "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
                    "rootfs": {"type": "layers", "diff_ids": [sha256(&base_tar), sha256(&own_tar)]},
                }))
                .unwrap(),
            );
            let layers = vec![base.clone(), own];
            let manifest = json!({
                "schemaVersion": 2,
                "mediaType": format.manifest_type(),
                "config": config.descriptor(format.config_type()),
                "layers": layers.iter().map(|l| l.descriptor(format.layer_type())).collect::<Vec<_>>(),
            });
            TestImage {
                format,
                layers,
                config,
                manifest: Blob::new(serde_json::to_vec_pretty(&manifest).unwrap()),
                platform: ("linux".into(), "amd64".into(), None),
            }
        })
        .collect()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}
