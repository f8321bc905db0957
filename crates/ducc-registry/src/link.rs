//! The `Link` header of paginated tag lists (RFC 8288), e.g.
//! `</v2/a/tags/list?last=x&n=10>; rel="next"`.

/// The target of the `rel="next"` link, if any.
pub(crate) fn next_link(header: &str) -> Option<String> {
    let mut rest = header.trim();
    while !rest.is_empty() {
        let after_open = rest.strip_prefix('<')?;
        let close = after_open.find('>')?;
        let target = &after_open[..close];
        let mut params = &after_open[close + 1..];
        // Parameters run to the next `,` that is outside quotes.
        let mut in_quotes = false;
        let mut end = params.len();
        for (i, c) in params.char_indices() {
            match c {
                '"' => in_quotes = !in_quotes,
                ',' if !in_quotes => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let this = &params[..end];
        params = &params[end..];
        let is_next = this.split(';').any(|param| {
            let Some((name, value)) = param.split_once('=') else {
                return false;
            };
            name.trim().eq_ignore_ascii_case("rel")
                && value
                    .trim()
                    .trim_matches('"')
                    .split_whitespace()
                    .any(|rel| rel.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return Some(target.to_owned());
        }
        rest = params.trim_start_matches(',').trim();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::next_link;

    macro_rules! link_cases {
        ($($name:ident: $header:expr => $expected:expr;)*) => {$(
            #[test]
            fn $name() {
                assert_eq!(next_link($header).as_deref(), $expected);
            }
        )*};
    }

    link_cases! {
        link_distribution_form: r#"</v2/a/b/tags/list?last=t10&n=10>; rel="next""# => Some("/v2/a/b/tags/list?last=t10&n=10");
        link_unquoted_rel: "</v2/x/tags/list?n=2&last=b>; rel=next" => Some("/v2/x/tags/list?n=2&last=b");
        link_next_after_prev: r#"</prev>; rel="prev", <https://r.io/v2/a/tags/list?last=z>; rel="next""# => Some("https://r.io/v2/a/tags/list?last=z");
        link_rel_list_with_next: r#"</n>; title="a,b"; rel="next last""# => Some("/n");
        link_without_next: r#"</prev>; rel="prev""# => None;
        link_malformed: "/v2/a/tags/list; rel=next" => None;
        link_empty: "" => None;
    }
}
