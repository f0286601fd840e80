//! The OpenID Connect relying party at the edge: the per-login flow cookie, ID-token
//! validation, the sealed session cookie, the identity headers for the backend, and
//! where a browser may be sent after login.

pub mod bearer;
pub mod claims;
pub mod client_assertion;
pub mod cookies;
pub mod credentials;
pub mod flow;
pub mod guard;
pub mod id_token;
pub mod identity;
pub mod idp;
pub mod login;
pub mod providers;
pub mod redirect;
pub mod refusal;
pub mod revocations;
pub mod sealed;
pub mod session;
pub mod shared;
