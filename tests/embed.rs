//! `examples/embed.rs`, driven without a socket: the user's own routes next
//! to slmgate, the user's own layer inside slmgate's chat path, and
//! slmgate's routing stages in front of the user's own handler.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[allow(dead_code)]
#[path = "../examples/embed.rs"]
mod embed;

use common::*;
use http::Request;
use serde_json::json;
use slmgate::Gateway;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const POLICY: &str = r#"
version: 1
backends:
  openai:
    kind: openai
    api_key_env: TEST_OPENAI_KEY
    base_url_env: TEST_OPENAI_URL
    models:
      gpt-4o-mini: { input_per_mtok: 0.15, output_per_mtok: 0.60 }
      gpt-4o: { input_per_mtok: 2.50, output_per_mtok: 10.00 }
routes:
  auto:
    tiers:
      - { name: simple, max_score: 0.5, target: openai/gpt-4o-mini }
      - { name: hard, target: openai/gpt-4o }
"#;

#[tokio::test]
async fn the_example_mounts_slmgate_next_to_its_own_routes_and_layer() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Tokyo."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}})))
        .expect(1)
        .mount(&server)
        .await;
    let url = format!("{}/v1", server.uri());
    let state = state(
        POLICY,
        &[("TEST_OPENAI_KEY", SECRET), ("TEST_OPENAI_URL", &url)],
    );
    let app = embed::app(Gateway::from_state(state));

    // The user's own route.
    let r = send(
        &app,
        Request::get("/hello").body(Default::default()).unwrap(),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (200, "hello from my own service")
    );

    // The user's layer refuses a chat request without x-team, inside slmgate's chain.
    let body = chat("auto", "What is the capital of Japan?");
    let r = send(&app, post_json("/llm/v1/chat/completions", &body)).await;
    assert_eq!(r.status, 401, "{}", r.body);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("x-team"), "{msg}");
    assert!(
        !r.header("x-request-id").is_empty(),
        "the access log above it ran"
    );
    // ... answered in the client's format: Anthropic's error shape on /v1/messages.
    let anthropic = json!({"model": "gpt-4o-mini", "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}]});
    let r = send(&app, post_json("/llm/v1/messages", &anthropic)).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["error"]["type"], "authentication_error");

    // With it, the request is routed, answered and metered.
    let mut req = post_json("/llm/v1/chat/completions", &body);
    req.headers_mut()
        .insert("x-team", "search".parse().unwrap());
    let r = send(&app, req).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["choices"][0]["message"]["content"], "Tokyo.");
    assert_eq!(r.header("x-slmgate-route"), "auto:simple");
    assert_eq!(r.header("x-slmgate-backend"), "openai");

    // slmgate's routing stages in front of the user's own handler.
    let r = send(
        &app,
        post_json(
            "/route",
            &chat("auto", "Prove that sqrt(2) is irrational, step by step."),
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert!(v["route"].as_str().unwrap().starts_with("auto:"), "{v}");
    assert!(
        v["score"].as_f64().is_some() && v["target"].is_string(),
        "{v}"
    );
    let r = send(&app, post_json("/route", &chat("gpt-9", "hi"))).await;
    assert_eq!(
        r.status, 404,
        "the stages answer bad requests themselves: {}",
        r.body
    );

    // Both chat requests were counted once, the refusal with its status.
    let m = send(
        &app,
        Request::get("/llm/metrics")
            .body(Default::default())
            .unwrap(),
    )
    .await
    .body;
    assert!(
        m.contains(
            r#"slmgate_requests_total{backend="none",model="none",route="none",status="401"} 2"#
        ),
        "{m}"
    );
    assert!(
        m.contains(r#"slmgate_requests_total{backend="openai",model="gpt-4o-mini",route="auto:simple",status="200"} 1"#),
        "{m}"
    );
}
