//! What only goes one way: fields one API has and the other lacks, request
//! validation, and streams that fail or are cut off.

use crate::translate::{to_anthropic, to_openai};
use serde_json::{json, Map, Value};

#[test]
fn openai_only_features_are_rejected_or_dropped() {
    let base = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let with = |k: &str, v: Value| {
        let mut r = base.as_object().cloned().unwrap_or_default();
        r.insert(k.into(), v);
        to_anthropic::request(&r, "claude", 1000)
    };
    for (k, v) in [
        ("n", json!(2)),
        ("logprobs", json!(true)),
        ("response_format", json!({"type": "json_object"})),
    ] {
        assert!(
            matches!(with(k, v), Err(crate::error::GatewayError::Unsupported(_))),
            "{k}"
        );
    }
    let a = with("seed", json!(3)).expect("seed is dropped");
    assert!(!a.contains_key("seed"));
    assert_eq!(a["max_tokens"], 1000, "default max_tokens");
    assert_eq!(
        with("temperature", json!(1.7)).expect("ok")["temperature"],
        1.0,
        "clamped to Anthropic's range"
    );
    let bad_args = json!({"model": "m", "messages": [{"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]});
    let e = to_anthropic::request(bad_args.as_object().unwrap_or(&Map::new()), "c", 10)
        .expect_err("arguments must be an object");
    assert!(e.to_string().contains("arguments"), "{e}");
}

#[test]
fn anthropic_requests_are_validated_with_the_field_named() {
    for (body, needle) in [
        (
            json!({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
            "model",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
            "max_tokens",
        ),
        (json!({"model": "m", "max_tokens": 5}), "messages"),
        (
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}),
            "role",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "maybe"}}),
            "tool_choice",
        ),
    ] {
        let e = to_openai::request(body.as_object().unwrap_or(&Map::new()))
            .expect_err(&body.to_string());
        assert_eq!(e.status(), 400);
        assert!(e.to_string().contains(needle), "{body}: {e}");
    }
}

#[test]
fn anthropic_only_blocks_are_flagged_not_dropped_silently() {
    let body = json!({"model": "m", "max_tokens": 5, "tools": [{"type": "web_search_20250305", "name": "web_search"}],
        "messages": [{"role": "user", "content": [{"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}, {"type": "text", "text": "Summarise"}]}]});
    let (o, lost) = to_openai::request(body.as_object().unwrap_or(&Map::new())).expect("valid");
    let lost = lost.expect("flagged");
    assert!(
        lost.contains("document") && lost.contains("web_search"),
        "{lost}"
    );
    assert_eq!(
        o["messages"][0]["content"][0]["text"], "Summarise",
        "triage still sees the text"
    );
    // Nothing but a document: still a valid OpenAI view, flagged.
    let only = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}]}]});
    let (o, lost) = to_openai::request(only.as_object().unwrap_or(&Map::new())).expect("valid");
    assert!(lost.is_some());
    assert_eq!(o["messages"], json!([{"role": "user", "content": ""}]));
}

#[test]
fn a_cut_off_openai_stream_is_an_error_for_anthropic_clients() {
    let mut t = to_anthropic::StreamTranslator::default();
    let out = t.push(r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"Par"},"finish_reason":null}]}"#).unwrap();
    let end = t.finish();
    let e = end.expect_err("a cut-off stream is an error, never a whole answer");
    assert_eq!(e.status(), 502);
    let last =
        String::from_utf8_lossy(&e.stream_event(crate::api::ApiFormat::Anthropic)).to_string();
    assert!(last.starts_with("event: error\n"), "{last}");
    assert!(!out
        .iter()
        .any(|b| String::from_utf8_lossy(b).contains("message_stop")));
}

#[test]
fn openai_stream_error_becomes_an_anthropic_error_event() {
    let mut t = to_anthropic::StreamTranslator::default();
    t.push(r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}"#).unwrap();
    let e = t
        .push(r#"{"error":{"message":"backend `x` stream timed out","type":"timeout_error","code":"upstream_timeout"}}"#)
        .expect_err("an error chunk is the upstream's failure");
    assert!(t.finish().unwrap().is_empty(), "nothing after the error");
    let last =
        String::from_utf8_lossy(&e.stream_event(crate::api::ApiFormat::Anthropic)).to_string();
    assert!(last.starts_with("event: error\n"), "{last}");
    assert!(last.contains("timeout_error"), "{last}");
}

#[test]
fn anthropic_stream_error_is_the_upstreams_failure() {
    let mut t = to_openai::StreamTranslator::new(false);
    let e = t
        .push(r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#)
        .expect_err("an error event is the upstream's failure");
    assert_eq!(e.status(), 503);
    assert!(e.to_string().contains("Overloaded"), "{e}");
}
