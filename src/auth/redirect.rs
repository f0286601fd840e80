//! Where a browser may be sent after login or logout: a path on the same origin,
//! nothing that a browser could read as another host. Anything doubtful becomes `/`.

const MAX_TARGET_LEN: usize = 2048;

/// `raw` if it is a plain same-origin path (with optional query), else `/`.
pub fn safe_return_path(raw: &str) -> &str {
    if is_safe(raw) { raw } else { "/" }
}

fn is_safe(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    let lower = raw.to_ascii_lowercase();
    bytes.len() <= MAX_TARGET_LEN
        && bytes.first() == Some(&b'/')
        // `//host` and `/\host` are scheme-relative URLs to browsers.
        && !matches!(bytes.get(1), Some(b'/' | b'\\'))
        && !bytes.iter().any(|&b| b == b'\\' || b <= 0x20 || b >= 0x7f)
        // Encoded slashes, backslashes or controls right after the first slash are a
        // common way around the check above in servers that decode before redirecting.
        && !["/%2f", "/%5c", "/%09", "/%0a", "/%0d"].iter().any(|p| lower.starts_with(p))
        && !lower.contains("%00")
        && !raw.contains('#')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_pass() {
        for ok in ["/", "/app", "/app/x?y=1&z=%20", "/a@b", "/x/%2Fy"] {
            assert_eq!(safe_return_path(ok), ok);
        }
    }

    #[test]
    fn anything_that_leaves_the_origin_falls_back_to_root() {
        for bad in [
            "//evil.com",
            "/\\evil.com",
            "\\\\evil.com",
            "https://evil.com/",
            "evil.com",
            "/%2F%2Fevil.com",
            "/%5cevil.com",
            "/%09/evil.com",
            "/a\r\nSet-Cookie: x",
            "/a b",
            "/x#frag",
            "/x%00",
            "",
            "/ä",
        ] {
            assert_eq!(safe_return_path(bad), "/", "{bad:?}");
        }
        assert_eq!(safe_return_path(&format!("/{}", "a".repeat(3000))), "/");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]

        /// Whatever comes in, a browser resolving the answer against the app's origin
        /// (the WHATWG URL parser, as browsers do) stays on that origin.
        #[test]
        fn a_browser_never_leaves_the_origin(raw in "[/\\%a-z0-9.:@?#&=\t\r\n 2fFcC5]{0,24}") {
            let target = safe_return_path(&raw);
            let base = url::Url::parse("https://app.test/start").unwrap();
            let resolved = base.join(target).unwrap();
            proptest::prop_assert_eq!(resolved.origin(), base.origin(), "{:?} -> {:?}", raw, target);
            proptest::prop_assert!(target == raw || target == "/");
        }
    }
}
