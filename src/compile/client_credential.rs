//! How an AuthRule's client authenticates at the token endpoint (a secret, a private
//! key, or Portcullis's ServiceAccount token), and the resource indicators it sends:
//! read and checked once per compile, never on the request path.

use std::sync::Arc;

use super::backends::Index;
use crate::auth::client_assertion::{ClientCredential, ClientKey, ServiceAccountToken};
use crate::diagnostics::{Diagnostic, ObjectRef};
use crate::model::{OidcSpec, SecretKeyRef, TokenEndpointAuthMethod};

/// At most this many resource indicators (`spec.oidc.resource`).
pub const MAX_RESOURCES: usize = 10;

/// The credential the rule's fields name; every problem goes to `errors` (and the
/// returned credential is then an empty secret, never used).
pub fn compile(
    obj: &ObjectRef,
    oidc: &OidcSpec,
    index: &Index,
    errors: &mut Vec<Diagnostic>,
) -> ClientCredential {
    let fallback = ClientCredential::Secret(String::new());
    let jwt = oidc.token_endpoint_auth_method == TokenEndpointAuthMethod::PrivateKeyJwt;
    let audience = oidc.service_account_token_audience.as_deref();
    if jwt && oidc.client_secret_ref.is_some() {
        errors.push(Diagnostic::error(
            obj,
            "spec.oidc.clientSecretRef",
            "InvalidClientAuth",
            "private_key_jwt sends no client secret, yet clientSecretRef names one".into(),
            "remove clientSecretRef".into(),
        ));
    }
    let result = match (jwt, &oidc.client_key_ref, audience) {
        (false, None, None) => match &oidc.client_secret_ref {
            Some(r) => client_secret(obj, r, index).map(ClientCredential::Secret),
            None => Err(Diagnostic::error(
                obj,
                "spec.oidc.clientSecretRef",
                "MissingClientCredential",
                format!("{} needs a client secret and none is named", oidc.token_endpoint_auth_method.as_str()),
                "add clientSecretRef naming the Secret key that holds the client secret, or set tokenEndpointAuthMethod: private_key_jwt with clientKeyRef or serviceAccountTokenAudience".into(),
            )),
        },
        (false, _, _) => Err(Diagnostic::error(
            obj,
            "spec.oidc.tokenEndpointAuthMethod",
            "InvalidClientAuth",
            "clientKeyRef and serviceAccountTokenAudience are used only with private_key_jwt".into(),
            "set tokenEndpointAuthMethod: private_key_jwt, or remove clientKeyRef and serviceAccountTokenAudience".into(),
        )),
        (true, None, None) => Err(Diagnostic::error(
            obj,
            "spec.oidc.clientKeyRef",
            "MissingClientCredential",
            "private_key_jwt needs a key to sign with and none is named".into(),
            "add clientKeyRef naming the Secret key that holds the PEM private key, or serviceAccountTokenAudience for a federated credential".into(),
        )),
        (true, Some(_), Some(_)) => Err(Diagnostic::error(
            obj,
            "spec.oidc.serviceAccountTokenAudience",
            "InvalidClientAuth",
            "clientKeyRef and serviceAccountTokenAudience are both set".into(),
            "keep clientKeyRef (a key of the rule's own) or serviceAccountTokenAudience (Portcullis's ServiceAccount token), not both".into(),
        )),
        (true, Some(r), None) => client_key(obj, r, index).map(|k| ClientCredential::Key(Arc::new(k))),
        (true, None, Some(audience)) => service_account_token(obj, audience),
    };
    result.unwrap_or_else(|d| {
        errors.push(d);
        fallback
    })
}

/// `spec.oidc.resource`: absolute URIs without a fragment (RFC 8707 2).
pub fn resources(obj: &ObjectRef, oidc: &OidcSpec, errors: &mut Vec<Diagnostic>) -> Vec<String> {
    if oidc.resource.len() > MAX_RESOURCES {
        errors.push(Diagnostic::error(
            obj,
            "spec.oidc.resource",
            "InvalidResource",
            format!(
                "{} resource indicators; at most {MAX_RESOURCES}",
                oidc.resource.len()
            ),
            "name fewer APIs".into(),
        ));
    }
    if !oidc.resource.is_empty()
        && oidc
            .authentication_request_extra_params
            .contains_key("resource")
    {
        errors.push(Diagnostic::error(
            obj,
            "spec.oidc.authenticationRequestExtraParams",
            "InvalidResource",
            "resource is both an extra parameter and spec.oidc.resource".into(),
            "keep spec.oidc.resource, which is sent in the token requests too".into(),
        ));
    }
    for (i, r) in oidc.resource.iter().enumerate() {
        if let Err(why) = check_resource(r) {
            errors.push(Diagnostic::error(
                obj,
                &format!("spec.oidc.resource[{i}]"),
                "InvalidResource",
                format!("resource {r:?} {why}"),
                "use the API's absolute URI, e.g. https://api.example.com".into(),
            ));
        }
    }
    oidc.resource.clone()
}

/// Why `r` is not a resource indicator, if it is not.
fn check_resource(r: &str) -> Result<(), &'static str> {
    if r.contains('#') {
        return Err("has a fragment");
    }
    if r.len() > 2048 || r.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err("is longer than 2048 characters or has spaces or control characters");
    }
    match url::Url::parse(r) {
        Ok(_) => Ok(()),
        Err(_) => Err("is not an absolute URI"),
    }
}

/// The bytes under `r.key` of Secret `r.name` in the rule's namespace.
#[allow(clippy::result_large_err)]
fn secret_value(
    obj: &ObjectRef,
    field: &str,
    name: &str,
    key: &str,
    index: &Index,
    what: &str,
) -> Result<Vec<u8>, Diagnostic> {
    let secret_name = format!("{}/{}", obj.namespace, name);
    let secret = index.secret(&obj.namespace, name).ok_or_else(|| {
        Diagnostic::error(
            obj,
            field,
            "SecretNotFound",
            format!("Secret {secret_name} not found"),
            format!(
                "kubectl -n {} create secret generic {name} --from-{}={key}=<{what}>",
                obj.namespace,
                if what.contains("file") {
                    "file"
                } else {
                    "literal"
                }
            ),
        )
        .of_reference()
    })?;
    let value = secret.data.as_ref().and_then(|d| d.get(key)).ok_or_else(|| {
        let field_name = field.rsplit('.').next().unwrap_or(field);
        Diagnostic::error(obj, &format!("{field}.key"), "SecretKeyNotFound", format!("Secret {secret_name} has no key {key}"), format!("add key {key} to Secret {secret_name}, or point {field_name}.key at the key that holds the {what}"))
        .of_reference()
    })?;
    Ok(value.0.clone())
}

#[allow(clippy::result_large_err)]
fn client_secret(obj: &ObjectRef, r: &SecretKeyRef, index: &Index) -> Result<String, Diagnostic> {
    let field = "spec.oidc.clientSecretRef";
    let value = secret_value(obj, field, &r.name, &r.key, index, "client secret")?;
    let text = String::from_utf8(value)
        .ok()
        .map(|s| s.trim_end_matches(['\r', '\n']).to_owned());
    match text {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(Diagnostic::error(
            obj,
            &format!("{field}.key"),
            "InvalidSecret",
            format!(
                "key {} of Secret {}/{} is empty or not UTF-8",
                r.key, obj.namespace, r.name
            ),
            "store the client secret as plain text".into(),
        )
        .of_reference()),
    }
}

/// The private key, and the certificate beside it in a `kubernetes.io/tls` Secret.
#[allow(clippy::result_large_err)]
fn client_key(
    obj: &ObjectRef,
    r: &crate::model::ClientKeyRef,
    index: &Index,
) -> Result<ClientKey, Diagnostic> {
    let field = "spec.oidc.clientKeyRef";
    let pem = secret_value(obj, field, &r.name, &r.key, index, "private key file")?;
    let cert = (r.key == "tls.key")
        .then(|| index.secret(&obj.namespace, &r.name))
        .flatten()
        .and_then(|s| s.data.as_ref()?.get("tls.crt"))
        .map(|c| c.0.as_slice());
    ClientKey::from_pem(&pem, cert).map_err(|e| {
        Diagnostic::error(
            obj,
            &format!("{field}.key"),
            "InvalidClientKey",
            format!("key {} of Secret {}/{}: {e}", r.key, obj.namespace, r.name),
            "store a PEM private key (RSA of 2048 bits or more, or EC P-256), e.g. from `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`".into(),
        )
        .of_reference()
    })
}

#[allow(clippy::result_large_err)]
fn service_account_token(obj: &ObjectRef, audience: &str) -> Result<ClientCredential, Diagnostic> {
    if audience.is_empty()
        || audience.len() > 256
        || audience.bytes().any(|b| b.is_ascii_control() || b == b' ')
    {
        return Err(Diagnostic::error(
            obj,
            "spec.oidc.serviceAccountTokenAudience",
            "InvalidClientAuth",
            format!("audience {audience:?} is empty, too long or has spaces"),
            "use the audience the provider expects, e.g. api://AzureADTokenExchange".into(),
        ));
    }
    Ok(ClientCredential::ServiceAccountToken(
        ServiceAccountToken::new(&obj.namespace, audience),
    ))
}

#[cfg(test)]
mod tests {
    use super::check_resource;
    use crate::auth::client_assertion::ClientCredential;
    use crate::compile::tests::{compiled, service};
    use crate::diagnostics::ObjectRef;

    #[test]
    fn resource_indicators_are_absolute_uris_without_fragments() {
        for ok in [
            "https://api.example.com",
            "https://api.example.com/v1?x=1",
            "urn:example:api",
            "api://backend",
        ] {
            assert_eq!(check_resource(ok), Ok(()), "{ok}");
        }
        for bad in [
            "/api",
            "api.example.com",
            "https://api.example.com/#x",
            "https://a b",
            "",
            "https://a\n",
        ] {
            assert!(check_resource(bad).is_err(), "{bad:?}");
        }
    }

    /// An Ingress, its Service, an AuthRule guarding it with `oidc` (after issuer and
    /// clientId) and `extra` objects.
    fn rule(oidc: &str, extra: &str) -> crate::compile::Compiled {
        compiled(&format!(
            r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: web, namespace: apps}}
spec:
  ingressClassName: portcullis
  rules:
  - host: app.example.com
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: root, port: {{number: 80}}}}}}}}
{}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {{name: sso, namespace: apps}}
spec:
  targetRefs: [{{name: web}}]
  oidc:
    issuer: https://idp.example.com
    clientId: app
{oidc}
{extra}"#,
            service("apps", "root", "10.0.0.1", 80)
        ))
    }

    fn problems(c: &crate::compile::Compiled) -> Vec<(&'static str, String, String)> {
        c.diagnostics
            .iter()
            .filter(|d| d.object.kind == "AuthRule")
            .map(|d| (d.reason, d.field.clone(), d.fix.clone()))
            .collect()
    }

    fn credential(c: &crate::compile::Compiled) -> ClientCredential {
        let rule = ObjectRef::new("AuthRule", "apps", "sso");
        let policy = c.snapshot.auth_rules[&rule].policy.clone();
        policy.expect("the rule compiled").credential.clone()
    }

    const KEY_SECRET: &str = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: idp-key, namespace: apps}\nstringData:\n  tls.key: |\n";

    fn key_secret() -> String {
        let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .unwrap()
            .serialize_pem();
        let indented: String = pem.lines().map(|l| format!("    {l}\n")).collect();
        format!("{KEY_SECRET}{indented}")
    }

    #[test]
    fn a_rule_without_a_way_to_authenticate_the_client_says_which_field_to_add() {
        let c = rule("", "");
        let p = problems(&c);
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_eq!(
            (p[0].0, p[0].1.as_str()),
            ("MissingClientCredential", "spec.oidc.clientSecretRef")
        );
        assert!(
            p[0].2
                .contains("private_key_jwt with clientKeyRef or serviceAccountTokenAudience")
        );

        let c = rule("    tokenEndpointAuthMethod: private_key_jwt", "");
        let p = problems(&c);
        assert_eq!(
            (p[0].0, p[0].1.as_str()),
            ("MissingClientCredential", "spec.oidc.clientKeyRef")
        );

        for (oidc, field) in [
            (
                "    clientSecretRef: {name: idp}\n    clientKeyRef: {name: idp-key}",
                "spec.oidc.tokenEndpointAuthMethod",
            ),
            (
                "    tokenEndpointAuthMethod: private_key_jwt\n    clientKeyRef: {name: idp-key}\n    serviceAccountTokenAudience: api://x",
                "spec.oidc.serviceAccountTokenAudience",
            ),
            (
                "    tokenEndpointAuthMethod: private_key_jwt\n    clientKeyRef: {name: idp-key}\n    clientSecretRef: {name: idp}",
                "spec.oidc.clientSecretRef",
            ),
        ] {
            let c = rule(oidc, &key_secret());
            let p = problems(&c);
            assert!(
                p.iter()
                    .any(|(r, f, _)| *r == "InvalidClientAuth" && f == field),
                "{oidc}: {p:#?}"
            );
        }
    }

    #[test]
    fn a_key_from_a_secret_or_a_service_account_token_needs_no_secret() {
        let c = rule(
            "    tokenEndpointAuthMethod: private_key_jwt\n    clientKeyRef: {name: idp-key}",
            &key_secret(),
        );
        assert!(problems(&c).is_empty(), "{:#?}", problems(&c));
        assert!(matches!(credential(&c), ClientCredential::Key(_)));

        let c = rule(
            "    tokenEndpointAuthMethod: private_key_jwt\n    serviceAccountTokenAudience: api://AzureADTokenExchange",
            "",
        );
        assert!(problems(&c).is_empty(), "{:#?}", problems(&c));
        let ClientCredential::ServiceAccountToken(t) = credential(&c) else {
            panic!("not a ServiceAccount token");
        };
        assert_eq!(
            t.file,
            std::path::Path::new("apps/api%3A%2F%2FAzureADTokenExchange")
        );
    }

    #[test]
    fn a_key_that_cannot_sign_or_is_missing_fails_closed_with_the_fix() {
        let oidc =
            "    tokenEndpointAuthMethod: private_key_jwt\n    clientKeyRef: {name: idp-key}";
        let c = rule(oidc, &format!("{KEY_SECRET}    not a key\n"));
        let p = problems(&c);
        assert_eq!(
            (p[0].0, p[0].1.as_str()),
            ("InvalidClientKey", "spec.oidc.clientKeyRef.key"),
            "{p:#?}"
        );
        assert!(p[0].2.contains("PEM private key"));
        let rule_ref = ObjectRef::new("AuthRule", "apps", "sso");
        assert!(!c.snapshot.auth_rules[&rule_ref].usable);

        let c = rule(oidc, "");
        let p = problems(&c);
        assert_eq!(p[0].0, "SecretNotFound");
        assert!(
            p[0].2.contains("--from-file=tls.key=<private key file>"),
            "{p:#?}"
        );
    }

    #[test]
    fn resource_indicators_are_checked_and_kept() {
        let secret = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: idp, namespace: apps}\nstringData: {client-secret: s}\n";
        let c = rule(
            "    clientSecretRef: {name: idp}\n    resource: [https://api.example.com, 'https://b.example.com/#frag']",
            secret,
        );
        let p = problems(&c);
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_eq!(
            (p[0].0, p[0].1.as_str()),
            ("InvalidResource", "spec.oidc.resource[1]")
        );
        let c = rule(
            "    clientSecretRef: {name: idp}\n    resource: [https://api.example.com]",
            secret,
        );
        let rule_ref = ObjectRef::new("AuthRule", "apps", "sso");
        let policy = c.snapshot.auth_rules[&rule_ref].policy.clone().unwrap();
        assert_eq!(policy.resource, ["https://api.example.com"]);
    }
}
