//! The bad-input battery: malformed requests of every kind against the real
//! request path — in process, and through the `slmgate` binary over HTTP/1.1
//! and HTTP/2 (h2c) — each answered with a 4xx in the client's API format
//! (OpenAI `{"error": {...}}` on `/v1/chat/completions`, Anthropic
//! `{"type": "error", "error": {...}}` on `/v1/messages`), never a 5xx, a
//! panic or a hang. Requests the gateway may legitimately serve (10k
//! messages, a huge but valid `max_tokens`) must be answered or refused,
//! never fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use bytes::Bytes;
use common::*;
use http::{HeaderName, HeaderValue, Request};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The policy's body limit: large enough for 200k-deep nesting and 10k
/// messages to reach the parser, small enough to exceed cheaply.
const LIMIT: usize = 2 * 1024 * 1024;

/// How long any one request may take before it counts as a hang.
const PATIENCE: Duration = Duration::from_secs(10);

fn policy(upstream: &str) -> String {
    format!(
        r#"
version: 1
server: {{ max_body_bytes: {LIMIT} }}
backends:
  openai:
    kind: openai
    api_key_env: TEST_OPENAI_KEY
    base_url: {upstream}/v1
    retries: {{ max_retries: 0 }}
    models:
      gpt-4o-mini: {{ input_per_mtok: 0.15, output_per_mtok: 0.60 }}
      gpt-4o: {{ input_per_mtok: 2.50, output_per_mtok: 10.00 }}
reference_model: openai/gpt-4o
routes:
  auto:
    tiers:
      - {{ name: all, target: openai/gpt-4o-mini }}
cache:
  exact: {{ mode: off }}
"#
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    OpenAi,
    Anthropic,
}

impl Api {
    fn path(self) -> &'static str {
        match self {
            Api::OpenAi => "/v1/chat/completions",
            Api::Anthropic => "/v1/messages",
        }
    }

    /// A valid body, to be spoiled one field at a time.
    fn valid(self) -> Value {
        match self {
            Api::OpenAi => {
                json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
            }
            Api::Anthropic => json!({"model": "gpt-4o-mini", "max_tokens": 16,
                "messages": [{"role": "user", "content": "hi"}]}),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// A 4xx error in the client's format (this very status when given).
    Refused(Option<u16>),
    /// Served (200, in the client's format) or refused with a 4xx; never a 5xx.
    Either,
}

#[derive(Clone)]
struct Case {
    name: String,
    api: Api,
    content_type: Option<&'static str>,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    want: Want,
}

impl Case {
    fn new(api: Api, name: impl Into<String>, body: impl Into<Bytes>, want: Want) -> Case {
        Case {
            name: format!("{api:?}: {}", name.into()),
            api,
            content_type: Some("application/json"),
            headers: vec![],
            body: body.into(),
            want,
        }
    }

    fn json(api: Api, name: impl Into<String>, body: &Value, want: Want) -> Case {
        Case::new(api, name, body.to_string(), want)
    }

    fn content_type(mut self, ct: Option<&'static str>) -> Case {
        self.content_type = ct;
        self
    }

    fn header(mut self, name: &'static str, value: HeaderValue) -> Case {
        self.headers.push((HeaderName::from_static(name), value));
        self
    }

    fn request(&self) -> Request<Body> {
        let mut r = Request::post(self.api.path());
        if let Some(ct) = self.content_type {
            r = r.header("content-type", ct);
        }
        for (k, v) in &self.headers {
            r = r.header(k, v);
        }
        r.body(Body::from(self.body.clone())).unwrap()
    }
}

const BAD: Want = Want::Refused(Some(400));

/// `base` with `key` set to `value` (`None`: removed).
fn with(base: &Value, key: &str, value: Option<Value>) -> Value {
    let mut v = base.clone();
    match value {
        Some(x) => v[key] = x,
        None => {
            v.as_object_mut().unwrap().remove(key);
        }
    }
    v
}

/// `depth` nested arrays, or objects `{"a": ...}`, around `1`.
fn nested(depth: usize, objects: bool) -> String {
    let (open, close) = if objects {
        ("{\"a\":", "}")
    } else {
        ("[", "]")
    };
    let mut s = String::with_capacity(depth * (open.len() + close.len()) + 1);
    for _ in 0..depth {
        s.push_str(open);
    }
    s.push('1');
    for _ in 0..depth {
        s.push_str(close);
    }
    s
}

/// `body` with the bytes of its `hi` replaced by `bytes`.
fn splice(body: &Value, bytes: &[u8]) -> Bytes {
    let s = body.to_string();
    let at = s.find("hi").unwrap();
    Bytes::from([&s.as_bytes()[..at], bytes, &s.as_bytes()[at + 2..]].concat())
}

/// Every case, for both APIs.
fn battery() -> Vec<Case> {
    let mut cases = Vec::new();
    for api in [Api::OpenAi, Api::Anthropic] {
        let ok = api.valid();
        let msg = |content: Value| json!([{"role": "user", "content": content}]);

        // Sizes.
        let big = format!(
            r#"{{"model":"gpt-4o-mini","max_tokens":16,"messages":[{{"role":"user","content":"{}"}}]}}"#,
            "x".repeat(LIMIT)
        );
        cases.push(Case::new(
            api,
            "body over max_body_bytes",
            big,
            Want::Refused(Some(413)),
        ));
        cases.push(
            Case::new(
                api,
                "Content-Length far over the limit",
                "{}",
                Want::Refused(Some(413)),
            )
            .header("content-length", HeaderValue::from_static("1000000000000")),
        );

        // Not JSON, or JSON the parser must refuse.
        for (name, body) in [
            ("empty body", Bytes::new()),
            ("not JSON", Bytes::from_static(b"{not json")),
            ("JSON null", Bytes::from_static(b"null")),
            ("JSON string", Bytes::from_static(b"\"hi\"")),
            ("JSON array", Bytes::from_static(b"[]")),
            ("empty object", Bytes::from_static(b"{}")),
            ("trailing garbage", Bytes::from(format!("{ok} trailing"))),
            (
                "byte-order mark",
                Bytes::from([b"\xef\xbb\xbf".as_slice(), ok.to_string().as_bytes()].concat()),
            ),
            ("NUL bytes", Bytes::from_static(b"\0\0\0\0")),
            ("invalid UTF-8 in a string", splice(&ok, b"\xff\xfe")),
            (
                "invalid UTF-8 sequences in the content",
                splice(&ok, b"\xc3\x28\xa0\xa1\xf0\x28\x8c\xbc"),
            ),
            ("an overlong UTF-8 quote", splice(&ok, b"\xc0\xa2")),
            ("a UTF-8 encoded surrogate", splice(&ok, b"\xed\xa0\x80")),
            (
                "invalid UTF-8 outside strings",
                Bytes::from_static(b"\xff\xfe{}"),
            ),
            (
                "a lone surrogate escape",
                Bytes::from(ok.to_string().replace("\"hi\"", r#""\ud800""#)),
            ),
            (
                "a number out of range",
                Bytes::from(
                    with(&ok, "temperature", Some(json!(1)))
                        .to_string()
                        .replace("\"temperature\":1", "\"temperature\":1e400"),
                ),
            ),
            ("200k-deep arrays", Bytes::from(nested(200_000, false))),
            ("200k-deep objects", Bytes::from(nested(200_000, true))),
            (
                "200k-deep arrays inside a valid request",
                Bytes::from(ok.to_string().replace("\"hi\"", &nested(200_000, false))),
            ),
            (
                "200k-deep objects inside a valid request",
                Bytes::from(
                    with(&ok, "metadata", Some(json!("X")))
                        .to_string()
                        .replace("\"X\"", &nested(200_000, true)),
                ),
            ),
            (
                "unclosed 200k-deep arrays",
                Bytes::from("[".repeat(200_000)),
            ),
        ] {
            cases.push(Case::new(api, name, body, BAD));
        }

        // Wrong types, field by field.
        let mut fields: Vec<(&str, &str, Option<Value>)> = vec![
            ("model", "a number", Some(json!(4))),
            ("model", "empty", Some(json!(""))),
            ("model", "an object", Some(json!({"id": "gpt-4o-mini"}))),
            ("model", "missing", None),
            ("messages", "a string", Some(json!("hi"))),
            (
                "messages",
                "an object",
                Some(json!({"role": "user", "content": "hi"})),
            ),
            ("messages", "null", Some(Value::Null)),
            ("messages", "empty", Some(json!([]))),
            ("messages", "missing", None),
            ("messages", "a list of strings", Some(json!(["hi"]))),
            ("messages", "a list of numbers", Some(json!([1, 2]))),
            ("messages", "with content a number", Some(msg(json!(5)))),
            (
                "messages",
                "with content an object",
                Some(msg(json!({"text": "hi"}))),
            ),
            ("messages", "with content null", Some(msg(Value::Null))),
            (
                "messages",
                "with content parts of numbers",
                Some(msg(json!([1]))),
            ),
            (
                "messages",
                "with a part without type",
                Some(msg(json!([{"text": "hi"}]))),
            ),
            (
                "messages",
                "with a text part whose text is a number",
                Some(msg(json!([{"type": "text", "text": 3}]))),
            ),
            (
                "messages",
                "with an unknown role",
                Some(json!([{"role": "boss", "content": "hi"}])),
            ),
            (
                "messages",
                "with a numeric role",
                Some(json!([{"role": 1, "content": "hi"}])),
            ),
            (
                "messages",
                "without a role",
                Some(json!([{"content": "hi"}])),
            ),
            ("temperature", "a string", Some(json!("hot"))),
            ("temperature", "negative", Some(json!(-1))),
            ("temperature", "huge", Some(json!(1e300))),
            ("top_p", "a string", Some(json!("all"))),
            ("max_tokens", "a string", Some(json!("many"))),
            ("max_tokens", "a float", Some(json!(1.5))),
            ("max_tokens", "1e30", Some(json!(1e30))),
            (
                "max_tokens",
                "u64::MAX + 1",
                Some(json!(18446744073709551616.0)),
            ),
            ("max_tokens", "negative", Some(json!(-1))),
            ("max_tokens", "very negative", Some(json!(i64::MIN))),
            ("max_tokens", "zero", Some(json!(0))),
            ("max_tokens", "an array", Some(json!([16]))),
            ("stream", "\"yes\"", Some(json!("yes"))),
            ("stream", "1", Some(json!(1))),
            ("tools", "a string", Some(json!("nope"))),
            ("tools", "an object", Some(json!({"type": "function"}))),
            ("tools", "a number", Some(json!(1))),
        ];
        match api {
            Api::OpenAi => fields.extend([
                ("stop", "a number", Some(json!(1))),
                ("stop", "a list of numbers", Some(json!([1, 2]))),
                ("stop", "an object", Some(json!({"a": 1}))),
                ("n", "zero", Some(json!(0))),
                ("n", "negative", Some(json!(-2))),
                ("n", "a string", Some(json!("2"))),
                ("max_completion_tokens", "negative", Some(json!(-5))),
                ("stream_options", "a string", Some(json!("usage"))),
                ("seed", "a string", Some(json!("7"))),
                ("seed", "a float", Some(json!(1.5))),
                ("logprobs", "a string", Some(json!("yes"))),
            ]),
            Api::Anthropic => fields.extend([
                ("max_tokens", "missing", None),
                ("stop_sequences", "a number", Some(json!(1))),
                ("stop_sequences", "a list of numbers", Some(json!([1, 2]))),
                ("system", "a number", Some(json!(1))),
                ("system", "a list of numbers", Some(json!([1]))),
                (
                    "messages",
                    "with a system role",
                    Some(json!([{"role": "system", "content": "hi"}])),
                ),
                ("tool_choice", "a number", Some(json!(1))),
            ]),
        }
        for (key, what, value) in fields {
            cases.push(Case::json(
                api,
                format!("{key} {what}"),
                &with(&ok, key, value),
                BAD,
            ));
        }

        // Valid, if extreme: served or refused, never a failure.
        let many: Vec<Value> = (0..10_000)
            .map(|i| json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": format!("message {i}")}))
            .collect();
        let mut either = vec![
            ("10k messages", with(&ok, "messages", Some(json!(many)))),
            (
                "max_tokens u64::MAX",
                with(&ok, "max_tokens", Some(json!(u64::MAX))),
            ),
            (
                "max_tokens 2^53",
                with(&ok, "max_tokens", Some(json!(1u64 << 53))),
            ),
            (
                "control characters in the content",
                with(
                    &ok,
                    "messages",
                    Some(msg(json!("\u{0}\r\n\u{1b}[2J\u{7f}"))),
                ),
            ),
            (
                "a 1 MB content",
                with(&ok, "messages", Some(msg(json!("word ".repeat(200_000))))),
            ),
            (
                "unknown fields",
                with(&ok, "x-evil", Some(json!({"__proto__": {"admin": true}}))),
            ),
        ];
        if api == Api::OpenAi {
            either.push(("n 10000", with(&ok, "n", Some(json!(10_000)))));
        }
        for (name, body) in either {
            cases.push(Case::json(api, name, &body, Want::Either));
        }
        // Models it does not serve, however named.
        for (name, model) in [
            ("unknown model", "gpt-9".to_string()),
            ("a 100 kB model name", "m".repeat(100_000)),
            (
                "a model name with CR/LF",
                "gpt-4o-mini\r\nx-injected: 1".to_string(),
            ),
            ("a model name with NUL", "gpt-4o-mini\u{0}".to_string()),
        ] {
            cases.push(Case::json(
                api,
                name,
                &with(&ok, "model", Some(json!(model))),
                Want::Refused(Some(404)),
            ));
        }

        // Content types.
        for ct in [
            Some("text/plain"),
            Some("multipart/form-data; boundary=x"),
            Some("application/x-www-form-urlencoded"),
            Some("application/jsonx"),
            Some("json"),
            Some(""),
            None,
        ] {
            cases.push(
                Case::json(
                    api,
                    format!("content type {ct:?}"),
                    &ok,
                    Want::Refused(Some(415)),
                )
                .content_type(ct),
            );
        }
        cases.push(
            Case::json(
                api,
                "content type with bytes over 0x7f",
                &ok,
                Want::Refused(Some(415)),
            )
            .content_type(None)
            .header(
                "content-type",
                HeaderValue::from_bytes(b"text/\xff\xfe").unwrap(),
            ),
        );

        // Headers: what the HTTP layer lets through must not hurt.
        for (name, value) in [
            (
                "x-request-id 8 kB",
                HeaderValue::from_str(&"r".repeat(8_000)).unwrap(),
            ),
            ("x-request-id with a tab", HeaderValue::from_static("a\tb")),
            (
                "x-request-id with bytes over 0x7f",
                HeaderValue::from_bytes(b"id\xff\x80\xc3").unwrap(),
            ),
            (
                "x-request-id URL-escaped CR/LF",
                HeaderValue::from_static("id%0d%0aset-cookie:%20a=b"),
            ),
        ] {
            cases.push(
                Case::json(api, name.to_string(), &ok, Want::Either).header("x-request-id", value),
            );
        }
        cases.push(
            Case::json(
                api,
                "anthropic-beta with bytes over 0x7f",
                &ok,
                Want::Either,
            )
            .header(
                "anthropic-beta",
                HeaderValue::from_bytes(b"\xff\xfe,,,").unwrap(),
            )
            .header(
                "anthropic-version",
                HeaderValue::from_bytes(b"\x80").unwrap(),
            ),
        );
        cases.push(
            Case::json(api, "authorization with bytes over 0x7f", &ok, Want::Either)
                .header(
                    "authorization",
                    HeaderValue::from_bytes(b"Bearer \xff").unwrap(),
                )
                .header("x-api-key", HeaderValue::from_bytes(b"\xfe").unwrap()),
        );
    }
    cases
}

/// What came back, checked against what the case wants.
fn check(case: &Case, status: u16, headers: &http::HeaderMap, body: &[u8]) {
    let name = &case.name;
    let text = String::from_utf8_lossy(body);
    let shown: String = text.chars().take(300).collect();
    assert!(status < 500, "{name}: a {status}: {shown}");
    match case.want {
        Want::Refused(Some(s)) => assert_eq!(status, s, "{name}: {shown}"),
        Want::Refused(None) => assert!((400..500).contains(&status), "{name}: {status}: {shown}"),
        Want::Either => assert!(
            status == 200 || (400..500).contains(&status),
            "{name}: {status}: {shown}"
        ),
    }
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{name}: a {status} whose body is not JSON ({e}): {shown}"));
    if status == 200 {
        match case.api {
            Api::OpenAi => assert_eq!(v["object"], "chat.completion", "{name}: {v}"),
            Api::Anthropic => assert_eq!(v["type"], "message", "{name}: {v}"),
        }
    } else {
        match case.api {
            Api::OpenAi => {
                assert!(v.get("type").is_none(), "{name}: {v}");
                assert!(v["error"]["type"].is_string(), "{name}: {v}");
            }
            Api::Anthropic => {
                assert_eq!(v["type"], "error", "{name}: {v}");
                assert!(v["error"]["type"].is_string(), "{name}: {v}");
            }
        }
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{name}: {v}"
        );
    }
    // The id is echoed only when it is a sane token; nothing else is invented.
    let id = headers
        .get("x-request-id")
        .unwrap_or_else(|| panic!("{name}: no x-request-id"));
    let sent = case.headers.iter().find(|(k, _)| k == "x-request-id");
    let id = id.to_str().unwrap_or_else(|_| panic!("{name}: {id:?}"));
    assert!(
        !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()),
        "{name}: {id:?}"
    );
    if let Some((_, v)) = sent {
        if v.as_bytes().iter().all(u8::is_ascii_graphic) && v.len() <= 128 {
            assert_eq!(id.as_bytes(), v.as_bytes(), "{name}");
        } else {
            assert_eq!(id.len(), 16, "{name}: a fresh id, not {id:?}");
        }
    }
    assert!(headers.get("x-injected").is_none(), "{name}");
    assert!(headers.get("set-cookie").is_none(), "{name}");
    assert!(!text.contains(SECRET), "{name}");
}

/// The whole battery in process, through `slmgate::app`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_requests_in_process_get_4xx_in_the_clients_format() {
    let up = openai_upstream("fine", 2).await;
    let app = slmgate::app(state(&policy(&up.uri()), &[("TEST_OPENAI_KEY", SECRET)]));
    let cases = battery();
    assert!(cases.len() > 150, "{}", cases.len());
    let mut failed = Vec::new();
    for case in &cases {
        let r = tokio::time::timeout(PATIENCE, send(&app, case.request()))
            .await
            .unwrap_or_else(|_| panic!("{}: no answer within {PATIENCE:?}", case.name));
        failed.extend(checked(
            case,
            r.status.as_u16(),
            &r.headers,
            r.body.as_bytes(),
        ));
    }
    assert!(
        failed.is_empty(),
        "{} cases failed: {failed:#?}",
        failed.len()
    );
}

/// `check`, its failure kept (and printed) rather than ending the battery.
fn checked(case: &Case, status: u16, headers: &http::HeaderMap, body: &[u8]) -> Option<String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        check(case, status, headers, body)
    }))
    .err()
    .map(|_| case.name.clone())
}

/// The gateway process (`common::Gateway`), as these tests use it.
impl Gateway {
    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Still serving: a valid request is answered.
    async fn alive(&self, c: &reqwest::Client) {
        let r = c
            .post(self.at(Api::OpenAi.path()))
            .json(&Api::OpenAi.valid())
            .send()
            .await
            .expect("the gateway still answers");
        assert_eq!(r.status(), 200);
    }
}

/// The battery through the binary with `c` (HTTP/1.1 or h2c), every case
/// on the same client so connections are reused after refusals.
async fn over_the_wire(gw: &Gateway, c: &reqwest::Client, version: http::Version) {
    let mut failed = Vec::new();
    for case in battery() {
        if case
            .headers
            .iter()
            .any(|(k, _)| k == http::header::CONTENT_LENGTH)
        {
            // reqwest sends the true length: `header_injection_and_declared_lengths_over_the_wire`.
            continue;
        }
        let mut req = c.post(gw.at(case.api.path())).body(case.body.clone());
        if let Some(ct) = case.content_type {
            req = req.header("content-type", ct);
        }
        for (k, v) in &case.headers {
            req = req.header(k, v);
        }
        let r = tokio::time::timeout(PATIENCE, async {
            let r = req.send().await?;
            let status = r.status().as_u16();
            let v = r.version();
            let headers = r.headers().clone();
            let body = r.bytes().await?;
            Ok::<_, reqwest::Error>((status, v, headers, body))
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{} over {version:?}: no answer within {PATIENCE:?}",
                case.name
            )
        });
        let (status, v, headers, body) =
            r.unwrap_or_else(|e| panic!("{} over {version:?}: {e:?}", case.name));
        assert_eq!(v, version, "{}", case.name);
        let mut case = case;
        case.name = format!("{} over {version:?}", case.name);
        failed.extend(checked(&case, status, &headers, &body));
    }
    assert!(
        failed.is_empty(),
        "{} cases failed: {failed:#?}",
        failed.len()
    );
    gw.alive(c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_requests_over_http1_and_h2c_get_4xx_in_the_clients_format() {
    let up = openai_upstream("fine", 2).await;
    let gw = Gateway::start(&policy(&up.uri()));
    let h1 = reqwest::Client::builder()
        .http1_only()
        .timeout(PATIENCE)
        .build()
        .unwrap();
    over_the_wire(&gw, &h1, http::Version::HTTP_11).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(PATIENCE)
        .build()
        .unwrap();
    over_the_wire(&gw, &h2, http::Version::HTTP_2).await;
}

/// A body streamed without a length, past the limit, is cut off with a 413
/// (over HTTP/1.1 the connection is closed, and the client may see only
/// that), and the gateway serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unbounded_chunked_bodies_get_413() {
    let up = openai_upstream("fine", 2).await;
    let gw = Gateway::start(&policy(&up.uri()));
    for version in [http::Version::HTTP_11, http::Version::HTTP_2] {
        let c = match version {
            http::Version::HTTP_2 => reqwest::Client::builder().http2_prior_knowledge(),
            _ => reqwest::Client::builder().http1_only(),
        }
        .timeout(PATIENCE)
        .build()
        .unwrap();
        for api in [Api::OpenAi, Api::Anthropic] {
            // 64 kB chunks, forever: the gateway must stop reading and answer.
            let chunks = futures::stream::repeat_with(|| {
                Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 64 * 1024]))
            });
            let r = tokio::time::timeout(
                PATIENCE,
                c.post(gw.at(api.path()))
                    .header("content-type", "application/json")
                    .body(reqwest::Body::wrap_stream(chunks))
                    .send(),
            )
            .await
            .unwrap_or_else(|_| panic!("{api:?} over {version:?}: no answer"));
            let r = match r {
                Ok(r) => r,
                // HTTP/1.1 cannot interrupt a body: the gateway answers
                // 413 with `connection: close` and closes, and a client
                // still writing may see the close before the answer.
                Err(e)
                    if version == http::Version::HTTP_11
                        && format!("{e:?}").contains("BodyWrite") =>
                {
                    continue;
                }
                Err(e) => panic!("{api:?} over {version:?}: {e:?}"),
            };
            if version == http::Version::HTTP_11 {
                assert_eq!(r.headers()["connection"], "close", "{api:?}");
            }
            let status = r.status().as_u16();
            let headers = r.headers().clone();
            let body = r.bytes().await.unwrap_or_default();
            let case = Case::new(
                api,
                format!("endless body over {version:?}"),
                "",
                Want::Refused(Some(413)),
            );
            check(&case, status, &headers, &body);
        }
        gw.alive(&c).await;
    }
}

/// Raw HTTP/1.1 bytes on a fresh connection; the status and the body.
async fn raw(port: u16, request: &[u8]) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    // A server refusing early may close before all of it is written.
    let _ = s.write_all(request).await;
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if let Some(end) = find(&got, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                if len.is_some_and(|l| got.len() >= end + 4 + l) {
                    break;
                }
            }
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no answer to {:?}",
                String::from_utf8_lossy(&request[..request.len().min(200)])
            )
        });
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let body = find(&got, b"\r\n\r\n")
        .map(|e| String::from_utf8_lossy(&got[e + 4..]).into_owned())
        .unwrap_or_default();
    (status, body)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// What the HTTP layer refuses before the gateway sees it (CR, LF, NUL and
/// other control bytes in header values, folded headers, a header block
/// beyond hyper's buffer) is still a 4xx, quickly; a declared length over
/// the limit is refused before a byte of the body is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn header_injection_and_declared_lengths_over_the_wire() {
    let up = openai_upstream("fine", 2).await;
    let gw = Gateway::start(&policy(&up.uri()));
    let body = Api::OpenAi.valid().to_string();
    let request = |extra: &[u8]| -> Vec<u8> {
        [
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                .as_slice(),
            extra,
            format!("content-length: {}\r\n\r\n{body}", body.len()).as_bytes(),
        ]
        .concat()
    };
    let huge = format!("x-request-id: {}\r\n", "r".repeat(1 << 20));
    for (name, extra) in [
        (
            "bare CR in a value",
            b"x-request-id: abc\rinjected: 1\r\n".to_vec(),
        ),
        (
            "bare LF in a value",
            b"x-request-id: abc\ninjected\r\n".to_vec(),
        ),
        ("NUL in a value", b"x-request-id: a\0b\r\n".to_vec()),
        (
            "a control byte in a value",
            b"x-request-id: a\x01\x1bb\r\n".to_vec(),
        ),
        ("DEL in a value", b"x-request-id: a\x7fb\r\n".to_vec()),
        (
            "a folded header",
            b"x-request-id: abc\r\n injected: 1\r\n".to_vec(),
        ),
        (
            "a header name with a space",
            b"x request id: abc\r\n".to_vec(),
        ),
        ("a header without a colon", b"x-request-id abc\r\n".to_vec()),
        ("a 1 MB header", huge.into_bytes()),
    ] {
        let (status, body) = raw(gw.port, &request(&extra)).await;
        assert!((400..500).contains(&status), "{name}: {status} {body}");
    }
    // Two lengths, or a length and chunked: refused (request smuggling).
    let smuggle = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 5\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, out) = raw(gw.port, smuggle.as_bytes()).await;
    assert!((400..500).contains(&status), "two lengths: {status} {out}");
    // Declared far over the limit, and no body sent: a 413 in the client's
    // format at once, not a wait for bytes that never come.
    for api in [Api::OpenAi, Api::Anthropic] {
        let head = format!(
            "POST {} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000000000000\r\n\r\n",
            api.path()
        );
        let (status, out) = raw(gw.port, head.as_bytes()).await;
        assert_eq!(status, 413, "{api:?}: {out}");
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{api:?}: {e}: {out}"));
        match api {
            Api::OpenAi => assert_eq!(v["error"]["code"], "payload_too_large", "{v}"),
            Api::Anthropic => assert_eq!(v["type"], "error", "{v}"),
        }
    }
    let c = reqwest::Client::new();
    gw.alive(&c).await;
}

/// Header blocks beyond what the HTTP layer takes: HTTP/1.1 serves 100 kB
/// (a fresh request id) and answers 431 beyond its buffer, HTTP/2 refuses
/// them at the protocol level (431, or GOAWAY ENHANCE_YOUR_CALM for a block
/// way past `SETTINGS_MAX_HEADER_LIST_SIZE`); a client still sending a block
/// the server refused may see only the close (a broken pipe). Never a 5xx
/// or a hang, and the gateway serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_header_blocks_over_http1_and_h2c() {
    let up = openai_upstream("fine", 2).await;
    let gw = Gateway::start(&policy(&up.uri()));
    for version in [http::Version::HTTP_11, http::Version::HTTP_2] {
        for size in [100_000, 1 << 20] {
            let c = match version {
                http::Version::HTTP_2 => reqwest::Client::builder().http2_prior_knowledge(),
                _ => reqwest::Client::builder().http1_only(),
            }
            .timeout(PATIENCE)
            .build()
            .unwrap();
            let what = format!("a {size}-byte x-request-id over {version:?}");
            let r = tokio::time::timeout(
                PATIENCE,
                c.post(gw.at(Api::OpenAi.path()))
                    .header("x-request-id", "r".repeat(size))
                    .json(&Api::OpenAi.valid())
                    .send(),
            )
            .await
            .unwrap_or_else(|_| panic!("{what}: no answer"));
            match r {
                // hyper's HTTP/1 buffer takes 100 kB: served, the id replaced.
                Ok(r) if version == http::Version::HTTP_11 && size < 400_000 => {
                    assert_eq!(r.status(), 200, "{what}");
                    assert_eq!(r.headers()["x-request-id"].len(), 16, "{what}");
                }
                Ok(r) => assert_eq!(r.status(), 431, "{what}"),
                // Refused at the protocol level, or the connection closed
                // on a client still sending what the server would not take.
                Err(e) => {
                    let shown = format!("{e:?}");
                    let refused = shown.contains("ENHANCE_YOUR_CALM")
                        || shown.contains("BrokenPipe")
                        || shown.contains("ConnectionReset");
                    assert!(
                        refused && (version == http::Version::HTTP_2 || size > 400_000),
                        "{what}: {shown}"
                    );
                }
            }
            gw.alive(&c).await;
        }
    }
}

/// Clients that stall: a body that stops mid-way gets 408 in the client's
/// format, headers that stop mid-way get the connection closed, both within
/// `server.client_timeout_secs` (1 s here), and the gateway keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_clients_are_timed_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = openai_upstream("ok", 1).await;
    let yaml = policy(&up.uri()).replace(
        "server: { max_body_bytes",
        "server: { client_timeout_secs: 1, max_body_bytes",
    );
    assert!(yaml.contains("client_timeout_secs: 1"));
    let gw = Gateway::start(&yaml);
    let read_all = |mut s: tokio::net::TcpStream| async move {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(8), s.read_to_end(&mut out)).await;
        out
    };

    // A body that stops after 9 of its 100 bytes.
    let t0 = Instant::now();
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .unwrap();
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"model\":")
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&read_all(s).await).into_owned();
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(out.contains("request_timeout"), "{out}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());

    // Headers that stop half-way: the connection is closed.
    let t0 = Instant::now();
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .unwrap();
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-ty")
        .await
        .unwrap();
    let _ = read_all(s).await;
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "closed within the timeout: {:?}",
        t0.elapsed()
    );
    gw.alive(&reqwest::Client::new()).await;
}
