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
