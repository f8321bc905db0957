//! cosign's signature formats, read offline: the simple-signing payload with its detached
//! signature (the `.sig` tag's layers), and sigstore bundles v0.3 (referrers) holding a message
//! signature or a DSSE envelope. No certificate, Rekor or Fulcio material is looked at: keys
//! come from the policy.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use crate::key::PublicKey;
use crate::reference::DockerReference;

/// `critical.type` of a cosign image signature payload.
pub const COSIGN_PAYLOAD_TYPE: &str = "cosign container image signature";
/// Media type of the simple-signing payload (the `.sig` tag's layers, DSSE `payloadType`).
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The annotation of a `.sig` layer that holds the base64 signature of its payload.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// Media type (and `artifactType`) of a sigstore bundle v0.3.
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// The older spelling of [`BUNDLE_MEDIA_TYPE`].
pub const BUNDLE_MEDIA_TYPE_PARAM: &str = "application/vnd.dev.sigstore.bundle+json;version=0.3";
/// DSSE payload type of an in-toto statement.
const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The predicate cosign 3 signs images with in a bundle.
const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

/// What a verified signature says: which manifest digest, claimed as which identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claim {
    /// `sha256:<hex>` the signature covers.
    pub(crate) digest: String,
    /// The identity it claims; `None` when the format carries none (an in-toto statement
    /// whose subject has no name).
    pub(crate) identity: Option<DockerReference>,
}

/// One signature's check against the keys: which key verified it, and its claim.
#[derive(Debug)]
pub(crate) enum Checked {
    /// A key verified it; the claim is trustworthy.
    Verified { key: Box<PublicKey>, claim: Claim },
    /// No key verified it.
    NotByTheseKeys,
    /// It cannot be read (not base64, not JSON, not a cosign payload).
    Unreadable(String),
}

/// Checks a simple-signing payload and its base64 signature.
pub(crate) fn check_simple_signing(payload: &[u8], signature: &str, keys: &[PublicKey]) -> Checked {
    let Ok(signature) = STANDARD.decode(signature.trim()) else {
        return Checked::Unreadable("the signature annotation is not base64".to_owned());
    };
    match keys.iter().find(|k| k.verifies(payload, &signature)) {
        // Parsed only once verified: the payload is attacker-controlled before.
        Some(key) => match simple_signing_claim(payload) {
            Ok(claim) => Checked::Verified {
                key: Box::new(key.clone()),
                claim,
            },
            Err(detail) => Checked::Unreadable(detail),
        },
        None if signature_is_der(&signature) => Checked::NotByTheseKeys,
        None => Checked::Unreadable("the signature is not an ASN.1 DER ECDSA signature".to_owned()),
    }
}

/// Checks a sigstore bundle v0.3. A message signature signs `payload` (the simple-signing
/// payload stored beside the bundle); a DSSE envelope carries its payload.
pub(crate) fn check_bundle(bundle: &[u8], payload: Option<&[u8]>, keys: &[PublicKey]) -> Checked {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Bundle {
        media_type: String,
        message_signature: Option<MessageSignature>,
        dsse_envelope: Option<Envelope>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct MessageSignature {
        message_digest: Option<MessageDigest>,
        signature: String,
    }
    #[derive(Deserialize)]
    struct MessageDigest {
        algorithm: String,
        digest: String,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Envelope {
        payload: String,
        payload_type: String,
        signatures: Vec<EnvelopeSignature>,
    }
    #[derive(Deserialize)]
    struct EnvelopeSignature {
        sig: String,
    }

    let bundle: Bundle = match serde_json::from_slice(bundle) {
        Ok(bundle) => bundle,
        Err(e) => {
            return Checked::Unreadable(format!("the bundle is not sigstore bundle JSON: {e}"));
        }
    };
    if bundle.media_type != BUNDLE_MEDIA_TYPE && bundle.media_type != BUNDLE_MEDIA_TYPE_PARAM {
        return Checked::Unreadable(format!(
            "bundle media type {} is not v0.3",
            bundle.media_type
        ));
    }
    match (bundle.message_signature, bundle.dsse_envelope) {
        (Some(message), None) => {
            let Some(payload) = payload else {
                return Checked::Unreadable(
                    "the bundle's message signature has no simple-signing payload beside it"
                        .to_owned(),
                );
            };
            if let Some(digest) = message.message_digest {
                let hashed = <sha2::Sha256 as sha2::Digest>::digest(payload).to_vec();
                let declared = STANDARD.decode(digest.digest.trim()).unwrap_or_default();
                if digest.algorithm != "SHA2_256" || declared != hashed {
                    return Checked::Unreadable(
                        "the bundle's message digest is not the SHA2_256 of its payload".to_owned(),
                    );
                }
            }
            check_simple_signing(payload, &message.signature, keys)
        }
        (None, Some(envelope)) => {
            let Ok(body) = STANDARD.decode(envelope.payload.trim()) else {
                return Checked::Unreadable("the DSSE payload is not base64".to_owned());
            };
            let signed = pae(&envelope.payload_type, &body);
            let mut any_der = false;
            for signature in &envelope.signatures {
                let Ok(signature) = STANDARD.decode(signature.sig.trim()) else {
                    continue;
                };
                any_der |= signature_is_der(&signature);
                if let Some(key) = keys.iter().find(|k| k.verifies(&signed, &signature)) {
                    let claim = match envelope.payload_type.as_str() {
                        SIMPLE_SIGNING_MEDIA_TYPE => simple_signing_claim(&body),
                        IN_TOTO_PAYLOAD_TYPE => in_toto_claim(&body),
                        other => Err(format!(
                            "DSSE payload type {other} is not a cosign signature"
                        )),
                    };
                    return match claim {
                        Ok(claim) => Checked::Verified {
                            key: Box::new(key.clone()),
                            claim,
                        },
                        Err(detail) => Checked::Unreadable(detail),
                    };
                }
            }
            if any_der {
                Checked::NotByTheseKeys
            } else {
                Checked::Unreadable("the DSSE envelope holds no readable signature".to_owned())
            }
        }
        _ => Checked::Unreadable(
            "the bundle holds neither exactly one message signature nor one DSSE envelope"
                .to_owned(),
        ),
    }
}

/// DSSE's pre-authentication encoding: what an envelope's signatures sign.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

fn signature_is_der(signature: &[u8]) -> bool {
    p256::ecdsa::Signature::from_der(signature).is_ok()
}

/// The claim of a simple-signing payload (containers-signature(5), cosign's `critical` part).
fn simple_signing_claim(payload: &[u8]) -> Result<Claim, String> {
    #[derive(Deserialize)]
    struct Payload {
        critical: Critical,
    }
    #[derive(Deserialize)]
    struct Critical {
        identity: Identity,
        image: Image,
        #[serde(rename = "type")]
        kind: String,
    }
    #[derive(Deserialize)]
    struct Identity {
        #[serde(rename = "docker-reference")]
        docker_reference: String,
    }
    #[derive(Deserialize)]
    struct Image {
        #[serde(rename = "docker-manifest-digest")]
        docker_manifest_digest: String,
    }
    let payload: Payload = serde_json::from_slice(payload)
        .map_err(|e| format!("the payload is not a simple-signing payload: {e}"))?;
    if payload.critical.kind != COSIGN_PAYLOAD_TYPE {
        return Err(format!(
            "the payload's critical.type is {:?}, not {COSIGN_PAYLOAD_TYPE:?}",
            payload.critical.kind
        ));
    }
    let identity = DockerReference::parse(&payload.critical.identity.docker_reference)
        .map_err(|e| format!("the payload's identity: {e}"))?;
    Ok(Claim {
        digest: payload.critical.image.docker_manifest_digest,
        identity: Some(identity),
    })
}

/// The claim of cosign 3's in-toto statement (predicate `https://sigstore.dev/cosign/sign/v1`):
/// the subject's digest, and its name as identity when it has one.
fn in_toto_claim(statement: &[u8]) -> Result<Claim, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Statement {
        subject: Vec<Subject>,
        predicate_type: String,
    }
    #[derive(Deserialize)]
    struct Subject {
        #[serde(default)]
        name: Option<String>,
        digest: std::collections::BTreeMap<String, String>,
    }
    let statement: Statement = serde_json::from_slice(statement)
        .map_err(|e| format!("the DSSE payload is not an in-toto statement: {e}"))?;
    if statement.predicate_type != COSIGN_SIGN_PREDICATE {
        return Err(format!(
            "the statement's predicate {} is not a cosign image signature",
            statement.predicate_type
        ));
    }
    let [subject] = &statement.subject[..] else {
        return Err("the statement does not have exactly one subject".to_owned());
    };
    let hex = subject
        .digest
        .get("sha256")
        .ok_or("the statement's subject has no sha256 digest")?;
    let identity = match subject.name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => Some(
            DockerReference::parse(name).map_err(|e| format!("the statement's subject: {e}"))?,
        ),
        None => None,
    };
    Ok(Claim {
        digest: format!("sha256:{hex}"),
        identity,
    })
}
