//! The operator's one status comment per issue (contract §1): a hidden marker with the state
//! for machines, and text that tells a person what happens next. Edited in place on every
//! transition; found again by its marker, whoever posted it.

use serde::{Deserialize, Serialize};

use super::STATUS_MARKER;

/// Every state of contract §1, including those that agents and pull requests decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IssueState {
    Draft,
    Blocked,
    WaitingForAnswers,
    Ready,
    Running,
    InReview,
    Done,
}

/// The machine-readable part, as in
/// `<!-- raibid-operator:status {"issue":42,"state":"WaitingForAnswers","unanswered":[2,3],"task":null} -->`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusMarker {
    pub issue: u64,
    pub state: IssueState,
    pub unanswered: Vec<u32>,
    pub task: Option<String>,
}

/// Everything the visible text may mention.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusDetails {
    pub open_dependencies: Vec<String>,
    pub profile: Option<String>,
    pub node: Option<String>,
    pub branch: Option<String>,
    /// The pull request that took the issue to review or to done.
    pub pull_request: Option<u64>,
    pub merged_by: Option<String>,
    /// From admission to merge, for a person (e.g. `1h12m`).
    pub time_to_merge: Option<String>,
    /// Why the last agent failed, when it did.
    pub failure: Option<String>,
    /// Login to mention in an answer reminder, and when the reminder was given.
    pub remind: Option<(String, k8s_openapi::jiff::Timestamp)>,
}

/// The whole comment body.
pub fn render(marker: &StatusMarker, details: &StatusDetails) -> String {
    let json = serde_json::to_string(marker).unwrap_or_default();
    let mut out = format!("{STATUS_MARKER} {json} -->\n");
    let task = marker.task.as_deref().unwrap_or("—");
    let line = match marker.state {
        IssueState::Draft => {
            "**Draft.** An agent starts once the `draft` label is removed.".to_owned()
        }
        IssueState::Blocked => format!(
            "**Blocked** by {}. It moves on by itself when {} closed.",
            details.open_dependencies.join(", "),
            if details.open_dependencies.len() == 1 {
                "that issue is"
            } else {
                "those issues are"
            }
        ),
        IssueState::WaitingForAnswers => {
            let numbers: Vec<String> = marker.unanswered.iter().map(|n| n.to_string()).collect();
            let examples: Vec<String> = marker
                .unanswered
                .iter()
                .map(|n| format!("`A{n}: …`"))
                .collect();
            format!(
                "**Waiting for answers** to question{} {}. Answer in a comment, one line per answer ({}), or as a numbered list.",
                if numbers.len() == 1 { "" } else { "s" },
                numbers.join(", "),
                examples.join(", ")
            )
        }
        IssueState::Ready => {
            "**Ready.** An agent starts as soon as a slot and a GPU are free.".to_owned()
        }
        IssueState::Running => format!(
            "**Agent running**: task `{task}`, profile `{}`, node `{}`, branch `{}`.",
            details.profile.as_deref().unwrap_or("—"),
            details.node.as_deref().unwrap_or("(being placed)"),
            details.branch.as_deref().unwrap_or("—"),
        ),
        IssueState::InReview => format!(
            "**In review**: the agent opened #{}. Merging it completes this issue.",
            details.pull_request.unwrap_or_default()
        ),
        IssueState::Done => format!(
            "**Done**: #{} was merged{}{}.",
            details.pull_request.unwrap_or_default(),
            details
                .merged_by
                .as_ref()
                .map(|u| format!(" by @{u}"))
                .unwrap_or_default(),
            details
                .time_to_merge
                .as_ref()
                .map(|t| format!(", {t} after the agent started"))
                .unwrap_or_default(),
        ),
    };
    out.push_str(&line);
    out.push('\n');
    if let Some(failure) = &details.failure {
        out.push_str(&format!("\nThe last agent run failed: {failure}\n"));
    }
    if let Some((login, at)) = &details.remind {
        out.push_str(&format!(
            "\n@{login}, a reminder ({}): this issue is still waiting for your answers.\n",
            at.strftime("%Y-%m-%d %H:%M UTC")
        ));
    }
    out
}

/// The marker of a status comment, if `body` is one.
pub fn parse_marker(body: &str) -> Option<StatusMarker> {
    let start = body.find(STATUS_MARKER)? + STATUS_MARKER.len();
    let end = body[start..].find("-->")? + start;
    serde_json::from_str(body[start..end].trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(state: IssueState, unanswered: Vec<u32>, task: Option<&str>) -> StatusMarker {
        StatusMarker {
            issue: 42,
            state,
            unanswered,
            task: task.map(Into::into),
        }
    }

    #[test]
    fn the_marker_is_the_documented_one() {
        let body = render(
            &marker(IssueState::WaitingForAnswers, vec![2, 3], None),
            &StatusDetails::default(),
        );
        assert!(body.starts_with(
            r#"<!-- raibid-operator:status {"issue":42,"state":"WaitingForAnswers","unanswered":[2,3],"task":null} -->"#
        ), "{body}");
        assert_eq!(
            parse_marker(&body),
            Some(marker(IssueState::WaitingForAnswers, vec![2, 3], None))
        );
    }

    #[test]
    fn waiting_text_says_which_questions_and_how() {
        let body = render(
            &marker(IssueState::WaitingForAnswers, vec![2, 3], None),
            &StatusDetails::default(),
        );
        assert!(body.contains("questions 2, 3"), "{body}");
        assert!(body.contains("`A2: …`, `A3: …`"), "{body}");
        let one = render(
            &marker(IssueState::WaitingForAnswers, vec![1], None),
            &StatusDetails::default(),
        );
        assert!(one.contains("question 1."), "{one}");
    }

    #[test]
    fn running_text_names_task_profile_node_and_branch() {
        let details = StatusDetails {
            profile: Some("gpu-large".into()),
            node: Some("dgx-spark-1".into()),
            branch: Some("raibid/issue-42".into()),
            ..Default::default()
        };
        let body = render(
            &marker(IssueState::Running, vec![], Some("web-42-1")),
            &details,
        );
        for part in [
            "`web-42-1`",
            "`gpu-large`",
            "`dgx-spark-1`",
            "`raibid/issue-42`",
        ] {
            assert!(body.contains(part), "{part}: {body}");
        }
    }

    #[test]
    fn done_records_the_merge_and_reminders_mention_the_author() {
        let details = StatusDetails {
            pull_request: Some(7),
            merged_by: Some("bob".into()),
            time_to_merge: Some("1h12m".into()),
            ..Default::default()
        };
        let done = render(&marker(IssueState::Done, vec![], Some("t")), &details);
        assert!(
            done.contains("#7 was merged by @bob, 1h12m after the agent started"),
            "{done}"
        );
        let at = k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let remind = StatusDetails {
            remind: Some(("alice".into(), at)),
            ..Default::default()
        };
        assert!(
            render(
                &marker(IssueState::WaitingForAnswers, vec![1], None),
                &remind
            )
            .contains("@alice, a reminder")
        );
    }

    #[test]
    fn other_comments_have_no_marker() {
        assert_eq!(parse_marker("A1: yes"), None);
        assert_eq!(
            parse_marker("<!-- raibid-operator:status not json -->"),
            None
        );
        assert_eq!(
            parse_marker("<!-- raibid-operator:status {\"issue\": 1"),
            None
        );
    }
}
