//! What Ingresses (and HTTPRoutes) are told: the address they are reached at, and a
//! Warning Event for each problem that keeps their routes closed.

use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::api::networking::v1::{IngressLoadBalancerIngress, IngressLoadBalancerStatus};

use crate::diagnostics::ObjectRef;
use crate::store::Objects;

use super::{Inputs, RouteEvent, Write};

/// Route diagnostics announced as Warning Events on the route itself (Ingresses have
/// no conditions to carry them).
const ROUTE_EVENT_REASONS: &[&str] = &["AuthRulePending"];

/// A Warning Event on each route object for each of its closing problems, once (the
/// applier remembers what it sent).
pub(super) fn route_events(input: &Inputs<'_>) -> Vec<Write> {
    let mut out = Vec::new();
    for d in input.diagnostics {
        if !ROUTE_EVENT_REASONS.contains(&d.reason) {
            continue;
        }
        let key: RouteEvent = (d.object.clone(), d.reason, d.message.clone());
        if input.own_events.contains(&key) {
            continue;
        }
        let Some(regarding) = route_reference(input.objects, &d.object) else {
            continue;
        };
        out.push(Write::Event {
            regarding,
            warning: true,
            reason: d.reason.into(),
            note: format!("{} (fix: {})", d.message, d.fix)
                .chars()
                .take(1000)
                .collect(),
            action: "Compile",
            once: Some(key),
        });
    }
    out
}

fn route_reference(objects: &Objects, object: &ObjectRef) -> Option<ObjectReference> {
    let same = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        m.namespace.as_deref() == Some(&object.namespace) && m.name.as_deref() == Some(&object.name)
    };
    let (api_version, meta) = match object.kind.as_str() {
        "Ingress" => (
            "networking.k8s.io/v1",
            &objects
                .ingresses
                .iter()
                .find(|i| same(&i.metadata))?
                .metadata,
        ),
        "HTTPRoute" => (
            "gateway.networking.k8s.io/v1",
            &objects
                .http_routes
                .iter()
                .find(|r| same(&r.metadata))?
                .metadata,
        ),
        "GRPCRoute" => (
            "gateway.networking.k8s.io/v1",
            &objects
                .grpc_routes
                .iter()
                .find(|r| same(&r.metadata))?
                .metadata,
        ),
        _ => return None,
    };
    Some(ObjectReference {
        api_version: Some(api_version.into()),
        kind: Some(object.kind.clone()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        ..ObjectReference::default()
    })
}

/// The address served Ingresses get: the fixed one, else the controller Service's
/// load-balancer addresses (or external IPs), from the watched Services.
pub(super) fn address(input: &Inputs<'_>) -> Option<IngressLoadBalancerStatus> {
    let entry = |value: &str| {
        if value.parse::<std::net::IpAddr>().is_ok() {
            IngressLoadBalancerIngress {
                ip: Some(value.into()),
                ..Default::default()
            }
        } else {
            IngressLoadBalancerIngress {
                hostname: Some(value.into()),
                ..Default::default()
            }
        }
    };
    if let Some(fixed) = input.publish_address {
        return Some(IngressLoadBalancerStatus {
            ingress: Some(vec![entry(fixed)]),
        });
    }
    let (namespace, name) = input.publish_service?.split_once('/')?;
    let service: &Service = input.objects.services.iter().find(|s| {
        s.metadata.namespace.as_deref() == Some(namespace)
            && s.metadata.name.as_deref() == Some(name)
    })?;
    let from_lb: Vec<IngressLoadBalancerIngress> = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref().or(i.hostname.as_deref()))
        .map(entry)
        .collect();
    let addresses = if from_lb.is_empty() {
        service
            .spec
            .as_ref()
            .and_then(|s| s.external_ips.as_ref())
            .into_iter()
            .flatten()
            .map(|v| entry(v))
            .collect()
    } else {
        from_lb
    };
    (!addresses.is_empty()).then_some(IngressLoadBalancerStatus {
        ingress: Some(addresses),
    })
}

/// Every served Ingress whose `status.loadBalancer` is not `address` yet.
pub(super) fn addresses(input: &Inputs<'_>, address: &IngressLoadBalancerStatus) -> Vec<Write> {
    let served: std::collections::BTreeSet<&ObjectRef> = input
        .snapshot
        .routes
        .all
        .iter()
        .map(|r| &r.ingress)
        .collect();
    input
        .objects
        .ingresses
        .iter()
        .filter_map(|ingress| {
            let object = ObjectRef::new(
                "Ingress",
                ingress.metadata.namespace.as_deref().unwrap_or_default(),
                ingress.metadata.name.as_deref().unwrap_or_default(),
            );
            let current = ingress
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref());
            (served.contains(&object) && current != Some(address)).then(|| Write::IngressAddress {
                object,
                load_balancer: address.clone(),
            })
        })
        .collect()
}
