//! `spec.session.cookieDomain`: one login for every host under a domain. The browser
//! sends the session cookie to every host under it, so the rule's namespace must own
//! them all: a route of another namespace there would hand that namespace's backend
//! the cookie. A rule that does not own its domain is refused (its routes answer 500)
//! rather than served with a cookie that leaks.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::RouteDraft;
use super::snapshot::{AuthPolicy, AuthRuleSummary, GuardPolicy};
use crate::diagnostics::{Diagnostic, ObjectRef};
use crate::model::{DEFAULT_COOKIE_NAME, SessionSpec, is_dns_name};

const FIELD: &str = "spec.session.cookieDomain";

/// `spec.session.cookieDomain` as browsers match it (lower case, no leading dot). A
/// public suffix is refused: every site under `com` or `github.io` would receive the
/// session; so is a domain on a rule without logins (`login` false), which keeps none.
pub fn checked(
    obj: &ObjectRef,
    session: &SessionSpec,
    login: bool,
    errors: &mut Vec<Diagnostic>,
) -> Option<String> {
    let given = session.cookie_domain.as_deref()?;
    let domain = given
        .strip_prefix('.')
        .unwrap_or(given)
        .to_ascii_lowercase();
    let problem = if !login {
        "is set on a rule without spec.oidc, which keeps no session"
    } else if !is_dns_name(&domain) {
        "is not a domain name (letters, digits, - and dots, no trailing dot)"
    } else if domain.split('.').count() < 2 || psl::domain(domain.as_bytes()).is_none() {
        "is a public suffix: every site under it would receive the session"
    } else {
        return Some(domain);
    };
    errors.push(Diagnostic::error(
        obj,
        FIELD,
        "InvalidCookieDomain",
        format!("cookie domain {given:?} {problem}"),
        "name a domain of your own that is a parent of every host the rule guards, e.g. example.com, or remove cookieDomain".into(),
    ));
    None
}

/// The default cookie name of a session shared under a domain: the same for every
/// rule that shares it (namespace, domain, issuer, client), and never the plain
/// default, which a host-only session of another rule under the domain may use.
pub fn shared_cookie_name(namespace: &str, domain: &str, issuer: &str, client_id: &str) -> String {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        [namespace, domain, issuer, client_id].join("\0").as_bytes(),
    );
    let suffix: String = digest.as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{DEFAULT_COOKIE_NAME}-{suffix}")
}

/// Whether `host` is `domain` or a name under it.
fn at_or_under(host: &str, domain: &str) -> bool {
    host == domain || host.strip_suffix(domain).is_some_and(|r| r.ends_with('.'))
}

/// Whether a route's host (exact, `*.suffix`, or none: every host) receives cookies
/// of `domain`.
fn receives(host: Option<&str>, domain: &str) -> bool {
    match host {
        None => true,
        Some(h) => match h.strip_prefix("*.") {
            // An HTTPRoute's wildcard (or a hostless route under a wildcard listener)
            // matches any number of labels, so the domain and every host under it are
            // reached whenever the domain lies under the suffix; an Ingress's matches one
            // label, but it is counted the same way: refusing is the safe side.
            Some(suffix) => at_or_under(suffix, domain) || at_or_under(domain, suffix),
            None => at_or_under(h, domain),
        },
    }
}

/// Whether every host a route of `host` serves is under `domain`.
fn inside(host: Option<&str>, domain: &str) -> bool {
    host.is_some_and(|h| at_or_under(h.strip_prefix("*.").unwrap_or(h), domain))
}

/// Why `rule` (of `namespace`) may not share sessions under `domain`, if it may not.
fn problem(rule: &ObjectRef, domain: &str, drafts: &[&mut RouteDraft]) -> Option<(String, String)> {
    let guarded = |d: &RouteDraft| d.guards.iter().any(|g| &g.rule == rule);
    if let Some(d) = drafts
        .iter()
        .find(|d| guarded(d) && !inside(d.host.as_deref(), domain))
    {
        let host = d
            .host
            .as_deref()
            .unwrap_or("every host (a route without a host)");
        return Some((
            format!(
                "the rule guards {host} ({}), which is not under {domain}",
                d.ingress
            ),
            format!(
                "set a cookieDomain that is a parent of every host the rule guards, give {} a host under {domain}, or remove cookieDomain",
                d.ingress
            ),
        ));
    }
    let other = drafts
        .iter()
        .find(|d| d.ingress.namespace != rule.namespace && receives(d.host.as_deref(), domain))?;
    let host = other
        .host
        .as_deref()
        .unwrap_or("every host (a route without a host)");
    Some((
        format!(
            "{} in namespace {} serves {host}, which receives cookies of {domain}: its backend would get this namespace's sessions",
            other.ingress, other.ingress.namespace
        ),
        format!(
            "use a cookieDomain only namespace {} serves, move {}'s host out of {domain}, or remove cookieDomain; then rotate the session keys, since sessions issued before reach that route while it exists",
            rule.namespace, other.ingress
        ),
    ))
}

/// Whether two policies open each other's sessions: the same namespace, domain,
/// issuer and client (the binding of a session under a cookie domain).
fn shares_login(a: &AuthPolicy, b: &AuthPolicy) -> bool {
    a.rule.namespace == b.rule.namespace
        && a.cookie_domain == b.cookie_domain
        && a.issuer == b.issuer
        && a.client_id == b.client_id
}

/// Rules whose session cookie of the same name reaches a host of `domain_rule`'s
/// domain without sharing its login: the browser holds two cookies of one name there,
/// and each rule's login overwrites or hides the other's.
fn name_clashes(
    domain_rule: &AuthPolicy,
    domain: &str,
    drafts: &[&mut RouteDraft],
) -> Option<Diagnostic> {
    let other = drafts
        .iter()
        .filter(|d| receives(d.host.as_deref(), domain))
        .flat_map(|d| &d.guards)
        .find_map(|g| match &g.policy {
            GuardPolicy::Oidc(p)
                if p.login
                    && p.cookie_name == domain_rule.cookie_name
                    && !shares_login(p, domain_rule) =>
            {
                Some(p.rule.clone())
            }
            _ => None,
        })?;
    Some(Diagnostic::warning(
        &domain_rule.rule,
        "spec.session.cookieName",
        "CookieNameConflict",
        format!("{other} also uses cookie {} on a host under {domain}, with another login; the two sessions overwrite each other", domain_rule.cookie_name),
        "give one of the rules another spec.session.cookieName, or leave cookieName unset under a cookieDomain".into(),
    ))
}

/// Refuses every rule with a cookie domain its namespace does not own: its guards
/// become `Broken` (500, fail closed) and the status and `check` name the route.
pub(super) fn refuse_unowned(
    drafts: &mut [&mut RouteDraft],
    summaries: &mut BTreeMap<ObjectRef, AuthRuleSummary>,
    diags: &mut Vec<Diagnostic>,
) {
    let mut domains: BTreeMap<ObjectRef, (String, Arc<AuthPolicy>)> = BTreeMap::new();
    for guard in drafts.iter().flat_map(|d| &d.guards) {
        if let GuardPolicy::Oidc(p) = &guard.policy
            && let Some(domain) = &p.cookie_domain
        {
            domains.insert(p.rule.clone(), (domain.clone(), p.clone()));
        }
    }
    let mut refused: BTreeMap<ObjectRef, String> = BTreeMap::new();
    for (rule, (domain, policy)) in &domains {
        diags.extend(name_clashes(policy, domain, drafts));
        let Some((message, fix)) = problem(rule, domain, drafts) else {
            continue;
        };
        diags.push(Diagnostic::error(
            rule,
            FIELD,
            "CookieDomainNotOwned",
            message.clone(),
            fix,
        ));
        if let Some(summary) = summaries.get_mut(rule) {
            summary.usable = false;
        }
        refused.insert(rule.clone(), format!("{rule}: {message}"));
    }
    for guard in drafts.iter_mut().flat_map(|d| d.guards.iter_mut()) {
        if let GuardPolicy::Oidc(p) = &guard.policy
            && let Some(message) = refused.get(&p.rule)
        {
            guard.policy = GuardPolicy::Broken(message.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_under_a_domain_and_those_that_receive_its_cookies() {
        for (host, domain, receives_it, inside_it) in [
            (Some("a.example.com"), "example.com", true, true),
            (Some("example.com"), "example.com", true, true),
            (Some("*.example.com"), "example.com", true, true),
            (Some("*.com"), "example.com", true, false),
            (Some("notexample.com"), "example.com", false, false),
            (Some("example.com.evil.net"), "example.com", false, false),
            (Some("a.example.org"), "example.com", false, false),
            (Some("*.a.example.com"), "example.com", true, true),
            // Wildcards above the domain, however many labels up, reach hosts under it.
            (Some("*.example.com"), "a.b.example.com", true, false),
            (Some("*.b.example.com"), "a.b.example.com", true, false),
            (Some("*.com"), "a.b.example.com", true, false),
            (Some("*.xample.com"), "a.b.example.com", false, false),
            (Some("*.c.example.com"), "a.b.example.com", false, false),
            (None, "example.com", true, false),
        ] {
            assert_eq!(receives(host, domain), receives_it, "{host:?}");
            assert_eq!(inside(host, domain), inside_it, "{host:?}");
        }
    }

    #[test]
    fn public_suffixes_and_non_names_are_refused() {
        let obj = ObjectRef::new("AuthRule", "apps", "sso");
        let check = |d: &str| {
            let session = SessionSpec {
                cookie_domain: Some(d.into()),
                ..SessionSpec::default()
            };
            let mut errors = Vec::new();
            let out = checked(&obj, &session, true, &mut errors);
            assert_eq!(out.is_none(), !errors.is_empty());
            if let Some(e) = errors.first() {
                assert_eq!(e.field, FIELD);
            }
            out
        };
        assert_eq!(check(".Example.COM").as_deref(), Some("example.com"));
        assert_eq!(
            check("apps.example.co.uk").as_deref(),
            Some("apps.example.co.uk")
        );
        let session = SessionSpec {
            cookie_domain: Some("example.com".into()),
            ..SessionSpec::default()
        };
        assert_eq!(checked(&obj, &session, false, &mut Vec::new()), None);
        for bad in [
            "com",
            "co.uk",
            "github.io",
            "localhost",
            "example.com.",
            "exa mple.com",
            "",
        ] {
            assert_eq!(check(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_shared_name_depends_on_all_four_and_is_not_the_default() {
        let a = shared_cookie_name("apps", "example.com", "https://idp", "web");
        assert_ne!(a, DEFAULT_COOKIE_NAME);
        assert_eq!(
            a,
            shared_cookie_name("apps", "example.com", "https://idp", "web")
        );
        assert_ne!(
            a,
            shared_cookie_name("other", "example.com", "https://idp", "web")
        );
        assert_ne!(
            a,
            shared_cookie_name("apps", "example.com", "https://idp", "api")
        );
    }
}
