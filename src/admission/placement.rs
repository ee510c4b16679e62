//! Which nodes a pod may land on, and how many GPUs nodes and pods hold: the subset of the
//! kube-scheduler's filters that decide GPU admission. Pure functions over API objects.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeSelectorRequirement, NodeSelectorTerm, PodSpec, ResourceRequirements,
    Taint, Toleration,
};

/// Extended resource name of NVIDIA GPUs, as the device plugin advertises them.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// The scheduling constraints of a pod that decide which nodes may run it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Placement {
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    pub required_node_terms: Option<Vec<NodeSelectorTerm>>,
}

impl Placement {
    pub fn new(
        node_selector: BTreeMap<String, String>,
        tolerations: Vec<Toleration>,
        affinity: Option<&Affinity>,
    ) -> Self {
        let required_node_terms = affinity
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|na| {
                na.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|required| required.node_selector_terms.clone());
        Self {
            node_selector,
            tolerations,
            required_node_terms,
        }
    }

    pub fn of_pod(spec: &PodSpec) -> Self {
        Self::new(
            spec.node_selector.clone().unwrap_or_default(),
            spec.tolerations.clone().unwrap_or_default(),
            spec.affinity.as_ref(),
        )
    }

    /// Whether a pod with this placement may be scheduled onto `node` (ignoring resources).
    pub fn fits(&self, node: &Node) -> bool {
        let empty = BTreeMap::new();
        let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
        let name = node.metadata.name.as_deref().unwrap_or_default();
        self.node_selector
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && node
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .into_iter()
                .flatten()
                .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
                .all(|taint| self.tolerations.iter().any(|t| tolerates(t, taint)))
            && self
                .required_node_terms
                .as_ref()
                .is_none_or(|terms| terms.iter().any(|term| term_matches(term, labels, name)))
    }
}

/// Whether the node takes new pods at all: Ready and not cordoned.
pub fn is_schedulable(node: &Node) -> bool {
    let cordoned = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    ready && !cordoned
}

/// GPUs the node offers to pods.
pub fn allocatable_gpus(node: &Node) -> u32 {
    node.status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .and_then(|a| a.get(GPU_RESOURCE))
        .and_then(|q| q.0.parse().ok())
        .unwrap_or(0)
}

/// GPUs a pod holds while it runs: the larger of its app containers' sum and any single init
/// container, as the scheduler counts it.
pub fn pod_gpus(spec: &PodSpec) -> u32 {
    let of = |r: &Option<ResourceRequirements>| -> u32 {
        r.as_ref()
            .and_then(|r| {
                // Extended resources must have request == limit; either one tells.
                r.limits
                    .as_ref()
                    .and_then(|l| l.get(GPU_RESOURCE))
                    .or_else(|| r.requests.as_ref().and_then(|l| l.get(GPU_RESOURCE)))
            })
            .and_then(|q| q.0.parse().ok())
            .unwrap_or(0)
    };
    let app: u32 = spec.containers.iter().map(|c| of(&c.resources)).sum();
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| of(&c.resources))
        .max()
        .unwrap_or(0);
    app.max(init)
}

fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect_ok = toleration
        .effect
        .as_deref()
        .is_none_or(|e| e.is_empty() || e == taint.effect);
    let key = toleration.key.as_deref().unwrap_or_default();
    let exists = toleration.operator.as_deref() == Some("Exists");
    let key_ok = if key.is_empty() {
        exists
    } else {
        key == taint.key
            && (exists
                || toleration.value.as_deref().unwrap_or_default()
                    == taint.value.as_deref().unwrap_or_default())
    };
    effect_ok && key_ok
}

fn term_matches(term: &NodeSelectorTerm, labels: &BTreeMap<String, String>, name: &str) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        // The API defines an empty term as matching nothing.
        return false;
    }
    expressions
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            let value = (r.key == "metadata.name").then_some(name);
            requirement_matches(r, value)
        })
}

fn requirement_matches(requirement: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = requirement.values.as_deref().unwrap_or_default();
    let as_int = |s: &str| s.parse::<i64>().ok();
    match requirement.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| values.iter().all(|x| x != v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(actual), Some(bound)) = (
                value.and_then(as_int),
                values.first().and_then(|b| as_int(b)),
            ) else {
                return false;
            };
            if requirement.operator == "Gt" {
                actual > bound
            } else {
                actual < bound
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::core::v1::{
            Container, NodeAffinity, NodeCondition, NodeSelector, NodeSpec, NodeStatus,
        },
        apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::ObjectMeta},
    };

    use super::*;

    fn node(name: &str, labels: &[(&str, &str)], taints: &[(&str, &str)], gpus: u32) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(
                    taints
                        .iter()
                        .map(|(key, effect)| Taint {
                            key: key.to_string(),
                            value: Some("present".into()),
                            effect: effect.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                allocatable: Some([(GPU_RESOURCE.to_string(), Quantity(gpus.to_string()))].into()),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn gpu_toleration() -> Toleration {
        Toleration {
            key: Some(GPU_RESOURCE.into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        }
    }

    fn selector(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn requirement(key: &str, operator: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn with_required(terms: Vec<NodeSelectorTerm>) -> Placement {
        let affinity = Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: terms,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        Placement::new(BTreeMap::new(), vec![], Some(&affinity))
    }

    fn term(reqs: Vec<NodeSelectorRequirement>) -> NodeSelectorTerm {
        NodeSelectorTerm {
            match_expressions: Some(reqs),
            ..Default::default()
        }
    }

    #[test]
    fn node_selector_must_be_a_subset_of_the_labels() {
        let spark = node(
            "spark",
            &[("kubernetes.io/arch", "arm64"), ("gpu", "GB10")],
            &[],
            1,
        );
        let fits =
            |pairs: &[(&str, &str)]| Placement::new(selector(pairs), vec![], None).fits(&spark);
        assert!(fits(&[]));
        assert!(fits(&[("kubernetes.io/arch", "arm64")]));
        assert!(fits(&[("kubernetes.io/arch", "arm64"), ("gpu", "GB10")]));
        assert!(!fits(&[("kubernetes.io/arch", "amd64")]));
        assert!(!fits(&[("zone", "a")]));
    }

    #[test]
    fn untolerated_scheduling_taints_keep_pods_off() {
        let tainted = node("spark", &[], &[(GPU_RESOURCE, "NoSchedule")], 1);
        assert!(!Placement::default().fits(&tainted));
        assert!(Placement::new(BTreeMap::new(), vec![gpu_toleration()], None).fits(&tainted));

        let prefer = node("soft", &[], &[(GPU_RESOURCE, "PreferNoSchedule")], 1);
        assert!(
            Placement::default().fits(&prefer),
            "PreferNoSchedule does not filter"
        );

        let execute = node("exec", &[], &[(GPU_RESOURCE, "NoExecute")], 1);
        assert!(
            !Placement::new(BTreeMap::new(), vec![gpu_toleration()], None).fits(&execute),
            "effect must match"
        );
    }

    #[test]
    fn toleration_forms() {
        let taint = Taint {
            key: "dedicated".into(),
            value: Some("agents".into()),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let t = |key: Option<&str>, op: Option<&str>, value: Option<&str>, effect: Option<&str>| {
            Toleration {
                key: key.map(Into::into),
                operator: op.map(Into::into),
                value: value.map(Into::into),
                effect: effect.map(Into::into),
                ..Default::default()
            }
        };
        assert!(tolerates(
            &t(Some("dedicated"), Some("Equal"), Some("agents"), None),
            &taint
        ));
        assert!(
            tolerates(
                &t(Some("dedicated"), None, Some("agents"), Some("NoSchedule")),
                &taint
            ),
            "Equal is the default"
        );
        assert!(!tolerates(
            &t(Some("dedicated"), Some("Equal"), Some("other"), None),
            &taint
        ));
        assert!(tolerates(
            &t(Some("dedicated"), Some("Exists"), None, None),
            &taint
        ));
        assert!(
            tolerates(&t(None, Some("Exists"), None, None), &taint),
            "empty key + Exists tolerates all"
        );
        assert!(!tolerates(&t(None, None, None, None), &taint));
        assert!(!tolerates(
            &t(Some("other"), Some("Exists"), None, None),
            &taint
        ));
    }

    #[test]
    fn required_node_affinity_operators() {
        let n = node("n1", &[("arch", "arm64"), ("gpus", "4")], &[], 1);
        let fits = |reqs| with_required(vec![term(reqs)]).fits(&n);
        assert!(fits(vec![requirement("arch", "In", &["arm64", "amd64"])]));
        assert!(!fits(vec![requirement("arch", "In", &["amd64"])]));
        assert!(fits(vec![requirement("arch", "NotIn", &["amd64"])]));
        assert!(
            fits(vec![requirement("zone", "NotIn", &["a"])]),
            "NotIn holds for a missing label"
        );
        assert!(fits(vec![requirement("arch", "Exists", &[])]));
        assert!(!fits(vec![requirement("zone", "Exists", &[])]));
        assert!(fits(vec![requirement("zone", "DoesNotExist", &[])]));
        assert!(fits(vec![requirement("gpus", "Gt", &["2"])]));
        assert!(!fits(vec![requirement("gpus", "Lt", &["2"])]));
        assert!(
            !fits(vec![requirement("arch", "Gt", &["2"])]),
            "Gt on a non-number fails"
        );
        assert!(!fits(vec![requirement("arch", "Bogus", &[])]));
        assert!(
            !fits(vec![
                requirement("arch", "In", &["arm64"]),
                requirement("zone", "Exists", &[])
            ]),
            "a term is an AND"
        );
    }

    #[test]
    fn terms_are_ored_and_empty_terms_match_nothing() {
        let n = node("n1", &[("arch", "arm64")], &[], 1);
        let miss = term(vec![requirement("arch", "In", &["amd64"])]);
        let hit = term(vec![requirement("arch", "In", &["arm64"])]);
        assert!(with_required(vec![miss.clone(), hit]).fits(&n));
        assert!(!with_required(vec![miss]).fits(&n));
        assert!(!with_required(vec![]).fits(&n));
        assert!(!with_required(vec![NodeSelectorTerm::default()]).fits(&n));
        let by_name = NodeSelectorTerm {
            match_fields: Some(vec![requirement("metadata.name", "In", &["n1"])]),
            ..Default::default()
        };
        assert!(with_required(vec![by_name]).fits(&n));
    }

    #[test]
    fn schedulable_means_ready_and_not_cordoned() {
        let mut n = node("n1", &[], &[], 1);
        assert!(is_schedulable(&n));
        n.spec.as_mut().unwrap().unschedulable = Some(true);
        assert!(!is_schedulable(&n));
        let mut not_ready = node("n2", &[], &[], 1);
        not_ready
            .status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()[0]
            .status = "False".into();
        assert!(!is_schedulable(&not_ready));
        let mut unknown = node("n3", &[], &[], 1);
        unknown.status = None;
        assert!(!is_schedulable(&unknown));
    }

    #[test]
    fn gpu_counts_of_nodes_and_pods() {
        assert_eq!(allocatable_gpus(&node("n", &[], &[], 2)), 2);
        let mut cpu_only = node("c", &[], &[], 0);
        cpu_only.status.as_mut().unwrap().allocatable = None;
        assert_eq!(allocatable_gpus(&cpu_only), 0);

        let container = |gpus: Option<u32>| Container {
            resources: gpus.map(|g| ResourceRequirements {
                limits: Some([(GPU_RESOURCE.to_string(), Quantity(g.to_string()))].into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let spec = PodSpec {
            containers: vec![container(Some(1)), container(Some(1)), container(None)],
            init_containers: Some(vec![container(Some(1))]),
            ..Default::default()
        };
        assert_eq!(pod_gpus(&spec), 2);
        let init_heavy = PodSpec {
            containers: vec![container(Some(1))],
            init_containers: Some(vec![container(Some(3))]),
            ..Default::default()
        };
        assert_eq!(pod_gpus(&init_heavy), 3);
        assert_eq!(pod_gpus(&PodSpec::default()), 0);
    }
}
