//! The signature policy (issue 25): an image is published only when its scope accepts it,
//! checked on the digest converted before any blob of it is downloaded.
//!
//! Which digest: the one the wish names. For a tag that names an index that is the index's
//! digest, as `cosign sign IMAGE:TAG` signs it; the platform manifest converted is listed in
//! that index by digest and checked against it when fetched, so the index signature covers it.
//! (A platform manifest's own signature, from `cosign sign --recursive`, is not looked for: the
//! index's is made by the same command.)
//!
//! An accepted image records in its marker directory which keys verified which digest under
//! which policy (`signature.json`); the "already converted" check compares that record with the
//! policy in use and checks again when they differ. Nothing is ever deleted for a refusal.

use ducc_cvmfs::{ImageSlot, RepoPath};
use ducc_oci::ImageRef;
use ducc_registry::oci_spec::image::Digest;
use ducc_registry::{ManifestSelection, Repository, StoredSignature};
use ducc_trust::{Acceptance, DockerReference, Policy, Signature};

use crate::error::{Context as _, ConvertError};
use crate::events::Event;
use crate::image::Job;
use crate::source::ImageSource;

type Result<T, E = ConvertError> = std::result::Result<T, E>;

/// What `signature.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct SignatureRecord {
    /// [`Policy::fingerprint`] of the policy that accepted it.
    policy: String,
    /// The image as the wish names it.
    image: String,
    #[serde(flatten)]
    acceptance: Acceptance,
}

impl SignatureRecord {
    pub(crate) fn to_json(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }
}

/// Checks `image` at `digest` in `repository` against `policy`: reads its signatures (only when
/// its scope needs them) and decides.
///
/// # Errors
/// A registry error reading the signatures, or the policy's refusal (kind
/// [`crate::ErrorKind::Signature`]).
pub fn check_signatures(
    source: &dyn ImageSource,
    policy: &Policy,
    image: &ImageRef,
    repository: &Repository,
    digest: &Digest,
) -> Result<Acceptance> {
    let identity = DockerReference::from(image);
    let scope = policy.scope_for(&identity);
    let signatures = if scope.needs_signatures() {
        source
            .fetch_signatures(repository, digest)
            .with_context(|| format!("cannot read the signatures of {image}"))?
            .into_iter()
            .map(to_signature)
            .collect()
    } else {
        Vec::new()
    };
    ducc_trust::verify(scope, &identity, digest.as_ref(), &signatures).map_err(|refusal| {
        ConvertError::from(refusal).context(format!(
            "{image} is refused by the signature policy {}",
            policy.path().display()
        ))
    })
}

/// `ducc verify`: resolves what `image` names (an index stays an index: its digest is what
/// conversion checks) and checks it.
///
/// # Errors
/// As [`check_signatures`], and the manifest's registry errors.
pub fn verify_image(
    source: &dyn ImageSource,
    policy: &Policy,
    image: &ImageRef,
) -> Result<Acceptance> {
    let fetched = crate::source::fetch_image_manifest(source, image, &ManifestSelection::Index)
        .with_context(|| format!("cannot fetch the manifest of {image}"))?;
    check_signatures(
        source,
        policy,
        image,
        &Repository::of(image),
        fetched.digest(),
    )
}

fn to_signature(stored: StoredSignature) -> Signature {
    match stored {
        StoredSignature::Tagged {
            source,
            payload,
            signature: Some(signature),
        } => Signature::simple_signing(source, payload, signature),
        StoredSignature::Tagged { source, .. } => Signature::unreadable(
            source,
            format!(
                "the layer has no {} annotation",
                ducc_trust::SIGNATURE_ANNOTATION
            ),
        ),
        StoredSignature::Bundle {
            source,
            bundle,
            payload,
        } => Signature::bundle(source, bundle, payload),
        StoredSignature::Malformed { source, detail } => Signature::unreadable(source, detail),
        other => Signature::unreadable("registry", format!("unknown signature form {other:?}")),
    }
}

impl Job<'_> {
    /// With a policy: `Ok(Some(record))` when signatures made the image acceptable, to be
    /// written with its marker; `Ok(None)` without a policy or when the scope accepts anything.
    pub(crate) fn check_signature(
        &self,
        input: &ImageRef,
        label: &str,
        repository: &Repository,
        digest: &Digest,
    ) -> Result<Option<SignatureRecord>> {
        let Some(policy) = &self.engine.settings.policy else {
            return Ok(None);
        };
        let acceptance = check_signatures(&*self.engine.source, policy, input, repository, digest)?;
        self.engine.events.event(&Event::SignatureVerified {
            image: label.to_owned(),
            digest: acceptance.digest.clone(),
            scope: acceptance.scope.clone(),
            keys: acceptance
                .verified
                .iter()
                .map(|v| v.key.to_string())
                .collect(),
        });
        if acceptance.verified.is_empty() {
            // Accepted without a signature (`insecureAcceptAnything`): nothing to record, and
            // `ducc list` must not show the image as signed.
            return Ok(None);
        }
        Ok(Some(SignatureRecord {
            policy: policy.fingerprint().to_owned(),
            image: input.whole_name(),
            acceptance,
        }))
    }

    /// Whether the image in `slot` was accepted for `digest` by the policy in use (so an
    /// up-to-date image need not be checked again).
    pub(crate) fn signature_recorded(&self, slot: &ImageSlot, digest: &Digest) -> bool {
        let Some(policy) = &self.engine.settings.policy else {
            return true;
        };
        let Ok(path) = record_path(self, slot) else {
            return false;
        };
        let Ok(bytes) = std::fs::read(self.engine.publisher.published_path(&path)) else {
            return false;
        };
        serde_json::from_slice::<SignatureRecord>(&bytes).is_ok_and(|record| {
            record.policy == policy.fingerprint() && record.acceptance.digest == digest.to_string()
        })
    }

    /// Writes `record` beside the marker of an image that was converted before (its own
    /// transaction: the image itself is not touched).
    pub(crate) fn write_signature_record(
        &self,
        slot: &ImageSlot,
        record: &SignatureRecord,
    ) -> Result<()> {
        let mut tx = self
            .engine
            .publisher
            .begin(&slot.marker_dir(&self.engine.layout))?;
        tx.write_file(&record_path(self, slot)?, &mut &record.to_json()[..])?;
        tx.commit()?;
        Ok(())
    }
}

/// `signature.json` in the image's marker directory.
pub(crate) fn record_path(job: &Job<'_>, slot: &ImageSlot) -> Result<RepoPath> {
    Ok(slot
        .marker_dir(&job.engine.layout)
        .join(ducc_cvmfs::lifecycle::SIGNATURE_FILE)?)
}
