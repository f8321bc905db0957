//! Globs with `*` only: tag globs (`21.2.1*`) and `ignore_errors` patterns.

use std::fmt;

/// A pattern where `*` matches any run of characters (including none, including `/`) and every
/// other character matches itself; the whole text must match.
///
/// Unlike upstream DUCC, which turned tag globs into unescaped regular expressions, `.` is literal:
/// `21.2.1*` matches `21.2.10` but not `21x2x10`.
///
/// ```
/// use ducc_oci::Glob;
/// let glob = Glob::new("21.2.1*");
/// assert!(glob.matches("21.2.100-20191127"));
/// assert!(!glob.matches("21.3.10"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Glob {
    pattern: String,
}

impl Glob {
    /// Makes a glob of `pattern`. Every string is a valid pattern.
    pub fn new(pattern: &str) -> Glob {
        Glob {
            pattern: pattern.to_owned(),
        }
    }

    /// The pattern as given.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether the whole of `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        // Greedy matching with one backtrack point (the last `*`): linear in practice and never
        // exponential, whatever the pattern.
        let pattern: Vec<char> = self.pattern.chars().collect();
        let text: Vec<char> = text.chars().collect();
        let (mut p, mut t) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            if p < pattern.len() && pattern[p] == '*' {
                star = Some((p, t));
                p += 1;
            } else if p < pattern.len() && pattern[p] == text[t] {
                p += 1;
                t += 1;
            } else if let Some((star_p, star_t)) = star {
                p = star_p + 1;
                t = star_t + 1;
                star = Some((star_p, star_t + 1));
            } else {
                return false;
            }
        }
        pattern[p..].iter().all(|&c| c == '*')
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    macro_rules! glob_cases {
        ($($name:ident: $pattern:literal, $text:literal => $expected:literal;)*) => {$(
            #[test]
            fn $name() {
                assert_eq!(Glob::new($pattern).matches($text), $expected, "{} vs {}", $pattern, $text);
            }
        )*};
    }

    glob_cases! {
        star_matches_any_suffix: "21.2.1*", "21.2.100-20191127" => true;
        star_matches_empty_run: "21.2.1*", "21.2.1" => true;
        dot_is_literal_not_any_char: "21.2.1*", "21x2x10" => false;
        prefix_must_match: "21.2.1*", "21.3.10" => false;
        whole_text_must_match_at_end: "latest", "latest-1" => false;
        whole_text_must_match_at_start: "latest", "1-latest" => false;
        star_in_middle: "v*-slim", "v1.2-slim" => true;
        star_in_middle_needs_suffix: "v*-slim", "v1.2-slim-x" => false;
        several_stars_backtrack: "*a*b*c", "xxaxxbxxbc" => true;
        several_stars_fail_cleanly: "*a*b*c", "xxaxxcxxb" => false;
        lone_star_matches_empty: "*", "" => true;
        empty_pattern_matches_only_empty: "", "x" => false;
        star_crosses_slashes: "https://registry.hub.docker.com/flaky/*", "https://registry.hub.docker.com/flaky/a/b:1" => true;
        question_mark_is_literal: "a?c", "abc" => false;
        brackets_are_literal: "[ab]", "a" => false;
        unicode_is_matched_by_char: "caf*", "café" => true;
    }

    #[test]
    fn long_pathological_pattern_finishes() {
        let pattern = "*a".repeat(50);
        let text = "a".repeat(49);
        assert!(!Glob::new(&pattern).matches(&text));
    }
}
