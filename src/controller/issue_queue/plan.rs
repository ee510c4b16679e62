//! What the queue should look like for one issue, from what GitHub and the API server say now:
//! its state (contract §1), its labels, its one status comment, and what happens to its
//! AgentTask. Pure, so the whole contract is unit-tested; the controller only carries it out.

use k8s_openapi::jiff::Timestamp;

use crate::{
    crd::Phase,
    issue::{
        Comment, Evaluation, Issue, Rules, STATUS_MARKER, TextState,
        status_comment::{IssueState, StatusDetails, StatusMarker, parse_marker, render},
    },
};

/// A pull request that links the issue (by closing keyword or by the task's branch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkedPullRequest {
    pub number: u64,
    pub open: bool,
    pub merged: bool,
    pub merged_by: Option<String>,
    pub merged_at: Option<Timestamp>,
}

/// What the planner needs of an AgentTask of this issue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskView {
    pub name: String,
    /// The queue-level attempt in the task name (`<queue>-<issue>-<attempt>`).
    pub attempt: u32,
    pub phase: Phase,
    pub profile: Option<String>,
    pub node: Option<String>,
    pub branch: Option<String>,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub admission_time: Option<Timestamp>,
    pub created: Option<Timestamp>,
    /// A draft's enrichment run: it improves the issue text and is not the issue's work.
    pub enrichment: bool,
    /// The highest issue or pull request number when the task was created, if recorded.
    pub numbered_up_to: Option<u64>,
}

/// Whether a pull request linked to an issue speaks for the issue's latest run. An open one
/// does. A closed or merged one does if it was opened during the run (numbered above the
/// run's watermark) or closed after the second the run was created; timestamps have whole
/// seconds, so a close within that second is decided by the number alone. Without a run, or
/// for a run without a watermark (made by an older operator), a delivery naming it decides.
pub fn speaks_for_latest_run(
    number: u64,
    open: bool,
    closed_at: Option<Timestamp>,
    run: Option<&TaskView>,
    delivered: bool,
) -> bool {
    if open {
        return true;
    }
    let Some(run) = run else {
        return delivered;
    };
    if run.numbered_up_to.is_some_and(|mark| number > mark) {
        return true;
    }
    let closed_later = matches!(
        (closed_at, run.created),
        (Some(closed), Some(created)) if closed.as_second() > created.as_second()
    );
    closed_later || (run.numbered_up_to.is_none() && delivered)
}

/// What to do with the issue's task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskChange {
    Keep,
    /// Start a task for a candidate: name and queue-level attempt.
    Create {
        name: String,
        attempt: u32,
        profile: String,
        /// The draft's enrichment run rather than the issue's work.
        enrichment: bool,
    },
    /// The issue closed or left the selection.
    Cancel {
        name: String,
        why: String,
    },
    /// The linked pull request merged.
    CompleteMerged {
        name: String,
        pull_request: u64,
    },
    /// The linked pull request closed without merging.
    FailClosed {
        name: String,
        pull_request: u64,
    },
}

/// The status comment to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommentChange {
    Keep,
    Create { body: String },
    Update { id: u64, body: String },
}

/// Everything the controller does for one issue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuePlan {
    pub number: u64,
    pub state: IssueState,
    /// Ready and startable: no active or successful task, not failed since the last
    /// `ready` label, not assigned to a person.
    pub candidate: bool,
    pub add_labels: Vec<String>,
    pub remove_labels: Vec<String>,
    pub comment: CommentChange,
    /// Earlier duplicates of the status comment (there must be one).
    pub delete_comments: Vec<u64>,
    pub task: TaskChange,
    pub close_issue: bool,
}

/// The reminder to show on an issue waiting for answers since `waiting_since`: the last one
/// of this wait if it is younger than `period`, a new one (now) if the wait or the last
/// reminder is older, none before the first period has passed.
pub fn reminder(
    waiting_since: Timestamp,
    last: Option<Timestamp>,
    period: std::time::Duration,
    now: Timestamp,
) -> Option<Timestamp> {
    let after = |t: Timestamp| t.checked_add(period).unwrap_or(Timestamp::MAX);
    match last.filter(|l| *l >= waiting_since) {
        Some(last) if now >= after(last) => Some(now),
        Some(last) => Some(last),
        None if now >= after(waiting_since) => Some(now),
        None => None,
    }
}

/// Name of the task of `issue`'s `attempt` in `queue`: fixed, so a second create is refused.
pub fn task_name(queue: &str, issue: u64, attempt: u32) -> String {
    format!("{queue}-{issue}-{attempt}")
}

/// Plans one issue.
#[allow(clippy::too_many_arguments)]
pub fn plan_issue(
    queue: &str,
    issue: &Issue,
    comments: &[Comment],
    evaluation: &Evaluation,
    tasks: &[TaskView],
    pull_requests: &[LinkedPullRequest],
    rules: &Rules,
    remind: Option<Timestamp>,
) -> IssuePlan {
    let latest = tasks.iter().max_by_key(|t| t.attempt);
    let active = latest.filter(|t| !t.phase.is_terminal());
    // The issue's own work: a draft's enrichment run neither completes nor fails it.
    let latest_work = tasks
        .iter()
        .filter(|t| !t.enrichment)
        .max_by_key(|t| t.attempt);
    let merged = pull_requests.iter().find(|p| p.merged);
    let open_pr = pull_requests.iter().find(|p| p.open && !p.merged);
    let closed_unmerged = pull_requests.iter().find(|p| !p.open && !p.merged);
    let selected = rules.selects(issue);
    let has_ready_label = has_label(issue, &rules.labels.ready);

    let mut close_issue = false;
    let mut task = TaskChange::Keep;
    let state = if let Some(pr) = merged {
        if let Some(t) = latest_work.filter(|t| {
            t.phase != Phase::Succeeded || t.reason.as_deref() != Some("PullRequestMerged")
        }) {
            task = TaskChange::CompleteMerged {
                name: t.name.clone(),
                pull_request: pr.number,
            };
        }
        close_issue = issue.open;
        IssueState::Done
    } else if !issue.open || !selected {
        if let Some(t) = active {
            let why = if issue.open {
                "the issue left the queue's selection"
            } else {
                "the issue was closed"
            };
            task = TaskChange::Cancel {
                name: t.name.clone(),
                why: why.into(),
            };
        }
        IssueState::Ready // not shown: closed or deselected issues get no status updates
    } else if open_pr.is_some() {
        IssueState::InReview
    } else if let (Some(pr), Some(t)) = (closed_unmerged, active) {
        task = TaskChange::FailClosed {
            name: t.name.clone(),
            pull_request: pr.number,
        };
        IssueState::Ready
    } else if active.is_some_and(|t| t.phase.is_active()) {
        IssueState::Running
    } else {
        match evaluation.state {
            TextState::Draft => IssueState::Draft,
            TextState::Blocked => IssueState::Blocked,
            TextState::WaitingForAnswers => IssueState::WaitingForAnswers,
            TextState::Ready | TextState::Closed => IssueState::Ready,
        }
    };

    // A failed, cancelled or unmerged run is not restarted until a person re-adds the ready
    // label after it ended (the operator removes it when the run ends without success).
    // The operator never hands the ready label to such an issue itself, so a ready label on
    // it was put there by a person. A run whose pull request just closed counts as ended.
    let ended_without_success = latest_work
        .is_some_and(|t| matches!(t.phase, Phase::Failed | Phase::Cancelled))
        || matches!(task, TaskChange::FailClosed { .. });
    let succeeded = latest_work.is_some_and(|t| t.phase == Phase::Succeeded);
    let assigned_elsewhere = issue.assignees.iter().any(|a| {
        rules
            .operator_login
            .as_deref()
            .is_none_or(|me| !me.eq_ignore_ascii_case(a))
    });
    let candidate = issue.open
        && selected
        && state == IssueState::Ready
        && active.is_none()
        && !succeeded
        && (!ended_without_success || has_ready_label)
        && !assigned_elsewhere
        && matches!(task, TaskChange::Keep);
    let draft_run_pending = state == IssueState::Draft
        && rules.enrichment_profile.is_some()
        && !tasks.iter().any(|t| t.enrichment)
        && active.is_none()
        && issue.open
        && selected;
    if candidate || draft_run_pending {
        let attempt = latest.map_or(1, |t| t.attempt + 1);
        if let Some(profile) = evaluation.agent_profile.clone() {
            task = TaskChange::Create {
                name: task_name(queue, issue.number, attempt),
                attempt,
                profile,
                enrichment: draft_run_pending,
            };
        }
    }

    let shown = issue.open && selected || state == IssueState::Done;
    let wanted_label = match state {
        _ if !shown => None,
        IssueState::Done | IssueState::Draft => None,
        IssueState::Blocked => Some(&rules.labels.blocked),
        IssueState::WaitingForAnswers => Some(&rules.labels.waiting_for_answers),
        IssueState::Ready if ended_without_success && !has_ready_label => None,
        IssueState::Ready => Some(&rules.labels.ready),
        IssueState::Running => Some(&rules.labels.running),
        IssueState::InReview => Some(&rules.labels.in_review),
    };
    let state_labels = [
        &rules.labels.blocked,
        &rules.labels.waiting_for_answers,
        &rules.labels.ready,
        &rules.labels.running,
        &rules.labels.in_review,
    ];
    let mut add_labels = Vec::new();
    let mut remove_labels = Vec::new();
    for label in state_labels {
        let wanted = wanted_label == Some(label);
        let present = has_label(issue, label);
        if wanted && !present {
            add_labels.push(label.clone());
        } else if !wanted && present && (shown || label != &rules.labels.ready) {
            remove_labels.push(label.clone());
        }
    }
    // A run that ends without success gives the ready label back to people.
    if matches!(task, TaskChange::FailClosed { .. })
        && has_ready_label
        && !remove_labels.contains(&rules.labels.ready)
    {
        remove_labels.push(rules.labels.ready.clone());
    }

    let (comment, delete_comments) = if shown {
        status_comment(
            issue, comments, evaluation, state, latest, &task, merged, open_pr, remind,
        )
    } else {
        (CommentChange::Keep, Vec::new())
    };

    IssuePlan {
        number: issue.number,
        state,
        candidate: matches!(task, TaskChange::Create { .. }) && candidate,
        add_labels,
        remove_labels,
        comment,
        delete_comments,
        task,
        close_issue,
    }
}

fn has_label(issue: &Issue, name: &str) -> bool {
    issue.labels.iter().any(|l| l.eq_ignore_ascii_case(name))
}

#[allow(clippy::too_many_arguments)]
fn status_comment(
    issue: &Issue,
    comments: &[Comment],
    evaluation: &Evaluation,
    state: IssueState,
    latest: Option<&TaskView>,
    task: &TaskChange,
    merged: Option<&LinkedPullRequest>,
    open_pr: Option<&LinkedPullRequest>,
    remind: Option<Timestamp>,
) -> (CommentChange, Vec<u64>) {
    let task_name = match task {
        TaskChange::Create { name, .. } => Some(name.clone()),
        _ => latest.map(|t| t.name.clone()),
    };
    let marker = StatusMarker {
        issue: issue.number,
        state,
        unanswered: if state == IssueState::WaitingForAnswers {
            evaluation.unanswered.clone()
        } else {
            Vec::new()
        },
        task: task_name,
    };
    let time_to_merge = match (
        merged.and_then(|p| p.merged_at),
        latest.and_then(|t| t.admission_time),
    ) {
        (Some(merged_at), Some(admitted)) => Some(crate::controller::agent_task::progress::human(
            std::time::Duration::try_from(admitted.duration_until(merged_at)).unwrap_or_default(),
        )),
        _ => None,
    };
    let failure = latest
        .filter(|t| t.phase == Phase::Failed && state == IssueState::Ready)
        .map(|t| {
            format!(
                "{} ({})",
                t.message.clone().unwrap_or_default(),
                t.reason.clone().unwrap_or_default()
            )
        });
    let details = StatusDetails {
        open_dependencies: evaluation.open_dependencies.clone(),
        profile: latest.and_then(|t| t.profile.clone()),
        node: latest.and_then(|t| t.node.clone()),
        branch: latest.and_then(|t| t.branch.clone()),
        pull_request: merged.or(open_pr).map(|p| p.number),
        merged_by: merged.and_then(|p| p.merged_by.clone()),
        time_to_merge,
        failure,
        remind: remind
            .filter(|_| state == IssueState::WaitingForAnswers)
            .map(|at| (issue.author.clone(), at)),
    };
    let body = render(&marker, &details);
    let mut ours: Vec<&Comment> = comments
        .iter()
        .filter(|c| c.body.contains(STATUS_MARKER))
        .collect();
    ours.sort_by_key(|c| c.id);
    let Some(first) = ours.first() else {
        return (CommentChange::Create { body }, Vec::new());
    };
    let duplicates = ours[1..].iter().map(|c| c.id).collect();
    let same = parse_marker(&first.body).is_some() && first.body == body;
    let change = if same {
        CommentChange::Keep
    } else {
        CommentChange::Update { id: first.id, body }
    };
    (change, duplicates)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issue::evaluate;

    const QUEUE: &str = "web";

    fn rules() -> Rules {
        let mut rules = Rules {
            operator_login: Some("raibid-bot".into()),
            ..Rules::defaults("acme/web")
        };
        rules.default_profile = Some("general".into());
        rules
    }

    fn issue(body: &str, labels: &[&str]) -> Issue {
        Issue {
            number: 42,
            title: "Fix login".into(),
            body: body.into(),
            labels: labels.iter().map(|s| s.to_string()).collect(),
            open: true,
            author: "alice".into(),
            created_at: Timestamp::from_second(1_700_000_000).unwrap(),
            assignees: vec![],
        }
    }

    fn task(attempt: u32, phase: Phase) -> TaskView {
        TaskView {
            name: task_name(QUEUE, 42, attempt),
            attempt,
            phase,
            profile: Some("general".into()),
            node: Some("dgx-spark-1".into()),
            branch: Some("raibid/issue-42".into()),
            reason: None,
            message: None,
            admission_time: Some(Timestamp::from_second(1_700_000_100).unwrap()),
            created: Some(Timestamp::from_second(1_700_000_050).unwrap()),
            enrichment: false,
            numbered_up_to: Some(6),
        }
    }

    fn pr(open: bool, merged: bool) -> LinkedPullRequest {
        LinkedPullRequest {
            number: 7,
            open,
            merged,
            merged_by: merged.then(|| "bob".into()),
            merged_at: merged.then(|| Timestamp::from_second(1_700_003_700).unwrap()),
        }
    }

    fn plan(
        issue: &Issue,
        comments: &[Comment],
        tasks: &[TaskView],
        prs: &[LinkedPullRequest],
    ) -> IssuePlan {
        let rules = rules();
        let evaluation = evaluate(issue, comments, &rules, |_| false);
        plan_issue(
            QUEUE,
            issue,
            comments,
            &evaluation,
            tasks,
            prs,
            &rules,
            None,
        )
    }

    fn status(id: u64, body: &str) -> Comment {
        Comment {
            id,
            author: "raibid-bot".into(),
            association: "NONE".into(),
            body: body.into(),
        }
    }

    const QUESTIONS: &str = "## Clarifying Questions\n1. Which DB?\n2. Which region?\n";

    #[test]
    fn an_issue_with_questions_waits_with_one_label_and_one_comment() {
        let p = plan(&issue(QUESTIONS, &[]), &[], &[], &[]);
        assert_eq!(p.state, IssueState::WaitingForAnswers);
        assert_eq!(p.add_labels, vec!["waiting:answers"]);
        assert_eq!(p.task, TaskChange::Keep);
        let CommentChange::Create { body } = &p.comment else {
            panic!("{:?}", p.comment)
        };
        assert!(body.contains(r#""unanswered":[1,2]"#), "{body}");
    }

    #[test]
    fn the_status_comment_is_edited_in_place_never_posted_twice() {
        let first = plan(&issue(QUESTIONS, &[]), &[], &[], &[]);
        let CommentChange::Create { body } = first.comment else {
            panic!()
        };
        let existing = [status(5, &body)];
        let again = plan(&issue(QUESTIONS, &["waiting:answers"]), &existing, &[], &[]);
        assert_eq!(
            (again.comment, again.add_labels.len()),
            (CommentChange::Keep, 0),
            "nothing changed, nothing written"
        );

        let answered = [
            status(5, &body),
            Comment {
                id: 6,
                author: "alice".into(),
                association: "NONE".into(),
                body: "A1: pg\nA2: eu".into(),
            },
        ];
        let ready = plan(&issue(QUESTIONS, &["waiting:answers"]), &answered, &[], &[]);
        assert!(
            matches!(ready.comment, CommentChange::Update { id: 5, .. }),
            "{:?}",
            ready.comment
        );
        assert_eq!(ready.remove_labels, vec!["waiting:answers"]);
        assert_eq!(ready.add_labels, vec!["ready:work"]);

        let duplicated = [status(5, &body), status(9, &body)];
        assert_eq!(
            plan(&issue(QUESTIONS, &[]), &duplicated, &[], &[]).delete_comments,
            vec![9]
        );
    }

    #[test]
    fn a_ready_issue_gets_a_task_named_by_queue_issue_and_attempt() {
        let p = plan(&issue("Just do it", &[]), &[], &[], &[]);
        assert_eq!(p.state, IssueState::Ready);
        assert!(p.candidate);
        assert_eq!(
            p.task,
            TaskChange::Create {
                name: "web-42-1".into(),
                attempt: 1,
                profile: "general".into(),
                enrichment: false
            }
        );
        let CommentChange::Create { body } = &p.comment else {
            panic!()
        };
        assert!(body.contains(r#""task":"web-42-1""#), "{body}");
    }

    #[test]
    fn a_queued_task_keeps_the_issue_ready_and_an_admitted_one_running() {
        let queued = plan(
            &issue("x", &["ready:work"]),
            &[],
            &[task(1, Phase::Queued)],
            &[],
        );
        assert_eq!(
            (queued.state, queued.task.clone(), queued.candidate),
            (IssueState::Ready, TaskChange::Keep, false)
        );
        let running = plan(
            &issue("x", &["ready:work"]),
            &[],
            &[task(1, Phase::Running)],
            &[],
        );
        assert_eq!(running.state, IssueState::Running);
        assert_eq!(
            (running.add_labels.clone(), running.remove_labels.clone()),
            (
                vec!["status:in-progress".to_string()],
                vec!["ready:work".to_string()]
            )
        );
        let CommentChange::Create { body } = &running.comment else {
            panic!()
        };
        assert!(
            body.contains("`dgx-spark-1`") && body.contains("`raibid/issue-42`"),
            "{body}"
        );
    }

    #[test]
    fn an_open_pull_request_puts_the_issue_in_review() {
        let p = plan(
            &issue("x", &["status:in-progress"]),
            &[],
            &[task(1, Phase::Succeeded)],
            &[pr(true, false)],
        );
        assert_eq!(p.state, IssueState::InReview);
        assert_eq!(
            (p.add_labels, p.remove_labels),
            (
                vec!["status:pr-open".to_string()],
                vec!["status:in-progress".to_string()]
            )
        );
    }

    #[test]
    fn a_merge_completes_the_task_closes_the_issue_and_clears_labels() {
        let p = plan(
            &issue("x", &["status:pr-open", "bug"]),
            &[],
            &[task(1, Phase::Running)],
            &[pr(false, true)],
        );
        assert_eq!(p.state, IssueState::Done);
        assert_eq!(
            p.task,
            TaskChange::CompleteMerged {
                name: "web-42-1".into(),
                pull_request: 7
            }
        );
        assert!(p.close_issue);
        assert_eq!(p.remove_labels, vec!["status:pr-open"]);
        let CommentChange::Create { body } = &p.comment else {
            panic!()
        };
        assert!(
            body.contains("#7 was merged by @bob, 1h after the agent started"),
            "{body}"
        );

        let mut closed = issue("x", &[]);
        closed.open = false;
        let mut done_task = task(1, Phase::Succeeded);
        done_task.reason = Some("PullRequestMerged".into());
        let settled = plan(&closed, &[], &[done_task], &[pr(false, true)]);
        assert_eq!(
            (settled.task, settled.close_issue),
            (TaskChange::Keep, false),
            "GitHub closed it already; done once"
        );
    }

    #[test]
    fn closing_or_deselecting_an_issue_cancels_its_agent() {
        let mut closed = issue("x", &[]);
        closed.open = false;
        let p = plan(&closed, &[], &[task(1, Phase::Running)], &[]);
        assert_eq!(
            p.task,
            TaskChange::Cancel {
                name: "web-42-1".into(),
                why: "the issue was closed".into()
            }
        );
        assert_eq!(p.comment, CommentChange::Keep);

        let mut rules = rules();
        rules.selector.labels = vec!["agent".into()];
        let deselected = issue("x", &[]);
        let evaluation = evaluate(&deselected, &[], &rules, |_| false);
        let p = plan_issue(
            QUEUE,
            &deselected,
            &[],
            &evaluation,
            &[task(1, Phase::Starting)],
            &[],
            &rules,
            None,
        );
        assert!(matches!(p.task, TaskChange::Cancel { .. }));
    }

    #[test]
    fn an_unmerged_close_fails_the_task_and_waits_for_a_person() {
        let p = plan(
            &issue("x", &["status:pr-open", "ready:work"]),
            &[],
            &[task(1, Phase::Running)],
            &[pr(false, false)],
        );
        assert_eq!(
            p.task,
            TaskChange::FailClosed {
                name: "web-42-1".into(),
                pull_request: 7
            }
        );
        assert!(p.remove_labels.contains(&"ready:work".to_string()));

        let mut failed = task(1, Phase::Failed);
        failed.reason = Some("PullRequestClosed".into());
        let waits = plan(
            &issue("x", &[]),
            &[],
            &[failed.clone()],
            &[pr(false, false)],
        );
        assert_eq!(
            (waits.candidate, waits.task.clone()),
            (false, TaskChange::Keep),
            "no automatic restart"
        );
        assert!(
            waits.add_labels.is_empty(),
            "the operator does not hand itself the ready label"
        );

        // The next pass may still see the task running: it must not hand the label back.
        let again = plan(
            &issue("x", &["status:pr-open"]),
            &[],
            &[task(1, Phase::Running)],
            &[pr(false, false)],
        );
        assert!(
            !again.add_labels.contains(&"ready:work".to_string()),
            "{:?}",
            again.add_labels
        );

        let readded = plan(&issue("x", &["ready:work"]), &[], &[failed], &[]);
        assert_eq!(
            readded.task,
            TaskChange::Create {
                name: "web-42-2".into(),
                attempt: 2,
                profile: "general".into(),
                enrichment: false
            }
        );
    }

    #[test]
    fn a_failed_agent_is_reported_in_the_status_comment() {
        let mut failed = task(1, Phase::Failed);
        failed.reason = Some("DeadlineExceeded".into());
        failed.message = Some("the agent ran longer than 2h".into());
        let p = plan(&issue("x", &[]), &[], &[failed], &[]);
        let CommentChange::Create { body } = &p.comment else {
            panic!()
        };
        assert!(
            body.contains(
                "The last agent run failed: the agent ran longer than 2h (DeadlineExceeded)"
            ),
            "{body}"
        );
    }

    #[test]
    fn no_task_for_assigned_succeeded_blocked_or_draft_issues() {
        let mut assigned = issue("x", &[]);
        assigned.assignees = vec!["dave".into()];
        assert_eq!(plan(&assigned, &[], &[], &[]).task, TaskChange::Keep);
        let mut mine = issue("x", &[]);
        mine.assignees = vec!["raibid-bot".into()];
        assert!(matches!(
            plan(&mine, &[], &[], &[]).task,
            TaskChange::Create { .. }
        ));
        assert_eq!(
            plan(&issue("x", &[]), &[], &[task(1, Phase::Succeeded)], &[]).task,
            TaskChange::Keep
        );
        let blocked = plan(&issue("Depends on #1", &[]), &[], &[], &[]);
        assert_eq!(
            (blocked.state, blocked.add_labels.clone()),
            (IssueState::Blocked, vec!["blocked".to_string()])
        );
        assert_eq!(
            plan(&issue("x", &["draft"]), &[], &[], &[]).task,
            TaskChange::Keep,
            "no enrichment profile configured"
        );
    }

    #[test]
    fn an_old_closed_pull_request_never_speaks_for_a_new_run() {
        let run = task(2, Phase::Running); // created at second 1_700_000_050, watermark #6
        let at = |s: i64| Some(Timestamp::from_second(1_700_000_000 + s).unwrap());
        let speaks = speaks_for_latest_run;
        assert!(
            speaks(5, true, None, Some(&run), false),
            "open ones always do"
        );
        assert!(
            !speaks(5, false, at(50), Some(&run), true),
            "closed in the second the run began, opened before it, delivered late: no"
        );
        assert!(
            !speaks(5, false, at(10), Some(&run), true),
            "closed before the run: no, whatever the delivery"
        );
        assert!(
            speaks(7, false, at(50), Some(&run), false),
            "opened during the run (above the watermark): yes, even in the same second"
        );
        assert!(
            speaks(5, false, at(51), Some(&run), false),
            "an old one closed again after the run began: yes"
        );
        let legacy = TaskView {
            numbered_up_to: None,
            ..run.clone()
        };
        assert!(speaks(5, false, at(50), Some(&legacy), true));
        assert!(!speaks(5, false, at(50), Some(&legacy), false));
        assert!(
            speaks(5, false, at(10), None, true),
            "no run: the delivery decides"
        );
        assert!(!speaks(5, false, at(10), None, false));
    }

    #[test]
    fn a_draft_gets_the_enrichment_profile_once() {
        let mut rules = rules();
        rules.enrichment_profile = Some("enrich".into());
        let draft = issue("rough idea", &["draft"]);
        let evaluation = evaluate(&draft, &[], &rules, |_| false);
        let first = plan_issue(QUEUE, &draft, &[], &evaluation, &[], &[], &rules, None);
        assert_eq!(
            first.task,
            TaskChange::Create {
                name: "web-42-1".into(),
                attempt: 1,
                profile: "enrich".into(),
                enrichment: true
            }
        );
        let enrichment = |phase| TaskView {
            enrichment: true,
            profile: Some("enrich".into()),
            ..task(1, phase)
        };
        let plan_with = |issue: &Issue, tasks: &[TaskView]| {
            let evaluation = evaluate(issue, &[], &rules, |_| false);
            plan_issue(QUEUE, issue, &[], &evaluation, tasks, &[], &rules, None)
        };
        for phase in [Phase::Running, Phase::Succeeded, Phase::Failed] {
            assert_eq!(
                plan_with(&draft, &[enrichment(phase)]).task,
                TaskChange::Keep,
                "once: still a draft after an enrichment run that is {phase:?}"
            );
        }

        // The agent removed `draft`: the issue's work starts as the next attempt, whether
        // the enrichment run succeeded or failed.
        let shaped = issue("a shaped idea", &[]);
        for phase in [Phase::Succeeded, Phase::Failed] {
            assert_eq!(
                plan_with(&shaped, &[enrichment(phase)]).task,
                TaskChange::Create {
                    name: "web-42-2".into(),
                    attempt: 2,
                    profile: "general".into(),
                    enrichment: false,
                },
                "an enrichment run that is {phase:?} is not the issue's work"
            );
        }
        let running = plan_with(&shaped, &[enrichment(Phase::Running)]);
        assert_eq!(
            (running.task, running.state),
            (TaskChange::Keep, IssueState::Running),
            "never two agents on one issue"
        );
    }

    #[test]
    fn reminders_come_once_per_period_of_waiting() {
        let t = |s: i64| Timestamp::from_second(1_700_000_000 + s).unwrap();
        let period = std::time::Duration::from_secs(100);
        assert_eq!(
            reminder(t(0), None, period, t(99)),
            None,
            "not before the first period"
        );
        assert_eq!(reminder(t(0), None, period, t(100)), Some(t(100)));
        assert_eq!(
            reminder(t(0), Some(t(100)), period, t(150)),
            Some(t(100)),
            "kept, not repeated"
        );
        assert_eq!(
            reminder(t(0), Some(t(100)), period, t(200)),
            Some(t(200)),
            "one per period"
        );
        assert_eq!(
            reminder(t(300), Some(t(100)), period, t(350)),
            None,
            "a new answer starts a new wait"
        );
    }

    #[test]
    fn reminders_mention_the_author_while_waiting() {
        let rules = rules();
        let waiting = issue(QUESTIONS, &[]);
        let evaluation = evaluate(&waiting, &[], &rules, |_| false);
        let at = Timestamp::from_second(1_700_010_000).unwrap();
        let p = plan_issue(
            QUEUE,
            &waiting,
            &[],
            &evaluation,
            &[],
            &[],
            &rules,
            Some(at),
        );
        let CommentChange::Create { body } = &p.comment else {
            panic!()
        };
        assert!(body.contains("@alice, a reminder"), "{body}");
    }
}
