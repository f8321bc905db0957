//! The bearer token notify requests must carry.

use std::fmt;
use std::path::Path;

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// The webhook token. Only its SHA-256 is kept, so it cannot end up in a log or a core dump of
/// a formatted value, and comparing digests in constant time leaks neither content nor length.
#[derive(Clone)]
pub struct Token {
    digest: [u8; 32],
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// A token that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token is empty (after trimming the file's surrounding whitespace).
    #[error("the webhook token from {origin} is empty")]
    Empty {
        /// `DUCC_WEBHOOK_TOKEN` or the file.
        origin: String,
    },
    /// The token holds characters an HTTP header cannot carry.
    #[error("the webhook token from {origin} holds a control character or a space")]
    NotAHeaderValue {
        /// `DUCC_WEBHOOK_TOKEN` or the file.
        origin: String,
    },
    /// No token was given, and no `--no-auth`.
    #[error(
        "ducc serve needs a webhook token: set {var} or --token-file (or, on a loopback address only, --no-auth)"
    )]
    Missing {
        /// The variable that would hold it.
        var: String,
    },
    /// A token and `--no-auth` were both given.
    #[error("--no-auth contradicts the token given in {var} or --token-file")]
    Contradiction {
        /// The variable that may hold it.
        var: String,
    },
    /// A token in the variable and a token file were both given.
    #[error("the webhook token is given twice: use {var} or --token-file, not both")]
    Twice {
        /// The variable that holds one.
        var: String,
    },
    /// The token file cannot be read.
    #[error("cannot read the webhook token file {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

impl Token {
    /// A token given as text; `origin` (e.g. `DUCC_WEBHOOK_TOKEN`) only goes into errors.
    ///
    /// # Errors
    /// [`TokenError`] when it is empty or could not travel in an `Authorization` header.
    pub fn new(secret: &str, origin: &str) -> Result<Token, TokenError> {
        if secret.is_empty() {
            return Err(TokenError::Empty {
                origin: origin.to_owned(),
            });
        }
        if secret.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(TokenError::NotAHeaderValue {
                origin: origin.to_owned(),
            });
        }
        Ok(Token {
            digest: Sha256::digest(secret.as_bytes()).into(),
        })
    }

    /// The token in a file, without the surrounding whitespace (a final newline).
    ///
    /// # Errors
    /// [`TokenError`] when the file cannot be read or holds no usable token.
    pub fn from_file(path: &Path) -> Result<Token, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Token::new(text.trim(), &path.display().to_string())
    }

    /// Whether an `Authorization` header value is `Bearer <this token>`. The scheme is
    /// case-insensitive (RFC 9110); the token is compared in constant time.
    pub fn accepts(&self, authorization: Option<&str>) -> bool {
        let Some((scheme, credentials)) = authorization.and_then(|v| v.trim().split_once(' '))
        else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return false;
        }
        let offered: [u8; 32] = Sha256::digest(credentials.trim_start().as_bytes()).into();
        bool::from(offered.ct_eq(&self.digest))
    }
}

/// Who may notify.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Requests must carry `Authorization: Bearer <token>`.
    Bearer(Token),
    /// No check (only allowed on loopback, with `--no-auth`).
    Disabled,
}

impl Auth {
    /// The auth that serve's flags ask for: `no_auth` (`--no-auth`), a token file, or the
    /// token held by the variable `var` (`env_token`: its value, when set). Exactly one of them.
    ///
    /// # Errors
    /// [`TokenError`] when none or several are given, or the token is unusable.
    pub fn from_sources(
        no_auth: bool,
        token_file: Option<&std::path::Path>,
        var: &str,
        env_token: Option<&str>,
    ) -> Result<Auth, TokenError> {
        let var = var.to_owned();
        match (no_auth, token_file, env_token) {
            (true, None, None) => Ok(Auth::Disabled),
            (true, _, _) => Err(TokenError::Contradiction { var }),
            (false, Some(_), Some(_)) => Err(TokenError::Twice { var }),
            (false, Some(path), None) => Token::from_file(path).map(Auth::Bearer),
            (false, None, Some(secret)) => Token::new(secret, &var).map(Auth::Bearer),
            (false, None, None) => Err(TokenError::Missing { var }),
        }
    }

    /// Whether a request with this `Authorization` header may notify.
    pub fn allows(&self, authorization: Option<&str>) -> bool {
        match self {
            Auth::Bearer(token) => token.accepts(authorization),
            Auth::Disabled => true,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn exactly_one_source_of_auth_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        let var = "DUCC_WEBHOOK_TOKEN";
        let from = |no_auth, file: Option<&std::path::Path>, env: Option<&str>| {
            Auth::from_sources(no_auth, file, var, env)
        };
        assert!(matches!(from(true, None, None), Ok(Auth::Disabled)));
        let by_file = from(false, Some(&file), None).unwrap();
        assert!(by_file.allows(Some("Bearer from-file")));
        let by_env = from(false, None, Some("from-env")).unwrap();
        assert!(by_env.allows(Some("Bearer from-env")));
        assert!(!by_env.allows(Some("Bearer from-file")));
        for (result, says) in [
            (from(false, None, None), "needs a webhook token"),
            (from(true, None, Some("x")), "--no-auth contradicts"),
            (from(true, Some(&file), None), "--no-auth contradicts"),
            (from(false, Some(&file), Some("x")), "given twice"),
        ] {
            let error = result.expect_err("refused").to_string();
            assert!(error.contains(says) && error.contains(var), "{error}");
        }
    }

    #[test]
    fn only_the_bearer_token_itself_is_accepted() {
        let token = Token::new("s3cret-token", "test").unwrap();
        let cases = [
            (Some("Bearer s3cret-token"), true),
            (Some("bearer s3cret-token"), true),
            (Some("BEARER  s3cret-token "), true),
            (Some("Bearer s3cret-toke"), false),
            (Some("Bearer s3cret-token2"), false),
            (Some("Basic s3cret-token"), false),
            (Some("s3cret-token"), false),
            (Some("Bearer"), false),
            (Some(""), false),
            (None, false),
        ];
        for (header, expected) in cases {
            assert_eq!(token.accepts(header), expected, "{header:?}");
        }
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let token = Token::new("s3cret-token", "test").unwrap();
        let shown = format!("{token:?} {:?}", Auth::Bearer(token.clone()));
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn unusable_tokens_are_refused_naming_their_origin() {
        let empty = Token::new("", "DUCC_WEBHOOK_TOKEN").unwrap_err();
        assert_eq!(
            empty.to_string(),
            "the webhook token from DUCC_WEBHOOK_TOKEN is empty"
        );
        let spaced = Token::new("two words", "DUCC_WEBHOOK_TOKEN").unwrap_err();
        assert!(matches!(spaced, TokenError::NotAHeaderValue { .. }));
        let dir = tempfile::tempdir().unwrap();
        let missing = Token::from_file(&dir.path().join("nope")).unwrap_err();
        assert!(missing.to_string().contains("nope"), "{missing}");
        let file = dir.path().join("token");
        std::fs::write(&file, "  \n").unwrap();
        assert!(matches!(
            Token::from_file(&file).unwrap_err(),
            TokenError::Empty { .. }
        ));
        std::fs::write(&file, "from-file\n").unwrap();
        assert!(
            Token::from_file(&file)
                .unwrap()
                .accepts(Some("Bearer from-file"))
        );
    }

    #[test]
    fn disabled_auth_allows_anyone() {
        assert!(Auth::Disabled.allows(None));
    }
}
