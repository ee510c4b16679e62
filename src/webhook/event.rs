//! A delivery turned into the few things the operator acts on. Anything else is `Ignored`.

use serde::Deserialize;

use crate::github::payload::{CommentPayload, IssuePayload, PullRequestPayload, Repository};

/// What a delivery means to the operator.
#[derive(Clone, Debug, PartialEq)]
pub enum WebhookEvent {
    Ping,
    /// Something about an issue changed (opened, edited, labeled, closed, …).
    Issue {
        repository: String,
        action: String,
        issue: IssuePayload,
    },
    /// A comment was created, edited or deleted.
    Comment {
        repository: String,
        action: String,
        issue: IssuePayload,
        comment: CommentPayload,
    },
    /// A pull request opened, closed (merged or not), or changed.
    PullRequest {
        repository: String,
        action: String,
        pull_request: PullRequestPayload,
    },
    /// An event or action the operator does not use.
    Ignored {
        event: String,
    },
}

/// Why a body could not be read as its event.
#[derive(Debug, thiserror::Error)]
#[error("the {event} payload is malformed: {source}")]
pub struct ParseError {
    pub event: String,
    #[source]
    pub source: serde_json::Error,
}

#[derive(Deserialize)]
struct IssuesBody {
    action: String,
    issue: IssuePayload,
    repository: Repository,
}

#[derive(Deserialize)]
struct CommentBody {
    action: String,
    issue: IssuePayload,
    comment: CommentPayload,
    repository: Repository,
}

#[derive(Deserialize)]
struct PullRequestBody {
    action: String,
    pull_request: PullRequestPayload,
    repository: Repository,
}

/// Reads `body` as the event named by `X-GitHub-Event`.
pub fn parse(event: &str, body: &[u8]) -> Result<WebhookEvent, ParseError> {
    let fail = |source| ParseError {
        event: event.to_owned(),
        source,
    };
    Ok(match event {
        "ping" => {
            serde_json::from_slice::<serde_json::Value>(body).map_err(fail)?;
            WebhookEvent::Ping
        }
        "issues" => {
            let b: IssuesBody = serde_json::from_slice(body).map_err(fail)?;
            WebhookEvent::Issue {
                repository: b.repository.full_name,
                action: b.action,
                issue: b.issue,
            }
        }
        "issue_comment" => {
            let b: CommentBody = serde_json::from_slice(body).map_err(fail)?;
            WebhookEvent::Comment {
                repository: b.repository.full_name,
                action: b.action,
                issue: b.issue,
                comment: b.comment,
            }
        }
        "pull_request" => {
            let b: PullRequestBody = serde_json::from_slice(body).map_err(fail)?;
            WebhookEvent::PullRequest {
                repository: b.repository.full_name,
                action: b.action,
                pull_request: b.pull_request,
            }
        }
        other => {
            serde_json::from_slice::<serde_json::Value>(body).map_err(fail)?;
            WebhookEvent::Ignored {
                event: other.to_owned(),
            }
        }
    })
}

impl WebhookEvent {
    pub fn repository(&self) -> Option<&str> {
        match self {
            Self::Issue { repository, .. }
            | Self::Comment { repository, .. }
            | Self::PullRequest { repository, .. } => Some(repository),
            Self::Ping | Self::Ignored { .. } => None,
        }
    }

    /// The issue numbers whose state this delivery may change.
    pub fn affected_issues(&self) -> Vec<u64> {
        match self {
            Self::Issue { issue, .. } | Self::Comment { issue, .. } => vec![issue.number],
            Self::PullRequest { pull_request, .. } => {
                pull_request.linked_issues().into_iter().collect()
            }
            Self::Ping | Self::Ignored { .. } => Vec::new(),
        }
    }

    /// Short name for logs, metrics and delivery records, e.g. `issue_comment.created`.
    pub fn kind(&self) -> String {
        match self {
            Self::Ping => "ping".into(),
            Self::Issue { action, .. } => format!("issues.{action}"),
            Self::Comment { action, .. } => format!("issue_comment.{action}"),
            Self::PullRequest { action, .. } => format!("pull_request.{action}"),
            Self::Ignored { event } => event.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn body(value: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&value).unwrap()
    }

    #[test]
    fn issue_comment_on_an_issue() {
        let event = parse(
            "issue_comment",
            &body(json!({
                "action": "created",
                "issue": {"number": 4, "title": "t", "body": null, "user": {"login": "alice"}},
                "comment": {"id": 9, "body": "A1: yes", "user": {"login": "alice"}, "author_association": "OWNER"},
                "repository": {"full_name": "acme/web"},
            })),
        )
        .unwrap();
        assert_eq!(event.repository(), Some("acme/web"));
        assert_eq!(event.affected_issues(), vec![4]);
        assert_eq!(event.kind(), "issue_comment.created");
    }

    #[test]
    fn a_merged_pull_request_affects_its_linked_issues() {
        let event = parse(
            "pull_request",
            &body(json!({
                "action": "closed",
                "pull_request": {"number": 10, "title": "Fix", "body": "Fixes #4, closes #5", "merged": true,
                    "head": {"ref": "raibid/x"}, "base": {"ref": "main", "repo": {"full_name": "acme/web"}}},
                "repository": {"full_name": "acme/web"},
            })),
        )
        .unwrap();
        assert_eq!(event.affected_issues(), vec![4, 5]);
    }

    #[test]
    fn other_events_are_ignored_but_must_be_json() {
        assert_eq!(
            parse("star", b"{}").unwrap(),
            WebhookEvent::Ignored {
                event: "star".into()
            }
        );
        assert!(parse("star", b"{nope").is_err());
        assert_eq!(
            parse("ping", b"{\"zen\": \"hi\"}").unwrap(),
            WebhookEvent::Ping
        );
    }

    #[test]
    fn malformed_payloads_name_the_event() {
        let error = parse("issues", b"{\"action\": \"opened\"}").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("the issues payload is malformed"),
            "{error}"
        );
    }
}
