//! `$(var)` templating of `output_format`.

use std::fmt;

use ducc_oci::ImageRef;

/// The output format used when a wish list has none.
pub const DEFAULT_OUTPUT_FORMAT: &str = "$(scheme)://$(registry)/$(repository)_thin:$(tag)";

/// The variables an output format may use.
pub const VARIABLES: [&str; 7] = [
    "scheme",
    "registry",
    "repository",
    "tag",
    "digest",
    "reference",
    "image",
];

/// One piece of a parsed output format.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Variable(Variable),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variable {
    Scheme,
    Registry,
    Repository,
    Tag,
    Digest,
    Reference,
    Image,
}

impl Variable {
    fn from_name(name: &str) -> Option<Variable> {
        Some(match name {
            "scheme" => Variable::Scheme,
            "registry" => Variable::Registry,
            "repository" => Variable::Repository,
            "tag" => Variable::Tag,
            "digest" => Variable::Digest,
            "reference" => Variable::Reference,
            "image" => Variable::Image,
            _ => return None,
        })
    }

    fn value(self, image: &ImageRef) -> String {
        match self {
            Variable::Scheme => image.scheme().as_str().to_owned(),
            Variable::Registry => image.registry().to_owned(),
            Variable::Repository => image.repository().to_owned(),
            Variable::Tag => image.tag().unwrap_or_default().to_owned(),
            Variable::Digest => image.digest().unwrap_or_default().to_owned(),
            Variable::Reference => image.reference(),
            Variable::Image => image.image(),
        }
    }
}

/// An `output_format` whose variables have been checked.
///
/// ```
/// use ducc_wishlist::OutputFormat;
/// use ducc_oci::ImageRef;
/// let format = OutputFormat::parse("$(scheme)://registry.example.org/thin/$(image)")?;
/// let input = ImageRef::parse("https://registry.hub.docker.com/library/fedora:latest")?;
/// assert_eq!(format.expand(&input), "https://registry.example.org/thin/library/fedora:latest");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFormat {
    source: String,
    pieces: Vec<Piece>,
}

/// An output format with an unknown or unterminated `$(...)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// `$(name)` where `name` is not one of the seven variables.
    #[error(
        "unknown variable `$({name})` at character {column} of the output format (known: $(scheme) $(registry) $(repository) $(tag) $(digest) $(reference) $(image))"
    )]
    UnknownVariable {
        /// The name between the parentheses.
        name: String,
        /// 1-based character position of the `$` in the format.
        column: usize,
    },
    /// `$(` without its `)`.
    #[error("`$(` at character {column} of the output format is not closed with `)`")]
    Unterminated {
        /// 1-based character position of the `$` in the format.
        column: usize,
    },
}

impl OutputFormat {
    /// Parses and checks a format.
    ///
    /// # Errors
    /// A [`TemplateError`] for an unknown variable or an unclosed `$(`.
    pub fn parse(source: &str) -> Result<OutputFormat, TemplateError> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = source;
        while let Some(start) = rest.find("$(") {
            text.push_str(&rest[..start]);
            let column = source[..source.len() - rest.len() + start].chars().count() + 1;
            let after = &rest[start + 2..];
            let end = after
                .find(')')
                .ok_or(TemplateError::Unterminated { column })?;
            let name = &after[..end];
            let variable =
                Variable::from_name(name).ok_or_else(|| TemplateError::UnknownVariable {
                    name: name.to_owned(),
                    column,
                })?;
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(Piece::Variable(variable));
            rest = &after[end + 1..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(OutputFormat {
            source: source.to_owned(),
            pieces,
        })
    }

    /// The default, `$(scheme)://$(registry)/$(repository)_thin:$(tag)`.
    pub fn default_format() -> OutputFormat {
        // The default is a constant known to parse; build it by hand so no error path exists.
        OutputFormat {
            source: DEFAULT_OUTPUT_FORMAT.to_owned(),
            pieces: vec![
                Piece::Variable(Variable::Scheme),
                Piece::Text("://".to_owned()),
                Piece::Variable(Variable::Registry),
                Piece::Text("/".to_owned()),
                Piece::Variable(Variable::Repository),
                Piece::Text("_thin:".to_owned()),
                Piece::Variable(Variable::Tag),
            ],
        }
    }

    /// The format as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Replaces every variable with its value for `image` (an empty string for a missing tag or
    /// digest). The result is an image name still to be parsed.
    pub fn expand(&self, image: &ImageRef) -> String {
        self.pieces
            .iter()
            .map(|piece| match piece {
                Piece::Text(text) => text.clone(),
                Piece::Variable(variable) => variable.value(image),
            })
            .collect()
    }
}

impl Default for OutputFormat {
    fn default() -> Self {
        OutputFormat::default_format()
    }
}

impl fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn expand(format: &str, image: &str) -> String {
        OutputFormat::parse(format)
            .unwrap()
            .expand(&ImageRef::parse(image).unwrap())
    }

    #[test]
    fn every_variable_expands() {
        let image = format!("http://localhost:5000/a/b:1@{SHA}");
        let cases = [
            ("$(scheme)", "http".to_owned()),
            ("$(registry)", "localhost:5000".to_owned()),
            ("$(repository)", "a/b".to_owned()),
            ("$(tag)", "1".to_owned()),
            ("$(digest)", SHA.to_owned()),
            ("$(reference)", format!(":1@{SHA}")),
            ("$(image)", format!("a/b:1@{SHA}")),
        ];
        assert_eq!(cases.len(), VARIABLES.len());
        for (format, expected) in cases {
            assert_eq!(expand(format, &image), expected, "{format}");
        }
    }

    #[test]
    fn default_format_adds_thin_suffix() {
        assert_eq!(
            expand(
                DEFAULT_OUTPUT_FORMAT,
                "registry.hub.docker.com/library/fedora:latest"
            ),
            "https://registry.hub.docker.com/library/fedora_thin:latest"
        );
        assert_eq!(
            OutputFormat::default_format(),
            OutputFormat::parse(DEFAULT_OUTPUT_FORMAT).unwrap()
        );
    }

    #[test]
    fn variables_repeat_and_mix_with_text() {
        assert_eq!(expand("x/$(tag)-$(tag)/y", "quay.io/a:1"), "x/1-1/y");
    }

    #[test]
    fn missing_tag_expands_to_nothing() {
        assert_eq!(
            expand("$(tag)|$(reference)", &format!("quay.io/a@{SHA}")),
            format!("|@{SHA}")
        );
    }

    #[test]
    fn text_without_variables_is_kept() {
        assert_eq!(
            expand("https://r.io/fixed:1", "quay.io/a:1"),
            "https://r.io/fixed:1"
        );
        assert_eq!(expand("a$b(c)$", "quay.io/a:1"), "a$b(c)$");
    }

    #[test]
    fn unknown_variable_is_named_with_its_position() {
        let err = OutputFormat::parse("https://x.org/$(imag)").unwrap_err();
        assert_eq!(
            err,
            TemplateError::UnknownVariable {
                name: "imag".to_owned(),
                column: 15
            }
        );
        assert!(err.to_string().contains("`$(imag)`"));
    }

    #[test]
    fn variable_names_are_case_sensitive() {
        assert!(matches!(
            OutputFormat::parse("$(TAG)"),
            Err(TemplateError::UnknownVariable { .. })
        ));
    }

    #[test]
    fn unclosed_variable_is_an_error() {
        assert_eq!(
            OutputFormat::parse("x$(tag"),
            Err(TemplateError::Unterminated { column: 2 })
        );
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,100}") {
            let _ = OutputFormat::parse(&s);
        }
    }
}
