//! AuthRules to guards on Ingress routes. A rule that does not validate still guards
//! its targets, as `Broken`, so a typo answers 500 instead of opening the route.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::backends::Index;
use super::path_pattern::PathPattern;
use super::snapshot::{AuthPolicy, AuthRuleSummary, Guard, GuardPolicy};
use super::{age_key, meta_ref};
use crate::auth::client_assertion::ClientCredential;
use crate::diagnostics::{Diagnostic, ObjectRef};
use crate::model::{
    AuthRule, AuthRuleSpec, CALLBACK_PATH, DEFAULT_COOKIE_NAME, DEFAULT_LOGOUT_PATH, DEFAULT_SCOPE,
    DEFAULT_SESSION_TIMEOUT_SECONDS, GATEWAY_GROUP, MAX_EXTRA_PARAMS, OidcSpec, SessionStore,
    TargetRef, check_endpoint_url,
};
use crate::store::Objects;

/// Parameters Portcullis sets itself; an extra parameter may not override them.
const RESERVED_PARAMS: &[&str] = &[
    "client_id",
    "redirect_uri",
    "response_type",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
];
const MAX_PATH_PATTERN_LEN: usize = super::path_pattern::MAX_PATTERN_LEN;
const MAX_COOKIE_NAME_LEN: usize = 64;

pub struct RuleOutcome {
    pub guards: HashMap<ObjectRef, Vec<Guard>>,
    pub summaries: BTreeMap<ObjectRef, AuthRuleSummary>,
    /// The rules that compiled, oldest first.
    pub order: Vec<ObjectRef>,
}

pub fn compile_rules(
    objects: &Objects,
    index: &Index,
    ours: &HashSet<ObjectRef>,
    redis: bool,
    diags: &mut Vec<Diagnostic>,
) -> RuleOutcome {
    let mut outcome = RuleOutcome {
        guards: HashMap::new(),
        summaries: BTreeMap::new(),
        order: Vec::new(),
    };
    let mut rules: Vec<&AuthRule> = objects.auth_rules.iter().map(Arc::as_ref).collect();
    rules.sort_by(|a, b| age_key(&a.metadata).cmp(&age_key(&b.metadata)));
    for rule in rules {
        let obj = meta_ref("AuthRule", &rule.metadata);
        let (policy, paths_ok) = rule_policy(&obj, rule, index, redis, diags);
        let usable = matches!(policy, GuardPolicy::Oidc(_));
        let paths = if paths_ok {
            rule.spec.paths.clone()
        } else {
            Vec::new()
        };
        let summary = AuthRuleSummary {
            generation: rule.metadata.generation,
            usable,
            ..AuthRuleSummary::default()
        };
        outcome.summaries.insert(obj.clone(), summary);
        outcome.order.push(obj.clone());
        attach_targets(
            &mut outcome,
            &obj,
            &rule.spec.target_refs,
            &paths,
            &policy,
            index,
            ours,
            diags,
        );
    }
    attach_unreadable(&mut outcome, objects, index, ours, diags);
    annotation_rules(&mut outcome, objects, index, ours, diags);
    outcome
}

/// The rule's policy, and whether its paths are valid.
fn rule_policy(
    obj: &ObjectRef,
    rule: &AuthRule,
    index: &Index,
    redis: bool,
    diags: &mut Vec<Diagnostic>,
) -> (GuardPolicy, bool) {
    let paths_ok = validate_paths(&rule.spec.paths, obj, diags);
    let store_errors = check_session_store(obj, &rule.spec, redis);
    let policy = match resolve_policy(obj, &rule.spec, index) {
        Ok(_) if !store_errors.is_empty() => broken_by(obj, store_errors, diags),
        Ok(p) if paths_ok => GuardPolicy::Oidc(Arc::new(p)),
        Ok(_) => GuardPolicy::Broken(format!("{obj} has invalid spec.paths")),
        Err(mut errors) => {
            errors.extend(store_errors);
            broken_by(obj, errors, diags)
        }
    };
    (policy, paths_ok)
}

/// `store: redis` needs the Redis of `--redis-url`: without it the rule would have
/// nowhere to keep its sessions, so it closes its routes instead.
fn check_session_store(obj: &ObjectRef, spec: &AuthRuleSpec, redis: bool) -> Vec<Diagnostic> {
    if spec.session.store != SessionStore::Redis || redis {
        return Vec::new();
    }
    vec![Diagnostic::error(
        obj,
        "spec.session.store",
        "SessionStoreUnavailable",
        "session store redis needs Redis, and Portcullis runs without --redis-url".into(),
        "start Portcullis with --redis-url (the Helm chart's redis.url; for `portcullis check`, --redis-url or PORTCULLIS_REDIS_URL), or set spec.session.store: cookie".into(),
    )]
}

/// Closed by every problem found, each of which is reported.
fn broken_by(obj: &ObjectRef, errors: Vec<Diagnostic>, diags: &mut Vec<Diagnostic>) -> GuardPolicy {
    let message = errors
        .iter()
        .map(|d| d.message.clone())
        .collect::<Vec<_>>()
        .join("; ");
    diags.extend(errors);
    GuardPolicy::Broken(format!("{obj}: {message}"))
}

#[allow(clippy::too_many_arguments)]
fn attach_targets(
    outcome: &mut RuleOutcome,
    obj: &ObjectRef,
    targets: &[TargetRef],
    paths: &[String],
    policy: &GuardPolicy,
    index: &Index,
    ours: &HashSet<ObjectRef>,
    diags: &mut Vec<Diagnostic>,
) {
    for (i, target) in targets.iter().enumerate() {
        let field = format!("spec.targetRefs[{i}]");
        match (target.group.as_str(), target.kind.as_str()) {
            ("networking.k8s.io", "Ingress") => {}
            (GATEWAY_GROUP, "HTTPRoute" | "GRPCRoute" | "Gateway") => {
                attach_gateway_api(outcome, obj, target, &field, paths, policy, index, diags);
                continue;
            }
            (GATEWAY_GROUP, "TLSRoute") => {
                refuse_passthrough(outcome, obj, target, &field, policy, diags);
                continue;
            }
            _ => {
                diags.push(
                    Diagnostic::error(
                        obj,
                        &field,
                        "UnsupportedTarget",
                        format!(
                            "target {}/{} {} is not an Ingress, HTTPRoute, GRPCRoute or Gateway",
                            target.group, target.kind, target.name
                        ),
                        "set kind: Ingress (group networking.k8s.io), or kind: HTTPRoute, GRPCRoute or Gateway (group gateway.networking.k8s.io)".into(),
                    )
                    .of_reference(),
                );
                continue;
            }
        }
        attach(
            outcome,
            obj,
            &target.name,
            &field,
            paths,
            policy,
            index,
            ours,
            diags,
        );
    }
}

/// An AuthRule that cannot be read still closes the Ingresses it names: what it
/// guards is never served unguarded.
fn attach_unreadable(
    outcome: &mut RuleOutcome,
    objects: &Objects,
    index: &Index,
    ours: &HashSet<ObjectRef>,
    diags: &mut Vec<Diagnostic>,
) {
    for unreadable in &objects.unreadable_auth_rules {
        let policy = GuardPolicy::Broken(unreadable.error.clone());
        outcome
            .summaries
            .insert(unreadable.object.clone(), AuthRuleSummary::default());
        for name in &unreadable.target_names {
            attach(
                outcome,
                &unreadable.object,
                name,
                "spec.targetRefs",
                &[],
                &policy,
                index,
                ours,
                diags,
            );
        }
    }
}

/// Ingresses of ours annotated for the AWS Load Balancer Controller, guarded as their
/// annotations say unless an AuthRule already targets them.
fn annotation_rules(
    outcome: &mut RuleOutcome,
    objects: &Objects,
    index: &Index,
    ours: &HashSet<ObjectRef>,
    diags: &mut Vec<Diagnostic>,
) {
    use super::alb_annotations as alb;
    for ingress in &objects.ingresses {
        let object = super::ingress_ref(ingress);
        if !ours.contains(&object) {
            continue;
        }
        alb::report_ignored(ingress, diags);
        let mut found = Vec::new();
        let asked = alb::asked(ingress, index, &mut found);
        if matches!(asked, alb::Asked::Nothing) && found.is_empty() {
            continue;
        }
        if outcome.guards.contains_key(&object) {
            diags.extend(found);
            diags.push(annotations_overridden(&object, &asked));
            continue;
        }
        let resolved = annotated_policy(&object, asked, &mut found, index);
        diags.extend(found);
        let policy = resolved.unwrap_or_else(|errors| broken_by(&object, errors, diags));
        outcome
            .guards
            .entry(object.clone())
            .or_default()
            .push(Guard {
                section: None,
                rule: object,
                paths: Vec::new(),
                policy,
            });
    }
}

fn annotations_overridden(object: &ObjectRef, asked: &super::alb_annotations::Asked) -> Diagnostic {
    use super::alb_annotations as alb;
    Diagnostic::warning(
        object,
        &alb::annotation_field(if matches!(asked, alb::Asked::Bearer(_)) {
            "jwt-validation"
        } else {
            "auth-type"
        }),
        "AnnotationsOverridden",
        "an AuthRule targets this Ingress; its alb.ingress.kubernetes.io/auth-* and jwt-validation annotations are not used".into(),
        "remove the annotations, or the AuthRule".into(),
    )
}

/// The policy the annotations ask for, or the problems that keep it from being had;
/// those of a broken ask are taken from `found`.
fn annotated_policy(
    object: &ObjectRef,
    asked: super::alb_annotations::Asked,
    found: &mut Vec<Diagnostic>,
    index: &Index,
) -> Result<GuardPolicy, Vec<Diagnostic>> {
    use super::alb_annotations as alb;
    match asked {
        alb::Asked::Login(a) => resolve_policy(object, &a.spec, index)
            .map(|mut p| {
                if a.any_audience
                    && let Some(b) = p.bearer.as_mut()
                {
                    Arc::make_mut(b).any_audience = true;
                }
                GuardPolicy::Oidc(Arc::new(p))
            })
            .map_err(|errors| {
                errors
                    .into_iter()
                    .map(|d| alb::move_to_annotations(d, a.cognito))
                    .collect()
            }),
        alb::Asked::Bearer(b) => Ok(GuardPolicy::Bearer(Arc::new(b))),
        // A login or a token check was asked for and cannot be had: closed,
        // never served without it.
        alb::Asked::Broken | alb::Asked::Nothing => Err(std::mem::take(found)),
    }
}

/// Rules that guard one host must not share a session cookie, or each login would
/// overwrite the other's session. Where they would by default, every rule but the
/// oldest gets a name of its own; where names were set that clash, it is reported.
/// `hosts` gives each Ingress's hosts (`*` for rules without a host).
pub fn separate_cookie_names(
    outcome: &mut RuleOutcome,
    hosts: &HashMap<ObjectRef, Vec<String>>,
    diags: &mut Vec<Diagnostic>,
) {
    let age = |r: &ObjectRef| outcome.order.iter().position(|o| o == r);
    let mut by_host: BTreeMap<&str, Vec<(ObjectRef, String)>> = BTreeMap::new();
    for (ingress, guards) in &outcome.guards {
        for guard in guards {
            let GuardPolicy::Oidc(p) = &guard.policy else {
                continue;
            };
            if !p.login {
                continue;
            }
            for host in hosts.get(ingress).into_iter().flatten() {
                let rules = by_host.entry(host.as_str()).or_default();
                if !rules.iter().any(|(r, _)| r == &p.rule) {
                    rules.push((p.rule.clone(), p.cookie_name.clone()));
                }
            }
        }
    }
    // Rules without a host reach every host too.
    let everywhere = by_host.get("*").cloned().unwrap_or_default();
    for (_, rules) in by_host.iter_mut().filter(|(h, _)| **h != "*") {
        for r in &everywhere {
            if !rules.iter().any(|(known, _)| known == &r.0) {
                rules.push(r.clone());
            }
        }
    }
    let mut renamed: HashMap<ObjectRef, String> = HashMap::new();
    let mut reported: HashSet<ObjectRef> = HashSet::new();
    for (host, mut rules) in by_host {
        rules.sort_by_key(|(r, _)| age(r));
        for (i, (rule, name)) in rules.iter().enumerate() {
            let Some((first, _)) = rules[..i].iter().find(|(_, n)| n == name) else {
                continue;
            };
            if name == DEFAULT_COOKIE_NAME {
                renamed.insert(rule.clone(), own_cookie_name(rule));
            } else if reported.insert(rule.clone()) {
                diags.push(Diagnostic::warning(
                    rule,
                    "spec.session.cookieName",
                    "CookieNameConflict",
                    format!("{first} also guards host {host} with cookie {name}; their logins overwrite each other's sessions"),
                    "give each AuthRule on a host its own spec.session.cookieName".into(),
                ));
            }
        }
    }
    for guard in outcome.guards.values_mut().flatten() {
        if let GuardPolicy::Oidc(p) = &mut guard.policy
            && let Some(name) = renamed.get(&p.rule)
        {
            Arc::make_mut(p).cookie_name = name.clone();
        }
    }
}

/// A guard's path pattern. `spec.paths` are checked to fit ALB's length first, so
/// this cannot fail; if it did, the guard would cover every path rather than none.
fn guard_pattern(path: &str) -> PathPattern {
    PathPattern::new(path).unwrap_or_else(|_| PathPattern::new("*").expect("* is a pattern"))
}

/// Path patterns and logout paths in lower case, for case-insensitive matching.
pub fn fold_case(outcome: &mut RuleOutcome) {
    for guard in outcome.guards.values_mut().flatten() {
        for p in &mut guard.paths {
            *p = guard_pattern(&p.as_str().to_ascii_lowercase());
        }
        if let GuardPolicy::Oidc(p) = &mut guard.policy {
            Arc::make_mut(p).logout_path = p.logout_path.to_ascii_lowercase();
        }
    }
}

/// The default cookie name with a suffix that is stable for the rule.
fn own_cookie_name(rule: &ObjectRef) -> String {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("{}/{}", rule.namespace, rule.name).as_bytes(),
    );
    let suffix: String = digest.as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{DEFAULT_COOKIE_NAME}-{suffix}")
}

#[allow(clippy::too_many_arguments)]
fn attach(
    outcome: &mut RuleOutcome,
    rule: &ObjectRef,
    ingress_name: &str,
    field: &str,
    paths: &[String],
    policy: &GuardPolicy,
    index: &Index,
    ours: &HashSet<ObjectRef>,
    diags: &mut Vec<Diagnostic>,
) {
    let ingress = ObjectRef::new("Ingress", &rule.namespace, ingress_name);
    if !index
        .ingresses
        .contains_key(&(rule.namespace.clone(), ingress_name.to_owned()))
    {
        diags.push(Diagnostic::error(
            rule,
            field,
            "TargetNotFound",
            format!("{ingress} not found"),
            format!("create {ingress} or fix the target name; AuthRules guard Ingresses of their own namespace"),
        )
        .of_reference());
        return;
    }
    if !ours.contains(&ingress) {
        diags.push(Diagnostic::warning(
            rule,
            field,
            "TargetNotServed",
            format!(
                "{ingress} is not of an IngressClass served by Portcullis; nothing is guarded there"
            ),
            "set spec.ingressClassName of the Ingress to Portcullis's class".into(),
        )
        .of_reference());
        return;
    }
    let guard = Guard {
        section: None,
        rule: rule.clone(),
        paths: paths.iter().map(|p| guard_pattern(p)).collect(),
        policy: policy.clone(),
    };
    outcome.guards.entry(ingress).or_default().push(guard);
}

/// A TLSRoute passes TLS through undecrypted, so no AuthRule can guard it: the rule
/// says so, and the route is closed all the same (a guard that cannot apply fails
/// closed, never open).
fn refuse_passthrough(
    outcome: &mut RuleOutcome,
    rule: &ObjectRef,
    target: &TargetRef,
    field: &str,
    policy: &GuardPolicy,
    diags: &mut Vec<Diagnostic>,
) {
    let object = ObjectRef::new("TLSRoute", &rule.namespace, &target.name);
    diags.push(
        Diagnostic::error(
            rule,
            field,
            "UnsupportedTarget",
            format!("{object} passes TLS through still encrypted, so an AuthRule cannot guard it; its connections are closed while this rule names it"),
            "end TLS at Portcullis: an HTTPS listener with an HTTPRoute for this host, and target that HTTPRoute".into(),
        )
        .of_reference(),
    );
    outcome.guards.entry(object).or_default().push(Guard {
        rule: rule.clone(),
        section: target.section_name.clone(),
        paths: Vec::new(),
        policy: policy.clone(),
    });
}

/// An HTTPRoute or GRPCRoute (or one rule of it) or a Gateway (every route attached to it, or
/// those attached through one listener), in the AuthRule's namespace.
#[allow(clippy::too_many_arguments)]
fn attach_gateway_api(
    outcome: &mut RuleOutcome,
    rule: &ObjectRef,
    target: &TargetRef,
    field: &str,
    paths: &[String],
    policy: &GuardPolicy,
    index: &Index,
    diags: &mut Vec<Diagnostic>,
) {
    let object = ObjectRef::new(&target.kind, &rule.namespace, &target.name);
    let known = match target.kind.as_str() {
        "HTTPRoute" => &index.http_routes,
        "GRPCRoute" => &index.grpc_routes,
        _ => &index.gateways,
    };
    if !known.contains_key(&(rule.namespace.clone(), target.name.clone())) {
        diags.push(
            Diagnostic::error(
                rule,
                field,
                "TargetNotFound",
                format!("{object} not found"),
                format!("create {object} or fix the target name; AuthRules guard objects of their own namespace"),
            )
            .of_reference(),
        );
        return;
    }
    outcome.guards.entry(object).or_default().push(Guard {
        rule: rule.clone(),
        section: target.section_name.clone(),
        paths: paths.iter().map(|p| guard_pattern(p)).collect(),
        policy: policy.clone(),
    });
}

fn validate_paths(paths: &[String], obj: &ObjectRef, diags: &mut Vec<Diagnostic>) -> bool {
    let mut ok = true;
    for (i, p) in paths.iter().enumerate() {
        let allowed = |c: char| c.is_ascii_alphanumeric() || "_-.$/~\"'@:+&*?".contains(c);
        if p.is_empty()
            || p.len() > MAX_PATH_PATTERN_LEN
            || !p.chars().all(allowed)
            || !(p.starts_with('/') || p.starts_with('*'))
        {
            diags.push(Diagnostic::error(
                obj,
                &format!("spec.paths[{i}]"),
                "InvalidPathPattern",
                format!("path pattern {p:?} is not valid"),
                format!("start with / or *, use at most {MAX_PATH_PATTERN_LEN} of A-Z a-z 0-9 _ - . $ / ~ \" ' @ : + & * ?"),
            ));
            ok = false;
        }
    }
    ok
}

/// Every field checked; all problems reported at once, not just the first.
fn resolve_policy(
    obj: &ObjectRef,
    spec: &AuthRuleSpec,
    index: &Index,
) -> Result<AuthPolicy, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let login =
        (spec.oidc.as_ref()).map(|oidc| (oidc, checked_login(obj, oidc, index, &mut errors)));
    check_something_passes(obj, spec, &mut errors);
    let (cookie_name, timeout) = checked_session(obj, spec, &mut errors);
    let has_login = spec.oidc.is_some();
    let cookie_domain = super::cookie_domain::checked(obj, &spec.session, has_login, &mut errors);
    let logout_path = checked_logout(obj, spec, &mut errors);
    let authorization = spec
        .authorization
        .as_ref()
        .and_then(|a| super::authorization::compile(a, obj, &mut errors));
    let bearer = spec
        .bearer
        .as_ref()
        .and_then(|b| super::bearer::compile(b, obj, &mut errors))
        .map(Arc::new);
    let claim_headers = super::claim_headers::compile(&spec.claim_headers, obj, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    // A bearer-only rule names its token issuer where a login names the provider, so
    // status and `diagnose` check the keys tokens are verified with.
    let (oidc, credential, resource, scope) = match login {
        Some((oidc, (credential, resource, scope))) => (oidc.clone(), credential, resource, scope),
        None => (
            bearer_only_provider(bearer.as_deref()),
            ClientCredential::Secret(String::new()),
            Vec::new(),
            DEFAULT_SCOPE.into(),
        ),
    };
    let cookie_name = match (&cookie_domain, &spec.session.cookie_name) {
        (Some(domain), None) => super::cookie_domain::shared_cookie_name(
            &obj.namespace,
            domain,
            &oidc.issuer,
            &oidc.client_id,
        ),
        _ => cookie_name,
    };
    Ok(AuthPolicy {
        rule: obj.clone(),
        login: has_login,
        issuer: oidc.issuer,
        authorization_endpoint: oidc.authorization_endpoint,
        token_endpoint: oidc.token_endpoint,
        user_info_endpoint: oidc.user_info_endpoint,
        client_id: oidc.client_id,
        credential,
        resource,
        scope,
        extra_params: oidc
            .authentication_request_extra_params
            .into_iter()
            .collect(),
        token_endpoint_auth_method: oidc.token_endpoint_auth_method,
        cookie_name,
        cookie_domain,
        session_timeout_secs: timeout as u64,
        on_unauthenticated: spec.on_unauthenticated_request,
        logout_path,
        post_logout_redirect_uris: spec.logout.post_logout_redirect_uris.clone(),
        allow_preflight: spec.cors.allow_preflight,
        authorization,
        bearer,
        data_claims: spec.identity_headers.claims_from,
        claim_headers,
        spec: spec.clone(),
    })
}

/// A rule needs a login, bearer tokens, or both: with neither nothing could pass.
fn check_something_passes(obj: &ObjectRef, spec: &AuthRuleSpec, errors: &mut Vec<Diagnostic>) {
    if spec.oidc.is_none() && spec.bearer.is_none() {
        errors.push(Diagnostic::error(
            obj,
            "spec.oidc",
            "MissingOidc",
            "the rule has neither spec.oidc nor spec.bearer: nothing could pass".into(),
            "set spec.oidc for browser logins, spec.bearer for API clients with tokens, or both"
                .into(),
        ));
    }
}

/// `spec.oidc` checked, with its client secret read: the secret and the scope.
fn checked_login(
    obj: &ObjectRef,
    oidc: &OidcSpec,
    index: &Index,
    errors: &mut Vec<Diagnostic>,
) -> (ClientCredential, Vec<String>, String) {
    check_provider(obj, oidc, errors);
    let scope = checked_scope(obj, oidc, errors);
    check_extra_params(obj, oidc, errors);
    let credential = super::client_credential::compile(obj, oidc, index, errors);
    let resource = super::client_credential::resources(obj, oidc, errors);
    (credential, resource, scope)
}

/// The provider fields of a rule without `spec.oidc`: its token issuer, no client.
fn bearer_only_provider(bearer: Option<&super::bearer::BearerPolicy>) -> OidcSpec {
    OidcSpec {
        issuer: bearer.map(|b| b.issuer.clone()).unwrap_or_default(),
        authorization_endpoint: None,
        token_endpoint: None,
        user_info_endpoint: None,
        client_id: String::new(),
        client_secret_ref: None,
        scope: None,
        authentication_request_extra_params: Default::default(),
        token_endpoint_auth_method: Default::default(),
        client_key_ref: None,
        service_account_token_audience: None,
        resource: Vec::new(),
    }
}

/// The issuer, the endpoints and the client id.
fn check_provider(obj: &ObjectRef, oidc: &OidcSpec, errors: &mut Vec<Diagnostic>) {
    let mut err = |field: &str, reason: &'static str, message: String, fix: String| {
        errors.push(Diagnostic::error(obj, field, reason, message, fix));
    };
    if let Err(m) = check_endpoint_url(&oidc.issuer) {
        err(
            "spec.oidc.issuer",
            "InvalidIssuer",
            format!("issuer {:?} {m}", oidc.issuer),
            "use the provider's issuer URL, e.g. https://login.example.com/realms/main".into(),
        );
    }
    for (field, value) in [
        (
            "spec.oidc.authorizationEndpoint",
            &oidc.authorization_endpoint,
        ),
        ("spec.oidc.tokenEndpoint", &oidc.token_endpoint),
        ("spec.oidc.userInfoEndpoint", &oidc.user_info_endpoint),
    ] {
        if let Some((url, Err(m))) = value.as_deref().map(|u| (u, check_endpoint_url(u))) {
            err(field, "InvalidEndpoint", format!("{url:?} {m}"), "use the https URL from the provider's discovery document, or leave it out to use discovery".into());
        }
    }
    if oidc.client_id.trim().is_empty() {
        err(
            "spec.oidc.clientId",
            "InvalidClientId",
            "clientId is empty".into(),
            "set the client id registered at the provider".into(),
        );
    }
}

/// The scope asked for, the default when none is named.
fn checked_scope(obj: &ObjectRef, oidc: &OidcSpec, errors: &mut Vec<Diagnostic>) -> String {
    let scope = oidc.scope.clone().unwrap_or_else(|| DEFAULT_SCOPE.into());
    if !scope.split(' ').any(|s| s == "openid")
        || scope.split(' ').any(|s| {
            s.is_empty()
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        })
    {
        errors.push(Diagnostic::error(
            obj,
            "spec.oidc.scope",
            "InvalidScope",
            format!("scope {scope:?} must be single-space separated and include openid"),
            "e.g. scope: \"openid email profile\"".into(),
        ));
    }
    scope
}

fn check_extra_params(obj: &ObjectRef, oidc: &OidcSpec, errors: &mut Vec<Diagnostic>) {
    if oidc.authentication_request_extra_params.len() > MAX_EXTRA_PARAMS {
        errors.push(Diagnostic::error(
            obj,
            "spec.oidc.authenticationRequestExtraParams",
            "TooManyExtraParams",
            format!(
                "{} extra parameters; at most {MAX_EXTRA_PARAMS}",
                oidc.authentication_request_extra_params.len()
            ),
            "remove some parameters".into(),
        ));
    }
    // Keys go into the authorization URL as they are, so only characters a URL
    // carries unencoded (RFC 3986 unreserved): `access_type`, `login_hint`, `ui_locales`.
    for key in oidc.authentication_request_extra_params.keys() {
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'~'))
            || RESERVED_PARAMS.contains(&key.as_str())
        {
            errors.push(Diagnostic::error(
                obj,
                &format!("spec.oidc.authenticationRequestExtraParams.{key}"),
                "InvalidExtraParam",
                format!("extra parameter {key:?} is not allowed"),
                format!(
                    "keys are letters, digits, `_`, `-`, `.` and `~`, and not one of {}",
                    RESERVED_PARAMS.join(", ")
                ),
            ));
        }
    }
}

/// The session cookie's name and the session's timeout, defaults filled in.
fn checked_session(
    obj: &ObjectRef,
    spec: &AuthRuleSpec,
    errors: &mut Vec<Diagnostic>,
) -> (String, i64) {
    let cookie_name = spec
        .session
        .cookie_name
        .clone()
        .unwrap_or_else(|| DEFAULT_COOKIE_NAME.into());
    if cookie_name.is_empty()
        || cookie_name.len() > MAX_COOKIE_NAME_LEN
        || !cookie_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        errors.push(Diagnostic::error(
            obj,
            "spec.session.cookieName",
            "InvalidCookieName",
            format!("cookie name {cookie_name:?} is not valid"),
            format!("use at most {MAX_COOKIE_NAME_LEN} letters, digits, - _ ."),
        ));
    }
    let timeout = spec
        .session
        .timeout
        .unwrap_or(DEFAULT_SESSION_TIMEOUT_SECONDS);
    if !(1..=DEFAULT_SESSION_TIMEOUT_SECONDS).contains(&timeout) {
        errors.push(Diagnostic::error(
            obj,
            "spec.session.timeout",
            "InvalidSessionTimeout",
            format!("session timeout {timeout} s is outside 1..={DEFAULT_SESSION_TIMEOUT_SECONDS}"),
            "set a number of seconds from 1 to 604800".into(),
        ));
    }
    (cookie_name, timeout)
}

/// The logout path, the default when none is named; the redirect URIs are checked.
fn checked_logout(obj: &ObjectRef, spec: &AuthRuleSpec, errors: &mut Vec<Diagnostic>) -> String {
    let logout_path = spec
        .logout
        .path
        .clone()
        .unwrap_or_else(|| DEFAULT_LOGOUT_PATH.into());
    // `/` would answer every request of a host with a logout.
    if !logout_path.starts_with('/')
        || logout_path == "/"
        || logout_path.starts_with("//")
        || logout_path == CALLBACK_PATH
        || !logout_path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./~".contains(&b))
    {
        errors.push(Diagnostic::error(
            obj,
            "spec.logout.path",
            "InvalidLogoutPath",
            format!("logout path {logout_path:?} is not valid"),
            format!(
                "use a path such as {DEFAULT_LOGOUT_PATH} (letters, digits, - _ . / ~; not {CALLBACK_PATH})"
            ),
        ));
    }
    for (i, uri) in spec.logout.post_logout_redirect_uris.iter().enumerate() {
        // A browser target, not a server Portcullis calls: http is the operator's call.
        let as_https = uri
            .strip_prefix("http://")
            .map(|rest| format!("https://{rest}"));
        if let Err(m) = check_endpoint_url(as_https.as_deref().unwrap_or(uri)) {
            errors.push(Diagnostic::error(
                obj,
                &format!("spec.logout.postLogoutRedirectUris[{i}]"),
                "InvalidPostLogoutRedirectUri",
                format!("{uri:?} {m}"),
                "use an absolute URL registered at the provider".into(),
            ));
        }
    }
    logout_path
}
