use super::*;
use crate::compile::tests_support::objects;
use gateway_api::gateways::{
    GatewayAllowedListenersNamespaces, GatewayAllowedListenersNamespacesSelector,
    GatewayAllowedListenersNamespacesSelectorMatchExpressions,
};

fn allowed(from: GatewayAllowedListenersNamespacesFrom) -> GatewayAllowedListeners {
    GatewayAllowedListeners {
        namespaces: Some(GatewayAllowedListenersNamespaces {
            from: Some(from),
            selector: None,
        }),
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    (pairs.iter())
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn a_gateway_admits_no_listener_set_unless_it_says_so() {
    use GatewayAllowedListenersNamespacesFrom as From;
    assert!(!admits(None, "infra", "infra", None));
    let unset = GatewayAllowedListeners { namespaces: None };
    assert!(!admits(Some(&unset), "infra", "infra", None));
    assert!(!admits(Some(&allowed(From::None)), "infra", "infra", None));
    assert!(admits(Some(&allowed(From::Same)), "infra", "infra", None));
    assert!(!admits(Some(&allowed(From::Same)), "infra", "apps", None));
    assert!(admits(Some(&allowed(From::All)), "infra", "apps", None));
}

#[test]
fn a_selector_admits_the_namespaces_whose_labels_match_and_nothing_without_one() {
    use GatewayAllowedListenersNamespacesFrom as From;
    assert!(!admits(
        Some(&allowed(From::Selector)),
        "infra",
        "apps",
        None
    ));
    let mut selector = allowed(From::Selector);
    selector.namespaces.as_mut().unwrap().selector =
        Some(GatewayAllowedListenersNamespacesSelector {
            match_labels: Some(labels(&[("allowed", "ns")])),
            match_expressions: Some(vec![
                GatewayAllowedListenersNamespacesSelectorMatchExpressions {
                    key: "tier".into(),
                    operator: "NotIn".into(),
                    values: Some(vec!["test".into()]),
                },
            ]),
        });
    let admitted = |pairs: &[(&str, &str)]| {
        let l = labels(pairs);
        admits(Some(&selector), "infra", "apps", Some(&l))
    };
    assert!(admitted(&[("allowed", "ns")]));
    assert!(admitted(&[("allowed", "ns"), ("tier", "prod")]));
    assert!(!admitted(&[("allowed", "ns"), ("tier", "test")]));
    assert!(!admitted(&[("allowed", "other")]));
    assert!(!admitted(&[]));
    assert!(!admits(Some(&selector), "infra", "apps", None));
}

fn set(ns: &str, name: &str, created: &str, parent: &str) -> String {
    format!(
        r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: ListenerSet
metadata: {{name: {name}, namespace: {ns}, creationTimestamp: "{created}"}}
spec:
  parentRef: {parent}
  listeners:
  - name: web
    port: 443
    protocol: HTTPS
    hostname: Web.Example.com
    tls: {{certificateRefs: [{{name: cert, namespace: certs}}]}}
"#
    )
}

#[test]
fn sets_are_grouped_by_their_gateway_oldest_first_then_by_namespace_and_name() {
    let yaml = [
        set(
            "b",
            "late",
            "2024-01-02T00:00:00Z",
            "{name: edge, namespace: infra}",
        ),
        set(
            "b",
            "early",
            "2024-01-01T00:00:00Z",
            "{name: edge, namespace: infra}",
        ),
        set(
            "a",
            "tie",
            "2024-01-02T00:00:00Z",
            "{name: edge, namespace: infra}",
        ),
        // No namespace: the set's own.
        set("infra", "local", "2024-01-03T00:00:00Z", "{name: edge}"),
        set(
            "infra",
            "other-kind",
            "2024-01-01T00:00:00Z",
            "{name: edge, kind: Service, group: \"\"}",
        ),
        set(
            "infra",
            "elsewhere",
            "2024-01-01T00:00:00Z",
            "{name: inner}",
        ),
    ]
    .concat();
    let objects = objects(&yaml);
    let grouped = by_parent(&objects.listener_sets);
    let names = |gateway: &str| -> Vec<String> {
        grouped[&ObjectRef::new("Gateway", "infra", gateway)]
            .iter()
            .map(|s| format!("{}/{}", s.obj.namespace, s.obj.name))
            .collect()
    };
    assert_eq!(names("edge"), ["b/early", "a/tie", "b/late", "infra/local"]);
    assert_eq!(names("inner"), ["infra/elsewhere"]);
    assert_eq!(grouped.len(), 2, "a parent of another kind is no Gateway's");
    let listener = &grouped[&ObjectRef::new("Gateway", "infra", "edge")][0].specs[0];
    assert_eq!((listener.port, listener.protocol.as_str()), (443, "HTTPS"));
    assert_eq!(listener.hostname.as_deref(), Some("Web.Example.com"));
    let cert = &listener
        .tls
        .as_ref()
        .unwrap()
        .certificate_refs
        .as_ref()
        .unwrap()[0];
    assert_eq!(
        (cert.name.as_str(), cert.namespace.as_deref()),
        ("cert", Some("certs"))
    );
}

fn slot(port: i32, protocol: &str, hostname: Option<&str>, what: &str) -> Slot {
    Slot {
        port,
        protocol: protocol.into(),
        hostname: hostname.map(normalize_host),
        what: what.into(),
    }
}

#[test]
fn the_gateways_own_listeners_keep_their_place_and_later_ones_lose_to_earlier() {
    let mut merge = Merge::new(vec![
        slot(80, "HTTP", Some("a.example.com"), "gw-a"),
        slot(80, "HTTP", None, "gw-any"),
    ]);
    let conflict = |r: Result<(), (Conflict, String)>| r.err();
    // The same hostname on the same port, in any case, is taken.
    assert_eq!(
        conflict(merge.take(slot(80, "HTTP", Some("A.Example.com"), "s1"))),
        Some((Conflict::Hostname, "gw-a".into()))
    );
    // So is a listener without a hostname, by the Gateway's.
    assert_eq!(
        conflict(merge.take(slot(80, "HTTP", None, "s2"))),
        Some((Conflict::Hostname, "gw-any".into()))
    );
    // Another protocol on the port loses whatever its hostname: protocol first.
    assert_eq!(
        conflict(merge.take(slot(80, "TCP", Some("a.example.com"), "s3"))),
        Some((Conflict::Protocol, "gw-a".into()))
    );
    assert_eq!(
        conflict(merge.take(slot(80, "HTTPS", Some("b.example.com"), "s4"))),
        Some((Conflict::Protocol, "gw-a".into()))
    );
    // A new hostname, or another port, takes its place; and keeps it against later ones.
    assert_eq!(
        conflict(merge.take(slot(80, "HTTP", Some("b.example.com"), "s5"))),
        None
    );
    assert_eq!(
        conflict(merge.take(slot(443, "HTTPS", Some("b.example.com"), "s6"))),
        None
    );
    assert_eq!(
        conflict(merge.take(slot(80, "HTTP", Some("b.example.com"), "s7"))),
        Some((Conflict::Hostname, "s5".into()))
    );
    assert_eq!(
        conflict(merge.take(slot(443, "TLS", None, "s8"))),
        Some((Conflict::Protocol, "s6".into()))
    );
}

#[test]
fn a_listener_that_lost_its_place_holds_nothing_after_it() {
    let mut merge = Merge::new(vec![slot(80, "HTTP", Some("a.example.com"), "gw")]);
    assert!(merge.take(slot(80, "TCP", None, "lost")).is_err());
    assert!(
        merge
            .take(slot(80, "HTTP", Some("b.example.com"), "later"))
            .is_ok()
    );
}

fn summary(conditions: &[Cond]) -> Vec<(&'static str, bool, String)> {
    (conditions.iter())
        .map(|c| (c.kind, c.ok, c.reason.clone()))
        .collect()
}

#[test]
fn a_conflicted_listener_is_neither_accepted_nor_programmed_for_the_conflicts_reason() {
    let mut conditions = vec![
        cond("Accepted", true, "Accepted", String::new()),
        cond("Conflicted", false, "NoConflicts", String::new()),
        cond("ResolvedRefs", true, "ResolvedRefs", String::new()),
        cond("Programmed", true, "Programmed", String::new()),
    ];
    conflicted(
        &mut conditions,
        Conflict::Hostname,
        "listener a of Gateway infra/edge",
    );
    let mut got = summary(&conditions);
    got.sort();
    let reason = "HostnameConflict".to_owned();
    assert_eq!(
        got,
        vec![
            ("Accepted", false, reason.clone()),
            ("Conflicted", true, reason.clone()),
            ("Programmed", false, reason),
            ("ResolvedRefs", true, "ResolvedRefs".into()),
        ]
    );
    assert!(
        conditions[0]
            .message
            .contains("listener a of Gateway infra/edge")
    );
    let mut clear = vec![cond("Conflicted", true, "HostnameConflict", String::new())];
    not_conflicted(&mut clear);
    assert_eq!(
        summary(&clear),
        vec![("Conflicted", false, "NoConflicts".into())]
    );
}

#[test]
fn a_set_is_accepted_and_attached_while_one_of_its_listeners_is_valid() {
    let of = |s: Standing| (summary(&s.conditions()), s.attached());
    let refused = |reason: &str| {
        vec![
            ("Accepted", false, reason.to_owned()),
            ("Programmed", false, reason.to_owned()),
        ]
    };
    assert_eq!(of(Standing::NotAllowed), (refused("NotAllowed"), false));
    assert_eq!(
        of(Standing::ParentNotAccepted),
        (refused("ParentNotAccepted"), false)
    );
    let admitted = |total, valid, programmed| Standing::Admitted {
        total,
        valid,
        programmed,
    };
    assert_eq!(of(admitted(2, 0, 0)), (refused("ListenersNotValid"), false));
    assert_eq!(
        of(admitted(2, 2, 2)),
        (
            vec![
                ("Accepted", true, "Accepted".into()),
                ("Programmed", true, "Programmed".into())
            ],
            true
        )
    );
    assert_eq!(
        of(admitted(3, 1, 1)),
        (
            vec![
                ("Accepted", true, "ListenersNotValid".into()),
                ("Programmed", true, "Programmed".into())
            ],
            true
        )
    );
    assert_eq!(
        of(admitted(1, 1, 0)).0[1],
        ("Programmed", false, "Invalid".into())
    );
}

#[test]
fn a_set_listener_whose_socket_cannot_be_bound_is_not_accepted() {
    let socket: SocketAddr = "127.10.0.1:80".parse().unwrap();
    let listener = |name: &str, socket| ListenerState {
        name: name.into(),
        conditions: vec![
            cond("Accepted", true, "Accepted", String::new()),
            cond("Programmed", true, "Programmed", String::new()),
        ],
        socket,
        ..ListenerState::default()
    };
    let set = ListenerSetState {
        generation: Some(1),
        conditions: Standing::Admitted {
            total: 1,
            valid: 1,
            programmed: 1,
        }
        .conditions(),
        listeners: vec![listener("web", Some(socket))],
    };
    let mut sets = BTreeMap::from([(ObjectRef::new("ListenerSet", "apps", "s"), set)]);
    let unbound = BTreeMap::from([(socket, "address in use".to_owned())]);
    mark_unbound(&mut sets, &unbound);
    let set = sets.values().next().unwrap();
    assert_eq!(
        summary(&set.listeners[0].conditions),
        vec![
            ("Accepted", false, "PortUnavailable".into()),
            ("Programmed", false, "Invalid".into())
        ]
    );
    assert_eq!(set.conditions[1].kind, "Programmed");
    assert!(!set.conditions[1].ok);
}
