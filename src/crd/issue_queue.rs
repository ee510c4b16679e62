//! `IssueQueue`: one GitHub repository's queue of issues for agents.

// kube's `printcolumn(...)` repeats keys by design; clippy reads them as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{agent_task::AgentProfile, duration::Duration};

/// A GitHub repository's queue of issues: which issues agents work on, in what order, how
/// many at once and with which agent profile.
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "raibid.dev",
    version = "v1alpha1",
    kind = "IssueQueue",
    namespaced,
    status = "IssueQueueStatus",
    shortname = "iq",
    category = "raibid",
    derive = "PartialEq",
    doc = "A GitHub repository's queue of issues for AI coding agents.",
    printcolumn(name = "Repository", type_ = "string", json_path = ".spec.repository"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.counts.ready"),
    printcolumn(
        name = "Waiting",
        type_ = "integer",
        json_path = ".status.counts.waitingForAnswers"
    ),
    printcolumn(
        name = "Running",
        type_ = "integer",
        json_path = ".status.counts.running"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.profiles.exists(p, p.name == self.defaultProfile)", "message": "defaultProfile must name one of profiles"},
    {"rule": "!has(self.enrichmentProfile) || self.profiles.exists(p, p.name == self.enrichmentProfile)", "message": "enrichmentProfile must name one of profiles"},
    {"rule": "self.profiles.all(p, self.profiles.exists_one(q, q.name == p.name))", "message": "profile names must be unique"},
    {"rule": "size(self.webhookSecretRefs) > 0 || self.resyncOnly", "message": "give at least one webhookSecretRefs entry, or set resyncOnly: true to run from the periodic resync alone"},
]))]
pub struct IssueQueueSpec {
    /// GitHub repository whose issues this queue serves, as `owner/name`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$"))]
    pub repository: String,

    /// How to reach GitHub and as whom.
    pub github: GitHubAccess,

    /// Secrets holding the webhook secret; a delivery signed with any of them is accepted, so
    /// a secret can be rotated without downtime.
    #[serde(default)]
    #[schemars(length(max = 8))]
    pub webhook_secret_refs: Vec<SecretKeyRef>,

    /// Run without webhooks, from the periodic resync alone (slower to react).
    #[serde(default)]
    pub resync_only: bool,

    /// Which open issues the queue takes.
    #[serde(default)]
    pub selector: IssueSelector,

    /// Names of the labels the operator reads and writes.
    #[serde(default)]
    pub labels: StateLabels,

    /// Heading texts that start a clarifying-questions section (case-insensitive).
    #[serde(default = "default_question_headings")]
    pub question_headings: Vec<String>,

    /// Whose comments count as answers.
    #[serde(default)]
    pub answerers: Answerers,

    /// Label names of the priority tiers.
    #[serde(default)]
    pub priorities: PriorityLabels,

    /// At most this many agents of this queue run at once.
    #[serde(default = "default_max_concurrent")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_concurrent: u32,

    /// Agent profiles, tried in order; the first whose match rules fit an issue is used.
    #[schemars(length(min = 1, max = 32))]
    pub profiles: Vec<QueueProfile>,

    /// Name of the profile used when no profile's match rules fit.
    #[schemars(length(min = 1, max = 63))]
    pub default_profile: String,

    /// Name of the profile run once on a `draft` issue to improve its text; none when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub enrichment_profile: Option<String>,

    /// How often the whole repository is re-read to repair what a missed webhook left behind.
    #[serde(default = "default_resync_interval")]
    pub resync_interval: Duration,

    /// An issue waiting this long for answers gets a reminder, at most once per period.
    #[serde(default = "default_answer_reminder_after")]
    pub answer_reminder_after: Duration,

    /// Start no new agents while true; running ones finish.
    #[serde(default)]
    pub paused: bool,
}

/// How to reach GitHub. Exactly one of `app` and `tokenSecretRef` is set.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.app) != has(self.tokenSecretRef)", "message": "set exactly one of app (GitHub App) or tokenSecretRef"},
]))]
pub struct GitHubAccess {
    /// REST API base URL; change it for GitHub Enterprise Server (`https://HOST/api/v3`).
    #[serde(default = "default_api_url")]
    #[schemars(regex(pattern = r"^https?://"))]
    pub api_url: String,

    /// Authenticate as a GitHub App installation (recommended: agents then get tokens limited
    /// to this repository).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<GitHubApp>,

    /// Authenticate with a personal or fine-grained access token from this Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeyRef>,
}

/// How a queue authenticates, as every part of the operator reads it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GitHubAuth<'a> {
    App(&'a GitHubApp),
    Token(&'a SecretKeyRef),
    /// Refused by the CRD's validation; an object from before it may still say so.
    Missing,
}

impl GitHubAccess {
    /// The App wins if both are set (which validation refuses).
    pub fn auth(&self) -> GitHubAuth<'_> {
        match (&self.app, &self.token_secret_ref) {
            (Some(app), _) => GitHubAuth::App(app),
            (None, Some(token)) => GitHubAuth::Token(token),
            (None, None) => GitHubAuth::Missing,
        }
    }
}

/// A GitHub App installation.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GitHubApp {
    /// The App's numeric id.
    #[schemars(range(min = 1))]
    pub app_id: u64,
    /// The installation's numeric id on the repository's owner.
    #[schemars(range(min = 1))]
    pub installation_id: u64,
    /// Secret key holding the App's private key (PEM).
    pub private_key_secret_ref: SecretKeyRef,
}

/// A key of a Secret in the queue's namespace.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// Which open issues the queue takes.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IssueSelector {
    /// An issue must carry all of these labels.
    #[serde(default)]
    pub labels: Vec<String>,
    /// An issue carrying any of these labels is left alone.
    #[serde(default)]
    pub exclude_labels: Vec<String>,
}

/// Names of the labels that mark an issue's state.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StateLabels {
    /// Labels that mark a draft (any of them).
    #[serde(default = "default_draft_labels")]
    pub draft: Vec<String>,
    /// Set while a dependency is open.
    #[serde(default = "default_blocked_label")]
    pub blocked: String,
    /// Set while clarifying questions are unanswered.
    #[serde(default = "default_waiting_label")]
    pub waiting_for_answers: String,
    /// Set while the issue waits for an agent.
    #[serde(default = "default_ready_label")]
    pub ready: String,
    /// Set while an agent runs.
    #[serde(default = "default_running_label")]
    pub running: String,
    /// Set while the agent's pull request is open.
    #[serde(default = "default_in_review_label")]
    pub in_review: String,
}

impl Default for StateLabels {
    fn default() -> Self {
        Self {
            draft: default_draft_labels(),
            blocked: default_blocked_label(),
            waiting_for_answers: default_waiting_label(),
            ready: default_ready_label(),
            running: default_running_label(),
            in_review: default_in_review_label(),
        }
    }
}

/// Whose comments count as answers to clarifying questions.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Answerers {
    /// The issue's author may answer.
    #[serde(default = "default_true")]
    pub issue_author: bool,
    /// GitHub `author_association` values that may answer.
    #[serde(default = "default_associations")]
    pub associations: Vec<String>,
    /// Further GitHub logins that may answer.
    #[serde(default)]
    pub users: Vec<String>,
}

impl Default for Answerers {
    fn default() -> Self {
        Self {
            issue_author: true,
            associations: default_associations(),
            users: Vec::new(),
        }
    }
}

/// Label names of the priority tiers (critical > high > medium > none > low).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PriorityLabels {
    #[serde(default = "default_critical")]
    /// Label of the critical tier.
    pub critical: String,
    /// Label of the high tier.
    #[serde(default = "default_high")]
    pub high: String,
    /// Label of the medium tier.
    #[serde(default = "default_medium")]
    pub medium: String,
    /// Label of the low tier (below issues without a priority label).
    #[serde(default = "default_low")]
    pub low: String,
}

impl Default for PriorityLabels {
    fn default() -> Self {
        Self {
            critical: default_critical(),
            high: default_high(),
            medium: default_medium(),
            low: default_low(),
        }
    }
}

/// A named agent profile of a queue, with the rules that pick it for an issue.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QueueProfile {
    /// Name of the profile, unique in the queue.
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"),
        length(min = 1, max = 63)
    )]
    pub name: String,
    /// When this profile is picked; a profile without rules is picked only as the default.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_rules: Option<ProfileMatch>,
    /// The agent this profile runs.
    #[serde(flatten)]
    pub agent: AgentProfile,
}

/// Rules that pick a profile for an issue; all given rules must hold.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ProfileMatch {
    /// The issue carries all of these labels (case-insensitive).
    #[serde(default)]
    pub labels: Vec<String>,
    /// The issue title matches this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title_pattern: Option<String>,
}

/// What the operator observed of a queue.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IssueQueueStatus {
    /// `Ready`, `GitHubReachable` and `Synced`, per Kubernetes API conventions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Number of selected issues in each state.
    #[serde(default)]
    pub counts: IssueCounts,
    /// Names of the AgentTasks that are admitted and not finished.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub running_tasks: Vec<String>,
    /// The next (up to ten) issues to be started, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub next_candidates: Vec<u64>,
    /// When the repository was last read in full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    /// GitHub's rate limit as last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitStatus>,
    /// When each issue waiting for answers was last reminded (issue number → time).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub reminders: std::collections::BTreeMap<String, Time>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Number of selected issues in each state.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IssueCounts {
    /// Issues marked as drafts.
    pub draft: u32,
    /// Issues waiting for an open dependency.
    pub blocked: u32,
    /// Issues with unanswered clarifying questions.
    pub waiting_for_answers: u32,
    /// Issues ready and waiting for an agent.
    pub ready: u32,
    /// Issues an agent works on.
    pub running: u32,
    /// Issues whose agent opened a pull request.
    pub in_review: u32,
}

/// GitHub's rate limit as last seen.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitStatus {
    /// Requests left in the current window.
    pub remaining: u32,
    /// When the window resets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_time: Option<Time>,
}

fn default_true() -> bool {
    true
}
fn default_api_url() -> String {
    "https://api.github.com".into()
}
fn default_question_headings() -> Vec<String> {
    vec!["Clarifying Questions".into(), "Open Questions".into()]
}
fn default_associations() -> Vec<String> {
    vec!["OWNER".into(), "MEMBER".into(), "COLLABORATOR".into()]
}
fn default_max_concurrent() -> u32 {
    5
}
fn default_resync_interval() -> Duration {
    Duration::from_secs(5 * 60)
}
fn default_answer_reminder_after() -> Duration {
    Duration::from_secs(8 * 3600)
}
fn default_draft_labels() -> Vec<String> {
    vec!["draft".into(), "status:draft".into()]
}
fn default_blocked_label() -> String {
    "blocked".into()
}
fn default_waiting_label() -> String {
    "waiting:answers".into()
}
fn default_ready_label() -> String {
    "ready:work".into()
}
fn default_running_label() -> String {
    "status:in-progress".into()
}
fn default_in_review_label() -> String {
    "status:pr-open".into()
}
fn default_critical() -> String {
    "priority:critical".into()
}
fn default_high() -> String {
    "priority:high".into()
}
fn default_medium() -> String {
    "priority:medium".into()
}
fn default_low() -> String {
    "priority:low".into()
}
