//! The GitHub client against a local stub that speaks GitHub's HTTP: conditional requests,
//! pagination, rate-limit headers, 429 with Retry-After, server errors, the write budget.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::Uri,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use raibid_operator::github::client::{Credentials, GitHubClient, GitHubError, WRITES_PER_MINUTE};
use serde_json::json;

#[derive(Default)]
struct Seen {
    pages_served: AtomicUsize,
    not_modified: AtomicUsize,
    writes: AtomicUsize,
    authorized: AtomicUsize,
}

async fn start_stub() -> (String, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route("/repos/acme/web/issues", get(issues))
        .route("/repos/acme/web/issues/{number}", get(one_issue))
        .route("/repos/acme/web/issues/{number}/comments", post(comment))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

fn issue(number: u64, pull_request: bool) -> serde_json::Value {
    let mut issue = json!({"number": number, "title": format!("Issue {number}"), "body": "", "state": "open",
        "labels": [], "user": {"login": "alice"}, "created_at": "2026-01-01T00:00:00Z"});
    if pull_request {
        issue["pull_request"] = json!({"url": "x"});
    }
    issue
}

async fn issues(State(seen): State<Arc<Seen>>, headers: HeaderMap, uri: Uri) -> Response {
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some("Bearer test-token")
    {
        seen.authorized.fetch_add(1, Ordering::SeqCst);
    }
    let query = uri.query().unwrap_or_default();
    let page = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("page="))
        .unwrap_or("1");
    let etag = format!("\"page-{page}\"");
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str())
    {
        seen.not_modified.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::NOT_MODIFIED,
            [("x-ratelimit-remaining", "4998")],
        )
            .into_response();
    }
    seen.pages_served.fetch_add(1, Ordering::SeqCst);
    let (body, link) = match page {
        "1" => {
            // Absolute, as GitHub sends it: this stub's own address.
            let host = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let next = format!(
                "<http://{host}/repos/acme/web/issues?state=open&per_page=100&page=2>; rel=\"next\""
            );
            (json!([issue(1, false), issue(2, true)]), Some(next))
        }
        _ => (json!([issue(3, false)]), None),
    };
    let mut response = (
        [
            (header::ETAG.as_str(), etag.as_str()),
            ("x-ratelimit-remaining", "4998"),
            ("x-ratelimit-reset", "1800000000"),
        ],
        Json(body),
    )
        .into_response();
    if let Some(link) = link {
        response
            .headers_mut()
            .insert(header::LINK, link.parse().unwrap());
    }
    response
}

async fn one_issue(Path(number): Path<u64>) -> Response {
    match number {
        3 => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "30")],
            Json(json!({"message": "slow down"})),
        )
            .into_response(),
        4 => (StatusCode::BAD_GATEWAY, "upstream down").into_response(),
        n => Json(issue(n, false)).into_response(),
    }
}

async fn comment(
    State(seen): State<Arc<Seen>>,
    Path(number): Path<u64>,
    Json(body): Json<serde_json::Value>,
) -> Response {
    let id = seen.writes.fetch_add(1, Ordering::SeqCst) as u64 + 1;
    (StatusCode::CREATED, Json(json!({"id": id, "body": body["body"], "user": {"login": "raibid-bot"}, "issue": number}))).into_response()
}

fn client(url: &str) -> GitHubClient {
    GitHubClient::new(url, "acme/web", Credentials::Token("test-token".into())).unwrap()
}

#[tokio::test]
async fn unchanged_pages_are_asked_conditionally_and_reused() {
    let (url, seen) = start_stub().await;
    let client = client(&url);
    let first = client.open_issues().await.unwrap();
    assert_eq!(
        first.iter().map(|i| i.number).collect::<Vec<_>>(),
        vec![1, 3],
        "pull requests are left out"
    );
    assert_eq!(seen.pages_served.load(Ordering::SeqCst), 2);
    assert_eq!(
        seen.authorized.load(Ordering::SeqCst),
        2,
        "the token is sent with every page"
    );

    let again = client.open_issues().await.unwrap();
    assert_eq!(again, first);
    assert_eq!(
        seen.not_modified.load(Ordering::SeqCst),
        2,
        "both pages answered 304"
    );
    assert_eq!(
        seen.pages_served.load(Ordering::SeqCst),
        2,
        "nothing served twice"
    );
    let limit = client.rate_limit();
    assert_eq!(limit.remaining, Some(4998));
    assert_eq!(limit.reset.map(|t| t.as_second()), Some(1_800_000_000));
}

#[tokio::test]
async fn too_many_requests_backs_off_until_retry_after() {
    let (url, _) = start_stub().await;
    let client = client(&url);
    let error = client.issue(3).await.unwrap_err();
    let wait = error.retry_after().expect("a wait");
    assert!(matches!(error, GitHubError::RateLimited { .. }), "{error}");
    assert!(wait.as_secs() >= 28 && wait.as_secs() <= 30, "{wait:?}");
    // Until then nothing is sent: even a request that would succeed is held back.
    assert!(matches!(
        client.issue(1).await,
        Err(GitHubError::RateLimited { .. })
    ));
}

#[tokio::test]
async fn server_errors_are_reported_with_status_and_reason() {
    let (url, _) = start_stub().await;
    let error = client(&url).issue(4).await.unwrap_err();
    assert_eq!(error.reason(), "GitHubServerError");
    assert!(error.to_string().contains("502"), "{error}");
}

#[tokio::test]
async fn content_creating_requests_stay_under_the_secondary_limit() {
    let (url, seen) = start_stub().await;
    let client = client(&url);
    for i in 0..WRITES_PER_MINUTE {
        client
            .create_comment(1, &format!("comment {i}"))
            .await
            .unwrap();
    }
    let error = client.create_comment(1, "one too many").await.unwrap_err();
    assert!(matches!(error, GitHubError::RateLimited { .. }), "{error}");
    assert_eq!(
        seen.writes.load(Ordering::SeqCst),
        WRITES_PER_MINUTE,
        "the extra write never left the process"
    );
}

#[tokio::test]
async fn an_unreachable_github_is_an_error_not_a_panic() {
    let error = client("http://127.0.0.1:1")
        .open_issues()
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "GitHubUnreachable");
}
