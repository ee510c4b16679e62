//! Every `issues`, `issue_comment`, `pull_request` and `ping` example of the npm package
//! `@octokit/webhooks-examples@7.6.1` (real GitHub payloads) parses and maps to the right
//! internal event. `./scripts/test` downloads the package and sets RAIBID_WEBHOOK_EXAMPLES.

use raibid_operator::webhook::event::{WebhookEvent, parse};
use serde_json::{Value, json};

fn examples(event: &str) -> Vec<Value> {
    let path = std::env::var("RAIBID_WEBHOOK_EXAMPLES")
        .expect("RAIBID_WEBHOOK_EXAMPLES is unset: run ./scripts/test, which fetches @octokit/webhooks-examples");
    let index: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let entry = index
        .into_iter()
        .find(|e| e["name"] == event)
        .unwrap_or_else(|| panic!("no {event} entry"));
    let examples = entry["examples"].as_array().unwrap().clone();
    assert!(!examples.is_empty(), "no {event} examples");
    examples
}

fn parse_value(event: &str, payload: &Value) -> WebhookEvent {
    parse(event, &serde_json::to_vec(payload).unwrap())
        .unwrap_or_else(|e| panic!("{event} {}: {e}", payload["action"]))
}

#[test]
fn every_issues_example_maps_to_an_issue_event() {
    let all = examples("issues");
    assert_eq!(all.len(), 29);
    for payload in all {
        match parse_value("issues", &payload) {
            WebhookEvent::Issue {
                repository,
                action,
                issue,
            } => {
                assert_eq!(repository, payload["repository"]["full_name"]);
                assert_eq!(action, payload["action"]);
                assert_eq!(issue.number, payload["issue"]["number"]);
                assert_eq!(
                    issue.to_issue().body,
                    payload["issue"]["body"].as_str().unwrap_or_default()
                );
            }
            other => panic!("issues.{} became {other:?}", payload["action"]),
        }
    }
}

#[test]
fn every_issue_comment_example_maps_to_a_comment_event() {
    let all = examples("issue_comment");
    assert_eq!(all.len(), 9);
    for payload in all {
        match parse_value("issue_comment", &payload) {
            WebhookEvent::Comment {
                action,
                issue,
                comment,
                ..
            } => {
                assert_eq!(action, payload["action"]);
                assert_eq!(issue.number, payload["issue"]["number"]);
                let comment = comment.to_comment();
                assert_eq!(comment.body, payload["comment"]["body"]);
                assert_eq!(comment.author, payload["comment"]["user"]["login"]);
                assert_eq!(
                    comment.association,
                    payload["comment"]["author_association"]
                );
            }
            other => panic!("issue_comment.{} became {other:?}", payload["action"]),
        }
    }
}

#[test]
fn every_pull_request_example_maps_and_merges_are_recognised() {
    let all = examples("pull_request");
    assert_eq!(all.len(), 29);
    let mut merged_seen = 0;
    for mut payload in all {
        let closed = payload["action"] == "closed";
        if closed {
            // None of the package's examples is merged; make it one, as GitHub sends it.
            let pr = &mut payload["pull_request"];
            pr["merged"] = json!(true);
            pr["merged_at"] = json!("2019-05-15T15:21:18Z");
            pr["merged_by"] = json!({"login": "Codertocat"});
            pr["body"] = json!("Fixes #1");
        }
        match parse_value("pull_request", &payload) {
            WebhookEvent::PullRequest {
                repository,
                action,
                pull_request,
            } => {
                assert_eq!(repository, payload["repository"]["full_name"]);
                assert_eq!(action, payload["action"]);
                assert_eq!(pull_request.number, payload["pull_request"]["number"]);
                assert_eq!(
                    pull_request.head.branch,
                    payload["pull_request"]["head"]["ref"]
                );
                assert_eq!(pull_request.is_merged(), closed);
                if closed {
                    merged_seen += 1;
                    assert_eq!(pull_request.merged_by.as_ref().unwrap().login, "Codertocat");
                    assert_eq!(
                        pull_request.linked_issues().into_iter().collect::<Vec<_>>(),
                        vec![1]
                    );
                }
            }
            other => panic!("pull_request.{} became {other:?}", payload["action"]),
        }
    }
    assert_eq!(merged_seen, 2);
}

#[test]
fn every_ping_example_is_a_ping() {
    let all = examples("ping");
    assert_eq!(all.len(), 4);
    for payload in all {
        assert_eq!(parse_value("ping", &payload), WebhookEvent::Ping);
    }
}
