//! raibid-operator: turns a GitHub issue queue into GPU-backed AI agent runs on DGX Spark nodes.

pub mod crd;
