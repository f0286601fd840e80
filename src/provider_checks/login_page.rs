//! The login a browser would start, sent to the provider: the authorization request
//! with the rule's client id, one of the redirect URIs its logins send, its scope and
//! extra parameters, a fresh state and nonce, and a PKCE S256 challenge. The answer is
//! walked hop by hop (redirects, with the cookies the provider sets) until the
//! provider shows a page or sends the browser back; no credentials are ever entered.
//! A login page passes; an error page or an error redirect fails with the provider's
//! words and the fix.

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use url::Url;

use super::refusals::{self, Recognised, Refused};
use super::{Check, Outcome, check};
use crate::auth::idp::{IdpClient, IdpError};
use crate::auth::login::authorization_url;
use crate::compile::AuthPolicy;

/// Redirects followed before the walk stops: a login UI is one or two away.
const MAX_HOPS: usize = 6;
/// Cookies carried from hop to hop.
const MAX_COOKIES: usize = 32;

/// One answer of the provider.
#[derive(Debug)]
pub struct Step {
    pub url: Url,
    pub status: u16,
    /// Where it redirects, resolved against `url`.
    pub next: Option<Url>,
    pub html: String,
}

/// Sends the authorization request for `redirect_uri` and walks the answer.
pub async fn open(
    idp: &IdpClient,
    endpoint: &str,
    policy: &AuthPolicy,
    redirect_uri: &Url,
) -> Result<Vec<Step>, IdpError> {
    let invalid = |detail: String| IdpError::Invalid {
        hop: crate::auth::idp::Hop::Discovery,
        detail,
    };
    let verifier = random_token()?;
    let challenge = URL_SAFE_NO_PAD.encode(digest(&SHA256, verifier.as_bytes()));
    let start = authorization_url(
        endpoint,
        policy,
        redirect_uri.as_str(),
        &random_token()?,
        &random_token()?,
        &challenge,
    );
    let mut url = Url::parse(&start).map_err(|e| invalid(format!("{start}: {e}")))?;
    let mut jar: Vec<(String, String)> = Vec::new();
    let mut steps = Vec::new();
    for _ in 0..MAX_HOPS {
        let origin = url.origin().ascii_serialization();
        let cookie = cookie_header(&jar, &origin);
        let page = idp.browse(url.as_str(), cookie.as_deref()).await?;
        keep_cookies(&mut jar, &origin, &page.set_cookies);
        let next = page.location.as_deref().and_then(|l| url.join(l).ok());
        let stop = next
            .as_ref()
            .is_none_or(|n| is_callback(n, redirect_uri) || error_in_query(n).is_some());
        steps.push(Step {
            url: url.clone(),
            status: page.status.as_u16(),
            next: next.clone(),
            html: String::from_utf8_lossy(&page.body).into_owned(),
        });
        match next {
            Some(n) if !stop => url = n,
            _ => break,
        }
    }
    Ok(steps)
}

fn random_token() -> Result<String, IdpError> {
    let mut b = [0u8; 24];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| IdpError::Invalid {
            hop: crate::auth::idp::Hop::Discovery,
            detail: "the system random generator failed".into(),
        })?;
    Ok(URL_SAFE_NO_PAD.encode(b))
}

/// `name=value` pairs the provider set, by origin (paths are ignored: the walk is a
/// handful of GETs on one provider).
fn keep_cookies(jar: &mut Vec<(String, String)>, origin: &str, set_cookies: &[String]) {
    for set in set_cookies {
        let Ok(c) = cookie::Cookie::parse(set.as_str()) else {
            continue;
        };
        let pair = format!("{}={}", c.name(), c.value());
        let prefix = format!("{}=", c.name());
        jar.retain(|(o, p)| !(o == origin && p.starts_with(&prefix)));
        if jar.len() < MAX_COOKIES {
            jar.push((origin.to_owned(), pair));
        }
    }
}

fn cookie_header(jar: &[(String, String)], origin: &str) -> Option<String> {
    let pairs: Vec<&str> = jar
        .iter()
        .filter(|(o, _)| o == origin)
        .map(|(_, p)| p.as_str())
        .collect();
    (!pairs.is_empty()).then(|| pairs.join("; "))
}

/// Whether `url` is the redirect URI (the provider sending the browser back to us).
fn is_callback(url: &Url, redirect_uri: &Url) -> bool {
    url.origin() == redirect_uri.origin() && url.path() == redirect_uri.path()
}

/// The error a URL carries in its query: OAuth's `error` and `error_description`, or
/// Google's `authError` (base64 of a message that names the error).
fn error_in_query(url: &Url) -> Option<String> {
    let get = |k: &str| {
        url.query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.into_owned())
    };
    if let Some(error) = get("error") {
        return Some(match get("error_description") {
            Some(d) => format!("{error}: {d}"),
            None => error,
        });
    }
    let auth_error = get("authError")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth_error.trim_end_matches('='))
        .or_else(|_| URL_SAFE_NO_PAD.decode(auth_error.trim_end_matches('=')))
        .ok()?;
    let text: String = String::from_utf8_lossy(&bytes)
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { ' ' })
        .collect();
    Some(text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// What a login asked the provider for, as the advice names it.
#[derive(Clone, Copy)]
pub struct Asked<'a> {
    pub client_id: &'a str,
    pub scope: &'a str,
}

/// What the walk shows, for the rule's client and `redirect_uri`: the check, and what
/// the provider refused when it refused.
pub fn verdict(steps: &[Step], asked: Asked<'_>, redirect_uri: &Url) -> (Check, Option<Refused>) {
    let trail: Vec<String> = steps.iter().map(|s| s.status.to_string()).collect();
    let trail = trail.join(" → ");
    let Some(last) = steps.last() else {
        let none = check(
            Outcome::Warn,
            "login",
            format!("{redirect_uri}: no answer"),
            "",
        );
        return (none, None);
    };
    let refused = |r: Recognised, at: &Url| {
        let detail = format!(
            "{redirect_uri}: {} refused the login ({trail} at {}): {}",
            r.provider,
            without_query(at),
            r.words
        );
        let fix = fix(r.refused, asked, redirect_uri);
        (check(Outcome::Fail, "login", detail, &fix), Some(r.refused))
    };
    let Some(next) = &last.next else {
        return match page_verdict(last, &trail, asked, redirect_uri) {
            Ok(c) => (c, None),
            Err(r) => refused(r, &last.url),
        };
    };
    if let Some(error) = error_in_query(next) {
        let r = refusals::recognise(&error).unwrap_or(Recognised {
            provider: "the provider",
            refused: Refused::Request,
            words: error,
        });
        return refused(r, next);
    }
    let c = if is_callback(next, redirect_uri) {
        check(
            Outcome::Pass,
            "login",
            format!(
                "{redirect_uri}: the provider sent the browser straight back ({trail}): it had a session already"
            ),
            "",
        )
    } else {
        check(
            Outcome::Warn,
            "login",
            format!(
                "{redirect_uri}: the provider redirected {MAX_HOPS} times without showing a page (last to {})",
                without_query(next)
            ),
            &format!("open {} in a browser and see where it ends", steps[0].url),
        )
    };
    (c, None)
}

/// The verdict on a page the walk ended on, or what it refused.
fn page_verdict(
    last: &Step,
    trail: &str,
    asked: Asked<'_>,
    redirect_uri: &Url,
) -> Result<Check, Recognised> {
    let text = refusals::visible_text(&last.html);
    if let Some(r) = refusals::recognise(&text) {
        return Err(r);
    }
    let at = without_query(&last.url);
    let ok = (200..300).contains(&last.status);
    if ok && refusals::has_form(&last.html) {
        return Ok(check(
            Outcome::Pass,
            "login",
            format!("{redirect_uri}: the provider shows its login page ({trail}, a form at {at})"),
            "",
        ));
    }
    // Some providers put the error in a script that draws the page.
    if let Some(r) = refusals::recognise(&last.html) {
        return Err(r);
    }
    let excerpt: String = text.chars().take(200).collect();
    if ok {
        return Ok(check(
            Outcome::Warn,
            "login",
            format!(
                "{redirect_uri}: the provider answered {trail} with a page without a form at {at}: {excerpt:?}"
            ),
            "a login page drawn by script looks like this: open the URL in a browser to see it",
        ));
    }
    Ok(check(
        Outcome::Fail,
        "login",
        format!("{redirect_uri}: the provider answered {trail} at {at}: {excerpt:?}"),
        &format!(
            "the provider refused the authorization request for client `{}`; its page above says why",
            asked.client_id
        ),
    ))
}

fn without_query(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// The fix for what the provider refused, naming what the rule sent.
pub fn fix(refused: Refused, asked: Asked<'_>, redirect_uri: &Url) -> String {
    let client = asked.client_id;
    match refused {
        Refused::Client => format!(
            "client `{client}` is unknown at the provider; client ids are case-sensitive: set spec.oidc.clientId to the id the provider shows for this application, then check the client secret in the Secret named by spec.oidc.clientSecretRef"
        ),
        Refused::RedirectUri if redirect_uri.scheme() == "http" => format!(
            "`{redirect_uri}` is not registered for client `{client}`; register it or serve the host over HTTPS"
        ),
        Refused::RedirectUri => {
            format!("`{redirect_uri}` is not registered for client `{client}`; register it")
        }
        Refused::Scope => format!(
            "client `{client}` may not ask for scope {:?}: allow those scopes for it at the provider, or change spec.oidc.scope",
            asked.scope
        ),
        Refused::Request => format!(
            "the provider refused the request of client `{client}`: check spec.oidc.authenticationRequestExtraParams and that the client may use the authorization code flow with PKCE"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(url: &str, status: u16, next: Option<&str>, html: &str) -> Step {
        Step {
            url: Url::parse(url).unwrap(),
            status,
            next: next.map(|n| Url::parse(n).unwrap()),
            html: html.into(),
        }
    }

    fn policy(client_id: &str) -> Asked<'_> {
        Asked {
            client_id,
            scope: "openid email",
        }
    }

    const CALLBACK: &str = "http://strict.test/oauth2/idpresponse";

    #[test]
    fn a_login_form_passes_and_an_error_page_fails_with_the_providers_words() {
        let uri = Url::parse(CALLBACK).unwrap();
        let login = [
            step(
                "https://idp.test/auth?x=1",
                303,
                Some("https://idp.test/interaction/1"),
                "",
            ),
            step(
                "https://idp.test/interaction/1",
                200,
                None,
                "<form method=post><input name=login></form>",
            ),
        ];
        let (c, _) = verdict(&login, policy("web"), &uri);
        assert_eq!(c.outcome, Outcome::Pass, "{c}");
        assert!(c.detail.contains("303 → 200"), "{c}");

        let refused = [step(
            "https://idp.test/auth?x=1",
            400,
            None,
            "<pre><strong>error</strong>: invalid_client</pre><pre><strong>error_description</strong>: client is invalid</pre>",
        )];
        let (c, refused) = verdict(&refused, policy("Portcullis"), &uri);
        assert_eq!(refused, Some(Refused::Client));
        assert_eq!(c.outcome, Outcome::Fail);
        assert!(
            c.detail
                .contains("oidc-provider refused the login (400 at https://idp.test/auth)"),
            "{c}"
        );
        assert!(c.detail.contains("client is invalid"), "{c}");
        assert!(
            c.fix.starts_with(
                "client `Portcullis` is unknown at the provider; client ids are case-sensitive"
            ),
            "{c}"
        );
    }

    #[test]
    fn an_error_redirect_to_the_redirect_uri_fails_with_its_error() {
        let uri = Url::parse(CALLBACK).unwrap();
        let back = [step(
            "https://idp.test/auth?x=1",
            302,
            Some(
                "http://strict.test/oauth2/idpresponse?error=invalid_scope&error_description=scope+x+is+not+allowed&state=s",
            ),
            "",
        )];
        let (c, _) = verdict(&back, policy("web"), &uri);
        assert_eq!(c.outcome, Outcome::Fail);
        assert!(
            c.detail.contains("invalid_scope: scope x is not allowed"),
            "{c}"
        );
        assert!(
            c.fix.contains("may not ask for scope \"openid email\""),
            "{c}"
        );
    }

    #[test]
    fn redirect_uri_advice_mentions_https_only_for_plain_http() {
        let p = policy("x");
        let http = Url::parse(CALLBACK).unwrap();
        assert_eq!(
            fix(Refused::RedirectUri, p, &http),
            "`http://strict.test/oauth2/idpresponse` is not registered for client `x`; register it or serve the host over HTTPS"
        );
        let https = Url::parse("https://strict.test/oauth2/idpresponse").unwrap();
        assert!(!fix(Refused::RedirectUri, p, &https).contains("HTTPS"));
    }

    #[test]
    fn googles_error_url_names_the_error_in_base64() {
        let encoded = base64::engine::general_purpose::STANDARD
            .encode("\u{8}\u{1}redirect_uri_mismatch\u{12}x");
        let url = Url::parse(&format!(
            "https://accounts.google.com/signin/oauth/error?authError={}",
            url::form_urlencoded::byte_serialize(encoded.as_bytes()).collect::<String>()
        ))
        .unwrap();
        let error = error_in_query(&url).unwrap();
        assert_eq!(
            refusals::recognise(&error).unwrap().refused,
            Refused::RedirectUri
        );
    }

    #[test]
    fn cookies_go_back_to_their_origin_only() {
        let mut jar = Vec::new();
        keep_cookies(
            &mut jar,
            "https://idp.test",
            &["_interaction=abc; path=/interaction/1; httponly".into()],
        );
        keep_cookies(&mut jar, "https://idp.test", &["_interaction=def".into()]);
        assert_eq!(
            cookie_header(&jar, "https://idp.test").as_deref(),
            Some("_interaction=def")
        );
        assert_eq!(cookie_header(&jar, "https://other.test"), None);
    }
}
