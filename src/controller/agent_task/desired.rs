//! The objects an attempt needs, built from the task alone: its pod and its context file.
//! Pure, so the exact pod the operator creates is unit-tested.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::core::v1::{
        Capabilities, ConfigMap, ConfigMapVolumeSource, Container, EmptyDirVolumeSource,
        EnvFromSource, EnvVar, EnvVarSource, Pod, PodSecurityContext, PodSpec,
        ResourceRequirements, SeccompProfile, Secret, SecretEnvSource, SecretKeySelector,
        SecretVolumeSource, SecurityContext, Volume, VolumeMount,
    },
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::ObjectMeta},
    jiff::Timestamp,
};
use kube::{Resource, ResourceExt};

use super::settings::{AgentCredential, RunSettings};
use crate::{
    admission::placement::GPU_RESOURCE,
    crd::{AgentTask, issue_queue::SecretKeyRef},
};

/// Label on everything the operator creates.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "raibid-operator";
/// Label naming the AgentTask a pod belongs to.
pub const TASK_LABEL: &str = "raibid.dev/task";
/// Label carrying the attempt number of a pod.
pub const ATTEMPT_LABEL: &str = "raibid.dev/attempt";
/// Label carrying the issue number of a pod, when the task has one.
pub const ISSUE_LABEL: &str = "raibid.dev/issue";
/// Label naming the IssueQueue of a pod, when the task has one.
pub const QUEUE_LABEL: &str = "raibid.dev/queue";

/// Where the agent finds its context file.
pub const CONTEXT_DIR: &str = "/var/run/raibid";
pub const CONTEXT_FILE: &str = "context.md";
/// Where the agent finds its repository token (kept fresh while it runs; `GITHUB_TOKEN` holds
/// the value the pod started with).
pub const TOKEN_DIR: &str = "/var/run/secrets/raibid.dev/github";
/// Key of the token in the task's credential Secret, and its file name.
pub const TOKEN_KEY: &str = "token";
/// Annotation on the credential Secret: when its token stops working (RFC 3339).
pub const TOKEN_EXPIRES_ANNOTATION: &str = "raibid.dev/token-expires-at";
/// What a repository token may do: push the branch, open the pull request, comment.
pub const REPOSITORY_TOKEN_PERMISSIONS: [(&str, &str); 3] = [
    ("contents", "write"),
    ("pull_requests", "write"),
    ("issues", "write"),
];
/// The agent's scratch space and working directory.
pub const WORKSPACE_DIR: &str = "/workspace";
/// The unprivileged user agents run as unless the image says otherwise.
pub const AGENT_UID: i64 = 1000;

const DEFAULT_CPU: &str = "2";
const DEFAULT_MEMORY: &str = "8Gi";
const DEFAULT_WORKSPACE_SIZE: &str = "50Gi";

/// Name of the pod of `attempt`: fixed, so that a second create is refused by the API server.
pub fn pod_name(task: &AgentTask, attempt: u32) -> String {
    format!("{}-{attempt}", task.name_any())
}

/// Name of the ConfigMap holding the task's context file.
pub fn context_name(task: &AgentTask) -> String {
    format!("{}-context", task.name_any())
}

/// Name of the Secret holding the task's repository token (GitHub App queues).
pub fn token_secret_name(task: &AgentTask) -> String {
    format!("{}-github-token", task.name_any())
}

/// The Secret a task's agent reads its repository token from: owned by the task, so it goes
/// with it at the latest; the controller deletes it as soon as the task ends.
pub fn token_secret(task: &AgentTask, token: &str, expires_at: Timestamp) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(token_secret_name(task)),
            namespace: task.namespace(),
            labels: Some(common_labels(task)),
            annotations: Some(BTreeMap::from([(
                TOKEN_EXPIRES_ANNOTATION.to_owned(),
                expires_at.to_string(),
            )])),
            owner_references: task.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            TOKEN_KEY.to_owned(),
            ByteString(token.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

/// Whether a token expiring at `expires_at` must be replaced now: well before it stops
/// working, so an agent reading the file never holds a dead token.
pub fn token_needs_renewal(expires_at: Option<Timestamp>, now: Timestamp) -> bool {
    expires_at.is_none_or(|at| {
        now.checked_add(TOKEN_RENEWAL_MARGIN)
            .is_ok_and(|horizon| horizon >= at)
    })
}

/// How long before expiry a repository token is replaced. GitHub's last an hour; the task is
/// looked at at least once a minute.
pub const TOKEN_RENEWAL_MARGIN: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// The Secret and key the agent's `GITHUB_TOKEN` comes from.
fn credential_source(task: &AgentTask, settings: &RunSettings) -> Option<SecretKeyRef> {
    match settings.github_credential.as_ref()? {
        AgentCredential::QueueToken(secret) => Some(secret.clone()),
        AgentCredential::RepositoryToken => Some(SecretKeyRef {
            name: token_secret_name(task),
            key: TOKEN_KEY.to_owned(),
        }),
    }
}

/// The branch the agent pushes to.
pub fn branch(task: &AgentTask) -> String {
    task.spec
        .branch
        .clone()
        .unwrap_or_else(|| format!("raibid/{}", task.name_any()))
}

/// The context file: what the agent is asked to do, in Markdown.
pub fn context_markdown(task: &AgentTask) -> String {
    let spec = &task.spec;
    let mut out = format!("# Agent task {}\n\n", task.name_any());
    out.push_str(&format!("- Repository: {}\n", spec.repository));
    if let Some(issue) = spec.issue {
        out.push_str(&format!(
            "- Issue: #{issue} (https://github.com/{}/issues/{issue})\n",
            spec.repository
        ));
    }
    out.push_str(&format!("- Branch: {}\n", branch(task)));
    if let Some(prompt) = &spec.prompt {
        out.push_str("\n## Instructions\n\n");
        out.push_str(prompt.trim_end());
        out.push('\n');
    }
    out
}

/// The ConfigMap with the context file, owned by the task.
pub fn context_config_map(task: &AgentTask) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(context_name(task)),
            namespace: task.namespace(),
            labels: Some(common_labels(task)),
            owner_references: task.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            CONTEXT_FILE.to_owned(),
            context_markdown(task),
        )])),
        ..ConfigMap::default()
    }
}

fn common_labels(task: &AgentTask) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
        (
            "app.kubernetes.io/name".to_owned(),
            "raibid-agent".to_owned(),
        ),
        (TASK_LABEL.to_owned(), task.name_any()),
    ]);
    if let Some(issue) = task.spec.issue {
        labels.insert(ISSUE_LABEL.to_owned(), issue.to_string());
    }
    if let Some(queue) = &task.spec.queue_ref {
        labels.insert(QUEUE_LABEL.to_owned(), queue.clone());
    }
    labels
}

/// The pod of one attempt.
pub fn agent_pod(task: &AgentTask, settings: &RunSettings, attempt: u32) -> Pod {
    let agent = &settings.agent;
    let mut labels = agent.pod_labels.clone();
    labels.extend(common_labels(task));
    labels.insert(ATTEMPT_LABEL.to_owned(), attempt.to_string());

    let mut annotations = agent.pod_annotations.clone();
    annotations.insert(
        "raibid.dev/repository".to_owned(),
        task.spec.repository.clone(),
    );

    let mut env = vec![env_var("HOME", WORKSPACE_DIR)];
    env.extend(agent.env.iter().cloned());
    env.extend([
        env_var("RAIBID_REPOSITORY", &task.spec.repository),
        env_var("RAIBID_BRANCH", &branch(task)),
        env_var("RAIBID_TASK", &task.name_any()),
        env_var("RAIBID_ATTEMPT", &attempt.to_string()),
        env_var(
            "RAIBID_CONTEXT_FILE",
            &format!("{CONTEXT_DIR}/{CONTEXT_FILE}"),
        ),
    ]);
    if let Some(issue) = task.spec.issue {
        env.push(env_var("RAIBID_ISSUE", &issue.to_string()));
    }
    let credential = credential_source(task, settings);
    let token_file = matches!(
        settings.github_credential,
        Some(AgentCredential::RepositoryToken)
    );
    if token_file {
        env.push(env_var(
            "GITHUB_TOKEN_FILE",
            &format!("{TOKEN_DIR}/{TOKEN_KEY}"),
        ));
    }
    if let Some(token) = &credential {
        env.push(EnvVar {
            name: "GITHUB_TOKEN".to_owned(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: token.name.clone(),
                    key: token.key.clone(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        });
    }

    let memory = agent
        .memory
        .clone()
        .unwrap_or_else(|| Quantity(DEFAULT_MEMORY.into()));
    let mut requests = BTreeMap::from([
        (
            "cpu".to_owned(),
            agent
                .cpu
                .clone()
                .unwrap_or_else(|| Quantity(DEFAULT_CPU.into())),
        ),
        ("memory".to_owned(), memory.clone()),
    ]);
    let mut limits = BTreeMap::from([("memory".to_owned(), memory)]);
    if agent.gpus > 0 {
        let gpus = Quantity(agent.gpus.to_string());
        requests.insert(GPU_RESOURCE.to_owned(), gpus.clone());
        limits.insert(GPU_RESOURCE.to_owned(), gpus);
    }

    let mut volume_mounts = vec![
        VolumeMount {
            name: "workspace".to_owned(),
            mount_path: WORKSPACE_DIR.to_owned(),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "context".to_owned(),
            mount_path: CONTEXT_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
    ];
    let mut volumes = vec![
        Volume {
            name: "workspace".to_owned(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(
                    agent
                        .workspace_size
                        .clone()
                        .unwrap_or_else(|| Quantity(DEFAULT_WORKSPACE_SIZE.into())),
                ),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "context".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: context_name(task),
                default_mode: Some(0o444),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
    ];
    if token_file {
        volume_mounts.push(VolumeMount {
            name: "github-token".to_owned(),
            mount_path: TOKEN_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "github-token".to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(token_secret_name(task)),
                default_mode: Some(0o400),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }

    let container = Container {
        name: "agent".to_owned(),
        image: Some(agent.image.clone()),
        image_pull_policy: agent.image_pull_policy.clone(),
        command: (!agent.command.is_empty()).then(|| agent.command.clone()),
        args: (!agent.args.is_empty()).then(|| agent.args.clone()),
        working_dir: Some(WORKSPACE_DIR.to_owned()),
        env: Some(env),
        env_from: (!agent.env_from_secrets.is_empty()).then(|| {
            agent
                .env_from_secrets
                .iter()
                .map(|name| EnvFromSource {
                    secret_ref: Some(SecretEnvSource {
                        name: name.clone(),
                        optional: Some(false),
                    }),
                    ..EnvFromSource::default()
                })
                .collect()
        }),
        resources: Some(ResourceRequirements {
            requests: Some(requests),
            limits: Some(limits),
            ..ResourceRequirements::default()
        }),
        volume_mounts: Some(volume_mounts),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            seccomp_profile: Some(runtime_default_seccomp()),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };

    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(task, attempt)),
            namespace: task.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: task.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![container],
            restart_policy: Some("Never".to_owned()),
            active_deadline_seconds: Some(settings.run_timeout.as_secs().max(1) as i64),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            runtime_class_name: match agent.runtime_class_name.as_deref() {
                None => Some(crate::crd::agent_task::DEFAULT_RUNTIME_CLASS.to_owned()),
                Some("") => None,
                Some(name) => Some(name.to_owned()),
            },
            node_selector: Some(settings.node_selector()).filter(|s| !s.is_empty()),
            tolerations: Some(settings.tolerations()).filter(|t| !t.is_empty()),
            affinity: agent.affinity.clone(),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(AGENT_UID),
                run_as_group: Some(AGENT_UID),
                fs_group: Some(AGENT_UID),
                seccomp_profile: Some(runtime_default_seccomp()),
                ..PodSecurityContext::default()
            }),
            volumes: Some(volumes),
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

fn env_var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    }
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        ..SeccompProfile::default()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        admission::placement::pod_gpus,
        controller::agent_task::settings::RunSettings,
        crd::{AgentProfile, AgentTaskSpec},
    };

    fn task() -> AgentTask {
        let mut task = AgentTask::new(
            "fix-login",
            AgentTaskSpec {
                repository: "acme/web".into(),
                issue: Some(42),
                queue_ref: Some("web".into()),
                prompt: Some("Fix the login bug.".into()),
                profile: Some(AgentProfile {
                    image: "ghcr.io/acme/agent:1".into(),
                    gpus: 1,
                    env: vec![env_var("MODEL", "local"), env_var("RAIBID_TASK", "spoofed")],
                    env_from_secrets: vec!["model-keys".into()],
                    pod_labels: BTreeMap::from([
                        ("team".to_string(), "web".to_string()),
                        (TASK_LABEL.to_string(), "spoofed".to_string()),
                    ]),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        task.metadata.namespace = Some("agents".into());
        task.metadata.uid = Some("uid-1".into());
        task
    }

    fn settings(task: &AgentTask) -> RunSettings {
        RunSettings::resolve(task, &[]).unwrap()
    }

    fn env_of(pod: &Pod) -> BTreeMap<String, String> {
        // Later entries win in Kubernetes, as in this map.
        pod.spec.as_ref().unwrap().containers[0]
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn pod_identity_is_fixed_per_attempt_and_owned_by_the_task() {
        let task = task();
        let pod = agent_pod(&task, &settings(&task), 2);
        assert_eq!(pod.metadata.name.as_deref(), Some("fix-login-2"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("agents"));
        let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("AgentTask", "fix-login", Some(true))
        );
        let labels = pod.metadata.labels.unwrap();
        assert_eq!(
            labels[TASK_LABEL], "fix-login",
            "operator labels win over profile labels"
        );
        assert_eq!(labels[ATTEMPT_LABEL], "2");
        assert_eq!(labels[ISSUE_LABEL], "42");
        assert_eq!(labels[QUEUE_LABEL], "web");
        assert_eq!(labels["team"], "web");
        assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
    }

    #[test]
    fn pod_carries_the_task_environment() {
        let task = task();
        let env = env_of(&agent_pod(&task, &settings(&task), 1));
        assert_eq!(env["RAIBID_REPOSITORY"], "acme/web");
        assert_eq!(env["RAIBID_ISSUE"], "42");
        assert_eq!(env["RAIBID_BRANCH"], "raibid/fix-login");
        assert_eq!(
            env["RAIBID_TASK"], "fix-login",
            "a profile cannot spoof the task variables"
        );
        assert_eq!(env["RAIBID_CONTEXT_FILE"], "/var/run/raibid/context.md");
        assert_eq!(env["MODEL"], "local");
        assert_eq!(env["HOME"], WORKSPACE_DIR);
    }

    fn token_env_source(pod: &Pod) -> Option<(String, String)> {
        let env = pod.spec.as_ref()?.containers[0].env.clone()?;
        let token = env.iter().find(|e| e.name == "GITHUB_TOKEN")?;
        assert_eq!(token.value, None, "never the token itself in the pod spec");
        let source = token.value_from.as_ref()?.secret_key_ref.as_ref()?;
        Some((source.name.clone(), source.key.clone()))
    }

    #[test]
    fn settings_without_a_credential_give_no_github_token() {
        let task = task();
        let pod = agent_pod(&task, &settings(&task), 1);
        assert_eq!(token_env_source(&pod), None);
        assert!(!env_of(&pod).contains_key("GITHUB_TOKEN_FILE"));
    }

    #[test]
    fn a_token_queue_hands_its_agents_the_queues_token_secret() {
        let task = task();
        let mut with_token = settings(&task);
        with_token.github_credential = Some(AgentCredential::QueueToken(SecretKeyRef {
            name: "gh".into(),
            key: "token".into(),
        }));
        let pod = agent_pod(&task, &with_token, 1);
        assert_eq!(token_env_source(&pod), Some(("gh".into(), "token".into())));
        let spec = pod.spec.unwrap();
        assert!(
            spec.volumes
                .unwrap()
                .iter()
                .all(|v| v.name != "github-token"),
            "nothing refreshes a queue token, so there is no file to follow"
        );
    }

    #[test]
    fn an_app_queue_hands_its_agents_the_tasks_own_repository_token() {
        let task = task();
        let mut app = settings(&task);
        app.github_credential = Some(AgentCredential::RepositoryToken);
        let pod = agent_pod(&task, &app, 1);
        assert_eq!(
            token_env_source(&pod),
            Some(("fix-login-github-token".into(), TOKEN_KEY.into()))
        );
        assert_eq!(
            env_of(&pod)["GITHUB_TOKEN_FILE"],
            "/var/run/secrets/raibid.dev/github/token"
        );
        let spec = pod.spec.unwrap();
        let volume = spec
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "github-token")
            .unwrap();
        let secret = volume.secret.unwrap();
        assert_eq!(
            secret.secret_name.as_deref(),
            Some("fix-login-github-token")
        );
        assert_eq!(secret.default_mode, Some(0o400));
        let mount = spec.containers[0]
            .volume_mounts
            .clone()
            .unwrap()
            .into_iter()
            .find(|m| m.name == "github-token")
            .unwrap();
        assert_eq!(
            (mount.mount_path.as_str(), mount.read_only),
            (TOKEN_DIR, Some(true))
        );
    }

    #[test]
    fn the_token_secret_belongs_to_the_task_and_says_when_it_expires() {
        let task = task();
        let expires: Timestamp = "2026-11-27T10:00:00Z".parse().unwrap();
        let secret = token_secret(&task, "ghs_abc", expires);
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some("fix-login-github-token")
        );
        assert_eq!(secret.metadata.namespace.as_deref(), Some("agents"));
        let owner = &secret.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("AgentTask", "fix-login", Some(true))
        );
        assert_eq!(
            secret.metadata.annotations.unwrap()[TOKEN_EXPIRES_ANNOTATION],
            "2026-11-27T10:00:00Z"
        );
        assert_eq!(secret.metadata.labels.unwrap()[TASK_LABEL], "fix-login");
        assert_eq!(secret.data.unwrap()[TOKEN_KEY].0, b"ghs_abc");
    }

    #[test]
    fn tokens_are_renewed_a_margin_before_they_expire() {
        let now: Timestamp = "2026-11-27T10:00:00Z".parse().unwrap();
        let at = |minutes: i64| {
            Some(
                now.checked_add(jiff::SignedDuration::from_mins(minutes))
                    .unwrap(),
            )
        };
        assert!(token_needs_renewal(None, now), "no token yet");
        assert!(token_needs_renewal(at(-1), now), "expired");
        assert!(token_needs_renewal(at(10), now), "inside the margin");
        assert!(token_needs_renewal(at(15), now), "at the margin");
        assert!(!token_needs_renewal(at(16), now));
        assert!(!token_needs_renewal(at(60), now), "a fresh token");
    }

    #[test]
    fn pod_asks_for_the_gpu_on_a_dgx_spark() {
        let task = task();
        let pod = agent_pod(&task, &settings(&task), 1);
        let spec = pod.spec.unwrap();
        assert_eq!(pod_gpus(&spec), 1);
        assert_eq!(spec.runtime_class_name.as_deref(), Some("nvidia"));
        let selector = spec.node_selector.unwrap();
        assert_eq!(selector["kubernetes.io/arch"], "arm64");
        assert_eq!(selector["nvidia.com/gpu.product"], "NVIDIA-GB10");
        assert_eq!(
            spec.tolerations.unwrap()[0].key.as_deref(),
            Some(GPU_RESOURCE)
        );
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.active_deadline_seconds, Some(7200));
    }

    #[test]
    fn pod_meets_the_restricted_pod_security_standard() {
        let task = task();
        let mut with_every_volume = settings(&task);
        with_every_volume.github_credential = Some(AgentCredential::RepositoryToken);
        let spec = agent_pod(&task, &with_every_volume, 1).spec.unwrap();
        assert_eq!(spec.automount_service_account_token, Some(false));
        let pod_sc = spec.security_context.unwrap();
        assert_eq!(pod_sc.run_as_non_root, Some(true));
        assert_eq!(pod_sc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let sc = spec.containers[0].security_context.clone().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
        assert_eq!(sc.run_as_non_root, Some(true));
        for volume in spec.volumes.unwrap() {
            assert!(
                volume.empty_dir.is_some()
                    || volume.config_map.is_some()
                    || volume.secret.is_some(),
                "restricted allows only ephemeral volume types, got {volume:?}"
            );
        }
    }

    #[test]
    fn gpu_less_profiles_and_runtime_class_opt_out() {
        let mut task = task();
        let profile = task.spec.profile.as_mut().unwrap();
        profile.gpus = 0;
        profile.runtime_class_name = Some(String::new());
        profile.node_selector = Some(BTreeMap::new());
        let mut settings = settings(&task);
        settings.run_timeout = Duration::from_millis(10);
        let spec = agent_pod(&task, &settings, 1).spec.unwrap();
        assert_eq!(pod_gpus(&spec), 0);
        assert_eq!(spec.runtime_class_name, None);
        assert_eq!(spec.node_selector, None);
        assert_eq!(
            spec.active_deadline_seconds,
            Some(1),
            "never 0, which the API server refuses"
        );
    }

    #[test]
    fn context_file_tells_the_agent_what_to_do() {
        let task = task();
        let cm = context_config_map(&task);
        assert_eq!(cm.metadata.name.as_deref(), Some("fix-login-context"));
        let text = &cm.data.unwrap()[CONTEXT_FILE];
        assert!(text.contains("Repository: acme/web"));
        assert!(text.contains("Issue: #42 (https://github.com/acme/web/issues/42)"));
        assert!(text.contains("Branch: raibid/fix-login"));
        assert!(text.contains("## Instructions\n\nFix the login bug.\n"));
    }
}
