//! Exit statuses and the one place where an error becomes a message on stderr.

use std::process::ExitCode;

/// The run finished but some images failed.
pub const IMAGES_FAILED: u8 = 1;
/// Usage, wish-list or setup error.
pub const USAGE: u8 = 2;

/// Why a command did not succeed, and so which exit status it ends with.
#[derive(Debug)]
pub enum Failure {
    /// Bad flags, a bad wish list or image name, or a setup problem (exit 2).
    Usage(anyhow::Error),
    /// The run went through but some work failed (exit 1).
    Run(anyhow::Error),
    /// Already reported on stderr in the command's own format; only the status is left.
    Reported(u8),
}

impl Failure {
    /// The error's message with its causes (empty for one already reported).
    pub fn message(&self) -> String {
        match self {
            Failure::Usage(err) | Failure::Run(err) => format!("{err:#}"),
            Failure::Reported(_) => String::new(),
        }
    }

    /// Prints the error once, with its causes, and gives the exit code.
    pub fn report(self) -> ExitCode {
        let (err, code) = match self {
            Failure::Usage(err) => (err, USAGE),
            Failure::Run(err) => (err, IMAGES_FAILED),
            Failure::Reported(code) => return ExitCode::from(code),
        };
        crate::logging::notice(tracing::Level::ERROR, &format!("ducc: {err:#}"));
        ExitCode::from(code)
    }
}

/// Writes to stdout, treating a closed pipe (`ducc ... | head`) as success rather than an error.
pub fn print_stdout(text: &str) -> Result<(), Failure> {
    print_bytes(text.as_bytes())
}

/// Writes bytes to stdout as they are; a closed pipe is not an error.
pub fn print_bytes(bytes: &[u8]) -> Result<(), Failure> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::Run(
            anyhow::Error::new(e).context("cannot write to stdout"),
        )),
    }
}
