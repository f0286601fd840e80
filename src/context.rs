//! What the request path and the controller both read: the provider registry
//! (discovery, keys, health), the flow records (login failures by rule) and the
//! controller's own metrics. The data plane makes it; the controller gets it and
//! nothing else of the proxy.

use std::sync::Arc;

use crate::auth::providers::Registry;
use crate::observe::flows::FlowLog;
use crate::observe::metrics::StatusMetrics;

#[derive(Clone)]
pub struct Context {
    pub providers: Arc<Registry>,
    pub flows: Arc<FlowLog>,
    pub status_metrics: StatusMetrics,
}
