//! Calls to the identity provider: discovery, JWKS, the token and userinfo endpoints.
//! Every call has a timeout and a bound on the response size, follows no redirects,
//! and fails with ALB's reason for that hop.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::client_assertion::{AssertionError, ClientCredential, JWT_BEARER};
use super::id_token::Jwks;
use crate::compile::AuthPolicy;
use crate::form::form_encode;
use crate::model::TokenEndpointAuthMethod;
use resolver::ProviderResolver;

/// ALB's default IdP timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// What `diagnose` calls itself when it opens a provider's login page: some providers
/// answer clients that do not look like a browser with another page.
const BROWSER_AGENT: &str = "Mozilla/5.0 (compatible; portcullis-diagnose)";
/// An error body kept for logs and flow records, never shown to the user.
const MAX_ERROR_EXCERPT: usize = 256;

/// Which hop a failure happened on decides its reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hop {
    Discovery,
    Jwks,
    Token,
    Userinfo,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdpError {
    #[error("{hop:?} endpoint did not answer within {timeout:?}")]
    Timeout { hop: Hop, timeout: Duration },
    #[error("{hop:?} endpoint could not be reached: {detail}")]
    Unreachable { hop: Hop, detail: String },
    #[error("{hop:?} endpoint answered {status}: {excerpt}")]
    Status {
        hop: Hop,
        status: u16,
        excerpt: String,
    },
    #[error("{hop:?} endpoint's response is larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge { hop: Hop },
    #[error("{hop:?} endpoint's response is not what OpenID Connect requires: {detail}")]
    Invalid { hop: Hop, detail: String },
    #[error("the token endpoint refused the code: {error} {description}")]
    InvalidGrant { error: String, description: String },
    #[error("no client assertion for the token endpoint: {0}")]
    ClientAssertion(#[from] AssertionError),
}

impl IdpError {
    /// ALB's `error_reason`.
    pub fn reason(&self) -> &'static str {
        use Hop::*;
        match self {
            Self::InvalidGrant { .. } => "AuthInvalidGrantError",
            Self::Timeout { hop: Token, .. } => "AuthTokenEpRequestTimeout",
            Self::Timeout { hop: Userinfo, .. } => "AuthUserinfoEpRequestTimeout",
            Self::Unreachable { hop: Token, .. }
            | Self::Status { hop: Token, .. }
            | Self::ClientAssertion(_) => "AuthTokenEpRequestFailed",
            Self::Unreachable { hop: Userinfo, .. } | Self::Status { hop: Userinfo, .. } => {
                "AuthUserinfoEpRequestFailed"
            }
            Self::TooLarge { hop: Userinfo } => "AuthUserinfoResponseSizeExceeded",
            Self::Invalid { hop: Token, .. } | Self::TooLarge { hop: Token } => {
                "AuthInvalidTokenResponse"
            }
            Self::Invalid { hop: Userinfo, .. } => "AuthInvalidUserinfoResponse",
            // ALB checks discovery when a rule is saved; Portcullis reads it on first use.
            Self::Timeout {
                hop: Discovery | Jwks,
                ..
            }
            | Self::Unreachable {
                hop: Discovery | Jwks,
                ..
            }
            | Self::Status {
                hop: Discovery | Jwks,
                ..
            }
            | Self::TooLarge {
                hop: Discovery | Jwks,
            }
            | Self::Invalid {
                hop: Discovery | Jwks,
                ..
            } => "AuthIdpDiscoveryFailed",
        }
    }
}

/// The parts of a discovery document Portcullis uses.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ProviderMetadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    pub jwks_uri: String,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    #[serde(default)]
    pub id_token_signing_alg_values_supported: Option<Vec<String>>,
    /// How clients may authenticate at the token endpoint (default `client_secret_basic`).
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    /// The algorithms client assertions may be signed with.
    #[serde(default)]
    pub token_endpoint_auth_signing_alg_values_supported: Option<Vec<String>>,
    /// RFC 9207: the provider sends `iss` with every authorization response.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    #[serde(default)]
    pub id_token: Option<String>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// Seconds, as a number or (some providers) a numeric string.
    #[serde(default, deserialize_with = "lenient_seconds")]
    pub expires_in: Option<i64>,
}

/// `expires_in` as providers send it: an integer, a float, or a numeric string.
/// Anything else is treated as absent; the caller bounds the value.
fn lenient_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = Option::<Value>::deserialize(d)?;
    let seconds = match v {
        Some(Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Some(Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(|f| f as i64),
        _ => None,
    };
    Ok(seconds)
}

/// The client's registration, for the token endpoint.
pub struct ClientAuth<'a> {
    pub client_id: &'a str,
    pub credential: &'a ClientCredential,
    pub method: TokenEndpointAuthMethod,
    /// Resource indicators (RFC 8707) sent with every token request.
    pub resource: &'a [String],
}

impl<'a> ClientAuth<'a> {
    /// The client an AuthRule registers.
    pub fn of(policy: &'a AuthPolicy) -> Self {
        Self {
            client_id: &policy.client_id,
            credential: &policy.credential,
            method: policy.token_endpoint_auth_method,
            resource: &policy.resource,
        }
    }
}

/// A provider's page as a browser gets it, for `diagnose`: the status, where it
/// redirects, the cookies it sets, and the start of the body.
pub struct Page {
    pub status: StatusCode,
    pub location: Option<String>,
    /// `Set-Cookie` values, as sent.
    pub set_cookies: Vec<String>,
    /// At most `MAX_PAGE_BYTES`: error pages say what they say near the top.
    pub body: Bytes,
}

/// How much of a provider's page is read (some login pages are large).
const MAX_PAGE_BYTES: usize = 256 * 1024;

/// A provider's raw answer.
pub struct Answer {
    pub status: StatusCode,
    /// The `Date` header, as sent.
    pub date: Option<String>,
    pub body: Bytes,
}

pub struct IdpClient {
    http: Client<HttpsConnector<HttpConnector<ProviderResolver>>, Full<Bytes>>,
    timeout: Duration,
    /// Where ServiceAccount tokens for federated credentials are mounted.
    token_dir: std::path::PathBuf,
}

impl IdpClient {
    /// A client trusting the system's certificate authorities (and plain HTTP, which
    /// configuration allows for loopback development providers only).
    pub fn new(timeout: Duration) -> std::io::Result<Self> {
        Self::with_extra_roots(timeout, None)
    }

    /// As `new`, also trusting the PEM certificates in `extra_roots` (a provider
    /// behind a private certificate authority).
    pub fn with_extra_roots(
        timeout: Duration,
        extra_roots: Option<&[u8]>,
    ) -> std::io::Result<Self> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject as _;
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            // A system store may hold certificates rustls cannot use; skip those.
            let _ = roots.add(cert);
        }
        if let Some(pem) = extra_roots {
            let mut added = 0;
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| invalid(format!("not a PEM certificate: {e}")))?;
                roots.add(cert).map_err(|e| invalid(e.to_string()))?;
                added += 1;
            }
            if added == 0 {
                return Err(invalid("no certificate in the extra CA file".into()));
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http_connector());
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Ok(Self {
            http,
            timeout,
            token_dir: super::client_assertion::DEFAULT_TOKEN_DIR.into(),
        })
    }

    /// Reads federated ServiceAccount tokens from `dir` (`<dir>/<namespace>/<audience>`).
    pub fn with_token_dir(mut self, dir: std::path::PathBuf) -> Self {
        self.token_dir = dir;
        self
    }

    async fn call(
        &self,
        hop: Hop,
        req: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), IdpError> {
        self.exchange(hop, req).await.map(|a| (a.status, a.body))
    }

    /// A GET of `url` that succeeds on any HTTP answer: for checking that an endpoint
    /// is reachable, and how the provider's clock reads (`Date`).
    pub async fn probe(&self, hop: Hop, url: &str) -> Result<Answer, IdpError> {
        let req = Request::builder()
            .method(Method::GET)
            .uri(url)
            .header(ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| IdpError::Invalid {
                hop,
                detail: e.to_string(),
            })?;
        self.exchange(hop, req).await
    }

    /// A GET of `url` as a browser navigating sends it (HTML accepted, the cookies
    /// `cookie` names), without following redirects: `diagnose` walks the
    /// provider's answer to an authorization request one hop at a time.
    pub async fn browse(&self, url: &str, cookie: Option<&str>) -> Result<Page, IdpError> {
        let hop = Hop::Discovery;
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(url)
            .header(ACCEPT, "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8")
            .header(http::header::USER_AGENT, BROWSER_AGENT);
        if let Some(cookie) = cookie {
            req = req.header(http::header::COOKIE, cookie);
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| IdpError::Invalid {
                hop,
                detail: e.to_string(),
            })?;
        let exchange = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| IdpError::Unreachable {
                    hop,
                    detail: error_chain(&e),
                })?;
            let header = |name| {
                resp.headers()
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok().map(str::to_owned))
                    .collect::<Vec<_>>()
            };
            let location = header(http::header::LOCATION).into_iter().next();
            let set_cookies = header(http::header::SET_COOKIE);
            let status = resp.status();
            let mut body = resp.into_body();
            let mut read = Vec::new();
            while read.len() < MAX_PAGE_BYTES {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            read.extend_from_slice(&data);
                        }
                    }
                    Some(Err(e)) => {
                        return Err(IdpError::Unreachable {
                            hop,
                            detail: e.to_string(),
                        });
                    }
                    None => break,
                }
            }
            read.truncate(MAX_PAGE_BYTES);
            Ok(Page {
                status,
                location,
                set_cookies,
                body: read.into(),
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| IdpError::Timeout {
                hop,
                timeout: self.timeout,
            })?
    }

    async fn exchange(&self, hop: Hop, req: Request<Full<Bytes>>) -> Result<Answer, IdpError> {
        let exchange = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| IdpError::Unreachable {
                    hop,
                    detail: error_chain(&e),
                })?;
            let status = resp.status();
            let date = resp
                .headers()
                .get(http::header::DATE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        IdpError::TooLarge { hop }
                    } else {
                        IdpError::Unreachable {
                            hop,
                            detail: e.to_string(),
                        }
                    }
                })?;
            Ok(Answer {
                status,
                date,
                body: body.to_bytes(),
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| IdpError::Timeout {
                hop,
                timeout: self.timeout,
            })?
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        hop: Hop,
        url: &str,
        bearer: Option<&str>,
    ) -> Result<T, IdpError> {
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(url)
            .header(ACCEPT, "application/json");
        if let Some(token) = bearer {
            req = req.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| IdpError::Invalid {
                hop,
                detail: e.to_string(),
            })?;
        let (status, body) = self.call(hop, req).await?;
        if !status.is_success() {
            return Err(IdpError::Status {
                hop,
                status: status.as_u16(),
                excerpt: excerpt(&body),
            });
        }
        serde_json::from_slice(&body).map_err(|e| IdpError::Invalid {
            hop,
            detail: e.to_string(),
        })
    }

    /// Reads `<issuer>/.well-known/openid-configuration`; its `issuer` must be the
    /// configured one exactly (OIDC Discovery 4.3).
    pub async fn discover(&self, issuer: &str) -> Result<ProviderMetadata, IdpError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let meta: ProviderMetadata = self.get_json(Hop::Discovery, &url, None).await?;
        if meta.issuer != issuer {
            return Err(IdpError::Invalid {
                hop: Hop::Discovery,
                detail: format!("the document's issuer is {:?}, not {issuer:?}", meta.issuer),
            });
        }
        Ok(meta)
    }

    pub async fn jwks(&self, url: &str) -> Result<Jwks, IdpError> {
        self.get_json(Hop::Jwks, url, None).await
    }

    /// Redeems an authorization code (with its PKCE verifier).
    pub async fn redeem_code(
        &self,
        token_endpoint: &str,
        client: &ClientAuth<'_>,
        code: &str,
        redirect_uri: &str,
        pkce_verifier: &str,
    ) -> Result<TokenResponse, IdpError> {
        let form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", pkce_verifier),
        ];
        self.token_request(token_endpoint, client, &form).await
    }

    pub async fn refresh(
        &self,
        token_endpoint: &str,
        client: &ClientAuth<'_>,
        refresh_token: &str,
    ) -> Result<TokenResponse, IdpError> {
        let form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ];
        self.token_request(token_endpoint, client, &form).await
    }

    async fn token_request<'a>(
        &self,
        url: &str,
        client: &ClientAuth<'a>,
        form: &[(&'a str, &'a str)],
    ) -> Result<TokenResponse, IdpError> {
        let assertion = self.client_assertion(url, client).await?;
        let mut fields = form.to_vec();
        fields.extend(client.resource.iter().map(|r| ("resource", r.as_str())));
        let req = token_http_request(url, client, assertion.as_deref(), &mut fields)?;
        let (status, body) = self.call(Hop::Token, req).await?;
        token_answer(status, &body)
    }

    /// The JWT that authenticates a `private_key_jwt` client: signed afresh for this
    /// request (its audience the token endpoint), or the mounted ServiceAccount token.
    async fn client_assertion(
        &self,
        token_endpoint: &str,
        client: &ClientAuth<'_>,
    ) -> Result<Option<String>, IdpError> {
        Ok(match client.credential {
            ClientCredential::Secret(_) => None,
            ClientCredential::Key(key) => {
                let jti = super::identity::new_uuid().map_err(|e| IdpError::Invalid {
                    hop: Hop::Token,
                    detail: e.to_string(),
                })?;
                let now = jiff::Timestamp::now().as_second();
                Some(key.assertion(client.client_id, token_endpoint, now, &jti)?)
            }
            ClientCredential::ServiceAccountToken(token) => {
                Some(token.read(&self.token_dir).await?)
            }
        })
    }

    /// The user's claims; `sub` must be present (the caller compares it with the ID
    /// token's).
    pub async fn userinfo(
        &self,
        url: &str,
        access_token: &str,
    ) -> Result<Map<String, Value>, IdpError> {
        let claims: Map<String, Value> = self
            .get_json(Hop::Userinfo, url, Some(access_token))
            .await?;
        match claims.get("sub").and_then(Value::as_str) {
            Some(s) if !s.is_empty() => Ok(claims),
            _ => Err(IdpError::Invalid {
                hop: Hop::Userinfo,
                detail: "no sub claim".into(),
            }),
        }
    }
}

/// TCP for provider calls: names resolved without metadata addresses, and https
/// allowed (TLS is layered on top).
fn http_connector() -> HttpConnector<ProviderResolver> {
    let mut http = HttpConnector::new_with_resolver(ProviderResolver::new());
    http.enforce_http(false);
    http
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The POST to the token endpoint, with the client authenticated as it is configured to.
fn token_http_request<'a>(
    url: &str,
    client: &ClientAuth<'a>,
    assertion: Option<&'a str>,
    form: &mut Vec<(&'a str, &'a str)>,
) -> Result<Request<Full<Bytes>>, IdpError> {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(url)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(ACCEPT, "application/json");
    let secret = match client.credential {
        ClientCredential::Secret(secret) => secret.as_str(),
        _ => "",
    };
    match (client.method, assertion) {
        // RFC 7523 2.2: the assertion authenticates; client_id names the client.
        (_, Some(assertion)) => {
            form.push(("client_id", client.client_id));
            form.push(("client_assertion_type", JWT_BEARER));
            form.push(("client_assertion", assertion));
        }
        (TokenEndpointAuthMethod::ClientSecretPost, None) => {
            form.push(("client_id", client.client_id));
            form.push(("client_secret", secret));
        }
        (_, None) => {
            // RFC 6749 2.3.1: id and secret are form-encoded before Basic encoding.
            let pair = format!("{}:{}", form_encode(client.client_id), form_encode(secret));
            req = req.header(AUTHORIZATION, format!("Basic {}", STANDARD.encode(pair)));
        }
    }
    let body = form
        .iter()
        .map(|(k, v)| format!("{k}={}", form_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    req.body(Full::new(Bytes::from(body)))
        .map_err(|e| IdpError::Invalid {
            hop: Hop::Token,
            detail: e.to_string(),
        })
}

/// The token endpoint's answer: a bearer token, or the error the provider named.
fn token_answer(status: StatusCode, body: &[u8]) -> Result<TokenResponse, IdpError> {
    let hop = Hop::Token;
    if status == StatusCode::BAD_REQUEST || status == StatusCode::UNAUTHORIZED {
        return Err(token_error(status, body));
    }
    if !status.is_success() {
        return Err(IdpError::Status {
            hop,
            status: status.as_u16(),
            excerpt: excerpt(body),
        });
    }
    let token: TokenResponse = serde_json::from_slice(body).map_err(|e| IdpError::Invalid {
        hop,
        detail: e.to_string(),
    })?;
    if !token.token_type.eq_ignore_ascii_case("bearer") || token.access_token.is_empty() {
        return Err(IdpError::Invalid {
            hop,
            detail: format!(
                "token_type {:?} with an access token of {} bytes",
                token.token_type,
                token.access_token.len()
            ),
        });
    }
    Ok(token)
}

/// A 400 or 401 from the token endpoint: `invalid_grant` is told apart, since the
/// caller treats a dead refresh token differently from a broken provider.
fn token_error(status: StatusCode, body: &[u8]) -> IdpError {
    let err: Map<String, Value> = serde_json::from_slice(body).unwrap_or_default();
    let error = err
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let description = err
        .get("error_description")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .chars()
        .take(MAX_ERROR_EXCERPT)
        .collect();
    if error == "invalid_grant" {
        return IdpError::InvalidGrant { error, description };
    }
    IdpError::Status {
        hop: Hop::Token,
        status: status.as_u16(),
        excerpt: format!("{error} {description}").trim().to_owned(),
    }
}

fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(MAX_ERROR_EXCERPT)]).into_owned()
}

mod resolver;
#[cfg(test)]
mod tests;
