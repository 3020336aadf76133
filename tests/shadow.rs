//! Shadow sampling end to end: answers from the real local model are also
//! sent to a (wiremock) reference model off the request path, compared by
//! MiniLM embedding similarity, and counted in the metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use common::*;
use http::Request;
use serde_json::json;
use std::time::{Duration, Instant};
use wiremock::matchers::{body_partial_json, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn policy(rate: f64) -> String {
    let gguf = models_dir().join(slmgate::fetch::SMOLLM2_GGUF);
    format!(
        r#"
version: 1
backends:
  cloud:
    kind: openai
    api_key_env: TEST_KEY
    base_url_env: TEST_URL
    models:
      ref: {{ input_per_mtok: 1, output_per_mtok: 2 }}
  local:
    kind: local
    gguf: {}
    models:
      local: {{ input_per_mtok: 0, output_per_mtok: 0 }}
reference_model: cloud/ref
triage: {{ kind: model }}
shadow: {{ sample_rate: {rate}, max_in_flight: 2, agree_threshold: 0.5 }}
"#,
        gguf.display()
    )
}

async fn metrics(app: &axum::Router) -> String {
    send(app, Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .body
}

fn counter(m: &str, result: &str) -> u64 {
    let key = format!("slmgate_shadow_requests_total{{result=\"{result}\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(&key))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_answers_are_shadowed_off_the_request_path() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .and(body_partial_json(json!({"model": "ref", "stream": false})))
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(Duration::from_millis(1500))
                .set_body_json(json!({
                    "id": "c", "object": "chat.completion", "created": 1, "model": "ref",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "The capital of France is Paris."}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18}})),
        )
        .mount(&server)
        .await;
    let url = format!("{}/v1", server.uri());
    let st = state(&policy(1.0), &[("TEST_KEY", SECRET), ("TEST_URL", &url)]);
    st.wait_ready().await.unwrap();
    let app = slmgate::app(st);

    let mut body = chat("local", "What is the capital of France?");
    body["max_tokens"] = json!(24);
    let r = complete(&app, &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-slmgate-backend"), "local");
    // The reference answers 1.5 s later: the client already has its answer.
    let m = metrics(&app).await;
    assert_eq!(counter(&m, "agree") + counter(&m, "disagree"), 0, "{m}");

    // Streamed answers are shadowed too, once the stream has ended.
    body["stream"] = json!(true);
    let r = complete(&app, &body).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.sse_data().last().map(String::as_str), Some("[DONE]"));

    let deadline = Instant::now() + Duration::from_secs(30);
    let m = loop {
        let m = metrics(&app).await;
        if counter(&m, "agree") + counter(&m, "disagree") == 2 {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "shadow results never arrived: {m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(counter(&m, "error"), 0, "{m}");
    assert!(m.contains("slmgate_shadow_similarity_count 2"), "{m}");
    assert!(m.contains("slmgate_shadow_agreement_ratio"), "{m}");
    // 10 * 1/1e6 + 8 * 2/1e6 per shadow call
    let cost: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("slmgate_shadow_cost_usd_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!((cost - 0.000052).abs() < 1e-12, "{m}");
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2, "one shadow call per local answer");
    let sent: serde_json::Value = requests[0].body_json().unwrap();
    assert_eq!(
        sent["messages"][0]["content"],
        "What is the capital of France?"
    );
    assert!(!m.contains(SECRET));

    // Answers from the cloud itself are never shadowed.
    let mut direct = chat("ref", "hi");
    direct["stream"] = json!(false);
    let r = complete(&app, &direct).await;
    assert_eq!(r.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_policy_errors_name_the_fix() {
    let p = policy(1.5);
    let e = slmgate::config::Policy::from_yaml(&p).unwrap_err();
    assert!(e.contains("shadow.sample_rate"), "{e}");
    let p = policy(0.1).replace("triage: { kind: model }", "triage: { kind: features }");
    let e = slmgate::config::Policy::from_yaml(&p).unwrap_err();
    assert!(e.contains("kind: model"), "{e}");
    let p = policy(0.1).replace("reference_model: cloud/ref", "reference_model: local/local");
    let e = slmgate::config::Policy::from_yaml(&p).unwrap_err();
    assert!(e.contains("is local"), "{e}");
}
