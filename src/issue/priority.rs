//! Priority tiers (contract §5).

use serde::Serialize;

use crate::crd::issue_queue::PriorityLabels;

/// Priority tier of an issue; earlier variants are started first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Critical,
    High,
    Medium,
    /// No priority label.
    None,
    Low,
}

impl Priority {
    /// The tier as used in `AgentTask.spec.admission.tier` (0 first).
    pub fn tier(self) -> u8 {
        self as u8
    }
}

/// The highest tier any of `labels` names (exact name, case-insensitive).
pub fn priority(labels: &[String], names: &PriorityLabels) -> Priority {
    let has = |name: &str| labels.iter().any(|l| l.eq_ignore_ascii_case(name));
    [
        (Priority::Critical, &names.critical),
        (Priority::High, &names.high),
        (Priority::Medium, &names.medium),
    ]
    .into_iter()
    .find(|(_, name)| has(name))
    .map(|(p, _)| p)
    .unwrap_or(if has(&names.low) {
        Priority::Low
    } else {
        Priority::None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(labels: &[&str]) -> Priority {
        let labels: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
        priority(&labels, &PriorityLabels::default())
    }

    #[test]
    fn tiers_from_labels() {
        assert_eq!(p(&["priority:critical"]), Priority::Critical);
        assert_eq!(p(&["Priority:High"]), Priority::High);
        assert_eq!(p(&["PRIORITY:MEDIUM", "bug"]), Priority::Medium);
        assert_eq!(p(&["bug"]), Priority::None);
        assert_eq!(p(&[]), Priority::None);
        assert_eq!(p(&["priority:low"]), Priority::Low);
        assert_eq!(p(&["priority: high"]), Priority::None, "exact name only");
        assert_eq!(p(&["priority:highest"]), Priority::None);
    }

    #[test]
    fn several_labels_take_the_highest() {
        assert_eq!(
            p(&["priority:low", "priority:critical", "priority:medium"]),
            Priority::Critical
        );
        assert_eq!(p(&["priority:low", "priority:medium"]), Priority::Medium);
    }

    #[test]
    fn order_is_critical_high_medium_none_low() {
        let mut tiers = vec![
            Priority::Low,
            Priority::None,
            Priority::Critical,
            Priority::Medium,
            Priority::High,
        ];
        tiers.sort();
        assert_eq!(
            tiers,
            vec![
                Priority::Critical,
                Priority::High,
                Priority::Medium,
                Priority::None,
                Priority::Low
            ]
        );
        assert_eq!(
            Priority::None.tier(),
            3,
            "hand-made tasks share the no-priority tier"
        );
    }

    #[test]
    fn label_names_are_configurable() {
        let names = PriorityLabels {
            critical: "P0".into(),
            high: "P1".into(),
            medium: "P2".into(),
            low: "P4".into(),
        };
        assert_eq!(priority(&["p1".to_string()], &names), Priority::High);
    }
}
