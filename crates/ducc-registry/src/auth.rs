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

/// Parses a header value into its challenges; `None` when it is malformed.
pub(crate) fn parse_challenges(header: &str) -> Option<Vec<Challenge>> {
    let chars: Vec<char> = header.chars().collect();
    let mut pos = 0;
    let mut challenges: Vec<Challenge> = Vec::new();
    let skip_ws = |pos: &mut usize| {
        while *pos < chars.len() && matches!(chars[*pos], ' ' | '\t') {
            *pos += 1;
        }
    };
    let read_token = |pos: &mut usize| -> String {
        let start = *pos;
        while *pos < chars.len() && is_token_char(chars[*pos]) {
            *pos += 1;
        }
        chars[start..*pos].iter().collect()
    };
    loop {
        // Skip empty list elements.
        skip_ws(&mut pos);
        while pos < chars.len() && chars[pos] == ',' {
            pos += 1;
            skip_ws(&mut pos);
        }
        if pos >= chars.len() {
            break;
        }
        // Either a new challenge (scheme token followed by space or end) or, after a
        // challenge, another `name=value` parameter of the current one.
        let start = pos;
        let token = read_token(&mut pos);
        if token.is_empty() {
            return None;
        }
        let after = pos;
        skip_ws(&mut pos);
        let is_param = pos < chars.len() && chars[pos] == '=' && !challenges.is_empty() && {
            // `token68` values end in `=` padding; a parameter's `=` is followed by a value.
            let mut look = pos + 1;
            while look < chars.len() && chars[look] == '=' {
                look += 1;
            }
            look == pos + 1
        };
        if is_param {
            pos += 1;
            skip_ws(&mut pos);
            let value = if pos < chars.len() && chars[pos] == '"' {
                pos += 1;
                let mut value = String::new();
                loop {
                    match chars.get(pos) {
                        None => return None,
                        Some('"') => {
                            pos += 1;
                            break;
                        }
                        Some('\\') => {
                            value.push(*chars.get(pos + 1)?);
                            pos += 2;
                        }
                        Some(c) => {
                            value.push(*c);
                            pos += 1;
                        }
                    }
                }
                value
            } else {
                read_token(&mut pos)
            };
            let current = challenges.last_mut()?;
            current.params.push((token, value));
            skip_ws(&mut pos);
            if pos < chars.len() && chars[pos] != ',' {
                return None;
            }
            continue;
        }
        // A scheme. `pos` is past any whitespace; parameters (or a token68) may follow.
        let _ = (start, after);
        challenges.push(Challenge {
            scheme: token,
            params: Vec::new(),
        });
        // A token68 (e.g. `Negotiate abc==`) is kept as a parameter with an empty name.
        if pos < chars.len() && chars[pos] != ',' {
            let t68_start = pos;
            let name = read_token(&mut pos);
            let mut look = pos;
            skip_ws(&mut look);
            if look < chars.len() && chars[look] == '=' {
                let mut eq_end = look;
                while eq_end < chars.len() && chars[eq_end] == '=' {
                    eq_end += 1;
                }
                if eq_end - look == 1 && eq_end < chars.len() {
                    // It is a parameter: rewind and let the loop read it.
                    pos = t68_start;
                    continue;
                }
                pos = eq_end;
                let t68: String = chars[t68_start..pos].iter().collect();
                challenges.last_mut()?.params.push((String::new(), t68));
            } else if !name.is_empty() {
                challenges.last_mut()?.params.push((String::new(), name));
            } else {
                return None;
            }
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
