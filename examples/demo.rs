//! The GitHub half of `./scripts/demo`: a GitHub emulator with a seeded repository, an
//! IssueQueue, and the operator, while this program plays the people (answers, merges) and the
//! agents (pull requests). Prints a timeline and a summary; `--summary-json PATH` writes it.
//! Exits non-zero when an issue ends in another state than expected.

// Shared with the integration tests; the demo uses part of it.
#[allow(dead_code)]
#[path = "../tests/cluster/github_emulator.rs"]
mod github_emulator;

mod support {
    use std::{future::Future, time::Duration};

    pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "condition not reached within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use futures::StreamExt;
use github_emulator::{ALICE, BOB, BOT, Delivery, Emulator, REPOSITORY, Relay, free_port};
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use raibid_operator::crd::{AgentTask, IssueQueue, Phase};
use serde_json::json;

const NAMESPACE: &str = "demo";

struct Demo {
    started: Instant,
}

impl Demo {
    fn say(&self, text: impl AsRef<str>) {
        println!(
            "{:>7.2}s  {}",
            self.started.elapsed().as_secs_f64(),
            text.as_ref()
        );
    }
}

struct Seeded {
    key: &'static str,
    title: &'static str,
    body: &'static str,
    labels: &'static [&'static str],
    expected: &'static str,
}

const ISSUES: [Seeded; 6] = [
    Seeded {
        key: "login",
        title: "Add OAuth login",
        body: "Users sign in with GitHub.\n\n## Clarifying Questions\n1. Which provider?\n2. Which scopes?\n",
        labels: &[],
        expected: "Done",
    },
    Seeded {
        key: "crash",
        title: "Fix crash on startup",
        body: "The server panics when the config file is empty.",
        labels: &["priority:critical"],
        expected: "Done",
    },
    Seeded {
        key: "docs",
        title: "Document the config flags",
        body: "Every flag in the README.",
        labels: &["priority:low"],
        expected: "Done",
    },
    Seeded {
        key: "migrate",
        title: "Migrate the session store",
        body: "Move sessions to the new schema.\n\nDepends on #2",
        labels: &[],
        expected: "Done",
    },
    Seeded {
        key: "idea",
        title: "Idea: dark mode",
        body: "Rough idea, needs shaping.",
        labels: &["draft"],
        // Its enrichment run adds a question nobody answers here.
        expected: "WaitingForAnswers",
    },
    Seeded {
        key: "deps",
        title: "Upgrade dependencies",
        body: "Bump the HTTP stack.",
        labels: &["priority:high"],
        expected: "Done",
    },
];

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let value_of = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let operator_bin = value_of("--operator").expect("--operator PATH");
    let summary_path = value_of("--summary-json");
    let work = std::env::temp_dir().join(format!("raibid-demo-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let demo = Demo {
        started: Instant::now(),
    };
    let client = Client::try_default().await.expect("KUBECONFIG");

    let github = Emulator::start(&work).await;
    demo.say(format!(
        "GitHub emulator up at {} with repository {REPOSITORY}",
        github.url
    ));
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE,
        "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}))
    .unwrap();
    let _ = namespaces.create(&PostParams::default(), &ns).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    for (name, key, value) in [
        ("github-token", "token", BOT),
        ("github-webhook", "secret", "demo-secret"),
    ] {
        let secret: Secret =
            serde_json::from_value(json!({"metadata": {"name": name}, "stringData": {key: value}}))
                .unwrap();
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
    }
    let queue: IssueQueue = serde_json::from_value(json!({
        "apiVersion": "raibid.dev/v1alpha1", "kind": "IssueQueue", "metadata": {"name": "demo"},
        "spec": {
            "repository": REPOSITORY,
            "github": {"apiUrl": github.url, "tokenSecretRef": {"name": "github-token", "key": "token"}},
            "webhookSecretRefs": [{"name": "github-webhook", "key": "secret"}],
            "maxConcurrent": 2,
            "profiles": [
                {"name": "agent", "image": "ghcr.io/raibid-labs/agent:latest"},
                // Drafts are shaped by a short CPU-only run (the simulated pod succeeds).
                {"name": "enrich", "image": "ghcr.io/raibid-labs/agent:latest", "gpus": 0,
                 "nodeSelector": {}, "podLabels": {"sim.raibid.dev/outcome": "succeed"},
                 "podAnnotations": {"sim.raibid.dev/run-for": "3s"}},
            ],
            "defaultProfile": "agent",
            "enrichmentProfile": "enrich",
            "resyncInterval": "1m",
        },
    }))
    .unwrap();
    let queues: Api<IssueQueue> = Api::namespaced(client.clone(), NAMESPACE);
    queues.create(&PostParams::default(), &queue).await.unwrap();

    let port = free_port();
    let log = std::fs::File::create(work.join("operator-github.log")).unwrap();
    let _operator = tokio::process::Command::new(&operator_bin)
        .args([
            "run",
            "--namespace",
            NAMESPACE,
            "--http-addr",
            &format!("127.0.0.1:{port}"),
            "--retry-backoff",
            "2s",
        ])
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start the operator");
    support::eventually(Duration::from_secs(60), || async {
        let status = queues.get("demo").await.ok()?.status?;
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            .then_some(())
    })
    .await;
    // Deliveries pass through a relay that notes when each arrived; watches note when each
    // task and pod appeared. Latencies are measured between the two.
    let relay = Relay::start(format!("http://127.0.0.1:{port}/webhooks/github")).await;
    github.add_webhook(&relay.url, "demo-secret").await;
    let task_seen = first_seen::<AgentTask>(client.clone());
    let pod_seen = first_seen::<Pod>(client.clone());
    let slots_freed_without_webhook = runs_ended_by_themselves(client.clone());
    demo.say(
        "operator watching namespace demo; webhook points at it; maxConcurrent 2, two DGX Sparks",
    );

    let tasks: Api<AgentTask> = Api::namespaced(client.clone(), NAMESPACE);
    let mut numbers: BTreeMap<&str, u64> = BTreeMap::new();
    for seeded in &ISSUES {
        let number = github
            .open_issue(ALICE, seeded.title, seeded.body, seeded.labels)
            .await;
        numbers.insert(seeded.key, number);
        demo.say(format!(
            "opened #{number} {:?} {:?}",
            seeded.title, seeded.labels
        ));
    }

    let mut answered = false;
    // Drafts whose enrichment agent has done its edit, and whose enrichment run has ended.
    let mut shaped: BTreeSet<u64> = BTreeSet::new();
    let mut enriched: BTreeSet<u64> = BTreeSet::new();
    let mut pull_requests: BTreeMap<u64, (u64, Instant)> = BTreeMap::new();
    let mut merged: BTreeSet<u64> = BTreeSet::new();
    let mut last_phase: BTreeMap<String, Phase> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    let done_keys: Vec<&str> = ISSUES
        .iter()
        .filter(|i| i.expected == "Done")
        .map(|i| i.key)
        .collect();
    loop {
        if Instant::now() > deadline {
            demo.say("time is up");
            break;
        }
        if !answered && demo.started.elapsed() > Duration::from_secs(2) {
            github.comment(BOB, numbers["login"], "A1: GitHub").await;
            github
                .comment(ALICE, numbers["login"], "A1: GitHub\nA2: read:user")
                .await;
            answered = true;
            demo.say(format!(
                "alice answers both questions on #{} (bob, an outsider, answered one)",
                numbers["login"]
            ));
        }
        for task in tasks.list(&ListParams::default()).await.unwrap().items {
            let Some(issue) = task.spec.issue else {
                continue;
            };
            let name = task.name_any();
            let phase = task.phase();
            if last_phase.get(&name) != Some(&phase) {
                let node = task
                    .status
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_default();
                let reason = task
                    .status
                    .as_ref()
                    .and_then(|s| s.reason.clone())
                    .unwrap_or_default();
                demo.say(format!("#{issue} task {name}: {phase:?} {node} {reason}"));
                last_phase.insert(name.clone(), phase);
            }
            let enrichment =
                task.labels().get("raibid.dev/run").map(String::as_str) == Some("enrichment");
            if enrichment {
                if phase.is_terminal() {
                    enriched.insert(issue);
                }
                if phase == Phase::Running && shaped.insert(issue) {
                    github
                        .shape_draft(
                            issue,
                            "Offer a dark theme next to the light one.\n\n## Clarifying Questions\n1. Should dark be the default?\n",
                        )
                        .await;
                    demo.say(format!(
                        "enrichment agent of #{issue} rewrites it, adds a question, removes `draft`"
                    ));
                }
                continue;
            }
            if phase == Phase::Running && !pull_requests.contains_key(&issue) {
                let branch = task.spec.branch.clone().unwrap_or_default();
                let pr = github
                    .open_pull_request(&branch, &format!("Fixes #{issue}"))
                    .await;
                demo.say(format!("agent of #{issue} opens PR #{pr} from {branch}"));
                pull_requests.insert(issue, (pr, Instant::now()));
            }
        }
        for (issue, (pr, opened)) in pull_requests.clone() {
            if !merged.contains(&issue) && opened.elapsed() > Duration::from_millis(1500) {
                github.merge(pr).await;
                demo.say(format!("bob merges PR #{pr} (#{issue})"));
                merged.insert(issue);
            }
        }
        let mut all_done = true;
        for key in &done_keys {
            all_done &= github.issue_state(numbers[key]).await == "closed";
        }
        if all_done && enriched.contains(&numbers["idea"]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Summary.
    let mut failed = false;
    // The operator may still be recording the last states.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut rows = Vec::new();
    println!(
        "\n{:<6} {:<28} {:<18} {:<18} {:>6} {:>10} {:>8}",
        "ISSUE", "TITLE", "EXPECTED", "FINAL", "TASKS", "DUPLICATES", "COMMENTS"
    );
    for seeded in &ISSUES {
        let number = numbers[seeded.key];
        let comments = github.status_comments(number).await;
        let final_state = if github.issue_state(number).await == "closed" {
            "Done".to_string()
        } else {
            comments
                .first()
                .and_then(|c| raibid_operator::issue::status_comment::parse_marker(c))
                .map(|m| format!("{:?}", m.state))
                .unwrap_or_else(|| "Unknown".into())
        };
        let issue_tasks = tasks
            .list(&ListParams::default().labels(&format!("raibid.dev/issue={number}")))
            .await
            .unwrap()
            .items;
        let duplicates = issue_tasks.len().saturating_sub(1);
        failed |= final_state != seeded.expected || duplicates > 0 || comments.len() != 1;
        println!(
            "{:<6} {:<28} {:<18} {:<18} {:>6} {:>10} {:>8}",
            format!("#{number}"),
            seeded.title,
            seeded.expected,
            final_state,
            issue_tasks.len(),
            duplicates,
            comments.len()
        );
        rows.push(json!({"number": number, "expectedState": seeded.expected, "finalState": final_state,
            "agentTasks": issue_tasks.len(), "duplicateAgentTasks": duplicates, "statusComments": comments.len()}));
    }
    let deliveries = relay.seen.lock().unwrap().clone();
    let no_other_causes: [Instant; 0] = [];
    let mut webhook_to_task = latencies(&deliveries, &task_seen.lock().unwrap(), &no_other_causes);
    let mut webhook_to_pod = latencies(
        &deliveries,
        &pod_seen.lock().unwrap(),
        &slots_freed_without_webhook.lock().unwrap(),
    );
    let latency = |samples: &mut Vec<(u64, Duration)>| {
        samples.sort_by_key(|(_, d)| *d);
        let pick = |q: f64| {
            samples
                .get(((samples.len() as f64 - 1.0) * q).round() as usize)
                .map(|(_, d)| d.as_millis())
                .unwrap_or(0)
        };
        let each: serde_json::Map<String, serde_json::Value> = samples
            .iter()
            .map(|(issue, d)| (format!("#{issue}"), json!(d.as_millis())))
            .collect();
        json!({"p50": pick(0.5), "p99": pick(0.99), "samples": samples.len(), "byIssueMs": each})
    };
    let summary = json!({
        "issues": rows,
        "latencyMs": {"webhookToTask": latency(&mut webhook_to_task), "webhookToPod": latency(&mut webhook_to_pod)},
    });
    println!(
        "\nlatency from the emulator's delivery that made an issue's task (or pod) due to the object\nappearing in a watch of the API server (a handful of samples: p99 is the largest):\nwebhook->task {}\nwebhook->pod  {}",
        summary["latencyMs"]["webhookToTask"], summary["latencyMs"]["webhookToPod"]
    );
    if let Some(path) = summary_path {
        std::fs::write(&path, serde_json::to_string_pretty(&summary).unwrap()).unwrap();
        println!("summary written to {path}");
    }
    if failed {
        eprintln!("demo: an issue ended in another state than expected");
        return std::process::ExitCode::FAILURE;
    }
    println!("every issue ended as expected");
    std::process::ExitCode::SUCCESS
}

/// When each object of kind `K` in the demo namespace first appeared (a watch's first event
/// for it arrives within milliseconds of its creation), with its issue number.
fn first_seen<K>(client: Client) -> std::sync::Arc<std::sync::Mutex<Vec<(u64, Instant)>>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let seen: std::sync::Arc<std::sync::Mutex<Vec<(u64, Instant)>>> = Default::default();
    let keep = seen.clone();
    let api: Api<K> = Api::namespaced(client, NAMESPACE);
    tokio::spawn(async move {
        let mut known: BTreeSet<String> = BTreeSet::new();
        let mut objects = watcher(api, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Some(Ok(object)) = objects.next().await {
            let at = Instant::now();
            let issue = object
                .labels()
                .get("raibid.dev/issue")
                .and_then(|n| n.parse().ok());
            if let (Some(issue), true) = (issue, known.insert(object.name_any())) {
                keep.lock().unwrap().push((issue, at));
            }
        }
    });
    seen
}

/// When runs ended by themselves (an agent exiting, like the draft's enrichment run): the
/// slot each frees starts the next pod without any webhook.
fn runs_ended_by_themselves(client: Client) -> std::sync::Arc<std::sync::Mutex<Vec<Instant>>> {
    let ended: std::sync::Arc<std::sync::Mutex<Vec<Instant>>> = Default::default();
    let keep = ended.clone();
    let api: Api<AgentTask> = Api::namespaced(client, NAMESPACE);
    tokio::spawn(async move {
        let mut known: BTreeSet<String> = BTreeSet::new();
        let mut tasks = watcher(api, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Some(Ok(task)) = tasks.next().await {
            let Some(status) = task.status.as_ref() else {
                continue;
            };
            let by_webhook = status
                .reason
                .as_deref()
                .is_some_and(|r| r.starts_with("PullRequest"));
            if status.phase.is_terminal() && !by_webhook && known.insert(task.name_any()) {
                keep.lock().unwrap().push(Instant::now());
            }
        }
    });
    ended
}

/// For every object that appeared, the time since the delivery that made it due: the last
/// delivery before it that a person caused (not the operator's own labels and comments) and
/// that names its issue or merges a pull request (which frees a slot or a dependency). An
/// object that appeared after something other than a delivery (in `other_causes`) made it due
/// is no sample of webhook latency and is left out.
fn latencies(
    deliveries: &[Delivery],
    appeared: &[(u64, Instant)],
    other_causes: &[Instant],
) -> Vec<(u64, Duration)> {
    let triggers: Vec<(Instant, BTreeSet<u64>, bool)> = deliveries
        .iter()
        .filter_map(|d| {
            let body: serde_json::Value = serde_json::from_slice(&d.body).ok()?;
            if body["sender"]["login"] == "raibid-bot" {
                return None;
            }
            let mut issues = BTreeSet::new();
            issues.extend(body["issue"]["number"].as_u64());
            let merge = body["pull_request"]["merged"] == true && body["action"] == "closed";
            Some((d.received, issues, merge))
        })
        .collect();
    appeared
        .iter()
        .filter_map(|(issue, at)| {
            let trigger = triggers
                .iter()
                .filter(|(received, issues, merge)| {
                    received <= at && (*merge || issues.contains(issue))
                })
                .map(|(received, _, _)| *received)
                .max()?;
            let caused_otherwise = other_causes.iter().any(|c| trigger < *c && c <= at);
            (!caused_otherwise).then(|| (*issue, at.duration_since(trigger)))
        })
        .collect()
}
