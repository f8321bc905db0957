//! `skopeo`, run as an independent oracle for what a registry stores.

use std::process::Command;

use crate::Credentials;
use crate::tools::require_tool;

/// The exact bytes `skopeo inspect --raw` gets for `host/reference` (a `repo:tag` or `repo@digest`).
///
/// `credentials` are passed with `--creds`; without them `--no-creds` makes skopeo ignore any
/// stored login.
///
/// # Panics
/// When skopeo is missing or fails; the message carries its stderr.
pub fn inspect_raw(host: &str, reference: &str, credentials: Option<&Credentials>) -> Vec<u8> {
    let output = inspect_raw_command(host, reference, credentials)
        .output()
        .expect("run skopeo inspect --raw");
    assert!(
        output.status.success(),
        "skopeo inspect --raw docker://{host}/{reference} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// The `skopeo inspect --raw` command for `host/reference`, for tests that expect it to fail.
pub fn inspect_raw_command(
    host: &str,
    reference: &str,
    credentials: Option<&Credentials>,
) -> Command {
    let skopeo = require_tool("skopeo", "skopeo");
    let mut command = Command::new(skopeo);
    command.args(["inspect", "--raw", "--tls-verify=false"]);
    match credentials {
        Some(credentials) => {
            command
                .arg("--creds")
                .arg(format!("{}:{}", credentials.username, credentials.password));
        }
        None => {
            command.arg("--no-creds");
        }
    }
    command.arg(format!("docker://{host}/{reference}"));
    command
}
