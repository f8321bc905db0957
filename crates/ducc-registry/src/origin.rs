//! The origin of a URL (RFC 6454: scheme, host, port), parsed and normalised, which decides where
//! credentials may go.
//!
//! Credentials belong to one registry origin. A `Link`, a `Location` or a redirect can name any
//! URL, so every URL we are about to send to is parsed into an [`Origin`] and compared with the
//! registry's; string prefixes would let `http://reg.example.evil/` pass for `http://reg.example`.
//! URLs are parsed with the same parser (`http::Uri`) that the HTTP client connects with, so the
//! host we compare is the host we would reach.

use std::fmt;

use ducc_oci::Scheme;

/// `scheme://host:port`, lowercase, with the scheme's default port filled in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Origin {
    scheme: Scheme,
    /// Lowercase; IPv6 literals keep their brackets.
    host: String,
    port: u16,
}

impl Origin {
    /// The origin of an absolute `http` or `https` URL; `None` for anything else (relative,
    /// other schemes, no host, a port that is not a number up to 65535).
    pub(crate) fn of_url(url: &str) -> Option<Origin> {
        let uri: ureq::http::Uri = url.parse().ok()?;
        let scheme = match uri.scheme_str()?.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            _ => return None,
        };
        let authority = uri.authority()?;
        let host = authority.host().to_ascii_lowercase();
        if host.is_empty() {
            return None;
        }
        let port = match authority.port() {
            Some(port) => port.as_u16(),
            None => {
                // `http::Uri` reads a port beyond 65535 as none; only `host` or `host:` (an empty
                // port, RFC 3986 section 6.2.3) mean the default port.
                let after_user = authority
                    .as_str()
                    .rsplit_once('@')
                    .map_or(authority.as_str(), |(_, rest)| rest);
                let rest = after_user.get(authority.host().len()..).unwrap_or("");
                if !(rest.is_empty() || rest == ":") {
                    return None;
                }
                default_port(scheme)
            }
        };
        Some(Origin { scheme, host, port })
    }

    /// The origin of a registry named `host[:port]` reached over `scheme`.
    pub(crate) fn of_registry(scheme: Scheme, host: &str) -> Option<Origin> {
        Origin::of_url(&format!("{}://{host}/", scheme.as_str()))
    }

    /// Whether requests to this origin are encrypted.
    pub(crate) fn is_https(&self) -> bool {
        self.scheme == Scheme::Https
    }
}

fn default_port(scheme: Scheme) -> u16 {
    match scheme {
        Scheme::Http => 80,
        Scheme::Https => 443,
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.host)?;
        if self.port != default_port(self.scheme) {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(url: &str) -> Origin {
        Origin::of_url(url).unwrap_or_else(|| panic!("{url} has an origin"))
    }

    macro_rules! same_origin_cases {
        ($($name:ident: $a:expr, $b:expr => $same:expr;)*) => {$(
            #[test]
            fn $name() {
                assert_eq!(origin($a) == origin($b), $same, "{} vs {}", $a, $b);
            }
        )*};
    }

    same_origin_cases! {
        origin_host_case_is_ignored: "http://Reg.Example:5000/v2/", "http://reg.example:5000/x" => true;
        origin_scheme_case_is_ignored: "HTTPS://reg.example/v2/", "https://reg.example/" => true;
        origin_http_default_port_is_80: "http://reg.example/v2/", "http://reg.example:80/v2/" => true;
        origin_https_default_port_is_443: "https://reg.example/", "https://reg.example:443/" => true;
        origin_empty_port_is_the_default: "https://reg.example:/", "https://reg.example/" => true;
        origin_path_query_and_user_info_do_not_count: "http://u:p@reg.example/a?b#c", "http://reg.example/z" => true;
        origin_other_port_differs: "http://127.0.0.1:5000/", "http://127.0.0.1:5001/" => false;
        origin_other_address_differs: "http://127.0.0.1:5000/", "http://127.0.0.2:5000/" => false;
        origin_other_scheme_differs: "http://reg.example/", "https://reg.example/" => false;
        origin_http_443_is_not_https: "http://reg.example:443/", "https://reg.example/" => false;
        origin_suffix_host_differs: "http://reg.example/", "http://reg.example.evil/" => false;
        origin_prefix_lookalike_differs: "http://reg.example:5000/", "http://reg.example:50001/" => false;
        origin_subdomain_differs: "https://reg.example/", "https://auth.reg.example/" => false;
        origin_trailing_dot_differs: "https://reg.example/", "https://reg.example./" => false;
        origin_ipv6_case_is_ignored: "http://[::A]:5000/", "http://[::a]:5000/" => true;
    }

    #[test]
    fn origin_is_none_for_what_is_not_an_absolute_http_url() {
        for url in [
            "/v2/a/tags/list",
            "v2/a",
            "//other.example/x",
            "ftp://reg.example/",
            "file:///etc/passwd",
            "http://",
            "http://reg.example:99999/",
            "http://reg.example:port/",
            "",
        ] {
            assert_eq!(Origin::of_url(url), None, "{url:?}");
        }
    }

    #[test]
    fn registry_origins_normalise_like_url_origins() {
        assert_eq!(
            Origin::of_registry(Scheme::Https, "Reg.Example:443"),
            Origin::of_url("https://reg.example/v2/")
        );
        assert_eq!(
            Origin::of_registry(Scheme::Http, "[::1]:5000")
                .unwrap()
                .to_string(),
            "http://[::1]:5000"
        );
        assert_eq!(
            Origin::of_registry(Scheme::Https, "reg.example")
                .unwrap()
                .to_string(),
            "https://reg.example"
        );
    }
}
