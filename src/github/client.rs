//! The GitHub REST API as the operator uses it: one repository, token or GitHub App
//! installation auth, conditional requests (an unchanged page costs no rate limit), and a
//! rate-limit budget that backs off instead of failing.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;
use k8s_openapi::jiff::Timestamp;
use octocrab::Octocrab;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;

use super::payload::{CommentPayload, IssuePayload, PullRequestPayload};

/// GitHub's secondary limit on content-creating requests.
pub const WRITES_PER_MINUTE: usize = 80;

/// Why a GitHub request did not succeed. `reason()` is a fixed label for metrics and Events.
#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    #[error("cannot build the GitHub client: {0}")]
    Setup(String),
    #[error("GitHub request {method} {path} failed: {source}")]
    Transport {
        method: Method,
        path: String,
        source: Box<octocrab::Error>,
    },
    #[error("GitHub answered {status} to {method} {path}: {message}")]
    Status {
        method: Method,
        path: String,
        status: StatusCode,
        message: String,
    },
    #[error("GitHub's rate limit is used up until {until}; backing off")]
    RateLimited { until: Timestamp },
    #[error("GitHub's answer to {path} is not the expected JSON: {source}")]
    Decode {
        path: String,
        source: serde_json::Error,
    },
}

impl GitHubError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Setup(_) => "GitHubSetupFailed",
            Self::Transport { .. } => "GitHubUnreachable",
            Self::Status { status, .. } if status.is_server_error() => "GitHubServerError",
            Self::Status { status, .. } if *status == StatusCode::UNAUTHORIZED => {
                "GitHubUnauthorized"
            }
            Self::Status { .. } => "GitHubRequestRefused",
            Self::RateLimited { .. } => "GitHubRateLimited",
            Self::Decode { .. } => "GitHubUnexpectedAnswer",
        }
    }

    /// How long to wait before trying again, when GitHub said so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { until } => {
                Duration::try_from(Timestamp::now().duration_until(*until)).ok()
            }
            _ => None,
        }
    }
}

type Result<T, E = GitHubError> = std::result::Result<T, E>;

/// The rate limit as last seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimit {
    pub remaining: Option<u32>,
    pub reset: Option<Timestamp>,
}

#[derive(Default)]
struct Budget {
    seen: RateLimit,
    blocked_until: Option<Timestamp>,
    writes: VecDeque<Instant>,
}

/// A successful (or not-modified) answer.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// An installation token GitHub issued, and when it stops working.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct InstallationToken {
    pub token: String,
    pub expires_at: Timestamp,
}

/// A page fetched before: sent again as `If-None-Match`, reused on `304 Not Modified`.
struct CachedPage {
    etag: String,
    body: Bytes,
    next: Option<String>,
}

/// A client for one repository.
pub struct GitHubClient {
    octocrab: Octocrab,
    /// With GitHub App auth: the client that speaks as the App itself (JWT), which issues
    /// installation tokens, and the installation.
    app: Option<(Octocrab, u64)>,
    api_url: String,
    repository: String,
    pages: Mutex<HashMap<String, CachedPage>>,
    budget: Mutex<Budget>,
}

/// How to authenticate.
pub enum Credentials {
    Token(String),
    App {
        app_id: u64,
        private_key_pem: Vec<u8>,
        installation_id: u64,
    },
}

impl GitHubClient {
    pub fn new(api_url: &str, repository: &str, credentials: Credentials) -> Result<Self> {
        let builder = Octocrab::builder()
            .base_uri(api_url)
            .map_err(|e| GitHubError::Setup(format!("invalid API URL {api_url}: {e}")))?;
        let setup = |e: octocrab::Error| GitHubError::Setup(e.to_string());
        let (octocrab, app) = match credentials {
            Credentials::Token(token) => {
                (builder.personal_token(token).build().map_err(setup)?, None)
            }
            Credentials::App {
                app_id,
                private_key_pem,
                installation_id,
            } => {
                let key = octocrab::EncodingKey::from_rsa_pem(&private_key_pem).map_err(|e| {
                    GitHubError::Setup(format!(
                        "the GitHub App private key is not an RSA PEM key: {e}"
                    ))
                })?;
                let app = builder.app(app_id.into(), key).build().map_err(setup)?;
                let installation = app.installation(installation_id.into()).map_err(setup)?;
                (installation, Some((app, installation_id)))
            }
        };
        Ok(Self {
            octocrab,
            app,
            api_url: api_url.trim_end_matches('/').to_owned(),
            repository: repository.to_owned(),
            pages: Mutex::default(),
            budget: Mutex::default(),
        })
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The login the operator acts as (for a token; an App's comments carry the status
    /// marker and are recognised by it).
    pub async fn login(&self) -> Result<String> {
        #[derive(serde::Deserialize)]
        struct Me {
            login: String,
        }
        let me: Me = self.get_json("/user").await?;
        Ok(me.login)
    }

    pub fn rate_limit(&self) -> RateLimit {
        self.budget.lock().map(|b| b.seen).unwrap_or_default()
    }

    /// Every open issue (pull requests left out), all pages.
    pub async fn open_issues(&self) -> Result<Vec<IssuePayload>> {
        let issues: Vec<IssuePayload> = self
            .all_pages(&format!(
                "/repos/{}/issues?state=open&per_page=100",
                self.repository
            ))
            .await?;
        Ok(issues
            .into_iter()
            .filter(|i| !i.is_pull_request())
            .collect())
    }

    /// One issue, asked conditionally: an unchanged issue costs no rate limit.
    pub async fn issue(&self, number: u64) -> Result<IssuePayload> {
        self.issue_in(&self.repository, number).await
    }

    /// An issue of any repository, for dependencies named as `owner/name#N`.
    pub async fn issue_in(&self, repository: &str, number: u64) -> Result<IssuePayload> {
        self.get_conditionally(&format!("/repos/{repository}/issues/{number}"))
            .await
    }

    pub async fn comments(&self, issue: u64) -> Result<Vec<CommentPayload>> {
        self.all_pages(&format!(
            "/repos/{}/issues/{issue}/comments?per_page=100",
            self.repository
        ))
        .await
    }

    /// Open pull requests (all pages) and the 100 most recently updated closed ones: what a
    /// resync needs to notice a merge or a close whose webhook was missed.
    pub async fn recent_pull_requests(&self) -> Result<Vec<PullRequestPayload>> {
        let open_path = format!("/repos/{}/pulls?state=open&per_page=100", self.repository);
        let closed_path = format!(
            "/repos/{}/pulls?state=closed&sort=updated&direction=desc&per_page=100",
            self.repository
        );
        let (open, closed) = futures::future::try_join(
            self.all_pages::<PullRequestPayload>(&open_path),
            // The first page only: older closed pull requests are history.
            self.conditional_page(&closed_path),
        )
        .await?;
        let mut pulls = open;
        pulls.extend(decode::<Vec<PullRequestPayload>>(&closed_path, &closed.0)?);
        Ok(pulls)
    }

    pub async fn pull_request(&self, number: u64) -> Result<PullRequestPayload> {
        self.get_conditionally(&format!("/repos/{}/pulls/{number}", self.repository))
            .await
    }

    pub async fn create_comment(&self, issue: u64, body: &str) -> Result<CommentPayload> {
        let path = format!("/repos/{}/issues/{issue}/comments", self.repository);
        self.write_json(Method::POST, &path, &json!({ "body": body }))
            .await
    }

    /// With GitHub App auth, a new installation token that reaches only `repository` (an
    /// installation covers one owner) and holds only `permissions`; `None` with token auth (there is nothing smaller to hand out).
    pub async fn repository_token(
        &self,
        repository: &str,
        permissions: &[(&str, &str)],
    ) -> Result<Option<InstallationToken>> {
        let Some((app, installation_id)) = &self.app else {
            return Ok(None);
        };
        // GitHub names the installation's repositories without their owner.
        let name = repository
            .split_once('/')
            .map_or(repository, |(_, name)| name);
        let permissions: serde_json::Map<String, serde_json::Value> = permissions
            .iter()
            .map(|(scope, level)| ((*scope).to_owned(), json!(level)))
            .collect();
        let path = format!("/app/installations/{installation_id}/access_tokens");
        let body = json!({ "repositories": [name], "permissions": permissions });
        let Answer { body, .. } = self
            .send_as(
                app,
                Method::POST,
                &path,
                Some(&body),
                HeaderMap::new(),
                false,
            )
            .await?;
        decode(&path, &body).map(Some)
    }

    pub async fn update_comment(&self, id: u64, body: &str) -> Result<CommentPayload> {
        let path = format!("/repos/{}/issues/comments/{id}", self.repository);
        self.write_json(Method::PATCH, &path, &json!({ "body": body }))
            .await
    }

    pub async fn delete_comment(&self, id: u64) -> Result<()> {
        let path = format!("/repos/{}/issues/comments/{id}", self.repository);
        self.send(Method::DELETE, &path, None::<&()>, HeaderMap::new(), true)
            .await
            .map(drop)
    }

    pub async fn add_labels(&self, issue: u64, labels: &[String]) -> Result<()> {
        let path = format!("/repos/{}/issues/{issue}/labels", self.repository);
        self.send(
            Method::POST,
            &path,
            Some(&json!({ "labels": labels })),
            HeaderMap::new(),
            true,
        )
        .await
        .map(drop)
    }

    pub async fn remove_label(&self, issue: u64, label: &str) -> Result<()> {
        let path = format!(
            "/repos/{}/issues/{issue}/labels/{}",
            self.repository,
            encode_path_segment(label)
        );
        match self
            .send(Method::DELETE, &path, None::<&()>, HeaderMap::new(), true)
            .await
        {
            Err(GitHubError::Status {
                status: StatusCode::NOT_FOUND,
                ..
            }) => Ok(()),
            other => other.map(drop),
        }
    }

    pub async fn close_issue(&self, issue: u64) -> Result<()> {
        let path = format!("/repos/{}/issues/{issue}", self.repository);
        let body = json!({ "state": "closed", "state_reason": "completed" });
        self.send(Method::PATCH, &path, Some(&body), HeaderMap::new(), true)
            .await
            .map(drop)
    }

    async fn get_conditionally<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let (body, _) = self.conditional_page(path).await?;
        decode(path, &body)
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let Answer { body, .. } = self
            .send(Method::GET, path, None::<&()>, HeaderMap::new(), false)
            .await?;
        decode(path, &body)
    }

    async fn write_json<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let Answer { body: answer, .. } = self
            .send(method, path, Some(body), HeaderMap::new(), true)
            .await?;
        decode(path, &answer)
    }

    /// Follows `Link: rel="next"`, asking each page conditionally.
    async fn all_pages<T: DeserializeOwned>(&self, first: &str) -> Result<Vec<T>> {
        let mut items = Vec::new();
        let mut next = Some(first.to_owned());
        while let Some(path) = next.take() {
            let (body, following) = self.conditional_page(&path).await?;
            items.extend(decode::<Vec<T>>(&path, &body)?);
            next = following;
        }
        Ok(items)
    }

    async fn conditional_page(&self, path: &str) -> Result<(Bytes, Option<String>)> {
        let mut headers = HeaderMap::new();
        let cached_etag = self
            .pages
            .lock()
            .ok()
            .and_then(|p| p.get(path).map(|c| c.etag.clone()));
        if let Some(etag) = cached_etag
            .as_deref()
            .and_then(|e| HeaderValue::from_str(e).ok())
        {
            headers.insert(header::IF_NONE_MATCH, etag);
        }
        let Answer {
            status,
            headers: response_headers,
            body,
        } = self
            .send(Method::GET, path, None::<&()>, headers, false)
            .await?;
        if status == StatusCode::NOT_MODIFIED {
            let pages = self
                .pages
                .lock()
                .map_err(|_| GitHubError::Setup("page cache poisoned".into()))?;
            if let Some(page) = pages.get(path) {
                return Ok((page.body.clone(), page.next.clone()));
            }
        }
        let next = next_link(&response_headers).map(|url| self.relative(&url));
        if let Some(etag) = response_headers
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            && let Ok(mut pages) = self.pages.lock()
        {
            pages.insert(
                path.to_owned(),
                CachedPage {
                    etag: etag.to_owned(),
                    body: body.clone(),
                    next: next.clone(),
                },
            );
        }
        Ok((body, next))
    }

    /// `https://api.github.com/repos/…?page=2` → `/repos/…?page=2` (octocrab adds the base).
    fn relative(&self, url: &str) -> String {
        url.strip_prefix(&self.api_url)
            .map(str::to_owned)
            .unwrap_or_else(|| url.to_owned())
    }

    /// One request through the budget. Success and `304 Not Modified` come back as an
    /// [`Answer`]; anything else is an error.
    async fn send<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        extra_headers: HeaderMap,
        write: bool,
    ) -> Result<Answer> {
        self.send_as(&self.octocrab, method, path, body, extra_headers, write)
            .await
    }

    async fn send_as<B: Serialize + ?Sized>(
        &self,
        octocrab: &Octocrab,
        method: Method,
        path: &str,
        body: Option<&B>,
        extra_headers: HeaderMap,
        write: bool,
    ) -> Result<Answer> {
        self.admit(write)?;
        let transport = |source| GitHubError::Transport {
            method: method.clone(),
            path: path.to_owned(),
            source: Box::new(source),
        };
        let uri = path.to_owned();
        let response = match method {
            Method::GET => octocrab._get_with_headers(uri, Some(extra_headers)).await,
            Method::POST => octocrab._post(uri, body).await,
            Method::PATCH => octocrab._patch(uri, body).await,
            Method::PUT => octocrab._put(uri, body).await,
            Method::DELETE => octocrab._delete(uri, body).await,
            _ => return Err(GitHubError::Setup(format!("unsupported method {method}"))),
        }
        .map_err(transport)?;
        let status = response.status();
        let headers = response.headers().clone();
        self.observe(status, &headers);
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(transport)?
            .to_bytes();
        if status.is_success() || status == StatusCode::NOT_MODIFIED {
            return Ok(Answer {
                status,
                headers,
                body: bytes,
            });
        }
        if let Some(until) = self.blocked_until() {
            return Err(GitHubError::RateLimited { until });
        }
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(200).collect());
        Err(GitHubError::Status {
            method,
            path: path.to_owned(),
            status,
            message,
        })
    }

    /// Refuses a request while GitHub asked us to wait, and keeps content-creating requests
    /// under GitHub's secondary limit.
    fn admit(&self, write: bool) -> Result<()> {
        let mut budget = self
            .budget
            .lock()
            .map_err(|_| GitHubError::Setup("budget poisoned".into()))?;
        let now = Timestamp::now();
        if let Some(until) = budget.blocked_until.filter(|until| *until > now) {
            return Err(GitHubError::RateLimited { until });
        }
        if write {
            let minute_ago = Instant::now().checked_sub(Duration::from_secs(60));
            while budget
                .writes
                .front()
                .is_some_and(|t| minute_ago.is_some_and(|m| *t < m))
            {
                budget.writes.pop_front();
            }
            if budget.writes.len() >= WRITES_PER_MINUTE {
                let oldest = budget.writes.front().copied().unwrap_or_else(Instant::now);
                let wait = Duration::from_secs(60).saturating_sub(oldest.elapsed());
                return Err(GitHubError::RateLimited {
                    until: now.checked_add(wait).unwrap_or(now),
                });
            }
            budget.writes.push_back(Instant::now());
        }
        Ok(())
    }

    fn observe(&self, status: StatusCode, headers: &HeaderMap) {
        let Ok(mut budget) = self.budget.lock() else {
            return;
        };
        let number = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<i64>().ok())
        };
        if let Some(remaining) = number("x-ratelimit-remaining") {
            budget.seen.remaining = u32::try_from(remaining).ok();
        }
        if let Some(reset) = number("x-ratelimit-reset") {
            budget.seen.reset = Timestamp::from_second(reset).ok();
        }
        let limited = status == StatusCode::TOO_MANY_REQUESTS
            || (status == StatusCode::FORBIDDEN
                && (headers.contains_key(header::RETRY_AFTER) || budget.seen.remaining == Some(0)));
        if limited {
            let now = Timestamp::now();
            let until = number("retry-after")
                .and_then(|secs| {
                    now.checked_add(Duration::from_secs(secs.max(0) as u64))
                        .ok()
                })
                .or(budget.seen.reset)
                .unwrap_or_else(|| now.checked_add(Duration::from_secs(60)).unwrap_or(now));
            budget.blocked_until = Some(until);
        }
    }

    fn blocked_until(&self) -> Option<Timestamp> {
        let budget = self.budget.lock().ok()?;
        budget
            .blocked_until
            .filter(|until| *until > Timestamp::now())
    }
}

fn decode<T: DeserializeOwned>(path: &str, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|source| GitHubError::Decode {
        path: path.to_owned(),
        source,
    })
}

/// The `rel="next"` URL of a `Link` header.
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    let link = headers.get(header::LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim() == r#"rel="next""#)
            .then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned()
            })
    })
}

/// Label names may hold spaces and other characters a path segment cannot.
fn encode_path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::LINK,
            HeaderValue::from_static(
                r#"<https://api.github.com/repos/a/b/issues?page=1>; rel="prev", <https://api.github.com/repos/a/b/issues?page=3>; rel="next", <https://api.github.com/repos/a/b/issues?page=9>; rel="last""#,
            ),
        );
        assert_eq!(
            next_link(&headers).as_deref(),
            Some("https://api.github.com/repos/a/b/issues?page=3")
        );
        headers.insert(
            header::LINK,
            HeaderValue::from_static(r#"<https://x/y?page=1>; rel="first""#),
        );
        assert_eq!(next_link(&headers), None);
    }

    #[test]
    fn label_names_are_encoded_for_paths() {
        assert_eq!(encode_path_segment("waiting:answers"), "waiting:answers");
        assert_eq!(
            encode_path_segment("good first issue"),
            "good%20first%20issue"
        );
        assert_eq!(encode_path_segment("a/b#c"), "a%2Fb%23c");
    }

    #[test]
    fn error_reasons() {
        let status = |code: u16| GitHubError::Status {
            method: Method::GET,
            path: "/x".into(),
            status: StatusCode::from_u16(code).unwrap(),
            message: String::new(),
        };
        assert_eq!(status(502).reason(), "GitHubServerError");
        assert_eq!(status(401).reason(), "GitHubUnauthorized");
        assert_eq!(status(422).reason(), "GitHubRequestRefused");
        assert_eq!(
            GitHubError::RateLimited {
                until: Timestamp::now()
            }
            .reason(),
            "GitHubRateLimited"
        );
    }
}
