//! Circuit breakers against mock upstreams: a backend that keeps failing is
//! cut off after `breaker.failures` calls — later requests go straight to
//! the fallback without calling it — and says so in the metrics, in
//! `/readyz` and in `x-slmgate-fallback`; a backend that answers again is
//! let back in by a probe.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn policy(flaky: &str, good: &str, open_secs: u64) -> String {
    format!(
        r#"
version: 1
backends:
  flaky:
    kind: openai
    api_key_env: TEST_OPENAI_KEY
    base_url: {flaky}
    retries: {{ max_retries: 0 }}
    models:
      m: {{ input_per_mtok: 1, output_per_mtok: 1 }}
  good:
    kind: openai
    api_key_env: TEST_OPENAI_KEY
    base_url: {good}
    retries: {{ max_retries: 0 }}
    models:
      m2: {{ input_per_mtok: 1, output_per_mtok: 1 }}
fallbacks:
  flaky/m: [good/m2]
breaker: {{ failures: 3, open_secs: {open_secs} }}
"#
    )
}

async fn failing() -> MockServer {
    let s = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(500).set_body_string("down"))
        .mount(&s)
        .await;
    s
}

#[tokio::test]
async fn a_failing_backend_is_cut_off_and_let_back_in() {
    let (bad, good) = (failing().await, openai_upstream("from good", 2).await);
    let app = slmgate::app(state(
        &policy(
            &format!("{}/v1", bad.uri()),
            &format!("{}/v1", good.uri()),
            60,
        ),
        &[("TEST_OPENAI_KEY", SECRET)],
    ));
    let circuit = r#"slmgate_circuit_state{backend="flaky"}"#;
    assert_eq!(metric(&app, circuit).await, "0");
    for i in 0..6 {
        let r = complete(&app, &chat("m", "hi")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["choices"][0]["message"]["content"], "from good");
        let why = r.header("x-slmgate-fallback");
        if i < 3 {
            assert!(why.contains("upstream_status"), "{why}");
        } else {
            assert!(why.contains("circuit_open"), "{why}");
        }
    }
    assert_eq!(
        bad.received_requests().await.unwrap().len(),
        3,
        "cut off after 3"
    );
    assert_eq!(metric(&app, circuit).await, "1");
    let r = send(
        &app,
        http::Request::get("/readyz")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "fallbacks still answer");
    assert_eq!(
        r.json()["circuits"],
        json!({"flaky": "open", "good": "closed"})
    );
}

#[tokio::test]
async fn a_probe_closes_the_circuit_when_the_backend_is_back() {
    let bad = failing().await;
    let good = openai_upstream("from good", 2).await;
    // open_secs 0: every call after opening is a probe.
    let app = slmgate::app(state(
        &policy(
            &format!("{}/v1", bad.uri()),
            &format!("{}/v1", good.uri()),
            0,
        ),
        &[("TEST_OPENAI_KEY", SECRET)],
    ));
    for _ in 0..3 {
        complete(&app, &chat("m", "hi")).await;
    }
    // The backend recovers: the next probe succeeds and closes it.
    bad.reset().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "c", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "back"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        })))
        .mount(&bad)
        .await;
    let r = complete(&app, &chat("m", "hi")).await;
    assert_eq!(r.json()["choices"][0]["message"]["content"], "back");
    assert_eq!(
        metric(&app, r#"slmgate_circuit_state{backend="flaky"}"#).await,
        "0"
    );
}
