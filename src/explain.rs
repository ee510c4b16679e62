//! `raibid-operator explain`: ask the rules about an issue, a queue or a pull request,
//! offline, from GitHub REST JSON. One JSON object out; malformed input is an error that says
//! what is wrong.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    crd::IssueQueue,
    github::payload::{CommentPayload, IssuePayload, PullRequestPayload},
    issue::{Evaluation, Rules, admission_order, evaluate},
};

/// Why `explain` could not answer; the binary prints it on one line and exits 2.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not the expected JSON: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
    #[error("{path} is not an IssueQueue manifest: {source}")]
    Queue {
        path: String,
        source: serde_yaml::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Debug, Deserialize)]
struct IssueInput {
    issue: IssuePayload,
    #[serde(default)]
    comments: Vec<CommentPayload>,
    #[serde(default)]
    closed_issues: Vec<u64>,
}

#[derive(Debug, Deserialize)]
struct QueueEntry {
    issue: IssuePayload,
    #[serde(default)]
    comments: Vec<CommentPayload>,
}

#[derive(Debug, Deserialize)]
struct QueueInput {
    issues: Vec<QueueEntry>,
    #[serde(default)]
    closed_issues: Vec<u64>,
}

#[derive(Debug, Deserialize)]
struct PullRequestInput {
    pull_request: PullRequestPayload,
}

/// Reads an `IssueQueue` manifest (YAML or JSON) for its overrides.
pub fn read_queue(path: &str, text: &str) -> Result<IssueQueue, ExplainError> {
    serde_yaml::from_str(text).map_err(|source| ExplainError::Queue {
        path: path.into(),
        source,
    })
}

fn rules_for(queue: Option<&IssueQueue>, repository: Option<String>) -> Rules {
    match queue {
        Some(queue) => Rules::from_queue(&queue.spec),
        None => Rules::defaults(repository.as_deref().unwrap_or_default()),
    }
}

fn evaluate_entry(
    issue: &IssuePayload,
    comments: &[CommentPayload],
    closed: &BTreeSet<u64>,
    rules: &Rules,
) -> Evaluation {
    let comments: Vec<_> = comments.iter().map(CommentPayload::to_comment).collect();
    // Only this repository's closed issues are known offline: other repositories' count as open.
    evaluate(&issue.to_issue(), &comments, rules, |d| {
        d.repository.is_none() && closed.contains(&d.number)
    })
}

/// `explain issue`: the state of one issue and why.
pub fn explain_issue(
    path: &str,
    input: &str,
    queue: Option<&IssueQueue>,
) -> Result<Value, ExplainError> {
    let input: IssueInput = serde_json::from_str(input).map_err(|source| ExplainError::Json {
        path: path.into(),
        source,
    })?;
    if input.issue.is_pull_request() {
        return Err(ExplainError::Invalid {
            path: path.into(),
            message: "the issue is a pull request; use `explain pr`".into(),
        });
    }
    let rules = rules_for(queue, input.issue.repository());
    let closed: BTreeSet<u64> = input.closed_issues.into_iter().collect();
    let evaluation = evaluate_entry(&input.issue, &input.comments, &closed, &rules);
    Ok(serde_json::to_value(evaluation).unwrap_or(Value::Null))
}

/// `explain queue`: the order in which the ready issues would be started.
pub fn explain_queue(
    path: &str,
    input: &str,
    queue: Option<&IssueQueue>,
) -> Result<Value, ExplainError> {
    let input: QueueInput = serde_json::from_str(input).map_err(|source| ExplainError::Json {
        path: path.into(),
        source,
    })?;
    let repository = input.issues.iter().find_map(|e| e.issue.repository());
    let rules = rules_for(queue, repository);
    let closed: BTreeSet<u64> = input.closed_issues.into_iter().collect();
    let entries: Vec<&QueueEntry> = input
        .issues
        .iter()
        .filter(|e| !e.issue.is_pull_request())
        .collect();
    let issues: Vec<_> = entries.iter().map(|e| e.issue.to_issue()).collect();
    let evaluations: Vec<Evaluation> = entries
        .iter()
        .map(|e| evaluate_entry(&e.issue, &e.comments, &closed, &rules))
        .collect();
    let order = admission_order(issues.iter().zip(evaluations.iter()), &rules);
    Ok(json!({ "order": order, "issues": evaluations }))
}

/// `explain pr`: the issues a pull request links.
pub fn explain_pr(path: &str, input: &str) -> Result<Value, ExplainError> {
    let input: PullRequestInput =
        serde_json::from_str(input).map_err(|source| ExplainError::Json {
            path: path.into(),
            source,
        })?;
    let pr = &input.pull_request;
    let repository = pr.repository().ok_or_else(|| ExplainError::Invalid {
        path: path.into(),
        message: "pull_request.base.repo.full_name is missing".into(),
    })?;
    Ok(json!({
        "number": pr.number,
        "repository": repository,
        "issues": pr.linked_issues(),
        "merged": pr.is_merged(),
        "headBranch": pr.head.branch,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue_json(number: u64, body: &str, labels: &[&str], created: &str) -> Value {
        json!({
            "number": number,
            "title": format!("Issue {number}"),
            "body": body,
            "state": "open",
            "labels": labels.iter().map(|l| json!({"name": l})).collect::<Vec<_>>(),
            "user": {"login": "alice"},
            "created_at": created,
            "assignees": [],
            "repository_url": "https://api.github.com/repos/acme/web",
        })
    }

    #[test]
    fn issue_with_an_unanswered_question() {
        let input = json!({
            "issue": issue_json(7, "## Clarifying Questions\n1. A?\n2. B?\n\nDepends on #3", &["priority:high"], "2026-01-01T00:00:00Z"),
            "comments": [
                {"id": 1, "body": "A1: yes", "user": {"login": "alice"}, "author_association": "NONE"},
                {"id": 2, "body": "A2: no", "user": {"login": "mallory"}, "author_association": "NONE"},
            ],
            "closed_issues": [3],
        });
        let out = explain_issue("f.json", &input.to_string(), None).unwrap();
        assert_eq!(out["state"], "WaitingForAnswers");
        assert_eq!(out["questions"], json!([1, 2]));
        assert_eq!(out["unanswered"], json!([2]));
        assert_eq!(out["dependencies"], json!([3]));
        assert_eq!(out["priority"], "high");
        assert_eq!(out["issueId"], "ISSUE-7");
        assert!(out["why"].as_str().unwrap().contains("question 2"));
    }

    #[test]
    fn closed_and_blocked_issues() {
        let mut closed = issue_json(1, "", &[], "2026-01-01T00:00:00Z");
        closed["state"] = json!("closed");
        let out = explain_issue("f", &json!({"issue": closed}).to_string(), None).unwrap();
        assert_eq!(out["state"], "Closed");
        let blocked = json!({"issue": issue_json(2, "Depends on #1", &[], "2026-01-01T00:00:00Z")});
        assert_eq!(
            explain_issue("f", &blocked.to_string(), None).unwrap()["state"],
            "Blocked"
        );
    }

    #[test]
    fn queue_order_follows_priority_then_age() {
        let input = json!({
            "issues": [
                {"issue": issue_json(1, "", &[], "2026-01-01T00:00:00Z")},
                {"issue": issue_json(2, "", &["priority:critical"], "2026-01-03T00:00:00Z")},
                {"issue": issue_json(3, "", &["priority:high"], "2026-01-02T00:00:00Z")},
                {"issue": issue_json(4, "Depends on #1", &["priority:critical"], "2026-01-01T00:00:00Z")},
                {"issue": issue_json(5, "", &["priority:low"], "2025-01-01T00:00:00Z")},
            ],
        });
        let out = explain_queue("f", &input.to_string(), None).unwrap();
        assert_eq!(out["order"], json!([2, 3, 1, 5]));
    }

    #[test]
    fn queue_overrides_apply() {
        let manifest = r#"
apiVersion: raibid.dev/v1alpha1
kind: IssueQueue
metadata: {name: web}
spec:
  repository: acme/web
  github: {tokenSecretRef: {name: gh, key: token}}
  resyncOnly: true
  questionHeadings: [Fragen]
  priorities: {critical: P0, high: P1, medium: P2, low: P4}
  profiles:
  - {name: docs, image: "agent:1", match: {labels: [documentation]}}
  - {name: general, image: "agent:1"}
  defaultProfile: general
"#;
        let queue = read_queue("q.yaml", manifest).unwrap();
        let input = json!({"issue": issue_json(9, "## Fragen\n1. Wer?\n", &["P0", "documentation"], "2026-01-01T00:00:00Z")});
        let out = explain_issue("f", &input.to_string(), Some(&queue)).unwrap();
        assert_eq!(out["state"], "WaitingForAnswers");
        assert_eq!(out["priority"], "critical");
        assert_eq!(out["agentProfile"], "docs");
    }

    #[test]
    fn pull_request_links() {
        let input = json!({"pull_request": {
            "number": 12, "title": "Fix login", "body": "Fixes #7 and closes acme/web#8. Refs #9",
            "merged": true, "merged_at": "2026-01-01T00:00:00Z",
            "head": {"ref": "raibid/issue-7"}, "base": {"ref": "main", "repo": {"full_name": "acme/web"}},
        }});
        let out = explain_pr("f", &input.to_string()).unwrap();
        assert_eq!(out["issues"], json!([7, 8]));
        assert_eq!(out["merged"], true);
    }

    #[test]
    fn malformed_input_says_what_is_wrong() {
        let error = explain_issue("in.json", "{\"issue\": {\"title\": 3}}", None).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("in.json is not the expected JSON"),
            "{error}"
        );
        let error = explain_pr(
            "pr.json",
            &json!({"pull_request": {"number": 1, "head": {"ref": "x"}, "base": {"ref": "main"}}})
                .to_string(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("base.repo.full_name"), "{error}");
        assert!(read_queue("q.yaml", "kind: [").is_err());
    }
}
