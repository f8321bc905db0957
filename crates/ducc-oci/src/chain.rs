//! The one printer of an error with its causes, for the whole workspace.
//!
//! It lives here because ducc-oci is the one crate every other ducc crate depends on and it
//! depends on none of them: the library crates (an unpacker that keeps a copy of an
//! `io::Error`, the conversion engine, the webhook service) and the CLI all print a chain the
//! same way without one of them having to import another for it.

use std::error::Error;

/// `error` and each of its [`source`](Error::source)s on one line, joined by `": "`:
/// `message: cause: cause`.
///
/// Each error in a chain says its own fact once (a cause goes in `source()` or in the message,
/// never both), so the line names every fact once.
///
/// ```
/// use std::io;
///
/// let disk = io::Error::other("no space left on device");
/// assert_eq!(
///     ducc_oci::error_chain(&Wrapped(disk)),
///     "cannot write layer: no space left on device"
/// );
///
/// #[derive(Debug)]
/// struct Wrapped(io::Error);
/// impl std::fmt::Display for Wrapped {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("cannot write layer")
///     }
/// }
/// impl std::error::Error for Wrapped {
///     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
///         Some(&self.0)
///     }
/// }
/// ```
pub fn error_chain(error: &dyn Error) -> String {
    error_causes(error).collect::<Vec<_>>().join(": ")
}

/// The messages of `error` and each of its [`source`](Error::source)s, outermost first: the
/// parts [`error_chain`] joins, for a log format that lists them (JSON lines).
pub fn error_causes<'a>(error: &'a (dyn Error + 'a)) -> impl Iterator<Item = String> + 'a {
    std::iter::successors(Some(error), |&e| e.source()).map(ToString::to_string)
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn an_error_without_a_source_prints_its_message_alone() {
        assert_eq!(error_chain(&Layer("alone", None)), "alone");
    }

    #[test]
    fn each_cause_follows_its_error_after_a_colon() {
        let chain = Layer(
            "convert failed",
            Some(Box::new(Layer(
                "cannot fetch blob",
                Some(Box::new(Layer("connection reset", None))),
            ))),
        );
        assert_eq!(
            error_chain(&chain),
            "convert failed: cannot fetch blob: connection reset"
        );
    }
}
