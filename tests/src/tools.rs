//! Finding the external programs the tests drive, with a clear message when one is missing;
//! throwaway certificates made by `openssl`; running a command on a pseudo-terminal.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Full path of `program` on `PATH` (or the path itself when it contains a `/`).
///
/// # Panics
/// When the program is not installed: the message names the Debian package that provides it,
/// so a missing tool fails the test loudly instead of letting it pass without running.
pub fn require_tool(program: &str, debian_package: &str) -> PathBuf {
    find_tool(program).unwrap_or_else(|| {
        panic!(
            "`{program}` is not installed but this test needs it: install it with \
             `apt-get install {debian_package}` (CI does)"
        )
    })
}

/// Full path of `program` on `PATH`, if installed.
pub fn find_tool(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Path::new(program).is_file().then(|| PathBuf::from(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// A single-quoted word for `sh`.
fn sh_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Runs `command` on a pseudo-terminal (util-linux `script`) with `TERM=term`, sized to `size`
/// (columns, rows) first when given; gives its exit code and everything it wrote there (stdout
/// and stderr together, as a terminal shows them).
///
/// # Panics
/// When `script` is not installed or cannot be run, or the command is not UTF-8.
pub fn run_on_terminal(
    command: &Command,
    term: &str,
    size: Option<(u16, u16)>,
) -> (Option<i32>, String) {
    let script_tool = require_tool("script", "bsdutils");
    let mut line = match size {
        Some((cols, rows)) => format!("stty cols {cols} rows {rows}; exec"),
        None => String::from("exec"),
    };
    let program = command.get_program().to_str().expect("a UTF-8 program");
    for word in std::iter::once(program).chain(
        command
            .get_args()
            .map(|arg| arg.to_str().expect("UTF-8 arguments")),
    ) {
        line.push(' ');
        line.push_str(&sh_quote(word));
    }
    let mut script = Command::new(script_tool);
    script.args(["-qefc", &line, "/dev/null"]);
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => script.env(key, value),
            None => script.env_remove(key),
        };
    }
    let out = script
        .env("TERM", term)
        .stdin(Stdio::null())
        .output()
        .expect("run script");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

/// Writes a throwaway self-signed certificate (`cert`, valid two days) and its unencrypted key
/// (`key`) with `openssl req -x509 -newkey NEWKEY… EXTRA…`: `newkey` says the key type (`rsa:2048`,
/// or `ec -pkeyopt …`), `extra` the subject (`-subj`) or a configuration (`-config`).
///
/// # Panics
/// When `openssl` is missing or fails; the message names `what` the certificate is for.
pub fn openssl_self_signed(what: &str, newkey: &[&str], extra: &[&OsStr], cert: &Path, key: &Path) {
    let status = Command::new(require_tool("openssl", "openssl"))
        .args(["req", "-x509", "-newkey"])
        .args(newkey)
        .args(["-nodes", "-days", "2"])
        .args(extra)
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl req");
    assert!(status.success(), "openssl could not make {what}: {status}");
}
