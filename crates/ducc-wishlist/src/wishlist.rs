//! The wish list file, v1.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::template::{OutputFormat, TemplateError};
use ducc_oci::{Glob, ImageRef, ReferenceError, RepositoryName, RepositoryNameError};

/// A line and column in the wish list file, both 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// What is wrong with a wish list.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WishListProblem {
    /// The file could not be read.
    #[error("cannot read the wish list")]
    Read(#[source] std::io::Error),
    /// YAML syntax, an unknown key, a wrong type or a missing key.
    #[error("{0}")]
    Yaml(String),
    /// `version` is not 1.
    #[error("unsupported wish list version {0} (only version 1 exists)")]
    Version(String),
    /// `cvmfs_repo` is not `repo` or `repo/subdir`.
    #[error("invalid cvmfs_repo `{}`: {}", .0.value(), .0.problem())]
    CvmfsRepo(RepositoryNameError),
    /// `input` has no entries.
    #[error("the input list is empty: name at least one image")]
    EmptyInput,
    /// An input image name is invalid.
    #[error("{0}")]
    Input(ReferenceError),
    /// `output_format` has an unknown or unclosed variable.
    #[error("invalid output_format: {0}")]
    OutputFormat(TemplateError),
    /// The output format gives an invalid image name for an input.
    #[error(
        "output_format gives an invalid thin image for input `{input}`: {error}{}",
        if *input_has_tag { "" } else { " (the input has no tag, so $(tag) is empty: use $(reference) or $(digest))" }
    )]
    Output {
        /// The input's whole name.
        input: String,
        /// Why the expanded name is invalid.
        error: ReferenceError,
        /// Whether the input has a tag (without one, `$(tag)` expands to nothing).
        input_has_tag: bool,
    },
}

/// A wish list that could not be loaded: the file, where in it, and what is wrong.
///
/// Displays as `FILE:LINE:COL: problem` (or `FILE: problem` where there is no position).
#[derive(Debug)]
pub struct WishListError {
    path: PathBuf,
    location: Option<Location>,
    // Boxed: the problem can be large, and this error travels in `Result`s.
    problem: Box<WishListProblem>,
}

impl fmt::Display for WishListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(location) = self.location {
            write!(f, ":{location}")?;
        }
        write!(f, ": {}", self.problem)
    }
}

impl std::error::Error for WishListError {
    // The problem is part of the message; its own cause (an I/O error) comes next in the chain.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.problem)
    }
}

impl WishListError {
    /// The wish list file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where in the file, when known.
    pub fn location(&self) -> Option<Location> {
        self.location
    }

    /// What is wrong.
    pub fn problem(&self) -> &WishListProblem {
        &self.problem
    }
}

/// A loaded and checked wish list.
///
/// ```
/// use ducc_wishlist::WishList;
/// let yaml = "
/// version: 1
/// user: alice
/// cvmfs_repo: unpacked.cern.ch
/// input:
///   - 'https://registry.hub.docker.com/library/fedora:latest'
/// ";
/// let list = WishList::from_yaml("wishlist.yaml".as_ref(), yaml)?;
/// let wish = &list.wishes()[0];
/// assert_eq!(wish.output.whole_name(), "https://registry.hub.docker.com/library/fedora_thin:latest");
/// # Ok::<(), ducc_wishlist::WishListError>(())
/// ```
#[derive(Debug, Clone)]
pub struct WishList {
    path: PathBuf,
    user: String,
    cvmfs_repo: RepositoryName,
    output_format: OutputFormat,
    wishes: Vec<Wish>,
    ignore_errors: Vec<Glob>,
}

/// One input image and the thin image it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wish {
    /// The image to convert (its tag may be a glob).
    pub input: ImageRef,
    /// The thin image to push (for a glob input, the output for each expanded tag comes from
    /// [`WishList::output_for`]).
    pub output: ImageRef,
}

/// The file as serde sees it: types and keys only; the meaning is checked afterwards.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWishList {
    version: i64,
    #[serde(default)]
    user: Option<String>,
    cvmfs_repo: String,
    #[serde(default)]
    output_format: Option<String>,
    input: Vec<String>,
    #[serde(default, alias = "ignoreErrors")]
    ignore_errors: Vec<String>,
}

impl WishList {
    /// Reads and checks the wish list at `path`.
    ///
    /// # Errors
    /// A [`WishListError`] naming the file, the line and column, and what is wrong.
    pub fn load(path: &Path) -> Result<WishList, WishListError> {
        let text = std::fs::read_to_string(path).map_err(|e| WishListError {
            path: path.to_owned(),
            location: None,
            problem: Box::new(WishListProblem::Read(e)),
        })?;
        WishList::from_yaml(path, &text)
    }

    /// Checks a wish list given as text; `path` is only used in errors.
    ///
    /// # Errors
    /// A [`WishListError`] naming the file, the line and column, and what is wrong.
    pub fn from_yaml(path: &Path, text: &str) -> Result<WishList, WishListError> {
        let fail = |target: Target, problem: WishListProblem| WishListError {
            path: path.to_owned(),
            location: locate(text, target),
            problem: Box::new(problem),
        };
        let raw: RawWishList = serde_norway::from_str(text).map_err(|e| WishListError {
            path: path.to_owned(),
            location: e.location().map(|l| Location {
                line: l.line(),
                column: l.column(),
            }),
            problem: Box::new(WishListProblem::Yaml(yaml_message(&e))),
        })?;
        if raw.version != 1 {
            return Err(fail(
                Target::Key("version", None),
                WishListProblem::Version(raw.version.to_string()),
            ));
        }
        let cvmfs_repo = RepositoryName::parse(&raw.cvmfs_repo).map_err(|e| {
            fail(
                Target::Key("cvmfs_repo", None),
                WishListProblem::CvmfsRepo(e),
            )
        })?;
        let output_format = match &raw.output_format {
            Some(format) => OutputFormat::parse(format).map_err(|e| {
                fail(
                    Target::Key("output_format", None),
                    WishListProblem::OutputFormat(e),
                )
            })?,
            None => OutputFormat::default_format(),
        };
        if raw.input.is_empty() {
            return Err(fail(
                Target::Key("input", None),
                WishListProblem::EmptyInput,
            ));
        }
        let mut wishes = Vec::with_capacity(raw.input.len());
        for (index, name) in raw.input.iter().enumerate() {
            let target = Target::Key("input", Some(index));
            let input =
                ImageRef::parse(name).map_err(|e| fail(target, WishListProblem::Input(e)))?;
            let output = output_image(&output_format, &input).map_err(|error| {
                fail(
                    target,
                    WishListProblem::Output {
                        input: input.whole_name(),
                        error,
                        input_has_tag: input.tag().is_some(),
                    },
                )
            })?;
            wishes.push(Wish { input, output });
        }
        let ignore_errors = raw.ignore_errors.iter().map(|p| Glob::new(p)).collect();
        Ok(WishList {
            path: path.to_owned(),
            user: raw.user.unwrap_or_default(),
            cvmfs_repo,
            output_format,
            wishes,
            ignore_errors,
        })
    }

    /// The file the list came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The user that pushes thin images (may be empty).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The repository (and sub-directory) to publish into.
    pub fn cvmfs_repo(&self) -> &RepositoryName {
        &self.cvmfs_repo
    }

    /// The output format (the default when the file has none).
    pub fn output_format(&self) -> &OutputFormat {
        &self.output_format
    }

    /// The inputs, in file order, with their thin images.
    pub fn wishes(&self) -> &[Wish] {
        &self.wishes
    }

    /// The `ignore_errors` globs.
    pub fn ignore_errors(&self) -> &[Glob] {
        &self.ignore_errors
    }

    /// Whether a failure of `input` is to be ignored: some `ignore_errors` glob matches its
    /// whole name (`https://registry/repository:tag`).
    pub fn is_error_ignored(&self, input: &ImageRef) -> bool {
        let name = input.whole_name();
        self.ignore_errors.iter().any(|glob| glob.matches(&name))
    }

    /// The thin image for `input`, e.g. for each tag a glob expands to.
    ///
    /// # Errors
    /// A [`ReferenceError`] when the expanded output format is not a valid image name.
    pub fn output_for(&self, input: &ImageRef) -> Result<ImageRef, ReferenceError> {
        output_image(&self.output_format, input)
    }
}

fn output_image(format: &OutputFormat, input: &ImageRef) -> Result<ImageRef, ReferenceError> {
    ImageRef::parse(&format.expand(input))
}

/// serde_norway's message without its own trailing ` at line L column C`, since we print the
/// position in front.
fn yaml_message(error: &serde_norway::Error) -> String {
    let message = error.to_string();
    match message.rfind(" at line ") {
        Some(i) if error.location().is_some() => message[..i].to_owned(),
        _ => message,
    }
}

/// A value in the file whose position an error should carry.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// The value of a top-level key, or one element of it when it is a list.
    Key(&'static str, Option<usize>),
}

/// Finds where a value is by deserializing the file again with a visitor that fails on purpose
/// exactly at that value: the YAML deserializer then reports its position. This keeps every
/// semantic check typed while serde_norway keeps the only YAML parser.
fn locate(text: &str, target: Target) -> Option<Location> {
    let Target::Key(key, index) = target;
    let deserializer = serde_norway::Deserializer::from_str(text);
    match (TopLevel { key, index }).deserialize(deserializer) {
        Ok(()) => None,
        Err(e) => e.location().map(|l| Location {
            line: l.line(),
            column: l.column(),
        }),
    }
}

struct TopLevel {
    key: &'static str,
    index: Option<usize>,
}

impl<'de> DeserializeSeed<'de> for TopLevel {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TopLevel {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == self.key {
                return match self.index {
                    None => map.next_value_seed(FailHere),
                    Some(index) => map.next_value_seed(Element { index }),
                };
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
}

/// Fails at the value it is asked to deserialize.
struct FailHere;

impl<'de> DeserializeSeed<'de> for FailHere {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FailHere {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("nothing (position probe)")
    }
}

/// Skips to element `index` of a list and fails there; fails at the list itself when it has no
/// such element.
struct Element {
    index: usize,
}

impl<'de> DeserializeSeed<'de> for Element {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Element {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list (position probe)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        for _ in 0..self.index {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Err(de::Error::custom("position probe"));
            }
        }
        seq.next_element_seed(FailHere)?;
        Err(de::Error::custom("position probe"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<WishList, WishListError> {
        WishList::from_yaml(Path::new("wish.yaml"), text)
    }

    /// Loads `text`, expects an error, and gives `(line, column, message)`.
    fn fails(text: &str) -> (usize, usize, String) {
        let err = load(text).expect_err("the wish list should be refused");
        let location = err.location().expect("the error should have a position");
        let shown = err.to_string();
        let prefix = format!("wish.yaml:{}:{}: ", location.line, location.column);
        assert!(shown.starts_with(&prefix), "{shown}");
        (
            location.line,
            location.column,
            shown[prefix.len()..].to_owned(),
        )
    }

    const GOOD: &str = "\
version: 1
user: alice
cvmfs_repo: unpacked.cern.ch
output_format: '$(scheme)://registry.example.org/thin/$(image)'
input:
  - 'https://registry.hub.docker.com/library/fedora:latest'
  - 'https://registry.hub.docker.com/atlas/analysisbase:21.2.1*'
ignore_errors: ['https://registry.hub.docker.com/flaky/*']
";

    #[test]
    fn spec_example_loads_with_every_field() {
        let list = load(GOOD).unwrap();
        assert_eq!(list.user(), "alice");
        assert_eq!(list.cvmfs_repo().name(), "unpacked.cern.ch");
        assert_eq!(list.cvmfs_repo().subdir(), None);
        assert_eq!(
            list.output_format().as_str(),
            "$(scheme)://registry.example.org/thin/$(image)"
        );
        let outputs: Vec<String> = list
            .wishes()
            .iter()
            .map(|w| w.output.whole_name())
            .collect();
        assert_eq!(
            outputs,
            [
                "https://registry.example.org/thin/library/fedora:latest",
                "https://registry.example.org/thin/atlas/analysisbase:21.2.1*",
            ]
        );
        assert!(list.wishes()[1].input.is_tag_glob());
        assert_eq!(list.ignore_errors().len(), 1);
    }

    #[test]
    fn user_and_output_format_and_ignore_errors_are_optional() {
        let list = load("version: 1\ncvmfs_repo: r.cern.ch\ninput: ['quay.io/a:1']\n").unwrap();
        assert_eq!(list.user(), "");
        assert_eq!(list.output_format().as_str(), crate::DEFAULT_OUTPUT_FORMAT);
        assert_eq!(
            list.wishes()[0].output.whole_name(),
            "https://quay.io/a_thin:1"
        );
        assert!(list.ignore_errors().is_empty());
    }

    #[test]
    fn empty_user_is_allowed() {
        assert_eq!(
            load("version: 1\nuser: ''\ncvmfs_repo: r\ninput: [quay.io/a:1]\n")
                .unwrap()
                .user(),
            ""
        );
    }

    #[test]
    fn cvmfs_repo_may_have_a_subdir() {
        let list =
            load("version: 1\ncvmfs_repo: unpacked.cern.ch/sub/dir/\ninput: [quay.io/a:1]\n")
                .unwrap();
        assert_eq!(list.cvmfs_repo().name(), "unpacked.cern.ch");
        assert_eq!(list.cvmfs_repo().subdir(), Some("sub/dir"));
        assert_eq!(list.cvmfs_repo().to_string(), "unpacked.cern.ch/sub/dir");
    }

    #[test]
    fn upstream_ignore_errors_spelling_is_accepted() {
        let list =
            load("version: 1\ncvmfs_repo: r\ninput: [quay.io/a:1]\nignoreErrors: ['*']\n").unwrap();
        assert_eq!(list.ignore_errors().len(), 1);
    }

    #[test]
    fn ignore_errors_match_whole_input_names() {
        let list = load(GOOD).unwrap();
        let flaky = ImageRef::parse("registry.hub.docker.com/flaky/x:1").unwrap();
        let other = ImageRef::parse("registry.hub.docker.com/library/fedora:latest").unwrap();
        let http = ImageRef::parse("http://registry.hub.docker.com/flaky/x:1").unwrap();
        assert!(list.is_error_ignored(&flaky));
        assert!(!list.is_error_ignored(&other));
        assert!(
            !list.is_error_ignored(&http),
            "the scheme is part of the whole name"
        );
    }

    #[test]
    fn output_for_expanded_glob_tag() {
        let list = load(GOOD).unwrap();
        let expanded = list.wishes()[1].input.with_tag("21.2.10").unwrap();
        assert_eq!(
            list.output_for(&expanded).unwrap().whole_name(),
            "https://registry.example.org/thin/atlas/analysisbase:21.2.10"
        );
    }

    macro_rules! refused {
        ($($name:ident: $text:expr => ($line:expr, $column:expr, $needle:expr);)*) => {$(
            #[test]
            fn $name() {
                let (line, column, message) = fails($text);
                assert!(message.contains($needle), "{message:?} should contain {:?}", $needle);
                assert_eq!((line, column), ($line, $column), "{message}");
            }
        )*};
    }

    refused! {
        version_must_be_one: "version: 2\ncvmfs_repo: r\ninput: [quay.io/a:1]\n" => (1, 10, "unsupported wish list version 2");
        version_must_be_a_number: "version: one\ncvmfs_repo: r\ninput: [quay.io/a:1]\n" => (1, 10, "version: invalid type");
        version_is_required: "cvmfs_repo: r\ninput: [quay.io/a:1]\n" => (1, 1, "missing field `version`");
        unknown_key_is_named: "version: 1\ncvmfs_repo: r\ninputs: [quay.io/a:1]\n" => (3, 1, "unknown field `inputs`");
        cvmfs_repo_is_required: "version: 1\ninput: [quay.io/a:1]\n" => (1, 1, "missing field `cvmfs_repo`");
        cvmfs_repo_must_be_a_string: "version: 1\ncvmfs_repo: [a]\ninput: [quay.io/a:1]\n" => (2, 13, "cvmfs_repo: invalid type");
        cvmfs_repo_name_characters: "version: 1\ncvmfs_repo: 'bad repo'\ninput: [quay.io/a:1]\n" => (2, 13, "invalid cvmfs_repo `bad repo`");
        cvmfs_repo_subdir_without_dotdot: "version: 1\ncvmfs_repo: r/../x\ninput: [quay.io/a:1]\n" => (2, 13, "`..`");
        input_is_required: "version: 1\ncvmfs_repo: r\n" => (1, 1, "missing field `input`");
        input_must_be_a_list: "version: 1\ncvmfs_repo: r\ninput: quay.io/a:1\n" => (3, 8, "input: invalid type: string");
        input_must_not_be_empty: "version: 1\ncvmfs_repo: r\ninput: []\n" => (3, 8, "the input list is empty");
        input_entries_must_be_strings: "version: 1\ncvmfs_repo: r\ninput:\n  - {a: 1}\n" => (4, 5, "invalid type: map");
        bad_input_points_at_the_entry: "version: 1\ncvmfs_repo: r\ninput:\n  - quay.io/a:1\n  - ubuntu:22.04\n" => (5, 5, "did you mean `registry.hub.docker.com/library/ubuntu:22.04`?");
        unknown_template_variable: "version: 1\ncvmfs_repo: r\noutput_format: 'x.org/$(img):1'\ninput: [quay.io/a:1]\n" => (3, 16, "unknown variable `$(img)`");
        unclosed_template_variable: "version: 1\ncvmfs_repo: r\noutput_format: 'x.org/$(tag'\ninput: [quay.io/a:1]\n" => (3, 16, "is not closed");
        output_invalid_for_digest_only_input: "version: 1\ncvmfs_repo: r\ninput:\n  - quay.io/a@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n" => (4, 5, "use $(reference) or $(digest)");
        output_format_yielding_garbage: "version: 1\ncvmfs_repo: r\noutput_format: 'thin'\ninput: [quay.io/a:1]\n" => (4, 9, "output_format gives an invalid thin image");
        ignore_errors_must_be_a_list: "version: 1\ncvmfs_repo: r\ninput: [quay.io/a:1]\nignore_errors: x\n" => (4, 16, "invalid type");
        yaml_syntax_error: "version: 1\ncvmfs_repo: r\n  input: [quay.io/a:1]\n" => (3, 8, "mapping values are not allowed");
        duplicate_key: "version: 1\nversion: 1\ncvmfs_repo: r\ninput: [quay.io/a:1]\n" => (1, 1, "duplicate field `version`");
        top_level_must_be_a_mapping: "- a\n- b\n" => (1, 1, "invalid type: sequence");
    }

    #[test]
    fn empty_file_is_refused() {
        let err = load("").unwrap_err();
        assert!(matches!(err.problem(), WishListProblem::Yaml(_)), "{err}");
    }

    #[test]
    fn unreadable_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.yaml");
        let err = WishList::load(&path).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{}: cannot read the wish list", path.display()))
        );
        assert!(
            std::error::Error::source(&err).is_some(),
            "the I/O error is the cause"
        );
    }

    #[test]
    fn load_reads_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.yaml");
        std::fs::write(&path, GOOD).unwrap();
        let list = WishList::load(&path).unwrap();
        assert_eq!(list.path(), path);
        assert_eq!(list.wishes().len(), 2);
    }

    proptest::proptest! {
        #[test]
        fn loader_never_panics(text in ".{0,200}") {
            let _ = load(&text);
        }

        #[test]
        fn loader_never_panics_on_yaml_like_text(
            lines in proptest::collection::vec("(version|cvmfs_repo|input|user|output_format|ignore_errors|  -)?:? ?[a-z0-9.:/\\[\\]'$()*@-]{0,30}", 0..8)
        ) {
            let _ = load(&lines.join("\n"));
        }
    }
}
