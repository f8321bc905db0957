//! Keeping secrets out of errors and logs.

/// Query parameters whose values are secrets in pre-signed storage URLs or token requests.
const SECRET_QUERY_KEYS: &[&str] = &[
    "signature",
    "sig",
    "token",
    "access_token",
    "credential",
    "security-token",
    "password",
    "key",
];

/// The URL without user info, and with the values of signature-like query parameters replaced
/// by `REDACTED` (redirect targets are often pre-signed storage URLs).
pub(crate) fn redact_url(url: &str) -> String {
    let (before_query, query) = match url.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (url, None),
    };
    let mut out = String::with_capacity(url.len());
    match before_query.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            out.push_str(scheme);
            out.push_str("://");
            out.push_str(host);
            out.push_str(path);
        }
        None => out.push_str(before_query),
    }
    if let Some(query) = query {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            let key = pair.split_once('=').map_or(pair, |(k, _)| k);
            let lower = key.to_ascii_lowercase();
            let secret = SECRET_QUERY_KEYS.iter().any(|s| {
                lower == *s
                    || lower.ends_with(&format!("-{s}"))
                    || lower.ends_with(&format!("_{s}"))
            });
            if secret && pair.contains('=') {
                out.push_str(key);
                out.push_str("=REDACTED");
            } else {
                out.push_str(pair);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    macro_rules! redaction_cases {
        ($($name:ident: $input:expr => $expected:expr;)*) => {$(
            #[test]
            fn $name() {
                assert_eq!(redact_url($input), $expected);
            }
        )*};
    }

    redaction_cases! {
        user_info_is_removed: "https://bob:hunter2@reg.io/v2/a/manifests/x" => "https://reg.io/v2/a/manifests/x";
        plain_url_is_unchanged: "http://127.0.0.1:5000/v2/a/b/blobs/sha256:00?n=10&last=x" => "http://127.0.0.1:5000/v2/a/b/blobs/sha256:00?n=10&last=x";
        s3_signature_is_hidden: "https://s3.example/b/o?X-Amz-Credential=AK%2F1&X-Amz-Signature=abcd&X-Amz-Expires=60" => "https://s3.example/b/o?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED&X-Amz-Expires=60";
        token_parameter_is_hidden: "https://auth.io/token?service=x&access_token=zzz" => "https://auth.io/token?service=x&access_token=REDACTED";
        ipv6_host_with_user_info: "http://u:p@[::1]:5000/v2/" => "http://[::1]:5000/v2/";
    }
}
