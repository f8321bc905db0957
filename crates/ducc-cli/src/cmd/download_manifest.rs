//! `ducc download-manifest`: the exact manifest bytes on stdout, digest and media type on stderr.

use std::io::Write;

use anyhow::{Context, anyhow};
use ducc_registry::{
    Client, ClientOptions, Credentials, Environment, ImageName, Login, ManifestSelection, Platform,
    Reference, Repository, Scheme, parse_digest,
};
use ducc_wishlist::ImageRef;

use crate::args::{DownloadManifestArgs, GlobalArgs};
use crate::exit::Failure;

/// Where the password for `-u USER` comes from, newest name first (as upstream).
const PASSWORD_VARIABLES: [&str; 3] = [
    "DUCC_OUTPUT_REGISTRY_PASS",
    "DUCC_DOCKER_REGISTRY_PASS",
    "DOCKER2CVMFS_DOCKER_REGISTRY_PASS",
];

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
        .map_err(|e: ducc_registry::Error| Failure::Usage(e.into()))?;
    let (name, credentials) =
        registry_inputs(&image, args.username.as_deref()).map_err(Failure::Usage)?;
    let selection = if args.index {
        ManifestSelection::Index
    } else {
        ManifestSelection::Platform(platform)
    };
    let client = Client::new(ClientOptions::new().credentials(credentials));
    let manifest = client
        .fetch_manifest(&name, &selection)
        .with_context(|| format!("cannot download the manifest of {}", image.whole_name()))
        .map_err(Failure::Run)?;
    write_stdout(manifest.bytes())?;
    eprintln!("digest: {}", manifest.digest());
    eprintln!("media type: {}", manifest.media_type());
    Ok(())
}

/// The registry client's view of the image, and the credentials to use for it.
fn registry_inputs(
    image: &ImageRef,
    username: Option<&str>,
) -> anyhow::Result<(ImageName, Credentials)> {
    let scheme = match image.scheme() {
        ducc_wishlist::Scheme::Https => Scheme::Https,
        ducc_wishlist::Scheme::Http => Scheme::Http,
    };
    let repository = Repository::new(scheme, image.registry(), image.repository())?;
    let reference = match (image.tag(), image.digest()) {
        (Some(tag), Some(digest)) => Reference::tag_and_digest(tag, parse_digest(digest)?)?,
        (None, Some(digest)) => Reference::digest(parse_digest(digest)?),
        (Some(tag), None) => Reference::tag(tag)?,
        (None, None) => Reference::tag("latest")?,
    };
    let env = Environment::from_process();
    let mut credentials = Credentials::from_environment(&env)?;
    if let Some(user) = username {
        let password = PASSWORD_VARIABLES
            .iter()
            .find_map(|var| env.get(var).filter(|v| !v.is_empty()).map(str::to_owned));
        let password = match password {
            Some(password) => password,
            None => credentials
                .login_for(image.registry())?
                .filter(|login| login.username() == user)
                .map(|login| login.password().to_owned())
                .ok_or_else(|| {
                    anyhow!(
                        "no password for user {user:?} on {}: set DUCC_OUTPUT_REGISTRY_PASS \
                         or log in with docker",
                        image.registry()
                    )
                })?,
        };
        credentials = credentials.with_login(image.registry(), Login::new(user, password));
    }
    Ok((ImageName::new(repository, reference), credentials))
}

/// Writes the manifest bytes as they are; a closed pipe is not an error.
fn write_stdout(bytes: &[u8]) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::Run(
            anyhow::Error::new(e).context("cannot write to stdout"),
        )),
    }
}
