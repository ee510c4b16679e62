//! Start-up and wiring: config → client → preflight → watches → controller, admission, server.

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::ListParams,
    runtime::{
        Controller, WatchStreamExt,
        controller::Config as ControllerConfig,
        events::{Recorder, Reporter},
        predicates,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use crate::{
    admission,
    config::RunConfig,
    controller::{
        Context, FIELD_MANAGER, RetryPolicy, Stores,
        agent_task::{
            self,
            desired::{MANAGED_BY, MANAGED_BY_LABEL, QUEUE_LABEL},
        },
        issue_queue,
    },
    crd::{AgentTask, IssueQueue},
    leader::LeaderElection,
    metrics::Metrics,
    server,
    webhook::{self, DELIVERY_LABEL, WebhookState},
};

/// Why the operator could not start. Each reads as one line a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("no usable Kubernetes configuration (set KUBECONFIG or run in a cluster): {0}")]
    Config(String),
    #[error("cannot reach the Kubernetes API server at {server}: {source}")]
    Unreachable { server: String, source: kube::Error },
    #[error(
        "the {kind} CRD is not installed in this cluster: run `kubectl apply -f crds/crds.yaml` or install the Helm chart"
    )]
    MissingCrd { kind: &'static str },
    #[error("cannot list {kind} objects: {source}")]
    Forbidden {
        kind: &'static str,
        source: kube::Error,
    },
    #[error("lost the leader lease; exiting so that a restart competes for it again")]
    LostLeadership,
    #[error("cannot serve health and metrics on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

pub async fn run(config: RunConfig) -> Result<(), StartupError> {
    let RunConfig {
        namespace,
        http_addr,
        concurrency,
        retry_backoff,
        retry_backoff_max,
        log_format: _,
        instance,
        leader_election_namespace,
        lease_duration,
    } = config;

    let kube_config = kube::Config::infer()
        .await
        .map_err(|e| StartupError::Config(e.to_string()))?;
    let server = kube_config.cluster_url.to_string();
    let client = Client::try_from(kube_config).map_err(|e| StartupError::Config(e.to_string()))?;
    let version = client
        .apiserver_version()
        .await
        .map_err(|source| StartupError::Unreachable { server, source })?;
    preflight::<AgentTask>(&client, namespace.as_deref(), "AgentTask").await?;
    preflight::<IssueQueue>(&client, namespace.as_deref(), "IssueQueue").await?;
    info!(
        server = %version.git_version,
        namespace = namespace.as_deref().unwrap_or("<all>"),
        "connected to the Kubernetes API server"
    );

    let admission_wakeup = Arc::new(Notify::new());
    let nodes = watch_into_store(
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
        admission_wakeup.clone(),
    );
    // Only pods that hold resources: terminal pods drop out of this cache.
    let gpu_pods = watch_into_store(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default().fields("status.phase!=Succeeded,status.phase!=Failed"),
        admission_wakeup.clone(),
    );
    // Its own watch rather than the controller's store: that one fills only while the
    // controller runs, which is in the leader alone, and every replica must become ready.
    let tasks = watch_into_store(
        scoped::<AgentTask>(&client, namespace.as_deref()),
        watcher::Config::default(),
        admission_wakeup.clone(),
    );
    let queues_api: Api<IssueQueue> = scoped(&client, namespace.as_deref());
    let queues = watch_into_store(
        queues_api,
        watcher::Config::default(),
        admission_wakeup.clone(),
    );

    // Every replica serves the webhook; deliveries become records in the API server.
    let metrics = Arc::new(Metrics::default());
    let (ready_tx, ready_rx) = watch::channel(false);
    let webhook = webhook::router(WebhookState::new(
        client.clone(),
        queues.clone(),
        metrics.clone(),
    ));
    let (bound, serve) = server::bind(http_addr, metrics.clone(), ready_rx, webhook)
        .await
        .map_err(|source| StartupError::Bind {
            addr: http_addr,
            source,
        })?;
    info!(%bound, "serving /webhooks/github, /healthz, /readyz and /metrics");
    tokio::spawn(async move {
        if let Err(error) = serve.await {
            warn!(%error, "HTTP server stopped");
        }
    });

    let owned_pods: Api<Pod> = scoped(&client, namespace.as_deref());
    let controller = Controller::new(
        scoped::<AgentTask>(&client, namespace.as_deref()),
        watcher::Config::default(),
    )
    .owns(
        owned_pods,
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")),
    )
    .with_config(ControllerConfig::default().concurrency(concurrency))
    .shutdown_on_signal();

    // One name per replica, in its Events and in the leader Lease.
    let identity = instance.unwrap_or_else(default_identity);
    let reporter = Reporter {
        controller: FIELD_MANAGER.into(),
        instance: Some(identity.clone()),
    };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        metrics,
        stores: Stores {
            tasks,
            queues,
            pods: gpu_pods,
            nodes,
        },
        admission: admission_wakeup,
        retry: RetryPolicy {
            base: retry_backoff.as_std(),
            max: retry_backoff_max.as_std(),
        },
        github: Default::default(),
    });

    // One task waits for the stores and tells the readiness probe and admission.
    let stores = ctx.stores.clone();
    let synced = ready_tx.subscribe();
    tokio::spawn(async move {
        // Each of these stores has this one waiter.
        let all_synced = tokio::try_join!(
            stores.tasks.wait_until_ready(),
            stores.queues.wait_until_ready(),
            stores.pods.wait_until_ready(),
            stores.nodes.wait_until_ready(),
        );
        if all_synced.is_ok() {
            info!("all watches synced; ready");
            let _ = ready_tx.send(true);
        }
    });

    // Every replica serves webhooks and keeps its caches warm; only the leader decides.
    let lease_namespace = leader_election_namespace
        .or_else(|| namespace.clone())
        .unwrap_or_else(|| "default".into());
    let election = LeaderElection::new(
        ctx.client.clone(),
        &lease_namespace,
        identity,
        lease_duration.as_std(),
    );
    let mut leading = tokio::select! {
        leading = election.acquire() => leading,
        _ = shutdown_signal() => {
            info!("shut down before becoming the leader");
            return Ok(());
        }
    };
    let admission = tokio::spawn(admission::run(ctx.clone(), synced));

    // IssueQueues reconcile on changes of their spec (not of their status: every sync writes
    // it), on delivery records and on their tasks.
    let scoped_queues: Api<IssueQueue> = scoped(&ctx.client, namespace.as_deref());
    let scoped_records: Api<ConfigMap> = scoped(&ctx.client, namespace.as_deref());
    let (queue_reader, queue_writer) = reflector::store();
    let queue_changes = watcher(scoped_queues, watcher::Config::default())
        .default_backoff()
        .reflect(queue_writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    let queue_controller = Controller::for_stream(queue_changes, queue_reader)
        .watches(
            scoped_records,
            watcher::Config::default().labels(&format!("{DELIVERY_LABEL}=true")),
            |record: ConfigMap| {
                let queue = record.labels().get(QUEUE_LABEL)?.clone();
                Some(ObjectRef::new(&queue).within(&record.namespace()?))
            },
        )
        .watches(
            scoped::<AgentTask>(&ctx.client, namespace.as_deref()),
            watcher::Config::default(),
            |task: AgentTask| {
                Some(ObjectRef::new(task.spec.queue_ref.as_deref()?).within(&task.namespace()?))
            },
        )
        .with_config(
            ControllerConfig::default()
                .concurrency(2)
                .debounce(Duration::from_millis(50)),
        )
        .shutdown_on_signal()
        .run(
            issue_queue::reconcile,
            issue_queue::error_policy,
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));
    let task_controller = controller
        .run(agent_task::reconcile, agent_task::error_policy, ctx)
        .for_each(|_| futures::future::ready(()));
    let outcome = tokio::select! {
        _ = async { futures::join!(task_controller, queue_controller) } => Ok(()),
        _ = leading.wait_for(|leader| !*leader) => Err(StartupError::LostLeadership),
    };
    admission.abort();
    info!("shut down");
    outcome
}

/// Lists one object to tell "CRD missing" and "not allowed" apart from everything else.
async fn preflight<K>(
    client: &Client,
    namespace: Option<&str>,
    kind: &'static str,
) -> Result<(), StartupError>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = scoped(client, namespace);
    match api.list(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => {
            Err(StartupError::MissingCrd { kind })
        }
        Err(source) => Err(StartupError::Forbidden { kind, source }),
    }
}

/// The API of `K` in the watched namespace, or in all namespaces.
fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

/// `<host name>-<process id>`: unique among replicas and across restarts.
fn default_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "raibid-operator".into());
    format!("{host}-{}", std::process::id())
}

/// Mirrors a watch into a cache and wakes admission on every change.
fn watch_into_store<K>(api: Api<K>, config: watcher::Config, wakeup: Arc<Notify>) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(api, config).modify(|object| {
            // Managed fields are large and never read here.
            object.managed_fields_mut().clear();
        }),
    )
    .default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            match stream.try_next().await {
                Ok(Some(_)) => wakeup.notify_one(),
                Ok(None) => break,
                Err(error) => warn!(%error, "watch failed; retrying"),
            }
        }
    });
    reader
}
