//! The objects every source fills and the compile step reads. The file source and the
//! Kubernetes watches produce the same `Objects`, so everything after the source is
//! shared.

use std::sync::Arc;

use gateway_api::backendtlspolicies::BackendTlsPolicy;
use gateway_api::gatewayclasses::GatewayClass;
use gateway_api::gateways::Gateway;
use gateway_api::grpcroutes::GrpcRoute;
use gateway_api::httproutes::HttpRoute;
use gateway_api::listenersets::ListenerSet;
use gateway_api::referencegrants::ReferenceGrant;
use gateway_api::tlsroutes::TlsRoute;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

use crate::diagnostics::{Diagnostic, ObjectRef};
use crate::model::AuthRule;

/// An AuthRule that could not be read as one. Its targets are kept (best effort) so
/// the routes it meant to guard fail closed instead of opening up.
#[derive(Clone, Debug, PartialEq)]
pub struct UnreadableAuthRule {
    pub object: ObjectRef,
    /// Its `metadata.generation`, which the status reports as observed.
    pub generation: Option<i64>,
    pub target_names: Vec<String>,
    pub error: String,
}

#[derive(Clone, Debug, Default)]
pub struct Objects {
    pub ingresses: Vec<Arc<Ingress>>,
    pub ingress_classes: Vec<Arc<IngressClass>>,
    pub auth_rules: Vec<Arc<AuthRule>>,
    pub unreadable_auth_rules: Vec<UnreadableAuthRule>,
    pub secrets: Vec<Arc<Secret>>,
    /// Read for the trust stores of mutual TLS.
    pub config_maps: Vec<Arc<ConfigMap>>,
    pub services: Vec<Arc<Service>>,
    pub endpoint_slices: Vec<Arc<EndpointSlice>>,
    pub gateway_classes: Vec<Arc<GatewayClass>>,
    pub gateways: Vec<Arc<Gateway>>,
    pub http_routes: Vec<Arc<HttpRoute>>,
    /// TLS passed through by server name to Services (TLS listeners, mode Passthrough).
    pub tls_routes: Vec<Arc<TlsRoute>>,
    /// Listeners added to a Gateway from other objects (its `allowedListeners` says
    /// whose).
    pub listener_sets: Vec<Arc<ListenerSet>>,
    pub grpc_routes: Vec<Arc<GrpcRoute>>,
    pub reference_grants: Vec<Arc<ReferenceGrant>>,
    pub backend_tls_policies: Vec<Arc<BackendTlsPolicy>>,
    /// Read for their labels (a Gateway listener's `allowedRoutes` selector).
    pub namespaces: Vec<Arc<Namespace>>,
    /// Problems the source met while reading (syntax errors, unknown fields).
    pub diagnostics: Vec<Diagnostic>,
}

/// Reads the target names of an AuthRule from its raw form, for one that does not
/// parse as a whole.
pub fn unreadable_auth_rule(
    object: ObjectRef,
    raw: &serde_json::Value,
    error: String,
) -> UnreadableAuthRule {
    let target_names = raw
        .pointer("/spec/targetRefs")
        .and_then(|v| v.as_array())
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("name").and_then(|n| n.as_str()).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    UnreadableAuthRule {
        object,
        generation: raw.pointer("/metadata/generation").and_then(|g| g.as_i64()),
        target_names,
        error,
    }
}
