//! Anthropic both ways, against wiremock upstreams: OpenAI clients reaching
//! the `anthropic` backend, Anthropic clients (`POST /v1/messages`) reaching
//! OpenAI-compatible and Anthropic upstreams, streamed and not, tools
//! included, and the error mapping matrix.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use common::*;
use http::Request;
use serde_json::{json, Value};
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const POLICY: &str = r#"
version: 1
backends:
  openai:
    kind: openai
    api_key_env: TEST_OPENAI_KEY
    base_url_env: TEST_OPENAI_URL
    retries: { max_retries: 1, initial_backoff_ms: 5, max_backoff_ms: 10 }
    models:
      gpt-4o-mini: { input_per_mtok: 0.15, output_per_mtok: 0.60 }
  claude:
    kind: anthropic
    api_key_env: TEST_ANTHROPIC_KEY
    base_url_env: TEST_ANTHROPIC_URL
    default_max_tokens: 333
    retries: { max_retries: 1, initial_backoff_ms: 5, max_backoff_ms: 10 }
    models:
      claude-haiku-4-5: { input_per_mtok: 1.0, output_per_mtok: 5.0 }
reference_model: claude/claude-haiku-4-5
"#;

async fn app(openai: &MockServer, anthropic: &MockServer) -> axum::Router {
    let o = format!("{}/v1", openai.uri());
    let a = anthropic.uri();
    slmgate::app(state(
        POLICY,
        &[
            ("TEST_OPENAI_KEY", SECRET),
            ("TEST_OPENAI_URL", &o),
            ("TEST_ANTHROPIC_KEY", SECRET),
            ("TEST_ANTHROPIC_URL", &a),
        ],
    ))
}

fn message(content: Value, stop: &str) -> Value {
    json!({"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-haiku-4-5-20251001",
           "content": content, "stop_reason": stop, "stop_sequence": null,
           "usage": {"input_tokens": 40, "output_tokens": 12}})
}

fn events(list: &[(&str, Value)]) -> String {
    list.iter()
        .map(|(n, d)| format!("event: {n}\ndata: {d}\n\n"))
        .collect()
}

/// A streamed Anthropic answer: "Hel" + "lo", then a tool call whose JSON
/// arrives in two pieces.
fn anthropic_stream() -> String {
    events(&[
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_s", "type": "message", "role": "assistant", "model": "claude-haiku-4-5", "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 21, "output_tokens": 1}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        ("ping", json!({"type": "ping"})),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\": "}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 9}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ])
}

fn sse(body: String) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("content-type", "text/event-stream")
        .set_body_raw(body, "text/event-stream")
}

fn tools() -> Value {
    json!([{"type": "function", "function": {"name": "weather", "description": "Weather now",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
}

async fn metrics(app: &axum::Router) -> String {
    send(app, Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .body
}

#[tokio::test]
async fn openai_client_to_anthropic_backend() {
    let (o, a) = (MockServer::start().await, MockServer::start().await);
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header("x-api-key", SECRET))
        .and(header("anthropic-version", "2023-06-01"))
        .and(body_partial_json(json!({
            "model": "claude-haiku-4-5", "max_tokens": 333, "system": "Be brief.",
            "stop_sequences": ["END"], "temperature": 1.0,
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Oslo"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "-3C"}]},
            ],
            "tools": [{"name": "weather", "description": "Weather now", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(message(
            json!([{"type": "text", "text": "Checking."}, {"type": "tool_use", "id": "toolu_9", "name": "weather", "input": {"city": "Paris"}}]),
            "tool_use",
        )))
        .expect(1)
        .mount(&a)
        .await;
    let app = app(&o, &a).await;
    let body = json!({
        "model": "claude-haiku-4-5", "stop": "END", "temperature": 1.5,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Weather?"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "-3C"},
        ],
        "tools": tools(), "tool_choice": "auto", "parallel_tool_calls": false, "seed": 1,
    });
    let r = complete(&app, &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    let msg = &v["choices"][0]["message"];
    assert_eq!(msg["content"], "Checking.");
    assert_eq!(msg["tool_calls"][0]["id"], "toolu_9");
    assert_eq!(msg["tool_calls"][0]["function"]["name"], "weather");
    let args: Value = serde_json::from_str(
        msg["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(v["usage"]["prompt_tokens"], 40);
    assert_eq!(v["usage"]["completion_tokens"], 12);
    assert_eq!(r.header("x-slmgate-backend"), "claude");
    // 40 * 1/1e6 + 12 * 5/1e6
    assert_eq!(r.header("x-slmgate-cost-usd"), "0.0001");
    let m = metrics(&app).await;
    assert!(
        m.contains(r#"slmgate_tokens_total{backend="claude",direction="input",model="claude-haiku-4-5"} 40"#),
        "{m}"
    );
    assert!(!m.contains(SECRET));
}

#[tokio::test]
async fn openai_client_streams_from_anthropic_backend() {
    let (o, a) = (MockServer::start().await, MockServer::start().await);
    Mock::given(path("/v1/messages"))
        .and(body_partial_json(json!({"stream": true, "max_tokens": 50})))
        .respond_with(sse(anthropic_stream()))
        .expect(2)
        .mount(&a)
        .await;
    let app = app(&o, &a).await;
    let mut body = chat("claude-haiku-4-5", "weather in Paris?");
    body["stream"] = json!(true);
    body["max_tokens"] = json!(50);
    body["tools"] = tools();
    // Without include_usage: no usage chunk, but the request is still metered.
    let r = complete(&app, &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), "text/event-stream");
    let chunks = r.chunks();
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello");
    let call = chunks
        .iter()
        .find(|c| c["choices"][0]["delta"]["tool_calls"][0]["id"] == "toolu_1")
        .expect("tool call start");
    assert_eq!(
        call["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
        "weather"
    );
    let args: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"city": "Paris"})
    );
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "tool_calls"));
    let m = metrics(&app).await;
    assert!(
        m.contains(r#"slmgate_tokens_total{backend="claude",direction="output",model="claude-haiku-4-5"} 9"#),
        "{m}"
    );
    // With include_usage: the final chunk carries it.
    body["stream_options"] = json!({"include_usage": true});
    let r = complete(&app, &body).await;
    let data = r.sse_data();
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 21);
    assert_eq!(usage["usage"]["completion_tokens"], 9);
}

/// Each upstream error, from each provider, as each kind of client sees it.
#[tokio::test]
async fn error_mapping_matrix() {
    let anth_err =
        |ty: &str, msg: &str| json!({"type": "error", "error": {"type": ty, "message": msg}});
    let oai_err = |ty: &str, msg: &str| json!({"error": {"message": msg, "type": ty, "param": null, "code": null}});
    // (upstream status, gateway status)
    let cases = [
        (400, 400),
        (404, 404),
        (413, 413),
        (401, 502),
        (403, 502),
        (429, 429),
        (500, 502),
        (503, 503),
        (529, 503),
    ];
    for (up, want) in cases {
        let (o, a) = (MockServer::start().await, MockServer::start().await);
        let msg = format!("upstream says {up}");
        Mock::given(path("/v1/messages"))
            .respond_with(ResponseTemplate::new(up).set_body_json(anth_err("some_error", &msg)))
            .mount(&a)
            .await;
        Mock::given(path("/v1/chat/completions"))
            .respond_with(ResponseTemplate::new(up).set_body_json(oai_err("some_error", &msg)))
            .mount(&o)
            .await;
        let app = app(&o, &a).await;
        for model in ["claude-haiku-4-5", "gpt-4o-mini"] {
            // OpenAI client.
            let r = complete(&app, &chat(model, "hi")).await;
            assert_eq!(
                r.status, want,
                "openai client, {model}, upstream {up}: {}",
                r.body
            );
            let v = r.json();
            assert!(v["error"]["message"].is_string(), "{v}");
            if up < 500 && up != 401 && up != 403 && up != 429 {
                assert_eq!(
                    v["error"]["message"],
                    msg.as_str(),
                    "the upstream's words pass"
                );
            }
            // Anthropic client.
            let body = json!({"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
            let r = send(&app, post_json("/v1/messages", &body)).await;
            assert_eq!(
                r.status, want,
                "anthropic client, {model}, upstream {up}: {}",
                r.body
            );
            let v = r.json();
            assert_eq!(v["type"], "error", "{v}");
            let ty = v["error"]["type"].as_str().unwrap();
            let expected = match want {
                400 => "invalid_request_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                503 => "overloaded_error",
                _ => "api_error",
            };
            // The gateway's own answer to a 429 (it retried and gave up).
            if model == "gpt-4o-mini" || want >= 500 || want == 429 {
                assert_eq!(ty, expected, "{v}");
            } else {
                assert_eq!(
                    ty, "some_error",
                    "an Anthropic body reaches Anthropic clients as is"
                );
            }
            assert!(!r.body.contains(SECRET));
        }
    }
}

#[tokio::test]
async fn anthropic_client_to_openai_upstream() {
    let (o, a) = (MockServer::start().await, MockServer::start().await);
    Mock::given(path("/v1/chat/completions"))
        .and(header("authorization", format!("Bearer {SECRET}").as_str()))
        .and(body_partial_json(json!({
            "model": "gpt-4o-mini", "max_tokens": 64, "stop": ["\n\n"], "user": "u-7",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "What is the weather?"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "21C"},
            ],
            "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "weather"}},
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-9", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "It is 21C."}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 6, "total_tokens": 36}})))
        .expect(1)
        .mount(&o)
        .await;
    let app = app(&o, &a).await;
    let body = json!({
        "model": "gpt-4o-mini", "max_tokens": 64, "system": [{"type": "text", "text": "You are terse."}],
        "stop_sequences": ["\n\n"], "metadata": {"user_id": "u-7"},
        "messages": [
            {"role": "user", "content": "What is the weather?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "21C"}]}]},
        ],
        "tools": [{"name": "weather", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "weather"},
    });
    let req = Request::post("/v1/messages")
        .header("content-type", "application/json")
        .header("x-api-key", "client-key")
        .header("anthropic-version", "2023-06-01")
        .body(Body::from(body.to_string()))
        .unwrap();
    let r = send(&app, req).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({"id": "chatcmpl-9", "type": "message", "role": "assistant", "model": "gpt-4o-mini",
               "content": [{"type": "text", "text": "It is 21C."}], "stop_reason": "max_tokens",
               "stop_sequence": null, "usage": {"input_tokens": 30, "output_tokens": 6}})
    );
    assert_eq!(r.header("x-slmgate-backend"), "openai");
}

/// Parse an Anthropic SSE body into (event name, data) pairs.
fn anthropic_sse(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let name = e
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or("");
            let data = e
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap_or("null");
            (name.to_string(), serde_json::from_str(data).unwrap())
        })
        .collect()
}

#[tokio::test]
async fn anthropic_client_streams_from_both_upstreams() {
    let (o, a) = (MockServer::start().await, MockServer::start().await);
    let chunk = |delta: Value, finish: Value| json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    let openai_body: String = [
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": "Hel"}), Value::Null),
        chunk(json!({"content": "lo"}), Value::Null),
        chunk(json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "weather", "arguments": ""}}]}), Value::Null),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": \"Paris\"}"}}]}), Value::Null),
        chunk(json!({}), json!("tool_calls")),
        json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini", "choices": [], "usage": {"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30}}),
    ]
    .iter()
    .map(|c| format!("data: {c}\n\n"))
    .chain(["data: [DONE]\n\n".to_string()])
    .collect();
    Mock::given(path("/v1/chat/completions"))
        .and(body_partial_json(
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        ))
        .respond_with(sse(openai_body))
        .mount(&o)
        .await;
    Mock::given(path("/v1/messages"))
        .and(body_partial_json(json!({"stream": true})))
        .respond_with(sse(anthropic_stream()))
        .mount(&a)
        .await;
    let app = app(&o, &a).await;
    for model in ["gpt-4o-mini", "claude-haiku-4-5"] {
        let body = json!({"model": model, "max_tokens": 50, "stream": true,
            "messages": [{"role": "user", "content": "weather?"}],
            "tools": [{"name": "weather", "input_schema": {"type": "object"}}]});
        let r = send(&app, post_json("/v1/messages", &body)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("content-type"), "text/event-stream");
        // The Anthropic upstream's events pass through as they came (pings too).
        let ev: Vec<(String, Value)> = anthropic_sse(&r.body)
            .into_iter()
            .filter(|(n, _)| n != "ping")
            .collect();
        let mut names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
        names.dedup(); // however many deltas each block got
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ],
            "{model}: {}",
            r.body
        );
        for (n, d) in &ev {
            assert_eq!(d["type"], n.as_str(), "event name = data type");
        }
        assert_eq!(ev[0].1["message"]["role"], "assistant");
        assert_eq!(
            ev[2].1["delta"],
            json!({"type": "text_delta", "text": "Hel"})
        );
        assert_eq!(ev[5].1["content_block"]["type"], "tool_use");
        assert_eq!(ev[5].1["content_block"]["name"], "weather");
        assert_eq!(ev[5].1["index"], 1);
        let args: String = ev
            .iter()
            .filter_map(|(_, d)| d["delta"]["partial_json"].as_str())
            .collect();
        assert_eq!(
            serde_json::from_str::<Value>(&args).unwrap(),
            json!({"city": "Paris"})
        );
        let (_, delta) = &ev[ev.len() - 2];
        assert_eq!(delta["delta"]["stop_reason"], "tool_use");
        assert_eq!(delta["usage"]["output_tokens"], 9);
        // Input tokens: at the start from Anthropic, at the end from OpenAI.
        let input = ev[0].1["message"]["usage"]["input_tokens"]
            .as_u64()
            .unwrap()
            + delta["usage"]["input_tokens"].as_u64().unwrap_or(0);
        assert_eq!(input, 21, "{model}");
    }
    let m = metrics(&app).await;
    for b in ["openai", "claude"] {
        assert!(
            m.contains(&format!(
                r#"slmgate_tokens_total{{backend="{b}",direction="input",model="#
            )),
            "{b} metered: {m}"
        );
    }
    assert!(m.contains(r#"slmgate_tokens_total{backend="claude",direction="output",model="claude-haiku-4-5"} 9"#), "{m}");
}

/// `/v1/messages` to an Anthropic backend: the client's body goes on as is
/// (features only Anthropic has included) and the answer comes back as is.
#[tokio::test]
async fn anthropic_client_to_anthropic_backend_is_passed_through() {
    let (o, a) = (MockServer::start().await, MockServer::start().await);
    let body = json!({
        "model": "claude-haiku-4-5", "max_tokens": 2000, "top_k": 5,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "system": [{"type": "text", "text": "Be exact.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "The sky is green."}},
            {"type": "text", "text": "What colour is the sky, per the document?"}]}],
        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 1}],
    });
    let answer = json!({"id": "msg_n", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
        "content": [{"type": "thinking", "thinking": "The document says green.", "signature": "sig"},
                    {"type": "text", "text": "Green.", "citations": null}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 50, "cache_read_input_tokens": 10, "output_tokens": 7}});
    Mock::given(path("/v1/messages"))
        .and(header("anthropic-beta", "files-api-2025-04-14"))
        .and(wiremock::matchers::body_json(&body))
        .respond_with(ResponseTemplate::new(200).set_body_json(&answer))
        .expect(1)
        .mount(&a)
        .await;
    let app = app(&o, &a).await;
    let mut req = post_json("/v1/messages", &body);
    req.headers_mut()
        .insert("anthropic-beta", "files-api-2025-04-14".parse().unwrap());
    let r = send(&app, req).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), answer);
    assert_eq!(r.header("x-slmgate-backend"), "claude");
    // 60 input tokens (cache reads included) at $1/M + 7 at $5/M.
    assert_eq!(r.header("x-slmgate-cost-usd"), "0.000095");

    // The same request for an OpenAI model: its document and server tool cannot
    // be translated, so it is refused rather than silently cut down.
    let mut to_openai = body.clone();
    to_openai["model"] = json!("gpt-4o-mini");
    let r = send(&app, post_json("/v1/messages", &to_openai)).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let v = r.json();
    assert_eq!(v["type"], "error");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("document") && msg.contains("Anthropic backend"),
        "{msg}"
    );
    assert!(o.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn anthropic_client_gets_anthropic_errors() {
    let (o, a) = (MockServer::start().await, MockServer::start().await);
    let app = app(&o, &a).await;
    let ok = json!({"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
    let mut no_model = ok.clone();
    no_model["model"] = json!("claude-nope");
    let mut no_max = ok.clone();
    no_max.as_object_mut().unwrap().remove("max_tokens");
    let mut bad_temp = ok.clone();
    bad_temp["temperature"] = json!("hot");
    for (body, status, ty, needle) in [
        (no_model.to_string(), 404, "not_found_error", "claude-nope"),
        (
            no_max.to_string(),
            400,
            "invalid_request_error",
            "max_tokens",
        ),
        (
            bad_temp.to_string(),
            400,
            "invalid_request_error",
            "temperature",
        ),
        ("{nope".to_string(), 400, "invalid_request_error", "JSON"),
        (
            r#"{"model":"gpt-4o-mini","max_tokens":5,"messages":[]}"#.to_string(),
            400,
            "invalid_request_error",
            "at least one",
        ),
    ] {
        let req = Request::post("/v1/messages")
            .header("content-type", "application/json")
            .body(Body::from(body.clone()))
            .unwrap();
        let r = send(&app, req).await;
        assert_eq!(r.status, status, "{body}: {}", r.body);
        let v = r.json();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], ty, "{body}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{body}: {v}"
        );
    }
    let r = send(
        &app,
        Request::get("/v1/messages").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["type"], "error");
    let r = send(
        &app,
        Request::post("/v1/messages")
            .header("content-type", "text/plain")
            .body(Body::from("x"))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 415);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn anthropic_backend_falls_back_and_keeps_the_key_secret() {
    let (o, a) = (MockServer::start().await, MockServer::start().await);
    Mock::given(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(529).set_body_json(json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})))
        .expect(2) // one retry
        .mount(&a)
        .await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "from openai"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})))
        .mount(&o)
        .await;
    let yaml = format!("{POLICY}fallbacks:\n  claude/claude-haiku-4-5: [openai/gpt-4o-mini]\n");
    let app = slmgate::app(state(
        &yaml,
        &[
            ("TEST_OPENAI_KEY", SECRET),
            ("TEST_OPENAI_URL", &format!("{}/v1", o.uri())),
            ("TEST_ANTHROPIC_KEY", SECRET),
            ("TEST_ANTHROPIC_URL", &a.uri()),
        ],
    ));
    let body = json!({"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let r = send(&app, post_json("/v1/messages", &body)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["content"][0]["text"], "from openai");
    assert!(r
        .header("x-slmgate-fallback")
        .contains("claude/claude-haiku-4-5 -> openai/gpt-4o-mini"));
    let m = metrics(&app).await;
    assert!(
        m.contains(r#"slmgate_upstream_errors_total{backend="claude",kind="upstream_status"} 1"#),
        "{m}"
    );
    assert!(!m.contains(SECRET) && !r.body.contains(SECRET));
}

/// Streams cut off upstream end in an error event, in each client's shape,
/// and an unreadable answer is a 502, never an empty success.
#[tokio::test]
async fn cut_off_streams_and_broken_answers_are_errors() {
    let (o, a) = (MockServer::start().await, MockServer::start().await);
    let cut: String = anthropic_stream()
        .split("\n\n")
        .take(4) // message_start, block start, ping, first delta
        .map(|e| format!("{e}\n\n"))
        .collect();
    Mock::given(path("/v1/messages"))
        .respond_with(sse(cut))
        .mount(&a)
        .await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_raw("<html>oops</html>", "text/html"))
        .mount(&o)
        .await;
    let app = app(&o, &a).await;
    let mut body = chat("claude-haiku-4-5", "hi");
    body["stream"] = json!(true);
    let r = complete(&app, &body).await;
    let data = r.sse_data();
    assert_ne!(
        data.last().map(String::as_str),
        Some("[DONE]"),
        "{}",
        r.body
    );
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ended early"),
        "{last}"
    );
    let m = metrics(&app).await;
    assert!(m.contains(r#"slmgate_tokens_total{backend="claude",direction="input",model="claude-haiku-4-5"} 21"#), "still metered: {m}");

    let native = json!({"model": "claude-haiku-4-5", "max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let r = send(&app, post_json("/v1/messages", &native)).await;
    assert!(r.body.contains("event: error"), "{}", r.body);
    assert!(!r.body.contains("message_stop"));

    let to_openai = json!({"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let r = send(&app, post_json("/v1/messages", &to_openai)).await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.json()["error"]["type"], "api_error");
}

/// Anthropic rejects whitespace-only stop sequences (OpenAI clients often send
/// "\n"): the gateway sends the others and applies those itself.
#[tokio::test]
async fn whitespace_stops_are_applied_by_the_gateway() {
    let (o, a) = (MockServer::start().await, MockServer::start().await);
    let text_stream = |text: &str| {
        events(&[
            (
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_w", "type": "message", "role": "assistant", "model": "claude-haiku-4-5", "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 8, "output_tokens": 1}}}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            (
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 6}}),
            ),
            ("message_stop", json!({"type": "message_stop"})),
        ])
    };
    Mock::given(path("/v1/messages"))
        .and(body_partial_json(
            json!({"stop_sequences": ["END"], "stream": true}),
        ))
        .respond_with(sse(text_stream("lo\nworld")))
        .mount(&a)
        .await;
    Mock::given(path("/v1/messages"))
        .and(body_partial_json(json!({"stop_sequences": ["END"]})))
        .respond_with(ResponseTemplate::new(200).set_body_json(message(
            json!([{"type": "text", "text": "line one\nline two"}]),
            "end_turn",
        )))
        .mount(&a)
        .await;
    let app = app(&o, &a).await;
    let mut body = chat("claude-haiku-4-5", "two lines please");
    body["stop"] = json!(["\n", "END"]);
    let r = complete(&app, &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["choices"][0]["message"]["content"], "line one");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let sent: Value = a.received_requests().await.unwrap()[0].body_json().unwrap();
    assert_eq!(
        sent["stop_sequences"],
        json!(["END"]),
        "whitespace-only stops are not sent"
    );

    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = complete(&app, &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let chunks = r.chunks();
    assert_eq!(
        chunks[0]["choices"][0]["delta"]["role"], "assistant",
        "the role survives the filter"
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello");
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "stop"));
    assert_eq!(
        chunks.last().unwrap()["usage"]["prompt_tokens"],
        8,
        "usage chunk last"
    );
    let finishes = chunks
        .iter()
        .filter(|c| !c["choices"][0]["finish_reason"].is_null())
        .count();
    assert_eq!(finishes, 1, "one finish, the upstream's own is dropped");
}
