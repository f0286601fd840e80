//! The OpenID Connect relying party at the edge: identity headers for the backend and
//! the checks on where a browser may be sent.

pub mod identity;
pub mod redirect;
