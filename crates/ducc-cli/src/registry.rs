//! From the wish-list crate's image names to the registry client's, and the client itself, as
//! every command that talks to a registry sets it up.

use anyhow::Context;
use ducc_registry::{
    Client, ClientOptions, Credentials, Environment, ImageName, Reference, Repository, Scheme,
    parse_digest,
};
use ducc_wishlist::ImageRef;

/// The registry repository of `image`.
pub fn repository(image: &ImageRef) -> anyhow::Result<Repository> {
    let scheme = match image.scheme() {
        ducc_wishlist::Scheme::Https => Scheme::Https,
        ducc_wishlist::Scheme::Http => Scheme::Http,
    };
    Repository::new(scheme, image.registry(), image.repository())
        .with_context(|| format!("cannot use image {image}"))
}

/// The registry client's name for `image` (the digest wins over the tag for fetching).
pub fn image_name(image: &ImageRef) -> anyhow::Result<ImageName> {
    let digest = image.digest().map(parse_digest).transpose()?;
    let reference = match (image.tag(), digest) {
        (Some(tag), Some(digest)) => Reference::tag_and_digest(tag, digest)?,
        (None, Some(digest)) => Reference::digest(digest),
        (Some(tag), None) => Reference::tag(tag)?,
        // ImageRef guarantees a tag or a digest.
        (None, None) => anyhow::bail!("image {image} has neither a tag nor a digest"),
    };
    Ok(ImageName::new(repository(image)?, reference))
}

/// Credentials from `DUCC_AUTH_REGISTRIES` and docker's config.json, as every command reads them.
pub fn credentials(env: &Environment) -> anyhow::Result<Credentials> {
    Credentials::from_environment(env).context("cannot read registry credentials")
}

/// A client with `credentials` and the default timeouts and retries.
pub fn client(credentials: Credentials) -> Client {
    Client::new(ClientOptions::new().credentials(credentials))
}
