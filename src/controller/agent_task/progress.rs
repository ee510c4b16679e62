//! Reading an agent pod: where it is, and whether it has failed and why — including the time
//! limits that the operator enforces itself (kwok and some clusters never enforce
//! `activeDeadlineSeconds`; unschedulable and pending limits are ours alone).

use std::time::Duration;

use k8s_openapi::{api::core::v1::Pod, jiff::Timestamp};

use super::settings::RunSettings;

/// Why an attempt failed. Each is a fixed PascalCase reason for status, events and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// The agent container exited with a non-zero code.
    NonZeroExit,
    /// The agent used more memory than its limit.
    OOMKilled,
    /// The agent ran past `runTimeout`.
    DeadlineExceeded,
    /// No node accepted the pod within `unschedulableTimeout`.
    Unschedulable,
    /// The pod was placed but did not start within `pendingTimeout`.
    PendingTimeout,
    /// The agent image could not be pulled.
    ImagePullFailed,
    /// The node evicted the pod (e.g. under memory or disk pressure).
    Evicted,
    /// The pod disappeared or was deleted by someone else.
    PodLost,
    /// The pod failed without saying why.
    PodFailed,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NonZeroExit => "NonZeroExit",
            Self::OOMKilled => "OOMKilled",
            Self::DeadlineExceeded => "DeadlineExceeded",
            Self::Unschedulable => "Unschedulable",
            Self::PendingTimeout => "PendingTimeout",
            Self::ImagePullFailed => "ImagePullFailed",
            Self::Evicted => "Evicted",
            Self::PodLost => "PodLost",
            Self::PodFailed => "PodFailed",
        }
    }
}

/// A failed attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub reason: FailureReason,
    pub message: String,
    /// The pod still runs or waits and must be deleted to free its GPU.
    pub delete_pod: bool,
}

/// Where an agent pod is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodProgress {
    /// Waiting to be placed or to start; look again by `recheck_at` at the latest.
    Starting {
        node: Option<String>,
        recheck_at: Timestamp,
    },
    /// The agent runs on `node`; it hits its run-time limit at `deadline`.
    Running {
        node: String,
        started: Timestamp,
        deadline: Timestamp,
    },
    Succeeded,
    Failed(Failure),
}

const IMAGE_PULL_FAILURES: [&str; 4] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
];

/// Reads `pod` against the task's limits at time `now`.
pub fn observe(pod: &Pod, settings: &RunSettings, now: Timestamp) -> PodProgress {
    let status = pod.status.clone().unwrap_or_default();
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let created = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(now);
    let terminated = status
        .container_statuses
        .iter()
        .flatten()
        .find_map(|c| c.state.as_ref().and_then(|s| s.terminated.clone()));

    match status.phase.as_deref() {
        Some("Succeeded") => return PodProgress::Succeeded,
        Some("Failed") => {
            let (reason, message) = match (status.reason.as_deref(), &terminated) {
                (Some("DeadlineExceeded"), _) => (
                    FailureReason::DeadlineExceeded,
                    format!(
                        "the agent ran longer than its run-time limit of {}",
                        human(settings.run_timeout)
                    ),
                ),
                (Some("Evicted"), _) => (
                    FailureReason::Evicted,
                    status
                        .message
                        .clone()
                        .unwrap_or_else(|| "the node evicted the pod".into()),
                ),
                (_, Some(t)) if t.reason.as_deref() == Some("OOMKilled") => (
                    FailureReason::OOMKilled,
                    format!(
                        "the agent exceeded its memory limit (exit code {})",
                        t.exit_code
                    ),
                ),
                (_, Some(t)) if t.exit_code != 0 => (
                    FailureReason::NonZeroExit,
                    format!("the agent exited with code {}", t.exit_code),
                ),
                _ => (
                    FailureReason::PodFailed,
                    status
                        .message
                        .clone()
                        .unwrap_or_else(|| "the pod failed without a reason".into()),
                ),
            };
            return PodProgress::Failed(Failure {
                reason,
                message,
                delete_pod: false,
            });
        }
        _ => {}
    }

    if pod.metadata.deletion_timestamp.is_some() {
        return PodProgress::Failed(Failure {
            reason: FailureReason::PodLost,
            message: "the pod was deleted before the agent finished".into(),
            delete_pod: false,
        });
    }

    if status.phase.as_deref() == Some("Running") {
        let started = status.start_time.as_ref().map(|t| t.0).unwrap_or(created);
        let deadline = after(started, settings.run_timeout);
        if now >= deadline {
            return PodProgress::Failed(Failure {
                reason: FailureReason::DeadlineExceeded,
                message: format!(
                    "the agent ran longer than its run-time limit of {}",
                    human(settings.run_timeout)
                ),
                delete_pod: true,
            });
        }
        return PodProgress::Running {
            node: node.unwrap_or_default(),
            started,
            deadline,
        };
    }

    // Pending (or a phase not yet reported).
    if let Some(waiting) = status
        .container_statuses
        .iter()
        .flatten()
        .find_map(|c| c.state.as_ref().and_then(|s| s.waiting.clone()))
        .filter(|w| IMAGE_PULL_FAILURES.contains(&w.reason.as_deref().unwrap_or_default()))
    {
        let image = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        return PodProgress::Failed(Failure {
            reason: FailureReason::ImagePullFailed,
            message: format!(
                "image {image} could not be pulled ({}){}",
                waiting.reason.unwrap_or_default(),
                waiting
                    .message
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ),
            delete_pod: true,
        });
    }

    let scheduled = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled");
    match (&node, scheduled) {
        (None, unscheduled) => {
            let since = unscheduled
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| t.0)
                .unwrap_or(created)
                .min(now);
            let limit = after(since.max(created), settings.unschedulable_timeout);
            if now >= limit {
                let why = unscheduled
                    .and_then(|c| c.message.clone())
                    .unwrap_or_else(|| "no node accepted the pod".into());
                return PodProgress::Failed(Failure {
                    reason: FailureReason::Unschedulable,
                    message: format!(
                        "no node could run the agent within {}: {why}",
                        human(settings.unschedulable_timeout)
                    ),
                    delete_pod: true,
                });
            }
            PodProgress::Starting {
                node: None,
                recheck_at: limit,
            }
        }
        (Some(_), scheduled) => {
            let since = scheduled
                .filter(|c| c.status == "True")
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| t.0)
                .unwrap_or(created);
            let limit = after(since, settings.pending_timeout);
            if now >= limit {
                return PodProgress::Failed(Failure {
                    reason: FailureReason::PendingTimeout,
                    message: format!(
                        "the pod was placed on {} but did not start within {}",
                        node.as_deref().unwrap_or_default(),
                        human(settings.pending_timeout)
                    ),
                    delete_pod: true,
                });
            }
            PodProgress::Starting {
                node,
                recheck_at: limit,
            }
        }
    }
}

fn after(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

/// A duration for messages, e.g. `5m` or `1h30m`.
pub fn human(d: Duration) -> String {
    crate::crd::Duration::from(d).to_string()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::core::v1::{
            Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
            ContainerStateWaiting, ContainerStatus, PodCondition, PodSpec, PodStatus,
        },
        apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    };

    use super::*;
    use crate::crd::{AgentProfile, AgentTask, AgentTaskSpec};

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn settings() -> RunSettings {
        let mut s = RunSettings::resolve(
            &AgentTask::new(
                "t",
                AgentTaskSpec {
                    profile: Some(AgentProfile::default()),
                    ..Default::default()
                },
            ),
            &[],
        )
        .unwrap();
        s.run_timeout = Duration::from_secs(100);
        s.unschedulable_timeout = Duration::from_secs(30);
        s.pending_timeout = Duration::from_secs(60);
        s
    }

    fn pod(phase: &str, node: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                creation_timestamp: Some(Time(at(0))),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(Into::into),
                containers: vec![Container {
                    image: Some("agent:1".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        }
    }

    fn with_container_state(mut pod: Pod, state: ContainerState) -> Pod {
        pod.status.as_mut().unwrap().container_statuses = Some(vec![ContainerStatus {
            state: Some(state),
            ..Default::default()
        }]);
        pod
    }

    fn terminated(exit_code: i32, reason: &str) -> ContainerState {
        ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code,
                reason: Some(reason.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn failure(progress: PodProgress) -> Failure {
        match progress {
            PodProgress::Failed(f) => f,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    fn with_condition(mut pod: Pod, status: &str, reason: &str, since: i64) -> Pod {
        pod.status.as_mut().unwrap().conditions = Some(vec![PodCondition {
            type_: "PodScheduled".into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some("0/3 nodes are available: 3 Insufficient nvidia.com/gpu.".into()),
            last_transition_time: Some(Time(at(since))),
            ..Default::default()
        }]);
        pod
    }

    #[test]
    fn success_is_success() {
        assert_eq!(
            observe(&pod("Succeeded", Some("n")), &settings(), at(5)),
            PodProgress::Succeeded
        );
    }

    #[test]
    fn failed_pods_say_why() {
        let cases = [
            (
                with_container_state(pod("Failed", Some("n")), terminated(1, "Error")),
                FailureReason::NonZeroExit,
                "exited with code 1",
            ),
            (
                with_container_state(pod("Failed", Some("n")), terminated(137, "OOMKilled")),
                FailureReason::OOMKilled,
                "memory limit",
            ),
            (
                pod("Failed", Some("n")),
                FailureReason::PodFailed,
                "without a reason",
            ),
        ];
        for (p, reason, text) in cases {
            let f = failure(observe(&p, &settings(), at(5)));
            assert_eq!(f.reason, reason);
            assert!(f.message.contains(text), "{}", f.message);
            assert!(!f.delete_pod);
        }
        let mut deadline = pod("Failed", Some("n"));
        deadline.status.as_mut().unwrap().reason = Some("DeadlineExceeded".into());
        assert_eq!(
            failure(observe(&deadline, &settings(), at(5))).reason,
            FailureReason::DeadlineExceeded
        );
        let mut evicted = pod("Failed", Some("n"));
        evicted.status.as_mut().unwrap().reason = Some("Evicted".into());
        evicted.status.as_mut().unwrap().message =
            Some("The node was low on resource: memory.".into());
        let f = failure(observe(&evicted, &settings(), at(5)));
        assert_eq!(
            (f.reason, f.message.as_str()),
            (
                FailureReason::Evicted,
                "The node was low on resource: memory."
            )
        );
    }

    #[test]
    fn running_pods_report_their_node_until_the_run_time_limit() {
        let mut running = pod("Running", Some("dgx-1"));
        running.status.as_mut().unwrap().start_time = Some(Time(at(10)));
        assert_eq!(
            observe(&running, &settings(), at(50)),
            PodProgress::Running {
                node: "dgx-1".into(),
                started: at(10),
                deadline: at(110)
            }
        );
        let f = failure(observe(&running, &settings(), at(110)));
        assert_eq!(f.reason, FailureReason::DeadlineExceeded);
        assert!(
            f.delete_pod,
            "the operator stops an overrunning agent itself"
        );
        assert!(f.message.contains("1m40s"), "{}", f.message);
    }

    #[test]
    fn unschedulable_pods_fail_after_their_limit() {
        let waiting = with_condition(pod("Pending", None), "False", "Unschedulable", 5);
        assert_eq!(
            observe(&waiting, &settings(), at(20)),
            PodProgress::Starting {
                node: None,
                recheck_at: at(35)
            }
        );
        let f = failure(observe(&waiting, &settings(), at(35)));
        assert_eq!(f.reason, FailureReason::Unschedulable);
        assert!(
            f.message.contains("Insufficient nvidia.com/gpu"),
            "{}",
            f.message
        );
        assert!(f.delete_pod);
    }

    #[test]
    fn a_pod_not_yet_seen_by_the_scheduler_counts_from_creation() {
        assert_eq!(
            observe(&pod("Pending", None), &settings(), at(1)),
            PodProgress::Starting {
                node: None,
                recheck_at: at(30)
            }
        );
    }

    #[test]
    fn placed_pods_that_do_not_start_fail_after_the_pending_limit() {
        let placed = with_condition(pod("Pending", Some("dgx-1")), "True", "Scheduled", 10);
        assert_eq!(
            observe(&placed, &settings(), at(20)),
            PodProgress::Starting {
                node: Some("dgx-1".into()),
                recheck_at: at(70)
            }
        );
        let f = failure(observe(&placed, &settings(), at(70)));
        assert_eq!(f.reason, FailureReason::PendingTimeout);
        assert!(f.message.contains("dgx-1"));
    }

    #[test]
    fn image_pull_failures_fail_at_once() {
        for reason in IMAGE_PULL_FAILURES {
            let p = with_container_state(
                pod("Pending", Some("dgx-1")),
                ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some(reason.into()),
                        message: Some("pull access denied".into()),
                    }),
                    ..Default::default()
                },
            );
            let f = failure(observe(&p, &settings(), at(1)));
            assert_eq!(f.reason, FailureReason::ImagePullFailed);
            assert!(
                f.message.contains("agent:1") && f.message.contains(reason),
                "{}",
                f.message
            );
        }
        let creating = with_container_state(
            pod("Pending", Some("dgx-1")),
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("ContainerCreating".into()),
                    message: None,
                }),
                ..Default::default()
            },
        );
        assert!(matches!(
            observe(&creating, &settings(), at(1)),
            PodProgress::Starting { .. }
        ));
    }

    #[test]
    fn a_pod_deleted_by_someone_else_is_lost() {
        let mut deleting = with_container_state(
            pod("Running", Some("n")),
            ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..Default::default()
            },
        );
        deleting.metadata.deletion_timestamp = Some(Time(at(3)));
        assert_eq!(
            failure(observe(&deleting, &settings(), at(5))).reason,
            FailureReason::PodLost
        );
    }
}
