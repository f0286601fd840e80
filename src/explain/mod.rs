//! Reading what happened: access logs (ours or a real ALB's) grouped by what went
//! wrong, one login's timeline, a browser's HAR.

pub mod flow;
pub mod har;
pub mod logs;

/// `line` without the `[pod/<name>/<container>] ` tag `kubectl logs --prefix` puts
/// before each line (needed to tell replicas apart when reading several pods' logs).
pub fn without_kubectl_prefix(line: &str) -> &str {
    line.strip_prefix("[pod/")
        .and_then(|rest| rest.split_once("] "))
        .map_or(line, |(_, rest)| rest)
}
