//! The `AuthRule` custom resource, defined once here; the CRD in `crds/` is generated
//! from these types, so the doc comments are what `kubectl explain` prints.

pub mod reference;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "portcullis.dev";
pub const CONTROLLER_NAME: &str = "portcullis.dev/ingress-controller";
/// The `controllerName` of GatewayClasses Portcullis serves, and the name it writes
/// route and policy status under.
pub const GATEWAY_CONTROLLER_NAME: &str = "portcullis.dev/gateway-controller";
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
pub const DEFAULT_COOKIE_NAME: &str = "AWSELBAuthSessionCookie";
pub const DEFAULT_SESSION_TIMEOUT_SECONDS: i64 = 604_800;
pub const DEFAULT_SCOPE: &str = "openid";
pub const DEFAULT_SECRET_KEY: &str = "client-secret";
pub const DEFAULT_CLIENT_KEY: &str = "tls.key";
/// Where the provider sends the browser back, on every guarded host (as ALB).
pub const CALLBACK_PATH: &str = "/oauth2/idpresponse";
pub const DEFAULT_LOGOUT_PATH: &str = "/oauth2/logout";
/// Where providers post back-channel logout tokens (any host; register it at the
/// provider as the client's `backchannel_logout_uri`).
pub const BACKCHANNEL_LOGOUT_PATH: &str = "/oauth2/backchannel-logout";
/// Where providers' logout pages send browsers with `iss` and `sid` (on every guarded
/// host; register it as the client's `frontchannel_logout_uri`).
pub const FRONTCHANNEL_LOGOUT_PATH: &str = "/oauth2/frontchannel-logout";
pub const MAX_EXTRA_PARAMS: usize = 10;

/// What an AuthRule asks for: the routes it guards, the OpenID provider it logs people in
/// with, the session it keeps, who may pass and how API clients with bearer tokens are
/// checked.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "portcullis.dev",
    version = "v1alpha1",
    kind = "AuthRule",
    namespaced,
    status = "AuthRuleStatus",
    shortname = "ar",
    category = "portcullis",
    doc = "An AuthRule logs people in with OpenID Connect before their requests reach the Ingresses, HTTPRoutes or Gateways it targets, the way AWS ALB's `authenticate-oidc` action does. Backends receive the user's identity in the `x-amzn-oidc-accesstoken`, `x-amzn-oidc-identity` and ES256-signed `x-amzn-oidc-data` headers. The controller reports in `status.conditions` whether the rule is accepted, its references resolve, its provider answers and it guards routes (`Ready`).",
    printcolumn = r#"{"name":"Issuer","type":"string","jsonPath":".spec.oidc.issuer"}"#,
    printcolumn = r#"{"name":"Unauthenticated","type":"string","jsonPath":".spec.onUnauthenticatedRequest"}"#,
    printcolumn = r#"{"name":"Routes","type":"integer","jsonPath":".status.attachedRoutes"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.oidc) || has(self.bearer)",
    "message": "set spec.oidc (browser logins), spec.bearer (API tokens), or both"
}]))]
pub struct AuthRuleSpec {
    /// The Ingresses, HTTPRoutes, GRPCRoutes and Gateways in this namespace whose
    /// routes this rule guards (1 to 16).
    #[schemars(length(min = 1, max = 16))]
    pub target_refs: Vec<TargetRef>,

    /// Request paths that need a login, as ALB listener-rule path patterns: `*` matches
    /// any run of characters, `?` exactly one, matching is case-sensitive and covers the
    /// whole path (for example `/auth*`). Empty means every path of the targets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub paths: Vec<String>,

    /// The OpenID provider and this application's client registration at it, for
    /// browser logins. Optional when `bearer` is set: the rule then takes bearer tokens
    /// only and never redirects (a request without a valid token gets 401).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcSpec>,

    /// The session cookie that a completed login sets.
    #[serde(default, skip_serializing_if = "SessionSpec::is_default")]
    pub session: SessionSpec,

    /// What a request without a valid session gets: `authenticate` sends the browser to
    /// the provider's login (default); `deny` answers 401; `allow` forwards the request
    /// without identity headers. On a rule without `oidc` there is no login: a request
    /// without a token gets 401 unless this is `allow`.
    #[serde(default)]
    pub on_unauthenticated_request: OnUnauthenticatedRequest,

    /// The logout address: it clears the session and sends the browser to the
    /// provider's `end_session_endpoint`.
    #[serde(default, skip_serializing_if = "LogoutSpec::is_default")]
    pub logout: LogoutSpec,

    /// Cross-origin requests. A CORS preflight (`OPTIONS` with one `Origin` and one
    /// `Access-Control-Request-Method`, no body) never carries a session, so by default
    /// it is answered like any request without one.
    #[serde(default, skip_serializing_if = "CorsSpec::is_default")]
    pub cors: CorsSpec,

    /// Who may pass once logged in. Without it every logged-in user may.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<AuthorizationSpec>,

    /// What the identity headers carry.
    #[serde(default, skip_serializing_if = "IdentityHeadersSpec::is_default")]
    pub identity_headers: IdentityHeadersSpec,

    /// Plain request headers made from the user's claims, header name to claim name,
    /// for backends that read them (oauth2-proxy's `X-Auth-Request-*`, Grafana's
    /// `auth.proxy`): e.g. `X-Auth-Request-Email: email`, `X-Auth-Request-Groups:
    /// groups`. Claims are the ID token's merged with userinfo's (a bearer token's for
    /// API clients). A string is sent as it is, an array as its elements joined with
    /// commas, another value as compact JSON; a value with a control character (CR,
    /// LF, NUL, TAB), a space at either end, an element with a comma, or more than
    /// 8 KiB is not sent, as if the claim were absent. These headers are removed from
    /// every request on the routes this rule guards, in any spelling, and set only
    /// for a request with a session or bearer token this rule accepted. At most 16;
    /// not `Host`, `Cookie`, `Authorization`, hop-by-hop or framing headers,
    /// `x-amzn-*`, or forwarding headers (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    pub claim_headers: BTreeMap<String, String>,

    /// API clients that send `Authorization: Bearer <JWT>` instead of a session
    /// cookie, as ALB's `jwt-validation` action: the token is checked and forwarded
    /// unchanged, with the identity headers made from its claims. A request with a
    /// bearer token is never redirected to a login; a bad token gets 401.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer: Option<BearerSpec>,
}

/// Bearer tokens (JWT access tokens) accepted next to browser sessions. The signature
/// (RS256 or ES256, with the issuer's keys), `iss`, `aud`, `exp`, and `nbf` and `iat`
/// when present are always checked.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.issuer.startsWith('https://') || self.issuer.matches('^http://(localhost|127[.]0[.]0[.]1|[[]::1[]])(:[0-9]+)?(/.*)?$')",
    "message": "bearer.issuer must be an https:// URL (http only for a loopback development provider)"
}]))]
pub struct BearerSpec {
    /// The issuer, exactly as in the tokens' `iss` claim (an `https://` URL). May be
    /// the same provider as `oidc.issuer`; its keys are then fetched once for both.
    #[schemars(length(min = 1, max = 2048))]
    pub issuer: String,
    /// Where the issuer publishes its keys (JWKS). Default: the `jwks_uri` of the
    /// issuer's discovery document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub jwks_uri: Option<String>,
    /// The token's `aud` must name at least one of these (an API identifier such as
    /// `https://api.example.com`; not a browser client's id, or ID tokens would pass).
    #[schemars(length(min = 1, max = 16))]
    pub audiences: Vec<String>,
    /// Further claims the token must carry, in ALB's shape (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub additional_claims: Vec<AdditionalClaim>,
}

/// A claim a bearer token must carry, as ALB's `jwt-validation` additional claims.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!(self.name in ['exp', 'iss', 'nbf', 'iat', 'aud'])",
    "message": "exp, iss, nbf and iat are always checked, and aud is spec.bearer.audiences: not additional claims"
}]))]
pub struct AdditionalClaim {
    /// The claim's name; not `exp`, `iss`, `nbf`, `iat` (always checked) or `aud`
    /// (see `audiences`).
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// How the claim holds its values: `single-string` (the claim is one of
    /// `values`), `string-array` or `space-separated-values` (the claim lists every
    /// one of `values`, e.g. scopes).
    pub format: ClaimFormat,
    /// 1 to 10 values of at most 256 characters (without spaces for
    /// `space-separated-values`).
    #[schemars(length(min = 1, max = 10))]
    pub values: Vec<String>,
}

/// The shape of an additional claim's value.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ClaimFormat {
    /// One string, which must be one of the values.
    #[serde(rename = "single-string")]
    SingleString,
    /// An array of strings, which must hold every value.
    #[serde(rename = "string-array")]
    StringArray,
    /// One string of space-separated words (like `scope`), which must hold every value.
    #[serde(rename = "space-separated-values")]
    SpaceSeparatedValues,
}

/// Who may pass, decided after the login: the short forms first (each must hold), then
/// the rules in order (the first whose paths and `when` match decides), then
/// `defaultAction`. A refused request gets 403 `AuthForbidden`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationSpec {
    /// What a request no rule decides gets. Default `Deny` when rules are given,
    /// `Allow` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_action: Option<AuthorizationAction>,
    /// Rules in order; the first that matches decides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub rules: Vec<AuthorizationRule>,
    /// Only users whose `email` claim ends in `@` one of these (e.g. `corp.example`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub email_domains: Vec<String>,
    /// Only users in at least one of these groups (read from `groupsClaim`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub groups: Vec<String>,
    /// The claim that lists the user's groups (an array or a space-separated string).
    /// Default `groups`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_claim: Option<String>,
}

/// One authorization rule.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationRule {
    /// A name for logs, metrics and the 403 page.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// ALB path patterns the rule applies to; default every guarded path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub paths: Vec<String>,
    /// A CEL expression over `claims` (the user's claims, or the bearer token's),
    /// `request` (`method`, `path`, `host`, `headers` with lower-case names,
    /// `sourceIp`: the client's address as `inbound-cidrs` reads it, and `clientCert`
    /// with mutual TLS) and
    /// `source` (`session` or `bearer`), e.g.
    /// `'admins' in claims.groups && claims.email.endsWith('@corp.example')`.
    #[schemars(length(min = 1, max = 4096))]
    pub when: String,
    /// `Allow` or `Deny`.
    pub action: AuthorizationAction,
}

/// What an authorization rule does with a request it matches.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AuthorizationAction {
    Allow,
    Deny,
}

/// What the identity headers (`x-amzn-oidc-*`) carry.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct IdentityHeadersSpec {
    /// The claims `x-amzn-oidc-data` carries for a session: `UserInfo` (default) is
    /// the userinfo response alone, exactly as ALB sends it; `IdTokenAndUserInfo` adds
    /// the ID token's claims (for providers that put groups or roles only there),
    /// userinfo's winning where both have a claim, the ID token's own `iss`, `aud`,
    /// `exp`, `iat`, `nbf`, `nonce`, `at_hash`, `c_hash`, `s_hash`, `auth_time`, `azp`,
    /// `sid`, `jti` and `typ` left out. Authorization and `claimHeaders` always read
    /// the ID token's claims with userinfo's. A bearer token's header carries the
    /// token's own claims either way.
    #[serde(default)]
    pub claims_from: ClaimsFrom,
}

impl IdentityHeadersSpec {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Which claims `x-amzn-oidc-data` carries.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum ClaimsFrom {
    /// The userinfo response, as ALB.
    #[default]
    UserInfo,
    /// The ID token's claims merged with userinfo's (userinfo's winning).
    IdTokenAndUserInfo,
}

/// How CORS preflights on guarded paths are treated.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct CorsSpec {
    /// Forward preflights without a body to the backend without a session, so the
    /// backend answers them itself. Default false.
    #[serde(default)]
    pub allow_preflight: bool,
}

impl CorsSpec {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Logout: the path that ends a session and where the browser may land afterwards.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct LogoutSpec {
    /// Path on every host of the targets that logs out. Default `/oauth2/logout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub path: Option<String>,
    /// Absolute URLs the browser may be sent to after logout, chosen with the logout
    /// request's `redirect` parameter (the first is the default). Each must also be
    /// registered at the provider as a post-logout redirect URI. When the provider has
    /// no `end_session_endpoint`, a same-origin path in `redirect` is followed too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub post_logout_redirect_uris: Vec<String>,
}

impl LogoutSpec {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// An Ingress, HTTPRoute, GRPCRoute or Gateway, in the AuthRule's namespace, that the
/// rule guards.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "(self.group == 'networking.k8s.io' && self.kind == 'Ingress') || (self.group == 'gateway.networking.k8s.io' && (self.kind == 'HTTPRoute' || self.kind == 'GRPCRoute' || self.kind == 'Gateway'))",
        "message": "targets are Ingresses (group networking.k8s.io), HTTPRoutes, GRPCRoutes or Gateways (group gateway.networking.k8s.io)"
    },
    {
        "rule": "!has(self.sectionName) || self.kind != 'Ingress'",
        "message": "sectionName names a rule of an HTTPRoute or GRPCRoute or a listener of a Gateway; an Ingress has none"
    }
]))]
pub struct TargetRef {
    /// API group of the target: `networking.k8s.io` for an Ingress,
    /// `gateway.networking.k8s.io` for an HTTPRoute, a GRPCRoute or a Gateway.
    #[serde(default = "default_target_group")]
    pub group: String,
    /// Kind of the target: `Ingress`, `HTTPRoute` or `GRPCRoute` (its rules) or
    /// `Gateway` (every route attached to it).
    #[serde(default = "default_target_kind")]
    pub kind: String,
    /// Name of the target, in the AuthRule's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// For an HTTPRoute or GRPCRoute, the `name` of one of its rules; for a Gateway,
    /// the name of one listener. Unset: the whole object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub section_name: Option<String>,
}

fn default_target_group() -> String {
    "networking.k8s.io".into()
}

fn default_target_kind() -> String {
    "Ingress".into()
}

/// The OpenID provider and the client registered at it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.issuer.startsWith('https://') || self.issuer.matches('^http://(localhost|127[.]0[.]0[.]1|[[]::1[]])(:[0-9]+)?(/.*)?$')",
        "message": "issuer must be an https:// URL (http only for a loopback development provider)"
    },
    {
        "rule": "!has(self.scope) || self.scope.matches('(^| )openid( |$)')",
        "message": "scope must include openid"
    },
    {
        "rule": "has(self.clientSecretRef) != (has(self.tokenEndpointAuthMethod) && self.tokenEndpointAuthMethod == 'private_key_jwt')",
        "message": "client_secret_basic and client_secret_post need clientSecretRef; private_key_jwt uses clientKeyRef or serviceAccountTokenAudience instead"
    },
    {
        "rule": "!has(self.tokenEndpointAuthMethod) || self.tokenEndpointAuthMethod != 'private_key_jwt' || has(self.clientKeyRef) != has(self.serviceAccountTokenAudience)",
        "message": "private_key_jwt needs exactly one of clientKeyRef (a private key in a Secret) and serviceAccountTokenAudience (Portcullis's ServiceAccount token)"
    }
]))]
pub struct OidcSpec {
    /// The provider's issuer identifier, an `https://` URL exactly as it appears in the
    /// ID token's `iss` claim. When the endpoints below are not all given, they are read
    /// from `<issuer>/.well-known/openid-configuration`.
    #[schemars(length(min = 1, max = 2048))]
    pub issuer: String,
    /// The provider's authorization endpoint (where browsers are sent to log in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_endpoint: Option<String>,
    /// The provider's token endpoint (where the code is redeemed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint: Option<String>,
    /// The provider's userinfo endpoint (where the user's claims are read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_info_endpoint: Option<String>,
    /// The client identifier registered at the provider.
    #[schemars(length(min = 1, max = 512))]
    pub client_id: String,
    /// The Secret key, in this namespace, that holds the client secret; required for
    /// `client_secret_basic` and `client_secret_post`, unused with `private_key_jwt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_ref: Option<SecretKeyRef>,
    /// Space-separated scopes to request; must include `openid`. Default `openid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Up to 10 extra query parameters sent to the authorization endpoint, for example
    /// `prompt: login`, or `access_type: offline` with `prompt: consent` for Google's
    /// refresh tokens. Keys are letters, digits, `_`, `-`, `.` and `~`, and not one of
    /// the parameters Portcullis sets itself (`client_id`, `redirect_uri`, `scope`,
    /// `state`, `nonce`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub authentication_request_extra_params: BTreeMap<String, String>,
    /// How the client authenticates at the token endpoint: `client_secret_basic`
    /// (default, HTTP Basic), `client_secret_post` (form fields) or `private_key_jwt`
    /// (a signed JWT, RFC 7523, from `clientKeyRef` or `serviceAccountTokenAudience`).
    #[serde(default)]
    pub token_endpoint_auth_method: TokenEndpointAuthMethod,
    /// For `private_key_jwt`: the Secret key, in this namespace, holding the client's
    /// private key (PEM; RSA signs RS256, P-256 ES256). Each token request carries a
    /// JWT signed with it (`iss` and `sub` the client id, `aud` the token endpoint,
    /// valid 60 s, `kid` the key's RFC 7638 thumbprint); register the public key
    /// (`portcullis client-jwks`) at the provider. When the Secret also has `tls.crt`,
    /// the JWT names that certificate (`x5t`, `x5t#S256`), as Entra ID expects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_ref: Option<ClientKeyRef>,
    /// For `private_key_jwt` with a federated credential (a provider that trusts the
    /// cluster's ServiceAccount issuer, such as Entra ID): the audience of Portcullis's own ServiceAccount
    /// token, sent as the client assertion, e.g. `api://AzureADTokenExchange`. The
    /// token is read at every token request from the projected volume the operator
    /// mounts for this namespace and audience (chart value `serviceAccountTokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub service_account_token_audience: Option<String>,
    /// Resource indicators (RFC 8707): absolute URIs without a fragment of the APIs
    /// the access token is for, sent as `resource` in the authorization request and
    /// in every token request (code and refresh). Portcullis reads userinfo with that
    /// access token, as ALB: the provider must accept it there (oidc-provider, for
    /// one, refuses a token bound to another resource, and takes one resource per
    /// token request).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub resource: Vec<String>,
}

/// The key of a Secret in the AuthRule's namespace that holds a private key.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientKeyRef {
    /// Name of the Secret (a `kubernetes.io/tls` Secret fits).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret's data holding the PEM private key. Default `tls.key`.
    #[serde(default = "default_client_key")]
    pub key: String,
}

fn default_client_key() -> String {
    DEFAULT_CLIENT_KEY.into()
}

/// A key of a Secret in the AuthRule's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret's data. Default `client-secret`.
    #[serde(default = "default_secret_key")]
    pub key: String,
}

fn default_secret_key() -> String {
    DEFAULT_SECRET_KEY.into()
}

/// The session cookie.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct SessionSpec {
    /// Cookie name; large sessions are split into `NAME-0` .. `NAME-3`.
    /// Default `AWSELBAuthSessionCookie`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie_name: Option<String>,
    /// Session lifetime in seconds, at least 1. Default 604800 (7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 604800))]
    pub timeout: Option<i64>,
    /// One login for every host under this domain (`example.com` or `.example.com`):
    /// the session cookie carries `Domain=`, and rules of this namespace with the same
    /// domain, issuer, client id and cookie name accept each other's sessions. It must
    /// be a parent of every host the rule guards, not a public suffix (`com`,
    /// `co.uk`), and no host under it may be served by a route of another namespace.
    /// Without `cookieName` the cookie is named after those four
    /// (`AWSELBAuthSessionCookie-<8 hex digits>`). Default: each host keeps its own
    /// session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub cookie_domain: Option<String>,
    /// Where the session lives: `cookie` (default, as ALB: sealed into the cookies, at
    /// most 4 of 4 KiB, a larger login is a 500) or `redis` (the cookie holds a random
    /// id; tokens and claims sit sealed in the Redis of `--redis-url`, up to 1 MiB).
    #[serde(default, skip_serializing_if = "SessionStore::is_cookie")]
    pub store: SessionStore,
}

/// Where a session's tokens and claims are kept.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum SessionStore {
    /// Sealed into the session cookies.
    #[default]
    Cookie,
    /// Sealed in Redis; the cookie holds a sealed random id.
    Redis,
}

impl SessionStore {
    fn is_cookie(&self) -> bool {
        *self == Self::Cookie
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Cookie => "cookie",
            Self::Redis => "redis",
        }
    }
}

impl SessionSpec {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// What a request without a valid session gets.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnUnauthenticatedRequest {
    /// Redirect to the provider's login.
    #[default]
    Authenticate,
    /// Answer 401.
    Deny,
    /// Forward without identity headers.
    Allow,
}

/// Client authentication at the token endpoint.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum TokenEndpointAuthMethod {
    /// HTTP Basic authentication.
    #[default]
    #[serde(rename = "client_secret_basic")]
    ClientSecretBasic,
    /// Client id and secret as form fields.
    #[serde(rename = "client_secret_post")]
    ClientSecretPost,
    /// A signed JWT as `client_assertion` (RFC 7523), no secret.
    #[serde(rename = "private_key_jwt")]
    PrivateKeyJwt,
}

impl TokenEndpointAuthMethod {
    /// The name in `token_endpoint_auth_methods_supported`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::PrivateKeyJwt => "private_key_jwt",
        }
    }
}

/// What the controller observed of this AuthRule.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthRuleStatus {
    /// `Accepted` (the spec is valid), `ResolvedRefs` (the client Secret and the targets
    /// exist), `Ready` (it guards at least one route), and once the provider has been
    /// asked, `IdPReachable` (discovery and keys load) and `CredentialsAccepted` (the
    /// token endpoint takes the client's credentials). A False condition's message
    /// names the field and the fix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` these conditions describe; older than
    /// `metadata.generation` while the controller has not yet read the latest spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// How many routes (Ingress paths and HTTPRoute rules) this rule guards.
    #[serde(default)]
    pub attached_routes: i32,
    /// Failed logins among the recent ones the status-writing replica saw, by
    /// `error_reason` (`kubectl port-forward` to the admin port, then `/flows`, for details).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub recent_login_failures: BTreeMap<String, i32>,
    /// Logins the status-writing replica counted abandoned lately: sent to the
    /// provider, never back (the provider refused the client id or the redirect URI,
    /// or the user gave up; `portcullis diagnose --rule namespace/name` sends the same
    /// login and shows the provider's answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent_abandoned_logins: Option<RecentCount>,
    /// For Gateway API targets: one entry per Gateway the guarded routes attach to,
    /// as Gateway API policies report (PolicyAncestorStatus).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ancestors: Vec<PolicyAncestorStatus>,
}

/// How many times something happened in the last `windowSeconds`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecentCount {
    pub count: i32,
    pub window_seconds: i64,
}

/// Gateway API's PolicyAncestorStatus: how this policy stands at one Gateway.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyAncestorStatus {
    /// The Gateway the guarded routes attach to.
    pub ancestor_ref: ParentReference,
    /// `portcullis.dev/gateway-controller`.
    pub controller_name: String,
    /// `Accepted`, as the AuthRule's own.
    pub conditions: Vec<Condition>,
}

/// Gateway API's ParentReference.
#[derive(
    Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    /// `gateway.networking.k8s.io`.
    pub group: String,
    /// `Gateway`.
    pub kind: String,
    /// The Gateway's namespace.
    pub namespace: String,
    /// The Gateway's name.
    pub name: String,
    /// The Gateway listener, when the rule targets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// An ALB listener-rule path pattern: `*` any run, `?` one character, whole path.
pub fn path_pattern_matches(pattern: &str, path: &str) -> bool {
    let (p, s) = (pattern.as_bytes(), path.as_bytes());
    let (mut pi, mut si) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'*') => {
                backtrack = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match backtrack {
                Some((bp, bs)) => {
                    pi = bp + 1;
                    si = bs + 1;
                    backtrack = Some((bp, bs + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// A DNS name: dot-separated labels of letters, digits and `-`, at most 253 bytes.
pub fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `https://` URLs, or `http://` to a loopback host (development providers).
pub fn check_endpoint_url(url: &str) -> Result<(), &'static str> {
    let rest = if let Some(rest) = url.strip_prefix("https://") {
        rest
    } else if let Some(rest) = url.strip_prefix("http://") {
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host = host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        });
        if !matches!(host, "localhost" | "127.0.0.1" | "[::1]") {
            return Err("must use https (http only for a loopback development provider)");
        }
        rest
    } else {
        return Err("must be an https:// URL");
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty()
        || authority.contains('@')
        || url.bytes().any(|b| b.is_ascii_control() || b == b' ')
        || url.contains('#')
    {
        return Err("is not a valid URL (no user info, spaces or fragments)");
    }
    if is_metadata_host(authority) {
        return Err("points at a link-local or cloud metadata address");
    }
    Ok(())
}

/// Link-local addresses (where cloud instance metadata lives) and the metadata
/// services' own names: never an identity provider.
fn is_metadata_host(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if matches!(host.as_str(), "metadata.google.internal" | "metadata") {
        return true;
    }
    host.parse().is_ok_and(is_metadata_ip)
}

/// Link-local addresses (169.254.0.0/16, fe80::/10) and the other addresses cloud
/// instance metadata answers on.
pub fn is_metadata_ip(ip: std::net::IpAddr) -> bool {
    match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => v4.is_link_local() || v4.octets() == [100, 100, 100, 200],
        std::net::IpAddr::V6(v6) => {
            (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6 == std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_patterns_follow_alb_rules() {
        assert!(path_pattern_matches("/auth*", "/auth"));
        assert!(path_pattern_matches("/auth*", "/auth/x/y"));
        assert!(path_pattern_matches("/auth*", "/authors"));
        assert!(!path_pattern_matches("/auth*", "/Auth"));
        assert!(!path_pattern_matches("/auth*", "/public/auth"));
        assert!(path_pattern_matches("/a?c", "/abc"));
        assert!(!path_pattern_matches("/a?c", "/abbc"));
        assert!(path_pattern_matches("*/admin/*", "/x/admin/y"));
        assert!(!path_pattern_matches("/exact", "/exact/"));
        assert!(path_pattern_matches("*", "/"));
    }

    #[test]
    fn spec_defaults_are_albs() {
        let yaml = r#"
targetRefs: [{name: web}]
oidc:
  issuer: https://idp.example.com
  clientId: app
  clientSecretRef: {name: idp}
"#;
        let spec: AuthRuleSpec = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(
            spec.on_unauthenticated_request,
            OnUnauthenticatedRequest::Authenticate
        );
        let oidc = spec.oidc.as_ref().unwrap();
        assert_eq!(
            oidc.token_endpoint_auth_method,
            TokenEndpointAuthMethod::ClientSecretBasic
        );
        assert_eq!(
            oidc.client_secret_ref.as_ref().unwrap().key,
            DEFAULT_SECRET_KEY
        );
        assert_eq!(spec.target_refs[0].kind, "Ingress");
        assert!(spec.paths.is_empty());
    }
}
