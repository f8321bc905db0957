//! Pushing a thin image with the registry client, and the push credentials.

use ducc_registry::{
    BlobPush, Client, Environment, ErrorKind, ImageName, Login, ManifestSelection, Reference,
    Repository, parse_digest,
};

use crate::error::ThinError;
use crate::image::{ThinBlob, ThinImage};

/// The environment variable holding the thin-image push password.
pub const PASSWORD_VAR: &str = "DUCC_OUTPUT_REGISTRY_PASS";
/// Older names of [`PASSWORD_VAR`], still read, with a deprecation warning.
pub const DEPRECATED_PASSWORD_VARS: [&str; 2] = [
    "DUCC_DOCKER_REGISTRY_PASS",
    "DOCKER2CVMFS_DOCKER_REGISTRY_PASS",
];

/// What [`push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// The tag already pointed at this very manifest: nothing was sent.
    AlreadyPresent,
    /// The manifest was pushed (blobs only where the registry lacked them).
    Pushed {
        /// Blobs uploaded (0 to 2).
        blobs_uploaded: u8,
    },
}

/// The login for pushing thin images as `user`: the password from `DUCC_OUTPUT_REGISTRY_PASS`
/// (or, with a warning, its older names). `None` when `user` is empty or no password is set, in
/// which case the client's other credentials (docker config.json) or anonymous access apply.
pub fn output_login(user: &str, env: &Environment) -> Option<Login> {
    if user.is_empty() {
        return None;
    }
    if let Some(password) = env.get(PASSWORD_VAR) {
        return Some(Login::new(user, password));
    }
    DEPRECATED_PASSWORD_VARS.iter().find_map(|var| {
        env.get(var).map(|password| {
            tracing::warn!("{var} is deprecated: set {PASSWORD_VAR} instead");
            Login::new(user, password)
        })
    })
}

/// Pushes `image` to `repository` under `tag`, unless the tag already names the same manifest.
///
/// Blobs the registry already has are not sent again (the client asks with `HEAD` first); the
/// manifest goes last, so a failed push never leaves the tag pointing at a half-pushed image.
///
/// # Errors
/// [`ThinError::Push`] with the registry's error for the step that failed, or
/// [`ThinError::DigestChanged`] when the registry stored other bytes than those built.
pub fn push(
    client: &Client,
    repository: &Repository,
    tag: &str,
    image: &ThinImage,
) -> Result<PushOutcome, ThinError> {
    let name = format!("{}/{}:{tag}", repository.registry(), repository.path());
    let reference = Reference::tag(tag).map_err(|source| ThinError::Name {
        image: name.clone(),
        source,
    })?;
    let fail = |step: &'static str| {
        let image = name.clone();
        move |source| ThinError::Push {
            image,
            step,
            source,
        }
    };

    let existing = client.fetch_manifest(
        &ImageName::new(repository.clone(), reference.clone()),
        &ManifestSelection::Index,
    );
    match existing {
        Ok(found) if found.digest().to_string() == image.manifest.digest => {
            tracing::debug!(image = %name, digest = %image.manifest.digest, "thin image already in the registry");
            return Ok(PushOutcome::AlreadyPresent);
        }
        Ok(_) => {}
        // Nothing there yet, or something we would replace anyway.
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::NotFound
                    | ErrorKind::UnsupportedMediaType { .. }
                    | ErrorKind::InvalidManifest { .. }
            ) => {}
        Err(e) => return Err(fail("existing manifest check")(e)),
    }

    let mut blobs_uploaded = 0;
    for (blob, step) in [(&image.layer, "layer"), (&image.config, "config")] {
        if push_blob(client, repository, blob).map_err(fail(step))? == BlobPush::Uploaded {
            blobs_uploaded += 1;
        }
    }
    let stored = client
        .push_manifest(
            repository,
            &reference,
            image.manifest.media_type,
            &image.manifest.bytes,
        )
        .map_err(fail("manifest"))?;
    if stored.to_string() != image.manifest.digest {
        return Err(ThinError::DigestChanged {
            image: name,
            built: image.manifest.digest.clone(),
            stored: stored.to_string(),
        });
    }
    tracing::info!(image = %name, digest = %image.manifest.digest, "thin image pushed");
    Ok(PushOutcome::Pushed { blobs_uploaded })
}

fn push_blob(
    client: &Client,
    repository: &Repository,
    blob: &ThinBlob,
) -> Result<BlobPush, ducc_registry::Error> {
    let digest = parse_digest(&blob.digest)?;
    client.push_blob(
        repository,
        &digest,
        blob.bytes.len() as u64,
        &mut &blob.bytes[..],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_comes_from_the_current_variable_first() {
        let env =
            Environment::from_vars([(PASSWORD_VAR, "new"), ("DUCC_DOCKER_REGISTRY_PASS", "old")]);
        let login = output_login("alice", &env).unwrap();
        assert_eq!((login.username(), login.password()), ("alice", "new"));
    }

    #[test]
    fn deprecated_variables_are_still_read_in_order() {
        let env = Environment::from_vars([
            ("DOCKER2CVMFS_DOCKER_REGISTRY_PASS", "oldest"),
            ("DUCC_DOCKER_REGISTRY_PASS", "old"),
        ]);
        assert_eq!(output_login("alice", &env).unwrap().password(), "old");
        let env = Environment::from_vars([("DOCKER2CVMFS_DOCKER_REGISTRY_PASS", "oldest")]);
        assert_eq!(output_login("alice", &env).unwrap().password(), "oldest");
    }

    #[test]
    fn no_user_or_no_password_means_no_login() {
        let env = Environment::from_vars([(PASSWORD_VAR, "pw")]);
        assert!(output_login("", &env).is_none());
        assert!(
            output_login(
                "alice",
                &Environment::from_vars(Vec::<(String, String)>::new())
            )
            .is_none()
        );
    }
}
