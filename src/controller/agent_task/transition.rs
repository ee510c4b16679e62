//! How a task's status changes on each step of its life. Pure: the reconciler decides which
//! transition happened, this module says what the status and the Event become.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use crate::crd::{
    AgentTaskStatus, Phase,
    conditions::{ConditionStatus, ConditionUpdate, upsert},
};

pub const CONDITION_ADMITTED: &str = "Admitted";
pub const CONDITION_RUNNING: &str = "Running";
pub const CONDITION_COMPLETE: &str = "Complete";
pub const CONDITION_FAILED: &str = "Failed";

/// One step in a task's life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// First seen, or a failed attempt goes back to the queue as the next attempt.
    Queued {
        attempt: u32,
        not_before: Option<Timestamp>,
        /// Why the previous attempt failed, for a retry.
        after_failure: Option<(String, String)>,
    },
    /// Still queued; admission says why (`WaitingForGpu`, `NoFittingNode`...).
    Waiting {
        reason: &'static str,
        message: String,
    },
    /// A GPU is reserved; the pod is about to be created.
    Admitted {
        pod_name: String,
    },
    /// The pod exists and waits to be placed or to start.
    PodPending {
        node: Option<String>,
    },
    /// The agent container runs.
    PodRunning {
        node: String,
        started: Timestamp,
    },
    Succeeded,
    Failed {
        reason: String,
        message: String,
    },
    Cancelled {
        message: String,
    },
    /// The pull request for the task merged: the task is done, whatever its pod was doing.
    PullRequestMerged {
        number: u64,
        merged_at: Option<Timestamp>,
    },
    /// The pull request closed without merging.
    PullRequestClosed {
        number: u64,
    },
}

/// What a person sees in `kubectl describe` for a transition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventNote {
    pub reason: &'static str,
    pub note: String,
    pub warning: bool,
}

/// The status after `transition`.
pub fn apply(
    current: &AgentTaskStatus,
    transition: &Transition,
    profile: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> AgentTaskStatus {
    let mut next = current.clone();
    next.observed_generation = generation;
    next.profile = Some(profile.to_owned());
    let mut set = |type_: &'static str, status: ConditionStatus, reason: &str, message: String| {
        upsert(
            &mut next.conditions,
            ConditionUpdate {
                type_,
                status,
                reason,
                message,
            },
            generation,
            now,
        )
    };
    match transition {
        Transition::Queued { .. } => {
            set(
                CONDITION_ADMITTED,
                ConditionStatus::False,
                "Queued",
                "waiting for admission".into(),
            );
            set(
                CONDITION_RUNNING,
                ConditionStatus::False,
                "Queued",
                "not admitted yet".into(),
            );
        }
        Transition::Waiting { reason, message } => {
            set(
                CONDITION_ADMITTED,
                ConditionStatus::False,
                reason,
                message.clone(),
            );
        }
        Transition::Admitted { .. } => {
            set(
                CONDITION_ADMITTED,
                ConditionStatus::True,
                "GpuReserved",
                "a GPU is reserved for this attempt".into(),
            );
            set(
                CONDITION_RUNNING,
                ConditionStatus::False,
                "PodStarting",
                "the agent pod is starting".into(),
            );
        }
        Transition::PodPending { node } => {
            let message = match node {
                Some(node) => format!("the agent pod is placed on {node} and starting"),
                None => "the agent pod waits for a node".into(),
            };
            set(
                CONDITION_RUNNING,
                ConditionStatus::False,
                "PodStarting",
                message,
            );
        }
        Transition::PodRunning { node, .. } => {
            set(
                CONDITION_RUNNING,
                ConditionStatus::True,
                "AgentRunning",
                format!("the agent runs on {node}"),
            );
        }
        Transition::Succeeded => {
            set(
                CONDITION_RUNNING,
                ConditionStatus::False,
                "Finished",
                "the agent finished".into(),
            );
            set(
                CONDITION_COMPLETE,
                ConditionStatus::True,
                "Succeeded",
                "the agent finished successfully".into(),
            );
        }
        Transition::Failed { reason, message } => {
            set(
                CONDITION_RUNNING,
                ConditionStatus::False,
                "Finished",
                "the agent stopped".into(),
            );
            set(
                CONDITION_FAILED,
                ConditionStatus::True,
                reason,
                message.clone(),
            );
        }
        Transition::Cancelled { message } => {
            set(
                CONDITION_RUNNING,
                ConditionStatus::False,
                "Cancelled",
                message.clone(),
            );
        }
        Transition::PullRequestMerged { number, .. } => {
            set(
                CONDITION_RUNNING,
                ConditionStatus::False,
                "Finished",
                "the agent finished".into(),
            );
            set(
                CONDITION_COMPLETE,
                ConditionStatus::True,
                "PullRequestMerged",
                format!("pull request #{number} merged"),
            );
        }
        Transition::PullRequestClosed { number } => {
            set(
                CONDITION_RUNNING,
                ConditionStatus::False,
                "Finished",
                "the agent stopped".into(),
            );
            set(
                CONDITION_FAILED,
                ConditionStatus::True,
                "PullRequestClosed",
                format!("pull request #{number} closed without merging"),
            );
        }
    }

    match transition {
        Transition::Queued {
            attempt,
            not_before,
            after_failure,
        } => {
            next.phase = Phase::Queued;
            next.attempt = Some(*attempt);
            next.next_attempt_after = not_before.map(Time);
            next.pod_name = None;
            next.node_name = None;
            next.admission_time = None;
            next.start_time = None;
            (next.reason, next.message) = match after_failure {
                Some((reason, message)) => (
                    Some(reason.clone()),
                    Some(format!(
                        "attempt {} failed: {message}; retrying",
                        attempt - 1
                    )),
                ),
                None => (Some("Queued".into()), Some("waiting for a free GPU".into())),
            };
        }
        Transition::Waiting { reason, message } => {
            // A retry keeps its failure reason visible until it is admitted.
            if current.next_attempt_after.is_none() {
                next.reason = Some((*reason).to_owned());
                next.message = Some(message.clone());
            }
        }
        Transition::Admitted { pod_name } => {
            next.phase = Phase::Starting;
            next.attempt = Some(current.attempt.unwrap_or(1));
            next.pod_name = Some(pod_name.clone());
            next.admission_time = Some(Time(now));
            next.next_attempt_after = None;
            next.reason = Some("Admitted".into());
            next.message = Some("a GPU is reserved; the agent pod is starting".into());
        }
        Transition::PodPending { node } => {
            next.phase = Phase::Starting;
            next.node_name = node.clone();
        }
        Transition::PodRunning { node, started } => {
            next.phase = Phase::Running;
            next.node_name = Some(node.clone());
            next.start_time = Some(Time(*started));
            next.reason = Some("AgentRunning".into());
            next.message = Some(format!("the agent runs on {node}"));
        }
        Transition::Succeeded => {
            next.phase = Phase::Succeeded;
            next.completion_time = Some(Time(now));
            next.reason = Some("Succeeded".into());
            next.message = Some("the agent finished successfully".into());
        }
        Transition::Failed { reason, message } => {
            next.phase = Phase::Failed;
            next.completion_time = Some(Time(now));
            next.next_attempt_after = None;
            next.reason = Some(reason.clone());
            next.message = Some(message.clone());
        }
        Transition::Cancelled { message } => {
            next.phase = Phase::Cancelled;
            next.completion_time = Some(Time(now));
            next.next_attempt_after = None;
            next.reason = Some("Cancelled".into());
            next.message = Some(message.clone());
        }
        Transition::PullRequestMerged { number, merged_at } => {
            next.phase = Phase::Succeeded;
            next.completion_time = Some(current.completion_time.clone().unwrap_or(Time(now)));
            next.next_attempt_after = None;
            next.reason = Some("PullRequestMerged".into());
            next.message = Some(format!("pull request #{number} merged"));
            let mut pr = current.pull_request.clone().unwrap_or_default();
            pr.number = *number;
            pr.merged_at = merged_at.map(Time);
            next.pull_request = Some(pr);
        }
        Transition::PullRequestClosed { number } => {
            next.phase = Phase::Failed;
            next.completion_time = Some(Time(now));
            next.next_attempt_after = None;
            next.reason = Some("PullRequestClosed".into());
            next.message = Some(format!("pull request #{number} closed without merging"));
            let mut pr = current.pull_request.clone().unwrap_or_default();
            pr.number = *number;
            next.pull_request = Some(pr);
        }
    }
    next
}

/// The Event a transition publishes; `None` for steps too small to tell a person.
pub fn event(transition: &Transition, attempt: u32) -> Option<EventNote> {
    let note = |reason, note: String, warning| {
        Some(EventNote {
            reason,
            note,
            warning,
        })
    };
    match transition {
        Transition::Queued {
            after_failure: None,
            ..
        } => note("Queued", "waiting for a free GPU".into(), false),
        Transition::Queued {
            after_failure: Some((reason, message)),
            not_before,
            ..
        } => note(
            "Retrying",
            format!(
                "attempt {} failed ({reason}: {message}); attempt {attempt} starts{}",
                attempt.saturating_sub(1),
                not_before
                    .map(|t| format!(" after {}", t.strftime("%H:%M:%S UTC")))
                    .unwrap_or_default()
            ),
            true,
        ),
        Transition::Waiting {
            reason: "NoFittingNode",
            message,
        } => note("NoFittingNode", message.clone(), true),
        Transition::Waiting { .. } | Transition::PodPending { .. } => None,
        Transition::Admitted { pod_name } => note(
            "Admitted",
            format!("GPU reserved; starting pod {pod_name} (attempt {attempt})"),
            false,
        ),
        Transition::PodRunning { node, .. } => note(
            "Started",
            format!("agent runs on {node} (attempt {attempt})"),
            false,
        ),
        Transition::Succeeded => note(
            "Succeeded",
            format!("agent finished successfully (attempt {attempt})"),
            false,
        ),
        Transition::Failed { reason, message } => {
            note("Failed", format!("{reason}: {message}"), true)
        }
        Transition::Cancelled { message } => note("Cancelled", message.clone(), false),
        Transition::PullRequestMerged { number, .. } => note(
            "PullRequestMerged",
            format!("pull request #{number} merged"),
            false,
        ),
        Transition::PullRequestClosed { number } => note(
            "PullRequestClosed",
            format!("pull request #{number} closed without merging"),
            true,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::conditions::{find, is_true};

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn step(status: &AgentTaskStatus, t: Transition, secs: i64) -> AgentTaskStatus {
        apply(status, &t, "inline", Some(1), at(secs))
    }

    #[test]
    fn a_task_walks_from_queued_to_succeeded() {
        let queued = step(
            &AgentTaskStatus::default(),
            Transition::Queued {
                attempt: 1,
                not_before: None,
                after_failure: None,
            },
            0,
        );
        assert_eq!((queued.phase, queued.attempt), (Phase::Queued, Some(1)));
        assert!(!is_true(&queued.conditions, CONDITION_ADMITTED));

        let waiting = step(
            &queued,
            Transition::Waiting {
                reason: "WaitingForGpu",
                message: "all GPUs busy".into(),
            },
            1,
        );
        assert_eq!(
            find(&waiting.conditions, CONDITION_ADMITTED)
                .unwrap()
                .reason,
            "WaitingForGpu"
        );
        assert_eq!(waiting.reason.as_deref(), Some("WaitingForGpu"));

        let admitted = step(
            &waiting,
            Transition::Admitted {
                pod_name: "t-1".into(),
            },
            2,
        );
        assert_eq!(admitted.phase, Phase::Starting);
        assert_eq!(admitted.pod_name.as_deref(), Some("t-1"));
        assert_eq!(admitted.admission_time, Some(Time(at(2))));
        assert!(is_true(&admitted.conditions, CONDITION_ADMITTED));

        let running = step(
            &admitted,
            Transition::PodRunning {
                node: "dgx-1".into(),
                started: at(3),
            },
            4,
        );
        assert_eq!(
            (running.phase, running.node_name.as_deref()),
            (Phase::Running, Some("dgx-1"))
        );
        assert_eq!(running.start_time, Some(Time(at(3))));
        assert!(is_true(&running.conditions, CONDITION_RUNNING));

        let done = step(&running, Transition::Succeeded, 9);
        assert_eq!(done.phase, Phase::Succeeded);
        assert_eq!(done.completion_time, Some(Time(at(9))));
        assert!(is_true(&done.conditions, CONDITION_COMPLETE));
        assert!(!is_true(&done.conditions, CONDITION_RUNNING));
        assert_eq!(done.observed_generation, Some(1));
        assert_eq!(done.profile.as_deref(), Some("inline"));
    }

    #[test]
    fn a_retry_is_a_fresh_attempt_that_remembers_why() {
        let running = step(
            &step(
                &AgentTaskStatus::default(),
                Transition::Admitted {
                    pod_name: "t-1".into(),
                },
                0,
            ),
            Transition::PodRunning {
                node: "dgx-1".into(),
                started: at(1),
            },
            1,
        );
        let retry = step(
            &running,
            Transition::Queued {
                attempt: 2,
                not_before: Some(at(20)),
                after_failure: Some(("NonZeroExit".into(), "the agent exited with code 1".into())),
            },
            10,
        );
        assert_eq!((retry.phase, retry.attempt), (Phase::Queued, Some(2)));
        assert_eq!(
            (retry.pod_name.as_ref(), retry.node_name.as_ref()),
            (None, None)
        );
        assert_eq!(retry.next_attempt_after, Some(Time(at(20))));
        assert_eq!(retry.reason.as_deref(), Some("NonZeroExit"));
        assert!(
            retry
                .message
                .as_deref()
                .unwrap()
                .contains("attempt 1 failed")
        );

        let still_waiting = step(
            &retry,
            Transition::Waiting {
                reason: "RetryBackoff",
                message: "backoff".into(),
            },
            11,
        );
        assert_eq!(
            still_waiting.reason.as_deref(),
            Some("NonZeroExit"),
            "the failure stays visible during backoff"
        );

        let admitted = step(
            &still_waiting,
            Transition::Admitted {
                pod_name: "t-2".into(),
            },
            21,
        );
        assert_eq!(
            (admitted.attempt, admitted.next_attempt_after.as_ref()),
            (Some(2), None)
        );
    }

    #[test]
    fn failure_and_cancellation_are_terminal_with_a_reason() {
        let failed = step(
            &AgentTaskStatus::default(),
            Transition::Failed {
                reason: "DeadlineExceeded".into(),
                message: "too long".into(),
            },
            5,
        );
        assert_eq!(
            (failed.phase, failed.reason.as_deref()),
            (Phase::Failed, Some("DeadlineExceeded"))
        );
        let condition = find(&failed.conditions, CONDITION_FAILED).unwrap();
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            ("True", "DeadlineExceeded")
        );

        let cancelled = step(
            &AgentTaskStatus::default(),
            Transition::Cancelled {
                message: "spec.cancel is set".into(),
            },
            5,
        );
        assert_eq!(
            (cancelled.phase, cancelled.reason.as_deref()),
            (Phase::Cancelled, Some("Cancelled"))
        );
        assert!(cancelled.completion_time.is_some());
    }

    #[test]
    fn events_name_the_step() {
        let reason = |t: Transition| event(&t, 2).map(|e| (e.reason, e.warning));
        assert_eq!(
            reason(Transition::Admitted {
                pod_name: "p".into()
            }),
            Some(("Admitted", false))
        );
        assert_eq!(
            reason(Transition::Failed {
                reason: "OOMKilled".into(),
                message: "m".into()
            }),
            Some(("Failed", true))
        );
        assert_eq!(
            reason(Transition::Queued {
                attempt: 2,
                not_before: None,
                after_failure: Some(("X".into(), "y".into()))
            }),
            Some(("Retrying", true))
        );
        assert_eq!(
            reason(Transition::Waiting {
                reason: "WaitingForGpu",
                message: "m".into()
            }),
            None
        );
        assert_eq!(
            reason(Transition::Waiting {
                reason: "NoFittingNode",
                message: "m".into()
            }),
            Some(("NoFittingNode", true))
        );
    }

    #[test]
    fn pull_request_outcomes_end_the_task() {
        let running = step(
            &AgentTaskStatus::default(),
            Transition::PodRunning {
                node: "n".into(),
                started: at(1),
            },
            1,
        );
        let merged = step(
            &running,
            Transition::PullRequestMerged {
                number: 7,
                merged_at: Some(at(50)),
            },
            60,
        );
        assert_eq!(
            (merged.phase, merged.reason.as_deref()),
            (Phase::Succeeded, Some("PullRequestMerged"))
        );
        let pr = merged.pull_request.clone().unwrap();
        assert_eq!((pr.number, pr.merged_at), (7, Some(Time(at(50)))));
        assert!(is_true(&merged.conditions, CONDITION_COMPLETE));

        let done = step(&AgentTaskStatus::default(), Transition::Succeeded, 10);
        let merged_later = step(
            &done,
            Transition::PullRequestMerged {
                number: 7,
                merged_at: None,
            },
            90,
        );
        assert_eq!(
            merged_later.completion_time,
            Some(Time(at(10))),
            "the agent's own finish time stays"
        );

        let closed = step(&running, Transition::PullRequestClosed { number: 7 }, 60);
        assert_eq!(
            (closed.phase, closed.reason.as_deref()),
            (Phase::Failed, Some("PullRequestClosed"))
        );
        assert_eq!(
            event(&Transition::PullRequestClosed { number: 7 }, 1).map(|e| e.warning),
            Some(true)
        );
    }
}
