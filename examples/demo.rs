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

use github_emulator::{ALICE, BOB, BOT, Emulator, REPOSITORY, free_port};
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, PostParams},
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
        expected: "Draft",
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
            "profiles": [{"name": "agent", "image": "ghcr.io/raibid-labs/agent:latest"}],
            "defaultProfile": "agent",
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
    github
        .add_webhook(
            &format!("http://127.0.0.1:{port}/webhooks/github"),
            "demo-secret",
        )
        .await;
    demo.say(
        "operator watching namespace demo; webhook points at it; maxConcurrent 2, two DGX Sparks",
    );

    let tasks: Api<AgentTask> = Api::namespaced(client.clone(), NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let mut numbers: BTreeMap<&str, u64> = BTreeMap::new();
    let mut webhook_to_task: Vec<Duration> = Vec::new();
    let mut webhook_to_pod: Vec<Duration> = Vec::new();
    // When the GitHub action happened that made an issue's task due (opened, answered, its
    // dependency merged) and its pod due (the same, or the merge that freed a slot).
    let mut trigger: BTreeMap<u64, Instant> = BTreeMap::new();
    let mut pod_trigger: BTreeMap<u64, Instant> = BTreeMap::new();
    for seeded in &ISSUES {
        let number = github
            .open_issue(ALICE, seeded.title, seeded.body, seeded.labels)
            .await;
        trigger.insert(number, Instant::now());
        pod_trigger.insert(number, Instant::now());
        numbers.insert(seeded.key, number);
        demo.say(format!(
            "opened #{number} {:?} {:?}",
            seeded.title, seeded.labels
        ));
    }

    let mut answered = false;
    let mut seen_task: BTreeSet<u64> = BTreeSet::new();
    let mut seen_pod: BTreeSet<u64> = BTreeSet::new();
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
            trigger.insert(numbers["login"], Instant::now());
            pod_trigger.insert(numbers["login"], Instant::now());
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
            if seen_task.insert(issue) {
                if let Some(at) = trigger.get(&issue) {
                    webhook_to_task.push(at.elapsed());
                }
            }
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
            if phase == Phase::Running && !seen_pod.contains(&issue) {
                let has_pod = !pods
                    .list(&ListParams::default().labels(&format!("raibid.dev/task={name}")))
                    .await
                    .unwrap()
                    .items
                    .is_empty();
                if has_pod {
                    if let Some(at) = pod_trigger.get(&issue) {
                        webhook_to_pod.push(at.elapsed());
                    }
                    seen_pod.insert(issue);
                }
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
                // The merge frees a slot and may unblock dependents: what starts next counts
                // from here.
                let now = Instant::now();
                for number in numbers.values() {
                    if !seen_task.contains(number) {
                        trigger.insert(*number, now);
                    }
                    if !seen_pod.contains(number) {
                        pod_trigger.insert(*number, now);
                    }
                }
            }
        }
        let mut all_done = true;
        for key in &done_keys {
            all_done &= github.issue_state(numbers[key]).await == "closed";
        }
        if all_done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Summary.
    let mut failed = false;
    let mut rows = Vec::new();
    println!(
        "\n{:<6} {:<28} {:<11} {:<11} {:>6} {:>10} {:>8}",
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
            "{:<6} {:<28} {:<11} {:<11} {:>6} {:>10} {:>8}",
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
    let latency = |samples: &mut Vec<Duration>| {
        samples.sort();
        let pick = |q: f64| {
            samples
                .get(((samples.len() as f64 - 1.0) * q).round() as usize)
                .map(|d| d.as_millis())
                .unwrap_or(0)
        };
        json!({"p50": pick(0.5), "p99": pick(0.99), "samples": samples.len()})
    };
    let summary = json!({
        "issues": rows,
        "latencyMs": {"webhookToTask": latency(&mut webhook_to_task), "webhookToPod": latency(&mut webhook_to_pod)},
    });
    println!(
        "\nlatency from the GitHub action that made an issue's task (or pod) due to the object being seen\n(polled every 100 ms, so up to ~100 ms high): webhook->task {}, webhook->pod {}",
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
