//! The client-certificate verifiers of the two modes that ask for one: ALB's verify
//! (WebPKI against the trust store, optionally ignoring the leaf's expiry) and
//! passthrough (any certificate, whose key the client must still prove it holds).

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, aws_lc_rs, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

/// The verify mode's verifier for a PEM CA bundle and optional PEM CRLs.
pub fn verifier(
    ca: &[u8],
    crl: Option<&[u8]>,
    ignore_expiry: bool,
    advertise_ca_names: bool,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let (roots, crls) = super::parse_store(ca, crl)?;
    let inner = super::webpki_verifier(roots, crls, advertise_ca_names)?;
    Ok(if ignore_expiry {
        Arc::new(IgnoreExpiry(inner))
    } else {
        inner
    })
}

/// `ignoreClientCertificateExpiry`: a leaf that has expired (or is not valid yet) is
/// checked as at a moment inside its own validity; everything else stays as strict.
#[derive(Debug)]
struct IgnoreExpiry(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for IgnoreExpiry {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        match self.0.verify_client_cert(end_entity, intermediates, now) {
            Err(Error::InvalidCertificate(
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. },
            )) => {
                let Some(within) = leaf_validity_end(end_entity) else {
                    return Err(Error::InvalidCertificate(CertificateError::BadEncoding));
                };
                self.0.verify_client_cert(end_entity, intermediates, within)
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The last second the leaf is valid.
fn leaf_validity_end(leaf: &CertificateDer<'_>) -> Option<UnixTime> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let end = cert.validity().not_after.timestamp();
    Some(UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(end).ok()?,
    )))
}

/// Passthrough: asks for a certificate and takes any (or none); the handshake still
/// proves the client holds the certificate's key, so what is passed on was not
/// copied from elsewhere.
#[derive(Debug)]
pub struct Passthrough(Arc<CryptoProvider>);

impl Passthrough {
    pub fn verifier() -> Arc<dyn ClientCertVerifier> {
        Arc::new(Self(Arc::new(aws_lc_rs::default_provider())))
    }
}

impl ClientCertVerifier for Passthrough {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
