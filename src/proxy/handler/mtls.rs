//! Client certificates on the request path: a request is served only on a connection
//! whose handshake asked for the certificates its host asks for, and the backend gets
//! ALB's `X-Amzn-Mtls-*` headers for the certificate the handshake took.

use http::{HeaderMap, Response, StatusCode};

use super::Exchange;
use crate::compile::mtls::{ClientAuth, HostAuth};
use crate::proxy::Body;
use crate::proxy::canonical::CanonicalRequest;
use crate::proxy::client_cert::MTLS_PREFIX;
use crate::proxy::pages::redirect;

impl Exchange {
    /// `None` when the connection was made under the host's client-certificate setting.
    /// Else the request is refused: 421 on a TLS connection made for another setting
    /// (another SNI, or none: its certificate, if any, was not checked the host's way),
    /// a redirect to HTTPS for plain HTTP when there is an HTTPS listener, and 500 while
    /// the host's setting is broken.
    pub(super) fn misdirected(&mut self, at: &CanonicalRequest) -> Option<Response<Body>> {
        let live = self.live.clone();
        let host = live.snapshot.mtls.find(Some(&at.authority.host));
        if let ClientAuth::Broken(problem) = &host.auth {
            tracing::warn!(trace_id = %self.trace.root, host = %at.authority.host, %problem, "request refused: the host's mutual authentication cannot be honoured");
            return Some(self.error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "MutualAuthenticationInvalid",
                "This address asks for client certificates that cannot be checked now; the operator can see why in the Ingress's events or with `portcullis check`.",
            ));
        }
        let made_under = self
            .conn
            .tls
            .as_ref()
            .map_or(HostAuth::OFF_KEY, |t| t.client_auth);
        if host.key == made_under {
            return None;
        }
        let plain = self.conn.tls.is_none() && !self.conn.tls_offloaded;
        if plain && let Some(port) = self.dp.config.https_redirect_port {
            let authority = match port {
                443 => at.authority.host.clone(),
                port => format!("{}:{port}", at.authority.host),
            };
            let location = format!("https://{authority}{}", at.path_and_query);
            self.rec.add_action("redirect");
            self.rec.redirect_url = location.clone();
            return Some(redirect(StatusCode::PERMANENT_REDIRECT, &location));
        }
        tracing::info!(trace_id = %self.trace.root, host = %at.authority.host, sni = ?self.conn.tls.as_ref().and_then(|t| t.server_name.as_deref()), "request refused: its connection was not made under its host's client-certificate setting");
        Some(self.error(
            StatusCode::MISDIRECTED_REQUEST,
            "MisdirectedRequest",
            "This connection was not made for this address; connect to it by its own name.",
        ))
    }

    /// ALB's headers for the connection's client certificate, in place of any a route's
    /// own header edits wrote.
    pub(super) fn client_cert_headers(&self, headers: &mut HeaderMap) {
        let ours: Vec<_> = headers
            .keys()
            .filter(|k| k.as_str().starts_with(MTLS_PREFIX))
            .cloned()
            .collect();
        for name in ours {
            headers.remove(name);
        }
        let cert = self.conn.tls.as_ref().and_then(|t| t.client_cert.as_ref());
        for (name, value) in cert.into_iter().flat_map(|c| &c.headers) {
            headers.insert(name.clone(), value.clone());
        }
    }
}
