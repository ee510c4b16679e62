//! Admission: the single place that decides which queued AgentTask gets a GPU.
//!
//! One loop, so decisions never race each other. It reads the cluster from watch caches (nodes,
//! non-terminal pods, tasks, queues), asks the pure [`plan`] who may start, and records each
//! admission in the task's status with a resourceVersion precondition: a decision based on a
//! stale view is refused by the API server instead of double-booking a GPU. The pod itself is
//! created by the AgentTask controller, so a crash between the two loses nothing.

pub mod placement;
pub mod plan;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use self::{
    placement::{Placement, pod_gpus},
    plan::{AdmissionOrder, Candidate, GpuHolder, QueueBudget, QueueKey, TaskKey, Verdict},
};
use crate::{
    controller::{
        Context,
        agent_task::{
            desired::pod_name,
            record,
            settings::RunSettings,
            transition::{CONDITION_ADMITTED, Transition},
        },
    },
    crd::{AgentTask, IssueQueue, Phase, conditions},
};

/// Tier of tasks that carry no admission key (hand-made ones): with "no priority" issues.
pub const DEFAULT_TIER: u8 = 3;

/// Longest sleep between passes when nothing wakes the loop.
const IDLE_PASS: Duration = Duration::from_secs(10);
/// Pause before deciding again after a decision could not be recorded.
const RETRY_PASS: Duration = Duration::from_millis(50);
/// Pause after a decision failed for another reason than a conflict.
const FAILED_PASS_BACKOFF: Duration = Duration::from_secs(2);
/// How long an admission we wrote may be missing from the task cache before we stop counting
/// it ourselves (the watch delivers it in milliseconds; this only bounds a lost update).
const IN_FLIGHT_GRACE: Duration = Duration::from_secs(30);

/// An admission written to the API server but not yet seen in the task cache.
struct InFlight {
    holder: GpuHolder,
    written: Instant,
}

/// Runs admission passes until the process ends, from the moment every watch has synced
/// (`synced` turns true). Woken by `ctx.admission`.
pub async fn run(ctx: Arc<Context>, mut synced: watch::Receiver<bool>) {
    if synced.wait_for(|ready| *ready).await.is_err() {
        warn!("the operator stopped before its watches synced; admission stops");
        return;
    }
    let mut in_flight: HashMap<TaskKey, InFlight> = HashMap::new();
    loop {
        let sleep = match pass(&ctx, &mut in_flight).await {
            NextPass::Soon => RETRY_PASS,
            NextPass::At(wait) => wait.min(IDLE_PASS),
            NextPass::Idle => IDLE_PASS,
        };
        tokio::select! {
            _ = ctx.admission.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// When the next pass is due.
enum NextPass {
    /// A decision could not be recorded; decide again shortly from a fresher view.
    Soon,
    /// A retry's backoff ends then.
    At(Duration),
    Idle,
}

/// One admission pass, in admission order.
async fn pass(ctx: &Context, in_flight: &mut HashMap<TaskKey, InFlight>) -> NextPass {
    ctx.metrics.admission_passes.inc();
    let now = Timestamp::now();
    let tasks = ctx.stores.tasks.state();
    let queues: HashMap<QueueKey, Arc<IssueQueue>> = ctx
        .stores
        .queues
        .state()
        .into_iter()
        .map(|q| {
            (
                QueueKey {
                    namespace: q.namespace().unwrap_or_default(),
                    name: q.name_any(),
                },
                q,
            )
        })
        .collect();

    // Judged against the same task snapshot as the rest of the pass.
    let queued_in_snapshot: HashSet<TaskKey> = tasks
        .iter()
        .filter(|t| t.phase() == Phase::Queued)
        .map(|t| TaskKey {
            namespace: t.namespace().unwrap_or_default(),
            name: t.name_any(),
        })
        .collect();
    in_flight.retain(|key, entry| {
        queued_in_snapshot.contains(key) && entry.written.elapsed() < IN_FLIGHT_GRACE
    });

    // One snapshot of the pods for the whole pass: a pod that arrives mid-pass must be seen
    // either as a pod or as its task's reservation, never as neither.
    let pods = ctx.stores.pods.state();
    let pod_names: HashSet<(String, String)> = pods
        .iter()
        .map(|p| (p.namespace().unwrap_or_default(), p.name_any()))
        .collect();
    let mut holders: Vec<GpuHolder> = pods
        .iter()
        .filter_map(|pod| {
            let spec = pod.spec.as_ref()?;
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if matches!(phase, Some("Succeeded" | "Failed")) {
                return None;
            }
            Some(GpuHolder {
                gpus: pod_gpus(spec),
                node: spec.node_name.clone(),
                placement: Placement::of_pod(spec),
            })
        })
        .collect();
    holders.extend(in_flight.values().map(|f| f.holder.clone()));

    let mut candidates = Vec::new();
    let mut budgets: HashMap<QueueKey, QueueBudget> = HashMap::new();
    let mut by_key: HashMap<TaskKey, (Arc<AgentTask>, RunSettings)> = HashMap::new();
    for task in &tasks {
        let key = TaskKey {
            namespace: task.namespace().unwrap_or_default(),
            name: task.name_any(),
        };
        let queue_key = task.spec.queue_ref.as_ref().map(|name| QueueKey {
            namespace: key.namespace.clone(),
            name: name.clone(),
        });
        // A task the controller has not initialised yet is queued all the same.
        let phase = task.phase();
        if task.spec.cancel || phase.is_terminal() || task.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let queue = queue_key.as_ref().and_then(|q| queues.get(q));
        let profiles = queue
            .map(|q| q.spec.profiles.as_slice())
            .unwrap_or_default();
        let Ok(settings) = RunSettings::resolve(task, profiles) else {
            continue;
        };
        if let Some((queue_key, queue)) = queue_key.as_ref().zip(queue) {
            let budget = budgets.entry(queue_key.clone()).or_insert(QueueBudget {
                max_concurrent: if queue.spec.paused {
                    0
                } else {
                    queue.spec.max_concurrent
                },
                active: 0,
            });
            if phase.is_active() || in_flight.contains_key(&key) {
                budget.active += 1;
            }
        }
        if phase.is_active() {
            let pod_cached =
                pod_names.contains(&(key.namespace.clone(), pod_name(task, task.attempt())));
            if !pod_cached {
                // Admitted, pod not created yet (or just finished): its GPU stays reserved.
                holders.push(GpuHolder {
                    gpus: settings.agent.gpus,
                    node: task.status.as_ref().and_then(|s| s.node_name.clone()),
                    placement: settings.placement(),
                });
            }
            continue;
        }
        if in_flight.contains_key(&key) {
            continue;
        }
        let admission = task.spec.admission.clone().unwrap_or_default();
        let created = task
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(now);
        candidates.push(Candidate {
            task: key.clone(),
            gpus: settings.agent.gpus,
            placement: settings.placement(),
            order: AdmissionOrder {
                tier: if task.spec.admission.is_some() {
                    admission.tier
                } else {
                    DEFAULT_TIER
                },
                since: admission.since.map(|t| t.0).unwrap_or(created),
                tie_breaker: format!("{}/{}", key.namespace, key.name),
            },
            queue: queue_key,
            not_before: task
                .status
                .as_ref()
                .and_then(|s| s.next_attempt_after.as_ref())
                .map(|t| t.0),
        });
        by_key.insert(key, (task.clone(), settings));
    }
    ctx.metrics.queued_tasks.set(candidates.len() as i64);
    debug!(holders = ?holders.iter().map(|h| (h.gpus, h.node.clone())).collect::<Vec<_>>(), candidates = candidates.len(), in_flight = in_flight.len(), "admission pass");

    let mut next_wake: Option<Duration> = None;
    for (key, verdict) in plan::plan(
        &ctx.stores.nodes.state(),
        &holders,
        candidates,
        budgets,
        now,
    ) {
        let Some((task, settings)) = by_key.get(&key) else {
            continue;
        };
        match verdict {
            Verdict::Admit { node } => {
                let admitted = Transition::Admitted {
                    pod_name: pod_name(task, task.attempt()),
                };
                match record(ctx, task, &admitted, &settings.profile_name).await {
                    Ok(()) => {
                        info!(task = %key.name, namespace = %key.namespace, counted_on = %node, "admitted");
                        ctx.metrics.admissions.inc();
                        in_flight.insert(
                            key,
                            InFlight {
                                holder: GpuHolder {
                                    gpus: settings.agent.gpus,
                                    node: None,
                                    placement: settings.placement(),
                                },
                                written: Instant::now(),
                            },
                        );
                    }
                    // Stale cache or a concurrent change. Stop here: admitting tasks further down
                    // the order now could take the GPU this one should get.
                    Err(error @ crate::controller::agent_task::Error::Conflict) => {
                        debug!(task = %key.name, %error, "admission not recorded; deciding again");
                        return NextPass::Soon;
                    }
                    // Anything else (the API server failing) is not cured by asking again at
                    // once; the order is still kept.
                    Err(error) => {
                        warn!(task = %key.name, reason = error.reason(), %error, "admission not recorded; backing off");
                        return NextPass::At(FAILED_PASS_BACKOFF);
                    }
                }
            }
            waiting => {
                if let Verdict::Backoff { until } = waiting {
                    let wait = Duration::try_from(now.duration_until(until)).unwrap_or_default();
                    next_wake = Some(next_wake.map_or(wait, |w| w.min(wait)));
                }
                let status = task.status.clone().unwrap_or_default();
                let recorded = conditions::find(&status.conditions, CONDITION_ADMITTED)
                    .map(|c| c.reason.as_str());
                if recorded != Some(waiting.reason()) {
                    let transition = Transition::Waiting {
                        reason: waiting.reason(),
                        message: waiting_message(&waiting, settings),
                    };
                    if let Err(error) = record(ctx, task, &transition, &settings.profile_name).await
                    {
                        debug!(task = %key.name, %error, "waiting reason not recorded");
                    }
                }
            }
        }
    }
    next_wake.map_or(NextPass::Idle, NextPass::At)
}

fn waiting_message(verdict: &Verdict, settings: &RunSettings) -> String {
    let gpus = settings.agent.gpus;
    match verdict {
        Verdict::Admit { .. } => String::new(),
        Verdict::Backoff { until } => format!("retry waits for its backoff until {until}"),
        Verdict::QueueFull => "the IssueQueue runs its maxConcurrent agents already".into(),
        Verdict::WaitingForGpu => {
            format!("waiting for {gpus} free GPU(s) on a node that fits the profile's placement")
        }
        Verdict::NoFittingNode => format!(
            "no node matches the placement (node selector {:?}) with {gpus} allocatable GPU(s)",
            settings.node_selector()
        ),
    }
}
