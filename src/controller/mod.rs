//! Controllers: reconcile loops over the operator's custom resources.

pub mod agent_task;
pub mod issue_queue;

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{Client, runtime::events::Recorder, runtime::reflector::Store};
use tokio::sync::Notify;

use crate::{
    crd::{AgentTask, IssueQueue},
    metrics::Metrics,
};

/// Deletes `name`; one already gone is fine. Whether it was there.
pub(crate) async fn delete_if_exists<K>(api: &kube::Api<K>, name: &str) -> Result<bool, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &kube::api::DeleteParams::default()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(error) => Err(error),
    }
}

/// Field manager of every write the operator makes (server-side apply).
pub const FIELD_MANAGER: &str = "raibid-operator";

/// What every reconciler shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub stores: Stores,
    /// Wakes the admission loop: something changed that may free or need a GPU.
    pub admission: Arc<Notify>,
    pub retry: RetryPolicy,
    /// GitHub clients of the IssueQueues, kept between reconciles.
    pub github: issue_queue::GitHubClients,
}

/// Caches of the objects admission reads, kept current by watches.
#[derive(Clone)]
pub struct Stores {
    pub tasks: Store<AgentTask>,
    pub queues: Store<IssueQueue>,
    /// Non-terminal pods of the whole cluster (they hold GPUs).
    pub pods: Store<Pod>,
    pub nodes: Store<Node>,
}

/// Exponential backoff between attempts of a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// Wait before `next_attempt` (2 for the first retry): base, 2×base, 4×base… up to max.
    pub fn backoff(&self, next_attempt: u32) -> Duration {
        let doublings = next_attempt.saturating_sub(2).min(20);
        self.base.saturating_mul(1 << doublings).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy {
            base: Duration::from_secs(10),
            max: Duration::from_secs(60),
        };
        let waits: Vec<u64> = (2..=6).map(|a| policy.backoff(a).as_secs()).collect();
        assert_eq!(waits, vec![10, 20, 40, 60, 60]);
        assert_eq!(policy.backoff(1000), Duration::from_secs(60), "no overflow");
    }
}
