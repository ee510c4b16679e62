//! Integration tests against a real kube-apiserver, etcd, scheduler, controller-manager and
//! kwok-simulated DGX Spark nodes. Run them with `./scripts/test`, which starts that control
//! plane once for the whole run.

mod admission;
mod api;
mod chart;
mod github_emulator;
mod github_flow;
mod lifecycle;
mod restart;
mod support;
mod webhook;
