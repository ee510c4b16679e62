//! A GitHub for tests: the npm `emulate` GitHub emulator (real REST API, real signed webhooks)
//! as a child process, seeded with an org, a repository and four people.

use std::{process::Stdio, time::Duration};

use octocrab::Octocrab;
use serde_json::{Value, json};
use tokio::process::Child;

use crate::support::eventually;

pub const REPOSITORY: &str = "raibid/demo";
pub const BOT: &str = "tok_bot";
pub const ALICE: &str = "tok_alice";
pub const BOB: &str = "tok_bob";
pub const CAROL: &str = "tok_carol";

const SEED: &str = r#"
tokens:
  tok_alice: {login: alice, scopes: [repo, user, admin:org, admin:repo_hook]}
  tok_bob: {login: bob, scopes: [repo, user]}
  tok_carol: {login: carol, scopes: [repo, user]}
  tok_bot: {login: raibid-bot, scopes: [repo, user]}
github:
  users:
    - {login: alice, name: Alice}
    - {login: bob, name: Bob}
    - {login: carol, name: Carol}
    - {login: raibid-bot, name: Raibid Bot}
  orgs:
    - login: raibid
      name: Raibid
      members: [{login: alice, role: admin}]
  repos:
    - {owner: raibid, name: demo, auto_init: true}
"#;

/// The GitHub App the operator can authenticate as, installed on the whole `raibid` org.
pub const APP_ID: u64 = 4242;
pub const INSTALLATION_ID: u64 = 77;
/// A private repository of the same org: an agent's token must not reach it.
pub const OTHER_REPOSITORY: &str = "raibid/other";

/// The App and the second repository, appended to [`SEED`] (whose last list is `repos`).
fn app_seed(private_key_pem: &str) -> String {
    let permissions = "{contents: write, pull_requests: write, issues: write, metadata: read}";
    let key: String = private_key_pem
        .lines()
        .map(|line| format!("        {line}\n"))
        .collect();
    format!(
        r#"    - {{owner: raibid, name: other, private: true, auto_init: true}}
  apps:
    - app_id: {APP_ID}
      slug: raibid-operator
      name: Raibid Operator
      permissions: {permissions}
      events: [issues, issue_comment, pull_request]
      installations:
        - installation_id: {INSTALLATION_ID}
          account: raibid
          repository_selection: all
          permissions: {permissions}
          events: [issues, issue_comment, pull_request]
      private_key: |
{key}"#
    )
}

pub struct Emulator {
    pub url: String,
    _child: Child,
}

fn node() -> String {
    std::env::var("RAIBID_NODE22")
        .expect("RAIBID_NODE22 is unset: run ./scripts/test, which installs the GitHub emulator")
}

impl Emulator {
    pub async fn start(dir: &std::path::Path) -> Self {
        Self::launch(dir, SEED.to_owned()).await
    }

    /// With a GitHub App installed on the org; returns its private key (PEM) too.
    pub async fn start_with_app(dir: &std::path::Path) -> (Self, String) {
        let script = "const {generateKeyPairSync} = require('crypto'); \
            const pair = generateKeyPairSync('rsa', {modulusLength: 2048, \
              privateKeyEncoding: {type: 'pkcs1', format: 'pem'}, \
              publicKeyEncoding: {type: 'pkcs1', format: 'pem'}}); \
            process.stdout.write(pair.privateKey);";
        let output = tokio::process::Command::new(node())
            .args(["-e", script])
            .output()
            .await
            .expect("generate the App's key with Node");
        assert!(output.status.success(), "{output:?}");
        let key = String::from_utf8(output.stdout).unwrap();
        let seed = format!("{SEED}{}", app_seed(&key));
        (Self::launch(dir, seed).await, key)
    }

    async fn launch(dir: &std::path::Path, seed_text: String) -> Self {
        let node = node();
        let entry =
            std::env::var("RAIBID_EMULATE").expect("RAIBID_EMULATE is unset: run ./scripts/test");
        let port = free_port();
        let seed = dir.join("github-seed.yaml");
        std::fs::write(&seed, seed_text).unwrap();
        let log = std::fs::File::create(dir.join("emulator.log")).unwrap();
        let child = tokio::process::Command::new(node)
            .arg(entry)
            .args([
                "start",
                "--service",
                "github",
                "--port",
                &port.to_string(),
                "--seed",
            ])
            .arg(&seed)
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start the GitHub emulator");
        let url = format!("http://127.0.0.1:{port}");
        let emulator = Self { url, _child: child };
        eventually(Duration::from_secs(60), || async {
            emulator.get(ALICE, "/user").await.ok()
        })
        .await;
        emulator
    }

    pub fn as_user(&self, token: &str) -> Octocrab {
        Octocrab::builder()
            .base_uri(&self.url)
            .unwrap()
            .personal_token(token.to_owned())
            .build()
            .unwrap()
    }

    pub async fn call(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let client = self.as_user(token);
        let response = match method {
            "GET" => client._get(path).await,
            "POST" => client._post(path, body.as_ref()).await,
            "PATCH" => client._patch(path, body.as_ref()).await,
            "PUT" => client._put(path, body.as_ref()).await,
            "DELETE" => client._delete(path, body.as_ref()).await,
            other => panic!("unsupported {other}"),
        }
        .map_err(|e| e.to_string())?;
        let status = response.status();
        let text = client
            .body_to_string(response)
            .await
            .map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{method} {path}: {status}: {text}"));
        }
        Ok(if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).map_err(|e| e.to_string())?
        })
    }

    pub async fn get(&self, token: &str, path: &str) -> Result<Value, String> {
        self.call(token, "GET", path, None).await
    }

    pub async fn post(&self, token: &str, path: &str, body: Value) -> Value {
        self.call(token, "POST", path, Some(body)).await.unwrap()
    }

    /// Points the repository's webhook at the operator.
    pub async fn add_webhook(&self, url: &str, secret: &str) {
        self.post(
            ALICE,
            &format!("/repos/{REPOSITORY}/hooks"),
            json!({"name": "web", "active": true, "events": ["*"], "config": {"url": url, "content_type": "json", "secret": secret}}),
        )
        .await;
    }

    pub async fn open_issue(&self, token: &str, title: &str, body: &str, labels: &[&str]) -> u64 {
        let issue = self
            .post(
                token,
                &format!("/repos/{REPOSITORY}/issues"),
                json!({"title": title, "body": body, "labels": labels}),
            )
            .await;
        issue["number"].as_u64().unwrap()
    }

    pub async fn comment(&self, token: &str, issue: u64, body: &str) {
        self.post(
            token,
            &format!("/repos/{REPOSITORY}/issues/{issue}/comments"),
            json!({"body": body}),
        )
        .await;
    }

    pub async fn labels(&self, issue: u64) -> Vec<String> {
        let issue = self
            .get(ALICE, &format!("/repos/{REPOSITORY}/issues/{issue}"))
            .await
            .unwrap();
        issue["labels"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["name"].as_str().map(String::from))
            .collect()
    }

    pub async fn issue_state(&self, issue: u64) -> String {
        let issue = self
            .get(ALICE, &format!("/repos/{REPOSITORY}/issues/{issue}"))
            .await
            .unwrap();
        issue["state"].as_str().unwrap_or_default().to_owned()
    }

    /// The operator's status comments on an issue.
    pub async fn status_comments(&self, issue: u64) -> Vec<String> {
        let comments = self
            .get(
                ALICE,
                &format!("/repos/{REPOSITORY}/issues/{issue}/comments?per_page=100"),
            )
            .await
            .unwrap();
        comments
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["body"].as_str().map(String::from))
            .filter(|b| b.contains("<!-- raibid-operator:status"))
            .collect()
    }

    /// What an agent does when it is done: a branch with a commit, and a pull request.
    pub async fn open_pull_request(&self, branch: &str, body: &str) -> u64 {
        self.open_pull_request_as(ALICE, REPOSITORY, branch, body)
            .await
            .unwrap()
    }

    /// The same, with `token`, in `repository`; the first refusal is the error.
    pub async fn open_pull_request_as(
        &self,
        token: &str,
        repository: &str,
        branch: &str,
        body: &str,
    ) -> Result<u64, String> {
        let main = self
            .get(ALICE, &format!("/repos/{repository}/git/ref/heads/main"))
            .await?;
        let sha = main["object"]["sha"].as_str().unwrap().to_owned();
        self.call(
            token,
            "POST",
            &format!("/repos/{repository}/git/refs"),
            Some(json!({"ref": format!("refs/heads/{branch}"), "sha": sha})),
        )
        .await?;
        self.call(
            token,
            "PUT",
            &format!(
                "/repos/{repository}/contents/{}.txt",
                branch.replace('/', "-")
            ),
            Some(json!({"message": "agent work", "content": "ZG9uZQo=", "branch": branch})),
        )
        .await?;
        let pr = self
            .call(
                token,
                "POST",
                &format!("/repos/{repository}/pulls"),
                Some(json!({"title": "Agent work", "head": branch, "base": "main", "body": body})),
            )
            .await?;
        Ok(pr["number"].as_u64().unwrap())
    }

    /// What a draft's enrichment agent does: rewrites the issue and removes `draft`, with the
    /// operator's token (which an agent of a token queue gets).
    pub async fn shape_draft(&self, issue: u64, body: &str) {
        self.call(
            BOT,
            "PATCH",
            &format!("/repos/{REPOSITORY}/issues/{issue}"),
            Some(json!({ "body": body })),
        )
        .await
        .unwrap();
        self.call(
            BOT,
            "DELETE",
            &format!("/repos/{REPOSITORY}/issues/{issue}/labels/draft"),
            None,
        )
        .await
        .unwrap();
    }

    pub async fn merge(&self, pull_request: u64) {
        self.call(
            ALICE,
            "PUT",
            &format!("/repos/{REPOSITORY}/pulls/{pull_request}/merge"),
            Some(json!({"merge_method": "squash"})),
        )
        .await
        .unwrap();
    }

    pub async fn close_issue(&self, issue: u64) {
        self.call(
            ALICE,
            "PATCH",
            &format!("/repos/{REPOSITORY}/issues/{issue}"),
            Some(json!({"state": "closed"})),
        )
        .await
        .unwrap();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A recorded webhook delivery: its headers and body, to be sent again.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When the emulator delivered it to the relay.
    pub received: std::time::Instant,
}

/// Sits between the emulator and the operator: forwards every delivery at once and keeps a
/// copy, so a test can send them all again — twice, in another order.
pub struct Relay {
    pub url: String,
    /// Where deliveries are forwarded to: the operator's webhook.
    pub target: String,
    pub seen: std::sync::Arc<std::sync::Mutex<Vec<Delivery>>>,
}

impl Relay {
    pub async fn start(target: String) -> Self {
        use axum::{body::Bytes, http::HeaderMap, routing::post};
        let seen: std::sync::Arc<std::sync::Mutex<Vec<Delivery>>> = Default::default();
        let keep = seen.clone();
        let forward_to = target.clone();
        let app = axum::Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: Bytes| {
                let keep = keep.clone();
                let target = forward_to.clone();
                async move {
                    let received = std::time::Instant::now();
                    let delivery = Delivery {
                        received,
                        headers: headers
                            .iter()
                            .filter(|(k, _)| {
                                let k = k.as_str();
                                k.starts_with("x-") || k == "content-type"
                            })
                            .map(|(k, v)| {
                                (k.to_string(), v.to_str().unwrap_or_default().to_owned())
                            })
                            .collect(),
                        body: body.to_vec(),
                    };
                    let status = send(&target, &delivery).await;
                    // Kept once the operator has answered (and so recorded it).
                    keep.lock().unwrap().push(delivery);
                    axum::http::StatusCode::from_u16(status)
                        .unwrap_or(axum::http::StatusCode::BAD_GATEWAY)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, target, seen }
    }
}

/// POSTs a delivery to `url` (`http://host:port/path`) and returns the status code.
pub async fn send(url: &str, delivery: &Delivery) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let Ok(mut stream) = tokio::net::TcpStream::connect(host).await else {
        return 502;
    };
    let mut request = format!(
        "POST /{path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\ncontent-length: {}\r\n",
        delivery.body.len()
    );
    for (name, value) in &delivery.headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    if stream.write_all(request.as_bytes()).await.is_err()
        || stream.write_all(&delivery.body).await.is_err()
    {
        return 502;
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response)
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(502)
}
