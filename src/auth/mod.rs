//! The OpenID Connect relying party at the edge: the per-login flow cookie, the sealed
//! session cookie, the identity headers for the backend, and where a browser may be
//! sent after login.

pub mod flow;
pub mod identity;
pub mod redirect;
pub mod sealed;
pub mod session;
