//! The admission decision: which queued tasks start now, given the nodes, the GPUs that pods
//! and admitted tasks already hold, and per-queue concurrency budgets. One pure function so
//! that every rule is unit-tested and there is exactly one admission mechanism.

use std::{
    borrow::Borrow,
    collections::{BTreeMap, HashMap},
};

use k8s_openapi::{api::core::v1::Node, jiff::Timestamp};

use super::placement::{Placement, allocatable_gpus, is_schedulable};

/// Identifies an AgentTask.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskKey {
    pub namespace: String,
    pub name: String,
}

/// Identifies an IssueQueue.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueKey {
    pub namespace: String,
    pub name: String,
}

/// Something that holds GPUs now: a non-terminal pod, or an admitted task whose pod does not
/// exist yet.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuHolder {
    pub gpus: u32,
    /// The node it is bound to; `None` while it waits for the scheduler.
    pub node: Option<String>,
    /// Where it may go, for holders not yet bound.
    pub placement: Placement,
}

/// A queued task asking for admission.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub task: TaskKey,
    pub gpus: u32,
    pub placement: Placement,
    pub order: AdmissionOrder,
    pub queue: Option<QueueKey>,
    /// A retry waits for its backoff to pass.
    pub not_before: Option<Timestamp>,
}

/// Admission order: priority tier (lower first), then age, then name. Hand-made tasks all
/// share one tier and are admitted oldest first.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AdmissionOrder {
    pub tier: u8,
    pub since: Timestamp,
    pub tie_breaker: String,
}

/// How many more tasks of a queue may start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueBudget {
    pub max_concurrent: u32,
    pub active: u32,
}

/// What admission decided for one candidate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Start it. The node is where the GPU was counted; the scheduler still places the pod.
    Admit { node: String },
    /// A retry whose backoff has not passed.
    Backoff { until: Timestamp },
    /// Its queue runs `maxConcurrent` tasks already.
    QueueFull,
    /// A node could host it, but its GPUs are taken.
    WaitingForGpu,
    /// No node matches its placement with enough GPUs; it waits for one to appear.
    NoFittingNode,
}

impl Verdict {
    /// PascalCase reason for conditions and events.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Admit { .. } => "GpuReserved",
            Self::Backoff { .. } => "RetryBackoff",
            Self::QueueFull => "QueueAtMaxConcurrent",
            Self::WaitingForGpu => "WaitingForGpu",
            Self::NoFittingNode => "NoFittingNode",
        }
    }
}

/// Decides admission for every candidate, in admission order.
pub fn plan<N: Borrow<Node>>(
    nodes: &[N],
    holders: &[GpuHolder],
    mut candidates: Vec<Candidate>,
    mut budgets: HashMap<QueueKey, QueueBudget>,
    now: Timestamp,
) -> Vec<(TaskKey, Verdict)> {
    let nodes: Vec<&Node> = nodes.iter().map(Borrow::borrow).collect();
    let schedulable: Vec<&Node> = nodes
        .iter()
        .copied()
        .filter(|n| is_schedulable(n))
        .collect();
    let mut free: BTreeMap<&str, u32> = schedulable
        .iter()
        .map(|n| {
            (
                n.metadata.name.as_deref().unwrap_or_default(),
                allocatable_gpus(n),
            )
        })
        .collect();

    // Bound holders first: an unbound one must not be counted on a node whose GPU a bound
    // holder already has.
    for holder in holders.iter().filter(|h| h.gpus > 0) {
        if let Some(left) = holder.node.as_deref().and_then(|n| free.get_mut(n)) {
            *left = left.saturating_sub(holder.gpus);
        }
    }
    for holder in holders.iter().filter(|h| h.gpus > 0 && h.node.is_none()) {
        reserve(&schedulable, &mut free, &holder.placement, holder.gpus);
    }

    candidates.sort_by(|a, b| a.order.cmp(&b.order).then_with(|| a.task.cmp(&b.task)));
    candidates
        .into_iter()
        .map(|candidate| {
            let verdict = decide(
                &candidate,
                &nodes,
                &schedulable,
                &mut free,
                &mut budgets,
                now,
            );
            (candidate.task, verdict)
        })
        .collect()
}

fn decide(
    candidate: &Candidate,
    all_nodes: &[&Node],
    schedulable: &[&Node],
    free: &mut BTreeMap<&str, u32>,
    budgets: &mut HashMap<QueueKey, QueueBudget>,
    now: Timestamp,
) -> Verdict {
    if let Some(until) = candidate.not_before.filter(|t| *t > now) {
        return Verdict::Backoff { until };
    }
    let budget = candidate.queue.as_ref().and_then(|q| budgets.get_mut(q));
    if budget
        .as_ref()
        .is_some_and(|b| b.active >= b.max_concurrent)
    {
        return Verdict::QueueFull;
    }
    match reserve(schedulable, free, &candidate.placement, candidate.gpus) {
        Some(node) => {
            if let Some(budget) = budget {
                budget.active += 1;
            }
            Verdict::Admit {
                node: node.to_owned(),
            }
        }
        None => {
            let could_ever_fit = all_nodes
                .iter()
                .any(|n| candidate.placement.fits(n) && allocatable_gpus(n) >= candidate.gpus);
            if could_ever_fit {
                Verdict::WaitingForGpu
            } else {
                Verdict::NoFittingNode
            }
        }
    }
}

/// The first schedulable node that fits `placement` and has `gpus` free; its GPUs are
/// counted as taken.
fn reserve<'a>(
    schedulable: &[&'a Node],
    free: &mut BTreeMap<&str, u32>,
    placement: &Placement,
    gpus: u32,
) -> Option<&'a str> {
    let node = schedulable
        .iter()
        .filter(|n| placement.fits(n))
        .filter_map(|n| n.metadata.name.as_deref())
        .find(|name| free.get(name).copied().unwrap_or(0) >= gpus)?;
    if let Some(left) = free.get_mut(node) {
        *left -= gpus;
    }
    Some(node)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::{
        api::core::v1::{NodeCondition, NodeSpec, NodeStatus},
        apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::ObjectMeta},
    };

    use super::*;
    use crate::admission::placement::GPU_RESOURCE;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn node(name: &str, pool: &str, gpus: u32, ready: bool) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some([("pool".to_string(), pool.to_string())].into()),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                allocatable: Some([(GPU_RESOURCE.to_string(), Quantity(gpus.to_string()))].into()),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn pool(name: &str) -> Placement {
        Placement {
            node_selector: BTreeMap::from([("pool".to_string(), name.to_string())]),
            ..Default::default()
        }
    }

    fn task(name: &str, gpus: u32, created: i64) -> Candidate {
        Candidate {
            task: TaskKey {
                namespace: "ns".into(),
                name: name.into(),
            },
            gpus,
            placement: pool("gpu"),
            order: AdmissionOrder {
                tier: 3,
                since: at(created),
                tie_breaker: name.into(),
            },
            queue: None,
            not_before: None,
        }
    }

    fn names(verdicts: &[(TaskKey, Verdict)]) -> Vec<(&str, &Verdict)> {
        verdicts.iter().map(|(k, v)| (k.name.as_str(), v)).collect()
    }

    fn admitted(verdicts: &[(TaskKey, Verdict)]) -> Vec<&str> {
        verdicts
            .iter()
            .filter(|(_, v)| matches!(v, Verdict::Admit { .. }))
            .map(|(k, _)| k.name.as_str())
            .collect()
    }

    #[test]
    fn admits_oldest_first_up_to_the_free_gpus() {
        let nodes = [node("a", "gpu", 1, true), node("b", "gpu", 1, true)];
        let candidates = vec![
            task("t3", 1, 3),
            task("t1", 1, 1),
            task("t5", 1, 5),
            task("t2", 1, 2),
            task("t4", 1, 4),
        ];
        let verdicts = plan(&nodes, &[], candidates, HashMap::new(), at(10));
        assert_eq!(
            names(&verdicts),
            vec![
                ("t1", &Verdict::Admit { node: "a".into() }),
                ("t2", &Verdict::Admit { node: "b".into() }),
                ("t3", &Verdict::WaitingForGpu),
                ("t4", &Verdict::WaitingForGpu),
                ("t5", &Verdict::WaitingForGpu),
            ]
        );
    }

    #[test]
    fn same_second_creation_falls_back_to_the_name() {
        let nodes = [node("a", "gpu", 1, true)];
        let verdicts = plan(
            &nodes,
            &[],
            vec![task("b", 1, 1), task("a", 1, 1)],
            HashMap::new(),
            at(10),
        );
        assert_eq!(admitted(&verdicts), vec!["a"]);
    }

    #[test]
    fn priority_tier_comes_before_age() {
        let nodes = [node("a", "gpu", 1, true)];
        let mut urgent = task("young-critical", 1, 9);
        urgent.order.tier = 0;
        let verdicts = plan(
            &nodes,
            &[],
            vec![task("old", 1, 1), urgent],
            HashMap::new(),
            at(10),
        );
        assert_eq!(admitted(&verdicts), vec!["young-critical"]);
    }

    #[test]
    fn bound_and_unbound_holders_take_gpus() {
        let nodes = [
            node("a", "gpu", 1, true),
            node("b", "gpu", 1, true),
            node("c", "gpu", 1, true),
        ];
        let holders = [
            GpuHolder {
                gpus: 1,
                node: Some("b".into()),
                placement: Placement::default(),
            },
            GpuHolder {
                gpus: 1,
                node: None,
                placement: pool("gpu"),
            },
        ];
        let verdicts = plan(
            &nodes,
            &holders,
            vec![task("t1", 1, 1), task("t2", 1, 2)],
            HashMap::new(),
            at(10),
        );
        assert_eq!(
            names(&verdicts),
            vec![
                ("t1", &Verdict::Admit { node: "c".into() }),
                ("t2", &Verdict::WaitingForGpu)
            ]
        );
    }

    #[test]
    fn an_unbound_holder_listed_first_does_not_hide_a_bound_one() {
        let nodes = [node("a", "gpu", 1, true), node("b", "gpu", 1, true)];
        let holders = [
            GpuHolder {
                gpus: 1,
                node: None,
                placement: pool("gpu"),
            },
            GpuHolder {
                gpus: 1,
                node: Some("a".into()),
                placement: Placement::default(),
            },
        ];
        let verdicts = plan(
            &nodes,
            &holders,
            vec![task("t1", 1, 1)],
            HashMap::new(),
            at(10),
        );
        assert_eq!(names(&verdicts), vec![("t1", &Verdict::WaitingForGpu)]);
    }

    #[test]
    fn holders_without_gpus_or_on_unknown_nodes_change_nothing() {
        let nodes = [node("a", "gpu", 1, true)];
        let holders = [
            GpuHolder {
                gpus: 0,
                node: Some("a".into()),
                placement: Placement::default(),
            },
            GpuHolder {
                gpus: 1,
                node: Some("gone".into()),
                placement: Placement::default(),
            },
        ];
        let verdicts = plan(
            &nodes,
            &holders,
            vec![task("t1", 1, 1)],
            HashMap::new(),
            at(10),
        );
        assert_eq!(admitted(&verdicts), vec!["t1"]);
    }

    #[test]
    fn placement_decides_which_gpus_count() {
        let nodes = [
            node("cpu", "cpu", 0, true),
            node("other", "other", 4, true),
            node("g", "gpu", 1, true),
        ];
        let verdicts = plan(
            &nodes,
            &[],
            vec![task("t1", 1, 1), task("t2", 1, 2)],
            HashMap::new(),
            at(10),
        );
        assert_eq!(
            names(&verdicts),
            vec![
                ("t1", &Verdict::Admit { node: "g".into() }),
                ("t2", &Verdict::WaitingForGpu)
            ]
        );
    }

    #[test]
    fn a_task_no_node_could_ever_host_is_told_so() {
        let nodes = [node("g", "gpu", 1, true)];
        let mut elsewhere = task("elsewhere", 1, 1);
        elsewhere.placement = pool("nowhere");
        let verdicts = plan(
            &nodes,
            &[],
            vec![task("greedy", 2, 0), elsewhere],
            HashMap::new(),
            at(10),
        );
        assert_eq!(
            names(&verdicts),
            vec![
                ("greedy", &Verdict::NoFittingNode),
                ("elsewhere", &Verdict::NoFittingNode)
            ]
        );
    }

    #[test]
    fn a_not_ready_node_is_waited_for_not_given_up_on() {
        let nodes = [node("g", "gpu", 1, false)];
        let verdicts = plan(&nodes, &[], vec![task("t1", 1, 1)], HashMap::new(), at(10));
        assert_eq!(names(&verdicts), vec![("t1", &Verdict::WaitingForGpu)]);
    }

    #[test]
    fn a_big_task_that_waits_does_not_block_smaller_ones() {
        let nodes = [node("a", "gpu", 1, true), node("b", "gpu", 2, true)];
        let holders = [GpuHolder {
            gpus: 1,
            node: Some("b".into()),
            placement: Placement::default(),
        }];
        let verdicts = plan(
            &nodes,
            &holders,
            vec![task("big", 2, 1), task("small", 1, 2)],
            HashMap::new(),
            at(10),
        );
        assert_eq!(
            names(&verdicts),
            vec![
                ("big", &Verdict::WaitingForGpu),
                ("small", &Verdict::Admit { node: "a".into() })
            ]
        );
    }

    #[test]
    fn gpu_less_tasks_need_only_a_fitting_node() {
        let nodes = [node("g", "gpu", 0, true)];
        let verdicts = plan(
            &nodes,
            &[],
            vec![task("t0", 0, 1), task("t1", 1, 2)],
            HashMap::new(),
            at(10),
        );
        assert_eq!(
            names(&verdicts),
            vec![
                ("t0", &Verdict::Admit { node: "g".into() }),
                ("t1", &Verdict::NoFittingNode)
            ]
        );
    }

    #[test]
    fn retries_wait_for_their_backoff() {
        let nodes = [node("a", "gpu", 1, true)];
        let mut retry = task("retry", 1, 0);
        retry.not_before = Some(at(20));
        let verdicts = plan(
            &nodes,
            &[],
            vec![retry.clone(), task("next", 1, 5)],
            HashMap::new(),
            at(10),
        );
        assert_eq!(
            names(&verdicts),
            vec![
                ("retry", &Verdict::Backoff { until: at(20) }),
                ("next", &Verdict::Admit { node: "a".into() })
            ]
        );
        let later = plan(&nodes, &[], vec![retry], HashMap::new(), at(20));
        assert_eq!(admitted(&later), vec!["retry"]);
    }

    #[test]
    fn queue_budgets_cap_concurrency_per_queue() {
        let nodes = [node("a", "gpu", 4, true)];
        let q = QueueKey {
            namespace: "ns".into(),
            name: "q".into(),
        };
        let in_queue = |name: &str, created| Candidate {
            queue: Some(q.clone()),
            ..task(name, 1, created)
        };
        let budgets = HashMap::from([(
            q.clone(),
            QueueBudget {
                max_concurrent: 2,
                active: 1,
            },
        )]);
        let verdicts = plan(
            &nodes,
            &[],
            vec![in_queue("q1", 1), in_queue("q2", 2), task("handmade", 1, 3)],
            budgets,
            at(10),
        );
        assert_eq!(
            names(&verdicts),
            vec![
                ("q1", &Verdict::Admit { node: "a".into() }),
                ("q2", &Verdict::QueueFull),
                ("handmade", &Verdict::Admit { node: "a".into() }),
            ]
        );
    }

    #[test]
    fn overcommitted_nodes_do_not_underflow() {
        let nodes = [node("a", "gpu", 1, true)];
        let holders = [
            GpuHolder {
                gpus: 1,
                node: Some("a".into()),
                placement: Placement::default(),
            },
            GpuHolder {
                gpus: 1,
                node: Some("a".into()),
                placement: Placement::default(),
            },
        ];
        let verdicts = plan(
            &nodes,
            &holders,
            vec![task("t1", 1, 1)],
            HashMap::new(),
            at(10),
        );
        assert_eq!(names(&verdicts), vec![("t1", &Verdict::WaitingForGpu)]);
    }
}
