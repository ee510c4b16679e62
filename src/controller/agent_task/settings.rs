//! What a task runs with once its profile is resolved and defaults are applied.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::core::v1::Toleration;

use crate::{
    admission::placement::{GPU_RESOURCE, Placement},
    crd::{
        AgentProfile, AgentTask, QueueProfile,
        agent_task::{
            DEFAULT_MAX_RETRIES, DEFAULT_PENDING_TIMEOUT, DEFAULT_RUN_TIMEOUT,
            DEFAULT_UNSCHEDULABLE_TIMEOUT, RunLimits,
        },
        issue_queue::{GitHubAccess, GitHubAuth, SecretKeyRef},
    },
};

/// Node labels every DGX Spark carries; agent pods go there unless a profile says otherwise.
pub const DEFAULT_NODE_SELECTOR: [(&str, &str); 2] = [
    ("kubernetes.io/arch", "arm64"),
    ("nvidia.com/gpu.product", "NVIDIA-GB10"),
];

/// Name recorded in `status.profile` for a profile given inline.
pub const INLINE_PROFILE: &str = "inline";

/// A task's profile with every default applied.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSettings {
    pub profile_name: String,
    pub agent: AgentProfile,
    pub run_timeout: Duration,
    pub unschedulable_timeout: Duration,
    pub pending_timeout: Duration,
    pub max_retries: u32,
    /// Where the agent's `GITHUB_TOKEN` comes from; none for a task without a queue.
    pub github_credential: Option<AgentCredential>,
}

/// The GitHub credential an agent gets: as small as the queue's auth mode allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentCredential {
    /// The queue authenticates with a token: the agent gets that token's Secret.
    QueueToken(SecretKeyRef),
    /// The queue is a GitHub App installation: the agent gets an installation token for the
    /// task's repository alone, issued into a Secret the task owns.
    RepositoryToken,
}

impl AgentCredential {
    /// The agent pushes its branch and opens its pull request with the smallest credential
    /// the queue's auth mode allows.
    pub fn for_queue(github: &GitHubAccess) -> Option<Self> {
        match github.auth() {
            GitHubAuth::App(_) => Some(Self::RepositoryToken),
            GitHubAuth::Token(token) => Some(Self::QueueToken(token.clone())),
            GitHubAuth::Missing => None,
        }
    }
}

/// Why a task's profile cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProfileError {
    #[error("profileRef {profile:?} is not a profile of IssueQueue {queue:?}")]
    UnknownProfile { queue: String, profile: String },
    #[error("the task has neither an inline profile nor a profileRef")]
    NoProfile,
}

impl RunSettings {
    /// Resolves the task's profile: inline, or `queue_profiles` looked up by `profileRef`.
    pub fn resolve(
        task: &AgentTask,
        queue_profiles: &[QueueProfile],
    ) -> Result<Self, ProfileError> {
        let spec = &task.spec;
        let (profile_name, agent) = match (&spec.profile, &spec.profile_ref) {
            (Some(inline), _) => (INLINE_PROFILE.to_owned(), inline.clone()),
            (None, Some(wanted)) => {
                let found = queue_profiles
                    .iter()
                    .find(|p| &p.name == wanted)
                    .ok_or_else(|| ProfileError::UnknownProfile {
                        queue: spec.queue_ref.clone().unwrap_or_default(),
                        profile: wanted.clone(),
                    })?;
                (found.name.clone(), found.agent.clone())
            }
            (None, None) => return Err(ProfileError::NoProfile),
        };
        let limit = |pick: fn(&RunLimits) -> Option<crate::crd::Duration>,
                     default: crate::crd::Duration| {
            spec.limits
                .as_ref()
                .and_then(pick)
                .or_else(|| agent.limits.as_ref().and_then(pick))
                .unwrap_or(default)
                .as_std()
        };
        Ok(Self {
            run_timeout: limit(|l| l.run_timeout, DEFAULT_RUN_TIMEOUT),
            unschedulable_timeout: limit(
                |l| l.unschedulable_timeout,
                DEFAULT_UNSCHEDULABLE_TIMEOUT,
            ),
            pending_timeout: limit(|l| l.pending_timeout, DEFAULT_PENDING_TIMEOUT),
            max_retries: spec
                .max_retries
                .or(agent.max_retries)
                .unwrap_or(DEFAULT_MAX_RETRIES),
            profile_name,
            agent,
            github_credential: None,
        })
    }

    pub fn node_selector(&self) -> BTreeMap<String, String> {
        self.agent.node_selector.clone().unwrap_or_else(|| {
            DEFAULT_NODE_SELECTOR
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
    }

    pub fn tolerations(&self) -> Vec<Toleration> {
        self.agent.tolerations.clone().unwrap_or_else(|| {
            vec![Toleration {
                key: Some(GPU_RESOURCE.into()),
                operator: Some("Exists".into()),
                effect: Some("NoSchedule".into()),
                ..Toleration::default()
            }]
        })
    }

    pub fn placement(&self) -> Placement {
        Placement::new(
            self.node_selector(),
            self.tolerations(),
            self.agent.affinity.as_ref(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{AgentTaskSpec, Duration as CrdDuration};

    fn profile(image: &str) -> AgentProfile {
        AgentProfile {
            image: image.into(),
            gpus: 1,
            ..Default::default()
        }
    }

    fn task(spec: AgentTaskSpec) -> AgentTask {
        AgentTask::new("t", spec)
    }

    #[test]
    fn agents_get_the_smallest_credential_of_their_queues_auth_mode() {
        let secret = |name: &str| SecretKeyRef {
            name: name.into(),
            key: "k".into(),
        };
        let app = crate::crd::issue_queue::GitHubApp {
            app_id: 1,
            installation_id: 2,
            private_key_secret_ref: secret("app-key"),
        };
        let access = |app: Option<_>, token: Option<SecretKeyRef>| GitHubAccess {
            app,
            token_secret_ref: token,
            ..Default::default()
        };
        assert_eq!(
            AgentCredential::for_queue(&access(Some(app.clone()), None)),
            Some(AgentCredential::RepositoryToken),
            "an App hands out per-task repository tokens, never its key"
        );
        assert_eq!(
            AgentCredential::for_queue(&access(None, Some(secret("gh")))),
            Some(AgentCredential::QueueToken(secret("gh")))
        );
        assert_eq!(
            AgentCredential::for_queue(&access(Some(app), Some(secret("gh")))),
            Some(AgentCredential::RepositoryToken),
            "the App wins, as in the queue's own client"
        );
        assert_eq!(AgentCredential::for_queue(&access(None, None)), None);
    }

    #[test]
    fn inline_profile_gets_the_documented_defaults() {
        let settings = RunSettings::resolve(
            &task(AgentTaskSpec {
                profile: Some(profile("agent:1")),
                ..Default::default()
            }),
            &[],
        )
        .unwrap();
        assert_eq!(settings.profile_name, INLINE_PROFILE);
        assert_eq!(settings.run_timeout, Duration::from_secs(7200));
        assert_eq!(settings.unschedulable_timeout, Duration::from_secs(300));
        assert_eq!(settings.pending_timeout, Duration::from_secs(600));
        assert_eq!(settings.max_retries, 1);
        assert_eq!(
            settings.node_selector(),
            BTreeMap::from([
                ("kubernetes.io/arch".to_string(), "arm64".to_string()),
                (
                    "nvidia.com/gpu.product".to_string(),
                    "NVIDIA-GB10".to_string()
                ),
            ])
        );
        assert_eq!(settings.tolerations()[0].key.as_deref(), Some(GPU_RESOURCE));
    }

    #[test]
    fn task_limits_beat_profile_limits_beat_defaults() {
        let mut agent = profile("agent:1");
        agent.limits = Some(RunLimits {
            run_timeout: Some(CrdDuration::from_secs(60)),
            pending_timeout: Some(CrdDuration::from_secs(30)),
            ..Default::default()
        });
        agent.max_retries = Some(3);
        let spec = AgentTaskSpec {
            profile: Some(agent),
            limits: Some(RunLimits {
                run_timeout: Some(CrdDuration::from_secs(10)),
                ..Default::default()
            }),
            max_retries: Some(0),
            ..Default::default()
        };
        let settings = RunSettings::resolve(&task(spec), &[]).unwrap();
        assert_eq!(settings.run_timeout, Duration::from_secs(10));
        assert_eq!(settings.pending_timeout, Duration::from_secs(30));
        assert_eq!(settings.unschedulable_timeout, Duration::from_secs(300));
        assert_eq!(settings.max_retries, 0);
    }

    #[test]
    fn profile_ref_resolves_against_the_queue() {
        let queue_profiles = vec![
            QueueProfile {
                name: "small".into(),
                agent: profile("small:1"),
                ..Default::default()
            },
            QueueProfile {
                name: "large".into(),
                agent: profile("large:1"),
                ..Default::default()
            },
        ];
        let spec = AgentTaskSpec {
            queue_ref: Some("q".into()),
            profile_ref: Some("large".into()),
            ..Default::default()
        };
        let settings = RunSettings::resolve(&task(spec.clone()), &queue_profiles).unwrap();
        assert_eq!(
            (
                settings.profile_name.as_str(),
                settings.agent.image.as_str()
            ),
            ("large", "large:1")
        );

        let missing = AgentTaskSpec {
            profile_ref: Some("huge".into()),
            ..spec
        };
        assert_eq!(
            RunSettings::resolve(&task(missing), &queue_profiles),
            Err(ProfileError::UnknownProfile {
                queue: "q".into(),
                profile: "huge".into()
            })
        );
        assert_eq!(
            RunSettings::resolve(&task(AgentTaskSpec::default()), &[]),
            Err(ProfileError::NoProfile)
        );
    }

    #[test]
    fn explicit_placement_replaces_the_default() {
        let mut agent = profile("agent:1");
        agent.node_selector = Some(BTreeMap::new());
        agent.tolerations = Some(vec![]);
        let settings = RunSettings::resolve(
            &task(AgentTaskSpec {
                profile: Some(agent),
                ..Default::default()
            }),
            &[],
        )
        .unwrap();
        assert!(settings.node_selector().is_empty());
        assert!(settings.tolerations().is_empty());
    }
}
