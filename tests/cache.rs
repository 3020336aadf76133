//! The exact response cache against wiremock upstreams (the local model's
//! cached answers are in tests/local.rs, Redis-shared ones in tests/keys.rs):
//! byte-identical whole answers, equivalent streams, what misses, TTL,
//! `Cache-Control`, keys kept apart, accounting.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn policy(upstream: &str, cache: &str, keys: &str) -> String {
    format!(
        r#"
version: 1
backends:
  openai:
    kind: openai
    api_key_env: TEST_OPENAI_KEY
    base_url: {upstream}
    retries: {{ max_retries: 0 }}
    models:
      gpt-4o-mini: {{ input_per_mtok: 0.15, output_per_mtok: 0.60 }}
      gpt-4o: {{ input_per_mtok: 2.50, output_per_mtok: 10.00 }}
reference_model: openai/gpt-4o
routes:
  auto:
    tiers:
      - {{ name: all, target: openai/gpt-4o-mini }}
  creative:
    cache: off
    tiers:
      - {{ name: all, target: openai/gpt-4o-mini }}
cache:
  exact: {{ {cache} }}
{keys}
"#
    )
}

/// An upstream that answers each request with a different body (its
/// sequence number), so a cached answer is told from a fresh one.
async fn counting_upstream() -> MockServer {
    struct Counting(std::sync::atomic::AtomicU64);
    impl wiremock::Respond for Counting {
        fn respond(&self, req: &wiremock::Request) -> ResponseTemplate {
            let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body: Value = serde_json::from_slice(&req.body).unwrap();
            if body["stream"] == true {
                let events = [
                    json!({"id": format!("c{n}"), "object": "chat.completion.chunk", "created": n, "model": "gpt-4o-mini",
                        "choices": [{"index": 0, "delta": {"role": "assistant", "content": format!("answer {n}")}, "finish_reason": null}]}),
                    json!({"id": format!("c{n}"), "object": "chat.completion.chunk", "created": n, "model": "gpt-4o-mini",
                        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
                    json!({"id": format!("c{n}"), "object": "chat.completion.chunk", "created": n, "model": "gpt-4o-mini",
                        "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}}),
                ];
                let mut sse = String::new();
                for e in events {
                    sse += &format!("data: {e}\n\n");
                }
                sse += "data: [DONE]\n\n";
                return ResponseTemplate::new(200)
                    .insert_header("content-type", "text/event-stream")
                    .set_body_string(sse);
            }
            ResponseTemplate::new(200).set_body_json(json!({
                "id": format!("c{n}"), "object": "chat.completion", "created": n, "model": "gpt-4o-mini",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("answer {n}")}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
            }))
        }
    }
    let s = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(Counting(0.into()))
        .mount(&s)
        .await;
    s
}

fn app_for(yaml: &str) -> axum::Router {
    slmgate::app(state(yaml, &[("TEST_OPENAI_KEY", SECRET)]))
}

fn det(model: &str, prompt: &str) -> Value {
    let mut b = chat(model, prompt);
    b["temperature"] = json!(0);
    b
}

async fn metric(app: &axum::Router, line: &str) -> f64 {
    let r = send(
        app,
        http::Request::get("/metrics")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await;
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_repeated_deterministic_request_is_answered_byte_for_byte() {
    let up = counting_upstream().await;
    let app = app_for(&policy(&format!("{}/v1", up.uri()), "", ""));
    let body = det("gpt-4o-mini", "What is the capital of France?");
    let first = complete(&app, &body).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.header("x-slmgate-cache"), "miss");
    let second = complete(&app, &body).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.header("x-slmgate-cache"), "hit");
    assert_eq!(second.body, first.body, "byte-identical");
    assert_eq!(second.header("x-slmgate-backend"), "cache");
    assert_eq!(
        second.header("x-slmgate-cache-origin"),
        "openai/gpt-4o-mini"
    );
    assert_eq!(second.header("x-slmgate-cost-usd"), "0");
    assert_eq!(up.received_requests().await.unwrap().len(), 1);

    // Fields that do not change the answer do not change the key.
    let mut same = body.clone();
    same["user"] = json!("someone-else");
    assert_eq!(complete(&app, &same).await.header("x-slmgate-cache"), "hit");

    // Accounting: hits counted, and saved at what they would have cost
    // (10 x 0.15 + 2 x 0.60 per M = $0.0000027 on gpt-4o-mini).
    assert_eq!(
        metric(
            &app,
            r#"slmgate_cache_requests_total{cache="exact",result="hit"}"#
        )
        .await,
        2.0
    );
    assert_eq!(
        metric(
            &app,
            r#"slmgate_cache_requests_total{cache="exact",result="miss"}"#
        )
        .await,
        1.0
    );
    let saved = metric(&app, r#"slmgate_cache_saved_usd_total{cache="exact"}"#).await;
    assert!((saved - 2.0 * 0.0000027).abs() < 1e-12, "{saved}");

    assert_eq!(
        metric(
            &app,
            r#"slmgate_requests_total{backend="cache",model="gpt-4o-mini",route="direct",status="200"}"#
        )
        .await,
        2.0
    );
    assert!(metric(&app, r#"slmgate_cache_bytes{cache="exact"}"#).await > 0.0);
}

#[tokio::test]
async fn what_changes_the_answer_misses_and_sampled_requests_bypass() {
    let up = counting_upstream().await;
    let app = app_for(&policy(&format!("{}/v1", up.uri()), "", ""));
    let body = det("gpt-4o-mini", "Name a prime number.");
    assert_eq!(
        complete(&app, &body).await.header("x-slmgate-cache"),
        "miss"
    );
    let mut variants = vec![];
    for (k, v) in [
        ("max_tokens", json!(5)),
        ("seed", json!(7)),
        ("stop", json!(["."])),
        ("top_p", json!(0.5)),
    ] {
        let mut b = body.clone();
        b[k] = v;
        variants.push(b);
    }
    let mut other_model = body.clone();
    other_model["model"] = json!("gpt-4o");
    variants.push(other_model);
    variants.push(det("gpt-4o-mini", "Name a prime number!"));
    for b in &variants {
        let r = complete(&app, b).await;
        assert_eq!(r.header("x-slmgate-cache"), "miss", "{b}");
    }
    // Sampled (no temperature: the API's default is 1): not cached.
    let sampled = chat("gpt-4o-mini", "Name a prime number.");
    for _ in 0..2 {
        let r = complete(&app, &sampled).await;
        assert_eq!(r.header("x-slmgate-cache"), "bypass");
    }
    // A route with `cache: off`.
    for _ in 0..2 {
        let r = complete(&app, &det("creative", "Name a prime number.")).await;
        assert_eq!(r.header("x-slmgate-cache"), "bypass");
    }
    assert_eq!(
        up.received_requests().await.unwrap().len(),
        1 + variants.len() + 4
    );

    // `mode: always` caches sampled requests too.
    let app = app_for(&policy(&format!("{}/v1", up.uri()), "mode: always", ""));
    assert_eq!(
        complete(&app, &sampled).await.header("x-slmgate-cache"),
        "miss"
    );
    assert_eq!(
        complete(&app, &sampled).await.header("x-slmgate-cache"),
        "hit"
    );
}

#[tokio::test]
async fn entries_expire_and_cache_control_is_honoured() {
    let up = counting_upstream().await;
    let app = app_for(&policy(&format!("{}/v1", up.uri()), "ttl_secs: 1", ""));
    let body = det("gpt-4o-mini", "Spell 'cat' backwards.");
    let with = |cc: &str| {
        let mut r = post_json("/v1/chat/completions", &body);
        r.headers_mut().insert("cache-control", cc.parse().unwrap());
        r
    };
    // no-store: looked up, not stored.
    assert_eq!(
        send(&app, with("no-store")).await.header("x-slmgate-cache"),
        "miss"
    );
    assert_eq!(
        send(&app, with("no-store")).await.header("x-slmgate-cache"),
        "miss"
    );
    // no-cache: not looked up, but stored.
    let fresh = send(&app, with("no-cache")).await;
    assert_eq!(fresh.header("x-slmgate-cache"), "bypass");
    let hit = complete(&app, &body).await;
    assert_eq!(hit.header("x-slmgate-cache"), "hit");
    assert_eq!(hit.body, fresh.body);
    assert_eq!(
        send(&app, with("No-Cache, no-store"))
            .await
            .header("x-slmgate-cache"),
        "bypass"
    );
    assert_eq!(up.received_requests().await.unwrap().len(), 4);
    // After the TTL: a miss again.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        complete(&app, &body).await.header("x-slmgate-cache"),
        "miss"
    );
}

#[tokio::test]
async fn streams_are_stored_when_complete_and_replayed_as_streams() {
    let up = counting_upstream().await;
    let app = app_for(&policy(&format!("{}/v1", up.uri()), "", ""));
    let mut body = det("gpt-4o-mini", "Count to three.");
    body["stream"] = json!(true);
    let first = complete(&app, &body).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.header("x-slmgate-cache"), "miss");
    let second = complete(&app, &body).await;
    assert_eq!(second.header("x-slmgate-cache"), "hit");
    assert!(second
        .header("content-type")
        .starts_with("text/event-stream"));
    assert_eq!(second.chunks(), first.chunks(), "the same events");
    // With usage asked for: its own entry, whose replay carries it too.
    body["stream_options"] = json!({"include_usage": true});
    assert_eq!(
        complete(&app, &body).await.header("x-slmgate-cache"),
        "miss"
    );
    let with_usage = complete(&app, &body).await;
    assert_eq!(with_usage.header("x-slmgate-cache"), "hit");
    let last = with_usage.chunks().last().cloned().unwrap();
    assert_eq!(last["usage"]["completion_tokens"], 2, "{}", with_usage.body);
    // A whole request is a different entry from a streamed one.
    body["stream"] = json!(false);
    body.as_object_mut().unwrap().remove("stream_options");
    assert_eq!(
        complete(&app, &body).await.header("x-slmgate-cache"),
        "miss"
    );
    assert_eq!(up.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn one_keys_answers_are_not_served_to_another_unless_shared() {
    let up = counting_upstream().await;
    let (a, b) = (slmgate::keys::generate(), slmgate::keys::generate());
    let keys = format!(
        "keys:\n  a: {{ id: '{}', hash: '{}' }}\n  b: {{ id: '{}', hash: '{}' }}\n",
        a.id, a.hash, b.id, b.hash
    );
    let body = det("gpt-4o-mini", "What is 2 + 2?");
    let as_key = |k: &str| {
        let mut r = post_json("/v1/chat/completions", &body);
        r.headers_mut()
            .insert("authorization", format!("Bearer {k}").parse().unwrap());
        r
    };
    let said = |app: &axum::Router, k: &str| {
        let (app, req) = (app.clone(), as_key(k));
        async move { send(&app, req).await.header("x-slmgate-cache") }
    };
    let app = app_for(&policy(&format!("{}/v1", up.uri()), "", &keys));
    assert_eq!(said(&app, &a.plaintext).await, "miss");
    assert_eq!(said(&app, &a.plaintext).await, "hit");
    assert_eq!(
        said(&app, &b.plaintext).await,
        "miss",
        "b never sees a's answer"
    );
    let shared = policy(
        &format!("{}/v1", up.uri()),
        "share_across_keys: true",
        &keys,
    );
    let app = app_for(&shared);
    assert_eq!(said(&app, &a.plaintext).await, "miss");
    assert_eq!(said(&app, &b.plaintext).await, "hit");
}

#[tokio::test]
async fn anthropic_clients_get_their_cached_answer_in_their_format() {
    let up = counting_upstream().await;
    let app = app_for(&policy(&format!("{}/v1", up.uri()), "", ""));
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 50, "temperature": 0,
        "messages": [{"role": "user", "content": "Say hi."}]});
    let first = send(&app, post_json("/v1/messages", &body)).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.header("x-slmgate-cache"), "miss");
    let second = send(&app, post_json("/v1/messages", &body)).await;
    assert_eq!(second.header("x-slmgate-cache"), "hit");
    assert_eq!(second.json()["content"], first.json()["content"]);
    assert_eq!(second.json()["type"], "message");
    // Streamed, the replay is a proper Anthropic event stream.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let first = send(&app, post_json("/v1/messages", &streamed)).await;
    assert_eq!(first.header("x-slmgate-cache"), "miss");
    let second = send(&app, post_json("/v1/messages", &streamed)).await;
    assert_eq!(second.header("x-slmgate-cache"), "hit");
    let events = |r: &Reply| -> Vec<String> {
        r.body
            .lines()
            .filter_map(|l| l.strip_prefix("event: ").map(String::from))
            .collect()
    };
    assert_eq!(events(&second), events(&first), "{}", second.body);
    assert!(events(&second).contains(&"message_stop".to_string()));
    let text = |r: &Reply| -> String {
        r.sse_data()
            .iter()
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|v| v["delta"]["text"].as_str().map(String::from))
            .collect()
    };
    assert_eq!(text(&second), text(&first));
    // The same conversation from an OpenAI client is another entry.
    let openai = det("gpt-4o-mini", "Say hi.");
    assert_eq!(
        complete(&app, &openai).await.header("x-slmgate-cache"),
        "miss"
    );
}

#[tokio::test]
async fn failed_answers_are_not_cached() {
    let s = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(500).set_body_string("boom"))
        .mount(&s)
        .await;
    let app = app_for(&policy(&format!("{}/v1", s.uri()), "", ""));
    let body = det("gpt-4o-mini", "hello");
    for _ in 0..2 {
        let r = complete(&app, &body).await;
        assert!(r.status.is_server_error(), "{}", r.status);
        assert_eq!(r.header("x-slmgate-cache"), "miss");
    }
    assert_eq!(s.received_requests().await.unwrap().len(), 2);
}
