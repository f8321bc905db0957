//! CernVM-FS repository names: what a wish list's `cvmfs_repo` and the CLI's `--repo` say.

use std::fmt;
use std::str::FromStr;

/// What is wrong with a repository name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RepositoryNameProblem {
    /// Nothing before the first `/`.
    EmptyName,
    /// The name has a character other than letters, digits, `.`, `-` and `_`.
    NameCharacters,
    /// The name starts or ends with `.`.
    NameDot,
    /// The sub-directory has an empty, `.` or `..` component.
    SubdirComponent,
    /// A sub-directory component starts with `.cvmfs` (CernVM-FS's own files).
    SubdirInternal,
    /// The sub-directory holds control characters.
    SubdirControl,
}

impl fmt::Display for RepositoryNameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use RepositoryNameProblem as P;
        f.write_str(match self {
            P::EmptyName => "the repository name is empty",
            P::NameCharacters => "a repository name has only letters, digits, `.`, `-` and `_`",
            P::NameDot => "a repository name cannot start or end with `.`",
            P::SubdirComponent => "the sub-directory has an empty, `.` or `..` component",
            P::SubdirInternal => "the sub-directory cannot be a CernVM-FS internal path",
            P::SubdirControl => "the sub-directory holds control characters",
        })
    }
}

/// A string that is not `REPO` or `REPO/SUBDIR`.
///
/// Displays as ``invalid repository name `VALUE`: PROBLEM``.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid repository name `{value}`: {problem}")]
pub struct RepositoryNameError {
    value: String,
    problem: RepositoryNameProblem,
}

impl RepositoryNameError {
    /// The rejected input.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// What is wrong with it.
    pub fn problem(&self) -> RepositoryNameProblem {
        self.problem
    }
}

/// A CernVM-FS repository to publish into, with an optional sub-directory under which
/// everything goes: `unpacked.cern.ch` or `unpacked.cern.ch/some/subdir`.
///
/// Not an image's repository ([`crate::ImageRef::repository`]): this names a CernVM-FS
/// repository, what `cvmfs_server` takes, and a directory of the local publisher. The name has
/// only letters, digits, `.`, `-` and `_` and neither starts nor ends with `.`; the
/// sub-directory is a clean relative path (no empty, `.` or `..` component, nothing under
/// `.cvmfs*`, no control characters). A trailing `/` is dropped.
///
/// ```
/// use ducc_oci::{RepositoryName, RepositoryNameProblem};
///
/// let repo: RepositoryName = "unpacked.cern.ch/sub/dir/".parse()?;
/// assert_eq!(repo.name(), "unpacked.cern.ch");
/// assert_eq!(repo.subdir(), Some("sub/dir"));
/// assert_eq!(repo.to_string(), "unpacked.cern.ch/sub/dir");
///
/// let err = RepositoryName::parse("r/../x").unwrap_err();
/// assert_eq!(err.problem(), RepositoryNameProblem::SubdirComponent);
/// # Ok::<(), ducc_oci::RepositoryNameError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepositoryName {
    name: String,
    subdir: Option<String>,
}

impl RepositoryName {
    /// Parses `REPO` or `REPO/SUB/DIR`.
    ///
    /// # Errors
    /// [`RepositoryNameError`] when the name or the sub-directory is malformed.
    pub fn parse(value: &str) -> Result<Self, RepositoryNameError> {
        let fail = |problem| RepositoryNameError {
            value: value.to_owned(),
            problem,
        };
        let (name, subdir) = match value.split_once('/') {
            Some((name, subdir)) => (name, Some(subdir.trim_end_matches('/'))),
            None => (value, None),
        };
        if name.is_empty() {
            return Err(fail(RepositoryNameProblem::EmptyName));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        {
            return Err(fail(RepositoryNameProblem::NameCharacters));
        }
        if name.starts_with('.') || name.ends_with('.') {
            return Err(fail(RepositoryNameProblem::NameDot));
        }
        let subdir = match subdir {
            None | Some("") => None,
            Some(sub) => {
                if sub
                    .split('/')
                    .any(|c| c.is_empty() || c == "." || c == "..")
                {
                    return Err(fail(RepositoryNameProblem::SubdirComponent));
                }
                if sub.split('/').any(|c| c.starts_with(".cvmfs")) {
                    return Err(fail(RepositoryNameProblem::SubdirInternal));
                }
                if sub.chars().any(char::is_control) {
                    return Err(fail(RepositoryNameProblem::SubdirControl));
                }
                Some(sub.to_owned())
            }
        };
        Ok(RepositoryName {
            name: name.to_owned(),
            subdir,
        })
    }

    /// The repository's own name (`unpacked.cern.ch`), what `cvmfs_server` takes.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The sub-directory everything goes under (`sub/dir`, no `/` at either end), if any.
    pub fn subdir(&self) -> Option<&str> {
        self.subdir.as_deref()
    }
}

impl FromStr for RepositoryName {
    type Err = RepositoryNameError;

    fn from_str(text: &str) -> Result<Self, RepositoryNameError> {
        RepositoryName::parse(text)
    }
}

impl fmt::Display for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.subdir {
            Some(sub) => write!(f, "{}/{sub}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_and_subdir_are_split_at_the_first_slash() {
        let repo = RepositoryName::parse("unpacked.cern.ch/some/sub").unwrap();
        assert_eq!(repo.name(), "unpacked.cern.ch");
        assert_eq!(repo.subdir(), Some("some/sub"));
        assert_eq!(repo.to_string(), "unpacked.cern.ch/some/sub");
        let plain = RepositoryName::parse("unpacked.cern.ch").unwrap();
        assert_eq!(plain.subdir(), None);
        assert_eq!(plain.to_string(), "unpacked.cern.ch");
    }

    #[test]
    fn trailing_slashes_are_dropped() {
        assert_eq!(RepositoryName::parse("r/").unwrap().subdir(), None);
        assert_eq!(
            RepositoryName::parse("r/a/b/").unwrap().subdir(),
            Some("a/b")
        );
        assert_eq!(
            RepositoryName::parse("r/a/").unwrap(),
            RepositoryName::parse("r/a").unwrap()
        );
    }

    macro_rules! refused {
        ($($name:ident: $value:expr => $problem:ident;)*) => {$(
            #[test]
            fn $name() {
                let err = RepositoryName::parse($value).unwrap_err();
                assert_eq!(err.problem(), RepositoryNameProblem::$problem, "{err}");
                assert_eq!(err.value(), $value);
                assert!(err.to_string().starts_with(&format!("invalid repository name `{}`: ", $value)), "{err}");
            }
        )*};
    }

    refused! {
        empty_is_refused: "" => EmptyName;
        leading_slash_is_refused: "/x" => EmptyName;
        space_in_name_is_refused: "bad repo" => NameCharacters;
        dot_dot_as_name_is_refused: ".." => NameDot;
        leading_dot_is_refused: ".r" => NameDot;
        trailing_dot_is_refused: "r." => NameDot;
        dot_dot_in_subdir_is_refused: "r/../x" => SubdirComponent;
        dot_in_subdir_is_refused: "r/./x" => SubdirComponent;
        empty_subdir_component_is_refused: "r//x" => SubdirComponent;
        cvmfs_internal_subdir_is_refused: "r/a/.cvmfscatalog" => SubdirInternal;
        control_character_in_subdir_is_refused: "r/a\nb" => SubdirControl;
    }
}
