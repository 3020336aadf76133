//! Round trips between the two formats, over generated requests, responses
//! and streams (proptest), plus the cases that only go one way.

mod one_way;

use super::{to_anthropic, to_openai};
use crate::api::sse::{event_data, EventSplitter};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ,.?!\n{}\"é]{1,24}"
}

fn args() -> impl Strategy<Value = Value> {
    proptest::collection::btree_map(
        "[a-z]{1,6}",
        prop_oneof![
            any::<i32>().prop_map(Value::from),
            text().prop_map(Value::from)
        ],
        0..3,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn image() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[a-z]{1,10}".prop_map(|p| json!({"type": "image_url", "image_url": {"url": format!("https://example.com/{p}.png")}})),
        "[A-Za-z0-9+/]{4,16}".prop_map(|d| json!({"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{d}")}})),
    ]
}

fn user_msg() -> impl Strategy<Value = Value> {
    prop_oneof![
        text().prop_map(|t| json!({"role": "user", "content": t})),
        proptest::collection::vec(
            prop_oneof![
                text().prop_map(|t| json!({"type": "text", "text": t})),
                image()
            ],
            1..4
        )
        .prop_map(|parts| json!({"role": "user", "content": parts})),
    ]
}

/// An assistant turn, and the tool results answering it (if it called tools).
fn assistant_turn() -> impl Strategy<Value = Vec<Value>> {
    prop_oneof![
        text().prop_map(|t| vec![json!({"role": "assistant", "content": t})]),
        (
            proptest::option::of(text()),
            proptest::collection::vec(("[a-z_]{1,8}", args(), text()), 1..3)
        )
            .prop_map(|(t, calls)| {
                let tool_calls: Vec<Value> = calls
                    .iter()
                    .enumerate()
                    .map(|(i, (name, a, _))| json!({"id": format!("call_{i}"), "type": "function", "function": {"name": name, "arguments": a.to_string()}}))
                    .collect();
                let mut out = vec![json!({"role": "assistant", "content": t, "tool_calls": tool_calls})];
                for (i, (_, _, result)) in calls.iter().enumerate() {
                    out.push(json!({"role": "tool", "tool_call_id": format!("call_{i}"), "content": result}));
                }
                out
            }),
    ]
}

fn tool_def() -> impl Strategy<Value = Value> {
    ("[a-z_]{1,8}", proptest::option::of(text())).prop_map(|(name, d)| {
        let mut f = json!({"name": name, "parameters": {"type": "object", "properties": {"x": {"type": "string"}}}});
        if let Some(d) = d {
            f["description"] = d.into();
        }
        json!({"type": "function", "function": f})
    })
}

prop_compose! {
    /// A chat request in the canonical forms both APIs can express.
    fn openai_request()(
        system in proptest::option::of(text()),
        turns in proptest::collection::vec((user_msg(), proptest::option::of(assistant_turn())), 1..4),
        max_tokens in 1u64..5000,
        temperature in proptest::option::of(0u32..=4),
        top_p in proptest::option::of(1u32..=4),
        stop in proptest::option::of(proptest::collection::vec("[a-z#]{1,5}", 1..3)),
        tools in proptest::option::of(proptest::collection::vec(tool_def(), 1..3)),
        choice in 0usize..6,
        serial in any::<bool>(),
        user in proptest::option::of("[a-z0-9]{1,8}"),
        stream in any::<bool>(),
    ) -> Map<String, Value> {
        let mut messages = Vec::new();
        if let Some(s) = system {
            messages.push(json!({"role": "system", "content": s}));
        }
        for (u, a) in turns {
            messages.push(u);
            messages.extend(a.unwrap_or_default());
        }
        let mut r = Map::new();
        r.insert("model".into(), "m".into());
        r.insert("messages".into(), messages.into());
        r.insert("max_tokens".into(), max_tokens.into());
        if let Some(t) = temperature { r.insert("temperature".into(), json!(f64::from(t) / 4.0)); }
        if let Some(t) = top_p { r.insert("top_p".into(), json!(f64::from(t) / 4.0)); }
        if let Some(s) = stop { r.insert("stop".into(), json!(s)); }
        if let Some(t) = &tools {
            let first = t[0]["function"]["name"].clone();
            r.insert("tools".into(), json!(t));
            let c = [json!("auto"), json!("none"), json!("required"), json!({"type": "function", "function": {"name": first}})];
            if let Some(c) = c.get(choice) {
                r.insert("tool_choice".into(), c.clone());
                if serial { r.insert("parallel_tool_calls".into(), false.into()); }
            }
        }
        if let Some(u) = user { r.insert("user".into(), u.into()); }
        if stream {
            r.insert("stream".into(), true.into());
            r.insert("stream_options".into(), json!({"include_usage": true}));
        }
        r
    }
}

prop_compose! {
    /// An Anthropic message: optional text, then tool calls.
    fn anthropic_message()(
        t in proptest::option::of(text()),
        calls in proptest::collection::vec(("[a-z_]{1,8}", args()), 0..3),
        stop in prop_oneof![Just("end_turn"), Just("max_tokens"), Just("refusal")],
        input in 0u64..100_000,
        output in 0u64..10_000,
    ) -> Value {
        let mut content = Vec::new();
        if let Some(t) = t { content.push(json!({"type": "text", "text": t})); }
        for (i, (name, a)) in calls.iter().enumerate() {
            content.push(json!({"type": "tool_use", "id": format!("toolu_{i}"), "name": name, "input": a}));
        }
        let stop = if calls.is_empty() { stop } else { "tool_use" };
        json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": content,
               "stop_reason": stop, "stop_sequence": null, "usage": {"input_tokens": input, "output_tokens": output}})
    }
}

/// A message as Anthropic would stream it, text and JSON cut at `cuts`.
fn anthropic_events(m: &Value, cuts: &[usize]) -> Vec<(String, Value)> {
    let split = |s: &str| -> Vec<String> {
        let chars: Vec<char> = s.chars().collect();
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (chars.len() + 1)).collect();
        points.push(chars.len());
        points.sort_unstable();
        let mut last = 0;
        let mut out = Vec::new();
        for p in points {
            if p > last {
                out.push(chars[last..p].iter().collect());
                last = p;
            }
        }
        out
    };
    let mut ev = vec![(
        "message_start".to_string(),
        json!({"type": "message_start", "message": {
        "id": m["id"], "type": "message", "role": "assistant", "model": m["model"], "content": [],
        "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": m["usage"]["input_tokens"], "output_tokens": 1}}}),
    )];
    ev.push(("ping".into(), json!({"type": "ping"})));
    for (i, b) in m["content"].as_array().into_iter().flatten().enumerate() {
        if b["type"] == "text" {
            ev.push(("content_block_start".into(), json!({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}})));
            for piece in split(b["text"].as_str().unwrap_or("")) {
                ev.push(("content_block_delta".into(), json!({"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": piece}})));
            }
        } else {
            ev.push(("content_block_start".into(), json!({"type": "content_block_start", "index": i, "content_block": {"type": "tool_use", "id": b["id"], "name": b["name"], "input": {}}})));
            for piece in split(&b["input"].to_string()) {
                ev.push(("content_block_delta".into(), json!({"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": piece}})));
            }
        }
        ev.push((
            "content_block_stop".into(),
            json!({"type": "content_block_stop", "index": i}),
        ));
    }
    ev.push(("message_delta".into(), json!({"type": "message_delta", "delta": {"stop_reason": m["stop_reason"], "stop_sequence": null}, "usage": {"output_tokens": m["usage"]["output_tokens"]}})));
    ev.push(("message_stop".into(), json!({"type": "message_stop"})));
    ev
}

/// Fold an Anthropic event stream into the message, as the SDK does.
fn accumulate(events: &[bytes::Bytes]) -> Value {
    let mut msg = Value::Null;
    let mut json_buf: Vec<String> = Vec::new();
    for e in events {
        let text = std::str::from_utf8(e).unwrap_or("");
        let name = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("event: "))
            .unwrap_or("");
        let d: Value = serde_json::from_str(&event_data(e).unwrap_or_default()).unwrap_or_default();
        assert_eq!(d["type"], name, "event name matches the data's type");
        let idx = d["index"].as_u64().unwrap_or(0) as usize;
        match name {
            "message_start" => msg = d["message"].clone(),
            "content_block_start" => {
                assert_eq!(
                    msg["content"].as_array().map(Vec::len),
                    Some(idx),
                    "indices count up"
                );
                msg["content"]
                    .as_array_mut()
                    .unwrap()
                    .push(d["content_block"].clone());
                json_buf.push(String::new());
            }
            "content_block_delta" => match d["delta"]["type"].as_str() {
                Some("text_delta") => {
                    let t = format!(
                        "{}{}",
                        msg["content"][idx]["text"].as_str().unwrap_or(""),
                        d["delta"]["text"].as_str().unwrap_or("")
                    );
                    msg["content"][idx]["text"] = t.into();
                }
                _ => json_buf[idx].push_str(d["delta"]["partial_json"].as_str().unwrap_or("")),
            },
            "content_block_stop" => {
                if msg["content"][idx]["type"] == "tool_use" && !json_buf[idx].is_empty() {
                    msg["content"][idx]["input"] =
                        serde_json::from_str(&json_buf[idx]).unwrap_or(Value::Null);
                }
            }
            "message_delta" => {
                msg["stop_reason"] = d["delta"]["stop_reason"].clone();
                msg["usage"]["output_tokens"] = d["usage"]["output_tokens"].clone();
                if d["usage"]["input_tokens"].is_u64() {
                    msg["usage"]["input_tokens"] = d["usage"]["input_tokens"].clone();
                }
            }
            "message_stop" => {}
            other => panic!("unexpected event {other}"),
        }
    }
    msg
}

proptest! {
    /// OpenAI -> Anthropic -> OpenAI keeps everything both formats express.
    #[test]
    fn openai_request_round_trip(req in openai_request()) {
        let a = to_anthropic::request(&req, "m", 4096).expect("translatable");
        let (back, lost) = to_openai::request(&a).expect("valid Anthropic request");
        prop_assert_eq!(lost, None);
        prop_assert_eq!(Value::Object(back), Value::Object(req));
    }

    /// Anthropic -> OpenAI -> Anthropic keeps a whole message.
    #[test]
    fn anthropic_response_round_trip(m in anthropic_message()) {
        let (o, usage) = to_openai::response(&m);
        prop_assert_eq!(usage.completion_tokens, m["usage"]["output_tokens"].as_u64().unwrap_or(0));
        prop_assert_eq!(to_anthropic::response(&o), m);
    }

    /// Anthropic events -> OpenAI chunks -> Anthropic events rebuild the same
    /// message however the text and tool JSON were cut.
    #[test]
    fn stream_round_trip(m in anthropic_message(), cuts in proptest::collection::vec(0usize..64, 0..6)) {
        let mut up = to_openai::StreamTranslator::new(true);
        let mut down = to_anthropic::StreamTranslator::default();
        let mut out = Vec::new();
        for (name, data) in anthropic_events(&m, &cuts) {
            let wire = format!("event: {name}\ndata: {data}\n\n");
            for chunk in up.push(&event_data(wire.as_bytes()).unwrap_or_default()).unwrap() {
                let mut s = EventSplitter::default();
                for ev in s.push(&chunk) {
                    out.extend(down.push(&event_data(&ev).unwrap_or_default()).unwrap());
                }
            }
        }
        prop_assert!(up.finished);
        out.extend(down.finish().unwrap());
        prop_assert_eq!(accumulate(&out), m);
    }
}
