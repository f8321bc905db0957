//! A test signer that stores signatures as cosign does: the `sha256-<hex>.sig` tag (simple-signing
//! payload layers with the `dev.cosignproject.cosign/signature` annotation) and sigstore bundle
//! v0.3 referrers, attached through the referrers fallback tag `sha256-<hex>` (the test registry
//! has no referrers API). Keys are P-256 from fixed bytes (RustCrypto's `p256`, RFC 6979
//! signatures: no randomness needed).

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ducc_registry::{Client, Repository};
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey as _, LineEnding};
use sha2::Digest as _;

use crate::images::{Blob, push_blob, push_manifest};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// A signing key.
pub struct TestSigner {
    key: SigningKey,
}

/// What a signature claims and how it is broken, for the refusal tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// A good signature.
    None,
    /// The signature annotation is not base64.
    NotBase64,
    /// The payload was changed after signing.
    AlteredPayload,
}

impl TestSigner {
    /// The key made from `seed` (different seeds, different keys).
    pub fn new(seed: u8) -> TestSigner {
        TestSigner {
            key: SigningKey::from_slice(&[seed; 32]).unwrap(),
        }
    }

    /// The public key as PEM, as `cosign generate-key-pair` writes `cosign.pub`.
    pub fn public_pem(&self) -> String {
        self.key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap()
    }

    /// Writes the public key to `path`.
    pub fn write_public_key(&self, path: &Path) {
        std::fs::write(path, self.public_pem()).unwrap();
    }

    /// cosign's simple-signing payload for `digest` claimed as `identity`.
    pub fn payload(identity: &str, digest: &str) -> Vec<u8> {
        serde_json::json!({
            "critical": {
                "identity": {"docker-reference": identity},
                "image": {"docker-manifest-digest": digest},
                "type": "cosign container image signature"
            },
            "optional": null
        })
        .to_string()
        .into_bytes()
    }

    fn sign(&self, message: &[u8]) -> String {
        let signature: Signature = self.key.sign(message);
        STANDARD.encode(signature.to_der().as_bytes())
    }

    /// Pushes the `.sig` tag of `subject` (a manifest or index digest in `repo`) with one
    /// signature of `signed_digest` claimed as `identity`.
    pub fn push_tag_signature(
        &self,
        client: &Client,
        repo: &Repository,
        subject: &str,
        identity: &str,
        signed_digest: &str,
        damage: Damage,
    ) {
        let payload = TestSigner::payload(identity, signed_digest);
        let mut signature = self.sign(&payload);
        let mut stored = payload.clone();
        match damage {
            Damage::None => {}
            Damage::NotBase64 => signature = "this is no signature!".to_owned(),
            Damage::AlteredPayload => {
                let at = stored.len() - 3;
                stored[at] ^= 1;
            }
        }
        let payload = Blob::new(stored);
        let config = Blob::new(b"{}".to_vec());
        push_blob(client, repo, &payload);
        push_blob(client, repo, &config);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor("application/vnd.oci.image.config.v1+json"),
            "layers": [{
                "mediaType": SIMPLE_SIGNING,
                "digest": payload.digest,
                "size": payload.bytes.len(),
                "annotations": {"dev.cosignproject.cosign/signature": signature}
            }]
        });
        let tag = format!("{}.sig", subject.replacen(':', "-", 1));
        push_manifest(
            client,
            repo,
            &tag,
            OCI_MANIFEST,
            manifest.to_string().as_bytes(),
        );
    }

    /// Attaches a sigstore bundle v0.3 (a message signature over the simple-signing payload,
    /// which is stored beside it) to `subject` as a referrer, listed under the fallback tag.
    pub fn push_bundle_referrer(
        &self,
        client: &Client,
        repo: &Repository,
        subject: (&str, u64, &str),
        identity: &str,
        signed_digest: &str,
    ) {
        let (subject_digest, subject_size, subject_type) = subject;
        let payload = TestSigner::payload(identity, signed_digest);
        let bundle = serde_json::json!({
            "mediaType": BUNDLE,
            "verificationMaterial": {"publicKey": {"hint": "test"}},
            "messageSignature": {
                "messageDigest": {
                    "algorithm": "SHA2_256",
                    "digest": STANDARD.encode(sha2::Sha256::digest(&payload))
                },
                "signature": self.sign(&payload)
            }
        });
        let bundle = Blob::new(bundle.to_string().into_bytes());
        let payload = Blob::new(payload);
        let empty = Blob::new(b"{}".to_vec());
        for blob in [&bundle, &payload, &empty] {
            push_blob(client, repo, blob);
        }
        let artifact = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": BUNDLE,
            "config": empty.descriptor(EMPTY),
            "layers": [bundle.descriptor(BUNDLE), payload.descriptor(SIMPLE_SIGNING)],
            "subject": {"mediaType": subject_type, "digest": subject_digest, "size": subject_size}
        })
        .to_string();
        let artifact_digest = push_manifest(
            client,
            repo,
            &format!(
                "sha256:{}",
                hex::encode(sha2::Sha256::digest(artifact.as_bytes()))
            ),
            OCI_MANIFEST,
            artifact.as_bytes(),
        );
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{
                "mediaType": OCI_MANIFEST,
                "digest": artifact_digest,
                "size": artifact.len(),
                "artifactType": BUNDLE
            }]
        });
        let tag = subject_digest.replacen(':', "-", 1);
        push_manifest(client, repo, &tag, OCI_INDEX, index.to_string().as_bytes());
    }
}
