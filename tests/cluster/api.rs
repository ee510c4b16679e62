//! The CRDs as the API server sees them: schema accepted, documented, validated, printed.

use std::{process::Command, time::Duration};

use kube::{
    Api,
    api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams},
};
use raibid_operator::crd::{AgentTask, IssueQueue};
use serde_json::{Value, json};

use crate::support::{Scope, eventually};

fn kubectl(args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .args(args)
        .output()
        .expect("kubectl on PATH (scripts/test puts it there)");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `kubectl explain` reads the OpenAPI document, which the API server publishes a moment
/// after a CRD is established.
async fn explain(path: &str) -> String {
    eventually(Duration::from_secs(60), || async {
        let out = Command::new("kubectl")
            .args(["explain", path])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    })
    .await
}

#[tokio::test]
async fn kubectl_explain_shows_the_field_docs() {
    let _scope = Scope::new("explain").await;
    let spec = explain("agenttask.spec").await;
    for expected in [
        "GitHub repository the agent works on, as `owner/name`",
        "profileRef",
        "Set to true to stop the task",
    ] {
        assert!(
            spec.contains(expected),
            "`kubectl explain agenttask.spec` lacks {expected:?}:\n{spec}"
        );
    }
    let gpus = explain("agenttask.spec.profile.gpus").await;
    assert!(
        gpus.contains("Number of GPUs (`nvidia.com/gpu`) the agent needs"),
        "{gpus}"
    );
    let queue = explain("issuequeue.spec.maxConcurrent").await;
    assert!(
        queue.contains("At most this many agents of this queue run at once"),
        "{queue}"
    );
}

#[tokio::test]
async fn kubectl_get_shows_the_printer_columns() {
    let scope = Scope::new("columns").await;
    scope
        .create_task("printed", scope.profile(None, "1s"), |s| s.issue = Some(7))
        .await;
    let table = kubectl(&["get", "at", "-n", &scope.namespace]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "PHASE",
            "REPOSITORY",
            "ISSUE",
            "PROFILE",
            "NODE",
            "AGE"
        ],
        "{table}"
    );
    assert!(
        table.contains("raibid-labs/demo") && table.contains(" 7 "),
        "{table}"
    );
    let queue: IssueQueue = serde_json::from_value(json!({
        "apiVersion": "raibid.dev/v1alpha1",
        "kind": "IssueQueue",
        "metadata": {"name": "web"},
        "spec": valid_queue_spec(),
    }))
    .unwrap();
    scope
        .api::<IssueQueue>()
        .create(&PostParams::default(), &queue)
        .await
        .unwrap();
    let queues = kubectl(&["get", "iq", "-n", &scope.namespace]);
    let header: Vec<&str> = queues.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "REPOSITORY", "READY", "WAITING", "RUNNING", "AGE"],
        "{queues}"
    );
}

fn valid_queue_spec() -> Value {
    json!({
        "repository": "acme/web",
        "github": {"tokenSecretRef": {"name": "gh", "key": "token"}},
        "webhookSecretRefs": [{"name": "hook", "key": "secret"}],
        "profiles": [{"name": "default", "image": "agent:1"}],
        "defaultProfile": "default",
    })
}

fn task(spec: Value) -> Value {
    json!({"apiVersion": "raibid.dev/v1alpha1", "kind": "AgentTask", "metadata": {"name": "bad"}, "spec": spec})
}

fn valid_task_spec() -> Value {
    json!({"repository": "acme/web", "issue": 1, "profile": {"image": "agent:1"}})
}

fn with(mut base: Value, path: &[&str], value: Value) -> Value {
    let mut cursor = &mut base;
    for key in &path[..path.len() - 1] {
        cursor = &mut cursor[*key];
    }
    cursor[path[path.len() - 1]] = value;
    base
}

/// Creates `object` (raw JSON, so that it can be ill-typed) and returns the API server's
/// refusal message.
async fn refusal<K>(scope: &Scope, object: Value) -> String
where
    K: kube::Resource<DynamicType = ()>,
{
    let resource = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> =
        Api::namespaced_with(scope.client.clone(), &scope.namespace, &resource);
    let dynamic: DynamicObject = serde_json::from_value(object.clone()).unwrap();
    match api.create(&PostParams::default(), &dynamic).await {
        Ok(_) => panic!("the API server accepted an invalid object: {object}"),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            status.message
        }
        Err(other) => panic!("unexpected error: {other}"),
    }
}

#[tokio::test]
async fn the_api_server_rejects_invalid_agent_tasks_with_clear_messages() {
    let scope = Scope::new("invalid-tasks").await;
    let cases = [
        (
            task(json!({"repository": "acme/web", "profile": {"image": "agent:1"}})),
            "an AgentTask needs an issue number or a prompt",
        ),
        (
            task(with(
                valid_task_spec(),
                &["repository"],
                json!("not a repository"),
            )),
            "spec.repository",
        ),
        (
            task(with(valid_task_spec(), &["profileRef"], json!("gpu"))),
            "set exactly one of profile (inline) or profileRef",
        ),
        (
            task(json!({"repository": "acme/web", "issue": 1, "profileRef": "gpu"})),
            "profileRef names a profile of an IssueQueue: set queueRef too",
        ),
        (
            task(with(valid_task_spec(), &["issue"], json!(0))),
            "spec.issue",
        ),
        (
            task(with(valid_task_spec(), &["maxRetries"], json!(11))),
            "spec.maxRetries",
        ),
        (
            task(with(
                valid_task_spec(),
                &["limits"],
                json!({"runTimeout": "soon"}),
            )),
            "spec.limits.runTimeout",
        ),
        (
            task(with(valid_task_spec(), &["profile", "gpus"], json!(9))),
            "spec.profile.gpus",
        ),
        (
            task(with(valid_task_spec(), &["profile", "image"], json!(""))),
            "spec.profile.image",
        ),
    ];
    for (object, expected) in cases {
        let message = refusal::<AgentTask>(&scope, object.clone()).await;
        assert!(
            message.contains(expected),
            "for {object}\nexpected {expected:?} in: {message}"
        );
    }

    let long_name = with(
        task(valid_task_spec()),
        &["metadata", "name"],
        json!("a".repeat(59)),
    );
    let message = refusal::<AgentTask>(&scope, long_name).await;
    assert!(
        message.contains("AgentTask names are at most 58 characters"),
        "{message}"
    );
}

#[tokio::test]
async fn a_cancelled_task_cannot_be_resumed() {
    let scope = Scope::new("uncancel").await;
    let api: Api<AgentTask> = scope.api();
    let spec = with(valid_task_spec(), &["cancel"], json!(true));
    let created: AgentTask = serde_json::from_value(task(spec)).unwrap();
    api.create(&PostParams::default(), &created).await.unwrap();
    let resume = json!({"spec": {"cancel": false}});
    let error = api
        .patch("bad", &PatchParams::default(), &Patch::Merge(&resume))
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("a cancelled AgentTask cannot be resumed"),
        "{error}"
    );
}

#[tokio::test]
async fn the_api_server_rejects_invalid_issue_queues_with_clear_messages() {
    let scope = Scope::new("invalid-queues").await;
    let api: Api<IssueQueue> = scope.api();
    let valid = valid_queue_spec();
    let queue = |spec: Value| json!({"apiVersion": "raibid.dev/v1alpha1", "kind": "IssueQueue", "metadata": {"name": "bad"}, "spec": spec});
    let cases = [
        (
            with(valid.clone(), &["maxConcurrent"], json!(0)),
            "spec.maxConcurrent",
        ),
        (
            with(valid.clone(), &["defaultProfile"], json!("missing")),
            "defaultProfile must name one of profiles",
        ),
        (
            with(valid.clone(), &["webhookSecretRefs"], json!([])),
            "set resyncOnly: true",
        ),
        (
            with(valid.clone(), &["github"], json!({})),
            "set exactly one of app (GitHub App) or tokenSecretRef",
        ),
        (
            with(valid.clone(), &["resyncInterval"], json!("5 minutes")),
            "spec.resyncInterval",
        ),
        (
            with(
                valid.clone(),
                &["profiles"],
                json!([{"name": "a", "image": "x"}, {"name": "a", "image": "y"}]),
            ),
            "profile names must be unique",
        ),
    ];
    for (spec, expected) in cases {
        let message = refusal::<IssueQueue>(&scope, queue(spec.clone())).await;
        assert!(
            message.contains(expected),
            "for {spec}\nexpected {expected:?} in: {message}"
        );
    }
    let accepted: IssueQueue = serde_json::from_value(queue(valid)).unwrap();
    let created = api.create(&PostParams::default(), &accepted).await.unwrap();
    assert_eq!(
        created.spec.max_concurrent, 5,
        "defaults are applied by the API server"
    );
    assert_eq!(created.spec.labels.ready, "ready:work");
}
