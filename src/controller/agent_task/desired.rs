//! The objects an attempt needs, built from the task alone: its pod and its context file.
//! Pure, so the exact pod the operator creates is unit-tested.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{
        Capabilities, ConfigMap, ConfigMapVolumeSource, Container, EmptyDirVolumeSource,
        EnvFromSource, EnvVar, EnvVarSource, Pod, PodSecurityContext, PodSpec,
        ResourceRequirements, SeccompProfile, SecretEnvSource, SecretKeySelector, SecurityContext,
        Volume, VolumeMount,
    },
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::ObjectMeta},
};
use kube::{Resource, ResourceExt};

use super::settings::RunSettings;
use crate::{admission::placement::GPU_RESOURCE, crd::AgentTask};

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
    if let Some(token) = &settings.github_token {
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
        volume_mounts: Some(vec![
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
        ]),
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
            volumes: Some(vec![
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
            ]),
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

    #[test]
    fn a_queue_task_gets_the_queues_github_token() {
        let task = task();
        assert!(!env_of(&agent_pod(&task, &settings(&task), 1)).contains_key("GITHUB_TOKEN"));
        let mut with_token = settings(&task);
        with_token.github_token = Some(crate::crd::issue_queue::SecretKeyRef {
            name: "gh".into(),
            key: "token".into(),
        });
        let pod = agent_pod(&task, &with_token, 1);
        let env = pod.spec.unwrap().containers[0].env.clone().unwrap();
        let token = env.iter().find(|e| e.name == "GITHUB_TOKEN").unwrap();
        let source = token
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!((source.name.as_str(), source.key.as_str()), ("gh", "token"));
        assert_eq!(token.value, None, "never the token itself in the pod spec");
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
        let spec = agent_pod(&task, &settings(&task), 1).spec.unwrap();
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
                volume.empty_dir.is_some() || volume.config_map.is_some(),
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
