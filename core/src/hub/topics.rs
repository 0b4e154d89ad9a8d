//! Topic selectors, as Mercure defines them: `*` matches every topic, a
//! plain string matches itself, and a URI template (RFC 6570) matches the
//! topics it expands to. Templates are matched for their simple forms:
//! `{var}` stands for one or more characters other than `/ ? #`, `{+var}`
//! for any characters, and `{/var}` for nothing or `/` and a segment.

/// Whether `selector` selects `topic`.
pub fn matches(selector: &str, topic: &str) -> bool {
    if selector == "*" || selector == topic {
        return true;
    }
    if !selector.contains('{') {
        return false;
    }
    template_matches(selector.as_bytes(), topic.as_bytes())
}

/// Whether any of `selectors` selects any of `topics`.
pub fn any_matches(selectors: &[String], topics: &[String]) -> bool {
    selectors
        .iter()
        .any(|s| topics.iter().any(|t| matches(s, t)))
}

fn template_matches(template: &[u8], topic: &[u8]) -> bool {
    match template.first() {
        None => topic.is_empty(),
        Some(b'{') => {
            let Some(close) = template.iter().position(|&b| b == b'}') else {
                return false;
            };
            let reserved = template.get(1) == Some(&b'+');
            let rest = &template[close + 1..];
            if template.get(1) == Some(&b'/') {
                // Nothing, or a slash and one segment.
                return template_matches(rest, topic)
                    || topic.first() == Some(&b'/')
                        && (2..=topic.len())
                            .take_while(|&n| !matches!(topic[n - 1], b'/' | b'?' | b'#'))
                            .any(|n| template_matches(rest, &topic[n..]));
            }
            // One or more characters, then the rest of the template.
            (1..=topic.len())
                .take_while(|&n| reserved || !matches!(topic[n - 1], b'/' | b'?' | b'#'))
                .any(|n| template_matches(rest, &topic[n..]))
        }
        Some(&c) => topic.first() == Some(&c) && template_matches(&template[1..], &topic[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn star_exact_and_templates() {
        assert!(matches("*", "https://example.com/books/1"));
        assert!(matches(
            "https://example.com/books/1",
            "https://example.com/books/1"
        ));
        assert!(!matches(
            "https://example.com/books/1",
            "https://example.com/books/12"
        ));
        assert!(matches(
            "https://example.com/books/{id}",
            "https://example.com/books/12"
        ));
        assert!(!matches(
            "https://example.com/books/{id}",
            "https://example.com/books/"
        ));
        assert!(!matches(
            "https://example.com/books/{id}",
            "https://example.com/books/1/x"
        ));
        assert!(matches(
            "https://example.com/{+rest}",
            "https://example.com/books/1/x"
        ));
        assert!(matches("silverstripe/{class}/{id}", "silverstripe/Page/7"));
        assert!(!matches("silverstripe/{class}/{id}", "silverstripe/Page"));
        assert!(!matches("https://example.com/{id", "https://example.com/7"));
        let subs = "/.well-known/mercure/subscriptions{/topic}{/subscriber}";
        assert!(matches(subs, "/.well-known/mercure/subscriptions"));
        assert!(matches(subs, "/.well-known/mercure/subscriptions/a%2Fb"));
        assert!(matches(
            subs,
            "/.well-known/mercure/subscriptions/a%2Fb/urn%3Auuid%3A1"
        ));
        assert!(!matches(subs, "/.well-known/mercure/subscriptions/a/b/c"));
    }
}
