//! A Gateway's `spec.infrastructure`. Portcullis has no parameters resource of its
//! own, so a `parametersRef` can never resolve: the Gateway is refused
//! (`Accepted: False`, `InvalidParameters`) and serves nothing, rather than being
//! served without the settings it asked for. `labels` and `annotations` are for
//! the resources an implementation creates for a Gateway; Portcullis serves every
//! Gateway from its own Pods and creates none, so they are accepted and land nowhere.

use gateway_api::gateways::Gateway;

use super::gateway::{Cond, GatewayState};
use crate::diagnostics::{Diagnostic, ObjectRef};

/// The refusal of a Gateway whose `spec.infrastructure.parametersRef` is set, with
/// the diagnostic `check` and the log show.
pub fn parameters_refusal(obj: &ObjectRef, gateway: &Gateway) -> Option<(Cond, Diagnostic)> {
    let r = gateway
        .spec
        .infrastructure
        .as_ref()?
        .parameters_ref
        .as_ref()?;
    let group = if r.group.is_empty() { "core" } else { &r.group };
    let message = format!(
        "names {} {} (group {group}), which Portcullis cannot resolve: it has no parameters resource",
        r.kind, r.name
    );
    let field = "spec.infrastructure.parametersRef";
    let diagnostic = Diagnostic::error(
        obj,
        field,
        "InvalidParameters",
        message.clone(),
        "remove spec.infrastructure.parametersRef; Portcullis is configured by its flags and the chart's values".into(),
    );
    let cond = Cond {
        kind: "Accepted",
        ok: false,
        reason: "InvalidParameters".into(),
        message: format!("{field} {message}"),
    };
    Some((cond, diagnostic))
}

/// A refused Gateway's status: not accepted, not programmed, and none of its listeners
/// programmed (the caller stops serving them).
pub fn refuse(state: &mut GatewayState, refusal: Cond) {
    let why = format!("the Gateway is not accepted: {}", refusal.message);
    for listener in &mut state.listeners {
        for c in &mut listener.conditions {
            if c.kind == "Programmed" {
                *c = Cond {
                    kind: "Programmed",
                    ok: false,
                    reason: "Pending".into(),
                    message: why.clone(),
                };
            }
        }
    }
    state
        .conditions
        .retain(|c| c.kind != "Accepted" && c.kind != "Programmed");
    state.conditions.insert(0, refusal);
    state.conditions.push(Cond {
        kind: "Programmed",
        ok: false,
        reason: "Invalid".into(),
        message: why,
    });
}

#[cfg(test)]
mod tests {
    use super::super::tests_support::{backend_label, objects, service};
    use super::super::{CompileOptions, Compiled, RouteQuery, compile};
    use crate::diagnostics::ObjectRef;

    const CLASS: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: portcullis}\nspec: {controllerName: portcullis.dev/gateway-controller}\n";

    /// Two Gateways, `plain` and `asks` (whose `infrastructure` is `infra`), each with
    /// a route of its own host to the same Service.
    fn fixture(infra: &str) -> String {
        let gateway = |name: &str, infrastructure: &str| {
            format!(
                "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: infra}}\nspec:\n  gatewayClassName: portcullis\n  {infrastructure}\n  listeners: [{{name: http, port: 80, protocol: HTTP}}]\n"
            )
        };
        let route = |name: &str| {
            format!(
                "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: infra}}\nspec:\n  parentRefs: [{{name: {name}}}]\n  hostnames: [{name}.example.com]\n  rules: [{{backendRefs: [{{name: web, port: 80}}]}}]\n"
            )
        };
        format!(
            "{CLASS}{}{}{}{}{}",
            gateway("plain", ""),
            gateway("asks", infra),
            route("plain"),
            route("asks"),
            service("infra", "web", "10.0.0.1", 8080)
        )
    }

    fn compiled(yaml: &str, range: Option<&str>) -> Compiled {
        let options = CompileOptions {
            gateway_addresses: range.map(|r| r.parse().unwrap()),
            ..CompileOptions::default()
        };
        compile(&objects(yaml), &options)
    }

    fn served(c: &Compiled, host: &str, socket: Option<std::net::SocketAddr>) -> Option<String> {
        let headers = http::HeaderMap::new();
        let route = c
            .snapshot
            .routes
            .find_for(&RouteQuery {
                host,
                path: "/",
                method: &http::Method::GET,
                headers: &headers,
                query: None,
                tls: false,
                https: false,
                client: None,
                socket,
            })
            .expect("the route can be decided");
        route.map(|r| backend_label(&r.backend))
    }

    fn conditions(c: &Compiled, name: &str) -> Vec<(&'static str, bool, String)> {
        c.gateway_status.gateways[&ObjectRef::new("Gateway", "infra", name)]
            .conditions
            .iter()
            .map(|c| (c.kind, c.ok, c.reason.clone()))
            .collect()
    }

    const PARAMETERS: &str = "infrastructure: {parametersRef: {group: invalid.io, kind: InvalidParameters, name: invalid}}";

    #[test]
    fn a_gateway_asking_for_parameters_is_refused_and_serves_nothing() {
        let c = compiled(&fixture(PARAMETERS), None);
        assert_eq!(
            conditions(&c, "asks"),
            [
                ("Accepted", false, "InvalidParameters".to_owned()),
                ("Programmed", false, "Invalid".to_owned())
            ]
        );
        let gw = &c.gateway_status.gateways[&ObjectRef::new("Gateway", "infra", "asks")];
        assert!(
            gw.listeners[0]
                .conditions
                .iter()
                .any(|c| c.kind == "Programmed" && !c.ok)
        );
        assert_eq!(served(&c, "asks.example.com", None), None);
        // The other Gateway serves as before.
        assert_eq!(
            conditions(&c, "plain")[0],
            ("Accepted", true, "Accepted".to_owned())
        );
        assert!(served(&c, "plain.example.com", None).is_some());
        let d = c
            .diagnostics
            .iter()
            .find(|d| d.reason == "InvalidParameters")
            .expect("a diagnostic names the field");
        assert_eq!(d.field, "spec.infrastructure.parametersRef");
        assert_eq!(d.object, ObjectRef::new("Gateway", "infra", "asks"));
        assert!(
            d.message
                .contains("InvalidParameters invalid (group invalid.io)")
        );
    }

    #[test]
    fn a_gateway_asking_for_parameters_opens_no_socket_of_its_own() {
        let c = compiled(&fixture(PARAMETERS), Some("127.10.0.0/24"));
        assert_eq!(conditions(&c, "asks")[0].2, "InvalidParameters");
        let address = |name: &str| {
            c.gateway_status.gateways[&ObjectRef::new("Gateway", "infra", name)]
                .address
                .expect("an address")
        };
        let sockets: Vec<_> = c.snapshot.gateway_sockets.iter().map(|s| s.addr).collect();
        let plain = std::net::SocketAddr::new(address("plain"), 80);
        let asks = std::net::SocketAddr::new(address("asks"), 80);
        assert_eq!(sockets, [plain]);
        assert_eq!(served(&c, "asks.example.com", Some(asks)), None);
        assert!(served(&c, "plain.example.com", Some(plain)).is_some());
    }

    #[test]
    fn infrastructure_labels_and_annotations_alone_are_accepted() {
        let c = compiled(
            &fixture("infrastructure: {labels: {team: a}, annotations: {note: b}}"),
            None,
        );
        assert_eq!(
            conditions(&c, "asks")[0],
            ("Accepted", true, "Accepted".to_owned())
        );
        assert!(served(&c, "asks.example.com", None).is_some());
        assert!(
            c.diagnostics
                .iter()
                .all(|d| d.reason != "InvalidParameters")
        );
    }
}
