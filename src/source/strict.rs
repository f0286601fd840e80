//! Fields a manifest names that its kind does not have, found the way `kubectl apply`'s
//! strict field validation finds them: against the kind's schema (Kubernetes' own,
//! from k8s-openapi; the AuthRule's, from the types its CRD is generated from). A typo
//! such as `onUnauthenticatedRequests: deny` must never be ignored in silence.

use std::sync::LazyLock;

use serde_json::Value;

/// A schema with the definitions its `$ref`s point into.
pub struct Schema {
    root: Value,
}

impl Schema {
    fn of<T: schemars::JsonSchema>() -> Self {
        Self {
            root: serde_json::to_value(schemars::schema_for!(T)).unwrap_or(Value::Bool(true)),
        }
    }

    /// The paths (`spec.rules[0].htpp`) of every field in `value` the schema lacks,
    /// each with the fields allowed where it stands.
    pub fn unknown_fields(&self, value: &Value) -> Vec<(String, Vec<String>)> {
        let mut out = Vec::new();
        let Some(map) = value.as_object() else {
            return out;
        };
        static META: LazyLock<Schema> =
            LazyLock::new(Schema::of::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>);
        // Every kind has these; a custom resource's derived schema leaves them out.
        let schema = self.resolve(&self.root);
        let properties = schema.get("properties").and_then(Value::as_object);
        for (key, child) in map {
            match key.as_str() {
                "apiVersion" | "kind" => {}
                "metadata" => META.walk(child, &META.root, "metadata".into(), &mut out),
                _ => match properties.and_then(|p| p.get(key)) {
                    Some(s) => self.walk(child, s, key.clone(), &mut out),
                    None => out.push((key.clone(), allowed(properties))),
                },
            }
        }
        out.sort();
        out
    }

    fn resolve<'s>(&'s self, mut schema: &'s Value) -> &'s Value {
        for _ in 0..16 {
            if let Some(name) = schema
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/$defs/"))
            {
                match self.root.pointer(&format!(
                    "/$defs/{}",
                    name.replace('~', "~0").replace('/', "~1")
                )) {
                    Some(s) => schema = s,
                    None => return &Value::Bool(true),
                }
                continue;
            }
            // Optional fields are `anyOf: [T, null]` or `oneOf`: the first object-like one.
            let alternative = ["anyOf", "oneOf", "allOf"].iter().find_map(|k| {
                schema.get(*k)?.as_array()?.iter().find(|s| {
                    s.get("properties").is_some()
                        || s.get("$ref").is_some()
                        || s.get("additionalProperties").is_some()
                        || s.get("items").is_some()
                })
            });
            match alternative {
                Some(s) if schema.get("properties").is_none() => schema = s,
                _ => return schema,
            }
        }
        schema
    }

    fn walk(
        &self,
        value: &Value,
        schema: &Value,
        path: String,
        out: &mut Vec<(String, Vec<String>)>,
    ) {
        let schema = self.resolve(schema);
        match value {
            Value::Object(map) => {
                let properties = schema.get("properties").and_then(Value::as_object);
                let extra = schema.get("additionalProperties");
                for (key, child) in map {
                    let at = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    match (properties.and_then(|p| p.get(key)), extra) {
                        (Some(s), _) => self.walk(child, s, at, out),
                        (None, Some(Value::Bool(false))) | (None, None) if properties.is_some() => {
                            out.push((at, allowed(properties)));
                        }
                        (None, Some(s @ Value::Object(_))) => self.walk(child, s, at, out),
                        _ => {}
                    }
                }
            }
            Value::Array(items) => {
                if let Some(s) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.walk(item, s, format!("{path}[{i}]"), out);
                    }
                }
            }
            _ => {}
        }
    }
}

/// The field names a schema level has, sorted.
fn allowed(properties: Option<&serde_json::Map<String, Value>>) -> Vec<String> {
    let mut names: Vec<String> = properties
        .into_iter()
        .flatten()
        .map(|(k, _)| k.clone())
        .collect();
    names.sort();
    names
}

/// The schema of each kind the manifest source reads.
pub fn schema_for(kind: &str) -> Option<&'static Schema> {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
    static INGRESS: LazyLock<Schema> = LazyLock::new(Schema::of::<Ingress>);
    static INGRESS_CLASS: LazyLock<Schema> = LazyLock::new(Schema::of::<IngressClass>);
    static SECRET: LazyLock<Schema> = LazyLock::new(Schema::of::<Secret>);
    static CONFIG_MAP: LazyLock<Schema> = LazyLock::new(Schema::of::<ConfigMap>);
    static SERVICE: LazyLock<Schema> = LazyLock::new(Schema::of::<Service>);
    static SLICE: LazyLock<Schema> = LazyLock::new(Schema::of::<EndpointSlice>);
    static AUTH_RULE: LazyLock<Schema> = LazyLock::new(Schema::of::<crate::model::AuthRule>);
    static GATEWAY_CLASS: LazyLock<Schema> =
        LazyLock::new(Schema::of::<gateway_api::gatewayclasses::GatewayClass>);
    static GATEWAY: LazyLock<Schema> = LazyLock::new(Schema::of::<gateway_api::gateways::Gateway>);
    static HTTP_ROUTE: LazyLock<Schema> =
        LazyLock::new(Schema::of::<gateway_api::httproutes::HttpRoute>);
    static TLS_ROUTE: LazyLock<Schema> =
        LazyLock::new(Schema::of::<gateway_api::tlsroutes::TlsRoute>);
    static GRPC_ROUTE: LazyLock<Schema> =
        LazyLock::new(Schema::of::<gateway_api::grpcroutes::GrpcRoute>);
    static REFERENCE_GRANT: LazyLock<Schema> =
        LazyLock::new(Schema::of::<gateway_api::referencegrants::ReferenceGrant>);
    static LISTENER_SET: LazyLock<Schema> =
        LazyLock::new(Schema::of::<gateway_api::listenersets::ListenerSet>);
    static BACKEND_TLS_POLICY: LazyLock<Schema> =
        LazyLock::new(Schema::of::<gateway_api::backendtlspolicies::BackendTlsPolicy>);
    Some(match kind {
        "Ingress" => &INGRESS,
        "IngressClass" => &INGRESS_CLASS,
        "Secret" => &SECRET,
        "ConfigMap" => &CONFIG_MAP,
        "Service" => &SERVICE,
        "EndpointSlice" => &SLICE,
        "AuthRule" => &AUTH_RULE,
        "GatewayClass" => &GATEWAY_CLASS,
        "Gateway" => &GATEWAY,
        "HTTPRoute" => &HTTP_ROUTE,
        "TLSRoute" => &TLS_ROUTE,
        "GRPCRoute" => &GRPC_ROUTE,
        "ReferenceGrant" => &REFERENCE_GRANT,
        "ListenerSet" => &LISTENER_SET,
        "BackendTLSPolicy" => &BACKEND_TLS_POLICY,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn typos_are_found_with_their_path_and_the_fields_allowed_there() {
        let rule = json!({
            "apiVersion": "portcullis.dev/v1alpha1", "kind": "AuthRule",
            "metadata": {"name": "sso", "namespace": "apps", "labels": {"any": "thing"}, "annotations": {"a/b": "c"}},
            "spec": {
                "targetRefs": [{"name": "web", "nmae": "x"}],
                "onUnauthenticatedRequests": "deny",
                "oidc": {"issuer": "https://idp", "clientId": "c", "clientSecretRef": {"name": "s"}, "scopes": "openid"},
                "session": {"cookieName": "x"}
            }
        });
        let found = schema_for("AuthRule").unwrap().unknown_fields(&rule);
        let paths: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.oidc.scopes",
                "spec.onUnauthenticatedRequests",
                "spec.targetRefs[0].nmae"
            ]
        );
        let (_, allowed) = &found[1];
        assert!(
            allowed.contains(&"onUnauthenticatedRequest".to_string()),
            "{allowed:?}"
        );
    }

    #[test]
    fn kubernetes_kinds_are_checked_too_and_maps_take_any_key() {
        let ingress = json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "web", "annotations": {"x": "y"}},
            "spec": {"ingressClassName": "portcullis", "rules": [{"host": "a", "htpp": {}}]}
        });
        let found = schema_for("Ingress").unwrap().unknown_fields(&ingress);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "spec.rules[0].htpp");
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "dg=="}, "type": "Opaque"});
        assert!(
            schema_for("Secret")
                .unwrap()
                .unknown_fields(&secret)
                .is_empty()
        );
    }
}
