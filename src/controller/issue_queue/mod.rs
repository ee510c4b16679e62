//! The IssueQueue controller. So far: the pure per-issue plan; the reconciler that reads
//! GitHub and carries the plan out comes next.

pub mod plan;
