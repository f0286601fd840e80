//! What the data plane tells operators: trace ids, access logs, metrics, flow
//! records, and the reasons they all speak of.

pub mod access_log;
pub mod flows;
pub mod metrics;
pub mod reasons;
pub mod trace;
