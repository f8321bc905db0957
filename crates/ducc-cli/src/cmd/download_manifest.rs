//! `ducc download-manifest`: the exact manifest bytes on stdout, digest and media type on stderr.

use anyhow::{Context, anyhow};
use ducc_oci::{ImageRef, Platform};
use ducc_registry::{Credentials, Environment, ManifestSelection};

use crate::args::{DownloadManifestArgs, GlobalArgs};
use crate::exit::Failure;
use crate::registry;

/// Runs `ducc download-manifest`.
pub fn run(_global: &GlobalArgs, args: DownloadManifestArgs) -> Result<(), Failure> {
    let image = ImageRef::parse(&args.image).map_err(|e| Failure::Usage(e.into()))?;
    if image.is_tag_glob() {
        return Err(Failure::Usage(anyhow!(
            "{}: download-manifest needs one image, not a tag glob",
            image.whole_name()
        )));
    }
    let platform: Platform = args
        .platform
        .parse()
        .map_err(|e: ducc_oci::PlatformError| {
            Failure::Usage(ducc_registry::Error::from(e).into())
        })?;
    let credentials = credentials_for(&image, args.username.as_deref()).map_err(Failure::Usage)?;
    let selection = if args.index {
        ManifestSelection::Index
    } else {
        ManifestSelection::Platform(platform)
    };
    let client = registry::client(credentials);
    let manifest = client
        .fetch_manifest(&image, &selection)
        .with_context(|| format!("cannot download the manifest of {}", image.whole_name()))
        .map_err(Failure::Run)?;
    write_stdout(manifest.bytes())?;
    eprintln!("digest: {}", manifest.digest());
    eprintln!("media type: {}", manifest.media_type());
    Ok(())
}

/// The credentials to use for the image (which must name one manifest: no tag glob): those of
/// every command, plus `-u USER` with the password from `DUCC_OUTPUT_REGISTRY_PASS` (or its older
/// names), else from a credential source that has the same user.
fn credentials_for(image: &ImageRef, username: Option<&str>) -> anyhow::Result<Credentials> {
    // A tag glob names no manifest: a usage error, before any request.
    ducc_registry::Reference::of(image)?;
    let env = Environment::from_process();
    let mut credentials = registry::credentials(&env)?;
    if let Some(user) = username {
        let login = match ducc_registry::output_login(user, &env) {
            Some(login) => login,
            None => credentials
                .login_for(image.registry())?
                .filter(|login| login.username() == user)
                .ok_or_else(|| {
                    anyhow!(
                        "no password for user {user:?} on {}: set DUCC_OUTPUT_REGISTRY_PASS \
                         or log in with docker",
                        image.registry()
                    )
                })?,
        };
        credentials = credentials.with_login(image.registry(), login);
    }
    Ok(credentials)
}

/// Writes the manifest bytes as they are; a closed pipe is not an error.
fn write_stdout(bytes: &[u8]) -> Result<(), Failure> {
    crate::exit::print_bytes(bytes)
}
