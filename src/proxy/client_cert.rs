//! The client's certificate as ALB hands it to the backend: `X-Amzn-Mtls-Clientcert`
//! (passthrough: the chain, URL-encoded PEM), or in verify mode the leaf's serial
//! number, issuer, subject, validity and the leaf itself. Read once per connection.

use base64::Engine;
use http::{HeaderName, HeaderValue};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rustls::pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::x509::X509Name;

use crate::compile::mtls::CertFacts;

/// Every header whose name, with `_` read as `-`, starts with this is Portcullis's to set.
pub const MTLS_PREFIX: &str = "x-amzn-mtls-";

/// URL encoding with `+`, `=` and `/` left as they are (ALB's `-Leaf` and passthrough).
const PEM_ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'+')
    .remove(b'=')
    .remove(b'/');

/// What a connection's client certificate gives each of its requests.
#[derive(Debug)]
pub struct ClientCert {
    /// The headers the backend receives.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// What authorization expressions read (`request.clientCert`): only a certificate
    /// verified against a trust store is believed.
    pub facts: Option<CertFacts>,
}

impl ClientCert {
    /// The chain the client presented (leaf first). `verified`: the handshake checked
    /// it against a trust store (verify mode); else it is passed on as it came.
    /// `None` when the leaf cannot be read, or a value cannot be a header.
    pub fn read(chain: &[CertificateDer<'_>], verified: bool) -> Option<Self> {
        if !verified {
            let pem: String = chain.iter().map(|c| pem(c)).collect();
            return Some(Self {
                headers: vec![header("x-amzn-mtls-clientcert", &url_encoded(&pem))?],
                facts: None,
            });
        }
        let leaf = chain.first()?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
        let facts = facts(&cert);
        let validity = cert.validity();
        let validity = format!(
            "NotBefore={};NotAfter={}",
            iso8601(validity.not_before.timestamp())?,
            iso8601(validity.not_after.timestamp())?
        );
        let headers = vec![
            header("x-amzn-mtls-clientcert-serial-number", &facts.serial_number)?,
            header("x-amzn-mtls-clientcert-issuer", &facts.issuer)?,
            header("x-amzn-mtls-clientcert-subject", &facts.subject)?,
            header("x-amzn-mtls-clientcert-validity", &validity)?,
            header("x-amzn-mtls-clientcert-leaf", &url_encoded(&pem(leaf)))?,
        ];
        Some(Self {
            headers,
            facts: Some(facts),
        })
    }
}

fn header(name: &'static str, value: &str) -> Option<(HeaderName, HeaderValue)> {
    Some((
        HeaderName::from_static(name),
        HeaderValue::from_str(value).ok()?,
    ))
}

fn facts(cert: &X509Certificate<'_>) -> CertFacts {
    let (mut dns_names, mut uris, mut emails) = (Vec::new(), Vec::new(), Vec::new());
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) => dns_names.push((*n).to_owned()),
                GeneralName::URI(u) => uris.push((*u).to_owned()),
                GeneralName::RFC822Name(e) => emails.push((*e).to_owned()),
                _ => {}
            }
        }
    }
    CertFacts {
        subject: rfc2253(cert.subject()),
        issuer: rfc2253(cert.issuer()),
        serial_number: serial_hex(cert.raw_serial()),
        dns_names,
        uris,
        emails,
    }
}

/// The serial number in upper-case hexadecimal without leading zero bytes, as ALB
/// writes it.
fn serial_hex(raw: &[u8]) -> String {
    let start = raw
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(raw.len().saturating_sub(1));
    raw[start..].iter().map(|b| format!("{b:02X}")).collect()
}

/// A distinguished name as RFC 2253 writes it: the last RDN first, `,` between RDNs,
/// `+` within one, special characters escaped (and control characters as `\XX`, so
/// the value is always a valid header).
pub fn rfc2253(name: &X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let oid = attr.attr_type();
                    let key = x509_parser::objects::oid2abbrev(oid, registry)
                        .map(str::to_owned)
                        .unwrap_or_else(|_| oid.to_id_string());
                    match attr.as_str() {
                        Ok(value) => format!("{key}={}", escape_value(value)),
                        Err(_) => format!("{key}=#{}", hex(attr.attr_value().data)),
                    }
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn iso8601(seconds: i64) -> Option<String> {
    jiff::Timestamp::from_second(seconds)
        .ok()
        .map(|t| t.to_string())
}

fn pem(cert: &CertificateDer<'_>) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn url_encoded(pem: &str) -> String {
    utf8_percent_encode(pem, PEM_ESCAPED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(subject: &[(rcgen::DnType, &str)], serial: &[u8]) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["client.example.com".into()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (ty, value) in subject {
            params.distinguished_name.push(ty.clone(), *value);
        }
        params.serial_number = Some(rcgen::SerialNumber::from_slice(serial));
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn verified_certificates_give_albs_five_headers() {
        use rcgen::DnType::*;
        let subject = [
            (CountryName, "US"),
            (OrganizationName, "Example, Inc"),
            (CommonName, "client"),
        ];
        let leaf = cert(&subject, &[0x00, 0x9a, 0x0b]);
        let c = ClientCert::read(std::slice::from_ref(&leaf), true).unwrap();
        let get = |n: &str| {
            c.headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.to_str().unwrap().to_owned())
                .unwrap()
        };
        assert_eq!(get("x-amzn-mtls-clientcert-serial-number"), "9A0B");
        assert_eq!(
            get("x-amzn-mtls-clientcert-subject"),
            "CN=client,O=Example\\, Inc,C=US"
        );
        assert_eq!(
            get("x-amzn-mtls-clientcert-issuer"),
            get("x-amzn-mtls-clientcert-subject")
        );
        let validity = get("x-amzn-mtls-clientcert-validity");
        assert!(
            validity.starts_with("NotBefore=") && validity.contains("Z;NotAfter="),
            "{validity}"
        );
        let leaf_header = get("x-amzn-mtls-clientcert-leaf");
        assert!(
            leaf_header.starts_with("-----BEGIN%20CERTIFICATE-----%0A"),
            "{leaf_header}"
        );
        assert!(!leaf_header.contains('\n') && !leaf_header.contains(' '));
        assert_eq!(c.facts.unwrap().dns_names, ["client.example.com"]);
    }

    #[test]
    fn passed_through_certificates_are_one_header_and_never_facts() {
        let leaf = cert(&[(rcgen::DnType::CommonName, "someone")], &[1]);
        let c = ClientCert::read(&[leaf.clone(), leaf], false).unwrap();
        assert_eq!(c.headers.len(), 1);
        let value = c.headers[0].1.to_str().unwrap();
        assert_eq!(
            value.matches("-----BEGIN%20CERTIFICATE-----").count(),
            2,
            "the whole chain"
        );
        assert!(
            c.facts.is_none(),
            "an unverified certificate is not an identity"
        );
    }

    #[test]
    fn control_characters_in_names_are_escaped() {
        assert_eq!(escape_value("a\r\nb"), "a\\0D\\0Ab");
        assert_eq!(escape_value(" #x "), "\\ #x\\ ");
        assert_eq!(escape_value("#x"), "\\#x");
    }
}
