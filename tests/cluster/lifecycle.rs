//! One AgentTask from `kubectl apply` to its end, on simulated DGX Spark nodes.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use raibid_operator::crd::{AgentTask, Phase};
use serde_json::json;

use crate::support::{Scope, eventually, is_terminal, limits};

const PATIENCE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_task_runs_on_a_gpu_node_never_the_cpu_node_and_succeeds() {
    let scope = Scope::new("succeed").await;
    let gpu_nodes = scope.add_dgx_nodes(1).await;
    let cpu_node = scope.add_cpu_node().await;
    let _operator = scope.start_operator().await;

    scope
        .create_task("fix-42", scope.profile(Some("succeed"), "2s"), |s| {
            s.issue = Some(42)
        })
        .await;

    let running = scope
        .wait_for_phase("fix-42", Phase::Running, PATIENCE)
        .await;
    let status = running.status.unwrap();
    assert_eq!(status.node_name.as_deref(), Some(gpu_nodes[0].as_str()));
    assert_ne!(status.node_name.as_deref(), Some(cpu_node.as_str()));
    assert_eq!(status.pod_name.as_deref(), Some("fix-42-1"));

    let pod: Pod = scope.api::<Pod>().get("fix-42-1").await.unwrap();
    let spec = pod.spec.unwrap();
    assert_eq!(spec.node_name.as_deref(), Some(gpu_nodes[0].as_str()));
    let env: Vec<(String, String)> = spec.containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect();
    assert!(
        env.contains(&("RAIBID_ISSUE".into(), "42".into())),
        "{env:?}"
    );
    assert!(
        env.contains(&("RAIBID_TASK".into(), "fix-42".into())),
        "{env:?}"
    );
    let context: ConfigMap = scope
        .api::<ConfigMap>()
        .get("fix-42-context")
        .await
        .unwrap();
    assert!(context.data.unwrap()["context.md"].contains("test task fix-42"));

    let done = scope
        .wait_for_phase("fix-42", Phase::Succeeded, PATIENCE)
        .await;
    let status = done.status.unwrap();
    assert_eq!(status.reason.as_deref(), Some("Succeeded"));
    assert!(status.completion_time.is_some() && status.start_time.is_some());
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True")
    );

    // The success is recorded, so its pod no longer holds anything.
    eventually(PATIENCE, || async {
        scope
            .api::<Pod>()
            .get_opt("fix-42-1")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let events = events_for(&scope, "fix-42").await;
    // A task admitted at once skips `Queued`; these are always told.
    for reason in ["Admitted", "Started", "Succeeded"] {
        assert!(
            events.contains(&reason.to_string()),
            "missing Event {reason}: {events:?}"
        );
    }
}

#[tokio::test]
async fn a_failing_agent_is_retried_then_fails_with_the_exit_reason() {
    let scope = Scope::new("retry").await;
    scope.add_dgx_nodes(1).await;
    let _operator = scope.start_operator().await;

    scope
        .create_task("flaky", scope.profile(Some("fail"), "500ms"), |s| {
            s.max_retries = Some(1)
        })
        .await;

    let failed = scope.wait_for_phase("flaky", Phase::Failed, PATIENCE).await;
    let status = failed.status.unwrap();
    assert_eq!(status.attempt, Some(2), "one retry after the first failure");
    assert_eq!(status.reason.as_deref(), Some("NonZeroExit"));
    let message = status.message.unwrap();
    assert!(
        message.contains("exited with code 1") && message.contains("gave up after 2 attempts"),
        "{message}"
    );
    let condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Failed")
        .unwrap();
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("True", "NonZeroExit")
    );

    // Each attempt had its own pod; failed pods stay for `kubectl logs`.
    let pods: Vec<String> = scope.pods().await.iter().map(|p| p.name_any()).collect();
    assert_eq!(sorted(pods), vec!["flaky-1", "flaky-2"]);
    assert!(
        events_for(&scope, "flaky")
            .await
            .contains(&"Retrying".to_string())
    );
}

#[tokio::test]
async fn out_of_memory_is_reported_as_such() {
    let scope = Scope::new("oom").await;
    scope.add_dgx_nodes(1).await;
    let _operator = scope.start_operator().await;
    scope
        .create_task("hungry", scope.profile(Some("oom"), "500ms"), |s| {
            s.max_retries = Some(0)
        })
        .await;
    let failed = scope
        .wait_for_phase("hungry", Phase::Failed, PATIENCE)
        .await;
    assert_eq!(failed.status.unwrap().reason.as_deref(), Some("OOMKilled"));
}

#[tokio::test]
async fn an_agent_past_its_run_time_limit_fails_deadline_exceeded() {
    let scope = Scope::new("deadline").await;
    scope.add_dgx_nodes(1).await;
    let _operator = scope.start_operator().await;

    // No outcome label: the simulated agent runs until it is stopped.
    scope
        .create_task("slow", scope.profile(None, "1s"), |s| {
            s.limits = Some(limits(Some("3s"), None, None));
            s.max_retries = Some(0);
        })
        .await;

    let failed = scope.wait_for_phase("slow", Phase::Failed, PATIENCE).await;
    let status = failed.status.unwrap();
    assert_eq!(status.reason.as_deref(), Some("DeadlineExceeded"));
    assert!(status.message.unwrap().contains("run-time limit of 3s"));
    eventually(PATIENCE, || async {
        scope
            .api::<Pod>()
            .get_opt("slow-1")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_task_no_node_can_host_fails_unschedulable_after_its_limit() {
    let scope = Scope::new("nofit").await;
    scope.add_dgx_nodes(1).await;
    let _operator = scope.start_operator().await;

    // Two GPUs, but every node has one: admission knows no node could ever host it.
    let mut greedy = scope.profile(Some("succeed"), "1s");
    greedy.gpus = 2;
    scope
        .create_task("two-gpus", greedy, |s| {
            s.limits = Some(limits(None, Some("3s"), None));
            s.max_retries = Some(0);
        })
        .await;
    // 1 TiB of memory: the GPU fits, so it is admitted, but the scheduler finds no node.
    let mut huge = scope.profile(Some("succeed"), "1s");
    huge.memory = Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
        "1Ti".into(),
    ));
    scope
        .create_task("too-big", huge, |s| {
            s.limits = Some(limits(None, Some("3s"), None));
            s.max_retries = Some(0);
        })
        .await;

    // Once admission has judged it, a task that cannot fit waits without a pod.
    eventually(PATIENCE, || async {
        let status = scope.task("two-gpus").await.status?;
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Admitted" && c.status == "False" && c.reason == "NoFittingNode")
            .then_some(())
    })
    .await;
    assert!(
        scope
            .api::<Pod>()
            .get_opt("two-gpus-1")
            .await
            .unwrap()
            .is_none(),
        "no Pending pod for a task that cannot fit"
    );

    for (name, because) in [
        ("two-gpus", "no node could ever host the agent for 3s"),
        ("too-big", "no node could run the agent within 3s"),
    ] {
        let failed = scope.wait_for_phase(name, Phase::Failed, PATIENCE).await;
        let status = failed.status.unwrap();
        assert_eq!(
            status.reason.as_deref(),
            Some("Unschedulable"),
            "{name}: {status:?}"
        );
        let message = status.message.unwrap();
        assert!(message.contains(because), "{name}: {message}");
    }
    let too_big_message = scope.task("too-big").await.status.unwrap().message.unwrap();
    assert!(
        too_big_message.contains("Insufficient memory"),
        "the scheduler's reason is passed on: {too_big_message}"
    );
    eventually(PATIENCE, || async {
        scope.pods().await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_fails_the_attempt() {
    let scope = Scope::new("pull").await;
    scope.add_dgx_nodes(1).await;
    let _operator = scope.start_operator().await;
    scope
        .create_task(
            "bad-image",
            scope.profile(Some("image-pull-fail"), "1s"),
            |s| s.max_retries = Some(0),
        )
        .await;
    let failed = scope
        .wait_for_phase("bad-image", Phase::Failed, PATIENCE)
        .await;
    let status = failed.status.unwrap();
    assert_eq!(status.reason.as_deref(), Some("ImagePullFailed"));
    assert!(
        status
            .message
            .unwrap()
            .contains("ghcr.io/raibid-labs/agent:test")
    );
}

#[tokio::test]
async fn a_pod_that_never_starts_fails_after_the_pending_limit() {
    let scope = Scope::new("pending").await;
    scope.add_dgx_nodes(1).await;
    let _operator = scope.start_operator().await;
    scope
        .create_task("stuck", scope.profile(Some("stay-pending"), "1s"), |s| {
            s.limits = Some(limits(None, None, Some("3s")));
            s.max_retries = Some(0);
        })
        .await;
    let failed = scope.wait_for_phase("stuck", Phase::Failed, PATIENCE).await;
    assert_eq!(
        failed.status.unwrap().reason.as_deref(),
        Some("PendingTimeout")
    );
}

#[tokio::test]
async fn deleting_a_running_task_leaves_nothing_behind() {
    let scope = Scope::new("delete").await;
    scope.add_dgx_nodes(1).await;
    let _operator = scope.start_operator().await;
    scope
        .create_task("doomed", scope.profile(None, "1s"), |_| {})
        .await;
    scope
        .wait_for_phase("doomed", Phase::Running, PATIENCE)
        .await;

    scope
        .api::<AgentTask>()
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();

    eventually(PATIENCE, || async {
        let pods = scope.pods().await;
        let config_maps = scope
            .api::<ConfigMap>()
            .list(&ListParams::default().labels("raibid.dev/task=doomed"))
            .await
            .unwrap();
        (pods.is_empty() && config_maps.items.is_empty()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn cancelling_a_running_task_stops_its_pod() {
    let scope = Scope::new("cancel").await;
    scope.add_dgx_nodes(1).await;
    let _operator = scope.start_operator().await;
    scope
        .create_task("stop-me", scope.profile(None, "1s"), |_| {})
        .await;
    scope
        .wait_for_phase("stop-me", Phase::Running, PATIENCE)
        .await;

    scope
        .api::<AgentTask>()
        .patch(
            "stop-me",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"cancel": true}})),
        )
        .await
        .unwrap();

    let cancelled = scope
        .wait_for_phase("stop-me", Phase::Cancelled, PATIENCE)
        .await;
    assert_eq!(
        cancelled.status.unwrap().reason.as_deref(),
        Some("Cancelled")
    );
    eventually(PATIENCE, || async {
        scope
            .pods()
            .await
            .into_iter()
            .all(|p| is_terminal(&p))
            .then_some(())
    })
    .await;
    eventually(PATIENCE, || async {
        scope.pods().await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn agent_pods_are_admitted_under_the_restricted_pod_security_standard() {
    let scope = Scope::new("restricted").await;
    scope.add_dgx_nodes(1).await;
    let _operator = scope.start_operator().await;

    // The namespace really enforces `restricted`: a plain pod is refused...
    let plain: Pod = serde_json::from_value(json!({
        "metadata": {"name": "plain"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap();
    let error = scope
        .api::<Pod>()
        .create(&PostParams::default(), &plain)
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("violates PodSecurity \"restricted"),
        "{error}"
    );

    // ...and the agent pod is admitted and runs.
    scope
        .create_task("secure", scope.profile(Some("succeed"), "1s"), |_| {})
        .await;
    scope
        .wait_for_phase("secure", Phase::Succeeded, PATIENCE)
        .await;
    let namespace = scope.client.clone();
    let ns: k8s_openapi::api::core::v1::Namespace =
        Api::all(namespace).get(&scope.namespace).await.unwrap();
    assert_eq!(
        ns.labels()["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
}

async fn events_for(scope: &Scope, task: &str) -> Vec<String> {
    let events: Api<k8s_openapi::api::events::v1::Event> = scope.api();
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(task))
        .filter_map(|e| e.reason)
        .collect()
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}
