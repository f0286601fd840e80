//! Ingresses annotated for the AWS Load Balancer Controller work as they do on EKS, and
//! every annotation of ALB's that controls access is honoured or closes the routes:
//!
//! - `auth-type: oidc` with `auth-idp-oidc` (and its Secret of `clientID` and
//!   `clientSecret`), or `auth-type: cognito` with `auth-idp-cognito` (and a Secret
//!   named by `portcullis.dev/cognito-client-secret`), `auth-scope`,
//!   `auth-session-cookie`, `auth-session-timeout`, `auth-on-unauthenticated-request`
//!   and `auth-authentication-request-extra-params` become the AuthRule spec they mean;
//! - `jwt-validation` becomes that spec's bearer check, or on its own a guard that
//!   takes bearer tokens only (the audiences from `portcullis.dev/jwt-audiences`);
//! - `inbound-cidrs` becomes the routes' source allow-list;
//! - `mutual-authentication` becomes the hosts' client-certificate setting (`mtls`);
//! - `scheme: internal` (ALB's default), WAF, Shield and security groups close the
//!   routes unless `portcullis.dev/accept-alb-differences` (or `--accept-alb-differences`)
//!   names them;
//! - how the Ingress's rules are read and ordered: `use-regex-path-match`,
//!   `group.order`, `listen-ports`, `ssl-redirect` (the rules' own `actions.*`,
//!   `conditions.*` and `transforms.*` are read in `alb_actions`, `alb_conditions` and
//!   `alb_transforms`);
//! - annotations about AWS's load balancer itself are reported with what takes their
//!   place.
//!
//! An explicit AuthRule targeting the Ingress wins over the auth annotations. Other
//! controllers' annotations that Portcullis does not read are reported, never ignored
//! in silence.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::networking::v1::Ingress;
use serde::Deserialize;

use super::backends::Index;
use super::bearer::BearerPolicy;
use super::snapshot::{Closed, SourceAllowList};
use crate::diagnostics::{Diagnostic, ObjectRef};
use crate::model::{
    AdditionalClaim, AuthRuleSpec, BearerSpec, LogoutSpec, OidcSpec, OnUnauthenticatedRequest,
    SecretKeyRef, SessionSpec, TargetRef,
};

pub const PREFIX: &str = "alb.ingress.kubernetes.io/";
/// The ALB access-control annotations (by name, without the prefix) whose difference
/// the operator accepts on this Ingress, comma separated.
pub const ACCEPT_DIFFERENCES_ANNOTATION: &str = "portcullis.dev/accept-alb-differences";
/// The audiences a `jwt-validation` token may name (comma separated), or `*` for any.
pub const JWT_AUDIENCES_ANNOTATION: &str = "portcullis.dev/jwt-audiences";
/// The Secret (key `clientSecret`) holding the Cognito app client's secret.
pub const COGNITO_SECRET_ANNOTATION: &str = "portcullis.dev/cognito-client-secret";

const READ: &[&str] = &[
    "auth-type",
    "auth-idp-oidc",
    "auth-idp-cognito",
    "auth-scope",
    "auth-session-cookie",
    "auth-session-timeout",
    "auth-on-unauthenticated-request",
    "auth-authentication-request-extra-params",
    "jwt-validation",
    "inbound-cidrs",
    "scheme",
    "mutual-authentication",
    "group.name",
    "group.order",
    "use-regex-path-match",
    "ssl-redirect",
    "listen-ports",
    "backend-protocol",
    "backend-protocol-version",
];
/// Annotations read by the name after this prefix (`actions.<name>`).
const READ_PREFIXES: &[&str] = &["actions.", "conditions.", "transforms."];
/// The settings of the load balancer itself (AWS's controller merges them
/// "Exclusive" in an IngressGroup): set on one Ingress of a group, they hold for every
/// Ingress of the group, which shares that load balancer.
const LOAD_BALANCER_LEVEL: &[&str] = &[
    "ssl-redirect",
    "scheme",
    "inbound-cidrs",
    "wafv2-acl-arn",
    "wafv2-acl-name",
    "waf-acl-id",
    "shield-advanced-protection",
    "security-groups",
    "security-group-prefix-lists",
    "frontend-nlb-security-groups",
    "mutual-authentication",
];
/// Access-control annotations Portcullis cannot honour: what each one asks of ALB, and
/// what takes its place in front of Portcullis. Each closes the Ingress's routes until
/// it is removed or its difference accepted.
const NOT_HONOURED: &[(&str, &str, &str)] = &[
    (
        "scheme",
        "an internal load balancer, unreachable from the internet",
        "serve the app from a Portcullis reachable only from the private network",
    ),
    (
        "wafv2-acl-arn",
        "an AWS WAFv2 web ACL in front of the app",
        "put the web ACL (or another WAF) in front of Portcullis",
    ),
    (
        "wafv2-acl-name",
        "an AWS WAFv2 web ACL (named) in front of the app",
        "put the web ACL (or another WAF) in front of Portcullis",
    ),
    (
        "frontend-nlb-security-groups",
        "security groups on the Network Load Balancer in front of ALB",
        "list the allowed sources in alb.ingress.kubernetes.io/inbound-cidrs, or keep the security groups on the load balancer in front of Portcullis",
    ),
    (
        "waf-acl-id",
        "an AWS WAF Classic web ACL in front of the app",
        "put a WAF in front of Portcullis",
    ),
    (
        "shield-advanced-protection",
        "AWS Shield Advanced on the load balancer",
        "protect the load balancer in front of Portcullis with Shield Advanced",
    ),
    (
        "security-groups",
        "security groups that decide who may connect",
        "list the allowed sources in alb.ingress.kubernetes.io/inbound-cidrs, or keep the security groups on the load balancer in front of Portcullis",
    ),
    (
        "security-group-prefix-lists",
        "managed prefix lists that decide who may connect",
        "list the allowed sources in alb.ingress.kubernetes.io/inbound-cidrs, or keep the prefix lists on the load balancer in front of Portcullis",
    ),
    (
        "mutual-authentication",
        "client certificates (mTLS) checked by the load balancer",
        "check client certificates in front of Portcullis",
    ),
];
/// Prefixes of other ingress controllers' annotations.
const FOREIGN: &[&str] = &[
    "nginx.ingress.kubernetes.io/",
    "traefik.ingress.kubernetes.io/",
    "haproxy.org/",
    "konghq.com/",
    "projectcontour.io/",
];

/// What `auth-idp-oidc` holds (AWS LBC's JSON).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IdpOidc {
    issuer: String,
    #[serde(default)]
    authorization_endpoint: Option<String>,
    #[serde(default)]
    token_endpoint: Option<String>,
    #[serde(default)]
    user_info_endpoint: Option<String>,
    secret_name: String,
    #[serde(default)]
    authentication_request_extra_params: BTreeMap<String, String>,
}

/// What `auth-idp-cognito` holds (AWS LBC's JSON).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdpCognito {
    #[serde(rename = "userPoolARN")]
    user_pool_arn: String,
    #[serde(rename = "userPoolClientID")]
    user_pool_client_id: String,
    #[serde(rename = "userPoolDomain")]
    user_pool_domain: String,
    #[serde(default, rename = "authenticationRequestExtraParams")]
    authentication_request_extra_params: BTreeMap<String, String>,
}

/// What `jwt-validation` holds (AWS LBC's JSON).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JwtValidation {
    jwks_endpoint: String,
    issuer: String,
    #[serde(default)]
    additional_claims: Vec<AdditionalClaim>,
}

/// The field of a problem, as the ALB annotation it came from.
pub fn annotation_field(name: &str) -> String {
    format!("metadata.annotations[{PREFIX}{name}]")
}

/// The field of a problem, as an annotation named in full.
fn key_field(key: &str) -> String {
    format!("metadata.annotations[{key}]")
}

/// What an Ingress's auth annotations ask for (made once per Ingress per compile, so
/// the spec is not boxed).
#[allow(clippy::large_enum_variant)]
pub enum Asked {
    /// No login and no bearer tokens.
    Nothing,
    /// A login (`auth-type: oidc` or `cognito`), with bearer tokens beside it when
    /// `jwt-validation` is set too.
    Login(Box<AnnotatedSpec>),
    /// `jwt-validation` alone: bearer tokens only.
    Bearer(BearerPolicy),
    /// Something was asked that cannot be set up (reported): the routes close.
    Broken,
}

/// The AuthRule spec the annotations mean, and how to read its problems back.
pub struct AnnotatedSpec {
    pub spec: AuthRuleSpec,
    /// The login comes from `auth-idp-cognito` (its secret from the Secret named by
    /// `portcullis.dev/cognito-client-secret`).
    pub cognito: bool,
    /// `portcullis.dev/jwt-audiences: *`: any audience, as ALB.
    pub any_audience: bool,
}

/// What the auth annotations of an Ingress ask for, with the client id read from the
/// Secret. Problems go to `diags`.
pub fn asked(ingress: &Ingress, index: &Index, diags: &mut Vec<Diagnostic>) -> Asked {
    let Some(annotations) = ingress.metadata.annotations.as_ref() else {
        return Asked::Nothing;
    };
    let object = super::ingress_ref(ingress);
    let before = diags.len();
    let bearer = jwt_validation(annotations, &object, diags);
    let jwt_broken = diags.len() > before;
    let login = login_spec(ingress, annotations, index, diags);
    match (login, bearer) {
        (Login::Broken, _) => Asked::Broken,
        _ if jwt_broken => Asked::Broken,
        (Login::None, None) => Asked::Nothing,
        (Login::None, Some((spec, any_audience))) => {
            let mut errors = Vec::new();
            match super::bearer::compile(&spec, &object, &mut errors) {
                Some(mut policy) if errors.is_empty() => {
                    policy.any_audience = any_audience;
                    Asked::Bearer(policy)
                }
                _ => {
                    diags.extend(errors.into_iter().map(|d| move_to_annotations(d, false)));
                    Asked::Broken
                }
            }
        }
        (Login::Spec(mut spec, cognito), bearer) => {
            let any_audience = bearer.as_ref().is_some_and(|(_, any)| *any);
            spec.bearer = bearer.map(|(b, _)| b);
            Asked::Login(Box::new(AnnotatedSpec {
                spec: *spec,
                cognito,
                any_audience,
            }))
        }
    }
}

/// `jwt-validation` as the AuthRule's `spec.bearer`, with its audiences from
/// `portcullis.dev/jwt-audiences` (`true`: any audience). `None` when not set or
/// broken (reported).
fn jwt_validation(
    annotations: &BTreeMap<String, String>,
    object: &ObjectRef,
    diags: &mut Vec<Diagnostic>,
) -> Option<(BearerSpec, bool)> {
    let value = annotations.get(&format!("{PREFIX}jwt-validation"))?;
    let mut bad = |field: String, message: String, fix: String| {
        diags.push(Diagnostic::error(
            object,
            &field,
            "InvalidAnnotation",
            message,
            fix,
        ));
    };
    let jwt: JwtValidation = match serde_json::from_str(value) {
        Ok(v) => v,
        Err(e) => {
            bad(
                annotation_field("jwt-validation"),
                format!("not the JSON AWS Load Balancer Controller reads: {e}; the Ingress's routes answer 500 until it is fixed"),
                r#"{"jwksEndpoint":"https://.../jwks","issuer":"https://...","additionalClaims":[{"name":"scope","format":"space-separated-values","values":["api:read"]}]}"#.into(),
            );
            return None;
        }
    };
    let audiences: Vec<String> = annotations
        .get(JWT_AUDIENCES_ANNOTATION)
        .map(String::as_str)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    let any_audience = audiences == ["*"];
    if audiences.is_empty() {
        bad(
            key_field(JWT_AUDIENCES_ANNOTATION),
            "jwt-validation checks no audience at ALB, so any token its issuer signs for any API would pass; Portcullis needs the audiences this Ingress's API accepts (the Ingress's routes answer 500 until they are named)".into(),
            format!("annotate {JWT_AUDIENCES_ANNOTATION}: <the API's identifier, as in the tokens' aud>; or `*` to check no audience as ALB does, with an additionalClaims entry (e.g. client_id or scope) that only this API's clients hold"),
        );
        return None;
    }
    if any_audience && jwt.additional_claims.is_empty() {
        bad(
            key_field(JWT_AUDIENCES_ANNOTATION),
            "`*` checks no audience, and jwt-validation lists no additionalClaims: every token the issuer signs, for any client or API, would pass".into(),
            "add an additionalClaims entry that only this API's clients hold (client_id, scope), or name the audiences".into(),
        );
        return None;
    }
    if audiences.iter().any(|a| a == "*") && !any_audience {
        bad(
            key_field(JWT_AUDIENCES_ANNOTATION),
            "`*` stands alone: it means any audience".into(),
            "either list audiences, or write `*` alone".into(),
        );
        return None;
    }
    Some((
        BearerSpec {
            issuer: jwt.issuer,
            jwks_uri: Some(jwt.jwks_endpoint),
            // Validated by the bearer compiler as any list; `*` is read as any audience.
            audiences,
            additional_claims: jwt.additional_claims,
        },
        any_audience,
    ))
}

#[allow(clippy::large_enum_variant)]
enum Login {
    None,
    /// The spec, and whether it comes from Cognito.
    Spec(Box<AuthRuleSpec>, bool),
    Broken,
}

fn login_spec(
    ingress: &Ingress,
    annotations: &BTreeMap<String, String>,
    index: &Index,
    diags: &mut Vec<Diagnostic>,
) -> Login {
    let object = super::ingress_ref(ingress);
    match login_from(&object, annotations, index) {
        Ok(None) => Login::None,
        Ok(Some((spec, cognito))) => Login::Spec(Box::new(spec), cognito),
        Err(problem) => {
            diags.push(problem);
            Login::Broken
        }
    }
}

/// The spec and whether it comes from Cognito, none when the annotations ask for no
/// login, or the one problem that breaks it.
type LoginFrom = Result<Option<(AuthRuleSpec, bool)>, Diagnostic>;

fn login_from(
    object: &ObjectRef,
    annotations: &BTreeMap<String, String>,
    index: &Index,
) -> LoginFrom {
    let get = |k: &str| annotations.get(&format!("{PREFIX}{k}")).map(String::as_str);
    let cognito = match get("auth-type") {
        Some("oidc") => false,
        Some("cognito") => true,
        None | Some("none") => return Ok(None),
        Some(other) => {
            return Err(Diagnostic::error(
                object,
                &annotation_field("auth-type"),
                "UnsupportedAnnotation",
                format!(
                    "auth-type {other:?} is not supported; the Ingress's routes answer 500 until it is fixed"
                ),
                "use auth-type: oidc, cognito or none, or an AuthRule".into(),
            ));
        }
    };
    let (mut oidc, mut extra) = if cognito {
        cognito_login(object, annotations)?
    } else {
        oidc_login(object, annotations, index)?
    };
    let on_unauthenticated =
        on_unauthenticated_request(object, get("auth-on-unauthenticated-request"))?;
    let timeout = session_timeout(object, get("auth-session-timeout"))?;
    add_extra_params(
        object,
        get("auth-authentication-request-extra-params"),
        &mut extra,
    )?;
    oidc.scope = get("auth-scope").map(str::to_owned);
    oidc.authentication_request_extra_params = extra;
    Ok(Some((
        AuthRuleSpec {
            target_refs: vec![TargetRef {
                section_name: None,
                group: "networking.k8s.io".into(),
                kind: "Ingress".into(),
                name: object.name.clone(),
            }],
            paths: Vec::new(),
            oidc: Some(oidc),
            session: SessionSpec {
                cookie_name: get("auth-session-cookie").map(str::to_owned),
                store: Default::default(),
                timeout,
                cookie_domain: None,
            },
            on_unauthenticated_request: on_unauthenticated,
            logout: LogoutSpec::default(),
            cors: Default::default(),
            authorization: None,
            bearer: None,
            identity_headers: Default::default(),
            claim_headers: Default::default(),
        },
        cognito,
    )))
}

fn invalid_annotation(object: &ObjectRef, name: &str, message: String, fix: &str) -> Diagnostic {
    Diagnostic::error(
        object,
        &annotation_field(name),
        "InvalidAnnotation",
        message,
        fix.into(),
    )
}

/// The provider and its extra request parameters.
type Provider = (OidcSpec, BTreeMap<String, String>);

fn cognito_login(
    object: &ObjectRef,
    annotations: &BTreeMap<String, String>,
) -> Result<Provider, Diagnostic> {
    let Some(idp) = annotations.get(&format!("{PREFIX}auth-idp-cognito")) else {
        return Err(invalid_annotation(
            object,
            "auth-idp-cognito",
            "auth-type is cognito but auth-idp-cognito is missing".into(),
            r#"add {"userPoolARN":"arn:aws:cognito-idp:<region>:<account>:userpool/<pool id>","userPoolClientID":"<app client id>","userPoolDomain":"<domain prefix>"}"#,
        ));
    };
    let idp: IdpCognito = serde_json::from_str(idp).map_err(|e| {
        invalid_annotation(
            object,
            "auth-idp-cognito",
            format!("not the JSON AWS Load Balancer Controller reads: {e}"),
            r#"{"userPoolARN":"arn:aws:cognito-idp:<region>:<account>:userpool/<pool id>","userPoolClientID":"<app client id>","userPoolDomain":"<domain prefix>"}"#,
        )
    })?;
    let Some(secret_name) = annotations
        .get(COGNITO_SECRET_ANNOTATION)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
    else {
        let namespace = &object.namespace;
        return Err(Diagnostic::error(
            object,
            &key_field(COGNITO_SECRET_ANNOTATION),
            "InvalidAnnotation",
            "auth-type is cognito, and ALB reads the app client's secret from Cognito, which Portcullis cannot; the Ingress's routes answer 500 until a Secret holds it".into(),
            format!("kubectl -n {namespace} create secret generic <name> --from-literal=clientSecret=<the app client's secret>, and annotate {COGNITO_SECRET_ANNOTATION}: <name>"),
        ));
    };
    match cognito_oidc(&idp, secret_name) {
        Ok(oidc) => Ok((oidc, idp.authentication_request_extra_params)),
        Err(message) => Err(invalid_annotation(
            object,
            "auth-idp-cognito",
            message,
            "userPoolARN as arn:aws:cognito-idp:<region>:<account>:userpool/<region>_<id>, userPoolDomain as the domain prefix (or the pool's custom domain)",
        )),
    }
}

fn oidc_login(
    object: &ObjectRef,
    annotations: &BTreeMap<String, String>,
    index: &Index,
) -> Result<Provider, Diagnostic> {
    let Some(idp) = annotations.get(&format!("{PREFIX}auth-idp-oidc")) else {
        return Err(invalid_annotation(
            object,
            "auth-idp-oidc",
            "auth-type is oidc but auth-idp-oidc is missing".into(),
            r#"add {"issuer":"https://...","secretName":"<Secret with clientID and clientSecret>"}"#,
        ));
    };
    let idp: IdpOidc = serde_json::from_str(idp).map_err(|e| {
        invalid_annotation(
            object,
            "auth-idp-oidc",
            format!("not the JSON AWS Load Balancer Controller reads: {e}"),
            r#"{"issuer":"https://...","authorizationEndpoint":"...","tokenEndpoint":"...","userInfoEndpoint":"...","secretName":"..."}"#,
        )
    })?;
    let namespace = &object.namespace;
    let client_id = index
        .secret(namespace, &idp.secret_name)
        .and_then(|s| s.data.as_ref()?.get("clientID").map(|v| v.0.clone()))
        .and_then(|v| String::from_utf8(v).ok())
        .map(|v| v.trim().to_owned());
    let Some(client_id) = client_id.filter(|c| !c.is_empty()) else {
        return Err(Diagnostic::error(
                object,
                &annotation_field("auth-idp-oidc"),
                "SecretNotFound",
                format!("Secret {namespace}/{} with key clientID not found", idp.secret_name),
                format!("kubectl -n {namespace} create secret generic {} --from-literal=clientID=<id> --from-literal=clientSecret=<secret>", idp.secret_name),
            )
            .of_reference());
    };
    let oidc = OidcSpec {
        issuer: idp.issuer,
        authorization_endpoint: idp.authorization_endpoint,
        token_endpoint: idp.token_endpoint,
        user_info_endpoint: idp.user_info_endpoint,
        client_id,
        client_secret_ref: Some(SecretKeyRef {
            name: idp.secret_name,
            key: "clientSecret".into(),
        }),
        scope: None,
        authentication_request_extra_params: BTreeMap::new(),
        token_endpoint_auth_method: Default::default(),
        client_key_ref: None,
        service_account_token_audience: None,
        resource: Vec::new(),
    };
    Ok((oidc, idp.authentication_request_extra_params))
}

fn on_unauthenticated_request(
    object: &ObjectRef,
    value: Option<&str>,
) -> Result<OnUnauthenticatedRequest, Diagnostic> {
    match value {
        None | Some("authenticate") => Ok(OnUnauthenticatedRequest::Authenticate),
        Some("deny") => Ok(OnUnauthenticatedRequest::Deny),
        Some("allow") => Ok(OnUnauthenticatedRequest::Allow),
        Some(other) => Err(invalid_annotation(
            object,
            "auth-on-unauthenticated-request",
            format!("{other:?} is not authenticate, deny or allow"),
            "use authenticate, deny or allow",
        )),
    }
}

fn session_timeout(object: &ObjectRef, value: Option<&str>) -> Result<Option<i64>, Diagnostic> {
    match value.map(str::parse::<i64>) {
        None => Ok(None),
        Some(Ok(t)) => Ok(Some(t)),
        Some(Err(_)) => Err(invalid_annotation(
            object,
            "auth-session-timeout",
            "not a number of seconds".into(),
            "e.g. 86400",
        )),
    }
}

/// `auth-authentication-request-extra-params` (key=value, comma separated) over the
/// provider's own.
fn add_extra_params(
    object: &ObjectRef,
    value: Option<&str>,
    extra: &mut BTreeMap<String, String>,
) -> Result<(), Diagnostic> {
    for pair in value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(invalid_annotation(
                object,
                "auth-authentication-request-extra-params",
                format!("{pair:?} is not key=value"),
                "e.g. prompt=login,display=page",
            ));
        };
        extra.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    Ok(())
}

/// A Cognito user pool as the OpenID provider it is: the issuer from the pool's ARN,
/// the endpoints from its domain, the client id from the annotation and the secret
/// from the named Secret.
fn cognito_oidc(idp: &IdpCognito, secret_name: String) -> Result<OidcSpec, String> {
    let arn = idp.user_pool_arn.trim();
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let label = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    let (region, pool) = match parts.as_slice() {
        ["arn", "aws", "cognito-idp", region, _account, resource] if label(region) => {
            match resource.strip_prefix("userpool/") {
                Some(pool)
                    if pool.strip_prefix(&format!("{region}_")).is_some_and(|id| {
                        !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric())
                    }) =>
                {
                    (*region, pool)
                }
                _ => {
                    return Err(format!(
                        "userPoolARN {arn:?} does not name a user pool (userpool/<region>_<id>)"
                    ));
                }
            }
        }
        _ => {
            return Err(format!(
                "userPoolARN {arn:?} is not a Cognito user pool ARN of the aws partition"
            ));
        }
    };
    let domain = idp.user_pool_domain.trim().to_ascii_lowercase();
    // A prefix is one label; a custom domain is a whole name.
    let host = if label(&domain) {
        format!("{domain}.auth.{region}.amazoncognito.com")
    } else if domain.contains('.') && crate::model::is_dns_name(&domain) {
        domain
    } else {
        return Err(format!(
            "userPoolDomain {:?} is neither a domain prefix nor a domain name",
            idp.user_pool_domain
        ));
    };
    let client_id = idp.user_pool_client_id.trim();
    if client_id.is_empty() || !client_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!(
            "userPoolClientID {:?} is not an app client id",
            idp.user_pool_client_id
        ));
    }
    let endpoint = |path: &str| Some(format!("https://{host}/oauth2/{path}"));
    Ok(OidcSpec {
        issuer: format!("https://cognito-idp.{region}.amazonaws.com/{pool}"),
        authorization_endpoint: endpoint("authorize"),
        token_endpoint: endpoint("token"),
        user_info_endpoint: endpoint("userInfo"),
        client_id: client_id.to_owned(),
        client_secret_ref: Some(SecretKeyRef {
            name: secret_name,
            key: "clientSecret".into(),
        }),
        scope: None,
        authentication_request_extra_params: BTreeMap::new(),
        token_endpoint_auth_method: Default::default(),
        client_key_ref: None,
        service_account_token_audience: None,
        resource: Vec::new(),
    })
}

/// Who may reach an Ingress's routes, whether they are closed, and how its paths are
/// read and ordered.
#[derive(Default)]
pub struct IngressAccess {
    pub sources: Option<Arc<SourceAllowList>>,
    pub closed: Option<Arc<Closed>>,
    /// `use-regex-path-match: "true"`: `ImplementationSpecific` paths are regular
    /// expressions.
    pub regex_paths: bool,
    /// `group.order` (-1000 to 1000, default 0): where the Ingress's ALB path patterns
    /// come among those of other Ingresses.
    pub group_order: i32,
    /// `ssl-redirect`: plain-HTTP requests go to HTTPS on this port.
    pub ssl_redirect: Option<u16>,
    /// `listen-ports` with one protocol: only on HTTPS (`true`) or plain HTTP.
    pub listener: Option<bool>,
    /// The client certificates the Ingress's hosts ask for (`mutual-authentication`,
    /// or `portcullis.dev/mutual-authentication`); `None`: off, or malformed (closed).
    pub mutual_authentication: Option<super::mtls::Setting>,
}

/// A load-balancer-level annotation as an IngressGroup holds it: the one value its
/// members set, or several (AWS's controller refuses to build such a group).
enum GroupValue {
    One(String),
    Conflict(Vec<String>),
}

/// The load-balancer-level access annotations of each IngressGroup (by
/// `group.name`, cluster-wide as AWS's controller reads it), from all its members.
#[derive(Default)]
pub struct Groups(std::collections::HashMap<String, BTreeMap<String, GroupValue>>);

fn group_name(ingress: &Ingress) -> Option<&str> {
    let name = ingress
        .metadata
        .annotations
        .as_ref()?
        .get(&format!("{PREFIX}group.name"))?
        .trim();
    (!name.is_empty()).then_some(name)
}

impl Groups {
    pub fn of(ingresses: &[&Ingress]) -> Self {
        let mut groups = Self::default();
        for ingress in ingresses {
            let (Some(group), Some(annotations)) =
                (group_name(ingress), ingress.metadata.annotations.as_ref())
            else {
                continue;
            };
            let merged = groups.0.entry(group.to_owned()).or_default();
            for name in LOAD_BALANCER_LEVEL {
                let Some(value) = annotations.get(&format!("{PREFIX}{name}")) else {
                    continue;
                };
                let value = value.trim().to_owned();
                match merged.get_mut(*name) {
                    None => {
                        merged.insert((*name).to_owned(), GroupValue::One(value));
                    }
                    Some(GroupValue::One(v)) if *v == value => {}
                    Some(GroupValue::One(v)) => {
                        let first = std::mem::take(v);
                        merged.insert((*name).to_owned(), GroupValue::Conflict(vec![first, value]));
                    }
                    Some(GroupValue::Conflict(values)) => {
                        if !values.contains(&value) {
                            values.push(value);
                        }
                    }
                }
            }
        }
        groups
    }
}

/// The access-control annotations that are not about login: `inbound-cidrs` as a
/// source allow-list; `mutual-authentication` as the hosts' client certificates;
/// `scheme`, WAF, Shield and security groups close the routes unless their difference is accepted. A malformed value closes them
/// too. In an IngressGroup, the group's load-balancer-level annotations count as the
/// Ingress's own; members that disagree on one close their routes.
pub fn access_for(
    ingress: &Ingress,
    groups: &Groups,
    options: &super::CompileOptions,
    diags: &mut Vec<Diagnostic>,
) -> IngressAccess {
    let Some(own) = ingress.metadata.annotations.as_ref() else {
        return IngressAccess::default();
    };
    let object = super::ingress_ref(ingress);
    let (annotations, conflicts) = with_group_annotations(ingress, own, groups);
    let accepted = accepted_differences(&annotations, options, &object, diags);
    let mut problems = AccessProblems {
        object: &object,
        accepted,
        diags,
        found: Vec::new(),
    };
    for (name, message) in conflicts {
        problems.malformed(
            &name,
            message,
            format!("set {name} on one Ingress of the group only, or to the same value on each"),
        );
    }
    let get = |k: &str| annotations.get(&format!("{PREFIX}{k}")).map(|v| v.trim());
    let sources = get("inbound-cidrs").and_then(|list| source_allow_list(list, &mut problems));
    // ALB's default scheme is internal: an Ingress written for ALB that names none
    // was never reachable from the internet.
    let written_for_alb = annotations.keys().any(|k| k.starts_with(PREFIX));
    check_scheme(get("scheme"), written_for_alb, &mut problems);
    for name in [
        "wafv2-acl-arn",
        "wafv2-acl-name",
        "waf-acl-id",
        "security-groups",
        "security-group-prefix-lists",
        "frontend-nlb-security-groups",
    ] {
        if let Some(value) = get(name).filter(|v| !v.is_empty()) {
            problems.not_honoured(name, value);
        }
    }
    check_shield(get("shield-advanced-protection"), &mut problems);
    let mutual_authentication = mutual_authentication(
        get("mutual-authentication")
            .filter(|_| !problems.accepted.contains("mutual-authentication")),
        annotations.get(super::mtls::ANNOTATION).map(|v| v.trim()),
        ingress,
        &mut problems,
    );
    let regex_paths = regex_path_match(get("use-regex-path-match"), &mut problems);
    let group_order = group_order(get("group.order"), &mut problems);
    let ssl_redirect = get("ssl-redirect").and_then(|v| ssl_redirect(v, &mut problems));
    let listener = get("listen-ports").and_then(|v| listen_ports(v, &mut problems));
    check_backend_protocol(
        get("backend-protocol"),
        get("backend-protocol-version"),
        &mut problems,
    );
    IngressAccess {
        sources,
        closed: problems.closed(),
        regex_paths,
        group_order,
        ssl_redirect,
        listener,
        mutual_authentication,
    }
}

/// `listen-ports`: the protocols of the listeners the Ingress's rules are on (its
/// ports are Portcullis's own listeners'). `Some(true)`: HTTPS only; `Some(false)`:
/// HTTP only. A value AWS's controller refuses closes the routes: the rules could be
/// served on a listener the Ingress never asked for.
fn listen_ports(value: &str, problems: &mut AccessProblems) -> Option<bool> {
    const FIX: &str =
        r#"a JSON list of one protocol and port each, e.g. [{"HTTP": 80}, {"HTTPS": 443}]"#;
    let listeners: Vec<BTreeMap<String, u16>> = match serde_json::from_str(value) {
        Ok(l) => l,
        Err(e) => {
            let message = format!("not the JSON AWS Load Balancer Controller reads: {e}");
            problems.malformed("listen-ports", message, FIX.into());
            return None;
        }
    };
    let (mut http, mut https) = (false, false);
    let mut other_ports = Vec::new();
    for listener in &listeners {
        let [(protocol, port)] = listener.iter().collect::<Vec<_>>()[..] else {
            problems.malformed(
                "listen-ports",
                "each entry names one protocol and its port".into(),
                FIX.into(),
            );
            return None;
        };
        let usual = match protocol.as_str() {
            "HTTP" => {
                http = true;
                80
            }
            "HTTPS" => {
                https = true;
                443
            }
            other => {
                let message = format!("protocol {other:?} is neither HTTP nor HTTPS");
                problems.malformed("listen-ports", message, FIX.into());
                return None;
            }
        };
        if *port == 0 {
            problems.malformed("listen-ports", "port 0 is not a port".into(), FIX.into());
            return None;
        }
        if *port != usual {
            other_ports.push(*port);
        }
    }
    if !other_ports.is_empty() {
        problems.diags.push(Diagnostic::warning(
            problems.object,
            &annotation_field("listen-ports"),
            "AnnotationNotHonoured",
            format!("ports {other_ports:?} are not opened: the rules are served on Portcullis's own HTTP and HTTPS listeners (--http, --https and the chart's Service ports)"),
            "set the chart's service ports to the ones clients use, or list 80 and 443".into(),
        ));
    }
    match (http, https) {
        (true, false) => Some(false),
        (false, true) => Some(true),
        (true, true) => None,
        (false, false) => {
            problems.malformed(
                "listen-ports",
                "the list names no listener".into(),
                FIX.into(),
            );
            None
        }
    }
}

/// `backend-protocol` and `backend-protocol-version` on the Ingress: honoured per
/// backend (`backend_protocol`, where the Service's own values win); a value AWS's
/// controller would refuse closes the routes, since the pods could then be spoken to
/// in a way nobody asked for.
fn check_backend_protocol(
    protocol: Option<&str>,
    version: Option<&str>,
    problems: &mut AccessProblems,
) {
    use super::backend_protocol::{tls_asked, version_asked};
    if let Err(p) = tls_asked(protocol) {
        problems.malformed("backend-protocol", p.message, p.fix);
    }
    if let Err(p) = version_asked(version) {
        problems.malformed("backend-protocol-version", p.message, p.fix);
    }
}

/// `ssl-redirect`: the HTTPS port plain-HTTP requests are sent to. Another value
/// closes the routes: serving them over plain HTTP would expose what ALB never did.
fn ssl_redirect(value: &str, problems: &mut AccessProblems) -> Option<u16> {
    match value.parse::<u16>() {
        Ok(port) if port > 0 => Some(port),
        _ => {
            problems.malformed(
                "ssl-redirect",
                format!("{value:?} is not a port number"),
                "the HTTPS port requests are redirected to, e.g. \"443\"".into(),
            );
            None
        }
    }
}

/// `use-regex-path-match`, read as AWS's controller reads a boolean (Go's
/// `strconv.ParseBool`). A value that is neither closes the routes: their paths could
/// be read either way.
fn regex_path_match(value: Option<&str>, problems: &mut AccessProblems) -> bool {
    match value {
        None => false,
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => true,
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => false,
        Some(other) => {
            problems.malformed(
                "use-regex-path-match",
                format!("{other:?} is neither true nor false"),
                "use \"true\" (ImplementationSpecific paths are regular expressions) or \"false\""
                    .into(),
            );
            false
        }
    }
}

/// `group.order`: an integer from -1000 to 1000. Another value closes the routes:
/// the order decides which of two overlapping paths serves a request.
fn group_order(value: Option<&str>, problems: &mut AccessProblems) -> i32 {
    let Some(value) = value else {
        return 0;
    };
    match value.parse::<i32>() {
        Ok(order) if (-1000..=1000).contains(&order) => order,
        _ => {
            problems.malformed(
                "group.order",
                format!("{value:?} is not an integer from -1000 to 1000"),
                "e.g. \"10\"; smaller orders are tried first, the default is 0".into(),
            );
            0
        }
    }
}

type Conflicts = Vec<(String, String)>;

/// The Ingress's annotations with its group's load-balancer-level ones added, and the
/// annotations the group's members disagree on (with the problem that is).
fn with_group_annotations(
    ingress: &Ingress,
    own: &BTreeMap<String, String>,
    groups: &Groups,
) -> (BTreeMap<String, String>, Conflicts) {
    let mut annotations = own.clone();
    let mut conflicts: Conflicts = Vec::new();
    if let Some(group) = group_name(ingress)
        && let Some(merged) = groups.0.get(group)
    {
        for (name, value) in merged {
            match value {
                GroupValue::One(v) => {
                    annotations
                        .entry(format!("{PREFIX}{name}"))
                        .or_insert_with(|| v.clone());
                }
                GroupValue::Conflict(values) => conflicts.push((
                    name.clone(),
                    format!(
                        "the Ingresses of group {group:?} set {name} to different values ({}), which AWS's controller refuses for their one load balancer",
                        values.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>().join(", ")
                    ),
                )),
            }
        }
    }
    (annotations, conflicts)
}

/// The annotations whose difference the operator accepts, from the flag and the
/// Ingress's own annotation; naming one Portcullis does not refuse is warned of.
fn accepted_differences(
    annotations: &BTreeMap<String, String>,
    options: &super::CompileOptions,
    object: &ObjectRef,
    diags: &mut Vec<Diagnostic>,
) -> HashSet<String> {
    let known = |name: &str| NOT_HONOURED.iter().any(|(n, _, _)| *n == name);
    let mut accepted: HashSet<String> = options
        .accept_alb_differences
        .iter()
        .map(|n| n.trim().trim_start_matches(PREFIX).to_owned())
        .collect();
    for name in annotations
        .get(ACCEPT_DIFFERENCES_ANNOTATION)
        .map(String::as_str)
        .unwrap_or_default()
        .split(',')
        .map(|n| n.trim().trim_start_matches(PREFIX))
        .filter(|n| !n.is_empty())
    {
        if !known(name) {
            diags.push(Diagnostic::warning(
                object,
                &key_field(ACCEPT_DIFFERENCES_ANNOTATION),
                "InvalidAnnotation",
                format!(
                    "{name:?} is not an ALB annotation Portcullis cannot honour; it accepts nothing"
                ),
                format!(
                    "name some of {}",
                    NOT_HONOURED
                        .iter()
                        .map(|(n, _, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        accepted.insert(name.to_owned());
    }
    accepted
}

/// What closes an Ingress's routes, reported as it is found.
struct AccessProblems<'a> {
    object: &'a ObjectRef,
    accepted: HashSet<String>,
    diags: &'a mut Vec<Diagnostic>,
    /// Each problem, and whether it is a malformed value (else one not honoured).
    found: Vec<(bool, String)>,
}

impl AccessProblems<'_> {
    fn not_honoured(&mut self, name: &str, value: &str) {
        if self.accepted.contains(name) {
            return;
        }
        let (_, means, instead) = NOT_HONOURED
            .iter()
            .find(|(n, _, _)| *n == name)
            .copied()
            .unwrap_or((name, "an access control", "put it in front of Portcullis"));
        let message = format!(
            "{name}: {value} asks for {means}, which Portcullis cannot give; the Ingress's routes answer 500 AnnotationNotHonoured and never reach the app"
        );
        self.diags.push(Diagnostic::error(
            self.object,
            &annotation_field(name),
            "UnsupportedAnnotation",
            message.clone(),
            format!("{instead}, then annotate {ACCEPT_DIFFERENCES_ANNOTATION}: {name}; or remove the annotation"),
        ));
        self.found.push((false, message));
    }

    fn malformed(&mut self, name: &str, message: String, fix: String) {
        self.malformed_at(&annotation_field(name), message, fix);
    }

    /// A malformed value of an annotation named in full (not one of ALB's).
    fn malformed_key(&mut self, key: &str, message: String, fix: String) {
        self.malformed_at(&key_field(key), message, fix);
    }

    fn malformed_at(&mut self, field: &str, message: String, fix: String) {
        let message = format!(
            "{message}; the Ingress's routes answer 500 AnnotationInvalid until it is fixed"
        );
        self.diags.push(Diagnostic::error(
            self.object,
            field,
            "InvalidAnnotation",
            message.clone(),
            fix,
        ));
        self.found.push((true, message));
    }

    /// Closed by every problem found, as invalid when any value was malformed.
    fn closed(&self) -> Option<Arc<Closed>> {
        let invalid = self.found.iter().any(|(invalid, _)| *invalid);
        (!self.found.is_empty()).then(|| {
            let problems: Vec<&str> = self.found.iter().map(|(_, p)| p.as_str()).collect();
            Arc::new(Closed {
                reason: if invalid {
                    "AnnotationInvalid"
                } else {
                    "AnnotationNotHonoured"
                },
                problem: format!("{}: {}", self.object, problems.join("; ")),
            })
        })
    }
}

/// `inbound-cidrs` as an allow-list; none when any item is not a CIDR range.
fn source_allow_list(list: &str, problems: &mut AccessProblems) -> Option<Arc<SourceAllowList>> {
    let mut nets = Vec::new();
    let mut bad = Vec::new();
    for item in list.split(',').map(str::trim) {
        match item.parse::<ipnet::IpNet>() {
            Ok(net) => nets.push(net.trunc()),
            Err(_) => bad.push(item.to_owned()),
        }
    }
    if !bad.is_empty() {
        problems.malformed(
            "inbound-cidrs",
            format!("inbound-cidrs holds {} that {} not a CIDR range", bad.iter().map(|b| format!("{b:?}")).collect::<Vec<_>>().join(", "), if bad.len() == 1 { "is" } else { "are" }),
            "list ranges with their prefix length, comma separated, e.g. 10.0.0.0/8, 192.168.0.0/16, 2001:db8::/32 (a single address is 203.0.113.7/32)".into(),
        );
        None
    } else {
        Some(Arc::new(SourceAllowList { nets }))
    }
}

fn check_scheme(scheme: Option<&str>, written_for_alb: bool, problems: &mut AccessProblems) {
    match scheme {
        Some("internet-facing") => {}
        Some("internal") => problems.not_honoured("scheme", "internal"),
        None if written_for_alb => problems.not_honoured(
            "scheme",
            "internal (ALB's default when the annotation is absent)",
        ),
        None => {}
        Some(other) => problems.malformed(
            "scheme",
            format!("scheme {other:?} is neither internal nor internet-facing"),
            "use internet-facing, or internal".into(),
        ),
    }
}

fn check_shield(shield: Option<&str>, problems: &mut AccessProblems) {
    match shield {
        None | Some("" | "false") => {}
        Some("true") => problems.not_honoured("shield-advanced-protection", "true"),
        Some(other) => problems.malformed(
            "shield-advanced-protection",
            format!("{other:?} is neither true nor false"),
            "use true or false".into(),
        ),
    }
}

/// ALB's `mutual-authentication` and Portcullis's own annotation: the setting the
/// Ingress's hosts get. A malformed value, an AWS trust store ARN, two annotations that
/// disagree, or a rule without a host (a handshake picks its client certificates by
/// host) close the routes.
fn mutual_authentication(
    alb: Option<&str>,
    own: Option<&str>,
    ingress: &Ingress,
    problems: &mut AccessProblems,
) -> Option<super::mtls::Setting> {
    use super::mtls::{ALB_ANNOTATION, ANNOTATION, FIX, parse_alb, parse_own};
    let alb = match alb.map(parse_alb) {
        Some(Err(message)) => {
            problems.malformed(ALB_ANNOTATION, message, FIX.into());
            return None;
        }
        Some(Ok(setting)) => setting,
        None => None,
    };
    let own_fix = r#"e.g. {"mode":"verify","trustStore":"client-ca"}, where client-ca is a Secret (key ca.crt) or ConfigMap (key ca-bundle.crt) in the Ingress's namespace"#;
    let own = match own.map(parse_own) {
        Some(Err(message)) => {
            problems.malformed_key(ANNOTATION, message, own_fix.into());
            return None;
        }
        Some(Ok(setting)) => setting,
        None => None,
    };
    let setting = match (alb, own) {
        (Some(a), Some(o)) if a != o => {
            problems.malformed_key(
                ANNOTATION,
                format!("it asks for other client certificates than {PREFIX}{ALB_ANNOTATION}"),
                "set one of the two annotations, or both to the same setting".into(),
            );
            return None;
        }
        (a, o) => o.or(a)?,
    };
    // A default backend serves every host, including those no handshake asks a
    // certificate for: it would be reached without one.
    let spec = ingress.spec.as_ref();
    let rules = spec.and_then(|s| s.rules.as_ref());
    let default_backend = spec.is_some_and(|s| s.default_backend.is_some());
    if default_backend || rules.into_iter().flatten().any(|r| r.host.is_none()) {
        let what = if default_backend {
            "this Ingress has a defaultBackend, which serves every host"
        } else {
            "a rule of this Ingress names no host"
        };
        problems.malformed_key(
            ANNOTATION,
            format!("mutual authentication is set by host (the handshake asks for a certificate by SNI), and {what}"),
            "give every rule a host and move the defaultBackend to an Ingress without mutual authentication, or set the HTTPS listener's default with --mutual-authentication".into(),
        );
        return None;
    }
    Some(setting)
}

/// Problems met compiling the spec, moved onto the annotation they came from.
/// `cognito`: the login came from `auth-idp-cognito`.
pub fn move_to_annotations(mut d: Diagnostic, cognito: bool) -> Diagnostic {
    let field = d.field.clone();
    let annotation = |name: &str, rest: &str| format!("{}{rest}", annotation_field(name));
    let idp = if cognito {
        "auth-idp-cognito"
    } else {
        "auth-idp-oidc"
    };
    d.field = if let Some(rest) = field.strip_prefix("spec.oidc.clientSecretRef") {
        if cognito {
            key_field(COGNITO_SECRET_ANNOTATION)
        } else {
            annotation(
                "auth-idp-oidc",
                &format!(".secretName{}", rest.replace(".key", "")),
            )
        }
    } else if let Some(rest) = field.strip_prefix("spec.oidc.scope") {
        annotation("auth-scope", rest)
    } else if let Some(rest) = field.strip_prefix("spec.oidc.authenticationRequestExtraParams") {
        annotation("auth-authentication-request-extra-params", rest)
    } else if let Some(rest) = field.strip_prefix("spec.oidc.") {
        annotation(idp, &format!(".{rest}"))
    } else if field.starts_with("spec.session.cookieName") {
        annotation_field("auth-session-cookie")
    } else if field.starts_with("spec.session.timeout") {
        annotation_field("auth-session-timeout")
    } else if field.starts_with("spec.bearer.audiences") {
        key_field(JWT_AUDIENCES_ANNOTATION)
    } else if let Some(rest) = field.strip_prefix("spec.bearer.jwksUri") {
        annotation("jwt-validation", &format!(".jwksEndpoint{rest}"))
    } else if let Some(rest) = field.strip_prefix("spec.bearer.") {
        annotation("jwt-validation", &format!(".{rest}"))
    } else {
        field
    };
    d
}

/// A warning for each annotation of another controller, or of AWS's that Portcullis
/// does not read.
pub fn report_ignored(ingress: &Ingress, diags: &mut Vec<Diagnostic>) {
    let Some(annotations) = ingress.metadata.annotations.as_ref() else {
        return;
    };
    let object = super::ingress_ref(ingress);
    let read: HashSet<String> = READ
        .iter()
        .chain(NOT_HONOURED.iter().map(|(name, _, _)| name))
        .map(|k| format!("{PREFIX}{k}"))
        .collect();
    for key in annotations.keys() {
        let by_prefix = key
            .strip_prefix(PREFIX)
            .is_some_and(|name| READ_PREFIXES.iter().any(|p| name.starts_with(p)));
        let foreign = FOREIGN.iter().any(|p| key.starts_with(p))
            || (key.starts_with(PREFIX) && !read.contains(key) && !by_prefix);
        if foreign {
            let message = if key.strip_prefix(PREFIX).and_then(infrastructure).is_some() {
                format!(
                    "annotation {key} configures AWS's load balancer itself; it has no effect here"
                )
            } else {
                format!(
                    "annotation {key} belongs to another ingress controller; Portcullis does not read it"
                )
            };
            diags.push(Diagnostic::warning(
                &object,
                &format!("metadata.annotations[{key}]"),
                "IgnoredAnnotation",
                message,
                ignored_fix(key).into(),
            ));
        }
    }
}

/// ALB annotations about AWS's load balancer itself (by name, or by prefix when they
/// end in `-` or `.`), and what takes their place in front of and inside Portcullis.
const INFRASTRUCTURE: &[(&[&str], &str)] = &[
    (
        &[
            "tags",
            "load-balancer-name",
            "subnets",
            "ip-address-type",
            "customer-owned-ipv4-pool",
            "ipam-ipv4-pool-id",
            "load-balancer-attributes",
            "minimum-load-balancer-capacity",
            "manage-backend-security-group-rules",
            "enable-frontend-nlb",
            "frontend-nlb-",
            "listener-attributes.",
        ],
        "the load balancer in front of Portcullis is the chart's traffic Service: its type and your cloud's load-balancer annotations (name, tags, subnets, address type, attributes) go in the chart values service.type and service.annotations; remove this one",
    ),
    (
        &[
            "healthcheck-",
            "healthy-threshold-count",
            "unhealthy-threshold-count",
            "success-codes",
            "target-control-port.",
        ],
        "Portcullis sends requests only to endpoints Kubernetes marks ready: a readiness probe on the pods (its path, port and timing) takes the place of the health check; remove this one",
    ),
    (
        &[
            "target-type",
            "target-node-labels",
            "multi-cluster-target-group",
        ],
        "Portcullis sends requests straight to the Service's ready endpoints (pod addresses), as target-type: ip does; remove this one",
    ),
    (
        &["target-group-attributes"],
        "Portcullis balances round-robin over ready endpoints and drains connections on shutdown; stickiness and slow start are not available; remove this one",
    ),
    (
        &["certificate-arn", "create-acm-cert", "acm-pca-arn"],
        "certificates come from the Ingress's spec.tls Secrets (cert-manager can issue them); to keep ACM, end TLS at a load balancer in front of Portcullis and start Portcullis with --trusted-proxy <its range>",
    ),
    (
        &["ssl-policy"],
        "Portcullis offers TLS 1.2 and 1.3 with rustls's default cipher suites; remove this one",
    ),
];

/// What takes the place of an ALB infrastructure annotation (`name` without the
/// prefix), if it is one.
fn infrastructure(name: &str) -> Option<&'static str> {
    INFRASTRUCTURE.iter().find_map(|(names, instead)| {
        let matches = |n: &&str| {
            if n.ends_with(['-', '.']) {
                name.starts_with(*n)
            } else {
                name == *n
            }
        };
        names.iter().any(matches).then_some(*instead)
    })
}

/// Where the equivalent of an ignored annotation is described.
fn ignored_fix(key: &str) -> &'static str {
    if let Some(instead) = key.strip_prefix(PREFIX).and_then(infrastructure) {
        instead
    } else if key.starts_with(PREFIX) {
        "Portcullis reads the auth-*, jwt-validation, access-control and routing annotations (docs/coming-from-alb.md); this one has no effect here, remove it"
    } else if key.starts_with("nginx.ingress.kubernetes.io/") {
        "express it with an AuthRule or Portcullis's flags (docs/coming-from-nginx.md), or remove it"
    } else {
        "express it with Portcullis's own fields, or remove it"
    }
}
