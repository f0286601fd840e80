//! Reading what happened: access logs (ours or a real ALB's) grouped by what went
//! wrong, one login's timeline, a browser's HAR.

pub mod flow;
pub mod har;
pub mod logs;
