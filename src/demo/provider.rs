//! A development OpenID provider, for `portcullis demo` only: loopback, one client,
//! any user name logs in without a password. It speaks enough of OpenID Connect for
//! the authorization-code flow with PKCE (discovery, JWKS, authorize, token with
//! refresh, userinfo, end session) and signs ID tokens with ES256.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::{Method, Response, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::{Received, serve};
use crate::auth::identity::{IdentityError, SigningKey, new_uuid};
use crate::form::{form_decode, form_encode, form_pairs};
use crate::proxy::Body;
use crate::proxy::pages::{full, redirect};

pub const DEMO_CLIENT_ID: &str = "portcullis-demo";
const CODE_LIFETIME: Duration = Duration::from_secs(60);
const ACCESS_TOKEN_SECS: u64 = 300;
const MAX_GRANTS: usize = 10_000;

struct Grant {
    user: String,
    nonce: Option<String>,
    challenge: Option<String>,
    redirect_uri: String,
    issued: Instant,
}

struct State {
    issuer: String,
    client_secret: String,
    /// Callback URLs registered for the client (exact match, as OpenID requires).
    redirect_uris: Vec<String>,
    post_logout_uris: Vec<String>,
    key: SigningKey,
    codes: Mutex<HashMap<String, Grant>>,
    /// Access and refresh tokens to the user they belong to.
    tokens: Mutex<HashMap<String, String>>,
}

pub struct DevProvider {
    pub issuer: String,
    pub client_secret: String,
}

impl DevProvider {
    /// Starts the provider on `listener` (loopback) for a client whose callback is one
    /// of `redirect_uris`.
    pub fn start(
        listener: TcpListener,
        redirect_uris: Vec<String>,
        post_logout_uris: Vec<String>,
    ) -> Result<Self, IdentityError> {
        let addr = listener
            .local_addr()
            .map_err(|e| IdentityError::InvalidKey(e.to_string()))?;
        let issuer = format!("http://{addr}");
        let client_secret = new_uuid()?;
        let state = Arc::new(State {
            issuer: issuer.clone(),
            client_secret: client_secret.clone(),
            redirect_uris,
            post_logout_uris,
            key: SigningKey::generate()?,
            codes: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
        });
        let handler = Arc::new(move |req: Received| {
            let state = state.clone();
            async move { state.answer(req) }
        });
        tokio::spawn(serve(listener, handler));
        Ok(Self {
            issuer,
            client_secret,
        })
    }
}

impl State {
    fn answer(&self, req: Received) -> Response<Body> {
        let query = form_pairs(req.parts.uri.query().unwrap_or(""));
        match (&req.parts.method, req.parts.uri.path()) {
            (&Method::GET, "/.well-known/openid-configuration") => json_response(self.discovery()),
            (&Method::GET, "/jwks") => json_response(json!({ "keys": [self.key.jwk()] })),
            (&Method::GET, "/authorize") => self.login_page(&query),
            (&Method::POST, "/authorize") => {
                self.authorize(&form_pairs(&String::from_utf8_lossy(&req.body)))
            }
            (&Method::POST, "/token") => self.token(&req),
            (&Method::GET, "/userinfo") => self.userinfo(&req),
            (&Method::GET, "/logout") => self.logout(&query),
            _ => text(StatusCode::NOT_FOUND, "not found"),
        }
    }

    fn discovery(&self) -> Value {
        let i = &self.issuer;
        json!({
            "issuer": i,
            "authorization_endpoint": format!("{i}/authorize"),
            "token_endpoint": format!("{i}/token"),
            "userinfo_endpoint": format!("{i}/userinfo"),
            "jwks_uri": format!("{i}/jwks"),
            "end_session_endpoint": format!("{i}/logout"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": ["openid", "email", "profile"],
        })
    }

    /// The checks an authorization request must pass before anyone sees a form.
    fn check_request(&self, q: &HashMap<String, String>) -> Result<(), &'static str> {
        if q.get("client_id").map(String::as_str) != Some(DEMO_CLIENT_ID) {
            return Err("unknown client_id");
        }
        if !q
            .get("redirect_uri")
            .is_some_and(|r| self.redirect_uris.contains(r))
        {
            return Err("redirect_uri is not registered for this client");
        }
        if q.get("response_type").map(String::as_str) != Some("code") {
            return Err("response_type must be code");
        }
        Ok(())
    }

    fn login_page(&self, q: &HashMap<String, String>) -> Response<Body> {
        if let Err(e) = self.check_request(q) {
            return text(StatusCode::BAD_REQUEST, e);
        }
        let hidden: String = q
            .iter()
            .map(|(k, v)| {
                format!(
                    r#"<input type="hidden" name="{}" value="{}">"#,
                    escape(k),
                    escape(v)
                )
            })
            .collect();
        let page = format!(
            r#"<!doctype html><html><head><meta charset="utf-8"><title>Demo provider: log in</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto}}input,button{{font-size:1rem;padding:.4rem}}</style></head>
<body><h1>Log in</h1><p><strong>Development provider of <code>portcullis demo</code>.</strong> Any name logs in; there is no password. Never use it for anything real.</p>
<form method="post" action="/authorize">{hidden}<label>User name <input name="login" value="alice" autofocus required></label> <button type="submit">Log in</button></form></body></html>"#
        );
        html(StatusCode::OK, page)
    }

    fn authorize(&self, form: &HashMap<String, String>) -> Response<Body> {
        if let Err(e) = self.check_request(form) {
            return text(StatusCode::BAD_REQUEST, e);
        }
        let user = form.get("login").map(|s| s.trim()).unwrap_or_default();
        if user.is_empty() || user.len() > 64 {
            return text(StatusCode::BAD_REQUEST, "a user name of 1 to 64 characters");
        }
        let Ok(code) = new_uuid() else {
            return text(StatusCode::INTERNAL_SERVER_ERROR, "no randomness");
        };
        let redirect_uri = form.get("redirect_uri").cloned().unwrap_or_default();
        if let Ok(mut codes) = self.codes.lock() {
            codes.retain(|_, g| g.issued.elapsed() < CODE_LIFETIME);
            if codes.len() >= MAX_GRANTS {
                return text(StatusCode::SERVICE_UNAVAILABLE, "too many logins in flight");
            }
            codes.insert(
                code.clone(),
                Grant {
                    user: user.to_owned(),
                    nonce: form.get("nonce").cloned(),
                    challenge: form.get("code_challenge").cloned(),
                    redirect_uri: redirect_uri.clone(),
                    issued: Instant::now(),
                },
            );
        }
        let mut location = format!("{redirect_uri}?code={code}");
        if let Some(state) = form.get("state") {
            location.push_str(&format!("&state={}", form_encode(state)));
        }
        redirect(StatusCode::FOUND, &location)
    }

    fn token(&self, req: &Received) -> Response<Body> {
        let form = form_pairs(&String::from_utf8_lossy(&req.body));
        if !self.client_authenticated(req, &form) {
            return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
        }
        match form.get("grant_type").map(String::as_str) {
            Some("authorization_code") => self.redeem(&form),
            Some("refresh_token") => {
                let user = form
                    .get("refresh_token")
                    .and_then(|t| self.tokens.lock().ok()?.get(t).cloned());
                match user {
                    Some(user) => self.issue_tokens(&user, None),
                    None => oauth_error(StatusCode::BAD_REQUEST, "invalid_grant"),
                }
            }
            _ => oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
        }
    }

    fn client_authenticated(&self, req: &Received, form: &HashMap<String, String>) -> bool {
        let basic = req
            .parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|pair| {
                let (id, secret) = pair.split_once(':')?;
                Some((form_decode(id), form_decode(secret)))
            });
        let (id, secret) = basic.unwrap_or_else(|| {
            (
                form.get("client_id").cloned().unwrap_or_default(),
                form.get("client_secret").cloned().unwrap_or_default(),
            )
        });
        id == DEMO_CLIENT_ID && secret == self.client_secret
    }

    fn redeem(&self, form: &HashMap<String, String>) -> Response<Body> {
        let grant = form
            .get("code")
            .and_then(|c| self.codes.lock().ok()?.remove(c))
            .filter(|g| g.issued.elapsed() < CODE_LIFETIME);
        let Some(grant) = grant else {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
        };
        if form.get("redirect_uri") != Some(&grant.redirect_uri) {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
        }
        if let Some(challenge) = &grant.challenge {
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            let computed = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA256,
                verifier.as_bytes(),
            ));
            if &computed != challenge {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            }
        }
        self.issue_tokens(&grant.user, Some(grant.nonce.as_deref()))
    }

    /// Access and refresh tokens, and an ID token when `nonce` is given (a login,
    /// not a refresh).
    fn issue_tokens(&self, user: &str, nonce: Option<Option<&str>>) -> Response<Body> {
        let (Ok(access), Ok(refresh)) = (new_uuid(), new_uuid()) else {
            return oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error");
        };
        if let Ok(mut tokens) = self.tokens.lock() {
            if tokens.len() >= MAX_GRANTS {
                tokens.clear();
            }
            tokens.insert(access.clone(), user.to_owned());
            tokens.insert(refresh.clone(), user.to_owned());
        }
        let mut body = json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": ACCESS_TOKEN_SECS,
            "refresh_token": refresh,
        });
        if let Some(nonce) = nonce {
            match self.id_token(user, nonce) {
                Ok(t) => body["id_token"] = t.into(),
                Err(_) => return oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
            }
        }
        json_response(body)
    }

    fn id_token(&self, user: &str, nonce: Option<&str>) -> Result<String, IdentityError> {
        let now = jiff::Timestamp::now().as_second();
        let mut claims = json!({
            "iss": self.issuer,
            "sub": user,
            "aud": DEMO_CLIENT_ID,
            "iat": now,
            "exp": now + 600,
        });
        if let Some(n) = nonce {
            claims["nonce"] = n.into();
        }
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": self.key.kid()});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.key.sign(input.as_bytes())?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }

    fn userinfo(&self, req: &Received) -> Response<Body> {
        let user = req
            .parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(|t| self.tokens.lock().ok()?.get(t).cloned());
        match user {
            Some(user) => json_response(json!({
                "sub": user,
                "name": user,
                "email": format!("{user}@example.com"),
                "email_verified": true,
            })),
            None => oauth_error(StatusCode::UNAUTHORIZED, "invalid_token"),
        }
    }

    fn logout(&self, q: &HashMap<String, String>) -> Response<Body> {
        match q.get("post_logout_redirect_uri") {
            Some(target) if self.post_logout_uris.contains(target) => {
                redirect(StatusCode::FOUND, target)
            }
            Some(_) => text(
                StatusCode::BAD_REQUEST,
                "post_logout_redirect_uri is not registered",
            ),
            None => html(
                StatusCode::OK,
                "<!doctype html><p>You are logged out of the demo provider.</p>".into(),
            ),
        }
    }
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn with_type(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    resp
}

fn json_response(v: Value) -> Response<Body> {
    with_type(StatusCode::OK, "application/json", v.to_string())
}

fn oauth_error(status: StatusCode, error: &str) -> Response<Body> {
    with_type(
        status,
        "application/json",
        json!({ "error": error }).to_string(),
    )
}

pub(crate) fn html(status: StatusCode, body: String) -> Response<Body> {
    with_type(status, "text/html; charset=utf-8", body)
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    with_type(status, "text/plain; charset=utf-8", body.to_owned())
}
