//! Routes that must not be served without a login: those whose object names the
//! AuthRules that guard it (`portcullis.dev/auth-rule`), and, with
//! `--require-auth-rule`, every route no AuthRule guards unless its object says it is
//! public (`portcullis.dev/auth: none`). Until the named rules attach, such a route
//! answers 503 `AuthRulePending`: the order in which objects are created (Helm and
//! Argo CD create built-in kinds before custom resources) never opens it.

use std::collections::{BTreeMap, HashMap};

use super::RouteDraft;
use super::snapshot::{Guard, GuardPolicy};
use crate::diagnostics::{Diagnostic, ObjectRef};

/// On an Ingress or HTTPRoute: the AuthRules (comma-separated names in its namespace)
/// that must guard it before it is served.
pub const AUTH_RULE_ANNOTATION: &str = "portcullis.dev/auth-rule";
/// On an Ingress or HTTPRoute: `none` serves it without a login under
/// `--require-auth-rule`.
pub const AUTH_ANNOTATION: &str = "portcullis.dev/auth";

/// What the object's annotations ask of its routes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Requirement {
    /// AuthRule names from `portcullis.dev/auth-rule`.
    pub rules: Vec<String>,
    /// `portcullis.dev/auth: none`.
    pub public: bool,
    /// Problems with the annotations themselves (the route closes).
    pub invalid: Vec<(String, String)>,
}

/// Reads the two annotations of one object.
pub fn requirement(annotations: Option<&BTreeMap<String, String>>) -> Requirement {
    let mut out = Requirement::default();
    let Some(annotations) = annotations else {
        return out;
    };
    if let Some(list) = annotations.get(AUTH_RULE_ANNOTATION) {
        for name in list.split(',').map(str::trim) {
            if is_dns_subdomain(name) {
                out.rules.push(name.to_owned());
            } else {
                out.invalid.push((
                    annotation_field(AUTH_RULE_ANNOTATION),
                    format!("{name:?} is not an AuthRule name"),
                ));
            }
        }
    }
    match annotations.get(AUTH_ANNOTATION).map(String::as_str) {
        None => {}
        Some("none") => out.public = true,
        Some(other) => out.invalid.push((
            annotation_field(AUTH_ANNOTATION),
            format!("{other:?} is not a known value (the only one is \"none\")"),
        )),
    }
    out
}

/// An object name: a DNS name in lower case (RFC 1123 subdomain).
fn is_dns_subdomain(name: &str) -> bool {
    crate::model::is_dns_name(name)
        && !name.bytes().any(|b| b.is_ascii_uppercase())
        && name
            .split('.')
            .all(|l| !l.starts_with('-') && !l.ends_with('-'))
}

pub fn annotation_field(name: &str) -> String {
    format!("metadata.annotations[\"{name}\"]")
}

/// Closes the drafts of every object whose requirement is not met, with a `Pending`
/// guard ahead of any other, and reports each such object once.
pub(super) fn close_unguarded(
    drafts: &mut [&mut RouteDraft],
    requirements: &HashMap<ObjectRef, Requirement>,
    existing_rules: &dyn Fn(&ObjectRef) -> bool,
    require_auth_rule: bool,
    diags: &mut Vec<Diagnostic>,
) {
    // Per object: the rules attached to any of its routes, and whether a route of it
    // that serves something has no guard at all.
    let mut attached: HashMap<&ObjectRef, (Vec<ObjectRef>, bool)> = HashMap::new();
    for draft in drafts.iter() {
        let (rules, unguarded) = attached.entry(&draft.ingress).or_default();
        rules.extend(draft.guards.iter().map(|g| g.rule.clone()));
        *unguarded |= draft.guards.is_empty() && draft.filters.redirect.is_none();
    }
    // Objects whose every route closes (their annotations are unmet), and objects
    // whose unguarded routes close (`--require-auth-rule`).
    let mut whole: HashMap<ObjectRef, String> = HashMap::new();
    let mut unguarded_only: HashMap<ObjectRef, String> = HashMap::new();
    for (object, (rules, unguarded)) in &attached {
        let requirement = requirements.get(*object);
        let problems = unmet(object, requirement, rules, existing_rules);
        if !problems.is_empty() {
            whole.insert((*object).clone(), joined(&problems));
            diags.extend(problems);
            continue;
        }
        let public = requirement.is_some_and(|r| r.public);
        if require_auth_rule && *unguarded && !public {
            let problem = unguarded_problem(object);
            unguarded_only.insert((*object).clone(), problem.message.clone());
            diags.push(problem);
        }
    }
    for draft in drafts.iter_mut() {
        let message = match (
            whole.get(&draft.ingress),
            unguarded_only.get(&draft.ingress),
        ) {
            (Some(m), _) => m,
            // Only a login stands between a plain redirect and nobody; it serves nothing.
            (None, Some(m)) if draft.guards.is_empty() && draft.filters.redirect.is_none() => m,
            _ => continue,
        };
        draft.guards.insert(
            0,
            Guard {
                rule: draft.ingress.clone(),
                section: None,
                paths: Vec::new(),
                policy: GuardPolicy::Pending(message.clone()),
            },
        );
    }
}

fn joined(problems: &[Diagnostic]) -> String {
    problems
        .iter()
        .map(|d| d.message.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

/// A route of this object that no AuthRule guards, under `--require-auth-rule`.
fn unguarded_problem(object: &ObjectRef) -> Diagnostic {
    let kind = &object.kind;
    Diagnostic::error(
        object,
        &annotation_field(AUTH_RULE_ANNOTATION),
        "AuthRulePending",
        format!(
            "a route of this {kind} has no AuthRule and --require-auth-rule is set; it answers 503"
        ),
        format!(
            "create an AuthRule whose spec.targetRefs names it (and name it in {AUTH_RULE_ANNOTATION}), or annotate it {AUTH_ANNOTATION}: none to serve it without a login"
        ),
    )
}

/// What keeps one object's routes closed, as diagnostics on that object.
fn unmet(
    object: &ObjectRef,
    requirement: Option<&Requirement>,
    attached: &[ObjectRef],
    existing_rules: &dyn Fn(&ObjectRef) -> bool,
) -> Vec<Diagnostic> {
    let empty = Requirement::default();
    let requirement = requirement.unwrap_or(&empty);
    let kind = &object.kind;
    let mut out: Vec<Diagnostic> = requirement
        .invalid
        .iter()
        .map(|(field, message)| {
            Diagnostic::error(
                object,
                field,
                "AuthRulePending",
                format!("{message}; the {kind}'s routes answer 503 until it is fixed"),
                format!("list AuthRule names of namespace {} separated by commas, or set {AUTH_ANNOTATION}: none", object.namespace),
            )
        })
        .collect();
    for name in &requirement.rules {
        let rule = ObjectRef::new("AuthRule", &object.namespace, name);
        if attached.contains(&rule) {
            continue;
        }
        let (message, fix) = if existing_rules(&rule) {
            (
                format!("{rule} does not target this {kind}; its routes answer 503 until it does"),
                format!(
                    "add {{kind: {kind}, name: {}}} to the spec.targetRefs of {rule}, or remove it from the annotation",
                    object.name
                ),
            )
        } else {
            (
                format!(
                    "{rule} does not exist (yet); its routes answer 503 until it is created and valid"
                ),
                format!(
                    "create {rule} (kubectl apply; if it was refused, the apply printed why), or fix the name in the annotation"
                ),
            )
        };
        out.push(
            Diagnostic::error(
                object,
                &annotation_field(AUTH_RULE_ANNOTATION),
                "AuthRulePending",
                message,
                fix,
            )
            .of_reference(),
        );
    }
    out
}
