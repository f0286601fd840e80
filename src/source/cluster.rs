//! Objects from the Kubernetes API: one reflector per kind, feeding the same store and
//! compile step as manifest files. Reflectors retry on their own with backoff, so when
//! the API server goes away the last snapshot keeps serving.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
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
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use super::manifests::add_document;
use crate::diagnostics::ObjectRef;
use crate::model::AuthRule;
use crate::store::Objects;

/// The reflectors' stores. `changed` is notified on every event of any of them, after
/// `kinds` has noted which.
pub struct ClusterSource {
    ingresses: Store<Ingress>,
    classes: Store<IngressClass>,
    rules: Store<DynamicObject>,
    secrets: Store<Secret>,
    config_maps: Store<ConfigMap>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    gateway_api: Option<GatewayStores>,
    pub changed: Arc<Notify>,
    kinds: Arc<ChangedKinds>,
    /// Each AuthRule as last read, by namespace and name, with its resourceVersion:
    /// one that did not change is not encoded and parsed again.
    rule_cache: Mutex<HashMap<(String, String), CachedRule>>,
}

/// What changed since `ClusterSource::take_changes` was last asked.
#[derive(Debug, Default)]
struct ChangedKinds {
    slices: AtomicBool,
    other: AtomicBool,
}

/// Which kinds of object changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// EndpointSlices: only upstream targets can differ.
    pub slices: bool,
    /// Anything else: the routes themselves can differ.
    pub other: bool,
}

struct CachedRule {
    resource_version: Option<String>,
    /// What reading it added: the rule, or why it is unreadable, and its diagnostics.
    read: Objects,
}

/// The Gateway API watches, when its CRDs are installed.
struct GatewayStores {
    classes: Store<GatewayClass>,
    gateways: Store<Gateway>,
    routes: Store<HttpRoute>,
    /// Watched only when the API server serves GRPCRoutes (CRDs before v1.1 do not).
    grpc_routes: Option<Store<GrpcRoute>>,
    grants: Store<ReferenceGrant>,
    namespaces: Store<Namespace>,
    /// Watched only when the API server serves TLSRoutes (their CRD is optional).
    tls_routes: Option<Store<TlsRoute>>,
    /// Only when the ListenerSet CRD is installed too.
    listener_sets: Option<Store<ListenerSet>>,
    /// Only when the BackendTLSPolicy CRD is installed too.
    backend_tls: Option<Store<BackendTlsPolicy>>,
}

/// What of Gateway API the API server serves, beyond the kinds every install has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GatewayApi {
    pub grpc_routes: bool,
    pub tls_routes: bool,
    pub listener_sets: bool,
    pub backend_tls_policies: bool,
}

/// Whether the API server serves Gateway API v1 HTTPRoutes and Gateways (their CRDs
/// are installed), and whether TLSRoutes too; checked once at start.
pub async fn gateway_api_installed(client: &Client) -> Option<GatewayApi> {
    let list = client
        .list_api_group_resources(&format!("{}/v1", crate::model::GATEWAY_GROUP))
        .await
        .ok()?;
    let served = |name: &str| list.resources.iter().any(|r| r.name == name);
    [
        "httproutes",
        "gateways",
        "gatewayclasses",
        "referencegrants",
    ]
    .iter()
    .all(|name| served(name))
    .then(|| GatewayApi {
        grpc_routes: served("grpcroutes"),
        tls_routes: served("tlsroutes"),
        listener_sets: served("listenersets"),
        backend_tls_policies: served("backendtlspolicies"),
    })
}

impl ClusterSource {
    /// Starts the watches, cluster-wide; those of Gateway API only when `gateway_api`,
    /// of its optional kinds only when served.
    pub fn start(client: Client, gateway_api: Option<GatewayApi>) -> Self {
        let changed = Arc::new(Notify::new());
        let kinds = Arc::new(ChangedKinds::default());
        let changed = Changed {
            notify: changed,
            kinds: kinds.clone(),
        };
        // AuthRules are read untyped: one that does not parse is reported and fails
        // its routes closed, instead of failing the whole list.
        let resource = ApiResource::erase::<AuthRule>(&());
        let (rules, writer) = {
            let writer = reflector::store::Writer::new(resource.clone());
            (writer.as_reader(), writer)
        };
        let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
        spawn_watch(
            "AuthRule",
            reflector::reflector(writer, watch(api)),
            &changed,
        );
        Self {
            ingresses: reflect("Ingress", Api::all(client.clone()), &changed),
            classes: reflect("IngressClass", Api::all(client.clone()), &changed),
            rules,
            secrets: reflect("Secret", Api::all(client.clone()), &changed),
            config_maps: reflect("ConfigMap", Api::all(client.clone()), &changed),
            services: reflect("Service", Api::all(client.clone()), &changed),
            slices: reflect("EndpointSlice", Api::all(client.clone()), &changed),
            gateway_api: gateway_api.map(|served| GatewayStores {
                classes: reflect("GatewayClass", Api::all(client.clone()), &changed),
                gateways: reflect("Gateway", Api::all(client.clone()), &changed),
                routes: reflect("HTTPRoute", Api::all(client.clone()), &changed),
                grpc_routes: served
                    .grpc_routes
                    .then(|| reflect("GRPCRoute", Api::all(client.clone()), &changed)),
                grants: reflect("ReferenceGrant", Api::all(client.clone()), &changed),
                namespaces: reflect("Namespace", Api::all(client.clone()), &changed),
                tls_routes: served
                    .tls_routes
                    .then(|| reflect("TLSRoute", Api::all(client.clone()), &changed)),
                listener_sets: served
                    .listener_sets
                    .then(|| reflect("ListenerSet", Api::all(client.clone()), &changed)),
                backend_tls: served
                    .backend_tls_policies
                    .then(|| reflect("BackendTLSPolicy", Api::all(client), &changed)),
            }),
            changed: changed.notify,
            kinds,
            rule_cache: Mutex::default(),
        }
    }

    /// Which kinds changed since the last call (or since the start).
    pub fn take_changes(&self) -> Changes {
        Changes {
            slices: self.kinds.slices.swap(false, Ordering::AcqRel),
            other: self.kinds.other.swap(false, Ordering::AcqRel),
        }
    }

    /// The EndpointSlices the store holds now.
    pub fn endpoint_slices(&self) -> Vec<Arc<EndpointSlice>> {
        self.slices.state()
    }

    /// Waits until every watch has listed once: the first snapshot is whole.
    pub async fn wait_until_ready(&self) {
        let _ = self.ingresses.wait_until_ready().await;
        let _ = self.classes.wait_until_ready().await;
        let _ = self.rules.wait_until_ready().await;
        let _ = self.secrets.wait_until_ready().await;
        let _ = self.config_maps.wait_until_ready().await;
        let _ = self.services.wait_until_ready().await;
        let _ = self.slices.wait_until_ready().await;
        if let Some(g) = &self.gateway_api {
            let _ = g.classes.wait_until_ready().await;
            let _ = g.gateways.wait_until_ready().await;
            let _ = g.routes.wait_until_ready().await;
            if let Some(grpc_routes) = &g.grpc_routes {
                let _ = grpc_routes.wait_until_ready().await;
            }
            let _ = g.grants.wait_until_ready().await;
            let _ = g.namespaces.wait_until_ready().await;
            if let Some(tls_routes) = &g.tls_routes {
                let _ = tls_routes.wait_until_ready().await;
            }
            if let Some(sets) = &g.listener_sets {
                let _ = sets.wait_until_ready().await;
            }
            if let Some(p) = &g.backend_tls {
                let _ = p.wait_until_ready().await;
            }
        }
    }

    /// What the stores hold now.
    pub fn objects(&self) -> Objects {
        let mut objects = Objects {
            ingresses: self.ingresses.state(),
            ingress_classes: self.classes.state(),
            secrets: self.secrets.state(),
            config_maps: self.config_maps.state(),
            services: self.services.state(),
            endpoint_slices: self.slices.state(),
            ..Objects::default()
        };
        if let Some(g) = &self.gateway_api {
            objects.gateway_classes = g.classes.state();
            objects.gateways = g.gateways.state();
            objects.http_routes = g.routes.state();
            objects.grpc_routes = g.grpc_routes.as_ref().map(Store::state).unwrap_or_default();
            objects.reference_grants = g.grants.state();
            objects.namespaces = g.namespaces.state();
            objects.tls_routes = g.tls_routes.as_ref().map(Store::state).unwrap_or_default();
            objects.listener_sets = g
                .listener_sets
                .as_ref()
                .map(Store::state)
                .unwrap_or_default();
            objects.backend_tls_policies =
                g.backend_tls.as_ref().map(Store::state).unwrap_or_default();
        }
        self.add_rules(&mut objects);
        objects
    }

    /// The AuthRules, each read from its untyped form only when its resourceVersion
    /// changed; rules gone from the store leave the cache.
    fn add_rules(&self, objects: &mut Objects) {
        let source = ObjectRef::new("Cluster", "", "watch");
        let mut cache = self.rule_cache.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = HashMap::with_capacity(cache.len());
        for rule in self.rules.state() {
            let key = (
                rule.metadata.namespace.clone().unwrap_or_default(),
                rule.metadata.name.clone().unwrap_or_default(),
            );
            let version = &rule.metadata.resource_version;
            let cached = match cache.remove(&key) {
                Some(c) if version.is_some() && c.resource_version == *version => c,
                _ => CachedRule {
                    resource_version: version.clone(),
                    read: read_rule(&rule, &source),
                },
            };
            objects
                .auth_rules
                .extend(cached.read.auth_rules.iter().cloned());
            objects
                .unreadable_auth_rules
                .extend(cached.read.unreadable_auth_rules.iter().cloned());
            objects
                .diagnostics
                .extend(cached.read.diagnostics.iter().cloned());
            next.insert(key, cached);
        }
        *cache = next;
    }
}

/// One AuthRule as the manifest reader takes it, into objects of its own.
fn read_rule(rule: &DynamicObject, source: &ObjectRef) -> Objects {
    let mut read = Objects::default();
    match serde_json::to_value(rule) {
        Ok(doc) => add_document(&mut read, doc, source),
        Err(e) => tracing::warn!(error = %e, "an AuthRule could not be re-encoded"),
    }
    read
}

/// What a watch tells on each event: the notification, and which kind changed.
#[derive(Clone)]
struct Changed {
    notify: Arc<Notify>,
    kinds: Arc<ChangedKinds>,
}

impl Changed {
    fn note(&self, kind: &str) {
        let flag = match kind {
            "EndpointSlice" => &self.kinds.slices,
            _ => &self.kinds.other,
        };
        // Set before the notification, so whoever wakes finds it.
        flag.store(true, Ordering::Release);
        self.notify.notify_one();
    }
}

fn watch<K>(api: Api<K>) -> impl futures_util::Stream<Item = watcher::Result<watcher::Event<K>>>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(forget_unread_metadata)
}

/// kubectl's copy of the object as last applied: a second copy of the whole object.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops, before an object reaches a store, the metadata every object carries and
/// nothing here reads: the field managers' records (`managedFields`, often as large as
/// the rest of the object) and kubectl's last-applied copy. The stores hold every
/// watched object of the cluster for the life of the process.
fn forget_unread_metadata<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.remove(LAST_APPLIED);
    }
}

fn reflect<K>(kind: &'static str, api: Api<K>, changed: &Changed) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let (reader, writer) = reflector::store();
    spawn_watch(kind, reflector::reflector(writer, watch(api)), changed);
    reader
}

fn spawn_watch<K>(
    kind: &'static str,
    stream: impl futures_util::Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
    changed: &Changed,
) where
    K: Send + 'static,
{
    let changed = changed.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => changed.note(kind),
                // The watcher backs off and resumes; the stores keep their last state.
                Err(e) => tracing::warn!(kind, error = %e, "watch interrupted; retrying"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An object as the API server sends it after `kubectl apply`.
    fn applied(kind: &str, api_version: &str) -> serde_json::Value {
        json!({
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {
                "name": "app", "namespace": "shop", "resourceVersion": "42", "generation": 3,
                "labels": {"team": "a"},
                "annotations": {
                    LAST_APPLIED: "{\"kind\":\"Ingress\",\"spec\":{}}",
                    "alb.ingress.kubernetes.io/scheme": "internet-facing"
                },
                "managedFields": [{
                    "manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:metadata": {"f:annotations": {".": {}}}, "f:spec": {"f:rules": {}}}
                }]
            },
            "spec": {"ingressClassName": "portcullis", "targetRefs": [{"name": "app"}]}
        })
    }

    fn check_kept(meta: &kube::api::ObjectMeta) {
        assert_eq!(meta.managed_fields, None);
        let annotations = meta.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations.into_iter().collect::<Vec<_>>(),
            [(
                "alb.ingress.kubernetes.io/scheme".to_string(),
                "internet-facing".to_string()
            )]
        );
        assert_eq!(meta.name.as_deref(), Some("app"));
        assert_eq!(meta.namespace.as_deref(), Some("shop"));
        assert_eq!(meta.resource_version.as_deref(), Some("42"));
        assert_eq!(meta.generation, Some(3));
        assert_eq!(meta.labels.clone().unwrap_or_default().len(), 1);
    }

    #[test]
    fn stored_objects_lose_field_managers_and_the_last_applied_copy_and_keep_the_rest() {
        let mut ingress: Ingress =
            serde_json::from_value(applied("Ingress", "networking.k8s.io/v1")).unwrap();
        let spec = ingress.spec.clone();
        forget_unread_metadata(&mut ingress);
        check_kept(&ingress.metadata);
        assert_eq!(ingress.spec, spec);

        // AuthRules are stored untyped: their spec is all data and must stay whole.
        let mut rule: DynamicObject =
            serde_json::from_value(applied("AuthRule", "portcullis.dev/v1alpha1")).unwrap();
        let data = rule.data.clone();
        forget_unread_metadata(&mut rule);
        check_kept(&rule.metadata);
        assert_eq!(rule.data, data);
    }

    #[test]
    fn objects_without_annotations_or_field_managers_are_left_as_they_are() {
        let mut service: Service =
            serde_json::from_value(json!({"metadata": {"name": "app"}})).unwrap();
        let before = service.clone();
        forget_unread_metadata(&mut service);
        assert_eq!(service, before);
    }
}
