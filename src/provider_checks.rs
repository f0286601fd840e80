//! `portcullis diagnose`: checks an AuthRule against its provider from where
//! Portcullis runs (discovery and issuer, keys, endpoints, the client credentials,
//! clock skew), and starts a real login for each redirect URI the rule's logins send,
//! reading whether the provider shows its login page or refuses. Each check passes or
//! fails with the fix.

mod login_page;
pub mod refusals;

use std::time::Instant;

use crate::auth::credentials::BOGUS_CODE;
use crate::auth::id_token::allowed_algs;
use crate::auth::idp::{ClientAuth, Hop, IdpClient, IdpError, ProviderMetadata};
use crate::compile::{AuthPolicy, Snapshot};
use crate::diagnostics::ObjectRef;
use crate::model::{CALLBACK_PATH, TokenEndpointAuthMethod};
use refusals::Refused;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Warn,
    Fail,
    Info,
}

#[derive(Debug)]
pub struct Check {
    pub outcome: Outcome,
    pub name: &'static str,
    pub detail: String,
    pub fix: String,
    /// Set on checks that are the same for every rule of a provider (its clock): the
    /// key under which such a check is printed once.
    pub once: Option<String>,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let label = match self.outcome {
            Outcome::Pass => "PASS",
            Outcome::Warn => "WARN",
            Outcome::Fail => "FAIL",
            Outcome::Info => "INFO",
        };
        write!(f, "{label}  {:<13} {}", self.name, self.detail)?;
        if !self.fix.is_empty() {
            write!(f, "\n      fix: {}", self.fix)?;
        }
        Ok(())
    }
}

fn check(outcome: Outcome, name: &'static str, detail: String, fix: &str) -> Check {
    Check {
        outcome,
        name,
        detail,
        fix: fix.to_owned(),
        once: None,
    }
}

/// Clock skew beyond this breaks ID-token checks (Portcullis allows 60 s).
const SKEW_FAIL_SECS: i64 = 60;
const SKEW_WARN_SECS: i64 = 10;

/// The ports browsers reach the guarded hosts on: those of the plain-HTTP and HTTPS
/// addresses (a Service's, not the container's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    pub http: u16,
    pub https: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Self {
            http: 80,
            https: 443,
        }
    }
}

/// The redirect URIs logins of `rule` send, one per host and scheme browsers reach it
/// by: HTTPS for a host with a certificate whose plain-HTTP requests are redirected
/// there, plain HTTP for a host without one, both for a host with a certificate and no
/// redirect (a Gateway listener's routes: its protocol's only).
pub fn redirect_uris(snapshot: &Snapshot, rule: &ObjectRef, ports: Ports) -> Vec<String> {
    let mut uris = std::collections::BTreeSet::new();
    for route in &snapshot.routes.all {
        let Some(host) = &route.host else { continue };
        if host.starts_with("*.") || !route.guards.iter().any(|g| g.rule == *rule) {
            continue;
        }
        let secure = snapshot.certs.covers(host);
        let uri = |scheme: &str, port: u16, default: u16| {
            let port = if port == default {
                String::new()
            } else {
                format!(":{port}")
            };
            format!("{scheme}://{host}{port}{CALLBACK_PATH}")
        };
        // A Gateway listener's route is served on TLS connections only, or on plain
        // ones only.
        let listener = route.conditions.tls;
        if secure && listener != Some(false) {
            uris.insert(uri("https", ports.https, 443));
        }
        if !route.https_redirect && listener != Some(true) {
            uris.insert(uri("http", ports.http, 80));
        }
    }
    // HTTPS first: the form most logins send.
    let (mut https, http): (Vec<String>, Vec<String>) =
        uris.into_iter().partition(|u| u.starts_with("https:"));
    https.extend(http);
    https
}

/// Runs every check for `policy`, whose logins send `redirect_uris`.
pub async fn diagnose(
    idp: &IdpClient,
    policy: &AuthPolicy,
    redirect_uris: &[String],
) -> Vec<Check> {
    let mut checks = Vec::new();
    if let (false, Some(bearer)) = (policy.login, &policy.bearer) {
        bearer_keys(idp, policy, bearer, &mut checks).await;
        return checks;
    }
    let Some(meta) = discovery(idp, policy, "spec.oidc.issuer", &mut checks).await else {
        return checks;
    };
    keys(idp, &meta, &mut checks).await;
    let token_endpoint = policy
        .token_endpoint
        .clone()
        .unwrap_or_else(|| meta.token_endpoint.clone());
    let authorization = policy
        .authorization_endpoint
        .clone()
        .unwrap_or_else(|| meta.authorization_endpoint.clone());
    let mut refused = Vec::new();
    if redirect_uris.is_empty() {
        reachable(
            idp,
            Hop::Discovery,
            "authorization",
            &authorization,
            &mut checks,
        )
        .await;
    }
    for uri in redirect_uris {
        let (check, why) = login(idp, &authorization, policy, uri).await;
        refused.extend(why);
        checks.push(check);
    }
    if let Some(userinfo) = policy
        .user_info_endpoint
        .clone()
        .or(meta.userinfo_endpoint.clone())
    {
        reachable(idp, Hop::Userinfo, "userinfo", &userinfo, &mut checks).await;
    } else {
        checks.push(check(
            Outcome::Fail,
            "userinfo",
            "the provider has no userinfo endpoint".into(),
            "set spec.oidc.userInfoEndpoint",
        ));
    }
    let redirect_uri = redirect_uris
        .first()
        .cloned()
        .unwrap_or_else(|| format!("https://example.invalid{CALLBACK_PATH}"));
    let client_unknown = refused.contains(&Refused::Client);
    credentials(
        idp,
        policy,
        &token_endpoint,
        &redirect_uri,
        client_unknown,
        &mut checks,
    )
    .await;
    if redirect_uris.is_empty() {
        checks.push(check(
            Outcome::Info,
            "redirect URI",
            format!(
                "the rule guards no named host, so each login sends its own host's https://<host>{CALLBACK_PATH}: register it for client {} for every host name browsers use (the redirect hop of the flow record, /flows, shows the URI a login really sent)",
                policy.client_id
            ),
            "",
        ));
    }
    checks
}

/// A rule without logins: the keys its bearer tokens are checked with, from
/// `spec.bearer.jwksUri` or the issuer's discovery.
async fn bearer_keys(
    idp: &IdpClient,
    policy: &AuthPolicy,
    bearer: &crate::compile::bearer::BearerPolicy,
    checks: &mut Vec<Check>,
) {
    checks.push(check(
        Outcome::Info,
        "login",
        "the rule takes bearer tokens only (no spec.oidc): no login, client or redirect URI to check".into(),
        "",
    ));
    let meta = match &bearer.jwks_uri {
        Some(jwks_uri) => ProviderMetadata {
            issuer: bearer.issuer.clone(),
            authorization_endpoint: String::new(),
            token_endpoint: String::new(),
            userinfo_endpoint: None,
            jwks_uri: jwks_uri.clone(),
            end_session_endpoint: None,
            id_token_signing_alg_values_supported: None,
            authorization_response_iss_parameter_supported: false,
        },
        None => match discovery(idp, policy, "spec.bearer.issuer", checks).await {
            Some(meta) => meta,
            None => return,
        },
    };
    keys(idp, &meta, checks).await;
}

/// The login a browser would start with `redirect_uri`, and what the provider refused
/// when it did.
async fn login(
    idp: &IdpClient,
    endpoint: &str,
    policy: &AuthPolicy,
    redirect_uri: &str,
) -> (Check, Option<Refused>) {
    let Ok(uri) = url::Url::parse(redirect_uri) else {
        let fail = check(
            Outcome::Fail,
            "login",
            format!("{redirect_uri} is not a URL"),
            "check the host names of the routes the rule guards",
        );
        return (fail, None);
    };
    let started = Instant::now();
    let steps = match login_page::open(idp, endpoint, policy, &uri).await {
        Ok(steps) => steps,
        Err(e) => {
            let fail = check(
                Outcome::Fail,
                "login",
                format!("{endpoint}: {e}"),
                "check DNS and egress to the provider's authorization endpoint from where Portcullis runs",
            );
            return (fail, None);
        }
    };
    let asked = login_page::Asked {
        client_id: &policy.client_id,
        scope: &policy.scope,
    };
    let (mut verdict, refused) = login_page::verdict(&steps, asked, &uri);
    verdict.detail = format!("{} ({} ms)", verdict.detail, started.elapsed().as_millis());
    (verdict, refused)
}

/// The issuer's discovery document; `field` names where the rule sets the issuer.
async fn discovery(
    idp: &IdpClient,
    policy: &AuthPolicy,
    field: &str,
    checks: &mut Vec<Check>,
) -> Option<ProviderMetadata> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        policy.issuer.trim_end_matches('/')
    );
    let started = Instant::now();
    let answer = match idp.probe(Hop::Discovery, &url).await {
        Ok(a) => a,
        Err(e) => {
            checks.push(check(
                Outcome::Fail,
                "discovery",
                format!("{url} cannot be reached: {e}"),
                "check the issuer URL, DNS and egress from where Portcullis runs; for a private CA use --idp-ca-file",
            ));
            return None;
        }
    };
    let ms = started.elapsed().as_millis();
    let before = checks.len();
    clock(answer.date.as_deref(), checks);
    for c in &mut checks[before..] {
        c.once = Some(format!("clock {}", policy.issuer));
    }
    if !answer.status.is_success() {
        checks.push(check(
            Outcome::Fail,
            "discovery",
            format!("{url} answered {} ({ms} ms)", answer.status.as_u16()),
            &format!("{field} must be the issuer itself: <issuer>/.well-known/openid-configuration must exist"),
        ));
        return None;
    }
    let meta: ProviderMetadata = match serde_json::from_slice(&answer.body) {
        Ok(m) => m,
        Err(e) => {
            checks.push(check(
                Outcome::Fail,
                "discovery",
                format!("{url} is not a discovery document: {e}"),
                &format!("point {field} at the OpenID provider"),
            ));
            return None;
        }
    };
    if meta.issuer != policy.issuer {
        checks.push(check(
            Outcome::Fail,
            "issuer",
            format!(
                "the provider calls itself {:?}, the AuthRule says {:?}",
                meta.issuer, policy.issuer
            ),
            &format!(
                "set {field} to exactly {} (tokens carry it in iss)",
                meta.issuer
            ),
        ));
        return None;
    }
    checks.push(check(
        Outcome::Pass,
        "discovery",
        format!("{url} ({ms} ms), issuer matches"),
        "",
    ));
    Some(meta)
}

fn clock(date: Option<&str>, checks: &mut Vec<Check>) {
    let Some(theirs) = date.and_then(|d| jiff::fmt::rfc2822::parse(d).ok()) else {
        checks.push(check(
            Outcome::Warn,
            "clock",
            "the provider sent no readable Date header".into(),
            "compare clocks by hand; ID tokens allow 60 s of skew",
        ));
        return;
    };
    let skew = jiff::Timestamp::now().as_second() - theirs.timestamp().as_second();
    let (outcome, fix) = match skew.abs() {
        s if s > SKEW_FAIL_SECS => (
            Outcome::Fail,
            "synchronise this machine's clock (NTP); ID tokens will look expired or not yet valid",
        ),
        s if s > SKEW_WARN_SECS => (
            Outcome::Warn,
            "synchronise clocks (NTP) before the skew reaches 60 s",
        ),
        _ => (Outcome::Pass, ""),
    };
    checks.push(check(
        outcome,
        "clock",
        format!("this machine is {skew:+} s from the provider"),
        fix,
    ));
}

async fn keys(idp: &IdpClient, meta: &ProviderMetadata, checks: &mut Vec<Check>) {
    let algs = allowed_algs(meta.id_token_signing_alg_values_supported.as_deref());
    if algs.is_empty() {
        checks.push(check(
            Outcome::Fail,
            "algorithms",
            format!(
                "the provider signs ID tokens with {:?}",
                meta.id_token_signing_alg_values_supported
            ),
            "configure the client at the provider to sign ID tokens with RS256 or ES256",
        ));
    }
    let started = Instant::now();
    match idp.jwks(&meta.jwks_uri).await {
        Ok(jwks) if !jwks.keys.is_empty() => checks.push(check(
            Outcome::Pass,
            "keys",
            format!(
                "{} has {} key(s) ({} ms)",
                meta.jwks_uri,
                jwks.keys.len(),
                started.elapsed().as_millis()
            ),
            "",
        )),
        Ok(_) => checks.push(check(
            Outcome::Fail,
            "keys",
            format!("{} has no keys", meta.jwks_uri),
            "the provider must publish its signing keys",
        )),
        Err(e) => checks.push(check(
            Outcome::Fail,
            "keys",
            format!("{}: {e}", meta.jwks_uri),
            "check egress to the provider's jwks_uri",
        )),
    }
}

async fn reachable(
    idp: &IdpClient,
    hop: Hop,
    name: &'static str,
    url: &str,
    checks: &mut Vec<Check>,
) {
    let started = Instant::now();
    match idp.probe(hop, url).await {
        Ok(a) => checks.push(check(
            Outcome::Pass,
            name,
            format!(
                "{url} answers ({} in {} ms)",
                a.status.as_u16(),
                started.elapsed().as_millis()
            ),
            "",
        )),
        Err(e) => checks.push(check(
            Outcome::Fail,
            name,
            format!("{url}: {e}"),
            "check DNS and egress to the provider from where Portcullis runs",
        )),
    }
}

async fn credentials(
    idp: &IdpClient,
    policy: &AuthPolicy,
    token_endpoint: &str,
    redirect_uri: &str,
    client_unknown: bool,
    checks: &mut Vec<Check>,
) {
    let client = ClientAuth {
        client_id: &policy.client_id,
        client_secret: &policy.client_secret,
        method: policy.token_endpoint_auth_method,
    };
    let verifier = "diagnose".repeat(6);
    let started = Instant::now();
    let result = idp
        .redeem_code(token_endpoint, &client, BOGUS_CODE, redirect_uri, &verifier)
        .await;
    let ms = started.elapsed().as_millis();
    let id = &policy.client_id;
    checks.push(match result {
        Err(IdpError::InvalidGrant { .. }) => check(
            Outcome::Pass,
            "credentials",
            format!("{token_endpoint} accepted client {id} and refused only the test code ({ms} ms)"),
            "",
        ),
        Err(IdpError::Status { excerpt, status, .. }) if excerpt.contains("invalid_client") || status == 401 => {
            let refused = format!("{token_endpoint} refused client {id}: {status} {excerpt}");
            if client_unknown {
                check(
                    Outcome::Fail,
                    "credentials",
                    refused,
                    &format!("client `{id}` is unknown at the provider (the login check says so): correct spec.oidc.clientId first (client ids are case-sensitive); the secret can only be checked after that"),
                )
            } else {
                other_auth_method(idp, policy, token_endpoint, redirect_uri, &verifier, refused).await
            }
        }
        Err(e) => check(Outcome::Fail, "credentials", format!("{token_endpoint}: {e}"), "check the token endpoint and egress to it"),
        Ok(_) => check(Outcome::Warn, "credentials", "the provider redeemed a code it never issued".into(), "report this to the provider's operators"),
    });
}

/// A client refused at the token endpoint: the other way of sending the secret is
/// ruled out before the secret is blamed.
async fn other_auth_method(
    idp: &IdpClient,
    policy: &AuthPolicy,
    token_endpoint: &str,
    redirect_uri: &str,
    verifier: &str,
    refused: String,
) -> Check {
    let name = |m: TokenEndpointAuthMethod| match m {
        TokenEndpointAuthMethod::ClientSecretBasic => "client_secret_basic",
        TokenEndpointAuthMethod::ClientSecretPost => "client_secret_post",
    };
    let method = policy.token_endpoint_auth_method;
    let other = match method {
        TokenEndpointAuthMethod::ClientSecretBasic => TokenEndpointAuthMethod::ClientSecretPost,
        TokenEndpointAuthMethod::ClientSecretPost => TokenEndpointAuthMethod::ClientSecretBasic,
    };
    let retry = ClientAuth {
        client_id: &policy.client_id,
        client_secret: &policy.client_secret,
        method: other,
    };
    let with_other = idp
        .redeem_code(token_endpoint, &retry, BOGUS_CODE, redirect_uri, verifier)
        .await;
    match with_other {
        Err(IdpError::InvalidGrant { .. }) => check(
            Outcome::Fail,
            "credentials",
            format!(
                "{refused} with {} but accepted it with {}",
                name(method),
                name(other)
            ),
            &format!("set spec.oidc.tokenEndpointAuthMethod: {}", name(other)),
        ),
        _ => check(
            Outcome::Fail,
            "credentials",
            format!("{refused} (with either way of sending the secret)"),
            &format!(
                "check spec.oidc.clientId `{}` against the provider's registration first (client ids are case-sensitive), then update the Secret named by spec.oidc.clientSecretRef with the client's secret",
                policy.client_id
            ),
        ),
    }
}

/// Each AuthRule of the snapshot: its policy (None when it is broken or guards
/// nothing) and the hosts it guards.
pub fn rules_in(
    snapshot: &crate::compile::Snapshot,
) -> std::collections::BTreeMap<
    crate::diagnostics::ObjectRef,
    (Option<std::sync::Arc<AuthPolicy>>, Vec<String>),
> {
    snapshot
        .auth_rules
        .iter()
        .map(|(object, s)| (object.clone(), (s.policy.clone(), s.hosts.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{CompileOptions, compile};
    use crate::source::manifests::{add_document, parse_documents};
    use crate::store::Objects;

    fn ingress(name: &str, host: &str, tls: bool, annotations: &str) -> String {
        let tls = if tls {
            format!("  tls: [{{hosts: [{host}], secretName: {name}-tls}}]\n")
        } else {
            String::new()
        };
        format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: apps, annotations: {{{annotations}}}}}\nspec:\n  ingressClassName: portcullis\n{tls}  rules:\n  - host: {host}\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: svc, port: {{number: 80}}}}}}}}\n"
        )
    }

    fn tls_secret(name: &str, host: &str) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![host.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let indent = |s: String| {
            s.lines()
                .map(|l| format!("    {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        format!(
            "---\napiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\nmetadata: {{name: {name}, namespace: apps}}\nstringData:\n  tls.crt: |\n{}\n  tls.key: |\n{}\n",
            indent(cert.pem()),
            indent(key.serialize_pem())
        )
    }

    const RULE: &str = "---\napiVersion: portcullis.dev/v1alpha1\nkind: AuthRule\nmetadata: {name: sso, namespace: apps}\nspec:\n  targetRefs: [{name: plain}, {name: secure}, {name: both}]\n  oidc: {issuer: \"https://idp.test\", clientId: app, clientSecretRef: {name: idp}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: idp, namespace: apps}\nstringData: {client-secret: s}\n";

    #[test]
    fn each_host_gets_the_redirect_uris_browsers_reach_it_by() {
        let yaml = [
            ingress("plain", "plain.test", false, ""),
            ingress("secure", "secure.test", true, ""),
            tls_secret("secure-tls", "secure.test"),
            ingress(
                "both",
                "both.test",
                true,
                "\"portcullis.dev/ssl-redirect\": \"false\"",
            ),
            tls_secret("both-tls", "both.test"),
            RULE.to_owned(),
        ]
        .concat();
        let mut objects = Objects::default();
        for doc in parse_documents(&yaml).unwrap() {
            add_document(&mut objects, doc, &ObjectRef::new("File", "", "t.yaml"));
        }
        let compiled = compile(&objects, &CompileOptions::default());
        let rule = ObjectRef::new("AuthRule", "apps", "sso");
        assert_eq!(
            redirect_uris(&compiled.snapshot, &rule, Ports::default()),
            [
                "https://both.test/oauth2/idpresponse",
                "https://secure.test/oauth2/idpresponse",
                "http://both.test/oauth2/idpresponse",
                "http://plain.test/oauth2/idpresponse",
            ],
            "{:#?}",
            compiled.diagnostics
        );
        let ports = Ports {
            http: 8080,
            https: 8443,
        };
        assert_eq!(
            redirect_uris(&compiled.snapshot, &rule, ports)[0],
            "https://both.test:8443/oauth2/idpresponse"
        );
        let other = ObjectRef::new("AuthRule", "apps", "other");
        assert!(redirect_uris(&compiled.snapshot, &other, ports).is_empty());
    }
}
