//! The OpenID Connect relying party at the edge: the sealed session cookie, the
//! identity headers for the backend, and where a browser may be sent after login.

pub mod identity;
pub mod redirect;
pub mod session;
