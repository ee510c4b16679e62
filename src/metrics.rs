//! Prometheus metrics of the operator, served on `/metrics`.

use std::time::Instant;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub phase: &'static str,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    pub namespace: String,
    pub queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub event: String,
    pub outcome: &'static str,
}

/// Every metric the operator exports.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ControllerLabel, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Family<ControllerLabel, Histogram>,
    pub task_outcomes: Family<OutcomeLabels, Counter>,
    pub admissions: Counter,
    pub admission_passes: Counter,
    pub queued_tasks: Gauge,
    pub webhook_deliveries: Family<DeliveryLabels, Counter>,
    pub github_rate_limit_remaining: Family<QueueLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("raibid");
        let reconciles = Family::<ControllerLabel, Counter>::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let reconcile_duration = Family::<ControllerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0])
        });
        let task_outcomes = Family::<OutcomeLabels, Counter>::default();
        let admissions = Counter::default();
        let admission_passes = Counter::default();
        let queued_tasks = Gauge::default();
        let webhook_deliveries = Family::<DeliveryLabels, Counter>::default();
        let github_rate_limit_remaining = Family::<QueueLabel, Gauge>::default();
        registry.register("reconciles", "Reconciliations run", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciliations that failed, by reason",
            reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconciliation took",
            reconcile_duration.clone(),
        );
        registry.register(
            "agent_task_outcomes",
            "AgentTasks that ended, by phase and reason",
            task_outcomes.clone(),
        );
        registry.register(
            "admissions",
            "Agent attempts admitted onto a GPU",
            admissions.clone(),
        );
        registry.register(
            "admission_passes",
            "Admission decisions computed",
            admission_passes.clone(),
        );
        registry.register(
            "queued_agent_tasks",
            "AgentTasks waiting for admission",
            queued_tasks.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "GitHub webhook deliveries by event and outcome",
            webhook_deliveries.clone(),
        );
        registry.register(
            "github_rate_limit_remaining",
            "GitHub API requests left in the current rate-limit window, per queue",
            github_rate_limit_remaining.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            task_outcomes,
            admissions,
            admission_passes,
            queued_tasks,
            webhook_deliveries,
            github_rate_limit_remaining,
        }
    }
}

impl Metrics {
    /// Counts a reconciliation and records its duration when the returned guard drops.
    pub fn reconcile_started(&self, controller: &'static str) -> ReconcileTimer<'_> {
        self.reconciles
            .get_or_create(&ControllerLabel { controller })
            .inc();
        ReconcileTimer {
            metrics: self,
            controller,
            started: Instant::now(),
        }
    }

    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Records a reconciliation's duration on drop, whichever way it returns.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    controller: &'static str,
    started: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .reconcile_duration
            .get_or_create(&ControllerLabel {
                controller: self.controller,
            })
            .observe(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_and_counters_show_up_in_the_exposition() {
        let metrics = Metrics::default();
        drop(metrics.reconcile_started("agenttask"));
        metrics
            .reconcile_errors
            .get_or_create(&ErrorLabels {
                controller: "agenttask",
                reason: "KubeApi",
            })
            .inc();
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(r#"raibid_reconciles_total{controller="agenttask"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"raibid_reconcile_duration_seconds_count{controller="agenttask"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"raibid_reconcile_errors_total{controller="agenttask",reason="KubeApi"} 1"#
            ),
            "{text}"
        );
    }
}
