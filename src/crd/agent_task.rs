//! `AgentTask`: one run of an AI coding agent on a GPU node.

// kube's `printcolumn(...)` repeats keys by design; clippy reads them as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{Affinity, EnvVar, Toleration},
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{Condition, Time},
    },
};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::Duration;

/// Default run-time limit of an agent (contract §7).
pub const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(2 * 3600);
/// Default limit for a pod that no node accepts.
pub const DEFAULT_UNSCHEDULABLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Default limit for a pod that is placed but does not start.
pub const DEFAULT_PENDING_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Default number of retries after a failed attempt.
pub const DEFAULT_MAX_RETRIES: u32 = 1;
/// Default RuntimeClass of agent pods: the one the NVIDIA GPU Operator installs.
pub const DEFAULT_RUNTIME_CLASS: &str = "nvidia";

/// One run of an AI coding agent on a GPU node: the operator admits it when a GPU that fits is
/// free, runs one pod per attempt, follows the pod to its end and retries failed attempts.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "raibid.dev",
    version = "v1alpha1",
    kind = "AgentTask",
    namespaced,
    status = "AgentTaskStatus",
    shortname = "at",
    category = "raibid",
    derive = "PartialEq",
    derive = "Default",
    doc = "One run of an AI coding agent on a GPU node. Created by an IssueQueue for a GitHub issue, or by hand with a prompt.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Repository", type_ = "string", json_path = ".spec.repository"),
    printcolumn(name = "Issue", type_ = "integer", json_path = ".spec.issue"),
    printcolumn(name = "Profile", type_ = "string", json_path = ".status.profile"),
    printcolumn(name = "Node", type_ = "string", json_path = ".status.nodeName"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.reason",
        priority = 1
    ),
    printcolumn(
        name = "Attempt",
        type_ = "integer",
        json_path = ".status.attempt",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.issue) || has(self.prompt)", "message": "an AgentTask needs an issue number or a prompt"},
    {"rule": "has(self.profile) != has(self.profileRef)", "message": "set exactly one of profile (inline) or profileRef (a profile of the queue in queueRef)"},
    {"rule": "!has(self.profileRef) || has(self.queueRef)", "message": "profileRef names a profile of an IssueQueue: set queueRef too"},
    {"rule": "!has(oldSelf.cancel) || !oldSelf.cancel || (has(self.cancel) && self.cancel)", "message": "a cancelled AgentTask cannot be resumed; create a new one"},
]))]
pub struct AgentTaskSpec {
    /// GitHub repository the agent works on, as `owner/name`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$"))]
    pub repository: String,

    /// Number of the GitHub issue the agent works on. A hand-made task may leave it out and
    /// give a `prompt` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub issue: Option<u64>,

    /// What the agent should do, in words, for a task that is not about an issue (or in
    /// addition to it). Written into the agent's context file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub prompt: Option<String>,

    /// Name of the IssueQueue (same namespace) this task belongs to. Tasks of a queue count
    /// against its `maxConcurrent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_ref: Option<String>,

    /// The agent to run, given inline. Exactly one of `profile` and `profileRef` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<AgentProfile>,

    /// Name of an agent profile of the IssueQueue in `queueRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_ref: Option<String>,

    /// Git branch the agent pushes its work to. Defaults to `raibid/<task name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9._/-]{1,200}$"))]
    pub branch: Option<String>,

    /// Time limits for this task; each one left out comes from the profile, then the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<RunLimits>,

    /// How often a failed attempt is retried before the task fails (default: the profile's,
    /// else 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 10))]
    pub max_retries: Option<u32>,

    /// Set to true to stop the task: its pod is deleted and the task ends `Cancelled`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel: bool,

    /// Where this task comes in the admission order among tasks of the same tier; set by the
    /// IssueQueue (lower first). Hand-made tasks leave it out and are admitted oldest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission: Option<AdmissionKey>,
}

/// Where a task stands in the admission order. Tasks are admitted by `tier` (lower first),
/// then `since` (older first), then name.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionKey {
    /// Priority tier: 0 critical, 1 high, 2 medium, 3 no priority, 4 low.
    #[schemars(range(max = 9))]
    pub tier: u8,
    /// The time the order counts from (for an issue: when it was opened).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
}

/// What runs as the agent and where. Used inline in an AgentTask and by name in an IssueQueue.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentProfile {
    /// Container image of the agent. DGX Spark nodes are arm64: the image must have an arm64
    /// variant.
    #[schemars(length(min = 1))]
    pub image: String,

    /// Image pull policy: `Always`, `IfNotPresent` or `Never` (Kubernetes' default when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(Always|IfNotPresent|Never)$"))]
    pub image_pull_policy: Option<String>,

    /// Entrypoint of the agent container; the image's when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,

    /// Arguments to the entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,

    /// Environment variables of the agent container, as in a pod spec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,

    /// Names of Secrets (same namespace) whose keys all become environment variables, for
    /// example a model API key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from_secrets: Vec<String>,

    /// Number of GPUs (`nvidia.com/gpu`) the agent needs. 0 runs it without a GPU.
    #[serde(default = "default_gpus")]
    #[schemars(range(max = 8))]
    pub gpus: u32,

    /// CPU the agent requests, e.g. `"4"` or `"500m"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,

    /// Memory the agent requests and may not exceed, e.g. `"32Gi"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,

    /// Size limit of the agent's scratch workspace (an emptyDir at /workspace); default 50Gi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_size: Option<Quantity>,

    /// Node labels the agent pod must match. Left out: DGX Spark nodes
    /// (`kubernetes.io/arch: arm64`, `nvidia.com/gpu.product: NVIDIA-GB10`); an empty map
    /// places the pod anywhere the GPU count fits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,

    /// Tolerations of the agent pod. Left out: one for the `nvidia.com/gpu` taint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,

    /// Affinity rules of the agent pod, as in a pod spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// RuntimeClass of the agent pod; left out: `nvidia`. An empty string uses the node's
    /// default runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,

    /// Extra labels on the agent pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_labels: BTreeMap<String, String>,

    /// Extra annotations on the agent pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,

    /// Time limits of a run with this profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<RunLimits>,

    /// How often a failed attempt is retried (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 10))]
    pub max_retries: Option<u32>,
}

fn default_gpus() -> u32 {
    1
}

/// Time limits of one attempt. Past a limit the attempt fails with a reason that names it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RunLimits {
    /// How long the agent may run (default 2h); past it the attempt fails `DeadlineExceeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_timeout: Option<Duration>,
    /// How long the pod may stay unplaced (default 5m); past it the attempt fails
    /// `Unschedulable`. Also how long a task may wait for a node that could ever host it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unschedulable_timeout: Option<Duration>,
    /// How long a placed pod may take to start (default 10m); past it the attempt fails
    /// `PendingTimeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_timeout: Option<Duration>,
}

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Waiting for a free GPU that fits (or for the retry backoff to pass).
    #[default]
    Queued,
    /// Admitted: a GPU is reserved and the pod is being placed and started.
    Starting,
    /// The agent container runs.
    Running,
    /// The agent finished successfully.
    Succeeded,
    /// The agent failed and no retries are left; `reason` says why.
    Failed,
    /// Stopped on request (`spec.cancel`, or the issue was closed).
    Cancelled,
}

impl Phase {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// Admitted and not finished: holds a GPU.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Starting | Self::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "Queued",
            Self::Starting => "Starting",
            Self::Running => "Running",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Cancelled => "Cancelled",
        }
    }
}

/// What the operator observed of an AgentTask.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentTaskStatus {
    /// Where the task is in its life.
    #[serde(default)]
    pub phase: Phase,

    /// `Admitted`, `Running`, `Complete` and `Failed`, per Kubernetes API conventions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The current attempt, from 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,

    /// Name of the agent profile in use (`inline` for an inline profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,

    /// The pod of the current attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,

    /// The node the current attempt runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,

    /// When the current attempt was admitted (a GPU was reserved for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission_time: Option<Time>,

    /// When the agent container of the current attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    /// When the task reached `Succeeded`, `Failed` or `Cancelled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,

    /// A queued retry is not admitted before this time (exponential backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_after: Option<Time>,

    /// Why the task is in its phase, in one PascalCase word (e.g. `DeadlineExceeded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,

    /// The same, for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// The pull request the agent opened for this task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<PullRequestRef>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A pull request that links the task's issue.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PullRequestRef {
    /// The pull request number.
    pub number: u64,
    /// Its web address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// When it was merged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_at: Option<Time>,
}

impl AgentTask {
    pub fn phase(&self) -> Phase {
        self.status.as_ref().map(|s| s.phase).unwrap_or_default()
    }

    pub fn attempt(&self) -> u32 {
        self.status.as_ref().and_then(|s| s.attempt).unwrap_or(1)
    }
}
