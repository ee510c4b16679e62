//! The parts of GitHub's issue, comment and pull-request JSON the operator reads — REST
//! responses and webhook payloads alike. Deliberately small and lenient: unknown fields are
//! ignored and nullable fields are optional, because payloads differ between GitHub, GitHub
//! Enterprise Server and emulators, and grow over time.

use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;

use crate::issue::{Comment, Issue};

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct User {
    pub login: String,
}

/// A label as an object (`{"name": …}`) or, in some payloads, a bare name.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Label {
    Object { name: String },
    Name(String),
}

impl Label {
    pub fn name(&self) -> &str {
        match self {
            Self::Object { name } | Self::Name(name) => name,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct IssuePayload {
    pub number: u64,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub labels: Vec<Label>,
    #[serde(default)]
    pub user: Option<User>,
    #[serde(default)]
    pub created_at: Option<Timestamp>,
    #[serde(default)]
    pub assignees: Vec<User>,
    /// Present when the "issue" is a pull request.
    #[serde(default)]
    pub pull_request: Option<serde_json::Value>,
    #[serde(default)]
    pub repository_url: Option<String>,
}

impl IssuePayload {
    pub fn is_pull_request(&self) -> bool {
        self.pull_request.is_some()
    }

    /// `owner/name` from `repository_url` (`https://api.github.com/repos/owner/name`).
    pub fn repository(&self) -> Option<String> {
        let url = self.repository_url.as_deref()?;
        let (_, path) = url.split_once("/repos/")?;
        let mut parts = path.split('/');
        Some(format!("{}/{}", parts.next()?, parts.next()?))
    }

    pub fn to_issue(&self) -> Issue {
        Issue {
            number: self.number,
            title: self.title.clone(),
            body: self.body.clone().unwrap_or_default(),
            labels: self.labels.iter().map(|l| l.name().to_owned()).collect(),
            open: self.state.as_deref() != Some("closed"),
            author: self
                .user
                .as_ref()
                .map(|u| u.login.clone())
                .unwrap_or_default(),
            created_at: self.created_at.unwrap_or(Timestamp::UNIX_EPOCH),
            assignees: self.assignees.iter().map(|u| u.login.clone()).collect(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct CommentPayload {
    pub id: u64,
    #[serde(default)]
    pub created_at: Option<Timestamp>,
    #[serde(default)]
    pub updated_at: Option<Timestamp>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub user: Option<User>,
    #[serde(default)]
    pub author_association: Option<String>,
}

impl CommentPayload {
    pub fn to_comment(&self) -> Comment {
        Comment {
            id: self.id,
            author: self
                .user
                .as_ref()
                .map(|u| u.login.clone())
                .unwrap_or_default(),
            association: self
                .author_association
                .clone()
                .unwrap_or_else(|| "NONE".into()),
            body: self.body.clone().unwrap_or_default(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Repository {
    pub full_name: String,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct BranchRef {
    #[serde(rename = "ref")]
    pub branch: String,
    #[serde(default)]
    pub repo: Option<Repository>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct PullRequestPayload {
    pub number: u64,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub merged: Option<bool>,
    #[serde(default)]
    pub merged_at: Option<Timestamp>,
    #[serde(default)]
    pub merged_by: Option<User>,
    #[serde(default)]
    pub closed_at: Option<Timestamp>,
    #[serde(default)]
    pub html_url: Option<String>,
    pub head: BranchRef,
    pub base: BranchRef,
}

impl PullRequestPayload {
    /// The repository the pull request merges into.
    pub fn repository(&self) -> Option<&str> {
        self.base.repo.as_ref().map(|r| r.full_name.as_str())
    }

    pub fn is_merged(&self) -> bool {
        self.merged.unwrap_or(false) || self.merged_at.is_some()
    }

    /// Issues of this repository that the title and body close with a keyword (contract §6).
    pub fn linked_issues(&self) -> std::collections::BTreeSet<u64> {
        let text = format!(
            "{}\n{}",
            self.title,
            self.body.as_deref().unwrap_or_default()
        );
        crate::issue::references::closed_by_keywords(&text, self.repository().unwrap_or_default())
    }
}
