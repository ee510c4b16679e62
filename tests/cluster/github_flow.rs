//! The GitHub loop end to end: a GitHub emulator sends real signed webhooks to the operator,
//! which runs agents on simulated DGX Spark nodes. The test plays the people and the agent.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::{
    ResourceExt,
    api::{ListParams, PostParams},
};
use raibid_operator::crd::{AgentTask, IssueQueue, Phase, QueueProfile};
use serde_json::json;

use crate::{
    github_emulator::{
        ALICE, APP_ID, BOB, BOT, CAROL, Emulator, INSTALLATION_ID, OTHER_REPOSITORY, REPOSITORY,
        Relay, free_port, send,
    },
    support::{Operator, Scope, eventually, is_terminal},
};

const PATIENCE: Duration = Duration::from_secs(20);

/// Name of the IssueQueue every test here makes.
const QUEUE: &str = "demo";

/// How the operator authenticates to GitHub.
enum Auth {
    /// The bot's token, from the Secret `github-token`.
    Token,
    /// The emulator's GitHub App installation, key from the Secret `github-app`.
    App,
}

/// A GitHub emulator, the IssueQueue `demo` on its repository (`overrides` replace spec
/// fields), the operator, and a relay between them that keeps every delivery.
struct World {
    github: Emulator,
    operator: Operator,
    relay: Relay,
}

async fn setup(scope: &Scope, overrides: serde_json::Value, auth: Auth) -> World {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(&scope.namespace);
    std::fs::create_dir_all(&dir).unwrap();
    let (github, app_key) = match auth {
        Auth::Token => (Emulator::start(&dir).await, String::new()),
        Auth::App => Emulator::start_with_app(&dir).await,
    };
    scope
        .add_secret("github-webhook", "secret", "hook-secret")
        .await;
    match auth {
        Auth::Token => scope.add_secret("github-token", "token", BOT).await,
        Auth::App => {
            scope
                .add_secret("github-app", "private-key.pem", &app_key)
                .await
        }
    }
    let profile = QueueProfile {
        name: "agent".into(),
        match_rules: None,
        agent: scope.profile(None, "1s"),
    };
    let mut queue = json!({
        "apiVersion": "raibid.dev/v1alpha1", "kind": "IssueQueue", "metadata": {"name": QUEUE},
        "spec": {
            "repository": REPOSITORY,
            "github": {"apiUrl": github.url, "tokenSecretRef": {"name": "github-token", "key": "token"}},
            "webhookSecretRefs": [{"name": "github-webhook", "key": "secret"}],
            "profiles": [serde_json::to_value(&profile).unwrap()],
            "defaultProfile": "agent",
            "resyncInterval": "1h",
        },
    });
    if let Auth::App = auth {
        queue["spec"]["github"] = json!({"apiUrl": github.url, "app": {
            "appId": APP_ID, "installationId": INSTALLATION_ID,
            "privateKeySecretRef": {"name": "github-app", "key": "private-key.pem"},
        }});
    }
    for (key, value) in overrides.as_object().unwrap() {
        queue["spec"][key] = value.clone();
    }
    let queue: IssueQueue = serde_json::from_value(queue).unwrap();
    scope
        .api::<IssueQueue>()
        .create(&PostParams::default(), &queue)
        .await
        .unwrap();
    let port = free_port();
    let operator = Operator::start(&scope.namespace, &format!("127.0.0.1:{port}")).await;
    let queues = scope.api::<IssueQueue>();
    eventually(PATIENCE, || async {
        let status = queues.get(QUEUE).await.ok()?.status?;
        let is_true = |type_: &str| {
            status
                .conditions
                .iter()
                .any(|c| c.type_ == type_ && c.status == "True")
        };
        (is_true("Ready") && is_true("GitHubReachable") && is_true("WebhooksAccepted"))
            .then_some(())
    })
    .await;
    let relay = Relay::start(format!("http://127.0.0.1:{port}/webhooks/github")).await;
    github.add_webhook(&relay.url, "hook-secret").await;
    World {
        github,
        operator,
        relay,
    }
}

/// Waits until the operator has taken in what GitHub delivered: more than `before`
/// deliveries passed the relay (each is recorded before the operator answers it) and no
/// delivery record is left unprocessed (a record goes when the sync that read it ends).
async fn settled(scope: &Scope, relay: &Relay, before: usize) {
    let records = scope.api::<ConfigMap>();
    eventually(PATIENCE, || async {
        let arrived = relay.seen.lock().unwrap().len() > before;
        let left = records
            .list(&ListParams::default().labels("raibid.dev/delivery=true"))
            .await
            .ok()?
            .items
            .len();
        (arrived && left == 0).then_some(())
    })
    .await;
}

/// Waits until the issue carries `label`.
async fn until_labelled(github: &Emulator, issue: u64, label: &str) {
    eventually(PATIENCE, || async {
        github
            .labels(issue)
            .await
            .iter()
            .any(|l| l == label)
            .then_some(())
    })
    .await;
}

async fn task_of(scope: &Scope, issue: u64) -> Option<AgentTask> {
    scope
        .api::<AgentTask>()
        .list(&ListParams::default().labels(&format!("raibid.dev/issue={issue}")))
        .await
        .ok()?
        .items
        .into_iter()
        .max_by_key(|t| t.name_any())
}

async fn live_pod_of(scope: &Scope, task: &str) -> Option<Pod> {
    scope
        .api::<Pod>()
        .list(&ListParams::default().labels(&format!("raibid.dev/task={task}")))
        .await
        .ok()?
        .items
        .into_iter()
        .find(|p| !is_terminal(p) && p.metadata.deletion_timestamp.is_none())
}

#[tokio::test]
async fn questions_answers_agent_pull_request_merge_and_the_next_issue() {
    let scope = Scope::new("github-flow").await;
    scope.add_dgx_nodes(1).await;
    let World {
        github,
        operator: _operator,
        relay,
    } = setup(&scope, json!({"maxConcurrent": 1}), Auth::Token).await;

    // An issue with two questions waits, with its label and one status comment.
    let login = github
        .open_issue(
            ALICE,
            "Add login",
            "Please add login.\n\n## Clarifying Questions\n1. Which provider?\n2. Which scopes?\n",
            &[],
        )
        .await;
    eventually(PATIENCE, || async {
        let waiting = github
            .labels(login)
            .await
            .contains(&"waiting:answers".to_string());
        (waiting && github.status_comments(login).await.len() == 1).then_some(())
    })
    .await;

    // A partial answer still waits; an outsider's answer is ignored.
    github.comment(ALICE, login, "A1: GitHub").await;
    eventually(PATIENCE, || async {
        github
            .status_comments(login)
            .await
            .first()?
            .contains(r#""unanswered":[2]"#)
            .then_some(())
    })
    .await;
    let before = relay.seen.lock().unwrap().len();
    github
        .comment(CAROL, login, "A2: every scope there is")
        .await;
    settled(&scope, &relay, before).await;
    assert!(
        task_of(&scope, login).await.is_none(),
        "an outsider's answer started an agent"
    );
    assert!(github.status_comments(login).await[0].contains(r#""unanswered":[2]"#));

    // The author's full answer starts an agent pod on the GPU node.
    github.comment(ALICE, login, "A2: read:user").await;
    let task = eventually(PATIENCE, || async {
        let task = task_of(&scope, login).await?;
        (task.phase() == Phase::Running).then_some(task)
    })
    .await;
    let pod = live_pod_of(&scope, &task.name_any())
        .await
        .expect("the agent pod");
    let token = pod.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap()
        .into_iter()
        .find(|e| e.name == "GITHUB_TOKEN");
    let token_source = token
        .and_then(|e| e.value_from?.secret_key_ref)
        .map(|s| s.name);
    assert_eq!(
        token_source.as_deref(),
        Some("github-token"),
        "the agent can push and open its pull request"
    );
    let context = task.spec.prompt.clone().unwrap();
    assert!(
        context.contains("Which provider?") && context.contains("A2: read:user"),
        "{context}"
    );
    assert!(
        !context.contains("every scope there is"),
        "the outsider's text is not context"
    );
    until_labelled(&github, login, "status:in-progress").await;

    // Two more issues wait for the one slot; the high-priority one is next.
    let tidy = github
        .open_issue(BOB, "Tidy docs", "Just tidy the docs.", &[])
        .await;
    let crash = github
        .open_issue(
            ALICE,
            "Fix crash",
            "It crashes on start.",
            &["priority:high"],
        )
        .await;
    eventually(PATIENCE, || async {
        let queued = task_of(&scope, tidy).await?.phase() == Phase::Queued
            && task_of(&scope, crash).await?.phase() == Phase::Queued;
        let labelled = github
            .labels(tidy)
            .await
            .contains(&"ready:work".to_string());
        (queued && labelled).then_some(())
    })
    .await;

    // The agent opens a pull request from its branch: the issue is in review.
    let branch = task.spec.branch.clone().unwrap();
    assert!(branch.contains(&login.to_string()), "{branch}");
    let pr = github
        .open_pull_request(&branch, &format!("Fixes #{login}"))
        .await;
    until_labelled(&github, login, "status:pr-open").await;

    // The merge completes the task, closes the issue, and the next issue starts at once.
    let merged = Instant::now();
    github.merge(pr).await;
    let (next, pod_at) = eventually(PATIENCE, || async {
        let task = task_of(&scope, crash).await?;
        live_pod_of(&scope, &task.name_any())
            .await
            .map(|_| (merged.elapsed(), Instant::now()))
    })
    .await;
    let merge_delivered = relay
        .seen
        .lock()
        .unwrap()
        .iter()
        .find(|d| {
            let body: serde_json::Value = serde_json::from_slice(&d.body).unwrap_or_default();
            body["action"] == "closed" && body["pull_request"]["merged"] == true
        })
        .map(|d| d.received)
        .expect("the merge was delivered");
    let operator_share = pod_at.duration_since(merge_delivered);
    println!(
        "merge -> next agent pod: {} ms (merge delivered -> pod: {} ms)",
        next.as_millis(),
        operator_share.as_millis()
    );
    // Alone: ~0.3 s from the merge, ~0.27 s from its delivery (this loop polls every 100 ms).
    // With the whole suite on two cores the emulator takes up to ~1.1 s to deliver and the
    // operator 0.65-1.7 s. The bounds keep CI from flaking; the demo and the issue's closing
    // note carry the measurements.
    assert!(
        operator_share < Duration::from_secs(3),
        "the next agent started {operator_share:?} after the merge was delivered"
    );
    assert!(
        next < Duration::from_secs(5),
        "the next agent started {next:?} after the merge"
    );
    eventually(PATIENCE, || async {
        let done = scope.task(&task.name_any()).await;
        let status = done.status?;
        (status.phase == Phase::Succeeded && status.reason.as_deref() == Some("PullRequestMerged"))
            .then_some(())
    })
    .await;
    eventually(PATIENCE, || async {
        let closed = github.issue_state(login).await == "closed";
        let cleared = github
            .labels(login)
            .await
            .iter()
            .all(|l| !l.starts_with("status:") && l != "ready:work");
        let recorded = github
            .status_comments(login)
            .await
            .first()?
            .contains(&format!("#{pr} was merged by @alice"));
        (closed && cleared && recorded).then_some(())
    })
    .await;
    assert_eq!(
        task_of(&scope, tidy).await.unwrap().phase(),
        Phase::Queued,
        "one slot: tidy still waits"
    );

    // Closing an issue cancels its agent; the freed slot goes to the last issue.
    github.close_issue(crash).await;
    let crash_task = task_of(&scope, crash).await.unwrap().name_any();
    eventually(PATIENCE, || async {
        let cancelled = scope.task(&crash_task).await.phase() == Phase::Cancelled;
        (cancelled && live_pod_of(&scope, &crash_task).await.is_none()).then_some(())
    })
    .await;
    eventually(PATIENCE, || async {
        (task_of(&scope, tidy).await?.phase() == Phase::Running).then_some(())
    })
    .await;

    // A pull request closed without merging fails the task; the issue waits for a person.
    let tidy_task = task_of(&scope, tidy).await.unwrap();
    let unmerged = github
        .open_pull_request(
            tidy_task.spec.branch.as_deref().unwrap(),
            &format!("Fixes #{tidy}"),
        )
        .await;
    github
        .call(
            ALICE,
            "PATCH",
            &format!("/repos/{REPOSITORY}/pulls/{unmerged}"),
            Some(json!({"state": "closed"})),
        )
        .await
        .unwrap();
    eventually(PATIENCE, || async {
        let failed = scope.task(&tidy_task.name_any()).await.status?;
        let released = !github
            .labels(tidy)
            .await
            .contains(&"ready:work".to_string());
        (failed.phase == Phase::Failed
            && failed.reason.as_deref() == Some("PullRequestClosed")
            && released)
            .then_some(())
    })
    .await;
    // The operator's own label removal comes back as a delivery: once it is taken in too,
    // still no new attempt.
    let before = relay.seen.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    if relay.seen.lock().unwrap().len() > before {
        settled(&scope, &relay, before).await;
    }
    assert_eq!(
        task_of(&scope, tidy).await.unwrap().name_any(),
        tidy_task.name_any(),
        "no automatic restart"
    );
    let tidy_tasks = || async {
        scope
            .api::<AgentTask>()
            .list(&ListParams::default().labels(&format!("raibid.dev/issue={tidy}")))
            .await
            .unwrap()
            .items
            .len()
    };
    github
        .post(
            BOB,
            &format!("/repos/{REPOSITORY}/issues/{tidy}/labels"),
            json!({"labels": ["ready:work"]}),
        )
        .await;
    eventually(PATIENCE, || async {
        (tidy_tasks().await == 2).then_some(())
    })
    .await;
    // The old closed pull request must not fail the new attempt.
    let retried = task_of(&scope, tidy).await.unwrap();
    eventually(PATIENCE, || async {
        (scope.task(&retried.name_any()).await.phase() == Phase::Running).then_some(())
    })
    .await;
    let before = relay.seen.lock().unwrap().len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    if relay.seen.lock().unwrap().len() > before {
        settled(&scope, &relay, before).await;
    }
    assert_eq!(
        scope.task(&retried.name_any()).await.phase(),
        Phase::Running,
        "the new attempt keeps running"
    );

    // Exactly one status comment per issue and one task per issue (two for the restarted one).
    assert_eq!(github.status_comments(tidy).await.len(), 1);
    for issue in [login, crash] {
        assert_eq!(
            github.status_comments(issue).await.len(),
            1,
            "issue {issue}"
        );
        let tasks = scope
            .api::<AgentTask>()
            .list(&ListParams::default().labels(&format!("raibid.dev/issue={issue}")))
            .await
            .unwrap();
        assert_eq!(tasks.items.len(), 1, "issue {issue}");
    }
}

#[tokio::test]
async fn five_issues_two_slots_priority_order_and_a_restart_that_missed_a_webhook() {
    let scope = Scope::new("github-order").await;
    scope.add_dgx_nodes(3).await;
    // Paused while the issues arrive, so that all five compete for the two slots at once.
    let World {
        github, operator, ..
    } = setup(
        &scope,
        json!({"maxConcurrent": 2, "paused": true}),
        Auth::Token,
    )
    .await;

    let mut numbers = std::collections::BTreeMap::new();
    for (name, labels) in [
        ("none", vec![]),
        ("low", vec!["priority:low"]),
        ("critical", vec!["priority:critical"]),
        ("high", vec!["priority:high"]),
        ("medium", vec!["priority:medium"]),
    ] {
        numbers.insert(
            name,
            github
                .open_issue(ALICE, &format!("Work {name}"), "Do it.", &labels)
                .await,
        );
    }
    let phase = |name: &'static str| {
        let scope = &scope;
        let number = numbers[name];
        async move { task_of(scope, number).await.map(|t| t.phase()) }
    };
    eventually(PATIENCE, || async {
        let mut queued = 0;
        for name in ["none", "low", "critical", "high", "medium"] {
            queued += usize::from(phase(name).await? == Phase::Queued);
        }
        (queued == 5).then_some(())
    })
    .await;
    let queues = scope.api::<IssueQueue>();
    queues
        .patch(
            QUEUE,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"paused": false}})),
        )
        .await
        .unwrap();
    eventually(PATIENCE, || async {
        let running =
            [phase("critical").await?, phase("high").await?] == [Phase::Running, Phase::Running];
        let waiting = [
            phase("medium").await?,
            phase("none").await?,
            phase("low").await?,
        ] == [Phase::Queued; 3];
        (running && waiting).then_some(())
    })
    .await;
    let expected_next = vec![numbers["medium"], numbers["none"], numbers["low"]];
    eventually(PATIENCE, || async {
        let status = queues.get(QUEUE).await.ok()?.status?;
        (status.next_candidates == expected_next
            && status.counts.running == 2
            && status.counts.ready == 3)
            .then_some(())
    })
    .await;

    // The operator dies; while it is down the critical issue is closed and the high one's pull
    // request merges; GitHub's webhooks find no one (GitHub does not retry). The restarted
    // operator's first sync repairs both.
    let high_task = task_of(&scope, numbers["high"]).await.unwrap();
    let high_pr = github
        .open_pull_request(
            high_task.spec.branch.as_deref().unwrap(),
            &format!("Fixes #{}", numbers["high"]),
        )
        .await;
    eventually(PATIENCE, || async {
        github
            .labels(numbers["high"])
            .await
            .contains(&"status:pr-open".to_string())
            .then_some(())
    })
    .await;
    operator.kill().await;
    github.close_issue(numbers["critical"]).await;
    github.merge(high_pr).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let port = free_port();
    let _operator = Operator::start(&scope.namespace, &format!("127.0.0.1:{port}")).await;

    eventually(PATIENCE, || async {
        let cancelled = phase("critical").await? == Phase::Cancelled;
        let merged = phase("high").await? == Phase::Succeeded;
        let next_run =
            phase("medium").await? == Phase::Running && phase("none").await? == Phase::Running;
        let last_waits = phase("low").await? == Phase::Queued;
        (cancelled && merged && next_run && last_waits).then_some(())
    })
    .await;
    eventually(PATIENCE, || async {
        (github.issue_state(numbers["high"]).await == "closed").then_some(())
    })
    .await;
    for name in ["none", "low", "critical", "high", "medium"] {
        let number = numbers[name];
        let tasks = scope
            .api::<AgentTask>()
            .list(&ListParams::default().labels(&format!("raibid.dev/issue={number}")))
            .await
            .unwrap();
        assert_eq!(
            tasks.items.len(),
            1,
            "{name}: one task per issue across the restart"
        );
        assert_eq!(
            github.status_comments(number).await.len(),
            1,
            "{name}: one status comment across the restart"
        );
    }
}

#[tokio::test]
async fn an_issue_waiting_too_long_reminds_its_author_once_per_period() {
    let scope = Scope::new("github-remind").await;
    let World {
        github,
        operator: _operator,
        ..
    } = setup(
        &scope,
        json!({"answerReminderAfter": "2s", "resyncInterval": "1s"}),
        Auth::Token,
    )
    .await;
    let issue = github
        .open_issue(
            ALICE,
            "Add login",
            "## Clarifying Questions\n1. Which provider?\n",
            &[],
        )
        .await;
    let queues = scope.api::<IssueQueue>();
    let reminded_at = || async {
        let status = queues.get(QUEUE).await.ok()?.status?;
        status.reminders.get(&issue.to_string()).map(|t| t.0)
    };
    let first = eventually(PATIENCE, || async {
        let comment = github.status_comments(issue).await.into_iter().next()?;
        let at = reminded_at().await?;
        comment.contains("@alice, a reminder").then_some(at)
    })
    .await;
    assert_eq!(
        github.status_comments(issue).await.len(),
        1,
        "the reminder edits the one status comment"
    );
    // Syncs run every second; the next reminder comes a whole period later, not at each.
    let second = eventually(PATIENCE, || async {
        reminded_at().await.filter(|at| *at != first)
    })
    .await;
    let gap = first.duration_until(second);
    assert!(
        gap >= jiff::SignedDuration::from_secs(2),
        "reminded again after {gap:?}, within the 2s period"
    );
    // Answered: the reminder goes away with the wait.
    github.comment(ALICE, issue, "A1: GitHub").await;
    eventually(PATIENCE, || async {
        let comment = github.status_comments(issue).await.into_iter().next()?;
        let gone = reminded_at().await.is_none();
        (!comment.contains("a reminder") && gone).then_some(())
    })
    .await;
}

#[tokio::test]
async fn every_delivery_again_twice_and_shuffled_changes_nothing() {
    let scope = Scope::new("github-replay").await;
    scope.add_dgx_nodes(1).await;
    let World {
        github,
        operator: _operator,
        relay,
    } = setup(&scope, json!({"maxConcurrent": 1}), Auth::Token).await;

    // A short history: questions answered, an agent, a pull request, a merge, a second issue.
    let first = github
        .open_issue(ALICE, "First", "## Clarifying Questions\n1. Which?\n", &[])
        .await;
    github.comment(ALICE, first, "A1: this").await;
    let task = eventually(PATIENCE, || async {
        let task = task_of(&scope, first).await?;
        (task.phase() == Phase::Running).then_some(task)
    })
    .await;
    // Opened once the first runs, so it waits for the one slot.
    let second = github
        .open_issue(ALICE, "Second", "Plain work.", &["priority:low"])
        .await;
    let pr = github
        .open_pull_request(
            task.spec.branch.as_deref().unwrap(),
            &format!("Fixes #{first}"),
        )
        .await;
    until_labelled(&github, first, "status:pr-open").await;
    github.merge(pr).await;
    eventually(PATIENCE, || async {
        let second_runs = task_of(&scope, second).await?.phase() == Phase::Running;
        (second_runs && github.issue_state(first).await == "closed").then_some(())
    })
    .await;

    let snapshot = || async {
        let mut state = Vec::new();
        for issue in [first, second] {
            let tasks = scope
                .api::<AgentTask>()
                .list(&ListParams::default().labels(&format!("raibid.dev/issue={issue}")))
                .await
                .unwrap()
                .items;
            let phases: Vec<(String, Phase)> =
                tasks.iter().map(|t| (t.name_any(), t.phase())).collect();
            let mut labels = github.labels(issue).await;
            labels.sort();
            let comments = github.status_comments(issue).await;
            state.push((
                issue,
                phases,
                labels,
                github.issue_state(issue).await,
                comments,
            ));
        }
        state
    };
    let before = snapshot().await;

    // Every delivery again, twice, in another order (the relay kept them all).
    let mut deliveries = relay.seen.lock().unwrap().clone();
    assert!(
        deliveries.len() >= 8,
        "only {} deliveries seen",
        deliveries.len()
    );
    deliveries.reverse();
    let twice: Vec<_> = deliveries
        .iter()
        .cloned()
        .chain(deliveries.iter().step_by(2).cloned())
        .chain(deliveries.iter().skip(1).step_by(2).cloned())
        .collect();
    let target = relay.target.clone();
    for delivery in &twice {
        let status = send(&target, delivery).await;
        assert!(
            status == 200 || status == 202,
            "a replayed delivery got {status}"
        );
    }
    // Let every replayed record be processed (the replays went around the relay).
    settled(&scope, &relay, 0).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        snapshot().await,
        before,
        "replaying deliveries changed the outcome"
    );
}

#[tokio::test]
async fn an_app_queue_gives_each_agent_a_token_for_its_repository_alone_until_the_task_ends() {
    let scope = Scope::new("github-app").await;
    scope.add_dgx_nodes(1).await;
    let World {
        github,
        operator: _operator,
        ..
    } = setup(&scope, json!({"maxConcurrent": 1}), Auth::App).await;

    let issue = github
        .open_issue(ALICE, "Add search", "Add a search box.", &[])
        .await;
    let task = eventually(PATIENCE, || async {
        let task = task_of(&scope, issue).await?;
        (task.phase() == Phase::Running).then_some(task)
    })
    .await;
    let secret_name = format!("{}-github-token", task.name_any());

    // The pod reads its token from a Secret the task owns.
    let pod = live_pod_of(&scope, &task.name_any())
        .await
        .expect("the agent pod");
    let env = pod.spec.unwrap().containers[0].env.clone().unwrap();
    let source = env
        .iter()
        .find(|e| e.name == "GITHUB_TOKEN")
        .and_then(|e| e.value_from.clone()?.secret_key_ref)
        .map(|s| s.name);
    assert_eq!(source.as_deref(), Some(secret_name.as_str()));
    let secret = scope.api::<Secret>().get(&secret_name).await.unwrap();
    let owner = &secret.metadata.owner_references.clone().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("AgentTask", task.metadata.uid.as_deref().unwrap())
    );
    let token = String::from_utf8(secret.data.unwrap()["token"].0.clone()).unwrap();
    assert!(token.starts_with("ghs_"), "an installation token");

    // GitHub issued it for the one repository, with exactly the three write permissions.
    let issued = github
        .get(ALICE, "/_emulate/installation-tokens")
        .await
        .unwrap();
    let repository_id = github
        .get(ALICE, &format!("/repos/{REPOSITORY}"))
        .await
        .unwrap()["id"]
        .clone();
    let scoped: Vec<&serde_json::Value> = issued["installation_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["repository_selection"] == "selected")
        .collect();
    assert_eq!(scoped.len(), 1, "one token for one task: {issued}");
    assert_eq!(scoped[0]["repository_ids"], json!([repository_id]));
    assert_eq!(
        scoped[0]["permissions"],
        json!({"contents": "write", "pull_requests": "write", "issues": "write"})
    );

    // With it the agent cannot touch another repository of the same owner…
    let refused = github
        .open_pull_request_as(&token, OTHER_REPOSITORY, "raibid/escape", "nope")
        .await;
    let refusal = refused.expect_err("the token reached another repository");
    assert!(
        refusal.contains(&format!("{OTHER_REPOSITORY}/git/refs: 403")),
        "refused for another reason: {refusal}"
    );
    // …and does its own work: branch, commit, pull request.
    let branch = task.spec.branch.clone().unwrap();
    let pr = github
        .open_pull_request_as(&token, REPOSITORY, &branch, &format!("Closes #{issue}"))
        .await
        .expect("the agent's token opens its pull request");
    until_labelled(&github, issue, "status:pr-open").await;

    // The merge ends the task, and its credential with it.
    github.merge(pr).await;
    eventually(PATIENCE, || async {
        let status = scope.task(&task.name_any()).await.status?;
        let gone = scope
            .api::<Secret>()
            .get_opt(&secret_name)
            .await
            .unwrap()
            .is_none();
        (status.phase == Phase::Succeeded && gone).then_some(())
    })
    .await;
    eventually(PATIENCE, || async {
        (github.issue_state(issue).await == "closed").then_some(())
    })
    .await;
    assert_eq!(
        github.status_comments(issue).await.len(),
        1,
        "one status comment, written as the App"
    );
}

#[tokio::test]
async fn a_draft_gets_one_enrichment_run_and_then_its_work() {
    let scope = Scope::new("github-draft").await;
    scope.add_dgx_nodes(1).await;
    let enrich = QueueProfile {
        name: "enrich".into(),
        match_rules: None,
        agent: scope.profile(Some("succeed"), "2s"),
    };
    let World {
        github,
        operator: _operator,
        ..
    } = setup(
        &scope,
        json!({
            "maxConcurrent": 1,
            "enrichmentProfile": "enrich",
            "profiles": [
                serde_json::to_value(&enrich).unwrap(),
                serde_json::to_value(QueueProfile {
                    name: "agent".into(),
                    match_rules: None,
                    agent: scope.profile(None, "1s"),
                })
                .unwrap(),
            ],
        }),
        Auth::Token,
    )
    .await;

    let idea = github
        .open_issue(ALICE, "Idea: dark mode", "Rough idea.", &["draft"])
        .await;
    let enrichment = eventually(PATIENCE, || async {
        let task = task_of(&scope, idea).await?;
        (task.phase() == Phase::Running).then_some(task)
    })
    .await;
    assert_eq!(enrichment.spec.profile_ref.as_deref(), Some("enrich"));
    assert_eq!(enrichment.labels()["raibid.dev/run"], "enrichment");
    let prompt = enrichment.spec.prompt.clone().unwrap();
    assert!(
        prompt.contains("remove the `draft` label") && prompt.contains("Rough idea."),
        "{prompt}"
    );

    // The enrichment agent shapes the issue: a question, and no more draft.
    github
        .shape_draft(
            idea,
            "Offer a dark theme.\n\n## Clarifying Questions\n1. Dark by default?\n",
        )
        .await;
    eventually(PATIENCE, || async {
        let done = scope.task(&enrichment.name_any()).await.phase() == Phase::Succeeded;
        let waiting = github
            .labels(idea)
            .await
            .contains(&"waiting:answers".to_string());
        (done && waiting).then_some(())
    })
    .await;
    assert_eq!(
        scope
            .api::<AgentTask>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1,
        "one enrichment run, and no work before the answer"
    );

    // The answer releases the issue's work: a second task with the queue's agent profile.
    github.comment(ALICE, idea, "A1: yes").await;
    let work = eventually(PATIENCE, || async {
        let task = task_of(&scope, idea).await?;
        (task.name_any() != enrichment.name_any() && task.phase() == Phase::Running).then_some(task)
    })
    .await;
    assert_eq!(work.spec.profile_ref.as_deref(), Some("agent"));
    assert!(!work.labels().contains_key("raibid.dev/run"));
    assert!(work.spec.prompt.unwrap().contains("A1: yes"));
    assert_eq!(github.status_comments(idea).await.len(), 1);
}
