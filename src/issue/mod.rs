//! The behaviour contract's rules about issues, comments and pull requests, as pure functions:
//! no I/O, every rule unit-tested. The webhook bridge, the IssueQueue controller and
//! `raibid-operator explain` all ask these.

pub mod answers;
pub mod identity;
pub mod markdown;
pub mod priority;
pub mod questions;
pub mod references;
pub mod status_comment;

use std::collections::BTreeSet;

use k8s_openapi::jiff::Timestamp;
use regex::RegexBuilder;
use serde::Serialize;

use self::{
    answers::answered_by,
    priority::{Priority, priority},
    questions::questions,
    references::{IssueRef, dependencies},
};
use crate::crd::{
    IssueQueueSpec, QueueProfile,
    issue_queue::{Answerers, IssueSelector, PriorityLabels, StateLabels},
};

/// Marker that identifies the operator's own status comment, whoever posted it.
pub const STATUS_MARKER: &str = "<!-- raibid-operator:status";

/// An issue as the rules see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    pub number: u64,
    pub title: String,
    pub body: String,
    pub labels: Vec<String>,
    pub open: bool,
    pub author: String,
    pub created_at: Timestamp,
    pub assignees: Vec<String>,
}

/// A comment on an issue as the rules see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Comment {
    pub id: u64,
    pub author: String,
    /// GitHub's `author_association`: `OWNER`, `MEMBER`, `COLLABORATOR`, `NONE`…
    pub association: String,
    pub body: String,
}

/// The state of an issue that its text and labels decide (contract §1). `Running`, `InReview`
/// and `Done` come from AgentTasks and pull requests, not from the issue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum TextState {
    Closed,
    Draft,
    Blocked,
    WaitingForAnswers,
    Ready,
}

/// The queue settings the rules read, with the contract's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    pub repository: String,
    pub selector: IssueSelector,
    pub labels: StateLabels,
    pub question_headings: Vec<String>,
    pub answerers: Answerers,
    pub priorities: PriorityLabels,
    pub profiles: Vec<QueueProfile>,
    pub default_profile: Option<String>,
    pub enrichment_profile: Option<String>,
    /// The operator's own GitHub login: its comments never answer.
    pub operator_login: Option<String>,
}

impl Rules {
    pub fn defaults(repository: &str) -> Self {
        Self {
            repository: repository.to_owned(),
            selector: IssueSelector::default(),
            labels: StateLabels::default(),
            question_headings: questions::DEFAULT_HEADINGS.map(String::from).to_vec(),
            answerers: Answerers::default(),
            priorities: PriorityLabels::default(),
            profiles: Vec::new(),
            default_profile: None,
            enrichment_profile: None,
            operator_login: None,
        }
    }

    pub fn from_queue(spec: &IssueQueueSpec) -> Self {
        Self {
            repository: spec.repository.clone(),
            selector: spec.selector.clone(),
            labels: spec.labels.clone(),
            question_headings: spec.question_headings.clone(),
            answerers: spec.answerers.clone(),
            priorities: spec.priorities.clone(),
            profiles: spec.profiles.clone(),
            default_profile: Some(spec.default_profile.clone()),
            enrichment_profile: spec.enrichment_profile.clone(),
            operator_login: None,
        }
    }

    /// Whether the queue takes this issue at all (open or not).
    pub fn selects(&self, issue: &Issue) -> bool {
        let has = |name: &String| issue.labels.iter().any(|l| l.eq_ignore_ascii_case(name));
        self.selector.labels.iter().all(has) && !self.selector.exclude_labels.iter().any(has)
    }

    /// Whether `comment` may answer questions on `issue` (contract §3).
    pub fn is_trusted_answerer(&self, issue: &Issue, comment: &Comment) -> bool {
        if comment.body.contains(STATUS_MARKER) {
            return false;
        }
        if self
            .operator_login
            .as_deref()
            .is_some_and(|me| me.eq_ignore_ascii_case(&comment.author))
        {
            return false;
        }
        (self.answerers.issue_author && comment.author.eq_ignore_ascii_case(&issue.author))
            || self
                .answerers
                .associations
                .iter()
                .any(|a| a.eq_ignore_ascii_case(&comment.association))
            || self
                .answerers
                .users
                .iter()
                .any(|u| u.eq_ignore_ascii_case(&comment.author))
    }

    /// The profile for this issue: the first whose rules match, else the default; a draft gets
    /// the enrichment profile (contract §5).
    pub fn profile_for(&self, issue: &Issue, draft: bool) -> Option<String> {
        if draft {
            return self.enrichment_profile.clone();
        }
        self.profiles
            .iter()
            .find(|p| {
                p.match_rules.as_ref().is_some_and(|rules| {
                    let labels_ok = rules
                        .labels
                        .iter()
                        .all(|want| issue.labels.iter().any(|l| l.eq_ignore_ascii_case(want)));
                    let title_ok = rules.title_pattern.as_deref().is_none_or(|pattern| {
                        RegexBuilder::new(pattern)
                            .size_limit(1 << 20)
                            .build()
                            .is_ok_and(|re| re.is_match(&issue.title))
                    });
                    let has_rules = !rules.labels.is_empty() || rules.title_pattern.is_some();
                    has_rules && labels_ok && title_ok
                })
            })
            .map(|p| p.name.clone())
            .or_else(|| self.default_profile.clone())
    }
}

/// Everything the rules say about one issue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Evaluation {
    pub number: u64,
    pub state: TextState,
    pub questions: Vec<u32>,
    pub unanswered: Vec<u32>,
    pub dependencies: Vec<u64>,
    pub open_dependencies: Vec<String>,
    pub priority: Priority,
    pub issue_id: String,
    pub agent_profile: Option<String>,
    pub why: String,
}

/// Applies contract §1–§5 to one issue. `is_closed` says whether a dependency is closed.
pub fn evaluate(
    issue: &Issue,
    comments: &[Comment],
    rules: &Rules,
    is_closed: impl Fn(&IssueRef) -> bool,
) -> Evaluation {
    let asked = questions(&issue.body, &rules.question_headings);
    let answered: BTreeSet<u32> = comments
        .iter()
        .filter(|c| rules.is_trusted_answerer(issue, c))
        .flat_map(|c| answered_by(&c.body))
        .collect();
    let unanswered: Vec<u32> = asked.difference(&answered).copied().collect();
    let deps = dependencies(&issue.body, &rules.repository);
    let open_deps: Vec<&IssueRef> = deps.iter().filter(|d| !is_closed(d)).collect();
    let draft = issue
        .labels
        .iter()
        .any(|l| rules.labels.draft.iter().any(|d| d.eq_ignore_ascii_case(l)));

    let (state, why) = if !issue.open {
        (
            TextState::Closed,
            "the issue is closed; closed issues are never started".to_owned(),
        )
    } else if draft {
        (
            TextState::Draft,
            "the issue is labelled as a draft".to_owned(),
        )
    } else if !open_deps.is_empty() {
        let names: Vec<String> = open_deps.iter().map(|d| display_ref(d)).collect();
        (
            TextState::Blocked,
            format!("waiting for {} to close", names.join(", ")),
        )
    } else if !unanswered.is_empty() {
        let numbers: Vec<String> = unanswered.iter().map(|n| n.to_string()).collect();
        (
            TextState::WaitingForAnswers,
            format!(
                "clarifying question{} {} {} unanswered; answer in a comment with e.g. `A{}: …`",
                if unanswered.len() == 1 { "" } else { "s" },
                numbers.join(", "),
                if unanswered.len() == 1 { "is" } else { "are" },
                unanswered[0]
            ),
        )
    } else {
        (
            TextState::Ready,
            "nothing holds the issue back; it waits for an agent".to_owned(),
        )
    };

    Evaluation {
        number: issue.number,
        state,
        questions: asked.into_iter().collect(),
        unanswered,
        dependencies: deps
            .iter()
            .filter(|d| d.repository.is_none())
            .map(|d| d.number)
            .collect(),
        open_dependencies: open_deps.iter().map(|d| display_ref(d)).collect(),
        priority: priority(&issue.labels, &rules.priorities),
        issue_id: identity::issue_id(&issue.title, issue.number),
        agent_profile: rules.profile_for(issue, draft),
        why,
    }
}

fn display_ref(reference: &IssueRef) -> String {
    match &reference.repository {
        Some(repo) => format!("{repo}#{}", reference.number),
        None => format!("#{}", reference.number),
    }
}

/// Candidates in admission order (contract §5): `Ready`, not assigned to someone else; by
/// tier, then creation time, then number.
pub fn admission_order<'a>(
    issues: impl IntoIterator<Item = (&'a Issue, &'a Evaluation)>,
    rules: &Rules,
) -> Vec<u64> {
    let mut ready: Vec<(Priority, Timestamp, u64)> = issues
        .into_iter()
        .filter(|(issue, eval)| {
            let assigned_elsewhere = issue.assignees.iter().any(|a| {
                rules
                    .operator_login
                    .as_deref()
                    .is_none_or(|me| !me.eq_ignore_ascii_case(a))
            });
            eval.state == TextState::Ready && rules.selects(issue) && !assigned_elsewhere
        })
        .map(|(issue, eval)| (eval.priority, issue.created_at, issue.number))
        .collect();
    ready.sort();
    ready.into_iter().map(|(_, _, number)| number).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{AgentProfile, issue_queue::ProfileMatch};

    fn issue(number: u64, body: &str, labels: &[&str]) -> Issue {
        Issue {
            number,
            title: format!("Issue {number}"),
            body: body.into(),
            labels: labels.iter().map(|s| s.to_string()).collect(),
            open: true,
            author: "alice".into(),
            created_at: Timestamp::from_second(1_700_000_000 + number as i64).unwrap(),
            assignees: vec![],
        }
    }

    fn comment(author: &str, association: &str, body: &str) -> Comment {
        Comment {
            id: 1,
            author: author.into(),
            association: association.into(),
            body: body.into(),
        }
    }

    fn rules() -> Rules {
        Rules {
            operator_login: Some("raibid-bot".into()),
            ..Rules::defaults("acme/web")
        }
    }

    const TWO_QUESTIONS: &str =
        "Do it.\n\n## Clarifying Questions\n1. Which DB?\n2. Which region?\n";

    fn eval(issue: &Issue, comments: &[Comment]) -> Evaluation {
        evaluate(issue, comments, &rules(), |_| false)
    }

    #[test]
    fn states_in_precedence_order() {
        let mut closed = issue(1, TWO_QUESTIONS, &["draft"]);
        closed.open = false;
        assert_eq!(eval(&closed, &[]).state, TextState::Closed);
        assert_eq!(
            eval(&issue(1, "Depends on #9", &["Status:Draft"]), &[]).state,
            TextState::Draft
        );
        assert_eq!(
            eval(
                &issue(1, &format!("Depends on #9\n\n{TWO_QUESTIONS}"), &[]),
                &[]
            )
            .state,
            TextState::Blocked
        );
        assert_eq!(
            eval(&issue(1, TWO_QUESTIONS, &[]), &[]).state,
            TextState::WaitingForAnswers
        );
        assert_eq!(
            eval(&issue(1, "Just do it.", &[]), &[]).state,
            TextState::Ready
        );
        assert_eq!(
            eval(&issue(1, "x", &["drafty"]), &[]).state,
            TextState::Ready,
            "exact label name only"
        );
    }

    #[test]
    fn answers_release_a_waiting_issue() {
        let i = issue(1, TWO_QUESTIONS, &[]);
        let partial = eval(&i, &[comment("alice", "NONE", "A1: Postgres")]);
        assert_eq!(
            (partial.state, partial.unanswered.clone()),
            (TextState::WaitingForAnswers, vec![2])
        );
        assert!(
            partial.why.contains("question 2 is unanswered"),
            "{}",
            partial.why
        );
        let full = eval(
            &i,
            &[
                comment("alice", "NONE", "A1: Postgres"),
                comment("bob", "MEMBER", "A2: eu"),
            ],
        );
        assert_eq!(
            (full.state, full.questions.clone(), full.unanswered.clone()),
            (TextState::Ready, vec![1, 2], vec![])
        );
    }

    #[test]
    fn only_trusted_answerers_count() {
        let i = issue(1, TWO_QUESTIONS, &[]);
        let all = "A1: x\nA2: y";
        for (author, association, counts) in [
            ("alice", "NONE", true),
            ("ALICE", "NONE", true),
            ("owner", "OWNER", true),
            ("member", "MEMBER", true),
            ("collab", "COLLABORATOR", true),
            ("outsider", "NONE", false),
            ("contrib", "CONTRIBUTOR", false),
            ("raibid-bot", "OWNER", false),
        ] {
            let e = eval(&i, &[comment(author, association, all)]);
            assert_eq!(
                e.state == TextState::Ready,
                counts,
                "{author}/{association}"
            );
        }
        let marker = format!("{STATUS_MARKER} {{}} -->\nA1: x\nA2: y");
        assert_eq!(
            eval(&i, &[comment("alice", "OWNER", &marker)]).state,
            TextState::WaitingForAnswers,
            "status comments never answer"
        );
    }

    #[test]
    fn answerers_are_configurable() {
        let i = issue(1, "## Clarifying Questions\n1. A?\n", &[]);
        let mut r = rules();
        r.answerers = Answerers {
            issue_author: false,
            associations: vec![],
            users: vec!["carol".into()],
        };
        let by = |author: &str, assoc: &str| {
            evaluate(&i, &[comment(author, assoc, "A1: y")], &r, |_| false).state
        };
        assert_eq!(by("alice", "OWNER"), TextState::WaitingForAnswers);
        assert_eq!(by("carol", "NONE"), TextState::Ready);
    }

    #[test]
    fn dependencies_block_until_closed() {
        let i = issue(5, "Depends on #1 and other/lib#2", &[]);
        let open = evaluate(&i, &[], &rules(), |_| false);
        assert_eq!(open.state, TextState::Blocked);
        assert_eq!(open.open_dependencies, vec!["#1", "other/lib#2"]);
        assert_eq!(open.dependencies, vec![1], "numbers in this repository");
        let one_left = evaluate(&i, &[], &rules(), |d| d.number == 1);
        assert_eq!(one_left.open_dependencies, vec!["other/lib#2"]);
        assert_eq!(
            evaluate(&i, &[], &rules(), |_| true).state,
            TextState::Ready
        );
    }

    #[test]
    fn profiles_are_tried_in_order_then_the_default() {
        let profile = |name: &str, labels: &[&str], title: Option<&str>| QueueProfile {
            name: name.into(),
            match_rules: Some(ProfileMatch {
                labels: labels.iter().map(|s| s.to_string()).collect(),
                title_pattern: title.map(Into::into),
            }),
            agent: AgentProfile::default(),
        };
        let mut r = rules();
        r.profiles = vec![
            profile("docs", &["documentation"], None),
            profile("frontend", &["ui"], Some("(?i)^\\[web\\]")),
            QueueProfile {
                name: "general".into(),
                ..Default::default()
            },
        ];
        r.default_profile = Some("general".into());
        r.enrichment_profile = Some("enrich".into());
        let mut i = issue(1, "", &["Documentation", "ui"]);
        assert_eq!(
            r.profile_for(&i, false).as_deref(),
            Some("docs"),
            "first match wins"
        );
        i.labels = vec!["ui".into()];
        assert_eq!(
            r.profile_for(&i, false).as_deref(),
            Some("general"),
            "title pattern must match too"
        );
        i.title = "[WEB] Button".into();
        assert_eq!(r.profile_for(&i, false).as_deref(), Some("frontend"));
        assert_eq!(
            r.profile_for(&i, true).as_deref(),
            Some("enrich"),
            "drafts get the enrichment profile"
        );
        r.profiles[1].match_rules.as_mut().unwrap().title_pattern = Some("(".into());
        assert_eq!(
            r.profile_for(&i, false).as_deref(),
            Some("general"),
            "an invalid pattern matches nothing"
        );
    }

    #[test]
    fn admission_order_is_tier_then_age_then_number() {
        let mut issues = vec![
            issue(1, "", &[]),
            issue(2, "", &["priority:low"]),
            issue(3, "", &["priority:high"]),
            issue(4, "", &["priority:critical"]),
            issue(5, "", &["priority:high"]),
            issue(6, TWO_QUESTIONS, &["priority:critical"]),
            issue(7, "", &["priority:medium"]),
        ];
        issues[4].created_at = issues[2].created_at;
        let mut assigned = issue(8, "", &["priority:critical"]);
        assigned.assignees = vec!["dave".into()];
        let mut mine = issue(9, "", &["priority:critical"]);
        mine.assignees = vec!["raibid-bot".into()];
        issues.extend([assigned, mine]);
        let evals: Vec<Evaluation> = issues.iter().map(|i| eval(i, &[])).collect();
        let order = admission_order(issues.iter().zip(evals.iter()), &rules());
        assert_eq!(order, vec![4, 9, 3, 5, 7, 1, 2]);
    }

    #[test]
    fn selection_by_labels() {
        let mut r = rules();
        r.selector = IssueSelector {
            labels: vec!["agent".into()],
            exclude_labels: vec!["wontfix".into()],
        };
        assert!(r.selects(&issue(1, "", &["Agent"])));
        assert!(!r.selects(&issue(1, "", &[])));
        assert!(!r.selects(&issue(1, "", &["agent", "wontfix"])));
    }

    #[test]
    fn evaluation_carries_id_and_priority() {
        let mut i = issue(12, "", &["priority:high"]);
        i.title = "[WEB-3] Fix".into();
        let e = eval(&i, &[]);
        assert_eq!((e.issue_id.as_str(), e.priority), ("WEB-3", Priority::High));
    }
}
