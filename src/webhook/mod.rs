//! The GitHub webhook-to-CRD bridge: `POST /webhooks/github`.
//!
//! limit (25 MiB) → verify the signature against the webhook secrets of every IssueQueue →
//! parse → write a delivery record to the API server → answer. The record is a small
//! ConfigMap named after the queue and `X-GitHub-Delivery`, so it is durable before GitHub
//! hears 2xx and a repeated delivery is refused by the API server as `AlreadyExists`. The
//! IssueQueue controller reads records and reconciles the issues they name from GitHub's
//! current state, which makes late and out-of-order deliveries harmless. GitHub is never called
//! inside the request.

pub mod event;
pub mod signature;

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, StatusCode},
    routing::post,
};
use k8s_openapi::{
    api::core::v1::{ConfigMap, Secret},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
    jiff::Timestamp,
};
use kube::{Api, Client, Resource, ResourceExt, api::PostParams, runtime::reflector::Store};
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use self::event::WebhookEvent;
use crate::{
    controller::agent_task::desired::{MANAGED_BY, MANAGED_BY_LABEL, QUEUE_LABEL},
    crd::{IssueQueue, issue_queue::SecretKeyRef},
    metrics::Metrics,
};

/// GitHub caps payloads at 25 MiB; anything larger is not from GitHub.
pub const MAX_BODY: usize = 25 * 1024 * 1024;
/// Label that marks a delivery record.
pub const DELIVERY_LABEL: &str = "raibid.dev/delivery";
/// Keys of a delivery record the IssueQueue controller reads: the issues it names (comma
/// separated) and its pull request.
pub const RECORD_ISSUES: &str = "issues";
pub const RECORD_PULL_REQUEST: &str = "pullRequest";
/// How long a webhook secret read from the API server is trusted before it is read again.
const SECRET_TTL: Duration = Duration::from_secs(30);

/// What the route needs.
#[derive(Clone)]
pub struct WebhookState {
    pub client: Client,
    pub queues: Store<IssueQueue>,
    pub metrics: Arc<Metrics>,
    secrets: Arc<SecretCache>,
}

impl WebhookState {
    pub fn new(client: Client, queues: Store<IssueQueue>, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            queues,
            metrics,
            secrets: Arc::default(),
        }
    }
}

pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route("/webhooks/github", post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// One answer of the route, with the outcome label for metrics.
struct Answer {
    status: StatusCode,
    outcome: &'static str,
    text: String,
}

impl Answer {
    fn new(status: StatusCode, outcome: &'static str, text: impl Into<String>) -> Self {
        Self {
            status,
            outcome,
            text: text.into(),
        }
    }
}

async fn receive(
    State(state): State<WebhookState>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let started = Instant::now();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let event_name = header("x-github-event").unwrap_or("unknown").to_owned();
    let answer = handle(&state, &headers, &body, started).await;
    state
        .metrics
        .webhook_deliveries
        .get_or_create(&crate::metrics::DeliveryLabels {
            event: event_label(&event_name).to_owned(),
            outcome: answer.outcome,
        })
        .inc();
    info!(
        event = %event_name,
        delivery = header("x-github-delivery").unwrap_or_default(),
        status = answer.status.as_u16(),
        outcome = answer.outcome,
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        "webhook delivery"
    );
    (answer.status, answer.text)
}

/// The `event` label of the deliveries metric. Callers are not authenticated yet when it is
/// counted, so only the events the operator knows get a label of their own.
fn event_label(event: &str) -> &'static str {
    match event {
        "issues" => "issues",
        "issue_comment" => "issue_comment",
        "pull_request" => "pull_request",
        "ping" => "ping",
        _ => "other",
    }
}

async fn handle(
    state: &WebhookState,
    headers: &HeaderMap,
    body: &[u8],
    arrived: Instant,
) -> Answer {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let digest = match signature::parse_header(header("x-hub-signature-256")) {
        Ok(digest) => digest,
        Err(error) => {
            return Answer::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                error.to_string(),
            );
        }
    };
    let signed_for = state.queues_that_signed(body, &digest, arrived).await;
    if signed_for.is_empty() {
        return Answer::new(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            "the signature matches no IssueQueue's webhook secret",
        );
    }
    let Some(event_name) = header("x-github-event") else {
        return Answer::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            "the X-GitHub-Event header is missing",
        );
    };
    let event = match event::parse(event_name, body) {
        Ok(event) => event,
        Err(error) => return Answer::new(StatusCode::BAD_REQUEST, "malformed", error.to_string()),
    };
    if event == WebhookEvent::Ping {
        return Answer::new(StatusCode::OK, "ping", "pong");
    }
    let Some(repository) = event.repository() else {
        return Answer::new(
            StatusCode::ACCEPTED,
            "ignored",
            format!("{} events are not used", event.kind()),
        );
    };
    let Some(delivery) = header("x-github-delivery").filter(|d| !d.is_empty()) else {
        return Answer::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            "the X-GitHub-Delivery header is missing",
        );
    };
    let serving: Vec<&Arc<IssueQueue>> = signed_for
        .iter()
        .filter(|q| q.spec.repository.eq_ignore_ascii_case(repository))
        .collect();
    if serving.is_empty() {
        return Answer::new(
            StatusCode::ACCEPTED,
            "ignored",
            format!("no IssueQueue signed by this secret serves {repository}"),
        );
    }

    let mut duplicates = 0;
    for queue in &serving {
        match record_delivery(&state.client, queue, delivery, &event).await {
            Ok(RecordOutcome::Created) => {}
            Ok(RecordOutcome::Duplicate) => duplicates += 1,
            Err(error) => {
                warn!(%error, queue = %queue.name_any(), "could not record a webhook delivery");
                return Answer::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unrecorded",
                    "the delivery could not be recorded; the periodic resync will catch up",
                );
            }
        }
    }
    if duplicates == serving.len() {
        Answer::new(
            StatusCode::OK,
            "duplicate",
            format!("delivery {delivery} was already recorded"),
        )
    } else {
        Answer::new(
            StatusCode::OK,
            "recorded",
            format!("recorded {} for {} queue(s)", event.kind(), serving.len()),
        )
    }
}

impl WebhookState {
    /// The queues one of whose webhook secrets signed `body`. A failed check reads again the
    /// secrets read before the request `arrived`, so a rotated secret works at once; one read
    /// serves every request that was waiting for it, so bad signatures cannot multiply reads.
    async fn queues_that_signed(
        &self,
        body: &[u8],
        digest: &[u8],
        arrived: Instant,
    ) -> Vec<Arc<IssueQueue>> {
        let queues = self.queues.state();
        for refresh in [None, Some(arrived)] {
            let mut matched = Vec::new();
            for queue in &queues {
                let namespace = queue.namespace().unwrap_or_default();
                for secret_ref in &queue.spec.webhook_secret_refs {
                    let secret = self
                        .secrets
                        .get(&self.client, &namespace, secret_ref, refresh)
                        .await;
                    if secret.is_some_and(|s| signature::verifies(&s, body, digest)) {
                        matched.push(queue.clone());
                        break;
                    }
                }
            }
            if !matched.is_empty() {
                return matched;
            }
        }
        Vec::new()
    }
}

/// Namespace, Secret name, key.
type SecretLocation = (String, String, String);

/// A secret's value (`None`: missing or empty) and when it was read.
type CachedSecret = (Option<Vec<u8>>, Instant);

/// Webhook secrets read from the API server, kept for a short while.
#[derive(Default)]
struct SecretCache {
    entries: Mutex<HashMap<SecretLocation, CachedSecret>>,
}

impl SecretCache {
    /// The secret's value: cached for a while, or read again if it was read before
    /// `read_since`. Reads of one location are serialised by the lock, so concurrent callers
    /// share one read.
    async fn get(
        &self,
        client: &Client,
        namespace: &str,
        secret: &SecretKeyRef,
        read_since: Option<Instant>,
    ) -> Option<Vec<u8>> {
        let key = (
            namespace.to_owned(),
            secret.name.clone(),
            secret.key.clone(),
        );
        let mut entries = self.entries.lock().await;
        if let Some((value, read)) = entries.get(&key) {
            let fresh = match read_since {
                Some(since) => *read >= since,
                None => read.elapsed() < SECRET_TTL,
            };
            if fresh {
                return value.clone();
            }
        }
        let reading = Instant::now();
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let value = match crate::secret::read(&api, secret).await {
            Ok(found) => found.map(|value| value.bytes),
            Err(error) => {
                debug!(%error, secret = %secret.name, "could not read a webhook secret");
                None
            }
        };
        entries.insert(key, (value.clone(), reading));
        value
    }
}

enum RecordOutcome {
    Created,
    Duplicate,
}

/// Name of the record of `delivery` for `queue`: fixed, so a repeat is `AlreadyExists`.
pub fn record_name(queue: &str, delivery: &str) -> String {
    let clean: String = delivery
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let name = format!("gh-{queue}-{}", clean.trim_matches('-'));
    name.chars()
        .take(253)
        .collect::<String>()
        .trim_end_matches('-')
        .to_owned()
}

async fn record_delivery(
    client: &Client,
    queue: &IssueQueue,
    delivery: &str,
    event: &WebhookEvent,
) -> Result<RecordOutcome, kube::Error> {
    let namespace = queue.namespace().unwrap_or_default();
    let issues: Vec<String> = event.affected_issues().iter().map(u64::to_string).collect();
    let mut data = BTreeMap::from([
        ("delivery".to_owned(), delivery.to_owned()),
        ("event".to_owned(), event.kind()),
        (RECORD_ISSUES.to_owned(), issues.join(",")),
        ("receivedAt".to_owned(), Timestamp::now().to_string()),
    ]);
    if let WebhookEvent::PullRequest { pull_request, .. } = event {
        data.insert(
            RECORD_PULL_REQUEST.to_owned(),
            pull_request.number.to_string(),
        );
    }
    let record = ConfigMap {
        metadata: ObjectMeta {
            name: Some(record_name(&queue.name_any(), delivery)),
            namespace: Some(namespace.clone()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
                (QUEUE_LABEL.to_owned(), queue.name_any()),
                (DELIVERY_LABEL.to_owned(), "true".to_owned()),
            ])),
            owner_references: queue.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        data: Some(data),
        ..ConfigMap::default()
    };
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    match api.create(&PostParams::default(), &record).await {
        Ok(_) => Ok(RecordOutcome::Created),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(RecordOutcome::Duplicate),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_callers_cannot_mint_metric_labels() {
        for known in ["issues", "issue_comment", "pull_request", "ping"] {
            assert_eq!(event_label(known), known);
        }
        for other in ["push", "unknown", "", "x\u{0}y", "issues "] {
            assert_eq!(event_label(other), "other", "{other:?}");
        }
    }

    #[test]
    fn record_names_are_valid_and_stable() {
        assert_eq!(
            record_name("web", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
            "gh-web-72d3162e-cc78-11e3-81ab-4c9367dc0958"
        );
        assert_eq!(record_name("web", "1"), "gh-web-1");
        assert_eq!(record_name("web", "A_B/C"), "gh-web-a-b-c");
        assert!(record_name("web", &"x".repeat(400)).len() <= 253);
    }
}
