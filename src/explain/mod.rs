//! Reading what happened: reasons in plain words, and access logs (ours or a real
//! ALB's) grouped by what went wrong.

pub mod flow;
pub mod har;
pub mod logs;
pub mod reasons;
