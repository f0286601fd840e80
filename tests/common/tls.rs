//! Certificates for HTTPS tests: self-signed ones, as kubernetes.io/tls Secrets, and
//! clients that trust only them.

pub struct TestCert {
    pub pem: String,
    pub key: String,
}

pub fn cert(hosts: &[&str]) -> TestCert {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
            .unwrap();
    TestCert {
        pem: params.self_signed(&key).unwrap().pem(),
        key: key.serialize_pem(),
    }
}

pub fn tls_secret(name: &str, c: &TestCert) -> String {
    let indent = |s: &str| {
        s.lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!(
        "---\napiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\nmetadata: {{name: {name}, namespace: apps}}\nstringData:\n  tls.crt: |\n{}\n  tls.key: |\n{}\n",
        indent(&c.pem),
        indent(&c.key)
    )
}

/// A client that trusts only `trusted` and reaches every name at `addr`.
pub fn tls_client(
    trusted: &TestCert,
    names: &[&str],
    addr: std::net::SocketAddr,
) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .tls_certs_only([reqwest::Certificate::from_pem(trusted.pem.as_bytes()).unwrap()]);
    for n in names {
        b = b.resolve(n, addr);
    }
    b.build().unwrap()
}
