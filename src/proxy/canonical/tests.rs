use super::*;
use proptest::prelude::*;

fn normalize_all() -> PathRules {
    PathRules {
        repeated_slashes: Ambiguity::Normalize,
        escaped_slashes: Ambiguity::Normalize,
        path_parameters: Ambiguity::Normalize,
    }
}

#[test]
fn every_spelling_of_a_guarded_path_becomes_that_path() {
    let rules = normalize_all();
    for raw in [
        "/admin/users",
        "/%61dmin/users",
        "/%61%64%6D%69%6E/users",
        "//admin/users",
        "/x/../admin/users",
        "/./admin/users",
        "/admin;x/users",
        "/admin%2fusers",
        "/admin%2Fusers",
        "/%5cadmin/users",
        "/\\admin/users",
        "/public/..;/admin/users",
        "/public/%2e%2e/admin/users",
        "/public/.%2E/admin/users",
        "/admin/./users",
        "/admin//users",
        "/../../admin/users",
        "/admin;jsessionid=1/users;x=y",
    ] {
        assert_eq!(
            canonical_path(raw, &rules).as_deref(),
            Ok("/admin/users"),
            "{raw}"
        );
    }
}

#[test]
fn the_defaults_refuse_what_backends_read_differently() {
    let rules = PathRules::default();
    assert_eq!(
        canonical_path("//admin/users", &rules).as_deref(),
        Ok("/admin/users")
    );
    assert_eq!(
        canonical_path("/%61dmin/x/../users", &rules).as_deref(),
        Ok("/admin/users")
    );
    for (raw, why) in [
        ("/admin%2fusers", Refusal::EscapedSlash),
        ("/%5Cadmin", Refusal::EscapedSlash),
        ("/a\\b", Refusal::EscapedSlash),
        ("/admin;x/users", Refusal::PathParameter),
        ("/public/..;/admin", Refusal::PathParameter),
        ("/a%00b", Refusal::ControlCharacter),
        ("/a%0d%0aSet-Cookie:x", Refusal::ControlCharacter),
        ("/a%7Fb", Refusal::ControlCharacter),
        ("/a%zzb", Refusal::InvalidEncoding),
        ("/a%2", Refusal::InvalidEncoding),
        ("/a%", Refusal::InvalidEncoding),
        ("*", Refusal::NotAbsolutePath),
        ("admin", Refusal::NotAbsolutePath),
    ] {
        assert_eq!(canonical_path(raw, &rules), Err(why), "{raw}");
    }
    let strict = PathRules {
        repeated_slashes: Ambiguity::Reject,
        ..rules
    };
    assert_eq!(
        canonical_path("/a//b", &strict),
        Err(Refusal::RepeatedSlashes)
    );
    assert_eq!(canonical_path("/a/b/", &strict).as_deref(), Ok("/a/b/"));
}

#[test]
fn kept_constructs_travel_in_one_spelling() {
    let keep = PathRules {
        repeated_slashes: Ambiguity::Keep,
        escaped_slashes: Ambiguity::Keep,
        path_parameters: Ambiguity::Keep,
    };
    assert_eq!(canonical_path("/a%2fb", &keep).as_deref(), Ok("/a%2Fb"));
    assert_eq!(canonical_path("/a\\b", &keep).as_deref(), Ok("/a%5Cb"));
    assert_eq!(canonical_path("/a//b", &keep).as_deref(), Ok("/a//b"));
    assert_eq!(canonical_path("/a;x/b", &keep).as_deref(), Ok("/a;x/b"));
}

#[test]
fn data_stays_data() {
    let rules = PathRules::default();
    // An escaped reserved character keeps its escape (upper case); an escaped percent
    // is not decoded twice.
    assert_eq!(canonical_path("/a%3bb", &rules).as_deref(), Ok("/a%3Bb"));
    assert_eq!(
        canonical_path("/%2561dmin", &rules).as_deref(),
        Ok("/%2561dmin")
    );
    assert_eq!(
        canonical_path("/caf%c3%a9", &rules).as_deref(),
        Ok("/caf%C3%A9")
    );
    assert_eq!(
        canonical_path("/a:b@c!$&'()*+,=", &rules).as_deref(),
        Ok("/a:b@c!$&'()*+,=")
    );
    assert_eq!(canonical_path("/a\"b", &rules).as_deref(), Ok("/a%22b"));
    // Escapes of `:`, `@` and the sub-delimiters other than `;` are decoded, as the
    // frameworks behind do before routing, so they meet the rules that name them.
    assert_eq!(
        canonical_path("/%40admin/v1/jobs%3arun", &rules).as_deref(),
        Ok("/@admin/v1/jobs:run")
    );
    assert_eq!(
        canonical_path("/%21%24%26%27%28%29%2A%2B%2C%3D", &rules).as_deref(),
        Ok("/!$&'()*+,=")
    );
    assert_eq!(canonical_path("/", &rules).as_deref(), Ok("/"));
    assert_eq!(canonical_path("/a/", &rules).as_deref(), Ok("/a/"));
    assert_eq!(canonical_path("/a/b/..", &rules).as_deref(), Ok("/a/"));
    assert_eq!(canonical_path("/a/.", &rules).as_deref(), Ok("/a/"));
    assert_eq!(canonical_path("/..", &rules).as_deref(), Ok("/"));
}

fn auth(uri: &str, hosts: &[&str], tls: bool) -> Result<Authority, Refusal> {
    let mut h = HeaderMap::new();
    for v in hosts {
        h.append(HOST, HeaderValue::from_str(v).unwrap());
    }
    authority(&uri.parse().unwrap(), &h, tls)
}

#[test]
fn one_authority_per_request() {
    let a = auth("/x", &["App.Example.COM.:8080"], false).unwrap();
    assert_eq!(
        (a.host.as_str(), a.port, a.header.as_str()),
        ("app.example.com", Some(8080), "app.example.com:8080")
    );
    let a = auth("/x", &["app.example.com:80"], false).unwrap();
    assert_eq!((a.port, a.header.as_str()), (None, "app.example.com"));
    let a = auth("/x", &["app.example.com:443"], true).unwrap();
    assert_eq!(a.header, "app.example.com");
    assert_eq!(
        auth("http://app.test/x", &["app.test:80"], false)
            .unwrap()
            .host,
        "app.test"
    );
    assert_eq!(
        auth("http://APP.test./x", &["app.test"], false)
            .unwrap()
            .host,
        "app.test"
    );
    assert_eq!(
        auth("https://h2.test/x", &[], true).unwrap().host,
        "h2.test"
    );
    assert_eq!(auth("/x", &["[::1]:9"], false).unwrap().header, "[::1]:9");
    for (uri, hosts, why) in [
        (
            "http://www.test/",
            &["adm.test"][..],
            Refusal::AuthorityMismatch,
        ),
        (
            "http://app.test:81/",
            &["app.test"][..],
            Refusal::AuthorityMismatch,
        ),
        ("/", &["a.test", "b.test"][..], Refusal::DuplicateHost),
        ("/", &["a.test", "a.test"][..], Refusal::DuplicateHost),
        ("/", &[][..], Refusal::MissingHost),
        ("/", &[""][..], Refusal::MissingHost),
        ("/", &["user@evil.test"][..], Refusal::InvalidHost),
        ("/", &["evil.test/x"][..], Refusal::InvalidHost),
        ("/", &["a.test:80:80"][..], Refusal::InvalidHost),
        ("/", &["a.test:99999"][..], Refusal::InvalidHost),
        ("/", &["a..test"][..], Refusal::InvalidHost),
        ("/", &["a.test:"][..], Refusal::InvalidHost),
        ("/", &["[zz]"][..], Refusal::InvalidHost),
        ("/", &["a test"][..], Refusal::InvalidHost),
    ] {
        assert_eq!(auth(uri, hosts, false), Err(why), "{uri} {hosts:?}");
    }
}

#[test]
fn arrival_removes_what_the_connection_names_and_what_no_client_may_send() {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("x-forwarded-for, host, x-amzn-trace-id"),
    );
    h.insert(HOST, HeaderValue::from_static("app.test"));
    h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
    h.insert("x-original-url", HeaderValue::from_static("/admin"));
    h.insert("X-Amzn-Oidc-Identity", HeaderValue::from_static("forged"));
    h.insert("x_amzn-oidc_data", HeaderValue::from_static("forged"));
    h.insert(
        "X-Amzn-Mtls-Clientcert-Subject",
        HeaderValue::from_static("CN=admin"),
    );
    h.insert("x_amzn_mtls_clientcert", HeaderValue::from_static("forged"));
    h.insert("x-kept", HeaderValue::from_static("1"));
    h.insert("x_kept_too", HeaderValue::from_static("1"));
    h.insert("x_original_url", HeaderValue::from_static("/admin"));
    h.insert("proxy", HeaderValue::from_static("http://evil.test"));
    let dropped: Vec<HeaderName> = DEFAULT_DROPPED_HEADERS
        .iter()
        .map(|n| HeaderName::from_static(n))
        .collect();
    let mut with_underscores = h.clone();
    clean_arrival(&mut h, &dropped, false);
    // `Connection` cannot name a forwarding header away: whether a trusted proxy's
    // X-Forwarded-For counts is the trusted-proxy rule's to decide (`set_forwarded`),
    // never the client's.
    let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
    assert_eq!(names, ["x-forwarded-for", "x-kept"]);
    clean_arrival(&mut with_underscores, &dropped, true);
    let mut names: Vec<&str> = with_underscores.keys().map(|k| k.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        ["x-forwarded-for", "x-kept", "x_kept_too"],
        "the same names in any spelling go"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// Whatever the bytes, the canonical path is a fixed point, has no dot segment,
    /// no escaped unreserved character and no control character, and a second pass
    /// changes nothing: what routes is what the backend gets.
    #[test]
    fn canonical_paths_are_fixed_points(raw in "/[a-zA-Z0-9%./;\\\\:@!$&'()*+,=~_-]{0,40}", hex in proptest::collection::vec(any::<u8>(), 0..4)) {
        let mut raw = raw;
        for b in hex {
            raw.push_str(&format!("%{b:02x}/"));
        }
        for rules in [PathRules::default(), normalize_all()] {
            if let Ok(path) = canonical_path(&raw, &rules) {
                prop_assert!(path.starts_with('/'));
                let again = canonical_path(&path, &rules);
                prop_assert_eq!(again.as_deref(), Ok(path.as_str()));
                for seg in path.split('/') {
                    prop_assert!(seg != "." && seg != "..", "{} from {}", path, raw);
                }
                prop_assert!(!path.contains("//"));
                prop_assert!(!path.contains('\\'));
                prop_assert!(!path.contains(';'));
                let lower = path.to_ascii_lowercase();
                for escaped in ["%2f", "%5c", "%2e", "%00", "%41", "%7e"] {
                    prop_assert!(!lower.contains(escaped), "{} from {}", path, raw);
                }
            }
        }
    }

    /// Every spelling of a path made of the characters rule paths may name (escaped or
    /// not, in either case of hex) has one canonical form: the plain one.
    #[test]
    fn every_spelling_of_a_rule_path_is_that_path(path in "(/[a-zA-Z0-9_.~!$&'()*+,=:@-]{1,8}){1,5}", mask in any::<u64>(), upper in any::<bool>()) {
        prop_assume!(!path.split('/').any(|s| s == "." || s == ".."));
        let spelt: String = path
            .bytes()
            .enumerate()
            .map(|(i, b)| {
                if b != b'/' && mask >> (i % 64) & 1 == 1 {
                    if upper { format!("%{b:02X}") } else { format!("%{b:02x}") }
                } else {
                    (b as char).to_string()
                }
            })
            .collect();
        prop_assert_eq!(canonical_path(&spelt, &PathRules::default()), Ok(path.clone()));
    }

    /// A backend that decodes once and resolves dot segments (most frameworks) reads
    /// the canonical path as the same path Portcullis routed.
    #[test]
    fn a_decoding_backend_sees_the_routed_path(raw in "/[a-z%./;\\\\]{0,30}") {
        if let Ok(path) = canonical_path(&raw, &normalize_all()) {
            prop_assert_eq!(lenient_backend(&raw), lenient_backend(&path));
        }
    }

    #[test]
    fn authorities_never_panic_and_agree_with_themselves(host in "[a-zA-Z0-9.:\\[\\]@_-]{0,30}") {
        if let Ok(v) = HeaderValue::from_str(&host) {
            let mut h = HeaderMap::new();
            h.insert(HOST, v);
            if let Ok(a) = authority(&"/".parse().unwrap(), &h, false) {
                let mut again = HeaderMap::new();
                again.insert(HOST, HeaderValue::from_str(&a.header).unwrap());
                prop_assert_eq!(authority(&"/".parse().unwrap(), &again, false), Ok(a));
            }
        }
    }
}

/// A lenient backend's view of a path: decode once (`\` as `/`), drop `;` parameters,
/// merge slashes, resolve dot segments.
fn lenient_backend(raw: &str) -> Option<String> {
    let mut bytes = Vec::new();
    let b = raw.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            bytes.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            bytes.push(b[i]);
            i += 1;
        }
    }
    lenient_backend_without_decoding(&String::from_utf8_lossy(&bytes))
}

fn lenient_backend_without_decoding(path: &str) -> Option<String> {
    let path = path.replace('\\', "/");
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        let seg = seg.split(';').next().unwrap_or_default();
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    Some(format!("/{}", out.join("/")))
}
