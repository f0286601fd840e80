//! Ingress backends to upstream targets: Service port, then the ready endpoints of its
//! EndpointSlices (or the DNS name of an ExternalName Service).

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{IngressBackend, IngressServiceBackend};

use super::Backend;
use super::backend_protocol::{self, ProtocolFrom};
use super::snapshot::{EndpointSource, Transport, Upstream};
use crate::diagnostics::{Diagnostic, ObjectRef};
use crate::store::Objects;

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

type Key = (String, String);

/// Lookups by namespace and name over one set of objects.
pub struct Index<'a> {
    pub secrets: HashMap<Key, &'a Secret>,
    config_maps: HashMap<Key, &'a ConfigMap>,
    services: HashMap<Key, &'a Service>,
    slices: SliceIndex<'a>,
    pub ingresses: HashMap<Key, ()>,
    pub http_routes: HashMap<Key, ()>,
    pub grpc_routes: HashMap<Key, ()>,
    pub gateways: HashMap<Key, ()>,
    /// The BackendTLSPolicies, by the Service (port) they target.
    pub backend_tls: super::backend_tls_policy::Policies,
}

fn key(namespace: Option<&String>, name: Option<&String>) -> Key {
    (
        namespace.cloned().unwrap_or_default(),
        name.cloned().unwrap_or_default(),
    )
}

impl<'a> Index<'a> {
    pub fn new(objects: &'a Objects) -> Self {
        let secrets = objects
            .secrets
            .iter()
            .map(|s| {
                (
                    key(s.metadata.namespace.as_ref(), s.metadata.name.as_ref()),
                    s.as_ref(),
                )
            })
            .collect();
        let config_maps = objects
            .config_maps
            .iter()
            .map(|m| {
                (
                    key(m.metadata.namespace.as_ref(), m.metadata.name.as_ref()),
                    m.as_ref(),
                )
            })
            .collect();
        let services = objects
            .services
            .iter()
            .map(|s| {
                (
                    key(s.metadata.namespace.as_ref(), s.metadata.name.as_ref()),
                    s.as_ref(),
                )
            })
            .collect();
        let slices = SliceIndex::new(&objects.endpoint_slices);
        let ingresses = objects
            .ingresses
            .iter()
            .map(|i| {
                (
                    key(i.metadata.namespace.as_ref(), i.metadata.name.as_ref()),
                    (),
                )
            })
            .collect();
        let names = |metas: Vec<&k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>| {
            metas
                .into_iter()
                .map(|m| (key(m.namespace.as_ref(), m.name.as_ref()), ()))
                .collect()
        };
        let mut index = Self {
            secrets,
            config_maps,
            services,
            slices,
            ingresses,
            http_routes: names(objects.http_routes.iter().map(|r| &r.metadata).collect()),
            grpc_routes: names(objects.grpc_routes.iter().map(|r| &r.metadata).collect()),
            gateways: names(objects.gateways.iter().map(|g| &g.metadata).collect()),
            backend_tls: Default::default(),
        };
        index.backend_tls = super::backend_tls_policy::Policies::new(objects, &index);
        index
    }

    pub fn service_exists(&self, namespace: &str, name: &str) -> bool {
        self.services
            .contains_key(&(namespace.to_owned(), name.to_owned()))
    }

    pub fn config_map(&self, namespace: &str, name: &str) -> Option<&'a ConfigMap> {
        self.config_maps
            .get(&(namespace.to_owned(), name.to_owned()))
            .copied()
    }

    pub fn secret(&self, namespace: &str, name: &str) -> Option<&'a Secret> {
        self.secrets
            .get(&(namespace.to_owned(), name.to_owned()))
            .copied()
    }
}

/// Routes that point at the same Service port share one `Upstream`, so round-robin
/// and failure marks are per Service port, not per route.
#[derive(Default)]
pub struct UpstreamCache {
    upstreams: HashMap<String, Arc<Upstream>>,
}

impl UpstreamCache {
    /// Every upstream made, in `id` order.
    pub fn into_list(self) -> Vec<Arc<Upstream>> {
        let mut list: Vec<Arc<Upstream>> = self.upstreams.into_values().collect();
        list.sort_by_key(|u| u.id);
        list
    }

    #[allow(clippy::too_many_arguments)]
    pub fn resolve(
        &mut self,
        index: &Index,
        namespace: &str,
        backend: &IngressBackend,
        protocol: ProtocolFrom,
        ingress: &ObjectRef,
        field: &str,
        diags: &mut Vec<Diagnostic>,
    ) -> Backend {
        let Some(service) = backend.service.as_ref() else {
            diags.push(Diagnostic::error(
                ingress,
                field,
                "UnsupportedBackend",
                "resource backends are not supported".into(),
                "point the path at a Service (backend.service.name and port)".into(),
            ));
            return Backend::Unavailable {
                service: "-".into(),
                reason: "the Ingress backend is not a Service".into(),
            };
        };
        let port_label = service
            .port
            .as_ref()
            .and_then(|p| p.number.map(|n| n.to_string()).or_else(|| p.name.clone()))
            .unwrap_or_else(|| "?".into());
        let name = format!("{namespace}/{}:{port_label}", service.name);
        let (targets, endpoints, transport) = match targets(index, namespace, service, protocol) {
            Ok(found) => found,
            Err(Unresolved::Backend(reason, fix)) => {
                diags.push(Diagnostic::error(
                    ingress,
                    &format!("{field}.service"),
                    "BackendNotFound",
                    reason.clone(),
                    fix,
                ));
                return Backend::Unavailable {
                    service: name,
                    reason,
                };
            }
            Err(Unresolved::Protocol(p)) if matches!(protocol, ProtocolFrom::AppProtocol(_)) => {
                let message = format!("Service {namespace}/{}: {}", service.name, p.message);
                diags.push(Diagnostic::error(
                    ingress,
                    &format!("{field} ({})", p.field),
                    "InvalidBackendProtocol",
                    format!("{message}; requests for it answer 500 until it is fixed"),
                    p.fix,
                ));
                return Backend::Invalid { reason: message };
            }
            Err(Unresolved::Protocol(p)) => {
                let message = format!(
                    "Service {namespace}/{}: {}; requests for it answer 503 until it is fixed",
                    service.name, p.message
                );
                diags.push(Diagnostic::error(
                    ingress,
                    &format!("{field}.service (metadata.annotations[{}])", p.field),
                    "InvalidBackendProtocol",
                    message.clone(),
                    p.fix,
                ));
                return Backend::Unavailable {
                    service: name,
                    reason: message,
                };
            }
        };
        // Without ready endpoints the route still holds the upstream, so that
        // endpoints appearing later are served without a new snapshot.
        if let (true, Some(source)) = (targets.is_empty(), &endpoints) {
            diags.push(no_ready_endpoints(source, ingress, field));
        }
        // Two routes may speak to one Service port differently (their Ingresses'
        // annotations differ); each way has its own upstream and connections.
        let key = format!("{name} {transport:?}");
        if let Some(up) = self.upstreams.get(&key) {
            return Backend::Service(up.clone());
        }
        let up = Arc::new(Upstream {
            name,
            targets,
            endpoints,
            id: self.upstreams.len(),
            transport,
        });
        self.upstreams.insert(key, up.clone());
        Backend::Service(up)
    }
}

fn no_ready_endpoints(source: &EndpointSource, ingress: &ObjectRef, field: &str) -> Diagnostic {
    let svc_name = format!("{}/{}", source.namespace, source.service);
    Diagnostic::error(
        ingress,
        &format!("{field}.service"),
        "BackendNotFound",
        format!("Service {svc_name} has no ready endpoints"),
        format!(
            "check that Pods selected by Service {svc_name} are running and ready (kubectl get endpointslices -l {SERVICE_NAME_LABEL}={})",
            source.service
        ),
    )
}

/// Why a backend cannot be used.
enum Unresolved {
    /// The Service or its port is missing: the problem and its fix.
    Backend(String, String),
    /// How to speak to the pods cannot be set up.
    Protocol(backend_protocol::ProtocolProblem),
}

fn targets(
    index: &Index,
    namespace: &str,
    backend: &IngressServiceBackend,
    protocol: ProtocolFrom,
) -> Result<(Vec<String>, Option<EndpointSource>, Transport), Unresolved> {
    let (service, port, targets, endpoints) = service_targets(index, namespace, backend)
        .map_err(|(problem, fix)| Unresolved::Backend(problem, fix))?;
    let transport = backend_protocol::transport(protocol, service, port, index)
        .map_err(Unresolved::Protocol)?;
    Ok((targets, endpoints, transport))
}

/// A Service port found, its targets and where they come from, or the problem and its fix.
type Found<'i> = (
    &'i Service,
    Option<&'i ServicePort>,
    Vec<String>,
    Option<EndpointSource>,
);

fn service_targets<'i>(
    index: &Index<'i>,
    namespace: &str,
    backend: &IngressServiceBackend,
) -> Result<Found<'i>, (String, String)> {
    let svc_name = format!("{namespace}/{}", backend.name);
    let service: &'i Service = index
        .services
        .get(&(namespace.to_owned(), backend.name.clone()))
        .copied()
        .ok_or_else(|| {
            (
                format!("Service {svc_name} not found"),
                format!("create Service {svc_name} or fix the backend's service name"),
            )
        })?;
    let Some(wanted) = backend.port.as_ref() else {
        return Err((
            format!("no port given for Service {svc_name}"),
            "set backend.service.port.number or .name".into(),
        ));
    };
    let spec = service.spec.as_ref();
    let port: Option<&ServicePort> = spec.and_then(|s| s.ports.as_ref()).and_then(|ports| {
        ports.iter().find(|p| match (&wanted.number, &wanted.name) {
            (Some(n), _) => p.port == *n,
            (None, Some(name)) => p.name.as_deref() == Some(name.as_str()),
            (None, None) => false,
        })
    });
    if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
        let external = spec
            .and_then(|s| s.external_name.as_deref())
            .unwrap_or_default();
        let targets =
            external_name_target(&svc_name, external, wanted.number.or(port.map(|p| p.port)))?;
        return Ok((service, port, targets, None));
    }
    let port = port.ok_or_else(|| {
        (
            format!(
                "Service {svc_name} has no port {}",
                wanted
                    .number
                    .map(|n| n.to_string())
                    .or(wanted.name.clone())
                    .unwrap_or_default()
            ),
            format!("use one of the ports Service {svc_name} declares"),
        )
    })?;
    let source = EndpointSource {
        namespace: namespace.to_owned(),
        service: backend.name.clone(),
        port_name: port.name.clone().unwrap_or_default(),
    };
    Ok((
        service,
        Some(port),
        index.slices.ready_targets(&source),
        Some(source),
    ))
}

/// An ExternalName Service is reached by its name, at the port number asked for.
fn external_name_target(
    svc_name: &str,
    external: &str,
    number: Option<i32>,
) -> Result<Vec<String>, (String, String)> {
    match number {
        Some(n) if !external.is_empty() => {
            Ok(vec![format!("{}:{n}", external.trim_end_matches('.'))])
        }
        _ => Err((
            format!("ExternalName Service {svc_name} needs spec.externalName and a port number"),
            "set spec.externalName on the Service and port.number on the Ingress backend".into(),
        )),
    }
}

/// EndpointSlices by the Service they belong to (their `kubernetes.io/service-name`
/// label): what an upstream's targets are read from, in a compile and when only
/// EndpointSlices changed.
pub struct SliceIndex<'a>(HashMap<Key, Vec<&'a EndpointSlice>>);

impl<'a> SliceIndex<'a> {
    pub fn new(slices: &'a [Arc<EndpointSlice>]) -> Self {
        let mut by_service: HashMap<Key, Vec<&EndpointSlice>> = HashMap::new();
        for slice in slices {
            let service = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL));
            if let Some(service) = service {
                by_service
                    .entry(key(slice.metadata.namespace.as_ref(), Some(service)))
                    .or_default()
                    .push(slice);
            }
        }
        Self(by_service)
    }

    /// The ready endpoints of the Service's port, sorted, each once.
    pub fn ready_targets(&self, source: &EndpointSource) -> Vec<String> {
        let mut targets = Vec::new();
        for slice in self
            .0
            .get(&(source.namespace.clone(), source.service.clone()))
            .into_iter()
            .flatten()
        {
            let slice_port = slice
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref().unwrap_or("") == source.port_name);
            let Some(number) = slice_port.and_then(|p| p.port) else {
                continue;
            };
            for endpoint in &slice.endpoints {
                // An unset `ready` means ready, as the EndpointSlice API defines it.
                if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                    continue;
                }
                for address in &endpoint.addresses {
                    targets.push(match slice.address_type.as_str() {
                        "IPv6" => format!("[{address}]:{number}"),
                        _ => format!("{address}:{number}"),
                    });
                }
            }
        }
        targets.sort();
        targets.dedup();
        targets
    }
}
