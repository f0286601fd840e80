//! Every integration test, in one binary so the crate is linked once: one module per
//! area, sharing `common` (real backends, the binary on ephemeral ports, a control
//! plane, the test provider). Run one area with `cargo test --test it <module>::`.

mod common;

mod alb_annotations;
mod alb_logs;
mod alb_routing;
mod authorization;
mod backchannel;
mod backend_protocol;
mod backend_tls_policy;
mod bearer;
mod check;
mod claim_headers;
mod client_auth;
mod cluster;
mod conformance;
mod demo;
mod diagnose;
mod docs;
mod explain;
mod flows;
mod gateway;
mod gateway_cors;
mod gateway_frontend;
mod gateway_guard;
mod gateway_listener_set;
mod generated;
mod gitops;
mod grpc_route;
mod guard;
mod id_token_differential;
mod identity_header;
mod keycloak;
mod login;
mod login_failures;
mod mirror;
mod mtls;
mod observability;
mod offload;
mod packaging;
mod proxy;
mod proxy_protocol;
mod quickstart;
mod readme;
mod relying_party;
mod replicas;
mod route_retry;
mod scripts;
mod session_store;
mod sso;
mod tenants;
mod tls;
mod tls_route;
mod upstream_connections;
mod walkthrough;
