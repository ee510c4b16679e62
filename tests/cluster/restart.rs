//! The operator killed mid-flight and started again resumes from what the API server says.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::{ResourceExt, api::ListParams};
use raibid_operator::crd::{AgentTask, Phase};

use crate::support::Scope;

#[tokio::test]
async fn sigkill_and_restart_neither_duplicates_nor_loses_a_run() {
    let scope = Scope::new("restart").await;
    scope.add_dgx_nodes(2).await;
    let operator = scope.start_operator().await;

    let names = ["job-1", "job-2", "job-3", "job-4"];
    for name in names {
        scope
            .create_task(name, scope.profile(Some("succeed"), "3s"), |_| {})
            .await;
    }
    scope
        .wait_for_phase("job-1", Phase::Running, Duration::from_secs(60))
        .await;
    operator.kill().await;

    // While no operator runs, nothing moves on; then a fresh process takes over.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _operator = scope.start_operator().await;

    for name in names {
        scope
            .wait_for_phase(name, Phase::Succeeded, Duration::from_secs(90))
            .await;
    }
    let tasks = scope
        .api::<AgentTask>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    for task in &tasks {
        assert_eq!(
            task.attempt(),
            1,
            "{} needed no second attempt",
            task.name_any()
        );
    }
    // Every pod ever created carries its task and attempt; succeeded ones are deleted, so count
    // through the Events of pod creation instead of the pods that remain.
    let events: kube::Api<k8s_openapi::api::core::v1::Event> = scope.api();
    let scheduled: Vec<String> = events
        .list(&ListParams::default().fields("reason=Scheduled"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.involved_object.name)
        .collect();
    for name in names {
        let pods_of_task = scheduled
            .iter()
            .filter(|p| p.starts_with(&format!("{name}-")))
            .count();
        assert_eq!(
            pods_of_task, 1,
            "{name} got {pods_of_task} pods: {scheduled:?}"
        );
    }
    let leftovers: Vec<Pod> = scope.pods().await;
    assert!(
        leftovers.is_empty(),
        "succeeded pods are cleaned up: {:?}",
        leftovers.iter().map(|p| p.name_any()).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn two_replicas_one_leader_and_a_takeover_when_it_dies() {
    let scope = Scope::new("leader").await;
    scope.add_dgx_nodes(2).await;
    let first = scope.start_operator().await;
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> = scope.api();
    let holder = crate::support::eventually(Duration::from_secs(30), || async {
        leases
            .get_opt("raibid-operator-leader")
            .await
            .ok()??
            .spec?
            .holder_identity
    })
    .await;
    let second = scope.start_operator().await;

    for name in ["ha-1", "ha-2", "ha-3"] {
        scope
            .create_task(name, scope.profile(Some("succeed"), "2s"), |_| {})
            .await;
    }
    scope
        .wait_for_phase("ha-1", Phase::Running, Duration::from_secs(60))
        .await;
    let lease = leases
        .get("raibid-operator-leader")
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(
        lease.holder_identity.as_ref(),
        Some(&holder),
        "the standby did not take over a live lease"
    );

    // The leader dies; the standby takes the lease once it expires and finishes the work.
    first.kill().await;
    for name in ["ha-1", "ha-2", "ha-3"] {
        scope
            .wait_for_phase(name, Phase::Succeeded, Duration::from_secs(90))
            .await;
    }
    let lease = leases
        .get("raibid-operator-leader")
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_ne!(
        lease.holder_identity,
        Some(holder),
        "the standby holds the lease now"
    );
    assert_eq!(lease.lease_transitions, Some(1));
    let tasks = scope
        .api::<AgentTask>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert!(
        tasks.iter().all(|t| t.attempt() == 1),
        "no attempt repeated by the takeover"
    );
    drop(second);
}
