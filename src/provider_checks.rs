//! `portcullis diagnose`: checks an AuthRule against its provider from where
//! Portcullis runs (discovery and issuer, keys, endpoints, the client credentials,
//! clock skew) and says what to register at the provider. Each check passes or fails
//! with the fix.

use std::time::Instant;

use crate::auth::credentials::BOGUS_CODE;
use crate::auth::id_token::allowed_algs;
use crate::auth::idp::{ClientAuth, Hop, IdpClient, IdpError, ProviderMetadata};
use crate::compile::AuthPolicy;
use crate::model::{CALLBACK_PATH, TokenEndpointAuthMethod};

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
    }
}

/// Clock skew beyond this breaks ID-token checks (Portcullis allows 60 s).
const SKEW_FAIL_SECS: i64 = 60;
const SKEW_WARN_SECS: i64 = 10;
/// Runs every check for `policy`, guarding `hosts`.
pub async fn diagnose(idp: &IdpClient, policy: &AuthPolicy, hosts: &[String]) -> Vec<Check> {
    let mut checks = Vec::new();
    let Some(meta) = discovery(idp, policy, &mut checks).await else {
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
    reachable(
        idp,
        Hop::Discovery,
        "authorization",
        &authorization,
        &mut checks,
    )
    .await;
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
    let redirect_uri = hosts
        .first()
        .map(|h| format!("https://{h}{CALLBACK_PATH}"))
        .unwrap_or_else(|| format!("https://example.invalid{CALLBACK_PATH}"));
    credentials(idp, policy, &token_endpoint, &redirect_uri, &mut checks).await;
    for host in hosts {
        checks.push(check(
            Outcome::Info,
            "redirect URI",
            format!(
                "register https://{host}{CALLBACK_PATH} for client {} (as browsers reach it on port 443; for another scheme or port register that form, e.g. http://{host}:8080{CALLBACK_PATH}: the redirect hop of the flow record, /flows, shows the URI a login really sent)",
                policy.client_id
            ),
            "",
        ));
    }
    checks
}

async fn discovery(
    idp: &IdpClient,
    policy: &AuthPolicy,
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
    clock(answer.date.as_deref(), checks);
    if !answer.status.is_success() {
        checks.push(check(
            Outcome::Fail,
            "discovery",
            format!("{url} answered {} ({ms} ms)", answer.status.as_u16()),
            "spec.oidc.issuer must be the issuer itself: <issuer>/.well-known/openid-configuration must exist",
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
                "point spec.oidc.issuer at the OpenID provider",
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
                "set spec.oidc.issuer to exactly {} (ID tokens carry it in iss)",
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
    checks.push(match result {
        Err(IdpError::InvalidGrant { .. }) => check(
            Outcome::Pass,
            "credentials",
            format!("{token_endpoint} accepted client {} and refused only the test code ({ms} ms)", policy.client_id),
            "",
        ),
        Err(IdpError::Status { excerpt, status, .. }) if excerpt.contains("invalid_client") || status == 401 => {
            // Rule out the other way of sending the secret before blaming the secret.
            let other = match policy.token_endpoint_auth_method {
                TokenEndpointAuthMethod::ClientSecretBasic => TokenEndpointAuthMethod::ClientSecretPost,
                TokenEndpointAuthMethod::ClientSecretPost => TokenEndpointAuthMethod::ClientSecretBasic,
            };
            let retry = ClientAuth { method: other, ..client };
            let with_other = idp
                .redeem_code(token_endpoint, &retry, BOGUS_CODE, redirect_uri, &verifier)
                .await;
            let name = |m: TokenEndpointAuthMethod| match m {
                TokenEndpointAuthMethod::ClientSecretBasic => "client_secret_basic",
                TokenEndpointAuthMethod::ClientSecretPost => "client_secret_post",
            };
            match with_other {
                Err(IdpError::InvalidGrant { .. }) => check(
                    Outcome::Fail,
                    "credentials",
                    format!("{token_endpoint} refused client {} with {} ({status} {excerpt}) but accepted it with {}", policy.client_id, name(policy.token_endpoint_auth_method), name(other)),
                    &format!("set spec.oidc.tokenEndpointAuthMethod: {}", name(other)),
                ),
                _ => check(
                    Outcome::Fail,
                    "credentials",
                    format!("{token_endpoint} refused client {}: {status} {excerpt} (with either way of sending the secret)", policy.client_id),
                    "the client secret or spec.oidc.clientId does not match the provider's registration; update the Secret named by spec.oidc.clientSecretRef",
                ),
            }
        }
        Err(e) => check(Outcome::Fail, "credentials", format!("{token_endpoint}: {e}"), "check the token endpoint and egress to it"),
        Ok(_) => check(Outcome::Warn, "credentials", "the provider redeemed a code it never issued".into(), "report this to the provider's operators"),
    });
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
