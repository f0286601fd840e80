//! The status written for ListenerSets and their Gateway.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use jiff::Timestamp;
use serde_json::Value;

use crate::compile::{CompileOptions, compile};
use crate::controller::plan::{Inputs, Write, plan};
use crate::diagnostics::ObjectRef;
use crate::source::manifests::{add_document, parse_documents};
use crate::store::Objects;

const YAML: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: portcullis}
spec: {controllerName: portcullis.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: infra, generation: 4}
spec:
  gatewayClassName: portcullis
  allowedListeners: {namespaces: {from: Same}}
  listeners: [{name: main, port: 80, protocol: HTTP, hostname: main.test}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: ListenerSet
metadata: {name: shop, namespace: infra, generation: 2}
spec:
  parentRef: {name: edge}
  listeners: [{name: web, port: 80, protocol: HTTP, hostname: shop.test}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: infra}
spec:
  parentRefs: [{kind: ListenerSet, group: gateway.networking.k8s.io, name: shop, sectionName: web}]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
"#;

fn objects() -> Objects {
    let mut objects = Objects::default();
    for doc in parse_documents(YAML).expect("test YAML parses") {
        add_document(&mut objects, doc, &ObjectRef::new("File", "", "test.yaml"));
    }
    objects
}

fn statuses(objects: &Objects) -> BTreeMap<(String, ObjectRef), Value> {
    let compiled = compile(objects, &CompileOptions::default());
    let writes = plan(&Inputs {
        objects,
        snapshot: &compiled.snapshot,
        gateway: &compiled.gateway_status,
        diagnostics: &compiled.diagnostics,
        idp: &BTreeMap::new(),
        credentials: &BTreeMap::new(),
        failures: &BTreeMap::new(),
        abandoned: &BTreeMap::new(),
        own_writes: &HashMap::new(),
        own_unreadable: &HashMap::new(),
        own_gateway: &HashMap::new(),
        own_events: &Default::default(),
        publish_service: None,
        publish_address: Some("203.0.113.7"),
        now: Timestamp::from_second(1_800_000_000).unwrap(),
    });
    writes
        .into_iter()
        .filter_map(|w| match w {
            Write::GatewayApiStatus {
                object,
                kind,
                status,
            } => Some(((kind.to_owned(), object), status)),
            _ => None,
        })
        .collect()
}

fn condition<'v>(conditions: &'v Value, kind: &str) -> (&'v str, &'v str, i64) {
    let c = (conditions.as_array().unwrap().iter())
        .find(|c| c["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {conditions}"));
    let text = |k: &str| c[k].as_str().unwrap();
    (
        text("status"),
        text("reason"),
        c["observedGeneration"].as_i64().unwrap(),
    )
}

#[test]
fn a_set_gets_its_status_and_the_gateway_counts_it_once_written() {
    let mut objects = objects();
    let all = statuses(&objects);
    let set_key = (
        "ListenerSet".to_owned(),
        ObjectRef::new("ListenerSet", "infra", "shop"),
    );
    let set = &all[&set_key];
    assert_eq!(
        condition(&set["conditions"], "Accepted"),
        ("True", "Accepted", 2)
    );
    assert_eq!(
        condition(&set["conditions"], "Programmed"),
        ("True", "Programmed", 2)
    );
    let listener = &set["listeners"][0];
    assert_eq!(listener["name"], "web");
    assert_eq!(listener["attachedRoutes"], 1);
    assert_eq!(
        listener["supportedKinds"],
        serde_json::json!([
            {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"},
            {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"}
        ])
    );
    assert_eq!(
        condition(&listener["conditions"], "Conflicted"),
        ("False", "NoConflicts", 2)
    );
    let gateway = &all[&(
        "Gateway".to_owned(),
        ObjectRef::new("Gateway", "infra", "edge"),
    )];
    assert_eq!(gateway["attachedListenerSets"], 1);
    assert_eq!(gateway["listeners"].as_array().unwrap().len(), 1);
    let route = &all[&(
        "HTTPRoute".to_owned(),
        ObjectRef::new("HTTPRoute", "infra", "shop"),
    )];
    let parent = &route["parents"][0]["parentRef"];
    assert_eq!(
        (&parent["kind"], &parent["name"]),
        (&"ListenerSet".into(), &"shop".into())
    );
    assert_eq!(
        condition(&route["parents"][0]["conditions"], "Accepted").0,
        "True"
    );

    // Once the API server holds it, the same status is not written again.
    for set in &mut objects.listener_sets {
        Arc::make_mut(set).status = Some(serde_json::from_value(all[&set_key].clone()).unwrap());
    }
    assert!(!statuses(&objects).contains_key(&set_key));
}
