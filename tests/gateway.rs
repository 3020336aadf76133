//! The gateway core against wiremock upstreams: routing, pass-through,
//! streaming, retries, fallbacks, timeouts, metering, and the bad-input matrix.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use common::*;
use http::Request;
use serde_json::{json, Value};
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn policy(extra_backend: &str) -> String {
    format!(
        r#"
version: 1
server: {{ max_body_bytes: 4096 }}
backends:
  openai:
    kind: openai
    api_key_env: TEST_OPENAI_KEY
    base_url_env: TEST_OPENAI_URL
    base_url: http://127.0.0.1:9/v1
    timeouts: {{ connect_ms: 500, first_byte_ms: 800, idle_ms: 800, total_ms: 5000 }}
    retries: {{ max_retries: 2, initial_backoff_ms: 10, max_backoff_ms: 20 }}
    models:
      gpt-4o-mini: {{ input_per_mtok: 0.15, output_per_mtok: 0.60 }}
      gpt-4o: {{ input_per_mtok: 2.50, output_per_mtok: 10.00, upstream_name: gpt-4o-2024-08-06 }}
{extra_backend}
reference_model: openai/gpt-4o
routes:
  auto:
    tiers:
      - {{ name: simple, max_score: 0.5, target: openai/gpt-4o-mini }}
      - {{ name: hard, target: openai/gpt-4o }}
    fallbacks: [openai/gpt-4o-mini]
fallbacks:
  openai/gpt-4o: [openai/gpt-4o-mini]
"#
    )
}

fn completion(model: &str, text: &str) -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}
    })
}

async fn mock() -> MockServer {
    MockServer::start().await
}

fn app_for(server: &MockServer) -> axum::Router {
    let url = format!("{}/v1", server.uri());
    slmgate::app(state(
        &policy(""),
        &[("TEST_OPENAI_KEY", SECRET), ("TEST_OPENAI_URL", &url)],
    ))
}

#[tokio::test]
async fn non_streamed_passes_through_with_headers_and_cost() {
    let server = mock().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", format!("Bearer {SECRET}").as_str()))
        .and(body_partial_json(json!({"model": "gpt-4o-mini", "seed": 7, "user": "u1",
            "response_format": {"type": "json_object"}, "tools": [{"type": "function", "function": {"name": "f"}}]})))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("gpt-4o-mini-2024", "hi there")))
        .expect(1)
        .mount(&server)
        .await;
    let app = app_for(&server);
    let mut body = chat("gpt-4o-mini", "hello");
    body["seed"] = json!(7);
    body["user"] = json!("u1");
    body["response_format"] = json!({"type": "json_object"});
    body["tools"] = json!([{"type": "function", "function": {"name": "f"}}]);
    let r = complete(&app, &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["choices"][0]["message"]["content"], "hi there");
    assert_eq!(
        v["model"], "gpt-4o-mini-2024",
        "the upstream's shape, model = what answered"
    );
    assert_eq!(r.header("x-slmgate-backend"), "openai");
    assert_eq!(r.header("x-slmgate-model"), "gpt-4o-mini");
    assert_eq!(r.header("x-slmgate-route"), "direct");
    // 1000 * 0.15/1e6 + 500 * 0.60/1e6
    assert_eq!(r.header("x-slmgate-cost-usd"), "0.00045");
    let score: f64 = r.header("x-slmgate-triage-score").parse().unwrap();
    assert!((0.0..=1.0).contains(&score));
    let overhead: f64 = r.header("x-slmgate-overhead-ms").parse().unwrap();
    assert!(overhead >= 0.0);
    let m = send(&app, Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .body;
    assert!(m.contains(r#"slmgate_requests_total{backend="openai",model="gpt-4o-mini",route="direct",status="200"} 1"#), "{m}");
    assert!(m.contains(
        r#"slmgate_tokens_total{backend="openai",direction="output",model="gpt-4o-mini"} 500"#
    ));
    assert!(m.contains(r#"slmgate_cost_usd_total{backend="openai",model="gpt-4o-mini"} 0.00045"#));
    // gpt-4o reference: 1000*2.5/1e6 + 500*10/1e6 = 0.0075; saved 0.0075 - 0.00045
    assert!(
        m.contains(r#"slmgate_savings_usd_total{backend="openai",model="gpt-4o-mini"} 0.00705"#),
        "{m}"
    );
    assert!(m.contains("slmgate_overhead_seconds_count 1"));
    assert!(!m.contains(SECRET));
}

#[tokio::test]
async fn upstream_name_and_auto_tiers() {
    let server = mock().await;
    Mock::given(body_partial_json(json!({"model": "gpt-4o-2024-08-06"})))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(completion("gpt-4o-2024-08-06", "big")),
        )
        .mount(&server)
        .await;
    Mock::given(body_partial_json(json!({"model": "gpt-4o-mini"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("gpt-4o-mini", "small")))
        .mount(&server)
        .await;
    let app = app_for(&server);
    let r = complete(&app, &chat("auto", "What is the capital of Japan?")).await;
    assert_eq!(r.header("x-slmgate-route"), "auto:simple");
    assert_eq!(r.json()["choices"][0]["message"]["content"], "small");
    let hard =
        "Prove step by step that there are infinitely many primes, then implement an algorithm \
                in Rust that verifies it and analyze its complexity in detail.";
    let r = complete(&app, &chat("auto", hard)).await;
    assert_eq!(
        r.header("x-slmgate-route"),
        "auto:hard",
        "{}",
        r.header("x-slmgate-triage-score")
    );
    assert_eq!(r.header("x-slmgate-model"), "gpt-4o");
    assert_eq!(r.json()["choices"][0]["message"]["content"], "big");
}

fn sse_body(with_usage: bool) -> String {
    let mut s = String::new();
    for (i, piece) in ["Hel", "lo", "!"].iter().enumerate() {
        let role = if i == 0 { r#""role":"assistant","# } else { "" };
        s += &format!("data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{{role}\"content\":\"{piece}\"}},\"finish_reason\":null}}],\"usage\":null}}\n\n");
    }
    s += "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n";
    if with_usage {
        s += "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":3,\"total_tokens\":13}}\n\n";
    }
    s + "data: [DONE]\n\n"
}

#[tokio::test]
async fn streams_strip_usage_unless_asked_and_meter_it() {
    let server = mock().await;
    Mock::given(body_partial_json(
        json!({"stream": true, "stream_options": {"include_usage": true}}),
    ))
    .respond_with(
        ResponseTemplate::new(200)
            .insert_header("content-type", "text/event-stream")
            .set_body_string(sse_body(true)),
    )
    .expect(2)
    .mount(&server)
    .await;
    let app = app_for(&server);
    let mut body = chat("gpt-4o-mini", "hello");
    body["stream"] = json!(true);
    let r = complete(&app, &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), "text/event-stream");
    assert_eq!(r.header("x-slmgate-backend"), "openai");
    let chunks = r.chunks();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello!");
    assert!(
        chunks
            .iter()
            .all(|c| !c["choices"].as_array().unwrap().is_empty()),
        "usage chunk stripped"
    );
    assert!(chunks
        .iter()
        .all(|c| c.get("usage").is_none_or(Value::is_null)));

    body["stream_options"] = json!({"include_usage": true});
    let r = complete(&app, &body).await;
    let data = r.sse_data();
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 3);
    let m = send(&app, Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .body;
    assert!(
        m.contains(
            r#"slmgate_tokens_total{backend="openai",direction="input",model="gpt-4o-mini"} 20"#
        ),
        "{m}"
    );
    assert!(
        m.contains("slmgate_ttft_seconds_count{backend=\"openai\"} 2"),
        "{m}"
    );
}

/// A stream that fails after its head — cut off before `[DONE]`, or an
/// error event from the upstream — ends with an error event (no `[DONE]`),
/// and is counted once, with the error's status, as a mid-stream failure.
#[tokio::test]
async fn mid_stream_failures_end_in_an_error_event_and_are_counted() {
    let cut: String = sse_body(true).replace("data: [DONE]\n\n", "");
    let broken = sse_body(false).replace(
        "data: [DONE]\n\n",
        "data: {\"error\":{\"message\":\"model overloaded\",\"type\":\"overloaded_error\"}}\n\n",
    );
    for (upstream, status, needle) in [
        (cut, "502", "ended early"),
        (broken, "503", "model overloaded"),
    ] {
        let server = mock().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(200)
                    .insert_header("content-type", "text/event-stream")
                    .set_body_string(upstream),
            )
            .mount(&server)
            .await;
        let app = app_for(&server);
        let mut body = chat("gpt-4o-mini", "hello");
        body["stream"] = json!(true);
        let r = complete(&app, &body).await;
        assert_eq!(r.status, 200, "the head went out before the failure");
        let data = r.sse_data();
        assert_ne!(
            data.last().map(String::as_str),
            Some("[DONE]"),
            "{}",
            r.body
        );
        let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
        let msg = last["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains(needle), "{last}");
        assert!(
            data.iter().any(|d| d.contains("Hel")),
            "what came before is kept"
        );
        let m = send(&app, Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .body;
        let counted = format!(
            r#"slmgate_requests_total{{backend="openai",model="gpt-4o-mini",route="direct",status="{status}"}} 1"#
        );
        assert!(m.contains(&counted), "{counted}\n{m}");
        assert!(!m.contains(r#"status="200"}"#), "counted once: {m}");
        assert!(
            m.contains(r#"slmgate_upstream_errors_total{backend="openai",kind="mid_stream"} 1"#),
            "{m}"
        );
    }
}

#[tokio::test]
async fn retries_5xx_then_succeeds() {
    let server = mock().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(completion("gpt-4o-mini", "third time")),
        )
        .expect(1)
        .mount(&server)
        .await;
    let r = send(
        &app_for(&server),
        post_json("/v1/chat/completions", &chat("gpt-4o-mini", "x")),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.header("x-slmgate-fallback").is_empty());
}

#[tokio::test]
async fn failing_target_falls_back_with_header_and_metric() {
    let server = mock().await;
    Mock::given(body_partial_json(json!({"model": "gpt-4o-2024-08-06"})))
        .respond_with(ResponseTemplate::new(500))
        .expect(3)
        .mount(&server)
        .await;
    Mock::given(body_partial_json(json!({"model": "gpt-4o-mini"})))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(completion("gpt-4o-mini", "fallback answer")),
        )
        .mount(&server)
        .await;
    let app = app_for(&server);
    let r = complete(&app, &chat("gpt-4o", "x")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-slmgate-model"), "gpt-4o-mini");
    assert!(
        r.header("x-slmgate-fallback")
            .starts_with("openai/gpt-4o -> openai/gpt-4o-mini: upstream_status"),
        "{}",
        r.header("x-slmgate-fallback")
    );
    let m = send(&app, Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .body;
    assert!(m.contains(r#"slmgate_fallbacks_total{from="openai/gpt-4o",reason="upstream_status",to="openai/gpt-4o-mini"} 1"#), "{m}");
    assert!(
        m.contains(r#"slmgate_upstream_errors_total{backend="openai",kind="upstream_status"} 1"#)
    );
}

/// A fresh mock upstream that answers every request with `t`; one request through the gateway.
async fn upstream_answers(t: ResponseTemplate) -> Reply {
    let server = mock().await;
    Mock::given(method("POST"))
        .respond_with(t)
        .mount(&server)
        .await;
    send(
        &app_for(&server),
        post_json("/v1/chat/completions", &chat("gpt-4o-mini", "x")),
    )
    .await
}

#[tokio::test]
async fn upstream_errors_map_to_gateway_statuses() {
    // 4xx about the client's request: passed through, no retry, no fallback.
    let server = mock().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            json!({"error": {"message": "bad tool schema", "type": "invalid_request_error"}}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let r = send(
        &app_for(&server),
        post_json("/v1/chat/completions", &chat("gpt-4o", "x")),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["message"], "bad tool schema");

    // 5xx on every attempt of every target: 502.
    let r = upstream_answers(ResponseTemplate::new(502)).await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("after 3 attempt"));

    // No response head within first_byte_ms: 504.
    let r =
        upstream_answers(ResponseTemplate::new(200).set_delay(std::time::Duration::from_secs(3)))
            .await;
    assert_eq!(r.status, 504, "{}", r.body);

    // Nothing listening: connect errors are retried, then 502.
    let app = slmgate::app(state(
        &policy(""),
        &[
            ("TEST_OPENAI_KEY", SECRET),
            ("TEST_OPENAI_URL", "http://127.0.0.1:9/v1"),
        ],
    ));
    let r = complete(&app, &chat("gpt-4o-mini", "x")).await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(
        !r.body.contains(SECRET) && !r.body.contains("127.0.0.1"),
        "{}",
        r.body
    );

    // The gateway's key rejected: 502 naming the env var, never the key.
    let r = upstream_answers(ResponseTemplate::new(401)).await;
    assert_eq!(r.status, 502);
    assert!(
        r.body.contains("TEST_OPENAI_KEY") && !r.body.contains(SECRET),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn missing_key_is_503_naming_the_env_var() {
    let app = slmgate::app(state(&policy(""), &[]));
    let r = complete(&app, &chat("gpt-4o-mini", "x")).await;
    assert_eq!(r.status, 503);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("TEST_OPENAI_KEY"),
        "{}",
        r.body
    );
    // Health is unaffected: the gateway runs with an unavailable backend.
    let r = send(&app, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn unavailable_backend_falls_back_to_another_backend() {
    let server = mock().await;
    Mock::given(method("POST"))
        .and(header("authorization", "Bearer other-key"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("m2", "from second")))
        .mount(&server)
        .await;
    let second = format!(
        "  second:\n    kind: openai\n    api_key_env: SECOND_KEY\n    base_url: {}/v1\n    models:\n      m2: {{ input_per_mtok: 1, output_per_mtok: 1 }}\n",
        server.uri()
    );
    let yaml = policy(&second).replace(
        "fallbacks: [openai/gpt-4o-mini]",
        "fallbacks: [openai/gpt-4o-mini, second/m2]",
    );
    let app = slmgate::app(state(&yaml, &[("SECOND_KEY", "other-key")]));
    let r = complete(&app, &chat("auto", "hi")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-slmgate-backend"), "second");
    assert!(
        r.header("x-slmgate-fallback").contains("TEST_OPENAI_KEY"),
        "{}",
        r.header("x-slmgate-fallback")
    );
}

#[tokio::test]
async fn bad_inputs_get_openai_errors() {
    let app = slmgate::app(state(&policy(""), &[("TEST_OPENAI_KEY", SECRET)]));
    let post = |ct: &str, body: &str| {
        Request::post("/v1/chat/completions")
            .header("content-type", ct)
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let cases: Vec<(Request<Body>, u16, &str)> = vec![
        (post("application/json", "{not json"), 400, "invalid_json"),
        (post("application/json", "[]"), 400, "invalid_request"),
        (
            post("application/json", r#"{"model":"gpt-4o"}"#),
            400,
            "invalid_request",
        ),
        (
            post("application/json", r#"{"model":"gpt-4o","messages":"hi"}"#),
            400,
            "invalid_request",
        ),
        (
            post(
                "application/json",
                r#"{"model":"gpt-4o","messages":[{"role":"user","content":"x"}],"max_tokens":"many"}"#,
            ),
            400,
            "invalid_request",
        ),
        (
            post(
                "application/json",
                r#"{"model":"nope","messages":[{"role":"user","content":"x"}]}"#,
            ),
            404,
            "model_not_found",
        ),
        (
            post("text/plain", r#"{"model":"gpt-4o","messages":[]}"#),
            415,
            "unsupported_media_type",
        ),
        (
            post(
                "application/json",
                &format!(
                    r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{}"}}]}}"#,
                    "x".repeat(5000)
                ),
            ),
            413,
            "payload_too_large",
        ),
        (
            Request::get("/v1/nothing").body(Body::empty()).unwrap(),
            404,
            "unknown_url",
        ),
        (
            Request::get("/v1/chat/completions")
                .body(Body::empty())
                .unwrap(),
            405,
            "method_not_allowed",
        ),
        (
            Request::delete("/v1/models").body(Body::empty()).unwrap(),
            405,
            "method_not_allowed",
        ),
    ];
    for (req, status, code) in cases {
        let what = format!("{} {}", req.method(), req.uri());
        let r = send(&app, req).await;
        assert_eq!(r.status, status, "{what}: {}", r.body);
        let v = r.json();
        assert_eq!(v["error"]["code"], code, "{what}: {}", r.body);
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        assert!(v["error"]["type"].is_string());
    }
    let r = complete(&app, &chat("nope", "x")).await;
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("`nope`"));
}

#[tokio::test]
async fn models_health_and_metrics_endpoints() {
    let app = slmgate::app(state(&policy(""), &[]));
    let r = send(
        &app,
        Request::get("/v1/models").body(Body::empty()).unwrap(),
    )
    .await;
    let ids: Vec<String> = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    for id in ["auto", "gpt-4o-mini", "gpt-4o"] {
        assert!(ids.contains(&id.to_string()), "{ids:?}");
    }
    assert_eq!(
        send(&app, Request::get("/healthz").body(Body::empty()).unwrap())
            .await
            .status,
        200
    );
    let m = send(&app, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert!(m.header("content-type").starts_with("text/plain"));
    assert!(m.body.contains("slmgate_local_queue_depth 0"), "{}", m.body);
}

#[test]
fn shipped_policies_load_and_check_catches_mistakes() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    for name in [
        "default.yaml",
        "cost-saver.yaml",
        "quality-first.yaml",
        "privacy-first.yaml",
        "calibrated.yaml",
    ] {
        let p = slmgate::config::Policy::from_file(&dir.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(p.routes.contains_key("auto"), "{name}");
    }
    // The calibrated example's success head is found next to it and loads.
    let p = slmgate::config::Policy::from_file(&dir.join("calibrated.yaml")).unwrap();
    let head = p.triage.local_success_head.clone().unwrap();
    assert!(std::path::Path::new(&head).is_absolute(), "{head}");
    slmgate::calibrate::success::SuccessHead::load(std::path::Path::new(&head)).unwrap();
    let default = slmgate::config::Policy::embedded_default().unwrap();
    let slmgate::config::BackendConfig::Openai(o) = &default.backends["openai"] else {
        panic!("openai backend")
    };
    assert_eq!(o.api_key_env, "OPENAI_API_KEY");
    assert_eq!(o.base_url_env.as_deref(), Some("OPENAI_BASE_URL"));
    assert!(o.models.contains_key("gpt-4o-mini") && o.models.contains_key("gpt-4o"));

    let base = policy("");
    for (broken, needle) in [
        (
            base.replace("target: openai/gpt-4o }", "target: openai/gpt-5 }"),
            "routes.auto.tiers[1].target",
        ),
        (
            base.replace(
                "api_key_env: TEST_OPENAI_KEY",
                "api_key_env: TEST_OPENAI_KEY\n    colour: blue",
            ),
            "unknown field `colour`",
        ),
        (
            base.replace("max_score: 0.5", "max_score: 1.5"),
            "max_score",
        ),
        (
            base.replace(
                "{ name: hard, target",
                "{ name: hard, min_score: 0.5, target",
            ),
            "last tier must have no conditions",
        ),
        (base.replace("version: 1", "version: 2"), "`version`"),
        (
            base.replace("reference_model: openai/gpt-4o", "reference_model: gpt-4o"),
            "reference_model",
        ),
        (
            base.replace("input_per_mtok: 0.15", "input_per_mtok: -1"),
            "prices must be >= 0",
        ),
        (
            base.replace("    api_key_env: TEST_OPENAI_KEY\n", ""),
            "only a `self_hosted: true` backend may go without",
        ),
        (
            base.replace(
                "base_url: http://127.0.0.1:9/v1",
                "base_url: http://127.0.0.1:9/v1\n    base_urls: [http://127.0.0.1:10/v1]",
            ),
            "leave out `base_url` and `base_url_env`",
        ),
        (
            base.replace(
                "base_url: http://127.0.0.1:9/v1",
                "base_url: http://127.0.0.1:9/v1\n    max_concurrency: 0",
            ),
            "max_concurrency",
        ),
        (
            base.replace(
                "output_per_mtok: 0.60 }",
                "output_per_mtok: 0.60, defaults: { temperature: 3 } }",
            ),
            "defaults`: temperature in [0, 2]",
        ),
    ] {
        let e = slmgate::config::Policy::from_yaml(&broken).expect_err(needle);
        assert!(e.contains(needle), "want `{needle}` in: {e}");
    }
    // The local engine: mistral.rs, named or not.
    let local = |engine: &str| {
        policy(&format!(
            "  lm:\n    kind: local\n    gguf: x.gguf\n{engine}    models:\n      lm: {{ input_per_mtok: 0, output_per_mtok: 0 }}"
        ))
    };
    for engine in ["", "    engine: mistralrs\n"] {
        slmgate::config::Policy::from_yaml(&local(engine)).unwrap_or_else(|e| panic!("{e}"));
    }
    // llama.cpp: accepted in a build with the `llamacpp` feature, refused
    // (with how to get it) in one without.
    let r = slmgate::config::Policy::from_yaml(&local("    engine: llamacpp\n"));
    if cfg!(feature = "llamacpp") {
        r.unwrap_or_else(|e| panic!("{e}"));
    } else {
        let e = r.unwrap_err();
        assert!(
            e.contains("`backends.lm.engine`: `llamacpp` is not available in this build (build with `--features llamacpp`)"),
            "{e}"
        );
    }
    // A self-hosted fleet: no key needed, replicas instead of one URL.
    let fleet = base
        .replace("api_key_env: TEST_OPENAI_KEY\n", "self_hosted: true\n")
        .replace("    base_url_env: TEST_OPENAI_URL\n", "")
        .replace(
            "base_url: http://127.0.0.1:9/v1",
            "base_urls: [http://127.0.0.1:9/v1, http://127.0.0.1:10/v1]",
        );
    let p = slmgate::config::Policy::from_yaml(&fleet).unwrap_or_else(|e| panic!("{e}"));
    assert!(p.backends["openai"].is_local());
}

/// `defaults:` on a model fills what a request leaves out — and only that —
/// in the body sent upstream, for both client APIs.
#[tokio::test]
async fn model_defaults_fill_only_what_the_request_left_out() {
    let server = mock().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("m", "ok")))
        .mount(&server)
        .await;
    let url = format!("{}/v1", server.uri());
    let yaml = policy("").replace(
        "gpt-4o-mini: { input_per_mtok: 0.15, output_per_mtok: 0.60 }",
        "gpt-4o-mini: { input_per_mtok: 0.15, output_per_mtok: 0.60, defaults: { temperature: 0.2, top_p: 0.9, max_tokens: 77 } }",
    );
    let app = slmgate::app(state(
        &yaml,
        &[("TEST_OPENAI_KEY", SECRET), ("TEST_OPENAI_URL", &url)],
    ));
    let bare = complete(&app, &chat("gpt-4o-mini", "hi")).await;
    assert_eq!(bare.status, 200, "{}", bare.body);
    let mut own = chat("gpt-4o-mini", "hi");
    own["temperature"] = json!(1.0);
    own["max_completion_tokens"] = json!(5);
    assert_eq!(complete(&app, &own).await.status, 200);
    let other = complete(&app, &chat("gpt-4o", "hi")).await;
    assert_eq!(other.status, 200);
    let anthropic = json!({"model": "gpt-4o-mini", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(
        send(&app, post_json("/v1/messages", &anthropic))
            .await
            .status,
        200
    );

    let sent: Vec<Value> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(sent.len(), 4);
    assert_eq!(
        (
            &sent[0]["temperature"],
            &sent[0]["top_p"],
            &sent[0]["max_tokens"]
        ),
        (&json!(0.2), &json!(0.9), &json!(77))
    );
    assert_eq!(sent[1]["temperature"], 1.0, "the client's own choice wins");
    assert_eq!(sent[1]["top_p"], 0.9);
    assert_eq!(sent[1]["max_completion_tokens"], 5);
    assert!(sent[1].get("max_tokens").is_none(), "{}", sent[1]);
    assert!(
        sent[2].get("temperature").is_none(),
        "gpt-4o has no defaults"
    );
    assert_eq!(sent[3]["temperature"], 0.2);
    assert_eq!(sent[3]["max_tokens"], 9);
}
