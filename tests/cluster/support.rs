//! Test support for the real control plane started by `scripts/test`: a client, the CRDs, a
//! namespace per test (enforcing the `restricted` Pod Security Standard), simulated DGX Spark
//! nodes in a pool of the test's own, and the operator binary as a child process.

use std::{
    collections::BTreeMap,
    future::Future,
    path::PathBuf,
    process::Stdio,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::{
        Affinity, Namespace, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement,
        NodeSelectorTerm, Pod, Secret,
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use raibid_operator::crd::{AgentProfile, AgentTask, AgentTaskSpec, Phase, RunLimits};
use serde_json::json;
use tokio::{process::Child, sync::OnceCell};

/// Label that gives each test its own simulated nodes.
pub const POOL_LABEL: &str = "sim.raibid.dev/pool";

static CRDS_INSTALLED: OnceCell<()> = OnceCell::const_new();

/// A client for the control plane of this test run, with the CRDs installed. Each test gets
/// its own client: a client lives on the runtime of the test that made it.
pub async fn client() -> Client {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "these tests need the local control plane: run ./scripts/test (it starts one and sets KUBECONFIG)"
    );
    let client = Client::try_default()
        .await
        .expect("kubeconfig from KUBECONFIG");
    CRDS_INSTALLED
        .get_or_init(|| async {
            let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
            let yaml =
                std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/crds.yaml"))
                    .unwrap();
            for document in serde_yaml::Deserializer::from_str(&yaml) {
                let crd: CustomResourceDefinition =
                    serde::Deserialize::deserialize(document).unwrap();
                let name = crd.name_any();
                crds.patch(
                    &name,
                    &PatchParams::apply("raibid-tests").force(),
                    &Patch::Apply(&crd),
                )
                .await
                .unwrap_or_else(|e| panic!("the API server refused CRD {name}: {e}"));
                eventually(Duration::from_secs(30), || async {
                    let crd = crds.get(&name).await.ok()?;
                    let established = crd
                        .status?
                        .conditions?
                        .into_iter()
                        .any(|c| c.type_ == "Established" && c.status == "True");
                    established.then_some(())
                })
                .await;
            }
        })
        .await;
    client
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "condition not reached within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One test's world: a fresh namespace and a node pool of its own.
pub struct Scope {
    pub client: Client,
    pub namespace: String,
}

impl Scope {
    pub async fn new(test: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let client = client().await;
        let namespace = format!(
            "{test}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {
                "name": namespace,
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                },
            },
        }))
        .unwrap();
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
        // Pods need the namespace's default service account, which the controller-manager adds.
        let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), &namespace);
        eventually(Duration::from_secs(30), || async {
            accounts.get_opt("default").await.ok().flatten()
        })
        .await;
        Self { client, namespace }
    }

    /// A Secret with one key, in the test's namespace.
    pub async fn add_secret(&self, name: &str, key: &str, value: &str) {
        let secret: Secret = serde_json::from_value(
            serde_json::json!({"metadata": {"name": name}, "stringData": {key: value}}),
        )
        .unwrap();
        self.api::<Secret>()
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Adds simulated DGX Spark nodes (arm64, one GB10 GPU, GPU taint) to this test's pool.
    pub async fn add_dgx_nodes(&self, count: usize) -> Vec<String> {
        let mut names = Vec::new();
        for i in 1..=count {
            let name = format!("{}-dgx-{i}", self.namespace);
            self.add_node(
                &name,
                json!({
                    "kubernetes.io/arch": "arm64",
                    "nvidia.com/gpu.product": "NVIDIA-GB10",
                    "nvidia.com/gpu.present": "true",
                }),
                Some("1"),
            )
            .await;
            names.push(name);
        }
        names
    }

    /// Adds a CPU-only amd64 node to this test's pool.
    pub async fn add_cpu_node(&self) -> String {
        let name = format!("{}-cpu", self.namespace);
        self.add_node(&name, json!({"kubernetes.io/arch": "amd64"}), None)
            .await;
        name
    }

    async fn add_node(&self, name: &str, labels: serde_json::Value, gpus: Option<&str>) {
        let mut labels = labels;
        labels[POOL_LABEL] = json!(self.namespace);
        labels["kubernetes.io/hostname"] = json!(name);
        labels["type"] = json!("kwok");
        let mut resources = json!({"cpu": "20", "memory": "128Gi", "pods": "110"});
        let mut taints = json!([]);
        if let Some(gpus) = gpus {
            resources["nvidia.com/gpu"] = json!(gpus);
            taints = json!([{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]);
        }
        let node: Node = serde_json::from_value(json!({
            "metadata": {
                "name": name,
                "labels": labels,
                "annotations": {"kwok.x-k8s.io/node": "fake"},
            },
            "spec": {"taints": taints},
            "status": {"capacity": resources, "allocatable": resources},
        }))
        .unwrap();
        let nodes: Api<Node> = Api::all(self.client.clone());
        nodes.create(&PostParams::default(), &node).await.unwrap();
        eventually(Duration::from_secs(30), || async {
            let node = nodes.get(name).await.ok()?;
            let ready = node
                .status?
                .conditions?
                .into_iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            ready.then_some(())
        })
        .await;
    }

    /// An agent profile that keeps the default DGX Spark placement and adds this test's pool;
    /// `outcome` picks the simulated pod's fate (see scripts/cluster/kwok-stages.yaml).
    pub fn profile(&self, outcome: Option<&str>, run_for: &str) -> AgentProfile {
        let mut pod_labels = BTreeMap::new();
        if let Some(outcome) = outcome {
            pod_labels.insert("sim.raibid.dev/outcome".to_string(), outcome.to_string());
        }
        AgentProfile {
            image: "ghcr.io/raibid-labs/agent:test".into(),
            gpus: 1,
            pod_labels,
            pod_annotations: BTreeMap::from([(
                "sim.raibid.dev/run-for".to_string(),
                run_for.to_string(),
            )]),
            affinity: Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_expressions: Some(vec![NodeSelectorRequirement {
                                key: POOL_LABEL.into(),
                                operator: "In".into(),
                                values: Some(vec![self.namespace.clone()]),
                            }]),
                            ..Default::default()
                        }],
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub async fn create_task(
        &self,
        name: &str,
        profile: AgentProfile,
        configure: impl FnOnce(&mut AgentTaskSpec),
    ) -> AgentTask {
        let mut spec = AgentTaskSpec {
            repository: "raibid-labs/demo".into(),
            prompt: Some(format!("test task {name}")),
            profile: Some(profile),
            ..Default::default()
        };
        configure(&mut spec);
        let task = AgentTask::new(name, spec);
        self.api::<AgentTask>()
            .create(&PostParams::default(), &task)
            .await
            .unwrap()
    }

    pub async fn task(&self, name: &str) -> AgentTask {
        self.api::<AgentTask>().get(name).await.unwrap()
    }

    /// Waits until the task reaches `phase` and returns it.
    pub async fn wait_for_phase(&self, name: &str, phase: Phase, timeout: Duration) -> AgentTask {
        let api = self.api::<AgentTask>();
        let deadline = Instant::now() + timeout;
        loop {
            let task = api.get(name).await.unwrap();
            if task.phase() == phase {
                return task;
            }
            assert!(
                Instant::now() < deadline,
                "task {name} did not reach {phase:?} within {timeout:?}; status: {:#?}",
                task.status
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn pods(&self) -> Vec<Pod> {
        self.api::<Pod>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
    }

    /// Starts the operator binary, watching this test's namespace only.
    pub async fn start_operator(&self) -> Operator {
        Operator::start(&self.namespace, "127.0.0.1:0").await
    }
}

pub fn limits(run: Option<&str>, unschedulable: Option<&str>, pending: Option<&str>) -> RunLimits {
    RunLimits {
        run_timeout: run.map(|d| d.parse().unwrap()),
        unschedulable_timeout: unschedulable.map(|d| d.parse().unwrap()),
        pending_timeout: pending.map(|d| d.parse().unwrap()),
    }
}

pub fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The operator as a child process; killed when dropped. Its log is kept under the target
/// directory and printed when a test fails.
pub struct Operator {
    child: Child,
    log: PathBuf,
}

impl Operator {
    pub async fn start(namespace: &str, http_addr: &str) -> Self {
        let log =
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{namespace}-operator.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_raibid-operator"))
            .args([
                "run",
                "--namespace",
                namespace,
                "--http-addr",
                http_addr,
                "--retry-backoff",
                "1s",
                "--lease-duration",
                "3s",
            ])
            .env("RUST_LOG", "info,raibid_operator=debug")
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("start the operator binary");
        Self { child, log }
    }

    /// SIGKILL: no shutdown hook runs, as when a node dies.
    pub async fn kill(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Ok(text) = std::fs::read_to_string(&self.log)
        {
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("--- operator log ({}) ---", self.log.display());
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}
