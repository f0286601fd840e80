//! Ingresses annotated for the AWS Load Balancer Controller log people in as they do on
//! EKS: `alb.ingress.kubernetes.io/auth-type: oidc` with `auth-idp-oidc` (and its
//! Secret of `clientID` and `clientSecret`), `auth-scope`, `auth-session-cookie`,
//! `auth-session-timeout`, `auth-on-unauthenticated-request` and
//! `auth-authentication-request-extra-params` become the AuthRule spec they mean. An
//! explicit AuthRule targeting the Ingress wins. Other controllers' annotations that
//! Portcullis does not read are reported, never ignored in silence.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::networking::v1::Ingress;
use serde::Deserialize;

use super::backends::Index;
use crate::diagnostics::Diagnostic;
use crate::model::{
    AuthRuleSpec, LogoutSpec, OidcSpec, OnUnauthenticatedRequest, SecretKeyRef, SessionSpec,
    TargetRef,
};

pub const PREFIX: &str = "alb.ingress.kubernetes.io/";
const READ: &[&str] = &[
    "auth-type",
    "auth-idp-oidc",
    "auth-scope",
    "auth-session-cookie",
    "auth-session-timeout",
    "auth-on-unauthenticated-request",
    "auth-authentication-request-extra-params",
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
}

/// The field of a problem, as the annotation it came from.
pub fn annotation_field(name: &str) -> String {
    format!("metadata.annotations[{PREFIX}{name}]")
}

/// The AuthRule spec an Ingress's ALB annotations mean, with its client id read from
/// the Secret; `None` when it asks for no OIDC login (or a problem was reported).
pub fn spec_for(
    ingress: &Ingress,
    index: &Index,
    diags: &mut Vec<Diagnostic>,
) -> Option<AuthRuleSpec> {
    let object = super::ingress_ref(ingress);
    let annotations = ingress.metadata.annotations.as_ref()?;
    let get = |k: &str| annotations.get(&format!("{PREFIX}{k}")).map(String::as_str);
    match get("auth-type") {
        Some("oidc") => {}
        None | Some("none") => return None,
        Some(other) => {
            diags.push(Diagnostic::error(
                &object,
                &annotation_field("auth-type"),
                "UnsupportedAnnotation",
                format!("auth-type {other:?} is not supported; the Ingress's routes answer 500 until it is fixed"),
                "use auth-type: oidc (Cognito user pools work through their OIDC issuer) or an AuthRule".into(),
            ));
            return None;
        }
    }
    let mut bad = |name: &str, message: String, fix: &str| {
        diags.push(Diagnostic::error(
            &object,
            &annotation_field(name),
            "InvalidAnnotation",
            message,
            fix.into(),
        ));
    };
    let Some(idp) = get("auth-idp-oidc") else {
        bad(
            "auth-idp-oidc",
            "auth-type is oidc but auth-idp-oidc is missing".into(),
            r#"add {"issuer":"https://...","secretName":"<Secret with clientID and clientSecret>"}"#,
        );
        return None;
    };
    let idp: IdpOidc = match serde_json::from_str(idp) {
        Ok(v) => v,
        Err(e) => {
            bad(
                "auth-idp-oidc",
                format!("not the JSON AWS Load Balancer Controller reads: {e}"),
                r#"{"issuer":"https://...","authorizationEndpoint":"...","tokenEndpoint":"...","userInfoEndpoint":"...","secretName":"..."}"#,
            );
            return None;
        }
    };
    let namespace = object.namespace.clone();
    let client_id = index
        .secret(&namespace, &idp.secret_name)
        .and_then(|s| s.data.as_ref()?.get("clientID").map(|v| v.0.clone()))
        .and_then(|v| String::from_utf8(v).ok())
        .map(|v| v.trim().to_owned());
    let Some(client_id) = client_id.filter(|c| !c.is_empty()) else {
        diags.push(
            Diagnostic::error(
                &object,
                &annotation_field("auth-idp-oidc"),
                "SecretNotFound",
                format!("Secret {namespace}/{} with key clientID not found", idp.secret_name),
                format!("kubectl -n {namespace} create secret generic {} --from-literal=clientID=<id> --from-literal=clientSecret=<secret>", idp.secret_name),
            )
            .of_reference(),
        );
        return None;
    };
    let on_unauthenticated = match get("auth-on-unauthenticated-request") {
        None | Some("authenticate") => OnUnauthenticatedRequest::Authenticate,
        Some("deny") => OnUnauthenticatedRequest::Deny,
        Some("allow") => OnUnauthenticatedRequest::Allow,
        Some(other) => {
            bad(
                "auth-on-unauthenticated-request",
                format!("{other:?} is not authenticate, deny or allow"),
                "use authenticate, deny or allow",
            );
            return None;
        }
    };
    let timeout = match get("auth-session-timeout").map(str::parse::<i64>) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(_)) => {
            bad(
                "auth-session-timeout",
                "not a number of seconds".into(),
                "e.g. 86400",
            );
            return None;
        }
    };
    let mut extra = BTreeMap::new();
    for pair in get("auth-authentication-request-extra-params")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let Some((k, v)) = pair.split_once('=') else {
            bad(
                "auth-authentication-request-extra-params",
                format!("{pair:?} is not key=value"),
                "e.g. prompt=login,display=page",
            );
            return None;
        };
        extra.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    Some(AuthRuleSpec {
        target_refs: vec![TargetRef {
            section_name: None,
            group: "networking.k8s.io".into(),
            kind: "Ingress".into(),
            name: object.name.clone(),
        }],
        paths: Vec::new(),
        oidc: OidcSpec {
            issuer: idp.issuer,
            authorization_endpoint: idp.authorization_endpoint,
            token_endpoint: idp.token_endpoint,
            user_info_endpoint: idp.user_info_endpoint,
            client_id,
            client_secret_ref: SecretKeyRef {
                name: idp.secret_name,
                key: "clientSecret".into(),
            },
            scope: get("auth-scope").map(str::to_owned),
            authentication_request_extra_params: extra,
            token_endpoint_auth_method: Default::default(),
        },
        session: SessionSpec {
            cookie_name: get("auth-session-cookie").map(str::to_owned),
            timeout,
        },
        on_unauthenticated_request: on_unauthenticated,
        logout: LogoutSpec::default(),
        cors: Default::default(),
        authorization: None,
        bearer: None,
    })
}

/// Problems met compiling the spec, moved onto the annotation they came from.
pub fn move_to_annotations(mut d: Diagnostic) -> Diagnostic {
    let field = d.field.clone();
    let annotation = |name: &str, rest: &str| format!("{}{rest}", annotation_field(name));
    d.field = if let Some(rest) = field.strip_prefix("spec.oidc.clientSecretRef") {
        annotation(
            "auth-idp-oidc",
            &format!(".secretName{}", rest.replace(".key", "")),
        )
    } else if let Some(rest) = field.strip_prefix("spec.oidc.scope") {
        annotation("auth-scope", rest)
    } else if let Some(rest) = field.strip_prefix("spec.oidc.authenticationRequestExtraParams") {
        annotation("auth-authentication-request-extra-params", rest)
    } else if let Some(rest) = field.strip_prefix("spec.oidc.") {
        annotation("auth-idp-oidc", &format!(".{rest}"))
    } else if field.starts_with("spec.session.cookieName") {
        annotation_field("auth-session-cookie")
    } else if field.starts_with("spec.session.timeout") {
        annotation_field("auth-session-timeout")
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
    let read: HashSet<String> = READ.iter().map(|k| format!("{PREFIX}{k}")).collect();
    for key in annotations.keys() {
        let foreign = FOREIGN.iter().any(|p| key.starts_with(p))
            || (key.starts_with(PREFIX) && !read.contains(key));
        if foreign {
            diags.push(Diagnostic::warning(
                &object,
                &format!("metadata.annotations[{key}]"),
                "IgnoredAnnotation",
                format!("annotation {key} belongs to another ingress controller; Portcullis does not read it"),
                ignored_fix(key).into(),
            ));
        }
    }
}

/// Where the equivalent of an ignored annotation is described.
fn ignored_fix(key: &str) -> &'static str {
    if key.starts_with(PREFIX) {
        "Portcullis reads only the auth-* annotations (docs/coming-from-alb.md); remove it"
    } else if key.starts_with("nginx.ingress.kubernetes.io/") {
        "express it with an AuthRule or Portcullis's flags (docs/coming-from-nginx.md), or remove it"
    } else {
        "express it with Portcullis's own fields, or remove it"
    }
}
