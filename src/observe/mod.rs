//! What the data plane tells operators: trace ids, access logs, metrics.

pub mod access_log;
pub mod flows;
pub mod metrics;
pub mod trace;
