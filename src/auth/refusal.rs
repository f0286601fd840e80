//! Why the guard answers a request instead of passing it on: one type, each case with
//! the status, reason and words the user and the access log get. The handler turns a
//! refusal into a response in one place.

/// A guarded request answered here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The route's AuthRule is invalid (500).
    RuleInvalid,
    /// The route waits for its AuthRule (503, with `Retry-After`).
    RulePending,
    /// A login or a bearer token over plain HTTP outside loopback (403).
    RequiresHttps,
    /// The shared state cannot vouch for the session (503).
    SharedStateUnavailable,
    /// `onUnauthenticatedRequest: deny`, and no session (401).
    Denied,
    /// `deny`, and a session cookie sealed for another rule or host (401).
    InvalidCookie,
    /// Logged in, but the AuthRule's authorization says no (403).
    Forbidden,
    /// Logged in, but a claim the authorization needs was left out by the provider
    /// and named in `_claim_names` instead (Entra ID's groups overage) (403).
    ClaimsOverage,
    /// A route that takes bearer tokens only (`jwt-validation`, or an AuthRule without
    /// `spec.oidc`), and no bearer token (401).
    BearerTokenRequired,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Self::RuleInvalid => 500,
            Self::RulePending | Self::SharedStateUnavailable => 503,
            Self::RequiresHttps | Self::Forbidden | Self::ClaimsOverage => 403,
            Self::Denied | Self::InvalidCookie | Self::BearerTokenRequired => 401,
        }
    }

    /// The access log's reason (in the catalogue, `observe::reasons`).
    pub fn reason(self) -> &'static str {
        match self {
            Self::RuleInvalid => "AuthRuleInvalid",
            Self::RulePending => "AuthRulePending",
            Self::RequiresHttps => "AuthRequiresHttps",
            Self::SharedStateUnavailable => "AuthSharedStateUnavailable",
            Self::Denied => "AuthDenied",
            Self::InvalidCookie => "AuthInvalidCookie",
            Self::Forbidden => "AuthForbidden",
            Self::ClaimsOverage => "AuthClaimsOverage",
            Self::BearerTokenRequired => "AuthBearerTokenRequired",
        }
    }

    /// What the error page tells the user (never a claim value or a rule's insides).
    pub fn message(self) -> &'static str {
        match self {
            Self::RuleInvalid => {
                "Login for this address is misconfigured; the operator can see why in the AuthRule's status or with `portcullis check`."
            }
            Self::RulePending => {
                "Login for this address is not configured yet; try again in a moment. The operator can see why with `portcullis check` or in the object's events."
            }
            Self::RequiresHttps => "Login and bearer tokens need HTTPS; use the https:// address.",
            Self::SharedStateUnavailable => {
                "Sessions cannot be checked right now; try again in a moment."
            }
            Self::Denied | Self::InvalidCookie => "This address needs a login session.",
            Self::Forbidden => "Your account is logged in but may not open this address.",
            Self::ClaimsOverage => {
                "Your account is logged in, but the identity provider did not send the groups this address checks (there are too many); the operator can change what the provider sends."
            }
            Self::BearerTokenRequired => "This address needs a bearer token.",
        }
    }

    /// Seconds a client may wait before it asks again, where waiting helps.
    pub fn retry_after(self) -> Option<&'static str> {
        match self {
            Self::RulePending => Some("5"),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Refusal; 9] = [
        Refusal::RuleInvalid,
        Refusal::RulePending,
        Refusal::RequiresHttps,
        Refusal::SharedStateUnavailable,
        Refusal::Denied,
        Refusal::InvalidCookie,
        Refusal::Forbidden,
        Refusal::ClaimsOverage,
        Refusal::BearerTokenRequired,
    ];

    #[test]
    fn every_refusal_is_in_the_catalogue_with_its_status() {
        for refusal in ALL {
            let entry = crate::observe::reasons::lookup(refusal.reason())
                .unwrap_or_else(|| panic!("{} is not catalogued", refusal.reason()));
            // Some entries say more (AuthInvalidCookie is a new login unless `deny`).
            let status = refusal.status().to_string();
            assert!(
                entry.status.contains(&status),
                "{refusal:?}: {}",
                entry.status
            );
        }
    }
}
