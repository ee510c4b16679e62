//! The webhook route against the real API server: what it refuses changes nothing, what it
//! accepts is recorded exactly once.

use std::sync::Arc;

use axum::{body::Body, http::Request};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{
    ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
    runtime::{reflector, watcher},
};
use raibid_operator::{
    crd::IssueQueue,
    metrics::Metrics,
    webhook::{self, DELIVERY_LABEL, WebhookState, signature::sign},
};
use serde_json::json;
use tower::ServiceExt;

use crate::support::Scope;

struct Hook {
    scope: Scope,
    router: axum::Router,
}

impl Hook {
    /// A queue for `acme/web` whose webhook secrets are `old-secret` and `new-secret`.
    async fn new(test: &str) -> Self {
        let scope = Scope::new(test).await;
        for (name, value) in [("hook-old", "old-secret"), ("hook-new", "new-secret")] {
            scope.add_secret(name, "secret", value).await;
        }
        let queue: IssueQueue = serde_json::from_value(json!({
            "apiVersion": "raibid.dev/v1alpha1", "kind": "IssueQueue", "metadata": {"name": "web"},
            "spec": {
                "repository": "acme/web",
                "github": {"tokenSecretRef": {"name": "gh", "key": "token"}},
                "webhookSecretRefs": [{"name": "hook-old", "key": "secret"}, {"name": "hook-new", "key": "secret"}],
                "profiles": [{"name": "default", "image": "agent:1"}],
                "defaultProfile": "default",
            },
        }))
        .unwrap();
        let queue = scope
            .api::<IssueQueue>()
            .create(&PostParams::default(), &queue)
            .await
            .unwrap();
        let (reader, mut writer) = reflector::store();
        writer.apply_watcher_event(&watcher::Event::Apply(queue));
        let state = WebhookState::new(scope.client.clone(), reader, Arc::new(Metrics::default()));
        Self {
            router: webhook::router(state),
            scope,
        }
    }

    async fn send(
        &self,
        event: &str,
        delivery: &str,
        signature: Option<String>,
        body: Vec<u8>,
    ) -> (u16, String) {
        let mut request = Request::post("/webhooks/github")
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", delivery);
        if let Some(signature) = signature {
            request = request.header("x-hub-signature-256", signature);
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn records(&self) -> Vec<ConfigMap> {
        self.scope
            .api::<ConfigMap>()
            .list(&ListParams::default().labels(&format!("{DELIVERY_LABEL}=true")))
            .await
            .unwrap()
            .items
    }
}

fn comment_body(repository: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "action": "created",
        "issue": {"number": 7, "title": "Fix", "body": "## Clarifying Questions\n1. A?", "user": {"login": "alice"}},
        "comment": {"id": 1, "body": "A1: yes", "user": {"login": "alice"}, "author_association": "OWNER"},
        "repository": {"full_name": repository},
    }))
    .unwrap()
}

#[tokio::test]
async fn bad_or_missing_signatures_are_refused_and_change_nothing() {
    let hook = Hook::new("hook-auth").await;
    let body = comment_body("acme/web");
    let (status, text) = hook
        .send(
            "issue_comment",
            "d1",
            Some(sign(b"wrong-secret", &body)),
            body.clone(),
        )
        .await;
    assert_eq!(status, 401, "{text}");
    let (status, text) = hook.send("issue_comment", "d2", None, body.clone()).await;
    assert_eq!(
        (status, text.as_str()),
        (401, "the X-Hub-Signature-256 header is missing")
    );
    let (status, _) = hook
        .send(
            "issue_comment",
            "d3",
            Some("sha256=abc".into()),
            body.clone(),
        )
        .await;
    assert_eq!(status, 401);
    let tampered = comment_body("acme/other");
    let (status, _) = hook
        .send(
            "issue_comment",
            "d4",
            Some(sign(b"old-secret", &body)),
            tampered,
        )
        .await;
    assert_eq!(status, 401, "a signature is for one body only");
    assert!(hook.records().await.is_empty());
}

#[tokio::test]
async fn every_secret_of_the_rotation_list_is_accepted_and_a_changed_secret_at_once() {
    let hook = Hook::new("hook-rotation").await;
    let body = comment_body("acme/web");
    for (delivery, secret) in [("r1", "old-secret"), ("r2", "new-secret")] {
        let (status, text) = hook
            .send(
                "issue_comment",
                delivery,
                Some(sign(secret.as_bytes(), &body)),
                body.clone(),
            )
            .await;
        assert_eq!(status, 200, "{secret}: {text}");
    }
    // Rotate the old secret's value: the next delivery signed with it is accepted at once.
    hook.scope
        .api::<Secret>()
        .patch(
            "hook-old",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"secret": "rotated"}})),
        )
        .await
        .unwrap();
    let (status, _) = hook
        .send(
            "issue_comment",
            "r3",
            Some(sign(b"rotated", &body)),
            body.clone(),
        )
        .await;
    assert_eq!(status, 200);
    // …and the value it replaced is refused from then on.
    let (status, _) = hook
        .send(
            "issue_comment",
            "r4",
            Some(sign(b"old-secret", &body)),
            body.clone(),
        )
        .await;
    assert_eq!(status, 401, "the replaced secret still verifies");
    assert_eq!(hook.records().await.len(), 3);
}

#[tokio::test]
async fn the_same_delivery_twice_is_recorded_once() {
    let hook = Hook::new("hook-dedupe").await;
    let body = comment_body("acme/web");
    let signature = Some(sign(b"new-secret", &body));
    let first = hook
        .send(
            "issue_comment",
            "72d3162e-cc78-11e3-81ab-4c9367dc0958",
            signature.clone(),
            body.clone(),
        )
        .await;
    let second = hook
        .send(
            "issue_comment",
            "72d3162e-cc78-11e3-81ab-4c9367dc0958",
            signature,
            body,
        )
        .await;
    assert_eq!(first.0, 200, "{}", first.1);
    assert_eq!(
        second,
        (
            200,
            "delivery 72d3162e-cc78-11e3-81ab-4c9367dc0958 was already recorded".to_string()
        )
    );
    let records = hook.records().await;
    assert_eq!(records.len(), 1);
    let data = records[0].data.clone().unwrap();
    assert_eq!(
        (data["event"].as_str(), data["issues"].as_str()),
        ("issue_comment.created", "7")
    );
    assert_eq!(records[0].labels()["raibid.dev/queue"], "web");
}

#[tokio::test]
async fn malformed_oversized_unknown_and_ping() {
    let hook = Hook::new("hook-edges").await;
    let sign_new = |b: &[u8]| Some(sign(b"new-secret", b));

    let malformed = b"{\"action\": \"created\", \"issue\": ".to_vec();
    let (status, text) = hook
        .send("issue_comment", "m1", sign_new(&malformed), malformed)
        .await;
    assert_eq!(status, 400);
    assert!(
        text.contains("the issue_comment payload is malformed"),
        "{text}"
    );

    let oversized = vec![b' '; webhook::MAX_BODY + 1];
    let (status, _) = hook
        .send("issue_comment", "m2", sign_new(&oversized), oversized)
        .await;
    assert_eq!(status, 413);

    let star = br#"{"action": "created", "repository": {"full_name": "acme/web"}}"#.to_vec();
    let (status, text) = hook.send("star", "m3", sign_new(&star), star).await;
    assert_eq!((status, text.as_str()), (202, "star events are not used"));

    let ping = br#"{"zen": "Keep it logically awesome.", "hook_id": 1}"#.to_vec();
    let (status, text) = hook.send("ping", "m4", sign_new(&ping), ping).await;
    assert_eq!((status, text.as_str()), (200, "pong"));

    let elsewhere = comment_body("someone/else");
    let (status, _) = hook
        .send("issue_comment", "m5", sign_new(&elsewhere), elsewhere)
        .await;
    assert_eq!(status, 202, "a repository no queue serves is ignored");
    assert!(hook.records().await.is_empty());
}
