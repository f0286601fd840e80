//! Where objects come from. Sources only fetch and watch; they fill `store::Objects`.

pub mod cluster;
pub mod manifests;
pub mod strict;
