//! The boundary a panic does not cross: a panic while converting one image (on the image's own
//! thread or on one of its layer or flat-tree workers) is a bug, and it fails that image with an
//! error saying so; the run goes on with the next image (issue 12).

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::error::{ConvertError, ErrorKind};

/// Runs `work`, turning a panic into `internal error (bug): {what} panicked: MESSAGE`.
///
/// Unwind safety: what `work` leaves half done belongs to the failed image; shared state is
/// behind locks whose users recover from poisoning, and transactions abort when dropped.
pub(crate) fn catch_bug<T>(what: &str, work: impl FnOnce() -> T) -> Result<T, ConvertError> {
    catch_unwind(AssertUnwindSafe(work)).map_err(|payload| panicked(what, payload.as_ref()))
}

/// The error for a panic whose payload a join handle or `catch_unwind` returned.
pub(crate) fn panicked(what: &str, payload: &(dyn Any + Send)) -> ConvertError {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned());
    ConvertError::new(
        ErrorKind::Bug,
        format!("internal error (bug): {what} panicked: {message}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_that_says_it_is_a_bug() {
        let err = catch_bug("layer worker", || -> u32 { panic!("index out of range") })
            .expect_err("the panic is caught");
        assert_eq!(
            err.to_string(),
            "internal error (bug): layer worker panicked: index out of range"
        );
        let err = catch_bug("flat tree thread", || -> u32 { panic!("{} of {}", 3, 2) })
            .expect_err("the panic is caught");
        assert_eq!(
            err.to_string(),
            "internal error (bug): flat tree thread panicked: 3 of 2"
        );
    }

    #[test]
    fn work_that_does_not_panic_returns_its_value() {
        assert_eq!(catch_bug("worker", || 7).unwrap(), 7);
    }
}
