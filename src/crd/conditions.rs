//! `status.conditions` as the Kubernetes API conventions describe them: one entry per type,
//! `lastTransitionTime` moves only when the status flips.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

/// The observed truth of a condition type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(value: bool) -> Self {
        if value { Self::True } else { Self::False }
    }
}

/// A condition to record; turned into a [`Condition`] by [`upsert`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionUpdate<'a> {
    pub type_: &'a str,
    pub status: ConditionStatus,
    pub reason: &'a str,
    pub message: String,
}

/// Records `update` in `conditions`, keeping `lastTransitionTime` when the status is unchanged.
pub fn upsert(
    conditions: &mut Vec<Condition>,
    update: ConditionUpdate<'_>,
    observed_generation: Option<i64>,
    now: Timestamp,
) {
    let status = update.status.as_str();
    let transition_time = conditions
        .iter()
        .find(|c| c.type_ == update.type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    let condition = Condition {
        type_: update.type_.to_owned(),
        status: status.to_owned(),
        reason: update.reason.to_owned(),
        message: update.message,
        last_transition_time: transition_time,
        observed_generation,
    };
    match conditions.iter_mut().find(|c| c.type_ == update.type_) {
        Some(existing) => *existing = condition,
        None => conditions.push(condition),
    }
}

/// The condition of this type, if recorded.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition of this type is recorded with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn update(status: ConditionStatus, reason: &str) -> ConditionUpdate<'_> {
        ConditionUpdate {
            type_: "Admitted",
            status,
            reason,
            message: format!("because {reason}"),
        }
    }

    #[test]
    fn adds_a_missing_condition_with_the_current_time() {
        let mut conditions = Vec::new();
        upsert(
            &mut conditions,
            update(ConditionStatus::False, "WaitingForGpu"),
            Some(3),
            at(10),
        );
        assert_eq!(conditions.len(), 1);
        let c = &conditions[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "WaitingForGpu")
        );
        assert_eq!(c.last_transition_time, Time(at(10)));
        assert_eq!(c.observed_generation, Some(3));
    }

    #[test]
    fn keeps_the_transition_time_while_the_status_holds() {
        let mut conditions = Vec::new();
        upsert(
            &mut conditions,
            update(ConditionStatus::False, "WaitingForGpu"),
            None,
            at(10),
        );
        upsert(
            &mut conditions,
            update(ConditionStatus::False, "NoFittingNode"),
            None,
            at(20),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].reason, "NoFittingNode");
        assert_eq!(conditions[0].last_transition_time, Time(at(10)));
    }

    #[test]
    fn moves_the_transition_time_when_the_status_flips() {
        let mut conditions = Vec::new();
        upsert(
            &mut conditions,
            update(ConditionStatus::False, "WaitingForGpu"),
            None,
            at(10),
        );
        upsert(
            &mut conditions,
            update(ConditionStatus::True, "GpuReserved"),
            None,
            at(30),
        );
        assert_eq!(conditions[0].last_transition_time, Time(at(30)));
        assert!(is_true(&conditions, "Admitted"));
        assert!(!is_true(&conditions, "Running"));
    }
}
