//! Every `error_reason` in plain words: what happened, what usually causes it, and
//! what to do. Error pages, `explain logs` and the README's table read this one list.

pub struct Reason {
    pub name: &'static str,
    /// The HTTP status the user gets.
    pub status: &'static str,
    /// What happened, in one sentence.
    pub summary: &'static str,
    /// What usually causes it.
    pub cause: &'static str,
    /// What to check or change.
    pub fix: &'static str,
}

const fn r(
    name: &'static str,
    status: &'static str,
    summary: &'static str,
    cause: &'static str,
    fix: &'static str,
) -> Reason {
    Reason {
        name,
        status,
        summary,
        cause,
        fix,
    }
}

pub const REASONS: &[Reason] = &[
    r(
        "AuthMissingAWSALBAuthNonce",
        "401",
        "The browser came back from the login without the flow cookie.",
        "The callback reached a different host name than the one the login began on, the browser blocks the cookie (third-party or SameSite settings, private mode), or the login took longer than 15 minutes.",
        "Register https://<the app's host>/oauth2/idpresponse exactly at the provider, open the app by that host name, and check the browser's cookie settings.",
    ),
    r(
        "AuthInvalidAWSALBAuthNonce",
        "401",
        "The flow cookie could not be opened.",
        "Replicas do not share session keys (each made its own), the keys were rotated during the login, or the cookie was altered.",
        "Give every replica the same keys (the keys Secret in a cluster, --session-keys-file otherwise).",
    ),
    r(
        "AuthInvalidStateParam",
        "401",
        "The state parameter does not match the flow cookie.",
        "A callback URL was replayed or opened in another browser, or two logins crossed.",
        "Start again from the application; if it persists, look for a proxy that rewrites query strings.",
    ),
    r(
        "AuthMissingStateParam",
        "401",
        "The callback has no state parameter.",
        "The callback URL was opened by hand, or the provider dropped the parameter.",
        "Start the login from the application, not from a bookmark of the callback.",
    ),
    r(
        "AuthMissingCodeParam",
        "401",
        "The callback has no authorization code.",
        "The provider sent the browser back without a code (an unusual response mode or a broken redirect).",
        "Check that the provider's client uses the authorization-code flow (response_type=code).",
    ),
    r(
        "AuthInvalidGrantError",
        "401 (561 when the provider sent another error)",
        "The provider refused the login or the authorization code.",
        "The user denied consent, the code was used twice or expired, the redirect URI or PKCE verifier did not match, the provider returned an error to the callback, or (with some providers) the client id or secret is wrong.",
        "Read error and error_description in the log line's message; check the redirect URI registered at the provider.",
    ),
    r(
        "AuthInvalidIdToken",
        "401",
        "The ID token failed validation.",
        "The AuthRule's issuer differs from the token's iss (even a trailing slash), the clock is skewed by more than a minute, the client id is not the audience, or the token is signed with an algorithm other than RS256/ES256.",
        "Run `portcullis diagnose` on the AuthRule; compare the issuer with the provider's discovery document; check NTP.",
    ),
    r(
        "AuthInvalidTokenResponse",
        "401 or 500",
        "The token endpoint's answer is not an OpenID Connect token response.",
        "No ID token (scope without openid), or the endpoint is not the provider's token endpoint.",
        "Include openid in spec.oidc.scope; remove explicit endpoints to use discovery.",
    ),
    r(
        "AuthInvalidUserinfoResponse",
        "401 or 500",
        "The userinfo answer is invalid or names another user.",
        "The userinfo endpoint returns something other than JSON claims, or its sub differs from the ID token's.",
        "Check spec.oidc.userInfoEndpoint, or remove it to use discovery.",
    ),
    r(
        "AuthTokenEpRequestFailed",
        "500",
        "The token endpoint could not be reached or refused the request.",
        "Most often the provider answered 401 invalid_client (Keycloak: unauthorized_client): a wrong client secret or client id, the secret sent the wrong way (tokenEndpointAuthMethod), or with private_key_jwt a key the provider does not have or a federated token it does not trust. Otherwise no network path to the provider (egress policy, DNS, proxy), a TLS certificate Portcullis does not trust, or no ServiceAccount token mounted for the rule's namespace and audience.",
        "If the log or flow record says 401 invalid_client or unauthorized_client, fix the Secret named by spec.oidc.clientSecretRef (or clientId), or register the key of spec.oidc.clientKeyRef (`portcullis client-jwks`); `portcullis diagnose` tells a wrong secret from a wrong auth method from an unreachable endpoint. For a private CA use --idp-ca-file; for serviceAccountTokenAudience, the chart value serviceAccountTokens.",
    ),
    r(
        "AuthTokenEpRequestTimeout",
        "500",
        "The token endpoint did not answer in time.",
        "The provider is slow or overloaded, or packets are dropped on the way.",
        "Check the provider's health; raise --idp-timeout only if it is slow by design.",
    ),
    r(
        "AuthUserinfoEpRequestFailed",
        "500",
        "The userinfo endpoint could not be reached or answered an error.",
        "Network path, TLS trust, or the provider rejects the access token.",
        "Run `portcullis diagnose`; check the provider's logs for the userinfo call.",
    ),
    r(
        "AuthUserinfoEpRequestTimeout",
        "500",
        "The userinfo endpoint did not answer in time.",
        "The provider is slow or overloaded.",
        "Check the provider's health; raise --idp-timeout only if it is slow by design.",
    ),
    r(
        "AuthUserinfoResponseSizeExceeded",
        "500",
        "The user's claims and access token exceed 11 KiB.",
        "Large group lists or custom claims in userinfo.",
        "Request fewer scopes, or have the provider send group ids instead of names.",
    ),
    r(
        "AuthInvalidCookie",
        "302 to a new login (401 under deny)",
        "A session cookie was refused and a new login began.",
        "The cookie was made for another AuthRule or host, the session keys changed, or replicas do not share keys.",
        "Give every replica the same keys; expect this once after deliberately rotating all keys.",
    ),
    r(
        "AuthMissingHostHeader",
        "400",
        "A callback arrived without a Host header.",
        "An HTTP/1.0 client or a proxy that drops Host.",
        "Send Host; check proxies in front of Portcullis.",
    ),
    r(
        "AuthUnhandledException",
        "500",
        "An internal error during the login.",
        "A bug or an exhausted system resource.",
        "Report it with the trace id and the log lines around it.",
    ),
    r(
        "AuthLoginAbandoned",
        "none",
        "A login sent the browser to the provider, and the browser did not come back within --login-abandoned-after (2 minutes by default). Flow records, portcullis_auth_logins_abandoned_total and the AuthRule's status.recentAbandonedLogins count it; no request fails, so the access log has no such line.",
        "The provider refused the client id or the redirect URI (it shows its error page and never sends the browser back), or the user gave up at the provider's login page.",
        "Run `portcullis diagnose --rule <namespace>/<name>`: it sends the same login and shows what the provider answers. Many at once after a change point at the provider.",
    ),
    r(
        "AuthLoginWindowExpired",
        "401",
        "The callback came more than 15 minutes after the login began.",
        "The user left the provider's login page open.",
        "Start again from the application.",
    ),
    r(
        "AuthRequired",
        "401",
        "A script asked for a page that needs a login.",
        "An API call, fetch() or XHR (not a browser's top-level navigation: Sec-Fetch-Mode other than navigate, X-Requested-With, or no text/html in Accept) without a session; scripts cannot follow a login redirect.",
        "Open loginUrl from the JSON body in a browser, then retry the call.",
    ),
    r(
        "AuthDenied",
        "401",
        "The route needs a session and the AuthRule says deny.",
        "onUnauthenticatedRequest: deny, and the request has no session.",
        "Log in through a route whose rule authenticates, or change the mode.",
    ),
    r(
        "AuthRequiresHttps",
        "403",
        "A guarded route was reached over plain HTTP.",
        "Login cookies and tokens need HTTPS outside loopback; or TLS ends at a load balancer in front that is not a --trusted-proxy, or whose X-Forwarded-Proto / Forwarded proto values disagree.",
        "Give the Ingress a TLS certificate and use https://; behind a load balancer that ends TLS, start Portcullis with --trusted-proxy <its address or range> so its X-Forwarded-Proto: https counts.",
    ),
    r(
        "AuthRuleInvalid",
        "500",
        "The route's AuthRule is invalid, so the route is closed.",
        "A missing client Secret or key, an invalid issuer, or a field the CRD does not allow.",
        "kubectl describe authrule (or `portcullis check`) names the field and the fix.",
    ),
    r(
        "AuthRulePending",
        "503",
        "The route requires an AuthRule that has not attached yet, so the route is closed.",
        "The route's portcullis.dev/auth-rule annotation names an AuthRule that does not exist yet, was refused by the API server, or does not target it; or --require-auth-rule is set and no AuthRule guards it.",
        "`portcullis check` or the object's Events name the rule; create it, fix its targetRefs, or annotate a public route portcullis.dev/auth: none.",
    ),
    r(
        "AuthIdpDiscoveryFailed",
        "500",
        "The provider's discovery document or keys could not be read.",
        "A wrong issuer URL, no network path to the provider, or a TLS certificate Portcullis does not trust.",
        "Run `portcullis diagnose`; the issuer must serve /.well-known/openid-configuration.",
    ),
    r(
        "NoMatchingRoute",
        "404",
        "No Ingress rule matches the host and path.",
        "A host name or path not in any served Ingress, or an Ingress of another class.",
        "`portcullis check` or `kubectl get ingress -A`; check spec.ingressClassName.",
    ),
    r(
        "MissingHostHeader",
        "400",
        "The request has no valid Host header.",
        "An HTTP/1.0 client or a broken proxy.",
        "Send Host.",
    ),
    r(
        "AmbiguousRequestPath",
        "400",
        "The path could be read as another path by the backend, so it was refused (400).",
        "An encoded slash or backslash, a ;-parameter, a NUL or control character, or a broken %-escape; often a probe, sometimes an app that really uses such paths.",
        "If the app needs them, choose --escaped-slashes / --path-parameters normalize (or keep, when no backend decodes them); see the README's security section.",
    ),
    r(
        "AmbiguousHost",
        "400",
        "The request named more than one host, or a host that is not a valid name (400).",
        "Two Host headers, an absolute URL or HTTP/2 :authority that disagrees with Host, or user info in the host.",
        "Send one Host that matches the URL; check proxies in front of Portcullis that rewrite one but not the other.",
    ),
    r(
        "AuthInvalidLogoutToken",
        "400",
        "A back-channel logout token was refused (400).",
        "It is not signed by the provider of an AuthRule, not for its client, older than 10 minutes, already used, or not a logout token.",
        "Check the provider's backchannel_logout_uri registration and its clock; the log line says which check failed.",
    ),
    r(
        "AuthInvalidBearerToken",
        "401 (400 for several Authorization headers)",
        "A bearer token on a route whose AuthRule takes them was refused (401, WWW-Authenticate: Bearer error=\"invalid_token\").",
        "The token expired, is signed by another issuer or key, is for another API (aud), or lacks a claim spec.bearer.additionalClaims asks for; error_description and the log line say which check failed.",
        "Get a fresh token for the audience in spec.bearer.audiences from the issuer in spec.bearer.issuer; compare its claims (e.g. at jwt.io, offline) with spec.bearer.",
    ),
    r(
        "AuthBearerTokenRequired",
        "401",
        "The route takes bearer tokens only (an AuthRule without spec.oidc, or ALB's jwt-validation without a login), and the request carries none (401, WWW-Authenticate: Bearer).",
        "An API client that sent no Authorization header, or another scheme than Bearer; or a browser opening an API address.",
        "Send Authorization: Bearer <a JWT from the AuthRule's spec.bearer.issuer for one of its audiences, or from the issuer in the Ingress's jwt-validation for an audience in portcullis.dev/jwt-audiences>.",
    ),
    r(
        "AuthInvalidLogoutRequest",
        "400",
        "A front-channel logout request was refused (400).",
        "Its iss names no AuthRule of this host, or it has iss without sid (or sid without iss), or a parameter twice.",
        "Register https://<host>/oauth2/frontchannel-logout as the frontchannel_logout_uri of the client on that host, with frontchannel_logout_session_required.",
    ),
    r(
        "AuthLogoutSidTooLong",
        "400",
        "A front-channel logout request was refused because its sid is longer than 512 bytes (400).",
        "Providers' session ids are a few dozen characters; a longer one is usually a request made to fill memory, rarely a provider with unusually long session ids.",
        "If a real provider sends such sids, use its back-channel logout (signed tokens) instead; otherwise nothing to do: nothing was recorded.",
    ),
    r(
        "AuthSharedStateUnavailable",
        "503",
        "A session could not be checked because the shared state (Redis) cannot be reached (503).",
        "Redis is down, unreachable or slower than --redis-timeout-ms; a logout announced meanwhile could not be seen, so sessions are refused (--redis-unavailable refuse).",
        "Bring Redis back (portcullis_shared_state_up shows when it is); or, accepting that logouts wait for Redis, run with --redis-unavailable allow.",
    ),
    r(
        "AuthSessionStoreUnavailable",
        "503",
        "A session kept in Redis (spec.session.store: redis) could not be read, or a login's or refresh's session could not be written there (503).",
        "Redis is down, unreachable or slower than --redis-timeout-ms. The session itself lives there, so it is refused whatever --redis-unavailable says; nothing is deleted, and it passes again once Redis answers.",
        "Bring Redis back (portcullis_shared_state_up shows when it is); for rules that must serve through a Redis outage, use spec.session.store: cookie.",
    ),
    r(
        "AuthForbidden",
        "403",
        "The user is logged in, but the AuthRule's authorization refused this request (403).",
        "A rule of spec.authorization (or emailDomains / groups) does not allow this user here, or a claim it reads is not in the login: the provider sends it in neither the ID token nor userinfo, or sends different values in each (userinfo's is used).",
        "`portcullis explain flow <reference>` (the 403 page's reference) shows the login and the refusal: which rule refused, whether each claim it read was absent or present without a match and where it came from, the claim names present, and what to change at the provider. If the user should pass, change spec.authorization or what the provider sends; claims change at the next login or refresh.",
    ),
    r(
        "AuthClaimsOverage",
        "403",
        "The user is logged in, but a claim the AuthRule's authorization reads was left out by the provider, which named it in _claim_names instead (403).",
        "Entra ID puts no groups claim in a token for a user in more than 200 groups (more than 6 in an implicit flow) and sends _claim_names and _claim_sources pointing at Microsoft Graph; other providers do the same for distributed claims. Portcullis does not fetch them, so the rule cannot see the groups.",
        "At the provider, send fewer groups: in Entra ID set the app registration's groupMembershipClaims to ApplicationGroup (groups assigned to the application) or filter groups in the token configuration, or use app roles and set spec.authorization.groupsClaim: roles (rules read claims.roles). The log line and `portcullis explain flow <reference>` name the claim.",
    ),
    r(
        "AuthIssuerMismatch",
        "401",
        "The callback's iss parameter names another provider (RFC 9207).",
        "Two providers' logins crossed in one browser, or an attacker replayed another provider's response (mix-up).",
        "Start again from the application; if it persists, check that the AuthRule's issuer is exactly the provider's.",
    ),
    r(
        "SourceNotAllowed",
        "403",
        "The client's address is not in the Ingress's alb.ingress.kubernetes.io/inbound-cidrs, so the request was refused before any login or backend (403).",
        "A client outside the listed networks; or Portcullis sits behind a load balancer or proxy that is not a --trusted-proxy, so every request seems to come from that hop; or a trusted hop's X-Forwarded-For names the client it saw, outside the list.",
        "Add the client's network to inbound-cidrs; when a proxy is in front, start Portcullis with --trusted-proxy <its address or range> so X-Forwarded-For is read (the access log's client field shows the peer).",
    ),
    r(
        "ProxyProtocolHeaderRefused",
        "none: the connection is closed before any TLS or HTTP",
        "A connection to a listener named in --proxy-protocol did not start with a valid PROXY protocol header, so it was closed unserved; it is counted in portcullis_proxy_protocol_refused_total by reason (missing, malformed, too_large, truncated, empty, timeout, busy) and logged at most every 10 s (no access-log line: no request was read).",
        "The load balancer does not send PROXY protocol on this port (an NLB's target group without proxy_protocol_v2.enabled, a Service without service.beta.kubernetes.io/aws-load-balancer-proxy-protocol: \"*\"); something reaches the port around the load balancer (a kubelet probe, kubectl port-forward, another pod, a scan); or the header came slower than --header-read-timeout. empty alone is how a load balancer's TCP health check looks.",
        "Turn PROXY protocol on at the load balancer for exactly the listeners named in --proxy-protocol (or drop the listener from the flag); point probes at the admin port's /healthz; keep everything but the load balancer off the port (loadBalancerSourceRanges, a NetworkPolicy). The log line names the listener, the peer and the problem.",
    ),
    r(
        "AnnotationNotHonoured",
        "500",
        "The route's Ingress asks for an access control Portcullis cannot give (an internal scheme, a WAF, Shield, security groups), so the route is closed.",
        "An Ingress written for the AWS Load Balancer Controller with alb.ingress.kubernetes.io/scheme: internal (or no scheme: ALB's default is internal), wafv2-acl-arn, waf-acl-id, shield-advanced-protection: true, security-groups or security-group-prefix-lists.",
        "Put that control in front of Portcullis, then annotate the Ingress portcullis.dev/accept-alb-differences: <annotation names> (or start Portcullis with --accept-alb-differences); `portcullis check` names each annotation.",
    ),
    r(
        "AnnotationInvalid",
        "500",
        "An access-control annotation of the route's Ingress is malformed, so the route is closed.",
        "inbound-cidrs with an entry that is not a CIDR range, or a scheme, shield-advanced-protection or mutual-authentication value ALB would not read either; a mutual-authentication trustStore given as an AWS ARN, or on an Ingress with a rule that names no host.",
        "`portcullis check` (or the Ingress's Warning events) names the annotation and the fix.",
    ),
    r(
        "MisdirectedRequest",
        "421",
        "The request's host asks for client certificates (mutual TLS) in another way than the connection it came on was made for, so it was refused before any login or backend.",
        "A client that connected with the TLS server name (SNI) of another host, or with none, then named this host in Host or :authority; a browser reusing an HTTP/2 connection across hosts that share a certificate; a load balancer in front that ends TLS (--https-offloaded), so no client certificate reaches Portcullis.",
        "Connect with the host's own name as the TLS server name (curl --resolve, not an IP address plus a Host header); give hosts that share a connection the same mutual-authentication setting; let client certificates reach Portcullis's own HTTPS listener.",
    ),
    r(
        "MutualAuthenticationInvalid",
        "500",
        "The host asks for client certificates checked against a trust store that cannot be used, so its requests are refused.",
        "The trust store named by mutual-authentication (or --trust-store) is missing, holds no PEM CA certificate in ca.crt (Secret) or ca-bundle.crt (ConfigMap), its ca.crl is not a PEM CRL; or two Ingresses of the host ask for different client certificates.",
        "`portcullis check` (or the Ingress's Warning events) names the trust store and what is wrong with it; create or fix it, or make the Ingresses agree.",
    ),
    r(
        "BackendUnavailable",
        "503",
        "The Service is missing or has no ready endpoints.",
        "Pods not ready, a selector that matches nothing, or a wrong Service name or port.",
        "kubectl get endpointslices -l kubernetes.io/service-name=<service>.",
    ),
    r(
        "RouteInvalid",
        "500",
        "The HTTPRoute rule that matched cannot be served: a backendRef is refused or missing, a filter is unsupported, or a match of its HTTPRoute does not compile (then every rule of that HTTPRoute answers this, on each of its hosts).",
        "A backendRef to another namespace without a ReferenceGrant, a Service that does not exist, a non-Service kind, every weight 0, or a regular expression Portcullis cannot compile (RE2 syntax such as \\p{Lu} that regex-lite refuses, or one past the size bounds).",
        "kubectl get httproute <name> -o yaml shows the ResolvedRefs condition per parent; `portcullis check` names the field.",
    ),
    r(
        "RouteMatchTooLong",
        "400",
        "Which rule takes the request depends on a regular expression over a path, header or query value longer than 2 KiB, so the request was refused rather than given to the next rule.",
        "A rule tried before the one that would serve the request matches that input with a RegularExpression, and the request carries more than 2,048 bytes of it; often a probe.",
        "Send shorter values; if the application needs them, match that input exactly instead of with an expression. The log line names the input.",
    ),
    r(
        "RouteMatchAmbiguous",
        "400",
        "Which rule takes the request depends on a header or query parameter the request carries more than once (a query parameter also when another copy's name differs only in case), or a header value that is not text, so the route and the backend could read different values.",
        "A client or proxy that repeats a header or query parameter a HTTPRoute match reads (`?debug=0&debug=1`: the first value is not the one PHP or Rails read); often a probe.",
        "Send the header or parameter once. The log line names it.",
    ),
    r(
        "RouteTimeout",
        "504",
        "The request took longer than the HTTPRoute rule's timeouts.request.",
        "A slow backend or a timeout set too low.",
        "Raise timeouts.request on the rule, or look at the backend's latency (the access log's target_processing_time).",
    ),
    r(
        "TargetConnectionError",
        "502",
        "No endpoint accepted a connection.",
        "Pods crashing, a wrong targetPort, or a network policy.",
        "Check the pods' logs and the Service's targetPort.",
    ),
    r(
        "TargetResponseTimeout",
        "504",
        "The backend sent no response headers in time.",
        "A slow backend.",
        "Profile the backend, or raise --upstream-timeout.",
    ),
    r(
        "TargetResponseError",
        "502",
        "The backend's connection broke or its answer was not HTTP.",
        "The backend crashed mid-request or speaks another protocol on that port.",
        "Check the backend's logs for the trace id.",
    ),
    r(
        "RequestBodyIncomplete",
        "400",
        "The request's body broke off before its end, so it was not forwarded.",
        "On a route that mirrors or retries, a small body is read whole before it is sent; the client closed the connection or sent malformed chunked framing while it was read.",
        "Retry the request; if it keeps happening, check the client or any proxy in front of Portcullis for cut-off uploads.",
    ),
];

/// Every reason as a Markdown table (docs/troubleshooting.md is this, committed).
pub fn markdown() -> String {
    // Markdown table cells: `|` would end the cell, `<…>` would read as HTML.
    let cell = |s: &str| {
        s.replace('|', "\\|")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut out = String::from(
        "# Troubleshooting: every reason Portcullis reports\n\n\
         Generated from the catalogue the error pages, `explain logs`, `explain flow` and\n\
         status use (`portcullis explain reasons > docs/troubleshooting.md`; a test keeps it\n\
         current). The reason is the access log's `portcullis_reason` (and `error_reason`\n\
         where ALB writes the same code), the error page's reason and the label of\n\
         `portcullis_auth_logins_total`.\n\n\
         | reason | ALB's own | status | what happened | usual cause | fix |\n\
         |---|---|---|---|---|---|\n",
    );
    for r in REASONS {
        let alb = if crate::observe::access_log::ALB_REASONS.contains(&r.name) {
            "yes"
        } else {
            ""
        };
        out.push_str(&format!(
            "| `{}` | {alb} | {} | {} | {} | {} |\n",
            r.name,
            cell(r.status),
            cell(r.summary),
            cell(r.cause),
            cell(r.fix)
        ));
    }
    out
}

/// The entry for `name`, if it is one of ours or ALB's.
pub fn lookup(name: &str) -> Option<&'static Reason> {
    REASONS.iter().find(|r| r.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_listed_once_with_words_for_each_part() {
        for (i, r) in REASONS.iter().enumerate() {
            assert!(
                REASONS[i + 1..].iter().all(|o| o.name != r.name),
                "{} twice",
                r.name
            );
            assert!(!r.summary.is_empty() && !r.cause.is_empty() && !r.fix.is_empty());
        }
        assert!(lookup("AuthInvalidIdToken").is_some());
        assert!(lookup("Nonsense").is_none());
    }
}
