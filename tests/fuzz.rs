//! Bounded-time fuzzing (property-based, proptest) of what parses untrusted
//! bytes: request parsing for both APIs, the OpenAI <-> Anthropic translators
//! (requests, responses, error bodies, stream events) and the SSE splitter.
//!
//! Each target first replays its corpus, `tests/data/fuzz/<target>.txt` (the
//! regressions: every input that ever failed, plus seeded nasty ones), then
//! generates cases — arbitrary bytes and structure-aware JSON biased to the
//! real field names — until `SLMGATE_FUZZ_SECS` (default 3; CI sets 60) have
//! passed, and prints how many it ran. A failing case is shrunk, written to
//! `<target dir>/fuzz-found/<target>.txt`, and the test fails asking for it to
//! be added to the corpus. `PROPTEST_RNG_SEED` makes a run reproducible.
//!
//! Corpus lines (`#` starts a comment): byte targets take `raw:<text>`,
//! `hex:<hex>` or `cat:<JSON array of parts>` (a part is `"text"`,
//! `[count, "text"]` repeated, or `{"hex": "..."}`); the response target takes
//! one JSON value per line, the stream target a JSON array of `data:` payloads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::HeaderMap;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::{Config, TestCaseError, TestCaseResult, TestError, TestRunner};
use serde_json::{json, Map, Value};
use slmgate::api::request::{chat_request, json_object};
use slmgate::api::sse::{self, event_data, EventSplitter};
use slmgate::api::ApiFormat;
use slmgate::error::{anthropic_from_openai_error, openai_from_anthropic_error, GatewayError};
use slmgate::middleware::parse::parse_for;
use slmgate::translate::{to_anthropic, to_openai, StreamTranslate};
use std::fmt::Debug;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- targets

/// OpenAI chat-completions bodies: `chat_request` (and the parse stage's
/// `parse_for`) never panic, refuse with a 4xx, and what they accept holds
/// the invariants routing relies on; the OpenAI -> Anthropic request
/// translation of any JSON object never panics and refuses with a 4xx.
#[test]
fn fuzz_openai_request() {
    let s = request_bytes(both(G::openai_request));
    run("openai_request", s, |b| check_openai_request(b));
}

/// Anthropic `/v1/messages` bodies: the same, through `to_openai::request`
/// and `parse_for(Anthropic)`, and back to Anthropic from the OpenAI view.
#[test]
fn fuzz_anthropic_request() {
    let s = request_bytes(both(G::anthropic_request));
    run("anthropic_request", s, |b| check_anthropic_request(b));
}

/// Whole responses and error bodies, both directions.
#[test]
fn fuzz_responses() {
    let s = prop_oneof![
        3 => both(G::openai_response),
        3 => both(G::anthropic_response),
        1 => both(G::error_body),
        1 => any_json(),
    ];
    run("responses", s, check_responses);
}

/// Stream translators, both directions, over sequences of `data:` payloads.
#[test]
fn fuzz_streams() {
    let (openai, anthropic) = (both(G::openai_chunk), both(G::anthropic_event));
    let s = prop_oneof![
        2 => vec(openai.clone(), 0..12),
        2 => vec(anthropic.clone(), 0..12),
        1 => vec(prop_oneof![openai, anthropic], 0..12),
    ];
    run("streams", s, |events| check_streams(events));
}

/// The SSE splitter: the same events whatever the chunking, nothing lost.
#[test]
fn fuzz_sse() {
    let s =
        (sse_bytes(), vec(any::<Index>(), 0..8)).prop_map(|(bytes, cuts)| SseCase { bytes, cuts });
    run("sse", s, check_sse);
}

/// What `found` writes reads back as the same case.
#[test]
fn corpus_lines_round_trip() {
    let mut runner = TestRunner::default();
    let bytes = prop_oneof![
        vec(any::<u8>(), 0..64),
        sse_bytes(),
        any::<String>().prop_map(String::into_bytes)
    ];
    runner
        .run(&bytes, |b| {
            prop_assert_eq!(Vec::<u8>::decode(&b.encode()), Ok(b));
            Ok(())
        })
        .unwrap();
    runner
        .run(&vec(any::<String>(), 0..4), |s| {
            prop_assert_eq!(Vec::<String>::decode(&s.encode()), Ok(s));
            Ok(())
        })
        .unwrap();
    let cat = r#"cat:["a", [3, "["], {"hex": "ff00"}]"#;
    assert_eq!(Vec::<u8>::decode(cat), Ok(b"a[[[\xff\x00".to_vec()));
}

// ---------------------------------------------------------------- checks

fn is_4xx(e: &GatewayError) -> TestCaseResult {
    prop_assert!(
        e.status().is_client_error(),
        "refused with {} (not a 4xx): {e}",
        e.status()
    );
    Ok(())
}

fn check_openai_request(body: &[u8]) -> TestCaseResult {
    let parsed = chat_request(body);
    let staged = parse_for(ApiFormat::OpenAi, &HeaderMap::new(), body);
    match (&parsed, &staged) {
        (Ok(a), Ok(b)) => prop_assert_eq!(&a.raw, &b.raw),
        (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
        _ => prop_assert!(false, "chat_request and parse_for disagree"),
    }
    match parsed {
        Err(e) => is_4xx(&e)?,
        Ok(p) => {
            prop_assert!(!p.model.is_empty());
            prop_assert_eq!(p.raw.get("model"), Some(&Value::from(p.model.clone())));
            let n = p
                .raw
                .get("messages")
                .and_then(Value::as_array)
                .map(Vec::len);
            prop_assert_eq!(n, Some(p.messages.len()));
            prop_assert!(!p.messages.is_empty());
            prop_assert!(p.n >= 1 && p.max_tokens.is_none_or(|m| m >= 1));
            prop_assert!(p.temperature.is_none_or(|t| (0.0..=2.0).contains(&t)));
            prop_assert!(p.top_p.is_none_or(|t| (0.0..=1.0).contains(&t)));
            prop_assert!(p.native.is_none());
        }
    }
    match json_object(body) {
        Err(e) => is_4xx(&e)?,
        Ok(map) => check_to_anthropic_request(&map)?,
    }
    Ok(())
}

/// Any JSON object -> an Anthropic body (or a 4xx).
fn check_to_anthropic_request(map: &Map<String, Value>) -> TestCaseResult {
    let _ = to_anthropic::split_stops(map);
    match to_anthropic::request(map, "claude-x", 1024) {
        Err(e) => is_4xx(&e)?,
        Ok(out) => {
            prop_assert_eq!(out.get("model"), Some(&json!("claude-x")));
            prop_assert!(out.get("max_tokens").is_some_and(Value::is_u64));
            let msgs = out.get("messages").and_then(Value::as_array);
            prop_assert!(msgs.is_some());
            for m in msgs.into_iter().flatten() {
                let role = m.get("role").and_then(Value::as_str);
                prop_assert!(matches!(role, Some("user" | "assistant")), "role {role:?}");
            }
            if let Some(t) = out.get("temperature") {
                prop_assert!(t.as_f64().is_some_and(|t| t <= 1.0), "temperature {t}");
            }
        }
    }
    Ok(())
}

fn check_anthropic_request(body: &[u8]) -> TestCaseResult {
    let mut headers = HeaderMap::new();
    headers.insert("anthropic-beta", http::HeaderValue::from_static("x"));
    match parse_for(ApiFormat::Anthropic, &headers, body) {
        Err(e) => is_4xx(&e)?,
        Ok(p) => {
            let native = p.native.as_ref();
            prop_assert!(native.is_some_and(|n| n.beta.is_some()));
            let max = native.and_then(|n| n.body.get("max_tokens")?.as_u64());
            prop_assert_eq!(p.max_tokens, max);
            prop_assert!(!p.messages.is_empty() && !p.model.is_empty());
            // The OpenAI view, sent on to an Anthropic backend.
            check_to_anthropic_request(&p.raw)?;
        }
    }
    match json_object(body) {
        Err(e) => is_4xx(&e)?,
        Ok(map) => match to_openai::request(&map) {
            Err(e) => is_4xx(&e)?,
            Ok((raw, lost)) => {
                prop_assert!(raw.get("model").is_some_and(Value::is_string));
                prop_assert!(raw.get("messages").is_some_and(Value::is_array));
                prop_assert!(lost.is_none_or(|l| !l.is_empty()));
            }
        },
    }
    Ok(())
}

fn check_responses(v: &Value) -> TestCaseResult {
    let a = to_anthropic::response(v);
    prop_assert_eq!(&a["type"], "message");
    for b in a["content"].as_array().into_iter().flatten() {
        match b["type"].as_str() {
            Some("text") => prop_assert!(b["text"].as_str().is_some_and(|t| !t.is_empty())),
            Some("tool_use") => prop_assert!(b["input"].is_object()),
            other => prop_assert!(false, "block type {other:?}"),
        }
    }
    prop_assert!(a["usage"]["input_tokens"].is_u64() && a["usage"]["output_tokens"].is_u64());

    let (o, u) = to_openai::response(v);
    prop_assert_eq!(&o["choices"][0]["message"]["role"], "assistant");
    prop_assert_eq!(o["usage"]["prompt_tokens"].as_u64(), Some(u.prompt_tokens));
    prop_assert_eq!(u, to_openai::usage(v.get("usage")));
    let mut tracked = u;
    to_openai::track_usage(&mut tracked, v);

    let bytes = v.to_string();
    for status in [0, 400, 401, 404, 429, 500, 529, 999] {
        let a = anthropic_from_openai_error(status, bytes.as_bytes());
        prop_assert!(a["error"]["message"].is_string());
        let o = openai_from_anthropic_error(status, bytes.as_bytes());
        prop_assert!(o["error"]["message"].is_string() && o["error"]["type"].is_string());
    }
    for format in [ApiFormat::OpenAi, ApiFormat::Anthropic] {
        check_error(&GatewayError::from_stream_error("the upstream", v, format))?;
    }
    Ok(())
}

/// A stream error: a 429 or 5xx, rendered as one well-formed event (and body)
/// for clients of either API.
fn check_error(e: &GatewayError) -> TestCaseResult {
    prop_assert!(
        e.status() == 429 || e.status().is_server_error(),
        "stream error status {}",
        e.status()
    );
    for client in [ApiFormat::OpenAi, ApiFormat::Anthropic] {
        let _ = e.body(client);
        let ev = e.stream_event(client);
        json(&one_event(&ev)?)?;
    }
    Ok(())
}

/// An event's data as JSON; `None` when it nests deeper than serde_json's
/// recursion limit (an upstream value at that limit, wrapped once more).
fn json(data: &str) -> Result<Option<Value>, TestCaseError> {
    match serde_json::from_str(data) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.to_string().contains("recursion limit") => Ok(None),
        Err(e) => Err(TestCaseError::fail(format!("{e}: {data}"))),
    }
}

/// `ev` is exactly one SSE event (the splitter agrees); its data.
fn one_event(ev: &[u8]) -> Result<String, TestCaseError> {
    let mut s = EventSplitter::default();
    let got = s.push(ev);
    prop_assert!(
        got.len() == 1 && got[0] == ev && s.finish().is_none(),
        "not one event: {:?}",
        String::from_utf8_lossy(ev)
    );
    event_data(ev).ok_or_else(|| TestCaseError::fail("an event without data"))
}

/// What a client of `/v1/messages` may see: message_start first, blocks
/// opened in index order, deltas and stops for the open block only,
/// message_delta then message_stop last.
#[derive(Default)]
struct AnthropicProtocol {
    started: bool,
    open: Option<u64>,
    next: u64,
    delta: bool,
    stopped: bool,
}

impl AnthropicProtocol {
    fn event(&mut self, ev: &[u8]) -> TestCaseResult {
        let data = one_event(ev)?;
        let name = std::str::from_utf8(ev)
            .ok()
            .and_then(|e| e.strip_prefix("event: ")?.split_once('\n'));
        let Some((ty, _)) = name else {
            return Err(TestCaseError::fail(format!("no event name: {data}")));
        };
        let v = json(&data)?;
        if let Some(v) = &v {
            prop_assert_eq!(v["type"].as_str(), Some(ty), "event name != data type");
        }
        prop_assert!(!self.stopped, "{ty} after message_stop");
        prop_assert!(
            self.started || ty == "message_start",
            "{ty} before message_start"
        );
        // (Too deep to read back: assume the right index.)
        let idx = v.as_ref().map_or(
            if ty == "content_block_start" {
                Some(self.next)
            } else {
                self.open
            },
            |v| v["index"].as_u64(),
        );
        match ty {
            "message_start" => {
                prop_assert!(!self.started, "second message_start");
                self.started = true;
            }
            "content_block_start" => {
                prop_assert!(self.open.is_none() && !self.delta && idx == Some(self.next));
                self.open = idx;
                self.next += 1;
            }
            "content_block_delta" => prop_assert!(self.open.is_some() && idx == self.open),
            "content_block_stop" => {
                prop_assert!(self.open.is_some() && idx == self.open);
                self.open = None;
            }
            "message_delta" => {
                prop_assert!(self.open.is_none() && !self.delta);
                self.delta = true;
            }
            "message_stop" => {
                prop_assert!(self.delta, "message_stop without message_delta");
                self.stopped = true;
            }
            other => prop_assert!(false, "unexpected event {other}"),
        }
        Ok(())
    }
}

fn check_streams(events: &[String]) -> TestCaseResult {
    // OpenAI chunks -> Anthropic events (clients of /v1/messages).
    let mut t = to_anthropic::StreamTranslator::default();
    let mut proto = AnthropicProtocol::default();
    let mut over = false;
    for d in events {
        match t.push(d) {
            Ok(out) => {
                prop_assert!(!over || out.is_empty(), "events after the end");
                for ev in &out {
                    proto.event(ev)?;
                }
                over |= proto.stopped;
            }
            Err(e) => {
                prop_assert!(!over);
                check_error(&e)?;
                over = true;
            }
        }
    }
    match t.finish() {
        Ok(out) => {
            prop_assert!(!over || out.is_empty());
            for ev in &out {
                proto.event(ev)?;
            }
            prop_assert!(over || proto.stopped, "finish Ok without message_stop");
        }
        Err(e) => {
            prop_assert!(!over);
            prop_assert_eq!(e.status(), 502);
        }
    }
    prop_assert!(matches!(t.finish(), Ok(v) if v.is_empty()));

    // Anthropic events -> OpenAI chunks (the Anthropic backend).
    for include_usage in [false, true] {
        let mut t = to_openai::StreamTranslator::new(include_usage);
        let mut ended = false;
        for d in events {
            match StreamTranslate::push(&mut t, d) {
                Ok(out) => {
                    for ev in &out {
                        let data = one_event(ev)?;
                        ended |= data == "[DONE]";
                        if data != "[DONE]" {
                            if let Some(v) = json(&data)? {
                                prop_assert_eq!(&v["object"], "chat.completion.chunk");
                            }
                        }
                    }
                }
                Err(e) => {
                    check_error(&e)?;
                    ended = true;
                }
            }
        }
        let _ = t.usage();
        one_event(&t.usage_chunk())?;
        match StreamTranslate::finish(&mut t) {
            Ok(out) => prop_assert!(ended && out.is_empty()),
            Err(e) => {
                prop_assert!(!ended);
                prop_assert_eq!(e.status(), 502);
            }
        }
        prop_assert!(matches!(StreamTranslate::finish(&mut t), Ok(v) if v.is_empty()));
    }
    Ok(())
}

#[derive(Clone, Debug)]
struct SseCase {
    bytes: Vec<u8>,
    cuts: Vec<Index>,
}

/// Events and the unterminated rest, feeding `bytes` in the given chunks.
fn split(chunks: impl IntoIterator<Item = impl AsRef<[u8]>>) -> (Vec<Vec<u8>>, Option<Vec<u8>>) {
    let mut s = EventSplitter::default();
    let mut events = Vec::new();
    for c in chunks {
        events.extend(s.push(c.as_ref()).into_iter().map(|b| b.to_vec()));
    }
    (events, s.finish().map(|b| b.to_vec()))
}

/// Index just past the first blank line ("\n\n", or "\n\r\n" as in "\r\n\r\n").
fn terminator_end(b: &[u8]) -> Option<usize> {
    (0..b.len()).find_map(|i| match &b[i..] {
        [b'\n', b'\n', ..] => Some(i + 2),
        [b'\n', b'\r', b'\n', ..] => Some(i + 3),
        _ => None,
    })
}

fn check_sse(c: &SseCase) -> TestCaseResult {
    let b = &c.bytes[..];
    let whole = split([b]);
    let mut points: Vec<usize> = c.cuts.iter().map(|i| i.index(b.len() + 1)).collect();
    points.sort_unstable();
    let bounds: Vec<usize> = [0].into_iter().chain(points).chain([b.len()]).collect();
    let chunked = split(bounds.windows(2).map(|w| &b[w[0]..w[1]]));
    prop_assert_eq!(&whole, &chunked, "chunked at {:?}", bounds);
    // Byte by byte (small bodies; larger ones in 4 KiB chunks).
    let step = if b.len() <= 8192 { 1 } else { 4096 };
    prop_assert_eq!(
        &whole,
        &split(b.chunks(step)),
        "fed in {}-byte chunks",
        step
    );
    // Corpus cases (no cuts of their own): in two at every point.
    if c.cuts.is_empty() && b.len() <= 512 {
        for p in 0..=b.len() {
            prop_assert_eq!(&whole, &split([&b[..p], &b[p..]]), "split at {}", p);
        }
    }

    // Nothing lost or reordered: the events, then the rest, are the input.
    let (events, rest) = whole;
    let mut at = 0;
    for e in &events {
        prop_assert_eq!(terminator_end(e), Some(e.len()), "not one event: {:?}", e);
        prop_assert_eq!(&b[at..at + e.len()], &e[..]);
        at += e.len();
        let _ = event_data(e);
    }
    let tail = &b[at..];
    prop_assert_eq!(terminator_end(tail), None);
    match rest {
        Some(r) => prop_assert_eq!(&r[..], tail),
        None => prop_assert!(tail.iter().all(u8::is_ascii_whitespace)),
    }
    let _ = event_data(tail);

    // What the gateway writes reads back as written.
    let text: String = String::from_utf8_lossy(b)
        .chars()
        .filter(|c| *c != '\n' && *c != '\r')
        .collect();
    prop_assert_eq!(event_data(&sse::data_event(&text)), Some(text.clone()));
    let named = sse::named_event("message_delta", &text);
    prop_assert_eq!(one_event(&named)?, text);
    Ok(())
}

// ---------------------------------------------------------------- harness

/// How a target's inputs are written in its corpus (one per line).
trait Case: Clone + Debug {
    fn decode(line: &str) -> Result<Self, String>;
    fn encode(&self) -> String;
}

impl Case for Vec<u8> {
    fn decode(line: &str) -> Result<Self, String> {
        if let Some(t) = line.strip_prefix("raw:") {
            Ok(t.as_bytes().to_vec())
        } else if let Some(h) = line.strip_prefix("hex:") {
            unhex(h)
        } else if let Some(parts) = line.strip_prefix("cat:") {
            let parts: Vec<Value> = serde_json::from_str(parts).map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            for p in parts {
                match &p {
                    Value::String(s) => out.extend_from_slice(s.as_bytes()),
                    Value::Array(a) => match (a.first().and_then(Value::as_u64), a.get(1)) {
                        (Some(n), Some(Value::String(s))) => {
                            out.extend(s.as_bytes().repeat(n as usize))
                        }
                        _ => return Err(format!("bad repeat {p}")),
                    },
                    Value::Object(o) => match o.get("hex").and_then(Value::as_str) {
                        Some(h) => out.extend(unhex(h)?),
                        None => return Err(format!("bad part {p}")),
                    },
                    _ => return Err(format!("bad part {p}")),
                }
            }
            Ok(out)
        } else {
            Err("expected raw:, hex: or cat:".into())
        }
    }

    fn encode(&self) -> String {
        match std::str::from_utf8(self) {
            Ok(s) if !s.contains(['\n', '\r']) => format!("raw:{s}"),
            _ => format!("hex:{}", hex(self)),
        }
    }
}

impl Case for SseCase {
    /// Only the bytes: replays check every chunking of short inputs anyway.
    fn decode(line: &str) -> Result<Self, String> {
        Ok(SseCase {
            bytes: Vec::<u8>::decode(line)?,
            cuts: vec![],
        })
    }
    fn encode(&self) -> String {
        self.bytes.encode()
    }
}

impl Case for Value {
    fn decode(line: &str) -> Result<Self, String> {
        serde_json::from_str(line).map_err(|e| e.to_string())
    }
    fn encode(&self) -> String {
        self.to_string()
    }
}

impl Case for Vec<String> {
    fn decode(line: &str) -> Result<Self, String> {
        serde_json::from_str(line).map_err(|e| e.to_string())
    }
    fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(h: &str) -> Result<Vec<u8>, String> {
    let h: Vec<u8> = h.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    h.chunks(2)
        .map(|p| {
            std::str::from_utf8(p)
                .ok()
                .filter(|p| p.len() == 2)
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(|| format!("bad hex {:?}", String::from_utf8_lossy(p)))
        })
        .collect()
}

fn fuzz_secs() -> f64 {
    std::env::var("SLMGATE_FUZZ_SECS")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(3.0)
}

fn corpus_path(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/fuzz/{target}.txt"))
}

fn found_path(target: &str) -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| {
            if d.is_absolute() {
                d
            } else {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(d)
            }
        })
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    dir.join("fuzz-found").join(format!("{target}.txt"))
}

/// Written outside the test harness's capture, so CI logs show it.
fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Replay the corpus, then generate cases until the deadline.
fn run<T: Case, S: Strategy<Value = T>>(
    target: &str,
    strategy: S,
    check: impl Fn(&T) -> TestCaseResult,
) {
    let path = corpus_path(target);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let replay = Instant::now();
    let mut replayed = 0;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let case = T::decode(line).unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), i + 1));
        match catch_unwind(AssertUnwindSafe(|| check(&case))) {
            Ok(Ok(())) => replayed += 1,
            Ok(Err(e)) => panic!("{}:{}: regression: {e}", path.display(), i + 1),
            Err(_) => panic!(
                "{}:{}: regression: panicked (message above)",
                path.display(),
                i + 1
            ),
        }
    }

    let replay_took = replay.elapsed();
    let secs = fuzz_secs();
    let config = Config {
        failure_persistence: None,
        max_shrink_time: 60_000,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut cases: u64 = 0;
    while Instant::now() < deadline {
        let tree = strategy
            .new_tree(&mut runner)
            .unwrap_or_else(|e| panic!("{target}: generating a case: {e}"));
        match runner.run_one(tree, |v| check(&v)) {
            Ok(_) => cases += 1,
            Err(TestError::Fail(why, min)) => found(target, &why.to_string(), &min),
            Err(TestError::Abort(why)) => panic!("{target}: aborted: {why}"),
        }
    }
    let took = start.elapsed().as_secs_f64();
    report(&format!(
        "fuzz {target}: {replayed} corpus cases in {:.1}s, then {cases} generated cases in {took:.1}s ({:.0}/s)",
        replay_took.as_secs_f64(),
        cases as f64 / took.max(1e-9)
    ));
}

/// Keep the shrunk failing input for the corpus, and fail.
fn found<T: Case>(target: &str, why: &str, min: &T) -> ! {
    let path = found_path(target);
    let comment: String = why.lines().map(|l| format!("# {l}\n")).collect();
    let written = path
        .parent()
        .map(std::fs::create_dir_all)
        .unwrap_or(Ok(()))
        .and_then(|()| std::fs::write(&path, format!("{comment}{}\n", min.encode())));
    panic!(
        "fuzz target `{target}` failed: {why}\nminimal input: {min:?}\n{}\n\
         Add that line to {} so it is replayed as a regression test from now on, then fix the bug.",
        match written {
            Ok(()) => format!("written to {}", path.display()),
            Err(e) => format!(
                "(could not write {}: {e}); its corpus line: {}",
                path.display(),
                min.encode()
            ),
        },
        corpus_path(target).display()
    )
}

// ---------------------------------------------------------------- strategies

/// Field names of both APIs' requests, responses and stream events.
#[rustfmt::skip]
const KEYS: &[&str] = &[
    "model", "messages", "role", "content", "max_tokens", "max_completion_tokens", "stream",
    "stream_options", "include_usage", "tools", "tool_choice", "temperature", "top_p", "n",
    "stop", "stop_sequences", "system", "type", "text", "image_url", "url", "source",
    "media_type", "data", "tool_use_id", "tool_calls", "tool_call_id", "id", "name", "input",
    "function", "arguments", "parameters", "input_schema", "description", "seed", "logprobs",
    "top_logprobs", "response_format", "modalities", "user", "metadata", "user_id",
    "parallel_tool_calls", "disable_parallel_tool_use", "functions", "choices", "message",
    "delta", "index", "finish_reason", "stop_reason", "usage", "prompt_tokens",
    "completion_tokens", "input_tokens", "output_tokens", "cache_creation_input_tokens",
    "cache_read_input_tokens", "content_block", "partial_json", "error", "code", "object",
];

/// Values those fields take, and some awkward strings.
#[rustfmt::skip]
const WORDS: &[&str] = &[
    "user", "assistant", "system", "developer", "tool", "function", "text", "image",
    "image_url", "tool_use", "tool_result", "thinking", "redacted_thinking", "document", "base64",
    "url", "file", "auto", "any", "none", "required", "custom", "message_start",
    "content_block_start", "content_block_delta", "content_block_stop", "message_delta",
    "message_stop", "ping", "error", "text_delta", "input_json_delta", "stop", "length",
    "tool_calls", "content_filter", "end_turn", "max_tokens", "refusal", "overloaded_error",
    "rate_limit_error", "timeout_error", "json_object", "audio", "[DONE]", "", " ", "\n", "{}",
    "{\"a\":1}", "[1]", "{\"a\":", "data:image/png;base64,iVBOR", "data:;base64,", "data:x",
    "https://example.com/a.png", "é", "\u{0}", "\u{10FFFF}", "\u{FEFF}", "\u{202E}", "\r\n\r\n",
    "data: x\n\n",
];

fn word() -> BoxedStrategy<String> {
    prop_oneof![
        4 => select(WORDS).prop_map(String::from),
        1 => "[ -~]{0,12}",
        1 => any::<String>(),
    ]
    .boxed()
}

fn key() -> BoxedStrategy<String> {
    prop_oneof![4 => select(KEYS).prop_map(String::from), 1 => word()].boxed()
}

/// Any JSON number, the edges favoured.
fn number() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => (0i64..4).prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(Value::from),
        1 => select(&[u64::MAX, u64::MAX - 1, 1 << 53, u32::MAX as u64][..]).prop_map(Value::from),
        1 => select(&[-0.0, 0.5, 1.0, 1.5, 2.0, 2.5, -1.0, 1e300, 5e-324][..]).prop_map(Value::from),
        1 => Just(Value::from(i64::MIN)),
    ]
    .boxed()
}

fn any_json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        number(),
        word().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec((key(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Structure-aware generation: the shapes of the APIs, where each node is
/// replaced by anything at all once in `1 + 100 / noise` draws. Noise 0 keeps
/// to the shapes (and plausible numbers), so that the paths past validation
/// are reached too; noise keeps every validation path busy.
#[derive(Clone, Copy)]
struct G {
    noise: u32,
}

const CLEAN: G = G { noise: 0 };
const NOISY: G = G { noise: 12 };

impl G {
    fn mix(self, s: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Value> {
        if self.noise == 0 {
            s.boxed()
        } else {
            prop_oneof![100 => s, self.noise => any_json()].boxed()
        }
    }

    /// One of `xs` (or, with noise, now and then another string).
    fn pick(self, xs: &'static [&'static str]) -> BoxedStrategy<Value> {
        let one = select(xs).prop_map(Value::from);
        if self.noise == 0 {
            one.boxed()
        } else {
            self.mix(prop_oneof![6 => one, 1 => word().prop_map(Value::from)])
        }
    }

    fn text(self) -> BoxedStrategy<Value> {
        self.mix(word().prop_map(Value::from))
    }

    fn boolean(self) -> BoxedStrategy<Value> {
        self.mix(any::<bool>().prop_map(Value::from))
    }

    fn num(self) -> BoxedStrategy<Value> {
        if self.noise == 0 {
            prop_oneof![
                (0u64..5).prop_map(Value::from),
                (0.0..1.0f64).prop_map(Value::from),
                (1u64..100_000).prop_map(Value::from),
            ]
            .boxed()
        } else {
            self.mix(number())
        }
    }

    fn list(self, s: BoxedStrategy<Value>, max: usize) -> BoxedStrategy<Value> {
        self.mix(vec(s, 0..max).prop_map(Value::Array))
    }

    /// A list of at least one.
    fn list1(self, s: BoxedStrategy<Value>, max: usize) -> BoxedStrategy<Value> {
        self.mix(vec(s, 1..max).prop_map(Value::Array))
    }

    /// An object: each field present with its probability; with noise, now
    /// and then an extra one.
    fn obj(self, fields: Vec<(&'static str, f64, BoxedStrategy<Value>)>) -> BoxedStrategy<Value> {
        let fields: Vec<BoxedStrategy<Option<(String, Value)>>> = fields
            .into_iter()
            .map(|(k, p, s)| {
                proptest::option::weighted(p, s.prop_map(move |v| (k.to_string(), v))).boxed()
            })
            .collect();
        let extra = vec((key(), any_json()), 0..if self.noise == 0 { 1 } else { 2 });
        self.mix((fields, extra).prop_map(|(fields, extra)| {
            let mut m: Map<String, Value> = extra.into_iter().collect();
            m.extend(fields.into_iter().flatten());
            Value::Object(m)
        }))
    }

    /// A JSON text in a string (tool arguments): an encoded object, or not quite.
    fn json_text(self) -> BoxedStrategy<Value> {
        let object = self.obj(vec![("a", 0.5, self.num()), ("b", 0.5, self.text())]);
        self.mix(prop_oneof![
            3 => object.prop_map(|v| Value::from(v.to_string())),
            1 => any_json().prop_map(|v| Value::from(v.to_string())),
            1 => word().prop_map(Value::from),
        ])
    }

    fn openai_request(self) -> BoxedStrategy<Value> {
        let url = || {
            self.pick(&[
                "data:image/png;base64,AAAA",
                "https://x/a.png",
                "data:;base64,",
            ])
        };
        let part = self.obj(vec![
            (
                "type",
                0.95,
                self.pick(&["text", "text", "image_url", "input_audio", "refusal"]),
            ),
            ("text", 0.8, self.text()),
            (
                "image_url",
                0.5,
                self.mix(prop_oneof![url(), self.obj(vec![("url", 0.9, url())])]),
            ),
        ]);
        let call = self.obj(vec![
            ("id", 0.9, self.text()),
            ("type", 0.8, self.pick(&["function"])),
            (
                "function",
                0.9,
                self.obj(vec![
                    ("name", 0.9, self.text()),
                    ("arguments", 0.9, self.json_text()),
                ]),
            ),
        ]);
        let roles = &[
            "system",
            "developer",
            "user",
            "user",
            "assistant",
            "tool",
            "function",
        ];
        let message = self.obj(vec![
            ("role", 0.95, self.pick(roles)),
            (
                "content",
                0.85,
                self.mix(prop_oneof![
                    3 => self.text(),
                    1 => Just(Value::Null),
                    2 => self.list(part, 4),
                ]),
            ),
            ("tool_calls", 0.2, self.list(call, 3)),
            ("tool_call_id", 0.4, self.text()),
            ("name", 0.1, self.text()),
        ]);
        let tool = self.obj(vec![
            ("type", 0.8, self.pick(&["function", "custom"])),
            (
                "function",
                0.9,
                self.obj(vec![
                    ("name", 0.9, self.text()),
                    ("description", 0.5, self.text()),
                    ("parameters", 0.5, any_json()),
                ]),
            ),
        ]);
        let tool_choice = self.mix(prop_oneof![
            self.pick(&["auto", "required", "none"]),
            self.obj(vec![
                ("type", 0.5, self.pick(&["function"])),
                ("function", 0.9, self.obj(vec![("name", 0.9, self.text())])),
            ]),
        ]);
        self.obj(vec![
            (
                "model",
                0.95,
                self.pick(&["auto", "local", "gpt-4o-mini", "claude-x"]),
            ),
            ("messages", 0.95, self.list1(message, 5)),
            ("stream", 0.3, self.boolean()),
            (
                "stream_options",
                0.15,
                self.obj(vec![("include_usage", 0.8, self.boolean())]),
            ),
            (
                "stop",
                0.2,
                self.mix(prop_oneof![self.text(), self.list(self.text(), 4)]),
            ),
            ("max_tokens", 0.3, self.num()),
            ("max_completion_tokens", 0.15, self.num()),
            ("seed", 0.1, self.num()),
            ("temperature", 0.3, self.num()),
            ("top_p", 0.2, self.num()),
            ("n", 0.15, self.num()),
            ("tools", 0.2, self.list(tool, 3)),
            ("tool_choice", 0.15, tool_choice),
            ("parallel_tool_calls", 0.1, self.boolean()),
            ("logprobs", 0.1, self.boolean()),
            ("top_logprobs", 0.05, self.num()),
            (
                "response_format",
                0.1,
                self.obj(vec![(
                    "type",
                    0.9,
                    self.pick(&["text", "json_object", "json_schema"]),
                )]),
            ),
            (
                "modalities",
                0.05,
                self.list(self.pick(&["text", "audio"]), 3),
            ),
            ("user", 0.1, self.text()),
            ("functions", 0.05, any_json()),
        ])
    }

    fn anthropic_block(self) -> BoxedStrategy<Value> {
        let source = self.obj(vec![
            ("type", 0.95, self.pick(&["base64", "url", "file", "text"])),
            ("media_type", 0.7, self.pick(&["image/png", "image/jpeg"])),
            ("data", 0.7, self.text()),
            ("url", 0.6, self.text()),
            ("file_id", 0.2, self.text()),
        ]);
        let inner = self.obj(vec![
            (
                "type",
                0.95,
                self.pick(&["text", "text", "image", "document"]),
            ),
            ("text", 0.8, self.text()),
            ("source", 0.3, source.clone()),
        ]);
        #[rustfmt::skip]
        let types = &[
            "text", "text", "image", "tool_use", "tool_result", "thinking", "redacted_thinking",
            "document", "search_result", "server_tool_use",
        ];
        self.obj(vec![
            ("type", 0.95, self.pick(types)),
            ("text", 0.6, self.text()),
            ("source", 0.4, source),
            ("id", 0.6, self.text()),
            ("name", 0.6, self.text()),
            (
                "input",
                0.6,
                self.mix(prop_oneof![
                    self.obj(vec![("a", 0.5, self.text())]),
                    any_json()
                ]),
            ),
            ("tool_use_id", 0.6, self.text()),
            (
                "content",
                0.4,
                self.mix(prop_oneof![self.text(), self.list(inner, 3)]),
            ),
            ("is_error", 0.1, self.boolean()),
            ("thinking", 0.1, self.text()),
            ("signature", 0.1, self.text()),
            (
                "cache_control",
                0.1,
                self.obj(vec![("type", 0.9, self.pick(&["ephemeral"]))]),
            ),
        ])
    }

    fn anthropic_request(self) -> BoxedStrategy<Value> {
        let message = self.obj(vec![
            (
                "role",
                0.95,
                self.pick(&["user", "user", "user", "assistant", "assistant", "tool"]),
            ),
            (
                "content",
                0.9,
                self.mix(prop_oneof![
                    self.text(),
                    self.list(self.anthropic_block(), 4)
                ]),
            ),
        ]);
        let tool = self.obj(vec![
            ("name", 0.9, self.text()),
            ("description", 0.5, self.text()),
            ("input_schema", 0.6, any_json()),
            (
                "type",
                0.3,
                self.pick(&["custom", "web_search_20250305", "bash_20250124"]),
            ),
        ]);
        let system_block = self.obj(vec![
            ("type", 0.9, self.pick(&["text", "text", "image"])),
            ("text", 0.8, self.text()),
        ]);
        let tool_choice = self.obj(vec![
            ("type", 0.9, self.pick(&["auto", "any", "tool", "none"])),
            ("name", 0.5, self.text()),
            ("disable_parallel_tool_use", 0.3, self.boolean()),
        ]);
        let thinking = self.obj(vec![
            ("type", 0.9, self.pick(&["enabled"])),
            ("budget_tokens", 0.9, self.num()),
        ]);
        self.obj(vec![
            (
                "model",
                0.95,
                self.pick(&["auto", "local", "claude-haiku-4-5"]),
            ),
            ("max_tokens", 0.9, self.num()),
            ("messages", 0.95, self.list1(message, 5)),
            (
                "system",
                0.3,
                self.mix(prop_oneof![self.text(), self.list(system_block, 3)]),
            ),
            ("tools", 0.2, self.list(tool, 3)),
            ("tool_choice", 0.15, tool_choice),
            ("stop_sequences", 0.2, self.list(self.text(), 3)),
            ("stream", 0.3, self.boolean()),
            (
                "metadata",
                0.1,
                self.obj(vec![("user_id", 0.8, self.text())]),
            ),
            ("temperature", 0.3, self.num()),
            ("top_p", 0.2, self.num()),
            ("top_k", 0.1, self.num()),
            ("thinking", 0.1, thinking),
        ])
    }

    fn usage(self) -> BoxedStrategy<Value> {
        self.obj(vec![
            ("prompt_tokens", 0.6, self.num()),
            ("completion_tokens", 0.6, self.num()),
            ("total_tokens", 0.3, self.num()),
            ("input_tokens", 0.6, self.num()),
            ("output_tokens", 0.6, self.num()),
            ("cache_creation_input_tokens", 0.4, self.num()),
            ("cache_read_input_tokens", 0.4, self.num()),
        ])
    }

    fn openai_response(self) -> BoxedStrategy<Value> {
        let call = self.obj(vec![
            ("id", 0.9, self.text()),
            ("type", 0.8, self.pick(&["function"])),
            (
                "function",
                0.9,
                self.obj(vec![
                    ("name", 0.9, self.text()),
                    ("arguments", 0.9, self.json_text()),
                ]),
            ),
        ]);
        let message = self.obj(vec![
            ("role", 0.9, self.pick(&["assistant"])),
            (
                "content",
                0.8,
                self.mix(prop_oneof![self.text(), Just(Value::Null)]),
            ),
            ("tool_calls", 0.3, self.list(call, 3)),
        ]);
        #[rustfmt::skip]
        let finish = &["stop", "length", "tool_calls", "content_filter", "function_call"];
        let choice = self.obj(vec![
            ("index", 0.8, self.num()),
            ("message", 0.9, message),
            ("finish_reason", 0.8, self.pick(finish)),
        ]);
        self.obj(vec![
            ("id", 0.8, self.text()),
            ("object", 0.5, self.pick(&["chat.completion"])),
            ("model", 0.8, self.text()),
            ("choices", 0.9, self.list(choice, 3)),
            ("usage", 0.7, self.usage()),
        ])
    }

    fn anthropic_response(self) -> BoxedStrategy<Value> {
        #[rustfmt::skip]
        let stop = &[
            "end_turn", "max_tokens", "tool_use", "refusal", "stop_sequence",
            "model_context_window_exceeded",
        ];
        self.obj(vec![
            ("id", 0.8, self.text()),
            ("type", 0.8, self.pick(&["message"])),
            ("role", 0.8, self.pick(&["assistant"])),
            ("model", 0.8, self.text()),
            ("content", 0.9, self.list(self.anthropic_block(), 4)),
            ("stop_reason", 0.8, self.pick(stop)),
            ("usage", 0.7, self.usage()),
        ])
    }

    /// An `error` object (inside an error body or event).
    fn error(self) -> BoxedStrategy<Value> {
        #[rustfmt::skip]
        let types = &[
            "overloaded_error", "rate_limit_error", "timeout_error", "invalid_request_error",
            "api_error",
        ];
        self.obj(vec![
            ("type", 0.8, self.pick(types)),
            (
                "code",
                0.4,
                self.pick(&["rate_limit_exceeded", "context_length_exceeded"]),
            ),
            ("message", 0.8, self.text()),
        ])
    }

    fn error_body(self) -> BoxedStrategy<Value> {
        self.obj(vec![
            ("type", 0.5, self.pick(&["error"])),
            ("error", 0.95, self.error()),
        ])
    }

    fn openai_chunk(self) -> BoxedStrategy<String> {
        let call = self.obj(vec![
            ("index", 0.8, self.num()),
            ("id", 0.5, self.text()),
            ("type", 0.5, self.pick(&["function"])),
            (
                "function",
                0.9,
                self.obj(vec![
                    ("name", 0.5, self.text()),
                    ("arguments", 0.8, self.text()),
                ]),
            ),
        ]);
        let delta = self.obj(vec![
            ("role", 0.3, self.pick(&["assistant"])),
            (
                "content",
                0.7,
                self.mix(prop_oneof![self.text(), Just(Value::Null)]),
            ),
            ("tool_calls", 0.3, self.list(call, 3)),
        ]);
        let finish = self.mix(prop_oneof![
            self.pick(&["stop", "length", "tool_calls"]),
            Just(Value::Null)
        ]);
        let choice = self.obj(vec![
            ("index", 0.8, self.num()),
            ("delta", 0.9, delta),
            ("finish_reason", 0.3, finish),
        ]);
        let chunk = self.obj(vec![
            ("id", 0.8, self.text()),
            ("model", 0.8, self.text()),
            ("object", 0.5, self.pick(&["chat.completion.chunk"])),
            ("choices", 0.9, self.list(choice, 2)),
            ("usage", 0.2, self.usage()),
            ("error", 0.03, self.error()),
        ]);
        prop_oneof![
            12 => chunk.prop_map(|v| v.to_string()),
            2 => select(&["[DONE]", " [DONE] ", "", "{", "null", "[]"][..]).prop_map(String::from),
            1 => word(),
        ]
        .boxed()
    }

    fn anthropic_event(self) -> BoxedStrategy<String> {
        let block = self.obj(vec![
            (
                "type",
                0.9,
                self.pick(&["text", "tool_use", "thinking", "server_tool_use"]),
            ),
            ("text", 0.5, self.text()),
            ("id", 0.5, self.text()),
            ("name", 0.5, self.text()),
            ("input", 0.5, any_json()),
        ]);
        #[rustfmt::skip]
        let deltas = &["text_delta", "input_json_delta", "thinking_delta", "signature_delta"];
        let delta = self.obj(vec![
            ("type", 0.8, self.pick(deltas)),
            ("text", 0.5, self.text()),
            ("partial_json", 0.5, self.text()),
            (
                "stop_reason",
                0.3,
                self.pick(&["end_turn", "max_tokens", "tool_use", "refusal"]),
            ),
        ]);
        #[rustfmt::skip]
        let types = &[
            "message_start", "content_block_start", "content_block_delta", "content_block_delta",
            "content_block_stop", "message_delta", "message_stop", "ping", "error",
        ];
        let message = self.obj(vec![
            ("id", 0.8, self.text()),
            ("model", 0.8, self.text()),
            ("usage", 0.8, self.usage()),
        ]);
        let event = self.obj(vec![
            ("type", 0.95, self.pick(types)),
            ("message", 0.3, message),
            ("index", 0.5, self.num()),
            ("content_block", 0.3, block),
            ("delta", 0.4, delta),
            ("usage", 0.3, self.usage()),
            ("error", 0.1, self.error()),
        ]);
        prop_oneof![
            12 => event.prop_map(|v| v.to_string()),
            1 => select(&["", "{", "null", "[DONE]"][..]).prop_map(String::from),
            1 => word(),
        ]
        .boxed()
    }
}

/// Clean and noisy shapes, half and half.
fn both<T: Debug + 'static>(f: impl Fn(G) -> BoxedStrategy<T>) -> BoxedStrategy<T> {
    prop_oneof![f(CLEAN), f(NOISY)].boxed()
}

/// Request bodies as bytes: serialized structure-aware JSON, the same with a
/// few bytes mutated, JSON token soup, or arbitrary bytes.
fn request_bytes(structured: BoxedStrategy<Value>) -> BoxedStrategy<Vec<u8>> {
    #[rustfmt::skip]
    const TOKENS: &[&str] = &[
        "{", "}", "[", "]", ":", ",", "\"model\"", "\"messages\"", "\"role\"", "\"content\"",
        "\"user\"", "\"m\"", "\"\\ud800\"", "\"\\udfff\\ud800\"", "\"\\u0000\"", "1e999999",
        "-0", "18446744073709551616", "-9223372036854775809", "1.5", "null", "true", "\"",
        "\\", " ", "\u{FEFF}", "\u{e9}",
    ];
    let mutation = prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| (i, 0u8, vec![b])),
        any::<Index>().prop_map(|i| (i, 1u8, vec![])),
        (any::<Index>(), select(TOKENS)).prop_map(|(i, t)| (i, 2u8, t.as_bytes().to_vec())),
    ];
    prop_oneof![
        6 => structured.clone().prop_map(|v| v.to_string().into_bytes()),
        2 => (structured, vec(mutation, 1..4)).prop_map(|(v, muts)| {
            let mut b = v.to_string().into_bytes();
            for (i, op, bytes) in muts {
                let at = i.index(b.len() + 1);
                match op {
                    0 if at < b.len() => b[at] = bytes[0],
                    1 if at < b.len() => {
                        b.remove(at);
                    }
                    _ => {
                        b.splice(at..at, bytes);
                    }
                }
            }
            b
        }),
        1 => vec(select(TOKENS), 0..40).prop_map(|t| t.concat().into_bytes()),
        1 => vec(any::<u8>(), 0..64),
    ]
    .boxed()
}

fn sse_bytes() -> BoxedStrategy<Vec<u8>> {
    #[rustfmt::skip]
    const PIECES: &[&[u8]] = &[
        b"data:", b"data: ", b"event: ", b"message_start", b"\n", b"\r\n", b"\r", b"\n\n",
        b"\r\n\r\n", b"\n\r\n", b" ", b"[DONE]", b"{\"a\":1}", b":comment", b"id: 1", b"retry: 5",
        "é".as_bytes(), "\u{1F600}".as_bytes(), b"\xff", b"\xe2\x82", b"\xed\xa0\x80", b"\t",
    ];
    vec(
        prop_oneof![
            6 => select(PIECES).prop_map(<[u8]>::to_vec),
            1 => vec(any::<u8>(), 0..4),
            1 => word().prop_map(String::into_bytes),
        ],
        0..40,
    )
    .prop_map(|p| p.concat())
    .boxed()
}
