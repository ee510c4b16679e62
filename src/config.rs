//! Command line and environment of the `raibid-operator` binary.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};

use crate::{crd::Duration, telemetry::LogFormat};

/// raibid-operator runs AI coding agents for GitHub issues on DGX Spark GPU nodes.
///
/// It reconciles two custom resources (group raibid.dev): AgentTask, one agent run as a GPU
/// pod, and IssueQueue, a repository's issue queue. Install the CRDs first:
/// `kubectl apply -f crds/crds.yaml` (or the Helm chart).
#[derive(Debug, Parser)]
#[command(name = "raibid-operator", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator against the cluster of the current kubeconfig (or in-cluster config).
    Run(RunConfig),
    /// Print the CustomResourceDefinitions as YAML.
    Crds,
    /// Ask the rules about GitHub data, offline: prints one JSON object.
    #[command(subcommand)]
    Explain(ExplainCommand),
}

/// What `explain` looks at. Input files hold GitHub REST JSON; `--queue` applies an
/// IssueQueue manifest's overrides (labels, headings, answerers, priorities, profiles).
#[derive(Debug, Subcommand)]
pub enum ExplainCommand {
    /// One issue: `{"issue": …, "comments": […], "closed_issues": [numbers]}` → its state,
    /// questions, unanswered questions, dependencies, priority, issue ID, profile and why.
    Issue(ExplainArgs),
    /// A repository's issues: `{"issues": [{"issue": …, "comments": […]}, …],
    /// "closed_issues": […]}` → the order in which ready issues would start.
    Queue(ExplainArgs),
    /// A pull request: `{"pull_request": …}` → the issues it links.
    Pr(ExplainPrArgs),
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// JSON input file.
    #[arg(long)]
    pub file: String,
    /// IssueQueue manifest (YAML) whose overrides apply.
    #[arg(long)]
    pub queue: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExplainPrArgs {
    /// JSON input file.
    #[arg(long)]
    pub file: String,
}

/// Settings of `raibid-operator run`. Every flag can also be set by the environment variable
/// named in its help.
#[derive(Clone, Debug, Args)]
pub struct RunConfig {
    /// Watch AgentTasks in this namespace only (default: all namespaces). Nodes and GPU pods are
    /// always read cluster-wide, since GPUs are shared by every namespace.
    #[arg(long, env = "RAIBID_NAMESPACE")]
    pub namespace: Option<String>,

    /// Address of the health, readiness and metrics endpoints.
    #[arg(long, env = "RAIBID_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// How many AgentTasks are reconciled at the same time.
    #[arg(long, env = "RAIBID_CONCURRENCY", default_value_t = 4)]
    pub concurrency: u16,

    /// Wait before the first retry of a failed attempt; doubles with each further attempt.
    #[arg(long, env = "RAIBID_RETRY_BACKOFF", default_value = "10s")]
    pub retry_backoff: Duration,

    /// Longest wait between attempts.
    #[arg(long, env = "RAIBID_RETRY_BACKOFF_MAX", default_value = "5m")]
    pub retry_backoff_max: Duration,

    /// Log format: text for a terminal, json in a cluster.
    #[arg(long, env = "RAIBID_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Name of this operator instance in Kubernetes Events and the leader lease (in a
    /// cluster: the pod name). Default: host name and process id.
    #[arg(long, env = "POD_NAME")]
    pub instance: Option<String>,

    /// Namespace of the leader-election Lease (in a cluster: the operator's own namespace).
    /// Default: --namespace, else `default`.
    #[arg(long, env = "POD_NAMESPACE")]
    pub leader_election_namespace: Option<String>,

    /// How long a leader's lease lasts without renewal; another replica takes over after it.
    #[arg(long, env = "RAIBID_LEASE_DURATION", default_value = "15s")]
    pub lease_duration: Duration,
}
