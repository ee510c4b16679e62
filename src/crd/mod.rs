//! Custom resource types of the `raibid.dev/v1alpha1` API. Types only, no I/O.

pub mod agent_task;
pub mod conditions;
pub mod duration;
pub mod issue_queue;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, ValidationRule,
};
use kube::CustomResourceExt;

pub use agent_task::{
    AdmissionKey, AgentProfile, AgentTask, AgentTaskSpec, AgentTaskStatus, Phase, PullRequestRef,
    RunLimits,
};
pub use duration::Duration;
pub use issue_queue::{IssueQueue, IssueQueueSpec, IssueQueueStatus, QueueProfile};

/// API group of the operator's resources.
pub const GROUP: &str = "raibid.dev";

/// Longest AgentTask name: its pods are named `<task>-<attempt>` and carry the task name in a
/// label value, which Kubernetes limits to 63 characters.
pub const MAX_TASK_NAME_LEN: usize = 58;

/// The CustomResourceDefinitions of this operator, as installed in a cluster.
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut agent_task = AgentTask::crd();
    add_root_rule(
        &mut agent_task,
        &format!("size(self.metadata.name) <= {MAX_TASK_NAME_LEN}"),
        &format!(
            "AgentTask names are at most {MAX_TASK_NAME_LEN} characters (pod names and labels derive from them)"
        ),
    );
    let mut crds = vec![agent_task, IssueQueue::crd()];
    for crd in &mut crds {
        normalize_integer_formats(crd);
    }
    crds
}

/// schemars names Rust's unsigned integers (`uint32`…), formats Kubernetes does not know and
/// warns about on every apply; the range they imply is already in `minimum`.
fn normalize_integer_formats(crd: &mut CustomResourceDefinition) {
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                let unsigned = matches!(
                    map.get("format").and_then(|f| f.as_str()),
                    Some("uint8" | "uint16" | "uint32" | "uint64" | "uint")
                );
                if unsigned {
                    map.insert("format".into(), "int64".into());
                }
                map.values_mut().for_each(walk);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    for version in &mut crd.spec.versions {
        if let Some(schema) = version.schema.as_mut()
            && let Ok(mut json) = serde_json::to_value(&*schema)
        {
            walk(&mut json);
            if let Ok(normalized) = serde_json::from_value(json) {
                *schema = normalized;
            }
        }
    }
}

/// The CRDs as one multi-document YAML stream, as committed in `crds/`.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}

/// Rules about `metadata` can only sit on the root schema, which the derive macro owns.
fn add_root_rule(crd: &mut CustomResourceDefinition, rule: &str, message: &str) {
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            schema
                .x_kubernetes_validations
                .get_or_insert_with(Vec::new)
                .push(ValidationRule {
                    rule: rule.to_owned(),
                    message: Some(message.to_owned()),
                    ..ValidationRule::default()
                });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `crds/` and the chart's copy are what users install; they must be exactly what the Rust
    /// types say.
    #[test]
    fn committed_crds_match_the_rust_types() {
        let generated = crds_yaml().expect("CRDs serialize");
        for (path, committed) in [
            ("crds/crds.yaml", include_str!("../../crds/crds.yaml")),
            (
                "charts/raibid-operator/crds/crds.yaml",
                include_str!("../../charts/raibid-operator/crds/crds.yaml"),
            ),
        ] {
            assert!(
                committed == generated,
                "{path} is out of date: run `cargo run --bin crdgen | tee crds/crds.yaml > charts/raibid-operator/crds/crds.yaml`"
            );
        }
    }

    #[test]
    fn every_schema_field_has_a_description() {
        fn walk(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
            if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
                for (name, child) in props {
                    let child_path = format!("{path}.{name}");
                    if child.get("description").is_none()
                        && !["metadata", "apiVersion", "kind"].contains(&name.as_str())
                    {
                        missing.push(child_path.clone());
                    }
                    walk(&child_path, child, missing);
                }
            }
            if let Some(items) = schema.get("items") {
                walk(&format!("{path}[]"), items, missing);
            }
        }
        for crd in crds() {
            let kind = crd.spec.names.kind.clone();
            // Fields of Kubernetes' own types (EnvVar, Affinity, Condition...) are documented
            // upstream; check ours.
            let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
            let mut missing = Vec::new();
            walk(&kind, &schema["openAPIV3Schema"], &mut missing);
            missing.retain(|p| {
                !["env[]", "tolerations[]", "affinity", "conditions[]"]
                    .iter()
                    .any(|upstream| p.contains(upstream))
            });
            assert!(
                missing.is_empty(),
                "fields without a description: {missing:#?}"
            );
        }
    }
}
