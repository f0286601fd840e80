//! The user's claims as authorization, claim headers and (when the AuthRule asks)
//! `x-amzn-oidc-data` read them: the ID token's claims merged with userinfo's.
//! Providers put a claim in either or both, as their configuration says (Keycloak's
//! mappers choose per claim; Entra ID, Okta and Auth0 put groups and roles in the ID
//! token), so reading userinfo alone refuses the members of a group the ID token names.
//!
//! Userinfo wins where both have a claim: it is read after the ID token, again at
//! every refresh, and it is what ALB passes on. The ID token's bookkeeping (who issued
//! it, for whom, when, its hashes, nonce and session id) says nothing about the user
//! and is left out, as are `_claim_sources` on either side (they may carry access
//! tokens for other APIs).
//!
//! When a request is refused, `RefusalReport` says which claims the deciding rule read,
//! whether each was absent, held elsewhere (`_claim_names`) or present without a match,
//! and where present ones came from; names only, never values.

use serde_json::{Map, Value};

/// ID-token claims about the token itself, never merged into the user's claims.
pub const ID_TOKEN_BOOKKEEPING: &[&str] = &[
    "iss",
    "aud",
    "exp",
    "iat",
    "nbf",
    "nonce",
    "at_hash",
    "c_hash",
    "s_hash",
    "auth_time",
    "azp",
    "sid",
    "jti",
    "typ",
];
/// Where distributed and aggregated claims are fetched (OpenID Connect Core 5.6.2):
/// endpoints and possibly access tokens, never passed on.
pub const CLAIM_SOURCES: &str = "_claim_sources";
/// Which claims are held at a `_claim_sources` entry instead of being sent.
pub const CLAIM_NAMES: &str = "_claim_names";
/// Names listed in one report: a refusal's words stay short whatever the token holds.
const MAX_NAMES: usize = 40;
/// Characters kept of one claim name in a report.
const MAX_NAME_CHARS: usize = 64;

/// The ID token's claims (bookkeeping left out) with userinfo's over them.
pub fn merge(id_token: &Map<String, Value>, userinfo: &Map<String, Value>) -> Map<String, Value> {
    let mut merged: Map<String, Value> = id_token
        .iter()
        .filter(|(k, _)| !ID_TOKEN_BOOKKEEPING.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    merged.extend(userinfo.iter().map(|(k, v)| (k.clone(), v.clone())));
    merged.remove(CLAIM_SOURCES);
    merged
}

/// Where a claim of the merged set came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    IdToken,
    UserInfo,
    /// Both, with the same value.
    Both,
    /// Both, with different values: userinfo's is used.
    BothDiffer,
}

impl Origin {
    fn words(self) -> &'static str {
        match self {
            Self::IdToken => "from the ID token only",
            Self::UserInfo => "from userinfo only",
            Self::Both => "in the ID token and userinfo alike",
            Self::BothDiffer => {
                "in the ID token and userinfo with different values; userinfo's is used"
            }
        }
    }
}

/// Where claim `name` came from, if it is in the merged set.
pub fn origin(
    name: &str,
    id_token: &Map<String, Value>,
    userinfo: &Map<String, Value>,
) -> Option<Origin> {
    let in_token = id_token
        .get(name)
        .filter(|_| !ID_TOKEN_BOOKKEEPING.contains(&name) && name != CLAIM_SOURCES);
    match (
        in_token,
        userinfo.get(name).filter(|_| name != CLAIM_SOURCES),
    ) {
        (None, None) => None,
        (Some(_), None) => Some(Origin::IdToken),
        (None, Some(_)) => Some(Origin::UserInfo),
        (Some(a), Some(b)) if a == b => Some(Origin::Both),
        (Some(_), Some(_)) => Some(Origin::BothDiffer),
    }
}

/// Which claims came from where, names only, for the login's flow record: `only in
/// the ID token: groups; only in userinfo: email, name; in both: sub`.
pub fn provenance(id_token: &Map<String, Value>, userinfo: &Map<String, Value>) -> String {
    let merged = merge(id_token, userinfo);
    let named = |wanted: &[Origin]| -> Vec<&str> {
        merged
            .keys()
            .filter(|k| origin(k, id_token, userinfo).is_some_and(|o| wanted.contains(&o)))
            .map(String::as_str)
            .collect()
    };
    let mut parts = Vec::new();
    for (label, wanted) in [
        ("only in the ID token", &[Origin::IdToken][..]),
        ("only in userinfo", &[Origin::UserInfo][..]),
        ("in both", &[Origin::Both][..]),
        (
            "in both with different values (userinfo's used)",
            &[Origin::BothDiffer][..],
        ),
    ] {
        let names = named(wanted);
        if !names.is_empty() {
            parts.push(format!("{label}: {}", name_list(&names)));
        }
    }
    if parts.is_empty() {
        "no claims".into()
    } else {
        parts.join("; ")
    }
}

/// Where the claims a decision read came from.
#[derive(Clone, Copy)]
pub enum Provenance<'a> {
    /// A session: the ID token's claims and userinfo's.
    Session {
        id_token: &'a Map<String, Value>,
        userinfo: &'a Map<String, Value>,
    },
    /// A bearer token's own claims.
    Bearer,
}

/// How one claim a refusing rule read stood.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimState {
    /// In no source.
    Absent,
    /// Not sent, but named in `_claim_names`: the provider holds it elsewhere (Entra
    /// ID's groups overage).
    HeldElsewhere,
    /// Present, without a match; where it came from for a session.
    Present(Option<Origin>),
}

/// Why a request was refused, in names only: for the log, the flow record and the
/// user's error page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusalReport {
    /// What refused: `rule "admins"`, `emailDomains`, `groups` or `defaultAction`.
    pub by: String,
    /// Each claim the refusal read, and how it stood.
    pub read: Vec<(String, ClaimState)>,
    /// The names of the claims the user has (the first `MAX_NAMES`).
    pub present: Vec<String>,
    /// How many more there are.
    pub present_more: usize,
    pub bearer: bool,
}

impl RefusalReport {
    pub fn new(
        by: String,
        read: &[String],
        claims: &Map<String, Value>,
        provenance: Provenance<'_>,
    ) -> Self {
        let held_elsewhere = |name: &str| {
            claims
                .get(CLAIM_NAMES)
                .and_then(Value::as_object)
                .is_some_and(|names| names.contains_key(name))
        };
        let state = |name: &str| {
            if claims.contains_key(name) {
                ClaimState::Present(match provenance {
                    Provenance::Session { id_token, userinfo } => origin(name, id_token, userinfo),
                    Provenance::Bearer => None,
                })
            } else if held_elsewhere(name) {
                ClaimState::HeldElsewhere
            } else {
                ClaimState::Absent
            }
        };
        Self {
            by,
            read: read
                .iter()
                .take(MAX_NAMES)
                .map(|n| (short(n), state(n)))
                .collect(),
            present: claims.keys().take(MAX_NAMES).map(|n| short(n)).collect(),
            present_more: claims.len().saturating_sub(MAX_NAMES),
            bearer: matches!(provenance, Provenance::Bearer),
        }
    }

    /// Whether a claim the refusal needed is held elsewhere: the refusal is the
    /// provider's overage, not the user's lack of a group.
    pub fn overage(&self) -> bool {
        self.read
            .iter()
            .any(|(_, s)| *s == ClaimState::HeldElsewhere)
    }

    /// One line for the log: what refused, each claim it read, and the names present.
    pub fn summary(&self) -> String {
        format!(
            "{}; claims present: {}",
            self.decided(),
            self.present_names().unwrap_or_else(|| "none".into())
        )
    }

    /// What refused and how each claim it read stood.
    pub fn decided(&self) -> String {
        let read = if self.read.is_empty() {
            "no claim".to_owned()
        } else {
            let each: Vec<String> = self
                .read
                .iter()
                .map(|(n, s)| format!("{n} {}", self.state_words(s)))
                .collect();
            each.join(", ")
        };
        format!("refused by {}; checked {read}", self.by)
    }

    /// The names of the claims present, if any.
    pub fn present_names(&self) -> Option<String> {
        if self.present.is_empty() {
            return None;
        }
        let mut out = name_list(&self.present);
        if self.present_more > 0 {
            out.push_str(&format!(" and {} more", self.present_more));
        }
        Some(out)
    }

    fn state_words(&self, state: &ClaimState) -> String {
        let source = if self.bearer {
            "the bearer token"
        } else {
            "the ID token and userinfo"
        };
        match state {
            ClaimState::Absent => format!("(absent from {source})"),
            ClaimState::HeldElsewhere => {
                "(not sent: _claim_names says the provider holds it elsewhere)".into()
            }
            ClaimState::Present(None) => "(present, no match)".into(),
            ClaimState::Present(Some(o)) => format!("(present {}, no match)", o.words()),
        }
    }

    /// What to change at the provider, when how a claim stood explains the refusal.
    pub fn advice(&self) -> Option<String> {
        let mut advice = Vec::new();
        for (name, state) in &self.read {
            match state {
                ClaimState::Absent if self.bearer => advice.push(format!(
                    "{name}: have the token issuer put it in the access tokens for this API"
                )),
                ClaimState::Absent => advice.push(format!(
                    "{name}: have the provider release it to this client, in the ID token or userinfo (a claim mapper or rule for the client, and a scope in spec.oidc.scope that carries it)"
                )),
                ClaimState::HeldElsewhere => advice.push(format!(
                    "{name}: the provider left it out for size (Entra ID sends _claim_names instead of more than 200 groups); send only the groups assigned to the application or filter them, or use app roles (the roles claim, with spec.authorization.groupsClaim: roles)"
                )),
                ClaimState::Present(Some(Origin::BothDiffer)) => advice.push(format!(
                    "{name}: the provider's ID-token and userinfo mappings of it differ; make them the same (for groups, the same full-path setting)"
                )),
                ClaimState::Present(_) => {}
            }
        }
        (!advice.is_empty()).then(|| advice.join("; "))
    }

    /// What the user's error page says: what refused and how the claims it read
    /// stood, by name only.
    pub fn for_user(&self) -> String {
        let read: Vec<String> = self
            .read
            .iter()
            .map(|(n, s)| {
                let how = match s {
                    ClaimState::Absent => "not in your login",
                    ClaimState::HeldElsewhere => "not sent by the identity provider",
                    ClaimState::Present(_) => "in your login, without a match",
                };
                format!("{n} ({how})")
            })
            .collect();
        let mut out = format!("Refused by {}.", self.by);
        if !read.is_empty() {
            out.push_str(&format!(" Checked: {}.", read.join(", ")));
        }
        out.push_str(&format!(
            " Your login carries: {}.",
            self.present_names().unwrap_or_else(|| "no claims".into())
        ));
        out
    }
}

fn short(name: &str) -> String {
    name.chars().take(MAX_NAME_CHARS).collect()
}

fn name_list<S: AsRef<str>>(names: &[S]) -> String {
    let shown: Vec<&str> = names.iter().take(MAX_NAMES).map(AsRef::as_ref).collect();
    let mut out = shown.join(", ");
    if names.len() > MAX_NAMES {
        out.push_str(&format!(" and {} more", names.len() - MAX_NAMES));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn userinfo_wins_and_the_id_tokens_bookkeeping_stays_out() {
        let id_token = map(json!({
            "iss": "https://idp", "aud": "app", "exp": 2, "iat": 1, "nbf": 1, "nonce": "n",
            "at_hash": "h", "c_hash": "h", "auth_time": 1, "azp": "app", "sid": "s", "jti": "j",
            "sub": "u1", "groups": ["admins"], "email": "old@x", "acr": "1", "amr": ["mfa"],
            "_claim_names": {"roles": "src1"}, "_claim_sources": {"src1": {"access_token": "secret"}}
        }));
        let userinfo =
            map(json!({"sub": "u1", "email": "new@x", "name": "U", "_claim_sources": {}}));
        let merged = merge(&id_token, &userinfo);
        let mut names: Vec<&str> = merged.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "_claim_names",
                "acr",
                "amr",
                "email",
                "groups",
                "name",
                "sub"
            ]
        );
        assert_eq!(merged["email"], "new@x", "userinfo wins");
        assert_eq!(merged["groups"], json!(["admins"]));
        assert_eq!(merge(&Map::new(), &userinfo).len(), 3);
    }

    #[test]
    fn origins_tell_the_sources_apart() {
        let id_token = map(json!({"sub": "u", "groups": ["a"], "roles": ["r"], "iss": "x"}));
        let userinfo = map(json!({"sub": "u", "email": "e", "roles": ["other"]}));
        assert_eq!(
            origin("groups", &id_token, &userinfo),
            Some(Origin::IdToken)
        );
        assert_eq!(
            origin("email", &id_token, &userinfo),
            Some(Origin::UserInfo)
        );
        assert_eq!(origin("sub", &id_token, &userinfo), Some(Origin::Both));
        assert_eq!(
            origin("roles", &id_token, &userinfo),
            Some(Origin::BothDiffer)
        );
        assert_eq!(origin("iss", &id_token, &userinfo), None, "bookkeeping");
        assert_eq!(
            provenance(&id_token, &userinfo),
            "only in the ID token: groups; only in userinfo: email; in both: sub; in both with different values (userinfo's used): roles"
        );
    }

    #[test]
    fn a_refusal_names_claims_never_values() {
        let id_token = map(json!({"sub": "u", "groups": ["/admins"], "iss": "x"}));
        let userinfo =
            map(json!({"sub": "u", "email": "secret@corp.example", "groups": ["admins-x"]}));
        let merged = merge(&id_token, &userinfo);
        let report = RefusalReport::new(
            "rule \"admins\"".into(),
            &["groups".into(), "team".into()],
            &merged,
            Provenance::Session {
                id_token: &id_token,
                userinfo: &userinfo,
            },
        );
        assert_eq!(
            report.read,
            [
                (
                    "groups".into(),
                    ClaimState::Present(Some(Origin::BothDiffer))
                ),
                ("team".into(), ClaimState::Absent)
            ]
        );
        assert!(!report.overage());
        let text = format!(
            "{} {} {}",
            report.summary(),
            report.advice().unwrap(),
            report.for_user()
        );
        for value in ["secret@corp.example", "admins-x", "/admins"] {
            assert!(!text.contains(value), "{value} in {text}");
        }
        assert!(
            report
                .summary()
                .contains("team (absent from the ID token and userinfo)"),
            "{}",
            report.summary()
        );
        assert!(
            report
                .summary()
                .contains("claims present: email, groups, sub")
        );
        assert!(report.advice().unwrap().contains("mappings of it differ"));
        assert!(report.for_user().contains("team (not in your login)"));
    }

    #[test]
    fn a_claim_named_in_claim_names_is_an_overage() {
        let id_token = map(
            json!({"sub": "u", "_claim_names": {"groups": "src1"}, "_claim_sources": {"src1": {"endpoint": "https://graph"}}}),
        );
        let userinfo = map(json!({"sub": "u"}));
        let merged = merge(&id_token, &userinfo);
        let report = RefusalReport::new(
            "groups".into(),
            &["groups".into()],
            &merged,
            Provenance::Session {
                id_token: &id_token,
                userinfo: &userinfo,
            },
        );
        assert!(report.overage());
        assert!(report.advice().unwrap().contains("app roles"));
        let bearer = RefusalReport::new(
            "groups".into(),
            &["groups".into()],
            &map(json!({"sub": "u"})),
            Provenance::Bearer,
        );
        assert!(!bearer.overage());
        assert!(bearer.summary().contains("absent from the bearer token"));
    }

    #[test]
    fn reports_stay_short_whatever_the_token_holds() {
        let many: Map<String, Value> = (0..500)
            .map(|i| (format!("claim-{i}-{}", "x".repeat(200)), json!(i)))
            .collect();
        let read: Vec<String> = many.keys().cloned().collect();
        let report = RefusalReport::new("defaultAction".into(), &read, &many, Provenance::Bearer);
        assert_eq!(report.read.len(), MAX_NAMES);
        assert!(
            report.summary().len() < 8 * 1024,
            "{}",
            report.summary().len()
        );
        assert!(
            report.summary().ends_with(" and 460 more"),
            "{}",
            report.summary()
        );
    }
}
