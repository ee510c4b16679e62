//! raibid-operator: turns a GitHub issue queue into GPU-backed AI agent runs on DGX Spark nodes.

pub mod admission;
pub mod config;
pub mod controller;
pub mod crd;
pub mod explain;
pub mod github;
pub mod issue;
pub mod leader;
pub mod metrics;
pub mod operator;
pub mod secret;
pub mod server;
pub mod telemetry;
pub mod webhook;
