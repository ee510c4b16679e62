//! Admission on real nodes: never more agent pods than free GPUs, the rest wait as `Queued`
//! tasks (not `Pending` pods), and they start in order.

use std::{collections::HashMap, time::Duration};

use kube::{ResourceExt, api::ListParams};
use raibid_operator::crd::{AgentTask, Phase};

use crate::support::{Scope, is_terminal};

#[tokio::test]
async fn five_tasks_on_two_gpus_run_two_at_a_time_in_creation_order() {
    let scope = Scope::new("admission").await;
    scope.add_dgx_nodes(2).await;
    let _operator = scope.start_operator().await;

    // Created in reverse name order, a second apart (creation times have whole seconds), and
    // long enough that the last three all wait together: creation order, not the name, must
    // decide which of them goes first.
    let names = ["task-e", "task-d", "task-c", "task-b", "task-a"];
    for (i, name) in names.into_iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        scope
            .create_task(name, scope.profile(Some("succeed"), "6s"), |_| {})
            .await;
    }

    // Poll until all finish, checking the invariants at every look.
    let tasks = scope.api::<AgentTask>();
    let mut first_admitted_at: HashMap<String, usize> = HashMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    for look in 0.. {
        assert!(
            std::time::Instant::now() < deadline,
            "tasks did not finish: {first_admitted_at:?}"
        );
        let pods = scope.pods().await;
        let live: Vec<String> = pods
            .iter()
            .filter(|p| !is_terminal(p))
            .map(|p| p.name_any())
            .collect();
        assert!(
            live.len() <= 2,
            "look {look}: more agent pods than GPUs: {live:?}"
        );
        let list = tasks.list(&ListParams::default()).await.unwrap().items;
        for task in &list {
            if task.phase() == Phase::Queued {
                let own_pods = pods
                    .iter()
                    .filter(|p| p.name_any().starts_with(&format!("{}-", task.name_any())))
                    .count();
                assert_eq!(
                    own_pods,
                    0,
                    "look {look}: queued task {} has a pod",
                    task.name_any()
                );
            } else if task.status.is_some() {
                first_admitted_at.entry(task.name_any()).or_insert(look);
            }
        }
        if list.len() == names.len() && list.iter().all(|t| t.phase() == Phase::Succeeded) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let order: Vec<usize> = names.iter().map(|n| first_admitted_at[*n]).collect();
    assert!(
        order.windows(2).all(|w| w[0] <= w[1]),
        "admitted out of creation order (look at which each left the queue): {order:?}"
    );
    assert!(
        order[2] > order[1],
        "the third task waited for a GPU: {order:?}"
    );
}
