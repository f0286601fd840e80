//! What providers' error pages and error redirects say, recognised by a small table of
//! patterns: what the provider refused (the client, the redirect URI, a scope, the
//! request), which provider said so, and its own words.

/// What a provider refused of an authorization request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// It does not know the client id.
    Client,
    /// The redirect URI is not registered for the client.
    RedirectUri,
    /// A scope the client may not ask for.
    Scope,
    /// Something else in the request: a parameter, the response type, PKCE.
    Request,
}

/// One provider's way of saying it refused something.
struct Pattern {
    provider: &'static str,
    /// Matched without regard to ASCII case.
    needle: &'static str,
    refused: Refused,
}

const fn p(provider: &'static str, needle: &'static str, refused: Refused) -> Pattern {
    Pattern {
        provider,
        needle,
        refused,
    }
}

/// Providers' own wording first, OAuth's error codes (RFC 6749 4.1.2.1) last, so the
/// most specific pattern wins.
const PATTERNS: &[Pattern] = &[
    p("Keycloak", "Client not found", Refused::Client),
    p(
        "Keycloak",
        "Invalid parameter: redirect_uri",
        Refused::RedirectUri,
    ),
    p("Keycloak", "Invalid scopes", Refused::Scope),
    p("Entra ID", "AADSTS700016", Refused::Client),
    p("Entra ID", "AADSTS50011", Refused::RedirectUri),
    p("Entra ID", "AADSTS70011", Refused::Scope),
    p("Entra ID", "AADSTS90014", Refused::Request),
    p("Entra ID", "AADSTS900144", Refused::Request),
    p("Entra ID", "AADSTS", Refused::Request),
    p(
        "Okta",
        "Invalid value for 'client_id' parameter",
        Refused::Client,
    ),
    p(
        "Okta",
        "'redirect_uri' parameter must be",
        Refused::RedirectUri,
    ),
    p(
        "Okta",
        "One or more scopes are not configured",
        Refused::Scope,
    ),
    p("Google", "The OAuth client was not found", Refused::Client),
    p("Google", "redirect_uri_mismatch", Refused::RedirectUri),
    p("Auth0", "Callback URL mismatch", Refused::RedirectUri),
    p("Auth0", "Unknown client", Refused::Client),
    p("Cognito", "redirect_mismatch", Refused::RedirectUri),
    p("Cognito", "Client does not exist", Refused::Client),
    p("Dex", "Unregistered redirect_uri", Refused::RedirectUri),
    p("Dex", "Invalid client_id", Refused::Client),
    p(
        "oidc-provider",
        "invalid_redirect_uri",
        Refused::RedirectUri,
    ),
    p("oidc-provider", "client is invalid", Refused::Client),
    p("the provider", "invalid_client", Refused::Client),
    p("the provider", "invalid_scope", Refused::Scope),
    p("the provider", "unauthorized_client", Refused::Request),
    p(
        "the provider",
        "unsupported_response_type",
        Refused::Request,
    ),
    p("the provider", "invalid_request", Refused::Request),
];

/// A refusal found in a page or a URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recognised {
    pub provider: &'static str,
    pub refused: Refused,
    /// The provider's words around what matched.
    pub words: String,
}

/// The first pattern of the table found in `text`, with the words around it.
pub fn recognise(text: &str) -> Option<Recognised> {
    let folded = text.to_ascii_lowercase();
    PATTERNS.iter().find_map(|pattern| {
        let at = folded.find(&pattern.needle.to_ascii_lowercase())?;
        Some(Recognised {
            provider: pattern.provider,
            refused: pattern.refused,
            words: around(text, at, pattern.needle.len()),
        })
    })
}

/// Characters kept before and after a match.
const BEFORE: usize = 60;
const AFTER: usize = 200;

/// The text around `text[at..at + len]`, cut between words.
fn around(text: &str, at: usize, len: usize) -> String {
    let mut start = at.saturating_sub(BEFORE);
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    if start > 0 {
        start += text[start..at].find(' ').map_or(0, |space| space + 1);
    }
    let mut end = (at + len + AFTER).min(text.len());
    while !text.is_char_boundary(end) {
        end += 1;
    }
    if end < text.len() {
        end = text[at + len..end]
            .rfind(' ')
            .map_or(end, |space| at + len + space);
    }
    format!(
        "{}{}{}",
        if start > 0 { "…" } else { "" },
        text[start..end].trim(),
        if end < text.len() { "…" } else { "" }
    )
}

/// The text a person sees on a page: tags, scripts and styles left out, the common
/// entities decoded, whitespace collapsed.
pub fn visible_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len().min(8192));
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let tag = &rest[open..];
        let name = tag_name(tag);
        if !INLINE.contains(&name.as_str()) {
            out.push(' ');
        }
        // Whatever a head, script or style holds is not shown.
        let skipped = ["head", "script", "style"].contains(&name.as_str());
        rest = match skipped {
            true => {
                let close = format!("</{name}");
                let folded = tag.to_ascii_lowercase();
                folded
                    .find(&close)
                    .and_then(|end| tag[end..].find('>').map(|gt| &tag[end + gt + 1..]))
                    .unwrap_or("")
            }
            false => tag.find('>').map_or("", |gt| &tag[gt + 1..]),
        };
    }
    out.push_str(rest);
    let decoded = [
        ("&lt;", "<"),
        ("&gt;", ">"),
        ("&quot;", "\""),
        ("&#39;", "'"),
        ("&#x27;", "'"),
        ("&apos;", "'"),
        ("&nbsp;", " "),
        ("&amp;", "&"),
    ]
    .iter()
    .fold(out, |text, (entity, c)| text.replace(entity, c));
    decoded.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Elements inside a line of text: they do not separate words.
const INLINE: [&str; 9] = ["a", "b", "i", "em", "strong", "span", "code", "small", "u"];

/// The element name of `tag` (from its `<`), lower case; empty for `<!doctype>` and
/// comments.
fn tag_name(tag: &str) -> String {
    tag.trim_start_matches(['<', '/'])
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase()
}

/// Whether a page has a form a person fills in (a login page has one).
pub fn has_form(html: &str) -> bool {
    html.to_ascii_lowercase().contains("<form")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_providers_wording_is_recognised_with_its_words() {
        let cases = [
            (
                "<h1>We are sorry...</h1><p>Client not found.</p>",
                "Keycloak",
                Refused::Client,
            ),
            (
                "<p id=\"kc-error-message\">Invalid parameter: redirect_uri</p>",
                "Keycloak",
                Refused::RedirectUri,
            ),
            (
                "AADSTS700016: Application with identifier 'Portcullis' was not found in the directory 'Contoso'.",
                "Entra ID",
                Refused::Client,
            ),
            (
                "AADSTS50011: The redirect URI 'http://strict.test/oauth2/idpresponse' specified in the request does not match the redirect URIs configured for the application.",
                "Entra ID",
                Refused::RedirectUri,
            ),
            (
                "AADSTS90014: The required field 'client_id' is missing.",
                "Entra ID",
                Refused::Request,
            ),
            (
                "400 Bad Request: The 'redirect_uri' parameter must be a Login redirect URI in the client app settings",
                "Okta",
                Refused::RedirectUri,
            ),
            (
                "Error 400: redirect_uri_mismatch You can't sign in to this app",
                "Google",
                Refused::RedirectUri,
            ),
            (
                "Error 401: invalid_client The OAuth client was not found.",
                "Google",
                Refused::Client,
            ),
            (
                "Callback URL mismatch. The provided redirect_uri is not in the list of allowed callback URLs.",
                "Auth0",
                Refused::RedirectUri,
            ),
            ("error=redirect_mismatch", "Cognito", Refused::RedirectUri),
            (
                "Unregistered redirect_uri (\"http://strict.test/oauth2/idpresponse\").",
                "Dex",
                Refused::RedirectUri,
            ),
            (
                "Invalid client_id (\"Portcullis\").",
                "Dex",
                Refused::Client,
            ),
            (
                "error: invalid_redirect_uri error_description: redirect_uri did not match any of the client's registered redirect_uris",
                "oidc-provider",
                Refused::RedirectUri,
            ),
            (
                "error: invalid_client error_description: client is invalid",
                "oidc-provider",
                Refused::Client,
            ),
            ("error=invalid_scope", "the provider", Refused::Scope),
        ];
        for (text, provider, refused) in cases {
            let found = recognise(text).unwrap_or_else(|| panic!("nothing in {text:?}"));
            assert_eq!(
                (found.provider, found.refused),
                (provider, refused),
                "{text}"
            );
        }
        assert_eq!(recognise("<form><input name=login></form>"), None);
    }

    #[test]
    fn the_words_are_the_text_around_the_match() {
        let long = format!("{} Client not found. {}", "a".repeat(100), "b".repeat(300));
        let words = recognise(&long).unwrap().words;
        assert!(words.starts_with('…') && words.ends_with('…'), "{words}");
        assert!(words.contains("Client not found."), "{words}");
        assert_eq!(
            recognise("é Client not found é").unwrap().words,
            "é Client not found é"
        );
    }

    #[test]
    fn visible_text_leaves_out_tags_scripts_and_styles() {
        let html = "<html><head><title>t</title><style>h1{x:1}</style></head>\
                    <body><header>top</header><script>var s = \"AADSTS1\";</script><h1>oops!</h1><pre><strong>error</strong>: invalid_client</pre>\
                    <p>the client&#39;s &amp; more</p></body></html>";
        assert_eq!(
            visible_text(html),
            "top oops! error: invalid_client the client's & more"
        );
        assert_eq!(visible_text("<SCRIPT>x</SCRIPT>y"), "y");
        assert_eq!(visible_text("a <b"), "a");
        assert!(has_form("<FORM method=post>"));
    }
}
