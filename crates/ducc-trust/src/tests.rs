//! The policy and verification rules, with signatures made here (a P-256 key from fixed
//! bytes) and signatures made by the real cosign.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature as EcdsaSignature, SigningKey};
use p256::pkcs8::{EncodePublicKey as _, LineEnding};

use crate::{DockerReference, Policy, PolicyError, Refusal, Signature, verify};

const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const OTHER_DIGEST: &str =
    "sha256:2222222222222222222222222222222222222222222222222222222222222222";
/// The repository the test signatures are made for, and the image checked.
const APP: &str = "reg.example/ns/app";
const IMAGE: &str = "reg.example/ns/app:v1";

struct Signer(SigningKey);

impl Signer {
    fn new(seed: u8) -> Signer {
        Signer(SigningKey::from_slice(&[seed; 32]).expect("a valid scalar"))
    }

    fn public_pem(&self) -> String {
        self.0
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("encodable")
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let signature: EcdsaSignature = self.0.sign(message);
        signature.to_der().as_bytes().to_vec()
    }

    fn payload(identity: &str, digest: &str) -> Vec<u8> {
        serde_json::json!({"critical": {"identity": {"docker-reference": identity},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature"}, "optional": null})
        .to_string()
        .into_bytes()
    }

    fn tag_signature(&self, identity: &str, digest: &str) -> Signature {
        let payload = Signer::payload(identity, digest);
        let signature = STANDARD.encode(self.sign(&payload));
        Signature::simple_signing("sha256-x.sig", payload, signature)
    }

    fn bundle_signature(&self, identity: &str, digest: &str) -> Signature {
        use sha2::Digest as _;
        let payload = Signer::payload(identity, digest);
        let bundle = serde_json::json!({
            "mediaType": crate::BUNDLE_MEDIA_TYPE,
            "verificationMaterial": {"publicKey": {"hint": ""}},
            "messageSignature": {
                "messageDigest": {"algorithm": "SHA2_256",
                    "digest": STANDARD.encode(sha2::Sha256::digest(&payload))},
                "signature": STANDARD.encode(self.sign(&payload)),
            }
        });
        Signature::bundle("referrer", bundle.to_string().into_bytes(), Some(payload))
    }

    fn dsse_signature(&self, subject: serde_json::Value) -> Signature {
        let statement = serde_json::json!({"_type": "https://in-toto.io/Statement/v1",
            "subject": [subject], "predicateType": "https://sigstore.dev/cosign/sign/v1", "predicate": {}})
        .to_string();
        let kind = "application/vnd.in-toto+json";
        let pae = format!(
            "DSSEv1 {} {kind} {} {statement}",
            kind.len(),
            statement.len()
        );
        let bundle = serde_json::json!({
            "mediaType": crate::BUNDLE_MEDIA_TYPE,
            "dsseEnvelope": {"payload": STANDARD.encode(&statement), "payloadType": kind,
                "signatures": [{"sig": STANDARD.encode(self.sign(pae.as_bytes()))}]}
        });
        Signature::bundle("referrer", bundle.to_string().into_bytes(), None)
    }
}

fn policy_with_key(pem: &str, identity: &str) -> Policy {
    let text = format!(
        r#"{{"default": [{{"type": "sigstoreSigned", "keyData": "{}", "signedIdentity": {identity}}}]}}"#,
        STANDARD.encode(pem)
    );
    Policy::parse(Path::new("/etc/ducc/policy.json"), &text).expect("valid policy")
}

fn check(
    policy: &Policy,
    image: &str,
    digest: &str,
    signatures: &[Signature],
) -> Result<(), Refusal> {
    let image = DockerReference::parse(image).expect("valid");
    verify(policy.scope_for(&image), &image, digest, signatures).map(|_| ())
}

fn reason(result: Result<(), Refusal>) -> &'static str {
    match result {
        Ok(()) => "accepted",
        Err(refusal) => refusal.reason(),
    }
}

/// The [`reason`] of checking `image` at `digest` with the one `signature`.
fn verdict(policy: &Policy, image: &str, digest: &str, signature: Signature) -> &'static str {
    reason(check(policy, image, digest, &[signature]))
}

#[test]
fn signatures_are_accepted_only_by_key_digest_and_identity() {
    let ours = Signer::new(7);
    let theirs = Signer::new(9);
    let policy = policy_with_key(&ours.public_pem(), r#"{"type": "matchRepository"}"#);
    let corrupt = Signature::simple_signing(
        "sha256-x.sig",
        Signer::payload(APP, DIGEST),
        "not base64!".to_owned(),
    );
    let truncated = {
        let payload = Signer::payload(APP, DIGEST);
        let mut der = ours.sign(&payload);
        der.truncate(10);
        Signature::simple_signing("sha256-x.sig", payload, STANDARD.encode(der))
    };
    let cases: &[(&str, Vec<Signature>, &str)] = &[
        (
            "tag signature by the key",
            vec![ours.tag_signature(APP, DIGEST)],
            "accepted",
        ),
        (
            "bundle message signature by the key",
            vec![ours.bundle_signature(APP, DIGEST)],
            "accepted",
        ),
        ("unsigned", vec![], "no signature"),
        (
            "signed by another key",
            vec![theirs.tag_signature(APP, DIGEST)],
            "not signed by these keys",
        ),
        (
            "bundle by another key",
            vec![theirs.bundle_signature(APP, DIGEST)],
            "not signed by these keys",
        ),
        (
            "signed for another digest",
            vec![ours.tag_signature(APP, OTHER_DIGEST)],
            "digest mismatch",
        ),
        (
            "signed for another repository",
            vec![ours.tag_signature("reg.example/ns/other", DIGEST)],
            "identity mismatch",
        ),
        ("corrupt signature", vec![corrupt], "unreadable signature"),
        (
            "truncated signature",
            vec![truncated],
            "unreadable signature",
        ),
        (
            "one good among bad",
            vec![
                theirs.tag_signature(APP, DIGEST),
                ours.tag_signature(APP, DIGEST),
            ],
            "accepted",
        ),
        (
            "closest failure is reported",
            vec![
                theirs.tag_signature(APP, DIGEST),
                ours.tag_signature(APP, OTHER_DIGEST),
            ],
            "digest mismatch",
        ),
    ];
    for (name, signatures, expected) in cases {
        assert_eq!(
            reason(check(&policy, IMAGE, DIGEST, signatures)),
            *expected,
            "{name}"
        );
    }
}

#[test]
fn altering_one_byte_of_a_signed_payload_breaks_it() {
    let ours = Signer::new(7);
    let policy = policy_with_key(&ours.public_pem(), r#"{"type": "matchRepository"}"#);
    let payload = Signer::payload(APP, DIGEST);
    let signature = STANDARD.encode(ours.sign(&payload));
    let mut altered = payload.clone();
    let last = altered.len() - 2;
    altered[last] ^= 1;
    let signature = Signature::simple_signing("sha256-x.sig", altered, signature);
    assert_eq!(
        verdict(&policy, IMAGE, DIGEST, signature),
        "not signed by these keys"
    );
}

#[test]
fn dsse_in_toto_bundles_need_a_subject_name_for_an_identity() {
    let ours = Signer::new(7);
    let policy = policy_with_key(&ours.public_pem(), r#"{"type": "matchRepository"}"#);
    let hex = &DIGEST["sha256:".len()..];
    let named = ours.dsse_signature(serde_json::json!({"name": APP, "digest": {"sha256": hex}}));
    let nameless = ours.dsse_signature(serde_json::json!({"digest": {"sha256": hex}}));
    assert_eq!(verdict(&policy, IMAGE, DIGEST, named), "accepted");
    assert_eq!(
        verdict(&policy, IMAGE, DIGEST, nameless),
        "identity mismatch"
    );
}

/// Made by the real cosign: containers/image's `signature/fixtures/dir-img-cosign-valid`
/// (see `testdata/README.md`).
#[test]
fn a_signature_made_by_cosign_verifies_and_one_altered_byte_does_not() {
    let pem = include_str!("../testdata/cosign.pub");
    let payload = include_bytes!("../testdata/cosign-valid.payload").to_vec();
    let signature = include_str!("../testdata/cosign-valid.sig").to_owned();
    let digest = "sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00";
    let image = "192.168.64.2:5000/cosign-signed-single-sample:latest";
    let policy = policy_with_key(pem, r#"{"type": "matchRepository"}"#);
    let real = Signature::simple_signing("fixture", payload.clone(), signature.clone());
    assert_eq!(verdict(&policy, image, digest, real), "accepted");

    let mut altered = payload.clone();
    altered[20] ^= 0x20;
    let altered = Signature::simple_signing("fixture", altered, signature.clone());
    assert_eq!(
        verdict(&policy, image, digest, altered),
        "not signed by these keys"
    );

    let mut der = STANDARD.decode(signature.trim()).expect("base64");
    let last = der.len() - 1;
    der[last] ^= 1;
    let altered = Signature::simple_signing("fixture", payload.clone(), STANDARD.encode(der));
    assert_ne!(verdict(&policy, image, digest, altered), "accepted");

    // The default identity rule wants the tag signed too; cosign signs the repository.
    let strict = policy_with_key(pem, r#"{"type": "matchRepoDigestOrExact"}"#);
    let real = Signature::simple_signing("fixture", payload, signature);
    assert_eq!(verdict(&strict, image, digest, real), "identity mismatch");
}

#[test]
fn the_most_specific_scope_wins() {
    let text = r#"{
        "default": [{"type": "reject"}],
        "transports": {
            "docker": {
                "reg.example/team": [{"type": "insecureAcceptAnything"}],
                "reg.example/team/secret": [{"type": "reject"}],
                "reg.example/team/app:pinned": [{"type": "reject"}],
                "*.hub.example": [{"type": "insecureAcceptAnything"}],
                "docker.io/library": [{"type": "insecureAcceptAnything"}]
            },
            "atomic": {"whatever": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/nope"}]}
        }
    }"#;
    let policy = Policy::parse(Path::new("policy.json"), text).expect("valid");
    let cases = [
        ("reg.example/team/app:v1", "reg.example/team", "accepted"),
        (
            "reg.example/team/sub/app:v1",
            "reg.example/team",
            "accepted",
        ),
        (
            "reg.example/team/app:pinned",
            "reg.example/team/app:pinned",
            "rejected",
        ),
        (
            "reg.example/team/secret:v1",
            "reg.example/team/secret",
            "rejected",
        ),
        ("reg.example/teamx/app:v1", "default", "rejected"),
        ("eu.hub.example/a/b:1", "*.hub.example", "accepted"),
        (
            "registry.hub.docker.com/library/ubuntu:24.04",
            "docker.io/library",
            "accepted",
        ),
    ];
    for (image, scope, expected) in cases {
        let reference = DockerReference::parse(image).expect("valid");
        assert_eq!(policy.scope_for(&reference).name(), scope, "{image}");
        assert_eq!(
            reason(check(&policy, image, DIGEST, &[])),
            expected,
            "{image}"
        );
    }
}

#[test]
fn unsupported_requirements_name_their_scope_and_requirement() {
    let cases = [
        (
            r#"{"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "k.gpg"}]}"#,
            "default",
            "signedBy",
        ),
        (
            r#"{"default": [{"type": "reject"}], "transports": {"docker": {"reg.example": [{"type": "sigstoreSigned", "fulcio": {}}]}}}"#,
            "docker \"reg.example\"",
            "sigstoreSigned.fulcio",
        ),
        (
            r#"{"default": [{"type": "sigstoreSigned", "keyData": "eA==", "rekorPublicKeyPath": "r.pub"}]}"#,
            "default",
            "sigstoreSigned.rekorPublicKeyPath",
        ),
        (
            r#"{"default": [{"type": "somethingNew"}]}"#,
            "default",
            "somethingNew",
        ),
        (
            r#"{"default": [{"type": "sigstoreSigned"}]}"#,
            "default",
            "sigstoreSigned",
        ),
    ];
    for (text, scope, requirement) in cases {
        match Policy::parse(Path::new("/etc/p.json"), text) {
            Err(PolicyError::Unsupported {
                scope: s,
                requirement: r,
                ..
            }) => {
                assert_eq!((s.as_str(), r.as_str()), (scope, requirement), "{text}");
            }
            other => panic!("{text}: {other:?}"),
        }
    }
    let err = Policy::parse(Path::new("/etc/p.json"), cases[0].0).expect_err("unsupported");
    assert!(
        err.to_string()
            .starts_with("/etc/p.json: scope default: requirement signedBy is not supported"),
        "{err}"
    );
}

#[test]
fn a_malformed_policy_names_file_line_and_column() {
    let text = "{\n  \"default\": [\n    {\"type\": \"reject\"},\n  ]\n}\n";
    let err = Policy::parse(Path::new("/etc/ducc/policy.json"), text).expect_err("trailing comma");
    assert!(
        matches!(
            err,
            PolicyError::Syntax {
                line: 4,
                column: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with("/etc/ducc/policy.json:4:3: "),
        "{err}"
    );
    let err = Policy::parse(Path::new("p.json"), "{\"defualt\": []}").expect_err("unknown field");
    assert!(err.to_string().starts_with("p.json:1:"), "{err}");
}

#[test]
fn key_files_are_read_relative_to_the_policy_and_change_the_fingerprint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("keys/site.pub");
    std::fs::create_dir_all(key.parent().expect("parent")).expect("mkdir");
    std::fs::write(&key, Signer::new(7).public_pem()).expect("write");
    let policy_path = dir.path().join("policy.json");
    let text = r#"{"default": [{"type": "sigstoreSigned", "keyPaths": ["keys/site.pub"]}]}"#;
    std::fs::write(&policy_path, text).expect("write");
    let first = Policy::load(&policy_path).expect("valid");
    std::fs::write(&key, Signer::new(8).public_pem()).expect("write");
    let second = Policy::load(&policy_path).expect("valid");
    assert_ne!(first.fingerprint(), second.fingerprint());
    std::fs::write(
        &key,
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )
    .expect("write");
    let err = Policy::load(&policy_path).expect_err("bad key");
    assert!(matches!(err, PolicyError::Invalid { .. }), "{err:?}");
}
