//! The IssueQueue controller: reads the repository from GitHub (conditionally, so an
//! unchanged repository costs no rate limit), plans every issue with the pure rules, and
//! carries the plan out — labels, the one status comment, AgentTasks, closing merged issues.
//! Triggered by webhook delivery records, by its AgentTasks changing, and every
//! `resyncInterval`; each run starts from what GitHub and the API server say now.

pub mod plan;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use k8s_openapi::{
    api::core::v1::{ConfigMap, Secret},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
    runtime::controller::Action,
};
use serde_json::json;
use tracing::{debug, info, instrument, warn};

use self::plan::{CommentChange, LinkedPullRequest, TaskChange, TaskView, plan_issue};
use super::{
    Context, FIELD_MANAGER,
    agent_task::{
        CLOSED_ANNOTATION, MERGED_AT_ANNOTATION, PULL_REQUEST_ANNOTATION,
        desired::{ISSUE_LABEL, MANAGED_BY, MANAGED_BY_LABEL, QUEUE_LABEL},
    },
    delete_if_exists,
};
use crate::{
    crd::{
        AdmissionKey, AgentTask, AgentTaskSpec, IssueQueue, IssueQueueStatus,
        conditions::{ConditionStatus, ConditionUpdate, upsert},
        issue_queue::{GitHubAuth, IssueCounts, RateLimitStatus, SecretKeyRef},
    },
    github::{
        client::{Credentials, GitHubClient, GitHubError},
        payload::{IssuePayload, PullRequestPayload},
    },
    issue::{
        Comment, Issue, Rules, admission_order, evaluate, identity::issue_id, references::IssueRef,
        status_comment::IssueState,
    },
    metrics::{ErrorLabels, QueueLabel},
    webhook::{DELIVERY_LABEL, RECORD_ISSUES, RECORD_PULL_REQUEST},
};

pub const CONTROLLER: &str = "issuequeue";

/// Label on a task that is not the issue's work: `enrichment` for a draft's enrichment run.
pub const RUN_LABEL: &str = "raibid.dev/run";
pub const ENRICHMENT_RUN: &str = "enrichment";
/// Annotation on a task: the highest issue or pull request number the repository had when
/// the task was created. A pull request numbered above it was opened during the run.
pub const NUMBERED_UP_TO_ANNOTATION: &str = "raibid.dev/numbered-up-to";
/// What a draft's enrichment agent is asked to do (contract §5).
const ENRICHMENT_INSTRUCTIONS: &str = "This issue is a draft. Improve its title and text so \
that an agent can work on it; where people must decide something, add a `## Clarifying \
Questions` section with numbered questions. Then remove the `draft` label. Change no code.";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    GitHub(#[from] GitHubError),
    #[error("Secret {name:?} is missing or has no value under {key:?}")]
    MissingSecret { name: String, key: String },
}

impl Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Kube(_) => "KubeApiError",
            Self::GitHub(error) => error.reason(),
            Self::MissingSecret { .. } => "MissingSecret",
        }
    }
}

type Result<T, E = Error> = std::result::Result<T, E>;

/// GitHub clients per queue, kept so that their conditional-request caches survive between
/// reconciles; rebuilt when the credentials change.
#[derive(Default)]
pub struct GitHubClients {
    clients: tokio::sync::Mutex<HashMap<String, KnownClient>>,
}

/// A queue's client, the credentials it was built from, and the login it acts as.
struct KnownClient {
    fingerprint: String,
    client: Arc<GitHubClient>,
    login: Option<String>,
}

#[instrument(skip_all, fields(queue = %cached.name_any(), namespace = cached.namespace().unwrap_or_default()))]
pub async fn reconcile(cached: Arc<IssueQueue>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(CONTROLLER);
    // The status carries state from pass to pass (when each issue was reminded, when each
    // condition changed); the cache may not have our last write yet, so read it fresh.
    let api: Api<IssueQueue> =
        Api::namespaced(ctx.client.clone(), &cached.namespace().unwrap_or_default());
    let Some(queue) = api.get_opt(&cached.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let resync = queue.spec.resync_interval.as_std();
    match sync(&queue, &ctx).await {
        Ok(status) => {
            write_status(&ctx, &queue, status).await?;
            Ok(Action::requeue(resync))
        }
        Err(error) => {
            let mut status = queue.status.clone().unwrap_or_default();
            let now = Timestamp::now();
            let generation = queue.meta().generation;
            let github_down = matches!(error, Error::GitHub(_) | Error::MissingSecret { .. });
            upsert(
                &mut status.conditions,
                ConditionUpdate {
                    type_: if github_down {
                        "GitHubReachable"
                    } else {
                        "Synced"
                    },
                    status: ConditionStatus::False,
                    reason: error.reason(),
                    message: error.to_string(),
                },
                generation,
                now,
            );
            upsert(
                &mut status.conditions,
                ConditionUpdate {
                    type_: "Ready",
                    status: ConditionStatus::False,
                    reason: error.reason(),
                    message: error.to_string(),
                },
                generation,
                now,
            );
            write_status(&ctx, &queue, status).await?;
            Err(error)
        }
    }
}

pub fn error_policy(queue: Arc<IssueQueue>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels {
            controller: CONTROLLER,
            reason: error.reason(),
        })
        .inc();
    warn!(queue = %queue.name_any(), reason = error.reason(), %error, "queue sync failed");
    let wait = match error {
        Error::GitHub(e) => e.retry_after().unwrap_or(Duration::from_secs(15)),
        _ => Duration::from_secs(15),
    };
    Action::requeue(wait.max(Duration::from_secs(1)))
}

/// The queue's GitHub client (built once per set of credentials) and the login it acts as.
pub(crate) async fn client(
    ctx: &Context,
    queue: &IssueQueue,
) -> Result<(Arc<GitHubClient>, Option<String>)> {
    let namespace = queue.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let read = |secret: &SecretKeyRef| {
        let secrets = secrets.clone();
        let secret = secret.clone();
        async move {
            let value =
                crate::secret::read(&secrets, &secret)
                    .await?
                    .ok_or(Error::MissingSecret {
                        name: secret.name,
                        key: secret.key,
                    })?;
            Ok::<_, Error>((value.bytes, value.version))
        }
    };
    let spec = &queue.spec.github;
    let (credentials, version) = match spec.auth() {
        GitHubAuth::App(app) => {
            let (pem, version) = read(&app.private_key_secret_ref).await?;
            (
                Credentials::App {
                    app_id: app.app_id,
                    private_key_pem: pem,
                    installation_id: app.installation_id,
                },
                version,
            )
        }
        GitHubAuth::Token(token) => {
            let (value, version) = read(token).await?;
            (
                Credentials::Token(String::from_utf8_lossy(&value).trim().to_owned()),
                version,
            )
        }
        GitHubAuth::Missing => {
            return Err(GitHubError::Setup("the queue names no GitHub credentials".into()).into());
        }
    };
    let key = format!("{namespace}/{}", queue.name_any());
    let fingerprint = format!("{}|{}|{version}", spec.api_url, queue.spec.repository);
    if let Some(known) = ctx
        .github
        .clients
        .lock()
        .await
        .get(&key)
        .filter(|k| k.fingerprint == fingerprint)
    {
        return Ok((known.client.clone(), known.login.clone()));
    }
    let is_app = matches!(credentials, Credentials::App { .. });
    let client = Arc::new(GitHubClient::new(
        &spec.api_url,
        &queue.spec.repository,
        credentials,
    )?);
    // Asked without holding the map, so other queues' syncs do not wait on it. A failure is
    // an error, not a client without a login: the next sync asks again.
    let login = if is_app {
        None
    } else {
        Some(client.login().await?)
    };
    ctx.github.clients.lock().await.insert(
        key,
        KnownClient {
            fingerprint,
            client: client.clone(),
            login: login.clone(),
        },
    );
    Ok((client, login))
}

/// One full pass over the repository. Returns the queue status to record.
async fn sync(queue: &IssueQueue, ctx: &Context) -> Result<IssueQueueStatus> {
    let started = std::time::Instant::now();
    let namespace = queue.namespace().unwrap_or_default();
    let name = queue.name_any();
    let records_api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
    // Records are listed before GitHub is read, so whatever they announce is in what is read
    // (and a record written later triggers another pass).
    let selector = format!("{DELIVERY_LABEL}=true,{QUEUE_LABEL}={name}");
    let ((github, login), records) = futures::future::try_join(client(ctx, queue), async {
        Ok(records_api
            .list(&ListParams::default().labels(&selector))
            .await?
            .items)
    })
    .await?;
    let mut rules = Rules::from_queue(&queue.spec);
    rules.operator_login = login;

    let tasks: Vec<Arc<AgentTask>> = ctx
        .stores
        .tasks
        .state()
        .into_iter()
        .filter(|t| {
            t.namespace().as_deref() == Some(namespace.as_str())
                && t.spec.queue_ref.as_deref() == Some(name.as_str())
        })
        .collect();

    let (open_issues, mut pull_requests) =
        futures::future::try_join(github.open_issues(), github.recent_pull_requests()).await?;
    let mut issues: BTreeMap<u64, IssuePayload> =
        open_issues.into_iter().map(|i| (i.number, i)).collect();
    let open_numbers: BTreeSet<u64> = issues.keys().copied().collect();

    // Pull requests named by deliveries or already known to tasks.
    let delivered_prs: BTreeSet<u64> = records
        .iter()
        .filter_map(|r| r.data.as_ref()?.get(RECORD_PULL_REQUEST)?.parse().ok())
        .collect();
    let mut pr_numbers = delivered_prs.clone();
    pr_numbers.extend(
        tasks
            .iter()
            .filter(|t| !t.phase().is_terminal())
            .filter_map(|t| t.status.as_ref()?.pull_request.as_ref().map(|p| p.number)),
    );
    // Recent pull requests repair missed webhooks; those named by deliveries or by running
    // tasks are read individually too, so an old one is never missed.
    pr_numbers.retain(|n| !pull_requests.iter().any(|p| p.number == *n));
    let missing: Vec<u64> = pr_numbers.into_iter().collect();
    for chunk in missing.chunks(8) {
        let github = &github;
        let reads = chunk.iter().map(|n| github.pull_request(*n));
        pull_requests.extend(futures::future::try_join_all(reads).await?);
    }

    // Issues that are not open but matter: named by deliveries, by tasks, by pull requests.
    let named_by_delivery: BTreeSet<u64> = records
        .iter()
        .filter_map(|r| r.data.as_ref()?.get(RECORD_ISSUES).cloned())
        .flat_map(|list| {
            list.split(',')
                .filter_map(|n| n.parse().ok())
                .collect::<Vec<u64>>()
        })
        .collect();
    let mut wanted = named_by_delivery.clone();
    wanted.extend(
        tasks
            .iter()
            .filter(|t| !t.phase().is_terminal())
            .filter_map(|t| t.spec.issue),
    );
    // A closed pull request's issues matter when they are announced or have had an agent;
    // the others are history, and reading them all on every pass would cost a request each.
    let issues_with_tasks: BTreeSet<u64> = tasks.iter().filter_map(|t| t.spec.issue).collect();
    // The issues each pull request names, parsed once per pass.
    let links: Vec<(&PullRequestPayload, BTreeSet<u64>)> = pull_requests
        .iter()
        .map(|p| (p, p.linked_issues()))
        .collect();
    for (pull_request, named) in &links {
        let live = pull_request.state.as_deref() != Some("closed")
            || delivered_prs.contains(&pull_request.number);
        wanted.extend(
            named
                .iter()
                .filter(|n| live || issues_with_tasks.contains(n)),
        );
    }
    let not_open: Vec<u64> = wanted.difference(&open_numbers).copied().collect();
    for chunk in not_open.chunks(8) {
        let github = &github;
        let reads = chunk
            .iter()
            .map(|n| async move { (*n, github.issue(*n).await) });
        for (number, read) in futures::future::join_all(reads).await {
            match read {
                Ok(issue) if !issue.is_pull_request() => {
                    issues.insert(number, issue);
                }
                Ok(_) => {}
                Err(GitHubError::Status { status, .. })
                    if status.as_u16() == 404 || status.as_u16() == 410 => {}
                Err(error) => return Err(error.into()),
            }
        }
    }

    // Dependencies in other repositories are looked up once per pass, each once. One that
    // cannot be read counts as open: waiting is the safe side.
    let elsewhere: Vec<IssueRef> = issues
        .values()
        .flat_map(|issue| {
            let body = issue.body.as_deref().unwrap_or_default();
            crate::issue::references::dependencies(body, &queue.spec.repository)
        })
        .filter(|d| d.repository.is_some())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut closed_elsewhere: BTreeSet<IssueRef> = BTreeSet::new();
    for chunk in elsewhere.chunks(8) {
        let github = &github;
        let reads = chunk.iter().map(|d| async move {
            let repository = d.repository.as_deref().unwrap_or_default();
            (d, github.issue_in(repository, d.number).await)
        });
        for (dependency, read) in futures::future::join_all(reads).await {
            match read {
                Ok(other) if other.state.as_deref() == Some("closed") => {
                    closed_elsewhere.insert(dependency.clone());
                }
                Ok(_) => {}
                Err(error) => {
                    debug!(%error, ?dependency, "could not read a dependency; counting it open")
                }
            }
        }
    }
    let is_closed = |d: &IssueRef| match &d.repository {
        None => !open_numbers.contains(&d.number),
        Some(_) => closed_elsewhere.contains(d),
    };

    // Comments of every issue, read a few at a time: each read is one round trip, and a
    // delivery waits for the whole pass.
    let numbers: Vec<u64> = issues.keys().copied().collect();
    let mut all_comments: HashMap<u64, Vec<Comment>> = HashMap::new();
    // When each issue last heard from a trusted answerer (or was opened): a wait for answers
    // runs from there.
    let mut last_word: HashMap<u64, Timestamp> = HashMap::new();
    for chunk in numbers.chunks(8) {
        let reads = chunk
            .iter()
            .map(|n| async { (*n, github.comments(*n).await) });
        for (number, comments) in futures::future::join_all(reads).await {
            let payloads = comments?;
            let converted: Vec<Comment> = payloads.iter().map(|c| c.to_comment()).collect();
            if let Some(issue) = issues.get(&number).map(IssuePayload::to_issue) {
                let latest = payloads
                    .iter()
                    .zip(&converted)
                    .filter(|(_, c)| rules.is_trusted_answerer(&issue, c))
                    .filter_map(|(p, _)| p.updated_at.or(p.created_at))
                    .max();
                last_word.insert(
                    number,
                    latest.map_or(issue.created_at, |l| l.max(issue.created_at)),
                );
            }
            all_comments.insert(number, converted);
        }
    }

    let read_in = started.elapsed();
    // Issues and pull requests share one counter: the highest number seen is a watermark
    // for "opened before now".
    let numbered_up_to = issues
        .keys()
        .copied()
        .chain(pull_requests.iter().map(|p| p.number))
        .max()
        .unwrap_or(0);
    let mut reminders = queue
        .status
        .as_ref()
        .map(|s| s.reminders.clone())
        .unwrap_or_default();
    let mut counts = IssueCounts::default();
    let mut evaluated: Vec<(Issue, crate::issue::Evaluation)> = Vec::new();
    let mut github_writes: Vec<plan::IssuePlan> = Vec::new();
    // Issues a delivery names go first: a merge frees its slot before the others are tidied.
    let mut ordered: Vec<&IssuePayload> = issues.values().collect();
    ordered.sort_by_key(|i| (!named_by_delivery.contains(&i.number), i.number));
    for payload in ordered {
        let issue = payload.to_issue();
        let comments: Vec<Comment> = all_comments.remove(&issue.number).unwrap_or_default();
        let evaluation = evaluate(&issue, &comments, &rules, is_closed);
        let issue_tasks: Vec<TaskView> = tasks
            .iter()
            .filter(|t| t.spec.issue == Some(issue.number))
            .map(|t| task_view(t))
            .collect();
        let branches: Vec<String> = issue_tasks
            .iter()
            .filter_map(|t| t.branch.clone())
            .collect();
        // An old closed pull request must neither fail a new attempt nor close a reopened
        // issue again, also when its delivery comes late.
        let latest_run = issue_tasks.iter().max_by_key(|t| t.attempt);
        let linked: Vec<LinkedPullRequest> = links
            .iter()
            .filter(|(p, named)| named.contains(&issue.number) || branches.contains(&p.head.branch))
            .map(|(p, _)| *p)
            .filter(|p| {
                plan::speaks_for_latest_run(
                    p.number,
                    p.state.as_deref() != Some("closed"),
                    p.merged_at.or(p.closed_at),
                    latest_run,
                    delivered_prs.contains(&p.number),
                )
            })
            .map(|p| LinkedPullRequest {
                number: p.number,
                open: p.state.as_deref() != Some("closed"),
                merged: p.is_merged(),
                merged_by: p.merged_by.as_ref().map(|u| u.login.clone()),
                merged_at: p.merged_at,
            })
            .collect();
        let remind = if evaluation.state == crate::issue::TextState::WaitingForAnswers {
            let since = last_word
                .get(&issue.number)
                .copied()
                .unwrap_or(issue.created_at);
            let last = reminders.get(&issue.number.to_string()).map(|t| t.0);
            let at = plan::reminder(
                since,
                last,
                queue.spec.answer_reminder_after.as_std(),
                Timestamp::now(),
            );
            if let Some(at) = at {
                reminders.insert(issue.number.to_string(), Time(at));
            }
            at
        } else {
            reminders.remove(&issue.number.to_string());
            None
        };
        let plan = plan_issue(
            &name,
            &issue,
            &comments,
            &evaluation,
            &issue_tasks,
            &linked,
            &rules,
            remind,
        );
        // Tasks first, for every issue: a merge frees its GPU and a new candidate is queued
        // before the slower GitHub writes of this pass begin.
        change_task(
            ctx,
            queue,
            &rules,
            &issue,
            &comments,
            &evaluation,
            &plan.task,
            numbered_up_to,
        )
        .await?;
        if issue.open && rules.selects(&issue) {
            match plan.state {
                IssueState::Draft => counts.draft += 1,
                IssueState::Blocked => counts.blocked += 1,
                IssueState::WaitingForAnswers => counts.waiting_for_answers += 1,
                IssueState::Ready => counts.ready += 1,
                IssueState::Running => counts.running += 1,
                IssueState::InReview => counts.in_review += 1,
                IssueState::Done => {}
            }
            if plan.state == IssueState::Ready {
                evaluated.push((issue, evaluation));
            }
        }
        github_writes.push(plan);
    }
    // GitHub is written one request at a time, as it asks of integrations.
    for plan in &github_writes {
        write_to_github(&github, plan).await?;
    }

    for record in &records {
        delete_if_exists(&records_api, &record.name_any()).await?;
    }

    let now = Timestamp::now();
    let generation = queue.meta().generation;
    let mut status = queue.status.clone().unwrap_or_default();
    status.counts = counts;
    reminders.retain(|number, _| number.parse().is_ok_and(|n: u64| open_numbers.contains(&n)));
    status.reminders = reminders;
    status.running_tasks = tasks
        .iter()
        .filter(|t| t.phase().is_active())
        .map(|t| t.name_any())
        .collect();
    status.next_candidates = admission_order(evaluated.iter().map(|(i, e)| (i, e)), &rules)
        .into_iter()
        .take(10)
        .collect();
    status.last_sync_time = Some(Time(now));
    let limit = github.rate_limit();
    status.rate_limit = limit.remaining.map(|remaining| RateLimitStatus {
        remaining,
        reset_time: limit.reset.map(Time),
    });
    if let Some(remaining) = limit.remaining {
        ctx.metrics
            .github_rate_limit_remaining
            .get_or_create(&QueueLabel {
                namespace: namespace.clone(),
                queue: name.clone(),
            })
            .set(i64::from(remaining));
    }
    let (webhooks, webhook_reason, webhook_message) = webhook_readiness(ctx, queue).await;
    upsert(
        &mut status.conditions,
        ConditionUpdate {
            type_: "WebhooksAccepted",
            status: webhooks,
            reason: webhook_reason,
            message: webhook_message,
        },
        generation,
        now,
    );
    status.observed_generation = generation;
    debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        read_ms = read_in.as_millis() as u64,
        issues = issues.len(),
        records = records.len(),
        "queue synced"
    );
    for (type_, reason, message) in [
        (
            "GitHubReachable",
            "Reachable",
            format!("read {} issues of {}", issues.len(), queue.spec.repository),
        ),
        (
            "Synced",
            "Synced",
            format!("{} delivery record(s) processed", records.len()),
        ),
        (
            "Ready",
            "Synced",
            "the queue is in sync with GitHub".to_owned(),
        ),
    ] {
        upsert(
            &mut status.conditions,
            ConditionUpdate {
                type_,
                status: ConditionStatus::True,
                reason,
                message,
            },
            generation,
            now,
        );
    }
    Ok(status)
}

/// Whether deliveries for this queue can be verified: every webhook secret it names exists.
async fn webhook_readiness(
    ctx: &Context,
    queue: &IssueQueue,
) -> (ConditionStatus, &'static str, String) {
    let refs = &queue.spec.webhook_secret_refs;
    if refs.is_empty() {
        return (
            ConditionStatus::False,
            "ResyncOnly",
            format!(
                "no webhook secret: deliveries are refused and the queue runs from the resync every {}",
                queue.spec.resync_interval
            ),
        );
    }
    let secrets: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &queue.namespace().unwrap_or_default());
    let mut missing = Vec::new();
    for secret_ref in refs {
        let present = matches!(crate::secret::read(&secrets, secret_ref).await, Ok(Some(_)));
        if !present {
            missing.push(format!("{}/{}", secret_ref.name, secret_ref.key));
        }
    }
    if missing.len() == refs.len() {
        (
            ConditionStatus::False,
            "WebhookSecretMissing",
            format!("no webhook secret can be read: {}", missing.join(", ")),
        )
    } else if missing.is_empty() {
        (
            ConditionStatus::True,
            "SecretsPresent",
            format!("{} webhook secret(s) accepted", refs.len()),
        )
    } else {
        (
            ConditionStatus::True,
            "SomeSecretsMissing",
            format!("missing, so not accepted: {}", missing.join(", ")),
        )
    }
}

fn task_view(task: &AgentTask) -> TaskView {
    let status = task.status.clone().unwrap_or_default();
    let attempt = task
        .name_any()
        .rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    TaskView {
        name: task.name_any(),
        attempt,
        phase: status.phase,
        profile: status
            .profile
            .clone()
            .or_else(|| task.spec.profile_ref.clone()),
        node: status.node_name.clone(),
        branch: task.spec.branch.clone(),
        reason: status.reason.clone(),
        message: status.message.clone(),
        admission_time: status.admission_time.map(|t| t.0),
        created: task.metadata.creation_timestamp.as_ref().map(|t| t.0),
        enrichment: task
            .labels()
            .get(RUN_LABEL)
            .is_some_and(|run| run == ENRICHMENT_RUN),
        numbered_up_to: task
            .annotations()
            .get(NUMBERED_UP_TO_ANNOTATION)
            .and_then(|n| n.parse().ok()),
    }
}

/// The task side of an issue's plan: only the API server is written.
#[allow(clippy::too_many_arguments)]
async fn change_task(
    ctx: &Context,
    queue: &IssueQueue,
    rules: &Rules,
    issue: &Issue,
    comments: &[Comment],
    evaluation: &crate::issue::Evaluation,
    change: &TaskChange,
    numbered_up_to: u64,
) -> Result<()> {
    let namespace = queue.namespace().unwrap_or_default();
    let tasks: Api<AgentTask> = Api::namespaced(ctx.client.clone(), &namespace);
    match change {
        TaskChange::Keep => {}
        TaskChange::Create {
            name,
            profile,
            enrichment,
            ..
        } => {
            let mut task = new_task(queue, rules, issue, comments, evaluation, name, profile);
            task.annotations_mut().insert(
                NUMBERED_UP_TO_ANNOTATION.to_owned(),
                numbered_up_to.to_string(),
            );
            if *enrichment {
                task.labels_mut()
                    .insert(RUN_LABEL.to_owned(), ENRICHMENT_RUN.to_owned());
                let issue_text = task.spec.prompt.take().unwrap_or_default();
                task.spec.prompt = Some(format!("{ENRICHMENT_INSTRUCTIONS}\n\n{issue_text}"));
            }
            match tasks.create(&PostParams::default(), &task).await {
                Ok(_) => info!(task = %name, issue = issue.number, "created agent task"),
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(error) => return Err(error.into()),
            }
        }
        TaskChange::Cancel { name, why } => {
            info!(task = %name, issue = issue.number, %why, "cancelling agent task");
            tasks
                .patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"cancel": true}})),
                )
                .await?;
        }
        TaskChange::CompleteMerged { name, pull_request } => {
            let merged_at = Timestamp::now().to_string();
            let patch = json!({"metadata": {"annotations": {
                PULL_REQUEST_ANNOTATION: pull_request.to_string(), MERGED_AT_ANNOTATION: merged_at,
            }}});
            tasks
                .patch(name, &PatchParams::default(), &Patch::Merge(patch))
                .await?;
        }
        TaskChange::FailClosed { name, pull_request } => {
            let patch = json!({"metadata": {"annotations": {
                PULL_REQUEST_ANNOTATION: pull_request.to_string(), CLOSED_ANNOTATION: "true",
            }}});
            tasks
                .patch(name, &PatchParams::default(), &Patch::Merge(patch))
                .await?;
        }
    }
    Ok(())
}

/// The GitHub side of an issue's plan: labels, the status comment, closing.
async fn write_to_github(github: &GitHubClient, plan: &plan::IssuePlan) -> Result<()> {
    let number = plan.number;
    if !plan.add_labels.is_empty() {
        github.add_labels(number, &plan.add_labels).await?;
    }
    for label in &plan.remove_labels {
        github.remove_label(number, label).await?;
    }
    match &plan.comment {
        CommentChange::Keep => {}
        CommentChange::Create { body } => {
            github.create_comment(number, body).await?;
        }
        CommentChange::Update { id, body } => {
            github.update_comment(*id, body).await?;
        }
    }
    for id in &plan.delete_comments {
        github.delete_comment(*id).await?;
    }
    if plan.close_issue {
        github.close_issue(number).await?;
    }
    Ok(())
}

/// The AgentTask for a candidate: named by queue, issue and attempt, ordered by priority and
/// issue age, with the issue and its answers as the agent's context.
fn new_task(
    queue: &IssueQueue,
    rules: &Rules,
    issue: &Issue,
    comments: &[Comment],
    evaluation: &crate::issue::Evaluation,
    name: &str,
    profile: &str,
) -> AgentTask {
    let id = issue_id(&issue.title, issue.number);
    let branch = if id == format!("ISSUE-{}", issue.number) {
        format!("raibid/issue-{}", issue.number)
    } else {
        format!("raibid/{}-issue-{}", id.to_ascii_lowercase(), issue.number)
    };
    let mut prompt = format!("# {} ({id})\n\n{}\n", issue.title, issue.body.trim_end());
    let answers: Vec<&Comment> = comments
        .iter()
        .filter(|c| rules.is_trusted_answerer(issue, c))
        .filter(|c| !crate::issue::answers::answered_by(&c.body).is_empty())
        .collect();
    if !evaluation.questions.is_empty() && !answers.is_empty() {
        prompt.push_str("\n## Answers to the clarifying questions\n\n");
        for comment in answers {
            prompt.push_str(&format!(
                "@{} wrote:\n\n{}\n\n",
                comment.author,
                comment.body.trim_end()
            ));
        }
    }
    AgentTask {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: queue.namespace(),
            labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
                (QUEUE_LABEL.to_owned(), queue.name_any()),
                (ISSUE_LABEL.to_owned(), issue.number.to_string()),
            ])),
            owner_references: queue.controller_owner_ref(&()).map(|mut o| {
                o.controller = Some(false);
                vec![o]
            }),
            ..ObjectMeta::default()
        },
        spec: AgentTaskSpec {
            repository: queue.spec.repository.clone(),
            issue: Some(issue.number),
            prompt: Some(prompt),
            queue_ref: Some(queue.name_any()),
            profile_ref: Some(profile.to_owned()),
            branch: Some(branch),
            admission: Some(AdmissionKey {
                tier: evaluation.priority.tier(),
                since: Some(Time(issue.created_at)),
            }),
            ..AgentTaskSpec::default()
        },
        status: None,
    }
}

async fn write_status(ctx: &Context, queue: &IssueQueue, status: IssueQueueStatus) -> Result<()> {
    let api: Api<IssueQueue> =
        Api::namespaced(ctx.client.clone(), &queue.namespace().unwrap_or_default());
    let patch =
        json!({"apiVersion": "raibid.dev/v1alpha1", "kind": "IssueQueue", "status": status});
    api.patch_status(
        &queue.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}
