//! `WWW-Authenticate` challenges (RFC 9110 section 11.6.1).
//!
//! Parsed properly rather than split on `,` and `=`: quoted values routinely contain both, e.g.
//! `scope="repository:a/b:pull,push"`, and a header may carry several challenges.

/// One challenge: a scheme (`Bearer`, `Basic`) and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub(crate) scheme: String,
    pub(crate) params: Vec<(String, String)>,
}

impl Challenge {
    /// A parameter by case-insensitive name.
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn is(&self, scheme: &str) -> bool {
        self.scheme.eq_ignore_ascii_case(scheme)
    }
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// A position in the header value.
struct Cursor {
    chars: Vec<char>,
    pos: usize,
}

impl Cursor {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn at_element_end(&self) -> bool {
        matches!(self.peek(), None | Some(','))
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
    }

    fn skip_ws_and_commas(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | ',')) {
            self.pos += 1;
        }
    }

    fn token(&mut self) -> String {
        let start = self.pos;
        while self.peek().is_some_and(is_token_char) {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    fn count_equals(&mut self) -> usize {
        let start = self.pos;
        while self.peek() == Some('=') {
            self.pos += 1;
        }
        self.pos - start
    }

    /// A quoted string (after its opening quote), with `\` escapes.
    fn quoted(&mut self) -> Option<String> {
        let mut value = String::new();
        loop {
            let c = self.peek()?;
            self.pos += 1;
            match c {
                '"' => return Some(value),
                '\\' => {
                    value.push(self.peek()?);
                    self.pos += 1;
                }
                c => value.push(c),
            }
        }
    }

    /// `name = value` where value is a token or a quoted string; the cursor is past `name`.
    fn param_value(&mut self) -> Option<String> {
        self.skip_ws();
        if self.count_equals() != 1 {
            return None;
        }
        self.skip_ws();
        if self.peek() == Some('"') {
            self.pos += 1;
            self.quoted()
        } else {
            Some(self.token())
        }
    }

    /// Whether a parameter (`name=value`, exactly one `=` then a value) starts here.
    fn param_ahead(&self) -> bool {
        let mut look = Cursor {
            chars: self.chars.clone(),
            pos: self.pos,
        };
        let name = look.token();
        look.skip_ws();
        !name.is_empty() && look.count_equals() == 1 && {
            look.skip_ws();
            !look.at_element_end()
        }
    }
}

/// Parses a header value into its challenges; `None` when it is malformed.
///
/// Grammar (simplified from RFC 9110): challenges separated by commas; each is a scheme token
/// followed by either a token68 (`abc==`) or comma-separated `name=value` parameters, where a
/// value is a token or a quoted string.
pub(crate) fn parse_challenges(header: &str) -> Option<Vec<Challenge>> {
    let mut cursor = Cursor {
        chars: header.chars().collect(),
        pos: 0,
    };
    let mut challenges: Vec<Challenge> = Vec::new();
    loop {
        cursor.skip_ws_and_commas();
        if cursor.peek().is_none() {
            break;
        }
        if cursor.param_ahead() {
            // Another parameter of the current challenge.
            let name = cursor.token();
            let value = cursor.param_value()?;
            challenges.last_mut()?.params.push((name, value));
        } else {
            let scheme = cursor.token();
            if scheme.is_empty() {
                return None;
            }
            let mut challenge = Challenge {
                scheme,
                params: Vec::new(),
            };
            cursor.skip_ws();
            if cursor.param_ahead() {
                // Its first parameter follows on the next turn.
                challenges.push(challenge);
                continue;
            }
            if !cursor.at_element_end() {
                // A token68, kept as a parameter with an empty name.
                let start = cursor.pos;
                let token = cursor.token();
                cursor.count_equals();
                if token.is_empty() {
                    return None;
                }
                let token68: String = cursor.chars[start..cursor.pos].iter().collect();
                challenge.params.push((String::new(), token68));
            }
            challenges.push(challenge);
        }
        cursor.skip_ws();
        if !cursor.at_element_end() {
            return None;
        }
    }
    if challenges.is_empty() {
        None
    } else {
        Some(challenges)
    }
}

/// Percent-encodes a query parameter value.
pub(crate) fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(c: &Challenge) -> Vec<(&str, &str)> {
        c.params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn bearer_with_quoted_values_containing_comma_equals_colon() {
        let header = r#"Bearer realm="https://auth.example/token?a=b,c",service="reg.example:5000",scope="repository:a/b:pull,push""#;
        let challenges = parse_challenges(header).unwrap();
        assert_eq!(challenges.len(), 1);
        assert!(challenges[0].is("bearer"));
        assert_eq!(
            params(&challenges[0]),
            vec![
                ("realm", "https://auth.example/token?a=b,c"),
                ("service", "reg.example:5000"),
                ("scope", "repository:a/b:pull,push"),
            ]
        );
    }

    #[test]
    fn basic_with_realm() {
        let challenges = parse_challenges(r#"Basic realm="Registry Realm""#).unwrap();
        assert!(challenges[0].is("Basic"));
        assert_eq!(challenges[0].param("REALM"), Some("Registry Realm"));
    }

    #[test]
    fn two_challenges_in_one_header() {
        let challenges =
            parse_challenges(r#"Basic realm="x", Bearer realm="https://a/t", service=reg"#)
                .unwrap();
        assert_eq!(challenges.len(), 2);
        assert!(challenges[0].is("basic"));
        assert_eq!(challenges[0].param("realm"), Some("x"));
        assert!(challenges[1].is("bearer"));
        assert_eq!(challenges[1].param("service"), Some("reg"));
    }

    #[test]
    fn spaces_around_separators_and_escapes() {
        let challenges =
            parse_challenges(r#"Bearer  realm = "a\"b" ,  error="insufficient_scope""#).unwrap();
        assert_eq!(challenges[0].param("realm"), Some("a\"b"));
        assert_eq!(challenges[0].param("error"), Some("insufficient_scope"));
    }

    #[test]
    fn scheme_without_parameters_and_token68() {
        let challenges = parse_challenges("Negotiate abc==, Basic").unwrap();
        assert_eq!(challenges.len(), 2);
        assert_eq!(challenges[0].param(""), Some("abc=="));
        assert!(challenges[1].is("basic"));
    }

    #[test]
    fn error_parameters_and_unquoted_values() {
        let challenges = parse_challenges(
            r#"Bearer realm=simple,error="invalid_token",error_description="a, b=c""#,
        )
        .unwrap();
        assert_eq!(challenges.len(), 1);
        assert_eq!(challenges[0].param("realm"), Some("simple"));
        assert_eq!(challenges[0].param("error_description"), Some("a, b=c"));
    }

    #[test]
    fn malformed_headers_are_refused() {
        for bad in [
            "",
            "   ",
            r#"Bearer realm="unterminated"#,
            r#"Bearer realm="a" junk"#,
            "=x",
        ] {
            assert_eq!(parse_challenges(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            encode_query_value("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
    }
}
