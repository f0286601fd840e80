//! ListenerSets from files (`portcullis serve -f`, no cluster), attacked with raw
//! bytes: a Gateway's AuthRule guards the routes of the sets it admits, and a tenant's
//! set cannot take a hostname the Gateway holds, nor attach where it is not admitted.

use crate::common;

use common::*;

fn svc(ns: &str, name: &str, addr: std::net::SocketAddr) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  ports: [{{name: http, port: 80}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-x, namespace: {ns}, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints:\n- addresses: [\"{}\"]\n",
        addr.port(),
        addr.ip()
    )
}

/// A set of `ns` with one HTTP listener on port 80 for `hostname`, and a route of
/// `ns` attached to it for paths under `prefix`, to Service `backend`.
fn set_with_route(ns: &str, name: &str, created: &str, hostname: &str, prefix: &str) -> String {
    format!(
        r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: ListenerSet
metadata: {{name: {name}, namespace: {ns}, creationTimestamp: "{created}"}}
spec:
  parentRef: {{name: edge, namespace: infra}}
  listeners: [{{name: web, port: 80, protocol: HTTP, hostname: "{hostname}"}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {ns}}}
spec:
  parentRefs: [{{kind: ListenerSet, group: gateway.networking.k8s.io, name: {name}}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]
    backendRefs: [{{name: b, port: 80}}]
"#
    )
}

/// The Gateway `infra/edge`, admitting the sets of namespaces labelled
/// `edge-listeners`, with one listener for `app.test` and a route there to `api`;
/// an AuthRule of `infra` guards `guarded` (a kind and a name).
fn manifests(guarded: &str, api: &Backend, team: &Backend, evil: &Backend) -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: portcullis}}
spec: {{controllerName: portcullis.dev/gateway-controller}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: team, labels: {{edge-listeners: "yes"}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: infra, labels: {{edge-listeners: "yes"}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: evil}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: edge, namespace: infra}}
spec:
  gatewayClassName: portcullis
  allowedListeners: {{namespaces: {{from: Selector, selector: {{matchLabels: {{edge-listeners: "yes"}}}}}}}}
  listeners:
  - {{name: internal, port: 80, protocol: HTTP, hostname: app.test}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: admin, namespace: infra}}
spec:
  parentRefs: [{{name: edge}}]
  rules: [{{backendRefs: [{{name: api, port: 80}}]}}]
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {{name: guard, namespace: infra}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, {guarded}}}]
  oidc: {{issuer: "http://127.0.0.1:9", clientId: app, clientSecretRef: {{name: idp}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: idp, namespace: infra}}
stringData: {{client-secret: s}}
{}{}{}{}{}{}{}"#,
        svc("infra", "api", api.addr),
        svc("infra", "b", team.addr),
        svc("team", "b", team.addr),
        svc("evil", "b", evil.addr),
        // Admitted, but its hostname is the Gateway's own: its listener loses it. (Of
        // the Gateway's namespace: another's would not get the host anyway, which
        // belongs to the namespaces the Gateway's listener admits.)
        set_with_route(
            "infra",
            "grab",
            "2024-01-01T00:00:00Z",
            "APP.test",
            "/admin"
        ),
        // Admitted, with a hostname of its own.
        set_with_route("team", "shop", "2024-01-02T00:00:00Z", "shop.test", "/"),
        // Older than both, but not admitted: its namespace lacks the label.
        set_with_route("evil", "sneak", "2020-01-01T00:00:00Z", "sneak.test", "/"),
    )
}

fn request(host: &str, path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nCookie: AWSELBAuthSessionCookie-0=victim\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

fn refused(r: &RawResponse) -> bool {
    r.backend().is_none() && matches!(r.status, 400 | 401)
}

/// The guard on the Gateway's own route holds on its host: the set listener that
/// names the same host (in another case) lost the conflict, so the more specific
/// route attached through it is served nowhere; a tenant's own host is served.
#[tokio::test]
async fn a_set_listener_cannot_take_the_gateways_hostname() {
    let (api, team, evil) = (
        Backend::start("api").await,
        Backend::start("team").await,
        Backend::start("evil").await,
    );
    let dir = TempDir::new("gateway-listener-set-conflict");
    dir.write(
        "all.yaml",
        &manifests("kind: HTTPRoute, name: admin", &api, &team, &evil),
    );
    let p = Portcullis::start(dir.path(), &[]);
    for host in ["app.test", "APP.test", "app.test.", "app.test:80"] {
        for path in ["/admin", "/admin/users", "/%61dmin", "//admin"] {
            let r = raw_exchange(p.http, &request(host, path)).await;
            assert!(refused(&r), "{host}{path}: {} {}", r.status, r.body);
        }
    }
    let r = raw_exchange(p.http, &request("shop.test", "/admin")).await;
    assert_eq!(r.backend().unwrap()["backend"], "team", "{}", r.body);
    // A set the Gateway does not admit serves nothing: its host matches no route.
    let r = raw_exchange(p.http, &request("sneak.test", "/")).await;
    assert_eq!((r.status, r.backend()), (404, None), "{}", r.body);
}

/// An AuthRule on the Gateway guards the routes of the sets it admits too, on their
/// own hosts.
#[tokio::test]
async fn a_gateways_authrule_guards_the_routes_of_its_sets() {
    let (api, team, evil) = (
        Backend::start("api").await,
        Backend::start("team").await,
        Backend::start("evil").await,
    );
    let dir = TempDir::new("gateway-listener-set-guard");
    dir.write(
        "all.yaml",
        &manifests("kind: Gateway, name: edge", &api, &team, &evil),
    );
    let p = Portcullis::start(dir.path(), &[]);
    for path in ["/", "/shop", "/%2e%2e/x", "/SHOP"] {
        for host in ["shop.test", "Shop.Test."] {
            let r = raw_exchange(p.http, &request(host, path)).await;
            assert!(refused(&r), "{host}{path}: {} {}", r.status, r.body);
        }
    }
}
