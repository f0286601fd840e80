//! `spec.authorization`, compiled once per snapshot: CEL programs ready to run, and the
//! decision for one request made from the user's claims. An expression that does not
//! compile makes the AuthRule invalid (fail closed); one that fails to evaluate refuses
//! the request.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::diagnostics::{Diagnostic, ObjectRef};
use crate::model::{AuthorizationAction, AuthorizationSpec, path_pattern_matches};

pub struct Authorization {
    /// Whether any expression reads `request.headers` (only then are they collected).
    reads_headers: bool,
    default_allow: bool,
    email_domains: Vec<String>,
    groups: Vec<String>,
    groups_claim: String,
    rules: Vec<Rule>,
}

struct Rule {
    name: String,
    paths: Vec<String>,
    /// The expression as written (what makes two compilations the same).
    source: String,
    program: cel::Program,
    allow: bool,
    /// The claim names the expression reads, for logs.
    claims: Vec<String>,
}

impl PartialEq for Authorization {
    fn eq(&self, other: &Self) -> bool {
        let rules = |a: &Self| -> Vec<(String, Vec<String>, String, bool)> {
            a.rules
                .iter()
                .map(|r| (r.name.clone(), r.paths.clone(), r.source.clone(), r.allow))
                .collect()
        };
        self.default_allow == other.default_allow
            && self.email_domains == other.email_domains
            && self.groups == other.groups
            && self.groups_claim == other.groups_claim
            && rules(self) == rules(other)
    }
}

impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.rules.iter().map(|r| r.name.as_str()).collect();
        f.debug_struct("Authorization")
            .field("rules", &names)
            .finish_non_exhaustive()
    }
}

/// What the request looks like to an expression: `request.method` and so on.
#[derive(Serialize)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub host: &'a str,
    pub headers: BTreeMap<String, String>,
    /// Paths compare without regard to case (`--case-insensitive-paths`), as routes
    /// and guards then do: rule paths match, and expressions see, the path in lower
    /// case.
    #[serde(skip)]
    pub fold_case: bool,
    /// The client certificate the handshake verified (`request.clientCert`).
    #[serde(rename = "clientCert", skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<&'a super::mtls::CertFacts>,
    /// The client's address as every other check sees it (`request.sourceIp`): the
    /// socket's peer, the PROXY protocol header's, or what a `--trusted-proxy` says it
    /// forwarded for; never a header an untrusted client sent.
    #[serde(rename = "sourceIp", skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<std::net::IpAddr>,
}

/// Where the identity came from: `source` in expressions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Session,
    Bearer,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::Bearer => "bearer",
        }
    }
}

/// The outcome for one request.
#[derive(Debug, PartialEq, Eq)]
pub struct Decision<'a> {
    pub allowed: bool,
    /// What decided: a rule's name, `emailDomains`, `groups` or `defaultAction`.
    pub by: &'a str,
    /// Whether `by` is a rule's name (a rule may be called `groups` too).
    pub by_rule: bool,
    /// The claim names looked at (never their values); for `defaultAction`, those of
    /// every rule tried.
    pub claims: Cow<'a, [String]>,
    /// Why an expression could not be evaluated, when that is what refused.
    pub error: Option<String>,
}

/// Compiles `spec`; every expression that does not compile is reported with its
/// position, and then there is no `Authorization` (the rule fails closed).
pub fn compile(
    spec: &AuthorizationSpec,
    object: &ObjectRef,
    diags: &mut Vec<Diagnostic>,
) -> Option<Arc<Authorization>> {
    let mut rules = Vec::new();
    let mut ok = true;
    for (i, rule) in spec.rules.iter().enumerate() {
        match cel::Program::compile(&rule.when) {
            Ok(program) => rules.push(Rule {
                name: rule.name.clone(),
                paths: rule.paths.clone(),
                source: rule.when.clone(),
                program,
                allow: rule.action == AuthorizationAction::Allow,
                claims: claim_names(&rule.when),
            }),
            Err(errors) => {
                ok = false;
                let at = errors
                    .errors
                    .iter()
                    .map(|e| format!("line {}, column {}: {}", e.pos.0, e.pos.1 + 1, e.msg))
                    .collect::<Vec<_>>()
                    .join("; ");
                diags.push(Diagnostic::error(
                    object,
                    &format!("spec.authorization.rules[{i}].when"),
                    "InvalidExpression",
                    format!("rule {:?}: the CEL expression does not compile at {at}", rule.name),
                    "fix the expression, e.g. 'admins' in claims.groups && claims.email.endsWith('@corp.example'); the rule's routes answer 500 until then".into(),
                ));
            }
        }
    }
    // The short forms are requirements; only rules make the default a refusal.
    let given = !spec.rules.is_empty();
    let default_allow = match spec.default_action {
        Some(a) => a == AuthorizationAction::Allow,
        None => !given,
    };
    let reads_headers = rules
        .iter()
        .any(|r| r.program.references().has_variable("request") && r.source.contains("headers"));
    ok.then(|| {
        Arc::new(Authorization {
            reads_headers,
            default_allow,
            email_domains: spec
                .email_domains
                .iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
            groups: spec.groups.clone(),
            groups_claim: spec.groups_claim.clone().unwrap_or_else(|| "groups".into()),
            rules,
        })
    })
}

impl Authorization {
    /// Whether `RequestFacts::headers` is read; without it they need not be collected.
    pub fn reads_headers(&self) -> bool {
        self.reads_headers
    }

    /// Whether a user (or API client) with `claims` may make this request (`path` is
    /// the canonical path).
    pub fn decide(
        &self,
        claims: &Map<String, Value>,
        request: &RequestFacts<'_>,
        source: Source,
    ) -> Decision<'_> {
        let lowered;
        let request = if request.fold_case {
            lowered = request.path.to_ascii_lowercase();
            &RequestFacts {
                path: &lowered,
                headers: request.headers.clone(),
                ..*request
            }
        } else {
            request
        };
        if let Some(refused) = self.identity_refusal(claims) {
            return refused;
        }
        let claims = self.groups_as_list(claims);
        if let Some(decided) = self.rule_decision(&claims, request, source) {
            return decided;
        }
        let tried = if self.default_allow {
            Cow::Borrowed(&[][..])
        } else {
            Cow::Owned(self.claims_of_rules_for(request))
        };
        Decision {
            allowed: self.default_allow,
            by: "defaultAction",
            by_rule: false,
            claims: tried,
            error: None,
        }
    }

    /// The groups claim as expressions see it: a list, also when the provider sends
    /// one space-separated string (as the `groups` short form reads it), so
    /// `'admins' in claims.groups` holds either way.
    fn groups_as_list<'c>(&self, claims: &'c Map<String, Value>) -> Cow<'c, Map<String, Value>> {
        match claims.get(&self.groups_claim) {
            Some(Value::String(_)) => {
                let mut listed = claims.clone();
                let groups = groups_of(claims.get(&self.groups_claim));
                listed.insert(
                    self.groups_claim.clone(),
                    Value::Array(groups.into_iter().map(Value::String).collect()),
                );
                Cow::Owned(listed)
            }
            _ => Cow::Borrowed(claims),
        }
    }

    /// The claim names read by the rules that apply to the request's path.
    fn claims_of_rules_for(&self, request: &RequestFacts<'_>) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for rule in &self.rules {
            if rule.paths.is_empty() || rule.paths.iter().any(|p| matches_path(p, request)) {
                for c in &rule.claims {
                    if !names.contains(c) {
                        names.push(c.clone());
                    }
                }
            }
        }
        names
    }

    /// A refusal by `emailDomains` or `groups`, which are checked before any rule.
    fn identity_refusal(&self, claims: &Map<String, Value>) -> Option<Decision<'_>> {
        if !self.email_domains.is_empty() {
            let email = claims
                .get("email")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let domain = email.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase());
            if !domain.is_some_and(|d| self.email_domains.contains(&d)) {
                return Some(refuse(
                    "emailDomains",
                    Cow::Owned(vec!["email".into()]),
                    None,
                ));
            }
        }
        if !self.groups.is_empty() {
            let member = groups_of(claims.get(&self.groups_claim))
                .iter()
                .any(|g| self.groups.contains(g));
            if !member {
                return Some(refuse(
                    "groups",
                    Cow::Owned(vec![self.groups_claim.clone()]),
                    None,
                ));
            }
        }
        None
    }

    /// The decision of the first rule for the path whose expression holds, if any.
    fn rule_decision(
        &self,
        claims: &Map<String, Value>,
        request: &RequestFacts<'_>,
        source: Source,
    ) -> Option<Decision<'_>> {
        // The standard library is built once: building it is most of a fresh context.
        static STDLIB: LazyLock<Arc<cel::Env>> = LazyLock::new(|| Arc::new(cel::Env::stdlib()));
        let view = super::cel_facts::RequestView {
            method: request.method,
            path: request.path,
            host: request.host,
            headers: &request.headers,
            client_cert: request.client_cert,
            source_ip: request.source_ip,
        };
        let facts = super::cel_facts::Facts::new(claims, view, source.as_str());
        let mut context = cel::Context::with_env(STDLIB.clone());
        context.set_variable_resolver(&facts);
        for rule in &self.rules {
            let applies =
                rule.paths.is_empty() || rule.paths.iter().any(|p| matches_path(p, request));
            if !applies {
                continue;
            }
            match rule.program.execute(&context) {
                Ok(cel::Value::Bool(true)) => {
                    return Some(Decision {
                        allowed: rule.allow,
                        by: &rule.name,
                        by_rule: true,
                        claims: Cow::Borrowed(&rule.claims),
                        error: None,
                    });
                }
                Ok(cel::Value::Bool(false)) => {}
                // A claim the user lacks, or a result that is not a boolean: refused,
                // whatever the rule's action.
                Ok(other) => {
                    return Some(Decision {
                        by_rule: true,
                        ..refuse(
                            &rule.name,
                            Cow::Borrowed(&rule.claims),
                            Some(format!("the expression gave {other:?}, not true or false")),
                        )
                    });
                }
                Err(e) => {
                    return Some(Decision {
                        by_rule: true,
                        ..refuse(&rule.name, Cow::Borrowed(&rule.claims), Some(e.to_string()))
                    });
                }
            }
        }
        None
    }
}

/// A refusal by a short form or, with `by_rule` set after, by a rule.
fn refuse<'a>(by: &'a str, claims: Cow<'a, [String]>, error: Option<String>) -> Decision<'a> {
    Decision {
        allowed: false,
        by,
        by_rule: false,
        claims,
        error,
    }
}

impl Decision<'_> {
    /// What decided, as the log and the error page name it: `rule "admins"`,
    /// `emailDomains`, `groups` or `defaultAction`.
    pub fn decider(&self) -> String {
        match (self.by_rule, self.by) {
            (true, rule) => format!("rule {rule:?}"),
            (false, "defaultAction") => {
                "spec.authorization.defaultAction (no rule allowed the request)".into()
            }
            (false, short) => format!("spec.authorization.{short}"),
        }
    }
}

fn matches_path(pattern: &str, request: &RequestFacts<'_>) -> bool {
    if request.fold_case {
        path_pattern_matches(
            &pattern.to_ascii_lowercase(),
            &request.path.to_ascii_lowercase(),
        )
    } else {
        path_pattern_matches(pattern, request.path)
    }
}

/// A groups claim as a list: an array of strings or one space-separated string.
fn groups_of(claim: Option<&Value>) -> Vec<String> {
    match claim {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// `claims.name` and `claims['name']` in an expression.
fn claim_names(source: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = source;
    while let Some(i) = rest.find("claims") {
        let after = &rest[i + "claims".len()..];
        let name: String = if let Some(field) = after.strip_prefix('.') {
            field
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        } else if let Some(index) = after
            .strip_prefix("['")
            .or_else(|| after.strip_prefix("[\""))
        {
            index
                .chars()
                .take_while(|c| *c != '\'' && *c != '"')
                .collect()
        } else {
            String::new()
        };
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
        rest = after;
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AuthorizationRule;
    use serde_json::json;

    fn spec(yaml: &str) -> AuthorizationSpec {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn request(path: &str) -> RequestFacts<'_> {
        RequestFacts {
            method: "GET",
            path,
            host: "app.test",
            headers: BTreeMap::from([("x-team".to_string(), "red".to_string())]),
            fold_case: false,
            client_cert: None,
            source_ip: None,
        }
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn compiled(s: &AuthorizationSpec) -> Arc<Authorization> {
        let mut diags = Vec::new();
        let a = compile(s, &ObjectRef::new("AuthRule", "apps", "sso"), &mut diags);
        assert!(diags.is_empty(), "{diags:?}");
        a.unwrap()
    }

    #[test]
    fn expressions_read_the_verified_client_certificate() {
        let a = compiled(&spec(
            r#"
defaultAction: Deny
rules:
- {name: robots, when: "has(request.clientCert) && request.clientCert.subject.startsWith('CN=robot,') && 'robot.clients.example' in request.clientCert.dnsNames", action: Allow}
"#,
        ));
        let cert = crate::compile::mtls::CertFacts {
            subject: "CN=robot,O=Example".into(),
            issuer: "CN=Client CA".into(),
            serial_number: "7A01".into(),
            dns_names: vec!["robot.clients.example".into()],
            uris: Vec::new(),
            emails: Vec::new(),
        };
        let who = claims(json!({"sub": "robot"}));
        let with_cert = RequestFacts {
            client_cert: Some(&cert),
            ..request("/")
        };
        let d = a.decide(&who, &with_cert, Source::Session);
        assert_eq!((d.allowed, d.by), (true, "robots"), "{d:?}");
        let d = a.decide(&who, &request("/"), Source::Session);
        assert_eq!(
            (d.allowed, d.by),
            (false, "defaultAction"),
            "no certificate: {d:?}"
        );
    }

    #[test]
    fn expressions_read_the_clients_address() {
        let a = compiled(&spec(
            r#"
defaultAction: Deny
rules:
- {name: office, when: "has(request.sourceIp) && request.sourceIp.startsWith('10.20.')", action: Allow}
- {name: v6-office, when: "has(request.sourceIp) && request.sourceIp == '2001:db8::7'", action: Allow}
"#,
        ));
        let who = claims(json!({"sub": "alice"}));
        for (ip, by) in [
            (Some("10.20.3.4"), "office"),
            (Some("2001:db8::7"), "v6-office"),
            (Some("10.21.3.4"), "defaultAction"),
            (None, "defaultAction"),
        ] {
            let facts = RequestFacts {
                source_ip: ip.map(|ip| ip.parse().unwrap()),
                ..request("/")
            };
            assert_eq!(a.decide(&who, &facts, Source::Session).by, by, "{ip:?}");
        }
    }

    #[test]
    fn the_first_matching_rule_decides_then_the_default() {
        let a = compiled(&spec(
            r#"
defaultAction: Deny
rules:
- {name: no-interns, when: "claims.title == 'intern'", action: Deny}
- {name: admins, paths: ["/admin*"], when: "'admins' in claims.groups && claims.email.endsWith('@corp.example')", action: Allow}
- {name: everyone-reads, when: "request.method == 'GET' && !request.path.startsWith('/admin')", action: Allow}
"#,
        ));
        let admin =
            claims(json!({"email": "a@corp.example", "groups": ["admins"], "title": "boss"}));
        let d = a.decide(&admin, &request("/admin/x"), Source::Session);
        assert_eq!((d.allowed, d.by), (true, "admins"));
        assert_eq!(*d.claims, ["groups", "email"]);
        let other = claims(json!({"email": "b@corp.example", "groups": ["staff"], "title": "dev"}));
        let d = a.decide(&other, &request("/admin/x"), Source::Session);
        assert_eq!((d.allowed, d.by), (false, "defaultAction"));
        assert!(a.decide(&other, &request("/docs"), Source::Session).allowed);
        let intern =
            claims(json!({"email": "i@corp.example", "groups": ["admins"], "title": "intern"}));
        assert_eq!(
            a.decide(&intern, &request("/admin/x"), Source::Session).by,
            "no-interns"
        );
        let shouting = RequestFacts {
            fold_case: true,
            ..request("/ADMIN/x")
        };
        let d = a.decide(&other, &shouting, Source::Session);
        assert!(
            !d.allowed,
            "a case-insensitive backend's /ADMIN is /admin here too: {d:?}"
        );
        assert!(
            a.decide(&other, &request("/ADMIN/x"), Source::Session)
                .allowed,
            "case-sensitive otherwise"
        );
    }

    #[test]
    fn claims_and_request_read_like_maps() {
        let a = compiled(&spec(
            r#"
rules:
- {name: optional, when: "has(claims.team) && 'team' in claims && claims.team == 'red'", action: Allow}
- {name: nested, when: "claims.org.unit == 'ops' && 'x-team' in request.headers && request.host == 'app.test'", action: Allow}
- {name: numbers, when: "claims.level >= 3 && claims.tags.exists(t, t == 'vip')", action: Allow}
"#,
        ));
        let red = claims(json!({"team": "red"}));
        assert_eq!(
            a.decide(&red, &request("/"), Source::Session).by,
            "optional"
        );
        // `has` of a claim the user lacks is false, not an error: the next rule runs.
        let ops = claims(json!({"org": {"unit": "ops"}}));
        assert_eq!(a.decide(&ops, &request("/"), Source::Session).by, "nested");
        let vip = claims(json!({"org": {"unit": "dev"}, "level": 4, "tags": ["vip"]}));
        assert_eq!(a.decide(&vip, &request("/"), Source::Session).by, "numbers");
        assert!(a.reads_headers());
    }

    #[test]
    fn a_missing_claim_refuses_even_under_an_allow_rule() {
        let a = compiled(&spec(
            "rules:\n- {name: admins, when: \"'admins' in claims.groups\", action: Allow}\ndefaultAction: Allow\n",
        ));
        let d = a.decide(
            &claims(json!({"email": "x@y"})),
            &request("/"),
            Source::Session,
        );
        assert!(!d.allowed, "{d:?}");
        assert!(d.error.is_some());
    }

    #[test]
    fn short_forms_must_all_hold() {
        let a = compiled(&spec(
            "emailDomains: [Corp.Example]\ngroups: [ops]\ngroupsClaim: roles\n",
        ));
        let d = a.decide(
            &claims(json!({"email": "a@corp.example", "roles": "dev ops"})),
            &request("/"),
            Source::Session,
        );
        assert!(d.allowed, "{d:?}");
        let d = a.decide(
            &claims(json!({"email": "a@evil.example", "roles": ["ops"]})),
            &request("/"),
            Source::Session,
        );
        assert_eq!((d.allowed, d.by), (false, "emailDomains"));
        let d = a.decide(
            &claims(json!({"email": "a@corp.example", "roles": ["dev"]})),
            &request("/"),
            Source::Session,
        );
        assert_eq!((d.allowed, d.by), (false, "groups"));
        let d = a.decide(
            &claims(json!({"email": "a@corp.example.evil.test", "roles": ["ops"]})),
            &request("/"),
            Source::Session,
        );
        assert!(!d.allowed, "a suffix is not a domain");
    }

    #[test]
    fn a_space_separated_groups_claim_reads_as_a_list_in_rules_too() {
        let a = compiled(&spec(
            "rules:\n- {name: admins, when: \"'admins' in claims.roles\", action: Allow}\ngroupsClaim: roles\n",
        ));
        for roles in [json!("staff admins"), json!(["staff", "admins"])] {
            let d = a.decide(
                &claims(json!({"roles": roles})),
                &request("/"),
                Source::Session,
            );
            assert!(d.allowed, "{roles}: {d:?}");
        }
        let d = a.decide(
            &claims(json!({"roles": "staff administrators"})),
            &request("/"),
            Source::Session,
        );
        assert!(!d.allowed, "words, not substrings");
        let short = compiled(&spec("groups: [admins]\n"));
        assert!(
            short
                .decide(
                    &claims(json!({"groups": "staff admins"})),
                    &request("/"),
                    Source::Session
                )
                .allowed
        );
    }

    #[test]
    fn the_default_names_the_claims_every_tried_rule_read() {
        let a = compiled(&spec(
            r#"
rules:
- {name: groups, when: "has(claims.groups) && 'admins' in claims.groups", action: Allow}
- {name: admin-paths, paths: ["/admin*"], when: "claims.level > 3", action: Allow}
- {name: mail, when: "has(claims.email) && claims.email == 'boss@x'", action: Allow}
"#,
        ));
        let d = a.decide(
            &claims(json!({"sub": "u"})),
            &request("/docs"),
            Source::Session,
        );
        assert_eq!(
            (d.allowed, d.by, d.by_rule),
            (false, "defaultAction", false)
        );
        assert_eq!(
            *d.claims,
            ["groups", "email"],
            "the admin-paths rule was not tried"
        );
        assert_eq!(
            d.decider(),
            "spec.authorization.defaultAction (no rule allowed the request)"
        );
        let d = a.decide(
            &claims(json!({"sub": "u"})),
            &request("/admin"),
            Source::Session,
        );
        assert_eq!(d.decider(), "rule \"admin-paths\"");
        let d = a.decide(
            &claims(json!({"groups": ["admins"]})),
            &request("/"),
            Source::Session,
        );
        assert_eq!(
            d.decider(),
            "rule \"groups\"",
            "a rule named like a short form is a rule"
        );
        let short = compiled(&spec("groups: [admins]\n"));
        let d = short.decide(&claims(json!({"sub": "u"})), &request("/"), Source::Session);
        assert_eq!(d.decider(), "spec.authorization.groups");
    }

    #[test]
    fn no_rules_allow_and_rules_without_a_default_deny() {
        assert!(
            compiled(&AuthorizationSpec::default())
                .decide(&Map::new(), &request("/"), Source::Session)
                .allowed
        );
        let a = compiled(&spec(
            "rules:\n- {name: never, when: 'false', action: Allow}\n",
        ));
        assert!(
            !a.decide(&Map::new(), &request("/"), Source::Session)
                .allowed
        );
        let headers = compiled(&spec(
            "rules:\n- {name: red, when: \"request.headers['x-team'] == 'red' && source == 'session'\", action: Allow}\n",
        ));
        assert!(
            headers
                .decide(&Map::new(), &request("/"), Source::Session)
                .allowed
        );
        assert!(
            !headers
                .decide(&Map::new(), &request("/"), Source::Bearer)
                .allowed,
            "source tells a bearer token from a session"
        );
    }

    #[test]
    fn an_expression_that_does_not_compile_is_reported_with_its_position() {
        let s = AuthorizationSpec {
            rules: vec![AuthorizationRule {
                name: "broken".into(),
                paths: vec![],
                when: "claims.email ==".into(),
                action: AuthorizationAction::Allow,
            }],
            ..Default::default()
        };
        let mut diags = Vec::new();
        assert!(compile(&s, &ObjectRef::new("AuthRule", "apps", "sso"), &mut diags).is_none());
        assert_eq!(diags[0].field, "spec.authorization.rules[0].when");
        assert!(
            diags[0].message.contains("line 1, column"),
            "{}",
            diags[0].message
        );
    }
}
