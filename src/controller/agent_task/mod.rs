//! The AgentTask controller: one pod per admitted attempt, followed to its end.
//!
//! Reconcile is level-triggered: every decision is taken from what the API server says now
//! (the task, its pod), so a restart or a missed event changes nothing. Admission — the one
//! place that decides which queued task gets a GPU — lives in [`crate::admission`]; this
//! controller only creates pods for tasks already admitted.

pub mod desired;
pub mod progress;
pub mod settings;
pub mod transition;

use std::{sync::Arc, time::Duration};

use k8s_openapi::{
    api::core::v1::{ConfigMap, Pod, Secret},
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::{
        controller::Action,
        events::{Event, EventType},
        reflector::ObjectRef,
    },
};
use serde_json::json;
use tracing::{info, instrument, warn};

use self::{
    progress::{Failure, PodProgress, human},
    settings::{AgentCredential, ProfileError, RunSettings},
    transition::{CONDITION_ADMITTED, Transition},
};
use super::{Context, FIELD_MANAGER, delete_if_exists, issue_queue};
use crate::{
    crd::{AgentTask, IssueQueue, Phase, conditions, issue_queue::GitHubAuth},
    github::client::GitHubError,
    metrics::{ErrorLabels, OutcomeLabels},
};

pub const CONTROLLER: &str = "agenttask";

/// Why a reconciliation failed. Each has a fixed reason for metrics and Events.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[source] kube::Error),
    #[error("the task changed while it was being updated; will retry")]
    Conflict,
    #[error("IssueQueue {queue:?} named in queueRef does not exist")]
    QueueNotFound { queue: String },
    #[error("the task has no namespace")]
    NoNamespace,
    #[error("cannot issue the agent's repository token: {0}")]
    RepositoryToken(#[source] Box<issue_queue::Error>),
}

impl Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Kube(_) => "KubeApiError",
            Self::Conflict => "Conflict",
            Self::QueueNotFound { .. } => "QueueNotFound",
            Self::NoNamespace => "NoNamespace",
            Self::RepositoryToken(error) => error.reason(),
        }
    }
}

impl From<kube::Error> for Error {
    fn from(error: kube::Error) -> Self {
        match &error {
            kube::Error::Api(status) if status.code == 409 => Self::Conflict,
            _ => Self::Kube(error),
        }
    }
}

type Result<T, E = Error> = std::result::Result<T, E>;

/// How often a task is looked at even when nothing changes (a safety net, not the mechanism).
const RECHECK: Duration = Duration::from_secs(60);

#[instrument(skip_all, fields(task = %task.name_any(), namespace = task.namespace().unwrap_or_default()))]
pub async fn reconcile(task: Arc<AgentTask>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(CONTROLLER);
    if task.metadata.deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove the pod and context file.
        return Ok(Action::await_change());
    }
    let namespace = task.namespace().ok_or(Error::NoNamespace)?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let phase = task.status.as_ref().map(|s| s.phase);

    if let Some((number, merged_at)) = pull_request_outcome(&task) {
        let status = task.status.clone().unwrap_or_default();
        let wanted = if merged_at.is_some() {
            "PullRequestMerged"
        } else {
            "PullRequestClosed"
        };
        if status.reason.as_deref() != Some(wanted) {
            delete_pod(&pods, &desired::pod_name(&task, task.attempt())).await?;
            let transition = match merged_at {
                Some(at) => Transition::PullRequestMerged {
                    number,
                    merged_at: Some(at),
                },
                None => Transition::PullRequestClosed { number },
            };
            let profile = status.profile.clone().unwrap_or_default();
            record(&ctx, &task, &transition, &profile).await?;
            ctx.admission.notify_one();
            return Ok(Action::await_change());
        }
    }

    // Every end passes here once recorded: the pod of a success and the credential go.
    if let Some(phase) = phase.filter(|p| p.is_terminal()) {
        if phase == Phase::Succeeded {
            delete_pod(&pods, &desired::pod_name(&task, task.attempt())).await?;
        } else {
            remove_leftover_pod(&task, &ctx, task.attempt()).await?;
        }
        discard_repository_token(&task, &ctx).await?;
        return Ok(Action::await_change());
    }

    let settings = match resolve_settings(&task, &ctx)? {
        Ok(settings) => settings,
        Err(invalid) => {
            let failed = Transition::Failed {
                reason: "InvalidProfile".into(),
                message: invalid.to_string(),
            };
            record(&ctx, &task, &failed, "unresolved").await?;
            return Ok(Action::await_change());
        }
    };

    if task.spec.cancel {
        delete_pod(&pods, &desired::pod_name(&task, task.attempt())).await?;
        let cancelled = Transition::Cancelled {
            message: "spec.cancel is set".into(),
        };
        record(&ctx, &task, &cancelled, &settings.profile_name).await?;
        ctx.admission.notify_one();
        return Ok(Action::await_change());
    }

    let now = Timestamp::now();
    match phase {
        None => {
            let queued = Transition::Queued {
                attempt: 1,
                not_before: None,
                after_failure: None,
            };
            record(&ctx, &task, &queued, &settings.profile_name).await?;
            ctx.admission.notify_one();
            Ok(Action::requeue(RECHECK))
        }
        Some(Phase::Queued) => queued(&task, &ctx, &settings, now).await,
        Some(_) => follow_pod(&task, &ctx, &pods, &settings, now).await,
    }
}

/// A queued task waits for admission; it fails only if no node could ever host it for longer
/// than its unschedulable limit.
async fn queued(
    task: &AgentTask,
    ctx: &Context,
    settings: &RunSettings,
    now: Timestamp,
) -> Result<Action> {
    ctx.admission.notify_one();
    if task.attempt() > 1 {
        remove_leftover_pod(task, ctx, task.attempt() - 1).await?;
    }
    let status = task.status.clone().unwrap_or_default();
    if let Some(waiting) = conditions::find(&status.conditions, CONDITION_ADMITTED)
        .filter(|c| c.status == "False" && c.reason == "NoFittingNode")
    {
        let since = waiting.last_transition_time.0;
        let give_up_at = since
            .checked_add(settings.unschedulable_timeout)
            .unwrap_or(Timestamp::MAX);
        if now >= give_up_at {
            let failed = Transition::Failed {
                reason: "Unschedulable".into(),
                message: format!(
                    "no node could ever host the agent for {}: {}",
                    human(settings.unschedulable_timeout),
                    waiting.message
                ),
            };
            record(ctx, task, &failed, &settings.profile_name).await?;
            ctx.admission.notify_one();
            return Ok(Action::await_change());
        }
        return Ok(Action::requeue(until(now, give_up_at)));
    }
    let retry_at = status.next_attempt_after.map(|t| t.0);
    Ok(Action::requeue(
        retry_at
            .map(|t| until(now, t))
            .unwrap_or(RECHECK)
            .min(RECHECK),
    ))
}

/// An admitted task: make sure its pod exists, then follow it.
async fn follow_pod(
    task: &AgentTask,
    ctx: &Context,
    pods: &Api<Pod>,
    settings: &RunSettings,
    now: Timestamp,
) -> Result<Action> {
    let attempt = task.attempt();
    let name = desired::pod_name(task, attempt);
    let namespace = task.namespace().ok_or(Error::NoNamespace)?;
    let cached = ctx
        .stores
        .pods
        .get(&ObjectRef::new(&name).within(&namespace));
    // A task admitted a moment ago has no pod yet, and the cache (live pods of the cluster)
    // knows it: go straight to creating it, which is the path a freed GPU waits on. Anything
    // else asks the API server, which also sees pods that have already ended.
    let pod = if cached.is_none() && task.phase() == Phase::Starting {
        None
    } else {
        pods.get_opt(&name).await?
    };
    let pod = match pod {
        Some(pod) => pod,
        None => {
            if task.phase() == Phase::Running {
                let lost = Failure {
                    reason: progress::FailureReason::PodLost,
                    message: format!("pod {name} disappeared while the agent ran"),
                    delete_pod: false,
                };
                return attempt_failed(task, ctx, settings, lost, now).await;
            }
            // Creating a pod is the one step no resourceVersion guards, and a cached task can be
            // a step behind our own last write (the attempt may have just ended and its pod been
            // deleted). Only the task as the API server has it now may start a pod.
            if !is_current(task, ctx).await? {
                return Ok(Action::requeue(Duration::from_millis(200)));
            }
            if settings.github_credential == Some(AgentCredential::RepositoryToken) {
                ensure_repository_token(task, ctx).await?;
            }
            match create_pod(task, ctx, settings, attempt).await? {
                Created::New => return Ok(Action::requeue(RECHECK)),
                // This attempt's pod was made before (and may have ended already): follow it.
                Created::AlreadyThere => match pods.get_opt(&name).await? {
                    Some(existing) => existing,
                    None => return Ok(Action::requeue(Duration::from_millis(200))),
                },
            }
        }
    };

    let status = task.status.clone().unwrap_or_default();
    let progress = progress::observe(&pod, settings, now);
    let agent_alive = matches!(
        progress,
        PodProgress::Starting { .. } | PodProgress::Running { .. }
    );
    if agent_alive && settings.github_credential == Some(AgentCredential::RepositoryToken) {
        // Renewed while the agent runs (it reads the file, which follows the Secret). A
        // failed renewal must not stop the pod from being followed: the token in hand is
        // good for a quarter of an hour more, and the next look tries again.
        if let Err(error) = ensure_repository_token(task, ctx).await {
            warn!(reason = error.reason(), %error, "could not renew the agent's repository token");
        }
    }
    match progress {
        PodProgress::Starting { node, recheck_at } => {
            if status.node_name != node {
                record(
                    ctx,
                    task,
                    &Transition::PodPending { node },
                    &settings.profile_name,
                )
                .await?;
            }
            Ok(Action::requeue(until(now, recheck_at).min(RECHECK)))
        }
        PodProgress::Running {
            node,
            started,
            deadline,
        } => {
            if task.phase() != Phase::Running || status.node_name.as_deref() != Some(&node) {
                record(
                    ctx,
                    task,
                    &Transition::PodRunning { node, started },
                    &settings.profile_name,
                )
                .await?;
            }
            Ok(Action::requeue(until(now, deadline).min(RECHECK)))
        }
        PodProgress::Succeeded => {
            record(ctx, task, &Transition::Succeeded, &settings.profile_name).await?;
            delete_pod(pods, &name).await?;
            ctx.admission.notify_one();
            Ok(Action::await_change())
        }
        PodProgress::Failed(failure) => {
            // Recorded first: deleted first, a refused record would find the pod gone next
            // time and call the attempt lost. If the delete fails after the record, the
            // leftover sweep removes the pod.
            let delete = failure.delete_pod;
            let action = attempt_failed(task, ctx, settings, failure, now).await?;
            if delete {
                delete_pod(pods, &name).await?;
            }
            Ok(action)
        }
    }
}

/// A failed attempt is retried as a new attempt after a backoff, until retries run out.
async fn attempt_failed(
    task: &AgentTask,
    ctx: &Context,
    settings: &RunSettings,
    failure: Failure,
    now: Timestamp,
) -> Result<Action> {
    let attempt = task.attempt();
    warn!(attempt, reason = failure.reason.as_str(), message = %failure.message, "agent attempt failed");
    let transition = if attempt <= settings.max_retries {
        let wait = ctx.retry.backoff(attempt + 1);
        Transition::Queued {
            attempt: attempt + 1,
            not_before: now.checked_add(wait).ok(),
            after_failure: Some((failure.reason.as_str().to_owned(), failure.message)),
        }
    } else {
        let tries = if attempt == 1 {
            "1 attempt".to_owned()
        } else {
            format!("{attempt} attempts")
        };
        Transition::Failed {
            reason: failure.reason.as_str().to_owned(),
            message: format!("{} (gave up after {tries})", failure.message),
        }
    };
    record(ctx, task, &transition, &settings.profile_name).await?;
    ctx.admission.notify_one();
    Ok(Action::requeue(Duration::from_secs(1)))
}

/// Whether the cached `task` is the version the API server has.
async fn is_current(task: &AgentTask, ctx: &Context) -> Result<bool> {
    let namespace = task.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<AgentTask> = Api::namespaced(ctx.client.clone(), &namespace);
    let fresh = api.get_opt(&task.name_any()).await?;
    Ok(fresh.is_some_and(|fresh| fresh.resource_version() == task.resource_version()))
}

/// Whether `create_pod` made the pod or found it made.
enum Created {
    New,
    AlreadyThere,
}

async fn create_pod(
    task: &AgentTask,
    ctx: &Context,
    settings: &RunSettings,
    attempt: u32,
) -> Result<Created> {
    let namespace = task.namespace().ok_or(Error::NoNamespace)?;
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
    let context = desired::context_config_map(task);
    let pod = desired::agent_pod(task, settings, attempt);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    // Both at once: the kubelet waits for a ConfigMap volume to exist, so the order does not
    // matter, and a freed GPU waits on this step.
    let context_name = desired::context_name(task);
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let context_patch = Patch::Apply(&context);
    let post = PostParams::default();
    let (context_written, created) = tokio::join!(
        config_maps.patch(&context_name, &apply, &context_patch),
        pods.create(&post, &pod),
    );
    context_written?;
    match created {
        Ok(_) => {
            info!(
                pod = pod.metadata.name.as_deref(),
                attempt, "created agent pod"
            );
            Ok(Created::New)
        }
        // The name is fixed per attempt: a pod that exists is this attempt's pod.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(Created::AlreadyThere),
        Err(error) => Err(error.into()),
    }
}

/// A pod of an attempt that has ended but is still alive (its failure was recorded, its
/// delete did not happen): it holds a GPU, so it goes. Ended pods are not in the cache of
/// live pods and stay for `kubectl logs`.
async fn remove_leftover_pod(task: &AgentTask, ctx: &Context, attempt: u32) -> Result<()> {
    let namespace = task.namespace().ok_or(Error::NoNamespace)?;
    let name = desired::pod_name(task, attempt);
    if ctx
        .stores
        .pods
        .get(&ObjectRef::new(&name).within(&namespace))
        .is_some()
    {
        delete_pod(&Api::namespaced(ctx.client.clone(), &namespace), &name).await?;
    }
    Ok(())
}

async fn delete_pod(pods: &Api<Pod>, name: &str) -> Result<()> {
    delete_if_exists(pods, name).await?;
    Ok(())
}

/// Resolves the profile: inline, or from the task's IssueQueue. The outer error is a failed
/// lookup (retried); the inner one a task that can never run as written.
fn resolve_settings(task: &AgentTask, ctx: &Context) -> Result<Result<RunSettings, ProfileError>> {
    let Some(queue_name) = task.spec.queue_ref.clone() else {
        return Ok(RunSettings::resolve(task, &[]));
    };
    let Some(queue) = queue_of(task, ctx) else {
        if task.spec.profile_ref.is_some() {
            return Err(Error::QueueNotFound { queue: queue_name });
        }
        return Ok(RunSettings::resolve(task, &[]));
    };
    let credential = AgentCredential::for_queue(&queue.spec.github);
    Ok(
        RunSettings::resolve(task, &queue.spec.profiles).map(|mut settings| {
            settings.github_credential = credential;
            settings
        }),
    )
}

fn queue_of(task: &AgentTask, ctx: &Context) -> Option<Arc<IssueQueue>> {
    let name = task.spec.queue_ref.as_ref()?;
    ctx.stores
        .queues
        .get(&ObjectRef::new(name).within(&task.namespace()?))
}

/// GitHub App queues: makes sure the task's repository token exists and is not about to
/// expire. Written before the pod that reads it is created.
async fn ensure_repository_token(task: &AgentTask, ctx: &Context) -> Result<()> {
    let namespace = task.namespace().ok_or(Error::NoNamespace)?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let name = desired::token_secret_name(task);
    let expires_at = secrets.get_opt(&name).await?.and_then(|secret| {
        secret
            .metadata
            .annotations?
            .get(desired::TOKEN_EXPIRES_ANNOTATION)?
            .parse()
            .ok()
    });
    if !desired::token_needs_renewal(expires_at, Timestamp::now()) {
        return Ok(());
    }
    let queue = queue_of(task, ctx).ok_or_else(|| Error::QueueNotFound {
        queue: task.spec.queue_ref.clone().unwrap_or_default(),
    })?;
    let token_error = |error: issue_queue::Error| Error::RepositoryToken(Box::new(error));
    let (github, _) = issue_queue::client(ctx, &queue)
        .await
        .map_err(token_error)?;
    let token = github
        .repository_token(
            &task.spec.repository,
            &desired::REPOSITORY_TOKEN_PERMISSIONS,
        )
        .await
        .map_err(|e| token_error(e.into()))?
        .ok_or_else(|| {
            token_error(issue_queue::Error::GitHub(GitHubError::Setup(
                "the queue no longer authenticates as a GitHub App".into(),
            )))
        })?;
    let secret = desired::token_secret(task, &token.token, token.expires_at);
    secrets
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await?;
    info!(secret = %name, expires_at = %token.expires_at, "issued the agent's repository token");
    Ok(())
}

/// A task that has ended keeps no credential: its repository token's Secret goes at once
/// (owner references would only remove it with the task).
async fn discard_repository_token(task: &AgentTask, ctx: &Context) -> Result<()> {
    if task.spec.queue_ref.is_none() {
        return Ok(());
    }
    // A queue that is gone may have been an App queue: look rather than assume.
    if queue_of(task, ctx).is_some_and(|q| !matches!(q.spec.github.auth(), GitHubAuth::App(_))) {
        return Ok(());
    }
    let namespace = task.namespace().ok_or(Error::NoNamespace)?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    if delete_if_exists(&secrets, &desired::token_secret_name(task)).await? {
        info!("deleted the agent's repository token");
    }
    Ok(())
}

/// Records a transition: status through server-side apply (guarded by the resourceVersion the
/// decision was based on, so a stale decision is refused), then an Event.
pub(crate) async fn record(
    ctx: &Context,
    task: &AgentTask,
    transition: &Transition,
    profile: &str,
) -> Result<()> {
    let namespace = task.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<AgentTask> = Api::namespaced(ctx.client.clone(), &namespace);
    let current = task.status.clone().unwrap_or_default();
    let next = transition::apply(
        &current,
        transition,
        profile,
        task.meta().generation,
        Timestamp::now(),
    );
    let patch = json!({
        "apiVersion": "raibid.dev/v1alpha1",
        "kind": "AgentTask",
        "metadata": { "resourceVersion": task.resource_version() },
        "status": next,
    });
    api.patch_status(
        &task.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;

    if next.phase.is_terminal() && !current.phase.is_terminal() {
        ctx.metrics
            .task_outcomes
            .get_or_create(&OutcomeLabels {
                phase: next.phase.as_str(),
                reason: next.reason.clone().unwrap_or_default(),
            })
            .inc();
    }
    if let Some(note) = transition::event(transition, next.attempt.unwrap_or(1)) {
        info!(reason = note.reason, note = %note.note, "agent task transition");
        let event = Event {
            type_: if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: note.reason.into(),
            note: Some(note.note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(error) = ctx.recorder.publish(&event, &task.object_ref(&())).await {
            warn!(%error, "could not publish event");
        }
    }
    Ok(())
}

pub fn error_policy(task: Arc<AgentTask>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels {
            controller: CONTROLLER,
            reason: error.reason(),
        })
        .inc();
    if matches!(error, Error::Conflict) {
        return Action::requeue(Duration::from_millis(200));
    }
    warn!(task = %task.name_any(), reason = error.reason(), %error, "reconcile failed");
    let recorder = ctx.recorder.clone();
    let reference = task.object_ref(&());
    let event = Event {
        type_: EventType::Warning,
        reason: error.reason().into(),
        note: Some(error.to_string()),
        action: "Reconcile".into(),
        secondary: None,
    };
    tokio::spawn(async move {
        let _ = recorder.publish(&event, &reference).await;
    });
    Action::requeue(Duration::from_secs(10))
}

/// Annotation the IssueQueue controller sets when the task's pull request merged or closed:
/// `<number>` and, for a merge, `merged-at`.
pub const PULL_REQUEST_ANNOTATION: &str = "raibid.dev/pull-request";
pub const MERGED_AT_ANNOTATION: &str = "raibid.dev/pull-request-merged-at";
pub const CLOSED_ANNOTATION: &str = "raibid.dev/pull-request-closed";

/// The pull request outcome recorded on the task: its number, and when it merged (`None` for
/// closed unmerged). Nothing while the pull request is open.
pub fn pull_request_outcome(task: &AgentTask) -> Option<(u64, Option<Timestamp>)> {
    let annotations = task.metadata.annotations.as_ref()?;
    let number = annotations.get(PULL_REQUEST_ANNOTATION)?.parse().ok()?;
    if let Some(at) = annotations.get(MERGED_AT_ANNOTATION) {
        return Some((
            number,
            Some(at.parse().unwrap_or_else(|_| Timestamp::now())),
        ));
    }
    annotations
        .contains_key(CLOSED_ANNOTATION)
        .then_some((number, None))
}

fn until(now: Timestamp, at: Timestamp) -> Duration {
    let wait = Duration::try_from(now.duration_until(at)).unwrap_or(Duration::ZERO);
    wait.clamp(Duration::from_millis(100), Duration::from_secs(24 * 3600))
}
