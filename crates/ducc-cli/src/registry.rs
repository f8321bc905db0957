//! The registry client and its credentials, as every command that talks to a registry sets them
//! up.

use anyhow::Context;
use ducc_registry::{Client, ClientOptions, Credentials, Environment};

/// Credentials from `DUCC_AUTH_REGISTRIES` and docker's config.json, as every command reads them.
pub fn credentials(env: &Environment) -> anyhow::Result<Credentials> {
    Credentials::from_environment(env).context("cannot read registry credentials")
}

/// A client with `credentials` and the default timeouts and retries.
pub fn client(credentials: Credentials) -> Client {
    Client::new(ClientOptions::new().credentials(credentials))
}
