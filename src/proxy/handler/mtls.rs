//! Client certificates on the request path: a request is served only on a connection
//! whose handshake asked for the certificates its host asks for, and the backend gets
//! ALB's `X-Amzn-Mtls-*` headers for the certificate the handshake took.

use http::{HeaderMap, Response, StatusCode};

use super::Exchange;
use crate::compile::mtls::{ClientAuth, HostAuth};
use crate::compile::snapshot::most_specific_listener;
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
        if let Some(addr) = self.conn.socket {
            return self.misdirected_on_gateway(addr, at);
        }
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

    /// On a Gateway's HTTPS socket, a request is served only when its host belongs to
    /// the listener the handshake's server name chose (the certificate it was shown,
    /// the listener's routes), and the socket still asks for the client certificates
    /// the handshake was made under; else 421. Plain HTTP has no server name to agree
    /// with.
    fn misdirected_on_gateway(
        &mut self,
        addr: std::net::SocketAddr,
        at: &CanonicalRequest,
    ) -> Option<Response<Body>> {
        let tls = self.conn.tls.as_ref()?;
        let live = self.live.clone();
        let agrees = live.snapshot.gateway_tls.get(&addr).is_some_and(|table| {
            let server_name = tls.server_name.as_deref().map(normalize_host);
            table.client_auth.key == tls.client_auth
                && same_listener(
                    &table.listeners,
                    server_name.as_deref().unwrap_or_default(),
                    &at.authority.host,
                )
        });
        if agrees {
            return None;
        }
        tracing::info!(trace_id = %self.trace.root, host = %at.authority.host, sni = ?tls.server_name, "request refused: its host is not the listener its connection was made for");
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

/// Whether the server name (empty without SNI) and the request host fall to the same
/// listener of a socket; a name no listener takes matches nothing.
fn same_listener(listeners: &[Option<String>], server_name: &str, host: &str) -> bool {
    let by_name = most_specific_listener(listeners, server_name);
    by_name.is_some() && by_name == most_specific_listener(listeners, host)
}

fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::same_listener;

    #[test]
    fn a_host_must_fall_to_the_listener_of_the_server_name() {
        let listeners = [
            None,
            Some("second-example.org".to_owned()),
            Some("*.wildcard.org".to_owned()),
            Some("fourth-example.wildcard.org".to_owned()),
        ];
        let cases = [
            ("example.org", "example.org", true),
            ("example.org", "second-example.org", false),
            ("example.org", "unknown-example.org", true),
            ("second-example.org", "example.org", false),
            ("third-example.wildcard.org", "fifth.wildcard.org", true),
            (
                "third-example.wildcard.org",
                "fourth-example.wildcard.org",
                false,
            ),
            ("fourth-example.wildcard.org", "fifth.wildcard.org", false),
            ("", "example.org", true),
            ("", "second-example.org", false),
        ];
        for (sni, host, same) in cases {
            assert_eq!(same_listener(&listeners, sni, host), same, "{sni} / {host}");
        }
        let named_only = [Some("a.example".to_owned())];
        assert!(!same_listener(&named_only, "", "other.example"));
        assert!(!same_listener(&named_only, "b.example", "c.example"));
    }
}
