//! `application/x-www-form-urlencoded` for queries and form bodies: the relying
//! party's callback and token requests, and the development provider.

/// Percent-encodes everything but RFC 3986 unreserved characters (space as `%20`).
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `a=1&b=2` (a query string or a form body) as decoded pairs, the first value of a
/// repeated name kept; a piece without `=` is a name with an empty value.
pub fn form_pairs(s: &str) -> std::collections::HashMap<String, String> {
    let mut pairs = std::collections::HashMap::new();
    for (k, v) in form_urlencoded::parse(s.as_bytes()) {
        pairs
            .entry(k.into_owned())
            .or_insert_with(|| v.into_owned());
    }
    pairs
}

/// The first name among `names` that `s` carries more than once: a callback whose
/// `state` or `code` is given twice is read differently by different parsers.
pub fn repeated_param<'n>(s: &str, names: &[&'n str]) -> Option<&'n str> {
    names.iter().copied().find(|name| {
        form_urlencoded::parse(s.as_bytes())
            .filter(|(k, _)| k == name)
            .count()
            > 1
    })
}

/// Decodes one `application/x-www-form-urlencoded` component (`+` is a space; a
/// malformed `%` escape stays as it is).
pub fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding_keeps_only_unreserved_characters() {
        assert_eq!(form_encode("openid email"), "openid%20email");
        assert_eq!(form_encode("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(form_encode("ä/?&="), "%C3%A4%2F%3F%26%3D");
    }

    #[test]
    fn form_decoding_reverses_encoding() {
        for s in ["openid email", "a-b_c.d~e", "ä/?&=", "100%"] {
            assert_eq!(form_decode(&form_encode(s)), s);
        }
        assert_eq!(form_decode("a+b%2Bc%zz%4"), "a b+c%zz%4");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]

        /// Encoding then decoding gives the text back, and decoding never panics.
        #[test]
        fn form_encoding_round_trips(s in "\\PC{0,32}", junk in "[%+&=a-f0-9]{0,16}") {
            proptest::prop_assert_eq!(form_decode(&form_encode(&s)), s.clone());
            let _ = form_pairs(&junk);
            let pairs = form_pairs(&format!("state={}&code=c", form_encode(&s)));
            proptest::prop_assert_eq!(pairs.get("state"), Some(&s));
        }
    }

    #[test]
    fn repeated_names_are_found() {
        assert_eq!(
            repeated_param("state=a&code=c&state=b", &["state", "code"]),
            Some("state")
        );
        assert_eq!(repeated_param("state=a&code=c", &["state", "code"]), None);
        assert_eq!(form_pairs("a=1&a=2")["a"], "1", "the first one counts");
    }
}
