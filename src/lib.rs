//! Portcullis: a Kubernetes ingress controller that logs people in at the edge, the
//! way AWS ALB's `authenticate-oidc` action does.
//!
//! Data flows one way: sources fill a store of objects, `compile` turns them into an
//! immutable `Snapshot`, the data plane serves from the current snapshot; diagnostics
//! travel back as `check` output, logs and status.

pub mod admin;
pub mod auth;
pub mod compile;
pub mod context;
pub mod controller;
pub mod demo;
pub mod diagnostics;
pub mod explain;
pub mod form;
pub mod gateway_sockets;
pub mod keys;
pub mod listen;
pub mod model;
pub mod observe;
pub mod provider_checks;
pub mod proxy;
pub mod reload;
pub mod source;
pub mod store;
