//! Shared helpers for integration tests: build `app()` from YAML with an
//! injected environment, send requests with `oneshot`, read bodies.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::Router;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use slmgate::config::Policy;
use slmgate::state::{AppState, StateOptions};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use tower::ServiceExt;

pub const SECRET: &str = "sk-upstream-secret-do-not-leak";

pub fn state(yaml: &str, env: &[(&str, &str)]) -> Arc<AppState> {
    let policy = Policy::from_yaml(yaml).expect("policy");
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    AppState::new(
        policy,
        StateOptions {
            env: Box::new(move |k| env.get(k).cloned()),
            models_dir: models_dir(),
            start_local: true,
        },
    )
    .expect("state")
}

pub fn models_dir() -> PathBuf {
    std::env::var_os("SLMGATE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"))
}

/// The default local model's GGUF, which must exist (scripts/test fetches it).
pub fn smollm2_gguf() -> PathBuf {
    let gguf = models_dir().join(slmgate::fetch::SMOLLM2_GGUF);
    assert!(
        gguf.exists(),
        "{} is missing: run `slmgate models fetch` (scripts/test does)",
        gguf.display()
    );
    gguf
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }
    /// The JSON chunks of an OpenAI SSE body, which must end with `[DONE]`.
    pub fn chunks(&self) -> Vec<serde_json::Value> {
        let data = self.sse_data();
        assert_eq!(
            data.last().map(String::as_str),
            Some("[DONE]"),
            "{}",
            self.body
        );
        data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    /// `data:` payloads of an SSE body, `[DONE]` included.
    pub fn sse_data(&self) -> Vec<String> {
        self.body
            .split("\n\n")
            .filter_map(|ev| {
                ev.lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .map(str::to_string)
            })
            .collect()
    }
}

pub async fn send(app: &Router, req: Request<Body>) -> Reply {
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

pub fn post_json(path: &str, body: &serde_json::Value) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

pub fn chat(model: &str, prompt: &str) -> serde_json::Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": prompt}]})
}

/// POST a chat-completions body through `app`.
pub async fn complete(app: &Router, body: &serde_json::Value) -> Reply {
    send(app, post_json("/v1/chat/completions", body)).await
}

/// The value of the `/metrics` line that starts with `line` (series name
/// and labels), or "" when there is none.
pub async fn metric(app: &Router, line: &str) -> String {
    let m = send(app, Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .body;
    m.lines()
        .find_map(|l| l.strip_prefix(line).map(|v| v.trim().to_string()))
        .unwrap_or_default()
}

/// A mock OpenAI upstream answering every chat completion with `content`
/// (9 prompt tokens, `completion` completion tokens).
pub async fn openai_upstream(content: &str, completion: u64) -> wiremock::MockServer {
    use wiremock::matchers::{method, path};
    let s = wiremock::MockServer::start().await;
    wiremock::Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            wiremock::ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 9, "completion_tokens": completion, "total_tokens": 9 + completion}
            })),
        )
        .mount(&s)
        .await;
    s
}

/// A free TCP port on 127.0.0.1 (free when asked).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `slmgate serve` process (the built binary) with `policy` in a temp
/// file, the upstream key in `TEST_OPENAI_KEY`; killed on drop.
pub struct Gateway {
    pub child: std::process::Child,
    pub port: u16,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The policy file (edit it to reload).
    pub file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Gateway {
    pub fn start(policy: &str) -> Gateway {
        Gateway::start_at(policy, free_port())
    }

    /// The same, on a given port (a restart where the last one listened).
    pub fn start_at(policy: &str, port: u16) -> Gateway {
        use std::time::{Duration, Instant};
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policy.yaml");
        std::fs::write(&file, policy).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_slmgate"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--policy",
            ])
            .arg(&file)
            .env("TEST_OPENAI_KEY", SECRET)
            .env("SLMGATE_MODELS_DIR", models_dir())
            .env("SLMGATE_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "slmgate did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Gateway {
            child,
            port,
            url: format!("http://127.0.0.1:{port}"),
            file,
            _dir: dir,
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
