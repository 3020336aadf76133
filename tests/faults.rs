//! The fault battery: every way an upstream fails, against mock upstreams
//! (wiremock for statuses and bodies, a scripted TCP server for broken
//! connections). Each case asserts what the client gets — the fallback's
//! answer, or a clean error in its format within the configured timeouts —
//! and what the metrics say (`slmgate_upstream_errors_total{kind}`,
//! `slmgate_fallbacks_total{reason}`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// `flaky` serves `m` (falls back to `good/m2`) and `alone` (no fallback).
/// Timeouts: head within 1.5 s, 1 s of silence mid-stream, 3 s in all.
fn policy(flaky: &str, good: &str, retries: u32, max_concurrency: usize) -> String {
    format!(
        r#"
version: 1
backends:
  flaky:
    kind: openai
    api_key_env: TEST_OPENAI_KEY
    base_url: {flaky}
    timeouts: {{ connect_ms: 1000, first_byte_ms: 1500, idle_ms: 1000, total_ms: 3000 }}
    retries: {{ max_retries: {retries}, initial_backoff_ms: 10, max_backoff_ms: 2000 }}
    max_concurrency: {max_concurrency}
    models:
      m: {{ input_per_mtok: 1, output_per_mtok: 1 }}
      alone: {{ input_per_mtok: 1, output_per_mtok: 1 }}
  good:
    kind: openai
    api_key_env: TEST_OPENAI_KEY
    base_url: {good}
    models:
      m2: {{ input_per_mtok: 1, output_per_mtok: 1 }}
fallbacks:
  flaky/m: [good/m2]
"#
    )
}

/// The gateway in front of `flaky_url`, with a good fallback.
async fn gateway(
    flaky_url: &str,
    retries: u32,
    max_concurrency: usize,
) -> (axum::Router, MockServer) {
    let good = openai_upstream("from good", 2).await;
    let app = slmgate::app(state(
        &policy(
            flaky_url,
            &format!("{}/v1", good.uri()),
            retries,
            max_concurrency,
        ),
        &[("TEST_OPENAI_KEY", SECRET)],
    ));
    (app, good)
}

async fn errors(app: &axum::Router, kind: &str) -> String {
    metric(
        app,
        &format!(r#"slmgate_upstream_errors_total{{backend="flaky",kind="{kind}"}}"#),
    )
    .await
}

async fn fallbacks(app: &axum::Router, reason: &str) -> String {
    metric(
        app,
        &format!(r#"slmgate_fallbacks_total{{from="flaky/m",reason="{reason}",to="good/m2"}}"#),
    )
    .await
}

/// `m` is answered by the fallback, which says why; `alone` gets a clean
/// OpenAI error with `status` and `code`. Returns the `alone` reply.
async fn falls_back_else(app: &axum::Router, reason: &str, status: u16, code: &str) -> Reply {
    let r = complete(app, &chat("m", "hi")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["choices"][0]["message"]["content"], "from good");
    assert_eq!(r.header("x-slmgate-backend"), "good");
    let why = r.header("x-slmgate-fallback");
    assert!(
        why.starts_with(&format!("flaky/m -> good/m2: {reason}: ")),
        "{why}"
    );
    assert!(!why.contains(SECRET) && !r.body.contains(SECRET));
    assert_eq!(fallbacks(app, reason).await, "1");

    let r = complete(app, &chat("alone", "hi")).await;
    assert_eq!(r.status, status, "{}", r.body);
    let e = &r.json()["error"];
    assert_eq!(e["code"], code, "{}", r.body);
    assert!(
        e["message"].as_str().unwrap().contains("backend `flaky`"),
        "{}",
        r.body
    );
    assert!(!r.body.contains(SECRET));
    r
}

/// A stream request through `app` to `model`, whole body collected.
async fn stream(app: &axum::Router, uri: &str, model: &str) -> Reply {
    let body = if uri == "/v1/messages" {
        json!({"model": model, "max_tokens": 50, "stream": true,
               "messages": [{"role": "user", "content": "hi"}]})
    } else {
        json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "hi"}]})
    };
    send(app, post_json(uri, &body)).await
}

// ---- a scripted TCP upstream, for what wiremock cannot do ----

#[derive(Clone, Copy)]
enum Script {
    /// Reads the request, then resets the connection (RST).
    ResetBeforeHead,
    /// A JSON head promising 500 bytes, 15 of them, then a reset.
    ResetMidBody,
    /// An SSE head, two content chunks, then a reset.
    ResetMidStream,
    /// An SSE head, one chunk, then a clean close: no finish, no `[DONE]`.
    TruncatedStream,
    /// Reads the request and says nothing for 30 s.
    Stall,
    /// An SSE head and one chunk, then 30 s of silence.
    StallAfterHead,
    /// An SSE head, then one chunk every 300 ms, forever.
    SlowDrip,
}

/// The URL (`.../v1`) of a scripted upstream, and how many connections it took.
async fn scripted(script: Script) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(play(sock, script));
        }
    });
    (url, hits)
}

/// Read one request: the head, then `content-length` bytes of body.
async fn read_request(sock: &mut TcpStream) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let mut need = None;
    loop {
        if let Some(n) = need {
            if buf.len() >= n {
                return;
            }
        } else if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            need = Some(end + 4 + len);
            continue;
        }
        match sock.read(&mut tmp).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}

const SSE_HEAD: &str =
    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";

fn sse_chunk(text: &str) -> String {
    let c = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]});
    format!("data: {c}\n\n")
}

fn reset(sock: TcpStream) {
    let _ = sock.set_zero_linger();
    drop(sock);
}

async fn play(mut sock: TcpStream, script: Script) {
    read_request(&mut sock).await;
    let long = Duration::from_secs(30);
    match script {
        Script::ResetBeforeHead => reset(sock),
        Script::ResetMidBody => {
            let head =
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n";
            let _ = sock
                .write_all(format!("{head}{{\"id\":\"c\",\"ch").as_bytes())
                .await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            reset(sock);
        }
        Script::ResetMidStream => {
            let out = format!("{SSE_HEAD}{}{}", sse_chunk("Hel"), sse_chunk("lo"));
            let _ = sock.write_all(out.as_bytes()).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            reset(sock);
        }
        Script::TruncatedStream => {
            let out = format!("{SSE_HEAD}{}", sse_chunk("Hel"));
            let _ = sock.write_all(out.as_bytes()).await;
            let _ = sock.shutdown().await;
        }
        Script::Stall => tokio::time::sleep(long).await,
        Script::StallAfterHead => {
            let out = format!("{SSE_HEAD}{}", sse_chunk("Hel"));
            let _ = sock.write_all(out.as_bytes()).await;
            tokio::time::sleep(long).await;
        }
        Script::SlowDrip => {
            if sock.write_all(SSE_HEAD.as_bytes()).await.is_err() {
                return;
            }
            while sock.write_all(sse_chunk(".").as_bytes()).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
}

/// A stream that failed after its head: what came before the failure, then
/// the error in the client's format, and no `[DONE]`.
fn ends_with_error_event(r: &Reply, anthropic: bool, says: &str) {
    assert_eq!(r.status, 200, "the head went out before the failure");
    assert!(!r.body.contains("[DONE]"), "{}", r.body);
    if anthropic {
        assert!(r.body.contains("event: message_start"), "{}", r.body);
        let last = r.body.trim_end().rsplit("\n\n").next().unwrap();
        assert!(last.starts_with("event: error\n"), "{}", r.body);
        assert!(last.contains(says), "{}", r.body);
    } else {
        let data = r.sse_data();
        assert!(data.len() >= 2, "{}", r.body);
        let first: serde_json::Value = serde_json::from_str(&data[0]).unwrap();
        assert_eq!(first["choices"][0]["delta"]["content"], "Hel");
        let last: serde_json::Value = serde_json::from_str(data.last().unwrap()).unwrap();
        assert!(
            last["error"]["message"].as_str().unwrap().contains(says),
            "{}",
            r.body
        );
    }
}

// ---- the battery ----

#[tokio::test]
async fn connection_refused() {
    let port = free_port(); // nothing listens there
    let (app, _good) = gateway(&format!("http://127.0.0.1:{port}/v1"), 1, 8).await;
    falls_back_else(&app, "connect", 502, "upstream_failed").await;
    // Retried once each time: two requests, two attempts counted once each.
    assert_eq!(errors(&app, "connect").await, "2");
}

#[tokio::test]
async fn dns_failure() {
    // `.invalid` never resolves (RFC 2606).
    let (app, _good) = gateway("http://no-such-upstream.invalid/v1", 0, 8).await;
    let t = Instant::now();
    let r = complete(&app, &chat("m", "hi")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["choices"][0]["message"]["content"], "from good");
    let why = r.header("x-slmgate-fallback");
    // A resolver that answers says "no such host" (connect); one that does
    // not answer at all is cut by the response-head timeout.
    assert!(
        why.contains(": connect: ") || why.contains(": timeout: "),
        "{why}"
    );
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let r = complete(&app, &chat("alone", "hi")).await;
    assert!(
        r.status == 502 || r.status == 504,
        "{} {}",
        r.status,
        r.body
    );
    assert!(
        !r.body.contains("no-such-upstream"),
        "the upstream's address stays inside: {}",
        r.body
    );
}

async fn status_upstream(status: u16, retry_after: Option<&str>) -> MockServer {
    let s = MockServer::start().await;
    let mut t = ResponseTemplate::new(status).set_body_string("upstream trouble");
    if let Some(ra) = retry_after {
        t = t.insert_header("retry-after", ra);
    }
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(t)
        .mount(&s)
        .await;
    s
}

#[tokio::test]
async fn server_errors_500_and_502_are_retried_then_fall_back() {
    for status in [500, 502] {
        let up = status_upstream(status, None).await;
        let (app, _good) = gateway(&format!("{}/v1", up.uri()), 1, 8).await;
        falls_back_else(&app, "upstream_status", 502, "upstream_failed").await;
        assert_eq!(
            up.received_requests().await.unwrap().len(),
            4,
            "two tries each"
        );
        assert_eq!(errors(&app, "upstream_status").await, "2");
    }
}

#[tokio::test]
async fn overloaded_503_without_retry_after() {
    let up = status_upstream(503, None).await;
    let (app, _good) = gateway(&format!("{}/v1", up.uri()), 1, 8).await;
    let r = falls_back_else(&app, "upstream_status", 503, "backend_overloaded").await;
    assert_eq!(r.header("retry-after"), "", "the upstream named no wait");
    assert_eq!(up.received_requests().await.unwrap().len(), 4);
}

#[tokio::test]
async fn overloaded_503_with_a_short_retry_after_is_waited_for_once() {
    let up = status_upstream(503, Some("1")).await;
    let (app, _good) = gateway(&format!("{}/v1", up.uri()), 1, 8).await;
    let t = Instant::now();
    let r = falls_back_else(&app, "upstream_status", 503, "backend_overloaded").await;
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "waited the upstream's second, twice"
    );
    assert_eq!(
        r.header("retry-after"),
        "1",
        "the upstream's wait, passed on"
    );
    assert_eq!(up.received_requests().await.unwrap().len(), 4);
}

#[tokio::test]
async fn overloaded_503_with_a_long_retry_after_goes_straight_to_the_fallback() {
    let up = status_upstream(503, Some("120")).await;
    let (app, _good) = gateway(&format!("{}/v1", up.uri()), 2, 8).await;
    let t = Instant::now();
    let r = falls_back_else(&app, "upstream_status", 503, "backend_overloaded").await;
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "no 2-minute wait: {:?}",
        t.elapsed()
    );
    assert_eq!(r.header("retry-after"), "120");
    assert_eq!(
        up.received_requests().await.unwrap().len(),
        2,
        "one try each"
    );
}

#[tokio::test]
async fn rate_limited_429_without_retry_after() {
    let up = status_upstream(429, None).await;
    let (app, _good) = gateway(&format!("{}/v1", up.uri()), 1, 8).await;
    let r = falls_back_else(&app, "rate_limited", 429, "rate_limit_exceeded").await;
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    assert_eq!(
        r.header("retry-after"),
        "1",
        "a client is told to wait a moment"
    );
    assert_eq!(up.received_requests().await.unwrap().len(), 4);
    assert_eq!(errors(&app, "rate_limited").await, "2");
}

#[tokio::test]
async fn rate_limited_429_with_retry_after() {
    let up = status_upstream(429, Some("60")).await;
    let (app, _good) = gateway(&format!("{}/v1", up.uri()), 2, 8).await;
    let r = falls_back_else(&app, "rate_limited", 429, "rate_limit_exceeded").await;
    assert_eq!(r.header("retry-after"), "60");
    assert_eq!(
        up.received_requests().await.unwrap().len(),
        2,
        "a minute is not waited for"
    );
}

#[tokio::test]
async fn malformed_json() {
    let up = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "application/json")
                .set_body_string("{\"id\": \"c\", \"choices\": [tru"),
        )
        .mount(&up)
        .await;
    let (app, _good) = gateway(&format!("{}/v1", up.uri()), 0, 8).await;
    falls_back_else(&app, "bad_response", 502, "upstream_failed").await;
    assert_eq!(errors(&app, "bad_response").await, "2");
}

#[tokio::test]
async fn reset_before_the_head() {
    let (url, hits) = scripted(Script::ResetBeforeHead).await;
    let (app, _good) = gateway(&url, 0, 8).await;
    falls_back_else(&app, "transport", 502, "upstream_failed").await;
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn reset_mid_body() {
    let (url, _) = scripted(Script::ResetMidBody).await;
    let (app, _good) = gateway(&url, 0, 8).await;
    falls_back_else(&app, "transport", 502, "upstream_failed").await;
    assert_eq!(errors(&app, "transport").await, "2");
}

#[tokio::test]
async fn reset_mid_stream() {
    let (url, _) = scripted(Script::ResetMidStream).await;
    let (app, _good) = gateway(&url, 0, 8).await;
    let r = stream(&app, "/v1/chat/completions", "m").await;
    ends_with_error_event(&r, false, "stream broke off");
    let r = stream(&app, "/v1/messages", "m").await;
    ends_with_error_event(&r, true, "stream broke off");
    assert_eq!(errors(&app, "mid_stream").await, "2");
    // Nothing still counts as in flight once the streams ended.
    assert_eq!(
        metric(&app, r#"slmgate_backend_in_flight{backend="flaky"}"#).await,
        "0"
    );
}

#[tokio::test]
async fn truncated_stream() {
    let (url, _) = scripted(Script::TruncatedStream).await;
    let (app, _good) = gateway(&url, 0, 8).await;
    let r = stream(&app, "/v1/chat/completions", "m").await;
    ends_with_error_event(&r, false, "ended early");
    let r = stream(&app, "/v1/messages", "m").await;
    ends_with_error_event(&r, true, "ended early");
    assert_eq!(errors(&app, "mid_stream").await, "2");
}

#[tokio::test]
async fn a_30_second_stall_is_cut_by_the_head_timeout() {
    let (url, hits) = scripted(Script::Stall).await;
    let (app, _good) = gateway(&url, 0, 8).await;
    let t = Instant::now();
    falls_back_else(&app, "timeout", 504, "upstream_timeout").await;
    // Two requests, each cut at first_byte_ms = 1.5 s.
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(3000), "{took:?}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    assert_eq!(errors(&app, "timeout").await, "2");
}

#[tokio::test]
async fn a_stream_that_stalls_after_its_head_ends_with_a_timeout_event() {
    let (url, _) = scripted(Script::StallAfterHead).await;
    let (app, _good) = gateway(&url, 0, 8).await;
    let t = Instant::now();
    let r = stream(&app, "/v1/chat/completions", "m").await;
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "idle_ms is 1 s: {:?}",
        t.elapsed()
    );
    ends_with_error_event(&r, false, "timed out");
    assert_eq!(errors(&app, "mid_stream").await, "1");
}

#[tokio::test]
async fn a_slow_drip_stream_is_cut_at_the_total_timeout() {
    let (url, _) = scripted(Script::SlowDrip).await;
    let (app, _good) = gateway(&url, 0, 8).await;
    let t = Instant::now();
    let r = stream(&app, "/v1/chat/completions", "m").await;
    let took = t.elapsed();
    // Each chunk comes within idle_ms; total_ms (3 s) ends it.
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(8),
        "{took:?}"
    );
    assert!(!r.body.contains("[DONE]"), "{}", r.body);
    let data = r.sse_data();
    assert!(
        data.len() >= 5,
        "chunks were passed on as they dripped: {}",
        r.body
    );
    let last: serde_json::Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn a_backend_at_its_concurrency_limit_sheds_load() {
    let (url, _) = scripted(Script::SlowDrip).await;
    let (app, _good) = gateway(&url, 0, 1).await;
    let in_flight = r#"slmgate_backend_in_flight{backend="flaky"}"#;
    // A stream holds the one place while it runs.
    let held = app
        .clone()
        .oneshot(post_json(
            "/v1/chat/completions",
            &json!({"model": "alone", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        ))
        .await
        .unwrap();
    assert_eq!(held.status(), 200);
    assert_eq!(metric(&app, in_flight).await, "1");
    // The next request is shed at once: to the fallback, or, with none,
    // a 503 that says when to come back.
    let t = Instant::now();
    let r = falls_back_else(&app, "overloaded", 503, "backend_overloaded").await;
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "shed, not queued: {:?}",
        t.elapsed()
    );
    assert_eq!(r.header("retry-after"), "1");
    assert_eq!(errors(&app, "overloaded").await, "2");
    // The client leaves: the place is given back.
    drop(held);
    assert_eq!(metric(&app, in_flight).await, "0");
    let again = app
        .clone()
        .oneshot(post_json(
            "/v1/chat/completions",
            &json!({"model": "alone", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        ))
        .await
        .unwrap();
    assert_eq!(again.status(), 200, "a place is free again");
}
