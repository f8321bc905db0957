//! Reading cosign's signature places: the `.sig` tag, the referrers API and its fallback tag.

use super::server::{Answer, TestServer};
use super::{OCI_INDEX, OCI_MANIFEST, client, manifest_answer, repo};
use crate::digest::sha256_digest;
use crate::*;
use oci_spec::image::Digest;

const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

fn descriptor(media_type: &str, bytes: &[u8], extra: &str) -> String {
    format!(
        r#"{{"mediaType":"{media_type}","digest":"{}","size":{}{extra}}}"#,
        sha256_digest(bytes),
        bytes.len()
    )
}

/// What a registry holds for one signed image: the documents by path suffix and the blobs.
struct Signed {
    subject: Digest,
    documents: Vec<(String, String, &'static str)>,
    blobs: Vec<Vec<u8>>,
}

fn signed_image(referrers_api: bool, payload_len: usize, oversized_payload: bool) -> Signed {
    let subject = sha256_digest(b"the image manifest");
    let mut payload = b"{\"critical\":{}}".to_vec();
    payload.resize(payload_len.max(payload.len()), b' ');
    let bundle = b"{\"mediaType\":\"application/vnd.dev.sigstore.bundle.v0.3+json\"}".to_vec();
    let config = b"{}".to_vec();
    let size_note = if oversized_payload {
        // Announced far above the manifest limit: must not be asked for.
        payload.len() + (64 << 20)
    } else {
        payload.len()
    };
    let sig_manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{},"layers":[{{"mediaType":"{SIMPLE_SIGNING}","digest":"{}","size":{size_note},"annotations":{{"dev.cosignproject.cosign/signature":"c2ln"}}}}]}}"#,
        descriptor("application/vnd.oci.image.config.v1+json", &config, ""),
        sha256_digest(&payload),
    );
    let subject_descriptor =
        format!(r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":18}}"#);
    let referrer = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"{BUNDLE}","config":{},"layers":[{}],"subject":{subject_descriptor}}}"#,
        descriptor("application/vnd.oci.empty.v1+json", &config, ""),
        descriptor(BUNDLE, &bundle, ""),
    );
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#,
        descriptor(
            OCI_MANIFEST,
            referrer.as_bytes(),
            &format!(r#","artifactType":"{BUNDLE}""#)
        ),
    );
    let hex = subject.to_string().replacen(':', "-", 1);
    let index_path = if referrers_api {
        format!("referrers/{subject}")
    } else {
        format!("manifests/{hex}")
    };
    Signed {
        subject,
        documents: vec![
            (format!("manifests/{hex}.sig"), sig_manifest, OCI_MANIFEST),
            (index_path, index, OCI_INDEX),
            (
                format!("manifests/{}", sha256_digest(referrer.as_bytes())),
                referrer,
                OCI_MANIFEST,
            ),
        ],
        blobs: vec![payload, bundle, config],
    }
}

fn serve(signed: &Signed) -> TestServer {
    let documents = signed.documents.clone();
    let blobs = signed.blobs.clone();
    TestServer::start(move |req, _| {
        if let Some((_, body, media_type)) = documents
            .iter()
            .find(|(p, _, _)| req.path().ends_with(p.as_str()))
        {
            return manifest_answer(body, media_type);
        }
        blobs
            .iter()
            .find(|b| req.path().ends_with(&format!("blobs/{}", sha256_digest(b))))
            .map_or(Answer::new(404), |b| Answer::new(200).body(b.clone()))
    })
}

#[test]
fn signatures_come_from_the_sig_tag_and_the_referrers_api() {
    let signed = signed_image(true, 0, false);
    let server = serve(&signed);
    let found = client()
        .fetch_signatures(&repo(&server, "ns/app"), &signed.subject)
        .expect("signatures");
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        matches!(&found[0], StoredSignature::Tagged { payload, signature: Some(s), .. }
        if payload == &signed.blobs[0] && s == "c2ln")
    );
    assert!(
        matches!(&found[1], StoredSignature::Bundle { bundle, payload: None, .. } if bundle == &signed.blobs[1])
    );
}

#[test]
fn without_a_referrers_api_the_fallback_tag_is_read() {
    let signed = signed_image(false, 0, false);
    let server = serve(&signed);
    let found = client()
        .fetch_signatures(&repo(&server, "ns/app"), &signed.subject)
        .expect("signatures");
    assert!(
        matches!(
            &found[..],
            [
                StoredSignature::Tagged { .. },
                StoredSignature::Bundle { .. }
            ]
        ),
        "{found:?}"
    );
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.path().contains("/referrers/"))
    );
}

#[test]
fn an_unsigned_image_has_no_signatures() {
    let server = TestServer::start(|_, _| Answer::new(404));
    let found = client()
        .fetch_signatures(&repo(&server, "ns/app"), &sha256_digest(b"x"))
        .expect("no signatures is no error");
    assert!(found.is_empty());
}

#[test]
fn an_oversized_signature_blob_is_refused_before_it_is_fetched() {
    let signed = signed_image(true, 0, true);
    let server = serve(&signed);
    let err = client()
        .fetch_signatures(&repo(&server, "ns/app"), &signed.subject)
        .expect_err("too large");
    assert!(
        matches!(
            err.kind(),
            ErrorKind::TooLarge {
                what: "signature blobs of one digest",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        !server
            .requests()
            .iter()
            .any(|r| r.path().contains("/blobs/"))
    );
}

#[test]
fn the_signatures_of_one_digest_share_one_size_limit() {
    // Each blob fits the limit; the payload and the bundle together do not.
    let signed = signed_image(true, 3000, false);
    let server = serve(&signed);
    let client = Client::new(ClientOptions::new().max_manifest_bytes(3040));
    let err = client
        .fetch_signatures(&repo(&server, "ns/app"), &signed.subject)
        .expect_err("over the budget");
    assert!(
        matches!(
            err.kind(),
            ErrorKind::TooLarge {
                what: "signature blobs of one digest",
                ..
            }
        ),
        "{err:?}"
    );
}
