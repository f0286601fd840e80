//! TLS with certificates from the live snapshot: the resolver looks the server name up
//! in whatever snapshot is current, so a renewed Secret is used by the next handshake
//! without a restart.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rustls::ServerConfig;
use rustls::crypto::aws_lc_rs;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::DataPlane;
use crate::compile::mtls::verifiers::Passthrough;
use crate::compile::mtls::{ClientAuth, HostAuth};

#[derive(Debug)]
struct SnapshotCerts(Arc<DataPlane>);

impl ResolvesServerCert for SnapshotCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let live = self.0.live.load();
        let cert = live.snapshot.certs.find(hello.server_name());
        if cert.is_none() {
            tracing::debug!(server_name = ?hello.server_name(), "no certificate for this server name");
        }
        cert.map(|c| c.key.clone())
    }
}

/// The certificates of one Gateway socket: only its own listeners', so a socket never
/// presents another Gateway's certificate.
#[derive(Debug)]
struct SocketCerts(Arc<DataPlane>, SocketAddr);

impl ResolvesServerCert for SocketCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let live = self.0.live.load();
        let table = live.snapshot.gateway_tls.get(&self.1)?;
        let cert = table.certs.find(hello.server_name());
        if cert.is_none() {
            tracing::debug!(server_name = ?hello.server_name(), socket = %self.1, "no certificate for this server name");
        }
        cert.map(|c| c.key.clone())
    }
}

/// TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`, aws-lc-rs as the only provider;
/// client certificates checked by `verifier` (none asked for without one); the
/// certificates of the flag listener, or of a Gateway's `socket`.
pub fn server_config(
    dp: Arc<DataPlane>,
    socket: Option<SocketAddr>,
    verifier: Option<Arc<dyn ClientCertVerifier>>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let builder = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match verifier {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = match socket {
        None => builder.with_cert_resolver(Arc::new(SnapshotCerts(dp))),
        Some(addr) => builder.with_cert_resolver(Arc::new(SocketCerts(dp, addr))),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The HTTPS listener's configurations: one without client certificates, and one per
/// client-certificate setting (`MtlsTable`) in use, chosen by the ClientHello's server
/// name. Each keeps its own session cache, so a session is never resumed under another
/// setting than the one it was made with.
pub struct TlsConfigs {
    dp: Arc<DataPlane>,
    plain: Arc<ServerConfig>,
    by_key: Mutex<HashMap<ConfigKey, Arc<ServerConfig>>>,
}

/// A configuration's socket (`None`: the flag listener) and client-certificate setting.
type ConfigKey = (Option<SocketAddr>, u64);

/// The client-certificate setting a handshake was made under.
#[derive(Clone, Copy, Debug)]
pub struct Picked {
    /// `HostAuth::key`.
    pub key: u64,
    /// The certificate, if any, was verified against a trust store.
    pub verifies: bool,
}

/// Settings kept before the ones no longer in the snapshot are dropped.
const KEPT_SETTINGS: usize = 64;

impl TlsConfigs {
    pub fn new(dp: Arc<DataPlane>) -> Result<Self, rustls::Error> {
        Ok(Self {
            plain: server_config(dp.clone(), None, None)?,
            dp,
            by_key: Mutex::new(HashMap::new()),
        })
    }

    /// The configuration for a server name (`None`: no SNI), and the key of the
    /// client-certificate setting it was chosen under.
    pub fn for_server_name(&self, name: Option<&str>) -> Option<(Picked, Arc<ServerConfig>)> {
        let live = self.dp.live.load();
        let host = live.snapshot.mtls.find(name);
        let picked = Picked {
            key: host.key,
            verifies: host.verifies(),
        };
        // A broken setting's requests are refused after the handshake, with a page
        // that says why.
        if matches!(host.auth, ClientAuth::Off | ClientAuth::Broken(_)) {
            return Some((picked, self.plain.clone()));
        }
        let config = self.cached(None, host, &live.snapshot)?;
        Some((picked, config))
    }

    /// The configuration of a Gateway socket: its own certificates and the client
    /// certificates its port asks for; `None` when the snapshot no longer serves TLS
    /// there (the handshake fails).
    pub fn for_gateway_socket(&self, addr: SocketAddr) -> Option<(Picked, Arc<ServerConfig>)> {
        let live = self.dp.live.load();
        let table = live.snapshot.gateway_tls.get(&addr)?;
        let host = &table.client_auth;
        let picked = Picked {
            key: host.key,
            verifies: host.verifies(),
        };
        let config = self.cached(Some(addr), host, &live.snapshot)?;
        Some((picked, config))
    }

    /// The configuration for a socket (`None`: the flag listener) and setting, made
    /// once and kept while the snapshot uses it.
    fn cached(
        &self,
        socket: Option<SocketAddr>,
        host: &HostAuth,
        snapshot: &crate::compile::snapshot::Snapshot,
    ) -> Option<Arc<ServerConfig>> {
        let mut configs = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(config) = configs.get(&(socket, host.key)) {
            return Some(config.clone());
        }
        let verifier = match &host.auth {
            ClientAuth::Off | ClientAuth::Broken(_) => None,
            ClientAuth::Verify(store) => Some(store.verifier.clone()),
            ClientAuth::Passthrough => Some(Passthrough::verifier()),
        };
        let config = server_config(self.dp.clone(), socket, verifier)
            .inspect_err(
                |e| tracing::warn!(error = %e, "no TLS configuration for client certificates"),
            )
            .ok()?;
        if configs.len() >= KEPT_SETTINGS {
            let flag = snapshot.mtls.keys().map(|k| (None, k));
            let sockets = (snapshot.gateway_tls.iter()).map(|(a, t)| (Some(*a), t.client_auth.key));
            let current: HashSet<ConfigKey> = flag.chain(sockets).collect();
            configs.retain(|k, _| current.contains(k));
        }
        configs.insert((socket, host.key), config.clone());
        Some(config)
    }
}

/// OpenSSL's names for rustls's suites, as ALB's `ssl_cipher` field uses them.
pub fn openssl_cipher_name(suite: rustls::CipherSuite) -> String {
    use rustls::CipherSuite as C;
    let name = match suite {
        C::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
        C::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
        C::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
        C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-ECDSA-CHACHA20-POLY1305",
        C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305",
        other => return format!("{other:?}"),
    };
    name.to_owned()
}

pub fn protocol_name(version: Option<rustls::ProtocolVersion>) -> String {
    match version {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".into(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".into(),
        Some(other) => format!("{other:?}"),
        None => "-".into(),
    }
}
